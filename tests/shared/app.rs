//! The one test harness of the api and mail binaries (`#[path]`-included by both): `spawn_app()`
//! starts the real server on port 0 with a fresh database (SQLite file, or a new PostgreSQL
//! database when TEST_DATABASE=postgres) and returns a [`TestApp`] whose helpers read like the
//! user's story. Clients talk gRPC over TCP. [`TestApp::builder`] chooses what differs: the
//! database (a stopped app's, to restart on it), the clock (a [`ManualClock`] the test moves
//! instead of sleeping), the mail stack (SMTP to the test Postfix instead of .eml files), settings.
//!
//! Waiting for what a test does not drive itself (Postfix delivering, a child process exiting,
//! a background worker) goes through [`eventually`]; waiting for the server's own timers does not
//! wait at all: the test moves the clock.
//!
//! [`ManualClock`]: replyflow::clock::ManualClock
// Each test binary uses a part of these helpers.
#![allow(dead_code)]
use std::{
    fmt::Display,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use replyflow::{
    api::convert,
    app::Application,
    clock::{Clock, Millis, SystemClock},
    config::{Secret, Settings},
    proto::pb,
    store::{ConnectOptions, Store},
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};

use crate::fresh_db::Database;

pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Which backend this run of the suite uses.
pub fn backend() -> &'static str {
    match std::env::var("TEST_DATABASE").as_deref() {
        Ok("postgres") => "postgres",
        Ok("sqlite") | Err(_) => "sqlite",
        Ok(other) => panic!("TEST_DATABASE={other}: expected sqlite or postgres"),
    }
}

// ---------------------------------------------------------------------------- waiting

/// How often [`eventually`] looks again at first, and at most.
const FIRST_LOOK: Duration = Duration::from_millis(2);
const LAST_LOOK: Duration = Duration::from_millis(50);

/// Asks `probe` until it answers `Ok`, at most `within`; fails the test with the last `Err` (say
/// what was seen instead). For what the test does not drive: Postfix and Dovecot delivering, a
/// child process starting or exiting, a worker task of the server. Never for the server's own
/// timers: those tests move a ManualClock.
pub async fn eventually<T, E: Display>(
    within: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let until = Instant::now() + within;
    let mut pause = FIRST_LOOK;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(Instant::now() < until, "not there after {within:?}: {last}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LAST_LOOK);
    }
}

/// [`eventually`] for code that runs on a plain thread (child processes, blocking sockets).
pub fn eventually_blocking<T, E: Display>(
    within: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let until = Instant::now() + within;
    let mut pause = FIRST_LOOK;
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(Instant::now() < until, "not there after {within:?}: {last}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(LAST_LOOK);
    }
}

/// "Now" for a ManualClock: real time, so rows and mail dates look like real ones.
pub fn real_now() -> Millis {
    SystemClock.now()
}

// ---------------------------------------------------------------------------- the database

/// A database that exists only for one test (see src/cli/bench/database.rs, shared with the
/// bench), or another app's database reused.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    /// None when the database belongs to another TestDb ([`TestDb::reuse`]).
    owned: Option<Database>,
}

impl TestDb {
    /// A fresh database of the backend under test.
    pub async fn new() -> Self {
        match backend() {
            "postgres" => {
                let server = std::env::var("TEST_POSTGRES_URL").expect(
                    "TEST_DATABASE=postgres needs TEST_POSTGRES_URL (scripts/test sets it); refusing to skip",
                );
                // rf_test_<uuid>: the names scripts/test sweeps after an interrupted run.
                let db = Database::fresh_postgres(&server, "test")
                    .await
                    .expect("creating a test database on TEST_POSTGRES_URL");
                Self::owning(db)
            }
            _ => Self::sqlite(),
        }
    }

    /// A fresh SQLite file, whatever the backend under test.
    pub fn sqlite() -> Self {
        Self::owning(Database::fresh_sqlite("test").expect("a temporary SQLite database"))
    }

    fn owning(db: Database) -> Self {
        Self {
            url: db.url.clone(),
            owned: Some(db),
        }
    }

    /// The same database for a second server; the first keeps owning (and dropping) it.
    pub fn reuse(db: &TestDb) -> TestDb {
        TestDb {
            url: db.url.clone(),
            owned: None,
        }
    }

    /// A store on this database with its schema in place (for tests that run workers without a
    /// server, which would migrate it).
    pub async fn migrated_store(&self, options: &ConnectOptions) -> Store {
        let store = Store::connect(&self.url, options)
            .await
            .expect("opening the test database");
        store.migrate().await.expect("migrations");
        store
    }

    /// Drops the database (a SQLite file goes when the TestDb is dropped; scripts/test also sweeps
    /// PostgreSQL leftovers of failed runs).
    pub async fn drop_database(mut self) {
        if let Some(db) = self.owned.take() {
            db.cleanup().await;
        }
    }
}

// ---------------------------------------------------------------------------- the mail stack

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
}

// ---------------------------------------------------------------------------- the app

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub db: TestDb,
    /// Outgoing mail lands here as .eml files (the file transport; empty with the mail stack).
    pub outbox_dir: tempfile::TempDir,
    /// The server's use cases, for what no RPC does (e.g. posting a notice to an inbox, running
    /// an inbound reader the test controls).
    pub server_workflow: Arc<replyflow::workflow::Workflow>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A change to the settings, applied after the test defaults.
type Configure<'a> = Box<dyn FnOnce(&mut Settings) + 'a>;

/// What differs between test apps; [`TestApp::builder`].
#[must_use = "an AppBuilder does nothing until spawned"]
pub struct AppBuilder<'a> {
    db: Option<TestDb>,
    clock: Arc<dyn Clock>,
    mail_stack: bool,
    configure: Vec<Configure<'a>>,
}

impl<'a> AppBuilder<'a> {
    /// Starts on this database (e.g. one a stopped app left behind, see
    /// [`TestApp::stop_keeping_db`]) instead of a fresh one.
    pub fn on(mut self, db: TestDb) -> Self {
        self.db = Some(db);
        self
    }

    /// The server's clock: a ManualClock moves reminders, validity and rate limits without
    /// sleeping.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Mail goes over SMTP with required STARTTLS (the test CA) to the test Postfix that
    /// ./scripts/test starts, From "审批 <approvals@RF_MAIL_DOMAIN>", instead of into .eml files.
    pub fn mail_stack(mut self) -> Self {
        self.mail_stack = true;
        self
    }

    /// Changes the settings after the test defaults (and the mail stack's) are in place; several
    /// calls apply in order.
    pub fn configure(mut self, configure: impl FnOnce(&mut Settings) + 'a) -> Self {
        self.configure.push(Box::new(configure));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = match self.db {
            Some(db) => db,
            None => TestDb::new().await,
        };
        let outbox_dir = tempfile::tempdir().expect("outbox dir");
        let mut settings = test_settings(&db.url, outbox_dir.path());
        if self.mail_stack {
            let env = mail_env();
            settings.mail.outbound =
                Secret::new(format!("smtp://127.0.0.1:{}?tls=required", env.smtp_port));
            settings.mail.ca_file = Some(env.ca_file.display().to_string());
            settings.mail.from = format!("审批 <approvals@{}>", env.domain);
        }
        for configure in self.configure {
            configure(&mut settings);
        }
        let app = Application::build(&settings, self.clock)
            .await
            .expect("building the application");
        let addr = app.local_addr();
        let server_workflow = app.workflow();
        let shutdown = app.shutdown_token();
        let server = tokio::spawn(app.run_until_stopped());
        let endpoint = Channel::from_shared(format!("http://{addr}")).expect("uri");
        let channel = if settings.server.tls_cert.is_some() {
            // A TLS listener: this plaintext channel would fail; tests/api/tls.rs makes its own.
            endpoint.connect_lazy()
        } else {
            endpoint
                .connect()
                .await
                .expect("connecting to the test server")
        };
        TestApp {
            addr,
            channel,
            db,
            outbox_dir,
            server_workflow,
            shutdown,
            server,
        }
    }
}

/// The settings every test app starts from: port 0, the given database, mail as .eml files
/// into `outbox_dir`, From "审批系统 <approvals@replyflow.test>".
pub fn test_settings(db_url: &str, outbox_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Secret::new(db_url);
    settings.mail.outbound = Secret::new(format!("file:{}", outbox_dir.display()));
    // Replies are submitted over gRPC or read by a reader the test runs; the application's own
    // reader has tests of its own (tests/mail/crash.rs).
    settings.mail.inbound = Secret::new("none");
    settings.mail.from = "审批系统 <approvals@replyflow.test>".into();
    // Dev mode (x-user-id); "admin" deploys, fills the directory and reads everything.
    settings.security.admins = "admin".into();
    // "mta" hands in replies with SubmitInboundEmail, as a mail server's pipe would.
    settings.security.roles.mail = "mta".into();
    settings
}

pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// [`spawn_app`] with settings changed by `configure` after the test defaults are in place.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder().configure(configure).spawn().await
}

pub async fn spawn_app_on(db: TestDb) -> TestApp {
    TestApp::builder().on(db).spawn().await
}

/// Starts the app on an existing database (e.g. one a stopped app left behind, see
/// [`TestApp::stop_keeping_db`]), with settings changed by `configure`.
pub async fn spawn_app_on_with(db: TestDb, configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder().on(db).configure(configure).spawn().await
}

/// [`spawn_app_with`] on a clock the test moves (reminder tests run hours in milliseconds).
pub async fn spawn_app_at(clock: Arc<dyn Clock>, configure: impl FnOnce(&mut Settings)) -> TestApp {
    TestApp::builder()
        .clock(clock)
        .configure(configure)
        .spawn()
        .await
}

pub async fn spawn_app_on_clock(
    db: TestDb,
    clock: Arc<dyn Clock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    TestApp::builder()
        .on(db)
        .clock(clock)
        .configure(configure)
        .spawn()
        .await
}

/// A request as `user` (development mode: identity from x-user-id).
pub fn req<T>(message: T, user: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-user-id", user.parse().expect("ascii user id"));
    request
}

pub fn vars(value: Value) -> Option<prost_types::Struct> {
    match value {
        Value::Object(map) => Some(convert::json_to_struct(&map)),
        _ => panic!("variables must be a JSON object"),
    }
}

pub fn to_json(s: &Option<prost_types::Struct>) -> Map<String, Value> {
    convert::struct_to_json(s.clone(), "variables").expect("struct converts")
}

impl TestApp {
    pub fn builder<'a>() -> AppBuilder<'a> {
        AppBuilder {
            db: None,
            clock: Arc::new(SystemClock),
            mail_stack: false,
            configure: Vec::new(),
        }
    }

    pub async fn stop(self) {
        let db = self.stop_keeping_db().await;
        db.drop_database().await;
    }

    /// Stops the server and hands back its database, intact, for another app to start on.
    pub async fn stop_keeping_db(self) -> TestDb {
        self.shutdown.cancel();
        let _ = self.server.await;
        self.db
    }

    /// The server's shutdown token (workers a test spawns stop with the server).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// A store on the app's database, for reading what the API does not show.
    pub async fn store(&self) -> Store {
        Store::connect(&self.db.url, &Default::default())
            .await
            .expect("store")
    }

    pub fn workflow(&self) -> pb::workflow_service_client::WorkflowServiceClient<Channel> {
        pb::workflow_service_client::WorkflowServiceClient::new(self.channel.clone())
    }

    pub fn tasks(&self) -> pb::task_service_client::TaskServiceClient<Channel> {
        pb::task_service_client::TaskServiceClient::new(self.channel.clone())
    }

    pub fn reminders(&self) -> pb::reminder_service_client::ReminderServiceClient<Channel> {
        pb::reminder_service_client::ReminderServiceClient::new(self.channel.clone())
    }

    pub fn approvals(&self) -> pb::approval_service_client::ApprovalServiceClient<Channel> {
        pb::approval_service_client::ApprovalServiceClient::new(self.channel.clone())
    }

    pub fn directory(&self) -> pb::directory_service_client::DirectoryServiceClient<Channel> {
        pb::directory_service_client::DirectoryServiceClient::new(self.channel.clone())
    }

    pub async fn deploy_xml(&self, xml: &str) -> Result<pb::Definition, Status> {
        let message = pb::DeployDefinitionRequest {
            bpmn_xml: xml.as_bytes().to_vec(),
            request_id: String::new(),
        };
        self.workflow()
            .deploy_definition(req(message, "admin"))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn deploy_example(&self, file: &str) -> pb::Definition {
        let xml =
            std::fs::read_to_string(repo_path(&format!("examples/{file}"))).expect("example file");
        self.deploy_xml(&xml).await.expect("example deploys")
    }

    /// `id` with address `id@example.com`, locale "en", and `manager` (may be empty).
    pub async fn add_user(&self, id: &str, manager: &str) {
        self.upsert_user(pb::User {
            id: id.into(),
            display_name: id.to_uppercase(),
            email: format!("{id}@example.com"),
            manager_id: manager.into(),
            locale: "en".into(),
            ..Default::default()
        })
        .await;
    }

    /// Adds (or replaces) a directory entry with the given address and locale.
    pub async fn add_user_with(&self, id: &str, email: &str, locale: &str) {
        self.upsert_user(pb::User {
            id: id.into(),
            display_name: id.to_uppercase(),
            email: email.into(),
            locale: locale.into(),
            ..Default::default()
        })
        .await;
    }

    pub async fn upsert_user(&self, user: pb::User) {
        let message = pb::UpsertUserRequest { user: Some(user) };
        self.directory()
            .upsert_user(req(message, "admin"))
            .await
            .expect("upsert user");
    }

    pub async fn try_start(
        &self,
        key: &str,
        variables: Value,
    ) -> Result<pb::ProcessInstance, Status> {
        self.try_start_as(key, "initiator", variables).await
    }

    pub async fn try_start_as(
        &self,
        key: &str,
        user: &str,
        variables: Value,
    ) -> Result<pb::ProcessInstance, Status> {
        let message = pb::StartProcessRequest {
            definition_key: key.into(),
            variables: vars(variables),
            ..Default::default()
        };
        self.workflow()
            .start_process(req(message, user))
            .await
            .map(|r| r.into_inner())
    }

    /// Starts `key` as "initiator".
    pub async fn start(&self, key: &str, variables: Value) -> pb::ProcessInstance {
        self.try_start(key, variables).await.expect("start process")
    }

    /// Starts `key` as `user`.
    pub async fn start_as(&self, key: &str, user: &str, variables: Value) -> pb::ProcessInstance {
        self.try_start_as(key, user, variables)
            .await
            .unwrap_or_else(|e| panic!("start {key} as {user}: {e}"))
    }

    pub async fn instance(&self, id: &str) -> pb::ProcessInstance {
        self.workflow()
            .get_process_instance(req(
                pb::GetProcessInstanceRequest { id: id.into() },
                "admin",
            ))
            .await
            .expect("get instance")
            .into_inner()
    }

    pub async fn task(&self, id: &str) -> pb::Task {
        self.tasks()
            .get_task(req(pb::GetTaskRequest { task_id: id.into() }, "admin"))
            .await
            .expect("get task")
            .into_inner()
    }

    /// The task once it is decided (a reply read in the background, an escalation...).
    pub async fn wait_until_decided(&self, task_id: &str, within: Duration) -> pb::Task {
        eventually(within, async || {
            let task = self.task(task_id).await;
            if task.outcome.is_empty() {
                Err(format!("task {task_id} not decided: {task:?}"))
            } else {
                Ok(task)
            }
        })
        .await
    }

    /// Completes `task` as its assignee.
    pub async fn complete(
        &self,
        task: &pb::Task,
        outcome: &str,
    ) -> Result<pb::CompleteTaskResponse, Status> {
        self.complete_as(task, &task.assignee, outcome).await
    }

    pub async fn complete_as(
        &self,
        task: &pb::Task,
        user: &str,
        outcome: &str,
    ) -> Result<pb::CompleteTaskResponse, Status> {
        let message = pb::CompleteTaskRequest {
            task_id: task.id.clone(),
            outcome: outcome.into(),
            comment: format!("{outcome} by {user}"),
            ..Default::default()
        };
        self.tasks()
            .complete_task(req(message, user))
            .await
            .map(|r| r.into_inner())
    }

    /// Every task of an instance, open or closed, oldest first.
    pub async fn tasks_of(&self, instance_id: &str) -> Vec<pb::Task> {
        let message = pb::ListTasksRequest {
            process_instance_id: instance_id.into(),
            page_size: 500,
            ..Default::default()
        };
        self.tasks()
            .list_tasks(req(message, "admin"))
            .await
            .expect("list tasks")
            .into_inner()
            .tasks
    }

    /// The instance's audit trail, straight from the store.
    pub async fn event_kinds(&self, instance_id: &str) -> Vec<String> {
        self.audit_events(instance_id)
            .await
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    /// The instance's audit trail with each event's activity and detail, straight from the store.
    pub async fn audit_events(&self, instance_id: &str) -> Vec<replyflow::model::Event> {
        let store = self.store().await;
        let events = store.events(instance_id).await.expect("events");
        store.close().await;
        events
    }

    /// Every deployed definition (one page of up to 500).
    pub async fn definitions(&self) -> Vec<pb::Definition> {
        let message = pb::ListDefinitionsRequest {
            page_size: 500,
            ..Default::default()
        };
        self.workflow()
            .list_definitions(req(message, "admin"))
            .await
            .expect("list definitions")
            .into_inner()
            .definitions
    }

    /// Every process instance (one page of up to 500).
    pub async fn instances(&self) -> Vec<pb::ProcessInstance> {
        let message = pb::ListProcessInstancesRequest {
            page_size: 500,
            ..Default::default()
        };
        self.workflow()
            .list_process_instances(req(message, "admin"))
            .await
            .expect("list instances")
            .into_inner()
            .instances
    }

    /// `user` hands `task` to `new_assignee`.
    pub async fn reassign_as(
        &self,
        task: &pb::Task,
        user: &str,
        new_assignee: &str,
    ) -> Result<pb::Task, Status> {
        let message = pb::ReassignTaskRequest {
            task_id: task.id.clone(),
            new_assignee: new_assignee.into(),
            comment: format!("over to {new_assignee}"),
            ..Default::default()
        };
        self.tasks()
            .reassign_task(req(message, user))
            .await
            .map(|r| r.into_inner())
    }

    /// `user` cancels an instance.
    pub async fn cancel_as(
        &self,
        instance_id: &str,
        user: &str,
    ) -> Result<pb::ProcessInstance, Status> {
        let message = pb::CancelProcessInstanceRequest {
            id: instance_id.into(),
            reason: format!("cancelled by {user}"),
            ..Default::default()
        };
        self.workflow()
            .cancel_process_instance(req(message, user))
            .await
            .map(|r| r.into_inner())
    }

    /// Opens a WatchTasks stream as "admin" (who may watch anyone).
    pub async fn watch(
        &self,
        message: pb::WatchTasksRequest,
    ) -> Result<tonic::Streaming<pb::TaskEvent>, Status> {
        self.tasks()
            .watch_tasks(req(message, "admin"))
            .await
            .map(|r| r.into_inner())
    }
}

/// A status with this code whose message mentions every one of `needles`.
#[track_caller]
pub fn assert_refused(err: &Status, code: tonic::Code, needles: &[&str]) {
    assert_eq!(err.code(), code, "{err:?}");
    for needle in needles {
        assert!(
            err.message().contains(needle),
            "{needle:?} is missing from the message {:?}",
            err.message()
        );
    }
}

/// Deploys `xml`, expects INVALID_ARGUMENT naming every needle, and checks nothing was stored
/// (the app must have no definition before) and the server still answers.
pub async fn assert_deploy_refused(app: &TestApp, xml: &str, needles: &[&str]) {
    let err = app
        .deploy_xml(xml)
        .await
        .expect_err("the definition must be refused");
    assert_refused(&err, tonic::Code::InvalidArgument, needles);
    assert!(
        app.definitions().await.is_empty(),
        "a refused definition must not be stored"
    );
}

pub fn open_activities(instance: &pb::ProcessInstance) -> Vec<String> {
    let mut ids: Vec<String> = instance
        .open_tasks
        .iter()
        .map(|t| t.activity_id.clone())
        .collect();
    ids.sort();
    ids
}

pub fn status(instance: &pb::ProcessInstance) -> pb::InstanceStatus {
    pb::InstanceStatus::try_from(instance.status).expect("known status")
}

pub fn expense_vars(amount: i64) -> Value {
    json!({"manager": "mary", "finance": "fred", "amount": amount, "reason": "conference"})
}
