//! Reading the config repository's files: from the work tree, or from a git commit without
//! touching the work tree. Knows which files belong to the config and that each is UTF-8 text
//! (a UTF-8 byte order mark is accepted); not what is in them. A file that cannot be read,
//! or is UTF-16, binary or otherwise not UTF-8, is a [`FileError`] at that file (and at the
//! first bad byte), every one of them collected.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Diagnostic;
use super::yaml::Pos;

/// The project file, at the root of the config directory.
pub const PROJECT_FILE: &str = "dualwrite.yaml";
/// Folders whose `.yaml` / `.yml` files are read, recursively. `solutions/` holds Solution
/// resources (`solutions/<name>.yaml`) and managed solutions installed by
/// `dualwrite solution import` (`solutions/<publisher>/<name>/`).
pub const RESOURCE_DIRS: [&str; 4] = ["maps", "alerts", "requests", "solutions"];
/// The folder of solutions.
pub const SOLUTIONS_DIR: &str = "solutions";

/// A file of the config: its path relative to the config directory, and its text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
}

/// Why the config's files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Listing the files failed (a directory, a git revision): nothing could be read.
    #[error("{0}")]
    Listing(String),
    /// These files are not readable UTF-8 text; the others were fine.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Files(Vec<FileError>),
}

/// A config file that is not readable UTF-8 text, and where it goes wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FileError {
    pub path: String,
    pub pos: Pos,
    #[source]
    pub problem: FileProblem,
}

/// What is wrong with a file's bytes.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("cannot read: {0}")]
    Io(#[source] std::io::Error),
    #[error("the file is UTF-16 ({0}); save it as UTF-8")]
    Utf16(&'static str),
    #[error("a binary file, not YAML text (a NUL byte)")]
    Binary,
    #[error(
        "not UTF-8: byte 0x{byte:02X} cannot start or continue a character; save the file as UTF-8"
    )]
    NotUtf8 { byte: u8 },
}

/// The text of a file's bytes: UTF-8, with or without a byte order mark.
fn decode(path: &str, bytes: Vec<u8>) -> Result<String, FileError> {
    let at = |pos, problem| FileError {
        path: path.to_string(),
        pos,
        problem,
    };
    let start = Pos { line: 1, col: 1 };
    match bytes.as_slice() {
        [0xFF, 0xFE, ..] => {
            return Err(at(
                start,
                FileProblem::Utf16("little-endian, with a byte order mark"),
            ));
        }
        [0xFE, 0xFF, ..] => {
            return Err(at(
                start,
                FileProblem::Utf16("big-endian, with a byte order mark"),
            ));
        }
        // ASCII text in UTF-16 without a mark: every other byte is NUL.
        [0, b, ..] | [b, 0, ..] if *b != 0 && bytes.len().is_multiple_of(2) => {
            let le = bytes[1] == 0;
            return Err(at(
                start,
                FileProblem::Utf16(if le { "little-endian" } else { "big-endian" }),
            ));
        }
        _ => {}
    }
    if let Some(i) = bytes.iter().position(|b| *b == 0) {
        return Err(at(position(&bytes, i), FileProblem::Binary));
    }
    String::from_utf8(bytes).map_err(|e| {
        let i = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        at(position(bytes, i), FileProblem::NotUtf8 { byte: bytes[i] })
    })
}

/// The line and column (in characters) of byte `i`, all bytes before it being UTF-8.
fn position(bytes: &[u8], i: usize) -> Pos {
    let before = String::from_utf8_lossy(&bytes[..i]);
    let line = before.matches('\n').count() as u64 + 1;
    let col = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count() as u64
        + 1;
    Pos { line, col }
}

/// Where config files come from.
pub trait ConfigSource {
    /// The config's files, `dualwrite.yaml` first, then the rest sorted by path.
    fn files(&self) -> Result<Vec<SourceFile>, LoadError>;
    /// A human description: "work tree" or "git revision abc1234".
    fn describe(&self) -> String;
}

/// Alert rule unit tests (`dualwrite alerts test`) live beside the rules but are not resources.
pub fn is_alert_test_file(path: &str) -> bool {
    path.ends_with(".test.yaml") || path.ends_with(".test.yml")
}

fn is_config_file(path: &str) -> bool {
    let in_resource_dir = RESOURCE_DIRS
        .iter()
        .any(|d| path.starts_with(d) && path[d.len()..].starts_with('/'));
    path == PROJECT_FILE
        || (in_resource_dir
            && (path.ends_with(".yaml") || path.ends_with(".yml"))
            && !is_alert_test_file(path))
}

fn order(mut files: Vec<SourceFile>) -> Vec<SourceFile> {
    files.sort_by(|a, b| (a.path != PROJECT_FILE, &a.path).cmp(&(b.path != PROJECT_FILE, &b.path)));
    files
}

/// The config directory on disk.
pub struct WorkTree {
    pub dir: PathBuf,
}

impl ConfigSource for WorkTree {
    fn files(&self) -> Result<Vec<SourceFile>, LoadError> {
        let mut paths = Vec::new();
        if self.dir.join(PROJECT_FILE).is_file() {
            paths.push(PROJECT_FILE.to_string());
        }
        for d in RESOURCE_DIRS {
            walk(&self.dir, d, &mut paths).map_err(|e| LoadError::Listing(format!("{d}: {e}")))?;
        }
        let mut files = Vec::with_capacity(paths.len());
        let mut bad = Vec::new();
        for path in paths.into_iter().filter(|p| is_config_file(p)) {
            let text = std::fs::read(self.dir.join(&path))
                .map_err(|e| FileError {
                    path: path.clone(),
                    pos: Pos { line: 1, col: 1 },
                    problem: FileProblem::Io(e),
                })
                .and_then(|bytes| decode(&path, bytes));
            match text {
                Ok(text) => files.push(SourceFile { path, text }),
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(LoadError::Files(bad));
        }
        Ok(order(files))
    }

    fn describe(&self) -> String {
        "work tree".into()
    }
}

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
        } else {
            out.push(child);
        }
    }
    Ok(())
}

/// The config as committed at a git revision, read with the git CLI.
pub struct GitRevision {
    pub dir: PathBuf,
    pub revision: String,
}

impl ConfigSource for GitRevision {
    fn files(&self) -> Result<Vec<SourceFile>, LoadError> {
        self.read()
    }

    fn describe(&self) -> String {
        format!("git revision {}", self.revision)
    }
}

impl GitRevision {
    /// The files at the revision: `Listing` when git cannot list or read them, `Files` for
    /// those that are not UTF-8 text.
    fn read(&self) -> Result<Vec<SourceFile>, LoadError> {
        let unreadable = |e: GitError| {
            LoadError::Listing(format!("cannot read revision {:?}: {e}", self.revision))
        };
        let rev = &self.revision;
        // Paths relative to the config dir, which may sit below the repository root.
        let listing = git(
            &self.dir,
            &["ls-tree", "-r", "-z", "--name-only", rev, "--", "."],
            None,
        )
        .map_err(unreadable)?;
        let paths: Vec<String> = listing
            .split('\0')
            .filter(|p| !p.is_empty() && is_config_file(p))
            .map(str::to_string)
            .collect();
        let mut files = Vec::with_capacity(paths.len());
        let mut bad = Vec::new();
        for (path, body) in git_files_at(&self.dir, rev, paths).map_err(unreadable)? {
            match decode(&path, body) {
                Ok(text) => files.push(SourceFile { path, text }),
                Err(e) => bad.push(e),
            }
        }
        if !bad.is_empty() {
            return Err(LoadError::Files(bad));
        }
        Ok(order(files))
    }
}

/// The contents of `paths` (relative to `dir`, which may sit below the repository root) as
/// committed at `rev`, read with one `git cat-file --batch`.
pub fn git_files_at(
    dir: &Path,
    rev: &str,
    paths: Vec<String>,
) -> Result<Vec<(String, Vec<u8>)>, GitError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let prefix = git(dir, &["rev-parse", "--show-prefix"], None)?;
    let prefix = prefix.trim();
    let request: String = paths
        .iter()
        .map(|p| format!("{rev}:{prefix}{p}\n"))
        .collect();
    let blob = git_bytes(dir, &["cat-file", "--batch"], Some(request.as_bytes()))?;
    let mut files = Vec::with_capacity(paths.len());
    let mut rest = &blob[..];
    for path in paths {
        let header_end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| GitError::of(&["cat-file"], "short output"))?;
        let header = String::from_utf8_lossy(&rest[..header_end]).into_owned();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GitError::of(&["cat-file"], format!("unexpected header {header:?}")))?;
        files.push((path, rest[header_end + 1..header_end + 1 + size].to_vec()));
        rest = &rest[header_end + 1 + size + 1..];
    }
    Ok(files)
}

/// A git command that could not run, failed (its stderr, trimmed), or printed what was not
/// expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("git {command}: {message}")]
pub struct GitError {
    /// The subcommand (`rev-parse`, `cat-file`, …).
    pub command: String,
    pub message: String,
}

impl GitError {
    fn of(args: &[&str], message: impl Into<String>) -> GitError {
        GitError {
            command: args.first().copied().unwrap_or_default().to_string(),
            message: message.into(),
        }
    }
}

/// Runs git in `dir` and returns its stdout as text.
pub fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<String, GitError> {
    git_bytes(dir, args, stdin).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Runs git in `dir` with extra environment variables (an author, an index file) and
/// returns its stdout as text.
pub fn git_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String, GitError> {
    run_git(dir, args, env, None).map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn git_bytes(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Result<Vec<u8>, GitError> {
    run_git(dir, args, &[], stdin)
}

fn run_git(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
) -> Result<Vec<u8>, GitError> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| GitError::of(args, format!("cannot run git: {e}")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        // Feed stdin from a thread so a large output cannot deadlock against it.
        std::thread::spawn(move || pipe.write_all(&input));
    }
    let out = child
        .wait_with_output()
        .map_err(|e| GitError::of(args, e.to_string()))?;
    if !out.status.success() {
        return Err(GitError::of(
            args,
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(out.stdout)
}

/// Reads the files, or diagnostics saying why they cannot be read: one at each file that is
/// not readable UTF-8 text, or one at `dualwrite.yaml` when the repository cannot be read at
/// all.
pub fn read_files(source: &dyn ConfigSource) -> Result<Vec<SourceFile>, Vec<Diagnostic>> {
    let files = source.files().map_err(|e| match e {
        LoadError::Files(bad) => {
            let mut diags: Vec<Diagnostic> = bad
                .into_iter()
                .map(|f| Diagnostic::new(&f.path, f.pos, f.problem.to_string()))
                .collect();
            diags.sort();
            diags
        }
        LoadError::Listing(e) => vec![Diagnostic::new(PROJECT_FILE, Pos { line: 1, col: 1 }, e)],
    })?;
    if !files.iter().any(|f| f.path == PROJECT_FILE) {
        return Err(vec![Diagnostic::new(
            PROJECT_FILE,
            Pos { line: 1, col: 1 },
            format!(
                "no {PROJECT_FILE} in the {}: this is not a dualwrite config directory",
                source.describe()
            ),
        )]);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(bytes: &[u8]) -> (Pos, String) {
        let e = decode("f.yaml", bytes.to_vec()).unwrap_err();
        (e.pos, e.problem.to_string())
    }

    #[test]
    fn utf8_with_or_without_a_byte_order_mark_is_text() {
        assert_eq!(decode("f.yaml", b"a: 1\n".to_vec()).unwrap(), "a: 1\n");
        assert!(decode("f.yaml", b"\xEF\xBB\xBFa: caf\xC3\xA9\n".to_vec()).is_ok());
    }

    #[test]
    fn utf16_binary_and_other_encodings_are_named_at_the_first_bad_byte() {
        let at = |line, col| Pos { line, col };
        assert_eq!(problem(b"\xFF\xFEa\x00").0, at(1, 1));
        assert!(problem(b"a\x00:\x00").1.contains("UTF-16 (little-endian)"));
        assert!(problem(b"\x00a\x00:").1.contains("UTF-16 (big-endian)"));
        assert_eq!(problem(b"ab\ncaf\xC3\xA9 \x00\x01").0, at(2, 6));
        let (pos, text) = problem(b"k: v\nname: caf\xE9\n");
        assert_eq!(pos, at(2, 10));
        assert!(text.starts_with("not UTF-8: byte 0xE9"), "{text}");
    }
}
