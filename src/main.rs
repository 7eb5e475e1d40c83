//! The `dualwrite` binary: parse arguments, run the command, exit with its code; and the
//! memory allocator it runs on.
//!
//! jemalloc, with one arena: an initial sync allocates each page's values on the thread that
//! reads it and frees them on the thread that writes it, which glibc's per-thread arenas
//! answer with fragmentation (peak RSS over 100 MB on MariaDB → PostgreSQL with 26 MB
//! live) and jemalloc with less CPU per value (about 30% less user time on a 1M-row copy).
//! One arena keeps the peak near what is live; per-thread caches keep the speed
//! (BENCHMARKS.md, "Initial sync at the default size").

fn main() {
    std::process::exit(dualwrite::cli::main());
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main` (its `malloc_conf`, under the prefix
/// tikv-jemalloc-sys gives its symbols). `_RJEM_MALLOC_CONF` in the environment overrides.
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: Option<&'static std::ffi::c_char> = Some(unsafe { &*c"narenas:1".as_ptr() });
