//! The catalog as Backstage's catalog API shows it: every entity in Backstage's shape, in reference order,
//! with postings for the fields filters and Backstage's pickers use most (`kind`, `metadata.name`,
//! `metadata.namespace`, `spec.type`, `spec.lifecycle`, `spec.owner`, `spec.system`, `metadata.tags`,
//! `relations.ownedBy`), so a filtered page or a facet
//! reads the entities that match, not the catalog. Kept current with the published state (caught up from the
//! entities that changed; rebuilt when a blueprint changes). The caller's read scope is applied by the route
//! that answers: this index names entities, it decides nothing about who sees them.
//!
//! **Shape.** An entity `berth import backstage` wrote (its blueprint has the `descriptor` and `source`
//! properties) is its descriptor as authored, with `metadata.namespace` and the relations Backstage derives.
//! Any other: kind = its blueprint, namespace `default`, name = its identifier, `metadata.title`, `spec` = its
//! properties (and `owner` = its first team as `group:default/<team>`), relations = its Berth relations. Both
//! get a stable `metadata.uid` and an `etag` that changes with every write.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_engine::State;
use berth_model::Entity;
use berth_model::backstage::{self, EntityRef, Filter};
use serde_json::{Map, Value, json};
use sha2::Digest;

/// The filter keys with postings.
pub const INDEXED: [&str; 9] = [
    "kind",
    "metadata.name",
    "metadata.namespace",
    "spec.type",
    "spec.lifecycle",
    "spec.owner",
    "spec.system",
    "metadata.tags",
    // The owner picker of Backstage's catalog page asks for this facet.
    "relations.ownedBy",
];

/// One entity as Backstage shows it.
#[derive(Clone, Debug)]
pub struct Item {
    /// Its reference key, `kind:namespace/name` lower-cased.
    pub key: Arc<str>,
    pub blueprint: Arc<str>,
    pub identifier: Arc<str>,
    pub doc: Value,
    /// The key of the `Location` entity it was read through (`berth import backstage`'s `parent`).
    pub parent: Option<String>,
    /// The Berth relations' targets of a Port-made entity, `(blueprint, identifier)` per entry of
    /// `doc.relations`, so an answer can leave out those its caller may not read.
    pub targets: Vec<(String, String)>,
}

/// The entities of one indexed field's value: slot numbers, ascending; and the value as first written
/// (postings are found by the value lower-cased, facets show it as authored).
#[derive(Default)]
struct Posting {
    shown: String,
    slots: Vec<u32>,
}

impl Posting {
    fn insert(&mut self, slot: u32) {
        if let Err(at) = self.slots.binary_search(&slot) {
            self.slots.insert(at, slot);
        }
    }

    fn remove(&mut self, slot: u32) {
        if let Ok(at) = self.slots.binary_search(&slot) {
            self.slots.remove(at);
        }
    }
}

/// A set of slots (the entities an answer selects), one bit each.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection(Vec<u64>);

impl Selection {
    fn empty(slots: usize) -> Selection {
        Selection(vec![0; slots.div_ceil(64)])
    }

    fn of(slots: usize, lists: &[&[u32]]) -> Selection {
        let mut s = Selection::empty(slots);
        for list in lists {
            for &slot in *list {
                s.set(slot);
            }
        }
        s
    }

    fn set(&mut self, slot: u32) {
        if let Some(w) = self.0.get_mut(slot as usize / 64) {
            *w |= 1 << (slot % 64);
        }
    }

    fn clear(&mut self, slot: u32) {
        if let Some(w) = self.0.get_mut(slot as usize / 64) {
            *w &= !(1 << (slot % 64));
        }
    }

    pub fn has(&self, slot: u32) -> bool {
        self.0.get(slot as usize / 64).is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn and(&mut self, other: &Selection) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= b;
        }
    }

    fn or(&mut self, other: &Selection) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// How many entities it holds.
    pub fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    i as u32 * 64 + bit
                })
            })
        })
    }
}

/// The index: items in numbered slots, their order by reference key, postings per indexed field and value
/// (lower-cased), slots per blueprint (to apply a read scope), slots per uid.
#[derive(Default)]
pub struct Index {
    slots: Vec<Option<Item>>,
    free: Vec<u32>,
    order: BTreeMap<Arc<str>, u32>,
    refs: HashMap<(Arc<str>, Arc<str>), u32>,
    uids: HashMap<String, u32>,
    postings: [HashMap<String, Posting>; INDEXED.len()],
    blueprints: HashMap<Arc<str>, Posting>,
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
    let parent = e
        .properties
        .get("parent")
        .and_then(Value::as_str)
        .filter(|_| imported(state, bp))
        .and_then(|p| EntityRef::parse(p, Some("location"), backstage::DEFAULT_NAMESPACE).ok())
        .map(|p| p.key());
    Item {
        key: Arc::from(ref_of(&doc)),
        blueprint: e.blueprint.clone(),
        identifier: e.identifier.clone(),
        doc,
        parent,
        targets,
    }
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
        // Two entities with one reference (a kind named twice): the first in (blueprint, identifier) order
        // keeps it.
        if self.order.contains_key(&item.key) {
            return;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        for (field, postings) in INDEXED.iter().zip(self.postings.iter_mut()) {
            for v in backstage::values_at(&item.doc, field) {
                postings
                    .entry(v.to_lowercase())
                    .or_insert_with(|| Posting { shown: v, slots: Vec::new() })
                    .insert(slot);
            }
        }
        self.blueprints.entry(item.blueprint.clone()).or_default().insert(slot);
        if let Some(uid) = item.doc["metadata"]["uid"].as_str() {
            self.uids.insert(uid.to_string(), slot);
        }
        self.refs.insert((item.blueprint.clone(), item.identifier.clone()), slot);
        self.order.insert(item.key.clone(), slot);
        self.slots[slot as usize] = Some(item);
    }

    fn remove(&mut self, blueprint: &str, identifier: &Arc<str>) {
        let Some(slot) = self.refs.remove(&(Arc::from(blueprint), Arc::clone(identifier))) else { return };
        let Some(item) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        for (field, postings) in INDEXED.iter().zip(self.postings.iter_mut()) {
            for v in backstage::values_at(&item.doc, field) {
                let k = v.to_lowercase();
                if let Some(p) = postings.get_mut(&k) {
                    p.remove(slot);
                    if p.slots.is_empty() {
                        postings.remove(&k);
                    }
                }
            }
        }
        if let Some(p) = self.blueprints.get_mut(blueprint) {
            p.remove(slot);
            if p.slots.is_empty() {
                self.blueprints.remove(blueprint);
            }
        }
        if let Some(uid) = item.doc["metadata"]["uid"].as_str() {
            self.uids.remove(uid);
        }
        self.order.remove(&item.key);
        self.free.push(slot);
    }

    fn item(&self, slot: u32) -> Option<&Item> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The entity a reference key names.
    pub fn get(&self, key: &str) -> Option<&Item> {
        self.order.get(key).and_then(|&slot| self.item(slot))
    }

    /// The entity with this `metadata.uid`.
    pub fn by_uid(&self, uid: &str) -> Option<&Item> {
        self.uids.get(uid).and_then(|&slot| self.item(slot))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Every entity.
    fn everything(&self) -> Selection {
        let mut s = Selection::empty(self.slots.len());
        for (slot, item) in self.slots.iter().enumerate() {
            if item.is_some() {
                s.set(slot as u32);
            }
        }
        s
    }

    /// The entities that pass `filter`: each alternative's indexed conditions are answered by their
    /// postings (values of one key united, keys intersected), the rest are checked on the entities left.
    pub fn select(&self, filter: &Filter) -> Selection {
        if filter.0.is_empty() {
            return self.everything();
        }
        let mut out = Selection::empty(self.slots.len());
        for set in &filter.0 {
            let one = Filter(vec![set.clone()]);
            let mut by_key: BTreeMap<usize, Vec<&[u32]>> = BTreeMap::new();
            for (k, v) in set {
                let Some(v) = v else { continue };
                let Some(field) = INDEXED.iter().position(|f| f.eq_ignore_ascii_case(k)) else { continue };
                let list = self.postings[field].get(&v.to_lowercase()).map_or(&[][..], |p| &p.slots[..]);
                by_key.entry(field).or_default().push(list);
            }
            // A key also asked alone (`kind=api,kind`: "or it exists") does not narrow by its values.
            for (k, v) in set {
                if v.is_none() {
                    if let Some(field) = INDEXED.iter().position(|f| f.eq_ignore_ascii_case(k)) {
                        by_key.remove(&field);
                    }
                }
            }
            let mut found = match by_key.values().next() {
                None => self.everything(),
                Some(first) => Selection::of(self.slots.len(), first),
            };
            for lists in by_key.values().skip(1) {
                found.and(&Selection::of(self.slots.len(), lists));
            }
            // When every condition is an indexed key with a value, the postings are the answer.
            let exact = set.iter().all(|(k, v)| v.is_some() && INDEXED.iter().any(|f| f.eq_ignore_ascii_case(k)));
            if !exact {
                for slot in found.clone().slots() {
                    if !self.item(slot).is_some_and(|item| one.matches(&item.doc)) {
                        found.clear(slot);
                    }
                }
            }
            out.or(&found);
        }
        out
    }

    /// Leaves out of `selection` what the caller may not read: entities of a blueprint it does not read
    /// whole (`reads_all`) are asked one by one (`readable`).
    pub fn restrict(
        &self,
        selection: &mut Selection,
        reads_all: impl Fn(&str) -> bool,
        readable: impl Fn(&Item) -> bool,
    ) {
        for (blueprint, p) in &self.blueprints {
            if reads_all(blueprint) {
                continue;
            }
            for &slot in &p.slots {
                if selection.has(slot) && !self.item(slot).is_some_and(&readable) {
                    selection.clear(slot);
                }
            }
        }
    }

    /// The selected entities in reference order, from the `offset`-th, at most `limit`.
    pub fn page(&self, selection: &Selection, offset: usize, limit: usize) -> Vec<&Item> {
        self.order
            .values()
            .filter(|&&slot| selection.has(slot))
            .skip(offset)
            .take(limit)
            .filter_map(|&slot| self.item(slot))
            .collect()
    }

    /// Every selected entity, in reference order.
    pub fn items(&self, selection: &Selection) -> Vec<&Item> {
        self.page(selection, 0, usize::MAX)
    }

    /// Each value of `field` among the selected entities and how many hold it (values compared without
    /// case, as filters compare them, and shown as first written; an entity counted once per value), most
    /// frequent first, then by value: from the postings for an indexed field, from the entities otherwise.
    pub fn facet(&self, selection: &Selection, field: &str) -> Vec<(String, usize)> {
        let mut list: Vec<(String, usize)> = match INDEXED.iter().position(|f| f.eq_ignore_ascii_case(field)) {
            Some(i) => self.postings[i]
                .values()
                .map(|p| (p.shown.clone(), p.slots.iter().filter(|&&s| selection.has(s)).count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
            None => {
                // As the postings do: values without case, shown as first found.
                let mut counts: HashMap<String, (String, usize)> = HashMap::new();
                for slot in selection.slots() {
                    let Some(item) = self.item(slot) else { continue };
                    let mut values: BTreeMap<String, String> = BTreeMap::new();
                    for v in backstage::values_at(&item.doc, field) {
                        values.entry(v.to_lowercase()).or_insert(v);
                    }
                    for (lower, shown) in values {
                        counts.entry(lower).or_insert((shown, 0)).1 += 1;
                    }
                }
                counts.into_values().collect()
            }
        };
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        list
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
    use berth_engine::Command;
    use berth_model::Timestamp;

    use crate::test_writes::apply;

    fn upsert(bp: &str, body: Value) -> Command {
        crate::test_writes::upsert(bp, body, false)
    }

    fn component(ns: &str, name: &str, kind_type: &str) -> Value {
        json!({"identifier": format!("{ns}/{name}"), "properties": {"name": name, "namespace": ns, "source": "s", "type": kind_type,
            "descriptor": {"apiVersion": "backstage.io/v1alpha1", "kind": "Component", "metadata": {"name": name},
                "spec": {"type": kind_type, "owner": "team-a"}},
            "relations": [{"type": "ownedBy", "targetRef": "group:default/team-a"}]}})
    }

    fn names(index: &Index, selection: Selection) -> Vec<String> {
        index.items(&selection).iter().map(|i| ref_of(&i.doc)).collect()
    }

    /// A catalog with an imported blueprint (`component`) and a Port-made one (`service`), and the write count.
    fn two_blueprints() -> (State, i64) {
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
        (state, n)
    }

    #[test]
    fn the_index_answers_filters_and_stays_equal_to_a_fresh_build() {
        let (mut state, mut n) = two_blueprints();
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
            names(&index, index.select(&f(&["kind=component,spec.type=service"]))),
            ["component:default/a", "component:shop/c"]
        );
        assert_eq!(names(&index, index.select(&f(&["kind=service"]))), ["service:default/svc"]);
        assert_eq!(
            index.get("service:default/svc").map(|i| i.doc["spec"]["owner"].clone()),
            Some(json!("group:default/core"))
        );
        assert_eq!(names(&index, index.select(&f(&["metadata.namespace=SHOP"]))), ["component:shop/c"], "no case");
        assert_eq!(
            names(&index, index.select(&f(&["spec.tier=gold", "metadata.name=b"]))),
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
            assert_eq!(names(&index, index.select(&f(filter))), names(&fresh, fresh.select(&f(filter))), "{filter:?}");
        }
        assert_eq!(
            names(&index, index.select(&f(&["kind=component,spec.type=service"]))),
            ["component:default/a", "component:default/b"]
        );
        assert_eq!(index.len(), 4);
    }

    fn catalog(entries: &[(u8, u8, u8, u8, bool)]) -> State {
        let (mut state, mut n) = two_blueprints();
        for &(name, ns, kind_type, tags, port_made) in entries {
            let t = ["service", "website", "Service", "library"][kind_type as usize % 4];
            let tag_pool = ["java", "Java", "web"];
            let tags: Vec<&str> = (0..3).filter(|b| tags & (1 << b) != 0).map(|b| tag_pool[b]).collect();
            let body = if port_made {
                json!({"identifier": format!("s{name}"), "properties": {"tier": t}})
            } else {
                let mut c = component(["default", "shop"][ns as usize % 2], &format!("c{name}"), t);
                c["properties"]["descriptor"]["metadata"]["tags"] = json!(tags);
                c
            };
            apply(&mut state, &mut n, upsert(if port_made { "service" } else { "component" }, body));
        }
        state
    }

    fn condition() -> impl proptest::strategy::Strategy<Value = (String, Option<String>)> {
        use proptest::prelude::*;
        let keys = [
            "kind",
            "KIND",
            "spec.type",
            "metadata.namespace",
            "metadata.tags",
            "spec.tier",
            "metadata.name",
            "relations.ownedBy",
        ];
        let values = [
            "component",
            "Service",
            "service",
            "website",
            "shop",
            "default",
            "java",
            "web",
            "c1",
            "s2",
            "x",
            "group:default/team-a",
        ];
        (0..keys.len(), proptest::option::weighted(0.85, 0..values.len()))
            .prop_map(move |(k, v)| (keys[k].to_string(), v.map(|v| values[v].to_string())))
    }

    /// Values of `field` and how many entities hold each, without case, counted from the documents.
    fn counted(docs: &[&Value], field: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for doc in docs {
            let values: std::collections::BTreeSet<String> =
                backstage::values_at(doc, field).iter().map(|v| v.to_lowercase()).collect();
            for v in values {
                *out.entry(v).or_default() += 1;
            }
        }
        out
    }

    proptest::proptest! {
        /// The index (postings, bit sets, slots reused after deletes) answers every filter and facet as
        /// checking each entity's document would, after any writes and deletes.
        #[test]
        fn selections_and_facets_equal_checking_every_entity(
            entries in proptest::collection::vec((0u8..12, 0u8..2, 0u8..4, 0u8..8, proptest::bool::ANY), 0..30),
            later in proptest::collection::vec((0u8..12, 0u8..2, 0u8..4, 0u8..8, proptest::bool::ANY), 0..10),
            deleted in proptest::collection::vec(0u8..12, 0..6),
            sets in proptest::collection::vec(proptest::collection::vec(condition(), 1..4), 0..3),
        ) {
            let older = catalog(&entries);
            let mut index = Index::build(&older);
            let mut state = older.clone();
            let mut n = 1_000;
            for &(name, ns, kind_type, tags, port_made) in &later {
                let one = catalog(&[(name, ns, kind_type, tags, port_made)]);
                let bp = if port_made { "service" } else { "component" };
                for e in one.entities_of(bp) {
                    let body = json!({"identifier": &*e.identifier, "properties": e.properties});
                    apply(&mut state, &mut n, upsert(bp, body));
                }
            }
            for d in &deleted {
                for (bp, id) in [("component", format!("default/c{d}")), ("service", format!("s{d}"))] {
                    if state.entity(bp, &id).is_some() {
                        apply(&mut state, &mut n, Command::DeleteEntity { blueprint: bp.into(), identifier: id.as_str().into(), delete_dependents: false });
                    }
                }
            }
            index.catch_up(&older, &state);
            let filter = Filter(sets);
            let selection = index.select(&filter);
            let fresh = Index::build(&state);
            let mut expected: Vec<(String, &Value)> = fresh.items(&fresh.everything()).into_iter()
                .filter(|i| filter.matches(&i.doc)).map(|i| (i.key.to_string(), &i.doc)).collect();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let got: Vec<String> = index.items(&selection).iter().map(|i| i.key.to_string()).collect();
            proptest::prop_assert_eq!(&got, &expected.iter().map(|e| e.0.clone()).collect::<Vec<_>>());
            proptest::prop_assert_eq!(selection.count(), got.len());
            let page: Vec<String> = index.page(&selection, 1, 2).iter().map(|i| i.key.to_string()).collect();
            proptest::prop_assert_eq!(&page[..], &got[got.len().min(1)..got.len().min(3)]);
            let docs: Vec<&Value> = expected.iter().map(|e| e.1).collect();
            for field in ["spec.type", "metadata.tags", "kind", "spec.tier", "relations.ownedBy"] {
                let facet: BTreeMap<String, usize> =
                    index.facet(&selection, field).into_iter().map(|(v, c)| (v.to_lowercase(), c)).collect();
                proptest::prop_assert_eq!(facet, counted(&docs, field), "{}", field);
            }
        }
    }

    fn imported_blueprint(id: &str) -> Command {
        let text = json!({"type": "string"});
        Command::CreateBlueprint {
            body: json!({"identifier": id, "title": id, "schema": {"properties": {
                "name": text, "namespace": text, "description": text, "type": text, "lifecycle": text, "owner": text,
                "system": text, "tags": {"type": "array", "items": {"type": "string"}}, "descriptor": {"type": "object"},
                "relations": {"type": "array"}, "parent": text, "source": text}}}),
        }
    }

    /// A descriptor and the properties `berth import backstage` writes for it (`None`: field left out).
    fn imported_entity(kind: &str, ns: &str, name: &str, fields: &[Option<&str>; 5], tags: &[&str]) -> Value {
        let [t, lifecycle, owner, system, description] = *fields;
        let mut spec = Map::new();
        let mut props = json!({"name": name, "namespace": ns, "source": "s", "tags": tags});
        for (key, value) in [("type", t), ("lifecycle", lifecycle), ("owner", owner), ("system", system)] {
            if let Some(v) = value {
                spec.insert(key.into(), json!(v));
                props[key] = json!(v);
            }
        }
        let mut metadata = json!({"name": name, "namespace": ns, "tags": tags});
        if let Some(d) = description {
            metadata["description"] = json!(d);
            props["description"] = json!(d);
        }
        props["descriptor"] =
            json!({"apiVersion": "backstage.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec});
        json!({"identifier": format!("{ns}/{name}"), "properties": props})
    }

    proptest::proptest! {
        /// A Backstage filter put into the rules language selects, through Berth's own search, exactly the
        /// imported entities the filter selects on their Backstage documents.
        #[test]
        fn filters_in_the_rules_language_select_what_they_select_in_backstage(
            entities in proptest::collection::vec(
                (0usize..2, 0usize..2, 0usize..6, proptest::collection::vec(proptest::option::of(0usize..3), 5), 0u8..4),
                0..20),
            sets in proptest::collection::vec(proptest::collection::vec(
                (0usize..9, proptest::option::weighted(0.8, 0usize..8)), 1..4), 0..3),
        ) {
            let pool = ["service", "website", "production", "team-a", "shop", "docs", "default", "x"];
            let kinds = ["Component", "API"];
            let mut state = State::default();
            let mut n = 0;
            apply(&mut state, &mut n, imported_blueprint("component"));
            apply(&mut state, &mut n, imported_blueprint("api"));
            for (kind, ns, name, fields, tags) in &entities {
                let f: Vec<Option<&str>> = fields.iter().map(|v| v.map(|i| pool[i])).collect();
                let tags: Vec<&str> = ["java", "web"].iter().enumerate().filter(|(b, _)| tags & (1 << b) != 0).map(|(_, t)| *t).collect();
                let body = imported_entity(kinds[*kind], ["default", "shop"][*ns], &format!("e{name}"), &[f[0], f[1], f[2], f[3], f[4]], &tags);
                apply(&mut state, &mut n, upsert(&kinds[*kind].to_lowercase(), body));
            }
            let keys = ["kind", "metadata.name", "metadata.namespace", "metadata.description", "spec.type",
                "spec.lifecycle", "spec.owner", "spec.system", "metadata.tags"];
            let names = ["component", "api", "e1", "e2", "java", "web", "shop", "service"];
            let filter = Filter(sets.iter().map(|set| set.iter().map(|(k, v)| {
                let value = v.map(|i| if *k == 0 || *k == 1 || *k == 8 { names[i] } else { pool[i] });
                (keys[*k].to_string(), value.map(str::to_string))
            }).collect()).collect());
            let index = Index::build(&state);
            let expected: Vec<String> = index.items(&index.everything()).into_iter()
                .filter(|i| filter.matches(&i.doc)).map(|i| format!("{}/{}", i.blueprint, i.identifier)).collect();
            let rules = filter.to_rules("").map_err(proptest::test_runner::TestCaseError::fail)?;
            let query = berth_model::query::Query::parse(&rules).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
            let mut got: Vec<String> = Vec::new();
            for bp in ["api", "component"] {
                let found = berth_engine::search::scan(&state, bp, &query, Timestamp::from_millis(0)).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                got.extend(found.iter().map(|e| format!("{bp}/{}", e.identifier)));
            }
            let mut expected = expected;
            expected.sort();
            got.sort();
            proptest::prop_assert_eq!(got, expected, "{}", rules);
        }
    }
}
