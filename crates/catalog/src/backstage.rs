//! The catalog as Backstage's catalog API shows it: every entity in Backstage's shape, in reference order,
//! with postings for the fields filters use most (`kind`, `metadata.name`, `metadata.namespace`,
//! `spec.type`, `spec.lifecycle`, `spec.owner`, `spec.system`, `metadata.tags`), so a filtered page or a facet
//! reads the entities that match, not the catalog. Kept current with the published state (caught up from the
//! entities that changed; rebuilt when a blueprint changes). The caller's read scope is applied by the route
//! that answers: this index names entities, it decides nothing about who sees them.
//!
//! **Shape.** An entity `berth import backstage` wrote (its blueprint has the `descriptor` and `source`
//! properties) is its descriptor as authored, with `metadata.namespace` and the relations Backstage derives.
//! Any other: kind = its blueprint, namespace `default`, name = its identifier, `metadata.title`, `spec` = its
//! properties (and `owner` = its first team as `group:default/<team>`), relations = its Berth relations. Both
//! get a stable `metadata.uid` and an `etag` that changes with every write.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use berth_engine::State;
use berth_model::Entity;
use berth_model::backstage::{self, EntityRef, Filter};
use serde_json::{Map, Value, json};
use sha2::Digest;

/// The filter keys with postings.
pub const INDEXED: [&str; 8] = [
    "kind",
    "metadata.name",
    "metadata.namespace",
    "spec.type",
    "spec.lifecycle",
    "spec.owner",
    "spec.system",
    "metadata.tags",
];

/// One entity as Backstage shows it.
#[derive(Clone, Debug)]
pub struct Item {
    pub blueprint: Arc<str>,
    pub identifier: Arc<str>,
    pub doc: Value,
    /// The Berth relations' targets of a Port-made entity, `(blueprint, identifier)` per entry of
    /// `doc.relations`, so an answer can leave out those its caller may not read.
    pub targets: Vec<(String, String)>,
}

/// The index: items by reference key (`kind:namespace/name`, lower-cased), postings per indexed field.
#[derive(Default)]
pub struct Index {
    items: BTreeMap<Arc<str>, Item>,
    refs: HashMap<(Arc<str>, Arc<str>), Arc<str>>,
    postings: HashMap<(&'static str, String), BTreeSet<Arc<str>>>,
    shape: Shape,
}

/// What the index's shape depends on: each blueprint, whether it is imported, its relations' targets.
type Shape = Vec<(String, bool, Vec<(String, String)>)>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable uid (a UUID's shape) for an entity.
pub fn uid(blueprint: &str, identifier: &str) -> String {
    let h = hex(&sha2::Sha256::digest(format!("{blueprint}\n{identifier}").as_bytes())[..16]);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Whether a blueprint holds entities `berth import backstage` wrote.
pub fn imported(state: &State, blueprint: &str) -> bool {
    state.blueprint(blueprint).is_some_and(|b| {
        let p = &b.def.schema.properties;
        p.contains_key("descriptor") && p.contains_key("source")
    })
}

fn shape_of(state: &State) -> Shape {
    state
        .blueprints()
        .map(|b| {
            let id = b.def.identifier.clone();
            let rels = b.def.relations.iter().map(|(k, r)| (k.clone(), r.target.clone())).collect();
            (id.clone(), imported(state, &id), rels)
        })
        .collect()
}

/// `kind:namespace/name`, lower-cased, of a document.
pub fn ref_of(doc: &Value) -> String {
    format!(
        "{}:{}/{}",
        doc["kind"].as_str().unwrap_or_default(),
        doc["metadata"]["namespace"].as_str().unwrap_or(backstage::DEFAULT_NAMESPACE),
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
    .to_lowercase()
}

/// An entity in Backstage's shape, and its Berth relations' targets.
pub fn item_of(state: &State, e: &Entity) -> Item {
    let bp = &*e.blueprint;
    let etag = hex(&sha2::Sha256::digest(format!("{}\n{}", e.updated_at.millis(), e.identifier).as_bytes())[..10]);
    let mut targets = Vec::new();
    let mut doc = if imported(state, bp) {
        let d = e.properties.get("descriptor").cloned().unwrap_or_else(|| json!({}));
        let mut v =
            json!({"apiVersion": d["apiVersion"], "kind": d["kind"], "metadata": d["metadata"], "spec": d["spec"]});
        if !v["metadata"].is_object() {
            v["metadata"] = json!({});
        }
        v["metadata"]["namespace"] =
            e.properties.get("namespace").cloned().unwrap_or_else(|| json!(backstage::DEFAULT_NAMESPACE));
        let relations: Vec<Value> = e
            .properties
            .get("relations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| {
                let mut out = json!({"type": r["type"], "targetRef": r["targetRef"]});
                if let Some(t) = r["targetRef"].as_str().and_then(|t| EntityRef::parse(t, None, "default").ok()) {
                    out["target"] = json!({"kind": t.kind, "namespace": t.namespace, "name": t.name});
                }
                out
            })
            .collect();
        v["relations"] = Value::Array(relations);
        v
    } else {
        let mut spec: Map<String, Value> = e.properties.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        if let Some(team) = e.team.first() {
            spec.insert("owner".into(), json!(format!("group:default/{team}")));
        }
        let mut relations = Vec::new();
        if let Some(def) = state.blueprint(bp) {
            for (name, value) in e.relations.iter() {
                let target_bp = def.def.relations.get(name).map(|r| r.target.clone()).unwrap_or_default();
                let ids: Vec<&str> = match value {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                for id in ids {
                    relations
                        .push(json!({"type": name, "targetRef": format!("{}:default/{id}", target_bp.to_lowercase()),
                        "target": {"kind": target_bp, "namespace": "default", "name": id}}));
                    targets.push((target_bp.clone(), id.to_string()));
                }
            }
        }
        json!({"apiVersion": "berth.io/v1", "kind": bp,
            "metadata": {"name": &*e.identifier, "namespace": backstage::DEFAULT_NAMESPACE, "title": e.title,
                "annotations": {"berth.io/blueprint": bp}},
            "spec": spec, "relations": relations})
    };
    doc["metadata"]["uid"] = json!(uid(bp, &e.identifier));
    doc["metadata"]["etag"] = json!(etag);
    Item { blueprint: e.blueprint.clone(), identifier: e.identifier.clone(), doc, targets }
}

impl Index {
    pub fn build(state: &State) -> Index {
        let mut index = Index { shape: shape_of(state), ..Index::default() };
        for b in state.blueprints() {
            for e in state.entities_of(&b.def.identifier) {
                index.insert(item_of(state, e));
            }
        }
        index
    }

    /// Moves the index from `older` to `newer` (a later version of the same catalog).
    pub fn catch_up(&mut self, older: &State, newer: &State) {
        if shape_of(newer) != self.shape {
            *self = Index::build(newer);
            return;
        }
        for b in newer.blueprints() {
            for (id, before, after) in newer.entity_changes(older, &b.def.identifier) {
                if before.is_some() {
                    self.remove(&b.def.identifier, id);
                }
                if let Some(e) = after {
                    self.insert(item_of(newer, e));
                }
            }
        }
    }

    fn insert(&mut self, item: Item) {
        let key: Arc<str> = Arc::from(ref_of(&item.doc));
        // Two entities with one reference (a kind named twice): the first in (blueprint, identifier) order
        // keeps it.
        if self.items.contains_key(&key) {
            return;
        }
        for field in INDEXED {
            for v in backstage::values_at(&item.doc, field) {
                self.postings.entry((field, v.to_lowercase())).or_default().insert(Arc::clone(&key));
            }
        }
        self.refs.insert((item.blueprint.clone(), item.identifier.clone()), Arc::clone(&key));
        self.items.insert(key, item);
    }

    fn remove(&mut self, blueprint: &str, identifier: &Arc<str>) {
        let Some(key) = self.refs.remove(&(Arc::from(blueprint), Arc::clone(identifier))) else { return };
        if let Some(item) = self.items.remove(&key) {
            for field in INDEXED {
                for v in backstage::values_at(&item.doc, field) {
                    let k = (field, v.to_lowercase());
                    if let Some(set) = self.postings.get_mut(&k) {
                        set.remove(&key);
                        if set.is_empty() {
                            self.postings.remove(&k);
                        }
                    }
                }
            }
        }
    }

    /// The entity a reference key names.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.items.get(key)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Every item, in reference order.
    pub fn all(&self) -> impl Iterator<Item = &Item> {
        self.items.values()
    }

    /// The items that pass `filter`, in reference order: each alternative's indexed conditions narrow it
    /// to their postings (values of one key united, keys intersected), the rest are checked on the items.
    pub fn select(&self, filter: &Filter) -> Vec<&Item> {
        if filter.0.is_empty() {
            return self.items.values().collect();
        }
        let mut keys: Vec<&Arc<str>> = Vec::new();
        let empty = BTreeSet::new();
        for set in &filter.0 {
            let one = Filter(vec![set.clone()]);
            // Indexed keys with a value: each key's postings (one per value: alternatives).
            let mut by_key: BTreeMap<&'static str, Vec<&BTreeSet<Arc<str>>>> = BTreeMap::new();
            for (k, v) in set {
                let Some(v) = v else { continue };
                let Some(field) = INDEXED.iter().find(|f| f.eq_ignore_ascii_case(k)) else { continue };
                by_key.entry(field).or_default().push(self.postings.get(&(*field, v.to_lowercase())).unwrap_or(&empty));
            }
            let mut lists: Vec<Vec<&BTreeSet<Arc<str>>>> = by_key.into_values().collect();
            lists.sort_by_key(|l| l.iter().map(|p| p.len()).sum::<usize>());
            // When every condition is an indexed key with a value, the postings are the answer.
            let exact = !lists.is_empty()
                && set.iter().all(|(k, v)| v.is_some() && INDEXED.iter().any(|f| f.eq_ignore_ascii_case(k)));
            let admit = |k: &Arc<str>| {
                lists.iter().skip(1).all(|l| l.iter().any(|p| p.contains(k)))
                    && (exact || self.items.get(k).is_some_and(|item| one.matches(&item.doc)))
            };
            match lists.first() {
                None => keys.extend(self.items.iter().filter(|(_, item)| one.matches(&item.doc)).map(|(k, _)| k)),
                Some(first) if first.len() == 1 => keys.extend(first[0].iter().filter(|k| admit(k))),
                Some(first) => {
                    let union: BTreeSet<&Arc<str>> = first.iter().flat_map(|p| p.iter()).collect();
                    keys.extend(union.into_iter().filter(|k| admit(k)));
                }
            }
        }
        // Alternatives: united, in reference order (one set's keys come out in order already).
        if filter.0.len() > 1 {
            keys.sort();
            keys.dedup();
        }
        keys.into_iter().filter_map(|k| self.items.get(k)).collect()
    }
}

/// The Backstage index kept current with the published state.
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
    use berth_engine::{Command, WriteMeta, WriteMode};
    use berth_model::{EntityInput, Origin, Timestamp};

    fn apply(state: &mut State, n: &mut i64, cmd: Command) {
        *n += 1;
        let meta = WriteMeta {
            actor: "t".into(),
            origin: Origin::Api,
            now: Timestamp::from_millis(1_700_000_000_000 + *n),
            datasource: None,
            run_id: None,
            principal: None,
        };
        berth_engine::execute_and_apply(state, &meta, &cmd).expect("written");
    }

    fn upsert(bp: &str, body: Value) -> Command {
        Command::WriteEntity {
            blueprint: bp.into(),
            path_id: None,
            input: EntityInput::from_value(&body).expect("input"),
            mode: WriteMode::Upsert,
            create_missing_related: false,
        }
    }

    fn component(ns: &str, name: &str, kind_type: &str) -> Value {
        json!({"identifier": format!("{ns}/{name}"), "properties": {"name": name, "namespace": ns, "source": "s", "type": kind_type,
            "descriptor": {"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
                "spec": {"type": kind_type, "owner": "team-a"}},
            "relations": [{"type": "ownedBy", "targetRef": "group:default/team-a"}]}})
    }

    fn names(items: Vec<&Item>) -> Vec<String> {
        items.iter().map(|i| ref_of(&i.doc)).collect()
    }

    #[test]
    fn the_index_answers_filters_and_stays_equal_to_a_fresh_build() {
        let mut state = State::default();
        let mut n = 0;
        let props = json!({"name": {"type": "string"}, "namespace": {"type": "string"}, "source": {"type": "string"},
            "type": {"type": "string"}, "descriptor": {"type": "object"}, "relations": {"type": "array"}});
        apply(
            &mut state,
            &mut n,
            Command::CreateBlueprint {
                body: json!({"identifier": "component", "title": "C", "schema": {"properties": props}}),
            },
        );
        apply(
            &mut state,
            &mut n,
            Command::CreateBlueprint {
                body: json!({"identifier": "service", "title": "S", "schema": {"properties": {"tier": {"type": "string"}}}}),
            },
        );
        for (ns, name, t) in [("default", "a", "service"), ("default", "b", "website"), ("shop", "c", "service")] {
            apply(&mut state, &mut n, upsert("component", component(ns, name, t)));
        }
        apply(
            &mut state,
            &mut n,
            upsert("service", json!({"identifier": "svc", "team": ["core"], "properties": {"tier": "gold"}})),
        );
        let mut index = Index::build(&state);
        let f = |ps: &[&str]| Filter::parse(&ps.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("filter");
        assert_eq!(
            names(index.select(&f(&["kind=component,spec.type=service"]))),
            ["component:default/a", "component:shop/c"]
        );
        assert_eq!(names(index.select(&f(&["kind=service"]))), ["service:default/svc"]);
        assert_eq!(
            index.get("service:default/svc").map(|i| i.doc["spec"]["owner"].clone()),
            Some(json!("group:default/core"))
        );
        assert_eq!(names(index.select(&f(&["metadata.namespace=SHOP"]))), ["component:shop/c"], "no case");
        assert_eq!(
            names(index.select(&f(&["spec.tier=gold", "metadata.name=b"]))),
            ["component:default/b", "service:default/svc"],
            "unindexed keys too"
        );

        let older = state.clone();
        apply(&mut state, &mut n, upsert("component", component("default", "b", "service")));
        apply(&mut state, &mut n, upsert("component", component("default", "d", "library")));
        apply(
            &mut state,
            &mut n,
            Command::DeleteEntity {
                blueprint: "component".into(),
                identifier: "shop/c".into(),
                delete_dependents: false,
            },
        );
        index.catch_up(&older, &state);
        let fresh = Index::build(&state);
        for filter in
            [&["kind=component,spec.type=service"][..], &["spec.type=library"], &[], &["metadata.namespace=shop"]]
        {
            assert_eq!(names(index.select(&f(filter))), names(fresh.select(&f(filter))), "{filter:?}");
        }
        assert_eq!(
            names(index.select(&f(&["kind=component,spec.type=service"]))),
            ["component:default/a", "component:default/b"]
        );
        assert_eq!(index.len(), 4);
    }
}
