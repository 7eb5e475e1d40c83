//! A map's two tables, connected and described: the endpoints of a pass opened by name on
//! first use (`Connections`, with in-pass retries of a refused connect), and each way of a
//! map compiled against both tables (`Prepared`, `Link`). Every failure names the endpoint
//! and the side of the map it hit (`LinkError`), so that whoever decides what it means can
//! say where it happened.
//!
//! Does not own what a failure means (the reconciler's error policy) nor any writing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Side, TableMap};
use crate::endpoint::{self, Endpoint, EndpointError, EndpointSpec, Fence, TableInfo, TableName};

use super::{Flow, Sides, Way};

/// Delays between connect attempts within a pass when the endpoint is unreachable.
const CONNECT_RETRIES: [Duration; 2] = [Duration::from_millis(200), Duration::from_secs(1)];

/// The side of a map, as users read it.
pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Source => "source",
        Side::Destination => "destination",
    }
}

/// A failure on one side of a map.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The endpoint failed: it cannot be reached or configured, or a table on it is
    /// missing or changed.
    #[error("endpoint {endpoint} ({} side): {source}", side_name(*.side))]
    Endpoint {
        endpoint: String,
        side: Side,
        #[source]
        source: EndpointError,
    },
    /// The tables no longer fit the map's columns (a mapped column or the key is gone).
    #[error("endpoint {endpoint} ({} side): {message}", side_name(*.side))]
    Mapping {
        endpoint: String,
        side: Side,
        message: String,
    },
}

impl LinkError {
    pub fn endpoint(&self) -> &str {
        match self {
            LinkError::Endpoint { endpoint, .. } | LinkError::Mapping { endpoint, .. } => endpoint,
        }
    }
}

/// The endpoints of one pass, by name, each connected on first use. A connect refused as
/// unreachable is tried again within the pass (200 ms, then 1 s) before it is a failure;
/// the failure is then kept for the rest of the pass, so one pass asks an endpoint that is
/// down only once.
pub struct Connections<'a> {
    dir: PathBuf,
    cfg: &'a Config,
    open: HashMap<String, Result<Arc<dyn Endpoint>, EndpointError>>,
}

impl<'a> Connections<'a> {
    pub fn new(dir: &Path, cfg: &'a Config) -> Self {
        Connections {
            dir: dir.to_path_buf(),
            cfg,
            open: HashMap::new(),
        }
    }

    /// The endpoint `name`, connected.
    pub async fn get(&mut self, name: &str) -> Result<Arc<dyn Endpoint>, EndpointError> {
        if !self.open.contains_key(name) {
            let result = self.connect(name).await;
            self.open.insert(name.to_string(), result);
        }
        self.open[name].clone()
    }

    /// The endpoint on `side` of `map`, connected; a failure names it.
    pub async fn side(
        &mut self,
        map: &TableMap,
        side: Side,
    ) -> Result<Arc<dyn Endpoint>, LinkError> {
        let endpoint = side_endpoint(map, side);
        self.get(endpoint)
            .await
            .map_err(|source| LinkError::Endpoint {
                endpoint: endpoint.to_string(),
                side,
                source,
            })
    }

    async fn connect(&self, name: &str) -> Result<Arc<dyn Endpoint>, EndpointError> {
        let cfg = &self.cfg.project.resource.spec.endpoints[name];
        let spec = EndpointSpec::from_config(&self.dir, cfg)?;
        let mut delays = CONNECT_RETRIES.into_iter();
        loop {
            match endpoint::connect(&spec).await {
                Ok(ep) => return Ok(Arc::from(ep)),
                Err(e @ EndpointError::Connect { .. }) => match delays.next() {
                    Some(delay) if !crate::shutdown::requested() => {
                        tracing::debug!(endpoint = name, error = %e, ?delay, "connect refused; trying again");
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Err(e),
                },
                Err(e) => return Err(e),
            }
        }
    }
}

/// The endpoint name of `side` of `map`.
pub fn side_endpoint(map: &TableMap, side: Side) -> &str {
    match side {
        Side::Source => &map.spec.source.endpoint,
        Side::Destination => &map.spec.destination.endpoint,
    }
}

/// The table (as written in the config) of `side` of `map`.
pub fn side_table(map: &TableMap, side: Side) -> &str {
    match side {
        Side::Source => &map.spec.source.table,
        Side::Destination => &map.spec.destination.table,
    }
}

/// A map's queue as its capture tables hold it now: the changes after the map's cursors on
/// every side it captures, and when the oldest was captured. `None` when a side cannot be
/// asked (its endpoint down, its table gone).
pub async fn queue_of(
    connections: &mut Connections<'_>,
    map: &TableMap,
    runtime: &crate::state::MapRuntime,
) -> Option<crate::state::QueueState> {
    let mut queue = crate::state::QueueState {
        counted_at: Some(crate::clock::now_secs()),
        ..Default::default()
    };
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for way in Way::of(map.spec.direction) {
        let (from_side, _) = ends(way);
        let table = TableName::parse(side_table(map, from_side)).ok()?;
        let ep = connections.side(map, from_side).await.ok()?;
        let depth = ep
            .queue_depth(&table, super::cursor(runtime, way))
            .await
            .ok()?;
        queue.pending += depth.pending;
        oldest = match (oldest, depth.oldest_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    queue.oldest_at = oldest.map(|t| crate::clock::format_millis(crate::clock::millis(t)));
    Some(queue)
}

/// The side a way reads (and captures) from, and the side it writes to.
pub fn ends(way: Way) -> (Side, Side) {
    match way {
        Way::SourceToDestination => (Side::Source, Side::Destination),
        Way::DestinationToSource => (Side::Destination, Side::Source),
    }
}

/// A map's tables, described, and each way it syncs with its endpoints connected.
pub struct Prepared {
    pub source: TableName,
    pub destination: TableName,
    pub source_info: TableInfo,
    pub destination_info: TableInfo,
    pub links: Vec<Link>,
    /// The lease epoch of the process driving the map, carried by every write.
    pub fence: Option<Fence>,
}

/// One way of a map: its column mapping and the endpoints it reads from and writes to.
pub struct Link {
    pub flow: Flow,
    pub from: Arc<dyn Endpoint>,
    pub to: Arc<dyn Endpoint>,
    /// Endpoint names of the side data comes from and the side it goes to.
    pub from_endpoint: String,
    pub to_endpoint: String,
}

impl Link {
    /// The failure of an endpoint on the `from` (`reading`) or the `to` end of this way.
    pub fn failure(&self, reading: bool, source: EndpointError) -> LinkError {
        let (from_side, to_side) = ends(self.flow.way);
        let (endpoint, side) = if reading {
            (&self.from_endpoint, from_side)
        } else {
            (&self.to_endpoint, to_side)
        };
        LinkError::Endpoint {
            endpoint: endpoint.clone(),
            side,
            source,
        }
    }
}

impl Prepared {
    /// Connects both sides, describes both tables and compiles each way of `map`.
    pub async fn of(
        connections: &mut Connections<'_>,
        map: &TableMap,
    ) -> Result<Prepared, LinkError> {
        let spec = &map.spec;
        let table = |side: Side| {
            TableName::parse(side_table(map, side)).map_err(|source| LinkError::Endpoint {
                endpoint: side_endpoint(map, side).to_string(),
                side,
                source,
            })
        };
        let (source, destination) = (table(Side::Source)?, table(Side::Destination)?);
        let source_ep = connections.side(map, Side::Source).await?;
        let destination_ep = connections.side(map, Side::Destination).await?;
        let describe = async |ep: &Arc<dyn Endpoint>, table: &TableName, side: Side| {
            ep.introspect(table)
                .await
                .map_err(|source| LinkError::Endpoint {
                    endpoint: side_endpoint(map, side).to_string(),
                    side,
                    source,
                })
        };
        let source_info = describe(&source_ep, &source, Side::Source).await?;
        let destination_info = describe(&destination_ep, &destination, Side::Destination).await?;
        let mut links = Vec::new();
        for way in Way::of(spec.direction) {
            let (from_side, to_side) = ends(way);
            let (from_info, to_info, from, to) = match way {
                Way::SourceToDestination => {
                    (&source_info, &destination_info, &source_ep, &destination_ep)
                }
                Way::DestinationToSource => {
                    (&destination_info, &source_info, &destination_ep, &source_ep)
                }
            };
            let flow = Flow::compile(map, way, from_info, to_info).map_err(|e| {
                let side = if e.reading { from_side } else { to_side };
                LinkError::Mapping {
                    endpoint: side_endpoint(map, side).to_string(),
                    side,
                    message: e.message,
                }
            })?;
            links.push(Link {
                flow,
                from: Arc::clone(from),
                to: Arc::clone(to),
                from_endpoint: side_endpoint(map, from_side).to_string(),
                to_endpoint: side_endpoint(map, to_side).to_string(),
            });
        }
        Ok(Prepared {
            source,
            destination,
            source_info,
            destination_info,
            links,
            fence: None,
        })
    }

    /// Both sides of a way, for the sync functions.
    pub fn sides<'p>(&'p self, link: &'p Link) -> Sides<'p> {
        let (from_table, from_info, to_table, to_info) = match link.flow.way {
            Way::SourceToDestination => (
                &self.source,
                &self.source_info,
                &self.destination,
                &self.destination_info,
            ),
            Way::DestinationToSource => (
                &self.destination,
                &self.destination_info,
                &self.source,
                &self.source_info,
            ),
        };
        Sides {
            from: &link.from,
            from_table,
            from_info,
            to: &link.to,
            to_table,
            to_info,
            fence: self.fence.as_ref(),
        }
    }

    pub fn link(&self, way: Way) -> &Link {
        self.links
            .iter()
            .find(|l| l.flow.way == way)
            .expect("a link per way")
    }
}
