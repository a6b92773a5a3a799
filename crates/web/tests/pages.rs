//! The UI over HTTP without a browser: sessions and their cookie, CSRF, redirects that stay on this site,
//! escaping of catalog data, error pages, and a disabled user's session ending. (The browser walk-through is
//! `crates/cli/tests/browser.rs`.)

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

const EMAIL: &str = "ui@example.com";
const PASSWORD: &str = "ui-password-123";

const FORM: &str = "content-type";
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

fn encode(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

struct Ui {
    base: String,
    /// A client that does not follow redirects and keeps no cookies (tests pass the cookie themselves).
    http: reqwest::Client,
    /// The API token of the test Admin credential.
    token: String,
    _server: berth_testkit::server::TestServer,
}

/// A server with the UI and the demo catalog, whose first Admin user signs in with [`EMAIL`] / [`PASSWORD`].
async fn start() -> Ui {
    let server = berth_testkit::server::TestServer::start_with_ui(
        |config| {
            config.bootstrap_admin_email = Some(EMAIL.into());
            config.bootstrap_admin_password = Some(PASSWORD.into());
            config.demo = true;
        },
        berth_web::router(),
    )
    .await;
    let http = reqwest::Client::builder().redirect(Policy::none()).build().expect("client");
    Ui { base: server.base.clone(), http, token: server.token.clone(), _server: server }
}

impl Ui {
    /// Accepts an invitation on `/invite` (choosing `password`), as the invitee's browser would.
    async fn accept_invitation(&self, email: &str, code: &str, password: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/invite", self.base))
            .header(FORM, FORM_TYPE)
            .body(encode(&[("email", email), ("code", code), ("password", password), ("password2", password)]))
            .send()
            .await
            .expect("accept")
    }

    async fn login(&self, email: &str, password: &str, next: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/login", self.base))
            .header(FORM, FORM_TYPE)
            .body(encode(&[("email", email), ("password", password), ("next", next)]))
            .send()
            .await
            .expect("login")
    }

    /// Signs in and returns the `Cookie` header value.
    async fn cookie(&self) -> String {
        let r = self.login(EMAIL, PASSWORD, "/").await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()["set-cookie"].to_str().expect("cookie").to_string();
        set.split(';').next().expect("pair").to_string()
    }

    /// `GET path` on the API with the test Admin's token, as JSON.
    async fn api_json(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token).send().await.expect("get");
        r.json().await.expect("json")
    }

    async fn get(&self, cookie: &str, path: &str) -> (StatusCode, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", cookie).send().await.expect("get");
        (r.status(), r.text().await.expect("body"))
    }

    async fn post(&self, cookie: &str, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header(FORM, FORM_TYPE)
            .body(encode(form))
            .send()
            .await
            .expect("post")
    }

    /// The CSRF token of a page's forms.
    async fn csrf(&self, cookie: &str) -> String {
        let (_, page) = self.get(cookie, "/").await;
        let at = page.find(r#"name="_csrf" value=""#).expect("csrf field") + r#"name="_csrf" value=""#.len();
        page[at..at + 64].to_string()
    }
}

#[tokio::test]
async fn sessions_cookies_and_redirects() {
    let ui = start().await;
    // Signed out: every page goes to the login page, remembering where it was going.
    let r = ui.http.get(format!("{}/blueprints/service/entities?q=x", ui.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Fblueprints%2Fservice%2Fentities%3Fq%3Dx");
    // A wrong password: 401 and the form again, no cookie.
    let r = ui.login(EMAIL, "nope nope nope", "/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.expect("body").contains("wrong"));
    // The cookie is HttpOnly and SameSite; `next` only ever leads to this site.
    let r = ui.login(EMAIL, PASSWORD, "//evil.example/steal").await;
    assert_eq!(r.headers()["location"], "/");
    // Browsers drop tabs and newlines and read `\` as `/`: none of these may lead off the site (review M7).
    for next in ["/\t/evil.example", "/\n/evil.example", "/\\evil.example", "/%09/evil.example", "/\r\n//evil"] {
        let decoded = percent_encoding::percent_decode_str(next).decode_utf8_lossy().to_string();
        let r = ui.login(EMAIL, PASSWORD, &decoded).await;
        assert_eq!(r.headers()["location"], "/", "next = {next:?}");
    }
    // Behind a TLS-terminating proxy the cookie is Secure.
    let r = ui
        .http
        .post(format!("{}/login", ui.base))
        .header(FORM, FORM_TYPE)
        .header("x-forwarded-proto", "https")
        .body(encode(&[("email", EMAIL), ("password", PASSWORD), ("next", "/")]))
        .send()
        .await
        .expect("login");
    assert!(r.headers()["set-cookie"].to_str().expect("c").contains("; Secure"));
    let set = r.headers()["set-cookie"].to_str().expect("cookie");
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"), "{set}");
    let r = ui.login(" UI@Example.com ", PASSWORD, "/audit").await;
    assert_eq!(r.headers()["location"], "/audit", "emails are matched case-insensitively");
    // The API does not take the cookie: it wants a bearer token.
    let cookie = ui.cookie().await;
    let r = ui.http.get(format!("{}/v1/blueprints", ui.base)).header("cookie", &cookie).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // Unknown things are HTML error pages with the right status.
    let (status, body) = ui.get(&cookie, "/entities/service/no-such-thing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("<html") && body.contains("no-such-thing"), "{body}");
    // Sign out ends the cookie, and every copy of it: replayed, it no longer opens a page (review M8).
    let other_copy = ui.cookie().await;
    assert_eq!(ui.get(&other_copy, "/").await.0, StatusCode::OK);
    let csrf = ui.csrf(&cookie).await;
    let r = ui.post(&cookie, "/logout", &[("_csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"].to_str().expect("c").contains("Max-Age=0"));
    assert_eq!(ui.get(&cookie, "/").await.0, StatusCode::SEE_OTHER, "the signed-out cookie replayed");
    assert_eq!(ui.get(&other_copy, "/").await.0, StatusCode::SEE_OTHER, "another session of the user");
    assert_eq!(ui.get(&ui.cookie().await, "/").await.0, StatusCode::OK, "signing in again works");
}

#[tokio::test]
async fn writes_need_the_csrf_token_and_data_is_escaped() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    let form = [("_csrf", "forged"), ("identifier", "x1"), ("title", "X"), ("p.language", "Rust")];
    let r = ui.post(&cookie, "/blueprints/service/entities/new", &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no write without the session's token");
    let r = ui
        .http
        .get(format!("{}/v1/blueprints/service/entities/x1", ui.base))
        .bearer_auth(&ui.token)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing was written");

    // Catalog data with markup shows as text.
    let evil = "<script>alert('x')</script>";
    let form = [
        ("_csrf", csrf.as_str()),
        ("identifier", "x2"),
        ("title", evil),
        ("p.language", "Rust"),
        ("p.readme", "hi <img src=x onerror=alert(1)>"),
    ];
    let r = ui.post(&cookie, "/blueprints/service/entities/new", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
    let (status, page) = ui.get(&cookie, "/entities/service/x2").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains(evil) && !page.contains("<img src=x"), "escaped");
    assert!(page.contains("&#60;script&#62;") || page.contains("&lt;script&gt;"), "shown as text");
    let (_, table) = ui.get(&cookie, "/blueprints/service/entities?q=x2").await;
    assert!(!table.contains(evil) && table.contains("<strong>1</strong> of"), "filtered to one, escaped");

    // A value the schema refuses comes back at its field with a 422, and nothing is written.
    let form = [("_csrf", csrf.as_str()), ("identifier", "x3"), ("p.replicas", "many")];
    let r = ui.post(&cookie, "/blueprints/service/entities/new", &form).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.expect("body");
    assert!(body.contains(r#"data-field="p.replicas""#) && body.contains("is not a number"), "{body}");
}

#[tokio::test]
async fn a_disabled_user_loses_its_session() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    assert_eq!(ui.get(&cookie, "/").await.0, StatusCode::OK);
    // Invite a second admin so the first may be disabled.
    let r = ui
        .http
        .post(format!("{}/v1/users/invite", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"invitee": {"email": "other@example.com", "roles": ["Admin"]}}))
        .send()
        .await
        .expect("invite");
    assert_eq!(r.status(), StatusCode::CREATED);
    let invite: Value = r.json().await.expect("json");
    // The invitation page sets a password and signs the invitee in.
    let url = invite["invitation"]["url"].as_str().expect("url");
    let r = ui.http.get(format!("{}{url}", ui.base)).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let code = invite["invitation"]["code"].as_str().expect("code");
    let r = ui.accept_invitation("other@example.com", code, "a good password").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"].to_str().expect("c").starts_with("berth_session="));

    let r = ui
        .http
        .patch(format!("{}/v1/users/{EMAIL}", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = ui.get(&cookie, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the old session no longer works");
    assert_eq!(ui.login(EMAIL, PASSWORD, "/").await.status(), StatusCode::UNAUTHORIZED, "nor does signing in");
    // Enabled again, the user signs in anew; the session from before the disable stays dead (review M8).
    let r = ui
        .http
        .patch(format!("{}/v1/users/{EMAIL}", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"status": "active"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ui.get(&cookie, "/").await.0, StatusCode::SEE_OTHER, "re-enabling does not revive old sessions");
    assert_eq!(ui.get(&ui.cookie().await, "/").await.0, StatusCode::OK);
}

#[tokio::test]
async fn pages_show_only_what_the_user_may_read() {
    let ui = start().await;
    let api = |method: reqwest::Method, path: &str, body: Value| {
        ui.http.request(method, format!("{}{path}", ui.base)).bearer_auth(&ui.token).json(&body).send()
    };
    for t in ["ui-a", "ui-b"] {
        assert_eq!(
            api(reqwest::Method::POST, "/v1/teams", json!({"name": t})).await.expect("team").status(),
            StatusCode::CREATED
        );
    }
    // svc-ui-a → svc-ui-b (hidden from ui-a) → svc-ui-c (ui-a's again): the graph must not walk through b.
    for (id, team, deps) in [
        ("svc-ui-c", "ui-a", json!([])),
        ("svc-ui-b", "ui-b", json!(["svc-ui-c"])),
        ("svc-ui-a", "ui-a", json!(["svc-ui-b"])),
    ] {
        let body = json!({"identifier": id, "title": id, "team": [team], "properties": {"language": "Rust"},
            "relations": {"dependsOn": deps}});
        let r = api(reqwest::Method::POST, "/v1/blueprints/service/entities", body).await.expect("create");
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let r = api(
        reqwest::Method::PATCH,
        "/v1/blueprints/service/permissions",
        json!({"entities": {"read": {"roles": [], "ownedByTeam": true}}}),
    )
    .await
    .expect("permissions");
    assert_eq!(r.status(), StatusCode::OK);
    // A Member of ui-a signs in through its invitation.
    let invite: Value = api(
        reqwest::Method::POST,
        "/v1/users/invite",
        json!({"invitee": {"email": "m@example.com", "teams": ["ui-a"]}}),
    )
    .await
    .expect("invite")
    .json()
    .await
    .expect("json");
    let code = invite["invitation"]["code"].as_str().expect("code");
    let r = ui.accept_invitation("m@example.com", code, "member password").await;
    let cookie = r.headers()["set-cookie"].to_str().expect("cookie").split(';').next().expect("pair").to_string();

    // (Title column only: a readable entity's relation cells name what it points at, as the API does.)
    let (status, table) = ui.get(&cookie, "/blueprints/service/entities?cols=%24title").await;
    assert_eq!(status, StatusCode::OK);
    let count_at = table.find("id=\"count\"").unwrap_or(0);
    assert!(
        table.contains("svc-ui-a") && !table.contains("svc-ui-b"),
        "only team ui-a's service: {}",
        &table[count_at..(count_at + 1500).min(table.len())]
    );
    assert!(table.contains("<strong>2</strong> of 2"), "the count agrees");
    assert_eq!(ui.get(&cookie, "/entities/service/svc-ui-b").await.0, StatusCode::NOT_FOUND);
    // With the relation column, the hidden target is named (svc-ui-a's own data) but not linked.
    let (_, with_deps) = ui.get(&cookie, "/blueprints/service/entities?cols=%24title&cols=dependsOn").await;
    // (Identifiers in links are percent-encoded: `-` is `%2D`.)
    assert!(with_deps.contains("svc-ui-b") && !with_deps.contains("/entities/service/svc%2Dui%2Db"), "no dead link");
    assert!(with_deps.contains("/entities/service/svc%2Dui%2Dc"), "a readable entity is linked");
    // The graph neither shows the hidden service nor walks through it to what lies beyond (review L4).
    let (status, graph) = ui.get(&cookie, "/entities/service/svc-ui-a/graph?hops=3").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!graph.contains("svc-ui-b") && !graph.contains("svc-ui-c"), "graph: hidden node or reached through one");
    let (_, graph_c) = ui.get(&cookie, "/entities/service/svc-ui-c/graph?hops=1").await;
    assert!(!graph_c.contains("svc-ui-b"), "the hidden dependent is not drawn");
    // Dashboards and scorecard pages count only what the Member may read: the same figures as if the
    // hidden services did not exist (2 services, both ui-a's).
    let board = json!({"identifier": "m-board", "title": "Board", "widgets": [
        {"type": "entities-number-chart", "title": "Services", "blueprint": "service", "calculationBy": "entities"},
        {"type": "table-entities-explorer", "title": "List", "blueprint": "service"}]});
    assert_eq!(api(reqwest::Method::POST, "/v1/pages", board).await.expect("page").status(), StatusCode::CREATED);
    let (_, shown) = ui.get(&cookie, "/pages/m-board").await;
    assert!(shown.contains(r#"<span class="value">2</span>"#), "two readable services");
    assert!(!shown.contains("svc-ui-b") && shown.contains("svc-ui-a"), "the list leaves the hidden one out");
    let card = json!({"identifier": "m-card", "title": "Card", "rules": [{"identifier": "r", "title": "Rust",
        "level": "Bronze", "query": {"combinator": "and", "conditions": [{"property": "language", "operator": "=", "value": "Rust"}]}}]});
    let r = api(reqwest::Method::POST, "/v1/blueprints/service/scorecards", card).await.expect("card");
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, card_page) = ui.get(&cookie, "/scorecards/service/m-card").await;
    assert!(card_page.contains("(2 of 2)"), "the rule judged on the two readable services only");
    assert!(!card_page.contains("ui-b"), "no row for a team whose entities are hidden");
    // A page read only by team ui-b is missing for this Member, like a page that does not exist.
    let secret = json!({"identifier": "b-only", "title": "B only", "permissions": {"read": {"teams": ["ui-b"]}}});
    assert_eq!(api(reqwest::Method::POST, "/v1/pages", secret).await.expect("page").status(), StatusCode::CREATED);
    let (_, pages) = ui.get(&cookie, "/pages").await;
    assert!(pages.contains(">Board</a>") && !pages.contains("B only"), "listed only when readable");
    assert_eq!(ui.get(&cookie, "/pages/b-only").await.0, StatusCode::NOT_FOUND);
    // A Member's attempt to change a blueprint through the builder is refused, and audited.
    let (_, page) = ui.get(&cookie, "/blueprints/service").await;
    let at = page.find(r#"name="_csrf" value=""#).expect("csrf") + r#"name="_csrf" value=""#.len();
    let csrf = page[at..at + 64].to_string();
    // The administration pages are for Admins: neither shown nor changed by a Member.
    for (path, post) in [
        ("/admin/apps", "/admin/apps"),
        ("/admin/users", "/admin/users"),
        ("/admin/teams", "/admin/teams"),
        ("/admin/settings", "/admin/settings/secrets"),
        ("/blueprints/service/permissions", "/blueprints/service/permissions"),
    ] {
        assert_eq!(ui.get(&cookie, path).await.0, StatusCode::FORBIDDEN, "{path}");
        let form = [("_csrf", csrf.as_str()), ("name", "sneaky"), ("value", "v"), ("email", "x@example.com")];
        let r = ui.post(&cookie, post, &form).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{post}");
    }
    assert!(!page.contains("/admin/apps"), "not in a Member's navigation");
    let r = ui
        .post(&cookie, "/blueprints/service/properties", &[("_csrf", &csrf), ("key", "x"), ("kind", "string:")])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut recorded = false;
    for _ in 0..100 {
        let audit: Value = api(reqwest::Method::GET, "/v1/audit-log?status=FAILURE&origin=UI", json!(null))
            .await
            .expect("audit")
            .json()
            .await
            .expect("json");
        if audit["audits"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["trigger"]["by"]["userId"] == json!("m@example.com")))
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(recorded, "the refused builder post is in the audit log");
    let (_, found) = ui.get(&cookie, "/search?q=svc-ui").await;
    assert!(found.contains("svc-ui-a") && !found.contains("svc-ui-b"));
    // The Admin sees both.
    let admin = ui.cookie().await;
    let (_, table) = ui.get(&admin, "/blueprints/service/entities?q=svc-ui").await;
    assert!(table.contains("svc-ui-a") && table.contains("svc-ui-b"));
}

/// H7: the table's `cols` are the blueprint's columns, each once, however many the URL repeats, and junk
/// parameters are not copied into every link: one GET costs one page.
#[tokio::test]
async fn table_columns_are_validated_and_bounded() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let mut qs = String::from("cols=%24title&cols=no-such-column");
    // As many as a URI holds (about 64 kB).
    for _ in 0..1_400 {
        qs.push_str("&cols=%24identifier&junk=aaaaaaaaaaaaaaaa");
    }
    let (status, body) = ui.get(&cookie, &format!("/blueprints/service/entities?{qs}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.len() < 1_000_000, "{} bytes", body.len());
    assert!(!body.contains("no-such-column") && !body.contains("junk="), "unknown columns and junk are dropped");
    assert_eq!(
        body.matches("cols=%24identifier").count(),
        body.matches("cols=%24title").count(),
        "each column once per link"
    );
}

/// H4: a burst of wrong sign-ins is answered at once beyond the hashing slots (503) and, past the free
/// failures, with 429 and `Retry-After`, without a single 500; the account is then blocked even for the right
/// password, and the API keeps writing meanwhile.
#[tokio::test]
async fn a_burst_of_wrong_sign_ins_is_bounded() {
    let ui = start().await;
    let burst: Vec<_> = (0..200)
        .map(|i| {
            let http = ui.http.clone();
            let base = ui.base.clone();
            tokio::spawn(async move {
                let email = if i % 2 == 0 { EMAIL.to_string() } else { format!("nobody{i}@example.com") };
                let r = http
                    .post(format!("{base}/login"))
                    .header(FORM, FORM_TYPE)
                    .body(encode(&[("email", &email), ("password", "wrong password!"), ("next", "/")]))
                    .send()
                    .await
                    .expect("login");
                (r.status(), r.headers().contains_key("retry-after"))
            })
        })
        .collect();
    let write = ui
        .http
        .post(format!("{}/v1/teams", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"name": "written-during-the-burst"}))
        .send()
        .await
        .expect("write");
    assert!(write.status().is_success(), "{}", write.status());
    let mut seen = std::collections::BTreeMap::new();
    for task in burst {
        let (status, retry_after) = task.await.expect("joined");
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE]
                .contains(&status),
            "{status}"
        );
        if status != StatusCode::UNAUTHORIZED {
            assert!(retry_after, "{status} carries Retry-After");
        }
        *seen.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert!(seen.get(&401).copied().unwrap_or(0) <= 40, "most were never hashed: {seen:?}");
    // Guessed one at a time, the account is blocked after a few failures, then even for its password.
    let mut guesses = 0;
    while ui.login(EMAIL, "still wrong!", "/").await.status() != StatusCode::TOO_MANY_REQUESTS {
        guesses += 1;
        assert!(guesses <= 6, "blocked after the free failures");
    }
    assert_eq!(ui.login(EMAIL, PASSWORD, "/").await.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// L8: an edit form saves over the version it was opened on, or not at all: a change made meanwhile (by
/// the API here) is not silently overwritten.
#[tokio::test]
async fn an_edit_over_a_newer_version_is_refused() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    let form = [("_csrf", csrf.as_str()), ("identifier", "e1"), ("title", "First"), ("p.language", "Rust")];
    assert_eq!(ui.post(&cookie, "/blueprints/service/entities/new", &form).await.status(), StatusCode::SEE_OTHER);
    let (status, page) = ui.get(&cookie, "/entities/service/e1/edit").await;
    assert_eq!(status, StatusCode::OK);
    let at = page.find(r#"name="_version" value=""#).expect("a version field") + r#"name="_version" value=""#.len();
    let version = page[at..].split('"').next().expect("value").to_string();
    // Someone else changes it through the API.
    let r = ui
        .http
        .patch(format!("{}/v1/blueprints/service/entities/e1", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"title": "Changed by the API"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::OK);
    let edit = [("_csrf", csrf.as_str()), ("_version", version.as_str()), ("title", "Mine"), ("p.language", "Go")];
    let r = ui.post(&cookie, "/entities/service/e1/edit", &edit).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.expect("body").contains("after you opened the form"));
    let now = ui.api_json("/v1/blueprints/service/entities/e1").await;
    assert_eq!(now["entity"]["title"], json!("Changed by the API"), "not overwritten");
    // Opened again, the form saves.
    let (_, page) = ui.get(&cookie, "/entities/service/e1/edit").await;
    let at = page.find(r#"name="_version" value=""#).expect("a version field") + r#"name="_version" value=""#.len();
    let version = page[at..].split('"').next().expect("value").to_string();
    let edit = [("_csrf", csrf.as_str()), ("_version", version.as_str()), ("title", "Mine"), ("p.language", "Go")];
    assert_eq!(ui.post(&cookie, "/entities/service/e1/edit", &edit).await.status(), StatusCode::SEE_OTHER);
}

/// The entity page shows the entity's scorecards: each level in its colour, every rule passed or failed
/// with its query in words; catalog text in them is escaped.
#[tokio::test]
async fn the_entity_page_shows_its_scorecards() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let api = |method: reqwest::Method, path: &str, body: Value| {
        ui.http.request(method, format!("{}{path}", ui.base)).bearer_auth(&ui.token).json(&body).send()
    };
    let r = api(
        reqwest::Method::POST,
        "/v1/blueprints/service/entities",
        json!({"identifier": "scored", "properties": {"language": "Go"}}),
    )
    .await
    .expect("entity");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let card = json!({"identifier": "quality", "title": "Quality <b>bar</b>", "rules": [
        {"identifier": "go", "title": "Written in Go", "level": "Bronze",
         "query": {"combinator": "and", "conditions": [{"property": "language", "operator": "=", "value": "Go"}]}},
        {"identifier": "team", "title": "Has a team", "level": "Silver",
         "query": {"combinator": "and", "conditions": [{"property": "$team", "operator": "isNotEmpty"}]}}]});
    let r = api(reqwest::Method::POST, "/v1/blueprints/service/scorecards", card).await.expect("scorecard");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let (status, page) = ui.get(&cookie, "/entities/service/scored").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="cards-h">Scorecards"#), "{page}");
    assert!(page.contains(r#"class="badge level level-bronze" data-level="Bronze""#), "the level in its colour");
    assert!(page.contains("✓ passed") && page.contains("✗ failed"), "each rule's result");
    assert!(
        page.contains("language = &#34;Go&#34;") || page.contains("language = &quot;Go&quot;"),
        "the query in words"
    );
    assert!(!page.contains("<b>bar</b>"), "catalog text is escaped");
    assert!(page.contains(r#"<a href="/scorecards/service/quality">"#), "the scorecard links to its page");

    // The scorecard's page: entities per level, each rule's pass rate, levels per team, all as the API
    // counts them.
    let (status, list) = ui.get(&cookie, "/scorecards").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(r#"href="/scorecards/service/quality""#), "{list}");
    let every =
        json!({"combinator": "and", "rules": [{"property": "$blueprint", "operator": "=", "value": "service"}]});
    let counted = |rule: Option<&str>| {
        let mut body = json!({"func": "countValues", "scorecard": "quality", "query": every});
        if let Some(r) = rule {
            body["rule"] = json!(r);
        }
        api(reqwest::Method::POST, "/v1/entities/aggregate", body)
    };
    let levels: Value = counted(None).await.expect("levels").json().await.expect("json");
    let go: Value = counted(Some("go")).await.expect("rule").json().await.expect("json");
    let (status, card) = ui.get(&cookie, "/scorecards/service/quality").await;
    assert_eq!(status, StatusCode::OK);
    assert!(card.contains("Entities per level") && card.contains(r#"<svg class="chart""#), "{card}");
    for (level, n) in levels["result"].as_object().expect("levels") {
        assert!(card.contains(&format!("<li>{level}: <strong>{n}</strong></li>")), "{level}: {n}");
    }
    let passed = go["result"]["SUCCESS"].as_u64().unwrap_or(0);
    let judged = passed + go["result"]["FAILURE"].as_u64().unwrap_or(0);
    let rate = (passed * 100 + judged / 2) / judged.max(1);
    assert!(
        card.contains(&format!(r#"data-rate="{rate}""#)) && card.contains(&format!("({passed} of {judged})")),
        "{card}"
    );
    assert!(card.contains("Per team") && !card.contains("<b>bar</b>"));
    // The trend: 14 days, today's row the current distribution (levels in order), drawn and as a table.
    assert!(card.contains(r#"<svg class="chart trend""#) && card.contains("Over the last 14 days"), "{card}");
    let today =
        card.split("<tbody>").find(|t| t.contains(r#"<th scope="row">"#)).and_then(|t| t.split("</tr>").nth(13));
    let today = today.expect("fourteen rows");
    let cells: Vec<u64> = today.split("<td>").skip(1).filter_map(|c| c.split('<').next()?.parse().ok()).collect();
    let want: Vec<u64> =
        ["Basic", "Bronze", "Silver", "Gold"].iter().map(|l| levels["result"][*l].as_u64().unwrap_or(0)).collect();
    assert_eq!(cells, want, "{today}");
    assert_eq!(ui.get(&cookie, "/scorecards/service/nope").await.0, StatusCode::NOT_FOUND);
}

/// Dashboards: the page list, and a page's widgets computed through the session's view: a markdown text
/// (safe), a count and a sum, a bar chart of a property's values (SVG with its figures as text), a table of
/// entities; a widget of an unknown type or with a bad dataset says so instead of failing the page.
#[tokio::test]
async fn dashboards_show_their_widgets() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let services = ui.api_json("/v1/blueprints/service/entities").await;
    let services = services["entities"].as_array().expect("entities").clone();
    let go = services.iter().filter(|e| e["properties"]["language"] == "Go").count();
    let replicas: f64 = services.iter().filter_map(|e| e["properties"]["replicas"].as_f64()).sum();
    let only_go = json!({"combinator": "and", "rules": [{"property": "language", "operator": "=", "value": "Go"}]});
    let page = json!({"identifier": "overview", "title": "Platform overview", "description": "How we are doing",
        "widgets": [
            {"type": "markdown", "title": "Read me", "markdown": "**Welcome** <script>alert(1)</script>"},
            {"type": "entities-number-chart", "title": "Go services", "blueprint": "service", "calculationBy": "entities", "dataset": only_go},
            {"type": "entities-number-chart", "title": "Replicas", "blueprint": "service", "calculationBy": "property", "func": "sum", "property": "replicas"},
            {"type": "entities-pie-chart", "title": "By language", "blueprint": "service", "property": "language"},
            {"type": "table-entities-explorer", "title": "Go list", "blueprint": "service", "dataset": only_go},
            {"type": "iframe-widget", "title": "Elsewhere"},
            {"type": "entities-number-chart", "title": "Broken", "blueprint": "service", "dataset": {"combinator": "xor"}}]});
    let r =
        ui.http.post(format!("{}/v1/pages", ui.base)).bearer_auth(&ui.token).json(&page).send().await.expect("page");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    let (status, list) = ui.get(&cookie, "/pages").await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(r#"href="/pages/overview">Platform overview</a>"#), "{list}");
    let (status, board) = ui.get(&cookie, "/pages/overview").await;
    assert_eq!(status, StatusCode::OK);
    assert!(board.contains("<strong>Welcome</strong>") && !board.contains("<script>alert(1)"), "markdown, safely");
    assert!(board.contains(&format!(r#"<span class="value">{go}</span>"#)), "the count of Go services ({go})");
    let sum = if replicas.fract() == 0.0 { format!("{replicas:.0}") } else { format!("{replicas:.2}") };
    assert!(board.contains(&format!(r#"<span class="value">{sum}</span>"#)), "the sum of replicas ({sum})");
    assert!(board.contains(r#"<svg class="chart" role="img""#) && board.contains("<title>Entities by value</title>"));
    assert!(board.contains(&format!("<li>Go: <strong>{go}</strong></li>")), "the chart's figures as text");
    let go_links = board.matches(r#"<a href="/entities/service/"#).count();
    assert_eq!(go_links, go.min(20), "the table lists the Go services");
    assert!(board.contains("not shown here yet") && board.contains("does not parse"), "{board}");
    assert_eq!(ui.get(&cookie, "/pages/nope").await.0, StatusCode::NOT_FOUND);
}

/// The blueprint builder's derived properties and the scorecard builder, as an Admin: each form writes the
/// definition the API would, a refused one shows the page again with the reason and its status.
#[tokio::test]
async fn derived_properties_and_scorecards_are_built_in_the_ui() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    let api = |path: &str| ui.http.get(format!("{}{path}", ui.base)).bearer_auth(&ui.token).send();
    fn with<'a>(csrf: &'a str, fields: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut form = vec![("_csrf", csrf)];
        form.extend_from_slice(fields);
        form
    }
    let derived = |fields: &[(&'static str, &'static str)]| with(&csrf, fields);
    // A calculation, then a bad one (refused with the engine's reason), then removal.
    let r = ui
        .post(
            &cookie,
            "/blueprints/service/derived",
            &derived(&[
                ("key", "shout"),
                ("title", "Shout"),
                ("kind", "calculation"),
                ("calculation", ".identifier | ascii_upcase"),
                ("type", "string"),
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let bp: Value = api("/v1/blueprints/service").await.expect("bp").json().await.expect("json");
    assert_eq!(bp["blueprint"]["calculationProperties"]["shout"]["calculation"], json!(".identifier | ascii_upcase"));
    let (_, page) = ui.get(&cookie, "/blueprints/service").await;
    assert!(page.contains(r#"data-derived="shout""#), "listed");
    let r = ui
        .post(
            &cookie,
            "/blueprints/service/derived",
            &derived(&[("key", "clock"), ("kind", "calculation"), ("calculation", "now"), ("type", "number")]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.text().await.expect("body");
    assert!(body.contains(r#"id="derived-error""#) && body.contains("not allowed"), "{body}");
    let r = ui
        .post(
            &cookie,
            "/blueprints/service/derived",
            &derived(&[
                ("key", "n"),
                ("kind", "aggregation"),
                ("target", "deployment"),
                ("func", "count"),
                ("query", "{not json"),
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = ui
        .post(
            &cookie,
            "/blueprints/service/derived",
            &derived(&[("key", "deps"), ("kind", "aggregation"), ("target", "deployment"), ("func", "count")]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = ui
        .http
        .post(format!("{}/v1/blueprints/service/entities", ui.base))
        .bearer_auth(&ui.token)
        .json(&json!({"identifier": "loud", "properties": {"language": "Go"}}))
        .send()
        .await
        .expect("entity");
    assert_eq!(r.status(), StatusCode::CREATED);
    let (_, entity) = ui.get(&cookie, "/entities/service/loud").await;
    assert!(entity.contains("Shout (derived)") && entity.contains("LOUD"), "the entity page shows it: {entity}");
    let r = ui.post(&cookie, "/blueprints/service/derived/shout/delete", &derived(&[])).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let bp: Value = api("/v1/blueprints/service").await.expect("bp").json().await.expect("json");
    assert!(bp["blueprint"]["calculationProperties"].get("shout").is_none(), "{bp}");

    // A scorecard: created without rules, then a rule added; a bad rule is refused with its reason.
    let r = ui
        .post(&cookie, "/scorecards", &derived(&[("blueprint", "service"), ("identifier", "ux"), ("title", "UX")]))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/scorecards/service/ux");
    let rule = derived;
    let r = ui
        .post(
            &cookie,
            "/scorecards/service/ux/rules",
            &rule(&[
                ("identifier", "go"),
                ("title", "Go"),
                ("level", "Bronze"),
                ("property", "language"),
                ("operator", "="),
                ("value", "Go"),
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let card: Value = api("/v1/blueprints/service/scorecards/ux").await.expect("card").json().await.expect("json");
    assert_eq!(card["scorecard"]["rules"][0]["query"]["conditions"][0]["value"], json!("Go"), "{card}");
    let r = ui
        .post(
            &cookie,
            "/scorecards/service/ux/rules",
            &rule(&[
                ("identifier", "many"),
                ("level", "Silver"),
                ("property", "deps"),
                ("operator", ">"),
                ("value", "2"),
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "a rule on a derived property, a number value");
    let card: Value = api("/v1/blueprints/service/scorecards/ux").await.expect("card").json().await.expect("json");
    assert_eq!(card["scorecard"]["rules"][1]["query"]["conditions"][0]["value"], json!(2), "{card}");
    let r = ui
        .post(
            &cookie,
            "/scorecards/service/ux/rules",
            &rule(&[
                ("identifier", "bad"),
                ("level", "Gold"),
                ("property", "nosuch"),
                ("operator", "="),
                ("value", "x"),
            ]),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.expect("body").contains(r#"id="rule-error""#));
    let r = ui.post(&cookie, "/scorecards", &derived(&[("blueprint", "service"), ("identifier", "ux")])).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "the identifier is taken");
}

#[tokio::test]
async fn the_deployments_page_shows_the_matrix_and_dora() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    // The demo's own deployment blueprint is mapped onto: its status enum spells failures `failed`.
    let http = reqwest::Client::new();
    for (version, status, env) in [("v9.9.9", "success", "production"), ("v9.9.8", "failure", "staging")] {
        let r = http
            .post(format!("{}/v1/deployments", ui.base))
            .bearer_auth(&ui.token)
            .json(&serde_json::json!({"service": "checkout-api", "environment": env, "version": version,
                "status": status, "finishedAt": "2026-12-04T09:00:00Z"}))
            .send()
            .await
            .expect("report");
        let status_code = r.status();
        let body: serde_json::Value = r.json().await.expect("json");
        assert!(status_code.is_success(), "{body}");
        assert_eq!(body["ignored"], serde_json::json!([]), "{body}");
    }
    let (status, page) = ui.get(&cookie, "/deployments").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(r#"id="deployment-matrix""#), "the matrix");
    assert!(page.contains(">production</th>") && page.contains(">staging</th>"), "environment columns");
    assert!(page.contains(">v9.9.9</a>"), "the reported version runs in production");
    assert!(page.contains(r#"id="dora-keys""#) && page.contains("Deployment frequency"), "DORA keys");
    assert!(page.contains("<svg") && page.contains("Deployments and failed changes per week"), "the weekly chart");
    // The service's page shows what runs where.
    let (status, page) = ui.get(&cookie, "/entities/service/checkout-api").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="running""#) && page.contains(">v9.9.9</a>"), "what runs where on the service page");
    // Filters: a team with no services shows none; a bad time says so.
    // A service's timeline: its deployments, newest first, with their status.
    let (status, page) = ui.get(&cookie, "/deployments?service=checkout-api").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="deployment-timeline""#) && page.contains("Timeline: checkout-api"), "{page}");
    assert!(page.contains(r#"<span class="badge badge-green">success</span>"#), "the status badge");
    assert!(page.contains("/deployments?service=checkout%2Dapi#timeline"), "each row links its timeline");
    let (_, page) = ui.get(&cookie, "/deployments?service=checkout-api&environment=nowhere").await;
    assert!(page.contains("No deployments of this service in nowhere"), "{page}");
    let (_, page) = ui.get(&cookie, "/deployments?team=nobody").await;
    assert!(!page.contains(">v9.9.9</a>"), "filtered out");
    let (status, page) = ui.get(&cookie, "/deployments?at=yesterday").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("is not a date-time"), "{page}");
    // In the past (before the demo was seeded), nothing ran.
    let (_, page) = ui.get(&cookie, "/deployments?at=2000-01-01T00:00:00Z").await;
    assert!(page.contains("No deployments yet"), "nothing at 2000");
}

#[tokio::test]
async fn the_subscriptions_pages_show_delivery_and_dead_letters() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let http = reqwest::Client::new();
    // A destination that cannot be reached here (no DNS to the internet): its one attempt fails, so every
    // change of the blueprint becomes a dead letter.
    let r = http
        .post(format!("{}/v1/subscriptions", ui.base))
        .bearer_auth(&ui.token)
        .json(&serde_json::json!({"identifier": "ops-hook", "title": "Ops hook", "maxAttempts": 1,
            "destination": {"type": "WEBHOOK", "url": "https://hooks.invalid/berth?token=secret"},
            "filter": {"blueprints": ["note"]}}))
        .send()
        .await
        .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{}/v1/blueprints", ui.base))
        .bearer_auth(&ui.token)
        .json(&serde_json::json!({"identifier": "note", "title": "Note", "schema": {"properties": {}}}))
        .send()
        .await
        .expect("blueprint");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{}/v1/blueprints/note/entities?upsert=true", ui.base))
        .bearer_auth(&ui.token)
        .json(&serde_json::json!({"identifier": "hooked", "title": "Hooked"}))
        .send()
        .await
        .expect("write");
    assert!(r.status().is_success());
    let (status, page) = ui.get(&cookie, "/subscriptions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Ops hook") && page.contains("WEBHOOK"), "{page}");
    assert!(page.contains("https://hooks.invalid/berth") && !page.contains("token=secret"), "no query string shown");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        let (_, page) = ui.get(&cookie, "/subscriptions/ops-hook").await;
        if page.contains(r#"id="dead-letters""#) {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "no dead letter shown: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(page.contains(r#"id="attempts""#) && page.contains("failed"), "the failed attempt");
    assert!(page.contains("Rested for bursts of writes (this replica)</dt><dd>"), "the time yielded to writes");
    // Retry needs the form's token; with it, the page again.
    let r = ui.post(&cookie, "/subscriptions/ops-hook/dead-letters/retry", &[("_csrf", "forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = ui.csrf(&cookie).await;
    let r = ui.post(&cookie, "/subscriptions/ops-hook/dead-letters/drop", &[("_csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, page) = ui.get(&cookie, "/subscriptions/ops-hook").await;
    assert!(page.contains("None: every message was delivered."), "dropped");
    assert_eq!(ui.get(&cookie, "/subscriptions/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn action_forms_pick_within_datasets_rejudge_rules_and_run() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    // The demo's scaffold form: its inputs, the health URL hidden until the service is public.
    let (status, page) = ui.get(&cookie, "/actions/scaffold-service/run").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    for input in ["i.name", "i.language", "i.system", "i.public"] {
        assert!(page.contains(&format!(r#"name="{input}""#)), "{input}");
    }
    assert!(!page.contains(r#"name="i.healthUrl""#), "hidden until public");
    let r = ui
        .post(
            &cookie,
            "/actions/scaffold-service/form",
            &[("_csrf", &csrf), ("i.public.shown", "1"), ("i.public", "on")],
        )
        .await;
    let fragment = r.text().await.expect("fragment");
    assert!(fragment.contains(r#"name="i.healthUrl""#), "shown once public: {fragment}");
    // The system picker searches the systems as you type.
    let (status, options) = ui.get(&cookie, "/actions/scaffold-service/pick/system?q=check").await;
    assert_eq!(status, StatusCode::OK);
    assert!(options.contains(r#"value="checkout""#) && !options.contains(r#"value="billing""#), "{options}");
    let (status, _) = ui.get(&cookie, "/actions/scaffold-service/pick/nothing?q=").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Errors next to their inputs; then a run, and its page.
    let r = ui.post(&cookie, "/actions/scaffold-service/run", &[("_csrf", &csrf), ("i.name", "Bad Name")]).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.expect("page");
    assert!(page.contains(r#"data-input="i.name""#) && page.contains("does not match the pattern"), "{page}");
    assert!(page.contains("`system` is required"), "{page}");
    let r = ui
        .post(
            &cookie,
            "/actions/scaffold-service/run",
            &[("_csrf", &csrf), ("i.name", "ledger-api"), ("i.system", "billing"), ("i.language", "Go")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()["location"].to_str().expect("location").to_string();
    assert!(to.starts_with("/runs/r_"), "{to}");
    let (status, page) = ui.get(&cookie, &to).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Scaffold a service") && page.contains(r#"data-live="/runs/"#), "{page}");
    // Without the CSRF token nothing runs.
    let r = ui.post(&cookie, "/actions/scaffold-service/run", &[("i.name", "x"), ("i.system", "billing")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The entity page offers the demo's DAY-2 action where its condition holds (not on deprecated services).
    let http = reqwest::Client::new();
    for (lifecycle, offered) in [("production", true), ("deprecated", false)] {
        let found: Value = http
            .post(format!("{}/v1/blueprints/service/entities/search", ui.base))
            .bearer_auth(&ui.token)
            .json(&json!({"query": {"combinator": "and", "rules": [{"property": "lifecycle", "operator": "=", "value": lifecycle}]}}))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        let id = found["entities"][0]["identifier"].as_str().expect("a service").to_string();
        let (_, page) = ui.get(&cookie, &format!("/entities/service/{id}")).await;
        assert_eq!(page.contains(r#"id="action-set-lifecycle""#), offered, "{lifecycle} {id}");
    }
    let (_, page) = ui.get(&cookie, "/blueprints/service/entities").await;
    assert!(page.contains(r#"id="action-scaffold-service""#), "the CREATE action on the table");
}

#[tokio::test]
async fn the_integrations_pages_show_resyncs_logs_and_requests_and_act_on_them() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let http = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        http.request(method, format!("{}{path}", ui.base)).bearer_auth(&ui.token).json(&body).send()
    };
    // An Ocean integration as Ocean reports it: its resync state, one kind's metrics, log lines.
    let r = api(
        reqwest::Method::POST,
        "/v1/integration",
        serde_json::json!({"installationId": "gh-ocean",
        "installationAppType": "github", "version": "1.2.3", "config": {"resources": [{"kind": "repository"}]}}),
    )
    .await
    .expect("create");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api(reqwest::Method::PATCH, "/v1/integration/gh-ocean/resync-state",
        serde_json::json!({"status": "completed", "lastResyncStart": "2026-12-05T08:00:00Z", "lastResyncEnd": "2026-12-05T08:02:00Z"}))
    .await
    .expect("state");
    assert_eq!(r.status(), StatusCode::OK);
    let metrics = serde_json::json!({"syncKindMetrics": {"syncState": "completed", "metrics": {"phase": {
        "extract": {"object_count_type": {"raw_extracted": {"object_count": 7.0}}},
        "load": {"object_count_type": {"loaded": {"object_count": 5.0}, "failed": {"object_count": 2.0}}}}}}});
    let r = api(
        reqwest::Method::PUT,
        "/v1/integration/gh-ocean/metrics/syncMetrics/resync/ev-1/kind/repository-0",
        metrics,
    )
    .await
    .expect("metrics");
    assert_eq!(r.status(), StatusCode::OK);
    let r = api(reqwest::Method::POST, "/v1/integration/gh-ocean/logs",
        serde_json::json!({"logs": [{"message": "Resync <finished>", "level": "INFO", "timestamp": "2026-12-05T08:02:00Z"}]}))
    .await
    .expect("logs");
    assert_eq!(r.status(), StatusCode::OK);

    let (status, page) = ui.get(&cookie, "/integrations").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("gh-ocean") && page.contains("github") && page.contains("completed"), "{page}");
    let (status, page) = ui.get(&cookie, "/integrations/gh-ocean").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("repository-0") && page.contains("raw extracted: <strong>7</strong>"), "{page}");
    assert!(page.contains("load failed: <strong>2</strong>") && page.contains("badge-red"), "failures are marked");
    assert!(page.contains("Resync &#60;finished&#62;") && !page.contains("Resync <finished>"), "log lines escaped");
    assert!(page.contains(r#"id="resync-requested">never"#), "{page}");
    // "Resync now" needs the form's token; with it, the integration's resync-request moves.
    let r = ui.post(&cookie, "/integrations/gh-ocean/resync", &[("_csrf", "forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let csrf = ui.csrf(&cookie).await;
    let r = ui.post(&cookie, "/integrations/gh-ocean/resync", &[("_csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let request: serde_json::Value =
        api(reqwest::Method::GET, "/v1/integration/gh-ocean/resync-request", serde_json::json!({}))
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
    assert!(request["request"]["updatedAt"].is_string(), "{request}");
    assert_eq!(ui.get(&cookie, "/integrations/nope").await.0, StatusCode::NOT_FOUND);

    // An inbound webhook whose mapping fails on a request, then is fixed and the request processed again.
    let r = api(
        reqwest::Method::POST,
        "/v1/blueprints",
        serde_json::json!({"identifier": "ticket", "title": "Ticket",
        "schema": {"properties": {"count": {"type": "number"}}}}),
    )
    .await
    .expect("blueprint");
    assert_eq!(r.status(), StatusCode::CREATED);
    let mapping = |count: &str| serde_json::json!([{"blueprint": "ticket", "entity": {"identifier": ".body.id", "properties": {"count": count}}}]);
    let r = api(
        reqwest::Method::POST,
        "/v1/webhooks",
        serde_json::json!({"identifier": "tickets", "title": "Tickets", "mappings": mapping(".body.n")}),
    )
    .await
    .expect("webhook");
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: serde_json::Value = r.json().await.expect("json");
    let url = created["integration"]["url"].as_str().expect("url").to_string();
    let r = http.post(&url).json(&serde_json::json!({"id": "t-1", "n": "many"})).send().await.expect("ingest");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let page = loop {
        let (_, page) = ui.get(&cookie, "/webhooks/tickets").await;
        if page.contains("badge-red\">failed") {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "the failed request is not shown: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        page.contains("/ingest/") && page.contains("Process again") && page.contains("mapping 0: 0 written"),
        "{page}"
    );
    let r = api(reqwest::Method::PATCH, "/v1/webhooks/tickets", serde_json::json!({"mappings": mapping("3")}))
        .await
        .expect("fix");
    assert_eq!(r.status(), StatusCode::OK);
    let at = page.find("/webhooks/tickets/events/").expect("retry form");
    let href = &page[at..at + page[at..].find('"').expect("end")];
    let r = ui.post(&cookie, href, &[("_csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "{href}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, page) = ui.get(&cookie, "/webhooks/tickets").await;
        if page.contains("badge-green\">processed") && page.contains("mapping 0: 1 written") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the request was not processed again: {page}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, page) = ui.get(&cookie, "/integrations").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/webhooks/tickets"), "{page}");
    // Its changes in the audit log: the ticket its request wrote.
    let (status, page) = ui.get(&cookie, "/audit?webhookId=tickets").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("t-1"), "{page}");
}

/// `/blueprints/{bp}/permissions` shows who may do what and saves it as the API's PATCH would: a read policy
/// that narrows what everyone but Admins reads, a bad policy refused with the reason and nothing saved.
#[tokio::test]
async fn the_permissions_page_sets_grants_and_the_read_policy() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    let (status, page) = ui.get(&cookie, "/blueprints/service/permissions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"name="read.roles" value="Member" checked"#), "Members read by default: {page}");
    let (_, blueprint) = ui.get(&cookie, "/blueprints/service").await;
    assert!(blueprint.contains("/blueprints/service/permissions"), "linked from the blueprint for Admins");

    let policy = r#"{"combinator": "and", "rules": [{"property": "language", "operator": "=", "value": "Go"}]}"#;
    let form = [
        ("_csrf", csrf.as_str()),
        ("read.roles", "Admin"),
        ("read.roles", "Member"),
        ("read.teams", "platform, web"),
        ("read.policy", policy),
        ("register.roles", "Admin"),
        ("register.ownedByTeam", "on"),
        ("update.roles", "Admin"),
        ("update.users", "ops@example.com"),
        ("unregister.roles", "Admin"),
    ];
    let r = ui.post(&cookie, "/blueprints/service/permissions", &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let saved = ui.api_json("/v1/blueprints/service/permissions").await;
    let e = &saved["permissions"]["entities"];
    assert_eq!(e["read"]["roles"], json!(["Admin", "Member"]), "{saved}");
    assert_eq!(e["read"]["teams"], json!(["platform", "web"]));
    assert_eq!(e["read"]["policy"]["rules"][0]["value"], "Go");
    assert_eq!(e["register"]["ownedByTeam"], true);
    assert_eq!(e["update"]["users"], json!(["ops@example.com"]));
    assert_eq!(e["unregister"]["ownedByTeam"], false, "unticked is off");

    // A policy that is not a query: refused with the reason, nothing changed.
    let bad = [("_csrf", csrf.as_str()), ("read.roles", "Admin"), ("read.policy", r#"{"combinator": "maybe"}"#)];
    let r = ui.post(&cookie, "/blueprints/service/permissions", &bad).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let body = r.text().await.expect("body");
    assert!(body.contains("combinator") || body.contains("policy"), "{body}");
    let (_, page) = ui.get(&cookie, "/blueprints/service/permissions").await;
    assert!(page.contains(r#"name="read.roles" value="Member" checked"#), "unchanged after a refusal");
    let r = ui.post(&cookie, "/blueprints/service/permissions", &[("_csrf", "forged")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// `/admin/settings`: the organisation as configured, and its secrets: saved sealed (the value never shown
/// again, not even in the page's source), replaced, deleted; the same secrets the API lists.
#[tokio::test]
async fn the_settings_page_keeps_secrets_without_showing_them() {
    let ui = start().await;
    let cookie = ui.cookie().await;
    let csrf = ui.csrf(&cookie).await;
    let (status, page) = ui.get(&cookie, "/admin/settings").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"id="org-name">Berth"#) && page.contains("snapshot format 1"), "{page}");
    let value = "s3cr3t-value-never-shown";
    let form = [("_csrf", csrf.as_str()), ("name", "DEPLOY_TOKEN"), ("value", value), ("description", "CD token")];
    assert_eq!(ui.post(&cookie, "/admin/settings/secrets", &form).await.status(), StatusCode::SEE_OTHER);
    let (_, page) = ui.get(&cookie, "/admin/settings").await;
    assert!(page.contains("DEPLOY_TOKEN") && page.contains("CD token"), "{page}");
    assert!(!page.contains(value), "the value is not on the page");
    let listed = ui.api_json("/v1/organization/secrets").await.to_string();
    assert!(listed.contains("DEPLOY_TOKEN") && !listed.contains(value), "{listed}");
    // The same name again replaces the value; a bad name is refused.
    let form = [("_csrf", csrf.as_str()), ("name", "DEPLOY_TOKEN"), ("value", "another")];
    assert_eq!(ui.post(&cookie, "/admin/settings/secrets", &form).await.status(), StatusCode::SEE_OTHER);
    let form = [("_csrf", csrf.as_str()), ("name", ""), ("value", "x")];
    assert!(ui.post(&cookie, "/admin/settings/secrets", &form).await.status().is_client_error());
    let r = ui.post(&cookie, "/admin/settings/secrets/DEPLOY_TOKEN/delete", &[("_csrf", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, page) = ui.get(&cookie, "/admin/settings").await;
    assert!(!page.contains("DEPLOY_TOKEN"), "deleted");
}

/// `/guide`: every page of the book, for anyone (nothing of the catalog in it), every link between pages
/// leading to a page that answers; an unknown page is a 404.
#[tokio::test]
async fn the_guide_is_served_and_its_links_lead_somewhere() {
    let ui = start().await;
    let get = |path: String| {
        let http = ui.http.clone();
        let base = ui.base.clone();
        async move {
            let r = http.get(format!("{base}{path}")).send().await.expect("get");
            (r.status(), r.text().await.expect("body"))
        }
    };
    let (status, index) = get("/guide".into()).await;
    assert_eq!(status, StatusCode::OK, "without signing in");
    let mut seen = std::collections::BTreeSet::new();
    let mut queue = vec![index];
    while let Some(page) = queue.pop() {
        for (at, _) in page.match_indices(r#"href="/guide/"#) {
            let start = at + r#"href=""#.len();
            let href = &page[start..start + page[start..].find('"').expect("end")];
            let path = href.split('#').next().expect("path").to_string();
            if seen.insert(path.clone()) {
                let (status, body) = get(path.clone()).await;
                assert_eq!(status, StatusCode::OK, "{path}");
                queue.push(body);
            }
        }
    }
    assert_eq!(seen.len(), berth_web::guide::PAGES.len(), "every page reached: {seen:?}");
    let (_, config) = get("/guide/configuration".into()).await;
    assert!(config.contains("--metrics-listen"), "the configuration reference is served");
    assert_eq!(get("/guide/nope".into()).await.0, StatusCode::NOT_FOUND);
}
