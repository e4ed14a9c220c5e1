//! Who is calling the control API: the gateway (its bearer token, `GS_CONTROL_TOKEN`,
//! trusted to say who its user is), or a user with a JWT signed by the gateway's
//! shared secret (`GS_JWT_SECRET`, HS256, as the JS server signs them: claims `id` or
//! `userId`, `role`, and `exp`, required) — whose identity then replaces anything the body
//! says.
//! Tokens are compared in constant time and never logged or echoed.

use ring::hmac;
use serde_json::Value;
use streaming::secret::Secret;
use trading::command::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Gateway,
    User { user_id: String, role: Role },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Authentication required")]
    Missing,
    #[error("Invalid token")]
    Invalid,
    #[error("Token expired")]
    Expired,
}

/// Constant-time equality: neither length nor content leaks by timing beyond the
/// length check.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks `authorization` (the header's value) against the gateway's token and, if
/// configured, the JWT secret. `now_s`: seconds since the epoch.
pub fn authenticate(
    authorization: Option<&str>,
    token: Option<&Secret>,
    jwt_secret: Option<&Secret>,
    now_s: i64,
) -> Result<Caller, AuthError> {
    let bearer = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .ok_or(AuthError::Missing)?;
    if token.is_some_and(|t| same(bearer.as_bytes(), t.expose().as_bytes())) {
        return Ok(Caller::Gateway);
    }
    match jwt_secret {
        Some(secret) if bearer.matches('.').count() == 2 => verify_jwt(bearer, secret, now_s),
        _ => Err(AuthError::Invalid),
    }
}

fn verify_jwt(jwt: &str, secret: &Secret, now_s: i64) -> Result<Caller, AuthError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Invalid);
    };
    let header: Value = decode_part(h)?;
    if header["alg"] != "HS256" {
        return Err(AuthError::Invalid);
    }
    let sig = base64url(sig).ok_or(AuthError::Invalid)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
    let signed = &jwt[..h.len() + 1 + p.len()];
    hmac::verify(&key, signed.as_bytes(), &sig).map_err(|_| AuthError::Invalid)?;
    let claims: Value = decode_part(p)?;
    // A token without an expiry would be good for ever once leaked: refused.
    let exp = claims["exp"].as_i64().ok_or(AuthError::Invalid)?;
    if exp <= now_s {
        return Err(AuthError::Expired);
    }
    let user_id = claims["userId"]
        .as_str()
        .or_else(|| claims["id"].as_str())
        .filter(|u| !u.is_empty())
        .ok_or(AuthError::Invalid)?
        .to_owned();
    let role = match claims["role"].as_str() {
        Some(r) if r.eq_ignore_ascii_case("ADMIN") => Role::Admin,
        _ => Role::User,
    };
    Ok(Caller::User { user_id, role })
}

fn decode_part(part: &str) -> Result<Value, AuthError> {
    let bytes = base64url(part).ok_or(AuthError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Invalid)
}

/// Unpadded base64url (RFC 7515 §2).
fn base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Unpadded base64url.
fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A JWT as the JS server's `jsonwebtoken` signs it (HS256): for operators' and
/// tests' tokens.
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64(claims.to_string().as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let sig = hmac::sign(&key, format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", b64(sig.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_token_and_a_valid_jwt_pass_and_nothing_else() {
        let token = Secret::new("gw-token");
        let jwt = Secret::new("shared");
        let auth = |h: &str| authenticate(Some(h), Some(&token), Some(&jwt), 1_000);
        assert_eq!(auth("Bearer gw-token"), Ok(Caller::Gateway));
        let good = sign_hs256(
            "shared",
            &serde_json::json!({"id": "u1", "role": "ADMIN", "exp": 2_000}),
        );
        assert_eq!(
            auth(&format!("Bearer {good}")),
            Ok(Caller::User {
                user_id: "u1".into(),
                role: Role::Admin
            })
        );
        let other = sign_hs256("not-shared", &serde_json::json!({"id": "u1"}));
        assert_eq!(auth(&format!("Bearer {other}")), Err(AuthError::Invalid));
        let old = sign_hs256("shared", &serde_json::json!({"id": "u1", "exp": 999}));
        assert_eq!(auth(&format!("Bearer {old}")), Err(AuthError::Expired));
        // A token that never expires is not taken, nor one whose exp is not a number.
        let forever = sign_hs256("shared", &serde_json::json!({"id": "u1", "role": "ADMIN"}));
        assert_eq!(auth(&format!("Bearer {forever}")), Err(AuthError::Invalid));
        let odd = sign_hs256("shared", &serde_json::json!({"id": "u1", "exp": "2000"}));
        assert_eq!(auth(&format!("Bearer {odd}")), Err(AuthError::Invalid));
        // A payload changed after signing.
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64(br#"{"id":"u2","role":"ADMIN"}"#);
        assert_eq!(
            auth(&format!("Bearer {}", parts.join("."))),
            Err(AuthError::Invalid)
        );
        assert_eq!(auth("Bearer gw-tokex"), Err(AuthError::Invalid));
        assert_eq!(auth("Basic gw-token"), Err(AuthError::Missing));
        assert_eq!(
            authenticate(None, Some(&token), None, 0),
            Err(AuthError::Missing)
        );
        // Without a JWT secret, only the gateway's token.
        assert_eq!(
            authenticate(Some(&format!("Bearer {good}")), Some(&token), None, 1_000),
            Err(AuthError::Invalid)
        );
    }
}
