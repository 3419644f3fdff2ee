//! Byte-level mutations, the classic fuzzer's moves: flip, overwrite, insert and delete bytes,
//! insert a word of the target's dictionary, repeat a slice many times (deep nesting and long
//! chains are where parsers overflow their stacks), splice in part of another seed.
use rand::{RngExt as _, rngs::StdRng};

/// Bytes that mean something to some parser: boundaries, escapes, overlong UTF-8, NUL.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\r\n",
    b"\n\n",
    b"\r",
    b"\xff",
    b"\xc0\x80",
    b"\xe2\x80\xae",
    b"\xef\xbb\xbf",
    b"=?",
    b"?=",
    b"--",
    b"<",
    b">",
    b"&#",
    b"&#x10FFFF;",
    b"\"",
    b"'",
    b"\\",
    b"%",
    b"(",
    b")",
];

pub(crate) fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], words: &[&str], rng: &mut StdRng) {
    let len = input.len();
    let at = |rng: &mut StdRng| {
        if len == 0 {
            0
        } else {
            rng.random_range(0..=len)
        }
    };
    match rng.random_range(0..9) {
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = rng.random();
        }
        2 => {
            let i = at(rng);
            let piece = INTERESTING[rng.random_range(0..INTERESTING.len())];
            input.splice(i..i, piece.iter().copied());
        }
        3 if !words.is_empty() => {
            let i = at(rng);
            let word = words[rng.random_range(0..words.len())];
            input.splice(i..i, word.bytes());
        }
        4 if len > 0 => {
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=64)).min(len);
            input.drain(start..end);
        }
        5 if len > 0 => {
            // Repeat a slice: up to thousands of times, to reach the depths that stop a server.
            let start = rng.random_range(0..len);
            let end = (start + rng.random_range(1..=32)).min(len);
            let piece = input[start..end].to_vec();
            let times = if rng.random_bool(0.1) {
                rng.random_range(100..4000)
            } else {
                rng.random_range(1..16)
            };
            let repeated: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take(piece.len() * times)
                .collect();
            input.splice(end..end, repeated);
        }
        6 if !seeds.is_empty() => {
            let other = &seeds[rng.random_range(0..seeds.len())];
            if !other.is_empty() {
                let start = rng.random_range(0..other.len());
                let end = (start + rng.random_range(1..=512)).min(other.len());
                let i = at(rng);
                input.splice(i..i, other[start..end].iter().copied());
            }
        }
        7 if len > 1 => {
            // Cut the input short: truncated documents and mails.
            input.truncate(rng.random_range(0..len));
        }
        _ => {
            let i = at(rng);
            let count = rng.random_range(1..=8);
            let bytes: Vec<u8> = (0..count).map(|_| rng.random()).collect();
            input.splice(i..i, bytes);
        }
    }
}
