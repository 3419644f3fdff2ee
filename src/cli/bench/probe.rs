//! The statement probe: how many SQL statements each RPC of the round trip runs. Under the load
//! the statements of 32 clients and of the background workers interleave and cannot be told
//! apart, so after it a few more instances run one call at a time, against a server on the same
//! settings and database that serves the API alone: the same handlers, but no outbox sender, no
//! reminder ticks and no inbound reader. Everything counted from one request to the next is then
//! caused by the first: an RPC's window closes at the next request, not at its answer, because
//! SQLite's worker thread may log a statement just after handing back its rows.
use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    BenchArgs, connect, open_task,
    roundtrip::{Clients, Rpc, ensure_completed, setup},
    statements::{self, Counting},
};
use crate::{api, app::Application, clock::SystemClock, config::Settings};

/// Instances run before counting: the pool opens its connections (their PRAGMAs are statements
/// too) and the statement caches fill.
const WARM_UP: usize = 2;

/// Statements per RPC, one sample per probed instance.
#[derive(Debug, Default)]
pub(super) struct StatementCounts {
    /// Indexed like [`Rpc::ALL`].
    pub(super) per_rpc: [Vec<u64>; 3],
    /// With --show-statements: the statements of the last probed manager's CompleteTask.
    pub(super) listing: Vec<String>,
}

/// The counter's value at each request, in order (start, manager, finance per instance).
#[derive(Debug, Default)]
struct Marks {
    at_request: Vec<u64>,
    /// The window of the listed CompleteTask.
    listed: Option<(u64, u64)>,
}

pub(super) async fn run(args: &BenchArgs, settings: &Settings) -> anyhow::Result<StatementCounts> {
    // Built for its wiring (store, mailer, workflow) only; it is never run, so none of its
    // workers start, and its listener closes when it is dropped.
    let application = Application::build(settings, Arc::new(SystemClock))
        .await
        .context("starting the probe's server")?;
    let workflow = application.workflow();
    drop(application);
    let authenticator = Arc::new(
        api::auth::Authenticator::from_settings(&settings.security, &settings.server.listen)
            .context("security")?,
    );
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the probe's listener")?;
    let addr = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(
        listener,
        workflow.clone(),
        authenticator,
        None,
        shutdown.clone(),
    ));
    let counting = Counting::start();
    let marks = calls(args, &addr).await;
    shutdown.cancel();
    server
        .await
        .context("the probe's server panicked")?
        .context("the probe's server")?;
    // Closing waits for each connection's worker, so the last statement is logged by now.
    workflow.store().close().await;
    let end = statements::count();
    drop(counting);
    let listing = statements::take_listing();
    let mut marks = marks?;
    marks.at_request.push(end);

    let mut counts = StatementCounts::default();
    let windows: Vec<u64> = marks.at_request.windows(2).map(|w| w[1] - w[0]).collect();
    for instance in windows.chunks(3).skip(WARM_UP) {
        for rpc in Rpc::ALL {
            counts.per_rpc[rpc as usize].push(instance[rpc as usize]);
        }
    }
    if let Some((from, to)) = marks.listed {
        counts.listing = listing
            .into_iter()
            .filter(|(n, _)| (from + 1..=to).contains(n))
            .map(|(_, statement)| statement)
            .collect();
    }
    Ok(counts)
}

/// Runs the warm-up and the probed instances one call at a time, noting the count at each
/// request.
async fn calls(args: &BenchArgs, addr: &str) -> anyhow::Result<Marks> {
    let version = setup(args, addr).await?;
    let mut clients = Clients::new(args, connect(addr).await?, version)?;
    let mut latencies: [Vec<Duration>; 3] = Default::default();
    let mut marks = Marks::default();
    let first = args.instances;
    let last = first + WARM_UP + args.statement_probe - 1;
    for n in first..=last {
        marks.at_request.push(statements::count());
        let task = clients.start(n, &mut latencies).await?;

        let manager = statements::count();
        if args.show_statements && n == last {
            statements::start_listing();
        }
        marks.at_request.push(manager);
        let instance = clients.complete(Rpc::Manager, task, &mut latencies).await?;
        let task = open_task(&instance, "finance_approval")?;

        let finance = statements::count();
        if args.show_statements && n == last {
            marks.listed = Some((manager, finance));
        }
        marks.at_request.push(finance);
        let instance = clients.complete(Rpc::Finance, task, &mut latencies).await?;
        ensure_completed(&instance)?;
    }
    Ok(marks)
}
