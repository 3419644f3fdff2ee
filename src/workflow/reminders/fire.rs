//! The scheduler's pass (DESIGN §6): claims due reminders in batches, sends them on their
//! channels, and runs the escalation of those that ran out, all in one transaction per batch.
use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::{Delivery, Outputs, SYSTEM, channel_names, fallback::Fallback};
use crate::{
    engine::{
        definition::ProcessDefinition,
        reminder_rules::EscalationPolicy,
        reminders::{self as plan, Step},
    },
    error::{Error, Result},
    mail::compose::Locale,
    model::{
        Channel, Event, Instance, Message, MessageKind, OutboxKind, OutboxMail, OutboxStatus,
        Reminder, ReminderState, Task, TaskStatus, User,
    },
    store::Tx,
    workflow::{Workflow, new_id, tasks::Prepared, transition::engine_tasks},
};

/// The savepoint each escalation runs under (one at a time).
const ESCALATION_SAVEPOINT: &str = "rf_escalation";

/// What one scheduler pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FireReport {
    pub claimed: usize,
    pub reminded: usize,
    pub failed: usize,
    pub fallbacks: usize,
}

impl Workflow {
    /// One batch: claims up to `limit` due reminders and fires them, and handles up to `limit`
    /// failed channel deliveries by falling back to the next channel. One transaction.
    pub async fn fire_due_reminders(&self, limit: i64) -> Result<FireReport> {
        let now = self.now();
        // Escalations that complete a task evaluate its conditions: do that before the write
        // lock, like CompleteTask, from committed state.
        let prepared = self.prepare_escalations(now, limit).await?;
        let mut tx = self.store.begin().await?;
        tx.yield_on_lock_waits(self.store.backend()).await?;
        let due = tx
            .claim_due_reminders(self.store.backend(), now, limit)
            .await?;
        let mut out = Outputs::default();
        let mut report = FireReport {
            claimed: due.len(),
            ..FireReport::default()
        };
        if !due.is_empty() {
            self.fire(&mut tx, due, now, &prepared, &mut out, &mut report)
                .await?;
        }
        for (mail, error) in tx.take_fallbacks(limit).await? {
            self.fall_back(&mut tx, &mail, &error, now, &mut out)
                .await?;
            report.fallbacks += 1;
        }
        tx.insert_messages(&out.messages).await?;
        tx.insert_events(&out.events).await?;
        tx.commit().await?;
        self.publish(out.task_events);
        self.publish_messages(out.messages);
        if out.queued_mail {
            self.mailer.wake().notify_one();
        }
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    async fn fire(
        &self,
        tx: &mut Tx,
        due: Vec<Reminder>,
        now: i64,
        prepared: &HashMap<String, Prepared>,
        out: &mut Outputs,
        report: &mut FireReport,
    ) -> Result<()> {
        let mut instance_ids: Vec<String> = due.iter().map(|r| r.instance_id.clone()).collect();
        instance_ids.sort();
        instance_ids.dedup();
        let instances = tx.instances_by_id(&instance_ids).await?;
        let open = tx.open_tasks_of(&instance_ids).await?;
        let mut assignees: Vec<String> = open
            .values()
            .flatten()
            .map(|t| t.assignee.clone())
            .collect();
        assignees.sort();
        assignees.dedup();
        let users = tx.users_by_id(&assignees).await?;
        // An escalation that completes or reassigns a task moves its instance on inside this
        // transaction; later reminders of that instance are re-read before they are acted on.
        let mut moved: HashSet<String> = HashSet::new();
        let mut fired: Vec<Reminder> = Vec::new();
        let no_tasks = Vec::new();
        for mut r in due {
            if moved.contains(&r.instance_id) {
                match tx
                    .active_reminders(&r.instance_id)
                    .await?
                    .into_iter()
                    .find(|a| a.id == r.id)
                {
                    Some(fresh) => r = fresh,
                    None => continue,
                }
            }
            let Some(record) = instances.get(&r.instance_id) else {
                // Its instance is gone: stop it, or it would be due forever.
                r.state = ReminderState::Cancelled;
                r.next_fire_at = None;
                r.finished_at = now;
                tx.save_reminder(&r).await?;
                continue;
            };
            let instance = &record.instance;
            let graph = self
                .graph_of(&instance.definition_key, instance.definition_version)
                .await?;
            let open_now: Vec<Task> = if moved.contains(&r.instance_id) {
                tx.open_tasks(&r.instance_id).await?
            } else {
                open.get(&r.instance_id).unwrap_or(&no_tasks).clone()
            };
            let engine_open = engine_tasks(&open_now);
            let chased_ids: Vec<String> = plan::chased(
                &graph,
                &r.end_activity,
                &r.via_join,
                &r.group_id,
                &record.joins,
                &engine_open,
            )
            .into_iter()
            .map(|t| t.id.clone())
            .collect();
            let chased: Vec<&Task> = open_now
                .iter()
                .filter(|t| chased_ids.contains(&t.id))
                .collect();
            let before = r.state;
            match plan::step(r.state, r.sent_count, r.count, r.interval_ms, now) {
                Step::Remind {
                    sent_count,
                    state,
                    next_fire_at,
                } => {
                    r.sent_count = sent_count;
                    r.state = state;
                    r.next_fire_at = Some(next_fire_at);
                    if r.first_fired_at == 0 {
                        r.first_fired_at = now;
                    }
                    r.last_fired_at = now;
                    fired.push(r.clone());
                    let mut recipients = Vec::new();
                    for task in &chased {
                        let Some(user) = users.get(&task.assignee) else {
                            continue;
                        };
                        recipients.push(user.id.clone());
                        let (title, body) = self.mailer.reminder_texts().reminder(
                            Locale::from_tag(&user.locale),
                            &graph.name,
                            task,
                            instance,
                            r.sent_count,
                            r.count,
                            "",
                        )?;
                        let delivery = Delivery {
                            reminder_id: &r.id,
                            instance,
                            graph: &graph,
                            task,
                            user,
                            kind: MessageKind::Reminder,
                            sender: "",
                            title,
                            body,
                        };
                        self.deliver(tx, &delivery, &r.channels, now, out).await?;
                    }
                    out.events.push(reminder_event(
                        &r,
                        before,
                        now,
                        json!({"sent": r.sent_count, "of": r.count, "recipients": recipients,
                               "tasks": chased_ids, "channels": channel_names(&r.channels)}),
                    ));
                    report.reminded += 1;
                }
                Step::Fail => {
                    // An escalation may run transitions that read this instance's reminders.
                    tx.save_fired_reminders(&std::mem::take(&mut fired)).await?;
                    // A `complete:` escalation uses the completion prepared before this
                    // transaction; if its instance changed since (another escalation of this
                    // tick, a decision in between), the reminder is left exactly as it was, due,
                    // and escalates at the next tick from the new state.
                    tx.savepoint(ESCALATION_SAVEPOINT).await?;
                    let marks = out.marks();
                    r.state = ReminderState::RemindFailed;
                    r.next_fire_at = None;
                    r.finished_at = now;
                    r.escalated = r.escalation != EscalationPolicy::None;
                    tx.save_reminder(&r).await?;
                    out.events.push(reminder_event(
                        &r,
                        before,
                        now,
                        json!({"escalation": r.escalation.as_text(), "tasks": chased_ids}),
                    ));
                    let escalated = if r.escalated {
                        self.escalate(tx, &r, instance, &graph, &chased, now, prepared, out)
                            .await
                    } else {
                        Ok(false)
                    };
                    match escalated {
                        Ok(changed) => {
                            tx.release_savepoint(ESCALATION_SAVEPOINT).await?;
                            if changed {
                                moved.insert(r.instance_id.clone());
                            }
                            report.failed += 1;
                        }
                        Err(Error::Aborted(why)) => {
                            tx.rollback_to_savepoint(ESCALATION_SAVEPOINT).await?;
                            tx.release_savepoint(ESCALATION_SAVEPOINT).await?;
                            out.truncate(marks);
                            tracing::debug!(reminder = %r.id, %why, "escalation postponed to the next tick");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        tx.save_fired_reminders(&fired).await?;
        Ok(())
    }

    /// An escalation notice to a manager or a named user, in the inbox.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn notify(
        &self,
        tx: &mut Tx,
        r: &Reminder,
        instance: &Instance,
        graph: &ProcessDefinition,
        task: &Task,
        to: &User,
        now: i64,
        out: &mut Outputs,
    ) -> Result<()> {
        let (title, body) = self.mailer.reminder_texts().escalation(
            Locale::from_tag(&to.locale),
            &graph.name,
            task,
            instance,
            r.sent_count,
        )?;
        let delivery = Delivery {
            reminder_id: &r.id,
            instance,
            graph,
            task,
            user: to,
            kind: MessageKind::Escalation,
            sender: "",
            title,
            body,
        };
        self.deliver(tx, &delivery, &[Channel::Inbox], now, out)
            .await?;
        Ok(())
    }

    /// Sends on every channel; a channel that cannot be used now falls back to the next one.
    pub(super) async fn deliver(
        &self,
        tx: &mut Tx,
        d: &Delivery<'_>,
        channels: &[Channel],
        now: i64,
        out: &mut Outputs,
    ) -> Result<Vec<Channel>> {
        let mut used = Vec::new();
        for (i, channel) in channels.iter().enumerate() {
            let next = &channels[i + 1..];
            match self.send_on(tx, d, *channel, next, "", now, out).await? {
                Ok(()) => used.push(*channel),
                Err(why) => {
                    if let Some(to) = self
                        .fall_back_now(tx, d, *channel, next, &why, now, out)
                        .await?
                    {
                        used.push(to);
                    }
                }
            }
        }
        Ok(used)
    }

    /// Puts one reminder on one channel. `Ok(Err(why))`: this channel cannot take it now.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_on(
        &self,
        tx: &mut Tx,
        d: &Delivery<'_>,
        channel: Channel,
        next: &[Channel],
        note: &str,
        now: i64,
        out: &mut Outputs,
    ) -> Result<std::result::Result<(), String>> {
        let body = if note.is_empty() {
            d.body.clone()
        } else {
            format!("{note}\n{}", d.body)
        };
        let fallback = || {
            if next.is_empty() {
                return Ok(String::new());
            }
            serde_json::to_string(&Fallback {
                reminder_id: d.reminder_id.to_string(),
                instance_id: d.instance.id.clone(),
                task_id: d.task.id.clone(),
                user_id: d.user.id.clone(),
                kind: d.kind.as_str().to_string(),
                failed: channel.as_str().to_string(),
                next: next.iter().map(|c| c.as_str().to_string()).collect(),
                title: d.title.clone(),
                body: d.body.clone(),
            })
            .map_err(|e| Error::Internal(e.into()))
        };
        match channel {
            Channel::Inbox => {
                let message = Message {
                    id: new_id(),
                    user_id: d.user.id.clone(),
                    kind: d.kind,
                    title: d.title.clone(),
                    body,
                    task_id: d.task.id.clone(),
                    instance_id: d.instance.id.clone(),
                    sender: d.sender.to_string(),
                    read_at: None,
                    created_at: now,
                };
                // Written in bulk with the batch's other messages (flush_messages).
                out.messages.push(message);
                Ok(Ok(()))
            }
            Channel::Email => {
                if d.user.email.is_empty() {
                    return Ok(Err(format!("{} has no email address", d.user.id)));
                }
                if d.task.status != TaskStatus::Open || d.task.assignee != d.user.id {
                    // Escalation notices go to someone who is not the approver: no token.
                    return Ok(Err("only the task's assignee gets reminder mail".into()));
                }
                let mail = match self
                    .mailer
                    .reminder_mail(tx, d.graph, d.instance, d.task, d.user, &body, now)
                    .await?
                {
                    Ok(mail) => mail,
                    Err(why) => return Ok(Err(why)),
                };
                let mail = OutboxMail {
                    fallback: fallback()?,
                    ..mail
                };
                tx.insert_outbox(&mail).await?;
                out.queued_mail = true;
                Ok(Ok(()))
            }
            Channel::Sms => {
                if d.user.phone.trim().is_empty() {
                    return Ok(Err(format!("{} has no phone number", d.user.id)));
                }
                let text = format!("{}：{}", d.title, body.lines().next().unwrap_or_default());
                let id = new_id();
                tx.insert_outbox(&OutboxMail {
                    id: id.clone(),
                    kind: OutboxKind::Sms,
                    context_id: String::new(),
                    task_id: d.task.id.clone(),
                    recipient: d.user.phone.trim().to_string(),
                    sender: String::new(),
                    message_id: id,
                    body: text.into_bytes(),
                    status: OutboxStatus::Queued,
                    attempts: 0,
                    next_attempt_at: now,
                    last_error: String::new(),
                    created_at: now,
                    sent_at: None,
                    fallback: fallback()?,
                })
                .await?;
                out.queued_mail = true;
                Ok(Ok(()))
            }
        }
    }
}

fn reminder_event(
    r: &Reminder,
    before: ReminderState,
    now: i64,
    mut detail: serde_json::Value,
) -> Event {
    detail["reminder_id"] = json!(r.id);
    detail["from"] = json!(before.as_str());
    Event {
        instance_id: r.instance_id.clone(),
        at: now,
        kind: format!("reminder_{}", r.state.as_str()),
        activity_id: r.end_activity.clone(),
        actor: SYSTEM.into(),
        detail,
    }
}
