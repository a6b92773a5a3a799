//! Derived data: mirror, calculation and aggregation properties.
//!
//! Derived values are functions of the state, never written to the log:
//! - a **mirror** (`system.domain.$title`) follows relations when it is read ([`mirror`]): always current,
//!   and a write to a team that 100,000 services mirror costs nothing more;
//! - a **calculation** (jq over the entity, its mirrors and aggregations) runs when it is read ([`jq`]);
//! - an **aggregation** (count / sum / average / min / max / median over related entities) is kept in the
//!   state and refreshed incrementally ([`aggregation`]): the [`DerivedCatalog`]'s dependency index says,
//!   for each blueprint, which aggregations its entities feed and where on their path; a write recomputes
//!   only the owners it can reach.
//!
//! Readers see derived values in `properties` (unless they ask `exclude_calculated_properties`), and search,
//! sort, filter and aggregate on them like on stored properties. A derived value is computed from other
//! entities: a reader sees it only as far as it may read those ([`Sees`]).

pub mod aggregation;
pub mod jq;
pub mod mirror;

use std::collections::HashMap;
use std::sync::Arc;

use berth_model::{Blueprint, Entity};
use serde_json::{Map, Value};

use crate::State;
use aggregation::Agg;
use mirror::Mirror;

/// What a reader may see of the entities derived values are computed from.
pub trait Sees {
    /// Whether the reader may read every entity of `blueprint`.
    fn reads_all(&self, blueprint: &str) -> bool;
    /// Whether the reader may read `entity`.
    fn can_read(&self, entity: &Entity) -> bool;
}

/// A reader who sees everything (the engine's own evaluation: searches are narrowed before they get here).
pub struct Everything;

impl Sees for Everything {
    fn reads_all(&self, _: &str) -> bool {
        true
    }
    fn can_read(&self, _: &Entity) -> bool {
        true
    }
}

/// A calculation property.
#[derive(Debug)]
pub struct Calc {
    pub name: String,
    /// The declared `type` (`string`, `number`, `boolean`, `object`, `array`).
    pub ty: String,
    /// The compiled program, or why it could not be compiled (then the value is null).
    pub program: Result<Arc<jq::Program>, String>,
    /// The expression as written (compiled programs are reused across rebuilds by it).
    pub code: String,
}

/// Which derived property a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mirror(usize),
    Calculation(usize),
    Aggregation(usize),
}

/// A blueprint's derived properties, compiled.
#[derive(Debug, Default)]
pub struct DerivedSpec {
    pub mirrors: Vec<Mirror>,
    pub calcs: Vec<Calc>,
    pub aggs: Vec<Agg>,
}

impl DerivedSpec {
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty() && self.calcs.is_empty() && self.aggs.is_empty()
    }

    pub fn kind(&self, name: &str) -> Option<Kind> {
        if let Some(i) = self.mirrors.iter().position(|m| m.name == name) {
            return Some(Kind::Mirror(i));
        }
        if let Some(i) = self.aggs.iter().position(|a| a.name == name) {
            return Some(Kind::Aggregation(i));
        }
        self.calcs.iter().position(|c| c.name == name).map(Kind::Calculation)
    }

    /// The blueprints whose entities the property `name` is computed from (a calculation: those of every
    /// mirror and aggregation of the blueprint, which it may read).
    pub fn sources_of(&self, name: &str) -> Vec<&str> {
        match self.kind(name) {
            None => Vec::new(),
            Some(Kind::Mirror(i)) => self.mirrors[i].blueprints.iter().map(String::as_str).collect(),
            Some(Kind::Aggregation(i)) => self.aggs[i].path_blueprints.iter().skip(1).map(String::as_str).collect(),
            Some(Kind::Calculation(_)) => {
                let mirrors = self.mirrors.iter().flat_map(|m| m.blueprints.iter());
                let aggs = self.aggs.iter().flat_map(|a| a.path_blueprints.iter().skip(1));
                mirrors.chain(aggs).map(String::as_str).collect()
            }
        }
    }

    /// Every derived property's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let m = self.mirrors.iter().map(|m| m.name.as_str());
        let a = self.aggs.iter().map(|a| a.name.as_str());
        m.chain(a).chain(self.calcs.iter().map(|c| c.name.as_str()))
    }
}

/// Where an aggregation reads entities of a blueprint: the owner blueprint, the aggregation's position in
/// the owner's spec, and the position of the blueprint on the path (0: the owner itself).
#[derive(Clone, Debug)]
pub struct Dep {
    pub owner: String,
    pub agg: usize,
    pub position: usize,
}

/// Every blueprint's derived properties and the dependency index of aggregations, rebuilt whenever a
/// blueprint is written or deleted (blueprints are few; relation targets of one blueprint shape the paths
/// of another's aggregations).
#[derive(Debug, Default)]
pub struct DerivedCatalog {
    // Read by blueprint name several times per write: a fast hash (the names are the catalog's own).
    specs: HashMap<String, Arc<DerivedSpec>, foldhash::fast::RandomState>,
    deps: HashMap<String, Vec<Dep>, foldhash::fast::RandomState>,
    /// The blueprints some aggregation's path passes through between its owner and its target: their
    /// entities are looked up when a walk goes back from a target to its owners.
    walked: std::collections::HashSet<String, foldhash::fast::RandomState>,
}

impl DerivedCatalog {
    /// Compiles every blueprint's derived properties leniently: a definition that no longer makes sense
    /// (the blueprint it went through was changed) computes null, it never fails the state.
    /// Programs already compiled in `previous` are reused.
    pub fn build<'a>(
        blueprints: impl Iterator<Item = &'a Blueprint> + Clone,
        previous: &DerivedCatalog,
    ) -> DerivedCatalog {
        let mut out = DerivedCatalog::default();
        let lookup: HashMap<&str, &Blueprint> = blueprints.clone().map(|b| (b.identifier.as_str(), b)).collect();
        let compiled: HashMap<&str, &Arc<jq::Program>> = previous
            .specs
            .values()
            .flat_map(|s| s.calcs.iter())
            .filter_map(|c| Some((c.code.as_str(), c.program.as_ref().ok()?)))
            .collect();
        for bp in blueprints {
            let (spec, _) =
                compile_with(bp, &|id| lookup.get(id).copied(), &|code| compiled.get(code).map(|p| Arc::clone(p)));
            if spec.is_empty() {
                continue;
            }
            for (i, agg) in spec.aggs.iter().enumerate() {
                if agg.error.is_some() {
                    continue;
                }
                let between = agg.path_blueprints.len().saturating_sub(1);
                out.walked.extend(agg.path_blueprints.iter().take(between).skip(1).cloned());
                for (position, through) in agg.path_blueprints.iter().enumerate() {
                    let dep = Dep { owner: bp.identifier.clone(), agg: i, position };
                    out.deps.entry(through.clone()).or_default().push(dep);
                }
            }
            out.specs.insert(bp.identifier.clone(), Arc::new(spec));
        }
        out
    }

    pub fn spec(&self, blueprint: &str) -> Option<&Arc<DerivedSpec>> {
        self.specs.get(blueprint)
    }

    /// The aggregations entities of `blueprint` feed (or own).
    pub fn deps(&self, blueprint: &str) -> &[Dep] {
        self.deps.get(blueprint).map_or(&[], Vec::as_slice)
    }

    /// Whether some aggregation's path passes through `blueprint` between its owner and its target.
    pub fn walked_through(&self, blueprint: &str) -> bool {
        self.walked.contains(blueprint)
    }

    /// The blueprints that own aggregations.
    pub fn owners(&self) -> impl Iterator<Item = (&str, &Arc<DerivedSpec>)> {
        self.specs.iter().filter(|(_, s)| !s.aggs.is_empty()).map(|(k, s)| (k.as_str(), s))
    }
}

/// Compiles a blueprint's derived properties against the blueprints `lookup` finds; answers the spec (with
/// each broken property kept, computing null) and the problems, in words.
pub fn compile<'a>(bp: &Blueprint, lookup: &dyn Fn(&str) -> Option<&'a Blueprint>) -> (DerivedSpec, Vec<String>) {
    compile_with(bp, lookup, &|_| None)
}

fn compile_with<'a>(
    bp: &Blueprint,
    lookup: &dyn Fn(&str) -> Option<&'a Blueprint>,
    known: &dyn Fn(&str) -> Option<Arc<jq::Program>>,
) -> (DerivedSpec, Vec<String>) {
    let mut spec = DerivedSpec::default();
    let mut problems = Vec::new();
    for (name, def) in &bp.mirror_properties {
        let m = Mirror::compile(name, def, bp, lookup);
        if let Some(e) = &m.error {
            problems.push(format!("mirror property `{name}`: {e}"));
        }
        spec.mirrors.push(m);
    }
    for (name, def) in &bp.aggregation_properties {
        let a = Agg::compile(name, def, bp, lookup);
        if let Some(e) = &a.error {
            problems.push(format!("aggregation property `{name}`: {e}"));
        }
        spec.aggs.push(a);
    }
    for (name, def) in &bp.calculation_properties {
        let code = def.get("calculation").and_then(Value::as_str).unwrap_or_default();
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("string").to_string();
        let program = match known(code) {
            Some(p) => Ok(p),
            None => jq::compile(code).map(Arc::new),
        };
        if let Err(e) = &program {
            problems.push(format!("calculation property `{name}`: {e}"));
        }
        if !["string", "number", "boolean", "object", "array"].contains(&ty.as_str()) {
            problems.push(format!(
                "calculation property `{name}`: `type` must be string, number, boolean, object or array"
            ));
        }
        spec.calcs.push(Calc { name: name.clone(), ty, program, code: code.to_string() });
    }
    (spec, problems)
}

/// Checks a blueprint's derived properties against the catalog it is written into (422 when wrong).
pub fn check(state: &State, bp: &Blueprint) -> Result<(), berth_model::DomainError> {
    let lookup = |id: &str| {
        if id == bp.identifier { Some(bp) } else { state.blueprint(id).map(|b| &*b.def) }
    };
    let (_, problems) = compile(bp, &lookup);
    match problems.first() {
        None => Ok(()),
        Some(p) => Err(berth_model::DomainError::InvalidBlueprint(p.clone())),
    }
}

/// An entity's derived values as `reader` sees them, and the reasons of those that are null because they
/// failed; `None` when its blueprint has no derived property.
pub fn values(state: &State, e: &Entity, reader: &dyn Sees) -> Option<(Map<String, Value>, Map<String, Value>)> {
    let spec = state.derived().spec(&e.blueprint)?;
    let mut out = Map::new();
    let mut errors = Map::new();
    for m in &spec.mirrors {
        out.insert(m.name.clone(), m.value(state, e, reader, 0));
    }
    for (i, a) in spec.aggs.iter().enumerate() {
        out.insert(a.name.clone(), aggregation::value(state, e, a, i, reader));
    }
    if !spec.calcs.is_empty() {
        let input = calc_input(e, &out);
        for c in &spec.calcs {
            let (v, err) = calculate(c, &input);
            if let Some(err) = err {
                errors.insert(c.name.clone(), Value::String(err));
            }
            out.insert(c.name.clone(), v);
        }
    }
    Some((out, errors))
}

/// One derived value of an entity as `reader` sees it (`None`: its blueprint has no derived property of
/// that name).
pub fn value(state: &State, e: &Entity, name: &str, reader: &dyn Sees) -> Option<Value> {
    value_at(state, e, name, reader, 0)
}

/// Mirrors may mirror derived properties of other blueprints; `depth` bounds the chain (a cycle of mirrors
/// ends in null).
pub(crate) fn value_at(state: &State, e: &Entity, name: &str, reader: &dyn Sees, depth: usize) -> Option<Value> {
    let spec = state.derived().spec(&e.blueprint)?;
    Some(match spec.kind(name)? {
        Kind::Mirror(i) => spec.mirrors[i].value(state, e, reader, depth),
        Kind::Aggregation(i) => aggregation::value(state, e, &spec.aggs[i], i, reader),
        Kind::Calculation(i) => {
            let mut derived = Map::new();
            for m in &spec.mirrors {
                derived.insert(m.name.clone(), m.value(state, e, reader, depth));
            }
            for (j, a) in spec.aggs.iter().enumerate() {
                derived.insert(a.name.clone(), aggregation::value(state, e, a, j, reader));
            }
            calculate(&spec.calcs[i], &calc_input(e, &derived)).0
        }
    })
}

/// What a calculation reads: the entity as the API shows it, with mirror and aggregation values among its
/// properties.
fn calc_input(e: &Entity, derived: &Map<String, Value>) -> Value {
    let mut properties: Map<String, Value> = e.properties.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    for (k, v) in derived {
        properties.insert(k.clone(), v.clone());
    }
    let relations: Map<String, Value> = e.relations.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    serde_json::json!({
        "identifier": &*e.identifier,
        "title": e.title,
        "icon": e.icon.as_deref(),
        "blueprint": &*e.blueprint,
        "team": e.team,
        "properties": properties,
        "relations": relations,
        "createdAt": e.created_at.to_rfc3339(),
        "createdBy": &*e.created_by,
        "updatedAt": e.updated_at.to_rfc3339(),
        "updatedBy": &*e.updated_by,
    })
}

/// Runs a calculation: its value (null when it failed or does not have the declared type) and why it is
/// null when it failed.
fn calculate(c: &Calc, input: &Value) -> (Value, Option<String>) {
    let program = match &c.program {
        Ok(p) => p,
        Err(e) => return (Value::Null, Some(e.clone())),
    };
    match program.run(input) {
        Err(e) => (Value::Null, Some(e)),
        Ok(Value::Null) => (Value::Null, None),
        Ok(v) => {
            let fits = match c.ty.as_str() {
                "number" => v.is_number(),
                "boolean" => v.is_boolean(),
                "object" => v.is_object(),
                "array" => v.is_array(),
                _ => true,
            };
            match (fits, c.ty.as_str(), v) {
                (true, "string", Value::String(s)) => (Value::String(s), None),
                // A string calculation of another value is that value written as text (jq's `tostring`).
                (true, "string", other) => (Value::String(other.to_string()), None),
                (true, _, v) => (v, None),
                (false, ty, v) => (
                    Value::Null,
                    Some(format!("the calculation produced {}, not a {ty}", berth_model::schema::kind_of(&v))),
                ),
            }
        }
    }
}
