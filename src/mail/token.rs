//! Reply tokens: the signed identifier that ties an emailed reply back to its approval context.
//!
//! A token is 31 lower-case base32 characters (RFC 4648 alphabet `a-z2-7`, no padding), laid out
//! as `kid (2) | context id (13) | mac (16)`:
//! - `kid` is the id (1..=1023, 10 bits) of the HMAC key that signed the token, so that the
//!   server secret can be rotated: a new key signs new tokens while older keys stay in the
//!   [`KeyRing`] until every token they signed has expired. The kid in a token is only a hint:
//!   [`verify`] takes the key id recorded on the approval context when it was issued, and a
//!   token naming any other key fails, so a leaked old secret cannot sign for a context issued
//!   after the rotation;
//! - the context id is 64 random bits naming the approval context (see [`new_context_id`]);
//! - the mac is HMAC-SHA256 truncated to its first 10 bytes (80 bits), keyed by that key, over
//!   the kid, the context id, the approver's lower-cased email address and the context's
//!   valid-until time (decimal milliseconds), each field length-prefixed so that no two
//!   different field lists can produce the same MAC input.
//!
//! Why this shape: lower-case letters and digits survive every mail system (case-folding
//! servers, quoted-printable, line wrapping at word boundaries) and need no escaping anywhere;
//! parsing still accepts upper case because some clients upper-case addresses. 31 characters
//! keep `<box>+<token>@<domain>` within the 64-character limit of an address's local part for any
//! box of up to 32 characters. 80 bits of MAC make forgery hopeless at any rate a mail server
//! can deliver guesses, and the MAC is compared in constant time. A token carries no secret by
//! itself but it is a bearer credential: it is never logged ([`TokenParts`]'s `Debug` hides the
//! MAC, [`KeyRing`]'s `Debug` lists key ids only).
use std::{collections::BTreeMap, fmt, sync::LazyLock};

use data_encoding::{Encoding, HEXLOWER, Specification};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use crate::clock::Millis;

type HmacSha256 = Hmac<Sha256>;

/// The RFC 4648 base32 alphabet, lower case.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Length of a token in characters.
pub const TOKEN_LEN: usize = 31;
const KID_LEN: usize = 2;
const CONTEXT_ID_LEN: usize = 13;
const MAC_BYTES: usize = 10;
const MAC_LEN: usize = 16;
const MAX_KID: i64 = 1023;
const _: () = assert!(KID_LEN + CONTEXT_ID_LEN + MAC_LEN == TOKEN_LEN);
/// Domain separation: a MAC made for any other purpose with the same key never matches.
const MAC_DOMAIN: &[u8] = b"replyflow reply token v1";

/// Lower-case base32 without padding; decoding insists on zero trailing bits, so every value
/// has exactly one spelling (an altered last character is rejected, not silently accepted).
static BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.check_trailing_bits = true;
    // The specification is a constant that is known to be valid; the tests exercise it.
    spec.encoding().expect("valid base32 specification")
});

/// The HMAC keys the server knows, by key id; `current` signs new tokens.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<i64, HmacSha256>,
    current: i64,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("current", &self.current)
            .finish()
    }
}

impl KeyRing {
    /// keys: (kid, secret bytes). Current = the highest kid. Err if empty, a kid outside
    /// 1..=1023, a duplicate kid, or an empty secret. Error messages never contain secrets.
    pub fn new(keys: Vec<(i64, Vec<u8>)>) -> Result<Self, String> {
        let current = keys.iter().map(|(kid, _)| *kid).max().unwrap_or(1);
        Self::with_current(keys, current)
    }

    /// As [`KeyRing::new`], with `current` (one of the kids) signing new tokens.
    pub fn with_current(keys: Vec<(i64, Vec<u8>)>, current: i64) -> Result<Self, String> {
        if keys.is_empty() {
            return Err("the token key ring is empty".to_owned());
        }
        let mut map = BTreeMap::new();
        for (kid, secret) in keys {
            if !(1..=MAX_KID).contains(&kid) {
                return Err(format!("token key id {kid} is outside 1..={MAX_KID}"));
            }
            if secret.is_empty() {
                return Err(format!("token key {kid} has an empty secret"));
            }
            let mac = HmacSha256::new_from_slice(&secret)
                .map_err(|_| format!("token key {kid} has an unusable secret length"))?;
            if map.insert(kid, mac).is_some() {
                return Err(format!("token key id {kid} appears twice"));
            }
        }
        if !map.contains_key(&current) {
            return Err(format!(
                "the current token key {current} is not in the ring"
            ));
        }
        Ok(Self { keys: map, current })
    }

    /// The key id that signs new tokens.
    pub fn current_kid(&self) -> i64 {
        self.current
    }

    /// The MAC for one token, keyed by `kid`; None when the ring has no such key.
    fn mac(
        &self,
        kid: i64,
        context_id: &str,
        approver_email: &str,
        valid_until: Millis,
    ) -> Option<HmacSha256> {
        let mut mac = self.keys.get(&kid)?.clone();
        let email = approver_email.to_lowercase();
        let kid = kid.to_string();
        let until = valid_until.to_string();
        for field in [
            MAC_DOMAIN,
            kid.as_bytes(),
            context_id.as_bytes(),
            email.as_bytes(),
            until.as_bytes(),
        ] {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field);
        }
        Some(mac)
    }
}

/// A one-way name of a secret, kept in the database instead of the secret itself: it ties a
/// configured secret to its key id whatever its place in `security.token_secrets`, without the
/// database ever holding the secret. HMAC keyed by the secret over a fixed label, hex.
pub fn fingerprint(secret: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => return String::new(),
    };
    mac.update(b"replyflow reply-token key fingerprint v1");
    HEXLOWER.encode(&mac.finalize().into_bytes())
}

/// 32 random bytes, hex-encoded: a fresh server secret for when none is configured.
pub fn generate_secret() -> String {
    HEXLOWER.encode(&rand::random::<[u8; 32]>())
}

/// 13 lower-case base32 characters from 64 random bits.
pub fn new_context_id() -> String {
    BASE32.encode(&rand::random::<u64>().to_be_bytes())
}

fn encode_kid(kid: i64) -> [u8; KID_LEN] {
    let kid = kid.clamp(0, MAX_KID) as usize;
    [ALPHABET[kid >> 5], ALPHABET[kid & 31]]
}

fn symbol_value(c: u8) -> Option<i64> {
    match c {
        b'a'..=b'z' => Some(i64::from(c - b'a')),
        b'2'..=b'7' => Some(i64::from(c - b'2') + 26),
        _ => None,
    }
}

/// Signs with the ring's current key. `context_id` must come from [`new_context_id`]
/// (13 base32 characters); anything else yields a token that [`parse`] rejects.
pub fn issue(
    ring: &KeyRing,
    context_id: &str,
    approver_email: &str,
    valid_until: Millis,
) -> String {
    // The current key is always in the ring.
    issue_with_kid(ring, ring.current, context_id, approver_email, valid_until).unwrap_or_default()
}

/// Signs with key `kid`: a mail sent again for an existing context must carry the very token of
/// the first mail, even after the secret was rotated. `None` if the ring no longer has that key.
pub fn issue_with_kid(
    ring: &KeyRing,
    kid: i64,
    context_id: &str,
    approver_email: &str,
    valid_until: Millis,
) -> Option<String> {
    debug_assert!(
        BASE32
            .decode(context_id.as_bytes())
            .is_ok_and(|b| b.len() == 8),
        "context ids come from new_context_id"
    );
    let tag = ring
        .mac(kid, context_id, approver_email, valid_until)?
        .finalize()
        .into_bytes();
    let mut token = String::with_capacity(TOKEN_LEN);
    token.extend(encode_kid(kid).map(char::from));
    token.push_str(context_id);
    token.push_str(&BASE32.encode(&tag[..MAC_BYTES]));
    Some(token)
}

/// A token split into its fields; only [`parse`] makes one.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenParts {
    pub kid: i64,
    pub context_id: String,
    mac: [u8; MAC_BYTES],
}

/// The MAC is left out: together with the context id it is a bearer credential.
impl fmt::Debug for TokenParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenParts")
            .field("kid", &self.kid)
            .field("context_id", &self.context_id)
            .field("mac", &"<redacted>")
            .finish()
    }
}

/// Syntax only (length, alphabet, kid range); case-insensitive. Never panics on any input.
pub fn parse(token: &str) -> Option<TokenParts> {
    let bytes = token.as_bytes();
    if bytes.len() != TOKEN_LEN {
        return None;
    }
    let lower = bytes.to_ascii_lowercase();
    let (kid, rest) = lower.split_at(KID_LEN);
    let (context_id, mac) = rest.split_at(CONTEXT_ID_LEN);
    let kid = (symbol_value(kid[0])? << 5) | symbol_value(kid[1])?;
    if !(1..=MAX_KID).contains(&kid) {
        return None;
    }
    if BASE32.decode(context_id).ok()?.len() != 8 {
        return None;
    }
    let mac: [u8; MAC_BYTES] = BASE32.decode(mac).ok()?.try_into().ok()?;
    // Every byte is an alphabet symbol here, so this is ASCII.
    let context_id = String::from_utf8(context_id.to_vec()).ok()?;
    Some(TokenParts {
        kid,
        context_id,
        mac,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token names an unknown key")]
    UnknownKey,
    #[error("the token's signature does not match")]
    BadSignature,
    #[error("the token names another key than the one its approval was issued with")]
    WrongKey,
}

/// Checks the token's MAC, keyed by `kid` — the key the context was issued with, never the one
/// the token names (a token naming another key is [`TokenError::WrongKey`]) — against the
/// approver's email (any case) and valid-until time, in constant time. Expiry itself is the
/// caller's business: it compares `valid_until` with now.
pub fn verify(
    ring: &KeyRing,
    parts: &TokenParts,
    kid: i64,
    approver_email: &str,
    valid_until: Millis,
) -> Result<(), TokenError> {
    if parts.kid != kid {
        return Err(TokenError::WrongKey);
    }
    let mac = ring
        .mac(kid, &parts.context_id, approver_email, valid_until)
        .ok_or(TokenError::UnknownKey)?;
    mac.verify_truncated_left(&parts.mac)
        .map_err(|_| TokenError::BadSignature)
}

/// Finds a token in free text (a body's token line such as "Token: <token>" or
/// "回复凭证: <token>", or a plus address `box+<token>@domain`): the first run of exactly
/// [`TOKEN_LEN`] ASCII letters and digits, bounded by anything else, that [`parse`] accepts.
pub fn find_in_text(text: &str) -> Option<TokenParts> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() == TOKEN_LEN)
        .find_map(parse)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    const EMAIL: &str = "alice@example.com";
    const UNTIL: Millis = 1_767_225_600_000;

    fn ring(kids: &[i64]) -> KeyRing {
        KeyRing::new(
            kids.iter()
                .map(|&kid| (kid, format!("secret number {kid}").into_bytes()))
                .collect(),
        )
        .expect("valid ring")
    }

    fn in_alphabet(s: &str) -> bool {
        s.bytes().all(|b| ALPHABET.contains(&b))
    }

    #[test]
    fn round_trip() {
        let ring = ring(&[7]);
        let id = new_context_id();
        assert_eq!(id.len(), CONTEXT_ID_LEN);
        assert!(in_alphabet(&id), "{id}");
        let token = issue(&ring, &id, EMAIL, UNTIL);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(in_alphabet(&token), "{token}");
        assert!(token.starts_with("ah"), "kid 7 = 0*32+7 = 'a','h': {token}");
        assert_eq!(&token[KID_LEN..KID_LEN + CONTEXT_ID_LEN], id);
        let parts = parse(&token).expect("parses");
        assert_eq!(parts.kid, 7);
        assert_eq!(parts.context_id, id);
        assert_eq!(verify(&ring, &parts, parts.kid, EMAIL, UNTIL), Ok(()));
    }

    #[test]
    fn kid_encoding_covers_the_range() {
        for kid in [1, 2, 31, 32, 33, 500, 1022, 1023] {
            let ring = ring(&[kid]);
            let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
            let expected = [ALPHABET[(kid >> 5) as usize], ALPHABET[(kid & 31) as usize]];
            assert_eq!(&token.as_bytes()[..2], &expected);
            let parts = parse(&token).expect("parses");
            assert_eq!(parts.kid, kid);
            assert_eq!(verify(&ring, &parts, parts.kid, EMAIL, UNTIL), Ok(()));
        }
    }

    #[test]
    fn email_case_does_not_matter() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), "Alice@Example.COM", UNTIL);
        let parts = parse(&token).expect("parses");
        assert_eq!(verify(&ring, &parts, parts.kid, EMAIL, UNTIL), Ok(()));
        assert_eq!(
            verify(&ring, &parts, parts.kid, "ALICE@EXAMPLE.COM", UNTIL),
            Ok(())
        );
    }

    #[test]
    fn different_email_until_or_key_is_rejected() {
        let ring1 = ring(&[1]);
        let token = issue(&ring1, &new_context_id(), EMAIL, UNTIL);
        let parts = parse(&token).expect("parses");
        for email in [
            "bob@example.com",
            "alice@example.co",
            "alice@example.com ",
            "",
        ] {
            assert_eq!(
                verify(&ring1, &parts, parts.kid, email, UNTIL),
                Err(TokenError::BadSignature),
                "{email:?}"
            );
        }
        for until in [UNTIL + 1, UNTIL - 1, 0, -UNTIL, Millis::MAX] {
            assert_eq!(
                verify(&ring1, &parts, parts.kid, EMAIL, until),
                Err(TokenError::BadSignature),
                "{until}"
            );
        }
        let other_secret = KeyRing::new(vec![(1, b"another secret".to_vec())]).expect("ring");
        assert_eq!(
            verify(&other_secret, &parts, parts.kid, EMAIL, UNTIL),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&ring(&[2]), &parts, parts.kid, EMAIL, UNTIL),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn fields_are_unambiguous() {
        // Moving characters between the email and the time must not keep the MAC valid.
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), "a@b.c1", 23);
        let parts = parse(&token).expect("parses");
        assert_eq!(
            verify(&ring, &parts, parts.kid, "a@b.c", 123),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&ring, &parts, parts.kid, "a@b.c12", 3),
            Err(TokenError::BadSignature)
        );
    }

    /// Every single-character alteration at every position to every other alphabet character
    /// is rejected, by parse or by verify; never accepted.
    #[test]
    fn every_altered_character_is_rejected() {
        // Several kids in the ring so that an altered kid can land on another real key.
        let ring = ring(&[1, 2, 3, 33, 34]);
        let mut rejected_by_parse = 0;
        let mut bad_signature = 0;
        let mut unknown_key = 0;
        for _ in 0..6 {
            let email = format!("user{}@example.com", rand::random::<u16>());
            let until = rand::random::<i64>();
            let token = issue(&ring, &new_context_id(), &email, until);
            let parts = parse(&token).expect("parses");
            assert_eq!(verify(&ring, &parts, parts.kid, &email, until), Ok(()));
            let original = token.as_bytes();
            for pos in 0..TOKEN_LEN {
                for &symbol in ALPHABET.iter().filter(|&&s| s != original[pos]) {
                    let mut altered = original.to_vec();
                    altered[pos] = symbol;
                    let altered = String::from_utf8(altered).expect("ascii");
                    match parse(&altered) {
                        None => rejected_by_parse += 1,
                        // Checked as ingestion does: with the key the context was issued
                        // with, whatever kid the altered token names.
                        Some(p) => match verify(&ring, &p, ring.current_kid(), &email, until) {
                            Err(TokenError::BadSignature) => bad_signature += 1,
                            Err(TokenError::UnknownKey | TokenError::WrongKey) => unknown_key += 1,
                            Ok(()) => panic!("altered token {altered} (from {token}) verified"),
                        },
                    }
                }
                // Characters outside the alphabet never parse.
                for bad in [b'0', b'1', b'8', b'9', b'-', b'+', b' ', b'=', 0xff] {
                    let mut altered = original.to_vec();
                    altered[pos] = bad;
                    let altered = String::from_utf8_lossy(&altered).into_owned();
                    assert_eq!(parse(&altered), None, "{altered:?}");
                }
            }
        }
        assert_eq!(rejected_by_parse + bad_signature + unknown_key, 6 * 31 * 31);
        // All three ways of rejecting were exercised.
        assert!(rejected_by_parse > 0 && bad_signature > 0 && unknown_key > 0);
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let old = ring(&[1]);
        let id = new_context_id();
        let old_token = issue(&old, &id, EMAIL, UNTIL);
        assert!(old_token.starts_with("ab"));

        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.current_kid(), 2);
        let new_token = issue(&rotated, &id, EMAIL, UNTIL);
        assert!(new_token.starts_with("ac"), "{new_token}");
        assert_ne!(old_token, new_token);

        let old_parts = parse(&old_token).expect("parses");
        let new_parts = parse(&new_token).expect("parses");
        assert_eq!(old_parts.kid, 1);
        assert_eq!(new_parts.kid, 2);
        assert_eq!(
            verify(&rotated, &old_parts, old_parts.kid, EMAIL, UNTIL),
            Ok(())
        );
        assert_eq!(
            verify(&rotated, &new_parts, new_parts.kid, EMAIL, UNTIL),
            Ok(())
        );

        let retired = ring(&[2]);
        assert_eq!(
            verify(&retired, &old_parts, old_parts.kid, EMAIL, UNTIL),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            verify(&retired, &new_parts, new_parts.kid, EMAIL, UNTIL),
            Ok(())
        );
        // The old ring cannot check tokens of the new key.
        assert_eq!(
            verify(&old, &new_parts, new_parts.kid, EMAIL, UNTIL),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn a_token_forged_with_an_old_key_for_a_new_context_is_refused() {
        // The server knows both keys; the context was issued with key 2 (current). A token made
        // with the old key 1 for that context names key 1: the key it names is not trusted.
        let rotated = ring(&[2, 1]);
        let id = new_context_id();
        let forged = issue(&ring(&[1]), &id, EMAIL, UNTIL);
        let parts = parse(&forged).expect("parses");
        assert_eq!(parts.kid, 1);
        assert_eq!(
            verify(&rotated, &parts, 2, EMAIL, UNTIL),
            Err(TokenError::WrongKey)
        );
        let genuine = parse(&issue(&rotated, &id, EMAIL, UNTIL)).expect("parses");
        assert_eq!(verify(&rotated, &genuine, 2, EMAIL, UNTIL), Ok(()));
    }

    #[test]
    fn fingerprints_name_a_secret_without_revealing_it() {
        let a = fingerprint(b"correct horse");
        assert_eq!(a, fingerprint(b"correct horse"), "stable");
        assert_ne!(a, fingerprint(b"correct horsf"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("correct"));
    }

    #[test]
    fn key_ring_validation() {
        assert!(KeyRing::new(vec![]).is_err());
        assert!(KeyRing::new(vec![(0, b"s".to_vec())]).is_err());
        assert!(KeyRing::new(vec![(-1, b"s".to_vec())]).is_err());
        assert!(KeyRing::new(vec![(1024, b"s".to_vec())]).is_err());
        assert!(KeyRing::new(vec![(1, Vec::new())]).is_err());
        assert!(KeyRing::new(vec![(1, b"a".to_vec()), (1, b"b".to_vec())]).is_err());
        let ring = KeyRing::new(vec![
            (5, b"a".to_vec()),
            (1023, b"b".to_vec()),
            (9, b"c".to_vec()),
        ])
        .expect("valid");
        assert_eq!(ring.current_kid(), 1023);
        // A long secret (longer than SHA-256's block) works too.
        assert!(KeyRing::new(vec![(1, vec![7; 200])]).is_ok());
    }

    #[test]
    fn key_ring_debug_hides_secrets() {
        let secret = "hunter2-very-secret";
        let ring = KeyRing::new(vec![(3, secret.as_bytes().to_vec()), (4, b"zzz".to_vec())])
            .expect("valid");
        let debug = format!("{ring:?}");
        assert!(!debug.contains(secret), "{debug}");
        assert!(!debug.contains("zzz"), "{debug}");
        assert!(debug.contains('3') && debug.contains('4'), "{debug}");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!debug.contains(&hex));
        let alt = format!("{ring:#?}");
        assert!(!alt.contains(secret));
    }

    #[test]
    fn token_parts_debug_hides_the_mac() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
        let parts = parse(&token).expect("parses");
        let debug = format!("{parts:?}");
        assert!(
            !debug.contains(&token[KID_LEN + CONTEXT_ID_LEN..]),
            "{debug}"
        );
        assert!(debug.contains(&parts.context_id));
    }

    #[test]
    fn parse_is_case_insensitive() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
        let upper = parse(&token.to_ascii_uppercase()).expect("upper case parses");
        assert_eq!(upper, parse(&token).expect("parses"));
        assert_eq!(verify(&ring, &upper, upper.kid, EMAIL, UNTIL), Ok(()));
        let mixed: String = token
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        assert_eq!(
            verify(&ring, &parse(&mixed).expect("parses"), 1, EMAIL, UNTIL),
            Ok(())
        );
    }

    #[test]
    fn parse_rejects_bad_syntax() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
        assert_eq!(parse(""), None);
        assert_eq!(parse(&token[..TOKEN_LEN - 1]), None);
        assert_eq!(parse(&format!("{token}a")), None);
        assert_eq!(parse(&format!(" {}", &token[1..])), None);
        // kid 0 ("aa") is never valid.
        assert_eq!(parse(&format!("aa{}", &token[2..])), None);
        // Non-ASCII of the right byte length, and with a multi-byte character at a split point.
        assert_eq!(parse(&"é".repeat(15)), None);
        assert_eq!(parse(&format!("a{}", "é".repeat(15))), None);
        assert_eq!(parse(&format!("ab{}{}", "é", &token[4..])), None);
        assert_eq!(parse(&format!("{}凭{}", &token[..14], &token[17..])), None);
        // The last context-id character carries one trailing bit that must be zero.
        let last = KID_LEN + CONTEXT_ID_LEN - 1;
        let mut variants = 0;
        for &s in ALPHABET.iter() {
            let mut t = token.as_bytes().to_vec();
            t[last] = s;
            if parse(&String::from_utf8(t).expect("ascii")).is_some() {
                variants += 1;
            }
        }
        assert_eq!(variants, 16);
    }

    #[test]
    fn parse_fuzz_never_panics() {
        let mut rng = rand::rng();
        let charset: Vec<char> = "abcdefghijklmnopqrstuvwxyz234567ABCXYZ0189+-@ é凭\u{0}\n"
            .chars()
            .collect();
        for _ in 0..5000 {
            let len = rng.random_range(0..40);
            let s: String = (0..len)
                .map(|_| charset[rng.random_range(0..charset.len())])
                .collect();
            if let Some(parts) = parse(&s) {
                assert!((1..=MAX_KID).contains(&parts.kid));
                assert_eq!(parts.context_id.len(), CONTEXT_ID_LEN);
            }
            let _ = find_in_text(&s);
            // Random bytes, made into a string lossily.
            let bytes: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let s = String::from_utf8_lossy(&bytes);
            let _ = parse(&s);
            let _ = find_in_text(&s);
        }
        // Random 31-character strings in the alphabet: those that parse never verify.
        let ring = ring(&[1, 2, 3]);
        for _ in 0..2000 {
            let s: String = (0..TOKEN_LEN)
                .map(|_| char::from(ALPHABET[rng.random_range(0..32)]))
                .collect();
            if let Some(parts) = parse(&s) {
                assert_ne!(verify(&ring, &parts, parts.kid, EMAIL, UNTIL), Ok(()));
            }
        }
    }

    #[test]
    fn find_in_text_finds_token_lines_and_plus_addresses() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
        let expected = parse(&token).expect("parses");

        let body = format!("Approve\n\n> quoted\nToken: {token}\n");
        assert_eq!(find_in_text(&body), Some(expected.clone()));
        let body = format!("同意\r\n\r\n回复凭证: {token}\r\n");
        assert_eq!(find_in_text(&body), Some(expected.clone()));
        let body = format!("同意\n回复凭证：{token}");
        assert_eq!(find_in_text(&body), Some(expected.clone()));
        let address = format!("approvals+{token}@example.com");
        assert_eq!(find_in_text(&address), Some(expected.clone()));
        let upper = format!("APPROVALS+{}@EXAMPLE.COM", token.to_ascii_uppercase());
        assert_eq!(find_in_text(&upper), Some(expected.clone()));
        let quoted = format!("> > Token: {token}");
        assert_eq!(find_in_text(&quoted), Some(expected.clone()));
        let named = format!("Reply-To: \"Approvals\" <approvals+{token}@example.com>");
        assert_eq!(find_in_text(&named), Some(expected.clone()));
    }

    #[test]
    fn find_in_text_ignores_non_tokens() {
        let ring = ring(&[1]);
        let token = issue(&ring, &new_context_id(), EMAIL, UNTIL);
        assert_eq!(find_in_text(""), None);
        assert_eq!(
            find_in_text("Approve\n\nLooks good to me.\n-- \nAlice"),
            None
        );
        // Longer alphanumeric runs that contain a token are not tokens.
        assert_eq!(find_in_text(&format!("x{token}")), None);
        assert_eq!(find_in_text(&format!("{token}2")), None);
        assert_eq!(find_in_text(&format!("Token: {token}{token}")), None);
        // A 31-character run that does not parse is skipped; the next one is found.
        let junk = "a".repeat(TOKEN_LEN);
        let text = format!("{junk} and {} then {token}", "0".repeat(TOKEN_LEN));
        assert_eq!(find_in_text(&text), parse(&token));
        // Truncated tokens are not found.
        assert_eq!(find_in_text(&format!("Token: {}", &token[..30])), None);
    }

    #[test]
    fn context_ids_and_secrets_are_random() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_context_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), CONTEXT_ID_LEN);
            assert!(in_alphabet(id), "{id}");
            assert_eq!(BASE32.decode(id.as_bytes()).map(|b| b.len()), Ok(8));
        }
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn a_resend_after_rotation_carries_the_first_token() {
        let old = KeyRing::new(vec![(1, b"first".to_vec())]).unwrap();
        let id = new_context_id();
        let first = issue(&old, &id, "mary@example.com", 42);
        let rotated = KeyRing::new(vec![(1, b"first".to_vec()), (2, b"second".to_vec())]).unwrap();
        assert_eq!(
            issue_with_kid(&rotated, 1, &id, "mary@example.com", 42).as_deref(),
            Some(first.as_str())
        );
        assert_eq!(
            issue_with_kid(&rotated, 7, &id, "mary@example.com", 42),
            None
        );
    }
}
