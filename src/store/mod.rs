//! Every SQL statement of the project lives under this module. One schema, written once against
//! sqlx's `Any` driver so that business logic never branches on the backend: SQLite (WAL, the
//! embedded default) or PostgreSQL (production, several server instances). The few statements
//! whose dialects differ ask [`Backend`]. Migrations are embedded per backend and run at start.
//!
//! Times are UTC milliseconds (`BIGINT`), JSON is stored as text, ids are UUIDv7 text so that id
//! order is creation order and pages are keyed by the last id seen.
//!
//! Dynamic SQL (`AssertSqlSafe`) is only ever assembled from this module's own column lists and
//! numbered placeholders; every value is bound, never formatted in.
pub mod approvals;
mod batch;
mod definitions;
pub mod imap_state;
pub mod inbound;
mod instances;
mod messages;
mod outbox;
mod paging;
pub mod reminder_stats;
pub mod reminder_types;
pub mod reminders;
mod rows;
pub mod users;
mod writer;
pub mod writes;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use sqlx::{
    Any, AnyPool, AssertSqlSafe, Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub use batch::{Arg, Batch, Guards};
pub use inbound::is_transient;
pub use instances::{InstanceFilter, InstanceRecord, TaskFilter};
pub use messages::MessageSelection;
pub use outbox::{Delivery, DeliveryOutcome};
pub use paging::PageRequest;
pub use writer::{GroupCommits, Step};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer. Transactions queue here, in order, instead of meeting
    /// SQLITE_BUSY and polling in SQLite's busy handler (whose sleeps grow to 100 ms and made
    /// the tail latency of concurrent writes). None on PostgreSQL, which locks rows.
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Group commit ([`Store::write`]); None inside the writer task itself.
    group: Option<writer::GroupWriter>,
}

/// How the database is opened; the URL itself may hold a password and is never logged.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub max_connections: u32,
    /// SQLite: fsync every commit (`true`) or rely on WAL checkpoints (`false`).
    pub synchronous_full: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            synchronous_full: true,
        }
    }
}

impl Store {
    pub async fn connect(url: &str, options: &ConnectOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            // Create the file on first run; `mode=rwc` is what sqlx needs for that.
            let url = if url.contains("mode=") {
                url.to_string()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            (Backend::Postgres, url.to_string())
        };
        let connect = AnyConnectOptions::from_str(&url).context("parsing database.url")?;
        let synchronous = if options.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        };
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Writers wait for each other instead of failing with SQLITE_BUSY; every
                        // write transaction starts with a write so waiting is always possible.
                        // busy_timeout first: a new connection's journal_mode pragma may meet a
                        // checkpoint and would otherwise fail at once with SQLITE_BUSY.
                        conn.execute("PRAGMA busy_timeout = 30000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        let pragma = format!("PRAGMA synchronous = {synchronous}");
                        conn.execute(AssertSqlSafe(pragma)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .context("connecting to the database")?;
        let writer = (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let mut store = Self {
            pool,
            backend,
            writer,
            group: None,
        };
        // PostgreSQL: a few groups commit side by side, leaving most connections to readers.
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => (options.max_connections as usize / 2).clamp(1, 4),
        };
        store.group = Some(writer::GroupWriter::start(store.clone(), writers));
        Ok(store)
    }

    /// The pool itself, for tests and tools that inspect tables directly.
    pub fn pool(&self) -> &sqlx::AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await,
        }
        .context("running migrations")
    }

    /// A transaction; on SQLite it first waits its turn as the one writer (see `writer`).
    /// Never begin a second one while holding one: on SQLite that waits forever.
    pub async fn begin(&self) -> Result<Tx> {
        let turn = match &self.writer {
            Some(writer) => Some(writer.clone().lock_owned().await),
            None => None,
        };
        // SQLite: IMMEDIATE takes the write lock at BEGIN. A transaction whose first statement
        // reads (the transition writer reads reminders first) would otherwise start as a reader
        // and fail with SQLITE_BUSY, without waiting, when it writes after another connection
        // committed (its snapshot is stale). Only our own queued writers wait for this lock.
        let inner = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            backend: self.backend,
            _turn: turn,
        })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A stored setting (e.g. the generated token secret).
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        let value = sqlx::query_scalar::<Any, String>("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value)
    }

    /// Stores `value` unless the key already has one; returns the value that won.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(self
            .setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }
}

/// At most this many values in one `IN (…)` list of a batched read (SQLite allows 32,766 bound
/// parameters, PostgreSQL 65,535): longer lists are read in several statements.
pub(super) const MAX_IN_LIST: usize = 500;

/// `$first, $first+1, …` for `n` parameters (an IN list, or one VALUES row).
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, …, $c), ($c+1, …), …` for `rows` rows of `columns` parameters: one multi-row statement
/// instead of a round trip per row.
pub(super) fn values_rows(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", placeholders(row * columns + 1, columns)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One database transaction. Dropped without [`Tx::commit`], it rolls back.
#[derive(Debug)]
pub struct Tx {
    inner: sqlx::Transaction<'static, Any>,
    backend: Backend,
    /// Held until commit or drop (SQLite's writer turn). Declared after `inner`, so it is
    /// released after the transaction ends.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Tx {
    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        Ok(())
    }

    /// Records a request id in the transaction of its effect. `Ok(false)`: the id was already
    /// used (the caller returns the earlier result instead of acting twice).
    pub async fn claim_request(
        &mut self,
        scope: &str,
        request_id: &str,
        fingerprint: &str,
        result_id: &str,
        now: i64,
    ) -> Result<bool> {
        // The transition writer's statement, alone: one text for recording a request id.
        let mut batch = Batch::new();
        batch.claim_request(scope, request_id, fingerprint, result_id, now);
        Ok(self.run_batch(batch).await?.has(writes::GUARD_CLAIM))
    }
}

/// A request id seen before: what it was for and what it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorRequest {
    pub fingerprint: String,
    pub result_id: String,
}

impl Store {
    pub async fn prior_request(
        &self,
        scope: &str,
        request_id: &str,
    ) -> Result<Option<PriorRequest>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT fingerprint, result_id FROM requests WHERE scope = $1 AND request_id = $2",
        )
        .bind(scope)
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(fingerprint, result_id)| PriorRequest {
            fingerprint,
            result_id,
        }))
    }
}
