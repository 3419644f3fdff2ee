//! ReminderService: reminder types, armed reminders, manual 催办, effectiveness, and the users'
//! in-system messages. ListReminders and RemindNow live in `reminder_runs`; the wire conversions
//! of both are in `convert`.
use std::{collections::HashSet, sync::Arc};

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    auth::actor,
    convert::{
        i32_count, message_pb, millis, reminder_type_from_pb, reminder_type_pb, stats_row_pb,
    },
    live_stream::{Live, LiveStream},
    reminder_runs,
};
use crate::{
    error::{Error, Result},
    model::Message,
    policy,
    proto::pb,
    store::{MessageSelection, PageRequest, reminder_stats::ReminderStatsFilter},
    workflow::Workflow,
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

    async fn carbon_copy(
        &self,
        request: Request<pb::CarbonCopyRequest>,
    ) -> Result<Response<pb::CarbonCopyResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let user_ids = self
            .workflow
            .carbon_copy(
                &actor,
                crate::workflow::carbon_copy::CarbonCopy {
                    process_instance_id: req.process_instance_id,
                    user_ids: req.user_ids,
                    comment: req.comment,
                    request_id: req.request_id,
                },
            )
            .await?;
        Ok(Response::new(pb::CarbonCopyResponse { user_ids }))
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
