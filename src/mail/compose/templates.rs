//! The mail templates: the embedded defaults and their overrides, loaded and checked once
//! (every template rendered with sample mails at load time), and the values they see (the
//! context of the `compose` module documentation: mailto links, tones, the deadline text).

use std::{fmt, path::Path};

use crate::mail::template_set::{self, Origins, describe};
use anyhow::{Context as _, anyhow, bail};
use minijinja::{Environment, UndefinedBehavior};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use time::{OffsetDateTime, UtcOffset};

use super::{
    ApprovalMail, Locale, MailKind, Mailbox, OutcomeChoice, Signing, TOKEN_LINE_LABEL,
    build_message, one_line,
};

/// The template file names, with their embedded defaults.
const EMBEDDED: [(&str, &str); 6] = [
    (
        "subject.zh-CN.txt",
        include_str!("../../../templates/mail/subject.zh-CN.txt"),
    ),
    (
        "subject.en.txt",
        include_str!("../../../templates/mail/subject.en.txt"),
    ),
    (
        "approval.zh-CN.txt",
        include_str!("../../../templates/mail/approval.zh-CN.txt"),
    ),
    (
        "approval.en.txt",
        include_str!("../../../templates/mail/approval.en.txt"),
    ),
    (
        "approval.zh-CN.html",
        include_str!("../../../templates/mail/approval.zh-CN.html"),
    ),
    (
        "approval.en.html",
        include_str!("../../../templates/mail/approval.en.html"),
    ),
];

/// The loaded, checked mail templates.
#[derive(Clone)]
pub struct Templates {
    env: Environment<'static>,
    origins: Origins,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.origins.fmt(f)
    }
}

impl Templates {
    /// Embedded defaults (include_str! from templates/mail/); a file with the same name in `dir`
    /// overrides one. Every template is rendered once with sample data at load time: any syntax
    /// or render error → Err naming the template file and the reason.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = dir {
            check_override_dir(dir)?;
        }
        // Printing or iterating an undefined variable fails; `{% if x %}` on one is allowed.
        let (env, origins) = template_set::load(
            dir,
            &EMBEDDED,
            "mail template",
            Some(UndefinedBehavior::SemiStrict),
        )?;
        let templates = Templates { env, origins };
        templates.check()?;
        Ok(templates)
    }

    /// Renders every template with the sample mails; checks what correlation relies on.
    fn check(&self) -> anyhow::Result<()> {
        for locale in [Locale::ZhCn, Locale::En] {
            for kind in [MailKind::Approval, MailKind::Reminder] {
                for mail in [
                    ApprovalMail::sample(locale, kind),
                    ApprovalMail::sample_minimal(locale, kind),
                ] {
                    let rendered = self.render_parts(&mail)?;
                    rendered.check(self, &mail)?;
                    // The whole message must build too (header values, MIME structure).
                    build_message(&mail, rendered).with_context(|| {
                        format!("mail templates for {}: building the sample", locale.tag())
                    })?;
                }
            }
        }
        Ok(())
    }

    fn origin(&self, name: &str) -> Option<&Path> {
        self.origins.of(name)
    }

    fn render_one(&self, name: &str, ctx: &Context<'_>) -> anyhow::Result<String> {
        let fail = |e: minijinja::Error| {
            anyhow!("mail template {}: {e}", describe(name, self.origin(name)))
        };
        self.env
            .get_template(name)
            .map_err(fail)?
            .render(minijinja::value::Serde(ctx))
            .map_err(fail)
    }

    pub(super) fn render_parts(&self, mail: &ApprovalMail) -> anyhow::Result<Rendered> {
        let tag = mail.locale.tag();
        let mut ctx = Context::new(mail);
        let subject_name = format!("subject.{tag}.txt");
        let subject = one_line(&self.render_one(&subject_name, &ctx)?);
        ctx.set_subject(mail, &subject);
        let text_name = format!("approval.{tag}.txt");
        let html_name = format!("approval.{tag}.html");
        let text = self.render_one(&text_name, &ctx)?;
        let html = self.render_one(&html_name, &ctx)?;
        Ok(Rendered {
            subject_name,
            subject,
            text_name,
            text: tidy_text(&text),
            html_name,
            html,
        })
    }
}

/// The override directory must exist; files in it that override nothing are reported, since a
/// misspelt name would otherwise be silently ignored.
fn check_override_dir(dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("mail template directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("mail template directory {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The directory also holds the answers' and the reminders' templates (their own loaders).
        let known = EMBEDDED
            .iter()
            .chain(crate::mail::answer::TEMPLATES.iter())
            .chain(crate::mail::cc::TEMPLATES.iter())
            .chain(crate::mail::reminder_texts::TEMPLATES.iter())
            .map(|(n, _)| *n);
        if !name.starts_with('.') && !known.clone().any(|n| n == name) {
            tracing::warn!(
                dir = %dir.display(),
                file = %name,
                "ignoring a file in the mail template directory: it is not one of the templates ({})",
                known.collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(())
}

/// The three rendered pieces of a mail.
#[derive(Debug)]
pub(super) struct Rendered {
    subject_name: String,
    pub(super) subject: String,
    text_name: String,
    pub(super) text: String,
    html_name: String,
    pub(super) html: String,
}

impl Rendered {
    /// What inbound correlation needs: the tag in the subject, the token in both bodies.
    pub(super) fn check(&self, templates: &Templates, mail: &ApprovalMail) -> anyhow::Result<()> {
        let origin = |name: &str| describe(name, templates.origin(name));
        if self.subject.is_empty() {
            bail!(
                "mail template {}: the subject is empty",
                origin(&self.subject_name)
            );
        }
        let tag = format!("[{}]", mail.subject_tag);
        if !self.subject.contains(&tag) {
            bail!(
                "mail template {}: the subject {:?} does not contain the tag {tag} (write [{{{{ subject_tag }}}}])",
                origin(&self.subject_name),
                self.subject
            );
        }
        if mail.token.is_empty() {
            bail!("approval mail without a reply token");
        }
        for (name, body) in [(&self.text_name, &self.text), (&self.html_name, &self.html)] {
            if !body.contains(&mail.token) {
                bail!(
                    "mail template {}: the reply token is missing (write {{{{ token_line }}}} at the end)",
                    origin(name)
                );
            }
        }
        Ok(())
    }
}

/// The values templates see (see the module documentation).
#[derive(Debug, Serialize)]
struct Context<'a> {
    kind: &'static str,
    locale: &'static str,
    from: MailboxView<'a>,
    to: MailboxView<'a>,
    reply_to: &'a str,
    subject_tag: &'a str,
    subject: String,
    reply_subject: String,
    process_name: &'a str,
    task_name: &'a str,
    business_key: &'a str,
    initiator: &'a str,
    fields: Vec<FieldView<'a>>,
    outcomes: Vec<OutcomeView<'a>>,
    deadline: String,
    token: &'a str,
    token_line: String,
    note: &'a str,
    signing: Option<SigningView<'a>>,
}

#[derive(Debug, Serialize)]
struct SigningView<'a> {
    mode: &'static str,
    sequential: bool,
    position: usize,
    total: usize,
    needed: usize,
    signers: &'a [String],
}

impl<'a> SigningView<'a> {
    fn new(signing: &'a Signing) -> Self {
        SigningView {
            mode: signing.mode.as_str(),
            sequential: signing.sequential,
            position: signing.position,
            total: signing.signers.len(),
            needed: signing.needed,
            signers: &signing.signers,
        }
    }
}

#[derive(Debug, Serialize)]
struct MailboxView<'a> {
    name: &'a str,
    address: &'a str,
}

#[derive(Debug, Serialize)]
struct FieldView<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Debug, Serialize)]
struct OutcomeView<'a> {
    number: u32,
    id: &'a str,
    label: &'a str,
    keywords: &'a [String],
    answers: Vec<String>,
    mailto: String,
    tone: &'static str,
}

impl<'a> Context<'a> {
    fn new(mail: &'a ApprovalMail) -> Self {
        let mailbox = |m: &'a Mailbox| MailboxView {
            name: &m.name,
            address: &m.address,
        };
        Context {
            kind: mail.kind.as_str(),
            locale: mail.locale.tag(),
            from: mailbox(&mail.from),
            to: mailbox(&mail.to),
            reply_to: &mail.reply_to,
            subject_tag: &mail.subject_tag,
            subject: String::new(),
            reply_subject: String::new(),
            process_name: &mail.process_name,
            task_name: &mail.task_name,
            business_key: &mail.business_key,
            initiator: &mail.initiator,
            fields: mail
                .fields
                .iter()
                .map(|(name, value)| FieldView { name, value })
                .collect(),
            outcomes: mail
                .outcomes
                .iter()
                .map(|o| OutcomeView {
                    number: o.number,
                    id: &o.id,
                    label: &o.label,
                    keywords: &o.keywords,
                    answers: std::iter::once(o.number.to_string())
                        .chain(o.keywords.iter().cloned())
                        .collect(),
                    mailto: String::new(),
                    tone: tone(o),
                })
                .collect(),
            deadline: deadline_text(mail.locale, mail.deadline),
            token: &mail.token,
            token_line: token_line(&mail.token),
            note: &mail.note,
            signing: mail.signing.as_ref().map(SigningView::new),
        }
    }

    /// Once the subject is known: it, and the pre-filled replies that quote it.
    fn set_subject(&mut self, mail: &ApprovalMail, subject: &str) {
        self.subject = subject.to_string();
        self.reply_subject = format!("Re: {subject}");
        for (view, outcome) in self.outcomes.iter_mut().zip(&mail.outcomes) {
            view.mailto = mailto(
                &mail.reply_to,
                &self.reply_subject,
                &format!("{}\r\n\r\n{}", outcome.label, self.token_line),
            );
        }
    }
}

/// `回复凭证 / Reply token: <token>`.
fn token_line(token: &str) -> String {
    format!("{TOKEN_LINE_LABEL} {token}")
}

/// Characters kept as they are in a mailto address (RFC 6068 `addr-spec`, what our reply
/// addresses use); everything else is percent-encoded.
const MAILTO_ADDRESS: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'@')
    .remove(b'+')
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// RFC 3986 unreserved characters stay; everything else in a header value is percent-encoded
/// (UTF-8), including `&`, `=`, `+` and line breaks.
const MAILTO_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~');

/// A `mailto:` URL (RFC 6068) with subject and body pre-filled.
fn mailto(to: &str, subject: &str, body: &str) -> String {
    format!(
        "mailto:{}?subject={}&body={}",
        utf8_percent_encode(to, MAILTO_ADDRESS),
        utf8_percent_encode(subject, MAILTO_VALUE),
        utf8_percent_encode(body, MAILTO_VALUE)
    )
}

/// A button colour hint from the outcome's id and keywords (the reply convention's words).
/// "Send back" (退回) is neither: it stays neutral, so that it looks different from a rejection.
fn tone(outcome: &OutcomeChoice) -> &'static str {
    const POSITIVE: &[&str] = &[
        "approve", "approved", "yes", "ok", "okay", "lgtm", "accept", "agree", "同意", "批准",
        "通过", "可以",
    ];
    const NEGATIVE: &[&str] = &[
        "reject",
        "rejected",
        "no",
        "deny",
        "decline",
        "不同意",
        "驳回",
        "拒绝",
    ];
    let words: Vec<String> = std::iter::once(&outcome.id)
        .chain(&outcome.keywords)
        .map(|w| w.trim().to_lowercase())
        .collect();
    let positive = words.iter().any(|w| POSITIVE.contains(&w.as_str()));
    let negative = words.iter().any(|w| NEGATIVE.contains(&w.as_str()));
    match (positive, negative) {
        (true, false) => "positive",
        (false, true) => "negative",
        _ => "neutral",
    }
}

/// `2026年11月24日 18:00 (北京时间)` for zh-CN, `Tue, 24 Nov 2026, 10:00 UTC` for en.
pub(super) fn deadline_text(locale: Locale, millis: i64) -> String {
    let utc = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    match locale {
        Locale::ZhCn => {
            let t = utc.to_offset(UtcOffset::from_hms(8, 0, 0).unwrap_or(UtcOffset::UTC));
            format!(
                "{}年{}月{}日 {:02}:{:02} (北京时间)",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        Locale::En => {
            let weekday = utc.weekday().to_string();
            let month = utc.month().to_string();
            format!(
                "{}, {} {} {}, {:02}:{:02} UTC",
                &weekday[..3],
                utc.day(),
                &month[..3],
                utc.year(),
                utc.hour(),
                utc.minute()
            )
        }
    }
}

/// Trailing spaces off every line, at most one blank line in a row, one final newline.
fn tidy_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.trim().lines() {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{mailtos, parse, split_mailto, templates};
    use super::super::*;
    use super::*;

    #[test]
    fn deadline_in_the_readers_zone() {
        let sample = ApprovalMail::sample(Locale::ZhCn, MailKind::Approval);
        assert_eq!(
            deadline_text(Locale::ZhCn, sample.deadline),
            "2026年11月24日 18:00 (北京时间)"
        );
        assert_eq!(
            deadline_text(Locale::En, sample.deadline),
            "Tue, 24 Nov 2026, 10:00 UTC"
        );
        // Midnight rolls the date over in Beijing.
        assert_eq!(
            deadline_text(Locale::ZhCn, 1_795_536_000_000),
            "2026年11月25日 00:00 (北京时间)"
        );
    }

    #[test]
    fn a_signer_reads_the_mode_and_who_else_is_asked_by_name() {
        let templates = templates();
        let names = |zh: bool| -> Vec<String> {
            let names: &[&str] = if zh {
                &["王丽", "张伟", "李娜"]
            } else {
                &["Lena Wang", "Fred Zhang", "Ivy Li"]
            };
            names.iter().map(|n| n.to_string()).collect()
        };
        let cases = [
            (
                SigningMode::All,
                false,
                3,
                "会签（全部同意才通过）· 您是第 2 位，共 3 位：王丽、张伟、李娜",
                "Countersign (all must approve) · you are 2 of 3: Lena Wang, Fred Zhang, Ivy Li",
            ),
            (
                SigningMode::Any,
                false,
                1,
                "或签（一人决定即可）· 您是第 2 位，共 3 位：王丽、张伟、李娜",
                "Any-one sign (the first decision decides) · you are 2 of 3: Lena Wang, Fred Zhang, Ivy Li",
            ),
            (
                SigningMode::Vote,
                false,
                2,
                "票签（2 位同意即通过）· 您是第 2 位，共 3 位：王丽、张伟、李娜",
                "Vote (2 approvals pass it) · you are 2 of 3: Lena Wang, Fred Zhang, Ivy Li",
            ),
            (
                SigningMode::Vote,
                false,
                1,
                "票签（1 位同意即通过）· 您是第 2 位，共 3 位：王丽、张伟、李娜",
                "Vote (1 approval passes it) · you are 2 of 3: Lena Wang, Fred Zhang, Ivy Li",
            ),
            (
                SigningMode::All,
                true,
                3,
                "顺序会签（全部同意才通过，按名单顺序逐一审批）· 您是第 2 位，共 3 位：王丽 → 张伟 → 李娜",
                "Sequential countersign (all must approve, one at a time in this order) · you are 2 of 3: Lena Wang → Fred Zhang → Ivy Li",
            ),
        ];
        for (mode, sequential, needed, zh_line, en_line) in cases {
            for kind in [MailKind::Approval, MailKind::Reminder] {
                for (locale, label, line) in [
                    (Locale::ZhCn, "审批方式：", zh_line),
                    (Locale::En, "Approval mode: ", en_line),
                ] {
                    let mut mail = ApprovalMail::sample(locale, kind);
                    mail.signing = Some(Signing {
                        mode,
                        sequential,
                        position: 2,
                        needed,
                        signers: names(locale == Locale::ZhCn),
                    });
                    let (text, html) = render_bodies(&templates, &mail).unwrap();
                    assert!(text.contains(&format!("\n{label}{line}\n")), "{text}");
                    assert!(html.contains(&format!(">{line}</div>")), "{html}");
                }
            }
        }
        // Names are escaped in HTML like every other value.
        let mut mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        if let Some(signing) = mail.signing.as_mut() {
            signing.signers[0] = "<b>Eve</b>".into();
        }
        let (_, html) = render_bodies(&templates, &mail).unwrap();
        assert!(
            html.contains("&lt;b&gt;Eve&lt;&#x2f;b&gt;, Mary Ma"),
            "{html}"
        );
        // No line at all for a task of one approver.
        mail.signing = None;
        let (text, html) = render_bodies(&templates, &mail).unwrap();
        assert!(!text.contains("Approval mode") && !html.contains("Approval mode"));
    }

    #[test]
    fn html_escapes_values_and_text_does_not() {
        let mut mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        mail.fields
            .push(("note".into(), "<script>alert(1)</script> & \"q\"".into()));
        mail.task_name = "<b>bold</b> task".into();
        mail.outcomes[0].label = "Yes & <go>".into();
        let (text, html) = render_bodies(&templates(), &mail).unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>bold"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; &quot;q&quot;"));
        assert!(html.contains(">Yes &amp; &lt;go&gt;</a>"), "{html}");
        assert!(
            text.contains("note: <script>alert(1)</script> & \"q\""),
            "{text}"
        );
        // The label inside the mailto is percent-encoded, not HTML.
        let (_, _, body) = split_mailto(&mailtos(&html)[0]);
        assert!(body.starts_with("Yes & <go>\r\n"), "{body:?}");
    }

    #[test]
    fn broken_override_names_the_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("approval.en.html"), "<p>{% if %}</p>").unwrap();
        let err = format!("{:#}", Templates::load(Some(dir.path())).unwrap_err());
        assert!(err.contains("approval.en.html"), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn override_with_a_render_error_names_the_template() {
        let dir = tempfile::tempdir().unwrap();
        // A misspelt variable: caught at load time, not when the first mail goes out.
        std::fs::write(
            dir.path().join("approval.zh-CN.txt"),
            "{{ tsak_name }}\n{{ token_line }}\n",
        )
        .unwrap();
        let err = format!("{:#}", Templates::load(Some(dir.path())).unwrap_err());
        assert!(err.contains("approval.zh-CN.txt"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn override_without_token_or_tag_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("approval.en.txt"),
            "Approve {{ task_name }}?\n",
        )
        .unwrap();
        let err = format!("{:#}", Templates::load(Some(dir.path())).unwrap_err());
        assert!(
            err.contains("approval.en.txt") && err.contains("token"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("subject.en.txt"), "{{ task_name }}\n").unwrap();
        let err = format!("{:#}", Templates::load(Some(dir.path())).unwrap_err());
        assert!(
            err.contains("subject.en.txt") && err.contains("[RF-"),
            "{err}"
        );
    }

    #[test]
    fn a_good_override_is_used() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("subject.en.txt"),
            "{{ task_name }} needs you\n[{{ subject_tag }}]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("README"), "not a template").unwrap();
        let templates = Templates::load(Some(dir.path())).unwrap();
        let debug = format!("{templates:?}");
        assert!(debug.contains("subject.en.txt") && debug.contains(&*dir.path().to_string_lossy()));
        assert!(debug.contains("embedded"), "{debug}");
        let mail = ApprovalMail::sample(Locale::En, MailKind::Approval);
        let bytes = render(&templates, &mail).unwrap();
        assert_eq!(
            parse(&bytes).subject(),
            Some("Manager approval needs you [RF-k3x9q2ab]"),
            "one line"
        );
    }

    #[test]
    fn missing_override_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = format!("{:#}", Templates::load(Some(&missing)).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn tones() {
        let choice = |id: &str, keywords: &[&str]| OutcomeChoice {
            number: 1,
            id: id.into(),
            label: id.into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
        };
        assert_eq!(tone(&choice("approve", &[])), "positive");
        assert_eq!(tone(&choice("x", &["同意"])), "positive");
        assert_eq!(tone(&choice("reject", &["驳回"])), "negative");
        assert_eq!(tone(&choice("return", &["退回", "send back"])), "neutral");
        assert_eq!(tone(&choice("escalate", &["上报"])), "neutral");
    }
}
