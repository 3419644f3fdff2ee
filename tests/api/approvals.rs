//! Email approval, outbound, with the zero-config file transport: the task's transaction writes
//! the approval context and the mail; the outbox worker writes it out as an .eml file, which these
//! tests parse the way a mail client would (mail_parser) and check against GetApproval and the
//! store's reply-token keys.
use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use mail_parser::{Message, MessageParser};
use replyflow::{
    app::Application,
    clock::{ManualClock, SystemClock},
    config::Secret,
    mail::token::{self, KeyRing},
    proto::pb,
};
use serde_json::json;
use tonic::Code;

use crate::{
    branches::bpmn,
    helpers::{
        EXPENSE_OUTCOMES, TestApp, TestDb, bare, check_approval_mail, expense_vars, millis,
        real_now, req, spawn_app, spawn_app_at, spawn_app_on_with, spawn_app_with, test_settings,
    },
};

/// The default `mail.resend_interval` (PT5M): the tests move the clock past it.
const RESEND_INTERVAL: i64 = 5 * 60_000;

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("the mail parses")
}

/// Starts examples/expense.bpmn with `manager` as the manager; returns the instance and its task.
async fn start_expense(app: &TestApp, manager: &str) -> (pb::ProcessInstance, pb::Task) {
    let mut vars = expense_vars(20000);
    vars["manager"] = json!(manager);
    let instance = app.start("expense", vars).await;
    let task = instance.open_tasks[0].clone();
    assert_eq!(task.assignee, manager);
    (instance, task)
}

#[tokio::test]
async fn an_opened_task_has_its_approval_context_and_its_mail() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = &instance.open_tasks[0];

    let mails = app.written_mail(1).await;
    let mail = &mails[0];
    assert!(
        mail.contains("To: MARY <mary@example.com>") || mail.contains("mary@example.com"),
        "{mail}"
    );
    assert!(mail.contains("Auto-Submitted: auto-generated"), "{mail}");
    assert!(mail.contains("X-Auto-Response-Suppress: All"), "{mail}");
    assert!(
        mail.contains("approvals+"),
        "Reply-To carries the token: {mail}"
    );

    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver_email, "mary@example.com");
    assert_eq!(approval.status, pb::ApprovalStatus::Pending as i32);
    assert!(!approval.message_id.is_empty());
    assert!(
        mail.contains(&approval.message_id),
        "the recorded Message-ID is the mail's"
    );
    let valid_until = approval.valid_until.expect("valid_until").seconds;
    let created = approval.created_at.expect("created_at").seconds;
    assert_eq!(
        valid_until - created,
        3 * 86_400,
        "replyflow:validFor=\"P3D\""
    );

    let kinds = app.event_kinds(&instance.id).await;
    assert!(
        kinds.iter().any(|k| k == "approval_mail_queued"),
        "{kinds:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_mail_is_signed_multipart_and_in_english_for_an_english_approver() {
    let app = spawn_app().await;
    app.add_user("mary", "").await; // locale "en"
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    let raw = app.mail_with_id(&approval.message_id).await;

    let seen = check_approval_mail(&raw, &approval, &app.reply_token_keys(), EXPENSE_OUTCOMES);
    assert_eq!(seen.language, "en");
    assert!(
        seen.subject.starts_with("Approval needed: 经理审批"),
        "{:?}",
        seen.subject
    );
    for expected in [
        "An approval is waiting for your decision.",
        "Task: 经理审批",
        "Process: 差旅报销",
        "amount: 20000",
        "reason: conference",
        "Reply by: ",
        "How to answer",
    ] {
        assert!(
            seen.text.contains(expected),
            "{expected:?} in:\n{}",
            seen.text
        );
    }
    assert!(
        !seen.text.contains("您好"),
        "no Chinese boilerplate:\n{}",
        seen.text
    );
    assert!(seen.html.contains("<html lang=\"en\">"));
    assert!(seen.html.contains("Your decision"));
    app.stop().await;
}

#[tokio::test]
async fn a_chinese_approver_gets_the_mail_in_chinese() {
    let app = spawn_app().await;
    app.add_user_with("lili", "lili@example.com", "zh-CN").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "lili").await;
    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver, "lili");
    let raw = app.mail_with_id(&approval.message_id).await;

    let seen = check_approval_mail(&raw, &approval, &app.reply_token_keys(), EXPENSE_OUTCOMES);
    assert_eq!(seen.language, "zh-CN");
    assert!(
        seen.subject.starts_with("待审批「经理审批」"),
        "{:?}",
        seen.subject
    );
    for expected in [
        "LILI，您好：",
        "有一项审批等待您处理。",
        "任务：经理审批",
        "amount：20000",
        "答复期限：",
        "(北京时间)",
        "如何答复",
    ] {
        assert!(
            seen.text.contains(expected),
            "{expected:?} in:\n{}",
            seen.text
        );
    }
    assert!(
        !seen.text.contains("How to answer"),
        "no English boilerplate:\n{}",
        seen.text
    );
    assert!(seen.html.contains("<html lang=\"zh-CN\">"));
    assert!(seen.html.contains("请选择您的决定"));
    app.stop().await;
}

#[tokio::test]
async fn resending_at_once_is_refused_with_the_next_allowed_time() {
    let app = spawn_app().await; // mail.resend_interval = PT5M
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    let next_allowed = replyflow::clock::rfc3339(millis(approval.created_at) + 5 * 60_000);

    let err = app
        .resend_as(&task.id, "mary")
        .await
        .expect_err("rate-limited");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&next_allowed),
        "names the next allowed time {next_allowed}: {:?}",
        err.message()
    );
    let err = app
        .resend_as(&task.id, "initiator")
        .await
        .expect_err("the initiator is rate-limited too");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    let kinds = app.event_kinds(&task.process_instance_id).await;
    assert!(
        !kinds.iter().any(|k| k == "approval_mail_resent"),
        "{kinds:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_resent_mail_keeps_the_token_and_threads_under_the_first() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.add_user("fred", "").await;
    app.deploy_example("expense.bpmn").await;
    let (instance, task) = start_expense(&app, "mary").await;
    let first = app.approval(&task.id).await;
    let ring = app.reply_token_keys();
    let first_raw = app.mail_with_id(&first.message_id).await;
    let first_seen = check_approval_mail(&first_raw, &first, &ring, EXPENSE_OUTCOMES);

    // Neither the assignee nor the initiator: refused, whatever the time.
    let err = app
        .resend_as(&task.id, "fred")
        .await
        .expect_err("fred may not");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    clock.advance(RESEND_INTERVAL);
    let after = app
        .resend_as(&task.id, "initiator")
        .await
        .expect("the initiator may resend");
    assert_eq!(after.id, first.id, "same context");
    assert_eq!(after.status, pb::ApprovalStatus::Pending as i32);
    assert_eq!(
        after.message_id, first.message_id,
        "the context keeps the first Message-ID"
    );
    assert_eq!(after.valid_until, first.valid_until, "same validity");

    let others = |m: &Message<'_>| {
        m.message_id()
            .is_some_and(|id| id != bare(&first.message_id))
    };
    let second_raw = app.raw_mail_where("other than the first", others).await;
    let second = parse(&second_raw);
    let second_id = second.message_id().expect("Message-ID").to_string();
    assert_ne!(second_id, bare(&first.message_id), "a new Message-ID");
    assert_eq!(
        second.in_reply_to().as_text(),
        Some(bare(&first.message_id)),
        "In-Reply-To the first mail"
    );
    assert_eq!(
        second.references().as_text(),
        Some(bare(&first.message_id)),
        "References the first mail"
    );
    // Everything else is the same mail: same token, same tag, same outcomes.
    let mut as_second = after.clone();
    as_second.message_id = second_id.clone();
    let second_seen = check_approval_mail(&second_raw, &as_second, &ring, EXPENSE_OUTCOMES);
    assert_eq!(
        second_seen.token, first_seen.token,
        "the SAME Reply-To token"
    );
    assert_eq!(second_seen.subject, first_seen.subject);

    // The interval counts from the last mail, for the assignee as for the initiator.
    let err = app
        .resend_as(&task.id, "mary")
        .await
        .expect_err("too soon after the resend");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    clock.advance(RESEND_INTERVAL);
    app.resend_as(&task.id, "mary")
        .await
        .expect("the assignee may resend");
    let third_raw = app
        .raw_mail_where("a third one", |m| {
            m.message_id()
                .is_some_and(|id| id != bare(&first.message_id) && id != second_id)
        })
        .await;
    let third = parse(&third_raw);
    assert_eq!(
        third.in_reply_to().as_text(),
        Some(bare(&first.message_id)),
        "threaded under the first mail, not the second"
    );
    assert_eq!(app.written().len(), 3);

    // GetApproval reports the latest mail's delivery (the outbox worker's, in the background).
    let sent = app
        .wait_for_delivery(&task.id, pb::DeliveryStatus::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(sent.attempts, 1);
    let resent = app
        .audit_events(&instance.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "approval_mail_resent")
        .map(|e| e.actor)
        .collect::<Vec<_>>();
    assert_eq!(resent, ["initiator", "mary"]);
    app.stop().await;
}

#[tokio::test]
async fn revoking_stops_the_token_and_leaves_the_task_open() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (instance, task) = start_expense(&app, "mary").await;
    let before = app.approval(&task.id).await;

    let err = app
        .revoke_as(&task.id, "fred", "not mine")
        .await
        .expect_err("fred may not");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let revoked = app
        .revoke_as(&task.id, "mary", "decided on the phone")
        .await
        .expect("the assignee may revoke");
    assert_eq!(revoked.id, before.id);
    assert_eq!(revoked.status, pb::ApprovalStatus::Revoked as i32);
    assert_eq!(revoked.revoke_reason, "decided on the phone");
    let read = app.approval(&task.id).await;
    assert_eq!(read.status, pb::ApprovalStatus::Revoked as i32);
    assert_eq!(read.revoke_reason, "decided on the phone");

    assert_eq!(
        app.task(&task.id).await.status,
        pb::TaskStatus::Open as i32,
        "the task stays open for other channels"
    );

    let again = app
        .revoke_as(&task.id, "initiator", "another reason")
        .await
        .expect("revoking again is no error");
    assert_eq!(again.status, pb::ApprovalStatus::Revoked as i32);
    assert_eq!(
        again.revoke_reason, "decided on the phone",
        "returned unchanged"
    );

    let revocations: Vec<_> = app
        .audit_events(&instance.id)
        .await
        .into_iter()
        .filter(|e| e.kind == "approval_revoked")
        .collect();
    assert_eq!(revocations.len(), 1, "{revocations:?}");
    assert_eq!(revocations[0].actor, "mary");
    assert_eq!(revocations[0].detail["reason"], "decided on the phone");

    app.complete(&task, "approve")
        .await
        .expect("the API still decides the task");
    assert_eq!(
        app.task(&task.id).await.status,
        pb::TaskStatus::Completed as i32
    );
    let after = app.approval(&task.id).await;
    assert_eq!(after.status, pb::ApprovalStatus::Revoked as i32);
    assert_eq!(
        after.revoke_reason, "decided on the phone",
        "completing does not rewrite the reason"
    );
    app.stop().await;
}

#[tokio::test]
async fn completing_the_task_through_the_api_revokes_its_context() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let before = app.approval(&task.id).await;
    assert_eq!(before.status, pb::ApprovalStatus::Pending as i32);

    app.complete(&task, "reject").await.expect("complete");
    let after = app.approval(&task.id).await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.status, pb::ApprovalStatus::Revoked as i32);
    assert!(
        after.revoke_reason.contains("completed"),
        "{:?}",
        after.revoke_reason
    );
    let err = app
        .resend_as(&task.id, "mary")
        .await
        .expect_err("nothing to resend for a closed task");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_reassigned_task_mails_the_new_assignee_and_revokes_the_old_context() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user_with("carol", "carol@example.com", "zh-CN")
        .await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let old = app.approval(&task.id).await;
    assert_eq!(old.approver, "mary");

    app.reassign_as(&task, "mary", "carol")
        .await
        .expect("reassign");
    let new = app.approval(&task.id).await;
    assert_ne!(new.id, old.id, "a context of its own");
    assert_eq!(new.approver, "carol");
    assert_eq!(new.approver_email, "carol@example.com");
    assert_eq!(new.status, pb::ApprovalStatus::Pending as i32);
    assert_ne!(new.message_id, old.message_id);

    let store = app.store().await;
    let old_now = store
        .approval_context(&old.id)
        .await
        .expect("read")
        .expect("the old context is kept");
    store.close().await;
    assert_eq!(old_now.status, replyflow::model::ApprovalStatus::Revoked);
    assert!(
        old_now.revoke_reason.contains("reassigned"),
        "{:?}",
        old_now.revoke_reason
    );

    let raw = app.mail_with_id(&new.message_id).await;
    let seen = check_approval_mail(&raw, &new, &app.reply_token_keys(), EXPENSE_OUTCOMES);
    assert_eq!(seen.language, "zh-CN", "in the new assignee's language");
    let new_token = token::parse(&seen.token).expect("token");
    assert_eq!(new_token.context_id, new.id, "the new context's own token");
    app.stop().await;
}

#[tokio::test]
async fn an_approver_without_email_gets_the_task_without_email_approval() {
    let app = spawn_app().await;
    app.deploy_example("expense.bpmn").await;
    // mary is not in the directory at all.
    let instance = app.start("expense", expense_vars(20000)).await;
    let err = app
        .try_approval(&instance.open_tasks[0].id)
        .await
        .expect_err("no context");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let kinds = app.event_kinds(&instance.id).await;
    assert!(
        kinds.iter().any(|k| k == "email_approval_skipped"),
        "{kinds:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_directory_user_without_an_address_gets_the_task_and_an_explanation() {
    let app = spawn_app().await;
    app.add_user_with("mary", "", "en").await;
    app.deploy_example("expense.bpmn").await;
    let (instance, task) = start_expense(&app, "mary").await;
    assert_eq!(task.status, pb::TaskStatus::Open as i32);

    let err = app.try_approval(&task.id).await.expect_err("no context");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let events = app.audit_events(&instance.id).await;
    let skipped: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "email_approval_skipped")
        .collect();
    assert_eq!(skipped.len(), 1, "{events:?}");
    assert_eq!(skipped[0].activity_id, "manager_approval");
    assert_eq!(skipped[0].detail["task_id"], task.id.as_str());
    let reason = skipped[0].detail["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("mary") && reason.contains("no email address"),
        "the event says why: {reason:?}"
    );
    assert!(!events.iter().any(|e| e.kind == "approval_mail_queued"));

    // Resending has nothing to send either; the API still decides the task.
    let err = app
        .resend_as(&task.id, "mary")
        .await
        .expect_err("no context");
    // approval.proto: FAILED_PRECONDITION when the assignee has no email address.
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    app.complete(&task, "approve").await.expect("complete");
    app.stop().await;
}

#[tokio::test]
async fn a_task_with_email_approval_off_has_no_context_no_event_and_no_mail() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    let task_xml = |key: &str, attribute: &str| {
        bpmn(
            key,
            &format!(
                r#"<bpmn:startEvent id="start"/>
        <bpmn:userTask id="review" name="Review" replyflow:assignee="mary" {attribute}/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="review"/>
        <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="end"/>"#
            ),
        )
    };
    app.deploy_xml(&task_xml("quiet", r#"replyflow:emailApproval="false""#))
        .await
        .expect("deploy quiet");
    app.deploy_xml(&task_xml("loud", ""))
        .await
        .expect("deploy loud");

    let quiet = app.start("quiet", json!({})).await;
    let quiet_task = &quiet.open_tasks[0];
    let err = app
        .try_approval(&quiet_task.id)
        .await
        .expect_err("no context");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let kinds = app.event_kinds(&quiet.id).await;
    assert!(
        !kinds
            .iter()
            .any(|k| k.contains("approval") || k.contains("mail")),
        "no approval event at all: {kinds:?}"
    );

    // A mail committed later is written after any earlier one: once it is there, the quiet
    // task's mail would be too.
    let loud = app.start("loud", json!({})).await;
    let loud_approval = app
        .try_approval(&loud.open_tasks[0].id)
        .await
        .expect("email approval is on by default");
    app.mail_with_id(&loud_approval.message_id).await;
    assert_eq!(app.written().len(), 1, "only the loud task's mail");
    assert_eq!(app.outbox_count().await, 1, "nothing else is queued either");

    app.complete(quiet_task, "approve")
        .await
        .expect("decided through the API");
    app.stop().await;
}

const FIRST_SECRET: &str = "first-secret-0123456789";
const SECOND_SECRET: &str = "second-secret-0123456789";

fn rotation(secrets: &[&str]) -> Vec<Secret> {
    secrets.iter().map(|s| Secret::new(*s)).collect()
}

#[tokio::test]
async fn a_rotated_secret_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key() {
    let app = spawn_app_with(|s| s.security.token_secrets = rotation(&[FIRST_SECRET])).await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, old_task) = start_expense(&app, "mary").await;
    let old = app.approval(&old_task.id).await;
    let old_raw = app.mail_with_id(&old.message_id).await;
    let old_token =
        check_approval_mail(&old_raw, &old, &app.reply_token_keys(), EXPENSE_OUTCOMES).token;
    let first_kid = token::parse(&old_token).expect("token").kid;
    let db = app.stop_keeping_db().await;

    // Rotation: the new secret first, the old one after it.
    let app = spawn_app_on_with(db, |s| {
        s.security.token_secrets = rotation(&[SECOND_SECRET, FIRST_SECRET]);
    })
    .await;
    let ring = app.reply_token_keys();
    let second_kid = ring.current_kid();
    assert_ne!(second_kid, first_kid, "the new secret is a new key");
    let parts = token::parse(&old_token).expect("token");
    token::verify(
        &ring,
        &parts,
        first_kid,
        &old.approver_email,
        millis(old.valid_until),
    )
    .expect("the old token still verifies after the rotation");
    // ... because that key is still the first secret: under the second it would not.
    let only_second =
        KeyRing::new(vec![(first_kid, SECOND_SECRET.as_bytes().to_vec())]).expect("ring");
    assert_eq!(
        token::verify(
            &only_second,
            &parts,
            first_kid,
            &old.approver_email,
            millis(old.valid_until)
        ),
        Err(token::TokenError::BadSignature)
    );
    let still = app.approval(&old_task.id).await;
    assert_eq!(still.status, pb::ApprovalStatus::Pending as i32);

    let (_, new_task) = start_expense(&app, "mary").await;
    let new = app.approval(&new_task.id).await;
    let new_raw = app.mail_with_id(&new.message_id).await;
    let new_token = check_approval_mail(&new_raw, &new, &ring, EXPENSE_OUTCOMES).token;
    assert_eq!(token::parse(&new_token).expect("token").kid, second_kid);
    let db = app.stop_keeping_db().await;

    // The list reordered: every secret keeps its key id (ids come from the secret, not its
    // place in the list); only which one signs new tokens changes.
    let app = spawn_app_on_with(db, |s| {
        s.security.token_secrets = rotation(&[FIRST_SECRET, SECOND_SECRET]);
    })
    .await;
    let ring = app.reply_token_keys();
    assert_eq!(ring.current_kid(), first_kid);
    for (token, kid, approval) in [
        (&old_token, first_kid, &old),
        (&new_token, second_kid, &new),
    ] {
        let parts = token::parse(token).expect("token");
        token::verify(
            &ring,
            &parts,
            kid,
            &approval.approver_email,
            millis(approval.valid_until),
        )
        .expect("verifies after reordering");
    }

    // Configured secrets never enter the database.
    let store = app.store().await;
    let keys = store.token_keys().await.expect("token keys");
    store.close().await;
    assert!(keys.len() >= 2, "{keys:?}");
    for key in &keys {
        if key.source == "config" {
            assert_eq!(
                key.secret, "",
                "a configured secret was stored (kid {})",
                key.kid
            );
            assert_eq!(key.fingerprint.len(), 64);
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_template_that_does_not_render_stops_the_start_and_names_the_template() {
    let db = TestDb::new().await;
    let outbox = tempfile::tempdir().expect("outbox dir");
    for (file, source) in [
        // A syntax error.
        ("approval.en.html", "{% if %}"),
        // Parses, but fails when rendered: an undefined variable's attribute.
        (
            "approval.zh-CN.txt",
            "{{ no_such_variable.field }} {{ token_line }}",
        ),
        // Renders, but without the reply token that correlation needs.
        ("approval.en.txt", "Hello {{ to.name }}"),
    ] {
        let templates = tempfile::tempdir().expect("templates dir");
        std::fs::write(templates.path().join(file), source).expect("write template");
        // A port known to be free: the server must never listen on it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut settings = test_settings(&db.url, outbox.path());
        settings.server.listen = format!("127.0.0.1:{port}");
        settings.mail.templates_dir = Some(templates.path().display().to_string());

        let err = Application::build(&settings, Arc::new(SystemClock))
            .await
            .expect_err("a broken template refuses the start");
        let chain = format!("{err:#}");
        assert!(chain.contains(file), "{file} is named: {chain}");
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err(),
            "{file}: nothing listens on {port}"
        );
    }
    assert_eq!(
        std::fs::read_dir(outbox.path())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "no mail"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn reply_tokens_never_reach_the_audit_trail() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.add_user_with("carol", "carol@example.com", "zh-CN")
        .await;
    app.deploy_example("expense.bpmn").await;
    let (instance, task) = start_expense(&app, "mary").await;
    let first = app.approval(&task.id).await;
    let mut raws = vec![app.mail_with_id(&first.message_id).await];
    clock.advance(RESEND_INTERVAL);
    app.resend_as(&task.id, "mary").await.expect("resend");
    app.reassign_as(&task, "mary", "carol")
        .await
        .expect("reassign");
    let second = app.approval(&task.id).await;
    raws.push(app.mail_with_id(&second.message_id).await);
    app.revoke_as(&task.id, "carol", "by phone")
        .await
        .expect("revoke");
    app.complete_as(&task, "carol", "approve")
        .await
        .expect("complete");

    let ring = app.reply_token_keys();
    let tokens = [
        check_approval_mail(&raws[0], &first, &ring, EXPENSE_OUTCOMES).token,
        check_approval_mail(&raws[1], &second, &ring, EXPENSE_OUTCOMES).token,
    ];
    let events = app.audit_events(&instance.id).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for kind in [
        "approval_mail_queued",
        "approval_mail_resent",
        "task_reassigned",
        "approval_revoked",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let trail = format!("{events:?}");
    for token in &tokens {
        // The context id is the token's middle and may be named; the MAC never.
        let mac = &token[token.len() - 16..];
        assert!(
            !trail.to_lowercase().contains(token.as_str()) && !trail.contains(mac),
            "a reply token in the audit trail: {trail}"
        );
    }
    app.stop().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

/// Everything the server code logs from now on, in this test binary, at every level. A global
/// subscriber: a thread-local one (`set_default`) misses events whose callsites other tests'
/// threads register meanwhile (tracing caches a callsite's interest process-wide).
fn captured_log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("replyflow=trace,info"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("nothing else in tests/api installs a global subscriber");
        captured
    })
}

#[tokio::test]
async fn secrets_and_reply_tokens_never_reach_the_log() {
    let logs = captured_log();
    let secret = "correct-horse-battery-staple-7d1f";
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |s| {
        s.security.token_secret = Some(Secret::new(secret));
    })
    .await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    let raw = app.mail_with_id(&approval.message_id).await;
    clock.advance(RESEND_INTERVAL);
    app.resend_as(&task.id, "mary").await.expect("resend");
    app.raw_mail_where("resent", |m| {
        m.message_id() != Some(bare(&approval.message_id))
    })
    .await;
    app.revoke_as(&task.id, "mary", "by phone")
        .await
        .expect("revoke");
    app.complete(&task, "approve").await.expect("complete");
    let token =
        check_approval_mail(&raw, &approval, &app.reply_token_keys(), EXPENSE_OUTCOMES).token;
    app.stop().await;

    let text = logs.text();
    assert!(
        text.contains("replyflow listening")
            && text.contains(&format!(
                "instance started instance={}",
                task.process_instance_id
            ))
            && text.contains(&format!("task completed task={}", task.id)),
        "the capture works: {text}"
    );
    let mac = &token[token.len() - 16..];
    for (what, needle) in [("token", token.as_str()), ("MAC", mac), ("secret", secret)] {
        assert!(
            !text.contains(needle),
            "the reply {what} {needle} is in the log:\n{text}"
        );
    }
}

// ------------------------------------------------------------------ where the code and the
// contract (proto/replyflow/v1/approval.proto) disagree

#[tokio::test]
async fn get_approval_shows_the_message_id_without_angle_brackets() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let approval = app.approval(&task.id).await;
    let raw = app.mail_with_id(&approval.message_id).await;
    assert_eq!(parse(&raw).message_id(), Some(approval.message_id.as_str()));
    assert!(!approval.message_id.starts_with('<'), "{approval:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_context_has_no_used_at() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let revoked = app
        .revoke_as(&task.id, "mary", "by phone")
        .await
        .expect("revoke");
    assert_eq!(revoked.status, pb::ApprovalStatus::Revoked as i32);
    assert_eq!(revoked.used_at, None, "{revoked:?}");
    app.stop().await;
}

#[tokio::test]
async fn resending_a_revoked_approval_issues_a_new_context() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let old = app
        .revoke_as(&task.id, "mary", "lost the mail")
        .await
        .expect("revoke");
    clock.advance(RESEND_INTERVAL);
    let new = app
        .resend_as(&task.id, "mary")
        .await
        .expect("a revoked context is renewed");
    assert_ne!(new.id, old.id);
    assert_eq!(new.status, pb::ApprovalStatus::Pending as i32);
    let raw = app.mail_with_id(&new.message_id).await;
    check_approval_mail(&raw, &new, &app.reply_token_keys(), EXPENSE_OUTCOMES);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_resend_with_the_same_request_id_returns_the_context() {
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    clock.advance(RESEND_INTERVAL);
    let request = || {
        req(
            pb::ResendApprovalEmailRequest {
                task_id: task.id.clone(),
                request_id: "resend-1".into(),
                renew: false,
            },
            "mary",
        )
    };
    let first = app
        .approvals()
        .resend_approval_email(request())
        .await
        .expect("resend")
        .into_inner();
    let retry = app
        .approvals()
        .resend_approval_email(request())
        .await
        .expect("a retry of the same request is answered, not rate-limited")
        .into_inner();
    assert_eq!(retry.id, first.id);
    assert_eq!(
        app.outbox_count().await,
        2,
        "the retry queued no third mail"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_revoke_with_a_request_id_acts_once_and_its_id_cannot_carry_another_reason() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (instance, task) = start_expense(&app, "mary").await;
    let request = |reason: &str| {
        req(
            pb::RevokeApprovalRequest {
                task_id: task.id.clone(),
                reason: reason.into(),
                request_id: "revoke-1".into(),
            },
            "mary",
        )
    };
    let first = app
        .approvals()
        .revoke_approval(request("lost the mail"))
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(first.status, pb::ApprovalStatus::Revoked as i32);
    let retry = app
        .approvals()
        .revoke_approval(request("lost the mail"))
        .await
        .expect("a retry is answered")
        .into_inner();
    assert_eq!(retry.id, first.id);
    let reused = app
        .approvals()
        .revoke_approval(request("by phone"))
        .await
        .expect_err("the same request id for another reason");
    assert_eq!(reused.code(), Code::AlreadyExists, "{reused:?}");
    assert!(reused.message().contains("request_id"), "{reused:?}");
    let revocations = app
        .event_kinds(&instance.id)
        .await
        .into_iter()
        .filter(|kind| kind == "approval_revoked")
        .count();
    assert_eq!(revocations, 1, "revoked once");
    app.stop().await;
}

#[tokio::test]
async fn a_task_decided_after_its_approval_was_renewed_leaves_no_token_pending() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let (_, task) = start_expense(&app, "mary").await;
    let first = app.approval(&task.id).await;
    // Past the resend interval (PT5M by default).
    clock.advance(5 * 60_000 + 1);
    let renewed = app
        .approvals()
        .resend_approval_email(req(
            pb::ResendApprovalEmailRequest {
                task_id: task.id.clone(),
                renew: true,
                ..Default::default()
            },
            "mary",
        ))
        .await
        .expect("renew")
        .into_inner();
    assert_ne!(renewed.id, first.id, "a new context");
    assert_eq!(renewed.status, pb::ApprovalStatus::Pending as i32);
    app.complete(&task, "approve").await.expect("complete");
    let after = app.approval(&task.id).await;
    assert_eq!(after.id, renewed.id);
    assert_eq!(
        after.status,
        pb::ApprovalStatus::Revoked as i32,
        "the renewed token stops working with the decision: {after:?}"
    );
    app.stop().await;
}

/// A one-task process whose approval mail is valid for one minute, the shortest `validFor`.
fn short_lived_xml() -> String {
    bpmn(
        "brief",
        r#"<bpmn:startEvent id="start"/>
        <bpmn:userTask id="review" name="Review" replyflow:assignee="mary" replyflow:validFor="PT1M"/>
        <bpmn:endEvent id="end"/>
        <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="review"/>
        <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="end"/>"#,
    )
}

#[tokio::test]
async fn a_context_past_its_valid_until_reads_expired() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.deploy_xml(&short_lived_xml()).await.expect("deploy");
    let instance = app.start("brief", json!({})).await;
    let task = &instance.open_tasks[0];
    let fresh = app.approval(&task.id).await;
    assert_eq!(fresh.status, pb::ApprovalStatus::Pending as i32);
    assert_eq!(
        millis(fresh.valid_until) - millis(fresh.created_at),
        60_000,
        "replyflow:validFor=\"PT1M\""
    );
    clock.advance(60_001);
    let expired = app.approval(&task.id).await;
    assert_eq!(expired.status, pb::ApprovalStatus::Expired as i32);
    assert_eq!(
        app.task(&task.id).await.status,
        pb::TaskStatus::Open as i32,
        "expiry closes the mail channel only"
    );
    app.stop().await;
}

#[tokio::test]
async fn revoking_an_expired_context_is_refused() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = spawn_app_at(clock.clone(), |_| {}).await;
    app.add_user("mary", "").await;
    app.deploy_xml(&short_lived_xml()).await.expect("deploy");
    let instance = app.start("brief", json!({})).await;
    let task = &instance.open_tasks[0];
    clock.advance(60_001);
    let err = app
        .revoke_as(&task.id, "mary", "too late")
        .await
        .expect_err("an expired context cannot be revoked");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    app.stop().await;
}
