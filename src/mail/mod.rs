//! Email approval: reply tokens, composing approval mail, delivering it.
pub mod compose;
pub mod token;
pub mod transport;
