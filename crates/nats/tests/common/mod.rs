//! A real nats-server for the tests, or a clear skip.

use shardwire_nats::{Layout, LocalServer, Nats};

/// Starts a server; `None` (the test skips) only where no binary is found
/// and `SHARDWIRE_REQUIRE_NATS` is unset.
pub(crate) async fn server() -> Option<LocalServer> {
    LocalServer::start_or_skip()
        .await
        .expect("nats-server is required here")
}

/// Another connection to the server, as another process would have.
pub(crate) async fn connect(server: &LocalServer) -> Nats {
    Nats::connect(&server.url(), Layout::default())
        .await
        .expect("connect")
}
