//! The product APIs, one folder each. A product reaches the platform only through
//! [`crate::platform::product::Product`]; products never import each other's internals.

mod epayment;
mod recurring;

use std::sync::Arc;

use crate::platform::product::Registry;

/// Every product API the emulator serves.
pub(crate) fn registry() -> Registry {
    Registry::new(vec![
        Arc::new(epayment::EPayment),
        Arc::new(recurring::Recurring),
    ])
}
