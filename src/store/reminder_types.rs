//! Server-wide reminder types (UpsertReminderType).
use sqlx::{Any, Row, any::AnyRow};

use super::Store;
use crate::{
    engine::reminder_rules::EscalationPolicy,
    error::{Error, Result},
    model::{Channel, ReminderType},
};

const TYPE_BY_ID: &str = "SELECT id, count, interval_ms, channels, escalation, updated_at \
    FROM reminder_types WHERE id = $1";

pub(super) fn channels_text(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub(super) fn parse_channels(text: &str) -> Result<Vec<Channel>> {
    text.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            Channel::parse(c).ok_or_else(|| {
                Error::Internal(anyhow::anyhow!("corrupt row: unknown channel {c:?}"))
            })
        })
        .collect()
}

/// The escalation column of a `table` row, parsed once as it is read.
pub(super) fn escalation_policy(row: &AnyRow, table: &str) -> Result<EscalationPolicy> {
    let text: String = row.try_get("escalation")?;
    EscalationPolicy::parse(&text).map_err(|reason| {
        Error::Internal(anyhow::anyhow!("corrupt row: {table}.escalation: {reason}"))
    })
}

pub(super) fn reminder_type(row: &AnyRow) -> Result<ReminderType> {
    let channels: String = row.try_get("channels")?;
    Ok(ReminderType {
        id: row.try_get("id")?,
        count: row.try_get("count")?,
        interval_ms: row.try_get("interval_ms")?,
        channels: parse_channels(&channels)?,
        escalation: escalation_policy(row, "reminder_types")?,
        source: "server".into(),
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    /// Creates or replaces a server-wide reminder type (one statement: nothing to roll back).
    pub async fn upsert_reminder_type(&self, t: &ReminderType) -> Result<()> {
        sqlx::query::<Any>(
            "INSERT INTO reminder_types (id, count, interval_ms, channels, escalation, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET count = excluded.count, interval_ms = excluded.interval_ms, \
             channels = excluded.channels, escalation = excluded.escalation, updated_at = excluded.updated_at",
        )
        .bind(&t.id)
        .bind(t.count)
        .bind(t.interval_ms)
        .bind(channels_text(&t.channels))
        .bind(t.escalation.as_text())
        .bind(t.updated_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A server-wide reminder type by id, outside any transaction.
    pub async fn reminder_type(&self, id: &str) -> Result<Option<ReminderType>> {
        reminder_type_on(&mut *self.pool.acquire().await?, id).await
    }
}

/// A server-wide reminder type by id, on any connection.
pub(super) async fn reminder_type_on(
    conn: &mut sqlx::AnyConnection,
    id: &str,
) -> Result<Option<ReminderType>> {
    let row = sqlx::query::<Any>(TYPE_BY_ID)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(reminder_type).transpose()
}
