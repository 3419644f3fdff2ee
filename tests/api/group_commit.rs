//! Group commit (issue 10): concurrent writes share one transaction, and each is undone alone
//! when it fails or asks to be — on the backend the test runs on (TEST_DATABASE).
use replyflow::{
    error::Error,
    store::{Arg, Batch, Step, Store},
};

use crate::helpers::spawn_app;

/// A write of one `settings` row (the table every backend has), then `end`.
async fn put(store: &Store, key: &str, end: &'static str) -> Result<&'static str, Error> {
    let key = key.to_string();
    store
        .write(move |tx| {
            Box::pin(async move {
                let mut batch = Batch::new();
                batch.exec(
                    "INSERT INTO settings (key, value) VALUES ($1, $2)",
                    vec![Arg::from(key.as_str()), Arg::from("v")],
                );
                tx.run_batch(batch).await?;
                match end {
                    "undo" => Ok(Step::Undo(end)),
                    _ => Ok(Step::Keep(end)),
                }
            })
        })
        .await
}

async fn stored(store: &Store, key: &str) -> bool {
    store.setting(key).await.expect("read").is_some()
}

#[tokio::test]
async fn concurrent_writes_share_a_commit_and_one_that_fails_is_undone_alone() {
    let app = spawn_app().await;
    let store = app.store().await;
    // A row that makes one later write fail (the same key again).
    put(&store, "gc-taken", "keep").await.expect("first write");
    let before = store.group_commits();

    // Hold every writer with one job, so that the next writes queue behind them.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let writers = before.writers;
    let mut holders = Vec::new();
    for _ in 0..writers {
        let (store, gate) = (store.clone(), gate.clone());
        holders.push(tokio::spawn(async move {
            store
                .write(move |_tx| {
                    Box::pin(async move {
                        let _ = gate.acquire().await;
                        Ok(Step::Keep(()))
                    })
                })
                .await
        }));
    }
    while store.group_commits().jobs < before.jobs + writers {
        tokio::task::yield_now().await;
    }
    let mut writes = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        let (key, end) = match i {
            3 => ("gc-taken".to_string(), "keep"), // fails: the key exists
            5 => (format!("gc-{i}"), "undo"),
            _ => (format!("gc-{i}"), "keep"),
        };
        writes.push(tokio::spawn(async move { put(&store, &key, end).await }));
    }
    // Let all eight reach the queue, then let the holders finish.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(writers as usize);
    for holder in holders {
        holder.await.expect("holder").expect("holder's write");
    }
    let mut answers = Vec::new();
    for w in writes {
        answers.push(w.await.expect("task"));
    }

    assert!(
        answers[3].is_err(),
        "the duplicate key failed: {:?}",
        answers[3]
    );
    assert_eq!(answers[5].as_ref().ok(), Some(&"undo"));
    for i in [0, 1, 2, 4, 6, 7] {
        assert_eq!(answers[i].as_ref().ok(), Some(&"keep"), "write {i}");
        assert!(
            stored(&store, &format!("gc-{i}")).await,
            "write {i} committed"
        );
    }
    assert!(
        !stored(&store, "gc-5").await,
        "the undone write left nothing"
    );
    let after = store.group_commits();
    assert_eq!(
        after.jobs - before.jobs,
        writers + 8,
        "the holders and eight writes"
    );
    assert!(
        after.groups - before.groups < writers + 8,
        "queued writes shared transactions: {before:?} -> {after:?}"
    );
}
