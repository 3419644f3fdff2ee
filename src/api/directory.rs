//! DirectoryService: the OA pushes its users (email, manager, locale) here.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::actor, convert};
use crate::{
    model::User,
    policy::{self, Actor},
    proto::pb,
    store::PageRequest,
    workflow::Workflow,
};

#[derive(Debug)]
pub(super) struct DirectoryApi {
    workflow: Arc<Workflow>,
}

impl DirectoryApi {
    pub(super) fn new(workflow: Arc<Workflow>) -> Self {
        Self { workflow }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn upsert_user(
        &self,
        request: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = actor(&request)?;
        policy::can(&actor, policy::Action::UpsertUser)?;
        let user = convert::user_from_pb(request.into_inner().user)?;
        let user = self.workflow.upsert_user(user).await?;
        Ok(Response::new(convert::user(&user)))
    }

    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let actor = actor(&request)?;
        let user = self.workflow.user(&request.into_inner().id).await?;
        Ok(Response::new(user_for(&actor, &user)))
    }

    async fn list_users(
        &self,
        request: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let page = self
            .workflow
            .list_users(&req.manager_id, &req.email, &page)
            .await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: page.items.iter().map(|u| user_for(&actor, u)).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}

/// A directory entry as `actor` may see it: phone numbers only for themselves and `directory`.
fn user_for(actor: &Actor, user: &User) -> pb::User {
    let mut shown = convert::user(user);
    if policy::can(actor, policy::Action::SeePhone { user_id: &user.id }).is_err() {
        shown.phone = String::new();
    }
    shown
}
