//! `GET /metrics`: who may scrape it (an Admin, the `--metrics-token`; anyone on `--metrics-listen`), and that
//! what it shows moves with the server's work: requests per route pattern, the writer's batches, store calls,
//! entities per blueprint, the log head. The text is checked line by line against the OpenMetrics grammar.

use reqwest::{Method, StatusCode};
use serde_json::json;

use berth_testkit::server::{TestServer, app_token};

const TOKEN: &str = "metrics-token-0123456789";

/// Every line is a comment (`# TYPE`, `# HELP`, `# UNIT`), a sample `name{labels} value`, or the final `# EOF`.
fn check_grammar(text: &str) {
    assert!(text.ends_with("# EOF\n"), "ends with # EOF");
    for line in text.lines() {
        if line.starts_with("# ") {
            assert!(
                ["# TYPE ", "# HELP ", "# UNIT ", "# EOF"].iter().any(|p| line.starts_with(p)),
                "a comment OpenMetrics knows: {line}"
            );
            continue;
        }
        let (name_labels, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample: {line}"));
        assert!(value.parse::<f64>().is_ok() || value == "+Inf", "a number: {line}");
        let name = name_labels.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {line}"
        );
        if let Some(labels) = name_labels.strip_prefix(name) {
            assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "labels: {line}");
        }
    }
}

/// The value of the sample written exactly `series` (name and labels).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_with_the_work_and_only_admins_read_them() {
    let s = TestServer::start_with(|c| c.metrics_token = Some(TOKEN.into())).await;
    s.seed_blueprints().await;
    let member = app_token(&s, "member", &["Member"], &[]).await;

    assert_eq!(s.raw(Method::GET, "/metrics", None, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.raw(Method::GET, "/metrics", None, Some(&member)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(s.raw(Method::GET, "/metrics", None, Some("not-the-token")).await.status, StatusCode::UNAUTHORIZED);
    let by_token = s.raw(Method::GET, "/metrics", None, Some(TOKEN)).await;
    assert_eq!(by_token.status, StatusCode::OK);
    assert!(
        by_token.headers["content-type"].to_str().unwrap_or_default().starts_with("application/openmetrics-text"),
        "{:?}",
        by_token.headers
    );

    let scrape = || async {
        s.raw(Method::GET, "/metrics", None, Some(&s.token)).await.body.as_str().unwrap_or_default().to_string()
    };
    let before = scrape().await;
    check_grammar(&before);
    let route = r#"berth_http_requests_total{route="/v1/blueprints/{bp}/entities",method="POST",status="201"}"#;
    let batches = "berth_writer_batch_writes_count";
    let appends = r#"berth_store_call_seconds_count{operation="append"}"#;
    for i in 0..5 {
        let created =
            s.post("/v1/blueprints/service/entities", json!({"identifier": format!("m{i}"), "properties": {}})).await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    }
    let missing = s.get("/v1/blueprints/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let after = scrape().await;
    check_grammar(&after);
    assert_eq!(sample(&after, route) - sample(&before, route), 5.0, "{after}");
    assert!(sample(&after, batches) >= sample(&before, batches) + 1.0, "{after}");
    assert!(sample(&after, appends) >= sample(&before, appends) + 1.0, "{after}");
    assert_eq!(
        sample(&after, r#"berth_http_requests_total{route="/v1/blueprints/{bp}",method="GET",status="404"}"#),
        1.0,
        "routes by pattern, never by raw path: {after}"
    );
    assert!(!after.contains("/v1/blueprints/nope"), "no raw paths in labels");
    assert_eq!(sample(&after, r#"berth_entities{blueprint="service"}"#), 5.0, "{after}");
    let seq = s.get("/healthz").await.body["seq"].as_f64().unwrap_or_default();
    assert!(sample(&after, "berth_log_head_seq") >= seq - 1.0 && seq > 0.0, "{after}");
    assert_eq!(sample(&after, "berth_replica_lag_events"), 0.0);
    assert!(sample(&after, "berth_resident_memory_bytes") > 1e6, "{after}");
    let timed = r#"berth_http_request_seconds_count{route="/v1/blueprints/{bp}/entities",method="POST"}"#;
    assert_eq!(sample(&after, timed), 5.0, "{after}");

    // Scraped during load: 100 writes from 4 tasks while scraping; every counter only grows.
    let s = &s;
    let writes = async {
        let tasks = (0..4).map(|t| async move {
            for i in 0..25 {
                let body = json!({"identifier": format!("load-{t}-{i}"), "properties": {}});
                assert_eq!(s.post("/v1/blueprints/service/entities", body).await.status, StatusCode::CREATED);
            }
        });
        futures_util::future::join_all(tasks).await;
    };
    let scrapes = async {
        let mut seen = Vec::new();
        for _ in 0..5 {
            let text = scrape().await;
            check_grammar(&text);
            seen.push((sample(&text, route), sample(&text, batches), sample(&text, appends)));
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen
    };
    let ((), seen) = tokio::join!(writes, scrapes);
    for pair in seen.windows(2) {
        assert!(pair[1].0 >= pair[0].0 && pair[1].1 >= pair[0].1 && pair[1].2 >= pair[0].2, "{seen:?}");
    }
    let last = scrape().await;
    assert_eq!(sample(&last, route), 105.0);
    assert_eq!(sample(&last, r#"berth_entities{blueprint="service"}"#), 105.0);
}

#[tokio::test]
async fn metrics_listen_answers_anyone_on_its_own_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port");
    let s = TestServer::start_with(|c| c.metrics_listen = Some(([127, 0, 0, 1], port).into())).await;
    let r = s.client.get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("scrape");
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("text");
    check_grammar(&text);
    assert!(text.contains("berth_log_head_seq"), "{text}");
    let other = s.client.get(format!("http://127.0.0.1:{port}/v1/blueprints")).send().await.expect("get");
    assert_eq!(other.status(), StatusCode::NOT_FOUND, "only /metrics there");
}

/// Every metric the Grafana dashboard in `deploy/grafana/berth.json` asks for is one this server writes
/// (so the dashboard cannot drift from the code).
#[tokio::test]
async fn the_grafana_dashboard_asks_only_for_metrics_the_server_writes() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let text = s.raw(Method::GET, "/metrics", None, Some(&s.token)).await.body.as_str().unwrap_or_default().to_string();
    let written: std::collections::BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .chain(
            text.lines()
                .filter_map(|l| l.strip_prefix("# TYPE "))
                .filter_map(|l| l.split(' ').next())
                .map(str::to_string),
        )
        .collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/berth.json");
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the dashboard")).expect("JSON");
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("berth_"))
            {
                asked += 1;
                // A histogram's or counter's series carry suffixes its family name does not.
                let family = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                // Delivery lag has a series per subscription being delivered; this server has none.
                if family == "berth_delivery_lag_events" {
                    continue;
                }
                assert!(
                    written.contains(name) || written.contains(family),
                    "the dashboard's {name:?} (panel {:?}) is not written by /metrics",
                    panel["title"]
                );
            }
        }
    }
    assert!(asked >= 15, "the dashboard asks for the server's metrics ({asked})");
}
