//! The five branch types of DESIGN §4 through the API, on definitions written inline.
use replyflow::proto::pb;
use serde_json::json;

use crate::helpers::{TestApp, open_activities, spawn_app, status};

pub fn bpmn(key: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:replyflow="https://replyflow.dev/schema/1" id="defs" targetNamespace="urn:test">
  <bpmn:process id="{key}" name="{key}" isExecutable="true">{body}</bpmn:process>
</bpmn:definitions>"#
    )
}

pub fn parallel_xml(key: &str) -> String {
    bpmn(
        key,
        r#"<bpmn:startEvent id="start"/>
        <bpmn:parallelGateway id="split"/>
        <bpmn:userTask id="legal" name="Legal" replyflow:assignee="${legal}"/>
        <bpmn:userTask id="finance" name="Finance" replyflow:assignee="${finance}"/>
        <bpmn:parallelGateway id="join"/>
        <bpmn:userTask id="ceo" name="CEO" replyflow:assignee="carl"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="split"/>
        <bpmn:sequenceFlow id="f1" sourceRef="split" targetRef="legal"/>
        <bpmn:sequenceFlow id="f2" sourceRef="split" targetRef="finance"/>
        <bpmn:sequenceFlow id="f3" sourceRef="legal" targetRef="join"/>
        <bpmn:sequenceFlow id="f4" sourceRef="finance" targetRef="join"/>
        <bpmn:sequenceFlow id="f5" sourceRef="join" targetRef="ceo"/>
        <bpmn:sequenceFlow id="f6" sourceRef="ceo" targetRef="end"/>"#,
    )
}

fn find<'a>(instance: &'a pb::ProcessInstance, activity: &str) -> &'a pb::Task {
    instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == activity)
        .unwrap_or_else(|| panic!("{activity} is not open: {:?}", open_activities(instance)))
}

async fn tasks_with_status(
    app: &TestApp,
    instance_id: &str,
    wanted: pb::TaskStatus,
) -> Vec<String> {
    let mut ids: Vec<String> = app
        .tasks_of(instance_id)
        .await
        .into_iter()
        .filter(|t| t.status == wanted as i32)
        .map(|t| t.activity_id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn parallel_split_and_join() {
    let app = spawn_app().await;
    app.deploy_xml(&parallel_xml("par")).await.expect("deploy");
    let instance = app
        .start("par", json!({"legal": "lena", "finance": "fred"}))
        .await;
    assert_eq!(open_activities(&instance), ["finance", "legal"]);

    let after_one = app
        .complete(find(&instance, "legal"), "approve")
        .await
        .expect("legal");
    let after_one = after_one.instance.expect("instance");
    assert_eq!(
        open_activities(&after_one),
        ["finance"],
        "the join waits for finance"
    );

    let after_both = app
        .complete(find(&instance, "finance"), "approve")
        .await
        .expect("finance");
    let after_both = after_both.instance.expect("instance");
    assert_eq!(open_activities(&after_both), ["ceo"]);
    let done = app
        .complete(find(&after_both, "ceo"), "approve")
        .await
        .expect("ceo");
    assert_eq!(
        status(&done.instance.expect("instance")),
        pb::InstanceStatus::Completed
    );
    app.stop().await;
}

#[tokio::test]
async fn deferred_choice_withdraws_the_branches_that_lost() {
    let app = spawn_app().await;
    let xml = bpmn(
        "choice",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:exclusiveGateway id="pick"/>
        <bpmn:userTask id="hr" replyflow:assignee="hana"/>
        <bpmn:userTask id="it" replyflow:assignee="ivan"/>
        <bpmn:exclusiveGateway id="merge"/>
        <bpmn:userTask id="archive" replyflow:assignee="ada"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="pick"/>
        <bpmn:sequenceFlow id="f1" sourceRef="pick" targetRef="hr"/>
        <bpmn:sequenceFlow id="f2" sourceRef="pick" targetRef="it"/>
        <bpmn:sequenceFlow id="f3" sourceRef="hr" targetRef="merge"/>
        <bpmn:sequenceFlow id="f4" sourceRef="it" targetRef="merge"/>
        <bpmn:sequenceFlow id="f5" sourceRef="merge" targetRef="archive"/>
        <bpmn:sequenceFlow id="f6" sourceRef="archive" targetRef="end"/>"#,
    );
    app.deploy_xml(&xml).await.expect("deploy");
    let instance = app.start("choice", json!({})).await;
    assert_eq!(open_activities(&instance), ["hr", "it"]);

    let done = app
        .complete(find(&instance, "it"), "approve")
        .await
        .expect("it decides");
    let after = done.instance.expect("instance");
    assert_eq!(open_activities(&after), ["archive"]);
    assert_eq!(
        tasks_with_status(&app, &instance.id, pb::TaskStatus::Withdrawn).await,
        ["hr"]
    );

    let hr = find(&instance, "hr");
    let late = app
        .complete(hr, "approve")
        .await
        .expect_err("a withdrawn task is closed");
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    app.stop().await;
}

#[tokio::test]
async fn exclusive_split_takes_the_first_true_condition_else_the_default() {
    let app = spawn_app().await;
    let xml = bpmn(
        "route",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:exclusiveGateway id="by_amount" default="to_clerk"/>
        <bpmn:userTask id="director" replyflow:assignee="dora"/>
        <bpmn:userTask id="manager" replyflow:assignee="mary"/>
        <bpmn:userTask id="clerk" replyflow:assignee="cleo"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="by_amount"/>
        <bpmn:sequenceFlow id="to_director" sourceRef="by_amount" targetRef="director">
          <bpmn:conditionExpression>amount &gt; 10000</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="to_manager" sourceRef="by_amount" targetRef="manager">
          <bpmn:conditionExpression>amount &gt; 1000</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="to_clerk" sourceRef="by_amount" targetRef="clerk"/>
        <bpmn:sequenceFlow id="f1" sourceRef="director" targetRef="end"/>
        <bpmn:sequenceFlow id="f2" sourceRef="manager" targetRef="end"/>
        <bpmn:sequenceFlow id="f3" sourceRef="clerk" targetRef="end"/>"#,
    );
    app.deploy_xml(&xml).await.expect("deploy");
    // 50000 satisfies both conditions: the first in document order wins.
    let cases = [(50000, "director"), (5000, "manager"), (10, "clerk")];
    for (amount, expected) in cases {
        let instance = app.start("route", json!({ "amount": amount })).await;
        assert_eq!(open_activities(&instance), [expected], "amount {amount}");
    }
    app.stop().await;
}

#[tokio::test]
async fn exclusive_join_lets_every_token_through() {
    let app = spawn_app().await;
    let xml = bpmn(
        "merge",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:exclusiveGateway id="route"/>
        <bpmn:userTask id="a" replyflow:assignee="ann"/>
        <bpmn:userTask id="b" replyflow:assignee="ben"/>
        <bpmn:exclusiveGateway id="join"/>
        <bpmn:userTask id="c" replyflow:assignee="cat"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="route"/>
        <bpmn:sequenceFlow id="fa" sourceRef="route" targetRef="a"><bpmn:conditionExpression>kind == "a"</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="fb" sourceRef="route" targetRef="b"><bpmn:conditionExpression>kind == "b"</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="f1" sourceRef="a" targetRef="join"/>
        <bpmn:sequenceFlow id="f2" sourceRef="b" targetRef="join"/>
        <bpmn:sequenceFlow id="f3" sourceRef="join" targetRef="c"/>
        <bpmn:sequenceFlow id="f4" sourceRef="c" targetRef="end"/>"#,
    );
    app.deploy_xml(&xml).await.expect("deploy");
    for kind in ["a", "b"] {
        let instance = app.start("merge", json!({ "kind": kind })).await;
        assert_eq!(open_activities(&instance), [kind]);
        let done = app
            .complete(&instance.open_tasks[0], "approve")
            .await
            .expect("complete");
        assert_eq!(open_activities(&done.instance.expect("instance")), ["c"]);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_condition_failing_at_run_time_fails_the_instance_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let xml = bpmn(
        "fragile",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:userTask id="first" replyflow:assignee="ann"/>
        <bpmn:exclusiveGateway id="check" default="other"/>
        <bpmn:userTask id="second" replyflow:assignee="ben"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="first"/>
        <bpmn:sequenceFlow id="f1" sourceRef="first" targetRef="check"/>
        <bpmn:sequenceFlow id="needs_amount" sourceRef="check" targetRef="second"><bpmn:conditionExpression>amount &gt; 5</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="other" sourceRef="check" targetRef="end"/>
        <bpmn:sequenceFlow id="f2" sourceRef="second" targetRef="end"/>"#,
    );
    app.deploy_xml(&xml).await.expect("deploy");
    let instance = app.start("fragile", json!({})).await;
    let done = app
        .complete(&instance.open_tasks[0], "approve")
        .await
        .expect("the completion itself succeeds");
    let failed = done.instance.expect("instance");
    assert_eq!(status(&failed), pb::InstanceStatus::Failed);
    assert!(failed.error.contains("needs_amount"), "{}", failed.error);
    assert!(
        app.event_kinds(&failed.id)
            .await
            .iter()
            .any(|k| k == "instance_failed")
    );

    // Still serving: another instance runs to the end.
    let ok = app.start("fragile", json!({"amount": 1})).await;
    let done = app
        .complete(&ok.open_tasks[0], "approve")
        .await
        .expect("complete");
    assert_eq!(
        status(&done.instance.expect("instance")),
        pb::InstanceStatus::Completed
    );
    app.stop().await;
}
