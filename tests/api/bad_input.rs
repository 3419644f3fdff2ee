//! Bad input gets a clear error and changes nothing (DESIGN §10): every refusal names the field or
//! the BPMN element at fault, and nothing is written by a call that failed.
use replyflow::proto::pb;
use serde_json::json;
use tonic::Code;

use crate::{
    branches::bpmn,
    helpers::{assert_deploy_refused, assert_refused, expense_vars, req, spawn_app, status},
};

fn random_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn simple_process(key: &str) -> String {
    bpmn(
        key,
        r#"<bpmn:startEvent id="start"/>
        <bpmn:userTask id="review" replyflow:assignee="ann"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
        <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>"#,
    )
}

#[tokio::test]
async fn a_truncated_document_is_refused_as_malformed_xml() {
    let app = spawn_app().await;
    let xml = simple_process("cut");
    let truncated = &xml[..xml.len() / 2];
    assert_deploy_refused(&app, truncated, &["bpmn_xml"]).await;
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_element_is_refused_with_its_id() {
    let app = spawn_app().await;
    let xml = bpmn(
        "unknown",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:serviceTask id="call_api"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="call_api"/>
        <bpmn:sequenceFlow id="f1" sourceRef="call_api" targetRef="end"/>"#,
    );
    assert_deploy_refused(&app, &xml, &["bpmn_xml", "call_api"]).await;
    app.stop().await;
}

#[tokio::test]
async fn a_flow_to_a_missing_node_is_refused_with_the_flow_id() {
    let app = spawn_app().await;
    let xml = bpmn(
        "dangling",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:userTask id="review" replyflow:assignee="ann"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="review"/>
        <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>
        <bpmn:sequenceFlow id="to_nowhere" sourceRef="review" targetRef="missing_node"/>"#,
    );
    assert_deploy_refused(&app, &xml, &["bpmn_xml", "to_nowhere"]).await;
    app.stop().await;
}

#[tokio::test]
async fn a_condition_that_does_not_compile_is_refused_with_the_flow_id() {
    let app = spawn_app().await;
    let xml = bpmn(
        "badcel",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:exclusiveGateway id="check" default="small"/>
        <bpmn:userTask id="review" replyflow:assignee="ann"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="check"/>
        <bpmn:sequenceFlow id="broken_condition" sourceRef="check" targetRef="review">
          <bpmn:conditionExpression>amount &gt; &amp;&amp; (</bpmn:conditionExpression></bpmn:sequenceFlow>
        <bpmn:sequenceFlow id="small" sourceRef="check" targetRef="end"/>
        <bpmn:sequenceFlow id="f1" sourceRef="review" targetRef="end"/>"#,
    );
    assert_deploy_refused(&app, &xml, &["bpmn_xml", "broken_condition"]).await;
    app.stop().await;
}

#[tokio::test]
async fn two_start_events_are_refused_naming_one_of_them() {
    let app = spawn_app().await;
    let xml = bpmn(
        "twostarts",
        r#"<bpmn:startEvent id="start_web"/>
        <bpmn:startEvent id="start_mail"/>
        <bpmn:userTask id="review" replyflow:assignee="ann"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f0" sourceRef="start_web" targetRef="review"/>
        <bpmn:sequenceFlow id="f1" sourceRef="start_mail" targetRef="review"/>
        <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="end"/>"#,
    );
    let err = app.deploy_xml(&xml).await.expect_err("two start events");
    assert_refused(&err, Code::InvalidArgument, &["bpmn_xml"]);
    assert!(
        err.message().contains("start_web") || err.message().contains("start_mail"),
        "no start event named in {:?}",
        err.message()
    );
    assert!(app.definitions().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_empty_document_is_refused_naming_bpmn_xml() {
    let app = spawn_app().await;
    assert_deploy_refused(&app, "", &["bpmn_xml"]).await;
    app.stop().await;
}

#[tokio::test]
async fn a_document_that_is_not_utf8_is_refused_naming_bpmn_xml() {
    let app = spawn_app().await;
    // The process name "审批" written in GBK: fine in a legacy encoding, never valid UTF-8.
    let xml = simple_process("legacy").replace(r#"name="legacy""#, r#"name="@@""#);
    let (head, tail) = xml.split_once("@@").expect("placeholder");
    let bytes = [head.as_bytes(), &[0xc9, 0xf3, 0xc5, 0xfa], tail.as_bytes()].concat();
    assert!(std::str::from_utf8(&bytes).is_err());
    let err = app
        .workflow()
        .deploy_definition(req(
            pb::DeployDefinitionRequest {
                bpmn_xml: bytes,
                request_id: String::new(),
            },
            "admin",
        ))
        .await
        .expect_err("not UTF-8");
    assert_refused(&err, Code::InvalidArgument, &["bpmn_xml"]);
    assert!(app.definitions().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_the_message_names_them() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;

    let id = random_id();
    let err = app
        .workflow()
        .get_process_instance(req(
            pb::GetProcessInstanceRequest { id: id.clone() },
            "admin",
        ))
        .await
        .expect_err("unknown instance");
    assert_refused(&err, Code::NotFound, &[&id]);

    let id = random_id();
    let err = app
        .tasks()
        .get_task(req(
            pb::GetTaskRequest {
                task_id: id.clone(),
            },
            "admin",
        ))
        .await
        .expect_err("unknown task");
    assert_refused(&err, Code::NotFound, &[&id]);

    let ghost = pb::Task {
        id: random_id(),
        assignee: "mary".into(),
        ..Default::default()
    };
    let err = app
        .complete(&ghost, "approve")
        .await
        .expect_err("completing an unknown task");
    assert_refused(&err, Code::NotFound, &[&ghost.id]);

    let err = app
        .try_start("no_such_process", expense_vars(100))
        .await
        .expect_err("unknown definition key");
    assert_refused(&err, Code::NotFound, &["no_such_process"]);
    assert!(
        app.instances().await.is_empty(),
        "a refused start must not leave an instance"
    );

    let err = app
        .workflow()
        .get_definition(req(
            pb::GetDefinitionRequest {
                key: "no_such_process".into(),
                version: 0,
            },
            "admin",
        ))
        .await
        .expect_err("unknown definition key");
    assert_refused(&err, Code::NotFound, &["no_such_process"]);

    let err = app
        .workflow()
        .get_definition(req(
            pb::GetDefinitionRequest {
                key: "expense".into(),
                version: 7,
            },
            "admin",
        ))
        .await
        .expect_err("unknown version of a known key");
    assert_refused(&err, Code::NotFound, &["expense", "7"]);

    let err = app
        .directory()
        .get_user(req(
            pb::GetUserRequest {
                id: "nobody_here".into(),
            },
            "admin",
        ))
        .await
        .expect_err("unknown user");
    assert_refused(&err, Code::NotFound, &["nobody_here"]);
    app.stop().await;
}

#[tokio::test]
async fn completing_a_task_twice_is_a_failed_precondition() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(800)).await;
    let task = &instance.open_tasks[0];
    app.complete(task, "approve").await.expect("first decision");

    let err = app
        .complete(task, "approve")
        .await
        .expect_err("the task is closed");
    assert_refused(&err, Code::FailedPrecondition, &[&task.id]);
    let after = app.task(&task.id).await;
    assert_eq!(after.status, pb::TaskStatus::Completed as i32);
    assert_eq!(
        after.comment, "approve by mary",
        "the first decision stands"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_outcome_the_task_does_not_define_is_refused_and_nothing_moves() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let err = app
        .complete(task, "maybe_later")
        .await
        .expect_err("unknown outcome");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("outcome"),
        "the message names the field: {:?}",
        err.message()
    );
    assert!(
        err.message().contains("maybe_later"),
        "the message names the bad outcome: {:?}",
        err.message()
    );

    let still = app.task(&task.id).await;
    assert_eq!(still.status, pb::TaskStatus::Open as i32);
    assert!(still.outcome.is_empty() && still.completed_by.is_empty());
    let after = app.instance(&instance.id).await;
    assert_eq!(after.status, instance.status);
    assert_eq!(after.variables, instance.variables);
    assert_eq!(after.updated_at, instance.updated_at);
    assert_eq!(
        after.open_tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        [&task.id]
    );
    assert_eq!(
        app.event_kinds(&instance.id)
            .await
            .iter()
            .filter(|k| *k == "task_completed")
            .count(),
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn a_missing_assignee_variable_fails_the_instance_at_the_task() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app
        .try_start("expense", json!({"amount": 20000, "reason": "no manager"}))
        .await
        .expect("the call succeeds; the instance fails");
    assert_eq!(status(&instance), pb::InstanceStatus::Failed);
    assert!(
        instance.error.contains("manager_approval"),
        "{}",
        instance.error
    );
    assert!(instance.error.contains("manager"), "{}", instance.error);
    assert!(instance.open_tasks.is_empty());
    assert!(app.tasks_of(&instance.id).await.is_empty());

    let events = app.audit_events(&instance.id).await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "instance_failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].activity_id, "manager_approval");
    assert!(
        !events.iter().any(|e| e.kind == "task_opened"),
        "{events:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_negative_page_size_is_refused_naming_page_size() {
    let app = spawn_app().await;
    let err = app
        .tasks()
        .list_tasks(req(
            pb::ListTasksRequest {
                page_size: -1,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListTasks");
    assert_refused(&err, Code::InvalidArgument, &["page_size"]);

    let err = app
        .workflow()
        .list_process_instances(req(
            pb::ListProcessInstancesRequest {
                page_size: -5,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListProcessInstances");
    assert_refused(&err, Code::InvalidArgument, &["page_size"]);

    let err = app
        .workflow()
        .list_definitions(req(
            pb::ListDefinitionsRequest {
                page_size: -1,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListDefinitions");
    assert_refused(&err, Code::InvalidArgument, &["page_size"]);

    let err = app
        .directory()
        .list_users(req(
            pb::ListUsersRequest {
                page_size: -1,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListUsers");
    assert_refused(&err, Code::InvalidArgument, &["page_size"]);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_status_filter_is_refused_naming_status() {
    let app = spawn_app().await;
    let err = app
        .tasks()
        .list_tasks(req(
            pb::ListTasksRequest {
                status: 99,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListTasks");
    assert_refused(&err, Code::InvalidArgument, &["status"]);

    let err = app
        .workflow()
        .list_process_instances(req(
            pb::ListProcessInstancesRequest {
                status: 42,
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("ListProcessInstances");
    assert_refused(&err, Code::InvalidArgument, &["status"]);
    app.stop().await;
}

#[tokio::test]
async fn starting_without_a_definition_key_is_refused_naming_it() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let err = app
        .try_start("", expense_vars(100))
        .await
        .expect_err("no definition key");
    assert_refused(&err, Code::InvalidArgument, &["definition_key"]);
    assert!(app.instances().await.is_empty());
    app.stop().await;
}

fn user_request(id: &str, email: &str) -> pb::UpsertUserRequest {
    pb::UpsertUserRequest {
        user: Some(pb::User {
            id: id.into(),
            display_name: id.to_uppercase(),
            email: email.into(),
            locale: "en".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn a_user_with_a_malformed_email_is_refused_naming_user_email() {
    let app = spawn_app().await;
    let err = app
        .directory()
        .upsert_user(req(user_request("zoe", "zoe at example dot com"), "admin"))
        .await
        .expect_err("bad email");
    assert_refused(&err, Code::InvalidArgument, &["user.email"]);
    let err = app
        .directory()
        .get_user(req(pb::GetUserRequest { id: "zoe".into() }, "admin"))
        .await
        .expect_err("nothing stored");
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn an_email_that_belongs_to_another_user_already_exists() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let err = app
        .directory()
        .upsert_user(req(user_request("imposter", "MARY@example.com"), "admin"))
        .await
        .expect_err("mary's address");
    assert_refused(&err, Code::AlreadyExists, &["user.email", "mary"]);
    let err = app
        .directory()
        .get_user(req(
            pb::GetUserRequest {
                id: "imposter".into(),
            },
            "admin",
        ))
        .await
        .expect_err("nothing stored");
    assert_eq!(err.code(), Code::NotFound);
    app.stop().await;
}

#[tokio::test]
async fn getting_a_definition_without_a_key_is_refused_naming_key() {
    let app = spawn_app().await;
    let err = app
        .workflow()
        .get_definition(req(pb::GetDefinitionRequest::default(), "admin"))
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("key"),
        "the message names the request's field: {:?}",
        err.message()
    );
    app.stop().await;
}

#[tokio::test]
async fn a_page_token_the_server_did_not_issue_is_refused_naming_page_token() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    app.start("expense", expense_vars(100)).await;
    let err = app
        .tasks()
        .list_tasks(req(
            pb::ListTasksRequest {
                page_token: "not-a-token".into(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect_err("a made-up token");
    assert_refused(&err, Code::InvalidArgument, &["page_token"]);
    app.stop().await;
}

#[tokio::test]
async fn an_address_that_is_another_users_alias_already_exists() {
    let app = spawn_app().await;
    let mut mary = user_request("mary", "mary@example.com");
    if let Some(user) = mary.user.as_mut() {
        user.email_aliases = vec!["m.home@example.net".into()];
    }
    app.directory()
        .upsert_user(req(mary, "admin"))
        .await
        .expect("mary");

    let err = app
        .directory()
        .upsert_user(req(user_request("imposter", "m.home@example.net"), "admin"))
        .await
        .expect_err("mary's alias as an email");
    assert_refused(&err, Code::AlreadyExists, &["user.email"]);

    let mut alias_thief = user_request("thief", "thief@example.com");
    if let Some(user) = alias_thief.user.as_mut() {
        user.email_aliases = vec!["mary@example.com".into()];
    }
    let err = app
        .directory()
        .upsert_user(req(alias_thief, "admin"))
        .await
        .expect_err("mary's email as an alias");
    assert_refused(&err, Code::AlreadyExists, &["user.email_aliases"]);
    app.stop().await;
}

#[tokio::test]
async fn a_phone_that_is_not_e164_or_a_manager_cycle_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let mut bad_phone = user_request("pat", "pat@example.com");
    if let Some(user) = bad_phone.user.as_mut() {
        user.phone = "call me maybe".into();
    }
    let err = app
        .directory()
        .upsert_user(req(bad_phone, "admin"))
        .await
        .expect_err("not E.164");
    assert_refused(&err, Code::InvalidArgument, &["user.phone"]);

    app.add_user("alice", "bob").await;
    let err = app
        .directory()
        .upsert_user(req(
            pb::UpsertUserRequest {
                user: Some(pb::User {
                    id: "bob".into(),
                    manager_id: "alice".into(),
                    ..Default::default()
                }),
            },
            "admin",
        ))
        .await
        .expect_err("alice -> bob -> alice");
    assert_refused(&err, Code::InvalidArgument, &["user.manager_id"]);
    app.stop().await;
}
