//! Signing in and out, invitations, and the [`Session`] every page extracts.
//!
//! - `POST /login` checks the email and password (Argon2id) and sets `berth_session`, an HttpOnly,
//!   `SameSite=Lax` cookie holding the same kind of signed token the API uses (`isMachine: false`), so one
//!   check ([`berth_server::auth::authenticate`]) guards both. A new password or a disabled account ends it.
//! - Every form carries `_csrf`, an HMAC of the session token under the catalog's signing key; a post without
//!   the right one is a 403 (SameSite already keeps other sites' posts from carrying the cookie).
//! - A request without a valid session is sent to `/login?next=<where it was going>`.
//! - Signing out ends every session of the user; with `--oidc-sign-out-at-provider`, a single sign-on user is
//!   then sent to the provider's end-session endpoint by a page that refreshes there (a redirect from the
//!   sign-out form would break the CSP's `form-action 'self'`).

use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_engine::{Command, WriteMeta};
use berth_model::{Origin, UserStatus};
use berth_server::AppState;
use berth_server::auth::{self, Caller};

use crate::form::{FormData, Query};
use crate::page::{Layout, UiError, UiResult, html, html_status, see_other};

pub const COOKIE: &str = "berth_session";

/// A signed-in user, as a page sees it.
pub struct Session {
    pub caller: Caller,
    pub name: String,
    pub csrf: String,
}

impl Session {
    /// The layout of a page for this user.
    pub fn layout(&self, app: &AppState, title: impl Into<String>, nav: impl Into<String>) -> Layout {
        let view = app.pipeline.view();
        Layout {
            title: title.into(),
            user: self.name.clone(),
            is_admin: self.caller.is_admin(),
            csrf: self.csrf.clone(),
            nav: nav.into(),
            blueprints: view.blueprints().map(|b| (b.def.identifier.clone(), b.def.title.clone())).collect(),
            css: crate::assets::CSS_PATH,
            js: crate::assets::JS_PATH,
            htmx: crate::assets::HTMX_PATH,
        }
    }

    /// 403 unless the form carries this session's CSRF token.
    pub fn check_csrf(&self, form: &FormData) -> UiResult<()> {
        let given = form.raw("_csrf");
        if auth::constant_time_eq(given.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(UiError::new(
                berth_model::ErrorCode::Forbidden,
                "the form has expired or came from elsewhere; reload the page and try again",
            ))
        }
    }

    /// 403 unless the user is an Admin.
    pub fn require_admin(&self, what: &str) -> UiResult<()> {
        berth_server::routes::require_admin(&self.caller, what).map_err(UiError::from)
    }

    /// [`Session::require_admin`] for a change posted to `path`: a refusal is recorded in the audit log.
    pub fn require_admin_to_change(&self, app: &AppState, path: &str, what: &str) -> UiResult<()> {
        self.require_admin(what).inspect_err(|e| {
            let method = axum::http::Method::POST;
            let code = berth_model::ErrorCode::from_status(e.status.as_u16());
            berth_server::routes::record_refusal(app, self.meta(), &method, path, code);
        })
    }

    /// Who writes, for a change made through the UI.
    pub fn meta(&self) -> WriteMeta {
        WriteMeta {
            actor: self.caller.client_id.clone(),
            origin: Origin::Ui,
            principal: Some(self.caller.principal()),
            ..berth_server::system_meta()
        }
    }
}

/// The value of the cookie `name` the request carries (not empty).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

fn csrf_for(app: &AppState, token: &str) -> UiResult<String> {
    auth::mac_hex(&app.keys.current(), &format!("csrf:{token}")).map_err(UiError::from)
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let to_login = || {
            let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let location = format!("/login?next={}", encode(next));
            if parts.headers.contains_key("hx-request") {
                // htmx follows this header with a full page load.
                let mut r = berth_server::error::status_of(berth_model::ErrorCode::Unauthorized).into_response();
                if let Ok(v) = HeaderValue::from_str(&location) {
                    r.headers_mut().insert("hx-redirect", v);
                }
                r
            } else {
                see_other(&location)
            }
        };
        let Some(token) = cookie(&parts.headers, COOKIE) else { return Err(to_login()) };
        let view = app.pipeline.view();
        let Ok(caller) = auth::authenticate(&app.keys, &view, &token, berth_server::now().millis() / 1000) else {
            return Err(to_login());
        };
        let name = view.user(&caller.client_id).map(|u| u.display_name()).unwrap_or_else(|| caller.client_id.clone());
        let csrf = csrf_for(app, &token).map_err(IntoResponse::into_response)?;
        Ok(Session { caller, name, csrf })
    }
}

/// Percent-encodes a query value or a path segment.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where to go after signing in: a local path only (never another site). Browsers drop tabs and newlines
/// from URLs and read a backslash as a slash, so `/\t/evil.example` would leave the site: a `next` with a
/// control character, whitespace or a backslash anywhere is refused, as is one starting `//`.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod next_tests {
    use super::safe_next;

    #[test]
    fn only_local_paths_are_followed() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil",
            "/\r//evil",
            " /x",
            "/ /evil",
            "https://evil.example",
            "/a\\b",
            "/\u{0b}/evil",
            "/\u{2028}/evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        for good in ["/", "/blueprints/service/entities?cols=a&f.x=1", "/entities/a/b%20c"] {
            assert_eq!(safe_next(Some(good)), good);
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub(crate) struct LoginPage {
    css: &'static str,
    next: String,
    email: String,
    error: Option<String>,
    notice: Option<String>,
    /// The single sign-on button's label, when single sign-on is configured.
    sso: Option<String>,
    /// Whether the password form is shown.
    password: bool,
}

impl LoginPage {
    pub(crate) fn new(app: &AppState, next: String) -> LoginPage {
        LoginPage {
            css: crate::assets::CSS_PATH,
            next,
            email: String::new(),
            error: None,
            notice: None,
            sso: app.sso.as_ref().map(|s| s.config.label.clone()),
            password: app.config.password_sign_in,
        }
    }

    /// The page again with an error, answered with `status`.
    pub(crate) fn refused(self, status: StatusCode, error: String) -> UiResult<Response> {
        html_status(status, &LoginPage { error: Some(error), ..self })
    }

    /// The page again with `e`'s message and status, and its `Retry-After` when it has one.
    pub(crate) fn refused_for(self, e: berth_server::error::ApiError) -> UiResult<Response> {
        let retry = e.headers.as_ref().and_then(|h| h.get(header::RETRY_AFTER)).cloned();
        let mut r = self.refused(e.status, e.message)?;
        if let Some(retry) = retry {
            r.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        Ok(r)
    }
}

pub async fn login_form(State(app): State<AppState>, Query(q): Query) -> UiResult<Response> {
    let notice = q.has("signed_out").then(|| "You are signed out.".to_string());
    html(&LoginPage { notice, ..LoginPage::new(&app, safe_next(q.get("next"))) })
}

/// A PHC string to verify against when the email is unknown, so that both answers take as long.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| auth::hash_password("decoy password for unknown users").unwrap_or_default())
}

pub async fn login(
    State(app): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    form: FormData,
) -> UiResult<Response> {
    let email = berth_model::user::normalize_email(form.raw("email"));
    let password = form.raw("password").to_string();
    let next = safe_next(form.get("next"));
    let again = |email: String, status: StatusCode, error: String| {
        LoginPage { email, ..LoginPage::new(&app, next.clone()) }.refused(status, error)
    };
    if !app.config.password_sign_in {
        return again(
            String::new(),
            berth_server::error::status_of(berth_model::ErrorCode::Forbidden),
            "Password sign-in is off on this portal; sign in with single sign-on.".into(),
        );
    }
    let address = berth_server::client_address(&extensions);
    // The account key is bounded whatever was typed.
    let account = format!("user:{}", berth_model::limits::truncate(&email, berth_model::user::MAX_EMAIL));
    // Refused before any hashing (blocked) or for want of a hashing slot: the form again, with Retry-After.
    let refused = |email: String, e: berth_server::error::ApiError| {
        LoginPage { email, ..LoginPage::new(&app, next.clone()) }.refused_for(e)
    };
    if let Err(e) = app.sign_in.admit(&account, address) {
        return refused(email, e);
    }
    let user = app.pipeline.view().user(&email).cloned();
    let hash = user.as_ref().and_then(|u| u.password_hash.clone()).unwrap_or_else(|| decoy_hash().to_string());
    let ok = match app.sign_in.hash(move || auth::verify_password(&password, &hash)).await {
        Ok(ok) => ok,
        Err(e) => return refused(email, e),
    };
    let user = user.filter(|u| ok && u.status == UserStatus::Active);
    app.sign_in.record(&account, address, user.is_some());
    app.metrics.sign_in("password", user.is_some());
    let Some(user) = user else {
        tracing::info!(%email, "sign-in refused");
        return again(
            email,
            berth_server::error::status_of(berth_model::ErrorCode::Unauthorized),
            "The email or password is wrong, or the account may not sign in.".into(),
        );
    };
    sign_in(&app, &user, &next, &headers)
}

/// Issues a session for `user` and sends it to `next`.
pub(crate) fn sign_in(app: &AppState, user: &berth_model::User, next: &str, headers: &HeaderMap) -> UiResult<Response> {
    let key = app.keys.current();
    let version = user.session_version();
    let subject = auth::Subject { id: &user.email, roles: &user.roles, version: &version, is_machine: false };
    let (token, ttl) = app.tokens.issue(&key, &subject, berth_server::now().millis() / 1000)?;
    let mut r = see_other(next);
    let cookie =
        format!("{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={ttl}{}", secure_attribute(headers));
    let v = HeaderValue::from_str(&cookie).map_err(UiError::internal)?;
    r.headers_mut().insert(header::SET_COOKIE, v);
    Ok(r)
}

#[derive(Template)]
#[template(path = "signed_out_provider.html")]
struct SignedOutAtProvider {
    css: &'static str,
    /// The provider's end-session URL.
    url: String,
    label: String,
}

/// Signing out ends every session of the user (its session epoch moves on), so a copy of the cookie is
/// worthless afterwards, not only the browser's.
pub async fn logout(
    State(app): State<AppState>,
    session: Session,
    headers: HeaderMap,
    form: FormData,
) -> UiResult<Response> {
    session.check_csrf(&form)?;
    if !session.caller.is_machine {
        // The server acts for the signed-in user on its own account (a Member may not write users).
        let meta = WriteMeta { principal: None, ..session.meta() };
        let command = Command::EndSessions { email: session.caller.client_id.clone() };
        let (outcome, _) = app.pipeline.write_one(meta, command).await?;
        outcome?;
    }
    // A single sign-on user may be signed out at the provider too (`--oidc-sign-out-at-provider`).
    let linked = !session.caller.is_machine
        && app.pipeline.view().user(&session.caller.client_id).is_some_and(|u| u.sso.is_some());
    let at_provider = match (&app.sso, linked) {
        (Some(sso), true) => sso.sign_out_url().await.map(|url| (url, sso.config.label.clone())),
        _ => None,
    };
    let mut r = match at_provider {
        Some((url, label)) => html(&SignedOutAtProvider { css: crate::assets::CSS_PATH, url, label })?,
        None => see_other("/login?signed_out=1"),
    };
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}", secure_attribute(&headers));
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(UiError::internal)?);
    Ok(r)
}

/// `; Secure` when the browser reached Berth over HTTPS (a TLS-terminating proxy says so with
/// `X-Forwarded-Proto: https`), or always with `BERTH_SECURE_COOKIES=1`.
pub(crate) fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.split(',').next().is_some_and(|first| first.trim().eq_ignore_ascii_case("https")));
    let forced = std::env::var("BERTH_SECURE_COOKIES").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if forwarded_https || forced { "; Secure" } else { "" }
}

#[derive(Template)]
#[template(path = "invite.html")]
struct InvitePage {
    css: &'static str,
    email: String,
    code: String,
    error: Option<String>,
}

pub async fn invite_form(Query(q): Query) -> UiResult<Response> {
    let page = InvitePage {
        css: crate::assets::CSS_PATH,
        email: q.get("email").unwrap_or("").to_string(),
        code: q.get("code").unwrap_or("").to_string(),
        error: None,
    };
    html(&page)
}

pub async fn accept_invite(State(app): State<AppState>, headers: HeaderMap, form: FormData) -> UiResult<Response> {
    let (email, code, password) = (form.raw("email"), form.raw("code"), form.raw("password"));
    let again = |error: String, status: StatusCode| {
        let page = InvitePage {
            css: crate::assets::CSS_PATH,
            email: email.to_string(),
            code: code.to_string(),
            error: Some(error),
        };
        html_status(status, &page)
    };
    if password != form.raw("password2") {
        return again(
            "The two passwords differ.".into(),
            berth_server::error::status_of(berth_model::ErrorCode::InvalidRequest),
        );
    }
    match berth_server::invitations::accept(&app, Origin::Ui, email, code, password).await {
        Ok((user, seq)) => {
            app.pipeline.wait_applied(seq, std::time::Duration::from_secs(5)).await;
            sign_in(&app, &user, "/", &headers)
        }
        Err(e) => again(e.message, e.status),
    }
}
