//! The web UI end to end, in a real headless Chromium driven through chromedriver (Debian's `chromium` and
//! `chromium-driver`), against a `berth serve --demo` process: sign in, home, search, a blueprint's table
//! (filter, sort, pages), an entity, a relation, the graph, the blueprint builder, the entity form (an
//! invalid value first, then a valid one), edit, delete, the audit log, and the table at 375 px.
//!
//! Each main page is saved as a PNG in `target/ui-screenshots/` (or `$BERTH_SCREENSHOT_DIR`).
//! Without chromedriver the test fails, unless `BERTH_SKIP_BROWSER=1` asks to skip it on purpose
//! ([`support::chromium`]).

mod support;

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::json;
use support::chromium::{Chromium, click, fill, path_of, shot, text, wait_url};
use support::{ADMIN_EMAIL, ADMIN_PASSWORD, Berth};

async fn titles(c: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css("table.entities tbody tr td:first-child a")).await.expect("rows") {
        out.push(e.text().await.expect("text"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_end_to_end_in_chromium() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Berth::spawn(
        dir.path(),
        &support::sqlite_url(dir.path(), "ui.db"),
        &["--demo", "--allow-destination", "127.0.0.1"],
    );
    let http = support::client();
    let token = server.token(&http).await;
    // A missing browser fails the test, unless BERTH_SKIP_BROWSER=1 skips it on purpose (and says so).
    let Some(Chromium { client: c, driver: _driver }) = Chromium::start(dir.path()).await else { return };

    // Sign in: a wrong password is refused on the page, the right one lands on home.
    c.goto(&server.url("/")).await.expect("goto");
    assert!(path_of(&c).await.starts_with("/login"), "signed out goes to the login page");
    fill(&c, "input[name=email]", ADMIN_EMAIL).await;
    fill(&c, "input[name=password]", "wrong password").await;
    click(&c, "button[type=submit]").await;
    assert!(text(&c, "#login-error").await.contains("wrong"));
    shot(&c, "01-login").await;
    fill(&c, "input[name=password]", ADMIN_PASSWORD).await;
    click(&c, "button[type=submit]").await;
    wait_url(&c, "home", |u| u == "/").await;
    assert_eq!(text(&c, "main h1").await, "Catalog");
    assert_eq!(path_of(&c).await, "/");
    let cards = c.find_all(Locator::Css(".blueprint-card")).await.expect("cards");
    assert_eq!(cards.len(), 8, "the demo's blueprints");
    shot(&c, "02-home").await;

    // Global search as you type.
    fill(&c, "#global-q", "pay").await;
    let first_hit = text(&c, "#global-results .results li a").await;
    assert!(first_hit.to_lowercase().contains("pay"), "{first_hit}");
    shot(&c, "03-search").await;

    // A blueprint's table: count, filter, sort, pages.
    c.goto(&server.url("/blueprints/service/entities")).await.expect("goto");
    assert!(text(&c, "#count").await.starts_with("60 of 60"), "live count");
    assert_eq!(titles(&c).await.len(), 50, "first page");
    shot(&c, "04-table").await;
    click(&c, "#next-page").await;
    wait_url(&c, "the cursor in the URL", |u| u.contains("from=")).await;
    assert_eq!(titles(&c).await.len(), 10, "second page");
    c.goto(&server.url("/blueprints/service/entities")).await.expect("goto");
    let select = c.find(Locator::Css("select[name='f.language']")).await.expect("language filter");
    select.select_by_value("Rust").await.expect("select");
    wait_url(&c, "filtered", |u| u.contains("f.language=Rust")).await;
    let count = text(&c, "#count").await;
    let shown: usize = count.split_whitespace().next().and_then(|n| n.parse().ok()).expect("count");
    assert!(shown > 0 && shown < 60, "{count}");
    for cell in c.find_all(Locator::Css("table.entities tbody td .badge")).await.expect("badges") {
        let t = cell.text().await.expect("t");
        assert!(!["Go", "Python", "TypeScript", "Java"].contains(&t.as_str()), "only Rust services: {t}");
    }
    click(&c, "th a[data-sort='$title']").await;
    wait_url(&c, "sorted ascending", |u| u.contains("order=asc")).await;
    click(&c, "th a[data-sort='$title']").await;
    wait_url(&c, "sorted descending", |u| u.contains("order=desc")).await;
    assert!(path_of(&c).await.contains("order=desc"));
    let sorted = titles(&c).await;
    let mut expected = sorted.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(sorted, expected, "sorted by title, descending");
    shot(&c, "05-table-filtered-sorted").await;

    // An entity, a relation, the graph.
    click(&c, "table.entities tbody tr td:first-child a").await;
    let title = text(&c, "#entity-title").await;
    assert_eq!(title, sorted[0]);
    assert!(text(&c, "dd[data-prop='language']").await.contains("Rust"));
    shot(&c, "06-entity").await;
    let entity_path = path_of(&c).await;
    click(&c, "a.relation").await;
    wait_url(&c, "followed", |u| u != entity_path).await;
    assert!(path_of(&c).await.starts_with("/entities/"), "another entity's page");
    c.goto(&server.url(&format!("{entity_path}/graph?hops=2"))).await.expect("goto");
    let nodes = c.find_all(Locator::Css("svg.graph a.node")).await.expect("nodes");
    assert!(nodes.len() > 1, "the neighbourhood has {} nodes", nodes.len());
    shot(&c, "07-graph").await;

    // The builder: a blueprint with three properties.
    c.goto(&server.url("/blueprints/new")).await.expect("goto");
    fill(&c, "input[name=identifier]", "runbook").await;
    fill(&c, "input[name=title]", "Runbook").await;
    click(&c, "#new-blueprint button[type=submit]").await;
    wait_url(&c, "created", |u| u == "/blueprints/runbook").await;
    for (key, kind, choices, required) in [
        ("severity", "enum:", "low, high", true),
        ("summary", "string:", "", false),
        ("reviewedAt", "string:date-time", "", false),
    ] {
        fill(&c, "#add-property input[name=key]", key).await;
        c.find(Locator::Css("#add-property select[name=kind]"))
            .await
            .expect("kind")
            .select_by_value(kind)
            .await
            .expect("kind");
        fill(&c, "#add-property input[name=choices]", choices).await;
        if required {
            click(&c, "#add-property input[name=required]").await;
        }
        click(&c, "#add-property button[type=submit]").await;
        text(&c, &format!("tr[data-property='{key}']")).await;
    }
    assert_eq!(c.find_all(Locator::Css("#properties tbody tr[data-property]")).await.expect("rows").len(), 3);
    // A bad property is refused next to its form.
    fill(&c, "#add-property input[name=key]", "bad key!").await;
    c.execute("document.querySelector('#add-property').noValidate = true", vec![]).await.expect("js");
    click(&c, "#add-property button[type=submit]").await;
    assert!(!text(&c, "#property-error").await.is_empty());
    shot(&c, "08-builder").await;

    // The entity form: the missing required value shows at its field, then a valid one saves.
    c.goto(&server.url("/blueprints/runbook/entities/new")).await.expect("goto");
    fill(&c, "input[name=identifier]", "restart-db").await;
    fill(&c, "input[name=title]", "Restart the database").await;
    fill(&c, "input[name='p.summary']", "Fail over, then restart").await;
    click(&c, "#save").await;
    let error = text(&c, "[data-field='p.severity'] .field-error").await;
    assert!(error.contains("severity"), "{error}");
    assert_eq!(
        c.find(Locator::Css("input[name='p.summary']")).await.expect("kept").prop("value").await.expect("v").as_deref(),
        Some("Fail over, then restart"),
        "typed values survive"
    );
    shot(&c, "09-form-invalid").await;
    c.find(Locator::Css("select[name='p.severity']")).await.expect("sev").select_by_value("high").await.expect("sev");
    click(&c, "#save").await;
    assert_eq!(text(&c, "#entity-title").await, "Restart the database");
    assert!(text(&c, "dd[data-prop='severity']").await.contains("high"));

    // Edit, then delete behind a confirmation.
    click(&c, "#edit").await;
    fill(&c, "input[name=title]", "Restart the primary database").await;
    click(&c, "#save").await;
    assert_eq!(text(&c, "#entity-title").await, "Restart the primary database");
    assert!(text(&c, "ol.history").await.contains("updated"), "history shows the edit");
    shot(&c, "10-entity-edited").await;
    click(&c, "#delete").await;
    click(&c, "#confirm-delete").await;
    wait_url(&c, "back to the table", |u| u.starts_with("/blueprints/runbook/entities")).await;
    assert!(text(&c, "#count").await.starts_with("0 of 0"));
    let gone = http
        .get(server.url("/v1/blueprints/runbook/entities/restart-db"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), reqwest::StatusCode::NOT_FOUND, "deleted for the API too");

    // The audit log shows the UI's writes.
    c.goto(&server.url("/audit?origin=UI")).await.expect("goto");
    let audit = text(&c, "table.audit").await;
    assert!(audit.contains("runbook") && audit.contains("DELETE"), "{audit}");
    shot(&c, "11-audit").await;

    // A scorecard on the entity page, and a dashboard of widgets.
    let card = json!({"identifier": "basics", "title": "Basics", "rules": [
        {"identifier": "lang", "title": "Has a language", "level": "Bronze",
         "query": {"combinator": "and", "conditions": [{"property": "language", "operator": "isNotEmpty"}]}}]});
    let r = http.post(server.url("/v1/blueprints/service/scorecards")).bearer_auth(&token).json(&card).send().await;
    assert_eq!(r.expect("scorecard").status(), reqwest::StatusCode::CREATED);
    c.goto(&server.url(&entity_path)).await.expect("goto");
    // Passing its one (Bronze) rule, with no rules above, the entity reaches the top level.
    assert_eq!(text(&c, "span.level").await, "Gold", "the scorecard's level on the entity page");
    c.execute("document.getElementById('cards-h').scrollIntoView(); window.scrollBy(0, -90)", vec![])
        .await
        .expect("scroll");
    shot(&c, "13-entity-scorecard").await;
    click(&c, "div.scorecard h3 a").await;
    wait_url(&c, "the scorecard's page", |u| u == "/scorecards/service/basics").await;
    assert!(text(&c, "table.rates").await.contains("Has a language"));
    let trend = c.find_all(fantoccini::Locator::Css("svg.trend rect.bar")).await.expect("trend");
    assert!(!trend.is_empty(), "today's bar of the trend is drawn");
    shot(&c, "13b-scorecard").await;
    let board = json!({"identifier": "overview", "title": "Overview", "widgets": [
        {"type": "markdown", "title": "About", "markdown": "The **platform** at a glance."},
        {"type": "entities-number-chart", "title": "Services", "blueprint": "service", "calculationBy": "entities"},
        {"type": "entities-pie-chart", "title": "By language", "blueprint": "service", "property": "language"}]});
    let r = http.post(server.url("/v1/pages")).bearer_auth(&token).json(&board).send().await;
    assert_eq!(r.expect("page").status(), reqwest::StatusCode::CREATED);
    c.goto(&server.url("/pages")).await.expect("goto");
    click(&c, "a[href='/pages/overview']").await;
    wait_url(&c, "the dashboard", |u| u == "/pages/overview").await;
    assert!(text(&c, ".widgets").await.contains("By language"));
    let bars = c.find_all(fantoccini::Locator::Css("svg.chart rect.bar")).await.expect("bars");
    assert!(!bars.is_empty(), "the chart is drawn");
    shot(&c, "14-dashboard").await;

    // What runs where: a report, then the Deployments page (the matrix and DORA) from the side menu.
    let report = json!({"service": "checkout-api", "environment": "production", "version": "v9.9.9",
        "status": "success", "finishedAt": "2026-12-04T09:00:00Z"});
    let r = http.post(server.url("/v1/deployments")).bearer_auth(&token).json(&report).send().await;
    assert!(r.expect("report").status().is_success());
    click(&c, "a[href='/deployments']").await;
    wait_url(&c, "the deployments page", |u| u == "/deployments").await;
    assert!(text(&c, "#deployment-matrix").await.contains("v9.9.9"), "the reported version in the matrix");
    shot(&c, "15-deployments").await;
    let keys = text(&c, "#dora-keys").await;
    assert!(keys.to_lowercase().contains("change failure rate"), "{keys}");
    let weeks = c.find_all(fantoccini::Locator::Css("svg.trend rect.bar")).await.expect("weeks");
    assert!(!weeks.is_empty(), "the weekly chart is drawn");
    c.execute("document.getElementById('dora-h').scrollIntoView()", vec![]).await.expect("scroll");
    shot(&c, "15b-dora").await;
    // A service's timeline, from its row of the matrix (scrolled back up to it: WebDriver would bring it just
    // under the sticky header).
    let js = r##"document.querySelector("#deployment-matrix a[href*='checkout%2Dapi#timeline']").scrollIntoView({block: 'center'})"##;
    c.execute(js, vec![]).await.expect("scroll");
    click(&c, "#deployment-matrix a[href*='checkout%2Dapi#timeline']").await;
    wait_url(&c, "the timeline", |u| u.starts_with("/deployments?service=")).await;
    assert!(text(&c, "#deployment-timeline").await.contains("v9.9.9"), "the report in the timeline");
    shot(&c, "15c-timeline").await;

    actions_and_runs(&c, &server, &http, &token).await;
    integrations(&c, &server, &http, &token).await;
    administration(&c, &server, &http, &token).await;

    // Usable at 375 px: nothing wider than the screen but the table's own scroller.
    c.set_window_size(375, 800).await.expect("resize");
    c.goto(&server.url("/blueprints/service/entities")).await.expect("goto");
    let width = c.execute("return document.documentElement.scrollWidth", vec![]).await.expect("js");
    assert!(width.as_u64().is_some_and(|w| w <= 380), "page width at 375 px: {width}");
    shot(&c, "12-table-375px").await;

    c.close().await.expect("close");
    server.terminate();
}

/// A webhook receiver on a free port: the bodies it got.
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Default::default();
    let g = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let g = std::sync::Arc::clone(&g);
            async move {
                g.lock().expect("lock").push(body);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, got)
}

/// Waits until `check` holds (a change posted from a page that comes back to itself shows no new URL).
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "waited for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the element `css` reads `want`.
async fn wait_text(c: &Client, css: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = match c.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if now.trim() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{css} reads {now:?}, not {want:?}, at {}", path_of(c).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Self-service actions from an entity's page: a form made from the action's inputs (a rule that shows an
/// input, an error next to its field), the run followed live from in progress to success with its logs as
/// the backend reports, the demo's action that needs approval approved on the run's page, the runs list
/// and the builder.
async fn actions_and_runs(c: &Client, server: &Berth, http: &reqwest::Client, token: &str) {
    let (hook, hits) = receiver().await;
    let deploy = json!({"identifier": "deploy", "title": "Deploy",
        "trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "service",
            "userInputs": {"properties": {
                "version": {"type": "string", "title": "Version", "pattern": "^v[0-9]+\\.[0-9]+\\.[0-9]+$"},
                "env": {"type": "string", "title": "Environment", "enum": ["staging", "production"], "default": "staging"},
                "confirm": {"type": "boolean", "title": "I know this is production",
                    "visible": {"jqQuery": ".form.env == \"production\""}}},
                "required": ["version"], "order": ["version", "env", "confirm"]},
            "actionCardButtonText": "Deploy"},
        "invocationMethod": {"type": "WEBHOOK", "url": hook, "body": {"version": "{{ .inputs.version }}", "run": "{{ .run.id }}"}}});
    let r = http.post(server.url("/v1/actions")).bearer_auth(token).json(&deploy).send().await.expect("action");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED, "{:?}", r.text().await);

    // A production service where "Change lifecycle" applies (its condition: not deprecated).
    let found: serde_json::Value = http
        .post(server.url("/v1/blueprints/service/entities/search"))
        .bearer_auth(token)
        .json(
            &json!({"query": {"combinator": "and", "rules": [{"property": "lifecycle", "operator": "=", "value": "production"}]}}),
        )
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    let service = found["entities"][0]["identifier"].as_str().expect("a production service").to_string();
    c.goto(&server.url(&format!("/entities/service/{service}"))).await.expect("goto");
    click(c, "#action-deploy").await;
    wait_url(c, "the action's form", |u| u.starts_with("/actions/deploy/run?entity=")).await;
    assert!(c.find(Locator::Css("[data-input='i.confirm']")).await.is_err(), "hidden until production is chosen");
    let env = c.find(Locator::Css("#in-env")).await.expect("env");
    env.select_by_value("production").await.expect("choose production");
    text(c, "[data-input='i.confirm']").await;
    fill(c, "#in-version", "1.2").await;
    click(c, "#execute").await;
    let error = text(c, "[data-input='i.version'] .field-error").await;
    assert!(error.contains("version"), "the error is next to its field: {error}");
    shot(c, "16-action-form").await;
    fill(c, "#in-version", "v1.2.3").await;
    click(c, "#execute").await;
    wait_url(c, "the run's page", |u| u.starts_with("/runs/r_")).await;
    let run = path_of(c).await.trim_start_matches("/runs/").to_string();
    wait_text(c, "#run-status", "IN_PROGRESS").await;
    shot(c, "17-run-in-progress").await;
    let start = Instant::now();
    while hits.lock().expect("lock").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(15), "the webhook was not called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hits.lock().expect("lock")[0], json!({"version": "v1.2.3", "run": run}));
    // The backend reports; the page follows without a reload.
    let r = http
        .post(server.url(&format!("/v1/actions/runs/{run}/logs")))
        .bearer_auth(token)
        .json(&json!({"message": "rolling out v1.2.3"}))
        .send()
        .await
        .expect("log");
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let r = http
        .patch(server.url(&format!("/v1/actions/runs/{run}")))
        .bearer_auth(token)
        .json(&json!({"status": "SUCCESS", "statusLabel": "Deployed", "link": "https://ci.example.com/runs/1"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    wait_text(c, "#run-status", "SUCCESS").await;
    assert!(text(c, "#run-logs").await.contains("rolling out v1.2.3"), "the log arrived live");
    assert_eq!(path_of(c).await, format!("/runs/{run}"), "no navigation happened");
    shot(c, "18-run-success").await;

    // The demo's "Change lifecycle" needs an approval: the Admin approves it on the run's page.
    c.goto(&server.url(&format!("/entities/service/{service}"))).await.expect("goto");
    click(c, "#action-set-lifecycle").await;
    wait_url(c, "the lifecycle form", |u| u.starts_with("/actions/set%2Dlifecycle/run")).await;
    c.find(Locator::Css("#in-lifecycle"))
        .await
        .expect("lifecycle")
        .select_by_value("experimental")
        .await
        .expect("choose");
    fill(c, "#in-reason", "trying a rewrite").await;
    click(c, "#execute").await;
    wait_url(c, "the waiting run", |u| u.starts_with("/runs/r_")).await;
    wait_text(c, "#run-status", "WAITING_FOR_APPROVAL").await;
    shot(c, "19-run-waiting-for-approval").await;
    click(c, "#approve").await;
    wait_text(c, "#run-status", "SUCCESS").await;
    assert_eq!(text(c, "#run-approval").await.trim(), "APPROVED");
    shot(c, "20-run-approved").await;
    let e: serde_json::Value = http
        .get(server.url(&format!("/v1/blueprints/service/entities/{service}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("entity")
        .json()
        .await
        .expect("json");
    assert_eq!(e["entity"]["properties"]["lifecycle"], "experimental", "the approved run changed it");

    c.goto(&server.url("/runs")).await.expect("goto");
    let rows = c.find_all(Locator::Css("#runs tbody tr")).await.expect("rows");
    assert!(rows.len() >= 2, "both runs are listed");
    shot(c, "21-runs").await;
    c.goto(&server.url("/actions")).await.expect("goto");
    let listed = text(c, "#actions").await;
    shot(c, "22-actions").await;
    assert!(listed.to_lowercase().contains("scaffold a service"), "{listed}");
    click(c, "#new-action").await;
    wait_url(c, "the builder", |u| u == "/actions/new").await;
    text(c, "#action-body").await;
    shot(c, "23-action-builder").await;
}

/// Where data comes in: an Ocean integration as Ocean reports it (resync state, metrics, logs) and an inbound
/// webhook with one request; the Integrations page, an integration's page with "Resync now", a webhook's page.
async fn integrations(c: &Client, server: &Berth, http: &reqwest::Client, token: &str) {
    let send = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, server.url(path)).bearer_auth(token).json(&body).send()
    };
    let ok = |r: reqwest::Response| assert!(r.status().is_success(), "{}", r.status());
    ok(send(reqwest::Method::POST, "/v1/integration", json!({"installationId": "github-ocean", "installationAppType": "github",
        "version": "0.3.1", "config": {"entityDeletionThreshold": 0.9, "resources": [{"kind": "repository", "selector": {"query": "true"},
        "port": {"entity": {"mappings": {"identifier": ".name", "blueprint": "\"service\""}}}}]}})).await.expect("integration"));
    ok(send(reqwest::Method::PATCH, "/v1/integration/github-ocean/resync-state",
        json!({"status": "completed", "lastResyncStart": "2026-12-05T08:00:00Z", "lastResyncEnd": "2026-12-05T08:03:12Z"})).await.expect("state"));
    ok(send(
        reqwest::Method::PUT,
        "/v1/integration/github-ocean/metrics/syncMetrics/resync/ev-1/kind/repository-0",
        json!({"syncKindMetrics": {"syncState": "completed", "metrics": {"phase": {
            "extract": {"object_count_type": {"raw_extracted": {"object_count": 61.0}}},
            "load": {"object_count_type": {"loaded": {"object_count": 60.0}, "failed": {"object_count": 1.0}}}}}}}),
    )
    .await
    .expect("metrics"));
    ok(send(
        reqwest::Method::POST,
        "/v1/integration/github-ocean/logs",
        json!({"logs": [
        {"message": "Resync finished successfully", "level": "INFO", "timestamp": "2026-12-05T08:03:12Z"},
        {"message": "Upserting 60 entities", "level": "INFO", "timestamp": "2026-12-05T08:03:10Z"}]}),
    )
    .await
    .expect("logs"));
    ok(send(
        reqwest::Method::POST,
        "/v1/blueprints",
        json!({"identifier": "ticket", "title": "Ticket",
        "schema": {"properties": {"priority": {"type": "string"}}}}),
    )
    .await
    .expect("blueprint"));
    let r = send(reqwest::Method::POST, "/v1/webhooks", json!({"identifier": "helpdesk", "title": "Helpdesk",
        "mappings": [{"blueprint": "ticket", "filter": ".body.type == \"ticket\"",
            "entity": {"identifier": ".body.id", "title": ".body.subject", "properties": {"priority": ".body.priority"}}}]}))
        .await
        .expect("webhook");
    let created: serde_json::Value = r.json().await.expect("json");
    let url = created["integration"]["url"].as_str().expect("url").to_string();
    let r = http
        .post(&url)
        .json(&json!({"type": "ticket", "id": "T-1042", "subject": "Checkout is slow", "priority": "high"}))
        .send()
        .await
        .expect("ingest");
    assert_eq!(r.status(), reqwest::StatusCode::ACCEPTED);

    c.goto(&server.url("/integrations")).await.expect("goto");
    // Header cells are upper-cased by the style sheet.
    let listed = text(c, "#integrations").await.to_lowercase();
    assert!(listed.contains("github-ocean") && listed.contains("completed"), "{listed}");
    assert!(text(c, "#webhooks").await.to_lowercase().contains("helpdesk"));
    shot(c, "24-integrations").await;
    click(c, "#integrations a").await;
    wait_url(c, "the integration's page", |u| u.starts_with("/integrations/github")).await;
    assert!(text(c, "#syncs").await.contains("loaded: 60"));
    wait_text(c, "#resync-requested", "never").await;
    click(c, "#resync-now").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while text(c, "#resync-requested").await.trim() == "never" {
        assert!(Instant::now() < deadline, "Resync now did not ask for a resync");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shot(c, "25-integration").await;
    c.goto(&server.url("/webhooks/helpdesk")).await.expect("goto");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !text(c, "#events").await.contains("1 written") {
        assert!(Instant::now() < deadline, "the request's outcome is not shown");
        c.refresh().await.expect("refresh");
    }
    shot(c, "26-webhook").await;
}

/// Administration: an app made in the UI signs in with the secret shown once; rotating it shows a new one
/// and the old stops working; a team made and deleted; every change in the audit log.
async fn administration(c: &Client, server: &Berth, http: &reqwest::Client, token: &str) {
    let sign_in = |id: String, secret: String| async move {
        http.post(server.url("/v1/auth/access_token"))
            .json(&serde_json::json!({"clientId": id, "clientSecret": secret}))
            .send()
            .await
            .expect("token")
            .status()
    };
    c.goto(&server.url("/admin/teams")).await.expect("goto");
    fill(c, "#new-team input[name=name]", "release-crew").await;
    fill(c, "#new-team input[name=description]", "Ships the releases").await;
    click(c, "#new-team button[type=submit]").await;
    // The table appears with the first team.
    assert!(text(c, "#teams").await.contains("Ships the releases"));
    shot(c, "27-admin-teams").await;

    c.goto(&server.url("/admin/apps")).await.expect("goto");
    fill(c, "#new-app input[name=name]", "release bot").await;
    click(c, "#new-app input[value='release-crew']").await;
    click(c, "#new-app button[type=submit]").await;
    let id = text(c, "#revealed-id").await;
    let secret = text(c, "#revealed-secret").await;
    assert!(id.starts_with("berth_") && secret.len() >= 32, "{id} {secret}");
    assert!(text(c, "#apps").await.contains("release-crew"), "the app acts for its team");
    shot(c, "28-admin-app-created").await;
    assert_eq!(sign_in(id.clone(), secret.clone()).await, 200, "the secret shown signs in");
    c.goto(&server.url("/admin/apps")).await.expect("goto");
    assert!(c.find(Locator::Css("#revealed-secret")).await.is_err(), "shown once");
    click(c, &format!("button[aria-label='Rotate the secret of {id}']")).await;
    c.accept_alert().await.expect("the confirmation");
    let rotated = text(c, "#revealed-secret").await;
    assert_ne!(rotated, secret);
    assert_eq!(sign_in(id.clone(), secret.clone()).await, 401, "the old secret stops working");
    assert_eq!(sign_in(id.clone(), rotated.clone()).await, 200);
    click(c, &format!("button[aria-label='Delete {id}']")).await;
    c.accept_alert().await.expect("the confirmation");
    until("a deleted app signs in no more", async || sign_in(id.clone(), rotated.clone()).await == 401).await;
    until("the app off the page", async || !text(c, "#apps").await.contains(&id)).await;
    // A user invited into the team with the link shown once, who accepts it, is disabled, then deleted.
    c.goto(&server.url("/admin/users")).await.expect("goto");
    fill(c, "#invite-user input[name=email]", "newcomer@example.com").await;
    click(c, "#invite-user input[value='release-crew']").await;
    click(c, "#invite-user button[type=submit]").await;
    let link = text(c, "#revealed-link").await;
    let code = link.split("code=").nth(1).expect("a code in the link").to_string();
    shot(c, "29-admin-user-invited").await;
    let accepted = http
        .post(server.url("/v1/users/accept-invite"))
        .json(&serde_json::json!({"email": "newcomer@example.com", "code": code, "password": "a-long-password-1"}))
        .send()
        .await
        .expect("accept");
    assert_eq!(accepted.status(), 200, "the link's code accepts the invitation");
    let user = |path: &'static str| async move {
        let r = http.get(server.url(path)).bearer_auth(token).send().await.expect("user");
        (r.status(), r.json::<serde_json::Value>().await.unwrap_or_default())
    };
    let (_, u) = user("/v1/users/newcomer@example.com").await;
    assert_eq!(u["user"]["status"], "active");
    assert!(u.to_string().contains("release-crew"), "in the team: {u}");
    // Their role and teams changed on their page.
    c.goto(&server.url("/admin/users")).await.expect("goto");
    click(c, "#users a[href^='/admin/users/newcomer']").await;
    wait_url(c, "the user's page", |u| u.starts_with("/admin/users/newcomer")).await;
    click(c, "#edit-user input[value='release-crew']").await;
    c.find(Locator::Css("#edit-user select[name=role]"))
        .await
        .expect("role")
        .select_by_value("Admin")
        .await
        .expect("Admin");
    click(c, "#edit-user button[type=submit]").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, u) = user("/v1/users/newcomer@example.com").await;
        if u["user"]["roles"] == serde_json::json!([{"name": "Admin"}]) {
            assert!(!u.to_string().contains("release-crew"), "left the team: {u}");
            break;
        }
        assert!(Instant::now() < deadline, "the role was not saved: {u}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.goto(&server.url("/admin/users")).await.expect("goto");
    click(c, "button[aria-label='Disable newcomer@example.com']").await;
    // The page it comes back to is the one it left: wait for the change itself.
    until("the user disabled", async || user("/v1/users/newcomer@example.com").await.1["user"]["status"] == "disabled")
        .await;
    // And the page it shows is the new one (its button now enables), before the next click.
    assert_eq!(text(c, "button[aria-label='Enable newcomer@example.com']").await, "Enable");
    click(c, "button[aria-label='Delete newcomer@example.com']").await;
    c.accept_alert().await.expect("the confirmation");
    until("the user deleted", async || user("/v1/users/newcomer@example.com").await.0 == 404).await;

    c.goto(&server.url("/admin/teams")).await.expect("goto");
    click(c, "button[aria-label='Delete team release-crew']").await;
    c.dismiss_alert().await.expect("the confirmation, refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(text(c, "#teams").await.contains("release-crew"), "nothing deleted without a yes");
    click(c, "button[aria-label='Delete team release-crew']").await;
    c.accept_alert().await.expect("the confirmation");
    until("the team gone", async || !text(c, "main").await.to_lowercase().contains("release-crew")).await;
    c.goto(&server.url("/blueprints/service")).await.expect("goto");
    click(c, "#permissions-link").await;
    wait_url(c, "the permissions page", |u| u == "/blueprints/service/permissions").await;
    assert!(text(c, "#grant-read").await.contains("Member"));
    shot(c, "30-permissions").await;
    c.goto(&server.url("/guide")).await.expect("goto");
    click(c, "main a[href='/guide/concepts']").await;
    wait_url(c, "the guide's concepts", |u| u == "/guide/concepts").await;
    assert!(text(c, "main h1").await.contains("Concepts"));
    shot(c, "31-guide").await;
    c.goto(&server.url("/audit")).await.expect("goto");
    let audit = text(c, "main").await.to_lowercase();
    assert!(audit.contains("release-crew") || audit.contains(&id.to_lowercase()), "changes audited: {audit}");
}
