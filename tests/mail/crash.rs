//! Exactly once across a crash (DESIGN §10, issue 4 "Exactly once"): the real `replyflow` binary
//! reads replies from approvals@'s INBOX over IMAPS and dies between ingesting a batch and moving
//! it to the processed folder — once on purpose (the `inbound-before-move` failpoint aborts the
//! process after the ingest transactions committed and before UID MOVE), once at a random moment
//! (SIGKILL while a backlog of 200 replies is being read). Restarted without the failpoint, it must
//! have lost nothing and doubled nothing: every task decided once, one `applied` verdict per task
//! (a message read again is logged `duplicate`), every reply in the processed folder exactly once
//! and none left in the INBOX.
//!
//! The database is a SQLite file, or a fresh PostgreSQL database when TEST_DATABASE=postgres
//! (`TEST_DATABASE=postgres ./scripts/test -- cargo test --test mail crash`).
use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use replyflow::{
    api::convert,
    model::{InboundEmail, Verdict},
    proto::pb,
    store::{ConnectOptions, PageRequest, Store, inbound::InboundFilter},
};
use serde_json::{Value, json};

use crate::{
    helpers::{ApprovalMail, approvals_inbox, gmail_reply, mail_env, postfix_shared, req, unique},
    imap::count_header,
};

const BIN: &str = env!("CARGO_BIN_EXE_replyflow");
const PROCESSED: &str = "replyflow-processed";
/// How long a server may take to listen, to stop, or to work through what the tests give it.
const DEADLINE: Duration = Duration::from_secs(60);
/// The header that marks one test's replies, so that IMAP searches count only them.
const RUN_HEADER: &str = "X-Replyflow-Test-Run";

// ---------------------------------------------------------------------------- the database

/// A SQLite file, or a fresh PostgreSQL database (TEST_DATABASE=postgres), dropped at the end.
struct CrashDb {
    url: String,
    pg_admin: Option<(String, String)>,
}

impl CrashDb {
    async fn new(dir: &Path) -> Self {
        if std::env::var("TEST_DATABASE").as_deref() != Ok("postgres") {
            return Self {
                url: format!("sqlite://{}", dir.join("crash.db").display()),
                pg_admin: None,
            };
        }
        let admin = std::env::var("TEST_POSTGRES_URL")
            .expect("TEST_DATABASE=postgres needs TEST_POSTGRES_URL (scripts/test sets it)");
        let name = format!("rf_crash_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .expect("connecting to TEST_POSTGRES_URL");
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .expect("creating a test database");
        let _ = sqlx::Connection::close(conn).await;
        let base = admin.split('?').next().unwrap_or(&admin);
        let prefix = match base["postgres://".len().min(base.len())..].find('/') {
            Some(i) => &base[.."postgres://".len() + i],
            None => base,
        };
        Self {
            url: format!("{prefix}/{name}"),
            pg_admin: Some((admin, name)),
        }
    }

    async fn store(&self) -> Store {
        Store::connect(&self.url, &ConnectOptions::default())
            .await
            .expect("opening the server's database")
    }

    async fn drop_database(self) {
        if let Some((admin, name)) = self.pg_admin
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await
        {
            let _ = sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            )
            .await;
        }
    }
}

/// Every row of the inbound log (paged).
async fn inbound_log(store: &Store) -> Vec<InboundEmail> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = store
            .list_inbound(
                &InboundFilter::default(),
                &PageRequest::new(500, token).expect("page"),
            )
            .await
            .expect("list_inbound");
        all.extend(page.items);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn count_applied(store: &Store) -> usize {
    inbound_log(store)
        .await
        .iter()
        .filter(|m| m.verdict == Verdict::Applied)
        .count()
}

// ---------------------------------------------------------------------------- the server process

/// A `replyflow serve` process; dropping it kills the process.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// `replyflow serve` on a free port with `db`, writing its mail as files under `dir/outbox`,
/// reading replies from `inbound` (`none`, or approvals@'s INBOX over IMAPS), `failpoint` armed.
fn serve(dir: &Path, db: &CrashDb, inbound: Inbound, failpoint: Option<&str>) -> Server {
    let env = mail_env();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("REPLYFLOW_") {
            command.env_remove(name);
        }
    }
    let inbound = match inbound {
        Inbound::None => "none".to_string(),
        Inbound::Imaps => format!(
            "imaps://approvals%40{}:{}@localhost:{}/INBOX",
            env.domain, env.password, env.imaps_port
        ),
    };
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,sqlx=warn")
        .env("REPLYFLOW_SECURITY_ADMINS", "admin")
        .env(
            "REPLYFLOW_MAIL_FROM",
            format!("审批 <approvals@{}>", env.domain),
        )
        .env(
            "REPLYFLOW_MAIL_OUTBOUND",
            format!("file:{}", dir.join("outbox").display()),
        )
        .env("REPLYFLOW_MAIL_INBOUND", inbound)
        .env("REPLYFLOW_MAIL_CA_FILE", &env.ca_file)
        .env("REPLYFLOW_MAIL_PROCESSED_FOLDER", PROCESSED);
    if let Some(name) = failpoint {
        command.env("REPLYFLOW_FAILPOINT", name);
    }
    Server::start(command)
}

#[derive(Debug, Clone, Copy)]
enum Inbound {
    None,
    Imaps,
}

impl Server {
    fn start(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().expect("piped stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped stderr")),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .expect("log lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut server = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let started = Instant::now();
        server.addr = loop {
            if let Some(addr) = server.listening_addr() {
                break addr;
            }
            if let Some(status) = server.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the server exited with {status} before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the server did not listen within {DEADLINE:?}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_err() {
            assert!(started.elapsed() < DEADLINE, "{}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn listening_addr(&self) -> Option<SocketAddr> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("replyflow listening"))?;
        line.split("addr=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("waiting for the server"))
    }

    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connecting to the server")
    }

    /// Waits (at most [`DEADLINE`]) for the process to end by itself.
    async fn wait_for_exit(mut self) -> (ExitStatus, String) {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status, self.log());
            }
            assert!(
                Instant::now() < until,
                "the server is still running after {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL, at once (no chance to finish anything).
    fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child");
        child.kill().expect("SIGKILL");
        child.wait().expect("waiting for the killed server")
    }

    /// SIGTERM and the graceful stop.
    async fn terminate(mut self) -> ExitStatus {
        let pid = self.child.as_ref().expect("child").id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(sent.success());
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < until,
                "no stop after SIGTERM:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------- the story

/// What one expense instance left for the test: mary's task and the approval mail she got.
struct Pending {
    task_id: String,
    mail: ApprovalMail,
}

/// Through a server without an inbound reader: mary, the expense definition, `n` instances whose
/// first task is mary's, and their approval mails (from the outbox, as written).
async fn prepare(server: &Server, db: &CrashDb, n: usize) -> Vec<Pending> {
    let env = mail_env();
    let channel = server.channel().await;
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    for id in ["mary", "fred"] {
        directory
            .upsert_user(req(
                pb::UpsertUserRequest {
                    user: Some(pb::User {
                        id: id.into(),
                        display_name: id.to_uppercase(),
                        email: env.address(id),
                        locale: "zh-CN".into(),
                        ..Default::default()
                    }),
                },
                "admin",
            ))
            .await
            .expect("upsert user");
    }
    let mut workflow = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
    let xml = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/expense.bpmn"))
        .expect("examples/expense.bpmn");
    workflow
        .deploy_definition(req(
            pb::DeployDefinitionRequest {
                bpmn_xml: xml,
                request_id: String::new(),
            },
            "admin",
        ))
        .await
        .expect("deploy");
    let Value::Object(variables) = json!({
        "manager": "mary", "finance": "fred", "amount": 20000, "reason": "crash test",
    }) else {
        unreachable!("a JSON object")
    };
    let variables = convert::json_to_struct(&variables);
    let mut approvals = pb::approval_service_client::ApprovalServiceClient::new(channel);
    let store = db.store().await;
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let instance = workflow
            .start_process(req(
                pb::StartProcessRequest {
                    definition_key: "expense".into(),
                    business_key: format!("CRASH-{i}"),
                    variables: Some(variables.clone()),
                    ..Default::default()
                },
                "fred",
            ))
            .await
            .expect("StartProcess")
            .into_inner();
        let task_id = instance.open_tasks[0].id.clone();
        let approval = approvals
            .get_approval(req(
                pb::GetApprovalRequest {
                    task_id: task_id.clone(),
                },
                "fred",
            ))
            .await
            .expect("GetApproval")
            .into_inner();
        let rows = store
            .mail_for_context(&approval.id)
            .await
            .expect("the outbox");
        let row = rows
            .iter()
            .find(|m| m.kind == replyflow::model::OutboxKind::Approval)
            .expect("an approval mail in the outbox");
        pending.push(Pending {
            task_id,
            mail: ApprovalMail::parse(&row.body),
        });
    }
    store.close().await;
    pending
}

/// mary answers every approval mail ("同意" and a comment naming the task) through Postfix, over
/// one SMTP connection; returns the replies' Message-IDs (bare), in task order.
async fn reply_to_all(pending: &[Pending], run: &str) -> Vec<String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};
    let env = mail_env();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(env.smtp_host.clone())
        .port(env.smtp_port)
        .build();
    let mary = env.address("mary");
    let mut ids = Vec::with_capacity(pending.len());
    for (i, p) in pending.iter().enumerate() {
        let (id, raw) = gmail_reply(
            "玛丽",
            &mary,
            &p.mail,
            &format!("同意，第{i}笔"),
            &format!("{RUN_HEADER}: {run}\r\n"),
        );
        let envelope = Envelope::new(
            Some(mary.parse().expect("from")),
            vec![p.mail.reply_to.parse().expect("to")],
        )
        .expect("envelope");
        transport
            .send_raw(&envelope, &raw)
            .await
            .unwrap_or_else(|e| panic!("sending reply {i} through Postfix: {e}"));
        ids.push(id.trim_matches(['<', '>']).to_string());
    }
    ids
}

/// Waits until `n` messages of this run are in approvals@'s `folder`.
async fn wait_for_count(folder: &str, run: &str, n: usize) {
    let until = Instant::now() + DEADLINE;
    loop {
        let found = count_header("approvals", folder, RUN_HEADER, run).await;
        if found == n {
            return;
        }
        assert!(
            Instant::now() < until,
            "{found} of {n} replies of run {run} in approvals@'s {folder} after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The invariants after the restart: every task decided once, by mail, as mary answered; one
/// `applied` per task and nothing but `duplicate` besides; every reply moved exactly once.
async fn assert_exactly_once(db: &CrashDb, pending: &[Pending], reply_ids: &[String], run: &str) {
    let store = db.store().await;
    let log = inbound_log(&store).await;
    for (i, (p, reply_id)) in pending.iter().zip(reply_ids).enumerate() {
        let task = store.task(&p.task_id).await.expect("task").expect("task");
        assert_eq!(task.outcome, "approve", "task {i}: {task:?}");
        assert_eq!(task.comment, format!("第{i}笔"), "task {i}: {task:?}");
        assert_eq!(task.completed_by, "mary");
        let rows: Vec<&InboundEmail> = log.iter().filter(|m| m.task_id == p.task_id).collect();
        let applied: Vec<_> = rows
            .iter()
            .filter(|m| m.verdict == Verdict::Applied)
            .collect();
        assert_eq!(applied.len(), 1, "task {i}: one applied verdict: {rows:#?}");
        assert_eq!(&applied[0].message_id, reply_id, "task {i}");
        for row in &rows {
            assert!(
                row.verdict == Verdict::Applied || row.verdict == Verdict::Duplicate,
                "task {i}: only applied and duplicate: {rows:#?}"
            );
            assert_eq!(&row.message_id, reply_id, "task {i}: {rows:#?}");
        }
        assert!(rows.len() <= 2, "task {i}: read at most twice: {rows:#?}");
    }
    store.close().await;
    assert_eq!(
        count_header("approvals", PROCESSED, RUN_HEADER, run).await,
        pending.len(),
        "every reply in {PROCESSED}, once"
    );
    assert_eq!(
        count_header("approvals", "INBOX", RUN_HEADER, run).await,
        0,
        "no reply left in the INBOX"
    );
}

#[tokio::test]
async fn a_crash_after_ingesting_and_before_the_move_loses_and_doubles_nothing() {
    const N: usize = 6;
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = CrashDb::new(dir.path()).await;
    let run = unique("failpoint");

    let server = serve(dir.path(), &db, Inbound::None, None);
    let pending = prepare(&server, &db, N).await;
    assert!(server.terminate().await.success());
    let reply_ids = reply_to_all(&pending, &run).await;
    wait_for_count("INBOX", &run, N).await;

    // The failpoint: the batch is ingested (committed), then the process aborts before UID MOVE.
    let server = serve(dir.path(), &db, Inbound::Imaps, Some("inbound-before-move"));
    let (status, log) = server.wait_for_exit().await;
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "the failpoint aborted the server: {status}\n{log}"
    );
    assert!(log.contains("REPLYFLOW_FAILPOINT"), "{log}");
    let store = db.store().await;
    assert_eq!(
        count_applied(&store).await,
        N,
        "all {N} applied before the crash"
    );
    store.close().await;
    assert_eq!(
        count_header("approvals", "INBOX", RUN_HEADER, &run).await,
        N,
        "nothing moved before the crash"
    );

    // Restarted without it: every reply is read again, recognised, and moved.
    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    wait_for_count(PROCESSED, &run, N).await;
    let until = Instant::now() + DEADLINE;
    while inbound_log(&db.store().await).await.len() < 2 * N {
        assert!(Instant::now() < until, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.terminate().await.success());
    assert_exactly_once(&db, &pending, &reply_ids, &run).await;
    let log = inbound_log(&db.store().await).await;
    let duplicates = log
        .iter()
        .filter(|m| m.verdict == Verdict::Duplicate)
        .count();
    assert_eq!(
        duplicates, N,
        "each reply read a second time is a duplicate"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn sigkill_while_a_backlog_of_200_replies_is_read_loses_and_doubles_nothing() {
    const N: usize = 200;
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = CrashDb::new(dir.path()).await;
    let run = unique("sigkill");

    let server = serve(dir.path(), &db, Inbound::None, None);
    let pending = prepare(&server, &db, N).await;
    assert!(server.terminate().await.success());
    let reply_ids = reply_to_all(&pending, &run).await;
    wait_for_count("INBOX", &run, N).await;

    // Killed once a random number of replies has been applied, mid-backlog.
    let kill_at = rand::random_range(1..N * 3 / 4);
    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    let store = db.store().await;
    let until = Instant::now() + DEADLINE;
    let applied = loop {
        let applied = count_applied(&store).await;
        if applied >= kill_at {
            break applied;
        }
        assert!(Instant::now() < until, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let status = server.kill();
    let at_kill = count_applied(&store).await;
    let moved = count_header("approvals", PROCESSED, RUN_HEADER, &run).await;
    println!(
        "SIGKILL after {applied} (target {kill_at}) of {N} replies applied; {at_kill} applied \
         and {moved} moved when it died"
    );
    assert!(!status.success(), "{status}");
    assert!(
        at_kill < N,
        "the kill came after the whole backlog: nothing was tested"
    );
    store.close().await;

    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    wait_for_count(PROCESSED, &run, N).await;
    let store = db.store().await;
    let until = Instant::now() + DEADLINE;
    while count_applied(&store).await < N {
        assert!(Instant::now() < until, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
    assert!(server.terminate().await.success());
    assert_exactly_once(&db, &pending, &reply_ids, &run).await;
    db.drop_database().await;
}

/// SIGABRT, what `std::process::abort` ends a process with.
fn libc_sigabrt() -> i32 {
    6
}
