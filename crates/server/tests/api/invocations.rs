//! Runs sent to their backends, against local receivers that check what they get: a webhook that verifies
//! Port's signature (templates over the inputs, an encrypted input opened for the backend only, an
//! organisation secret in a header, a synchronized answer ending the run), a webhook that fails, the Kafka
//! broker, a fake GitHub and GitLab that check paths, auth and inputs, an entity upsert as the runner; and
//! automations: entity and run events with jq conditions, and a timer that fires once across a restart.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri};
use base64::Engine;
use berth_testkit::server::TestServer;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One request a fake backend got: method, path and query, headers, body.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

type Log = Arc<Mutex<Vec<Got>>>;

/// A fake backend on a free port: records every request; answers `(status, body)` by the first rule whose
/// path prefix matches, else 200 `{}`.
async fn backend(rules: Vec<(&'static str, u16, Value)>) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let log: Log = Arc::default();
    let l = Arc::clone(&log);
    let rules = Arc::new(rules);
    let app = axum::Router::new().fallback(
        move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let (l, rules) = (Arc::clone(&l), Arc::clone(&rules));
            async move {
                let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
                l.lock().expect("lock").push(Got {
                    method: method.to_string(),
                    path: path.clone(),
                    headers,
                    body: body.to_vec(),
                });
                let (status, answer) = rules
                    .iter()
                    .find(|(prefix, _, _)| path.starts_with(prefix))
                    .map(|(_, s, b)| (*s, b.clone()))
                    .unwrap_or((200, json!({})));
                (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), axum::Json(answer))
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (base, log)
}

/// Waits until `f` answers `Some`, at most 15 s.
async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_until(s: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("run {id}"), async || {
        let run = s.get(&format!("/v1/actions/runs/{id}")).await.body["run"].clone();
        done(&run).then_some(run)
    })
    .await
}

async fn create(s: &TestServer, path: &str, body: Value) -> Value {
    let a = s.post(path, body).await;
    assert!(a.status.is_success(), "{path}: {} {}", a.status, a.body);
    a.body
}

async fn service(s: &TestServer) {
    create(
        s,
        "/v1/blueprints",
        json!({"identifier": "service", "title": "Service", "schema": {"properties": {
            "lifecycle": {"type": "string"}, "expires": {"type": "string", "format": "timer"}}}}),
    )
    .await;
}

fn self_service(id: &str, invocation: Value) -> Value {
    json!({"identifier": id, "title": id,
        "trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service",
            "userInputs": {"properties": {"name": {"type": "string"},
                "token": {"type": "string", "encryption": "aes256-gcm"}}}},
        "invocationMethod": invocation})
}

async fn run(s: &TestServer, action: &str, inputs: Value) -> String {
    let body = create(s, &format!("/v1/actions/{action}/runs"), json!({"properties": inputs})).await;
    body["run"]["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_run_is_signed_templated_and_ended_by_a_synchronized_answer() {
    let (base, got) = backend(vec![("/hook", 200, json!({"deployed": true}))]).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    service(&s).await;
    create(&s, "/v1/organization/secrets", json!({"secretName": "API_KEY", "secretValue": "key-SECRET-7"})).await;
    let invocation = json!({"type": "WEBHOOK", "url": format!("{base}/hook"), "synchronized": true,
        "headers": {"Authorization": "Bearer {{ .secrets.API_KEY }}", "X-Run": "{{ .run.id }}"},
        "body": {"name": "{{ .inputs.name }}", "token": "{{ .inputs.token }}", "by": "{{ .trigger.by.userId }}",
            "text": "svc {{ .inputs.name }}"}});
    create(&s, "/v1/actions", self_service("deploy", invocation)).await;
    let id = run(&s, "deploy", json!({"name": "pay", "token": "tok-SECRET-3"})).await;
    let done = run_until(&s, &id, |r| r["status"] == "SUCCESS").await;
    assert_eq!(done["response"], json!({"deployed": true}), "{done}");
    assert_eq!(done["pendingExecution"], false);
    // The backend got the opened values, signed.
    let calls = got.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/hook"));
    assert_eq!(call.header("authorization"), "Bearer key-SECRET-7");
    assert_eq!(call.header("x-run"), id.as_str());
    assert_eq!(call.json(), json!({"name": "pay", "token": "tok-SECRET-3", "by": "test-admin", "text": "svc pay"}));
    let secret = s.get("/v1/actions/deploy/signing-secret").await.body["secret"].as_str().expect("secret").to_string();
    let timestamp = call.header("x-port-timestamp");
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&call.body);
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(call.header("x-port-signature"), expected);
    // What the run keeps: the secret masked, the encrypted input sealed; nothing in the clear anywhere.
    assert_eq!(done["payload"]["headers"]["Authorization"], "Bearer ********", "{done}");
    assert!(done["payload"]["body"]["token"].is_object(), "sealed: {done}");
    let mut seen = done.to_string();
    for path in ["/v1/events?limit=1000", "/v1/audit-log", &format!("/v1/actions/runs/{id}/logs")] {
        seen.push_str(&s.get(path).await.body.to_string());
    }
    assert!(!seen.contains("key-SECRET-7") && !seen.contains("tok-SECRET-3"), "{seen}");
    // Nor in any byte the server stored (the log, its snapshots, the store's journal).
    let mut files = vec![s.data_dir.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).expect("dir").map(|e| e.expect("entry").path()));
        } else {
            let bytes = std::fs::read(&path).expect("file");
            for secret in [&b"key-SECRET-7"[..], b"tok-SECRET-3"] {
                assert!(!bytes.windows(secret.len()).any(|w| w == secret), "{} holds a secret", path.display());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_ends_the_run_and_one_that_accepts_leaves_it_to_the_backend() {
    let (base, got) = backend(vec![("/broken", 500, json!({})), ("/ok", 202, json!({}))]).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    service(&s).await;
    for (id, path) in [("broken", "/broken"), ("fine", "/ok")] {
        create(&s, "/v1/actions", self_service(id, json!({"type": "WEBHOOK", "url": format!("{base}{path}")}))).await;
    }
    let broken = run(&s, "broken", json!({"name": "a"})).await;
    let fine = run(&s, "fine", json!({"name": "b"})).await;
    let failed = run_until(&s, &broken, |r| r["status"] == "FAILURE").await;
    assert_eq!(failed["statusLabel"], "Invocation failed");
    let logs = s.get(&format!("/v1/actions/runs/{broken}/logs")).await.body;
    assert!(logs.to_string().contains("500"), "{logs}");
    let sent = run_until(&s, &fine, |r| r["pendingExecution"] == false).await;
    assert_eq!(sent["status"], "IN_PROGRESS", "the backend reports the end");
    // Three attempts at the broken one, one at the fine one; the default body is the trigger data.
    let calls = got.lock().expect("lock").clone();
    assert_eq!(calls.iter().filter(|c| c.path == "/broken").count(), 3);
    let body = calls.iter().find(|c| c.path == "/ok").expect("fine").json();
    assert_eq!(body["inputs"]["name"], "b");
    assert_eq!(body["run"]["id"], fine.as_str());
    assert_eq!(body["action"]["identifier"], "fine");
    // A webhook to a private address the server was not told to allow fails the run, naming why.
    let t = TestServer::start().await;
    service(&t).await;
    create(&t, "/v1/actions", self_service("local", json!({"type": "WEBHOOK", "url": format!("{base}/ok")}))).await;
    let id = run(&t, "local", json!({})).await;
    run_until(&t, &id, |r| r["status"] == "FAILURE").await;
    let logs = t.get(&format!("/v1/actions/runs/{id}/logs")).await.body.to_string();
    assert!(logs.contains("allow") || logs.contains("private") || logs.contains("loopback"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_gitlab_and_azure_runs_reach_their_servers_with_auth_and_inputs() {
    let (github, gh) = backend(vec![
        ("/repos/acme/api/actions", 204, json!(null)),
        ("/repos/acme/api", 200, json!({"default_branch": "trunk"})),
    ])
    .await;
    let (gitlab, gl) =
        backend(vec![("/api/v4/projects", 201, json!({"id": 99, "web_url": "https://gitlab/p/99"}))]).await;
    let s = TestServer::start_with(|c| {
        c.actions.github_url = github.clone();
        c.actions.github_token = Some("ghs-SECRET".into());
        c.actions.gitlab_url = gitlab.clone();
    })
    .await;
    service(&s).await;
    create(
        &s,
        "/v1/organization/secrets",
        json!({"secretName": "GITLAB_TRIGGER_TOKEN", "secretValue": "glptt-SECRET"}),
    )
    .await;
    create(
        &s,
        "/v1/actions",
        self_service(
            "gh",
            json!({"type": "GITHUB", "org": "acme", "repo": "api", "workflow": "deploy.yml",
            "workflowInputs": {"name": "{{ .inputs.name }}", "replicas": 3, "ctx": {"run": "{{ .run.id }}"}}}),
        ),
    )
    .await;
    create(
        &s,
        "/v1/actions",
        self_service(
            "gl",
            json!({"type": "GITLAB", "groupName": "platform", "projectName": "api", "defaultRef": "release",
            "pipelineVariables": {"NAME": "{{ .inputs.name }}", "DEBUG": true}}),
        ),
    )
    .await;
    let a = run(&s, "gh", json!({"name": "pay"})).await;
    let b = run(&s, "gl", json!({"name": "ledger"})).await;
    run_until(&s, &a, |r| r["pendingExecution"] == false).await;
    let gl_run = run_until(&s, &b, |r| r["pendingExecution"] == false).await;
    assert_eq!(gl_run["status"], "IN_PROGRESS", "{gl_run}");

    let calls = gh.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("GET", "/repos/acme/api"));
    let dispatch = &calls[1];
    assert_eq!(dispatch.path, "/repos/acme/api/actions/workflows/deploy.yml/dispatches");
    assert_eq!(dispatch.header("authorization"), "Bearer ghs-SECRET");
    assert_eq!(
        dispatch.json(),
        json!({"ref": "trunk", "inputs": {"name": "pay", "replicas": "3", "ctx": format!("{{\"run\":\"{a}\"}}")},
            "return_run_details": true})
    );
    let calls = gl.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, "/api/v4/projects/platform%2Fapi/trigger/pipeline");
    assert_eq!(
        calls[0].json(),
        json!({"token": "glptt-SECRET", "ref": "release", "variables": {"PORT_RUN_ID": b, "NAME": "ledger", "DEBUG": "true"}})
    );
    assert_eq!(gl_run["response"]["id"], 99);
    // Azure DevOps: the payload to the organisation's incoming webhook.
    let (azure, az) = backend(vec![("/acme/_apis/public/distributedtask/webhooks", 200, json!({}))]).await;
    let u = TestServer::start_with(|c| c.actions.azure_devops_url = azure.clone()).await;
    service(&u).await;
    create(
        &u,
        "/v1/actions",
        self_service(
            "az",
            json!({"type": "AZURE_DEVOPS", "org": "acme", "webhook": "deploy-hook",
        "payload": {"name": "{{ .inputs.name }}", "run": "{{ .run.id }}"}}),
        ),
    )
    .await;
    let id = run(&u, "az", json!({"name": "pay"})).await;
    run_until(&u, &id, |r| r["pendingExecution"] == false).await;
    let calls = az.lock().expect("lock").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].path, "/acme/_apis/public/distributedtask/webhooks/deploy-hook?api-version=6.0-preview");
    assert_eq!(calls[0].json(), json!({"name": "pay", "run": id}));
    // A GitHub that refuses the dispatch fails the run with its answer.
    let (refusing, _) =
        backend(vec![("/repos/acme/api/actions", 422, json!({"message": "Unexpected inputs provided"}))]).await;
    let t = TestServer::start_with(|c| {
        c.actions.github_url = refusing.clone();
        c.actions.github_token = Some("x".into());
    })
    .await;
    service(&t).await;
    create(
        &t,
        "/v1/actions",
        self_service("gh", json!({"type": "GITHUB", "org": "acme", "repo": "api", "workflow": "d.yml"})),
    )
    .await;
    let id = run(&t, "gh", json!({})).await;
    run_until(&t, &id, |r| r["status"] == "FAILURE").await;
    let logs = t.get(&format!("/v1/actions/runs/{id}/logs")).await.body.to_string();
    assert!(logs.contains("Unexpected inputs"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_run_is_produced_to_the_runs_topic_keyed_by_run() {
    let broker = berth_testkit::brokers::broker();
    let s = TestServer::start_with(|c| c.kafka_brokers = Some(broker.address.clone())).await;
    service(&s).await;
    create(
        &s,
        "/v1/actions",
        self_service("k", json!({"type": "KAFKA", "payload": {"name": "{{ .inputs.name }}", "run": "{{ .run.id }}"}})),
    )
    .await;
    let id = run(&s, "k", json!({"name": "pay"})).await;
    run_until(&s, &id, |r| r["pendingExecution"] == false).await;
    let (_, records) = berth_testkit::brokers::kafka_records(&broker.address, "berth.runs", 1).await;
    let record = &records[0].1.record;
    assert_eq!(record.key.as_deref(), Some(id.as_bytes()));
    let body: Value = serde_json::from_slice(record.value.as_deref().expect("value")).expect("json");
    assert_eq!(body, json!({"name": "pay", "run": id}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_entity_runs_write_as_the_runner_and_automations_fire_once_per_match() {
    let s = TestServer::start().await;
    service(&s).await;
    create(
        &s,
        "/v1/actions",
        self_service(
            "make",
            json!({"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
            "mapping": {"identifier": "{{ .inputs.name }}", "title": "{{ .inputs.name | ascii_upcase }}",
                "properties": {"lifecycle": "dev"}}}),
        ),
    )
    .await;
    let id = run(&s, "make", json!({"name": "pay"})).await;
    let done = run_until(&s, &id, |r| r["status"] == "SUCCESS").await;
    assert_eq!(done["source"], "API");
    let e = s.get("/v1/blueprints/service/entities/pay").await;
    assert_eq!(e.body["entity"]["title"], "PAY", "{}", e.body);
    let audit = s.get(&format!("/v1/audit-log?run_id={id}")).await.body;
    assert!(audit.to_string().contains("\"pay\""), "the entity write is tied to the run: {audit}");

    // An automation on ENTITY_UPDATED with a condition; one on the runs of `make`.
    create(
        &s,
        "/v1/actions",
        json!({"identifier": "promoted", "trigger": {"type": "automation",
            "event": {"type": "ENTITY_UPDATED", "blueprintIdentifier": "service"},
            "condition": {"type": "JQ", "combinator": "and",
                "expressions": [".diff.after.properties.lifecycle == \"prod\"", ".diff.before.properties.lifecycle != \"prod\""]}},
            "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                "mapping": {"identifier": "{{ .event.diff.after.identifier }}-audit", "properties": {"lifecycle": "audit"}}}}),
    )
    .await;
    create(
        &s,
        "/v1/actions",
        json!({"identifier": "on-make", "trigger": {"type": "automation",
            "event": {"type": "RUN_CREATED", "actionIdentifier": "make"}},
            "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                "mapping": {"identifier": "made-{{ .event.diff.after.properties.name }}"}}}),
    )
    .await;
    for lifecycle in ["staging", "prod", "prod"] {
        let a = s.patch("/v1/blueprints/service/entities/pay", json!({"properties": {"lifecycle": lifecycle}})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    }
    eventually("the promotion's entity", async || {
        (s.get("/v1/blueprints/service/entities/pay-audit").await.status == StatusCode::OK).then_some(())
    })
    .await;
    run(&s, "make", json!({"name": "ledger"})).await;
    eventually("the run automation's entity", async || {
        (s.get("/v1/blueprints/service/entities/made-ledger").await.status == StatusCode::OK).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = s.get("/v1/actions/runs?action=promoted").await.body["runs"].as_array().cloned().expect("runs");
    assert_eq!(runs.len(), 1, "one match, one run: {runs:?}");
    assert_eq!(runs[0]["source"], "AUTOMATION");
    assert_eq!(runs[0]["status"], "SUCCESS");
    let runs = s.get("/v1/actions/runs?action=on-make&source=AUTOMATION").await.body["runs"]
        .as_array()
        .cloned()
        .expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_fires_once_within_seconds_and_not_again_after_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let s = TestServer::start_configured(dir.path().to_path_buf(), |_| {}).await;
    service(&s).await;
    create(
        &s,
        "/v1/actions",
        json!({"identifier": "expire", "trigger": {"type": "automation",
            "event": {"type": "TIMER_PROPERTY_EXPIRED", "blueprintIdentifier": "service", "propertyIdentifier": "expires"}},
            "invocationMethod": {"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
                "mapping": {"identifier": "{{ .event.context.entityIdentifier }}", "properties": {"lifecycle": "expired"}}}}),
    )
    .await;
    let at = berth_model::Timestamp::from_millis(berth_server::now().millis() + 1500);
    let expires = serde_json::to_value(at).expect("time");
    create(&s, "/v1/blueprints/service/entities", json!({"identifier": "tmp", "properties": {"expires": expires}}))
        .await;
    create(
        &s,
        "/v1/blueprints/service/entities",
        json!({"identifier": "later", "properties": {"expires": "2999-01-01T00:00:00.000Z"}}),
    )
    .await;
    let fired = Instant::now();
    eventually("the timer", async || {
        let e = s.get("/v1/blueprints/service/entities/tmp").await.body;
        (e["entity"]["properties"]["lifecycle"] == "expired").then_some(())
    })
    .await;
    assert!(fired.elapsed() < Duration::from_secs(6), "fired within seconds: {:?}", fired.elapsed());
    let runs = s.get("/v1/actions/runs?action=expire").await.body["runs"].as_array().cloned().expect("runs");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (dir_kept, data_dir) = s.stop().await;
    drop(dir_kept);
    let s = TestServer::start_configured(data_dir, |_| {}).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let runs = s.get("/v1/actions/runs?action=expire").await.body["runs"].as_array().cloned().expect("runs");
    assert_eq!(runs.len(), 1, "not again after a restart: {runs:?}");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_are_told_by_webhook_and_an_approved_run_is_sent() {
    let (base, got) = backend(vec![]).await;
    let s = TestServer::start_with(|c| c.allow_destinations = vec!["127.0.0.1".into()]).await;
    service(&s).await;
    let mut action = self_service("guarded", json!({"type": "WEBHOOK", "url": format!("{base}/run")}));
    action["requiredApproval"] = json!(true);
    action["approvalNotification"] = json!({"type": "webhook", "url": format!("{base}/approvals"), "format": "json"});
    create(&s, "/v1/actions", action).await;
    let id = run(&s, "guarded", json!({"name": "pay"})).await;
    let told = eventually("the approvers' notification", async || {
        got.lock().expect("lock").iter().find(|g| g.path == "/approvals").cloned()
    })
    .await;
    assert_eq!(told.json()["type"], "APPROVAL_REQUESTED");
    assert_eq!(told.json()["run"]["id"], id.as_str());
    assert!(told.header("x-port-signature").starts_with("v1,"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!got.lock().expect("lock").iter().any(|g| g.path == "/run"), "not sent before it is approved");
    let a = s.patch(&format!("/v1/actions/runs/{id}/approval"), json!({"status": "APPROVE"})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    eventually("the approved run's invocation", async || {
        got.lock().expect("lock").iter().any(|g| g.path == "/run").then_some(())
    })
    .await;
    let logs = s.get(&format!("/v1/actions/runs/{id}/logs")).await.body.to_string();
    assert!(logs.contains("approvers were told"), "{logs}");
    assert_eq!(got.lock().expect("lock").iter().filter(|g| g.path == "/approvals").count(), 1, "told once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_automation_event_fires_for_its_changes_only() {
    let s = TestServer::start().await;
    service(&s).await;
    create(
        &s,
        "/v1/actions",
        self_service(
            "make",
            json!({"type": "UPSERT_ENTITY", "blueprintIdentifier": "service",
        "mapping": {"identifier": "{{ .inputs.name }}"}}),
        ),
    )
    .await;
    // Each automation writes nothing (a KAFKA run on a server without brokers fails at once): what counts is
    // the runs each one made.
    let events = [
        ("on-created", json!({"type": "ENTITY_CREATED", "blueprintIdentifier": "service"})),
        ("on-updated", json!({"type": "ENTITY_UPDATED", "blueprintIdentifier": "service"})),
        ("on-deleted", json!({"type": "ENTITY_DELETED", "blueprintIdentifier": "service"})),
        ("on-any", json!({"type": "ANY_ENTITY_CHANGE", "blueprintIdentifier": "service"})),
        ("on-run-created", json!({"type": "RUN_CREATED", "actionIdentifier": "make"})),
        ("on-run-updated", json!({"type": "RUN_UPDATED", "actionIdentifier": "make"})),
        ("on-any-run", json!({"type": "ANY_RUN_CHANGE", "actionIdentifier": "make"})),
    ];
    for (id, event) in &events {
        create(
            &s,
            "/v1/actions",
            json!({"identifier": id, "trigger": {"type": "automation", "event": event},
            "invocationMethod": {"type": "KAFKA"}}),
        )
        .await;
    }
    // An automation whose condition never holds.
    create(&s, "/v1/actions", json!({"identifier": "never", "trigger": {"type": "automation",
        "event": {"type": "ANY_ENTITY_CHANGE", "blueprintIdentifier": "service"},
        "condition": {"type": "JQ", "combinator": "or", "expressions": [".diff.after.identifier == \"nobody\"", "error(\"x\")"]}},
        "invocationMethod": {"type": "KAFKA"}})).await;
    create(&s, "/v1/blueprints/service/entities", json!({"identifier": "a"})).await;
    let a = s.patch("/v1/blueprints/service/entities/a", json!({"properties": {"lifecycle": "prod"}})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(s.delete("/v1/blueprints/service/entities/a").await.status, StatusCode::OK);
    // One run of `make`: created, then updated when it is sent and recorded (and when it ends).
    let made = run(&s, "make", json!({"name": "b"})).await;
    run_until(&s, &made, |r| r["status"] == "SUCCESS").await;
    let count = async |action: &str| {
        s.get(&format!("/v1/actions/runs?action={action}")).await.body["runs"].as_array().map_or(0, Vec::len)
    };
    // `make`'s own entity write (b created) counts for the entity automations too.
    let expected =
        [("on-created", 2), ("on-updated", 1), ("on-deleted", 1), ("on-any", 4), ("on-run-created", 1), ("never", 0)];
    for (action, n) in expected {
        eventually(&format!("{n} runs of {action}"), async || (count(action).await == n).then_some(())).await;
    }
    // Updates of `make`'s run: at least its record and its end; every run change counts for ANY_RUN_CHANGE.
    let updated = count("on-run-updated").await;
    assert!(updated >= 1, "{updated}");
    eventually("ANY_RUN_CHANGE", async || (count("on-any-run").await == updated + 1).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (action, n) in expected {
        assert_eq!(count(action).await, n, "{action}: no second run for a change");
    }
    let run = &s.get("/v1/actions/runs?action=on-deleted").await.body["runs"][0];
    assert_eq!(run["source"], "AUTOMATION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_run_follows_its_workflow_run_to_its_conclusion() {
    // GitHub names the run it started; the run is asked about until it completes.
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (a, api) = (Arc::clone(&asked), base.clone());
    let app = axum::Router::new()
        .route("/repos/acme/api", axum::routing::get(|| async { axum::Json(json!({"default_branch": "main"})) }))
        .route(
            "/repos/acme/api/actions/workflows/deploy.yml/dispatches",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let api = api.clone();
                async move {
                    assert_eq!(body["return_run_details"], true);
                    axum::Json(
                        json!({"workflow_run_id": 4242, "run_url": format!("{api}/repos/acme/api/actions/runs/4242"),
                        "html_url": "https://github.example.com/acme/api/actions/runs/4242"}),
                    )
                }
            }),
        )
        .route(
            "/repos/acme/api/actions/runs/4242",
            axum::routing::get(move || {
                let a = Arc::clone(&a);
                async move {
                    if a.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                        axum::Json(json!({"status": "in_progress", "conclusion": null}))
                    } else {
                        axum::Json(json!({"status": "completed", "conclusion": "failure"}))
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let s = TestServer::start_with(|c| {
        c.actions.github_url = base.clone();
        c.actions.github_token = Some("ghs-x".into());
        c.actions.github_poll = Duration::from_millis(100);
    })
    .await;
    service(&s).await;
    create(
        &s,
        "/v1/actions",
        self_service("gh", json!({"type": "GITHUB", "org": "acme", "repo": "api", "workflow": "deploy.yml"})),
    )
    .await;
    let id = run(&s, "gh", json!({})).await;
    let sent = run_until(&s, &id, |r| r["pendingExecution"] == false).await;
    assert_eq!(sent["externalRunId"], "4242", "{sent}");
    assert_eq!(sent["link"], json!(["https://github.example.com/acme/api/actions/runs/4242"]));
    let ended = run_until(&s, &id, |r| r["status"] == "FAILURE").await;
    assert_eq!(ended["statusLabel"], "failure");
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 3, "asked until it completed");
    let logs = s.get(&format!("/v1/actions/runs/{id}/logs")).await.body.to_string();
    assert!(logs.contains("ended: failure"), "{logs}");
    // Once ended, it is not asked again.
    let after = asked.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), after);
}
