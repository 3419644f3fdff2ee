//! The bounded fuzz run of `scripts/test` (issue 9 item 10): each of the five targets of
//! `fuzz/src/lib.rs` runs for `RF_FUZZ_SECONDS` (default 5; the script gives 60 on CI) on
//! inputs from structure-aware generators (BPMN documents, CEL expressions, reply bodies, MIME
//! messages, tokens) and byte-level mutations of seeds (the project's own examples and reply
//! fixtures, `fuzz/seeds/`, `fuzz/regressions/`).
//!
//! Why not cargo-afl here: an AFL build instruments every dependency, a second full build that
//! with the runs does not fit the suite's budget on CI's two cores (numbers in the README);
//! these loops live in the normal build and cost only their run time. cargo-afl remains for
//! deeper runs (`RF_FUZZ_ENGINE=afl`, `fuzz/`).
//!
//! A finding is saved under `target/fuzz/<target>/` and fails the test. Panics are caught per
//! input; a stack overflow or abort ends the process, so every input is first written to
//! `target/fuzz/<target>/current-input` (removed after a clean run): `scripts/lib/fuzz.sh`
//! turns a file left behind into a finding. A watchdog ends the process when one input runs
//! longer than `RF_FUZZ_HANG_SECONDS` (default 10), same file. Targets run on a thread with the
//! 2 MiB stack of tokio's worker threads, so that a recursion deep enough to stop the server is
//! deep enough here. Environment: `RF_FUZZ_SECONDS`, `RF_FUZZ_SEED` (default: time-based, printed),
//! `RF_FUZZ_MAX_LEN` (bytes, default 65536), `RF_FUZZ_HANG_SECONDS`, `RF_FUZZ_DIR`.

#[allow(dead_code, unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod targets;

mod grammar;
mod mutate;

use std::{
    fs,
    io::Write as _,
    os::unix::fs::FileExt as _,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{
        Arc, Once,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{SeedableRng as _, rngs::StdRng};
use targets::{SERVER_STACK, Target};

/// Inputs are cut to this many bytes (`RF_FUZZ_MAX_LEN`).
const DEFAULT_MAX_LEN: usize = 65536;

#[derive(Debug, Clone)]
struct Settings {
    seconds: f64,
    seed: u64,
    max_len: usize,
    hang: Duration,
    dir: PathBuf,
}

fn settings() -> Settings {
    let number = |key: &str, default: f64| -> f64 {
        match std::env::var(key) {
            Ok(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
            Err(_) => default,
        }
    };
    let seed = match std::env::var("RF_FUZZ_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("RF_FUZZ_SEED={v:?} is not an integer")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Settings {
        seconds: number("RF_FUZZ_SECONDS", 5.0),
        seed,
        max_len: number("RF_FUZZ_MAX_LEN", DEFAULT_MAX_LEN as f64) as usize,
        hang: Duration::from_secs_f64(number("RF_FUZZ_HANG_SECONDS", 10.0)),
        dir: std::env::var_os("RF_FUZZ_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/fuzz")),
    }
}

/// Seeds: the project's own example definitions and reply fixtures, `fuzz/seeds/<target>/` and
/// every saved finding of `fuzz/regressions/<target>/`.
fn seeds(target: Target) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![
        root.join("fuzz/seeds").join(target.name()),
        root.join("fuzz/regressions").join(target.name()),
    ];
    match target {
        Target::Definition => dirs.push(root.join("examples")),
        Target::Reply | Target::Inbound | Target::Token => dirs.push(root.join("tests/replies")),
        Target::Condition => {}
    }
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let wanted = match target {
                Target::Definition => path.extension().is_none_or(|e| e == "bpmn" || e == "xml"),
                Target::Reply | Target::Inbound | Target::Token => {
                    path.extension().is_none_or(|e| e != "json" && e != "py")
                }
                Target::Condition => true,
            };
            // A finding whose fix lives in another branch: replayed by its ignored test only.
            let unfixed = path.extension().is_some_and(|e| e == "unfixed");
            if wanted && !unfixed && path.is_file() {
                found.push(fs::read(&path).expect("a readable seed"));
            }
        }
    }
    found
}

#[derive(Debug, Default)]
struct Report {
    execs: u64,
    crashes: Vec<(PathBuf, String)>,
    slowest: Duration,
    slowest_len: usize,
}

fn fuzz(target: Target) {
    let settings = settings();
    let dir = settings.dir.join(target.name());
    fs::create_dir_all(&dir).expect("create the findings directory");
    let seeds = seeds(target);
    let seed_count = seeds.len();
    let run = {
        let settings = settings.clone();
        let dir = dir.clone();
        move || run_target(target, &settings, &dir, seeds)
    };
    let report = std::thread::Builder::new()
        .name(format!("fuzz-{target}"))
        .stack_size(SERVER_STACK)
        .spawn(run)
        .expect("spawn the fuzz thread")
        .join()
        .expect("the fuzz loop itself does not panic");
    let rate = report.execs as f64 / settings.seconds.max(0.001);
    let line = format!(
        "fuzz {target}: {} execs in {:.0} s ({rate:.0}/s), {} crashes, {seed_count} seeds, slowest input {} ms ({} bytes), seed {}",
        report.execs,
        settings.seconds,
        report.crashes.len(),
        report.slowest.as_millis(),
        report.slowest_len,
        settings.seed,
    );
    // One line per target whatever the capture mode: the script greps it for its summary.
    let _ = writeln!(std::io::stderr(), "{line}");
    let _ = fs::write(dir.join("summary.txt"), format!("{line}\n"));
    if !report.crashes.is_empty() {
        let list: Vec<String> = report
            .crashes
            .iter()
            .map(|(path, why)| format!("  {}: {why}", path.display()))
            .collect();
        panic!(
            "fuzz {target}: {} crashing inputs (add each to fuzz/regressions/{target}/ with a test once fixed):\n{}",
            report.crashes.len(),
            list.join("\n")
        );
    }
}

/// One line per caught panic of a target (message and location) instead of a backtrace each:
/// the input is saved, and replaying it gives the backtrace.
fn quiet_panics_on_fuzz_threads() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| match std::thread::current().name() {
            Some(name) if name.starts_with("fuzz-") => eprintln!("{name}: {info}"),
            _ => default(info),
        }));
    });
}

fn run_target(target: Target, settings: &Settings, dir: &Path, seeds: Vec<Vec<u8>>) -> Report {
    quiet_panics_on_fuzz_threads();
    let mut rng = StdRng::seed_from_u64(settings.seed ^ target as u64);
    let current_path = dir.join("current-input");
    let current = fs::File::create(&current_path).expect("create current-input");
    let started_at = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let watchdog = {
        let started_at = Arc::clone(&started_at);
        let hang = settings.hang;
        let current_path = current_path.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let start = started_at.load(Ordering::Acquire);
                if start == u64::MAX {
                    return;
                }
                let now = epoch.elapsed().as_millis() as u64;
                if start != 0 && now.saturating_sub(start) > hang.as_millis() as u64 {
                    eprintln!(
                        "fuzz {target}: HANG: one input ran over {} s; it is {}",
                        hang.as_secs(),
                        current_path.display()
                    );
                    std::process::exit(3);
                }
            }
        })
    };
    let max_len = settings.max_len;
    let deadline = Instant::now() + Duration::from_secs_f64(settings.seconds);
    let mut report = Report::default();
    let mut slowest_input = Vec::new();
    // Seeds first, as they are: a seed that fails is a finding too.
    let mut queue: Vec<Vec<u8>> = seeds.clone();
    queue.reverse();
    while Instant::now() < deadline || !queue.is_empty() {
        let mut input = match queue.pop() {
            Some(seed) => seed,
            None => next_input(target, &seeds, &mut rng),
        };
        input.truncate(max_len);
        // Written before the run: an abort leaves it behind.
        current.set_len(0).expect("truncate current-input");
        current
            .write_all_at(&input, 0)
            .expect("write current-input");
        started_at.store(epoch.elapsed().as_millis().max(1) as u64, Ordering::Release);
        let begin = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        let took = begin.elapsed();
        started_at.store(0, Ordering::Release);
        report.execs += 1;
        if took > report.slowest {
            report.slowest = took;
            report.slowest_len = input.len();
            slowest_input.clone_from(&input);
        }
        if let Err(panic) = outcome {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_owned());
            let path = dir.join(format!("crash-{:016x}", fnv(&input)));
            fs::write(&path, &input).expect("save the crashing input");
            report.crashes.push((path, why));
            if report.crashes.len() >= 5 {
                break;
            }
        }
    }
    started_at.store(u64::MAX, Ordering::Release);
    let _ = watchdog.join();
    // Kept for a look at what is slow (cost that grows faster than the input is a hang).
    let _ = fs::write(dir.join("slowest-input"), &slowest_input);
    drop(current);
    let _ = fs::remove_file(&current_path);
    report
}

/// A new input: mostly from the target's grammar, else a seed or a generated input mutated.
fn next_input(target: Target, seeds: &[Vec<u8>], rng: &mut StdRng) -> Vec<u8> {
    use rand::RngExt as _;
    let mut input = if seeds.is_empty() || rng.random_bool(0.6) {
        grammar::generate(target, rng)
    } else {
        seeds[rng.random_range(0..seeds.len())].clone()
    };
    if rng.random_bool(0.4) {
        let rounds = rng.random_range(1..=8);
        for _ in 0..rounds {
            mutate::mutate(&mut input, seeds, grammar::dictionary(target), rng);
        }
    }
    input
}

/// FNV-1a: a stable file name for a finding.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn fuzz_definition_parser() {
    fuzz(Target::Definition);
}

#[test]
fn fuzz_cel_front_end() {
    fuzz(Target::Condition);
}

#[test]
fn fuzz_reply_reader() {
    fuzz(Target::Reply);
}

#[test]
fn fuzz_token_verifier() {
    fuzz(Target::Token);
}

#[test]
fn fuzz_inbound_mime_path() {
    fuzz(Target::Inbound);
}
