//! The default mode: N instances of the two-level expense (StartProcess, then CompleteTask as the
//! manager, then as finance) over gRPC from C concurrent clients; then, with the server in this
//! process, the statement probe ([`super::probe`]) on the same database.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use super::{
    AMOUNT, BenchArgs, ERRORS_SHOWN, EXPENSE_BPMN, FINANCE, INITIATOR, MANAGER,
    auth::{Identity, as_user},
    connect, open_task, probe,
    report::{Report, own_memory_kb},
    server::InProcess,
    statements,
};
use crate::{api::convert, proto::pb};

/// The three RPCs of one instance.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rpc {
    Start,
    Manager,
    Finance,
}

impl Rpc {
    pub(super) const ALL: [Rpc; 3] = [Rpc::Start, Rpc::Manager, Rpc::Finance];

    pub(super) fn label(self) -> &'static str {
        match self {
            Rpc::Start => "StartProcess",
            Rpc::Manager => "CompleteTask (manager)",
            Rpc::Finance => "CompleteTask (finance)",
        }
    }
}

/// Runs the load and returns what it measured; a server of its own is started and stopped unless
/// `--addr` names one.
pub(super) async fn bench(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.instances == 0 || args.concurrency == 0 || args.clients_per_connection == 0 {
        bail!("--instances, --concurrency and --clients-per-connection must be at least 1");
    }
    if let Some(addr) = &args.addr {
        let version = setup(args, addr).await?;
        let mut report = load(args, addr, version, format!("the server at {addr}")).await?;
        report.no_statements = "--addr: the server is not in this process".into();
        return Ok(report);
    }
    let server = InProcess::start(args).await?;
    // The setup's writes (users, the definition) are no transitions: counted from after it.
    let version = setup(&server.args, &server.addr).await;
    let commits_before = server.group_commits();
    let report = match version {
        Ok(version) => load(&server.args, &server.addr, version, server.backend.clone()).await,
        Err(e) => Err(e),
    };
    let commits_after = server.group_commits();
    server
        .stop(async |settings, args| {
            let mut report = report?;
            report.group_commits = Some((
                commits_after.groups - commits_before.groups,
                commits_after.jobs - commits_before.jobs,
            ));
            if args.statement_probe == 0 {
                report.no_statements = "--statement-probe 0".into();
            } else if !statements::available() {
                report.no_statements = "the statement counter is not installed".into();
            } else {
                let counts = probe::run(args, settings)
                    .await
                    .context("the statement probe")?;
                report.statements = Some(counts);
            }
            Ok(report)
        })
        .await
}

/// The generated clients over one connection, and the identities they act as.
#[derive(Clone)]
pub(super) struct Clients {
    workflow: pb::workflow_service_client::WorkflowServiceClient<Channel>,
    tasks: pb::task_service_client::TaskServiceClient<Channel>,
    initiator: Identity,
    manager: Identity,
    finance: Identity,
    variables: prost_types::Struct,
    version: i32,
    request_ids: bool,
}

impl Clients {
    pub(super) fn new(args: &BenchArgs, channel: Channel, version: i32) -> anyhow::Result<Self> {
        let variables = json!({
            "manager": MANAGER,
            "finance": FINANCE,
            "amount": AMOUNT,
            "reason": "load test",
        });
        let variables = match variables {
            serde_json::Value::Object(map) => convert::json_to_struct(&map),
            _ => unreachable!("a JSON object literal"),
        };
        Ok(Self {
            workflow: pb::workflow_service_client::WorkflowServiceClient::new(channel.clone()),
            tasks: pb::task_service_client::TaskServiceClient::new(channel),
            initiator: Identity::of(args, INITIATOR)?,
            manager: Identity::of(args, MANAGER)?,
            finance: Identity::of(args, FINANCE)?,
            variables,
            version,
            request_ids: !args.no_request_ids,
        })
    }

    fn request_id(&self) -> String {
        if self.request_ids {
            uuid::Uuid::now_v7().to_string()
        } else {
            String::new()
        }
    }

    /// Runs one instance to its end, adding each call's latency to `latencies`.
    async fn one_instance(
        &mut self,
        n: usize,
        latencies: &mut [Vec<Duration>; 3],
    ) -> anyhow::Result<()> {
        let task = self.start(n, latencies).await?;
        let instance = self.complete(Rpc::Manager, task, latencies).await?;
        let task = open_task(&instance, "finance_approval")?;
        let instance = self.complete(Rpc::Finance, task, latencies).await?;
        ensure_completed(&instance)
    }

    /// StartProcess; returns the manager's task.
    pub(super) async fn start(
        &mut self,
        n: usize,
        latencies: &mut [Vec<Duration>; 3],
    ) -> anyhow::Result<String> {
        let message = pb::StartProcessRequest {
            definition_key: "expense".into(),
            version: self.version,
            business_key: format!("bench-{n}"),
            variables: Some(self.variables.clone()),
            request_id: self.request_id(),
        };
        let request = as_user(message, &self.initiator);
        let started = Instant::now();
        let instance = self
            .workflow
            .start_process(request)
            .await
            .map_err(|s| anyhow::anyhow!("StartProcess: {}: {}", s.code(), s.message()))?
            .into_inner();
        latencies[Rpc::Start as usize].push(started.elapsed());
        open_task(&instance, "manager_approval")
    }

    /// CompleteTask ("approve") as the manager or finance; returns the instance it answers with.
    pub(super) async fn complete(
        &mut self,
        rpc: Rpc,
        task_id: String,
        latencies: &mut [Vec<Duration>; 3],
    ) -> anyhow::Result<pb::ProcessInstance> {
        let user = match rpc {
            Rpc::Finance => &self.finance,
            _ => &self.manager,
        };
        let message = pb::CompleteTaskRequest {
            task_id,
            outcome: "approve".into(),
            comment: "ok".into(),
            variables: None,
            request_id: self.request_id(),
        };
        let request = as_user(message, user);
        let started = Instant::now();
        let done = self
            .tasks
            .complete_task(request)
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}: {}", rpc.label(), s.code(), s.message()))?
            .into_inner();
        latencies[rpc as usize].push(started.elapsed());
        done.instance
            .with_context(|| format!("{}: no instance in the answer", rpc.label()))
    }
}

pub(super) fn ensure_completed(instance: &pb::ProcessInstance) -> anyhow::Result<()> {
    if instance.status != pb::InstanceStatus::Completed as i32 || !instance.open_tasks.is_empty() {
        bail!(
            "instance {} is not completed after both approvals (status {})",
            instance.id,
            instance.status
        );
    }
    Ok(())
}

/// Runs the clients against definition `version` (see [`setup`]).
async fn load(
    args: &BenchArgs,
    addr: &str,
    version: i32,
    backend: String,
) -> anyhow::Result<Report> {
    let connections = args.concurrency.div_ceil(args.clients_per_connection);
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        channels.push(connect(addr).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let total = args.instances;
    let rss_before_kb = own_memory_kb("VmRSS:");
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for worker in 0..args.concurrency {
        let mut clients = Clients::new(
            args,
            channels[worker / args.clients_per_connection].clone(),
            version,
        )?;
        let next = next.clone();
        workers.spawn(async move {
            let mut result = WorkerResult::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                match clients.one_instance(n, &mut result.latencies).await {
                    Ok(()) => result.completed += 1,
                    Err(err) => {
                        result.errors += 1;
                        if result.first_errors.len() < ERRORS_SHOWN {
                            result.first_errors.push(format!("{err:#}"));
                        }
                    }
                }
            }
            result
        });
    }
    let mut report = Report {
        instances: total,
        concurrency: args.concurrency,
        connections,
        backend,
        ..Report::default()
    };
    while let Some(result) = workers.join_next().await {
        let result = result.context("a bench client panicked")?;
        report.completed += result.completed;
        report.errors += result.errors;
        for error in result.first_errors {
            if report.first_errors.len() < ERRORS_SHOWN && !report.first_errors.contains(&error) {
                report.first_errors.push(error);
            }
        }
        for (all, mine) in report.latencies.iter_mut().zip(result.latencies) {
            all.extend(mine);
        }
    }
    report.wall = started.elapsed();
    report.rss_before_kb = rss_before_kb;
    report.rss_max_kb = own_memory_kb("VmHWM:");
    Ok(report)
}

/// The users (with approval mail unless --without-email) and the definition, through the API as
/// an admin; returns the definition's version.
pub(super) async fn setup(args: &BenchArgs, addr: &str) -> anyhow::Result<i32> {
    let channel = connect(addr).await?;
    let admin = Identity::of(args, "admin")?;
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    for (id, manager) in [(FINANCE, ""), (MANAGER, ""), (INITIATOR, MANAGER)] {
        let user = pb::User {
            id: id.into(),
            display_name: id.into(),
            email: if args.without_email {
                String::new()
            } else {
                format!("{id}@bench.example")
            },
            manager_id: manager.into(),
            locale: "en".into(),
            ..Default::default()
        };
        let message = pb::UpsertUserRequest { user: Some(user) };
        directory
            .upsert_user(as_user(message, &admin))
            .await
            .with_context(|| format!("adding user {id}"))?;
    }
    let message = pb::DeployDefinitionRequest {
        bpmn_xml: EXPENSE_BPMN.as_bytes().to_vec(),
        request_id: String::new(),
    };
    let definition = pb::workflow_service_client::WorkflowServiceClient::new(channel)
        .deploy_definition(as_user(message, &admin))
        .await
        .context("deploying examples/expense.bpmn")?
        .into_inner();
    Ok(definition.version)
}

#[derive(Debug, Default)]
struct WorkerResult {
    completed: usize,
    errors: usize,
    first_errors: Vec<String>,
    latencies: [Vec<Duration>; 3],
}
