//! Reading an approver's reply (DESIGN §5): classify the message (auto-reply, bounce, a real
//! reply), pull out the NEW text (quotes, attribution lines, client headers and signatures
//! removed), and read the decision from its first meaningful line by the reply convention.
//!
//! Everything here is pure and never panics: the same reader serves ingestion, the
//! `ExplainReply` RPC and `replyflow reply-check`. Each step leaves a human line in
//! [`ReplyReading::explanation`] so that an administrator can see why a reply was read as it was.
use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

use super::{compose::TOKEN_LINE_LABEL, token};

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

/// What a bounce (a DSN, or a mailer-daemon's plain-text notice) says about the mail it returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BounceReport {
    /// Message-IDs (without angle brackets) of the returned mail, most reliable source first:
    /// the returned message or its headers, Original-Message-ID / X-Original-Message-ID, then
    /// In-Reply-To / References that name one of our mails (`rf.` ids).
    pub original_message_ids: Vec<String>,
    /// The failed recipient (Final-Recipient / Original-Recipient), when given.
    pub recipient: String,
    /// False for a report that only says "delayed" / "delivered" / "relayed" (RFC 3464 Action):
    /// the mail has not failed.
    pub failed: bool,
    /// The remote server's answer (Diagnostic-Code, else Status, else the first SMTP error line
    /// of the human-readable part).
    pub diagnostic: String,
}
#[derive(Debug, Clone)]
pub struct OutcomeWords {
    pub id: String,
    pub number: u32,
    pub label: String,
    pub keywords: Vec<String>,
}

const APPROVE_WORDS: &[&str] = &[
    "no problem",
    "no problems",
    "no objection",
    "no objections",
    "no issue",
    "no issues",
    "approve",
    "approved",
    "approval",
    "yes",
    "ok",
    "okay",
    "lgtm",
    "agree",
    "agreed",
    "accept",
    "accepted",
    "同意",
    "批准",
    "通过",
    "通過",
    "可以",
    "准予",
    "好的",
    "没问题",
    "沒問題",
    "没有问题",
    "沒有問題",
];
const REJECT_WORDS: &[&str] = &[
    "reject",
    "rejected",
    "no",
    "deny",
    "denied",
    "decline",
    "declined",
    "disapprove",
    "disagree",
    "不同意",
    "驳回",
    "駁回",
    "拒绝",
    "拒絕",
    "否决",
    "否決",
    "不批准",
    "不通过",
    "不通過",
    "不行",
    "不可以",
];
const RETURN_WORDS: &[&str] = &[
    "return",
    "send back",
    "sent back",
    "rework",
    "退回",
    "退回修改",
    "打回",
    "返回修改",
];

impl OutcomeWords {
    /// Defaults for approve/reject plus the built-in keyword lists of DESIGN §5 merged with the
    /// id and label; "退回" maps to an outcome named return / send back when one is defined,
    /// else to reject. Numbers follow the order of `ids`, from 1.
    pub fn defaults(ids: &[&str]) -> Vec<OutcomeWords> {
        let has_return = ids.iter().any(|id| is_return_id(id));
        ids.iter()
            .enumerate()
            .map(|(i, id)| {
                let lower = id.trim().to_lowercase();
                let (label, words): (&str, Vec<&str>) = match lower.as_str() {
                    "approve" | "approved" | "approval" => ("同意", APPROVE_WORDS.to_vec()),
                    "reject" | "rejected" | "deny" => {
                        let mut words = REJECT_WORDS.to_vec();
                        if !has_return {
                            words.extend(["退回", "打回"]);
                        }
                        ("驳回", words)
                    }
                    _ if is_return_id(&lower) => ("退回修改", RETURN_WORDS.to_vec()),
                    _ => (id.trim(), Vec::new()),
                };
                let mut keywords: Vec<String> = vec![lower.clone()];
                for w in words {
                    if !keywords.iter().any(|k| k == w) {
                        keywords.push(w.to_string());
                    }
                }
                OutcomeWords {
                    id: id.trim().to_string(),
                    number: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    label: label.to_string(),
                    keywords,
                }
            })
            .collect()
    }

    /// Every spelling that selects this outcome, normalised, longest first.
    fn terms(&self) -> Vec<(Vec<char>, &'static str)> {
        let mut terms: Vec<(Vec<char>, &'static str)> = Vec::new();
        let mut push = |text: &str, how: &'static str| {
            let t = normalize(text.trim());
            if !t.is_empty() && !terms.iter().any(|(x, _)| *x == t) {
                terms.push((t, how));
            }
        };
        push(&self.number.to_string(), "number");
        push(&self.id, "id");
        push(&self.label, "label");
        for k in &self.keywords {
            push(k, "keyword");
        }
        terms.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        terms
    }
}

fn is_return_id(id: &str) -> bool {
    matches!(
        id.trim().to_lowercase().as_str(),
        "return" | "send_back" | "send-back" | "sendback" | "send back" | "returned" | "rework"
    )
}

/// Full-width forms to ASCII, ideographic space to space, lower case; one char per char so
/// that positions line up with the original.
fn norm_char(c: char) -> char {
    let c = match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        0x3000 | 0x00A0 => ' ',
        // "can’t" as phones type it must read like "can't".
        0x2018 | 0x2019 | 0x2032 | 0x00B4 => '\'',
        _ => c,
    };
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

fn normalize(s: &str) -> Vec<char> {
    s.chars().map(norm_char).collect()
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x2E80..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FFFF)
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// Punctuation and symbols that separate a decision word from its comment.
fn is_sep(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            ',' | '.'
                | ';'
                | ':'
                | '!'
                | '?'
                | '-'
                | '—'
                | '–'
                | '。'
                | '、'
                | '…'
                | '~'
                | '/'
                | '|'
                | '('
                | ')'
                | '['
                | ']'
                | '【'
                | '】'
                | '「'
                | '」'
                | '"'
                | '\''
                | '“'
                | '”'
                | '*'
                | '_'
                | '='
                | '>'
                | '<'
        )
}

/// `term` at `line[at..]` with a word boundary on both sides (CJK needs none).
fn term_at(line: &[char], at: usize, term: &[char]) -> bool {
    if at + term.len() > line.len() || line[at..at + term.len()] != *term {
        return false;
    }
    let first = term[0];
    let last = term[term.len() - 1];
    if is_word(first) && at > 0 && is_word(line[at - 1]) {
        return false;
    }
    if is_word(last)
        && let Some(&next) = line.get(at + term.len())
        && is_word(next)
    {
        return false;
    }
    true
}

/// Who may stand before an English negation: "I can't approve", "we won't approve".
const NEGATION_SUBJECTS: &[&str] = &[
    "i ",
    "we ",
    "i am ",
    "i'm ",
    "im ",
    "we are ",
    "we're ",
    "sorry, i ",
    "sorry i ",
];

/// A negation before an outcome word turns it into its opposite ("不同意", "can't approve").
const NEGATIONS: &[&str] = &[
    "do not ",
    "don't ",
    "dont ",
    "does not ",
    "doesn't ",
    "not ",
    "cannot ",
    "can not ",
    "can't ",
    "cant ",
    "could not ",
    "couldn't ",
    "will not ",
    "won't ",
    "wont ",
    "would not ",
    "wouldn't ",
    "should not ",
    "shouldn't ",
    "must not ",
    "mustn't ",
    "never ",
    "unable to ",
    "not able to ",
    "refuse to ",
    "不予",
    "不能",
    "不可",
    "不会",
    "不會",
    "不太",
    "不再",
    "不便",
    "不",
    "未",
    "没有",
    "沒有",
    "没",
    "沒",
    "无法",
    "無法",
    "没法",
    "沒法",
    "没办法",
    "沒辦法",
    "难以",
    "難以",
    "恕难",
    "恕難",
    "暂不",
    "暫不",
    "暂时不",
    "暫時不",
    "先不",
    "拒不",
];

/// A negation after the outcome word (the potential complement: "同意不了", "批准不下来").
/// "不得" and "不过" are left out on purpose: "同意，不得超支" and "同意不过…" approve.
const SUFFIX_NEGATIONS: &[&str] = &["不了", "不下来", "不下來"];

struct Hit {
    outcome: usize,
    how: &'static str,
    len: usize,
    negated: bool,
}

/// The longest outcome term at `line[at..]`.
fn hit_at(line: &[char], at: usize, terms: &[Vec<(Vec<char>, &'static str)>]) -> Option<Hit> {
    let mut best: Option<Hit> = None;
    for (o, list) in terms.iter().enumerate() {
        for (t, how) in list {
            if term_at(line, at, t) && best.as_ref().is_none_or(|b| t.len() > b.len) {
                best = Some(Hit {
                    outcome: o,
                    how,
                    len: t.len(),
                    negated: false,
                });
            }
        }
    }
    best
}

/// The lengths (in chars) of every negation prefix of `line`: 6 for "can't ", 8 for "i can't ".
fn negation_prefixes(line: &[char]) -> Vec<usize> {
    let starts_with = |at: usize, text: &str| {
        let t: Vec<char> = text.chars().collect();
        line.len() > at + t.len() && line[at..at + t.len()] == *t
    };
    let mut found = Vec::new();
    let subjects = std::iter::once("").chain(NEGATION_SUBJECTS.iter().copied());
    for subject in subjects {
        if !starts_with(0, subject) {
            continue;
        }
        let at = subject.chars().count();
        for neg in NEGATIONS {
            // A subject only goes with an English negation.
            if !subject.is_empty() && !neg.is_ascii() {
                continue;
            }
            if starts_with(at, neg) {
                found.push(at + neg.chars().count());
            }
        }
    }
    found
}

/// A decision term at the start of the line, or a negation followed by one, or one followed by
/// a negating complement ("同意不了").
fn decision_hit(line: &[char], terms: &[Vec<(Vec<char>, &'static str)>]) -> Option<Hit> {
    let mut best = hit_at(line, 0, terms);
    for neg_len in negation_prefixes(line) {
        let mut at = neg_len;
        while at < line.len() && line[at].is_whitespace() {
            at += 1;
        }
        if let Some(h) = hit_at(line, at, terms) {
            let total = at + h.len;
            if best
                .as_ref()
                .is_none_or(|b| total > b.len || (total == b.len && !b.negated))
            {
                best = Some(Hit {
                    outcome: h.outcome,
                    how: h.how,
                    len: total,
                    negated: true,
                });
            }
        }
    }
    let mut hit = best?;
    let mut at = hit.len;
    while at < line.len() && line[at].is_whitespace() {
        at += 1;
    }
    for suffix in SUFFIX_NEGATIONS {
        let s: Vec<char> = suffix.chars().collect();
        if line.len() >= at + s.len() && line[at..at + s.len()] == *s {
            hit.negated = true;
            hit.len = at + s.len();
            break;
        }
    }
    Some(hit)
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

/// What a reply must pass, per the receiving MTA's `Authentication-Results` (`mail.require_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthRequirement {
    #[default]
    None,
    /// A `dkim=pass` whose signing domain (`header.d`) is the From domain or a parent of it.
    Dkim,
    /// `dmarc=pass` (for the From domain when the result names it).
    Dmarc,
}

/// `mail.authserv_id` + `mail.require_auth`, checked once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundAuth {
    /// Lower case; only headers carrying it are trusted.
    pub authserv_id: Option<String>,
    pub require: AuthRequirement,
}

impl InboundAuth {
    /// Errors name the configuration key.
    pub fn from_settings(authserv_id: Option<&str>, require_auth: &str) -> anyhow::Result<Self> {
        let require = match require_auth.trim().to_lowercase().as_str() {
            "none" | "" => AuthRequirement::None,
            "dkim" => AuthRequirement::Dkim,
            "dmarc" => AuthRequirement::Dmarc,
            other => {
                anyhow::bail!("mail.require_auth: expected none, dkim or dmarc, got {other:?}")
            }
        };
        let authserv_id = authserv_id
            .map(|id| id.trim().to_lowercase())
            .filter(|id| !id.is_empty());
        if let Some(id) = &authserv_id
            && id.chars().any(|c| c.is_whitespace() || c == ';')
        {
            anyhow::bail!("mail.authserv_id: {id:?} is not an authserv-id (no spaces or ';')");
        }
        if require != AuthRequirement::None && authserv_id.is_none() {
            anyhow::bail!(
                "mail.require_auth = {require_auth:?} needs mail.authserv_id: the authserv-id of your receiving MTA, whose Authentication-Results are trusted"
            );
        }
        Ok(Self {
            authserv_id,
            require,
        })
    }

    /// `Ok(what passed)` or `Err(why not)`, from the `Authentication-Results` header values of a
    /// mail from `from` (bare address), top first. Only the TOPMOST header whose authserv-id is
    /// ours counts: our MTA prepends its own above everything the sender wrote, so any header
    /// with our id below it was written by someone else (RFC 8601 §5 asks MTAs to remove such
    /// copies, and not every one does).
    pub fn check(&self, results: &[String], from: &str) -> Result<String, String> {
        let Some(ours) = &self.authserv_id else {
            return Ok("no authentication required".into());
        };
        if self.require == AuthRequirement::None {
            return Ok("no authentication required".into());
        }
        let from_domain = from
            .rsplit_once('@')
            .map(|(_, d)| d.trim().trim_end_matches('.').to_lowercase())
            .unwrap_or_default();
        let trusted: Vec<Vec<AuthResult>> = results
            .iter()
            .filter_map(|h| parse_authentication_results(h))
            .filter(|(id, _)| id == ours)
            .map(|(_, r)| r)
            .take(1)
            .collect();
        if trusted.is_empty() {
            return Err(format!(
                "no Authentication-Results from {ours} (the trusted authserv-id): the sender could not be verified"
            ));
        }
        let method = match self.require {
            AuthRequirement::Dkim => "dkim",
            AuthRequirement::Dmarc => "dmarc",
            AuthRequirement::None => return Ok("no authentication required".into()),
        };
        let mut seen: Vec<String> = Vec::new();
        for r in trusted.iter().flatten().filter(|r| r.method == method) {
            let domain = match self.require {
                AuthRequirement::Dkim => r.prop("header.d").map(str::to_string).or_else(|| {
                    r.prop("header.i")
                        .and_then(|i| i.rsplit_once('@').map(|(_, d)| d.to_string()))
                }),
                _ => r.prop("header.from").map(str::to_string),
            }
            .map(|d| d.trim_end_matches('.').to_lowercase());
            let aligned = match (self.require, &domain) {
                (AuthRequirement::Dkim, Some(d)) => dkim_domain_aligned(d, &from_domain),
                (AuthRequirement::Dkim, None) => false,
                // A DMARC result is about the From domain by definition; one naming another
                // domain is about another mail.
                (_, Some(d)) => from_domain == *d,
                (_, None) => true,
            };
            if r.result == "pass" && aligned {
                return Ok(format!(
                    "{method}=pass{} by {ours}",
                    domain.map(|d| format!(" for {d}")).unwrap_or_default()
                ));
            }
            seen.push(format!(
                "{method}={}{}",
                r.result,
                domain.map(|d| format!(" ({d})")).unwrap_or_default()
            ));
        }
        Err(if seen.is_empty() {
            format!("{ours} reported no {method} result for this mail")
        } else {
            format!(
                "{method} did not pass for {from_domain}: {ours} reported {}",
                seen.join(", ")
            )
        })
    }
}

/// A DKIM signature by `signer` (header.d) vouches for mail from `from_domain` when it is that
/// domain or a parent of it within the same registrable domain: `example.com` signs for
/// `mail.example.com`, but a public suffix (`com`, `co.uk`, `github.io`: anyone can register
/// below it) signs for nobody. The public suffix list is the `psl` crate's, compiled in.
fn dkim_domain_aligned(signer: &str, from_domain: &str) -> bool {
    if signer.is_empty() || from_domain.is_empty() {
        return false;
    }
    let parent = from_domain == signer || from_domain.ends_with(&format!(".{signer}"));
    // The registrable domain (public suffix + one label) of both must be the same, which also
    // refuses a signer that is itself a public suffix (it has none).
    let registrable = |d: &str| psl::domain_str(d).map(str::to_string);
    parent && registrable(signer).is_some_and(|r| Some(r) == registrable(from_domain))
}

/// One `method=result` of an Authentication-Results header, with its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthResult {
    method: String,
    result: String,
    /// `ptype.property` (lower case) → value.
    props: Vec<(String, String)>,
}

impl AuthResult {
    fn prop(&self, name: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 8601: `authserv-id [version] ; method[/version]=result [reason=...] [ptype.prop=value]...
/// ; ...` with CFWS anywhere. The authserv-id (lower case) and the results; None when malformed.
fn parse_authentication_results(value: &str) -> Option<(String, Vec<AuthResult>)> {
    // Comments go first; quoted strings keep their content.
    let mut clean = String::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if depth == 0 {
                clean.push(c);
            }
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                clean.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ';' if quoted => clean.push('\u{1}'),
            _ if depth == 0 => clean.push(if c.is_whitespace() { ' ' } else { c }),
            _ => {}
        }
    }
    let mut sections = clean.split(';');
    let id = sections.next()?.split_whitespace().next()?.to_lowercase();
    let mut results = Vec::new();
    for section in sections {
        let mut words = section.split_whitespace();
        let Some(first) = words.next() else { continue };
        let Some((method, result)) = first.split_once('=') else {
            continue;
        };
        let method = method
            .split('/')
            .next()
            .unwrap_or(method)
            .trim()
            .to_lowercase();
        let props = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_lowercase(), v.trim_matches('"').replace('\u{1}', ";")))
            .collect();
        results.push(AuthResult {
            method,
            result: result.trim().to_lowercase(),
            props,
        });
    }
    Some((id, results))
}

/// Which mail a bounce returns and why. Reads the DSN parts (RFC 3464: message/delivery-status,
/// the returned message/rfc822 or text/rfc822-headers), then the bounce's own headers, then the
/// human-readable text of a plain mailer-daemon notice (which quotes the returned headers).
fn bounce_report(msg: &mail_parser::Message<'_>, c: &Correlation) -> BounceReport {
    let mut report = BounceReport::default();
    let mut ids: Vec<String> = Vec::new();
    let push_id = |ids: &mut Vec<String>, id: &str| {
        let id = id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        if !id.is_empty() && id.contains('@') && !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    };
    let mut status = String::new();
    let mut human = String::new();
    let mut actions: Vec<String> = Vec::new();
    for part in msg.parts.iter().skip(1) {
        let ctype = part
            .content_type()
            .map(|ct| {
                format!(
                    "{}/{}",
                    ct.ctype().to_lowercase(),
                    ct.subtype().unwrap_or("").to_lowercase()
                )
            })
            .unwrap_or_default();
        match ctype.as_str() {
            "message/delivery-status" | "message/global-delivery-status" => {
                let text = String::from_utf8_lossy(part.contents());
                for (name, value) in field_lines(&text) {
                    let value = value.trim();
                    match name.as_str() {
                        "diagnostic-code" if report.diagnostic.is_empty() => {
                            // "smtp; 550 5.1.1 User unknown": the type is not the news.
                            report.diagnostic = value
                                .split_once(';')
                                .map_or(value, |(_, d)| d.trim())
                                .to_string();
                        }
                        "status" if status.is_empty() => status = value.to_string(),
                        "final-recipient" | "original-recipient" if report.recipient.is_empty() => {
                            report.recipient = value
                                .split_once(';')
                                .map_or(value, |(_, r)| r.trim())
                                .to_string();
                        }
                        "original-message-id" | "x-original-message-id" => {
                            push_id(&mut ids, value);
                        }
                        "action" => actions.push(value.to_lowercase()),
                        _ => {}
                    }
                }
            }
            "message/rfc822" | "message/global" => {
                if let Some(id) = part.message().and_then(|m| m.message_id()) {
                    push_id(&mut ids, id);
                }
            }
            "text/rfc822-headers" | "message/rfc822-headers" | "message/global-headers" => {
                let text = String::from_utf8_lossy(part.contents());
                for (name, value) in field_lines(&text) {
                    if name == "message-id" {
                        push_id(&mut ids, &value);
                    }
                }
            }
            "text/plain" if human.is_empty() => {
                human = part.text_contents().unwrap_or_default().to_string();
            }
            _ => {}
        }
    }
    if human.is_empty() && msg.parts.len() == 1 {
        human = msg.body_text(0).map(|b| b.into_owned()).unwrap_or_default();
    }
    for name in ["Original-Message-ID", "X-Original-Message-ID"] {
        for value in msg.header_values(name) {
            if let Some(text) = value.as_text() {
                push_id(&mut ids, text);
            }
        }
    }
    for id in c.in_reply_to.iter().chain(&c.references) {
        if id.trim_start_matches('<').starts_with("rf.") {
            push_id(&mut ids, id);
        }
    }
    // A plain notice quotes the returned headers in its text.
    for (name, value) in field_lines(&human) {
        if matches!(
            name.as_str(),
            "message-id" | "original-message-id" | "x-original-message-id"
        ) {
            push_id(&mut ids, &value);
        }
    }
    report.original_message_ids = ids;
    report.failed = actions.is_empty() || actions.iter().any(|a| a == "failed");
    if report.diagnostic.is_empty() {
        report.diagnostic = human
            .lines()
            .find_map(|l| smtp_error_at(l).map(|at| l[at..].trim().chars().take(300).collect()))
            .unwrap_or_default();
    }
    if report.diagnostic.is_empty() && !status.is_empty() {
        report.diagnostic = format!("status {status}");
    }
    report
}

/// `Name: value` lines of a header-like block (folded lines joined), names lower case.
fn field_lines(text: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty()
                && !name.contains(' ')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                fields.push((name.to_lowercase(), value.trim().to_string()));
            }
        }
    }
    fields
}

/// Where a permanent SMTP error (`550 5.1.1 …`, `554 …`) starts in a line, if it has one.
fn smtp_error_at(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(3)).find(|&i| {
        b[i] == b'5'
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
            && matches!(b[i + 3], b' ' | b'-')
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
    })
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

fn auto_reply_reason(msg: &mail_parser::Message<'_>, subject: &str) -> Option<String> {
    let auto = header_text(msg, "Auto-Submitted").to_lowercase();
    if !auto.is_empty() && auto != "no" {
        return Some(format!("Auto-Submitted: {auto}"));
    }
    for h in [
        "X-Autoreply",
        "X-Autorespond",
        "X-Autoresponder",
        "X-Auto-Reply",
    ] {
        if msg.header(h).is_some() {
            return Some(format!("{h} header present"));
        }
    }
    let precedence = header_text(msg, "Precedence").to_lowercase();
    if ["bulk", "auto_reply", "list", "junk"].contains(&precedence.as_str()) {
        return Some(format!("Precedence: {precedence}"));
    }
    let s = subject.trim().to_lowercase();
    for p in [
        "out of office",
        "out of the office",
        "automatic reply",
        "auto reply",
        "autoreply",
        "auto-reply",
        "auto:",
        "自动回复",
        "自動回覆",
        "自动答复",
        "自動回復",
        "休假",
    ] {
        if s.starts_with(p) || (p.len() > 5 && s.contains(p)) {
            return Some(format!("subject {subject:?}"));
        }
    }
    None
}

/// Fills kind/outcome/comment from the new text.
fn decide(reading: &mut ReplyReading, outcomes: &[OutcomeWords]) {
    let lines: Vec<&str> = reading.new_text.lines().collect();
    let mut kept: Vec<(usize, &str)> = Vec::new();
    let mut inline_quotes = 0;
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start().starts_with('>') {
            inline_quotes += 1;
        } else if is_token_line(l) {
            reading.explanation.push(format!(
                "line {}: our reply-token line, left out of the comment",
                i + 1
            ));
        } else {
            kept.push((i, l));
        }
    }
    if inline_quotes > 0 {
        reading.explanation.push(format!(
            "{inline_quotes} '>' quoted lines inside the new text: not read, not in the comment"
        ));
    }
    let terms: Vec<Vec<(Vec<char>, &'static str)>> = outcomes.iter().map(|o| o.terms()).collect();
    let Some(first) = kept.iter().position(|(_, l)| !l.trim().is_empty()) else {
        reading.kind = ReplyKind::NoDecision;
        reading
            .explanation
            .push("no new text: the reply is empty once quotes and signatures are removed".into());
        return;
    };
    // Skip one greeting line ("Hi Mary," / "您好：") when the next line decides.
    let mut at = first;
    if is_greeting(kept[at].1)
        && let Some(next) = kept[at + 1..]
            .iter()
            .position(|(_, l)| !l.trim().is_empty())
    {
        at = at + 1 + next;
        reading
            .explanation
            .push(format!("line {}: a greeting, skipped", kept[first].0 + 1));
    }
    let (line_no, line) = kept[at];
    reading.decision_line = Some(line.trim().to_string());
    let original: Vec<char> = line.trim().chars().collect();
    let mut lead = 0;
    while lead < original.len()
        && (original[lead].is_whitespace()
            || matches!(
                original[lead],
                '*' | '[' | '【' | '「' | '"' | '“' | '\'' | '#'
            ))
    {
        lead += 1;
    }
    let original = &original[lead..];
    let norm: Vec<char> = original.iter().map(|&c| norm_char(c)).collect();
    let following: String = kept[at + 1..]
        .iter()
        .map(|(_, l)| *l)
        .collect::<Vec<_>>()
        .join("\n");
    let comment_from = |start: usize| -> String {
        let mut s = start.min(original.len());
        while s < original.len() && is_sep(norm_char(original[s])) && original[s] != '(' {
            s += 1;
        }
        let rest: String = original[s..].iter().collect();
        let joined = if rest.trim().is_empty() {
            following.clone()
        } else {
            format!("{}\n{}", rest.trim(), following)
        };
        joined.trim().to_string()
    };

    // Delegation.
    for word in [
        "delegate to",
        "delegate",
        "转交给",
        "转交",
        "轉交給",
        "轉交",
        "委托给",
        "委托",
    ] {
        let w: Vec<char> = word.chars().collect();
        if term_at(&norm, 0, &w) {
            let after: String = norm[w.len()..].iter().collect();
            let after_trim = after.trim_start_matches(|c: char| c.is_whitespace() || c == ':');
            let candidate: String = after_trim
                .split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '，')
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| matches!(c, '<' | '>' | '.' | '。' | '"' | '\''))
                .to_string();
            let candidate = candidate.strip_prefix("mailto:").unwrap_or(&candidate);
            if candidate.contains('@') && candidate.len() > 3 {
                let offset =
                    original.len() - after_trim.chars().count() + candidate_len(after_trim);
                reading.kind = ReplyKind::Delegate;
                reading.delegate_to = Some(candidate.to_string());
                reading.comment = comment_from(offset);
                reading.explanation.push(format!(
                    "decision from line {}: '{}' = delegate to {candidate}",
                    line_no + 1,
                    line.trim()
                ));
            } else {
                reading.kind = ReplyKind::NoDecision;
                reading.explanation.push(format!(
                    "line {}: '{word}' without an email address: nothing decided",
                    line_no + 1
                ));
            }
            return;
        }
    }

    let Some(hit) = decision_hit(&norm, &terms) else {
        reading.kind = ReplyKind::NoDecision;
        reading.comment = reading.new_text.trim().to_string();
        reading.explanation.push(format!(
            "line {}: '{}' does not start with an outcome's number, name or keyword: no decision",
            line_no + 1,
            line.trim()
        ));
        return;
    };
    let named = &outcomes[hit.outcome];
    let word: String = original[..hit.len].iter().collect();
    let mut chosen = hit.outcome;
    if hit.negated {
        let reject = outcomes.iter().position(|o| {
            let id = o.id.to_lowercase();
            id == "reject" || id == "rejected" || id == "deny"
        });
        match reject {
            Some(r) if r != hit.outcome => {
                chosen = r;
                reading.explanation.push(format!(
                    "line {}: '{word}' negates outcome {}: read as {}",
                    line_no + 1,
                    named.id,
                    outcomes[r].id
                ));
            }
            _ => {
                reading.kind = ReplyKind::Ambiguous;
                reading.ambiguous = vec![named.id.clone()];
                reading.comment = comment_from(hit.len);
                reading.explanation.push(format!(
                    "line {}: '{word}' negates outcome {} and there is no reject outcome: ambiguous",
                    line_no + 1,
                    named.id
                ));
                return;
            }
        }
    }
    // Another outcome named in the same decision phrase?
    let mut others: Vec<usize> = Vec::new();
    let seg_end = (hit.len..norm.len())
        .find(|&i| {
            matches!(
                norm[i],
                ',' | '.' | ';' | ':' | '!' | '?' | '。' | '-' | '—' | '–' | '(' | '、'
            )
        })
        .unwrap_or(norm.len());
    let mut i = hit.len;
    while i < seg_end {
        if let Some(h) = decision_hit(&norm[i..seg_end], &terms).filter(|h| {
            terms[h.outcome]
                .iter()
                .any(|(t, how)| *how != "number" && t.len() <= h.len)
        }) {
            let o = if h.negated {
                outcomes
                    .iter()
                    .position(|o| o.id.eq_ignore_ascii_case("reject"))
                    .unwrap_or(h.outcome)
            } else {
                h.outcome
            };
            if o != chosen && !others.contains(&o) && (i == 0 || !is_word(norm[i - 1])) {
                others.push(o);
            }
            i += h.len.max(1);
        } else {
            i += 1;
        }
    }
    // "同意，驳回": the rest is just another outcome's word.
    let rest: String = norm[seg_end.min(norm.len())..]
        .iter()
        .collect::<String>()
        .trim_matches(|c: char| is_sep(c))
        .to_string();
    if !rest.is_empty() {
        let rest_chars: Vec<char> = rest.chars().collect();
        if let Some(h) = decision_hit(&rest_chars, &terms)
            && h.len == rest_chars.len()
            && h.outcome != chosen
            && !others.contains(&h.outcome)
        {
            others.push(h.outcome);
        }
    }
    if !others.is_empty() {
        reading.kind = ReplyKind::Ambiguous;
        reading.ambiguous = std::iter::once(chosen)
            .chain(others.iter().copied())
            .map(|o| outcomes[o].id.clone())
            .collect();
        reading.comment = reading.new_text.trim().to_string();
        reading.explanation.push(format!(
            "line {}: '{}' names {} different outcomes ({}): ambiguous, nothing decided",
            line_no + 1,
            line.trim(),
            reading.ambiguous.len(),
            reading.ambiguous.join(", ")
        ));
        return;
    }
    reading.kind = ReplyKind::Decision;
    reading.outcome = Some(outcomes[chosen].id.clone());
    reading.comment = comment_from(hit.len);
    reading.explanation.push(format!(
        "decision from line {}: '{word}' = outcome {} ({}{})",
        line_no + 1,
        outcomes[chosen].id,
        hit.how,
        if hit.negated { ", negated" } else { "" }
    ));
    if !reading.comment.is_empty() {
        reading.explanation.push(format!(
            "comment: {} characters after the decision word",
            reading.comment.chars().count()
        ));
    }
}

fn candidate_len(after: &str) -> usize {
    after
        .chars()
        .take_while(|c| !(c.is_whitespace() || *c == ',' || *c == ';' || *c == '，'))
        .count()
}

fn is_greeting(line: &str) -> bool {
    let l = line.trim().to_lowercase();
    let n = l.chars().count();
    n > 0
        && n <= 40
        && ["hi", "hello", "dear", "hey", "您好", "你好", "尊敬的"]
            .iter()
            .any(|g| l.starts_with(g))
        && (l.ends_with(',')
            || l.ends_with('，')
            || l.ends_with(':')
            || l.ends_with('：')
            || l.ends_with('!')
            || l.ends_with('！')
            || n <= 12)
}

// ---------------------------------------------------------------------------------------------
// New text: quotes, attribution lines, client headers and signatures removed.

/// Just the new text of a body (quotes, attribution lines, signatures removed) with the
/// reasons — for corpus measurement of body-only cases.
pub fn new_text(body: &str, html: bool) -> (String, Vec<String>) {
    let mut reasons = Vec::new();
    let text = if html {
        let (text, cut) = html_to_text(body, true);
        if let Some(why) = cut {
            reasons.push(format!("HTML: removed the quoted part from {why}"));
        }
        text
    } else {
        body.to_string()
    };
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.lines().collect();
    let n = lines.len();

    // 1. Where the quoted original starts.
    let mut cut: Option<(usize, String, usize)> = None;
    for i in 0..n {
        if let Some((why, span)) = quote_start(&lines, i) {
            cut = Some((i, why, span));
            break;
        }
    }
    let mut end = n;
    if let Some((i, why, span)) = &cut {
        // Bottom posting: nothing new above the quote, but text after it.
        let above_empty = lines[..*i]
            .iter()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('>'));
        if above_empty {
            let after = &lines[(i + span).min(n)..];
            let below: Vec<&str> = after
                .iter()
                .copied()
                .filter(|l| !l.trim_start().starts_with('>'))
                .collect();
            let below_text = below.iter().any(|l| !l.trim().is_empty());
            let quoted_below = after.iter().any(|l| l.trim_start().starts_with('>'));
            if below_text
                && (quoted_below || why.starts_with("attribution"))
                && !why.contains("header block")
                && !why.contains("separator")
            {
                reasons.push(format!(
                    "line {}: {why}; the new text is below the quote (bottom posting)",
                    i + 1
                ));
                let rest = strip_signature(&below, &mut reasons);
                return (rest.trim_matches('\n').trim_end().to_string(), reasons);
            }
        }
        reasons.push(format!(
            "stripped {} quoted lines starting at line {}: {why}",
            n - i,
            i + 1
        ));
        end = *i;
    }
    // 2. A trailing block of `>` lines (quotes inside the new text stay: the reader skips them).
    let mut kept: Vec<&str> = lines[..end].to_vec();
    let all_quoted = kept
        .iter()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('>'));
    if !all_quoted {
        let mut quoted = 0;
        while let Some(last) = kept.last() {
            let t = last.trim();
            if t.is_empty() {
                kept.pop();
            } else if t.starts_with('>') {
                quoted += 1;
                kept.pop();
            } else {
                break;
            }
        }
        if quoted > 0 {
            reasons.push(format!("stripped {quoted} trailing '>' quoted lines"));
        }
    }
    let out = strip_signature(&kept, &mut reasons);
    (out.trim_matches('\n').trim_end().to_string(), reasons)
}

fn strip_signature(lines: &[&str], reasons: &mut Vec<String>) -> String {
    let mut end = lines.len();
    // "-- " delimiter (and "--", "__").
    if let Some(i) = lines
        .iter()
        .position(|l| matches!(l.trim_end(), "--" | "-- " | "__" | "—") || *l == "-- ")
        && (i > 0 || lines.len() > 1)
    {
        reasons.push(format!(
            "stripped the signature from line {} ('-- ' delimiter)",
            i + 1
        ));
        end = i;
    }
    // A mobile signature followed only by short lines (more signatures, a name).
    if let Some(k) = (0..end).find(|&k| {
        is_mobile_signature(lines[k])
            && end - k <= 40
            && lines[k + 1..end]
                .iter()
                .all(|l| l.trim().chars().count() <= 100)
    }) && k > 0
    {
        reasons.push(format!(
            "stripped the signature from line {} ('{}')",
            k + 1,
            lines[k].trim()
        ));
        end = k;
    }
    // Trailing rules and tracking marks.
    while let Some(last) = lines[..end].iter().rposition(|l| !l.trim().is_empty()) {
        let t = lines[last].trim();
        if t.chars().all(|c| matches!(c, '-' | '_' | '=' | '*' | 'ᐧ')) {
            end = last;
        } else {
            break;
        }
    }
    // Mobile signatures at the end.
    while let Some(last) = lines[..end].iter().rposition(|l| !l.trim().is_empty()) {
        if is_mobile_signature(lines[last]) {
            reasons.push(format!(
                "stripped the signature '{}' (line {})",
                lines[last].trim(),
                last + 1
            ));
            end = last;
        } else {
            break;
        }
    }
    lines[..end].join("\n")
}

fn is_mobile_signature(line: &str) -> bool {
    let t = line.trim();
    let l = t.to_lowercase();
    if t.chars().count() > 80 {
        return false;
    }
    // "Sent from my desk, is much easier than …" is a sentence, not a signature.
    if let Some((_, after)) = t.split_once(", ")
        && after.split_whitespace().count() >= 6
    {
        return false;
    }
    const PREFIXES: &[&str] = &[
        "sent from my ",
        "sent from mail for windows",
        "sent from yahoo mail",
        "sent from outlook",
        "sent from samsung",
        "sent from mobile",
        "sent via ",
        "sent with ",
        "sent by ",
        "sent from ",
        "from my iphone",
        "from my android",
        "<<sent by",
        "(sent from",
        "verzonden met",
        "envoyé depuis",
        "diese nachricht wurde von",
        "get [outlook",
        "从我的",
        "get outlook for ",
        "sent from my",
        "发自我的",
        "发自网易邮箱",
        "发自手机",
        "来自我的",
        "從我的",
        "从我的",
        "來自我的",
        "寄自我的",
        "发自 ",
        "envoyé de mon",
        "enviado desde mi",
        "enviado do meu",
        "verstuurd vanaf mijn",
        "inviato da ",
        "skickat från min",
        "sendt fra min",
        "wysłane z ",
        "отправлено с ",
    ];
    PREFIXES.iter().any(|p| l.starts_with(p))
        || (l.starts_with("von meinem") && l.contains("gesendet"))
        || (l.starts_with("发自") && t.chars().count() <= 16)
}

const ATTRIBUTION_MARKERS: &[&str] = &[
    "wrote",
    "writes",
    "schrieb",
    "a écrit",
    "escribió",
    "escreveu",
    "schreef",
    "scritto",
    "napisał",
    "napisal",
    "skrev",
    "пишет",
    "написал",
    "написав",
    "kirjoitti",
    "yazdı",
    "írta",
    "napsal",
    "写道",
    "寫道",
    "写了",
    "έγραψε",
    "geschreven",
    "đã viết",
    " sent:",
    "kirjutas",
];

fn is_attribution(s: &str) -> bool {
    let t = s.trim();
    if t.chars().count() > 300 {
        return false;
    }
    let core = t
        .trim_matches(|c: char| c == '-' || c == '*' || c == '=' || c.is_whitespace())
        .to_lowercase();
    let dash_wrapped = t.starts_with("--") && t.ends_with("--");
    let ends_colon = core.ends_with(':') || core.ends_with('：');
    let evidence = core.chars().any(|c| c.is_ascii_digit()) || core.contains('@');
    let marker = ATTRIBUTION_MARKERS.iter().any(|m| core.contains(m));
    if marker && ((ends_colon && evidence) || dash_wrapped) {
        return true;
    }
    let first = core.chars().next().unwrap_or(' ');
    let weekday = [
        "mon,", "tue,", "wed,", "thu,", "fri,", "sat,", "sun,", "mon ", "tue ", "wed ", "thu ",
        "fri ", "sat ", "sun ",
    ]
    .iter()
    .any(|w| core.starts_with(w));
    if (first.is_ascii_digit() || weekday)
        && core.contains('@')
        && (ends_colon || core.ends_with('>'))
        && core.chars().count() < 200
    {
        return true;
    }
    if core.starts_with("on ") && evidence && ends_colon && core.chars().count() < 200 {
        return true;
    }
    // Gmail's "2016-03-03 17:21 GMT+01:00 Some One" with the address lost.
    let b: Vec<char> = core.chars().take(16).collect();
    b.len() == 16
        && b[4] == '-'
        && b[7] == '-'
        && b[13] == ':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 14, 15]
            .iter()
            .all(|&k| b[k].is_ascii_digit())
        && core.contains(" gmt")
        && core.chars().count() < 120
}

const FROM_KEYS: &[&str] = &[
    "from",
    "发件人",
    "發件人",
    "寄件者",
    "寄件人",
    "von",
    "de",
    "van",
    "od",
    "от",
    "fra",
    "från",
    "da",
    "lähettäjä",
];
const OTHER_KEYS: &[&str] = &[
    "sent",
    "date",
    "to",
    "subject",
    "cc",
    "发送时间",
    "發送時間",
    "日期",
    "时间",
    "時間",
    "收件人",
    "主题",
    "主題",
    "抄送",
    "寄件日期",
    "收件者",
    "主旨",
    "副本",
    "gesendet",
    "datum",
    "an",
    "betreff",
    "envoyé",
    "à",
    "objet",
    "enviado",
    "para",
    "asunto",
    "fecha",
    "verzonden",
    "aan",
    "onderwerp",
    "wysłano",
    "do",
    "temat",
    "отправлено",
    "кому",
    "тема",
    "дата",
    "sendt",
    "til",
    "emne",
    "skickat",
    "till",
    "ämne",
    "inviato",
    "a",
    "oggetto",
    "data",
    "reply-to",
];

/// The key of a "Key: value" header line ("*From:* x", "发件人：x"), lower case.
fn header_key(line: &str) -> Option<String> {
    let t = line.trim().trim_start_matches('*').trim_start();
    let idx = t.find([':', '：'])?;
    let key = t[..idx].trim().trim_end_matches('*').trim().to_lowercase();
    if key.is_empty() || key.chars().count() > 20 {
        return None;
    }
    Some(key)
}

fn is_separator(line: &str) -> Option<&'static str> {
    let t = line.trim().trim_matches('*').trim();
    let l = t.to_lowercase();
    let core = l.trim_matches(|c: char| c == '-' || c == '=' || c == '_' || c.is_whitespace());
    let dashed = t.starts_with("---") || t.starts_with("___") || t.starts_with("===");
    if dashed
        && [
            "original message",
            "original",
            "原始邮件",
            "原始郵件",
            "原邮件",
            "原始信息",
            "原始訊息",
            "回复的原邮件",
            "message d'origine",
            "ursprüngliche nachricht",
            "mensaje original",
            "oorspronkelijk bericht",
            "messaggio originale",
            "forwarded message",
            "转发邮件信息",
            "mensagem original",
            "opprinnelig melding",
            "ursprungligt meddelande",
            "исходное сообщение",
        ]
        .contains(&core)
    {
        return Some("'Original Message' separator");
    }
    if t.chars().count() >= 20 && t.chars().all(|c| c == '_') {
        return Some("Outlook separator line (________)");
    }
    if l == "begin forwarded message:" {
        return Some("forwarded message");
    }
    None
}

/// Why the quoted original starts at line `i`, if it does.
fn quote_start(lines: &[&str], i: usize) -> Option<(String, usize)> {
    let line = lines[i];
    let t = line.trim();
    if t.is_empty() {
        return None;
    }
    if let Some(why) = is_separator(t) {
        return Some((format!("{why} '{}'", shorten(t)), 1));
    }
    if is_attribution(t) {
        return Some((format!("attribution line '{}'", shorten(t)), 1));
    }
    // "On … wrote:" over two or three lines.
    if !t.starts_with('>') && t.chars().count() < 200 {
        let mut joined = t.to_string();
        let mut added = 0;
        for j in 1..=6 {
            let Some(next) = lines.get(i + j) else { break };
            let nt = next.trim();
            if nt.is_empty() {
                // Blank lines inside an attribution only before a wrapped address.
                let resumes = lines[i + j..]
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty())
                    .is_some_and(|l| l.starts_with('<') || l.starts_with("mailto:"));
                if resumes {
                    continue;
                }
                break;
            }
            // A wrapped "<address>" may leave "> wrote:" or ">:" on its own line.
            let wrapped_end = nt.starts_with('>')
                && (nt.ends_with(':') || nt.ends_with('：'))
                && nt.chars().count() <= 16;
            if (nt.starts_with('>') && !wrapped_end) || added == 3 {
                break;
            }
            added += 1;
            joined.push(' ');
            joined.push_str(nt);
            if is_attribution(&joined) && starts_attribution(t) {
                return Some((
                    format!("attribution over {} lines '{}'", j + 1, shorten(&joined)),
                    j + 1,
                ));
            }
        }
    }
    // A "From: / Sent:" header block.
    if let Some(key) = header_key(t)
        && (FROM_KEYS.contains(&key.as_str())
            || ["date", "sent", "发送时间", "日期"].contains(&key.as_str()))
    {
        let mut others = 0;
        let mut second = String::new();
        for next in lines.iter().skip(i + 1).take(6) {
            if next.trim().is_empty() {
                continue;
            }
            if let Some(k) = header_key(next)
                && k != key
                && (OTHER_KEYS.contains(&k.as_str()) || FROM_KEYS.contains(&k.as_str()))
            {
                others += 1;
                if second.is_empty() {
                    second = k;
                }
            }
        }
        if others >= 1 {
            return Some((
                format!(
                    "{} header block ({key}:/{second}:)",
                    if key.is_ascii() {
                        "Outlook"
                    } else {
                        "mail client"
                    }
                ),
                1,
            ));
        }
    }
    None
}

fn starts_attribution(t: &str) -> bool {
    let l = t.to_lowercase();
    [
        "on ", "le ", "am ", "el ", "op ", "em ", "il ", "w dniu", "den ", "在", "於", "于", "2",
        "1",
    ]
    .iter()
    .any(|p| l.starts_with(p))
        || l.chars().next().is_some_and(|c| c.is_ascii_digit())
        || (l.contains('@') && ATTRIBUTION_MARKERS.iter().any(|m| l.contains(m)))
}

fn shorten(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() > 60 {
        format!("{}…", chars[..60].iter().collect::<String>())
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// HTML to text.

/// Converts HTML to plain text: block elements become line breaks, entities are decoded,
/// `<blockquote>` content becomes `> ` lines. With `cut_quotes`, output stops at the first quote
/// container (gmail_quote, divRplyFwdMsg, moz-cite-prefix, blockquote, yahoo_quoted …) and the
/// returned reason names it.
fn html_to_text(html: &str, cut_quotes: bool) -> (String, Option<String>) {
    let mut out = String::new();
    let mut depth_quote = 0usize;
    let mut skip_until: Option<&'static str> = None;
    let mut pending_space = false;
    let mut at_line_start = true;
    let bytes = html;
    let mut i = 0;
    let push_newline = |out: &mut String, at_line_start: &mut bool, depth: usize| {
        out.push('\n');
        *at_line_start = true;
        let _ = depth;
    };
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with("<!--") {
            i += rest.find("-->").map(|e| e + 3).unwrap_or(rest.len());
            continue;
        }
        if rest.starts_with('<') {
            let Some(end) = tag_end(rest) else {
                break;
            };
            let tag = &rest[1..end];
            i += end + 1;
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == ':')
                .collect::<String>()
                .to_lowercase();
            if let Some(until) = skip_until {
                if closing && name == until {
                    skip_until = None;
                }
                continue;
            }
            if !closing && matches!(name.as_str(), "style" | "script" | "head" | "title") {
                skip_until = Some(match name.as_str() {
                    "style" => "style",
                    "script" => "script",
                    "head" => "head",
                    _ => "title",
                });
                continue;
            }
            if cut_quotes && !closing {
                let lower = tag.to_lowercase();
                let marker = [
                    ("gmail_quote", "Gmail quote container (gmail_quote)"),
                    ("divrplyfwdmsg", "Outlook reply header (divRplyFwdMsg)"),
                    (
                        "moz-cite-prefix",
                        "Thunderbird attribution (moz-cite-prefix)",
                    ),
                    ("yahoo_quoted", "Yahoo quote container"),
                    ("appendonsend", "Outlook quote marker (appendonsend)"),
                    ("mail-quote", "quote container (mail-quote)"),
                    ("ntes-mailmaster-quote", "NetEase Mail Master quote"),
                    ("qqmail_quote", "QQ Mail quote"),
                    ("readmsgbody", "quoted message container"),
                ]
                .iter()
                .find(|(m, _)| lower.contains(m));
                if let Some((_, why)) = marker {
                    return (out, Some((*why).to_string()));
                }
                if name == "blockquote" {
                    return (out, Some("HTML <blockquote>".to_string()));
                }
                if name == "hr" && lower.contains("tabindex") {
                    return (out, Some("Outlook reply separator (<hr>)".to_string()));
                }
            }
            match name.as_str() {
                "br" => push_newline(&mut out, &mut at_line_start, depth_quote),
                "blockquote" => {
                    if closing {
                        depth_quote = depth_quote.saturating_sub(1);
                    } else {
                        depth_quote += 1;
                    }
                    if !at_line_start {
                        push_newline(&mut out, &mut at_line_start, depth_quote);
                    }
                }
                "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table"
                | "ul" | "ol" | "pre" | "hr" | "dd" | "dt" => {
                    if !at_line_start {
                        push_newline(&mut out, &mut at_line_start, depth_quote);
                    }
                    if name == "p" && closing {
                        push_newline(&mut out, &mut at_line_start, depth_quote);
                    }
                }
                "td" | "th" => pending_space = true,
                _ => {}
            }
            pending_space = pending_space && !at_line_start;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        let (ch, len) = if c == '&' {
            decode_entity(rest)
        } else {
            (c, c.len_utf8())
        };
        i += len;
        if skip_until.is_some() {
            continue;
        }
        if ch.is_whitespace() && ch != '\u{a0}' {
            if !at_line_start {
                pending_space = true;
            }
            continue;
        }
        if at_line_start && depth_quote > 0 {
            for _ in 0..depth_quote {
                out.push('>');
            }
            out.push(' ');
        }
        if pending_space && !at_line_start {
            out.push(' ');
        }
        pending_space = false;
        at_line_start = false;
        out.push(if ch == '\u{a0}' { ' ' } else { ch });
    }
    (out, None)
}

fn tag_end(s: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in s.char_indices().skip(1) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '>' => return Some(i),
            None => {}
        }
    }
    None
}

fn decode_entity(s: &str) -> (char, usize) {
    let Some(semi) = s
        .char_indices()
        .take(12)
        .find(|(_, c)| *c == ';')
        .map(|(i, _)| i)
    else {
        return ('&', 1);
    };
    let name = &s[1..semi];
    let c = match name {
        "nbsp" => Some('\u{a0}'),
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "mdash" => Some('—'),
        "ndash" => Some('–'),
        "hellip" => Some('…'),
        "rsquo" => Some('’'),
        "lsquo" => Some('‘'),
        "ldquo" => Some('“'),
        "rdquo" => Some('”'),
        "copy" => Some('©'),
        _ => {
            if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(dec) = name.strip_prefix('#') {
                dec.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                None
            }
        }
    };
    match c {
        Some(c) => (c, semi + 1),
        None => ('&', 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ab() -> Vec<OutcomeWords> {
        OutcomeWords::defaults(&["approve", "reject"])
    }

    fn body_reading(body: &str, outcomes: &[OutcomeWords]) -> ReplyReading {
        let raw = format!(
            "From: Mary <Mary@Example.com>\r\nTo: approvals@example.com\r\nSubject: Re: x\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
        );
        read_reply(raw.as_bytes(), outcomes, None)
    }

    #[test]
    fn keywords_numbers_and_full_width() {
        for (body, outcome, comment) in [
            ("同意！", "approve", ""),
            ("Approve.", "approve", ""),
            ("OK,", "approve", ""),
            ("１", "approve", ""),
            ("２\n预算超了", "reject", "预算超了"),
            ("ＡＰＰＲＯＶＥ", "approve", ""),
            ("同意，预算合理", "approve", "预算合理"),
            ("Reject - budget too high", "reject", "budget too high"),
            ("lgtm\n\nthanks", "approve", "thanks"),
            ("驳回：发票缺失", "reject", "发票缺失"),
            ("No problem, go ahead", "approve", "go ahead"),
            ("No objections.", "approve", ""),
            ("No, too expensive", "reject", "too expensive"),
        ] {
            let r = body_reading(body, &ab());
            assert_eq!(r.kind, ReplyKind::Decision, "{body}: {r:#?}");
            assert_eq!(r.outcome.as_deref(), Some(outcome), "{body}");
            assert_eq!(r.comment, comment, "{body}");
        }
    }

    #[test]
    fn negations_never_approve() {
        for body in [
            "不同意",
            "不批准",
            "不可以",
            "不通过",
            "不 同意",
            "not approved",
            "Not approve",
            "don't approve",
            "do not approve",
            "I do not approve this",
            "I don't approve",
            "不同意！预算太高",
            "NOT APPROVED.",
            "Not OK",
            "don't approve!",
            "不通過",
            "不予批准",
            "不批准，材料不全",
            "ｎｏｔ ａｐｐｒｏｖｅｄ",
            "Do NOT approve - vendor not on the list",
        ] {
            let r = body_reading(body, &ab());
            assert_ne!(r.outcome.as_deref(), Some("approve"), "{body}: {r:#?}");
            assert_eq!(r.outcome.as_deref(), Some("reject"), "{body}: {r:#?}");
            let only_approve = OutcomeWords::defaults(&["approve"]);
            let r = body_reading(body, &only_approve);
            assert_ne!(r.outcome.as_deref(), Some("approve"), "{body}: {r:#?}");
            assert_ne!(r.kind, ReplyKind::Decision, "{body}: {r:#?}");
        }
    }

    #[test]
    fn negated_approvals_before_and_after_the_word_never_approve() {
        for (body, comment) in [
            ("同意不了", ""),
            ("批准不了，预算超标", "预算超标"),
            ("通过不了", ""),
            ("同意不了 预算超了", "预算超了"),
            ("批准不下来", ""),
            ("不能同意", ""),
            ("无法同意。", ""),
            ("没法批准", ""),
            ("沒法批准", ""),
            ("暂不同意，等下个季度", "等下个季度"),
            ("未批准", ""),
            ("can't approve", ""),
            ("Can’t approve, receipts missing", "receipts missing"),
            ("cannot approve", ""),
            ("can not approve", ""),
            ("won't approve", ""),
            ("I can't approve this", "this"),
            ("We cannot approve.", ""),
            ("Sorry, I can't approve", ""),
            ("unable to approve", ""),
            ("Disagree", ""),
        ] {
            let r = body_reading(body, &ab());
            assert_eq!(r.kind, ReplyKind::Decision, "{body}: {r:#?}");
            assert_eq!(r.outcome.as_deref(), Some("reject"), "{body}: {r:#?}");
            assert_eq!(r.comment, comment, "{body}");
            let only_approve = OutcomeWords::defaults(&["approve"]);
            let r = body_reading(body, &only_approve);
            assert_ne!(r.outcome.as_deref(), Some("approve"), "{body}: {r:#?}");
        }
        // What must keep approving: a comment that merely contains 不.
        for (body, comment) in [
            ("同意，不得超过预算", "不得超过预算"),
            ("同意 不过下次早点提交", "不过下次早点提交"),
            ("没问题", ""),
            ("没有问题", ""),
            ("可以", ""),
            ("OK, can't wait", "can't wait"),
        ] {
            let r = body_reading(body, &ab());
            assert_eq!(r.outcome.as_deref(), Some("approve"), "{body}: {r:#?}");
            assert_eq!(r.comment, comment, "{body}");
        }
    }

    #[test]
    fn a_dsn_names_the_returned_mail_and_the_servers_answer() {
        let dsn = "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\r\n\
            To: approvals@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n\
            Message-ID: <dsn.2@mx.example.com>\r\nMIME-Version: 1.0\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
            --b\r\nContent-Type: message/delivery-status\r\n\r\n\
            Reporting-MTA: dns; mx.example.com\r\n\r\n\
            Final-Recipient: rfc822; mary@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n\
            Diagnostic-Code: smtp; 550 5.1.1 <mary@example.com>: Recipient address\r\n rejected: User unknown\r\n\
            \r\n--b\r\nContent-Type: message/rfc822\r\n\r\n\
            From: approvals@example.com\r\nTo: mary@example.com\r\n\
            Message-ID: <rf.abcdefghijklm.1@example.com>\r\nSubject: x\r\n\r\nbody\r\n--b--\r\n";
        let r = read_reply(dsn.as_bytes(), &ab(), None);
        assert_eq!(r.kind, ReplyKind::Bounce);
        let b = r.bounce.expect("a bounce report");
        assert_eq!(b.original_message_ids, ["rf.abcdefghijklm.1@example.com"]);
        assert_eq!(b.recipient, "mary@example.com");
        assert!(b.failed);
        assert_eq!(
            b.diagnostic,
            "550 5.1.1 <mary@example.com>: Recipient address rejected: User unknown"
        );
        assert!(
            r.explanation
                .iter()
                .any(|l| l.contains("rf.abcdefghijklm.1@example.com")),
            "{:?}",
            r.explanation
        );

        // The corpus' DSN returns only the headers (text/rfc822-headers), no Diagnostic-Code.
        let raw = std::fs::read(format!(
            "{}/tests/replies/bounce_dsn.eml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("bounce_dsn.eml");
        let b = read_reply(&raw, &ab(), None)
            .bounce
            .expect("a bounce report");
        assert_eq!(b.original_message_ids, ["rf.k3x9q2abmn4p5.2@example.com"]);
        assert_eq!(b.diagnostic, "550 5.1.1 User unknown", "{b:?}");

        // The returned message itself (message/rfc822), as Gmail's DSN carries it.
        let raw = std::fs::read(format!(
            "{}/tests/replies/bounce_dsn_rfc822.eml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("bounce_dsn_rfc822.eml");
        let b = read_reply(&raw, &ab(), None)
            .bounce
            .expect("a bounce report");
        assert_eq!(b.original_message_ids, ["rf.k3x9q2abmn4p5.2@example.com"]);
        assert_eq!(b.recipient, "zhang.wei@example.com");
        assert_eq!(
            b.diagnostic,
            "552 5.2.2 The email account that you tried to reach is over quota"
        );

        // A delay notice is not a failure.
        let delayed = dsn.replace("Action: failed", "Action: delayed");
        let b = read_reply(delayed.as_bytes(), &ab(), None)
            .bounce
            .expect("report");
        assert!(!b.failed);

        // A plain mailer-daemon notice quoting the returned headers, threaded under ours.
        let plain = "From: MAILER-DAEMON@mx.example.com\r\nTo: approvals@example.com\r\n\
            Subject: failure notice\r\nIn-Reply-To: <rf.nopqrstuvwxyz.1@example.com>\r\n\r\n\
            Sorry, we were unable to deliver your message.\r\n\
            <fred@example.com>: 552 5.2.2 Mailbox full\r\n\r\n--- Below this line is a copy of the message.\r\n\r\n\
            Message-ID: <rf.zyxwvutsrqpon.3@example.com>\r\nSubject: x\r\n";
        let r = read_reply(plain.as_bytes(), &ab(), None);
        assert_eq!(r.kind, ReplyKind::Bounce);
        let b = r.bounce.expect("report");
        assert_eq!(
            b.original_message_ids,
            [
                "rf.nopqrstuvwxyz.1@example.com",
                "rf.zyxwvutsrqpon.3@example.com"
            ]
        );
        assert_eq!(b.diagnostic, "552 5.2.2 Mailbox full");
    }

    #[test]
    fn authentication_results_are_trusted_only_from_our_authserv_id() {
        let dkim = InboundAuth::from_settings(Some("MX.Example.com"), "dkim").unwrap();
        let dmarc = InboundAuth::from_settings(Some("mx.example.com"), "dmarc").unwrap();
        let ours_pass = "mx.example.com; dkim=pass (2048-bit key) header.d=example.com \
            header.i=@example.com header.s=s1 header.b=abc; spf=pass smtp.mailfrom=example.com; \
            dmarc=pass (p=reject dis=none) header.from=example.com"
            .to_string();
        let forged = "evil.example; dkim=pass header.d=example.com; dmarc=pass".to_string();
        let ours_fail =
            "mx.example.com 1; dkim=fail reason=\"bad; sig\" header.d=example.com; dmarc=fail"
                .to_string();
        // From a subdomain of the signing domain: a parent domain's signature counts.
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@example.com")
                .is_ok()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@hq.example.com")
                .is_ok()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@example.org")
                .is_err()
        );
        assert!(
            dkim.check(std::slice::from_ref(&ours_pass), "mary@badexample.com")
                .is_err()
        );
        assert!(
            dmarc
                .check(std::slice::from_ref(&ours_pass), "mary@example.com")
                .is_ok()
        );
        // A signature by another domain (the sender's provider) is not the From domain's.
        let other = "mx.example.com; dkim=pass header.d=mailchimp.com".to_string();
        assert!(dkim.check(&[other], "mary@example.com").is_err());
        // Anyone can write an Authentication-Results header: only ours is read.
        let why = dkim
            .check(std::slice::from_ref(&forged), "mary@example.com")
            .unwrap_err();
        assert!(
            why.contains("no Authentication-Results from mx.example.com"),
            "{why}"
        );
        assert!(
            dmarc
                .check(&[forged.clone(), ours_fail.clone()], "mary@example.com")
                .is_err()
        );
        let why = dkim.check(&[ours_fail], "mary@example.com").unwrap_err();
        assert!(why.contains("dkim=fail"), "{why}");
        assert!(dkim.check(&[], "mary@example.com").is_err());
        // Nothing required: everything passes.
        let none = InboundAuth::from_settings(None, "none").unwrap();
        assert!(none.check(&[forged], "mary@example.com").is_ok());
        // Configuration errors name the key.
        let e = InboundAuth::from_settings(Some("mx"), "spf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mail.require_auth"), "{e}");
        let e = InboundAuth::from_settings(None, "dmarc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mail.authserv_id"), "{e}");
    }

    #[test]
    fn a_forged_authentication_results_below_ours_does_not_count() {
        let dkim = InboundAuth::from_settings(Some("mx.example.com"), "dkim").unwrap();
        let ours_fail = "mx.example.com; dkim=fail header.d=example.com".to_string();
        let forged_below = "mx.example.com; dkim=pass header.d=example.com".to_string();
        // Ours is on top (prepended by our MTA); the sender's forgery, with our id, below it.
        let why = dkim
            .check(
                &[ours_fail.clone(), forged_below.clone()],
                "mary@example.com",
            )
            .unwrap_err();
        assert!(why.contains("dkim=fail"), "{why}");
        assert!(
            dkim.check(&[forged_below, ours_fail], "mary@example.com")
                .is_ok()
        );
    }

    #[test]
    fn a_dkim_signature_by_a_public_suffix_vouches_for_nobody() {
        let dkim = InboundAuth::from_settings(Some("mx.example.com"), "dkim").unwrap();
        for (signer, from) in [
            ("com", "mary@x.com"),
            ("co.uk", "mary@x.co.uk"),
            ("github.io", "mary@x.github.io"),
            ("uk", "mary@x.co.uk"),
        ] {
            let header = format!("mx.example.com; dkim=pass header.d={signer}");
            assert!(
                dkim.check(&[header], from).is_err(),
                "header.d={signer} must not pass for {from}"
            );
        }
        for (signer, from) in [
            ("x.co.uk", "mary@hq.x.co.uk"),
            ("x.com", "mary@x.com"),
            ("x.github.io", "mary@x.github.io"),
        ] {
            let header = format!("mx.example.com; dkim=pass header.d={signer}");
            assert!(dkim.check(&[header], from).is_ok(), "{signer} for {from}");
        }
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
    fn ambiguous_delegate_and_nothing() {
        for body in ["同意 驳回", "approve or reject?", "同意/驳回", "同意，驳回"] {
            let r = body_reading(body, &ab());
            assert_eq!(r.kind, ReplyKind::Ambiguous, "{body}: {r:#?}");
            assert_eq!(r.ambiguous.len(), 2, "{body}");
            assert_eq!(r.outcome, None);
        }
        let r = body_reading("转交 bob@example.com 他更了解", &ab());
        assert_eq!(r.kind, ReplyKind::Delegate);
        assert_eq!(r.delegate_to.as_deref(), Some("bob@example.com"));
        assert_eq!(r.comment, "他更了解");
        let r = body_reading("Delegate <bob@example.com>", &ab());
        assert_eq!(r.delegate_to.as_deref(), Some("bob@example.com"));
        for body in ["", "Thanks, will look tomorrow", "Not now", "\n\n-- \nMary"] {
            let r = body_reading(body, &ab());
            assert_eq!(r.kind, ReplyKind::NoDecision, "{body:?}: {r:#?}");
        }
    }

    #[test]
    fn return_outcome() {
        let o = OutcomeWords::defaults(&["approve", "reject", "return"]);
        for (body, want) in [
            ("退回修改", "return"),
            ("退回", "return"),
            ("3", "return"),
            ("send back", "return"),
        ] {
            let r = body_reading(body, &o);
            assert_eq!(r.outcome.as_deref(), Some(want), "{body}");
        }
        let r = body_reading("退回", &ab());
        assert_eq!(r.outcome.as_deref(), Some("reject"));
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
