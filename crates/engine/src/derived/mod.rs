//! Derived data: mirror, calculation and aggregation properties.
pub mod jq;
