//! The approval trail (ListTaskHistory) as the API shows it.
use serde_json::Value;

use super::{completed_via, json_to_struct, timestamp};
use crate::{proto::pb, workflow::history::HistoryEntry};

pub fn history_entry(entry: &HistoryEntry) -> pb::TaskHistoryEntry {
    pb::TaskHistoryEntry {
        at: timestamp(entry.at),
        action: entry.action.to_string(),
        activity_id: entry.activity_id.clone(),
        task_id: entry.task_id.clone(),
        user: entry.user.clone(),
        outcome: entry.outcome.clone(),
        comment: entry.comment.clone(),
        via: completed_via(entry.via) as i32,
        detail: match &entry.detail {
            Value::Object(map) => Some(json_to_struct(map)),
            _ => None,
        },
    }
}
