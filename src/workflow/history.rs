//! 审批记录: the approval trail an OA shows under a form (TaskService.ListTaskHistory), read from
//! the instance's audit events in the order they were written: who did what to which step, when,
//! through which channel, with what comment — decisions and votes, returns, delegations, recalls,
//! hand-overs, carbon copies, withdrawals and resubmissions. Mail bookkeeping and reminder states
//! are left out (ListReminders, ListInboundEmails show those).
use std::collections::HashMap;

use serde_json::Value;

use super::{Actor, Workflow};
use crate::{
    error::{Error, Result},
    model::{CompletedVia, Event, Task},
    store::{PageRequest, TaskFilter},
};

/// The audit events that make up the trail, and the action name each is shown as.
const ACTIONS: &[(&str, &str)] = &[
    ("instance_started", "submitted"),
    ("task_opened", "opened"),
    ("task_completed", "decided"),
    ("signer_voted", "voted"),
    ("multi_instance_decided", "step_decided"),
    ("task_auto_completed", "auto_approved"),
    ("assignee_skipped", "skipped"),
    ("assignee_replaced", "assignee_replaced"),
    ("task_reassigned", "transferred"),
    ("task_delegated", "delegated"),
    ("delegate_resolved", "delegate_answered"),
    ("task_returned", "returned"),
    ("task_recalled", "recalled"),
    ("task_withdrawn", "withdrawn"),
    ("carbon_copied", "carbon_copied"),
    ("instance_pulled_back", "pulled_back"),
    ("instance_resubmitted", "resubmitted"),
    ("instance_withdrawn", "request_withdrawn"),
    ("instance_suspended", "suspended"),
    ("instance_resumed", "resumed"),
    ("instance_cancelled", "cancelled"),
    ("instance_failed", "failed"),
    ("instance_completed", "completed"),
];

/// One line of the trail.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub at: i64,
    pub action: &'static str,
    pub activity_id: String,
    pub task_id: String,
    /// Who acted (the decider, the returner, the initiator…); for `opened`, the assignee.
    pub user: String,
    pub outcome: String,
    pub comment: String,
    pub via: Option<CompletedVia>,
    /// The event as written, for what the fields above do not carry (targets, users copied…).
    pub detail: Value,
}

fn text(detail: &Value, key: &str) -> String {
    detail
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn entry(event: Event, action: &'static str, tasks: &HashMap<String, Task>) -> HistoryEntry {
    let task_id = text(&event.detail, "task_id");
    let task = tasks.get(&task_id);
    let user = ["completed_by", "returned_by", "by", "assignee"]
        .iter()
        .map(|key| text(&event.detail, key))
        .find(|u| !u.is_empty())
        .unwrap_or(event.actor);
    let comment = match text(&event.detail, "comment") {
        c if c.is_empty() && action == "decided" => {
            task.map(|t| t.comment.clone()).unwrap_or_default()
        }
        c => c,
    };
    let via = match action {
        "decided" | "voted" => task.and_then(|t| t.completed_via),
        _ => None,
    };
    HistoryEntry {
        at: event.at,
        action,
        activity_id: event.activity_id,
        task_id,
        user,
        outcome: text(&event.detail, "outcome"),
        comment,
        via,
        detail: event.detail,
    }
}

impl Workflow {
    /// The approval trail of an instance, oldest first; for whoever may read the instance.
    pub async fn task_history(
        &self,
        actor: &Actor,
        instance_id: &str,
    ) -> Result<Vec<HistoryEntry>> {
        if instance_id.is_empty() {
            return Err(Error::invalid("process_instance_id", "required"));
        }
        self.authorize_read_id(actor, instance_id).await?;
        let filter = TaskFilter {
            instance_id: instance_id.to_string(),
            ..TaskFilter::default()
        };
        let mut tasks = HashMap::new();
        let mut page = PageRequest::new(500, "")?;
        loop {
            let got = self.store.list_tasks(&filter, &page).await?;
            tasks.extend(got.items.into_iter().map(|t| (t.id.clone(), t)));
            if got.next_page_token.is_empty() {
                break;
            }
            page = PageRequest::new(500, got.next_page_token)?;
        }
        let events = self.store.events(instance_id).await?;
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let action = ACTIONS.iter().find(|(kind, _)| *kind == event.kind)?.1;
                Some(entry(event, action, &tasks))
            })
            .collect())
    }
}
