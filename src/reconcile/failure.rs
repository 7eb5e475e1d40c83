//! A failure that hits a whole map in one step (SPEC §2 "A failure that hits the whole
//! map"): the typed errors of the layers below kept as `#[source]`, with the endpoint and
//! side they hit. What a failure means (retry, condition, error event) is not decided here
//! but by `policy::error_policy`.

use crate::config::Side;
use crate::endpoint::{EndpointError, WriteError, WriteErrorClass};
use crate::state::StateError;
use crate::sync::link::{Link, LinkError};
use crate::sync::{Halted, SyncError, Way};

/// Why one map's step did not finish.
#[derive(Debug, thiserror::Error)]
pub enum MapFailure {
    /// One side of the map failed: unreachable, not configured, or its tables changed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The state store failed: nothing after the last save happened.
    #[error(transparent)]
    State(#[from] StateError),
    /// A shutdown stopped a catch-up or an initial sync; it goes on at the next start.
    #[error("stopped for a shutdown before the work was done; it goes on at the next start")]
    Interrupted,
    /// This process's lease on the map was taken over (it was paused past the lease's TTL,
    /// say): the target's fence refused its write, and it gives the map up.
    #[error("lease lost: {0}; this process gives the map up")]
    Fenced(#[source] WriteError),
}

/// What kind of failure it is, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// An endpoint cannot be reached or the connection broke.
    Network,
    /// A table or mapped column is missing or incompatible.
    Schema,
    /// A shutdown stopped the work.
    Interrupted,
    /// Another process holds the map's lease now.
    LeaseLost,
    /// Anything else: a person must look.
    Other,
}

impl MapFailure {
    /// A sync of `link`'s way that stopped, with the end of the way it hit.
    pub fn of_sync(e: SyncError, link: &Link) -> MapFailure {
        match e {
            SyncError::Halted(Halted::Unreachable(e)) => {
                MapFailure::Link(link.failure(false, EndpointError::Database(e)))
            }
            SyncError::Halted(Halted::Fenced(e)) => MapFailure::Fenced(e),
            SyncError::Read(e) => MapFailure::Link(link.failure(true, e)),
            SyncError::Write(e) => MapFailure::Link(link.failure(false, e)),
            SyncError::State(e) => MapFailure::State(e),
            SyncError::Stopped => MapFailure::Interrupted,
        }
    }

    pub fn kind(&self) -> FailureKind {
        match self {
            MapFailure::Link(LinkError::Mapping { .. }) => FailureKind::Schema,
            MapFailure::Link(LinkError::Endpoint { source, .. }) => match source {
                // A missing variable or engine is the config's, not the network's.
                EndpointError::MissingEnv { .. } | EndpointError::NoEngine => FailureKind::Other,
                other => match other.class() {
                    WriteErrorClass::Network => FailureKind::Network,
                    WriteErrorClass::Schema => FailureKind::Schema,
                    WriteErrorClass::Fenced => FailureKind::LeaseLost,
                    WriteErrorClass::Application | WriteErrorClass::Transform => FailureKind::Other,
                },
            },
            MapFailure::State(_) => FailureKind::Other,
            MapFailure::Interrupted => FailureKind::Interrupted,
            MapFailure::Fenced(_) => FailureKind::LeaseLost,
        }
    }

    /// The endpoint and side it hit, if one did.
    pub fn endpoint(&self) -> Option<(&str, Side)> {
        match self {
            MapFailure::Link(
                LinkError::Endpoint { endpoint, side, .. }
                | LinkError::Mapping { endpoint, side, .. },
            ) => Some((endpoint, *side)),
            _ => None,
        }
    }

    /// The database's code, when the database said no.
    pub fn code(&self) -> Option<&str> {
        match self {
            MapFailure::Link(LinkError::Endpoint { source, .. }) => source.code(),
            _ => None,
        }
    }

    /// The way a map-level event is filed under: the way data leaves the side that failed
    /// when the map syncs that way, else the map's first way.
    pub fn way(&self, ways: &[Way]) -> Way {
        let leaving = self.endpoint().map(|(_, side)| match side {
            Side::Source => Way::SourceToDestination,
            Side::Destination => Way::DestinationToSource,
        });
        leaving
            .filter(|w| ways.contains(w))
            .or_else(|| ways.first().copied())
            .unwrap_or(Way::SourceToDestination)
    }
}
