//! The user directory the OA pushes (DirectoryService).
use sqlx::{Any, AssertSqlSafe};

use super::{
    Store, Tx,
    paging::{Filter, Order, PageRequest},
    rows::{self, USER_COLUMNS},
};
use crate::{
    error::Result,
    model::{Page, User},
};

/// An address that already identifies another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTaken {
    pub address: String,
    pub owner: String,
}

impl Store {
    /// The user a mail address (email or alias, any case) belongs to.
    pub async fn user_by_address(&self, address: &str) -> Result<Option<User>> {
        let id =
            sqlx::query_scalar::<Any, String>("SELECT user_id FROM user_emails WHERE address = $1")
                .bind(address.to_lowercase())
                .fetch_optional(&self.pool)
                .await?;
        match id {
            Some(id) => self.user(&id).await,
            None => Ok(None),
        }
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let row = sqlx::query::<Any>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::user).transpose()
    }

    pub async fn list_users(
        &self,
        manager_id: &str,
        email: &str,
        page: &PageRequest,
    ) -> Result<Page<User>> {
        let mut filter = Filter::default();
        filter.eq_if("manager_id", manager_id);
        if !email.is_empty() {
            filter.eq("lower(email)", &email.to_lowercase());
        }
        self.fetch_page(
            &format!("SELECT {USER_COLUMNS} FROM users"),
            filter,
            page,
            Order::OldestFirst,
            rows::user,
            |u| &u.id,
        )
        .await
    }
}

impl Tx {
    /// Creates or replaces a user and the addresses that identify them. An address that already
    /// belongs to someone else comes back as [`AddressTaken`]: the caller must then drop the
    /// transaction (nothing is kept).
    pub async fn upsert_user(&mut self, user: &User, now: i64) -> Result<Option<AddressTaken>> {
        let aliases = serde_json::to_string(&user.email_aliases)
            .map_err(|e| crate::error::Error::Internal(e.into()))?;
        sqlx::query::<Any>(
            "INSERT INTO users (id, display_name, email, email_aliases, phone, manager_id, locale, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, email = excluded.email, \
             email_aliases = excluded.email_aliases, phone = excluded.phone, manager_id = excluded.manager_id, \
             locale = excluded.locale, updated_at = excluded.updated_at",
        )
        .bind(&user.id)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(aliases)
        .bind(&user.phone)
        .bind(&user.manager_id)
        .bind(&user.locale)
        .bind(now)
        .execute(&mut *self.inner)
        .await?;
        sqlx::query::<Any>("DELETE FROM user_emails WHERE user_id = $1")
            .bind(&user.id)
            .execute(&mut *self.inner)
            .await?;
        let mut addresses: Vec<String> = std::iter::once(&user.email)
            .chain(&user.email_aliases)
            .filter(|a| !a.is_empty())
            .map(|a| a.to_lowercase())
            .collect();
        addresses.sort();
        addresses.dedup();
        for address in addresses {
            let inserted = sqlx::query::<Any>(
                "INSERT INTO user_emails (address, user_id) VALUES ($1, $2) ON CONFLICT (address) DO NOTHING",
            )
            .bind(&address)
            .bind(&user.id)
            .execute(&mut *self.inner)
            .await?;
            if inserted.rows_affected() == 0 {
                let owner = sqlx::query_scalar::<Any, String>(
                    "SELECT user_id FROM user_emails WHERE address = $1",
                )
                .bind(&address)
                .fetch_one(&mut *self.inner)
                .await?;
                return Ok(Some(AddressTaken { address, owner }));
            }
        }
        Ok(None)
    }
}
