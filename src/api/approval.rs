//! ApprovalService: the approval context of a task and the delivery of its mail; replies taken
//! as raw RFC 822 (an MTA pipe or a provider's webhook), the inbound log, and ExplainReply — the
//! reply reader without side effects.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    auth::actor,
    convert::{approval_pb, correlation_pb, inbound_pb, verdict_filter},
};
use crate::{
    mail::reply,
    policy,
    proto::pb,
    store::{PageRequest, inbound::InboundFilter},
    workflow::Workflow,
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

#[tonic::async_trait]
impl pb::approval_service_server::ApprovalService for ApprovalApi {
    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::ApprovalContext>, Status> {
        let actor = actor(&request)?;
        let view = self
            .workflow
            .approval(&request.into_inner().task_id)
            .await?;
        self.workflow
            .authorize_task_read(&actor, &view.context.approver, &view.context.instance_id)
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

    async fn submit_inbound_email(
        &self,
        request: Request<pb::SubmitInboundEmailRequest>,
    ) -> Result<Response<pb::InboundEmail>, Status> {
        let actor = actor(&request)?;
        // Only the MTA's pipe or webhook may hand in mail: the message's own headers
        // (Authentication-Results included) are what it says they are only if they came that way.
        policy::can(&actor, policy::Action::SubmitInboundEmail)?;
        let req = request.into_inner();
        if req.raw.is_empty() {
            return Err(Status::invalid_argument("raw: required"));
        }
        let recipient = (!req.recipient.is_empty()).then_some(req.recipient.as_str());
        let record = self.workflow.ingest(&req.raw, recipient, "rpc").await?;
        Ok(Response::new(inbound_pb(&record)))
    }

    async fn list_inbound_emails(
        &self,
        request: Request<pb::ListInboundEmailsRequest>,
    ) -> Result<Response<pb::ListInboundEmailsResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        // The mail role lists everything; others only the replies to a task they may read.
        if let Err(refused) = policy::can(&actor, policy::Action::ListAllInboundEmails) {
            if req.task_id.is_empty() {
                return Err(refused.into());
            }
            let task = self.workflow.task(&req.task_id).await?;
            self.workflow
                .authorize_task_read(&actor, &task.assignee, &task.instance_id)
                .await?;
        }
        let page = PageRequest::new(req.page_size, req.page_token)?;
        let filter = InboundFilter {
            task_id: req.task_id,
            sender: req.sender.to_lowercase(),
            message_id: if req.message_id.is_empty() {
                String::new()
            } else {
                format!(
                    "<{}>",
                    req.message_id.trim_start_matches('<').trim_end_matches('>')
                )
            },
            verdict: verdict_filter(req.verdict)?,
        };
        let page = self.workflow.store().list_inbound(&filter, &page).await?;
        Ok(Response::new(pb::ListInboundEmailsResponse {
            emails: page.items.iter().map(inbound_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn explain_reply(
        &self,
        request: Request<pb::ExplainReplyRequest>,
    ) -> Result<Response<pb::ReplyExplanation>, Status> {
        actor(&request)?;
        let req = request.into_inner();
        if req.raw.is_empty() {
            return Err(Status::invalid_argument("raw: required"));
        }
        let ids: Vec<&str> = if req.outcomes.is_empty() {
            vec!["approve", "reject"]
        } else {
            req.outcomes.iter().map(String::as_str).collect()
        };
        let reading = reply::read_reply(&req.raw, &reply::OutcomeWords::defaults(&ids), None);
        let kind = serde_json::to_value(reading.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let correlation = serde_json::to_value(&reading.correlation).unwrap_or_default();
        Ok(Response::new(pb::ReplyExplanation {
            kind,
            outcome: reading.outcome.unwrap_or_default(),
            delegate_to: reading.delegate_to.unwrap_or_default(),
            comment: reading.comment,
            new_text: reading.new_text,
            explanation: reading.explanation,
            correlation: Some(correlation_pb(&correlation)),
            decision_line: reading.decision_line.unwrap_or_default(),
            ambiguous_outcomes: reading.ambiguous,
            expected_verdict: pb::Verdict::Unspecified as i32,
        }))
    }
}
