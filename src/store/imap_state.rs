//! Where the IMAP inbound worker stopped: per mailbox (`user@host:port/FOLDER`), the mailbox's
//! UIDVALIDITY and the last UID processed.
use sqlx::{Any, Row};

use super::Store;
use crate::error::Result;

/// A mailbox's position: UIDs up to `last_uid` (under `uid_validity`) are processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapState {
    pub uid_validity: i64,
    pub last_uid: i64,
}

impl Store {
    pub async fn imap_state(&self, mailbox: &str) -> Result<Option<ImapState>> {
        let row =
            sqlx::query::<Any>("SELECT uid_validity, last_uid FROM imap_state WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(ImapState {
                uid_validity: row.try_get("uid_validity")?,
                last_uid: row.try_get("last_uid")?,
            })
        })
        .transpose()
    }

    pub async fn save_imap_state(&self, mailbox: &str, state: ImapState) -> Result<()> {
        sqlx::query::<Any>(
            "INSERT INTO imap_state (mailbox, uid_validity, last_uid) VALUES ($1, $2, $3) \
             ON CONFLICT (mailbox) DO UPDATE SET uid_validity = $2, last_uid = $3",
        )
        .bind(mailbox)
        .bind(state.uid_validity)
        .bind(state.last_uid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
