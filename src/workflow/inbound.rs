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
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{
    Actor, Workflow, new_id,
    tasks::{CompleteTask, ReassignAuthority, Reassignment},
};
use crate::{
    engine::definition::{NodeKind, UserTaskSpec},
    error::{Error, Result},
    mail::{
        reply::{self, BounceReport, Correlation, OutcomeWords, ReplyKind, ReplyReading},
        token::{self, TokenError},
    },
    model::{
        ApprovalContext, ApprovalStatus, CompletedVia, InboundEmail, TaskStatus, User, Verdict,
    },
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

/// What an accepted reply does, in the transaction that records it.
#[derive(Debug, Clone, Copy)]
enum Effect<'a> {
    Decide { outcome: &'a str, comment: &'a str },
    Delegate { to: &'a User, comment: &'a str },
}

impl Workflow {
    /// Records and, when it decides a task, applies one received mail. `delivered_to`: the
    /// envelope recipient (plus address) when the transport knows it.
    pub async fn ingest(
        &self,
        raw: &[u8],
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<InboundEmail> {
        if raw.len() > MAX_INBOUND_BYTES {
            let size = u64::try_from(raw.len()).unwrap_or(u64::MAX);
            return self
                .ingest_too_large(header_block(raw), size, delivered_to, transport)
                .await;
        }
        let mut record = new_record(raw, raw.len() as u64, transport, self.now());
        let first = reply::read_reply(
            raw,
            &OutcomeWords::defaults(&["approve", "reject"]),
            delivered_to,
        );
        describe(&mut record, &first);
        record.subject = subject_of(raw);
        match first.kind {
            ReplyKind::AutoReply => {
                return self
                    .record(
                        record,
                        judged(Verdict::AutoReply, "an automatic reply: logged and ignored"),
                    )
                    .await;
            }
            ReplyKind::Bounce => {
                let report = first.bounce.clone().unwrap_or_default();
                return self.apply_bounce(record, &report).await;
            }
            ReplyKind::Unparseable => {
                return self
                    .record(
                        record,
                        judged(Verdict::Unparseable, "no readable text in the message"),
                    )
                    .await;
            }
            _ => {}
        }
        let Some(found) = self.correlate(&first.correlation).await? else {
            return self
                .record(
                    record,
                    judged(
                        Verdict::UnknownToken,
                        "no reply token, Message-ID or subject tag of ours was found",
                    ),
                )
                .await;
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
            return self.record(record, judged(Verdict::AuthFailed, why)).await;
        }
        let now = self.now();
        if let Some(judgement) = self.verify(&found, &first.correlation, now).await? {
            return self.record(record, judgement).await;
        }
        // Read again with the outcomes the task really has.
        let task = self.task(&found.context.task_id).await?;
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
        let reading = reply::read_reply(raw, &outcomes, delivered_to);
        describe(&mut record, &reading);
        match (reading.kind, reading.outcome.as_deref()) {
            (ReplyKind::Decision, Some(outcome)) => {
                self.apply(
                    record,
                    &found.context,
                    Effect::Decide {
                        outcome,
                        comment: &reading.comment,
                    },
                )
                .await
            }
            (ReplyKind::Ambiguous, _) => {
                let named = reading.ambiguous.join(", ");
                self.record(
                    record,
                    judged(
                        Verdict::Ambiguous,
                        format!("the reply names several outcomes: {named}"),
                    ),
                )
                .await
            }
            (ReplyKind::Delegate, _) => {
                let allowed = spec.is_some_and(|s| s.allow_delegate);
                self.delegate(record, &found.context, allowed, &reading)
                    .await
            }
            _ => {
                self.record(
                    record,
                    judged(
                        Verdict::NoDecision,
                        "no decision on the first line of the reply",
                    ),
                )
                .await
            }
        }
    }

    /// Records a mail over [`MAX_INBOUND_BYTES`] as `too_large`, read from its header alone
    /// (`header`: the bytes up to the blank line; the body is never fetched), and tells the
    /// sender the limit. `size`: the whole mail's. The content hash that makes a re-fetch a
    /// duplicate is the header's.
    pub async fn ingest_too_large(
        &self,
        header: &[u8],
        size: u64,
        delivered_to: Option<&str>,
        transport: &str,
    ) -> Result<InboundEmail> {
        let header = &header[..header.len().min(MAX_HEADER_BYTES)];
        let mut record = new_record(header, size, transport, self.now());
        let reading = reply::read_reply(
            header,
            &OutcomeWords::defaults(&["approve", "reject"]),
            delivered_to,
        );
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
        self.record(record, judgement).await
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

    /// Every check of DESIGN §5 but the reading itself; `None` when all pass.
    async fn verify(
        &self,
        found: &Correlated,
        c: &Correlation,
        now: i64,
    ) -> Result<Option<Judgement>> {
        let context = &found.context;
        let Some(parts) = &found.token else {
            return Ok(Some(judged(
                Verdict::UnknownToken,
                format!(
                    "found through {} but the reply token is missing: reply to the approval mail and keep its last line",
                    found.path
                ),
            )));
        };
        match token::verify(
            self.mailer.keys(),
            parts,
            &context.approver_email,
            context.valid_until,
        ) {
            Ok(()) => {}
            Err(TokenError::UnknownKey | TokenError::BadSignature) => {
                return Ok(Some(judged(
                    Verdict::BadSignature,
                    "the reply token's signature does not match",
                )));
            }
        }
        let sender = self.store.user_by_address(&c.from).await?;
        if sender.as_ref().is_none_or(|u| u.id != context.approver) {
            return Ok(Some(judged(
                Verdict::SenderMismatch,
                format!(
                    "{} is not the approver's address or one of their aliases",
                    c.from
                ),
            )));
        }
        match context.status {
            ApprovalStatus::Used => return Ok(Some(self.already_handled(context).await?)),
            // A context is revoked when its task closes too (withdrawn, cancelled, decided
            // through the API): then the approver is told what became of the task.
            ApprovalStatus::Revoked
                if self.task(&context.task_id).await?.status != TaskStatus::Open =>
            {
                return Ok(Some(self.already_handled(context).await?));
            }
            ApprovalStatus::Revoked => {
                return Ok(Some(judged(
                    Verdict::Revoked,
                    format!("the approval was revoked: {}", context.revoke_reason),
                )));
            }
            ApprovalStatus::Expired => {
                return Ok(Some(judged(Verdict::Expired, "the approval has expired")));
            }
            ApprovalStatus::Pending => {}
        }
        if context.valid_until <= now {
            return Ok(Some(judged(
                Verdict::Expired,
                format!(
                    "replies were accepted until {}",
                    crate::clock::rfc3339(context.valid_until)
                ),
            )));
        }
        let task = self.task(&context.task_id).await?;
        if task.status != TaskStatus::Open || task.assignee != context.approver {
            return Ok(Some(self.already_handled(context).await?));
        }
        Ok(None)
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
    async fn delegate(
        &self,
        record: InboundEmail,
        context: &ApprovalContext,
        allowed: bool,
        reading: &ReplyReading,
    ) -> Result<InboundEmail> {
        let address = reading.delegate_to.clone().unwrap_or_default();
        if !allowed {
            return self
                .record(
                    record,
                    judged(
                        Verdict::NoDecision,
                        format!(
                            "this task cannot be handed on by mail (its process does not allow it: replyflow:allowDelegate); it was not delegated to {address}"
                        ),
                    ),
                )
                .await;
        }
        let Some(user) = self.store.user_by_address(&address).await? else {
            return self
                .record(
                    record,
                    judged(
                        Verdict::NoDecision,
                        format!(
                            "{address} is not the address of a registered user: the task was not delegated"
                        ),
                    ),
                )
                .await;
        };
        if user.id == context.approver {
            return self
                .record(
                    record,
                    judged(
                        Verdict::NoDecision,
                        format!(
                            "{address} is your own address: the task is already yours, nothing was delegated"
                        ),
                    ),
                )
                .await;
        }
        self.apply(
            record,
            context,
            Effect::Delegate {
                to: &user,
                comment: &reading.comment,
            },
        )
        .await
    }

    /// The effect (a decision or a hand-over), the context's one use, the log row, the answer and
    /// the claims: one transaction.
    async fn apply(
        &self,
        mut record: InboundEmail,
        context: &ApprovalContext,
        effect: Effect<'_>,
    ) -> Result<InboundEmail> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if let Some(first) = self.claim(&mut tx, &record).await? {
            drop(tx);
            return self
                .record(
                    record,
                    judged(Verdict::Duplicate, format!("already received as {first}")),
                )
                .await;
        }
        if !tx
            .close_approval(&context.id, ApprovalStatus::Used, "", now)
            .await?
        {
            drop(tx);
            let judgement = self.already_handled(context).await?;
            return self.record(record, judgement).await;
        }
        let actor = Actor::new(context.approver.clone());
        let done = match effect {
            Effect::Decide { outcome, comment } => {
                let request = CompleteTask {
                    task_id: context.task_id.clone(),
                    outcome: outcome.to_string(),
                    comment: comment.to_string(),
                    variables: Default::default(),
                    request_id: String::new(),
                    via: CompletedVia::Email,
                };
                self.complete_in(&mut tx, &actor, &context.instance_id, &request, now)
                    .await
                    .map(|(_, published)| {
                        record.outcome = outcome.to_string();
                        record.comment = comment.to_string();
                        (format!("task completed: {outcome}"), published)
                    })
            }
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
                self.reassign_in(&mut tx, &reassignment, now)
                    .await
                    .map(|event| {
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
                record.answered = self.answer(&mut tx, &record, now).await?;
                tx.insert_inbound(&record).await?;
                tx.commit().await?;
                tracing::info!(inbound = %record.id, task = %context.task_id, reason = %record.reason, "reply applied");
                self.publish(published);
                self.mailer.wake().notify_one();
                Ok(record)
            }
            Err(Error::FailedPrecondition(_) | Error::PermissionDenied(_)) => {
                drop(tx);
                let judgement = self.already_handled(context).await?;
                self.record(record, judgement).await
            }
            Err(Error::InvalidArgument { reason, .. }) => {
                drop(tx);
                self.record(record, judged(Verdict::NoDecision, reason))
                    .await
            }
            Err(other) => Err(other),
        }
    }

    /// A bounce: every sent mail it names is marked failed for good (its reminder fallback
    /// queued) in the transaction of the log row. Never answered.
    async fn apply_bounce(
        &self,
        mut record: InboundEmail,
        report: &BounceReport,
    ) -> Result<InboundEmail> {
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
        if !report.failed || report.original_message_ids.is_empty() {
            let reason = if report.original_message_ids.is_empty() {
                format!("a delivery status notification that names no mail of ours ({diagnostic})")
            } else {
                format!(
                    "a delivery notice without a failure (delayed or relayed) about <{}>{to}: nothing marked",
                    report.original_message_ids.join(">, <")
                )
            };
            return self.record(record, judged(Verdict::Bounce, reason)).await;
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if let Some(first) = self.claim(&mut tx, &record).await? {
            drop(tx);
            return self
                .record(
                    record,
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
        tx.commit().await?;
        if failed.is_empty() {
            tracing::info!(inbound = %record.id, reason = %record.reason, "bounce recorded");
        } else {
            tracing::warn!(inbound = %record.id, reason = %record.reason, "outbound mail bounced");
        }
        Ok(record)
    }

    /// Claims the mail's Message-ID and content hash; the id of an earlier copy if one holds them.
    async fn claim(
        &self,
        tx: &mut crate::store::Tx,
        record: &InboundEmail,
    ) -> Result<Option<String>> {
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
    async fn record(&self, mut record: InboundEmail, judgement: Judgement) -> Result<InboundEmail> {
        record.verdict = judgement.verdict;
        record.reason = judgement.reason;
        let mut tx = self.store.begin().await?;
        if record.verdict != Verdict::Duplicate
            && let Some(first) = self.claim(&mut tx, &record).await?
        {
            record.verdict = Verdict::Duplicate;
            record.reason = format!("already received as {first}");
        }
        record.answered = !judgement.silent && self.answer(&mut tx, &record, self.now()).await?;
        tx.insert_inbound(&record).await?;
        tx.commit().await?;
        if record.answered {
            self.mailer.wake().notify_one();
        }
        tracing::info!(inbound = %record.id, verdict = record.verdict.as_str(), reason = %record.reason, "reply recorded");
        Ok(record)
    }
}

/// At most this many answers per sender and hour: a mail loop or a flood gets silence.
const MAX_ANSWERS_PER_HOUR: i64 = 5;

impl Workflow {
    /// Queues the polite answer to a received mail in `tx`, unless the mail is a robot's (never
    /// answered), a copy, or its sender was answered too often lately. Whether it queued one.
    async fn answer(
        &self,
        tx: &mut crate::store::Tx,
        record: &InboundEmail,
        now: i64,
    ) -> Result<bool> {
        let sender = record.sender.to_lowercase();
        let robot = [
            "mailer-daemon@",
            "postmaster@",
            "noreply",
            "no-reply",
            "do-not-reply",
        ]
        .iter()
        .any(|prefix| sender.starts_with(prefix));
        if matches!(
            record.verdict,
            Verdict::AutoReply | Verdict::Bounce | Verdict::Duplicate
        ) || !sender.contains('@')
            || robot
        {
            return Ok(false);
        }
        if tx.recent_answers(&sender, now - 3_600_000).await? >= MAX_ANSWERS_PER_HOUR {
            tracing::warn!(inbound = %record.id, "not answering: too many answers to this sender in the last hour");
            return Ok(false);
        }
        let locale = self
            .store
            .user_by_address(&sender)
            .await?
            .map(|u| u.locale)
            .unwrap_or_default();
        let mut task_name = String::new();
        let mut outcomes = Vec::new();
        let mut outcome_label = record.outcome.clone();
        if !record.task_id.is_empty()
            && let Ok(task) = self.task(&record.task_id).await
        {
            task_name = task.name.clone();
            if let Ok(graph) = self
                .graph_of(&task.definition_key, task.definition_version)
                .await
                && let Some(NodeKind::UserTask(spec)) =
                    graph.node(&task.activity_id).map(|(_, n)| &n.kind)
            {
                outcomes = spec
                    .outcomes
                    .iter()
                    .zip(1..)
                    .map(|(o, number)| crate::mail::compose::OutcomeChoice {
                        number,
                        id: o.id.clone(),
                        label: o.label.clone(),
                        keywords: o.keywords.clone(),
                    })
                    .collect();
                if let Some(o) = spec.outcomes.iter().find(|o| o.id == record.outcome) {
                    outcome_label = o.label.clone();
                }
            }
        }
        let mail = crate::mail::answer::AnswerMail {
            locale: crate::mail::compose::Locale::from_tag(&locale),
            from: crate::mail::compose::Mailbox {
                name: String::new(),
                address: String::new(),
            },
            to: sender,
            subject: record.subject.clone(),
            in_reply_to: (!record.message_id.is_empty()).then(|| {
                format!(
                    "<{}>",
                    record
                        .message_id
                        .trim_start_matches('<')
                        .trim_end_matches('>')
                )
            }),
            message_id: String::new(),
            date: now,
            verdict: answer_kind(record).to_string(),
            reason: record.reason.clone(),
            task_name,
            outcome_label,
            comment: record.comment.clone(),
            outcomes,
        };
        let outbox = self.mailer.answer(mail, &record.task_id, now)?;
        tx.insert_outbox(&outbox).await?;
        Ok(true)
    }
}

/// What the answer says: the verdict, told apart for a hand-over by mail (done or refused).
fn answer_kind(record: &InboundEmail) -> &'static str {
    match record.verdict {
        Verdict::Applied if !record.delegate_to.is_empty() => "delegated",
        Verdict::NoDecision if !record.delegate_to.is_empty() => "delegate_refused",
        verdict => verdict.as_str(),
    }
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

fn subject_of(raw: &[u8]) -> String {
    mail_parser::MessageParser::default()
        .parse(raw)
        .and_then(|m| m.subject().map(str::to_string))
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
