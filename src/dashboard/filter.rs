//! The error view's query string (`/errors?map=&type=&direction=&phase=&from=&to=&state=&before=`)
//! and `/api/v1/errors`'s: the filters of `errors list`, checked as the CLI checks them
//! (`crate::errors::FilterText`), turned into a store query, and back into links.
//!
//! Paging is by key, not by offset: `before=ID` shows the records older than `ID`, newest
//! first, so a page costs the same on the millionth record as on the first.

use serde::{Deserialize, Serialize};

use crate::config::ErrorFilter;
use crate::errors::FilterText;
use crate::state::{ErrorQuery, ErrorState};

use super::DashboardError;

/// Records per page unless `limit` says otherwise.
pub(crate) const PAGE: usize = 50;
/// The most `limit` may ask for.
const MAX_PAGE: usize = 500;

/// The query string, as sent (empty fields are absent: an HTML form sends `map=` for "any").
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub(crate) struct ErrorParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Open (the default), Superseded, Retried, or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Records with an id below this one (the next page, newest first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

/// What a checked [`ErrorParams`] selects.
#[derive(Clone, Debug)]
pub(crate) struct Selection {
    /// The filter as an ErrorRequest would carry it (no map, no state: those are apart).
    pub filter: ErrorFilter,
    /// The store query for this page.
    pub query: ErrorQuery,
    pub limit: usize,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl ErrorParams {
    /// The map asked for, if any.
    pub fn map(&self) -> Option<&str> {
        given(&self.map)
    }

    /// The state asked for (`Open` by default; `all` is any).
    pub fn state(&self) -> &str {
        given(&self.state).unwrap_or("Open")
    }

    /// Checks the parameters; a bad one is a 400 naming it.
    pub fn selection(&self) -> Result<Selection, DashboardError> {
        let text = FilterText {
            from: given(&self.from).map(str::to_string),
            to: given(&self.to).map(str::to_string),
            direction: given(&self.direction).map(str::to_string),
            error_type: given(&self.error_type).map(str::to_string),
            phase: given(&self.phase).map(str::to_string),
            ids: Vec::new(),
        };
        let filter = text
            .filter(chrono::Utc::now(), "")
            .map_err(|e| DashboardError::BadRequest(e.to_string()))?;
        let mut query = crate::errors::query_of(self.map(), &filter);
        query.state = match self.state() {
            "all" => None,
            state => Some(ErrorState::parse(state).ok_or_else(|| {
                DashboardError::BadRequest(format!(
                    "state {state:?}: one of Open, Superseded, Retried, all"
                ))
            })?),
        };
        query.below_id = given(&self.before)
            .map(|b| {
                b.parse::<i64>()
                    .map_err(|_| DashboardError::BadRequest(format!("before {b:?}: an id")))
            })
            .transpose()?;
        let limit = given(&self.limit)
            .map(|l| {
                l.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        DashboardError::BadRequest(format!("limit {l:?}: 1 to {MAX_PAGE}"))
                    })
            })
            .transpose()?
            .unwrap_or(PAGE);
        Ok(Selection {
            filter,
            query,
            limit,
        })
    }

    /// These parameters with paging set to start below `before` (`None`: the newest page),
    /// as a query string (`?…`, or empty).
    pub fn link(&self, before: Option<i64>) -> String {
        let mut params = self.without_empty();
        params.before = before.map(|b| b.to_string());
        let query = serde_urlencoded::to_string(&params).expect("strings encode");
        if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        }
    }

    /// The filter's fields that are set (no paging), as name and value: the hidden fields
    /// of a form that acts on the same selection.
    pub fn fields(&self) -> Vec<(String, String)> {
        let params = ErrorParams {
            before: None,
            limit: None,
            ..self.without_empty()
        };
        let query = serde_urlencoded::to_string(&params).expect("strings encode");
        serde_urlencoded::from_str(&query).expect("it was just encoded")
    }

    /// The same filter, empty fields dropped.
    pub fn without_empty(&self) -> ErrorParams {
        let keep = |v: &Option<String>| given(v).map(str::to_string);
        ErrorParams {
            map: keep(&self.map),
            error_type: keep(&self.error_type),
            direction: keep(&self.direction),
            phase: keep(&self.phase),
            from: keep(&self.from),
            to: keep(&self.to),
            state: keep(&self.state),
            before: keep(&self.before),
            limit: keep(&self.limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_form_fields_select_everything_open() {
        let params = ErrorParams {
            map: Some(String::new()),
            error_type: Some(String::new()),
            ..Default::default()
        };
        let s = params.selection().unwrap();
        assert_eq!(s.query.map, None);
        assert_eq!(s.query.state, Some(ErrorState::Open));
        assert_eq!(s.limit, PAGE);
        assert_eq!(params.link(None), "");
    }

    #[test]
    fn links_keep_the_filter_and_page_by_id() {
        let params = ErrorParams {
            map: Some("a&b".into()),
            before: Some("9".into()),
            ..Default::default()
        };
        assert_eq!(params.link(Some(5)), "?map=a%26b&before=5");
        assert_eq!(params.selection().unwrap().query.below_id, Some(9));
    }

    #[test]
    fn a_bad_parameter_is_named() {
        let params = ErrorParams {
            from: Some("yesterday".into()),
            ..Default::default()
        };
        let err = params.selection().unwrap_err().to_string();
        assert!(err.contains("from \"yesterday\""), "{err}");
    }
}
