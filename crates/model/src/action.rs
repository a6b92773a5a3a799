//! Self-service actions and automations (Port's action object, `../shared/brief/port-api.md` §6.1): what a
//! user may run on a blueprint's entities, or what runs by itself when something changes, and how it is
//! invoked. This module reads and checks an action's body; pure: no I/O, no jq (the engine compiles every
//! jq expression an action holds: [`Action::jq`] lists them with where they are).
//!
//! Body: `{title?, icon?, description?, trigger, invocationMethod, requiredApproval?, approvalNotification?,
//! publish?, allowAnyoneToViewRuns?}`:
//! - `trigger`: `{"type": "self-service", "operation": CREATE | DAY-2 | DELETE, "blueprintIdentifier",
//!   "userInputs"?: {properties, required?, order?, steps?, titles?}, "condition"?: rules-language query
//!   (which entities show it; DAY-2 and DELETE only), "actionCardButtonText"?, "executeActionButtonText"?}`,
//!   or `{"type": "automation", "event": {"type", "blueprintIdentifier" | "propertyIdentifier" |
//!   "actionIdentifier"}, "condition"?: {"type": "JQ", "expressions": [...], "combinator": and | or}}`;
//! - `invocationMethod`: `WEBHOOK`, `GITHUB`, `GITLAB`, `AZURE_DEVOPS`, `KAFKA`, `UPSERT_ENTITY` or
//!   `INTEGRATION_ACTION`, each with the fields Port's API gives it; every string in it may hold `{{ jq }}`
//!   templates over the trigger data;
//! - `requiredApproval`: `false`, `true` (any approver) or `{"type": "ANY" | "ALL"}`.

use serde_json::{Map, Value};

use crate::DomainError;
use crate::query::Query;

/// The most user inputs an action takes.
pub const MAX_INPUTS: usize = 100;
/// The most jq expressions one action holds (conditions, templates, input rules).
pub const MAX_JQ: usize = 500;
/// The longest text field (a title, a URL, a template).
const MAX_TEXT: usize = 4096;

/// What a self-service action does to its blueprint's entities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Day2,
    Delete,
}

/// What makes an automation run.
#[derive(Clone, Debug, PartialEq)]
pub enum AutomationEvent {
    /// `ENTITY_CREATED`, `ENTITY_UPDATED`, `ENTITY_DELETED` or `ANY_ENTITY_CHANGE` on a blueprint.
    Entity { kind: String, blueprint: String },
    /// `TIMER_PROPERTY_EXPIRED`: a `timer` property of a blueprint's entities ran out.
    Timer { blueprint: String, property: String },
    /// `RUN_CREATED`, `RUN_UPDATED` or `ANY_RUN_CHANGE` of an action.
    Run { kind: String, action: String },
}

/// How an action or automation starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Trigger {
    SelfService {
        operation: Operation,
        blueprint: String,
        /// The inputs' names, in their form order.
        inputs: Vec<String>,
        /// Which entities show it (DAY-2 and DELETE).
        condition: Option<Query>,
    },
    Automation {
        event: AutomationEvent,
    },
}

/// Who must approve a run before it is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    None,
    Any,
    All,
}

/// An action, read from its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub title: Option<String>,
    pub trigger: Trigger,
    /// `invocationMethod.type`.
    pub invocation: &'static str,
    pub approval: Approval,
    pub publish: bool,
    /// Every jq expression the action holds: (where, code).
    pub jq: Vec<(String, String)>,
}

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
}

fn text(v: &Value, what: &str) -> Result<String, DomainError> {
    match v.as_str() {
        Some(s) if !s.is_empty() && s.len() <= MAX_TEXT => Ok(s.to_string()),
        Some(_) => Err(invalid(format!("`{what}` is 1 to {MAX_TEXT} characters"))),
        None => Err(invalid(format!("`{what}` is a string"))),
    }
}

fn required_text(map: &Map<String, Value>, key: &str, what: &str) -> Result<String, DomainError> {
    text(map.get(key).ok_or_else(|| invalid(format!("`{what}.{key}` is required")))?, &format!("{what}.{key}"))
}

fn object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, DomainError> {
    v.as_object().ok_or_else(|| invalid(format!("`{what}` is an object")))
}

fn only(map: &Map<String, Value>, what: &str, allowed: &[&str]) -> Result<(), DomainError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "`{what}` has no field {:?} (it has {})",
            crate::limits::truncate(k, 60),
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn boolean(map: &Map<String, Value>, key: &str, default: bool) -> Result<bool, DomainError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("`{key}` is true or false"))),
    }
}

/// An input property name, as Port allows them.
fn input_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && name.chars().all(|c| c.is_ascii_alphanumeric() || "@_=-".contains(c))
}

const INPUT_TYPES: [&str; 5] = ["string", "number", "boolean", "object", "array"];
const INPUT_FORMATS: [&str; 13] = [
    "date-time",
    "url",
    "email",
    "ipv4",
    "ipv6",
    "yaml",
    "entity",
    "user",
    "team",
    "proto",
    "markdown",
    "multi-line",
    "labeled-url",
];
const INPUT_KEYS: [&str; 26] = [
    "type",
    "title",
    "description",
    "icon",
    "default",
    "enum",
    "enumColors",
    "format",
    "blueprint",
    "dependsOn",
    "visible",
    "disabled",
    "dataset",
    "encryption",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "items",
    "sort",
    "required",
    "properties",
    "additionalProperties",
];

/// Collects the templates of a string (`{{ jq }}`) and of every string inside a value.
fn templates(v: &Value, at: &str, jq: &mut Vec<(String, String)>) -> Result<(), DomainError> {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(open) = rest.find("{{") {
                let after = &rest[open + 2..];
                let close = after.find("}}").ok_or_else(|| invalid(format!("`{at}` has `{{{{` without `}}}}`")))?;
                let code = after[..close].trim();
                if code.is_empty() {
                    return Err(invalid(format!("`{at}` has an empty `{{{{ }}}}`")));
                }
                jq.push((at.to_string(), code.to_string()));
                rest = &after[close + 2..];
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                templates(item, &format!("{at}[{i}]"), jq)?;
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                templates(item, &format!("{at}.{k}"), jq)?;
            }
        }
        _ => {}
    }
    if jq.len() > MAX_JQ {
        return Err(invalid(format!("an action holds at most {MAX_JQ} jq expressions")));
    }
    Ok(())
}

/// A value that is a boolean or `{"jqQuery": "..."}`.
fn bool_or_jq(v: &Value, at: &str, jq: &mut Vec<(String, String)>) -> Result<(), DomainError> {
    match v {
        Value::Bool(_) => Ok(()),
        Value::Object(m) if m.len() == 1 && m.contains_key("jqQuery") => {
            jq.push((at.to_string(), text(&m["jqQuery"], &format!("{at}.jqQuery"))?));
            Ok(())
        }
        _ => Err(invalid(format!("`{at}` is true, false or {{\"jqQuery\": \"...\"}}"))),
    }
}

/// The keys of a user input that say how the form shows it, not what a value may be.
const FORM_KEYS: [&str; 12] = [
    "title",
    "description",
    "icon",
    "enumColors",
    "blueprint",
    "dependsOn",
    "visible",
    "disabled",
    "dataset",
    "encryption",
    "sort",
    "required",
];

/// A user input's definition as a property validator (type, format, enum, pattern, bounds, items): the
/// form's keys left out, the formats only forms know (`multi-line`) read as plain strings, a `{"jqQuery"}`
/// default left to the engine.
pub fn input_schema(name: &str, def: &Value) -> Result<crate::schema::PropertySchema, String> {
    let mut def = def.clone();
    if let Some(map) = def.as_object_mut() {
        for key in FORM_KEYS {
            map.remove(key);
        }
        if map.get("format").and_then(Value::as_str).is_some_and(|f| !crate::schema::STRING_FORMATS.contains(&f)) {
            map.remove("format");
        }
        if map.get("default").is_some_and(|d| d.get("jqQuery").is_some()) {
            map.remove("default");
        }
        // An object input's own keys (`properties`, `additionalProperties`) are not checked value by value.
        map.remove("properties");
        map.remove("additionalProperties");
        if let Some(items) = map.get_mut("items").and_then(Value::as_object_mut) {
            for key in FORM_KEYS {
                items.remove(key);
            }
        }
    }
    let schema = crate::schema::PropertySchema::compile(name, &def)?;
    schema.check_default(name)?;
    Ok(schema)
}

impl Action {
    /// Reads and checks a body (unknown fields are refused, so a typo is not silently ignored).
    pub fn parse(body: &Value) -> Result<Action, DomainError> {
        let map = object(body, "action")?;
        only(
            map,
            "action",
            &[
                "title",
                "icon",
                "description",
                "trigger",
                "invocationMethod",
                "requiredApproval",
                "approvalNotification",
                "publish",
                "allowAnyoneToViewRuns",
            ],
        )?;
        let title = match map.get("title") {
            None | Some(Value::Null) => None,
            Some(t) => Some(text(t, "title")?),
        };
        for key in ["icon", "description"] {
            if let Some(v) = map.get(key).filter(|v| !v.is_null()) {
                text(v, key)?;
            }
        }
        let mut jq = Vec::new();
        let trigger = Self::trigger(map.get("trigger").ok_or_else(|| invalid("`trigger` is required"))?, &mut jq)?;
        let invocation = Self::invocation(
            map.get("invocationMethod").ok_or_else(|| invalid("`invocationMethod` is required"))?,
            &mut jq,
        )?;
        let approval = match map.get("requiredApproval") {
            None | Some(Value::Null) | Some(Value::Bool(false)) => Approval::None,
            Some(Value::Bool(true)) => Approval::Any,
            Some(Value::Object(m)) if m.len() == 1 => match m.get("type").and_then(Value::as_str) {
                Some("ANY") => Approval::Any,
                Some("ALL") => Approval::All,
                _ => return Err(invalid("`requiredApproval.type` is ANY or ALL")),
            },
            Some(_) => return Err(invalid("`requiredApproval` is true, false or {\"type\": \"ANY\" | \"ALL\"}")),
        };
        if let Some(n) = map.get("approvalNotification").filter(|v| !v.is_null()) {
            let n = object(n, "approvalNotification")?;
            only(n, "approvalNotification", &["type", "url", "format"])?;
            match n.get("type").and_then(Value::as_str) {
                Some("email") => {}
                Some("webhook") => {
                    let url = required_text(n, "url", "approvalNotification")?;
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(invalid("`approvalNotification.url` is an http:// or https:// URL"));
                    }
                    if let Some(f) = n.get("format").filter(|v| !v.is_null()) {
                        if !matches!(f.as_str(), Some("json" | "slack")) {
                            return Err(invalid("`approvalNotification.format` is json or slack"));
                        }
                    }
                }
                _ => return Err(invalid("`approvalNotification.type` is email or webhook")),
            }
        }
        let publish = boolean(map, "publish", true)?;
        boolean(map, "allowAnyoneToViewRuns", true)?;
        if let Trigger::Automation { .. } = trigger {
            if approval != Approval::None {
                return Err(invalid("an automation runs by itself: `requiredApproval` is for self-service actions"));
            }
        }
        Ok(Action { title, trigger, invocation, approval, publish, jq })
    }

    fn trigger(v: &Value, jq: &mut Vec<(String, String)>) -> Result<Trigger, DomainError> {
        let t = object(v, "trigger")?;
        match t.get("type").and_then(Value::as_str) {
            Some("self-service") => {
                only(
                    t,
                    "trigger",
                    &[
                        "type",
                        "operation",
                        "blueprintIdentifier",
                        "userInputs",
                        "condition",
                        "actionCardButtonText",
                        "executeActionButtonText",
                    ],
                )?;
                let operation = match t.get("operation").and_then(Value::as_str) {
                    Some("CREATE") => Operation::Create,
                    Some("DAY-2") => Operation::Day2,
                    Some("DELETE") => Operation::Delete,
                    _ => return Err(invalid("`trigger.operation` is CREATE, DAY-2 or DELETE")),
                };
                let blueprint = required_text(t, "blueprintIdentifier", "trigger")?;
                for key in ["actionCardButtonText", "executeActionButtonText"] {
                    if let Some(v) = t.get(key).filter(|v| !v.is_null()) {
                        text(v, &format!("trigger.{key}"))?;
                    }
                }
                let condition = match t.get("condition").filter(|v| !v.is_null()) {
                    None => None,
                    Some(_) if operation == Operation::Create => {
                        return Err(invalid(
                            "`trigger.condition` says which entities show the action: DAY-2 and DELETE only",
                        ));
                    }
                    Some(c) => {
                        let mut c = object(c, "trigger.condition")?.clone();
                        if c.get("type").is_some_and(|t| t != "SEARCH") {
                            return Err(invalid("`trigger.condition.type` is SEARCH"));
                        }
                        c.remove("type");
                        Some(
                            Query::parse(&Value::Object(c))
                                .map_err(|e| invalid(format!("`trigger.condition`: {e}")))?,
                        )
                    }
                };
                let inputs = match t.get("userInputs").filter(|v| !v.is_null()) {
                    None => Vec::new(),
                    Some(u) => Self::inputs(u, jq)?,
                };
                Ok(Trigger::SelfService { operation, blueprint, inputs, condition })
            }
            Some("automation") => {
                only(t, "trigger", &["type", "event", "condition"])?;
                let e = object(t.get("event").ok_or_else(|| invalid("`trigger.event` is required"))?, "trigger.event")?;
                only(e, "trigger.event", &["type", "blueprintIdentifier", "propertyIdentifier", "actionIdentifier"])?;
                let kind = e.get("type").and_then(Value::as_str).unwrap_or_default();
                let event = match kind {
                    "ENTITY_CREATED" | "ENTITY_UPDATED" | "ENTITY_DELETED" | "ANY_ENTITY_CHANGE" => {
                        AutomationEvent::Entity {
                            kind: kind.to_string(),
                            blueprint: required_text(e, "blueprintIdentifier", "trigger.event")?,
                        }
                    }
                    "TIMER_PROPERTY_EXPIRED" => AutomationEvent::Timer {
                        blueprint: required_text(e, "blueprintIdentifier", "trigger.event")?,
                        property: required_text(e, "propertyIdentifier", "trigger.event")?,
                    },
                    "RUN_CREATED" | "RUN_UPDATED" | "ANY_RUN_CHANGE" => AutomationEvent::Run {
                        kind: kind.to_string(),
                        action: required_text(e, "actionIdentifier", "trigger.event")?,
                    },
                    _ => {
                        return Err(invalid(
                            "`trigger.event.type` is ENTITY_CREATED, ENTITY_UPDATED, ENTITY_DELETED, ANY_ENTITY_CHANGE, \
                             TIMER_PROPERTY_EXPIRED, RUN_CREATED, RUN_UPDATED or ANY_RUN_CHANGE",
                        ));
                    }
                };
                if let Some(c) = t.get("condition").filter(|v| !v.is_null()) {
                    let c = object(c, "trigger.condition")?;
                    only(c, "trigger.condition", &["type", "expressions", "combinator"])?;
                    if c.get("type").and_then(Value::as_str) != Some("JQ") {
                        return Err(invalid("an automation's `trigger.condition.type` is JQ"));
                    }
                    if !matches!(c.get("combinator").and_then(Value::as_str), None | Some("and" | "or")) {
                        return Err(invalid("`trigger.condition.combinator` is and or or"));
                    }
                    let expressions = c
                        .get("expressions")
                        .and_then(Value::as_array)
                        .filter(|a| !a.is_empty())
                        .ok_or_else(|| invalid("`trigger.condition.expressions` is a list of jq expressions"))?;
                    for (i, x) in expressions.iter().enumerate() {
                        let at = format!("trigger.condition.expressions[{i}]");
                        jq.push((at.clone(), text(x, &at)?));
                    }
                }
                Ok(Trigger::Automation { event })
            }
            _ => Err(invalid("`trigger.type` is self-service or automation")),
        }
    }

    /// The user inputs: a JSON-schema-like object of named inputs; answers the names in form order.
    fn inputs(v: &Value, jq: &mut Vec<(String, String)>) -> Result<Vec<String>, DomainError> {
        let u = object(v, "trigger.userInputs")?;
        only(u, "trigger.userInputs", &["properties", "required", "order", "steps", "titles"])?;
        let properties = match u.get("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(p) => object(p, "trigger.userInputs.properties")?.clone(),
        };
        if properties.len() > MAX_INPUTS {
            return Err(invalid(format!("an action takes at most {MAX_INPUTS} inputs")));
        }
        let names: Vec<String> = properties.keys().cloned().collect();
        let known = |n: &Value, at: &str| -> Result<String, DomainError> {
            let n = text(n, at)?;
            if names.contains(&n) { Ok(n) } else { Err(invalid(format!("`{at}` names no input: {n:?}"))) }
        };
        for (name, input) in &properties {
            let at = format!("trigger.userInputs.properties.{name}");
            if !input_name(name) {
                return Err(invalid(format!(
                    "input {:?}: a name of letters, digits, `@ _ = -`",
                    crate::limits::truncate(name, 60)
                )));
            }
            let i = object(input, &at)?;
            only(i, &at, &INPUT_KEYS)?;
            let kind = i.get("type").and_then(Value::as_str).unwrap_or_default();
            if !INPUT_TYPES.contains(&kind) {
                return Err(invalid(format!("`{at}.type` is one of {}", INPUT_TYPES.join(", "))));
            }
            input_schema(name, input).map_err(|e| invalid(format!("`{at}`: {e}")))?;
            if let Some(f) = i.get("format").filter(|v| !v.is_null()) {
                let f = f.as_str().unwrap_or_default();
                if !INPUT_FORMATS.contains(&f) {
                    return Err(invalid(format!("`{at}.format` is one of {}", INPUT_FORMATS.join(", "))));
                }
                if f == "entity" {
                    required_text(i, "blueprint", &at)?;
                }
            }
            if let Some(e) = i.get("enum").filter(|v| !v.is_null()) {
                if !e.as_array().is_some_and(|a| !a.is_empty() && a.len() <= 1000) {
                    return Err(invalid(format!("`{at}.enum` is a list of 1 to 1,000 values")));
                }
            }
            if let Some(e) = i.get("encryption").filter(|v| !v.is_null()) {
                if kind != "string" || !matches!(e.as_str(), Some("aes256-gcm")) {
                    return Err(invalid(format!("`{at}.encryption` is aes256-gcm, on a string input")));
                }
            }
            for key in ["visible", "disabled"] {
                if let Some(v) = i.get(key).filter(|v| !v.is_null()) {
                    bool_or_jq(v, &format!("{at}.{key}"), jq)?;
                }
            }
            if let Some(d) = i.get("dependsOn").filter(|v| !v.is_null()) {
                for (k, n) in
                    d.as_array().ok_or_else(|| invalid(format!("`{at}.dependsOn` is a list")))?.iter().enumerate()
                {
                    known(n, &format!("{at}.dependsOn[{k}]"))?;
                }
            }
            if let Some(d) = i.get("dataset").filter(|v| !v.is_null()) {
                // Rule values may be {"jqQuery"} (over the form and the user): those are checked as jq, and
                // the rules around them once their values are known (when the form asks for the choices); a
                // dataset without any is checked as rules now.
                let mut dataset = d.clone();
                let mut found = Vec::new();
                collect_jq_queries(&mut dataset, &format!("{at}.dataset"), &mut found);
                if found.is_empty() {
                    Query::parse(&dataset).map_err(|e| invalid(format!("`{at}.dataset`: {e}")))?;
                } else if !dataset.get("rules").is_some_and(Value::is_array) {
                    return Err(invalid(format!("`{at}.dataset` is {{combinator, rules}}")));
                }
                jq.extend(found);
            }
            if let Some(p) = i.get("pattern").filter(|v| !v.is_null()) {
                text(p, &format!("{at}.pattern"))?;
            }
            if let Some(d) = i.get("default") {
                if let Value::Object(m) = d {
                    if m.len() == 1 && m.contains_key("jqQuery") {
                        bool_or_jq(d, &format!("{at}.default"), jq)?;
                    }
                }
            }
        }
        match u.get("required") {
            None | Some(Value::Null) => {}
            Some(Value::Array(r)) => {
                for (k, n) in r.iter().enumerate() {
                    known(n, &format!("trigger.userInputs.required[{k}]"))?;
                }
            }
            Some(r @ Value::Object(_)) => bool_or_jq(r, "trigger.userInputs.required", jq)?,
            Some(_) => return Err(invalid("`trigger.userInputs.required` is a list of inputs or {\"jqQuery\"}")),
        }
        let mut order = Vec::new();
        if let Some(o) = u.get("order").filter(|v| !v.is_null()) {
            for (k, n) in
                o.as_array().ok_or_else(|| invalid("`trigger.userInputs.order` is a list"))?.iter().enumerate()
            {
                order.push(known(n, &format!("trigger.userInputs.order[{k}]"))?);
            }
        }
        if let Some(steps) = u.get("steps").filter(|v| !v.is_null()) {
            let steps = steps.as_array().ok_or_else(|| invalid("`trigger.userInputs.steps` is a list"))?;
            for (s, step) in steps.iter().enumerate() {
                let at = format!("trigger.userInputs.steps[{s}]");
                let step = object(step, &at)?;
                only(step, &at, &["title", "order"])?;
                required_text(step, "title", &at)?;
                for (k, n) in step.get("order").and_then(Value::as_array).into_iter().flatten().enumerate() {
                    known(n, &format!("{at}.order[{k}]"))?;
                }
            }
        }
        // Form order: the listed ones first, then the rest as written.
        for n in &names {
            if !order.contains(n) {
                order.push(n.clone());
            }
        }
        Ok(order)
    }

    fn invocation(v: &Value, jq: &mut Vec<(String, String)>) -> Result<&'static str, DomainError> {
        let m = object(v, "invocationMethod")?;
        let kind = m.get("type").and_then(Value::as_str).unwrap_or_default();
        let (kind, fields, required): (&'static str, &[&str], &[&str]) = match kind {
            "WEBHOOK" => ("WEBHOOK", &["type", "url", "agent", "synchronized", "method", "headers", "body"], &["url"]),
            "GITHUB" => (
                "GITHUB",
                &["type", "org", "repo", "workflow", "workflowInputs", "reportWorkflowStatus"],
                &["org", "repo", "workflow"],
            ),
            "GITLAB" => (
                "GITLAB",
                &["type", "projectName", "groupName", "defaultRef", "pipelineVariables"],
                &["projectName", "groupName"],
            ),
            "AZURE_DEVOPS" => ("AZURE_DEVOPS", &["type", "webhook", "org", "payload"], &["webhook", "org"]),
            "KAFKA" => ("KAFKA", &["type", "payload"], &[]),
            "UPSERT_ENTITY" => {
                ("UPSERT_ENTITY", &["type", "blueprintIdentifier", "mapping"], &["blueprintIdentifier", "mapping"])
            }
            "INTEGRATION_ACTION" => (
                "INTEGRATION_ACTION",
                &["type", "installationId", "integrationActionType", "integrationActionExecutionProperties"],
                &["installationId", "integrationActionType"],
            ),
            _ => {
                return Err(invalid(
                    "`invocationMethod.type` is WEBHOOK, GITHUB, GITLAB, AZURE_DEVOPS, KAFKA, UPSERT_ENTITY or \
                     INTEGRATION_ACTION",
                ));
            }
        };
        only(m, &format!("invocationMethod ({kind})"), fields)?;
        for key in required {
            if m.get(*key).is_none_or(Value::is_null) {
                return Err(invalid(format!("`invocationMethod.{key}` is required for {kind}")));
            }
        }
        if kind == "WEBHOOK" {
            let url = required_text(m, "url", "invocationMethod")?;
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("{{")) {
                return Err(invalid("`invocationMethod.url` is an http:// or https:// URL (or a template)"));
            }
            if let Some(method) = m.get("method").filter(|v| !v.is_null()) {
                if !matches!(method.as_str(), Some("POST" | "PUT" | "PATCH" | "DELETE" | "GET")) {
                    return Err(invalid("`invocationMethod.method` is POST, PUT, PATCH, DELETE or GET"));
                }
            }
            if let Some(h) = m.get("headers").filter(|v| !v.is_null()) {
                if !object(h, "invocationMethod.headers")?.values().all(Value::is_string) {
                    return Err(invalid("`invocationMethod.headers` maps names to strings"));
                }
            }
            for key in ["agent", "synchronized"] {
                match m.get(key) {
                    None | Some(Value::Null | Value::Bool(_)) => {}
                    Some(Value::String(_)) => {}
                    Some(_) => {
                        return Err(invalid(format!("`invocationMethod.{key}` is true, false or a jq template")));
                    }
                }
            }
        }
        if kind == "UPSERT_ENTITY" {
            let mapping = object(&m["mapping"], "invocationMethod.mapping")?;
            only(
                mapping,
                "invocationMethod.mapping",
                &["identifier", "title", "team", "icon", "properties", "relations"],
            )?;
        }
        for (key, value) in m {
            if key != "type" {
                templates(value, &format!("invocationMethod.{key}"), jq)?;
            }
        }
        Ok(kind)
    }

    /// The blueprint the action is about (a self-service action's, an entity or timer automation's).
    pub fn blueprint(&self) -> Option<&str> {
        match &self.trigger {
            Trigger::SelfService { blueprint, .. } => Some(blueprint),
            Trigger::Automation { event: AutomationEvent::Entity { blueprint, .. } }
            | Trigger::Automation { event: AutomationEvent::Timer { blueprint, .. } } => Some(blueprint),
            Trigger::Automation { event: AutomationEvent::Run { .. } } => None,
        }
    }

    /// `self-service` or `automation`.
    pub fn trigger_type(&self) -> &'static str {
        match self.trigger {
            Trigger::SelfService { .. } => "self-service",
            Trigger::Automation { .. } => "automation",
        }
    }
}

/// Replaces each `{"jqQuery": code}` rule value in a dataset with null (so the rest parses as rules), and
/// collects the code with where it was.
fn collect_jq_queries(v: &mut Value, at: &str, found: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if m.len() == 1 && m.get("jqQuery").is_some_and(Value::is_string) => {
            found.push((at.to_string(), m["jqQuery"].as_str().unwrap_or_default().to_string()));
            *v = Value::Null;
        }
        Value::Object(m) => {
            for (k, item) in m.iter_mut() {
                collect_jq_queries(item, &format!("{at}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                collect_jq_queries(item, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Port's own example (§6.1) reads, with its jq expressions found where they are.
    #[test]
    fn ports_example_reads_with_its_jq() {
        let a = Action::parse(&json!({
            "title": "Scaffold", "icon": "Git", "description": "...",
            "trigger": {
                "type": "self-service", "operation": "CREATE", "blueprintIdentifier": "service",
                "userInputs": {
                    "properties": {
                        "name": {"type": "string", "title": "Name", "pattern": "^[a-z-]+$"},
                        "lang": {"type": "string", "enum": ["go", "rust"], "enumColors": {"go": "blue"}, "default": "rust"},
                        "team": {"type": "string", "format": "team"},
                        "svc": {"type": "string", "format": "entity", "blueprint": "service",
                            "dataset": {"combinator": "and", "rules": [{"property": "$team", "operator": "containsAny",
                                "value": {"jqQuery": ".user.teams"}}]}},
                        "secret": {"type": "string", "encryption": "aes256-gcm"},
                        "env": {"type": "string", "visible": {"jqQuery": ".form.lang == \"go\""}, "dependsOn": ["lang"]}
                    },
                    "required": ["name"], "order": ["name", "lang"],
                    "steps": [{"title": "Basics", "order": ["name"]}]
                },
                "actionCardButtonText": "Create", "executeActionButtonText": "Run"
            },
            "invocationMethod": {"type": "WEBHOOK", "url": "https://x/hook", "agent": false, "synchronized": false,
                "method": "POST", "headers": {"X-A": "b"}, "body": {"name": "{{ .inputs.name }}", "runId": "{{ .run.id }}"}},
            "requiredApproval": {"type": "ALL"},
            "approvalNotification": {"type": "webhook", "url": "https://x/approve", "format": "slack"},
            "publish": true, "allowAnyoneToViewRuns": true
        }))
        .expect("Port's example");
        assert_eq!(a.invocation, "WEBHOOK");
        assert_eq!(a.approval, Approval::All);
        assert_eq!(a.blueprint(), Some("service"));
        let Trigger::SelfService { inputs, operation, .. } = &a.trigger else { panic!("self-service") };
        assert_eq!(*operation, Operation::Create);
        assert_eq!(&inputs[..2], ["name", "lang"], "the listed order first");
        assert_eq!(inputs.len(), 6);
        let mut where_: Vec<&str> = a.jq.iter().map(|(at, _)| at.as_str()).collect();
        where_.sort();
        assert_eq!(
            where_,
            [
                "invocationMethod.body.name",
                "invocationMethod.body.runId",
                "trigger.userInputs.properties.env.visible",
                "trigger.userInputs.properties.svc.dataset.rules[0].value",
            ]
        );
        assert!(a.jq.contains(&("invocationMethod.body.runId".into(), ".run.id".into())));
    }

    #[test]
    fn automations_read_each_event() {
        for (event, blueprint) in [
            (json!({"type": "ENTITY_UPDATED", "blueprintIdentifier": "service"}), Some("service")),
            (
                json!({"type": "TIMER_PROPERTY_EXPIRED", "blueprintIdentifier": "env", "propertyIdentifier": "ttl"}),
                Some("env"),
            ),
            (json!({"type": "ANY_RUN_CHANGE", "actionIdentifier": "deploy"}), None),
        ] {
            let a = Action::parse(&json!({
                "trigger": {"type": "automation", "event": event,
                    "condition": {"type": "JQ", "expressions": [".diff.after.properties.status == \"Active\""], "combinator": "and"}},
                "invocationMethod": {"type": "KAFKA", "payload": {"id": "{{ .event.context.entityIdentifier }}"}}
            }))
            .expect("an automation");
            assert_eq!(a.trigger_type(), "automation");
            assert_eq!(a.blueprint(), blueprint);
            assert_eq!(a.jq.len(), 2);
        }
    }

    #[test]
    fn bad_actions_say_why() {
        let ok_trigger = json!({"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "service"});
        let ok_invocation = json!({"type": "WEBHOOK", "url": "https://x"});
        for (body, says) in [
            (json!([]), "object"),
            (json!({"invocationMethod": ok_invocation}), "`trigger` is required"),
            (json!({"trigger": ok_trigger}), "`invocationMethod` is required"),
            (json!({"trigger": ok_trigger, "invocationMethod": ok_invocation, "titel": "x"}), "no field"),
            (json!({"trigger": {"type": "manual"}, "invocationMethod": ok_invocation}), "self-service or automation"),
            (
                json!({"trigger": {"type": "self-service", "operation": "RUN", "blueprintIdentifier": "s"},
                "invocationMethod": ok_invocation}),
                "CREATE, DAY-2",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "CREATE", "blueprintIdentifier": "s",
                "condition": {"combinator": "and", "rules": []}}, "invocationMethod": ok_invocation}),
                "DAY-2 and DELETE only",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "s",
                "userInputs": {"properties": {"a b": {"type": "string"}}}}, "invocationMethod": ok_invocation}),
                "a name of",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "s",
                "userInputs": {"properties": {"a": {"type": "text"}}}}, "invocationMethod": ok_invocation}),
                ".type` is one of",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "s",
                "userInputs": {"properties": {"a": {"type": "string", "format": "entity"}}}}, "invocationMethod": ok_invocation}),
                "blueprint` is required",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "s",
                "userInputs": {"properties": {"a": {"type": "string"}}, "required": ["b"]}}, "invocationMethod": ok_invocation}),
                "names no input",
            ),
            (
                json!({"trigger": {"type": "self-service", "operation": "DAY-2", "blueprintIdentifier": "s",
                "userInputs": {"properties": {"a": {"type": "number", "encryption": "aes256-gcm"}}}}, "invocationMethod": ok_invocation}),
                "on a string input",
            ),
            (
                json!({"trigger": ok_trigger, "invocationMethod": {"type": "GITHUB", "org": "o", "repo": "r"}}),
                "`invocationMethod.workflow` is required",
            ),
            (json!({"trigger": ok_trigger, "invocationMethod": {"type": "SMTP"}}), "WEBHOOK, GITHUB"),
            (json!({"trigger": ok_trigger, "invocationMethod": {"type": "WEBHOOK", "url": "ftp://x"}}), "http://"),
            (
                json!({"trigger": ok_trigger, "invocationMethod": {"type": "WEBHOOK", "url": "https://x", "body": {"a": "{{ .x"}}}),
                "without",
            ),
            (
                json!({"trigger": ok_trigger, "invocationMethod": ok_invocation, "requiredApproval": {"type": "SOME"}}),
                "ANY or ALL",
            ),
            (
                json!({"trigger": {"type": "automation", "event": {"type": "ENTITY_UPDATED"}}, "invocationMethod": ok_invocation}),
                "blueprintIdentifier` is required",
            ),
            (
                json!({"trigger": {"type": "automation", "event": {"type": "ENTITY_CREATED", "blueprintIdentifier": "s"}},
                "invocationMethod": ok_invocation, "requiredApproval": true}),
                "runs by itself",
            ),
        ] {
            let e = Action::parse(&body).expect_err(&body.to_string()).to_string();
            assert!(e.contains(says), "{body}: {e} (expected {says:?})");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z{}. \"-]{0,12}".prop_map(Value::String),
            prop_oneof![Just("self-service"), Just("automation"), Just("WEBHOOK"), Just("CREATE"), Just("DAY-2")]
                .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_string()),
                        Just("trigger".to_string()),
                        Just("invocationMethod".to_string()),
                        Just("userInputs".to_string()),
                        Just("properties".to_string()),
                        Just("url".to_string()),
                        Just("operation".to_string()),
                        Just("blueprintIdentifier".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any JSON body is read or refused with a message, never a panic.
        #[test]
        fn any_body_is_read_or_refused(body in json_value()) {
            match Action::parse(&body) {
                Ok(a) => prop_assert!(a.jq.len() <= MAX_JQ),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
