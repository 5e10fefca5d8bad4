//! The listeners: HTTP for REST, and the upgrade to the gateway WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shardwire_codec::Compression;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Listener;
use crate::session;
use crate::state::Shared;

pub(crate) async fn serve(
    listener: TcpListener,
    kind: Listener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(request, kind, shared.clone()));
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(
    mut request: Request<Incoming>,
    kind: Listener,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    if kind == Listener::Main && path == "/api/v10/gateway/bot" {
        return Ok(gateway_bot(&request, &shared));
    }
    if kind == Listener::Main
        && request.method() == hyper::Method::POST
        && let Some(channel_id) = path
            .strip_prefix("/api/v10/channels/")
            .and_then(|rest| rest.strip_suffix("/messages"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    {
        let channel_id = channel_id.to_owned();
        return Ok(create_message(request, channel_id, &shared).await);
    }
    if path != "/" || !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return Ok(respond(
            StatusCode::NOT_FOUND,
            r#"{"message": "404: Not Found", "code": 0}"#,
        ));
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    let compression = match parse_query(&query) {
        Ok(compression) => compression,
        Err(message) => {
            let body = format!(
                r#"{{"message": {}, "code": 0}}"#,
                serde_json::Value::from(message)
            );
            return Ok(respond(StatusCode::BAD_REQUEST, body));
        }
    };
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                match upgrade.await {
                    Ok(socket) => session::run(socket, kind, compression, shared).await,
                    Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
                }
            });
            let (parts, _) = response.into_parts();
            Ok(Response::from_parts(parts, Full::new(Bytes::new())))
        }
        Err(error) => Ok(respond(
            StatusCode::BAD_REQUEST,
            format!(r#"{{"message": "{error}"}}"#),
        )),
    }
}

/// Checks `v`, `encoding` and `compress` as Discord does.
fn parse_query(query: &str) -> Result<Compression, String> {
    let mut version = None;
    let mut encoding = None;
    let mut compression = Compression::None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "v" => version = Some(value.to_owned()),
            "encoding" => encoding = Some(value.to_owned()),
            "compress" => {
                compression = value
                    .parse()
                    .map_err(|_| format!("unsupported compress value `{value}`"))?;
            }
            _ => {}
        }
    }
    if version.as_deref() != Some("10") {
        return Err("this gateway speaks v=10".into());
    }
    if encoding.as_deref().is_some_and(|e| e != "json") {
        return Err("this gateway speaks encoding=json".into());
    }
    Ok(compression)
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
async fn create_message(
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
        reply_to,
    };
    let id = shared.observe(|o| {
        o.messages.push(seen);
        o.messages.len()
    });
    let body = serde_json::json!({
        "id": format!("{}", (1u64 << 40) + id as u64),
        "channel_id": channel_id,
        "content": content,
        "author": {"id": "1000000000000000001", "username": "shardwire-sim", "discriminator": "0", "bot": true},
    });
    respond(StatusCode::OK, body.to_string())
}

fn gateway_bot(request: &Request<Incoming>, shared: &Shared) -> Response<Body> {
    let authorized = authorized(request, shared);
    shared.observe(|o| o.gateway_bot_requests.push(authorized));
    if !authorized {
        return respond(
            StatusCode::UNAUTHORIZED,
            r#"{"message": "401: Unauthorized", "code": 0}"#,
        );
    }
    let config = &shared.config;
    let body = serde_json::json!({
        "url": shared.gateway_url,
        "shards": config.shards,
        "session_start_limit": {
            "total": config.total,
            "remaining": shared.remaining(),
            "reset_after": 14_400_000u64,
            "max_concurrency": config.max_concurrency,
        }
    });
    respond(StatusCode::OK, body.to_string())
}
