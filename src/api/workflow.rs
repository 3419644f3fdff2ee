//! WorkflowService: definitions and process instances.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::actor, convert};
use crate::{
    error::Error,
    policy::{self, Action},
    proto::pb,
    store::{InstanceFilter, PageRequest},
    workflow::{InstanceView, Workflow, instances::StartProcess},
};

#[derive(Debug)]
pub(super) struct WorkflowApi {
    workflow: Arc<Workflow>,
}

impl WorkflowApi {
    pub(super) fn new(workflow: Arc<Workflow>) -> Self {
        Self { workflow }
    }

    async fn instance_pb(&self, view: &InstanceView) -> pb::ProcessInstance {
        let i = &view.instance;
        let graph = self
            .workflow
            .graph_for(&i.definition_key, i.definition_version)
            .await
            .ok();
        convert::instance(view, graph.as_deref())
    }
}

fn version(value: i32) -> Result<i64, Error> {
    if value < 0 {
        return Err(Error::invalid(
            "version",
            "must not be negative (0 = latest)",
        ));
    }
    Ok(i64::from(value))
}

#[tonic::async_trait]
impl pb::workflow_service_server::WorkflowService for WorkflowApi {
    async fn deploy_definition(
        &self,
        request: Request<pb::DeployDefinitionRequest>,
    ) -> Result<Response<pb::Definition>, Status> {
        let actor = actor(&request)?;
        policy::can(&actor, Action::DeployDefinition)?;
        let req = request.into_inner();
        let stored = self.workflow.deploy(&actor, &req.bpmn_xml).await?;
        let (_, graph) = self
            .workflow
            .definition(&stored.key, stored.version)
            .await?;
        Ok(Response::new(convert::definition(
            &stored,
            Some(&graph),
            false,
        )))
    }

    async fn get_definition(
        &self,
        request: Request<pb::GetDefinitionRequest>,
    ) -> Result<Response<pb::Definition>, Status> {
        actor(&request)?;
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(Error::invalid("key", "required").into());
        }
        let (stored, graph) = self
            .workflow
            .definition(&req.key, version(req.version)?)
            .await?;
        Ok(Response::new(convert::definition(
            &stored,
            Some(&graph),
            true,
        )))
    }

    async fn list_definitions(
        &self,
        request: Request<pb::ListDefinitionsRequest>,
    ) -> Result<Response<pb::ListDefinitionsResponse>, Status> {
        actor(&request)?;
        let req = request.into_inner();
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let page = self
            .workflow
            .list_definitions(&req.key, req.latest_only, &page)
            .await?;
        Ok(Response::new(pb::ListDefinitionsResponse {
            definitions: page
                .items
                .iter()
                .map(|d| convert::definition(d, None, false))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn start_process(
        &self,
        request: Request<pb::StartProcessRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let start = StartProcess {
            definition_key: req.definition_key,
            version: version(req.version)?,
            business_key: req.business_key,
            variables: convert::struct_to_json(req.variables, "variables")?,
            request_id: req.request_id,
        };
        let view = self.workflow.start_process(&actor, start).await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }

    async fn get_process_instance(
        &self,
        request: Request<pb::GetProcessInstanceRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let view = self.workflow.instance(&request.into_inner().id).await?;
        self.workflow.authorize_read(&actor, &view.instance).await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }

    async fn list_process_instances(
        &self,
        request: Request<pb::ListProcessInstancesRequest>,
    ) -> Result<Response<pb::ListProcessInstancesResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let filter = InstanceFilter {
            definition_key: req.definition_key,
            business_key: req.business_key,
            started_by: req.started_by,
            status: convert::instance_status_filter(req.status)?,
            visible_to: Workflow::visible_to(&actor),
            with_variables: match pb::InstanceView::try_from(req.view) {
                Ok(pb::InstanceView::Full) => true,
                Ok(pb::InstanceView::Basic | pb::InstanceView::Unspecified) => false,
                Err(_) => {
                    return Err(
                        Error::invalid("view", format!("unknown value {}", req.view)).into(),
                    );
                }
            },
        };
        let page = self.workflow.list_instances(&filter, &page).await?;
        let mut instances = Vec::with_capacity(page.items.len());
        for view in &page.items {
            instances.push(self.instance_pb(view).await);
        }
        Ok(Response::new(pb::ListProcessInstancesResponse {
            instances,
            next_page_token: page.next_page_token,
        }))
    }

    async fn withdraw_process_instance(
        &self,
        request: Request<pb::WithdrawProcessInstanceRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .withdraw_instance(
                &actor,
                &req.process_instance_id,
                &req.comment,
                &req.request_id,
            )
            .await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }

    async fn cancel_process_instance(
        &self,
        request: Request<pb::CancelProcessInstanceRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .cancel_instance(&actor, &req.id, &req.reason, &req.request_id)
            .await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }

    async fn suspend_process_instance(
        &self,
        request: Request<pb::SuspendProcessInstanceRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .suspend_instance(
                &actor,
                &req.process_instance_id,
                &req.comment,
                &req.request_id,
            )
            .await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }

    async fn resume_process_instance(
        &self,
        request: Request<pb::ResumeProcessInstanceRequest>,
    ) -> Result<Response<pb::ProcessInstance>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .resume_instance(
                &actor,
                &req.process_instance_id,
                &req.comment,
                &req.request_id,
            )
            .await?;
        Ok(Response::new(self.instance_pb(&view).await))
    }
}
