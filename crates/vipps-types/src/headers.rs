//! Header names and validated header values.
//!
//! Every value type here can only be constructed valid. Rules:
//!
//! | value | rule |
//! | --- | --- |
//! | `Vipps-System-Name`, `-Version`, `-Plugin-Name`, `-Plugin-Version` | 1 to 30 characters of printable ASCII (`0x20..=0x7E`), no leading or trailing space |
//! | `Merchant-Serial-Number` | 4 to 7 ASCII digits (the spec says 4 to 6, the official SDK 4 to 7; we accept 4 to 7) |
//! | `Idempotency-Key` | 1 to 50 characters of visible ASCII (`0x21..=0x7E`), no comma |
//! | `Idempotency-Key` (Recurring) | 1 to 40 of those characters, none of `#`, `?`, `/`, `\` |
//!
//! **Empty system values.** The official SDKs send `Vipps-System-*` headers as empty strings when they are not
//! configured. An empty string is not a valid value ([`ValueError::Empty`]), but
//! [`SystemValue::new_optional`] maps an empty (or all-space) input to `None`, meaning "not set": clients omit
//! the header, and the emulator treats an empty header as absent.
//!
//! The vendor's own examples contain spaces (`Acme Commerce`), so inner spaces are allowed.

use std::fmt;

/// The impls every validated string value shares: `Debug` as `Name(value)`, `Display` as the value, and
/// `FromStr` and serde through the type's `new`, so a parsed or deserialized value is as valid as a constructed one.
macro_rules! validated_string {
    ($name:ident) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ValueError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `Authorization`.
pub const AUTHORIZATION: &str = "Authorization";
/// `Ocp-Apim-Subscription-Key`: the Azure API Management subscription key.
pub const SUBSCRIPTION_KEY: &str = "Ocp-Apim-Subscription-Key";
/// `Merchant-Serial-Number`.
pub const MERCHANT_SERIAL_NUMBER: &str = "Merchant-Serial-Number";
/// `Vipps-System-Name`.
pub const SYSTEM_NAME: &str = "Vipps-System-Name";
/// `Vipps-System-Version`.
pub const SYSTEM_VERSION: &str = "Vipps-System-Version";
/// `Vipps-System-Plugin-Name`.
pub const SYSTEM_PLUGIN_NAME: &str = "Vipps-System-Plugin-Name";
/// `Vipps-System-Plugin-Version`.
pub const SYSTEM_PLUGIN_VERSION: &str = "Vipps-System-Plugin-Version";
/// `Idempotency-Key`.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// `client_id` (access-token request).
pub const CLIENT_ID: &str = "client_id";
/// `client_secret` (access-token request).
pub const CLIENT_SECRET: &str = "client_secret";
/// `Idempotent-Replayed: true` marks a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";
/// `Retry-After`.
pub const RETRY_AFTER: &str = "Retry-After";
/// The media type of error bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Maximum length of each `Vipps-System-*` value.
pub const SYSTEM_VALUE_MAX_LEN: usize = 30;
/// Minimum number of digits of a merchant serial number.
pub const MSN_MIN_LEN: usize = 4;
/// Maximum number of digits of a merchant serial number we accept (the spec's maximum is 6).
pub const MSN_MAX_LEN: usize = 7;
/// The spec's maximum number of digits of a merchant serial number.
pub const MSN_SPEC_MAX_LEN: usize = 6;
/// Maximum length of an `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 50;

/// Why a value was rejected. Each variant names the field and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is empty.
    #[error("{field} must not be empty")]
    Empty {
        /// The header or field name.
        field: &'static str,
    },
    /// The value is shorter than allowed.
    #[error("{field} must be at least {min} characters long, got {len}")]
    TooShort {
        /// The header or field name.
        field: &'static str,
        /// The minimum length.
        min: usize,
        /// The actual length.
        len: usize,
    },
    /// The value is longer than allowed.
    #[error("{field} must be at most {max} characters long, got {len}")]
    TooLong {
        /// The header or field name.
        field: &'static str,
        /// The maximum length.
        max: usize,
        /// The actual length.
        len: usize,
    },
    /// A character is not allowed.
    #[error("{field} has a character that is not allowed at position {index}: {rule}")]
    InvalidChar {
        /// The header or field name.
        field: &'static str,
        /// Zero-based character position.
        index: usize,
        /// The rule, in words.
        rule: &'static str,
    },
}

impl ValueError {
    /// The header or field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ValueError::Empty { field }
            | ValueError::TooShort { field, .. }
            | ValueError::TooLong { field, .. }
            | ValueError::InvalidChar { field, .. } => field,
        }
    }
}

pub(crate) fn check_len(
    field: &'static str,
    s: &str,
    min: usize,
    max: usize,
) -> Result<(), ValueError> {
    let len = s.chars().count();
    if len == 0 {
        return Err(ValueError::Empty { field });
    }
    if len < min {
        return Err(ValueError::TooShort { field, min, len });
    }
    if len > max {
        return Err(ValueError::TooLong { field, max, len });
    }
    Ok(())
}

pub(crate) fn check_chars(
    field: &'static str,
    s: &str,
    ok: impl Fn(char) -> bool,
    rule: &'static str,
) -> Result<(), ValueError> {
    match s.chars().position(|c| !ok(c)) {
        Some(index) => Err(ValueError::InvalidChar { field, index, rule }),
        None => Ok(()),
    }
}

/// Which of the four `Vipps-System-*` headers a [`SystemValue`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemHeader {
    /// `Vipps-System-Name`.
    Name,
    /// `Vipps-System-Version`.
    Version,
    /// `Vipps-System-Plugin-Name`.
    PluginName,
    /// `Vipps-System-Plugin-Version`.
    PluginVersion,
}

impl SystemHeader {
    /// All four, in the order the vendor lists them.
    pub const ALL: [SystemHeader; 4] = [
        SystemHeader::Name,
        SystemHeader::Version,
        SystemHeader::PluginName,
        SystemHeader::PluginVersion,
    ];

    /// The header name.
    pub fn header_name(self) -> &'static str {
        match self {
            SystemHeader::Name => SYSTEM_NAME,
            SystemHeader::Version => SYSTEM_VERSION,
            SystemHeader::PluginName => SYSTEM_PLUGIN_NAME,
            SystemHeader::PluginVersion => SYSTEM_PLUGIN_VERSION,
        }
    }
}

/// A valid `Vipps-System-*` header value: 1 to 30 printable ASCII characters without leading or trailing space.
///
/// ```
/// use vipps_types::headers::{SystemHeader, SystemValue, ValueError};
///
/// assert!(SystemValue::new(SystemHeader::Name, "Acme Commerce").is_ok());
/// assert!(SystemValue::new(SystemHeader::Name, &"a".repeat(30)).is_ok());
/// let err = SystemValue::new(SystemHeader::Name, &"a".repeat(31)).unwrap_err();
/// assert_eq!(err, ValueError::TooLong { field: "Vipps-System-Name", max: 30, len: 31 });
/// assert_eq!(SystemValue::new_optional(SystemHeader::Version, "").unwrap(), None);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SystemValue {
    header: SystemHeader,
    value: String,
}

impl SystemValue {
    /// Validates `value` for `header`.
    pub fn new(header: SystemHeader, value: &str) -> Result<Self, ValueError> {
        if value.is_empty() {
            return Err(ValueError::Empty {
                field: header.header_name(),
            });
        }
        Self::validate(header, value)?;
        if value.trim().is_empty() {
            return Err(ValueError::InvalidChar {
                field: header.header_name(),
                index: 0,
                rule: "no leading or trailing space",
            });
        }
        Ok(SystemValue {
            header,
            value: value.to_owned(),
        })
    }

    /// Checks a value without keeping it: `Ok` for a valid value and for an empty (or all-space) one, which means
    /// "not set". Does not allocate.
    pub fn validate(header: SystemHeader, value: &str) -> Result<(), ValueError> {
        if value.trim().is_empty() {
            return Ok(());
        }
        let field = header.header_name();
        check_len(field, value, 1, SYSTEM_VALUE_MAX_LEN)?;
        check_chars(
            field,
            value,
            |c| (' '..='~').contains(&c),
            "only printable ASCII characters are allowed",
        )?;
        if value.starts_with(' ') || value.ends_with(' ') {
            let index = if value.starts_with(' ') {
                0
            } else {
                value.len() - 1
            };
            return Err(ValueError::InvalidChar {
                field,
                index,
                rule: "no leading or trailing space",
            });
        }
        Ok(())
    }

    /// Like [`SystemValue::new`], but an empty or all-space input means "not set" and gives `None`.
    pub fn new_optional(header: SystemHeader, value: &str) -> Result<Option<Self>, ValueError> {
        if value.trim().is_empty() {
            Ok(None)
        } else {
            SystemValue::new(header, value).map(Some)
        }
    }

    /// Which header this value is for.
    pub fn header(&self) -> SystemHeader {
        self.header
    }

    /// The value.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for SystemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl fmt::Display for SystemValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

/// The four `Vipps-System-*` values a request carries.
///
/// The system name and version are required; when no plugin name or version is set, [`SystemInfo::headers`]
/// sends the system name and version in their place, as the vendor's headers page suggests.
///
/// ```
/// use vipps_types::headers::SystemInfo;
///
/// let info = SystemInfo::new("acme", "3.1.2").unwrap().with_plugin("acme-webshop", "4.5.6").unwrap();
/// let headers = info.headers();
/// assert_eq!(headers[2], ("Vipps-System-Plugin-Name", "acme-webshop"));
///
/// let bare = SystemInfo::new("acme", "3.1.2").unwrap();
/// assert_eq!(bare.headers()[2], ("Vipps-System-Plugin-Name", "acme"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    name: SystemValue,
    version: SystemValue,
    plugin_name: Option<SystemValue>,
    plugin_version: Option<SystemValue>,
}

impl SystemInfo {
    /// A system name and version, both required and validated.
    pub fn new(name: &str, version: &str) -> Result<Self, ValueError> {
        Ok(SystemInfo {
            name: SystemValue::new(SystemHeader::Name, name)?,
            version: SystemValue::new(SystemHeader::Version, version)?,
            plugin_name: None,
            plugin_version: None,
        })
    }

    /// Adds a plugin name and version. Empty strings mean "not set".
    pub fn with_plugin(mut self, name: &str, version: &str) -> Result<Self, ValueError> {
        self.plugin_name = SystemValue::new_optional(SystemHeader::PluginName, name)?;
        self.plugin_version = SystemValue::new_optional(SystemHeader::PluginVersion, version)?;
        Ok(self)
    }

    /// `Vipps-System-Name`.
    pub fn name(&self) -> &SystemValue {
        &self.name
    }
    /// `Vipps-System-Version`.
    pub fn version(&self) -> &SystemValue {
        &self.version
    }
    /// `Vipps-System-Plugin-Name`, if set.
    pub fn plugin_name(&self) -> Option<&SystemValue> {
        self.plugin_name.as_ref()
    }
    /// `Vipps-System-Plugin-Version`, if set.
    pub fn plugin_version(&self) -> Option<&SystemValue> {
        self.plugin_version.as_ref()
    }

    /// The four headers to send, in order: name, version, plugin name, plugin version. A missing plugin name
    /// or version is replaced by the system name or version.
    pub fn headers(&self) -> [(&'static str, &str); 4] {
        [
            (SYSTEM_NAME, self.name.as_str()),
            (SYSTEM_VERSION, self.version.as_str()),
            (
                SYSTEM_PLUGIN_NAME,
                self.plugin_name.as_ref().unwrap_or(&self.name).as_str(),
            ),
            (
                SYSTEM_PLUGIN_VERSION,
                self.plugin_version
                    .as_ref()
                    .unwrap_or(&self.version)
                    .as_str(),
            ),
        ]
    }
}

/// A valid `Merchant-Serial-Number`: 4 to 7 ASCII digits.
///
/// The ePayment spec says `^[0-9]{4,6}$`; the official TypeScript SDK documents `^[0-9]{4,7}$`. We accept 4 to 7
/// digits so that no real sales unit is refused; [`MerchantSerialNumber::is_spec_length`] tells whether the value
/// also fits the spec's 6.
///
/// ```
/// use vipps_types::headers::MerchantSerialNumber;
///
/// assert!(MerchantSerialNumber::new("123456").is_ok());
/// assert!(MerchantSerialNumber::new("1234567").is_ok());
/// assert!(MerchantSerialNumber::new("123").is_err());
/// assert!(MerchantSerialNumber::new("12345678").is_err());
/// assert!(MerchantSerialNumber::new("12a456").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MerchantSerialNumber(String);

impl MerchantSerialNumber {
    /// Validates an MSN.
    pub fn new(value: &str) -> Result<Self, ValueError> {
        let field = MERCHANT_SERIAL_NUMBER;
        check_chars(
            field,
            value,
            |c| c.is_ascii_digit(),
            "only digits 0-9 are allowed",
        )?;
        check_len(field, value, MSN_MIN_LEN, MSN_MAX_LEN)?;
        Ok(MerchantSerialNumber(value.to_owned()))
    }

    /// The digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the value also fits the spec's `^[0-9]{4,6}$`.
    pub fn is_spec_length(&self) -> bool {
        self.0.len() <= MSN_SPEC_MAX_LEN
    }
}

validated_string!(MerchantSerialNumber);

/// A valid `Idempotency-Key`: 1 to 50 characters of visible ASCII (`!` to `~`), no comma.
///
/// Commas are refused because a comma-separated header value would be read as a list by proxies and
/// frameworks. A UUID, an order id with a suffix, or any printable token fits.
///
/// ```
/// use vipps_types::headers::IdempotencyKey;
///
/// assert!(IdempotencyKey::new("49ca711a-acee-4d01-993b-9487112e1def").is_ok());
/// assert!(IdempotencyKey::new(&"k".repeat(50)).is_ok());
/// assert!(IdempotencyKey::new(&"k".repeat(51)).is_err());
/// assert!(IdempotencyKey::new("").is_err());
/// assert!(IdempotencyKey::new("a b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    pub fn new(value: &str) -> Result<Self, ValueError> {
        let field = IDEMPOTENCY_KEY;
        check_len(field, value, 1, IDEMPOTENCY_KEY_MAX_LEN)?;
        check_chars(
            field,
            value,
            |c| ('!'..='~').contains(&c),
            "only visible ASCII characters are allowed",
        )?;
        check_chars(field, value, |c| c != ',', "a comma is not allowed")?;
        Ok(IdempotencyKey(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(IdempotencyKey);

/// Maximum length of a Recurring `Idempotency-Key`.
pub const RECURRING_IDEMPOTENCY_KEY_MAX_LEN: usize = 40;

/// A valid Recurring API `Idempotency-Key`: 1 to 40 characters, none of `#`, `?`, `/` or `\` (the Recurring
/// spec's rule), and visible ASCII (`!` to `~`) without a comma, as every key this crate sends.
///
/// ```
/// use vipps_types::headers::RecurringIdempotencyKey;
///
/// assert!(RecurringIdempotencyKey::new("49ca711a-acee-4d01-993b-9487112e1def").is_ok());
/// assert!(RecurringIdempotencyKey::new(&"k".repeat(40)).is_ok());
/// assert!(RecurringIdempotencyKey::new(&"k".repeat(41)).is_err());
/// assert!(RecurringIdempotencyKey::new("a/b").is_err());
/// assert!(RecurringIdempotencyKey::new("a#b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecurringIdempotencyKey(String);

impl RecurringIdempotencyKey {
    /// Validates a key.
    pub fn new(value: &str) -> Result<Self, ValueError> {
        let field = IDEMPOTENCY_KEY;
        check_len(field, value, 1, RECURRING_IDEMPOTENCY_KEY_MAX_LEN)?;
        check_chars(
            field,
            value,
            |c| ('!'..='~').contains(&c),
            "only visible ASCII characters are allowed",
        )?;
        check_chars(
            field,
            value,
            |c| !matches!(c, '#' | '?' | '/' | '\\' | ','),
            "the characters #, ?, /, \\ and , are not allowed",
        )?;
        Ok(RecurringIdempotencyKey(value.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

validated_string!(RecurringIdempotencyKey);

impl From<RecurringIdempotencyKey> for IdempotencyKey {
    fn from(k: RecurringIdempotencyKey) -> Self {
        // Every Recurring key is also a valid general key (a stricter rule).
        IdempotencyKey(k.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_values_both_sides_of_each_limit() {
        for h in SystemHeader::ALL {
            assert!(SystemValue::new(h, "a").is_ok());
            assert!(SystemValue::new(h, &"x".repeat(30)).is_ok());
            assert_eq!(
                SystemValue::new(h, &"x".repeat(31)).unwrap_err(),
                ValueError::TooLong {
                    field: h.header_name(),
                    max: 30,
                    len: 31
                }
            );
            assert_eq!(
                SystemValue::new(h, "").unwrap_err(),
                ValueError::Empty {
                    field: h.header_name()
                }
            );
            assert!(SystemValue::new(h, "ok~").is_ok());
            assert!(SystemValue::new(h, "tab\there").is_err());
            assert!(SystemValue::new(h, "ø").is_err());
            assert!(SystemValue::new(h, " lead").is_err());
            assert!(SystemValue::new(h, "trail ").is_err());
            assert_eq!(SystemValue::new_optional(h, "   ").unwrap(), None);
        }
        // 30 multi-byte characters are still refused by charset, not length.
        assert!(matches!(
            SystemValue::new(SystemHeader::Name, &"é".repeat(30)),
            Err(ValueError::InvalidChar { .. })
        ));
    }

    #[test]
    fn msn_both_sides_of_each_limit() {
        assert!(MerchantSerialNumber::new("1234").is_ok());
        assert!(MerchantSerialNumber::new("123").is_err());
        assert!(MerchantSerialNumber::new("1234567").is_ok());
        assert!(MerchantSerialNumber::new("12345678").is_err());
        assert!(MerchantSerialNumber::new("").is_err());
        assert!(MerchantSerialNumber::new("12 34").is_err());
        assert!(MerchantSerialNumber::new("１２３４").is_err());
        assert!(
            MerchantSerialNumber::new("123456")
                .unwrap()
                .is_spec_length()
        );
        assert!(
            !MerchantSerialNumber::new("1234567")
                .unwrap()
                .is_spec_length()
        );
    }

    #[test]
    fn idempotency_key_both_sides_of_each_limit() {
        assert!(IdempotencyKey::new("a").is_ok());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new(&"a".repeat(50)).is_ok());
        assert!(matches!(
            IdempotencyKey::new(&"a".repeat(51)),
            Err(ValueError::TooLong {
                max: 50,
                len: 51,
                ..
            })
        ));
        assert!(IdempotencyKey::new("!~#?/").is_ok());
        assert!(matches!(
            IdempotencyKey::new("a,b"),
            Err(ValueError::InvalidChar { index: 1, .. })
        ));
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("æ").is_err());
        assert!(IdempotencyKey::new("a\n").is_err());
    }

    #[test]
    fn plugin_defaults_to_system() {
        let info = SystemInfo::new("acme", "1.0")
            .unwrap()
            .with_plugin("", "")
            .unwrap();
        assert_eq!(info.plugin_name(), None);
        assert_eq!(
            info.headers(),
            [
                (SYSTEM_NAME, "acme"),
                (SYSTEM_VERSION, "1.0"),
                (SYSTEM_PLUGIN_NAME, "acme"),
                (SYSTEM_PLUGIN_VERSION, "1.0")
            ]
        );
        assert!(SystemInfo::new(&"n".repeat(31), "1").is_err());
        assert!(
            SystemInfo::new("n", "1")
                .unwrap()
                .with_plugin(&"p".repeat(31), "1")
                .is_err()
        );
    }
}
