//! Pages (Port's `/v1/pages`): dashboards, blueprint and entity pages, with their widgets.
//!
//! A page body: `{title, type, icon?, description?, parent?, after?, locked?, blueprint?, widgets[],
//! pageFilters[]}` (other fields Port's clients send are kept as given). `type` is `dashboard` (the default),
//! `blueprint-entities` or `entity` (both need an existing `blueprint`), or `home`. Each widget is an object
//! with a `type` and an `id` unique in the page (given one when it has none).

use berth_model::DomainError;
use serde_json::{Map, Value};

use crate::State;

/// The page types accepted.
pub const TYPES: [&str; 4] = ["dashboard", "blueprint-entities", "entity", "home"];
/// The most widgets one page holds.
pub const MAX_WIDGETS: usize = 100;
/// The longest title and widget identifier.
const MAX_TITLE: usize = 200;
const MAX_WIDGET_ID: usize = 100;

fn invalid(message: String) -> DomainError {
    DomainError::Invalid(message)
}

fn optional_string(map: &Map<String, Value>, key: &str, max: usize) -> Result<(), DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(()),
        Some(Value::String(_)) => Err(invalid(format!("`{key}` is at most {max} characters"))),
        Some(_) => Err(invalid(format!("`{key}` is a string"))),
    }
}

/// Checks a page body against the catalog and fills in its defaults (type, widget ids).
pub fn check(state: &State, mut body: Value) -> Result<Value, DomainError> {
    let Some(map) = body.as_object_mut() else { return Err(invalid("a page is a JSON object".into())) };
    match map.get("title") {
        Some(Value::String(t)) if !t.trim().is_empty() && t.chars().count() <= MAX_TITLE => {}
        Some(Value::String(_)) | None => {
            return Err(invalid(format!("a page needs a `title` of 1 to {MAX_TITLE} characters")));
        }
        Some(_) => return Err(invalid("`title` is a string".into())),
    }
    for (key, max) in [("icon", 100), ("description", 2000), ("parent", 100), ("after", 100)] {
        optional_string(map, key, max)?;
    }
    if map.get("locked").is_some_and(|v| !v.is_boolean() && !v.is_null()) {
        return Err(invalid("`locked` is true or false".into()));
    }
    let kind = match map.get("type") {
        None | Some(Value::Null) => "dashboard".to_string(),
        Some(Value::String(t)) if TYPES.contains(&t.as_str()) => t.clone(),
        Some(other) => {
            let shown = berth_model::limits::truncate(&other.to_string(), 60).to_string();
            return Err(invalid(format!("page `type` {shown} is not one of {}", TYPES.join(", "))));
        }
    };
    map.insert("type".into(), Value::String(kind.clone()));
    match map.get("blueprint") {
        Some(Value::String(bp)) => {
            if state.blueprint(bp).is_none() {
                return Err(DomainError::not_found("blueprint", bp.clone()));
            }
        }
        None | Some(Value::Null) if kind == "blueprint-entities" || kind == "entity" => {
            return Err(invalid(format!("a page of type `{kind}` names its `blueprint`")));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(invalid("`blueprint` is a blueprint identifier".into())),
    }
    if let Some(p) = map.get("permissions").filter(|p| !p.is_null()) {
        check_permissions(p)?;
    }
    if map.get("pageFilters").is_some_and(|v| !v.is_array() && !v.is_null()) {
        return Err(invalid("`pageFilters` is a list".into()));
    }
    let widgets = match map.remove("widgets") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(w)) => w,
        Some(_) => return Err(invalid("`widgets` is a list".into())),
    };
    map.insert("widgets".into(), Value::Array(check_widgets(widgets)?));
    Ok(body)
}

/// The most names one permission list holds.
const MAX_NAMES: usize = 1_000;

/// Checks a page's `permissions`: `{"read": {"users": [...], "roles": [...], "teams": [...]}}`.
fn check_permissions(p: &Value) -> Result<(), DomainError> {
    let shape =
        || invalid("`permissions` is {\"read\": {\"users\": [...], \"roles\": [...], \"teams\": [...]}}".into());
    let map = p.as_object().ok_or_else(shape)?;
    if map.keys().any(|k| k != "read") {
        return Err(shape());
    }
    let Some(read) = map.get("read").filter(|r| !r.is_null()) else { return Ok(()) };
    let read = read.as_object().ok_or_else(shape)?;
    for (key, list) in read {
        if !matches!(key.as_str(), "users" | "roles" | "teams") {
            return Err(shape());
        }
        let items = list.as_array().ok_or_else(shape)?;
        if items.len() > MAX_NAMES || !items.iter().all(|i| i.as_str().is_some_and(|s| !s.is_empty() && s.len() <= 320))
        {
            return Err(invalid(format!("`permissions.read.{key}` is a list of at most {MAX_NAMES} names")));
        }
    }
    Ok(())
}

/// Whether `principal` may read a page: Admins always; others when the page's read permission names
/// nobody (the default), or names them, one of their roles or one of their teams.
pub fn readable(body: &Value, principal: &crate::access::Principal) -> bool {
    if principal.is_admin() {
        return true;
    }
    let Some(read) = body.get("permissions").and_then(|p| p.get("read")).filter(|r| !r.is_null()) else {
        return true;
    };
    // Naming nobody is the default: everyone signed in reads the page.
    let nobody =
        ["users", "roles", "teams"].iter().all(|k| read.get(*k).and_then(Value::as_array).is_none_or(|l| l.is_empty()));
    if nobody {
        return true;
    }
    let named = |key: &str, have: &[String]| {
        read.get(key)
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str().is_some_and(|s| have.iter().any(|h| h == s))))
    };
    named("users", std::slice::from_ref(&principal.id))
        || named("roles", &principal.roles)
        || named("teams", &principal.teams)
}

/// Checks the widgets and gives those without an `id` one (`widget-<n>`, unused in the page).
fn check_widgets(mut widgets: Vec<Value>) -> Result<Vec<Value>, DomainError> {
    if widgets.len() > MAX_WIDGETS {
        return Err(invalid(format!("a page holds at most {MAX_WIDGETS} widgets, not {}", widgets.len())));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, w) in widgets.iter().enumerate() {
        let Some(map) = w.as_object() else { return Err(invalid(format!("widget {i} is not an object"))) };
        if !map.get("type").is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty() && t.len() <= 100)) {
            return Err(invalid(format!("widget {i} needs a `type` (a string)")));
        }
        match map.get("id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_WIDGET_ID => {
                if !seen.insert(id.clone()) {
                    return Err(invalid(format!("two widgets have the id `{id}`")));
                }
            }
            Some(_) => return Err(invalid(format!("widget {i}'s `id` is a string of 1 to {MAX_WIDGET_ID} bytes"))),
        }
    }
    let mut next = 1usize;
    for w in &mut widgets {
        if let Some(map) = w.as_object_mut() {
            if map.get("id").is_none_or(Value::is_null) {
                while seen.contains(&format!("widget-{next}")) {
                    next += 1;
                }
                let id = format!("widget-{next}");
                seen.insert(id.clone());
                map.insert("id".into(), Value::String(id));
            }
        }
    }
    Ok(widgets)
}

/// The page body with widget `id` merged with `patch` (top-level keys replaced; the id stays), or removed
/// when `patch` is `None`; 404 if the page has no such widget.
pub fn edit_widget(body: &Value, id: &str, patch: Option<&Value>) -> Result<Value, DomainError> {
    let mut body = body.clone();
    let widgets = body.get_mut("widgets").and_then(Value::as_array_mut);
    let Some(widgets) = widgets else { return Err(DomainError::not_found("widget", id)) };
    let at = widgets.iter().position(|w| w.get("id").and_then(Value::as_str) == Some(id));
    let Some(at) = at else { return Err(DomainError::not_found("widget", id)) };
    match patch {
        None => {
            widgets.remove(at);
        }
        Some(Value::Object(changes)) => {
            if let Some(widget) = widgets[at].as_object_mut() {
                for (k, v) in changes {
                    if k != "id" {
                        widget.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Some(_) => return Err(invalid("a widget change is a JSON object".into())),
    }
    Ok(body)
}
