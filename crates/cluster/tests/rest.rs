//! `GET /gateway/bot` against a simulator whose REST answers misbehave:
//! rate limits and server errors are waited out, answers too large or
//! endless are refused with what happened, and a gateway URL that can
//! never work stops the start. The waits are real but short (the retry
//! schedule itself is tested on a paused clock, in the crate).

use std::time::Duration;

use shardwire_cluster::{Cluster, ClusterConfig, ClusterError, Gateway, GatewayError};
use shardwire_codec::Token;
use shardwire_sim::{RestFault, Sim};
use twilight_model::gateway::Intents;

async fn sim(faults: Vec<RestFault>) -> Sim {
    Sim::builder()
        .gateway_bot_faults(faults)
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_429_and_a_5xx_are_waited_out_and_retried() {
    let sim = sim(vec![
        RestFault::RateLimited {
            retry_after: Duration::from_millis(200),
            in_body: true,
        },
        RestFault::Status(502),
    ])
    .await;
    let token = Token::new(sim.token());
    let gateway = Gateway::fetch_from(sim.api_url(), &token).await.unwrap();
    assert_eq!(gateway.info().shards, 1);
    let seen = sim.observations().gateway_bot_requests;
    let statuses: Vec<u16> = seen.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 502, 200]);
    // The body's 0.2 s (not the header's whole second), then the first
    // retry's 0.5 s.
    let first_wait = seen[1].at - seen[0].at;
    assert!(first_wait >= Duration::from_millis(200), "{first_wait:?}");
    assert!(first_wait < Duration::from_millis(1000), "{first_wait:?}");
    assert!(seen[2].at - seen[1].at >= Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn an_answer_too_large_or_endless_is_refused_with_its_size() {
    for fault in [
        RestFault::Oversized(100_000),
        RestFault::Endless { every: None },
    ] {
        let sim = sim(vec![fault.clone()]).await;
        let token = Token::new(sim.token());
        let error = Gateway::fetch_from(sim.api_url(), &token)
            .await
            .unwrap_err();
        assert!(
            matches!(error, GatewayError::AnswerTooLarge { limit: 65536 }),
            "{fault:?}: {error}"
        );
        assert!(error.to_string().contains("larger than 65536 bytes"));
        assert_eq!(
            sim.observations().gateway_bot_requests.len(),
            1,
            "not retried"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_gateway_url_that_can_never_work_stops_the_start_naming_it() {
    let sim = Sim::builder()
        .gateway_url_override("ws://[::zz]:99999/%zz")
        .start()
        .await
        .unwrap();
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    let error = Cluster::start(config).await.unwrap_err();
    let line = error.to_string();
    assert!(
        matches!(error, ClusterError::Gateway(GatewayError::InvalidAnswer(_))),
        "{line}"
    );
    assert!(line.contains("ws://[::zz]:99999/%zz"), "{line}");
    assert!(
        sim.observations().connections.is_empty(),
        "no shard connected"
    );
}

/// An HTTP server written by hand: it reads a request head and answers
/// `answer`, byte for byte, then closes. Returns the API base.
async fn raw_api(answer: &'static [u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v10", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&byte[..read]),
                    }
                }
                let _ = stream.write_all(answer).await;
            });
        }
    });
    base
}

#[tokio::test(start_paused = true)]
async fn answers_no_discord_would_give_are_one_clear_error_each() {
    let cases: [(&[u8], &str); 4] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
            "could not read the /gateway/bot answer",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"url\":5,\"shards\":\"many\"}  ",
            "could not read the /gateway/bot answer",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n{",
            "the answer is larger than 65536 bytes",
        ),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 23\r\n\r\n{\"message\":\"Not Found\"}",
            "HTTP 404: Not Found",
        ),
    ];
    for (answer, reason) in cases {
        let base = raw_api(answer).await;
        let error = Gateway::fetch_from(&base, &Token::new("t"))
            .await
            .unwrap_err();
        let line = error.to_string();
        assert!(
            line.contains(reason),
            "{}: {line}",
            String::from_utf8_lossy(answer)
        );
        assert_eq!(line.lines().count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_instead_of_http_is_retried_then_reported() {
    let base = raw_api(b"\xff\xfe garbage \r\n\r\n").await;
    let started = tokio::time::Instant::now();
    let error = Gateway::fetch_from(&base, &Token::new("t"))
        .await
        .unwrap_err();
    assert!(matches!(error, GatewayError::Unreachable { .. }), "{error}");
    // Three retries after 0.5 s, 1 s and 2 s, on the paused clock: not a
    // busy loop.
    assert_eq!(started.elapsed(), Duration::from_millis(3500));
}
