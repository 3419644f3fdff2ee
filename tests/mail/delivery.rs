//! One mail through the outbox worker into Postfix, over each kind of connection, read back from
//! the approver's mailbox; and what the outbox records when the server refuses or is away.
use std::{sync::Arc, time::Duration};

use replyflow::{
    clock::{Clock, ManualClock, SystemClock},
    model::OutboxStatus,
    workers::outbox::{OutboxWorker, RetryPolicy},
};
use tokio::sync::Notify;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    helpers::{
        TestStore, drain, eventually, mail_env, postfix_shared, queue_mail, real_now, worker,
    },
    imap::{count_message_id, wait_for_message_id},
};

const ARRIVAL: Duration = Duration::from_secs(20);

/// Queues one mail to mary, runs the worker once against `url`, and checks that the row is
/// `sent` with the server's answer and that mary's INBOX holds the mail exactly once.
async fn delivers_once_over(url: &str, ca_file: bool) {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let env = mail_env();
    let mary = env.address("mary");
    let mail = queue_mail(&db.store, clock.now(), &mary, "Expense report #7").await;

    let worker = worker(&db.store, url, ca_file, clock.clone());
    assert_eq!(
        worker.run_once().await.unwrap(),
        1,
        "one mail due, one attempted"
    );

    let row = db.row(&mail.context_id).await;
    assert_eq!(row.id, mail.id);
    assert_eq!(
        row.status,
        OutboxStatus::Sent,
        "last_error: {}",
        row.last_error
    );
    assert_eq!(row.attempts, 1);
    assert_eq!(row.sent_at, Some(clock.now()));
    assert!(
        row.last_error.starts_with("250 ") && row.last_error.contains("queued as"),
        "the server's answer is kept: {:?}",
        row.last_error
    );
    assert_eq!(worker.run_once().await.unwrap(), 0, "nothing left to send");

    let got = wait_for_message_id("mary", mail.bare_id(), ARRIVAL).await;
    assert_eq!(got.len(), 1, "delivered exactly once");
    let parsed = mail_parser::MessageParser::default()
        .parse(&got[0])
        .expect("the delivered mail parses");
    assert_eq!(parsed.subject(), Some("Expense report #7"));
    assert_eq!(parsed.message_id(), Some(mail.bare_id()));
    assert!(
        parsed
            .body_text(0)
            .unwrap_or_default()
            .contains("你好，请审批。"),
        "8-bit UTF-8 body arrives intact"
    );
    let delivered_to = parsed.header_raw("Delivered-To").unwrap_or_default().trim();
    assert_eq!(delivered_to, mary);
}

#[tokio::test]
async fn delivers_over_plain_smtp_with_opportunistic_starttls() {
    // Postfix offers STARTTLS, so the default mode upgrades: the test CA must be trusted.
    delivers_once_over(&mail_env().smtp_url(""), true).await;
}

#[tokio::test]
async fn delivers_over_smtp_without_tls() {
    delivers_once_over(&mail_env().smtp_url("?tls=none"), false).await;
}

#[tokio::test]
async fn delivers_over_required_starttls_with_the_test_ca() {
    delivers_once_over(&mail_env().smtp_url("?tls=required"), true).await;
}

#[tokio::test]
async fn delivers_over_smtps_with_credentials() {
    let env = mail_env();
    let url = format!(
        "smtps://approvals%40{}:{}@127.0.0.1:{}",
        env.domain, env.password, env.smtps_port
    );
    delivers_once_over(&url, true).await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_transient_failure() {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let mail = queue_mail(&db.store, clock.now(), &mail_env().address("mary"), "TLS").await;
    // The test CA is not among the trusted roots.
    let worker = worker(
        &db.store,
        &mail_env().smtp_url("?tls=required"),
        false,
        clock.clone(),
    );
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let row = db.row(&mail.context_id).await;
    assert_eq!(row.status, OutboxStatus::TempFailed);
    assert!(
        row.last_error.to_lowercase().contains("certificate"),
        "{}",
        row.last_error
    );
    assert!(row.next_attempt_at > clock.now());
    assert_eq!(count_message_id("mary", mail.bare_id()).await, 0);
}

#[tokio::test]
async fn a_wrong_password_waits_instead_of_failing_the_mail() {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let env = mail_env();
    let mail = queue_mail(&db.store, clock.now(), &env.address("mary"), "Auth").await;
    let url = format!(
        "smtps://approvals%40{}:wrong@127.0.0.1:{}",
        env.domain, env.smtps_port
    );
    let worker = worker(&db.store, &url, true, clock.clone());
    assert_eq!(worker.run_once().await.unwrap(), 1);
    let row = db.row(&mail.context_id).await;
    // 535 is about our configuration, not about the mail: retried until the attempts run out.
    assert_eq!(row.status, OutboxStatus::TempFailed, "{}", row.last_error);
    assert!(row.last_error.starts_with("535 "), "{}", row.last_error);
    assert!(
        !row.last_error.contains("wrong"),
        "no password in the error: {}",
        row.last_error
    );
}

#[tokio::test]
async fn a_refused_recipient_fails_permanently_with_the_servers_answer() {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let nobody = mail_env().address("nobody");
    let mail = queue_mail(&db.store, clock.now(), &nobody, "Nobody home").await;

    let worker = worker(&db.store, &mail_env().smtp_url(""), true, clock.clone());
    assert_eq!(worker.run_once().await.unwrap(), 1);

    let row = db.row(&mail.context_id).await;
    assert_eq!(row.status, OutboxStatus::PermFailed);
    assert_eq!(row.attempts, 1, "a permanent failure is not retried");
    assert!(
        row.last_error
            .starts_with(&format!("550 5.1.1 <{nobody}>: Recipient address rejected")),
        "the server's full answer is recorded: {:?}",
        row.last_error
    );
    assert_eq!(row.sent_at, None);
    clock.advance(RetryPolicy::default().backoff.max_ms * 10);
    assert_eq!(worker.run_once().await.unwrap(), 0, "never tried again");
}

#[tokio::test]
async fn smtp_down_waits_then_delivers_exactly_once() {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock = Arc::new(ManualClock::new(real_now()));
    let mail = queue_mail(
        &db.store,
        clock.now(),
        &mail_env().address("mary"),
        "Retry me",
    )
    .await;

    // A port nobody listens on: connection refused.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let down = worker(
        &db.store,
        &format!("smtp://127.0.0.1:{closed}"),
        false,
        clock.clone(),
    );
    assert_eq!(down.run_once().await.unwrap(), 1);
    let row = db.row(&mail.context_id).await;
    assert_eq!(row.status, OutboxStatus::TempFailed);
    assert_eq!(row.attempts, 1);
    assert!(
        row.next_attempt_at > clock.now(),
        "retried later, not at once"
    );
    assert!(
        row.next_attempt_at <= clock.now() + RetryPolicy::default().backoff.base_ms,
        "first backoff at most base_ms"
    );
    assert!(row.last_error.contains("refused"), "{}", row.last_error);
    assert_eq!(down.run_once().await.unwrap(), 0, "not due yet");

    // The server is back (the real port) and the retry falls due.
    let up = worker(&db.store, &mail_env().smtp_url(""), true, clock.clone());
    assert_eq!(up.run_once().await.unwrap(), 0, "still not due");
    clock.set(row.next_attempt_at);
    assert_eq!(drain(&up).await, 1);
    let row = db.row(&mail.context_id).await;
    assert_eq!(row.status, OutboxStatus::Sent, "{}", row.last_error);
    assert_eq!(row.attempts, 2);

    let got = wait_for_message_id("mary", mail.bare_id(), ARRIVAL).await;
    assert_eq!(got.len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn the_running_worker_wakes_when_told_and_stops_on_shutdown() {
    let _postfix = postfix_shared().await;
    let db = TestStore::new().await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let wake = Arc::new(Notify::new());
    let transport = replyflow::mail::transport::from_url(
        &mail_env().smtp_url(""),
        Some(&mail_env().ca_file),
        2,
    )
    .unwrap();
    let worker = OutboxWorker::new(
        db.store.clone(),
        transport,
        clock.clone(),
        wake.clone(),
        RetryPolicy::default(),
        2,
    );
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    worker.spawn(shutdown.clone(), &tracker);

    // The first mail shows the loop runs; after it the outbox is empty and the loop waits (30 s
    // timer), so the second one goes out within seconds only through the wake-up.
    let mut mails = Vec::new();
    for subject in ["Wake up 1", "Wake up 2"] {
        let mail = queue_mail(&db.store, clock.now(), &mail_env().address("mary"), subject).await;
        let committed = std::time::Instant::now();
        wake.notify_one();
        eventually(Duration::from_secs(5), async || {
            let row = db.row(&mail.context_id).await;
            if row.status == OutboxStatus::Sent {
                Ok(())
            } else {
                Err(format!("{subject}: not sent after the wake-up: {row:?}"))
            }
        })
        .await;
        eprintln!("{subject}: committed → sent in {:?}", committed.elapsed());
        mails.push(mail);
    }

    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .expect("the worker stops promptly on shutdown");
    for mail in mails {
        let got = wait_for_message_id("mary", mail.bare_id(), ARRIVAL).await;
        assert_eq!(got.len(), 1);
    }
}
