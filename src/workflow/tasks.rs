//! Listing, completing and reassigning tasks.
//!
//! A completion is decided outside any transaction, from the instance read first and its open
//! tasks read after it ([`Workflow::prepare_completion`]): the checks (the task is open, the
//! caller may decide it, the variables are writable), the engine's transition (conditions
//! included) and everything the transition writer needs (`transition::prepare`). The write
//! itself is one batch whose guard is the instance's `rev`: if another transition of the
//! instance committed in between, the batch is undone and the completion decided again, at most
//! [`PREPARE_ATTEMPTS`] times, then ABORTED (retry with the same request id). So no CEL runs and
//! no mail is rendered while a transaction is open (DESIGN §12), and two completions racing on
//! one instance still apply one after the other: a parallel join fires once.
use serde_json::{Map, Value, json};

use super::{
    Actor, InstanceView, Workflow, delegation,
    idempotency::RequestId,
    new_id,
    transition::{self, Change, Claim, Closing, Handover, Ready, Written, engine_tasks},
};
use crate::{
    engine::{
        assignee::People,
        definition::{NodeKind, ProcessDefinition},
        runtime::{self, Action, ActionError, InstanceOutcome, OpenTask, Snapshot, Transition},
    },
    error::{Error, Result},
    model::{
        CompletedVia, Delegation, Event, Instance, InstanceStatus, Page, Task, TaskEvent,
        TaskEventKind, TaskStatus,
    },
    policy,
    store::{InstanceRecord, PageRequest, TaskFilter, Tx, writes::Source},
};

/// How many times a transition is decided again when its instance changed between the decision
/// and the write, before the caller is answered ABORTED.
pub(super) const PREPARE_ATTEMPTS: usize = 20;

/// A completion decided outside the transaction, with what it was decided for.
#[derive(Debug)]
pub(super) struct Prepared {
    /// What was asked (outcome, comment, variables) and by whom, so that a completion prepared
    /// for one request is never applied for another.
    request: (String, String, Map<String, Value>),
    actor: String,
    /// The transition ready to write and the task as completed, or why it may not be.
    decided: std::result::Result<(Ready, Task), Refusal>,
}

impl Prepared {
    fn is_for(&self, req: &CompleteTask, actor: &Actor) -> bool {
        self.actor == actor.user_id
            && self.request.0 == req.outcome
            && self.request.1 == req.comment
            && self.request.2 == req.variables
    }
}

/// Why a prepared completion may not be written, kept to answer each time it is asked.
#[derive(Debug, Clone)]
enum Refusal {
    Invalid { field: String, reason: String },
    NotFound { what: &'static str, id: String },
    Precondition(String),
    Permission(String),
    Internal(String),
}

impl Refusal {
    fn error(&self) -> Error {
        match self.clone() {
            Refusal::Invalid { field, reason } => Error::InvalidArgument { field, reason },
            Refusal::NotFound { what, id } => Error::NotFound { what, id },
            Refusal::Precondition(why) => Error::FailedPrecondition(why),
            Refusal::Permission(why) => Error::PermissionDenied(why),
            Refusal::Internal(why) => Error::Internal(anyhow::anyhow!(why)),
        }
    }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument { field, reason } => Refusal::Invalid { field, reason },
            Error::NotFound { what, id } => Refusal::NotFound { what, id },
            Error::FailedPrecondition(why) => Refusal::Precondition(why),
            Error::PermissionDenied(why) => Refusal::Permission(why),
            other => Refusal::Internal(format!("{other:#}")),
        }
    }
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
        let request = RequestId::with_variables(
            "complete_task",
            actor,
            &req.request_id,
            &[&req.task_id, &req.outcome, &req.comment],
            &req.variables,
        )?;
        if req.task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if req.outcome.trim().is_empty() {
            return Err(Error::invalid("outcome", "required"));
        }
        crate::bounds::check_line("outcome", &req.outcome, crate::bounds::MAX_ID_LEN)?;
        crate::bounds::check_text("comment", &req.comment, crate::bounds::MAX_COMMENT_LEN)?;
        let claim = request.claim(&req.task_id);
        for attempt in 1..=PREPARE_ATTEMPTS {
            // The first read: the instance, found from the task (the task's instance never
            // changes). No request-id lookup first: a retry is recognised when its completion is
            // refused (the task is closed) or when the batch finds its request id taken.
            let Some(mut record) = self.store.instance_record_of_task(&req.task_id).await? else {
                return match request.earlier(&self.store).await? {
                    Some(_) => self.task_and_instance(&req.task_id).await,
                    None => Err(Error::not_found("task", &req.task_id)),
                };
            };
            // Held until the write returns: decisions of one instance take turns (turns.rs).
            let turn = self.turns.take(&record.instance.id).await;
            if turn.waited {
                match self.store.instance_record_of_task(&req.task_id).await? {
                    Some(fresh) => record = fresh,
                    None => continue,
                }
            }
            let prepared = self
                .prepare_from(actor, record, &req, claim.clone())
                .await?;
            let (ready, completed) = match prepared.decided {
                Ok(decided) => decided,
                Err(refusal) => {
                    return match request.earlier(&self.store).await? {
                        Some(_) => self.task_and_instance(&req.task_id).await,
                        None => Err(refusal.error()),
                    };
                }
            };
            match self.write_ready(ready).await? {
                Written::Done(done) => {
                    tracing::info!(task = %req.task_id, outcome = %req.outcome, via = req.via.as_str(), "task completed");
                    return Ok((completed, self.after_commit(done)));
                }
                Written::Claimed => {
                    // Used meanwhile: the same request answers with its result, another is refused.
                    request.taken(&self.store).await?;
                    return self.task_and_instance(&req.task_id).await;
                }
                Written::Stale => {
                    tracing::debug!(task = %req.task_id, attempt, "instance changed after the decision; deciding again");
                }
            }
        }
        Err(Error::Aborted(format!(
            "task {}'s process instance kept changing while the task was being completed; send the same request again",
            req.task_id
        )))
    }

    /// Completes a task inside the caller's transaction (a reply's effect commits with its
    /// inbound-log row; an escalation with its scheduler tick) with a completion `prepared`
    /// before the transaction (a reply's read-only checks, the scheduler before its tick), so
    /// that no condition is evaluated under the write lock. When the instance changed in between,
    /// or nothing was prepared for this request, it is [`Error::Aborted`] with nothing written:
    /// the caller checks again from the new state. Returns the task as completed and the task
    /// events to publish after the commit.
    pub(super) async fn complete_in_prepared(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
        // The rows carry the time the completion was prepared at (its mail shows that time).
        _now: i64,
        prepared: Option<&Prepared>,
    ) -> Result<(Task, Vec<TaskEvent>)> {
        // Prepared for this very request (outcome, comment, variables) or not used at all.
        let Some(prepared) = prepared.filter(|p| p.is_for(req, actor)) else {
            return Err(Error::Aborted(format!(
                "task {}: no completion was prepared for this request",
                req.task_id
            )));
        };
        let (ready, completed) = match &prepared.decided {
            Ok((ready, completed)) => (ready.clone(), completed.clone()),
            Err(refusal) => return Err(refusal.error()),
        };
        tx.savepoint(TRANSITION_SAVEPOINT).await?;
        let written = transition::write(tx, ready).await;
        if !matches!(written, Ok(Written::Done(_))) {
            tx.rollback_to_savepoint(TRANSITION_SAVEPOINT).await?;
        }
        tx.release_savepoint(TRANSITION_SAVEPOINT).await?;
        match written? {
            Written::Done(done) => Ok((completed, done.published)),
            Written::Stale | Written::Claimed => Err(Error::Aborted(format!(
                "process instance {instance_id} changed after task {} was checked",
                req.task_id
            ))),
        }
    }

    /// Decides a completion from the instance as it is now, outside any transaction; `None` when
    /// the instance is gone. A completion that may not be done is prepared as its refusal.
    pub(super) async fn prepare_completion(
        &self,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
    ) -> Result<Option<Prepared>> {
        self.prepare_with_claim(actor, instance_id, req, None).await
    }

    async fn prepare_with_claim(
        &self,
        actor: &Actor,
        instance_id: &str,
        req: &CompleteTask,
        claim: Option<Claim>,
    ) -> Result<Option<Prepared>> {
        // The instance first: anything read after it that changed since bumped its `rev`.
        let Some(record) = self.store.instance_record(instance_id).await? else {
            return Ok(None);
        };
        self.prepare_from(actor, record, req, claim).await.map(Some)
    }

    /// Decides a completion from `record` (read before anything else of its instance).
    async fn prepare_from(
        &self,
        actor: &Actor,
        record: InstanceRecord,
        req: &CompleteTask,
        claim: Option<Claim>,
    ) -> Result<Prepared> {
        let instance_id = record.instance.id.clone();
        let instance_id = instance_id.as_str();
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let open = self.store.open_tasks(instance_id).await?;
        let request = (
            req.outcome.clone(),
            req.comment.clone(),
            req.variables.clone(),
        );
        let task = match open.iter().find(|t| t.id == req.task_id) {
            Some(task) => task.clone(),
            None => {
                let refusal = match self.store.task(&req.task_id).await? {
                    Some(task) if task.instance_id == instance_id => closed(&task),
                    _ => Error::not_found("task", &req.task_id),
                };
                return Ok(Prepared {
                    request,
                    actor: actor.user_id.clone(),
                    decided: Err(refusal.into()),
                });
            }
        };
        // A delegate's decision is an opinion: the task goes back to its owner (delegation.rs).
        if task.delegation == Delegation::Pending && req.via != CompletedVia::Escalation {
            let now = self.now();
            let decision = (
                req.outcome.as_str(),
                req.comment.as_str(),
                !req.variables.is_empty(),
            );
            let handed_back = check_can_complete(&task, actor).and_then(|()| {
                let state = delegation::State {
                    graph,
                    record,
                    open_before: open,
                };
                delegation::hand_back(state, &task, actor, decision, claim, now)
            });
            let decided = match handed_back {
                Ok((change, returned)) => Ok((
                    transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?,
                    returned,
                )),
                Err(e) => Err(e.into()),
            };
            return Ok(Prepared {
                request,
                actor: actor.user_id.clone(),
                decided,
            });
        }
        let checks = (|| {
            if req.via != CompletedVia::Escalation {
                check_can_complete(&task, actor)?;
            }
            check_not_suspended(&record.instance)?;
            check_writable(&graph, &task, &req.variables)
        })();
        let checked = match checks {
            Err(e) => Err(e),
            Ok(()) => self
                .compute_completion(&graph, &record, &engine_tasks(&open), actor, req)
                .await?
                .map_err(|e| match e {
                    ActionError::UnknownOutcome { outcome, allowed } => Error::invalid(
                        "outcome",
                        format!(
                            "{outcome:?} is not an outcome of this task; expected one of {allowed:?}"
                        ),
                    ),
                    other => {
                        Error::Internal(anyhow::anyhow!("completing task {}: {other}", task.id))
                    }
                }),
        };
        let transition = match checked {
            Ok(transition) => transition,
            Err(e) => {
                return Ok(Prepared {
                    request,
                    actor: actor.user_id.clone(),
                    decided: Err(e.into()),
                });
            }
        };
        let now = self.now();
        let completed = Task {
            status: TaskStatus::Completed,
            outcome: req.outcome.clone(),
            comment: req.comment.clone(),
            completed_by: actor.user_id.clone(),
            completed_via: Some(req.via),
            completed_at: Some(now),
            ..task
        };
        let change = Change {
            graph,
            record,
            start: false,
            transition,
            open_before: open,
            closing: vec![Closing {
                task: completed.clone(),
                kind: TaskEventKind::Completed,
                why: format!("task completed via {}", req.via.as_str()),
            }],
            handover: None,
            hold: None,
            events: Vec::new(),
            actor: actor.user_id.clone(),
            claim,
            now,
        };
        let ready = transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
        Ok(Prepared {
            request,
            actor: actor.user_id.clone(),
            decided: Ok((ready, completed)),
        })
    }

    pub(super) async fn task_and_instance(&self, task_id: &str) -> Result<(Task, InstanceView)> {
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
        let request = RequestId::new(
            "reassign_task",
            actor,
            request_id,
            &[task_id, new_assignee, comment],
        )?;
        if task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if new_assignee.trim().is_empty() {
            return Err(Error::invalid("new_assignee", "required"));
        }
        crate::bounds::check_line("new_assignee", new_assignee, crate::bounds::MAX_ID_LEN)?;
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
        check_not_suspended(&record.instance)?;
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
        let graph = self
            .graph_of(&task.definition_key, task.definition_version)
            .await?;
        let reassigned = Task {
            assignee: r.new_assignee.to_string(),
            ..task.clone()
        };
        let open_before = tx.open_tasks(&task.instance_id).await?;
        // Nothing moves in the process: the engine's part of the change is the state as it is.
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
        let change = Change {
            graph,
            record,
            start: false,
            transition: unchanged,
            open_before,
            closing: Vec::new(),
            handover: Some(Handover {
                task: reassigned,
                previous_assignee: task.assignee.clone(),
                why: format!("task reassigned to {}", r.new_assignee),
            }),
            hold: None,
            events: vec![Event {
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
            }],
            actor: r.actor.user_id.clone(),
            claim: None,
            now,
        };
        // The caller's transaction holds the instance (locked above): read through it, so that
        // its own writes are seen and nothing can be stale.
        let ready = transition::prepare(Source::Tx(tx), &self.mailer, change).await?;
        match transition::write(tx, ready).await? {
            Written::Done(done) => done
                .published
                .into_iter()
                .find(|e| e.kind == TaskEventKind::Reassigned)
                .ok_or_else(|| Error::Internal(anyhow::anyhow!("a hand-over without its event"))),
            Written::Stale | Written::Claimed => Err(Error::Internal(anyhow::anyhow!(
                "instance {} changed while locked by this transaction",
                task.instance_id
            ))),
        }
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

/// The savepoint a completion inside a caller's transaction is written under.
const TRANSITION_SAVEPOINT: &str = "rf_transition";

impl Workflow {
    /// The engine's transition for a completion, with the people its assignees need loaded.
    async fn compute_completion(
        &self,
        graph: &ProcessDefinition,
        record: &InstanceRecord,
        open: &[OpenTask],
        actor: &Actor,
        req: &CompleteTask,
    ) -> Result<std::result::Result<Transition, ActionError>> {
        let mut people = People::new(&record.instance.started_by);
        self.with_people(&mut people, Some(&record.instance.id), |people| {
            runtime::apply(
                graph,
                Snapshot {
                    variables: &record.instance.variables,
                    joins: &record.joins,
                    multi: &record.multi,
                    open_tasks: open,
                    people,
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
        })
        .await
    }
}

pub(super) fn check_can_complete(task: &Task, actor: &Actor) -> Result<()> {
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
        // The initiator resubmitting after a return may correct the request's own variables,
        // never what the engine writes.
        Some(NodeKind::StartEvent) => {
            return match variables.keys().find(|name| {
                name.as_str() == "outcome"
                    || name.as_str() == "initiator"
                    || graph.node(name).is_some()
            }) {
                Some(name) => Err(Error::invalid(
                    format!("variables.{name}"),
                    "is written by the engine, not by a resubmission",
                )),
                None => Ok(()),
            };
        }
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

/// 挂起: nothing of a suspended instance is decided or handed on until it is resumed.
pub(super) fn check_not_suspended(instance: &Instance) -> Result<()> {
    if instance.status == InstanceStatus::Suspended {
        return Err(Error::FailedPrecondition(format!(
            "instance {} is suspended: nothing can be decided until it is resumed (ResumeProcessInstance)",
            instance.id
        )));
    }
    Ok(())
}

pub(super) fn closed(task: &Task) -> Error {
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
