//! Watching the config repository: a change to `dualwrite.yaml`, to anything under `maps/`,
//! `alerts/` or `requests/`, or to the git HEAD (a commit, a pull) wakes a full pass.
//!
//! The whole directory is watched, not single files, so editors that save by writing a new
//! file and renaming it over the old one are seen like any other write. Bursts (an editor's
//! write + rename, a checkout touching many files) are debounced into one wake-up after
//! [`QUIET`] without events. `status/`, `.dualwrite/` and git's object store are ignored,
//! so the service's own writes never wake it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{self, UnboundedSender};

use super::Wake;
use crate::config::loader::{PROJECT_FILE, RESOURCE_DIRS};

/// How long the repository must be quiet before a burst of events becomes one wake-up.
const QUIET: Duration = Duration::from_millis(100);
/// A steady stream of events still wakes the loop this often.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Whether a path (relative to the config directory) is part of the config or its revision.
fn relevant(rel: &Path) -> bool {
    let text = rel.to_string_lossy();
    text == PROJECT_FILE
        || RESOURCE_DIRS
            .iter()
            .any(|d| text == *d || text.starts_with(&format!("{d}/")))
        || text == ".git/HEAD"
        || text == ".git/packed-refs"
        || text.starts_with(".git/refs/heads/")
}

/// Why the config repository cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("{}: {source}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Notify(#[from] notify::Error),
}

/// Starts watching `dir`; events wake the loop through `wake`. Keep the returned watcher:
/// dropping it stops the watch.
pub(crate) fn watch(
    dir: &Path,
    wake: UnboundedSender<Wake>,
) -> Result<RecommendedWatcher, WatchError> {
    let root: PathBuf = dir.canonicalize().map_err(|source| WatchError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let events_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // Reading the config (our own, at every pass) shows up as access events.
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let hit = event
            .paths
            .iter()
            .any(|p| p.strip_prefix(&events_root).is_ok_and(relevant));
        if hit {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&root, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            loop {
                match tokio::time::timeout_at(
                    deadline.min(tokio::time::Instant::now() + QUIET),
                    raw_rx.recv(),
                )
                .await
                {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            tracing::debug!("config repository changed");
            if wake.send(Wake::Config).is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_files_and_the_git_head_are_relevant() {
        for yes in [
            "dualwrite.yaml",
            "maps/customers.yaml",
            "maps",
            "alerts/x.yaml",
            "requests/r.yml",
            ".git/HEAD",
            ".git/refs/heads/main",
        ] {
            assert!(relevant(Path::new(yes)), "{yes}");
        }
        for no in [
            "status/maps/customers.yaml",
            ".dualwrite/state.db",
            ".dualwrite/erp.db-wal",
            ".git/objects/ab/cdef",
            ".git/index",
            "mapsx/a.yaml",
            "README.md",
        ] {
            assert!(!relevant(Path::new(no)), "{no}");
        }
    }
}
