//! docs/grafana-dashboard.json, read as the tests need it.

use serde_json::Value;

/// The dashboard, parsed.
pub(crate) fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every panel, those inside rows too.
pub(crate) fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = todo.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            todo.extend(inner);
        }
        all.push(panel);
    }
    all
}

/// Each query's PromQL, with its panel's title.
pub(crate) fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |target| {
                let expr = target["expr"].as_str().unwrap_or_default().to_owned();
                (title.clone(), expr)
            })
        })
        .collect()
}

/// `expr` as Prometheus itself runs it: Grafana's variables filled in.
pub(crate) fn as_prometheus_runs(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$shard", ".*")
}
