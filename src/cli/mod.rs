//! The command line: clap definitions and dispatch to the library. Rendering of plans and
//! diagnostics as text, JSON or GitHub annotations lives in `render`.

pub mod render;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigSource, GitRevision, WorkTree};
use crate::plan;

/// Exit codes of every command.
pub mod exit {
    pub const OK: i32 = 0;
    pub const INVALID: i32 = 1;
    pub const CHANGES: i32 = 2;
}

#[derive(Parser, Debug)]
#[command(
    name = "dualwrite",
    version,
    about = "Keeps tables in two SQL databases in sync, the GitOps way"
)]
pub struct Cli {
    /// Run as if started in DIR (the directory holding dualwrite.yaml).
    #[arg(short = 'C', global = true, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Schema and semantic checks of the whole repository.
    Validate(SourceArgs),
    /// Apply the plan once (or only print it with --dry-run).
    Reconcile(ReconcileArgs),
    /// Write the JSON Schemas to schemas/.
    Schema {
        /// Where to write them.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// Read the config from this git commit instead of the work tree.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 2 when the config is valid and there are changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Github,
}

/// Runs the command line and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(code) => code,
        Err(message) => {
            let _ = out.flush();
            eprintln!("dualwrite: {message}");
            exit::INVALID
        }
    }
}

fn source(dir: &Path, args: &SourceArgs) -> Box<dyn ConfigSource> {
    match &args.revision {
        Some(rev) => Box::new(GitRevision {
            dir: dir.to_path_buf(),
            revision: rev.clone(),
        }),
        None => Box::new(WorkTree {
            dir: dir.to_path_buf(),
        }),
    }
}

/// Runs a parsed command, writing what the user sees to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<i32, String> {
    let w = |e: std::io::Error| e.to_string();
    match &cli.command {
        Command::Validate(args) => {
            let src = source(&cli.dir, args);
            match config::load(src.as_ref()) {
                Ok(cfg) => {
                    render::valid(out, args.output, &cfg).map_err(w)?;
                    Ok(exit::OK)
                }
                Err(diags) => {
                    render::diagnostics(out, args.output, &diags).map_err(w)?;
                    Ok(exit::INVALID)
                }
            }
        }
        Command::Reconcile(args) => {
            let src = source(&cli.dir, &args.source);
            let cfg = match config::load(src.as_ref()) {
                Ok(cfg) => cfg,
                Err(diags) => {
                    render::diagnostics(out, args.source.output, &diags).map_err(w)?;
                    return Ok(exit::INVALID);
                }
            };
            let actual = plan::observe(&cli.dir, &cfg).map_err(|e| e.to_string())?;
            let plan = plan::Plan::new(&cfg, &actual);
            if args.dry_run {
                render::plan(out, args.source.output, &plan, &actual.source).map_err(w)?;
                return Ok(if args.detailed_exitcode && plan.has_changes() {
                    exit::CHANGES
                } else {
                    exit::OK
                });
            }
            Err("applying the plan is not available yet; run `dualwrite reconcile --dry-run` to see it".into())
        }
        Command::Schema { out: dir } => {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                cli.dir.join(dir)
            };
            for file in config::schema::write_schemas(&dir).map_err(w)? {
                writeln!(out, "wrote {}", dir.join(file).display()).map_err(w)?;
            }
            Ok(exit::OK)
        }
    }
}
