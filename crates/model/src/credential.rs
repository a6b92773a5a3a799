//! Machine credentials: a client id and a secret, of which only a SHA-256 hash is stored.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub client_id: String,
    pub name: String,
    /// Hex SHA-256 of the secret. Secrets are 256-bit random strings, so a fast hash is enough.
    pub secret_sha256: String,
    pub roles: Vec<String>,
    /// Teams the credential acts for (entity ownership, once permissions exist).
    #[serde(default)]
    pub teams: Vec<String>,
    pub created_at: Timestamp,
}

impl Credential {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }

    /// A short fingerprint of the secret, carried in tokens so that rotating the secret invalidates them.
    pub fn secret_version(&self) -> &str {
        self.secret_sha256.get(..16).unwrap_or(&self.secret_sha256)
    }
}

/// Checks a role name: `Admin`, `Member`, or `<blueprint>-moderator`.
pub fn check_role(role: &str) -> Result<(), String> {
    match role {
        "Admin" | "Member" => Ok(()),
        r if r.strip_suffix("-moderator").is_some_and(|bp| !bp.is_empty()) => Ok(()),
        other => Err(format!("unknown role {other:?}; roles are Admin, Member and <blueprint>-moderator")),
    }
}
