//! The access-token response of `POST /accesstoken/get`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The path of the access-token endpoint.
pub const ACCESS_TOKEN_PATH: &str = "/accesstoken/get";

/// The body of a successful `POST /accesstoken/get`.
///
/// The real service sends the numeric fields as JSON strings (`"expires_in": "86398"`), the spec's example as
/// numbers: reading accepts both, writing produces strings like the real service. `Debug` never prints the token.
///
/// ```
/// use vipps_types::token::AccessTokenResponse;
///
/// let t: AccessTokenResponse = serde_json::from_str(r#"{"token_type":"Bearer","expires_in":"3600",
///   "ext_expires_in":0,"expires_on":"1495271273","not_before":1495184574,
///   "resource":"00000002-0000-0000-c000-000000000000","access_token":"eyJ0eXAi.secret.part"}"#).unwrap();
/// assert_eq!(t.expires_in, 3600);
/// assert!(!format!("{t:?}").contains("secret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenResponse {
    /// Always `Bearer`.
    pub token_type: String,
    /// Lifetime in seconds from issue.
    #[serde(with = "num_or_string")]
    pub expires_in: i64,
    /// Currently disabled; usually 0.
    #[serde(with = "num_or_string", default)]
    pub ext_expires_in: i64,
    /// Expiry as Unix seconds.
    #[serde(with = "num_or_string")]
    pub expires_on: i64,
    /// Not valid before, as Unix seconds.
    #[serde(with = "num_or_string", default)]
    pub not_before: i64,
    /// Can be disregarded.
    #[serde(default)]
    pub resource: String,
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub access_token: String,
}

impl std::fmt::Debug for AccessTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("ext_expires_in", &self.ext_expires_in)
            .field("expires_on", &self.expires_on)
            .field("not_before", &self.not_before)
            .field("resource", &self.resource)
            .field("access_token", &"[redacted]")
            .finish()
    }
}

/// Serde helpers for integers that may arrive as numbers or numeric strings; written as strings.
pub mod num_or_string {
    use super::*;

    /// Writes the integer as a JSON string.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Reads an integer from a number or a numeric string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum V {
            N(i64),
            S(String),
        }
        match V::deserialize(d)? {
            V::N(n) => Ok(n),
            V::S(s) => s
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("not an integer: {s:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_example_round_trips_as_strings() {
        let body = r#"{"token_type":"Bearer","expires_in":"86398","ext_expires_in":"0","expires_on":"1495271273","not_before":"1495184574","resource":"00000002-0000-0000-c000-000000000000","access_token":"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1Ni"}"#;
        let t: AccessTokenResponse = serde_json::from_str(body).unwrap();
        assert_eq!(t.expires_on, 1495271273);
        let back: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
    }

    #[test]
    fn numbers_accepted_and_bad_strings_refused() {
        let t: AccessTokenResponse = serde_json::from_str(
            r#"{"token_type":"Bearer","expires_in":3600,"expires_on":1,"access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!((t.expires_in, t.not_before, t.ext_expires_in), (3600, 0, 0));
        assert!(
            serde_json::from_str::<AccessTokenResponse>(
                r#"{"token_type":"Bearer","expires_in":"soon","expires_on":1,"access_token":"x"}"#
            )
            .is_err()
        );
    }
}
