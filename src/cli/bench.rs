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
            jwt_secret: None,
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
    if args.inbound_backlog.is_some() || args.submit_replies.is_some() {
        return inbound::run(&args).await;
    }
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
    settings.security.admins = "admin".into();
    let mut args = args.clone();
    if args.auth == "jwt" {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        settings.security.auth = "jwt".into();
        settings.security.jwt_hs256_secret = Some(Secret::new(secret.clone()));
        settings.security.jwt_issuer = Some(BENCH_JWT_ISSUER.into());
        settings.security.jwt_audience = Some(BENCH_JWT_AUDIENCE.into());
        args.jwt_secret = Some(secret);
    }
    let args = &args;
    if let Some(max) = args.max_connections {
        settings.database.max_connections = max;
    }
    let backend = if database.url.starts_with("sqlite:") {
        format!(
            "sqlite synchronous={} max_connections={} auth={} (in-process server)",
            settings.database.synchronous,
            settings.database.max_connections,
            settings.security.auth
        )
    } else {
        format!(
            "postgres max_connections={} auth={} (in-process server)",
            settings.database.max_connections, settings.security.auth
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
    initiator: Identity,
    manager: Identity,
    finance: Identity,
    variables: prost_types::Struct,
    version: i32,
    request_ids: bool,
}

impl Clients {
    fn new(args: &BenchArgs, channel: Channel, version: i32) -> anyhow::Result<Self> {
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
        Ok(Self {
            workflow: pb::workflow_service_client::WorkflowServiceClient::new(channel.clone()),
            tasks: pb::task_service_client::TaskServiceClient::new(channel),
            initiator: Identity::of(args, INITIATOR)?,
            manager: Identity::of(args, MANAGER)?,
            finance: Identity::of(args, FINANCE)?,
            variables,
            version,
            request_ids: !args.no_request_ids,
        })
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

const BENCH_JWT_ISSUER: &str = "https://sso.bench.example";
const BENCH_JWT_AUDIENCE: &str = "replyflow";

/// Who a bench client is: `x-user-id` in dev mode, or a Bearer JWT minted once per user (as a
/// real client reuses its token until it expires).
#[derive(Debug, Clone)]
struct Identity {
    header: &'static str,
    value: MetadataValue<Ascii>,
}

impl Identity {
    /// `x-user-id: user` (the inbound benchmarks run in dev mode).
    fn dev(user: &'static str) -> Self {
        Self {
            header: crate::api::auth::USER_ID_HEADER,
            value: MetadataValue::from_static(user),
        }
    }

    fn of(args: &BenchArgs, user: &str) -> anyhow::Result<Self> {
        match &args.jwt_secret {
            None => Ok(Self {
                header: crate::api::auth::USER_ID_HEADER,
                value: user.parse().context("a user id")?,
            }),
            Some(secret) => {
                let exp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_secs()
                    + 3600;
                let roles: &[&str] = if user == "admin" { &["admin"] } else { &[] };
                let token = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                    &json!({
                        "sub": user, "exp": exp, "roles": roles,
                        "iss": BENCH_JWT_ISSUER, "aud": BENCH_JWT_AUDIENCE,
                    }),
                    &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
                )?;
                Ok(Self {
                    header: "authorization",
                    value: format!("Bearer {token}").parse()?,
                })
            }
        }
    }
}

fn as_user<T>(message: T, user: &Identity) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(user.header, user.value.clone());
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
    let admin = Identity::of(args, "admin")?;
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
            args,
            channels[worker / args.clients_per_connection].clone(),
            definition.version,
        )?;
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

/// The inbound benchmarks (issue 4, "Performance"): replies read from a backlog in an IMAP
/// folder, and replies handed in over `SubmitInboundEmail`. Both run the in-process server on the
/// given database, with approval mail written as files; each reply is mary-style "同意" to a real
/// approval mail (quoted, In-Reply-To, plus address), from one of `--approvers` approvers, and
/// completes the manager's level of an expense (which opens the finance level and its mail).
mod inbound {
    use std::{path::Path, sync::Arc};

    use futures_util::TryStreamExt;
    use rustls_pki_types::ServerName;
    use tokio::net::TcpStream;
    use tokio_rustls::{TlsConnector, client::TlsStream};

    use super::*;
    use crate::{
        mail::transport::tls_roots,
        model::Verdict,
        store::{PageRequest, inbound::InboundFilter},
        workers::inbound::{ImapTls, InboundSource, InboundWorker},
        workflow::Workflow,
    };

    type Session = async_imap::Session<TlsStream<TcpStream>>;

    /// One reply ready to be delivered: the plus address it goes to and its bytes.
    struct Reply {
        recipient: String,
        raw: Vec<u8>,
    }

    pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
        if args.approvers == 0 || args.concurrency == 0 || args.clients_per_connection == 0 {
            bail!("--approvers, --concurrency and --clients-per-connection must be at least 1");
        }
        let database = Database::prepare(args).await?;
        let mail_dir =
            std::env::temp_dir().join(format!("rf-bench-mail-{}", uuid::Uuid::now_v7().simple()));
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".into();
        settings.database.url = Secret::new(database.url.clone());
        settings.database.synchronous = args.synchronous.clone();
        settings.mail.outbound = Secret::new(format!("file:{}", mail_dir.display()));
        settings.mail.inbound = Secret::new("none");
        settings.security.admins = "admin".into();
        settings.security.roles.mail = "mail-gateway".into();
        if let Some(max) = args.max_connections {
            settings.database.max_connections = max;
        }
        let backend = if database.url.starts_with("sqlite:") {
            format!(
                "sqlite synchronous={} max_connections={}",
                settings.database.synchronous, settings.database.max_connections
            )
        } else {
            format!(
                "postgres max_connections={}",
                settings.database.max_connections
            )
        };
        let result = async {
            let application = Application::build(&settings, Arc::new(SystemClock))
                .await
                .context("starting the in-process server")?;
            let addr = format!("http://{}", application.local_addr());
            let workflow = application.workflow();
            let shutdown = application.shutdown_token();
            let server = tokio::spawn(application.run_until_stopped());
            let outcome = match (args.inbound_backlog, args.submit_replies) {
                (Some(n), _) => backlog(args, &addr, &workflow, n, &backend).await,
                (None, Some(n)) => submit(args, &addr, &workflow, n, &backend).await,
                (None, None) => Ok(()),
            };
            shutdown.cancel();
            server
                .await
                .context("the in-process server panicked")?
                .context("the in-process server")?;
            outcome
        }
        .await;
        database.cleanup().await;
        let _ = std::fs::remove_dir_all(&mail_dir);
        result
    }

    /// Approvers a0..aK, fred (finance), the expense definition; then `n` instances started by
    /// `--concurrency` clients, and one reply to each manager's approval mail.
    async fn prepare(
        args: &BenchArgs,
        addr: &str,
        workflow: &Workflow,
        n: usize,
        delivered_to: bool,
    ) -> anyhow::Result<Vec<Reply>> {
        let channel = connect(addr).await?;
        let admin = Identity::dev("admin");
        let mut directory =
            pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
        let approvers: Vec<String> = (0..args.approvers).map(|i| format!("a{i}")).collect();
        for id in approvers.iter().map(String::as_str).chain([FINANCE]) {
            let user = pb::User {
                id: id.into(),
                display_name: id.into(),
                email: format!("{id}@bench.example"),
                locale: "zh-CN".into(),
                ..Default::default()
            };
            directory
                .upsert_user(as_user(pb::UpsertUserRequest { user: Some(user) }, &admin))
                .await
                .with_context(|| format!("adding user {id}"))?;
        }
        let message = pb::DeployDefinitionRequest {
            bpmn_xml: EXPENSE_BPMN.as_bytes().to_vec(),
            request_id: String::new(),
        };
        pb::workflow_service_client::WorkflowServiceClient::new(channel.clone())
            .deploy_definition(as_user(message, &admin))
            .await
            .context("deploying examples/expense.bpmn")?;

        let next = Arc::new(AtomicUsize::new(0));
        let approvers = Arc::new(approvers);
        let mut starters = JoinSet::new();
        for _ in 0..args.concurrency {
            let mut client =
                pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
            let (next, approvers) = (next.clone(), approvers.clone());
            starters.spawn(async move {
                let initiator = Identity::dev(INITIATOR);
                let mut started = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return anyhow::Ok(started);
                    }
                    let manager = &approvers[i % approvers.len()];
                    let variables = json!({
                        "manager": manager, "finance": FINANCE, "amount": AMOUNT,
                        "reason": "inbound benchmark",
                    });
                    let serde_json::Value::Object(variables) = variables else {
                        unreachable!("a JSON object literal")
                    };
                    let message = pb::StartProcessRequest {
                        definition_key: "expense".into(),
                        business_key: format!("inbound-{i}"),
                        variables: Some(convert::json_to_struct(&variables)),
                        ..Default::default()
                    };
                    let instance = client
                        .start_process(as_user(message, &initiator))
                        .await
                        .map_err(|s| anyhow::anyhow!("StartProcess: {}", s.message()))?
                        .into_inner();
                    let task = open_task(&instance, "manager_approval")?;
                    started.push((i, task, format!("{manager}@bench.example")));
                }
            });
        }
        let mut tasks = Vec::with_capacity(n);
        while let Some(done) = starters.join_next().await {
            tasks.extend(done.context("a client panicked")??);
        }
        tasks.sort_by_key(|(i, _, _)| *i);
        let store = workflow.store();
        let mut replies = Vec::with_capacity(n);
        for (i, task, from) in tasks {
            let context = store
                .approval_for_task(&task)
                .await?
                .with_context(|| format!("no approval context for task {task}"))?;
            let mails = store.mail_for_context(&context.id).await?;
            let mail = mails
                .iter()
                .find(|m| m.kind == crate::model::OutboxKind::Approval)
                .with_context(|| format!("no approval mail for task {task}"))?;
            replies.push(compose_reply(&mail.body, &from, i, delivered_to)?);
        }
        Ok(replies)
    }

    /// "同意，第i笔" on top of the quoted approval mail, as a mail client writes a reply.
    fn compose_reply(
        approval: &[u8],
        from: &str,
        i: usize,
        delivered_to: bool,
    ) -> anyhow::Result<Reply> {
        let mail = mail_parser::MessageParser::default()
            .parse(approval)
            .context("parsing an approval mail")?;
        let reply_to = mail
            .reply_to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .context("the approval mail has no Reply-To")?
            .to_string();
        let message_id = mail.message_id().context("no Message-ID")?;
        let subject = mail.subject().unwrap_or_default();
        let mut text = format!(
            "同意，第{i}笔\r\n\r\n在 2026年11月21日周六 23:40，审批 <approvals@bench.example> 写道：\r\n"
        );
        for line in mail.body_text(0).unwrap_or_default().lines() {
            text.push_str("> ");
            text.push_str(line);
            text.push_str("\r\n");
        }
        let mut raw = String::new();
        if delivered_to {
            raw.push_str(&format!("Delivered-To: {reply_to}\r\n"));
        }
        raw.push_str(&format!(
            "From: {from}\r\nTo: {reply_to}\r\nSubject: Re: {subject}\r\n\
             Message-ID: <bench-{}@bench.example>\r\nIn-Reply-To: <{message_id}>\r\n\
             References: <{message_id}>\r\nDate: Sat, 21 Nov 2026 23:41:00 +0800\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 8bit\r\n\r\n{text}",
            uuid::Uuid::now_v7().simple()
        ));
        Ok(Reply {
            recipient: reply_to,
            raw: raw.into_bytes(),
        })
    }

    /// How many replies the inbound log records as applied.
    async fn applied(workflow: &Workflow) -> anyhow::Result<usize> {
        let filter = InboundFilter {
            verdict: Some(Verdict::Applied),
            ..Default::default()
        };
        let (mut count, mut token) = (0, String::new());
        loop {
            let page = workflow
                .store()
                .list_inbound(&filter, &PageRequest::new(500, token)?)
                .await?;
            count += page.items.len();
            if page.next_page_token.is_empty() {
                return Ok(count);
            }
            token = page.next_page_token;
        }
    }

    // -------------------------------------------------------------------- backlog over IMAP

    async fn backlog(
        args: &BenchArgs,
        addr: &str,
        workflow: &Arc<Workflow>,
        n: usize,
        backend: &str,
    ) -> anyhow::Result<()> {
        let url = args
            .imap
            .as_deref()
            .context("--inbound-backlog needs --imap")?;
        let InboundSource::Imap {
            tls,
            host,
            port,
            user,
            password,
            ..
        } = InboundSource::from_url(url)?
        else {
            bail!("--imap must be an imaps:// URL");
        };
        if tls != ImapTls::Implicit {
            bail!("--imap: only imaps:// (TLS from the first byte) is supported here");
        }
        let ca = args.ca_file.as_deref();
        let run = uuid::Uuid::now_v7().simple().to_string();
        let (folder, done) = (format!("rf-bench-{run}"), format!("rf-bench-{run}-done"));

        let t = Instant::now();
        let replies = prepare(args, addr, workflow, n, true).await?;
        eprintln!(
            "prepared {n} tasks and replies in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        let mut session = login(&host, port, &user, &password, ca).await?;
        session.create(&folder).await.context("CREATE")?;
        session.create(&done).await.context("CREATE")?;
        // A few connections append side by side: filling the mailbox is not what is measured.
        let chunks: Vec<Vec<Vec<u8>>> = replies
            .chunks(n.div_ceil(4))
            .map(|c| c.iter().map(|r| r.raw.clone()).collect())
            .collect();
        let mut appenders = JoinSet::new();
        for chunk in chunks {
            let (host, user, password, folder) =
                (host.clone(), user.clone(), password.clone(), folder.clone());
            let ca = ca.map(Path::to_path_buf);
            appenders.spawn(async move {
                let mut s = login(&host, port, &user, &password, ca.as_deref()).await?;
                for raw in chunk {
                    s.append(&folder, None, None, &raw)
                        .await
                        .context("APPEND")?;
                }
                let _ = s.logout().await;
                anyhow::Ok(())
            });
        }
        while let Some(done) = appenders.join_next().await {
            done.context("an appender panicked")??;
        }
        eprintln!(
            "appended {n} replies to {folder} in {:.1} s",
            t.elapsed().as_secs_f64()
        );

        let source = InboundSource::Imap {
            tls,
            host: host.clone(),
            port,
            user: user.clone(),
            password: password.clone(),
            folder: folder.clone(),
        };
        let worker =
            InboundWorker::new(workflow.clone(), source, done.clone(), args.ca_file.clone());
        let before = applied(workflow).await?;
        let started = Instant::now();
        let read = worker.run_once().await.context("the inbound pass")?;
        let wall = started.elapsed();
        let applied = applied(workflow).await? - before;

        // The same mail, IMAP alone: what FETCH (sizes, then bodies 100 per command, as the
        // reader does) and UID MOVE (100 per command) cost without any ingestion.
        session.select(&done).await.context("SELECT")?;
        let t = Instant::now();
        let sizes: Vec<_> = session
            .uid_fetch("1:*", "(UID RFC822.SIZE)")
            .await?
            .try_collect()
            .await?;
        let uids: Vec<u32> = sizes.iter().filter_map(|f| f.uid).collect();
        let mut bytes = 0usize;
        for chunk in uids.chunks(100) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let bodies: Vec<_> = session
                .uid_fetch(&set, "(UID BODY.PEEK[])")
                .await?
                .try_collect()
                .await?;
            bytes += bodies
                .iter()
                .filter_map(|f| f.body())
                .map(<[u8]>::len)
                .sum::<usize>();
        }
        let fetch = t.elapsed();
        let t = Instant::now();
        for chunk in uids.chunks(100) {
            let set = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            session.uid_mv(&set, &folder).await.context("UID MOVE")?;
        }
        let moves = t.elapsed();
        let _ = session.select("INBOX").await;
        let _ = session.delete(&folder).await;
        let _ = session.delete(&done).await;
        let _ = session.logout().await;

        let secs = wall.as_secs_f64().max(f64::EPSILON);
        println!(
            "replyflow bench --inbound-backlog: {n} replies waiting in an IMAP folder when the reader starts"
        );
        println!(
            "backend:            {backend}; approvers {}",
            args.approvers
        );
        println!("read / applied:     {read} / {applied}");
        println!(
            "wall time:          {secs:.3} s (one pass: connect, SELECT, FETCH, ingest, MOVE)"
        );
        println!("applied/s:          {:.1}", applied as f64 / secs);
        println!(
            "IMAP alone, same {} messages ({:.1} MB): FETCH sizes + bodies {:.3} s, UID MOVE {:.3} s ({:.0}% of the pass)",
            uids.len(),
            bytes as f64 / 1e6,
            fetch.as_secs_f64(),
            moves.as_secs_f64(),
            100.0 * (fetch + moves).as_secs_f64() / secs
        );
        println!(
            "ingestion:          ≈ {:.3} s, {:.2} ms per reply (the rest of the pass)",
            (secs - (fetch + moves).as_secs_f64()).max(0.0),
            1000.0 * (secs - (fetch + moves).as_secs_f64()).max(0.0) / n.max(1) as f64
        );
        if applied != n {
            bail!("{applied} of {n} replies applied");
        }
        Ok(())
    }

    async fn login(
        host: &str,
        port: u16,
        user: &str,
        password: &str,
        ca: Option<&Path>,
    ) -> anyhow::Result<Session> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(tls_roots(ca)?)
            .with_no_client_auth();
        let tcp = TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        let name = ServerName::try_from(host.to_string()).context("--imap host")?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let mut client = async_imap::Client::new(tls);
        client
            .read_response()
            .await
            .context("IMAP greeting")?
            .context("no IMAP greeting")?;
        client
            .login(user, password)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("IMAP LOGIN as {user}"))
    }

    // -------------------------------------------------------------------- SubmitInboundEmail

    async fn submit(
        args: &BenchArgs,
        addr: &str,
        workflow: &Arc<Workflow>,
        n: usize,
        backend: &str,
    ) -> anyhow::Result<()> {
        let t = Instant::now();
        let mut replies = prepare(args, addr, workflow, 2 * n, false).await?;
        eprintln!(
            "prepared {} tasks and replies in {:.1} s",
            2 * n,
            t.elapsed().as_secs_f64()
        );
        let concurrent = replies.split_off(n);
        println!(
            "replyflow bench --submit-replies: SubmitInboundEmail, each reply applied (completes a task)"
        );
        println!("backend: {backend}; approvers {}", args.approvers);
        println!(
            "{:<28} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "max", "replies/s"
        );
        let mut failed = 0;
        for (label, batch, clients) in [
            ("sequential (1 client)".to_string(), replies, 1),
            (
                format!("concurrent ({} clients)", args.concurrency),
                concurrent,
                args.concurrency,
            ),
        ] {
            let connections = clients.div_ceil(args.clients_per_connection);
            let mut channels = Vec::with_capacity(connections);
            for _ in 0..connections {
                channels.push(connect(addr).await?);
            }
            let batch = Arc::new(batch);
            let next = Arc::new(AtomicUsize::new(0));
            let started = Instant::now();
            let mut set = JoinSet::new();
            for c in 0..clients {
                let mut client = pb::approval_service_client::ApprovalServiceClient::new(
                    channels[c / args.clients_per_connection].clone(),
                );
                let (batch, next) = (batch.clone(), next.clone());
                set.spawn(async move {
                    let gateway = Identity::dev("mail-gateway");
                    let (mut samples, mut errors) = (Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(reply) = batch.get(i) else {
                            return (samples, errors);
                        };
                        let message = pb::SubmitInboundEmailRequest {
                            raw: reply.raw.clone(),
                            recipient: reply.recipient.clone(),
                        };
                        let t = Instant::now();
                        match client
                            .submit_inbound_email(as_user(message, &gateway))
                            .await
                        {
                            Ok(r) if r.get_ref().verdict == pb::Verdict::Applied as i32 => {
                                samples.push(t.elapsed());
                            }
                            Ok(r) => errors.push(format!("reply {i}: {}", r.get_ref().reason)),
                            Err(s) => errors.push(format!("reply {i}: {}", s.message())),
                        }
                    }
                });
            }
            let mut samples = Vec::new();
            let mut errors = Vec::new();
            while let Some(done) = set.join_next().await {
                let (s, e) = done.context("a client panicked")?;
                samples.extend(s);
                errors.extend(e);
            }
            let wall = started.elapsed();
            samples.sort_unstable();
            let mean = if samples.is_empty() {
                Duration::ZERO
            } else {
                samples.iter().sum::<Duration>() / samples.len() as u32
            };
            println!(
                "{label:<28} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1}",
                samples.len(),
                ms(mean),
                ms(percentile(&samples, 0.50)),
                ms(percentile(&samples, 0.90)),
                ms(percentile(&samples, 0.99)),
                ms(samples.last().copied().unwrap_or_default()),
                samples.len() as f64 / wall.as_secs_f64().max(f64::EPSILON)
            );
            for e in errors.iter().take(ERRORS_SHOWN) {
                println!("error: {e}");
            }
            failed += errors.len();
        }
        if failed > 0 {
            bail!("{failed} replies were not applied");
        }
        Ok(())
    }
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
