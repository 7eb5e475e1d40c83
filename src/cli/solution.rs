//! `dualwrite solution export|import|list|uninstall|public-key`: arguments, and what the user
//! reads (plans with unified diffs, listings as text or JSON). The work is `crate::solution`'s;
//! its typed errors become messages here, and only here.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};

use super::{ListOutput, exit};
use crate::config::{Diagnostic, SemVer, SolutionManifest, WorkTree};
use crate::solution::changes::{self, ChangeKind, FileChange};
use crate::solution::export::{ExportError, ExportRequest};
use crate::solution::import::{ImportError, ImportOptions};
use crate::solution::uninstall::UninstallError;
use crate::solution::{export, import, inventory, package, sign, uninstall};

#[derive(Subcommand, Debug)]
pub enum SolutionCommand {
    /// Package a solution (or, with --all, every map and alert rule) into a zip file. The
    /// repository is validated first: nothing is exported from an invalid one.
    Export(ExportArgs),
    /// Import a package: checks it, prints what it adds, changes and overwrites (a unified
    /// diff per file), then writes the files (not with --dry-run). Commit them to apply it.
    Import {
        /// The package (.zip).
        file: PathBuf,
        /// Print the plan and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Install an older or equal version of a managed solution.
        #[arg(long)]
        force: bool,
    },
    /// Installed solutions: publisher, version, managed, components, map versions in force.
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Text)]
        output: ListOutput,
    },
    /// Remove a managed solution's files; its maps leave the config (the next reconcile
    /// removes them, capture included).
    Uninstall {
        name: String,
        /// Print what would be removed and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the public key (for spec.trustedPublishers) of the signing key in an
    /// environment variable.
    PublicKey {
        /// The environment variable holding the signing key (64 hex digits).
        #[arg(long, value_name = "VAR")]
        key_from_env: String,
    },
}

#[derive(clap::Args, Debug)]
#[command(group(ArgGroup::new("kind").required(true).args(["managed", "unmanaged"])))]
pub struct ExportArgs {
    /// The Solution (solutions/NAME.yaml) to export.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Export every map and alert rule as solution "backup" (version 1.0.0 unless --version).
    #[arg(long)]
    pub all: bool,
    /// Managed: installed read-only under solutions/ (recommended between environments).
    #[arg(long)]
    pub managed: bool,
    /// Unmanaged: imported into maps/ and alerts/ as editable files.
    #[arg(long)]
    pub unmanaged: bool,
    /// The version to give the package (raise it for each release).
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Where to write the zip file.
    #[arg(short = 'o', long = "output-file", value_name = "FILE.zip")]
    pub file: PathBuf,
    /// Sign the package with the ed25519 key in this environment variable.
    #[arg(long, value_name = "VAR")]
    pub sign_key_from_env: Option<String>,
}

/// A path given on the command line: relative to where dualwrite was started.
fn from_cwd(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    }
}

/// A message followed by the diagnostics it stands for.
fn with_diagnostics(message: impl std::fmt::Display, diags: &[Diagnostic]) -> String {
    let mut text = message.to_string();
    for d in diags {
        text.push_str(&format!("\n  {d}"));
    }
    text
}

pub fn run(dir: &Path, command: &SolutionCommand, out: &mut dyn Write) -> Result<i32, String> {
    let w = |e: std::io::Error| e.to_string();
    match command {
        SolutionCommand::Export(args) => {
            let version = match &args.version {
                Some(v) => Some(SemVer::parse(v).ok_or_else(|| {
                    format!("--version {v:?} is not a semantic version (e.g. 1.2.0)")
                })?),
                None => None,
            };
            let signing_key = match &args.sign_key_from_env {
                Some(var) => Some(sign::key_from_env(var).map_err(|e| e.to_string())?),
                None => None,
            };
            let request = ExportRequest {
                name: args.name.clone(),
                managed: args.managed,
                version,
                signing_key,
            };
            let src = WorkTree {
                dir: dir.to_path_buf(),
            };
            let exported = export::export(dir, &src, &request).map_err(|e| match e {
                ExportError::Invalid(diags) => with_diagnostics(
                    "check for issues failed: the repository does not validate; nothing was exported",
                    &diags,
                ),
                other => other.to_string(),
            })?;
            let path = from_cwd(&args.file);
            std::fs::write(&path, &exported.bytes)
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            let m = &exported.manifest;
            writeln!(
                out,
                "exported solution {}{}: {} map(s), {} alert rule(s) → {}",
                describe(m),
                if args.sign_key_from_env.is_some() {
                    ", signed"
                } else {
                    ""
                },
                m.spec.components.maps.len(),
                m.spec.components.alerts.len(),
                args.file.display()
            )
            .map_err(w)?;
            Ok(exit::OK)
        }
        SolutionCommand::Import {
            file,
            dry_run,
            force,
        } => {
            let path = from_cwd(file);
            let limits = package::Limits::default();
            // Never more than one byte past the limit in memory: `read` refuses that.
            let mut bytes = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(limits.max_total_bytes + 1).read_to_end(&mut bytes))
                .map_err(|e| format!("reading {}: {e}", file.display()))?;
            let package = package::read(&bytes, limits)
                .map_err(|e| format!("{}: {e}; nothing was written", file.display()))?;
            let files = changes::current_files(dir).map_err(|e| e.to_string())?;
            let options = ImportOptions {
                force: *force,
                now: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0),
            };
            let plan = import::plan(&files, &package, &options).map_err(|e| match e {
                ImportError::Invalid(ref diags) => with_diagnostics(&e, diags),
                other => format!("{other}; nothing was written"),
            })?;
            let m = &plan.manifest;
            writeln!(
                out,
                "Import solution {}{}{}",
                describe(m),
                plan.replaces
                    .as_ref()
                    .map(|v| format!(", replacing {v}"))
                    .unwrap_or_default(),
                if plan.verified {
                    "; signature verified"
                } else {
                    ""
                },
            )
            .map_err(w)?;
            render_changes(out, &plan.changes).map_err(w)?;
            if !plan.maps.is_empty() {
                writeln!(out, "\nMaps in force after the import:").map_err(w)?;
                for (name, v) in &plan.maps {
                    writeln!(out, "  {name}: {}", v.in_force).map_err(w)?;
                }
            }
            if *dry_run {
                writeln!(out, "\nDry run: nothing was written.").map_err(w)?;
            } else {
                changes::apply(dir, &plan.changes).map_err(|e| e.to_string())?;
                writeln!(
                    out,
                    "\nImported: {} file(s) written. Commit them to apply the solution; the next reconcile drives its maps.",
                    plan.changes.len()
                )
                .map_err(w)?;
            }
            Ok(exit::OK)
        }
        SolutionCommand::List { output } => {
            let (_, cfg) = super::load_work_tree(dir)?;
            let list = inventory::summaries(&cfg);
            if *output == ListOutput::Json {
                let doc = serde_json::json!({ "solutions": list });
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
                )
                .map_err(w)?;
                return Ok(exit::OK);
            }
            if list.is_empty() {
                writeln!(out, "No solutions.").map_err(w)?;
            }
            for s in &list {
                writeln!(
                    out,
                    "{} {} by {} ({}){}",
                    s.name,
                    s.version,
                    s.publisher,
                    if s.managed { "managed" } else { "unmanaged" },
                    s.installed_at
                        .as_ref()
                        .map(|t| format!(", installed {t}"))
                        .unwrap_or_default()
                )
                .map_err(w)?;
                for (map, st) in &s.maps {
                    let state = match (&st.in_force, &st.defined_by) {
                        (true, _) => "in force".to_string(),
                        (false, Some(by)) => format!("not in force: {by} is"),
                        (false, None) => "not defined".to_string(),
                    };
                    writeln!(out, "  map {map}: {state}").map_err(w)?;
                }
                for alert in &s.alerts {
                    writeln!(out, "  alert {alert}").map_err(w)?;
                }
            }
            Ok(exit::OK)
        }
        SolutionCommand::Uninstall { name, dry_run } => {
            let files = changes::current_files(dir).map_err(|e| e.to_string())?;
            let plan = uninstall::plan(&files, name).map_err(|e| match e {
                UninstallError::Invalid(ref diags) => with_diagnostics(&e, diags),
                other => other.to_string(),
            })?;
            let m = &plan.manifest;
            writeln!(out, "Uninstall solution {}", describe(m)).map_err(w)?;
            render_changes(out, &plan.changes).map_err(w)?;
            for map in &plan.maps_removed {
                writeln!(
                    out,
                    "  map {map} leaves the config: the next reconcile stops it and removes its capture"
                )
                .map_err(w)?;
            }
            for (map, origin) in &plan.maps_switched {
                writeln!(out, "  map {map}: {origin} comes into force").map_err(w)?;
            }
            for alert in &plan.alerts_removed {
                writeln!(out, "  alert rule {alert} leaves the config").map_err(w)?;
            }
            if *dry_run {
                writeln!(out, "\nDry run: nothing was removed.").map_err(w)?;
            } else {
                changes::apply(dir, &plan.changes).map_err(|e| e.to_string())?;
                writeln!(
                    out,
                    "\nUninstalled: {} file(s) removed. Commit the removal; the next reconcile applies it.",
                    plan.changes.len()
                )
                .map_err(w)?;
            }
            Ok(exit::OK)
        }
        SolutionCommand::PublicKey { key_from_env } => {
            let key = sign::key_from_env(key_from_env).map_err(|e| e.to_string())?;
            writeln!(out, "{}", sign::public_key_hex(&key)).map_err(w)?;
            Ok(exit::OK)
        }
    }
}

/// `finance-core 1.3.0 by contoso (managed)`.
fn describe(m: &SolutionManifest) -> String {
    format!(
        "{} {} by {} ({})",
        m.metadata.name,
        m.spec.version,
        m.spec.publisher.name,
        if m.spec.managed {
            "managed"
        } else {
            "unmanaged"
        }
    )
}

fn render_changes(out: &mut dyn Write, changes: &[FileChange]) -> std::io::Result<()> {
    if changes.is_empty() {
        return writeln!(out, "  no file changes");
    }
    for c in changes {
        let (sign, word) = match c.kind {
            ChangeKind::Added => ("+", "added"),
            ChangeKind::Changed => ("~", "changed"),
            ChangeKind::Overwritten => ("!", "overwritten"),
            ChangeKind::Removed => ("-", "removed"),
        };
        writeln!(out, "  {sign} {word} {}", c.path)?;
    }
    for c in changes {
        writeln!(out)?;
        write!(out, "{}", c.diff)?;
    }
    Ok(())
}
