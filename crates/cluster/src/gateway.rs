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
use shardwire_shard::{Endpoint, Scheme};

/// Discord's API, version 10.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// How long one request may take, connecting and the whole answer included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer read.
const MAX_BODY: usize = 64 * 1024;
/// How long `GET /gateway/bot` waits in all for rate limits (429) and
/// between retries, before it gives up.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);
/// Retries of `GET /gateway/bot` after a server error (5xx), a failed
/// connection or a timeout, each after a longer wait (0.5 s, 1 s, 2 s).
const RETRIES: u32 = 3;
/// The first wait before a retry.
const FIRST_RETRY: Duration = Duration::from_millis(500);

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

/// What a REST client's `GET /gateway/bot` answered, such as twilight-http's
/// `client.gateway().authed()`.
impl From<twilight_model::gateway::connection_info::BotConnectionInfo> for GatewayInfo {
    fn from(info: twilight_model::gateway::connection_info::BotConnectionInfo) -> Self {
        let limit = info.session_start_limit;
        Self {
            url: info.url,
            shards: info.shards,
            session_start_limit: SessionStartLimit::new(
                limit.total,
                limit.remaining,
                Duration::from_millis(limit.reset_after),
                u32::from(limit.max_concurrency),
            ),
        }
    }
}

impl SessionStartLimit {
    /// A limit as `/gateway/bot` reports one: `total` starts a day,
    /// `remaining` of them left until `reset_after`, `max_concurrency`
    /// identify buckets.
    #[must_use]
    pub fn new(total: u32, remaining: u32, reset_after: Duration, max_concurrency: u32) -> Self {
        Self {
            total,
            remaining,
            reset_after,
            max_concurrency,
        }
    }
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
    /// No whole answer in time.
    #[error("the API did not answer in full within {0:?}")]
    Timeout(Duration),
    /// The answer's body was larger than shardwire reads.
    #[error("the answer is larger than {limit} bytes; is the API base right?")]
    AnswerTooLarge {
        /// The most bytes read.
        limit: usize,
    },
    /// HTTP 429 for longer than a start waits.
    #[error(
        "/gateway/bot is rate limited for another {retry_after:?}, past the {max_wait:?} a start waits; try again later"
    )]
    RateLimited {
        /// How long the API asked to wait.
        retry_after: Duration,
        /// The longest wait in all ([`MAX_RETRY_WAIT`]).
        max_wait: Duration,
    },
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
        // Another task may have fetched meanwhile: one instance is kept.
        Ok(Self::with_info(&api_base, token, info))
    }

    /// The gateway of `token` from information the bot already has (from
    /// its own REST client): nothing is fetched now. The shared instance, if
    /// one is alive, takes this information; [`Gateway::refresh`] still
    /// fetches from `api_base`.
    #[must_use]
    pub fn with_info(api_base: &str, token: &Token, info: GatewayInfo) -> Arc<Self> {
        let api_base = api_base.trim_end_matches('/').to_owned();
        let key = (api_base.clone(), token.expose().to_owned());
        let mut registry = lock(registry());
        if let Some(gateway) = registry.get(&key).and_then(Weak::upgrade) {
            *lock(&gateway.info) = (info, std::time::Instant::now());
            return gateway;
        }
        registry.retain(|_, gateway| gateway.strong_count() > 0);
        let gateway = Arc::new(Self {
            api_base,
            token: token.clone(),
            info: Mutex::new((info, std::time::Instant::now())),
        });
        registry.insert(key, Arc::downgrade(&gateway));
        gateway
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

/// `GET {api_base}/gateway/bot` with the bot token, retried (see
/// [`with_retries`]). The gateway URL of the answer is checked, so that
/// shards are never started on a URL that cannot work.
async fn get_gateway_bot(api_base: &str, token: &Token) -> Result<GatewayInfo, GatewayError> {
    let body = with_retries(|| {
        let get = hyper::Method::GET;
        exchange_within(REQUEST_TIMEOUT, api_base, token, get, "/gateway/bot", None)
    })
    .await?;
    gateway_info(&body)
}

/// Runs `attempt` until it succeeds: after a 429 it waits as long as the
/// answer asks (`retry_after` in the body, else the `Retry-After` header),
/// and after a server error (5xx), a failed connection or a timeout it
/// tries [`RETRIES`] more times, waiting 0.5 s, 1 s, then 2 s. It waits
/// [`MAX_RETRY_WAIT`] in all at most: a longer rate limit fails at once,
/// with how long it asked for.
async fn with_retries<F, A>(mut attempt: F) -> Result<Bytes, GatewayError>
where
    F: FnMut() -> A,
    A: std::future::Future<Output = Result<Answer, GatewayError>>,
{
    let mut waited = Duration::ZERO;
    let mut retries = 0;
    loop {
        let next_retry = FIRST_RETRY * (1 << retries.min(8));
        let wait = match attempt().await {
            Ok(answer) if answer.status == 429 => {
                let wait = answer.retry_after();
                if waited + wait > MAX_RETRY_WAIT {
                    return Err(GatewayError::RateLimited {
                        retry_after: wait,
                        max_wait: MAX_RETRY_WAIT,
                    });
                }
                tracing::info!(?wait, "the API is rate limiting; waiting as it asks");
                wait
            }
            Ok(answer) if answer.status >= 500 && retries < RETRIES => {
                tracing::info!(status = answer.status, wait = ?next_retry, "the API failed; retrying");
                retries += 1;
                next_retry
            }
            Err(error @ (GatewayError::Unreachable { .. } | GatewayError::Timeout(_)))
                if retries < RETRIES =>
            {
                tracing::info!(%error, wait = ?next_retry, "the API failed; retrying");
                retries += 1;
                next_retry
            }
            Ok(answer) => return answer.into_result(),
            Err(error) => return Err(error),
        };
        tokio::time::sleep(wait).await;
        waited += wait;
    }
}

/// The gateway information of a successful answer, its URL checked.
fn gateway_info(body: &[u8]) -> Result<GatewayInfo, GatewayError> {
    let info: GatewayInfo =
        serde_json::from_slice(body).map_err(|e| GatewayError::InvalidAnswer(e.to_string()))?;
    if let Err(error) = Endpoint::parse(&info.url, Scheme::WebSocket) {
        return Err(GatewayError::InvalidAnswer(format!(
            "the gateway URL {error}"
        )));
    }
    Ok(info)
}

/// One REST answer, read whole.
struct Answer {
    status: u16,
    /// The `Retry-After` header, in seconds.
    retry_after: Option<f64>,
    body: Bytes,
}

impl Answer {
    /// How long a 429 asks to wait: the body's `retry_after` (fractional
    /// seconds), else the header's, else a second; never negative.
    fn retry_after(&self) -> Duration {
        let in_body = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|value| value.get("retry_after").and_then(serde_json::Value::as_f64));
        in_body
            .or(self.retry_after)
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
            .map_or(Duration::from_secs(1), |seconds| {
                Duration::from_secs_f64(seconds.min(MAX_RETRY_WAIT.as_secs_f64() * 2.0))
            })
    }

    /// The body of a successful answer, or the error the status means.
    fn into_result(self) -> Result<Bytes, GatewayError> {
        match self.status {
            200..=299 => Ok(self.body),
            401 => Err(GatewayError::Unauthorized),
            status => {
                let message = serde_json::from_slice::<serde_json::Value>(&self.body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                    .unwrap_or_else(|| {
                        String::from_utf8_lossy(&self.body)
                            .chars()
                            .take(200)
                            .collect()
                    });
                Err(GatewayError::Status { status, message })
            }
        }
    }
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
    let method = hyper::Method::from_bytes(method.as_bytes())
        .map_err(|_| GatewayError::InvalidUrl(api_base.to_owned()))?;
    exchange_within(REQUEST_TIMEOUT, api_base, token, method, path, json)
        .await?
        .into_result()
}

/// One request and its whole answer, within `timeout` ([`REQUEST_TIMEOUT`]
/// but in tests): an answer that trickles in, or never ends, is cut off
/// there.
async fn exchange_within(
    timeout: Duration,
    api_base: &str,
    token: &Token,
    method: hyper::Method,
    path: &str,
    json: Option<String>,
) -> Result<Answer, GatewayError> {
    let api_base = api_base.trim_end_matches('/');
    let url = format!("{api_base}{path}");
    let exchange = request(&url, api_base, token, method, json);
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| GatewayError::Timeout(timeout))?
}

async fn request(
    url: &str,
    api_base: &str,
    token: &Token,
    method: hyper::Method,
    json: Option<String>,
) -> Result<Answer, GatewayError> {
    let invalid = || GatewayError::InvalidUrl(api_base.to_owned());
    let endpoint = Endpoint::parse(url, Scheme::Http).map_err(|_| invalid())?;
    let unreachable = |detail: String| GatewayError::Unreachable {
        host: endpoint.host.clone(),
        detail,
    };
    let stream = endpoint
        .open()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(endpoint.path.as_str())
        .header("host", endpoint.authority.as_str())
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
        .map_err(|error| match error {
            Failure::TooLarge => GatewayError::AnswerTooLarge { limit: MAX_BODY },
            Failure::Other(detail) => unreachable(detail),
        })
}

/// Why an exchange failed.
enum Failure {
    /// The body passed [`MAX_BODY`].
    TooLarge,
    Other(String),
}

async fn exchange(
    io: TokioIo<shardwire_shard::Stream>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<Answer, Failure> {
    let other = |error: hyper::Error| Failure::Other(error.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(other)?;
    let driver = tokio::spawn(connection);
    let result = async {
        let response = sender.send_request(request).await.map_err(other)?;
        let status = response.status().as_u16();
        let headers = response.headers();
        let declared = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > MAX_BODY as u64) {
            return Err(Failure::TooLarge);
        }
        let retry_after = headers
            .get(hyper::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok()?.trim().parse::<f64>().ok());
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    Failure::TooLarge
                } else {
                    Failure::Other(error.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    fn answer(status: u16, retry_after: Option<f64>, body: &str) -> Result<Answer, GatewayError> {
        Ok(Answer {
            status,
            retry_after,
            body: Bytes::from(body.to_owned()),
        })
    }

    fn unreachable() -> Result<Answer, GatewayError> {
        Err(GatewayError::Unreachable {
            host: "api".into(),
            detail: "refused".into(),
        })
    }

    /// Runs `with_retries` over scripted answers; returns its result and
    /// when each attempt was made, in seconds from the start.
    async fn script(
        answers: Vec<Result<Answer, GatewayError>>,
    ) -> (Result<Bytes, GatewayError>, Vec<f64>) {
        let start = Instant::now();
        let answers = Mutex::new(VecDeque::from(answers));
        let times = Mutex::new(Vec::new());
        let result = with_retries(|| {
            times.lock().unwrap().push(start.elapsed().as_secs_f64());
            let next = answers.lock().unwrap().pop_front();
            async move { next.expect("an attempt past the script") }
        })
        .await;
        (result, times.into_inner().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_waited_out_as_its_header_or_body_asks() {
        let (result, times) = script(vec![
            answer(429, Some(2.0), "{}"),
            answer(429, Some(2.0), r#"{"retry_after": 0.25}"#),
            answer(429, None, "not json"),
            answer(200, None, "ok"),
        ])
        .await;
        assert_eq!(result.unwrap(), "ok");
        // 2 s from the header, 0.25 s from the body (which wins), and 1 s
        // when the answer says nothing.
        assert_eq!(times, vec![0.0, 2.0, 2.25, 3.25]);
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_and_failed_connections_are_retried_three_times() {
        let (result, times) = script(vec![
            answer(502, None, ""),
            unreachable(),
            answer(503, None, ""),
            answer(200, None, "ok"),
        ])
        .await;
        assert_eq!(result.unwrap(), "ok");
        assert_eq!(times, vec![0.0, 0.5, 1.5, 3.5]);
        let (result, times) = script(vec![
            answer(500, None, ""),
            answer(500, None, ""),
            answer(500, None, ""),
            answer(500, None, r#"{"message": "down"}"#),
        ])
        .await;
        assert!(
            matches!(result, Err(GatewayError::Status { status: 500, ref message }) if message == "down"),
            "{result:?}"
        );
        assert_eq!(times.len(), 4, "then it gives up");
        let (result, _) = script((0..4).map(|_| unreachable()).collect()).await;
        assert!(matches!(result, Err(GatewayError::Unreachable { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_past_the_bound_fail_at_once_with_the_figures() {
        let (result, times) = script(vec![answer(429, Some(3600.0), "{}")]).await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, GatewayError::RateLimited { retry_after, .. } if retry_after >= MAX_RETRY_WAIT),
            "{error}"
        );
        assert_eq!(times, vec![0.0], "no wait it cannot finish");
        // Waits add up: the one that would pass the bound is not waited.
        let answers = (0..10).map(|_| answer(429, Some(25.0), "{}")).collect();
        let (result, times) = script(answers).await;
        assert!(matches!(result, Err(GatewayError::RateLimited { .. })));
        assert_eq!(times, vec![0.0, 25.0, 50.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_refused_or_a_client_error_is_not_retried() {
        let (result, times) = script(vec![answer(401, None, "")]).await;
        assert!(matches!(result, Err(GatewayError::Unauthorized)));
        assert_eq!(times.len(), 1);
        let (result, times) = script(vec![answer(404, None, "")]).await;
        assert!(matches!(
            result,
            Err(GatewayError::Status { status: 404, .. })
        ));
        assert_eq!(times.len(), 1);
        let (result, times) =
            script(vec![Err(GatewayError::AnswerTooLarge { limit: MAX_BODY })]).await;
        let error = result.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the answer is larger than 65536 bytes; is the API base right?"
        );
        assert_eq!(times.len(), 1);
    }

    #[tokio::test]
    async fn an_answer_that_trickles_in_forever_is_cut_off_at_the_timeout() {
        let sim = shardwire_sim::Sim::builder()
            .gateway_bot_faults(vec![shardwire_sim::RestFault::Endless {
                every: Some(Duration::from_millis(20)),
            }])
            .start()
            .await
            .unwrap();
        let token = Token::new(sim.token());
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let result = exchange_within(
            timeout,
            sim.api_url(),
            &token,
            hyper::Method::GET,
            "/gateway/bot",
            None,
        )
        .await;
        assert!(matches!(result, Err(GatewayError::Timeout(t)) if t == timeout));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_unusable_gateway_url_is_an_invalid_answer_naming_it() {
        let body = |url: &str| {
            serde_json::json!({
                "url": url, "shards": 1,
                "session_start_limit": {"total": 1, "remaining": 1, "reset_after": 1, "max_concurrency": 1},
            })
            .to_string()
        };
        let error = gateway_info(body("ws://[::zz]:99999/%zz").as_bytes()).unwrap_err();
        let line = error.to_string();
        assert!(matches!(error, GatewayError::InvalidAnswer(_)));
        assert!(
            line.contains("ws://[::zz]:99999/%zz") && line.contains("wss://"),
            "{line}"
        );
        assert!(gateway_info(body("wss://gateway.discord.gg").as_bytes()).is_ok());
    }
}
