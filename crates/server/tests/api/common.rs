//! The test server and its HTTP helper come from the shared test kit.

pub use berth_testkit::server::*;
