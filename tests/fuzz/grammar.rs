//! Structure-aware generators: inputs that get past the first syntax check of each target, so
//! that the run spends its time deep in the code (graph checks, CEL checking, quote stripping,
//! MIME walking) rather than on the first byte. Every generator sometimes goes to extremes —
//! thousands of nested elements, parts or parentheses, chains of thousands of terms — because
//! that is where recursive code overflows its stack.
use rand::{RngExt as _, rngs::StdRng};

use super::targets::Target;

mod mime;

pub(crate) fn generate(target: Target, rng: &mut StdRng) -> Vec<u8> {
    let mut g = Gen(rng);
    match target {
        Target::Definition => g.definition(),
        Target::Condition => g.cel(0).into_bytes(),
        Target::Reply => g.reply_input().into_bytes(),
        Target::Token => g.token_text().into_bytes(),
        Target::Inbound => g.message(0),
    }
}

/// Words each target's mutations insert.
pub(crate) fn dictionary(target: Target) -> &'static [&'static str] {
    match target {
        Target::Definition => &[
            "<bpmn:userTask id=\"t\">",
            "</bpmn:userTask>",
            "<bpmn:sequenceFlow id=\"f\" sourceRef=\"a\" targetRef=\"b\"/>",
            "<bpmn:exclusiveGateway id=\"g\" default=\"f\"/>",
            "<bpmn:conditionExpression>",
            "xmlns:x=\"urn:x\"",
            "<x:y>",
            "<![CDATA[",
            "]]>",
            "&amp;",
            "&#0;",
            "&#x1F600;",
            "<!DOCTYPE d [<!ENTITY e \"eee\">]>",
            "&e;",
            "replyflow:validFor=\"P99999999999D\"",
            "replyflow:assignee=\"${",
        ],
        Target::Condition => &[
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ".",
            ",",
            "?",
            ":",
            "!",
            "-",
            "+",
            "*",
            "/",
            "%",
            "==",
            "&&",
            "||",
            " in ",
            "size(",
            "has(",
            ".map(x,",
            ".all(x,",
            "\"",
            "'",
            "\"\"\"",
            "b'",
            "r'",
            "\\u",
            "\\x",
            "9223372036854775807",
            "18446744073709551615u",
            "1e308",
            "amount",
            "manager_approval.outcome",
            "null",
            "true",
            "dyn(",
            "int(",
            "double(",
        ],
        Target::Reply | Target::Inbound => &[
            "同意",
            "不同意",
            "驳回",
            "approve",
            "reject",
            "not approved",
            "1",
            "２",
            "转交 ",
            "delegate ",
            "> ",
            "\n--\n",
            "\n-- \n",
            "On Mon wrote:\n",
            "在 2026年1月1日 写道：\n",
            "-----Original Message-----\n",
            "发件人:",
            "From:",
            "Sent:",
            "<blockquote>",
            "</blockquote>",
            "<div>",
            "</div>",
            "<br>",
            "&nbsp;",
            "&#x5408;",
            "=?utf-8?B?",
            "=?gbk?Q?",
            "?=",
            "Content-Type: multipart/mixed; boundary=b\r\n",
            "\r\n--b\r\n",
            "\r\n--b--\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "=C2=A0",
            "=\r\n",
            "Authentication-Results: ",
            "dkim=pass header.d=",
            "Auto-Submitted: auto-replied\r\n",
        ],
        Target::Token => &[
            "aa",
            "ah",
            "77",
            "Token: ",
            "回复凭证: ",
            "box+",
            "@example.com",
            "0",
            "1",
            "8",
            "9",
        ],
    }
}

struct Gen<'a>(&'a mut StdRng);

const APPROVE: &[&str] = &[
    "同意",
    "批准",
    "通过",
    "可以",
    "好的",
    "没问题",
    "approve",
    "Approved.",
    "OK",
    "lgtm",
    "yes",
    "Agree!",
    "同意！",
    "1",
    "１",
    "没有问题",
];
const REJECT: &[&str] = &[
    "驳回",
    "不同意",
    "reject",
    "no",
    "denied",
    "拒绝",
    "不行",
    "2",
    "２",
];
const NEGATIONS: &[&str] = &[
    "不", "不能", "没法", "not ", "don't ", "can't ", "won't ", "不予",
];
const OTHER: &[&str] = &[
    "退回",
    "return",
    "send back",
    "转交 fred@example.com",
    "delegate fred@example.com",
    "delegate x.@example.org",
    "转交",
    "?",
    "请再确认一下金额",
    "see below",
    "",
];
const IDENTS: &[&str] = &[
    "amount",
    "manager_approval",
    "outcome",
    "reason",
    "initiator",
    "x",
    "y",
    "_",
    "size",
    "in",
    "null",
    "true",
    "as",
    "break",
    "const",
    "let",
    "has",
    "dyn",
    "int",
    "金额",
];
const DURATIONS: &[&str] = &[
    "P3D",
    "PT4H",
    "PT1M",
    "PT0S",
    "P0D",
    "P1DT2H",
    "P365D",
    "P366D",
    "P99999999999D",
    "P1Y",
    "P1M",
    "PT",
    "P",
    "",
    "PT1.5S",
    "-P1D",
    "P1W",
    "PT99999999999999999999S",
    "p3d",
];
const CHARSETS: &[&str] = &[
    "utf-8",
    "gbk",
    "gb2312",
    "gb18030",
    "big5",
    "iso-2022-jp",
    "iso-8859-1",
    "utf-16",
    "windows-1252",
    "x-unknown",
    "",
    "\"utf-8\"",
];

impl Gen<'_> {
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.0.random_range(0..n) }
    }
    fn chance(&mut self, p: f64) -> bool {
        self.0.random_bool(p)
    }
    fn pick<'w>(&mut self, words: &[&'w str]) -> &'w str {
        words[self.below(words.len())]
    }
    /// Mostly small, sometimes huge: `small` with 97 %, up to `huge` otherwise.
    fn count(&mut self, small: usize, huge: usize) -> usize {
        if self.chance(0.03) {
            self.0.random_range(small..=huge.max(small))
        } else {
            self.below(small + 1)
        }
    }
    fn text(&mut self) -> String {
        let pieces = [
            "费用",
            "conference",
            "a",
            "Ünïcödé",
            "\u{202e}bidi",
            "\u{200b}",
            "\t",
            " ",
            "&",
            "<",
            ">",
            "\"",
            "'",
            "\\",
            "%",
            "\u{0}",
            "😀",
            "ß",
            "İ",
            "ǅ",
        ];
        (0..self.count(4, 200))
            .map(|_| self.pick(&pieces))
            .collect()
    }
    fn id(&mut self) -> String {
        match self.below(8) {
            0 => self.text(),
            1 => String::new(),
            _ => format!("n{}", self.below(12)),
        }
    }

    // ------------------------------------------------------------------ CEL

    fn cel(&mut self, depth: usize) -> String {
        if depth > 12 || (depth > 0 && self.chance(0.35)) {
            return self.cel_leaf();
        }
        match self.below(14) {
            0 => format!(
                "{}{}",
                self.pick(&["!", "-", "!!", "--"]),
                self.cel(depth + 1)
            ),
            1..=3 => {
                let op = self.pick(&[
                    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", " in ",
                ]);
                format!("{} {op} {}", self.cel(depth + 1), self.cel(depth + 1))
            }
            4 => format!(
                "{} ? {} : {}",
                self.cel(depth + 1),
                self.cel(depth + 1),
                self.cel(depth + 1)
            ),
            5 => {
                let f = self.pick(&[
                    "size",
                    "int",
                    "uint",
                    "double",
                    "string",
                    "bytes",
                    "type",
                    "has",
                    "dyn",
                    "duration",
                    "timestamp",
                    "matches",
                    "max",
                    "unknown_fn",
                ]);
                let args: Vec<String> = (0..self.below(3)).map(|_| self.cel(depth + 1)).collect();
                format!("{f}({})", args.join(", "))
            }
            6 => {
                let m = self.pick(&[
                    "startsWith",
                    "endsWith",
                    "contains",
                    "matches",
                    "size",
                    "map",
                    "filter",
                    "all",
                    "exists",
                    "exists_one",
                    "getDayOfWeek",
                ]);
                let recv = self.cel(depth + 1);
                let arg = self.cel(depth + 1);
                if ["map", "filter", "all", "exists", "exists_one"].contains(&m) {
                    format!("{recv}.{m}(x, {arg})")
                } else {
                    format!("{recv}.{m}({arg})")
                }
            }
            7 => format!("{}.{}", self.cel(depth + 1), self.pick(IDENTS)),
            8 => format!("{}[{}]", self.cel(depth + 1), self.cel(depth + 1)),
            9 => {
                let items: Vec<String> = (0..self.below(4)).map(|_| self.cel(depth + 1)).collect();
                format!("[{}]", items.join(", "))
            }
            10 => {
                let items: Vec<String> = (0..self.below(3))
                    .map(|_| format!("{}: {}", self.cel(depth + 1), self.cel(depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            11 => {
                // A long chain of one operator (the left-deep trees that overflow recursive
                // checkers).
                let op = self.pick(&["+", "&&", "||", "*", "-", "=="]);
                let n = self.count(20, 3000).max(2);
                let term = self.cel_leaf();
                vec![term; n].join(&format!(" {op} "))
            }
            12 => {
                let n = self.count(10, 2000);
                format!("{}{}{}", "(".repeat(n), self.cel(depth + 1), ")".repeat(n))
            }
            _ => format!("({})", self.cel(depth + 1)),
        }
    }

    fn cel_leaf(&mut self) -> String {
        match self.below(9) {
            0 => self
                .pick(&[
                    "0",
                    "1",
                    "-1",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "9223372036854775808",
                    "0x7fffffffffffffff",
                    "18446744073709551615u",
                    "1u",
                    "99999999999999999999999",
                ])
                .to_owned(),
            1 => self
                .pick(&[
                    "1.5", "1e308", "1e309", "-0.0", ".5", "1.", "1e", "0.1e-400",
                ])
                .to_owned(),
            2 => {
                let quote = self.pick(&["\"", "'", "\"\"\"", "r\"", "b\"", "'''"]);
                let close = quote.trim_start_matches(['r', 'b']);
                let body = self.pick(&[
                    "approve",
                    "",
                    "\\n",
                    "\\u00e9",
                    "\\U0010ffff",
                    "\\U00110000",
                    "\\x41",
                    "\\400",
                    "\\777",
                    "\\",
                    "同意",
                    "\\ud800",
                    "[a-",
                    "(a+)+$",
                ]);
                format!("{quote}{body}{close}")
            }
            3 => self.pick(&["true", "false", "null"]).to_owned(),
            4 => "manager_approval.outcome".to_owned(),
            _ => self.pick(IDENTS).to_owned(),
        }
    }

    // ------------------------------------------------------------------ BPMN

    fn definition(&mut self) -> Vec<u8> {
        let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        if self.chance(0.05) {
            x.push_str("<!DOCTYPE d [<!ENTITY e \"x\">]>\n");
        }
        let (b, r) = if self.chance(0.8) {
            ("bpmn:", "replyflow:")
        } else {
            ("", "rf:")
        };
        x.push_str(&format!(
            "<{b}definitions xmlns{}=\"http://www.omg.org/spec/BPMN/20100524/MODEL\" xmlns:{}=\"https://replyflow.dev/schema/1\" id=\"d\">\n",
            if b.is_empty() { "" } else { ":bpmn" },
            r.trim_end_matches(':')
        ));
        let executable = if self.chance(0.9) {
            "true"
        } else {
            self.pick(&["false", "yes", ""])
        };
        x.push_str(&format!(
            "<{b}process id=\"{}\" name=\"{}\" isExecutable=\"{executable}\">\n",
            xml_escape(&self.id()),
            xml_escape(&self.text())
        ));
        if self.chance(0.3) {
            x.push_str(&format!("<{b}extensionElements>"));
            for _ in 0..self.count(2, 50) {
                x.push_str(&format!(
                    "<{r}reminderType id=\"{}\" count=\"{}\" interval=\"{}\" channels=\"{}\" escalation=\"{}\"/>",
                    xml_escape(&self.id()),
                    self.pick(&["3", "0", "1000000", "-1", "x", "4294967296"]),
                    self.pick(DURATIONS),
                    self.pick(&["inbox,email,sms", "email", "", "fax", "sms,sms"]),
                    self.pick(&["notify-manager", "complete:approve", "notify:", "none", "x"]),
                ));
            }
            x.push_str(&format!("</{b}extensionElements>\n"));
        }
        let chain = self.chance(0.05);
        let nodes = if chain {
            self.count(50, 3000)
        } else {
            1 + self.below(10)
        };
        let mut ids: Vec<String> = Vec::new();
        for i in 0..nodes {
            let id = if chain || self.chance(0.8) {
                format!("n{i}")
            } else {
                self.id()
            };
            let kind = if chain && i > 0 && i + 1 < nodes {
                "exclusiveGateway"
            } else if i == 0 {
                "startEvent"
            } else {
                self.pick(&[
                    "userTask",
                    "userTask",
                    "exclusiveGateway",
                    "parallelGateway",
                    "endEvent",
                    "startEvent",
                    "serviceTask",
                    "subProcess",
                ])
            };
            x.push_str(&format!(
                "<{b}{kind} id=\"{}\" name=\"{}\"",
                xml_escape(&id),
                xml_escape(&self.text())
            ));
            if kind == "userTask" {
                for (attr, values) in [
                    (
                        "assignee",
                        &["mary", "${manager}", "${", "${}", "", "${a.b}"][..],
                    ),
                    ("reminderType", &["urgent", "", "nope"][..]),
                    ("emailApproval", &["true", "false", "TRUE", ""][..]),
                    ("allowDelegate", &["true", "false", "1"][..]),
                    ("validFor", DURATIONS),
                    ("show", &["amount,reason", "", ",,", "a b"][..]),
                    (
                        "writable",
                        &["amount", "", "initiator", "manager_approval"][..],
                    ),
                ] {
                    if self.chance(0.6) {
                        x.push_str(&format!(" {r}{attr}=\"{}\"", xml_escape(self.pick(values))));
                    }
                }
            }
            if kind == "exclusiveGateway" && self.chance(0.5) {
                x.push_str(&format!(" default=\"f{}\"", self.below(nodes + 2)));
            }
            x.push('>');
            if kind == "userTask" && self.chance(0.5) {
                x.push_str(&format!("<{b}extensionElements>"));
                for _ in 0..self.count(3, 40) {
                    x.push_str(&format!(
                        "<{r}outcome id=\"{}\" label=\"{}\" keywords=\"{}\"/>",
                        xml_escape(self.pick(&["approve", "reject", "return", "", "1", "同意"])),
                        xml_escape(&self.text()),
                        xml_escape(&format!("{},{}", self.pick(APPROVE), self.pick(REJECT))),
                    ));
                }
                x.push_str(&format!("</{b}extensionElements>"));
            }
            if self.chance(0.03) {
                let n = self.count(10, 5000);
                x.push_str(&"<x:deep xmlns:x=\"urn:x\">".repeat(n));
                x.push_str(&"</x:deep>".repeat(n));
            }
            x.push_str(&format!("</{b}{kind}>\n"));
            ids.push(id);
        }
        let flows = if chain {
            nodes * 2
        } else {
            self.below(nodes * 2 + 2)
        };
        for i in 0..flows {
            let (source, target) = if chain {
                let s = i / 2;
                (s, if i % 2 == 0 { s + 1 } else { nodes - 1 })
            } else {
                (self.below(nodes), self.below(nodes))
            };
            let pick_ref = |g: &mut Self, k: usize| -> String {
                if g.chance(0.95) {
                    ids.get(k).cloned().unwrap_or_default()
                } else {
                    g.id()
                }
            };
            let (s, t) = (
                pick_ref(self, source),
                pick_ref(self, target.min(nodes - 1)),
            );
            x.push_str(&format!(
                "<{b}sequenceFlow id=\"f{i}\" sourceRef=\"{}\" targetRef=\"{}\">",
                xml_escape(&s),
                xml_escape(&t)
            ));
            if self.chance(if chain { 0.5 } else { 0.4 }) {
                let expr = if self.chance(0.7) {
                    self.cel(2)
                } else {
                    self.cel(0)
                };
                if self.chance(0.2) {
                    x.push_str(&format!(
                        "<{b}conditionExpression><![CDATA[{expr}]]></{b}conditionExpression>"
                    ));
                } else {
                    x.push_str(&format!(
                        "<{b}conditionExpression>{}</{b}conditionExpression>",
                        xml_escape(&expr)
                    ));
                }
            }
            x.push_str(&format!("</{b}sequenceFlow>\n"));
        }
        x.push_str(&format!("</{b}process>\n</{b}definitions>\n"));
        x.into_bytes()
    }

    // ------------------------------------------------------------------ replies

    fn decision_line(&mut self) -> String {
        match self.below(6) {
            0 => format!("{}{}", self.pick(NEGATIONS), self.pick(APPROVE)),
            1 => self.pick(REJECT).to_owned(),
            2 => self.pick(OTHER).to_owned(),
            3 => format!("{} {}", self.pick(APPROVE), self.text()),
            _ => self.pick(APPROVE).to_owned(),
        }
    }

    fn reply_body(&mut self) -> String {
        let mut lines = vec![self.decision_line()];
        for _ in 0..self.count(6, 400) {
            let line = match self.below(12) {
                0 => format!(
                    "{} {}",
                    ">".repeat(1 + self.count(2, 3000)),
                    self.decision_line()
                ),
                1 => "On Mon, Jan 5, 2026 at 10:00 AM Mary <mary@example.com> wrote:".to_owned(),
                2 => "在 2026年1月5日 10:00，Mary <mary@example.com> 写道：".to_owned(),
                3 => "-----Original Message-----\nFrom: Mary\nSent: Monday\nTo: box\nSubject: x"
                    .to_owned(),
                4 => "发件人: Mary\n发送时间: 2026年1月5日\n收件人: box\n主题: 审批".to_owned(),
                5 => self
                    .pick(&[
                        "-- ",
                        "--",
                        "Sent from my iPhone",
                        "发自我的iPhone",
                        "__________",
                    ])
                    .to_owned(),
                6 => format!("Token: {}", self.token()),
                7 => self.decision_line(),
                _ => self.text(),
            };
            lines.push(line);
        }
        let eol = self.pick(&["\n", "\r\n", "\r", "\n\n"]);
        lines.join(eol)
    }

    fn html_body(&mut self) -> String {
        let mut h = String::new();
        if self.chance(0.5) {
            h.push_str("<html><head><style>p{}</style></head><body>");
        }
        h.push_str(&format!(
            "<div>{}</div>",
            html_escape(&self.decision_line())
        ));
        for _ in 0..self.count(5, 200) {
            match self.below(9) {
                0 => {
                    let n = self.count(3, 5000);
                    let tag = self.pick(&["blockquote", "div", "span", "b", "table><tr><td"]);
                    let close = self.pick(&["blockquote", "div", "span", "b", "td></tr></table"]);
                    h.push_str(&format!("<{tag}>").repeat(n));
                    h.push_str(&html_escape(&self.decision_line()));
                    h.push_str(&format!("</{close}>").repeat(n));
                }
                1 => h.push_str("<div class=\"gmail_quote\">On Mon Mary wrote:<blockquote class=\"gmail_quote\">同意</blockquote></div>"),
                2 => h.push_str("<div id=\"divRplyFwdMsg\"><b>From:</b> Mary<br><b>Sent:</b> x</div>"),
                3 => h.push_str(self.pick(&["<br>", "<br/>", "<p>", "</p>", "<!--", "-->", "<", "&", "&#x;", "&#99999999;", "&nbsp;", "<script>", "</", "<a href='mailto:x'>"])),
                4 => h.push_str(&format!("<p>{}</p>", html_escape(&self.text()))),
                _ => h.push_str(&html_escape(&self.decision_line())),
            }
        }
        h
    }

    fn reply_input(&mut self) -> String {
        let mut s = String::new();
        if self.chance(0.3) {
            let outcomes: Vec<String> = (0..1 + self.below(4))
                .map(|_| {
                    format!(
                        "{}:{}:{},{}",
                        self.pick(&["approve", "reject", "return", "ok", "1", "同意", "", "no"]),
                        self.pick(&["同意", "驳回", "Return", "", "1"]),
                        self.pick(APPROVE),
                        self.pick(&["", "x", "不", "同意不"]),
                    )
                })
                .collect();
            s.push_str(&format!("#outcomes {}\n", outcomes.join(";")));
        }
        if self.chance(0.3) {
            s.push_str(&self.html_body())
        } else {
            s.push_str(&self.reply_body())
        }
        s
    }

    // ------------------------------------------------------------------ tokens

    fn token(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        let len = if self.chance(0.8) {
            31
        } else {
            28 + self.below(6)
        };
        let mut t: String = (0..len)
            .map(|_| char::from(ALPHABET[self.below(32)]))
            .collect();
        if self.chance(0.1) {
            t = t.to_ascii_uppercase();
        }
        if self.chance(0.1) {
            t.replace_range(0..1, self.pick(&["0", "1", "8", "9", "é", "-"]));
        }
        t
    }

    fn token_text(&mut self) -> String {
        let mut s: String = (0..32)
            .map(|_| char::from(self.0.random::<u8>() % 95 + 32))
            .collect();
        for _ in 0..1 + self.below(4) {
            let t = self.token();
            match self.below(4) {
                0 => s.push_str(&format!("\nToken: {t}")),
                1 => s.push_str(&format!("\nbox+{t}@example.com")),
                2 => s.push_str(&format!("\n回复凭证：{t}")),
                _ => s.push_str(&format!("\n{t}")),
            }
        }
        s
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('"', "&quot;")
        .replace('\0', "")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;")
}
