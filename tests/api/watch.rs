//! WatchTasks: an approver's to-do list that updates itself. Each read is wrapped in a timeout so
//! that a broken stream fails the test instead of hanging it (10 s is not a timing assertion).
use std::{collections::HashSet, time::Duration};

use replyflow::proto::pb;
use serde_json::json;
use tonic::{Code, Streaming};

use crate::{
    branches::bpmn,
    helpers::{expense_vars, open_activities, spawn_app},
};

const PATIENCE: Duration = Duration::from_secs(10);

async fn next_event(stream: &mut Streaming<pb::TaskEvent>) -> pb::TaskEvent {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("no task event within 10 s")
        .expect("the stream failed")
        .expect("the stream ended")
}

fn kind(event: &pb::TaskEvent) -> pb::TaskEventKind {
    pb::TaskEventKind::try_from(event.kind).expect("known event kind")
}

fn task(event: &pb::TaskEvent) -> &pb::Task {
    event.task.as_ref().expect("an event carries its task")
}

fn watch_assignee(assignee: &str, include_open: bool) -> pb::WatchTasksRequest {
    pb::WatchTasksRequest {
        assignee: assignee.into(),
        include_open,
        ..Default::default()
    }
}

#[tokio::test]
async fn mary_sees_her_tasks_open_and_close_and_nobody_elses() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let mut stream = app
        .watch(watch_assignee("mary", false))
        .await
        .expect("watch");

    let instance = app.start("expense", expense_vars(20000)).await;
    let opened = next_event(&mut stream).await;
    assert_eq!(kind(&opened), pb::TaskEventKind::Opened);
    let mary_task = task(&opened);
    assert_eq!(mary_task.activity_id, "manager_approval");
    assert_eq!(mary_task.assignee, "mary");
    assert_eq!(mary_task.id, instance.open_tasks[0].id);
    assert_eq!(mary_task.status, pb::TaskStatus::Open as i32);
    assert!(opened.at.is_some());

    // Completing it opens fred's finance task: mary's watcher sees only her completion.
    let done = app
        .complete(mary_task, "approve")
        .await
        .expect("mary approves");
    assert_eq!(
        open_activities(&done.instance.expect("instance")),
        ["finance_approval"]
    );
    let completed = next_event(&mut stream).await;
    assert_eq!(kind(&completed), pb::TaskEventKind::Completed);
    assert_eq!(task(&completed).id, mary_task.id);
    assert_eq!(task(&completed).status, pb::TaskStatus::Completed as i32);
    assert_eq!(task(&completed).outcome, "approve");

    // A task for olga is not delivered either: the next event mary gets is her own next task.
    app.start(
        "expense",
        json!({"manager": "olga", "finance": "fred", "amount": 5, "reason": "x"}),
    )
    .await;
    let later = app.start("expense", expense_vars(300)).await;
    let next = next_event(&mut stream).await;
    assert_eq!(kind(&next), pb::TaskEventKind::Opened);
    assert_eq!(task(&next).id, later.open_tasks[0].id, "{next:?}");
    assert_eq!(task(&next).assignee, "mary");
    app.stop().await;
}

#[tokio::test]
async fn include_open_first_replays_the_tasks_open_now() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    let a = app.start("expense", expense_vars(100)).await;
    let b = app.start("expense", expense_vars(200)).await;
    app.start(
        "expense",
        json!({"manager": "olga", "finance": "fred", "amount": 5, "reason": "x"}),
    )
    .await;
    let closed = app.start("expense", expense_vars(300)).await;
    app.complete(&closed.open_tasks[0], "reject")
        .await
        .expect("a closed task is not replayed");

    let mut stream = app
        .watch(watch_assignee("mary", true))
        .await
        .expect("watch");
    let mut replayed = HashSet::new();
    for _ in 0..2 {
        let event = next_event(&mut stream).await;
        assert_eq!(kind(&event), pb::TaskEventKind::Opened);
        assert_eq!(task(&event).status, pb::TaskStatus::Open as i32);
        assert_eq!(
            event.at,
            task(&event).created_at,
            "at = the task's created_at"
        );
        replayed.insert(task(&event).id.clone());
    }
    let expected: HashSet<String> = [a.open_tasks[0].id.clone(), b.open_tasks[0].id.clone()]
        .into_iter()
        .collect();
    assert_eq!(replayed, expected);

    // Then live events.
    let live = app.start("expense", expense_vars(400)).await;
    let event = next_event(&mut stream).await;
    assert_eq!(kind(&event), pb::TaskEventKind::Opened);
    assert_eq!(task(&event).id, live.open_tasks[0].id);
    app.stop().await;
}

#[tokio::test]
async fn the_losing_branch_of_a_deferred_choice_is_withdrawn_on_the_instance_stream() {
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
    // Another instance of the same definition, whose events must not reach this stream.
    let other = app.start("choice", json!({})).await;
    assert_eq!(open_activities(&instance), ["hr", "it"]);
    let mut stream = app
        .watch(pb::WatchTasksRequest {
            process_instance_id: instance.id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch");

    let it = instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == "it")
        .expect("it is open");
    let hr = instance
        .open_tasks
        .iter()
        .find(|t| t.activity_id == "hr")
        .expect("hr is open");
    let other_it = other
        .open_tasks
        .iter()
        .find(|t| t.activity_id == "it")
        .expect("it is open");
    app.complete(other_it, "approve")
        .await
        .expect("the other instance moves");
    app.complete(it, "approve").await.expect("ivan decides");

    let mut events = Vec::new();
    for _ in 0..3 {
        let event = next_event(&mut stream).await;
        assert_eq!(task(&event).process_instance_id, instance.id, "{event:?}");
        events.push((kind(&event), task(&event).clone()));
    }
    let of_kind = |wanted: pb::TaskEventKind| -> Vec<&pb::Task> {
        events
            .iter()
            .filter(|(k, _)| *k == wanted)
            .map(|(_, t)| t)
            .collect()
    };
    let withdrawn = of_kind(pb::TaskEventKind::Withdrawn);
    assert_eq!(withdrawn.len(), 1, "{events:?}");
    assert_eq!(withdrawn[0].id, hr.id);
    assert_eq!(withdrawn[0].status, pb::TaskStatus::Withdrawn as i32);
    let completed = of_kind(pb::TaskEventKind::Completed);
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0].id, it.id);
    let opened = of_kind(pb::TaskEventKind::Opened);
    assert_eq!(opened.len(), 1, "{events:?}");
    assert_eq!(opened[0].activity_id, "archive");
    app.stop().await;
}

#[tokio::test]
async fn a_reassignment_reaches_the_old_and_the_new_assignee() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("rita", "").await;
    app.deploy_example("expense.bpmn").await;
    let mut marys = app
        .watch(watch_assignee("mary", false))
        .await
        .expect("watch");
    let mut ritas = app
        .watch(watch_assignee("rita", false))
        .await
        .expect("watch");

    let instance = app.start("expense", expense_vars(800)).await;
    let opened = next_event(&mut marys).await;
    assert_eq!(kind(&opened), pb::TaskEventKind::Opened);
    let task_id = task(&opened).id.clone();
    assert_eq!(task_id, instance.open_tasks[0].id);

    app.reassign_as(&instance.open_tasks[0], "mary", "rita")
        .await
        .expect("mary hands it to rita");
    for stream in [&mut marys, &mut ritas] {
        let event = next_event(stream).await;
        assert_eq!(kind(&event), pb::TaskEventKind::Reassigned, "{event:?}");
        assert_eq!(event.previous_assignee, "mary");
        assert_eq!(task(&event).id, task_id);
        assert_eq!(task(&event).assignee, "rita");
        assert_eq!(task(&event).status, pb::TaskStatus::Open as i32);
    }
    app.stop().await;
}

#[tokio::test]
async fn watching_everything_is_refused_naming_assignee() {
    let app = spawn_app().await;
    let err = app
        .watch(pb::WatchTasksRequest {
            include_open: true,
            ..Default::default()
        })
        .await
        .expect_err("no filter");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("assignee"), "{}", err.message());
    app.stop().await;
}
