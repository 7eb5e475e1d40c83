//! Map leases: one process drives a map at a time, and a process that lost its lease is
//! fenced (SPEC §4). Owns the holder id (`host:pid`), the leases a one-off pass takes
//! ([`Claims`]: each map's lease taken just before its step, renewed by a thread of its own
//! while the pass runs, given back at the end) and the [`Fence`] each write carries.
//!
//! Leases live in the state store, both kinds (`StateStore::acquire_lease`); the store's
//! clock decides expiry. Each grant to a new holder raises the map's epoch; every write
//! transaction on a target carries it and the target's fence row refuses an older one in the
//! same transaction (`endpoint::sql::fence_statements`). So a holder that was paused past
//! its TTL (SIGSTOP, a VM pause, a long stall) and wakes up cannot write rows it read before
//! the pause over the newer owner's: its transaction is refused and rolled back, and it gives
//! the map up.
//!
//! A lease held by a process of this host that no longer exists (`kill -9` of a
//! `reconcile`) is taken over at once instead of after its TTL.
//!
//! Does not own: how `dualwrite run` processes share the maps between them
//! (`service::lease`, which uses the same store calls and fences).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Project;
use crate::endpoint::Fence;
use crate::state::{Lease, LeaseGrant, StateError, StateStore};

/// How long a lease of a one-off pass lasts without renewal (it is renewed every third of it).
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// How often a waiting claim asks again.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// Why a map's lease could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Store(#[from] StateError),
    #[error("starting the lease thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Another live process drives the map.
    #[error("map {} is driven by {} since {}", .0.map, .0.holder, .0.since)]
    Taken(Lease),
    /// A shutdown was asked for while waiting for the lease.
    #[error("stopped while waiting for the lease of map {0}")]
    Stopped(String),
}

/// This process's holder id: `host:pid`.
pub fn holder_id() -> String {
    format!("{}:{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

/// Whether `holder` names a process of this host that no longer runs: its lease is free to
/// take over now rather than after the TTL.
pub fn is_dead_local_holder(holder: &str) -> bool {
    let Some((host, pid)) = holder.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name() && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Asks the store for `map`'s lease for `holder`, taking it over from a dead local holder.
pub fn acquire(
    store: &dyn StateStore,
    map: &str,
    holder: &str,
    ttl: Duration,
) -> Result<LeaseGrant, StateError> {
    match store.acquire_lease(map, holder, ttl, None)? {
        LeaseGrant::Taken(lease) if is_dead_local_holder(&lease.holder) => {
            tracing::info!(map, dead = %lease.holder, "taking over the lease of a process that is gone");
            store.acquire_lease(map, holder, ttl, Some(&lease.holder))
        }
        grant => Ok(grant),
    }
}

/// The live lease another process holds on `map`, if any: that process drives it.
pub fn driven_elsewhere(store: &dyn StateStore, map: &str) -> Result<Option<Lease>, StateError> {
    let me = holder_id();
    Ok(store
        .leases()?
        .into_iter()
        .find(|l| l.map == map && l.holder != me && !is_dead_local_holder(&l.holder)))
}

/// The leases a one-off pass (`dualwrite reconcile`, `errors … --apply`, `demo`) holds:
/// taken map by map, renewed in the background, given back by [`Claims::finish`] (or when
/// dropped).
pub struct Claims {
    inner: Arc<Inner>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("holder", &self.inner.holder)
            .finish_non_exhaustive()
    }
}

struct Inner {
    holder: String,
    ttl: Duration,
    /// A connection of its own, so that renewing never waits for the pass's.
    store: Mutex<Box<dyn StateStore>>,
    /// The maps held, with their epochs.
    held: Mutex<BTreeMap<String, i64>>,
    stop: AtomicBool,
}

impl Claims {
    /// Opens a second connection to the project's store and starts the renewal thread.
    pub fn start(dir: &Path, project: &Project, ttl: Duration) -> Result<Claims, LeaseError> {
        let store = crate::state::open(dir, project)?;
        let inner = Arc::new(Inner {
            holder: holder_id(),
            ttl,
            store: Mutex::new(store),
            held: Mutex::default(),
            stop: AtomicBool::new(false),
        });
        let renewing = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("dualwrite-claims".into())
            .spawn(move || renewing.renew_until_stopped())
            .map_err(LeaseError::Thread)?;
        Ok(Claims {
            inner,
            thread: Some(thread),
        })
    }

    /// Takes `map`'s lease for this pass and returns the fence its writes carry. When
    /// another live process holds it: [`LeaseError::Taken`], or with `wait`, asks again
    /// until it is free (saying once whom it waits for).
    pub fn claim(&self, map: &str, wait: bool) -> Result<Fence, LeaseError> {
        let mut said = false;
        loop {
            let grant = {
                let store = self.inner.store.lock().expect("claims lock");
                acquire(store.as_ref(), map, &self.inner.holder, self.inner.ttl)?
            };
            match grant {
                LeaseGrant::Granted { epoch } => {
                    let mut held = self.inner.held.lock().expect("claims lock");
                    held.insert(map.to_string(), epoch);
                    return Ok(Fence {
                        map: map.to_string(),
                        epoch,
                    });
                }
                LeaseGrant::Taken(lease) if !wait => return Err(LeaseError::Taken(lease)),
                LeaseGrant::Taken(lease) => {
                    if !std::mem::replace(&mut said, true) {
                        eprintln!(
                            "waiting: map {} is driven by {} since {}",
                            lease.map, lease.holder, lease.since
                        );
                    }
                    if crate::shutdown::requested() {
                        return Err(LeaseError::Stopped(map.to_string()));
                    }
                    std::thread::sleep(WAIT_POLL);
                }
            }
        }
    }

    /// Stops renewing and gives every lease back, so the next process need not wait.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn renew_until_stopped(&self) {
        let every = (self.ttl / 3).max(Duration::from_millis(100));
        let mut last = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= every {
                self.renew();
                last = Instant::now();
            }
        }
        let store = self.store.lock().expect("claims lock");
        if let Err(error) = store.release_leases(&self.holder, None) {
            tracing::warn!(%error, "could not give the map leases back; they expire after their TTL");
        }
    }

    /// Renews every lease held; one taken over meanwhile is dropped (its writes are fenced).
    fn renew(&self) {
        let maps: Vec<String> = self
            .held
            .lock()
            .expect("claims lock")
            .keys()
            .cloned()
            .collect();
        let store = self.store.lock().expect("claims lock");
        for map in maps {
            match store.acquire_lease(&map, &self.holder, self.ttl, None) {
                Ok(LeaseGrant::Granted { .. }) => {}
                Ok(LeaseGrant::Taken(lease)) => {
                    tracing::warn!(map = %map, holder = %lease.holder, "lease lost to another process; its writes here will be refused");
                    self.held.lock().expect("claims lock").remove(&map);
                }
                Err(error) => tracing::warn!(map = %map, %error, "renewing a lease failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_name_host_and_process_and_only_a_gone_local_process_is_dead() {
        let me = holder_id();
        assert!(me.ends_with(&format!(":{}", std::process::id())), "{me}");
        assert!(!is_dead_local_holder(&me), "this process is alive");
        let host = me.rsplit_once(':').unwrap().0;
        // PIDs are below 2^22 on Linux: this one cannot run.
        assert!(is_dead_local_holder(&format!("{host}:4999999")));
        assert!(!is_dead_local_holder("elsewhere:4999999"), "another host");
        assert!(!is_dead_local_holder("first"), "not host:pid");
    }
}
