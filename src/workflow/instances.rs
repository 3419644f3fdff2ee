//! Starting, reading and cancelling instances, and writing an engine transition.
use serde_json::{Map, Value};

use super::approvals::Mailer;
use super::{Actor, InstanceView, Workflow, check_request_id, fingerprint, new_id};
use crate::{
    engine::definition::ProcessDefinition,
    engine::runtime::{self, Action, InstanceOutcome, JoinState, OpenTask, Snapshot, Transition},
    error::{Error, Result},
    model::{Event, Instance, InstanceStatus, Page, Task, TaskEvent, TaskEventKind, TaskStatus},
    store::{InstanceFilter, InstanceRecord, PageRequest, Tx},
};

#[derive(Debug, Clone, Default)]
pub struct StartProcess {
    pub definition_key: String,
    pub version: i64,
    pub business_key: String,
    pub variables: Map<String, Value>,
    pub request_id: String,
}

impl Workflow {
    pub async fn start_process(&self, actor: &Actor, req: StartProcess) -> Result<InstanceView> {
        check_request_id(&req.request_id)?;
        crate::bounds::check_line("business_key", &req.business_key, crate::bounds::MAX_ID_LEN)?;
        let scope = format!("start_process:{}", actor.user_id);
        let version = req.version.to_string();
        let print = fingerprint(
            &[&req.definition_key, &version, &req.business_key],
            &req.variables,
        );
        if let Some(id) = self.prior(&scope, &req.request_id, &print).await? {
            return self.instance(&id).await;
        }
        let (stored, graph) = self.definition(&req.definition_key, req.version).await?;
        // The engine writes `outcome` (the last decision): a start may not forge one. (Activity
        // records are overwritten when their activity completes, and examples name assignee
        // variables after their activities, so those stay allowed at start.)
        if req.variables.contains_key("outcome") {
            return Err(Error::invalid(
                "variables.outcome",
                "is written by the engine (the last decision)",
            ));
        }
        let transition = runtime::apply(
            &graph,
            Snapshot {
                variables: &req.variables,
                joins: &JoinState::default(),
                open_tasks: &[],
            },
            Action::Start,
            self.limits(),
            &mut new_id,
        )
        .map_err(|e| Error::Internal(anyhow::anyhow!("starting an instance: {e}")))?;

        let now = self.now();
        let instance_id = new_id();
        let (status, error) = status_of(&transition.outcome);
        let record = InstanceRecord {
            instance: Instance {
                id: instance_id.clone(),
                definition_key: stored.key.clone(),
                definition_version: stored.version,
                business_key: req.business_key.clone(),
                variables: transition.variables.clone(),
                status,
                error,
                started_by: actor.user_id.clone(),
                created_at: now,
                updated_at: now,
            },
            joins: transition.joins.clone(),
        };
        let mut tx = self.store.begin().await?;
        if !req.request_id.is_empty()
            && !tx
                .claim_request(&scope, &req.request_id, &print, &instance_id, now)
                .await?
        {
            // The same request committed meanwhile: answer with its result.
            drop(tx);
            return match self.prior(&scope, &req.request_id, &print).await? {
                Some(id) => self.instance(&id).await,
                None => Err(Error::Internal(anyhow::anyhow!("request id vanished"))),
            };
        }
        tx.insert_instance(&record).await?;
        let published = write_transition(
            &mut tx,
            &self.mailer,
            &graph,
            &record.instance,
            &transition,
            &[],
            actor,
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(instance = %instance_id, key = %stored.key, version = stored.version, "instance started");
        self.publish(published);
        self.mailer.wake().notify_one();
        self.instance(&instance_id).await
    }

    pub async fn instance(&self, id: &str) -> Result<InstanceView> {
        if id.is_empty() {
            return Err(Error::invalid("id", "required"));
        }
        let instance = self
            .store
            .instance(id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", id))?;
        let open_tasks = self.store.open_tasks(id).await?;
        Ok(InstanceView {
            instance,
            open_tasks,
        })
    }

    pub async fn list_instances(
        &self,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<InstanceView>> {
        let page = self.store.list_instances(filter, page).await?;
        // One query for the open tasks of the whole page, not one per instance.
        let running: Vec<String> = page
            .items
            .iter()
            .filter(|i| i.status == InstanceStatus::Running)
            .map(|i| i.id.clone())
            .collect();
        let mut open = self.store.open_tasks_of(&running).await?;
        let mut items = Vec::with_capacity(page.items.len());
        for instance in page.items {
            let open_tasks = open.remove(&instance.id).unwrap_or_default();
            items.push(InstanceView {
                instance,
                open_tasks,
            });
        }
        Ok(Page {
            items,
            next_page_token: page.next_page_token,
        })
    }

    /// Cancels a running instance and its open tasks. Only its initiator may.
    pub async fn cancel_instance(
        &self,
        actor: &Actor,
        id: &str,
        reason: &str,
        request_id: &str,
    ) -> Result<InstanceView> {
        check_request_id(request_id)?;
        if id.is_empty() {
            return Err(Error::invalid("id", "required"));
        }
        let scope = format!("cancel_instance:{}", actor.user_id);
        let print = fingerprint(&[id, reason], &Map::new());
        if self.prior(&scope, request_id, &print).await?.is_some() {
            return self.instance(id).await;
        }
        let now = self.now();
        let mut tx = self.store.begin().await?;
        if !request_id.is_empty()
            && !tx
                .claim_request(&scope, request_id, &print, id, now)
                .await?
        {
            drop(tx);
            return self.instance(id).await;
        }
        if !tx.lock_instance(id).await? {
            return Err(Error::not_found("process instance", id));
        }
        let record = tx
            .instance(id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", id))?;
        crate::policy::can(
            actor,
            crate::policy::Action::CancelInstance(crate::policy::InstanceAccess {
                started_by: &record.instance.started_by,
                participant: false,
            }),
        )?;
        if record.instance.status == InstanceStatus::Cancelled {
            // Cancelling twice is a retry, not an error: answer with the cancelled instance.
            drop(tx);
            return self.instance(id).await;
        }
        if record.instance.status != InstanceStatus::Running {
            return Err(Error::FailedPrecondition(format!(
                "instance is {} and cannot be cancelled",
                record.instance.status.as_str()
            )));
        }
        let open = tx.open_tasks(id).await?;
        let graph = self
            .graph_of(
                &record.instance.definition_key,
                record.instance.definition_version,
            )
            .await?;
        let snapshot = Snapshot {
            variables: &record.instance.variables,
            joins: &record.joins,
            open_tasks: &engine_tasks(&open),
        };
        let transition = runtime::cancel(snapshot, reason);
        let published = write_transition(
            &mut tx,
            &self.mailer,
            &graph,
            &record.instance,
            &transition,
            &open,
            actor,
            now,
        )
        .await?;
        tx.commit().await?;
        self.publish(published);
        self.mailer.wake().notify_one();
        self.instance(id).await
    }
}

pub(super) fn engine_tasks(tasks: &[Task]) -> Vec<OpenTask> {
    tasks
        .iter()
        .map(|t| OpenTask {
            id: t.id.clone(),
            activity_id: t.activity_id.clone(),
            group_id: t.group_id.clone(),
        })
        .collect()
}

fn status_of(outcome: &InstanceOutcome) -> (InstanceStatus, String) {
    match outcome {
        InstanceOutcome::Running => (InstanceStatus::Running, String::new()),
        InstanceOutcome::Completed => (InstanceStatus::Completed, String::new()),
        InstanceOutcome::Failed { element_id, reason } => {
            (InstanceStatus::Failed, format!("{element_id}: {reason}"))
        }
        InstanceOutcome::Cancelled { reason } => (InstanceStatus::Cancelled, reason.clone()),
    }
}

/// Writes what the engine decided: new tasks, withdrawn and cancelled ones, the instance's state
/// and the audit events. Returns the task events to publish once the transaction commits.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_transition(
    tx: &mut Tx,
    mailer: &Mailer,
    graph: &ProcessDefinition,
    instance: &Instance,
    transition: &Transition,
    open_before: &[Task],
    actor: &Actor,
    now: i64,
) -> Result<Vec<TaskEvent>> {
    let instance_id = instance.id.as_str();
    let mut published = Vec::new();
    let mut mail_events = Vec::new();
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
            let closed = Task {
                status,
                completed_at: Some(now),
                ..task.clone()
            };
            tx.close_task(&closed).await?;
            mailer
                .close_approvals(tx, &closed.id, &format!("task {}", status.as_str()), now)
                .await?;
            published.push(TaskEvent {
                kind,
                task: closed,
                previous_assignee: String::new(),
                at: now,
            });
        }
    }
    for new in &transition.open {
        let task = Task {
            id: new_id(),
            instance_id: instance_id.to_string(),
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
        };
        tx.insert_task(&task).await?;
        if let Some(event) = mailer
            .open_approval(tx, graph, instance, &task, now)
            .await?
        {
            mail_events.push(event);
        }
        published.push(TaskEvent {
            kind: TaskEventKind::Opened,
            task,
            previous_assignee: String::new(),
            at: now,
        });
    }
    let (status, error) = status_of(&transition.outcome);
    tx.update_instance(
        instance_id,
        &transition.variables,
        &transition.joins,
        status,
        &error,
        now,
    )
    .await?;
    let mut events: Vec<Event> = transition
        .events
        .iter()
        .map(|e| Event {
            instance_id: instance_id.to_string(),
            at: now,
            kind: e.kind.to_string(),
            activity_id: e.activity_id.clone(),
            actor: actor.user_id.clone(),
            detail: e.detail.clone(),
        })
        .collect();
    events.extend(mail_events);
    events.extend(
        super::reminders::on_transition(tx, graph, instance, transition, open_before, now).await?,
    );
    tx.insert_events(&events).await?;
    Ok(published)
}
