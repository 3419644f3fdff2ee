//! `--return-wide N`: the cost of a 退回 that has a lot to undo. Each instance runs a submit step,
//! then a parallel split into two 会签 of N/2 signers each — N open tasks, each with its approval
//! mail and reminder — and one signer returns it to the submit step: every other task is
//! withdrawn, its approval context revoked, its queued mail dropped and its reminder cancelled,
//! in one transition. Prints the ReturnTask latency and checks one task is open afterwards.
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::json;

use super::{
    BenchArgs, INITIATOR,
    auth::{Identity, as_user},
    connect,
    report::latency_row,
    server::InProcess,
};
use crate::{api::convert, proto::pb};

const DRAFTER: &str = "drafter";

fn definition() -> String {
    let sign = |id: &str, list: &str| {
        format!(
            r#"<userTask id="{id}" name="{id}" replyflow:reminderType="daily"><multiInstanceLoopCharacteristics replyflow:collection="{list}"/></userTask>"#
        )
    };
    let flow = |from: &str, to: &str| {
        format!(r#"<sequenceFlow id="{from}_{to}" sourceRef="{from}" targetRef="{to}"/>"#)
    };
    format!(
        r#"<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:replyflow="https://replyflow.dev/schema/1">
        <process id="wide_return" isExecutable="true">
        <extensionElements><replyflow:reminderType id="daily" count="3" interval="P1D" channels="inbox,email"/></extensionElements>
        <startEvent id="start"/><userTask id="submit" replyflow:assignee="{DRAFTER}"/>
        <parallelGateway id="fork"/>{}{}<parallelGateway id="join"/><endEvent id="end"/>
        {}{}{}{}{}{}{}{}</process></definitions>"#,
        sign("sign_a", "team_a"),
        sign("sign_b", "team_b"),
        flow("start", "submit"),
        flow("submit", "fork"),
        flow("fork", "sign_a"),
        flow("fork", "sign_b"),
        flow("sign_a", "join"),
        flow("sign_b", "join"),
        flow("join", "end"),
        ""
    )
}

pub(super) async fn run(args: &BenchArgs, open: usize) -> anyhow::Result<()> {
    if open < 2 || args.instances == 0 {
        bail!("--return-wide needs at least 2 open tasks and --instances at least 1");
    }
    let server = InProcess::start(args).await?;
    let measured = measure(&server.args, &server.addr, open).await;
    let backend = server.backend.clone();
    let latencies = server.stop(async |_, _| measured).await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "replyflow bench --return-wide: {} ReturnTask(s), each undoing {open} open signer tasks (two 会签 in parallel branches)",
        latencies.len()
    );
    let _ = writeln!(out, "backend:      {backend}");
    let _ = writeln!(
        out,
        "{:<24} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency (ms)", "count", "mean", "p50", "p90", "p99", "max"
    );
    latency_row(&mut out, "ReturnTask", latencies);
    print!("{out}");
    Ok(())
}

async fn measure(args: &BenchArgs, addr: &str, open: usize) -> anyhow::Result<Vec<Duration>> {
    let channel = connect(addr).await?;
    let admin = Identity::of(args, "admin")?;
    let team = |prefix: &str, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:03}")).collect()
    };
    let (team_a, team_b) = (team("a", open / 2), team("b", open - open / 2));
    let mut directory = pb::directory_service_client::DirectoryServiceClient::new(channel.clone());
    let everyone = team_a
        .iter()
        .chain(&team_b)
        .map(String::as_str)
        .chain([DRAFTER, INITIATOR]);
    for id in everyone {
        let user = pb::User {
            id: id.into(),
            display_name: id.into(),
            email: format!("{id}@bench.example"),
            locale: "en".into(),
            ..Default::default()
        };
        directory
            .upsert_user(as_user(pb::UpsertUserRequest { user: Some(user) }, &admin))
            .await
            .with_context(|| format!("adding user {id}"))?;
    }
    let mut workflow = pb::workflow_service_client::WorkflowServiceClient::new(channel.clone());
    let mut tasks = pb::task_service_client::TaskServiceClient::new(channel);
    let deploy = pb::DeployDefinitionRequest {
        bpmn_xml: definition().into_bytes(),
        request_id: String::new(),
    };
    workflow
        .deploy_definition(as_user(deploy, &admin))
        .await
        .context("deploying the wide-return process")?;
    let serde_json::Value::Object(variables) = json!({"team_a": team_a, "team_b": team_b}) else {
        bail!("variables are an object");
    };
    let mut latencies = Vec::with_capacity(args.instances);
    for _ in 0..args.instances {
        let start = pb::StartProcessRequest {
            definition_key: "wide_return".into(),
            variables: Some(convert::json_to_struct(&variables)),
            ..Default::default()
        };
        let instance = workflow
            .start_process(as_user(start, &Identity::of(args, INITIATOR)?))
            .await
            .context("StartProcess")?
            .into_inner();
        let submit = instance
            .open_tasks
            .first()
            .context("the submit task")?
            .clone();
        let complete = pb::CompleteTaskRequest {
            task_id: submit.id,
            outcome: "approve".into(),
            ..Default::default()
        };
        let signing = tasks
            .complete_task(as_user(complete, &Identity::of(args, DRAFTER)?))
            .await
            .context("submitting")?
            .into_inner()
            .instance
            .context("the instance")?;
        if signing.open_tasks.len() != open {
            bail!("{} tasks open, expected {open}", signing.open_tasks.len());
        }
        let returner = signing.open_tasks[0].clone();
        let back = pb::ReturnTaskRequest {
            task_id: returner.id,
            target_activity_id: "submit".into(),
            comment: "bench".into(),
            ..Default::default()
        };
        let started = Instant::now();
        let answer = tasks
            .return_task(as_user(back, &Identity::of(args, &returner.assignee)?))
            .await
            .context("ReturnTask")?
            .into_inner();
        latencies.push(started.elapsed());
        let left = answer.instance.map_or(0, |i| i.open_tasks.len());
        if left != 1 {
            bail!("{left} tasks open after the return, expected the submit step alone");
        }
    }
    Ok(latencies)
}
