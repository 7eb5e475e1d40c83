//! Shared test support: temporary config repositories, running the real binary, and a real
//! SMTP server (`mail`).
#![allow(dead_code)]

pub mod dashboard;
pub mod forward;
pub mod mail;
pub mod service;

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PROJECT: &str = "\
apiVersion: dualwrite/v1
kind: Project
metadata: { name: test }
spec:
  endpoints:
    erp: { sqlite: { path: .dualwrite/erp.db } }
    crm: { sqlite: { path: .dualwrite/crm.db } }
  notifications:
    smtp: { host: localhost, from: dualwrite@example.com }
";

pub const CUSTOMERS: &str = "\
apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: customers, labels: { team: finance } }
spec:
  state: Running
  source: { endpoint: erp, table: customers }
  destination: { endpoint: crm, table: account }
  columns:
    - { source: id, destination: id, key: true }
    - { source: name, destination: name }
";

/// A config repository in a temporary directory.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    /// A repository with `dualwrite.yaml` = PROJECT plus the given files.
    pub fn new(files: &[(&str, &str)]) -> Repo {
        let repo = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.write("dualwrite.yaml", PROJECT);
        for (path, text) in files {
            repo.write(path, text);
        }
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, text: &str) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).unwrap();
    }

    /// Runs `dualwrite -C <repo> args…`.
    pub fn run(&self, args: &[&str]) -> Run {
        run_in(self.path(), args, &[])
    }

    pub fn git(&self, args: &[&str]) -> String {
        git_in(self.path(), args)
    }

    /// The two SQLite apps the CUSTOMERS map syncs, under `.dualwrite/`: the ERP's
    /// `customers (id, name)` holding `rows`, and the CRM's empty `account (id, name)`.
    pub fn sqlite_apps(&self, rows: &[(i64, &str)]) {
        std::fs::create_dir_all(self.path().join(".dualwrite")).unwrap();
        let erp = rusqlite::Connection::open(self.path().join(".dualwrite/erp.db")).unwrap();
        erp.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
            .unwrap();
        for (id, name) in rows {
            erp.execute("INSERT INTO customers VALUES (?1, ?2)", (id, name))
                .unwrap();
        }
        rusqlite::Connection::open(self.path().join(".dualwrite/crm.db"))
            .unwrap()
            .execute_batch("CREATE TABLE account (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
            .unwrap();
    }

    /// `git init` and commit everything; returns the commit id.
    pub fn commit_all(&self, message: &str) -> String {
        if !self.path().join(".git").exists() {
            self.git(&["init", "-q", "-b", "main"]);
        }
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// A map's runtime record (phase details, cursors, initial sync) as the SQLite state
    /// store under `.dualwrite/` holds it now, read without taking a write lock; `None`
    /// before the store or the record exists.
    pub fn runtime(&self, map: &str) -> Option<serde_json::Value> {
        let path = self.path().join(".dualwrite/state.db");
        let conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .ok()?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).ok()?;
        let text: String = conn
            .query_row("SELECT data FROM runtime WHERE name = ?1", [map], |r| {
                r.get(0)
            })
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Every file under the repository (but .git) with its contents, to prove nothing changed.
    pub fn snapshot(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == ".git") {
            continue;
        }
        if path.is_dir() {
            out.push((path.strip_prefix(root).unwrap().to_path_buf(), "dir".into()));
            walk(root, &path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            let digest =
                sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&bytes));
            out.push((
                path.strip_prefix(root).unwrap().to_path_buf(),
                hex::encode(digest),
            ));
        }
    }
}

/// Runs git in `dir` as a person (Ada) would; its output, trimmed. Fails the test on error.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada Lovelace")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada Lovelace")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs` (its own panic is
/// passed on as it is).
pub fn with_timeout(secs: u64, f: impl FnOnce() + Send + 'static) {
    use std::sync::mpsc;
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test timed out after {secs}s"),
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_dualwrite"))
        .arg("-C")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
