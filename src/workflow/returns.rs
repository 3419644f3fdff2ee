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
        definition::NodeKind,
        runtime::{self, Action, ActionError, Snapshot, inside_parallel_branch},
    },
    error::{Error, Result},
    model::{CompletedVia, Task, TaskEventKind, TaskStatus},
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
                        Some(_) => self.task_and_instance_of(&req.task_id).await,
                        None => Err(refusal),
                    };
                }
            };
            match self.write_ready(ready).await? {
                Written::Done(done) => return Ok((returned, self.after_commit(done))),
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.task_and_instance_of(&req.task_id).await;
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

    async fn task_and_instance_of(&self, task_id: &str) -> Result<(Task, InstanceView)> {
        let task = self.task(task_id).await?;
        let instance = self.instance(&task.instance_id).await?;
        Ok((task, instance))
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
        if let Err(e) = check_can_complete(&task, actor) {
            return Ok(Err(e));
        }
        let target = match req.target_activity_id.trim() {
            "" => task.from_activity.clone(),
            named => named.to_string(),
        };
        let target_node = graph.node(&target);
        if target == graph.nodes[graph.start].id {
            return Ok(Err(Error::FailedPrecondition(format!(
                "returning to the start ({target}: the initiator's resubmission) is not built yet; name an earlier user task"
            ))));
        }
        let Some((target_idx, node)) =
            target_node.filter(|(_, n)| matches!(n.kind, NodeKind::UserTask(_)))
        else {
            return Ok(Err(Error::invalid(
                "target_activity_id",
                format!("{target:?} is not a user task of {}", graph.key),
            )));
        };
        if node.id == task.activity_id {
            return Ok(Err(Error::invalid(
                "target_activity_id",
                "a task cannot be returned to its own step",
            )));
        }
        // The target's last completion: the instance passed it, and its predecessor is what the
        // reopened task is armed from.
        let filter = TaskFilter {
            instance_id: record.instance.id.clone(),
            activity_id: node.id.clone(),
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
                "the instance has not passed {} yet: a return goes back to a step already decided",
                node.id
            ))));
        };
        if let Some(join) = inside_parallel_branch(&graph, target_idx) {
            return Ok(Err(Error::FailedPrecondition(format!(
                "{} lies inside a parallel branch (its join is {join}): reopening one branch alone \
                 would leave the join waiting; return to a step before the split",
                node.id
            ))));
        }
        let predecessor = last.from_activity.clone();
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
            events: Vec::new(),
            actor: actor.user_id.clone(),
            claim,
            now,
        };
        let ready = transition::prepare(Source::Pool(&self.store), &self.mailer, change).await?;
        Ok(Ok((ready, returned)))
    }
}
