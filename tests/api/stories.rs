//! The expense approval, as an OA frontend drives it.
use replyflow::proto::pb;
use serde_json::json;

use crate::helpers::{expense_vars, open_activities, req, spawn_app, status, to_json};

#[tokio::test]
async fn a_large_expense_goes_to_the_manager_then_to_finance() {
    let app = spawn_app().await;
    let def = app.deploy_example("expense.bpmn").await;
    assert_eq!((def.key.as_str(), def.version), ("expense", 1));

    let instance = app.start("expense", expense_vars(20000)).await;
    assert_eq!(status(&instance), pb::InstanceStatus::Running);
    assert_eq!(open_activities(&instance), ["manager_approval"]);
    let manager_task = &instance.open_tasks[0];
    assert_eq!(manager_task.assignee, "mary");
    assert!(manager_task.outcomes.iter().any(|o| o.id == "approve"));

    let done = app
        .complete(manager_task, "approve")
        .await
        .expect("manager approves");
    let task = done.task.expect("task");
    assert_eq!(task.outcome, "approve");
    assert_eq!(task.completed_by, "mary");
    assert_eq!(task.completed_via, pb::CompletedVia::Api as i32);
    let instance = done.instance.expect("instance");
    assert_eq!(open_activities(&instance), ["finance_approval"]);
    assert_eq!(instance.open_tasks[0].assignee, "fred");

    let done = app
        .complete(&instance.open_tasks[0], "approve")
        .await
        .expect("finance approves");
    let instance = done.instance.expect("instance");
    assert_eq!(status(&instance), pb::InstanceStatus::Completed);
    let variables = to_json(&instance.variables);
    assert_eq!(variables["manager_approval"]["outcome"], json!("approve"));
    assert_eq!(variables["manager_approval"]["completed_by"], json!("mary"));
    assert_eq!(variables["outcome"], json!("approve"));

    let kinds = app.event_kinds(&instance.id).await;
    for expected in [
        "instance_started",
        "task_opened",
        "task_completed",
        "gateway_decided",
        "instance_completed",
    ] {
        assert!(
            kinds.iter().any(|k| k == expected),
            "{expected} missing from {kinds:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn a_small_expense_ends_after_the_manager() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(800)).await;
    let done = app
        .complete(&instance.open_tasks[0], "approve")
        .await
        .expect("approve");
    assert_eq!(
        status(&done.instance.expect("instance")),
        pb::InstanceStatus::Completed
    );
    app.stop().await;
}

#[tokio::test]
async fn deploying_again_makes_a_new_version_and_running_instances_keep_theirs() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let old = app.start("expense", expense_vars(20000)).await;
    let v2 = app.deploy_example("expense.bpmn").await;
    assert_eq!(v2.version, 2);
    let new = app.start("expense", expense_vars(20000)).await;
    assert_eq!((old.version, new.version), (1, 2));

    let listed = app
        .workflow()
        .list_definitions(req(
            pb::ListDefinitionsRequest {
                key: "expense".into(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.definitions.len(), 2);
    assert_eq!(listed.definitions.iter().filter(|d| d.latest).count(), 1);

    let got = app
        .workflow()
        .get_definition(req(
            pb::GetDefinitionRequest {
                key: "expense".into(),
                version: 1,
            },
            "admin",
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.version, 1);
    assert!(!got.bpmn_xml.is_empty());
    assert!(got.activities.iter().any(|a| a.id == "manager_approval"));
    app.stop().await;
}

#[tokio::test]
async fn a_modeler_drawn_file_deploys_unchanged() {
    let app = spawn_app().await;
    for file in [
        "expense_modeler.bpmn",
        "countersign_modeler.bpmn",
        "vote_modeler.bpmn",
        "sequential_modeler.bpmn",
        "parallel_review_modeler.bpmn",
        "deferred_choice_modeler.bpmn",
    ] {
        let def = app.deploy_example(file).await;
        assert!(def.version >= 1, "{file}");
    }
    app.stop().await;
}
