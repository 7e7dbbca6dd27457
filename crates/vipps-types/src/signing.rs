//! Webhook request signing and verification, exactly as Vipps MobilePay does it.
//!
//! A webhook delivery is a `POST` to the registered URL with these headers:
//!
//! - `x-ms-date`: the time of sending, RFC 1123 in GMT (`Thu, 30 Mar 2023 08:38:32 GMT`);
//! - `x-ms-content-sha256`: base64 of the SHA-256 of the raw body;
//! - `Host`: the registered URL's host, with the port when it is not the scheme's default;
//! - `Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=<sig>`.
//!
//! The signature is base64 of HMAC-SHA256 over
//! `POST\n{pathAndQuery}\n{x-ms-date};{host};{x-ms-content-sha256}`, keyed with the UTF-8 bytes of the secret as
//! returned at registration (not base64-decoded). Verification hashes the raw bytes, rebuilds the string, and
//! compares the whole `Authorization` value in constant time; it also checks that `x-ms-date` lies within a
//! configurable skew window of the verifier's clock, which the caller passes in (no clock is read here).
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use vipps_types::signing::{sign, verify, Delivery};
//!
//! let url = url::Url::parse("https://shop.example/hooks/vipps?x=1").unwrap();
//! let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let signed = sign("my-secret", &url, br#"{"a":1}"#, now);
//! let delivery = Delivery {
//!     path_and_query: "/hooks/vipps?x=1",
//!     host: &signed.host,
//!     x_ms_date: &signed.x_ms_date,
//!     x_ms_content_sha256: &signed.x_ms_content_sha256,
//!     authorization: &signed.authorization,
//!     body: br#"{"a":1}"#,
//! };
//! assert!(verify("my-secret", &delivery, now, Duration::from_secs(300)).is_ok());
//! assert!(verify("other", &delivery, now, Duration::from_secs(300)).is_err());
//! ```

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use url::{Position, Url};

/// `x-ms-date`.
pub const X_MS_DATE: &str = "x-ms-date";
/// `x-ms-content-sha256`.
pub const X_MS_CONTENT_SHA256: &str = "x-ms-content-sha256";
/// The fixed part of the `Authorization` value before the signature.
pub const AUTHORIZATION_PREFIX: &str =
    "HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=";
/// A sensible default clock-skew window for `x-ms-date` (Vipps documents none).
pub const DEFAULT_SKEW: Duration = Duration::from_secs(300);

/// Base64 of the SHA-256 of `body`: the `x-ms-content-sha256` value.
pub fn content_hash(body: &[u8]) -> String {
    B64.encode(Sha256::digest(body))
}

/// The string that is signed.
pub fn string_to_sign(
    path_and_query: &str,
    x_ms_date: &str,
    host: &str,
    content_hash: &str,
) -> String {
    format!("POST\n{path_and_query}\n{x_ms_date};{host};{content_hash}")
}

/// Base64 of HMAC-SHA256 over `message` keyed with the UTF-8 bytes of `secret`.
pub fn signature(secret: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(message.as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// The `Host` value for a URL: host, plus `:port` when the port is not the scheme's default.
pub fn host_of(url: &Url) -> &str {
    &url[Position::BeforeHost..Position::AfterPort]
}

/// The path and query of a URL, as signed (`/path?query`).
pub fn path_and_query_of(url: &Url) -> &str {
    &url[Position::BeforePath..Position::AfterQuery]
}

/// Formats a time as `x-ms-date` (RFC 1123, GMT).
pub fn format_date(at: SystemTime) -> String {
    httpdate::fmt_http_date(at)
}

/// The headers of a signed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-ms-date`.
    pub x_ms_date: String,
    /// `x-ms-content-sha256`.
    pub x_ms_content_sha256: String,
    /// `Host`.
    pub host: String,
    /// `Authorization`.
    pub authorization: String,
}

/// Signs a delivery of `body` to `url` at time `at` with `secret`.
pub fn sign(secret: &str, url: &Url, body: &[u8], at: SystemTime) -> SignedHeaders {
    sign_with_date(secret, url, body, &format_date(at))
}

/// Signs with an already formatted `x-ms-date` value.
pub fn sign_with_date(secret: &str, url: &Url, body: &[u8], x_ms_date: &str) -> SignedHeaders {
    let hash = content_hash(body);
    let host = host_of(url).to_owned();
    let sig = signature(
        secret,
        &string_to_sign(path_and_query_of(url), x_ms_date, &host, &hash),
    );
    SignedHeaders {
        x_ms_date: x_ms_date.to_owned(),
        x_ms_content_sha256: hash,
        host,
        authorization: format!("{AUTHORIZATION_PREFIX}{sig}"),
    }
}

/// What a receiver saw: the request target, headers and the raw body bytes.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The path and query of the request as received (`/hooks/vipps?x=1`).
    pub path_and_query: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// The `x-ms-date` header.
    pub x_ms_date: &'a str,
    /// The `x-ms-content-sha256` header.
    pub x_ms_content_sha256: &'a str,
    /// The `Authorization` header.
    pub authorization: &'a str,
    /// The raw body, exactly as received.
    pub body: &'a [u8],
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The body's hash does not match `x-ms-content-sha256`.
    #[error("x-ms-content-sha256 does not match the body")]
    ContentHashMismatch,
    /// `x-ms-date` is not an RFC 1123 date.
    #[error("x-ms-date is not a valid RFC 1123 date")]
    BadDate,
    /// `x-ms-date` is too far from the verifier's clock.
    #[error("x-ms-date is outside the allowed clock skew of {skew_secs} s")]
    DateOutsideWindow {
        /// The allowed skew in seconds.
        skew_secs: u64,
    },
    /// The `Authorization` value does not match the expected signature.
    #[error("signature does not match")]
    BadSignature,
}

/// Verifies a delivery: content hash, date window, then the whole `Authorization` value in constant time.
pub fn verify(
    secret: &str,
    d: &Delivery<'_>,
    now: SystemTime,
    skew: Duration,
) -> Result<(), VerifyError> {
    let hash = content_hash(d.body);
    if !bool::from(hash.as_bytes().ct_eq(d.x_ms_content_sha256.as_bytes())) {
        return Err(VerifyError::ContentHashMismatch);
    }
    let sent = httpdate::parse_http_date(d.x_ms_date).map_err(|_| VerifyError::BadDate)?;
    let off = match now.duration_since(sent) {
        Ok(ahead) => ahead,
        Err(e) => e.duration(),
    };
    if off > skew {
        return Err(VerifyError::DateOutsideWindow {
            skew_secs: skew.as_secs(),
        });
    }
    let expected = format!(
        "{AUTHORIZATION_PREFIX}{}",
        signature(
            secret,
            &string_to_sign(d.path_and_query, d.x_ms_date, d.host, &hash)
        )
    );
    if bool::from(expected.as_bytes().ct_eq(d.authorization.as_bytes())) {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vendor's published test vector (Webhooks API, request authentication).
    const SECRET: &str =
        "A0+AeKBRG2KRGvnNwJpQlb6IJFk48CKXCIcrLoHncVJKDILsQSxS6NWCccwWm6r6FhGKhiHTBsG2wo/xU6FY/A==";
    const URL: &str = "https://webhook.site/e2cee29b-012e-4f1d-8ef4-e95fd74a7a63";
    const BODY: &str =
        r#"{"some-unique-content":"ee6e441b-cc4a-46f8-895d-a5af79bcc233/hello-world"}"#;
    const DATE: &str = "Thu, 30 Mar 2023 08:38:32 GMT";
    const HASH: &str = "lNlsp1XA03N34HrQsVzPgJKtC+r7l/RBF4V3JQUWMj4=";
    const SIG: &str = "agAiSyogQbDHpeucoNwYz+yAr5nJ+v+zasdkSbqzv+U=";

    fn at_date() -> SystemTime {
        httpdate::parse_http_date(DATE).unwrap()
    }

    #[test]
    fn vendor_test_vector() {
        let url = Url::parse(URL).unwrap();
        assert_eq!(content_hash(BODY.as_bytes()), HASH);
        let s = sign(SECRET, &url, BODY.as_bytes(), at_date());
        assert_eq!(s.x_ms_date, DATE);
        assert_eq!(s.x_ms_content_sha256, HASH);
        assert_eq!(s.host, "webhook.site");
        assert_eq!(s.authorization, format!("{AUTHORIZATION_PREFIX}{SIG}"));
        let d = Delivery {
            path_and_query: path_and_query_of(&url),
            host: &s.host,
            x_ms_date: DATE,
            x_ms_content_sha256: HASH,
            authorization: &s.authorization,
            body: BODY.as_bytes(),
        };
        assert_eq!(verify(SECRET, &d, at_date(), DEFAULT_SKEW), Ok(()));
    }

    #[test]
    fn rejections() {
        let url = Url::parse(URL).unwrap();
        let s = sign(SECRET, &url, BODY.as_bytes(), at_date());
        let good = Delivery {
            path_and_query: path_and_query_of(&url),
            host: &s.host,
            x_ms_date: &s.x_ms_date,
            x_ms_content_sha256: &s.x_ms_content_sha256,
            authorization: &s.authorization,
            body: BODY.as_bytes(),
        };
        let now = at_date();
        let skew = Duration::from_secs(60);
        assert_eq!(
            verify(
                SECRET,
                &Delivery {
                    body: b"{}",
                    ..good
                },
                now,
                skew
            ),
            Err(VerifyError::ContentHashMismatch)
        );
        assert_eq!(
            verify(
                SECRET,
                &Delivery {
                    host: "evil.example",
                    ..good
                },
                now,
                skew
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                SECRET,
                &Delivery {
                    path_and_query: "/x",
                    ..good
                },
                now,
                skew
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                SECRET,
                &Delivery {
                    x_ms_date: "yesterday",
                    ..good
                },
                now,
                skew
            ),
            Err(VerifyError::BadDate)
        );
        // Base64-decoding the secret is the classic mistake; it must not verify.
        assert_eq!(
            verify("wrong", &good, now, skew),
            Err(VerifyError::BadSignature)
        );
        // Skew window, both sides of the limit and both directions.
        assert!(verify(SECRET, &good, now + Duration::from_secs(60), skew).is_ok());
        assert!(verify(SECRET, &good, now + Duration::from_secs(61), skew).is_err());
        assert!(verify(SECRET, &good, now - Duration::from_secs(60), skew).is_ok());
        assert_eq!(
            verify(SECRET, &good, now - Duration::from_secs(61), skew),
            Err(VerifyError::DateOutsideWindow { skew_secs: 60 })
        );
    }

    #[test]
    fn host_keeps_non_default_port_and_query() {
        let url = Url::parse("http://127.0.0.1:9000/cb?a=1&b=2").unwrap();
        assert_eq!(host_of(&url), "127.0.0.1:9000");
        assert_eq!(path_and_query_of(&url), "/cb?a=1&b=2");
        let url = Url::parse("https://example.com:443/").unwrap();
        assert_eq!(host_of(&url), "example.com");
        let url = Url::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(host_of(&url), "[::1]:8080");
    }
}
