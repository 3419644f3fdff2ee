//! Two completions racing on one instance must fire a parallel join exactly once (DESIGN §4).
use replyflow::proto::pb;
use serde_json::json;

use crate::{branches::parallel_xml, helpers::spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_branch_completions_fire_each_join_exactly_once() {
    let app = spawn_app().await;
    app.deploy_xml(&parallel_xml("race")).await.expect("deploy");
    let mut instances = Vec::new();
    for _ in 0..50 {
        instances.push(
            app.start("race", json!({"legal": "lena", "finance": "fred"}))
                .await,
        );
    }
    let mut racers = Vec::new();
    for instance in &instances {
        for task in &instance.open_tasks {
            let app_tasks = app.tasks();
            let task = task.clone();
            racers.push(tokio::spawn(async move {
                let mut client = app_tasks;
                let message = pb::CompleteTaskRequest {
                    task_id: task.id.clone(),
                    outcome: "approve".into(),
                    ..Default::default()
                };
                client
                    .complete_task(crate::helpers::req(message, &task.assignee))
                    .await
            }));
        }
    }
    assert_eq!(racers.len(), 100);
    for racer in racers {
        racer
            .await
            .expect("join")
            .expect("every completion succeeds");
    }
    for instance in &instances {
        let tasks = app.tasks_of(&instance.id).await;
        let after_join: Vec<_> = tasks.iter().filter(|t| t.activity_id == "ceo").collect();
        assert_eq!(
            after_join.len(),
            1,
            "instance {} has {} tasks after the join",
            instance.id,
            after_join.len()
        );
        assert_eq!(after_join[0].status, pb::TaskStatus::Open as i32);
    }
    app.stop().await;
}
