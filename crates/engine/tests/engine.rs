//! The engine as a state machine: commands against a state, events applied, snapshots and replay.

use berth_engine::{Command, Outcome, State, WriteMeta, WriteMode, execute};
use berth_model::{DomainError, EntityInput, Event, Origin, Timestamp};
use serde_json::{Value, json};

/// The time searches run at in these tests.
const NOW: Timestamp = Timestamp::from_millis(1_800_000_000_000);

struct Harness {
    state: State,
    log: Vec<Event>,
}

impl Harness {
    fn new() -> Self {
        Harness { state: State::default(), log: Vec::new() }
    }

    fn meta(&self) -> WriteMeta {
        WriteMeta {
            actor: "tester".into(),
            origin: Origin::Api,
            now: Timestamp::from_millis(1_700_000_000_000 + self.log.len() as i64),
            datasource: None,
            run_id: None,
            principal: None,
        }
    }

    fn run(&mut self, cmd: Command) -> Result<Outcome, DomainError> {
        let meta = self.meta();
        let (changes, outcome) = execute(&self.state, &meta, &cmd)?;
        for change in changes {
            let ev = Event {
                seq: self.state.seq() + 1,
                time: meta.now,
                actor: meta.actor.clone(),
                origin: meta.origin,
                run_id: None,
                before: self.state.previous_of(&change),
                change,
            };
            self.state.apply(&ev).expect("apply");
            self.log.push(ev);
        }
        Ok(outcome)
    }

    fn blueprint(&mut self, body: Value) {
        self.run(Command::CreateBlueprint { body }).expect("create blueprint");
    }

    fn write(&mut self, bp: &str, body: Value, mode: WriteMode) -> Result<Outcome, DomainError> {
        let input = EntityInput::from_value(&body)?;
        self.run(Command::WriteEntity {
            blueprint: bp.into(),
            path_id: None,
            input,
            mode,
            create_missing_related: false,
        })
    }
}

fn catalog() -> Harness {
    let mut h = Harness::new();
    h.blueprint(json!({"identifier": "system", "title": "System", "schema": {"properties": {}}}));
    h.blueprint(json!({"identifier": "service", "title": "Service",
        "schema": {"properties": {
            "lang": {"type": "string", "enum": ["go", "rust"], "default": "rust"},
            "replicas": {"type": "number", "minimum": 0},
            "tags": {"type": "array"}}},
        "relations": {
            "system": {"target": "system", "required": false, "many": false},
            "deps": {"target": "service", "many": true}}}));
    h.blueprint(json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {}},
        "relations": {"service": {"target": "service", "required": true}}}));
    h
}

fn entity(o: Outcome) -> berth_model::Entity {
    match o {
        Outcome::Entity { entity, .. } => (*entity).clone(),
        other => panic!("expected an entity, got {other:?}"),
    }
}

#[test]
fn merge_keeps_other_fields_and_replace_drops_them() {
    let mut h = catalog();
    h.write(
        "service",
        json!({"identifier": "a", "title": "A", "properties": {"replicas": 2, "tags": ["x"]}}),
        WriteMode::Create,
    )
    .expect("create");
    let e = entity(
        h.write("service", json!({"identifier": "a", "properties": {"replicas": 3}}), WriteMode::UpsertMerge)
            .expect("merge"),
    );
    assert_eq!(e.title.as_deref(), Some("A"));
    assert_eq!(e.properties["tags"], json!(["x"]));
    assert_eq!(e.properties["replicas"], json!(3));
    assert_eq!(e.properties["lang"], json!("rust"), "default applied on create");
    let e = entity(
        h.write("service", json!({"identifier": "a", "properties": {"replicas": 1}}), WriteMode::Upsert)
            .expect("replace"),
    );
    assert_eq!(e.title, None);
    assert!(e.properties.get("tags").is_none());
    assert_eq!(e.created_at, Timestamp::from_millis(1_700_000_000_003), "creation stamp survives replace");
}

#[test]
fn create_conflicts_and_validation_refuses_bad_values() {
    let mut h = catalog();
    h.write("service", json!({"identifier": "a"}), WriteMode::Create).expect("create");
    assert!(matches!(
        h.write("service", json!({"identifier": "a"}), WriteMode::Create),
        Err(DomainError::AlreadyExists { .. })
    ));
    let seq = h.state.seq();
    for bad in [
        json!({"identifier": "b", "properties": {"lang": "cobol"}}),
        json!({"identifier": "b", "properties": {"replicas": -1}}),
        json!({"identifier": "b", "properties": {"unknown": 1}}),
        json!({"identifier": "b", "relations": {"nope": "x"}}),
        json!({"identifier": "b c"}),
    ] {
        assert!(h.write("service", bad.clone(), WriteMode::Upsert).is_err(), "{bad}");
    }
    assert_eq!(h.state.seq(), seq, "refused writes change nothing");
    assert!(matches!(
        h.write("nope", json!({"identifier": "x"}), WriteMode::Upsert),
        Err(DomainError::NotFound { kind: "blueprint", .. })
    ));
}

#[test]
fn relations_need_targets_unless_created_on_request() {
    let mut h = catalog();
    let err = h.write("service", json!({"identifier": "a", "relations": {"system": "billing"}}), WriteMode::Upsert);
    assert!(matches!(err, Err(DomainError::RelatedNotFound { .. })), "{err:?}");
    let input = EntityInput::from_value(&json!({"identifier": "a", "relations": {"system": "billing", "deps": "b"}}))
        .expect("input");
    h.run(Command::WriteEntity {
        blueprint: "service".into(),
        path_id: None,
        input,
        mode: WriteMode::Upsert,
        create_missing_related: true,
    })
    .expect("created with missing related");
    assert!(h.state.entity("system", "billing").is_some());
    assert!(h.state.entity("service", "b").is_some());
    assert_eq!(
        h.state.entity("service", "a").expect("a").relations["deps"],
        json!(["b"]),
        "single id normalised to array"
    );
    assert_eq!(h.state.incoming("system", "billing").count(), 1);
    assert!(
        matches!(
            h.write("deployment", json!({"identifier": "d1"}), WriteMode::Upsert),
            Err(DomainError::SchemaMismatch(_))
        ),
        "required relation"
    );
    assert!(
        matches!(
            h.write("service", json!({"identifier": "c", "relations": {"system": ["a", "b"]}}), WriteMode::Upsert),
            Err(DomainError::SchemaMismatch(_))
        ),
        "array into single relation"
    );
}

#[test]
fn delete_dependents_cascades_required_and_clears_optional() {
    let mut h = catalog();
    h.write("system", json!({"identifier": "s"}), WriteMode::Create).expect("s");
    h.write("service", json!({"identifier": "a", "relations": {"system": "s"}}), WriteMode::Create).expect("a");
    h.write("service", json!({"identifier": "b", "relations": {"deps": ["a"]}}), WriteMode::Create).expect("b");
    h.write("deployment", json!({"identifier": "d", "relations": {"service": "a"}}), WriteMode::Create).expect("d");
    let del =
        |dep| Command::DeleteEntity { blueprint: "service".into(), identifier: "a".into(), delete_dependents: dep };
    assert!(matches!(h.run(del(false)), Err(DomainError::HasDependents(_))));
    assert!(h.state.entity("service", "a").is_some());
    match h.run(del(true)).expect("cascade") {
        Outcome::Deleted { identifiers } => {
            assert_eq!(identifiers, vec!["a".to_string(), "d".to_string()])
        }
        other => panic!("{other:?}"),
    }
    assert!(h.state.entity("deployment", "d").is_none());
    let b = h.state.entity("service", "b").expect("b survives");
    assert_eq!(b.relations.get("deps"), Some(&json!([])), "optional relation value removed");
    assert_eq!(h.state.incoming("system", "s").count(), 0);
}

#[test]
fn blueprint_rules() {
    let mut h = catalog();
    h.write("system", json!({"identifier": "s"}), WriteMode::Create).expect("s");
    assert!(matches!(h.run(Command::DeleteBlueprint { id: "system".into() }), Err(DomainError::HasDependents(_))));
    assert!(matches!(
        h.run(Command::CreateBlueprint {
            body: json!({"identifier": "x", "title": "X", "schema": {}, "relations": {"r": {"target": "ghost"}}})
        }),
        Err(DomainError::InvalidBlueprint(_))
    ));
    // Removing a property strips its values from entities.
    h.write("service", json!({"identifier": "a", "properties": {"replicas": 2}}), WriteMode::Create).expect("a");
    h.run(Command::PatchBlueprint {
        id: "service".into(),
        patch: json!({"schema": {"properties": {"replicas": null}}}),
    })
    .expect("patch");
    assert!(h.state.entity("service", "a").expect("a").properties.get("replicas").is_none());
    assert!(h.state.blueprint("service").expect("bp").def.schema.properties.contains_key("lang"), "patch merges");
    h.run(Command::DeleteAllEntities { blueprint: "system".into(), delete_blueprint: false }).expect("delete all");
    assert_eq!(h.state.entity_count("system"), 0);
}

#[test]
fn snapshot_and_replay_build_the_same_state() {
    let mut h = catalog();
    for i in 0..50 {
        h.write(
            "service",
            json!({"identifier": format!("s{i}"), "properties": {"replicas": i},
            "relations": {"deps": if i > 0 { vec![format!("s{}", i - 1)] } else { vec![] }}}),
            WriteMode::Upsert,
        )
        .expect("write");
    }
    h.run(Command::DeleteEntity { blueprint: "service".into(), identifier: "s49".into(), delete_dependents: false })
        .expect("del");
    let mut replayed = State::default();
    for ev in &h.log {
        let json = serde_json::to_vec(ev).expect("serialise");
        replayed.apply(&serde_json::from_slice(&json).expect("deserialise")).expect("apply");
    }
    let snap = h.state.to_snapshot().expect("snapshot");
    assert_eq!(replayed.to_snapshot().expect("snapshot"), snap, "replay is deterministic");
    let restored = State::from_snapshot(&snap).expect("restore");
    assert_eq!(restored.seq(), h.state.seq());
    assert_eq!(restored.incoming("service", "s10").count(), 1, "indexes rebuilt");
    assert_eq!(restored.to_snapshot().expect("snapshot"), snap);
}

#[test]
fn events_out_of_order_are_refused() {
    let mut h = catalog();
    let mut ev = h.log[0].clone();
    ev.seq = 99;
    assert!(h.state.apply(&ev).is_err());
}

mod random_sequences {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write { id: u8, replicas: u8, deps: Vec<u8>, merge: bool },
        Delete { id: u8, cascade: bool },
        Deploy { id: u8, service: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12, 0u8..60, prop::collection::vec(0u8..12, 0..3), any::<bool>())
                .prop_map(|(id, replicas, deps, merge)| Op::Write { id, replicas, deps, merge }),
            (0u8..12, any::<bool>()).prop_map(|(id, cascade)| Op::Delete { id, cascade }),
            (0u8..6, 0u8..12).prop_map(|(id, service)| Op::Deploy { id, service }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever is accepted or refused: replaying the log and restoring the snapshot give the same state,
        /// and every relation value is in the reverse index (and nothing else is).
        #[test]
        fn replay_snapshot_and_index_agree(ops in prop::collection::vec(op(), 1..60)) {
            let mut h = catalog();
            for op in ops {
                let _ = match op {
                    Op::Write { id, replicas, deps, merge } => {
                        let deps: Vec<String> = deps.iter().map(|d| format!("s{d}")).collect();
                        let tags: Vec<String> = (0..replicas % 3).map(|t| format!("t{t}")).collect();
                        let body = json!({"identifier": format!("s{id}"), "title": format!("S{}", replicas % 5),
                            "properties": {"replicas": replicas, "tags": tags}, "relations": {"deps": deps}});
                        let input = EntityInput::from_value(&body).expect("input");
                        h.run(Command::WriteEntity {
                            blueprint: "service".into(), path_id: None, input,
                            mode: if merge { WriteMode::UpsertMerge } else { WriteMode::Upsert },
                            create_missing_related: true,
                        })
                    }
                    Op::Delete { id, cascade } => h.run(Command::DeleteEntity {
                        blueprint: "service".into(), identifier: format!("s{id}"), delete_dependents: cascade }),
                    Op::Deploy { id, service } => h.write("deployment",
                        json!({"identifier": format!("d{id}"), "relations": {"service": format!("s{service}")}}), WriteMode::Upsert),
                };
            }
            let snap = h.state.to_snapshot().expect("snapshot");
            let mut replayed = State::default();
            for ev in &h.log {
                replayed.apply(ev).expect("replay");
            }
            prop_assert_eq!(&replayed.to_snapshot().expect("snapshot"), &snap);
            let restored = State::from_snapshot(&snap).expect("restore");
            let mut edges = 0;
            for bp in ["service", "deployment"] {
                for e in h.state.entities_of(bp) {
                    for (rel, value) in &e.relations {
                        let target = h.state.blueprint(bp).expect("bp").def.relations[rel].target.clone();
                        for t in berth_model::Entity::relation_targets(value) {
                            prop_assert!(h.state.entity(&target, t).is_some(), "dangling {}/{} -> {}/{}", bp, e.identifier, target, t);
                            let found = restored.incoming(&target, t).any(|edge| *edge.identifier == *e.identifier && &**edge.relation() == rel);
                            prop_assert!(found, "edge {}/{} -{}-> {} missing", bp, e.identifier, rel, t);
                            edges += 1;
                        }
                    }
                }
            }
            let indexed: usize = ["service", "deployment"].iter()
                .flat_map(|bp| h.state.entities_of(bp).map(move |e| (*bp, e.identifier.to_string())))
                .map(|(bp, id)| h.state.incoming(bp, &id).count()).sum();
            prop_assert_eq!(indexed, edges, "the index holds exactly the relation values");
            let rebuilt: usize = ["service", "deployment"].iter()
                .flat_map(|bp| h.state.entities_of(bp).map(move |e| (*bp, e.identifier.to_string())))
                .map(|(bp, id)| restored.incoming(bp, &id).count()).sum();
            prop_assert_eq!(rebuilt, edges, "the index built from a snapshot holds exactly the relation values");
            // The property indexes kept up by every write equal ones built from scratch.
            for prop in ["replicas", "tags", "lang", "$title"] {
                let kept: Vec<_> = h.state.property_index("service", prop).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                let fresh: Vec<_> = restored.property_index("service", prop).map(|s| s.iter().cloned().collect()).unwrap_or_default();
                prop_assert_eq!(kept, fresh, "property index of {}", prop);
                let kept = h.state.value_counts("service", prop).cloned().unwrap_or_default();
                let fresh = restored.value_counts("service", prop).cloned().unwrap_or_default();
                prop_assert_eq!(kept, fresh, "value counts of {}", prop);
            }
        }
    }
}

mod planned_search {
    use super::*;
    use berth_engine::search;
    use berth_model::query::Query;
    use proptest::prelude::*;

    fn rule() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            (0u8..15).prop_map(|i| json!({"property": "$identifier", "operator": "=", "value": format!("s{i}")})),
            prop::collection::vec(0u8..15, 0..4).prop_map(|ids| json!({"property": "$identifier", "operator": "in",
                "value": ids.iter().map(|i| format!("s{i}")).collect::<Vec<_>>()})),
            (0u8..15).prop_map(|i| json!({"relation": "deps", "operator": "=", "value": format!("s{i}")})),
            prop::collection::vec(0u8..15, 0..3).prop_map(|ids| json!({"relation": "deps", "operator": "in",
                "value": ids.iter().map(|i| format!("s{i}")).collect::<Vec<_>>()})),
            (0u8..3).prop_map(|i| json!({"relation": "system", "operator": "=", "value": format!("sys{i}")})),
            (0u8..60).prop_map(|r| json!({"property": "replicas", "operator": ">", "value": r})),
            Just(json!({"relation": "deps", "operator": "isEmpty"})),
            (0u8..60).prop_map(|r| json!({"property": "replicas", "operator": "=", "value": r})),
            prop::collection::vec(0u8..60, 1..4)
                .prop_map(|rs| json!({"property": "replicas", "operator": "in", "value": rs})),
            (0u8..60).prop_map(|r| json!({"property": "replicas", "operator": "<=", "value": r})),
            (0u8..60).prop_map(|r| json!({"property": "replicas", "operator": ">=", "value": r})),
            (0u8..3).prop_map(|t| json!({"property": "tags", "operator": "containsAny", "value": [format!("t{t}")]})),
            (0u8..5).prop_map(|t| json!({"property": "$title", "operator": "=", "value": format!("S{t}")})),
            Just(json!({"property": "$title", "operator": "beginsWith", "value": "S"})),
            Just(json!({"property": "lang", "operator": "=", "value": "go"})),
            (0u8..15, 1u32..4).prop_map(|(i, hops)| json!({"operator": "matchAny", "value": format!("s{i}"),
                "property": {"path": [{"relation": "deps", "maxHops": hops}]}})),
            (0u8..15, any::<bool>()).prop_map(|(i, down)| json!({"operator": "relatedTo", "blueprint": "service",
                "value": format!("s{i}"), "direction": if down { "downstream" } else { "upstream" }})),
        ]
    }

    fn query() -> impl Strategy<Value = serde_json::Value> {
        (prop::collection::vec(rule(), 1..4), any::<bool>(), prop::option::of(rule())).prop_map(
            |(rules, and, nested)| {
                let mut rules = rules;
                if let Some(n) = nested {
                    rules.push(json!({"combinator": "or", "rules": [n]}));
                }
                json!({"combinator": if and { "and" } else { "or" }, "rules": rules})
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The planner's answer, walked page by page, is exactly the scan's answer in the same order.
        #[test]
        fn planned_pages_equal_the_scan(
            services in prop::collection::vec((0u8..15, 0u8..60, prop::collection::vec(0u8..15, 0..3), prop::option::of(0u8..3)), 1..40),
            q in query(),
            limit in 1usize..7,
        ) {
            let mut h = catalog();
            for i in 0..3 {
                h.write("system", json!({"identifier": format!("sys{i}")}), WriteMode::Upsert).expect("system");
            }
            for (id, replicas, deps, system) in services {
                let mut relations = json!({"deps": deps.iter().map(|d| format!("s{d}")).collect::<Vec<_>>()});
                if let Some(s) = system {
                    relations["system"] = json!(format!("sys{s}"));
                }
                let tags: Vec<String> = (0..replicas % 3).map(|t| format!("t{t}")).collect();
                let input = EntityInput::from_value(&json!({"identifier": format!("s{id}"), "title": format!("S{}", replicas % 5),
                    "properties": {"replicas": replicas, "tags": tags, "lang": if replicas % 2 == 0 { "go" } else { "rust" }},
                    "relations": relations})).expect("input");
                h.run(Command::WriteEntity { blueprint: "service".into(), path_id: None, input, mode: WriteMode::Upsert, create_missing_related: true }).expect("write");
                // Edges of another blueprint into the same targets sit beside the services' own in the
                // reverse index: a lazy read of one relation's sources must step over them.
                for d in &deps {
                    h.write("deployment", json!({"identifier": format!("d{id}-{d}"), "relations": {"service": format!("s{d}")}}), WriteMode::Upsert).expect("deployment");
                }
            }
            let query = Query::parse(&q).expect("parses");
            let expected: Vec<String> = search::scan(&h.state, "service", &query, NOW).expect("scan").iter().map(|e| e.identifier.to_string()).collect();
            let mut got = Vec::new();
            let mut from: Option<String> = None;
            loop {
                let page = search::search_blueprint(&h.state, "service", Some(&query), NOW, from.as_deref(), limit).expect("search");
                prop_assert!(page.entities.len() <= limit);
                got.extend(page.entities.iter().map(|e| e.identifier.to_string()));
                match page.next {
                    Some(n) => from = Some(n),
                    None => break,
                }
            }
            prop_assert_eq!(got, expected, "query {}", q);
        }
    }
}

mod sorted_search {
    use super::*;
    use berth_engine::search;
    use berth_model::query::{Query, parse_sort};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Walking sorted pages gives exactly the matching entities, in (keys, identifier) order.
        #[test]
        fn sorted_pages_equal_a_full_sort(
            services in prop::collection::vec((0u16..40, prop::option::of(0u8..6), prop::option::of("[a-c]{0,2}")), 1..40),
            desc in any::<bool>(),
            by_title in any::<bool>(),
            limit in 1usize..6,
            min in 0u8..4,
            filtered in any::<bool>(),
        ) {
            let mut h = catalog();
            for (id, replicas, title) in &services {
                let mut body = json!({"identifier": format!("s{id}")});
                if let Some(r) = replicas { body["properties"] = json!({"replicas": r}); }
                if let Some(t) = title { body["title"] = json!(t); }
                h.write("service", body, WriteMode::Upsert).expect("write");
            }
            let order = if desc { "desc" } else { "asc" };
            let sort_json = if by_title {
                json!([{"property": "$title", "order": order}, {"property": "replicas"}])
            } else {
                json!([{"property": "replicas", "order": order}])
            };
            let sort = parse_sort(&sort_json).expect("sort");
            let query = Query::parse(&json!({"combinator": "or", "rules": [
                {"property": "replicas", "operator": ">=", "value": min},
                {"property": "replicas", "operator": "isEmpty"}]})).expect("query");
            // The expected order, computed independently.
            // With and without a query (an unfiltered sort walks the property's index from its first entry).
            let matching: Vec<std::sync::Arc<berth_model::Entity>> = if filtered {
                search::scan(&h.state, "service", &query, NOW).expect("scan")
            } else {
                h.state.entities_of("service").cloned().collect()
            };
            let mut expected: Vec<(Option<String>, Option<i64>, String)> = matching
                .iter()
                .map(|e| (e.title.clone(), e.properties.get("replicas").and_then(|v| v.as_i64()), e.identifier.to_string()))
                .collect();
            let key_cmp = |a: &Option<i64>, b: &Option<i64>| match (a, b) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            };
            let title_cmp = |a: &Option<String>, b: &Option<String>| match (a, b) {
                (None, None) => std::cmp::Ordering::Equal,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(_), None) => std::cmp::Ordering::Less,
                (Some(x), Some(y)) => x.cmp(y),
            };
            expected.sort_by(|a, b| {
                let both = if by_title { a.0.is_some() && b.0.is_some() } else { a.1.is_some() && b.1.is_some() };
                let first = if by_title { title_cmp(&a.0, &b.0) } else { key_cmp(&a.1, &b.1) };
                // Absent values last in either direction.
                let first = if desc && both { first.reverse() } else { first };
                let second = if by_title { key_cmp(&a.1, &b.1) } else { std::cmp::Ordering::Equal };
                first.then(second).then(a.2.cmp(&b.2))
            });
            let expected: Vec<String> = expected.into_iter().map(|x| x.2).collect();
            let mut got = Vec::new();
            let mut from: Option<String> = None;
            loop {
                let q = if filtered { Some(&query) } else { None };
                let page = search::search_blueprint_sorted(&h.state, "service", q, &sort, NOW, from.as_deref(), limit).expect("search");
                prop_assert!(page.entities.len() <= limit);
                got.extend(page.entities.iter().map(|e| e.identifier.to_string()));
                match page.next { Some(n) => from = Some(n), None => break }
            }
            prop_assert_eq!(got, expected);
        }
    }
}

mod graph_rules {
    use std::collections::BTreeSet;

    use super::*;
    use berth_engine::search;
    use berth_model::query::Query;
    use proptest::prelude::*;

    /// The services reachable from `start` by following `deps` forward, 1 to `hops` times: a plain walk over
    /// the entities' own relation values, independent of the reverse index the engine reads.
    fn forward(h: &Harness, start: &str, hops: usize) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut frontier = vec![start.to_string()];
        for _ in 0..hops {
            let mut next = Vec::new();
            for id in &frontier {
                if let Some(e) = h.state.entity("service", id) {
                    for t in e.relations.get("deps").map(berth_model::Entity::relation_targets).unwrap_or_default() {
                        if seen.insert(t.to_string()) {
                            next.push(t.to_string());
                        }
                    }
                }
            }
            frontier = next;
        }
        seen
    }

    fn ids(found: Vec<std::sync::Arc<berth_model::Entity>>) -> BTreeSet<String> {
        found.iter().map(|e| e.identifier.to_string()).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// `matchAny` and `relatedTo` (read backwards from the reverse-relation index) agree with forward walks.
        #[test]
        fn graph_rules_agree_with_forward_walks(
            services in prop::collection::vec((0u8..12, prop::collection::vec(0u8..12, 0..3)), 1..30),
            target in 0u8..12,
            hops in 1usize..5,
        ) {
            let mut h = catalog();
            for (id, deps) in services {
                let relations = json!({"deps": deps.iter().map(|d| format!("s{d}")).collect::<Vec<_>>()});
                let input = EntityInput::from_value(&json!({"identifier": format!("s{id}"), "relations": relations})).expect("input");
                h.run(Command::WriteEntity { blueprint: "service".into(), path_id: None, input, mode: WriteMode::Upsert, create_missing_related: true }).expect("write");
            }
            let target = format!("s{target}");
            let all: Vec<String> = h.state.entities_of("service").map(|e| e.identifier.to_string()).collect();

            let q = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "matchAny", "value": target,
                "property": {"path": [{"relation": "deps", "maxHops": hops}]}}]})).expect("parses");
            let expected: BTreeSet<String> = all.iter().filter(|id| forward(&h, id, hops).contains(&target)).cloned().collect();
            prop_assert_eq!(ids(search::scan(&h.state, "service", &q, NOW).expect("scan")), expected);

            // Upstream of the target: what it depends on, at any depth up to 15 hops (itself excluded).
            let q = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service",
                "value": target, "direction": "upstream"}]})).expect("parses");
            let mut expected = forward(&h, &target, 15);
            expected.remove(&target);
            if h.state.entity("service", &target).is_none() {
                expected.clear();
            }
            prop_assert_eq!(ids(search::scan(&h.state, "service", &q, NOW).expect("scan")), expected);

            // Downstream: what depends on it.
            let q = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service",
                "value": target, "direction": "downstream"}]})).expect("parses");
            let expected: BTreeSet<String> = if h.state.entity("service", &target).is_none() {
                BTreeSet::new()
            } else {
                all.iter().filter(|id| **id != target && forward(&h, id, 15).contains(&target)).cloned().collect()
            };
            prop_assert_eq!(ids(search::scan(&h.state, "service", &q, NOW).expect("scan")), expected);
        }
    }

    /// Hops wide enough to be looked up on two threads find what a forward walk finds.
    #[test]
    fn wide_walks_agree_with_forward_walks() {
        let mut h = catalog();
        // Written in order, so every relation's target already exists.
        let mut write = |id: String, deps: Vec<String>| {
            h.write("service", json!({"identifier": id, "relations": {"deps": deps}}), WriteMode::Upsert)
                .expect("write");
        };
        let n = 8200; // over graph::PARALLEL_FRONTIER
        write("hub".into(), vec![]);
        for i in 0..n {
            write(format!("a{i}"), vec!["hub".into()]);
        }
        for i in 0..n {
            write(format!("b{i}"), vec![format!("a{i}"), format!("a{}", (i + 1) % n)]);
        }
        for i in 0..10 {
            write(format!("c{i}"), vec![format!("b{}", i * 7)]);
        }
        let all: Vec<String> = h.state.entities_of("service").map(|e| e.identifier.to_string()).collect();
        let q = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service",
            "value": "hub", "direction": "downstream"}]}))
        .expect("parses");
        let expected: BTreeSet<String> =
            all.iter().filter(|id| *id != "hub" && forward(&h, id, 15).contains("hub")).cloned().collect();
        assert_eq!(expected.len(), 2 * n + 10);
        assert_eq!(ids(search::scan(&h.state, "service", &q, NOW).expect("scan")), expected);
        // Upstream from every `c`: both directions of the rule at once.
        let q = Query::parse(&json!({"combinator": "and", "rules": [{"operator": "relatedTo", "blueprint": "service",
            "value": "a0"}]}))
        .expect("parses");
        let mut expected: BTreeSet<String> =
            all.iter().filter(|id| forward(&h, id, 15).contains("a0")).cloned().collect();
        expected.extend(forward(&h, "a0", 15));
        expected.remove("a0");
        assert_eq!(ids(search::scan(&h.state, "service", &q, NOW).expect("scan")), expected);
    }

    #[test]
    fn presets_expiry_and_property_schemas() {
        let mut h = catalog();
        h.blueprint(json!({"identifier": "cert", "title": "Cert", "schema": {"properties": {
            "expires": {"type": "string", "format": "date-time"},
            "repo": {"type": "string", "format": "url"},
            "docs": {"type": "string", "format": "url"}}}}));
        for (id, expires, repo, docs) in [
            ("old", "2027-01-01T00:00:00Z", "https://git.example.com/a", "https://docs.example.com/a"),
            ("soon", "2027-01-16T10:00:00Z", "https://svn.example.com/b", "https://git.example.com/docs"),
            ("later", "2028-06-01T00:00:00Z", "https://svn.example.com/c", "https://docs.example.com/c"),
        ] {
            h.write(
                "cert",
                json!({"identifier": id, "properties": {"expires": expires, "repo": repo, "docs": docs}}),
                WriteMode::Create,
            )
            .expect("cert");
        }
        let now = Timestamp::parse("2027-01-15T12:00:00Z").expect("now");
        let run = |q: Value| -> BTreeSet<String> {
            let q = Query::parse(&q).expect("parses");
            ids(search::scan(&h.state, "cert", &q, now).expect("scan"))
        };
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"property": "expires", "operator": "isExpired"}]})),
            set(&["old"])
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"property": "expires", "operator": "isNotExpired"}]})),
            set(&["later", "soon"])
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"property": "expires", "operator": "between",
            "value": {"preset": "nextWeek", "timeZone": "UTC"}}]})),
            set(&["soon"])
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"property": "expires", "operator": "=",
            "value": {"preset": "tomorrow", "timeZone": "Asia/Tokyo"}}]})),
            set(&["soon"]),
            "16 Jan in Tokyo runs 15:00Z-15:00Z"
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"propertySchema": {"type": "string", "format": "url"},
            "operator": "contains", "value": "git."}]})),
            set(&["old", "soon"])
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"propertySchema": {"type": "string", "format": "url"},
            "operator": "!=", "value": "https://svn.example.com/c"}]})),
            set(&["old", "soon"])
        );
        assert_eq!(
            run(json!({"combinator": "and", "rules": [{"scorecard": "ownership", "operator": "isEmpty"}]})).len(),
            3,
            "no scorecards yet: every entity is without a level"
        );
    }
}

mod aggregates {
    use super::*;
    use berth_engine::aggregate::{Aggregation, Func, GroupBy, aggregate};
    use berth_model::query::Query;
    use proptest::prelude::*;

    fn run(h: &Harness, func: Func, rules: Value, group: Option<GroupBy>) -> (Value, Option<Vec<(Value, usize)>>) {
        let query = Query::parse(&json!({"combinator": "and", "rules": rules})).expect("parses");
        let agg = Aggregation { func, query, property: None, group_by: group, per: None, measure_time_by: None };
        let out = aggregate(&h.state, &agg, NOW).expect("aggregate");
        (out.result, out.values)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Counts and facets read from the indexes equal the ones computed by visiting every entity (a
        /// no-op rule forces the visit).
        #[test]
        fn index_answers_equal_visits(
            services in prop::collection::vec((0u8..20, prop::option::of(0u8..3), prop::option::of(0u8..4)), 0..30),
            wanted in prop::collection::vec(0u8..4, 1..3),
            bounds in prop::collection::vec((0usize..4, -1i8..5), 1..3),
        ) {
            let mut h = catalog();
            for (id, lang, replicas) in services {
                let mut props = serde_json::Map::new();
                if let Some(l) = lang {
                    props.insert("lang".into(), json!(["go", "rust", "go"][l as usize]));
                }
                if let Some(r) = replicas {
                    props.insert("replicas".into(), json!(r));
                }
                h.write("service", json!({"identifier": format!("s{id}"), "properties": props}), WriteMode::Upsert).expect("write");
            }
            let bp = json!({"property": "$blueprint", "operator": "=", "value": "service"});
            let noop = json!({"property": "$identifier", "operator": "isNotEmpty"});
            prop_assert_eq!(run(&h, Func::Count, json!([bp]), None), run(&h, Func::Count, json!([bp, noop]), None));
            let rule = json!({"property": "replicas", "operator": "in", "value": wanted});
            prop_assert_eq!(run(&h, Func::Count, json!([bp, rule]), None), run(&h, Func::Count, json!([bp, rule, noop]), None));
            // Number ranges counted on the ordered index.
            let ops = [">", ">=", "<", "<="];
            let mut ranged = vec![bp.clone()];
            ranged.extend(bounds.iter().map(|(op, v)| json!({"property": "replicas", "operator": ops[*op], "value": v})));
            let mut visited = ranged.clone();
            visited.push(noop.clone());
            prop_assert_eq!(run(&h, Func::Count, json!(ranged), None), run(&h, Func::Count, json!(visited), None));
            for p in ["lang", "replicas"] {
                let g = || Some(GroupBy::Property(p.into()));
                prop_assert_eq!(run(&h, Func::CountValues, json!([bp]), g()), run(&h, Func::CountValues, json!([bp, noop]), g()));
            }
        }
    }
}

/// Every body the engine accepts can be read back: its events encode, decode, replay, snapshot and load to
/// the same catalog, however deep or odd its property values (the security review's C2).
mod accepted_bodies_round_trip {
    use super::*;
    use proptest::prelude::*;

    /// A state built from `log` the way a restart builds one: every event encoded, decoded and applied.
    pub(super) fn replay(log: &[Event]) -> Result<State, String> {
        let mut state = State::default();
        for ev in log {
            let bytes =
                berth_engine::encode_event(ev).map_err(|e| format!("an accepted event does not encode: {e}"))?;
            let back = berth_engine::decode_event(ev.seq, &bytes)
                .map_err(|e| format!("an accepted event does not decode: {e}"))?;
            state.apply(&back).map_err(|e| format!("an accepted event does not replay: {e}"))?;
        }
        Ok(state)
    }

    /// [`value`], for the other round-trip tests.
    pub(super) fn value_for_tests() -> impl Strategy<Value = Value> {
        value()
    }

    /// JSON values, some nested past every limit (a chain up to 130 levels around a random leaf).
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        let tree = leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z$.]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        (tree, 0usize..130, any::<bool>()).prop_map(|(v, depth, arrays)| {
            (0..depth).fold(v, |v, _| if arrays { json!([v]) } else { json!({ "k": v }) })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn accepted_writes_decode_replay_and_snapshot(doc in value(), list in value(), title in prop::option::of("\\PC{0,20}")) {
            let mut h = Harness::new();
            h.blueprint(json!({"identifier": "cfg", "title": "Cfg", "schema": {"properties": {
                "doc": {"type": "object"}, "list": {"type": "array"}, "any": {"type": "string"}}}}));
            let body = json!({"identifier": "c1", "title": title, "properties": {"doc": doc, "list": list}});
            let accepted = match EntityInput::from_value(&body) {
                Ok(input) => h.run(Command::WriteEntity {
                    blueprint: "cfg".into(), path_id: None, input, mode: WriteMode::Upsert, create_missing_related: false,
                }).is_ok(),
                Err(_) => false,
            };
            let replayed = replay(&h.log);
            prop_assert!(replayed.is_ok(), "{}", replayed.as_ref().err().cloned().unwrap_or_default());
            let replayed = replayed.expect("replayed");
            let snap = replayed.to_snapshot().expect("snapshot");
            let loaded = State::from_snapshot(&snap).expect("the snapshot loads");
            prop_assert_eq!(loaded.digest(), h.state.digest());
            prop_assert_eq!(loaded.entity("cfg", "c1").is_some(), accepted);
        }
    }
}

/// Pages, the first definition object: whatever body is sent (odd types, deep values, many widgets), the
/// write is accepted or refused without a panic, and what is accepted encodes, decodes, replays, snapshots and
/// loads to the same catalog; widget edits too. A page's parser's property test.
mod page_bodies_round_trip {
    use super::accepted_bodies_round_trip::replay;
    use super::*;
    use berth_engine::definitions::DefinitionWrite;
    use berth_model::DefinitionKind;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Value> {
        let widget = prop_oneof![
            ("[a-c]{0,2}", "[a-z-]{0,8}", super::accepted_bodies_round_trip::value_for_tests())
                .prop_map(|(id, ty, extra)| json!({"id": id, "type": ty, "extra": extra})),
            "[a-z]{1,6}".prop_map(|ty| json!({"type": ty})),
            super::accepted_bodies_round_trip::value_for_tests(),
        ];
        (
            prop::option::of("\\PC{0,30}"),
            prop::option::of(prop_oneof![
                Just(json!("dashboard")),
                Just(json!("entity")),
                Just(json!("home")),
                Just(json!(3))
            ]),
            prop::option::of(prop_oneof![Just(json!("svc")), Just(json!("nope")), Just(json!(null))]),
            prop::collection::vec(widget, 0..110),
            super::accepted_bodies_round_trip::value_for_tests(),
        )
            .prop_map(|(title, ty, blueprint, widgets, extra)| {
                let mut b = json!({"widgets": widgets, "extra": extra});
                if let Some(t) = title {
                    b["title"] = json!(t);
                }
                if let Some(t) = ty {
                    b["type"] = t;
                }
                if let Some(bp) = blueprint {
                    b["blueprint"] = bp;
                }
                b
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn accepted_pages_decode_replay_and_snapshot(first in body(), second in body(), patch in super::accepted_bodies_round_trip::value_for_tests()) {
            let mut h = Harness::new();
            h.blueprint(json!({"identifier": "svc", "title": "Svc", "schema": {"properties": {}}}));
            let write = |h: &mut Harness, how: DefinitionWrite| h.run(Command::WriteDefinition { kind: DefinitionKind::Page, identifier: "p1".into(), how });
            let created = write(&mut h, DefinitionWrite::Create(first)).is_ok();
            let _ = write(&mut h, DefinitionWrite::Upsert(second));
            let widget = h.state.definition(DefinitionKind::Page, "p1")
                .and_then(|d| d.body["widgets"].get(0).and_then(|w| w["id"].as_str()).map(str::to_string));
            if let Some(id) = widget {
                let _ = write(&mut h, DefinitionWrite::Part { id: id.clone(), patch: Some(patch) });
                let _ = write(&mut h, DefinitionWrite::Part { id, patch: None });
            }
            let replayed = replay(&h.log);
            prop_assert!(replayed.is_ok(), "{}", replayed.as_ref().err().cloned().unwrap_or_default());
            let replayed = replayed.expect("replayed");
            let loaded = State::from_snapshot(&replayed.to_snapshot().expect("snapshot")).expect("the snapshot loads");
            prop_assert_eq!(loaded.digest(), h.state.digest());
            if created {
                let page = loaded.definition(DefinitionKind::Page, "p1");
                prop_assert!(page.is_some());
                let widgets = page.expect("page").body["widgets"].as_array().cloned().unwrap_or_default();
                prop_assert!(widgets.len() <= 100);
                let ids: std::collections::HashSet<&str> = widgets.iter().filter_map(|w| w["id"].as_str()).collect();
                prop_assert_eq!(ids.len(), widgets.len(), "every widget has an id of its own");
            }
        }
    }
}

/// A search past its deadline answers `DeadlinePassed`, never a partial result; without one it is untouched.
#[test]
fn searches_stop_at_their_deadline() {
    use berth_engine::search;
    use berth_model::query::Query;
    let mut h = catalog();
    for i in 0..3_000 {
        h.write(
            "service",
            json!({"identifier": format!("s{i}"), "properties": {"replicas": i % 7}}),
            WriteMode::Upsert,
        )
        .expect("write");
    }
    let q = Query::parse(&json!({"combinator": "and", "rules": [
        {"property": "$blueprint", "operator": "=", "value": "service"},
        {"property": "replicas", "operator": "notIn", "value": [1, 2]}]}))
    .expect("query");
    let count = || {
        let mut n = 0;
        search::for_each_match(&h.state, &q, NOW, |_| n += 1).expect("search");
        n
    };
    let all = count();
    assert!(all > 2_000);
    let past = std::time::Instant::now();
    assert_eq!(search::with_deadline(past, count), Err(search::DeadlinePassed));
    let later = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    assert_eq!(search::with_deadline(later, count), Ok(all));
    assert_eq!(count(), all, "a passed deadline does not outlive its search");
    // A scan through a caller's view (the UI's pickers and filter choices) stops at the deadline too.
    let admin = berth_engine::access::Principal { id: "a".into(), roles: vec!["Admin".into()], teams: vec![] };
    let scoped = berth_engine::scoped::Scoped::new(&h.state, admin, NOW);
    assert_eq!(search::with_deadline(past, || scoped.entities_of("service").count()), Err(search::DeadlinePassed));
    assert_eq!(search::with_deadline(later, || scoped.entities_of("service").count()), Ok(3_000));
}

/// L7: an invitation code stops working 7 days after the invitation, even if never used.
#[test]
fn invitations_expire_after_seven_days() {
    use berth_model::user::{INVITATION_LIFETIME_MS, UserStatus};
    let mut h = Harness::new();
    let invited = berth_model::User {
        email: "new@example.com".into(),
        first_name: String::new(),
        last_name: String::new(),
        status: UserStatus::Invited,
        roles: vec!["Member".into()],
        password_hash: None,
        invite_sha256: Some("code-sha".into()),
        session_epoch: 0,
        sso: None,
        created_at: Timestamp::from_millis(0),
        updated_at: Timestamp::from_millis(0),
    };
    h.run(Command::InviteUser { user: invited, teams: Vec::new() }).expect("invite");
    let invited_at = h.state.user("new@example.com").expect("user").created_at;
    let accept = Command::SetPassword {
        email: "new@example.com".into(),
        password_hash: "$argon2id$hash".into(),
        invite_sha256: Some("code-sha".into()),
    };
    let at = |ms: i64| WriteMeta { now: Timestamp::from_millis(invited_at.millis() + ms), ..h.meta() };
    let late = execute(&h.state, &at(INVITATION_LIFETIME_MS + 1), &accept);
    assert!(matches!(late, Err(DomainError::Unauthorized(m)) if m.contains("expired")));
    assert!(execute(&h.state, &at(INVITATION_LIFETIME_MS - 1), &accept).is_ok(), "on the last day it works");
}

/// Single sign-on: the first sign-in creates the user and the teams it needs; later ones sync roles and the
/// managed teams only, write nothing when nothing changed, never demote the last Admin, and refuse a
/// disabled user or another identity claiming the email.
#[test]
fn sso_sign_ins_create_link_and_sync_users() {
    use berth_engine::SsoSignIn;
    use berth_model::{SsoIdentity, Team, user::UserStatus};
    let mut h = Harness::new();
    let sign_in = |roles: Option<Vec<&str>>, teams: &[&str]| SsoSignIn {
        email: "ann@example.com".into(),
        identity: SsoIdentity { issuer: "https://idp".into(), subject: "1".into() },
        first_name: "Ann".into(),
        last_name: String::new(),
        roles: roles.map(|r| r.into_iter().map(str::to_string).collect()),
        default_roles: vec!["Member".into()],
        managed_teams: vec!["payments".into(), "platform".into()],
        teams: teams.iter().map(|t| t.to_string()).collect(),
    };
    let run = |h: &mut Harness, s: SsoSignIn| h.run(Command::SsoSignIn { sign_in: Box::new(s) });
    let now = Timestamp::from_millis(0);
    let manual = Team { name: "manual".into(), description: None, members: vec![], created_at: now, updated_at: now };
    h.run(Command::PutTeam { team: manual, create: true }).expect("team");

    let Outcome::User(u) = run(&mut h, sign_in(Some(vec!["Admin"]), &["payments"])).expect("first") else { panic!() };
    assert_eq!(
        (u.status, u.roles.clone(), u.first_name.as_str()),
        (UserStatus::Active, vec!["Admin".to_string()], "Ann")
    );
    assert!(u.password_hash.is_none() && u.sso.is_some());
    assert_eq!(h.state.team("payments").expect("created").members, ["ann@example.com"]);
    assert!(h.state.team("platform").is_none(), "a managed team nobody needs is not created");
    // An Admin adds her to a team single sign-on does not manage: later sign-ins leave it.
    h.run(Command::UpdateUser {
        email: "ann@example.com".into(),
        changes: berth_engine::UserChanges {
            teams: Some(vec!["payments".into(), "manual".into()]),
            ..Default::default()
        },
    })
    .expect("teams");
    let before = h.log.len();
    run(&mut h, sign_in(Some(vec!["Admin"]), &["payments"])).expect("again");
    assert_eq!(h.log.len(), before, "nothing changed, nothing written");
    // She is the only Admin user, and there is no Admin credential: the provider cannot demote her.
    let Outcome::User(u) = run(&mut h, sign_in(Some(vec!["Member"]), &["platform"])).expect("moved") else { panic!() };
    assert!(u.is_admin(), "the last Admin keeps Admin");
    assert_eq!(h.state.team("payments").expect("kept").members, Vec::<String>::new());
    assert_eq!(h.state.team("platform").expect("created").members, ["ann@example.com"]);
    assert_eq!(h.state.team("manual").expect("kept").members, ["ann@example.com"], "not managed: untouched");
    // No role mapping: roles stay as they are.
    let Outcome::User(u) = run(&mut h, sign_in(None, &["platform"])).expect("no roles") else { panic!() };
    assert!(u.is_admin());
    // Another account claiming her email.
    let mut other = sign_in(None, &[]);
    other.identity.subject = "2".into();
    assert!(matches!(run(&mut h, other), Err(DomainError::Unauthorized(m)) if m.contains("another")));
    // A second Admin exists: now the provider may demote her; then disabled, she may not sign in.
    let mut bob = sign_in(Some(vec!["Admin"]), &[]);
    bob.email = "bob@example.com".into();
    bob.identity.subject = "b".into();
    run(&mut h, bob).expect("bob");
    let Outcome::User(u) = run(&mut h, sign_in(Some(vec!["Member"]), &[])).expect("demoted") else { panic!() };
    assert!(!u.is_admin());
    h.run(Command::UpdateUser {
        email: "ann@example.com".into(),
        changes: berth_engine::UserChanges { status: Some(UserStatus::Disabled), ..Default::default() },
    })
    .expect("disable");
    assert!(matches!(run(&mut h, sign_in(None, &[])), Err(DomainError::Unauthorized(m)) if m.contains("disabled")));
    // Re-enabled by an Admin although she has no password: she signs in with single sign-on.
    h.run(Command::UpdateUser {
        email: "ann@example.com".into(),
        changes: berth_engine::UserChanges { status: Some(UserStatus::Active), ..Default::default() },
    })
    .expect("a single sign-on user may be re-enabled");
    // Replaying the log builds the same users and teams.
    let mut replayed = berth_engine::State::default();
    for ev in &h.log {
        replayed.apply(ev).expect("replay");
    }
    assert_eq!(replayed.user("ann@example.com"), h.state.user("ann@example.com"));
    assert_eq!(replayed.team("platform"), h.state.team("platform"));
}
