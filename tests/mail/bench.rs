//! Throughput (issue 3, "Performance"; measured and reported, not a timed test): the outbox
//! worker delivering N mails into Postfix's `smtp-sink`, against `smtp-source` sending the same
//! number of mails of the same size into the same sink, in the same run.
//!
//! `cargo test --release --test mail -- --ignored --nocapture bench` (scripts/bench-smtp.sh).
//! Knobs: RF_BENCH_MAILS (2000), RF_BENCH_CONCURRENCY (10: smtp-source's `-s 10`),
//! RF_BENCH_ROUNDS (3; medians are reported).
//! Needs only Postfix's binaries, not the test mail stack.
use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use replyflow::{
    clock::{Clock, SystemClock},
    delivery::{self, Transport},
    model::OutboxStatus,
    store::ConnectOptions,
    workers::outbox::{OutboxWorker, RetryPolicy},
};
use tokio::sync::Notify;

use crate::helpers::{DOMAIN, TestStore, drain, eventually_blocking, insert_mail, message, unique};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";
const SMTP_SOURCE: &str = "/usr/sbin/smtp-source";
/// Message size, as smtp-source's `-l 2048`.
const SIZE: usize = 2048;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// `smtp-sink` on a free loopback port, killed when dropped.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    fn start() -> Self {
        assert!(
            std::path::Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} missing: install postfix (./scripts/test installs it)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(SMTP_SINK);
        if is_root() {
            // smtp-sink refuses to keep root privileges.
            cmd.args(["-u", "root"]);
        }
        let child = cmd
            .args(["-c", &format!("127.0.0.1:{port}"), "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting smtp-sink");
        eventually_blocking(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| format!("smtp-sink not listening: {e}"))
        });
        Self { child, port }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs smtp-source and returns its wall time.
fn smtp_source(mails: usize, port: u16, reuse: bool) -> Duration {
    let mut cmd = Command::new(SMTP_SOURCE);
    cmd.args([
        "-s",
        "10",
        "-m",
        &mails.to_string(),
        "-l",
        &SIZE.to_string(),
    ]);
    if reuse {
        cmd.arg("-d");
    }
    cmd.arg(format!("127.0.0.1:{port}"));
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("running smtp-source");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "smtp-source failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn rate(mails: usize, took: Duration) -> f64 {
    mails as f64 / took.as_secs_f64()
}

/// The outbox worker, end to end: claim, send over the pool, mark sent, on a fresh SQLite file.
async fn worker_run(mails: usize, port: u16, concurrency: usize, sync_full: bool) -> Duration {
    let db = TestStore::with_options(&ConnectOptions {
        max_connections: 8,
        synchronous_full: sync_full,
    })
    .await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let now = clock.now();
    let mut tx = db.store.begin().await.unwrap();
    let mut contexts = Vec::with_capacity(mails);
    for i in 0..mails {
        let to = format!("sink{i}@{DOMAIN}");
        contexts.push(
            insert_mail(&mut tx, now, &to, "Bench", SIZE)
                .await
                .context_id,
        );
    }
    tx.commit().await.unwrap();
    let transport = delivery::from_url(
        &format!("smtp://127.0.0.1:{port}?tls=none"),
        None,
        concurrency as u32,
    )
    .unwrap();
    let worker = OutboxWorker::new(
        db.store.clone(),
        transport,
        clock,
        Arc::new(Notify::new()),
        RetryPolicy::default(),
        concurrency,
    );
    let started = Instant::now();
    assert_eq!(drain(&worker).await, mails);
    let took = started.elapsed();
    for context in contexts.iter().step_by((mails / 50).max(1)) {
        let row = db.row(context).await;
        assert_eq!(row.status, OutboxStatus::Sent, "{}", row.last_error);
    }
    took
}

/// The transport alone (no database): what the pool and lettre cost.
async fn transport_run(mails: usize, port: u16, concurrency: usize) -> Duration {
    let transport: Arc<dyn Transport> = delivery::from_url(
        &format!("smtp://127.0.0.1:{port}?tls=none"),
        None,
        concurrency as u32,
    )
    .unwrap();
    let from = format!("approvals@{DOMAIN}");
    let bodies: Vec<(String, String, Vec<u8>)> = (0..mails)
        .map(|i| {
            let to = format!("sink{i}@{DOMAIN}");
            let id = format!("<{}@{DOMAIN}>", unique("bench"));
            let body = "x".repeat(SIZE - 300);
            let raw = message(&from, &to, &id, "Bench", &body);
            (to, id, raw)
        })
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(&bodies)
        .for_each_concurrent(concurrency, |(to, id, raw)| {
            let transport = transport.clone();
            let from = from.clone();
            async move {
                transport
                    .send(&from, to, id, raw)
                    .await
                    .expect("sink accepts");
            }
        })
        .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: cargo test --release --test mail -- --ignored --nocapture bench"]
async fn bench_outbox_throughput_against_smtp_source() {
    let mails = knob("RF_BENCH_MAILS", 2000);
    let concurrency = knob("RF_BENCH_CONCURRENCY", 10);
    let rounds = knob("RF_BENCH_ROUNDS", 3).max(1);
    let sink = Sink::start();
    let port = sink.port;

    // Warm up (connections, page cache), not measured.
    transport_run(50, port, concurrency).await;

    // Rounds interleave the senders so that a noisy moment hits all of them; medians reported.
    const NAMES: [&str; 5] = [
        "replyflow outbox worker (SQLite synchronous=FULL, default)",
        "replyflow outbox worker (SQLite synchronous=NORMAL)",
        "replyflow transport alone (no database)",
        "smtp-source -s 10 -m N -l 2048 -d (connections reused)",
        "smtp-source -s 10 -m N -l 2048 (a connection per mail)",
    ];
    let mut times: [Vec<Duration>; 5] = Default::default();
    for _ in 0..rounds {
        times[0].push(worker_run(mails, port, concurrency, true).await);
        times[1].push(worker_run(mails, port, concurrency, false).await);
        times[2].push(transport_run(mails, port, concurrency).await);
        let reuse = tokio::task::spawn_blocking(move || smtp_source(mails, port, true));
        times[3].push(reuse.await.unwrap());
        let fresh = tokio::task::spawn_blocking(move || smtp_source(mails, port, false));
        times[4].push(fresh.await.unwrap());
    }
    let median = |t: &Vec<Duration>| {
        let mut t = t.clone();
        t.sort();
        t[t.len() / 2]
    };
    let rates: Vec<f64> = times.iter().map(|t| rate(mails, median(t))).collect();
    let reference = rates[3];
    println!();
    println!(
        "{mails} mails of {SIZE} bytes into smtp-sink 127.0.0.1:{port}; replyflow pool = \
         concurrency = {concurrency}; median of {rounds} rounds"
    );
    println!(
        "{:<60} {:>8} {:>9} {:>7}  rounds (mails/s)",
        "sender", "seconds", "mails/s", "vs -d"
    );
    for (i, name) in NAMES.iter().enumerate() {
        let all: Vec<String> = times[i]
            .iter()
            .map(|t| format!("{:.0}", rate(mails, *t)))
            .collect();
        println!(
            "{name:<60} {:>8.3} {:>9.0} {:>6.0}%  {}",
            median(&times[i]).as_secs_f64(),
            rates[i],
            100.0 * rates[i] / reference,
            all.join(" ")
        );
    }
    println!(
        "ratio worker (default SQLite) / smtp-source -d: {:.0}%; worker (NORMAL) / smtp-source -d: \
         {:.0}%; transport / smtp-source -d: {:.0}%",
        100.0 * rates[0] / reference,
        100.0 * rates[1] / reference,
        100.0 * rates[2] / reference,
    );
}
