//! `replyflow bench`: the load tool. It runs N instances of the two-level expense example
//! (StartProcess, then CompleteTask as the manager, then as finance) over gRPC with C concurrent
//! clients, and prints instances/s and the latency of each RPC.
//!
//! Without `--addr` it starts the real server in this process on 127.0.0.1:0 with the given
//! database (a fresh SQLite file by default), so the load still goes through a TCP socket, HTTP/2
//! and the generated tonic client, exactly as an outside client's would; client and server then
//! share this machine's cores. With `--addr` it loads a server that is already running.
use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::task::JoinSet;
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use crate::{
    api::convert,
    app::Application,
    clock::SystemClock,
    config::{Secret, Settings},
    proto::pb,
};

const EXPENSE_BPMN: &str = include_str!("../../examples/expense.bpmn");
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
        }
    }
}

/// The three RPCs of one instance.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Start,
    Manager,
    Finance,
}

impl Rpc {
    const ALL: [Rpc; 3] = [Rpc::Start, Rpc::Manager, Rpc::Finance];

    fn label(self) -> &'static str {
        match self {
            Rpc::Start => "StartProcess",
            Rpc::Manager => "CompleteTask (manager)",
            Rpc::Finance => "CompleteTask (finance)",
        }
    }
}

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
    latencies: [Vec<Duration>; 3],
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
            let mut samples = self.latencies[rpc as usize].clone();
            samples.sort_unstable();
            let mean = if samples.is_empty() {
                Duration::ZERO
            } else {
                samples.iter().sum::<Duration>() / samples.len() as u32
            };
            let _ = writeln!(
                out,
                "{:<24} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                rpc.label(),
                samples.len(),
                ms(mean),
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.90)),
                ms(percentile(&samples, 0.99)),
                ms(samples.last().copied().unwrap_or_default()),
            );
        }
        for error in &self.first_errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_tracing();
    let report = bench(&args).await?;
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the load and returns what it measured; a server of its own is started and stopped unless
/// `--addr` names one.
pub(super) async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.instances == 0 || args.concurrency == 0 || args.clients_per_connection == 0 {
        bail!("--instances, --concurrency and --clients-per-connection must be at least 1");
    }
    if let Some(addr) = &args.addr {
        return load(args, addr, format!("the server at {addr}")).await;
    }
    let database = Database::prepare(args).await?;
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Secret::new(database.url.clone());
    settings.database.synchronous = args.synchronous.clone();
    // Approval mail is part of every transition: write it as files in a directory of our own.
    let mail_dir =
        std::env::temp_dir().join(format!("rf-bench-mail-{}", uuid::Uuid::now_v7().simple()));
    settings.mail.outbound = Secret::new(format!("file:{}", mail_dir.display()));
    settings.mail.inbound = Secret::new("none");
    if let Some(max) = args.max_connections {
        settings.database.max_connections = max;
    }
    let backend = if database.url.starts_with("sqlite:") {
        format!(
            "sqlite synchronous={} max_connections={} (in-process server)",
            settings.database.synchronous, settings.database.max_connections
        )
    } else {
        format!(
            "postgres max_connections={} (in-process server)",
            settings.database.max_connections
        )
    };
    let result = async {
        let application = Application::build(&settings, Arc::new(SystemClock))
            .await
            .context("starting the in-process server")?;
        let addr = format!("http://{}", application.local_addr());
        let shutdown = application.shutdown_token();
        let server = tokio::spawn(application.run_until_stopped());
        let report = load(args, &addr, backend).await;
        shutdown.cancel();
        server
            .await
            .context("the in-process server panicked")?
            .context("the in-process server")?;
        report
    }
    .await;
    database.cleanup().await;
    let _ = std::fs::remove_dir_all(&mail_dir);
    result
}

/// Where the in-process server keeps its data, and how to throw it away afterwards.
struct Database {
    url: String,
    /// A temporary directory of our own, removed afterwards (`tempfile` is only a dev-dependency).
    dir: Option<std::path::PathBuf>,
    /// (URL of the `postgres` database, name of the database to drop)
    pg_admin: Option<(String, String)>,
}

impl Database {
    async fn prepare(args: &BenchArgs) -> anyhow::Result<Self> {
        let Some(url) = &args.database else {
            if args.fresh_postgres {
                bail!("--fresh-postgres needs a postgres:// --database");
            }
            let dir = std::env::temp_dir()
                .join(format!("replyflow-bench-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            return Ok(Self {
                url,
                dir: Some(dir),
                pg_admin: None,
            });
        };
        if !args.fresh_postgres {
            return Ok(Self {
                url: url.clone(),
                dir: None,
                pg_admin: None,
            });
        }
        if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            bail!("--fresh-postgres needs a postgres:// --database");
        }
        let admin = with_database(url, "postgres");
        let name = format!("rf_bench_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .context("connecting to the postgres database of --database")?;
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .with_context(|| format!("creating database {name}"))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(Self {
            url: with_database(url, &name),
            dir: None,
            pg_admin: Some((admin, name)),
        })
    }

    async fn cleanup(self) {
        if let Some(dir) = &self.dir
            && let Err(err) = std::fs::remove_dir_all(dir)
        {
            eprintln!("warning: could not remove {}: {err}", dir.display());
        }
        let Some((admin, name)) = &self.pg_admin else {
            return;
        };
        let dropped = async {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await?;
            sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            )
            .await?;
            sqlx::Connection::close(conn).await
        }
        .await;
        if let Err(err) = dropped {
            eprintln!("warning: could not drop database {name}: {err}");
        }
    }
}

/// `url` with its database name replaced by `name`, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{prefix}/{name}{query}")
}

/// The generated clients over one connection, and the identities they act as.
#[derive(Clone)]
struct Clients {
    workflow: pb::workflow_service_client::WorkflowServiceClient<Channel>,
    tasks: pb::task_service_client::TaskServiceClient<Channel>,
    initiator: MetadataValue<Ascii>,
    manager: MetadataValue<Ascii>,
    finance: MetadataValue<Ascii>,
    variables: prost_types::Struct,
    version: i32,
    request_ids: bool,
}

impl Clients {
    fn new(channel: Channel, version: i32, request_ids: bool) -> Self {
        let variables = json!({
            "manager": MANAGER,
            "finance": FINANCE,
            "amount": AMOUNT,
            "reason": "load test",
        });
        let variables = match variables {
            serde_json::Value::Object(map) => convert::json_to_struct(&map),
            _ => unreachable!("a JSON object literal"),
        };
        Self {
            workflow: pb::workflow_service_client::WorkflowServiceClient::new(channel.clone()),
            tasks: pb::task_service_client::TaskServiceClient::new(channel),
            initiator: MetadataValue::from_static(INITIATOR),
            manager: MetadataValue::from_static(MANAGER),
            finance: MetadataValue::from_static(FINANCE),
            variables,
            version,
            request_ids,
        }
    }

    fn request_id(&self) -> String {
        if self.request_ids {
            uuid::Uuid::now_v7().to_string()
        } else {
            String::new()
        }
    }

    /// Runs one instance to its end, adding each call's latency to `latencies`.
    async fn one_instance(
        &mut self,
        n: usize,
        latencies: &mut [Vec<Duration>; 3],
    ) -> anyhow::Result<()> {
        let message = pb::StartProcessRequest {
            definition_key: "expense".into(),
            version: self.version,
            business_key: format!("bench-{n}"),
            variables: Some(self.variables.clone()),
            request_id: self.request_id(),
        };
        let request = as_user(message, &self.initiator);
        let started = Instant::now();
        let instance = self
            .workflow
            .start_process(request)
            .await
            .map_err(|s| anyhow::anyhow!("StartProcess: {}: {}", s.code(), s.message()))?
            .into_inner();
        latencies[Rpc::Start as usize].push(started.elapsed());
        let task = open_task(&instance, "manager_approval")?;

        let instance = self.complete(Rpc::Manager, task, latencies).await?;
        let task = open_task(&instance, "finance_approval")?;

        let instance = self.complete(Rpc::Finance, task, latencies).await?;
        if instance.status != pb::InstanceStatus::Completed as i32
            || !instance.open_tasks.is_empty()
        {
            bail!(
                "instance {} is not completed after both approvals (status {})",
                instance.id,
                instance.status
            );
        }
        Ok(())
    }

    async fn complete(
        &mut self,
        rpc: Rpc,
        task_id: String,
        latencies: &mut [Vec<Duration>; 3],
    ) -> anyhow::Result<pb::ProcessInstance> {
        let user = match rpc {
            Rpc::Finance => &self.finance,
            _ => &self.manager,
        };
        let message = pb::CompleteTaskRequest {
            task_id,
            outcome: "approve".into(),
            comment: "ok".into(),
            variables: None,
            request_id: self.request_id(),
        };
        let request = as_user(message, user);
        let started = Instant::now();
        let done = self
            .tasks
            .complete_task(request)
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}: {}", rpc.label(), s.code(), s.message()))?
            .into_inner();
        latencies[rpc as usize].push(started.elapsed());
        done.instance
            .with_context(|| format!("{}: no instance in the answer", rpc.label()))
    }
}

fn as_user<T>(message: T, user: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(crate::api::auth::USER_ID_HEADER, user.clone());
    request
}

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

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(addr.to_string())
        .context("--addr")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// Prepares users and the definition through the API, then runs the clients.
async fn load(args: &BenchArgs, addr: &str, backend: String) -> anyhow::Result<Report> {
    let setup = connect(addr).await?;
    let admin = MetadataValue::from_static("admin");
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(setup.clone());
    for (id, manager) in [(FINANCE, ""), (MANAGER, ""), (INITIATOR, MANAGER)] {
        let user = pb::User {
            id: id.into(),
            display_name: id.into(),
            email: if args.without_email {
                String::new()
            } else {
                format!("{id}@bench.example")
            },
            manager_id: manager.into(),
            locale: "en".into(),
            ..Default::default()
        };
        let message = pb::UpsertUserRequest { user: Some(user) };
        directory
            .upsert_user(as_user(message, &admin))
            .await
            .with_context(|| format!("adding user {id}"))?;
    }
    let message = pb::DeployDefinitionRequest {
        bpmn_xml: EXPENSE_BPMN.as_bytes().to_vec(),
        request_id: String::new(),
    };
    let definition = pb::workflow_service_client::WorkflowServiceClient::new(setup)
        .deploy_definition(as_user(message, &admin))
        .await
        .context("deploying examples/expense.bpmn")?
        .into_inner();

    let connections = args.concurrency.div_ceil(args.clients_per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = args.instances;
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mut clients = Clients::new(
            channels[worker / args.clients_per_connection].clone(),
            definition.version,
            !args.no_request_ids,
        );
        let next = next.clone();
        workers.spawn(async move {
            let mut result = WorkerResult::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                match clients.one_instance(n, &mut result.latencies).await {
                    Ok(()) => result.completed += 1,
                    Err(err) => {
                        result.errors += 1;
                        if result.first_errors.len() < ERRORS_SHOWN {
                            result.first_errors.push(format!("{err:#}"));
                        }
                    }
                }
            }
            result
        });
    }
    let mut report = Report {
        instances: total,
        concurrency: args.concurrency,
        connections,
        backend,
        ..Report::default()
    };
    while let Some(result) = workers.join_next().await {
        let result = result.context("a bench client panicked")?;
        report.completed += result.completed;
        report.errors += result.errors;
        for error in result.first_errors {
            if report.first_errors.len() < ERRORS_SHOWN && !report.first_errors.contains(&error) {
                report.first_errors.push(error);
            }
        }
        for (all, mine) in report.latencies.iter_mut().zip(result.latencies) {
            all.extend(mine);
        }
    }
    report.wall = started.elapsed();
    Ok(report)
}

#[derive(Debug, Default)]
struct WorkerResult {
    completed: usize,
    errors: usize,
    first_errors: Vec<String>,
    latencies: [Vec<Duration>; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_instances_to_completion_in_process() {
        let args = BenchArgs {
            instances: 5,
            concurrency: 2,
            clients_per_connection: 1,
            ..BenchArgs::default()
        };
        let report = bench(&args).await.expect("bench runs");
        assert_eq!(report.errors, 0, "{}", report.render());
        assert_eq!(report.completed, 5, "{}", report.render());
        for rpc in Rpc::ALL {
            assert_eq!(report.latencies[rpc as usize].len(), 5);
        }
        let text = report.render();
        assert!(text.contains("instances/s"), "{text}");
        assert!(text.contains("CompleteTask (finance)"), "{text}");
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
