//! Arming and stopping reminders in every transition (DESIGN §6): which of an instance's
//! reminders a transition stops, re-routes or cancels, and which new edges it arms. The
//! transition writer (workflow/transition.rs) reads and writes them; this decides. It lives
//! under the writer (not under `reminders`) so that the writer depends on nothing that
//! depends on it.
use std::collections::HashMap;

use serde_json::json;

use crate::{
    engine::{definition::ProcessDefinition, reminders as plan, runtime::Transition},
    error::Result,
    model::{Event, Instance, Reminder, ReminderState, ReminderType},
    store::writes::Source,
    workflow::new_id,
};

use crate::workflow::REMINDERS_ACTOR as SYSTEM;

/// What a transition does to the instance's active reminders: stop those whose end activity
/// completed (and a decided deferred choice's whole group), re-route those that waited at a
/// join that fired, and cancel what is left when the instance ended. Returns the reminders to
/// save and their events.
pub(in crate::workflow) fn stop(
    graph: &ProcessDefinition,
    transition: &Transition,
    p: &plan::Plan,
    active: Vec<Reminder>,
    now: i64,
) -> (Vec<Reminder>, Vec<Event>) {
    let mut saved = Vec::new();
    let mut events = Vec::new();
    for mut r in active {
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
            match plan::reroute(graph, p, transition, &r.end_activity) {
                Some(join) => {
                    r.via_join = join;
                    saved.push(r);
                    continue;
                }
                None => r.state = ReminderState::Cancelled,
            }
        } else if p.cancel_rest
            // 拿回 took this branch's token back from the join: its edge waits no more.
            || p
                .joins_recalled
                .iter()
                .any(|(join, from)| *join == r.via_join && *from == r.start_activity)
        {
            r.state = ReminderState::Cancelled;
        } else {
            continue;
        }
        r.next_fire_at = None;
        r.finished_at = now;
        events.push(Event {
            instance_id: r.instance_id.clone(),
            at: now,
            kind: format!("reminder_{}", r.state.as_str()),
            activity_id: r.end_activity.clone(),
            actor: SYSTEM.to_string(),
            detail: json!({"reminder_id": r.id, "from": before.as_str(), "start_activity": r.start_activity}),
        });
        saved.push(r);
    }
    (saved, events)
}

/// The reminders a transition arms (DESIGN §6), read of their types included.
pub(in crate::workflow) async fn arm(
    source: &mut Source<'_>,
    graph: &ProcessDefinition,
    instance: &Instance,
    p: &plan::Plan,
    now: i64,
) -> Result<(Vec<Reminder>, Vec<Event>)> {
    let mut armed = Vec::new();
    let mut events = Vec::new();
    let mut types: HashMap<String, Option<ReminderType>> = HashMap::new();
    let event = |kind: String, activity: &str, detail: serde_json::Value| Event {
        instance_id: instance.id.clone(),
        at: now,
        kind,
        activity_id: activity.to_string(),
        actor: SYSTEM.to_string(),
        detail,
    };
    for a in &p.arm {
        if !types.contains_key(&a.reminder_type) {
            let kind = reminder_type(source, graph, &a.reminder_type).await?;
            types.insert(a.reminder_type.clone(), kind);
        }
        let Some(Some(kind)) = types.get(&a.reminder_type) else {
            events.push(event(
                "reminder_type_unknown".into(),
                &a.end_activity,
                json!({"reminder_type": a.reminder_type,
                       "reason": "neither the definition nor the server declares this reminder type"}),
            ));
            continue;
        };
        let r = Reminder {
            id: new_id(),
            instance_id: instance.id.clone(),
            definition_key: instance.definition_key.clone(),
            start_activity: a.start_activity.clone(),
            end_activity: a.end_activity.clone(),
            via_join: a.via_join.clone(),
            group_id: a.group_id.clone(),
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
        events.push(event(
            "reminder_new".into(),
            &r.end_activity,
            json!({"reminder_id": r.id, "start_activity": r.start_activity, "reminder_type": r.reminder_type,
                   "group_id": r.group_id, "via_join": r.via_join, "next_fire_at": r.next_fire_at}),
        ));
        armed.push(r);
    }
    Ok((armed, events))
}

/// A reminder type by id: the definition's own declaration wins over a server-wide one.
pub(in crate::workflow) async fn reminder_type(
    source: &mut Source<'_>,
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
    source.reminder_type(id).await
}
