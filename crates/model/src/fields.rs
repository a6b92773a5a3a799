//! [`Fields`]: a stored entity's properties or relations, names to JSON values in the order they were written.
//!
//! A catalog holds millions of entities, each with a handful of properties and relations under the same few
//! names. `serde_json::Map` (an index map) spends a hash table, a 64-byte slot and a heap copy of the name on
//! every entry of every entity. [`Fields`] keeps the entries in one slice of exactly their size and shares each
//! name ([`shared_name`]: names repeat across entities, values mostly do not). A lookup scans the slice, which
//! for the dozen or so entries an entity has costs what hashing the name would.
//!
//! It serialises as a JSON object and compares like one (the order of entries does not matter to equality).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeSeed, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// How many distinct names a thread keeps to share, and how long a name may be to be kept.
const MAX_SHARED: usize = 4096;
const MAX_SHARED_LEN: usize = 128;

thread_local! {
    static NAMES: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
}

/// The shared copy of a property or relation name: each thread keeps one copy of each of the first
/// [`MAX_SHARED`] names it meets (names longer than [`MAX_SHARED_LEN`] are not kept), and hands out clones of
/// it. Nothing observable depends on whether two entities share a name; only memory does.
pub fn shared_name(name: &str) -> Arc<str> {
    if name.len() > MAX_SHARED_LEN {
        return Arc::from(name);
    }
    NAMES
        .try_with(|names| {
            let mut names = names.borrow_mut();
            if let Some(kept) = names.get(name) {
                return Arc::clone(kept);
            }
            let fresh: Arc<str> = Arc::from(name);
            if names.len() < MAX_SHARED {
                names.insert(Arc::clone(&fresh));
            }
            fresh
        })
        .unwrap_or_else(|_| Arc::from(name))
}

/// Names to values, in writing order, without duplicate names.
#[derive(Clone, Default)]
pub struct Fields(Box<[(Arc<str>, Value)]>);

impl Fields {
    pub fn new() -> Fields {
        Fields::default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|(n, _)| &**n == name)
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(n, _)| &**n == name).map(|(_, v)| v)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (&**n, v))
    }

    pub fn iter_mut(&mut self) -> impl ExactSizeIterator<Item = (&str, &mut Value)> {
        self.0.iter_mut().map(|(n, v)| (&**n, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(n, _)| &**n)
    }

    /// Sets a value: in place when the name is there (its position kept), else at the end. Returns the old value.
    pub fn insert(&mut self, name: &str, value: Value) -> Option<Value> {
        if let Some(i) = self.position(name) {
            return Some(std::mem::replace(&mut self.0[i].1, value));
        }
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.push((shared_name(name), value));
        self.0 = entries.into_boxed_slice();
        None
    }

    /// Removes a name (the others keep their order) and returns its value.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.position(name)?;
        let mut entries = std::mem::take(&mut self.0).into_vec();
        let (_, value) = entries.remove(i);
        self.0 = entries.into_boxed_slice();
        Some(value)
    }

    /// Applies `updates` as a one-level JSON merge: a null removes its name, any other value sets it (in
    /// place when the name is there, else at the end).
    pub fn merge(&mut self, updates: &Fields) {
        if updates.is_empty() {
            return;
        }
        let mut builder = Builder::from_fields(std::mem::take(self));
        for (name, value) in updates.0.iter() {
            if value.is_null() {
                builder.remove(name);
            } else {
                builder.set_shared(name, value.clone(), |_| Arc::clone(name));
            }
        }
        *self = builder.finish();
    }

    /// The entries whose value is not null (what a write stores of the fields a client sent).
    pub fn without_nulls(&self) -> Fields {
        Fields(self.0.iter().filter(|(_, v)| !v.is_null()).cloned().collect())
    }

    /// Keeps the entries `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Value) -> bool) {
        if self.0.iter().all(|(n, v)| keep(n, v)) {
            return;
        }
        let mut entries = std::mem::take(&mut self.0).into_vec();
        entries.retain(|(n, v)| keep(n, v));
        self.0 = entries.into_boxed_slice();
    }
}

/// Later entries replace earlier ones of the same name (as in a JSON object).
impl<K: AsRef<str>> FromIterator<(K, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Fields {
        let mut builder = Builder::with_capacity(0);
        for (name, value) in iter {
            builder.set(name.as_ref(), value);
        }
        builder.finish()
    }
}

/// From how many entries a [`Builder`] finds names by hashing rather than by scanning: an entity has a
/// dozen, but a request body may carry a hundred thousand, and scanning for each would be quadratic.
const HASHED_FROM: usize = 32;

/// Entries under construction, without duplicate names (a later value replaces an earlier one in place), in
/// time linear in the number of entries whatever their number.
struct Builder {
    entries: Vec<(Arc<str>, Value)>,
    /// Name -> position, once there are [`HASHED_FROM`] entries.
    at: Option<std::collections::HashMap<Arc<str>, usize>>,
    /// Positions removed by [`Builder::remove`], dropped by [`Builder::finish`].
    removed: Vec<bool>,
}

impl Builder {
    fn with_capacity(n: usize) -> Builder {
        Builder { entries: Vec::with_capacity(n), at: None, removed: Vec::new() }
    }

    fn from_fields(fields: Fields) -> Builder {
        let mut builder = Builder { entries: fields.0.into_vec(), at: None, removed: Vec::new() };
        builder.index_if_large();
        builder
    }

    fn position(&self, name: &str) -> Option<usize> {
        match &self.at {
            Some(at) => at.get(name).copied(),
            None => self.entries.iter().position(|(n, _)| &**n == name),
        }
    }

    fn index_if_large(&mut self) {
        if self.at.is_none() && self.entries.len() >= HASHED_FROM {
            self.at = Some(self.entries.iter().enumerate().map(|(i, (n, _))| (Arc::clone(n), i)).collect());
        }
    }

    fn set(&mut self, name: &str, value: Value) {
        self.set_shared(name, value, shared_name);
    }

    /// Sets `name`, making its stored copy with `share` only when the name is new.
    fn set_shared(&mut self, name: &str, value: Value, share: impl FnOnce(&str) -> Arc<str>) {
        if let Some(i) = self.position(name) {
            self.entries[i].1 = value;
            if let Some(gone) = self.removed.get_mut(i) {
                *gone = false;
            }
            return;
        }
        let name = share(name);
        if let Some(at) = &mut self.at {
            at.insert(Arc::clone(&name), self.entries.len());
        }
        self.entries.push((name, value));
        self.index_if_large();
    }

    fn remove(&mut self, name: &str) {
        if let Some(i) = self.position(name) {
            if self.removed.len() < self.entries.len() {
                self.removed.resize(self.entries.len(), false);
            }
            self.removed[i] = true;
        }
    }

    fn finish(self) -> Fields {
        let Builder { mut entries, removed, .. } = self;
        if removed.contains(&true) {
            let mut gone = removed.into_iter();
            entries.retain(|_| !gone.next().unwrap_or(false));
        }
        Fields(entries.into_boxed_slice())
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a str, &'a Value);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (Arc<str>, Value)>, fn(&'a (Arc<str>, Value)) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        fn pair(entry: &(Arc<str>, Value)) -> (&str, &Value) {
            (&*entry.0, &entry.1)
        }
        self.0.iter().map(pair)
    }
}

/// Panics when the name is absent, as indexing a `serde_json::Map` does.
impl std::ops::Index<&str> for Fields {
    type Output = Value;

    fn index(&self, name: &str) -> &Value {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no field `{name}`"),
        }
    }
}

/// Equal when both have the same names with equal values, in any order.
impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        self.len() == other.len() && self.iter().all(|(n, v)| other.get(n) == Some(v))
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, value) in self.iter() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Reads a name straight into its shared copy (no owned `String` on the way).
struct SharedName;

impl<'de> DeserializeSeed<'de> for SharedName {
    type Value = Arc<str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Arc<str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for SharedName {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Arc<str>, E> {
        Ok(shared_name(name))
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, access: A) -> Result<Fields, A::Error> {
        read_fields(access)
    }
}

/// Reads the entries of a JSON object (the map access of a deserializer positioned inside one).
pub(crate) fn read_fields<'de, A: MapAccess<'de>>(mut access: A) -> Result<Fields, A::Error> {
    let mut builder = Builder::with_capacity(access.size_hint().unwrap_or(0).min(64));
    while let Some(name) = access.next_key_seed(SharedName)? {
        let value: Value = access.next_value()?;
        builder.set_shared(&name, value, |_| Arc::clone(&name));
    }
    Ok(builder.finish())
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fields, D::Error> {
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, json};

    /// A `serde_json` object of the same entries, in order.
    fn to_map(fields: &Fields) -> Map<String, Value> {
        fields.iter().map(|(n, v)| (n.to_string(), v.clone())).collect()
    }

    #[test]
    fn keeps_order_replaces_in_place_and_shares_names() {
        let mut f: Fields = serde_json::from_value(json!({"b": 1, "a": 2, "b": 3})).expect("an object");
        assert_eq!(serde_json::to_string(&f).expect("json"), r#"{"b":3,"a":2}"#);
        assert_eq!(f.insert("a", json!(5)), Some(json!(2)));
        assert_eq!(f.insert("c", json!(null)), None);
        assert_eq!(f.keys().collect::<Vec<_>>(), ["b", "a", "c"]);
        assert_eq!(f.remove("b"), Some(json!(3)));
        assert_eq!(f.remove("b"), None);
        assert_eq!(serde_json::to_value(&f).expect("json"), json!({"a": 5, "c": null}));
        f.retain(|_, v| !v.is_null());
        assert_eq!(f.len(), 1);
        assert_eq!(f["a"], json!(5));

        let g: Fields = serde_json::from_str(r#"{"a": 5}"#).expect("an object");
        assert_eq!(f, g);
        assert!(Arc::ptr_eq(&f.0[0].0, &g.0[0].0), "one copy of a name per thread");
        assert!(serde_json::from_str::<Fields>("[1]").is_err());
    }

    #[test]
    fn equality_ignores_order() {
        let a: Fields = [("x", json!(1)), ("y", json!(2))].into_iter().collect();
        let b: Fields = [("y", json!(2)), ("x", json!(1))].into_iter().collect();
        let c: Fields = [("y", json!(2)), ("x", json!(0))].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, Fields::new());
    }

    /// The same entries, inserted one by one into a `serde_json::Map` and collected into `Fields`.
    fn built(entries: &[(String, i64)]) -> (Map<String, Value>, Fields) {
        let mut map: Map<String, Value> = Map::new();
        for (k, v) in entries {
            map.insert(k.clone(), json!(v));
        }
        (map, entries.iter().map(|(k, v)| (k.as_str(), json!(v))).collect())
    }

    proptest! {
        /// Built, edited and read back, `Fields` holds what a `serde_json::Map` holds after the same edits.
        #[test]
        fn behaves_like_a_json_object(
            start in prop::collection::vec(("[a-d]", 0..5i64), 0..8),
            edits in prop::collection::vec(("[a-e]", prop::option::of(0..5i64)), 0..10),
        ) {
            let (mut map, mut fields) = built(&start);
            for (k, v) in &edits {
                match v {
                    Some(v) => prop_assert_eq!(fields.insert(k, json!(v)), map.insert(k.clone(), json!(v))),
                    None => prop_assert_eq!(fields.remove(k), map.shift_remove(k)),
                }
            }
            prop_assert_eq!(to_map(&fields), map.clone());
            let text = serde_json::to_string(&fields).expect("json");
            prop_assert_eq!(&text, &serde_json::to_string(&map).expect("json"));
            prop_assert_eq!(serde_json::from_str::<Fields>(&text).expect("reads back"), fields);
        }

        /// Past the size where names are found by hashing, building, reading and merging still agree with a
        /// `serde_json::Map` (a null in a merge removes its name).
        #[test]
        fn large_fields_merge_like_a_json_object(
            start in prop::collection::vec(("[a-h]{1,2}", 0..5i64), 0..90),
            updates in prop::collection::vec(("[a-h]{1,2}", prop::option::of(0..5i64)), 0..90),
        ) {
            let (mut map, mut fields) = built(&start);
            prop_assert_eq!(to_map(&fields), map.clone());
            let text = serde_json::to_string(&map).expect("json");
            prop_assert_eq!(&serde_json::from_str::<Fields>(&text).expect("reads"), &fields);

            let mut given: Map<String, Value> = Map::new();
            for (k, v) in &updates {
                given.insert(k.clone(), v.map_or(Value::Null, |v| json!(v)));
            }
            for (k, v) in &given {
                if v.is_null() {
                    map.shift_remove(k);
                } else {
                    map.insert(k.clone(), v.clone());
                }
            }
            fields.merge(&given.iter().map(|(k, v)| (k.as_str(), v.clone())).collect());
            prop_assert_eq!(to_map(&fields), map);
        }
    }
}
