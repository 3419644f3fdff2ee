//! Replies through SubmitInboundEmail (the MTA-pipe / webhook transport): the approval mail the
//! server wrote is answered the way a mail client would, and every reply gets its verdict.
use std::time::Duration;

use replyflow::{
    model::Verdict,
    proto::pb,
    store::{PageRequest, inbound::InboundFilter},
    workflow::inbound::ReceivedMail,
};
use serde_json::json;

use crate::helpers::{TestApp, expense_vars, is_approval, req, spawn_app, spawn_app_with, text_of};
// These lived here before the shared harness; other test files (and new ones) may still import
// them from `crate::replies`.
pub(crate) use crate::helpers::{approval_mail, header, reply, submit};

#[tokio::test]
async fn a_reply_decides_the_task_once_and_forgeries_and_copies_decide_nothing() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    let original = approval_mail(&app).await;

    // A forged sender: verdict, nothing decided.
    let forged = submit(
        &app,
        reply("eve@example.com", &original, "同意", "<f1@evil>"),
    )
    .await;
    assert_eq!(
        forged.verdict,
        pb::Verdict::SenderMismatch as i32,
        "{forged:?}"
    );
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    // No decision on the first line: the task stays open.
    let vague = submit(
        &app,
        reply(
            "mary@example.com",
            &original,
            "Let me think about it",
            "<v1@x>",
        ),
    )
    .await;
    assert_eq!(vague.verdict, pb::Verdict::NoDecision as i32, "{vague:?}");
    assert!(vague.answered, "the approver is told how to answer");

    // The real answer, Chinese keyword with a comment on the same line.
    let applied = submit(
        &app,
        reply(
            "Mary <mary@example.com>",
            &original,
            "同意，预算合理",
            "<ok1@x>",
        ),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    assert!(applied.answered, "a success gets a confirmation");
    assert_eq!(applied.task_id, task.id);
    let decided = app.task(&task.id).await;
    assert_eq!(decided.outcome, "approve");
    assert_eq!(decided.comment, "预算合理");
    assert_eq!(decided.completed_by, "mary");
    assert_eq!(decided.completed_via, pb::CompletedVia::Email as i32);
    let next = app.instance(&instance.id).await;
    assert_eq!(next.open_tasks[0].activity_id, "finance_approval");

    // The same message again (a re-fetch): applied once.
    let again = submit(
        &app,
        reply(
            "Mary <mary@example.com>",
            &original,
            "同意，预算合理",
            "<ok1@x>",
        ),
    )
    .await;
    assert_eq!(again.verdict, pb::Verdict::Duplicate as i32, "{again:?}");
    assert!(!again.answered, "a copy is not answered twice");
    // A second, different reply to the decided task: already handled.
    let late = submit(
        &app,
        reply("mary@example.com", &original, "驳回", "<late@x>"),
    )
    .await;
    assert_eq!(late.verdict, pb::Verdict::AlreadyUsed as i32, "{late:?}");
    assert!(
        late.reason.contains("already handled by mary"),
        "{}",
        late.reason
    );
    assert_eq!(
        app.instance(&instance.id).await.open_tasks.len(),
        1,
        "nothing moved twice"
    );

    let log = pb::approval_service_client::ApprovalServiceClient::new(app.channel.clone())
        .list_inbound_emails(req(
            pb::ListInboundEmailsRequest {
                task_id: task.id.clone(),
                ..Default::default()
            },
            "admin",
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(log.emails.len(), 5, "one row per message");
    // The confirmation, in mary's language, threaded under her reply.
    let confirmation = app
        .mail_where("confirmation", |m| m.contains("In-Reply-To: <ok1@x>"))
        .await;
    assert!(
        confirmation.contains("Auto-Submitted: auto-replied"),
        "{confirmation}"
    );
    app.stop().await;
}

#[tokio::test]
async fn auto_replies_ambiguity_and_a_broken_token_get_their_verdicts() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let original = approval_mail(&app).await;

    let mut out_of_office = reply(
        "mary@example.com",
        &original,
        "I am out of the office until Monday.",
        "<ooo@x>",
    );
    out_of_office.splice(0..0, b"Auto-Submitted: auto-replied\r\n".iter().copied());
    assert_eq!(
        submit(&app, out_of_office).await.verdict,
        pb::Verdict::AutoReply as i32
    );

    let both = submit(
        &app,
        reply("mary@example.com", &original, "同意 驳回", "<amb@x>"),
    )
    .await;
    assert_eq!(both.verdict, pb::Verdict::Ambiguous as i32, "{both:?}");

    // One character of the token changed: the signature no longer matches.
    let token_start = original.find("approvals+").expect("token") + "approvals+".len();
    let mut tampered = original.clone();
    let flipped = if &original[token_start + 20..token_start + 21] == "a" {
        "b"
    } else {
        "a"
    };
    tampered.replace_range(token_start + 20..token_start + 21, flipped);
    let forged = submit(
        &app,
        reply("mary@example.com", &tampered, "同意", "<tamper@x>"),
    )
    .await;
    assert!(
        forged.verdict == pb::Verdict::BadSignature as i32
            || forged.verdict == pb::Verdict::UnknownToken as i32,
        "{forged:?}"
    );
    assert_eq!(
        app.instance(&instance.id).await.open_tasks[0].activity_id,
        "manager_approval"
    );
    app.stop().await;
}

/// One user task for `${manager}` that may be handed on by mail.
const DELEGABLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:replyflow="https://replyflow.dev/schema/1" id="d" targetNamespace="t">
  <bpmn:process id="purchase" name="采购申请" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="approval"/>
    <bpmn:userTask id="approval" name="采购审批" replyflow:assignee="${manager}"
                   replyflow:allowDelegate="true"/>
    <bpmn:sequenceFlow id="f2" sourceRef="approval" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#;

async fn add_user_with_alias(app: &TestApp, id: &str, alias: &str) {
    let message = pb::UpsertUserRequest {
        user: Some(pb::User {
            id: id.into(),
            display_name: id.to_uppercase(),
            email: format!("{id}@example.com"),
            email_aliases: vec![alias.into()],
            locale: "zh-CN".into(),
            ..Default::default()
        }),
    };
    app.directory()
        .upsert_user(req(message, "admin"))
        .await
        .expect("upsert user");
}

#[tokio::test]
async fn a_delegate_reply_hands_the_task_to_the_named_user_who_then_decides_by_mail() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    add_user_with_alias(&app, "bob", "bob.b@corp.example").await;
    app.deploy_xml(DELEGABLE).await.expect("deploys");
    let instance = app
        .start("purchase", serde_json::json!({"manager": "mary"}))
        .await;
    let task = instance.open_tasks[0].clone();
    let original = app.approval_mail_to("mary@example.com").await;

    // Handed on to bob by one of his aliases, with a note.
    let delegated = submit(
        &app,
        reply(
            "mary@example.com",
            &original,
            "转交 bob.b@corp.example\r\n他负责这个供应商",
            "<del1@x>",
        ),
    )
    .await;
    assert_eq!(
        delegated.verdict,
        pb::Verdict::Applied as i32,
        "{delegated:?}"
    );
    assert!(
        delegated.reason.contains("delegated to bob"),
        "{}",
        delegated.reason
    );
    assert_eq!(delegated.delegate_to, "bob.b@corp.example");
    assert!(delegated.answered, "the delegator gets a confirmation");
    let moved = app.task(&task.id).await;
    assert_eq!(moved.assignee, "bob");
    assert_eq!(moved.status, pb::TaskStatus::Open as i32);
    let events = app.audit_events(&instance.id).await;
    let reassigned = events
        .iter()
        .find(|e| e.kind == "task_reassigned")
        .expect("a task_reassigned event");
    assert_eq!(reassigned.actor, "mary");
    assert_eq!(reassigned.detail["via"], "email");
    assert_eq!(reassigned.detail["comment"], "他负责这个供应商");

    // The confirmation names bob; the approval now is bob's, with a mail of his own.
    let confirmation = text_of(&app.answer_to("<del1@x>").await);
    assert!(
        confirmation.contains("bob") && confirmation.contains("handed on"),
        "{confirmation}"
    );
    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver_email, "bob@example.com");
    assert_eq!(approval.status, pb::ApprovalStatus::Pending as i32);
    let bobs_mail = app.approval_mail_to("bob@example.com").await;

    // Mary's token was used by the hand-over: a second reply of hers decides nothing.
    let late = submit(
        &app,
        reply("mary@example.com", &original, "同意", "<late1@x>"),
    )
    .await;
    assert_eq!(late.verdict, pb::Verdict::AlreadyUsed as i32, "{late:?}");
    assert!(late.reason.contains("assigned to bob"), "{}", late.reason);
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    // Bob decides from his own mail.
    let decided = submit(
        &app,
        reply("bob@example.com", &bobs_mail, "同意", "<bob1@x>"),
    )
    .await;
    assert_eq!(decided.verdict, pb::Verdict::Applied as i32, "{decided:?}");
    let done = app.task(&task.id).await;
    assert_eq!(
        (done.outcome.as_str(), done.completed_by.as_str()),
        ("approve", "bob")
    );
    app.stop().await;
}

#[tokio::test]
async fn a_delegate_reply_that_cannot_be_honoured_changes_nothing_and_says_why() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("bob", "").await;
    app.deploy_xml(DELEGABLE).await.expect("deploys");
    app.deploy_example("expense.bpmn").await;
    let delegable = app
        .start("purchase", serde_json::json!({"manager": "mary"}))
        .await;
    let task = delegable.open_tasks[0].clone();
    let original = app.approval_mail_to("mary@example.com").await;

    for (body, id, why) in [
        (
            "delegate nobody@example.com",
            "<r1@x>",
            "not the address of a registered user",
        ),
        ("delegate MARY@example.com", "<r2@x>", "your own address"),
    ] {
        let refused = submit(&app, reply("mary@example.com", &original, body, id)).await;
        assert_eq!(
            refused.verdict,
            pb::Verdict::NoDecision as i32,
            "{refused:?}"
        );
        assert!(refused.reason.contains(why), "{body}: {}", refused.reason);
        assert!(refused.answered, "{body}: the approver is told why");
        let answer = text_of(&app.answer_to(id).await);
        assert!(answer.contains(why), "{answer}");
    }
    let unchanged = app.task(&task.id).await;
    assert_eq!(unchanged.assignee, "mary");
    assert_eq!(unchanged.status, pb::TaskStatus::Open as i32);
    let approval = app.approval(&task.id).await;
    assert_eq!(approval.approver_email, "mary@example.com");
    assert_eq!(approval.status, pb::ApprovalStatus::Pending as i32);
    assert!(
        !app.event_kinds(&delegable.id)
            .await
            .contains(&"task_reassigned".to_string())
    );

    // A task whose definition does not allow it (expense.bpmn has no allowDelegate).
    let expense = app.start("expense", expense_vars(20000)).await;
    let expense_task = expense.open_tasks[0].clone();
    let expense_mail = app
        .mail_where("the expense approval mail", |m| {
            is_approval(m) && header(m, "To").contains("mary@example.com") && m != original
        })
        .await;
    let refused = submit(
        &app,
        reply(
            "mary@example.com",
            &expense_mail,
            "delegate bob@example.com",
            "<r3@x>",
        ),
    )
    .await;
    assert_eq!(
        refused.verdict,
        pb::Verdict::NoDecision as i32,
        "{refused:?}"
    );
    assert!(
        refused.reason.contains("allowDelegate"),
        "{}",
        refused.reason
    );
    assert_eq!(app.task(&expense_task.id).await.assignee, "mary");
    app.stop().await;
}

/// A delivery status notification (RFC 3464) for the mail with `message_id`, as Postfix writes
/// one.
fn dsn(message_id: &str, recipient: &str, diagnostic: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.replyflow.test (Mail Delivery System)\r\n\
         To: approvals@replyflow.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <dsn.{recipient}@mx.replyflow.test>\r\nAuto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
         --B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
         --B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.replyflow.test\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; {diagnostic}\r\n\r\n\
         --B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: approvals@replyflow.test\r\n\
         To: {recipient}\r\nMessage-ID: {message_id}\r\nSubject: approval\r\n\r\n--B--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn a_bounce_marks_the_approval_mail_failed_and_is_never_answered() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    let original = approval_mail(&app).await;
    let message_id = header(&original, "Message-ID").to_string();
    // The file transport has written it: the outbox row is sent.
    let approval = app
        .wait_for_delivery(&task.id, pb::DeliveryStatus::Sent, Duration::from_secs(10))
        .await;
    assert_eq!(approval.delivery_status, pb::DeliveryStatus::Sent as i32);

    let bounce = submit(
        &app,
        dsn(&message_id, "mary@example.com", "550 5.1.1 User unknown"),
    )
    .await;
    assert_eq!(bounce.verdict, pb::Verdict::Bounce as i32, "{bounce:?}");
    assert!(!bounce.answered, "a bounce is never answered");
    assert_eq!(bounce.task_id, task.id, "the log row names the task");
    let bare = message_id.trim_matches(['<', '>']);
    assert!(
        bounce.reason.contains(bare) && bounce.reason.contains("550 5.1.1 User unknown"),
        "{}",
        bounce.reason
    );
    let failed = app.approval(&task.id).await;
    assert_eq!(
        failed.delivery_status,
        pb::DeliveryStatus::PermFailed as i32,
        "{failed:?}"
    );
    assert!(
        failed.last_error.contains("550 5.1.1 User unknown"),
        "{}",
        failed.last_error
    );
    // The task itself is untouched: the approver can still decide in the system.
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    // The same report again is a copy; one about a mail that is not ours marks nothing.
    let again = submit(
        &app,
        dsn(&message_id, "mary@example.com", "550 5.1.1 User unknown"),
    )
    .await;
    assert_eq!(again.verdict, pb::Verdict::Duplicate as i32, "{again:?}");
    let foreign = submit(
        &app,
        dsn(
            "<someone-else@elsewhere.test>",
            "x@elsewhere.test",
            "550 no",
        ),
    )
    .await;
    assert_eq!(foreign.verdict, pb::Verdict::Bounce as i32);
    assert!(
        foreign.reason.contains("not a sent mail of ours"),
        "{}",
        foreign.reason
    );
    // No answer went to MAILER-DAEMON.
    let answers = std::fs::read_dir(app.outbox_dir.path())
        .expect("outbox dir")
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|m| m.to_lowercase().contains("to: mailer-daemon"))
        .count();
    assert_eq!(answers, 0);
    app.stop().await;
}

/// `reply` with an Authentication-Results header added on top, as the receiving MTA adds it.
fn with_auth_results(raw: Vec<u8>, value: &str) -> Vec<u8> {
    let mut out = format!("Authentication-Results: {value}\r\n").into_bytes();
    out.extend(raw);
    out
}

#[tokio::test]
async fn with_require_auth_only_a_reply_our_mta_vouches_for_decides() {
    let app = spawn_app_with(|s| {
        s.mail.authserv_id = Some("mx.replyflow.test".into());
        s.mail.require_auth = "dkim".into();
    })
    .await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    let original = approval_mail(&app).await;

    let unsigned = submit(&app, reply("mary@example.com", &original, "同意", "<a1@x>")).await;
    assert_eq!(
        unsigned.verdict,
        pb::Verdict::AuthFailed as i32,
        "{unsigned:?}"
    );
    assert!(unsigned.answered, "told politely");
    assert!(
        text_of(&app.answer_to("<a1@x>").await).contains("could not be verified"),
        "the answer says why"
    );
    // Anyone can write the header: one from another authserv-id is not trusted.
    let forged = submit(
        &app,
        with_auth_results(
            reply("mary@example.com", &original, "同意", "<a2@x>"),
            "mx.evil.test; dkim=pass header.d=example.com; dmarc=pass",
        ),
    )
    .await;
    assert_eq!(forged.verdict, pb::Verdict::AuthFailed as i32, "{forged:?}");
    let failing = submit(
        &app,
        with_auth_results(
            reply("mary@example.com", &original, "同意", "<a3@x>"),
            "mx.replyflow.test; dkim=fail header.d=example.com",
        ),
    )
    .await;
    assert_eq!(failing.verdict, pb::Verdict::AuthFailed as i32);
    assert!(failing.reason.contains("dkim=fail"), "{}", failing.reason);
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    assert_eq!(
        app.approval(&task.id).await.status,
        pb::ApprovalStatus::Pending as i32,
        "nothing used the token"
    );

    let vouched = submit(
        &app,
        with_auth_results(
            reply("mary@example.com", &original, "同意", "<a4@x>"),
            "mx.replyflow.test; dkim=pass (2048-bit key) header.d=example.com header.s=s1",
        ),
    )
    .await;
    assert_eq!(vouched.verdict, pb::Verdict::Applied as i32, "{vouched:?}");
    assert_eq!(app.task(&task.id).await.outcome, "approve");
    app.stop().await;
}

#[tokio::test]
async fn inbound_authentication_settings_are_checked_at_start() {
    use replyflow::{app::Application, clock::SystemClock, config::Settings};
    // The keys are parsed where the inbound edge is built: a bad pair stops the start (before
    // the database is opened), naming the key.
    let start = |pairs: &[(&str, &str)]| {
        let settings = Settings::load_from(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain([(
                    "REPLYFLOW_DATABASE_URL".to_string(),
                    "sqlite:/nonexistent-dir/never.db".to_string(),
                )])
                .collect::<Vec<_>>(),
        )
        .expect("settings load");
        async move {
            Application::build(&settings, std::sync::Arc::new(SystemClock))
                .await
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        }
    };
    let e = start(&[("REPLYFLOW_MAIL_REQUIRE_AUTH", "spf")]).await;
    assert!(e.contains("mail.require_auth"), "{e}");
    let e = start(&[("REPLYFLOW_MAIL_REQUIRE_AUTH", "dmarc")]).await;
    assert!(e.contains("mail.authserv_id"), "{e}");
    // A valid pair passes that check: the start then fails only at the database.
    let e = start(&[
        ("REPLYFLOW_MAIL_REQUIRE_AUTH", "dmarc"),
        ("REPLYFLOW_MAIL_AUTHSERV_ID", "mx.example.com"),
    ])
    .await;
    assert!(
        !e.contains("mail.require_auth") && !e.contains("mail.authserv_id"),
        "{e}"
    );
    assert!(!e.is_empty(), "the start fails at the database");
}

/// A mail whose ingestion fails with an error (not a verdict): here a database trigger refuses
/// its log row, after its claims and its decision were written.
async fn refuse_inbound_rows_mentioning_boom(app: &TestApp) {
    let pool = app.store().await.pool().clone();
    let statements: &[&'static str] = if crate::helpers::backend() == "postgres" {
        &[
            "CREATE FUNCTION rf_test_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.message_id LIKE '%boom%' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER rf_test_boom BEFORE INSERT ON inbound_emails \
             FOR EACH ROW EXECUTE FUNCTION rf_test_boom()",
        ]
    } else {
        &[
            "CREATE TRIGGER rf_test_boom BEFORE INSERT ON inbound_emails \
           WHEN NEW.message_id LIKE '%boom%' BEGIN SELECT RAISE(ABORT, 'boom'); END",
        ]
    };
    for statement in statements {
        sqlx::query::<sqlx::Any>(*statement)
            .execute(&pool)
            .await
            .expect("creating the test trigger");
    }
}

#[tokio::test]
async fn a_batch_of_replies_is_judged_in_order_and_a_failing_one_is_undone_alone() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.add_user("ann", "").await;
    app.deploy_xml(DELEGABLE).await.expect("deploy");
    let marys = app.start("purchase", json!({"manager": "mary"})).await;
    let anns = app.start("purchase", json!({"manager": "ann"})).await;
    let (marys_task, anns_task) = (&marys.open_tasks[0], &anns.open_tasks[0]);
    let to_mary = app.approval_mail_to("mary@example.com").await;
    let to_ann = app.approval_mail_to("ann@example.com").await;
    refuse_inbound_rows_mentioning_boom(&app).await;

    let approve = reply("mary@example.com", &to_mary, "同意", "<b1@x>");
    let second_thoughts = reply("mary@example.com", &to_mary, "驳回", "<b2@x>");
    let failing = reply("ann@example.com", &to_ann, "同意", "<boom@x>");
    let stray =
        b"From: bob@example.com\r\nSubject: hello\r\nMessage-ID: <b3@x>\r\n\r\nhi\r\n".to_vec();
    let batch: Vec<ReceivedMail<'_>> = [&approve, &second_thoughts, &approve, &failing, &stray]
        .into_iter()
        .map(|raw| ReceivedMail {
            raw,
            delivered_to: None,
            transport: "rpc",
        })
        .collect();
    let results = app.server_workflow.ingest_batch(&batch).await;

    let verdicts: Vec<Option<Verdict>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|m| m.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            Some(Verdict::Applied),
            // The same transaction, yet judged after the first reply's effect: its one use is
            // spent and the task is decided.
            Some(Verdict::AlreadyUsed),
            Some(Verdict::Duplicate),
            None,
            Some(Verdict::UnknownToken),
        ],
        "{results:?}"
    );
    let error = format!("{:#}", results[3].as_ref().expect_err("the failing mail"));
    assert!(error.contains("boom"), "{error}");
    let decided = app.task(&marys_task.id).await;
    assert_eq!(
        (decided.status, decided.outcome.as_str()),
        (pb::TaskStatus::Completed as i32, "approve")
    );
    // The failing mail left nothing: its task is open, it has no log row, its claims are gone.
    assert_eq!(
        app.task(&anns_task.id).await.status,
        pb::TaskStatus::Open as i32
    );
    let store = app.store().await;
    let log = store
        .list_inbound(
            &InboundFilter::default(),
            &PageRequest::new(100, String::new()).expect("page"),
        )
        .await
        .expect("inbound log");
    assert_eq!(log.items.len(), 4, "{:?}", log.items);
    assert!(log.items.iter().all(|m| !m.message_id.contains("boom")));
    assert_eq!(
        log.items
            .iter()
            .filter(|m| m.verdict == Verdict::Applied)
            .count(),
        1
    );

    // Read again once the database accepts it: applied, not a duplicate of itself.
    sqlx::query::<sqlx::Any>("DROP TRIGGER rf_test_boom ON inbound_emails")
        .execute(store.pool())
        .await
        .or(sqlx::query::<sqlx::Any>("DROP TRIGGER rf_test_boom")
            .execute(store.pool())
            .await)
        .expect("dropping the test trigger");
    let again = app
        .server_workflow
        .ingest(&failing, None, "rpc")
        .await
        .expect("ingested");
    assert_eq!(again.verdict, Verdict::Applied, "{again:?}");
    assert_eq!(
        app.task(&anns_task.id).await.status,
        pb::TaskStatus::Completed as i32
    );
}

/// Two fuzz findings (fuzz/regressions/inbound/): a reply whose body is a multipart holding a
/// message/rfc822 that holds another, empty, one (mail-parser's own debug assertion fired), and
/// one whose quoted-printable part is a lone soft line break (an arithmetic overflow). In a debug
/// build (tests, CI, `cargo run`) SubmitInboundEmail panicked while reading either. Now each is
/// read like any mail without text: a verdict, nothing decided, and the approver's real answer
/// after them still applies.
#[tokio::test]
async fn replies_with_malformed_mime_parts_get_a_verdict_not_a_panic() {
    let app = spawn_app().await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let task = instance.open_tasks[0].clone();
    let original = approval_mail(&app).await;

    let plain = reply("mary@example.com", &original, "同意", "<nested@x>");
    let plain = String::from_utf8(plain).expect("UTF-8");
    let head = plain.split("Content-Type:").next().expect("headers");
    let finding = format!(
        "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n\r\n--b--\r\n"
    );
    let judged = submit(&app, finding.into_bytes()).await;
    assert_ne!(judged.verdict, pb::Verdict::Applied as i32, "{judged:?}");
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);
    // The second finding: a quoted-printable part that is just a soft line break (mail-parser
    // subtracted below zero on it).
    let soft_break = format!(
        "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n=\r\n--b--\r\n"
    )
    .replace("<nested@x>", "<soft@x>");
    let judged = submit(&app, soft_break.into_bytes()).await;
    assert_ne!(judged.verdict, pb::Verdict::Applied as i32, "{judged:?}");
    assert_eq!(app.task(&task.id).await.status, pb::TaskStatus::Open as i32);

    let applied = submit(
        &app,
        reply("mary@example.com", &original, "同意", "<after@x>"),
    )
    .await;
    assert_eq!(applied.verdict, pb::Verdict::Applied as i32, "{applied:?}");
    app.stop().await;
}

/// The answer budgets hold inside one batch too (they are counted once per transaction, then in
/// memory): mary's vague replies are answered until her hourly budget is spent, and the answer of
/// a reply that failed and was undone is not counted against her.
#[tokio::test]
async fn in_one_batch_a_senders_answers_stop_at_her_budget_and_an_undone_answer_does_not_count() {
    let app = spawn_app_with(|s| s.mail.answers_per_sender_per_hour = 2).await;
    app.add_user("mary", "").await;
    app.deploy_example("expense.bpmn").await;
    let instance = app.start("expense", expense_vars(20000)).await;
    let original = approval_mail(&app).await;
    refuse_inbound_rows_mentioning_boom(&app).await;

    let vague = |id: &str| reply("mary@example.com", &original, "let me think", id);
    let mails = [
        vague("<v1@x>"),
        vague("<boom@x>"),
        vague("<v2@x>"),
        vague("<v3@x>"),
    ];
    let batch: Vec<ReceivedMail<'_>> = mails
        .iter()
        .map(|raw| ReceivedMail {
            raw,
            delivered_to: None,
            transport: "rpc",
        })
        .collect();
    let results = app.server_workflow.ingest_batch(&batch).await;

    let answered: Vec<Option<(Verdict, bool)>> = results
        .iter()
        .map(|r| r.as_ref().ok().map(|m| (m.verdict, m.answered)))
        .collect();
    assert_eq!(
        answered,
        [
            Some((Verdict::NoDecision, true)),
            None,
            Some((Verdict::NoDecision, true)),
            Some((Verdict::NoDecision, false)),
        ],
        "{results:?}"
    );
    // And the next batch reads the budget as the first one left it.
    let later = app
        .server_workflow
        .ingest(&vague("<v4@x>"), None, "rpc")
        .await
        .expect("ingested");
    assert_eq!(
        (later.verdict, later.answered),
        (Verdict::NoDecision, false)
    );
    assert_eq!(
        app.instance(&instance.id).await.open_tasks[0].activity_id,
        "manager_approval"
    );
    app.stop().await;
}
