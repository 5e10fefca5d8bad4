//! A real nats-server (or a cluster of them) for the tests, or a clear
//! skip.

pub(crate) mod once;

use shardwire_nats::{Layout, LocalCluster, LocalServer, Nats};

/// Starts a server; `None` (the test skips) only where no binary is found
/// and `SHARDWIRE_REQUIRE_NATS` is unset. A skip writes one line,
/// `SKIP: <test>: …`, straight to the process's stderr: the test harness
/// captures `eprintln!` of a passing test, so the line would never show,
/// and `.ci/run` counts these lines as skipped tests.
#[allow(dead_code, reason = "not every test binary runs a lone server")]
pub(crate) async fn server() -> Option<LocalServer> {
    let server = LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here");
    if server.is_none() {
        skipped();
    }
    server
}

/// Starts a JetStream cluster of `size` servers, or skips as [`server`]
/// does.
#[allow(dead_code, reason = "not every test binary runs a cluster")]
pub(crate) async fn cluster(size: usize) -> Option<LocalCluster> {
    let cluster = LocalCluster::start_or_skip(size)
        .await
        .expect("a nats-server cluster is required here");
    if cluster.is_none() {
        skipped();
    }
    cluster
}

fn skipped() {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a NATS test");
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: {test}: no nats-server (set NATS_SERVER, or SHARDWIRE_REQUIRE_NATS to fail instead)"
    );
}

/// Another connection to the server, as another process would have.
#[allow(dead_code, reason = "not every test binary opens one")]
pub(crate) async fn connect(server: &LocalServer) -> Nats {
    Nats::connect(&server.url(), Layout::default())
        .await
        .expect("connect")
}

/// Waits, checking every 50 ms, until `done` holds; fails the test past
/// `limit`.
#[allow(dead_code, reason = "not every test binary waits")]
pub(crate) async fn wait_for(
    what: &str,
    limit: std::time::Duration,
    mut done: impl FnMut() -> bool,
) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
