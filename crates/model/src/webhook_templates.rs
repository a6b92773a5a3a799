//! Ready-made inbound webhooks: GitHub (push, pull_request, workflow_run, deployment_status), GitLab (push,
//! merge request, deployment), PagerDuty incidents and a generic one. Each template (a JSON file beside this
//! module) holds the webhook's security and jq mappings, the blueprints it writes into (created at install
//! when absent; `usesDeploymentsModel` adds the deployments model of [`crate::deployment::model`]), and
//! sample payloads written from the providers' documentation, which the tests send and a user can read.
//! Pure: the server installs them.

use serde_json::{Map, Value};

use crate::DomainError;

const SOURCES: [(&str, &str); 4] = [
    ("github", include_str!("webhook_templates/github.json")),
    ("gitlab", include_str!("webhook_templates/gitlab.json")),
    ("pagerduty", include_str!("webhook_templates/pagerduty.json")),
    ("generic", include_str!("webhook_templates/generic.json")),
];

/// The placeholder of the generic template's blueprint.
const BLUEPRINT: &str = "{{blueprint}}";

/// Every template, by identifier: `{title, description, events, usesDeploymentsModel, blueprints, webhook,
/// samples: [{name, headers, body}]}`.
pub fn all() -> Vec<(&'static str, Value)> {
    // The sources are this crate's own files, parsed in its tests: a parse error cannot reach a user.
    SOURCES.iter().filter_map(|(id, src)| serde_json::from_str(src).ok().map(|v| (*id, v))).collect()
}

/// One template.
pub fn get(identifier: &str) -> Option<Value> {
    all().into_iter().find(|(id, _)| *id == identifier).map(|(_, v)| v)
}

/// Whether the template writes into a blueprint chosen at install (the generic one).
pub fn needs_blueprint(template: &Value) -> bool {
    template["webhook"]["mappings"].as_array().into_iter().flatten().any(|m| m["blueprint"] == BLUEPRINT)
}

/// The webhook body a template installs: its security with `secret`, its mappings; for the generic template,
/// `blueprint` (its identifier, properties and relations) fills the placeholder and maps every property and
/// relation from the same-named key of each item.
pub fn webhook_body(
    template: &Value,
    secret: &str,
    title: Option<&str>,
    blueprint: Option<(&str, Vec<String>, Vec<String>)>,
) -> Result<Value, DomainError> {
    let mut body = template["webhook"].clone();
    if secret.is_empty() {
        return Err(DomainError::Invalid(
            "`secret` is required: the webhook checks the sender's signature with it".into(),
        ));
    }
    body["security"]["secret"] = Value::String(secret.to_string());
    if let Some(t) = title {
        body["title"] = Value::String(t.to_string());
    }
    if needs_blueprint(template) {
        let Some((id, properties, relations)) = blueprint else {
            return Err(DomainError::Invalid("`blueprint` is required: the entities' blueprint".into()));
        };
        for m in body["mappings"].as_array_mut().into_iter().flatten() {
            m["blueprint"] = Value::String(id.to_string());
            if m.get("operation").is_some() {
                continue;
            }
            let map = |names: &[String], from: &str| -> Value {
                Value::Object(
                    names
                        .iter()
                        .map(|k| (k.clone(), Value::String(format!(".item.{from}[{}]", quoted(k)))))
                        .collect::<Map<_, _>>(),
                )
            };
            m["entity"]["properties"] = map(&properties, "properties");
            m["entity"]["relations"] = map(&relations, "relations");
        }
    }
    Ok(body)
}

/// A JSON string literal for `s` (a jq object key).
fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The property and relation keys each mapping of `webhook` writes into `blueprint`, for checking against an
/// existing blueprint: `(blueprint, properties, relations)` per mapping.
pub fn written_keys(webhook: &Value) -> Vec<(String, Vec<String>, Vec<String>)> {
    webhook["mappings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let keys = |field: &str| -> Vec<String> {
                m["entity"][field].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
            };
            (m["blueprint"].as_str().unwrap_or_default().to_string(), keys("properties"), keys("relations"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_reads_as_a_webhook_and_carries_samples() {
        assert_eq!(all().len(), SOURCES.len(), "a template's JSON does not parse");
        for (id, t) in all() {
            let blueprint = needs_blueprint(&t).then(|| ("thing", vec!["size".to_string()], vec!["owner".to_string()]));
            let mut body = webhook_body(&t, "s3cret", None, blueprint).expect(id);
            assert_eq!(body["security"]["secret"], "s3cret");
            // The server seals the secret before the webhook is read.
            body["security"]["secret"] = serde_json::json!({"sealed": "x"});
            crate::webhook::Webhook::parse(&body).unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(t["samples"].as_array().is_some_and(|s| !s.is_empty()), "{id} has samples");
            assert!(t["title"].is_string() && t["description"].is_string(), "{id}");
            for b in t["blueprints"].as_array().into_iter().flatten() {
                crate::ids::validate_blueprint_id(b["identifier"].as_str().unwrap_or_default()).expect(id);
            }
        }
        let generic = get("generic").expect("generic");
        let body = webhook_body(&generic, "s", None, Some(("thing", vec!["my key".into()], vec![]))).expect("body");
        assert_eq!(body["mappings"][0]["blueprint"], "thing");
        assert_eq!(body["mappings"][0]["entity"]["properties"]["my key"], ".item.properties[\"my key\"]");
        assert!(webhook_body(&generic, "s", None, None).is_err(), "the generic one needs a blueprint");
        assert!(webhook_body(&get("github").expect("github"), "", None, None).is_err(), "a secret is required");
    }
}
