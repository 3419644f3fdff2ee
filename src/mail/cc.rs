//! The FYI mail of a carbon copy (抄送, DESIGN §11): the recipient is told about a request, in
//! their language, and is asked for nothing. It carries no reply token and no approval context
//! (a reply to it decides nothing: the reader finds no token of ours), and it is marked
//! `Auto-Submitted: auto-generated` so that out-of-office robots stay quiet. The texts are
//! templates (`templates/mail/cc.*.txt`), overridable from `mail.templates_dir` like the others;
//! the first line of a rendered template is the subject, the rest the body.
use std::{
    fmt,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, anyhow};
use lettre::{
    Message,
    message::header::{ContentType, HeaderName, HeaderValue},
};
use minijinja::Environment;
use serde::Serialize;

use super::compose::{Locale, Mailbox};
use super::template_set::{self, Origins, describe};

pub(crate) const TEMPLATES: [(&str, &str); 2] = [
    (
        "cc.zh-CN.txt",
        include_str!("../../templates/mail/cc.zh-CN.txt"),
    ),
    ("cc.en.txt", include_str!("../../templates/mail/cc.en.txt")),
];

/// The loaded, checked carbon-copy templates.
pub struct CcTemplates {
    env: Environment<'static>,
    origins: Origins,
}

impl fmt::Debug for CcTemplates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origins.fmt(f)
    }
}

/// One carbon copy to one user.
#[derive(Debug, Clone)]
pub struct CcMail {
    pub locale: Locale,
    pub from: Mailbox,
    pub to: String,
    pub message_id: String,
    pub date: i64,
    /// The process's name (or key) and the instance's business key.
    pub process: String,
    pub business_key: String,
    /// Who copied them in (a user id; empty when the definition did, as a task opened).
    pub sender: String,
    /// The task whose opening copied them in, or empty.
    pub task_name: String,
    pub comment: String,
    /// The instance's variables the definition shows (name, value), as in the approval mail.
    pub shown: Vec<(String, String)>,
}

#[derive(Serialize)]
struct CcContext<'a> {
    process: &'a str,
    business_key: &'a str,
    sender: &'a str,
    task_name: &'a str,
    comment: &'a str,
    shown: &'a [(String, String)],
}

impl CcTemplates {
    /// Embedded defaults; a file with the same name in `dir` overrides one. Each is rendered with
    /// sample data at load: an error names the file and the reason.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let (env, origins) = template_set::load(dir, &TEMPLATES, "mail template", None)?;
        let templates = Self { env, origins };
        for locale in [Locale::ZhCn, Locale::En] {
            templates.render(&CcMail::sample(locale))?;
        }
        Ok(templates)
    }

    /// The whole message.
    pub fn render(&self, mail: &CcMail) -> anyhow::Result<Vec<u8>> {
        let (subject, body) = self.text(mail)?;
        build(mail, &subject, &body)
    }

    /// The subject and the body, also the in-system message's title and text.
    pub fn text(&self, mail: &CcMail) -> anyhow::Result<(String, String)> {
        let name = format!("cc.{}.txt", mail.locale.tag());
        let origin = self.origins.of(&name);
        let text = self
            .env
            .get_template(&name)
            .and_then(|t| {
                t.render(minijinja::value::Serde(&CcContext {
                    process: &mail.process,
                    business_key: &mail.business_key,
                    sender: &mail.sender,
                    task_name: &mail.task_name,
                    comment: &mail.comment,
                    shown: &mail.shown,
                }))
            })
            .map_err(|e| anyhow!("mail template {}: {e}", describe(&name, origin)))?;
        let (subject, body) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let subject = subject.trim();
        if subject.is_empty() {
            anyhow::bail!(
                "mail template {}: the first line (the subject) is empty",
                describe(&name, origin)
            );
        }
        Ok((
            subject.to_string(),
            body.trim_start_matches('\n').to_string(),
        ))
    }
}

impl CcMail {
    fn sample(locale: Locale) -> Self {
        Self {
            locale,
            from: Mailbox {
                name: "审批".into(),
                address: "approvals@replyflow.test".into(),
            },
            to: "carol@replyflow.test".into(),
            message_id: "<rf.cc.sample@replyflow.test>".into(),
            date: 0,
            process: "报销审批".into(),
            business_key: "EXP-1".into(),
            sender: "mary".into(),
            task_name: "经理审批".into(),
            comment: "供参考".into(),
            shown: vec![("amount".into(), "500".into())],
        }
    }
}

fn build(mail: &CcMail, subject: &str, body: &str) -> anyhow::Result<Vec<u8>> {
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
    let message = Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .date(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(mail.date).unwrap_or(0)))
        .message_id(Some(mail.message_id.clone()))
        .raw_header(header("Auto-Submitted", "auto-generated"))
        .raw_header(header("X-Auto-Response-Suppress", "All"))
        .raw_header(header("Content-Language", mail.locale.tag()))
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_string())
        .context("building a carbon-copy mail")?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carbon_copy_asks_for_nothing_and_carries_no_token() {
        let templates = CcTemplates::load(None).unwrap();
        for locale in [Locale::ZhCn, Locale::En] {
            let raw =
                String::from_utf8(templates.render(&CcMail::sample(locale)).unwrap()).unwrap();
            assert!(raw.contains("Auto-Submitted: auto-generated"), "{raw}");
            assert!(!raw.contains("Reply-To"), "{raw}");
            assert!(!raw.contains("approvals+"), "no reply token: {raw}");
        }
    }
}
