//! The in-process server every mode without `--addr` loads: the real Application on
//! 127.0.0.1:0 with the run's database, approval mail written as files, and (with `--auth jwt`)
//! a secret made for the run.
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{
    BenchArgs,
    auth::{BENCH_JWT_AUDIENCE, BENCH_JWT_ISSUER},
    database::Database,
};
use crate::{
    app::Application,
    clock::SystemClock,
    config::{Secret, Settings},
    store::GroupCommits,
    workflow::Workflow,
};

pub(super) struct InProcess {
    /// `http://127.0.0.1:PORT`.
    pub(super) addr: String,
    /// One line saying what runs: backend, synchronous, pool, auth.
    pub(super) backend: String,
    /// The settings it runs with (the statement probe starts another server on them).
    pub(super) settings: Settings,
    /// The arguments with the run's JWT secret filled in.
    pub(super) args: BenchArgs,
    workflow: Arc<Workflow>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
    database: Database,
    mail_dir: std::path::PathBuf,
}

impl InProcess {
    pub(super) async fn start(args: &BenchArgs) -> anyhow::Result<Self> {
        let database = Database::prepare(args.database.as_deref(), args.fresh_postgres).await?;
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
        let application = match Application::build(&settings, Arc::new(SystemClock)).await {
            Ok(application) => application,
            Err(err) => {
                database.cleanup().await;
                return Err(err).context("starting the in-process server");
            }
        };
        let addr = format!("http://{}", application.local_addr());
        let shutdown = application.shutdown_token();
        let workflow = application.workflow();
        let server = tokio::spawn(application.run_until_stopped());
        Ok(Self {
            addr,
            backend,
            settings,
            args,
            workflow,
            shutdown,
            server,
            database,
            mail_dir,
        })
    }

    pub(super) fn group_commits(&self) -> GroupCommits {
        self.workflow.store().group_commits()
    }

    /// Stops the server; `then` runs after it stopped and before the database is thrown away.
    pub(super) async fn stop<T, F>(self, then: F) -> anyhow::Result<T>
    where
        F: AsyncFnOnce(&Settings, &BenchArgs) -> anyhow::Result<T>,
    {
        self.shutdown.cancel();
        let stopped = match self.server.await {
            Ok(result) => result.context("the in-process server"),
            Err(err) => Err(err).context("the in-process server panicked"),
        };
        let result = match stopped {
            Ok(()) => then(&self.settings, &self.args).await,
            Err(err) => Err(err),
        };
        self.database.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.mail_dir);
        result
    }
}
