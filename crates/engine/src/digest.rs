//! Content digests of a catalog, to prove two states equal without comparing them whole: a migration
//! compares the source's digest with the target's, blueprint by blueprint.
//!
//! A blueprint's digest is SHA-256 over its definition and then every entity in identifier order, each as
//! its canonical JSON with a length prefix. Access data (credentials, the signing key) has one digest of its
//! own, and definition objects one more. Two states with equal digests hold the same blueprints, entities,
//! credentials and definitions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::State;

/// One blueprint's entity count and content digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlueprintDigest {
    pub entities: usize,
    pub digest: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDigest {
    pub seq: u64,
    pub blueprints: BTreeMap<String, BlueprintDigest>,
    /// Credentials, teams, users, blueprint permissions and the signing key.
    pub access: String,
    /// Definition objects (pages, ...): empty when there are none (so digests taken before they existed
    /// still compare equal).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub definitions: String,
}

impl CatalogDigest {
    pub fn total_entities(&self) -> usize {
        self.blueprints.values().map(|b| b.entities).sum()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn feed(hasher: &mut Sha256, value: &impl Serialize) {
    // Serialising a model type to a Vec cannot fail: every map key is a string.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(&bytes);
}

impl State {
    /// The digest of everything this state holds.
    pub fn digest(&self) -> CatalogDigest {
        let mut blueprints = BTreeMap::new();
        for entry in self.blueprints() {
            let id = entry.def.identifier.clone();
            let mut hasher = Sha256::new();
            feed(&mut hasher, &*entry.def);
            let mut entities = 0;
            for entity in self.entities_of(&id) {
                feed(&mut hasher, &**entity);
                entities += 1;
            }
            blueprints.insert(id, BlueprintDigest { entities, digest: hex(&hasher.finalize()) });
        }
        let mut access = Sha256::new();
        for credential in self.credentials() {
            feed(&mut access, credential);
        }
        for team in self.teams() {
            feed(&mut access, team);
        }
        for user in self.users() {
            feed(&mut access, user);
        }
        for bp in self.blueprints() {
            if let Some(p) = self.stored_permissions(&bp.def.identifier) {
                feed(&mut access, &(&bp.def.identifier, &**p));
            }
        }
        feed(&mut access, &self.signing_key());
        let mut definitions = Sha256::new();
        let mut any = false;
        for d in self.all_definitions() {
            feed(&mut definitions, &**d);
            any = true;
        }
        let definitions = if any { hex(&definitions.finalize()) } else { String::new() };
        CatalogDigest { seq: self.seq(), blueprints, access: hex(&access.finalize()), definitions }
    }
}

/// A running digest of a log: SHA-256 over every event's sequence number, length and bytes, in order. Equal
/// digests mean equal logs.
#[derive(Clone, Default)]
pub struct LogDigest {
    hasher: Sha256,
    events: u64,
    last: u64,
}

impl LogDigest {
    pub fn update(&mut self, seq: u64, payload: &[u8]) {
        self.hasher.update(seq.to_be_bytes());
        self.hasher.update((payload.len() as u64).to_be_bytes());
        self.hasher.update(payload);
        self.events += 1;
        self.last = seq;
    }

    /// How many events were fed, and the last one's sequence number.
    pub fn position(&self) -> (u64, u64) {
        (self.events, self.last)
    }

    pub fn finish(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}
