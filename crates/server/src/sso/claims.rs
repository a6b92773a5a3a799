//! What a provider says of a user (the ID token's claims, completed by userinfo), and how the operator's
//! [`Mapping`] turns that into a sign-in: which email, which roles and which teams.
//!
//! - The email comes from `--oidc-email-claim` (default `email`; Entra ID tenants often use
//!   `preferred_username`). An email the provider marks `email_verified: false` is refused.
//! - Groups come from `--oidc-groups-claim` (default `groups`), a claim name or a dotted path into nested
//!   objects (`realm_access.roles` for Keycloak's realm roles); a list of strings or one string.
//! - `--oidc-group-role GROUP=ROLE`: with any such mapping, the provider decides roles on every sign-in (the
//!   roles of the user's mapped groups, or `--oidc-default-role` when none matches). Without one, a new user
//!   gets the default role and a known user keeps the roles an Admin gave it.
//! - `--oidc-group-team GROUP=TEAM`: the teams so named are kept in step with the groups on every sign-in
//!   (created when first needed); other teams' membership is left to Admins.
//! - `--oidc-allowed-domain` and `--oidc-allowed-group` narrow who may sign in at all.

use berth_engine::SsoSignIn;
use berth_model::SsoIdentity;
use serde_json::{Map, Value};

/// The claims Berth reads, plus the rest for the configured email and groups claims.
#[derive(Clone, Debug, PartialEq)]
pub struct Claims {
    pub subject: String,
    pub all: Map<String, Value>,
}

/// The most groups read from a claim, and the longest group name kept.
pub const MAX_GROUPS: usize = 1000;
pub const MAX_GROUP: usize = 256;

impl Claims {
    pub fn from_id_token(all: Map<String, Value>) -> Result<Claims, String> {
        let subject = all.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or("it has no sub")?;
        if subject.len() > 255 {
            return Err("its sub is longer than 255 characters".into());
        }
        Ok(Claims { subject: subject.to_string(), all })
    }

    /// Adds the userinfo endpoint's claims the ID token lacks; they must be about the same `sub`
    /// (OpenID Connect Core §5.3.2).
    pub fn merge_userinfo(&mut self, userinfo: Map<String, Value>) -> crate::error::ApiResult<()> {
        if userinfo.get("sub").and_then(Value::as_str) != Some(self.subject.as_str()) {
            return Err(crate::error::ApiError::unauthorized(
                "the sign-in provider's userinfo is about another user; sign in again",
            ));
        }
        for (k, v) in userinfo {
            self.all.entry(k).or_insert(v);
        }
        Ok(())
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.all.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
    }

    /// The value at a dotted path (`realm_access.roles`); a claim whose own name has dots wins.
    fn at(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.all.get(path) {
            return Some(v);
        }
        let mut parts = path.split('.');
        let mut here = self.all.get(parts.next()?)?;
        for part in parts {
            here = here.as_object()?.get(part)?;
        }
        Some(here)
    }

    /// The groups at `path`: a list of strings (other items skipped) or one string; bounded.
    pub fn groups(&self, path: &str) -> Vec<String> {
        let mut out: Vec<String> = match self.at(path) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .filter(|g| g.len() <= MAX_GROUP)
                .take(MAX_GROUPS)
                .map(str::to_string)
                .collect(),
            Some(Value::String(one)) if one.len() <= MAX_GROUP => vec![one.clone()],
            _ => vec![],
        };
        out.sort();
        out.dedup();
        out
    }
}

/// The operator's mapping from claims to users.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub email_claim: String,
    pub groups_claim: String,
    /// (group, role) and (group, team) pairs.
    pub group_roles: Vec<(String, String)>,
    pub group_teams: Vec<(String, String)>,
    pub default_roles: Vec<String>,
    /// Email domains that may sign in (lower-case); empty: any.
    pub allowed_domains: Vec<String>,
    /// Groups one of which a user must be in to sign in; empty: any.
    pub allowed_groups: Vec<String>,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            group_roles: vec![],
            group_teams: vec![],
            default_roles: vec!["Member".into()],
            allowed_domains: vec![],
            allowed_groups: vec![],
        }
    }
}

/// Parses `GROUP=VALUE` (the value after the last `=`, so a group may hold one).
pub fn parse_pair(flag: &str, text: &str) -> Result<(String, String), String> {
    match text.rsplit_once('=') {
        Some((group, value)) if !group.trim().is_empty() && !value.trim().is_empty() => {
            Ok((group.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("{flag} {text:?}: expected GROUP=VALUE")),
    }
}

impl Mapping {
    /// Checks the role and team names and the claim names.
    pub fn check(&self) -> Result<(), String> {
        if self.email_claim.trim().is_empty() || self.groups_claim.trim().is_empty() {
            return Err("--oidc-email-claim and --oidc-groups-claim may not be empty".into());
        }
        if self.default_roles.is_empty() {
            return Err("--oidc-default-role: at least one role".into());
        }
        for role in self.group_roles.iter().map(|(_, r)| r).chain(&self.default_roles) {
            berth_model::credential::check_role(role).map_err(|e| format!("--oidc-group-role: {e}"))?;
        }
        for (_, team) in &self.group_teams {
            let now = berth_model::Timestamp::from_millis(0);
            let t = berth_model::Team {
                name: team.clone(),
                description: None,
                members: vec![],
                created_at: now,
                updated_at: now,
            };
            t.check().map_err(|e| format!("--oidc-group-team: {e}"))?;
        }
        Ok(())
    }

    /// Whether the claims hold all this mapping reads (else userinfo is asked for the rest).
    pub fn satisfied_by(&self, claims: &Claims) -> bool {
        let needs_groups =
            !self.group_roles.is_empty() || !self.group_teams.is_empty() || !self.allowed_groups.is_empty();
        claims.text(&self.email_claim).is_some() && (!needs_groups || claims.at(&self.groups_claim).is_some())
    }

    /// The sign-in the claims make, or why the user may not sign in.
    pub fn sign_in(&self, issuer: &str, claims: &Claims) -> Result<SsoSignIn, String> {
        let raw = claims
            .text(&self.email_claim)
            .ok_or_else(|| format!("the sign-in provider gave no {} for this account", self.email_claim))?;
        let email = berth_model::user::normalize_email(raw);
        berth_model::user::check_email(&email)
            .map_err(|e| format!("the sign-in provider's {}: {e}", self.email_claim))?;
        if claims.all.get("email_verified").is_some_and(|v| v == &Value::Bool(false) || v == "false") {
            return Err(format!("the sign-in provider has not verified {email}"));
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if !self.allowed_domains.is_empty() && !self.allowed_domains.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return Err(format!("accounts of {domain} may not sign in to this portal"));
        }
        let groups = claims.groups(&self.groups_claim);
        let member = |g: &String| groups.binary_search(g).is_ok();
        if !self.allowed_groups.is_empty() && !self.allowed_groups.iter().any(member) {
            return Err(format!("{email} is not in a group that may sign in to this portal"));
        }
        let roles = (!self.group_roles.is_empty()).then(|| {
            let mut roles: Vec<String> =
                self.group_roles.iter().filter(|(g, _)| member(g)).map(|(_, r)| r.clone()).collect();
            roles.sort();
            roles.dedup();
            if roles.is_empty() { self.default_roles.clone() } else { roles }
        });
        let mut managed_teams: Vec<String> = self.group_teams.iter().map(|(_, t)| t.clone()).collect();
        managed_teams.sort();
        managed_teams.dedup();
        let mut teams: Vec<String> =
            self.group_teams.iter().filter(|(g, _)| member(g)).map(|(_, t)| t.clone()).collect();
        teams.sort();
        teams.dedup();
        let (first_name, last_name) = match (claims.text("given_name"), claims.text("family_name")) {
            (None, None) => match claims.text("name") {
                Some(name) => match name.split_once(' ') {
                    Some((first, last)) => (first.to_string(), last.trim().to_string()),
                    None => (name.to_string(), String::new()),
                },
                None => (String::new(), String::new()),
            },
            (first, last) => (first.unwrap_or("").to_string(), last.unwrap_or("").to_string()),
        };
        let bound = |s: String| berth_model::limits::truncate(&s, 200).to_string();
        Ok(SsoSignIn {
            email,
            identity: SsoIdentity { issuer: issuer.to_string(), subject: claims.subject.clone() },
            first_name: bound(first_name),
            last_name: bound(last_name),
            roles,
            default_roles: self.default_roles.clone(),
            managed_teams,
            teams,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        Claims::from_id_token(v.as_object().expect("test value").clone()).expect("test value")
    }

    fn mapping() -> Mapping {
        Mapping {
            group_roles: vec![("platform".into(), "Admin".into())],
            group_teams: vec![("payments-eng".into(), "payments".into()), ("platform".into(), "platform".into())],
            ..Mapping::default()
        }
    }

    #[test]
    fn groups_map_to_roles_and_teams() {
        let c = claims(json!({"sub": "1", "email": "Ann@Example.com", "given_name": "Ann", "family_name": "Lee",
            "groups": ["payments-eng", "other"]}));
        let s = mapping().sign_in("https://idp", &c).expect("test value");
        assert_eq!(s.email, "ann@example.com");
        assert_eq!(s.roles, Some(vec!["Member".to_string()]), "no mapped role: the default");
        assert_eq!(s.teams, vec!["payments"]);
        assert_eq!(s.managed_teams, vec!["payments", "platform"]);
        assert_eq!((s.first_name.as_str(), s.last_name.as_str()), ("Ann", "Lee"));
        let c = claims(json!({"sub": "1", "email": "a@b.io", "name": "Bo Di Lu", "groups": "platform"}));
        let s = mapping().sign_in("https://idp", &c).expect("test value");
        assert_eq!(s.roles, Some(vec!["Admin".to_string()]));
        assert_eq!((s.first_name.as_str(), s.last_name.as_str()), ("Bo", "Di Lu"));
        // Without role mappings, roles are not the provider's to decide.
        let s = Mapping::default().sign_in("https://idp", &c).expect("test value");
        assert_eq!(s.roles, None);
    }

    #[test]
    fn nested_group_claims_are_read() {
        let c = claims(json!({"sub": "1", "email": "a@b.io", "realm_access": {"roles": ["platform", 3]}}));
        let m = Mapping { groups_claim: "realm_access.roles".into(), ..mapping() };
        assert!(m.satisfied_by(&c));
        assert_eq!(m.sign_in("i", &c).expect("test value").roles, Some(vec!["Admin".to_string()]));
    }

    #[test]
    fn who_may_not_sign_in() {
        let m =
            Mapping { allowed_domains: vec!["example.com".into()], allowed_groups: vec!["eng".into()], ..mapping() };
        let cases = [
            (json!({"sub": "1"}), "gave no email"),
            (json!({"sub": "1", "email": "not an email"}), "not an email"),
            (json!({"sub": "1", "email": "a@example.com", "email_verified": false, "groups": ["eng"]}), "not verified"),
            (json!({"sub": "1", "email": "a@evil.io", "groups": ["eng"]}), "evil.io may not"),
            (json!({"sub": "1", "email": "a@example.com", "groups": ["other"]}), "not in a group"),
        ];
        for (c, why) in cases {
            let e = m.sign_in("i", &claims(c.clone())).expect_err("refused");
            assert!(e.contains(why), "{c}: {e}");
        }
        assert!(m.sign_in("i", &claims(json!({"sub": "1", "email": "a@EXAMPLE.com", "groups": ["eng"]}))).is_ok());
        assert!(
            Claims::from_id_token(json!({"email": "a@b.io"}).as_object().expect("test value").clone()).is_err(),
            "no sub"
        );
    }

    #[test]
    fn userinfo_fills_gaps_for_the_same_subject_only() {
        let mut c = claims(json!({"sub": "1", "email": "a@b.io"}));
        let other = json!({"sub": "2", "groups": ["x"]}).as_object().expect("test value").clone();
        assert!(c.merge_userinfo(other).is_err());
        let same = json!({"sub": "1", "email": "evil@b.io", "groups": ["x"]}).as_object().expect("test value").clone();
        c.merge_userinfo(same).expect("test value");
        assert_eq!(c.all["email"], "a@b.io", "the ID token wins");
        assert_eq!(c.groups("groups"), vec!["x"]);
    }

    #[test]
    fn mappings_are_checked() {
        assert!(mapping().check().is_ok());
        let bad_role = Mapping { group_roles: vec![("g".into(), "Root!".into())], ..mapping() };
        assert!(bad_role.check().is_err());
        let bad_team = Mapping { group_teams: vec![("g".into(), " padded ".into())], ..mapping() };
        assert!(bad_team.check().is_err());
        assert_eq!(parse_pair("f", "cn=x,dc=y=Admin").expect("test value"), ("cn=x,dc=y".into(), "Admin".into()));
        assert!(parse_pair("f", "nothing").is_err());
        assert!(parse_pair("f", "=Admin").is_err());
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-zA-Z@.=/ -]{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_.]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever a provider sends, reading it never panics, and a sign-in it allows names only managed
        /// teams, only configured or default roles, and a valid email.
        #[test]
        fn any_claims_make_a_sane_sign_in_or_a_refusal(
            extra in prop::collection::btree_map(
                prop_oneof![Just("email".to_string()), Just("groups".to_string()), Just("name".to_string()),
                    Just("email_verified".to_string()), "[a-z_]{1,8}"],
                any_json(), 0..6),
            groups in prop::collection::vec(prop_oneof![Just("platform"), Just("payments-eng"), Just("x")], 0..4),
        ) {
            let mut all: Map<String, Value> = extra.into_iter().collect();
            all.insert("sub".into(), json!("s"));
            all.entry("groups".to_string()).or_insert(json!(groups));
            let c = Claims::from_id_token(all).expect("test value");
            let m = mapping();
            let _ = m.satisfied_by(&c);
            if let Ok(s) = m.sign_in("i", &c) {
                prop_assert!(berth_model::user::check_email(&s.email).is_ok());
                prop_assert!(s.teams.iter().all(|t| s.managed_teams.contains(t)));
                let roles = s.roles.expect("test value");
                prop_assert!(roles.iter().all(|r| r == "Admin" || r == "Member"));
            }
        }
    }
}
