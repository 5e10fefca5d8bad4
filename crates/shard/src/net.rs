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
/// rustls's error, if it cannot build it (it always can with the ring
/// provider's default protocol versions).
pub fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, rustls::Error>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| Arc::new(builder.with_root_certificates(roots).with_no_client_auth()))
        })
        .clone()
}

/// Which kind of URL an [`Endpoint`] is parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `wss://` (TLS) or `ws://`: a gateway.
    WebSocket,
    /// `https://` (TLS) or `http://`: the REST API.
    Http,
}

impl Scheme {
    /// The secure and the plain scheme's names.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::WebSocket => ("wss", "ws"),
            Self::Http => ("https", "http"),
        }
    }
}

/// Why a URL cannot be connected to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a usable {expected} URL: {reason}")]
#[non_exhaustive]
pub struct InvalidUrl {
    /// The URL as given.
    pub url: String,
    /// What it should have been, like `ws:// or wss://`.
    pub expected: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Where a URL points, parsed by [`http::Uri`](hyper::http::Uri): a scheme
/// in any case, a host name, IPv4 or bracketed IPv6 address, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoint {
    /// The scheme asks for TLS.
    pub secure: bool,
    /// `host[:port]`, for the `Host` header.
    pub authority: String,
    /// The host to connect to (an IPv6 address without its brackets).
    pub host: String,
    /// The port (443 or 80 unless given).
    pub port: u16,
    /// The path and query, starting with `/`.
    pub path: String,
}

impl Endpoint {
    /// Parses `url`, whose scheme must be one of `scheme`'s two.
    ///
    /// # Errors
    ///
    /// [`InvalidUrl`], naming what is wrong: not a URL, another scheme, no
    /// host, a port out of range, user information, or a secure host TLS
    /// cannot name.
    pub fn parse(url: &str, scheme: Scheme) -> Result<Self, InvalidUrl> {
        let (secure_name, plain_name) = scheme.names();
        let invalid = |reason: &str| InvalidUrl {
            url: url.to_owned(),
            expected: match scheme {
                Scheme::WebSocket => "ws:// or wss://",
                Scheme::Http => "http:// or https://",
            },
            reason: reason.to_owned(),
        };
        let uri: hyper::http::Uri = url
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| invalid(&error.to_string()))?;
        let secure = match uri.scheme_str() {
            Some(name) if name.eq_ignore_ascii_case(secure_name) => true,
            Some(name) if name.eq_ignore_ascii_case(plain_name) => false,
            Some(_) => return Err(invalid("another scheme")),
            None => return Err(invalid("no scheme")),
        };
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user information is not allowed"));
        }
        let host = authority.host();
        let bare = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        if bare.is_empty() {
            return Err(invalid("no host"));
        }
        if host.starts_with('[') && bare.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("an invalid IPv6 address"));
        }
        // `http::Uri` takes `host:word` with no port; a URL must not.
        if authority.port().is_none() && authority.as_str() != host {
            return Err(invalid("the port is not a number"));
        }
        let port = match (authority.port(), secure) {
            (Some(port), _) => port
                .as_str()
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| invalid("the port is not from 1 to 65535"))?,
            (None, true) => 443,
            (None, false) => 80,
        };
        if secure && rustls::pki_types::ServerName::try_from(bare.to_owned()).is_err() {
            return Err(invalid("TLS cannot verify this host name"));
        }
        Ok(Self {
            secure,
            authority: authority.as_str().to_owned(),
            host: bare.to_owned(),
            port,
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |path| path.as_str().to_owned()),
        })
    }

    /// Opens a TCP connection to it (no Nagle delay), with TLS if secure.
    ///
    /// # Errors
    ///
    /// Connecting or the TLS handshake failed.
    pub async fn open(&self) -> io::Result<Stream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        if !self.secure {
            return Ok(Stream::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
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

    fn parse(url: &str) -> Result<Endpoint, InvalidUrl> {
        Endpoint::parse(url, Scheme::WebSocket)
    }

    #[test]
    fn urls_become_endpoints() {
        let ws = parse("wss://gateway.discord.gg/?v=10").unwrap();
        assert_eq!(
            (ws.secure, ws.authority.as_str(), ws.host.as_str(), ws.port),
            (true, "gateway.discord.gg", "gateway.discord.gg", 443)
        );
        assert_eq!(ws.path, "/?v=10");
        let plain = parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (
                plain.secure,
                plain.host.as_str(),
                plain.port,
                plain.path.as_str()
            ),
            (false, "127.0.0.1", 8080, "/")
        );
        let v6 = parse("ws://[::1]:9000/?v=10&encoding=json").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.authority.as_str(), v6.port),
            ("::1", "[::1]:9000", 9000)
        );
        let upper = parse("WSS://Gateway.Discord.GG").unwrap();
        assert!(upper.secure);
        let rest = Endpoint::parse("http://127.0.0.1/api/v10/gateway/bot", Scheme::Http).unwrap();
        assert_eq!(
            (rest.port, rest.path.as_str()),
            (80, "/api/v10/gateway/bot")
        );
    }

    #[test]
    fn urls_that_can_never_work_are_refused_with_the_reason() {
        for bad in [
            "ws://[::zz]:99999/%zz",
            "ws://[::zz]/",
            "ftp://x",
            "https://x",
            "gateway.discord.gg",
            "ws://:80",
            "ws://host:port",
            "ws://host:70000",
            "ws://host:0",
            "ws://user@host",
            "wss://bad host/",
            "",
            "not a url",
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(error.to_string().contains("ws:// or wss://"), "{error}");
        }
    }
}
