//! Email approval, inbound (DESIGN §5): every received mail gets exactly one row in the inbound
//! log with a verdict. A reply is correlated (plus-address token, In-Reply-To/References to our
//! Message-IDs, the body's token line, the subject tag), verified (token HMAC, sender, validity,
//! one use, task still open and still the approver's), read with the task's outcomes, and — when
//! it decides — applied in the same transaction that records it and claims its Message-ID and
//! content hash, so a reply is applied once even when fetched twice.
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Actor, Workflow, new_id, tasks::CompleteTask};
use crate::{
    engine::definition::NodeKind,
    error::{Error, Result},
    mail::{
        reply::{self, Correlation, OutcomeWords, ReplyKind, ReplyReading},
        token::{self, TokenError},
    },
    model::{ApprovalContext, ApprovalStatus, CompletedVia, InboundEmail, TaskStatus, Verdict},
};

/// Larger mails are refused unread (no approval reply is this big).
pub const MAX_INBOUND_BYTES: usize = 10 * 1024 * 1024;

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
}

fn judged(verdict: Verdict, reason: impl Into<String>) -> Judgement {
    Judgement {
        verdict,
        reason: reason.into(),
    }
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
        let now = self.now();
        let mut record = InboundEmail {
            id: new_id(),
            message_id: String::new(),
            sha256: Sha256::digest(raw)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            sender: String::new(),
            subject: String::new(),
            transport: transport.to_string(),
            size_bytes: i64::try_from(raw.len()).unwrap_or(i64::MAX),
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
        };
        if raw.len() > MAX_INBOUND_BYTES {
            return self
                .record(
                    record,
                    judged(
                        Verdict::TooLarge,
                        format!("{} bytes: larger than {MAX_INBOUND_BYTES}", raw.len()),
                    ),
                )
                .await;
        }
        let first = reply::read_reply(
            raw,
            &OutcomeWords::defaults(&["approve", "reject"]),
            delivered_to,
        );
        describe(&mut record, &first);
        record.subject = mail_parser::MessageParser::default()
            .parse(raw)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default();
        let early = match first.kind {
            ReplyKind::AutoReply => Some(judged(
                Verdict::AutoReply,
                "an automatic reply: logged and ignored",
            )),
            ReplyKind::Bounce => Some(judged(Verdict::Bounce, "a delivery status notification")),
            ReplyKind::Unparseable => Some(judged(
                Verdict::Unparseable,
                "no readable text in the message",
            )),
            _ => None,
        };
        if let Some(judgement) = early {
            return self.record(record, judgement).await;
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
        if let Some(judgement) = self.verify(&found, &first.correlation, now).await? {
            return self.record(record, judgement).await;
        }
        // Read again with the outcomes the task really has.
        let task = self.task(&found.context.task_id).await?;
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let outcomes: Vec<OutcomeWords> = match graph.node(&task.activity_id).map(|(_, n)| &n.kind)
        {
            Some(NodeKind::UserTask(spec)) => outcome_words(spec),
            _ => OutcomeWords::defaults(&["approve", "reject"]),
        };
        let reading = reply::read_reply(raw, &outcomes, delivered_to);
        describe(&mut record, &reading);
        let outcome = match (reading.kind, reading.outcome.clone()) {
            (ReplyKind::Decision, Some(outcome)) => outcome,
            (ReplyKind::Ambiguous, _) => {
                let named = reading.ambiguous.join(", ");
                return self
                    .record(
                        record,
                        judged(
                            Verdict::Ambiguous,
                            format!("the reply names several outcomes: {named}"),
                        ),
                    )
                    .await;
            }
            (ReplyKind::Delegate, _) => {
                return self
                    .record(
                        record,
                        judged(
                            Verdict::NoDecision,
                            "handing a task on by mail (转交/delegate) is not supported yet",
                        ),
                    )
                    .await;
            }
            _ => {
                return self
                    .record(
                        record,
                        judged(
                            Verdict::NoDecision,
                            "no decision on the first line of the reply",
                        ),
                    )
                    .await;
            }
        };
        self.apply_decision(record, &found.context, &outcome, &reading.comment)
            .await
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

    /// The decision, the context's one use, the log row and the claims: one transaction.
    async fn apply_decision(
        &self,
        mut record: InboundEmail,
        context: &ApprovalContext,
        outcome: &str,
        comment: &str,
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
        let request = CompleteTask {
            task_id: context.task_id.clone(),
            outcome: outcome.to_string(),
            comment: comment.to_string(),
            variables: Default::default(),
            request_id: String::new(),
            via: CompletedVia::Email,
        };
        let actor = Actor::new(context.approver.clone());
        match self
            .complete_in(&mut tx, &actor, &context.instance_id, &request, now)
            .await
        {
            Ok((_, published)) => {
                record.verdict = Verdict::Applied;
                record.reason = format!("task completed: {outcome}");
                record.outcome = outcome.to_string();
                record.comment = comment.to_string();
                record.answered = self.answer(&mut tx, &record, now).await?;
                tx.insert_inbound(&record).await?;
                tx.commit().await?;
                tracing::info!(inbound = %record.id, task = %context.task_id, %outcome, "reply applied");
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
        record.answered = self.answer(&mut tx, &record, self.now()).await?;
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
            verdict: record.verdict.as_str().to_string(),
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
