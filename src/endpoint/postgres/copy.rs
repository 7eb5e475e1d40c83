//! Copying a table from one PostgreSQL database into another as binary `COPY` data, rows
//! never becoming typed values: the initial sync's same-engine fast path
//! ([`CopyOrigin::PostgresBinary`]). Owns which copies qualify ([`can_copy`]), the source's
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` of a page with value maps, renames and
//! constants written in SQL ([`Postgres::export`]), and the target's load of the page as it
//! came ([`Postgres::import`]): straight into the table while its keys are new there, else
//! into the staging table and one `INSERT … SELECT … ON CONFLICT`.
//!
//! A value is taken only where its binary form means the same on both sides and nothing can
//! change it on the way: a source column of exactly the target column's type (or a narrower
//! integer, widened by a cast); constants and value-map targets that the target column holds
//! exactly ([`Dialect::inexact`] says nothing) written as literals of the column's base type
//! (text for text types), so a type modifier never truncates or rounds them silently: the
//! target's own input checks them as it checks any typed write. A value-map `CASE` compares
//! integers, or text byte for byte (`COLLATE "C"`); a value without an entry reaches
//! `pg_temp.dualwrite_unmapped` (created per session), which fails the page, so the caller
//! writes it through typed values, where that record alone becomes a TransformError.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Transaction;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::{
    COPY_CHUNK, Conn, ConnError, Decoder, Postgres, base_type, bind_all, each_copy_row, failed,
    is_native, literal, native_type, params, prepare, read_fields, refs, take, take_i32,
};
use crate::capture;
use crate::endpoint::sql::{DIRECT_RETRY_AFTER, Dialect, Load, Stmt, on_conflict_clause};
use crate::endpoint::{
    ColumnInfo, CopyOrigin, CopyValue, EndpointError, ExportedPage, TableCopy, Value, ValueKind,
    WriteError,
};

/// The session-local SQL function a value map's `CASE` ends in: NULL for NULL (`STRICT`),
/// an error for any other value.
const UNMAPPED: &str = "pg_temp.dualwrite_unmapped";

const CREATE_UNMAPPED: &str = "CREATE OR REPLACE FUNCTION pg_temp.dualwrite_unmapped(value text) \
     RETURNS text LANGUAGE plpgsql STRICT AS \
     $$BEGIN RAISE EXCEPTION 'dualwrite: a value has no entry in the valueMap' \
     USING ERRCODE = '22023'; END$$";

/// Whether `copy` can run as binary pages from its PostgreSQL source into `pg`: every
/// target column of a native type, the source key (decoded from each page's last row)
/// native and first, every value exact ([`value_expr`]).
pub(super) fn can_copy(pg: &Postgres, copy: &TableCopy) -> bool {
    if copy.origin != CopyOrigin::PostgresBinary
        || copy.to_key.is_empty()
        || copy.to_columns.len() != copy.values.len()
    {
        return false;
    }
    let keys_first = copy
        .from_key
        .iter()
        .enumerate()
        .all(|(i, k)| copy.values.get(i) == Some(&CopyValue::Column(k.clone())));
    let keys_native = copy.from_key.iter().all(|k| {
        copy.from_info
            .column(k)
            .is_some_and(|c| is_native(&c.db_type))
    });
    keys_first && keys_native && select_list(pg, copy).is_some()
}

/// The `SELECT` list of a page: one expression per target column.
fn select_list(pg: &Postgres, copy: &TableCopy) -> Option<Vec<String>> {
    copy.to_columns
        .iter()
        .zip(&copy.values)
        .map(|(to, value)| {
            let to = copy.to_info.column(to).filter(|c| is_native(&c.db_type))?;
            value_expr(pg, copy, to, value)
        })
        .collect()
}

/// The expression that gives target column `to` its `value` in the binary form its type
/// reads, or `None` when that could change a value.
fn value_expr(
    pg: &Postgres,
    copy: &TableCopy,
    to: &ColumnInfo,
    value: &CopyValue,
) -> Option<String> {
    match value {
        CopyValue::Column(name) => {
            let from = copy.from_info.column(name)?;
            let quoted = pg.quote_ident(name);
            if from.db_type == to.db_type {
                Some(quoted)
            } else if widens(&from.db_type, &to.db_type) {
                Some(format!("{quoted}::{}", to.db_type))
            } else {
                None
            }
        }
        CopyValue::Constant(value) => exact_literal(pg, to, value),
        CopyValue::Mapped { column, arms } => {
            let from = copy.from_info.column(column)?;
            let quoted = pg.quote_ident(column);
            let operand = match native_type(&from.db_type)? {
                Type::INT2 | Type::INT4 | Type::INT8 => quoted.clone(),
                Type::TEXT | Type::VARCHAR => format!("({quoted} COLLATE \"C\")"),
                _ => return None,
            };
            let from_base = ColumnInfo {
                db_type: cast_type(from),
                ..from.clone()
            };
            let mut case = format!("CASE {operand}");
            for (when, then) in arms {
                if matches!(when, Value::Text(s) if s.contains('\0')) || !when.is_of(from.kind) {
                    return None;
                }
                case += &format!(
                    " WHEN {} THEN {}",
                    literal(&from_base, when),
                    exact_literal(pg, to, then)?
                );
            }
            case += &format!(" ELSE {UNMAPPED}({quoted}::text)::{} END", cast_type(to));
            Some(case)
        }
    }
}

/// Whether a column of `from` is copied into one of `to` by a cast that never changes a
/// value: a wider integer.
fn widens(from: &str, to: &str) -> bool {
    matches!(
        (native_type(from), native_type(to)),
        (Some(Type::INT2), Some(Type::INT4 | Type::INT8)) | (Some(Type::INT4), Some(Type::INT8))
    )
}

/// The type a literal for `column` is cast to: its base type without modifiers (text for
/// the text types: `character` alone would mean one character), so a modifier is applied by
/// the target's input, which refuses what it cannot hold, never by a cast that truncates.
fn cast_type(column: &ColumnInfo) -> String {
    if column.kind == ValueKind::Text {
        "text".to_string()
    } else {
        base_type(&column.db_type).into_owned()
    }
}

/// `value` as a literal for target column `to`, when the column holds it exactly.
fn exact_literal(pg: &Postgres, to: &ColumnInfo, value: &Value) -> Option<String> {
    if !value.is_of(to.kind) || pg.inexact(to, value).is_some() {
        return None;
    }
    let base = ColumnInfo {
        db_type: cast_type(to),
        ..to.clone()
    };
    Some(literal(&base, value))
}

impl Postgres {
    /// One page of `copy` read from this (the source) database: see [`Endpoint::export_page`].
    ///
    /// [`Endpoint::export_page`]: crate::endpoint::Endpoint::export_page
    pub(super) async fn export(
        &self,
        copy: &TableCopy,
        after: Option<&[Value]>,
        limit: usize,
    ) -> Result<ExportedPage, WriteError> {
        let unsupported = || -> WriteError {
            EndpointError::Unsupported {
                engine: "postgres",
                what: "this table copy as binary pages".into(),
            }
            .into()
        };
        let select = select_list(self, copy).ok_or_else(unsupported)?;
        let keys: Vec<&ColumnInfo> = copy
            .from_key
            .iter()
            .map(|k| copy.from_info.column(k))
            .collect::<Option<_>>()
            .ok_or_else(unsupported)?;
        let quoted: Vec<String> = keys.iter().map(|k| self.quote_ident(&k.name)).collect();
        let mut sql = format!(
            "COPY (SELECT {} FROM {}",
            select.join(", "),
            self.quote_table(&copy.from_table)
        );
        if let Some(after) = after {
            let bounds: Vec<String> = keys.iter().zip(after).map(|(k, v)| literal(k, v)).collect();
            sql += &format!(" WHERE ({}) > ({})", quoted.join(", "), bounds.join(", "));
        }
        sql += &format!(
            " ORDER BY {} LIMIT {}) TO STDOUT (FORMAT binary)",
            quoted.join(", "),
            limit.max(1)
        );
        let key_reads: Vec<(Decoder, ValueKind)> = keys
            .iter()
            .map(|k| {
                let ty = native_type(&k.db_type).unwrap_or(Type::TEXT);
                (Decoder::of(&ty), k.kind)
            })
            .collect();
        let mapped = copy
            .values
            .iter()
            .any(|v| matches!(v, CopyValue::Mapped { .. }));
        let mut guard = self.lock().await?;
        let Some(conn) = guard.as_mut() else {
            unreachable!("lock() connects")
        };
        let result = conn.export(&sql, mapped, &key_reads).await;
        result.map_err(|e| failed(&mut guard, e, &self.secrets))
    }

    /// Loads a page another PostgreSQL database exported into `copy`'s target: see
    /// [`Endpoint::import_page`].
    ///
    /// [`Endpoint::import_page`]: crate::endpoint::Endpoint::import_page
    pub(super) async fn import(
        &self,
        copy: &TableCopy,
        page: &ExportedPage,
        fence: &[Stmt],
    ) -> Result<u64, WriteError> {
        let columns: Vec<ColumnInfo> = copy
            .to_columns
            .iter()
            .filter_map(|c| copy.to_info.column(c).cloned())
            .collect();
        let target = self.quote_table(&copy.to_table);
        let names: Vec<String> = copy
            .to_columns
            .iter()
            .map(|c| self.quote_ident(c))
            .collect();
        let keys: Vec<String> = copy.to_key.iter().map(|c| self.quote_ident(c)).collect();
        let others: Vec<String> = names
            .iter()
            .filter(|c| !keys.contains(c))
            .cloned()
            .collect();
        let clause = if copy.only_missing {
            on_conflict_clause(&keys, &[])
        } else {
            on_conflict_clause(&keys, &others)
        };
        let load = Load {
            row_sql: String::new(),
            target: target.clone(),
            staging: self.staging_table(&target, &columns),
            columns,
            rows: Vec::new(),
            fallback: None,
        };
        let upsert = format!(
            "INSERT INTO {target} ({names}) SELECT {names} FROM {} {clause}",
            load.staging,
            names = names.join(", "),
        );
        let mut guard = self.lock().await?;
        let Some(conn) = guard.as_mut() else {
            unreachable!("lock() connects")
        };
        let result = conn.import(&load, &upsert, page, fence).await;
        result.map_err(|e| failed(&mut guard, e, &self.secrets))
    }
}

impl Conn {
    /// Runs `copy` (a binary `COPY (…) TO STDOUT`) and keeps its data as it came, counting
    /// the rows and decoding the key (`keys`, the first fields) of the last.
    async fn export(
        &mut self,
        copy: &str,
        mapped: bool,
        keys: &[(Decoder, ValueKind)],
    ) -> Result<ExportedPage, ConnError> {
        if mapped && !self.unmapped_ready {
            self.client.batch_execute(CREATE_UNMAPPED).await?;
            self.unmapped_ready = true;
        }
        let stream = self.client.copy_out(copy).await?;
        let mut stream = std::pin::pin!(stream);
        let (mut data, mut buf) = (Vec::new(), BytesMut::with_capacity(COPY_CHUNK + 4096));
        let (mut rows, mut last, mut header) = (0u64, None::<Bytes>, true);
        while let Some(message) = stream.next().await {
            let message = message?;
            each_copy_row(&message, &mut header, |rest| {
                let start = message.len() - rest.len();
                let more = skip_copy_row(rest)?;
                if more {
                    rows += 1;
                    last = Some(message.slice(start..message.len() - rest.len()));
                }
                Ok(more)
            })
            .map_err(ConnError::Bind)?;
            buf.extend_from_slice(&message);
            if buf.len() >= COPY_CHUNK {
                data.push(buf.split().freeze());
            }
        }
        if !buf.is_empty() {
            data.push(buf.freeze());
        }
        let last_key = last
            .map(|row| read_key(&row, keys))
            .transpose()
            .map_err(ConnError::Bind)?;
        Ok(ExportedPage {
            rows,
            last_key,
            data,
        })
    }

    /// Loads `page` into `load`'s target in one transaction after `fence`: straight in while
    /// its keys are new there (a unique violation rolls back to a savepoint), else into the
    /// staging table and `upsert` from it.
    async fn import(
        &mut self,
        load: &Load<'_>,
        upsert: &str,
        page: &ExportedPage,
        fence: &[Stmt],
    ) -> Result<u64, ConnError> {
        self.stage(load).await?;
        let tx = self.client.transaction().await?;
        for stmt in fence {
            let prepared = prepare(&mut self.statements, &tx, &stmt.sql).await?;
            let bound = bind_all(&prepared, &stmt.params).map_err(ConnError::Bind)?;
            tx.execute(&prepared, &refs(&params(&bound))).await?;
        }
        tx.batch_execute(capture::postgres::SET_ORIGIN).await?;
        let staged = self.staged.get_mut(&load.staging).expect("staged above");
        match staged.copy_direct.as_deref() {
            Some(direct) if staged.skip_direct == 0 => {
                tx.batch_execute("SAVEPOINT dualwrite_direct").await?;
                match send(&tx, direct, page).await {
                    Ok(n) => {
                        tx.commit().await?;
                        return Ok(n);
                    }
                    Err(ConnError::Pg(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        tx.batch_execute("ROLLBACK TO SAVEPOINT dualwrite_direct")
                            .await?;
                        staged.skip_direct = DIRECT_RETRY_AFTER;
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => staged.skip_direct = staged.skip_direct.saturating_sub(1),
        }
        send(&tx, &staged.copy_staged, page).await?;
        let written = tx.execute(upsert, &[]).await?;
        tx.commit().await?;
        Ok(written)
    }
}

/// Sends `page` to `copy` (a binary `COPY … FROM STDIN`); returns the rows it took.
async fn send(tx: &Transaction<'_>, copy: &str, page: &ExportedPage) -> Result<u64, ConnError> {
    let sink = tx.copy_in(copy).await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in &page.data {
        sink.feed(chunk.clone()).await?;
    }
    Ok(sink.finish().await?)
}

/// Steps over one row of binary `COPY` data; `false` at the trailer.
fn skip_copy_row(data: &mut &[u8]) -> Result<bool, WriteError> {
    let count = take(data, 2)?;
    let count = i16::from_be_bytes([count[0], count[1]]);
    if count == -1 {
        return Ok(false);
    }
    for _ in 0..count {
        if let Ok(len) = usize::try_from(take_i32(data)?) {
            take(data, len)?;
        }
    }
    Ok(true)
}

/// The key of one row of binary `COPY` data: its first fields, read by `keys`.
fn read_key(mut row: &[u8], keys: &[(Decoder, ValueKind)]) -> Result<Vec<Value>, WriteError> {
    take(&mut row, 2)?; // the field count
    read_fields(&mut row, keys.iter().map(|(decoder, kind)| (decoder, kind)))
}
