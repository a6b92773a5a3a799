//! Subscriptions ([`berth_model::subscription`]): where changes are delivered. The body is read and checked
//! by the model; here its `filter.query` is checked against the blueprints it names that exist (a blueprint
//! created later is checked when messages are matched: a name it lacks matches nothing).

use berth_model::DomainError;
use berth_model::subscription::Subscription;
use serde_json::Value;

use crate::State;

/// Checks a subscription body and answers it normalized (defaults filled in).
pub fn check(state: &State, body: Value) -> Result<Value, DomainError> {
    let subscription = Subscription::parse(&body)?;
    if let (Some(query), Some(blueprints)) = (&subscription.filter.query, &subscription.filter.blueprints) {
        for bp in blueprints.iter().filter(|bp| state.blueprint(bp).is_some()) {
            crate::search::check_against(state, bp, query)
                .map_err(|e| DomainError::Invalid(format!("`filter.query` on blueprint `{bp}`: {e}")))?;
        }
    }
    Ok(subscription.normalized(&body))
}
