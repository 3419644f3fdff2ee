//! The database of the in-process server: a fresh SQLite file by default, or a fresh PostgreSQL
//! database with `--fresh-postgres`, thrown away afterwards.
use anyhow::{Context, bail};

use super::BenchArgs;

/// Where the in-process server keeps its data, and how to throw it away afterwards.
pub(super) struct Database {
    pub(super) url: String,
    /// A temporary directory of our own, removed afterwards (`tempfile` is only a dev-dependency).
    dir: Option<std::path::PathBuf>,
    /// (URL of the `postgres` database, name of the database to drop)
    pg_admin: Option<(String, String)>,
}

impl Database {
    pub(super) async fn prepare(args: &BenchArgs) -> anyhow::Result<Self> {
        let Some(url) = &args.database else {
            if args.fresh_postgres {
                bail!("--fresh-postgres needs a postgres:// --database");
            }
            let dir = std::env::temp_dir()
                .join(format!("replyflow-bench-{}", uuid::Uuid::now_v7().simple()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            return Ok(Self {
                url,
                dir: Some(dir),
                pg_admin: None,
            });
        };
        if !args.fresh_postgres {
            return Ok(Self {
                url: url.clone(),
                dir: None,
                pg_admin: None,
            });
        }
        if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            bail!("--fresh-postgres needs a postgres:// --database");
        }
        let admin = with_database(url, "postgres");
        let name = format!("rf_bench_{}", uuid::Uuid::now_v7().simple());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
            .await
            .context("connecting to the postgres database of --database")?;
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .with_context(|| format!("creating database {name}"))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(Self {
            url: with_database(url, &name),
            dir: None,
            pg_admin: Some((admin, name)),
        })
    }

    pub(super) async fn cleanup(self) {
        if let Some(dir) = &self.dir
            && let Err(err) = std::fs::remove_dir_all(dir)
        {
            eprintln!("warning: could not remove {}: {err}", dir.display());
        }
        let Some((admin, name)) = &self.pg_admin else {
            return;
        };
        let dropped = async {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin).await?;
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
