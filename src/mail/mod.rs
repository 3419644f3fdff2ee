//! Email approval: reply tokens, composing approval mail, delivering it.
pub mod answer;
pub mod compose;
pub mod reply;
mod smtp_tls;
pub mod token;
pub mod transport;
pub mod trust;
