//! `--submit-replies N`: SubmitInboundEmail latency over N replies sent one at a time, then N more
//! from `--concurrency` clients; every reply is applied (completes the manager's task).
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::task::JoinSet;

use super::{
    BenchArgs, ERRORS_SHOWN,
    auth::{Identity, as_user},
    connect,
    inbound::prepare,
    report::{ms, percentile},
};
use crate::{proto::pb, workflow::Workflow};

pub(super) async fn submit(
    args: &BenchArgs,
    addr: &str,
    workflow: &Arc<Workflow>,
    n: usize,
    backend: &str,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut replies = prepare(args, addr, workflow, 2 * n, false).await?;
    eprintln!(
        "prepared {} tasks and replies in {:.1} s",
        2 * n,
        t.elapsed().as_secs_f64()
    );
    let concurrent = replies.split_off(n);
    println!(
        "replyflow bench --submit-replies: SubmitInboundEmail, each reply applied (completes a task)"
    );
    println!("backend: {backend}; approvers {}", args.approvers);
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "latency (ms)", "count", "mean", "p50", "p90", "p99", "max", "replies/s"
    );
    let mut failed = 0;
    for (label, batch, clients) in [
        ("sequential (1 client)".to_string(), replies, 1),
        (
            format!("concurrent ({} clients)", args.concurrency),
            concurrent,
            args.concurrency,
        ),
    ] {
        let connections = clients.div_ceil(args.clients_per_connection);
        let mut channels = Vec::with_capacity(connections);
        for _ in 0..connections {
            channels.push(connect(addr).await?);
        }
        let batch = Arc::new(batch);
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut set = JoinSet::new();
        for c in 0..clients {
            let mut client = pb::approval_service_client::ApprovalServiceClient::new(
                channels[c / args.clients_per_connection].clone(),
            );
            let (batch, next) = (batch.clone(), next.clone());
            set.spawn(async move {
                let gateway = Identity::dev("mail-gateway");
                let (mut samples, mut errors) = (Vec::new(), Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(reply) = batch.get(i) else {
                        return (samples, errors);
                    };
                    let message = pb::SubmitInboundEmailRequest {
                        raw: reply.raw.clone(),
                        recipient: reply.recipient.clone(),
                    };
                    let t = Instant::now();
                    match client
                        .submit_inbound_email(as_user(message, &gateway))
                        .await
                    {
                        Ok(r) if r.get_ref().verdict == pb::Verdict::Applied as i32 => {
                            samples.push(t.elapsed());
                        }
                        Ok(r) => errors.push(format!("reply {i}: {}", r.get_ref().reason)),
                        Err(s) => errors.push(format!("reply {i}: {}", s.message())),
                    }
                }
            });
        }
        let mut samples = Vec::new();
        let mut errors = Vec::new();
        while let Some(done) = set.join_next().await {
            let (s, e) = done.context("a client panicked")?;
            samples.extend(s);
            errors.extend(e);
        }
        let wall = started.elapsed();
        samples.sort_unstable();
        let mean = if samples.is_empty() {
            Duration::ZERO
        } else {
            samples.iter().sum::<Duration>() / samples.len() as u32
        };
        println!(
            "{label:<28} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10.1}",
            samples.len(),
            ms(mean),
            ms(percentile(&samples, 0.50)),
            ms(percentile(&samples, 0.90)),
            ms(percentile(&samples, 0.99)),
            ms(samples.last().copied().unwrap_or_default()),
            samples.len() as f64 / wall.as_secs_f64().max(f64::EPSILON)
        );
        for e in errors.iter().take(ERRORS_SHOWN) {
            println!("error: {e}");
        }
        failed += errors.len();
    }
    if failed > 0 {
        bail!("{failed} replies were not applied");
    }
    Ok(())
}
