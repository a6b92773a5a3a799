//! `POST /v1/auth/access_token`: client id and secret for a bearer token.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{constant_time_eq, hash_secret};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
}

#[utoipa::path(post, path = "/v1/auth/access_token", tag = "Authentication",
    summary = "Get an access token",
    description = "Trades a credential's client id and secret for a bearer token valid for 3 hours. Asking again returns the same token while it has more than 10 minutes to live.",
    request_body = TokenRequest,
    responses((status = 200, description = "`{ok, accessToken, expiresIn, tokenType: \"Bearer\"}`"),
              (status = 401, description = "Unknown client id or wrong secret"),
              (status = 429, description = "Too many failed attempts for this client id or from this address; `Retry-After` says when to try again")))]
pub async fn access_token(
    State(app): State<AppState>,
    extensions: axum::http::Extensions,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Response> {
    let address = crate::client_address(&extensions);
    // The account key is bounded: a made-up client id of any size costs the limiter a few bytes.
    let account = format!("app:{}", berth_model::limits::truncate(&req.client_id, 200));
    app.sign_in.admit(&account, address)?;
    let view = app.pipeline.view();
    let denied = || ApiError::unauthorized("the client id or secret is wrong");
    // The secret is hashed whether or not the client id exists, so both answers take as long.
    let presented = hash_secret(&req.client_secret);
    let ok =
        view.credential(&req.client_id).filter(|c| constant_time_eq(presented.as_bytes(), c.secret_sha256.as_bytes()));
    app.sign_in.record(&account, address, ok.is_some());
    let credential = ok.ok_or_else(denied)?;
    let key = app.keys.current();
    let subject = crate::auth::Subject {
        id: &credential.client_id,
        roles: &credential.roles,
        version: credential.secret_version(),
        is_machine: true,
    };
    let (token, expires_in) = app.tokens.issue(&key, &subject, crate::now().millis() / 1000)?;
    Ok(super::reply(
        StatusCode::OK,
        json!({"ok": true, "accessToken": token, "expiresIn": expires_in, "tokenType": "Bearer"}),
        None,
    ))
}
