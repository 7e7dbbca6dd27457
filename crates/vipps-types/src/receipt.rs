//! The Order Management receipt (`Receipt` of Order Management API v2) that a payment may carry.
//! Being completed: see the golden-fixture work.

use serde::{Deserialize, Serialize};

/// A receipt: order lines and a bottom line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The order lines (at least one).
    pub order_lines: Vec<serde_json::Value>,
    /// The bottom line.
    pub bottom_line: serde_json::Value,
}
