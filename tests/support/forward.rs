//! A real TCP forwarder between dualwrite and a database server, for outage tests: `cut`
//! closes its listening socket (new connects are refused) and resets every connection in
//! flight; `restore` listens again on the same port.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Shared {
    /// Connections in flight (both ends), shut down by `cut`.
    streams: Mutex<Vec<TcpStream>>,
    /// Tells the accept loop to close its listener.
    closing: AtomicBool,
}

pub struct Forwarder {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Forwards a free loopback port to `target` (e.g. `127.0.0.1:5432`).
    pub fn start(target: &str) -> Forwarder {
        let target: SocketAddr = target.parse().expect("a socket address");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut f = Forwarder {
            port,
            target,
            shared: Arc::default(),
            acceptor: None,
        };
        f.serve(listener);
        f
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint goes down: connects are refused and open connections are reset.
    pub fn cut(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            acceptor.join().unwrap();
        }
        for s in self.shared.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// The endpoint comes back on the same port.
    pub fn restore(&mut self) {
        assert!(self.acceptor.is_none(), "restore without cut");
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        self.shared.closing.store(false, Ordering::SeqCst);
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::clone(&self.shared);
        let target = self.target;
        self.acceptor = Some(std::thread::spawn(move || {
            while !shared.closing.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        {
                            let mut streams = shared.streams.lock().unwrap();
                            streams.push(client.try_clone().unwrap());
                            streams.push(server.try_clone().unwrap());
                        }
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            // Dropping the listener here: connects are refused from now on.
        }));
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Copies `from` to `to` until either end closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
