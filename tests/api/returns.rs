//! 退回 over the API (TaskService.ReturnTask, DESIGN §11, issue 12): back to a step already
//! passed, across a parallel split and join, from inside a 会签; every open task withdrawn, joins
//! and signers reset, the target reopened and reminded as if its predecessor had just completed.
use replyflow::proto::pb;
use serde_json::json;

use crate::helpers::{TestApp, req, spawn_app};

fn process(key: &str, body: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="{key}" isExecutable="true">
             <extensionElements>
               <replyflow:reminderType id="chase" count="2" interval="PT1H" channels="inbox"/>
             </extensionElements>
             {body}
           </process></definitions>"#
    )
}

fn task(id: &str, assignee: &str) -> String {
    format!(
        r#"<userTask id="{id}" replyflow:assignee="{assignee}" replyflow:reminderType="chase"/>"#
    )
}

fn flow(from: &str, to: &str) -> String {
    format!(r#"<sequenceFlow id="{from}_{to}" sourceRef="{from}" targetRef="{to}"/>"#)
}

/// submit (alice) → fork → legal (lena) ‖ finance (fred) → join → ceo → end.
fn parallel() -> String {
    let body = [
        r#"<startEvent id="start"/><parallelGateway id="fork"/><parallelGateway id="join"/><endEvent id="end"/>"#.to_string(),
        task("submit", "alice"),
        task("legal", "lena"),
        task("finance", "fred"),
        task("ceo", "ceo"),
        flow("start", "submit"),
        flow("submit", "fork"),
        flow("fork", "legal"),
        flow("fork", "finance"),
        flow("legal", "join"),
        flow("finance", "join"),
        flow("join", "ceo"),
        flow("ceo", "end"),
    ]
    .concat();
    process("par", &body)
}

async fn app() -> TestApp {
    let app = spawn_app().await;
    for user in [
        "initiator",
        "alice",
        "lena",
        "fred",
        "ceo",
        "s1",
        "s2",
        "s3",
    ] {
        app.add_user(user, "").await;
    }
    app
}

async fn return_as(
    app: &TestApp,
    task: &pb::Task,
    user: &str,
    target: &str,
) -> Result<pb::CompleteTaskResponse, tonic::Status> {
    let message = pb::ReturnTaskRequest {
        task_id: task.id.clone(),
        target_activity_id: target.into(),
        comment: "请补充材料".into(),
        ..Default::default()
    };
    app.tasks()
        .return_task(req(message, user))
        .await
        .map(|r| r.into_inner())
}

fn open_of<'i>(instance: &'i pb::ProcessInstance, activity: &str) -> &'i pb::Task {
    instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == activity)
        .unwrap_or_else(|| panic!("{activity} is not open: {:?}", instance.open_tasks))
}

fn open_activities(instance: &pb::ProcessInstance) -> Vec<(&str, &str)> {
    instance
        .open_tasks
        .iter()
        .map(|t| (t.activity_id.as_str(), t.assignee.as_str()))
        .collect()
}

async fn approve(
    app: &TestApp,
    instance: &pb::ProcessInstance,
    activity: &str,
) -> pb::ProcessInstance {
    let task = open_of(instance, activity).clone();
    app.complete(&task, "approve")
        .await
        .unwrap_or_else(|e| panic!("{activity}: {e}"))
        .instance
        .expect("instance")
}

#[tokio::test]
async fn a_return_from_one_branch_goes_back_before_the_split_and_the_join_fires_once_again() {
    let app = app().await;
    app.deploy_xml(&parallel()).await.expect("deploy");
    let started = app.start("par", json!({})).await;
    let split = approve(&app, &started, "submit").await;
    // lena approves: her token waits at the join; fred returns to the submitter.
    let waiting = approve(&app, &split, "legal").await;
    let fred = open_of(&waiting, "finance").clone();
    let back = return_as(&app, &fred, "fred", "submit")
        .await
        .expect("returned");
    let instance = back.instance.expect("instance");
    assert_eq!(open_activities(&instance), [("submit", "alice")]);
    let returned = back.task.expect("task");
    assert_eq!(returned.status(), pb::TaskStatus::Returned);
    assert_eq!(returned.comment, "请补充材料");

    // Forward again: both branches run anew and the join fires exactly once.
    let again = approve(&app, &instance, "submit").await;
    assert_eq!(open_activities(&again).len(), 2);
    let one = approve(&app, &again, "finance").await;
    let done = approve(&app, &one, "legal").await;
    assert_eq!(open_activities(&done), [("ceo", "ceo")]);
    let tasks = app.tasks_of(&instance.id).await;
    assert_eq!(tasks.iter().filter(|t| t.activity_id == "ceo").count(), 1);
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "join_fired").count(), 1);
    assert!(kinds.iter().any(|k| k == "task_returned"));

    // The reminders of the withdrawn and returned tasks were cancelled, the reopened task's armed.
    let reminders = app
        .reminders()
        .list_reminders(req(
            pb::ListRemindersRequest {
                process_instance_id: instance.id.clone(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("reminders")
        .into_inner()
        .reminders;
    let cancelled: Vec<&str> = reminders
        .iter()
        .filter(|r| r.state() == pb::ReminderState::Cancelled)
        .map(|r| r.end_activity_id.as_str())
        .collect();
    assert!(cancelled.contains(&"finance"), "{reminders:?}");
    app.stop().await;
}

#[tokio::test]
async fn an_empty_target_returns_to_the_previous_step_and_a_branch_inside_a_split_is_refused() {
    let app = app().await;
    app.deploy_xml(&parallel()).await.expect("deploy");
    let started = app.start("par", json!({})).await;
    let split = approve(&app, &started, "submit").await;
    let lena = open_of(&split, "legal").clone();
    // The step whose completion opened lena's task: submit.
    let back = return_as(&app, &lena, "lena", "").await.expect("returned");
    let instance = back.instance.expect("instance");
    assert_eq!(open_activities(&instance), [("submit", "alice")]);

    // Past the join, a branch's task is not a target: its join would wait forever.
    let again = approve(&app, &instance, "submit").await;
    let one = approve(&app, &again, "legal").await;
    let at_ceo = approve(&app, &one, "finance").await;
    let ceo = open_of(&at_ceo, "ceo").clone();
    let refused = return_as(&app, &ceo, "ceo", "legal")
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("parallel branch"),
        "{}",
        refused.message()
    );
    // Nothing changed.
    assert_eq!(
        open_activities(&app.instance(&instance.id).await),
        [("ceo", "ceo")]
    );
    app.stop().await;
}

#[tokio::test]
async fn a_signer_returning_a_countersign_withdraws_every_signer_and_it_starts_over() {
    let app = app().await;
    let body = [
        r#"<startEvent id="start"/><endEvent id="end"/>"#.to_string(),
        task("submit", "alice"),
        r#"<userTask id="sign" replyflow:reminderType="chase"><multiInstanceLoopCharacteristics replyflow:collection="signers"/></userTask>"#.to_string(),
        flow("start", "submit"),
        flow("submit", "sign"),
        flow("sign", "end"),
    ]
    .concat();
    app.deploy_xml(&process("cs", &body)).await.expect("deploy");
    let started = app
        .start("cs", json!({"signers": ["s1", "s2", "s3"]}))
        .await;
    let signing = approve(&app, &started, "submit").await;
    let s1 = signing
        .open_tasks
        .iter()
        .find(|t| t.assignee == "s1")
        .cloned()
        .expect("s1");
    let voted = app
        .complete(&s1, "approve")
        .await
        .expect("s1")
        .instance
        .expect("instance");
    let s2 = voted
        .open_tasks
        .iter()
        .find(|t| t.assignee == "s2")
        .cloned()
        .expect("s2");
    let back = return_as(&app, &s2, "s2", "submit")
        .await
        .expect("returned");
    let instance = back.instance.expect("instance");
    assert_eq!(open_activities(&instance), [("submit", "alice")]);
    assert!(
        instance.multi_instances.is_empty(),
        "the activation is gone"
    );
    let tasks = app.tasks_of(&instance.id).await;
    let s3 = tasks.iter().find(|t| t.assignee == "s3").expect("s3");
    assert_eq!(s3.status(), pb::TaskStatus::Withdrawn);

    // Resubmitted: every signer is asked again, with a fresh tally.
    let again = approve(&app, &instance, "submit").await;
    assert_eq!(again.open_tasks.len(), 3);
    assert_eq!(again.multi_instances[0].approved, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_return_that_does_not_apply_is_refused_naming_why_and_changes_nothing() {
    let app = app().await;
    let body = [
        r#"<startEvent id="start"/><endEvent id="end"/>"#.to_string(),
        task("a1", "alice"),
        task("a2", "fred"),
        task("a3", "ceo"),
        flow("start", "a1"),
        flow("a1", "a2"),
        flow("a2", "a3"),
        flow("a3", "end"),
    ]
    .concat();
    app.deploy_xml(&process("seq", &body))
        .await
        .expect("deploy");
    let started = app.start("seq", json!({})).await;
    let at_a2 = approve(&app, &started, "a1").await;
    let fred = open_of(&at_a2, "a2").clone();
    let cases = [
        ("lena", "a1", tonic::Code::PermissionDenied, ""),
        (
            "fred",
            "a3",
            tonic::Code::FailedPrecondition,
            "has not passed a3",
        ),
        (
            "fred",
            "nope",
            tonic::Code::InvalidArgument,
            "target_activity_id",
        ),
        ("fred", "a2", tonic::Code::InvalidArgument, "its own step"),
    ];
    for (user, target, code, needle) in cases {
        let refused = return_as(&app, &fred, user, target)
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), code, "{user} → {target}: {refused:?}");
        assert!(refused.message().contains(needle), "{}", refused.message());
    }
    assert_eq!(
        open_activities(&app.instance(&started.id).await),
        [("a2", "fred")]
    );

    // The previous step, then forward again.
    let back = return_as(&app, &fred, "fred", "").await.expect("returned");
    let instance = back.instance.expect("instance");
    assert_eq!(open_activities(&instance), [("a1", "alice")]);
    let forward = approve(&app, &instance, "a1").await;
    assert_eq!(open_activities(&forward), [("a2", "fred")]);
    app.stop().await;
}

fn sequence() -> String {
    let body = [
        r#"<startEvent id="start"/><endEvent id="end"/>"#.to_string(),
        task("a1", "alice"),
        task("a2", "fred"),
        flow("start", "a1"),
        flow("a1", "a2"),
        flow("a2", "end"),
    ]
    .concat();
    process("seq", &body)
}

async fn decide(
    app: &TestApp,
    task: &pb::Task,
    outcome: &str,
    variables: serde_json::Value,
) -> Result<pb::ProcessInstance, tonic::Status> {
    let message = pb::CompleteTaskRequest {
        task_id: task.id.clone(),
        outcome: outcome.into(),
        variables: crate::helpers::vars(variables),
        ..Default::default()
    };
    app.tasks()
        .complete_task(req(message, &task.assignee))
        .await
        .map(|r| r.into_inner().instance.expect("instance"))
}

#[tokio::test]
async fn returned_to_the_start_the_initiator_corrects_and_resubmits_or_withdraws() {
    let app = app().await;
    app.deploy_xml(&sequence()).await.expect("deploy");
    for (answer, expected) in [("resubmit", "a1"), ("withdraw", "")] {
        let started = app.start("seq", json!({"amount": 100})).await;
        let at_a2 = approve(&app, &started, "a1").await;
        let fred = open_of(&at_a2, "a2").clone();
        let back = return_as(&app, &fred, "fred", "start")
            .await
            .expect("returned");
        let instance = back.instance.expect("instance");
        assert_eq!(open_activities(&instance), [("start", "initiator")]);
        let resubmission = open_of(&instance, "start").clone();
        let offered: Vec<&str> = resubmission
            .outcomes
            .iter()
            .map(|o| o.id.as_str())
            .collect();
        assert_eq!(offered, ["resubmit", "withdraw"]);
        // Only the request's own variables may be corrected.
        let refused = decide(&app, &resubmission, "resubmit", json!({"a1": {}}))
            .await
            .expect_err("engine variable");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let after = decide(&app, &resubmission, answer, json!({"amount": 90}))
            .await
            .expect("decided");
        if expected.is_empty() {
            assert_eq!(after.status(), pb::InstanceStatus::Cancelled);
            assert!(
                after.cancel_reason.contains("withdrawn by the initiator"),
                "{}",
                after.cancel_reason
            );
        } else {
            assert_eq!(open_activities(&after), [(expected, "alice")]);
            assert_eq!(crate::helpers::to_json(&after.variables)["amount"], 90);
        }
    }
    app.stop().await;
}

async fn withdraw_as(
    app: &TestApp,
    instance_id: &str,
    user: &str,
) -> Result<pb::ProcessInstance, tonic::Status> {
    let message = pb::WithdrawProcessInstanceRequest {
        process_instance_id: instance_id.into(),
        comment: "填错了".into(),
        request_id: String::new(),
    };
    app.workflow()
        .withdraw_process_instance(req(message, user))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn the_initiator_withdraws_a_request_and_gets_it_back_to_resubmit() {
    let app = app().await;
    app.deploy_xml(&parallel()).await.expect("deploy");
    let started = app.start("par", json!({})).await;
    let split = approve(&app, &started, "submit").await;
    let refused = withdraw_as(&app, &split.id, "lena")
        .await
        .expect_err("not the initiator");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let pulled = withdraw_as(&app, &split.id, "initiator")
        .await
        .expect("withdrawn");
    assert_eq!(open_activities(&pulled), [("start", "initiator")]);
    let tasks = app.tasks_of(&split.id).await;
    for branch in ["legal", "finance"] {
        let task = tasks
            .iter()
            .find(|t| t.activity_id == branch)
            .expect(branch);
        assert_eq!(task.status(), pb::TaskStatus::Withdrawn);
    }
    let again = withdraw_as(&app, &split.id, "initiator")
        .await
        .expect_err("already back");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    // Resubmitted, the request runs from the start again.
    let resubmission = open_of(&pulled, "start").clone();
    let after = decide(&app, &resubmission, "resubmit", json!({}))
        .await
        .expect("resubmitted");
    assert_eq!(open_activities(&after), [("submit", "alice")]);
    app.stop().await;
}

#[tokio::test]
async fn nothing_is_returned_or_delegated_while_the_instance_is_suspended() {
    let app = app().await;
    app.deploy_xml(&sequence()).await.expect("deploy");
    let started = app.start("seq", json!({})).await;
    let at_a2 = approve(&app, &started, "a1").await;
    let message = pb::SuspendProcessInstanceRequest {
        process_instance_id: started.id.clone(),
        comment: "待预算确认".into(),
        request_id: String::new(),
    };
    app.workflow()
        .suspend_process_instance(req(message, "initiator"))
        .await
        .expect("suspended");
    let fred = open_of(&at_a2, "a2").clone();
    let refused = return_as(&app, &fred, "fred", "a1")
        .await
        .expect_err("suspended");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("suspended"),
        "{}",
        refused.message()
    );
    let delegate = pb::DelegateTaskRequest {
        task_id: fred.id.clone(),
        user_id: "lena".into(),
        ..Default::default()
    };
    let refused = app
        .tasks()
        .delegate_task(req(delegate, "fred"))
        .await
        .expect_err("suspended");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        open_activities(&app.instance(&started.id).await),
        [("a2", "fred")]
    );
    app.stop().await;
}

#[tokio::test]
async fn the_approval_trail_shows_who_did_what_in_order() {
    let app = app().await;
    app.deploy_xml(&sequence()).await.expect("deploy");
    let started = app.start("seq", json!({})).await;
    let at_a2 = approve(&app, &started, "a1").await;
    let fred = open_of(&at_a2, "a2").clone();
    return_as(&app, &fred, "fred", "").await.expect("returned");
    let trail = |user: &str| {
        let mut client = app.tasks();
        let message = pb::ListTaskHistoryRequest {
            process_instance_id: started.id.clone(),
        };
        let user = user.to_string();
        async move { client.list_task_history(req(message, &user)).await }
    };
    let entries = trail("initiator")
        .await
        .expect("the initiator reads it")
        .into_inner()
        .entries;
    let lines: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.action.as_str(), e.activity_id.as_str(), e.user.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("submitted", "start", "initiator"),
            ("opened", "a1", "alice"),
            ("decided", "a1", "alice"),
            ("opened", "a2", "fred"),
            ("returned", "a2", "fred"),
            ("opened", "a1", "alice"),
        ]
    );
    let decided = &entries[2];
    assert_eq!(
        (decided.outcome.as_str(), decided.via()),
        ("approve", pb::CompletedVia::Api)
    );
    assert_eq!(decided.comment, "approve by alice");
    assert_eq!(entries[4].comment, "请补充材料");
    let refused = trail("s3").await.expect_err("not a participant");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    app.stop().await;
}
