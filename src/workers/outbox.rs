//! The outbox sender: delivers the mail (and SMS) that transactions wrote to the `outbox` table.
//!
//! A row of kind `sms` goes to the SMS gateway, every other row to the mail transport (both
//! [`crate::delivery::Transport`]s); both share the claim, the lease, the retry policy and the recording below, so an
//! SMS is as durable as a mail and a gateway outage is ridden out like an SMTP one. Without a
//! gateway an SMS fails permanently at once, which lets its reminder fall back to the next channel.
//!
//! A mail is committed with the decision that caused it, so nothing acknowledged is lost
//! (DESIGN §10); this worker only moves rows from `queued` to `sent`, `temp_failed` (retried after
//! a [`crate::backoff`]) or `perm_failed` (the server's answer kept for the API).
//! [`OutboxWorker::run_once`] is one step — claim what is due under a lease, send it with bounded
//! concurrency over a pooled transport, record each outcome — and is what tests drive, with a
//! manual clock. [`OutboxWorker::spawn`] wraps it in a loop that only waits: for a wake-up from
//! the code that commits new mail, for the next retry to fall due, or for a 30 s timer.
//!
//! Exactly once: a mail is marked sent right after the server accepted it, and the lease (5 min)
//! keeps other workers off it meanwhile; no send starts with less than 2 min of lease left, more
//! than the transport's timeouts allow a send to take. Only a crash between the server's "250"
//! and that update can send a mail twice, the inherent limit of SMTP.
//!
//! Throughput: a step claims its batch in one statement and records outcomes while it sends,
//! all that came in during the previous commit in one transaction (the sent ones in one UPDATE),
//! so neither the fsync of a commit nor a statement per mail holds up the sends (see
//! tests/mail/bench.rs). Keep `concurrency` ≤ the transport's pool size: more only queues for a
//! connection.
use std::{
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    backoff::Backoff,
    clock::{Clock, Millis},
    delivery::{SendError, Transport, sms},
    model::OutboxMail,
    store::{Delivery, DeliveryOutcome, Store},
};

/// How long a claimed mail is ours: other workers leave it alone meanwhile.
const LEASE_MS: i64 = 5 * 60_000;
/// A send is only started while this much of the lease is left (the SMTP transport gives up on
/// a connection after 30 s and on a mail after 60 s more; an SMS gateway request after at most
/// 60 s, the largest `sms.timeout`). A batch slowed down by a hanging server
/// leaves its last mails unsent rather than risk sending one that another worker has claimed.
const SEND_BUDGET: Duration = Duration::from_secs(120);
/// The loop looks at the table at least this often, whatever it was told.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// When a mail is due but could not be claimed (another worker holds its lease), wait this long
/// instead of spinning.
const LEASED_ELSEWHERE_POLL: Duration = Duration::from_secs(1);
/// Claim this many mails per concurrent send, per step: enough to keep every connection busy,
/// few enough that the batch finishes well within the lease.
const BATCH_PER_SLOT: usize = 25;
/// Outcomes recorded per transaction at most.
const RECORD_CHUNK: usize = 100;

/// When to try a mail again after a transient failure.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included); after that a transient failure is permanent.
    pub max_attempts: i64,
    /// The wait before the next attempt, by failed attempts so far.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            backoff: Backoff {
                base_ms: 5_000,
                max_ms: 3_600_000,
                // A retry never follows its failure at once.
                floor_ms: 1_000,
            },
        }
    }
}

impl RetryPolicy {
    /// The next attempt after `attempts` failed ones, or None when they are used up.
    pub fn retry_at(&self, now: Millis, attempts: i64) -> Option<Millis> {
        if attempts >= self.max_attempts {
            return None;
        }
        Some(now.saturating_add(self.backoff.wait_ms(attempts)))
    }
}

/// The sender's loop after a failed step (the database unreachable, say): from 1 s up to the
/// idle poll.
const STEP_BACKOFF: Backoff = Backoff {
    base_ms: 1_000,
    max_ms: IDLE_POLL.as_millis() as i64,
    floor_ms: 1_000,
};

/// Delivers due outbox mail; see the module documentation.
#[derive(Debug)]
pub struct OutboxWorker {
    store: Store,
    transport: Arc<dyn Transport>,
    /// None: SMS rows fail permanently (no `sms.gateway_url`).
    sms: Option<Arc<dyn Transport>>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    policy: RetryPolicy,
    concurrency: usize,
}

impl OutboxWorker {
    pub fn new(
        store: Store,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        policy: RetryPolicy,
        concurrency: usize,
    ) -> Self {
        Self {
            store,
            transport,
            sms: None,
            clock,
            wake,
            policy,
            concurrency: concurrency.max(1),
        }
    }

    /// Sends the `sms` rows through `gateway` (None: they fail permanently).
    pub fn with_sms_gateway(mut self, gateway: Option<Arc<dyn Transport>>) -> Self {
        self.sms = gateway;
        self
    }

    /// Claims due mail (lease 5 min) and sends up to `concurrency` at once; records each result.
    /// While a full batch is being sent, the next one is claimed, so the connections never wait
    /// for a claim; a batch that comes back short ends the step. Returns how many were attempted.
    /// Errs only when the first claim fails (a later one is logged and ends the step); a failure
    /// to record an outcome is logged (the lease then expires and the mail is tried again).
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let limit = self.concurrency * BATCH_PER_SLOT;
        let first = self.claim(limit).await?;
        if first.is_empty() {
            return Ok(0);
        }
        // Three parts side by side. Claiming: the queue holds one batch, so the next claim is
        // made while the one before it is being sent. Sending: `concurrency` at once. Recording:
        // the sends go on while a transaction commits, and the outcomes that arrive meanwhile are
        // recorded together by the next one; with SQLite's full durability one fsync per mail,
        // or sends that wait for each fsync, would cap delivery at a few hundred mails a second.
        let (queue, queued) = tokio::sync::mpsc::channel::<(OutboxMail, Instant)>(limit);
        let (outcomes, mut recorded) = tokio::sync::mpsc::unbounded_channel();
        let claiming = async move {
            let mut batch = first;
            let mut attempted = 0;
            loop {
                let full = batch.len() >= limit;
                attempted += batch.len();
                let start_before =
                    Instant::now() + Duration::from_millis(LEASE_MS as u64) - SEND_BUDGET;
                for mail in batch {
                    if queue.send((mail, start_before)).await.is_err() {
                        return attempted;
                    }
                }
                if !full {
                    return attempted;
                }
                batch = match self.claim(limit).await {
                    Ok(batch) if !batch.is_empty() => batch,
                    Ok(_) => return attempted,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "claiming more mail failed; the next step tries again");
                        return attempted;
                    }
                };
            }
        };
        let sending = async move {
            let mails = futures_util::stream::unfold(queued, |mut queued| async move {
                queued.recv().await.map(|mail| (mail, queued))
            });
            let mut delivered = pin!(
                mails
                    .map(|(mail, start_before)| self.deliver(mail, start_before))
                    .buffer_unordered(self.concurrency)
            );
            while let Some(outcome) = delivered.next().await {
                if let Some(outcome) = outcome {
                    // The receiver lives until every sender is gone: this cannot fail.
                    let _ = outcomes.send(outcome);
                }
            }
        };
        let recording = async {
            let mut chunk = Vec::with_capacity(RECORD_CHUNK);
            while recorded.recv_many(&mut chunk, RECORD_CHUNK).await > 0 {
                if let Err(e) = self.store.record_deliveries(&chunk, self.clock.now()).await {
                    tracing::error!(
                        error = %e, mails = chunk.len(),
                        "could not record delivery outcomes; those mails are retried when their lease expires"
                    );
                }
                chunk.clear();
            }
        };
        let (attempted, (), ()) = tokio::join!(claiming, sending, recording);
        Ok(attempted)
    }

    /// Up to `limit` due mails, leased for [`LEASE_MS`].
    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<OutboxMail>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .store
            .claim_due_mail(self.clock.now(), LEASE_MS, limit)
            .await?)
    }

    /// One mail or SMS: send it and decide what to record (`None`: leave it to its lease).
    async fn deliver(&self, mail: OutboxMail, start_before: Instant) -> Option<DeliveryOutcome> {
        let channel = if mail.kind == sms::OUTBOX_KIND {
            "sms"
        } else {
            "mail"
        };
        if Instant::now() > start_before {
            // Not recorded: the lease runs out and the mail is claimed again (by us or another).
            tracing::warn!(
                outbox_id = %mail.id, message_id = %mail.message_id, attempt = mail.attempts,
                channel, "not sending: too little of the lease left (the server is slow); retried later"
            );
            return None;
        }
        let transport = if channel == "sms" {
            self.sms.as_ref()
        } else {
            Some(&self.transport)
        };
        let result = match transport {
            Some(transport) => {
                transport
                    .send(&mail.sender, &mail.recipient, &mail.message_id, &mail.body)
                    .await
            }
            None => Err(SendError::Permanent(sms::NO_GATEWAY.into())),
        };
        let outcome = match result {
            Ok(reply) => {
                tracing::info!(
                    outbox_id = %mail.id, message_id = %mail.message_id, recipient = %mail.recipient,
                    attempt = mail.attempts, channel, server = %reply, "delivered"
                );
                Delivery::Sent {
                    server_reply: reply,
                }
            }
            Err(SendError::Transient(error)) => {
                match self.policy.retry_at(self.clock.now(), mail.attempts) {
                    Some(at) => {
                        tracing::warn!(
                            outbox_id = %mail.id, message_id = %mail.message_id,
                            recipient = %mail.recipient, attempt = mail.attempts, channel, %error,
                            retry_at = %crate::clock::rfc3339(at), "not delivered; will retry"
                        );
                        Delivery::Retry { error, at }
                    }
                    None => {
                        tracing::error!(
                            outbox_id = %mail.id, message_id = %mail.message_id,
                            recipient = %mail.recipient, attempt = mail.attempts, channel, %error,
                            "not delivered; attempts used up, giving up"
                        );
                        Delivery::Failed {
                            error: format!("gave up after {} attempts: {error}", mail.attempts),
                        }
                    }
                }
            }
            Err(SendError::Permanent(error)) => {
                tracing::error!(
                    outbox_id = %mail.id, message_id = %mail.message_id,
                    recipient = %mail.recipient, attempt = mail.attempts, channel, %error,
                    "refused permanently"
                );
                Delivery::Failed { error }
            }
        };
        Some(DeliveryOutcome {
            outbox_id: mail.id,
            delivery: outcome,
        })
    }

    /// The loop: run_once until nothing is due, then wait for `wake.notified()`, the next due
    /// time (next_mail_due) or a 30 s timer, whichever first; stops when `shutdown` is cancelled
    /// (finishing the sends in flight); errors are logged and backed off, never kill the loop.
    pub fn spawn(self, shutdown: CancellationToken, tracker: &TaskTracker) {
        tracker.spawn(async move { self.run(shutdown).await });
    }

    async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            transport = ?self.transport, sms = ?self.sms, concurrency = self.concurrency,
            "outbox sender started"
        );
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            // Listen before looking, so a wake-up during the step below is not lost.
            let mut woken = pin!(self.wake.notified());
            woken.as_mut().enable();
            let wait = match self.step().await {
                Ok(Some(wait)) => {
                    failures = 0;
                    wait
                }
                Ok(None) => {
                    failures = 0;
                    continue;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let backoff = STEP_BACKOFF.wait(failures);
                    tracing::error!(error = %format!("{e:#}"), retry_in = ?backoff, "outbox sender step failed");
                    backoff
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!("outbox sender stopped");
    }

    /// One run_once; `None` when it sent something (look again at once), else how long to wait.
    async fn step(&self) -> anyhow::Result<Option<Duration>> {
        if self.run_once().await? > 0 {
            return Ok(None);
        }
        let Some(due) = self.store.next_mail_due().await? else {
            return Ok(Some(IDLE_POLL));
        };
        let ahead = due - self.clock.now();
        Ok(Some(if ahead <= 0 {
            LEASED_ELSEWHERE_POLL
        } else {
            // A few ms past the due time, so the claim then finds it due.
            Duration::from_millis(ahead as u64 + 5).min(IDLE_POLL)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{clock::ManualClock, model::OutboxStatus, store::ConnectOptions};

    /// Answers by recipient: ok@ → 250, later@ → 451, bad@ → 550. Counts the sends.
    #[derive(Debug, Default)]
    struct ByRecipient(Mutex<Vec<String>>);

    #[tonic::async_trait]
    impl Transport for ByRecipient {
        async fn send(&self, _: &str, to: &str, _: &str, _: &[u8]) -> Result<String, SendError> {
            self.0.lock().unwrap().push(to.to_string());
            match to.split('@').next() {
                Some("ok") => Ok("250 2.0.0 Ok: queued as TEST".into()),
                Some("later") => Err(SendError::Transient("451 4.3.0 try later".into())),
                _ => Err(SendError::Permanent("550 5.1.1 no such user".into())),
            }
        }
    }

    fn mail(to: &str, now: Millis) -> OutboxMail {
        OutboxMail {
            id: format!("id-{to}"),
            kind: crate::model::OutboxKind::Approval,
            context_id: format!("ctx-{to}"),
            task_id: "task".into(),
            recipient: to.into(),
            sender: "approvals@x.test".into(),
            message_id: format!("<{to}>"),
            body: b"Subject: t\r\n\r\nt\r\n".to_vec(),
            status: OutboxStatus::Queued,
            attempts: 0,
            next_attempt_at: now,
            last_error: String::new(),
            created_at: now,
            sent_at: None,
            fallback: String::new(),
        }
    }

    async fn queue(store: &Store, recipients: &[&str], now: Millis) {
        let mut tx = store.begin().await.unwrap();
        for to in recipients {
            tx.insert_outbox(&mail(to, now)).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    async fn store_with(recipients: &[&str], now: Millis) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        queue(&store, recipients, now).await;
        (dir, store)
    }

    async fn row(store: &Store, to: &str) -> OutboxMail {
        store
            .mail_for_context(&format!("ctx-{to}"))
            .await
            .unwrap()
            .remove(0)
    }

    #[tokio::test]
    async fn each_outcome_is_recorded_and_transient_ones_give_up_after_the_limit() {
        let start = 1_700_000_000_000;
        let (_dir, store) = store_with(&["ok@x.test", "later@x.test", "bad@x.test"], start).await;
        let clock = Arc::new(ManualClock::new(start));
        let transport = Arc::new(ByRecipient::default());
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let worker = OutboxWorker::new(
            store.clone(),
            transport.clone(),
            clock.clone(),
            Arc::new(Notify::new()),
            policy,
            2,
        );
        assert_eq!(worker.run_once().await.unwrap(), 3);

        let ok = row(&store, "ok@x.test").await;
        assert_eq!(
            (ok.status, ok.attempts, ok.sent_at),
            (OutboxStatus::Sent, 1, Some(start))
        );
        assert_eq!(ok.last_error, "250 2.0.0 Ok: queued as TEST");
        let bad = row(&store, "bad@x.test").await;
        assert_eq!((bad.status, bad.attempts), (OutboxStatus::PermFailed, 1));
        assert_eq!(bad.last_error, "550 5.1.1 no such user");
        let later = row(&store, "later@x.test").await;
        assert_eq!(
            (later.status, later.attempts),
            (OutboxStatus::TempFailed, 1)
        );
        assert!((start + 1_000..=start + 5_000).contains(&later.next_attempt_at));
        assert_eq!(
            store.next_mail_due().await.unwrap(),
            Some(later.next_attempt_at)
        );

        assert_eq!(
            worker.run_once().await.unwrap(),
            0,
            "nothing due before the retry time"
        );
        clock.set(later.next_attempt_at);
        assert_eq!(
            worker.run_once().await.unwrap(),
            1,
            "only the transient one comes back"
        );
        let later = row(&store, "later@x.test").await;
        assert_eq!(
            (later.status, later.attempts),
            (OutboxStatus::PermFailed, 2)
        );
        assert_eq!(
            later.last_error,
            "gave up after 2 attempts: 451 4.3.0 try later"
        );
        assert_eq!(store.next_mail_due().await.unwrap(), None);
        assert_eq!(transport.0.lock().unwrap().len(), 4);
    }

    /// A full batch is followed by another claim in the same step, made while the first is
    /// being sent; the short batch at the end stops it.
    #[tokio::test]
    async fn a_step_claims_again_while_its_batches_come_back_full() {
        let start = 1_700_000_000_000;
        let recipients: Vec<String> = (0..60).map(|i| format!("ok@x{i}.test")).collect();
        let recipients: Vec<&str> = recipients.iter().map(String::as_str).collect();
        let (_dir, store) = store_with(&recipients, start).await;
        let transport = Arc::new(ByRecipient::default());
        let worker = OutboxWorker::new(
            store.clone(),
            transport.clone(),
            Arc::new(ManualClock::new(start)),
            Arc::new(Notify::new()),
            RetryPolicy::default(),
            1,
        );
        assert_eq!(
            worker.run_once().await.unwrap(),
            60,
            "25 + 25 + 10 in one step"
        );
        assert_eq!(transport.0.lock().unwrap().len(), 60, "each sent once");
        for to in &recipients {
            let row = row(&store, to).await;
            assert_eq!((row.status, row.attempts), (OutboxStatus::Sent, 1), "{to}");
        }
        assert_eq!(worker.run_once().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_loop_delivers_on_wake_and_stops_on_shutdown() {
        let (_dir, store) = store_with(&[], 0).await;
        let transport = Arc::new(ByRecipient::default());
        let wake = Arc::new(Notify::new());
        let worker = OutboxWorker::new(
            store.clone(),
            transport.clone(),
            Arc::new(crate::clock::SystemClock),
            wake.clone(),
            RetryPolicy::default(),
            1,
        );
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        worker.spawn(shutdown.clone(), &tracker);
        queue(&store, &["ok@x.test"], crate::clock::SystemClock.now()).await;
        wake.notify_one();
        tokio::time::timeout(Duration::from_secs(5), async {
            while row(&store, "ok@x.test").await.status != OutboxStatus::Sent {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("sent within 5 s of the wake-up (the timer is 30 s)");
        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the loop stops on shutdown");
    }

    /// Records each SMS; answers by number: +1… → sent, +2… → 503, anything else → 400.
    #[derive(Debug, Default)]
    struct FakeSms(Mutex<Vec<(String, String, String)>>);

    #[tonic::async_trait]
    impl Transport for FakeSms {
        async fn send(
            &self,
            _: &str,
            to: &str,
            key: &str,
            text: &[u8],
        ) -> Result<String, SendError> {
            let text = String::from_utf8_lossy(text).into_owned();
            self.0.lock().unwrap().push((to.into(), text, key.into()));
            match &to[..2] {
                "+1" => Ok("200 OK, id SM1".into()),
                "+2" => Err(SendError::Transient("SMS gateway answered 503".into())),
                _ => Err(SendError::Permanent("SMS gateway answered 400".into())),
            }
        }
    }

    fn sms_row(to: &str, text: &str, now: Millis) -> OutboxMail {
        OutboxMail {
            kind: sms::OUTBOX_KIND,
            message_id: format!("sms-{to}"),
            body: text.as_bytes().to_vec(),
            sender: String::new(),
            ..mail(to, now)
        }
    }

    async fn insert(store: &Store, rows: &[OutboxMail]) {
        let mut tx = store.begin().await.unwrap();
        for row in rows {
            tx.insert_outbox(row).await.unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn sms_rows_go_to_the_gateway_and_mail_rows_to_the_transport() {
        let start = 1_700_000_000_000;
        let (_dir, store) = store_with(&["ok@x.test"], start).await;
        insert(
            &store,
            &[
                sms_row("+15550100", "请审批 EXP-001", start),
                sms_row("+25550100", "later", start),
                sms_row("+35550100", "refused", start),
                sms_row("+45550100", "", start),
            ],
        )
        .await;
        let transport = Arc::new(ByRecipient::default());
        let gateway = Arc::new(FakeSms::default());
        let worker = OutboxWorker::new(
            store.clone(),
            transport.clone(),
            Arc::new(ManualClock::new(start)),
            Arc::new(Notify::new()),
            RetryPolicy::default(),
            2,
        )
        .with_sms_gateway(Some(gateway.clone()));
        assert_eq!(worker.run_once().await.unwrap(), 5);

        assert_eq!(*transport.0.lock().unwrap(), ["ok@x.test"]);
        let mut sent = gateway.0.lock().unwrap().clone();
        sent.sort();
        assert_eq!(
            sent,
            [
                (
                    "+15550100".into(),
                    "请审批 EXP-001".into(),
                    "sms-+15550100".into()
                ),
                ("+25550100".into(), "later".into(), "sms-+25550100".into()),
                ("+35550100".into(), "refused".into(), "sms-+35550100".into()),
                ("+45550100".into(), String::new(), "sms-+45550100".into()),
            ]
        );
        let ok = row(&store, "+15550100").await;
        assert_eq!(
            (ok.status, ok.last_error.as_str()),
            (OutboxStatus::Sent, "200 OK, id SM1")
        );
        let later = row(&store, "+25550100").await;
        assert_eq!(
            (later.status, later.last_error.as_str()),
            (OutboxStatus::TempFailed, "SMS gateway answered 503")
        );
        let refused = row(&store, "+35550100").await;
        assert_eq!(
            (refused.status, refused.last_error.as_str()),
            (OutboxStatus::PermFailed, "SMS gateway answered 400")
        );
        assert_eq!(row(&store, "ok@x.test").await.status, OutboxStatus::Sent);
    }

    #[tokio::test]
    async fn without_a_gateway_sms_rows_fail_permanently_and_mail_still_goes() {
        let start = 1_700_000_000_000;
        let (_dir, store) = store_with(&["ok@x.test"], start).await;
        insert(&store, &[sms_row("+15550100", "hi", start)]).await;
        let transport = Arc::new(ByRecipient::default());
        let worker = OutboxWorker::new(
            store.clone(),
            transport.clone(),
            Arc::new(ManualClock::new(start)),
            Arc::new(Notify::new()),
            RetryPolicy::default(),
            1,
        );
        assert_eq!(worker.run_once().await.unwrap(), 2);
        let sms = row(&store, "+15550100").await;
        assert_eq!(
            (sms.status, sms.attempts, sms.last_error.as_str()),
            (
                OutboxStatus::PermFailed,
                1,
                "no SMS gateway configured (sms.gateway_url)"
            )
        );
        assert_eq!(row(&store, "ok@x.test").await.status, OutboxStatus::Sent);
        assert_eq!(*transport.0.lock().unwrap(), ["ok@x.test"]);
        assert_eq!(store.next_mail_due().await.unwrap(), None);
    }

    #[test]
    fn no_retry_once_the_attempts_are_used_up() {
        let p = RetryPolicy::default();
        assert!(p.retry_at(0, 11).is_some());
        assert_eq!(p.retry_at(0, 12), None);
        assert_eq!(p.retry_at(0, 13), None);
        let one = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(one.retry_at(0, 1), None);
    }

    #[test]
    fn tiny_caps_are_respected() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff: Backoff {
                base_ms: 10,
                max_ms: 50,
                ..RetryPolicy::default().backoff
            },
        };
        for a in 1..5 {
            let d = p.retry_at(0, a).unwrap();
            assert!((0..=p.backoff.cap_ms(a)).contains(&d) && d <= 50, "{d}");
        }
    }
}
