//! Where the dashboard's pages read from: the config in the work tree, loaded for each
//! request, and the state store, opened read-only on a blocking thread. Never creates a
//! store, never runs a pass: `dualwrite dashboard` works beside (or without) `dualwrite run`.
//!
//! A PostgreSQL store's sessions (a connection each) are kept between requests, a few idle
//! at most, and handed to one request at a time; they are dropped when the config names
//! another store and when a read of theirs failed (the next request connects afresh). A
//! store that does not exist yet is asked for again by the next request, so the dashboard
//! follows a store that appears later. A SQLite store is a file opened afresh for each
//! request (well under a millisecond), which also follows a store file replaced under it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{self, Config, StateStoreConfig};
use crate::state::{StateError, StateStore};

use super::DashboardError;

/// Idle sessions kept at most: more requests at once than this open more, then drop them.
const IDLE_SESSIONS: usize = 4;

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

/// The work tree a dashboard reads, with its idle store sessions.
#[derive(Clone)]
pub(crate) struct Source {
    dir: PathBuf,
    idle: Arc<Mutex<Idle>>,
}

/// Sessions of the store `of` names, waiting for the next request.
#[derive(Default)]
struct Idle {
    of: Option<StateStoreConfig>,
    sessions: Vec<Box<dyn StateStore>>,
}

impl Source {
    pub fn new(dir: &Path) -> Source {
        Source {
            dir: dir.to_path_buf(),
            idle: Arc::default(),
        }
    }

    /// Runs `read` over a [`View`] of the work tree on a blocking thread (the stores are
    /// synchronous).
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&View) -> Result<T, DashboardError> + Send + 'static,
    ) -> Result<T, DashboardError> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.read_now(read))
            .await
            .map_err(|e| DashboardError::Internal(format!("reading the dashboard's data: {e}")))?
    }

    fn read_now<T>(
        &self,
        read: impl FnOnce(&View) -> Result<T, DashboardError>,
    ) -> Result<T, DashboardError> {
        let cfg = load(&self.dir)?;
        let of = cfg.project.resource.spec.state_store.clone();
        let store = match self.take(&of) {
            Some(session) => Some(session),
            None => crate::state::open_existing(&self.dir, &cfg.project.resource)
                .map_err(|e: StateError| DashboardError::Store(e.to_string()))?,
        };
        let view = View { cfg, store };
        let result = read(&view);
        if let Some(session) = view.store
            && of.postgres.is_some()
            && !matches!(result, Err(DashboardError::Store(_)))
        {
            self.give_back(of, session);
        }
        result
    }

    /// An idle session of the store `of` names; any of another store are dropped.
    fn take(&self, of: &StateStoreConfig) -> Option<Box<dyn StateStore>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.of.as_ref() != Some(of) {
            *idle = Idle::default();
            return None;
        }
        idle.sessions.pop()
    }

    fn give_back(&self, of: StateStoreConfig, session: Box<dyn StateStore>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.of.as_ref() != Some(&of) {
            *idle = Idle {
                of: Some(of),
                sessions: Vec::new(),
            };
        }
        if idle.sessions.len() < IDLE_SESSIONS {
            idle.sessions.push(session);
        }
    }
}

/// The config of `dir`: an invalid one is an error page (the service keeps the last valid
/// one in force, the dashboard says the work tree's is invalid).
fn load(dir: &Path) -> Result<Config, DashboardError> {
    config::load(&config::WorkTree {
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
    })
}
