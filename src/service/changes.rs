//! New captured changes, between timer ticks. Endpoints that can LISTEN
//! (`EndpointSpec::can_listen`: PostgreSQL, whose capture trigger notifies at commit) are
//! listened to; the others (SQLite, MySQL) are polled: the newest final `seq` of each
//! watched table, every `--poll-interval`. Either way the loop is woken with
//! the (endpoint, table) pairs that changed and drains only the Running maps reading them.
//!
//! Also measures the age of the oldest change still queued per map (a metric).
//!
//! Owns its own endpoint connections (never the pass's) and never writes anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc::{self, UnboundedSender};

use super::Wake;
use crate::config::{Config, DesiredState, TableMap};
use crate::endpoint::listen::{Listener, listen};
use crate::endpoint::{self, Endpoint, EndpointSpec, TableName};
use crate::sync::Way;

/// (endpoint, table as written in the map).
pub(crate) type Table = (String, String);

pub(crate) struct Changes {
    wake: UnboundedSender<Wake>,
    /// The config the targets were computed from (compared by address).
    targets_of: usize,
    specs: BTreeMap<String, EndpointSpec>,
    /// Polled tables and the newest `seq` seen (`None` until the first look, which wakes
    /// the loop when the table has any captured change).
    polled: BTreeMap<Table, Option<i64>>,
    /// Endpoints that notify, by name, with the tables watched there.
    listened: BTreeMap<String, BTreeSet<String>>,
    listeners: BTreeMap<String, Listener>,
    conns: BTreeMap<String, Arc<dyn Endpoint>>,
    failures: u64,
}

/// The tables a map reads changes from, with the way each feeds.
fn read_tables(map: &TableMap) -> Vec<(Way, Table)> {
    let spec = &map.spec;
    Way::of(spec.direction)
        .into_iter()
        .map(|way| {
            let side = match way {
                Way::SourceToDestination => &spec.source,
                Way::DestinationToSource => &spec.destination,
            };
            (way, (side.endpoint.clone(), side.table.clone()))
        })
        .collect()
}

/// The Running maps of `cfg` that read any of `tables`.
pub(crate) fn maps_reading(cfg: &Config, tables: &BTreeSet<Table>) -> HashSet<String> {
    cfg.maps
        .iter()
        .map(|m| &m.resource)
        .filter(|m| m.spec.state == DesiredState::Running)
        .filter(|m| read_tables(m).iter().any(|(_, t)| tables.contains(t)))
        .map(|m| m.metadata.name.clone())
        .collect()
}

impl Changes {
    pub(crate) fn new(wake: UnboundedSender<Wake>) -> Self {
        Changes {
            wake,
            targets_of: 0,
            specs: BTreeMap::new(),
            polled: BTreeMap::new(),
            listened: BTreeMap::new(),
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            failures: 0,
        }
    }

    /// How often connecting to an endpoint or listening on it failed.
    pub(crate) fn failures(&self) -> u64 {
        self.failures
    }

    /// Watches the tables of `cfg`'s Running maps (recomputed when the config changed).
    pub(crate) fn set_targets(&mut self, dir: &Path, cfg: &Arc<Config>) {
        let id = Arc::as_ptr(cfg) as usize;
        if id == self.targets_of {
            return;
        }
        self.targets_of = id;
        let mut specs = BTreeMap::new();
        for (name, ep) in &cfg.project.resource.spec.endpoints {
            if let Ok(spec) = EndpointSpec::from_config(dir, ep) {
                specs.insert(name.clone(), spec);
            }
        }
        if specs != self.specs {
            self.conns.clear();
            self.listeners.clear();
        }
        self.specs = specs;
        let mut polled = BTreeMap::new();
        let mut listened: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for map in cfg.maps.iter().map(|m| &m.resource) {
            if map.spec.state != DesiredState::Running {
                continue;
            }
            for (_, table) in read_tables(map) {
                match self.specs.get(&table.0) {
                    Some(spec) if spec.can_listen() => {
                        listened.entry(table.0).or_default().insert(table.1);
                    }
                    Some(_) => {
                        let seen = self.polled.get(&table).copied().flatten();
                        polled.insert(table, seen);
                    }
                    None => {}
                }
            }
        }
        self.polled = polled;
        self.listeners.retain(|name, _| listened.contains_key(name));
        self.listened = listened;
    }

    async fn conn(&mut self, name: &str) -> Option<Arc<dyn Endpoint>> {
        if let Some(conn) = self.conns.get(name) {
            return Some(Arc::clone(conn));
        }
        let spec = self.specs.get(name)?;
        match endpoint::connect(spec).await {
            Ok(conn) => {
                let conn: Arc<dyn Endpoint> = Arc::from(conn);
                self.conns.insert(name.to_string(), Arc::clone(&conn));
                Some(conn)
            }
            Err(error) => {
                self.failures += 1;
                tracing::debug!(endpoint = name, %error, "change watch: cannot connect");
                None
            }
        }
    }

    /// Polls the polled tables and (re)starts listeners that are missing or broke. Returns
    /// the tables with new changes, if any. A listener started (or restarted) wakes its
    /// tables once, for what it may have missed while nothing listened.
    pub(crate) async fn poll(&mut self) -> Option<BTreeSet<Table>> {
        let mut changed = BTreeSet::new();
        let names: Vec<String> = self.listened.keys().cloned().collect();
        for name in names {
            if self.listeners.get(&name).is_some_and(|l| !l.is_closed()) {
                continue;
            }
            self.listeners.remove(&name);
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            match listen(&self.specs[&name], tx).await {
                Ok(Some(listener)) => {
                    let wake = self.wake.clone();
                    let endpoint = name.clone();
                    tokio::spawn(async move {
                        while let Some(table) = rx.recv().await {
                            let mut tables = BTreeSet::from([(endpoint.clone(), table)]);
                            while let Ok(table) = rx.try_recv() {
                                tables.insert((endpoint.clone(), table));
                            }
                            if wake.send(Wake::Changes(tables)).is_err() {
                                return;
                            }
                        }
                    });
                    self.listeners.insert(name.clone(), listener);
                    // What was committed before it listened notified nobody: since the pass
                    // before it started (the first pass, at start-up), or while a broken
                    // one was down. Its tables are woken once for that.
                    changed.extend(
                        self.listened[&name]
                            .iter()
                            .map(|t| (name.clone(), t.clone())),
                    );
                }
                Ok(None) => {}
                Err(error) => {
                    self.failures += 1;
                    tracing::warn!(endpoint = %name, %error, "change notifications: cannot listen");
                }
            }
        }
        let tables: Vec<Table> = self.polled.keys().cloned().collect();
        for table in tables {
            let Some(conn) = self.conn(&table.0).await else {
                continue;
            };
            let Ok(parsed) = TableName::parse(&table.1) else {
                continue;
            };
            match conn.max_change_seq(&parsed).await {
                Ok(seq) => {
                    // The first look wakes too when there are changes: they may have been
                    // captured after the pass that installed capture drained (a map whose
                    // lease arrived after start-up), and a pass with nothing to do is cheap.
                    let seen = self.polled.insert(table.clone(), Some(seq)).flatten();
                    if seen.map_or(seq > 0, |s| seq > s) {
                        changed.insert(table);
                    }
                }
                // No changelog yet (capture not installed) or the endpoint went away: look
                // again next time, on a fresh connection.
                Err(_) => {
                    self.conns.remove(&table.0);
                }
            }
        }
        (!changed.is_empty()).then_some(changed)
    }
}
