//! Issue 3, item 6: Postfix stops while mails are queued; everything waits; Postfix comes back;
//! every mail is delivered exactly once. Time is moved with a ManualClock, never slept away.
use std::{collections::HashSet, sync::Arc, time::Duration};

use replyflow::{
    clock::{Clock, ManualClock},
    model::OutboxStatus,
    workers::outbox::RetryPolicy,
};

use crate::{
    helpers::{
        TestStore, drain, mail_env, postfix_exclusive, queue_mail, real_now, stop_postfix,
        wait_for_empty_postfix_queue, worker,
    },
    imap::{count_message_id, wait_for_message_id},
};

const MAILS: usize = 20;

#[tokio::test]
async fn postfix_stopped_while_mail_is_queued_then_everything_arrives_exactly_once() {
    // Alone: the other tests need Postfix up.
    let _postfix = postfix_exclusive().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let mary = mail_env().address("mary");
    let mut queued = Vec::new();
    for i in 0..MAILS {
        queued.push(queue_mail(&db.store, clock.now(), &mary, &format!("Outage mail {i}")).await);
    }
    let worker = worker(&db.store, &mail_env().smtp_url(""), true, clock.clone());

    let stopped = stop_postfix().await;
    assert_eq!(drain(&worker).await, MAILS, "every mail was attempted");
    for mail in &queued {
        let row = db.row(&mail.context_id).await;
        assert_eq!(
            row.status,
            OutboxStatus::TempFailed,
            "{}: {}",
            mail.message_id,
            row.last_error
        );
        assert_eq!(row.attempts, 1);
        assert!(row.next_attempt_at > clock.now(), "retried later");
        assert!(row.last_error.contains("refused"), "{}", row.last_error);
    }
    assert_eq!(
        worker.run_once().await.unwrap(),
        0,
        "nothing due while backing off"
    );

    stopped.start().await;
    // The first retry is at most base_ms after the failure.
    clock.advance(RetryPolicy::default().backoff.base_ms);
    assert_eq!(drain(&worker).await, MAILS, "every mail retried once");
    for mail in &queued {
        let row = db.row(&mail.context_id).await;
        assert_eq!(
            row.status,
            OutboxStatus::Sent,
            "{}: {}",
            mail.message_id,
            row.last_error
        );
        assert_eq!(row.attempts, 2);
    }
    clock.advance(RetryPolicy::default().backoff.max_ms * 10);
    assert_eq!(
        worker.run_once().await.unwrap(),
        0,
        "sent mail is never sent again"
    );

    let mut seen = HashSet::new();
    for mail in &queued {
        let got = wait_for_message_id("mary", mail.bare_id(), Duration::from_secs(20)).await;
        assert_eq!(
            got.len(),
            1,
            "{} arrived {} times",
            mail.message_id,
            got.len()
        );
        assert!(seen.insert(mail.bare_id().to_string()));
    }
    // Nothing still queued in Postfix that could arrive later as a duplicate.
    wait_for_empty_postfix_queue().await;
    for mail in &queued {
        assert_eq!(
            count_message_id("mary", mail.bare_id()).await,
            1,
            "{}",
            mail.message_id
        );
    }
}
