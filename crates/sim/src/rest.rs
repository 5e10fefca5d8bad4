//! The REST API: `GET /gateway/bot`, `POST /channels/{id}/messages`, and
//! the faults a REST answer can have (rate limits, server errors, bodies
//! that are too large or never end).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::time::{Instant, Sleep};

use crate::observe::{RestFault, RestSeen};
use crate::state::Shared;

/// A REST answer's body: whole, or one that never ends.
pub(crate) type Body = Either<Full<Bytes>, Endless>;

pub(crate) fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the request carries `Authorization: Bot <token>`.
fn authorized(request: &Request<Incoming>, shared: &Shared) -> bool {
    let expected = format!("Bot {}", shared.config.token);
    request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value == expected)
}

/// The largest message body read.
const MAX_REST_BODY: usize = 64 * 1024;

/// `POST /channels/{id}/messages`: records the message and answers with it.
pub(crate) async fn create_message(
    request: Request<Incoming>,
    channel_id: String,
    shared: &Shared,
) -> Response<Body> {
    if !authorized(&request, shared) {
        return respond(
            StatusCode::UNAUTHORIZED,
            r#"{"message": "401: Unauthorized", "code": 0}"#,
        );
    }
    let body = http_body_util::Limited::new(request.into_body(), MAX_REST_BODY);
    let Ok(body) = http_body_util::BodyExt::collect(body).await else {
        return respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"message": "Request entity too large", "code": 40005}"#,
        );
    };
    let json: serde_json::Value =
        serde_json::from_slice(&body.to_bytes()).unwrap_or(serde_json::Value::Null);
    let Some(content) = json
        .get("content")
        .and_then(serde_json::Value::as_str)
        .filter(|c| !c.is_empty() && c.chars().count() <= 2000)
    else {
        return respond(
            StatusCode::BAD_REQUEST,
            r#"{"message": "Invalid Form Body: content must be 1 to 2000 characters", "code": 50035}"#,
        );
    };
    let reply_to = json
        .pointer("/message_reference/message_id")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let seen = crate::observe::MessageSeen {
        channel_id: channel_id.clone(),
        content: content.to_owned(),
        reply_to: reply_to.clone(),
    };
    let id = shared.observe(|o| {
        o.messages.push(seen);
        o.messages.len()
    });
    // A whole message object, as Discord answers (a REST client's model
    // of it deserializes).
    let mut body = serde_json::json!({
        "id": format!("{}", (1u64 << 40) + id as u64),
        "type": if reply_to.is_some() { 19 } else { 0 },
        "channel_id": channel_id,
        "content": content,
        "author": {"id": "1000000000000000001", "username": "shardwire-sim", "discriminator": "0",
                   "global_name": null, "avatar": null, "bot": true},
        // What the id's snowflake says: 262,144 ms after Discord's epoch.
        "timestamp": "2015-01-01T00:04:22.144000+00:00",
        "edited_timestamp": null,
        "tts": false,
        "mention_everyone": false,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": false,
        "flags": 0,
    });
    if let Some(message_id) = &reply_to {
        body["message_reference"] =
            serde_json::json!({"type": 0, "channel_id": channel_id, "message_id": message_id});
    }
    respond(StatusCode::OK, body.to_string())
}

/// `GET /gateway/bot`: the next scripted fault, if any is left, else the
/// gateway information.
pub(crate) fn gateway_bot(request: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    let authorized = authorized(request, shared);
    let fault = if authorized {
        shared.next_gateway_bot_fault()
    } else {
        None
    };
    let response = match (authorized, fault) {
        (false, _) => respond(
            StatusCode::UNAUTHORIZED,
            r#"{"message": "401: Unauthorized", "code": 0}"#,
        ),
        (true, Some(fault)) => faulty(&fault),
        (true, None) => {
            let config = &shared.config;
            let body = serde_json::json!({
                "url": config.gateway_url_override.as_deref().unwrap_or(&shared.gateway_url),
                "shards": shared.recommended_shards.load(std::sync::atomic::Ordering::Relaxed),
                "session_start_limit": {
                    "total": config.total,
                    "remaining": shared.remaining(),
                    "reset_after": 14_400_000u64,
                    "max_concurrency": config.max_concurrency,
                }
            });
            respond(StatusCode::OK, body.to_string())
        }
    };
    let status = response.status().as_u16();
    shared.observe(|o| {
        o.gateway_bot_requests.push(RestSeen {
            authorized,
            status,
            at: Instant::now(),
        });
    });
    response
}

/// The answer a [`RestFault`] gives.
fn faulty(fault: &RestFault) -> Response<Body> {
    match fault {
        RestFault::RateLimited {
            retry_after,
            in_body,
        } => {
            let seconds = retry_after.as_secs_f64();
            let mut response = if *in_body {
                let body = serde_json::json!({
                    "message": "You are being rate limited.",
                    "retry_after": seconds,
                    "global": false,
                });
                respond(StatusCode::TOO_MANY_REQUESTS, body.to_string())
            } else {
                respond(
                    StatusCode::TOO_MANY_REQUESTS,
                    r#"{"message": "You are being rate limited.", "global": false}"#,
                )
            };
            // The header carries whole seconds, rounded up, as Discord's.
            let header = seconds.ceil().to_string();
            if let Ok(value) = hyper::header::HeaderValue::from_str(&header) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        RestFault::Status(code) => respond(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r#"{"message": "Simulated failure.", "code": 0}"#,
        ),
        RestFault::Oversized(size) => respond(StatusCode::OK, vec![b' '; *size]),
        RestFault::Endless { every } => {
            let mut response = Response::new(Either::Right(Endless::new(*every)));
            response.headers_mut().insert(
                "content-type",
                hyper::header::HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

/// A body that never ends: a chunk of white space every `every` (none:
/// flat out), so a client must bound both the bytes and the time it reads.
pub(crate) struct Endless {
    every: Option<Duration>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Endless {
    fn new(every: Option<Duration>) -> Self {
        Self { every, sleep: None }
    }
}

impl hyper::body::Body for Endless {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        const CHUNK: &[u8] = &[b' '; 4096];
        if let Some(every) = self.every {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b" ")))));
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(CHUNK)))))
    }
}
