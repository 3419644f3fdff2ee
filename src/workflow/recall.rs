//! 拿回 (RecallTask, DESIGN §11): whoever completed a task takes their decision back while
//! nothing it opened has been acted on.
//!
//! The tasks a completion opened are the instance's tasks whose `from_activity` is the completed
//! task's activity and that were created in the same transition (at its `completed_at`). A
//! recall needs every one of them still OPEN and untouched — not delegated, not reassigned — and
//! the instance RUNNING. The engine ([`crate::engine::recall`]) then checks that those tasks and
//! the tokens waiting at parallel joins are exactly what that completion left, and answers the
//! transition: those tasks WITHDRAWN (approval contexts revoked, queued mail dropped, reminders
//! stopped), the completion's token taken back from a join that has not fired, and the activity
//! open again as a new task for the same user, armed with reminders as when it first opened.
//! Variables the completion set stay until the new decision overwrites them.
//!
//! Written like a completion: decided outside any transaction, one batch guarded by the
//! instance's `rev`, decided again when the instance changed meanwhile.
use serde_json::json;

use super::{
    Actor, InstanceView, Workflow,
    idempotency::RequestId,
    tasks::PREPARE_ATTEMPTS,
    transition::{self, Change, Claim, Ready, Written},
};
use crate::{
    engine::recall::{self, Recall},
    error::{Error, Result},
    model::{CompletedVia, Delegation, Event, InstanceStatus, Task, TaskEventKind, TaskStatus},
    store::{InstanceRecord, PageRequest, TaskFilter, writes::Source},
};

impl Workflow {
    /// Takes back the caller's completion of `task_id` (拿回); answers the reopened task and the
    /// instance.
    pub async fn recall_task(
        &self,
        actor: &Actor,
        task_id: &str,
        comment: &str,
        request_id: &str,
    ) -> Result<(Task, InstanceView)> {
        let request = RequestId::new("recall_task", actor, request_id, &[task_id, comment])?;
        if task_id.is_empty() {
            return Err(Error::invalid("task_id", "required"));
        }
        crate::bounds::check_text("comment", comment, crate::bounds::MAX_COMMENT_LEN)?;
        let claim = request.claim(task_id);
        for attempt in 1..=PREPARE_ATTEMPTS {
            let Some(mut record) = self.store.instance_record_of_task(task_id).await? else {
                return Err(Error::not_found("task", task_id));
            };
            let turn = self.turns.take(&record.instance.id).await;
            if turn.waited {
                match self.store.instance_record_of_task(task_id).await? {
                    Some(fresh) => record = fresh,
                    None => continue,
                }
            }
            let decided = self
                .prepare_recall(actor, record, task_id, comment, claim.clone())
                .await;
            let ready = match decided {
                Ok(ready) => ready,
                Err(e) => {
                    return match request.earlier(&self.store).await? {
                        Some(_) => self.recalled_answer(task_id).await,
                        None => Err(e),
                    };
                }
            };
            match self.write_ready(ready).await? {
                Written::Done(done) => {
                    let reopened = done
                        .published
                        .iter()
                        .find(|e| e.kind == TaskEventKind::Opened)
                        .map(|e| e.task.clone())
                        .ok_or_else(|| {
                            Error::Internal(anyhow::anyhow!("a recall without its reopened task"))
                        })?;
                    tracing::info!(task = %task_id, reopened = %reopened.id, "task recalled");
                    return Ok((reopened, self.after_commit(done)));
                }
                Written::Claimed => {
                    request.taken(&self.store).await?;
                    return self.recalled_answer(task_id).await;
                }
                Written::Stale => {
                    tracing::debug!(task = %task_id, attempt, "instance changed after the decision; deciding again");
                }
            }
        }
        Err(Error::Aborted(format!(
            "task {task_id}'s process instance kept changing while the task was being recalled; send the same request again"
        )))
    }

    /// The answer to a retried recall: the newest task of the recalled one's activity for the
    /// same user.
    async fn recalled_answer(&self, task_id: &str) -> Result<(Task, InstanceView)> {
        let recalled = self.task(task_id).await?;
        let tasks = self.all_tasks_of(&recalled.instance_id).await?;
        let reopened = tasks
            .into_iter()
            .filter(|t| {
                t.activity_id == recalled.activity_id
                    && t.assignee == recalled.completed_by
                    && t.id != recalled.id
                    && t.created_at >= recalled.completed_at.unwrap_or_default()
            })
            .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)))
            .ok_or_else(|| Error::not_found("task", task_id))?;
        let instance = self.instance(&recalled.instance_id).await?;
        Ok((reopened, instance))
    }

    async fn all_tasks_of(&self, instance_id: &str) -> Result<Vec<Task>> {
        let filter = TaskFilter {
            instance_id: instance_id.to_string(),
            ..TaskFilter::default()
        };
        let mut tasks = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .store
                .list_tasks(&filter, &PageRequest::new(500, token)?)
                .await?;
            tasks.extend(page.items);
            if page.next_page_token.is_empty() {
                return Ok(tasks);
            }
            token = page.next_page_token;
        }
    }

    /// Decides a recall from `record` (read before anything else of its instance).
    async fn prepare_recall(
        &self,
        actor: &Actor,
        record: InstanceRecord,
        task_id: &str,
        comment: &str,
        claim: Option<Claim>,
    ) -> Result<Ready> {
        let instance_id = record.instance.id.clone();
        let tasks = self.all_tasks_of(&instance_id).await?;
        let task = tasks
            .iter()
            .find(|t| t.id == task_id)
            .ok_or_else(|| Error::not_found("task", task_id))?;
        let completed_at = match (task.status, task.completed_at) {
            (TaskStatus::Completed, Some(at)) => at,
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "task {task_id} is {}: only a completed task can be recalled",
                    task.status.as_str()
                )));
            }
        };
        if task.completed_by != actor.user_id
            || matches!(
                task.completed_via,
                Some(CompletedVia::Auto | CompletedVia::Escalation)
            )
        {
            return Err(Error::PermissionDenied(format!(
                "task {task_id} was not completed by {}: only who decided it may recall it",
                actor.user_id
            )));
        }
        if record.instance.status != InstanceStatus::Running {
            return Err(Error::FailedPrecondition(format!(
                "process instance {instance_id} is {}: nothing to recall",
                record.instance.status.as_str()
            )));
        }
        let events = self.store.events(&instance_id).await?;
        let touched = |id: &str| {
            events.iter().any(|e| {
                matches!(e.kind.as_str(), "task_reassigned" | "task_delegated")
                    && e.detail.get("task_id").and_then(|v| v.as_str()) == Some(id)
            })
        };
        if events.iter().any(|e| {
            e.kind == "task_recalled"
                && e.detail.get("task_id").and_then(|v| v.as_str()) == Some(task_id)
        }) {
            return Err(Error::FailedPrecondition(format!(
                "task {task_id} was recalled already"
            )));
        }
        let opened: Vec<&Task> = tasks
            .iter()
            .filter(|t| {
                t.id != task.id
                    && t.from_activity == task.activity_id
                    && t.created_at == completed_at
            })
            .collect();
        if let Some(acted) = opened.iter().find(|t| {
            t.status != TaskStatus::Open || t.delegation != Delegation::None || touched(&t.id)
        }) {
            let by = if acted.completed_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", acted.completed_by)
            };
            let what = if acted.status == TaskStatus::Open {
                "handed on".to_string()
            } else {
                format!("{}{by}", acted.status.as_str())
            };
            return Err(Error::FailedPrecondition(format!(
                "the next step acted: task {} ({}) is {what}",
                acted.id, acted.activity_id
            )));
        }
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let open_before = self.store.open_tasks(&instance_id).await?;
        let opened_engine =
            transition::engine_tasks(&opened.iter().map(|t| (*t).clone()).collect::<Vec<Task>>());
        let transition = recall::recall(
            &graph,
            &record.instance.variables,
            &record.joins,
            &record.multi,
            &Recall {
                activity_id: &task.activity_id,
                assignee: &actor.user_id,
                from_activity: &task.from_activity,
                opened: &opened_engine,
            },
        )
        .map_err(|why| {
            Error::FailedPrecondition(format!("task {task_id} cannot be recalled: {why}"))
        })?;
        let now = self.now();
        let event = Event {
            instance_id: instance_id.clone(),
            at: now,
            kind: "task_recalled".into(),
            activity_id: task.activity_id.clone(),
            actor: actor.user_id.clone(),
            detail: json!({
                "task_id": task.id,
                "outcome": task.outcome,
                "comment": comment,
                "withdrawn": opened.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            }),
        };
        let change = Change {
            graph,
            record,
            start: false,
            transition,
            open_before,
            closing: Vec::new(),
            handover: None,
            hold: None,
            events: vec![event],
            actor: actor.user_id.clone(),
            claim,
            now,
        };
        transition::prepare(Source::Pool(&self.store), &self.mailer, change).await
    }
}
