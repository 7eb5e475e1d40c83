//! dualwrite: keeps tables in two SQL databases in sync, operated the GitOps way.
