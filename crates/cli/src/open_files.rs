//! The open-files limit of `berth serve` (and `berth bench`): the soft limit raised to the hard one at start.
//!
//! Every connection the server keeps holds a file descriptor: the clients' own, the store's pool, the
//! brokers' clients, and each delivery lane's kept webhook connection (a subscription's `concurrency`, up
//! to 32). Many systems start a service with a soft limit of 1,024 and a hard one far above it (systemd:
//! 1,024 and 524,288): 32 subscriptions at 32 lanes would take them all, and then the server's own
//! `accept` fails (`EMFILE`) as well as the lanes' connections. As Go's runtime does for every program,
//! the server raises its soft limit to its hard limit; it never lowers one, and says what it did.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Under this many, the server warns that many subscriptions with many lanes may run out of descriptors.
pub const LOW: u64 = 4_096;

/// What [`raise`] found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum Raised {
    /// The soft limit went from the first figure to the second (the hard limit).
    From(u64, u64),
    /// The soft limit already was the hard limit, or unlimited: the figure, `None` for unlimited.
    Already(Option<u64>),
    /// The kernel refused (the figure stays): the soft limit and why.
    Refused(u64, String),
}

/// Raises this process's soft limit on open files to its hard limit.
pub fn raise() -> Raised {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let Some(soft) = current else { return Raised::Already(None) };
    // An unlimited hard limit is not one Linux takes for open files (`nr_open` caps it): a million is.
    let hard = maximum.unwrap_or(1 << 20);
    if soft >= hard {
        return Raised::Already(Some(soft));
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum }) {
        Ok(()) => Raised::From(soft, hard),
        Err(e) => Raised::Refused(soft, e.to_string()),
    }
}

/// [`raise`], logged: at info what changed, a warning when the limit stays under [`LOW`].
pub fn raise_and_log() {
    let (limit, raised) = match raise() {
        Raised::From(from, to) => {
            tracing::info!(from, to, "raised the open-files limit to the hard limit");
            (Some(to), true)
        }
        Raised::Already(limit) => (limit, false),
        Raised::Refused(limit, error) => {
            tracing::warn!(limit, %error, "the open-files limit could not be raised");
            (Some(limit), false)
        }
    };
    if let Some(limit) = limit.filter(|l| *l < LOW) {
        tracing::warn!(
            limit,
            raised,
            "the open-files limit is low: each webhook delivery lane keeps a connection open; raise the hard \
             limit (systemd: LimitNOFILE=) for many subscriptions"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit_and_a_second_raise_changes_nothing() {
        let before = getrlimit(Resource::Nofile);
        let first = raise();
        let after = getrlimit(Resource::Nofile);
        assert_eq!(after.maximum, before.maximum, "the hard limit is never changed");
        match first {
            Raised::From(from, to) => {
                assert_eq!(Some(from), before.current);
                assert_eq!(after.current, Some(to));
            }
            Raised::Already(limit) => assert_eq!(limit, before.current),
            Raised::Refused(limit, error) => panic!("refused at {limit}: {error}"),
        }
        assert!(after.current >= before.current, "never lowered");
        assert!(matches!(raise(), Raised::Already(_)), "the second time there is nothing to raise");
    }
}
