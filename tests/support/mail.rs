//! A real SMTP server on loopback for tests: `python3 -m aiosmtpd` with its Mailbox handler
//! (a Python `mailbox.Maildir`), and reading what it received: headers unfolded and decoded,
//! bodies decoded from quoted-printable.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `python3 -m aiosmtpd`, killed on drop (also when the test panics).
pub struct SmtpServer {
    child: Child,
    pub port: u16,
    maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpServer {
    /// `None` (after a loud message) when aiosmtpd is not installed, unless CI=true.
    pub fn start() -> Option<Self> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "aiosmtpd is not installed (python3 -m pip install aiosmtpd)"
            );
            eprintln!(
                "\n*** SKIPPED: aiosmtpd not installed (python3 -m pip install aiosmtpd) ***\n"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let port = super::free_port();
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let mut server = SmtpServer {
            child,
            port,
            maildir,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("aiosmtpd exited before listening: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "aiosmtpd never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        maildir_messages(&self.maildir)
    }

    /// Waits (up to 20 s) until `n` messages arrived: delivery runs in the background.
    pub fn wait_for(&self, n: usize) -> Vec<Mail> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let m = self.messages();
            if m.len() >= n || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Mail {
    /// Unfolded headers, encoded words decoded.
    pub headers: Vec<(String, String)>,
    /// The body, transfer encoding decoded.
    pub body: String,
}

impl Mail {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn parse(text: &str) -> Self {
        let text = text.replace("\r\n", "\n");
        let (head, body) = text
            .split_once("\n\n")
            .expect("headers end with a blank line");
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                headers.last_mut().expect("continuation after a header").1 += line;
            } else {
                let (name, value) = line.split_once(':').expect("a header line");
                headers.push((name.to_string(), value.trim().to_string()));
            }
        }
        for (_, value) in &mut headers {
            *value = decode_words(value);
        }
        let qp = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("Content-Transfer-Encoding") && v == "quoted-printable"
        });
        let body = if qp {
            String::from_utf8(decode_quoted_printable(body)).unwrap()
        } else {
            body.to_string()
        };
        Self { headers, body }
    }
}

fn maildir_messages(dir: &Path) -> Vec<Mail> {
    let Ok(entries) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .map(|e| {
            (
                e.metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH),
                e.path(),
            )
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| Mail::parse(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value.
fn decode_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut after_word = false;
    while let Some((before, word, tail)) = next_word(rest) {
        // Whitespace between two encoded words is not part of the text.
        if !(after_word && before.trim().is_empty()) {
            out.push_str(before);
        }
        out.push_str(&word);
        after_word = true;
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// The text before the next encoded word, that word decoded, and the text after it.
fn next_word(text: &str) -> Option<(&str, String, &str)> {
    let start = text.find("=?")?;
    let mut parts = text[start + 2..].splitn(3, '?');
    let (_charset, encoding, tail) = (parts.next()?, parts.next()?, parts.next()?);
    let end = tail.find("?=")?;
    let payload = &tail[..end];
    let bytes = if encoding.eq_ignore_ascii_case("b") {
        decode_base64(payload)
    } else {
        decode_quoted_printable(&payload.replace('_', " "))
    };
    Some((
        &text[..start],
        String::from_utf8(bytes).ok()?,
        &tail[end + 2..],
    ))
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.replace("=\n", "").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("quoted-printable escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
