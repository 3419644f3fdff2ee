//! The outbox: mails written in the transaction that decided to send them, claimed by delivery
//! workers with a lease so that with several server instances each mail is attempted by one at a
//! time (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer anyway).
use sqlx::{Any, AssertSqlSafe, Row, any::AnyRow};

use super::{Backend, Store, Tx};
use crate::{
    error::{Error, Result},
    model::{OutboxKind, OutboxMail, OutboxStatus},
};

pub(super) const COLUMNS: &str = "id, kind, context_id, task_id, recipient, sender, message_id, body, status, \
    attempts, next_attempt_at, last_error, created_at, sent_at, fallback";

fn mail(row: &AnyRow) -> Result<OutboxMail> {
    let status: String = row.try_get("status")?;
    let kind: String = row.try_get("kind")?;
    let sent_at: i64 = row.try_get("sent_at")?;
    Ok(OutboxMail {
        id: row.try_get("id")?,
        kind: OutboxKind::parse(&kind).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("corrupt row: outbox.kind = {kind:?}"))
        })?,
        context_id: row.try_get("context_id")?,
        task_id: row.try_get("task_id")?,
        recipient: row.try_get("recipient")?,
        sender: row.try_get("sender")?,
        message_id: row.try_get("message_id")?,
        body: row.try_get("body")?,
        status: OutboxStatus::parse(&status).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("corrupt row: outbox.status = {status:?}"))
        })?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: (sent_at != 0).then_some(sent_at),
        fallback: row.try_get("fallback")?,
    })
}

impl Tx {
    pub async fn insert_outbox(&mut self, m: &OutboxMail) -> Result<()> {
        sqlx::query::<Any>(AssertSqlSafe(format!(
            "INSERT INTO outbox ({COLUMNS}, lease_until) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0)"
        )))
        .bind(&m.id)
        .bind(m.kind.as_str())
        .bind(&m.context_id)
        .bind(&m.task_id)
        .bind(&m.recipient)
        .bind(&m.sender)
        .bind(&m.message_id)
        .bind(m.body.clone())
        .bind(m.status.as_str())
        .bind(m.attempts)
        .bind(m.next_attempt_at)
        .bind(&m.last_error)
        .bind(m.created_at)
        .bind(m.sent_at.unwrap_or(0))
        .bind(&m.fallback)
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// Marks a mail that already left as failed for good (a bounce came back for it), and queues
    /// its fallback. Returns the outbox id, or None when no sent mail has that Message-ID.
    pub async fn fail_sent_mail(
        &mut self,
        message_id: &str,
        error: &str,
        now: i64,
    ) -> Result<Option<String>> {
        let id = sqlx::query_scalar::<Any, String>(
            "UPDATE outbox SET status = 'perm_failed', last_error = $2 \
             WHERE message_id = $1 AND status = 'sent' RETURNING id",
        )
        .bind(message_id)
        .bind(error)
        .fetch_optional(&mut *self.inner)
        .await?;
        if let Some(id) = &id {
            queue_fallback(&mut self.inner, id, error, now).await?;
        }
        Ok(id)
    }

    pub async fn outbox_row(&mut self, id: &str) -> Result<Option<OutboxMail>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *self.inner)
        .await?;
        row.as_ref().map(mail).transpose()
    }
}

/// A row that failed for good and has a fallback gets an outbox_fallbacks row (taken by the
/// reminder scheduler), in the transaction that marks it failed.
async fn queue_fallback(
    conn: &mut sqlx::AnyConnection,
    outbox_id: &str,
    error: &str,
    now: i64,
) -> Result<()> {
    sqlx::query::<Any>(
        "INSERT INTO outbox_fallbacks (outbox_id, error, created_at) \
         SELECT id, $2, $3 FROM outbox WHERE id = $1 AND fallback <> '' \
         ON CONFLICT (outbox_id) DO NOTHING",
    )
    .bind(outbox_id)
    .bind(error)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent {
        server_reply: String,
    },
    /// Not delivered; try again at `at`.
    Retry {
        error: String,
        at: i64,
    },
    /// Refused for good, or attempts used up.
    Failed {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryOutcome {
    pub outbox_id: String,
    pub delivery: Delivery,
}

impl Store {
    /// Records several delivery outcomes in one transaction (one fsync for the lot); the sent
    /// ones, nearly all of them, in one statement.
    pub async fn record_deliveries(&self, outcomes: &[DeliveryOutcome], now: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        let sent: Vec<(&str, &str)> = outcomes
            .iter()
            .filter_map(|o| match &o.delivery {
                Delivery::Sent { server_reply } => {
                    Some((o.outbox_id.as_str(), server_reply.as_str()))
                }
                _ => None,
            })
            .collect();
        if !sent.is_empty() {
            let cases: String = (0..sent.len())
                .map(|i| format!(" WHEN ${} THEN ${}", 2 * i + 2, 2 * i + 3))
                .collect();
            let ids: Vec<String> = (0..sent.len()).map(|i| format!("${}", 2 * i + 2)).collect();
            let sql = format!(
                "UPDATE outbox SET status = 'sent', sent_at = $1, lease_until = 0, \
                 last_error = CASE id{cases} END WHERE id IN ({}) AND status <> 'cancelled'",
                ids.join(", ")
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql)).bind(now);
            for (id, reply) in &sent {
                query = query.bind(*id).bind(*reply);
            }
            query.execute(&mut *tx.inner).await?;
        }
        for outcome in outcomes {
            let (status, next, error) = match &outcome.delivery {
                Delivery::Sent { .. } => continue,
                Delivery::Retry { error, at } => (OutboxStatus::TempFailed, *at, error),
                Delivery::Failed { error } => (OutboxStatus::PermFailed, 0, error),
            };
            sqlx::query::<Any>(
                "UPDATE outbox SET status = $2, next_attempt_at = $3, last_error = $4, lease_until = 0 \
                 WHERE id = $1 AND status <> 'cancelled'",
            )
            .bind(&outcome.outbox_id)
            .bind(status.as_str())
            .bind(next)
            .bind(error)
            .execute(&mut *tx.inner)
            .await?;
            if status == OutboxStatus::PermFailed {
                queue_fallback(&mut tx.inner, &outcome.outbox_id, error, now).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims up to `limit` mails due at `now` for `lease_ms`, counting the attempt. A worker that
    /// dies mid-send leaves the lease to expire; the mail is then claimed again.
    pub async fn claim_due_mail(
        &self,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxMail>> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET lease_until = $1, attempts = attempts + 1 WHERE id IN (\
             SELECT id FROM outbox WHERE status IN ('queued', 'temp_failed') AND next_attempt_at <= $2 \
             AND lease_until <= $2 ORDER BY next_attempt_at LIMIT {limit}{lock}) RETURNING {COLUMNS}"
        );
        let rows = sqlx::query::<Any>(AssertSqlSafe(sql))
            .bind(now + lease_ms)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(mail).collect()
    }

    /// The earliest time a queued mail becomes due, to sleep until then.
    pub async fn next_mail_due(&self) -> Result<Option<i64>> {
        let at = sqlx::query_scalar::<Any, Option<i64>>(
            "SELECT MIN(next_attempt_at) FROM outbox WHERE status IN ('queued', 'temp_failed')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// Mails of an approval context, oldest first.
    pub async fn mail_for_context(&self, context_id: &str) -> Result<Vec<OutboxMail>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM outbox WHERE context_id = $1 ORDER BY created_at, id"
        )))
        .bind(context_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(mail).collect()
    }
}
