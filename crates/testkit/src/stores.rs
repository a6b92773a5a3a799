//! Test stores: every use gets a fresh schema, prefix or file, so tests and runs can share one server.

use std::path::Path;

/// A name no other test or run uses.
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("t_{tag}_{}_{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// `base` with the query parameter `key=value` added.
pub fn with_param(base: &str, key: &str, value: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{key}={value}")
}

/// The test PostgreSQL server's URL (`BERTH_TEST_POSTGRES_URL`, else the local server).
pub fn postgres_base() -> String {
    std::env::var("BERTH_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The test Redis server's URL (`BERTH_TEST_REDIS_URL`, else the local server).
pub fn redis_base() -> String {
    std::env::var("BERTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A store URL of a fresh, empty PostgreSQL schema.
pub fn postgres_url(tag: &str) -> String {
    with_param(&postgres_base(), "schema", &unique(tag))
}

/// A store URL of a fresh, empty Redis key prefix.
pub fn redis_url(tag: &str) -> String {
    with_param(&redis_base(), "prefix", &unique(tag))
}

/// A store URL of a SQLite file in `dir`.
pub fn sqlite_url(dir: &Path, name: &str) -> String {
    format!("sqlite://{}", dir.join(name).display())
}

/// The test CA's PEM file (`scripts/test` makes it and the TLS servers); a missing one fails the test.
pub fn tls_ca() -> String {
    std::env::var("BERTH_TEST_TLS_CA")
        .expect("BERTH_TEST_TLS_CA: the test CA's PEM file (scripts/test makes it and the TLS servers)")
}
