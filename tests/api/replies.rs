//! Replies through SubmitInboundEmail (the MTA-pipe / webhook transport): the approval mail the
//! server wrote is answered the way a mail client would, and every reply gets its verdict.
use std::time::Duration;

use replyflow::proto::pb;

use crate::helpers::{TestApp, expense_vars, req, spawn_app};

/// The approval mail written for the task (file transport), waiting for it.
async fn approval_mail(app: &TestApp) -> String {
    for _ in 0..200 {
        let mail = std::fs::read_dir(app.outbox_dir.path())
            .expect("outbox dir")
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .next();
        if let Some(mail) = mail {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no approval mail was written");
}

fn header<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} header in\n{mail}"))
}

/// A reply as Gmail writes it: the decision, the attribution line, the quoted original.
fn reply(from: &str, original: &str, body: &str, message_id: &str) -> Vec<u8> {
    let reply_to = header(original, "Reply-To");
    let reply_to = reply_to
        .rsplit_once('<')
        .map(|(_, a)| a.trim_end_matches('>'))
        .unwrap_or(reply_to);
    let original_id = header(original, "Message-ID");
    let quoted: String = original
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .take(8)
        .map(|l| format!("> {l}\r\n"))
        .collect();
    format!(
        "From: {from}\r\nTo: {reply_to}\r\nSubject: Re: approval\r\nMessage-ID: {message_id}\r\n\
         In-Reply-To: {original_id}\r\nReferences: {original_id}\r\nDate: Sat, 21 Nov 2026 10:00:00 +0800\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         {body}\r\n\r\nOn Sat, Nov 21, 2026 at 9:00 AM replyflow <approvals@replyflow.test> wrote:\r\n{quoted}"
    )
    .into_bytes()
}

async fn submit(app: &TestApp, raw: Vec<u8>) -> pb::InboundEmail {
    pb::approval_service_client::ApprovalServiceClient::new(app.channel.clone())
        .submit_inbound_email(req(
            pb::SubmitInboundEmailRequest {
                raw,
                ..Default::default()
            },
            "mta",
        ))
        .await
        .expect("submit")
        .into_inner()
}

#[tokio::test]
async fn a_reply_decides_the_task_once_and_forgeries_and_copies_decide_nothing() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    let original = approval_mail(&app).await;

    // A forged sender: verdict, nothing decided.
    let forged = submit(
        &app,
        reply("eve@example.com", &original, "同意", "<f1@evil>"),
    )
    .await;
    assert_eq!(
        forged.verdict,
        pb::Verdict::SenderMismatch as i32,
        "{forged:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    // No decision on the first line: the task stays open.
    let vague = submit(
        &app,
        reply(
            "mary@example.com",
            &original,
            "Let me think about it",
            "<v1@x>",
        ),
    )
    .await;
    assert_eq!(vague.verdict, pb::Verdict::NoDecision as i32, "{vague:?}");
    assert!(vague.answered, "the approver is told how to answer");

    // The real answer, Chinese keyword with a comment on the same line.
    let applied = submit(
        &app,
        reply(
            "Mary <mary@example.com>",
            &original,
            "同意，预算合理",
            "<ok1@x>",
        ),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    assert!(applied.answered, "a success gets a confirmation");
    assert_eq!(applied.task_id, task.id);
    let decided = app.task(&task.id).await;
    assert_eq!(decided.outcome, "approve");
    assert_eq!(decided.comment, "预算合理");
    assert_eq!(decided.completed_by, "mary");
    assert_eq!(decided.completed_via, pb::CompletedVia::Email as i32);
    let next = app.instance(&instance.id).await;
    assert_eq!(next.open_tasks[0].activity_id, "finance_approval");

    // The same message again (a re-fetch): applied once.
    let again = submit(
        &app,
        reply(
            "Mary <mary@example.com>",
            &original,
            "同意，预算合理",
            "<ok1@x>",
        ),
    )
    .await;
    assert_eq!(again.verdict, pb::Verdict::Duplicate as i32, "{again:?}");
    assert!(!again.answered, "a copy is not answered twice");
    // A second, different reply to the decided task: already handled.
    let late = submit(
        &app,
        reply("mary@example.com", &original, "驳回", "<late@x>"),
    )
    .await;
    assert_eq!(late.verdict, pb::Verdict::AlreadyUsed as i32, "{late:?}");
    assert!(
        late.reason.contains("already handled by mary"),
        "{}",
        late.reason
    );
    assert_eq!(
        app.instance(&instance.id).await.open_tasks.len(),
        1,
        "nothing moved twice"
    );

    let log = pb::approval_service_client::ApprovalServiceClient::new(app.channel.clone())
        .list_inbound_emails(req(
            pb::ListInboundEmailsRequest {
                task_id: task.id.clone(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(log.emails.len(), 5, "one row per message");
    // The confirmation, in mary's language, threaded under her reply.
    let mut confirmation = None;
    for _ in 0..200 {
        confirmation = std::fs::read_dir(app.outbox_dir.path())
            .expect("outbox dir")
            .filter_map(Result::ok)
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|m| m.contains("In-Reply-To: <ok1@x>"));
        if confirmation.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirmation = confirmation.expect("a confirmation mail was written");
    assert!(
        confirmation.contains("Auto-Submitted: auto-replied"),
        "{confirmation}"
    );
    app.stop().await;
}

#[tokio::test]
async fn auto_replies_ambiguity_and_a_broken_token_get_their_verdicts() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let original = approval_mail(&app).await;

    let mut out_of_office = reply(
        "mary@example.com",
        &original,
        "I am out of the office until Monday.",
        "<ooo@x>",
    );
    out_of_office.splice(0..0, b"Auto-Submitted: auto-replied\r\n".iter().copied());
    assert_eq!(
        submit(&app, out_of_office).await.verdict,
        pb::Verdict::AutoReply as i32
    );

    let both = submit(
        &app,
        reply("mary@example.com", &original, "同意 驳回", "<amb@x>"),
    )
    .await;
    assert_eq!(both.verdict, pb::Verdict::Ambiguous as i32, "{both:?}");

    // One character of the token changed: the signature no longer matches.
    let token_start = original.find("approvals+").expect("token") + "approvals+".len();
    let mut tampered = original.clone();
    let flipped = if &original[token_start + 20..token_start + 21] == "a" {
        "b"
    } else {
        "a"
    };
    tampered.replace_range(token_start + 20..token_start + 21, flipped);
    let forged = submit(
        &app,
        reply("mary@example.com", &tampered, "同意", "<tamper@x>"),
    )
    .await;
    assert!(
        forged.verdict == pb::Verdict::BadSignature as i32
            || forged.verdict == pb::Verdict::UnknownToken as i32,
        "{forged:?}"
    );
    assert_eq!(
        app.instance(&instance.id).await.open_tasks[0].activity_id,
        "manager_approval"
    );
    app.stop().await;
}
