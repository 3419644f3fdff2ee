//! What a client can rely on in every call (DESIGN §7): retries with a request_id act once,
//! a task is decided only by its assignee, the caller must say who they are, lists page, tasks
//! can be handed on, instances cancelled, and the directory keeps what the OA pushes.
use std::{collections::HashSet, sync::Arc};

use replyflow::{clock::ManualClock, proto::pb};
use serde_json::{Value, json};
use tonic::{Code, Request};

use crate::{
    branches::parallel_xml,
    helpers::{
        TestApp, expense_vars, open_activities, real_now, req, spawn_app, spawn_app_at, status,
        vars,
    },
};

fn start_request(key: &str, variables: Value, request_id: &str) -> pb::StartProcessRequest {
    pb::StartProcessRequest {
        definition_key: key.into(),
        variables: vars(variables),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn start_with_business_key(app: &TestApp, business_key: &str) -> pb::ProcessInstance {
    let message = pb::StartProcessRequest {
        definition_key: "expense".into(),
        business_key: business_key.into(),
        variables: vars(expense_vars(20000)),
        ..Default::default()
    };
    app.workflow()
        .start_process(req(message, "initiator"))
        .await
        .expect("start")
        .into_inner()
}

fn complete_request(task: &pb::Task, outcome: &str, request_id: &str) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id: task.id.clone(),
        outcome: outcome.into(),
        comment: "looks fine".into(),
        request_id: request_id.into(),
        ..Default::default()
    }
}

/// Follows next_page_token until the last page; returns each page's ids and the tokens seen.
async fn all_pages(
    mut fetch: impl AsyncFnMut(String) -> (Vec<String>, String),
) -> (Vec<Vec<String>>, Vec<String>) {
    let mut pages = Vec::new();
    let mut tokens = Vec::new();
    let mut token = String::new();
    loop {
        let (ids, next) = fetch(token).await;
        pages.push(ids);
        tokens.push(next.clone());
        if next.is_empty() {
            return (pages, tokens);
        }
        assert!(pages.len() < 100, "pagination does not end");
        token = next;
    }
}

#[track_caller]
fn assert_pages(pages: &[Vec<String>], tokens: &[String], sizes: &[usize], all: &[String]) {
    let got: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(got, sizes, "page sizes");
    for token in &tokens[..tokens.len() - 1] {
        assert!(!token.is_empty(), "a page before the last has a token");
    }
    assert_eq!(tokens.last().map(String::as_str), Some(""), "last token");
    let flat: Vec<&String> = pages.iter().flatten().collect();
    let distinct: HashSet<&String> = flat.iter().copied().collect();
    assert_eq!(distinct.len(), flat.len(), "no item on two pages");
    let expected: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct, expected, "every item on some page");
}

#[tokio::test]
async fn starting_twice_with_the_same_request_id_starts_one_instance() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let first = app
        .workflow()
        .start_process(req(
            start_request("expense", expense_vars(20000), "form-17"),
            "initiator",
        ))
        .await
        .expect("first start")
        .into_inner();
    let retry = app
        .workflow()
        .start_process(req(
            start_request("expense", expense_vars(20000), "form-17"),
            "initiator",
        ))
        .await
        .expect("the retry succeeds")
        .into_inner();
    assert_eq!(retry.id, first.id);
    assert_eq!(
        retry.open_tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        first.open_tasks.iter().map(|t| &t.id).collect::<Vec<_>>()
    );
    assert_eq!(app.instances().await.len(), 1);

    let err = app
        .workflow()
        .start_process(req(
            start_request("expense", expense_vars(99), "form-17"),
            "initiator",
        ))
        .await
        .expect_err("same request id, other variables");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("request_id"), "{}", err.message());
    assert_eq!(app.instances().await.len(), 1);
    assert_eq!(app.tasks_of(&first.id).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn retrying_a_completion_with_the_same_request_id_moves_the_instance_once() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let first = app
        .tasks()
        .complete_task(req(complete_request(task, "approve", "click-1"), "mary"))
        .await
        .expect("first click")
        .into_inner();
    let retry = app
        .tasks()
        .complete_task(req(complete_request(task, "approve", "click-1"), "mary"))
        .await
        .expect("the retry gets the same answer, not an error")
        .into_inner();
    let (t1, t2) = (first.task.expect("task"), retry.task.expect("task"));
    assert_eq!(
        (t1.id.as_str(), t1.outcome.as_str()),
        (task.id.as_str(), "approve")
    );
    assert_eq!(t2.id, t1.id);
    assert_eq!(t2.status, pb::TaskStatus::Completed as i32);
    assert_eq!(t2.completed_by, "mary");
    let (i1, i2) = (
        first.instance.expect("instance"),
        retry.instance.expect("instance"),
    );
    assert_eq!(i2.id, i1.id);
    assert_eq!(open_activities(&i2), ["finance_approval"]);
    assert_eq!(
        i2.open_tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
        i1.open_tasks.iter().map(|t| &t.id).collect::<Vec<_>>()
    );

    let tasks = app.tasks_of(&instance.id).await;
    let finance: Vec<_> = tasks
        .iter()
        .filter(|t| t.activity_id == "finance_approval")
        .collect();
    assert_eq!(finance.len(), 1, "exactly one finance task: {tasks:?}");
    let completions = app
        .event_kinds(&instance.id)
        .await
        .into_iter()
        .filter(|k| k == "task_completed")
        .count();
    assert_eq!(completions, 1);

    let err = app
        .tasks()
        .complete_task(req(complete_request(task, "reject", "click-1"), "mary"))
        .await
        .expect_err("same request id, other outcome");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn only_the_assignee_may_complete_a_task() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let err = app
        .complete_as(task, "mallory", "approve")
        .await
        .expect_err("not mallory's task");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let still = app.task(&task.id).await;
    assert_eq!(still.status, pb::TaskStatus::Open as i32);
    assert_eq!(still.assignee, "mary");
    let after = app.instance(&instance.id).await;
    assert_eq!(open_activities(&after), ["manager_approval"]);

    app.complete(task, "approve").await.expect("mary still can");
    app.stop().await;
}

#[tokio::test]
async fn a_caller_without_identity_is_unauthenticated() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(800)).await;

    let err = app
        .tasks()
        .list_tasks(Request::new(pb::ListTasksRequest::default()))
        .await
        .expect_err("a read without x-user-id");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let err = app
        .workflow()
        .start_process(Request::new(start_request(
            "expense",
            expense_vars(800),
            "",
        )))
        .await
        .expect_err("a write without x-user-id");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let err = app
        .tasks()
        .complete_task(Request::new(complete_request(
            &instance.open_tasks[0],
            "approve",
            "",
        )))
        .await
        .expect_err("a completion without x-user-id");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(app.instances().await.len(), 1, "nothing started");
    assert_eq!(
        app.task(&instance.open_tasks[0].id).await.status,
        pb::TaskStatus::Open as i32
    );
    app.stop().await;
}

#[tokio::test]
async fn users_come_in_pages_of_the_size_asked_for() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 1..=7 {
        let id = format!("user{n}");
        app.add_user(&id, "").await;
        ids.push(id);
    }
    let (pages, tokens) = all_pages(async |token| {
        let page = app
            .directory()
            .list_users(req(
                pb::ListUsersRequest {
                    page_size: 3,
                    page_token: token,
                    ..Default::default()
                },
                "admin",
            ))
            .await
            .expect("list users")
            .into_inner();
        (
            page.users.into_iter().map(|u| u.id).collect(),
            page.next_page_token,
        )
    })
    .await;
    assert_pages(&pages, &tokens, &[3, 3, 1], &ids);
    assert_eq!(pages.concat(), ids, "ordered by id");

    let default = app
        .directory()
        .list_users(req(pb::ListUsersRequest::default(), "admin"))
        .await
        .expect("page_size 0")
        .into_inner();
    assert_eq!(default.users.len(), 7, "page_size 0 means the default (50)");
    assert!(default.next_page_token.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn tasks_and_instances_come_in_pages_of_the_size_asked_for() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let mut instance_ids = Vec::new();
    let mut task_ids = Vec::new();
    for _ in 0..7 {
        let instance = app.start("expense", expense_vars(20000)).await;
        task_ids.push(instance.open_tasks[0].id.clone());
        instance_ids.push(instance.id);
    }

    let (pages, tokens) = all_pages(async |token| {
        let page = app
            .tasks()
            .list_tasks(req(
                pb::ListTasksRequest {
                    assignee: "mary".into(),
                    page_size: 3,
                    page_token: token,
                    ..Default::default()
                },
                "mary",
            ))
            .await
            .expect("list tasks")
            .into_inner();
        (
            page.tasks.into_iter().map(|t| t.id).collect(),
            page.next_page_token,
        )
    })
    .await;
    assert_pages(&pages, &tokens, &[3, 3, 1], &task_ids);

    let (pages, tokens) = all_pages(async |token| {
        let page = app
            .workflow()
            .list_process_instances(req(
                pb::ListProcessInstancesRequest {
                    page_size: 3,
                    page_token: token,
                    ..Default::default()
                },
                "admin",
            ))
            .await
            .expect("list instances")
            .into_inner();
        (
            page.instances.into_iter().map(|i| i.id).collect(),
            page.next_page_token,
        )
    })
    .await;
    assert_pages(&pages, &tokens, &[3, 3, 1], &instance_ids);

    let tasks = app
        .tasks()
        .list_tasks(req(pb::ListTasksRequest::default(), "admin"))
        .await
        .expect("page_size 0")
        .into_inner();
    assert_eq!(tasks.tasks.len(), 7, "page_size 0 means the default (50)");
    assert!(tasks.next_page_token.is_empty());
    let instances = app
        .workflow()
        .list_process_instances(req(pb::ListProcessInstancesRequest::default(), "admin"))
        .await
        .expect("page_size 0")
        .into_inner();
    assert_eq!(instances.instances.len(), 7);
    assert!(instances.next_page_token.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_assignee_hands_a_task_to_a_colleague_who_then_decides_it() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("rita", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(800)).await;
    let task = instance.open_tasks[0].clone();

    let err = app
        .reassign_as(&task, "stranger", "stranger")
        .await
        .expect_err("a stranger cannot take the task");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(app.task(&task.id).await.assignee, "mary");

    let moved = app
        .reassign_as(&task, "mary", "rita")
        .await
        .expect("mary hands it to rita");
    assert_eq!(moved.id, task.id, "the task keeps its id");
    assert_eq!(moved.assignee, "rita");
    assert_eq!(moved.status, pb::TaskStatus::Open as i32);
    assert_eq!(app.task(&task.id).await.assignee, "rita");

    let err = app
        .complete_as(&task, "mary", "approve")
        .await
        .expect_err("no longer mary's");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = app
        .reassign_as(&task, "mary", "mary")
        .await
        .expect_err("mary cannot take it back herself");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let done = app
        .complete_as(&task, "rita", "approve")
        .await
        .expect("rita decides");
    let decided = done.task.expect("task");
    assert_eq!(decided.completed_by, "rita");
    assert_eq!(
        status(&done.instance.expect("instance")),
        pb::InstanceStatus::Completed
    );
    assert!(
        app.event_kinds(&instance.id)
            .await
            .iter()
            .any(|k| k == "task_reassigned")
    );
    app.stop().await;
}

#[tokio::test]
async fn handing_a_task_to_an_unknown_user_or_to_its_own_assignee_is_refused() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(800)).await;
    let task = instance.open_tasks[0].clone();

    let err = app
        .reassign_as(&task, "mary", "ghost_user")
        .await
        .expect_err("ghost_user is not in the directory");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("new_assignee"), "{}", err.message());

    let err = app
        .reassign_as(&task, "mary", "mary")
        .await
        .expect_err("already mary's");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("new_assignee"), "{}", err.message());
    assert_eq!(app.task(&task.id).await.assignee, "mary");
    app.stop().await;
}

#[tokio::test]
async fn the_initiator_cancels_an_instance_and_its_open_tasks_close() {
    let app = spawn_app().await;
    app.deploy_xml(&parallel_xml("par")).await.expect("deploy");
    let instance = app
        .start("par", json!({"legal": "lena", "finance": "fred"}))
        .await;
    assert_eq!(open_activities(&instance), ["finance", "legal"]);

    let err = app
        .cancel_as(&instance.id, "lena")
        .await
        .expect_err("only the initiator may cancel");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(
        status(&app.instance(&instance.id).await),
        pb::InstanceStatus::Running
    );

    let cancelled = app
        .cancel_as(&instance.id, "initiator")
        .await
        .expect("the initiator cancels");
    assert_eq!(status(&cancelled), pb::InstanceStatus::Cancelled);
    assert!(cancelled.open_tasks.is_empty());
    assert_eq!(cancelled.cancel_reason, "cancelled by initiator");
    let tasks = app.tasks_of(&instance.id).await;
    assert_eq!(tasks.len(), 2);
    for task in &tasks {
        assert_eq!(task.status, pb::TaskStatus::Cancelled as i32, "{task:?}");
    }

    let err = app
        .complete(&instance.open_tasks[0], "approve")
        .await
        .expect_err("a cancelled task is closed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // Cancelling again is a retry: the cancelled instance comes back unchanged.
    let again = app
        .cancel_as(&instance.id, "initiator")
        .await
        .expect("cancelling twice answers with the cancelled instance");
    assert_eq!(again.status, pb::InstanceStatus::Cancelled as i32);
    let kinds = app.event_kinds(&instance.id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "instance_cancelled").count(),
        1,
        "{kinds:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_directory_keeps_what_the_oa_pushes_and_replaces_it_on_upsert() {
    let app = spawn_app().await;
    let zhang = pb::User {
        id: "zhangsan".into(),
        display_name: "张三".into(),
        email: "zhangsan@example.cn".into(),
        email_aliases: vec!["zs@home.example".into()],
        phone: "+8613800138000".into(),
        manager_id: "lisi".into(),
        locale: "zh-CN".into(),
        updated_at: None,
    };
    let upserted = app
        .directory()
        .upsert_user(req(
            pb::UpsertUserRequest {
                user: Some(zhang.clone()),
            },
            "admin",
        ))
        .await
        .expect("upsert")
        .into_inner();
    let got = app
        .directory()
        .get_user(req(
            pb::GetUserRequest {
                id: "zhangsan".into(),
            },
            "admin",
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(got.updated_at.is_some());
    assert_eq!(
        pb::User {
            updated_at: None,
            ..got.clone()
        },
        zhang
    );
    assert_eq!(got, upserted);

    let replacement = pb::User {
        id: "zhangsan".into(),
        display_name: "Zhang San".into(),
        email: "zhang.san@example.cn".into(),
        locale: "en".into(),
        ..Default::default()
    };
    app.directory()
        .upsert_user(req(
            pb::UpsertUserRequest {
                user: Some(replacement.clone()),
            },
            "admin",
        ))
        .await
        .expect("upsert again");
    let got = app
        .directory()
        .get_user(req(
            pb::GetUserRequest {
                id: "zhangsan".into(),
            },
            "admin",
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        pb::User {
            updated_at: None,
            ..got
        },
        replacement,
        "the whole entry is replaced; fields left empty become empty"
    );

    for (id, manager) in [("wang", "lisi"), ("zhao", "lisi"), ("qian", "boss")] {
        app.add_user(id, manager).await;
    }
    let reports = app
        .directory()
        .list_users(req(
            pb::ListUsersRequest {
                manager_id: "lisi".into(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<String> = reports.users.into_iter().map(|u| u.id).collect();
    assert_eq!(ids, ["wang", "zhao"]);
    app.stop().await;
}

#[tokio::test]
async fn tasks_can_be_listed_by_assignee_and_status_business_key_and_activity() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let first = start_with_business_key(&app, "EXP-1").await;
    let second = start_with_business_key(&app, "EXP-2").await;
    let done = app
        .complete(&second.open_tasks[0], "approve")
        .await
        .expect("mary approves EXP-2");
    let finance = done.instance.expect("instance").open_tasks[0].clone();
    assert_eq!(finance.assignee, "fred");

    let list = async |filter: pb::ListTasksRequest| -> Vec<String> {
        app.tasks()
            .list_tasks(req(filter, "admin"))
            .await
            .expect("list tasks")
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect()
    };

    let open_for_mary = list(pb::ListTasksRequest {
        assignee: "mary".into(),
        status: pb::TaskStatus::Open as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(open_for_mary, [first.open_tasks[0].id.clone()]);

    let all_for_mary = list(pb::ListTasksRequest {
        assignee: "mary".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        all_for_mary,
        [
            first.open_tasks[0].id.clone(),
            second.open_tasks[0].id.clone()
        ]
    );

    let completed_for_mary = list(pb::ListTasksRequest {
        assignee: "mary".into(),
        status: pb::TaskStatus::Completed as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(completed_for_mary, [second.open_tasks[0].id.clone()]);

    let of_exp2 = list(pb::ListTasksRequest {
        business_key: "EXP-2".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        of_exp2,
        [second.open_tasks[0].id.clone(), finance.id.clone()]
    );

    let at_finance = list(pb::ListTasksRequest {
        activity_id: "finance_approval".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(at_finance, [finance.id]);

    let nothing = list(pb::ListTasksRequest {
        business_key: "EXP-404".into(),
        ..Default::default()
    })
    .await;
    assert!(nothing.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn instances_are_listed_newest_first() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.deploy_example("expense.bpmn").await;
    let mut started = Vec::new();
    for amount in [100, 200, 300] {
        started.push(app.start("expense", expense_vars(amount)).await.id);
        // Distinct created_at values, so that the order does not rest on the tie-breaker.
        clock.advance(5);
    }
    started.reverse();
    let listed: Vec<String> = app.instances().await.into_iter().map(|i| i.id).collect();
    assert_eq!(listed, started);
    app.stop().await;
}

#[tokio::test]
async fn definitions_are_listed_most_recently_deployed_first() {
    let app = spawn_app().await;
    app.deploy_xml(&parallel_xml("zeta"))
        .await
        .expect("zeta v1");
    app.deploy_xml(&parallel_xml("alpha"))
        .await
        .expect("alpha v1");
    app.deploy_xml(&parallel_xml("alpha"))
        .await
        .expect("alpha v2");
    let listed: Vec<(String, i32)> = app
        .definitions()
        .await
        .into_iter()
        .map(|d| (d.key, d.version))
        .collect();
    assert_eq!(
        listed,
        [("alpha".into(), 2), ("alpha".into(), 1), ("zeta".into(), 1)],
        "newest deployment first"
    );
    app.stop().await;
}
