//! The harness as tests/api sees it: the shared [`TestApp`] (tests/shared/app.rs) and the
//! approval-mail and reply helpers (tests/shared/approval_mail.rs), under the names these tests
//! have always imported from `crate::helpers`.
pub use crate::{app::*, approval_mail::*};
