//! Composing approval mail (DESIGN §5, outbound): the subject and the two bodies come from
//! templates, the headers and the MIME structure from this module.
//!
//! Templates (minijinja, Jinja syntax with `trim_blocks` and `lstrip_blocks`) live in
//! `templates/mail/` and are embedded in the binary; a directory given to [`Templates::load`]
//! overrides any of them by file name. `.html` templates are HTML-escaped automatically; `.txt`
//! templates are not. Every template is rendered with sample data when it is loaded, so that a
//! broken template stops the server at startup (naming the file) instead of producing a broken
//! mail later. Undefined variables are errors (a typo in an override is caught at load time).
//!
//! What the templates see (one map, the same for the subject and the bodies):
//!
//! | variable | value |
//! |---|---|
//! | `kind` | `"approval"` or `"reminder"` |
//! | `locale` | `"zh-CN"` or `"en"` |
//! | `from`, `to` | `{name, address}`; `name` may be empty |
//! | `reply_to` | the tokenized reply address `box+token@domain` |
//! | `subject_tag` | e.g. `RF-k3x9q2ab`; the subject must show it as `[RF-k3x9q2ab]` |
//! | `subject` | the rendered subject (empty while the subject itself is rendered) |
//! | `reply_subject` | `Re: <subject>`, the subject of the pre-filled replies |
//! | `process_name`, `task_name`, `business_key`, `initiator` | text, may be empty |
//! | `fields` | list of `{name, value}`: the task's `replyflow:show` variables, in order |
//! | `outcomes` | list of `{number, id, label, keywords, answers, mailto, tone}`: `answers` = the number then the keywords (every first line that decides for this outcome); `mailto` = a percent-encoded `mailto:` URL replying with the label and the token line; `tone` = `"positive"`, `"negative"` or `"neutral"` (for a button colour) |
//! | `deadline` | the valid-until time as text: `2026年11月24日 18:00 (北京时间)` / `Tue, 24 Nov 2026, 10:00 UTC` |
//! | `token`, `token_line` | the reply token, and `回复凭证 / Reply token: <token>` |
//! | `note` | an extra paragraph (a reminder's message), may be empty |
//! | `signing` | none, or for a signer of a multi-instance step (会签 / 或签 / 票签 / 顺序会签): `{mode, sequential, position, total, needed, signers}`: `mode` = `"all"`, `"any"` or `"vote"`; `position` = the reader's place (1-based); `needed` = the approvals that pass the step; `signers` = every signer's display name, in order, the reader's own included |
//!
//! Checks at load time, besides rendering: the subject contains `[subject_tag]` and both bodies
//! contain the token, since inbound correlation relies on them.
use std::{
    fmt,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow, bail};
use lettre::message::{
    Mailbox as LettreMailbox, Message, MultiPart,
    header::{HeaderName, HeaderValue},
};

mod templates;

use templates::Rendered;
pub use templates::Templates;

/// The token line's label, in both languages so that a reader finds it whatever the locale; the
/// token follows it. It is the last line of the text part.
pub const TOKEN_LINE_LABEL: &str = "回复凭证 / Reply token:";

/// The language of a mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    ZhCn,
    En,
}

impl Locale {
    /// "zh", "zh-CN", "zh-TW"… → ZhCn; "" → ZhCn (the product's default); anything else → En.
    pub fn from_tag(tag: &str) -> Self {
        let tag = tag.trim();
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        if tag.is_empty() || primary.eq_ignore_ascii_case("zh") {
            Locale::ZhCn
        } else {
            Locale::En
        }
    }

    /// The BCP 47 tag: `zh-CN` or `en` (also the middle part of the template file names).
    pub fn tag(self) -> &'static str {
        match self {
            Locale::ZhCn => "zh-CN",
            Locale::En => "en",
        }
    }
}

/// First mail about a task, or a later reminder (催办) about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    Approval,
    Reminder,
}

impl MailKind {
    fn as_str(self) -> &'static str {
        match self {
            MailKind::Approval => "approval",
            MailKind::Reminder => "reminder",
        }
    }
}

/// A display name (may be empty) and an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: String,
    pub address: String,
}

impl Mailbox {
    /// "Name <a@b>" or "a@b"; Err names what is wrong.
    ///
    /// The name may be quoted (`"Ma, Mary" <mary@example.com>`); the address must be a valid
    /// `user@domain`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty mailbox: expected \"Name <user@domain>\" or \"user@domain\"".into());
        }
        if text.chars().any(char::is_control) {
            return Err(format!("mailbox {text:?} contains a control character"));
        }
        let (name, address) = match (text.rfind('<'), text.ends_with('>')) {
            (Some(open), true) => {
                let name = text[..open].trim();
                let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                    Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
                    None => name.to_string(),
                };
                (name, text[open + 1..text.len() - 1].trim())
            }
            (Some(_), false) => return Err(format!("mailbox {text:?}: missing closing '>'")),
            (None, true) => return Err(format!("mailbox {text:?}: '>' without '<'")),
            (None, false) => (String::new(), text),
        };
        if address.is_empty() {
            return Err(format!(
                "mailbox {text:?}: empty address between '<' and '>'"
            ));
        }
        if address.contains(['<', '>']) {
            return Err(format!("mailbox {text:?}: unbalanced '<' or '>'"));
        }
        address
            .parse::<lettre::Address>()
            .map_err(|e| format!("mailbox {text:?}: invalid address {address:?}: {e}"))?;
        Ok(Mailbox {
            name,
            address: address.to_string(),
        })
    }

    fn to_lettre(&self, what: &str) -> anyhow::Result<LettreMailbox> {
        let address = self
            .address
            .parse::<lettre::Address>()
            .map_err(|e| anyhow!("{what}: invalid address {:?}: {e}", self.address))?;
        let name = one_line(&self.name);
        Ok(LettreMailbox::new(
            (!name.is_empty()).then_some(name),
            address,
        ))
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str(&self.address)
        } else {
            write!(f, "{} <{}>", self.name, self.address)
        }
    }
}

/// One possible answer of the task, as offered in the mail.
#[derive(Debug, Clone)]
pub struct OutcomeChoice {
    /// The number the approver may reply with (1, 2, …).
    pub number: u32,
    pub id: String,
    pub label: String,
    pub keywords: Vec<String>,
}

/// How a multi-instance step decides (`replyflow:signMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningMode {
    /// 会签: every signer must approve.
    All,
    /// 或签: the first decision decides.
    Any,
    /// 票签: approved once `needed` signers approved.
    Vote,
}

impl SigningMode {
    /// The name definitions and the API use: `all`, `any`, `vote`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningMode::All => "all",
            SigningMode::Any => "any",
            SigningMode::Vote => "vote",
        }
    }
}

/// The reader's place among the signers of a multi-instance step, so that they know who else is
/// asked and what their answer weighs. Names only: a mail never hands out colleagues' addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signing {
    pub mode: SigningMode,
    /// One signer at a time, in the order of `signers` (顺序会签).
    pub sequential: bool,
    /// The reader's place, 1-based.
    pub position: usize,
    /// How many approvals pass the step (all: every signer; any: one; vote: ⌈ratio · n⌉).
    pub needed: usize,
    /// Every signer's display name in order, the reader's own included.
    pub signers: Vec<String>,
}

/// Everything one approval mail says.
#[derive(Debug, Clone)]
pub struct ApprovalMail {
    pub kind: MailKind,
    pub locale: Locale,
    pub from: Mailbox,
    pub to: Mailbox,
    /// `box+token@domain`.
    pub reply_to: String,
    /// With angle brackets, `<rf.xxx.1@domain>`.
    pub message_id: String,
    /// Message-ID of the first mail about the task: In-Reply-To and References.
    pub thread: Option<String>,
    /// Short tag like `RF-k3x9q2ab`, shown in the subject as `[RF-k3x9q2ab]`.
    pub subject_tag: String,
    pub process_name: String,
    pub task_name: String,
    pub business_key: String,
    pub initiator: String,
    /// `replyflow:show`: variable name and rendered value, in order.
    pub fields: Vec<(String, String)>,
    pub outcomes: Vec<OutcomeChoice>,
    /// Valid until, UTC millis; shown in UTC+8 for zh-CN and in UTC for en.
    pub deadline: i64,
    /// Date header, UTC millis.
    pub date: i64,
    pub token: String,
    /// An extra paragraph (a reminder's message); may be empty.
    pub note: String,
    /// The reader is one of several signers of this step.
    pub signing: Option<Signing>,
}

impl ApprovalMail {
    /// A realistic mail with sample data: what templates are checked with at load time, and what
    /// the phone-render test draws. Long values (a URL, the token) exercise wrapping.
    pub fn sample(locale: Locale, kind: MailKind) -> Self {
        let zh = locale == Locale::ZhCn;
        let outcome = |number, id: &str, label: &str, keywords: &[&str]| OutcomeChoice {
            number,
            id: id.into(),
            label: label.into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
        };
        let s = |zh_text: &str, en_text: &str| if zh { zh_text } else { en_text }.to_string();
        ApprovalMail {
            kind,
            locale,
            from: Mailbox {
                name: s("审批助手", "replyflow"),
                address: "approvals@example.com".into(),
            },
            to: Mailbox {
                name: s("马丽", "Mary Ma"),
                address: "mary@example.com".into(),
            },
            reply_to: "approvals+ahk3x9q2abmn4p5r7stuvwxyzabcdef@example.com".into(),
            message_id: "<rf.k3x9q2abmn4p5.2@example.com>".into(),
            thread: (kind == MailKind::Reminder)
                .then(|| "<rf.k3x9q2abmn4p5.1@example.com>".to_string()),
            subject_tag: "RF-k3x9q2ab".into(),
            process_name: s("差旅报销", "Travel expenses"),
            task_name: s("部门经理审批", "Manager approval"),
            business_key: "EXP-2026-0042".into(),
            initiator: s("王小明 (wangxm)", "Fred Fu (fred)"),
            fields: vec![
                ("amount".into(), "12000".into()),
                (
                    "reason".into(),
                    s(
                        "参加 RustConf 2026 会议，含往返机票与三晚住宿",
                        "RustConf 2026: return flights and three nights at the conference hotel",
                    ),
                ),
                (
                    "attachment".into(),
                    "https://oa.example.com/expense/2026/EXP-2026-0042/attachments/receipts-flight-and-hotel-scan.pdf"
                        .into(),
                ),
            ],
            outcomes: vec![
                outcome(1, "approve", &s("同意", "Approve"), &["同意", "批准", "approve", "yes"]),
                outcome(2, "reject", &s("驳回", "Reject"), &["驳回", "reject", "no"]),
                outcome(
                    3,
                    "return",
                    &s("退回修改", "Send back for changes"),
                    &["退回", "return", "send back"],
                ),
            ],
            // 2026-11-24 10:00 UTC = 18:00 in Beijing.
            deadline: 1_795_514_400_000,
            date: 1_795_255_200_000,
            token: "ahk3x9q2abmn4p5r7stuvwxyzabcdef".into(),
            note: if kind == MailKind::Reminder {
                s(
                    "这是第 1 次催办：该审批已等待 3 天。",
                    "First reminder: this approval has been waiting for 3 days.",
                )
            } else {
                String::new()
            },
            signing: Some(Signing {
                mode: SigningMode::All,
                sequential: false,
                position: 2,
                needed: 3,
                signers: if zh {
                    vec!["王丽".into(), "马丽".into(), "李娜".into()]
                } else {
                    vec!["Lena Wang".into(), "Mary Ma".into(), "Ivy Li".into()]
                },
            }),
        }
    }

    /// The sample with every optional part empty, to exercise the templates' other branches.
    fn sample_minimal(locale: Locale, kind: MailKind) -> Self {
        let mut mail = Self::sample(locale, kind);
        mail.from.name.clear();
        mail.to.name.clear();
        mail.thread = None;
        mail.business_key.clear();
        mail.initiator.clear();
        mail.fields.clear();
        mail.note.clear();
        mail.outcomes.truncate(1);
        mail.outcomes[0].keywords.clear();
        mail.signing = None;
        mail
    }
}

/// Whitespace runs (line breaks included) become one space: for header values.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `<left@right>`, printable ASCII without spaces.
fn check_message_id(what: &str, id: &str) -> anyhow::Result<()> {
    let inner = id
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or_default();
    let valid = inner
        .split_once('@')
        .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty())
        && inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    if !valid {
        bail!("{what} {id:?} is not of the form <left@right>");
    }
    Ok(())
}

fn system_time(millis: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn build_message(mail: &ApprovalMail, rendered: Rendered) -> anyhow::Result<Vec<u8>> {
    check_message_id("Message-ID", &mail.message_id)?;
    let from = mail.from.to_lettre("From")?;
    let reply_to = mail
        .reply_to
        .parse::<lettre::Address>()
        .map_err(|e| anyhow!("Reply-To: invalid address {:?}: {e}", mail.reply_to))?;
    let header = |name: &'static str, value: &str| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
    };
    let mut builder = Message::builder()
        .from(from.clone())
        .to(mail.to.to_lettre("To")?)
        .reply_to(LettreMailbox::new(from.name, reply_to))
        .subject(rendered.subject)
        .date(system_time(mail.date))
        .message_id(Some(mail.message_id.clone()));
    if let Some(thread) = &mail.thread {
        check_message_id("thread Message-ID", thread)?;
        builder = builder
            .in_reply_to(thread.clone())
            .references(thread.clone());
    }
    let message = builder
        .raw_header(header("Auto-Submitted", "auto-generated"))
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .raw_header(header("Content-Language", mail.locale.tag()))
        .multipart(MultiPart::alternative_plain_html(
            rendered.text,
            rendered.html,
        ))
        .context("building the approval mail")?;
    Ok(message.formatted())
}

/// The whole RFC 822 message (bytes), multipart/alternative text + HTML.
pub fn render(templates: &Templates, mail: &ApprovalMail) -> anyhow::Result<Vec<u8>> {
    let rendered = templates.render_parts(mail)?;
    rendered.check(templates, mail)?;
    build_message(mail, rendered)
}

/// Just the two bodies (text, html) — for the phone-render tool and tests.
pub fn render_bodies(
    templates: &Templates,
    mail: &ApprovalMail,
) -> anyhow::Result<(String, String)> {
    let rendered = templates.render_parts(mail)?;
    rendered.check(templates, mail)?;
    Ok((rendered.text, rendered.html))
}

#[cfg(test)]
mod tests {
    use super::templates::deadline_text;
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};
    use percent_encoding::percent_decode_str;

    pub(super) fn templates() -> Templates {
        Templates::load(None).expect("embedded templates load")
    }

    pub(super) fn parse(bytes: &[u8]) -> mail_parser::Message<'_> {
        MessageParser::default().parse(bytes).expect("parses")
    }

    /// Every `href="mailto:…"` of the HTML, HTML-unescaped.
    pub(super) fn mailtos(html: &str) -> Vec<String> {
        html.split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|href| href.starts_with("mailto:"))
            .map(|href| {
                href.replace("&amp;", "&")
                    .replace("&#x2f;", "/")
                    .replace("&#x27;", "'")
            })
            .collect()
    }

    /// (address, subject, body) of a mailto URL, percent-decoded.
    pub(super) fn split_mailto(url: &str) -> (String, String, String) {
        let rest = url.strip_prefix("mailto:").expect("mailto");
        let (to, query) = rest.split_once('?').expect("query");
        let mut subject = String::new();
        let mut body = String::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').expect("key=value");
            let value = percent_decode_str(value)
                .decode_utf8()
                .expect("utf-8")
                .into_owned();
            match key {
                "subject" => subject = value,
                "body" => body = value,
                other => panic!("unexpected mailto key {other}"),
            }
        }
        let to = percent_decode_str(to)
            .decode_utf8()
            .expect("utf-8")
            .into_owned();
        (to, subject, body)
    }

    #[test]
    fn locale_tags() {
        for tag in ["zh", "zh-CN", "zh-TW", "zh_Hans", "ZH-cn", "", "  "] {
            assert_eq!(Locale::from_tag(tag), Locale::ZhCn, "{tag:?}");
        }
        for tag in ["en", "en-US", "fr", "de-DE", "zho", "x"] {
            assert_eq!(Locale::from_tag(tag), Locale::En, "{tag:?}");
        }
        assert_eq!(Locale::ZhCn.tag(), "zh-CN");
        assert_eq!(Locale::En.tag(), "en");
        assert_eq!(Locale::from_tag(Locale::En.tag()), Locale::En);
    }

    #[test]
    fn mailbox_parsing() {
        let m = Mailbox::parse("replyflow <approvals@localhost>").unwrap();
        assert_eq!(
            (m.name.as_str(), m.address.as_str()),
            ("replyflow", "approvals@localhost")
        );
        let m = Mailbox::parse("  mary@example.com ").unwrap();
        assert_eq!(
            (m.name.as_str(), m.address.as_str()),
            ("", "mary@example.com")
        );
        let m = Mailbox::parse("\"Ma, Mary\" <mary@example.com>").unwrap();
        assert_eq!(m.name, "Ma, Mary");
        let m = Mailbox::parse("审批助手 <approvals@example.com>").unwrap();
        assert_eq!(m.name, "审批助手");
        assert_eq!(m.to_string(), "审批助手 <approvals@example.com>");
        for (bad, says) in [
            ("", "empty"),
            ("Mary <mary@example.com", "missing closing"),
            ("Mary mary@example.com>", "without '<'"),
            ("Mary <>", "empty address"),
            ("Mary <not-an-address>", "invalid address"),
            ("mary at example.com", "invalid address"),
            ("Mary\r\nBcc: x@y <mary@example.com>", "control character"),
        ] {
            let err = Mailbox::parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn whole_message_in_both_locales() {
        let templates = templates();
        for locale in [Locale::ZhCn, Locale::En] {
            let mut mail = ApprovalMail::sample(locale, MailKind::Approval);
            mail.thread = Some("<rf.first.1@example.com>".into());
            let bytes = render(&templates, &mail).unwrap();
            let raw = String::from_utf8(bytes.clone()).expect("7-bit message");
            assert!(raw.is_ascii(), "headers and bodies are encoded");
            let header_block = raw.split("\r\n\r\n").next().unwrap();
            let msg = parse(&bytes);

            let from = msg.from().and_then(|a| a.first()).expect("From");
            assert_eq!(from.address(), Some("approvals@example.com"));
            assert_eq!(from.name(), Some(mail.from.name.as_str()));
            let to = msg.to().and_then(|a| a.first()).expect("To");
            assert_eq!(to.address(), Some("mary@example.com"));
            assert_eq!(to.name(), Some(mail.to.name.as_str()));
            let reply_to = msg.reply_to().and_then(|a| a.first()).expect("Reply-To");
            assert_eq!(reply_to.address(), Some(mail.reply_to.as_str()));

            let subject = msg.subject().expect("Subject");
            assert!(subject.contains("[RF-k3x9q2ab]"), "{subject}");
            assert!(subject.contains(&mail.task_name), "{subject}");
            assert!(!subject.starts_with("催办") && !subject.starts_with("Reminder"));
            assert_eq!(
                msg.date().map(|d| d.to_timestamp() * 1000),
                Some(mail.date),
                "Date"
            );
            assert_eq!(msg.message_id(), Some("rf.k3x9q2abmn4p5.2@example.com"));
            assert_eq!(msg.in_reply_to().as_text(), Some("rf.first.1@example.com"));
            assert_eq!(msg.references().as_text(), Some("rf.first.1@example.com"));
            assert_eq!(
                msg.header_raw("Auto-Submitted").map(str::trim),
                Some("auto-generated")
            );
            assert_eq!(
                msg.header_raw("X-Auto-Response-Suppress").map(str::trim),
                Some("All")
            );
            assert_eq!(msg.header_raw("MIME-Version").map(str::trim), Some("1.0"));
            assert_eq!(
                msg.header_raw("Content-Language").map(str::trim),
                Some(locale.tag())
            );
            assert!(
                msg.header_raw("Precedence").is_none(),
                "no Precedence: bulk"
            );
            assert!(!header_block.contains("Bcc"));

            // multipart/alternative: text first, HTML second, both UTF-8.
            let root = msg.root_part();
            let ct = root.content_type().expect("Content-Type");
            assert_eq!(
                (ct.ctype(), ct.subtype()),
                ("multipart", Some("alternative"))
            );
            assert_eq!((msg.text_body_count(), msg.html_body_count()), (1, 1));
            for part in [msg.text_part(0).unwrap(), msg.html_part(0).unwrap()] {
                let ct = part.content_type().unwrap();
                assert_eq!(
                    ct.attribute("charset").map(str::to_lowercase).as_deref(),
                    Some("utf-8")
                );
            }

            // The text part: every outcome with its number and keywords; the token line last.
            let text = msg.body_text(0).expect("text part");
            for o in &mail.outcomes {
                let line = text
                    .lines()
                    .find(|l| {
                        l.trim_start().starts_with(&format!("{}:", o.label))
                            || l.trim_start().starts_with(&format!("{}：", o.label))
                    })
                    .unwrap_or_else(|| panic!("no line for {}:\n{text}", o.label));
                let or = if locale == Locale::ZhCn {
                    " 或 "
                } else {
                    " or "
                };
                assert!(line.contains(&format!(" {}{or}", o.number)), "{line}");
                for k in &o.keywords {
                    assert!(line.contains(k.as_str()), "{k} missing in {line}");
                }
            }
            for (name, value) in &mail.fields {
                let sep = if locale == Locale::ZhCn { "：" } else { ": " };
                assert!(text.contains(&format!("{name}{sep}{value}")), "{name}");
            }
            assert!(text.contains(&mail.task_name) && text.contains(&mail.process_name));
            assert!(text.contains(&mail.business_key) && text.contains(&mail.initiator));
            assert!(text.contains(&deadline_text(locale, mail.deadline)));
            assert!(text.contains(if locale == Locale::ZhCn {
                "转交 <"
            } else {
                "delegate <"
            }));
            let last = text.trim_end().lines().last().unwrap();
            assert_eq!(last, format!("回复凭证 / Reply token: {}", mail.token));

            // The HTML part: one mailto per outcome, replying to the token address with
            // "Re: <subject>" and a body of the label, a blank line and the token line.
            let html = msg.body_html(0).expect("html part");
            let urls = mailtos(&html);
            assert_eq!(urls.len(), mail.outcomes.len(), "{urls:?}");
            for (url, o) in urls.iter().zip(&mail.outcomes) {
                assert!(url.is_ascii(), "percent-encoded: {url}");
                let (to, re, body) = split_mailto(url);
                assert_eq!(to, mail.reply_to);
                assert_eq!(re, format!("Re: {subject}"));
                assert_eq!(
                    body,
                    format!("{}\r\n\r\n回复凭证 / Reply token: {}", o.label, mail.token)
                );
            }
            let unescaped = html.replace("&#x2f;", "/");
            assert!(unescaped.contains(&format!("回复凭证 / Reply token: {}", mail.token)));
            assert!(html.contains("max-width:600px"));
            assert!(html.contains(&deadline_text(locale, mail.deadline)));
        }
    }

    #[test]
    fn chinese_survives_the_round_trip() {
        let mail = ApprovalMail::sample(Locale::ZhCn, MailKind::Approval);
        let bytes = render(&templates(), &mail).unwrap();
        let raw = String::from_utf8_lossy(&bytes);
        assert!(raw.contains("=?utf-8?"), "RFC 2047 encoded words:\n{raw}");
        let msg = parse(&bytes);
        assert_eq!(
            msg.subject(),
            Some("待审批「部门经理审批」差旅报销 EXP-2026-0042 [RF-k3x9q2ab]")
        );
        assert_eq!(
            msg.from().unwrap().first().unwrap().name(),
            Some("审批助手")
        );
        let text = msg.body_text(0).unwrap();
        assert!(text.starts_with("马丽，您好："), "{text}");
        assert!(text.contains("reason：参加 RustConf 2026 会议，含往返机票与三晚住宿"));
        assert!(text.contains("答复期限：2026年11月24日 18:00 (北京时间)"));
        assert!(
            text.contains("  同意：回复 1 或 同意 或 批准 或 approve 或 yes"),
            "{text}"
        );
        let html = msg.body_html(0).unwrap();
        assert!(html.contains("部门经理审批") && html.contains("请选择您的决定"));
    }

    #[test]
    fn reminders_say_so_first() {
        let templates = templates();
        for (locale, first) in [(Locale::ZhCn, "催办"), (Locale::En, "Reminder")] {
            let mail = ApprovalMail::sample(locale, MailKind::Reminder);
            let msg_bytes = render(&templates, &mail).unwrap();
            let msg = parse(&msg_bytes);
            let subject = msg.subject().unwrap();
            assert!(subject.starts_with(first), "{subject}");
            assert!(subject.contains("[RF-k3x9q2ab]"), "{subject}");
            assert!(msg.body_text(0).unwrap().contains(&mail.note));
            assert_eq!(
                msg.in_reply_to().as_text(),
                Some("rf.k3x9q2abmn4p5.1@example.com"),
                "a reminder threads under the first mail"
            );
        }
    }

    #[test]
    fn no_thread_no_threading_headers() {
        let mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        assert!(mail.thread.is_none());
        let bytes = render(&templates(), &mail).unwrap();
        let msg = parse(&bytes);
        assert!(msg.header_raw("In-Reply-To").is_none());
        assert!(msg.header_raw("References").is_none());
    }

    #[test]
    fn minimal_mail_renders() {
        let templates = templates();
        for locale in [Locale::ZhCn, Locale::En] {
            let mail = ApprovalMail::sample_minimal(locale, MailKind::Approval);
            let (text, html) = render_bodies(&templates, &mail).unwrap();
            assert!(
                text.contains("mary@example.com"),
                "greets by address: {text}"
            );
            assert!(
                text.contains("回复 1\n") || text.contains("reply 1\n"),
                "{text}"
            );
            assert_eq!(mailtos(&html).len(), 1);
            assert!(!text.contains("\n\n\n"), "{text}");
        }
    }

    #[test]
    fn long_names_and_subjects_are_folded_under_998_octets() {
        // The longest values the API lets through (crate::bounds): names of 200 bytes, in ASCII
        // without a space to break at, and in Chinese (encoded words).
        let templates = templates();
        for locale in [Locale::ZhCn, Locale::En] {
            for filler in ["x".repeat(200), "审".repeat(66)] {
                let mut mail = ApprovalMail::sample(locale, MailKind::Approval);
                mail.process_name = filler.clone();
                mail.task_name = filler.clone();
                mail.business_key = filler.clone();
                mail.from.name = filler.clone();
                mail.to.name = filler.clone();
                let raw = render(&templates, &mail).unwrap();
                let text = String::from_utf8_lossy(&raw);
                let head = text.split("\r\n\r\n").next().unwrap_or_default();
                for line in head.split("\r\n") {
                    assert!(line.len() < 998, "{} octets: {line}", line.len());
                }
                let parsed = parse(&raw);
                assert!(parsed.subject().unwrap().contains(&filler[..30]));
            }
        }
    }

    #[test]
    fn bad_ids_and_addresses_are_errors_not_broken_mail() {
        let templates = templates();
        let mut mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        mail.message_id = "no-brackets@example.com".into();
        assert!(format!("{:#}", render(&templates, &mail).unwrap_err()).contains("Message-ID"));
        let mut mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        mail.to.address = "nobody".into();
        assert!(format!("{:#}", render(&templates, &mail).unwrap_err()).contains("To"));
        let mut mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        mail.token.clear();
        assert!(render(&templates, &mail).is_err());
    }
}
