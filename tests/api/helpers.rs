//! The test harness: `spawn_app()` starts the real server on port 0 with a fresh database
//! (SQLite file, or a new PostgreSQL database when TEST_DATABASE=postgres) and returns a
//! [`TestApp`] whose helpers read like the user's story. Clients talk gRPC over TCP.
use std::{path::PathBuf, sync::Arc};

use replyflow::{
    api::convert,
    app::Application,
    clock::SystemClock,
    config::{Secret, Settings},
    proto::pb,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Status, transport::Channel};

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

/// A database that exists only for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_admin: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> Self {
        match backend() {
            "postgres" => {
                let admin = std::env::var("TEST_POSTGRES_URL").expect(
                    "TEST_DATABASE=postgres needs TEST_POSTGRES_URL (scripts/test sets it); refusing to skip",
                );
                let name = format!("rf_test_{}", uuid::Uuid::now_v7().simple());
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
                Self {
                    url: with_database(&admin, &name),
                    _dir: None,
                    pg_admin: Some((admin, name)),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("replyflow.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg_admin: None,
                }
            }
        }
    }

    /// The same database for a second server; the first keeps owning (and dropping) it.
    pub fn reuse(db: &TestDb) -> TestDb {
        TestDb {
            url: db.url.clone(),
            _dir: None,
            pg_admin: None,
        }
    }

    /// Drops a PostgreSQL test database (scripts/test also sweeps leftovers of failed runs).
    pub async fn drop_database(&self) {
        if let Some((admin, name)) = &self.pg_admin
            && let Ok(mut conn) = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await
        {
            let _ = sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            )
            .await;
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    format!("{prefix}/{name}{query}")
}

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    pub db: TestDb,
    /// Outgoing mail lands here as .eml files (the file transport).
    pub outbox_dir: tempfile::TempDir,
    /// The server's use cases, for what no RPC does (e.g. posting a notice to an inbox).
    pub server_workflow: Arc<replyflow::workflow::Workflow>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    let db = TestDb::new().await;
    spawn_app_on(db).await
}

/// [`spawn_app`] with settings changed by `configure` after the test defaults are in place.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new().await;
    spawn_app_on_with(db, configure).await
}

pub async fn spawn_app_on(db: TestDb) -> TestApp {
    spawn_app_on_with(db, |_| {}).await
}

/// The settings every test app starts from: port 0, the given database, mail as .eml files
/// into `outbox_dir`, From "审批系统 <approvals@replyflow.test>".
pub fn test_settings(db_url: &str, outbox_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Secret::new(db_url);
    settings.mail.outbound = Secret::new(format!("file:{}", outbox_dir.display()));
    // Replies are submitted over gRPC in these tests; the Maildir transport has its own tests.
    settings.mail.inbound = Secret::new("none");
    settings.mail.from = "审批系统 <approvals@replyflow.test>".into();
    // Dev mode (x-user-id); "admin" deploys, fills the directory and reads everything.
    settings.security.admins = "admin".into();
    // "mta" hands in replies with SubmitInboundEmail, as a mail server's pipe would.
    settings.security.roles.mail = "mta".into();
    settings
}

/// Starts the app on an existing database (e.g. one a stopped app left behind, see
/// [`TestApp::stop_keeping_db`]), with settings changed by `configure`.
pub async fn spawn_app_on_with(db: TestDb, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on_clock(db, Arc::new(SystemClock), configure).await
}

/// [`spawn_app_with`] on a clock the test moves (reminder tests run hours in milliseconds).
pub async fn spawn_app_at(
    clock: Arc<dyn replyflow::clock::Clock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = TestDb::new().await;
    spawn_app_on_clock(db, clock, configure).await
}

pub async fn spawn_app_on_clock(
    db: TestDb,
    clock: Arc<dyn replyflow::clock::Clock>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    let outbox_dir = tempfile::tempdir().expect("outbox dir");
    let mut settings = test_settings(&db.url, outbox_dir.path());
    configure(&mut settings);
    let app = Application::build(&settings, clock)
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

    /// A store on the app's database, for reading what the API does not show.
    pub async fn store(&self) -> replyflow::store::Store {
        replyflow::store::Store::connect(&self.db.url, &Default::default())
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

    pub async fn add_user(&self, id: &str, manager: &str) {
        let message = pb::UpsertUserRequest {
            user: Some(pb::User {
                id: id.into(),
                display_name: id.to_uppercase(),
                email: format!("{id}@example.com"),
                manager_id: manager.into(),
                locale: "en".into(),
                ..Default::default()
            }),
        };
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
        let message = pb::StartProcessRequest {
            definition_key: key.into(),
            variables: vars(variables),
            ..Default::default()
        };
        self.workflow()
            .start_process(req(message, "initiator"))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn start(&self, key: &str, variables: Value) -> pb::ProcessInstance {
        self.try_start(key, variables).await.expect("start process")
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
        let store = replyflow::store::Store::connect(&self.db.url, &Default::default())
            .await
            .expect("store");
        let kinds = store
            .events(instance_id)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        store.close().await;
        kinds
    }

    /// The instance's audit trail with each event's activity and detail, straight from the store.
    pub async fn audit_events(&self, instance_id: &str) -> Vec<replyflow::model::Event> {
        let store = replyflow::store::Store::connect(&self.db.url, &Default::default())
            .await
            .expect("store");
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
