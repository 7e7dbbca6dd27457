//! Fault injection: rules that make the next N matching requests fail, slow down, or lose their answer.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum FaultAction {
    /// Answer this status with a problem body instead of executing (`Retry-After` if given).
    Status {
        /// HTTP status, 400 to 599.
        status: u16,
        /// Seconds for `Retry-After`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// Wait this long before executing (after the idempotency claim, for idempotent writes).
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Execute and commit, then drop the connection without answering ("response lost after commit").
    DropAfterCommit,
}

/// A rule as posted to `POST /_emulator/faults`. Unknown fields are refused (by the action, which receives
/// every field the rule itself does not know).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
pub(crate) struct FaultSpec {
    /// Method to match (any when absent).
    pub method: Option<String>,
    /// Path pattern; `*` matches one path segment, a trailing `/**` any rest.
    pub path: String,
    /// How many matching requests it applies to (default 1).
    pub times: Option<u32>,
    /// What it does.
    #[serde(flatten)]
    pub action: FaultAction,
}

/// A rule with its remaining count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct FaultRule {
    /// Rule id.
    pub id: u64,
    /// Method, if restricted.
    pub method: Option<String>,
    /// Path pattern.
    pub path: String,
    /// Remaining matching requests.
    pub remaining: u32,
    /// What it does.
    #[serde(flatten)]
    pub action: FaultAction,
}

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FaultError {
    /// A field breaks a rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// The rule.
        reason: String,
    },
}

/// The active rules.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    next_id: Mutex<u64>,
}

/// Whether `path` matches `pattern` (`*` is one segment, a trailing `**` any rest).
pub(crate) fn path_matches(pattern: &str, path: &str) -> bool {
    let mut p = pattern.trim_end_matches('/').split('/');
    let mut s = path.trim_end_matches('/').split('/');
    loop {
        match (p.next(), s.next()) {
            (Some("**"), _) => return true,
            (Some(a), Some(b)) => {
                if a != "*" && a != b {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Faults {
    /// Adds a rule.
    pub(crate) fn add(&self, spec: FaultSpec) -> Result<FaultRule, FaultError> {
        let mut rule = Self::validate(spec)?;
        rule.id = {
            let mut n = self.next_id.lock();
            *n += 1;
            *n
        };
        self.rules.lock().push(rule.clone());
        Ok(rule)
    }

    /// Checks a rule and returns it (with id 0).
    pub(crate) fn validate(spec: FaultSpec) -> Result<FaultRule, FaultError> {
        if !spec.path.starts_with('/') {
            return Err(FaultError::Invalid {
                field: "path",
                reason: "must start with /".into(),
            });
        }
        let times = spec.times.unwrap_or(1);
        if times == 0 {
            return Err(FaultError::Invalid {
                field: "times",
                reason: "must be at least 1".into(),
            });
        }
        match &spec.action {
            FaultAction::Status { status, .. } if !(400..=599).contains(status) => {
                return Err(FaultError::Invalid {
                    field: "status",
                    reason: "must be between 400 and 599".into(),
                });
            }
            FaultAction::Delay { ms } if *ms > 120_000 => {
                return Err(FaultError::Invalid {
                    field: "ms",
                    reason: "must be at most 120000".into(),
                });
            }
            _ => {}
        }
        Ok(FaultRule {
            id: 0,
            method: spec.method.map(|m| m.to_ascii_uppercase()),
            path: spec.path,
            remaining: times,
            action: spec.action,
        })
    }

    /// Takes one use of the first rule matching the request, if any.
    pub(crate) fn take(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut rules = self.rules.lock();
        let i = rules.iter().position(|r| {
            r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && path_matches(&r.path, path)
        })?;
        let action = rules[i].action.clone();
        rules[i].remaining -= 1;
        if rules[i].remaining == 0 {
            rules.remove(i);
        }
        Some(action)
    }

    /// The active rules.
    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().clone()
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        self.rules.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(path_matches(
            "/epayment/v1/payments/*/capture",
            "/epayment/v1/payments/abc/capture"
        ));
        assert!(!path_matches(
            "/epayment/v1/payments/*/capture",
            "/epayment/v1/payments/abc/refund"
        ));
        assert!(!path_matches(
            "/epayment/v1/payments",
            "/epayment/v1/payments/abc"
        ));
        assert!(path_matches("/epayment/**", "/epayment/v1/payments/abc"));
    }

    #[test]
    fn counts_down() {
        let f = Faults::default();
        f.add(FaultSpec {
            method: Some("post".into()),
            path: "/x".into(),
            times: Some(2),
            action: FaultAction::Status {
                status: 503,
                retry_after: None,
            },
        })
        .unwrap();
        assert!(f.take("GET", "/x").is_none());
        assert!(f.take("POST", "/x").is_some());
        assert_eq!(f.list()[0].remaining, 1);
        assert!(f.take("POST", "/x").is_some());
        assert!(f.take("POST", "/x").is_none());
        let bad = f.add(FaultSpec {
            method: None,
            path: "/x".into(),
            times: Some(0),
            action: FaultAction::DropAfterCommit,
        });
        assert!(bad.is_err());
    }
}
