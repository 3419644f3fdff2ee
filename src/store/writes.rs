//! The statements of a transition, as parts of one [`Batch`] (see `batch.rs`), and the reads a
//! transition makes before its transaction. The workflow's transition writer is their one user.
//!
//! Guards (tags of the rows they return):
//! - [`GUARD_CLAIM`]: the request id was free and is now recorded (missing: used meanwhile);
//! - [`GUARD_INSTANCE`]: the instance still had the `rev` the decision was computed from, and
//!   now has the next one (missing: it changed meanwhile, the decision is stale);
//! - [`GUARD_USER_CHANGED`]: an assignee's address changed since it was read (present: stale);
//! - [`GUARD_APPROVAL_CHANGED`]: an approval context is no longer as it was read, or one was
//!   issued that the decision did not see (present: stale).
use std::collections::HashMap;

use sqlx::{Any, AnyConnection, AssertSqlSafe};

use super::{
    Arg, Batch, Store, approvals, outbox, placeholders, reminder_types::channels_text, reminders,
    rows, values_rows,
};
use crate::{
    engine::{multi::MultiState, runtime::JoinState},
    error::{Error, Result},
    model::{
        ApprovalContext, CompletedVia, Event, InstanceStatus, OutboxMail, Reminder, Task, User,
    },
};

pub const GUARD_CLAIM: &str = "claim";
pub const GUARD_INSTANCE: &str = "instance";
pub const GUARD_USER_CHANGED: &str = "user_changed";
pub const GUARD_APPROVAL_CHANGED: &str = "approval_changed";

/// Rows per multi-row INSERT: bounded so that the statement cache sees few distinct texts.
const ROWS_PER_INSERT: usize = 50;

fn json_text(value: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.into()))
}

/// A multi-row INSERT of `rows`, `columns` values each, in statements of [`ROWS_PER_INSERT`].
fn insert_rows(batch: &mut Batch, head: &str, columns: usize, rows: Vec<Vec<Arg>>) {
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Arg>> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        let sql = format!("{head} VALUES {}", values_rows(chunk.len(), columns));
        batch.exec(sql, chunk.into_iter().flatten().collect());
    }
}

impl Batch {
    /// Records a request id with its effect ([`GUARD_CLAIM`]).
    pub fn claim_request(
        &mut self,
        scope: &str,
        request_id: &str,
        fingerprint: &str,
        result_id: &str,
        now: i64,
    ) {
        self.guard(
            format!(
                "INSERT INTO requests (scope, request_id, fingerprint, result_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (scope, request_id) DO NOTHING \
                 RETURNING CAST('{GUARD_CLAIM}' AS TEXT) AS g"
            ),
            vec![
                scope.into(),
                request_id.into(),
                fingerprint.into(),
                result_id.into(),
                now.into(),
            ],
        );
    }

    pub fn insert_instance(&mut self, record: &super::InstanceRecord) -> Result<()> {
        let i = &record.instance;
        self.exec(
            "INSERT INTO instances (id, definition_key, definition_version, business_key, variables, joins, \
             status, error, started_by, rev, created_at, updated_at, multi) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12)",
            vec![
                i.id.as_str().into(),
                i.definition_key.as_str().into(),
                i.definition_version.into(),
                i.business_key.as_str().into(),
                json_text(&i.variables)?.into(),
                json_text(&record.joins)?.into(),
                i.status.as_str().into(),
                i.error.as_str().into(),
                i.started_by.as_str().into(),
                i.created_at.into(),
                i.updated_at.into(),
                json_text(&record.multi)?.into(),
            ],
        );
        Ok(())
    }

    /// Writes the instance's new state if its `rev` is still `rev` ([`GUARD_INSTANCE`]).
    #[allow(clippy::too_many_arguments)]
    pub fn update_instance_at_rev(
        &mut self,
        id: &str,
        rev: i64,
        variables: &serde_json::Map<String, serde_json::Value>,
        joins: &JoinState,
        multi: &MultiState,
        status: InstanceStatus,
        error: &str,
        now: i64,
    ) -> Result<()> {
        self.guard(
            format!(
                "UPDATE instances SET variables = $3, joins = $4, status = $5, error = $6, \
                 updated_at = $7, multi = $8, rev = rev + 1 WHERE id = $1 AND rev = $2 \
                 RETURNING CAST('{GUARD_INSTANCE}' AS TEXT) AS g"
            ),
            vec![
                id.into(),
                rev.into(),
                json_text(variables)?.into(),
                json_text(joins)?.into(),
                status.as_str().into(),
                error.into(),
                now.into(),
                json_text(multi)?.into(),
            ],
        );
        Ok(())
    }

    /// Moves the instance's `rev` on if it is still `rev` ([`GUARD_INSTANCE`], one row per
    /// instance): a change of its approval contexts that leaves the process where it is, so that
    /// a transition decided from the contexts as they were is stale.
    pub fn bump_instance_rev(&mut self, id: &str, rev: i64) {
        self.guard(
            format!(
                "UPDATE instances SET rev = rev + 1 WHERE id = $1 AND rev = $2 \
                 RETURNING CAST('{GUARD_INSTANCE}' AS TEXT) AS g"
            ),
            vec![id.into(), rev.into()],
        );
    }

    /// [`GUARD_APPROVAL_CHANGED`] for each of `contexts` whose status or last mail is no longer
    /// the one it was read with.
    pub fn approvals_unchanged(&mut self, contexts: &[ApprovalContext]) {
        for c in contexts {
            self.guard(
                format!(
                    "SELECT CAST('{GUARD_APPROVAL_CHANGED}' AS TEXT) AS g FROM approval_contexts \
                     WHERE id = $1 AND (status <> $2 OR last_mail_at <> $3)"
                ),
                vec![
                    c.id.as_str().into(),
                    c.status.as_str().into(),
                    c.last_mail_at.into(),
                ],
            );
        }
    }

    /// [`GUARD_APPROVAL_CHANGED`] if `approver` has a pending approval context other than
    /// `known` (issued after they were read).
    pub fn no_other_pending_approvals(&mut self, approver: &str, known: &[String]) {
        let mut args: Vec<Arg> = vec![approver.into()];
        let mut sql = format!(
            "SELECT CAST('{GUARD_APPROVAL_CHANGED}' AS TEXT) AS g FROM approval_contexts \
             WHERE approver = $1 AND status = 'pending'"
        );
        if !known.is_empty() {
            sql.push_str(&format!(
                " AND id NOT IN ({})",
                placeholders(2, known.len())
            ));
            args.extend(known.iter().map(Arg::from));
        }
        self.guard(sql, args);
    }

    /// A context's mail was sent again now (the resend interval counts from here).
    pub fn touch_approval_mail(&mut self, context_id: &str, now: i64) {
        self.exec(
            "UPDATE approval_contexts SET last_mail_at = $2 WHERE id = $1",
            vec![context_id.into(), now.into()],
        );
    }

    /// [`GUARD_USER_CHANGED`] if `user` no longer has the address and version it was read with.
    pub fn user_unchanged(&mut self, user: &User) {
        self.guard(
            format!(
                "SELECT CAST('{GUARD_USER_CHANGED}' AS TEXT) AS g FROM users \
                 WHERE id = $1 AND (email <> $2 OR updated_at <> $3)"
            ),
            vec![
                user.id.as_str().into(),
                user.email.as_str().into(),
                user.updated_at.into(),
            ],
        );
    }

    /// Hands an open task to `assignee` (its approval contexts are revoked separately).
    pub fn set_assignee(&mut self, task: &Task) {
        self.exec(
            "UPDATE tasks SET assignee = $2, owner = $3, delegation_state = $4 \
             WHERE id = $1 AND status = 'open'",
            vec![
                task.id.as_str().into(),
                task.assignee.as_str().into(),
                task.owner.as_str().into(),
                task.delegation.as_str().into(),
            ],
        );
    }

    /// Closes tasks that the decision saw open (the instance guard vouches for that).
    pub fn close_tasks(&mut self, tasks: &[Task]) {
        for task in tasks {
            self.exec(
                "UPDATE tasks SET status = $2, outcome = $3, comment = $4, completed_by = $5, \
                 completed_via = $6, completed_at = $7 WHERE id = $1 AND status = 'open'",
                vec![
                    task.id.as_str().into(),
                    task.status.as_str().into(),
                    task.outcome.as_str().into(),
                    task.comment.as_str().into(),
                    task.completed_by.as_str().into(),
                    task.completed_via
                        .map(CompletedVia::as_str)
                        .unwrap_or("")
                        .into(),
                    task.completed_at.unwrap_or(0).into(),
                ],
            );
        }
    }

    pub fn insert_tasks(&mut self, tasks: &[Task]) {
        let rows = tasks
            .iter()
            .map(|task| {
                vec![
                    task.id.as_str().into(),
                    task.instance_id.as_str().into(),
                    task.definition_key.as_str().into(),
                    task.definition_version.into(),
                    task.business_key.as_str().into(),
                    task.activity_id.as_str().into(),
                    task.name.as_str().into(),
                    task.assignee.as_str().into(),
                    task.status.as_str().into(),
                    task.outcome.as_str().into(),
                    task.comment.as_str().into(),
                    task.completed_by.as_str().into(),
                    task.completed_via
                        .map(CompletedVia::as_str)
                        .unwrap_or("")
                        .into(),
                    task.group_id.as_str().into(),
                    task.from_activity.as_str().into(),
                    task.created_at.into(),
                    task.completed_at.unwrap_or(0).into(),
                    task.owner.as_str().into(),
                    task.delegation.as_str().into(),
                ]
            })
            .collect();
        insert_rows(
            self,
            &format!("INSERT INTO tasks ({})", rows::TASK_COLUMNS),
            19,
            rows,
        );
    }

    /// Revokes pending approval contexts (their task closed) and drops their unsent mail.
    pub fn revoke_approvals(&mut self, context_ids: &[String], reason: &str) {
        if context_ids.is_empty() {
            return;
        }
        let ids: Vec<Arg> = context_ids.iter().map(Arg::from).collect();
        self.exec(
            format!(
                "UPDATE approval_contexts SET status = 'revoked', revoke_reason = $1 \
                 WHERE status = 'pending' AND id IN ({})",
                placeholders(2, ids.len())
            ),
            std::iter::once(reason.into()).chain(ids.clone()).collect(),
        );
        // PostgreSQL: a row the outbox worker holds (it is being sent or recorded right now) is
        // left to it — sent wins — instead of waiting for that worker while this group
        // commit's other locks make it wait for us (a deadlock, broken after a second).
        let list = placeholders(1, ids.len());
        self.exec_per_backend(
            format!(
                "UPDATE outbox SET status = 'cancelled' WHERE status IN ('queued', 'temp_failed') \
                 AND context_id IN ({list})"
            ),
            format!(
                "UPDATE outbox SET status = 'cancelled' WHERE id IN (SELECT id FROM outbox \
                 WHERE status IN ('queued', 'temp_failed') AND context_id IN ({list}) \
                 FOR UPDATE SKIP LOCKED)"
            ),
            ids,
        );
    }

    pub fn insert_approvals(&mut self, contexts: &[ApprovalContext]) -> Result<()> {
        let mut rows = Vec::with_capacity(contexts.len());
        for c in contexts {
            rows.push(vec![
                c.id.as_str().into(),
                c.task_id.as_str().into(),
                c.instance_id.as_str().into(),
                c.approver.as_str().into(),
                c.approver_email.as_str().into(),
                c.kid.into(),
                c.sent_at.into(),
                c.valid_until.into(),
                c.status.as_str().into(),
                c.message_id.as_str().into(),
                c.subject_tag.as_str().into(),
                c.last_mail_at.into(),
                c.revoke_reason.as_str().into(),
                c.used_at.unwrap_or(0).into(),
                json_text(&c.approver_aliases)?.into(),
            ]);
        }
        insert_rows(
            self,
            &format!("INSERT INTO approval_contexts ({})", approvals::COLUMNS),
            15,
            rows,
        );
        Ok(())
    }

    pub fn insert_outbox(&mut self, mails: &[OutboxMail]) {
        let rows = mails
            .iter()
            .map(|m| {
                vec![
                    m.id.as_str().into(),
                    m.kind.as_str().into(),
                    m.context_id.as_str().into(),
                    m.task_id.as_str().into(),
                    m.recipient.as_str().into(),
                    m.sender.as_str().into(),
                    m.message_id.as_str().into(),
                    m.body.as_slice().into(),
                    m.status.as_str().into(),
                    m.attempts.into(),
                    m.next_attempt_at.into(),
                    m.last_error.as_str().into(),
                    m.created_at.into(),
                    m.sent_at.unwrap_or(0).into(),
                    m.fallback.as_str().into(),
                    Arg::Int(0),
                ]
            })
            .collect();
        insert_rows(
            self,
            &format!("INSERT INTO outbox ({}, lease_until)", outbox::COLUMNS),
            16,
            rows,
        );
    }

    /// In-system messages written with a transition (抄送 as a task opens).
    pub fn insert_messages(&mut self, messages: &[crate::model::Message]) {
        let rows = messages
            .iter()
            .map(|m| {
                vec![
                    m.id.as_str().into(),
                    m.user_id.as_str().into(),
                    m.kind.as_str().into(),
                    m.title.as_str().into(),
                    m.body.as_str().into(),
                    m.task_id.as_str().into(),
                    m.instance_id.as_str().into(),
                    m.sender.as_str().into(),
                    m.read_at.unwrap_or(0).into(),
                    m.created_at.into(),
                ]
            })
            .collect();
        insert_rows(
            self,
            "INSERT INTO messages (id, user_id, kind, title, body, task_id, instance_id, sender, read_at, created_at)",
            10,
            rows,
        );
    }

    pub fn insert_reminders(&mut self, reminders: &[Reminder]) {
        let rows = reminders
            .iter()
            .map(|r| {
                vec![
                    r.id.as_str().into(),
                    r.instance_id.as_str().into(),
                    r.definition_key.as_str().into(),
                    r.start_activity.as_str().into(),
                    r.end_activity.as_str().into(),
                    r.via_join.as_str().into(),
                    r.group_id.as_str().into(),
                    r.reminder_type.as_str().into(),
                    r.count.into(),
                    r.interval_ms.into(),
                    channels_text(&r.channels).into(),
                    r.escalation.as_text().into(),
                    r.state.as_str().into(),
                    r.sent_count.into(),
                    r.next_fire_at.into(),
                    i64::from(r.escalated).into(),
                    r.created_at.into(),
                    r.first_fired_at.into(),
                    r.last_fired_at.into(),
                    r.finished_at.into(),
                ]
            })
            .collect();
        insert_rows(
            self,
            &format!("INSERT INTO reminders ({})", reminders::COLUMNS),
            20,
            rows,
        );
    }

    /// Writes reminders' changing columns (one statement each: their values differ).
    pub fn save_reminders(&mut self, reminders: &[Reminder]) {
        for r in reminders {
            self.exec(
                "UPDATE reminders SET via_join = $2, state = $3, sent_count = $4, next_fire_at = $5, \
                 escalated = $6, first_fired_at = $7, last_fired_at = $8, finished_at = $9 WHERE id = $1",
                vec![
                    r.id.as_str().into(),
                    r.via_join.as_str().into(),
                    r.state.as_str().into(),
                    r.sent_count.into(),
                    r.next_fire_at.into(),
                    i64::from(r.escalated).into(),
                    r.first_fired_at.into(),
                    r.last_fired_at.into(),
                    r.finished_at.into(),
                ],
            );
        }
    }

    /// 挂起: the instance's waiting reminders stop being due and keep what was left of their
    /// wait (an overdue one keeps nothing: it fires at once on resume).
    pub fn pause_reminders(&mut self, instance_id: &str, now: i64) {
        self.exec(
            "UPDATE reminders SET paused_ms = CASE WHEN next_fire_at > $2 THEN next_fire_at - $2 \
             ELSE 0 END, next_fire_at = NULL WHERE instance_id = $1 AND next_fire_at IS NOT NULL",
            vec![instance_id.into(), now.into()],
        );
    }

    /// 激活: the reminders [`Batch::pause_reminders`] held wait what was left of their wait
    /// from `now`.
    pub fn resume_reminders(&mut self, instance_id: &str, now: i64) {
        self.exec(
            "UPDATE reminders SET next_fire_at = $2 + paused_ms, paused_ms = NULL \
             WHERE instance_id = $1 AND paused_ms IS NOT NULL",
            vec![instance_id.into(), now.into()],
        );
    }

    pub fn insert_events(&mut self, events: &[Event]) -> Result<()> {
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            rows.push(vec![
                e.instance_id.as_str().into(),
                e.at.into(),
                e.kind.as_str().into(),
                e.activity_id.as_str().into(),
                e.actor.as_str().into(),
                json_text(&e.detail)?.into(),
            ]);
        }
        insert_rows(
            self,
            "INSERT INTO events (instance_id, at, kind, activity_id, actor, detail)",
            6,
            rows,
        );
        Ok(())
    }
}

impl Store {
    /// The instance a task belongs to, found from the task in one statement (a completion's
    /// first read; the instance comes first so that its `rev` guards all that is read after).
    pub async fn instance_record_of_task(
        &self,
        task_id: &str,
    ) -> Result<Option<super::InstanceRecord>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {} FROM instances WHERE id = (SELECT instance_id FROM tasks WHERE id = $1)",
            rows::INSTANCE_COLUMNS
        )))
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(super::instances::instance_record)
            .transpose()
    }
}

/// Users by id, on any connection (a transaction's or the pool's).
pub(super) async fn users_by_id(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<HashMap<String, User>> {
    let mut found = HashMap::new();
    for chunk in ids.chunks(500) {
        let sql = format!(
            "SELECT {} FROM users WHERE id IN ({})",
            rows::USER_COLUMNS,
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let user = rows::user(&row)?;
            found.insert(user.id.clone(), user);
        }
    }
    Ok(found)
}

/// The pending approval contexts of these tasks, on any connection.
async fn pending_approvals_of_tasks(
    conn: &mut AnyConnection,
    task_ids: &[String],
) -> Result<Vec<ApprovalContext>> {
    if task_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {} FROM approval_contexts WHERE status = 'pending' AND task_id IN ({}) ORDER BY id",
        approvals::COLUMNS,
        placeholders(1, task_ids.len())
    );
    let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
    for id in task_ids {
        query = query.bind(id);
    }
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(approvals::context)
        .collect()
}

/// Where a transition's writer reads what its writes need: the pool, before the transaction
/// (the instance guard vouches for what it read), or the transaction of a caller that already
/// holds the instance (a reassignment inside a reply's or an escalation's transaction, which
/// must see that transaction's own writes).
#[derive(Debug)]
pub enum Source<'a> {
    Pool(&'a Store),
    Tx(&'a mut super::Tx),
}

impl Source<'_> {
    pub fn store(&self) -> Option<&Store> {
        match self {
            Source::Pool(store) => Some(store),
            Source::Tx(_) => None,
        }
    }

    /// Users by id.
    pub async fn users_by_id(&mut self, ids: &[String]) -> Result<HashMap<String, User>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        match self {
            Source::Pool(store) => users_by_id(&mut *store.pool.acquire().await?, ids).await,
            Source::Tx(tx) => users_by_id(&mut tx.inner, ids).await,
        }
    }

    /// The pending approval contexts of these tasks.
    pub async fn pending_approvals_of_tasks(
        &mut self,
        task_ids: &[String],
    ) -> Result<Vec<ApprovalContext>> {
        match self {
            Source::Pool(store) => {
                pending_approvals_of_tasks(&mut *store.pool.acquire().await?, task_ids).await
            }
            Source::Tx(tx) => pending_approvals_of_tasks(&mut tx.inner, task_ids).await,
        }
    }

    /// A server-wide reminder type by id.
    pub async fn reminder_type(&mut self, id: &str) -> Result<Option<crate::model::ReminderType>> {
        match self {
            Source::Pool(store) => store.reminder_type(id).await,
            Source::Tx(tx) => super::reminder_types::reminder_type_on(&mut tx.inner, id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{ApprovalStatus, Instance},
        store::{ConnectOptions, Guards, InstanceRecord},
    };

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, &ConnectOptions::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        (dir, store)
    }

    fn instance(id: &str) -> InstanceRecord {
        InstanceRecord {
            instance: Instance {
                id: id.into(),
                definition_key: "expense".into(),
                definition_version: 1,
                business_key: String::new(),
                variables: serde_json::Map::new(),
                status: InstanceStatus::Running,
                error: String::new(),
                started_by: "alice".into(),
                created_at: 0,
                updated_at: 0,
            },
            joins: JoinState::default(),
            multi: Default::default(),
            rev: 0,
        }
    }

    fn context(id: &str, approver: &str) -> ApprovalContext {
        ApprovalContext {
            id: id.into(),
            task_id: format!("task-{id}"),
            instance_id: "i1".into(),
            approver: approver.into(),
            approver_email: format!("{approver}@example.com"),
            approver_aliases: Vec::new(),
            kid: 1,
            sent_at: 0,
            valid_until: 1_000,
            status: ApprovalStatus::Pending,
            message_id: format!("<{id}@example.com>"),
            subject_tag: String::new(),
            last_mail_at: 0,
            revoke_reason: String::new(),
            used_at: None,
        }
    }

    async fn run(store: &Store, batch: Batch) -> Guards {
        let mut tx = store.begin().await.unwrap();
        let guards = tx.run_batch(batch).await.unwrap();
        tx.commit().await.unwrap();
        guards
    }

    #[tokio::test]
    async fn a_change_over_several_instances_counts_each_that_kept_its_rev() {
        let (_dir, store) = store().await;
        let mut batch = Batch::new();
        batch.insert_instance(&instance("i1")).unwrap();
        batch.insert_instance(&instance("i2")).unwrap();
        run(&store, batch).await;

        let mut batch = Batch::new();
        batch.bump_instance_rev("i1", 0);
        batch.bump_instance_rev("i2", 0);
        assert_eq!(run(&store, batch).await.count(GUARD_INSTANCE), 2);
        // i1 still has the rev this change read (1); i2 moved on from the 0 it read.
        let mut batch = Batch::new();
        batch.bump_instance_rev("i1", 1);
        batch.bump_instance_rev("i2", 0);
        assert_eq!(run(&store, batch).await.count(GUARD_INSTANCE), 1);
    }

    #[tokio::test]
    async fn approval_guards_see_a_changed_context_and_one_issued_unseen() {
        let (_dir, store) = store().await;
        let mut batch = Batch::new();
        batch.insert_instance(&instance("i1")).unwrap();
        let (a, b) = (context("a", "mary"), context("b", "mary"));
        batch
            .insert_approvals(&[a.clone(), b.clone(), context("c", "bob")])
            .unwrap();
        run(&store, batch).await;

        // As read: nothing changed, and mary has no pending context beyond a and b.
        let mut batch = Batch::new();
        batch.approvals_unchanged(&[a.clone(), b.clone()]);
        batch.no_other_pending_approvals("mary", &["a".into(), "b".into()]);
        assert!(!run(&store, batch).await.has(GUARD_APPROVAL_CHANGED));

        // A context not seen by the decision is pending.
        let mut batch = Batch::new();
        batch.no_other_pending_approvals("mary", &["a".into()]);
        assert!(run(&store, batch).await.has(GUARD_APPROVAL_CHANGED));

        // Mail was sent again (last_mail_at moved), then a was revoked: both change it.
        let mut batch = Batch::new();
        batch.touch_approval_mail("a", 500);
        run(&store, batch).await;
        let mut batch = Batch::new();
        batch.approvals_unchanged(std::slice::from_ref(&a));
        assert!(run(&store, batch).await.has(GUARD_APPROVAL_CHANGED));
        let a = ApprovalContext {
            last_mail_at: 500,
            ..a
        };
        let mut batch = Batch::new();
        batch.approvals_unchanged(std::slice::from_ref(&a));
        assert!(!run(&store, batch).await.has(GUARD_APPROVAL_CHANGED));
        let mut batch = Batch::new();
        batch.revoke_approvals(&["a".into()], "revoked");
        run(&store, batch).await;
        let mut batch = Batch::new();
        batch.approvals_unchanged(std::slice::from_ref(&a));
        batch.no_other_pending_approvals("mary", &[]);
        let guards = run(&store, batch).await;
        // Both: a changed, and b is pending though none was known.
        assert_eq!(guards.count(GUARD_APPROVAL_CHANGED), 2);
    }
}
