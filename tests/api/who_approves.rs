//! Who approves (DESIGN §11 审批人, issue 11): `${manager(initiator)}` and 多级主管 from the
//! directory, what happens when nobody is found or the initiator would approve their own
//! request, and 去重 (`skipIfApprovedBefore`), over the real gRPC API on both backends.
use replyflow::proto::pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{TestApp, open_activities, spawn_app, status};

/// start → a1 → a2 → end; `a1` and `a2` are the tasks' replyflow attributes.
fn two_steps(key: &str, a1: &str, a2: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="{key}" name="请假" isExecutable="true">
             <startEvent id="start"/>
             <userTask id="a1" name="主管审批" {a1}/>
             <userTask id="a2" name="复核" {a2}/>
             <endEvent id="end"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="a1"/>
             <sequenceFlow id="f2" sourceRef="a1" targetRef="a2"/>
             <sequenceFlow id="f3" sourceRef="a2" targetRef="end"/>
           </process></definitions>"#
    )
}

/// The directory of these stories: the test helpers start every instance as `initiator`, who
/// reports to `lead`; `lead` has no manager. `director` heads `boss`'s chain.
async fn org() -> TestApp {
    let app = spawn_app().await;
    for (user, manager) in [
        ("initiator", "lead"),
        ("lead", ""),
        ("closer", ""),
        ("root", ""),
        ("staff", "boss"),
        ("boss", "director"),
        ("director", ""),
    ] {
        app.add_user(user, manager).await;
    }
    app
}

async fn deploy(app: &TestApp, key: &str, a1: &str, a2: &str) {
    app.deploy_xml(&two_steps(key, a1, a2))
        .await
        .unwrap_or_else(|e| panic!("{key} deploys: {e:?}"));
}

fn open_for(instance: &pb::ProcessInstance) -> Vec<String> {
    instance
        .open_tasks
        .iter()
        .map(|t| format!("{}:{}", t.activity_id, t.assignee))
        .collect()
}

/// The detail of the instance's first `kind` event at `activity`.
async fn event(app: &TestApp, instance_id: &str, kind: &str, activity: &str) -> Value {
    app.audit_events(instance_id)
        .await
        .into_iter()
        .find(|e| e.kind == kind && e.activity_id == activity)
        .unwrap_or_else(|| panic!("no {kind} event at {activity}"))
        .detail
}

#[tokio::test]
async fn the_initiators_manager_approves_then_the_manager_two_levels_up() {
    let app = org().await;
    // staff → boss → director, with the chain climbed again when the second task opens.
    app.add_user("initiator", "boss").await;
    deploy(
        &app,
        "leave",
        r#"replyflow:assignee="${manager(initiator)}""#,
        r#"replyflow:assignee="${manager(initiator, 2)}""#,
    )
    .await;
    let started = app.start("leave", json!({})).await;
    assert_eq!(open_for(&started), ["a1:boss"]);
    let done = app
        .complete(&started.open_tasks[0], "approve")
        .await
        .expect("boss approves");
    let instance = done.instance.expect("instance");
    assert_eq!(
        open_for(&instance),
        ["a2:director"],
        "多级主管: two levels up"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_level_two_manager_fails_skips_or_goes_to_the_admin_as_the_definition_says() {
    let app = org().await;
    // initiator → lead → nobody: manager(initiator, 2) names nobody.
    let level_two = r#"replyflow:assignee="${manager(initiator, 2)}""#;
    let closer = r#"replyflow:assignee="closer""#;
    deploy(&app, "by_default", level_two, closer).await;
    deploy(
        &app,
        "fails",
        &format!(r#"{level_two} replyflow:whenNoAssignee="fail""#),
        closer,
    )
    .await;
    deploy(
        &app,
        "skips",
        &format!(r#"{level_two} replyflow:whenNoAssignee="skip""#),
        closer,
    )
    .await;
    deploy(
        &app,
        "to_admin",
        &format!(r#"{level_two} replyflow:whenNoAssignee="admin:root""#),
        closer,
    )
    .await;

    for key in ["by_default", "fails"] {
        let failed = app.start(key, json!({})).await;
        assert_eq!(status(&failed), pb::InstanceStatus::Failed, "{key}");
        assert!(failed.open_tasks.is_empty(), "{key}: nothing half-opened");
        assert!(
            failed.error.starts_with("a1: no assignee")
                && failed.error.contains("manager(initiator, 2)"),
            "{key}: {}",
            failed.error
        );
        let detail = event(&app, &failed.id, "instance_failed", "a1").await;
        assert!(
            detail["reason"]
                .as_str()
                .is_some_and(|r| r.contains("whenNoAssignee is fail"))
        );
    }

    let skipped = app.start("skips", json!({})).await;
    assert_eq!(open_for(&skipped), ["a2:closer"], "the token moved on");
    let detail = event(&app, &skipped.id, "assignee_skipped", "a1").await;
    assert_eq!(detail["rule"], "whenNoAssignee=skip");
    assert!(
        detail["why"]
            .as_str()
            .is_some_and(|w| w.contains("as if approved")),
        "{detail}"
    );
    assert!(
        app.tasks_of(&skipped.id)
            .await
            .iter()
            .all(|t| t.activity_id != "a1"),
        "nobody was asked"
    );

    let replaced = app.start("to_admin", json!({})).await;
    assert_eq!(open_for(&replaced), ["a1:root"]);
    let detail = event(&app, &replaced.id, "assignee_replaced", "a1").await;
    assert_eq!(detail["to"], "root");
    assert!(
        detail["why"]
            .as_str()
            .is_some_and(|w| w.contains("no assignee")),
        "{detail}"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_initiator_named_as_assignee_decides_is_skipped_or_is_replaced_by_their_manager() {
    let app = org().await;
    let closer = r#"replyflow:assignee="closer""#;
    for rule in ["self", "skip", "manager"] {
        deploy(
            &app,
            &format!("own_{rule}"),
            &format!(
                r#"replyflow:assignee="${{initiator}}" replyflow:whenAssigneeIsInitiator="{rule}""#
            ),
            closer,
        )
        .await;
    }
    let own = app.start("own_self", json!({})).await;
    assert_eq!(
        open_for(&own),
        ["a1:initiator"],
        "self: the definition allows it"
    );
    event(&app, &own.id, "assignee_is_initiator", "a1").await;

    let skipped = app.start("own_skip", json!({})).await;
    assert_eq!(open_for(&skipped), ["a2:closer"]);
    let detail = event(&app, &skipped.id, "assignee_skipped", "a1").await;
    assert_eq!(detail["rule"], "whenAssigneeIsInitiator=skip");

    let replaced = app.start("own_manager", json!({})).await;
    assert_eq!(open_for(&replaced), ["a1:lead"]);
    let detail = event(&app, &replaced.id, "assignee_replaced", "a1").await;
    assert_eq!(
        (&detail["from"], &detail["to"]),
        (&json!("initiator"), &json!("lead"))
    );

    // A start variable named `initiator` does not change who started the instance.
    let forged = app
        .start("own_manager", json!({"initiator": "staff"}))
        .await;
    assert_eq!(open_for(&forged), ["a1:lead"]);
    app.stop().await;
}

#[tokio::test]
async fn an_assignee_who_approved_before_gets_the_task_completed_automatically() {
    let app = org().await;
    deploy(
        &app,
        "dedupe",
        r#"replyflow:assignee="${first}""#,
        r#"replyflow:assignee="${second}" replyflow:skipIfApprovedBefore="true""#,
    )
    .await;
    let started = app
        .start("dedupe", json!({"first": "lead", "second": "lead"}))
        .await;
    let done = app
        .complete(&started.open_tasks[0], "approve")
        .await
        .expect("lead approves");
    let instance = done.instance.expect("instance");
    assert_eq!(status(&instance), pb::InstanceStatus::Completed, "去重");
    assert!(open_activities(&instance).is_empty());
    let tasks = app.tasks_of(&instance.id).await;
    let auto = tasks
        .iter()
        .find(|t| t.activity_id == "a2")
        .expect("a2 was created");
    assert_eq!(auto.status, pb::TaskStatus::Completed as i32);
    assert_eq!(auto.completed_via, pb::CompletedVia::Auto as i32);
    assert_eq!(
        (auto.outcome.as_str(), auto.assignee.as_str()),
        ("approve", "lead")
    );
    let detail = event(&app, &instance.id, "task_auto_completed", "a2").await;
    assert_eq!(detail["rule"], "skipIfApprovedBefore");
    assert!(
        detail["why"]
            .as_str()
            .is_some_and(|w| w.contains("already approved"))
    );
    let got = app.task(&auto.id).await;
    assert_eq!(got.completed_via, pb::CompletedVia::Auto as i32);

    // Someone else approved the first step: the second assignee is asked.
    let other = app
        .start("dedupe", json!({"first": "closer", "second": "lead"}))
        .await;
    let done = app
        .complete(&other.open_tasks[0], "approve")
        .await
        .expect("closer approves");
    assert_eq!(open_for(&done.instance.expect("instance")), ["a2:lead"]);
    app.stop().await;
}

#[tokio::test]
async fn an_assignee_expression_with_an_error_is_refused_at_deploy_naming_the_task() {
    let app = spawn_app().await;
    for (bad, needle) in [
        ("${manger(initiator)}", "unknown function manger()"),
        ("${manager(initiator, 30)}", "not 30"),
        ("${manager(initiator,}", "not a valid CEL expression"),
    ] {
        let err = app
            .deploy_xml(&two_steps(
                "bad",
                &format!(r#"replyflow:assignee="{bad}""#),
                r#"replyflow:assignee="closer""#,
            ))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(
            err.message().contains("a1") && err.message().contains(needle),
            "{bad}: {}",
            err.message()
        );
    }
    assert!(app.definitions().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_approval_several_steps_back_is_read_from_the_store_for_skip_if_approved_before() {
    let app = org().await;
    let xml = r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="three" isExecutable="true">
             <startEvent id="start"/>
             <userTask id="a1" replyflow:assignee="lead"/>
             <userTask id="a2" replyflow:assignee="closer"/>
             <userTask id="a3" replyflow:assignee="${manager(initiator)}" replyflow:skipIfApprovedBefore="true"/>
             <endEvent id="end"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="a1"/>
             <sequenceFlow id="f2" sourceRef="a1" targetRef="a2"/>
             <sequenceFlow id="f3" sourceRef="a2" targetRef="a3"/>
             <sequenceFlow id="f4" sourceRef="a3" targetRef="end"/>
           </process></definitions>"#;
    app.deploy_xml(xml).await.expect("deploys");
    let started = app.start("three", json!({})).await;
    let done = app
        .complete(&started.open_tasks[0], "approve")
        .await
        .expect("lead approves");
    let instance = done.instance.expect("instance");
    assert_eq!(open_for(&instance), ["a2:closer"]);
    // lead (the initiator's manager) approved a1, two steps before a3.
    let done = app
        .complete(&instance.open_tasks[0], "approve")
        .await
        .expect("closer approves");
    let instance = done.instance.expect("instance");
    assert_eq!(status(&instance), pb::InstanceStatus::Completed);
    let auto = app
        .tasks_of(&instance.id)
        .await
        .into_iter()
        .find(|t| t.activity_id == "a3")
        .expect("a3 was created");
    assert_eq!(auto.assignee, "lead");
    assert_eq!(auto.completed_via, pb::CompletedVia::Auto as i32);
    app.stop().await;
}

#[tokio::test]
async fn each_signer_of_a_countersign_is_resolved_by_the_same_rules() {
    let app = org().await;
    let xml = r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="countersign" isExecutable="true">
             <startEvent id="start"/>
             <userTask id="sign" name="会签" replyflow:assignee="${manager(signer)}"
                 replyflow:whenAssigneeIsInitiator="skip" replyflow:whenNoAssignee="skip">
               <multiInstanceLoopCharacteristics replyflow:collection="signers"/>
             </userTask>
             <userTask id="after" replyflow:assignee="closer"/>
             <endEvent id="end"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
             <sequenceFlow id="f2" sourceRef="sign" targetRef="after"/>
             <sequenceFlow id="f3" sourceRef="after" targetRef="end"/>
           </process></definitions>"#;
    app.deploy_xml(xml).await.expect("deploys");
    app.add_user("clerk", "initiator").await;
    // Each listed user's manager signs: staff → boss; clerk → initiator (skipped: four eyes);
    // lead → nobody (skipped).
    let started = app
        .start(
            "countersign",
            json!({"signers": ["staff", "clerk", "lead"]}),
        )
        .await;
    assert_eq!(open_for(&started), ["sign:boss"]);
    let skipped: Vec<Value> = app
        .audit_events(&started.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "assignee_skipped")
        .map(|e| e.detail["signer"].clone())
        .collect();
    assert_eq!(skipped, [json!(2), json!(3)]);
    let done = app
        .complete(&started.open_tasks[0], "approve")
        .await
        .expect("boss signs");
    assert_eq!(
        open_for(&done.instance.expect("instance")),
        ["after:closer"],
        "the only signer asked decided the step"
    );
    app.stop().await;
}
