//! Keyset pagination shared by every list: the page token is the last id of the previous page
//! (ids are UUIDv7, so id order is creation order), and one extra row tells whether a next page
//! exists.
use crate::{error::Error, model::Page};

pub(super) const DEFAULT_PAGE_SIZE: i64 = 50;
pub(super) const MAX_PAGE_SIZE: i64 = 500;

#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub page_size: i32,
    pub page_token: String,
}

impl PageRequest {
    pub fn new(page_size: i32, page_token: impl Into<String>) -> Result<Self, Error> {
        if page_size < 0 {
            return Err(Error::invalid("page_size", "must not be negative"));
        }
        let page_token = page_token.into();
        if page_token.len() > 200 || page_token.chars().any(char::is_control) {
            return Err(Error::invalid(
                "page_token",
                "not a token this server issued",
            ));
        }
        Ok(Self {
            page_size,
            page_token,
        })
    }

    pub(super) fn limit(&self) -> i64 {
        match i64::from(self.page_size) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// Builds `WHERE ... AND id > $n ORDER BY id LIMIT n+1` with numbered text parameters, the one
/// placeholder syntax both backends accept.
#[derive(Debug, Default)]
pub(super) struct Filter {
    pub(super) clauses: Vec<String>,
    pub(super) args: Vec<String>,
}

impl Filter {
    pub(super) fn eq(&mut self, column: &str, value: &str) {
        self.args.push(value.to_string());
        self.clauses
            .push(format!("{column} = ${}", self.args.len()));
    }

    /// A condition without parameters, written by the store itself.
    pub(super) fn raw(&mut self, clause: &str) {
        self.clauses.push(clause.to_string());
    }

    pub(super) fn eq_if(&mut self, column: &str, value: &str) {
        if !value.is_empty() {
            self.eq(column, value);
        }
    }

    /// The SQL after `FROM table`, for one page.
    pub(super) fn page_sql(mut self, page: &PageRequest, id_column: &str) -> (String, Vec<String>) {
        if !page.page_token.is_empty() {
            self.args.push(page.page_token.clone());
            self.clauses
                .push(format!("{id_column} > ${}", self.args.len()));
        }
        let where_sql = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        let sql = format!(
            "{where_sql} ORDER BY {id_column} LIMIT {}",
            page.limit() + 1
        );
        (sql, self.args)
    }
}

/// Cuts the extra row off and turns the last id into the next token.
pub(super) fn into_page<T>(
    mut items: Vec<T>,
    page: &PageRequest,
    id: impl Fn(&T) -> &str,
) -> Page<T> {
    let limit = usize::try_from(page.limit()).unwrap_or(usize::MAX);
    let next_page_token = if items.len() > limit {
        items.truncate(limit);
        items
            .last()
            .map(|item| id(item).to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Page {
        items,
        next_page_token,
    }
}
