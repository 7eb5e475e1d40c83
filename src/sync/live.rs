//! The live drain: reads captured changes after a map's cursor, reads the current rows for
//! their keys (so a write always carries the row as it is now, never a stale copy), resolves
//! bidirectional conflicts by policy, writes, and only then advances the cursor.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Failure, Flow, Item, Journal, Outcome, Sides, SyncError, prepare, write_isolating};
use crate::endpoint::{Change, ChangeOp, Value, WriteOp, key_string};
use crate::state::{ErrorPhase, ErrorType};

/// The newest change per key of one batch, in changelog order.
pub struct Pending {
    pub changes: Vec<Change>,
    pub last_seq: i64,
}

impl Pending {
    /// Reads up to `limit` changes after `cursor` and keeps the last one per key.
    pub async fn read(sides: &Sides<'_>, cursor: i64, limit: usize) -> Result<Pending, SyncError> {
        let raw = sides
            .from
            .read_changes(sides.from_table, cursor, limit)
            .await
            .map_err(SyncError::Read)?;
        let last_seq = raw.last().map_or(cursor, |c| c.seq);
        let mut latest: HashMap<String, usize> = HashMap::new();
        for (i, c) in raw.iter().enumerate() {
            latest.insert(key_string(&c.key), i);
        }
        let changes = raw
            .into_iter()
            .enumerate()
            .filter(|(i, c)| latest.get(&key_string(&c.key)) == Some(i))
            .map(|(_, c)| c)
            .collect();
        Ok(Pending { changes, last_seq })
    }

    /// When each key last changed.
    pub fn times(&self) -> HashMap<String, DateTime<Utc>> {
        self.changes
            .iter()
            .map(|c| (key_string(&c.key), c.changed_at))
            .collect()
    }
}

/// Writes the rows of `keys` as they are now on the `from` side (a key no longer there is
/// deleted on the target, as are `deletes`), isolating refused records. Never a stale copy:
/// this is how live changes and retried errors are written.
pub async fn write_current(
    sides: &Sides<'_>,
    flow: &Flow,
    keys: Vec<Vec<Value>>,
    deletes: Vec<Vec<Value>>,
    out: &mut Outcome,
) -> Result<(), SyncError> {
    let rows = fetch_current(sides, flow, &keys).await?;
    write_fetched(sides, flow, keys, rows, deletes, out).await
}

/// The rows of `keys` as they are now on the `from` side (missing keys are absent).
pub async fn fetch_current(
    sides: &Sides<'_>,
    flow: &Flow,
    keys: &[Vec<Value>],
) -> Result<Vec<crate::endpoint::Row>, SyncError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    sides
        .from
        .fetch_rows(sides.from_table, &flow.read_columns, &flow.from_key, keys)
        .await
        .map_err(SyncError::Read)
}

/// The second half of [`write_current`]: `rows` were fetched for `keys`; the keys without a
/// row are deleted on the target.
pub async fn write_fetched(
    sides: &Sides<'_>,
    flow: &Flow,
    keys: Vec<Vec<Value>>,
    rows: Vec<crate::endpoint::Row>,
    mut deletes: Vec<Vec<Value>>,
    out: &mut Outcome,
) -> Result<(), SyncError> {
    // A key changed then deleted before we read it: it is gone now, so delete it.
    let found: std::collections::HashSet<String> =
        rows.iter().map(|r| key_string(flow.key_of(r))).collect();
    deletes.extend(keys.into_iter().filter(|k| !found.contains(&key_string(k))));
    let mut items = prepare(flow, sides.to_info, sides.to_table, rows, out);
    items.extend(deletes.into_iter().map(|key| Item {
        op: WriteOp::Delete(key.clone()),
        key,
        source_row: None,
    }));
    write_isolating(sides, flow, items, out).await?;
    Ok(())
}

/// Applies one batch of pending changes of one way. `losers` are keys whose change lost a
/// bidirectional conflict: they are recorded as ConflictError instead of written.
/// Returns the number of records written.
pub async fn apply(
    sides: &Sides<'_>,
    flow: &Flow,
    pending: Pending,
    losers: &HashMap<String, String>,
    phase: ErrorPhase,
    journal: &mut Journal<'_>,
) -> Result<u64, SyncError> {
    let mut out = Outcome::default();
    let mut upsert_keys = Vec::new();
    let mut deletes: Vec<Vec<Value>> = Vec::new();
    let newest = pending.changes.iter().map(|c| c.changed_at).max();
    for c in pending.changes {
        if let Some(reason) = losers.get(&key_string(&c.key)) {
            out.failed.push(Failure {
                key: c.key,
                source_row: None,
                error_type: ErrorType::ConflictError,
                code: None,
                message: reason.clone(),
            });
            continue;
        }
        match c.op {
            ChangeOp::Upsert => upsert_keys.push(c.key),
            ChangeOp::Delete => deletes.push(c.key),
        }
    }
    write_current(sides, flow, upsert_keys, deletes, &mut out).await?;
    journal.settle(flow, phase, &out)?;
    let written = out.written.len() as u64;
    let rt = &mut journal.runtime;
    super::set_cursor(rt, flow.way, pending.last_seq);
    rt.synced += written;
    if let Some(at) = newest {
        let now = Utc::now();
        rt.lag_seconds = Some(((now - at).num_milliseconds().max(0) as f64) / 1000.0);
        rt.last_sync_at = Some(crate::clock::secs(now));
    }
    // The commit point: the cursor moves only now that the writes are committed.
    journal.save()?;
    Ok(written)
}
