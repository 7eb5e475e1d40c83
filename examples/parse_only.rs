//! Benchmark baseline for `benches/dry_run.sh`: "parsing the same YAML alone".
//!
//! Reads the config files of a repository the way dualwrite does (dualwrite.yaml, then every
//! .yaml/.yml file under maps/, alerts/ and requests/, sorted by path, each read into a String)
//! and parses each file's documents into `serde_json::Value` with serde-saphyr. No schema, no
//! positions, no checks, no plan.
//!
//!     cargo run --release --example parse_only -- REPO_DIR
//!
//! (This file sits in examples/ only because that is where Cargo looks for examples; the
//! config loader ignores it.)

use std::path::Path;

fn walk(root: &Path, rel: &str, out: &mut Vec<String>) -> std::io::Result<()> {
    let dir = root.join(rel);
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let child = format!("{rel}/{name}");
        if entry.file_type()?.is_dir() {
            walk(root, &child, out)?;
        } else if child.ends_with(".yaml") || child.ends_with(".yml") {
            out.push(child);
        }
    }
    Ok(())
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let root = Path::new(&root);
    let mut resources = Vec::new();
    for d in ["maps", "alerts", "requests"] {
        walk(root, d, &mut resources).expect("cannot list the repository");
    }
    resources.sort();
    let mut paths = Vec::with_capacity(resources.len() + 1);
    if root.join("dualwrite.yaml").is_file() {
        paths.push("dualwrite.yaml".to_string());
    }
    paths.extend(resources);
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let text = std::fs::read_to_string(root.join(&path)).expect("cannot read a file");
        files.push((path, text));
    }
    let mut documents = 0usize;
    let mut values = Vec::with_capacity(files.len());
    for (path, text) in &files {
        match serde_saphyr::from_multiple::<serde_json::Value>(text) {
            Ok(docs) => {
                documents += docs.len();
                values.push(docs);
            }
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("parsed {} file(s), {documents} document(s)", files.len());
    std::hint::black_box(values);
}
