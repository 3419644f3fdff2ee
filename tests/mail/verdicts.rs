//! Replies that must NOT decide, over the real stack (issue 4, "Round trips"): the approval mail
//! goes out through Postfix, the reply (or robot mail) comes back through Postfix to the reply
//! box, and the IMAP reader (IMAPS, IDLE) judges it. Each test checks the verdict in
//! ListInboundEmails, that the task is untouched, and the polite answer in the sender's Dovecot
//! mailbox — or, for robots, its deliberate absence (proven against a control reply whose answer
//! does arrive).
use std::{path::Path, sync::Arc};

use replyflow::{
    clock::{Clock, ManualClock},
    proto::pb,
};
use serde_json::{Value, json};

use crate::{
    helpers::{
        ApprovalMail, TestApp, approvals_inbox, eventually, gmail_reply, mail_env, millis,
        postfix_exclusive, postfix_shared, real_now, req, send_via_postfix, spawn_mail_app,
        spawn_mail_app_at, start_expense, unique, wait_for_empty_postfix_queue,
    },
    imap::{count_header, wait_for_header, wait_for_message_id},
    inbound::{DEADLINE, PROCESSED, Running, count_in_folder, imap_worker, inbound_log, setup},
};

/// Every row of the inbound log (this test's database holds only this test's mail).
async fn whole_log(app: &TestApp) -> Vec<pb::InboundEmail> {
    inbound_log(app, "").await
}

/// Waits until the inbound log holds the mail `message_id` (angle brackets optional); returns
/// its row, after checking it is tied to `task_id` (empty: to no task, as robots' mail is).
pub(crate) async fn wait_for_verdict(
    app: &TestApp,
    task_id: &str,
    message_id: &str,
) -> pb::InboundEmail {
    let id = message_id.trim_matches(['<', '>']);
    eventually(DEADLINE, async || {
        let log = whole_log(app).await;
        match log.iter().find(|m| m.message_id == id) {
            Some(row) => {
                assert_eq!(row.task_id, task_id, "{row:?}");
                Ok(row.clone())
            }
            None => Err(format!("no verdict for {id}: {log:?}")),
        }
    })
    .await
}

/// The polite answer to `reply_id` in `user`'s INBOX (threaded under it), its text.
pub(crate) async fn answer_to(user: &str, reply_id: &str) -> String {
    let id = reply_id.trim_matches(['<', '>']);
    let raw = wait_for_header(user, "In-Reply-To", id, DEADLINE).await;
    let mail = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("the answer parses");
    assert_eq!(
        mail.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied"),
        "answers are marked as automatic"
    );
    mail.body_text(0).expect("a text body").into_owned()
}

/// How many mails in `user`'s INBOX answer `reply_id`.
async fn answers_to(user: &str, reply_id: &str) -> usize {
    count_header(
        user,
        "INBOX",
        "In-Reply-To",
        reply_id.trim_matches(['<', '>']),
    )
    .await
}

/// Starts `key` with `variables` as fred; the instance's open tasks.
pub(crate) async fn start(app: &TestApp, key: &str, variables: Value) -> Vec<pb::Task> {
    app.start_as(key, "fred", variables).await.open_tasks
}

/// The approval mail as delivered to `user` (through Postfix into Dovecot).
pub(crate) async fn delivered_approval(app: &TestApp, user: &str, task_id: &str) -> ApprovalMail {
    let approval = app.approval(task_id).await;
    let copies = wait_for_message_id(user, &approval.message_id, DEADLINE).await;
    ApprovalMail::parse(&copies[0])
}

fn open(task: &pb::Task) -> bool {
    task.status == pb::TaskStatus::Open as i32 && task.outcome.is_empty()
}

#[tokio::test]
async fn a_forged_sender_is_refused_and_told_so_and_the_task_stays_open() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let app = spawn_mail_app().await;
    setup(&app).await;
    let task = start_expense(&app, "mary").await;
    let original = delivered_approval(&app, "mary", &task.id).await;
    let reader = Running::start(&app, imap_worker(&app));

    // outsider, a colleague in the directory, got hold of mary's approval mail and answers it
    // from their own address. (Senders who are not registered users get no answer at all.)
    let outsider = env.address("outsider");
    app.add_user_with("outsider", &outsider, "zh-CN").await;
    let (reply_id, raw) = gmail_reply("Mallory", &outsider, &original, "同意", "");
    send_via_postfix(&outsider, &original.reply_to, &raw).await;

    let row = wait_for_verdict(&app, &task.id, &reply_id).await;
    assert_eq!(row.verdict, pb::Verdict::SenderMismatch as i32, "{row:?}");
    assert!(row.reason.contains(&outsider), "{row:?}");
    assert!(row.answered, "{row:?}");
    let text = answer_to("outsider", &reply_id).await;
    assert!(
        text.contains("Only the approver") || text.contains("只能由审批人本人"),
        "{text}"
    );
    assert!(open(&app.task(&task.id).await));
    assert_eq!(
        app.approval(&task.id).await.status,
        pb::ApprovalStatus::Pending as i32,
        "the token is still mary's to use"
    );
    reader.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_reply_with_a_new_message_id_is_already_used() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let mary = env.address("mary");
    let app = spawn_mail_app().await;
    setup(&app).await;
    let task = start_expense(&app, "mary").await;
    let original = delivered_approval(&app, "mary", &task.id).await;
    let reader = Running::start(&app, imap_worker(&app));

    let (first_id, first) = gmail_reply("玛丽", &mary, &original, "同意", "");
    send_via_postfix(&mary, &original.reply_to, &first).await;
    let decided = app.wait_until_decided(&task.id, DEADLINE).await;
    assert_eq!(decided.outcome, "approve");
    let text = answer_to("mary", &first_id).await;
    assert!(text.contains("您的审批已记录"), "{text}");

    // The same reply sent again under a new Message-ID (so not a copy by id or content hash).
    let replay_id = format!("<{}@mail.gmail.com>", unique("replay"));
    let replay = String::from_utf8(first)
        .expect("ASCII")
        .replace(&first_id, &replay_id)
        .into_bytes();
    send_via_postfix(&mary, &original.reply_to, &replay).await;
    let row = wait_for_verdict(&app, &task.id, &replay_id).await;
    assert_eq!(row.verdict, pb::Verdict::AlreadyUsed as i32, "{row:?}");
    assert!(row.reason.contains("already handled by mary"), "{row:?}");
    let text = answer_to("mary", &replay_id).await;
    assert!(text.contains("这项审批已经处理过了"), "{text}");
    assert!(text.contains("already handled by mary"), "{text}");

    let log = inbound_log(&app, &task.id).await;
    let applied = log
        .iter()
        .filter(|m| m.verdict == pb::Verdict::Applied as i32)
        .count();
    assert_eq!(applied, 1, "{log:?}");
    let after = app.task(&task.id).await;
    assert_eq!(
        (after.completed_at, after.outcome.as_str()),
        (decided.completed_at, "approve")
    );
    reader.stop().await;
    app.stop().await;
}

const SHORT_LIVED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:replyflow="https://replyflow.dev/schema/1"
                  id="short_lived_definitions" targetNamespace="https://replyflow.dev/tests">
  <bpmn:process id="short_lived" name="限时审批" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="to_task" sourceRef="start" targetRef="quick_approval"/>
    <bpmn:userTask id="quick_approval" name="一分钟内审批" replyflow:assignee="${manager}"
                   replyflow:validFor="PT1M"/>
    <bpmn:sequenceFlow id="to_end" sourceRef="quick_approval" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#;

#[tokio::test]
async fn a_reply_after_the_validity_is_expired_and_decides_nothing() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let mary = env.address("mary");
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_mail_app_at(clock.clone()).await;
    setup(&app).await;
    app.deploy_xml(SHORT_LIVED).await.expect("deploy");
    let tasks = start(&app, "short_lived", json!({"manager": "mary"})).await;
    let task = &tasks[0];
    let original = delivered_approval(&app, "mary", &task.id).await;
    let approval = app.approval(&task.id).await;
    let until_ms = millis(approval.valid_until);
    assert_eq!(until_ms - clock.now(), 60_000, "PT1M: {approval:?}");
    clock.advance(60_001);

    let reader = Running::start(&app, imap_worker(&app));
    let (reply_id, raw) = gmail_reply("玛丽", &mary, &original, "同意", "");
    send_via_postfix(&mary, &original.reply_to, &raw).await;
    let row = wait_for_verdict(&app, &task.id, &reply_id).await;
    assert_eq!(row.verdict, pb::Verdict::Expired as i32, "{row:?}");
    let text = answer_to("mary", &reply_id).await;
    assert!(text.contains("这封审批邮件已经过期"), "{text}");
    assert!(open(&app.task(&task.id).await));
    reader.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_reply_to_a_task_withdrawn_by_the_deferred_choice_decides_nothing() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let mary = env.address("mary");
    let app = spawn_mail_app().await;
    setup(&app).await;
    app.add_user_with("carol", &env.address("carol"), "zh-CN")
        .await;
    let xml =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/deferred_choice.bpmn"))
            .expect("examples/deferred_choice.bpmn");
    app.deploy_xml(&String::from_utf8(xml).expect("UTF-8"))
        .await
        .expect("deploy");
    let tasks = start(
        &app,
        "leave_request",
        json!({"manager": "mary", "deputy": "carol", "days": 3, "reason": "家事"}),
    )
    .await;
    let by = |who: &str| {
        tasks
            .iter()
            .find(|t| t.assignee == who)
            .unwrap_or_else(|| panic!("a task for {who}: {tasks:?}"))
            .clone()
    };
    let (marys, carols) = (by("mary"), by("carol"));
    let original = delivered_approval(&app, "mary", &marys.id).await;

    // carol decides first; mary's task is withdrawn.
    app.tasks()
        .complete_task(req(
            pb::CompleteTaskRequest {
                task_id: carols.id.clone(),
                outcome: "approve".into(),
                comment: "我来批".into(),
                ..Default::default()
            },
            "carol",
        ))
        .await
        .expect("carol completes her task");
    assert_eq!(
        app.task(&marys.id).await.status,
        pb::TaskStatus::Withdrawn as i32
    );

    let reader = Running::start(&app, imap_worker(&app));
    let (reply_id, raw) = gmail_reply("玛丽", &mary, &original, "驳回，天数太多", "");
    send_via_postfix(&mary, &original.reply_to, &raw).await;
    let row = wait_for_verdict(&app, &marys.id, &reply_id).await;
    // The withdrawn task also revoked its approval context; the approver is told what became
    // of the task, not merely that the mail was withdrawn.
    assert_eq!(row.verdict, pb::Verdict::TaskClosed as i32, "{row:?}");
    assert!(row.reason.contains("withdrawn"), "{row:?}");
    let text = answer_to("mary", &reply_id).await;
    assert!(text.contains("这项审批已经处理过了"), "{text}");
    let after = app.task(&marys.id).await;
    assert_eq!(after.status, pb::TaskStatus::Withdrawn as i32, "{after:?}");
    assert!(after.outcome.is_empty(), "{after:?}");
    reader.stop().await;
    app.stop().await;
}

/// mary's vacation responder answers the approval mail (Sieve-style: to the envelope sender,
/// Auto-Submitted: auto-replied, "自动回复"); a control reply after it, whose help answer does
/// arrive, proves the silence is deliberate and not slowness.
#[tokio::test]
async fn an_out_of_office_reply_is_logged_and_never_answered() {
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let mary = env.address("mary");
    let app = spawn_mail_app().await;
    setup(&app).await;
    let task = start_expense(&app, "mary").await;
    let original = delivered_approval(&app, "mary", &task.id).await;
    let reader = Running::start(&app, imap_worker(&app));

    let ooo_id = format!("<{}@replyflow.test>", unique("vacation"));
    let ooo = format!(
        "From: =?UTF-8?B?546b5Li9?= <{mary}>\r\nTo: {to}\r\nSubject: =?UTF-8?B?{subject}?=\r\n\
         Message-ID: {ooo_id}\r\nIn-Reply-To: <{orig}>\r\nReferences: <{orig}>\r\n\
         Date: Sat, 21 Nov 2026 23:41:00 +0800\r\nAuto-Submitted: auto-replied (vacation)\r\n\
         Precedence: bulk\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n我正在休假，11月30日返回。急事请联系 fred。\r\n",
        to = env.address("approvals"),
        orig = original.message_id,
        subject =
            data_encoding::BASE64.encode(format!("自动回复: {}", original.subject).as_bytes()),
    );
    send_via_postfix(&mary, &env.address("approvals"), ooo.as_bytes()).await;
    let row = wait_for_verdict(&app, "", &ooo_id).await;
    assert_eq!(row.verdict, pb::Verdict::AutoReply as i32, "{row:?}");
    assert!(!row.answered, "{row:?}");

    // The control: a reply without a decision gets its help answer.
    let (control_id, control) = gmail_reply("玛丽", &mary, &original, "我需要再看看附件", "");
    send_via_postfix(&mary, &original.reply_to, &control).await;
    let row = wait_for_verdict(&app, &task.id, &control_id).await;
    assert_eq!(row.verdict, pb::Verdict::NoDecision as i32, "{row:?}");
    let text = answer_to("mary", &control_id).await;
    assert!(text.contains("这项审批仍在等待您处理"), "{text}");
    wait_for_empty_postfix_queue().await;
    assert_eq!(answers_to("mary", &ooo_id).await, 0, "no answer to a robot");
    assert!(open(&app.task(&task.id).await));
    reader.stop().await;
    app.stop().await;
}

/// A mailbox Postfix accepts mail for but Dovecot does not know: Postfix queues the approval
/// mail, Dovecot's LMTP refuses it at delivery, and Postfix's own DSN goes back to the envelope
/// sender — the reply box. The stack (scripts/lib/mailstack.sh) has no such address, so the
/// first test that needs it adds it to Postfix's table and reloads Postfix, alone.
async fn ensure_postfix_only_mailbox() -> String {
    let env = mail_env();
    let ghost = env.address("ghost");
    let _alone = postfix_exclusive().await;
    let table = env.postfix_dir.join("virtual_mailboxes");
    let text = std::fs::read_to_string(&table).expect("Postfix's virtual_mailboxes");
    if text.lines().any(|l| l.starts_with(&format!("{ghost} "))) {
        return ghost;
    }
    std::fs::write(&table, format!("{text}{ghost} OK\n")).expect("writing virtual_mailboxes");
    let out = std::process::Command::new("/usr/sbin/postfix")
        .arg("-c")
        .arg(&env.postfix_dir)
        .arg("reload")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("postfix reload");
    assert!(
        out.status.success(),
        "postfix reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Until every smtpd has the new table, RCPT TO:<ghost> may still be refused: probe (the
    // probe's own DSN goes to outsider, not to the reply box).
    let outsider = env.address("outsider");
    eventually(DEADLINE, async || {
        let probe = crate::helpers::message(
            &outsider,
            &ghost,
            &format!("<{}@{}>", unique("probe"), env.domain),
            "probe",
            "probe",
        );
        try_send(&outsider, &ghost, &probe)
            .await
            .map_err(|e| format!("Postfix does not accept {ghost} yet: {e}"))
    })
    .await;
    ghost
}

async fn try_send(from: &str, to: &str, raw: &[u8]) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};
    let env = mail_env();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(env.smtp_host.clone())
        .port(env.smtp_port)
        .build();
    let envelope = Envelope::new(
        Some(from.parse().map_err(|e| format!("{e}"))?),
        vec![to.parse().map_err(|e| format!("{e}"))?],
    )
    .map_err(|e| e.to_string())?;
    transport
        .send_raw(&envelope, raw)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn postfixs_bounce_of_an_approval_mail_is_a_bounce_never_answered() {
    let ghost = ensure_postfix_only_mailbox().await;
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let app = spawn_mail_app().await;
    setup(&app).await;
    app.add_user_with("ghost", &ghost, "zh-CN").await;
    let reader = Running::start(&app, imap_worker(&app));
    let tasks = start(
        &app,
        "expense",
        json!({"manager": "ghost", "finance": "fred", "amount": 20000, "reason": "bounce"}),
    )
    .await;
    let task = &tasks[0];
    let approval_mail = app.queued_approval_mail(&task.id).await;
    assert_eq!(approval_mail.reply_to.split('+').next(), Some("approvals"));

    // The DSN comes from Postfix's MAILER-DAEMON and names the approval mail.
    let bounce = eventually(DEADLINE, async || {
        let rows: Vec<pb::InboundEmail> = app
            .approvals()
            .list_inbound_emails(req(
                pb::ListInboundEmailsRequest {
                    verdict: pb::Verdict::Bounce as i32,
                    page_size: 100,
                    ..Default::default()
                },
                "admin",
            ))
            .await
            .expect("ListInboundEmails")
            .into_inner()
            .emails;
        match rows.into_iter().next() {
            Some(row) => Ok(row),
            None => Err(format!(
                "no bounce recorded; approval {:?}",
                app.approval(&task.id).await
            )),
        }
    })
    .await;
    assert!(bounce.sender.starts_with("mailer-daemon@"), "{bounce:?}");
    // `answered` is set in the transaction that queues an answer: none was queued.
    assert!(!bounce.answered, "{bounce:?}");
    assert_eq!(
        bounce.task_id, task.id,
        "the DSN is tied to the bounced mail: {bounce:?}"
    );
    let approval = app.approval(&task.id).await;
    assert_eq!(
        approval.delivery_status,
        pb::DeliveryStatus::PermFailed as i32,
        "{approval:?}"
    );
    assert!(open(&app.task(&task.id).await));
    reader.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_mail_that_keeps_failing_over_imap_is_quarantined_and_never_holds_up_the_reply_behind_it()
{
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let mary = env.address("mary");
    let app = spawn_mail_app().await;
    setup(&app).await;
    let task = start_expense(&app, "mary").await;
    let original = delivered_approval(&app, "mary", &task.id).await;
    app.poison_subjects("POISON").await;

    let (poison_id, raw) = gmail_reply("玛丽", &mary, &original, "同意", "");
    let poisoned =
        String::from_utf8(raw)
            .expect("ASCII")
            .replacen("\r\nSubject: ", "\r\nSubject: POISON ", 1);
    send_via_postfix(&mary, &original.reply_to, poisoned.as_bytes()).await;
    wait_for_message_id("approvals", &poison_id, DEADLINE).await;
    let (reply_id, raw) = gmail_reply("玛丽", &mary, &original, "同意", "");
    send_via_postfix(&mary, &original.reply_to, &raw).await;
    wait_for_message_id("approvals", &reply_id, DEADLINE).await;

    // Passes as the IDLE loop runs them: the reply behind the failing mail decides in the
    // first; the failing one stays in INBOX until its third failure quarantines it.
    let worker = imap_worker(&app);
    worker.run_once().await.expect("pass 1");
    assert_eq!(app.task(&task.id).await.outcome, "approve", "not held up");
    assert_eq!(count_in_folder("INBOX", &poison_id).await, 1);
    worker.run_once().await.expect("pass 2");
    assert_eq!(count_in_folder("INBOX", &poison_id).await, 1);
    worker.run_once().await.expect("pass 3");
    assert_eq!(count_in_folder("INBOX", &poison_id).await, 0);
    assert_eq!(count_in_folder(PROCESSED, &poison_id).await, 1);
    let quarantined: Vec<_> = whole_log(&app)
        .await
        .into_iter()
        .filter(|m| m.verdict == pb::Verdict::Quarantined as i32)
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert!(!quarantined[0].answered);
    app.stop().await;
}
