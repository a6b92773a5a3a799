//! `GET /metrics`: the server's measurements in the Prometheus / OpenMetrics text format, with the
//! `prometheus-client` crate (Prometheus's own Rust client). Counted as they happen: requests per route
//! (the route's pattern, never the raw path), method and status, and their latency per route; every store
//! call's latency per operation and its errors ([`crate::metered_store`]); the writer's batch sizes, times
//! to durable and failures ([`berth_catalog::writer_metrics`]); UI sign-ins per method and outcome. Read when scraped: the log head and the
//! newest snapshot's sequence number, this replica's lag behind the store, entities per blueprint, each
//! subscription's delivery lag on this replica, the process's resident memory.
//!
//! **Who reads it.** On the API's address `/metrics` answers an Admin's token or the `--metrics-token`; on
//! `--metrics-listen` (an address only Prometheus should reach) it answers anyone.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BlueprintLabels {
    pub blueprint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignInLabels {
    /// `password` or `sso`.
    pub method: String,
    /// `success` or `refused`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub subscription: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 0.1 ms ... 3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The store operations [`crate::metered_store`] times.
pub const STORE_OPERATIONS: [&str; 12] = [
    "head",
    "append",
    "read_from",
    "read_before",
    "read_seqs",
    "save_snapshot",
    "load_snapshot",
    "get_cursor",
    "set_cursor",
    "take_lease",
    "release_lease",
    "set_cursor_leased",
];

/// Every measurement, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    store_seconds: Histograms<OperationLabels>,
    store_errors: Family<OperationLabels, Counter>,
    log_head: Gauge,
    snapshot_seq: Gauge,
    replica_lag: Gauge,
    entities: Family<BlueprintLabels, Gauge>,
    delivery_lag: Family<SubscriptionLabels, Gauge>,
    resident_bytes: Gauge,
    sign_ins: Family<SignInLabels, Counter>,
    /// One scrape at a time sets the read-when-scraped values and writes them out.
    scrape: tokio::sync::Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, per route, method and status", requests.clone());
        let request_seconds: Histograms<RouteLabels> = Family::new_with_constructor(latency_buckets);
        registry.register("http_request_seconds", "Time to answer, per route and method", request_seconds.clone());
        let store_seconds: Histograms<OperationLabels> = Family::new_with_constructor(latency_buckets);
        registry.register("store_call_seconds", "Store calls' latency, per operation", store_seconds.clone());
        let store_errors = Family::<OperationLabels, Counter>::default();
        registry.register("store_call_errors", "Store calls that failed, per operation", store_errors.clone());
        let log_head = Gauge::default();
        registry.register("log_head_seq", "The sequence number of the catalog this replica serves", log_head.clone());
        let snapshot_seq = Gauge::default();
        registry.register(
            "snapshot_seq",
            "The sequence number of the newest snapshot loaded or written",
            snapshot_seq.clone(),
        );
        let replica_lag = Gauge::default();
        registry.register(
            "replica_lag_events",
            "Events in the store this replica has not applied yet",
            replica_lag.clone(),
        );
        let entities = Family::<BlueprintLabels, Gauge>::default();
        registry.register("entities", "Entities per blueprint", entities.clone());
        let delivery_lag = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "delivery_lag_events",
            "Events not yet delivered, per subscription this replica delivers",
            delivery_lag.clone(),
        );
        // Every store operation's error counter from zero, so a rate over it exists before the first error.
        for operation in STORE_OPERATIONS {
            let _ = store_errors.get_or_create(&OperationLabels { operation: operation.to_string() });
        }
        let resident_bytes = Gauge::default();
        registry.register("resident_memory_bytes", "The process's resident memory", resident_bytes.clone());
        let sign_ins = Family::<SignInLabels, Counter>::default();
        registry.register("sign_ins", "UI sign-ins, per method (password, sso) and outcome", sign_ins.clone());
        // Every series from the start, at 0, so rates and alerts see the first sign-in.
        for (method, outcome) in
            [("password", "success"), ("password", "refused"), ("sso", "success"), ("sso", "refused")]
        {
            let _ = sign_ins.get_or_create(&SignInLabels { method: method.into(), outcome: outcome.into() });
        }
        Metrics {
            registry,
            requests,
            request_seconds,
            store_seconds,
            store_errors,
            log_head,
            snapshot_seq,
            replica_lag,
            entities,
            delivery_lag,
            resident_bytes,
            sign_ins,
            scrape: tokio::sync::Mutex::new(()),
        }
    }

    /// The writer's measurements join the registry (once, at start).
    pub fn register_writer(&mut self, writer: &berth_catalog::writer_metrics::WriterMetrics) {
        let r = &mut self.registry;
        r.register("writer_batch_writes", "Writes per durable batch", writer.batch_writes.clone());
        r.register("writer_batch_seconds", "Time from a batch's execution to durable", writer.batch_seconds.clone());
        r.register(
            "writer_failed_batches",
            "Batches the store refused or did not confirm",
            writer.failed_batches.clone(),
        );
    }

    /// One answered request.
    pub fn request(&self, route: &str, method: &axum::http::Method, status: u16, took: Duration) {
        let method = match *method {
            axum::http::Method::GET
            | axum::http::Method::POST
            | axum::http::Method::PUT
            | axum::http::Method::PATCH
            | axum::http::Method::DELETE
            | axum::http::Method::HEAD
            | axum::http::Method::OPTIONS => method.as_str(),
            _ => "other",
        }
        .to_string();
        let route = route.to_string();
        self.requests.get_or_create(&RequestLabels { route: route.clone(), method: method.clone(), status }).inc();
        self.request_seconds.get_or_create(&RouteLabels { route, method }).observe(took.as_secs_f64());
    }

    /// One UI sign-in: `method` is `password` or `sso`.
    pub fn sign_in(&self, method: &str, ok: bool) {
        let outcome = if ok { "success" } else { "refused" };
        self.sign_ins.get_or_create(&SignInLabels { method: method.to_string(), outcome: outcome.to_string() }).inc();
    }

    /// One store call.
    pub fn store_call(&self, operation: &'static str, took: Duration, ok: bool) {
        let labels = OperationLabels { operation: operation.to_string() };
        self.store_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// The text Prometheus scrapes, with the read-when-scraped values read now.
    pub async fn render(&self, app: &AppState) -> String {
        let _one = self.scrape.lock().await;
        let view = app.pipeline.view();
        let at = view.seq();
        self.log_head.set(at as i64);
        self.snapshot_seq.set(app.pipeline.snapshot_seq() as i64);
        if let Ok(head) = app.pipeline.store_head().await {
            self.replica_lag.set(head.saturating_sub(at) as i64);
        }
        self.entities.clear();
        for b in view.blueprints() {
            let id = &b.def.identifier;
            self.entities.get_or_create(&BlueprintLabels { blueprint: id.clone() }).set(view.entity_count(id) as i64);
        }
        self.delivery_lag.clear();
        for (id, state, position, head) in app.delivery.positions() {
            if state == "delivering" || state == "failing" {
                let lag = head.max(at).saturating_sub(position);
                self.delivery_lag.get_or_create(&SubscriptionLabels { subscription: id }).set(lag as i64);
            }
        }
        if let Some(rss) = resident_bytes() {
            self.resident_bytes.set(rss as i64);
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("the metrics could not be written out");
        }
        out
    }
}

/// The process's resident memory, from `/proc/self/status` (Linux; `None` elsewhere).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_store_calls_are_counted_by_pattern() {
        let m = Metrics::new();
        m.request("/v1/blueprints/{id}", &axum::http::Method::GET, 200, Duration::from_millis(3));
        m.request("/v1/blueprints/{id}", &axum::http::Method::GET, 200, Duration::from_millis(5));
        m.request(
            "/v1/blueprints/{id}",
            &axum::http::Method::from_bytes(b"BREW").expect("method"),
            405,
            Duration::ZERO,
        );
        m.store_call("append", Duration::from_millis(2), false);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).expect("encoded");
        assert!(
            out.contains(r#"berth_http_requests_total{route="/v1/blueprints/{id}",method="GET",status="200"} 2"#),
            "{out}"
        );
        assert!(out.contains(r#"method="other",status="405"} 1"#), "{out}");
        assert!(out.contains(r#"berth_store_call_errors_total{operation="append"} 1"#), "{out}");
        assert!(out.ends_with("# EOF\n"), "{out}");
    }
}
