//! The error policy, apart from the step (kube-runtime's `error_policy`): given a map's
//! failure and how many attempts in a row have failed, what it means: the error event to
//! record (NetworkError or SchemaError, scope Map), the condition to show, and when to try
//! again (exponential backoff, 1 s doubling to 60 s). One function decides for the pass,
//! `dualwrite run`'s schedule and the status files.

use std::time::Duration;

use crate::state::{ErrorType, ProblemReason};

use super::failure::{FailureKind, MapFailure};

/// The first retry delay; each failed attempt doubles it, up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The map-level error event to record (an error type of SPEC §2), if any.
    pub event: Option<ErrorType>,
    /// The reason of the map's `Ready=False` condition.
    pub reason: ProblemReason,
    /// When to try the map again (`None`: at the next pass, whenever that is).
    pub requeue_after: Option<Duration>,
}

/// The delay before attempt `failed + 1`, after `failed` attempts in a row failed (≥ 1).
pub fn backoff(failed: u32) -> Duration {
    let doublings = failed.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Decides what `failure` means after `failed` attempts in a row (this one included).
pub fn error_policy(failure: &MapFailure, failed: u32) -> Decision {
    match failure.kind() {
        FailureKind::Network => Decision {
            event: Some(ErrorType::NetworkError),
            reason: ProblemReason::EndpointUnreachable,
            requeue_after: Some(backoff(failed)),
        },
        FailureKind::Schema => Decision {
            event: Some(ErrorType::SchemaError),
            reason: ProblemReason::SchemaMismatch,
            requeue_after: Some(backoff(failed)),
        },
        FailureKind::Interrupted => Decision {
            event: None,
            reason: ProblemReason::Interrupted,
            requeue_after: None,
        },
        // Another process drives the map now: nothing to record or retry here.
        FailureKind::LeaseLost => Decision {
            event: None,
            reason: ProblemReason::LeaseLost,
            requeue_after: None,
        },
        FailureKind::Other => Decision {
            event: None,
            reason: ProblemReason::Error,
            requeue_after: Some(backoff(failed)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Side;
    use crate::endpoint::{EndpointError, WriteError, WriteErrorClass};
    use crate::sync::link::LinkError;

    fn on_destination(source: EndpointError) -> MapFailure {
        MapFailure::Link(LinkError::Endpoint {
            endpoint: "crm".into(),
            side: Side::Destination,
            source,
        })
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn an_unreachable_endpoint_is_a_network_error_retried_with_backoff() {
        let connect = on_destination(EndpointError::Connect {
            engine: "postgres",
            message: "connection refused".into(),
        });
        let d = error_policy(&connect, 3);
        assert_eq!(d.event, Some(ErrorType::NetworkError));
        assert_eq!(d.reason, ProblemReason::EndpointUnreachable);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(4)));
        let mid_batch = on_destination(EndpointError::Database(WriteError::new(
            WriteErrorClass::Network,
            Some("08006".into()),
            "connection closed",
        )));
        assert_eq!(
            error_policy(&mid_batch, 1).event,
            Some(ErrorType::NetworkError)
        );
        assert_eq!(mid_batch.code(), Some("08006"));
        assert!(
            connect
                .to_string()
                .starts_with("endpoint crm (destination side): ")
        );
    }

    #[test]
    fn a_missing_table_or_column_is_a_schema_error_that_stalls() {
        let table = on_destination(EndpointError::TableNotFound {
            table: "account".into(),
        });
        let d = error_policy(&table, 1);
        assert_eq!(d.event, Some(ErrorType::SchemaError));
        assert_eq!(d.reason, ProblemReason::SchemaMismatch);
        assert!(!d.reason.is_transient());
        let mapping = MapFailure::Link(LinkError::Mapping {
            endpoint: "erp".into(),
            side: Side::Source,
            message: "column name is not in table customers".into(),
        });
        assert_eq!(
            error_policy(&mapping, 1).event,
            Some(ErrorType::SchemaError)
        );
    }

    #[test]
    fn config_and_shutdown_failures_record_no_event() {
        let unset = on_destination(EndpointError::MissingEnv {
            variable: "CRM_URL".into(),
        });
        assert_eq!(error_policy(&unset, 1).event, None);
        assert_eq!(error_policy(&unset, 1).reason, ProblemReason::Error);
        let stopped = error_policy(&MapFailure::Interrupted, 1);
        assert_eq!(stopped.event, None);
        assert_eq!(stopped.requeue_after, None);
    }
}
