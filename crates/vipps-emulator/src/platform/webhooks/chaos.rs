//! Delivery-side chaos: rules that make the next N delivery attempts matching an event type or URL misbehave the
//! way a real network or a broken sender would, so that webhook receivers can be tested against it. Every
//! attempt a rule touches is recorded like any other, with the rule in its record.
//!
//! Rules live in the memory of the instance that received them and act on the deliveries that instance makes
//! (on a shared store, deliveries are leased by whichever instance is free; add the rule to each instance, or run
//! one, when that matters).

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What a rule does to a matching attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ChaosAction {
    /// Not sent at all: recorded as a failed attempt and retried when the schedule says.
    Drop,
    /// Sent twice, with the same body and so the same event identity; the first answer decides the outcome.
    Duplicate,
    /// Sent after waiting this long (wall-clock milliseconds).
    Delay {
        /// Milliseconds, 1 to 60 000.
        ms: u64,
    },
    /// Not sent now: put at the back of its (webhook, aggregate) queue, so events queued behind it are sent first.
    /// This breaks the vendor's ordering promise on purpose (for testing receivers); with nothing queued behind
    /// it, it is simply sent next.
    Reorder,
    /// Signed with a wrong secret: the `Authorization` header does not verify.
    WrongSignature,
    /// Signed correctly, but for a date `seconds` in the past, sent with that date: what a replayed old delivery
    /// looks like (receivers reject it by its `x-ms-date` window).
    StaleSignature {
        /// Age in seconds, 1 to 604 800 (default 600).
        #[serde(default = "default_age")]
        seconds: u64,
    },
    /// `x-ms-date` moved by `seconds` (negative: into the past) after signing: the header no longer matches the
    /// signature, and beyond the receiver's window it is refused for its date.
    SkewDate {
        /// Seconds, -604 800 to 604 800 except 0 (default 600).
        #[serde(default = "default_age_signed")]
        seconds: i64,
    },
}

fn default_age() -> u64 {
    600
}

fn default_age_signed() -> i64 {
    600
}

/// A rule as posted to `POST /_emulator/webhook-chaos`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct ChaosSpec {
    /// Only deliveries of this event type (`epayments.payment.captured.v1`) or name (`CAPTURED`, any case).
    pub event: Option<String>,
    /// Only deliveries whose URL starts with this.
    pub url: Option<String>,
    /// How many matching attempts it applies to (default 1, at most 1000).
    pub times: Option<u32>,
    /// What it does.
    #[serde(flatten)]
    pub action: ChaosAction,
}

/// A rule with its remaining count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ChaosRule {
    /// Rule id.
    pub id: u64,
    /// Event type or name, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// URL prefix, if restricted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Remaining matching attempts.
    pub remaining: u32,
    /// What it does.
    #[serde(flatten)]
    pub action: ChaosAction,
}

/// Why a rule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub(crate) struct ChaosError {
    /// The field.
    pub field: &'static str,
    /// The rule it breaks.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ChaosError {
    ChaosError {
        field,
        reason: reason.into(),
    }
}

/// The most attempts one rule applies to.
const MAX_TIMES: u32 = 1000;
/// The longest delay (ms).
const MAX_DELAY_MS: u64 = 60_000;
/// The largest age or skew (seconds): the retry horizon.
const MAX_SECONDS: u64 = 7 * 86_400;

/// The active rules.
#[derive(Debug, Default)]
pub(crate) struct Chaos {
    rules: Mutex<(u64, Vec<ChaosRule>)>,
}

impl Chaos {
    /// Checks a spec and adds it as a rule.
    pub(crate) fn add(
        &self,
        spec: ChaosSpec,
        known_events: &[String],
    ) -> Result<ChaosRule, ChaosError> {
        let times = spec.times.unwrap_or(1);
        if !(1..=MAX_TIMES).contains(&times) {
            return Err(invalid("times", format!("1 to {MAX_TIMES}")));
        }
        if let Some(ev) = &spec.event {
            let known = known_events.iter().any(|k| {
                k == ev
                    || k.split('.')
                        .rev()
                        .nth(1)
                        .is_some_and(|name| name.eq_ignore_ascii_case(ev))
            });
            if !known {
                return Err(invalid(
                    "event",
                    "a webhook event type (such as epayments.payment.captured.v1) or its name (CAPTURED)",
                ));
            }
        }
        if let Some(u) = &spec.url {
            if u.is_empty() {
                return Err(invalid("url", "a URL prefix, not empty"));
            }
        }
        match &spec.action {
            ChaosAction::Delay { ms } if !(1..=MAX_DELAY_MS).contains(ms) => {
                return Err(invalid("ms", format!("1 to {MAX_DELAY_MS}")));
            }
            ChaosAction::StaleSignature { seconds } if !(1..=MAX_SECONDS).contains(seconds) => {
                return Err(invalid("seconds", format!("1 to {MAX_SECONDS}")));
            }
            ChaosAction::SkewDate { seconds }
                if *seconds == 0 || seconds.unsigned_abs() > MAX_SECONDS =>
            {
                return Err(invalid(
                    "seconds",
                    format!("-{MAX_SECONDS} to {MAX_SECONDS}, not 0"),
                ));
            }
            _ => {}
        }
        let mut rules = self.rules.lock();
        rules.0 += 1;
        let rule = ChaosRule {
            id: rules.0,
            event: spec.event,
            url: spec.url,
            remaining: times,
            action: spec.action,
        };
        rules.1.push(rule.clone());
        Ok(rule)
    }

    /// The active rules, oldest first.
    pub(crate) fn list(&self) -> Vec<ChaosRule> {
        self.rules.lock().1.clone()
    }

    /// Removes every rule.
    pub(crate) fn clear(&self) {
        self.rules.lock().1.clear();
    }

    /// Takes one use of the oldest rule matching an attempt: its id and action.
    pub(crate) fn take(
        &self,
        event_type: &str,
        event_name: &str,
        url: &str,
    ) -> Option<(u64, ChaosAction)> {
        let mut rules = self.rules.lock();
        let list = &mut rules.1;
        if list.is_empty() {
            return None;
        }
        let i = list.iter().position(|r| {
            r.event.as_ref().is_none_or(|e| {
                e == event_type
                    || e.eq_ignore_ascii_case(event_name)
                    || event_type
                        .split('.')
                        .rev()
                        .nth(1)
                        .is_some_and(|n| n.eq_ignore_ascii_case(e))
            }) && r.url.as_ref().is_none_or(|u| url.starts_with(u.as_str()))
        })?;
        let r = &mut list[i];
        r.remaining -= 1;
        let taken = (r.id, r.action.clone());
        if r.remaining == 0 {
            list.remove(i);
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<ChaosSpec, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn rules_are_checked_counted_and_matched() {
        let known = vec!["epayments.payment.captured.v1".to_owned()];
        let c = Chaos::default();
        let bad = [
            (serde_json::json!({"action": "drop", "times": 0}), "times"),
            (serde_json::json!({"action": "delay", "ms": 0}), "ms"),
            (
                serde_json::json!({"action": "skew_date", "seconds": 0}),
                "seconds",
            ),
            (
                serde_json::json!({"action": "drop", "event": "NOPE"}),
                "event",
            ),
            (serde_json::json!({"action": "drop", "url": ""}), "url"),
        ];
        for (j, field) in bad {
            let e = c.add(spec(j.clone()).unwrap(), &known).unwrap_err();
            assert_eq!(e.field, field, "{j}");
        }
        assert!(spec(serde_json::json!({"action": "explode"})).is_err());
        let r = c
            .add(
                spec(serde_json::json!({"action": "drop", "event": "captured", "times": 2}))
                    .unwrap(),
                &known,
            )
            .unwrap();
        assert_eq!(r.remaining, 2);
        assert_eq!(
            c.take("epayments.payment.created.v1", "CREATED", "http://x/"),
            None
        );
        let took = c.take("epayments.payment.captured.v1", "CAPTURED", "http://x/");
        assert_eq!(took, Some((r.id, ChaosAction::Drop)));
        assert!(
            c.take("epayments.payment.captured.v1", "CAPTURED", "http://x/")
                .is_some()
        );
        assert!(
            c.take("epayments.payment.captured.v1", "CAPTURED", "http://x/")
                .is_none()
        );
        assert!(c.list().is_empty());
    }
}
