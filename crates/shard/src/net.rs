//! Connecting: URLs to endpoints, and a TCP stream with rustls on top when
//! the endpoint is secure. The shard's WebSocket and the cluster's REST
//! client both connect through here.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The one TLS client configuration (rustls on ring, webpki roots) that all
/// connections share, made on first use.
///
/// # Errors
///
/// The reason, if rustls cannot build it (it always can with the ring
/// provider's default protocol versions).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|error| error.to_string())
        })
        .clone()
}

/// Where a URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint<'a> {
    /// The scheme asks for TLS.
    pub secure: bool,
    /// `host[:port]`, for the `Host` header.
    pub authority: &'a str,
    /// The host.
    pub host: &'a str,
    /// The port (443 or 80 unless given).
    pub port: u16,
    /// The path after the authority's `/`, query included (may be empty).
    pub path: &'a str,
}

impl<'a> Endpoint<'a> {
    /// Parses `url`, whose scheme must be `secure_scheme` (like `wss://`) or
    /// `plain_scheme` (like `ws://`); `None` for anything else, a missing
    /// host, a bad port, or a secure host TLS cannot name.
    #[must_use]
    pub fn parse(url: &'a str, secure_scheme: &str, plain_scheme: &str) -> Option<Self> {
        let (secure, rest) = match url.strip_prefix(secure_scheme) {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix(plain_scheme)?),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().ok()?),
            None => (authority, if secure { 443 } else { 80 }),
        };
        if host.is_empty()
            || (secure && rustls::pki_types::ServerName::try_from(host.to_owned()).is_err())
        {
            return None;
        }
        Some(Self {
            secure,
            authority,
            host,
            port,
            path,
        })
    }

    /// Opens a TCP connection to it (no Nagle delay), with TLS if secure.
    ///
    /// # Errors
    ///
    /// Connecting or the TLS handshake failed.
    pub async fn open(&self) -> io::Result<Stream> {
        let tcp = TcpStream::connect((self.host, self.port)).await?;
        tcp.set_nodelay(true)?;
        if !self.secure {
            return Ok(Stream::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.to_owned())
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let config = tls_config()
            .map_err(|error| io::Error::other(format!("TLS is not available: {error}")))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

/// A connection from [`Endpoint::open`]: plain TCP or TLS over it.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_endpoints() {
        let ws = Endpoint::parse("wss://gateway.discord.gg/?v=10", "wss://", "ws://").unwrap();
        assert_eq!(
            (ws.secure, ws.authority, ws.host, ws.port, ws.path),
            (
                true,
                "gateway.discord.gg",
                "gateway.discord.gg",
                443,
                "?v=10"
            )
        );
        let plain = Endpoint::parse("ws://127.0.0.1:8080", "wss://", "ws://").unwrap();
        assert_eq!(
            (plain.secure, plain.host, plain.port, plain.path),
            (false, "127.0.0.1", 8080, "")
        );
        let rest = Endpoint::parse(
            "http://127.0.0.1/api/v10/gateway/bot",
            "https://",
            "http://",
        )
        .unwrap();
        assert_eq!((rest.port, rest.path), (80, "api/v10/gateway/bot"));
        for bad in [
            "ftp://x",
            "ws://:80",
            "ws://host:port",
            "ws://host:70000",
            "wss://bad host/",
        ] {
            assert!(Endpoint::parse(bad, "wss://", "ws://").is_none(), "{bad}");
        }
    }
}
