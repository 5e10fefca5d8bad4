//! Gateway information: `GET {api_base}/gateway/bot`, one shared instance
//! per token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use shardwire_codec::Token;

/// Discord's API, version 10.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read.
const MAX_BODY: usize = 64 * 1024;

/// What `/gateway/bot` answers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct GatewayInfo {
    /// The gateway URL, like `wss://gateway.discord.gg`.
    pub url: String,
    /// The recommended shard count.
    pub shards: u32,
    /// The session start limit.
    pub session_start_limit: SessionStartLimit,
}

/// How many sessions may still start today, and how fast.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct SessionStartLimit {
    /// Session starts allowed per day.
    pub total: u32,
    /// Session starts left.
    pub remaining: u32,
    /// When `remaining` resets.
    #[serde(deserialize_with = "millis")]
    pub reset_after: Duration,
    /// Identifies allowed per 5 seconds (the bucket count).
    pub max_concurrency: u32,
}

fn millis<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    u64::deserialize(de).map(Duration::from_millis)
}

/// Why the gateway information could not be had, or does not allow a start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// HTTP 401.
    #[error(
        "the token was refused (HTTP 401 from /gateway/bot): check it, or reset it in the Developer Portal (Bot, Reset Token)"
    )]
    Unauthorized,
    /// Another unsuccessful status.
    #[error("/gateway/bot answered HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Discord's message, or the start of the body.
        message: String,
    },
    /// The API base is not an `http` or `https` URL.
    #[error("invalid API base `{0}`: expected a URL like https://discord.com/api/v10")]
    InvalidUrl(String),
    /// Connecting or the exchange failed.
    #[error("could not reach {host}: {detail}")]
    Unreachable {
        /// The host.
        host: String,
        /// What went wrong.
        detail: String,
    },
    /// No answer in time.
    #[error("/gateway/bot did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not the expected JSON.
    #[error("could not read the /gateway/bot answer: {0}")]
    InvalidAnswer(String),
    /// Starting would pass the daily session start limit.
    #[error(
        "not enough session starts left today: {wanted} shards must identify, {remaining} of {total} starts remain (they reset in {reset_after:?}); start fewer shards, resume exported sessions, or wait"
    )]
    NotEnoughSessionStarts {
        /// Shards that would identify.
        wanted: u32,
        /// Starts left.
        remaining: u32,
        /// Starts per day.
        total: u32,
        /// When they reset.
        reset_after: Duration,
    },
}

/// The gateway of one bot token: its URL, recommended shard count and
/// session start limit. One instance per token and API base is shared by
/// everything in the process ([`Gateway::fetch`]).
pub struct Gateway {
    api_base: String,
    token: Token,
    /// The last answer, and when it came.
    info: Mutex<(GatewayInfo, std::time::Instant)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("api_base", &self.api_base)
            .field("token", &self.token)
            .field("info", &self.info())
            .finish()
    }
}

type Registry = Mutex<HashMap<(String, String), Weak<Gateway>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gateway {
    /// The gateway of `token` on Discord's API: the shared instance if one
    /// is alive, else a new one, fetched now.
    ///
    /// # Errors
    ///
    /// [`GatewayError`] when the request fails or the token is refused.
    pub async fn fetch(token: &Token) -> Result<Arc<Self>, GatewayError> {
        Self::fetch_from(DEFAULT_API_BASE, token).await
    }

    /// As [`Gateway::fetch`], on another API base (like a simulator's
    /// `http://127.0.0.1:PORT/api/v10`).
    ///
    /// # Errors
    ///
    /// As [`Gateway::fetch`].
    pub async fn fetch_from(api_base: &str, token: &Token) -> Result<Arc<Self>, GatewayError> {
        let api_base = api_base.trim_end_matches('/').to_owned();
        let key = (api_base.clone(), token.expose().to_owned());
        if let Some(gateway) = lock(registry()).get(&key).and_then(Weak::upgrade) {
            return Ok(gateway);
        }
        let info = get_gateway_bot(&api_base, token).await?;
        let mut registry = lock(registry());
        // Another task may have fetched meanwhile: keep one instance.
        if let Some(gateway) = registry.get(&key).and_then(Weak::upgrade) {
            *lock(&gateway.info) = (info, std::time::Instant::now());
            return Ok(gateway);
        }
        registry.retain(|_, gateway| gateway.strong_count() > 0);
        let gateway = Arc::new(Self {
            api_base,
            token: token.clone(),
            info: Mutex::new((info, std::time::Instant::now())),
        });
        registry.insert(key, Arc::downgrade(&gateway));
        Ok(gateway)
    }

    /// Fetches the information again (the remaining session starts change
    /// as shards identify).
    ///
    /// # Errors
    ///
    /// As [`Gateway::fetch`]; the last information is kept.
    pub async fn refresh(&self) -> Result<GatewayInfo, GatewayError> {
        let info = get_gateway_bot(&self.api_base, &self.token).await?;
        *lock(&self.info) = (info.clone(), std::time::Instant::now());
        Ok(info)
    }

    /// The information from the last fetch.
    #[must_use]
    pub fn info(&self) -> GatewayInfo {
        lock(&self.info).0.clone()
    }

    /// How long ago the information was fetched.
    #[must_use]
    pub fn age(&self) -> Duration {
        lock(&self.info).1.elapsed()
    }

    /// The API base it fetches from.
    #[must_use]
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The token.
    #[must_use]
    pub fn token(&self) -> &Token {
        &self.token
    }

    /// Checks that `wanted` shards may identify today.
    ///
    /// # Errors
    ///
    /// [`GatewayError::NotEnoughSessionStarts`] when fewer starts remain.
    pub fn check_starts(&self, wanted: u32) -> Result<(), GatewayError> {
        let limit = self.info().session_start_limit;
        if wanted > limit.remaining {
            return Err(GatewayError::NotEnoughSessionStarts {
                wanted,
                remaining: limit.remaining,
                total: limit.total,
                reset_after: limit.reset_after,
            });
        }
        Ok(())
    }
}

/// `GET {api_base}/gateway/bot` with the bot token.
async fn get_gateway_bot(api_base: &str, token: &Token) -> Result<GatewayInfo, GatewayError> {
    let body = api_request(api_base, token, "GET", "/gateway/bot", None).await?;
    serde_json::from_slice(&body).map_err(|e| GatewayError::InvalidAnswer(e.to_string()))
}

/// One authorized request to Discord's REST API (`Authorization: Bot …`),
/// with an optional JSON body: what `/gateway/bot` needs, and enough for an
/// example bot to post a reply. A full REST client (rate limits, routes)
/// is another library's job, such as twilight-http.
///
/// # Errors
///
/// [`GatewayError::Unauthorized`] for HTTP 401, [`GatewayError::Status`]
/// for another unsuccessful status, and the transport errors.
pub async fn api_request(
    api_base: &str,
    token: &Token,
    method: &str,
    path: &str,
    json: Option<String>,
) -> Result<Bytes, GatewayError> {
    let api_base = api_base.trim_end_matches('/');
    let invalid = || GatewayError::InvalidUrl(api_base.to_owned());
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|_| invalid())?;
    let url = format!("{api_base}{path}");
    let exchange = request(&url, api_base, token, method, json);
    let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| GatewayError::Timeout(REQUEST_TIMEOUT))??;
    match status {
        200..=299 => Ok(body),
        401 => Err(GatewayError::Unauthorized),
        status => {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
            Err(GatewayError::Status { status, message })
        }
    }
}

async fn request(
    url: &str,
    api_base: &str,
    token: &Token,
    method: hyper::Method,
    json: Option<String>,
) -> Result<(u16, Bytes), GatewayError> {
    let invalid = || GatewayError::InvalidUrl(api_base.to_owned());
    let endpoint =
        shardwire_shard::Endpoint::parse(url, "https://", "http://").ok_or_else(invalid)?;
    let unreachable = |detail: String| GatewayError::Unreachable {
        host: endpoint.host.to_owned(),
        detail,
    };
    let stream = endpoint
        .open()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("/{}", endpoint.path))
        .header("host", endpoint.authority)
        .header("authorization", format!("Bot {}", token.expose()))
        .header(
            "user-agent",
            concat!(
                "DiscordBot (https://github.com/shardwire/shardwire, ",
                env!("CARGO_PKG_VERSION"),
                ")"
            ),
        );
    if json.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(json.unwrap_or_default())))
        .map_err(|_| invalid())?;
    exchange(TokioIo::new(stream), request)
        .await
        .map_err(unreachable)
}

async fn exchange(
    io: TokioIo<shardwire_shard::Stream>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(u16, Bytes), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
