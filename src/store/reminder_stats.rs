//! Reminder effectiveness (ReminderStats): counts per (reminder type, end activity, definition)
//! over the `reminders` table. The counts are one GROUP BY; the median is computed here from the
//! durations of the FINISHED_AFTER_REMIND rows, because neither a portable SQL median nor
//! `percentile_cont` exists on both backends.
use std::collections::HashMap;

use sqlx::{Any, AssertSqlSafe, Row};

use super::Store;
use crate::{clock::Millis, error::Result};

/// The filters of ReminderStatsRequest; empty strings and `None` filter nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReminderStatsFilter {
    pub reminder_type: String,
    pub activity_id: String,
    pub definition_key: String,
    /// Armed at or after.
    pub since: Option<Millis>,
    /// Armed before.
    pub until: Option<Millis>,
}

/// One row of ReminderStats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReminderStatsRow {
    pub reminder_type: String,
    pub activity_id: String,
    pub definition_key: String,
    pub armed: i64,
    pub finished_before_remind: i64,
    pub finished_after_remind: i64,
    pub failed: i64,
    pub escalated: i64,
    pub active: i64,
    pub cancelled: i64,
    pub reminders_sent: i64,
    /// Median of (finished_at − first_fired_at) over the FINISHED_AFTER_REMIND reminders.
    pub median_after_first_reminder_ms: Option<i64>,
}

#[derive(Debug)]
enum Arg {
    Text(String),
    Millis(Millis),
}

/// ` WHERE ...` for the filters, and its parameters in placeholder order.
fn where_clause(filter: &ReminderStatsFilter) -> (String, Vec<Arg>) {
    let mut clauses = Vec::new();
    let mut args = Vec::new();
    for (column, value) in [
        ("reminder_type", &filter.reminder_type),
        ("end_activity", &filter.activity_id),
        ("definition_key", &filter.definition_key),
    ] {
        if !value.is_empty() {
            args.push(Arg::Text(value.clone()));
            clauses.push(format!("{column} = ${}", args.len()));
        }
    }
    if let Some(since) = filter.since {
        args.push(Arg::Millis(since));
        clauses.push(format!("created_at >= ${}", args.len()));
    }
    if let Some(until) = filter.until {
        args.push(Arg::Millis(until));
        clauses.push(format!("created_at < ${}", args.len()));
    }
    let sql = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    (sql, args)
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    args: &'q [Arg],
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for arg in args {
        query = match arg {
            Arg::Text(text) => query.bind(text.as_str()),
            Arg::Millis(at) => query.bind(*at),
        };
    }
    query
}

/// The median of `values` (sorted here); the mean of the middle two for an even count.
pub(crate) fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    let upper = *values.get(mid)?;
    if values.len() % 2 == 1 {
        return Some(upper);
    }
    let lower = *values.get(mid - 1)?;
    // Halving each first keeps the sum of two large durations from overflowing.
    Some(lower / 2 + upper / 2 + (lower % 2 + upper % 2) / 2)
}

type Key = (String, String, String);

impl Store {
    /// One row per (reminder type, end activity, definition key) of the reminders the filter
    /// selects, ordered by reminder type, activity, definition key.
    pub async fn reminder_stats(
        &self,
        filter: &ReminderStatsFilter,
    ) -> Result<Vec<ReminderStatsRow>> {
        let (where_sql, args) = where_clause(filter);
        // SUM of BIGINT is NUMERIC on PostgreSQL, which the Any driver cannot decode: cast back.
        let count_if = |condition: &str| {
            format!("CAST(SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) AS BIGINT)")
        };
        let sql = format!(
            "SELECT reminder_type, end_activity, definition_key, CAST(COUNT(*) AS BIGINT) AS armed, \
             {} AS finished_before_remind, {} AS finished_after_remind, {} AS failed, \
             {} AS escalated, {} AS active, {} AS cancelled, \
             CAST(SUM(sent_count) AS BIGINT) AS reminders_sent \
             FROM reminders{where_sql} \
             GROUP BY reminder_type, end_activity, definition_key \
             ORDER BY reminder_type, end_activity, definition_key",
            count_if("state = 'finished_before_remind'"),
            count_if("state = 'finished_after_remind'"),
            // One that ran out and escalated stays counted after its end activity finished it.
            count_if("state = 'remind_failed' OR escalated = 1"),
            count_if("escalated = 1"),
            count_if("state IN ('new', 'reminded', 'remind_completed')"),
            count_if("state = 'cancelled'"),
        );
        let rows = bind_all(sqlx::query::<Any>(AssertSqlSafe(sql)), &args)
            .fetch_all(&self.pool)
            .await?;
        let mut stats = Vec::with_capacity(rows.len());
        for row in &rows {
            stats.push(ReminderStatsRow {
                reminder_type: row.try_get("reminder_type")?,
                activity_id: row.try_get("end_activity")?,
                definition_key: row.try_get("definition_key")?,
                armed: row.try_get("armed")?,
                finished_before_remind: row.try_get("finished_before_remind")?,
                finished_after_remind: row.try_get("finished_after_remind")?,
                failed: row.try_get("failed")?,
                escalated: row.try_get("escalated")?,
                active: row.try_get("active")?,
                cancelled: row.try_get("cancelled")?,
                reminders_sent: row.try_get("reminders_sent")?,
                median_after_first_reminder_ms: None,
            });
        }
        if stats.iter().any(|s| s.finished_after_remind > 0) {
            let mut durations = self.durations_after_first_reminder(filter).await?;
            for row in &mut stats {
                let key = (
                    row.reminder_type.clone(),
                    row.activity_id.clone(),
                    row.definition_key.clone(),
                );
                if let Some(values) = durations.get_mut(&key) {
                    row.median_after_first_reminder_ms = median(values);
                }
            }
        }
        Ok(stats)
    }

    /// finished_at − first_fired_at of every FINISHED_AFTER_REMIND reminder, by group.
    async fn durations_after_first_reminder(
        &self,
        filter: &ReminderStatsFilter,
    ) -> Result<HashMap<Key, Vec<i64>>> {
        let (where_sql, args) = where_clause(filter);
        let connector = if where_sql.is_empty() {
            " WHERE"
        } else {
            " AND"
        };
        let sql = format!(
            "SELECT reminder_type, end_activity, definition_key, finished_at - first_fired_at AS took \
             FROM reminders{where_sql}{connector} state = 'finished_after_remind' AND first_fired_at > 0"
        );
        let rows = bind_all(sqlx::query::<Any>(AssertSqlSafe(sql)), &args)
            .fetch_all(&self.pool)
            .await?;
        let mut durations: HashMap<Key, Vec<i64>> = HashMap::new();
        for row in &rows {
            let key = (
                row.try_get("reminder_type")?,
                row.try_get("end_activity")?,
                row.try_get("definition_key")?,
            );
            durations.entry(key).or_default().push(row.try_get("took")?);
        }
        Ok(durations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [7]), Some(7));
        assert_eq!(median(&mut [9, 1, 5]), Some(5));
        assert_eq!(median(&mut [4, 1, 3, 2]), Some(2));
        assert_eq!(median(&mut [1_000, 3_000]), Some(2_000));
        assert_eq!(median(&mut [i64::MAX, i64::MAX]), Some(i64::MAX));
    }

    #[test]
    fn filters_become_numbered_placeholders_in_order() {
        let filter = ReminderStatsFilter {
            reminder_type: "urgent".into(),
            definition_key: "expense".into(),
            since: Some(10),
            until: Some(20),
            ..Default::default()
        };
        let (sql, args) = where_clause(&filter);
        assert_eq!(
            sql,
            " WHERE reminder_type = $1 AND definition_key = $2 AND created_at >= $3 AND created_at < $4"
        );
        assert_eq!(args.len(), 4);
        assert_eq!(where_clause(&ReminderStatsFilter::default()).0, "");
    }
}
