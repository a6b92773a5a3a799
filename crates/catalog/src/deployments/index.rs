//! The deployments and incidents of a catalog state in the compact form the answers read: each deployment's
//! service, environment, status and times, ordered by when it took effect; the deployment running in each
//! service × environment; each incident's services, environment and times.
//!
//! [`Index::build`] reads a whole state (one pass over the deployments: a past state for `at=`);
//! [`Index::catch_up`] moves an index to a later version of the same catalog by the entities that differ
//! between the two versions (the persistent maps share what did not change, so that is a few steps per
//! write). [`Kept`] is one index kept current with the published state, caught up when an answer needs it,
//! so every replica answers from its own state, and a report is in the next answer.
//!
//! Derived, never stored: an index is a function of the state it was built or caught up to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use berth_engine::State;
use berth_model::deployment::{self, Status};
use berth_model::{Entity, Timestamp};
use serde_json::Value;

use super::{deployed_at, time_of};

/// A service or environment identifier, interned (an index names thousands of them a million times).
pub(crate) type Name = u32;

/// One deployment, as the answers read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fact {
    pub service: Name,
    pub environment: Name,
    /// `None`: a status Berth does not read (the answers leave it out).
    pub status: Option<Status>,
    pub commit_time: Option<Timestamp>,
}

/// One incident, as DORA reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Incident {
    pub services: Vec<Name>,
    /// `None`: the incident blueprint relates to no environment (it counts in every one).
    pub environment: Option<Name>,
    pub opened: Timestamp,
    pub resolved: Option<Timestamp>,
}

/// The relations an index reads: the deployment's to its service and environment; the incident's to its
/// services and (when it has one) its environment. An index is rebuilt when they change.
#[derive(Debug, Clone, PartialEq, Default)]
struct Relations {
    deployment: Option<(String, String)>,
    incident: Option<(String, Option<String>)>,
}

impl Relations {
    fn of(state: &State) -> Relations {
        let deployment = super::report::deployment_relations(state).map(|(s, e)| (s.to_string(), e.to_string()));
        let incident = state.blueprint(deployment::INCIDENT).and_then(|b| {
            // The relation named like its target, else the first one to it (single or many).
            let to = |target: &'static str| -> Option<String> {
                let named = b.def.relations.get(target).filter(|r| r.target == target).map(|_| target.to_string());
                named.or_else(|| b.def.relations.iter().find(|(_, r)| r.target == target).map(|(k, _)| k.clone()))
            };
            Some((to(deployment::SERVICE)?, to(deployment::ENVIRONMENT)))
        });
        Relations { deployment, incident }
    }
}

/// See the module's documentation.
#[derive(Debug, Clone, Default)]
pub struct Index {
    relations: Relations,
    names: HashMap<Arc<str>, Name>,
    spelled: Vec<Arc<str>>,
    /// (took effect, identifier) → the deployment.
    by_time: BTreeMap<(Timestamp, Arc<str>), Fact>,
    /// Identifier → when it took effect (its key in `by_time`).
    at_of: HashMap<Arc<str>, Timestamp>,
    /// (service, environment) → the deployment running there: the latest successful one, ties to the larger
    /// identifier.
    running: HashMap<(Name, Name), (Timestamp, Arc<str>)>,
    incidents: HashMap<Arc<str>, Incident>,
}

impl Index {
    /// The index of `state`'s deployments and incidents.
    pub fn build(state: &State) -> Index {
        let mut index = Index { relations: Relations::of(state), ..Index::default() };
        for d in state.entities_of(deployment::DEPLOYMENT) {
            if let Some((at, fact)) = index.fact_of(d) {
                index.insert(d.identifier.clone(), at, fact);
            }
        }
        for i in state.entities_of(deployment::INCIDENT) {
            if let Some(incident) = index.incident_of(i) {
                index.incidents.insert(i.identifier.clone(), incident);
            }
        }
        index
    }

    /// Moves the index, built or caught up to `older`, to `newer` (a later version of the same catalog).
    pub fn catch_up(&mut self, older: &State, newer: &State) {
        if Relations::of(newer) != self.relations {
            *self = Index::build(newer);
            return;
        }
        let mut stopped: HashSet<(Name, Name)> = HashSet::new();
        for (id, before, after) in newer.entity_changes(older, deployment::DEPLOYMENT) {
            if before.is_some() {
                if let Some((fact, at)) = self.remove(id) {
                    if self.running.get(&(fact.service, fact.environment)).is_some_and(|(t, d)| *t == at && d == id) {
                        stopped.insert((fact.service, fact.environment));
                    }
                }
            }
            if let Some(d) = after {
                if let Some((at, fact)) = self.fact_of(d) {
                    self.insert(d.identifier.clone(), at, fact);
                }
            }
        }
        // A cell whose running deployment went away (deleted, failed, moved): the best of the rest, read
        // through the service's deployments.
        for cell in stopped {
            self.recompute(newer, cell);
        }
        for (id, _, after) in newer.entity_changes(older, deployment::INCIDENT) {
            self.incidents.remove(id);
            if let Some(incident) = after.and_then(|i| self.incident_of(i)) {
                self.incidents.insert(id.clone(), incident);
            }
        }
    }

    /// The interned name of an identifier the index has seen.
    pub(crate) fn name(&self, identifier: &str) -> Option<Name> {
        self.names.get(identifier).copied()
    }

    /// The identifier an interned name stands for.
    pub(crate) fn spelled(&self, name: Name) -> &str {
        self.spelled.get(name as usize).map_or("", |s| s)
    }

    /// The deployment running in `environment` of `service`, and since when.
    pub(crate) fn running(&self, service: &str, environment: &str) -> Option<(Timestamp, &Arc<str>)> {
        let key = (self.name(service)?, self.name(environment)?);
        self.running.get(&key).map(|(at, id)| (*at, id))
    }

    /// The deployments that took effect in `[from, to)`, in that order.
    pub(crate) fn between(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> impl Iterator<Item = (Timestamp, &Arc<str>, &Fact)> + '_ {
        let empty: Arc<str> = Arc::from("");
        self.by_time
            .range((Bound::Included((from, empty.clone())), Bound::Excluded((to, empty))))
            .map(|((at, id), fact)| (*at, id, fact))
    }

    /// Every incident, with its identifier.
    pub(crate) fn incidents(&self) -> impl Iterator<Item = (&Arc<str>, &Incident)> {
        self.incidents.iter()
    }

    /// How many deployments the index holds.
    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    fn intern(&mut self, identifier: &str) -> Name {
        if let Some(n) = self.names.get(identifier) {
            return *n;
        }
        let n = self.spelled.len() as Name;
        let key: Arc<str> = Arc::from(identifier);
        self.spelled.push(key.clone());
        self.names.insert(key, n);
        n
    }

    fn fact_of(&mut self, d: &Entity) -> Option<(Timestamp, Fact)> {
        let (service_rel, env_rel) = self.relations.deployment.as_ref()?;
        let service = d.relations.get(service_rel.as_str()).and_then(Value::as_str)?;
        let environment = d.relations.get(env_rel.as_str()).and_then(Value::as_str)?;
        let status = d.properties.get("status").and_then(Value::as_str).and_then(Status::parse);
        let (service, environment) = (self.intern(service), self.intern(environment));
        Some((deployed_at(d), Fact { service, environment, status, commit_time: time_of(d, "commitTime") }))
    }

    fn incident_of(&mut self, i: &Entity) -> Option<Incident> {
        let (service_rel, env_rel) = self.relations.incident.clone()?;
        let services: Vec<Name> = i
            .relations
            .get(service_rel.as_str())
            .map(Entity::relation_targets)
            .unwrap_or_default()
            .into_iter()
            .map(|s| self.intern(s))
            .collect();
        // `None`: the blueprint relates to no environment (the incident counts in every one); an incident of
        // a blueprint that does relate to environments but names none counts in none.
        let environment = env_rel.map(|rel| match i.relations.get(rel.as_str()).and_then(Value::as_str) {
            Some(env) => self.intern(env),
            None => Name::MAX,
        });
        Some(Incident {
            services,
            environment,
            opened: time_of(i, "openedAt").unwrap_or(i.created_at),
            resolved: time_of(i, "resolvedAt"),
        })
    }

    fn insert(&mut self, id: Arc<str>, at: Timestamp, fact: Fact) {
        if fact.status == Some(Status::Success) {
            let slot = self.running.entry((fact.service, fact.environment)).or_insert((at, id.clone()));
            if (at, &id) > (slot.0, &slot.1) {
                *slot = (at, id.clone());
            }
        }
        self.at_of.insert(id.clone(), at);
        self.by_time.insert((at, id), fact);
    }

    fn remove(&mut self, id: &Arc<str>) -> Option<(Fact, Timestamp)> {
        let at = self.at_of.remove(id)?;
        let fact = self.by_time.remove(&(at, id.clone()))?;
        Some((fact, at))
    }

    /// The running deployment of one cell, from the service's deployments in `state` (the reverse index).
    fn recompute(&mut self, state: &State, (service, environment): (Name, Name)) {
        let Some((service_rel, _)) = self.relations.deployment.as_ref() else { return };
        let mut best: Option<(Timestamp, Arc<str>)> = None;
        let name = self.spelled(service);
        for id in state.sources(deployment::SERVICE, name, deployment::DEPLOYMENT, service_rel, None) {
            let Some(at) = self.at_of.get(id) else { continue };
            let Some(fact) = self.by_time.get(&(*at, id.clone())) else { continue };
            if fact.environment == environment
                && fact.status == Some(Status::Success)
                && best.as_ref().is_none_or(|(t, d)| (*at, id) > (*t, d))
            {
                best = Some((*at, id.clone()));
            }
        }
        match best {
            Some(b) => self.running.insert((service, environment), b),
            None => self.running.remove(&(service, environment)),
        };
    }
}

/// The deployments index kept current with the published state.
pub type Kept = crate::kept::Kept<Index>;

impl crate::kept::Derived for Index {
    fn build(state: &State) -> Index {
        Index::build(state)
    }

    fn catch_up(&mut self, older: &State, newer: &State) {
        Index::catch_up(self, older, newer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::Command;
    use serde_json::json;

    use crate::test_writes::apply;

    fn upsert(bp: &str, body: Value) -> Command {
        crate::test_writes::upsert(bp, body, true)
    }

    type Facts = BTreeMap<(Timestamp, String), (String, String, Option<Status>, Option<Timestamp>)>;
    type Cells = BTreeMap<(String, String), (Timestamp, String)>;
    type Incidents = BTreeMap<String, (Vec<String>, Option<String>, Timestamp, Option<Timestamp>)>;

    /// What an index holds, by identifiers (interned names differ between two indexes of one state).
    fn spelled(index: &Index) -> (Facts, Cells, Incidents) {
        let n = |x: Name| index.spelled(x).to_string();
        let facts = index
            .by_time
            .iter()
            .map(|((at, id), f)| ((*at, id.to_string()), (n(f.service), n(f.environment), f.status, f.commit_time)))
            .collect();
        let cells = index.running.iter().map(|((s, e), (at, id))| ((n(*s), n(*e)), (*at, id.to_string()))).collect();
        let incidents = index
            .incidents
            .iter()
            .map(|(id, i)| {
                let env = i.environment.map(|e| if e == Name::MAX { "-".to_string() } else { n(e) });
                (id.to_string(), (i.services.iter().map(|s| n(*s)).collect(), env, i.opened, i.resolved))
            })
            .collect();
        (facts, cells, incidents)
    }

    /// After every write of a long random history (deployments reported, re-reported with another status,
    /// moved to another service or environment, deleted; incidents opened and resolved), the index caught up
    /// write by write holds exactly what an index built from the state holds.
    #[test]
    fn an_index_caught_up_write_by_write_is_the_index_built_from_scratch() {
        let mut state = State::default();
        let mut n = 0;
        for body in deployment::model() {
            apply(&mut state, &mut n, Command::CreateBlueprint { body });
        }
        let kept = Kept::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let statuses = ["success", "success", "failure", "rolled_back", "in_progress"];
        for step in 0..400 {
            let id = format!("d{}", next(40));
            let cmd = match next(10) {
                0 => Command::DeleteEntity {
                    blueprint: deployment::DEPLOYMENT.into(),
                    identifier: id,
                    delete_dependents: false,
                },
                1 => upsert(
                    deployment::INCIDENT,
                    json!({"identifier": format!("i{}", next(5)), "properties": {"severity": "high",
                        "openedAt": Timestamp::from_millis(1_000_000 + next(100) as i64 * 1000).to_rfc3339()},
                        "relations": {"service": format!("s{}", next(3)), "environment": "production"}}),
                ),
                _ => {
                    let at = Timestamp::from_millis(1_000_000 + next(100) as i64 * 1000).to_rfc3339();
                    let environment = ["production", "staging"][next(2) as usize];
                    upsert(
                        deployment::DEPLOYMENT,
                        json!({"identifier": id, "properties": {"version": format!("v{}", next(9)),
                            "status": statuses[next(5) as usize], "finishedAt": at},
                            "relations": {"service": format!("s{}", next(3)),
                                "environment": environment}}),
                    )
                }
            };
            if let Command::DeleteEntity { identifier, .. } = &cmd {
                if state.entity(deployment::DEPLOYMENT, identifier).is_none() {
                    continue;
                }
            }
            apply(&mut state, &mut n, cmd);
            // Every few writes, as the background task does; else write by write.
            if step % 3 != 1 {
                let caught = kept.with(&state, |index, at| {
                    assert_eq!(at.seq(), state.seq());
                    spelled(index)
                });
                assert_eq!(caught, spelled(&Index::build(&state)), "after write {step}");
            }
        }
        assert!(!Index::build(&state).running.is_empty(), "the history left deployments running");
    }
}
