//! What the two inbound benchmarks (issue 4, "Performance") share: replies read from a backlog in
//! an IMAP folder ([`super::backlog`]) and replies handed in over `SubmitInboundEmail`
//! ([`super::submit`]). Both run the in-process server on the given database, with approval mail
//! written as files; each reply is mary-style "同意" to a real approval mail (quoted, In-Reply-To,
//! plus address), from one of `--approvers` approvers, and completes the manager's level of an
//! expense (which opens the finance level and its mail).
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;

use super::{
    AMOUNT, BenchArgs, EXPENSE_BPMN, FINANCE, INITIATOR,
    auth::{Identity, as_user},
    backlog::backlog,
    connect,
    database::Database,
    open_task,
    submit::submit,
};
use crate::{
    api::convert,
    app::Application,
    clock::SystemClock,
    config::{Secret, Settings},
    model::Verdict,
    proto::pb,
    store::{PageRequest, inbound::InboundFilter},
    workflow::Workflow,
};

/// One reply ready to be delivered: the plus address it goes to and its bytes.
pub(super) struct Reply {
    pub(super) recipient: String,
    pub(super) raw: Vec<u8>,
}

pub(super) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.approvers == 0 || args.concurrency == 0 || args.clients_per_connection == 0 {
        bail!("--approvers, --concurrency and --clients-per-connection must be at least 1");
    }
    let database = Database::prepare(args.database.as_deref(), args.fresh_postgres).await?;
    let mail_dir =
        std::env::temp_dir().join(format!("rf-bench-mail-{}", uuid::Uuid::now_v7().simple()));
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.database.url = Secret::new(database.url.clone());
    settings.database.synchronous = args.synchronous.clone();
    settings.mail.outbound = Secret::new(format!("file:{}", mail_dir.display()));
    settings.mail.inbound = Secret::new("none");
    settings.security.admins = "admin".into();
    settings.security.roles.mail = "mail-gateway".into();
    if let Some(max) = args.max_connections {
        settings.database.max_connections = max;
    }
    let backend = if database.url.starts_with("sqlite:") {
        format!(
            "sqlite synchronous={} max_connections={}",
            settings.database.synchronous, settings.database.max_connections
        )
    } else {
        format!(
            "postgres max_connections={}",
            settings.database.max_connections
        )
    };
    let result = async {
        let application = Application::build(&settings, Arc::new(SystemClock))
            .await
            .context("starting the in-process server")?;
        let addr = format!("http://{}", application.local_addr());
        let workflow = application.workflow();
        let shutdown = application.shutdown_token();
        let server = tokio::spawn(application.run_until_stopped());
        let outcome = match (args.inbound_backlog, args.submit_replies) {
            (Some(n), _) => backlog(args, &addr, &workflow, n, &backend).await,
            (None, Some(n)) => submit(args, &addr, &workflow, n, &backend).await,
            (None, None) => Ok(()),
        };
        shutdown.cancel();
        server
            .await
            .context("the in-process server panicked")?
            .context("the in-process server")?;
        outcome
    }
    .await;
    database.cleanup().await;
    let _ = std::fs::remove_dir_all(&mail_dir);
    result
}

/// Approvers a0..aK, fred (finance), the expense definition; then `n` instances started by
/// `--concurrency` clients, and one reply to each manager's approval mail.
pub(super) async fn prepare(
    args: &BenchArgs,
    addr: &str,
    workflow: &Workflow,
    n: usize,
    delivered_to: bool,
) -> anyhow::Result<Vec<Reply>> {
    let channel = connect(addr).await?;
    let admin = Identity::dev("admin");
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    let approvers: Vec<String> = (0..args.approvers).map(|i| format!("a{i}")).collect();
    for id in approvers.iter().map(String::as_str).chain([FINANCE]) {
        let user = pb::User {
            id: id.into(),
            display_name: id.into(),
            email: format!("{id}@bench.example"),
            locale: "zh-CN".into(),
            ..Default::default()
        };
        directory
            .upsert_user(as_user(pb::UpsertUserRequest { user: Some(user) }, &admin))
            .await
            .with_context(|| format!("adding user {id}"))?;
    }
    let message = pb::DeployDefinitionRequest {
        bpmn_xml: EXPENSE_BPMN.as_bytes().to_vec(),
        request_id: String::new(),
    };
    pb::workflow_service_client::WorkflowServiceClient::new(channel.clone())
        .deploy_definition(as_user(message, &admin))
        .await
        .context("deploying examples/expense.bpmn")?;

    let next = Arc::new(AtomicUsize::new(0));
    let approvers = Arc::new(approvers);
    let mut starters = JoinSet::new();
    for _ in 0..args.concurrency {
        let mut client = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
        let (next, approvers) = (next.clone(), approvers.clone());
        starters.spawn(async move {
            let initiator = Identity::dev(INITIATOR);
            let mut started = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(started);
                }
                let manager = &approvers[i % approvers.len()];
                let variables = json!({
                    "manager": manager, "finance": FINANCE, "amount": AMOUNT,
                    "reason": "inbound benchmark",
                });
                let serde_json::Value::Object(variables) = variables else {
                    unreachable!("a JSON object literal")
                };
                let message = pb::StartProcessRequest {
                    definition_key: "expense".into(),
                    business_key: format!("inbound-{i}"),
                    variables: Some(convert::json_to_struct(&variables)),
                    ..Default::default()
                };
                let instance = client
                    .start_process(as_user(message, &initiator))
                    .await
                    .map_err(|s| anyhow::anyhow!("StartProcess: {}", s.message()))?
                    .into_inner();
                let task = open_task(&instance, "manager_approval")?;
                started.push((i, task, format!("{manager}@bench.example")));
            }
        });
    }
    let mut tasks = Vec::with_capacity(n);
    while let Some(done) = starters.join_next().await {
        tasks.extend(done.context("a client panicked")??);
    }
    tasks.sort_by_key(|(i, _, _)| *i);
    let store = workflow.store();
    let mut replies = Vec::with_capacity(n);
    for (i, task, from) in tasks {
        let context = store
            .approval_for_task(&task)
            .await?
            .with_context(|| format!("no approval context for task {task}"))?;
        let mails = store.mail_for_context(&context.id).await?;
        let mail = mails
            .iter()
            .find(|m| m.kind == crate::model::OutboxKind::Approval)
            .with_context(|| format!("no approval mail for task {task}"))?;
        replies.push(compose_reply(&mail.body, &from, i, delivered_to)?);
    }
    Ok(replies)
}

/// "同意，第i笔" on top of the quoted approval mail, as a mail client writes a reply.
fn compose_reply(
    approval: &[u8],
    from: &str,
    i: usize,
    delivered_to: bool,
) -> anyhow::Result<Reply> {
    let mail = mail_parser::MessageParser::default()
        .parse(approval)
        .context("parsing an approval mail")?;
    let reply_to = mail
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .context("the approval mail has no Reply-To")?
        .to_string();
    let message_id = mail.message_id().context("no Message-ID")?;
    let subject = mail.subject().unwrap_or_default();
    let mut text = format!(
        "同意，第{i}笔\r\n\r\n在 2026年11月21日周六 23:40，审批 <approvals@bench.example> 写道：\r\n"
    );
    for line in mail.body_text(0).unwrap_or_default().lines() {
        text.push_str("> ");
        text.push_str(line);
        text.push_str("\r\n");
    }
    let mut raw = String::new();
    if delivered_to {
        raw.push_str(&format!("Delivered-To: {reply_to}\r\n"));
    }
    raw.push_str(&format!(
        "From: {from}\r\nTo: {reply_to}\r\nSubject: Re: {subject}\r\n\
         Message-ID: <bench-{}@bench.example>\r\nIn-Reply-To: <{message_id}>\r\n\
         References: <{message_id}>\r\nDate: Sat, 21 Nov 2026 23:41:00 +0800\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n{text}",
        uuid::Uuid::now_v7().simple()
    ));
    Ok(Reply {
        recipient: reply_to,
        raw: raw.into_bytes(),
    })
}

/// How many replies the inbound log records as applied.
pub(super) async fn applied(workflow: &Workflow) -> anyhow::Result<usize> {
    let filter = InboundFilter {
        verdict: Some(Verdict::Applied),
        ..Default::default()
    };
    let (mut count, mut token) = (0, String::new());
    loop {
        let page = workflow
            .store()
            .list_inbound(&filter, &PageRequest::new(500, token)?)
            .await?;
        count += page.items.len();
        if page.next_page_token.is_empty() {
            return Ok(count);
        }
        token = page.next_page_token;
    }
}
