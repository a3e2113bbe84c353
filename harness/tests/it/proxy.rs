//! A TCP proxy between the projector and the shared database server, so a
//! test can simulate an outage without touching the server: cut every
//! connection (and refuse new ones), delay every chunk, or go half-open
//! (connections stay up, nothing gets through either way).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close every connection; accept and close new ones at once.
    Cut,
    /// Forward, sleeping this long before each chunk.
    Delay(Duration),
    /// Accept, keep open, forward nothing (a black hole).
    HalfOpen,
}

struct Shared {
    mode: Mutex<Mode>,
    /// Bumped on every mode change: connections from an older generation
    /// that went black are closed when traffic flows again.
    generation: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy on 127.0.0.1 (an ephemeral port).
pub struct Proxy {
    address: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let accept = Arc::clone(&shared);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !accept.stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                client.set_nonblocking(false).unwrap();
                if *accept.mode.lock().unwrap() == Mode::Cut {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let black = Arc::new(AtomicBool::new(false));
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let shared = Arc::clone(&accept);
                    let black = Arc::clone(&black);
                    std::thread::spawn(move || pump(from, to, &shared, &black));
                }
            }
        });
        Self { address, shared }
    }

    /// `url` (mysql://user@host:port/db) pointed at the proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((c, r)) => (format!("{c}@"), r),
            None => (String::new(), rest),
        };
        let (_, path) = rest.split_once('/').unwrap();
        format!("{scheme}://{credentials}{}/{path}", self.address)
    }

    /// Switches what the proxy does.
    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.set(Mode::Cut);
    }
}

/// The address a mysql:// URL names.
pub fn server_address(url: &str) -> SocketAddr {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let host_port = rest.split_once('/').map_or(rest, |(h, _)| h);
    let host_port = match host_port.contains(':') {
        true => host_port.to_string(),
        false => format!("{host_port}:3306"),
    };
    host_port.to_socket_addrs().unwrap().next().unwrap()
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, black: &AtomicBool) {
    from.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mode = *shared.mode.lock().unwrap();
        if shared.stop.load(Ordering::Relaxed) || mode == Mode::Cut {
            break;
        }
        // A connection that lost bytes to the black hole is broken for good.
        if black.load(Ordering::Relaxed) && mode != Mode::HalfOpen {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        match *shared.mode.lock().unwrap() {
            Mode::Pass => {}
            Mode::Delay(d) => std::thread::sleep(d),
            Mode::HalfOpen => {
                black.store(true, Ordering::Relaxed);
                continue;
            }
            Mode::Cut => break,
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
