#![allow(unreachable_pub)]
//! One integration binary (zero-to-production style): every test spawns the real server on port 0
//! with a fresh database and talks to it over TCP with the generated client. Run with
//! TEST_DATABASE=sqlite (default) or TEST_DATABASE=postgres; scripts/test runs both.
#[path = "../shared/app.rs"]
mod app;
#[path = "../shared/approval_mail.rs"]
mod approval_mail;
// The throwaway database of the bench, shared so that there is one way to make one.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli/bench/database.rs"]
mod fresh_db;
mod helpers;
#[path = "../shared/pki.rs"]
mod pki;
#[path = "../shared/process.rs"]
mod process;

mod approvals;
mod authz;
mod bad_input;
mod binary;
mod branches;
mod carbon_copy;
mod concurrency;
mod delegation;
mod group_commit;
mod identity;
mod limits;
mod mail_trust;
mod messages;
mod multi_instance;
mod protocol;
mod recall;
mod reminder_stats;
mod reminder_types;
mod reminders;
mod replies;
mod requests;
mod returns;
mod signer_mail;
mod stories;
mod suspend;
mod tls;
mod watch;
mod who_approves;
