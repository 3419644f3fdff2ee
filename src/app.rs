//! Wires store, workflow, API and (later) workers together around one shutdown token, in the
//! manner of zero-to-production's `Application`: `build` binds the listener (port 0 in tests) and
//! runs migrations; `run_until_stopped` serves until the token is cancelled, then drains.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    clock::Clock,
    config::Settings,
    delivery::{self, sms::HttpSmsGateway},
    mail::{compose::Templates, reply::InboundAuth},
    store::{ConnectOptions, Store},
    workers::{
        inbound::{InboundSource, InboundWorker},
        outbox::{OutboxWorker, RetryPolicy},
        reminders::ReminderScheduler,
    },
    workflow::Workflow,
    workflow::approvals::{Mailer, load_key_ring},
};

#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<api::tls::ServerTls>,
    workflow: Arc<Workflow>,
    authenticator: Arc<crate::api::auth::Authenticator>,
    outbox: OutboxWorker,
    inbound: Option<InboundWorker>,
    reminders: ReminderScheduler,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Application {
    pub async fn build(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        // The edges first, each from its own keys: a key that does not parse stops the start
        // before the database is touched.
        let ca_file = settings.mail.ca_file.as_deref().map(std::path::Path::new);
        let transport = delivery::from_url(
            settings.mail.outbound.expose(),
            ca_file,
            settings.mail.pool_size,
        )
        .context("mail.outbound")?;
        let sms_gateway = HttpSmsGateway::from_settings(&settings.sms, ca_file)?;
        let inbound_source =
            InboundSource::from_url(settings.mail.inbound.expose()).context("mail.inbound")?;
        InboundAuth::from_settings(
            settings.mail.authserv_id.as_deref(),
            &settings.mail.require_auth,
        )?;
        let store = open_store(settings).await?;
        // A template that does not render stops the start here, naming the template: never a
        // broken mail later.
        let templates = Templates::load(
            settings
                .mail
                .templates_dir
                .as_deref()
                .map(std::path::Path::new),
        )
        .context("mail templates")?;
        let keys = load_key_ring(
            &store,
            &settings.security.reply_token_secrets(),
            clock.now(),
        )
        .await?;
        let mailer = Arc::new(Mailer::new(templates, keys, &settings.mail)?);
        let policy = RetryPolicy {
            max_attempts: i64::from(settings.mail.max_attempts),
            ..RetryPolicy::default()
        };
        let outbox = OutboxWorker::new(
            store.clone(),
            transport,
            clock.clone(),
            mailer.wake(),
            policy,
            settings.mail.pool_size as usize,
        )
        .with_sms_gateway(sms_gateway);
        // Before binding: a certificate that cannot be used stops the start, naming the key.
        let tls = api::tls::ServerTls::load(&settings.server)?;
        let listener = TcpListener::bind(&settings.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", settings.server.listen))?;
        let addr = listener.local_addr()?;
        let manual_interval_ms =
            crate::duration::Duration::parse(&settings.reminders.manual_interval)
                .map_err(|e| anyhow::anyhow!("reminders.manual_interval: {e}"))?
                .ms();
        let workflow = Arc::new(
            Workflow::new(store, clock, mailer)
                .with_manual_interval_ms(manual_interval_ms)
                .with_max_steps(settings.limits.max_steps as usize),
        );
        let reminders = ReminderScheduler::new(
            workflow.clone(),
            &settings.reminders.schedule,
            settings.reminders.batch_size,
        )?;
        let inbound = match inbound_source {
            InboundSource::None => None,
            source => Some(InboundWorker::new(
                workflow.clone(),
                source,
                settings.mail.processed_folder.clone(),
                settings.mail.ca_file.as_ref().map(std::path::PathBuf::from),
            )),
        };
        let authenticator = Arc::new(
            crate::api::auth::Authenticator::from_settings(
                &settings.security,
                &settings.server.listen,
            )
            .context("security")?,
        );
        if authenticator.is_dev() {
            tracing::warn!(
                "development mode (security.auth = dev): the caller's identity is read from x-user-id metadata and NOT verified"
            );
        }
        Ok(Self {
            listener,
            addr,
            tls,
            workflow: workflow.clone(),
            authenticator,
            outbox,
            inbound,
            reminders,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn workflow(&self) -> Arc<Workflow> {
        self.workflow.clone()
    }

    /// Cancel it to stop the server (SIGINT/SIGTERM do, in `main`).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let tls = match &self.tls {
            None => "off",
            Some(tls) if tls.is_mutual() => "mutual (client certificates required)",
            Some(_) => "on",
        };
        tracing::info!(addr = %self.addr, tls, "replyflow listening");
        let shutdown = self.shutdown.clone();
        self.outbox.spawn(shutdown.clone(), &self.tracker);
        if let Some(inbound) = self.inbound {
            inbound.spawn(shutdown.clone(), &self.tracker);
        }
        self.reminders
            .spawn(shutdown.clone(), &self.tracker)
            .await?;
        let result = api::serve(
            self.listener,
            self.workflow.clone(),
            self.authenticator.clone(),
            self.tls,
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.workflow.store().close().await;
        tracing::info!("replyflow stopped");
        result
    }
}

/// Connects and migrates the configured database.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let options = ConnectOptions {
        max_connections: settings.database.max_connections,
        synchronous_full: settings.database.synchronous == "full",
    };
    let store = Store::connect(settings.database.url.expose(), &options).await?;
    store.migrate().await?;
    Ok(store)
}
