//! 抄送 by ReminderService.CarbonCopy (DESIGN §11): a participant copies colleagues in on a
//! request; each gets an in-system message and an FYI mail that asks for nothing and that no
//! reply can turn into a decision.
use tonic::{Code, Status};

use crate::helpers::{
    TestApp, assert_refused, expense_vars, header, req, spawn_app, submit, text_of,
};
use replyflow::proto::pb;

async fn cc_as(
    app: &TestApp,
    instance_id: &str,
    user: &str,
    to: &[&str],
    request_id: &str,
) -> Result<Vec<String>, Status> {
    let message = pb::CarbonCopyRequest {
        process_instance_id: instance_id.into(),
        user_ids: to.iter().map(|s| s.to_string()).collect(),
        comment: "please note the amount".into(),
        request_id: request_id.into(),
    };
    app.reminders()
        .carbon_copy(req(message, user))
        .await
        .map(|r| r.into_inner().user_ids)
}

async fn messages_of(app: &TestApp, user: &str) -> Vec<pb::Message> {
    app.reminders()
        .list_messages(req(pb::ListMessagesRequest::default(), user))
        .await
        .expect("ListMessages")
        .into_inner()
        .messages
}

#[tokio::test]
async fn a_participant_copies_colleagues_in_who_are_told_and_asked_for_nothing() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("dave", "").await;
    app.add_user("eve", "").await;
    app.add_user_with("carol", "carol@example.com", "zh-CN")
        .await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(500)).await;
    let task = instance.open_tasks[0].clone();

    // Someone who takes no part in the request copies nobody in.
    let err = cc_as(&app, &instance.id, "eve", &["carol"], "")
        .await
        .expect_err("eve is no participant");
    assert_refused(&err, Code::PermissionDenied, &["initiator"]);
    // A user the directory does not know is named, and nobody is copied.
    let err = cc_as(&app, &instance.id, "initiator", &["carol", "ghost"], "")
        .await
        .expect_err("ghost");
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["user_ids", "\"ghost\"", "directory"],
    );
    assert!(messages_of(&app, "carol").await.is_empty());

    // The approver (a participant) copies two colleagues in; a retry copies nobody twice.
    let copied = cc_as(
        &app,
        &instance.id,
        "mary",
        &["carol", "dave", "carol"],
        "cc-1",
    )
    .await
    .expect("carbon copy");
    assert_eq!(copied, ["carol", "dave"]);
    let again = cc_as(
        &app,
        &instance.id,
        "mary",
        &["carol", "dave", "carol"],
        "cc-1",
    )
    .await
    .expect("retry");
    assert_eq!(again, ["carol", "dave"]);

    let carol = messages_of(&app, "carol").await;
    assert_eq!(carol.len(), 1, "{carol:?}");
    assert_eq!(carol[0].kind, pb::MessageKind::Cc as i32);
    assert_eq!(carol[0].process_instance_id, instance.id);
    assert_eq!(carol[0].sender, "mary");
    assert!(carol[0].title.contains("抄送"), "{:?}", carol[0].title);
    assert!(
        carol[0].body.contains("please note the amount"),
        "{:?}",
        carol[0].body
    );
    let dave = messages_of(&app, "dave").await;
    assert_eq!(dave.len(), 1);
    assert!(dave[0].title.contains("[CC]"), "{:?}", dave[0].title);

    // The FYI mail: in carol's language, no reply token, no approval to answer.
    let mail = app
        .mail_where("carbon copy to carol", |m| {
            header(m, "To").contains("carol@example.com")
        })
        .await;
    assert!(!mail.contains("\r\nReply-To:"), "no reply address: {mail}");
    assert_eq!(header(&mail, "Auto-Submitted"), "auto-generated");
    let text = text_of(&mail);
    assert!(text.contains("无需您处理"), "{text}");
    // A reply to it decides nothing.
    let answer = format!(
        "From: carol@example.com\r\nTo: approvals@replyflow.test\r\nSubject: Re: cc\r\n\
         Message-ID: <cc-reply@x>\r\nIn-Reply-To: {id}\r\nReferences: {id}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n同意\r\n",
        id = header(&mail, "Message-ID")
    );
    let answered = submit(&app, answer.into_bytes()).await;
    assert_ne!(
        answered.verdict,
        pb::Verdict::Applied as i32,
        "{answered:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "carbon_copied").count(),
        1,
        "{kinds:?}"
    );
    let tasks = app.tasks_of(&instance.id).await;
    assert_eq!(tasks.len(), 1, "a carbon copy opens no task");
    app.stop().await;
}

#[tokio::test]
async fn nobody_is_copied_in_on_a_finished_request() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("dave", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(500)).await;
    app.cancel_as(&instance.id, "initiator")
        .await
        .expect("cancel");
    let err = cc_as(&app, &instance.id, "initiator", &["dave"], "")
        .await
        .expect_err("cancelled");
    assert_refused(&err, Code::FailedPrecondition, &["cancelled"]);
    let err = cc_as(&app, &instance.id, "initiator", &[], "")
        .await
        .expect_err("nobody");
    assert_refused(&err, Code::InvalidArgument, &["user_ids"]);
    app.stop().await;
}

fn cc_definition(cc: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="copied" name="采购申请" isExecutable="true">
             <startEvent id="s"/>
             <userTask id="a1" name="经理审批" replyflow:assignee="mary" replyflow:cc="{cc}"/>
             <userTask id="a2" name="财务审批" replyflow:assignee="fred" replyflow:cc="dave"/>
             <endEvent id="e"/>
             <sequenceFlow id="f1" sourceRef="s" targetRef="a1"/>
             <sequenceFlow id="f2" sourceRef="a1" targetRef="a2"/>
             <sequenceFlow id="f3" sourceRef="a2" targetRef="e"/>
           </process></definitions>"#
    )
}

#[tokio::test]
async fn a_task_with_replyflow_cc_copies_its_users_in_as_it_opens() {
    let app = spawn_app().await;
    for user in ["mary", "fred", "dave"] {
        app.add_user(user, "").await;
    }
    app.add_user_with("carol", "carol@example.com", "zh-CN")
        .await;
    let err = app
        .deploy_xml(&cc_definition("${not a name}"))
        .await
        .expect_err("bad cc");
    assert_refused(&err, Code::InvalidArgument, &["a1", "replyflow:cc"]);
    app.deploy_xml(&cc_definition("${cc_users}"))
        .await
        .expect("deploy");

    let instance = app
        .start(
            "copied",
            serde_json::json!({"cc_users": ["carol", "dave", "ghost", "carol"]}),
        )
        .await;
    let first = instance.open_tasks[0].clone();
    let carol = messages_of(&app, "carol").await;
    assert_eq!(carol.len(), 1, "{carol:?}");
    assert_eq!(carol[0].kind, pb::MessageKind::Cc as i32);
    assert_eq!(carol[0].task_id, first.id);
    assert!(carol[0].body.contains("经理审批"), "{:?}", carol[0].body);
    assert_eq!(messages_of(&app, "dave").await.len(), 1);
    let mail = app
        .mail_where("carbon copy to carol", |m| {
            header(m, "To").contains("carol@example.com")
        })
        .await;
    assert!(!mail.contains("\r\nReply-To:"), "{mail}");
    // The unknown user is left out and named in the audit trail; no task for anyone copied.
    let events = app.audit_events(&instance.id).await;
    let copied = events
        .iter()
        .find(|e| e.kind == "carbon_copied")
        .expect("carbon_copied");
    assert_eq!(copied.detail["to"], serde_json::json!(["carol", "dave"]));
    assert_eq!(copied.detail["unknown"], serde_json::json!(["ghost"]));
    assert_eq!(app.tasks_of(&instance.id).await.len(), 1);

    // The next task copies dave in, written literally.
    app.complete(&first, "approve").await.expect("approve");
    assert_eq!(messages_of(&app, "dave").await.len(), 2);
    assert_eq!(messages_of(&app, "carol").await.len(), 1);
    app.stop().await;
}
