//! What the `--metrics` tests share: a command serving its metrics, killed
//! when dropped, a plain HTTP GET, and the Grafana dashboard.

#![allow(dead_code, reason = "each test file uses its own part")]

pub(crate) mod dashboard;
pub(crate) mod nodes;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_shardwire");

/// A child process, killed and reaped when dropped, on every path.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shardwire <args> --metrics 127.0.0.1:0` and the address it serves on.
pub(crate) struct Served {
    pub(crate) metrics: SocketAddr,
    /// Every stdout line so far (the demo's status, once a second).
    pub(crate) stdout: Lines,
    /// Every stderr line so far (the logs).
    pub(crate) stderr: Lines,
    _child: Killed,
}

pub(crate) type Lines = Arc<Mutex<Vec<String>>>;

/// Reads `from` line by line to its end on a thread of its own (so the
/// child never blocks on a full pipe), each line into `into` and `found`.
fn collect(from: impl Read + Send + 'static, into: Lines, found: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line.clone());
            let _ = found.send(line);
        }
    });
}

impl Served {
    /// Starts `shardwire` with `args` and waits (at most 20 s) for the log
    /// line that names its metrics URL: port 0 lets the command pick a
    /// free port, so no other process can take it in between.
    pub(crate) fn start(args: &[&str]) -> Served {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--metrics", "127.0.0.1:0"])
            .env_remove("DISCORD_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let child = Killed(child);
        let (out, err) = (Lines::default(), Lines::default());
        collect(stdout, out.clone(), mpsc::channel().0);
        let (found, logged) = mpsc::channel();
        collect(stderr, err.clone(), found);
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = logged
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{args:?}: no metrics URL logged in 20 s"));
            if let Some(url) = line.split("serving metrics on http://").nth(1) {
                break url.trim_end_matches("/metrics").to_owned();
            }
        };
        Served {
            metrics: url.parse().unwrap(),
            stdout: out,
            stderr: err,
            _child: child,
        }
    }
}

/// An HTTP response: status, headers as received, body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// `GET target` over HTTP/1.0 (the body runs to the end of the
/// connection, never chunked), within 5 s.
pub(crate) fn get(addr: SocketAddr, target: &str) -> std::io::Result<Response> {
    request(addr, "GET", target)
}

/// A request with no body, as [`get`] sends it.
pub(crate) fn request(addr: SocketAddr, method: &str, target: &str) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "{method} {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidData, raw.clone());
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(invalid)?;
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(invalid)?;
    Ok(Response {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    })
}

/// `value` percent-encoded for a query string.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
