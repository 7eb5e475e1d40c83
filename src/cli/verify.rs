//! `dualwrite verify [MAP...]`: runs `crate::verify` for each map named (or every map),
//! claims a map's lease before a `--repair`, records the result (`status/verify/<map>.yaml`,
//! the activity log for a repair) and prints it as text or JSON. Exit 0 when every map is
//! equal, 2 when any differs, 1 when any could not be verified.

use std::io::Write;
use std::path::Path;

use crate::config::TableMap;
use crate::status::thousands;
use crate::verify::{self, VerifyResult};

use super::{ListOutput, exit, load_work_tree, require_map};

/// The version of `verify --output json`.
const FORMAT_VERSION: u32 = 1;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Maps to verify (every map when none is named).
    pub maps: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Text)]
    pub output: ListOutput,
    /// Write the differences in the map's direction (a bidirectional map's
    /// initialSync.primary way): upserts and deletes, logged in the map's activity log.
    #[arg(long)]
    pub repair: bool,
    /// How many differences to show with their values (all of them are counted).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

/// One map's verify: its result, or why there is none.
type Outcome = Result<VerifyResult, String>;

pub fn run(dir: &Path, args: &VerifyArgs, out: &mut dyn Write) -> Result<i32, String> {
    let (_, cfg) = load_work_tree(dir)?;
    let maps: Vec<&TableMap> = if args.maps.is_empty() {
        cfg.maps.iter().map(|m| &m.resource).collect()
    } else {
        args.maps
            .iter()
            .map(|name| require_map(&cfg, name))
            .collect::<Result<_, _>>()?
    };
    let store = crate::reconcile::open_store(dir, &cfg).map_err(|e| e.to_string())?;
    let claims = if args.repair {
        Some(
            crate::lease::Claims::start(dir, &cfg.project.resource, crate::lease::DEFAULT_TTL)
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let mut connections = crate::sync::link::Connections::new(dir, &cfg);
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for map in maps {
        let name = map.metadata.name.clone();
        let outcome: Outcome = (|| {
            let live = crate::lease::driven_elsewhere(store.as_ref(), &name)
                .map_err(|e| e.to_string())?
                .is_some();
            let repair = match &claims {
                Some(claims) => Some(claims.claim(&name, false).map_err(|e| e.to_string())?),
                None => None,
            };
            let options = verify::Options {
                limit: args.limit,
                repair,
                live,
                ..Default::default()
            };
            let result = runtime
                .block_on(verify::verify_map(&mut connections, map, &options))
                .map_err(|e| e.to_string())?;
            if let Some(repaired) = result.repaired.filter(|r| r.upserted + r.deleted > 0) {
                let message = format!(
                    "verify repaired {} row(s) ({}): {} upserted, {} deleted{}",
                    repaired.upserted + repaired.deleted,
                    result.direction,
                    repaired.upserted,
                    repaired.deleted,
                    match repaired.skipped {
                        0 => String::new(),
                        n => format!(", {n} left (cannot be transformed)"),
                    }
                );
                store
                    .log(&name, &crate::clock::now_secs(), "VerifyRepaired", &message)
                    .map_err(|e| e.to_string())?;
            }
            verify::write_status(dir, &result).map_err(|e| e.to_string())?;
            Ok(result)
        })();
        outcomes.push((name, outcome));
    }
    if let Some(claims) = claims {
        claims.finish();
    }
    render(out, args, &outcomes).map_err(|e| e.to_string())?;
    let code = if outcomes.iter().any(|(_, o)| o.is_err()) {
        exit::INVALID
    } else if outcomes.iter().any(|(_, o)| matches!(o, Ok(r) if !r.equal)) {
        exit::CHANGES
    } else {
        exit::OK
    };
    Ok(code)
}

fn render(
    out: &mut dyn Write,
    args: &VerifyArgs,
    outcomes: &[(String, Outcome)],
) -> std::io::Result<()> {
    if args.output == ListOutput::Json {
        let maps: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|(name, o)| match o {
                Ok(r) => serde_json::to_value(r).expect("serializes"),
                Err(e) => serde_json::json!({ "map": name, "error": e }),
            })
            .collect();
        let doc = serde_json::json!({ "formatVersion": FORMAT_VERSION, "maps": maps });
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
    }
    for (name, outcome) in outcomes {
        match outcome {
            Err(e) => {
                writeln!(out, "map {name}: {}", super::paint::bad("error"))?;
                eprintln!("dualwrite: map {name}: {e}");
            }
            Ok(r) => text(out, args, r)?,
        }
    }
    Ok(())
}

fn text(out: &mut dyn Write, args: &VerifyArgs, r: &VerifyResult) -> std::io::Result<()> {
    if r.equal {
        return writeln!(
            out,
            "map {} ({}): equal: {} source row(s), {} destination row(s)",
            r.map,
            r.direction,
            thousands(r.source_rows),
            thousands(r.destination_rows)
        );
    }
    let total = r.counts.total();
    writeln!(
        out,
        "map {} ({}): {} difference(s) in {} source row(s) and {} destination row(s)",
        r.map,
        r.direction,
        thousands(total),
        thousands(r.source_rows),
        thousands(r.destination_rows)
    )?;
    for d in &r.differences {
        write!(out, "  {:<9} {}", d.kind.name(), d.key)?;
        if let Some(expected) = &d.expected {
            write!(out, "  expected {expected}")?;
        }
        if let Some(found) = &d.found {
            write!(out, "  found {found}")?;
        }
        if let Some(reason) = &d.reason {
            write!(out, "  ({reason})")?;
        }
        writeln!(out)?;
    }
    let shown = r.differences.len() as u64;
    if shown < total {
        writeln!(
            out,
            "  … and {} more (--limit {})",
            thousands(total - shown),
            args.limit
        )?;
    }
    writeln!(
        out,
        "  {} missing, {} extra, {} different",
        r.counts.missing, r.counts.extra, r.counts.different
    )?;
    if let Some(repaired) = &r.repaired {
        writeln!(
            out,
            "  repaired: {} upserted, {} deleted{}",
            repaired.upserted,
            repaired.deleted,
            match repaired.skipped {
                0 => String::new(),
                n => format!(", {n} left (cannot be transformed)"),
            }
        )?;
    }
    Ok(())
}
