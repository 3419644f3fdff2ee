//! ReminderService is part of the contract now so that clients can be generated against the
//! whole API; its RPCs answer UNIMPLEMENTED (the generated default methods) until the reminder
//! feature lands.
use crate::proto::pb;

#[derive(Debug, Clone, Copy)]
pub(super) struct ReminderApi;

#[tonic::async_trait]
impl pb::reminder_service_server::ReminderService for ReminderApi {}
