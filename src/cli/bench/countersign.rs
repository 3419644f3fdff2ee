//! `--countersign S`: N instances of examples/countersign.bpmn (会签), each with S signers who all
//! decide at the same instant — the race the engine must decide exactly once. Prints decisions/s
//! and the latency of CompleteTask, and checks every instance ended with exactly one decision
//! (one final approval task open).
use std::{
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;
use tokio::task::JoinSet;

use super::{
    BenchArgs, ERRORS_SHOWN, INITIATOR,
    auth::{Identity, as_user},
    connect, open_task,
    report::latency_row,
    server::InProcess,
};
use crate::{api::convert, proto::pb};

const COUNTERSIGN_BPMN: &str = include_str!("../../../examples/countersign.bpmn");
const APPROVER: &str = "frank";

pub(super) async fn run(args: &BenchArgs, signers: usize) -> anyhow::Result<()> {
    if signers == 0 || args.instances == 0 {
        bail!("--countersign and --instances must be at least 1");
    }
    let report = match &args.addr {
        Some(addr) => load(args, addr, signers, format!("the server at {addr}")).await,
        None => {
            let server = InProcess::start(args).await?;
            let report = load(&server.args, &server.addr, signers, server.backend.clone()).await;
            server.stop(async |_, _| report).await
        }
    }?;
    print!("{}", report.render());
    if report.errors > 0 || report.decided != report.instances {
        bail!(
            "{} of {} countersigns were not decided exactly once ({} errors)",
            report.instances - report.decided,
            report.instances,
            report.errors
        );
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Report {
    instances: usize,
    signers: usize,
    parallel: usize,
    backend: String,
    wall: Duration,
    decided: usize,
    errors: usize,
    first_errors: Vec<String>,
    start: Vec<Duration>,
    decisions: Vec<Duration>,
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.wall.as_secs_f64().max(f64::EPSILON);
        let _ = writeln!(
            out,
            "replyflow bench --countersign: {} instances of a 会签 with {} signers deciding at once, {} instance(s) at a time",
            self.instances, self.signers, self.parallel
        );
        let _ = writeln!(out, "backend:      {}", self.backend);
        let _ = writeln!(out, "wall time:    {:.3} s", secs);
        let _ = writeln!(
            out,
            "decisions/s:  {:.1}   (countersigns decided/s: {:.1})",
            self.decisions.len() as f64 / secs,
            self.decided as f64 / secs
        );
        let _ = writeln!(
            out,
            "decided once: {} of {}   errors: {}",
            self.decided, self.instances, self.errors
        );
        let _ = writeln!(
            out,
            "{:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
        );
        latency_row(&mut out, "StartProcess", self.start.clone());
        latency_row(&mut out, "CompleteTask (signer)", self.decisions.clone());
        for error in &self.first_errors {
            let _ = writeln!(out, "error: {error}");
        }
        out
    }
}

/// Users and the definition, then the instances, `parallel` at a time.
async fn load(
    args: &BenchArgs,
    addr: &str,
    signers: usize,
    backend: String,
) -> anyhow::Result<Report> {
    let names: Vec<String> = (0..signers).map(|i| format!("signer{i:03}")).collect();
    let version = setup(args, addr, &names).await?;
    let parallel = (args.concurrency / signers).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let names = Arc::new(names);
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..parallel {
        let channel = connect(addr).await?;
        let (next, names, args) = (next.clone(), names.clone(), args.clone());
        workers.spawn(async move {
            let mut mine = Report::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= args.instances {
                    break;
                }
                match one(&args, &channel, version, &names, &mut mine).await {
                    Ok(()) => mine.decided += 1,
                    Err(err) => {
                        mine.errors += 1;
                        if mine.first_errors.len() < ERRORS_SHOWN {
                            mine.first_errors.push(format!("{err:#}"));
                        }
                    }
                }
            }
            mine
        });
    }
    let mut report = Report {
        instances: args.instances,
        signers,
        parallel,
        backend,
        ..Report::default()
    };
    while let Some(mine) = workers.join_next().await {
        let mine = mine.context("a bench client panicked")?;
        report.decided += mine.decided;
        report.errors += mine.errors;
        report.start.extend(mine.start);
        report.decisions.extend(mine.decisions);
        for error in mine.first_errors {
            if report.first_errors.len() < ERRORS_SHOWN && !report.first_errors.contains(&error) {
                report.first_errors.push(error);
            }
        }
    }
    report.wall = started.elapsed();
    Ok(report)
}

/// One instance: started, then every signer approves at once; it must end with one final task.
async fn one(
    args: &BenchArgs,
    channel: &tonic::transport::Channel,
    version: i32,
    names: &[String],
    report: &mut Report,
) -> anyhow::Result<()> {
    let variables =
        json!({"signers": names, "approver": APPROVER, "contract": "bench", "amount": 1});
    let serde_json::Value::Object(variables) = variables else {
        bail!("variables are an object");
    };
    let message = pb::StartProcessRequest {
        definition_key: "countersign".into(),
        version,
        variables: Some(convert::json_to_struct(&variables)),
        request_id: uuid::Uuid::now_v7().to_string(),
        ..Default::default()
    };
    let mut workflow = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
    let started = Instant::now();
    let instance = workflow
        .start_process(as_user(message, &Identity::of(args, INITIATOR)?))
        .await
        .map_err(|s| anyhow::anyhow!("StartProcess: {}: {}", s.code(), s.message()))?
        .into_inner();
    report.start.push(started.elapsed());
    let mut racers = JoinSet::new();
    for task in instance.open_tasks {
        let mut tasks = pb::task_service_client::TaskServiceClient::new(channel.clone());
        let user = Identity::of(args, &task.assignee)?;
        racers.spawn(async move {
            let message = pb::CompleteTaskRequest {
                task_id: task.id,
                outcome: "approve".into(),
                request_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            };
            let started = Instant::now();
            tasks
                .complete_task(as_user(message, &user))
                .await
                .map(|_| started.elapsed())
                .map_err(|s| anyhow::anyhow!("CompleteTask: {}: {}", s.code(), s.message()))
        });
    }
    while let Some(latency) = racers.join_next().await {
        report
            .decisions
            .push(latency.context("a signer panicked")??);
    }
    let get = pb::GetProcessInstanceRequest { id: instance.id };
    let after = workflow
        .get_process_instance(as_user(get, &Identity::of(args, "admin")?))
        .await
        .context("GetProcessInstance")?
        .into_inner();
    open_task(&after, "final_approval").map(|_| ())
}

async fn setup(args: &BenchArgs, addr: &str, signers: &[String]) -> anyhow::Result<i32> {
    let channel = connect(addr).await?;
    let admin = Identity::of(args, "admin")?;
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    let users = signers
        .iter()
        .map(String::as_str)
        .chain([APPROVER, INITIATOR]);
    for id in users {
        let user = pb::User {
            id: id.into(),
            display_name: id.into(),
            email: if args.without_email {
                String::new()
            } else {
                format!("{id}@bench.example")
            },
            locale: "en".into(),
            ..Default::default()
        };
        directory
            .upsert_user(as_user(pb::UpsertUserRequest { user: Some(user) }, &admin))
            .await
            .with_context(|| format!("adding user {id}"))?;
    }
    let message = pb::DeployDefinitionRequest {
        bpmn_xml: COUNTERSIGN_BPMN.as_bytes().to_vec(),
        request_id: String::new(),
    };
    let definition = pb::workflow_service_client::WorkflowServiceClient::new(channel)
        .deploy_definition(as_user(message, &admin))
        .await
        .context("deploying examples/countersign.bpmn")?
        .into_inner();
    Ok(definition.version)
}
