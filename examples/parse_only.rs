//! Benchmark baseline for `benches/dry_run.sh`: "parsing the same YAML alone".
//!
//! Reads the config files of a repository exactly as dualwrite does (its own loader:
//! dualwrite.yaml, then every .yaml/.yml file under maps/, alerts/ and requests/, sorted) and
//! parses each file's documents into `serde_json::Value` with serde-saphyr. No schema, no
//! positions, no checks, no plan.
//!
//!     cargo run --release --example parse_only -- REPO_DIR
//!
//! (This file sits in examples/ only because that is where Cargo looks for examples; the
//! config loader ignores it.)

use dualwrite::config::{ConfigSource, WorkTree};

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let files = WorkTree { dir: root.into() }.files().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let mut documents = 0usize;
    let mut values = Vec::with_capacity(files.len());
    for file in &files {
        match serde_saphyr::from_multiple::<serde_json::Value>(&file.text) {
            Ok(docs) => {
                documents += docs.len();
                values.push(docs);
            }
            Err(e) => {
                eprintln!("{}: {e}", file.path);
                std::process::exit(1);
            }
        }
    }
    println!("parsed {} file(s), {documents} document(s)", files.len());
    std::hint::black_box(values);
}
