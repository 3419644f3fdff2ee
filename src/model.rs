//! The domain records the store reads and writes and the API converts: plain data, with the
//! status enums spelled once (their database text and their meaning).
use serde_json::{Map, Value};

use crate::{clock::Millis, engine::reminder_rules::EscalationPolicy};

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
    // 挂起: nothing may be decided and its reminders wait until it is resumed.
    Suspended = "suspended",
});

text_enum!(TaskStatus {
    Open = "open",
    Completed = "completed",
    Withdrawn = "withdrawn",
    Cancelled = "cancelled",
    Returned = "returned",
});

text_enum!(
    /// How a task was completed; empty in the database while it is open.
    CompletedVia {
        Api = "api",
        Email = "email",
        Escalation = "escalation",
        // By the server at creation: the assignee had already approved an earlier task of the
        // instance (`replyflow:skipIfApprovedBefore`).
        Auto = "auto",
    }
);

text_enum!(
    /// Where a task stands in a delegation (委派, DESIGN §11): `Pending` while the delegate holds
    /// it, `Resolved` once their opinion handed it back to its owner.
    Delegation {
        None = "none",
        Pending = "pending",
        Resolved = "resolved",
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
    /// Who the task belongs to while it is delegated and after (委派): the assignee who delegated
    /// it; empty for a task never delegated.
    pub owner: String,
    pub delegation: Delegation,
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
    Returned,
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
    /// The approver's aliases (lower case) when the context was issued: with `approver_email`
    /// the only senders whose reply may decide (an alias added later never can).
    pub approver_aliases: Vec<String>,
    /// The HMAC key the token was signed with; tokens verify with this key only.
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

text_enum!(
    /// What an outbox row carries: an approval mail (also a resent one), a reminder's mail, an
    /// answer to a received reply (counted per hour against floods), or a reminder's SMS (to the
    /// gateway; every other kind is a mail).
    OutboxKind {
        Approval = "approval",
        Reminder = "reminder",
        Answer = "answer",
        Sms = "sms",
        // 抄送: an FYI mail, no reply token.
        Cc = "cc",
    }
);

/// A mail waiting for, or done with, delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub id: String,
    pub kind: OutboxKind,
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
    /// What to do if this row fails for good (a reminder's next channel), as JSON; empty = nothing.
    pub fallback: String,
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
        Quarantined = "quarantined",
        SeveralFrom = "several_from",
        Suspended = "suspended",
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

text_enum!(
    /// A reminder's life (DESIGN §6).
    ReminderState {
        New = "new",
        Reminded = "reminded",
        RemindCompleted = "remind_completed",
        RemindFailed = "remind_failed",
        FinishedBeforeRemind = "finished_before_remind",
        FinishedAfterRemind = "finished_after_remind",
        Cancelled = "cancelled",
    }
);

impl ReminderState {
    /// Still chasing: it fires (or escalates) at next_fire_at.
    pub fn is_active(self) -> bool {
        matches!(self, Self::New | Self::Reminded | Self::RemindCompleted)
    }
}

text_enum!(
    /// Where a reminder goes.
    Channel {
        Inbox = "inbox",
        Email = "email",
        Sms = "sms",
    }
);

/// A reminder type: how often and how to chase, and what to do when that runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderType {
    pub id: String,
    pub count: i64,
    pub interval_ms: i64,
    /// In fallback order.
    pub channels: Vec<Channel>,
    pub escalation: EscalationPolicy,
    /// "server", or "definition:<key>:<version>".
    pub source: String,
    pub updated_at: Millis,
}

/// A reminder (催办): the edge start_activity → end_activity of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub id: String,
    pub instance_id: String,
    pub definition_key: String,
    pub start_activity: String,
    pub end_activity: String,
    /// The parallel join the edge waits at, '' if none (or once the join fired).
    pub via_join: String,
    pub group_id: String,
    pub reminder_type: String,
    pub count: i64,
    pub interval_ms: i64,
    pub channels: Vec<Channel>,
    pub escalation: EscalationPolicy,
    pub state: ReminderState,
    pub sent_count: i64,
    pub next_fire_at: Option<Millis>,
    pub escalated: bool,
    pub created_at: Millis,
    /// 0 = never.
    pub first_fired_at: Millis,
    pub last_fired_at: Millis,
    pub finished_at: Millis,
}

text_enum!(
    /// What an in-system message is about.
    MessageKind {
        Reminder = "reminder",
        ManualReminder = "manual_reminder",
        Escalation = "escalation",
        Notice = "notice",
        Cc = "cc",
    }
);

/// An in-system message (系统短消息).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    pub user_id: String,
    pub kind: MessageKind,
    pub title: String,
    pub body: String,
    pub task_id: String,
    pub instance_id: String,
    /// Who sent it (RemindNow caller); empty for the system.
    pub sender: String,
    /// None while unread.
    pub read_at: Option<Millis>,
    pub created_at: Millis,
}
