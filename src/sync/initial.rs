//! The initial sync: copies a table page by page in key order (bounded memory), writing each
//! page as one batch. Pages are sized for the copy, not by the live `batchSize`
//! ([`PageSize`]: `initialSync.batchSize`, or automatic by rows, bytes and time). A reader
//! task pages the table ahead of the writer through a channel of depth `READ_AHEAD`, and
//! [`IN_FLIGHT`] page writes run at once (the next page converted and loaded while the one
//! before finishes in the target), so reading, converting and writing overlap; memory stays
//! bounded to a few pages.
//!
//! When both sides are of one engine that can take the values as stored
//! ([`Flow::copy_values`]: renamed and reordered columns, constants and `valueMap`s over
//! integers or text included), rows never become typed values:
//!
//! - SQLite → SQLite copies inside the target database ([`Endpoint::copy_page`]: `ATTACH` +
//!   `INSERT … SELECT`, a value map as a `CASE`). Those pages are [`IN_DATABASE_PAGE`] rows
//!   or `batchSize`, whichever is more: with nothing materialized in dualwrite the commit
//!   (an fsync) per page dominates, and memory stays bounded whatever the size. Into an
//!   empty table without triggers the endpoint may take the whole table as its first page,
//!   in one statement (see `endpoint::sqlite`). Values are copied
//!   as SQLite stores them: one not in its column's canonical form (text in an INTEGER
//!   column, say) arrives as stored instead of being normalized or refused as the typed path
//!   would.
//! - PostgreSQL → PostgreSQL moves pages in the engine's binary form
//!   ([`Endpoint::export_page`] on the source, the mapping in its `SELECT`;
//!   [`Endpoint::import_page`] on the target), the next page exported while one is loaded.
//!
//! A page either way refuses is written again through typed values in `batchSize` pages, so
//! every good record lands and the bad ones become errors exactly as on the typed path.
//! Re-runs that skip keys (open errors) and maps with open errors to supersede take the
//! typed path.
//!
//! Progress (the last key written and the counts) is saved at most once per
//! [`SAVE_EVERY`], always at the end and before returning an error; the key saved only ever
//! covers committed batches. A killed run resumes from the last saved key and rewrites at
//! most about a second of rows (idempotent upserts). Each save also tells the pass's
//! [`super::ProgressObserver`]; the source's row estimate (`Endpoint::estimate_rows`) is
//! taken once per direction when its copy begins, for the total, percentage and ETA of the
//! terminal bar (a plain log line every [`PLAIN_EVERY`] when stderr is not a terminal).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::status::thousands;

use super::{Journal, Outcome, Sides, SyncError, prepare, write_isolating};
use crate::endpoint::{
    CopiedPage, Endpoint, EndpointError, ExportedPage, Row, TableCopy, Value, WriteErrorClass,
    key_from_json, key_to_json,
};
use crate::sync::Flow;

/// How often progress is saved to the state store during a copy.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// How often a copy logs a progress line when stderr is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// Pages read ahead of the writer (besides the one being read and the one being written).
const READ_AHEAD: usize = 1;

/// The least rows per page of an in-database copy (see the module header).
pub const IN_DATABASE_PAGE: usize = 50_000;

/// How the initial sync sizes its write transactions (SPEC §1): `initialSync.batchSize`
/// when set, else automatic. `batchSize` is for live sync and catch-up (the field's 1,000
/// records per transaction) and would make a copy pay a commit and a statement per 1,000
/// rows. Automatic: pages start at [`AUTO_START`] rows; a page written in under
/// [`GROW_UNDER`] doubles the next (up to [`AUTO_MAX`]), one that took over [`SHRINK_OVER`]
/// halves it (down to [`AUTO_MIN`]); and whatever the rows, a transaction holds at most
/// [`MAX_TRANSACTION_BYTES`] of values (wider pages are written in several). A refused page
/// is split until each bad record stands alone at any size, so the counts and errors are the
/// same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    Fixed(usize),
    Auto,
}

pub const AUTO_START: usize = 10_000;
pub const AUTO_MIN: usize = 1_000;
pub const AUTO_MAX: usize = 50_000;
pub const GROW_UNDER: Duration = Duration::from_millis(500);
pub const SHRINK_OVER: Duration = Duration::from_secs(2);
pub const MAX_TRANSACTION_BYTES: usize = 8 << 20;

/// The page size the reader uses next, moved by the writer when automatic.
#[derive(Clone, Debug)]
struct Sizer {
    rows: Arc<std::sync::atomic::AtomicUsize>,
    adapts: bool,
}

impl Sizer {
    fn new(size: PageSize) -> Sizer {
        let (rows, adapts) = match size {
            PageSize::Fixed(n) => (n.max(1), false),
            PageSize::Auto => (AUTO_START, true),
        };
        Sizer {
            rows: Arc::new(rows.into()),
            adapts,
        }
    }

    fn rows(&self) -> usize {
        self.rows.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A page of `bytes` was written in `took`.
    fn written(&self, bytes: usize, took: Duration) {
        if !self.adapts {
            return;
        }
        let now = self.rows();
        let next = if took > SHRINK_OVER {
            (now / 2).max(AUTO_MIN)
        } else if took < GROW_UNDER && bytes < MAX_TRANSACTION_BYTES / 2 {
            (now * 2).min(AUTO_MAX)
        } else {
            now
        };
        self.rows.store(next, std::sync::atomic::Ordering::Relaxed);
    }
}

/// About how many bytes a row takes in memory (what bounds a page: a few pages are in
/// flight at once, read ahead, converted and written).
fn row_bytes(row: &Row) -> usize {
    let heap: usize = row
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
            _ => 0,
        })
        .sum();
    heap + std::mem::size_of_val(row.as_slice()) + std::mem::size_of::<Row>()
}

/// `page` cut into runs of at most [`MAX_TRANSACTION_BYTES`], each with its size.
fn by_bytes(page: Vec<Row>) -> Vec<(Vec<Row>, usize)> {
    let total: usize = page.iter().map(row_bytes).sum();
    if total <= MAX_TRANSACTION_BYTES {
        return vec![(page, total)];
    }
    let mut runs = Vec::new();
    let (mut run, mut size) = (Vec::new(), 0);
    for row in page {
        let bytes = row_bytes(&row);
        if !run.is_empty() && size + bytes > MAX_TRANSACTION_BYTES {
            runs.push((std::mem::take(&mut run), size));
            size = 0;
        }
        size += bytes;
        run.push(row);
    }
    if !run.is_empty() {
        runs.push((run, size));
    }
    runs
}

/// Copies every row of one way. With `only_missing`, rows whose key already exists on the
/// target are left alone (the target side is primary for them). Rows whose key (as stored
/// with errors, `{"column": value}`) is in `skip` are read and counted but not written.
pub async fn copy(
    sides: &Sides<'_>,
    flow: &Flow,
    size: PageSize,
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
    if !run.estimated_rows.contains_key(&way)
        && let Some(n) = sides.from.estimate_rows(sides.from_table).await
    {
        run.estimated_rows.insert(way.clone(), n);
    }
    let done = run.directions.get(&way).map_or(0, |c| c.read);
    let mut progress = Meter::new(
        &journal.map,
        &way,
        run.estimated_rows.get(&way).copied(),
        done,
    );
    let filter = Filter { only_missing, skip };
    let sizer = Sizer::new(size);
    let pages = Pages {
        sides,
        flow,
        filter: &filter,
        way: &way,
        batch_size: sizer.rows(),
    };
    let result = match in_database_copy(sides, flow, &filter, journal) {
        Err(e) => Err(e),
        Ok(Some(copy)) if copy.origin.in_database() => {
            pages
                .copy_in_database(&copy, after, journal, &mut progress)
                .await
        }
        Ok(Some(copy)) => {
            pages
                .copy_exported(&copy, after, journal, &mut progress, &sizer)
                .await
        }
        Ok(None) => {
            let reader = spawn_reader(sides, flow, after, sizer.clone());
            pages
                .copy_typed(reader, journal, &mut progress, &sizer)
                .await
        }
    };
    progress.bar.finish_and_clear();
    // The in-memory resume key covers only committed batches: always safe to save, and
    // saving it on an error keeps the progress made since the last periodic save.
    let saved = journal.save();
    result?;
    saved?;
    Ok(())
}

type Page = Result<Vec<Row>, EndpointError>;

/// A task fetching pages ahead of the writer; aborted when dropped.
struct Ahead<P> {
    pages: tokio::sync::mpsc::Receiver<P>,
    task: tokio::task::JoinHandle<()>,
}

impl<P> Drop for Ahead<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the task that fetches the pages after `after` in key order, [`READ_AHEAD`] ahead
/// of the writer: `fetch` gives a page and its last key. It ends after a page without one
/// (empty, or an error), or when the receiver is dropped.
fn spawn_pages<P, F>(mut after: Option<Vec<Value>>, fetch: F) -> Ahead<P>
where
    P: Send + 'static,
    F: Fn(Option<Vec<Value>>) -> crate::endpoint::BoxFuture<'static, (P, Option<Vec<Value>>)>
        + Send
        + 'static,
{
    let (tx, pages) = tokio::sync::mpsc::channel::<P>(READ_AHEAD);
    let task = tokio::spawn(async move {
        loop {
            let (page, last) = fetch(after.take()).await;
            if tx.send(page).await.is_err() {
                return;
            }
            match last {
                Some(key) => after = Some(key),
                None => return,
            }
        }
    });
    Ahead { pages, task }
}

/// Reads the pages after `after` through typed values ([`Endpoint::read_snapshot`]).
fn spawn_reader(
    sides: &Sides<'_>,
    flow: &Flow,
    after: Option<Vec<Value>>,
    sizer: Sizer,
) -> Ahead<Page> {
    let from: Arc<dyn Endpoint> = sides.from.clone();
    let table = Arc::new(sides.from_table.clone());
    let columns = Arc::new(flow.read_columns.clone());
    let key_columns = Arc::new(flow.from_key.clone());
    spawn_pages(after, move |after| {
        let (from, table, columns, key_columns) = (
            from.clone(),
            table.clone(),
            columns.clone(),
            key_columns.clone(),
        );
        let limit = sizer.rows();
        Box::pin(async move {
            let page = from
                .read_snapshot(&table, &columns, &key_columns, after.as_deref(), limit)
                .await;
            let last = match &page {
                Ok(rows) => rows.last().map(|r| r[..key_columns.len()].to_vec()),
                Err(_) => None,
            };
            (page, last)
        })
    })
}

type Exported = Result<ExportedPage, EndpointError>;

/// Exports the pages of `copy` after `after` from the source ([`Endpoint::export_page`]).
fn spawn_exporter(
    sides: &Sides<'_>,
    copy: &TableCopy,
    after: Option<Vec<Value>>,
    sizer: Sizer,
) -> Ahead<Exported> {
    let from: Arc<dyn Endpoint> = sides.from.clone();
    let copy = Arc::new(copy.clone());
    spawn_pages(after, move |after| {
        let (from, copy) = (from.clone(), copy.clone());
        let limit = sizer.rows();
        Box::pin(async move {
            let page = from.export_page(&copy, after.as_deref(), limit).await;
            let last = page.as_ref().ok().and_then(|p| p.last_key.clone());
            (page, last)
        })
    })
}

/// Which rows of a page a copy leaves alone.
struct Filter<'a> {
    only_missing: bool,
    skip: &'a HashSet<String>,
}

/// The in-database copy of this way, when both endpoints can do it and nothing needs Rust:
/// no keys to skip, no open errors to supersede, values taken as stored.
fn in_database_copy(
    sides: &Sides<'_>,
    flow: &Flow,
    filter: &Filter<'_>,
    journal: &Journal<'_>,
) -> Result<Option<TableCopy>, SyncError> {
    let Some(origin) = sides.from.copy_origin() else {
        return Ok(None);
    };
    if !filter.skip.is_empty() {
        return Ok(None);
    }
    let Some(values) = flow.copy_values(sides.from_info, sides.to_info) else {
        return Ok(None);
    };
    let copy = TableCopy {
        origin,
        from_table: sides.from_table.clone(),
        from_info: sides.from_info.clone(),
        to_info: sides.to_info.clone(),
        from_key: flow.from_key.clone(),
        from_key_kinds: super::key_kinds(flow, sides.from_info),
        to_table: sides.to_table.clone(),
        to_columns: flow.write_columns.clone(),
        to_key: flow.to_key.clone(),
        values,
        only_missing: filter.only_missing,
    };
    // Written keys resolve open errors (`Journal::settle`), which needs them one by one.
    if !sides.to.can_copy(&copy) || journal.store.has_open_errors(&journal.map)? {
        return Ok(None);
    }
    Ok(Some(copy))
}

/// What every page of one way's copy shares.
struct Pages<'s> {
    sides: &'s Sides<'s>,
    flow: &'s Flow,
    filter: &'s Filter<'s>,
    way: &'s str,
    batch_size: usize,
}

impl Pages<'_> {
    /// Copies page after page inside the target database; a page it refuses goes through
    /// typed values ([`Pages::typed_span`]).
    async fn copy_in_database(
        &self,
        copy: &TableCopy,
        mut after: Option<Vec<Value>>,
        journal: &mut Journal<'_>,
        progress: &mut Meter,
    ) -> Result<(), SyncError> {
        let limit = self.batch_size.max(IN_DATABASE_PAGE);
        loop {
            if crate::shutdown::requested() {
                return Err(SyncError::Stopped);
            }
            let copied = self
                .sides
                .to
                .copy_page(copy, after.as_deref(), limit, self.sides.fence)
                .await;
            let read = match copied {
                Ok(CopiedPage { last_key: None, .. }) => break,
                Ok(CopiedPage {
                    read,
                    written,
                    last_key: Some(last_key),
                }) => {
                    // Committed: the resume key may now point at this page's last row.
                    record(journal, self.way, read, written, 0, &last_key);
                    after = Some(last_key);
                    read
                }
                Err(e) if e.class == WriteErrorClass::Fenced => {
                    return Err(super::Halted::Fenced(e).into());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "in-database copy refused a page; writing it through typed values");
                    match self.typed_span(&mut after, limit, journal).await? {
                        0 => break,
                        read => read,
                    }
                }
            };
            progress.advance(journal, read)?;
        }
        Ok(())
    }

    /// Copies the pages the source exports in the engine's own binary form into the target
    /// as they are ([`Endpoint::export_page`], [`Endpoint::import_page`]), the next page
    /// exported while the current one is written. A page that fails on either side (a value
    /// without a value-map entry, a record the target refuses) goes through typed values
    /// ([`Pages::typed_span`]), and exporting starts again after it.
    async fn copy_exported(
        &self,
        copy: &TableCopy,
        mut after: Option<Vec<Value>>,
        journal: &mut Journal<'_>,
        progress: &mut Meter,
        sizer: &Sizer,
    ) -> Result<(), SyncError> {
        let (sides, way) = (self.sides, self.way);
        'export: loop {
            let mut exporter = spawn_exporter(sides, copy, after.clone(), sizer.clone());
            loop {
                if crate::shutdown::requested() {
                    return Err(SyncError::Stopped);
                }
                let failed = match exporter.pages.recv().await {
                    None => break 'export,
                    Some(Ok(page)) if page.rows == 0 => break 'export,
                    Some(Ok(page)) => {
                        let started = Instant::now();
                        match sides.to.import_page(copy, &page, sides.fence).await {
                            Ok(written) => {
                                let bytes = page.bytes();
                                let last_key = page.last_key.expect("a page with rows has a key");
                                // Committed: the resume key may now point at its last row.
                                record(journal, way, page.rows, written, 0, &last_key);
                                after = Some(last_key);
                                progress.advance(journal, page.rows)?;
                                sizer.written(bytes, started.elapsed());
                                continue;
                            }
                            Err(e) if e.class == WriteErrorClass::Fenced => {
                                return Err(super::Halted::Fenced(e).into());
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "the target refused an exported page; writing it through typed values");
                                page.rows as usize
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "exporting a page failed; reading it through typed values");
                        sizer.rows()
                    }
                };
                drop(exporter);
                match self.typed_span(&mut after, failed, journal).await? {
                    0 => break 'export,
                    read => progress.advance(journal, read)?,
                }
                continue 'export;
            }
        }
        Ok(())
    }

    /// Writes the next `limit` rows after `after` through typed values, `batchSize` at a
    /// time, moving `after` along; returns the rows read (0: there were none).
    async fn typed_span(
        &self,
        after: &mut Option<Vec<Value>>,
        limit: usize,
        journal: &mut Journal<'_>,
    ) -> Result<u64, SyncError> {
        let (sides, flow) = (self.sides, self.flow);
        let mut read = 0;
        while read < limit as u64 {
            let want = self.batch_size.min(limit - read as usize);
            let page = sides
                .from
                .read_snapshot(
                    sides.from_table,
                    &flow.read_columns,
                    &flow.from_key,
                    after.as_deref(),
                    want,
                )
                .await
                .map_err(SyncError::Read)?;
            let Some(last) = page.last() else { break };
            *after = Some(flow.key_of(last).to_vec());
            read += page.len() as u64;
            let full = page.len() == want;
            write_page(sides, flow, self.filter, journal, self.way, page).await?;
            if !full {
                break;
            }
        }
        Ok(read)
    }
}

/// Adds a committed page to the run's counts and moves its resume key to `last_key`.
fn record(
    journal: &mut Journal<'_>,
    way: &str,
    read: u64,
    written: u64,
    errors: u64,
    last_key: &[Value],
) {
    let run = journal
        .runtime
        .initial_sync
        .as_mut()
        .expect("initial sync run started");
    let counts = run.directions.entry(way.to_string()).or_default();
    counts.read += read;
    counts.written += written;
    counts.errors += errors;
    run.resume_after
        .insert(way.to_string(), key_to_json(last_key));
}

/// Page writes of a typed copy in flight at once: one page is converted and loaded while the
/// one before it finishes in the target (each in its own transaction, on a connection of its
/// own where the engine keeps several; the fence is raised last, so they load at the same
/// time). Pages are recorded strictly in order, so the resume key only ever covers
/// committed pages (a later page committed before an earlier one is written again after a
/// crash: idempotent).
pub const IN_FLIGHT: usize = 2;

impl Pages<'_> {
    /// Writes the pages the reader sends through typed values, each cut to at most
    /// [`MAX_TRANSACTION_BYTES`] a transaction, [`IN_FLIGHT`] at once; tells `sizer` how
    /// long each took. On a failure (or a stop) the writes in flight finish first.
    async fn copy_typed(
        &self,
        mut reader: Ahead<Page>,
        journal: &mut Journal<'_>,
        progress: &mut Meter,
        sizer: &Sizer,
    ) -> Result<(), SyncError> {
        use futures_util::StreamExt;
        let Pages {
            sides,
            flow,
            filter,
            way,
            ..
        } = *self;
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let (mut ended, mut failed) = (false, None::<SyncError>);
        loop {
            if failed.is_none() && crate::shutdown::requested() {
                failed = Some(SyncError::Stopped);
            }
            tokio::select! {
                biased;
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    let done: Result<(Option<Written>, usize, Instant), SyncError> = done;
                    let recorded = match done {
                        _ if failed.is_some() => Ok(()),
                        Ok((None, ..)) => Ok(()),
                        Ok((Some(written), bytes, started)) => {
                            sizer.written(bytes, started.elapsed());
                            record_written(journal, flow, way, written)
                                .and_then(|read| progress.advance(journal, read))
                        }
                        Err(e) => Err(e),
                    };
                    if let Err(e) = recorded {
                        failed.get_or_insert(e);
                    }
                }
                page = reader.pages.recv(), if failed.is_none() && !ended && in_flight.len() < IN_FLIGHT => {
                    match page {
                        None => ended = true,
                        Some(Ok(page)) if page.is_empty() => ended = true,
                        Some(Ok(page)) => {
                            for (run, bytes) in by_bytes(page) {
                                let started = Instant::now();
                                in_flight.push_back(async move {
                                    let written = write_rows(sides, flow, filter, run).await?;
                                    Ok::<_, SyncError>((written, bytes, started))
                                });
                            }
                        }
                        Some(Err(e)) => failed = Some(SyncError::Read(e)),
                    }
                }
                else => break,
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// One page written through typed values, to record once every page before it is.
struct Written {
    read: u64,
    last_key: Vec<Value>,
    out: Outcome,
}

/// Writes one page read through typed values (leaving alone the rows `filter` says),
/// isolating refused records, then records it: errors, counts, resume key.
async fn write_page(
    sides: &Sides<'_>,
    flow: &Flow,
    filter: &Filter<'_>,
    journal: &mut Journal<'_>,
    way: &str,
    page: Vec<Row>,
) -> Result<(), SyncError> {
    if let Some(written) = write_rows(sides, flow, filter, page).await? {
        record_written(journal, flow, way, written)?;
    }
    Ok(())
}

/// Records a page [`write_rows`] wrote (its errors, counts and resume key); returns the rows
/// it read.
fn record_written(
    journal: &mut Journal<'_>,
    flow: &Flow,
    way: &str,
    written: Written,
) -> Result<u64, SyncError> {
    let errors = journal.settle(flow, crate::state::ErrorPhase::InitialSync, &written.out)?;
    let count = written.out.written.len() as u64;
    // Committed: the resume key may now point at this page's last row.
    record(journal, way, written.read, count, errors, &written.last_key);
    Ok(written.read)
}

/// Writes one page read through typed values (leaving alone the rows `filter` says),
/// isolating refused records; `None` for an empty page.
async fn write_rows(
    sides: &Sides<'_>,
    flow: &Flow,
    filter: &Filter<'_>,
    page: Vec<Row>,
) -> Result<Option<Written>, SyncError> {
    let Some(last) = page.last() else {
        return Ok(None);
    };
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
            .await
            .map_err(SyncError::Write)?;
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
    write_isolating(sides, flow, items, &mut out).await?;
    Ok(Some(Written {
        read,
        last_key,
        out,
    }))
}

/// A copy's progress: the terminal bar (or a plain log line every [`PLAIN_EVERY`]), and
/// the periodic save of the run, which tells the pass's observer.
struct Meter {
    bar: ProgressBar,
    terminal: bool,
    label: String,
    total: Option<u64>,
    started: Instant,
    /// Rows read before this process took the copy up (a resumed run).
    resumed_at: u64,
    last_save: Instant,
    last_line: Instant,
}

impl Meter {
    fn new(map: &str, way: &str, total: Option<u64>, done: u64) -> Meter {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = match total {
            Some(total) => ProgressBar::new(total.max(done)),
            None => ProgressBar::new_spinner(),
        };
        if !terminal {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let template = match total {
            Some(_) => {
                "{msg} [{bar:30}] {human_pos}/~{human_len} rows ({percent}%, {rate}, ETA {eta})"
            }
            None => "{spinner} {msg} {human_pos} rows ({rate})",
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{} rows/s", thousands(state.per_sec().round() as u64));
                    },
                )
                .progress_chars("=> "),
        );
        let label = format!("{map} initial sync {way}");
        bar.set_message(label.clone());
        bar.set_position(done);
        bar.reset_eta();
        let now = Instant::now();
        Meter {
            bar,
            terminal,
            label,
            total,
            started: now,
            resumed_at: done,
            last_save: now,
            last_line: now,
        }
    }

    /// `read` more rows are done (and committed): move the bar, save the run and tell the
    /// observer at most once per [`SAVE_EVERY`].
    fn advance(&mut self, journal: &mut Journal<'_>, read: u64) -> Result<(), SyncError> {
        self.bar.inc(read);
        if self.total.is_some_and(|t| self.bar.position() > t) {
            // The statistics were low: the total grows with what is found.
            self.bar.set_length(self.bar.position());
        }
        if self.last_save.elapsed() >= SAVE_EVERY {
            journal.save_progress()?;
            self.last_save = Instant::now();
        }
        if !self.terminal && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            // The service logs it; a command on a pipe (CI) prints it.
            if tracing::dispatcher::has_been_set() {
                tracing::info!("{}", self.line());
            } else {
                eprintln!("{}", self.line());
            }
        }
        Ok(())
    }

    /// `customers initial sync SourceToDestination: 120,000 of ~400,000 rows (30%),
    /// 11,800 rows/s, about 24s left`.
    fn line(&self) -> String {
        let done = self.bar.position();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            (done - self.resumed_at) as f64 / secs
        } else {
            0.0
        };
        let mut line = format!("{}: {} ", self.label, thousands(done));
        match self.total {
            Some(total) => {
                let percent = (done * 100).checked_div(total.max(1)).unwrap_or(0).min(99);
                line.push_str(&format!("of ~{} rows ({percent}%)", thousands(total)));
                if rate > 0.0 {
                    let left = total.saturating_sub(done) as f64 / rate;
                    line.push_str(&format!(
                        ", {} rows/s, about {}s left",
                        thousands(rate.round() as u64),
                        left.round() as u64
                    ));
                }
            }
            None => line.push_str(&format!("rows, {} rows/s", thousands(rate.round() as u64))),
        }
        line
    }
}
