//! dualwrite: keeps tables in two SQL databases in sync, operated the GitOps way.
//!
//! Data flows one way: config → plan → reconcile → endpoint/capture/sync → state → status.

pub mod activity;
pub mod alert;
pub mod capture;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod endpoint;
pub mod errors;
pub mod lease;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod request_file;
pub mod requests;
pub mod service;
pub mod shutdown;
pub mod solution;
pub mod state;
pub mod status;
pub mod status_commit;
pub mod sync;
pub mod verify;
