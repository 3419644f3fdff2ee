//! Email approval, inbound (DESIGN §5): every received mail gets exactly one row in the inbound
//! log with a verdict. A reply is correlated (plus-address token, In-Reply-To/References to our
//! Message-IDs, the body's token line, the subject tag), verified (token HMAC, sender, validity,
//! one use, task still open and still the approver's), read with the task's outcomes, and — when
//! it decides — applied in the same transaction that records it and claims its Message-ID and
//! content hash, so a reply is applied once even when fetched twice.
//!
//! The same holds for the other effects a mail can have: a `delegate <email>` reply hands the
//! task on ([`Workflow::reassign_in`]) and a bounce marks the returned mail failed, each in the
//! transaction of its log row. A mail over [`MAX_INBOUND_BYTES`] is judged by its header alone.
//!
//! Mails are ingested in batches ([`Workflow::ingest_batch`]; the readers hand over what one
//! IMAP FETCH or one Maildir scan brought, the RPC a batch of one): ONE transaction for the
//! batch, so that a backlog costs one commit (one fsync) per batch instead of one per mail, and
//! each mail inside a savepoint of its own, so that a mail whose ingestion fails (an error, not
//! a verdict) is undone alone while the others are kept. A mail's result is `Ok` only once its
//! batch committed. The checks only read, committed state outside the transaction, and run a
//! few mails ahead of the writes; a mail about an instance that an earlier mail changed after
//! its checks began commits that change and is judged again: exactly as if it had come alone,
//! after the earlier one. The writes keep their own guards (claims, the context's one use, the
//! instance lock). Task events are published and the mailer woken after the commit.
use std::{
    collections::{HashMap, HashSet},
    sync::atomic::{AtomicUsize, Ordering},
};

use futures_util::future::join_all;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Actor, Workflow, new_id,
    tasks::{CompleteTask, Prepared, ReassignAuthority, Reassignment},
};
use crate::{
    engine::definition::{NodeKind, UserTaskSpec},
    error::{Error, Result},
    mail::{
        reply::{self, BounceReport, Correlation, OutcomeWords, ReplyKind, ReplyReading},
        token::{self, TokenError},
    },
    model::{
        ApprovalContext, ApprovalStatus, CompletedVia, InboundEmail, Task, TaskEvent, TaskStatus,
        User, Verdict,
    },
    store::Tx,
};

/// Larger mails are not read: only their header is, for the log and the answer (no approval
/// reply is this big).
pub const MAX_INBOUND_BYTES: usize = 10 * 1024 * 1024;

/// Of a mail over the limit, at most this much header is read.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// How a reply was tied to its approval context.
#[derive(Debug, Clone)]
struct Correlated {
    context: ApprovalContext,
    path: &'static str,
    token: Option<token::TokenParts>,
}

/// What the checks decided before anything is written.
#[derive(Debug)]
struct Judgement {
    verdict: Verdict,
    reason: String,
    /// Not answered whatever the verdict (a robot's mail judged on its header alone).
    silent: bool,
}

fn judged(verdict: Verdict, reason: impl Into<String>) -> Judgement {
    Judgement {
        verdict,
        reason: reason.into(),
        silent: false,
    }
}

/// One received mail, as a transport hands it to [`Workflow::ingest_batch`].
#[derive(Debug, Clone, Copy)]
pub struct ReceivedMail<'a> {
    pub raw: &'a [u8],
    /// The envelope recipient (plus address) when the transport knows it.
    pub delivered_to: Option<&'a str>,
    /// `imap`, `maildir`, `rpc`: kept in the log row.
    pub transport: &'a str,
}

/// The savepoint each mail of a batch is written under (one at a time).
const MAIL_SAVEPOINT: &str = "rf_mail";

/// Mails being ingested together: the open transaction, and what happens once it commits.
#[derive(Debug, Default)]
struct Batch {
    tx: Option<Tx>,
    /// The current mail has opened its savepoint in `tx`.
    in_mail: bool,
    /// What the current mail does once committed (dropped when it is undone).
    mail: MailEffects,
    /// Instances changed in the open transaction.
    touched: HashSet<String>,
    published: Vec<TaskEvent>,
    wake_mailer: bool,
    results: Vec<Result<InboundEmail>>,
    /// Indices of `results` written in the open transaction: `Ok` until its commit fails.
    uncommitted: Vec<usize>,
}

/// The effects of one mail that wait for the commit.
#[derive(Debug, Default)]
struct MailEffects {
    published: Vec<TaskEvent>,
    wake_mailer: bool,
    /// The instance the mail changed.
    touched: Option<String>,
}

impl Batch {
    /// Drops the open transaction (it rolls back): every mail written in it fails with `why`.
    fn abandon(&mut self, why: &Error) {
        self.tx = None;
        self.in_mail = false;
        self.mail = MailEffects::default();
        self.touched.clear();
        self.published.clear();
        self.wake_mailer = false;
        for i in self.uncommitted.drain(..) {
            if let Some(slot) = self.results.get_mut(i) {
                *slot = Err(Error::Internal(anyhow::Error::new(RolledBackWithBatch(
                    format!("{why:#}"),
                ))));
            }
        }
    }
}

/// What an accepted reply does, in the transaction that records it.
#[derive(Debug)]
enum Effect {
    /// `prepared`: the completion computed by the checks, before the write transaction.
    Decide {
        request: CompleteTask,
        prepared: Option<Box<Prepared>>,
    },
    Delegate {
        to: User,
        comment: String,
    },
}

/// The result of every check (committed state only): what to write for one mail.
#[derive(Debug)]
struct Plan {
    /// The log row so far; `instance_id` names the instance the mail is about, if any.
    record: InboundEmail,
    action: Action,
    facts: AnswerFacts,
}

impl Plan {
    fn new(record: InboundEmail, action: Action) -> Self {
        Self {
            record,
            action,
            facts: AnswerFacts::default(),
        }
    }

    /// The task as the checks read it (spares the answer reading it again).
    fn with_task(mut self, task: Task) -> Self {
        self.facts.task = Some(task);
        self
    }
}

#[derive(Debug)]
enum Action {
    /// A verdict that changes nothing else.
    Record(Judgement),
    /// Boxed: far larger than the other plans.
    Apply(Box<(ApprovalContext, Effect)>),
    /// A bounce that names sent mail of ours as failed.
    Bounce(BounceReport),
}

/// Outcome of [`Workflow::verify`].
#[derive(Debug)]
enum Verified {
    Refused(Judgement),
    /// Every check passed; the task as read.
    Open(Box<Task>),
}

/// How often a mail whose instance changed between its checks and its write is checked again in
/// the same pass; after that it fails for now (not held against it) and its transport brings it
/// again.
const STALE_RETRIES: usize = 3;

/// Mails judged at once ahead of the writes (on other connections of the pool).
const JUDGED_AT_ONCE: usize = 4;

/// At most this many mails per transaction: a PostgreSQL backend caches 64 subtransaction ids,
/// one per written savepoint; beyond that every snapshot in the database gets slower.
const MAX_MAILS_PER_TRANSACTION: usize = 50;

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
        // What only reads (the checks) runs ahead, several mails at once on other connections
        // of the pool, while the writes follow in order in the batch's transaction. A plan
        // remembers how many mails were committed when its reading began: one read before the
        // commit of an earlier mail that changed its instance is judged again.
        let committed = AtomicUsize::new(0);
        let (plans_tx, mut plans_rx) =
            tokio::sync::mpsc::channel::<(usize, Result<Plan>)>(JUDGED_AT_ONCE * 2);
        let judging = async {
            for chunk in mails.chunks(JUDGED_AT_ONCE) {
                let since = committed.load(Ordering::Acquire);
                let plans = join_all(chunk.iter().map(|mail| self.judge_with_facts(mail))).await;
                for plan in plans {
                    if plans_tx.send((since, plan)).await.is_err() {
                        return;
                    }
                }
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
                    None => (i, self.judge_with_facts(mail).await),
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
                    self.judge_with_facts(mail).await
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
                    result = match self.judge_with_facts(mail).await {
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

    async fn judge_with_facts(&self, mail: &ReceivedMail<'_>) -> Result<Plan> {
        let mut plan = self.judge(mail).await?;
        plan.facts = self
            .answer_facts(&plan.record, plan.facts.task.take())
            .await?;
        Ok(plan)
    }

    /// Everything about one mail that only reads (committed state): what to write.
    async fn judge(&self, mail: &ReceivedMail<'_>) -> Result<Plan> {
        let ReceivedMail {
            raw,
            delivered_to,
            transport,
        } = *mail;
        if raw.len() > MAX_INBOUND_BYTES {
            let size = u64::try_from(raw.len()).unwrap_or(u64::MAX);
            return self
                .judge_too_large(header_block(raw), size, delivered_to, transport)
                .await;
        }
        let mut record = new_record(raw, raw.len() as u64, transport, self.now());
        let first = read_contained(
            raw,
            &OutcomeWords::defaults(&["approve", "reject"]),
            delivered_to,
        )?;
        describe(&mut record, &first);
        record.subject = subject_of(raw);
        if first.correlation.from_count > 1 {
            // Which of them answered cannot be told: nothing is decided, and nobody answered
            // (an answer could go to a bystander named in the header).
            let mut judgement = judged(
                Verdict::SeveralFrom,
                format!(
                    "the message names {} From mailboxes; a reply must come from exactly one",
                    first.correlation.from_count
                ),
            );
            judgement.silent = true;
            return Ok(Plan::new(record, Action::Record(judgement)));
        }
        match first.kind {
            ReplyKind::AutoReply => {
                return Ok(Plan::new(
                    record,
                    Action::Record(judged(
                        Verdict::AutoReply,
                        "an automatic reply: logged and ignored",
                    )),
                ));
            }
            ReplyKind::Bounce => {
                let report = first.bounce.clone().unwrap_or_default();
                return self.judge_bounce(record, report).await;
            }
            ReplyKind::Unparseable => {
                return Ok(Plan::new(
                    record,
                    Action::Record(judged(
                        Verdict::Unparseable,
                        "no readable text in the message",
                    )),
                ));
            }
            _ => {}
        }
        let Some(found) = self.correlate(&first.correlation).await? else {
            return Ok(Plan::new(
                record,
                Action::Record(judged(
                    Verdict::UnknownToken,
                    "no reply token, Message-ID or subject tag of ours was found",
                )),
            ));
        };
        record.context_id = found.context.id.clone();
        record.task_id = found.context.task_id.clone();
        record.instance_id = found.context.instance_id.clone();
        // Before anything else about the approval: a sender that is not proven is not asked
        // about its approval either.
        if let Err(why) = self.mailer.inbound_auth().check(
            &first.correlation.authentication_results,
            &first.correlation.from,
        ) {
            return Ok(Plan::new(
                record,
                Action::Record(judged(Verdict::AuthFailed, why)),
            ));
        }
        let now = self.now();
        let task = match self.verify(&found, &first.correlation, now).await? {
            Verified::Refused(judgement) => {
                return Ok(Plan::new(record, Action::Record(judgement)));
            }
            Verified::Open(task) => *task,
        };
        // Read again with the outcomes the task really has.
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let spec: Option<&UserTaskSpec> = match graph.node(&task.activity_id).map(|(_, n)| &n.kind)
        {
            Some(NodeKind::UserTask(spec)) => Some(spec),
            _ => None,
        };
        let outcomes = spec.map_or_else(
            || OutcomeWords::defaults(&["approve", "reject"]),
            outcome_words,
        );
        let reading = read_contained(raw, &outcomes, delivered_to)?;
        describe(&mut record, &reading);
        match (reading.kind, reading.outcome.as_deref()) {
            (ReplyKind::Decision, Some(outcome)) => {
                let request = CompleteTask {
                    task_id: found.context.task_id.clone(),
                    outcome: outcome.to_string(),
                    comment: reading.comment.clone(),
                    variables: Default::default(),
                    request_id: String::new(),
                    via: CompletedVia::Email,
                };
                // Conditions are evaluated here, while only reading, not under the write lock.
                let prepared = self
                    .prepare_completion(
                        &Actor::new(found.context.approver.clone()),
                        &found.context.instance_id,
                        &request,
                    )
                    .await?
                    .map(Box::new);
                let effect = Effect::Decide { request, prepared };
                Ok(
                    Plan::new(record, Action::Apply(Box::new((found.context, effect))))
                        .with_task(task),
                )
            }
            (ReplyKind::Ambiguous, _) => {
                let named = reading.ambiguous.join(", ");
                Ok(Plan::new(
                    record,
                    Action::Record(judged(
                        Verdict::Ambiguous,
                        format!("the reply names several outcomes: {named}"),
                    )),
                ))
            }
            (ReplyKind::Delegate, _) => {
                let allowed = spec.is_some_and(|s| s.allow_delegate);
                self.judge_delegate(record, found.context, allowed, &reading)
                    .await
            }
            _ => Ok(Plan::new(
                record,
                Action::Record(judged(
                    Verdict::NoDecision,
                    "no decision on the first line of the reply",
                )),
            )),
        }
    }

    /// Records a mail over [`MAX_INBOUND_BYTES`] as `too_large`, read from its header alone
    /// (`header`: the bytes up to the blank line; the body is never fetched), and tells the
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
            Ok(mut plan) => match self.answer_facts(&plan.record, None).await {
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

    async fn judge_too_large(
        &self,
        header: &[u8],
        size: u64,
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<Plan> {
        let header = &header[..header.len().min(MAX_HEADER_BYTES)];
        let mut record = new_record(header, size, transport, self.now());
        let reading = read_contained(
            header,
            &OutcomeWords::defaults(&["approve", "reject"]),
            delivered_to,
        )?;
        describe(&mut record, &reading);
        record.subject = subject_of(header);
        let limit = mib(MAX_INBOUND_BYTES as u64);
        record.explanation = vec![format!(
            "only the header was read: the message is {size} bytes, over the limit of {limit}"
        )];
        if let Some(found) = self.correlate(&reading.correlation).await? {
            record.context_id = found.context.id;
            record.task_id = found.context.task_id;
            record.instance_id = found.context.instance_id;
        }
        let mut judgement = judged(
            Verdict::TooLarge,
            format!(
                "the message is {}; replies of up to {limit} are read",
                mib(size)
            ),
        );
        // An out-of-office or a bounce this large is still a robot's: never answered.
        judgement.silent = matches!(reading.kind, ReplyKind::AutoReply | ReplyKind::Bounce);
        Ok(Plan::new(record, Action::Record(judgement)))
    }

    async fn correlate(&self, c: &Correlation) -> Result<Option<Correlated>> {
        if let Some(text) = &c.token
            && let Some(parts) = token::parse(text)
            && let Some(context) = self.store.approval_context(&parts.context_id).await?
        {
            let path = if c.token_source == "plus_address" {
                "plus_address"
            } else {
                "body_token"
            };
            return Ok(Some(Correlated {
                context,
                path,
                token: Some(parts),
            }));
        }
        for message_id in c.in_reply_to.iter().chain(&c.references) {
            if let Some(context_id) = our_context_id(message_id)
                && let Some(context) = self.store.approval_context(&context_id).await?
            {
                return Ok(Some(Correlated {
                    context,
                    path: "in_reply_to",
                    token: None,
                }));
            }
        }
        if let Some(tag) = &c.subject_tag
            && let Some(context) = self.store.approval_by_tag(tag).await?
        {
            return Ok(Some(Correlated {
                context,
                path: "subject_tag",
                token: None,
            }));
        }
        Ok(None)
    }

    /// Every check of DESIGN §5 but the reading itself.
    async fn verify(&self, found: &Correlated, c: &Correlation, now: i64) -> Result<Verified> {
        let context = &found.context;
        let Some(parts) = &found.token else {
            return Ok(Verified::Refused(judged(
                Verdict::UnknownToken,
                format!(
                    "found through {} but the reply token is missing: reply to the approval mail and keep its last line",
                    found.path
                ),
            )));
        };
        // Keyed by the context's own key id, whatever key the token names.
        match token::verify(
            self.mailer.keys(),
            parts,
            context.kid,
            &context.approver_email,
            context.valid_until,
        ) {
            Ok(()) => {}
            Err(TokenError::UnknownKey | TokenError::BadSignature | TokenError::WrongKey) => {
                return Ok(Verified::Refused(judged(
                    Verdict::BadSignature,
                    "the reply token's signature does not match",
                )));
            }
        }
        // The address the approval was sent to, or an alias the approver had then — and still
        // the approver's now. An address added since (UpsertUser) never decides this context.
        let from = c.from.to_lowercase();
        let issued_to = from == context.approver_email.to_lowercase()
            || context.approver_aliases.contains(&from);
        let sender = self.store.user_by_address(&c.from).await?;
        if !issued_to || sender.as_ref().is_none_or(|u| u.id != context.approver) {
            return Ok(Verified::Refused(judged(
                Verdict::SenderMismatch,
                format!(
                    "{} is not the address this approval was sent to, nor one of the approver's aliases when it was sent",
                    c.from
                ),
            )));
        }
        match context.status {
            ApprovalStatus::Used => {
                return Ok(Verified::Refused(self.already_handled(context).await?));
            }
            // A context is revoked when its task closes too (withdrawn, cancelled, decided
            // through the API): then the approver is told what became of the task.
            ApprovalStatus::Revoked
                if self.task(&context.task_id).await?.status != TaskStatus::Open =>
            {
                return Ok(Verified::Refused(self.already_handled(context).await?));
            }
            ApprovalStatus::Revoked => {
                return Ok(Verified::Refused(judged(
                    Verdict::Revoked,
                    format!("the approval was revoked: {}", context.revoke_reason),
                )));
            }
            ApprovalStatus::Expired => {
                return Ok(Verified::Refused(judged(
                    Verdict::Expired,
                    "the approval has expired",
                )));
            }
            ApprovalStatus::Pending => {}
        }
        if context.valid_until <= now {
            return Ok(Verified::Refused(judged(
                Verdict::Expired,
                format!(
                    "replies were accepted until {}",
                    crate::clock::rfc3339(context.valid_until)
                ),
            )));
        }
        let task = self.task(&context.task_id).await?;
        if task.status != TaskStatus::Open || task.assignee != context.approver {
            return Ok(Verified::Refused(self.already_handled(context).await?));
        }
        Ok(Verified::Open(Box::new(task)))
    }

    async fn already_handled(&self, context: &ApprovalContext) -> Result<Judgement> {
        let task = self.task(&context.task_id).await?;
        let reason = match (task.status, task.completed_at) {
            (TaskStatus::Completed, Some(at)) => format!(
                "already handled by {} at {} ({})",
                task.completed_by,
                crate::clock::rfc3339(at),
                task.outcome
            ),
            (TaskStatus::Open, _) => format!("the task is now assigned to {}", task.assignee),
            (status, _) => format!("the task is {}", status.as_str()),
        };
        let verdict = if context.status == ApprovalStatus::Used {
            Verdict::AlreadyUsed
        } else {
            Verdict::TaskClosed
        };
        Ok(judged(verdict, reason))
    }

    /// A `delegate <email>` reply whose checks passed: refused with a reason (nothing changes)
    /// unless the task allows it and the address is another registered user's.
    async fn judge_delegate(
        &self,
        record: InboundEmail,
        context: ApprovalContext,
        allowed: bool,
        reading: &ReplyReading,
    ) -> Result<Plan> {
        let address = reading.delegate_to.clone().unwrap_or_default();
        if !allowed {
            return Ok(Plan::new(
                record,
                Action::Record(judged(
                    Verdict::NoDecision,
                    format!(
                        "this task cannot be handed on by mail (its process does not allow it: replyflow:allowDelegate); it was not delegated to {address}"
                    ),
                )),
            ));
        }
        let Some(user) = self.store.user_by_address(&address).await? else {
            return Ok(Plan::new(
                record,
                Action::Record(judged(
                    Verdict::NoDecision,
                    format!(
                        "{address} is not the address of a registered user: the task was not delegated"
                    ),
                )),
            ));
        };
        if user.id == context.approver {
            return Ok(Plan::new(
                record,
                Action::Record(judged(
                    Verdict::NoDecision,
                    format!(
                        "{address} is your own address: the task is already yours, nothing was delegated"
                    ),
                )),
            ));
        }
        let effect = Effect::Delegate {
            to: user,
            comment: reading.comment.clone(),
        };
        Ok(Plan::new(
            record,
            Action::Apply(Box::new((context, effect))),
        ))
    }

    /// The effect (a decision or a hand-over), the context's one use, the log row, the answer and
    /// the claims: one transaction.
    async fn apply(
        &self,
        batch: &mut Batch,
        mut record: InboundEmail,
        facts: &AnswerFacts,
        context: &ApprovalContext,
        effect: &Effect,
    ) -> Result<InboundEmail> {
        let now = self.now();
        let tx = self.mail_tx(batch).await?;
        if let Some(first) = self.claim(tx, &record).await? {
            self.undo_mail(batch).await?;
            return self
                .record(
                    batch,
                    record,
                    facts,
                    judged(Verdict::Duplicate, format!("already received as {first}")),
                )
                .await;
        }
        if !tx
            .close_approval(&context.id, ApprovalStatus::Used, "", now)
            .await?
        {
            self.undo_mail(batch).await?;
            let judgement = self.already_handled(context).await?;
            return self.record(batch, record, facts, judgement).await;
        }
        let actor = Actor::new(context.approver.clone());
        let done = match effect {
            Effect::Decide { request, prepared } => self
                .complete_in_prepared(
                    tx,
                    &actor,
                    &context.instance_id,
                    request,
                    now,
                    prepared.as_deref(),
                )
                .await
                .map(|(_, published)| {
                    record.outcome = request.outcome.clone();
                    record.comment = request.comment.clone();
                    (format!("task completed: {}", request.outcome), published)
                }),
            Effect::Delegate { to, comment } => {
                let reassignment = Reassignment {
                    task_id: &context.task_id,
                    instance_id: &context.instance_id,
                    new_assignee: &to.id,
                    actor: &actor,
                    authority: ReassignAuthority::Assignee,
                    comment,
                    via: "email",
                };
                self.reassign_in(tx, &reassignment, now).await.map(|event| {
                    record.comment = comment.to_string();
                    let name = if to.display_name.is_empty() {
                        String::new()
                    } else {
                        format!("{}, ", to.display_name)
                    };
                    (
                        format!("task delegated to {} ({name}{})", to.id, to.email),
                        vec![event],
                    )
                })
            }
        };
        match done {
            Ok((reason, published)) => {
                record.verdict = Verdict::Applied;
                record.reason = reason;
                record.answered = self.answer(tx, &record, facts, now).await?;
                tx.insert_inbound(&record).await?;
                batch.mail = MailEffects {
                    published,
                    wake_mailer: true,
                    touched: Some(context.instance_id.clone()),
                };
                Ok(record)
            }
            Err(Error::FailedPrecondition(_) | Error::PermissionDenied(_)) => {
                self.undo_mail(batch).await?;
                let judgement = self.already_handled(context).await?;
                self.record(batch, record, facts, judgement).await
            }
            Err(Error::InvalidArgument { reason, .. }) => {
                self.undo_mail(batch).await?;
                self.record(batch, record, facts, judged(Verdict::NoDecision, reason))
                    .await
            }
            Err(other) => Err(other),
        }
    }

    /// A bounce: tied to the approval it names; one without a failure or without a mail named
    /// is only logged.
    async fn judge_bounce(&self, mut record: InboundEmail, report: BounceReport) -> Result<Plan> {
        for id in &report.original_message_ids {
            if let Some(context_id) = our_context_id(id)
                && let Some(context) = self.store.approval_context(&context_id).await?
            {
                record.context_id = context.id;
                record.task_id = context.task_id;
                record.instance_id = context.instance_id;
                break;
            }
        }
        let (diagnostic, to) = bounce_words(&report);
        if !report.failed || report.original_message_ids.is_empty() {
            let reason = if report.original_message_ids.is_empty() {
                format!("a delivery status notification that names no mail of ours ({diagnostic})")
            } else {
                format!(
                    "a delivery notice without a failure (delayed or relayed) about <{}>{to}: nothing marked",
                    report.original_message_ids.join(">, <")
                )
            };
            return Ok(Plan::new(
                record,
                Action::Record(judged(Verdict::Bounce, reason)),
            ));
        }
        Ok(Plan::new(record, Action::Bounce(report)))
    }

    /// A bounce of a sent mail: every sent mail it names is marked failed for good (its
    /// reminder fallback queued) in the transaction of the log row. Never answered.
    async fn write_bounce(
        &self,
        batch: &mut Batch,
        mut record: InboundEmail,
        facts: &AnswerFacts,
        report: &BounceReport,
    ) -> Result<InboundEmail> {
        let (diagnostic, to) = bounce_words(report);
        let now = self.now();
        let tx = self.mail_tx(batch).await?;
        if let Some(first) = self.claim(tx, &record).await? {
            self.undo_mail(batch).await?;
            return self
                .record(
                    batch,
                    record,
                    facts,
                    judged(Verdict::Duplicate, format!("already received as {first}")),
                )
                .await;
        }
        let error = format!("bounced{to}: {diagnostic}");
        let mut failed = Vec::new();
        for id in &report.original_message_ids {
            // Our outbox keeps Message-IDs as written in the header, in angle brackets.
            if tx
                .fail_sent_mail(&format!("<{id}>"), &error, now)
                .await?
                .is_some()
            {
                failed.push(id.as_str());
            }
        }
        record.verdict = Verdict::Bounce;
        record.reason = if failed.is_empty() {
            format!(
                "a bounce about <{}>{to}, not a sent mail of ours: nothing marked ({diagnostic})",
                report.original_message_ids.join(">, <")
            )
        } else {
            format!(
                "mail <{}>{to} bounced: {diagnostic}; marked failed",
                failed.join(">, <")
            )
        };
        record.answered = false;
        tx.insert_inbound(&record).await?;
        if !failed.is_empty() && !record.instance_id.is_empty() {
            batch.mail.touched = Some(record.instance_id.clone());
        }
        Ok(record)
    }

    /// Claims the mail's Message-ID and content hash; the id of an earlier copy if one holds them.
    async fn claim(&self, tx: &mut Tx, record: &InboundEmail) -> Result<Option<String>> {
        if !record.message_id.is_empty()
            && let Some(first) = tx
                .claim_inbound(&format!("mid:{}", record.message_id), &record.id)
                .await?
        {
            return Ok(Some(first));
        }
        tx.claim_inbound(&format!("sha256:{}", record.sha256), &record.id)
            .await
    }

    /// Writes a verdict that changes nothing else (a copy seen before becomes `duplicate`).
    async fn record(
        &self,
        batch: &mut Batch,
        mut record: InboundEmail,
        facts: &AnswerFacts,
        judgement: Judgement,
    ) -> Result<InboundEmail> {
        record.verdict = judgement.verdict;
        record.reason = judgement.reason;
        let now = self.now();
        let tx = self.mail_tx(batch).await?;
        if record.verdict != Verdict::Duplicate
            && let Some(first) = self.claim(tx, &record).await?
        {
            record.verdict = Verdict::Duplicate;
            record.reason = format!("already received as {first}");
        }
        record.answered = !judgement.silent && self.answer(tx, &record, facts, now).await?;
        tx.insert_inbound(&record).await?;
        batch.mail.wake_mailer |= record.answered;
        Ok(record)
    }

    /// Writes what [`Workflow::judge`] decided, in the batch's transaction.
    async fn write(&self, batch: &mut Batch, plan: Plan) -> Result<InboundEmail> {
        let Plan {
            record,
            action,
            facts,
        } = plan;
        match action {
            Action::Record(judgement) => self.record(batch, record, &facts, judgement).await,
            Action::Apply(accepted) => {
                let (context, effect) = &*accepted;
                self.apply(batch, record, &facts, context, effect).await
            }
            Action::Bounce(report) => self.write_bounce(batch, record, &facts, &report).await,
        }
    }

    /// The batch's transaction with the current mail's savepoint open (both opened on first
    /// use).
    async fn mail_tx<'b>(&self, batch: &'b mut Batch) -> Result<&'b mut Tx> {
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
        batch
            .tx
            .as_mut()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("the batch has no transaction")))
    }

    /// Undoes what the current mail wrote so far; its savepoint stays open for what it writes
    /// instead (its verdict).
    async fn undo_mail(&self, batch: &mut Batch) -> Result<()> {
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

mod answers;
mod quarantine;

use answers::AnswerFacts;
use quarantine::RolledBackWithBatch;

/// The one result of a batch of one.
fn single(mut results: Vec<Result<InboundEmail>>) -> Result<InboundEmail> {
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

/// A bounce's diagnostic and ` to RECIPIENT`, for its log row.
fn bounce_words(report: &BounceReport) -> (String, String) {
    let diagnostic = if report.diagnostic.is_empty() {
        "no diagnostic given".to_string()
    } else {
        report.diagnostic.clone()
    };
    let to = if report.recipient.is_empty() {
        String::new()
    } else {
        format!(" to {}", report.recipient)
    };
    (diagnostic, to)
}

/// A log row for a received mail, before any verdict.
fn new_record(hashed: &[u8], size: u64, transport: &str, now: i64) -> InboundEmail {
    InboundEmail {
        id: new_id(),
        message_id: String::new(),
        sha256: Sha256::digest(hashed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        sender: String::new(),
        subject: String::new(),
        transport: transport.to_string(),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        task_id: String::new(),
        instance_id: String::new(),
        context_id: String::new(),
        correlation: json!({}),
        verdict: Verdict::Unparseable,
        reason: String::new(),
        outcome: String::new(),
        comment: String::new(),
        delegate_to: String::new(),
        authentication_results: String::new(),
        explanation: Vec::new(),
        answered: false,
        received_at: now,
    }
}

/// [`reply::read_reply`] with a panic in the parsing libraries turned into this mail's error: it
/// is then counted, tried again and quarantined like any failing mail, instead of taking the
/// reader (and every mail behind it) down with it.
fn read_contained(
    raw: &[u8],
    outcomes: &[OutcomeWords],
    delivered_to: Option<&str>,
) -> Result<ReplyReading> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reply::read_reply(raw, outcomes, delivered_to)
    }))
    .map_err(|_| Error::Internal(anyhow::anyhow!("the reply reader panicked on this mail")))
}

fn subject_of(raw: &[u8]) -> String {
    std::panic::catch_unwind(|| {
        mail_parser::MessageParser::default()
            .parse(raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// The header block of a raw mail: up to and including the blank line that ends it, or the
/// first [`MAX_HEADER_BYTES`] when there is none that early.
pub fn header_block(raw: &[u8]) -> &[u8] {
    let head = &raw[..raw.len().min(MAX_HEADER_BYTES)];
    let crlf = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4);
    let lf = head.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(head.len()),
    };
    &head[..end]
}

/// A size for people: `10 MiB`, `10.5 MiB`.
fn mib(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// Our Message-IDs are `<rf.<context id>.<n>@domain>`.
fn our_context_id(message_id: &str) -> Option<String> {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let rest = inner.strip_prefix("rf.")?;
    let (id, _) = rest.split_once('.')?;
    (id.len() == 13 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

fn describe(record: &mut InboundEmail, reading: &ReplyReading) {
    let c = &reading.correlation;
    record.message_id = c.message_id.clone();
    record.sender = c.from.clone();
    record.authentication_results = c.authentication_results.join("\n");
    record.correlation = serde_json::to_value(c).unwrap_or_default();
    record.explanation = reading.explanation.clone();
    record.delegate_to = reading.delegate_to.clone().unwrap_or_default();
}

fn outcome_words(spec: &crate::engine::definition::UserTaskSpec) -> Vec<OutcomeWords> {
    let ids: Vec<&str> = spec.outcomes.iter().map(|o| o.id.as_str()).collect();
    let mut words = OutcomeWords::defaults(&ids);
    for (word, spec) in words.iter_mut().zip(&spec.outcomes) {
        word.label = spec.label.clone();
        for keyword in &spec.keywords {
            if !word.keywords.contains(keyword) {
                word.keywords.push(keyword.clone());
            }
        }
    }
    words
}

#[cfg(test)]
mod tests {
    use super::our_context_id;

    #[test]
    fn our_message_ids_name_their_context() {
        assert_eq!(
            our_context_id("<rf.abcdefghijklm.2@replyflow.test>").as_deref(),
            Some("abcdefghijklm")
        );
        assert_eq!(our_context_id("<CAF=x@mail.gmail.com>"), None);
        assert_eq!(our_context_id("<rf.short.1@x>"), None);
    }
}
