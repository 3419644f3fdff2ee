//! The one transition writer (issue 10). Every use case that moves an instance — start,
//! complete, cancel, and the replies and escalations that complete — decides what to do (the
//! engine's [`Transition`] plus the tasks it closes itself) and hands that [`Change`] here.
//! This is the only code that closes and opens tasks, arms and stops reminders, and revokes and
//! issues the approval contexts of the tasks a transition closes and opens, with their mail,
//! events and request id. (An approval alone — resend, revoke, a new address — moves no task; it
//! is decided in `approvals/manage.rs` and written by the same batch builders.)
//!
//! Two steps, so that the database's writer is held for as little as possible:
//! 1. [`prepare`], outside any transaction: reads what the writes need (assignees' addresses,
//!    the closing tasks' pending approval contexts, reminder types), renders and signs the
//!    approval mails, builds the new rows and the answer to the caller, and gathers every
//!    statement into one [`Batch`].
//! 2. [`write`], inside the transaction: reads the instance's active reminders if the
//!    transition stops or re-routes any, then sends the batch in one round trip. The batch's
//!    guards say whether the state the decision was computed from still holds (the instance's
//!    `rev`, the assignees' addresses) and whether the request id was still free; if not, the
//!    caller undoes the batch (a savepoint) and decides again.
use std::sync::Arc;

use super::{
    InstanceView,
    approvals::{Mailer, signing, wants_email},
    new_id,
};
use crate::{
    engine::{
        definition::{APPROVE, ProcessDefinition},
        reminders as plan,
        runtime::{InstanceOutcome, OpenTask, Transition},
    },
    error::Result,
    model::{
        CompletedVia, Delegation, Event, Instance, InstanceStatus, Message, Task, TaskEvent,
        TaskEventKind, TaskStatus, User,
    },
    store::{
        Batch, InstanceRecord, Tx,
        writes::{GUARD_CLAIM, GUARD_INSTANCE, GUARD_USER_CHANGED, Source},
    },
};

pub(super) mod arm;

/// A request id to record with the transition (idempotent retries).
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub scope: String,
    pub request_id: String,
    pub fingerprint: String,
    pub result_id: String,
}

/// A task the use case closes itself (the completed one), with its final fields, and why its
/// pending approval contexts are revoked.
#[derive(Debug, Clone)]
pub(super) struct Closing {
    pub task: Task,
    pub kind: TaskEventKind,
    pub why: String,
}

/// An open task handed to another user (转办, or an escalation's reassign-manager): its
/// assignee changes, its pending approval contexts are revoked and a new one is mailed.
#[derive(Debug, Clone)]
pub(super) struct Handover {
    /// The task with its new assignee.
    pub task: Task,
    pub previous_assignee: String,
    pub why: String,
}

/// 挂起/激活: the instance's status is set by the use case, not the engine, and its waiting
/// reminders are held or released in the same batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    Suspend,
    Resume,
}

/// What a use case decided.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub graph: Arc<ProcessDefinition>,
    /// The instance as the decision read it; for a start, the new instance.
    pub record: InstanceRecord,
    /// A start: the instance is inserted, not updated.
    pub start: bool,
    pub transition: Transition,
    /// The tasks open when the decision was made (read after the instance).
    pub open_before: Vec<Task>,
    pub closing: Vec<Closing>,
    pub handover: Option<Handover>,
    /// Suspends or resumes the instance (the engine's transition then moves nothing).
    pub hold: Option<Hold>,
    /// The use case's own audit events, written after the engine's and the mail's.
    pub events: Vec<Event>,
    /// Who acts, recorded on the engine's events.
    pub actor: String,
    pub claim: Option<Claim>,
    pub now: i64,
}

/// A change ready to write: everything but the reminders it stops.
#[derive(Debug, Clone)]
pub(super) struct Ready {
    batch: Batch,
    graph: Arc<ProcessDefinition>,
    transition: Transition,
    instance_id: String,
    reminders: plan::Plan,
    /// The events of the reminders armed (and of reminder types nobody declares).
    arm_events: Vec<Event>,
    /// The engine's and the approval mails' events, written before the reminders'.
    events: Vec<Event>,
    published: Vec<TaskEvent>,
    /// Messages of the transition (抄送), published after the commit.
    messages: Vec<Message>,
    view: InstanceView,
    guarded: bool,
    claimed: bool,
    queues_mail: bool,
    now: i64,
}

/// What writing came to.
#[derive(Debug)]
pub(super) enum Written {
    Done(Box<Done>),
    /// The instance or an assignee changed after the decision: undo and decide again.
    Stale,
    /// The request id was used meanwhile (a concurrent retry): undo and answer with its result.
    Claimed,
}

#[derive(Debug)]
pub(super) struct Done {
    /// Task events to publish after the commit.
    pub published: Vec<TaskEvent>,
    /// Messages to publish after the commit.
    pub messages: Vec<Message>,
    pub view: InstanceView,
    /// Mail was queued: wake the outbox worker after the commit.
    pub queued_mail: bool,
}

/// Step 1 (outside any transaction, or in the caller's when it already holds the instance):
/// reads what the writes need from `source` and builds them.
pub(super) async fn prepare(
    mut source: Source<'_>,
    mailer: &Mailer,
    change: Change,
) -> Result<Ready> {
    let Change {
        graph,
        record,
        start,
        transition,
        open_before,
        closing,
        handover,
        hold,
        events: own_events,
        actor,
        claim,
        now,
    } = change;
    let instance_id = record.instance.id.clone();
    let (status, error) = match hold {
        Some(Hold::Suspend) => (InstanceStatus::Suspended, String::new()),
        _ => status_of(&transition.outcome),
    };
    let instance = Instance {
        variables: transition.variables.clone(),
        status,
        error: error.clone(),
        updated_at: now,
        ..record.instance.clone()
    };

    // Tasks that close: the use case's own, then the engine's withdrawn and cancelled ones.
    let mut closed: Vec<(Task, TaskEventKind, String)> = closing
        .into_iter()
        .map(|c| (c.task, c.kind, c.why))
        .collect();
    for (ids, status, kind) in [
        (
            &transition.withdraw,
            TaskStatus::Withdrawn,
            TaskEventKind::Withdrawn,
        ),
        (
            &transition.cancel,
            TaskStatus::Cancelled,
            TaskEventKind::Cancelled,
        ),
    ] {
        for id in ids {
            let Some(task) = open_before.iter().find(|t| &t.id == id) else {
                continue;
            };
            let task = Task {
                status,
                completed_at: Some(now),
                ..task.clone()
            };
            closed.push((task, kind, format!("task {}", status.as_str())));
        }
    }
    let opened: Vec<Task> = transition
        .open
        .iter()
        .map(|new| Task {
            id: new_id(),
            instance_id: instance_id.clone(),
            definition_key: instance.definition_key.clone(),
            definition_version: instance.definition_version,
            business_key: instance.business_key.clone(),
            activity_id: new.activity_id.clone(),
            name: new.name.clone(),
            assignee: new.assignee.clone(),
            status: TaskStatus::Open,
            outcome: String::new(),
            comment: String::new(),
            completed_by: String::new(),
            completed_via: None,
            group_id: new.group_id.clone(),
            from_activity: new.from_activity.clone(),
            created_at: now,
            completed_at: None,
            owner: String::new(),
            delegation: Delegation::None,
        })
        .collect();
    let auto_completed = auto_completed_tasks(&instance, &transition, now);

    // Reads, all before the transaction.
    let closing_ids: Vec<String> = closed.iter().map(|(t, _, _)| t.id.clone()).collect();
    let revoked_ids: Vec<String> = closing_ids
        .iter()
        .chain(handover.iter().map(|h| &h.task.id))
        .cloned()
        .collect();
    let pending = source.pending_approvals_of_tasks(&revoked_ids).await?;
    // Tasks that get an approval mail: the opened ones and a handed-over one.
    let mailed: Vec<&Task> = opened
        .iter()
        .chain(handover.iter().map(|h| &h.task))
        .filter(|t| wants_email(&graph, &t.activity_id))
        .collect();
    let mut assignees: Vec<String> = mailed.iter().map(|t| t.assignee.clone()).collect();
    assignees.sort();
    assignees.dedup();
    // A signer's mail names the other signers too: read with the assignees, guarded without them.
    let named = signing::signers_named(&graph, &transition.multi, mailed.iter().copied());
    let users = source
        .users_by_id(&[assignees.as_slice(), named.as_slice()].concat())
        .await?;
    let reminders = plan::plan(&graph, &transition, &engine_tasks(&open_before));
    let (armed, arm_events) = arm::arm(&mut source, &graph, &instance, &reminders, now).await?;

    // 抄送: the users the opened tasks copy in (replyflow:cc).
    let copied = super::carbon_copy::cc_users_of(&graph, &instance, &opened);
    let cc_users = source.users_by_id(&copied).await?;
    let (cc_messages, cc_mails, cc_events) =
        super::carbon_copy::copies_of_opened(mailer, &graph, &instance, &opened, &cc_users, now)?;

    let mut batch = Batch::new();
    if let Some(c) = &claim {
        batch.claim_request(&c.scope, &c.request_id, &c.fingerprint, &c.result_id, now);
    }
    if start {
        batch.insert_instance(&InstanceRecord {
            instance: instance.clone(),
            joins: transition.joins.clone(),
            multi: transition.multi.clone(),
            rev: 0,
        })?;
    } else {
        batch.update_instance_at_rev(
            &instance_id,
            record.rev,
            &transition.variables,
            &transition.joins,
            &transition.multi,
            status,
            &error,
            now,
        )?;
    }
    let mut guarded_users: Vec<&User> = users
        .values()
        .filter(|u| assignees.binary_search(&u.id).is_ok())
        .collect();
    guarded_users.sort_by(|a, b| a.id.cmp(&b.id));
    for user in guarded_users {
        batch.user_unchanged(user);
    }
    match hold {
        Some(Hold::Suspend) => batch.pause_reminders(&instance_id, now),
        Some(Hold::Resume) => batch.resume_reminders(&instance_id, now),
        None => {}
    }
    let closed_tasks: Vec<Task> = closed.iter().map(|(t, _, _)| t.clone()).collect();
    batch.close_tasks(&closed_tasks);
    if let Some(h) = &handover {
        batch.set_assignee(&h.task);
    }
    let revoking = closed
        .iter()
        .map(|(task, _, why)| (task, why))
        .chain(handover.iter().map(|h| (&h.task, &h.why)));
    for (task, why) in revoking {
        let ids: Vec<String> = pending
            .iter()
            .filter(|c| c.task_id == task.id)
            .map(|c| c.id.clone())
            .collect();
        batch.revoke_approvals(&ids, why);
    }
    batch.insert_tasks(&opened);
    batch.insert_tasks(&auto_completed);

    let mut events: Vec<Event> = transition
        .events
        .iter()
        .map(|e| Event {
            instance_id: instance_id.clone(),
            at: now,
            kind: e.kind.to_string(),
            activity_id: e.activity_id.clone(),
            actor: actor.clone(),
            detail: e.detail.clone(),
        })
        .collect();
    let (mut contexts, mut mails) = (Vec::new(), Vec::new());
    for task in &mailed {
        let signing = signing::signing_of(&graph, &transition.multi, task, &users);
        let user = users.get(&task.assignee);
        if let Some(opened) = mailer.approval_for(&graph, &instance, task, user, signing, now)? {
            if let Some((context, mail)) = opened.written {
                contexts.push(context);
                mails.push(mail);
            }
            events.push(opened.event);
        }
    }
    events.extend(cc_events);
    events.extend(own_events);
    mails.extend(cc_mails);
    batch.insert_approvals(&contexts)?;
    batch.insert_outbox(&mails);
    batch.insert_messages(&cc_messages);
    batch.insert_reminders(&armed);

    let mut published: Vec<TaskEvent> = closed
        .into_iter()
        .map(|(task, kind, _)| (task, kind))
        .chain(
            auto_completed
                .into_iter()
                .map(|t| (t, TaskEventKind::Completed)),
        )
        .map(|(task, kind)| TaskEvent {
            kind,
            task,
            previous_assignee: String::new(),
            at: now,
        })
        .collect();
    if let Some(h) = &handover {
        published.push(TaskEvent {
            kind: TaskEventKind::Reassigned,
            task: h.task.clone(),
            previous_assignee: h.previous_assignee.clone(),
            at: now,
        });
    }
    let mut open_after: Vec<Task> = open_before
        .into_iter()
        .filter(|t| !closing_ids.contains(&t.id))
        .map(|t| match &handover {
            Some(h) if h.task.id == t.id => h.task.clone(),
            _ => t,
        })
        .collect();
    open_after.extend(opened.iter().cloned());
    open_after.sort_by(|a, b| a.id.cmp(&b.id));
    let multi = transition.multi.clone();
    published.extend(opened.into_iter().map(|task| TaskEvent {
        kind: TaskEventKind::Opened,
        task,
        previous_assignee: String::new(),
        at: now,
    }));
    Ok(Ready {
        batch,
        graph,
        transition,
        instance_id,
        reminders,
        arm_events,
        events,
        published,
        messages: cc_messages,
        view: InstanceView {
            instance,
            open_tasks: open_after,
            multi,
        },
        guarded: !start,
        claimed: claim.is_some(),
        queues_mail: !mails.is_empty(),
        now,
    })
}

/// Step 2 (inside the transaction): stops and re-routes reminders, then writes the batch in one
/// round trip. On [`Written::Stale`] or [`Written::Claimed`] the batch may have written part of
/// itself: the caller rolls back (a savepoint, or the whole transaction).
pub(super) async fn write(tx: &mut Tx, ready: Ready) -> Result<Written> {
    let Ready {
        mut batch,
        graph,
        transition,
        instance_id,
        reminders,
        arm_events,
        mut events,
        published,
        messages,
        view,
        guarded,
        claimed,
        queues_mail,
        now,
    } = ready;
    let touches_existing = !reminders.stop_activities.is_empty()
        || !reminders.stop_groups.is_empty()
        || !reminders.joins_fired.is_empty()
        || !reminders.joins_recalled.is_empty()
        || reminders.cancel_rest;
    if touches_existing && guarded {
        let active = tx.stoppable_reminders(&instance_id).await?;
        let (saved, stop_events) = arm::stop(&graph, &transition, &reminders, active, now);
        batch.save_reminders(&saved);
        events.extend(stop_events);
    }
    events.extend(arm_events);
    batch.insert_events(&events)?;
    let guards = match tx.run_batch(batch).await {
        // A deadlock or lock timeout with another writer: undo and decide again, like a change.
        Err(crate::error::Error::Aborted(_)) => return Ok(Written::Stale),
        other => other?,
    };
    if claimed && !guards.has(GUARD_CLAIM) {
        return Ok(Written::Claimed);
    }
    if (guarded && !guards.has(GUARD_INSTANCE)) || guards.has(GUARD_USER_CHANGED) {
        return Ok(Written::Stale);
    }
    Ok(Written::Done(Box::new(Done {
        published,
        messages,
        view,
        queued_mail: queues_mail,
    })))
}

/// Tasks the engine passed over as already approved by their assignee (skipIfApprovedBefore):
/// written completed, never mailed or chased.
fn auto_completed_tasks(instance: &Instance, transition: &Transition, now: i64) -> Vec<Task> {
    transition
        .auto_completed
        .iter()
        .map(|new| Task {
            id: new_id(),
            instance_id: instance.id.clone(),
            definition_key: instance.definition_key.clone(),
            definition_version: instance.definition_version,
            business_key: instance.business_key.clone(),
            activity_id: new.activity_id.clone(),
            name: new.name.clone(),
            assignee: new.assignee.clone(),
            status: TaskStatus::Completed,
            outcome: APPROVE.to_owned(),
            comment: "approved earlier in this instance (skipIfApprovedBefore)".to_owned(),
            completed_by: new.assignee.clone(),
            completed_via: Some(CompletedVia::Auto),
            group_id: new.group_id.clone(),
            from_activity: new.from_activity.clone(),
            created_at: now,
            completed_at: Some(now),
            owner: String::new(),
            delegation: Delegation::None,
        })
        .collect()
}

/// The engine's view of open tasks.
pub(in crate::workflow) fn engine_tasks(tasks: &[Task]) -> Vec<OpenTask> {
    tasks
        .iter()
        .map(|t| OpenTask {
            id: t.id.clone(),
            activity_id: t.activity_id.clone(),
            group_id: t.group_id.clone(),
        })
        .collect()
}

/// An instance's status and error for an engine outcome.
pub(in crate::workflow) fn status_of(outcome: &InstanceOutcome) -> (InstanceStatus, String) {
    match outcome {
        InstanceOutcome::Running => (InstanceStatus::Running, String::new()),
        InstanceOutcome::Completed => (InstanceStatus::Completed, String::new()),
        InstanceOutcome::Failed { element_id, reason } => {
            (InstanceStatus::Failed, format!("{element_id}: {reason}"))
        }
        InstanceOutcome::Cancelled { reason } => (InstanceStatus::Cancelled, reason.clone()),
    }
}
