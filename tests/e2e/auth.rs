//! Auth over HTTP on both backends: sign-up and sign-in, tokens checked by an
//! independent verifier against JWKS, rejected tokens, refresh rotation and
//! reuse detection, sign-out, disabled users, custom claims, anonymous
//! upgrade, email verification, password reset, brute-force limits, admin.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use crate::harness::{Backend, Options, Server};
use crate::on_both_backends;

on_both_backends!(
    sign_up_and_sign_in,
    access_tokens_expire_by_the_servers_clock,
    token_verifies_against_jwks_independently,
    forged_and_foreign_tokens_are_rejected,
    hs256_tokens_check_audience_and_expiry,
    refresh_rotates_and_reuse_revokes_the_family,
    sign_out_ends_the_session,
    disabled_users_cannot_sign_in_or_refresh,
    custom_claims_reach_the_next_token,
    anonymous_user_upgrades_in_place,
    email_verification_is_single_use,
    password_reset_is_single_use_and_expires,
    sign_in_is_rate_limited_per_ip_and_per_account,
    admin_lists_searches_and_deletes_users,
    smtp_mailer_delivers_links,
);

async fn sign_up(server: &Server, email: &str, password: &str) -> Value {
    let (status, body) =
        server.call("POST", "/v1/auth/signup", None, Some(json!({"email": email, "password": password}))).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn access_tokens_expire_by_the_servers_clock(backend: Backend) {
    let server = Server::start_with(backend, Options::default().movable_clock()).await;
    let session = sign_up(&server, "e@example.com", "correct horse").await;
    let token = session["access_token"].as_str().expect("token").to_owned();
    assert_eq!(server.call("GET", "/v1/auth/user", Some(&token), None).await.0, 200);
    // Fifteen minutes by default, and five seconds of leeway for other instances' clocks.
    server.advance_clock(std::time::Duration::from_secs(15 * 60)).await;
    assert_eq!(server.call("GET", "/v1/auth/user", Some(&token), None).await.0, 200, "within the leeway");
    server.advance_clock(std::time::Duration::from_secs(10)).await;
    let (status, body) = server.call("GET", "/v1/auth/user", Some(&token), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthenticated")), "{body}");
    let (status, renewed) = refresh(&server, &session["refresh_token"]).await;
    assert_eq!(status, 200, "the refresh token lives on: {renewed}");
    let fresh = renewed["access_token"].as_str().expect("token");
    assert_eq!(server.call("GET", "/v1/auth/user", Some(fresh), None).await.0, 200);
    // Moving the clock needs the service key.
    let (status, _) = server.call("POST", "/v1/admin/clock", Some(fresh), Some(json!({"advanceMs": 1}))).await;
    assert_eq!(status, 403);
    // Without the setting there is no such route.
    let plain = Server::start(backend).await;
    let (status, _) = plain.admin("POST", "/v1/admin/clock", Some(json!({"advanceMs": 1}))).await;
    assert_eq!(status, 404);
}

async fn password_grant(server: &Server, email: &str, password: &str) -> (u16, Value) {
    let body = json!({"grant_type": "password", "email": email, "password": password});
    server.call("POST", "/v1/auth/token", None, Some(body)).await
}

async fn refresh(server: &Server, token: &Value) -> (u16, Value) {
    let body = json!({"grant_type": "refresh_token", "refresh_token": token});
    server.call("POST", "/v1/auth/token", None, Some(body)).await
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

async fn sign_up_and_sign_in(backend: Backend) {
    let server = Server::start(backend).await;
    let body = sign_up(&server, "Ann@Example.com", "correct horse").await;
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 900);
    let user = &body["user"];
    assert_eq!(
        (user["email"].as_str(), user["emailVerified"].as_bool(), user["anonymous"].as_bool()),
        (Some("ann@example.com"), Some(false), Some(false))
    );
    assert_eq!(user["claims"], json!({}));
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let token = body["access_token"].as_str().unwrap();
    let (status, me) = server.call("GET", "/v1/auth/user", Some(token), None).await;
    assert_eq!((status, me["id"].clone()), (200, user["id"].clone()));
    let (status, signed_in) = password_grant(&server, "ann@example.com", "correct horse").await;
    assert_eq!((status, signed_in["user"]["id"].clone()), (200, user["id"].clone()));
    let (status, duplicate) = server
        .call("POST", "/v1/auth/signup", None, Some(json!({"email": "ann@example.com", "password": "another one"})))
        .await;
    assert_eq!((status, duplicate["error"]["code"].as_str()), (409, Some("already-exists")));

    let wrong_password = password_grant(&server, "ann@example.com", "wrong horse").await;
    let unknown_email = password_grant(&server, "nobody@example.com", "wrong horse").await;
    assert_eq!(wrong_password.0, 401);
    assert_eq!(wrong_password, unknown_email, "unknown email and wrong password answer alike");

    for (body, field) in [
        (json!({"email": "not-an-email", "password": "long enough"}), "email"),
        (json!({"email": "b@example.com", "password": "short"}), "password"),
        (json!({"email": "b@example.com", "password": "x".repeat(300)}), "password"),
        (json!({"email": "b@example.com"}), "password"),
    ] {
        let (status, response) = server.call("POST", "/v1/auth/signup", None, Some(body)).await;
        assert_eq!(status, 400);
        assert!(response["error"]["message"].as_str().unwrap().contains(field), "{response}");
    }
    let (status, response) = server.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "magic"}))).await;
    assert_eq!(status, 400);
    assert!(response["error"]["message"].as_str().unwrap().contains("grant_type"));
}

async fn token_verifies_against_jwks_independently(backend: Backend) {
    use ed25519_dalek::Verifier;
    let server = Server::start(backend).await;
    let body = sign_up(&server, "jw@example.com", "correct horse").await;
    let token = body["access_token"].as_str().unwrap();
    let (status, jwks) = server.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(status, 200);
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let key =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]).expect("kid published in JWKS");
    assert_eq!((key["kty"].as_str(), key["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    let x: [u8; 32] = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap().try_into().unwrap();
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let signature = ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    verifying.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature).expect("signature verifies");
    let claims = claims_of(token);
    assert_eq!(claims["sub"], body["user"]["id"]);
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str(), claims["role"].as_str()),
        (Some("nimbus"), Some("nimbus"), Some("user"))
    );
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);
    assert!(claims["sid"].is_string());

    let (status, rotated) = server.admin("POST", "/v1/admin/keys/rotate", None).await;
    assert_eq!(status, 200);
    let (_, jwks) = server.call("GET", "/.well-known/jwks.json", None, None).await;
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&header["kid"].as_str().unwrap()) && kids.contains(&rotated["kid"].as_str().unwrap()));
    assert_eq!(
        server.call("GET", "/v1/auth/user", Some(token), None).await.0,
        200,
        "old tokens stay valid after rotation"
    );
    let (_, fresh) = password_grant(&server, "jw@example.com", "correct horse").await;
    let fresh_header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD.decode(fresh["access_token"].as_str().unwrap().split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(fresh_header["kid"], rotated["kid"], "new tokens use the new key");
}

async fn forged_and_foreign_tokens_are_rejected(backend: Backend) {
    let server = Server::start(backend).await;
    let body = sign_up(&server, "f@example.com", "correct horse").await;
    let token = body["access_token"].as_str().unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = claims_of(token);
    claims["role"] = json!("admin");
    let forged_payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let none_header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let unknown_kid = URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "kid": "nope"}).to_string());
    for bad in [
        format!("{}.{}.{}", parts[0], forged_payload, parts[2]),
        format!("{none_header}.{}.", parts[1]),
        format!("{unknown_kid}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], &parts[2][..parts[2].len() - 4]),
        "a.b.c".to_owned(),
    ] {
        let (status, response) = server.call("GET", "/v1/auth/user", Some(&bad), None).await;
        assert_eq!((status, response["error"]["code"].as_str()), (401, Some("unauthenticated")), "{bad}");
    }
    let response =
        server.client.get(server.url("/v1/auth/user")).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(response.status(), 401);
}

async fn hs256_tokens_check_audience_and_expiry(backend: Backend) {
    let secret = "a-test-secret-that-is-long-enough-for-hs256";
    let server = Server::start_with(backend, Options::default().env("NIMBUS_JWT_SECRET", secret)).await;
    let body = sign_up(&server, "hs@example.com", "correct horse").await;
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(server.call("GET", "/v1/auth/user", Some(token), None).await.0, 200);
    let (_, jwks) = server.call("GET", "/.well-known/jwks.json", None, None).await;
    assert_eq!(jwks, json!({"keys": []}), "HS256 secrets are never published");
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs256".into());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = claims_of(token);
    let sign = |changes: Value| {
        let mut c = claims.clone();
        for (k, v) in changes.as_object().unwrap() {
            c[k] = v.clone();
        }
        jsonwebtoken::encode(&header, &c, &key).unwrap()
    };
    assert_eq!(
        server.call("GET", "/v1/auth/user", Some(&sign(json!({}))), None).await.0,
        200,
        "a well-formed token works"
    );
    for changes in [json!({"aud": "someone-else"}), json!({"iss": "evil"}), json!({"exp": now - 60, "iat": now - 1000})]
    {
        let (status, _) = server.call("GET", "/v1/auth/user", Some(&sign(changes.clone())), None).await;
        assert_eq!(status, 401, "{changes}");
    }
    let wrong_key = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-xx"),
    )
    .unwrap();
    assert_eq!(server.call("GET", "/v1/auth/user", Some(&wrong_key), None).await.0, 401);
}

async fn refresh_rotates_and_reuse_revokes_the_family(backend: Backend) {
    let server = Server::start(backend).await;
    let first = sign_up(&server, "r@example.com", "correct horse").await;
    let (status, second) = refresh(&server, &first["refresh_token"]).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(
        claims_of(second["access_token"].as_str().unwrap())["sid"],
        claims_of(first["access_token"].as_str().unwrap())["sid"]
    );
    let (status, third) = refresh(&server, &second["refresh_token"]).await;
    assert_eq!(status, 200);
    let (status, reused) = refresh(&server, &first["refresh_token"]).await;
    assert_eq!((status, reused["error"]["code"].as_str()), (401, Some("unauthenticated")));
    let (status, _) = refresh(&server, &third["refresh_token"]).await;
    assert_eq!(status, 401, "reuse revoked the whole session family");
    let (status, other) = password_grant(&server, "r@example.com", "correct horse").await;
    assert_eq!(status, 200);
    assert_eq!(refresh(&server, &other["refresh_token"]).await.0, 200, "other sessions are untouched");
    assert_eq!(refresh(&server, &json!("rt_unknown")).await.0, 401);
}

async fn sign_out_ends_the_session(backend: Backend) {
    let server = Server::start(backend).await;
    let session = sign_up(&server, "o@example.com", "correct horse").await;
    let (status, _) =
        server.call("POST", "/v1/auth/logout", Some(session["access_token"].as_str().unwrap()), None).await;
    assert_eq!(status, 204);
    assert_eq!(refresh(&server, &session["refresh_token"]).await.0, 401);
    assert_eq!(server.call("POST", "/v1/auth/logout", None, None).await.0, 401);
}

async fn disabled_users_cannot_sign_in_or_refresh(backend: Backend) {
    let server = Server::start(backend).await;
    let session = sign_up(&server, "d@example.com", "correct horse").await;
    let id = session["user"]["id"].as_str().unwrap();
    let (status, user) = server.admin("PATCH", &format!("/v1/admin/users/{id}"), Some(json!({"disabled": true}))).await;
    assert_eq!((status, user["disabled"].as_bool()), (200, Some(true)));
    let (status, body) = password_grant(&server, "d@example.com", "correct horse").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("permission-denied")));
    assert_eq!(refresh(&server, &session["refresh_token"]).await.0, 401);
    server.admin("PATCH", &format!("/v1/admin/users/{id}"), Some(json!({"disabled": false}))).await;
    assert_eq!(password_grant(&server, "d@example.com", "correct horse").await.0, 200);
}

async fn custom_claims_reach_the_next_token(backend: Backend) {
    let server = Server::start(backend).await;
    let session = sign_up(&server, "c@example.com", "correct horse").await;
    let id = session["user"]["id"].as_str().unwrap();
    let path = format!("/v1/admin/users/{id}");
    let (status, _) = server.admin("PATCH", &path, Some(json!({"claims": {"admin": true, "plan": "pro"}}))).await;
    assert_eq!(status, 200);
    let (status, body) = server.admin("PATCH", &path, Some(json!({"claims": {"sub": "x"}}))).await;
    assert_eq!(status, 400, "{body}");
    let old_token = session["access_token"].as_str().unwrap();
    assert_eq!(server.call("GET", "/v1/admin/users", Some(old_token), None).await.0, 403);
    let (_, renewed) = refresh(&server, &session["refresh_token"]).await;
    let token = renewed["access_token"].as_str().unwrap();
    let claims = claims_of(token);
    assert_eq!(
        (claims["admin"].as_bool(), claims["plan"].as_str(), claims["role"].as_str()),
        (Some(true), Some("pro"), Some("admin"))
    );
    assert_eq!(renewed["user"]["claims"], json!({"admin": true, "plan": "pro"}));
    assert_eq!(
        server.call("GET", "/v1/admin/users", Some(token), None).await.0,
        200,
        "the admin claim grants admin access"
    );
}

async fn anonymous_user_upgrades_in_place(backend: Backend) {
    let server = Server::start(backend).await;
    let (status, anon) = server.call("POST", "/v1/auth/token", None, Some(json!({"grant_type": "anonymous"}))).await;
    assert_eq!(status, 200, "{anon}");
    assert_eq!((anon["user"]["anonymous"].as_bool(), anon["user"]["email"].clone()), (Some(true), Value::Null));
    let token = anon["access_token"].as_str().unwrap();
    assert_eq!(claims_of(token)["role"], "anonymous");
    let (status, body) =
        server.call("PATCH", "/v1/auth/user", Some(token), Some(json!({"email": "up@example.com"}))).await;
    assert_eq!(status, 400, "{body}");
    let (status, user) = server
        .call(
            "PATCH",
            "/v1/auth/user",
            Some(token),
            Some(json!({"email": "up@example.com", "password": "correct horse", "displayName": "Up"})),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        (user["id"].clone(), user["anonymous"].as_bool(), user["displayName"].as_str()),
        (anon["user"]["id"].clone(), Some(false), Some("Up"))
    );
    let (status, signed_in) = password_grant(&server, "up@example.com", "correct horse").await;
    assert_eq!((status, signed_in["user"]["id"].clone()), (200, anon["user"]["id"].clone()));
    let token = signed_in["access_token"].as_str().unwrap();
    let change = json!({"password": "a new password"});
    assert_eq!(
        server.call("PATCH", "/v1/auth/user", Some(token), Some(change)).await.0,
        400,
        "current password required"
    );
    let change = json!({"password": "a new password", "currentPassword": "wrong"});
    assert_eq!(server.call("PATCH", "/v1/auth/user", Some(token), Some(change)).await.0, 403);
    let change = json!({"password": "a new password", "currentPassword": "correct horse"});
    assert_eq!(server.call("PATCH", "/v1/auth/user", Some(token), Some(change)).await.0, 200);
    assert_eq!(password_grant(&server, "up@example.com", "a new password").await.0, 200);
}

fn token_in(mail: &str) -> String {
    let start = mail.find("token=").expect("a token link") + "token=".len();
    mail[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-').collect()
}

async fn email_verification_is_single_use(backend: Backend) {
    let server = Server::start(backend).await;
    let session = sign_up(&server, "v@example.com", "correct horse").await;
    let mail = server.last_mail("v@example.com");
    assert!(mail.contains("Subject: Confirm your email address"));
    let token = token_in(&mail);
    let (status, user) = server.call("POST", "/v1/auth/verify", None, Some(json!({ "token": token }))).await;
    assert_eq!((status, user["emailVerified"].as_bool()), (200, Some(true)));
    let (status, body) = server.call("POST", "/v1/auth/verify", None, Some(json!({ "token": token }))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid-argument")));
    let (_, renewed) = refresh(&server, &session["refresh_token"]).await;
    assert_eq!(claims_of(renewed["access_token"].as_str().unwrap())["email_verified"], true);
    let token = session["access_token"].as_str().unwrap();
    assert_eq!(server.call("POST", "/v1/auth/verify/send", Some(token), None).await.0, 204);
    let link_token = token_in(&server.last_mail("v@example.com"));
    let response = server.client.get(server.url(&format!("/v1/auth/verify?token={link_token}"))).send().await.unwrap();
    assert_eq!(response.status(), 200, "the emailed link works with a plain GET");
}

async fn password_reset_is_single_use_and_expires(backend: Backend) {
    let server = Server::start_with(backend, Options::default().movable_clock()).await;
    let session = sign_up(&server, "p@example.com", "correct horse").await;
    assert_eq!(
        server.call("POST", "/v1/auth/recover", None, Some(json!({"email": "nobody@example.com"}))).await.0,
        204
    );
    assert_eq!(server.call("POST", "/v1/auth/recover", None, Some(json!({"email": "p@example.com"}))).await.0, 204);
    let token = token_in(&server.last_mail("p@example.com"));
    let confirm = json!({"token": token, "password": "brand new pass"});
    assert_eq!(server.call("POST", "/v1/auth/recover/confirm", None, Some(confirm.clone())).await.0, 204);
    assert_eq!(server.call("POST", "/v1/auth/recover/confirm", None, Some(confirm)).await.0, 400, "single use");
    assert_eq!(password_grant(&server, "p@example.com", "correct horse").await.0, 401);
    assert_eq!(password_grant(&server, "p@example.com", "brand new pass").await.0, 200);
    assert_eq!(refresh(&server, &session["refresh_token"]).await.0, 401, "a reset ends existing sessions");
    server.call("POST", "/v1/auth/recover", None, Some(json!({"email": "p@example.com"}))).await;
    let token = token_in(&server.last_mail("p@example.com"));
    // Recovery links live an hour by default.
    server.advance_clock(std::time::Duration::from_secs(3601)).await;
    let confirm = json!({"token": token, "password": "too late pass"});
    assert_eq!(server.call("POST", "/v1/auth/recover/confirm", None, Some(confirm)).await.0, 400, "expired");
}

async fn sign_in_is_rate_limited_per_ip_and_per_account(backend: Backend) {
    let server = Server::start_with(backend, Options::default().env("NIMBUS_AUTH_SIGNIN_PER_MINUTE", "3")).await;
    sign_up(&server, "b@example.com", "correct horse").await;
    for _ in 0..3 {
        assert_eq!(password_grant(&server, "b@example.com", "wrong").await.0, 401);
    }
    let response = server
        .client
        .post(server.url("/v1/auth/token"))
        .json(&json!({"grant_type": "password", "email": "b@example.com", "password": "correct horse"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let (_, body) = crate::harness::read(response).await;
    assert_eq!(body["error"]["code"], "resource-exhausted");

    let server = Server::start_with(backend, Options::default().env("NIMBUS_AUTH_MAX_FAILED_SIGNINS", "2")).await;
    sign_up(&server, "lock@example.com", "correct horse").await;
    for _ in 0..2 {
        assert_eq!(password_grant(&server, "lock@example.com", "wrong").await.0, 401);
    }
    let (status, _) = password_grant(&server, "lock@example.com", "correct horse").await;
    assert_eq!(status, 429, "the account is locked after repeated failures, even for the right password");
}

async fn admin_lists_searches_and_deletes_users(backend: Backend) {
    let server = Server::start(backend).await;
    for name in ["amy", "bob", "cat"] {
        sign_up(&server, &format!("{name}@example.com"), "correct horse").await;
    }
    let (status, page) = server.admin("GET", "/v1/admin/users?limit=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["users"].as_array().unwrap().len(), 2);
    let next = page["nextPageToken"].as_str().unwrap();
    let (_, rest) = server.admin("GET", &format!("/v1/admin/users?limit=2&pageToken={next}"), None).await;
    assert_eq!(rest["users"].as_array().unwrap().len(), 1);
    let (_, found) = server.admin("GET", "/v1/admin/users?search=bob", None).await;
    let users = found["users"].as_array().unwrap();
    assert_eq!((users.len(), users[0]["email"].as_str()), (1, Some("bob@example.com")));
    let id = users[0]["id"].as_str().unwrap();
    assert_eq!(server.admin("POST", &format!("/v1/admin/users/{id}/revoke"), None).await.0, 204);
    assert_eq!(server.admin("DELETE", &format!("/v1/admin/users/{id}"), None).await.0, 204);
    assert_eq!(server.admin("GET", &format!("/v1/admin/users/{id}"), None).await.0, 404);
    assert_eq!(password_grant(&server, "bob@example.com", "correct horse").await.0, 401);
    assert_eq!(server.call("GET", "/v1/admin/users", None, None).await.0, 403);
}

/// A minimal SMTP server that hands every received message to the channel.
async fn fake_smtp() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let sender = sender.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 fake ESMTP\r\n").await.unwrap();
                let mut message: Option<String> = None;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(body) = message.as_mut() {
                        if line == "." {
                            let _ = sender.send(std::mem::take(body));
                            message = None;
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            body.push_str(&line);
                            body.push('\n');
                        }
                        continue;
                    }
                    let reply: &[u8] = match line.get(..4).unwrap_or("").to_uppercase().as_str() {
                        "EHLO" | "HELO" => b"250 fake\r\n",
                        "DATA" => {
                            message = Some(String::new());
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => b"221 bye\r\n",
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, receiver)
}

async fn smtp_mailer_delivers_links(backend: Backend) {
    let (port, mut received) = fake_smtp().await;
    let options = Options::default()
        .env("NIMBUS_SMTP_URL", &format!("smtp://127.0.0.1:{port}"))
        .env("NIMBUS_MAIL_FROM", "App <app@example.com>");
    let server = Server::start_with(backend, options).await;
    sign_up(&server, "smtp@example.com", "correct horse").await;
    let mail = tokio::time::timeout(std::time::Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert!(mail.contains("To: smtp@example.com") && mail.contains("From: App <app@example.com>"), "{mail}");
    let token = token_in(&mail.replace("=\n", "").replace("=3D", "="));
    let (status, user) = server.call("POST", "/v1/auth/verify", None, Some(json!({ "token": token }))).await;
    assert_eq!((status, user["emailVerified"].as_bool()), (200, Some(true)), "{mail}");
}
