//! The client's side of the WebSocket opening handshake (RFC 6455, 4.1):
//! the upgrade request, and every check of the server's answer, so that
//! nothing (Identify and its token least of all) is sent to a server that
//! did not prove it speaks WebSocket to this very request.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{self, HeaderMap};
use hyper::upgrade::Upgraded;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

use crate::{Endpoint, Stream};

/// The GUID RFC 6455 appends to the key before hashing it.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why the server's answer to the upgrade request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum HandshakeError {
    #[error("the HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("could not build the upgrade request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the server answered HTTP {0} instead of 101 Switching Protocols")]
    Status(u16),
    #[error("the server's answer has no `Upgrade: websocket` header")]
    Upgrade,
    #[error("the server's answer has no `Connection: upgrade` header")]
    Connection,
    #[error("the server's Sec-WebSocket-Accept does not answer our key (RFC 6455, 4.1)")]
    Accept,
    #[error("the server chose {0}, which was not asked for")]
    NotAsked(&'static str),
}

/// A random `Sec-WebSocket-Key`: 16 bytes, base64. The bytes come from the
/// standard library's randomly keyed SipHash over a counter, so no two
/// connections of a process share a key and none can be predicted.
fn new_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    STANDARD.encode(bytes)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub(crate) fn accept_key(key: &str) -> String {
    let mut hash = Sha1::new();
    hash.update(key.as_bytes());
    hash.update(ACCEPT_GUID.as_bytes());
    STANDARD.encode(hash.finalize())
}

/// Whether a header holds `token` in its comma-separated list, in any case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// Checks the server's answer against RFC 6455, 4.1.
fn verify(status: StatusCode, headers: &HeaderMap, key: &str) -> Result<(), HandshakeError> {
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(HandshakeError::Status(status.as_u16()));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(HandshakeError::Upgrade);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(HandshakeError::Connection);
    }
    let accept = headers
        .get(header::SEC_WEBSOCKET_ACCEPT)
        .map(|value| value.as_bytes());
    if accept != Some(accept_key(key).as_bytes()) {
        return Err(HandshakeError::Accept);
    }
    // Nothing was asked for, so the server may choose nothing.
    if headers.contains_key(header::SEC_WEBSOCKET_EXTENSIONS) {
        return Err(HandshakeError::NotAsked("an extension"));
    }
    if headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return Err(HandshakeError::NotAsked("a subprotocol"));
    }
    Ok(())
}

/// Sends the upgrade request for `endpoint` on `stream` and checks the
/// answer; the upgraded connection carries WebSocket frames from then on.
pub(crate) async fn upgrade(
    endpoint: &Endpoint,
    stream: Stream,
) -> Result<TokioIo<Upgraded>, HandshakeError> {
    let key = new_key();
    let request = Request::builder()
        .method("GET")
        .uri(endpoint.path.as_str())
        .header(header::HOST, endpoint.authority.as_str())
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "upgrade")
        .header(header::SEC_WEBSOCKET_KEY, key.as_str())
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .body(Empty::<Bytes>::new())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection task ends by itself once the upgrade is taken, or
    // when the answer is refused and `sender` goes.
    let connection = tokio::spawn(connection.with_upgrades());
    let result = async {
        let response = sender.send_request(request).await?;
        verify(response.status(), response.headers(), &key)?;
        Ok(TokioIo::new(hyper::upgrade::on(response).await?))
    }
    .await;
    if result.is_err() {
        connection.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_are_16_random_bytes_and_never_repeat() {
        let keys: std::collections::HashSet<String> = (0..1000).map(|_| new_key()).collect();
        assert_eq!(keys.len(), 1000);
        for key in &keys {
            assert_eq!(STANDARD.decode(key).unwrap().len(), 16);
        }
    }

    #[test]
    fn every_check_of_the_answer_holds() {
        let key = new_key();
        let good = || {
            let mut headers = HeaderMap::new();
            headers.insert(header::UPGRADE, "WebSocket".parse().unwrap());
            headers.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
            headers.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                accept_key(&key).parse().unwrap(),
            );
            headers
        };
        let switching = StatusCode::SWITCHING_PROTOCOLS;
        assert!(verify(switching, &good(), &key).is_ok());
        assert!(matches!(
            verify(StatusCode::OK, &good(), &key),
            Err(HandshakeError::Status(200))
        ));
        let mut wrong = good();
        wrong.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            accept_key("another key").parse().unwrap(),
        );
        assert!(matches!(
            verify(switching, &wrong, &key),
            Err(HandshakeError::Accept)
        ));
        let mut missing = good();
        missing.remove(header::SEC_WEBSOCKET_ACCEPT);
        assert!(matches!(
            verify(switching, &missing, &key),
            Err(HandshakeError::Accept)
        ));
        for (name, value) in [(header::UPGRADE, "h2c"), (header::CONNECTION, "close")] {
            let mut headers = good();
            headers.insert(name, value.parse().unwrap());
            assert!(verify(switching, &headers, &key).is_err(), "{value}");
        }
        for name in [
            header::SEC_WEBSOCKET_EXTENSIONS,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            let mut headers = good();
            headers.insert(name, "permessage-deflate".parse().unwrap());
            assert!(matches!(
                verify(switching, &headers, &key),
                Err(HandshakeError::NotAsked(_))
            ));
        }
    }
}
