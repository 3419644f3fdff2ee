//! 挂起/激活 (SuspendProcessInstance / ResumeProcessInstance, DESIGN §11): while a request is
//! suspended its tasks stay open but nobody decides them — not by API, not by mail — and its
//! reminders wait; resuming lets everything go on where it stopped.
use std::sync::Arc;

use replyflow::{clock::ManualClock, proto::pb};
use serde_json::json;
use tonic::{Code, Status};

use crate::helpers::{
    TestApp, assert_refused, expense_vars, reply, req, spawn_app, spawn_app_at, status, submit,
    text_of,
};

async fn suspend_as(
    app: &TestApp,
    instance_id: &str,
    user: &str,
    request_id: &str,
) -> Result<pb::ProcessInstance, Status> {
    let message = pb::SuspendProcessInstanceRequest {
        process_instance_id: instance_id.into(),
        comment: "waiting for the budget review".into(),
        request_id: request_id.into(),
    };
    app.workflow()
        .suspend_process_instance(req(message, user))
        .await
        .map(|r| r.into_inner())
}

async fn resume_as(
    app: &TestApp,
    instance_id: &str,
    user: &str,
) -> Result<pb::ProcessInstance, Status> {
    let message = pb::ResumeProcessInstanceRequest {
        process_instance_id: instance_id.into(),
        comment: "budget approved".into(),
        request_id: String::new(),
    };
    app.workflow()
        .resume_process_instance(req(message, user))
        .await
        .map(|r| r.into_inner())
}

async fn complete_as(app: &TestApp, task_id: &str, user: &str) -> Result<(), Status> {
    let message = pb::CompleteTaskRequest {
        task_id: task_id.into(),
        outcome: "approve".into(),
        ..Default::default()
    };
    app.tasks()
        .complete_task(req(message, user))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_suspended_request_is_decided_by_nobody_until_it_is_resumed() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("bob", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(500)).await;
    let task = instance.open_tasks[0].clone();
    let original = crate::helpers::approval_mail(&app).await;

    // Only the initiator or an admin holds a request.
    let err = suspend_as(&app, &instance.id, "mary", "")
        .await
        .expect_err("the approver may not suspend");
    assert_refused(&err, Code::PermissionDenied, &["initiator"]);

    let suspended = suspend_as(&app, &instance.id, "initiator", "hold-1")
        .await
        .expect("suspend");
    assert_eq!(status(&suspended), pb::InstanceStatus::Suspended);
    assert_eq!(suspended.open_tasks.len(), 1, "its task stays open");
    assert!(
        suspended.ended_at.is_none(),
        "a suspended request has not ended"
    );
    // A retry of the same request answers the same, and holds nothing twice.
    let retried = suspend_as(&app, &instance.id, "initiator", "hold-1")
        .await
        .expect("retry");
    assert_eq!(status(&retried), pb::InstanceStatus::Suspended);
    let err = suspend_as(&app, &instance.id, "initiator", "")
        .await
        .expect_err("suspended twice");
    assert_refused(&err, Code::FailedPrecondition, &["already suspended"]);

    // Nothing is decided through the API…
    let err = complete_as(&app, &task.id, "mary")
        .await
        .expect_err("complete");
    assert_refused(&err, Code::FailedPrecondition, &[&instance.id, "suspended"]);
    let err = app
        .reassign_as(&task, "mary", "bob")
        .await
        .expect_err("reassign");
    assert_refused(&err, Code::FailedPrecondition, &["suspended"]);
    // …nor by mail: the approver is told politely, and the approval stays valid.
    let held = submit(
        &app,
        reply("mary@example.com", &original, "同意", "<held@x>"),
    )
    .await;
    assert_eq!(held.verdict, pb::Verdict::Suspended as i32, "{held:?}");
    assert!(held.answered);
    let answer = text_of(&app.answer_to("<held@x>").await);
    assert!(answer.contains("on hold"), "{answer}");
    assert!(answer.contains("changed nothing"), "{answer}");
    let now = app.task(&task.id).await;
    assert_eq!(now.status, pb::TaskStatus::Open as i32);
    assert_eq!(now.assignee, "mary");

    // Listed as suspended.
    let listed = app
        .workflow()
        .list_process_instances(req(
            pb::ListProcessInstancesRequest {
                status: pb::InstanceStatus::Suspended as i32,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("list")
        .into_inner()
        .instances;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].open_tasks.len(), 1);

    // An admin resumes it; resuming a running request is refused.
    let err = resume_as(&app, &instance.id, "bob")
        .await
        .expect_err("bob may not resume");
    assert_refused(&err, Code::PermissionDenied, &["initiator"]);
    let resumed = resume_as(&app, &instance.id, "admin")
        .await
        .expect("resume");
    assert_eq!(status(&resumed), pb::InstanceStatus::Running);
    let err = resume_as(&app, &instance.id, "initiator")
        .await
        .expect_err("resume a running one");
    assert_refused(&err, Code::FailedPrecondition, &["running, not suspended"]);

    // The same approval mail decides now.
    let applied = submit(&app, reply("mary@example.com", &original, "同意", "<go@x>")).await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    assert_eq!(
        status(&app.instance(&instance.id).await),
        pb::InstanceStatus::Completed
    );
    let kinds = app.event_kinds(&instance.id).await;
    let count = |k: &str| kinds.iter().filter(|e| *e == k).count();
    assert_eq!(count("instance_suspended"), 1, "{kinds:?}");
    assert_eq!(count("instance_resumed"), 1, "{kinds:?}");
    let events = app.audit_events(&instance.id).await;
    let suspended = events
        .iter()
        .find(|e| e.kind == "instance_suspended")
        .expect("event");
    assert_eq!(suspended.actor, "initiator");
    assert_eq!(suspended.detail["comment"], "waiting for the budget review");
    app.stop().await;
}

#[tokio::test]
async fn a_finished_request_cannot_be_suspended_and_a_suspended_one_can_still_be_cancelled() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let done = app.start("expense", expense_vars(500)).await;
    complete_as(&app, &done.open_tasks[0].id, "mary")
        .await
        .expect("approve");
    let err = suspend_as(&app, &done.id, "initiator", "")
        .await
        .expect_err("completed");
    assert_refused(
        &err,
        Code::FailedPrecondition,
        &["completed", "cannot be suspended"],
    );
    let err = resume_as(&app, &done.id, "initiator")
        .await
        .expect_err("completed");
    assert_refused(
        &err,
        Code::FailedPrecondition,
        &["completed", "cannot be resumed"],
    );
    let err = suspend_as(&app, "no-such-instance", "initiator", "")
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);

    let held = app.start("expense", expense_vars(500)).await;
    suspend_as(&app, &held.id, "initiator", "")
        .await
        .expect("suspend");
    let cancelled = app.cancel_as(&held.id, "initiator").await.expect("cancel");
    assert_eq!(status(&cancelled), pb::InstanceStatus::Cancelled);
    assert!(cancelled.open_tasks.is_empty());
    let err = resume_as(&app, &held.id, "initiator")
        .await
        .expect_err("cancelled");
    assert_refused(&err, Code::FailedPrecondition, &["cancelled"]);
    app.stop().await;
}

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_800_000_000_000;

fn chased_definition() -> &'static str {
    r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
         xmlns:replyflow="https://replyflow.dev/schema/1">
       <process id="chased" name="催办" isExecutable="true">
         <extensionElements>
           <replyflow:reminderType id="t" count="2" interval="PT4H" channels="inbox"/>
         </extensionElements>
         <startEvent id="s"/>
         <userTask id="a1" name="approval" replyflow:assignee="alice" replyflow:reminderType="t"/>
         <endEvent id="e"/>
         <sequenceFlow id="f1" sourceRef="s" targetRef="a1"/>
         <sequenceFlow id="f2" sourceRef="a1" targetRef="e"/>
       </process></definitions>"#
}

async fn reminder_of(app: &TestApp, instance_id: &str) -> pb::Reminder {
    let mut reminders = app
        .reminders()
        .list_reminders(req(
            pb::ListRemindersRequest {
                process_instance_id: instance_id.into(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("ListReminders")
        .into_inner()
        .reminders;
    assert_eq!(reminders.len(), 1);
    reminders.remove(0)
}

fn millis(at: &Option<prost_types::Timestamp>) -> Option<i64> {
    at.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

#[tokio::test]
async fn reminders_wait_while_suspended_and_then_keep_what_was_left_of_their_wait() {
    let clock = Arc::new(ManualClock::new(T0));
    let dyn_clock: Arc<dyn replyflow::clock::Clock> = clock.clone();
    let app = spawn_app_at(dyn_clock, |s| {
        s.reminders.schedule = "0 0 0 1 1 *".into();
    })
    .await;
    app.add_user("alice", "").await;
    app.deploy_xml(chased_definition()).await.expect("deploy");
    let instance = app.start("chased", json!({})).await;
    let fire = async || {
        app.server_workflow
            .fire_due_reminders(500)
            .await
            .expect("firing due reminders");
    };
    assert_eq!(
        millis(&reminder_of(&app, &instance.id).await.next_fire_at),
        Some(T0 + 4 * HOUR)
    );

    // One hour in, the request is put on hold for ten hours: nothing fires meanwhile.
    clock.advance(HOUR);
    suspend_as(&app, &instance.id, "initiator", "")
        .await
        .expect("suspend");
    let held = reminder_of(&app, &instance.id).await;
    assert!(held.next_fire_at.is_none(), "{held:?}");
    clock.advance(10 * HOUR);
    fire().await;
    let held = reminder_of(&app, &instance.id).await;
    assert_eq!(held.sent_count, 0);
    // Not chased by hand either.
    let task = &instance.open_tasks[0];
    let err = app
        .reminders()
        .remind_now(req(
            pb::RemindNowRequest {
                task_id: task.id.clone(),
                ..Default::default()
            },
            "initiator",
        ))
        .await
        .expect_err("remind a suspended request");
    assert_refused(&err, Code::FailedPrecondition, &["suspended"]);

    // Resumed: the three hours that were left, counted from now.
    resume_as(&app, &instance.id, "initiator")
        .await
        .expect("resume");
    let resumed_at = T0 + 11 * HOUR;
    assert_eq!(
        millis(&reminder_of(&app, &instance.id).await.next_fire_at),
        Some(resumed_at + 3 * HOUR)
    );
    clock.advance(3 * HOUR - 1);
    fire().await;
    assert_eq!(reminder_of(&app, &instance.id).await.sent_count, 0);
    clock.advance(1);
    fire().await;
    let fired = reminder_of(&app, &instance.id).await;
    assert_eq!(fired.sent_count, 1, "{fired:?}");
    assert_eq!(millis(&fired.next_fire_at), Some(resumed_at + 7 * HOUR));
    app.stop().await;
}
