//! The reply convention (DESIGN §5): which words, numbers and labels select an outcome, how a
//! negation ("不同意", "can't approve") turns one into its opposite, and how the first meaningful
//! line of the new text becomes a decision, a delegation, an ambiguity or nothing.

use super::{ReplyKind, ReplyReading, is_token_line};

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

/// Fills kind/outcome/comment from the new text.
pub(super) fn decide(reading: &mut ReplyReading, outcomes: &[OutcomeWords]) {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{ab, body_reading};
    use super::*;

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
}
