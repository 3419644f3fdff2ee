//! The approval mail end to end: the real server opens a task, its outbox worker sends the mail
//! over SMTP (required STARTTLS, the test CA) to Postfix, Postfix delivers it to Dovecot, and the
//! test reads it from the approver's INBOX over IMAPS the way a mail client would; GetApproval
//! shows how the delivery went, including an address the server refuses.
use std::time::Duration;

use mail_parser::MessageParser;
use replyflow::proto::pb;

use crate::{
    helpers::{
        EXPENSE_OUTCOMES, check_approval_mail, mail_env, postfix_shared, setup_expense,
        spawn_mail_app, start_expense, wait_for_empty_postfix_queue,
    },
    imap::{count_message_id, wait_for_message_id},
};

const ARRIVAL: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_approval_mail_arrives_in_the_approvers_inbox_signed_and_answerable() {
    let _postfix = postfix_shared().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    let mary = env.address("mary");
    setup_expense(&app, "mary", "zh-CN").await;
    let task = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver_email, mary);

    let copies = wait_for_message_id("mary", &approval.message_id, ARRIVAL).await;
    assert_eq!(copies.len(), 1, "one copy in mary's INBOX");
    let raw = &copies[0];
    // What every approval mail must be (multipart text and HTML, the threading and robot
    // headers, a Reply-To token the server's keys verify for mary, every outcome with its number,
    // one button per outcome, the token line), as it arrived through Postfix and Dovecot.
    let seen = check_approval_mail(raw, &approval, &app.reply_token_keys(), EXPENSE_OUTCOMES);

    // And what this trip adds: mary's delivery, the mail stack's sender, her language.
    let mail = MessageParser::default()
        .parse(raw)
        .expect("the delivered mail parses");
    let dump = String::from_utf8_lossy(raw);
    assert!(
        seen.subject.starts_with("待审批「经理审批」"),
        "{:?}",
        seen.subject
    );
    assert_eq!(
        mail.header_raw("Delivered-To").map(str::trim),
        Some(mary.as_str()),
        "{dump}"
    );
    let from = mail.from().and_then(|a| a.first()).expect("From");
    assert_eq!(from.name(), Some("审批"));
    assert_eq!(from.address(), Some(env.address("approvals").as_str()));
    assert!(
        seen.text.contains("有一项审批等待您处理。"),
        "in Chinese:\n{}",
        seen.text
    );
    assert!(seen.text.contains("amount：20000"), "{}", seen.text);

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
    setup_expense(&app, "nobody", "en").await;
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
