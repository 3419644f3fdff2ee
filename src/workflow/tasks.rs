//! Listing, completing and reassigning tasks. Completion is the heart of the engine's use: the
//! instance is locked first, the task re-read under the lock, and the whole transition written in
//! the same transaction, so two completions racing on one instance run one after the other and a
//! parallel join fires once.
//!
//! CompleteTask computes the transition (conditions included) *before* its transaction, from a
//! snapshot of the instance, so that no CEL runs while SQLite's one writer is held (DESIGN §12).
//! Under the lock it re-reads the instance; if anything the engine reads changed meanwhile, it
//! drops the transaction and computes again, at most [`PREPARE_ATTEMPTS`] times, then answers
//! ABORTED (retry with the same request id). Replies and escalations prepare their completions
//! the same way before their transactions ([`Workflow::complete_in_prepared`]): no path computes
//! a transition while holding the lock.
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{
    Actor, InstanceView, Workflow, check_request_id, fingerprint, instances::engine_tasks,
    instances::write_transition, new_id,
};
use crate::{
    engine::{
        definition::{NodeKind, ProcessDefinition},
        runtime::{self, Action, ActionError, JoinState, OpenTask, Snapshot, Transition},
    },
    error::{Error, Result},
    model::{CompletedVia, Event, Page, Task, TaskEvent, TaskEventKind, TaskStatus},
    policy,
    store::{InstanceRecord, PageRequest, TaskFilter, Tx},
};

/// How many times CompleteTask computes a completion outside the lock, when the instance keeps
/// changing between its snapshot and its lock, before it answers ABORTED. Writers queue in order
/// on SQLite, so an attempt is stale only when one queued before it changed the same instance.
const PREPARE_ATTEMPTS: usize = 20;

/// A completion computed outside the transaction, valid while the instance still holds what it
/// was computed from.
#[derive(Debug)]
pub(super) struct Prepared {
    /// What was asked (outcome, comment, variables), so that a completion prepared for one
    /// request is never applied for another.
    request: (String, String, Map<String, Value>),
    graph: Arc<ProcessDefinition>,
    variables: Map<String, Value>,
    joins: JoinState,
    open: Vec<OpenTask>,
    transition: std::result::Result<Transition, ActionError>,
}

impl Prepared {
    fn is_for(&self, req: &CompleteTask) -> bool {
        self.request.0 == req.outcome
            && self.request.1 == req.comment
            && self.request.2 == req.variables
    }

    /// Everything the engine read is unchanged: the transition computed from it stands.
    fn still_holds(&self, record: &InstanceRecord, open: &[OpenTask]) -> bool {
        self.variables == record.instance.variables
            && self.joins == record.joins
            && self.open == open
    }
}

/// What completing under the lock came to.
enum Locked {
    Done(Box<Task>, Vec<TaskEvent>),
    /// The instance changed after the snapshot: drop the transaction and prepare again.
    Stale,
}

#[derive(Debug, Clone)]
pub struct CompleteTask {
    pub task_id: String,
    pub outcome: String,
    pub comment: String,
    pub variables: Map<String, Value>,
    pub request_id: String,
    pub via: CompletedVia,
}

impl Workflow {
    pub async fn task(&self, id: &str) -> Result<Task> {
        if id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        self.store
            .task(id)
            .await?
            .ok_or_else(|| Error::not_found("task", id))
    }

    pub async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> Result<Page<Task>> {
        self.store.list_tasks(filter, page).await
    }

    pub async fn complete_task(
        &self,
        actor: &Actor,
        req: CompleteTask,
    ) -> Result<(Task, InstanceView)> {
        check_request_id(&req.request_id)?;
        if req.task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if req.outcome.trim().is_empty() {
            return Err(Error::invalid("outcome", "required"));
        }
        crate::bounds::check_line("outcome", &req.outcome, crate::bounds::MAX_ID_LEN)?;
        crate::bounds::check_text("comment", &req.comment, crate::bounds::MAX_COMMENT_LEN)?;
        let scope = format!("complete_task:{}", actor.user_id);
        let print = fingerprint(&[&req.task_id, &req.outcome, &req.comment], &req.variables);
        if self.prior(&scope, &req.request_id, &print).await?.is_some() {
            return self.task_and_instance(&req.task_id).await;
        }
        // The instance a task belongs to never changes: find it outside the transaction.
        let task = self.task(&req.task_id).await?;
        // Refused before any condition is evaluated, so that a caller who may not decide the
        // task cannot spend the server's condition budget; both are checked again under the lock.
        if req.via != CompletedVia::Escalation {
            check_can_complete(&task, actor)?;
        }
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        check_writable(&graph, &task, &req.variables)?;
        let now = self.now();
        for attempt in 1..=PREPARE_ATTEMPTS {
            let prepared = self
                .prepare_completion(actor, &task.instance_id, &req)
                .await?
                .ok_or_else(|| Error::not_found("process instance", &task.instance_id))?;
            let mut tx = self.store.begin().await?;
            if !req.request_id.is_empty()
                && !tx
                    .claim_request(&scope, &req.request_id, &print, &req.task_id, now)
                    .await?
            {
                drop(tx);
                return self.task_and_instance(&req.task_id).await;
            }
            let locked = self
                .complete_locked(&mut tx, actor, &task.instance_id, &req, now, &prepared)
                .await?;
            let Locked::Done(completed, published) = locked else {
                drop(tx);
                tracing::debug!(task = %task.id, attempt, "instance changed before the lock; preparing again");
                continue;
            };
            tx.commit().await?;
            tracing::info!(task = %task.id, outcome = %req.outcome, via = req.via.as_str(), "task completed");
            self.publish(published);
            self.mailer.wake().notify_one();
            let instance = self.instance(&task.instance_id).await?;
            return Ok((*completed, instance));
        }
        Err(Error::Aborted(format!(
            "process instance {} kept changing while task {} was being completed; send the same request again",
            task.instance_id, task.id
        )))
    }

    /// Completes a task inside the caller's transaction (a reply's effect commits with its
    /// inbound-log row) with a transition `prepared` before the transaction (a reply's read-only
    /// checks, the scheduler before its tick), so that no condition is evaluated under the write
    /// lock. When the instance changed in between, or nothing was prepared for this request, it
    /// is [`Error::Aborted`]: the caller checks again from the new state. Returns the task as
    /// completed and the task events to publish after the commit.
    pub(super) async fn complete_in_prepared(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
        now: i64,
        prepared: Option<&Prepared>,
    ) -> Result<(Task, Vec<TaskEvent>)> {
        // Prepared for this very request (outcome, comment, variables) or not used at all.
        let Some(prepared) = prepared.filter(|p| p.is_for(req)) else {
            return Err(Error::Aborted(format!(
                "task {}: no completion was prepared for this request",
                req.task_id
            )));
        };
        match self
            .complete_locked(tx, actor, instance_id, req, now, prepared)
            .await?
        {
            Locked::Done(task, published) => Ok((*task, published)),
            Locked::Stale => Err(Error::Aborted(format!(
                "process instance {instance_id} changed after task {} was checked",
                req.task_id
            ))),
        }
    }

    /// Computes a completion from a snapshot read outside any transaction; `None` when the
    /// instance is gone (the locked path then reports it).
    pub(super) async fn prepare_completion(
        &self,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
    ) -> Result<Option<Prepared>> {
        let Some(record) = self.store.instance_record(instance_id).await? else {
            return Ok(None);
        };
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let open = engine_tasks(&self.store.open_tasks(instance_id).await?);
        let transition = self.compute_completion(&graph, &record, &open, actor, req);
        Ok(Some(Prepared {
            request: (
                req.outcome.clone(),
                req.comment.clone(),
                req.variables.clone(),
            ),
            graph,
            variables: record.instance.variables,
            joins: record.joins,
            open,
            transition,
        }))
    }

    fn compute_completion(
        &self,
        graph: &ProcessDefinition,
        record: &InstanceRecord,
        open: &[OpenTask],
        actor: &Actor,
        req: &CompleteTask,
    ) -> std::result::Result<Transition, ActionError> {
        runtime::apply(
            graph,
            Snapshot {
                variables: &record.instance.variables,
                joins: &record.joins,
                open_tasks: open,
            },
            Action::CompleteTask {
                task_id: &req.task_id,
                outcome: &req.outcome,
                comment: &req.comment,
                completed_by: &actor.user_id,
                variables: &req.variables,
            },
            self.limits(),
            &mut new_id,
        )
    }

    /// Completes a task with a transition `prepared` outside the transaction: used if the
    /// instance still holds what it was computed from, else [`Locked::Stale`]. Locks the instance
    /// first.
    async fn complete_locked(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
        now: i64,
        prepared: &Prepared,
    ) -> Result<Locked> {
        let (task, record) = tx.lock_task(&req.task_id, instance_id).await?;
        if req.via == CompletedVia::Escalation {
            // The scheduler completes a task when its reminders ran out (`complete:<outcome>`).
            if task.status != TaskStatus::Open {
                return Err(closed(&task));
            }
        } else {
            check_can_complete(&task, actor)?;
        }
        let open = tx.open_tasks(&task.instance_id).await?;
        let open_now = engine_tasks(&open);
        if !prepared.still_holds(&record, &open_now) {
            return Ok(Locked::Stale);
        }
        let (graph, transition) = (prepared.graph.clone(), prepared.transition.clone());
        check_writable(&graph, &task, &req.variables)?;
        let transition = transition.map_err(|e| match e {
            ActionError::UnknownOutcome { outcome, allowed } => Error::invalid(
                "outcome",
                format!("{outcome:?} is not an outcome of this task; expected one of {allowed:?}"),
            ),
            other => Error::Internal(anyhow::anyhow!("completing task {}: {other}", task.id)),
        })?;
        let completed = Task {
            status: TaskStatus::Completed,
            outcome: req.outcome.clone(),
            comment: req.comment.clone(),
            completed_by: actor.user_id.clone(),
            completed_via: Some(req.via),
            completed_at: Some(now),
            ..task.clone()
        };
        if !tx.close_task(&completed).await? {
            return Err(Error::FailedPrecondition(format!(
                "task {} is no longer open",
                task.id
            )));
        }
        self.mailer
            .close_approvals(
                tx,
                &task.id,
                &format!("task completed via {}", req.via.as_str()),
                now,
            )
            .await?;
        let mut published = vec![TaskEvent {
            kind: TaskEventKind::Completed,
            task: completed.clone(),
            previous_assignee: String::new(),
            at: now,
        }];
        published.extend(
            write_transition(
                tx,
                &self.mailer,
                &graph,
                &record.instance,
                &transition,
                &open,
                actor,
                now,
            )
            .await?,
        );
        Ok(Locked::Done(Box::new(completed), published))
    }

    async fn task_and_instance(&self, task_id: &str) -> Result<(Task, InstanceView)> {
        let task = self.task(task_id).await?;
        let instance = self.instance(&task.instance_id).await?;
        Ok((task, instance))
    }

    /// Hands an open task to another user (转办): its assignee or an admin may, never to the
    /// instance's initiator.
    pub async fn reassign_task(
        &self,
        actor: &Actor,
        task_id: &str,
        new_assignee: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<Task> {
        check_request_id(request_id)?;
        if task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if new_assignee.trim().is_empty() {
            return Err(Error::invalid("new_assignee", "required"));
        }
        crate::bounds::check_line("new_assignee", new_assignee, crate::bounds::MAX_ID_LEN)?;
        crate::bounds::check_text("comment", comment, crate::bounds::MAX_COMMENT_LEN)?;
        let scope = format!("reassign_task:{}", actor.user_id);
        let print = fingerprint(&[task_id, new_assignee, comment], &Map::new());
        if self.prior(&scope, request_id, &print).await?.is_some() {
            return self.task(task_id).await;
        }
        let task = self.task(task_id).await?;
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if !request_id.is_empty()
            && !tx
                .claim_request(&scope, request_id, &print, task_id, now)
                .await?
        {
            drop(tx);
            return self.task(task_id).await;
        }
        let event = self
            .reassign_in(
                &mut tx,
                &Reassignment {
                    task_id,
                    instance_id: &task.instance_id,
                    new_assignee,
                    actor,
                    authority: ReassignAuthority::AssigneeOrAdmin,
                    comment,
                    via: "api",
                },
                now,
            )
            .await?;
        tx.commit().await?;
        let reassigned = event.task.clone();
        self.mailer.wake().notify_one();
        self.publish(vec![event]);
        Ok(reassigned)
    }

    /// Hands an open task to another user inside the caller's transaction: the one place every
    /// hand-over goes through (TaskService.ReassignTask, a `delegate <email>` reply, reminder
    /// escalation `reassign-manager`), so that each does the same things. Locks the instance
    /// first, then checks under the lock: the task is open, `r.authority` allows `r.actor`, the
    /// new assignee is in the directory and is not the current one (`InvalidArgument` on
    /// `new_assignee`, `PermissionDenied`, `FailedPrecondition`). Then it sets the assignee,
    /// revokes the task's pending approval contexts (the old token stops working; mail of theirs
    /// not yet sent is dropped), opens a new approval context and queues its mail to the new
    /// assignee (when email approval applies), and writes the `task_reassigned` audit event.
    ///
    /// Returns the event to publish once the caller has committed; the caller also wakes the
    /// mailer (`self.mailer.wake()`) after the commit.
    pub(crate) async fn reassign_in(
        &self,
        tx: &mut Tx,
        r: &Reassignment<'_>,
        now: i64,
    ) -> Result<TaskEvent> {
        let (task, record) = tx.lock_task(r.task_id, r.instance_id).await?;
        match r.authority {
            ReassignAuthority::System => {}
            ReassignAuthority::Assignee => policy::can(
                r.actor,
                policy::Action::DecideTask {
                    assignee: &task.assignee,
                },
            )?,
            ReassignAuthority::AssigneeOrAdmin => policy::can(
                r.actor,
                policy::Action::ReassignTask {
                    assignee: &task.assignee,
                },
            )?,
        }
        if task.status != TaskStatus::Open {
            return Err(closed(&task));
        }
        if r.new_assignee == task.assignee {
            return Err(Error::invalid(
                "new_assignee",
                format!("the task is already assigned to {}", r.new_assignee),
            ));
        }
        // Whoever may hand a task on may not hand it to themselves: an admin would otherwise
        // make themselves the assignee and decide (four eyes).
        if r.new_assignee == r.actor.user_id {
            return Err(Error::invalid(
                "new_assignee",
                "a task cannot be handed to the caller themselves",
            ));
        }
        // Four eyes: whoever hands it on, the initiator never approves their own request.
        if r.new_assignee == record.instance.started_by {
            return Err(Error::invalid(
                "new_assignee",
                format!(
                    "{} started this instance and may not approve it (four eyes)",
                    r.new_assignee
                ),
            ));
        }
        if tx.user(r.new_assignee).await?.is_none() {
            return Err(Error::invalid(
                "new_assignee",
                format!(
                    "{:?} is not in the directory (DirectoryService.UpsertUser)",
                    r.new_assignee
                ),
            ));
        }
        tx.set_assignee(&task.id, r.new_assignee).await?;
        self.mailer
            .close_approvals(
                tx,
                &task.id,
                &format!("task reassigned to {}", r.new_assignee),
                now,
            )
            .await?;
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let reassigned = Task {
            assignee: r.new_assignee.to_string(),
            ..task.clone()
        };
        let mail_event = self
            .mailer
            .open_approval(tx, &graph, &record.instance, &reassigned, now)
            .await?;
        if let Some(event) = mail_event {
            tx.insert_events(&[event]).await?;
        }
        tx.insert_events(&[Event {
            instance_id: task.instance_id.clone(),
            at: now,
            kind: "task_reassigned".into(),
            activity_id: task.activity_id.clone(),
            actor: r.actor.user_id.clone(),
            detail: json!({
                "task_id": task.id,
                "from": task.assignee,
                "to": r.new_assignee,
                "comment": r.comment,
                "via": r.via,
            }),
        }])
        .await?;
        Ok(TaskEvent {
            kind: TaskEventKind::Reassigned,
            task: reassigned,
            previous_assignee: task.assignee,
            at: now,
        })
    }
}

/// Who may hand a task on; [`Workflow::reassign_in`] checks it under the instance lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReassignAuthority {
    /// The assignee or an admin (TaskService.ReassignTask, 转办).
    AssigneeOrAdmin,
    /// Only the current assignee (a `delegate <email>` reply by mail).
    Assignee,
    /// The server itself, with no caller to check (reminder escalation).
    System,
}

/// One hand-over, for [`Workflow::reassign_in`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reassignment<'a> {
    pub task_id: &'a str,
    /// The task's instance (it never changes; the caller knows it from reading the task).
    pub instance_id: &'a str,
    /// A user id in the directory.
    pub new_assignee: &'a str,
    /// Who hands it on: the audit event's actor (an empty user id for the server itself).
    pub actor: &'a Actor,
    pub authority: ReassignAuthority,
    /// Why, in the user's words or the server's (the audit event's comment).
    pub comment: &'a str,
    /// How: `api`, `email`, `escalation` (the audit event's detail).
    pub via: &'a str,
}

fn check_can_complete(task: &Task, actor: &Actor) -> Result<()> {
    policy::can(
        actor,
        policy::Action::DecideTask {
            assignee: &task.assignee,
        },
    )?;
    if task.status != TaskStatus::Open {
        return Err(closed(task));
    }
    Ok(())
}

/// Variables are not a back door (DESIGN §12): a completion sets only what its user task lists in
/// `replyflow:writable`; the parser already refused lists naming activity records, `initiator`,
/// `outcome` or assignee variables.
fn check_writable(
    graph: &ProcessDefinition,
    task: &Task,
    variables: &Map<String, Value>,
) -> Result<()> {
    let writable = match graph.node(&task.activity_id).map(|(_, node)| &node.kind) {
        Some(NodeKind::UserTask(spec)) => spec.writable.as_slice(),
        _ => &[],
    };
    match variables.keys().find(|name| !writable.contains(name)) {
        None => Ok(()),
        Some(name) if writable.is_empty() => Err(Error::invalid(
            format!("variables.{name}"),
            format!(
                "user task {} lets a completion set no variables (replyflow:writable)",
                task.activity_id
            ),
        )),
        Some(name) => Err(Error::invalid(
            format!("variables.{name}"),
            format!(
                "user task {} lets a completion set only {} (replyflow:writable)",
                task.activity_id,
                writable.join(", ")
            ),
        )),
    }
}

fn closed(task: &Task) -> Error {
    let by = if task.completed_by.is_empty() {
        String::new()
    } else {
        format!(" by {}", task.completed_by)
    };
    Error::FailedPrecondition(format!(
        "task {} is already {}{by}",
        task.id,
        task.status.as_str()
    ))
}
