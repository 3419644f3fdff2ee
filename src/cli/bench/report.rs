//! What a round-trip run measured and how it is printed: throughput, SQL statements per RPC (from
//! [`super::probe`]), memory, and the latency distribution of each RPC.
use std::{fmt::Write as _, time::Duration};

use super::{probe::StatementCounts, roundtrip::Rpc};

/// What one run measured.
#[derive(Debug, Default)]
pub(super) struct Report {
    pub(super) instances: usize,
    pub(super) concurrency: usize,
    pub(super) connections: usize,
    pub(super) backend: String,
    pub(super) wall: Duration,
    /// Instances that reached COMPLETED.
    pub(super) completed: usize,
    pub(super) errors: usize,
    pub(super) first_errors: Vec<String>,
    /// Latencies of successful calls, indexed like [`Rpc::ALL`].
    pub(super) latencies: [Vec<Duration>; 3],
    /// None when no probe ran; why not is in `no_statements`.
    pub(super) statements: Option<StatementCounts>,
    pub(super) no_statements: String,
    /// Of this process (clients and, without --addr, the server), in kB: after the server
    /// started and before the load, and the high-water mark after it.
    pub(super) rss_before_kb: Option<u64>,
    pub(super) rss_max_kb: Option<u64>,
    /// The in-process server's group writer during the load: (transactions, transitions).
    pub(super) group_commits: Option<(u64, u64)>,
}

impl Report {
    pub(super) fn instances_per_second(&self) -> f64 {
        self.completed as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    pub(super) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "replyflow bench: {} instances of expense (start + 2 completions), concurrency {}, {} HTTP/2 connection(s)",
            self.instances, self.concurrency, self.connections
        );
        let _ = writeln!(out, "backend:      {}", self.backend);
        let _ = writeln!(out, "wall time:    {:.3} s", self.wall.as_secs_f64());
        let rpcs: usize = self.latencies.iter().map(Vec::len).sum();
        let _ = writeln!(
            out,
            "instances/s:  {:.1}   (RPCs/s: {:.1})",
            self.instances_per_second(),
            rpcs as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
        );
        self.render_statements(&mut out);
        if let Some((groups, jobs)) = self.group_commits.filter(|(groups, _)| *groups > 0) {
            let _ = writeln!(
                out,
                "group commit: {jobs} transitions in {groups} transactions ({:.1} per commit)",
                jobs as f64 / groups as f64
            );
        }
        let mb = |kb: Option<u64>| {
            kb.map_or("n/a".to_string(), |kb| {
                format!("{:.1} MB", kb as f64 / 1024.0)
            })
        };
        let _ = writeln!(
            out,
            "memory:       RSS {} before the load, {} at most (VmHWM; this process: clients and in-process server)",
            mb(self.rss_before_kb),
            mb(self.rss_max_kb)
        );
        let _ = writeln!(
            out,
            "completed:    {}   errors: {}",
            self.completed, self.errors
        );
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
        );
        for rpc in Rpc::ALL {
            latency_row(&mut out, rpc.label(), self.latencies[rpc as usize].clone());
        }
        let both = [Rpc::Manager, Rpc::Finance]
            .iter()
            .flat_map(|&rpc| self.latencies[rpc as usize].iter().copied())
            .collect();
        latency_row(&mut out, "CompleteTask (both)", both);
        for error in &self.first_errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }

    fn render_statements(&self, out: &mut String) {
        let Some(s) = &self.statements else {
            let _ = writeln!(
                out,
                "statements per StartProcess / CompleteTask: n/a ({})",
                self.no_statements
            );
            return;
        };
        let _ = writeln!(
            out,
            "statements per StartProcess / CompleteTask: {:.1} / {:.1}   (CompleteTask that opens the next task with its mail: {}; that ends the instance: {})",
            mean(&s.per_rpc[Rpc::Start as usize]),
            mean(
                &[Rpc::Manager, Rpc::Finance]
                    .iter()
                    .flat_map(|&rpc| s.per_rpc[rpc as usize].iter().copied())
                    .collect::<Vec<_>>()
            ),
            spread(&s.per_rpc[Rpc::Manager as usize]),
            spread(&s.per_rpc[Rpc::Finance as usize]),
        );
        let _ = writeln!(
            out,
            "              ({} instances one at a time after the load, API only; sqlx's statement events without BEGIN/COMMIT and connection PRAGMAs)",
            s.per_rpc[Rpc::Start as usize].len(),
        );
        if !s.listing.is_empty() {
            let _ = writeln!(
                out,
                "statements of one CompleteTask that opens the next task with its mail:"
            );
            for (i, statement) in s.listing.iter().enumerate() {
                let _ = writeln!(out, "  {:>3}  {statement}", i + 1);
            }
        }
    }
}

/// One line of the latency table.
pub(super) fn latency_row(out: &mut String, label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let mean = if samples.is_empty() {
        Duration::ZERO
    } else {
        samples.iter().sum::<Duration>() / samples.len() as u32
    };
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        label,
        samples.len(),
        ms(mean),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(samples.last().copied().unwrap_or_default()),
    );
}

fn mean(counts: &[u64]) -> f64 {
    counts.iter().sum::<u64>() as f64 / counts.len().max(1) as f64
}

/// "24" when every sample agrees, else "mean 23.5 (22–25)".
fn spread(counts: &[u64]) -> String {
    match (counts.iter().min(), counts.iter().max()) {
        (Some(min), Some(max)) if min == max => min.to_string(),
        (Some(min), Some(max)) => format!("mean {:.1} ({min}–{max})", mean(counts)),
        _ => "n/a".into(),
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
pub(super) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A `VmRSS:`/`VmHWM:`-style line of /proc/self/status, in kB (None off Linux).
pub(super) fn own_memory_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
