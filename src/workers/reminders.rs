//! The reminder scheduler: a tokio-cron-scheduler job (`reminders.schedule`, default every
//! second) that fires due reminders in batches of `reminders.batch_size`, one transaction each,
//! until none is due. Ticks never overlap: a tick that finds the previous one still running is
//! skipped. Several servers on one PostgreSQL share the work through `SKIP LOCKED` claims.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use anyhow::Context;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::workflow::{Workflow, reminders::FireReport};

#[derive(Debug, Clone)]
pub struct ReminderScheduler {
    workflow: Arc<Workflow>,
    schedule: String,
    batch: i64,
    running: Arc<Mutex<()>>,
    /// Set at shutdown before waiting for the tick in flight: a tick that starts later sees it
    /// and does nothing (the pool is about to close).
    stopping: Arc<AtomicBool>,
}

impl ReminderScheduler {
    /// Checks the cron expression now, so that a bad one stops the server at start.
    pub fn new(workflow: Arc<Workflow>, schedule: &str, batch: u32) -> anyhow::Result<Self> {
        Job::new_async(schedule, |_, _| Box::pin(async {}))
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reminders.schedule: {schedule:?} is not a six-field cron expression (seconds first)"))?;
        Ok(Self {
            workflow,
            schedule: schedule.to_string(),
            batch: i64::from(batch.max(1)),
            running: Arc::new(Mutex::new(())),
            stopping: Arc::new(AtomicBool::new(false)),
        })
    }

    /// One tick: batches until nothing more is due. Skipped (zero report) while another runs.
    pub async fn run_once(&self) -> anyhow::Result<FireReport> {
        let Ok(_running) = self.running.try_lock() else {
            return Ok(FireReport::default());
        };
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(FireReport::default());
        }
        let mut total = FireReport::default();
        loop {
            let started = Instant::now();
            let report = self.workflow.fire_due_reminders(self.batch).await?;
            total.claimed += report.claimed;
            total.reminded += report.reminded;
            total.failed += report.failed;
            total.fallbacks += report.fallbacks;
            if report.claimed > 0 || report.fallbacks > 0 {
                tracing::info!(
                    claimed = report.claimed, reminded = report.reminded, failed = report.failed,
                    fallbacks = report.fallbacks, took = ?started.elapsed(), "reminders fired"
                );
            }
            let full = |n: usize| i64::try_from(n).unwrap_or(i64::MAX) >= self.batch;
            if !full(report.claimed) && !full(report.fallbacks) {
                return Ok(total);
            }
        }
    }

    /// Starts the cron job; it stops when `shutdown` is cancelled.
    pub async fn spawn(
        self,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<()> {
        let mut scheduler = JobScheduler::new()
            .await
            .map_err(|e| anyhow::anyhow!("starting the reminder scheduler: {e}"))?;
        let this = self.clone();
        let job = Job::new_async(self.schedule.as_str(), move |_, _| {
            let this = this.clone();
            Box::pin(async move {
                if let Err(e) = this.run_once().await {
                    tracing::error!(error = %format!("{e:#}"), "reminder tick failed; retried at the next tick");
                }
            })
        })
        .map_err(|e| anyhow::anyhow!("reminders.schedule: {e}"))?;
        scheduler
            .add(job)
            .await
            .map_err(|e| anyhow::anyhow!("adding the reminder job: {e}"))?;
        scheduler
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("starting the reminder scheduler: {e}"))?;
        tracing::info!(schedule = %self.schedule, batch = self.batch, "reminder scheduler started");
        let (running, stopping) = (self.running.clone(), self.stopping.clone());
        tracker.spawn(async move {
            shutdown.cancelled().await;
            stopping.store(true, Ordering::SeqCst);
            if let Err(e) = scheduler.shutdown().await {
                tracing::warn!(error = %e, "reminder scheduler did not stop cleanly");
            }
            // Let a tick in flight finish its transaction; one that starts after sees `stopping`.
            drop(running.lock().await);
            tracing::info!("reminder scheduler stopped");
        });
        Ok(())
    }
}
