//! What Berth's test binaries share, so that each does not grow its own copy:
//! - [`stores`]: URLs of fresh, empty test stores (a PostgreSQL schema, a Redis prefix, a SQLite file) on the
//!   servers named by `BERTH_TEST_POSTGRES_URL` / `BERTH_TEST_REDIS_URL` (defaults: the local servers), and
//!   the TLS test CA;
//! - [`server`] (feature `server`): an API server in the test's own process on a real socket, its Admin
//!   token, other credentials' tokens, and an HTTP helper that checks Port's envelope;
//! - [`proxy`] (feature `proxy`): a TCP proxy that cuts or stalls the network between Berth and its store;
//! - [`brokers`] (feature `brokers`): a Kafka-protocol broker per test (tansu) and readers of what a NATS
//!   JetStream subject and a Kafka topic hold, for the delivery tests;
//! - [`tls`] (feature `tls`): the TLS test receivers' server configuration and the test CA.
//!
//! The process-level tests (`berth` as a child process) keep their helpers beside them: they need the path
//! of the binary Cargo builds for that crate's tests.

#[cfg(feature = "brokers")]
pub mod brokers;
#[cfg(feature = "proxy")]
pub mod proxy;
#[cfg(feature = "server")]
pub mod server;
pub mod stores;
#[cfg(feature = "tls")]
pub mod tls;
