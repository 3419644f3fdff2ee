//! Several writes in one round trip to the database.
//!
//! A transition writes a dozen rows in six tables. Sent one statement at a time, each is a round
//! trip to sqlx's SQLite worker thread (or to PostgreSQL), and those round trips, not the disk,
//! were the cost of a transition (issue 10). A [`Batch`] gathers the statements, each written
//! with its own `$1…` numbering, and sends them as ONE query: on SQLite the statements joined by
//! `;` (sqlx binds `$N` by number across the statements of one query), on PostgreSQL one
//! statement of data-modifying CTEs (PostgreSQL runs every one of them, referenced or not).
//!
//! Some statements are *guards*: they return rows of one text column `g`. A guard that expects
//! a row (the instance's `rev` still the one the decision was computed from; a request id not
//! used yet) or expects none (a user whose address did not change) tells the caller whether the
//! batch may stand; if not, the caller rolls the batch back (a savepoint) and decides again.
//! In a PostgreSQL CTE every part sees the database as it was before the statement, so no two
//! parts of one batch may write the same row (a transition never does).
use std::collections::HashMap;

use sqlx::{Any, AssertSqlSafe, Row};

use super::{Backend, Tx};
use crate::error::Result;

/// Bound values per round trip at most (SQLite allows 32,766, PostgreSQL 65,535); a longer
/// batch goes in several round trips of the same transaction.
const MAX_ARGS: usize = 30_000;

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Int(i64),
    /// SQL NULL in a BIGINT column.
    NullInt,
    Bytes(Vec<u8>),
}

impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(v.to_vec())
    }
}

impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Arg::NullInt, Arg::Int)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_string())
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

#[derive(Debug, Clone)]
struct Part {
    /// The statement with its own `$1…$n` numbering.
    sql: String,
    /// PostgreSQL's spelling of the statement, where it differs.
    postgres_sql: Option<String>,
    args: Vec<Arg>,
    /// Returns rows of one text column `g` (RETURNING … AS g, or SELECT … AS g).
    guard: bool,
}

/// Statements to run in one round trip, in order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    parts: Vec<Part>,
}

/// The guard rows a batch returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guards {
    seen: HashMap<String, usize>,
}

impl Guards {
    pub fn has(&self, tag: &str) -> bool {
        self.seen.contains_key(tag)
    }

    /// How many rows carried `tag` (one guard per instance of a change that spans several).
    pub fn count(&self, tag: &str) -> usize {
        self.seen.get(tag).copied().unwrap_or(0)
    }
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// How many statements, for tests and the bench.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// A write whose result nobody reads.
    pub fn exec(&mut self, sql: impl Into<String>, args: Vec<Arg>) {
        self.parts.push(Part {
            sql: sql.into(),
            postgres_sql: None,
            args,
            guard: false,
        });
    }

    /// A write spelled differently on PostgreSQL (same values, same numbering).
    pub fn exec_per_backend(
        &mut self,
        sqlite_sql: impl Into<String>,
        postgres_sql: impl Into<String>,
        args: Vec<Arg>,
    ) {
        self.parts.push(Part {
            sql: sqlite_sql.into(),
            postgres_sql: Some(postgres_sql.into()),
            args,
            guard: false,
        });
    }

    /// A statement returning rows of one text column named `g` (see [`Guards`]).
    pub fn guard(&mut self, sql: impl Into<String>, args: Vec<Arg>) {
        self.parts.push(Part {
            sql: sql.into(),
            postgres_sql: None,
            args,
            guard: true,
        });
    }

    /// Appends another batch's statements after this one's.
    pub fn append(&mut self, other: Batch) {
        self.parts.extend(other.parts);
    }

    /// The round trips this batch takes: how many consecutive parts go in each, up to
    /// [`MAX_ARGS`] values per round trip.
    fn chunks(&self) -> Vec<usize> {
        let mut chunks = Vec::new();
        let (mut len, mut args) = (0, 0);
        for part in &self.parts {
            if len > 0 && args + part.args.len() > MAX_ARGS {
                chunks.push(len);
                (len, args) = (0, 0);
            }
            len += 1;
            args += part.args.len();
        }
        if len > 0 {
            chunks.push(len);
        }
        chunks
    }
}

/// PostgreSQL chose this transaction as a deadlock's victim, or could not serialize it, or a
/// lock wait timed out: nothing is wrong with the writes, they met others (several writers, or
/// several servers) and may be decided and tried again.
fn lost_a_lock(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(code.as_ref(), "40P01" | "40001" | "55P03"))
}

/// `sql` with every `$N` moved up by `offset`. Our statements hold `$` only in placeholders:
/// values are always bound, never written into the text.
fn renumber(sql: &str, offset: usize) -> String {
    if offset == 0 {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some(&(_, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            digits.push(d);
            chars.next();
        }
        match digits.parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&digits),
        }
    }
    out
}

/// One query text for `parts` on `backend` (their values are bound in order).
fn render(parts: &[Part], backend: Backend) -> String {
    let mut offset = 0;
    let mut statements = Vec::with_capacity(parts.len());
    for part in parts {
        let sql = match (backend, &part.postgres_sql) {
            (Backend::Postgres, Some(sql)) => sql,
            _ => &part.sql,
        };
        statements.push(renumber(sql, offset));
        offset += part.args.len();
    }
    match backend {
        Backend::Sqlite => statements.join(";\n"),
        Backend::Postgres => {
            let mut sql = String::from("WITH ");
            let mut selects = Vec::new();
            for (i, (statement, part)) in statements.iter().zip(parts).enumerate() {
                if i > 0 {
                    sql.push_str(",\n");
                }
                sql.push_str(&format!("p{i} AS ({statement})"));
                if part.guard {
                    selects.push(format!("SELECT g FROM p{i}"));
                }
            }
            if selects.is_empty() {
                sql.push_str("\nSELECT CAST(NULL AS TEXT) AS g WHERE 1 = 0");
            } else {
                sql.push('\n');
                sql.push_str(&selects.join(" UNION ALL "));
            }
            sql
        }
    }
}

impl Tx {
    /// Runs `batch` in as few round trips as its size allows; returns the guard rows.
    pub async fn run_batch(&mut self, batch: Batch) -> Result<Guards> {
        let mut guards = Guards::default();
        let chunks = batch.chunks();
        let mut parts = batch.parts.into_iter();
        for len in chunks {
            let chunk: Vec<Part> = parts.by_ref().take(len).collect();
            let sql = render(&chunk, self.backend);
            let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
            for arg in chunk.into_iter().flat_map(|p| p.args) {
                query = match arg {
                    Arg::Text(v) => query.bind(v),
                    Arg::Int(v) => query.bind(v),
                    Arg::NullInt => query.bind(None::<i64>),
                    Arg::Bytes(v) => query.bind(v),
                };
            }
            let rows = match query.fetch_all(&mut *self.inner).await {
                Ok(rows) => rows,
                Err(e) if lost_a_lock(&e) => {
                    return Err(crate::error::Error::Aborted(format!(
                        "lost a lock to a concurrent transaction: {e}"
                    )));
                }
                Err(e) => return Err(e.into()),
            };
            for row in rows {
                if let Ok(tag) = row.try_get::<String, _>("g") {
                    *guards.seen.entry(tag).or_default() += 1;
                }
            }
        }
        Ok(guards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_across_the_statements() {
        assert_eq!(
            renumber("UPDATE t SET a = $1 WHERE b = $2", 3),
            "UPDATE t SET a = $4 WHERE b = $5"
        );
        assert_eq!(renumber("x = $10, y = $1", 0), "x = $10, y = $1");
        assert_eq!(renumber("x = $10, y = $1", 5), "x = $15, y = $6");
    }

    #[test]
    fn sqlite_joins_statements_and_postgres_chains_ctes() {
        let mut batch = Batch::new();
        batch.guard(
            "UPDATE i SET rev = rev + 1 WHERE id = $1 AND rev = $2 RETURNING 'rev' AS g",
            vec!["a".into(), 1.into()],
        );
        batch.exec("INSERT INTO e (x) VALUES ($1)", vec!["b".into()]);
        let sqlite = render(&batch.parts, Backend::Sqlite);
        assert_eq!(
            sqlite,
            "UPDATE i SET rev = rev + 1 WHERE id = $1 AND rev = $2 RETURNING 'rev' AS g;\nINSERT INTO e (x) VALUES ($3)"
        );
        let pg = render(&batch.parts, Backend::Postgres);
        assert!(pg.starts_with("WITH p0 AS (UPDATE i"), "{pg}");
        assert!(pg.contains("p1 AS (INSERT INTO e (x) VALUES ($3))"), "{pg}");
        assert!(pg.ends_with("SELECT g FROM p0"), "{pg}");
    }

    #[test]
    fn a_long_batch_takes_several_round_trips_never_splitting_a_statement() {
        let mut batch = Batch::new();
        for _ in 0..4 {
            batch.exec("INSERT", vec![Arg::Int(0); 10_000]);
        }
        assert_eq!(batch.chunks(), vec![3, 1]);
        assert!(Batch::new().chunks().is_empty());
    }
}
