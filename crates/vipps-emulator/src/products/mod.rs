//! The product APIs, one folder each. A product reaches the platform only through
//! [`crate::platform::product::Product`]; products never import each other's internals: a product that builds
//! on another uses only that product's `facade` module (Checkout on ePayment and Recurring).

mod checkout;
mod epayment;
mod recurring;

use std::sync::Arc;

use crate::platform::product::Registry;

/// Every product API the emulator serves.
pub(crate) fn registry() -> Registry {
    Registry::new(vec![
        Arc::new(epayment::EPayment),
        Arc::new(recurring::Recurring),
        Arc::new(checkout::Checkout),
    ])
}
