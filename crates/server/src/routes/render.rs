//! How entities and blueprints are written out: Port's field names, `include` / `exclude` projections.

use berth_engine::scoped::Scoped;
use berth_model::Entity;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::extract::Params;

/// Which fields of an entity a read returns (`include` / `exclude`, each repeated or comma-joined).
/// Field names: `identifier`, `title`, `icon`, `blueprint`, `team`, `properties`, `properties.<p>`,
/// `relations`, `relations.<r>`, `createdAt`, `createdBy`, `updatedAt`, `updatedBy`, `$datasource`.
/// With `attach_title_to_relation=true`, each related identifier becomes `{"identifier", "title"}`, the
/// title `null` where the caller may not read the related entity.
#[derive(Default, Clone)]
pub struct Projection<'v> {
    include: Vec<String>,
    exclude: Vec<String>,
    attach_titles: bool,
    /// The caller's view the titles are read from (set by [`Projection::with_view`]).
    titles: Option<&'v (dyn Titles + 'v)>,
    /// The caller's view the entities' scorecards are judged and derived values computed in (set by
    /// [`Projection::with_view`]).
    cards: Option<&'v (dyn Titles + 'v)>,
    /// `exclude_calculated_properties=true`: mirror, calculation and aggregation values left out.
    exclude_derived: bool,
}

/// Where related entities' titles come from: the caller's scoped view, so a hidden entity has none.
pub trait Titles: Sync {
    /// The blueprint a relation of `blueprint` points to.
    fn target(&self, blueprint: &str, relation: &str) -> Option<&str>;
    fn title(&self, blueprint: &str, identifier: &str) -> Option<&str>;
    /// The entity's scorecards (`None`: its blueprint has none that apply).
    fn scorecards(&self, e: &Entity) -> Option<Value>;
    /// The entity's derived values and why failed ones are null (`None`: its blueprint has none).
    fn derived(&self, e: &Entity) -> Option<(Map<String, Value>, Map<String, Value>)>;
    /// Whether entities of `blueprint` have derived properties.
    fn has_derived(&self, blueprint: &str) -> bool;
}

impl Titles for Scoped<'_> {
    fn target(&self, blueprint: &str, relation: &str) -> Option<&str> {
        self.state().blueprint(blueprint)?.def.relations.get(relation).map(|r| r.target.as_str())
    }

    fn title(&self, blueprint: &str, identifier: &str) -> Option<&str> {
        Scoped::title(self, blueprint, identifier)
    }

    fn scorecards(&self, e: &Entity) -> Option<Value> {
        Scoped::scorecards(self, e)
    }

    fn derived(&self, e: &Entity) -> Option<(Map<String, Value>, Map<String, Value>)> {
        Scoped::derived(self, e)
    }

    fn has_derived(&self, blueprint: &str) -> bool {
        self.state().derived().spec(blueprint).is_some()
    }
}

/// The most `include` / `exclude` names one read takes (each is compared with every field of every entity).
const MAX_FIELDS: usize = 200;

impl<'v> Projection<'v> {
    pub fn from_params(p: &Params) -> Result<Projection<'v>, ApiError> {
        let (include, exclude) = (p.list("include"), p.list("exclude"));
        if include.len() + exclude.len() > MAX_FIELDS {
            return Err(ApiError::bad_request(format!("`include` and `exclude` name at most {MAX_FIELDS} fields")));
        }
        let attach_titles = p.flag("attach_title_to_relation", false)?;
        let exclude_derived = p.flag("exclude_calculated_properties", false)?;
        Ok(Projection { include, exclude, attach_titles, titles: None, cards: None, exclude_derived })
    }

    /// Reads related entities' titles from the caller's `view` when the caller asked for them, and judges
    /// the entities' scorecards in it.
    pub fn with_view(mut self, view: &'v Scoped<'_>) -> Projection<'v> {
        if self.attach_titles {
            self.titles = Some(view);
        }
        self.cards = Some(view);
        self
    }

    /// The entity's derived values, unless left out.
    fn derived(&self, e: &Entity) -> Option<(Map<String, Value>, Map<String, Value>)> {
        if self.exclude_derived {
            return None;
        }
        self.cards?.derived(e)
    }

    /// Leaves scorecards and derived values out (they judge the current catalog: a past version does not
    /// carry them).
    pub fn without_scorecards(mut self) -> Projection<'v> {
        self.cards = None;
        self
    }

    /// The entity's scorecards in Port's shape, when read through a view and its blueprint has some.
    fn scorecards(&self, e: &Entity) -> Option<Value> {
        self.cards?.scorecards(e)
    }

    pub fn is_identity(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty() && self.titles.is_none()
    }

    /// Each related identifier as `{"identifier", "title"}`.
    fn attach_titles(&self, e: &Entity, rendered: &mut Value) {
        let Some(titles) = self.titles else { return };
        let Some(Value::Object(relations)) = rendered.get_mut("relations") else { return };
        for (name, value) in relations.iter_mut() {
            let Some(target) = titles.target(&e.blueprint, name) else { continue };
            let titled = |id: &Value| match id.as_str() {
                Some(id) => json!({"identifier": id, "title": titles.title(target, id)}),
                None => id.clone(),
            };
            let reshaped = match &*value {
                Value::Array(ids) => Value::Array(ids.iter().map(titled).collect()),
                Value::Null => Value::Null,
                one => titled(one),
            };
            *value = reshaped;
        }
    }

    /// The top-level fields this projection keeps, rendered (nested `properties.x` filters are left to
    /// [`Projection::apply`]).
    fn pick(&self, e: &Entity) -> Value {
        let mut out = Map::new();
        for (name, render) in FIELDS {
            if self.wanted(name) {
                if let Some(v) = render(e) {
                    out.insert(name.to_string(), v);
                }
            }
        }
        Value::Object(out)
    }

    /// Whether the field at `path` (`identifier`, `properties.x`) is kept: included (itself, an ancestor or a
    /// descendant of it named) and not excluded (itself or an ancestor). Called per field of every entity of a
    /// page, so it allocates nothing.
    fn wanted(&self, path: &str) -> bool {
        // `a` is `b` or one of its ancestors.
        let covers = |a: &str, b: &str| b.strip_prefix(a).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        let named = |list: &[String]| list.iter().any(|f| covers(f, path));
        let child_named = |list: &[String]| list.iter().any(|f| covers(path, f));
        (self.include.is_empty() || named(&self.include) || child_named(&self.include)) && !named(&self.exclude)
    }

    /// Applies the projection to an entity rendered as a JSON object.
    pub fn apply(&self, value: Value) -> Value {
        if self.is_identity() {
            return value;
        }
        let Value::Object(obj) = value else {
            return value;
        };
        let mut out = Map::new();
        for (k, v) in obj {
            if !self.wanted(&k) {
                continue;
            }
            match (k.as_str(), v) {
                ("properties" | "relations", Value::Object(inner)) => {
                    let mut path = String::new();
                    let filtered: Map<String, Value> = inner
                        .into_iter()
                        .filter(|(ik, _)| {
                            path.clear();
                            path.extend([k.as_str(), ".", ik]);
                            self.wanted(&path)
                        })
                        .collect();
                    out.insert(k, Value::Object(filtered));
                }
                (_, v) => {
                    out.insert(k, v);
                }
            }
        }
        Value::Object(out)
    }
}

/// `{"ok": true, "entity": ...}` as bytes, serialised straight from the entity when nothing is projected
/// (the common case: no intermediate JSON tree).
pub fn entity_answer(e: &Entity, projection: &Projection) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Answer<'a, T: serde::Serialize> {
        ok: bool,
        entity: &'a T,
    }
    let plain = match projection.cards {
        None => true,
        Some(view) => {
            (projection.exclude_derived || !view.has_derived(&e.blueprint)) && projection.scorecards(e).is_none()
        }
    };
    let bytes = if projection.is_identity() && plain {
        serde_json::to_vec(&Answer { ok: true, entity: e })
    } else {
        serde_json::to_vec(&Answer { ok: true, entity: &entity(e, projection) })
    };
    bytes.unwrap_or_else(|_| {
        br#"{"ok":false,"error":"internal_error","message":"the entity could not be serialised"}"#.to_vec()
    })
}

pub fn entity(e: &Entity, projection: &Projection) -> Value {
    let mut rendered = match &projection.titles {
        None if !projection.include.is_empty() => projection.pick(e),
        _ => serde_json::to_value(e).unwrap_or(Value::Null),
    };
    projection.attach_titles(e, &mut rendered);
    if let (Some((values, errors)), Value::Object(map)) = (projection.derived(e), &mut rendered) {
        if let Value::Object(props) = map.entry("properties").or_insert_with(|| Value::Object(Map::new())) {
            props.extend(values);
        }
        if !errors.is_empty() {
            map.insert("$derivedErrors".into(), Value::Object(errors));
        }
    }
    if let (Some(cards), Value::Object(map)) = (projection.scorecards(e), &mut rendered) {
        map.insert("scorecards".into(), cards);
    }
    projection.apply(rendered)
}

/// An entity's top-level fields as it serialises them (same names, order and omissions as `Entity`'s
/// `Serialize`), each rendered on its own, so a projection renders only the fields it keeps.
type Field = (&'static str, fn(&Entity) -> Option<Value>);

fn json_of<T: serde::Serialize + ?Sized>(v: &T) -> Option<Value> {
    serde_json::to_value(v).ok()
}

const FIELDS: [Field; 12] = [
    ("identifier", |e| json_of(&e.identifier)),
    ("title", |e| json_of(&e.title)),
    ("icon", |e| e.icon.as_ref().and_then(json_of)),
    ("blueprint", |e| json_of(&*e.blueprint)),
    ("team", |e| json_of(&e.team)),
    ("properties", |e| json_of(&e.properties)),
    ("relations", |e| json_of(&e.relations)),
    ("createdAt", |e| json_of(&e.created_at)),
    ("createdBy", |e| json_of(&e.created_by)),
    ("updatedAt", |e| json_of(&e.updated_at)),
    ("updatedBy", |e| json_of(&e.updated_by)),
    ("$datasource", |e| e.datasource.as_ref().and_then(json_of)),
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn include_and_exclude() {
        let v = json!({"identifier": "a", "title": "A", "properties": {"x": 1, "y": 2}, "relations": {"r": "b"}});
        let p = Projection { include: vec!["identifier".into(), "properties.x".into()], ..Default::default() };
        assert_eq!(p.apply(v.clone()), json!({"identifier": "a", "properties": {"x": 1}}));
        let p = Projection { exclude: vec!["relations".into(), "properties.y".into()], ..Default::default() };
        assert_eq!(p.apply(v), json!({"identifier": "a", "title": "A", "properties": {"x": 1}}));
    }

    /// Rendering only the kept fields gives what rendering everything and then projecting gives.
    #[test]
    fn picking_fields_equals_projecting_the_whole_entity() {
        let with_optionals = json!({"identifier": "a/b", "title": null, "icon": "Rust", "blueprint": "svc", "team": ["x"],
            "properties": {"x": 1, "y": [2]}, "relations": {"r": "b", "m": ["c"]}, "createdAt": "2026-01-02T03:04:05.000Z",
            "createdBy": "me", "updatedAt": "2026-01-02T03:04:06.000Z", "updatedBy": "you", "$datasource": "curl/8"});
        let mut without = with_optionals.clone();
        for k in ["icon", "$datasource"] {
            without.as_object_mut().map(|o| o.remove(k));
        }
        let full: Value =
            serde_json::to_value(serde_json::from_value::<Entity>(with_optionals.clone()).expect("an entity"))
                .expect("renders");
        assert_eq!(FIELDS.map(|(n, _)| n).to_vec(), full.as_object().expect("object").keys().collect::<Vec<_>>());
        let includes: [&[&str]; 6] = [
            &["identifier"],
            &["identifier", "title", "icon", "$datasource"],
            &["properties.x", "relations"],
            &["properties", "createdAt", "updatedBy"],
            &["blueprint", "team", "createdBy", "updatedAt"],
            &["nothing"],
        ];
        for raw in [with_optionals, without] {
            let e: Entity = serde_json::from_value(raw).expect("an entity");
            for include in includes {
                for exclude in [&[][..], &["properties.x"][..], &["identifier"][..]] {
                    let p = Projection {
                        include: include.iter().map(|s| s.to_string()).collect(),
                        exclude: exclude.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    };
                    let slow = p.apply(serde_json::to_value(&e).expect("renders"));
                    assert_eq!(entity(&e, &p), slow, "include {include:?} exclude {exclude:?}");
                    assert_eq!(
                        serde_json::to_string(&entity(&e, &p)).expect("text"),
                        serde_json::to_string(&slow).expect("text"),
                        "same key order"
                    );
                }
            }
        }
    }
}
