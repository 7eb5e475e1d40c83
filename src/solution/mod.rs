//! Solutions (ALM, SPEC §5): packaging maps and alert rules with a publisher and a version to
//! move them between environments, back them up, or take someone else's.
//!
//! - `package`: the zip file and every check on a package that comes in (limits, paths,
//!   checksums, manifest).
//! - `sign`: ed25519 signatures of packages.
//! - `export`: a Solution resource (or everything, a backup) → package.
//! - `import`, `uninstall`: package × repository → file changes, decided by one pure `plan`
//!   each; `changes` renders them (unified diffs), validates the repository as it would be
//!   after them, and writes them (staged, then renamed).
//! - `inventory`: what is installed and which map versions are in force.
//!
//! How the repository reads installed solutions (checksums, map versions) is
//! `config::solutions`; this module never decides what the config means.

pub mod changes;
pub mod export;
pub mod import;
pub mod inventory;
pub mod package;
pub mod sign;
pub mod uninstall;
