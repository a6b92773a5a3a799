//! What every page shares: the layout data, rendering a template into a response, and [`UiError`], the one
//! way a page fails (an HTML error page with the right status; never a panic).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use berth_server::error::ApiError;

/// The header, navigation and assets of a page.
pub struct Layout {
    pub title: String,
    /// The signed-in user's name.
    pub user: String,
    pub is_admin: bool,
    /// The CSRF token every form posts back as `_csrf`.
    pub csrf: String,
    /// Which navigation entry is current: `home`, `audit`, or a blueprint id.
    pub nav: String,
    pub blueprints: Vec<(String, String)>,
    pub css: &'static str,
    pub js: &'static str,
    pub htmx: &'static str,
}

/// Renders a template into a 200 HTML answer.
pub fn html<T: Template>(t: &T) -> Result<Response, UiError> {
    html_status(StatusCode::OK, t)
}

/// Renders a template with a status (a form shown again with its errors answers 422).
pub fn html_status<T: Template>(status: StatusCode, t: &T) -> Result<Response, UiError> {
    let body = t.render().map_err(|e| UiError::internal(format!("template: {e}")))?;
    Ok((status, Html(body)).into_response())
}

/// A 303 to `to` (after a successful form post, so reloading does not post again).
pub fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(to) {
        r.headers_mut().insert(axum::http::header::LOCATION, v);
    }
    r
}

#[derive(Debug)]
pub struct UiError {
    pub status: StatusCode,
    pub message: String,
}

impl UiError {
    /// An error page with the status of `code` (the one table of codes and statuses).
    pub fn new(code: berth_model::ErrorCode, message: impl Into<String>) -> Self {
        UiError { status: berth_server::error::status_of(code), message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(berth_model::ErrorCode::NotFound, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "UI internal error");
        Self::new(berth_model::ErrorCode::InternalError, "internal error; see the server log")
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        UiError { status: e.status, message: e.message }
    }
}

impl From<berth_model::DomainError> for UiError {
    fn from(e: berth_model::DomainError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<berth_catalog::ReadError> for UiError {
    fn from(e: berth_catalog::ReadError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<berth_catalog::pipeline::PipelineError> for UiError {
    fn from(e: berth_catalog::pipeline::PipelineError) -> Self {
        ApiError::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    css: &'static str,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
            css: crate::assets::CSS_PATH,
        };
        let body = page.render().unwrap_or_else(|_| self.message.clone());
        (self.status, Html(body)).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;
