//! The domain records the store reads and writes and the API converts: plain data, with the
//! status enums spelled once (their database text and their meaning).
use serde_json::{Map, Value};

use crate::clock::Millis;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)+ _ => None }
            }
        }
    };
}

text_enum!(InstanceStatus {
    Running = "running",
    Completed = "completed",
    Cancelled = "cancelled",
    Failed = "failed",
});

text_enum!(TaskStatus {
    Open = "open",
    Completed = "completed",
    Withdrawn = "withdrawn",
    Cancelled = "cancelled",
});

text_enum!(
    /// How a task was completed; empty in the database while it is open.
    CompletedVia {
        Api = "api",
        Email = "email",
        Escalation = "escalation",
    }
);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub id: String,
    pub key: String,
    pub version: i64,
    pub name: String,
    pub bpmn_xml: String,
    pub deployed_by: String,
    pub created_at: Millis,
    /// Whether no higher version of this key exists.
    pub latest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub id: String,
    pub display_name: String,
    pub email: String,
    pub email_aliases: Vec<String>,
    pub phone: String,
    pub manager_id: String,
    pub locale: String,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub definition_key: String,
    pub definition_version: i64,
    pub business_key: String,
    pub variables: Map<String, Value>,
    pub status: InstanceStatus,
    pub error: String,
    pub started_by: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub instance_id: String,
    pub definition_key: String,
    pub definition_version: i64,
    pub business_key: String,
    pub activity_id: String,
    pub name: String,
    pub assignee: String,
    pub status: TaskStatus,
    pub outcome: String,
    pub comment: String,
    pub completed_by: String,
    pub completed_via: Option<CompletedVia>,
    pub group_id: String,
    pub from_activity: String,
    pub created_at: Millis,
    pub completed_at: Option<Millis>,
}

/// One line of an instance's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub instance_id: String,
    pub at: Millis,
    pub kind: String,
    pub activity_id: String,
    pub actor: String,
    pub detail: Value,
}

/// What a task event stream (WatchTasks) carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEventKind {
    Opened,
    Completed,
    Withdrawn,
    Reassigned,
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub kind: TaskEventKind,
    pub task: Task,
    /// Set for a reassignment.
    pub previous_assignee: String,
    pub at: Millis,
}

/// One page of a list: the items and the token of the next page (empty at the end).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

text_enum!(ApprovalStatus {
    Pending = "pending",
    Used = "used",
    Expired = "expired",
    Revoked = "revoked",
});

/// 审批上下文: what a reply to one approval mail may do, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalContext {
    /// Also the middle of the reply token.
    pub id: String,
    pub task_id: String,
    pub instance_id: String,
    pub approver: String,
    pub approver_email: String,
    /// The HMAC key the token was signed with.
    pub kid: i64,
    pub sent_at: Millis,
    pub valid_until: Millis,
    pub status: ApprovalStatus,
    /// Message-ID of the first approval mail; later mails thread under it.
    pub message_id: String,
    pub subject_tag: String,
    pub last_mail_at: Millis,
    pub revoke_reason: String,
    pub used_at: Option<Millis>,
}

text_enum!(OutboxStatus {
    Queued = "queued",
    Sent = "sent",
    TempFailed = "temp_failed",
    PermFailed = "perm_failed",
    Cancelled = "cancelled",
});

/// A mail waiting for, or done with, delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: String,
    /// approval, resend, reminder, reply ...
    pub kind: String,
    pub context_id: String,
    pub task_id: String,
    pub recipient: String,
    pub sender: String,
    pub message_id: String,
    /// The whole RFC 822 message, rendered when the row was written.
    pub body: Vec<u8>,
    pub status: OutboxStatus,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_error: String,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
}

text_enum!(
    /// What became of a received mail (the inbound log's verdict).
    Verdict {
        Applied = "applied",
        Duplicate = "duplicate",
        UnknownToken = "unknown_token",
        BadSignature = "bad_signature",
        SenderMismatch = "sender_mismatch",
        Expired = "expired",
        AlreadyUsed = "already_used",
        TaskClosed = "task_closed",
        Ambiguous = "ambiguous",
        NoDecision = "no_decision",
        AutoReply = "auto_reply",
        Bounce = "bounce",
        TooLarge = "too_large",
        Unparseable = "unparseable",
        Revoked = "revoked",
        AuthFailed = "auth_failed",
    }
);

/// One row of the inbound log.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEmail {
    pub id: String,
    pub message_id: String,
    pub sha256: String,
    pub sender: String,
    pub subject: String,
    pub transport: String,
    pub size_bytes: i64,
    pub task_id: String,
    pub instance_id: String,
    pub context_id: String,
    pub correlation: Value,
    pub verdict: Verdict,
    pub reason: String,
    pub outcome: String,
    pub comment: String,
    pub delegate_to: String,
    pub authentication_results: String,
    pub explanation: Vec<String>,
    /// Whether a polite answer was queued to the sender.
    pub answered: bool,
    pub received_at: Millis,
}
