//! ApprovalService: the approval context of a task and the delivery of its mail. Reading replies
//! (SubmitInboundEmail, ExplainReply, ListInboundEmails) answers UNIMPLEMENTED until the inbound
//! email issue lands.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::actor, convert::timestamp};
use crate::{
    model::{ApprovalStatus, OutboxStatus},
    proto::pb,
    workflow::{Workflow, approvals::ApprovalView},
};

#[derive(Debug)]
pub(super) struct ApprovalApi {
    workflow: Arc<Workflow>,
}

impl ApprovalApi {
    pub(super) fn new(workflow: Arc<Workflow>) -> Self {
        Self { workflow }
    }
}

fn approval_pb(view: &ApprovalView) -> pb::ApprovalContext {
    let c = &view.context;
    let status = match c.status {
        ApprovalStatus::Pending => pb::ApprovalStatus::Pending,
        ApprovalStatus::Used => pb::ApprovalStatus::Used,
        ApprovalStatus::Expired => pb::ApprovalStatus::Expired,
        ApprovalStatus::Revoked => pb::ApprovalStatus::Revoked,
    };
    let mail = view.latest_mail.as_ref();
    let delivery_status = match mail.map(|m| m.status) {
        None => pb::DeliveryStatus::Unspecified,
        Some(OutboxStatus::Queued) => pb::DeliveryStatus::Queued,
        Some(OutboxStatus::Sent) => pb::DeliveryStatus::Sent,
        Some(OutboxStatus::TempFailed) => pb::DeliveryStatus::TempFailed,
        Some(OutboxStatus::PermFailed) => pb::DeliveryStatus::PermFailed,
        Some(OutboxStatus::Cancelled) => pb::DeliveryStatus::Cancelled,
    };
    let retrying =
        mail.is_some_and(|m| matches!(m.status, OutboxStatus::Queued | OutboxStatus::TempFailed));
    pb::ApprovalContext {
        task_id: c.task_id.clone(),
        approver_email: c.approver_email.clone(),
        sent_at: mail.and_then(|m| m.sent_at).and_then(timestamp),
        valid_until: timestamp(c.valid_until),
        status: status as i32,
        delivery_status: delivery_status as i32,
        attempts: mail.map_or(0, |m| i32::try_from(m.attempts).unwrap_or(i32::MAX)),
        last_error: mail
            .filter(|m| m.status != OutboxStatus::Sent)
            .map(|m| m.last_error.clone())
            .unwrap_or_default(),
        // The proto shows Message-IDs without their angle brackets.
        message_id: c
            .message_id
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        id: c.id.clone(),
        created_at: timestamp(c.sent_at),
        used_at: c.used_at.and_then(timestamp),
        next_attempt_at: if retrying {
            mail.and_then(|m| timestamp(m.next_attempt_at))
        } else {
            None
        },
        approver: c.approver.clone(),
        subject_tag: c.subject_tag.clone(),
        revoke_reason: c.revoke_reason.clone(),
        used_by_email_id: String::new(),
    }
}

#[tonic::async_trait]
impl pb::approval_service_server::ApprovalService for ApprovalApi {
    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::ApprovalContext>, Status> {
        actor(&request)?;
        let view = self
            .workflow
            .approval(&request.into_inner().task_id)
            .await?;
        Ok(Response::new(approval_pb(&view)))
    }

    async fn resend_approval_email(
        &self,
        request: Request<pb::ResendApprovalEmailRequest>,
    ) -> Result<Response<pb::ApprovalContext>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .resend_approval(&actor, &req.task_id, req.renew, &req.request_id)
            .await?;
        Ok(Response::new(approval_pb(&view)))
    }

    async fn revoke_approval(
        &self,
        request: Request<pb::RevokeApprovalRequest>,
    ) -> Result<Response<pb::ApprovalContext>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let view = self
            .workflow
            .revoke_approval(&actor, &req.task_id, &req.reason, &req.request_id)
            .await?;
        Ok(Response::new(approval_pb(&view)))
    }
}
