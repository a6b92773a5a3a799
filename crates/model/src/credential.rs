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
    pub created_at: Timestamp,
}

impl Credential {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }
}
