//! Reading an approver's reply (DESIGN §5): classify the message (auto-reply, bounce, a real
//! reply), pull out the NEW text (quotes, attribution lines, client headers and signatures
//! removed), and read the decision from its first meaningful line by the reply convention.
//!
//! Everything here is pure and never panics: the same reader serves ingestion, the
//! `ExplainReply` RPC and `replyflow reply-check`. Each step leaves a human line in
//! [`ReplyReading::explanation`] so that an administrator can see why a reply was read as it was.
//!
//! The parts: `convention` reads the decision, `quotes` finds the new text (with `html` for
//! HTML-only bodies), `bounce` recognises bounces and auto-replies, and `auth_results` judges
//! the sender's `Authentication-Results`. This module ties them together in [`read_reply`] and
//! extracts what correlates a reply with its approval context.

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

use super::{compose::TOKEN_LINE_LABEL, token};

mod auth_results;
mod bounce;
mod convention;
mod html;
mod quotes;

pub use auth_results::{AuthRequirement, InboundAuth};
pub use bounce::BounceReport;
use bounce::{auto_reply_reason, bounce_report};
pub use convention::OutcomeWords;
use convention::decide;
use html::html_to_text;
pub use quotes::new_text;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    Decision,
    Delegate,
    Ambiguous,
    NoDecision,
    AutoReply,
    Bounce,
    Unparseable,
}

/// What ties a reply to an approval context; nothing here is verified yet.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Correlation {
    /// The raw token found: in a plus address (To/Delivered-To/Cc), else on the body's token line.
    pub token: Option<String>,
    /// "plus_address" | "body" | "".
    pub token_source: String,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// e.g. `RF-k3x9q2ab`, from `[RF-k3x9q2ab]` in the subject.
    pub subject_tag: Option<String>,
    pub message_id: String,
    /// Bare address, lower case.
    pub from: String,
    /// Mailboxes named by all From headers together: a reply is judged only with exactly one
    /// (several From headers, or one listing several mailboxes, cannot say who answered).
    pub from_count: usize,
    pub auto_submitted: String,
    pub authentication_results: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplyReading {
    pub kind: ReplyKind,
    pub outcome: Option<String>,
    pub delegate_to: Option<String>,
    pub comment: String,
    pub new_text: String,
    /// The outcome ids named when the reply is ambiguous.
    pub ambiguous: Vec<String>,
    pub decision_line: Option<String>,
    pub correlation: Correlation,
    /// For a bounce: which of our mails failed and why, as far as the report says.
    pub bounce: Option<BounceReport>,
    pub explanation: Vec<String>,
}

/// Reads a raw RFC 822 reply. `delivered_to`: the envelope recipient (Delivered-To) when known.
/// Never panics.
pub fn read_reply(
    raw: &[u8],
    outcomes: &[OutcomeWords],
    delivered_to: Option<&str>,
) -> ReplyReading {
    let mut reading = ReplyReading {
        kind: ReplyKind::Unparseable,
        outcome: None,
        delegate_to: None,
        comment: String::new(),
        new_text: String::new(),
        ambiguous: Vec::new(),
        decision_line: None,
        correlation: Correlation::default(),
        bounce: None,
        explanation: Vec::new(),
    };
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let raw = &raw[start..];
    let Some(msg) = MessageParser::default().parse(raw) else {
        reading
            .explanation
            .push("the message could not be parsed as RFC 822".into());
        return reading;
    };
    if msg.root_part().headers.is_empty() {
        reading
            .explanation
            .push("the message has no headers: not an RFC 822 message".into());
        return reading;
    }

    // Correlation.
    let c = &mut reading.correlation;
    c.from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.trim().to_lowercase())
        .unwrap_or_default();
    c.from_count = msg
        .header_values("From")
        .map(|v| v.as_address().map_or(1, |a| a.iter().count()))
        .sum();
    c.message_id = msg.message_id().unwrap_or_default().to_string();
    c.in_reply_to = header_list(msg.in_reply_to());
    c.references = header_list(msg.references());
    let subject = msg.subject().unwrap_or_default().to_string();
    c.subject_tag = subject_tag(&subject);
    c.auto_submitted = header_text(&msg, "Auto-Submitted");
    c.authentication_results = msg
        .header_values("Authentication-Results")
        .filter_map(|v| v.as_text().map(|s| s.trim().to_string()))
        .collect();
    let mut recipients: Vec<String> = Vec::new();
    if let Some(d) = delivered_to {
        recipients.push(d.to_string());
    }
    for v in msg.header_values("Delivered-To") {
        if let Some(t) = v.as_text() {
            recipients.push(t.to_string());
        }
    }
    for list in [msg.to(), msg.cc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address() {
                recipients.push(addr.to_string());
            }
        }
    }
    if let Some(t) = recipients.iter().find_map(|r| plus_token(r)) {
        c.token = Some(t);
        c.token_source = "plus_address".into();
    }

    // Bounces and auto-replies.
    let ctype = msg
        .root_part()
        .content_type()
        .map(|ct| {
            format!(
                "{}/{}",
                ct.ctype().to_lowercase(),
                ct.subtype().unwrap_or("").to_lowercase()
            )
        })
        .unwrap_or_default();
    let from_local = reading
        .correlation
        .from
        .split('@')
        .next()
        .unwrap_or("")
        .to_string();
    let subject_lower = subject.to_lowercase();
    let has_dsn_part = msg.parts.iter().any(|p| {
        p.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("delivery-status"))
        })
    });
    if ctype == "multipart/report" || has_dsn_part {
        reading.kind = ReplyKind::Bounce;
        reading.explanation.push(format!(
            "bounce: Content-Type {ctype} (a delivery status report)"
        ));
    } else if (from_local == "mailer-daemon" || from_local == "postmaster")
        && [
            "undeliver",
            "delivery",
            "failure",
            "returned mail",
            "退信",
            "未送达",
            "无法投递",
            "系统退信",
        ]
        .iter()
        .any(|w| subject_lower.contains(w))
    {
        reading.kind = ReplyKind::Bounce;
        reading.explanation.push(format!(
            "bounce: from {} with subject {subject:?}",
            reading.correlation.from
        ));
    } else if let Some(why) = auto_reply_reason(&msg, &subject) {
        reading.kind = ReplyKind::AutoReply;
        reading.explanation.push(format!("auto-reply: {why}"));
    }
    if reading.kind == ReplyKind::Bounce {
        let report = bounce_report(&msg, &reading.correlation);
        reading
            .explanation
            .push(if report.original_message_ids.is_empty() {
                "bounce: the report names no Message-ID of the returned mail".to_string()
            } else {
                format!(
                    "bounce: {} <{}>{}{}",
                    if report.failed {
                        "delivery failed for"
                    } else {
                        "a delay or success notice (no failure) about"
                    },
                    report.original_message_ids.join(">, <"),
                    if report.recipient.is_empty() {
                        String::new()
                    } else {
                        format!(" to {}", report.recipient)
                    },
                    if report.diagnostic.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", report.diagnostic)
                    }
                )
            });
        reading.bounce = Some(report);
    }

    // The body.
    let text_part_is_html = msg.text_part(0).is_some_and(|p| p.is_text_html());
    let (body, html) = if msg.text_body_count() > 0 && !text_part_is_html {
        (msg.body_text(0).map(|b| b.into_owned()), false)
    } else if msg.html_body_count() > 0 {
        (msg.body_html(0).map(|b| b.into_owned()), true)
    } else if ctype.is_empty() || ctype.starts_with("text/") {
        (Some(String::new()), false)
    } else if let Some(text) = ctype
        .starts_with("multipart/")
        .then(|| raw_body(raw))
        .flatten()
    {
        reading.explanation.push(
            "no MIME text part (a multipart without its boundaries): the raw body is read as text"
                .into(),
        );
        (Some(text), false)
    } else {
        (None, false)
    };
    let Some(body) = body else {
        if reading.kind == ReplyKind::Unparseable {
            reading.explanation.push("no text or HTML body".into());
        }
        return reading;
    };
    let full_text = if html {
        html_to_text(&body, false).0
    } else {
        body.clone()
    };
    if reading.correlation.token.is_none()
        && let Some(t) = body_token(&full_text)
    {
        reading.correlation.token = Some(t);
        reading.correlation.token_source = "body".into();
    }
    let (text, reasons) = new_text(&body, html);
    reading.new_text = text;
    if matches!(reading.kind, ReplyKind::AutoReply | ReplyKind::Bounce) {
        reading.explanation.extend(reasons);
        reading
            .explanation
            .push("not read for a decision: ignored".into());
        return reading;
    }
    if full_text.trim().is_empty() {
        reading.kind = ReplyKind::NoDecision;
        reading.explanation.extend(reasons);
        reading
            .explanation
            .push("the body is empty: no decision".into());
        return reading;
    }
    reading.explanation.push(format!(
        "body: {} ({} lines)",
        if html {
            "HTML only, converted to text"
        } else {
            "text/plain part"
        },
        full_text.lines().count()
    ));
    reading.explanation.extend(reasons);
    decide(&mut reading, outcomes);
    reading
}

/// The bytes after the header block, as text, when there are any.
fn raw_body(raw: &[u8]) -> Option<String> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let start = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    let text = String::from_utf8_lossy(&raw[start..]).into_owned();
    (!text.trim().is_empty()).then_some(text)
}

fn header_text(msg: &mail_parser::Message<'_>, name: &str) -> String {
    msg.header(name)
        .and_then(|v| v.as_text().map(|s| s.trim().to_string()))
        .unwrap_or_default()
}

fn header_list(v: &HeaderValue<'_>) -> Vec<String> {
    match v {
        HeaderValue::Text(t) => vec![t.trim().to_string()],
        HeaderValue::TextList(l) => l.iter().map(|s| s.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

fn subject_tag(subject: &str) -> Option<String> {
    let start = subject.find("[RF-").or_else(|| subject.find("[rf-"))?;
    let rest = &subject[start + 1..];
    let end = rest.find(']')?;
    let tag = &rest[..end];
    (tag.len() > 3 && tag[3..].chars().all(|c| c.is_ascii_alphanumeric())).then(|| tag.to_string())
}

fn plus_token(address: &str) -> Option<String> {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>');
    let local = address.split('@').next()?;
    let (_, suffix) = local.rsplit_once('+')?;
    token::parse(suffix).map(|_| suffix.to_string())
}

fn token_runs(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|run| run.len() == token::TOKEN_LEN)
        .find(|run| token::parse(run).is_some())
        .map(str::to_string)
}

/// The token on our token line if there is one, else any token-shaped run in the body.
fn body_token(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| is_token_line(l))
        .find_map(token_runs)
        .or_else(|| token_runs(text))
}

fn is_token_line(line: &str) -> bool {
    let l = line.to_lowercase();
    l.contains(&TOKEN_LINE_LABEL.to_lowercase())
        || l.contains("reply token")
        || l.contains("回复凭证")
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn ab() -> Vec<OutcomeWords> {
        OutcomeWords::defaults(&["approve", "reject"])
    }

    pub(super) fn body_reading(body: &str, outcomes: &[OutcomeWords]) -> ReplyReading {
        let raw = format!(
            "From: Mary <Mary@Example.com>\r\nTo: approvals@example.com\r\nSubject: Re: x\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
        );
        read_reply(raw.as_bytes(), outcomes, None)
    }

    #[test]
    fn several_from_mailboxes_are_counted() {
        let raw = b"From: a@example.com, b@example.com\r\nFrom: c@example.com\r\nSubject: x\r\n\r\nyes\r\n";
        let r = read_reply(raw, &ab(), None);
        assert_eq!(r.correlation.from_count, 3);
        let raw = b"From: a@example.com\r\nSubject: x\r\n\r\nyes\r\n";
        assert_eq!(read_reply(raw, &ab(), None).correlation.from_count, 1);
    }

    #[test]
    fn never_panics_on_garbage() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00",
            b"Subject: x\r\n\r\n<a href=\"",
            b"&#xFFFFFFFF;&",
            "全角&ａｍｐ;".as_bytes(),
        ] {
            let _ = read_reply(raw, &ab(), None);
            let _ = new_text(&String::from_utf8_lossy(raw), true);
        }
    }

    /// The project's own reply corpus: tests/replies/cases.json, one case per message written
    /// as a real client would (see tests/replies/make_cases.py).
    #[test]
    fn own_reply_corpus() {
        let dir = format!("{}/tests/replies", env!("CARGO_MANIFEST_DIR"));
        let cases = std::fs::read_to_string(format!("{dir}/cases.json")).expect("cases.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(&cases).expect("json");
        assert!(cases.len() >= 40, "only {} cases", cases.len());
        let mut failures = Vec::new();
        for case in &cases {
            let file = case["file"].as_str().expect("file");
            let raw = std::fs::read(format!("{dir}/{file}")).expect("eml");
            let ids: Vec<&str> = case["outcomes"]
                .as_str()
                .unwrap_or("approve,reject")
                .split(',')
                .collect();
            let r = read_reply(&raw, &OutcomeWords::defaults(&ids), None);
            let kind = serde_json::to_value(r.kind).expect("kind");
            let mut wrong = Vec::new();
            if kind != case["kind"] {
                wrong.push(format!("kind {kind} != {}", case["kind"]));
            }
            if r.outcome.as_deref() != case["outcome"].as_str() {
                wrong.push(format!("outcome {:?} != {}", r.outcome, case["outcome"]));
            }
            if r.comment != case["comment"].as_str().unwrap_or_default() {
                wrong.push(format!("comment {:?} != {}", r.comment, case["comment"]));
            }
            if let Some(d) = case.get("delegate_to")
                && r.delegate_to.as_deref() != d.as_str()
            {
                wrong.push(format!("delegate_to {:?} != {d}", r.delegate_to));
            }
            if let Some(src) = case.get("token_source")
                && Some(r.correlation.token_source.as_str()) != src.as_str()
            {
                wrong.push(format!(
                    "token_source {:?} != {src}",
                    r.correlation.token_source
                ));
            }
            if r.kind != ReplyKind::Bounce && r.correlation.in_reply_to.is_empty() {
                wrong.push("no In-Reply-To".into());
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{file}: {}\n  {:?}",
                    wrong.join("; "),
                    r.explanation
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases fail:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// Scores the reader on ../shared/corpus (cases with exact expectations); prints failures.
    /// `scripts/corpus-score.sh` runs it.
    #[test]
    #[ignore]
    fn corpus_score() {
        let root = std::env::var("REPLY_CORPUS")
            .unwrap_or_else(|_| format!("{}/../shared/corpus", env!("CARGO_MANIFEST_DIR")));
        let cases = std::fs::read_to_string(format!("{root}/cases.jsonl")).expect("cases.jsonl");
        let (mut total, mut passed, mut failed) = (0, 0, Vec::new());
        for line in cases.lines().filter(|l| !l.trim().is_empty()) {
            let case: serde_json::Value = serde_json::from_str(line).expect("json");
            let source = case["source"].as_str().unwrap_or_default();
            // Every input, scored or not, must read without a panic.
            let path = format!("{root}/{}", case["input_path"].as_str().unwrap_or_default());
            if let Ok(bytes) = std::fs::read(&path) {
                let _ = read_reply(&bytes, &ab(), None);
                let _ = new_text(&String::from_utf8_lossy(&bytes), false);
                let _ = new_text(&String::from_utf8_lossy(&bytes), true);
            }
            let Some(expected_path) = case["expected_path"].as_str() else {
                continue;
            };
            if source == "mail-parser-charsets" {
                continue;
            }
            let id = format!("{source}/{}", case["id"].as_str().unwrap_or_default());
            let input = std::fs::read(format!(
                "{root}/{}",
                case["input_path"].as_str().unwrap_or_default()
            ))
            .expect("input");
            let expected =
                std::fs::read_to_string(format!("{root}/{expected_path}")).expect("expected");
            let kind = case["kind"].as_str().unwrap_or_default();
            let got = match kind {
                "raw_rfc822" => read_reply(&input, &ab(), None).new_text,
                "body_html" => new_text(&String::from_utf8_lossy(&input), true).0,
                _ => new_text(&String::from_utf8_lossy(&input), false).0,
            };
            let ok = if case["expected_kind"]
                .as_str()
                .unwrap_or_default()
                .contains("ignoring_all_whitespace")
            {
                let squash = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                squash(&got) == squash(&expected)
            } else {
                got.trim() == expected.trim()
            };
            total += 1;
            if ok {
                passed += 1;
            } else {
                if std::env::var("REPLY_CORPUS_VERBOSE").is_ok() {
                    println!(
                        "--- {id}\n=== got:\n{}\n=== expected:\n{}",
                        got.trim(),
                        expected.trim()
                    );
                }
                failed.push(id);
            }
        }
        println!(
            "corpus score: {passed}/{total} = {:.1}%",
            100.0 * passed as f64 / total.max(1) as f64
        );
        for id in &failed {
            println!("FAIL {id}");
        }
    }
}
