//! What a verify found, as the CLI prints it (`--output json`), as `status/verify/<map>.yaml`
//! keeps it, and as `dualwrite run` serves it (`/api/v1/maps/{name}/verify`, `/metrics`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::status::{STATUS_DIR, StatusError, StatusFile};

/// How a key differs between the side data comes from and the side it goes to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DifferenceKind {
    /// The side data comes from has the key; the side it goes to does not.
    Missing,
    /// The side data goes to has a key the side it comes from does not.
    Extra,
    /// Both have the key with different values (in the mapped columns).
    Different,
}

impl DifferenceKind {
    pub fn name(self) -> &'static str {
        match self {
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
            DifferenceKind::Different => "different",
        }
    }
}

/// One difference, in the target's column names.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub kind: DifferenceKind,
    pub key: serde_json::Value,
    /// The row the mapping says the target should hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<serde_json::Value>,
    /// The row the target holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<serde_json::Value>,
    /// Why the expected row cannot be made (a value without a `valueMap` entry, a value the
    /// target column cannot hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counts {
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.missing + self.extra + self.different
    }

    pub fn add(&mut self, kind: DifferenceKind) {
        match kind {
            DifferenceKind::Missing => self.missing += 1,
            DifferenceKind::Extra => self.extra += 1,
            DifferenceKind::Different => self.different += 1,
        }
    }
}

/// What a `--repair` wrote.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Repaired {
    pub upserted: u64,
    pub deleted: u64,
    /// Rows that cannot be transformed: left as they are.
    pub skipped: u64,
}

/// The result of verifying one map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResult {
    pub map: String,
    /// The way compared: the map's direction, or a bidirectional map's primary way.
    pub direction: String,
    pub verified_at: String,
    pub duration_seconds: f64,
    pub source_rows: u64,
    pub destination_rows: u64,
    pub equal: bool,
    /// Keys the streamed comparison found different and that were read again on both sides
    /// before being counted (more than `counts` when changes were in flight).
    #[serde(default)]
    pub rechecked: u64,
    pub counts: Counts,
    /// The first differences (up to `--limit`), with their values.
    pub differences: Vec<Difference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<Repaired>,
}

impl VerifyResult {
    pub fn new(map: String, direction: &str) -> Self {
        VerifyResult {
            map,
            direction: direction.to_string(),
            verified_at: String::new(),
            duration_seconds: 0.0,
            source_rows: 0,
            destination_rows: 0,
            equal: false,
            rechecked: 0,
            counts: Counts::default(),
            differences: Vec::new(),
            repaired: None,
        }
    }
}

const FOLDER: &str = "verify";
const KIND: &str = "VerifyStatus";

/// Writes `status/verify/<map>.yaml`.
pub fn write_status(dir: &Path, result: &VerifyResult) -> Result<(), StatusError> {
    crate::status::write_status(dir, FOLDER, KIND, &result.map, result).map(|_| ())
}

/// The last verify of `map`, if one was recorded (and is readable).
pub fn read_status(dir: &Path, map: &str) -> Option<VerifyResult> {
    let path = dir
        .join(STATUS_DIR)
        .join(FOLDER)
        .join(format!("{map}.yaml"));
    let text = std::fs::read_to_string(path).ok()?;
    serde_saphyr::from_str::<StatusFile<VerifyResult>>(&text)
        .ok()
        .map(|f| f.status)
}
