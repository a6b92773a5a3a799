//! Backstage's catalog model, as its own catalog reads it (`@backstage/catalog-model`): entity references
//! (`[kind:][namespace/]name`, with a default kind per field and the entity's own namespace by default,
//! matched case-insensitively), the validation Backstage applies to a descriptor (apiVersion, kind, names,
//! namespaces, tags, the spec fields each kind requires), and the relations its built-in processor derives,
//! both directions. Pure: the import command reads files and writes entities; the catalog API serves them back.

use serde_json::{Map, Value, json};

/// The largest descriptor file read, and the most documents in one.
pub const MAX_FILE_BYTES: usize = 64 * 1024 * 1024;
pub const MAX_DOCUMENTS: usize = 200_000;

/// The YAML documents of a descriptor file, as JSON values (empty documents left out). A document that is
/// not YAML is an error naming it (1-based), so one bad document does not hide the others' reasons.
pub fn documents(text: &str) -> Vec<Result<Value, String>> {
    use serde::Deserialize;
    if text.len() > MAX_FILE_BYTES {
        return vec![Err(format!("the file is {} bytes; at most {MAX_FILE_BYTES} are read", text.len()))];
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        if i >= MAX_DOCUMENTS {
            out.push(Err(format!("more than {MAX_DOCUMENTS} documents; the rest are not read")));
            break;
        }
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => out.push(Ok(v)),
            Err(e) => {
                out.push(Err(format!("document {}: {e}", i + 1)));
                // A syntax error ends the stream: the parser cannot find the next document reliably.
                break;
            }
        }
    }
    out
}

/// The kinds Berth imports (Backstage's built-in ones).
pub const KINDS: [&str; 9] =
    ["Component", "API", "Resource", "System", "Domain", "Group", "User", "Location", "Template"];

/// The namespace of an entity that names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// A reference to an entity: kind, namespace and name as written (compare with [`EntityRef::key`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl EntityRef {
    /// Reads `[kind:][namespace/]name`; `default_kind` for a reference without one (`None`: the kind is
    /// required), `default_namespace` likewise.
    pub fn parse(s: &str, default_kind: Option<&str>, default_namespace: &str) -> Result<EntityRef, String> {
        let s = s.trim();
        let (kind, rest) = match s.split_once(':') {
            Some((k, rest)) if !k.is_empty() && !k.contains('/') => (k.to_string(), rest),
            Some(_) => return Err(format!("{s:?} is not an entity reference ([kind:][namespace/]name)")),
            None => match default_kind {
                Some(k) => (k.to_string(), s),
                None => return Err(format!("{s:?} names no kind (write kind:[namespace/]name)")),
            },
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns.to_string(), name.to_string()),
            None => (default_namespace.to_string(), rest.to_string()),
        };
        if name.is_empty() || namespace.is_empty() || name.contains('/') || name.contains(':') {
            return Err(format!("{s:?} is not an entity reference ([kind:][namespace/]name)"));
        }
        Ok(EntityRef { kind, namespace, name })
    }

    /// The canonical form Backstage writes: `kind:namespace/name`, lower-cased (`component:default/x`).
    pub fn key(&self) -> String {
        format!("{}:{}/{}", self.kind, self.namespace, self.name).to_lowercase()
    }
}

impl std::fmt::Display for EntityRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.kind.to_lowercase(), self.namespace, self.name)
    }
}

/// A derived relation of one entity: its type and the entity it points at.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relation {
    pub kind: &'static str,
    pub target: EntityRef,
}

/// An entity read from a descriptor and validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Entity {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `metadata` as authored (title, description, labels, annotations, tags, links, ...).
    pub metadata: Map<String, Value>,
    pub spec: Map<String, Value>,
}

impl Entity {
    pub fn entity_ref(&self) -> EntityRef {
        EntityRef { kind: self.kind.clone(), namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fn is_tag(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.split('-').all(|part| {
            !part.is_empty()
                && part.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b':' | b'+' | b'#'))
        })
}

/// The `apiVersion`s a kind is accepted with.
fn api_versions(kind: &str) -> &'static [&'static str] {
    match kind {
        "Template" => &["scaffolder.backstage.io/v1beta3", "backstage.io/v1beta2"],
        _ => &["backstage.io/v1alpha1", "backstage.io/v1beta1"],
    }
}

/// The spec fields a kind requires, and which must be lists.
fn required(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "Component" => (&["type", "lifecycle", "owner"], &[]),
        // `definition` is required unless the API names its `remotes` (an MCP server, say): see `parse`.
        "API" => (&["type", "lifecycle", "owner"], &[]),
        "Resource" => (&["type", "owner"], &[]),
        "System" | "Domain" => (&["owner"], &[]),
        "Group" => (&["type", "children"], &["children"]),
        "User" => (&["memberOf"], &["memberOf"]),
        "Template" => (&["type"], &[]),
        _ => (&[], &[]),
    }
}

/// Reads and validates one descriptor as Backstage would; the reason it would be rejected otherwise.
pub fn parse(doc: &Value) -> Result<Entity, String> {
    let root = doc.as_object().ok_or("a descriptor is a mapping")?;
    let kind = root.get("kind").and_then(Value::as_str).ok_or("`kind` is missing")?;
    if !KINDS.contains(&kind) {
        return Err(format!("kind `{kind}` is not one Berth imports ({})", KINDS.join(", ")));
    }
    let api_version = root.get("apiVersion").and_then(Value::as_str).ok_or("`apiVersion` is missing")?;
    if !api_versions(kind).contains(&api_version) {
        return Err(format!(
            "`apiVersion` {api_version:?} is not valid for kind {kind} ({})",
            api_versions(kind).join(" or ")
        ));
    }
    let metadata = root.get("metadata").and_then(Value::as_object).ok_or("`metadata` is missing")?.clone();
    let name = metadata.get("name").and_then(Value::as_str).ok_or("`metadata.name` is missing")?;
    if !is_name(name) {
        return Err(format!(
            "`metadata.name` {name:?} is not valid: 1 to 63 letters, digits and -_. , starting and ending with a letter or digit"
        ));
    }
    let namespace = match metadata.get("namespace") {
        None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
        Some(Value::String(ns)) if is_dns_label(ns) => ns.clone(),
        Some(other) => {
            return Err(format!("`metadata.namespace` {other} is not valid: 1 to 63 lower-case letters, digits and -"));
        }
    };
    match metadata.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tags)) => {
            if let Some(bad) = tags.iter().find(|t| !t.as_str().is_some_and(is_tag)) {
                return Err(format!(
                    "`metadata.tags` holds {bad}, not a valid tag (lower-case letters, digits and :+#, joined by -)"
                ));
            }
        }
        Some(_) => return Err("`metadata.tags` is a list".into()),
    }
    for field in ["labels", "annotations"] {
        match metadata.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => return Err(format!("`metadata.{field}` maps names to strings")),
        }
    }
    let spec = match root.get("spec") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("`spec` is a mapping".into()),
    };
    let (fields, lists) = required(kind);
    for f in fields {
        if spec.get(*f).is_none_or(Value::is_null) {
            return Err(format!("`spec.{f}` is required for kind {kind}"));
        }
    }
    for f in lists {
        if !spec.get(*f).is_some_and(Value::is_array) {
            return Err(format!("`spec.{f}` is a list"));
        }
    }
    if kind == "API" && spec.get("definition").is_none_or(Value::is_null) && spec.get("remotes").is_none() {
        return Err("`spec.definition` is required for kind API (or `spec.remotes`)".into());
    }
    if kind == "Location" && spec.get("target").is_none() && spec.get("targets").is_none() {
        return Err("a Location needs `spec.target` or `spec.targets`".into());
    }
    Ok(Entity {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
        metadata,
        spec,
    })
}

/// One relation-bearing spec field: where it is, the kind a bare name means, and the relation (and its
/// reverse) it makes.
struct Field {
    field: &'static str,
    default_kind: Option<&'static str>,
    forward: &'static str,
    reverse: &'static str,
}

const fn f(
    field: &'static str,
    default_kind: Option<&'static str>,
    forward: &'static str,
    reverse: &'static str,
) -> Field {
    Field { field, default_kind, forward, reverse }
}

const OWNER: Field = f("owner", Some("Group"), "ownedBy", "ownerOf");
const SYSTEM: Field = f("system", Some("System"), "partOf", "hasPart");
const DEPENDS_ON: Field = f("dependsOn", None, "dependsOn", "dependencyOf");
const DEPENDENCY_OF: Field = f("dependencyOf", None, "dependencyOf", "dependsOn");
const COMPONENT: &[Field] = &[
    OWNER,
    f("subcomponentOf", Some("Component"), "partOf", "hasPart"),
    f("providesApis", Some("API"), "providesApi", "apiProvidedBy"),
    f("consumesApis", Some("API"), "consumesApi", "apiConsumedBy"),
    DEPENDS_ON,
    DEPENDENCY_OF,
    SYSTEM,
];
const API: &[Field] = &[OWNER, SYSTEM];
const RESOURCE: &[Field] = &[OWNER, DEPENDS_ON, DEPENDENCY_OF, SYSTEM];
const SYSTEM_KIND: &[Field] = &[OWNER, f("domain", Some("Domain"), "partOf", "hasPart")];
const DOMAIN: &[Field] = &[OWNER, f("subdomainOf", Some("Domain"), "partOf", "hasPart")];
const USER: &[Field] = &[f("memberOf", Some("Group"), "memberOf", "hasMember")];
const GROUP: &[Field] = &[
    f("parent", Some("Group"), "childOf", "parentOf"),
    f("children", Some("Group"), "parentOf", "childOf"),
    f("members", Some("User"), "hasMember", "memberOf"),
];
const TEMPLATE: &[Field] = &[OWNER];

/// The fields Backstage's built-in processor turns into relations, per kind.
fn fields(kind: &str) -> &'static [Field] {
    match kind {
        "Component" => COMPONENT,
        "API" => API,
        "Resource" => RESOURCE,
        "System" => SYSTEM_KIND,
        "Domain" => DOMAIN,
        "User" => USER,
        "Group" => GROUP,
        "Template" => TEMPLATE,
        _ => &[],
    }
}

/// The relations an entity declares (forward) and the reverse ones its targets get, as
/// `(from, relation)`; references that do not parse are returned as errors (reported, not invented).
pub fn relations(e: &Entity) -> (Vec<(EntityRef, Relation)>, Vec<String>) {
    let me = e.entity_ref();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for field in fields(&e.kind) {
        let values: Vec<&str> = match e.spec.get(field.field) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        for v in values {
            match EntityRef::parse(v, field.default_kind, &e.namespace) {
                Ok(target) => {
                    out.push((me.clone(), Relation { kind: field.forward, target: target.clone() }));
                    out.push((target, Relation { kind: field.reverse, target: me.clone() }));
                }
                Err(reason) => errors.push(format!("`spec.{}`: {reason}", field.field)),
            }
        }
    }
    (out, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(kind: &str, ns: &str, name: &str) -> EntityRef {
        EntityRef { kind: kind.into(), namespace: ns.into(), name: name.into() }
    }

    #[test]
    fn references_take_their_defaults_and_compare_without_case() {
        assert_eq!(EntityRef::parse("team-a", Some("Group"), "acme"), Ok(r("Group", "acme", "team-a")));
        assert_eq!(EntityRef::parse("user:jdoe", Some("Group"), "acme"), Ok(r("user", "acme", "jdoe")));
        assert_eq!(EntityRef::parse("other/team-b", Some("Group"), "acme"), Ok(r("Group", "other", "team-b")));
        assert_eq!(
            EntityRef::parse("Component:Default/Petstore", None, "x").map(|r| r.key()),
            Ok("component:default/petstore".into())
        );
        assert!(EntityRef::parse("artists-db", None, "default").is_err(), "dependsOn needs a kind");
        for bad in ["", ":x", "a:b/c/d", "a:/x", "a:ns/"] {
            assert!(EntityRef::parse(bad, Some("Group"), "default").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descriptors_are_validated_as_backstage_validates_them() {
        let ok = json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "petstore", "namespace": "shop", "tags": ["java", "c++"], "annotations": {"a/b": "c"}},
            "spec": {"type": "service", "lifecycle": "production", "owner": "team-a", "providesApis": ["petstore"],
                     "dependsOn": ["resource:db"], "system": "default/store"}});
        let e = parse(&ok).expect("valid");
        assert_eq!((e.namespace.as_str(), e.name.as_str()), ("shop", "petstore"));
        let (rels, errors) = relations(&e);
        assert!(errors.is_empty(), "{errors:?}");
        let me = e.entity_ref();
        for (from, kind, to) in [
            (me.clone(), "ownedBy", r("Group", "shop", "team-a")),
            (r("Group", "shop", "team-a"), "ownerOf", me.clone()),
            (me.clone(), "providesApi", r("API", "shop", "petstore")),
            (r("API", "shop", "petstore"), "apiProvidedBy", me.clone()),
            (me.clone(), "dependsOn", r("resource", "shop", "db")),
            (r("resource", "shop", "db"), "dependencyOf", me.clone()),
            (me.clone(), "partOf", r("System", "default", "store")),
            (r("System", "default", "store"), "hasPart", me.clone()),
        ] {
            assert!(
                rels.contains(&(from.clone(), Relation { kind, target: to.clone() })),
                "{from} {kind} {to}: {rels:?}"
            );
        }
        for (patch, says) in [
            (json!({"apiVersion": "backstage.io/v2"}), "apiVersion"),
            (json!({"kind": "Widget"}), "kind `Widget`"),
            (json!({"metadata": {"name": "invalid component"}}), "metadata.name"),
            (json!({"metadata": {"name": "x", "namespace": "Shop"}}), "metadata.namespace"),
            (json!({"metadata": {"name": "x", "tags": ["go 1.15.3"]}}), "metadata.tags"),
            (json!({"spec": {"type": "service", "owner": "a"}}), "spec.lifecycle"),
            (json!({"metadata": {"name": "-x"}}), "metadata.name"),
        ] {
            let mut doc = ok.clone();
            for (k, v) in patch.as_object().into_iter().flatten() {
                doc[k] = v.clone();
            }
            let e = parse(&doc).expect_err("refused");
            assert!(e.contains(says), "{e} should name {says}");
        }
        let group = json!({"apiVersion": "backstage.io/v1alpha1", "kind": "Group", "metadata": {"name": "g"},
            "spec": {"type": "team", "children": "x"}});
        assert!(parse(&group).expect_err("children is a list").contains("spec.children"));
    }

    #[test]
    fn several_documents_are_read_and_a_broken_one_is_named() {
        let text = "---\nkind: A\n---\n\n---\nkind: B\n";
        let docs: Vec<Value> = documents(text).into_iter().map(|d| d.expect("yaml")).collect();
        assert_eq!(docs, vec![json!({"kind": "A"}), json!({"kind": "B"})]);
        let broken = documents("kind: A\n---\nkind: [unclosed\n");
        assert!(
            broken[0].is_ok() && broken.last().is_some_and(|d| d.as_ref().is_err_and(|e| e.contains("document 2")))
        );
    }

    proptest::proptest! {
        #[test]
        fn no_text_makes_the_readers_panic(text in "[ -~\\n]{0,300}") {
            for doc in documents(&text).into_iter().flatten() {
                if let Ok(e) = parse(&doc) {
                    let _ = relations(&e);
                }
            }
            let _ = EntityRef::parse(&text, Some("Group"), "default");
            let _ = EntityRef::parse(&text, None, "default");
        }

        #[test]
        fn a_reference_reads_back_from_its_key(kind in "[A-Za-z][a-z0-9A-Z]{0,8}", ns in "[a-z0-9][a-z0-9-]{0,6}", name in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,10}") {
            let r = EntityRef { kind, namespace: ns, name };
            let back = EntityRef::parse(&r.key(), None, "default").expect("parses");
            proptest::prop_assert_eq!(back.key(), r.key());
        }
    }
}

/// Backstage's catalog `filter` query parameters: each parameter is one set of conditions that must all
/// hold (`kind=component,spec.type=service`; several values of one key are alternatives), the parameters
/// are alternatives; a key alone means "exists".
/// Keys are dotted paths into the entity (`metadata.name`, `spec.owner`, `relations.ownedBy`); values match
/// without case, and a list matches when any element does.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter(pub Vec<Vec<(String, Option<String>)>>);

/// The most conditions one request's filters hold, and the longest key or value.
pub const MAX_FILTER_CONDITIONS: usize = 100;
pub const MAX_FILTER_TEXT: usize = 1_000;

impl Filter {
    /// Reads the `filter` parameters.
    pub fn parse(params: &[String]) -> Result<Filter, String> {
        let mut sets = Vec::new();
        let mut count = 0;
        for p in params {
            let mut set = Vec::new();
            for part in p.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                count += 1;
                if count > MAX_FILTER_CONDITIONS {
                    return Err(format!("at most {MAX_FILTER_CONDITIONS} filter conditions"));
                }
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().to_string())),
                    None => (part, None),
                };
                if key.is_empty()
                    || key.len() > MAX_FILTER_TEXT
                    || value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_TEXT)
                {
                    return Err(format!("{:?} is not a filter (key=value or key)", crate::limits::truncate(part, 60)));
                }
                set.push((key.to_string(), value));
            }
            if !set.is_empty() {
                sets.push(set);
            }
        }
        Ok(Filter(sets))
    }

    /// Whether `entity` (an entity in Backstage's shape) passes: no filter passes everything. In one set,
    /// conditions on the same key are alternatives (`kind=component,kind=api`), different keys must all hold.
    pub fn matches(&self, entity: &Value) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|set| {
                set.iter().all(|(key, _)| {
                    set.iter()
                        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                        .any(|(k, v)| condition(entity, k, v.as_deref()))
                })
            })
    }
}

/// Filter keys and the property of an imported entity (`berth import backstage`'s blueprints) that holds
/// the same value; `kind` is the blueprint.
pub const RULE_PROPERTIES: [(&str, &str); 8] = [
    ("kind", "$blueprint"),
    ("metadata.name", "name"),
    ("metadata.namespace", "namespace"),
    ("metadata.description", "description"),
    ("spec.type", "type"),
    ("spec.lifecycle", "lifecycle"),
    ("spec.owner", "owner"),
    ("spec.system", "system"),
];

impl Filter {
    /// The same filter in Berth's rules language, over the entities `berth import backstage` wrote (with
    /// blueprints `<prefix><kind>`): sets become an `or` of `and` groups, a key's values an `or`, a key alone
    /// `isNotEmpty`, `metadata.tags` a `containsAny`. Backstage compares values without case, the rules
    /// language exactly: `kind` is lower-cased (blueprints are), other values are kept as given. A key no
    /// property holds is an error naming the keys that can be used.
    pub fn to_rules(&self, prefix: &str) -> Result<Value, String> {
        let mut sets = Vec::new();
        for set in &self.0 {
            let mut by_key: Vec<(String, Vec<Value>)> = Vec::new();
            for (key, value) in set {
                let rule = rule_of(key, value.as_deref(), prefix)?;
                let key = key.to_lowercase();
                match by_key.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, rules)) => rules.push(rule),
                    None => by_key.push((key, vec![rule])),
                }
            }
            let rules: Vec<Value> = by_key
                .into_iter()
                .map(
                    |(_, mut rules)| {
                        if rules.len() == 1 { rules.remove(0) } else { json!({"combinator": "or", "rules": rules}) }
                    },
                )
                .collect();
            sets.push(json!({"combinator": "and", "rules": rules}));
        }
        Ok(match sets.len() {
            0 => json!({"combinator": "and", "rules": []}),
            1 => sets.remove(0),
            _ => json!({"combinator": "or", "rules": sets}),
        })
    }
}

fn rule_of(key: &str, value: Option<&str>, prefix: &str) -> Result<Value, String> {
    let lower = key.to_lowercase();
    if lower == "metadata.tags" {
        return Ok(match value {
            Some(v) => json!({"property": "tags", "operator": "containsAny", "value": [v]}),
            None => json!({"property": "tags", "operator": "isNotEmpty"}),
        });
    }
    let Some((_, property)) = RULE_PROPERTIES.iter().find(|(k, _)| *k == lower) else {
        let usable: Vec<&str> = RULE_PROPERTIES.iter().map(|(k, _)| *k).chain(["metadata.tags"]).collect();
        return Err(format!("`{key}` has no property in Berth's catalog (these do: {})", usable.join(", ")));
    };
    Ok(match (value, *property) {
        (Some(v), "$blueprint") => {
            json!({"property": "$blueprint", "operator": "=", "value": format!("{prefix}{}", v.to_lowercase())})
        }
        (Some(v), p) => json!({"property": p, "operator": "=", "value": v}),
        (None, "$blueprint") => json!({"property": "$identifier", "operator": "isNotEmpty"}),
        (None, p) => json!({"property": p, "operator": "isNotEmpty"}),
    })
}

/// Backstage's `fields` as the properties Berth's search `include` names: a field a property holds by
/// itself is that property; anything else (`spec.definition`, `metadata.links`, `apiVersion`) is in the
/// `descriptor`; `relations...` are `relations`. Always with `$identifier`.
pub fn include_of(fields: &[String]) -> Vec<String> {
    let mut out = vec!["$identifier".to_string()];
    for f in fields {
        let lower = f.to_lowercase();
        let property = if lower == "metadata.tags" {
            "tags"
        } else if lower == "relations" || lower.starts_with("relations.") {
            "relations"
        } else {
            match RULE_PROPERTIES.iter().find(|(k, _)| *k == lower) {
                Some((_, "$blueprint")) | None => "descriptor",
                Some((_, p)) => p,
            }
        };
        if !out.iter().any(|o| o == property) {
            out.push(property.to_string());
        }
    }
    out
}

/// The values at a dotted path (`relations.ownedBy` reads the targets of that relation type; a list yields
/// each element).
pub fn values_at(entity: &Value, path: &str) -> Vec<String> {
    let lower = path.to_lowercase();
    if let Some(kind) = lower.strip_prefix("relations.") {
        return entity["relations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["type"].as_str().is_some_and(|t| t.to_lowercase() == kind))
            .filter_map(|r| r["targetRef"].as_str().map(str::to_string))
            .collect();
    }
    let mut at = vec![entity];
    for segment in path.split('.') {
        at = at
            .into_iter()
            .flat_map(|v| match v {
                Value::Object(m) => {
                    m.iter().filter(|(k, _)| k.eq_ignore_ascii_case(segment)).map(|(_, v)| v).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .collect();
    }
    at.into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        })
        .collect()
}

fn condition(entity: &Value, key: &str, value: Option<&str>) -> bool {
    let found = values_at(entity, key);
    match value {
        None => !found.is_empty(),
        Some(v) => found.iter().any(|f| f.eq_ignore_ascii_case(v)),
    }
}

/// An entity with only the dotted `fields` kept (Backstage's `fields` parameter); none keeps everything.
pub fn project(entity: &Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return entity.clone();
    }
    let mut out = Value::Object(Map::new());
    for f in fields {
        let parts: Vec<&str> = f.split('.').collect();
        let mut src = entity;
        let mut found = true;
        for p in &parts {
            match src.get(*p) {
                Some(v) => src = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        let mut dst = &mut out;
        for p in &parts[..parts.len() - 1] {
            if !dst.get(*p).is_some_and(Value::is_object) {
                dst[*p] = Value::Object(Map::new());
            }
            dst = &mut dst[*p];
        }
        if let Some(last) = parts.last() {
            dst[*last] = src.clone();
        }
    }
    out
}

#[cfg(test)]
mod filter_tests {
    use super::*;
    use serde_json::json;

    fn e() -> Value {
        json!({"kind": "Component", "metadata": {"name": "Petstore", "namespace": "default", "tags": ["java", "web"]},
            "spec": {"type": "service", "owner": "team-a"},
            "relations": [{"type": "ownedBy", "targetRef": "group:default/team-a"}]})
    }

    #[test]
    fn filters_match_as_backstages_do() {
        let f = |ps: &[&str]| Filter::parse(&ps.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses");
        assert!(f(&["kind=component,spec.type=SERVICE"]).matches(&e()));
        assert!(!f(&["kind=component,spec.type=website"]).matches(&e()));
        assert!(f(&["kind=api", "metadata.tags=java"]).matches(&e()), "alternatives");
        assert!(f(&["kind=api,kind=component,spec.type=service"]).matches(&e()), "values of one key are alternatives");
        assert!(!f(&["kind=api,kind=component,spec.type=website"]).matches(&e()));
        assert!(f(&["relations.ownedBy=group:default/team-a"]).matches(&e()));
        assert!(f(&["spec.owner"]).matches(&e()) && !f(&["spec.lifecycle"]).matches(&e()), "exists");
        assert!(f(&["metadata.name=petstore"]).matches(&e()), "no case");
        assert!(f(&[]).matches(&e()));
        assert!(Filter::parse(&[",=x"].map(String::from)).is_err());
        assert!(
            Filter::parse(&[(0..=MAX_FILTER_CONDITIONS).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",")])
                .is_err()
        );
        assert_eq!(
            project(&e(), &["kind".into(), "metadata.name".into(), "spec.nothing".into()]),
            json!({"kind": "Component", "metadata": {"name": "Petstore"}})
        );
    }

    proptest::proptest! {
        #[test]
        fn no_filter_text_panics(ps in proptest::collection::vec("[ -~]{0,40}", 0..4)) {
            if let Ok(f) = Filter::parse(&ps) {
                let _ = f.matches(&e());
            }
        }

        /// Any filter that parses is, in the rules language, a query Berth's parser takes, or an error that
        /// names the key no property holds.
        #[test]
        fn filters_become_queries_the_rules_parser_takes(
            sets in proptest::collection::vec(proptest::collection::vec(
                ("(kind|KIND|metadata\\.(name|namespace|tags|description|links)|spec\\.(type|lifecycle|owner|system|x))",
                 proptest::option::of("[ -+\\--~]{1,12}")), 1..5), 0..4),
        ) {
            let params: Vec<String> = sets.iter().map(|set| set.iter().map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            }).collect::<Vec<_>>().join(",")).collect();
            let Ok(filter) = Filter::parse(&params) else { return Ok(()) };
            match filter.to_rules("bs-") {
                Ok(rules) => {
                    proptest::prop_assert!(crate::query::Query::parse(&rules).is_ok(), "{}", rules);
                }
                Err(e) => proptest::prop_assert!(e.contains("has no property"), "{}", e),
            }
        }
    }

    #[test]
    fn filters_and_fields_in_berths_terms() {
        let f =
            Filter::parse(&["kind=Component,spec.type=service,spec.type=website".into(), "metadata.tags=java".into()])
                .expect("parses");
        assert_eq!(
            f.to_rules("bs-").expect("rules"),
            json!({"combinator": "or", "rules": [
                {"combinator": "and", "rules": [
                    {"property": "$blueprint", "operator": "=", "value": "bs-component"},
                    {"combinator": "or", "rules": [
                        {"property": "type", "operator": "=", "value": "service"},
                        {"property": "type", "operator": "=", "value": "website"}]}]},
                {"combinator": "and", "rules": [{"property": "tags", "operator": "containsAny", "value": ["java"]}]}]})
        );
        let err =
            Filter::parse(&["spec.profile.email=x".into()]).expect("parses").to_rules("").expect_err("no property");
        assert!(err.contains("`spec.profile.email`") && err.contains("spec.owner"), "{err}");
        assert_eq!(
            include_of(&["metadata.name".into(), "spec.definition".into(), "kind".into(), "relations.ownedBy".into()]),
            ["$identifier", "name", "descriptor", "relations"]
        );
    }
}
