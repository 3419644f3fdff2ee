//! The command line: `serve` (the default), `migrate`, `check FILE...`, `ctl ...` (a small client
//! over the generated stubs) and `bench` (the load tool). Each subcommand lives in its own file.
mod bench;
mod bench_reminders;
mod check;
mod ctl;
mod reply_check;
mod serve;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "replyflow",
    version,
    about = "Approval workflows: approve by replying to an email"
)]
pub struct Cli {
    /// TOML configuration file; every key `a.b` may also be set as REPLYFLOW_A_B.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server (the default).
    Serve(serve::ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(serve::DatabaseArgs),
    /// Validate BPMN definitions; prints every error with its element id.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// A small gRPC client for the walkthrough and for scripts.
    Ctl(ctl::CtlArgs),
    /// Load test: run N two-level expense instances over gRPC with C concurrent clients and print
    /// instances/s and per-RPC latency (in-process server unless --addr is given).
    Bench(bench::BenchArgs),
    /// Reminder scheduler load test: arm --armed reminders of which --due are due, run one tick
    /// to the inbox channel, print its duration and reminders fired per second.
    BenchReminders(bench_reminders::BenchRemindersArgs),
    /// Show how a reply email would be read (kind, outcome, comment, correlation, explanation)
    /// as one JSON object, without side effects.
    ReplyCheck {
        #[arg(value_name = "FILE.eml")]
        file: PathBuf,
        /// Outcome ids in the order of their numbers in the approval mail.
        #[arg(long, default_value = "approve,reject", value_name = "ID,ID,...")]
        outcomes: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or(Command::Serve(serve::ServeArgs::default()));
    if let Command::Check { files } = &command {
        return check::run(files);
    }
    if let Command::ReplyCheck { file, outcomes } = &command {
        return reply_check::run(file, outcomes);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve::serve(cli.config.as_deref(), args).await,
            Command::Migrate(args) => serve::migrate(cli.config.as_deref(), args).await,
            Command::Ctl(args) => ctl::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::BenchReminders(args) => bench_reminders::run(args).await,
            Command::Check { .. } | Command::ReplyCheck { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
