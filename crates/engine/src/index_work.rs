//! The index updates entity writes make, as data: which ordered set each one touches ([`Target`]) and what it
//! does there ([`Op`]). [`State`](crate::State) applies them one write at a time, or, while a batch defers
//! them ([`State::defer_indexes`](crate::State::defer_indexes)), collects them per set and applies each set's
//! updates in order when the batch settles, different sets on two threads: the writer of a batch of a
//! thousand entities then spends its one core on validating and on the entity map, and the property indexes
//! and reverse-relation sets (most of a write's cost) are brought up to date in parallel.
//!
//! Each set receives its updates in the order the writes made them, so the result is the same as applying
//! them one write at a time, however the sets are split over threads.

use std::collections::HashMap;
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use crate::index::{Entry, ScalarKey};
use crate::state::Link;

type Key = Arc<str>;

/// The ordered set an update goes to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A blueprint's index of one property (with its value counts when the property is counted).
    Property { blueprint: Key, property: Key },
    /// The reverse-relation set of a target blueprint.
    Links { blueprint: Key },
}

/// One update of one set.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Unindex { value: ScalarKey, id: Key, counted: bool },
    Index { value: ScalarKey, id: Key, counted: bool },
    Unlink(Link),
    Link(Link),
}

impl Op {
    /// Whether the update adds to its set (a set is created by its first addition, never by a removal).
    fn adds(&self) -> bool {
        matches!(self, Op::Index { .. } | Op::Link(_))
    }
}

/// Updates waiting for a batch to settle, grouped by set in first-touched order.
#[derive(Clone, Debug, Default)]
pub(crate) struct Deferred {
    groups: Vec<(Target, Vec<Op>)>,
    /// Where each set's group is (foldhash: one lookup per update, on the writer's path).
    at: HashMap<Target, usize, foldhash::fast::RandomState>,
    ops: usize,
}

impl Deferred {
    pub fn push(&mut self, target: Target, op: Op) {
        self.ops += 1;
        match self.at.get(&target) {
            Some(&i) => self.groups[i].1.push(op),
            None => {
                self.at.insert(target.clone(), self.groups.len());
                self.groups.push((target, vec![op]));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// How many updates wait.
    pub fn len(&self) -> usize {
        self.ops
    }

    pub fn into_groups(self) -> Vec<(Target, Vec<Op>)> {
        self.groups
    }
}

/// A set taken out of the state to be updated (on whichever thread), then put back.
pub(crate) enum Taken {
    Property { entries: OrdSet<Entry>, counts: Option<OrdMap<ScalarKey, usize>> },
    Links(OrdSet<Link>),
}

/// Applies `ops` in order to a set taken out of the state; answers the set and whether it must be kept (it
/// existed before, or an update added to it).
pub(crate) fn apply_all(mut taken: Taken, existed: bool, ops: Vec<Op>) -> (Taken, bool) {
    let keep = existed || ops.iter().any(Op::adds);
    for op in ops {
        match &mut taken {
            Taken::Property { entries, counts } => apply_to_property(entries, counts, op),
            Taken::Links(links) => apply_to_links(links, op),
        }
    }
    (taken, keep)
}

/// One update of a property index and its value counts (`counts` is created by the first counted
/// addition).
fn apply_to_property(entries: &mut OrdSet<Entry>, counts: &mut Option<OrdMap<ScalarKey, usize>>, op: Op) {
    match op {
        Op::Unindex { value, id, counted } => {
            if counted {
                if let Some(n) = counts.as_mut().and_then(|c| c.get_mut(&value)) {
                    *n -= 1;
                    if *n == 0 {
                        counts.as_mut().map(|c| c.remove(&value));
                    }
                }
            }
            entries.remove(&Entry { value, id });
        }
        Op::Index { value, id, counted } => {
            let value = if counted {
                count_value(counts.get_or_insert_with(OrdMap::new), value)
            } else {
                crate::index::held_value(entries, &value).unwrap_or(value)
            };
            entries.insert(Entry { value, id });
        }
        Op::Unlink(_) | Op::Link(_) => {}
    }
}

/// One update of a reverse-relation set.
fn apply_to_links(links: &mut OrdSet<Link>, op: Op) {
    match op {
        Op::Link(link) => {
            links.insert(link);
        }
        Op::Unlink(link) => {
            links.remove(&link);
        }
        Op::Unindex { .. } | Op::Index { .. } => {}
    }
}

/// Counts one more entity with a counted property's value, answering the counts' own copy of the value
/// (few values, many index entries: the entries share it).
pub(crate) fn count_value(counts: &mut OrdMap<ScalarKey, usize>, value: ScalarKey) -> ScalarKey {
    let shared = counts.get_key_value(&value).map_or(value, |(k, _)| k.clone());
    *counts.entry(shared.clone()).or_default() += 1;
    shared
}
