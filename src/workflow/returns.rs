//! 退回 (TaskService.ReturnTask, DESIGN §11): the assignee of an open task sends the instance back
//! to a user task it already passed. Decided like a completion — outside any transaction, from
//! the instance as read, then written as one batch by the transition writer, decided again if
//! the instance moved meanwhile — and taking the instance's turn like one.
use super::{
    Actor, InstanceView, Workflow,
    idempotency::RequestId,
    new_id,
    tasks::{PREPARE_ATTEMPTS, check_can_complete},
    transition::{self, Change, Claim, Closing, Ready, Written, engine_tasks},
};
use crate::{
    engine::{
        assignee::People,
        definition::{NodeKind, ProcessDefinition},
        runtime::{self, Action, ActionError, Snapshot, inside_parallel_branch},
    },
    error::{Error, Result},
    model::{CompletedVia, InstanceStatus, Task, TaskEventKind, TaskStatus},
    store::{InstanceRecord, PageRequest, TaskFilter, writes::Source},
};

/// What a ReturnTask asks for.
#[derive(Debug, Clone)]
pub struct ReturnTask {
    pub task_id: String,
    /// Empty: the step whose completion opened the task.
    pub target_activity_id: String,
    pub comment: String,
    pub resume_at_returner: bool,
    pub request_id: String,
}

impl Workflow {
    pub async fn return_task(
        &self,
        actor: &Actor,
        req: ReturnTask,
    ) -> Result<(Task, InstanceView)> {
        let request = RequestId::new(
            "return_task",
            actor,
            &req.request_id,
            &[&req.task_id, &req.target_activity_id, &req.comment],
        )?;
        if req.task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        if req.resume_at_returner {
            return Err(Error::invalid(
                "resume_at_returner",
                "jumping back to the returning step is not built yet; send false",
            ));
        }
        crate::bounds::check_line(
            "target_activity_id",
            &req.target_activity_id,
            crate::bounds::MAX_ID_LEN,
        )?;
        crate::bounds::check_text("comment", &req.comment, crate::bounds::MAX_COMMENT_LEN)?;
        let claim = request.claim(&req.task_id);
        for attempt in 1..=PREPARE_ATTEMPTS {
            let Some(mut record) = self.store.instance_record_of_task(&req.task_id).await? else {
                return Err(Error::not_found("task", &req.task_id));
            };
            let turn = self.turns.take(&record.instance.id).await;
            if turn.waited {
                match self.store.instance_record_of_task(&req.task_id).await? {
                    Some(fresh) => record = fresh,
                    None => continue,
                }
            }
            let (ready, returned) = match self
                .decide_return(actor, record, &req, claim.clone())
                .await?
            {
                Ok(decided) => decided,
                Err(refusal) => {
                    return match request.earlier(&self.store).await? {
                        Some(_) => self.task_and_instance(&req.task_id).await,
                        None => Err(refusal),
                    };
                }
            };
            match self.write_ready(ready).await? {
                Written::Done(done) => return Ok((returned, self.after_commit(done))),
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.task_and_instance(&req.task_id).await;
                }
                Written::Stale => {
                    tracing::debug!(task = %req.task_id, attempt, "instance changed; deciding the return again");
                }
            }
        }
        Err(Error::Aborted(format!(
            "task {}'s process instance kept changing while it was being returned; send the same request again",
            req.task_id
        )))
    }

    /// 撤回 (WorkflowService.WithdrawProcessInstance): the initiator pulls a running request
    /// back; every open task is withdrawn and their resubmission task opens (outcomes
    /// `resubmit` / `withdraw`).
    pub async fn withdraw_instance(
        &self,
        actor: &Actor,
        instance_id: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<InstanceView> {
        let request = RequestId::new(
            "withdraw_instance",
            actor,
            request_id,
            &[instance_id, comment],
        )?;
        if instance_id.is_empty() {
            return Err(Error::invalid("process_instance_id", "required"));
        }
        crate::bounds::check_text("comment", comment, crate::bounds::MAX_COMMENT_LEN)?;
        if request.earlier(&self.store).await?.is_some() {
            return self.instance(instance_id).await;
        }
        let claim = request.claim(instance_id);
        for attempt in 1..=PREPARE_ATTEMPTS {
            let _turn = self.turns.take(instance_id).await;
            let record = self
                .store
                .instance_record(instance_id)
                .await?
                .ok_or_else(|| Error::not_found("process instance", instance_id))?;
            if record.instance.started_by != actor.user_id {
                return Err(Error::PermissionDenied(format!(
                    "only the initiator ({}) may withdraw instance {instance_id}",
                    record.instance.started_by
                )));
            }
            if record.instance.status != InstanceStatus::Running {
                return Err(Error::FailedPrecondition(format!(
                    "instance {instance_id} is {} and cannot be withdrawn",
                    record.instance.status.as_str()
                )));
            }
            let graph = self
                .graph_of(
                    &record.instance.definition_key,
                    record.instance.definition_version,
                )
                .await?;
            let open = self.store.open_tasks(instance_id).await?;
            let start = &graph.nodes[graph.start].id;
            if open.iter().all(|t| &t.activity_id == start) {
                return Err(Error::FailedPrecondition(format!(
                    "instance {instance_id} already waits for its initiator to resubmit or withdraw"
                )));
            }
            let people = People::new(&record.instance.started_by);
            let transition = runtime::apply(
                &graph,
                Snapshot {
                    variables: &record.instance.variables,
                    joins: &record.joins,
                    multi: &record.multi,
                    open_tasks: &engine_tasks(&open),
                    people: &people,
                },
                Action::Withdraw {
                    by: &actor.user_id,
                    comment,
                },
                self.limits(),
                &mut new_id,
            )
            .map_err(|e| Error::Internal(anyhow::anyhow!("withdrawing {instance_id}: {e}")))?;
            let change = Change {
                graph,
                record,
                start: false,
                transition,
                open_before: open,
                closing: Vec::new(),
                handover: None,
                hold: None,
                events: Vec::new(),
                actor: actor.user_id.clone(),
                claim: claim.clone(),
                now: self.now(),
            };
            let ready =
                transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
            match self.write_ready(ready).await? {
                Written::Done(done) => return Ok(self.after_commit(done)),
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.instance(instance_id).await;
                }
                Written::Stale => {
                    tracing::debug!(
                        instance = instance_id,
                        attempt,
                        "instance changed; withdrawing again"
                    );
                }
            }
        }
        Err(Error::Aborted(format!(
            "instance {instance_id} kept changing while it was being withdrawn; send the same request again"
        )))
    }

    /// The predecessor of `target`'s last completion in this instance, or why it cannot be
    /// returned to (not passed yet; inside a parallel branch).
    async fn passed(
        &self,
        instance_id: &str,
        target: &str,
        target_idx: usize,
        graph: &ProcessDefinition,
    ) -> Result<std::result::Result<String, Error>> {
        let filter = TaskFilter {
            instance_id: instance_id.to_string(),
            activity_id: target.to_string(),
            status: Some(TaskStatus::Completed),
            ..TaskFilter::default()
        };
        let passed = self
            .store
            .list_tasks(&filter, &PageRequest::new(500, "")?)
            .await?;
        let Some(last) = passed
            .items
            .iter()
            .max_by_key(|t| (t.completed_at, t.created_at))
        else {
            return Ok(Err(Error::FailedPrecondition(format!(
                "the instance has not passed {target} yet: a return goes back to a step already decided"
            ))));
        };
        if let Some(join) = inside_parallel_branch(graph, target_idx) {
            return Ok(Err(Error::FailedPrecondition(format!(
                "{target} lies inside a parallel branch (its join is {join}): reopening one branch \
                 alone would leave the join waiting; return to a step before the split"
            ))));
        }
        Ok(Ok(last.from_activity.clone()))
    }

    /// The return as a ready batch and the returned task, or why it is refused.
    async fn decide_return(
        &self,
        actor: &Actor,
        record: InstanceRecord,
        req: &ReturnTask,
        claim: Option<Claim>,
    ) -> Result<std::result::Result<(Ready, Task), Error>> {
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let open = self.store.open_tasks(&record.instance.id).await?;
        let Some(task) = open.iter().find(|t| t.id == req.task_id).cloned() else {
            let task = self.task(&req.task_id).await?;
            return Ok(Err(Error::FailedPrecondition(format!(
                "task {} is already {}",
                task.id,
                task.status.as_str()
            ))));
        };
        if let Err(e) = check_can_complete(&task, actor)
            .and_then(|()| super::tasks::check_not_suspended(&record.instance))
        {
            return Ok(Err(e));
        }
        let target = match req.target_activity_id.trim() {
            "" => task.from_activity.clone(),
            named => named.to_string(),
        };
        let to_start = target == graph.nodes[graph.start].id;
        let Some((target_idx, node)) = graph
            .node(&target)
            .filter(|(_, n)| to_start || matches!(n.kind, NodeKind::UserTask(_)))
        else {
            return Ok(Err(Error::invalid(
                "target_activity_id",
                format!(
                    "{target:?} is neither a user task nor the start of {}",
                    graph.key
                ),
            )));
        };
        if node.id == task.activity_id {
            return Ok(Err(Error::invalid(
                "target_activity_id",
                "a task cannot be returned to its own step",
            )));
        }
        // The reopened task is armed from the predecessor of the target's last completion; the
        // start (the initiator's resubmission) was always passed.
        let predecessor = if to_start {
            String::new()
        } else {
            match self
                .passed(&record.instance.id, &node.id, target_idx, &graph)
                .await?
            {
                Ok(predecessor) => predecessor,
                Err(refusal) => return Ok(Err(refusal)),
            }
        };
        let target = node.id.clone();
        let mut people = People::new(&record.instance.started_by);
        let open_engine = engine_tasks(&open);
        let computed = self
            .with_people(&mut people, Some(&record.instance.id), |people| {
                runtime::apply(
                    &graph,
                    Snapshot {
                        variables: &record.instance.variables,
                        joins: &record.joins,
                        multi: &record.multi,
                        open_tasks: &open_engine,
                        people,
                    },
                    Action::Return {
                        task_id: &task.id,
                        target: &target,
                        predecessor: &predecessor,
                        returned_by: &actor.user_id,
                        comment: &req.comment,
                    },
                    self.limits(),
                    &mut new_id,
                )
            })
            .await?;
        let transition = match computed {
            Ok(transition) => transition,
            Err(ActionError::TaskNotOpen(id)) => {
                return Ok(Err(Error::FailedPrecondition(format!(
                    "task {id} is not open"
                ))));
            }
            Err(other) => {
                return Err(Error::Internal(anyhow::anyhow!(
                    "returning task {}: {other}",
                    task.id
                )));
            }
        };
        let now = self.now();
        let returned = Task {
            status: TaskStatus::Returned,
            outcome: String::new(),
            comment: req.comment.clone(),
            completed_by: actor.user_id.clone(),
            completed_via: Some(CompletedVia::Api),
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
                task: returned.clone(),
                kind: TaskEventKind::Returned,
                why: format!("task returned to {target}"),
            }],
            handover: None,
            hold: None,
            events: Vec::new(),
            actor: actor.user_id.clone(),
            claim,
            now,
        };
        let ready = transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
        Ok(Ok((ready, returned)))
    }
}
