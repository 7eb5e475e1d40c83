//! The typed resources of the config repository (SPEC §1, §5): Project, TableMap, AlertRule,
//! ErrorRequest, Solution and the SolutionManifest of an installed package, with their defaults. These types are the raw, deserialized form; the JSON
//! Schemas in `schemas/` are generated from them. Cross-resource checks live in
//! `config::validate`, not here.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `apiVersion` of every resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiVersion {
    #[serde(rename = "dualwrite/v1")]
    V1,
}

/// `metadata` of every resource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Lowercase DNS-1123 label, unique per kind.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

macro_rules! kind_marker {
    ($marker:ident, $kind:literal) => {
        #[doc = concat!("The `kind: ", $kind, "` marker.")]
        #[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $marker {
            #[serde(rename = $kind)]
            Kind,
        }
    };
}
kind_marker!(ProjectKind, "Project");
kind_marker!(TableMapKind, "TableMap");
kind_marker!(AlertRuleKind, "AlertRule");
kind_marker!(ErrorRequestKind, "ErrorRequest");
kind_marker!(SolutionKind, "Solution");
kind_marker!(SolutionManifestKind, "SolutionManifest");

/// A duration written `30s`, `15m`, `1h` or `1d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    seconds: u64,
}

impl Duration {
    pub const PATTERN: &'static str = r"^[0-9]+(s|m|h|d)$";

    pub const fn from_secs(seconds: u64) -> Self {
        Self { seconds }
    }

    pub fn as_secs(self) -> u64 {
        self.seconds
    }

    pub fn parse(text: &str) -> Option<Self> {
        let unit = text.chars().last()?;
        let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
        let scale = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        number.checked_mul(scale).map(Self::from_secs)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.seconds;
        match s {
            0 => write!(f, "0s"),
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration: use a number and a unit, e.g. 30s, 15m, 1h, 1d"
            ))
        })
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": Self::PATTERN,
            "description": "A number and a unit: 30s, 15m, 1h, 1d",
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Project

/// `dualwrite.yaml`: endpoints, state store, notifications, retention.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite Project")]
pub struct Project {
    pub api_version: ApiVersion,
    pub kind: ProjectKind,
    pub metadata: Metadata,
    pub spec: ProjectSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The databases, by the name maps use to refer to them.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    /// Where dualwrite keeps phases, cursors and errored records.
    #[serde(default = "default_state_store")]
    pub state_store: StateStoreConfig,
    /// Errored records are purged after this.
    #[serde(default = "default_error_retention")]
    pub error_retention: Duration,
    /// Optional: errored records are written here as JSONL before they are purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_archive: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Notifications>,
    /// Publisher name → its ed25519 public key (64 hex digits): packages of a listed
    /// publisher are imported only with a valid signature by that key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, PublicKeyText>")]
    pub trusted_publishers: BTreeMap<String, String>,
    /// Map name → which of its definitions is in force, when a solution and `maps/` (or two
    /// solutions) define a map of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map_versions: BTreeMap<String, MapVersionChoice>,
}

/// An ed25519 public key as 64 lowercase hex digits.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
#[schemars(transparent)]
struct PublicKeyText(#[schemars(pattern(r"^[0-9a-f]{64}$"))] String);

/// Which definition of a map is in force: the local one (`maps/`), or the one of the
/// solution matching every field given.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MapVersionChoice {
    /// The definition in `maps/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
    /// The publisher of the solution whose definition is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// Its installed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<SemVer>,
    /// The solution's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
}

fn default_state_store() -> StateStoreConfig {
    StateStoreConfig {
        sqlite: Some(SqliteConfig {
            path: ".dualwrite/state.db".into(),
        }),
        postgres: None,
    }
}

fn default_error_retention() -> Duration {
    Duration::from_secs(86_400)
}

/// One database. Exactly one of `sqlite`, `postgres`, `mysql`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ServerConfig>,
    /// MySQL and MariaDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<ServerConfig>,
}

/// The state store. Exactly one of `sqlite`, `postgres`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateStoreConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ServerConfig>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SqliteConfig {
    /// Relative to the directory holding dualwrite.yaml.
    #[schemars(length(min = 1))]
    pub path: String,
}

/// A database server; its URL is a secret and only ever named by environment variable.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerConfig {
    /// The environment variable holding the connection URL.
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub url_from_env: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notifications {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpConfig>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    pub from: String,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub username_from_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub password_from_env: Option<String>,
}

fn default_smtp_port() -> u16 {
    25
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    None,
    Starttls,
    Tls,
}

// ---------------------------------------------------------------------------------------------
// TableMap

/// A table map: which table syncs to which, how, and its desired state.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite TableMap")]
pub struct TableMap {
    pub api_version: ApiVersion,
    pub kind: TableMapKind,
    pub metadata: Metadata,
    pub spec: TableMapSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableMapSpec {
    /// The desired state.
    #[serde(default)]
    pub state: DesiredState,
    pub source: TableRef,
    pub destination: TableRef,
    #[serde(default)]
    pub direction: Direction,
    #[schemars(length(min = 1))]
    pub columns: Vec<ColumnMap>,
    #[serde(default)]
    pub initial_sync: InitialSyncSpec,
    #[serde(default)]
    pub conflict: ConflictPolicy,
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 100000))]
    pub batch_size: u32,
}

fn default_batch_size() -> u32 {
    1000
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DesiredState {
    #[default]
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "Running",
            Self::Paused => "Paused",
            Self::Stopped => "Stopped",
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableRef {
    /// An endpoint named in dualwrite.yaml.
    pub endpoint: String,
    /// `table` or `schema.table`.
    pub table: String,
}

/// Which way data flows. For a column, only the one-way values make sense.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SourceToDestination,
    DestinationToSource,
    Bidirectional,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SourceToDestination => "SourceToDestination",
            Self::DestinationToSource => "DestinationToSource",
            Self::Bidirectional => "Bidirectional",
        })
    }
}

/// One column pair.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ColumnMap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Part of the key that identifies a record on both sides.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub key: bool,
    /// Source value → destination value; reversed for the other direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_map: Option<BTreeMap<String, Scalar>>,
    /// A constant written when the column has no source on the other side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Scalar>,
    /// Limits this column to one direction of a bidirectional map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
}

/// A YAML scalar used as a value: string, number, boolean or null.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Text(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitialSyncSpec {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which side wins for a key present on both sides.
    #[serde(default)]
    pub primary: Side,
    /// Raise it to re-run the initial sync.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub run: u32,
    /// false: "Rerun execution without errors" (only new data).
    #[serde(default = "yes")]
    pub retry_errors: bool,
    /// Rows per write transaction of the initial sync; automatic when absent (pages from
    /// 10,000 rows, grown or shrunk by how long they take, at most 8 MiB of rows each).
    /// `batchSize` is for live sync and catch-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub batch_size: Option<u32>,
}

impl Default for InitialSyncSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            primary: Side::Source,
            run: 1,
            retry_errors: true,
            batch_size: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    #[default]
    Source,
    Destination,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConflictPolicy {
    SourceWins,
    DestinationWins,
    #[default]
    LastWriteWins,
}

// ---------------------------------------------------------------------------------------------
// AlertRule

/// An alert rule: an error threshold over a sliding window, who to tell, what to do.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite AlertRule")]
pub struct AlertRule {
    pub api_version: ApiVersion,
    pub kind: AlertRuleKind,
    pub metadata: Metadata,
    pub spec: AlertRuleSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertRuleSpec {
    /// The maps this rule watches, by name ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maps: Option<Vec<String>>,
    /// ... or by labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub error_type: ErrorTypeSelector,
    /// Errors of that type ...
    #[schemars(range(min = 1))]
    pub threshold: u32,
    /// ... within this sliding window.
    pub window: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    #[serde(default)]
    pub action: AlertAction,
    /// No repeat notification for the same map within this.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
    /// Also notify when the rule stops firing.
    #[serde(default = "yes")]
    pub notify_resolved: bool,
}

fn default_cooldown() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    pub match_labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ErrorTypeSelector {
    #[default]
    Any,
    ApplicationError,
    NetworkError,
    TransformError,
    SchemaError,
    ConflictError,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Notify {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailList>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook: Vec<Webhook>,
}

/// A list of addresses, or one comma-separated string of them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum EmailList {
    List(Vec<String>),
    Text(String),
}

impl EmailList {
    /// The addresses, trimmed, empty entries dropped.
    pub fn addresses(&self) -> Vec<&str> {
        let items: Vec<&str> = match self {
            Self::List(list) => list.iter().map(String::as_str).collect(),
            Self::Text(text) => text.split(',').collect(),
        };
        items
            .into_iter()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .collect()
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Webhook {
    /// The environment variable holding the URL (it may carry a token).
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub url_from_env: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AlertAction {
    #[default]
    None,
    Pause,
    Stop,
}

// ---------------------------------------------------------------------------------------------
// ErrorRequest

/// A request to retry or dismiss errored records of one map.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite ErrorRequest")]
pub struct ErrorRequest {
    pub api_version: ApiVersion,
    pub kind: ErrorRequestKind,
    pub metadata: Metadata,
    pub spec: ErrorRequestSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorRequestSpec {
    pub map: String,
    pub action: RequestAction,
    /// All optional; together they AND. No filter at all means every open error.
    #[serde(default)]
    pub filter: ErrorFilter,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAction {
    Retry,
    Dismiss,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorFilter {
    /// Records whose latest failed attempt is at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Records whose latest failed attempt is before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// The data source direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorTypeSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ErrorPhase>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<i64>,
}

/// The phase a record failed in.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorPhase {
    InitialSync,
    Live,
    CatchUp,
}

// ---------------------------------------------------------------------------------------------
// Solution (SPEC §5)

/// A semantic version (`1.2.0`), ordered as semver orders them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SemVer(pub semver::Version);

impl SemVer {
    pub const PATTERN: &'static str =
        r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$";

    pub fn parse(text: &str) -> Option<Self> {
        semver::Version::parse(text).ok().map(SemVer)
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for SemVer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SemVer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        SemVer::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.2.0"
            ))
        })
    }
}

impl JsonSchema for SemVer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SemVer".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": Self::PATTERN,
            "description": "A semantic version: MAJOR.MINOR.PATCH, e.g. 1.2.0",
        })
    }
}

/// A solution (`solutions/<name>.yaml`): maps and alert rules packaged under a publisher and
/// a version, to export them (`dualwrite solution export`).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite Solution")]
pub struct Solution {
    pub api_version: ApiVersion,
    pub kind: SolutionKind,
    pub metadata: Metadata,
    pub spec: SolutionSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SolutionSpec {
    pub publisher: Publisher,
    pub version: SemVer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub components: Components,
    #[serde(default)]
    pub requires: Requirements,
}

/// Who publishes a solution; `name` is what `trustedPublishers` and `mapVersions` refer to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publisher {
    /// Lowercase DNS-1123 label.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The resources a solution packages, by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Components {
    #[serde(default)]
    pub maps: Vec<String>,
    #[serde(default)]
    pub alerts: Vec<String>,
}

/// What the importing project must have.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirements {
    /// Endpoint names the components use.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// `solution.yaml` of a package, and of a managed solution installed under
/// `solutions/<publisher>/<name>/`: what it is and the sha256 of every component file.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "dualwrite SolutionManifest")]
pub struct SolutionManifest {
    pub api_version: ApiVersion,
    pub kind: SolutionManifestKind,
    pub metadata: Metadata,
    pub spec: ManifestSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestSpec {
    pub publisher: Publisher,
    pub version: SemVer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Managed: installed under `solutions/`, not to be edited. Unmanaged: imported into
    /// `maps/` and `alerts/` as local files.
    pub managed: bool,
    /// The git commit (or content hash) of the config it was exported from.
    pub source_revision: String,
    #[serde(default)]
    pub components: Components,
    #[serde(default)]
    pub requires: Requirements,
    /// Path in the package → sha256 of its bytes (64 hex digits).
    #[schemars(with = "BTreeMap<String, Sha256Text>")]
    pub files: BTreeMap<String, String>,
    /// When it was imported (installed copies only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<DateTime<Utc>>,
}

/// A sha256 digest as 64 lowercase hex digits.
#[derive(JsonSchema)]
#[allow(dead_code)] // only its schema is used
#[schemars(transparent)]
struct Sha256Text(#[schemars(pattern(r"^[0-9a-f]{64}$"))] String);

/// The kinds of resource, in the order they are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Project,
    TableMap,
    AlertRule,
    ErrorRequest,
    Solution,
    SolutionManifest,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Project,
        Kind::TableMap,
        Kind::AlertRule,
        Kind::ErrorRequest,
        Kind::Solution,
        Kind::SolutionManifest,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Project => "Project",
            Kind::TableMap => "TableMap",
            Kind::AlertRule => "AlertRule",
            Kind::ErrorRequest => "ErrorRequest",
            Kind::Solution => "Solution",
            Kind::SolutionManifest => "SolutionManifest",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The file name of its JSON Schema under `schemas/`.
    pub fn schema_file(self) -> String {
        format!("{}.schema.json", self.name().to_lowercase())
    }

    pub fn json_schema(self) -> schemars::Schema {
        match self {
            Kind::Project => schemars::schema_for!(Project),
            Kind::TableMap => schemars::schema_for!(TableMap),
            Kind::AlertRule => schemars::schema_for!(AlertRule),
            Kind::ErrorRequest => schemars::schema_for!(ErrorRequest),
            Kind::Solution => schemars::schema_for!(Solution),
            Kind::SolutionManifest => schemars::schema_for!(SolutionManifest),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
