//! Engine limits (DESIGN §12, issue 9 item 6 and the definition side of item 8): nothing a
//! definition, a variable or a reply holds may abort the server, run for seconds or exhaust
//! memory. Each test is one attack from the issue, through the real gRPC client.
use replyflow::proto::pb;
use serde_json::json;
use tonic::Code;

use crate::{
    branches::bpmn,
    helpers::{
        approval_mail, assert_deploy_refused, assert_refused, reply, req, spawn_app,
        spawn_app_with, status, submit,
    },
};

/// start → one user task for `ann` → `after` (XML elements and flows from `review` on) → end.
fn after_review(key: &str, after: &str, first: &str) -> String {
    bpmn(
        key,
        &format!(
            r#"<bpmn:startEvent id="start"/>
            <bpmn:userTask id="review" replyflow:assignee="${{manager}}"/>
            <bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
            <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="{first}"/>
            {after}"#
        ),
    )
}

/// The issue's crash: g1 → g2, g2 back to g1 with condition `true`, default flow to the end.
const GATEWAY_LOOP: &str = r#"<bpmn:exclusiveGateway id="g1"/>
    <bpmn:exclusiveGateway id="g2" default="out"/>
    <bpmn:sequenceFlow id="f2" sourceRef="g1" targetRef="g2"/>
    <bpmn:sequenceFlow id="back" sourceRef="g2" targetRef="g1"><bpmn:conditionExpression>true</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="out" sourceRef="g2" targetRef="end"/>"#;

#[tokio::test]
async fn a_loop_of_gateways_without_a_user_task_is_refused_at_deploy_naming_its_elements() {
    let app = spawn_app().await;
    let at_start = bpmn(
        "loop",
        &format!(
            r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="g1"/>{GATEWAY_LOOP}"#
        ),
    );
    assert_deploy_refused(
        &app,
        &at_start,
        &["g1: a loop without a user task: g1 → g2 → g1"],
    )
    .await;
    // The same loop after a user task (where a reply used to abort the server while it was
    // read) is refused the same way.
    let after_a_task = after_review("loop", GATEWAY_LOOP, "g1");
    assert_deploy_refused(&app, &after_a_task, &["g1 → g2 → g1"]).await;
    app.stop().await;
}

/// `n` exclusive gateways in a row, each choosing on a condition, then a user task.
fn gateway_chain(key: &str, n: usize) -> String {
    let mut body = String::from(
        r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>
        <bpmn:userTask id="last" replyflow:assignee="ann"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="g0"/>
        <bpmn:sequenceFlow id="f_last" sourceRef="last" targetRef="end"/>"#,
    );
    for i in 0..n {
        let next = if i + 1 == n {
            "last".to_owned()
        } else {
            format!("g{}", i + 1)
        };
        body.push_str(&format!(
            r#"<bpmn:exclusiveGateway id="g{i}" default="d{i}"/><bpmn:sequenceFlow id="c{i}" sourceRef="g{i}" targetRef="{next}"><bpmn:conditionExpression>amount &gt; {i}</bpmn:conditionExpression></bpmn:sequenceFlow><bpmn:sequenceFlow id="d{i}" sourceRef="g{i}" targetRef="end"/>"#
        ));
    }
    bpmn(key, &body)
}

#[tokio::test]
async fn a_chain_of_six_thousand_conditional_gateways_runs_without_overflowing_the_stack() {
    let app = spawn_app().await;
    app.deploy_xml(&gateway_chain("chain", 6_000))
        .await
        .expect("a long chain is a valid definition");
    let instance = app.start("chain", json!({"amount": 10_000})).await;
    assert_eq!(status(&instance), pb::InstanceStatus::Running);
    assert_eq!(instance.open_tasks[0].activity_id, "last");
    // A small amount leaves the chain at the first gateway whose condition is false.
    let early = app.start("chain", json!({"amount": 3})).await;
    assert_eq!(status(&early), pb::InstanceStatus::Completed);
    app.stop().await;
}

/// One exclusive split whose first flow has `condition`; the default leads to `fallback`.
fn one_condition(key: &str, condition: &str) -> String {
    bpmn(
        key,
        &format!(
            r#"<bpmn:startEvent id="start"/>
            <bpmn:exclusiveGateway id="xor" default="otherwise"/>
            <bpmn:userTask id="big" replyflow:assignee="ann"/>
            <bpmn:userTask id="fallback" replyflow:assignee="ann"/>
            <bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="xor"/>
            <bpmn:sequenceFlow id="hostile" sourceRef="xor" targetRef="big"><bpmn:conditionExpression>{condition}</bpmn:conditionExpression></bpmn:sequenceFlow>
            <bpmn:sequenceFlow id="otherwise" sourceRef="xor" targetRef="fallback"/>
            <bpmn:sequenceFlow id="f1" sourceRef="big" targetRef="end"/>
            <bpmn:sequenceFlow id="f2" sourceRef="fallback" targetRef="end"/>"#
        ),
    )
}

#[tokio::test]
async fn a_condition_of_six_thousand_terms_is_refused_at_deploy_before_parsing() {
    let app = spawn_app().await;
    let terms = vec!["1"; 6_000].join(" + ");
    let xml = one_condition("sum", &format!("{terms} == 6000"));
    assert_deploy_refused(&app, &xml, &["hostile", "at most 2000 are accepted"]).await;
    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    assert_deploy_refused(
        &app,
        &one_condition("deep", &deep),
        &["hostile", "nest 40 deep"],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn nested_comprehensions_that_ran_for_seconds_are_refused_at_deploy() {
    let app = spawn_app().await;
    let nested = "l.all(a, l.all(b, l.all(c, l.all(d, a + b + c + d &gt;= 0))))";
    assert_deploy_refused(
        &app,
        &one_condition("slow", nested),
        &["hostile", "inside another"],
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_condition_that_builds_strings_fails_the_instance_instead_of_exhausting_memory() {
    let app = spawn_app().await;
    let doubling = vec!["s"; 60].join(" + ");
    app.deploy_xml(&one_condition(
        "strings",
        &format!("size({doubling}) &gt; 0"),
    ))
    .await
    .expect("the expression itself is small");
    let big = "x".repeat(200_000);
    let instance = app.start("strings", json!({ "s": big })).await;
    assert_eq!(status(&instance), pb::InstanceStatus::Failed);
    let failed = app
        .audit_events(&instance.id)
        .await
        .into_iter()
        .find(|e| e.kind == "instance_failed")
        .expect("an instance_failed event");
    assert_eq!(failed.activity_id, "hostile", "the event names the flow");
    let reason = failed.detail["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("refused before evaluation"), "{reason}");
    // The same definition with a small variable takes the branch as usual.
    let small = app.start("strings", json!({ "s": "ab" })).await;
    assert_eq!(small.open_tasks[0].activity_id, "big");
    app.stop().await;
}

/// `levels` parallel splits, each into two flows that an exclusive merge passes both of:
/// 2^levels tokens reach the end. Valid BPMN without a loop, and the reason the step budget
/// exists besides the deploy-time loop check.
fn token_multiplier(levels: usize) -> String {
    let mut after = String::new();
    for i in 0..levels {
        let next = if i + 1 == levels {
            "end".to_owned()
        } else {
            format!("split{}", i + 1)
        };
        after.push_str(&format!(
            r#"<bpmn:parallelGateway id="split{i}"/><bpmn:exclusiveGateway id="merge{i}"/>
            <bpmn:sequenceFlow id="a{i}" sourceRef="split{i}" targetRef="merge{i}"/>
            <bpmn:sequenceFlow id="b{i}" sourceRef="split{i}" targetRef="merge{i}"/>
            <bpmn:sequenceFlow id="n{i}" sourceRef="merge{i}" targetRef="{next}"/>"#
        ));
    }
    after
}

#[tokio::test]
async fn a_token_explosion_after_a_reply_fails_the_instance_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_xml(&after_review("explode", &token_multiplier(16), "split0"))
        .await
        .expect("no loop: the definition deploys");
    let instance = app.start("explode", json!({"manager": "mary"})).await;
    let original = approval_mail(&app).await;
    let answered = submit(&app, reply("mary@example.com", &original, "同意", "<ok@x>")).await;
    assert_eq!(
        answered.verdict,
        pb::Verdict::Applied as i32,
        "the reply itself is applied: {answered:?}"
    );
    let failed = app.instance(&instance.id).await;
    assert_eq!(status(&failed), pb::InstanceStatus::Failed);
    let event = app
        .audit_events(&instance.id)
        .await
        .into_iter()
        .find(|e| e.kind == "instance_failed")
        .expect("an instance_failed event");
    let reason = event.detail["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("limits.max_steps = 10000"), "{reason}");
    // The server keeps serving: another instance starts.
    let next = app.start("explode", json!({"manager": "mary"})).await;
    assert_eq!(status(&next), pb::InstanceStatus::Running);
    app.stop().await;
}

#[tokio::test]
async fn the_step_budget_is_the_configured_limits_max_steps() {
    let app = spawn_app_with(|settings| settings.limits.max_steps = 50).await;
    let xml = bpmn(
        "explode",
        &format!(
            r#"<bpmn:startEvent id="start"/><bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="split0"/>{}"#,
            token_multiplier(6)
        ),
    );
    app.deploy_xml(&xml).await.expect("deploys");
    // The call that triggered the failure succeeds and returns the failed instance.
    let instance = app.start("explode", json!({})).await;
    assert_eq!(status(&instance), pb::InstanceStatus::Failed);
    assert!(
        instance.error.contains("limits.max_steps = 50"),
        "{:?}",
        instance.error
    );
    app.stop().await;
}

/// A definition declaring one reminder type with `attrs`, used by its one task.
fn with_reminder_type(attrs: &str) -> String {
    bpmn(
        "remind",
        &format!(
            r#"<bpmn:extensionElements><replyflow:reminderType id="chase" {attrs}/></bpmn:extensionElements>
            <bpmn:startEvent id="start"/>
            <bpmn:userTask id="review" replyflow:assignee="ann" replyflow:reminderType="chase"/>
            <bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
            <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>"#
        ),
    )
}

#[tokio::test]
async fn definition_reminder_types_obey_the_bounds_of_upsert_reminder_type() {
    let app = spawn_app().await;
    for (attrs, needle) in [
        (
            r#"count="1000000" interval="PT1S" channels="sms""#,
            "chase: count: must be 1 to 100, not 1000000",
        ),
        (
            r#"count="3" interval="P400D" channels="email""#,
            "chase: interval: 'P400D' must be at most 366 days",
        ),
        (
            r#"count="3" interval="PT0S" channels="email""#,
            "chase: interval: 'PT0S' must be at least one second",
        ),
        (
            r#"count="3" interval="PT1H" channels="email" escalation="notify:a b""#,
            "chase: escalation:",
        ),
    ] {
        assert_deploy_refused(&app, &with_reminder_type(attrs), &[needle]).await;
    }
    // The API refuses the same count the same way: one validator for both.
    let err = app
        .reminders()
        .upsert_reminder_type(req(
            pb::UpsertReminderTypeRequest {
                reminder_type: Some(pb::ReminderType {
                    id: "chase".into(),
                    count: 1_000_000,
                    interval: "PT1S".into(),
                    channels: vec![pb::Channel::Email as i32],
                    ..Default::default()
                }),
            },
            "admin",
        ))
        .await
        .expect_err("refused");
    assert_refused(
        &err,
        Code::InvalidArgument,
        &["reminder_type.count: must be 1 to 100, not 1000000"],
    );
    app.stop().await;
}

#[tokio::test]
async fn valid_for_outside_one_minute_to_a_year_is_refused_naming_the_task() {
    let app = spawn_app().await;
    for value in ["P99999999999D", "PT0S", "PT59S", "P366D"] {
        let xml = bpmn(
            "valid",
            &format!(
                r#"<bpmn:startEvent id="start"/>
                <bpmn:userTask id="review" replyflow:assignee="ann" replyflow:validFor="{value}"/>
                <bpmn:endEvent id="end"/>
                <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
                <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>"#
            ),
        );
        assert_deploy_refused(
            &app,
            &xml,
            &["review: replyflow:validFor:", "between PT1M and P365D"],
        )
        .await;
    }
    let huge = "P99999999999999999999999999D";
    let xml = bpmn(
        "valid",
        &format!(
            r#"<bpmn:startEvent id="start"/>
            <bpmn:userTask id="review" replyflow:assignee="ann" replyflow:validFor="{huge}"/>
            <bpmn:endEvent id="end"/>
            <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
            <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>"#
        ),
    );
    assert_deploy_refused(&app, &xml, &["review: replyflow:validFor:", "too large"]).await;
    app.stop().await;
}
