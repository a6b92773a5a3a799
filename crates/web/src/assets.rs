//! Static assets compiled into the binary: vendored htmx and our own CSS and JS. Each is served under a path
//! that carries its version (or content hash), so browsers may cache it for a year.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const HTMX_PATH: &str = "/assets/htmx-2.0.11.min.js";
const HTMX: &[u8] = include_bytes!("../assets/vendor/htmx-2.0.11.min.js");
const CSS: &[u8] = include_bytes!("../assets/berth.css");
const JS: &[u8] = include_bytes!("../assets/berth.js");

/// The CSS path, versioned by the crate version (the file changes only with a release).
pub const CSS_PATH: &str = concat!("/assets/berth-", env!("CARGO_PKG_VERSION"), ".css");
pub const JS_PATH: &str = concat!("/assets/berth-", env!("CARGO_PKG_VERSION"), ".js");

fn serve(bytes: &'static [u8], mime: &'static str) -> Response {
    let mut r = (StatusCode::OK, bytes).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    r
}

pub async fn htmx() -> Response {
    serve(HTMX, "text/javascript; charset=utf-8")
}

pub async fn css() -> Response {
    serve(CSS, "text/css; charset=utf-8")
}

pub async fn js() -> Response {
    serve(JS, "text/javascript; charset=utf-8")
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn vendored_htmx_matches_its_recorded_checksum() {
        let hex: String = Sha256::digest(super::HTMX).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717");
        let table = include_str!("../assets/vendor/VENDORED.md");
        assert!(table.contains(&hex), "VENDORED.md records the same hash");
    }
}
