//! Reminders (催办, DESIGN §6): armed and stopped inside every transition, fired by the
//! scheduler in batches (one transaction per batch: claims, messages, outbox rows, state changes
//! and audit events commit together, or not at all), escalated once when they run out, sent by
//! hand with RemindNow, and listed.
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Actor, Workflow, check_request_id, fingerprint, instances::engine_tasks, new_id,
    tasks::Prepared,
};
use crate::{
    engine::{
        definition::{ProcessDefinition, iso_duration_secs},
        reminders::{self as plan, Step},
    },
    error::{Error, Result},
    mail::compose::Locale,
    model::{
        Channel, Event, Instance, Message, MessageKind, OutboxMail, OutboxStatus, Page, Reminder,
        ReminderState, ReminderType, Task, TaskEvent, TaskStatus, User,
    },
    store::{PageRequest, Tx, reminders::ReminderFilter},
};

mod escalation;

/// Actor recorded for what the scheduler does.
const SYSTEM: &str = "system:reminders";

/// Channels of a manual reminder when the task's activity has no reminder type.
const DEFAULT_MANUAL_CHANNELS: [Channel; 2] = [Channel::Inbox, Channel::Email];

/// A reminder type by id: the definition's own declaration wins over a server-wide one.
pub(super) async fn reminder_type(
    store: &crate::store::Store,
    graph: &ProcessDefinition,
    id: &str,
) -> Result<Option<ReminderType>> {
    if let Some(decl) = graph.reminder_types.iter().find(|t| t.id == id) {
        let interval_ms = iso_duration_secs(&decl.interval)
            .ok()
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| s.saturating_mul(1000))
            .unwrap_or(1000);
        return Ok(Some(ReminderType {
            id: decl.id.clone(),
            count: i64::from(decl.count),
            interval_ms,
            channels: decl
                .channels
                .iter()
                .filter_map(|c| Channel::parse(c))
                .collect(),
            escalation: decl.escalation.clone(),
            source: format!("definition:{}", graph.key),
            updated_at: 0,
        }));
    }
    store.reminder_type(id).await
}

/// Where a reminder was queued on a channel that may still fail later (mail bounces, SMS gateway
/// refuses): enough to send it again on the next channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fallback {
    reminder_id: String,
    instance_id: String,
    task_id: String,
    user_id: String,
    kind: String,
    failed: String,
    /// The channels after the failed one, in order.
    next: Vec<String>,
    title: String,
    body: String,
}

/// Everything one batch writes besides the reminders themselves.
#[derive(Debug, Default)]
struct Outputs {
    messages: Vec<Message>,
    events: Vec<Event>,
    task_events: Vec<TaskEvent>,
    queued_mail: bool,
}

/// How far [`Outputs`] had grown, to undo an escalation that was rolled back.
#[derive(Debug, Clone, Copy)]
struct OutputMarks(usize, usize, usize, bool);

impl Outputs {
    fn marks(&self) -> OutputMarks {
        OutputMarks(
            self.messages.len(),
            self.events.len(),
            self.task_events.len(),
            self.queued_mail,
        )
    }

    fn truncate(&mut self, marks: OutputMarks) {
        self.messages.truncate(marks.0);
        self.events.truncate(marks.1);
        self.task_events.truncate(marks.2);
        self.queued_mail = marks.3;
    }
}

/// The savepoint each escalation runs under (one at a time).
const ESCALATION_SAVEPOINT: &str = "rf_escalation";

/// One reminder to deliver to one person about one task.
struct Delivery<'a> {
    reminder_id: &'a str,
    instance: &'a Instance,
    graph: &'a ProcessDefinition,
    task: &'a Task,
    user: &'a User,
    kind: MessageKind,
    sender: &'a str,
    title: String,
    body: String,
}

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
                        let (title, body) = reminder_text(
                            Locale::from_tag(&user.locale),
                            &graph.name,
                            task,
                            instance,
                            r.sent_count,
                            r.count,
                            "",
                        );
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
                    r.escalated = r.escalation != "none" && !r.escalation.is_empty();
                    tx.save_reminder(&r).await?;
                    out.events.push(reminder_event(
                        &r,
                        before,
                        now,
                        json!({"escalation": r.escalation, "tasks": chased_ids}),
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
    async fn notify(
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
        let (title, body) = escalation_text(
            Locale::from_tag(&to.locale),
            &graph.name,
            task,
            instance,
            r.sent_count,
        );
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
    async fn deliver(
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

    /// A channel failed at once (no phone number, no approval context): try the next ones in
    /// order until one takes it. Each fallback is an audit event.
    #[allow(clippy::too_many_arguments)]
    async fn fall_back_now(
        &self,
        tx: &mut Tx,
        d: &Delivery<'_>,
        failed: Channel,
        next: &[Channel],
        why: &str,
        now: i64,
        out: &mut Outputs,
    ) -> Result<Option<Channel>> {
        let mut failed = failed;
        let mut why = why.to_string();
        for (i, channel) in next.iter().enumerate() {
            let note = fallback_note(Locale::from_tag(&d.user.locale), failed);
            let result = self
                .send_on(tx, d, *channel, &next[i + 1..], &note, now, out)
                .await?;
            out.events.push(fallback_event(
                d.instance,
                &d.task.activity_id,
                d.reminder_id,
                &d.task.id,
                failed,
                Some(*channel),
                &why,
                now,
            ));
            match result {
                Ok(()) => return Ok(Some(*channel)),
                Err(again) => {
                    failed = *channel;
                    why = again;
                }
            }
        }
        out.events.push(fallback_event(
            d.instance,
            &d.task.activity_id,
            d.reminder_id,
            &d.task.id,
            failed,
            None,
            &why,
            now,
        ));
        Ok(None)
    }

    /// Puts one reminder on one channel. `Ok(Err(why))`: this channel cannot take it now.
    #[allow(clippy::too_many_arguments)]
    async fn send_on(
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
                    kind: "sms".into(),
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

    /// A mail or SMS of a reminder failed for good after it was queued: send it on the next
    /// channel(s) of its list.
    async fn fall_back(
        &self,
        tx: &mut Tx,
        mail: &OutboxMail,
        error: &str,
        now: i64,
        out: &mut Outputs,
    ) -> Result<()> {
        let Ok(f) = serde_json::from_str::<Fallback>(&mail.fallback) else {
            tracing::error!(outbox_id = %mail.id, "unreadable fallback; dropped");
            return Ok(());
        };
        let (Some(record), Some(task), Some(user)) = (
            tx.instance(&f.instance_id).await?,
            tx.task(&f.task_id).await?,
            tx.user(&f.user_id).await?,
        ) else {
            return Ok(());
        };
        let failed = Channel::parse(&f.failed).unwrap_or(Channel::Email);
        let next: Vec<Channel> = f.next.iter().filter_map(|c| Channel::parse(c)).collect();
        if task.status != TaskStatus::Open {
            out.events.push(fallback_event(
                &record.instance,
                &task.activity_id,
                &f.reminder_id,
                &task.id,
                failed,
                None,
                &format!("{error}; the task is no longer open, nothing more sent"),
                now,
            ));
            return Ok(());
        }
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let delivery = Delivery {
            reminder_id: &f.reminder_id,
            instance: &record.instance,
            graph: &graph,
            task: &task,
            user: &user,
            kind: MessageKind::parse(&f.kind).unwrap_or(MessageKind::Reminder),
            sender: "",
            title: f.title.clone(),
            body: f.body.clone(),
        };
        self.fall_back_now(tx, &delivery, failed, &next, error, now, out)
            .await?;
        Ok(())
    }

    /// ListReminders, each with the tasks it chases now and their assignees.
    pub async fn list_reminders(
        &self,
        filter: &ReminderFilter,
        page: &PageRequest,
    ) -> Result<Page<ReminderView>> {
        let found = self.store.list_reminders(filter, page).await?;
        let mut views = Vec::with_capacity(found.items.len());
        for r in found.items {
            let mut tasks = Vec::new();
            if r.state.is_active()
                && let Some(record) = self.store.instance_record(&r.instance_id).await?
            {
                let graph = self
                    .graph_of(
                        &record.instance.definition_key,
                        record.instance.definition_version,
                    )
                    .await?;
                let open = self.store.open_tasks(&r.instance_id).await?;
                let engine_open = engine_tasks(&open);
                let ids: Vec<String> = plan::chased(
                    &graph,
                    &r.end_activity,
                    &r.via_join,
                    &record.joins,
                    &engine_open,
                )
                .into_iter()
                .map(|t| t.id.clone())
                .collect();
                tasks = open.into_iter().filter(|t| ids.contains(&t.id)).collect();
            }
            views.push(ReminderView { reminder: r, tasks });
        }
        Ok(Page {
            items: views,
            next_page_token: found.next_page_token,
        })
    }

    /// Manual 催办: reminds a task's assignee now, on the given channels or the activity's.
    pub async fn remind_now(&self, actor: &Actor, req: RemindNow) -> Result<RemindNowResult> {
        check_request_id(&req.request_id)?;
        if req.task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if req.message.chars().count() > 2000 {
            return Err(Error::invalid("message", "longer than 2000 characters"));
        }
        let scope = format!("remind_now:{}", actor.user_id);
        let channel_list = channel_names(&req.channels).join(",");
        let print = fingerprint(
            &[&req.task_id, &req.message, &channel_list],
            &Default::default(),
        );
        if let Some(id) = self.prior(&scope, &req.request_id, &print).await? {
            return self.manual_reminder(&id).await;
        }
        let task = self.task(&req.task_id).await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let (task, record) = tx.lock_task(&task.id, &task.instance_id).await?;
        let instance = &record.instance;
        crate::policy::can(
            actor,
            crate::policy::Action::RemindNow(crate::policy::InstanceAccess {
                started_by: &instance.started_by,
                participant: false,
            }),
        )?;
        if task.status != TaskStatus::Open {
            return Err(Error::FailedPrecondition(format!(
                "task {} is {}",
                task.id,
                task.status.as_str()
            )));
        }
        let user = tx.user(&task.assignee).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!("{} is not in the directory", task.assignee))
        })?;
        let graph = self
            .graph_of(&instance.definition_key, instance.definition_version)
            .await?;
        let channels = if req.channels.is_empty() {
            let declared = match plan_type_of(&graph, &task.activity_id) {
                Some(id) => reminder_type(&self.store, &graph, &id).await?,
                None => None,
            };
            declared.map_or_else(|| DEFAULT_MANUAL_CHANNELS.to_vec(), |t| t.channels)
        } else {
            if req.channels.contains(&Channel::Sms) && user.phone.trim().is_empty() {
                return Err(Error::invalid(
                    "channels",
                    format!("SMS asked for, but {} has no phone number", user.id),
                ));
            }
            req.channels.clone()
        };
        if let Some(last) = tx.last_manual_reminder(&task.id).await? {
            let next_allowed = last.saturating_add(self.manual_interval_ms());
            if now < next_allowed {
                return Err(Error::FailedPrecondition(format!(
                    "a manual reminder was sent at {}; the next may be sent from {}",
                    crate::clock::rfc3339(last),
                    crate::clock::rfc3339(next_allowed)
                )));
            }
        }
        let id = new_id();
        if !req.request_id.is_empty()
            && !tx
                .claim_request(&scope, &req.request_id, &print, &id, now)
                .await?
        {
            drop(tx);
            return Err(Error::AlreadyExists(
                "request_id was used concurrently".into(),
            ));
        }
        let (title, body) = reminder_text(
            Locale::from_tag(&user.locale),
            &graph.name,
            &task,
            instance,
            0,
            0,
            &req.message,
        );
        let mut out = Outputs::default();
        let delivery = Delivery {
            reminder_id: "",
            instance,
            graph: &graph,
            task: &task,
            user: &user,
            kind: MessageKind::ManualReminder,
            sender: &actor.user_id,
            title,
            body,
        };
        let used = self
            .deliver(&mut tx, &delivery, &channels, now, &mut out)
            .await?;
        let used_names = channel_names(&used).join(",");
        tx.insert_manual_reminder(
            &id,
            &task.id,
            &actor.user_id,
            &user.id,
            &used_names,
            &req.message,
            now,
        )
        .await?;
        let inbox_message_id = out
            .messages
            .first()
            .map(|m| m.id.clone())
            .unwrap_or_default();
        out.events.push(Event {
            instance_id: instance.id.clone(),
            at: now,
            kind: "manual_reminder".into(),
            activity_id: task.activity_id.clone(),
            actor: actor.user_id.clone(),
            detail: json!({"task_id": task.id, "recipient": user.id, "channels": used_names,
                           "message": req.message, "manual_reminder_id": id}),
        });
        tx.insert_messages(&out.messages).await?;
        tx.insert_events(&out.events).await?;
        tx.commit().await?;
        self.publish_messages(out.messages);
        if out.queued_mail {
            self.mailer.wake().notify_one();
        }
        Ok(RemindNowResult {
            task_id: task.id,
            recipient: user.id,
            channels: used,
            inbox_message_id,
            sent_at: now,
        })
    }

    /// The result of an earlier RemindNow, for a retried request id.
    async fn manual_reminder(&self, id: &str) -> Result<RemindNowResult> {
        let row = self
            .store
            .manual_reminder(id)
            .await?
            .ok_or_else(|| Error::not_found("manual reminder", id))?;
        let inbox_message_id = self
            .store
            .message_for_task_at(&row.recipient, &row.task_id, row.sent_at)
            .await?
            .unwrap_or_default();
        Ok(RemindNowResult {
            task_id: row.task_id,
            recipient: row.recipient,
            channels: row.channels.split(',').filter_map(Channel::parse).collect(),
            inbox_message_id,
            sent_at: row.sent_at,
        })
    }
}

async fn manager_of(tx: &mut Tx, user_id: &str) -> Result<Option<User>> {
    let Some(user) = tx.user(user_id).await? else {
        return Ok(None);
    };
    if user.manager_id.is_empty() {
        return Ok(None);
    }
    tx.user(&user.manager_id).await
}

fn plan_type_of(graph: &ProcessDefinition, activity: &str) -> Option<String> {
    match graph.node(activity).map(|(_, n)| &n.kind) {
        Some(crate::engine::definition::NodeKind::UserTask(spec)) => spec.reminder_type.clone(),
        _ => None,
    }
}

fn channel_names(channels: &[Channel]) -> Vec<&'static str> {
    channels.iter().map(|c| c.as_str()).collect()
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

#[allow(clippy::too_many_arguments)]
fn fallback_event(
    instance: &Instance,
    activity: &str,
    reminder_id: &str,
    task_id: &str,
    failed: Channel,
    to: Option<Channel>,
    why: &str,
    now: i64,
) -> Event {
    Event {
        instance_id: instance.id.clone(),
        at: now,
        kind: if to.is_some() {
            "reminder_channel_fallback".into()
        } else {
            "reminder_channel_failed".into()
        },
        activity_id: activity.to_string(),
        actor: SYSTEM.into(),
        detail: json!({"reminder_id": reminder_id, "task_id": task_id, "failed": failed.as_str(),
                       "fallback": to.map(Channel::as_str), "error": why}),
    }
}

fn reminder_text(
    locale: Locale,
    process: &str,
    task: &Task,
    instance: &Instance,
    sent: i64,
    count: i64,
    message: &str,
) -> (String, String) {
    let key = if instance.business_key.is_empty() {
        String::new()
    } else {
        format!(" ({})", instance.business_key)
    };
    let mut body = match locale {
        Locale::ZhCn if count > 0 => format!(
            "「{process}」{key}的「{}」正在等您处理（第 {sent}/{count} 次催办）。",
            task.name
        ),
        Locale::ZhCn => format!("「{process}」{key}的「{}」正在等您处理。", task.name),
        Locale::En if count > 0 => format!(
            "\"{}\" of {process}{key} is waiting for you (reminder {sent} of {count}).",
            task.name
        ),
        Locale::En => format!("\"{}\" of {process}{key} is waiting for you.", task.name),
    };
    if !message.is_empty() {
        body.push('\n');
        body.push_str(message);
    }
    let title = match locale {
        Locale::ZhCn => format!("催办：{}", task.name),
        Locale::En => format!("Reminder: {}", task.name),
    };
    (title, body)
}

fn escalation_text(
    locale: Locale,
    process: &str,
    task: &Task,
    instance: &Instance,
    sent: i64,
) -> (String, String) {
    match locale {
        Locale::ZhCn => (
            format!("升级提醒：{}", task.name),
            format!(
                "「{process}」（{}）的「{}」已催办 {sent} 次仍未处理，当前处理人：{}。",
                instance.business_key, task.name, task.assignee
            ),
        ),
        Locale::En => (
            format!("Escalation: {}", task.name),
            format!(
                "\"{}\" of {process} ({}) is still open after {sent} reminders; it is assigned to {}.",
                task.name, instance.business_key, task.assignee
            ),
        ),
    }
}

fn fallback_note(locale: Locale, failed: Channel) -> String {
    match (locale, failed) {
        (Locale::ZhCn, Channel::Email) => "（邮件未能送达，改由此渠道提醒）".into(),
        (Locale::ZhCn, Channel::Sms) => "（短信未能送达，改由此渠道提醒）".into(),
        (Locale::ZhCn, Channel::Inbox) => "（站内消息未能送达，改由此渠道提醒）".into(),
        (Locale::En, c) => format!("(The {} reminder could not be delivered.)", c.as_str()),
    }
}

/// A reminder with what it chases now.
#[derive(Debug, Clone)]
pub struct ReminderView {
    pub reminder: Reminder,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone)]
pub struct RemindNow {
    pub task_id: String,
    pub message: String,
    pub request_id: String,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Clone)]
pub struct RemindNowResult {
    pub task_id: String,
    pub recipient: String,
    pub channels: Vec<Channel>,
    pub inbox_message_id: String,
    pub sent_at: i64,
}
