//! Email approval, outbound, with the zero-config file transport: the task's transaction writes
//! the approval context and the mail; the outbox worker writes it out as an .eml file.
use std::time::Duration;

use replyflow::proto::pb;

use crate::helpers::{TestApp, expense_vars, req, spawn_app};

async fn get_approval(app: &TestApp, task_id: &str) -> Result<pb::ApprovalContext, tonic::Status> {
    pb::approval_service_client::ApprovalServiceClient::new(app.channel.clone())
        .get_approval(req(
            pb::GetApprovalRequest {
                task_id: task_id.into(),
            },
            "admin",
        ))
        .await
        .map(|r| r.into_inner())
}

/// The .eml files the file transport wrote, waiting until `count` exist.
async fn written_mail(app: &TestApp, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let mut mails: Vec<String> = std::fs::read_dir(app.outbox_dir.path())
            .expect("outbox dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        if mails.len() >= count {
            mails.sort();
            return mails;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {count} mails were written to {}",
        app.outbox_dir.path().display()
    );
}

#[tokio::test]
async fn an_opened_task_has_its_approval_context_and_its_mail() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let mails = written_mail(&app, 1).await;
    let mail = &mails[0];
    assert!(
        mail.contains("To: MARY <mary@example.com>") || mail.contains("mary@example.com"),
        "{mail}"
    );
    assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
    assert!(mail.contains("X-Auto-Response-Suppress: All"), "{mail}");
    assert!(
        mail.contains("approvals+"),
        "Reply-To carries the token: {mail}"
    );

    let approval = get_approval(&app, &task.id)
        .await
        .expect("approval context");
    assert_eq!(approval.approver_email, "mary@example.com");
    assert_eq!(approval.status, pb::ApprovalStatus::Pending as i32);
    assert!(!approval.message_id.is_empty());
    assert!(
        mail.contains(&approval.message_id),
        "the recorded Message-ID is the mail's"
    );
    let valid_until = approval.valid_until.expect("valid_until").seconds;
    let created = approval.created_at.expect("created_at").seconds;
    assert_eq!(
        valid_until - created,
        3 * 86_400,
        "replyflow:validFor=\"P3D\""
    );

    let kinds = app.event_kinds(&instance.id).await;
    assert!(
        kinds.iter().any(|k| k == "approval_mail_queued"),
        "{kinds:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_approver_without_email_gets_the_task_without_email_approval() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    // mary is not in the directory at all.
    let instance = app.start("expense", expense_vars(20000)).await;
    let err = get_approval(&app, &instance.open_tasks[0].id)
        .await
        .expect_err("no context");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let kinds = app.event_kinds(&instance.id).await;
    assert!(
        kinds.iter().any(|k| k == "email_approval_skipped"),
        "{kinds:?}"
    );
    app.stop().await;
}
