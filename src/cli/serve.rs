//! `replyflow serve` and `replyflow migrate`: settings from file, environment and flags, then the
//! [`Application`] until SIGINT or SIGTERM.
use std::{path::Path, sync::Arc};

use clap::Args;
use tracing_subscriber::EnvFilter;

use crate::{
    app::{self, Application},
    clock::SystemClock,
    config::{Secret, Settings},
};

#[derive(Debug, Default, Args)]
pub(super) struct DatabaseArgs {
    /// `sqlite://FILE` or `postgres://...` (default sqlite://replyflow.db; REPLYFLOW_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

#[derive(Debug, Default, Args)]
pub(super) struct ServeArgs {
    /// gRPC address (default 127.0.0.1:50051; REPLYFLOW_SERVER_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    #[command(flatten)]
    database: DatabaseArgs,
}

fn settings(config: Option<&Path>, database: &DatabaseArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::load(config)?;
    if let Some(url) = &database.database {
        settings.database.url = Secret::new(url.clone());
    }
    Ok(settings)
}

fn init_tracing() {
    let filter =
        EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // A second initialisation (tests) is harmless.
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

pub(super) async fn serve(config: Option<&Path>, args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let mut settings = settings(config, &args.database)?;
    if let Some(listen) = args.listen {
        settings.server.listen = listen;
    }
    // Install the handlers before anything listens: a signal that arrives right after start
    // must stop the server gracefully, not kill it.
    let signals = Signals::install()?;
    let application = Application::build(&settings, Arc::new(SystemClock)).await?;
    let shutdown = application.shutdown_token();
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutdown signal received");
        shutdown.cancel();
    });
    application.run_until_stopped().await
}

pub(super) async fn migrate(config: Option<&Path>, args: DatabaseArgs) -> anyhow::Result<()> {
    init_tracing();
    let settings = settings(config, &args)?;
    let store = app::open_store(&settings).await?;
    store.close().await;
    println!("database is up to date");
    Ok(())
}

/// SIGINT and SIGTERM, registered with the OS as soon as this is built.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn wait(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
