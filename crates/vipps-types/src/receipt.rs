//! The Order Management API v2 receipt (`components/schemas/Receipt` of `order-management.v2.yml`) that an
//! ePayment `CreatePaymentRequest` may carry, with everything it references.
//!
//! These are request-side types: unknown fields are rejected. All amounts are integers in minor units (øre,
//! cents). Three kinds of fields appear:
//!
//! - required: a plain field;
//! - optional (absent or `null`): `Option<T>`, left out when written if `None`;
//! - required but nullable in the spec (for example `UnitInfo.unitPrice`, `Barcode.data`): `Option<T>` that must
//!   be present when read (`null` is accepted) and is always written (`null` for `None`).
//!
//! Range rules (`minimum`, `maximum`, the quantity pattern, at least one order line) are not checked while
//! reading; call [`Receipt::validate`].
//!
//! ```
//! use vipps_types::receipt::*;
//!
//! let receipt = Receipt {
//!     order_lines: vec![OrderLine::new("socks", "line-1", 1000, 800, 200, 25)
//!         .with_unit_info(UnitInfo::new(400, "2.5").with_unit(QuantityUnit::Kg))],
//!     bottom_line: BottomLine::new(ReceiptCurrency::Nok),
//! };
//! assert!(receipt.validate().is_ok());
//! let json = serde_json::to_value(&receipt).unwrap();
//! assert_eq!(json["orderLines"][0]["unitInfo"]["quantityUnit"], "KG");
//! assert_eq!(json["bottomLine"], serde_json::json!({"currency": "NOK"}));
//! assert!(serde_json::from_str::<Receipt>(r#"{"orderLines":[],"bottomLine":{"currency":"NOK"},"x":1}"#).is_err());
//! ```

use serde::{Deserialize, Deserializer, Serialize};

use crate::money::Currency;
use crate::open_enum;

open_enum! {
    /// The unit of an order line's quantity (spec `QuantityUnitEnum`); `PCS` when not given.
    pub enum QuantityUnit {
        /// Pieces.
        Pcs = "PCS",
        /// Kilograms.
        Kg = "KG",
        /// Kilometres.
        Km = "KM",
        /// Minutes.
        Minute = "MINUTE",
        /// Litres.
        Litre = "LITRE",
        /// Kilowatt-hours.
        Kwh = "KWH",
    }
}

open_enum! {
    /// The currency of a receipt's bottom line (spec `CurrencyEnum`).
    pub enum ReceiptCurrency {
        /// Norwegian krone.
        Nok = "NOK",
        /// Danish krone.
        Dkk = "DKK",
        /// Euro.
        Eur = "EUR",
    }
}

impl From<Currency> for ReceiptCurrency {
    fn from(c: Currency) -> Self {
        match c {
            Currency::Nok => ReceiptCurrency::Nok,
            Currency::Dkk => ReceiptCurrency::Dkk,
            Currency::Eur => ReceiptCurrency::Eur,
        }
    }
}

open_enum! {
    /// The symbology of a receipt barcode (spec `BarcodeFormatEnum`).
    pub enum BarcodeFormat {
        /// EAN-13.
        Ean13 = "EAN-13",
        /// Code 39.
        Code39 = "CODE 39",
        /// Code 128.
        Code128 = "CODE 128",
    }
}

/// Reads a field that the spec marks both required and nullable: it must be present, `null` is `None`.
///
/// Used with `deserialize_with` (and no `default`), which makes serde report a missing field as an error.
fn required_nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// A receipt: what was bought and the summary (`Receipt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipt {
    /// `orderLines`: the lines of the order; at least one (checked by [`Receipt::validate`]).
    pub order_lines: Vec<OrderLine>,
    /// `bottomLine`: the summary.
    pub bottom_line: BottomLine,
}

/// One line of a receipt (`OrderLine`). Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLine {
    /// `name`: the product name.
    pub name: String,
    /// `id`: the merchant's product id.
    pub id: String,
    /// `totalAmount`: the line total with tax, after discount.
    pub total_amount: i64,
    /// `totalAmountExcludingTax`: the line total without tax, after discount.
    pub total_amount_excluding_tax: i64,
    /// `totalTaxAmount`: the tax of the line.
    pub total_tax_amount: i64,
    /// `taxPercentage`: 0 to 100.
    pub tax_percentage: i64,
    /// `unitInfo`: price per unit and quantity; one piece when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_info: Option<UnitInfo>,
    /// `discount`: the total discount of the line, not negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<i64>,
    /// `productUrl`: a link to the product in the merchant's shop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_url: Option<String>,
    /// `isReturn`: the line is a return and counts negatively in the sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_return: Option<bool>,
    /// `isShipping`: the line is the shipping cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_shipping: Option<bool>,
}

impl OrderLine {
    /// An order line with the required fields.
    pub fn new(
        name: impl Into<String>,
        id: impl Into<String>,
        total_amount: i64,
        total_amount_excluding_tax: i64,
        total_tax_amount: i64,
        tax_percentage: i64,
    ) -> Self {
        OrderLine {
            name: name.into(),
            id: id.into(),
            total_amount,
            total_amount_excluding_tax,
            total_tax_amount,
            tax_percentage,
            unit_info: None,
            discount: None,
            product_url: None,
            is_return: None,
            is_shipping: None,
        }
    }

    /// Sets `unitInfo`.
    pub fn with_unit_info(mut self, unit_info: UnitInfo) -> Self {
        self.unit_info = Some(unit_info);
        self
    }

    /// Sets `discount`.
    pub fn with_discount(mut self, discount: i64) -> Self {
        self.discount = Some(discount);
        self
    }

    /// Sets `productUrl`.
    pub fn with_product_url(mut self, url: impl Into<String>) -> Self {
        self.product_url = Some(url.into());
        self
    }

    /// Marks the line as a shipping line (`isShipping: true`).
    pub fn shipping(mut self) -> Self {
        self.is_shipping = Some(true);
        self
    }

    /// Marks the line as a return (`isReturn: true`).
    pub fn returned(mut self) -> Self {
        self.is_return = Some(true);
        self
    }
}

/// Price per unit and quantity of an order line (`UnitInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UnitInfo {
    /// `unitPrice`: price per unit with tax, before discount; required, may be `null`.
    #[serde(deserialize_with = "required_nullable")]
    pub unit_price: Option<i64>,
    /// `quantity`: a decimal string such as `"2"` or `"0.822"`, at most 10 characters and 8 decimals.
    pub quantity: String,
    /// `quantityUnit`: the unit; `PCS` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity_unit: Option<QuantityUnit>,
}

impl UnitInfo {
    /// A unit price and a quantity, without a unit.
    pub fn new(unit_price: i64, quantity: impl Into<String>) -> Self {
        UnitInfo {
            unit_price: Some(unit_price),
            quantity: quantity.into(),
            quantity_unit: None,
        }
    }

    /// Sets `quantityUnit`.
    pub fn with_unit(mut self, unit: QuantityUnit) -> Self {
        self.quantity_unit = Some(unit);
        self
    }
}

/// The summary of a receipt (`BottomLine`). Amounts in minor units.
///
/// The fields `giftCardAmount`, `totalAmount`, `totalTax`, `totalDiscount`, `shippingAmount`, `shippingInfo` and
/// `terminalId` are deprecated in the spec but still accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BottomLine {
    /// `currency`: required, may be `null`.
    #[serde(deserialize_with = "required_nullable")]
    pub currency: Option<ReceiptCurrency>,
    /// `tipAmount`: the tip, not negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tip_amount: Option<i64>,
    /// `giftCardAmount` (deprecated; use `paymentSources.giftCard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gift_card_amount: Option<i64>,
    /// `posId`: the point-of-sale device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pos_id: Option<String>,
    /// `totalAmount` (deprecated; the sum comes from the order lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_amount: Option<i64>,
    /// `totalTax` (deprecated; the tax comes from the order lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_tax: Option<i64>,
    /// `totalDiscount` (deprecated; the discount comes from the order lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_discount: Option<i64>,
    /// `shippingAmount` (deprecated; use an order line with `isShipping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_amount: Option<i64>,
    /// `shippingInfo` (deprecated; use an order line with `isShipping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_info: Option<ShippingInfo>,
    /// `paymentSources`: how the total was split between payment means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_sources: Option<PaymentSources>,
    /// `barcode`: a barcode shown with the receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barcode: Option<Barcode>,
    /// `receiptNumber`: the merchant's receipt number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_number: Option<String>,
    /// `terminalId` (deprecated; use `posId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
}

impl BottomLine {
    /// A bottom line with only the currency.
    pub fn new(currency: impl Into<ReceiptCurrency>) -> Self {
        BottomLine {
            currency: Some(currency.into()),
            tip_amount: None,
            gift_card_amount: None,
            pos_id: None,
            total_amount: None,
            total_tax: None,
            total_discount: None,
            shipping_amount: None,
            shipping_info: None,
            payment_sources: None,
            barcode: None,
            receipt_number: None,
            terminal_id: None,
        }
    }
}

/// Shipping details of a bottom line (`ShippingInfo`, deprecated in the spec). Every field is required and may
/// be `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShippingInfo {
    /// `amount`: shipping with tax, after discount.
    #[serde(deserialize_with = "required_nullable")]
    pub amount: Option<i64>,
    /// `amountExcludingTax`: shipping without tax.
    #[serde(deserialize_with = "required_nullable")]
    pub amount_excluding_tax: Option<i64>,
    /// `taxAmount`: the tax of the shipping.
    #[serde(deserialize_with = "required_nullable")]
    pub tax_amount: Option<i64>,
    /// `taxPercentage`: 0 to 100.
    #[serde(deserialize_with = "required_nullable")]
    pub tax_percentage: Option<i64>,
}

/// How a receipt was paid, per means of payment (`PaymentSources`). Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PaymentSources {
    /// `giftCard`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gift_card: Option<i64>,
    /// `card`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<i64>,
    /// `voucher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voucher: Option<i64>,
    /// `cash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cash: Option<i64>,
}

/// A barcode on a receipt (`Barcode`). Both fields are required and may be `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Barcode {
    /// `format`: the symbology.
    #[serde(deserialize_with = "required_nullable")]
    pub format: Option<BarcodeFormat>,
    /// `data`: the encoded content.
    #[serde(deserialize_with = "required_nullable")]
    pub data: Option<String>,
}

/// The longest `UnitInfo.quantity` allowed.
pub const QUANTITY_MAX_LEN: usize = 10;
/// The most decimals `UnitInfo.quantity` may have.
pub const QUANTITY_MAX_DECIMALS: usize = 8;

/// A receipt that breaks a rule of the spec. `field` is a JSON-style path such as `orderLines[0].taxPercentage`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// `orderLines` is empty.
    #[error("receipt.orderLines must have at least one line")]
    NoOrderLines,
    /// An amount is negative where the spec has `minimum: 0`.
    #[error("receipt.{field} must not be negative, got {value}")]
    Negative {
        /// The field.
        field: String,
        /// The value given.
        value: i64,
    },
    /// A tax percentage outside 0 to 100.
    #[error("receipt.{field} must be between 0 and 100, got {value}")]
    TaxPercentage {
        /// The field.
        field: String,
        /// The value given.
        value: i64,
    },
    /// A quantity that is not digits with an optional `.` and 1 to 8 decimals, or longer than 10 characters.
    #[error(
        "receipt.{field} must be digits with up to {QUANTITY_MAX_DECIMALS} decimals and at most {QUANTITY_MAX_LEN} characters, got {value:?}"
    )]
    Quantity {
        /// The field.
        field: String,
        /// The value given.
        value: String,
    },
}

/// Whether a quantity matches `^\d+([\.]\d{1,8})?$` and is at most 10 characters long.
pub fn is_valid_quantity(q: &str) -> bool {
    if q.len() > QUANTITY_MAX_LEN {
        return false;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match q.split_once('.') {
        None => digits(q),
        Some((int, frac)) => digits(int) && digits(frac) && frac.len() <= QUANTITY_MAX_DECIMALS,
    }
}

fn non_negative(field: impl FnOnce() -> String, value: Option<i64>) -> Result<(), ReceiptError> {
    match value {
        Some(v) if v < 0 => Err(ReceiptError::Negative {
            field: field(),
            value: v,
        }),
        _ => Ok(()),
    }
}

fn percentage(field: impl FnOnce() -> String, value: Option<i64>) -> Result<(), ReceiptError> {
    match value {
        Some(v) if !(0..=100).contains(&v) => Err(ReceiptError::TaxPercentage {
            field: field(),
            value: v,
        }),
        _ => Ok(()),
    }
}

impl Receipt {
    /// Checks the spec's rules that reading does not: at least one order line, `minimum: 0` amounts, tax
    /// percentages within 0 to 100, and the quantity format. Returns the first violation.
    pub fn validate(&self) -> Result<(), ReceiptError> {
        if self.order_lines.is_empty() {
            return Err(ReceiptError::NoOrderLines);
        }
        for (i, line) in self.order_lines.iter().enumerate() {
            let at = |f: &str| format!("orderLines[{i}].{f}");
            percentage(|| at("taxPercentage"), Some(line.tax_percentage))?;
            non_negative(|| at("discount"), line.discount)?;
            if let Some(u) = &line.unit_info {
                non_negative(|| at("unitInfo.unitPrice"), u.unit_price)?;
                if !is_valid_quantity(&u.quantity) {
                    return Err(ReceiptError::Quantity {
                        field: at("unitInfo.quantity"),
                        value: u.quantity.clone(),
                    });
                }
            }
        }
        let b = &self.bottom_line;
        let at = |f: &str| format!("bottomLine.{f}");
        non_negative(|| at("tipAmount"), b.tip_amount)?;
        non_negative(|| at("giftCardAmount"), b.gift_card_amount)?;
        non_negative(|| at("totalTax"), b.total_tax)?;
        non_negative(|| at("totalDiscount"), b.total_discount)?;
        non_negative(|| at("shippingAmount"), b.shipping_amount)?;
        if let Some(s) = &b.shipping_info {
            non_negative(|| at("shippingInfo.amount"), s.amount)?;
            non_negative(
                || at("shippingInfo.amountExcludingTax"),
                s.amount_excluding_tax,
            )?;
            non_negative(|| at("shippingInfo.taxAmount"), s.tax_amount)?;
            percentage(|| at("shippingInfo.taxPercentage"), s.tax_percentage)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_nullable_fields_must_be_present() {
        let u: UnitInfo = serde_json::from_str(r#"{"unitPrice":null,"quantity":"1"}"#).unwrap();
        assert_eq!(u.unit_price, None);
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"unitPrice":null,"quantity":"1"}"#
        );
        assert!(serde_json::from_str::<UnitInfo>(r#"{"quantity":"1"}"#).is_err());
        assert!(serde_json::from_str::<BottomLine>(r#"{}"#).is_err());
        assert!(serde_json::from_str::<Barcode>(r#"{"format":"EAN-13"}"#).is_err());
        let b: Barcode = serde_json::from_str(r#"{"format":"QR","data":"x"}"#).unwrap();
        assert_eq!(b.format, Some(BarcodeFormat::Unknown("QR".into())));
    }

    #[test]
    fn quantity_format() {
        for ok in ["0", "2", "0.822", "1.12345678", "1234567890"] {
            assert!(is_valid_quantity(ok), "{ok}");
        }
        for bad in [
            "",
            ".5",
            "1.",
            "1,5",
            "-1",
            "1.123456789",
            "12345678901",
            "1e3",
        ] {
            assert!(!is_valid_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn validate_reports_the_field() {
        let mut r = Receipt {
            order_lines: vec![],
            bottom_line: BottomLine::new(Currency::Nok),
        };
        assert_eq!(r.validate(), Err(ReceiptError::NoOrderLines));
        r.order_lines
            .push(OrderLine::new("a", "1", 100, 80, 20, 101));
        assert!(
            matches!(r.validate(), Err(ReceiptError::TaxPercentage { field, value: 101 })
            if field == "orderLines[0].taxPercentage")
        );
        r.order_lines[0].tax_percentage = 25;
        r.order_lines[0].unit_info = Some(UnitInfo::new(100, "1.5.5"));
        assert!(
            matches!(r.validate(), Err(ReceiptError::Quantity { field, .. })
            if field == "orderLines[0].unitInfo.quantity")
        );
        r.order_lines[0].unit_info = Some(UnitInfo::new(100, "1.5"));
        r.bottom_line.tip_amount = Some(-1);
        assert!(
            matches!(r.validate(), Err(ReceiptError::Negative { field, value: -1 })
            if field == "bottomLine.tipAmount")
        );
        r.bottom_line.tip_amount = Some(0);
        assert_eq!(r.validate(), Ok(()));
    }
}
