//! Email approval, inbound (DESIGN §5): every received mail gets exactly one row in the inbound
//! log with a verdict. A reply is correlated (plus-address token, In-Reply-To/References to our
//! Message-IDs, the body's token line, the subject tag), verified (token HMAC, sender, validity,
//! one use, task still open and still the approver's), read with the task's outcomes, and — when
//! it decides — applied in the same transaction that records it and claims its Message-ID and
//! content hash, so a reply is applied once even when fetched twice.
//!
//! The same holds for the other effects a mail can have: a `delegate <email>` reply hands the
//! task on ([`Workflow::reassign_in`]) and a bounce marks the returned mail failed, each in the
//! transaction of its log row. A mail over [`MAX_INBOUND_BYTES`] is judged by its header alone.
//!
//! The seams: [`judge`] reads a mail and checks it against what the store holds (the checks
//! themselves, [`judge::verify`], are a pure function of those facts); [`apply`] writes what was
//! judged; [`batch`] runs a batch of mails through both, one transaction per batch; [`answers`]
//! writes the polite answer; [`quarantine`] sets aside mail that keeps failing.
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{new_id, tasks::CompleteTask, tasks::Prepared};
use crate::{
    error::{Error, Result},
    mail::{
        reply::{self, BounceReport, OutcomeWords, ReplyReading},
        token,
    },
    model::{ApprovalContext, InboundEmail, Task, User, Verdict},
};

mod answers;
mod apply;
mod batch;
mod judge;
mod quarantine;

use answers::AnswerFacts;

/// Larger mails are not read: only their header is, for the log and the answer (no approval
/// reply is this big).
pub const MAX_INBOUND_BYTES: usize = 10 * 1024 * 1024;

/// Of a mail over the limit, at most this much header is read.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// One received mail, as a transport hands it to [`Workflow::ingest_batch`].
#[derive(Debug, Clone, Copy)]
pub struct ReceivedMail<'a> {
    pub raw: &'a [u8],
    /// The envelope recipient (plus address) when the transport knows it.
    pub delivered_to: Option<&'a str>,
    /// `imap`, `maildir`, `rpc`: kept in the log row.
    pub transport: &'a str,
}

/// How a reply was tied to its approval context.
#[derive(Debug, Clone)]
struct Correlated {
    context: ApprovalContext,
    path: &'static str,
    token: Option<token::TokenParts>,
}

/// What the checks decided before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Judgement {
    verdict: Verdict,
    reason: String,
    /// Not answered whatever the verdict (a robot's mail judged on its header alone).
    silent: bool,
}

fn judged(verdict: Verdict, reason: impl Into<String>) -> Judgement {
    Judgement {
        verdict,
        reason: reason.into(),
        silent: false,
    }
}

/// What an accepted reply does, in the transaction that records it.
#[derive(Debug)]
enum Effect {
    /// `prepared`: the completion computed by the checks, before the write transaction.
    Decide {
        request: CompleteTask,
        prepared: Option<Box<Prepared>>,
    },
    Delegate {
        to: User,
        comment: String,
    },
}

/// The result of every check (committed state only): what to write for one mail.
#[derive(Debug)]
struct Plan {
    /// The log row so far; `instance_id` names the instance the mail is about, if any.
    record: InboundEmail,
    action: Action,
    facts: AnswerFacts,
}

impl Plan {
    fn new(record: InboundEmail, action: Action) -> Self {
        Self {
            record,
            action,
            facts: AnswerFacts::default(),
        }
    }

    /// The task as the checks read it (spares the answer reading it again).
    fn with_task(mut self, task: Task) -> Self {
        self.facts.task = Some(task);
        self
    }
}

#[derive(Debug)]
enum Action {
    /// A verdict that changes nothing else.
    Record(Judgement),
    /// Boxed: far larger than the other plans.
    Apply(Box<(ApprovalContext, Effect)>),
    /// A bounce that names sent mail of ours as failed.
    Bounce(BounceReport),
}

/// A bounce's diagnostic and ` to RECIPIENT`, for its log row.
fn bounce_words(report: &BounceReport) -> (String, String) {
    let diagnostic = if report.diagnostic.is_empty() {
        "no diagnostic given".to_string()
    } else {
        report.diagnostic.clone()
    };
    let to = if report.recipient.is_empty() {
        String::new()
    } else {
        format!(" to {}", report.recipient)
    };
    (diagnostic, to)
}

/// A log row for a received mail, before any verdict.
fn new_record(hashed: &[u8], size: u64, transport: &str, now: i64) -> InboundEmail {
    InboundEmail {
        id: new_id(),
        message_id: String::new(),
        sha256: Sha256::digest(hashed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        sender: String::new(),
        subject: String::new(),
        transport: transport.to_string(),
        size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
        task_id: String::new(),
        instance_id: String::new(),
        context_id: String::new(),
        correlation: json!({}),
        verdict: Verdict::Unparseable,
        reason: String::new(),
        outcome: String::new(),
        comment: String::new(),
        delegate_to: String::new(),
        authentication_results: String::new(),
        explanation: Vec::new(),
        answered: false,
        received_at: now,
    }
}

/// [`reply::read_reply`] with a panic in the parsing libraries turned into this mail's error: it
/// is then counted, tried again and quarantined like any failing mail, instead of taking the
/// reader (and every mail behind it) down with it.
fn read_contained(
    raw: &[u8],
    outcomes: &[OutcomeWords],
    delivered_to: Option<&str>,
) -> Result<ReplyReading> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        reply::read_reply(raw, outcomes, delivered_to)
    }))
    .map_err(|_| Error::Internal(anyhow::anyhow!("the reply reader panicked on this mail")))
}

/// The decoded Subject. Only the header block is parsed (the subject is a field of the top-level
/// header, which ends at the first blank line): the body was read already by the reply reader.
fn subject_of(raw: &[u8]) -> String {
    let head = match header_end(raw) {
        Some(end) => &raw[..end],
        None => raw,
    };
    std::panic::catch_unwind(|| {
        mail_parser::MessageParser::default()
            .parse(head)
            .and_then(|m| m.subject().map(str::to_string))
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// Where the header block of `raw` ends: just after the first blank line.
fn header_end(raw: &[u8]) -> Option<usize> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The header block of a raw mail: up to and including the blank line that ends it, or the
/// first [`MAX_HEADER_BYTES`] when there is none that early.
pub fn header_block(raw: &[u8]) -> &[u8] {
    let head = &raw[..raw.len().min(MAX_HEADER_BYTES)];
    &head[..header_end(head).unwrap_or(head.len())]
}

/// A size for people: `10 MiB`, `10.5 MiB`.
fn mib(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// Our Message-IDs are `<rf.<context id>.<n>@domain>`.
fn our_context_id(message_id: &str) -> Option<String> {
    let inner = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let rest = inner.strip_prefix("rf.")?;
    let (id, _) = rest.split_once('.')?;
    (id.len() == 13 && id.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| id.to_string())
}

fn describe(record: &mut InboundEmail, reading: &ReplyReading) {
    let c = &reading.correlation;
    record.message_id = c.message_id.clone();
    record.sender = c.from.clone();
    record.authentication_results = c.authentication_results.join("\n");
    record.correlation = serde_json::to_value(c).unwrap_or_default();
    record.explanation = reading.explanation.clone();
    record.delegate_to = reading.delegate_to.clone().unwrap_or_default();
}

#[cfg(test)]
mod tests {
    use super::{header_block, our_context_id, subject_of};

    #[test]
    fn our_message_ids_name_their_context() {
        assert_eq!(
            our_context_id("<rf.abcdefghijklm.2@replyflow.test>").as_deref(),
            Some("abcdefghijklm")
        );
        assert_eq!(our_context_id("<CAF=x@mail.gmail.com>"), None);
        assert_eq!(our_context_id("<rf.short.1@x>"), None);
    }

    #[test]
    fn the_subject_is_read_from_the_header_alone() {
        let raw = "From: a@x.test\r\nSubject: =?UTF-8?B?5ZCM5oSP?= =?UTF-8?B?77yB?=\r\n\r\nSubject: not this\r\n";
        assert_eq!(subject_of(raw.as_bytes()), "同意！");
        assert_eq!(subject_of(b"Subject: no body\n"), "no body");
        assert_eq!(header_block(b"A: b\n\nbody"), b"A: b\n\n");
    }
}
