//! Subscriptions: where the catalog's changes are delivered (a webhook, a Kafka topic, a NATS JetStream
//! subject, a Redis stream) and which changes (a filter). A subscription is a definition object
//! (`DefinitionKind::Subscription`); this module reads and checks its body, and decides whether a change
//! passes its filter. Pure: no I/O, no broker.
//!
//! Body: `{title?, enabled?, destination, filter?, maxAttempts?, concurrency?, secretVersion?}`:
//! - `destination`: `{"type": "WEBHOOK", "url", "headers"?}` (each header value a string, or `{"sealed"}`
//!   once the server sealed it), `{"type": "KAFKA", "topic"}`,
//!   `{"type": "NATS", "subject"}`, `{"type": "REDIS_STREAM", "stream"}`;
//! - `filter`: `{resources?: [entity, blueprint, scorecard, ...], blueprints?: [...], actions?: [CREATE,
//!   UPDATE, DELETE], query?: rules-language query on the entity}` (absent parts let everything through);
//! - `maxAttempts`: deliveries of one message before it goes to the dead letters (1 to 100, default 10);
//! - `concurrency` (webhooks): requests in flight at once, 1 to [`MAX_CONCURRENCY`]. 1 (the default)
//!   delivers in log order; more deliver each entity's changes in log order (one after another), not the
//!   subscription's, for receivers that must take more than one round trip's worth a second;
//! - `secretVersion`: which of the subscription's signing secrets is current (the secret itself is never in
//!   the body: it is derived from the server's delivery key, see the delivery crate).

use serde_json::{Map, Value, json};

use crate::DomainError;
use crate::public::PublicChange;
use crate::query::Query;

/// The most headers a webhook destination sends.
pub const MAX_HEADERS: usize = 20;
/// The longest header value, URL, topic, subject or stream name accepted.
pub const MAX_TEXT: usize = 2048;
/// The most entries of a filter list.
pub const MAX_FILTER_ENTRIES: usize = 100;
/// The most webhook requests of one subscription in flight at once.
pub const MAX_CONCURRENCY: u32 = 32;
/// Attempts before a message goes to the dead letters, when the subscription does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// The most subscriptions a catalog holds (each runs a worker reading the whole log).
pub const MAX_SUBSCRIPTIONS: usize = 100;
/// The most dead letters a subscription keeps (the oldest are dropped, and counted, past it).
pub const MAX_DEAD_LETTERS: usize = 1000;

/// A message that failed `maxAttempts` times: delivery went on without it. Kept in the subscription's body
/// (so it is in the log, on every replica, in backups) until it is retried successfully or dropped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The change's sequence number (the message is rebuilt from the log).
    pub seq: u64,
    pub attempts: u32,
    pub error: String,
    pub at: crate::Timestamp,
    /// Asked to be retried (the worker sends it again, then removes it or clears this).
    #[serde(default)]
    pub retry: bool,
}

/// Where messages go.
#[derive(Clone, Debug, PartialEq)]
pub enum Destination {
    Webhook { url: String, headers: Vec<(String, HeaderValue)> },
    Kafka { topic: String },
    Nats { subject: String },
    RedisStream { stream: String },
}

impl Destination {
    /// The destination type as the API names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Destination::Webhook { .. } => "WEBHOOK",
            Destination::Kafka { .. } => "KAFKA",
            Destination::Nats { .. } => "NATS",
            Destination::RedisStream { .. } => "REDIS_STREAM",
        }
    }
}

/// Which changes a subscription receives.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Filter {
    pub resources: Option<Vec<String>>,
    pub blueprints: Option<Vec<String>>,
    pub actions: Option<Vec<String>>,
    pub query: Option<Query>,
}

impl Filter {
    /// Whether a change passes the parts of the filter that read only the change itself (the `query`, which
    /// reads the entity against the catalog, is the caller's to judge).
    pub fn admits(&self, change: &PublicChange) -> bool {
        let listed = |list: &Option<Vec<String>>, value: Option<&str>| {
            list.as_ref().is_none_or(|l| value.is_some_and(|v| l.iter().any(|x| x.eq_ignore_ascii_case(v))))
        };
        // A refused attempt changed nothing: never delivered.
        change.status == "SUCCESS"
            && listed(&self.resources, Some(change.resource))
            && listed(&self.blueprints, change.blueprint.as_deref())
            && listed(&self.actions, Some(action_of(change)))
            && (self.query.is_none() || change.resource == "entity")
    }
}

/// The action a change is delivered as: an upsert is a creation or an update, by whether there was a
/// version before.
pub fn action_of(change: &PublicChange) -> &'static str {
    match change.action {
        "UPSERT" if change.before.is_null() => "CREATE",
        "UPSERT" => "UPDATE",
        other => other,
    }
}

/// A webhook header's value: as given (`"value"`), or sealed by the server before the subscription was
/// written (`{"sealed": "<base64>"}`: the delivery crate seals and opens it; the log never holds the value
/// in clear).
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    Plain(String),
    Sealed(String),
}

/// A subscription, read from its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    pub title: Option<String>,
    pub enabled: bool,
    pub destination: Destination,
    pub filter: Filter,
    pub max_attempts: u32,
    /// Webhook requests in flight at once (see the module's documentation).
    pub concurrency: u32,
    pub secret_version: u32,
    pub dead_letters: Vec<DeadLetter>,
    /// Dead letters dropped because the list was full.
    pub dead_letters_dropped: u64,
}

fn text(v: &Value, what: &str) -> Result<String, DomainError> {
    let s = v.as_str().ok_or_else(|| DomainError::Invalid(format!("`{what}` is a string")))?;
    if s.is_empty() || s.len() > MAX_TEXT {
        return Err(DomainError::Invalid(format!("`{what}` is 1 to {MAX_TEXT} characters")));
    }
    Ok(s.to_string())
}

/// A topic, subject or stream name: letters, digits and `. _ - : / * >` (NATS wildcards are refused: a
/// subscription publishes to one subject).
fn channel(v: &Value, what: &str) -> Result<String, DomainError> {
    let s = text(v, what)?;
    if s.len() > 249 || !s.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c)) {
        return Err(DomainError::Invalid(format!(
            "`{what}` {:?} must be at most 249 letters, digits or `. _ - : /`",
            crate::limits::truncate(&s, 80)
        )));
    }
    Ok(s)
}

fn list(v: Option<&Value>, what: &str, allowed: Option<&[&str]>) -> Result<Option<Vec<String>>, DomainError> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    let items = v.as_array().ok_or_else(|| DomainError::Invalid(format!("`filter.{what}` is a list")))?;
    if items.len() > MAX_FILTER_ENTRIES {
        return Err(DomainError::Invalid(format!("`filter.{what}` has more than {MAX_FILTER_ENTRIES} entries")));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = text(item, &format!("filter.{what}[]"))?;
        if let Some(allowed) = allowed {
            if !allowed.iter().any(|a| a.eq_ignore_ascii_case(&s)) {
                return Err(DomainError::Invalid(format!(
                    "`filter.{what}` has {:?}; it takes {}",
                    crate::limits::truncate(&s, 40),
                    allowed.join(", ")
                )));
            }
        }
        out.push(s);
    }
    Ok(Some(out))
}

/// The resources a filter may name.
pub const RESOURCES: [&str; 10] =
    ["entity", "blueprint", "permissions", "team", "user", "app", "page", "scorecard", "subscription", "action"];

impl Subscription {
    /// Reads and checks a body (unknown fields are refused, so a typo is not silently ignored).
    pub fn parse(body: &Value) -> Result<Subscription, DomainError> {
        let map = body.as_object().ok_or_else(|| DomainError::Invalid("a subscription is a JSON object".into()))?;
        for k in map.keys() {
            if ![
                "title",
                "enabled",
                "destination",
                "filter",
                "maxAttempts",
                "concurrency",
                "secretVersion",
                "deadLetters",
                "deadLettersDropped",
            ]
            .contains(&k.as_str())
            {
                return Err(DomainError::Invalid(format!(
                    "a subscription has no field {:?} (it has title, enabled, destination, filter, maxAttempts, concurrency)",
                    crate::limits::truncate(k, 60)
                )));
            }
        }
        let title = match map.get("title") {
            None | Some(Value::Null) => None,
            Some(t) => Some(text(t, "title")?),
        };
        let enabled = match map.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(DomainError::Invalid("`enabled` is true or false".into())),
        };
        let destination = Self::destination(map.get("destination"))?;
        let filter = match map.get("filter") {
            None | Some(Value::Null) => Filter::default(),
            Some(Value::Object(f)) => {
                for k in f.keys() {
                    if !["resources", "blueprints", "actions", "query"].contains(&k.as_str()) {
                        return Err(DomainError::Invalid(format!(
                            "`filter` has no field {:?} (it has resources, blueprints, actions, query)",
                            crate::limits::truncate(k, 60)
                        )));
                    }
                }
                let query = match f.get("query") {
                    None | Some(Value::Null) => None,
                    Some(q) => Some(Query::parse(q).map_err(|e| DomainError::Invalid(format!("`filter.query`: {e}")))?),
                };
                Filter {
                    resources: list(f.get("resources"), "resources", Some(&RESOURCES))?,
                    blueprints: list(f.get("blueprints"), "blueprints", None)?,
                    actions: list(f.get("actions"), "actions", Some(&["CREATE", "UPDATE", "DELETE"]))?,
                    query,
                }
            }
            Some(_) => return Err(DomainError::Invalid("`filter` is an object".into())),
        };
        let number = |k: &str, default: u32, max: u32| -> Result<u32, DomainError> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=u64::from(max)).contains(n))
                    .map(|n| n as u32)
                    .ok_or_else(|| DomainError::Invalid(format!("`{k}` is a whole number from 1 to {max}"))),
            }
        };
        let dead_letters: Vec<DeadLetter> = match map.get("deadLetters") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                DomainError::Invalid(format!("`deadLetters` is a list of {{seq, attempts, error, at}}: {e}"))
            })?,
        };
        let concurrency = number("concurrency", 1, MAX_CONCURRENCY)?;
        if concurrency > 1 && !matches!(destination, Destination::Webhook { .. }) {
            return Err(DomainError::Invalid(
                "`concurrency` is for WEBHOOK destinations (brokers take a page of messages at once)".into(),
            ));
        }
        if dead_letters.len() > MAX_DEAD_LETTERS {
            return Err(DomainError::Invalid(format!("at most {MAX_DEAD_LETTERS} dead letters")));
        }
        Ok(Subscription {
            title,
            enabled,
            destination,
            filter,
            max_attempts: number("maxAttempts", DEFAULT_MAX_ATTEMPTS, 100)?,
            concurrency,
            secret_version: number("secretVersion", 1, u32::MAX)?,
            dead_letters,
            dead_letters_dropped: map.get("deadLettersDropped").and_then(Value::as_u64).unwrap_or(0),
        })
    }

    fn destination(v: Option<&Value>) -> Result<Destination, DomainError> {
        let d = v
            .and_then(Value::as_object)
            .ok_or_else(|| DomainError::Invalid("`destination` is an object with a `type`".into()))?;
        let kind = d.get("type").and_then(Value::as_str).unwrap_or_default();
        let fields: &[&str] = match kind {
            "WEBHOOK" => &["type", "url", "headers"],
            "KAFKA" => &["type", "topic"],
            "NATS" => &["type", "subject"],
            "REDIS_STREAM" => &["type", "stream"],
            _ => {
                return Err(DomainError::Invalid("`destination.type` is WEBHOOK, KAFKA, NATS or REDIS_STREAM".into()));
            }
        };
        if let Some(k) = d.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(DomainError::Invalid(format!(
                "a {kind} destination has no field {:?} (it has {})",
                crate::limits::truncate(k, 60),
                fields.join(", ")
            )));
        }
        let field = |k: &str| d.get(k).unwrap_or(&Value::Null);
        Ok(match kind {
            "WEBHOOK" => {
                let url = text(field("url"), "destination.url")?;
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://"))
                    || url.chars().any(char::is_whitespace)
                {
                    return Err(DomainError::Invalid("`destination.url` is an http:// or https:// URL".into()));
                }
                let mut headers = Vec::new();
                match d.get("headers") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(h)) => {
                        if h.len() > MAX_HEADERS {
                            return Err(DomainError::Invalid(format!("at most {MAX_HEADERS} headers")));
                        }
                        for (name, value) in h {
                            let reserved = name.to_ascii_lowercase();
                            if name.is_empty()
                                || name.len() > 100
                                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                                || ["host", "content-length", "content-type", "x-port-timestamp", "x-port-signature"]
                                    .contains(&reserved.as_str())
                            {
                                return Err(DomainError::Invalid(format!(
                                    "header {:?} cannot be set (a name of letters, digits, `-` and `_`, not one Berth sets itself)",
                                    crate::limits::truncate(name, 60)
                                )));
                            }
                            let value = match value.get("sealed") {
                                Some(sealed) if value.as_object().is_some_and(|o| o.len() == 1) => {
                                    // A sealed value is base64 of a nonce, the value and a tag.
                                    let sealed = sealed.as_str().unwrap_or_default().to_string();
                                    if sealed.is_empty()
                                        || sealed.len() > MAX_TEXT * 2
                                        || !sealed.chars().all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
                                    {
                                        return Err(DomainError::Invalid(format!(
                                            "header `{name}`: `sealed` is base64, as the server wrote it"
                                        )));
                                    }
                                    HeaderValue::Sealed(sealed)
                                }
                                _ => {
                                    let value = text(value, &format!("destination.headers.{name}"))?;
                                    if value.chars().any(|c| c.is_control()) {
                                        return Err(DomainError::Invalid(format!(
                                            "header `{name}` has a control character"
                                        )));
                                    }
                                    HeaderValue::Plain(value)
                                }
                            };
                            headers.push((name.clone(), value));
                        }
                    }
                    Some(_) => return Err(DomainError::Invalid("`destination.headers` is an object".into())),
                }
                Destination::Webhook { url, headers }
            }
            "KAFKA" => Destination::Kafka { topic: channel(field("topic"), "destination.topic")? },
            "NATS" => Destination::Nats { subject: channel(field("subject"), "destination.subject")? },
            _ => Destination::RedisStream { stream: channel(field("stream"), "destination.stream")? },
        })
    }

    /// The body without what delivery itself writes into it (dead letters): two bodies equal by this
    /// deliver alike, so a worker is not restarted when it records a dead letter.
    pub fn delivery_part(body: &Value) -> Value {
        let mut out = body.clone();
        if let Some(map) = out.as_object_mut() {
            map.remove("deadLetters");
            map.remove("deadLettersDropped");
        }
        out
    }

    /// The body as stored: defaults filled in, so reading it back shows what is in force.
    pub fn normalized(&self, body: &Value) -> Value {
        let mut out: Map<String, Value> = body.as_object().cloned().unwrap_or_default();
        out.insert("enabled".into(), json!(self.enabled));
        out.insert("maxAttempts".into(), json!(self.max_attempts));
        out.insert("concurrency".into(), json!(self.concurrency));
        out.insert("secretVersion".into(), json!(self.secret_version));
        out.entry("filter").or_insert_with(|| json!({}));
        out.entry("deadLetters").or_insert_with(|| json!([]));
        Value::Object(out)
    }
}

/// A change's message as every subscription receives it, but for the `subscription` field (see
/// [`addressed`]): Port's change event (`action`, `resourceType`, `trigger {by, origin, at}`, `context`,
/// `diff {before, after}`) and `seq`, the log sequence number (an idempotency key). Serialized once per
/// change, however many subscriptions admit it. `change` is [`crate::public::change`] or
/// [`crate::public::change_head`]: an entity change's versions are serialized from the event itself.
pub fn message_body(event: &crate::Event, change: &PublicChange) -> Vec<u8> {
    /// One side of the diff: a JSON value, or an entity serialized as the public change shows it.
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Side<'a> {
        Value(&'a Value),
        Entity(&'a crate::Entity),
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        action: &'a str,
        resource_type: &'a str,
        trigger: Trigger<'a>,
        context: Context<'a>,
        diff: Diff<'a>,
        seq: u64,
    }
    #[derive(serde::Serialize)]
    struct Trigger<'a> {
        by: By<'a>,
        origin: &'a crate::Origin,
        at: &'a crate::Timestamp,
    }
    #[derive(serde::Serialize)]
    struct By<'a> {
        #[serde(rename = "userId")]
        user_id: &'a str,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Context<'a> {
        blueprint_identifier: Option<&'a str>,
        entity_identifier: Option<&'a str>,
    }
    #[derive(serde::Serialize)]
    struct Diff<'a> {
        before: Side<'a>,
        after: Side<'a>,
    }
    let (before, after) = match (&event.change, &event.before) {
        (crate::Change::EntityPut { entity }, Some(crate::Previous::Entity { entity: old })) => {
            (Side::Entity(old), Side::Entity(entity))
        }
        (crate::Change::EntityPut { entity }, _) => (Side::Value(&Value::Null), Side::Entity(entity)),
        (crate::Change::EntityDeleted { .. }, Some(crate::Previous::Entity { entity: old })) => {
            (Side::Entity(old), Side::Value(&Value::Null))
        }
        _ => (Side::Value(&change.before), Side::Value(&change.after)),
    };
    let body = Body {
        action: action_of(change),
        resource_type: change.resource,
        trigger: Trigger { by: By { user_id: &event.actor }, origin: &event.origin, at: &event.time },
        context: Context {
            blueprint_identifier: change.blueprint.as_deref(),
            entity_identifier: change.identifier.as_deref(),
        },
        diff: Diff { before, after },
        seq: event.seq,
    };
    // Serializing borrowed strings, JSON values and derived types cannot fail.
    serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
}

/// A [`message_body`] addressed to one subscription: `subscription` added as its last field.
pub fn addressed(body: &[u8], subscription: &str) -> Vec<u8> {
    let id = serde_json::to_string(subscription).unwrap_or_default();
    let open = body.strip_suffix(b"}").unwrap_or(body);
    let mut out = Vec::with_capacity(body.len() + id.len() + 16);
    out.extend_from_slice(open);
    if open.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(b"\"subscription\":");
    out.extend_from_slice(id.as_bytes());
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entity_of(event: &crate::Event) -> std::sync::Arc<crate::Entity> {
        match &event.change {
            crate::Change::EntityPut { entity } => std::sync::Arc::clone(entity),
            _ => panic!("an entity change"),
        }
    }

    /// The message is Port's change event with `seq` and the subscription, whatever the identifier holds.
    #[test]
    fn a_message_is_ports_change_event_addressed_to_its_subscription() {
        let entity: crate::Entity = serde_json::from_value(json!({"identifier": "api", "blueprint": "service",
            "title": "API", "properties": {"n": 1}, "createdAt": "2026-01-01T00:00:00.000Z", "createdBy": "a",
            "updatedAt": "2026-01-01T00:00:00.000Z", "updatedBy": "a"}))
        .expect("entity");
        let event = crate::Event {
            seq: 42,
            time: crate::Timestamp::from_millis(1_700_000_000_000),
            actor: "ana@example.com".into(),
            origin: crate::Origin::Api,
            run_id: None,
            change: crate::Change::EntityPut { entity: entity.into() },
            before: None,
        };
        let change = crate::public::change(&event);
        let body = message_body(&event, &change);
        // An update and a deletion too: the message from the change's head (versions serialized from the
        // event) is the message from the whole change.
        let mut newer: crate::Entity = (*entity_of(&event)).clone();
        newer.title = Some("API v2".into());
        let previous = Some(crate::Previous::Entity { entity: entity_of(&event) });
        let update = crate::Event {
            change: crate::Change::EntityPut { entity: newer.into() },
            before: previous.clone(),
            ..event.clone()
        };
        let delete = crate::Event {
            change: crate::Change::EntityDeleted { blueprint: "service".into(), identifier: "api".into() },
            before: previous,
            ..event.clone()
        };
        for e in [&event, &update, &delete] {
            let whole = crate::public::change(e);
            assert_eq!(
                serde_json::from_slice::<Value>(&message_body(e, &crate::public::change_head(e))).expect("json"),
                serde_json::from_slice::<Value>(&message_body(e, &whole)).expect("json"),
                "the same message from the change's head"
            );
        }
        let deleted: Value =
            serde_json::from_slice(&message_body(&delete, &crate::public::change_head(&delete))).expect("json");
        assert_eq!((deleted["action"].as_str(), deleted["diff"]["after"].is_null()), (Some("DELETE"), true));
        assert_eq!(deleted["diff"]["before"]["title"], "API");
        for id in ["hooks", "quote\"and\\slash"] {
            let message: Value = serde_json::from_slice(&addressed(&body, id)).expect("json");
            assert_eq!(
                message,
                json!({"action": "CREATE", "resourceType": "entity",
                    "trigger": {"by": {"userId": "ana@example.com"}, "origin": event.origin, "at": event.time},
                    "context": {"blueprintIdentifier": "service", "entityIdentifier": "api"},
                    "diff": {"before": null, "after": change.after}, "seq": 42, "subscription": id})
            );
        }
        assert_eq!(
            serde_json::from_slice::<Value>(&addressed(b"{}", "s")).expect("json"),
            json!({"subscription": "s"})
        );
    }

    #[test]
    fn a_body_reads_with_its_defaults_and_bad_ones_say_why() {
        let s = Subscription::parse(&json!({"destination": {"type": "WEBHOOK", "url": "https://h.example/x",
            "headers": {"X-Team": "core"}}, "filter": {"blueprints": ["service"], "actions": ["DELETE"]}}))
        .expect("valid");
        assert!(s.enabled);
        assert_eq!(s.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(s.destination.kind(), "WEBHOOK");
        for (body, says) in [
            (json!({"destination": {"type": "SMTP"}}), "WEBHOOK, KAFKA"),
            (json!({"destination": {"type": "WEBHOOK", "url": "ftp://x"}}), "http://"),
            (json!({"destination": {"type": "KAFKA", "topic": "a b"}}), "letters"),
            (json!({"destination": {"type": "NATS", "subject": "a.*"}}), "letters"),
            (json!({"destination": {"type": "KAFKA", "topic": "t", "url": "x"}}), "no field"),
            (
                json!({"destination": {"type": "REDIS_STREAM", "stream": "s"}, "filter": {"actions": ["MOVE"]}}),
                "CREATE",
            ),
            (json!({"destination": {"type": "REDIS_STREAM", "stream": "s"}, "maxAttempts": 0}), "1 to 100"),
            (json!({"destination": {"type": "WEBHOOK", "url": "https://x"}, "concurrency": 33}), "1 to 32"),
            (json!({"destination": {"type": "NATS", "subject": "s"}, "concurrency": 4}), "for WEBHOOK"),
            (
                json!({"destination": {"type": "WEBHOOK", "url": "https://x", "headers": {"x-port-signature": "v"}}}),
                "cannot be set",
            ),
            (json!({"destination": {"type": "REDIS_STREAM", "stream": "s"}, "filtre": {}}), "no field"),
        ] {
            let e = Subscription::parse(&body).expect_err("invalid").to_string();
            assert!(e.contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn the_filter_admits_by_resource_blueprint_and_action() {
        let f = Subscription::parse(&json!({"destination": {"type": "NATS", "subject": "s"},
            "filter": {"resources": ["entity"], "blueprints": ["service"], "actions": ["CREATE", "DELETE"]}}))
        .expect("valid")
        .filter;
        let change = |resource, action, blueprint: &str, before: Value| PublicChange {
            resource,
            action,
            status: "SUCCESS",
            blueprint: Some(blueprint.into()),
            identifier: Some("x".into()),
            before,
            after: Value::Null,
        };
        assert!(f.admits(&change("entity", "UPSERT", "service", Value::Null)), "an upsert that created");
        assert!(!f.admits(&change("entity", "UPSERT", "service", json!({}))), "an upsert that updated");
        assert!(f.admits(&change("entity", "DELETE", "service", json!({}))));
        assert!(!f.admits(&change("entity", "DELETE", "team", json!({}))));
        assert!(!f.admits(&change("blueprint", "CREATE", "service", Value::Null)));
        let mut refused = change("entity", "CREATE", "service", Value::Null);
        refused.status = "FAILURE";
        assert!(!f.admits(&refused), "a refused attempt is never delivered");
    }

    proptest! {
        /// Any JSON body is read or refused with a message, never a panic.
        #[test]
        fn any_body_is_read_or_refused(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = Subscription::parse(&v);
                let _ = Subscription::parse(&json!({"destination": v.clone(), "filter": v}));
            }
        }

        #[test]
        fn any_destination_strings_are_read_or_refused(kind in "[A-Z_]{0,14}", a in "\\PC{0,40}", b in "\\PC{0,40}") {
            let body = json!({"destination": {"type": kind, "url": a, "topic": b, "subject": b, "stream": a,
                "headers": {a.clone(): b.clone()}}});
            let _ = Subscription::parse(&body);
        }
    }
}
