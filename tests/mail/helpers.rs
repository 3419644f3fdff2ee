//! The harness: the mail stack's coordinates (RF_MAIL_*), a fresh store per test, outbox rows
//! built by hand, a worker pointed at a URL, and control of the test Postfix (stop, start, a
//! guard that always starts it again).
use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use replyflow::{
    clock::{Clock, Millis, SystemClock},
    mail::transport,
    model::{OutboxMail, OutboxStatus},
    store::{ConnectOptions, Store},
    workers::outbox::{OutboxWorker, RetryPolicy},
};
use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where the test mail stack listens; read once from the environment scripts/test exports.
#[derive(Debug)]
pub struct MailEnv {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtps_port: u16,
    pub imaps_port: u16,
    pub ca_file: PathBuf,
    pub domain: String,
    pub password: String,
    pub postfix_dir: PathBuf,
}

pub fn mail_env() -> &'static MailEnv {
    static ENV: OnceLock<MailEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: run ./scripts/test (it starts Postfix and Dovecot) or set \
                     RF_MAIL_*, e.g. ./scripts/test -- cargo test --test mail"
                )
            })
        };
        let port = |name: &str| {
            var(name)
                .parse::<u16>()
                .unwrap_or_else(|_| panic!("{name} is not a port number"))
        };
        MailEnv {
            smtp_host: var("RF_MAIL_SMTP_HOST"),
            smtp_port: port("RF_MAIL_SMTP_PORT"),
            smtps_port: port("RF_MAIL_SMTPS_PORT"),
            imaps_port: port("RF_MAIL_IMAPS_PORT"),
            ca_file: PathBuf::from(var("RF_MAIL_CA_FILE")),
            domain: var("RF_MAIL_DOMAIN"),
            password: var("RF_MAIL_PASSWORD"),
            postfix_dir: PathBuf::from(var("RF_MAIL_POSTFIX_DIR")),
        }
    })
}

impl MailEnv {
    /// `local@domain` for a local part; a full address is returned as is.
    pub fn address(&self, user: &str) -> String {
        if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@{}", self.domain)
        }
    }

    /// `smtp://host:port` of the test Postfix, with `suffix` (e.g. "?tls=required") appended.
    pub fn smtp_url(&self, suffix: &str) -> String {
        format!("smtp://{}:{}{suffix}", self.smtp_host, self.smtp_port)
    }

    fn smtp_addr(&self) -> SocketAddr {
        format!("{}:{}", self.smtp_host, self.smtp_port)
            .parse()
            .expect("RF_MAIL_SMTP_HOST:PORT is an IP address and port")
    }
}

// ---------------------------------------------------------------------------- store and rows

/// A SQLite database that exists only for one test.
pub struct TestStore {
    pub store: Store,
    _dir: tempfile::TempDir,
}

impl TestStore {
    pub async fn new() -> Self {
        Self::with_options(&ConnectOptions::default()).await
    }

    pub async fn with_options(options: &ConnectOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("replyflow.db").display());
        let store = Store::connect(&url, options)
            .await
            .expect("opening the test database");
        store.migrate().await.expect("migrations");
        Self { store, _dir: dir }
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

/// A unique id for Message-IDs and context ids, so tests sharing the mailboxes never meet.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
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

/// "Now" for a ManualClock: real time, so rows look like real ones.
pub fn real_now() -> Millis {
    SystemClock.now()
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
    TcpStream::connect_timeout(&mail_env().smtp_addr(), Duration::from_millis(500)).is_ok()
}

/// Blocks until the SMTP port accepts (`up`) or refuses (`!up`), at most 20 s.
fn wait_for_smtp(up: bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while smtp_accepts() != up {
        assert!(
            Instant::now() < deadline,
            "the test Postfix's SMTP port still {} after 20 s",
            if up { "refuses" } else { "accepts" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("postqueue")
                .arg("-c")
                .arg(&env.postfix_dir)
                .arg("-p")
                .stdin(Stdio::null())
                .output()
                .expect("running postqueue -p");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Mail queue is empty") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Postfix's queue is not empty after 30 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("waiting for the postfix queue");
}

// ---------------------------------------------------------------------------- the real server

/// The real server (as tests/api/helpers.rs starts it) on port 0, with a fresh SQLite database,
/// sending its mail over SMTP with required STARTTLS to the test Postfix; driven over gRPC.
pub struct MailApp {
    pub channel: tonic::transport::Channel,
    pub db_url: String,
    _dir: tempfile::TempDir,
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The application's workflow, for workers the test runs itself (the inbound reader).
    pub engine: Arc<replyflow::workflow::Workflow>,
}

pub async fn spawn_mail_app() -> MailApp {
    spawn_mail_app_at(Arc::new(SystemClock)).await
}

/// [`spawn_mail_app`] on a clock the test moves (validity and expiry without sleeping).
pub async fn spawn_mail_app_at(clock: Arc<dyn Clock>) -> MailApp {
    let env = mail_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let db_url = format!("sqlite://{}", dir.path().join("replyflow.db").display());
    let mut settings = replyflow::config::Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = replyflow::config::Secret::new(db_url.clone());
    settings.mail.outbound =
        replyflow::config::Secret::new(format!("smtp://127.0.0.1:{}?tls=required", env.smtp_port));
    settings.mail.ca_file = Some(env.ca_file.display().to_string());
    settings.mail.from = format!("审批 <approvals@{}>", env.domain);
    settings.security.admins = "admin".into();
    // Tests that read replies start their own reader on the app's workflow.
    settings.mail.inbound = replyflow::config::Secret::new("none");
    let app = replyflow::app::Application::build(&settings, clock)
        .await
        .expect("building the application");
    let addr = app.local_addr();
    let shutdown = app.shutdown_token();
    let engine = app.workflow();
    let server = tokio::spawn(app.run_until_stopped());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connecting to the test server");
    MailApp {
        channel,
        db_url,
        _dir: dir,
        shutdown,
        server,
        engine,
    }
}

/// A request as `user` (development mode: identity from x-user-id).
pub fn req<T>(message: T, user: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-user-id", user.parse().expect("ascii user id"));
    request
}

impl MailApp {
    /// The server's shutdown token (workers a test spawns stop with the server).
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    pub fn tasks(
        &self,
    ) -> replyflow::proto::pb::task_service_client::TaskServiceClient<tonic::transport::Channel>
    {
        replyflow::proto::pb::task_service_client::TaskServiceClient::new(self.channel.clone())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }

    pub fn workflow(
        &self,
    ) -> replyflow::proto::pb::workflow_service_client::WorkflowServiceClient<
        tonic::transport::Channel,
    > {
        replyflow::proto::pb::workflow_service_client::WorkflowServiceClient::new(
            self.channel.clone(),
        )
    }

    pub fn directory(
        &self,
    ) -> replyflow::proto::pb::directory_service_client::DirectoryServiceClient<
        tonic::transport::Channel,
    > {
        replyflow::proto::pb::directory_service_client::DirectoryServiceClient::new(
            self.channel.clone(),
        )
    }

    pub fn approvals(
        &self,
    ) -> replyflow::proto::pb::approval_service_client::ApprovalServiceClient<
        tonic::transport::Channel,
    > {
        replyflow::proto::pb::approval_service_client::ApprovalServiceClient::new(
            self.channel.clone(),
        )
    }

    /// A store on the server's database, for what the API does not show (the token keys).
    pub async fn store(&self) -> Store {
        Store::connect(&self.db_url, &ConnectOptions::default())
            .await
            .expect("store")
    }
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

/// What a reply needs from the approval mail it answers.
#[derive(Debug, Clone)]
pub struct ApprovalMail {
    /// `approvals+<token>@domain`.
    pub reply_to: String,
    /// Without angle brackets.
    pub message_id: String,
    pub subject: String,
    pub from: String,
    pub text: String,
}

impl ApprovalMail {
    pub fn parse(raw: &[u8]) -> Self {
        let mail = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("the approval mail parses");
        let first = |a: Option<&mail_parser::Address<'_>>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .expect("an address")
                .to_string()
        };
        Self {
            reply_to: first(mail.reply_to()),
            message_id: mail.message_id().expect("Message-ID").to_string(),
            subject: mail.subject().unwrap_or_default().to_string(),
            from: first(mail.from()),
            text: mail
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        }
    }
}

/// A reply as Gmail (zh-CN) writes one: `body` on top, the attribution line, the quoted
/// original; In-Reply-To/References to the approval mail, base64 UTF-8 text. `extra_headers`
/// (CRLF-terminated lines) go first, e.g. a `Delivered-To:` for a Maildir.
pub fn gmail_reply(
    from_name: &str,
    from: &str,
    original: &ApprovalMail,
    body: &str,
    extra_headers: &str,
) -> (String, Vec<u8>) {
    let b64 = data_encoding::BASE64;
    let message_id = format!("<{}@mail.gmail.com>", unique("CAJ"));
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .expect("RFC 2822 date");
    let subject = format!("Re: {}", original.subject);
    let mut text = format!(
        "{body}\r\n\r\n在 2026年11月21日周六 23:40，审批 <{}> 写道：\r\n",
        original.from
    );
    for line in original.text.lines() {
        if line.is_empty() {
            text.push_str(">\r\n");
        } else {
            text.push_str(&format!("> {line}\r\n"));
        }
    }
    let encoded = b64.encode(text.as_bytes());
    let mut wrapped = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        wrapped.push_str("\r\n");
    }
    let raw = format!(
        "{extra_headers}MIME-Version: 1.0\r\nDate: {date}\r\nMessage-ID: {message_id}\r\n\
         In-Reply-To: <{orig}>\r\nReferences: <{orig}>\r\n\
         Subject: =?UTF-8?B?{subject}?=\r\nFrom: =?UTF-8?B?{name}?= <{from}>\r\n\
         To: {to}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{wrapped}",
        orig = original.message_id,
        subject = b64.encode(subject.as_bytes()),
        name = b64.encode(from_name.as_bytes()),
        to = original.reply_to,
    );
    (message_id, raw.into_bytes())
}
