//! dualwrite: keeps tables in two SQL databases in sync, operated the GitOps way.

pub mod cli;
pub mod config;
pub mod plan;
pub mod state;
pub mod status;
