//! Subscriptions ([`berth_model::subscription`]): where changes are delivered. The body is read and checked
//! by the model; here its `filter.query` is checked against the blueprints it names that exist (a blueprint
//! created later is checked when messages are matched: a name it lacks matches nothing).

use berth_model::subscription::{MAX_SUBSCRIPTIONS, Subscription};
use berth_model::{DefinitionKind, DomainError};
use serde_json::Value;

use crate::State;

/// Checks subscription `identifier`'s body and answers it normalized (defaults filled in).
pub fn check(state: &State, identifier: &str, body: Value) -> Result<Value, DomainError> {
    let subscription = Subscription::parse(&body)?;
    let others = state.definitions(DefinitionKind::Subscription).filter(|d| d.identifier != identifier).count();
    if others >= MAX_SUBSCRIPTIONS {
        return Err(DomainError::Invalid(format!(
            "the catalog has {others} subscriptions; the limit is {MAX_SUBSCRIPTIONS} (each reads the whole log)"
        )));
    }
    if let (Some(query), Some(blueprints)) = (&subscription.filter.query, &subscription.filter.blueprints) {
        for bp in blueprints.iter().filter(|bp| state.blueprint(bp).is_some()) {
            crate::search::check_against(state, bp, query)
                .map_err(|e| DomainError::Invalid(format!("`filter.query` on blueprint `{bp}`: {e}")))?;
        }
    }
    Ok(subscription.normalized(&body))
}
