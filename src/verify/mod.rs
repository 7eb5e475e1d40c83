//! `dualwrite verify`: proves a map's two tables equal through its mapping, or lists where
//! they differ, and repairs them on request.
//!
//! Owns: the comparison of one map ([`verify_map`]): both tables streamed in key order
//! (pages of [`PAGE`] rows, read ahead concurrently: bounded memory whatever the table's
//! size) and merge-joined on the target's key, the side data comes from turned into target
//! rows by the map's own [`Flow`] (mapped columns, `valueMap`s, defaults, direction: the
//! sync's transform, not a second one) and converted to the target columns' kinds like a
//! write is; the re-check of every candidate difference (`recheck`: both sides read again
//! by key, after a pause when another process drives the map, so a change in flight is not
//! reported); the repair of confirmed differences; and the result ([`VerifyResult`]) with
//! its status file `status/verify/<map>.yaml`, which `dualwrite run` serves.
//!
//! Does not own: value conversion (`endpoint::value`), the write path (`Endpoint::write_batch`,
//! which keeps writes idempotent and echo-suppressed), leases (`crate::lease`: the CLI claims
//! the map before a repair and passes its fence), nor rendering (`cli::verify`).
//!
//! Invariants:
//! - **Keys are compared in one order**: target-kind keys, by `merge::compare_keys`. Where a
//!   database's collation orders keys differently, the merge only yields extra candidates;
//!   the re-check by key decides, so a row is never reported or repaired for that alone.
//! - **Nothing is reported that a re-read does not confirm**; a repair writes the re-read
//!   rows, never the streamed ones.
//! - **A repair is idempotent and echo-suppressed** (upserts and deletes through
//!   `write_batch`, fenced with the map's lease): running it twice changes nothing more, and
//!   a running bidirectional sync does not copy it back.

mod merge;
mod recheck;
mod result;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Direction, Side, TableMap};
use crate::endpoint::{
    Endpoint, EndpointError, Fence, Row, TableInfo, TableName, Value, ValueKind, WriteError,
};
use crate::sync::link::{Connections, LinkError, Prepared, ends, side_name};
use crate::sync::{Flow, Way};

pub use result::{
    Counts, Difference, DifferenceKind, Repaired, VerifyResult, read_status, write_status,
};

/// Rows per page read from each side.
pub const PAGE: usize = 5_000;

/// Candidate differences re-checked (and repaired) together.
const RECHECK_BATCH: usize = 5_000;

/// How one verify runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many differences are kept with their values (all are counted).
    pub limit: usize,
    /// Write the differences in the map's direction.
    pub repair: Option<Fence>,
    /// The pause before each re-check round when another process drives the map; no pause
    /// (and one round) otherwise.
    pub settle: Duration,
    /// Re-check rounds when the map is driven elsewhere: a key is reported only when it
    /// still differs in every round.
    pub rounds: usize,
    /// Whether another process drives the map now (changes may be in flight).
    pub live: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limit: 20,
            repair: None,
            settle: Duration::from_millis(1500),
            rounds: 3,
            live: false,
        }
    }
}

/// Why a map could not be verified.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// An endpoint cannot be reached, a table is missing, or the tables no longer fit the map.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// Reading a side failed while comparing.
    #[error("{endpoint} ({side} side): {source}")]
    Read {
        endpoint: String,
        side: &'static str,
        #[source]
        source: EndpointError,
    },
    /// Writing a repair failed; nothing of that batch was written.
    #[error("repairing {endpoint}: {source}")]
    Repair {
        endpoint: String,
        #[source]
        source: WriteError,
    },
}

/// The way a map is compared and repaired in: its direction, or for a bidirectional map the
/// way from its `initialSync.primary` side.
pub fn way_of(map: &TableMap) -> Way {
    match map.spec.direction {
        Direction::SourceToDestination => Way::SourceToDestination,
        Direction::DestinationToSource => Way::DestinationToSource,
        Direction::Bidirectional => match map.spec.initial_sync.primary {
            Side::Source => Way::SourceToDestination,
            Side::Destination => Way::DestinationToSource,
        },
    }
}

/// One side of the comparison, described.
pub(crate) struct End {
    pub ep: Arc<dyn Endpoint>,
    pub table: TableName,
    pub endpoint: String,
    pub side: Side,
}

impl End {
    fn failure(&self, source: EndpointError) -> VerifyError {
        VerifyError::Read {
            endpoint: self.endpoint.clone(),
            side: side_name(self.side),
            source,
        }
    }
}

/// A row of the side data comes from, as the target should hold it: its target-kind key (or
/// why it has none) and the target row (or why it cannot be made).
pub(crate) type Expected = (Result<Vec<Value>, String>, Result<Row, String>);

/// Everything the comparison of one way needs: the flow and both ends.
pub(crate) struct Compare<'a> {
    pub flow: &'a Flow,
    pub from: End,
    pub to: End,
    /// Kinds of the target's written columns (the flow's `write_columns`).
    pub to_kinds: Vec<ValueKind>,
    /// Kinds of the source's key columns (`flow.from_key`) and the target's (`flow.to_key`).
    pub from_key_kinds: Vec<ValueKind>,
    pub to_key_kinds: Vec<ValueKind>,
}

impl Compare<'_> {
    /// The target row a row read on the from side should be, and its target-kind key. The
    /// key is `Err` only when it cannot be converted; the row is `Err` with the reason it
    /// cannot be transformed (a value without a `valueMap` entry, a value the target column
    /// cannot hold).
    pub fn expected(&self, row: Row) -> Expected {
        let key = TableInfo::convert_with(
            &self.flow.to_key,
            &self.to_key_kinds,
            self.flow.key_of(&row).to_vec(),
        )
        .map_err(|e| e.to_string());
        let target = self.flow.apply(&row).and_then(|r| {
            TableInfo::convert_with(&self.flow.write_columns, &self.to_kinds, r)
                .map_err(|e| e.to_string())
        });
        (key, target)
    }
}

/// Compares both tables of `map` (connected through `connections`) and, with
/// `options.repair`, writes the confirmed differences to the target side of its way.
pub async fn verify_map(
    connections: &mut Connections<'_>,
    map: &TableMap,
    options: &Options,
) -> Result<VerifyResult, VerifyError> {
    let started = Instant::now();
    let prepared = Prepared::of(connections, map).await?;
    let way = way_of(map);
    let (from_side, to_side) = ends(way);
    // The map syncs this way (for a bidirectional map, both), so its link is prepared.
    let link = prepared
        .links
        .iter()
        .find(|l| l.flow.way == way)
        .expect("a map's verify way is one of its ways");
    let flow = &link.flow;
    let (from_table, to_table, from_info, to_info) = match way {
        Way::SourceToDestination => (
            &prepared.source,
            &prepared.destination,
            &prepared.source_info,
            &prepared.destination_info,
        ),
        Way::DestinationToSource => (
            &prepared.destination,
            &prepared.source,
            &prepared.destination_info,
            &prepared.source_info,
        ),
    };
    let from = End {
        ep: Arc::clone(&link.from),
        table: from_table.clone(),
        endpoint: link.from_endpoint.clone(),
        side: from_side,
    };
    let to = End {
        ep: Arc::clone(&link.to),
        table: to_table.clone(),
        endpoint: link.to_endpoint.clone(),
        side: to_side,
    };
    let to_kinds = to_info
        .kinds_of(&to.table, &flow.write_columns)
        .map_err(|e| to.failure(e))?;
    let to_key_kinds = to_info
        .kinds_of(&to.table, &flow.to_key)
        .map_err(|e| to.failure(e))?;
    let from_key_kinds = from_info
        .kinds_of(&from.table, &flow.from_key)
        .map_err(|e| from.failure(e))?;
    let compare = Compare {
        flow,
        from,
        to,
        to_kinds,
        from_key_kinds,
        to_key_kinds,
    };
    let mut result = VerifyResult::new(map.metadata.name.clone(), way.name());
    if options.repair.is_some() {
        result.repaired = Some(Repaired::default());
    }
    let mut checker = recheck::Checker::new(&compare, options, &mut result);
    merge::run(&compare, &mut checker).await?;
    checker.finish().await?;
    result.duration_seconds = started.elapsed().as_secs_f64();
    result.verified_at = crate::clock::now_secs();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(direction: &str, primary: &str) -> TableMap {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "dualwrite/v1",
            "kind": "TableMap",
            "metadata": { "name": "m" },
            "spec": {
                "state": "Running",
                "source": { "endpoint": "a", "table": "t" },
                "destination": { "endpoint": "b", "table": "u" },
                "direction": direction,
                "columns": [{ "source": "id", "destination": "id", "key": true }],
                "initialSync": { "primary": primary }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_bidirectional_map_is_compared_and_repaired_from_its_primary_side() {
        assert_eq!(
            way_of(&map("Bidirectional", "destination")),
            Way::DestinationToSource
        );
        assert_eq!(
            way_of(&map("Bidirectional", "source")),
            Way::SourceToDestination
        );
        assert_eq!(
            way_of(&map("DestinationToSource", "source")),
            Way::DestinationToSource
        );
    }
}
