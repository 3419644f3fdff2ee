//! Exactly once across a crash (DESIGN §10, issue 4 "Exactly once"): the real `replyflow` binary
//! reads replies from approvals@'s INBOX over IMAPS and dies between ingesting a batch and moving
//! it to the processed folder — once on purpose (the `inbound-before-move` failpoint aborts the
//! process after the ingest transactions committed and before UID MOVE), once at a random moment
//! (SIGKILL while a backlog of 200 replies is being read). Restarted without the failpoint, it must
//! have lost nothing and doubled nothing: every task decided once, one `applied` verdict per task
//! (a message read again is logged `duplicate`), every reply in the processed folder exactly once
//! and none left in the INBOX.
//!
//! The database is a SQLite file, or a fresh PostgreSQL database when TEST_DATABASE=postgres
//! (`TEST_DATABASE=postgres ./scripts/test -- cargo test --test mail crash`).
use std::{os::unix::process::ExitStatusExt, path::Path, process::Command, time::Duration};

use replyflow::{
    api::convert,
    model::{InboundEmail, Verdict},
    proto::pb,
    store::{ConnectOptions, PageRequest, Store, inbound::InboundFilter},
};
use serde_json::{Value, json};

use crate::{
    helpers::{
        ApprovalMail, TestDb, approvals_inbox, eventually, gmail_reply, mail_env, postfix_shared,
        req, unique,
    },
    imap::count_header,
    process::ServerProcess,
};

const BIN: &str = env!("CARGO_BIN_EXE_replyflow");
const PROCESSED: &str = "replyflow-processed";
/// How long a server may take to listen, to stop, or to work through what the tests give it.
const DEADLINE: Duration = Duration::from_secs(60);
/// The header that marks one test's replies, so that IMAP searches count only them.
const RUN_HEADER: &str = "X-Replyflow-Test-Run";

// ---------------------------------------------------------------------------- the database

/// The server's database, opened beside it.
async fn open(db: &TestDb) -> Store {
    Store::connect(&db.url, &ConnectOptions::default())
        .await
        .expect("opening the server's database")
}

/// Every row of the inbound log (paged).
async fn inbound_log(store: &Store) -> Vec<InboundEmail> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = store
            .list_inbound(
                &InboundFilter::default(),
                &PageRequest::new(500, token).expect("page"),
            )
            .await
            .expect("list_inbound");
        all.extend(page.items);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

async fn count_applied(store: &Store) -> usize {
    inbound_log(store)
        .await
        .iter()
        .filter(|m| m.verdict == Verdict::Applied)
        .count()
}

// ---------------------------------------------------------------------------- the server process

/// `replyflow serve` on a free port with `db`, writing its mail as files under `dir/outbox`,
/// reading replies from `inbound` (`none`, or approvals@'s INBOX over IMAPS), `failpoint` armed.
fn serve(dir: &Path, db: &TestDb, inbound: Inbound, failpoint: Option<&str>) -> ServerProcess {
    let env = mail_env();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db.url])
        .current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("REPLYFLOW_") {
            command.env_remove(name);
        }
    }
    let inbound = match inbound {
        Inbound::None => "none".to_string(),
        Inbound::Imaps => format!(
            "imaps://approvals%40{}:{}@localhost:{}/INBOX",
            env.domain, env.password, env.imaps_port
        ),
    };
    command
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,sqlx=warn")
        .env("REPLYFLOW_SECURITY_ADMINS", "admin")
        .env(
            "REPLYFLOW_MAIL_FROM",
            format!("审批 <approvals@{}>", env.domain),
        )
        .env(
            "REPLYFLOW_MAIL_OUTBOUND",
            format!("file:{}", dir.join("outbox").display()),
        )
        .env("REPLYFLOW_MAIL_INBOUND", inbound)
        .env("REPLYFLOW_MAIL_CA_FILE", &env.ca_file)
        .env("REPLYFLOW_MAIL_PROCESSED_FOLDER", PROCESSED);
    if let Some(name) = failpoint {
        command.env("REPLYFLOW_FAILPOINT", name);
    }
    ServerProcess::start(command, DEADLINE)
}

#[derive(Debug, Clone, Copy)]
enum Inbound {
    None,
    Imaps,
}

/// A gRPC channel to the server.
async fn channel(server: &ServerProcess) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(server.url())
        .expect("uri")
        .connect()
        .await
        .expect("connecting to the server")
}

// ---------------------------------------------------------------------------- the story

/// What one expense instance left for the test: mary's task and the approval mail she got.
struct Pending {
    task_id: String,
    mail: ApprovalMail,
}

/// Through a server without an inbound reader: mary, the expense definition, `n` instances whose
/// first task is mary's, and their approval mails (from the outbox, as written).
async fn prepare(server: &ServerProcess, db: &TestDb, n: usize) -> Vec<Pending> {
    let env = mail_env();
    let channel = channel(server).await;
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    for id in ["mary", "fred"] {
        directory
            .upsert_user(req(
                pb::UpsertUserRequest {
                    user: Some(pb::User {
                        id: id.into(),
                        display_name: id.to_uppercase(),
                        email: env.address(id),
                        locale: "zh-CN".into(),
                        ..Default::default()
                    }),
                },
                "admin",
            ))
            .await
            .expect("upsert user");
    }
    let mut workflow = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
    let xml = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/expense.bpmn"))
        .expect("examples/expense.bpmn");
    workflow
        .deploy_definition(req(
            pb::DeployDefinitionRequest {
                bpmn_xml: xml,
                request_id: String::new(),
            },
            "admin",
        ))
        .await
        .expect("deploy");
    let Value::Object(variables) = json!({
        "manager": "mary", "finance": "fred", "amount": 20000, "reason": "crash test",
    }) else {
        unreachable!("a JSON object")
    };
    let variables = convert::json_to_struct(&variables);
    let mut approvals = pb::approval_service_client::ApprovalServiceClient::new(channel);
    let store = open(db).await;
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let instance = workflow
            .start_process(req(
                pb::StartProcessRequest {
                    definition_key: "expense".into(),
                    business_key: format!("CRASH-{i}"),
                    variables: Some(variables.clone()),
                    ..Default::default()
                },
                "fred",
            ))
            .await
            .expect("StartProcess")
            .into_inner();
        let task_id = instance.open_tasks[0].id.clone();
        let approval = approvals
            .get_approval(req(
                pb::GetApprovalRequest {
                    task_id: task_id.clone(),
                },
                "fred",
            ))
            .await
            .expect("GetApproval")
            .into_inner();
        let rows = store
            .mail_for_context(&approval.id)
            .await
            .expect("the outbox");
        let row = rows
            .iter()
            .find(|m| m.kind == replyflow::model::OutboxKind::Approval)
            .expect("an approval mail in the outbox");
        pending.push(Pending {
            task_id,
            mail: ApprovalMail::parse(&row.body),
        });
    }
    store.close().await;
    pending
}

/// mary answers every approval mail ("同意" and a comment naming the task) through Postfix, over
/// one SMTP connection; returns the replies' Message-IDs (bare), in task order.
async fn reply_to_all(pending: &[Pending], run: &str) -> Vec<String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor, address::Envelope};
    let env = mail_env();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(env.smtp_host.clone())
        .port(env.smtp_port)
        .build();
    let mary = env.address("mary");
    let mut ids = Vec::with_capacity(pending.len());
    for (i, p) in pending.iter().enumerate() {
        let (id, raw) = gmail_reply(
            "玛丽",
            &mary,
            &p.mail,
            &format!("同意，第{i}笔"),
            &format!("{RUN_HEADER}: {run}\r\n"),
        );
        let envelope = Envelope::new(
            Some(mary.parse().expect("from")),
            vec![p.mail.reply_to.parse().expect("to")],
        )
        .expect("envelope");
        transport
            .send_raw(&envelope, &raw)
            .await
            .unwrap_or_else(|e| panic!("sending reply {i} through Postfix: {e}"));
        ids.push(id.trim_matches(['<', '>']).to_string());
    }
    ids
}

/// Waits until `n` messages of this run are in approvals@'s `folder`.
async fn wait_for_count(folder: &str, run: &str, n: usize) {
    eventually(DEADLINE, async || {
        let found = count_header("approvals", folder, RUN_HEADER, run).await;
        if found == n {
            Ok(())
        } else {
            Err(format!(
                "{found} of {n} replies of run {run} in approvals@'s {folder}"
            ))
        }
    })
    .await;
}

/// The invariants after the restart: every task decided once, by mail, as mary answered; one
/// `applied` per task and nothing but `duplicate` besides; every reply moved exactly once.
async fn assert_exactly_once(db: &TestDb, pending: &[Pending], reply_ids: &[String], run: &str) {
    let store = open(db).await;
    let log = inbound_log(&store).await;
    for (i, (p, reply_id)) in pending.iter().zip(reply_ids).enumerate() {
        let task = store.task(&p.task_id).await.expect("task").expect("task");
        assert_eq!(task.outcome, "approve", "task {i}: {task:?}");
        assert_eq!(task.comment, format!("第{i}笔"), "task {i}: {task:?}");
        assert_eq!(task.completed_by, "mary");
        let rows: Vec<&InboundEmail> = log.iter().filter(|m| m.task_id == p.task_id).collect();
        let applied: Vec<_> = rows
            .iter()
            .filter(|m| m.verdict == Verdict::Applied)
            .collect();
        assert_eq!(applied.len(), 1, "task {i}: one applied verdict: {rows:#?}");
        assert_eq!(&applied[0].message_id, reply_id, "task {i}");
        for row in &rows {
            assert!(
                row.verdict == Verdict::Applied || row.verdict == Verdict::Duplicate,
                "task {i}: only applied and duplicate: {rows:#?}"
            );
            assert_eq!(&row.message_id, reply_id, "task {i}: {rows:#?}");
        }
        assert!(rows.len() <= 2, "task {i}: read at most twice: {rows:#?}");
    }
    store.close().await;
    assert_eq!(
        count_header("approvals", PROCESSED, RUN_HEADER, run).await,
        pending.len(),
        "every reply in {PROCESSED}, once"
    );
    assert_eq!(
        count_header("approvals", "INBOX", RUN_HEADER, run).await,
        0,
        "no reply left in the INBOX"
    );
}

#[tokio::test]
async fn a_crash_after_ingesting_and_before_the_move_loses_and_doubles_nothing() {
    const N: usize = 6;
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new().await;
    let run = unique("failpoint");

    let server = serve(dir.path(), &db, Inbound::None, None);
    let pending = prepare(&server, &db, N).await;
    assert!(server.terminate().success());
    let reply_ids = reply_to_all(&pending, &run).await;
    wait_for_count("INBOX", &run, N).await;

    // The failpoint: the batch is ingested (committed), then the process aborts before UID MOVE.
    let server = serve(dir.path(), &db, Inbound::Imaps, Some("inbound-before-move"));
    let (status, log) = server.wait_for_exit();
    assert_eq!(
        status.signal(),
        Some(libc_sigabrt()),
        "the failpoint aborted the server: {status}\n{log}"
    );
    assert!(log.contains("REPLYFLOW_FAILPOINT"), "{log}");
    let store = open(&db).await;
    assert_eq!(
        count_applied(&store).await,
        N,
        "all {N} applied before the crash"
    );
    store.close().await;
    assert_eq!(
        count_header("approvals", "INBOX", RUN_HEADER, &run).await,
        N,
        "nothing moved before the crash"
    );

    // Restarted without it: every reply is read again, recognised, and moved.
    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    wait_for_count(PROCESSED, &run, N).await;
    eventually(DEADLINE, async || {
        let store = open(&db).await;
        let read = inbound_log(&store).await.len();
        store.close().await;
        if read < 2 * N {
            Err(format!(
                "{read} of {} reads logged; {}",
                2 * N,
                server.log()
            ))
        } else {
            Ok(())
        }
    })
    .await;
    assert!(server.terminate().success());
    assert_exactly_once(&db, &pending, &reply_ids, &run).await;
    let log = inbound_log(&open(&db).await).await;
    let duplicates = log
        .iter()
        .filter(|m| m.verdict == Verdict::Duplicate)
        .count();
    assert_eq!(
        duplicates, N,
        "each reply read a second time is a duplicate"
    );
    db.drop_database().await;
}

#[tokio::test]
async fn sigkill_while_a_backlog_of_200_replies_is_read_loses_and_doubles_nothing() {
    const N: usize = 200;
    let _postfix = postfix_shared().await;
    let _inbox = approvals_inbox().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDb::new().await;
    let run = unique("sigkill");

    let server = serve(dir.path(), &db, Inbound::None, None);
    let pending = prepare(&server, &db, N).await;
    assert!(server.terminate().success());
    let reply_ids = reply_to_all(&pending, &run).await;
    wait_for_count("INBOX", &run, N).await;

    // Killed once a random number of replies has been applied, mid-backlog.
    let kill_at = rand::random_range(1..N * 3 / 4);
    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    let store = open(&db).await;
    let applied = eventually(DEADLINE, async || {
        let applied = count_applied(&store).await;
        if applied >= kill_at {
            Ok(applied)
        } else {
            Err(format!("{applied} applied; {}", server.log()))
        }
    })
    .await;
    let status = server.kill();
    let at_kill = count_applied(&store).await;
    let moved = count_header("approvals", PROCESSED, RUN_HEADER, &run).await;
    println!(
        "SIGKILL after {applied} (target {kill_at}) of {N} replies applied; {at_kill} applied \
         and {moved} moved when it died"
    );
    assert!(!status.success(), "{status}");
    assert!(
        at_kill < N,
        "the kill came after the whole backlog: nothing was tested"
    );
    store.close().await;

    let server = serve(dir.path(), &db, Inbound::Imaps, None);
    wait_for_count(PROCESSED, &run, N).await;
    let store = open(&db).await;
    eventually(DEADLINE, async || {
        let applied = count_applied(&store).await;
        if applied < N {
            Err(format!("{applied} of {N} applied; {}", server.log()))
        } else {
            Ok(())
        }
    })
    .await;
    store.close().await;
    assert!(server.terminate().success());
    assert_exactly_once(&db, &pending, &reply_ids, &run).await;
    db.drop_database().await;
}

/// SIGABRT, what `std::process::abort` ends a process with.
fn libc_sigabrt() -> i32 {
    6
}
