//! ReminderService: reminder types, armed reminders, manual 催办, effectiveness, and the users'
//! in-system messages. ListReminders and RemindNow live in `reminder_runs`; this file keeps the
//! conversions they share (channels) so that both read the wire the same way.
use std::{collections::HashSet, sync::Arc};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    auth::actor,
    convert::timestamp,
    live_stream::{Live, LiveStream},
    reminder_runs::{self, channel_from_pb, channel_pb},
};
use crate::{
    clock::Millis,
    error::{Error, Result},
    model::{Message, MessageKind, ReminderType},
    policy,
    proto::pb,
    store::{
        MessageSelection, PageRequest,
        reminder_stats::{ReminderStatsFilter, ReminderStatsRow},
    },
    workflow::{Workflow, reminder_types::ReminderTypeInput, reminder_types::interval_text},
};

#[derive(Debug)]
pub(super) struct ReminderApi {
    workflow: Arc<Workflow>,
    shutdown: CancellationToken,
}

impl ReminderApi {
    pub(super) fn new(workflow: Arc<Workflow>, shutdown: CancellationToken) -> Self {
        Self { workflow, shutdown }
    }
}

fn duration_pb(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn reminder_type_from_pb(reminder_type: Option<pb::ReminderType>) -> Result<ReminderTypeInput> {
    let t = reminder_type.ok_or_else(|| Error::invalid("reminder_type", "required"))?;
    let interval_secs = match t.interval_duration {
        None => None,
        Some(d) if d.nanos != 0 => {
            return Err(Error::invalid(
                "reminder_type.interval",
                "interval_duration must be whole seconds",
            ));
        }
        Some(d) => Some(d.seconds),
    };
    Ok(ReminderTypeInput {
        id: t.id,
        count: i64::from(t.count),
        interval: t.interval,
        interval_secs,
        channels: t
            .channels
            .into_iter()
            .map(|c| channel_from_pb(c, "reminder_type.channels"))
            .collect::<Result<_>>()?,
        escalation: t.escalation,
    })
}

fn reminder_type_pb(t: &ReminderType) -> pb::ReminderType {
    pb::ReminderType {
        id: t.id.clone(),
        count: i32::try_from(t.count).unwrap_or(i32::MAX),
        interval: interval_text(t.interval_ms),
        channels: t.channels.iter().map(|c| channel_pb(*c) as i32).collect(),
        escalation: t.escalation.clone(),
        interval_duration: Some(duration_pb(t.interval_ms)),
        source: t.source.clone(),
        updated_at: timestamp(t.updated_at),
    }
}

fn message_kind_pb(kind: MessageKind) -> pb::MessageKind {
    match kind {
        MessageKind::Reminder => pb::MessageKind::Reminder,
        MessageKind::ManualReminder => pb::MessageKind::ManualReminder,
        MessageKind::Escalation => pb::MessageKind::Escalation,
        MessageKind::Notice => pb::MessageKind::Notice,
    }
}

pub(super) fn message_pb(m: &Message) -> pb::Message {
    pb::Message {
        id: m.id.clone(),
        user_id: m.user_id.clone(),
        title: m.title.clone(),
        body: m.body.clone(),
        task_id: m.task_id.clone(),
        read: m.read_at.is_some(),
        created_at: timestamp(m.created_at),
        process_instance_id: m.instance_id.clone(),
        kind: message_kind_pb(m.kind) as i32,
        read_at: m.read_at.and_then(timestamp),
        sender: m.sender.clone(),
    }
}

fn millis(ts: Option<prost_types::Timestamp>, field: &str) -> Result<Option<Millis>> {
    let Some(ts) = ts else {
        return Ok(None);
    };
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(Error::invalid(field, "nanos must be 0 to 999,999,999"));
    }
    ts.seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(ts.nanos / 1_000_000)))
        .map(Some)
        .ok_or_else(|| Error::invalid(field, "out of range"))
}

fn stats_row_pb(row: ReminderStatsRow) -> pb::ReminderStatsRow {
    pb::ReminderStatsRow {
        reminder_type: row.reminder_type,
        activity_id: row.activity_id,
        definition_key: row.definition_key,
        armed: row.armed,
        finished_before_remind: row.finished_before_remind,
        finished_after_remind: row.finished_after_remind,
        failed: row.failed,
        escalated: row.escalated,
        median_time_to_completion_after_first_reminder: row
            .median_after_first_reminder_ms
            .map(duration_pb),
        active: row.active,
        cancelled: row.cancelled,
        reminders_sent: row.reminders_sent,
    }
}

fn i32_count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[tonic::async_trait]
impl pb::reminder_service_server::ReminderService for ReminderApi {
    async fn upsert_reminder_type(
        &self,
        request: Request<pb::UpsertReminderTypeRequest>,
    ) -> Result<Response<pb::ReminderType>, Status> {
        let actor = actor(&request)?;
        policy::can(&actor, policy::Action::UpsertReminderType)?;
        let input = reminder_type_from_pb(request.into_inner().reminder_type)?;
        let stored = self.workflow.upsert_reminder_type(input).await?;
        Ok(Response::new(reminder_type_pb(&stored)))
    }

    async fn list_reminders(
        &self,
        request: Request<pb::ListRemindersRequest>,
    ) -> Result<Response<pb::ListRemindersResponse>, Status> {
        reminder_runs::list_reminders(&self.workflow, request).await
    }

    async fn remind_now(
        &self,
        request: Request<pb::RemindNowRequest>,
    ) -> Result<Response<pb::RemindNowResponse>, Status> {
        reminder_runs::remind_now(&self.workflow, request).await
    }

    async fn reminder_stats(
        &self,
        request: Request<pb::ReminderStatsRequest>,
    ) -> Result<Response<pb::ReminderStatsResponse>, Status> {
        let actor = actor(&request)?;
        policy::can(&actor, policy::Action::ReminderStats)?;
        let req = request.into_inner();
        let filter = ReminderStatsFilter {
            reminder_type: req.reminder_type.trim().to_string(),
            activity_id: req.activity_id.trim().to_string(),
            definition_key: req.definition_key.trim().to_string(),
            since: millis(req.since, "since")?,
            until: millis(req.until, "until")?,
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && until < since
        {
            return Err(Error::invalid("until", "is before since").into());
        }
        let rows = self.workflow.store().reminder_stats(&filter).await?;
        Ok(Response::new(pb::ReminderStatsResponse {
            rows: rows.into_iter().map(stats_row_pb).collect(),
        }))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let found = self
            .workflow
            .list_messages(&actor, &req.user_id, req.unread_only, &page)
            .await?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: found.page.items.iter().map(message_pb).collect(),
            next_page_token: found.page.next_page_token,
            unread_count: i32_count(found.unread_count),
        }))
    }

    async fn mark_messages_read(
        &self,
        request: Request<pb::MarkMessagesReadRequest>,
    ) -> Result<Response<pb::MarkMessagesReadResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let selection = match (req.all, req.message_ids.is_empty()) {
            (true, true) => MessageSelection::All,
            (true, false) => {
                return Err(Error::invalid(
                    "message_ids",
                    "give either message_ids or all, not both",
                )
                .into());
            }
            (false, _) => MessageSelection::Ids(req.message_ids),
        };
        let done = self
            .workflow
            .mark_messages_read(&actor, &req.user_id, selection)
            .await?;
        Ok(Response::new(pb::MarkMessagesReadResponse {
            marked: i32_count(done.marked),
            unread_count: i32_count(done.unread_count),
        }))
    }

    async fn watch_messages(
        &self,
        request: Request<pb::WatchMessagesRequest>,
    ) -> Result<Response<LiveStream<pb::Message>>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let owner = self.workflow.message_owner(&actor, &req.user_id)?;
        // Subscribe before reading the unread ones so that nothing falls between the two; a
        // message committed in between would be in both, so the replayed ids are skipped live.
        let events = self.workflow.subscribe_messages();
        let initial = if req.include_unread {
            self.workflow.unread_messages(&owner).await?
        } else {
            Vec::new()
        };
        let replayed: HashSet<String> = initial.iter().map(|m| m.id.clone()).collect();
        let matches = move |m: &Message| m.user_id == owner && !replayed.contains(&m.id);
        let live = Live {
            initial,
            events,
            shutdown: self.shutdown.clone(),
            resync_hint: "list messages and watch again",
        };
        Ok(Response::new(live.forward(
            matches,
            |m: Message| async move { message_pb(&m) },
        )))
    }
}
