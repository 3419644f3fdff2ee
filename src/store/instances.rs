//! Instances, their tasks and their audit events. A transition runs inside one [`Tx`]: it first
//! bumps the instance's `rev` (a write, so it takes the row lock on PostgreSQL and the write lock
//! on SQLite before anything is read), then reads the state, then writes the engine's decisions.
//! Two completions of one instance therefore run one after the other on both backends.
use serde_json::Value;
use sqlx::{Any, AssertSqlSafe, Row};

use super::{
    Store, Tx,
    paging::{Filter, Order, PageRequest},
    rows::{self, INSTANCE_COLUMNS, TASK_COLUMNS},
};
use crate::{
    engine::{multi::MultiState, runtime::JoinState},
    error::{Error, Result},
    model::{Event, Instance, InstanceStatus, Page, Task, TaskStatus},
};

/// An instance with the engine state that the API never shows.
#[derive(Debug, Clone)]
pub struct InstanceRecord {
    pub instance: Instance,
    pub joins: JoinState,
    /// Multi-instance activations being signed.
    pub multi: MultiState,
    /// Bumped by every transition: a decision computed from this record stands only while the
    /// instance still has this `rev` (the transition writer's guard).
    pub rev: i64,
}

fn json_text(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.into()))
}

pub(super) fn instance_record(row: &sqlx::any::AnyRow) -> Result<InstanceRecord> {
    let joins: String = row.try_get("joins")?;
    let multi: String = row.try_get("multi")?;
    Ok(InstanceRecord {
        instance: rows::instance(row)?,
        joins: serde_json::from_str(&joins)
            .map_err(|_| Error::Internal(anyhow::anyhow!("corrupt row: instances.joins")))?,
        multi: serde_json::from_str(&multi)
            .map_err(|_| Error::Internal(anyhow::anyhow!("corrupt row: instances.multi")))?,
        rev: row.try_get("rev")?,
    })
}

/// What the list of tasks can be narrowed by; empty strings mean "any".
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub assignee: String,
    pub instance_id: String,
    pub activity_id: String,
    pub business_key: String,
    pub status: Option<TaskStatus>,
    /// Only tasks this user may see (assigned to them, or in an instance they started or take
    /// part in); empty = all (an admin).
    pub visible_to: String,
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub definition_key: String,
    pub business_key: String,
    pub started_by: String,
    pub status: Option<InstanceStatus>,
    /// Only instances this user started or takes part in; empty = all (an admin).
    pub visible_to: String,
    /// With variables (the FULL view): the page then also ends at [`MAX_FULL_PAGE_BYTES`].
    pub with_variables: bool,
}

/// A page of instances with variables stops growing past this many bytes of variables, so that
/// a list never builds a response a client cannot take (gRPC's default limit is 4 MiB).
pub(super) const MAX_FULL_PAGE_BYTES: usize = 3 * 1024 * 1024;
/// Instances per page in the FULL view, whatever page_size asks.
const MAX_FULL_PAGE_SIZE: i32 = 50;

impl Store {
    pub async fn instance(&self, id: &str) -> Result<Option<Instance>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::instance).transpose()
    }

    pub async fn task(&self, id: &str) -> Result<Option<Task>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::task).transpose()
    }

    /// The open tasks of several instances (a page of a list) in one query, by instance id.
    pub async fn open_tasks_of(
        &self,
        instance_ids: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<Task>>> {
        let mut conn = self.pool.acquire().await?;
        super::reminders::open_tasks_by_instance(&mut conn, instance_ids).await
    }

    pub async fn open_tasks(&self, instance_id: &str) -> Result<Vec<Task>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 AND status = 'open' ORDER BY id"
        )))
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::task).collect()
    }

    pub async fn list_tasks(&self, filter: &TaskFilter, page: &PageRequest) -> Result<Page<Task>> {
        let mut f = Filter::default();
        f.eq_if("assignee", &filter.assignee);
        f.eq_if("instance_id", &filter.instance_id);
        f.eq_if("activity_id", &filter.activity_id);
        f.eq_if("business_key", &filter.business_key);
        if let Some(status) = filter.status {
            f.eq("status", status.as_str());
        }
        if !filter.visible_to.is_empty() {
            f.with_arg(&filter.visible_to, |n| {
                format!(
                    "(assignee = ${n} OR instance_id IN (SELECT id FROM instances WHERE started_by = ${n}) \
                     OR instance_id IN (SELECT instance_id FROM tasks WHERE assignee = ${n}))"
                )
            });
        }
        self.fetch_page(
            &format!("SELECT {TASK_COLUMNS} FROM tasks"),
            f,
            page,
            Order::OldestFirst,
            rows::task,
            |t| &t.id,
        )
        .await
    }

    pub async fn list_instances(
        &self,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<Instance>> {
        let mut f = Filter::default();
        f.eq_if("definition_key", &filter.definition_key);
        f.eq_if("business_key", &filter.business_key);
        f.eq_if("started_by", &filter.started_by);
        if let Some(status) = filter.status {
            f.eq("status", status.as_str());
        }
        if !filter.visible_to.is_empty() {
            f.with_arg(&filter.visible_to, |n| {
                format!(
                    "(started_by = ${n} OR id IN (SELECT instance_id FROM tasks WHERE assignee = ${n}))"
                )
            });
        }
        if !filter.with_variables {
            // Variables can be megabytes each: a list that does not show them never reads them.
            let columns = INSTANCE_COLUMNS.replace("variables", "'{}' AS variables");
            return self
                .fetch_page(
                    &format!("SELECT {columns} FROM instances"),
                    f,
                    page,
                    Order::NewestFirst,
                    rows::instance,
                    |i| &i.id,
                )
                .await;
        }
        let page = PageRequest {
            page_size: match page.page_size {
                0 => MAX_FULL_PAGE_SIZE,
                n => n.min(MAX_FULL_PAGE_SIZE),
            },
            page_token: page.page_token.clone(),
        };
        self.fetch_page_within(
            &format!("SELECT {INSTANCE_COLUMNS} FROM instances"),
            f,
            &page,
            Order::NewestFirst,
            rows::instance,
            |i| &i.id,
            (MAX_FULL_PAGE_BYTES, |i: &Instance| {
                Value::Object(i.variables.clone()).to_string().len()
            }),
        )
        .await
    }

    /// Whether `user_id` has or had a task of the instance (a participant, who may read it).
    pub async fn takes_part(&self, instance_id: &str, user_id: &str) -> Result<bool> {
        let row = sqlx::query::<Any>(
            "SELECT 1 AS one FROM tasks WHERE instance_id = $1 AND assignee = $2 LIMIT 1",
        )
        .bind(instance_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Who approved a task of the instance (`replyflow:skipIfApprovedBefore`).
    pub async fn approvers_of(&self, instance_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query::<Any>(
            "SELECT DISTINCT completed_by FROM tasks WHERE instance_id = $1 \
             AND status = 'completed' AND outcome = 'approve' AND completed_by <> ''",
        )
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("completed_by")?))
            .collect()
    }

    /// The audit trail of an instance, oldest first.
    pub async fn events(&self, instance_id: &str) -> Result<Vec<Event>> {
        let rows = sqlx::query::<Any>(
            "SELECT instance_id, at, kind, activity_id, actor, detail FROM events WHERE instance_id = $1 ORDER BY id",
        )
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(Event {
                    instance_id: row.try_get("instance_id")?,
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    activity_id: row.try_get("activity_id")?,
                    actor: row.try_get("actor")?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::String(detail)),
                })
            })
            .collect()
    }
}

impl Tx {
    /// Serializes transitions of one instance; `false` when it does not exist.
    pub async fn lock_instance(&mut self, id: &str) -> Result<bool> {
        let done = sqlx::query::<Any>("UPDATE instances SET rev = rev + 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *self.inner)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Locks the instance of a task, then reads the task and the instance under that lock: the
    /// state every transition of one task starts from.
    pub async fn lock_task(
        &mut self,
        task_id: &str,
        instance_id: &str,
    ) -> Result<(Task, InstanceRecord)> {
        self.lock_instance(instance_id).await?;
        let task = self
            .task(task_id)
            .await?
            .ok_or_else(|| Error::not_found("task", task_id))?;
        let record = self
            .instance(&task.instance_id)
            .await?
            .ok_or_else(|| Error::not_found("process instance", &task.instance_id))?;
        Ok((task, record))
    }

    pub async fn instance(&mut self, id: &str) -> Result<Option<InstanceRecord>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *self.inner)
        .await?;
        row.as_ref().map(instance_record).transpose()
    }

    pub async fn task(&mut self, id: &str) -> Result<Option<Task>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *self.inner)
        .await?;
        row.as_ref().map(rows::task).transpose()
    }

    pub async fn open_tasks(&mut self, instance_id: &str) -> Result<Vec<Task>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 AND status = 'open' ORDER BY id"
        )))
        .bind(instance_id)
        .fetch_all(&mut *self.inner)
        .await?;
        rows.iter().map(rows::task).collect()
    }

    /// Appends audit events with one statement per 100 events (SQLite allows 32766 parameters).
    pub async fn insert_events(&mut self, events: &[Event]) -> Result<()> {
        for chunk in events.chunks(100) {
            let sql = format!(
                "INSERT INTO events (instance_id, at, kind, activity_id, actor, detail) VALUES {}",
                super::values_rows(chunk.len(), 6)
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for e in chunk {
                query = query
                    .bind(e.instance_id.clone())
                    .bind(e.at)
                    .bind(e.kind.clone())
                    .bind(e.activity_id.clone())
                    .bind(e.actor.clone())
                    .bind(json_text(&e.detail)?);
            }
            query.execute(&mut *self.inner).await?;
        }
        Ok(())
    }
}
