//! The package file: a zip holding `solution.yaml` (the manifest), an optional `solution.sig`
//! and the component files under `maps/` and `alerts/`. Owns the bytes on the way out
//! (deterministic: entries sorted, fixed timestamps and permissions, so the same input gives
//! the same bytes) and every check on the way in (size limits on declared and actual sizes,
//! paths that could escape, symlinks, the manifest's apiVersion, names, and the sha256 of every
//! file). What a package means for a repository is `import`'s business, not this file's.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use serde_json::Value;
use zip::write::SimpleFileOptions;

use crate::config::solutions::{MANIFEST_FILE, is_dns_label, sha256_hex};
use crate::config::{ApiVersion, SolutionManifest};

/// The signature entry: the hex ed25519 signature of the manifest's bytes.
pub const SIGNATURE_FILE: &str = "solution.sig";

/// Limits that keep a hostile package (a zip bomb) from exhausting memory or disk.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_entries: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 20_000,
            max_file_bytes: 4 * 1024 * 1024,
            max_total_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A package's contents, checked.
#[derive(Clone, Debug)]
pub struct Package {
    pub manifest: SolutionManifest,
    /// The manifest exactly as packaged: what the signature signs.
    pub manifest_bytes: Vec<u8>,
    /// The signature entry's text, if any.
    pub signature: Option<String>,
    /// Component path (`maps/x.yaml`) → its text.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("not a readable zip file: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("reading the package: {0}")]
    Io(#[from] std::io::Error),
    #[error("the package has {count} entries; at most {limit} are accepted")]
    TooManyEntries { count: usize, limit: usize },
    #[error("{path}: {size} bytes is more than the {limit} accepted per file")]
    FileTooLarge { path: String, size: u64, limit: u64 },
    #[error("the package is (or unpacks to) more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{path:?}: the path escapes the target folder (absolute, or with ..)")]
    UnsafePath { path: String },
    #[error("{path:?}: symbolic links are refused")]
    Symlink { path: String },
    #[error(
        "{path:?}: not a file a solution holds (solution.yaml, solution.sig, maps/<name>.yaml, alerts/<name>.yaml)"
    )]
    UnexpectedEntry { path: String },
    #[error("{path:?} appears twice in the package")]
    DuplicateEntry { path: String },
    #[error("{path}: not UTF-8 text")]
    NotText { path: String },
    #[error("the package has no {MANIFEST_FILE}: it is not a dualwrite solution")]
    NoManifest,
    #[error("{MANIFEST_FILE}: {0}")]
    Manifest(String),
    #[error(
        "{MANIFEST_FILE}: apiVersion {found:?} is not supported; this dualwrite reads dualwrite/v1"
    )]
    ApiVersion { found: String },
    #[error("{MANIFEST_FILE}: {what} {name:?} is not a lowercase DNS-1123 label")]
    BadName { what: &'static str, name: String },
    #[error("{MANIFEST_FILE} lists {path}, which is not in the package")]
    MissingFile { path: String },
    #[error("{path} is in the package but not listed in {MANIFEST_FILE}")]
    UnlistedFile { path: String },
    #[error("{path}: its sha256 does not match {MANIFEST_FILE}: the package was altered")]
    Tampered { path: String },
    #[error("{MANIFEST_FILE} names {kind} {name:?} as a component, but {path} is not listed")]
    MissingComponent {
        kind: &'static str,
        name: String,
        path: String,
    },
    #[error("writing the zip: {0}")]
    Write(String),
}

/// The package path of a component: `maps/<name>.yaml` or `alerts/<name>.yaml`.
pub fn component_path(folder: &str, name: &str) -> String {
    format!("{folder}/{name}.yaml")
}

fn options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644)
}

/// Writes a package: the manifest first, then the signature, then the components in path
/// order. The same arguments always give the same bytes.
pub fn write(
    manifest_bytes: &[u8],
    signature: Option<&str>,
    files: &BTreeMap<String, String>,
) -> Result<Vec<u8>, PackageError> {
    let werr = |e: zip::result::ZipError| PackageError::Write(e.to_string());
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(MANIFEST_FILE, options()).map_err(werr)?;
    zip.write_all(manifest_bytes)?;
    if let Some(sig) = signature {
        zip.start_file(SIGNATURE_FILE, options()).map_err(werr)?;
        zip.write_all(sig.as_bytes())?;
    }
    for (path, text) in files {
        zip.start_file(path.as_str(), options()).map_err(werr)?;
        zip.write_all(text.as_bytes())?;
    }
    Ok(zip.finish().map_err(werr)?.into_inner())
}

/// A path that could land outside the folder it is unpacked into.
fn escapes(path: &str) -> bool {
    path.starts_with('/')
        || path.starts_with('\\')
        || path.contains('\\')
        || path.as_bytes().get(1) == Some(&b':')
        || path.split('/').any(|seg| seg == ".." || seg == ".")
        || path.contains('\0')
}

/// Whether `path` is a file a package may hold.
fn expected(path: &str) -> bool {
    if path == MANIFEST_FILE || path == SIGNATURE_FILE {
        return true;
    }
    let Some((folder, file)) = path.split_once('/') else {
        return false;
    };
    matches!(folder, "maps" | "alerts")
        && file
            .strip_suffix(".yaml")
            .is_some_and(|stem| is_dns_label(stem) && !stem.contains('/'))
}

/// The entry count the end-of-central-directory record declares, read before the zip reader
/// parses (and allocates for) every entry. `None` when there is no such record (not a zip,
/// or a ZIP64 count the reader checks after parsing).
fn declared_entries(bytes: &[u8]) -> Option<usize> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let tail = bytes.len().saturating_sub(22 + 65_535);
    let at = (tail..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == EOCD)?;
    let count = u16::from_le_bytes([bytes[at + 10], bytes[at + 11]]);
    (count != u16::MAX).then_some(usize::from(count))
}

/// Reads and checks a package. Nothing in it is trusted before this returns `Ok`.
pub fn read(bytes: &[u8], limits: Limits) -> Result<Package, PackageError> {
    if bytes.len() as u64 > limits.max_total_bytes {
        return Err(PackageError::TooLarge {
            limit: limits.max_total_bytes,
        });
    }
    if let Some(count) = declared_entries(bytes)
        && count > limits.max_entries
    {
        return Err(PackageError::TooManyEntries {
            count,
            limit: limits.max_entries,
        });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))?;
    if archive.len() > limits.max_entries {
        return Err(PackageError::TooManyEntries {
            count: archive.len(),
            limit: limits.max_entries,
        });
    }
    let mut declared_total: u64 = 0;
    let mut actual_total: u64 = 0;
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        let path = entry.name()?.into_owned();
        if escapes(&path) {
            return Err(PackageError::UnsafePath { path });
        }
        if entry.is_symlink() {
            return Err(PackageError::Symlink { path });
        }
        if entry.is_dir() {
            continue;
        }
        if !expected(&path) {
            return Err(PackageError::UnexpectedEntry { path });
        }
        let size = entry.size();
        if size > limits.max_file_bytes {
            return Err(PackageError::FileTooLarge {
                path,
                size,
                limit: limits.max_file_bytes,
            });
        }
        declared_total = declared_total.saturating_add(size);
        if declared_total > limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                limit: limits.max_total_bytes,
            });
        }
        // The declared size may lie: read at most one byte past the limit and check again.
        let mut data = Vec::with_capacity(size.min(limits.max_file_bytes) as usize);
        (&mut entry)
            .take(limits.max_file_bytes + 1)
            .read_to_end(&mut data)?;
        let actual = data.len() as u64;
        if actual > limits.max_file_bytes {
            return Err(PackageError::FileTooLarge {
                path,
                size: actual,
                limit: limits.max_file_bytes,
            });
        }
        actual_total += actual;
        if actual_total > limits.max_total_bytes {
            return Err(PackageError::TooLarge {
                limit: limits.max_total_bytes,
            });
        }
        if entries.insert(path.clone(), data).is_some() {
            return Err(PackageError::DuplicateEntry { path });
        }
    }
    let manifest_bytes = entries
        .remove(MANIFEST_FILE)
        .ok_or(PackageError::NoManifest)?;
    let manifest = parse_manifest(&manifest_bytes)?;
    let signature = entries
        .remove(SIGNATURE_FILE)
        .map(|b| text(SIGNATURE_FILE, b))
        .transpose()?;
    let mut files = BTreeMap::new();
    for (path, data) in entries {
        match manifest.spec.files.get(&path) {
            None => return Err(PackageError::UnlistedFile { path }),
            Some(sha) if *sha != sha256_hex(&data) => return Err(PackageError::Tampered { path }),
            Some(_) => {
                let text = text(&path, data)?;
                files.insert(path, text);
            }
        }
    }
    if let Some(path) = manifest.spec.files.keys().find(|p| !files.contains_key(*p)) {
        return Err(PackageError::MissingFile { path: path.clone() });
    }
    let components = &manifest.spec.components;
    for (kind, folder, names) in [
        ("map", "maps", &components.maps),
        ("alert rule", "alerts", &components.alerts),
    ] {
        for name in names {
            let path = component_path(folder, name);
            if !files.contains_key(&path) {
                return Err(PackageError::MissingComponent {
                    kind,
                    name: name.clone(),
                    path,
                });
            }
        }
    }
    Ok(Package {
        manifest,
        manifest_bytes,
        signature,
        files,
    })
}

fn text(path: &str, data: Vec<u8>) -> Result<String, PackageError> {
    String::from_utf8(data).map_err(|_| PackageError::NotText { path: path.into() })
}

/// Parses a manifest: its apiVersion first (so another version is named as such), then the
/// typed form, then the names.
pub fn parse_manifest(bytes: &[u8]) -> Result<SolutionManifest, PackageError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PackageError::NotText {
        path: MANIFEST_FILE.into(),
    })?;
    let value: Value =
        serde_saphyr::from_str(text).map_err(|e| PackageError::Manifest(first_line(&e)))?;
    let api = value.get("apiVersion").and_then(Value::as_str);
    if api != Some("dualwrite/v1") {
        return Err(PackageError::ApiVersion {
            found: api.unwrap_or("(none)").to_string(),
        });
    }
    let manifest = <SolutionManifest as serde::Deserialize>::deserialize(&value)
        .map_err(|e| PackageError::Manifest(first_line(&e)))?;
    debug_assert_eq!(manifest.api_version, ApiVersion::V1);
    for (what, name) in [
        ("solution name", &manifest.metadata.name),
        ("publisher name", &manifest.spec.publisher.name),
    ] {
        if !is_dns_label(name) {
            return Err(PackageError::BadName {
                what,
                name: name.clone(),
            });
        }
    }
    Ok(manifest)
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// The manifest as YAML text, as it is packaged and installed.
pub fn render_manifest(manifest: &SolutionManifest) -> String {
    serde_saphyr::to_string(manifest).expect("a manifest renders as YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_count_is_read_before_parsing() {
        let files: BTreeMap<String, String> = (0..3)
            .map(|i| (format!("maps/m{i}.yaml"), "x".to_string()))
            .collect();
        let zip = write(b"manifest", None, &files).unwrap();
        assert_eq!(declared_entries(&zip), Some(4));
        assert_eq!(declared_entries(b"not a zip"), None);
        let tight = Limits {
            max_entries: 3,
            ..Limits::default()
        };
        assert!(matches!(
            read(&zip, tight),
            Err(PackageError::TooManyEntries { count: 4, .. })
        ));
    }

    #[test]
    fn paths_that_could_escape_are_recognized() {
        for bad in [
            "../x.yaml",
            "maps/../../x.yaml",
            "/etc/x",
            "\\x",
            "c:/x",
            "maps/./x.yaml",
        ] {
            assert!(escapes(bad), "{bad}");
        }
        for good in ["maps/a.yaml", "solution.yaml", "alerts/b-2.yaml"] {
            assert!(!escapes(good) && expected(good), "{good}");
        }
        for unexpected in [
            "maps/A.yaml",
            "maps/a/b.yaml",
            "requests/r.yaml",
            "maps/a.yml",
        ] {
            assert!(!expected(unexpected), "{unexpected}");
        }
    }
}
