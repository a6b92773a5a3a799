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
              (status = 401, description = "Unknown client id or wrong secret")))]
pub async fn access_token(State(app): State<AppState>, ApiJson(req): ApiJson<TokenRequest>) -> ApiResult<Response> {
    let view = app.catalog.view();
    let denied = || ApiError::unauthorized("the client id or secret is wrong");
    let credential = view.credential(&req.client_id).ok_or_else(denied)?;
    if !constant_time_eq(hash_secret(&req.client_secret).as_bytes(), credential.secret_sha256.as_bytes()) {
        return Err(denied());
    }
    let key = view.signing_key().ok_or_else(|| ApiError::unavailable("the server has no signing key yet"))?;
    let subject = crate::auth::Subject {
        id: &credential.client_id,
        roles: &credential.roles,
        version: credential.secret_version(),
        is_machine: true,
    };
    let (token, expires_in) = app.tokens.issue(key, &subject, crate::now().millis() / 1000)?;
    Ok(super::reply(
        StatusCode::OK,
        json!({"ok": true, "accessToken": token, "expiresIn": expires_in, "tokenType": "Bearer"}),
        None,
    ))
}
