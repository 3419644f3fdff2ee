//! ApprovalService: the approval context of a task and the delivery of its mail; replies taken
//! as raw RFC 822 (an MTA pipe or a provider's webhook), the inbound log, and ExplainReply — the
//! reply reader without side effects.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{auth::actor, convert::timestamp};
use crate::{
    mail::reply,
    model::{ApprovalStatus, InboundEmail, OutboxStatus, Verdict},
    policy,
    proto::pb,
    store::{PageRequest, inbound::InboundFilter},
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

fn verdict_pb(verdict: Verdict) -> pb::Verdict {
    match verdict {
        Verdict::Applied => pb::Verdict::Applied,
        Verdict::Duplicate => pb::Verdict::Duplicate,
        Verdict::UnknownToken => pb::Verdict::UnknownToken,
        Verdict::BadSignature => pb::Verdict::BadSignature,
        Verdict::SenderMismatch => pb::Verdict::SenderMismatch,
        Verdict::Expired => pb::Verdict::Expired,
        Verdict::AlreadyUsed => pb::Verdict::AlreadyUsed,
        Verdict::TaskClosed => pb::Verdict::TaskClosed,
        Verdict::Ambiguous => pb::Verdict::Ambiguous,
        Verdict::NoDecision => pb::Verdict::NoDecision,
        Verdict::AutoReply => pb::Verdict::AutoReply,
        Verdict::Bounce => pb::Verdict::Bounce,
        Verdict::TooLarge => pb::Verdict::TooLarge,
        Verdict::Unparseable => pb::Verdict::Unparseable,
        Verdict::Revoked => pb::Verdict::Revoked,
        Verdict::AuthFailed => pb::Verdict::AuthFailed,
        Verdict::Quarantined => pb::Verdict::Quarantined,
        Verdict::SeveralFrom => pb::Verdict::SeveralFrom,
    }
}

fn verdict_filter(value: i32) -> Result<Option<Verdict>, Status> {
    let verdict = pb::Verdict::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("verdict: unknown Verdict {value}")))?;
    Ok(match verdict {
        pb::Verdict::Unspecified => None,
        other => Verdict::parse(
            &other
                .as_str_name()
                .trim_start_matches("VERDICT_")
                .to_lowercase(),
        ),
    })
}

fn correlation_pb(value: &serde_json::Value) -> pb::Correlation {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let list = |key: &str| -> Vec<String> {
        value
            .get(key)
            .and_then(|v| v.as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let method = match text("token_source").as_str() {
        "plus_address" => pb::CorrelationMethod::PlusAddress,
        "body" => pb::CorrelationMethod::BodyToken,
        _ => pb::CorrelationMethod::Unspecified,
    };
    pb::Correlation {
        method: method as i32,
        token_found: value.get("token").is_some_and(|t| !t.is_null()),
        in_reply_to: list("in_reply_to").into_iter().next().unwrap_or_default(),
        references: list("references"),
        subject_tag: value
            .get("subject_tag")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string(),
        token_location: text("token_source"),
        ..Default::default()
    }
}

fn inbound_pb(m: &InboundEmail) -> pb::InboundEmail {
    pb::InboundEmail {
        id: m.id.clone(),
        message_id: m
            .message_id
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        sender: m.sender.clone(),
        task_id: m.task_id.clone(),
        verdict: verdict_pb(m.verdict) as i32,
        reason: m.reason.clone(),
        received_at: timestamp(m.received_at),
        transport: m.transport.clone(),
        size_bytes: m.size_bytes,
        sha256: m.sha256.clone(),
        subject: m.subject.clone(),
        correlation: Some(pb::Correlation {
            approval_id: m.context_id.clone(),
            task_id: m.task_id.clone(),
            ..correlation_pb(&m.correlation)
        }),
        outcome: m.outcome.clone(),
        comment: m.comment.clone(),
        delegate_to: m.delegate_to.clone(),
        authentication_results: m.authentication_results.clone(),
        explanation: m.explanation.clone(),
        process_instance_id: m.instance_id.clone(),
        answered: m.answered,
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
