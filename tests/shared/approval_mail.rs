//! Approval mail and replies, for the api and mail binaries (`#[path]`-included by both): reading
//! the approval mail (its Reply-To token, Message-ID, text), building a reply the way a mail
//! client would (Gmail's layout), handing it in over gRPC, reading an approval context, and the
//! mail the file transport wrote into [`TestApp::outbox_dir`].
// Each test binary uses a part of these helpers.
#![allow(dead_code)]
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use replyflow::{
    mail::{
        compose::TOKEN_LINE_LABEL,
        token::{self, KeyRing},
    },
    proto::pb,
    store::{PageRequest, inbound::InboundFilter},
};
use tonic::Status;

use crate::app::{TestApp, eventually, req};

/// How long mail the server writes (file transport) may take to appear.
const WRITTEN: Duration = Duration::from_secs(10);

/// A unique id for Message-IDs and context ids, so tests sharing mailboxes never meet.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A Message-ID without its angle brackets, as mail_parser and IMAP searches want it.
pub fn bare(message_id: &str) -> &str {
    message_id.trim_matches(|c| c == '<' || c == '>')
}

/// Milliseconds since the epoch of a protobuf timestamp.
pub fn millis(ts: Option<prost_types::Timestamp>) -> i64 {
    let ts = ts.expect("a timestamp");
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

/// The value of header `name` in a raw mail (the first line `Name: value`).
pub fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in\n{mail}"))
}

/// The reply token in a mail's Reply-To (`approvals+<token>@domain`).
pub fn token_of(mail: &str) -> String {
    let reply_to = header(mail, "Reply-To");
    let plus = reply_to.split_once('+').map(|(_, rest)| rest).unwrap_or("");
    plus.split('@').next().unwrap_or_default().to_string()
}

/// Approval mail carries a Reply-To with a token (answers only an In-Reply-To).
pub fn is_approval(mail: &str) -> bool {
    mail.lines().any(|l| l.starts_with("Reply-To: "))
}

/// A mail's first text part, decoded.
pub fn text_of(mail: &str) -> String {
    mail_parser::MessageParser::default()
        .parse(mail.as_bytes())
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .unwrap_or_default()
}

/// The outcomes of examples/expense.bpmn's manager task: number, label, keywords.
pub const EXPENSE_OUTCOMES: &[(u32, &str, &[&str])] = &[
    (1, "同意", &["同意", "approve", "ok"]),
    (2, "驳回", &["驳回", "reject"]),
];

/// What the checks of [`check_approval_mail`] found, for further checks.
#[derive(Debug)]
pub struct ApprovalMailSeen {
    pub token: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub language: String,
}

/// Checks what every approval mail must be, against its context: multipart/alternative with a
/// text and an HTML part; Message-ID, subject tag, Auto-Submitted, X-Auto-Response-Suppress;
/// Reply-To `approvals+<token>@<the From address's domain>` with a token that verifies with the server's keys
/// for the approver's address and valid-until; every outcome with its number in the text, one
/// `mailto:` button per outcome in the HTML; the token line at the end of the text.
pub fn check_approval_mail(
    raw: &[u8],
    approval: &pb::ApprovalContext,
    ring: &KeyRing,
    outcomes: &[(u32, &str, &[&str])],
) -> ApprovalMailSeen {
    let mail = MessageParser::default()
        .parse(raw)
        .expect("the approval mail parses");
    let dump = String::from_utf8_lossy(raw);

    let root = mail.content_type().expect("Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative")),
        "{dump}"
    );
    let parts: Vec<(String, String)> = mail
        .root_part()
        .sub_parts()
        .expect("sub-parts")
        .iter()
        .map(|&id| {
            let ct = mail.parts[id as usize]
                .content_type()
                .expect("part Content-Type");
            (
                ct.ctype().to_string(),
                ct.subtype().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("text".to_string(), "plain".to_string()),
            ("text".to_string(), "html".to_string())
        ],
        "text, then HTML (the preferred alternative last)"
    );

    assert_eq!(mail.message_id(), Some(bare(&approval.message_id)));
    let subject = mail.subject().expect("Subject").to_string();
    assert!(approval.subject_tag.starts_with("RF-"), "{approval:?}");
    assert!(
        subject.contains(&format!("[{}]", approval.subject_tag)),
        "{subject:?} carries [{}]",
        approval.subject_tag
    );
    let header = |name: &str| {
        mail.header_raw(name)
            .unwrap_or_else(|| panic!("no {name} header:\n{dump}"))
            .trim()
            .to_string()
    };
    assert_eq!(header("Auto-Submitted"), "auto-generated");
    assert_eq!(header("X-Auto-Response-Suppress"), "All");
    let to = mail
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("To");
    assert_eq!(to, approval.approver_email);

    let reply_to = mail
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("Reply-To")
        .to_string();
    let from = mail
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("From");
    let domain = from
        .split_once('@')
        .map(|(_, d)| d)
        .expect("From has a domain");
    let token = reply_to
        .strip_prefix("approvals+")
        .and_then(|rest| rest.strip_suffix(&format!("@{domain}")))
        .unwrap_or_else(|| panic!("Reply-To {reply_to:?} is approvals+<token>@{domain}"))
        .to_string();
    assert_eq!(token.len(), token::TOKEN_LEN, "{token}");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c)),
        "lower-case base32: {token}"
    );
    let parts = token::parse(&token).expect("the Reply-To token parses");
    assert_eq!(parts.context_id, approval.id, "the token names the context");
    token::verify(
        ring,
        &parts,
        parts.kid,
        &approval.approver_email,
        millis(approval.valid_until),
    )
    .expect("the token verifies for the approver and valid-until");

    let text = mail.body_text(0).expect("text part").into_owned();
    let html = mail.body_html(0).expect("HTML part").into_owned();
    for (number, label, keywords) in outcomes {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no line for outcome {label} in the text part:\n{text}"));
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ':' || c == '：')
            .collect();
        assert!(
            words.contains(&number.to_string().as_str()),
            "outcome {label} is offered as number {number}: {line:?}"
        );
        for keyword in *keywords {
            assert!(
                words.contains(keyword),
                "outcome {label}: keyword {keyword} in {line:?}"
            );
        }
    }
    assert_eq!(
        text.trim_end().lines().last(),
        Some(format!("{TOKEN_LINE_LABEL} {token}").as_str()),
        "the text part ends with the token line:\n{text}"
    );

    let mailto = format!("href=\"mailto:{reply_to}?subject=");
    assert_eq!(
        html.matches("href=\"mailto:").count(),
        outcomes.len(),
        "one mailto: button per outcome"
    );
    assert_eq!(html.matches(&mailto).count(), outcomes.len(), "{html}");
    assert!(html.contains(&token), "the HTML carries the token line too");

    ApprovalMailSeen {
        token,
        subject,
        text,
        html,
        language: header("Content-Language"),
    }
}

/// What a reply needs from the approval mail it answers.
#[derive(Debug, Clone)]
pub struct ApprovalMail {
    /// `approvals+<token>@domain`.
    pub reply_to: String,
    /// Without angle brackets.
    pub message_id: String,
    pub subject: String,
    pub from: String,
    pub text: String,
}

impl ApprovalMail {
    pub fn parse(raw: &[u8]) -> Self {
        let mail = mail_parser::MessageParser::default()
            .parse(raw)
            .expect("the approval mail parses");
        let first = |a: Option<&mail_parser::Address<'_>>| {
            a.and_then(|a| a.first())
                .and_then(|a| a.address())
                .expect("an address")
                .to_string()
        };
        Self {
            reply_to: first(mail.reply_to()),
            message_id: mail.message_id().expect("Message-ID").to_string(),
            subject: mail.subject().unwrap_or_default().to_string(),
            from: first(mail.from()),
            text: mail
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        }
    }
}

/// A plain reply to the raw mail `original` (approval or reminder): the decision, the
/// attribution line, the first lines of the original quoted; To its Reply-To, In-Reply-To its
/// Message-ID, 8-bit UTF-8 text.
pub fn reply(from: &str, original: &str, body: &str, message_id: &str) -> Vec<u8> {
    let reply_to = header(original, "Reply-To");
    let reply_to = reply_to
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(reply_to);
    let original_id = header(original, "Message-ID");
    let quoted: String = original
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take(8)
        .map(|l| format!("> {l}\r\n"))
        .collect();
    format!(
        "From: {from}\r\nTo: {reply_to}\r\nSubject: Re: approval\r\nMessage-ID: {message_id}\r\n\
         In-Reply-To: {original_id}\r\nReferences: {original_id}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0800\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         {body}\r\n\r\nOn Sat, Nov 21, 2026 at 9:00 AM replyflow <approvals@replyflow.test> wrote:\r\n{quoted}"
    )
    .into_bytes()
}

/// A reply as Gmail (zh-CN) writes one: `body` on top, the attribution line, the quoted
/// original; In-Reply-To/References to the approval mail, base64 UTF-8 text. `extra_headers`
/// (CRLF-terminated lines) go first, e.g. a `Delivered-To:` for a Maildir. Returns the reply's
/// Message-ID and the raw mail.
pub fn gmail_reply(
    from_name: &str,
    from: &str,
    original: &ApprovalMail,
    body: &str,
    extra_headers: &str,
) -> (String, Vec<u8>) {
    let b64 = data_encoding::BASE64;
    let message_id = format!("<{}@mail.gmail.com>", unique("CAJ"));
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .expect("RFC 2822 date");
    let subject = format!("Re: {}", original.subject);
    let mut text = format!(
        "{body}\r\n\r\n在 2026年11月21日周六 23:40，审批 <{}> 写道：\r\n",
        original.from
    );
    for line in original.text.lines() {
        if line.is_empty() {
            text.push_str(">\r\n");
        } else {
            text.push_str(&format!("> {line}\r\n"));
        }
    }
    let encoded = b64.encode(text.as_bytes());
    let mut wrapped = String::new();
    for chunk in encoded.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        wrapped.push_str("\r\n");
    }
    let raw = format!(
        "{extra_headers}MIME-Version: 1.0\r\nDate: {date}\r\nMessage-ID: {message_id}\r\n\
         In-Reply-To: <{orig}>\r\nReferences: <{orig}>\r\n\
         Subject: =?UTF-8?B?{subject}?=\r\nFrom: =?UTF-8?B?{name}?= <{from}>\r\n\
         To: {to}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{wrapped}",
        orig = original.message_id,
        subject = b64.encode(subject.as_bytes()),
        name = b64.encode(from_name.as_bytes()),
        to = original.reply_to,
    );
    (message_id, raw.into_bytes())
}

/// Hands a reply in as the MTA would (SubmitInboundEmail as "mta"); its verdict row.
pub async fn submit(app: &TestApp, raw: Vec<u8>) -> pb::InboundEmail {
    app.approvals()
        .submit_inbound_email(req(
            pb::SubmitInboundEmailRequest {
                raw,
                ..Default::default()
            },
            "mta",
        ))
        .await
        .expect("submit")
        .into_inner()
}

/// The approval mail the file transport wrote first, waiting for it.
pub async fn approval_mail(app: &TestApp) -> String {
    app.mail_where("approval mail", |_| true).await
}

impl TestApp {
    /// The keys the server signs and verifies reply tokens with.
    pub fn reply_token_keys(&self) -> KeyRing {
        self.server_workflow.reply_token_keys().clone()
    }

    /// The task's approval context (GetApproval as "admin").
    pub async fn approval(&self, task_id: &str) -> pb::ApprovalContext {
        self.try_approval(task_id)
            .await
            .unwrap_or_else(|e| panic!("GetApproval {task_id}: {e}"))
    }

    pub async fn try_approval(&self, task_id: &str) -> Result<pb::ApprovalContext, Status> {
        self.approvals()
            .get_approval(req(
                pb::GetApprovalRequest {
                    task_id: task_id.into(),
                },
                "admin",
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The approval mail of `task_id` as the server wrote it (its outbox row), without waiting
    /// for delivery.
    pub async fn queued_approval_mail(&self, task_id: &str) -> ApprovalMail {
        let approval = self.approval(task_id).await;
        let store = self.store().await;
        let rows = store
            .mail_for_context(&approval.id)
            .await
            .expect("the outbox");
        store.close().await;
        let row = rows
            .iter()
            .find(|m| m.kind == replyflow::model::OutboxKind::Approval)
            .or(rows.first())
            .expect("an approval mail in the outbox");
        ApprovalMail::parse(&row.body)
    }

    /// The task's approval context once its (latest) mail's delivery status is `wanted`: the
    /// outbox worker delivers in the background.
    pub async fn wait_for_delivery(
        &self,
        task_id: &str,
        wanted: pb::DeliveryStatus,
        within: Duration,
    ) -> pb::ApprovalContext {
        eventually(within, async || {
            let approval = self.approval(task_id).await;
            if approval.delivery_status == wanted as i32 {
                Ok(approval)
            } else {
                Err(format!("delivery status not {wanted:?}: {approval:?}"))
            }
        })
        .await
    }

    /// `user` asks for the approval mail of `task_id` again.
    pub async fn resend_as(
        &self,
        task_id: &str,
        user: &str,
    ) -> Result<pb::ApprovalContext, Status> {
        self.approvals()
            .resend_approval_email(req(
                pb::ResendApprovalEmailRequest {
                    task_id: task_id.into(),
                    ..Default::default()
                },
                user,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// `user` revokes the reply token of `task_id`.
    pub async fn revoke_as(
        &self,
        task_id: &str,
        user: &str,
        reason: &str,
    ) -> Result<pb::ApprovalContext, Status> {
        self.approvals()
            .revoke_approval(req(
                pb::RevokeApprovalRequest {
                    task_id: task_id.into(),
                    reason: reason.into(),
                    ..Default::default()
                },
                user,
            ))
            .await
            .map(|r| r.into_inner())
    }

    /// The inbound log, straight from the store (one page of up to 500).
    pub async fn inbound_log(&self) -> Vec<replyflow::model::InboundEmail> {
        let store = self.store().await;
        let log = store
            .list_inbound(
                &InboundFilter::default(),
                &PageRequest::new(500, String::new()).expect("page"),
            )
            .await
            .expect("inbound log");
        store.close().await;
        log.items
    }

    /// Makes the database refuse to record any mail whose subject contains `word`: a mail that
    /// fails every time it is ingested, whatever the transport.
    pub async fn poison_subjects(&self, word: &str) {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.db.url)
            .await
            .expect("connecting to the test database");
        let statements = if self.db.url.starts_with("postgres") {
            vec![
                format!(
                    "CREATE FUNCTION rf_poison() RETURNS trigger AS $$ BEGIN \
                     IF NEW.subject LIKE '%{word}%' THEN RAISE EXCEPTION 'poisoned mail'; END IF; \
                     RETURN NEW; END $$ LANGUAGE plpgsql"
                ),
                "CREATE TRIGGER rf_poison BEFORE INSERT ON inbound_emails FOR EACH ROW \
                 EXECUTE FUNCTION rf_poison()"
                    .to_string(),
            ]
        } else {
            vec![format!(
                "CREATE TRIGGER rf_poison BEFORE INSERT ON inbound_emails \
                 WHEN NEW.subject LIKE '%{word}%' BEGIN SELECT RAISE(ABORT, 'poisoned mail'); END"
            )]
        };
        for statement in statements {
            sqlx::Executor::execute(&mut conn, sqlx::AssertSqlSafe(statement))
                .await
                .expect("creating the trigger");
        }
        let _ = sqlx::Connection::close(conn).await;
    }

    /// How many mails are in the outbox table, whatever their state: queued mail counts at once,
    /// so "no further mail" needs no waiting.
    pub async fn outbox_count(&self) -> usize {
        let store = self.store().await;
        let n: i64 = sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM outbox")
            .fetch_one(store.pool())
            .await
            .expect("counting the outbox");
        store.close().await;
        usize::try_from(n).expect("a count")
    }

    /// Every mail the file transport has written so far, raw.
    pub fn written(&self) -> Vec<Vec<u8>> {
        std::fs::read_dir(self.outbox_dir.path())
            .expect("outbox dir")
            .filter_map(Result::ok)
            // Not the file transport's temporary files (`.NAME.tmp`, renamed once written).
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .collect()
    }

    /// Every mail written so far, as text.
    pub fn written_text(&self) -> Vec<String> {
        self.written()
            .into_iter()
            .map(|raw| String::from_utf8_lossy(&raw).into_owned())
            .collect()
    }

    /// The first written mail that `wanted` accepts, waiting for it; `what` names it if it never
    /// comes.
    pub async fn mail_where(&self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        eventually(WRITTEN, async || {
            self.written_text()
                .into_iter()
                .find(|m| wanted(m))
                .ok_or_else(|| format!("no {what} in {}", self.outbox_dir.path().display()))
        })
        .await
    }

    /// The mail with Message-ID `message_id` (angle brackets optional), raw, waiting for it.
    pub async fn mail_with_id(&self, message_id: &str) -> Vec<u8> {
        let id = bare(message_id).to_string();
        self.raw_mail_where(&format!("mail with Message-ID {id}"), |m| {
            m.message_id() == Some(id.as_str())
        })
        .await
    }

    /// The first written mail that `wanted` accepts once parsed, raw, waiting for it.
    pub async fn raw_mail_where(
        &self,
        what: &str,
        wanted: impl Fn(&mail_parser::Message<'_>) -> bool,
    ) -> Vec<u8> {
        let parser = mail_parser::MessageParser::default();
        eventually(WRITTEN, async || {
            self.written()
                .into_iter()
                .find(|raw| parser.parse(raw).is_some_and(|m| wanted(&m)))
                .ok_or_else(|| format!("no {what} in {}", self.outbox_dir.path().display()))
        })
        .await
    }

    /// The approval mail to `address`, waiting for it.
    pub async fn approval_mail_to(&self, address: &str) -> String {
        self.mail_where(&format!("approval mail to {address}"), |m| {
            is_approval(m) && header(m, "To").contains(address)
        })
        .await
    }

    /// The answer threaded under the reply with Message-ID `reply_id`, waiting for it.
    pub async fn answer_to(&self, reply_id: &str) -> String {
        let threaded = format!("In-Reply-To: {reply_id}");
        self.mail_where(&format!("answer to {reply_id}"), |m| {
            m.contains(&threaded) && m.contains("Auto-Submitted: auto-replied")
        })
        .await
    }

    /// Every mail written to `address`, once there are at least `count`.
    pub async fn mails_to(&self, address: &str, count: usize) -> Vec<String> {
        eventually(WRITTEN, async || {
            let found: Vec<String> = self
                .written_text()
                .into_iter()
                .filter(|mail| {
                    mail.lines()
                        .find_map(|l| l.strip_prefix("To: "))
                        .is_some_and(|to| to.contains(address))
                })
                .collect();
            if found.len() >= count {
                Ok(found)
            } else {
                Err(format!("{} of {count} mails to {address}", found.len()))
            }
        })
        .await
    }

    /// The written mails, sorted, once there are at least `count`.
    pub async fn written_mail(&self, count: usize) -> Vec<String> {
        eventually(WRITTEN, async || {
            let mut mails = self.written_text();
            if mails.len() >= count {
                mails.sort();
                Ok(mails)
            } else {
                Err(format!("{} of {count} mails written", mails.len()))
            }
        })
        .await
    }
}
