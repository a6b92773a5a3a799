//! Reads narrowed to what the caller may read: the one door every read of the API and the UI goes through.
//! A request builds one [`Scoped`] view of the published catalog for its caller (see
//! [`berth_engine::scoped`]): entity lookups through it answer a hidden entity like a missing one, and
//! queries are narrowed in their typed form, so one query answers the page, its count and any aggregate alike.

use berth_engine::State;
pub use berth_engine::scoped::Scoped;

use crate::auth::Caller;

/// `caller`'s view of `view`, judged at the current time.
pub fn scoped<'s>(view: &'s State, caller: &Caller) -> Scoped<'s> {
    Scoped::new(view, caller.principal(), crate::now())
}
