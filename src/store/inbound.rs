//! The inbound log: one row per received mail with its verdict, and the claims that make a reply
//! count once (by Message-ID and by content hash).
use std::collections::HashMap;

use sqlx::{Any, AssertSqlSafe, Row, any::AnyRow};

use super::{
    MAX_IN_LIST, Store, Tx,
    paging::{Filter, Order, PageRequest},
    placeholders,
    rows::{self, TASK_COLUMNS, USER_COLUMNS},
};
use crate::{
    error::{Error, Result},
    model::{InboundEmail, Page, Task, User, Verdict},
};

const COLUMNS: &str = "id, message_id, sha256, sender, subject, transport, size_bytes, task_id, \
    instance_id, context_id, correlation, verdict, reason, outcome, comment, delegate_to, \
    authentication_results, explanation, answered, received_at";

fn inbound(row: &AnyRow) -> Result<InboundEmail> {
    let verdict: String = row.try_get("verdict")?;
    let correlation: String = row.try_get("correlation")?;
    let explanation: String = row.try_get("explanation")?;
    Ok(InboundEmail {
        id: row.try_get("id")?,
        message_id: row.try_get("message_id")?,
        sha256: row.try_get("sha256")?,
        sender: row.try_get("sender")?,
        subject: row.try_get("subject")?,
        transport: row.try_get("transport")?,
        size_bytes: row.try_get("size_bytes")?,
        task_id: row.try_get("task_id")?,
        instance_id: row.try_get("instance_id")?,
        context_id: row.try_get("context_id")?,
        correlation: serde_json::from_str(&correlation).unwrap_or_default(),
        verdict: Verdict::parse(&verdict).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "corrupt row: inbound_emails.verdict = {verdict:?}"
            ))
        })?,
        reason: row.try_get("reason")?,
        outcome: row.try_get("outcome")?,
        comment: row.try_get("comment")?,
        delegate_to: row.try_get("delegate_to")?,
        authentication_results: row.try_get("authentication_results")?,
        explanation: serde_json::from_str(&explanation).unwrap_or_default(),
        answered: row.try_get::<i64, _>("answered")? != 0,
        received_at: row.try_get("received_at")?,
    })
}

/// A database failure that says nothing about the statement or the data: the server is
/// unreachable or the pool exhausted. Such a failure is not held against a received mail.
pub fn is_transient(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.downcast_ref::<sqlx::Error>().is_some_and(|e| {
        matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
        )
    })
}

impl Store {
    /// Counts one more failed ingestion of the mail with content hash `sha256` (its own
    /// statement, outside any batch's transaction, so that it stays when the batch rolls back).
    /// How many times it has failed so far.
    pub async fn note_inbound_failure(&self, sha256: &str, error: &str, now: i64) -> Result<i64> {
        let error: String = error.chars().take(2000).collect();
        let attempts = sqlx::query_scalar::<Any, i64>(
            "INSERT INTO inbound_failures (sha256, attempts, last_error, first_at, last_at) \
             VALUES ($1, 1, $2, $3, $3) ON CONFLICT (sha256) DO UPDATE SET \
             attempts = inbound_failures.attempts + 1, last_error = excluded.last_error, last_at = excluded.last_at \
             RETURNING attempts",
        )
        .bind(sha256)
        .bind(&error)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(attempts)
    }
}

impl Store {
    /// The tasks with these ids (those that exist), by id: what a batch of replies is about.
    pub async fn tasks_by_ids(&self, ids: &[String]) -> Result<HashMap<String, Task>> {
        let mut found = HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(found);
        }
        let mut conn = self.pool.acquire().await?;
        for chunk in ids.chunks(MAX_IN_LIST) {
            let sql = format!(
                "SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let task = rows::task(&row)?;
                found.insert(task.id.clone(), task);
            }
        }
        Ok(found)
    }

    /// The registered user of each address (an address or an alias, lower case), `None` for an
    /// address nobody has: the senders of a batch of received mail, each one looked up.
    pub async fn users_by_addresses(
        &self,
        addresses: &[String],
    ) -> Result<HashMap<String, Option<User>>> {
        let mut found: HashMap<String, Option<User>> = addresses
            .iter()
            .map(|address| (address.to_lowercase(), None))
            .collect();
        if addresses.is_empty() {
            return Ok(found);
        }
        let columns = USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conn = self.pool.acquire().await?;
        for chunk in addresses.chunks(MAX_IN_LIST) {
            let sql = format!(
                "SELECT e.address AS rf_address, {columns} FROM user_emails e \
                 JOIN users u ON u.id = e.user_id WHERE e.address IN ({})",
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for address in chunk {
                query = query.bind(address.to_lowercase());
            }
            for row in query.fetch_all(&mut *conn).await? {
                let address: String = row.try_get("rf_address")?;
                found.insert(address, Some(rows::user(&row)?));
            }
        }
        Ok(found)
    }
}

impl Tx {
    /// Opens the savepoint `name` inside this transaction: what is written after it can be
    /// undone alone ([`Tx::rollback_to_savepoint`]) while the rest of the transaction stays.
    /// A batch of received mail commits once, each mail in a savepoint of its own. `name` is one
    /// of the caller's constants, never input.
    pub async fn savepoint(&mut self, name: &'static str) -> Result<()> {
        self.savepoint_statement("SAVEPOINT", name).await
    }

    /// Keeps what was written since the savepoint `name` (as part of the transaction) and ends
    /// the savepoint.
    pub async fn release_savepoint(&mut self, name: &'static str) -> Result<()> {
        self.savepoint_statement("RELEASE SAVEPOINT", name).await
    }

    /// Undoes what was written since the savepoint `name`, which stays open. On PostgreSQL this
    /// also clears a failed statement's abort of the transaction.
    pub async fn rollback_to_savepoint(&mut self, name: &'static str) -> Result<()> {
        self.savepoint_statement("ROLLBACK TO SAVEPOINT", name)
            .await
    }

    async fn savepoint_statement(&mut self, verb: &str, name: &'static str) -> Result<()> {
        debug_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        sqlx::query::<Any>(AssertSqlSafe(format!("{verb} {name}")))
            .execute(&mut *self.inner)
            .await?;
        Ok(())
    }

    /// Claims a key (Message-ID or content hash) for `inbound_id`; the id that holds it otherwise.
    pub async fn claim_inbound(&mut self, key: &str, inbound_id: &str) -> Result<Option<String>> {
        self.claim_inbound_keys(&[key], inbound_id).await
    }

    /// Claims every key for `inbound_id` in one statement when none is held (the usual case).
    /// Otherwise the id holding the first held key, in the order given, and none of the keys is
    /// left claimed by `inbound_id` — as if they had been claimed one by one, in order, stopping
    /// at the first held.
    pub async fn claim_inbound_keys(
        &mut self,
        keys: &[&str],
        inbound_id: &str,
    ) -> Result<Option<String>> {
        if keys.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "INSERT INTO inbound_seen (key, inbound_id) VALUES {} \
             ON CONFLICT (key) DO NOTHING RETURNING key",
            (0..keys.len())
                .map(|i| format!("(${}, ${})", i + 2, 1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query_scalar::<Any, String>(AssertSqlSafe(sql)).bind(inbound_id);
        for key in keys {
            query = query.bind(*key);
        }
        let claimed = query.fetch_all(&mut *self.inner).await?;
        let Some(held) = keys.iter().find(|k| !claimed.iter().any(|c| c == *k)) else {
            return Ok(None);
        };
        let holder =
            sqlx::query_scalar::<Any, String>("SELECT inbound_id FROM inbound_seen WHERE key = $1")
                .bind(*held)
                .fetch_one(&mut *self.inner)
                .await?;
        let position = keys.iter().position(|k| k == held).unwrap_or(0);
        // What a one-by-one claim stopping at `held` would not have claimed.
        let after: Vec<&&str> = keys[position + 1..]
            .iter()
            .filter(|k| claimed.iter().any(|c| c == **k))
            .collect();
        if !after.is_empty() {
            let sql = format!(
                "DELETE FROM inbound_seen WHERE inbound_id = $1 AND key IN ({})",
                placeholders(2, after.len())
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql)).bind(inbound_id);
            for key in after {
                query = query.bind(*key);
            }
            query.execute(&mut *self.inner).await?;
        }
        Ok(Some(holder))
    }

    /// Answers queued to `recipient` since `since`, for the per-sender rate limit.
    pub async fn recent_answers(&mut self, recipient: &str, since: i64) -> Result<i64> {
        let count = sqlx::query_scalar::<Any, i64>(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'answer' AND recipient = $1 AND created_at >= $2",
        )
        .bind(recipient)
        .bind(since)
        .fetch_one(&mut *self.inner)
        .await?;
        Ok(count)
    }

    /// Answers queued since `since`, to anyone: the global answer budget.
    pub async fn recent_answers_total(&mut self, since: i64) -> Result<i64> {
        let count = sqlx::query_scalar::<Any, i64>(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'answer' AND created_at >= $1",
        )
        .bind(since)
        .fetch_one(&mut *self.inner)
        .await?;
        Ok(count)
    }

    pub async fn insert_inbound(&mut self, m: &InboundEmail) -> Result<()> {
        sqlx::query::<Any>(AssertSqlSafe(format!(
            "INSERT INTO inbound_emails ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)"
        )))
        .bind(&m.id)
        .bind(&m.message_id)
        .bind(&m.sha256)
        .bind(&m.sender)
        .bind(&m.subject)
        .bind(&m.transport)
        .bind(m.size_bytes)
        .bind(&m.task_id)
        .bind(&m.instance_id)
        .bind(&m.context_id)
        .bind(to_json(&m.correlation))
        .bind(m.verdict.as_str())
        .bind(&m.reason)
        .bind(&m.outcome)
        .bind(&m.comment)
        .bind(&m.delegate_to)
        .bind(&m.authentication_results)
        .bind(to_json(&m.explanation))
        .bind(i64::from(m.answered))
        .bind(m.received_at)
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }
}

/// JSON text of plain data (it always serializes).
fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// What the inbound log can be narrowed by; empty means any.
#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    pub task_id: String,
    pub sender: String,
    pub message_id: String,
    pub verdict: Option<Verdict>,
}

impl Store {
    pub async fn inbound(&self, id: &str) -> Result<Option<InboundEmail>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM inbound_emails WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(inbound).transpose()
    }

    /// The inbound log, newest first.
    pub async fn list_inbound(
        &self,
        filter: &InboundFilter,
        page: &PageRequest,
    ) -> Result<Page<InboundEmail>> {
        let mut f = Filter::default();
        f.eq_if("task_id", &filter.task_id);
        f.eq_if("sender", &filter.sender);
        f.eq_if("message_id", &filter.message_id);
        if let Some(verdict) = filter.verdict {
            f.eq("verdict", verdict.as_str());
        }
        self.fetch_page(
            &format!("SELECT {COLUMNS} FROM inbound_emails"),
            f,
            page,
            Order::NewestFirst,
            inbound,
            |m| &m.id,
        )
        .await
    }

    /// Approval contexts by the id embedded in our Message-IDs, or by subject tag.
    pub async fn approval_by_tag(
        &self,
        tag: &str,
    ) -> Result<Option<crate::model::ApprovalContext>> {
        let id = sqlx::query_scalar::<Any, String>(
            "SELECT id FROM approval_contexts WHERE subject_tag = $1 ORDER BY sent_at DESC LIMIT 1",
        )
        .bind(tag)
        .fetch_optional(&self.pool)
        .await?;
        match id {
            Some(id) => self.approval_context(&id).await,
            None => Ok(None),
        }
    }
}
