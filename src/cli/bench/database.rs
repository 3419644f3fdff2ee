//! A fresh database that exists for one run and is thrown away afterwards: a SQLite file in a
//! temporary directory of its own, or a new PostgreSQL database on a given server. The bench's
//! in-process server uses it, and so do the integration tests (`#[path]`-included by tests/api and
//! tests/mail), so that there is one way to make and drop a throwaway database. It therefore uses
//! nothing of this crate, only std, sqlx, uuid and anyhow.
use anyhow::{Context, bail};

/// Where a server keeps its data, and how to throw it away afterwards.
#[derive(Debug)]
pub(super) struct Database {
    pub(super) url: String,
    /// A temporary directory of our own, removed afterwards (`tempfile` is only a dev-dependency).
    dir: Option<std::path::PathBuf>,
    /// (URL of the `postgres` database, name of the database to drop)
    pg_admin: Option<(String, String)>,
}

impl Database {
    /// The bench's choice: `database` as given, a fresh database on its server with
    /// `fresh_postgres`, or a fresh SQLite file when no database is given.
    pub(super) async fn prepare(
        database: Option<&str>,
        fresh_postgres: bool,
    ) -> anyhow::Result<Self> {
        match (database, fresh_postgres) {
            (None, true) => bail!("--fresh-postgres needs a postgres:// --database"),
            (None, false) => Self::fresh_sqlite("bench"),
            (Some(url), false) => Ok(Self {
                url: url.to_string(),
                dir: None,
                pg_admin: None,
            }),
            (Some(url), true) => Self::fresh_postgres(url, "bench").await,
        }
    }

    /// A new SQLite file in a new temporary directory; `purpose` names both.
    pub(super) fn fresh_sqlite(purpose: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "replyflow-{purpose}-{}",
            uuid::Uuid::now_v7().simple()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            url: format!("sqlite://{}", dir.join("replyflow.db").display()),
            dir: Some(dir),
            pg_admin: None,
        })
    }

    /// A new, empty database `rf_<purpose>_<uuid>` on the PostgreSQL server of `server_url` (any
    /// database of it: the new one is created from the server's `postgres` database).
    pub(super) async fn fresh_postgres(server_url: &str, purpose: &str) -> anyhow::Result<Self> {
        if !(server_url.starts_with("postgres:") || server_url.starts_with("postgresql:")) {
            bail!("a fresh PostgreSQL database needs a postgres:// URL");
        }
        let admin = with_database(server_url, "postgres");
        let name = format!("rf_{purpose}_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .context("connecting to the server's postgres database")?;
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .with_context(|| format!("creating database {name}"))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(Self {
            url: with_database(server_url, &name),
            dir: None,
            pg_admin: Some((admin, name)),
        })
    }

    /// Drops the PostgreSQL database and removes the SQLite directory (dropping a `Database`
    /// removes the directory too, but only this can drop a PostgreSQL database).
    pub(super) async fn cleanup(mut self) {
        self.remove_dir();
        let Some((admin, name)) = self.pg_admin.take() else {
            return;
        };
        let dropped = async {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await?;
            sqlx::Executor::execute(
                &mut conn,
                sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
            )
            .await?;
            sqlx::Connection::close(conn).await
        }
        .await;
        if let Err(err) = dropped {
            eprintln!("warning: could not drop database {name}: {err}");
        }
    }

    fn remove_dir(&mut self) {
        if let Some(dir) = self.dir.take()
            && let Err(err) = std::fs::remove_dir_all(&dir)
        {
            eprintln!("warning: could not remove {}: {err}", dir.display());
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.remove_dir();
    }
}

/// `url` with its database name replaced by `name`, query string kept.
pub(super) fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    format!("{prefix}/{name}{query}")
}
