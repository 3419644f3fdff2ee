//! 委派 (DelegateTask, DESIGN §11): the assignee asks a colleague's opinion and gets the task back.
//!
//! Unlike 转办 (ReassignTask), the task does not change hands for good. The mechanics, each one
//! transition through the transition writer with nothing moving in the process:
//! 1. **Delegate**: the task's assignee becomes the delegate, `owner` remembers who delegated it
//!    and `delegation` is `Pending`. Like a hand-over, the owner's approval context is revoked
//!    (their token stops working) and a new approval mail goes to the delegate. Event
//!    `task_delegated`.
//! 2. **The delegate decides** (CompleteTask, by API or by reply): their outcome and comment are
//!    an opinion, not a decision. The task is handed back to the owner with `delegation`
//!    `Resolved` — the delegate's context revoked, a new approval mail to the owner — and the
//!    process does not move. Event `delegate_resolved` with the outcome and comment. An
//!    escalation that completes the task decides it for real.
//! 3. **The owner decides** as usual; theirs is the decision that counts.
//!
//! The task keeps its id throughout, so its reminders keep chasing whoever holds it.
use serde_json::json;

use super::{
    Actor, Workflow,
    idempotency::RequestId,
    tasks::closed,
    transition::{self, Change, Claim, Handover, Written},
};
use crate::{
    engine::{
        definition::{NodeKind, ProcessDefinition},
        runtime::{InstanceOutcome, Transition, outcome_ids},
    },
    error::{Error, Result},
    model::{Delegation, Event, Task, TaskEventKind, TaskStatus},
    policy,
    store::{InstanceRecord, writes::Source},
};

impl Workflow {
    /// Delegates an open task to `user_id` (委派): only its assignee may, never to themselves,
    /// the instance's initiator (four eyes) or someone outside the directory, and not a task that
    /// is itself out on delegation.
    pub async fn delegate_task(
        &self,
        actor: &Actor,
        task_id: &str,
        user_id: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<Task> {
        let request = RequestId::new(
            "delegate_task",
            actor,
            request_id,
            &[task_id, user_id, comment],
        )?;
        if task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if user_id.trim().is_empty() {
            return Err(Error::invalid("user_id", "required"));
        }
        crate::bounds::check_line("user_id", user_id, crate::bounds::MAX_ID_LEN)?;
        crate::bounds::check_text("comment", comment, crate::bounds::MAX_COMMENT_LEN)?;
        if request.earlier(&self.store).await?.is_some() {
            return self.task(task_id).await;
        }
        let task = self.task(task_id).await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if !request.claim_in(&mut tx, task_id, now).await? {
            drop(tx);
            request.taken(&self.store).await?;
            return self.task(task_id).await;
        }
        let (task, record) = tx.lock_task(task_id, &task.instance_id).await?;
        policy::can(
            actor,
            policy::Action::DecideTask {
                assignee: &task.assignee,
            },
        )?;
        if task.status != TaskStatus::Open {
            return Err(closed(&task));
        }
        super::tasks::check_not_suspended(&record.instance)?;
        if task.delegation == Delegation::Pending {
            return Err(Error::FailedPrecondition(format!(
                "task {} is delegated to you by {}: decide it and your opinion goes back to them",
                task.id, task.owner
            )));
        }
        if user_id == actor.user_id {
            return Err(Error::invalid(
                "user_id",
                "a task cannot be delegated to the caller themselves",
            ));
        }
        if user_id == record.instance.started_by {
            return Err(Error::invalid(
                "user_id",
                format!("{user_id} started this instance and may not approve it (four eyes)"),
            ));
        }
        if tx.user(user_id).await?.is_none() {
            return Err(Error::invalid(
                "user_id",
                format!("{user_id:?} is not in the directory (DirectoryService.UpsertUser)"),
            ));
        }
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let delegated = Task {
            assignee: user_id.to_string(),
            owner: task.assignee.clone(),
            delegation: Delegation::Pending,
            ..task.clone()
        };
        let open_before = tx.open_tasks(&task.instance_id).await?;
        let event = Event {
            instance_id: task.instance_id.clone(),
            at: now,
            kind: "task_delegated".into(),
            activity_id: task.activity_id.clone(),
            actor: actor.user_id.clone(),
            detail: json!({
                "task_id": task.id,
                "owner": task.assignee,
                "delegate": user_id,
                "comment": comment,
            }),
        };
        let state = State {
            graph,
            record,
            open_before,
        };
        let change = hand_over(
            state,
            delegated,
            &task.assignee,
            format!("task delegated to {user_id}"),
            event,
            actor,
            now,
        );
        // The transaction holds the instance (locked above): read through it.
        let ready = transition::prepare(Source::Tx(&mut tx), &self.mailer, change).await?;
        let done = match transition::write(&mut tx, ready).await? {
            Written::Done(done) => done,
            Written::Stale | Written::Claimed => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "instance {} changed while locked by this transaction",
                    task.instance_id
                )));
            }
        };
        tx.commit().await?;
        let published = done.published;
        let delegated = published
            .iter()
            .find(|e| e.kind == TaskEventKind::Reassigned)
            .map(|e| e.task.clone())
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("a delegation without its event")))?;
        self.mailer.wake().notify_one();
        self.publish(published);
        tracing::info!(task = %task_id, delegate = %user_id, "task delegated");
        Ok(delegated)
    }
}

/// The delegate's decision of a task out on delegation: the change that hands it back to its
/// owner (the process does not move), and the task as handed back. `Err` for an outcome the
/// task does not accept or variables (an opinion sets none: the owner's decision does).
pub(super) fn hand_back(
    state: State,
    task: &Task,
    actor: &Actor,
    decision: (&str, &str, bool),
    claim: Option<Claim>,
    now: i64,
) -> Result<(Change, Task)> {
    let (outcome, comment, has_variables) = decision;
    if let Some((_, node)) = state.graph.node(&task.activity_id)
        && let NodeKind::UserTask(spec) = &node.kind
        && !spec.outcomes.iter().any(|o| o.id == outcome)
    {
        return Err(Error::invalid(
            "outcome",
            format!(
                "{outcome:?} is not an outcome of this task; expected one of {:?}",
                outcome_ids(spec)
            ),
        ));
    }
    if has_variables {
        return Err(Error::invalid(
            "variables",
            format!(
                "task {} is delegated to you by {}: your decision is an opinion and sets no \
                 variables; {} decides",
                task.id, task.owner, task.owner
            ),
        ));
    }
    let returned = Task {
        assignee: task.owner.clone(),
        delegation: Delegation::Resolved,
        ..task.clone()
    };
    let event = Event {
        instance_id: task.instance_id.clone(),
        at: now,
        kind: "delegate_resolved".into(),
        activity_id: task.activity_id.clone(),
        actor: actor.user_id.clone(),
        detail: json!({
            "task_id": task.id,
            "owner": task.owner,
            "delegate": task.assignee,
            "outcome": outcome,
            "comment": comment,
        }),
    };
    let mut change = hand_over(
        state,
        returned.clone(),
        &task.assignee,
        format!("delegate {} resolved the task ({outcome})", task.assignee),
        event,
        actor,
        now,
    );
    change.claim = claim;
    Ok((change, returned))
}

/// The instance as a hand-over was decided from.
#[derive(Debug)]
pub(super) struct State {
    pub graph: std::sync::Arc<ProcessDefinition>,
    /// The instance, read first.
    pub record: InstanceRecord,
    /// Its open tasks, read after it.
    pub open_before: Vec<Task>,
}

/// A change that only moves `task` to its new holder: the engine's part is the state as it is.
fn hand_over(
    state: State,
    task: Task,
    previous_assignee: &str,
    why: String,
    event: Event,
    actor: &Actor,
    now: i64,
) -> Change {
    let State {
        graph,
        record,
        open_before,
    } = state;
    let unchanged = Transition {
        variables: record.instance.variables.clone(),
        joins: record.joins.clone(),
        multi: record.multi.clone(),
        outcome: InstanceOutcome::Running,
        open: Vec::new(),
        auto_completed: Vec::new(),
        withdraw: Vec::new(),
        cancel: Vec::new(),
        events: Vec::new(),
    };
    Change {
        graph,
        record,
        start: false,
        transition: unchanged,
        open_before,
        closing: Vec::new(),
        handover: Some(Handover {
            task,
            previous_assignee: previous_assignee.to_string(),
            why,
        }),
        hold: None,
        events: vec![event],
        actor: actor.user_id.clone(),
        claim: None,
        now,
    }
}
