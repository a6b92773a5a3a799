//! Single sign-on pages ([`berth_server::sso`] does the protocol):
//!
//! - `GET /login/sso?next=<path>` starts a sign-in: the pending sign-in goes into the `berth_sso` cookie
//!   (signed, HttpOnly, `SameSite=Lax` so the provider's redirect back carries it, sent only to
//!   `/login/sso`, 10 minutes) and the browser to the provider.
//! - `GET /login/sso/callback?code&state` finishes it: the user is created, linked or updated, and gets the
//!   same session cookie as a password sign-in. A provider's refusal (`?error=`), an expired or foreign
//!   sign-in, a bad token or a user who may not sign in shows the sign-in page with the reason.
//!
//! Failed callbacks count against the caller's address like failed passwords (30 free, then blocks doubling
//! from 1 s: [`berth_server::sign_in`]); each one may have cost a call to the provider.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use berth_server::AppState;
use berth_server::error::ApiError;

use crate::form::Query;
use crate::page::{UiError, UiResult, see_other};
use crate::session::{LoginPage, cookie, safe_next, secure_attribute, sign_in};

const COOKIE: &str = "berth_sso";

fn set_cookie(r: &mut Response, value: &str, max_age: u64, headers: &HeaderMap) -> UiResult<()> {
    let cookie = format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/login/sso; Max-Age={max_age}{}",
        secure_attribute(headers)
    );
    r.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(UiError::internal)?);
    Ok(())
}

fn now_secs() -> i64 {
    berth_server::now().millis() / 1000
}

/// `GET /login/sso`: off to the provider.
pub async fn begin(State(app): State<AppState>, headers: HeaderMap, Query(q): Query) -> UiResult<Response> {
    let next = safe_next(q.get("next"));
    let Some(sso) = app.sso.clone() else {
        return LoginPage::new(&app, next).refused(StatusCode::NOT_FOUND, "Single sign-on is not configured.".into());
    };
    match sso.begin(&next, now_secs()).await {
        Ok((location, pending)) => {
            let sealed = pending.seal(&app.keys.current()).map_err(UiError::from)?;
            let mut r = see_other(&location);
            set_cookie(&mut r, &sealed, berth_server::sso::PENDING_LIFETIME.as_secs(), &headers)?;
            Ok(r)
        }
        Err(e) => LoginPage::new(&app, next).refused_for(e),
    }
}

/// `GET /login/sso/callback`: back from the provider.
pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    Query(q): Query,
) -> UiResult<Response> {
    let page = || LoginPage::new(&app, "/".into());
    let Some(sso) = app.sso.clone() else {
        return page().refused(StatusCode::NOT_FOUND, "Single sign-on is not configured.".into());
    };
    let address = berth_server::client_address(&extensions);
    if let Err(e) = app.sign_in.admit_address(address) {
        return page().refused_for(e);
    }
    let outcome = finish(&app, &sso, &headers, &q).await;
    app.sign_in.record_address(address, outcome.is_ok());
    app.metrics.sign_in("sso", outcome.is_ok());
    let (user, next) = match outcome {
        Ok(done) => done,
        Err(e) => {
            tracing::info!(status = e.status.as_u16(), reason = %e.message, "single sign-on refused");
            let mut r = page().refused_for(e)?;
            set_cookie(&mut r, "", 0, &headers)?;
            return Ok(r);
        }
    };
    tracing::info!(email = %user.email, "signed in with single sign-on");
    let mut r = sign_in(&app, &user, &next, &headers)?;
    set_cookie(&mut r, "", 0, &headers)?;
    Ok(r)
}

async fn finish(
    app: &AppState,
    sso: &berth_server::sso::Sso,
    headers: &HeaderMap,
    q: &crate::form::FormData,
) -> Result<(berth_model::User, String), ApiError> {
    let bad = |m: &str| ApiError::new(berth_model::ErrorCode::BadRequest, m);
    if let Some(error) = q.get("error") {
        let detail = q.get("error_description").map(|d| format!(": {}", berth_model::limits::truncate(d, 300)));
        let error = berth_model::limits::truncate(error, 100);
        return Err(ApiError::unauthorized(format!(
            "The sign-in provider did not sign you in ({error}{}).",
            detail.unwrap_or_default()
        )));
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else {
        return Err(bad("The sign-in provider's answer has no code or state; sign in again."));
    };
    let cookie = cookie(headers, COOKIE).ok_or_else(|| {
        bad("This sign-in has expired or was started in another browser (its cookie is missing); sign in again.")
    })?;
    let keys: Vec<String> = app.keys.verifying(now_secs()).into_iter().map(|(k, _)| k).collect();
    let pending = berth_server::sso::Pending::open(&cookie, &keys, state, now_secs())?;
    // RFC 9207: a provider that names itself must be the configured one (a mix-up attack otherwise).
    if q.get("iss").is_some_and(|iss| iss.trim_end_matches('/') != sso.config.issuer) {
        return Err(ApiError::unauthorized("Another sign-in provider answered than the one this portal uses."));
    }
    let claims = sso.finish(&pending, code, now_secs()).await?;
    let user = sso.provision(app, &claims).await?;
    Ok((user, safe_next(Some(&pending.next))))
}
