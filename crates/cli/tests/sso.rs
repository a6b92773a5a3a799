//! Single sign-on against a real OpenID Connect provider: panva's `oidc-provider` from npm (the certified
//! Node.js implementation), run with node by `tests/sso/provider.mjs`, with its development login and consent
//! pages, driven over HTTP the way a browser follows them (redirects, cookies, forms).
//!
//! `BERTH_TEST_OIDC_PROVIDER` names a folder whose `node_modules` has `oidc-provider` (`scripts/test`
//! installs 9.13.3 into `target/oidc-provider`); without it the tests fail.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use support::Berth;

const SECRET: &str = "test-client-secret-0123456789";

/// The provider, killed when dropped.
struct Provider {
    _child: support::KillOnDrop,
    issuer: String,
    kid: String,
}

impl Provider {
    /// Starts the provider on `port` with one client for Berth at `berth_port`, these accounts, and a fresh
    /// signing key of `alg`.
    fn start(port: u16, berth_port: u16, secret: Option<&str>, accounts: &Value, alg: &str) -> Provider {
        let dir = std::env::var("BERTH_TEST_OIDC_PROVIDER").unwrap_or_else(|_| {
            panic!("BERTH_TEST_OIDC_PROVIDER must name a folder whose node_modules has oidc-provider (scripts/test installs it)")
        });
        // ES modules resolve packages from the script's own folder up, so the script runs from there.
        let script = Path::new(&dir).join(format!("berth-provider-{}.mjs", std::process::id()));
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sso/provider.mjs");
        std::fs::copy(&source, &script).expect("copy the provider script");
        let mut client = json!({
            "client_id": "berth",
            "redirect_uris": [format!("http://127.0.0.1:{berth_port}/login/sso/callback")],
            "post_logout_redirect_uris": [format!("http://127.0.0.1:{berth_port}/login?signed_out=1")],
        });
        if let Some(secret) = secret {
            client["client_secret"] = json!(secret);
        }
        let mut child = Command::new("node")
            .arg(&script)
            .env("PORT", port.to_string())
            .env("CLIENT", client.to_string())
            .env("ACCOUNTS", accounts.to_string())
            .env("KEY_ALG", alg)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node (Node.js 20) on PATH");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        lines.read_line(&mut line).expect("the provider starts");
        // What it prints later is drained, so it never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("listening"), "the provider did not start: {line:?}");
        let issuer = words.next().expect("issuer").to_string();
        let kid = words.next().expect("kid").to_string();
        Provider { _child: support::KillOnDrop(child), issuer, kid }
    }
}

/// Cookies per host:port, as a browser keeps them (paths and expiry aside: every test cookie is per host).
#[derive(Default)]
struct Jar(HashMap<String, HashMap<String, String>>);

impl Jar {
    fn origin(url: &Url) -> String {
        format!("{}:{}", url.host_str().unwrap_or(""), url.port_or_known_default().unwrap_or(0))
    }

    fn take(&mut self, url: &Url, r: &reqwest::Response) {
        let cookies = self.0.entry(Jar::origin(url)).or_default();
        for v in r.headers().get_all("set-cookie") {
            let v = v.to_str().expect("ascii cookie");
            let (name, value) = v.split(';').next().and_then(|p| p.split_once('=')).expect("name=value");
            if value.is_empty() || v.contains("Max-Age=0") || v.contains("expires=Thu, 01 Jan 1970") {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_string(), value.to_string());
            }
        }
    }

    fn header(&self, url: &Url) -> String {
        let cookies = self.0.get(&Jar::origin(url));
        cookies.into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn get(&self, url: &Url, name: &str) -> Option<String> {
        self.0.get(&Jar::origin(url)).and_then(|c| c.get(name)).cloned()
    }
}

/// Where a sign-in ended: the last answer (status, URL, body) once back at Berth and not redirected.
struct Landing {
    status: StatusCode,
    url: Url,
    body: String,
}

/// The value of `attr="..."` in the first tag holding `marker`.
fn attribute(html: &str, marker: &str, attr: &str) -> Option<String> {
    let at = html.find(marker)?;
    let start = html[..at].rfind('<')?;
    let tag = &html[start..start + html[start..].find('>')?];
    let from = tag.find(&format!("{attr}=\""))? + attr.len() + 2;
    Some(tag[from..from + tag[from..].find('"')?].replace("&amp;", "&"))
}

/// A form's fields, URL-encoded.
fn form_body(fields: &[(&str, String)]) -> String {
    let mut url = Url::parse("http://form/").expect("url");
    url.query_pairs_mut().extend_pairs(fields);
    url.query().unwrap_or_default().to_string()
}

/// Follows a sign-in from `start` (a Berth URL) as a browser would: redirects, the provider's login form
/// (as `account`, any password) and consent form, back to Berth, until Berth answers without redirecting.
async fn browse(http: &reqwest::Client, jar: &mut Jar, start: &str, account: &str) -> Landing {
    let berth = Jar::origin(&Url::parse(start).expect("url"));
    let mut url = Url::parse(start).expect("url");
    let mut form: Option<Vec<(&str, String)>> = None;
    for _ in 0..30 {
        let request = match form.take() {
            Some(fields) => http
                .post(url.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&fields)),
            None => http.get(url.clone()),
        };
        let r = request.header("cookie", jar.header(&url)).send().await.expect("request");
        jar.take(&url, &r);
        let status = r.status();
        if status.is_redirection() {
            let location = r.headers()["location"].to_str().expect("location").to_string();
            url = url.join(&location).expect("location url");
            continue;
        }
        let body = r.text().await.expect("body");
        if Jar::origin(&url) == berth {
            return Landing { status, url, body };
        }
        assert_eq!(status, StatusCode::OK, "the provider answered {status} at {url}: {body}");
        let prompt = attribute(&body, "name=\"prompt\"", "value").expect("a login or consent form");
        let action = attribute(&body, "method=\"post\"", "action").expect("form action");
        url = url.join(&action).expect("action url");
        form = Some(match prompt.as_str() {
            "login" => vec![("prompt", "login".into()), ("login", account.into()), ("password", "any".into())],
            _ => vec![("prompt", prompt.clone())],
        });
    }
    panic!("the sign-in did not come back to Berth");
}

fn accounts() -> Value {
    json!({
        "ann": {"email": "Ann@Example.com", "email_verified": true, "given_name": "Ann", "family_name": "Lee",
                "groups": ["platform", "payments-eng"]},
        "bob": {"email": "bob@example.com", "email_verified": true, "name": "Bob Stone", "groups": ["payments-eng"]},
        "carol": {"email": "carol@example.com", "email_verified": true},
        "dan": {"email": "dan@example.com", "email_verified": true, "groups": []},
        "dan-again": {"email": "dan@example.com", "email_verified": true, "groups": []},
        "eve": {"email": "eve@evil.io", "email_verified": true, "groups": ["platform"]},
        "unverified": {"email": "una@example.com", "email_verified": false},
    })
}

/// A provider and a Berth that signs in through it (as client `berth`, with `secret` when given), started
/// on ports chosen first (each must know the other's address), with `extra` flags for Berth.
struct Pair {
    provider: Provider,
    server: Berth,
    port: u16,
    provider_port: u16,
    base: String,
}

fn start(dir: &Path, secret: Option<&str>, alg: &str, extra: &[&str]) -> Pair {
    let (port, provider_port) = (support::free_port(), support::free_port());
    let provider = Provider::start(provider_port, port, secret, &accounts(), alg);
    let base = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--public-url", &base, "--oidc-issuer", &provider.issuer, "--oidc-client-id", "berth"];
    if let Some(secret) = secret {
        args.extend(["--oidc-client-secret", secret]);
    }
    args.extend(extra);
    let server = Berth::spawn_at(dir.join("data"), port, &support::sqlite_url(dir, "sso.db"), &args);
    Pair { provider, server, port, provider_port, base }
}

async fn user(http: &reqwest::Client, server: &Berth, token: &str, email: &str) -> Value {
    let r = http.get(server.url(&format!("/v1/users/{email}"))).bearer_auth(token).send().await.expect("user");
    let status = r.status();
    let body: Value = r.json().await.expect("json");
    if status == StatusCode::NOT_FOUND {
        return Value::Null;
    }
    assert_eq!(status, StatusCode::OK, "{body}");
    body["user"].clone()
}

fn roles(user: &Value) -> Vec<String> {
    user["roles"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str().map(str::to_string)).collect()
}

fn teams(user: &Value) -> Vec<String> {
    let mut t: Vec<String> =
        user["teams"].as_array().into_iter().flatten().filter_map(|t| t.as_str().map(str::to_string)).collect();
    t.sort();
    t
}

/// A confidential client: users created on first sign-in with the roles and teams their groups map to, kept
/// in step on later sign-ins, across a key rotation at the provider; everyone who may not sign in is refused
/// with the reason, and nothing is written for them.
#[tokio::test]
async fn sso_creates_and_syncs_users_from_a_real_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = [
        "--oidc-scopes",
        "openid email profile groups",
        "--oidc-label",
        "Test IdP",
        "--oidc-group-role",
        "platform=Admin",
        "--oidc-group-team",
        "payments-eng=payments",
        "--oidc-group-team",
        "platform=platform",
        "--oidc-allowed-domain",
        "example.com",
    ];
    let Pair { provider, server, port, provider_port, base } = start(dir.path(), Some(SECRET), "RS256", &extra);
    let mut provider = provider;
    let token = server.token(&support::client()).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    // The sign-in page offers the provider, and the password form still.
    let page = http.get(server.url("/login?next=/audit")).send().await.expect("login").text().await.expect("body");
    assert!(page.contains("Sign in with Test IdP") && page.contains("name=\"password\""), "{page}");
    assert!(page.contains("href=\"/login/sso?next=/audit\""), "{page}");

    // Ann: created on her first sign-in as an Admin in both teams, and sent where she was going.
    let mut ann = Jar::default();
    let landed = browse(&http, &mut ann, &server.url("/login/sso?next=/audit"), "ann").await;
    assert_eq!((landed.status, landed.url.path()), (StatusCode::OK, "/audit"), "{}", landed.body);
    assert!(landed.body.contains("Ann Lee"), "her name in the header");
    let berth_url = Url::parse(&base).expect("url");
    assert!(ann.get(&berth_url, "berth_session").is_some());
    assert!(ann.get(&berth_url, "berth_sso").is_none(), "the pending sign-in's cookie is cleared");
    let u = user(&http, &server, &token, "ann@example.com").await;
    assert_eq!((u["status"].as_str(), u["firstName"].as_str()), (Some("active"), Some("Ann")), "{u}");
    assert_eq!(roles(&u), ["Admin"]);
    assert_eq!(teams(&u), ["payments", "platform"], "teams created on first need");
    assert_eq!(u["providers"], json!(["oidc"]), "signs in through single sign-on");
    // Her session cookie works like a password session: an Admin page.
    let admin =
        http.get(server.url("/admin/users")).header("cookie", ann.header(&berth_url)).send().await.expect("admin page");
    assert_eq!(admin.status(), StatusCode::OK);

    // Bob: a Member (no mapped role), in payments; his name split from `name`.
    let mut bob = Jar::default();
    let landed = browse(&http, &mut bob, &server.url("/login/sso"), "bob").await;
    assert_eq!((landed.status, landed.url.path()), (StatusCode::OK, "/"));
    let u = user(&http, &server, &token, "bob@example.com").await;
    assert_eq!((roles(&u), teams(&u)), (vec!["Member".to_string()], vec!["payments".to_string()]));
    assert_eq!((u["firstName"].as_str(), u["lastName"].as_str()), (Some("Bob"), Some("Stone")));
    let refused =
        http.get(server.url("/admin/users")).header("cookie", bob.header(&berth_url)).send().await.expect("admin page");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // Carol's provider sends no groups claim at all: a Member in no team.
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "carol").await;
    assert_eq!(landed.status, StatusCode::OK);
    let u = user(&http, &server, &token, "carol@example.com").await;
    assert_eq!((roles(&u), teams(&u)), (vec!["Member".to_string()], Vec::<String>::new()));

    // Refused, with the reason on the sign-in page, and no user written.
    for (account, status, why) in [
        ("eve", StatusCode::FORBIDDEN, "evil.io may not sign in"),
        ("unverified", StatusCode::FORBIDDEN, "has not verified"),
    ] {
        let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), account).await;
        assert_eq!((landed.status, landed.url.path()), (status, "/login/sso/callback"), "{account}");
        assert!(landed.body.contains(why), "{account}: {}", landed.body);
    }
    assert!(user(&http, &server, &token, "eve@evil.io").await.is_null());
    assert!(user(&http, &server, &token, "una@example.com").await.is_null());

    // An invited user becomes active through single sign-on, linked to that account; another account of the
    // provider claiming the same email is then refused.
    let r = http
        .post(server.url("/v1/users/invite"))
        .bearer_auth(&token)
        .json(&json!({"invitee": {"email": "dan@example.com", "roles": ["Member"]}}))
        .send()
        .await
        .expect("invite");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    assert_eq!(user(&http, &server, &token, "dan@example.com").await["status"], "invited");
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "dan").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.body);
    assert_eq!(user(&http, &server, &token, "dan@example.com").await["status"], "active");
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "dan-again").await;
    assert_eq!(landed.status, StatusCode::FORBIDDEN);
    assert!(landed.body.contains("linked to another single sign-on account"), "{}", landed.body);

    // A disabled user may not sign in through the provider either.
    let r = http
        .patch(server.url("/v1/users/carol@example.com"))
        .bearer_auth(&token)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .expect("disable");
    assert!(r.status().is_success());
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "carol").await;
    assert_eq!(landed.status, StatusCode::FORBIDDEN);
    assert!(landed.body.contains("disabled"), "{}", landed.body);

    // A forged or stale callback: no cookie, a state that is not the cookie's, the provider's refusal.
    let r = http.get(server.url("/login/sso/callback?code=x&state=y")).send().await.expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap_or_default().contains("sign in again"));
    let mut jar = Jar::default();
    let start = server.url("/login/sso");
    let r = http.get(&start).send().await.expect("begin");
    jar.take(&Url::parse(&start).expect("url"), &r);
    let r = http
        .get(server.url("/login/sso/callback?code=x&state=not-the-state"))
        .header("cookie", jar.header(&berth_url))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http
        .get(server.url("/login/sso/callback?error=access_denied&error_description=End-User+aborted"))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap_or_default().contains("End-User aborted"));

    // The provider rotates to a new key (of another algorithm), and Bob's groups changed meanwhile: his next
    // sign-in is checked with the new key and brings his roles and teams in step.
    let old_kid = provider.kid.clone();
    drop(provider);
    let mut moved = accounts();
    moved["bob"]["groups"] = json!(["platform"]);
    provider = Provider::start(provider_port, port, Some(SECRET), &moved, "ES256");
    assert_ne!(provider.kid, old_kid);
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "bob").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.body);
    let u = user(&http, &server, &token, "bob@example.com").await;
    assert_eq!((roles(&u), teams(&u)), (vec!["Admin".to_string()], vec!["platform".to_string()]));

    // The audit log has who was created and changed, by whom.
    let audit: Value = http
        .get(server.url("/v1/audit-log?resources=user&limit=100"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("json");
    let text = audit.to_string();
    assert!(text.contains("ann@example.com") && text.contains("bob@example.com"), "{text}");

    // Sign-ins are counted for monitoring, per method and outcome.
    let metrics =
        http.get(server.url("/metrics")).bearer_auth(&token).send().await.expect("metrics").text().await.expect("text");
    let count = |labels: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("berth_sign_ins_total{{{labels}}}")));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0.0)
    };
    assert!(count("method=\"sso\",outcome=\"success\"") >= 5.0, "{metrics}");
    assert!(count("method=\"sso\",outcome=\"refused\"") >= 5.0, "{metrics}");
    drop(provider);
}

/// Single sign-on only, with a public client (PKCE alone): no password form, password sign-in and
/// invitations refused, users keep the roles Admins give them (no role mapping); a provider that is down
/// is a clear 503 on the sign-in page, and a bad issuer stops `berth serve` with the reason.
#[tokio::test]
async fn sso_only_with_a_public_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Pair { provider, server, .. } = start(dir.path(), None, "PS256", &["--password-sign-in", "false"]);
    let token = server.token(&support::client()).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");

    let page = http.get(server.url("/login")).send().await.expect("login").text().await.expect("body");
    assert!(page.contains("Sign in with single sign-on") && !page.contains("name=\"password\""), "{page}");
    let r = http
        .post(server.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(&[("email", support::ADMIN_EMAIL.into()), ("password", support::ADMIN_PASSWORD.into())]))
        .send()
        .await
        .expect("password sign-in");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(server.url("/v1/users/accept-invite"))
        .json(&json!({"email": "x@example.com", "code": "x", "password": "long enough password"}))
        .send()
        .await
        .expect("accept");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Ann signs in; then an Admin makes her Admin, and her next sign-in keeps that (no role mapping).
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "ann").await;
    assert_eq!(landed.status, StatusCode::OK, "{}", landed.body);
    assert_eq!(roles(&user(&http, &server, &token, "ann@example.com").await), ["Member"]);
    let r = http
        .patch(server.url("/v1/users/ann@example.com"))
        .bearer_auth(&token)
        .json(&json!({"roles": ["Admin"]}))
        .send()
        .await
        .expect("patch");
    assert!(r.status().is_success());
    let landed = browse(&http, &mut Jar::default(), &server.url("/login/sso"), "ann").await;
    assert_eq!(landed.status, StatusCode::OK);
    assert_eq!(roles(&user(&http, &server, &token, "ann@example.com").await), ["Admin"]);

    // The provider goes away: its discovery document is cached, so the browser is sent to it, and when it
    // comes back (with the state it left with) the code cannot be exchanged: a 503 that says so.
    drop(provider);
    let mut jar = Jar::default();
    let start = Url::parse(&server.url("/login/sso")).expect("url");
    let r = http.get(start.clone()).send().await.expect("begin");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    jar.take(&start, &r);
    let to_provider = Url::parse(r.headers()["location"].to_str().expect("location")).expect("url");
    let state = to_provider.query_pairs().find(|(k, _)| k == "state").map(|(_, v)| v.to_string()).expect("state");
    for (k, v) in [("code_challenge_method", "S256"), ("response_type", "code"), ("client_id", "berth")] {
        assert!(to_provider.query_pairs().any(|(a, b)| a == k && b == v), "{k}={v} in {to_provider}");
    }
    let r = http
        .get(server.url(&format!("/login/sso/callback?code=x&state={state}")))
        .header("cookie", jar.header(&start))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.text().await.unwrap_or_default().contains("cannot be used now"));
    // An answer naming another issuer (RFC 9207's mix-up defence) is refused before any exchange.
    let r = http
        .get(server.url(&format!("/login/sso/callback?code=x&state={state}&iss=https%3A%2F%2Fevil.example")))
        .header("cookie", jar.header(&start))
        .send()
        .await
        .expect("callback");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Callbacks that fail count against the address, like failed passwords: past the free ones, a 429.
    let mut last = StatusCode::OK;
    for _ in 0..40 {
        let r = http.get(server.url("/login/sso/callback?code=x&state=y")).send().await.expect("callback");
        last = r.status();
        if last == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            break;
        }
        assert_eq!(last, StatusCode::BAD_REQUEST);
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS, "failed callbacks are limited per address");

    // Bad settings stop the server before it starts.
    let (ok, _, err) = support::berth(&[
        "serve",
        "--data-dir",
        &dir.path().join("bad").display().to_string(),
        "--oidc-issuer",
        "http://login.example.com",
        "--oidc-client-id",
        "berth",
        "--public-url",
        "https://portal.example.com",
    ]);
    assert!(!ok && err.contains("must use https"), "{err}");
}

/// The whole sign-in in a real browser (headless Chromium): Berth's sign-in page, the provider's login and
/// consent pages, and back to the page the user was going to, signed in; then signing out at both. This is
/// where cookie and CSP rules bite (the pending sign-in's `SameSite=Lax` cookie must survive the provider's
/// redirect back; a form may not lead to another site).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_in_chromium() {
    use support::chromium::{Chromium, click, fill, path_of, shot, text, wait_url};
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = [
        "--demo",
        "--oidc-scopes",
        "openid email profile groups",
        "--oidc-label",
        "Acme SSO",
        "--oidc-group-role",
        "platform=Admin",
        "--oidc-sign-out-at-provider",
    ];
    let Pair { provider, server, port, provider_port, .. } = start(dir.path(), Some(SECRET), "RS256", &extra);
    server.token(&support::client()).await;
    let Some(Chromium { client: c, driver: _driver }) = Chromium::start(dir.path()).await else { return };

    c.goto(&server.url("/blueprints/service/entities")).await.expect("goto");
    wait_url(&c, "the sign-in page", |u| u.starts_with("/login")).await;
    assert_eq!(text(&c, "#sso").await, "Sign in with Acme SSO");
    shot(&c, "32-sign-in-with-sso").await;
    click(&c, "#sso").await;
    // The provider's own pages.
    wait_url(&c, "the provider's login", |u| u.starts_with("/interaction/")).await;
    let at = c.current_url().await.expect("url");
    assert_eq!(at.port(), Some(provider_port), "at the provider");
    fill(&c, "input[name=login]", "ann").await;
    fill(&c, "input[name=password]", "any password").await;
    click(&c, "button[type=submit]").await;
    wait_url(&c, "the provider's consent", |u| u.starts_with("/interaction/")).await;
    click(&c, "button[type=submit]").await;
    // Back at Berth, where she was going, signed in as an Admin.
    wait_url(&c, "the service table", |u| u == "/blueprints/service/entities").await;
    assert_eq!(c.current_url().await.expect("url").port(), Some(port));
    let header = text(&c, "header").await;
    assert!(header.contains("Ann Lee"), "{header}");
    c.goto(&server.url("/admin/users")).await.expect("goto");
    assert!(path_of(&c).await.starts_with("/admin/users"));
    let users = text(&c, "main").await;
    assert!(users.contains("ann@example.com"), "{users}");
    let row = text(&c, "#users tbody tr:nth-child(2)").await;
    assert!(row.contains("ann@example.com") && row.contains("single sign-on"), "{row}");
    // The settings page shows how single sign-on is configured, with the URIs to register at the provider.
    c.goto(&server.url("/admin/settings")).await.expect("goto");
    let facts = text(&c, "#sign-in-facts").await;
    for want in [
        provider.issuer.as_str(),
        &format!("http://127.0.0.1:{port}/login/sso/callback"),
        "platform → Admin",
        "confidential (with a secret)",
        "also at the provider",
    ] {
        assert!(facts.contains(want), "{want:?} in {facts}");
    }
    assert!(!facts.contains(SECRET), "never the secret");
    shot(&c, "34-sign-in-settings").await;
    shot(&c, "33-signed-in-with-sso").await;

    // Signing out of Berth signs her out at the provider too (it asks, as providers do), and the provider
    // sends her back to Berth's sign-in page; signing in again needs the provider's login again.
    click(&c, "form[action='/logout'] button").await;
    wait_url(&c, "the provider's sign-out", |u| u.starts_with("/session/end")).await;
    assert_eq!(c.current_url().await.expect("url").port(), Some(provider_port));
    click(&c, "button[name=logout]").await;
    wait_url(&c, "back at Berth, signed out", |u| u == "/login?signed_out=1").await;
    assert_eq!(c.current_url().await.expect("url").port(), Some(port));
    assert_eq!(text(&c, "p.notice").await, "You are signed out.");
    click(&c, "#sso").await;
    wait_url(&c, "the provider's login again", |u| u.starts_with("/interaction/")).await;
    // Its login form, not a silent return: the provider's session ended.
    fill(&c, "input[name=login]", "ann").await;
    c.close().await.expect("close");
    drop(provider);
}
