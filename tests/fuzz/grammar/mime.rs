//! MIME messages for the inbound target: headers a mail client or a forger writes (From
//! variants, plus-address tokens, encoded words, `Authentication-Results`), bodies in every
//! transfer encoding (some broken) and charset, and nesting: multiparts, `message/rfc822`,
//! delivery reports — sometimes thousands of levels deep.
use rand::RngExt as _;

use super::{CHARSETS, Gen};

impl Gen<'_> {
    // ------------------------------------------------------------------ MIME

    fn header(&mut self, name: &str, value: &str) -> String {
        let value = if self.chance(0.1) {
            // Encoded word, possibly broken.
            format!(
                "=?{}?{}?{}?=",
                self.pick(CHARSETS),
                self.pick(&["B", "Q", "b", "X"]),
                self.pick(&["5ZCM5oSP", "=E5=90=8C=E6=84=8F", "???", "", "====", "xx"])
            )
        } else {
            value.to_owned()
        };
        let fold = if self.chance(0.1) { "\r\n\t" } else { " " };
        format!("{name}:{fold}{value}\r\n")
    }

    pub(super) fn message(&mut self, depth: usize) -> Vec<u8> {
        let mut m: Vec<u8> = Vec::new();
        let from = self.pick(&[
            "Mary <mary@example.com>",
            "mary@example.com",
            "x.@example.org",
            "\"a,b\" <a@b>",
            "<>",
            "undisclosed-recipients:;",
            "Mary",
            "MAILER-DAEMON@example.com",
            "a@b, c@d",
            "=?utf-8?B?5ZCM?= <m@x>",
            "(comment) m@x",
            "m@[127.0.0.1]",
            "@",
            "",
        ]);
        let from_header = self.header("From", from);
        m.extend_from_slice(from_header.as_bytes());
        if self.chance(0.05) {
            let again = self.header("From", "other@example.com");
            m.extend_from_slice(again.as_bytes());
        }
        let token = self.token();
        let to = format!("box+{token}@example.com");
        let mut headers = vec![
            ("To", to),
            (
                "Subject",
                format!("Re: [RF-{}] {}", &self.token()[..8], self.text()),
            ),
            ("Message-ID", format!("<{}@example.com>", self.token())),
            (
                "In-Reply-To",
                format!("<rf.{}.1@example.com>", &self.token()[2..15]),
            ),
            (
                "References",
                (0..self.count(2, 500))
                    .map(|_| "<rf.aaaaaaaaaaaaa.1@x>")
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            (
                "Authentication-Results",
                format!(
                    "{}; dkim={} header.d={}; dmarc={} header.from={}",
                    self.pick(&[
                        "mx.example.com",
                        "evil.example",
                        "",
                        "mx.example.com (comment)"
                    ]),
                    self.pick(&["pass", "fail", "none", ""]),
                    self.pick(&["example.com", "com", "", ".", "co.uk"]),
                    self.pick(&["pass", "fail"]),
                    self.pick(&["example.com", "example.org", ""]),
                ),
            ),
            (
                "Auto-Submitted",
                self.pick(&["no", "auto-replied", "auto-generated", ""])
                    .to_owned(),
            ),
            ("Delivered-To", format!("box+{}@example.com", self.token())),
            (
                "Date",
                self.pick(&[
                    "Mon, 5 Jan 2026 10:00:00 +0800",
                    "garbage",
                    "Mon, 99 Foo 99999 99:99:99 +9999",
                ])
                .to_owned(),
            ),
            ("X-Autoreply", "yes".to_owned()),
            (
                "Precedence",
                self.pick(&["bulk", "auto_reply", "list"]).to_owned(),
            ),
            (
                "Cc",
                self.pick(&["a@b", "box+aaa@example.com", ""]).to_owned(),
            ),
        ];
        let keep = 3 + self.below(headers.len());
        headers.truncate(keep);
        for (name, value) in headers {
            if self.chance(0.8) {
                let line = self.header(name, &value);
                m.extend_from_slice(line.as_bytes());
            }
        }
        m.extend_from_slice(&self.entity(depth));
        m
    }

    /// Content-Type (+ encoding) headers, the blank line and the body of one MIME entity.
    fn entity(&mut self, depth: usize) -> Vec<u8> {
        let mut m = Vec::new();
        let nest = depth < 3 || (depth < 4000 && self.chance(0.02));
        let kind = if nest { self.below(8) } else { self.below(3) };
        match kind {
            0..=2 => {
                let html = kind == 2;
                let charset = self.pick(CHARSETS);
                let body = if html {
                    self.html_body()
                } else {
                    self.reply_body()
                };
                m.extend_from_slice(
                    format!(
                        "Content-Type: text/{}; charset={charset}\r\n",
                        if html { "html" } else { "plain" }
                    )
                    .as_bytes(),
                );
                match self.below(4) {
                    0 => {
                        m.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
                        let mut encoded = base64(body.as_bytes());
                        if self.chance(0.2) {
                            encoded.insert_str(
                                encoded.len() / 2,
                                self.pick(&["!", "=", "\r\n", "===="]),
                            );
                        }
                        m.extend_from_slice(encoded.as_bytes());
                    }
                    1 => {
                        m.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
                        m.extend_from_slice(quoted_printable(body.as_bytes()).as_bytes());
                        if self.chance(0.2) {
                            m.extend_from_slice(self.pick(&["=", "=Z", "=\r\n", "=4"]).as_bytes());
                        }
                    }
                    2 => {
                        // Raw bytes that the charset may or may not decode.
                        m.extend_from_slice(b"\r\n");
                        let junk: Vec<u8> =
                            (0..self.count(16, 2000)).map(|_| self.0.random()).collect();
                        m.extend_from_slice(body.as_bytes());
                        m.extend_from_slice(&junk);
                    }
                    _ => {
                        m.extend_from_slice(b"\r\n");
                        m.extend_from_slice(body.as_bytes());
                    }
                }
            }
            3..=5 => {
                let subtype = self.pick(&[
                    "mixed",
                    "alternative",
                    "report; report-type=delivery-status",
                    "related",
                    "signed",
                ]);
                let boundary = self
                    .pick(&["b", "==b==", "", "\"quoted b\"", "b b", "-"])
                    .to_owned();
                let bare = boundary.trim_matches('"').to_owned();
                m.extend_from_slice(
                    format!(
                        "Content-Type: multipart/{subtype}; boundary={boundary}\r\n\r\npreamble\r\n"
                    )
                    .as_bytes(),
                );
                let parts = if depth > 3 { 1 } else { 1 + self.count(3, 60) };
                for _ in 0..parts {
                    m.extend_from_slice(format!("--{bare}\r\n").as_bytes());
                    m.extend_from_slice(&self.entity(depth + 1));
                    m.extend_from_slice(b"\r\n");
                }
                if self.chance(0.8) {
                    m.extend_from_slice(format!("--{bare}--\r\n").as_bytes());
                }
            }
            6 => {
                m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
                m.extend_from_slice(&self.message(depth + 1));
            }
            _ => {
                m.extend_from_slice(b"Content-Type: message/delivery-status\r\n\r\n");
                let dsn = format!(
                    "Reporting-MTA: dns; mx.example.com\r\n\r\nFinal-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\nDiagnostic-Code: smtp; {}\r\nOriginal-Message-ID: <rf.{}.1@example.com>\r\n",
                    self.pick(&["mary@example.com", "", "<>", "x.@example.org"]),
                    self.pick(&["failed", "delayed", "delivered", ""]),
                    self.pick(&["5.1.1", "4.0.0", "x", ""]),
                    self.text(),
                    &self.token()[2..15],
                );
                m.extend_from_slice(dsn.as_bytes());
            }
        }
        m
    }
}

fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, chunk) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * k)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::new();
    let mut col = 0;
    for &b in data {
        if col > 70 {
            out.push_str("=\r\n");
            col = 0;
        }
        if b == b'\n' {
            out.push_str("\r\n");
            col = 0;
        } else if (33..=126).contains(&b) && b != b'=' {
            out.push(char::from(b));
            col += 1;
        } else {
            out.push_str(&format!("={b:02X}"));
            col += 3;
        }
    }
    out
}
