//! replyflow: a gRPC server for office-automation approval workflows.
//!
//! One process, four parts (DESIGN §1): [`api`] is a thin tonic layer that authenticates the
//! caller, validates input and maps errors to status codes; [`workflow`] holds the use cases,
//! each one database transaction around a decision of the pure [`engine`]; [`store`] holds every
//! SQL statement (SQLite or PostgreSQL through one code path); long-running workers (mail,
//! reminders) will live beside them, stopped by the same shutdown token as the server.
//! [`app`] wires these together; `main.rs` only parses the command line.
pub mod api;
pub mod app;
pub mod backoff;
pub mod bounds;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod duration;
pub mod engine;
pub mod error;
pub mod mail;
pub mod model;
pub mod policy;
pub mod proto;
pub mod store;
pub mod workers;
pub mod workflow;
