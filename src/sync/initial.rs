//! The initial sync: copies a table page by page in key order (bounded memory), writing each
//! page as one batch. A reader task pages the table ahead of the writer through a channel
//! of depth `READ_AHEAD`, so reading the next page overlaps converting and writing the
//! current one; memory stays bounded to a few pages.
//!
//! Progress (the last key written and the counts) is saved at most once per
//! [`SAVE_EVERY`], always at the end and before returning an error; the key saved only ever
//! covers committed batches. A killed run resumes from the last saved key and rewrites at
//! most about a second of rows (idempotent upserts).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Journal, Outcome, Sides, SyncError, prepare, write_isolating};
use crate::endpoint::{Endpoint, EndpointError, Row, TableName, Value, key_from_json, key_to_json};
use crate::sync::Flow;

/// How often progress is saved to the state store during a copy.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Pages read ahead of the writer (besides the one being read and the one being written).
const READ_AHEAD: usize = 1;

/// Copies every row of one way. With `only_missing`, rows whose key already exists on the
/// target are left alone (the target side is primary for them). Rows whose key (as stored
/// with errors, `{"column": value}`) is in `skip` are read and counted but not written.
pub async fn copy(
    sides: &Sides<'_>,
    flow: &Flow,
    batch_size: usize,
    only_missing: bool,
    skip: &HashSet<String>,
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
    let (pages, reader) = spawn_reader(sides, flow, after, batch_size);
    let filter = Filter { only_missing, skip };
    let result = copy_pages(sides, flow, &filter, journal, &way, pages, &progress).await;
    reader.abort();
    progress.finish_and_clear();
    // The in-memory resume key covers only committed batches: always safe to save, and
    // saving it on an error keeps the progress made since the last periodic save.
    let saved = journal.save();
    result?;
    saved?;
    Ok(())
}

type Page = Result<Vec<Row>, EndpointError>;

/// Starts the task that reads pages after `after` in key order; it ends after sending an
/// empty page or an error, or when the receiver is dropped.
fn spawn_reader(
    sides: &Sides<'_>,
    flow: &Flow,
    mut after: Option<Vec<Value>>,
    batch_size: usize,
) -> (
    tokio::sync::mpsc::Receiver<Page>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Page>(READ_AHEAD);
    let from: Arc<dyn Endpoint> = sides.from.clone();
    let table: TableName = sides.from_table.clone();
    let columns = flow.read_columns.clone();
    let key_columns = flow.from_key.clone();
    let key_len = key_columns.len();
    let handle = tokio::spawn(async move {
        loop {
            let page = from
                .read_snapshot(&table, &columns, &key_columns, after.as_deref(), batch_size)
                .await;
            let last = match &page {
                Ok(rows) => rows.last().map(|r| r[..key_len].to_vec()),
                Err(_) => None,
            };
            if tx.send(page).await.is_err() {
                return;
            }
            match last {
                Some(key) => after = Some(key),
                None => return,
            }
        }
    });
    (rx, handle)
}

/// Which rows of a page a copy leaves alone.
struct Filter<'a> {
    only_missing: bool,
    skip: &'a HashSet<String>,
}

async fn copy_pages(
    sides: &Sides<'_>,
    flow: &Flow,
    filter: &Filter<'_>,
    journal: &mut Journal<'_>,
    way: &str,
    mut pages: tokio::sync::mpsc::Receiver<Page>,
    progress: &ProgressBar,
) -> Result<(), SyncError> {
    let mut last_save = Instant::now();
    loop {
        if crate::shutdown::requested() {
            return Err(SyncError::Stopped);
        }
        let Some(page) = pages.recv().await else {
            break;
        };
        let page = page?;
        let Some(last) = page.last() else { break };
        let last_key = flow.key_of(last).to_vec();
        let read = page.len() as u64;
        let mut page = page;
        if !filter.skip.is_empty() {
            page.retain(|r| {
                !filter
                    .skip
                    .contains(&super::transform::key_json(&flow.from_key, flow.key_of(r)))
            });
        }
        let rows = if filter.only_missing && !page.is_empty() {
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
        // Committed: the resume key may now point at this page's last row.
        let errors = journal.settle(flow, "InitialSync", &out)?;
        let run = journal
            .runtime
            .initial_sync
            .as_mut()
            .expect("initial sync run started");
        let counts = run.directions.entry(way.to_string()).or_default();
        counts.read += read;
        counts.written += out.written.len() as u64;
        counts.errors += errors;
        run.resume_after
            .insert(way.to_string(), key_to_json(&last_key));
        if last_save.elapsed() >= SAVE_EVERY {
            journal.save()?;
            last_save = Instant::now();
        }
        progress.inc(read);
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
