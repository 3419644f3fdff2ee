//! Trust (issue 9): who may do what, four eyes, variables that are not a back door, and lists
//! that show only what the caller may see. Each test is named after the attack it stops; every
//! refusal is checked to have changed nothing.
use replyflow::proto::pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::{TestApp, expense_vars, req, spawn_app, to_json, vars};

/// The expense example started by "initiator", with mary (manager) and fred (finance) in the
/// directory; returns the app and the instance.
async fn expense_for_mary() -> (TestApp, pb::ProcessInstance) {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    for user in ["initiator", "mary", "fred", "eve"] {
        app.add_user(user, "").await;
    }
    let instance = app.start("expense", expense_vars(20000)).await;
    (app, instance)
}

fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) -> tonic::Status {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    status
}

#[tokio::test]
async fn the_initiator_cannot_take_the_approvers_task_and_approve_it_herself() {
    let (app, instance) = expense_for_mary().await;
    let task = &instance.open_tasks[0];

    let status = denied(
        app.reassign_as(task, "initiator", "initiator").await,
        "the initiator reassigns mary's task to herself",
    );
    assert!(status.message().contains("mary"), "{status:?}");
    // The assignee cannot hand it to the initiator either, nor can an admin (four eyes).
    for by in ["mary", "admin"] {
        let status = app
            .reassign_as(task, by, "initiator")
            .await
            .expect_err("handing the task to the initiator");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("new_assignee:"), "{status:?}");
        assert!(status.message().contains("four eyes"), "{status:?}");
    }
    // Not even an admin decides mary's task.
    denied(
        app.complete_as(task, "admin", "approve").await,
        "an admin approves mary's task",
    );
    denied(
        app.complete_as(task, "initiator", "approve").await,
        "the initiator approves mary's task",
    );
    let task = app.task(&task.id).await;
    assert_eq!(task.assignee, "mary");
    assert_eq!(task.status, pb::TaskStatus::Open as i32);
    // An admin cannot make themselves the assignee to decide it either.
    let status = app
        .reassign_as(&task, "admin", "admin")
        .await
        .expect_err("an admin hands mary's task to themselves");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Mary may still hand it to someone who is not the initiator (转办), and an admin may too.
    let moved = app
        .reassign_as(&task, "admin", "fred")
        .await
        .expect("admin reassigns");
    assert_eq!(moved.assignee, "fred");
}

#[tokio::test]
async fn an_approver_cannot_rewrite_routing_records_or_conditions_through_completion_variables() {
    let (app, instance) = expense_for_mary().await;
    let task = &instance.open_tasks[0];
    for (name, value) in [
        ("finance", json!("mary")),
        ("manager_approval", json!({"completed_by": "someone else"})),
        ("amount", json!(1)),
        ("initiator", json!("mary")),
    ] {
        let message = pb::CompleteTaskRequest {
            task_id: task.id.clone(),
            outcome: "approve".into(),
            variables: vars(json!({ name: value })),
            ..Default::default()
        };
        let status = app
            .tasks()
            .complete_task(req(message, "mary"))
            .await
            .expect_err("a completion that sets a variable the task does not list");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().starts_with(&format!("variables.{name}:")),
            "{name}: {status:?}"
        );
    }
    let now = app.instance(&instance.id).await;
    assert_eq!(to_json(&now.variables), to_json(&instance.variables));
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
}

const WRITABLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:replyflow="https://replyflow.dev/schema/1" id="d">
  <bpmn:process id="note_taking" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="review"/>
    <bpmn:userTask id="review" replyflow:assignee="${reviewer}" replyflow:writable="note, cost_center"/>
    <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>"#;

#[tokio::test]
async fn a_task_sets_exactly_the_variables_its_definition_makes_writable() {
    let app = spawn_app().await;
    app.deploy_xml(WRITABLE).await.expect("deploys");
    app.add_user("mary", "").await;
    let instance = app.start("note_taking", json!({"reviewer": "mary"})).await;
    let message = pb::CompleteTaskRequest {
        task_id: instance.open_tasks[0].id.clone(),
        outcome: "approve".into(),
        variables: vars(json!({"note": "checked the receipts", "cost_center": "CC-7"})),
        ..Default::default()
    };
    let done = app
        .tasks()
        .complete_task(req(message, "mary"))
        .await
        .expect("writable variables are accepted")
        .into_inner();
    let variables = to_json(&done.instance.expect("instance").variables);
    assert_eq!(variables["note"], json!("checked the receipts"));
    assert_eq!(variables["cost_center"], json!("CC-7"));
}

#[tokio::test]
async fn a_definition_cannot_make_records_the_initiator_or_assignee_variables_writable() {
    let app = spawn_app().await;
    for (writable, why) in [
        ("review", "an activity's record"),
        ("initiator", "set by the engine"),
        ("outcome", "set by the engine"),
        ("reviewer", "chooses an assignee"),
    ] {
        let xml = WRITABLE.replace("note, cost_center", writable);
        let status = app.deploy_xml(&xml).await.expect_err(writable);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("review"), "{status:?}");
        assert!(status.message().contains(why), "{writable}: {status:?}");
    }
    assert!(app.definitions().await.is_empty());
}

#[tokio::test]
async fn a_caller_without_a_role_cannot_administer() {
    let (app, instance) = expense_for_mary().await;
    let xml = std::fs::read(crate::helpers::repo_path("examples/expense.bpmn")).expect("example");
    denied(
        app.workflow()
            .deploy_definition(req(
                pb::DeployDefinitionRequest {
                    bpmn_xml: xml,
                    request_id: String::new(),
                },
                "eve",
            ))
            .await,
        "eve deploys a new version of expense",
    );
    assert_eq!(app.definitions().await.len(), 1);

    denied(
        app.reminders()
            .upsert_reminder_type(req(
                pb::UpsertReminderTypeRequest {
                    reminder_type: Some(pb::ReminderType {
                        id: "urgent".into(),
                        count: 1,
                        interval: "PT1S".into(),
                        channels: vec![pb::Channel::Inbox as i32],
                        escalation: "complete:approve".into(),
                        ..Default::default()
                    }),
                },
                "eve",
            ))
            .await,
        "eve defines an auto-approving reminder type",
    );

    let status = denied(
        app.directory()
            .upsert_user(req(
                pb::UpsertUserRequest {
                    user: Some(pb::User {
                        id: "mary".into(),
                        display_name: "MARY".into(),
                        email: "eve@evil.example".into(),
                        locale: "en".into(),
                        ..Default::default()
                    }),
                },
                "eve",
            ))
            .await,
        "eve changes mary's email",
    );
    assert!(status.message().contains("directory"), "{status:?}");
    let mary = app
        .directory()
        .get_user(req(pb::GetUserRequest { id: "mary".into() }, "admin"))
        .await
        .expect("get user")
        .into_inner();
    assert_eq!(mary.email, "mary@example.com");

    denied(
        app.approvals()
            .submit_inbound_email(req(
                pb::SubmitInboundEmailRequest {
                    raw: b"From: mary@example.com\r\nSubject: Re\r\n\r\napprove\r\n".to_vec(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve submits a reply with forged headers",
    );
    denied(
        app.approvals()
            .list_inbound_emails(req(pb::ListInboundEmailsRequest::default(), "eve"))
            .await,
        "eve lists every inbound mail",
    );
    denied(
        app.reminders()
            .reminder_stats(req(pb::ReminderStatsRequest::default(), "eve"))
            .await,
        "eve reads reminder statistics",
    );
    denied(
        app.cancel_as(&instance.id, "eve").await,
        "eve cancels someone else's request",
    );
    denied(
        app.reminders()
            .remind_now(req(
                pb::RemindNowRequest {
                    task_id: instance.open_tasks[0].id.clone(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve sends reminders for someone else's request",
    );
    for rpc in ["resend", "revoke"] {
        let task_id = instance.open_tasks[0].id.clone();
        let result = if rpc == "resend" {
            app.approvals()
                .resend_approval_email(req(
                    pb::ResendApprovalEmailRequest {
                        task_id,
                        ..Default::default()
                    },
                    "eve",
                ))
                .await
                .map(|_| ())
        } else {
            app.approvals()
                .revoke_approval(req(
                    pb::RevokeApprovalRequest {
                        task_id,
                        ..Default::default()
                    },
                    "eve",
                ))
                .await
                .map(|_| ())
        };
        denied(result, rpc);
    }
    assert_eq!(
        app.instance(&instance.id).await.status,
        pb::InstanceStatus::Running as i32
    );
}

#[tokio::test]
async fn a_stranger_cannot_read_other_peoples_requests_tasks_approvals_or_inbox() {
    let (app, instance) = expense_for_mary().await;
    let task_id = instance.open_tasks[0].id.clone();
    denied(
        app.workflow()
            .get_process_instance(req(
                pb::GetProcessInstanceRequest {
                    id: instance.id.clone(),
                },
                "eve",
            ))
            .await,
        "eve reads the instance",
    );
    denied(
        app.tasks()
            .get_task(req(
                pb::GetTaskRequest {
                    task_id: task_id.clone(),
                },
                "eve",
            ))
            .await,
        "eve reads mary's task",
    );
    denied(
        app.approvals()
            .get_approval(req(
                pb::GetApprovalRequest {
                    task_id: task_id.clone(),
                },
                "eve",
            ))
            .await,
        "eve reads mary's approval context",
    );
    denied(
        app.approvals()
            .list_inbound_emails(req(
                pb::ListInboundEmailsRequest {
                    task_id: task_id.clone(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve lists the replies to mary's task",
    );
    denied(
        app.reminders()
            .list_reminders(req(
                pb::ListRemindersRequest {
                    process_instance_id: instance.id.clone(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve lists the instance's reminders",
    );
    denied(
        app.reminders()
            .list_reminders(req(
                pb::ListRemindersRequest {
                    recipient: "mary".into(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve lists the reminders chasing mary",
    );
    denied(
        app.reminders()
            .list_reminders(req(pb::ListRemindersRequest::default(), "eve"))
            .await,
        "eve lists every reminder",
    );
    denied(
        app.reminders()
            .mark_messages_read(req(
                pb::MarkMessagesReadRequest {
                    user_id: "mary".into(),
                    all: true,
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve marks mary's messages read",
    );
    denied(
        app.reminders()
            .list_messages(req(
                pb::ListMessagesRequest {
                    user_id: "mary".into(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve reads mary's messages",
    );
    denied(
        app.tasks()
            .watch_tasks(req(
                pb::WatchTasksRequest {
                    assignee: "mary".into(),
                    ..Default::default()
                },
                "eve",
            ))
            .await,
        "eve watches mary's tasks",
    );
    // Lists show eve nothing of it.
    let listed = app
        .workflow()
        .list_process_instances(req(pb::ListProcessInstancesRequest::default(), "eve"))
        .await
        .expect("eve lists instances")
        .into_inner();
    assert!(listed.instances.is_empty(), "{listed:?}");
    let tasks = app
        .tasks()
        .list_tasks(req(pb::ListTasksRequest::default(), "eve"))
        .await
        .expect("eve lists tasks")
        .into_inner();
    assert!(tasks.tasks.is_empty(), "{tasks:?}");

    // The initiator and the participant do see it.
    for user in ["initiator", "mary"] {
        let seen = app
            .workflow()
            .get_process_instance(req(
                pb::GetProcessInstanceRequest {
                    id: instance.id.clone(),
                },
                user,
            ))
            .await
            .unwrap_or_else(|e| panic!("{user} reads the instance: {e:?}"));
        assert_eq!(seen.into_inner().id, instance.id);
        let listed = app
            .workflow()
            .list_process_instances(req(pb::ListProcessInstancesRequest::default(), user))
            .await
            .expect("list")
            .into_inner();
        assert_eq!(listed.instances.len(), 1, "{user}");
    }
    // Fred has no task yet: he sees nothing either.
    let fred = app
        .tasks()
        .list_tasks(req(pb::ListTasksRequest::default(), "fred"))
        .await
        .expect("fred lists tasks")
        .into_inner();
    assert!(fred.tasks.is_empty());
}

#[tokio::test]
async fn phone_numbers_are_shown_only_to_their_owner_and_the_directory() {
    let app = spawn_app().await;
    let user = pb::User {
        id: "mary".into(),
        display_name: "Mary".into(),
        email: "mary@example.com".into(),
        phone: "+8613800138000".into(),
        locale: "zh-CN".into(),
        ..Default::default()
    };
    app.directory()
        .upsert_user(req(pb::UpsertUserRequest { user: Some(user) }, "admin"))
        .await
        .expect("upsert");
    let phone_as = |caller: &'static str| {
        let app = &app;
        async move {
            app.directory()
                .get_user(req(pb::GetUserRequest { id: "mary".into() }, caller))
                .await
                .expect("get user")
                .into_inner()
                .phone
        }
    };
    assert_eq!(phone_as("eve").await, "");
    assert_eq!(phone_as("mary").await, "+8613800138000");
    assert_eq!(phone_as("admin").await, "+8613800138000");
    let listed = app
        .directory()
        .list_users(req(pb::ListUsersRequest::default(), "eve"))
        .await
        .expect("list users")
        .into_inner();
    assert!(listed.users.iter().all(|u| u.phone.is_empty()));
}

#[tokio::test]
async fn a_list_of_big_instances_leaves_variables_out_and_a_full_list_is_cut_in_bytes() {
    let (app, _) = expense_for_mary().await;
    let big = "x".repeat(1024 * 1024);
    for _ in 0..5 {
        let mut variables = expense_vars(100);
        variables["attachment"] = json!(big);
        app.start("expense", variables).await;
    }
    let basic = app
        .workflow()
        .list_process_instances(req(pb::ListProcessInstancesRequest::default(), "admin"))
        .await
        .expect("basic list")
        .into_inner();
    assert_eq!(basic.instances.len(), 6);
    assert!(
        basic
            .instances
            .iter()
            .all(|i| to_json(&i.variables).is_empty()),
        "the basic view carries no variables"
    );
    assert!(
        basic
            .instances
            .iter()
            .all(|i| i.open_tasks.len() == 1 && i.open_tasks[0].activity_id == "manager_approval"),
        "each listed instance comes with its open task (one query for the page)"
    );
    let mut seen = 0;
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .workflow()
            .list_process_instances(req(
                pb::ListProcessInstancesRequest {
                    view: pb::InstanceView::Full as i32,
                    page_token: token.clone(),
                    ..Default::default()
                },
                "admin",
            ))
            .await
            .expect("full list")
            .into_inner();
        pages += 1;
        assert!(page.instances.len() <= 3, "a page stops at about 3 MiB");
        seen += page.instances.len();
        if let Some(first) = page.instances.first() {
            assert!(
                !to_json(&first.variables).is_empty(),
                "the full view has variables"
            );
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, 6);
    assert!(pages >= 2);
}

#[tokio::test]
async fn ids_and_comments_with_control_or_bidi_characters_are_refused_naming_the_field() {
    let (app, instance) = expense_for_mary().await;
    let start = pb::StartProcessRequest {
        definition_key: "expense".into(),
        business_key: "EXP-\u{202E}7001".into(),
        variables: vars(expense_vars(10)),
        ..Default::default()
    };
    let status = app
        .workflow()
        .start_process(req(start, "initiator"))
        .await
        .expect_err("a business key that displays reversed");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("business_key:"), "{status:?}");
    for (comment, request_id, field) in [
        ("ok\u{0}", "", "comment:"),
        ("ok", "id\nwith a line break", "request_id:"),
    ] {
        let message = pb::CompleteTaskRequest {
            task_id: instance.open_tasks[0].id.clone(),
            outcome: "approve".into(),
            comment: comment.into(),
            request_id: request_id.into(),
            ..Default::default()
        };
        let status = app
            .tasks()
            .complete_task(req(message, "mary"))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{status:?}");
    }
    assert_eq!(app.instances().await.len(), 1);
    assert_eq!(
        app.task(&instance.open_tasks[0].id).await.status,
        pb::TaskStatus::Open as i32
    );
}

#[tokio::test]
async fn a_definition_whose_names_would_read_reversed_in_a_mail_is_refused_naming_the_element() {
    let app = spawn_app().await;
    for (from, to, element) in [
        (
            r#"<bpmn:userTask id="review""#,
            "<bpmn:userTask id=\"review\" name=\"Approve \u{202E}gnp.exe\"",
            "review",
        ),
        (
            r#"<bpmn:endEvent id="end"/>"#,
            "<bpmn:endEvent id=\"end\" name=\"a\u{7}b\"/>",
            "end",
        ),
        (
            r#"id="review""#,
            &format!(r#"id="{}""#, "r".repeat(300)),
            "id: at most 200 bytes",
        ),
    ] {
        let xml = WRITABLE.replace(from, to);
        assert_ne!(xml, WRITABLE, "{from}");
        let status = app.deploy_xml(&xml).await.expect_err(element);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(element), "{element}: {status:?}");
    }
    assert!(app.definitions().await.is_empty());
}

#[tokio::test]
async fn a_start_cannot_forge_the_last_outcome() {
    let (app, _) = expense_for_mary().await;
    for name in ["outcome"] {
        let mut variables = expense_vars(20000);
        variables[name] = json!({"outcome": "approve", "completed_by": "mary"});
        let status = app
            .try_start("expense", variables)
            .await
            .expect_err("a forged record at start");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("variables.{name}:")),
            "{status:?}"
        );
    }
    assert_eq!(app.instances().await.len(), 1);
}
