//! 拿回 (TaskService.RecallTask, DESIGN §11): who completed a task takes it back while nothing it
//! opened has been acted on; the next tasks are withdrawn and the step reopens for them.
use serde_json::json;
use tonic::{Code, Status};

use crate::helpers::{TestApp, assert_refused, expense_vars, req, spawn_app};
use replyflow::proto::pb;

impl TestApp {
    /// `user` recalls their completion of `task_id`.
    async fn recall_as(
        &self,
        task_id: &str,
        user: &str,
        request_id: &str,
    ) -> Result<pb::CompleteTaskResponse, Status> {
        let message = pb::RecallTaskRequest {
            task_id: task_id.into(),
            comment: "wait, I need to look again".into(),
            request_id: request_id.into(),
        };
        self.tasks()
            .recall_task(req(message, user))
            .await
            .map(|r| r.into_inner())
    }

    async fn active_reminders_to(&self, instance_id: &str, activity: &str) -> usize {
        let message = pb::ListRemindersRequest {
            process_instance_id: instance_id.into(),
            ..Default::default()
        };
        self.reminders()
            .list_reminders(req(message, "admin"))
            .await
            .expect("ListReminders")
            .into_inner()
            .reminders
            .iter()
            .filter(|r| {
                r.end_activity_id == activity
                    && (r.state == pb::ReminderState::New as i32
                        || r.state == pb::ReminderState::Reminded as i32)
            })
            .count()
    }
}

async fn expense_app() -> TestApp {
    let app = spawn_app().await;
    for user in ["mary", "fred", "carol"] {
        app.add_user(user, "").await;
    }
    app.deploy_example("expense.bpmn").await;
    app
}

#[tokio::test]
async fn a_manager_takes_back_an_approval_finance_has_not_touched() {
    let app = expense_app().await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let first = instance.open_tasks[0].clone();
    let moved = app.complete(&first, "approve").await.expect("approve");
    let finance = moved.instance.expect("instance").open_tasks[0].clone();
    assert_eq!(finance.assignee, "fred");
    let freds = app.approval(&finance.id).await;

    let recalled = app
        .recall_as(&first.id, "mary", "r1")
        .await
        .expect("recall");
    let reopened = recalled.task.expect("task");
    assert_ne!(reopened.id, first.id, "a new task");
    assert_eq!(reopened.activity_id, "manager_approval");
    assert_eq!(reopened.assignee, "mary");
    assert_eq!(reopened.status, pb::TaskStatus::Open as i32);
    let now = recalled.instance.expect("instance");
    assert_eq!(now.open_tasks.len(), 1);
    assert_eq!(now.open_tasks[0].id, reopened.id);
    assert_eq!(
        app.task(&finance.id).await.status,
        pb::TaskStatus::Withdrawn as i32
    );
    let store = app.store().await;
    let context = store
        .approval_context(&freds.id)
        .await
        .expect("read")
        .expect("kept");
    store.close().await;
    assert_eq!(context.status, replyflow::model::ApprovalStatus::Revoked);
    assert_eq!(app.approval(&reopened.id).await.approver, "mary");
    assert_eq!(
        app.active_reminders_to(&instance.id, "finance_approval")
            .await,
        0
    );
    assert_eq!(
        app.active_reminders_to(&instance.id, "manager_approval")
            .await,
        1
    );
    let events = app.audit_events(&instance.id).await;
    let event = events
        .iter()
        .find(|e| e.kind == "task_recalled")
        .expect("task_recalled");
    assert_eq!(event.actor, "mary");
    assert_eq!(event.detail["withdrawn"], json!([finance.id]));

    // A retry answers the same reopened task and does nothing twice.
    let retry = app.recall_as(&first.id, "mary", "r1").await.expect("retry");
    assert_eq!(retry.task.expect("task").id, reopened.id);
    // The original is recalled once only.
    let err = app
        .recall_as(&first.id, "mary", "")
        .await
        .expect_err("again");
    assert_refused(&err, Code::FailedPrecondition, &["recalled already"]);

    // Mary decides again; this time it ends the claim.
    let ended = app.complete(&reopened, "reject").await.expect("decide");
    assert_eq!(
        ended.instance.expect("instance").status,
        pb::InstanceStatus::Completed as i32
    );
    app.stop().await;
}

#[tokio::test]
async fn a_recall_that_does_not_apply_is_refused_and_changes_nothing() {
    let app = expense_app().await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let first = instance.open_tasks[0].clone();

    let err = app
        .recall_as(&first.id, "mary", "")
        .await
        .expect_err("open");
    assert_refused(&err, Code::FailedPrecondition, &["only a completed task"]);
    let moved = app.complete(&first, "approve").await.expect("approve");
    let finance = moved.instance.expect("instance").open_tasks[0].clone();

    let err = app
        .recall_as(&first.id, "carol", "")
        .await
        .expect_err("not hers");
    assert_refused(&err, Code::PermissionDenied, &["only who decided it"]);

    // Fred hands his task on: that is acting on it.
    app.reassign_as(&finance, "fred", "carol")
        .await
        .expect("reassign");
    let err = app
        .recall_as(&first.id, "mary", "")
        .await
        .expect_err("acted");
    assert_refused(
        &err,
        Code::FailedPrecondition,
        &["next step acted", &finance.id],
    );
    let still = app.task(&finance.id).await;
    assert_eq!(still.status, pb::TaskStatus::Open as i32);
    assert_eq!(still.assignee, "carol");

    // Carol decides: the instance ended.
    app.complete(&still, "approve").await.expect("decide");
    let err = app
        .recall_as(&first.id, "mary", "")
        .await
        .expect_err("ended");
    assert_refused(&err, Code::FailedPrecondition, &["completed"]);
    let err = app
        .recall_as(&still.id, "carol", "")
        .await
        .expect_err("ended");
    assert_refused(
        &err,
        Code::FailedPrecondition,
        &["completed: nothing to recall"],
    );
    app.stop().await;
}

fn review_vars() -> serde_json::Value {
    json!({"legal": "dan", "finance": "carol", "it": "erin", "approver": "frank"})
}

#[tokio::test]
async fn a_branch_recalled_before_the_join_fires_takes_its_token_back() {
    let app = spawn_app().await;
    for user in ["dan", "carol", "erin", "frank"] {
        app.add_user(user, "").await;
    }
    app.deploy_example("parallel_review.bpmn").await;
    let instance = app.start("parallel_review", review_vars()).await;
    let task_of = |activity: &str| {
        instance
            .open_tasks
            .iter()
            .find(|t| t.activity_id == activity)
            .cloned()
            .expect("open")
    };
    let legal = task_of("legal_review");
    app.complete(&legal, "approve").await.expect("legal");
    let recalled = app.recall_as(&legal.id, "dan", "").await.expect("recall");
    let legal_again = recalled.task.expect("task");
    assert_eq!(legal_again.activity_id, "legal_review");
    assert!(
        app.event_kinds(&instance.id)
            .await
            .contains(&"join_token_recalled".to_string())
    );

    // The join waits for all three again, and fires once.
    app.complete(&task_of("finance_review"), "approve")
        .await
        .expect("finance");
    let after_it = app
        .complete(&task_of("it_review"), "approve")
        .await
        .expect("it");
    let waiting = after_it.instance.expect("instance");
    assert_eq!(waiting.open_tasks.len(), 1, "{:?}", waiting.open_tasks);
    assert_eq!(waiting.open_tasks[0].id, legal_again.id);
    let fired = app
        .complete(&legal_again, "approve")
        .await
        .expect("legal again");
    let final_open = fired.instance.expect("instance").open_tasks;
    assert_eq!(final_open.len(), 1);
    assert_eq!(final_open[0].activity_id, "final_approval");

    // The last branch fired the join: its work is spent, a recall says so.
    let err = app
        .recall_as(&legal_again.id, "dan", "")
        .await
        .expect_err("join fired");
    assert_refused(&err, Code::FailedPrecondition, &["fired a parallel join"]);
    assert_eq!(
        app.task(&final_open[0].id).await.status,
        pb::TaskStatus::Open as i32
    );
    app.stop().await;
}

/// parallel_review with a reminder type on the final approval: every branch arms an edge that
/// waits at the join.
fn chased_review() -> String {
    let review = include_str!("../../examples/parallel_review.bpmn");
    review
        .replace(
            r#"<bpmn:startEvent id="start" name="提交合同"/>"#,
            r#"<bpmn:extensionElements>
      <replyflow:reminderType id="nudge" count="2" interval="PT4H" channels="inbox"/>
    </bpmn:extensionElements>
    <bpmn:startEvent id="start" name="提交合同"/>"#,
        )
        .replace(
            r#"replyflow:assignee="${approver}""#,
            r#"replyflow:assignee="${approver}" replyflow:reminderType="nudge""#,
        )
}

#[tokio::test]
async fn a_recalled_branch_no_longer_waits_at_the_join_for_reminders() {
    let app = spawn_app().await;
    for user in ["dan", "carol", "erin", "frank"] {
        app.add_user(user, "").await;
    }
    app.deploy_xml(&chased_review()).await.expect("deploy");
    let instance = app.start("parallel_review", review_vars()).await;
    let task_of = |activity: &str| {
        instance
            .open_tasks
            .iter()
            .find(|t| t.activity_id == activity)
            .cloned()
            .expect("open")
    };
    let legal = task_of("legal_review");
    app.complete(&legal, "approve").await.expect("legal");
    let waiting = app
        .active_reminders_to(&instance.id, "final_approval")
        .await;
    assert_eq!(waiting, 1, "legal's edge waits at the join");
    let again = app
        .recall_as(&legal.id, "dan", "")
        .await
        .expect("recall")
        .task
        .expect("task");
    assert_eq!(
        app.active_reminders_to(&instance.id, "final_approval")
            .await,
        0,
        "the recalled branch's edge is cancelled"
    );
    for task in [task_of("finance_review"), task_of("it_review"), again] {
        app.complete(&task, "approve").await.expect("approve");
    }
    assert_eq!(
        app.active_reminders_to(&instance.id, "final_approval")
            .await,
        3,
        "one edge per branch, not two for the recalled one"
    );
    app.stop().await;
}
