//! The harness as tests/mail sees it: the shared [`TestApp`] (tests/shared/app.rs) with the mail
//! stack, the approval-mail and reply helpers (tests/shared/approval_mail.rs), and what only these
//! tests need: a fresh store per test, outbox rows built by hand, a worker pointed at a URL, and
//! control of the test Postfix (stop, start, a guard that always starts it again).
use std::{
    net::{SocketAddr, TcpStream},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

pub use crate::{app::*, approval_mail::*};
use replyflow::{
    clock::{Clock, Millis},
    mail::transport,
    model::{OutboxMail, OutboxStatus},
    store::{ConnectOptions, Store},
    workers::outbox::{OutboxWorker, RetryPolicy},
};
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// How long Postfix may take to stop, to start, or to empty its queue.
const POSTFIX_PATIENCE: Duration = Duration::from_secs(30);

/// The real server with its mail going over SMTP (required STARTTLS, the test CA) to the test
/// Postfix; a fresh SQLite database.
pub async fn spawn_mail_app() -> TestApp {
    TestApp::builder()
        .on(TestDb::sqlite())
        .mail_stack()
        .spawn()
        .await
}

/// [`spawn_mail_app`] on a clock the test moves (validity and expiry without sleeping).
pub async fn spawn_mail_app_at(clock: Arc<dyn Clock>) -> TestApp {
    TestApp::builder()
        .on(TestDb::sqlite())
        .mail_stack()
        .clock(clock)
        .spawn()
        .await
}

/// `manager` (in `locale`) and fred (finance, in Chinese) in the directory with their test-stack
/// addresses, and examples/expense.bpmn deployed.
pub async fn setup_expense(app: &TestApp, manager: &str, locale: &str) {
    let env = mail_env();
    app.add_user_with(manager, &env.address(manager), locale)
        .await;
    app.add_user_with("fred", &env.address("fred"), "zh-CN")
        .await;
    app.deploy_example("expense.bpmn").await;
}

/// Starts an expense (as fred, who is finance) with `manager` as the manager; returns the
/// manager's task.
pub async fn start_expense(app: &TestApp, manager: &str) -> replyflow::proto::pb::Task {
    let variables = serde_json::json!({
        "manager": manager, "finance": "fred", "amount": 20000, "reason": "RustConf 2026",
    });
    let task = app.start_as("expense", "fred", variables).await.open_tasks[0].clone();
    assert_eq!(task.assignee, manager);
    task
}

fn smtp_addr() -> SocketAddr {
    let env = mail_env();
    format!("{}:{}", env.smtp_host, env.smtp_port)
        .parse()
        .expect("RF_MAIL_SMTP_HOST:PORT is an IP address and port")
}

// ---------------------------------------------------------------------------- store and rows

/// A fresh SQLite store (whatever TEST_DATABASE says: these tests measure the worker, not the
/// backend).
pub struct TestStore {
    pub store: Store,
    _db: TestDb,
}

impl TestStore {
    pub async fn new() -> Self {
        Self::with_options(&ConnectOptions::default()).await
    }

    pub async fn with_options(options: &ConnectOptions) -> Self {
        let db = TestDb::sqlite();
        Self {
            store: db.migrated_store(options).await,
            _db: db,
        }
    }

    /// The one outbox row of an approval context.
    pub async fn row(&self, context_id: &str) -> OutboxMail {
        let mut rows = self
            .store
            .mail_for_context(context_id)
            .await
            .expect("reading the outbox");
        assert_eq!(rows.len(), 1, "one outbox row for context {context_id}");
        rows.remove(0)
    }
}

/// A small RFC 822 message, CRLF line ends, written by hand.
pub fn message(from: &str, to: &str, message_id: &str, subject: &str, body: &str) -> Vec<u8> {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .expect("RFC 2822 date");
    let mut text = format!(
        "From: replyflow <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\
         Date: {date}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\nAuto-Submitted: auto-generated\r\n\r\n"
    );
    for line in body.lines() {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.into_bytes()
}

/// The test stack's mail domain (RF_MAIL_DOMAIN), also used where no stack is needed (bench).
pub const DOMAIN: &str = "replyflow.test";

/// What a test needs to find a queued mail again.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: String,
    pub context_id: String,
    /// As in the header: `<...@replyflow.test>`.
    pub message_id: String,
}

impl Queued {
    /// The Message-ID without angle brackets (what IMAP searches for).
    pub fn bare_id(&self) -> &str {
        self.message_id.trim_matches(|c| c == '<' || c == '>')
    }
}

/// Writes one mail to the outbox, due at `now`, the way the application does: in a transaction.
pub async fn queue_mail(store: &Store, now: Millis, to: &str, subject: &str) -> Queued {
    queue_mail_sized(store, now, to, subject, 0).await
}

/// [`queue_mail`] with about `pad` extra bytes of body.
pub async fn queue_mail_sized(
    store: &Store,
    now: Millis,
    to: &str,
    subject: &str,
    pad: usize,
) -> Queued {
    let mut tx = store.begin().await.expect("begin");
    let queued = insert_mail(&mut tx, now, to, subject, pad).await;
    tx.commit().await.expect("commit");
    queued
}

pub async fn insert_mail(
    tx: &mut replyflow::store::Tx,
    now: Millis,
    to: &str,
    subject: &str,
    pad: usize,
) -> Queued {
    let sender = format!("approvals@{DOMAIN}");
    let message_id = format!("<{}@{DOMAIN}>", unique("rf-test"));
    let mut body = format!("Hello,\nthis is {subject}.\n你好，请审批。\n");
    while body.len() < pad {
        body.push_str("The quick brown fox jumps over the lazy dog, 0123456789 times.\n");
    }
    let mail = OutboxMail {
        id: uuid::Uuid::now_v7().to_string(),
        kind: replyflow::model::OutboxKind::Approval,
        context_id: unique("ctx"),
        task_id: "task-test".into(),
        recipient: to.into(),
        sender: sender.clone(),
        message_id: message_id.clone(),
        body: message(&sender, to, &message_id, subject, &body),
        status: OutboxStatus::Queued,
        attempts: 0,
        next_attempt_at: now,
        last_error: String::new(),
        created_at: now,
        sent_at: None,
        fallback: String::new(),
    };
    tx.insert_outbox(&mail).await.expect("insert_outbox");
    Queued {
        id: mail.id,
        context_id: mail.context_id,
        message_id,
    }
}

pub fn worker(store: &Store, url: &str, ca_file: bool, clock: Arc<dyn Clock>) -> OutboxWorker {
    let ca = ca_file.then(|| mail_env().ca_file.as_path());
    let transport = transport::from_url(url, ca, 4).expect("the outbound URL builds a transport");
    OutboxWorker::new(
        store.clone(),
        transport,
        clock,
        Arc::new(Notify::new()),
        RetryPolicy::default(),
        4,
    )
}

/// Runs the worker until a step finds nothing due; returns how many sends it attempted.
pub async fn drain(worker: &OutboxWorker) -> usize {
    let mut total = 0;
    for _ in 0..1_000 {
        let n = worker.run_once().await.expect("run_once");
        if n == 0 {
            return total;
        }
        total += n;
    }
    panic!("the worker still found mail due after 1000 steps");
}

// ---------------------------------------------------------------------------- Postfix control

/// Tests that need Postfix up share this lock; the test that stops Postfix takes it alone.
static POSTFIX: RwLock<()> = RwLock::const_new(());

pub async fn postfix_shared() -> RwLockReadGuard<'static, ()> {
    POSTFIX.read().await
}

pub async fn postfix_exclusive() -> RwLockWriteGuard<'static, ()> {
    POSTFIX.write().await
}

fn postfix(args: &[&str]) -> std::process::Output {
    let env = mail_env();
    let program = ["/usr/sbin/postfix", "/usr/local/sbin/postfix"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("postfix");
    Command::new(program)
        .arg("-c")
        .arg(&env.postfix_dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running postfix {args:?}: {e}"))
}

fn smtp_accepts() -> bool {
    TcpStream::connect_timeout(&smtp_addr(), Duration::from_millis(500)).is_ok()
}

/// Blocks until the SMTP port accepts (`up`) or refuses (`!up`).
fn wait_for_smtp(up: bool) {
    eventually_blocking(POSTFIX_PATIENCE, || {
        if smtp_accepts() == up {
            Ok(())
        } else {
            Err(format!(
                "the test Postfix's SMTP port still {}",
                if up { "refuses" } else { "accepts" }
            ))
        }
    });
}

/// Postfix, stopped until [`PostfixStopped::start`]; dropped without it (a failing test), it
/// starts Postfix again so that later tests find it running.
#[must_use = "dropping the guard starts Postfix again at once"]
pub struct PostfixStopped {
    started: bool,
}

/// Stops the test Postfix and waits until its SMTP port refuses connections.
pub async fn stop_postfix() -> PostfixStopped {
    tokio::task::spawn_blocking(|| {
        let out = postfix(&["stop"]);
        assert!(
            out.status.success(),
            "postfix stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for_smtp(false);
    })
    .await
    .expect("stopping postfix");
    PostfixStopped { started: false }
}

fn start_postfix_blocking() {
    let out = postfix(&["start"]);
    // Exit 1 with "already running" is fine: what matters is the port below.
    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("running") {
        panic!(
            "postfix start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for_smtp(true);
}

impl PostfixStopped {
    /// Starts Postfix again and waits until its SMTP port accepts.
    pub async fn start(mut self) {
        self.started = true;
        tokio::task::spawn_blocking(start_postfix_blocking)
            .await
            .expect("starting postfix");
    }
}

impl Drop for PostfixStopped {
    fn drop(&mut self) {
        if !self.started {
            self.started = true;
            eprintln!("starting the test Postfix again (the test ended while it was stopped)");
            if let Err(e) = std::panic::catch_unwind(start_postfix_blocking) {
                eprintln!("could not start Postfix again: {e:?}");
            }
        }
    }
}

/// Blocks until Postfix's queue is empty: nothing accepted is still waiting to be delivered, so
/// what the mailboxes hold now is final.
pub async fn wait_for_empty_postfix_queue() {
    tokio::task::spawn_blocking(|| {
        let env = mail_env();
        eventually_blocking(POSTFIX_PATIENCE, || {
            let out = Command::new("postqueue")
                .arg("-c")
                .arg(&env.postfix_dir)
                .arg("-p")
                .stdin(Stdio::null())
                .output()
                .expect("running postqueue -p");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("Mail queue is empty") {
                Ok(())
            } else {
                Err(format!("Postfix's queue is not empty:\n{text}"))
            }
        });
    })
    .await
    .expect("waiting for the postfix queue");
}

// ---------------------------------------------------------------------------- replies

/// Tests whose inbound reader consumes approvals@'s INBOX hold this, so that one reader never
/// takes (and moves away) another test's replies.
static APPROVALS_INBOX: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn approvals_inbox() -> tokio::sync::MutexGuard<'static, ()> {
    APPROVALS_INBOX.lock().await
}

/// Sends `raw` through the test Postfix (plain SMTP, no TLS) from `from` to `to`, as a mail
/// client's submission would.
pub async fn send_via_postfix(from: &str, to: &str, raw: &[u8]) {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};
    let env = mail_env();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(env.smtp_host.clone())
        .port(env.smtp_port)
        .build();
    let envelope = Envelope::new(
        Some(from.parse().expect("from address")),
        vec![to.parse().expect("to address")],
    )
    .expect("envelope");
    transport
        .send_raw(&envelope, raw)
        .await
        .unwrap_or_else(|e| panic!("sending the reply through Postfix to {to}: {e}"));
}
