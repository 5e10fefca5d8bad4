//! docs/grafana-dashboard.json: well-formed, on a Prometheus datasource
//! variable, and every query names metrics that shardwire exports, each
//! series with a `shard` label narrowed to the `shard` variable.

mod common;

use std::collections::BTreeSet;

use common::dashboard::{dashboard, exprs, panels};

/// The metrics the crates export (histograms by their base name), by the
/// crates' own constants, and whether their series carry a `shard` label.
const METRICS: [(&str, bool); 30] = {
    use shardwire_cluster::metrics as cluster;
    use shardwire_nats::metrics as nats;
    use shardwire_shard::metrics as shard;
    [
        (shard::DISPATCHES, true),
        (shard::PAYLOADS_RECEIVED, true),
        (shard::PAYLOADS_SENT, true),
        (shard::WIRE_BYTES, true),
        (shard::PAYLOAD_BYTES, true),
        (shard::HEARTBEAT_LATENCY, true),
        (shard::HEARTBEAT_LATENCY_LAST, true),
        (shard::ZOMBIES, true),
        (shard::SHARD_STATE, true),
        (shard::CONNECTS, true),
        (shard::RECONNECTS, true),
        (shard::RESUMES, true),
        (shard::IDENTIFIES, true),
        (shard::RATE_LIMIT_HEADROOM, true),
        (shard::COMMANDS_REFUSED, true),
        (shard::HELD_EVENTS, true),
        (shard::HELD_BYTES, true),
        (shard::READING_PAUSED, true),
        (cluster::SESSION_STARTS_REMAINING, false),
        (cluster::IDENTIFY_QUEUE_WAIT, false),
        (cluster::IDENTIFY_QUEUE_DEPTH, false),
        (cluster::GENERATION_SHARDS, false),
        (cluster::RESHARD_DURATION, false),
        (cluster::RESHARD_COPIES_DROPPED, false),
        (nats::EVENTS_PUBLISHED, true),
        (nats::PUBLISH_RETRIES, true),
        (nats::ACK_LATENCY, false),
        (nats::LEASES_HELD, false),
        (nats::LEASE_LOSSES, false),
        (nats::HANDOVERS, false),
    ]
};

/// Each metric `expr` names, with the selector after it (`{…}`, or empty).
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("shardwire_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let (name, after) = tail.split_at(end);
        let selector = match after.strip_prefix('{') {
            Some(inner) => &inner[..inner.find('}').unwrap()],
            None => "",
        };
        found.push((name, selector));
        rest = after;
    }
    found
}

/// The metric a series name belongs to (a histogram's `_bucket`, `_count`
/// and `_sum` belong to the histogram), and whether it has a shard label.
fn metric(series: &str) -> Option<(&'static str, bool)> {
    METRICS
        .iter()
        .find(|(name, _)| {
            series == *name
                || (name.ends_with("_seconds")
                    && ["_bucket", "_count", "_sum"]
                        .iter()
                        .any(|suffix| series.strip_suffix(suffix) == Some(name)))
        })
        .copied()
}

#[test]
fn dashboard_queries_name_exported_metrics_narrowed_to_the_shard_variable() {
    let dashboard = dashboard();
    let exprs = exprs(&dashboard);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let named = selectors(expr);
        assert!(!named.is_empty(), "{title}: no shardwire metric in {expr}");
        for (series, selector) in named {
            let (metric, by_shard) =
                metric(series).unwrap_or_else(|| panic!("{title}: unknown metric {series}"));
            used.insert(metric);
            assert_eq!(
                selector.contains(r#"shard=~"$shard""#),
                by_shard,
                "{title}: {series} and the shard variable in {expr}"
            );
        }
    }
    // The panels the dashboard is for.
    for metric in [
        "shardwire_dispatches_total",
        "shardwire_heartbeat_latency_seconds",
        "shardwire_shard_state",
        "shardwire_reconnects_total",
        "shardwire_identify_queue_wait_seconds",
        "shardwire_identify_queue_depth",
        "shardwire_wire_bytes_received_total",
        "shardwire_payload_bytes_received_total",
        "shardwire_rate_limit_headroom",
        "shardwire_held_events",
        "shardwire_held_bytes",
    ] {
        assert!(used.contains(metric), "no panel on {metric}");
    }
}

#[test]
fn dashboard_panels_use_the_datasource_variable_and_have_unique_ids() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    let datasource = variable("datasource");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let shard = variable("shard");
    assert_eq!(shard["type"], "query");
    assert!(
        shard["definition"]
            .as_str()
            .unwrap()
            .contains("shardwire_shard_state")
    );
    assert_eq!(shard["datasource"]["uid"], "${datasource}");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: id taken"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() <= 24, "{title}");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}

#[test]
fn selectors_are_read_with_their_labels() {
    assert_eq!(
        selectors(r#"sum(rate(shardwire_a_total{shard=~"$shard"}[1m])) / shardwire_b"#),
        [
            ("shardwire_a_total", r#"shard=~"$shard""#),
            ("shardwire_b", "")
        ]
    );
    assert_eq!(
        metric("shardwire_heartbeat_latency_seconds_bucket"),
        Some(("shardwire_heartbeat_latency_seconds", true))
    );
    assert_eq!(metric("shardwire_shard_state_bucket"), None);
}

/// docs/metrics.md lists every metric in a table row of its own, and its
/// PromQL names only metrics that exist.
#[test]
fn docs_metrics_lists_every_metric_and_its_queries_name_no_other() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let text = std::fs::read_to_string(path).unwrap();
    let listed: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|row| row.split('`').next())
        .filter(|name| name.starts_with("shardwire_"))
        .collect();
    let exported: BTreeSet<&str> = METRICS.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        listed, exported,
        "docs/metrics.md's tables against the crates' constants"
    );
    let mut queries = 0;
    for block in text.split("```promql").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        for (name, _) in selectors(block) {
            assert!(metric(name).is_some(), "docs/metrics.md queries {name}");
            queries += 1;
        }
    }
    assert!(queries > 10, "{queries} metrics named in the PromQL");
}
