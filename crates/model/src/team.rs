//! Teams: a name (the identifier entities' `team` lists refer to), a description, and members (user emails
//! or app client ids).

use serde::{Deserialize, Serialize};

use crate::{DomainError, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub members: Vec<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The longest team name accepted.
pub const MAX_TEAM_NAME: usize = 100;

impl Team {
    /// Checks the name and members.
    pub fn check(&self) -> Result<(), DomainError> {
        let name = &self.name;
        if name.is_empty() || name.len() > MAX_TEAM_NAME || name.trim() != name || name.chars().any(char::is_control) {
            return Err(DomainError::Invalid(format!(
                "team name {name:?}: 1 to {MAX_TEAM_NAME} characters, no leading or trailing spaces, no control characters"
            )));
        }
        if let Some(bad) = self.members.iter().find(|m| m.trim().is_empty() || m.len() > 320) {
            return Err(DomainError::Invalid(format!("team member {bad:?} is not a user email or app id")));
        }
        Ok(())
    }
}
