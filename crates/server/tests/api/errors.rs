use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::TestServer;

#[tokio::test]
async fn malformed_bodies() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let path = "/v1/blueprints/service/entities";
    s.raw(Method::POST, path, Some(b"{\"identifier\": ".to_vec()), Some(&s.token))
        .await
        .assert_error(400, "invalid_json");
    s.raw(Method::POST, path, Some(b"".to_vec()), Some(&s.token)).await.assert_error(400, "invalid_json");
    s.raw(Method::POST, path, Some(vec![0xff, 0xfe, 0x00]), Some(&s.token)).await.assert_error(400, "invalid_json");
    // Deep nesting is refused by the parser, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    s.raw(Method::POST, path, Some(deep.into_bytes()), Some(&s.token)).await.assert_error(400, "invalid_json");
    let deep_obj =
        format!("{{\"identifier\":\"x\",\"properties\":{{\"a\":{}1{}}}}}", "{\"k\":".repeat(200), "}".repeat(200));
    s.raw(Method::POST, path, Some(deep_obj.into_bytes()), Some(&s.token)).await.assert_error(400, "invalid_json");
    // Also under a key the server ignores, and inside a bulk item.
    let deep_extra = format!("{{\"identifier\":\"x\",\"extra\":{}{}}}", "[".repeat(200), "]".repeat(200));
    s.raw(Method::POST, path, Some(deep_extra.clone().into_bytes()), Some(&s.token))
        .await
        .assert_error(400, "invalid_json");
    let deep_bulk = format!("{{\"entities\":[{deep_extra}]}}");
    s.raw(Method::POST, "/v1/blueprints/service/entities/bulk", Some(deep_bulk.into_bytes()), Some(&s.token))
        .await
        .assert_error(400, "invalid_json");
    // Over the 1 MiB limit: 413 in the envelope.
    let huge = json!({"identifier": "big", "properties": {"a": "x".repeat(1_100_000)}});
    s.post(path, huge).await.assert_error(413, "payload_too_large");
    // Wrong shapes.
    s.post(path, json!([1, 2])).await.assert_error(422, "invalid_request");
    s.post("/v1/blueprints", json!("a string")).await.assert_error(422, "invalid_blueprint");
    assert_eq!(s.get("/v1/blueprints/service/entities-count").await.body["count"], json!(0));
}

#[tokio::test]
async fn bad_query_parameters_and_routes() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    s.post("/v1/blueprints/service/entities?upsert=maybe", json!({"identifier": "x"}))
        .await
        .assert_error(400, "bad_request");
    // Unknown parameters (Ocean sends some) are ignored.
    let a = s
        .post("/v1/blueprints/service/entities?ocean_info_event_type=resync&isPolling=true", json!({"identifier": "x"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    s.get("/v1/nothing-here").await.assert_error(404, "not_found");
    s.raw(Method::GET, "/nothing", None, None).await.assert_error(404, "not_found");
    s.call(Method::PATCH, "/v1/blueprints", Some(json!({}))).await.assert_error(405, "method_not_allowed");
    s.get("/v1/blueprints/service/entities/%FF").await.assert_error(400, "bad_request");
}

#[tokio::test]
async fn openapi_document_describes_the_routes() {
    let s = TestServer::start().await;
    let a = s.raw(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body["openapi"].as_str().expect("version").starts_with("3.1"));
    let paths = a.body["paths"].as_object().expect("paths");
    for p in [
        "/v1/auth/access_token",
        "/v1/blueprints",
        "/v1/blueprints/{blueprint}",
        "/v1/blueprints/{blueprint}/entities",
        "/v1/blueprints/{blueprint}/entities/{entity}",
        "/v1/blueprints/{blueprint}/entities/bulk",
        "/v1/blueprints/{blueprint}/bulk/entities/delete",
        "/v1/blueprints/{blueprint}/all-entities",
        "/v1/blueprints/{blueprint}/entities-count",
        "/v1/blueprints/{blueprint}/entities/search",
        "/v1/entities/search",
        "/v1/entities/aggregate",
        "/v1/migrations/{id}",
        "/healthz",
        "/readyz",
    ] {
        assert!(paths.contains_key(p), "{p} is documented");
    }
    assert!(a.body["components"]["securitySchemes"]["bearer"].is_object());
    let params = a.body["paths"]["/v1/blueprints/{blueprint}/entities/{entity}"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    assert!(
        params.iter().any(|p| p["name"] == "X-Berth-Min-Seq" && p["in"] == "header"),
        "the replica read-your-write header is documented"
    );
    let docs = s.raw(Method::GET, "/docs", None, None).await;
    assert!(docs.body.as_str().expect("html").contains("/docs/redoc.standalone.js"), "scripts are served locally");
}

/// A small deterministic generator of hostile JSON: wrong types, nulls, deep-ish nesting, odd strings, and
/// keys the routes look for.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }

    fn value(&mut self, depth: u32) -> Value {
        const KEYS: &[&str] = &[
            "identifier",
            "title",
            "team",
            "properties",
            "relations",
            "schema",
            "required",
            "type",
            "format",
            "enum",
            "combinator",
            "rules",
            "property",
            "operator",
            "value",
            "entities",
            "query",
            "limit",
            "from",
            "sort",
            "language",
            "replicas",
            "url",
            "tags",
            "deps",
            "a",
            "$title",
        ];
        const STRINGS: &[&str] = &[
            "",
            "x",
            "go",
            "rust",
            "and",
            "or",
            "=",
            "in",
            "between",
            "string",
            "number",
            "url",
            "a b",
            "../..",
            "%2F",
            "nul\u{0}",
            "é",
            "9999999999999999999999",
        ];
        match (depth, self.next(if depth > 3 { 5 } else { 8 })) {
            (_, 0) => Value::Null,
            (_, 1) => json!(self.next(2) == 0),
            (_, 2) => json!(self.next(100) as i64 - 50),
            (_, 3) => json!(f64::from(self.next(1000) as u32) / 7.0),
            (_, 4) => json!(STRINGS[self.next(STRINGS.len() as u64) as usize]),
            (_, 5) => Value::Array((0..self.next(4)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.next(5))
                    .map(|_| (KEYS[self.next(KEYS.len() as u64) as usize].to_string(), self.value(depth + 1)))
                    .collect(),
            ),
        }
    }
}

#[tokio::test]
async fn random_bodies_never_cause_a_server_error() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let mut g = Gen(7);
    let routes: &[(Method, &str)] = &[
        (Method::POST, "/v1/blueprints"),
        (Method::PATCH, "/v1/blueprints/service"),
        (Method::POST, "/v1/blueprints/service/entities?upsert=true"),
        (Method::POST, "/v1/blueprints/service/entities?upsert=true&merge=true&create_missing_related_entities=true"),
        (Method::POST, "/v1/blueprints/service/entities/bulk"),
        (Method::POST, "/v1/blueprints/service/bulk/entities/delete"),
        (Method::POST, "/v1/blueprints/service/entities/search"),
        (Method::POST, "/v1/entities/search"),
        (Method::POST, "/v1/entities/aggregate"),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600 {
        let (method, path) = &routes[i % routes.len()];
        let mut body = g.value(0);
        // Half the time, shape it like what the route expects so deeper code is reached.
        if i % 2 == 0 {
            body = match *path {
                p if p.ends_with("/bulk") || p.contains("bulk/entities") => {
                    json!({"entities": [body.clone(), g.value(1)]})
                }
                p if p.ends_with("/entities/search") && p.contains("/blueprints/") => {
                    json!({"query": {"combinator": "and", "rules": [body]}})
                }
                "/v1/entities/search" => json!({"combinator": "or", "rules": [body]}),
                "/v1/entities/aggregate" => json!({"func": (["count", "countValues", "median"][i % 3]),
                    "property": "replicas", "query": {"combinator": "and", "rules": [body]}}),
                _ => body,
            };
        }
        let a = s.call(method.clone(), path, Some(body.clone())).await;
        assert!(!a.status.is_server_error(), "{method} {path} with {body} -> {} {}", a.status, a.body);
        assert!(a.body.get("ok").is_some(), "envelope for {method} {path}: {}", a.body);
        *statuses.entry(a.status.as_u16()).or_insert(0) += 1;
    }
    // The run reached both success and refusal paths.
    assert!(statuses.keys().any(|s| *s < 300) && statuses.keys().any(|s| *s >= 400), "{statuses:?}");
    // The server is still healthy and consistent.
    assert_eq!(s.get("/readyz").await.status, StatusCode::OK);
}

#[tokio::test]
async fn min_seq_header_on_a_single_server() {
    let s = TestServer::start().await;
    let health = s.raw(Method::GET, "/healthz", None, None).await;
    let reached = health.body["seq"].as_u64().expect("seq");
    let get = |value: String| {
        s.client.get(format!("{}/v1/blueprints", s.base)).bearer_auth(&s.token).header("x-berth-min-seq", value).send()
    };
    let r = get(reached.to_string()).await.expect("request");
    assert_eq!(r.status(), StatusCode::OK, "an applied sequence answers at once");
    let r = get("-1".into()).await.expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["ok"], false);
    assert!(body["message"].as_str().unwrap_or_default().contains("X-Berth-Min-Seq"), "{body}");
}

/// C2: a property value nested deeper than the log can decode is refused (422, naming the property); the
/// deepest accepted one, in a create, a bulk and a blueprint definition, survives a restart, and the audit
/// log still reads it.
#[tokio::test]
async fn nesting_the_log_cannot_decode_is_refused_and_what_is_accepted_replays() {
    let s = TestServer::start().await;
    let bp = json!({"identifier": "cfg", "title": "Config", "schema": {"properties": {
        "doc": {"type": "object"}, "list": {"type": "array"}}}});
    assert_eq!(s.post("/v1/blueprints", bp).await.status, StatusCode::CREATED);
    let object = |depth: usize| (1..depth).fold(json!({"leaf": 1}), |v, _| json!({ "a": v }));
    let array = |depth: usize| (1..depth).fold(json!([1]), |v, _| json!([v]));
    let path = "/v1/blueprints/cfg/entities";
    for depth in [65, 100, 124, 125] {
        let r = s.post(path, json!({"identifier": format!("o{depth}"), "properties": {"doc": object(depth)}})).await;
        r.assert_error(422, "schema_mismatch");
        assert!(r.body["message"].as_str().is_some_and(|m| m.contains("`doc`")), "{}", r.body);
        let r =
            s.post(path, json!({"identifier": format!("l{depth}"), "properties": {"list": [array(depth - 1)]}})).await;
        r.assert_error(422, "schema_mismatch");
    }
    let bulk = json!({"entities": [{"identifier": "ok-1", "properties": {"doc": {"x": 1}}},
        {"identifier": "deep", "properties": {"doc": object(120)}}]});
    let r = s.post("/v1/blueprints/cfg/entities/bulk", bulk).await;
    assert_eq!(r.status.as_u16(), 207, "{}", r.body);
    // The deepest accepted values, and a blueprint definition close to its own bound.
    let r = s.post(path, json!({"identifier": "o64", "properties": {"doc": object(64), "list": array(64)}})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let deep_default = json!({"identifier": "deepbp", "title": "D", "schema": {"properties": {
        "doc": {"type": "object", "default": object(100)}}}});
    let r = s.post("/v1/blueprints", deep_default).await;
    assert_eq!(r.status.as_u16(), 422, "{}", r.body);
    let (dir, data_dir) = s.stop().await;
    let s = TestServer::start_in(data_dir, false).await;
    let r = s.get("/v1/blueprints/cfg/entities/o64").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["entity"]["properties"]["doc"], object(64));
    assert_eq!(s.get("/v1/audit-log?limit=1000").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/cfg/entities/o64/history").await.status, StatusCode::OK);
    assert_eq!(s.get("/v1/blueprints/cfg/entities-count").await.body["count"], json!(2));
    drop(dir);
}

/// H6: a `run_id` longer than 256 bytes is refused before anything is written; a long `User-Agent` is cut.
#[tokio::test]
async fn request_metadata_copied_into_events_is_bounded() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let long = "r".repeat(300);
    let r = s.post(&format!("/v1/blueprints/service/entities?run_id={long}"), json!({"identifier": "x"})).await;
    r.assert_error(400, "bad_request");
    let r = s
        .post(&format!("/v1/blueprints/service/entities?run_id={}", "r".repeat(256)), json!({"identifier": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let agent = "a".repeat(10_000);
    let r = s
        .client
        .post(format!("{}/v1/blueprints/service/entities", s.base))
        .bearer_auth(&s.token)
        .header("user-agent", agent)
        .json(&json!({"identifier": "y"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);
    let e = s.get("/v1/blueprints/service/entities/y").await;
    assert_eq!(e.body["entity"]["$datasource"].as_str().map(str::len), Some(256), "{}", e.body);
}

/// M3: a refused write with a 100 kB identifier records a small refusal, not the identifier.
#[tokio::test]
async fn refusals_are_recorded_small() {
    let s = TestServer::start().await;
    s.seed_blueprints().await;
    let long = "x".repeat(100_000);
    let r = s.post("/v1/blueprints/service/entities", json!({"identifier": long})).await;
    assert!(r.status.is_client_error(), "{}", r.status);
    let audit = s.get("/v1/audit-log?status=FAILURE&limit=1").await;
    let record = &audit.body["audits"][0];
    assert_eq!(record["status"], json!("FAILURE"), "{}", audit.body);
    assert!(record.to_string().len() < 2_000, "{record}");
}

/// L1, L2, L6: security headers on every answer; `/readyz` names the kind of store only; `X-Berth-Min-Seq`
/// holds only authenticated requests (anyone else gets its answer at once).
#[tokio::test]
async fn headers_readiness_and_min_seq_before_authentication() {
    let s = TestServer::start().await;
    for path in ["/readyz", "/v1/blueprints", "/docs", "/nope"] {
        let r = s.get(path).await;
        let csp = r.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(r.headers.get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]), "{path}");
        assert_eq!(r.headers.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]), "{path}");
    }
    let ready = s.get("/readyz").await.body;
    assert_eq!(ready["store"], json!("sqlite"), "{ready}");
    assert_eq!(ready["writer"], json!("running"), "{ready}");
    assert!(!ready.to_string().contains(&s.data_dir.display().to_string()), "{ready}");
    let started = std::time::Instant::now();
    let r = s
        .client
        .get(format!("{}/v1/blueprints", s.base))
        .header("x-berth-min-seq", "999999999")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("x-berth-min-seq", "999999999")
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
}
