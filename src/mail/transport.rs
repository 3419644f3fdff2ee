//! Where the mail transport lived before [`crate::delivery`] became the home of every outbound
//! transport: the old names, for the callers (tests, the bench) that still use them.
pub use crate::delivery::{SendError, Transport as MailTransport, from_url, trust::tls_roots};
