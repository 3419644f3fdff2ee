//! Trust in email approval (issue 9): each test is an attack from the issue, carried out through
//! a real client — SubmitInboundEmail over gRPC, or Maildir files read by the real
//! [`InboundWorker`] — and the protection that stops it.
use std::path::Path;

use replyflow::{
    config::Secret,
    mail::token::{self, KeyRing},
    model::Verdict,
    proto::pb,
    workers::inbound::{InboundSource, InboundWorker},
};
use tonic::Code;

use crate::helpers::{
    TestApp, approval_mail, expense_vars, header, millis, reply, req, spawn_app, spawn_app_on_with,
    spawn_app_with, submit, token_of,
};

const FIRST_SECRET: &str = "first-secret-0123456789";
const SECOND_SECRET: &str = "second-secret-0123456789";
const PROCESSED: &str = "replyflow-processed";

async fn upsert(app: &TestApp, caller: &str, id: &str, email: &str, aliases: &[&str]) {
    try_upsert(app, caller, id, email, aliases)
        .await
        .expect("UpsertUser");
}

async fn try_upsert(
    app: &TestApp,
    caller: &str,
    id: &str,
    email: &str,
    aliases: &[&str],
) -> Result<pb::User, tonic::Status> {
    let message = pb::UpsertUserRequest {
        user: Some(pb::User {
            id: id.into(),
            display_name: id.to_uppercase(),
            email: email.into(),
            email_aliases: aliases.iter().map(|a| a.to_string()).collect(),
            locale: "en".into(),
            ..Default::default()
        }),
    };
    app.directory()
        .upsert_user(req(message, caller))
        .await
        .map(tonic::Response::into_inner)
}

async fn start_expense(app: &TestApp) -> pb::Task {
    app.deploy_example("expense.bpmn").await;
    app.start("expense", expense_vars(20000)).await.open_tasks[0].clone()
}

#[tokio::test]
async fn approval_hijack_by_changing_the_email_revokes_the_token_and_mails_the_new_address() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let first = app.approval(&task.id).await;

    // The attacker points mary's email at an address of theirs...
    // Since issue 9's authorization only `directory` may change an address (eve gets
    // PERMISSION_DENIED, see authz.rs); the directory itself being fooled must still not work.
    upsert(&app, "admin", "mary", "eve@attacker.test", &[]).await;
    let revoked = app
        .store()
        .await
        .approval_context(&first.id)
        .await
        .expect("read")
        .expect("context");
    assert_eq!(
        revoked.status,
        replyflow::model::ApprovalStatus::Revoked,
        "the token mailed to the old address stops working"
    );
    let second = app.approval(&task.id).await;
    assert_ne!(second.id, first.id, "a fresh context for the new address");
    assert_eq!(second.approver_email, "eve@attacker.test");
    let to_new = app.mails_to("eve@attacker.test", 1).await;
    assert_eq!(token_of(&to_new[0]).len(), token::TOKEN_LEN);
    assert!(
        app.event_kinds(&task.process_instance_id)
            .await
            .contains(&"approval_revoked".to_string())
    );

    // ...then puts it back and keeps theirs as an alias, and approves with the first token.
    upsert(
        &app,
        "admin",
        "mary",
        "mary@example.com",
        &["eve@attacker.test"],
    )
    .await;
    let hijack = submit(
        &app,
        reply(
            "eve@attacker.test",
            &original,
            "同意",
            "<hijack1@attacker.test>",
        ),
    )
    .await;
    // Sent to mary@example.com when eve@attacker.test was no alias of hers (and revoked since).
    assert_eq!(
        hijack.verdict,
        pb::Verdict::SenderMismatch as i32,
        "{hijack:?}"
    );
    // The token that went to the attacker's address is revoked too (the address changed back).
    let hijack = submit(
        &app,
        reply(
            "eve@attacker.test",
            &to_new[0],
            "同意",
            "<hijack2@attacker.test>",
        ),
    )
    .await;
    assert_eq!(hijack.verdict, pb::Verdict::Revoked as i32, "{hijack:?}");
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    // Mary gets a fresh mail at her address, and her reply decides.
    let third = app.approval(&task.id).await;
    assert_eq!(third.approver_email, "mary@example.com");
    let mails = app.mails_to("mary@example.com", 2).await;
    let fresh = mails
        .iter()
        .find(|m| header(m, "Message-ID").contains(&third.id))
        .expect("the fresh approval mail");
    let applied = submit(
        &app,
        reply("mary@example.com", fresh, "同意", "<ok@example.com>"),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    app.stop().await;
}

#[tokio::test]
async fn approval_hijack_from_an_alias_added_after_the_mail_decides_nothing() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    // The email stays; an alias of the attacker's is added after the approval mail was sent.
    upsert(
        &app,
        "admin",
        "mary",
        "mary@example.com",
        &["eve@attacker.test"],
    )
    .await;
    let hijack = submit(
        &app,
        reply(
            "eve@attacker.test",
            &original,
            "approve",
            "<alias@attacker.test>",
        ),
    )
    .await;
    assert_eq!(
        hijack.verdict,
        pb::Verdict::SenderMismatch as i32,
        "{hijack:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    let applied = submit(
        &app,
        reply(
            "mary@example.com",
            &original,
            "approve",
            "<mary@example.com>",
        ),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_token_forged_with_a_rotated_out_secret_for_a_new_context_is_refused() {
    let app = spawn_app_with(|s| s.security.token_secrets = vec![Secret::new(FIRST_SECRET)]).await;
    let old_kid = app.server_workflow.reply_token_keys().current_kid();
    let db = app.stop_keeping_db().await;
    // Rotated: the second secret signs; the first (say it leaked) still verifies old tokens.
    let app = spawn_app_on_with(db, |s| {
        s.security.token_secrets = vec![Secret::new(SECOND_SECRET), Secret::new(FIRST_SECRET)];
    })
    .await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let context = app.approval(&task.id).await;
    let genuine = token_of(&original);
    assert_ne!(token::parse(&genuine).expect("token").kid, old_kid);

    // A token for the NEW context signed with the OLD secret, naming the old key.
    let leaked = KeyRing::new(vec![(old_kid, FIRST_SECRET.as_bytes().to_vec())]).expect("ring");
    let forged = token::issue(
        &leaked,
        &context.id,
        &context.approver_email,
        millis(context.valid_until),
    );
    let forged_mail = original.replace(&genuine, &forged);
    let verdict = submit(
        &app,
        reply(
            "mary@example.com",
            &forged_mail,
            "同意",
            "<forged@example.com>",
        ),
    )
    .await;
    assert_eq!(
        verdict.verdict,
        pb::Verdict::BadSignature as i32,
        "{verdict:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    let applied = submit(
        &app,
        reply("mary@example.com", &original, "同意", "<real@example.com>"),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_secret_an_earlier_release_stored_in_plain_text_is_scrubbed_and_keeps_its_key_id() {
    let app = spawn_app().await;
    let db = app.stop_keeping_db().await;
    // What an earlier release wrote for a configured secret: the secret itself.
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("connecting to the test database");
    sqlx::Executor::execute(
        &mut conn,
        "INSERT INTO token_keys (kid, secret, source, created_at) \
         VALUES (7, 'first-secret-0123456789', 'config', 0)",
    )
    .await
    .expect("a legacy key row");
    let _ = sqlx::Connection::close(conn).await;

    let app = spawn_app_on_with(db, |s| {
        s.security.token_secrets = vec![Secret::new(FIRST_SECRET)];
    })
    .await;
    assert_eq!(
        app.server_workflow.reply_token_keys().current_kid(),
        7,
        "tokens issued with it keep verifying"
    );
    let store = app.store().await;
    let keys = store.token_keys().await.expect("token keys");
    store.close().await;
    let legacy = keys.iter().find(|k| k.kid == 7).expect("kid 7 kept");
    assert_eq!(legacy.secret, "", "the plain-text secret is gone");
    assert_eq!(
        legacy.fingerprint,
        token::fingerprint(FIRST_SECRET.as_bytes())
    );
    assert!(
        keys.iter().all(|k| !k.secret.contains("secret-0123456789")),
        "{keys:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn upsert_user_refuses_addresses_the_composer_cannot_mail_and_changes_nothing() {
    let app = spawn_app().await;
    for (email, aliases, field) in [
        ("x.@example.org", vec![], "user.email"),
        (
            "mary@example.com",
            vec!["ok@example.com", "a b@example.com"],
            "user.email_aliases[1]",
        ),
        (
            "mary@example.com",
            vec![".x@example.com"],
            "user.email_aliases[0]",
        ),
        ("mary@exa mple.com", vec![], "user.email"),
        ("mary\u{202E}@example.com", vec![], "user.email"),
    ] {
        let err = try_upsert(&app, "admin", "mary", email, &aliases)
            .await
            .expect_err(email);
        assert_eq!(err.code(), Code::InvalidArgument, "{email}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{email}: {}",
            err.message()
        );
    }
    for (id, field) in [("ma\u{202E}ry", "user.id"), ("ma\nry", "user.id")] {
        let err = try_upsert(&app, "admin", id, "mary@example.com", &[])
            .await
            .expect_err(id);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
    let message = pb::UpsertUserRequest {
        user: Some(pb::User {
            id: "mary".into(),
            display_name: "Mary\u{202E}".into(),
            email: "mary@example.com".into(),
            ..Default::default()
        }),
    };
    let err = app
        .directory()
        .upsert_user(req(message, "admin"))
        .await
        .expect_err("bidi in the name");
    assert!(
        err.message().starts_with("user.display_name"),
        "{}",
        err.message()
    );
    let err = app
        .directory()
        .get_user(req(pb::GetUserRequest { id: "mary".into() }, "admin"))
        .await
        .expect_err("nothing stored");
    assert_eq!(err.code(), Code::NotFound);

    // What is accepted can be mailed: the task opens with its approval mail.
    upsert(
        &app,
        "admin",
        "mary",
        "Mary.Ma+oa@example.com",
        &["m@example.net"],
    )
    .await;
    start_expense(&app).await;
    app.mails_to("Mary.Ma+oa@example.com", 1).await;
    app.stop().await;
}

#[tokio::test]
async fn a_reply_from_an_unmailable_sender_gets_a_verdict_not_an_internal_error() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let odd = submit(
        &app,
        reply("x.@example.org", &original, "同意", "<odd@example.org>"),
    )
    .await;
    assert_eq!(odd.verdict, pb::Verdict::SenderMismatch as i32, "{odd:?}");
    assert!(!odd.answered);
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    app.stop().await;
}

/// A Maildir in a temporary directory and a reader on the app's workflow.
fn maildir_reader(app: &TestApp, dir: &Path) -> InboundWorker {
    InboundWorker::new(
        app.server_workflow.clone(),
        InboundSource::Maildir(dir.to_path_buf()),
        PROCESSED.into(),
        None,
    )
}

fn deliver(dir: &Path, name: &str, raw: &[u8]) {
    std::fs::create_dir_all(dir.join("new")).expect("maildir");
    std::fs::write(dir.join("new").join(name), raw).expect("write mail");
}

fn waiting(dir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|sub| std::fs::read_dir(dir.join(sub)).ok())
        .map(|entries| entries.count())
        .sum()
}

#[tokio::test]
async fn an_unmailable_sender_in_the_maildir_does_not_hold_up_the_reply_behind_it() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let dir = tempfile::tempdir().expect("maildir");
    deliver(
        dir.path(),
        "1000.a.host",
        &reply("x.@example.org", &original, "同意", "<odd@example.org>"),
    );
    deliver(
        dir.path(),
        "1001.b.host",
        &reply("mary@example.com", &original, "同意", "<mary1@example.com>"),
    );
    let read = maildir_reader(&app, dir.path())
        .run_once()
        .await
        .expect("one pass");
    assert_eq!(read, 2);
    assert_eq!(waiting(dir.path()), 0, "both moved to the processed folder");
    assert_eq!(app.task(&task.id).await.outcome, "approve");
    app.stop().await;
}

#[tokio::test]
async fn a_mail_that_keeps_failing_is_quarantined_and_never_holds_up_the_reply_behind_it() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    app.poison_subjects("POISON").await;
    let poisoned = String::from_utf8(reply("mary@example.com", &original, "同意", "<p1@x>"))
        .expect("utf-8")
        .replace("Subject: Re: approval", "Subject: Re: approval POISON");

    // Maildir: the poisoned file first, the genuine reply behind it.
    let dir = tempfile::tempdir().expect("maildir");
    deliver(dir.path(), "1000.a.host", poisoned.as_bytes());
    deliver(
        dir.path(),
        "1001.b.host",
        &reply("mary@example.com", &original, "同意", "<mary1@example.com>"),
    );
    let reader = maildir_reader(&app, dir.path());
    assert_eq!(reader.run_once().await.expect("pass 1"), 1);
    assert_eq!(app.task(&task.id).await.outcome, "approve", "not held up");
    assert_eq!(
        waiting(dir.path()),
        1,
        "the failing mail stays for another try"
    );
    assert_eq!(reader.run_once().await.expect("pass 2"), 0);
    assert_eq!(waiting(dir.path()), 1);
    // The third failure (mail.quarantine_after = 3): recorded and moved out of the way.
    assert_eq!(reader.run_once().await.expect("pass 3"), 1);
    assert_eq!(waiting(dir.path()), 0);
    let log = app.inbound_log().await;
    let quarantined: Vec<_> = log
        .iter()
        .filter(|m| m.verdict == Verdict::Quarantined)
        .collect();
    assert_eq!(quarantined.len(), 1, "{log:?}");
    assert!(
        quarantined[0].reason.contains("failed 3 times"),
        "{}",
        quarantined[0].reason
    );
    assert!(!quarantined[0].answered);

    // The RPC path: an error twice, then the verdict.
    let raw = poisoned.replace("<p1@x>", "<p2@x>").into_bytes();
    for attempt in 1..=2 {
        let err = app
            .approvals()
            .submit_inbound_email(req(
                pb::SubmitInboundEmailRequest {
                    raw: raw.clone(),
                    ..Default::default()
                },
                "mta",
            ))
            .await
            .expect_err("fails");
        assert_eq!(err.code(), Code::Internal, "attempt {attempt}");
    }
    let third = submit(&app, raw.clone()).await;
    assert_eq!(third.verdict, pb::Verdict::Quarantined as i32, "{third:?}");
    let again = submit(&app, raw).await;
    assert_eq!(again.verdict, pb::Verdict::Duplicate as i32, "{again:?}");
    app.stop().await;
}

#[tokio::test]
async fn forged_senders_get_no_answers_and_a_flood_is_answered_within_the_global_budget() {
    let app = spawn_app_with(|s| s.mail.answers_per_hour = 3).await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    // Strangers (the issue sent 3,000 of them): judged, never answered.
    for i in 0..30 {
        let forged = submit(
            &app,
            reply(
                &format!("stranger{i}@spam.test"),
                &original,
                "同意",
                &format!("<s{i}@spam.test>"),
            ),
        )
        .await;
        assert_eq!(forged.verdict, pb::Verdict::SenderMismatch as i32);
        assert!(!forged.answered, "stranger {i} was answered");
    }
    // A registered sender is answered, until the hour's budget for everyone is spent.
    let mut answered = 0;
    for i in 0..6 {
        let vague = submit(
            &app,
            reply(
                "mary@example.com",
                &original,
                "let me think",
                &format!("<v{i}@example.com>"),
            ),
        )
        .await;
        assert_eq!(vague.verdict, pb::Verdict::NoDecision as i32);
        answered += usize::from(vague.answered);
    }
    assert_eq!(answered, 3, "mail.answers_per_hour = 3");
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    app.stop().await;
}

#[tokio::test]
async fn answers_do_not_echo_a_long_subject() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    start_expense(&app).await;
    let original = approval_mail(&app).await;
    let long = format!("Re: {}", "payload ".repeat(500));
    let raw = String::from_utf8(reply("mary@example.com", &original, "hmm", "<long@x>"))
        .expect("utf-8")
        .replace("Subject: Re: approval", &format!("Subject: {long}"));
    let vague = submit(&app, raw.into_bytes()).await;
    assert!(vague.answered);
    let answers = app.mails_to("mary@example.com", 2).await;
    let answer = answers
        .iter()
        .find(|m| m.contains("Auto-Submitted: auto-replied"))
        .expect("the answer");
    let parsed = mail_parser::MessageParser::default()
        .parse(answer.as_bytes())
        .expect("parses");
    let subject = parsed.subject().expect("subject");
    assert!(subject.chars().count() <= 90, "{subject}");
    assert!(subject.ends_with('…'), "{subject}");
    app.stop().await;
}

#[tokio::test]
async fn a_reply_with_several_from_mailboxes_decides_nothing() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let genuine =
        String::from_utf8(reply("mary@example.com", &original, "同意", "<m1@x>")).expect("utf-8");
    for (raw, id) in [
        (
            genuine.replace(
                "From: mary@example.com",
                "From: mary@example.com, eve@attacker.test",
            ),
            "<m1@x>",
        ),
        (
            genuine.replace(
                "From: mary@example.com",
                "From: eve@attacker.test\r\nFrom: mary@example.com",
            ),
            "<m2@x>",
        ),
    ] {
        let raw = raw.replace("<m1@x>", id);
        let verdict = submit(&app, raw.into_bytes()).await;
        assert_eq!(
            verdict.verdict,
            pb::Verdict::SeveralFrom as i32,
            "{verdict:?}"
        );
        assert!(!verdict.answered);
    }
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    app.stop().await;
}

#[tokio::test]
async fn a_forged_authentication_results_below_ours_or_signed_by_a_public_suffix_does_not_pass() {
    let app = spawn_app_with(|s| {
        s.mail.authserv_id = Some("mx.replyflow.test".into());
        s.mail.require_auth = "dkim".into();
    })
    .await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let with_results = |results: &[&str], id: &str| {
        let mut raw: Vec<u8> = results
            .iter()
            .flat_map(|r| format!("Authentication-Results: {r}\r\n").into_bytes())
            .collect();
        raw.extend(reply("mary@example.com", &original, "同意", id));
        raw
    };
    // Our MTA's header on top says fail; the sender's forgery with our id below says pass.
    let forged_below = submit(
        &app,
        with_results(
            &[
                "mx.replyflow.test; dkim=fail header.d=example.com",
                "mx.replyflow.test; dkim=pass header.d=example.com",
            ],
            "<ar1@x>",
        ),
    )
    .await;
    assert_eq!(
        forged_below.verdict,
        pb::Verdict::AuthFailed as i32,
        "{forged_below:?}"
    );
    // A signature by the public suffix itself vouches for nobody.
    let by_suffix = submit(
        &app,
        with_results(&["mx.replyflow.test; dkim=pass header.d=com"], "<ar2@x>"),
    )
    .await;
    assert_eq!(
        by_suffix.verdict,
        pb::Verdict::AuthFailed as i32,
        "{by_suffix:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    let signed = submit(
        &app,
        with_results(
            &["mx.replyflow.test; dkim=pass header.d=example.com"],
            "<ar3@x>",
        ),
    )
    .await;
    assert_eq!(signed.verdict, pb::Verdict::Applied as i32, "{signed:?}");
    app.stop().await;
}

/// The issue's flood at full size: 3,000 forged senders, 8 clients at once. Run with
/// `cargo test --test api three_thousand -- --ignored --nocapture`; prints the rate.
#[tokio::test]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn three_thousand_forged_senders_get_no_answer() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task = start_expense(&app).await;
    let original = approval_mail(&app).await;
    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..8 {
        let channel = app.channel.clone();
        let original = original.clone();
        clients.spawn(async move {
            let mut answered = 0;
            for i in (client..3000).step_by(8) {
                let raw = reply(
                    &format!("stranger{i}@spam.test"),
                    &original,
                    &format!("同意 {}", "spam ".repeat(20)),
                    &format!("<s{i}@spam.test>"),
                );
                let verdict =
                    pb::approval_service_client::ApprovalServiceClient::new(channel.clone())
                        .submit_inbound_email(req(
                            pb::SubmitInboundEmailRequest {
                                raw,
                                ..Default::default()
                            },
                            "mta",
                        ))
                        .await
                        .expect("submit")
                        .into_inner();
                assert_eq!(verdict.verdict, pb::Verdict::SenderMismatch as i32);
                answered += usize::from(verdict.answered);
            }
            answered
        });
    }
    let mut answered = 0;
    while let Some(n) = clients.join_next().await {
        answered += n.expect("client");
    }
    let elapsed = started.elapsed();
    assert_eq!(answered, 0);
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    println!(
        "3000 forged replies judged in {elapsed:?} ({:.0}/s), {answered} answered",
        3000.0 / elapsed.as_secs_f64()
    );
    app.stop().await;
}
