//! Who is asking: `Authorization: Bearer <token>` with the chat protocol's login token.

use axum::http::{HeaderMap, header};

use super::error::RequestError;
use crate::clock::now_secs;
use crate::token::{Claims, TokenError, TokenKey};

/// The identity a request's bearer token proves, or 401.
pub fn authenticate(headers: &HeaderMap, key: &TokenKey) -> Result<Claims, RequestError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(RequestError::Unauthorized(
            "missing Authorization: Bearer <token>",
        ))?
        .to_str()
        .map_err(|_| RequestError::Unauthorized("malformed Authorization header"))?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(RequestError::Unauthorized(
            "expected Authorization: Bearer <token>",
        ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(RequestError::Unauthorized(
            "expected Authorization: Bearer <token>",
        ));
    }
    key.verify(token.trim(), now_secs()).map_err(|error| {
        RequestError::Unauthorized(match error {
            TokenError::Expired => "token expired",
            TokenError::Malformed
            | TokenError::BadSignature
            | TokenError::UnknownKey(_)
            | TokenError::InvalidId(_) => "invalid token",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let key = TokenKey::new(b"0123456789abcdef");
        let token = key.sign("alice", "phone", now_secs() + 60).unwrap();
        let mut headers = HeaderMap::new();
        assert!(authenticate(&headers, &key).is_err());
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        assert_eq!(authenticate(&headers, &key).unwrap().user, "alice");
        headers.insert(
            header::AUTHORIZATION,
            format!("bearer {token}").parse().unwrap(),
        );
        assert!(authenticate(&headers, &key).is_ok());
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {token}").parse().unwrap(),
        );
        assert!(authenticate(&headers, &key).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer t1.x.y.z.w".parse().unwrap());
        assert!(authenticate(&headers, &key).is_err());
    }
}
