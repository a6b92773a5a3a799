//! Inbound webhooks (Port's `/v1/webhooks`, `../shared/brief/port-api.md` §11): an ingest URL that takes any
//! JSON, and mappings that turn each request into entity writes with jq. Pure: this module reads and checks
//! a webhook's body and a received event's; the engine compiles the jq and the ingestion worker runs it.
//!
//! Body: `{title, description?, icon?, enabled? (true), integrationType?, security?: {secret?,
//! signatureHeaderName?, signatureAlgorithm?: sha1 | sha256 | plain, signaturePrefix?, requestIdentifierPath?},
//! mappings: [{blueprint, filter?, operation?: "create" | "delete" | {type, deleteDependents?}, itemsToParse?,
//! entity: {identifier, title?, icon?, team?, properties?: {k: jq}, relations?: {k: jq}}}]}`, and the
//! server's `webhookKey`. Every string of a mapping's `entity`, its `filter`, `itemsToParse` and
//! `requestIdentifierPath` is a jq expression over `{body, headers, queryParams}` (and `.item` for each item
//! of `itemsToParse`). The secret is sealed by the server before the webhook is written (`{"sealed"}`).

use serde_json::{Map, Value};

use crate::DomainError;

/// The most mappings one webhook has, and webhooks an organisation has.
pub const MAX_MAPPINGS: usize = 50;
pub const MAX_WEBHOOKS: usize = 500;
/// The largest request an ingest URL takes.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;
/// The most requests of one webhook waiting to be processed: past it, requests are answered 503 (a sender
/// retries) rather than stored, so a flood cannot grow the backlog without bound.
pub const MAX_PENDING: usize = 5_000;
/// The most entities one request may write (all its mappings and items together).
pub const MAX_ENTITIES_PER_REQUEST: usize = 1_000;

fn invalid(message: impl Into<String>) -> DomainError {
    DomainError::Invalid(message.into())
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

fn text<'a>(v: Option<&'a Value>, what: &str, max: usize) -> Result<Option<&'a str>, DomainError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(_) => Err(invalid(format!("`{what}` is a string of at most {max} bytes"))),
    }
}

/// How a request is authenticated.
#[derive(Clone, Debug, PartialEq)]
pub enum Signature {
    /// No check (`security: {}`).
    None,
    /// HMAC of the raw body with the secret, hex, in the header (after its prefix).
    Hmac { sha256: bool, header: String, prefix: String },
    /// The header holds the secret itself.
    Plain { header: String, prefix: String },
}

/// What a mapping does to the entities it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Delete { dependents: bool },
}

/// One mapping, read.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapping {
    pub blueprint: String,
    pub filter: Option<String>,
    pub items: Option<String>,
    pub operation: Operation,
    /// The entity's fields as jq: `identifier`, `title`, `icon`, `team`, and `properties.<k>`, `relations.<k>`.
    pub entity: Vec<(String, String)>,
}

/// A webhook, read from its body.
#[derive(Clone, Debug, PartialEq)]
pub struct Webhook {
    pub enabled: bool,
    pub signature: Signature,
    /// The sealed secret (absent: no check).
    pub sealed_secret: Option<String>,
    pub request_id: Option<String>,
    pub mappings: Vec<Mapping>,
}

impl Webhook {
    pub fn parse(body: &Value) -> Result<Webhook, DomainError> {
        let map = body.as_object().ok_or_else(|| invalid("a webhook is a JSON object"))?;
        only(
            map,
            "webhook",
            &[
                "title",
                "description",
                "icon",
                "enabled",
                "integrationType",
                "security",
                "mappings",
                "webhookKey",
                "url",
            ],
        )?;
        match text(map.get("title"), "title", 200)? {
            Some(t) if !t.trim().is_empty() => {}
            _ => return Err(invalid("`title` is required")),
        }
        text(map.get("description"), "description", 2000)?;
        text(map.get("icon"), "icon", 200)?;
        let enabled = match map.get("enabled") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("`enabled` is true or false")),
        };
        if let Some(t) = text(map.get("integrationType"), "integrationType", 40)? {
            if !["custom", "template"].contains(&t) {
                return Err(invalid("`integrationType` is custom or template"));
            }
        }
        let empty = Map::new();
        let security = match map.get("security") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(s)) => s,
            Some(_) => return Err(invalid("`security` is an object")),
        };
        only(
            security,
            "security",
            &["secret", "signatureHeaderName", "signatureAlgorithm", "signaturePrefix", "requestIdentifierPath"],
        )?;
        let sealed_secret = match security.get("secret") {
            None | Some(Value::Null) => None,
            Some(Value::Object(s)) => Some(
                s.get("sealed")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| invalid("`security.secret` is a string"))?
                    .to_string(),
            ),
            Some(_) => return Err(invalid("`security.secret` reached the catalog unsealed")),
        };
        let header = text(security.get("signatureHeaderName"), "security.signatureHeaderName", 200)?;
        let prefix = text(security.get("signaturePrefix"), "security.signaturePrefix", 200)?.unwrap_or("").to_string();
        let algorithm = text(security.get("signatureAlgorithm"), "security.signatureAlgorithm", 20)?;
        let signature = match (&sealed_secret, header, algorithm) {
            (None, None, None) => Signature::None,
            (Some(_), Some(h), Some(a @ ("sha1" | "sha256"))) => {
                Signature::Hmac { sha256: a == "sha256", header: h.to_ascii_lowercase(), prefix }
            }
            (Some(_), Some(h), Some("plain")) => Signature::Plain { header: h.to_ascii_lowercase(), prefix },
            (_, _, Some(a)) if !["sha1", "sha256", "plain"].contains(&a) => {
                return Err(invalid("`security.signatureAlgorithm` is sha1, sha256 or plain"));
            }
            _ => {
                return Err(invalid(
                    "`security` checks a signature with all of `secret`, `signatureHeaderName` and `signatureAlgorithm`, or none",
                ));
            }
        };
        let request_id = text(security.get("requestIdentifierPath"), "security.requestIdentifierPath", 4096)?
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string);
        let mappings = match map.get("mappings") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) if list.len() <= MAX_MAPPINGS => {
                list.iter().enumerate().map(|(i, m)| Mapping::parse(m, i)).collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err(invalid(format!("`mappings` is a list of at most {MAX_MAPPINGS} mappings"))),
        };
        Ok(Webhook { enabled, signature, sealed_secret, request_id, mappings })
    }

    /// Every jq expression the webhook holds, with where it is.
    pub fn jq(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(r) = &self.request_id {
            out.push(("security.requestIdentifierPath".to_string(), r.clone()));
        }
        for (i, m) in self.mappings.iter().enumerate() {
            if let Some(f) = &m.filter {
                out.push((format!("mappings[{i}].filter"), f.clone()));
            }
            if let Some(items) = &m.items {
                out.push((format!("mappings[{i}].itemsToParse"), items.clone()));
            }
            for (field, code) in &m.entity {
                out.push((format!("mappings[{i}].entity.{field}"), code.clone()));
            }
        }
        out
    }
}

impl Mapping {
    fn parse(v: &Value, i: usize) -> Result<Mapping, DomainError> {
        let at = format!("mappings[{i}]");
        let m = v.as_object().ok_or_else(|| invalid(format!("`{at}` is an object")))?;
        only(m, &at, &["blueprint", "filter", "operation", "itemsToParse", "entity"])?;
        let blueprint = text(m.get("blueprint"), &format!("{at}.blueprint"), 200)?
            .filter(|b| !b.is_empty())
            .ok_or_else(|| invalid(format!("`{at}.blueprint` is required")))?
            .to_string();
        let filter = text(m.get("filter"), &format!("{at}.filter"), 4096)?.map(str::to_string);
        let items = text(m.get("itemsToParse"), &format!("{at}.itemsToParse"), 4096)?.map(str::to_string);
        let operation = match m.get("operation") {
            None | Some(Value::Null) => Operation::Create,
            Some(Value::String(s)) if s == "create" => Operation::Create,
            Some(Value::String(s)) if s == "delete" => Operation::Delete { dependents: false },
            Some(Value::Object(o)) => {
                only(o, &format!("{at}.operation"), &["type", "deleteDependents"])?;
                match o.get("type").and_then(Value::as_str) {
                    Some("create") => Operation::Create,
                    Some("delete") => Operation::Delete {
                        dependents: o.get("deleteDependents").and_then(Value::as_bool).unwrap_or(false),
                    },
                    _ => return Err(invalid(format!("`{at}.operation.type` is create or delete"))),
                }
            }
            Some(_) => {
                return Err(invalid(format!("`{at}.operation` is create, delete or {{type, deleteDependents}}")));
            }
        };
        let e = m
            .get("entity")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid(format!("`{at}.entity` is required: {{identifier, title?, ...}}")))?;
        only(e, &format!("{at}.entity"), &["identifier", "title", "icon", "team", "properties", "relations"])?;
        let mut entity = Vec::new();
        for key in ["identifier", "title", "icon", "team"] {
            if let Some(code) = text(e.get(key), &format!("{at}.entity.{key}"), 4096)? {
                entity.push((key.to_string(), code.to_string()));
            }
        }
        if !entity.iter().any(|(k, _)| k == "identifier") {
            return Err(invalid(format!("`{at}.entity.identifier` is required (a jq expression)")));
        }
        for group in ["properties", "relations"] {
            match e.get(group) {
                None | Some(Value::Null) => {}
                Some(Value::Object(fields)) => {
                    for (k, code) in fields {
                        let code = text(Some(code), &format!("{at}.entity.{group}.{k}"), 4096)?.unwrap_or("null");
                        entity.push((format!("{group}.{k}"), code.to_string()));
                    }
                }
                Some(_) => return Err(invalid(format!("`{at}.entity.{group}` maps names to jq expressions"))),
            }
        }
        if entity.len() > 500 {
            return Err(invalid(format!("`{at}.entity` has at most 500 fields")));
        }
        Ok(Mapping { blueprint, filter, items, operation, entity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_webhook_reads_with_its_mappings_and_security_and_bad_ones_say_why() {
        let w = Webhook::parse(&json!({"title": "GitHub", "security": {"secret": {"sealed": "x"},
            "signatureHeaderName": "X-Hub-Signature-256", "signatureAlgorithm": "sha256", "signaturePrefix": "sha256=",
            "requestIdentifierPath": ".headers.\"x-github-delivery\""},
            "mappings": [{"blueprint": "repo", "filter": ".headers.\"x-github-event\" == \"push\"",
                "itemsToParse": ".body.commits", "operation": {"type": "delete", "deleteDependents": true},
                "entity": {"identifier": ".item.id", "properties": {"msg": ".item.message"}}}]}))
        .expect("reads");
        assert_eq!(
            w.signature,
            Signature::Hmac { sha256: true, header: "x-hub-signature-256".into(), prefix: "sha256=".into() }
        );
        assert_eq!(w.mappings[0].operation, Operation::Delete { dependents: true });
        assert_eq!(w.jq().len(), 5);
        for (bad, says) in [
            (json!({}), "title"),
            (json!({"title": "x", "mappings": [{"blueprint": "b"}]}), "entity"),
            (json!({"title": "x", "mappings": [{"blueprint": "b", "entity": {"title": ".a"}}]}), "identifier"),
            (json!({"title": "x", "security": {"secret": "plain text"}}), "unsealed"),
            (
                json!({"title": "x", "security": {"secret": {"sealed": "s"}, "signatureHeaderName": "h", "signatureAlgorithm": "md5"}}),
                "sha1",
            ),
            (json!({"title": "x", "security": {"signatureHeaderName": "h"}}), "or none"),
            (json!({"title": "x", "hooks": []}), "no field"),
        ] {
            let e = Webhook::parse(&bad).expect_err("refused").to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_read_or_refused(s in "[a-z{}:\"\\[\\], .]{0,60}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = Webhook::parse(&v);
            }
            let _ = Webhook::parse(&json!({"title": "t", "mappings": [{"blueprint": "b", "entity": {"identifier": s}}]}));
        }
    }
}
