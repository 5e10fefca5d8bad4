//! The listeners: HTTP for REST, and the upgrade to the gateway WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use shardwire_codec::Compression;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Listener;
use crate::rest::{self, Body, respond};
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

async fn handle(
    mut request: Request<Incoming>,
    kind: Listener,
    shared: Arc<Shared>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    if kind == Listener::Main && path == "/api/v10/gateway/bot" {
        return Ok(rest::gateway_bot(&request, &shared));
    }
    if kind == Listener::Main
        && request.method() == hyper::Method::POST
        && let Some(channel_id) = path
            .strip_prefix("/api/v10/channels/")
            .and_then(|rest| rest.strip_suffix("/messages"))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    {
        let channel_id = channel_id.to_owned();
        return Ok(rest::create_message(request, channel_id, &shared).await);
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
    let wrong_accept_key = shared.config.wrong_accept_key;
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                match upgrade.await {
                    // The frames are the codec's: only the upgraded
                    // connection is taken from fastwebsockets.
                    Ok(socket) => {
                        session::run(socket.into_inner(), kind, compression, shared).await;
                    }
                    Err(error) => tracing::debug!(%error, "WebSocket upgrade failed"),
                }
            });
            let (mut parts, _) = response.into_parts();
            if wrong_accept_key {
                // A key that answers some other request: a client must
                // refuse the connection (RFC 6455, 4.1).
                parts.headers.insert(
                    "sec-websocket-accept",
                    hyper::header::HeaderValue::from_static("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                );
            }
            Ok(Response::from_parts(
                parts,
                Either::Left(Full::new(Bytes::new())),
            ))
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
