//! 委派 (TaskService.DelegateTask, DESIGN §11): the assignee asks a colleague's opinion; the
//! delegate's decision hands the task back to its owner, whose decision moves the process.
use serde_json::json;
use tonic::{Code, Status};

use crate::helpers::{TestApp, assert_refused, expense_vars, reply, req, spawn_app, submit};
use replyflow::proto::pb;

impl TestApp {
    /// `user` delegates `task_id` to `delegate`.
    async fn delegate_as(
        &self,
        task_id: &str,
        user: &str,
        delegate: &str,
        request_id: &str,
    ) -> Result<pb::Task, Status> {
        let message = pb::DelegateTaskRequest {
            task_id: task_id.into(),
            user_id: delegate.into(),
            comment: format!("{delegate}, what do you think?"),
            request_id: request_id.into(),
        };
        self.tasks()
            .delegate_task(req(message, user))
            .await
            .map(|r| r.into_inner())
    }
}

/// Mary (the manager) holds the expense claim's first task; Carol is a colleague.
async fn claim_with_mary() -> (TestApp, pb::ProcessInstance, pb::Task) {
    let app = spawn_app().await;
    for user in ["mary", "carol", "fred"] {
        app.add_user(user, "").await;
    }
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    assert_eq!(task.assignee, "mary");
    assert_eq!(task.delegation_state, pb::DelegationState::None as i32);
    (app, instance, task)
}

#[tokio::test]
async fn a_delegate_gives_an_opinion_and_the_owner_decides() {
    let (app, instance, task) = claim_with_mary().await;
    let marys = app.approval(&task.id).await;

    let delegated = app
        .delegate_as(&task.id, "mary", "carol", "d1")
        .await
        .expect("delegate");
    assert_eq!(delegated.id, task.id, "the same task");
    assert_eq!(delegated.assignee, "carol");
    assert_eq!(delegated.owner, "mary");
    assert_eq!(
        delegated.delegation_state,
        pb::DelegationState::Pending as i32
    );
    let carols = app.approval(&task.id).await;
    assert_eq!(carols.approver, "carol", "Carol gets an approval mail");
    assert_ne!(carols.id, marys.id);
    let store = app.store().await;
    let marys_now = store
        .approval_context(&marys.id)
        .await
        .expect("read")
        .expect("kept");
    store.close().await;
    assert_eq!(
        marys_now.status,
        replyflow::model::ApprovalStatus::Revoked,
        "Mary's token stops working while Carol has the task"
    );
    // Mary no longer holds it: she cannot decide it meanwhile.
    let err = app
        .complete_as(&delegated, "mary", "approve")
        .await
        .expect_err("the owner waits for the opinion");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Carol's opinion: reject. The process does not move; the task goes back to Mary.
    let answered = app
        .complete_as(&delegated, "carol", "reject")
        .await
        .expect("the delegate decides");
    let back = answered.task.expect("task");
    assert_eq!(back.status, pb::TaskStatus::Open as i32);
    assert_eq!(back.assignee, "mary");
    assert_eq!(back.owner, "mary");
    assert_eq!(back.delegation_state, pb::DelegationState::Resolved as i32);
    let still = answered.instance.expect("instance");
    assert_eq!(still.open_tasks.len(), 1);
    assert_eq!(still.open_tasks[0].activity_id, "manager_approval");
    let again = app.approval(&task.id).await;
    assert_eq!(again.approver, "mary", "a new approval mail to the owner");
    assert_ne!(again.id, marys.id);
    let events = app.audit_events(&instance.id).await;
    let resolved = events
        .iter()
        .find(|e| e.kind == "delegate_resolved")
        .expect("delegate_resolved");
    assert_eq!(resolved.actor, "carol");
    assert_eq!(resolved.detail["outcome"], json!("reject"));
    assert_eq!(resolved.detail["comment"], json!("reject by carol"));
    assert!(events.iter().any(|e| e.kind == "task_delegated"));

    // Mary's decision counts, whatever Carol thought.
    let decided = app
        .complete_as(&back, "mary", "approve")
        .await
        .expect("the owner decides");
    let done = decided.task.expect("task");
    assert_eq!(done.status, pb::TaskStatus::Completed as i32);
    assert_eq!(done.outcome, "approve");
    assert_eq!(done.completed_by, "mary");
    let moved = decided.instance.expect("instance");
    assert_eq!(moved.open_tasks.len(), 1);
    assert_eq!(moved.open_tasks[0].assignee, "fred", "on to finance");
    app.stop().await;
}

#[tokio::test]
async fn a_delegation_that_does_not_apply_is_refused_and_changes_nothing() {
    let (app, instance, task) = claim_with_mary().await;
    let before = app.approval(&task.id).await;
    let refusals: [(&str, &str, Code, &[&str]); 5] = [
        (
            "mary",
            "mary",
            Code::InvalidArgument,
            &["user_id", "themselves"],
        ),
        (
            "mary",
            "initiator",
            Code::InvalidArgument,
            &["user_id", "four eyes"],
        ),
        (
            "mary",
            "nobody",
            Code::InvalidArgument,
            &["user_id", "directory"],
        ),
        ("mary", "", Code::InvalidArgument, &["user_id", "required"]),
        ("carol", "fred", Code::PermissionDenied, &[]),
    ];
    for (caller, delegate, code, needles) in refusals {
        let err = app
            .delegate_as(&task.id, caller, delegate, "")
            .await
            .expect_err("refused");
        assert_refused(&err, code, needles);
    }
    let same = app.task(&task.id).await;
    assert_eq!(same.assignee, "mary");
    assert_eq!(same.delegation_state, pb::DelegationState::None as i32);
    assert_eq!(
        app.approval(&task.id).await.id,
        before.id,
        "nothing revoked"
    );
    assert!(
        !app.event_kinds(&instance.id)
            .await
            .contains(&"task_delegated".to_string())
    );

    // The delegate may not pass the consultation on; they answer it.
    let delegated = app
        .delegate_as(&task.id, "mary", "carol", "")
        .await
        .expect("delegate");
    let err = app
        .delegate_as(&task.id, "carol", "fred", "")
        .await
        .expect_err("delegated already");
    assert_refused(
        &err,
        Code::FailedPrecondition,
        &["delegated to you by mary"],
    );
    // An opinion sets no variables.
    let message = pb::CompleteTaskRequest {
        task_id: task.id.clone(),
        outcome: "approve".into(),
        variables: crate::helpers::vars(json!({"amount": 1})),
        ..Default::default()
    };
    let err = app
        .tasks()
        .complete_task(req(message, "carol"))
        .await
        .expect_err("no variables");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = app
        .complete_as(&delegated, "carol", "maybe")
        .await
        .expect_err("an outcome of the task");
    assert_refused(&err, Code::InvalidArgument, &["outcome"]);

    // A closed task cannot be delegated.
    let back = app
        .complete_as(&delegated, "carol", "approve")
        .await
        .expect("opinion")
        .task
        .expect("task");
    app.complete_as(&back, "mary", "approve")
        .await
        .expect("decide");
    let err = app
        .delegate_as(&task.id, "mary", "carol", "")
        .await
        .expect_err("closed");
    assert_refused(&err, Code::FailedPrecondition, &["already completed"]);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_delegation_is_applied_once() {
    let (app, instance, task) = claim_with_mary().await;
    let first = app
        .delegate_as(&task.id, "mary", "carol", "same")
        .await
        .expect("delegate");
    let retry = app
        .delegate_as(&task.id, "mary", "carol", "same")
        .await
        .expect("the retry answers");
    assert_eq!(retry.assignee, first.assignee);
    assert_eq!(retry.owner, "mary");
    let delegations = app
        .event_kinds(&instance.id)
        .await
        .into_iter()
        .filter(|k| k == "task_delegated")
        .count();
    assert_eq!(delegations, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_delegate_answers_by_reply_and_the_task_goes_back_to_its_owner() {
    let (app, instance, task) = claim_with_mary().await;
    app.delegate_as(&task.id, "mary", "carol", "")
        .await
        .expect("delegate");
    let original = app.approval_mail_to("carol@example.com").await;

    let applied = submit(
        &app,
        reply("carol@example.com", &original, "同意，没问题", "<c1@x>"),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    let back = app.task(&task.id).await;
    assert_eq!(back.status, pb::TaskStatus::Open as i32);
    assert_eq!(back.assignee, "mary");
    assert_eq!(back.delegation_state, pb::DelegationState::Resolved as i32);
    let events = app.audit_events(&instance.id).await;
    let resolved = events
        .iter()
        .find(|e| e.kind == "delegate_resolved")
        .expect("delegate_resolved");
    assert_eq!(resolved.detail["outcome"], json!("approve"));
    assert_eq!(app.approval(&task.id).await.approver, "mary");
    app.stop().await;
}
