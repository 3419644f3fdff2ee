//! The five fuzz targets of replyflow (issue 9 item 10), as plain functions from bytes.
//!
//! Each target runs one piece of code that reads outside input — the BPMN definition parser,
//! the CEL condition front end, the reply reader, the reply-token verifier and the inbound MIME
//! path that `SubmitInboundEmail` runs before it touches the database — and checks a few
//! properties that must hold for ANY input besides "does not panic": a token survives nothing
//! but an exact copy, a reply only ever decides for an outcome the task has, a parsed
//! definition's flows point at its nodes. A broken property panics, which is how a fuzzer
//! sees a finding.
//!
//! The same functions serve three drivers, so that a finding in one is a finding in all:
//! `tests/fuzz/main.rs` (the bounded structured run of `scripts/test`, in the normal build),
//! `tests/fuzz_regressions.rs` (every saved finding and seed, on every test run) and the
//! cargo-afl binaries of this crate (`fuzz/src/bin/`, coverage-guided, opt-in: see
//! `scripts/lib/fuzz.sh`). The test binaries include this file with `#[path]`; that is why it
//! uses nothing but replyflow and std.

use std::fmt;

use replyflow::{
    engine::{
        condition::Condition,
        definition::{self, NodeKind},
    },
    mail::{
        reply::{InboundAuth, OutcomeWords, ReplyKind, ReplyReading, new_text, read_reply},
        token::{self, KeyRing},
    },
    workflow::inbound::{MAX_INBOUND_BYTES, header_block},
};
use serde_json::{Map, Value as Json, json};

/// The code under test; the name is also the directory of its seeds and findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Definition,
    Condition,
    Reply,
    Token,
    Inbound,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Definition,
        Target::Condition,
        Target::Reply,
        Target::Token,
        Target::Inbound,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Definition => "definition",
            Target::Condition => "condition",
            Target::Reply => "reply",
            Target::Token => "token",
            Target::Inbound => "inbound",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Runs the target on one input; panics when a property is broken.
    pub fn run(self, data: &[u8]) {
        match self {
            Target::Definition => definition_parser(data),
            Target::Condition => cel_front_end(data),
            Target::Reply => reply_reader(data),
            Target::Token => token_verifier(data),
            Target::Inbound => inbound_mime_path(data),
        }
    }
}

/// tokio's default worker thread stack, where the server parses definitions and reads replies:
/// a recursion deep enough to stop the server must be deep enough under the fuzzer too (the
/// main thread's 8 MiB would hide it).
pub const SERVER_STACK: usize = 2 * 1024 * 1024;

impl Target {
    /// [`Target::run`] on a thread with the server's stack; a broken property panics here too.
    pub fn run_on_server_stack(self, data: &[u8]) {
        std::thread::scope(|scope| {
            let run = std::thread::Builder::new()
                .stack_size(SERVER_STACK)
                .spawn_scoped(scope, || self.run(data))
                .expect("spawn a fuzz thread");
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        });
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `definition::parse` (DeployDefinition, `replyflow check`): any bytes give a definition or
/// errors naming an element, and a definition's graph is consistent.
pub fn definition_parser(data: &[u8]) {
    match definition::parse(data) {
        Ok(def) => {
            let nodes = def.nodes.len();
            assert!(def.start < nodes, "start node {} of {nodes}", def.start);
            for (i, flow) in def.flows.iter().enumerate() {
                assert!(
                    flow.source < nodes && flow.target < nodes,
                    "flow {i} leaves the graph"
                );
                assert!(
                    def.nodes[flow.source].outgoing.contains(&i),
                    "flow {i} not outgoing"
                );
                assert!(
                    def.nodes[flow.target].incoming.contains(&i),
                    "flow {i} not incoming"
                );
            }
            for node in &def.nodes {
                assert!(
                    def.node(&node.id).is_some(),
                    "node {:?} cannot be found",
                    node.id
                );
                match &node.kind {
                    NodeKind::UserTask(spec) => {
                        assert!(
                            !spec.outcomes.is_empty(),
                            "user task {:?} without outcomes",
                            node.id
                        );
                        let ids: Vec<&str> = spec.outcomes.iter().map(|o| o.id.as_str()).collect();
                        // The words a reply to this task is read with: built from deployed
                        // text, so they are fuzzed input too.
                        let words = OutcomeWords::defaults(&ids);
                        assert_eq!(words.len(), ids.len());
                    }
                    NodeKind::ExclusiveGateway(gateway) => {
                        if let Some(default) = gateway.default {
                            assert!(node.outgoing.contains(&default), "default flow elsewhere");
                        }
                    }
                    _ => {}
                }
            }
            for decl in &def.reminder_types {
                assert!(
                    !decl.channels.is_empty(),
                    "reminder type {:?} without channels",
                    decl.id
                );
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "a refusal without a reason");
            for error in &errors.0 {
                assert!(!error.to_string().trim().is_empty(), "an empty error");
            }
        }
    }
}

/// `Condition::compile` (at deploy) and, for a compiled condition that cannot loop, one
/// evaluation over typical variables: errors are fine, panics are not.
pub fn cel_front_end(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(condition) = Condition::compile(source) else {
        return;
    };
    assert_eq!(condition.source(), source);
    // Comprehensions multiply work by list length at every level (a run-time cost budget is
    // issue 9's engine-limits item, not a property of the front end): only loop-free
    // expressions are evaluated here, and only short ones.
    const LOOPING: [&str; 6] = ["map", "filter", "all", "exists", "exists_one", "*"];
    if source.len() <= 256 && !LOOPING.iter().any(|word| source.contains(word)) {
        let _ = condition.evaluate(&sample_variables());
    }
}

fn sample_variables() -> Map<String, Json> {
    let Json::Object(map) = json!({
        "amount": 12000,
        "price": 12.5,
        "big": i64::MAX,
        "small": i64::MIN,
        "reason": "会议 conference",
        "tags": ["a", "b"],
        "manager_approval": {"outcome": "approve", "comment": "同意", "completed_by": "mary"},
        "outcome": "approve",
        "flag": true,
        "nothing": null
    }) else {
        unreachable!("a JSON object literal")
    };
    map
}

/// The reply reader on a body as a mail client writes it. Input: an optional first line
/// `#outcomes id:label:kw,kw;id:label` (the words a definition can declare), then the body.
/// The body is read as plain text and as HTML, alone and inside a minimal mail.
pub fn reply_reader(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (outcomes, body) = match text.strip_prefix("#outcomes ") {
        Some(rest) => {
            let (spec, body) = rest.split_once('\n').unwrap_or((rest, ""));
            (outcome_words(spec), body)
        }
        None => (
            OutcomeWords::defaults(&["approve", "reject", "return"]),
            &*text,
        ),
    };
    let _ = new_text(body, false);
    let _ = new_text(body, true);
    for content_type in ["text/plain; charset=utf-8", "text/html; charset=utf-8"] {
        let mail = format!(
            "From: Mary <mary@example.com>\r\nTo: box+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com\r\n\
             Subject: Re: [RF-k3x9q2ab] expense\r\nMessage-ID: <a@b>\r\n\
             Content-Type: {content_type}\r\n\r\n{body}"
        );
        let reading = read_reply(mail.as_bytes(), &outcomes, None);
        check_reading(&reading, &outcomes);
    }
}

/// Outcome words the way a definition declares them: `id:label:kw,kw;...`.
fn outcome_words(spec: &str) -> Vec<OutcomeWords> {
    let mut declared: Vec<(&str, &str, Vec<String>)> = Vec::new();
    for item in spec.split(';').take(8) {
        let mut fields = item.splitn(3, ':');
        let id = fields.next().unwrap_or("").trim();
        if id.is_empty() || declared.iter().any(|(seen, _, _)| *seen == id) {
            continue;
        }
        let label = fields.next().unwrap_or(id);
        let keywords = fields
            .next()
            .map(|k| k.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        declared.push((id, label, keywords));
    }
    if declared.is_empty() {
        return OutcomeWords::defaults(&["approve", "reject"]);
    }
    let ids: Vec<&str> = declared.iter().map(|(id, _, _)| *id).collect();
    let mut words = OutcomeWords::defaults(&ids);
    for (word, (_, label, keywords)) in words.iter_mut().zip(declared) {
        word.label = label.to_owned();
        for keyword in keywords {
            if !word.keywords.contains(&keyword) {
                word.keywords.push(keyword);
            }
        }
    }
    words
}

/// What every reading must satisfy, whatever the mail.
fn check_reading(reading: &ReplyReading, outcomes: &[OutcomeWords]) {
    let known = |id: &str| outcomes.iter().any(|o| o.id == id);
    match reading.kind {
        ReplyKind::Decision => {
            let outcome = reading
                .outcome
                .as_deref()
                .expect("a decision names its outcome");
            assert!(
                known(outcome),
                "decided {outcome:?}, not an outcome of the task"
            );
        }
        ReplyKind::Ambiguous => {
            assert!(reading.outcome.is_none(), "an ambiguous reply decided");
            for id in &reading.ambiguous {
                assert!(known(id), "ambiguous between unknown outcomes: {id:?}");
            }
        }
        _ => assert!(
            reading.outcome.is_none(),
            "a {:?} reading with an outcome",
            reading.kind
        ),
    }
    if reading.kind == ReplyKind::Delegate {
        assert!(
            reading.delegate_to.is_some(),
            "a delegation without an address"
        );
    }
    assert!(
        !reading.explanation.is_empty(),
        "a reading without an explanation"
    );
    // The reading is logged as JSON (inbound log, ExplainReply).
    serde_json::to_string(&reading.correlation).expect("the correlation serializes");
}

/// The reply-token verifier: `token::parse`, `token::verify` and `token::find_in_text` on any
/// text, and the promise that a token verifies only as issued — for any key, approver and
/// expiry derived from the input, an issued token verifies (in any letter case of the address)
/// and no one-symbol change, other address, other expiry or other key does.
pub fn token_verifier(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let ring = KeyRing::new(vec![
        (1, b"fuzz key one".to_vec()),
        (2, b"fuzz key two".to_vec()),
    ])
    .expect("a valid ring");
    for candidate in std::iter::once(&*text).chain(text.lines()) {
        if let Some(parts) = token::parse(candidate) {
            assert_eq!(candidate.len(), token::TOKEN_LEN);
            assert_eq!(parts.context_id.len(), 13);
            assert!((1..=1023).contains(&parts.kid));
            assert_eq!(
                token::parse(&candidate.to_ascii_lowercase()),
                Some(parts.clone())
            );
            // A random token is a forgery: 80 bits of MAC.
            assert!(token::verify(&ring, &parts, parts.kid, "mary@example.com", 0).is_err());
        }
    }
    if let Some(parts) = token::find_in_text(&text) {
        assert_eq!(parts.context_id.len(), 13);
    }

    // Round trip with key, context, approver and expiry taken from the input.
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next().unwrap_or(0);
    let kid = 1 + (i64::from(next()) << 2 | i64::from(next() & 3)) % 1023;
    let secret: Vec<u8> = (0..1 + usize::from(next() % 64)).map(|_| next()).collect();
    let context = u64::from_be_bytes(std::array::from_fn(|_| next()));
    let until = i64::from_be_bytes(std::array::from_fn(|_| next()));
    let position = usize::from(next()) % token::TOKEN_LEN;
    let symbol = next();
    let email: String = text.chars().skip(20).take(80).collect();
    let ring = KeyRing::new(vec![(kid, secret)]).expect("a valid ring");
    let context_id = base32_context_id(context);
    let issued = token::issue(&ring, &context_id, &email, until);
    let parts = token::parse(&issued).expect("an issued token parses");
    assert_eq!(parts.kid, kid);
    assert_eq!(parts.context_id, context_id);
    assert_eq!(
        token::parse(&issued.to_ascii_uppercase()).as_ref(),
        Some(&parts)
    );
    assert_eq!(token::verify(&ring, &parts, kid, &email, until), Ok(()));
    assert_eq!(
        token::verify(&ring, &parts, kid, &email.to_ascii_uppercase(), until),
        Ok(()),
        "the approver's address is compared in any case"
    );
    assert!(token::verify(&ring, &parts, kid, &email, until.wrapping_add(1)).is_err());
    // The context's own key decides, not the one the token names.
    assert!(token::verify(&ring, &parts, kid % 1023 + 1, &email, until).is_err());
    assert!(token::verify(&ring, &parts, kid, &format!("{email}x"), until).is_err());
    let other = KeyRing::new(vec![(kid, b"another secret".to_vec())]).expect("a valid ring");
    if other.current_kid() == kid {
        assert!(token::verify(&other, &parts, kid, &email, until).is_err());
    }
    let mut changed = issued.clone().into_bytes();
    let alphabet = b"abcdefghijklmnopqrstuvwxyz234567";
    let replacement = alphabet[usize::from(symbol) % 32];
    if changed[position] != replacement {
        changed[position] = replacement;
        let changed = String::from_utf8(changed).expect("ASCII");
        if let Some(forged) = token::parse(&changed) {
            assert!(
                token::verify(&ring, &forged, kid, &email, until).is_err(),
                "a token with one symbol changed verifies: {changed}"
            );
        }
    }
}

/// The 13 base32 symbols of 64 bits (65 bits of symbols, the last one zero): what
/// `token::new_context_id` makes from random bits, here from the input's.
fn base32_context_id(value: u64) -> String {
    let bits = u128::from(value) << 1;
    (0..13)
        .map(|i| {
            let symbol = (bits >> (60 - 5 * i)) & 31;
            char::from(b"abcdefghijklmnopqrstuvwxyz234567"[symbol as usize])
        })
        .collect()
}

/// What `SubmitInboundEmail` (and the IMAP and Maildir readers) run on the raw bytes before the
/// database: the size split (header-only reading of an oversized mail), the reading with the
/// default outcomes, the correlation (token syntax, references), and the sender check against
/// `Authentication-Results` under each `mail.require_auth`.
pub fn inbound_mime_path(data: &[u8]) {
    if data.len() > MAX_INBOUND_BYTES {
        return;
    }
    let defaults = OutcomeWords::defaults(&["approve", "reject"]);
    let header = header_block(data);
    assert!(data.starts_with(header), "the header block is a prefix");
    let _ = read_reply(header, &defaults, None);
    for delivered_to in [
        None,
        Some("box+ahaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com"),
    ] {
        let reading = read_reply(data, &defaults, delivered_to);
        check_reading(&reading, &defaults);
        let c = &reading.correlation;
        if let Some(found) = &c.token {
            let _ = token::parse(found);
        }
        for (authserv_id, require) in [
            (None, "none"),
            (Some("mx.example.com"), "dkim"),
            (Some("mx.example.com"), "dmarc"),
        ] {
            let auth = InboundAuth::from_settings(authserv_id, require).expect("valid settings");
            let _ = auth.check(&c.authentication_results, &c.from);
        }
    }
}
