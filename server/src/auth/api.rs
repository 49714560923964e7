//! HTTP side of auth: the `Caller` extractor (reads `Authorization: Bearer …`
//! once per request: a JWT access token or the service key), the `/v1/auth/*`
//! endpoints, JWKS, and the `/v1/admin/users` endpoints. Wire types live here.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{AdminChange, NewAccount, ProfileChange, SignedIn};
use super::tokens::AccessClaims;
use super::{AuthError, Caller};
use crate::clock::format_time;
use crate::http::error::ApiError;
use crate::http::extract::{decode_value, ApiJson, ApiQuery, ClientIp};
use crate::store::auth::UserRow;

/// A part's HTTP state that can tell who is calling (see `authenticates!`).
pub trait Authenticates {
    fn authenticator(&self) -> &super::Authenticator;
}

/// Implements `Authenticates` for a state struct with an `authenticator` field.
macro_rules! authenticates {
    ($state:ty) => {
        impl $crate::auth::api::Authenticates for $state {
            fn authenticator(&self) -> &$crate::auth::Authenticator {
                &self.authenticator
            }
        }
    };
}
pub(crate) use authenticates;

/// Routers hold their state behind an `Arc`: axum clones the state for every
/// request, and one reference count is cheaper than the many of a service.
impl<S: Authenticates> Authenticates for Arc<S> {
    fn authenticator(&self) -> &crate::auth::Authenticator {
        (**self).authenticator()
    }
}

impl<S: Authenticates + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Ok(Caller::Public);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or(AuthError::MalformedHeader)?;
        Ok(state.authenticator().identify(token).await?)
    }
}

/// What the auth endpoints use.
#[derive(Clone)]
pub struct AuthApi {
    pub accounts: super::accounts::Accounts,
    pub authenticator: super::Authenticator,
}

authenticates!(AuthApi);

pub fn router() -> Router<Arc<AuthApi>> {
    Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/auth/signup", post(sign_up))
        .route("/v1/auth/token", post(token))
        .route("/v1/auth/logout", post(sign_out))
        .route("/v1/auth/user", get(current_user).patch(change_profile))
        .route("/v1/auth/verify", post(verify_email).get(verify_email_link))
        .route("/v1/auth/verify/send", post(request_verification))
        .route("/v1/auth/recover", post(request_recovery))
        .route("/v1/auth/recover/confirm", post(confirm_recovery))
        .route("/v1/admin/users", get(admin_list_users).post(admin_create_user))
        .route("/v1/admin/users/{id}", get(admin_get_user).patch(admin_change_user).delete(admin_delete_user))
        .route("/v1/admin/users/{id}/revoke", post(admin_revoke))
        .route("/v1/admin/keys/rotate", post(admin_rotate_keys))
}

fn user_json(user: &UserRow) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "emailVerified": user.email_verified,
        "anonymous": user.anonymous,
        "displayName": user.display_name,
        "createdAt": format_time(user.created_at),
        "claims": serde_json::from_str::<Value>(&user.claims).unwrap_or_else(|_| json!({})),
    })
}

fn admin_user_json(user: &UserRow) -> Value {
    let mut value = user_json(user);
    value["disabled"] = json!(user.disabled);
    value["updatedAt"] = json!(format_time(user.updated_at));
    value
}

fn signed_in_json(signed_in: SignedIn) -> Json<Value> {
    Json(json!({
        "user": user_json(&signed_in.user),
        "access_token": signed_in.access_token,
        "refresh_token": signed_in.refresh_token.expose_secret(),
        "token_type": "bearer",
        "expires_in": signed_in.expires_in,
    }))
}

fn signed_in_user(caller: &Caller) -> Result<&AccessClaims, AuthError> {
    match caller {
        Caller::User(claims) => Ok(claims),
        Caller::Service | Caller::Public => Err(AuthError::SignInRequired),
    }
}

async fn jwks(State(state): State<Arc<AuthApi>>) -> Json<Value> {
    Json(state.accounts.tokens().jwks())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: SecretString,
}

async fn sign_up(
    State(state): State<Arc<AuthApi>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    let signed_in = state.accounts.sign_up(&body.email, body.password, ip).await?;
    Ok((StatusCode::CREATED, signed_in_json(signed_in)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshGrant {
    #[serde(rename = "grant_type")]
    _grant_type: String,
    refresh_token: SecretString,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordGrant {
    #[serde(rename = "grant_type")]
    _grant_type: String,
    email: String,
    password: SecretString,
}

async fn token(
    State(state): State<Arc<AuthApi>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let grant_type = body.get("grant_type").and_then(Value::as_str).unwrap_or_default().to_owned();
    let signed_in = match grant_type.as_str() {
        "password" => {
            let grant: PasswordGrant = decode_value(body)?;
            state.accounts.sign_in(&grant.email, grant.password, ip).await?
        }
        "refresh_token" => {
            let grant: RefreshGrant = decode_value(body)?;
            state.accounts.refresh(&grant.refresh_token).await?
        }
        "anonymous" => state.accounts.sign_in_anonymously(ip).await?,
        _ => {
            return Err(
                AuthError::invalid("grant_type", "must be \"password\", \"refresh_token\" or \"anonymous\"").into()
            )
        }
    };
    Ok(signed_in_json(signed_in))
}

async fn sign_out(State(state): State<Arc<AuthApi>>, caller: Caller) -> Result<StatusCode, ApiError> {
    state.accounts.sign_out(signed_in_user(&caller)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn current_user(State(state): State<Arc<AuthApi>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let user = state.accounts.user(&signed_in_user(&caller)?.sub).await?;
    Ok(Json(user_json(&user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProfileBody {
    #[serde(default, deserialize_with = "present")]
    display_name: Option<Option<String>>,
    email: Option<String>,
    password: Option<SecretString>,
    current_password: Option<SecretString>,
}

/// Tells `"field": null` (clear it) from an absent field (leave it).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

async fn change_profile(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<ProfileBody>,
) -> Result<Json<Value>, ApiError> {
    let change = ProfileChange {
        display_name: body.display_name,
        email: body.email,
        password: body.password,
        current_password: body.current_password,
    };
    let user = state.accounts.change_profile(signed_in_user(&caller)?, change, ip).await?;
    Ok(Json(user_json(&user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: SecretString,
}

async fn verify_email(
    State(state): State<Arc<AuthApi>>,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<Value>, ApiError> {
    let user = state.accounts.verify_email(body.token.expose_secret()).await?;
    Ok(Json(user_json(&user)))
}

/// The link in the verification email: verifies and answers in plain text.
async fn verify_email_link(
    State(state): State<Arc<AuthApi>>,
    ApiQuery(body): ApiQuery<TokenBody>,
) -> Result<&'static str, ApiError> {
    state.accounts.verify_email(body.token.expose_secret()).await?;
    Ok("Your email address is confirmed. You can close this page.")
}

async fn request_verification(
    State(state): State<Arc<AuthApi>>,
    ClientIp(ip): ClientIp,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    state.accounts.request_verification(signed_in_user(&caller)?, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    email: String,
}

async fn request_recovery(
    State(state): State<Arc<AuthApi>>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RecoverBody>,
) -> Result<StatusCode, ApiError> {
    state.accounts.request_recovery(&body.email, ip).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmRecoveryBody {
    token: SecretString,
    password: SecretString,
}

async fn confirm_recovery(
    State(state): State<Arc<AuthApi>>,
    ApiJson(body): ApiJson<ConfirmRecoveryBody>,
) -> Result<StatusCode, ApiError> {
    state.accounts.confirm_recovery(body.token.expose_secret(), body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListUsersParams {
    limit: Option<i64>,
    page_token: Option<String>,
    search: Option<String>,
}

async fn admin_list_users(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListUsersParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let limit = params.limit.unwrap_or(50);
    let users =
        state.accounts.list_users(params.page_token.as_deref().unwrap_or(""), limit, params.search.as_deref()).await?;
    let next = (users.len() as i64 == limit.clamp(1, 1000)).then(|| users.last().map(|u| u.id.clone())).flatten();
    Ok(Json(json!({"users": users.iter().map(admin_user_json).collect::<Vec<_>>(), "nextPageToken": next})))
}

async fn admin_get_user(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(Json(admin_user_json(&state.accounts.user(&id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdminCreateBody {
    id: Option<String>,
    email: Option<String>,
    password: Option<SecretString>,
    #[serde(default)]
    email_verified: bool,
    display_name: Option<String>,
    claims: Option<Value>,
    #[serde(default)]
    disabled: bool,
}

async fn admin_create_user(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    ApiJson(body): ApiJson<AdminCreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let account = NewAccount {
        id: body.id,
        email: body.email,
        password: body.password,
        password_hash: None,
        email_verified: body.email_verified,
        display_name: body.display_name,
        claims: body.claims,
        disabled: body.disabled,
        created_at: None,
    };
    let user = state.accounts.create_account(account).await?;
    Ok((StatusCode::CREATED, Json(json!({"user": admin_user_json(&user)}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AdminChangeBody {
    claims: Option<Value>,
    disabled: Option<bool>,
    email_verified: Option<bool>,
}

async fn admin_change_user(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminChangeBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let change = AdminChange { claims: body.claims, disabled: body.disabled, email_verified: body.email_verified };
    Ok(Json(admin_user_json(&state.accounts.admin_change(&id, change).await?)))
}

async fn admin_delete_user(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.accounts.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_revoke(
    State(state): State<Arc<AuthApi>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_admin()?;
    state.accounts.revoke_sessions(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_rotate_keys(State(state): State<Arc<AuthApi>>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let kid = state.accounts.tokens().rotate().await?;
    Ok(Json(json!({ "kid": kid })))
}
