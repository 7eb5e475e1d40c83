//! The initial sync: copies a table page by page in key order (bounded memory), writing each
//! page as one batch. Progress (the last key written and the counts) is saved at most once
//! per [`SAVE_EVERY`], always at the end and before returning an error; the key saved only
//! ever covers committed batches. A killed run resumes from the last saved key and rewrites
//! at most about a second of rows (idempotent upserts).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Journal, Outcome, Sides, SyncError, prepare, write_isolating};
use crate::endpoint::{Value, key_from_json, key_to_json};
use crate::sync::Flow;

/// How often progress is saved to the state store during a copy.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Copies every row of one way. With `only_missing`, rows whose key already exists on the
/// target are left alone (the target side is primary for them).
pub async fn copy(
    sides: &Sides<'_>,
    flow: &Flow,
    batch_size: usize,
    only_missing: bool,
    journal: &mut Journal<'_>,
) -> Result<(), SyncError> {
    let way = flow.way.name().to_string();
    let run = journal
        .runtime
        .initial_sync
        .as_mut()
        .expect("initial sync run started");
    let after: Option<Vec<Value>> = run
        .resume_after
        .get(&way)
        .and_then(|v| key_from_json(v, &super::key_kinds(flow, sides.from_info)).ok());
    let progress = progress_bar(&journal.map, &way);
    let result = copy_pages(
        sides,
        flow,
        batch_size,
        only_missing,
        journal,
        &way,
        after,
        &progress,
    )
    .await;
    progress.finish_and_clear();
    // The in-memory resume key covers only committed batches: always safe to save, and
    // saving it on an error keeps the progress made since the last periodic save.
    let saved = journal.save();
    result?;
    saved?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn copy_pages(
    sides: &Sides<'_>,
    flow: &Flow,
    batch_size: usize,
    only_missing: bool,
    journal: &mut Journal<'_>,
    way: &str,
    mut after: Option<Vec<Value>>,
    progress: &ProgressBar,
) -> Result<(), SyncError> {
    let way = way.to_string();
    let mut last_save = Instant::now();
    loop {
        let page = sides
            .from
            .read_snapshot(
                sides.from_table,
                &flow.read_columns,
                &flow.from_key,
                after.as_deref(),
                batch_size,
            )
            .await?;
        let Some(last) = page.last() else { break };
        let last_key = flow.key_of(last).to_vec();
        let read = page.len() as u64;
        let rows = if only_missing {
            let keys: Vec<Vec<Value>> = page.iter().map(|r| flow.key_of(r).to_vec()).collect();
            let present = sides
                .to
                .fetch_rows(sides.to_table, &flow.to_key, &flow.to_key, &keys)
                .await?;
            let present: std::collections::HashSet<String> = present
                .iter()
                .map(|r| crate::endpoint::key_string(r))
                .collect();
            page.into_iter()
                .filter(|r| !present.contains(&crate::endpoint::key_string(flow.key_of(r))))
                .collect()
        } else {
            page
        };
        let mut out = Outcome::default();
        let items = prepare(flow, sides.to_info, sides.to_table, rows, &mut out);
        write_isolating(sides.to.as_ref(), sides.to_table, flow, items, &mut out).await?;
        let errors = journal.settle(flow, "InitialSync", &out)?;
        let run = journal
            .runtime
            .initial_sync
            .as_mut()
            .expect("initial sync run started");
        let counts = run.directions.entry(way.clone()).or_default();
        counts.read += read;
        counts.written += out.written.len() as u64;
        counts.errors += errors;
        run.resume_after.insert(way.clone(), key_to_json(&last_key));
        if last_save.elapsed() >= SAVE_EVERY {
            journal.save()?;
            last_save = Instant::now();
        }
        progress.inc(read);
        after = Some(last_key);
    }
    Ok(())
}

fn progress_bar(map: &str, way: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} rows ({per_sec})")
            .expect("valid template"),
    );
    bar.set_message(format!("{map} initial sync {way}"));
    bar
}
