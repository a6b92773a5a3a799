//! Blueprint property definitions, compiled once into validators.
//!
//! Port's property language is a subset of JSON Schema: `type` (string, number, boolean, object, array),
//! `format`, `enum`, `pattern`, `minLength`/`maxLength`, `minimum`/`maximum` (and the exclusive forms),
//! `minItems`/`maxItems` and `items` for arrays, `default`. Every other key (`title`, `icon`, `enumColors`,
//! `spec`, ...) is kept verbatim by the blueprint and ignored here.
//! Compiling validates the definition itself; [`PropertySchema::validate`] checks a value against it.

use regex::Regex;
use serde_json::{Map, Value};

use crate::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyType {
    String,
    Number,
    Boolean,
    Object,
    Array,
}

impl PropertyType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Boolean => "boolean",
            Self::Object => "object",
            Self::Array => "array",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            Self::String => v.is_string(),
            Self::Number => v.is_number(),
            Self::Boolean => v.is_boolean(),
            Self::Object => v.is_object(),
            Self::Array => v.is_array(),
        }
    }
}

/// The string formats Port knows. `Other` formats are checked by nothing but the type.
pub const STRING_FORMATS: &[&str] = &[
    "date-time",
    "url",
    "email",
    "idn-email",
    "ipv4",
    "ipv6",
    "markdown",
    "yaml",
    "user",
    "blueprints",
    "team",
    "timer",
    "proto",
    "labeled-url",
    "idn-format",
    "entity",
];

#[derive(Clone, Debug)]
pub struct PropertySchema {
    pub ty: PropertyType,
    pub format: Option<String>,
    pub enumeration: Option<Vec<Value>>,
    pub pattern: Option<Regex>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: Option<f64>,
    pub exclusive_maximum: Option<f64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub items: Option<Box<PropertySchema>>,
    pub default: Option<Value>,
}

fn num(def: &Map<String, Value>, key: &str, name: &str) -> Result<Option<f64>, String> {
    match def.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(format!("property `{name}`: `{key}` must be a number, got {}", kind_of(other))),
    }
}

fn count(def: &Map<String, Value>, key: &str, name: &str) -> Result<Option<u64>, String> {
    match def.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().map(Some).ok_or_else(|| format!("property `{name}`: `{key}` must be a non-negative integer"))
        }
        Some(other) => Err(format!("property `{name}`: `{key}` must be an integer, got {}", kind_of(other))),
    }
}

/// A short name of a JSON value's kind, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

impl PropertySchema {
    /// Compiles a property definition; `name` is used in error messages.
    pub fn compile(name: &str, def: &Value) -> Result<PropertySchema, String> {
        let def =
            def.as_object().ok_or_else(|| format!("property `{name}` must be an object, got {}", kind_of(def)))?;
        let ty = match def.get("type") {
            Some(Value::String(t)) => PropertyType::parse(t).ok_or_else(|| {
                format!("property `{name}`: type `{t}` is not one of string, number, boolean, object, array")
            })?,
            Some(other) => return Err(format!("property `{name}`: `type` must be a string, got {}", kind_of(other))),
            None => return Err(format!("property `{name}`: `type` is required")),
        };
        let format = match def.get("format") {
            None | Some(Value::Null) => None,
            Some(Value::String(f)) => {
                if !STRING_FORMATS.contains(&f.as_str()) {
                    return Err(format!(
                        "property `{name}`: format `{f}` is unknown (known: {})",
                        STRING_FORMATS.join(", ")
                    ));
                }
                if !matches!(ty, PropertyType::String | PropertyType::Object)
                    || (ty == PropertyType::Object && f != "labeled-url")
                {
                    return Err(format!("property `{name}`: format `{f}` applies to strings, not {}", ty.name()));
                }
                Some(f.clone())
            }
            Some(other) => {
                return Err(format!("property `{name}`: `format` must be a string, got {}", kind_of(other)));
            }
        };
        let pattern = match def.get("pattern") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => {
                if ty != PropertyType::String {
                    return Err(format!("property `{name}`: `pattern` applies to strings only"));
                }
                Some(
                    regex::RegexBuilder::new(p)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|e| format!("property `{name}`: pattern is not a valid regular expression: {e}"))?,
                )
            }
            Some(other) => {
                return Err(format!("property `{name}`: `pattern` must be a string, got {}", kind_of(other)));
            }
        };
        let items = match def.get("items") {
            None | Some(Value::Null) => None,
            Some(items) => {
                if ty != PropertyType::Array {
                    return Err(format!("property `{name}`: `items` applies to arrays only"));
                }
                let mut items = items.clone();
                // Port allows `items: {}` meaning "anything"; it also adds `timer` as an item format.
                if let Some(obj) = items.as_object_mut() {
                    if !obj.contains_key("type") {
                        return Ok(PropertySchema {
                            items: None,
                            ..Self::compile_rest(name, def, ty, format, pattern)?
                        });
                    }
                    if obj.get("format").and_then(Value::as_str) == Some("idn-format") {
                        obj.remove("format");
                    }
                }
                Some(Box::new(PropertySchema::compile(&format!("{name}[]"), &items)?))
            }
        };
        Ok(PropertySchema { items, ..Self::compile_rest(name, def, ty, format, pattern)? })
    }

    fn compile_rest(
        name: &str,
        def: &Map<String, Value>,
        ty: PropertyType,
        format: Option<String>,
        pattern: Option<Regex>,
    ) -> Result<PropertySchema, String> {
        let enumeration = match def.get("enum") {
            None | Some(Value::Null) => None,
            Some(Value::Array(values)) => {
                if values.is_empty() {
                    return Err(format!("property `{name}`: `enum` must list at least one value"));
                }
                for v in values {
                    if !v.is_null() && !ty.matches(v) {
                        return Err(format!(
                            "property `{name}`: enum value {v} is a {}, the property is a {}",
                            kind_of(v),
                            ty.name()
                        ));
                    }
                }
                Some(values.clone())
            }
            Some(other) => {
                return Err(format!("property `{name}`: `enum` must be an array, got {}", kind_of(other)));
            }
        };
        let schema = PropertySchema {
            ty,
            format,
            enumeration,
            pattern,
            min_length: count(def, "minLength", name)?,
            max_length: count(def, "maxLength", name)?,
            minimum: num(def, "minimum", name)?,
            maximum: num(def, "maximum", name)?,
            exclusive_minimum: num(def, "exclusiveMinimum", name)?,
            exclusive_maximum: num(def, "exclusiveMaximum", name)?,
            min_items: count(def, "minItems", name)?,
            max_items: count(def, "maxItems", name)?,
            items: None,
            default: def.get("default").filter(|v| !v.is_null()).cloned(),
        };
        if let (Some(lo), Some(hi)) = (schema.minimum, schema.maximum) {
            if lo > hi {
                return Err(format!("property `{name}`: minimum {lo} is greater than maximum {hi}"));
            }
        }
        if let (Some(lo), Some(hi)) = (schema.min_length, schema.max_length) {
            if lo > hi {
                return Err(format!("property `{name}`: minLength {lo} is greater than maxLength {hi}"));
            }
        }
        if let (Some(lo), Some(hi)) = (schema.min_items, schema.max_items) {
            if lo > hi {
                return Err(format!("property `{name}`: minItems {lo} is greater than maxItems {hi}"));
            }
        }
        Ok(schema)
    }

    /// Checks the default value, once `items` is known.
    pub fn check_default(&self, name: &str) -> Result<(), String> {
        match &self.default {
            Some(d) => self.validate(name, d).map_err(|e| format!("default value is invalid: {e}")),
            None => Ok(()),
        }
    }

    /// Validates a non-null value. `path` names the value in the message (`properties.replicas`); it is only
    /// written out when the value is refused (validation runs for every property of every write).
    pub fn validate<P: std::fmt::Display + ?Sized>(&self, path: &P, v: &Value) -> Result<(), String> {
        if !self.ty.matches(v) {
            return Err(format!("`{path}` must be a {}, got {}", self.ty.name(), kind_of(v)));
        }
        if let Some(allowed) = &self.enumeration {
            if !allowed.iter().any(|a| a == v || numbers_equal(a, v)) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!("`{path}` is {v}, which is not one of [{}]", list.join(", ")));
            }
        }
        match v {
            Value::String(s) => self.validate_string(path, s),
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(lo) = self.minimum.filter(|lo| x < *lo) {
                    return Err(format!("`{path}` is {n}, below the minimum {lo}"));
                }
                if let Some(hi) = self.maximum.filter(|hi| x > *hi) {
                    return Err(format!("`{path}` is {n}, above the maximum {hi}"));
                }
                if let Some(lo) = self.exclusive_minimum.filter(|lo| x <= *lo) {
                    return Err(format!("`{path}` is {n}, it must be greater than {lo}"));
                }
                if let Some(hi) = self.exclusive_maximum.filter(|hi| x >= *hi) {
                    return Err(format!("`{path}` is {n}, it must be less than {hi}"));
                }
                Ok(())
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(lo) = self.min_items.filter(|lo| n < *lo) {
                    return Err(format!("`{path}` has {n} items, at least {lo} are required"));
                }
                if let Some(hi) = self.max_items.filter(|hi| n > *hi) {
                    return Err(format!("`{path}` has {n} items, at most {hi} are allowed"));
                }
                if let Some(item_schema) = &self.items {
                    for (i, item) in items.iter().enumerate() {
                        item_schema.validate(&format_args!("{path}[{i}]"), item)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn validate_string<P: std::fmt::Display + ?Sized>(&self, path: &P, s: &str) -> Result<(), String> {
        let len = s.chars().count() as u64;
        if let Some(lo) = self.min_length.filter(|lo| len < *lo) {
            return Err(format!("`{path}` has {len} characters, at least {lo} are required"));
        }
        if let Some(hi) = self.max_length.filter(|hi| len > *hi) {
            return Err(format!("`{path}` has {len} characters, at most {hi} are allowed"));
        }
        if let Some(re) = &self.pattern {
            if !re.is_match(s) {
                return Err(format!("`{path}` does not match the pattern `{}`", re.as_str()));
            }
        }
        let ok = match self.format.as_deref() {
            Some("date-time" | "timer") => Timestamp::parse(s).is_some(),
            Some("url") => is_url(s),
            Some("email" | "idn-email") => is_email(s),
            Some("ipv4") => s.parse::<std::net::Ipv4Addr>().is_ok(),
            Some("ipv6") => s.parse::<std::net::Ipv6Addr>().is_ok(),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            let format = self.format.as_deref().unwrap_or_default();
            let hint = match format {
                "date-time" | "timer" => " (RFC 3339, e.g. 2024-06-09T09:57:52Z)",
                "url" => " (an absolute URL such as https://example.com)",
                _ => "",
            };
            Err(format!("`{path}` is not a valid {format}{hint}"))
        }
    }
}

fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn is_url(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
        && !rest.is_empty()
        && !rest.starts_with('/')
        && !s.chars().any(char::is_whitespace)
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn schema(def: Value) -> PropertySchema {
        PropertySchema::compile("p", &def).expect("compiles")
    }

    #[test]
    fn rejects_bad_definitions() {
        for def in [
            json!({"type": "text"}),
            json!({}),
            json!({"type": "number", "format": "url"}),
            json!({"type": "string", "format": "nope"}),
            json!({"type": "string", "enum": []}),
            json!({"type": "string", "enum": [1]}),
            json!({"type": "string", "pattern": "("}),
            json!({"type": "number", "minimum": 5, "maximum": 1}),
            json!({"type": "string", "minLength": -1}),
            json!("string"),
        ] {
            assert!(PropertySchema::compile("p", &def).is_err(), "{def}");
        }
    }

    #[test]
    fn validates_formats() {
        let s = schema(json!({"type": "string", "format": "url"}));
        assert!(s.validate("p", &json!("https://example.com/x")).is_ok());
        assert!(s.validate("p", &json!("example.com")).is_err());
        let s = schema(json!({"type": "string", "format": "date-time"}));
        assert!(s.validate("p", &json!("2024-01-01T00:00:00Z")).is_ok());
        assert!(s.validate("p", &json!("2024-01-01")).is_err());
        let s = schema(json!({"type": "string", "format": "email"}));
        assert!(s.validate("p", &json!("a@b.io")).is_ok());
        assert!(s.validate("p", &json!("a.b.io")).is_err());
        let s = schema(json!({"type": "string", "format": "ipv4"}));
        assert!(s.validate("p", &json!("10.0.0.1")).is_ok());
        assert!(s.validate("p", &json!("10.0.0.256")).is_err());
        let s = schema(json!({"type": "string", "format": "ipv6"}));
        assert!(s.validate("p", &json!("::1")).is_ok());
    }

    #[test]
    fn validates_constraints() {
        let s = schema(json!({"type": "number", "minimum": 0, "maximum": 10}));
        assert!(s.validate("p", &json!(10)).is_ok());
        assert!(s.validate("p", &json!(10.5)).is_err());
        assert!(s.validate("p", &json!("5")).is_err());
        let s = schema(json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2}));
        assert!(s.validate("p", &json!(["a", "b"])).is_ok());
        assert!(s.validate("p", &json!(["a", "c"])).is_err());
        assert!(s.validate("p", &json!(["a", "a", "b"])).is_err());
        let s = schema(json!({"type": "string", "pattern": "^[a-z]+$", "minLength": 2}));
        assert!(s.validate("p", &json!("ab")).is_ok());
        assert!(s.validate("p", &json!("a")).is_err());
        assert!(s.validate("p", &json!("AB")).is_err());
        let s = schema(json!({"type": "number", "enum": [1, 2]}));
        assert!(s.validate("p", &json!(2.0)).is_ok());
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|n| json!(n)),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The validator never panics, on any definition and any value.
        #[test]
        fn never_panics(def in arb_json(), v in arb_json()) {
            if let Ok(s) = PropertySchema::compile("p", &def) {
                let _ = s.validate("p", &v);
            }
        }

        /// A value of the wrong JSON type is always refused.
        #[test]
        fn type_is_enforced(v in arb_json()) {
            for ty in ["string", "number", "boolean", "object", "array"] {
                let s = schema(json!({"type": ty}));
                let expected = PropertyType::parse(ty).map(|t| t.matches(&v)).unwrap_or(false);
                prop_assert_eq!(s.validate("p", &v).is_ok(), expected, "{} {}", ty, v);
            }
        }

        /// Numeric bounds are inclusive and exact.
        #[test]
        fn number_bounds(lo in -1000i64..1000, span in 0i64..1000, x in -3000i64..3000) {
            let s = schema(json!({"type": "number", "minimum": lo, "maximum": lo + span}));
            prop_assert_eq!(s.validate("p", &json!(x)).is_ok(), x >= lo && x <= lo + span);
        }

        /// String length limits count characters, not bytes.
        #[test]
        fn string_lengths(max in 0u64..20, s in "\\PC{0,30}") {
            let sch = schema(json!({"type": "string", "maxLength": max}));
            prop_assert_eq!(sch.validate("p", &json!(s)).is_ok(), s.chars().count() as u64 <= max);
        }

        /// Enum membership decides validity.
        #[test]
        fn enums(values in prop::collection::vec("[a-d]", 1..4), v in "[a-f]") {
            let sch = schema(json!({"type": "string", "enum": values}));
            prop_assert_eq!(sch.validate("p", &json!(v)).is_ok(), values.contains(&v));
        }
    }
}
