#![allow(unreachable_pub)]
//! Mail delivery against a real mail stack: the outbox worker sends over SMTP to the Postfix that
//! `./scripts/test` starts on loopback, and the tests read what arrived from Dovecot over IMAPS.
//! Without RF_MAIL_* in the environment every test fails with a hint (never skips silently).
//! The database is always a fresh SQLite file: this binary runs once per suite, not per backend
//! (except crash.rs, which honours TEST_DATABASE).
//!
//! Tests that need Postfix running hold a shared lock; the one that stops Postfix holds it alone.
//! `bench` (ignored) compares the worker's throughput into Postfix's smtp-sink with smtp-source:
//! `cargo test --release --test mail -- --ignored --nocapture bench` (or scripts/bench-smtp.sh).
#[path = "../shared/app.rs"]
mod app;
#[path = "../shared/approval_mail.rs"]
mod approval_mail;
// The throwaway database of the bench, shared so that there is one way to make one.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli/bench/database.rs"]
mod fresh_db;
mod helpers;
mod imap;
#[path = "../shared/pki.rs"]
mod pki;
#[path = "../shared/process.rs"]
mod process;

mod approval;
mod bench;
mod countersign;
mod crash;
mod delivery;
mod inbound;
mod outage;
mod oversized;
mod self_signed;
mod verdicts;
