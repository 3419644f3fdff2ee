//! In-system messages (系统短消息): who may read whose, listing, marking read, and posting. A
//! message is published to watchers only after the transaction that stored it committed, so a
//! watcher never sees a message that a rollback then takes back.
use super::{Actor, Workflow, new_id};
use crate::policy;
use crate::{
    error::{Error, Result},
    model::{Message, MessageKind, Page},
    store::{MessageSelection, PageRequest},
};

/// At most this many ids in one MarkMessagesRead call (one `IN (...)` list).
const MAX_MARK_IDS: usize = 1000;

/// A notice to post to one user's inbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notice {
    pub user_id: String,
    pub title: String,
    pub body: String,
    /// The task it is about, or empty.
    pub task_id: String,
    /// That task's instance, or empty.
    pub instance_id: String,
}

/// One page of a user's messages with the badge count, which ignores paging.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub page: Page<Message>,
    pub unread_count: i64,
}

/// What MarkMessagesRead did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkedRead {
    /// Messages that went from unread to read.
    pub marked: i64,
    /// The user's unread messages left.
    pub unread_count: i64,
}

impl Workflow {
    /// Whose messages a request is about: `user_id`, or the caller's own when empty. Only
    /// admins may name someone else ([`policy`]).
    pub fn message_owner(&self, actor: &Actor, user_id: &str) -> Result<String> {
        let user_id = user_id.trim();
        if user_id.is_empty() {
            return Ok(actor.user_id.clone());
        }
        policy::can(actor, policy::Action::ReadInboxOf { user_id })?;
        Ok(user_id.to_string())
    }

    pub async fn list_messages(
        &self,
        actor: &Actor,
        user_id: &str,
        unread_only: bool,
        page: &PageRequest,
    ) -> Result<MessagePage> {
        let owner = self.message_owner(actor, user_id)?;
        let page = self.store.list_messages(&owner, unread_only, page).await?;
        let unread_count = self.store.unread_message_count(&owner).await?;
        Ok(MessagePage { page, unread_count })
    }

    /// Marks messages read in one transaction: either all the listed ones that were unread, or
    /// nothing when one of them is not the user's.
    pub async fn mark_messages_read(
        &self,
        actor: &Actor,
        user_id: &str,
        selection: MessageSelection,
    ) -> Result<MarkedRead> {
        let owner = self.message_owner(actor, user_id)?;
        let selection = match selection {
            MessageSelection::All => MessageSelection::All,
            MessageSelection::Ids(ids) => MessageSelection::Ids(checked_ids(ids)?),
        };
        let mut tx = self.store.begin().await?;
        let marked = tx
            .mark_messages_read(&owner, &selection, self.now())
            .await?;
        if let MessageSelection::Ids(ids) = &selection
            && let Some(missing) = tx.foreign_message_id(&owner, ids).await?
        {
            // Dropping the transaction rolls the marks back: nothing is marked.
            return Err(Error::not_found("message", missing));
        }
        let unread_count = tx.unread_message_count(&owner).await?;
        tx.commit().await?;
        Ok(MarkedRead {
            marked: i64::try_from(marked).unwrap_or(i64::MAX),
            unread_count,
        })
    }

    /// The user's unread messages, oldest first (what a watcher gets before live ones).
    pub async fn unread_messages(&self, owner: &str) -> Result<Vec<Message>> {
        self.store.unread_messages(owner).await
    }

    /// Posts system notices (MessageKind::Notice) in one transaction and publishes them to
    /// watchers after it committed.
    pub async fn post_notices(&self, notices: Vec<Notice>) -> Result<Vec<Message>> {
        let now = self.now();
        let mut messages = Vec::with_capacity(notices.len());
        for (i, notice) in notices.into_iter().enumerate() {
            if notice.user_id.trim().is_empty() {
                return Err(Error::invalid(format!("notices[{i}].user_id"), "required"));
            }
            messages.push(Message {
                id: new_id(),
                user_id: notice.user_id,
                kind: MessageKind::Notice,
                title: notice.title,
                body: notice.body,
                task_id: notice.task_id,
                instance_id: notice.instance_id,
                sender: String::new(),
                read_at: None,
                created_at: now,
            });
        }
        let mut tx = self.store.begin().await?;
        for message in &messages {
            tx.insert_message(message).await?;
        }
        tx.commit().await?;
        self.publish_messages(messages.clone());
        Ok(messages)
    }

    pub async fn post_notice(&self, notice: Notice) -> Result<Message> {
        let mut posted = self.post_notices(vec![notice]).await?;
        posted
            .pop()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("a posted notice went missing")))
    }
}

/// The listed ids, each once, in the order given.
fn checked_ids(ids: Vec<String>) -> Result<Vec<String>> {
    let field = "message_ids";
    if ids.is_empty() {
        return Err(Error::invalid(
            field,
            "list the messages to mark, or set all",
        ));
    }
    if ids.len() > MAX_MARK_IDS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_MARK_IDS} ids per call (or set all)"),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    let mut unique = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if id.trim().is_empty() {
            return Err(Error::invalid(field, format!("id {i} is empty")));
        }
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deduplicated_in_order_and_empty_ones_refused() {
        let ids = checked_ids(vec!["b".into(), "a".into(), "b".into()]).unwrap();
        assert_eq!(ids, ["b", "a"]);
        for bad in [vec![], vec!["a".to_string(), " ".to_string()]] {
            let err = checked_ids(bad).unwrap_err();
            assert!(err.to_string().starts_with("message_ids:"), "{err}");
        }
        let err = checked_ids(vec!["x".to_string(); MAX_MARK_IDS + 1]).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
    }
}
