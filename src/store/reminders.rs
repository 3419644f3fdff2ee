//! Reminders (催办): armed and stopped inside the transitions that cause it, claimed when due by
//! the scheduler. The scheduler reads only due rows, through the partial index `reminders_due` on
//! `next_fire_at` (NULL once a reminder no longer fires), so its cost follows the due count, not
//! the armed count.
use std::collections::HashMap;

use sqlx::{Any, AssertSqlSafe, Row, any::AnyRow};

use super::{
    Backend, Store, Tx,
    instances::InstanceRecord,
    paging::{Filter, Order, PageRequest},
    placeholders,
    reminder_types::{escalation_policy, parse_channels},
    rows::{self, TASK_COLUMNS},
    values_rows,
};
use crate::{
    error::{Error, Result},
    model::{OutboxMail, Page, Reminder, ReminderState, Task, User},
};

pub(super) const COLUMNS: &str = "id, instance_id, definition_key, start_activity, end_activity, via_join, \
    group_id, reminder_type, count, interval_ms, channels, escalation, state, sent_count, \
    next_fire_at, escalated, created_at, first_fired_at, last_fired_at, finished_at";

/// The due query, also shown by [`Store::explain_due_query`].
const DUE: &str = "SELECT id FROM reminders WHERE next_fire_at <= $1 ORDER BY next_fire_at";

/// The states a reminder is still chasing in, for SQL.
pub(super) const ACTIVE: &str = "('new', 'reminded', 'remind_completed')";

fn reminder(row: &AnyRow) -> Result<Reminder> {
    let state: String = row.try_get("state")?;
    let channels: String = row.try_get("channels")?;
    let escalated: i64 = row.try_get("escalated")?;
    Ok(Reminder {
        id: row.try_get("id")?,
        instance_id: row.try_get("instance_id")?,
        definition_key: row.try_get("definition_key")?,
        start_activity: row.try_get("start_activity")?,
        end_activity: row.try_get("end_activity")?,
        via_join: row.try_get("via_join")?,
        group_id: row.try_get("group_id")?,
        reminder_type: row.try_get("reminder_type")?,
        count: row.try_get("count")?,
        interval_ms: row.try_get("interval_ms")?,
        channels: parse_channels(&channels)?,
        escalation: escalation_policy(row, "reminders")?,
        state: ReminderState::parse(&state).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("corrupt row: reminders.state = {state:?}"))
        })?,
        sent_count: row.try_get("sent_count")?,
        next_fire_at: row.try_get("next_fire_at")?,
        escalated: escalated != 0,
        created_at: row.try_get("created_at")?,
        first_fired_at: row.try_get("first_fired_at")?,
        last_fired_at: row.try_get("last_fired_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// A RemindNow as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualReminder {
    pub task_id: String,
    pub recipient: String,
    pub channels: String,
    pub sent_at: i64,
}

/// What ListReminders can be narrowed by; empty/None means any.
#[derive(Debug, Clone, Default)]
pub struct ReminderFilter {
    pub instance_id: String,
    /// Reminders ending at this activity (with `instance_id`: the ones chasing a task).
    pub end_activity: String,
    /// Reminders whose end activity has an open task of this user.
    pub recipient: String,
    pub state: Option<ReminderState>,
    pub reminder_type: String,
}

impl Tx {
    /// The reminders of an instance that still chase (under the instance's lock).
    pub async fn active_reminders(&mut self, instance_id: &str) -> Result<Vec<Reminder>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reminders WHERE instance_id = $1 AND state IN {ACTIVE} ORDER BY id"
        )))
        .bind(instance_id)
        .fetch_all(&mut *self.inner)
        .await?;
        rows.iter().map(reminder).collect()
    }

    /// The reminders of an instance that its end activity's completion still stops: the active
    /// ones and those that ran out, which finish after reminding too (under the instance's lock).
    pub async fn stoppable_reminders(&mut self, instance_id: &str) -> Result<Vec<Reminder>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reminders WHERE instance_id = $1 \
             AND (state IN {ACTIVE} OR state = 'remind_failed') ORDER BY id"
        )))
        .bind(instance_id)
        .fetch_all(&mut *self.inner)
        .await?;
        rows.iter().map(reminder).collect()
    }

    /// Writes a reminder's changing columns.
    pub async fn save_reminder(&mut self, r: &Reminder) -> Result<()> {
        sqlx::query::<Any>(
            "UPDATE reminders SET via_join = $2, state = $3, sent_count = $4, next_fire_at = $5, \
             escalated = $6, first_fired_at = $7, last_fired_at = $8, finished_at = $9 WHERE id = $1",
        )
        .bind(&r.id)
        .bind(&r.via_join)
        .bind(r.state.as_str())
        .bind(r.sent_count)
        .bind(r.next_fire_at)
        .bind(i64::from(r.escalated))
        .bind(r.first_fired_at)
        .bind(r.last_fired_at)
        .bind(r.finished_at)
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// PostgreSQL: this transaction gives up (and rolls back) rather than wait long for a row
    /// lock. The scheduler holds its claimed reminders while an escalation locks an instance; a
    /// completion of that instance holds the instance and waits for those reminders. Rather than
    /// let that end in a deadlock, the scheduler yields and retries at its next tick.
    pub async fn yield_on_lock_waits(&mut self, backend: Backend) -> Result<()> {
        if backend == Backend::Postgres {
            sqlx::query::<Any>("SET LOCAL lock_timeout = '200ms'")
                .execute(&mut *self.inner)
                .await?;
        }
        Ok(())
    }

    /// Writes the reminders a batch fired (state, count and times), 100 to a statement: one
    /// UPDATE ... FROM (VALUES ...) instead of a round trip per reminder.
    pub async fn save_fired_reminders(&mut self, fired: &[Reminder]) -> Result<()> {
        for chunk in fired.chunks(100) {
            let sql = format!(
                "UPDATE reminders SET state = v.column2, sent_count = v.column3, next_fire_at = v.column4, \
                 first_fired_at = v.column5, last_fired_at = v.column6 \
                 FROM (VALUES {}) AS v WHERE reminders.id = v.column1",
                values_rows(chunk.len(), 6)
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for r in chunk {
                query = query
                    .bind(r.id.clone())
                    .bind(r.state.as_str())
                    .bind(r.sent_count)
                    .bind(r.next_fire_at)
                    .bind(r.first_fired_at)
                    .bind(r.last_fired_at);
            }
            query.execute(&mut *self.inner).await?;
        }
        Ok(())
    }

    /// Claims up to `limit` reminders due at `now` for this transaction. The claim is a write,
    /// so on SQLite it takes the write lock before anything is read; on PostgreSQL the rows are
    /// locked and a second server skips them (`SKIP LOCKED`) instead of firing them again. The
    /// caller moves each one's next_fire_at before committing.
    pub async fn claim_due_reminders(
        &mut self,
        backend: Backend,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Reminder>> {
        let lock = match backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE reminders SET next_fire_at = next_fire_at WHERE id IN ({DUE} LIMIT {limit}{lock}) \
             RETURNING {COLUMNS}"
        );
        let rows = sqlx::query::<Any>(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&mut *self.inner)
            .await?;
        let mut due = rows.iter().map(reminder).collect::<Result<Vec<_>>>()?;
        due.sort_by(|a, b| (a.next_fire_at, &a.id).cmp(&(b.next_fire_at, &b.id)));
        Ok(due)
    }

    /// Instances by id, with their engine state.
    pub async fn instances_by_id(
        &mut self,
        ids: &[String],
    ) -> Result<HashMap<String, InstanceRecord>> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT {} FROM instances WHERE id IN ({})",
                rows::INSTANCE_COLUMNS,
                placeholders(1, chunk.len())
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *self.inner).await? {
                let record = super::instances::instance_record(&row)?;
                found.insert(record.instance.id.clone(), record);
            }
        }
        Ok(found)
    }

    /// Open tasks of several instances, by instance.
    pub async fn open_tasks_of(&mut self, ids: &[String]) -> Result<HashMap<String, Vec<Task>>> {
        open_tasks_by_instance(&mut self.inner, ids).await
    }

    /// Users by id.
    pub async fn users_by_id(&mut self, ids: &[String]) -> Result<HashMap<String, User>> {
        super::writes::users_by_id(&mut self.inner, ids).await
    }

    /// Takes up to `limit` failed outbox rows whose fallback is due, removing them from the queue.
    pub async fn take_fallbacks(&mut self, limit: i64) -> Result<Vec<(OutboxMail, String)>> {
        let ids: Vec<(String, String)> =
            sqlx::query_as::<Any, (String, String)>(AssertSqlSafe(format!(
                "DELETE FROM outbox_fallbacks WHERE outbox_id IN \
                 (SELECT outbox_id FROM outbox_fallbacks ORDER BY created_at LIMIT {limit}) \
                 RETURNING outbox_id, error"
            )))
            .fetch_all(&mut *self.inner)
            .await?;
        let mut taken = Vec::with_capacity(ids.len());
        for (id, error) in ids {
            if let Some(mail) = self.outbox_row(&id).await? {
                taken.push((mail, error));
            }
        }
        Ok(taken)
    }

    /// The latest manual reminder of a task, for the rate limit.
    pub async fn last_manual_reminder(&mut self, task_id: &str) -> Result<Option<i64>> {
        let at = sqlx::query_scalar::<Any, Option<i64>>(
            "SELECT MAX(sent_at) FROM manual_reminders WHERE task_id = $1",
        )
        .bind(task_id)
        .fetch_one(&mut *self.inner)
        .await?;
        Ok(at)
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_manual_reminder(
        &mut self,
        id: &str,
        task_id: &str,
        sender: &str,
        recipient: &str,
        channels: &str,
        message: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query::<Any>(
            "INSERT INTO manual_reminders (id, task_id, sender, recipient, channels, message, sent_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(task_id)
        .bind(sender)
        .bind(recipient)
        .bind(channels)
        .bind(message)
        .bind(now)
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Due reminders whose escalation completes the task (`complete:<outcome>`), read without
    /// claiming: the scheduler prepares those completions before its transaction.
    pub async fn due_completing_escalations(&self, now: i64, limit: i64) -> Result<Vec<Reminder>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM reminders WHERE next_fire_at <= $1 AND state = 'remind_completed' \
             AND escalation LIKE 'complete:%' ORDER BY next_fire_at LIMIT {limit}"
        );
        let rows = sqlx::query::<Any>(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(reminder).collect()
    }

    pub async fn list_reminders(
        &self,
        filter: &ReminderFilter,
        page: &PageRequest,
    ) -> Result<Page<Reminder>> {
        let mut f = Filter::default();
        f.eq_if("instance_id", &filter.instance_id);
        f.eq_if("end_activity", &filter.end_activity);
        f.eq_if("reminder_type", &filter.reminder_type);
        if let Some(state) = filter.state {
            f.eq("state", state.as_str());
        }
        if !filter.recipient.is_empty() {
            f.with_arg(&filter.recipient, |n| {
                format!(
                    "EXISTS (SELECT 1 FROM tasks t WHERE t.instance_id = reminders.instance_id \
                     AND t.activity_id = reminders.end_activity AND t.status = 'open' AND t.assignee = ${n}) \
                     AND state IN {ACTIVE}"
                )
            });
        }
        self.fetch_page(
            &format!("SELECT {COLUMNS} FROM reminders"),
            f,
            page,
            Order::OldestFirst,
            reminder,
            |r| &r.id,
        )
        .await
    }

    pub async fn reminder(&self, id: &str) -> Result<Option<Reminder>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM reminders WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(reminder).transpose()
    }

    pub async fn instance_record(&self, id: &str) -> Result<Option<InstanceRecord>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {} FROM instances WHERE id = $1",
            rows::INSTANCE_COLUMNS
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(super::instances::instance_record)
            .transpose()
    }

    pub async fn manual_reminder(&self, id: &str) -> Result<Option<ManualReminder>> {
        let row = sqlx::query_as::<Any, (String, String, String, i64)>(
            "SELECT task_id, recipient, channels, sent_at FROM manual_reminders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(
            row.map(|(task_id, recipient, channels, sent_at)| ManualReminder {
                task_id,
                recipient,
                channels,
                sent_at,
            }),
        )
    }

    /// The in-system message a manual reminder left, if it went to the inbox.
    pub async fn message_for_task_at(
        &self,
        user_id: &str,
        task_id: &str,
        at: i64,
    ) -> Result<Option<String>> {
        let id = sqlx::query_scalar::<Any, String>(
            "SELECT id FROM messages WHERE user_id = $1 AND task_id = $2 AND created_at = $3 \
             AND kind = 'manual_reminder' ORDER BY id LIMIT 1",
        )
        .bind(user_id)
        .bind(task_id)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id)
    }

    /// The earliest next_fire_at of any reminder, or of a queued fallback (now), to sleep until.
    pub async fn next_reminder_due(&self) -> Result<Option<i64>> {
        let at = sqlx::query_scalar::<Any, Option<i64>>(
            "SELECT MIN(next_fire_at) FROM reminders WHERE next_fire_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(at)
    }

    /// The database's plan for the due query, one line per plan row: shows that the scheduler
    /// reads the `reminders_due` index, not every armed reminder.
    pub async fn explain_due_query(&self, now: i64) -> Result<Vec<String>> {
        let (sql, column) = match self.backend {
            Backend::Sqlite => (format!("EXPLAIN QUERY PLAN {DUE} LIMIT 500"), 3),
            Backend::Postgres => (format!("EXPLAIN {DUE} LIMIT 500"), 0),
        };
        let rows = sqlx::query::<Any>(AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(column).map_err(Error::from))
            .collect()
    }
}

/// The open tasks of these instances, by instance id, oldest first: one query per 500 ids.
pub(super) async fn open_tasks_by_instance(
    conn: &mut sqlx::AnyConnection,
    ids: &[String],
) -> Result<HashMap<String, Vec<Task>>> {
    let mut found: HashMap<String, Vec<Task>> = HashMap::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'open' AND instance_id IN ({}) ORDER BY id",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let task = rows::task(&row)?;
            found
                .entry(task.instance_id.clone())
                .or_default()
                .push(task);
        }
    }
    Ok(found)
}
