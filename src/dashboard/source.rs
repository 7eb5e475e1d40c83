//! Where the dashboard's pages read from: the config in the work tree and the state store,
//! opened read-only for each request on a blocking thread. Never creates a store, never
//! runs a pass: `dualwrite dashboard` works beside (or without) `dualwrite run`.

use std::path::Path;

use crate::config::{self, Config};
use crate::state::{StateError, StateStore};

use super::DashboardError;

/// The config and, once something has run, the state store.
pub(crate) struct View {
    pub cfg: Config,
    pub store: Option<Box<dyn StateStore>>,
}

impl View {
    /// The store, or the error saying that nothing has run yet.
    pub fn store(&self) -> Result<&dyn StateStore, DashboardError> {
        self.store.as_deref().ok_or(DashboardError::NoStore)
    }

    /// The map of the config named `name`, or a 404.
    pub fn require_map(&self, name: &str) -> Result<&config::TableMap, DashboardError> {
        self.cfg
            .map(name)
            .ok_or_else(|| DashboardError::NotFound(format!("map {name}")))
    }
}

/// Opens the view of `dir`: an invalid config is an error page (the service keeps the last
/// valid one in force, the dashboard says the work tree's is invalid).
fn open(dir: &Path) -> Result<View, DashboardError> {
    let cfg = config::load(&config::WorkTree {
        dir: dir.to_path_buf(),
    })
    .map_err(|diags| {
        DashboardError::ConfigInvalid(
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let store = crate::state::open_existing(dir, &cfg.project.resource)
        .map_err(|e: StateError| DashboardError::Store(e.to_string()))?;
    Ok(View { cfg, store })
}

/// Runs `read` over a fresh [`View`] of `dir` on a blocking thread (the stores are
/// synchronous).
pub(crate) async fn read<T: Send + 'static>(
    dir: &Path,
    read: impl FnOnce(&View) -> Result<T, DashboardError> + Send + 'static,
) -> Result<T, DashboardError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || read(&open(&dir)?))
        .await
        .map_err(|e| DashboardError::Internal(format!("reading the dashboard's data: {e}")))?
}
