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

#[cfg(test)]
mod tests {
    /// A product uses another only through its `facade` module (see ARCHITECTURE.md).
    #[test]
    fn products_use_each_other_only_through_facades() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/products");
        let names: Vec<String> = std::fs::read_dir(&root)
            .expect("products folder")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let mut offenders = Vec::new();
        for own in &names {
            for entry in std::fs::read_dir(root.join(own)).expect("product folder") {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).expect("readable source");
                for (i, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for other in names.iter().filter(|n| *n != own) {
                        // Built at run time so that this file does not name what it forbids.
                        let needle = ["products", "::", other, "::"].concat();
                        let allowed = [needle.as_str(), "facade"].concat();
                        if code.contains(&needle) && !code.contains(&allowed) {
                            offenders.push(format!(
                                "{}:{}: {}",
                                path.display(),
                                i + 1,
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "a product may use another only through its facade:\n{}",
            offenders.join("\n")
        );
    }
}
