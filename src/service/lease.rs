//! Leases under `dualwrite run`: several processes sharing a state store split the maps
//! between them, one owner per map (on one host with the SQLite store, across hosts with
//! PostgreSQL). Each lease carries the epoch its writes are fenced with (`crate::lease`).
//!
//! A thread of its own (with its own store connection, so a long pass never delays it)
//! ticks several times per TTL: it announces this process as a live member, renews the
//! leases it holds, gives back maps above its fair share (`ceil(maps / live members)`, only
//! between passes) and takes free or expired leases up to that share. The loop drives only
//! the maps in [`Leases::owned`] (with their epochs, [`Leases::epochs`]) and is woken when
//! that set changes.
//!
//! Invariants: a lease is granted by one atomic statement on the store's clock, so two
//! processes never own a map at once while both are live; a process killed with `kill -9`
//! stops renewing and its maps move to the others once the TTL has run out; a process
//! paused past the TTL that wakes up finds its writes refused by the targets' fences and
//! its leases gone. Progress is
//! safe to take over at any point: cursors advance only after the writes they cover are
//! committed, and writes are idempotent upserts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Options;
use crate::config::Config;
use crate::lease::acquire;
use crate::state::{LeaseGrant, StateStore};

pub(crate) struct Leases {
    holder: String,
    inner: Arc<Inner>,
    owned_rx: watch::Receiver<BTreeMap<String, i64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Inner {
    holder: String,
    ttl: Duration,
    candidates: Mutex<BTreeSet<String>>,
    /// The maps held, with their epochs.
    owned: Mutex<BTreeMap<String, i64>>,
    busy: AtomicBool,
    stop: AtomicBool,
}

/// Why leases cannot be taken part in.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease thread's own connection to the state store.
    #[error(transparent)]
    Store(#[from] crate::state::StateError),
    #[error("starting the lease thread: {0}")]
    Thread(#[source] std::io::Error),
}

impl Leases {
    /// Opens a second connection to the store and starts the lease thread.
    pub(crate) fn start(dir: &Path, cfg: &Config, args: &Options) -> Result<Leases, LeaseError> {
        let store = crate::state::open(dir, &cfg.project.resource)?;
        let holder = args
            .holder_id
            .clone()
            .unwrap_or_else(crate::lease::holder_id);
        let inner = Arc::new(Inner {
            holder: holder.clone(),
            ttl: args.lease_ttl,
            candidates: Mutex::default(),
            owned: Mutex::default(),
            busy: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let (owned_tx, owned_rx) = watch::channel(BTreeMap::new());
        let thread_inner = Arc::clone(&inner);
        let thread = std::thread::Builder::new()
            .name("dualwrite-leases".into())
            .spawn(move || thread_inner.run(store, owned_tx))
            .map_err(LeaseError::Thread)?;
        tracing::info!(holder = %holder, ttl = ?args.lease_ttl, "leases: sharing the maps with other processes");
        Ok(Leases {
            holder,
            inner,
            owned_rx,
            thread: Some(thread),
        })
    }

    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }

    /// The maps this process may drive now.
    pub(crate) fn owned(&self) -> BTreeSet<String> {
        self.epochs().into_keys().collect()
    }

    /// The maps this process may drive now, with the epochs their writes carry.
    pub(crate) fn epochs(&self) -> BTreeMap<String, i64> {
        self.inner.owned.lock().expect("lease lock").clone()
    }

    /// The maps to share out: those of the config and those the store still has (so one
    /// owner forgets a removed map).
    pub(crate) fn set_candidates(&self, maps: BTreeSet<String>) {
        *self.inner.candidates.lock().expect("lease lock") = maps;
    }

    /// While a pass runs, no lease is given back for balance (a lost lease still is).
    pub(crate) fn set_busy(&self, busy: bool) {
        self.inner.busy.store(busy, Ordering::SeqCst);
    }

    /// Resolves when the owned set changed.
    pub(crate) async fn changed(&mut self) {
        if self.owned_rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Stops renewing and gives every lease back, so the others take over at once.
    pub(crate) fn stop(mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Inner {
    fn tick(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    fn run(&self, store: Box<dyn StateStore>, owned_tx: watch::Sender<BTreeMap<String, i64>>) {
        let mut last_renew: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(error) = self.round(store.as_ref(), &mut last_renew, &owned_tx) {
                tracing::warn!(%error, "leases: the state store did not answer");
                // Past the TTL without renewing, the leases may be someone else's now.
                if last_renew.is_some_and(|at| at.elapsed() >= self.ttl) {
                    self.publish(BTreeMap::new(), &owned_tx);
                }
            }
            let until = Instant::now() + self.tick();
            while Instant::now() < until && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Err(error) = store.release_leases(&self.holder, None) {
            tracing::warn!(%error, "leases: could not give the leases back; they expire after the TTL");
        }
        self.publish(BTreeMap::new(), &owned_tx);
    }

    fn publish(
        &self,
        owned: BTreeMap<String, i64>,
        owned_tx: &watch::Sender<BTreeMap<String, i64>>,
    ) {
        let mut current = self.owned.lock().expect("lease lock");
        if *current != owned {
            *current = owned.clone();
            drop(current);
            owned_tx.send_replace(owned);
        }
    }

    /// One round: membership, renewals, balance, takeovers.
    fn round(
        &self,
        store: &dyn StateStore,
        last_renew: &mut Option<Instant>,
        owned_tx: &watch::Sender<BTreeMap<String, i64>>,
    ) -> Result<(), crate::state::StateError> {
        let members = store.heartbeat(&self.holder, self.ttl)?.max(1) as usize;
        let candidates = self.candidates.lock().expect("lease lock").clone();
        let mut owned = self.owned.lock().expect("lease lock").clone();
        if last_renew.is_none_or(|at| at.elapsed() >= self.ttl / 3) {
            for map in owned.keys().cloned().collect::<Vec<_>>() {
                match acquire(store, &map, &self.holder, self.ttl)? {
                    LeaseGrant::Granted { epoch } => {
                        owned.insert(map, epoch);
                    }
                    LeaseGrant::Taken(lease) => {
                        tracing::warn!(map = %map, holder = %lease.holder, "leases: lease lost to another process; giving the map up");
                        owned.remove(&map);
                    }
                }
            }
            *last_renew = Some(Instant::now());
        }
        let gone: Vec<String> = owned
            .keys()
            .filter(|m| !candidates.contains(*m))
            .cloned()
            .collect();
        for map in gone {
            store.release_leases(&self.holder, Some(&map))?;
            owned.remove(&map);
        }
        let share = candidates.len().div_ceil(members);
        if owned.len() > share && !self.busy.load(Ordering::SeqCst) {
            let extra: Vec<String> = owned
                .keys()
                .rev()
                .take(owned.len() - share)
                .cloned()
                .collect();
            for map in extra {
                store.release_leases(&self.holder, Some(&map))?;
                owned.remove(&map);
                tracing::info!(map = %map, "leases: handed over for balance");
            }
        }
        if owned.len() < share {
            // A lease of a local process that is gone (a restart after kill -9) is free now:
            // `acquire` takes it over at once instead of after its TTL.
            let held: BTreeSet<String> = store
                .leases()?
                .into_iter()
                .filter(|l| !crate::lease::is_dead_local_holder(&l.holder))
                .map(|l| l.map)
                .collect();
            for map in candidates.difference(&held) {
                if owned.len() >= share {
                    break;
                }
                if let LeaseGrant::Granted { epoch } = acquire(store, map, &self.holder, self.ttl)?
                {
                    tracing::info!(map = %map, epoch, "leases: took the map");
                    owned.insert(map.clone(), epoch);
                }
            }
        }
        self.publish(owned, owned_tx);
        Ok(())
    }
}
