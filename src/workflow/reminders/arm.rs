//! Arming and stopping reminders inside every transition (DESIGN §6): which reminders a
//! transition stops, re-routes or cancels, and which new edges it arms, written in the
//! transition's own transaction.
use serde_json::json;

use crate::{
    engine::{definition::ProcessDefinition, reminders as plan, runtime::Transition},
    error::Result,
    model::{Event, Instance, Reminder, ReminderState, ReminderType, Task},
    store::Tx,
    workflow::{instances::engine_tasks, new_id},
};

use super::SYSTEM;

/// Writes what a transition does to the instance's reminders: stop those whose end activity
/// completed (and a decided deferred choice's whole group), re-route those that waited at a join
/// that fired, arm the new edges, and cancel what is left when the instance ended. Runs inside the
/// transition's transaction; returns its audit events.
pub(in crate::workflow) async fn on_transition(
    tx: &mut Tx,
    graph: &ProcessDefinition,
    instance: &Instance,
    transition: &Transition,
    open_before: &[Task],
    now: i64,
) -> Result<Vec<Event>> {
    let p = plan::plan(graph, transition, &engine_tasks(open_before));
    let mut events = Vec::new();
    let event = |kind: String, activity: &str, detail: serde_json::Value| Event {
        instance_id: instance.id.clone(),
        at: now,
        kind,
        activity_id: activity.to_string(),
        actor: SYSTEM.to_string(),
        detail,
    };
    let touches_existing = !p.stop_activities.is_empty()
        || !p.stop_groups.is_empty()
        || !p.joins_fired.is_empty()
        || p.cancel_rest;
    if touches_existing {
        for mut r in tx.stoppable_reminders(&instance.id).await? {
            let before = r.state;
            let stopped = p.stop_activities.contains(&r.end_activity)
                || (!r.group_id.is_empty() && p.stop_groups.contains(&r.group_id));
            if !stopped && !r.state.is_active() {
                // One that ran out is only ever finished by its end activity (DESIGN §6).
                continue;
            }
            if stopped {
                r.state = plan::finished(r.state);
            } else if !r.via_join.is_empty() && p.joins_fired.contains(&r.via_join) {
                match plan::reroute(graph, &p, transition, &r.end_activity) {
                    Some(join) => {
                        r.via_join = join;
                        tx.save_reminder(&r).await?;
                        continue;
                    }
                    None => r.state = ReminderState::Cancelled,
                }
            } else if p.cancel_rest {
                r.state = ReminderState::Cancelled;
            } else {
                continue;
            }
            r.next_fire_at = None;
            r.finished_at = now;
            tx.save_reminder(&r).await?;
            events.push(event(
                format!("reminder_{}", r.state.as_str()),
                &r.end_activity,
                json!({"reminder_id": r.id, "from": before.as_str(), "start_activity": r.start_activity}),
            ));
        }
    }
    for arm in &p.arm {
        let Some(kind) = reminder_type(tx, graph, &arm.reminder_type).await? else {
            events.push(event(
                "reminder_type_unknown".into(),
                &arm.end_activity,
                json!({"reminder_type": arm.reminder_type,
                       "reason": "neither the definition nor the server declares this reminder type"}),
            ));
            continue;
        };
        let r = Reminder {
            id: new_id(),
            instance_id: instance.id.clone(),
            definition_key: instance.definition_key.clone(),
            start_activity: arm.start_activity.clone(),
            end_activity: arm.end_activity.clone(),
            via_join: arm.via_join.clone(),
            group_id: arm.group_id.clone(),
            reminder_type: kind.id.clone(),
            count: kind.count,
            interval_ms: kind.interval_ms,
            channels: kind.channels.clone(),
            escalation: kind.escalation.clone(),
            state: ReminderState::New,
            sent_count: 0,
            next_fire_at: Some(now.saturating_add(kind.interval_ms)),
            escalated: false,
            created_at: now,
            first_fired_at: 0,
            last_fired_at: 0,
            finished_at: 0,
        };
        tx.insert_reminder(&r).await?;
        events.push(event(
            "reminder_new".into(),
            &r.end_activity,
            json!({"reminder_id": r.id, "start_activity": r.start_activity, "reminder_type": r.reminder_type,
                   "group_id": r.group_id, "via_join": r.via_join, "next_fire_at": r.next_fire_at}),
        ));
    }
    Ok(events)
}

/// A reminder type by id: the definition's own declaration wins over a server-wide one.
pub(super) async fn reminder_type(
    tx: &mut Tx,
    graph: &ProcessDefinition,
    id: &str,
) -> Result<Option<ReminderType>> {
    if let Some(decl) = graph.reminder_types.iter().find(|t| t.id == id) {
        // Parsed and bounded when the definition was deployed.
        let interval_ms = decl.interval.ms();
        return Ok(Some(ReminderType {
            id: decl.id.clone(),
            count: i64::from(decl.count),
            interval_ms,
            channels: decl.channels.clone(),
            escalation: decl.escalation.clone(),
            source: format!("definition:{}", graph.key),
            updated_at: 0,
        }));
    }
    tx.server_reminder_type(id).await
}
