//! An inbound webhook checked against the catalog: each mapping's blueprint exists, every jq expression
//! compiles (with the calculations' checks and bounds), at most [`MAX_WEBHOOKS`] webhooks.

use berth_model::webhook::{MAX_WEBHOOKS, Webhook};
use berth_model::{DefinitionKind, DomainError};
use serde_json::Value;

use crate::State;

pub fn check(state: &State, identifier: &str, body: Value) -> Result<Value, DomainError> {
    let webhook = Webhook::parse(&body)?;
    for (i, m) in webhook.mappings.iter().enumerate() {
        if state.blueprint(&m.blueprint).is_none() {
            return Err(DomainError::Invalid(format!(
                "`mappings[{i}].blueprint`: blueprint `{}` does not exist",
                m.blueprint
            )));
        }
    }
    for (at, code) in webhook.jq() {
        crate::derived::jq::compile(&code).map_err(|e| DomainError::Invalid(format!("`{at}`: {e}")))?;
    }
    if state.definition(DefinitionKind::Webhook, identifier).is_none()
        && state.definitions(DefinitionKind::Webhook).count() >= MAX_WEBHOOKS
    {
        return Err(DomainError::Invalid(format!("the organisation has {MAX_WEBHOOKS} webhooks, the most it keeps")));
    }
    Ok(body)
}
