//! Deployed process definitions. Deploying a key again makes the next version; the version is
//! computed inside the insert so that concurrent deploys of one key cannot share a number.
use sqlx::{Any, AssertSqlSafe};

use super::{
    Store,
    paging::{Filter, Order, PageRequest},
    rows::{self, DEFINITION_COLUMNS},
};
use crate::{
    error::Result,
    model::{Definition, Page},
};

impl Store {
    /// Stores a new version of `key` and returns it.
    pub async fn insert_definition(
        &self,
        key: &str,
        name: &str,
        bpmn_xml: &str,
        deployed_by: &str,
        now: i64,
    ) -> Result<(String, i64)> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let id = uuid::Uuid::now_v7().to_string();
            let inserted = sqlx::query_scalar::<Any, i64>(
                "INSERT INTO definitions (id, key, version, name, bpmn_xml, deployed_by, created_at) \
                 SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5, $6 FROM definitions WHERE key = $2 \
                 RETURNING version",
            )
            .bind(&id)
            .bind(key)
            .bind(name)
            .bind(bpmn_xml)
            .bind(deployed_by)
            .bind(now)
            .fetch_one(&self.pool)
            .await;
            match inserted {
                Ok(version) => return Ok((id, version)),
                // Two deploys of one key raced to the same version on PostgreSQL: try again.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 5 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `version` 0 means the latest.
    pub async fn definition(&self, key: &str, version: i64) -> Result<Option<Definition>> {
        let row = if version == 0 {
            sqlx::query::<Any>(AssertSqlSafe(format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE key = $1 ORDER BY version DESC LIMIT 1"
            )))
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
        } else {
            sqlx::query::<Any>(AssertSqlSafe(format!(
                "SELECT {DEFINITION_COLUMNS} FROM definitions WHERE key = $1 AND version = $2"
            )))
            .bind(key)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
        };
        row.as_ref().map(rows::definition).transpose()
    }

    /// Definitions in deployment order, optionally of one key or only the latest versions.
    pub async fn list_definitions(
        &self,
        key: &str,
        latest_only: bool,
        page: &PageRequest,
    ) -> Result<Page<Definition>> {
        let mut filter = Filter::default();
        filter.eq_if("key", key);
        if latest_only {
            filter.raw("version = (SELECT MAX(d2.version) FROM definitions d2 WHERE d2.key = definitions.key)");
        }
        self.fetch_page(
            &format!("SELECT {DEFINITION_COLUMNS} FROM definitions"),
            filter,
            page,
            Order::NewestFirst,
            rows::definition,
            |d| &d.id,
        )
        .await
    }
}
