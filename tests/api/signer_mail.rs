//! A signer's approval mail (DESIGN §11, issue 11 item 3): every signer of a 会签 / 票签 / 顺序会签
//! step reads, in their own language, the step's mode, how many approvals pass it, their place and
//! who else is asked — by the names the directory gives, never by address. Reminder mail says
//! the same. Mail is read as the file transport wrote it.
use std::sync::Arc;

use mail_parser::MessageParser;
use replyflow::{clock::ManualClock, model::OutboxKind, proto::pb};
use serde_json::json;

use crate::helpers::{TestApp, req, spawn_app_at};

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;

/// One multi-instance step over the list variable `signers`, chased by email every hour.
fn signing_step(key: &str, loop_attrs: &str) -> String {
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL"
             xmlns:replyflow="https://replyflow.dev/schema/1">
           <process id="{key}" name="合同审批" isExecutable="true">
             <extensionElements>
               <replyflow:reminderType id="chase" count="2" interval="PT1H" channels="email"/>
             </extensionElements>
             <startEvent id="start"/>
             <sequenceFlow id="f1" sourceRef="start" targetRef="sign"/>
             <userTask id="sign" name="合同会签" replyflow:reminderType="chase">
               <multiInstanceLoopCharacteristics replyflow:collection="signers" {loop_attrs}/>
             </userTask>
             <sequenceFlow id="f2" sourceRef="sign" targetRef="end"/>
             <endEvent id="end"/>
           </process></definitions>"#
    )
}

/// Lena and Fred read English, 李娜 (ivy) Chinese; the cron job never ticks by itself.
async fn app_at(clock: &Arc<ManualClock>) -> TestApp {
    let clock: Arc<dyn replyflow::clock::Clock> = clock.clone();
    let app = spawn_app_at(clock, |s| s.reminders.schedule = "0 0 0 1 1 *".into()).await;
    for (id, name, locale) in [
        ("lena", "Lena Wang", "en"),
        ("fred", "Fred Zhang", "en"),
        ("ivy", "李娜", "zh-CN"),
    ] {
        let user = pb::User {
            id: id.into(),
            display_name: name.into(),
            email: format!("{id}@example.com"),
            locale: locale.into(),
            ..Default::default()
        };
        app.directory()
            .upsert_user(req(pb::UpsertUserRequest { user: Some(user) }, "admin"))
            .await
            .expect("upsert user");
    }
    app
}

/// The text part of the approval mail of `user`'s open task.
async fn approval_text(app: &TestApp, instance: &pb::ProcessInstance, user: &str) -> String {
    let task = instance
        .open_tasks
        .iter()
        .find(|t| t.assignee == user)
        .unwrap_or_else(|| panic!("{user} has no open task: {:?}", instance.open_tasks));
    let approval = app.approval(&task.id).await;
    let raw = app.mail_with_id(&approval.message_id).await;
    text_of(&raw)
}

fn text_of(raw: &[u8]) -> String {
    let mail = MessageParser::default()
        .parse(raw)
        .expect("the mail parses");
    let text = mail.body_text(0).expect("a text part").into_owned();
    let html = mail.body_html(0).expect("an HTML part").into_owned();
    format!("{text}\n---- HTML ----\n{html}").replace("\r\n", "\n")
}

fn assert_no_addresses(text: &str) {
    for id in ["lena", "fred", "ivy"] {
        let address = format!("{id}@example.com");
        // The To header is not in the text: only a colleague's address could be.
        assert!(!text.contains(&address), "{address} in\n{text}");
    }
}

#[tokio::test]
async fn each_signer_of_a_countersign_reads_the_mode_and_the_other_signers_by_name() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&signing_step("contract", ""))
        .await
        .expect("deploy");
    let instance = app
        .start("contract", json!({"signers": ["lena", "fred", "ivy"]}))
        .await;

    let fred = approval_text(&app, &instance, "fred").await;
    let line = "Countersign (all must approve) · you are 2 of 3: Lena Wang, Fred Zhang, 李娜";
    assert!(fred.contains(&format!("Approval mode: {line}\n")), "{fred}");
    assert!(
        fred.contains(&format!(">{line}</div>")),
        "the HTML part too: {fred}"
    );
    assert_no_addresses(&fred);

    let ivy = approval_text(&app, &instance, "ivy").await;
    assert!(
        ivy.contains(
            "审批方式：会签（全部同意才通过）· 您是第 3 位，共 3 位：Lena Wang、Fred Zhang、李娜\n"
        ),
        "{ivy}"
    );
    assert_no_addresses(&ivy);

    // An hour on, the reminder to a signer still deciding says the same.
    let lena_task = instance
        .open_tasks
        .iter()
        .find(|t| t.assignee == "lena")
        .expect("lena's task")
        .clone();
    app.complete(
        instance
            .open_tasks
            .iter()
            .find(|t| t.assignee == "fred")
            .expect("fred's task"),
        "approve",
    )
    .await
    .expect("fred approves");
    clock.advance(HOUR);
    app.server_workflow
        .fire_due_reminders(500)
        .await
        .expect("firing reminders");
    let approval = app.approval(&lena_task.id).await;
    let store = app.store().await;
    let rows = store
        .mail_for_context(&approval.id)
        .await
        .expect("the outbox");
    store.close().await;
    let reminder = rows
        .iter()
        .find(|m| m.kind == OutboxKind::Reminder)
        .expect("a reminder mail to lena");
    let text = text_of(&reminder.body);
    assert!(text.contains("Reminder: "), "{text}");
    assert!(
        text.contains(
            "Approval mode: Countersign (all must approve) · you are 1 of 3: Lena Wang, Fred \
             Zhang, 李娜\n"
        ),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_voter_reads_how_many_approvals_pass_and_a_sequential_signer_the_order() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    app.deploy_xml(&signing_step(
        "committee",
        r#"replyflow:signMode="vote" replyflow:passRatio="0.6""#,
    ))
    .await
    .expect("deploy");
    let vote = app
        .start("committee", json!({"signers": ["lena", "fred", "ivy"]}))
        .await;
    let lena = approval_text(&app, &vote, "lena").await;
    assert!(
        lena.contains(
            "Approval mode: Vote (2 approvals pass it) · you are 1 of 3: Lena Wang, Fred \
             Zhang, 李娜\n"
        ),
        "{lena}"
    );
    let ivy = approval_text(&app, &vote, "ivy").await;
    assert!(
        ivy.contains(
            "审批方式：票签（2 位同意即通过）· 您是第 3 位，共 3 位：Lena Wang、Fred Zhang、李娜\n"
        ),
        "{ivy}"
    );

    app.deploy_xml(&signing_step("review", r#"isSequential="true""#))
        .await
        .expect("deploy");
    let review = app
        .start("review", json!({"signers": ["ivy", "lena", "fred"]}))
        .await;
    let ivy = approval_text(&app, &review, "ivy").await;
    assert!(
        ivy.contains(
            "审批方式：顺序会签（全部同意才通过，按名单顺序逐一审批）· 您是第 1 位，共 3 位：李娜 → Lena Wang → Fred Zhang\n"
        ),
        "{ivy}"
    );
    let next = app
        .complete(&review.open_tasks[0], "approve")
        .await
        .expect("ivy approves")
        .instance
        .expect("the instance");
    let lena = approval_text(&app, &next, "lena").await;
    assert!(
        lena.contains(
            "Approval mode: Sequential countersign (all must approve, one at a time in this \
             order) · you are 2 of 3: 李娜 → Lena Wang → Fred Zhang\n"
        ),
        "{lena}"
    );
    assert_no_addresses(&lena);
    app.stop().await;
}
