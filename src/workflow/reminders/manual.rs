//! Manual 催办 (RemindNow) and ListReminders (DESIGN §6): a reminder sent by hand, rate-limited
//! per task and idempotent per request id, and the reminders with the tasks they chase now.
use serde_json::json;

use super::{Delivery, Outputs, channel_names};
use crate::{
    engine::{definition::ProcessDefinition, reminders as plan},
    error::{Error, Result},
    mail::compose::Locale,
    model::{Channel, Event, MessageKind, Page, Reminder, Task, TaskStatus},
    store::{PageRequest, reminders::ReminderFilter, writes::Source},
    workflow::{Actor, Workflow, idempotency::RequestId, new_id, transition::engine_tasks},
};

/// Channels of a manual reminder when the task's activity has no reminder type.
const DEFAULT_MANUAL_CHANNELS: [Channel; 2] = [Channel::Inbox, Channel::Email];

impl Workflow {
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
                    &r.group_id,
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
        let channel_list = channel_names(&req.channels).join(",");
        let request = RequestId::new(
            "remind_now",
            actor,
            &req.request_id,
            &[&req.task_id, &req.message, &channel_list],
        )?;
        if req.task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if req.message.chars().count() > 2000 {
            return Err(Error::invalid("message", "longer than 2000 characters"));
        }
        if let Some(id) = request.earlier(&self.store).await? {
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
        // 挂起: a suspended request is not chased, by hand or by schedule.
        crate::workflow::tasks::check_not_suspended(instance)?;
        let user = tx.user(&task.assignee).await?.ok_or_else(|| {
            Error::FailedPrecondition(format!("{} is not in the directory", task.assignee))
        })?;
        let graph = self
            .graph_of(&instance.definition_key, instance.definition_version)
            .await?;
        let channels = if req.channels.is_empty() {
            let declared = match plan_type_of(&graph, &task.activity_id) {
                Some(id) => {
                    crate::workflow::transition::arm::reminder_type(
                        &mut Source::Pool(&self.store),
                        &graph,
                        &id,
                    )
                    .await?
                }
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
        if !request.claim_in(&mut tx, &id, now).await? {
            drop(tx);
            return self
                .manual_reminder(&request.taken(&self.store).await?)
                .await;
        }
        let (title, body) = self.mailer.reminder_texts().reminder(
            Locale::from_tag(&user.locale),
            &graph.name,
            &task,
            instance,
            0,
            0,
            &req.message,
        )?;
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

fn plan_type_of(graph: &ProcessDefinition, activity: &str) -> Option<String> {
    match graph.node(activity).map(|(_, n)| &n.kind) {
        Some(crate::engine::definition::NodeKind::UserTask(spec)) => spec.reminder_type.clone(),
        _ => None,
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
