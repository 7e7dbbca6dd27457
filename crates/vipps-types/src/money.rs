//! Money: amounts in minor units.

use serde::{Deserialize, Serialize};

/// The largest amount value the ePayment spec allows (`maximum: 65000000`, in minor units).
pub const MAX_VALUE: i64 = 65_000_000;

/// A currency the ePayment API supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    /// Norwegian krone.
    #[serde(rename = "NOK")]
    Nok,
    /// Danish krone.
    #[serde(rename = "DKK")]
    Dkk,
    /// Euro.
    #[serde(rename = "EUR")]
    Eur,
}

impl Currency {
    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::Nok => "NOK",
            Currency::Dkk => "DKK",
            Currency::Eur => "EUR",
        }
    }

    /// The smallest payment amount in minor units: NOK 100 øre, DKK 1 øre, EUR 1 cent.
    pub fn minimum_payment(self) -> i64 {
        match self {
            Currency::Nok => 100,
            Currency::Dkk | Currency::Eur => 1,
        }
    }
}

impl std::str::FromStr for Currency {
    type Err = AmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "NOK" => Ok(Currency::Nok),
            "DKK" => Ok(Currency::Dkk),
            "EUR" => Ok(Currency::Eur),
            _ => Err(AmountError::UnknownCurrency(s.to_owned())),
        }
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Negative values are not allowed.
    #[error("amount.value must not be negative, got {0}")]
    Negative(i64),
    /// Above the spec's maximum.
    #[error("amount.value must be at most {MAX_VALUE}, got {0}")]
    TooLarge(i64),
    /// Below the smallest payment for the currency (error code 6010).
    #[error("amount.value must be at least {min} for {currency}, got {value}")]
    BelowMinimum {
        /// The currency.
        currency: Currency,
        /// The minimum in minor units.
        min: i64,
        /// The value given.
        value: i64,
    },
    /// The currency is not NOK, DKK or EUR.
    #[error("amount.currency `{0}` is not supported (use NOK, DKK or EUR)")]
    UnknownCurrency(String),
}

/// An amount of money in minor units (øre, cents): `{"currency": "NOK", "value": 49900}` is NOK 499.00.
///
/// [`Amount::new`] checks the spec's range (`0..=65000000`); [`Amount::check_payment_minimum`] checks the
/// per-currency minimum that applies to creating a payment. Deserialization accepts any value so that a client
/// never fails on a server's aggregate; servers validate with [`Amount::validate`].
///
/// ```
/// use vipps_types::money::{Amount, Currency};
///
/// let a = Amount::new(Currency::Nok, 49900).unwrap();
/// assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"currency":"NOK","value":49900}"#);
/// assert!(Amount::new(Currency::Nok, 65_000_001).is_err());
/// assert!(Amount::new(Currency::Nok, 99).unwrap().check_payment_minimum().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    /// The currency.
    pub currency: Currency,
    /// The value in minor units.
    pub value: i64,
}

impl Amount {
    /// An amount within `0..=65000000` minor units.
    pub fn new(currency: Currency, value: i64) -> Result<Self, AmountError> {
        let a = Amount { currency, value };
        a.validate()?;
        Ok(a)
    }

    /// Zero in a currency.
    pub fn zero(currency: Currency) -> Self {
        Amount { currency, value: 0 }
    }

    /// Checks the spec's range.
    pub fn validate(&self) -> Result<(), AmountError> {
        if self.value < 0 {
            return Err(AmountError::Negative(self.value));
        }
        if self.value > MAX_VALUE {
            return Err(AmountError::TooLarge(self.value));
        }
        Ok(())
    }

    /// Checks the per-currency minimum for a payment (NOK 100 øre, DKK 1 øre, EUR 1 cent).
    pub fn check_payment_minimum(&self) -> Result<(), AmountError> {
        let min = self.currency.minimum_payment();
        if self.value < min {
            return Err(AmountError::BelowMinimum {
                currency: self.currency,
                min,
                value: self.value,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_limits_both_sides() {
        assert!(Amount::new(Currency::Nok, 0).is_ok());
        assert_eq!(
            Amount::new(Currency::Nok, -1),
            Err(AmountError::Negative(-1))
        );
        assert!(Amount::new(Currency::Eur, MAX_VALUE).is_ok());
        assert_eq!(
            Amount::new(Currency::Eur, MAX_VALUE + 1),
            Err(AmountError::TooLarge(MAX_VALUE + 1))
        );
        assert!(
            Amount::new(Currency::Nok, 100)
                .unwrap()
                .check_payment_minimum()
                .is_ok()
        );
        assert!(
            Amount::new(Currency::Nok, 99)
                .unwrap()
                .check_payment_minimum()
                .is_err()
        );
        assert!(
            Amount::new(Currency::Dkk, 1)
                .unwrap()
                .check_payment_minimum()
                .is_ok()
        );
        assert!(
            Amount::new(Currency::Dkk, 0)
                .unwrap()
                .check_payment_minimum()
                .is_err()
        );
        assert!(
            Amount::new(Currency::Eur, 1)
                .unwrap()
                .check_payment_minimum()
                .is_ok()
        );
        assert!(
            Amount::new(Currency::Eur, 0)
                .unwrap()
                .check_payment_minimum()
                .is_err()
        );
    }

    #[test]
    fn currency_wire() {
        assert!(serde_json::from_str::<Amount>(r#"{"currency":"SEK","value":1}"#).is_err());
        assert!(serde_json::from_str::<Amount>(r#"{"currency":"NOK","value":1.5}"#).is_err());
        assert_eq!("dkk".parse::<Currency>().unwrap(), Currency::Dkk);
        assert!("SEK".parse::<Currency>().is_err());
    }
}
