//! 会签 / 或签 / 票签 / 顺序会签 over the API (DESIGN §11, issue 11): one task per signer, decided
//! by the activity's mode, the rest withdrawn, reminders per signer, on both backends.
use std::sync::Arc;

use replyflow::{clock::ManualClock, proto::pb};
use serde_json::{Value, json};

use crate::helpers::{TestApp, req, spawn_app, spawn_app_at, status, to_json};

const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

/// A contract signed by `signers` under `loop_attrs`, then one final approval by `ceo` when
/// the signing approved; a rejected signing goes back to the drafter.
fn contract(key: &str, loop_attrs: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="{key}" name="合同会签" isExecutable="true">
             <extensionElements>
               <replyflow:reminderType id="chase" count="2" interval="PT1H" channels="inbox"/>
             </extensionElements>
             <startEvent id="start"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
             <userTask id="sign" name="会签" replyflow:reminderType="chase">
               <multiInstanceLoopCharacteristics replyflow:collection="signers" {loop_attrs}/>
             </userTask>
             <sequenceFlow id="f2" sourceRef="sign" targetRef="by_result"/>
             <exclusiveGateway id="by_result" default="to_redo"/>
             <sequenceFlow id="to_ceo" sourceRef="by_result" targetRef="ceo">
               <conditionExpression>sign.outcome == "approve"</conditionExpression>
             </sequenceFlow>
             <sequenceFlow id="to_redo" sourceRef="by_result" targetRef="redo"/>
             <userTask id="ceo" name="总经理审批" replyflow:assignee="ceo"/>
             <userTask id="redo" name="修改合同" replyflow:assignee="drafter"/>
             <sequenceFlow id="f3" sourceRef="ceo" targetRef="end"/>
             <sequenceFlow id="f4" sourceRef="redo" targetRef="end"/>
             <endEvent id="end"/>
           </process></definitions>"#
    )
}

async fn app_with(users: &[&str]) -> TestApp {
    let app = spawn_app().await;
    for user in users {
        app.add_user(user, "").await;
    }
    app
}

const FIVE: [&str; 5] = ["lena", "fred", "ivy", "otto", "pia"];

/// Deploys `contract(key, loop_attrs)` and starts it for `signers`.
async fn signing(
    app: &TestApp,
    key: &str,
    loop_attrs: &str,
    signers: &[&str],
) -> pb::ProcessInstance {
    app.deploy_xml(&contract(key, loop_attrs))
        .await
        .expect("deploy");
    app.start(key, json!({ "signers": signers })).await
}

fn task_of<'t>(instance: &'t pb::ProcessInstance, user: &str) -> &'t pb::Task {
    instance
        .open_tasks
        .iter()
        .find(|t| t.assignee == user)
        .unwrap_or_else(|| panic!("{user} has no open task: {:?}", instance.open_tasks))
}

/// `user` decides their task of the instance as it is now.
async fn decide(
    app: &TestApp,
    instance_id: &str,
    user: &str,
    outcome: &str,
) -> pb::ProcessInstance {
    let now = app.instance(instance_id).await;
    let task = task_of(&now, user).clone();
    app.complete(&task, outcome)
        .await
        .unwrap_or_else(|e| panic!("{user} decides {outcome}: {e}"))
        .instance
        .expect("instance")
}

fn assignees(instance: &pb::ProcessInstance) -> Vec<&str> {
    instance
        .open_tasks
        .iter()
        .map(|t| t.assignee.as_str())
        .collect()
}

fn statuses(tasks: &[pb::Task], activity: &str) -> Vec<(String, pb::TaskStatus)> {
    tasks
        .iter()
        .filter(|t| t.activity_id == activity)
        .map(|t| (t.assignee.clone(), t.status()))
        .collect()
}

fn sign_result(instance: &pb::ProcessInstance) -> Value {
    to_json(&instance.variables)
        .get("sign")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_countersign_opens_a_task_per_signer_and_moves_on_when_all_approved() {
    let app = app_with(&["lena", "fred", "ivy", "ceo"]).await;
    let instance = signing(&app, "all", "", &["lena", "fred", "ivy"]).await;
    assert_eq!(assignees(&instance), ["lena", "fred", "ivy"]);
    for (i, task) in instance.open_tasks.iter().enumerate() {
        let signer = task.multi_instance.as_ref().expect("a signer's task");
        assert_eq!(signer.mode, "all");
        assert_eq!(signer.index, i as i32 + 1);
        assert_eq!(signer.total, 3);
        assert_eq!(signer.needed, 3);
    }
    let after_one = decide(&app, &instance.id, "fred", "approve").await;
    assert_eq!(assignees(&after_one), ["lena", "ivy"]);
    let tally = &after_one.multi_instances[0];
    assert_eq!(
        (tally.activity_id.as_str(), tally.approved, tally.rejected),
        ("sign", 1, 0)
    );
    // GetTask shows the same tally to a signer still to decide.
    let lena = app.task(&task_of(&after_one, "lena").id).await;
    assert_eq!(lena.multi_instance.as_ref().map(|m| m.approved), Some(1));

    decide(&app, &instance.id, "lena", "approve").await;
    let done = decide(&app, &instance.id, "ivy", "approve").await;
    assert_eq!(assignees(&done), ["ceo"]);
    assert!(done.multi_instances.is_empty());
    let result = sign_result(&done);
    assert_eq!(result["outcome"], "approve");
    assert_eq!(result["approved"], 3);
    assert_eq!(result["signers"], json!(["lena", "fred", "ivy"]));
    assert_eq!(
        result["votes"][0],
        json!({"user": "fred", "outcome": "approve", "comment": "approve by fred"})
    );
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(kinds.iter().filter(|k| *k == "signer_voted").count(), 3);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "multi_instance_decided")
            .count(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn one_reject_in_a_countersign_decides_it_and_withdraws_the_other_signers() {
    let app = app_with(&["lena", "fred", "ivy", "drafter"]).await;
    let instance = signing(
        &app,
        "reject",
        r#"replyflow:signMode="all""#,
        &["lena", "fred", "ivy"],
    )
    .await;
    decide(&app, &instance.id, "lena", "approve").await;
    let after = decide(&app, &instance.id, "fred", "reject").await;
    assert_eq!(assignees(&after), ["drafter"]);
    assert_eq!(sign_result(&after)["outcome"], "reject");
    let tasks = app.tasks_of(&instance.id).await;
    assert_eq!(
        statuses(&tasks, "sign"),
        [
            ("lena".to_string(), pb::TaskStatus::Completed),
            ("fred".to_string(), pb::TaskStatus::Completed),
            ("ivy".to_string(), pb::TaskStatus::Withdrawn),
        ]
    );
    // The withdrawn signer can no longer decide.
    let ivy = tasks
        .iter()
        .find(|t| t.assignee == "ivy")
        .cloned()
        .expect("ivy");
    let refused = app.complete(&ivy, "approve").await.expect_err("withdrawn");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn in_an_or_sign_the_first_decision_decides_for_everyone() {
    let app = app_with(&["lena", "fred", "ivy", "ceo"]).await;
    let instance = signing(
        &app,
        "any",
        r#"replyflow:signMode="any""#,
        &["lena", "fred", "ivy"],
    )
    .await;
    let after = decide(&app, &instance.id, "ivy", "approve").await;
    assert_eq!(assignees(&after), ["ceo"]);
    let tasks = app.tasks_of(&instance.id).await;
    let withdrawn = statuses(&tasks, "sign")
        .into_iter()
        .filter(|(_, s)| *s == pb::TaskStatus::Withdrawn)
        .count();
    assert_eq!(withdrawn, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_vote_is_rejected_as_soon_as_the_ratio_is_out_of_reach() {
    let app = app_with(&FIVE).await;
    app.add_user("drafter", "").await;
    let vote = r#"replyflow:signMode="vote" replyflow:passRatio="0.6""#;
    let instance = signing(&app, "vote", vote, &FIVE).await;
    assert_eq!(
        instance.open_tasks[0]
            .multi_instance
            .as_ref()
            .map(|m| m.needed),
        Some(3)
    );
    decide(&app, &instance.id, "lena", "approve").await;
    decide(&app, &instance.id, "fred", "reject").await;
    let two_no = decide(&app, &instance.id, "ivy", "reject").await;
    assert_eq!(status(&two_no), pb::InstanceStatus::Running);
    assert_eq!(assignees(&two_no), ["otto", "pia"]);
    // Three no of five: three approvals are no longer possible.
    let decided = decide(&app, &instance.id, "otto", "reject").await;
    assert_eq!(assignees(&decided), ["drafter"]);
    let result = sign_result(&decided);
    assert_eq!(
        (
            result["outcome"].clone(),
            result["approved"].clone(),
            result["rejected"].clone()
        ),
        (json!("reject"), json!(1), json!(3))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_vote_passes_once_enough_signers_approved() {
    let app = app_with(&FIVE).await;
    app.add_user("ceo", "").await;
    let vote = r#"replyflow:signMode="vote" replyflow:passRatio="0.6""#;
    let instance = signing(&app, "pass", vote, &FIVE).await;
    for user in ["pia", "lena"] {
        decide(&app, &instance.id, user, "approve").await;
    }
    let passed = decide(&app, &instance.id, "otto", "approve").await;
    assert_eq!(assignees(&passed), ["ceo"]);
    assert_eq!(sign_result(&passed)["outcome"], "approve");
    app.stop().await;
}

#[tokio::test]
async fn sequential_signers_sign_in_list_order_and_a_reject_ends_the_round() {
    let app = app_with(&["lena", "fred", "ivy", "drafter"]).await;
    let instance = signing(
        &app,
        "seq",
        r#"isSequential="true""#,
        &["ivy", "lena", "fred"],
    )
    .await;
    assert_eq!(assignees(&instance), ["ivy"]);
    let signer = instance.open_tasks[0]
        .multi_instance
        .clone()
        .expect("signer");
    assert!(signer.sequential);
    assert_eq!((signer.index, signer.total), (1, 3));
    let second = decide(&app, &instance.id, "ivy", "approve").await;
    assert_eq!(assignees(&second), ["lena"]);
    assert_eq!(
        second.open_tasks[0]
            .multi_instance
            .as_ref()
            .map(|m| m.index),
        Some(2)
    );
    let ended = decide(&app, &instance.id, "lena", "reject").await;
    assert_eq!(assignees(&ended), ["drafter"]);
    // fred never got a task.
    let tasks = app.tasks_of(&instance.id).await;
    assert!(tasks.iter().all(|t| t.assignee != "fred"));
    app.stop().await;
}

#[tokio::test]
async fn a_bad_signer_list_fails_the_instance_naming_the_variable_and_opens_nothing() {
    let app = app_with(&["lena"]).await;
    app.deploy_xml(&contract("bad", "")).await.expect("deploy");
    for (variables, expected) in [
        (json!({}), "\"signers\" is not set"),
        (json!({"signers": "lena"}), "must be a list"),
        (json!({"signers": []}), "empty list"),
        (
            json!({"signers": ["lena", "lena"]}),
            "\"lena\" appears twice",
        ),
    ] {
        let instance = app.start("bad", variables).await;
        assert_eq!(status(&instance), pb::InstanceStatus::Failed);
        assert!(instance.error.starts_with("sign: "), "{}", instance.error);
        assert!(instance.error.contains(expected), "{}", instance.error);
        assert!(app.tasks_of(&instance.id).await.is_empty());
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_multi_instance_definitions_are_refused_naming_the_task() {
    let app = spawn_app().await;
    for (attrs, expected) in [
        (r#"replyflow:signMode="vote""#, "needs replyflow:passRatio"),
        (
            r#"replyflow:signMode="vote" replyflow:passRatio="1.2""#,
            "outside (0, 1]",
        ),
        (r#"replyflow:signMode="sometimes""#, "all, any or vote"),
    ] {
        let refused = app
            .deploy_xml(&contract("refused", attrs))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("sign"), "{}", refused.message());
        assert!(
            refused.message().contains(expected),
            "{}",
            refused.message()
        );
    }
    app.stop().await;
}

/// Twenty signers decide at the same instant: the activity is decided exactly once, whatever
/// the order the backend serialises them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_signers_deciding_at_once_decide_the_activity_exactly_once() {
    let signers: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    let names: Vec<&str> = signers.iter().map(String::as_str).collect();
    let app = app_with(&names).await;
    app.add_user("ceo", "").await;
    let instance = signing(&app, "race", "", &names).await;
    assert_eq!(instance.open_tasks.len(), 20);
    let mut racers = Vec::new();
    for task in instance.open_tasks.clone() {
        let mut client = app.tasks();
        racers.push(tokio::spawn(async move {
            let message = pb::CompleteTaskRequest {
                task_id: task.id.clone(),
                outcome: "approve".into(),
                ..Default::default()
            };
            client.complete_task(req(message, &task.assignee)).await
        }));
    }
    for racer in racers {
        racer
            .await
            .expect("join")
            .expect("every signer's decision counts");
    }
    let after = app.instance(&instance.id).await;
    assert_eq!(assignees(&after), ["ceo"]);
    assert_eq!(sign_result(&after)["approved"], 20);
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| *k == "multi_instance_decided")
            .count(),
        1
    );
    assert_eq!(kinds.iter().filter(|k| *k == "signer_voted").count(), 20);
    let ceo_tasks = app
        .tasks_of(&instance.id)
        .await
        .into_iter()
        .filter(|t| t.activity_id == "ceo")
        .count();
    assert_eq!(ceo_tasks, 1);
    app.stop().await;
}

async fn reminders_of(app: &TestApp, instance_id: &str) -> Vec<pb::Reminder> {
    app.reminders()
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
        .reminders
}

async fn inbox(app: &TestApp, user: &str) -> Vec<pb::Message> {
    app.reminders()
        .list_messages(req(pb::ListMessagesRequest::default(), user))
        .await
        .expect("ListMessages")
        .into_inner()
        .messages
}

#[tokio::test]
async fn every_signer_is_chased_and_the_decision_stops_every_reminder() {
    let clock = Arc::new(ManualClock::new(T0));
    let dyn_clock: Arc<dyn replyflow::clock::Clock> = clock.clone();
    let app = spawn_app_at(dyn_clock, |s| {
        s.reminders.schedule = "0 0 0 1 1 *".into();
        s.security.admins = "admin".into();
    })
    .await;
    for user in ["lena", "fred", "ivy", "drafter"] {
        app.add_user(user, "").await;
    }
    let instance = signing(&app, "chase", "", &["lena", "fred", "ivy"]).await;
    let armed = reminders_of(&app, &instance.id).await;
    assert_eq!(armed.len(), 3, "one reminder per signer: {armed:?}");
    decide(&app, &instance.id, "lena", "approve").await;

    clock.advance(HOUR);
    app.server_workflow
        .fire_due_reminders(500)
        .await
        .expect("fire");
    assert!(inbox(&app, "lena").await.is_empty(), "lena already decided");
    for user in ["fred", "ivy"] {
        assert_eq!(inbox(&app, user).await.len(), 1, "{user} is chased once");
    }
    let states: Vec<pb::ReminderState> = reminders_of(&app, &instance.id)
        .await
        .iter()
        .map(|r| r.state())
        .collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == pb::ReminderState::FinishedBeforeRemind)
            .count(),
        1
    );
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == pb::ReminderState::Reminded)
            .count(),
        2
    );

    decide(&app, &instance.id, "fred", "reject").await;
    let stopped = reminders_of(&app, &instance.id).await;
    assert!(
        stopped.iter().all(|r| matches!(
            r.state(),
            pb::ReminderState::FinishedBeforeRemind | pb::ReminderState::FinishedAfterRemind
        )),
        "{stopped:?}"
    );
    assert_eq!(
        stopped
            .iter()
            .filter(|r| r.state() == pb::ReminderState::FinishedAfterRemind)
            .count(),
        2,
        "fred's (decided) and ivy's (withdrawn) reminders both fired before"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_countersign_example_as_saved_by_camunda_modeler_runs_a_real_countersign() {
    let app = app_with(&["legal_dan", "finance_carol", "it_erin", "frank"]).await;
    app.deploy_example("countersign_modeler.bpmn").await;
    let instance = app
        .start(
            "countersign",
            json!({"signers": ["legal_dan", "finance_carol", "it_erin"], "approver": "frank",
                   "contract": "HT-2026-118", "amount": 250000}),
        )
        .await;
    assert_eq!(
        assignees(&instance),
        ["legal_dan", "finance_carol", "it_erin"]
    );
    for user in ["it_erin", "legal_dan", "finance_carol"] {
        decide(&app, &instance.id, user, "approve").await;
    }
    let after = app.instance(&instance.id).await;
    assert_eq!(assignees(&after), ["frank"]);
    assert_eq!(after.open_tasks[0].activity_id, "final_approval");
    app.stop().await;
}
