//! Keyset pagination shared by every list. The page token is opaque to clients: the last id of the
//! previous page (ids are UUIDv7, so id order is creation order) together with a fingerprint of
//! the filters, hex-encoded. A token that does not decode, or that was issued for other filters,
//! is refused instead of silently returning a wrong page. One extra row tells whether a next page
//! exists.
use sha2::{Digest, Sha256};
use sqlx::{Any, AssertSqlSafe, any::AnyRow};

use super::Store;
use crate::{
    error::{Error, Result},
    model::Page,
};

pub(super) const DEFAULT_PAGE_SIZE: i64 = 50;
pub(super) const MAX_PAGE_SIZE: i64 = 500;

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub page_size: i32,
    pub page_token: String,
}

impl PageRequest {
    pub fn new(page_size: i32, page_token: impl Into<String>) -> Result<Self> {
        if page_size < 0 {
            return Err(Error::invalid("page_size", "must not be negative"));
        }
        Ok(Self {
            page_size,
            page_token: page_token.into(),
        })
    }

    pub(super) fn limit(&self) -> i64 {
        match i64::from(self.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Order {
    OldestFirst,
    NewestFirst,
}

/// Builds `WHERE ... AND id > $n ORDER BY id LIMIT n+1` with numbered text parameters, the one
/// placeholder syntax both backends accept.
#[derive(Debug, Default)]
pub(super) struct Filter {
    clauses: Vec<String>,
    args: Vec<String>,
}

/// One page's SQL tail (after `FROM table`), its parameters, and what the next token needs.
#[derive(Debug)]
pub(super) struct PageQuery {
    pub(super) sql: String,
    pub(super) args: Vec<String>,
    fingerprint: String,
    limit: usize,
}

impl Filter {
    pub(super) fn eq(&mut self, column: &str, value: &str) {
        self.args.push(value.to_string());
        self.clauses
            .push(format!("{column} = ${}", self.args.len()));
    }

    pub(super) fn eq_if(&mut self, column: &str, value: &str) {
        if !value.is_empty() {
            self.eq(column, value);
        }
    }

    /// A condition with one parameter: `clause` gets the parameter's number.
    pub(super) fn with_arg(&mut self, value: &str, clause: impl FnOnce(usize) -> String) {
        self.args.push(value.to_string());
        self.clauses.push(clause(self.args.len()));
    }

    /// A condition without parameters, written by the store itself.
    pub(super) fn raw(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    pub(super) fn page(
        mut self,
        page: &PageRequest,
        id_column: &str,
        order: Order,
    ) -> Result<PageQuery> {
        let fingerprint = self.fingerprint();
        if !page.page_token.is_empty() {
            let last_id = decode_token(&page.page_token, &fingerprint)?;
            self.args.push(last_id);
            let cmp = if order == Order::OldestFirst {
                ">"
            } else {
                "<"
            };
            self.clauses
                .push(format!("{id_column} {cmp} ${}", self.args.len()));
        }
        let where_sql = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        let direction = if order == Order::OldestFirst {
            ""
        } else {
            " DESC"
        };
        let limit = page.limit();
        Ok(PageQuery {
            sql: format!(
                "{where_sql} ORDER BY {id_column}{direction} LIMIT {}",
                limit + 1
            ),
            args: self.args,
            fingerprint,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        })
    }

    pub(super) fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        for part in self.clauses.iter().chain(&self.args) {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex(&hasher.finalize()[..6])
    }
}

/// At most this many bytes, as measured by the function, in one page.
pub(super) type ByteBudget<'a, T> = (usize, &'a dyn Fn(&T) -> usize);

impl PageQuery {
    /// Cuts the extra row off and turns the last id into the next token. With a byte budget,
    /// the page also ends after the item that reaches it (at least one item is always kept).
    pub(super) fn into_page<T>(
        self,
        mut items: Vec<T>,
        id: impl Fn(&T) -> &str,
        budget: Option<ByteBudget<'_, T>>,
    ) -> Page<T> {
        let mut keep = self.limit;
        if let Some((max_bytes, size)) = budget {
            let mut total = 0usize;
            for (i, item) in items.iter().enumerate().take(self.limit) {
                total = total.saturating_add(size(item));
                if total >= max_bytes {
                    keep = keep.min(i + 1);
                    break;
                }
            }
        }
        let next_page_token = if items.len() > keep {
            items.truncate(keep);
            items
                .last()
                .map(|item| hex(format!("{}:{}", self.fingerprint, id(item)).as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Page {
            items,
            next_page_token,
        }
    }
}

impl Store {
    /// One page of `SELECT {select} ...` filtered by `filter`, keyed and ordered by `id`.
    pub(super) async fn fetch_page<T>(
        &self,
        select: &str,
        filter: Filter,
        page: &PageRequest,
        order: Order,
        decode: fn(&AnyRow) -> Result<T>,
        id: impl Fn(&T) -> &str,
    ) -> Result<Page<T>> {
        self.fetch_page_within(
            select,
            filter,
            page,
            order,
            decode,
            id,
            (usize::MAX, |_: &T| 0),
        )
        .await
    }

    /// [`Store::fetch_page`] whose page also ends once `size` of its items reaches `budget.0`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch_page_within<T>(
        &self,
        select: &str,
        filter: Filter,
        page: &PageRequest,
        order: Order,
        decode: fn(&AnyRow) -> Result<T>,
        id: impl Fn(&T) -> &str,
        budget: (usize, impl Fn(&T) -> usize),
    ) -> Result<Page<T>> {
        let query_page = filter.page(page, "id", order)?;
        let sql = format!("{select}{}", query_page.sql);
        let mut query = sqlx::query::<Any>(AssertSqlSafe(sql));
        for arg in &query_page.args {
            query = query.bind(arg);
        }
        let items = query
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>>>()?;
        Ok(query_page.into_page(items, id, Some((budget.0, &budget.1))))
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_token(token: &str, fingerprint: &str) -> Result<String> {
    let bad = || {
        Error::invalid(
            "page_token",
            "not a token this server issued for these filters",
        )
    };
    if token.len() > 400 || !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.split_once(':') {
        Some((fp, last_id)) if fp == fingerprint && !last_id.is_empty() => Ok(last_id.to_string()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(assignee: &str, token: &str) -> Result<PageQuery> {
        let mut filter = Filter::default();
        filter.eq_if("assignee", assignee);
        filter.page(&PageRequest::new(2, token)?, "id", Order::OldestFirst)
    }

    #[test]
    fn a_token_round_trips_and_adds_a_keyset_clause() {
        let first = query("mary", "").unwrap();
        let page = first.into_page(vec!["a", "b", "c"], |s| s, None);
        assert_eq!(page.items, ["a", "b"]);
        let next = query("mary", &page.next_page_token).unwrap();
        assert!(next.sql.contains("id > $2"), "{}", next.sql);
        assert_eq!(next.args, ["mary", "b"]);
    }

    #[test]
    fn a_token_for_other_filters_or_garbage_is_refused() {
        let page = query("mary", "")
            .unwrap()
            .into_page(vec!["a", "b", "c"], |s| s, None);
        for token in [page.next_page_token.as_str(), "zz", "abc", "6869"] {
            let assignee = if token == page.next_page_token {
                "fred"
            } else {
                "mary"
            };
            let err = query(assignee, token).unwrap_err();
            assert!(err.to_string().starts_with("page_token"), "{err}");
        }
    }

    #[test]
    fn the_last_page_has_no_token() {
        let page = query("", "").unwrap().into_page(vec!["a"], |s| s, None);
        assert!(page.next_page_token.is_empty());
    }
}
