//! The user directory the OA pushes (DirectoryService).
use sqlx::{Any, AssertSqlSafe};

use super::{
    Store,
    paging::{Filter, PageRequest, into_page},
    rows::{self, USER_COLUMNS},
};
use crate::{
    error::Result,
    model::{Page, User},
};

impl Store {
    pub async fn upsert_user(&self, user: &User, now: i64) -> Result<()> {
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
        .execute(&self.pool)
        .await?;
        Ok(())
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

    /// Another user whose address is `email` (case-insensitive), if any.
    pub async fn user_with_email(&self, email: &str, except_id: &str) -> Result<Option<String>> {
        let id = sqlx::query_scalar::<Any, String>(
            "SELECT id FROM users WHERE lower(email) = lower($1) AND id <> $2 LIMIT 1",
        )
        .bind(email)
        .bind(except_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id)
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
        let (tail, args) = filter.page_sql(page, "id");
        let sql = format!("SELECT {USER_COLUMNS} FROM users{tail}");
        let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
        for arg in args {
            query = query.bind(arg);
        }
        let users = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(rows::user)
            .collect::<Result<Vec<_>>>()?;
        Ok(into_page(users, page, |u| &u.id))
    }
}
