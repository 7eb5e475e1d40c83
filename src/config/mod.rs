//! The config repository: resources, loading, and validation into a `Config` the rest of the
//! program trusts without re-checking. Owns every user-facing config error (`Diagnostic`).
//!
//! Pipeline: `loader` reads files (work tree or a git revision) → `yaml` parses documents with
//! positions → `schema` checks each against its kind's JSON Schema → `validate` checks names
//! and references across resources; `solutions` says where each resource comes from
//! (local or a managed solution), checks managed files and chooses the map versions in force. Every problem is collected; none stops the others.

pub mod loader;
pub mod resources;
pub mod schema;
pub mod solutions;
pub mod validate;
pub mod yaml;

use std::fmt;

use serde::Serialize;

pub use loader::{ConfigSource, GitRevision, WorkTree};
pub use resources::*;
pub use validate::{Config, Located};

/// One user-facing problem with the config, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Relative to the config directory.
    pub path: String,
    pub line: u64,
    pub col: u64,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(path: &str, pos: yaml::Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            path: path.to_string(),
            line: pos.line,
            col: pos.col,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path, self.line, self.col, self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// `did you mean "x"?` for the candidate closest to `word`, if any is close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                c,
            )
        })
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean {c:?}?"))
}

/// Loads and validates the whole repository. All problems, sorted, or a trusted `Config`.
pub fn load(source: &dyn ConfigSource) -> Result<Config, Vec<Diagnostic>> {
    let files = loader::read_files(source)?;
    validate::compile(files)
}
