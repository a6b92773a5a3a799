//! Actions and automations ([`berth_model::action`]): the body is read and checked by the model; here,
//! against the catalog: the blueprint it is about exists, a self-service action's `condition` names that
//! blueprint's properties, a timer automation's property is a `timer` property of it, and every jq
//! expression it holds compiles (a template, a condition, an input rule), with where it is when one does not.

use berth_model::DomainError;
use berth_model::action::{Action, AutomationEvent, Trigger};
use serde_json::Value;

use crate::State;

/// Checks an action's body; answers it as written.
pub fn check(state: &State, identifier: &str, body: Value) -> Result<Value, DomainError> {
    let action = Action::parse(&body)?;
    if let Trigger::Automation { event: AutomationEvent::Run { action: of, .. } } = &action.trigger {
        if of == identifier {
            return Err(DomainError::Invalid(
                "an automation on the runs of its own action would fire on every run it makes".into(),
            ));
        }
    }
    if let Some(bp) = action.blueprint() {
        let blueprint = state.blueprint(bp).ok_or_else(|| {
            DomainError::Invalid(format!("the action is about blueprint `{bp}`, which does not exist"))
        })?;
        if let Trigger::Automation { event: AutomationEvent::Timer { property, .. }, .. } = &action.trigger {
            let timer = blueprint.def.schema.properties.get(property.as_str()).and_then(|p| p.get("format"));
            if timer.and_then(Value::as_str) != Some("timer") {
                return Err(DomainError::Invalid(format!(
                    "`trigger.event.propertyIdentifier`: blueprint `{bp}` has no timer property `{property}`"
                )));
            }
        }
    }
    if let Trigger::SelfService { blueprint, condition: Some(query), .. } = &action.trigger {
        crate::search::check_against(state, blueprint, query)
            .map_err(|e| DomainError::Invalid(format!("`trigger.condition`: {e}")))?;
    }
    for (at, code) in &action.jq {
        crate::derived::jq::compile(code).map_err(|e| DomainError::Invalid(format!("`{at}`: {e}")))?;
    }
    Ok(body)
}
