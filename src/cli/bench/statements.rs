//! The SQL statement counter. sqlx emits one tracing event with target `sqlx::query` for every
//! statement it runs through its executor (at `debug`, or `warn` when slow), from whichever
//! thread ran it (SQLite's worker threads included); this layer counts those events while
//! [`Counting`] is held, and nothing else. Its own filter asks only while counting, so the load
//! itself runs as it would without it.
//!
//! What sqlx does not log is not counted: on SQLite, BEGIN and COMMIT go to the connection's
//! worker as commands without an event; on PostgreSQL BEGIN has none and COMMIT one. COMMIT,
//! ROLLBACK and savepoints are therefore left out on both, so the two backends count alike. So are
//! the PRAGMAs of a new SQLite connection: the pool opens one now and then (a connection given
//! back is returned to it by a task of its own, and may not be back yet at the next acquire), and
//! that is not the RPC's work.
use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    subscriber::Interest,
};
use tracing_subscriber::{
    Layer,
    filter::{DynFilterFn, LevelFilter},
    layer::Context,
};

const TARGET: &str = "sqlx::query";
/// How much of a statement a listing shows.
const LISTED_CHARS: usize = 110;

static INSTALLED: AtomicBool = AtomicBool::new(false);
static COUNTING: AtomicBool = AtomicBool::new(false);
static STATEMENTS: AtomicU64 = AtomicU64::new(0);
/// The statements seen while a listing is wanted, each with the count it brought the counter to.
static LISTING: Mutex<Option<Vec<(u64, String)>>> = Mutex::new(None);

/// The counting layer, for the process's subscriber; call [`installed`] once that is in place.
pub(super) fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    // Dynamic: a plain FilterFn would decide each callsite once, when counting is still off.
    let filter =
        DynFilterFn::new(|meta, _| meta.target() == TARGET && COUNTING.load(Ordering::Relaxed))
            .with_callsite_filter(|meta| {
                if meta.target() == TARGET {
                    Interest::sometimes()
                } else {
                    Interest::never()
                }
            })
            .with_max_level_hint(LevelFilter::DEBUG);
    StatementLayer.with_filter(filter)
}

/// The subscriber with [`layer`] is the process's: counts can be trusted.
pub(super) fn installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

pub(super) fn available() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Statements counted so far.
pub(super) fn count() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Counting is on while this lives.
#[derive(Debug)]
pub(super) struct Counting(());

impl Counting {
    pub(super) fn start() -> Self {
        COUNTING.store(true, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        COUNTING.store(false, Ordering::Relaxed);
    }
}

/// Keeps the statements counted from now on, numbered like [`count`], until [`take_listing`].
pub(super) fn start_listing() {
    if let Ok(mut listing) = LISTING.lock() {
        *listing = Some(Vec::new());
    }
}

pub(super) fn take_listing() -> Vec<(u64, String)> {
    LISTING
        .lock()
        .ok()
        .and_then(|mut listing| listing.take())
        .unwrap_or_default()
}

struct StatementLayer;

impl<S: Subscriber> Layer<S> for StatementLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = StatementFields::default();
        event.record(&mut fields);
        if is_transaction_control(&fields.summary) || is_connection_setup(&fields.summary) {
            return;
        }
        let n = STATEMENTS.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut guard) = LISTING.lock()
            && let Some(listing) = guard.as_mut()
        {
            listing.push((n, fields.shown()));
        }
    }
}

/// sqlx's `summary` (the first four words) and `db.statement` (the whole text, when longer).
#[derive(Debug, Default)]
struct StatementFields {
    summary: String,
    statement: String,
}

impl StatementFields {
    fn shown(&self) -> String {
        let text = if self.statement.trim().is_empty() {
            &self.summary
        } else {
            &self.statement
        };
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        match words.char_indices().nth(LISTED_CHARS) {
            Some((end, _)) => format!("{} …", &words[..end]),
            None => words,
        }
    }
}

impl Visit for StatementFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_string(),
            "db.statement" => self.statement = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

fn is_transaction_control(summary: &str) -> bool {
    let first = summary.split_whitespace().next().unwrap_or_default();
    ["BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END"]
        .iter()
        .any(|word| first.eq_ignore_ascii_case(word))
}

fn is_connection_setup(summary: &str) -> bool {
    let first = summary.split_whitespace().next().unwrap_or_default();
    first.eq_ignore_ascii_case("PRAGMA")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_told_from_statements() {
        assert!(is_transaction_control("COMMIT"));
        assert!(is_transaction_control("rollback to savepoint sp1"));
        assert!(is_transaction_control("SAVEPOINT sp1"));
        assert!(!is_transaction_control("SELECT id, status FROM …"));
        assert!(!is_transaction_control("UPDATE tasks SET rev …"));
        assert!(is_connection_setup("PRAGMA foreign_keys = ON; …"));
        assert!(!is_connection_setup("SELECT 1"));
    }

    #[test]
    fn a_listing_shows_the_statement_on_one_line_and_cut_short() {
        let fields = StatementFields {
            summary: "SELECT a, b …".into(),
            statement: format!(
                "\n\nSELECT a,\n   b FROM t WHERE {}\n",
                "x = 1 AND ".repeat(20)
            ),
        };
        let shown = fields.shown();
        assert!(
            shown.starts_with("SELECT a, b FROM t WHERE x = 1"),
            "{shown}"
        );
        assert!(shown.ends_with(" …"), "{shown}");
        assert!(!shown.contains('\n'), "{shown}");
        let short = StatementFields {
            summary: "DELETE FROM t".into(),
            statement: String::new(),
        };
        assert_eq!(short.shown(), "DELETE FROM t");
    }
}
