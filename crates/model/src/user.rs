//! Users: people who sign in to the web UI with an email and a password.
//!
//! - The email (lower-cased) is the user's identifier and what teams' `members` lists hold; a user's teams are
//!   the teams that list it, so membership has one source of truth.
//! - Passwords are stored only as Argon2id PHC strings (hashing happens in the server; this crate does no
//!   crypto). An invited user has no password yet, only the SHA-256 of a one-time invitation code.
//! - A user who signs in through single sign-on ([`SsoIdentity`]) may have no password at all.

use serde::{Deserialize, Serialize};

use crate::{DomainError, Timestamp};

/// Where a user is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// Invited; signs in once it has set a password with its invitation code.
    #[default]
    Invited,
    Active,
    /// Kept for history, but may not sign in.
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub email: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub status: UserStatus,
    pub roles: Vec<String>,
    /// Argon2id PHC string, absent until a password is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// Hex SHA-256 of the pending invitation code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_sha256: Option<String>,
    /// Raised when every session of the user must end (sign-out, disable): a number that only grows, so a
    /// token issued before it never becomes valid again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_epoch: u64,
    /// The single sign-on account this user signs in with, linked on its first sign-in: another account of
    /// the provider claiming the same email is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoIdentity>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An account at an OpenID Connect provider: its issuer and the `sub` it gives the account (unique and never
/// reassigned within the issuer, unlike an email).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoIdentity {
    pub issuer: String,
    pub subject: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How long an invitation code may be used after the user was invited (7 days, in milliseconds).
pub const INVITATION_LIFETIME_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The longest email accepted (RFC 5321's path limit).
pub const MAX_EMAIL: usize = 254;

impl User {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == "Admin")
    }

    /// A short fingerprint of the password hash, the status and the session epoch, carried in session tokens
    /// so that a new password, a disabled account or a sign-out ends every session (and re-enabling an
    /// account does not revive the old ones: the epoch has moved on).
    pub fn session_version(&self) -> String {
        let hash = self.password_hash.as_deref().unwrap_or("");
        // The PHC string ends with the salted hash itself; its tail changes with every new password.
        let tail = hash.get(hash.len().saturating_sub(16)..).unwrap_or(hash);
        format!("{tail}:{:?}:{}", self.status, self.session_epoch)
    }

    /// When a pending invitation stops being valid (invited users are created when invited).
    pub fn invitation_expires_at(&self) -> Timestamp {
        Timestamp::from_millis(self.created_at.millis().saturating_add(INVITATION_LIFETIME_MS))
    }

    /// The name to show: first and last name, or the email.
    pub fn display_name(&self) -> String {
        let name = format!("{} {}", self.first_name.trim(), self.last_name.trim());
        let name = name.trim();
        if name.is_empty() { self.email.clone() } else { name.to_string() }
    }

    /// Checks the email, names and roles.
    pub fn check(&self) -> Result<(), DomainError> {
        check_email(&self.email)?;
        if self.first_name.len() > 200 || self.last_name.len() > 200 {
            return Err(DomainError::Invalid("first and last names are at most 200 characters".into()));
        }
        for role in &self.roles {
            crate::credential::check_role(role).map_err(DomainError::Invalid)?;
        }
        Ok(())
    }
}

/// Normalises an email for use as an identifier: trimmed and lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Checks the shape of a (normalised) email: one `@` with text on both sides, a dot in the domain, no spaces.
pub fn check_email(email: &str) -> Result<(), DomainError> {
    let bad = || DomainError::Invalid(format!("{email:?} is not an email address"));
    if email.is_empty() || email.len() > MAX_EMAIL || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        for ok in ["a@b.io", "first.last+tag@example.co.uk"] {
            assert!(check_email(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a@b", "@b.io", "a@@b.io", "a b@c.io", "a@.io", "a@b.io."] {
            assert!(check_email(bad).is_err(), "{bad}");
        }
        assert_eq!(normalize_email("  Ann@Example.COM "), "ann@example.com");
    }

    #[test]
    fn session_version_changes_with_password_and_status() {
        let now = Timestamp::from_millis(0);
        let mut u = User {
            email: "a@b.io".into(),
            first_name: String::new(),
            last_name: String::new(),
            status: UserStatus::Active,
            roles: vec!["Member".into()],
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaDE".into()),
            invite_sha256: None,
            session_epoch: 0,
            sso: None,
            created_at: now,
            updated_at: now,
        };
        let v1 = u.session_version();
        u.password_hash = Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaDI".into());
        let v2 = u.session_version();
        assert_ne!(v1, v2);
        u.status = UserStatus::Disabled;
        assert_ne!(v2, u.session_version());
        // Back to active, the epoch (raised on the way) keeps the old version from coming back.
        u.status = UserStatus::Active;
        u.session_epoch = 1;
        assert_ne!(v2, u.session_version());
        assert_eq!(u.display_name(), "a@b.io");
    }
}
