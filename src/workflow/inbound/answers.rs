//! The polite answer to a received mail (DESIGN §5), and who gets one (DESIGN §12): registered
//! users only (by address or alias), never robots, copies or unjudgeable mail, within a budget
//! per sender and one for everyone together (`mail.answers_per_sender_per_hour`,
//! `mail.answers_per_hour`), so that a flood of forged mail gets silence. An answer that cannot
//! be written (an address the composer refuses) is skipped, never an error: the mail keeps its
//! verdict.
//!
//! The budgets are counted once per sender and batch transaction, then kept up to date in memory
//! as the batch queues answers (a backlog of replies from a few approvers would otherwise count
//! the hour's answers twice per mail). A count read at the start of a batch may still include
//! an answer that left the hour while the batch ran (the batch errs on the side of silence), and
//! on PostgreSQL it does not see answers another server commits meanwhile (at most one batch,
//! [`super::batch`]'s size, over the budget).
use std::collections::HashMap;

use crate::{
    engine::definition::NodeKind,
    error::Result,
    model::{InboundEmail, Task, Verdict},
    store::Tx,
    workflow::Workflow,
};

/// What the answer to a mail says about its sender and task, read with the checks.
#[derive(Debug, Default)]
pub(super) struct AnswerFacts {
    /// The sender is a registered user (address or alias): only those are answered.
    pub(super) registered: bool,
    pub(super) locale: String,
    pub(super) task: Option<Task>,
}

/// The answers of the last hour as the open transaction sees them: read when first needed, then
/// counted up as mails that queued one are kept ([`AnswerCounts::add`]). A sender not read yet
/// has no entry: reading it later includes what the transaction queued.
#[derive(Debug, Default)]
pub(super) struct AnswerCounts {
    total: Option<i64>,
    per_sender: HashMap<String, i64>,
}

impl AnswerCounts {
    /// One more answer to `sender` was kept in the transaction.
    pub(super) fn add(&mut self, sender: &str) {
        if let Some(total) = &mut self.total {
            *total += 1;
        }
        if let Some(count) = self.per_sender.get_mut(sender) {
            *count += 1;
        }
    }
}

impl Workflow {
    /// Queues the polite answer to a received mail in `tx`, unless the mail is a robot's (never
    /// answered), a copy, its sender is not a registered user (by address or alias: forged
    /// senders get nothing), its address cannot be mailed, or the answer budget is spent (per
    /// sender, and for everyone together: a flood gets silence). Whether it queued one; once the
    /// mail is kept, its caller adds it to `counts`. Never an error for the answer itself: a
    /// mail that cannot be answered is still judged.
    pub(super) async fn answer(
        &self,
        tx: &mut Tx,
        counts: &mut AnswerCounts,
        record: &InboundEmail,
        facts: &AnswerFacts,
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
            Verdict::AutoReply
                | Verdict::Bounce
                | Verdict::Duplicate
                | Verdict::Quarantined
                | Verdict::SeveralFrom
        ) || !facts.registered
            || robot
            || sender.parse::<lettre::Address>().is_err()
        {
            return Ok(false);
        }
        let limits = self.mailer.inbound_limits();
        let hour_ago = now - 3_600_000;
        // The budget of everyone together first: once it is spent (a flood), no sender's own
        // count needs reading.
        let total = match counts.total {
            Some(total) => total,
            None => tx.recent_answers_total(hour_ago).await?,
        };
        counts.total = Some(total);
        if total >= limits.answers_per_hour {
            tracing::warn!(inbound = %record.id, "not answering: the answer budget of the last hour is spent (mail.answers_per_hour)");
            return Ok(false);
        }
        let to_sender = match counts.per_sender.get(&sender) {
            Some(&to_sender) => to_sender,
            None => tx.recent_answers(&sender, hour_ago).await?,
        };
        counts.per_sender.insert(sender.clone(), to_sender);
        if to_sender >= limits.answers_per_sender_per_hour {
            tracing::warn!(inbound = %record.id, "not answering: too many answers to this sender in the last hour (mail.answers_per_sender_per_hour)");
            return Ok(false);
        }
        let locale = facts.locale.clone();
        let mut task_name = String::new();
        let mut outcomes = Vec::new();
        let mut outcome_label = record.outcome.clone();
        if let Some(task) = &facts.task {
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
        let outbox = match self.mailer.answer(mail, &record.task_id, now) {
            Ok(outbox) => outbox,
            Err(e) => {
                tracing::warn!(inbound = %record.id, error = %format!("{e:#}"), "not answering: the answer could not be written");
                return Ok(false);
            }
        };
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
