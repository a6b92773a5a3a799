//! The token signing key, kept out of the log (the security review's H3).
//!
//! Tokens and CSRF tokens are signed with HS256 under a key that lives outside the change log, its snapshots
//! and its backups, in one of (first found):
//!
//! 1. `BERTH_SIGNING_KEY` (and, while rotating, `BERTH_SIGNING_KEY_PREVIOUS`): for orchestrators that hand
//!    out secrets as environment variables;
//! 2. the key file (`--signing-key-file`, `BERTH_SIGNING_KEY_FILE`, default `<data-dir>/signing-key.json`),
//!    readable only by its owner (0600): `{"current": HEX, "previous"?: HEX, "rotatedAt"?: SECONDS}`.
//!
//! Every replica must use the same key (mount the same file, or pass the same variable). Without either,
//! the first start writes a new random key file. A catalog created before keys left the log has its key in
//! a `SigningKeySet` event: that key is moved into the file on the first start (so existing tokens stay
//! valid) and nothing new is written to the log; rotate it once to stop trusting the copy in old backups.
//!
//! **Rotation** (`berth rotate-signing-key`): the new key signs from then on; the previous one is still
//! accepted for tokens issued before the rotation, for one token lifetime ([`crate::auth::TOKEN_LIFETIME_SECS`]),
//! then never. Running servers re-read the file when it changes (checked at most every few seconds).

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// The shortest key accepted from the environment or a file (hex or any text: its bytes are the key).
pub const MIN_KEY_LEN: usize = 32;
/// How often a running server looks at the key file for a rotation.
const RELOAD_EVERY: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFile {
    pub current: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// When `previous` stopped signing (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<i64>,
    /// The key subscriptions' webhook secrets are derived from (`berth_delivery::secret`): kept across
    /// rotations of the signing key, so receivers' secrets do not change with it. Added on first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
}

impl KeyFile {
    fn check(&self) -> Result<(), String> {
        if self.current.len() < MIN_KEY_LEN || self.previous.as_ref().is_some_and(|p| p.len() < MIN_KEY_LEN) {
            return Err(format!("a signing key must be at least {MIN_KEY_LEN} characters"));
        }
        Ok(())
    }

    /// This key set after a rotation at `now`: a new current key, the old one previous.
    pub fn rotated(&self, new_key: String, now: i64) -> KeyFile {
        KeyFile {
            current: new_key,
            previous: Some(self.current.clone()),
            rotated_at: Some(now),
            delivery: self.delivery.clone(),
        }
    }
}

/// Where the keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    Environment,
    File(PathBuf),
}

struct Loaded {
    keys: KeyFile,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// The keys a server signs and verifies with.
pub struct SigningKeys {
    source: KeySource,
    loaded: RwLock<Loaded>,
    /// See [`KeyFile::delivery`]; `BERTH_DELIVERY_KEY` wins over the file's.
    delivery: String,
}

/// Reads a key file; `Ok(None)` when it does not exist.
pub fn read_key_file(path: &Path) -> Result<Option<(KeyFile, Option<SystemTime>)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let keys: KeyFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: not a signing key file: {e}", path.display()))?;
    keys.check().map_err(|e| format!("{}: {e}", path.display()))?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok(Some((keys, modified)))
}

/// Writes a key file readable only by its owner, replacing any (through a new file renamed over it, so a
/// server reading it never sees half a file).
pub fn write_key_file(path: &Path, keys: &KeyFile) -> Result<(), String> {
    keys.check()?;
    let tmp = path.with_extension("json.new");
    let text = serde_json::to_vec_pretty(keys).map_err(|e| e.to_string())?;
    crate::write_private(&tmp, &text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `BERTH_DELIVERY_KEY`, when set (at least [`MIN_KEY_LEN`] characters).
fn delivery_from_env() -> Option<String> {
    std::env::var("BERTH_DELIVERY_KEY").ok().filter(|k| k.len() >= MIN_KEY_LEN)
}

impl SigningKeys {
    /// Keys from the environment, or from `file` (made, with `legacy` or a new random key, when absent).
    pub fn open(file: &Path, legacy: Option<&str>) -> Result<SigningKeys, String> {
        if let Ok(current) = std::env::var("BERTH_SIGNING_KEY") {
            let keys = KeyFile {
                current,
                previous: std::env::var("BERTH_SIGNING_KEY_PREVIOUS").ok().filter(|p| !p.is_empty()),
                rotated_at: None,
                delivery: None,
            };
            keys.check().map_err(|e| format!("BERTH_SIGNING_KEY: {e}"))?;
            if std::env::var("BERTH_DELIVERY_KEY").is_err() {
                tracing::warn!(
                    "BERTH_SIGNING_KEY is set but BERTH_DELIVERY_KEY is not: subscription and action signing secrets change at every start, and organisation secrets and encrypted run inputs sealed before a restart no longer open (set BERTH_DELIVERY_KEY, the same on every replica)"
                );
            }
            return Ok(SigningKeys::fixed(KeySource::Environment, keys));
        }
        let (mut keys, mut modified) = match read_key_file(file)? {
            Some(found) => found,
            None => {
                let current = match legacy {
                    Some(key) => {
                        tracing::warn!(file = %file.display(), "moving the signing key out of the change log into the key file; rotate it (berth rotate-signing-key) to stop trusting copies in old backups");
                        key.to_string()
                    }
                    None => crate::auth::random_hex(32).map_err(|e| e.message)?,
                };
                let keys = KeyFile {
                    current,
                    previous: None,
                    rotated_at: None,
                    delivery: Some(crate::auth::random_hex(32).map_err(|e| e.message)?),
                };
                write_key_file(file, &keys)?;
                tracing::info!(file = %file.display(), "wrote a new signing key file; every replica must use the same one");
                let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
                (keys, modified)
            }
        };
        // A key file written before subscriptions existed gets its delivery key now (once).
        if keys.delivery.is_none() {
            keys.delivery = Some(crate::auth::random_hex(32).map_err(|e| e.message)?);
            write_key_file(file, &keys)?;
            modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        }
        let delivery = delivery_from_env().or_else(|| keys.delivery.clone()).unwrap_or_default();
        Ok(SigningKeys {
            source: KeySource::File(file.to_path_buf()),
            loaded: RwLock::new(Loaded { keys, modified, checked: Instant::now() }),
            delivery,
        })
    }

    /// Keys that never change (tests, the environment).
    pub fn fixed(source: KeySource, keys: KeyFile) -> SigningKeys {
        let delivery = delivery_from_env()
            .or_else(|| keys.delivery.clone())
            .or_else(|| crate::auth::random_hex(32).ok())
            .unwrap_or_default();
        SigningKeys { source, loaded: RwLock::new(Loaded { keys, modified: None, checked: Instant::now() }), delivery }
    }

    /// The key subscription secrets are derived from.
    pub fn delivery_key(&self) -> String {
        self.delivery.clone()
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// Re-reads the key file if it changed (at most every few seconds); a file that no longer reads keeps
    /// the keys in use (and says so in the log).
    fn refresh(&self) {
        let KeySource::File(path) = &self.source else { return };
        let due = self.loaded.read().is_ok_and(|l| l.checked.elapsed() >= RELOAD_EVERY);
        if !due {
            return;
        }
        let Ok(mut loaded) = self.loaded.write() else { return };
        loaded.checked = Instant::now();
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == loaded.modified {
            return;
        }
        match read_key_file(path) {
            Ok(Some((keys, modified))) => {
                if keys != loaded.keys {
                    tracing::info!(file = %path.display(), "signing keys reloaded");
                }
                loaded.keys = keys;
                loaded.modified = modified;
            }
            Ok(None) => tracing::warn!(file = %path.display(), "the signing key file is gone; keeping the keys in use"),
            Err(e) => tracing::warn!(error = %e, "the signing key file does not read; keeping the keys in use"),
        }
    }

    /// The key that signs now.
    pub fn current(&self) -> String {
        self.refresh();
        self.loaded.read().map(|l| l.keys.current.clone()).unwrap_or_default()
    }

    /// The keys a token may be signed with at `now` (seconds): the current one, and the previous one while
    /// tokens it signed can still be alive, with the time it stopped signing.
    pub fn verifying(&self, now: i64) -> Vec<(String, Option<i64>)> {
        self.refresh();
        let Ok(l) = self.loaded.read() else { return Vec::new() };
        let mut out = vec![(l.keys.current.clone(), None)];
        if let Some(prev) = &l.keys.previous {
            let live = l.keys.rotated_at.is_none_or(|at| now < at + crate::auth::TOKEN_LIFETIME_SECS);
            if live {
                out.push((prev.clone(), l.keys.rotated_at));
            }
        }
        out
    }
}
