//! The polite answer to a received reply (DESIGN §5): what happened to it, in the sender's
//! language, with how to answer when it decided nothing. Plain text, marked
//! `Auto-Submitted: auto-replied` (RFC 3834) so that other robots do not answer back. The texts
//! are templates (`templates/mail/answer.*.txt`), each overridable by a file of the same name in
//! `mail.templates_dir` like the approval mail's, and rendered for every verdict when loaded.
use std::{
    fmt,
    path::Path,
    sync::LazyLock,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow};
use lettre::{
    Message,
    message::header::{ContentType, HeaderName, HeaderValue},
};
use minijinja::Environment;
use serde::Serialize;

use super::compose::{Locale, Mailbox, OutcomeChoice};
use super::template_set::{self, Origins, describe};

pub(crate) const TEMPLATES: [(&str, &str); 2] = [
    (
        "answer.zh-CN.txt",
        include_str!("../../templates/mail/answer.zh-CN.txt"),
    ),
    (
        "answer.en.txt",
        include_str!("../../templates/mail/answer.en.txt"),
    ),
];

/// The embedded answer templates, for callers without a template directory.
static EMBEDDED: LazyLock<Result<AnswerTemplates, String>> =
    LazyLock::new(|| AnswerTemplates::load(None).map_err(|e| format!("{e:#}")));

/// The verdicts the templates are checked with at load time (the names `Verdict` and the
/// reply reader give; anything else takes the template's last branch).
const SAMPLE_VERDICTS: [&str; 14] = [
    "applied",
    "suspended",
    "already_used",
    "task_closed",
    "ambiguous",
    "no_decision",
    "expired",
    "revoked",
    "sender_mismatch",
    "too_large",
    "delegated",
    "delegate_refused",
    "auth_failed",
    "unknown_token",
];

/// The loaded, checked answer templates.
pub struct AnswerTemplates {
    env: Environment<'static>,
    origins: Origins,
}

impl fmt::Debug for AnswerTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origins.fmt(f)
    }
}

impl AnswerTemplates {
    /// Embedded defaults; a file with the same name in `dir` overrides one. Each template is
    /// rendered for every verdict at load: an error names the file and the reason.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let (env, origins) = template_set::load(dir, &TEMPLATES, "mail template", None)?;
        let templates = Self { env, origins };
        for locale in [Locale::ZhCn, Locale::En] {
            for verdict in SAMPLE_VERDICTS {
                templates.render(&AnswerMail::sample(locale, verdict))?;
            }
        }
        Ok(templates)
    }

    fn body(&self, mail: &AnswerMail) -> anyhow::Result<String> {
        let name = format!("answer.{}.txt", mail.locale.tag());
        let outcomes: Vec<Choice<'_>> = mail
            .outcomes
            .iter()
            .map(|o| Choice {
                number: o.number,
                label: &o.label,
                keywords: &o.keywords,
            })
            .collect();
        let origin = self.origins.of(&name);
        self.env
            .get_template(&name)
            .and_then(|t| {
                t.render(minijinja::value::Serde(&AnswerContext {
                    verdict: &mail.verdict,
                    reason: &mail.reason,
                    task_name: &mail.task_name,
                    outcome_label: &mail.outcome_label,
                    comment: &mail.comment,
                    outcomes,
                }))
            })
            .map_err(|e| anyhow!("mail template {}: {e}", describe(&name, origin)))
    }

    /// The whole answer message.
    pub fn render(&self, mail: &AnswerMail) -> anyhow::Result<Vec<u8>> {
        build(mail, self.body(mail)?)
    }
}

/// An answer to one received mail.
#[derive(Debug, Clone)]
pub struct AnswerMail {
    pub locale: Locale,
    pub from: Mailbox,
    pub to: String,
    /// The subject of the mail answered.
    pub subject: String,
    /// The Message-ID of the mail answered (threads the answer under it).
    pub in_reply_to: Option<String>,
    pub message_id: String,
    pub date: i64,
    /// The verdict's name: applied, no_decision, expired …
    pub verdict: String,
    pub reason: String,
    pub task_name: String,
    pub outcome_label: String,
    pub comment: String,
    pub outcomes: Vec<OutcomeChoice>,
}

#[derive(Serialize)]
struct AnswerContext<'a> {
    verdict: &'a str,
    reason: &'a str,
    task_name: &'a str,
    outcome_label: &'a str,
    comment: &'a str,
    outcomes: Vec<Choice<'a>>,
}

#[derive(Serialize)]
struct Choice<'a> {
    number: u32,
    label: &'a str,
    keywords: &'a [String],
}

/// Of the subject answered, at most this many characters are echoed: an answer must not carry
/// a stranger's text at length (a flood of forged mail would have us relay its payload).
pub const MAX_ECHOED_SUBJECT_CHARS: usize = 80;

/// The subject as echoed in an answer: control and bidi characters dropped, cut on a character
/// boundary after [`MAX_ECHOED_SUBJECT_CHARS`] characters with an ellipsis.
pub fn echoed_subject(subject: &str) -> String {
    let clean: Vec<char> = subject
        .chars()
        .filter(|c| !c.is_control() && !crate::bounds::is_bidi_control(*c))
        .collect();
    if clean.len() <= MAX_ECHOED_SUBJECT_CHARS {
        return clean.into_iter().collect();
    }
    let mut cut: String = clean[..MAX_ECHOED_SUBJECT_CHARS].iter().collect();
    cut.push('…');
    cut
}

/// An answer with the embedded templates.
pub fn render_answer(mail: &AnswerMail) -> anyhow::Result<Vec<u8>> {
    EMBEDDED.as_ref().map_err(|e| anyhow!("{e}"))?.render(mail)
}

impl AnswerMail {
    /// A realistic answer with sample data, what templates are checked with at load time.
    fn sample(locale: Locale, verdict: &str) -> Self {
        Self {
            locale,
            from: Mailbox {
                name: "审批".into(),
                address: "approvals@replyflow.test".into(),
            },
            to: "mary@replyflow.test".into(),
            subject: "待审批 [RF-abcdefgh]".into(),
            in_reply_to: Some("<m1@replyflow.test>".into()),
            message_id: "<rf.answer.sample@replyflow.test>".into(),
            date: 0,
            verdict: verdict.into(),
            reason: "already handled by fred at 2026-11-21T10:00:00Z (approve)".into(),
            task_name: "经理审批".into(),
            outcome_label: "同意".into(),
            comment: "预算合理".into(),
            outcomes: vec![OutcomeChoice {
                number: 1,
                id: "approve".into(),
                label: "同意".into(),
                keywords: vec!["approve".into()],
            }],
        }
    }
}

fn build(mail: &AnswerMail, body: String) -> anyhow::Result<Vec<u8>> {
    let echoed = echoed_subject(&mail.subject);
    let subject = if echoed.to_lowercase().starts_with("re:") || echoed.starts_with("回复") {
        echoed
    } else {
        format!("Re: {echoed}")
    };
    let header = |name: &'static str, value: &str| {
        HeaderValue::new(HeaderName::new_from_ascii_str(name), value.to_string())
    };
    let from = format!("{}", mail.from)
        .parse()
        .map_err(|e| anyhow!("From: {e}"))?;
    let to = mail
        .to
        .parse()
        .map_err(|e| anyhow!("To: {:?}: {e}", mail.to))?;
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(mail.date).unwrap_or(0)))
        .message_id(Some(mail.message_id.clone()));
    if let Some(original) = mail
        .in_reply_to
        .as_ref()
        .filter(|id| id.starts_with('<') && id.ends_with('>'))
    {
        builder = builder
            .in_reply_to(original.clone())
            .references(original.clone());
    }
    let message = builder
        .raw_header(header("Auto-Submitted", "auto-replied"))
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .raw_header(header("Content-Language", mail.locale.tag()))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .context("building an answer mail")?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(locale: Locale, verdict: &str) -> String {
        let mail = AnswerMail {
            locale,
            from: Mailbox::parse("审批 <approvals@replyflow.test>").unwrap(),
            to: "mary@replyflow.test".into(),
            subject: "待审批 [RF-abcdefgh]".into(),
            in_reply_to: Some("<m1@x>".into()),
            message_id: "<rf.answer.1@replyflow.test>".into(),
            date: 0,
            verdict: verdict.into(),
            reason: "already handled by fred at 2026-11-21T10:00:00Z (approve)".into(),
            task_name: "经理审批".into(),
            outcome_label: "同意".into(),
            comment: "预算合理".into(),
            outcomes: vec![OutcomeChoice {
                number: 1,
                id: "approve".into(),
                label: "同意".into(),
                keywords: vec!["approve".into()],
            }],
        };
        let raw = render_answer(&mail).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-replied")
        );
        parsed.body_text(0).unwrap().to_string()
    }

    #[test]
    fn long_subjects_are_not_echoed_at_length() {
        let long = "买".repeat(500);
        let echoed = echoed_subject(&long);
        assert_eq!(echoed.chars().count(), MAX_ECHOED_SUBJECT_CHARS + 1);
        assert!(echoed.ends_with('…'));
        assert_eq!(echoed_subject("Re: ok\r\n\u{202E}x"), "Re: okx");
        let mail = AnswerMail {
            locale: Locale::En,
            from: Mailbox::parse("approvals@replyflow.test").unwrap(),
            to: "mary@replyflow.test".into(),
            subject: format!("{} {}", "spam".repeat(1000), "x".repeat(3000)),
            in_reply_to: None,
            message_id: "<rf.answer.2@replyflow.test>".into(),
            date: 0,
            verdict: "no_decision".into(),
            reason: String::new(),
            task_name: String::new(),
            outcome_label: String::new(),
            comment: String::new(),
            outcomes: Vec::new(),
        };
        let raw = String::from_utf8(render_answer(&mail).unwrap()).unwrap();
        let parsed = mail_parser::MessageParser::default()
            .parse(raw.as_bytes())
            .unwrap();
        assert!(parsed.subject().unwrap().chars().count() <= MAX_ECHOED_SUBJECT_CHARS + 5);
        assert!(raw.lines().all(|l| l.len() < 998), "{raw}");
    }

    #[test]
    fn every_verdict_renders_in_both_languages() {
        for verdict in [
            "applied",
            "already_used",
            "task_closed",
            "ambiguous",
            "no_decision",
            "expired",
            "revoked",
            "sender_mismatch",
            "too_large",
            "unknown_token",
            "bad_signature",
            "unparseable",
        ] {
            for locale in [Locale::ZhCn, Locale::En] {
                let text = answer(locale, verdict);
                assert!(text.len() > 40, "{verdict} {locale:?}: {text}");
            }
        }
        assert!(answer(Locale::ZhCn, "applied").contains("预算合理"));
        assert!(answer(Locale::En, "already_used").contains("already handled by fred"));
        assert!(answer(Locale::En, "no_decision").contains("1 or 同意"));
    }

    #[test]
    fn a_file_in_the_template_directory_overrides_the_answer_and_a_broken_one_names_itself() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("answer.en.txt"),
            "Thanks; verdict {{ verdict }} for {{ task_name }}.\n",
        )
        .unwrap();
        let templates = AnswerTemplates::load(Some(tmp.path())).unwrap();
        let raw = templates
            .render(&AnswerMail::sample(Locale::En, "applied"))
            .unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(
            parsed.body_text(0).unwrap().trim(),
            "Thanks; verdict applied for 经理审批."
        );
        // The other language keeps its embedded text.
        let zh = templates
            .render(&AnswerMail::sample(Locale::ZhCn, "applied"))
            .unwrap();
        assert_eq!(
            zh,
            render_answer(&AnswerMail::sample(Locale::ZhCn, "applied")).unwrap()
        );

        std::fs::write(tmp.path().join("answer.zh-CN.txt"), "{% if %}\n").unwrap();
        let error = format!("{:#}", AnswerTemplates::load(Some(tmp.path())).unwrap_err());
        assert!(
            error.contains("answer.zh-CN.txt") && error.contains(&tmp.path().display().to_string()),
            "{error}"
        );
    }
}
