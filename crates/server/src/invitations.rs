//! Accepting an invitation: the invitee sets its password with the one-time code. One service for the API
//! (`POST /v1/users/accept-invite`) and the UI's `/invite` page.

use berth_engine::{Command, Outcome};
use berth_model::User;

use crate::AppState;
use crate::auth::hash_secret;
use crate::error::{ApiError, ApiResult};
use berth_model::user::normalize_email;

/// Sets an invited user's password if `code` is its pending invitation; shared by the API and the UI.
pub async fn accept(
    app: &AppState,
    origin: berth_model::Origin,
    email: &str,
    code: &str,
    password: &str,
) -> ApiResult<(User, u64)> {
    if !app.config.password_sign_in {
        return Err(ApiError::forbidden(
            "password sign-in is off on this portal: sign in with single sign-on, which accepts the invitation",
        ));
    }
    crate::auth::check_password(password)?;
    let email = normalize_email(email);
    let invite_sha256 = hash_secret(code);
    // Check the code before the (deliberately slow) hashing, so this open route cannot be used to burn CPU;
    // the engine checks it again, atomically, when the password is set.
    let pending =
        app.pipeline.view().user(&email).and_then(|u| u.invite_sha256.clone().map(|c| (c, u.invitation_expires_at())));
    let Some((pending, expires)) =
        pending.filter(|(p, _)| crate::auth::constant_time_eq(p.as_bytes(), invite_sha256.as_bytes()))
    else {
        return Err(ApiError::unauthorized("this invitation is not valid (any more)"));
    };
    drop(pending);
    if crate::now() > expires {
        return Err(ApiError::unauthorized(
            "this invitation has expired (after 7 days); ask an Admin to invite you again",
        ));
    }
    let password = password.to_string();
    let password_hash = app.sign_in.hash(move || crate::auth::hash_password(&password)).await??;
    let meta = berth_engine::WriteMeta { actor: email.clone(), origin, ..crate::system_meta() };
    let command = Command::SetPassword { email, password_hash, invite_sha256: Some(invite_sha256) };
    let (outcome, seq) = app.pipeline.write_one(meta, command).await?;
    match outcome {
        Ok(Outcome::User(user)) => Ok((user, seq)),
        // An unknown email and a wrong code answer alike, so the route tells nothing about who is invited.
        Ok(_) | Err(berth_model::DomainError::NotFound { .. }) | Err(berth_model::DomainError::Unauthorized(_)) => {
            Err(ApiError::unauthorized("this invitation is not valid (any more)"))
        }
        Err(e) => Err(e.into()),
    }
}
