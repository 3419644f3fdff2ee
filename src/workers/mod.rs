//! Long-running workers started by the server and stopped by its one shutdown token. Each is a
//! `run_once` step (testable on its own) inside a loop that only waits and backs off; their state
//! lives in the database, so a restart resumes where they stopped.
pub mod inbound;
pub mod outbox;
pub mod reminders;
