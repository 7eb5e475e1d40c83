//! The activity log of a map as it is downloaded (`dualwrite logs`, the dashboard's
//! `/maps/{name}/activity.csv` and `.jsonl`): one shape for both. Recording and reading
//! entries belongs to the state store.

use std::io::Write;

use crate::state::ActivityEntry;

/// The download formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line: `at`, `map`, `event`, `message`.
    Jsonl,
    /// A header `at,map,event,message`, then one row per entry.
    Csv,
}

/// `entries` of `map`, in their order, as `format`.
pub fn export(map: &str, entries: &[ActivityEntry], format: Format) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    match format {
        Format::Jsonl => {
            for e in entries {
                let line = serde_json::json!({"at": e.at, "map": map, "event": e.event, "message": e.message});
                writeln!(buffer, "{line}")?;
            }
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut buffer);
            w.write_record(["at", "map", "event", "message"])?;
            for e in entries {
                w.write_record([e.at.as_str(), map, &e.event, &e.message])?;
            }
            w.flush()?;
        }
    }
    Ok(buffer)
}
