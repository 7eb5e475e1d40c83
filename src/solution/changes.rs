//! A set of file changes to the config repository, as import and uninstall produce them: what
//! each does (added, changed, overwritten, removed) with a unified diff, the repository as it
//! would be afterwards (so it is validated before anything is written), and writing it: every
//! new file is staged beside its target first, then renamed into place, so an error before the
//! renames leaves the repository as it was.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::config::loader::{ConfigSource, SourceFile, WorkTree};
use crate::config::{self, Config, Diagnostic};

/// What a change does to one file.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new file.
    Added,
    /// A file of the same solution, replaced by its new version.
    Changed,
    /// A local file (a customization) replaced by the package's.
    Overwritten,
    /// A file that goes away.
    Removed,
}

/// One file's change.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// Relative to the config directory.
    pub path: String,
    pub kind: ChangeKind,
    #[serde(skip)]
    pub before: Option<String>,
    #[serde(skip)]
    pub after: Option<String>,
    /// Unified diff of before → after.
    pub diff: String,
}

impl FileChange {
    /// The change from `before` to `after` of `path`, or `None` when they are equal.
    pub fn new(
        path: &str,
        before: Option<String>,
        after: Option<String>,
        replaced: ChangeKind,
    ) -> Option<FileChange> {
        if before == after {
            return None;
        }
        let kind = match (&before, &after) {
            (None, _) => ChangeKind::Added,
            (_, None) => ChangeKind::Removed,
            _ => replaced,
        };
        let diff = similar::TextDiff::from_lines(
            before.as_deref().unwrap_or(""),
            after.as_deref().unwrap_or(""),
        )
        .unified_diff()
        .context_radius(3)
        .header(
            &before
                .as_ref()
                .map_or("/dev/null".into(), |_| format!("a/{path}")),
            &after
                .as_ref()
                .map_or("/dev/null".into(), |_| format!("b/{path}")),
        )
        .to_string();
        Some(FileChange {
            path: path.to_string(),
            kind,
            before,
            after,
            diff,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("cannot read the config repository: {0}")]
    Read(#[source] crate::config::loader::LoadError),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The config files of the work tree, by path.
pub fn current_files(dir: &Path) -> Result<BTreeMap<String, String>, ChangeError> {
    let files = WorkTree {
        dir: dir.to_path_buf(),
    }
    .files()
    .map_err(ChangeError::Read)?;
    Ok(files.into_iter().map(|f| (f.path, f.text)).collect())
}

/// Validates the repository as it would be after `changes`: the config, or every problem.
pub fn validate_after(
    current: &BTreeMap<String, String>,
    changes: &[FileChange],
) -> Result<Config, Vec<Diagnostic>> {
    let mut files = current.clone();
    for c in changes {
        match &c.after {
            Some(text) => files.insert(c.path.clone(), text.clone()),
            None => files.remove(&c.path),
        };
    }
    let mut list: Vec<SourceFile> = files
        .into_iter()
        .map(|(path, text)| SourceFile { path, text })
        .collect();
    // dualwrite.yaml first, as the loader gives them.
    list.sort_by(|a, b| {
        (a.path != config::loader::PROJECT_FILE, &a.path)
            .cmp(&(b.path != config::loader::PROJECT_FILE, &b.path))
    });
    config::validate::compile(list)
}

/// Writes the changes: stages every new file as a hidden file beside its target, then renames
/// them into place and removes the removed files (and folders left empty under `solutions/`).
pub fn apply(dir: &Path, changes: &[FileChange]) -> Result<(), ChangeError> {
    let mut staged = Vec::new();
    let result = (|| {
        for c in changes {
            let Some(text) = &c.after else { continue };
            let target = dir.join(&c.path);
            let parent = target.parent().expect("a file has a parent");
            let werr = |source| ChangeError::Write {
                path: c.path.clone(),
                source,
            };
            std::fs::create_dir_all(parent).map_err(werr)?;
            let name = target.file_name().expect("a file name").to_string_lossy();
            let temp = parent.join(format!(".{name}.dualwrite-{}", std::process::id()));
            std::fs::write(&temp, text).map_err(werr)?;
            staged.push((temp, target, c.path.clone()));
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (temp, _, _) in &staged {
            let _ = std::fs::remove_file(temp);
        }
        return Err(e);
    }
    for (temp, target, path) in &staged {
        std::fs::rename(temp, target).map_err(|source| ChangeError::Write {
            path: path.clone(),
            source,
        })?;
    }
    for c in changes.iter().filter(|c| c.after.is_none()) {
        let target = dir.join(&c.path);
        let in_solutions =
            crate::config::solutions::place(&c.path) != crate::config::solutions::Place::Local;
        match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ChangeError::Write {
                    path: c.path.clone(),
                    source: e,
                });
            }
            _ => {}
        }
        // Folders left empty inside solutions/ go too (remove_dir refuses a non-empty one).
        let mut folder = target.parent();
        while let Some(f) = folder {
            if !in_solutions
                || f == dir.join(config::loader::SOLUTIONS_DIR)
                || std::fs::remove_dir(f).is_err()
            {
                break;
            }
            folder = f.parent();
        }
    }
    Ok(())
}
