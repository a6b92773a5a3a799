//! Single sign-on with OpenID Connect: the authorization code flow with PKCE, against any provider that
//! publishes its discovery document (Okta, Entra ID, Google, Keycloak, ...).
//!
//! A sign-in goes:
//! 1. [`Sso::begin`]: a fresh `state`, `nonce` and PKCE verifier, kept in a short-lived cookie signed with
//!    the catalog's key ([`pending`]), so any replica can finish what another began; the browser goes to the
//!    provider's authorization endpoint.
//! 2. The provider sends the browser back to `<public URL>/login/sso/callback` with a code.
//!    [`Sso::finish`] checks the `state` against the cookie, exchanges the code (with the verifier) at the
//!    token endpoint, and checks the ID token ([`id_token`]): signature by a key of the provider's JWKS,
//!    issuer, audience, expiry, nonce. Claims the ID token lacks are read from the userinfo endpoint.
//! 3. [`claims`] turns the claims into a [`berth_engine::SsoSignIn`] (email, names, roles and teams from the
//!    groups claim by configuration), and the engine creates, links or updates the user in one write.
//!
//! The discovery document and the JWKS are cached ([`provider`]); a token signed by a key the cache does not
//! know makes it fetch the JWKS again, so the provider can rotate its keys at any time.

pub mod claims;
pub mod id_token;
pub mod pending;
pub mod provider;

use std::time::Duration;

use berth_engine::{Command, Outcome};
use berth_model::{Origin, User};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

pub use claims::Mapping;
pub use pending::Pending;

/// Where the provider sends the browser back, under the public URL.
pub const CALLBACK_PATH: &str = "/login/sso/callback";

/// The operator's single sign-on settings (`berth serve --oidc-*`). Its `Debug` hides the client secret.
#[derive(Clone)]
pub struct SsoConfig {
    /// The provider's issuer URL, exactly as its discovery document states it.
    pub issuer: String,
    pub client_id: String,
    /// Absent for a public client (PKCE alone).
    pub client_secret: Option<String>,
    /// Berth's own address as browsers reach it (the redirect URI is this plus [`CALLBACK_PATH`]).
    pub public_url: String,
    pub scopes: Vec<String>,
    /// What the sign-in button says: "Sign in with <label>".
    pub label: String,
    pub mapping: Mapping,
    /// Signing out of Berth also signs a single sign-on user out at the provider (when it has an
    /// `end_session_endpoint`), which then sends the browser back to `/login?signed_out=1`.
    pub sign_out_at_provider: bool,
}

impl std::fmt::Debug for SsoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SsoConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<hidden>"))
            .field("public_url", &self.public_url)
            .field("scopes", &self.scopes)
            .field("label", &self.label)
            .field("mapping", &self.mapping)
            .field("sign_out_at_provider", &self.sign_out_at_provider)
            .finish()
    }
}

impl SsoConfig {
    /// Checks the URLs: the issuer over HTTPS (plain HTTP only on a loopback address, for tests and local
    /// providers), the public URL absolute.
    pub fn check(&self) -> Result<(), String> {
        provider::check_url("--oidc-issuer", &self.issuer)?;
        let public = reqwest::Url::parse(&self.public_url)
            .map_err(|e| format!("--public-url {:?} is not a URL: {e}", self.public_url))?;
        if !matches!(public.scheme(), "http" | "https") || public.host().is_none() {
            return Err(format!("--public-url {:?} must be an http or https URL", self.public_url));
        }
        if self.client_id.trim().is_empty() {
            return Err("--oidc-client-id is empty".into());
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err("--oidc-scopes must include openid".into());
        }
        self.mapping.check()
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.public_url.trim_end_matches('/'))
    }

    /// Where the provider sends the browser after signing it out (to register at the provider).
    pub fn post_logout_redirect_uri(&self) -> String {
        format!("{}/login?signed_out=1", self.public_url.trim_end_matches('/'))
    }
}

/// Single sign-on as a running server has it: the settings and the provider's cached documents.
pub struct Sso {
    pub config: SsoConfig,
    provider: provider::Provider,
}

/// How long a sign-in may take between leaving for the provider and coming back.
pub const PENDING_LIFETIME: Duration = Duration::from_secs(10 * 60);

impl Sso {
    pub fn new(config: SsoConfig) -> Result<Sso, String> {
        config.check()?;
        let provider = provider::Provider::new(&config.issuer)?;
        Ok(Sso { config, provider })
    }

    /// Fetches the discovery document and the keys now, to tell the operator at start-up whether the provider
    /// answers (sign-ins fetch them anyway when they are missing).
    pub async fn warm_up(&self) -> Result<(), ApiError> {
        let metadata = self.provider.metadata().await?;
        self.provider.keys(&metadata, None).await.map(|_| ())
    }

    /// Starts a sign-in: where to send the browser, and the pending sign-in to keep in its cookie.
    pub async fn begin(&self, next: &str, now_secs: i64) -> ApiResult<(String, Pending)> {
        let metadata = self.provider.metadata().await?;
        let pending = Pending::new(next, now_secs + PENDING_LIFETIME.as_secs() as i64)?;
        let mut url = reqwest::Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| ApiError::unavailable(format!("the provider's authorization endpoint is not a URL: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_uri())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pending.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), pending))
    }

    /// Where to send a single sign-on user who signed out of Berth, to sign out at the provider too: `None`
    /// unless `sign_out_at_provider` is set and the provider has an end-session endpoint it can be read from.
    pub async fn sign_out_url(&self) -> Option<String> {
        if !self.config.sign_out_at_provider {
            return None;
        }
        let metadata = self.provider.metadata().await.ok()?;
        let endpoint = metadata.end_session_endpoint.as_deref()?;
        let mut url = provider::check_url("end session endpoint", endpoint).ok()?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("post_logout_redirect_uri", &self.config.post_logout_redirect_uri());
        Some(url.to_string())
    }

    /// Finishes a sign-in: the code exchanged, the ID token checked, the claims read. `now_secs` is the
    /// wall clock the token's times are checked against.
    pub async fn finish(&self, pending: &Pending, code: &str, now_secs: i64) -> ApiResult<claims::Claims> {
        let metadata = self.provider.metadata().await?;
        let tokens = self.provider.exchange(&metadata, &self.config, code, &pending.verifier).await?;
        let header = id_token::header(&tokens.id_token)?;
        let keys = self.provider.keys(&metadata, header.kid.as_deref()).await?;
        let expect = id_token::Expect {
            issuer: &metadata.issuer,
            client_id: &self.config.client_id,
            nonce: &pending.nonce,
            now_secs,
        };
        let mut claims = id_token::verify(&tokens.id_token, &keys, &expect)?;
        if !self.config.mapping.satisfied_by(&claims) {
            if let (Some(endpoint), Some(access)) = (&metadata.userinfo_endpoint, &tokens.access_token) {
                let more = self.provider.userinfo(endpoint, access).await?;
                claims.merge_userinfo(more)?;
            }
        }
        Ok(claims)
    }

    /// Creates, links or updates the user the claims describe, as one write. Its answer is the user to sign
    /// in, once this replica has applied the write.
    pub async fn provision(&self, app: &AppState, claims: &claims::Claims) -> ApiResult<User> {
        let sign_in = self.config.mapping.sign_in(&self.config.issuer, claims).map_err(ApiError::forbidden)?;
        let email = sign_in.email.clone();
        let meta = berth_engine::WriteMeta { actor: email.clone(), origin: Origin::Ui, ..crate::system_meta() };
        let (outcome, seq) = app.pipeline.write_one(meta, Command::SsoSignIn { sign_in: Box::new(sign_in) }).await?;
        match outcome {
            Ok(Outcome::User(user)) => {
                app.pipeline.wait_applied(seq, Duration::from_secs(5)).await;
                Ok(user)
            }
            Ok(_) => Err(ApiError::internal(format!("signing `{email}` in wrote no user"))),
            Err(berth_model::DomainError::Unauthorized(m)) => Err(ApiError::forbidden(m)),
            Err(e) => Err(e.into()),
        }
    }
}
