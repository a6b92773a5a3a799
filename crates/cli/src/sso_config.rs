//! `berth serve`'s single sign-on settings: the `--oidc-*` flags (each with a `BERTH_OIDC_*` variable),
//! `--public-url` and `--password-sign-in`, or the configuration file's `[sso]` table. The client secret
//! comes from the flag or the environment only, like every secret.

use berth_server::sso::{Mapping, SsoConfig, claims::parse_pair};
use serde::Deserialize;

#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Single sign-on (OpenID Connect)")]
pub struct SsoArgs {
    /// Berth's address as browsers reach it, e.g. https://portal.example.com; the provider must allow the
    /// redirect URI <public-url>/login/sso/callback
    #[arg(long, env = "BERTH_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The OpenID Connect provider's issuer URL (its discovery document is <issuer>/.well-known/openid-configuration);
    /// setting it turns single sign-on on
    #[arg(long, env = "BERTH_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// Berth's client id at the provider
    #[arg(long, env = "BERTH_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// Berth's client secret at the provider (none: a public client, PKCE alone)
    #[arg(long, env = "BERTH_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// The scopes asked for, space-separated [default: openid email profile]
    #[arg(long, env = "BERTH_OIDC_SCOPES")]
    pub oidc_scopes: Option<String>,
    /// The provider's name on the sign-in button ("Sign in with <label>") [default: single sign-on]
    #[arg(long, env = "BERTH_OIDC_LABEL")]
    pub oidc_label: Option<String>,
    /// The claim holding the user's email [default: email]
    #[arg(long, env = "BERTH_OIDC_EMAIL_CLAIM")]
    pub oidc_email_claim: Option<String>,
    /// The claim holding the user's groups, or a dotted path such as realm_access.roles [default: groups]
    #[arg(long, env = "BERTH_OIDC_GROUPS_CLAIM")]
    pub oidc_groups_claim: Option<String>,
    /// GROUP=ROLE: members of GROUP get ROLE (Admin or Member); with any, the provider decides roles at every
    /// sign-in (repeat the flag, or separate with semicolons)
    #[arg(long = "oidc-group-role", env = "BERTH_OIDC_GROUP_ROLES", value_delimiter = ';')]
    pub oidc_group_role: Vec<String>,
    /// GROUP=TEAM: members of GROUP belong to TEAM (created when needed), kept in step at every sign-in
    /// (repeat the flag, or separate with semicolons)
    #[arg(long = "oidc-group-team", env = "BERTH_OIDC_GROUP_TEAMS", value_delimiter = ';')]
    pub oidc_group_team: Vec<String>,
    /// The role of a user no --oidc-group-role gives one to [default: Member]
    #[arg(long, env = "BERTH_OIDC_DEFAULT_ROLE")]
    pub oidc_default_role: Option<String>,
    /// An email domain that may sign in (repeat, or separate with commas) [default: any]
    #[arg(long = "oidc-allowed-domain", env = "BERTH_OIDC_ALLOWED_DOMAINS", value_delimiter = ',')]
    pub oidc_allowed_domain: Vec<String>,
    /// A group whose members may sign in (repeat, or separate with semicolons) [default: any]
    #[arg(long = "oidc-allowed-group", env = "BERTH_OIDC_ALLOWED_GROUPS", value_delimiter = ';')]
    pub oidc_allowed_group: Vec<String>,
    /// Signing out of Berth also signs single sign-on users out at the provider, which sends them back to
    /// <public-url>/login?signed_out=1 (register that as a post-logout redirect URI)
    #[arg(long, env = "BERTH_OIDC_SIGN_OUT_AT_PROVIDER")]
    pub oidc_sign_out_at_provider: bool,
    /// Whether users may also sign in to the UI with a password (false: single sign-on only) [default: true]
    #[arg(long, env = "BERTH_PASSWORD_SIGN_IN")]
    pub password_sign_in: Option<bool>,
}

/// The configuration file's `[sso]` table (mappings as "GROUP=VALUE" strings).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct SsoFile {
    issuer: Option<String>,
    client_id: Option<String>,
    scopes: Option<String>,
    label: Option<String>,
    email_claim: Option<String>,
    groups_claim: Option<String>,
    group_roles: Option<Vec<String>>,
    group_teams: Option<Vec<String>>,
    default_role: Option<String>,
    allowed_domains: Option<Vec<String>>,
    allowed_groups: Option<Vec<String>>,
    sign_out_at_provider: Option<bool>,
}

/// The flag's values, or the file's when no flag was given.
fn list(flags: Vec<String>, file: Option<Vec<String>>) -> Vec<String> {
    let chosen = if flags.is_empty() { file.unwrap_or_default() } else { flags };
    chosen.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// Single sign-on's settings (`None`: not configured) and whether password sign-in stays on.
pub fn resolve(
    args: SsoArgs,
    file: SsoFile,
    public_url: Option<String>,
    password_sign_in: Option<bool>,
) -> anyhow::Result<(Option<SsoConfig>, bool)> {
    let nonempty = |s: &String| !s.trim().is_empty();
    let public_url = args.public_url.or(public_url).filter(nonempty);
    let password = args.password_sign_in.or(password_sign_in).unwrap_or(true);
    let Some(issuer) = args.oidc_issuer.or(file.issuer).filter(nonempty) else {
        if !password {
            anyhow::bail!("--password-sign-in false needs single sign-on (--oidc-issuer), or nobody could sign in");
        }
        return Ok((None, true));
    };
    let client_id = args
        .oidc_client_id
        .or(file.client_id)
        .filter(nonempty)
        .ok_or_else(|| anyhow::anyhow!("--oidc-issuer needs --oidc-client-id"))?;
    let public_url = public_url.ok_or_else(|| {
        anyhow::anyhow!("--oidc-issuer needs --public-url (Berth's address as browsers reach it, for the redirect URI)")
    })?;
    let pairs = |flag: &str, values: Vec<String>| -> anyhow::Result<Vec<(String, String)>> {
        values.iter().map(|v| parse_pair(flag, v).map_err(anyhow::Error::msg)).collect()
    };
    let defaults = Mapping::default();
    let mapping = Mapping {
        email_claim: args.oidc_email_claim.or(file.email_claim).filter(nonempty).unwrap_or(defaults.email_claim),
        groups_claim: args.oidc_groups_claim.or(file.groups_claim).filter(nonempty).unwrap_or(defaults.groups_claim),
        group_roles: pairs("--oidc-group-role", list(args.oidc_group_role, file.group_roles))?,
        group_teams: pairs("--oidc-group-team", list(args.oidc_group_team, file.group_teams))?,
        default_roles: match args.oidc_default_role.or(file.default_role).filter(nonempty) {
            Some(role) => vec![role.trim().to_string()],
            None => defaults.default_roles,
        },
        allowed_domains: list(args.oidc_allowed_domain, file.allowed_domains)
            .into_iter()
            .map(|d| d.trim_start_matches('@').to_lowercase())
            .collect(),
        allowed_groups: list(args.oidc_allowed_group, file.allowed_groups),
    };
    if !password && !mapping.group_roles.iter().any(|(_, role)| role == "Admin") {
        tracing::warn!(
            "password sign-in is off and no --oidc-group-role gives Admin: only users an Admin already made Admin can \
             manage the portal in the UI"
        );
    }
    let config = SsoConfig {
        issuer: issuer.trim().trim_end_matches('/').to_string(),
        client_id: client_id.trim().to_string(),
        client_secret: args.oidc_client_secret.filter(nonempty),
        public_url: public_url.trim().trim_end_matches('/').to_string(),
        scopes: args
            .oidc_scopes
            .or(file.scopes)
            .filter(nonempty)
            .unwrap_or_else(|| "openid email profile".into())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        label: args.oidc_label.or(file.label).filter(nonempty).unwrap_or_else(|| "single sign-on".into()),
        mapping,
        sign_out_at_provider: args.oidc_sign_out_at_provider || file.sign_out_at_provider.unwrap_or(false),
    };
    config.check().map_err(anyhow::Error::msg)?;
    Ok((Some(config), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SsoArgs {
        SsoArgs {
            oidc_issuer: Some("https://login.example.com/".into()),
            oidc_client_id: Some("berth".into()),
            public_url: Some("https://portal.example.com/".into()),
            oidc_group_role: vec!["platform=Admin".into()],
            oidc_group_team: vec!["cn=payments,ou=groups=payments".into()],
            ..Default::default()
        }
    }

    #[test]
    fn flags_make_a_configuration() {
        let (c, password) = resolve(args(), SsoFile::default(), None, None).expect("test value");
        let c = c.expect("test value");
        assert!(password);
        assert_eq!(c.issuer, "https://login.example.com");
        assert_eq!(c.redirect_uri(), "https://portal.example.com/login/sso/callback");
        assert_eq!(c.scopes, vec!["openid", "email", "profile"]);
        assert_eq!(c.mapping.group_teams, vec![("cn=payments,ou=groups".to_string(), "payments".to_string())]);
        assert_eq!(c.mapping.default_roles, vec!["Member"]);
    }

    #[test]
    fn what_is_refused() {
        let e = |a: SsoArgs, password: Option<bool>| {
            format!("{:#}", resolve(a, SsoFile::default(), None, password).expect_err("refused"))
        };
        assert!(e(SsoArgs::default(), Some(false)).contains("nobody could sign in"));
        assert!(e(SsoArgs { oidc_client_id: None, ..args() }, None).contains("--oidc-client-id"));
        assert!(e(SsoArgs { public_url: None, ..args() }, None).contains("--public-url"));
        assert!(e(SsoArgs { oidc_issuer: Some("http://login.example.com".into()), ..args() }, None).contains("https"));
        assert!(e(SsoArgs { oidc_group_role: vec!["x".into()], ..args() }, None).contains("GROUP=VALUE"));
        assert!(e(SsoArgs { oidc_scopes: Some("email".into()), ..args() }, None).contains("openid"));
        assert_eq!(
            resolve(SsoArgs::default(), SsoFile::default(), None, None).expect("test value").0.map(|c| c.issuer),
            None
        );
    }
}
