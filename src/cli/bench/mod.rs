//! `replyflow bench`: the load tool. It runs N instances of the two-level expense example
//! (StartProcess, then CompleteTask as the manager, then as finance) over gRPC with C concurrent
//! clients, and prints instances/s and the latency of each RPC.
//!
//! Without `--addr` it starts the real server in this process on 127.0.0.1:0 with the given
//! database (a fresh SQLite file by default), so the load still goes through a TCP socket, HTTP/2
//! and the generated tonic client, exactly as an outside client's would; client and server then
//! share this machine's cores. With `--addr` it loads a server that is already running.
//!
//! One file per mode: [`roundtrip`] (the default), [`countersign`] (`--countersign`), [`submit`]
//! (`--submit-replies`) and [`backlog`] (`--inbound-backlog`, with [`inbound`] what both inbound
//! modes share); [`server`] starts the in-process server; [`auth`] makes the
//! clients' identities, [`database`] the server's database, [`report`] the statistics, and
//! [`statements`] with [`probe`] count the SQL statements of each RPC.
mod auth;
mod backlog;
mod countersign;
mod database;
mod inbound;
mod probe;
mod report;
mod returning;
mod roundtrip;
mod server;
mod statements;
mod submit;

use anyhow::{Context, bail};
use clap::Args;
use tonic::transport::Channel;
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::proto::pb;

const EXPENSE_BPMN: &str = include_str!("../../../examples/expense.bpmn");
/// Over 10 000, so that the manager's approval leads to the finance level.
const AMOUNT: i64 = 20_000;
const INITIATOR: &str = "bench";
const MANAGER: &str = "mary";
const FINANCE: &str = "fred";
/// How many distinct error messages are kept for the report.
const ERRORS_SHOWN: usize = 5;

#[derive(Debug, Clone, Args)]
pub(super) struct BenchArgs {
    /// How many expense instances to run to completion.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    instances: usize,
    /// Concurrent clients; each runs one instance at a time.
    #[arg(long, default_value_t = 32, value_name = "C")]
    concurrency: usize,
    /// Clients that share one HTTP/2 connection.
    #[arg(long, default_value_t = 8, value_name = "K")]
    clients_per_connection: usize,
    /// Database of the in-process server: `sqlite://FILE` or `postgres://...` (default: a fresh
    /// SQLite file in a temporary directory).
    #[arg(long, value_name = "URL", conflicts_with = "addr")]
    database: Option<String>,
    /// With a postgres:// --database: create a fresh database `rf_bench_<uuid>` on that server
    /// first (through its `postgres` database) and drop it afterwards.
    #[arg(long, conflicts_with = "addr")]
    fresh_postgres: bool,
    /// SQLite only: `full` fsyncs every commit, `normal` only at WAL checkpoints.
    #[arg(long, default_value = "full", value_parser = ["full", "normal"], conflicts_with = "addr")]
    synchronous: String,
    /// Connection pool size of the in-process server (default: the server's default).
    #[arg(long, value_name = "N", conflicts_with = "addr")]
    max_connections: Option<u32>,
    /// Load an already running server at this address instead of an in-process one.
    #[arg(long, value_name = "URL")]
    addr: Option<String>,
    /// Send no request ids (skips the idempotency bookkeeping; real clients should send them).
    #[arg(long)]
    no_request_ids: bool,
    /// Users without email addresses: tasks open without approval mail (measures the workflow
    /// alone; by default every task renders and queues its approval mail).
    #[arg(long)]
    without_email: bool,
    /// Inbound instead: N replies wait in a fresh folder of the `--imap` account when the reader
    /// starts; prints replies applied per second, and what IMAP alone costs for the same mail.
    #[arg(long, value_name = "N", conflicts_with_all = ["addr", "submit_replies"], requires = "imap")]
    inbound_backlog: Option<usize>,
    /// Inbound instead: SubmitInboundEmail latency over N replies sent one at a time, then N
    /// more from --concurrency clients.
    #[arg(long, value_name = "N", conflicts_with = "addr")]
    submit_replies: Option<usize>,
    /// The IMAP account of --inbound-backlog, `imaps://user:pass@host:port` (a folder of its own
    /// is created there for the run and deleted afterwards).
    #[arg(long, value_name = "URL")]
    imap: Option<String>,
    /// Extra CA certificate trusted for --imap.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// Inbound benchmarks: how many approvers the replies come from (each gets at most 5
    /// confirmation mails an hour, as in production).
    #[arg(long, default_value_t = 100, value_name = "K")]
    approvers: usize,
    /// How the clients identify themselves to the in-process server: `dev` (x-user-id) or `jwt`
    /// (an HS256 Bearer token per user, verified on every call), to measure what verification
    /// costs.
    #[arg(long, default_value = "dev", value_parser = ["dev", "jwt"], conflicts_with = "addr")]
    auth: String,
    /// After the load, run N more instances one at a time against the same database, with a
    /// server that serves the API alone, and count the SQL statements of each RPC (0: skip).
    #[arg(long, default_value_t = 20, value_name = "N", conflicts_with = "addr")]
    statement_probe: usize,
    /// Print the statements of one probed CompleteTask that opens the next task with its mail.
    #[arg(long)]
    show_statements: bool,
    /// 会签 instead: N (--instances) instances of examples/countersign.bpmn with S signers each,
    /// all S deciding at the same instant; prints decisions/s and CompleteTask latency.
    #[arg(long, value_name = "S", conflicts_with_all = ["inbound_backlog", "submit_replies"])]
    countersign: Option<usize>,
    /// 退回 instead: --instances instances each with N signer tasks open (two 会签 in parallel
    /// branches), one returned to the first step; prints the ReturnTask latency.
    #[arg(long, value_name = "N", conflicts_with_all = ["inbound_backlog", "submit_replies", "countersign", "addr"])]
    return_wide: Option<usize>,
    /// The HS256 secret of `--auth jwt`, made for the run.
    #[arg(skip)]
    jwt_secret: Option<String>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            instances: 2000,
            concurrency: 32,
            clients_per_connection: 8,
            database: None,
            fresh_postgres: false,
            synchronous: "full".into(),
            max_connections: None,
            addr: None,
            no_request_ids: false,
            without_email: false,
            inbound_backlog: None,
            submit_replies: None,
            imap: None,
            ca_file: None,
            approvers: 100,
            auth: "dev".into(),
            statement_probe: 20,
            show_statements: false,
            countersign: None,
            return_wide: None,
            jwt_secret: None,
        }
    }
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_tracing();
    if args.inbound_backlog.is_some() || args.submit_replies.is_some() {
        return inbound::run(&args).await;
    }
    if let Some(open) = args.return_wide {
        return returning::run(&args, open).await;
    }
    if let Some(signers) = args.countersign {
        return countersign::run(&args, signers).await;
    }
    let report = roundtrip::bench(&args).await?;
    print!("{}", report.render());
    if report.errors > 0 || report.completed != report.instances {
        bail!(
            "{} of {} instances failed ({} errors)",
            report.instances - report.completed,
            report.instances,
            report.errors
        );
    }
    Ok(())
}

/// Log lines as RUST_LOG says (errors only by default), and the statement counter beside them
/// with a filter of its own, so that counting does not depend on what is printed.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let installed = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(statements::layer())
        .try_init();
    if installed.is_ok() {
        statements::installed();
    }
}

/// The id of the one open task of `instance`, which must be `activity`.
fn open_task(instance: &pb::ProcessInstance, activity: &str) -> anyhow::Result<String> {
    match instance.open_tasks.as_slice() {
        [task] if task.activity_id == activity => Ok(task.id.clone()),
        tasks => {
            let open: Vec<&str> = tasks.iter().map(|t| t.activity_id.as_str()).collect();
            bail!(
                "instance {}: expected one open task {activity}, found {open:?}",
                instance.id
            )
        }
    }
}

/// One HTTP/2 connection to the server (Nagle off: every request is small and waits for its answer).
async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(addr.to_string())
        .context("--addr")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        BenchArgs, countersign, database::with_database, init_tracing, report::percentile,
        roundtrip, roundtrip::Rpc,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_instances_to_completion_in_process_and_counts_their_statements() {
        init_tracing();
        let args = BenchArgs {
            instances: 5,
            concurrency: 2,
            clients_per_connection: 1,
            statement_probe: 3,
            show_statements: true,
            ..BenchArgs::default()
        };
        let report = roundtrip::bench(&args).await.expect("bench runs");
        let text = report.render();
        assert_eq!(report.errors, 0, "{text}");
        assert_eq!(report.completed, 5, "{text}");
        for rpc in Rpc::ALL {
            assert_eq!(report.latencies[rpc as usize].len(), 5);
        }
        assert!(text.contains("instances/s"), "{text}");
        assert!(text.contains("group commit: 15 transitions"), "{text}");
        assert!(text.contains("CompleteTask (finance)"), "{text}");
        assert!(text.contains("CompleteTask (both)"), "{text}");
        assert!(
            text.contains("statements per StartProcess / CompleteTask"),
            "{text}"
        );
        // Another test of this binary may have installed its subscriber first: then the counter
        // is not there, and the report says so instead of printing zeros.
        if let Some(statements) = &report.statements {
            for rpc in Rpc::ALL {
                let counts = &statements.per_rpc[rpc as usize];
                assert_eq!(counts.len(), 3, "{text}");
                assert!(counts.iter().all(|&n| n > 0), "{rpc:?}: {counts:?}");
            }
            assert!(!statements.listing.is_empty(), "{text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_countersign_run_decides_every_instance_exactly_once() {
        let args = BenchArgs {
            instances: 3,
            concurrency: 8,
            countersign: Some(4),
            ..BenchArgs::default()
        };
        countersign::run(&args, 4)
            .await
            .expect("every countersign decided once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wide_return_undoes_every_open_task() {
        let args = BenchArgs {
            instances: 2,
            return_wide: Some(6),
            ..BenchArgs::default()
        };
        super::returning::run(&args, 6)
            .await
            .expect("each return leaves the first step alone open");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/app", "postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(
            with_database("postgres://u@h/app?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
