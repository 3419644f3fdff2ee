//! Email approval: reply tokens, composing approval mail, delivering it.
pub mod answer;
pub mod compose;
pub mod reply;
pub mod token;
pub mod transport;
pub mod trust;
