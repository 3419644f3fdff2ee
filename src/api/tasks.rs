//! TaskService: the approver's inbox over gRPC, and a live stream of task events.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::{
    auth::actor,
    convert,
    live_stream::{Live, LiveStream},
};
use crate::{
    model::{CompletedVia, Task, TaskEvent, TaskEventKind, TaskStatus},
    policy,
    proto::pb,
    store::{PageRequest, TaskFilter},
    workflow::{Workflow, returns::ReturnTask, tasks::CompleteTask},
};

#[derive(Debug)]
pub(super) struct TaskApi {
    workflow: Arc<Workflow>,
    shutdown: CancellationToken,
}

impl TaskApi {
    pub(super) fn new(workflow: Arc<Workflow>, shutdown: CancellationToken) -> Self {
        Self { workflow, shutdown }
    }

    async fn task_pb(&self, task: &Task) -> pb::Task {
        task_pb(&self.workflow, task).await
    }
}

async fn task_pb(workflow: &Workflow, task: &Task) -> pb::Task {
    let graph = workflow
        .graph_for(&task.definition_key, task.definition_version)
        .await
        .ok();
    if convert::is_signer_task(task, graph.as_deref())
        && let Ok(view) = workflow.instance(&task.instance_id).await
    {
        let state = (&view.multi, &view.instance.variables);
        return convert::task_in(task, graph.as_deref(), Some(state));
    }
    convert::task(task, graph.as_deref())
}

type TaskEventStream = LiveStream<pb::TaskEvent>;

#[tonic::async_trait]
impl pb::task_service_server::TaskService for TaskApi {
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let filter = TaskFilter {
            assignee: req.assignee,
            instance_id: req.process_instance_id,
            activity_id: req.activity_id,
            business_key: req.business_key,
            status: convert::task_status_filter(req.status)?,
            visible_to: Workflow::visible_to(&actor),
        };
        let page = self.workflow.list_tasks(&filter, &page).await?;
        let mut tasks = Vec::with_capacity(page.items.len());
        for task in &page.items {
            tasks.push(self.task_pb(task).await);
        }
        Ok(Response::new(pb::ListTasksResponse {
            tasks,
            next_page_token: page.next_page_token,
        }))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let actor = actor(&request)?;
        let task = self.workflow.task(&request.into_inner().task_id).await?;
        self.workflow
            .authorize_task_read(&actor, &task.assignee, &task.instance_id)
            .await?;
        Ok(Response::new(self.task_pb(&task).await))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let complete = CompleteTask {
            task_id: req.task_id,
            outcome: req.outcome.trim().to_string(),
            comment: req.comment,
            variables: convert::struct_to_json(req.variables, "variables")?,
            request_id: req.request_id,
            via: CompletedVia::Api,
        };
        let (task, view) = self.workflow.complete_task(&actor, complete).await?;
        let graph = self
            .workflow
            .graph_for(&task.definition_key, task.definition_version)
            .await
            .ok();
        let state = (&view.multi, &view.instance.variables);
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(convert::task_in(&task, graph.as_deref(), Some(state))),
            instance: Some(convert::instance(&view, graph.as_deref())),
        }))
    }

    async fn list_task_history(
        &self,
        request: Request<pb::ListTaskHistoryRequest>,
    ) -> Result<Response<pb::ListTaskHistoryResponse>, Status> {
        let actor = actor(&request)?;
        let id = request.into_inner().process_instance_id;
        let entries = self.workflow.task_history(&actor, &id).await?;
        Ok(Response::new(pb::ListTaskHistoryResponse {
            entries: entries.iter().map(convert::history_entry).collect(),
        }))
    }

    async fn return_task(
        &self,
        request: Request<pb::ReturnTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let back = ReturnTask {
            task_id: req.task_id,
            target_activity_id: req.target_activity_id,
            comment: req.comment,
            resume_at_returner: req.resume_at_returner,
            request_id: req.request_id,
        };
        let (task, view) = self.workflow.return_task(&actor, back).await?;
        let graph = self
            .workflow
            .graph_for(&task.definition_key, task.definition_version)
            .await
            .ok();
        let state = (&view.multi, &view.instance.variables);
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(convert::task_in(&task, graph.as_deref(), Some(state))),
            instance: Some(convert::instance(&view, graph.as_deref())),
        }))
    }

    async fn reassign_task(
        &self,
        request: Request<pb::ReassignTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let task = self
            .workflow
            .reassign_task(
                &actor,
                &req.task_id,
                req.new_assignee.trim(),
                &req.comment,
                &req.request_id,
            )
            .await?;
        Ok(Response::new(self.task_pb(&task).await))
    }

    async fn delegate_task(
        &self,
        request: Request<pb::DelegateTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let task = self
            .workflow
            .delegate_task(
                &actor,
                &req.task_id,
                req.user_id.trim(),
                &req.comment,
                &req.request_id,
            )
            .await?;
        Ok(Response::new(self.task_pb(&task).await))
    }

    async fn recall_task(
        &self,
        request: Request<pb::RecallTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let (task, view) = self
            .workflow
            .recall_task(&actor, &req.task_id, &req.comment, &req.request_id)
            .await?;
        let graph = self
            .workflow
            .graph_for(&task.definition_key, task.definition_version)
            .await
            .ok();
        let state = (&view.multi, &view.instance.variables);
        Ok(Response::new(pb::CompleteTaskResponse {
            task: Some(convert::task_in(&task, graph.as_deref(), Some(state))),
            instance: Some(convert::instance(&view, graph.as_deref())),
        }))
    }

    async fn watch_tasks(
        &self,
        request: Request<pb::WatchTasksRequest>,
    ) -> Result<Response<TaskEventStream>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        if req.assignee.is_empty() && req.process_instance_id.is_empty() {
            return Err(crate::error::Error::invalid(
                "assignee",
                "give an assignee or a process_instance_id to watch",
            )
            .into());
        }
        if !req.assignee.is_empty() {
            policy::can(
                &actor,
                policy::Action::ReadInboxOf {
                    user_id: &req.assignee,
                },
            )?;
        }
        if !req.process_instance_id.is_empty() {
            self.workflow
                .authorize_read_id(&actor, &req.process_instance_id)
                .await?;
        }
        // Subscribe before reading the open tasks so that nothing falls between the two.
        let events = self.workflow.subscribe_tasks();
        let mut initial = Vec::new();
        if req.include_open {
            let filter = TaskFilter {
                assignee: req.assignee.clone(),
                instance_id: req.process_instance_id.clone(),
                status: Some(TaskStatus::Open),
                ..TaskFilter::default()
            };
            let mut page = PageRequest::new(500, "")?;
            loop {
                let found = self.workflow.list_tasks(&filter, &page).await?;
                for task in found.items {
                    initial.push(TaskEvent {
                        kind: TaskEventKind::Opened,
                        at: task.created_at,
                        task,
                        previous_assignee: String::new(),
                    });
                }
                if found.next_page_token.is_empty() {
                    break;
                }
                page = PageRequest::new(500, found.next_page_token)?;
            }
        }
        let matches = move |event: &TaskEvent| {
            (req.assignee.is_empty()
                || event.task.assignee == req.assignee
                || event.previous_assignee == req.assignee)
                && (req.process_instance_id.is_empty()
                    || event.task.instance_id == req.process_instance_id)
        };
        let workflow = self.workflow.clone();
        let convert = move |event: TaskEvent| {
            let workflow = workflow.clone();
            async move { convert_event(&workflow, &event).await }
        };
        let live = Live {
            initial,
            events,
            shutdown: self.shutdown.clone(),
            resync_hint: "list tasks and watch again",
        };
        Ok(Response::new(live.forward(matches, convert)))
    }
}

async fn convert_event(workflow: &Workflow, event: &TaskEvent) -> pb::TaskEvent {
    let graph = workflow
        .graph_for(&event.task.definition_key, event.task.definition_version)
        .await
        .ok();
    convert::task_event(event, graph.as_deref())
}
