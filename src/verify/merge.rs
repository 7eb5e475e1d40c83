//! The streaming half of a verify: both tables paged in key order (the next page of each
//! side read while the current one is compared) and merge-joined on the target-kind key.
//! Every row that has no partner, or whose partner differs, becomes a candidate for the
//! re-check; nothing here decides what is reported.

use std::cmp::Ordering;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::endpoint::{Endpoint, EndpointError, Row, TableName, Value, key_string};

use super::recheck::Checker;
use super::{Compare, Expected, PAGE, VerifyError};

/// The order keys are compared in: value by value, texts and bytes by their bytes, numbers
/// and times by value. Both keys are of the target's key kinds.
pub(crate) fn compare_keys(a: &[Value], b: &[Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(a, b)| compare_values(a, b))
        .find(|o| o.is_ne())
        .unwrap_or(a.len().cmp(&b.len()))
}

fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(a), Value::Int(b)) => a.cmp(b),
        (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Date(a), Value::Date(b)) => a.cmp(b),
        (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
        (Value::TimestampTz(a), Value::TimestampTz(b)) => a.cmp(b),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        // Decimals, floats and anything else: by canonical text. A key order that differs
        // from the databases' only yields candidates that the re-check clears.
        (a, b) => key_string(std::slice::from_ref(a)).cmp(&key_string(std::slice::from_ref(b))),
    }
}

/// One table read page by page in key order, the next page always on its way.
struct Pager {
    ep: Arc<dyn Endpoint>,
    table: TableName,
    columns: Arc<[String]>,
    key_columns: Arc<[String]>,
    page: std::vec::IntoIter<Row>,
    next: Option<JoinHandle<Result<Vec<Row>, EndpointError>>>,
    rows: u64,
}

impl Pager {
    fn start(
        ep: &Arc<dyn Endpoint>,
        table: &TableName,
        columns: &[String],
        key: &[String],
    ) -> Pager {
        let mut pager = Pager {
            ep: Arc::clone(ep),
            table: table.clone(),
            columns: columns.into(),
            key_columns: key.into(),
            page: Vec::new().into_iter(),
            next: None,
            rows: 0,
        };
        pager.next = Some(pager.fetch(None));
        pager
    }

    fn fetch(&self, after: Option<Vec<Value>>) -> JoinHandle<Result<Vec<Row>, EndpointError>> {
        let (ep, table) = (Arc::clone(&self.ep), self.table.clone());
        let (columns, key) = (Arc::clone(&self.columns), Arc::clone(&self.key_columns));
        tokio::spawn(async move {
            ep.read_snapshot(&table, &columns, &key, after.as_deref(), PAGE)
                .await
        })
    }

    /// The next row in key order; `None` after the last.
    async fn next(&mut self) -> Result<Option<Row>, EndpointError> {
        loop {
            if let Some(row) = self.page.next() {
                self.rows += 1;
                return Ok(Some(row));
            }
            let Some(pending) = self.next.take() else {
                return Ok(None);
            };
            let rows = match pending.await {
                Ok(rows) => rows?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            if rows.len() == PAGE {
                let last = rows.last().expect("a full page");
                self.next = Some(self.fetch(Some(last[..self.key_columns.len()].to_vec())));
            }
            self.page = rows.into_iter();
        }
    }
}

impl Drop for Pager {
    fn drop(&mut self) {
        if let Some(pending) = self.next.take() {
            pending.abort();
        }
    }
}

async fn next_expected(
    c: &Compare<'_>,
    from: &mut Pager,
) -> Result<Option<(Row, Expected)>, VerifyError> {
    let Some(row) = from.next().await.map_err(|e| c.from.failure(e))? else {
        return Ok(None);
    };
    let source_key = c.flow.key_of(&row).to_vec();
    Ok(Some((source_key, c.expected(row))))
}

/// Streams both tables of `c` and hands every candidate difference to `checker`; records
/// how many rows each side had.
pub(crate) async fn run(c: &Compare<'_>, checker: &mut Checker<'_, '_>) -> Result<(), VerifyError> {
    let key_len = c.flow.to_key.len();
    let mut from = Pager::start(
        &c.from.ep,
        &c.from.table,
        &c.flow.read_columns,
        &c.flow.from_key,
    );
    let mut to = Pager::start(&c.to.ep, &c.to.table, &c.flow.write_columns, &c.flow.to_key);
    let mut a = next_expected(c, &mut from).await?;
    let mut b = to.next().await.map_err(|e| c.to.failure(e))?;
    loop {
        match (&a, &b) {
            (None, None) => break,
            (Some((source_key, (Err(reason), _))), _) => {
                checker.unkeyed(source_key, reason);
                a = next_expected(c, &mut from).await?;
            }
            (Some((_, (Ok(key), expected))), found) => {
                let order = match found {
                    Some(found) => compare_keys(key, &found[..key_len]),
                    None => Ordering::Less,
                };
                match order {
                    Ordering::Less => checker.candidate(key.clone()).await?,
                    Ordering::Greater => {
                        let found = b.as_ref().expect("Greater only with a row");
                        checker.candidate(found[..key_len].to_vec()).await?;
                        b = to.next().await.map_err(|e| c.to.failure(e))?;
                        continue;
                    }
                    Ordering::Equal => {
                        let same = matches!((expected, found), (Ok(e), Some(f)) if e == f);
                        if !same {
                            checker.candidate(key.clone()).await?;
                        }
                        b = to.next().await.map_err(|e| c.to.failure(e))?;
                    }
                }
                a = next_expected(c, &mut from).await?;
            }
            (None, Some(found)) => {
                checker.candidate(found[..key_len].to_vec()).await?;
                b = to.next().await.map_err(|e| c.to.failure(e))?;
            }
        }
    }
    checker.rows(from.rows, to.rows);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_value_by_value_texts_by_bytes() {
        let k = |i: i64, t: &str| vec![Value::Int(i), Value::Text(t.into())];
        assert_eq!(compare_keys(&k(1, "b"), &k(2, "a")), Ordering::Less);
        assert_eq!(compare_keys(&k(2, "B"), &k(2, "a")), Ordering::Less);
        assert_eq!(compare_keys(&k(2, "a"), &k(2, "a")), Ordering::Equal);
        assert_eq!(
            compare_keys(&[Value::Int(-5)], &[Value::Int(3)]),
            Ordering::Less
        );
    }
}
