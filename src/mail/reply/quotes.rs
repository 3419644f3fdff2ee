//! The NEW text of a reply: the quoted original, attribution lines ("On … wrote:"), client
//! header blocks, separators and signatures removed, each removal explained.

use super::html::html_to_text;

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
