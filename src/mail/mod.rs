//! Email approval: reply tokens, composing approval mail, reading replies (delivering it:
//! [`crate::delivery`]).
pub mod answer;
pub mod cc;
pub mod compose;
pub mod inbound;
pub mod reminder_texts;
pub mod reply;
pub(crate) mod template_set;
pub mod token;
pub mod transport;
