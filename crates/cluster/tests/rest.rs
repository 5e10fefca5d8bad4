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

#[tokio::test]
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

#[tokio::test]
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

#[tokio::test]
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
