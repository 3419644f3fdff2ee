//! Mail that is not an approver's answer: delivery status reports and mailer-daemon notices
//! (which of our mails came back, and why), and auto-replies (out-of-office and the like).

use mail_parser::MimeHeaders;

use super::{Correlation, header_text};

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

/// Which mail a bounce returns and why. Reads the DSN parts (RFC 3464: message/delivery-status,
/// the returned message/rfc822 or text/rfc822-headers), then the bounce's own headers, then the
/// human-readable text of a plain mailer-daemon notice (which quotes the returned headers).
pub(super) fn bounce_report(msg: &mail_parser::Message<'_>, c: &Correlation) -> BounceReport {
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

pub(super) fn auto_reply_reason(msg: &mail_parser::Message<'_>, subject: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::ab;
    use super::super::*;

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
}
