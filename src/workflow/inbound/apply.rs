//! Writing what was judged, in the batch's transaction under the mail's savepoint: the claims
//! that make a mail count once (Message-ID and content hash), the effect of an accepted reply
//! (a decision or a hand-over, with the context's one use), a bounce's failed mail, the log row
//! and the answer. A write that finds the world changed since the checks (the context used, the
//! task closed) undoes the mail's writes and records why instead.
use super::{
    Action, AnswerFacts, Effect, Judgement, Plan,
    batch::{Batch, MailEffects},
    bounce_words, judge, judged,
};
use crate::{
    error::{Error, Result},
    mail::reply::BounceReport,
    model::{ApprovalContext, ApprovalStatus, InboundEmail, InstanceStatus, Verdict},
    store::Tx,
    workflow::{
        Actor, Workflow,
        tasks::{ReassignAuthority, Reassignment},
    },
};

impl Workflow {
    /// Writes what [`Workflow::judge_chunk`] decided, in the batch's transaction.
    pub(super) async fn write(&self, batch: &mut Batch, plan: Plan) -> Result<InboundEmail> {
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
        if let Some(first) = claim(tx, &record).await? {
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
                let (tx, counts) = batch.parts()?;
                record.answered = self.answer(tx, counts, &record, facts, now).await?;
                tx.insert_inbound(&record).await?;
                batch.mail = MailEffects {
                    published,
                    wake_mailer: true,
                    touched: Some(context.instance_id.clone()),
                    answered: record.answered.then(|| record.sender.to_lowercase()),
                };
                Ok(record)
            }
            Err(Error::FailedPrecondition(_) | Error::PermissionDenied(_)) => {
                self.undo_mail(batch).await?;
                let judgement = match self.suspended(context).await? {
                    Some(judgement) => judgement,
                    None => self.already_handled(context).await?,
                };
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

    /// 挂起: a reply to a suspended instance decides nothing, and its approval stays pending for
    /// a reply after the instance is resumed.
    async fn suspended(&self, context: &ApprovalContext) -> Result<Option<Judgement>> {
        let instance = self.instance(&context.instance_id).await?.instance;
        Ok((instance.status == InstanceStatus::Suspended).then(|| {
            judged(
                Verdict::Suspended,
                format!(
                    "the request {} is suspended; nothing was decided",
                    if instance.business_key.is_empty() {
                        &instance.id
                    } else {
                        &instance.business_key
                    }
                ),
            )
        }))
    }

    /// Why a reply to `context` comes too late, from its task as committed now.
    async fn already_handled(&self, context: &ApprovalContext) -> Result<Judgement> {
        let task = self.task(&context.task_id).await?;
        Ok(judge::already_handled(context, &task))
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
        if let Some(first) = claim(tx, &record).await? {
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
            && let Some(first) = claim(tx, &record).await?
        {
            record.verdict = Verdict::Duplicate;
            record.reason = format!("already received as {first}");
        }
        let (tx, counts) = batch.parts()?;
        record.answered = !judgement.silent && self.answer(tx, counts, &record, facts, now).await?;
        tx.insert_inbound(&record).await?;
        batch.mail.wake_mailer |= record.answered;
        if record.answered {
            batch.mail.answered = Some(record.sender.to_lowercase());
        }
        Ok(record)
    }
}

/// Claims the mail's Message-ID and content hash (one statement); the id of an earlier copy if
/// one holds them.
async fn claim(tx: &mut Tx, record: &InboundEmail) -> Result<Option<String>> {
    let by_id = format!("mid:{}", record.message_id);
    let by_content = format!("sha256:{}", record.sha256);
    if record.message_id.is_empty() {
        tx.claim_inbound_keys(&[&by_content], &record.id).await
    } else {
        tx.claim_inbound_keys(&[&by_id, &by_content], &record.id)
            .await
    }
}
