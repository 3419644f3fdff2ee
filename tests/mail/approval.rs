//! The approval mail end to end: the real server opens a task, its outbox worker sends the mail
//! over SMTP (required STARTTLS, the test CA) to Postfix, Postfix delivers it to Dovecot, and the
//! test reads it from the approver's INBOX over IMAPS the way a mail client would; GetApproval
//! shows how the delivery went, including an address the server refuses.
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use replyflow::{
    mail::{compose::TOKEN_LINE_LABEL, token},
    proto::pb,
    workflow::approvals::load_key_ring,
};
use serde_json::json;

use crate::{
    helpers::{
        TestApp, bare, mail_env, millis, postfix_shared, spawn_mail_app,
        wait_for_empty_postfix_queue,
    },
    imap::{count_message_id, wait_for_message_id},
};

const ARRIVAL: Duration = Duration::from_secs(20);

/// The outcomes of examples/expense.bpmn's manager task: number, label, keywords.
const EXPENSE_OUTCOMES: &[(u32, &str, &[&str])] = &[
    (1, "同意", &["同意", "approve", "ok"]),
    (2, "驳回", &["驳回", "reject"]),
];

/// mary (or `manager`) and fred in the directory with their test-stack addresses, and
/// examples/expense.bpmn deployed.
async fn setup(app: &TestApp, manager: &str, locale: &str) {
    let env = mail_env();
    app.add_user_with(manager, &env.address(manager), locale)
        .await;
    app.add_user_with("fred", &env.address("fred"), "zh-CN")
        .await;
    app.deploy_example("expense.bpmn").await;
}

/// Starts an expense (as fred, who is finance) with `manager` as the manager; returns the
/// manager's task.
async fn start_expense(app: &TestApp, manager: &str) -> pb::Task {
    let variables = json!({
        "manager": manager, "finance": "fred", "amount": 20000, "reason": "RustConf 2026",
    });
    let task = app.start_as("expense", "fred", variables).await.open_tasks[0].clone();
    assert_eq!(task.assignee, manager);
    task
}

#[tokio::test]
async fn the_approval_mail_arrives_in_the_approvers_inbox_signed_and_answerable() {
    let _postfix = postfix_shared().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    let mary = env.address("mary");
    setup(&app, "mary", "zh-CN").await;
    let task = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver_email, mary);

    let copies = wait_for_message_id("mary", &approval.message_id, ARRIVAL).await;
    assert_eq!(copies.len(), 1, "one copy in mary's INBOX");
    let raw = &copies[0];
    let dump = String::from_utf8_lossy(raw);
    let mail = MessageParser::default()
        .parse(raw)
        .expect("the delivered mail parses");

    // Headers.
    assert_eq!(mail.message_id(), Some(bare(&approval.message_id)));
    let subject = mail.subject().expect("Subject");
    assert!(
        subject.contains(&format!("[{}]", approval.subject_tag))
            && approval.subject_tag.starts_with("RF-"),
        "{subject:?} carries [{}]",
        approval.subject_tag
    );
    assert!(subject.starts_with("待审批「经理审批」"), "{subject:?}");
    let header = |name: &str| {
        mail.header_raw(name)
            .unwrap_or_else(|| panic!("no {name} header:\n{dump}"))
            .trim()
            .to_string()
    };
    assert_eq!(header("Auto-Submitted"), "auto-generated");
    assert_eq!(header("X-Auto-Response-Suppress"), "All");
    assert_eq!(header("Delivered-To"), mary);
    let from = mail.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.name(), Some("审批"));
    assert_eq!(from.address(), Some(env.address("approvals").as_str()));

    // Reply-To approvals+<token>@domain, with a token the server's keys verify.
    let reply_to = mail
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .expect("Reply-To")
        .to_string();
    let token = reply_to
        .strip_prefix("approvals+")
        .and_then(|rest| rest.strip_suffix(&format!("@{}", env.domain)))
        .unwrap_or_else(|| panic!("Reply-To {reply_to:?} is approvals+<token>@{}", env.domain))
        .to_string();
    let parts = token::parse(&token).expect("the token parses");
    assert_eq!(parts.context_id, approval.id);
    let store = app.store().await;
    let ring = load_key_ring(&store, &[], 0).await.expect("key ring");
    store.close().await;
    token::verify(
        &ring,
        &parts,
        parts.kid,
        &mary,
        millis(approval.valid_until),
    )
    .expect("the token verifies for mary and the context's valid-until");

    // multipart/alternative: text, then HTML.
    let root = mail.content_type().expect("Content-Type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    let kinds: Vec<String> = mail
        .root_part()
        .sub_parts()
        .expect("sub-parts")
        .iter()
        .map(|&id| {
            let ct = mail.parts[id as usize].content_type().expect("part type");
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default())
        })
        .collect();
    assert_eq!(kinds, ["text/plain", "text/html"]);

    let text = mail.body_text(0).expect("text part");
    for (number, label, keywords) in EXPENSE_OUTCOMES {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("outcome {label} is not in the text part:\n{text}"));
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '：' || c == ':')
            .collect();
        assert!(
            words.contains(&number.to_string().as_str()),
            "{label} with its number {number}: {line:?}"
        );
        for keyword in *keywords {
            assert!(words.contains(keyword), "{label}: {keyword} in {line:?}");
        }
    }
    assert!(
        text.contains("有一项审批等待您处理。"),
        "in Chinese:\n{text}"
    );
    assert!(text.contains("amount：20000"), "{text}");
    assert_eq!(
        text.trim_end().lines().last(),
        Some(format!("{TOKEN_LINE_LABEL} {token}").as_str()),
        "the token line ends the text part"
    );

    let html = mail.body_html(0).expect("HTML part");
    assert_eq!(
        html.matches("href=\"mailto:").count(),
        EXPENSE_OUTCOMES.len(),
        "one mailto: button per outcome"
    );
    assert_eq!(
        html.matches(&format!("href=\"mailto:{reply_to}?subject="))
            .count(),
        EXPENSE_OUTCOMES.len(),
        "every button replies to the tokenized address"
    );

    // What the API says about the delivery.
    let approval = app
        .wait_for_delivery(&task.id, pb::DeliveryStatus::Sent, ARRIVAL)
        .await;
    assert_eq!(approval.attempts, 1);
    assert_eq!(approval.last_error, "");
    assert!(approval.sent_at.is_some(), "{approval:?}");
    assert_eq!(approval.status, pb::ApprovalStatus::Pending as i32);

    // Nothing else is on its way: still exactly one copy.
    wait_for_empty_postfix_queue().await;
    assert_eq!(count_message_id("mary", &approval.message_id).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_address_the_server_refuses_is_a_permanent_failure_shown_by_get_approval() {
    let _postfix = postfix_shared().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    // Not a mailbox of the test domain: Postfix answers 550 at RCPT.
    let nobody = env.address("nobody");
    setup(&app, "nobody", "en").await;
    let task = start_expense(&app, "nobody").await;

    let approval = app
        .wait_for_delivery(&task.id, pb::DeliveryStatus::PermFailed, ARRIVAL)
        .await;
    assert_eq!(approval.approver_email, nobody);
    assert!(
        approval.last_error.contains("550"),
        "the server's answer: {:?}",
        approval.last_error
    );
    assert!(
        approval.last_error.contains(&nobody),
        "it names the address: {:?}",
        approval.last_error
    );
    assert_eq!(approval.attempts, 1, "a permanent failure is not retried");
    assert_eq!(approval.sent_at, None);
    assert_eq!(approval.next_attempt_at, None, "no retry planned");
    assert_eq!(
        approval.status,
        pb::ApprovalStatus::Pending as i32,
        "the task stays open for the API"
    );
    app.stop().await;
}
