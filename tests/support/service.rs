//! A real `dualwrite run` for tests: started with `--listen` on a free port, ready once
//! `/readyz` answers 200, its log (stderr) kept in a file, killed when dropped.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Polls `check` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `dualwrite run`; killed (SIGKILL) when dropped.
pub struct Service {
    pub child: Child,
    pub port: u16,
    pub log: tempfile::NamedTempFile,
}

impl Service {
    /// Starts the service and waits until it is ready (its first pass completed).
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let service = Service::spawn(dir, args, env);
        wait_for(Duration::from_secs(30), "the service to be ready", || {
            service.get("/readyz").0 == 200
        });
        service
    }

    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Service {
        let port = free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .arg("-C")
            .arg(dir)
            .args(["run", "--listen", &listen])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Service { child, port, log }
    }

    /// Waits for the process to exit; its exit code and how long that took.
    pub fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path)
    }

    /// (status, head: the status line and headers, body).
    pub fn get_with_head(&self, path: &str) -> (u16, String, String) {
        http_get_with_head(self.port, path)
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over a plain TCP connection: (status, body); (0, error) when nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let (status, _, body) = http_get_with_head(port, path);
    (status, body)
}

/// GET over a plain TCP connection: (status, head: the status line and headers, body);
/// (0, "", error) when nothing answers.
pub fn http_get_with_head(port: u16, path: &str) -> (u16, String, String) {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new(), "connection refused".into());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    if stream.read_to_string(&mut response).is_err() {
        return (0, String::new(), "read failed".into());
    }
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_string(), body.to_string())
}
