//! ApprovalService and ReminderService are part of the contract now so that clients can be
//! generated against the whole API; their RPCs answer UNIMPLEMENTED (the generated default
//! methods) until the email-approval and reminder features land.
use crate::proto::pb;

#[derive(Debug, Clone, Copy)]
pub(super) struct ApprovalApi;

#[derive(Debug, Clone, Copy)]
pub(super) struct ReminderApi;

#[tonic::async_trait]
impl pb::approval_service_server::ApprovalService for ApprovalApi {}

#[tonic::async_trait]
impl pb::reminder_service_server::ReminderService for ReminderApi {}
