//! Reminders (催办) through the real server: armed and stopped by transitions, fired by the
//! scheduler on a clock the tests move (a 3 × PT4H reminder with escalation runs in
//! milliseconds), escalated once, sent by hand, listed. The cron job is set to a far-away time in
//! most tests so that the test decides when a tick happens; one test lets the real cron run.
use std::{sync::Arc, time::Duration};

use replyflow::clock::ManualClock;
use serde_json::json;
use tonic::Code;

use crate::helpers::{TestApp, eventually, reply, req, spawn_app_at, spawn_app_with, submit};
use replyflow::proto::pb;

const HOUR: i64 = 3_600_000;
const T0: i64 = 1_800_000_000_000;

/// A definition whose tasks are chased by `t` (count, interval, channels, escalation), with
/// `body` as the process content.
fn definition(key: &str, reminder: &str, body: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="{key}" name="催办测试" isExecutable="true">
             <extensionElements><replyflow:reminderType id="t" {reminder}/></extensionElements>
             {body}
           </process></definitions>"#
    )
}

fn task(id: &str, assignee: &str) -> String {
    format!(
        r#"<userTask id="{id}" name="{id} approval" replyflow:assignee="{assignee}" replyflow:reminderType="t"/>"#
    )
}

fn flow(from: &str, to: &str) -> String {
    format!(r#"<sequenceFlow id="{from}_{to}" sourceRef="{from}" targetRef="{to}"/>"#)
}

fn one_task(key: &str, reminder: &str) -> String {
    definition(
        key,
        reminder,
        &format!(
            r#"<startEvent id="s"/>{}<endEvent id="e"/>{}{}"#,
            task("a1", "alice"),
            flow("s", "a1"),
            flow("a1", "e")
        ),
    )
}

/// An app on a manual clock at T0 whose cron job never ticks by itself.
async fn app_at(clock: &Arc<ManualClock>) -> TestApp {
    let clock: Arc<dyn replyflow::clock::Clock> = clock.clone();
    let app = spawn_app_at(clock, |s| {
        s.reminders.schedule = "0 0 0 1 1 *".into();
        s.security.admins = "admin, root".into();
    })
    .await;
    app.add_user("boss", "").await;
    app.add_user("alice", "boss").await;
    app.add_user("bob", "boss").await;
    app.add_user("ceo", "").await;
    app
}

async fn fire(app: &TestApp) {
    app.server_workflow
        .fire_due_reminders(500)
        .await
        .expect("firing due reminders");
}

async fn reminders_of(app: &TestApp, instance_id: &str) -> Vec<pb::Reminder> {
    app.reminders()
        .list_reminders(req(
            pb::ListRemindersRequest {
                process_instance_id: instance_id.into(),
                ..Default::default()
            },
            "alice",
        ))
        .await
        .expect("ListReminders")
        .into_inner()
        .reminders
}

async fn messages_of(app: &TestApp, user: &str) -> Vec<pb::Message> {
    app.reminders()
        .list_messages(req(pb::ListMessagesRequest::default(), user))
        .await
        .expect("ListMessages")
        .into_inner()
        .messages
}

fn state(r: &pb::Reminder) -> pb::ReminderState {
    pb::ReminderState::try_from(r.state).unwrap_or(pb::ReminderState::Unspecified)
}

fn edge(r: &pb::Reminder) -> (String, String) {
    (r.start_activity_id.clone(), r.end_activity_id.clone())
}

#[tokio::test]
async fn a_3_x_pt4h_reminder_runs_out_and_escalates_to_the_manager_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "urgent",
        r#"count="3" interval="PT4H" channels="inbox,email" escalation="notify-manager""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("urgent", json!({})).await;

    let armed = reminders_of(&app, &instance.id).await;
    assert_eq!(armed.len(), 1);
    assert_eq!(edge(&armed[0]), ("s".into(), "a1".into()));
    assert_eq!(state(&armed[0]), pb::ReminderState::New);
    assert_eq!(armed[0].count, 3);
    assert_eq!(armed[0].interval, "PT4H");
    assert_eq!(armed[0].recipients, vec!["alice"]);

    // Not due yet: nothing happens.
    clock.advance(4 * HOUR - 1);
    fire(&app).await;
    assert_eq!(
        state(&reminders_of(&app, &instance.id).await[0]),
        pb::ReminderState::New
    );

    let expected = [
        (1, pb::ReminderState::Reminded),
        (2, pb::ReminderState::Reminded),
        (3, pb::ReminderState::RemindCompleted),
    ];
    for (sent, expected_state) in expected {
        clock.advance(if sent == 1 { 1 } else { 4 * HOUR });
        fire(&app).await;
        let r = &reminders_of(&app, &instance.id).await[0];
        assert_eq!((r.sent_count, state(r)), (sent, expected_state));
    }
    let inbox = messages_of(&app, "alice").await;
    assert_eq!(inbox.len(), 3, "one in-system message per reminder");
    assert!(
        inbox
            .iter()
            .all(|m| m.kind == pb::MessageKind::Reminder as i32)
    );
    assert!(
        inbox[0].title.contains("a1 approval"),
        "{:?}",
        inbox[0].title
    );
    // Each reminder also queued a mail carrying the task's reply token.
    let store = app.store().await;
    let reminder_mail: i64 = sqlx::query_scalar::<sqlx::Any, i64>(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'reminder' AND recipient = 'alice@example.com'",
    )
    .fetch_one(store.pool())
    .await
    .expect("count reminder mail");
    assert_eq!(reminder_mail, 3);

    // One more interval with the task still open: RemindFailed, the manager is told, once.
    clock.advance(4 * HOUR);
    fire(&app).await;
    clock.advance(4 * HOUR);
    fire(&app).await;
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::RemindFailed);
    assert!(r.escalated);
    assert!(r.next_fire_at.is_none());
    let boss = messages_of(&app, "boss").await;
    assert_eq!(boss.len(), 1, "escalation runs exactly once: {boss:?}");
    assert_eq!(boss[0].kind, pb::MessageKind::Escalation as i32);

    let kinds = app.event_kinds(&instance.id).await;
    for kind in [
        "reminder_new",
        "reminder_reminded",
        "reminder_remind_completed",
        "reminder_remind_failed",
        "reminder_escalated",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
    assert_eq!(
        kinds.iter().filter(|k| *k == "reminder_escalated").count(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn completing_stops_reminders_before_and_after_they_fired() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let body = format!(
        r#"<startEvent id="s"/>{}{}<endEvent id="e"/>{}{}{}"#,
        task("a1", "alice"),
        task("a2", "bob"),
        flow("s", "a1"),
        flow("a1", "a2"),
        flow("a2", "e")
    );
    app.deploy_xml(&definition(
        "seq",
        r#"count="2" interval="PT1H" channels="inbox""#,
        &body,
    ))
    .await
    .expect("deploy");
    let instance = app.start("seq", json!({})).await;
    let a1 = instance.open_tasks[0].clone();
    app.complete(&a1, "approve").await.expect("complete a1");
    clock.advance(HOUR);
    fire(&app).await;
    let a2 = app
        .tasks_of(&instance.id)
        .await
        .into_iter()
        .find(|t| t.activity_id == "a2");
    let a2 = a2.expect("a2 open");
    app.complete(&a2, "approve").await.expect("complete a2");

    let all = reminders_of(&app, &instance.id).await;
    let states: Vec<_> = all.iter().map(|r| (edge(r), state(r))).collect();
    assert_eq!(
        states,
        vec![
            (
                ("s".into(), "a1".into()),
                pb::ReminderState::FinishedBeforeRemind
            ),
            (
                ("a1".into(), "a2".into()),
                pb::ReminderState::FinishedAfterRemind
            ),
        ]
    );
    assert!(
        all.iter()
            .all(|r| r.finished_at.is_some() && r.next_fire_at.is_none())
    );
    app.stop().await;
}

#[tokio::test]
async fn cancelling_the_instance_cancels_its_reminders() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "c",
        r#"count="1" interval="PT1H" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("c", json!({})).await;
    app.cancel_as(&instance.id, "initiator")
        .await
        .expect("cancel");
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::Cancelled);
    clock.advance(2 * HOUR);
    fire(&app).await;
    assert!(
        messages_of(&app, "alice").await.is_empty(),
        "a cancelled reminder never fires"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reminder_waiting_at_a_parallel_join_chases_the_other_branch() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let body = format!(
        r#"<startEvent id="s"/><parallelGateway id="split"/>{}{}<parallelGateway id="join"/>{}<endEvent id="e"/>
           {}{}{}{}{}{}{}"#,
        task("a1", "alice"),
        task("a2", "bob"),
        task("a3", "boss"),
        flow("s", "split"),
        flow("split", "a1"),
        flow("split", "a2"),
        flow("a1", "join"),
        flow("a2", "join"),
        flow("join", "a3"),
        flow("a3", "e")
    );
    app.deploy_xml(&definition(
        "pj",
        r#"count="2" interval="PT1H" channels="inbox""#,
        &body,
    ))
    .await
    .expect("deploy");
    let instance = app.start("pj", json!({})).await;
    let a1 = instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == "a1")
        .cloned();
    app.complete(&a1.expect("a1"), "approve").await.expect("a1");
    let waiting = reminders_of(&app, &instance.id).await;
    let to_a3 = waiting
        .iter()
        .find(|r| edge(r) == ("a1".into(), "a3".into()));
    let to_a3 = to_a3.expect("(a1→a3) armed when a1 reached the join");
    assert_eq!(
        to_a3.recipients,
        vec!["bob"],
        "it chases the branch the join waits for"
    );
    clock.advance(HOUR);
    fire(&app).await;
    let bob = messages_of(&app, "bob").await;
    assert_eq!(bob.len(), 2, "(s→a2) and (a1→a3) both remind bob: {bob:?}");

    let a2 = app
        .tasks_of(&instance.id)
        .await
        .into_iter()
        .find(|t| t.activity_id == "a2");
    app.complete(&a2.expect("a2"), "approve").await.expect("a2");
    let after = reminders_of(&app, &instance.id).await;
    let into_a3: Vec<_> = after.iter().filter(|r| r.end_activity_id == "a3").collect();
    assert_eq!(into_a3.len(), 2, "one edge per incoming branch: {after:?}");
    assert!(into_a3.iter().all(|r| r.recipients == vec!["boss"]));

    let a3 = app
        .tasks_of(&instance.id)
        .await
        .into_iter()
        .find(|t| t.activity_id == "a3");
    app.complete(&a3.expect("a3"), "approve").await.expect("a3");
    let done = reminders_of(&app, &instance.id).await;
    assert!(
        done.iter()
            .filter(|r| r.end_activity_id == "a3")
            .all(|r| state(r) == pb::ReminderState::FinishedAfterRemind
                || state(r) == pb::ReminderState::FinishedBeforeRemind),
        "{done:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_decided_deferred_choice_stops_the_whole_group() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let body = format!(
        r#"<startEvent id="s"/><exclusiveGateway id="x"/>{}{}<endEvent id="e"/>{}{}{}{}{}"#,
        task("a2", "alice"),
        task("a3", "bob"),
        flow("s", "x"),
        flow("x", "a2"),
        flow("x", "a3"),
        flow("a2", "e"),
        flow("a3", "e")
    );
    app.deploy_xml(&definition(
        "dc",
        r#"count="2" interval="PT1H" channels="inbox""#,
        &body,
    ))
    .await
    .expect("deploy");
    let instance = app.start("dc", json!({})).await;
    let armed = reminders_of(&app, &instance.id).await;
    assert_eq!(armed.len(), 2);
    assert!(!armed[0].group_id.is_empty());
    assert_eq!(armed[0].group_id, armed[1].group_id);
    let a3 = instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == "a3")
        .cloned();
    app.complete(&a3.expect("a3"), "approve").await.expect("a3");
    let stopped = reminders_of(&app, &instance.id).await;
    assert!(
        stopped
            .iter()
            .all(|r| state(r) == pb::ReminderState::FinishedBeforeRemind),
        "{stopped:?}"
    );
    app.stop().await;
}

/// Runs one task's reminder out (count 1, PT1H) under `escalation`; returns the app and instance.
async fn run_out(escalation: &str) -> (Arc<ManualClock>, TestApp, pb::ProcessInstance) {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "esc",
        &format!(r#"count="1" interval="PT1H" channels="inbox" escalation="{escalation}""#),
    ))
    .await
    .expect("deploy");
    let instance = app.start("esc", json!({})).await;
    clock.advance(HOUR);
    fire(&app).await;
    clock.advance(HOUR);
    fire(&app).await;
    // Escalation runs once: later ticks find nothing due.
    clock.advance(5 * HOUR);
    fire(&app).await;
    (clock, app, instance)
}

#[tokio::test]
async fn escalation_reassign_manager_hands_the_task_to_the_manager() {
    let (_clock, app, instance) = run_out("reassign-manager").await;
    let task = app.task(&instance.open_tasks[0].id).await;
    assert_eq!(task.assignee, "boss");
    assert_eq!(task.status, pb::TaskStatus::Open as i32);
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "task_reassigned").count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn escalation_complete_decides_the_task_with_the_default_outcome() {
    let (_clock, app, instance) = run_out("complete:approve").await;
    let task = app.task(&instance.open_tasks[0].id).await;
    assert_eq!(task.status, pb::TaskStatus::Completed as i32);
    assert_eq!(task.outcome, "approve");
    assert_eq!(task.completed_via, pb::CompletedVia::Escalation as i32);
    assert_eq!(
        app.instance(&instance.id).await.status,
        pb::InstanceStatus::Completed as i32
    );
    // The escalation completed the end activity: the reminder fired, so it finished after
    // reminding; the escalated mark keeps that it ran out.
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::FinishedAfterRemind);
    assert!(r.escalated);
    app.stop().await;
}

#[tokio::test]
async fn a_reminder_that_ran_out_and_escalated_finishes_after_remind_when_its_task_is_done() {
    let (_clock, app, instance) = run_out("notify:ceo").await;
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::RemindFailed);

    // Alice decides after all: the reminder ends like any reminder that fired.
    app.complete(&instance.open_tasks[0], "approve")
        .await
        .expect("alice completes a1");
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::FinishedAfterRemind);
    assert!(r.escalated, "the escalated mark keeps its history");
    assert!(r.next_fire_at.is_none());
    let kinds = app.event_kinds(&instance.id).await;
    assert!(
        kinds.iter().any(|k| k == "reminder_finished_after_remind"),
        "{kinds:?}"
    );

    // ReminderStats still counts it as failed and escalated.
    let stats = app
        .reminders()
        .reminder_stats(req(
            pb::ReminderStatsRequest {
                definition_key: "esc".into(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("ReminderStats")
        .into_inner();
    assert_eq!(stats.rows.len(), 1);
    let row = &stats.rows[0];
    assert_eq!(
        (
            row.armed,
            row.finished_after_remind,
            row.failed,
            row.escalated
        ),
        (1, 1, 1, 1)
    );
    app.stop().await;
}

#[tokio::test]
async fn escalation_notify_user_tells_that_user() {
    let (_clock, app, instance) = run_out("notify:ceo").await;
    let ceo = messages_of(&app, "ceo").await;
    assert_eq!(ceo.len(), 1);
    assert_eq!(ceo[0].task_id, instance.open_tasks[0].id);
    assert!(messages_of(&app, "boss").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn escalation_none_only_marks_the_reminder_failed() {
    let (_clock, app, instance) = run_out("none").await;
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::RemindFailed);
    assert!(!r.escalated);
    assert!(messages_of(&app, "boss").await.is_empty());
    assert_eq!(app.task(&instance.open_tasks[0].id).await.assignee, "alice");
    app.stop().await;
}

#[tokio::test]
async fn after_downtime_a_reminder_fires_once_not_once_per_missed_interval() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "late",
        r#"count="5" interval="PT1H" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("late", json!({})).await;
    clock.advance(30 * HOUR);
    fire(&app).await;
    fire(&app).await;
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(r.sent_count, 1);
    let next = r
        .next_fire_at
        .as_ref()
        .map(|t| t.seconds * 1000)
        .unwrap_or_default();
    assert_eq!(
        next,
        T0 + 31 * HOUR,
        "the next one is an interval after the catch-up"
    );
    app.stop().await;
}

#[tokio::test]
async fn sms_to_a_user_without_phone_falls_back_to_the_next_channel() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "sms",
        r#"count="1" interval="PT1H" channels="sms,inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("sms", json!({})).await;
    clock.advance(HOUR);
    fire(&app).await;
    let inbox = messages_of(&app, "alice").await;
    assert_eq!(
        inbox.len(),
        2,
        "the inbox copy and the fallback for the SMS: {inbox:?}"
    );
    assert!(
        inbox
            .iter()
            .any(|m| m.body.contains("sms reminder could not be delivered"))
    );
    let events = app.audit_events(&instance.id).await;
    let fallback = events
        .iter()
        .find(|e| e.kind == "reminder_channel_fallback");
    let fallback = fallback.expect("the fallback is an audit event");
    assert_eq!(fallback.detail["failed"], "sms");
    assert_eq!(fallback.detail["fallback"], "inbox");
    app.stop().await;
}

#[tokio::test]
async fn remind_now_is_for_the_initiator_or_an_admin_and_rate_limited() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "m",
        r#"count="1" interval="PT1H" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("m", json!({})).await;
    let task_id = instance.open_tasks[0].id.clone();
    let remind = |user: &str, request_id: &str| {
        let mut client = app.reminders();
        let request = req(
            pb::RemindNowRequest {
                task_id: task_id.clone(),
                message: "请今天处理".into(),
                request_id: request_id.into(),
                channels: vec![],
            },
            user,
        );
        async move { client.remind_now(request).await }
    };
    let denied = remind("bob", "")
        .await
        .expect_err("bob is neither initiator nor admin");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let sent = remind("initiator", "r1")
        .await
        .expect("initiator reminds")
        .into_inner();
    assert_eq!(sent.recipient, "alice");
    assert_eq!(sent.channels, vec![pb::Channel::Inbox as i32]);
    assert!(!sent.inbox_message_id.is_empty());
    let again = remind("initiator", "r1")
        .await
        .expect("same request id")
        .into_inner();
    assert_eq!(
        again.inbox_message_id, sent.inbox_message_id,
        "a retry sends nothing more"
    );
    assert_eq!(messages_of(&app, "alice").await.len(), 1);

    let limited = remind("root", "").await.expect_err("rate limited per task");
    assert_eq!(limited.code(), Code::FailedPrecondition);
    assert!(
        limited.message().contains("next may be sent from"),
        "{}",
        limited.message()
    );
    clock.advance(11 * 60_000);
    remind("root", "")
        .await
        .expect("an admin may, once the interval passed");
    let inbox = messages_of(&app, "alice").await;
    assert_eq!(inbox.len(), 2);
    assert!(
        inbox
            .iter()
            .all(|m| m.kind == pb::MessageKind::ManualReminder as i32)
    );
    assert!(inbox[0].body.contains("请今天处理"));
    // The automatic reminder's count and schedule are untouched.
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!((r.sent_count, state(r)), (0, pb::ReminderState::New));

    let bad = app
        .reminders()
        .remind_now(req(
            pb::RemindNowRequest {
                task_id: task_id.clone(),
                channels: vec![pb::Channel::Sms as i32],
                ..Default::default()
            },
            "root",
        ))
        .await
        .expect_err("alice has no phone");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("channels"), "{}", bad.message());

    app.complete(&instance.open_tasks[0], "approve")
        .await
        .expect("complete");
    clock.advance(HOUR);
    let closed = remind("root", "").await.expect_err("closed task");
    assert_eq!(closed.code(), Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test]
async fn list_reminders_filters_by_task_recipient_and_state() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "l",
        r#"count="2" interval="PT1H" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    let first = app.start("l", json!({})).await;
    let _second = app.start("l", json!({})).await;
    let list = |filter: pb::ListRemindersRequest| {
        let mut client = app.reminders();
        async move {
            client
                .list_reminders(req(filter, "admin"))
                .await
                .map(|r| r.into_inner().reminders)
        }
    };
    let by_task = list(pb::ListRemindersRequest {
        task_id: first.open_tasks[0].id.clone(),
        ..Default::default()
    })
    .await
    .expect("by task");
    assert_eq!(by_task.len(), 1);
    assert_eq!(by_task[0].process_instance_id, first.id);
    let by_recipient = list(pb::ListRemindersRequest {
        recipient: "alice".into(),
        ..Default::default()
    })
    .await
    .expect("by recipient");
    assert_eq!(by_recipient.len(), 2);
    assert!(
        list(pb::ListRemindersRequest {
            recipient: "bob".into(),
            ..Default::default()
        })
        .await
        .expect("bob")
        .is_empty()
    );
    let reminded = list(pb::ListRemindersRequest {
        state: pb::ReminderState::Reminded as i32,
        ..Default::default()
    })
    .await
    .expect("by state");
    assert!(reminded.is_empty());
    let paged = list(pb::ListRemindersRequest {
        page_size: 1,
        ..Default::default()
    })
    .await
    .expect("page");
    assert_eq!(paged.len(), 1);
    let bad = list(pb::ListRemindersRequest {
        state: 99,
        ..Default::default()
    })
    .await
    .expect_err("unknown state");
    assert_eq!(bad.code(), Code::InvalidArgument);
    app.stop().await;
}

#[tokio::test]
async fn two_schedulers_on_one_database_fire_each_reminder_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "two",
        r#"count="3" interval="PT1H" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    for _ in 0..40 {
        app.start("two", json!({})).await;
    }
    // A second server on the same database, on the same clock.
    let db = crate::helpers::TestDb::reuse(&app.db);
    let shared: Arc<dyn replyflow::clock::Clock> = clock.clone();
    let other = crate::helpers::spawn_app_on_clock(db, shared, |s| {
        s.reminders.schedule = "0 0 0 1 1 *".into();
    })
    .await;
    clock.advance(HOUR);
    let (a, b) = tokio::join!(
        app.server_workflow.fire_due_reminders(7),
        other.server_workflow.fire_due_reminders(7),
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    // Drain what is left in small batches from both.
    for _ in 0..10 {
        let (x, y) = tokio::join!(
            app.server_workflow.fire_due_reminders(7),
            other.server_workflow.fire_due_reminders(7),
        );
        x.expect("first");
        y.expect("second");
    }
    assert!(a.reminded + b.reminded <= 40);
    let store = app.store().await;
    let sent: Vec<i64> = sqlx::query_scalar::<sqlx::Any, i64>("SELECT sent_count FROM reminders")
        .fetch_all(store.pool())
        .await
        .expect("sent counts");
    assert_eq!(sent.len(), 40);
    assert!(
        sent.iter().all(|n| *n == 1),
        "each reminder fired exactly once: {sent:?}"
    );
    let messages: i64 = sqlx::query_scalar::<sqlx::Any, i64>("SELECT COUNT(*) FROM messages")
        .fetch_one(store.pool())
        .await
        .expect("messages");
    assert_eq!(messages, 40);
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_due_query_reads_the_due_index_not_every_armed_reminder() {
    let app = spawn_app_with(|_| {}).await;
    let store = app.store().await;
    // 20,000 armed reminders, 100 of them due, and fresh statistics: the planner's real choice.
    sqlx::query::<sqlx::Any>(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO reminders (id, instance_id, definition_key, start_activity, end_activity, via_join, \
         group_id, reminder_type, count, interval_ms, channels, escalation, state, sent_count, next_fire_at, \
         escalated, created_at, first_fired_at, last_fired_at, finished_at) \
         SELECT 'r' || i, 'i' || i, 'k', 's', 'a', '', '', 't', 3, 1000, 'inbox', 'none', 'new', 0, \
         CASE WHEN i <= 100 THEN $1 - i ELSE $1 + 1000000 + i END, 0, 0, 0, 0, 0 FROM n",
    )
    .bind(T0)
    .execute(store.pool())
    .await
    .expect("arming 20,000 reminders");
    sqlx::query::<sqlx::Any>("ANALYZE reminders")
        .execute(store.pool())
        .await
        .expect("analyze");
    let plan = store
        .explain_due_query(T0)
        .await
        .expect("explain")
        .join("\n");
    println!("due query plan on {}:\n{plan}", crate::helpers::backend());
    assert!(plan.contains("reminders_due"), "plan: {plan}");
    assert!(
        !plan.contains("SCAN reminders\n") && !plan.contains("Seq Scan"),
        "plan: {plan}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_cron_scheduler_fires_a_due_reminder_by_itself() {
    // Real clock, the default schedule (every second), a one-second interval.
    let app = spawn_app_with(|_| {}).await;
    app.add_user("alice", "").await;
    app.deploy_xml(&one_task(
        "cron",
        r#"count="1" interval="PT1S" channels="inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("cron", json!({})).await;
    // The one test on real time: the cron job is what is under test.
    eventually(Duration::from_secs(10), async || {
        let r = &reminders_of(&app, &instance.id).await[0];
        match state(r) {
            pb::ReminderState::RemindCompleted => Ok(()),
            other => Err(format!(
                "the cron job has not fired the reminder: {other:?}"
            )),
        }
    })
    .await;
    assert_eq!(messages_of(&app, "alice").await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn replying_to_a_reminder_mail_decides_the_task() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&one_task(
        "mail",
        r#"count="2" interval="PT1H" channels="email""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("mail", json!({})).await;
    clock.advance(HOUR);
    fire(&app).await;
    let store = app.store().await;
    let body: Vec<u8> =
        sqlx::query_scalar::<sqlx::Any, Vec<u8>>("SELECT body FROM outbox WHERE kind = 'reminder'")
            .fetch_one(store.pool())
            .await
            .expect("the reminder mail is in the outbox");
    let reminder = String::from_utf8_lossy(&body).to_string();
    let verdict = submit(
        &app,
        reply(
            "alice@example.com",
            &reminder,
            "同意",
            "<reply-to-reminder@example.com>",
        ),
    )
    .await;
    assert_eq!(verdict.verdict, pb::Verdict::Applied as i32, "{verdict:?}");
    let task = app.task(&instance.open_tasks[0].id).await;
    assert_eq!(task.outcome, "approve");
    assert_eq!(task.completed_via, pb::CompletedVia::Email as i32);
    let r = &reminders_of(&app, &instance.id).await[0];
    assert_eq!(state(r), pb::ReminderState::FinishedAfterRemind);
    app.stop().await;
}

#[tokio::test]
async fn an_sms_the_gateway_cannot_take_falls_back_to_the_next_channel_later() {
    // No gateway configured: the outbox fails the SMS for good, which queues its fallback; the
    // next scheduler pass sends it on the next channel of the type and records the fallback.
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.directory()
        .upsert_user(req(
            pb::UpsertUserRequest {
                user: Some(pb::User {
                    id: "alice".into(),
                    display_name: "Alice".into(),
                    email: "alice@example.com".into(),
                    phone: "+8613800000000".into(),
                    manager_id: "boss".into(),
                    locale: "zh-CN".into(),
                    ..Default::default()
                }),
            },
            "admin",
        ))
        .await
        .expect("alice with a phone");
    app.deploy_xml(&one_task(
        "sms2",
        r#"count="1" interval="PT1H" channels="sms,inbox""#,
    ))
    .await
    .expect("deploy");
    let instance = app.start("sms2", json!({})).await;
    clock.advance(HOUR);
    fire(&app).await;
    assert_eq!(
        messages_of(&app, "alice").await.len(),
        1,
        "the inbox copy at once"
    );
    let store = app.store().await;
    // The outbox worker takes the SMS in the background.
    eventually(Duration::from_secs(5), async || {
        let status: Option<String> =
            sqlx::query_scalar::<sqlx::Any, String>("SELECT status FROM outbox WHERE kind = 'sms'")
                .fetch_optional(store.pool())
                .await
                .expect("sms row");
        match status.as_deref() {
            Some("perm_failed") => Ok(()),
            other => Err(format!(
                "the outbox worker has not failed the SMS for good: {other:?}"
            )),
        }
    })
    .await;
    fire(&app).await;
    let inbox = messages_of(&app, "alice").await;
    assert_eq!(inbox.len(), 2, "the fallback copy: {inbox:?}");
    assert!(
        inbox.iter().any(|m| m.body.contains("短信未能送达")),
        "{inbox:?}"
    );
    let events = app.audit_events(&instance.id).await;
    let fallback = events
        .iter()
        .find(|e| e.kind == "reminder_channel_fallback")
        .expect("the fallback is an audit event");
    assert_eq!(fallback.detail["failed"], "sms");
    assert_eq!(fallback.detail["fallback"], "inbox");
    assert!(
        fallback.detail["error"]
            .as_str()
            .is_some_and(|e| e.contains("no SMS gateway configured")),
        "{fallback:?}"
    );
    fire(&app).await;
    assert_eq!(
        messages_of(&app, "alice").await.len(),
        2,
        "a fallback is taken once"
    );
    app.stop().await;
}

#[tokio::test]
async fn escalation_never_hands_a_request_to_its_own_initiator() {
    // Alice's manager boss starts a request that alice must approve; when alice's reminders run
    // out, `reassign-manager` must not hand boss his own request (four eyes): it goes one level
    // up, to boss's manager.
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.add_user("boss", "ceo").await;
    app.deploy_xml(&one_task(
        "esc",
        r#"count="1" interval="PT1H" channels="inbox" escalation="reassign-manager""#,
    ))
    .await
    .expect("deploy");
    let instance = app
        .workflow()
        .start_process(req(
            pb::StartProcessRequest {
                definition_key: "esc".into(),
                ..Default::default()
            },
            "boss",
        ))
        .await
        .expect("boss starts")
        .into_inner();
    for _ in 0..3 {
        clock.advance(HOUR);
        fire(&app).await;
    }
    let task = app.task(&instance.open_tasks[0].id).await;
    assert_eq!(task.assignee, "ceo", "one level above the initiator");
    assert_eq!(task.status, pb::TaskStatus::Open as i32);
    app.stop().await;
}

#[tokio::test]
async fn two_completing_escalations_of_one_instance_in_one_tick_both_apply_one_after_the_other() {
    // Both branches of a parallel split run out of reminders at the same tick and escalate with
    // `complete:approve`. Each completion is computed before the scheduler's transaction (no
    // condition runs under the write lock); the second finds the instance changed by the first,
    // is left due, and applies at the next tick from the new state.
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let body = format!(
        r#"<startEvent id="s"/><parallelGateway id="split"/>{}{}<parallelGateway id="join"/><endEvent id="e"/>
           {}{}{}{}{}{}"#,
        task("a1", "alice"),
        task("a2", "bob"),
        flow("s", "split"),
        flow("split", "a1"),
        flow("split", "a2"),
        flow("a1", "join"),
        flow("a2", "join"),
        flow("join", "e")
    );
    app.deploy_xml(&definition(
        "both",
        r#"count="1" interval="PT1H" channels="inbox" escalation="complete:approve""#,
        &body,
    ))
    .await
    .expect("deploy");
    let instance = app.start("both", json!({})).await;
    assert_eq!(instance.open_tasks.len(), 2);
    clock.advance(HOUR);
    fire(&app).await; // both reminded once: their count is reached
    clock.advance(HOUR);
    fire(&app).await; // both escalate: one applies, the other is left due
    assert_eq!(
        completed_count(&app, &instance).await,
        1,
        "the second escalation waits for the next tick"
    );
    fire(&app).await; // still due: it applies now, from the new state
    assert_eq!(completed_count(&app, &instance).await, 2);
    let done = app.instance(&instance.id).await;
    assert_eq!(done.status, pb::InstanceStatus::Completed as i32);
    for task in &instance.open_tasks {
        let task = app.task(&task.id).await;
        assert_eq!(task.completed_via, pb::CompletedVia::Escalation as i32);
        assert_eq!(task.outcome, "approve");
    }
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "reminder_escalated").count(),
        2,
        "{kinds:?}"
    );
    app.stop().await;
}

async fn completed_count(app: &TestApp, instance: &pb::ProcessInstance) -> usize {
    let mut n = 0;
    for task in &instance.open_tasks {
        if app.task(&task.id).await.status == pb::TaskStatus::Completed as i32 {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn notify_with_a_space_is_refused_at_deploy_and_at_upsert_naming_the_field() {
    // `notify: bob` once passed one validator and failed at run time (" bob" is nobody): both
    // edges now read escalations with the same parser and refuse it.
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let deploy = app
        .deploy_xml(&one_task(
            "spaced",
            r#"count="1" interval="PT1H" channels="inbox" escalation="notify: bob""#,
        ))
        .await
        .expect_err("a definition with notify: bob");
    assert_eq!(deploy.code(), Code::InvalidArgument, "{deploy:?}");
    assert!(
        deploy.message().contains("escalation") && deploy.message().contains("notify: bob"),
        "{}",
        deploy.message()
    );

    let upsert = app
        .reminders()
        .upsert_reminder_type(req(
            pb::UpsertReminderTypeRequest {
                reminder_type: Some(pb::ReminderType {
                    id: "spaced".into(),
                    count: 1,
                    interval: "PT1H".into(),
                    channels: vec![pb::Channel::Inbox as i32],
                    escalation: "notify: bob".into(),
                    ..Default::default()
                }),
            },
            "admin",
        ))
        .await
        .expect_err("a reminder type with notify: bob");
    assert_eq!(upsert.code(), Code::InvalidArgument, "{upsert:?}");
    assert!(
        upsert.message().starts_with("reminder_type.escalation:"),
        "{}",
        upsert.message()
    );
    app.stop().await;
}
