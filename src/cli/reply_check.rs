//! `replyflow reply-check FILE.eml [--outcomes approve,reject,...]`: how a reply would be read,
//! without side effects (the tool for "I replied and nothing happened"). Prints one JSON object.
use std::{path::Path, process::ExitCode};

use crate::mail::reply::{OutcomeWords, read_reply};

pub(super) fn run(file: &Path, outcomes: &str) -> ExitCode {
    let raw = match std::fs::read(file) {
        Ok(raw) => raw,
        Err(err) => {
            eprintln!("error: cannot read {}: {err}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let ids: Vec<&str> = outcomes
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let ids = if ids.is_empty() {
        vec!["approve", "reject"]
    } else {
        ids
    };
    let reading = read_reply(&raw, &OutcomeWords::defaults(&ids), None);
    match serde_json::to_string_pretty(&reading) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
