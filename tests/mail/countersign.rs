//! A 会签 decided by mail over the real stack (DESIGN §11, issue 11 item 3): each signer gets their
//! own approval mail through Postfix, naming the mode and the other signers; each reply is that
//! signer's vote; a reject decides the step, withdraws the last signer's task, revokes their
//! token, drops their mail still waiting in the outbox, and their late reply is told the task is
//! closed.
use std::{collections::HashSet, sync::Arc, time::Duration};

use replyflow::{
    api::convert,
    clock::ManualClock,
    model::{OutboxKind, OutboxStatus},
    proto::pb,
    workers::outbox::RetryPolicy,
};
use serde_json::{Value, json};

use crate::{
    helpers::{
        TestApp, approvals_inbox, gmail_reply, mail_env, postfix_exclusive, real_now, req,
        send_via_postfix, spawn_mail_app_at, stop_postfix, wait_for_empty_postfix_queue,
    },
    imap::count_message_id,
    inbound::{DEADLINE, Running, imap_worker},
    verdicts::{answer_to, delivered_approval, start, wait_for_verdict},
};

const COUNTERSIGN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
                  xmlns:replyflow="https://replyflow.dev/schema/1"
                  id="countersign_definitions" targetNamespace="https://replyflow.dev/tests">
  <bpmn:process id="budget_countersign" name="预算会签" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="to_sign" sourceRef="start" targetRef="sign"/>
    <bpmn:userTask id="sign" name="部门会签" replyflow:assignee="${signer}">
      <bpmn:multiInstanceLoopCharacteristics isSequential="false"
          replyflow:collection="signers" replyflow:elementVariable="signer"
          replyflow:signMode="all"/>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="to_end" sourceRef="sign" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"#;

/// The signers, their display names, in signing order.
const SIGNERS: [(&str, &str); 3] = [("mary", "马丽"), ("carol", "陈可"), ("outsider", "欧阳明")];

async fn add_named_user(app: &TestApp, id: &str, name: &str) {
    let user = pb::User {
        id: id.into(),
        display_name: name.into(),
        email: mail_env().address(id),
        locale: "zh-CN".into(),
        ..Default::default()
    };
    app.directory()
        .upsert_user(req(pb::UpsertUserRequest { user: Some(user) }, "admin"))
        .await
        .expect("upsert user");
}

async fn instance(app: &TestApp, id: &str) -> pb::ProcessInstance {
    app.workflow()
        .get_process_instance(req(
            pb::GetProcessInstanceRequest { id: id.into() },
            "admin",
        ))
        .await
        .expect("GetProcessInstance")
        .into_inner()
}

/// The outbox rows of the task's approval context, oldest first.
async fn mail_rows(app: &TestApp, task_id: &str) -> Vec<replyflow::model::OutboxMail> {
    let context = app.approval(task_id).await;
    let store = app.store().await;
    let rows = store
        .mail_for_context(&context.id)
        .await
        .expect("the outbox");
    store.close().await;
    rows
}

#[tokio::test]
async fn a_countersign_by_mail_each_signer_votes_with_their_own_token_and_a_reject_withdraws_the_rest()
 {
    // Alone: Postfix is stopped for a moment, so that a mail to the last signer waits in the
    // outbox while the others decide.
    let _postfix = postfix_exclusive().await;
    let _inbox = approvals_inbox().await;
    let env = mail_env();
    let clock = Arc::new(ManualClock::new(real_now()));
    let app = spawn_mail_app_at(clock.clone()).await;
    for (id, name) in SIGNERS {
        add_named_user(&app, id, name).await;
    }
    add_named_user(&app, "fred", "付磊").await;
    app.deploy_xml(COUNTERSIGN).await.expect("deploy");
    let ids: Vec<&str> = SIGNERS.iter().map(|(id, _)| *id).collect();
    let tasks = start(&app, "budget_countersign", json!({ "signers": ids })).await;
    let task_of = |user: &str| {
        tasks
            .iter()
            .find(|t| t.assignee == user)
            .unwrap_or_else(|| panic!("a task for {user}: {tasks:?}"))
            .clone()
    };
    let (marys, carols, outsiders) = (task_of("mary"), task_of("carol"), task_of("outsider"));
    let instance_id = marys.process_instance_id.clone();

    // Each signer's own mail in their own mailbox, with their own reply token, telling them the
    // mode and who else signs — by name, never by address.
    let mut reply_addresses = HashSet::new();
    let mut originals = Vec::new();
    for (position, (id, _)) in SIGNERS.iter().enumerate() {
        let mail = delivered_approval(&app, id, &task_of(id).id).await;
        let line = format!(
            "审批方式：会签（全部同意才通过）· 您是第 {} 位，共 3 位：马丽、陈可、欧阳明",
            position + 1
        );
        assert!(mail.text.contains(&line), "{id}: {}", mail.text);
        for (other, _) in SIGNERS {
            assert!(
                !mail.text.contains(&env.address(other)),
                "{id}'s mail shows {other}'s address: {}",
                mail.text
            );
        }
        assert!(reply_addresses.insert(mail.reply_to.clone()), "{mail:?}");
        originals.push(mail);
    }
    let (marys_mail, carols_mail, outsiders_mail) = (&originals[0], &originals[1], &originals[2]);

    // The mail server goes down; outsider's approval mail is sent again and waits in the
    // outbox (the first attempt refused, the next one later).
    let stopped = stop_postfix().await;
    clock.advance(5 * 60_000 + 1);
    app.approvals()
        .resend_approval_email(req(
            pb::ResendApprovalEmailRequest {
                task_id: outsiders.id.clone(),
                ..Default::default()
            },
            "fred",
        ))
        .await
        .expect("fred resends outsider's approval mail");
    let until = std::time::Instant::now() + DEADLINE;
    let resent = loop {
        let rows = mail_rows(&app, &outsiders.id).await;
        if let Some(row) = rows.iter().find(|r| r.status == OutboxStatus::TempFailed) {
            break row.clone();
        }
        assert!(
            std::time::Instant::now() < until,
            "the resent mail was never attempted: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resent.kind, OutboxKind::Approval);
    stopped.start().await;
    let reader = Running::start(&app, imap_worker(&app));

    // mary approves: her vote counts, the step waits for the others.
    let (_, raw) = gmail_reply("马丽", &env.address("mary"), marys_mail, "同意", "");
    send_via_postfix(&env.address("mary"), &marys_mail.reply_to, &raw).await;
    let decided = app.wait_until_decided(&marys.id, DEADLINE).await;
    assert_eq!(decided.outcome, "approve", "{decided:?}");
    assert_eq!(decided.status, pb::TaskStatus::Completed as i32);
    assert_eq!(decided.completed_via, pb::CompletedVia::Email as i32);
    let waiting = instance(&app, &instance_id).await;
    assert_eq!(waiting.status, pb::InstanceStatus::Running as i32);
    let mut open: Vec<&str> = waiting
        .open_tasks
        .iter()
        .map(|t| t.assignee.as_str())
        .collect();
    open.sort_unstable();
    assert_eq!(open, ["carol", "outsider"]);
    let tally = &waiting.multi_instances[0];
    assert_eq!(
        (tally.activity_id.as_str(), tally.approved, tally.rejected),
        ("sign", 1, 0)
    );

    // carol rejects: the step is decided reject; outsider's task is withdrawn, the token
    // revoked and the mail still waiting dropped.
    let (_, raw) = gmail_reply(
        "陈可",
        &env.address("carol"),
        carols_mail,
        "驳回 预算太高",
        "",
    );
    send_via_postfix(&env.address("carol"), &carols_mail.reply_to, &raw).await;
    let decided = app.wait_until_decided(&carols.id, DEADLINE).await;
    assert_eq!(
        (decided.outcome.as_str(), decided.comment.as_str()),
        ("reject", "预算太高"),
        "{decided:?}"
    );
    assert_eq!(decided.completed_via, pb::CompletedVia::Email as i32);
    let after = instance(&app, &instance_id).await;
    assert!(after.open_tasks.is_empty(), "{after:?}");
    let Some(Value::Object(result)) = convert::struct_to_json(after.variables.clone(), "variables")
        .expect("variables")
        .remove("sign")
    else {
        panic!("no result of the step: {after:?}")
    };
    assert_eq!(result["outcome"], "reject", "{result:?}");
    assert_eq!(
        (result["approved"].clone(), result["rejected"].clone()),
        (json!(1), json!(1))
    );
    let withdrawn = app.task(&outsiders.id).await;
    assert_eq!(
        withdrawn.status,
        pb::TaskStatus::Withdrawn as i32,
        "{withdrawn:?}"
    );
    let context = app.approval(&outsiders.id).await;
    assert_eq!(
        context.status,
        pb::ApprovalStatus::Revoked as i32,
        "{context:?}"
    );
    assert_eq!(
        context.delivery_status,
        pb::DeliveryStatus::Cancelled as i32,
        "{context:?}"
    );
    let rows = mail_rows(&app, &outsiders.id).await;
    let dropped = rows
        .iter()
        .find(|r| r.id == resent.id)
        .expect("the resent row");
    assert_eq!(dropped.status, OutboxStatus::Cancelled, "{dropped:?}");

    // Long after its retry was due, outsider replies to their first mail: told the task is
    // closed, nothing decided. Their answer is sent, the dropped mail never is.
    clock.advance(RetryPolicy::default().backoff.max_ms);
    let (late_id, raw) = gmail_reply(
        "欧阳明",
        &env.address("outsider"),
        outsiders_mail,
        "同意",
        "",
    );
    send_via_postfix(&env.address("outsider"), &outsiders_mail.reply_to, &raw).await;
    let row = wait_for_verdict(&app, &outsiders.id, &late_id).await;
    assert_eq!(row.verdict, pb::Verdict::TaskClosed as i32, "{row:?}");
    assert!(row.reason.contains("withdrawn"), "{row:?}");
    let text = answer_to("outsider", &late_id).await;
    assert!(text.contains("这项审批已经处理过了"), "{text}");
    let still = app.task(&outsiders.id).await;
    assert!(still.outcome.is_empty(), "{still:?}");
    wait_for_empty_postfix_queue().await;
    let resent_id = resent.message_id.trim_matches(['<', '>']);
    assert_eq!(count_message_id("outsider", resent_id).await, 0);
    assert_eq!(
        mail_rows(&app, &outsiders.id)
            .await
            .iter()
            .find(|r| r.id == resent.id)
            .map(|r| r.status),
        Some(OutboxStatus::Cancelled)
    );
    reader.stop().await;
    app.stop().await;
}
