//! An Ocean integration checked against the catalog: its body by [`berth_model::integration::check`], at
//! most [`MAX_INTEGRATIONS`] of them. The records an integration reports are written by
//! [`crate::integration_records`].

use berth_model::integration::MAX_INTEGRATIONS;
use berth_model::{DefinitionKind, DomainError};
use serde_json::Value;

use crate::State;

pub fn check(state: &State, identifier: &str, body: Value) -> Result<Value, DomainError> {
    berth_model::integration::check(&body)?;
    if state.definition(DefinitionKind::Integration, identifier).is_none()
        && state.definitions(DefinitionKind::Integration).count() >= MAX_INTEGRATIONS
    {
        return Err(DomainError::Invalid(format!(
            "the organisation has {MAX_INTEGRATIONS} integrations, the most it keeps"
        )));
    }
    Ok(body)
}
