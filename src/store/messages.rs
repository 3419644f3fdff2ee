//! In-system messages (系统短消息): written by reminders and escalations, read by ListMessages.
//!
//! Messages are listed newest first by (created_at, id), not by id alone: created_at comes from
//! the injected clock while ids carry the machine's time, and the contract orders by the former.
//! So the page token carries both keys of the last row (still opaque and bound to the filters,
//! like every other token of [`super::paging`]).
use sqlx::{Any, AssertSqlSafe, Row, any::AnyRow};

use super::{
    Store, Tx,
    paging::{Filter, PageRequest, decode_token, hex},
    placeholders, values_rows,
};
use crate::{
    error::{Error, Result},
    model::{Message, MessageKind, Page},
};

const MESSAGE_COLUMNS: &str =
    "id, user_id, kind, title, body, task_id, instance_id, sender, read_at, created_at";

const UNREAD_COUNT: &str = "SELECT COUNT(*) FROM messages WHERE user_id = $1 AND read_at = 0";

/// What MarkMessagesRead marks: the listed messages, or all of the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSelection {
    Ids(Vec<String>),
    All,
}

fn message(row: &AnyRow) -> Result<Message> {
    let kind: String = row.try_get("kind")?;
    let read_at: i64 = row.try_get("read_at")?;
    Ok(Message {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        kind: MessageKind::parse(&kind).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("corrupt row: messages.kind = {kind:?}"))
        })?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        task_id: row.try_get("task_id")?,
        instance_id: row.try_get("instance_id")?,
        sender: row.try_get("sender")?,
        read_at: (read_at != 0).then_some(read_at),
        created_at: row.try_get("created_at")?,
    })
}

/// `$first, $first+1, ...` for an `IN (...)` list of `n` values.
impl Tx {
    /// Inserts messages, 100 to a statement (a scheduler batch writes hundreds at once).
    pub async fn insert_messages(&mut self, messages: &[Message]) -> Result<()> {
        for chunk in messages.chunks(100) {
            let sql = format!(
                "INSERT INTO messages (id, user_id, kind, title, body, task_id, instance_id, sender, read_at, created_at) \
                 VALUES {}",
                values_rows(chunk.len(), 10)
            );
            let mut query = sqlx::query::<Any>(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                query = query
                    .bind(m.id.clone())
                    .bind(m.user_id.clone())
                    .bind(m.kind.as_str())
                    .bind(m.title.clone())
                    .bind(m.body.clone())
                    .bind(m.task_id.clone())
                    .bind(m.instance_id.clone())
                    .bind(m.sender.clone())
                    .bind(m.read_at.unwrap_or(0))
                    .bind(m.created_at);
            }
            query.execute(&mut *self.inner).await?;
        }
        Ok(())
    }

    pub async fn insert_message(&mut self, m: &Message) -> Result<()> {
        sqlx::query::<Any>(
            "INSERT INTO messages (id, user_id, kind, title, body, task_id, instance_id, sender, read_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&m.id)
        .bind(&m.user_id)
        .bind(m.kind.as_str())
        .bind(&m.title)
        .bind(&m.body)
        .bind(&m.task_id)
        .bind(&m.instance_id)
        .bind(&m.sender)
        .bind(m.read_at.unwrap_or(0))
        .bind(m.created_at)
        .execute(&mut *self.inner)
        .await?;
        Ok(())
    }

    /// Marks the selected unread messages of `user_id` read at `now`; returns how many changed.
    /// Ids that are not that user's are simply not matched: [`Tx::foreign_message_id`] tells the
    /// caller which one to refuse (the update comes first so that a SQLite transaction starts
    /// with its write).
    pub async fn mark_messages_read(
        &mut self,
        user_id: &str,
        selection: &MessageSelection,
        now: i64,
    ) -> Result<u64> {
        let done = match selection {
            MessageSelection::All => {
                sqlx::query::<Any>(
                    "UPDATE messages SET read_at = $1 WHERE user_id = $2 AND read_at = 0",
                )
                .bind(now)
                .bind(user_id)
                .execute(&mut *self.inner)
                .await?
            }
            MessageSelection::Ids(ids) => {
                let sql = format!(
                    "UPDATE messages SET read_at = $1 WHERE user_id = $2 AND read_at = 0 AND id IN ({})",
                    placeholders(3, ids.len())
                );
                let mut query = sqlx::query::<Any>(AssertSqlSafe(sql))
                    .bind(now)
                    .bind(user_id);
                for id in ids {
                    query = query.bind(id);
                }
                query.execute(&mut *self.inner).await?
            }
        };
        Ok(done.rows_affected())
    }

    /// The first of `ids` that is not a message of `user_id`, if any.
    pub async fn foreign_message_id(
        &mut self,
        user_id: &str,
        ids: &[String],
    ) -> Result<Option<String>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT id FROM messages WHERE user_id = $1 AND id IN ({})",
            placeholders(2, ids.len())
        );
        let mut query = sqlx::query_scalar::<Any, String>(AssertSqlSafe(sql)).bind(user_id);
        for id in ids {
            query = query.bind(id);
        }
        let found: std::collections::HashSet<String> = query
            .fetch_all(&mut *self.inner)
            .await?
            .into_iter()
            .collect();
        Ok(ids.iter().find(|id| !found.contains(*id)).cloned())
    }

    pub async fn unread_message_count(&mut self, user_id: &str) -> Result<i64> {
        let count = sqlx::query_scalar::<Any, i64>(UNREAD_COUNT)
            .bind(user_id)
            .fetch_one(&mut *self.inner)
            .await?;
        Ok(count)
    }
}

impl Store {
    /// One page of a user's messages, newest first (created_at, then id, descending).
    pub async fn list_messages(
        &self,
        user_id: &str,
        unread_only: bool,
        page: &PageRequest,
    ) -> Result<Page<Message>> {
        // The token is bound to these filters through the same fingerprint as every list.
        let mut filters = Filter::default();
        filters.eq("user_id", user_id);
        if unread_only {
            filters.raw("read_at = 0");
        }
        let fingerprint = filters.fingerprint();
        let after = if page.page_token.is_empty() {
            None
        } else {
            let last = decode_token(&page.page_token, &fingerprint)?;
            let key = last
                .split_once(':')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| !id.is_empty());
            Some(key.ok_or_else(|| {
                Error::invalid(
                    "page_token",
                    "not a token this server issued for these filters",
                )
            })?)
        };
        let limit = page.limit();
        let mut sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1");
        if unread_only {
            sql.push_str(" AND read_at = 0");
        }
        if after.is_some() {
            sql.push_str(" AND (created_at < $2 OR (created_at = $2 AND id < $3))");
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit + 1
        ));
        let mut query = sqlx::query::<Any>(AssertSqlSafe(sql)).bind(user_id);
        if let Some((at, id)) = &after {
            query = query.bind(*at).bind(id.as_str());
        }
        let mut items = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(message)
            .collect::<Result<Vec<_>>>()?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next_page_token = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|m| hex(format!("{fingerprint}:{}:{}", m.created_at, m.id).as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    /// A user's unread messages, oldest first (what WatchMessages replays before going live).
    pub async fn unread_messages(&self, user_id: &str) -> Result<Vec<Message>> {
        sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE user_id = $1 AND read_at = 0 \
             ORDER BY created_at, id"
        )))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(message)
        .collect()
    }

    pub async fn unread_message_count(&self, user_id: &str) -> Result<i64> {
        let count = sqlx::query_scalar::<Any, i64>(UNREAD_COUNT)
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(count)
    }
}
