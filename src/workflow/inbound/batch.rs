//! Mails are ingested in batches ([`Workflow::ingest_batch`]; the readers hand over what one
//! IMAP FETCH or one Maildir scan brought, the RPC a batch of one): ONE transaction for the
//! batch, so that a backlog costs one commit (one fsync) per batch instead of one per mail, and
//! each mail inside a savepoint of its own, so that a mail whose ingestion fails (an error, not
//! a verdict) is undone alone while the others are kept. A mail's result is `Ok` only once its
//! batch committed. The checks only read, committed state outside the transaction, a chunk of
//! mails at a time ahead of the writes; a mail about an instance that an earlier mail changed
//! after its checks began commits that change and is judged again: exactly as if it had come
//! alone, after the earlier one. The writes keep their own guards (claims, the context's one
//! use, the instance lock). Task events are published and the mailer woken after the commit.
use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
};

use super::{Plan, ReceivedMail, answers::AnswerCounts, quarantine::RolledBackWithBatch};
use crate::{
    error::{Error, Result},
    model::{InboundEmail, TaskEvent, Verdict},
    store::Tx,
    workflow::Workflow,
};

/// How often a mail whose instance changed between its checks and its write is checked again in
/// the same pass; after that it fails for now (not held against it) and its transport brings it
/// again.
const STALE_RETRIES: usize = 3;

/// Mails judged together ahead of the writes: their facts are read in a few statements for the
/// chunk (see `judge`), while the writes of the chunk before go on.
const JUDGED_TOGETHER: usize = 32;

/// The first chunk of a batch: the writes wait for it.
const JUDGED_FIRST: usize = 4;

/// At most this many mails per transaction: a PostgreSQL backend caches 64 subtransaction ids,
/// one per written savepoint; beyond that every snapshot in the database gets slower.
const MAX_MAILS_PER_TRANSACTION: usize = 50;

/// The savepoint each mail of a batch is written under (one at a time).
const MAIL_SAVEPOINT: &str = "rf_mail";

/// Mails being ingested together: the open transaction, and what happens once it commits.
#[derive(Debug, Default)]
pub(super) struct Batch {
    tx: Option<Tx>,
    /// The current mail has opened its savepoint in `tx`.
    in_mail: bool,
    /// What the current mail does once committed (dropped when it is undone).
    pub(super) mail: MailEffects,
    /// Instances changed in the open transaction.
    touched: HashSet<String>,
    published: Vec<TaskEvent>,
    wake_mailer: bool,
    /// The answer budgets as the open transaction sees them.
    answers: AnswerCounts,
    results: Vec<Result<InboundEmail>>,
    /// Indices of `results` written in the open transaction: `Ok` until its commit fails.
    uncommitted: Vec<usize>,
}

/// The effects of one mail that wait for the commit.
#[derive(Debug, Default)]
pub(super) struct MailEffects {
    pub(super) published: Vec<TaskEvent>,
    pub(super) wake_mailer: bool,
    /// The instance the mail changed.
    pub(super) touched: Option<String>,
    /// The sender (lower case) the mail queued an answer to.
    pub(super) answered: Option<String>,
}

impl Batch {
    /// The open transaction (the current mail's savepoint opened by [`Workflow::mail_tx`]) and
    /// the answer budgets it sees.
    pub(super) fn parts(&mut self) -> Result<(&mut Tx, &mut AnswerCounts)> {
        match self.tx.as_mut() {
            Some(tx) => Ok((tx, &mut self.answers)),
            None => Err(Error::Internal(anyhow::anyhow!(
                "the batch has no transaction"
            ))),
        }
    }

    /// Drops the open transaction (it rolls back): every mail written in it fails with `why`.
    fn abandon(&mut self, why: &Error) {
        self.tx = None;
        self.in_mail = false;
        self.mail = MailEffects::default();
        self.touched.clear();
        self.published.clear();
        self.wake_mailer = false;
        self.answers = AnswerCounts::default();
        for i in self.uncommitted.drain(..) {
            if let Some(slot) = self.results.get_mut(i) {
                *slot = Err(Error::Internal(anyhow::Error::new(RolledBackWithBatch(
                    format!("{why:#}"),
                ))));
            }
        }
    }
}

impl Workflow {
    /// Records and, when it decides a task, applies one received mail (a batch of one).
    /// `delivered_to`: the envelope recipient (plus address) when the transport knows it.
    pub async fn ingest(
        &self,
        raw: &[u8],
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<InboundEmail> {
        let mail = ReceivedMail {
            raw,
            delivered_to,
            transport,
        };
        single(self.ingest_batch(&[mail]).await)
    }

    /// Records and applies received mails in order, in one transaction (see the module
    /// documentation): one result per mail, `Ok` when it was committed with its effect, `Err`
    /// when it was not (nothing of it was applied: it can be ingested again).
    pub async fn ingest_batch(&self, mails: &[ReceivedMail<'_>]) -> Vec<Result<InboundEmail>> {
        // What only reads (the checks) runs a chunk ahead, while the writes follow in order in
        // the batch's transaction. A plan remembers how many mails were committed when its
        // reading began: one read before the commit of an earlier mail that changed its
        // instance is judged again.
        let committed = AtomicUsize::new(0);
        let (plans_tx, mut plans_rx) =
            tokio::sync::mpsc::channel::<(usize, Result<Plan>)>(JUDGED_TOGETHER);
        let judging = async {
            // Small chunks first, so that the writes start soon; larger ones once they run.
            let (mut start, mut size) = (0, JUDGED_FIRST);
            while start < mails.len() {
                let end = (start + size).min(mails.len());
                let since = committed.load(Ordering::Acquire);
                for plan in self.judge_chunk(&mails[start..end]).await {
                    if plans_tx.send((since, plan)).await.is_err() {
                        return;
                    }
                }
                (start, size) = (end, (size * 2).min(JUDGED_TOGETHER));
            }
        };
        let writing = async {
            let mut batch = Batch::default();
            // The instances changed so far, each with the index of the last mail that did.
            let mut changed: HashMap<String, usize> = HashMap::new();
            for (i, mail) in mails.iter().enumerate() {
                if batch.uncommitted.len() >= MAX_MAILS_PER_TRANSACTION {
                    self.commit_batch(&mut batch).await;
                    committed.store(batch.results.len(), Ordering::Release);
                }
                let (since, plan) = match plans_rx.recv().await {
                    Some(judged) => judged,
                    None => (i, self.judge_one(mail).await),
                };
                let stale = plan.as_ref().is_ok_and(|plan| {
                    changed
                        .get(&plan.record.instance_id)
                        .is_some_and(|&by| by >= since)
                });
                let plan = if stale {
                    // Read before an earlier mail's change of its instance was committed:
                    // commit it, then judge this mail again, as if it had come alone after it.
                    self.commit_batch(&mut batch).await;
                    committed.store(batch.results.len(), Ordering::Release);
                    self.judge_one(mail).await
                } else {
                    plan
                };
                let mut result = match plan {
                    Ok(plan) => self.write(&mut batch, plan).await,
                    Err(e) => Err(e),
                };
                for _ in 0..STALE_RETRIES {
                    if !matches!(result, Err(Error::Aborted(_))) {
                        break;
                    }
                    // Another writer changed the instance between this mail's checks (where its
                    // completion was computed) and its write: undo it, commit what came before,
                    // and check it again from the new state, as if it had just arrived.
                    self.drop_mail(&mut batch).await;
                    self.commit_batch(&mut batch).await;
                    committed.store(batch.results.len(), Ordering::Release);
                    result = match self.judge_one(mail).await {
                        Ok(plan) => self.write(&mut batch, plan).await,
                        Err(e) => Err(e),
                    };
                }
                let instance = batch.mail.touched.clone();
                self.end_mail(&mut batch, result).await;
                if let Some(instance) = instance
                    && batch.touched.contains(&instance)
                {
                    changed.insert(instance, i);
                }
            }
            self.commit_batch(&mut batch).await;
            batch
        };
        let ((), batch) = tokio::join!(judging, writing);
        let mut results = batch.results;
        // A mail that failed (an error, not a verdict) is tried again by its transport; one
        // that keeps failing is recorded as quarantined instead, so it is moved out of the way.
        for (slot, mail) in results.iter_mut().zip(mails) {
            if let Err(error) = slot
                && let Some(record) = self.quarantine_if_failing(mail, error).await
            {
                *slot = Ok(record);
            }
        }
        results
    }

    /// Judges one mail alone (checked again after a change of its instance).
    async fn judge_one(&self, mail: &ReceivedMail<'_>) -> Result<Plan> {
        single(self.judge_chunk(std::slice::from_ref(mail)).await)
    }

    /// Records a mail over [`super::MAX_INBOUND_BYTES`] as `too_large`, read from its header
    /// alone (`header`: the bytes up to the blank line; the body is never fetched), and tells the
    /// sender the limit. `size`: the whole mail's. The content hash that makes a re-fetch a
    /// duplicate is the header's. A batch of one.
    pub async fn ingest_too_large(
        &self,
        header: &[u8],
        size: u64,
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<InboundEmail> {
        let mut batch = Batch::default();
        let result = match self
            .judge_too_large(header, size, delivered_to, transport)
            .await
        {
            Ok(mut plan) => match self
                .answer_facts(&plan.record, None, &Default::default())
                .await
            {
                Ok(facts) => {
                    plan.facts = facts;
                    self.write(&mut batch, plan).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        self.end_mail(&mut batch, result).await;
        self.commit_batch(&mut batch).await;
        match single(batch.results) {
            // Counted like any failing mail (by the header's hash, as its log row is).
            Err(error) => {
                let mail = ReceivedMail {
                    raw: header,
                    delivered_to,
                    transport,
                };
                match self.quarantine_if_failing(&mail, &error).await {
                    Some(record) => Ok(record),
                    None => Err(error),
                }
            }
            ok => ok,
        }
    }

    /// The batch's transaction with the current mail's savepoint open (both opened on first
    /// use).
    pub(super) async fn mail_tx<'b>(&self, batch: &'b mut Batch) -> Result<&'b mut Tx> {
        if batch.tx.is_none() {
            batch.tx = Some(self.store.begin().await?);
            batch.in_mail = false;
        }
        if !batch.in_mail {
            let opened = match batch.tx.as_mut() {
                Some(tx) => tx.savepoint(MAIL_SAVEPOINT).await,
                None => Ok(()),
            };
            if let Err(e) = opened {
                batch.abandon(&e);
                return Err(e);
            }
            batch.in_mail = true;
        }
        Ok(batch.parts()?.0)
    }

    /// Undoes what the current mail wrote so far; its savepoint stays open for what it writes
    /// instead (its verdict).
    pub(super) async fn undo_mail(&self, batch: &mut Batch) -> Result<()> {
        if batch.in_mail
            && let Some(tx) = batch.tx.as_mut()
        {
            tx.rollback_to_savepoint(MAIL_SAVEPOINT).await?;
        }
        batch.mail = MailEffects::default();
        Ok(())
    }

    /// Undoes the current mail without recording a result for it (it is about to be written
    /// again). A savepoint that cannot be rolled back abandons the transaction.
    async fn drop_mail(&self, batch: &mut Batch) {
        batch.mail = MailEffects::default();
        if std::mem::replace(&mut batch.in_mail, false)
            && let Some(tx) = batch.tx.as_mut()
        {
            let undone = match tx.rollback_to_savepoint(MAIL_SAVEPOINT).await {
                Ok(()) => tx.release_savepoint(MAIL_SAVEPOINT).await,
                Err(e) => Err(e),
            };
            if let Err(e) = undone {
                batch.abandon(&e);
            }
        }
    }

    /// Ends the current mail: kept (savepoint released, its effects wait for the commit) or, on
    /// an error, undone alone. A savepoint that cannot be ended abandons the transaction.
    async fn end_mail(&self, batch: &mut Batch, result: Result<InboundEmail>) {
        let effects = std::mem::take(&mut batch.mail);
        let opened = std::mem::replace(&mut batch.in_mail, false);
        let mut result = result;
        if opened && let Some(tx) = batch.tx.as_mut() {
            let ended = if result.is_ok() {
                tx.release_savepoint(MAIL_SAVEPOINT).await
            } else {
                match tx.rollback_to_savepoint(MAIL_SAVEPOINT).await {
                    Ok(()) => tx.release_savepoint(MAIL_SAVEPOINT).await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = ended {
                tracing::error!(error = %format!("{e:#}"), "ending a received mail's savepoint failed: its batch is rolled back");
                batch.abandon(&e);
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "ingesting a received mail failed: it was undone, the rest of its batch is kept");
        } else if opened && batch.tx.is_some() {
            batch.uncommitted.push(batch.results.len());
            batch.published.extend(effects.published);
            batch.wake_mailer |= effects.wake_mailer;
            batch.touched.extend(effects.touched);
            if let Some(sender) = &effects.answered {
                batch.answers.add(sender);
            }
        }
        batch.results.push(result);
    }

    /// Commits the open transaction; then logs its mails, publishes their task events and wakes
    /// the mailer. A failed commit fails every mail written in it.
    async fn commit_batch(&self, batch: &mut Batch) {
        let Some(tx) = batch.tx.take() else {
            return;
        };
        batch.in_mail = false;
        batch.touched.clear();
        batch.answers = AnswerCounts::default();
        let published = std::mem::take(&mut batch.published);
        let wake = std::mem::take(&mut batch.wake_mailer);
        match tx.commit().await {
            Ok(()) => {
                for i in batch.uncommitted.drain(..) {
                    if let Some(Ok(record)) = batch.results.get(i) {
                        log_committed(record);
                    }
                }
                self.publish(published);
                if wake {
                    self.mailer.wake().notify_one();
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), mails = batch.uncommitted.len(), "committing a batch of received mail failed: none of it was applied");
                batch.abandon(&e);
            }
        }
    }
}

/// The one result of a batch of one.
fn single<T>(mut results: Vec<Result<T>>) -> Result<T> {
    results.pop().unwrap_or_else(|| {
        Err(Error::Internal(anyhow::anyhow!(
            "a batch of one mail gave no result"
        )))
    })
}

/// The log line of a received mail, once its batch committed.
fn log_committed(record: &InboundEmail) {
    match record.verdict {
        Verdict::Applied => {
            tracing::info!(inbound = %record.id, task = %record.task_id, reason = %record.reason, "reply applied");
        }
        Verdict::Bounce if record.reason.ends_with("; marked failed") => {
            tracing::warn!(inbound = %record.id, reason = %record.reason, "outbound mail bounced");
        }
        verdict => {
            tracing::info!(inbound = %record.id, verdict = verdict.as_str(), reason = %record.reason, "reply recorded");
        }
    }
}
