//! ListReminders and RemindNow: the reminders themselves, and the wire form of a channel.
//! `reminder.rs` (the service) calls in here; nothing here calls back.
use tonic::{Request, Response, Status};

use super::{
    auth::actor,
    convert::{self, timestamp},
};
use crate::{
    error::{Error, Result},
    model::Channel,
    policy,
    proto::pb,
    store::{PageRequest, reminders::ReminderFilter},
    workflow::{
        Workflow,
        reminder_types::interval_text,
        reminders::{RemindNow, ReminderView},
    },
};

pub(super) fn channel_pb(channel: Channel) -> pb::Channel {
    match channel {
        Channel::Inbox => pb::Channel::Inbox,
        Channel::Email => pb::Channel::Email,
        Channel::Sms => pb::Channel::Sms,
    }
}

/// A wire channel; UNSPECIFIED and unknown numbers are refused naming `field`.
pub(super) fn channel_from_pb(value: i32, field: &str) -> Result<Channel> {
    match pb::Channel::try_from(value) {
        Ok(pb::Channel::Inbox) => Ok(Channel::Inbox),
        Ok(pb::Channel::Email) => Ok(Channel::Email),
        Ok(pb::Channel::Sms) => Ok(Channel::Sms),
        Ok(pb::Channel::Unspecified) => Err(Error::invalid(
            field,
            "CHANNEL_UNSPECIFIED is not a channel: use CHANNEL_INBOX, CHANNEL_EMAIL or CHANNEL_SMS",
        )),
        Err(_) => Err(Error::invalid(field, format!("unknown Channel {value}"))),
    }
}

fn reminder_pb(view: &ReminderView) -> pb::Reminder {
    let r = &view.reminder;
    let at = |ms: i64| if ms == 0 { None } else { timestamp(ms) };
    pb::Reminder {
        id: r.id.clone(),
        process_instance_id: r.instance_id.clone(),
        start_activity_id: r.start_activity.clone(),
        end_activity_id: r.end_activity.clone(),
        reminder_type: r.reminder_type.clone(),
        state: convert::reminder_state(r.state) as i32,
        sent_count: i32::try_from(r.sent_count).unwrap_or(i32::MAX),
        next_fire_at: r.next_fire_at.and_then(timestamp),
        group_id: r.group_id.clone(),
        created_at: timestamp(r.created_at),
        last_fired_at: at(r.last_fired_at),
        finished_at: at(r.finished_at),
        count: i32::try_from(r.count).unwrap_or(i32::MAX),
        interval: interval_text(r.interval_ms),
        escalation: r.escalation.clone(),
        escalated: r.escalated,
        task_ids: view.tasks.iter().map(|t| t.id.clone()).collect(),
        recipients: view.tasks.iter().map(|t| t.assignee.clone()).collect(),
    }
}

pub(super) async fn list_reminders(
    workflow: &Workflow,
    request: Request<pb::ListRemindersRequest>,
) -> Result<Response<pb::ListRemindersResponse>, Status> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let page = PageRequest::new(req.page_size, req.page_token)?;
    if !req.process_instance_id.is_empty() {
        workflow
            .authorize_read_id(&actor, &req.process_instance_id)
            .await?;
    } else if !req.recipient.is_empty() {
        policy::can(
            &actor,
            policy::Action::ReadInboxOf {
                user_id: &req.recipient,
            },
        )?;
    } else if req.task_id.is_empty() {
        policy::can(&actor, policy::Action::ListAllReminders)?;
    }
    let mut filter = ReminderFilter {
        instance_id: req.process_instance_id,
        recipient: req.recipient,
        state: convert::reminder_state_filter(req.state)?,
        reminder_type: req.reminder_type,
        ..ReminderFilter::default()
    };
    if !req.task_id.is_empty() {
        // Reminders chasing a task: those of its instance that end at its activity.
        let task = workflow.task(&req.task_id).await?;
        workflow
            .authorize_task_read(&actor, &task.assignee, &task.instance_id)
            .await?;
        if !filter.instance_id.is_empty() && filter.instance_id != task.instance_id {
            return Err(Error::invalid(
                "task_id",
                "the task belongs to another process instance than process_instance_id",
            )
            .into());
        }
        filter.instance_id = task.instance_id;
        filter.end_activity = task.activity_id;
    }
    let page = workflow.list_reminders(&filter, &page).await?;
    Ok(Response::new(pb::ListRemindersResponse {
        reminders: page.items.iter().map(reminder_pb).collect(),
        next_page_token: page.next_page_token,
    }))
}

pub(super) async fn remind_now(
    workflow: &Workflow,
    request: Request<pb::RemindNowRequest>,
) -> Result<Response<pb::RemindNowResponse>, Status> {
    let actor = actor(&request)?;
    let req = request.into_inner();
    let channels = req
        .channels
        .iter()
        .map(|c| channel_from_pb(*c, "channels"))
        .collect::<Result<Vec<_>, _>>()?;
    let done = workflow
        .remind_now(
            &actor,
            RemindNow {
                task_id: req.task_id,
                message: req.message,
                request_id: req.request_id,
                channels,
            },
        )
        .await?;
    Ok(Response::new(pb::RemindNowResponse {
        task_id: done.task_id,
        recipient: done.recipient,
        channels: done
            .channels
            .iter()
            .map(|c| channel_pb(*c) as i32)
            .collect(),
        inbox_message_id: done.inbox_message_id,
        sent_at: timestamp(done.sent_at),
    }))
}
