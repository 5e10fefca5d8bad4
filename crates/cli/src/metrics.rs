//! `--metrics ADDR`: the library's metrics in the Prometheus text format,
//! served on `http://ADDR/metrics`.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shardwire_cluster::metrics::{IDENTIFY_QUEUE_WAIT, RESHARD_DURATION};
use tokio::net::TcpListener;

use super::fail;

/// How often the recorder drains its histograms (the exporter's default).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long a scraper may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The text format's content type (version 0.0.4).
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds of every `_seconds` histogram, from a loopback heartbeat
/// to a slow one, so that `histogram_quantile` works.
const SECONDS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The identify queue's wait, and a reshard (the new generation's
/// identifies), take 5-second rounds, up to many of them for a large bot.
const IDENTIFY_WAIT_BUCKETS: [f64; 10] =
    [0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The `--metrics` flag that `tail`, `node` and `demo` share.
#[derive(Debug, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Serve Prometheus metrics on http://ADDR/metrics (like 127.0.0.1:9100; port 0 picks one)
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<SocketAddr>,
}

impl MetricsArgs {
    /// With `--metrics`, binds its address, installs the global recorder
    /// and serves it in the background. Must run before any shard is made:
    /// the library registers a shard's metrics when it makes the shard.
    pub(crate) async fn start(&self) -> Result<(), ExitCode> {
        let Some(addr) = self.metrics else {
            return Ok(());
        };
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(error) => return Err(fail(1, bind_error(addr, &error))),
        };
        let handle = match recorder().install_recorder() {
            Ok(handle) => handle,
            Err(error) => return Err(fail(1, format_args!("cannot record metrics: {error}"))),
        };
        let served = listener.local_addr().unwrap_or(addr);
        tracing::info!("serving metrics on http://{served}/metrics");
        tokio::spawn(upkeep(handle.clone()));
        tokio::spawn(serve(listener, handle));
        Ok(())
    }
}

/// The recorder: counters and gauges as recorded, histograms with buckets.
fn recorder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(IDENTIFY_QUEUE_WAIT.into()),
                &IDENTIFY_WAIT_BUCKETS,
            )
        })
        .and_then(|builder| {
            builder.set_buckets_for_metric(
                Matcher::Full(RESHARD_DURATION.into()),
                &IDENTIFY_WAIT_BUCKETS,
            )
        })
        .expect("only an empty list of buckets is refused")
}

/// `IP:PORT`, like `127.0.0.1:9100` or `[::]:9100`.
fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!(
            "`{value}` is not an IP address and port: pass one like 127.0.0.1:9100 or 0.0.0.0:9100"
        )
    })
}

/// One line: what failed, on which address, and what to do.
fn bind_error(addr: SocketAddr, error: &std::io::Error) -> String {
    let fix = match error.kind() {
        ErrorKind::AddrInUse => "the port is in use: pass --metrics with another port",
        ErrorKind::AddrNotAvailable => {
            "no interface of this machine has that address: pass one it has, like 127.0.0.1 or 0.0.0.0"
        }
        ErrorKind::PermissionDenied => {
            "this user may not listen there: pass --metrics with a port above 1023"
        }
        _ => "pass --metrics with another address",
    };
    format!("cannot serve metrics on {addr}: {error}; {fix}")
}

async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

async fn serve(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: wait, then go on.
                tracing::warn!(%error, "the metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| respond(request, handle.clone()));
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "a metrics connection ended with an error");
            }
        });
    }
}

/// `GET /metrics`: the text format; anything else is refused.
async fn respond(
    request: Request<Incoming>,
    handle: PrometheusHandle,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "not found: metrics are on /metrics\n",
        ));
    }
    if request.method() != Method::GET {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Ok(response);
    }
    // Thousands of shards make a large page: render it off the runtime's
    // worker threads, which run the shards.
    let Ok(text) = tokio::task::spawn_blocking(move || handle.render()).await else {
        return Ok(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "rendering failed\n",
        ));
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_an_ip_and_a_port() {
        assert_eq!(
            parse_addr("127.0.0.1:9100"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert!(parse_addr("[::1]:0").is_ok());
        for bad in ["9100", "localhost:9100", "127.0.0.1", "127.0.0.1:99999", ""] {
            let error = parse_addr(bad).unwrap_err();
            assert!(error.contains("like 127.0.0.1:9100"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_bind_error_names_the_address_and_the_fix() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 80));
        let denied = bind_error(addr, &ErrorKind::PermissionDenied.into());
        assert!(
            denied.starts_with("cannot serve metrics on 127.0.0.1:80: ")
                && denied.contains("above 1023"),
            "{denied}"
        );
        let other = bind_error(addr, &ErrorKind::Other.into());
        assert!(
            other.ends_with("pass --metrics with another address"),
            "{other}"
        );
    }
}
