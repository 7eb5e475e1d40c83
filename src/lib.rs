//! dualwrite: keeps tables in two SQL databases in sync, operated the GitOps way.

pub mod capture;
pub mod endpoint;
