//! Approval contexts (审批上下文) and the HMAC keys that sign reply tokens.
use sqlx::{Any, AssertSqlSafe, Row, any::AnyRow};

use super::{Store, Tx};
use crate::{
    error::{Error, Result},
    model::{ApprovalContext, ApprovalStatus},
};

pub(super) const COLUMNS: &str = "id, task_id, instance_id, approver, approver_email, kid, sent_at, valid_until, \
    status, message_id, subject_tag, last_mail_at, revoke_reason, used_at, approver_aliases";

pub(super) fn context(row: &AnyRow) -> Result<ApprovalContext> {
    let status: String = row.try_get("status")?;
    let used_at: i64 = row.try_get("used_at")?;
    let aliases: String = row.try_get("approver_aliases")?;
    let approver_aliases = serde_json::from_str(&aliases).map_err(|e| {
        Error::Internal(anyhow::anyhow!(
            "corrupt row: approval_contexts.approver_aliases: {e}"
        ))
    })?;
    Ok(ApprovalContext {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        instance_id: row.try_get("instance_id")?,
        approver: row.try_get("approver")?,
        approver_email: row.try_get("approver_email")?,
        approver_aliases,
        kid: row.try_get("kid")?,
        sent_at: row.try_get("sent_at")?,
        valid_until: row.try_get("valid_until")?,
        status: ApprovalStatus::parse(&status).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!(
                "corrupt row: approval_contexts.status = {status:?}"
            ))
        })?,
        message_id: row.try_get("message_id")?,
        subject_tag: row.try_get("subject_tag")?,
        last_mail_at: row.try_get("last_mail_at")?,
        revoke_reason: row.try_get("revoke_reason")?,
        used_at: (used_at != 0).then_some(used_at),
    })
}

/// One HMAC key of the reply-token key ring.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey {
    pub kid: i64,
    /// Only a generated secret is kept here; empty for a configured one.
    pub secret: String,
    /// `config` or `generated`.
    pub source: String,
    /// [`crate::mail::token::fingerprint`] of a configured secret; empty for a generated one.
    pub fingerprint: String,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("kid", &self.kid)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Every token key, oldest first.
    pub async fn token_keys(&self) -> Result<Vec<TokenKey>> {
        let rows = sqlx::query::<Any>(
            "SELECT kid, secret, source, fingerprint FROM token_keys ORDER BY kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(TokenKey {
                    kid: row.try_get("kid")?,
                    secret: row.try_get("secret")?,
                    source: row.try_get("source")?,
                    fingerprint: row.try_get("fingerprint")?,
                })
            })
            .collect()
    }

    /// Adds a key with the next id: a generated `secret`, or the `fingerprint` of a configured
    /// one (its secret stays out of the database). Two servers starting at once may race: the
    /// loser's insert conflicts (same kid, or same fingerprint) and it reads the winner's key.
    pub async fn add_token_key(
        &self,
        secret: &str,
        fingerprint: &str,
        source: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query::<Any>(
            "INSERT INTO token_keys (kid, secret, source, created_at, fingerprint) \
             SELECT COALESCE(MAX(kid), 0) + 1, $1, $2, $3, $4 FROM token_keys WHERE true ON CONFLICT DO NOTHING",
        )
        .bind(secret)
        .bind(source)
        .bind(now)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a configured secret that an earlier release stored in plain text, keeping its key
    /// id under the secret's fingerprint.
    pub async fn scrub_token_key(&self, kid: i64, fingerprint: &str) -> Result<()> {
        sqlx::query::<Any>(
            "UPDATE token_keys SET secret = '', fingerprint = $2 WHERE kid = $1 AND source = 'config'",
        )
        .bind(kid)
        .bind(fingerprint)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn approval_context(&self, id: &str) -> Result<Option<ApprovalContext>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_contexts WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(context).transpose()
    }

    /// The contexts with these ids (those that exist), by id: one query per
    /// [`super::MAX_IN_LIST`] ids, on one connection.
    pub async fn approval_contexts(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, ApprovalContext>> {
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(found);
        }
        let mut conn = self.pool.acquire().await?;
        for chunk in ids.chunks(super::MAX_IN_LIST) {
            let sql = format!(
                "SELECT {COLUMNS} FROM approval_contexts WHERE id IN ({})",
                super::placeholders(1, chunk.len())
            );
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                let c = context(&row)?;
                found.insert(c.id.clone(), c);
            }
        }
        Ok(found)
    }

    /// The newest context of a task (a reassigned task gets a new one).
    pub async fn approval_for_task(&self, task_id: &str) -> Result<Option<ApprovalContext>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_contexts WHERE task_id = $1 ORDER BY sent_at DESC, id DESC LIMIT 1"
        )))
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(context).transpose()
    }

    /// The pending approval contexts addressed to `approver`, by instance.
    pub async fn pending_approvals_of(&self, approver: &str) -> Result<Vec<ApprovalContext>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_contexts WHERE approver = $1 AND status = 'pending' ORDER BY instance_id, sent_at, id"
        )))
        .bind(approver)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(context).collect()
    }

    pub async fn approval_by_message_id(
        &self,
        message_id: &str,
    ) -> Result<Option<ApprovalContext>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_contexts WHERE message_id = $1"
        )))
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(context).transpose()
    }
}

impl Tx {
    /// Pending contexts of a task (a reminder mail carries one's token).
    pub async fn pending_approvals_of_task(
        &mut self,
        task_id: &str,
    ) -> Result<Vec<ApprovalContext>> {
        let rows = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_contexts WHERE task_id = $1 AND status = 'pending'"
        )))
        .bind(task_id)
        .fetch_all(&mut *self.inner)
        .await?;
        rows.iter().map(context).collect()
    }

    /// Moves a pending context to `status`; `false` if it was no longer pending.
    pub async fn close_approval(
        &mut self,
        id: &str,
        status: crate::model::ApprovalStatus,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        let done = sqlx::query::<Any>(
            "UPDATE approval_contexts SET status = $2, revoke_reason = $3, \
             used_at = CASE WHEN $2 = 'used' THEN $4 ELSE used_at END \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(reason)
        .bind(now)
        .execute(&mut *self.inner)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn user(&mut self, id: &str) -> Result<Option<crate::model::User>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {} FROM users WHERE id = $1",
            super::rows::USER_COLUMNS
        )))
        .bind(id)
        .fetch_optional(&mut *self.inner)
        .await?;
        row.as_ref().map(super::rows::user).transpose()
    }
}
