//! HTML bodies to plain text for the reply reader, stopping at the first quote container
//! when asked, so that an HTML-only reply reads like a text one.

/// Converts HTML to plain text: block elements become line breaks, entities are decoded,
/// `<blockquote>` content becomes `> ` lines. With `cut_quotes`, output stops at the first quote
/// container (gmail_quote, divRplyFwdMsg, moz-cite-prefix, blockquote, yahoo_quoted …) and the
/// returned reason names it.
pub(super) fn html_to_text(html: &str, cut_quotes: bool) -> (String, Option<String>) {
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
