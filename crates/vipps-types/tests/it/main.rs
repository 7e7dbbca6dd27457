//! Golden-fixture tests of the wire contract.
//!
//! Every JSON file in `tests/fixtures/` must deserialize into the type its name maps to (see [`ROUND_TRIPS`]),
//! serialize back, and equal the file as a `serde_json::Value`. A fixture without a mapping fails the test.
//!
//! The spec-derived fixtures are checked against `/work/shared/specs` (`../../../shared/specs` from the crate)
//! when that folder exists; `VIPPS_REGENERATE_FIXTURES=1` rewrites them from the specs instead. Fixtures named
//! `vipps-docs__*` are bodies from the vendor's documentation and are maintained by hand.
#![allow(clippy::print_stderr)]

mod fuzz;
mod specs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use vipps_types::checkout::{InitiateSessionRequest, InitiateSessionResponse, SessionResponse};
use vipps_types::epayment::{
    CancelModificationRequest, CreatePaymentRequest, CreatePaymentResponse, ForceApprove,
    GetPaymentResponse, Metadata, ModificationRequest, ModificationResponse, PaymentAdjustment,
    PaymentEvent, PaymentEventName, PaymentMethodType, WebhookEvent,
};
use vipps_types::headers::MerchantSerialNumber;
use vipps_types::ids::Reference;
use vipps_types::money::Currency;
use vipps_types::problem::{ExtraDetail, Problem};
use vipps_types::receipt::{BottomLine, OrderLine, PaymentSources, Receipt, UnitInfo};
use vipps_types::recurring::{
    AgreementStatus, ChargeStatus, ChargeType, DraftAgreementRequest, PeriodUnit, TransactionType,
};
use vipps_types::token::AccessTokenResponse;
use vipps_types::webhooks::{QueryResponse, RegisterRequest, RegisterResponse, Webhook};

/// The spec's `OrderLine` x-example wraps the lines as `{"orderLines": [...]}` (a receipt without its bottom
/// line), so it is checked through this wrapper around the real `OrderLine` type.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrderLinesOnly {
    order_lines: Vec<OrderLine>,
}

type Check = fn(&Value) -> Result<(), String>;

/// Deserializes into `T`, serializes back, and compares as JSON values.
fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| format!("deserialize: {e}"))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("serialize: {e}"))?;
    if &back == v {
        Ok(())
    } else {
        Err(format!(
            "round trip changed the body\n  fixture: {}\n  written: {}",
            v, back
        ))
    }
}

/// File-name prefix -> the type the fixture must round-trip through.
const ROUND_TRIPS: &[(&str, Check)] = &[
    // checkout.v3.yml
    (
        "checkout.v3__post-session-request__",
        round_trip::<InitiateSessionRequest>,
    ),
    (
        "checkout.v3__InitiateSessionResponse__",
        round_trip::<InitiateSessionResponse>,
    ),
    (
        "checkout.v3__SessionResponse__",
        round_trip::<SessionResponse>,
    ),
    // recurring.v3.yml (v3 only)
    (
        "recurring.v3__DraftAgreementV3-request__",
        round_trip::<DraftAgreementRequest>,
    ),
    (
        "recurring.v3__AgreementStatus__",
        round_trip::<AgreementStatus>,
    ),
    ("recurring.v3__ChargeStatus__", round_trip::<ChargeStatus>),
    ("recurring.v3__ChargeType__", round_trip::<ChargeType>),
    ("recurring.v3__Currency__", round_trip::<String>),
    ("recurring.v3__CurrencyV3__", round_trip::<String>),
    ("recurring.v3__Interval__", round_trip::<PeriodUnit>),
    (
        "recurring.v3__transactionType__",
        round_trip::<TransactionType>,
    ),
    // epayment.v1.yml
    (
        "epayment.v1__CreatePaymentResponse__",
        round_trip::<CreatePaymentResponse>,
    ),
    (
        "epayment.v1__CreatePaymentRequest__",
        round_trip::<CreatePaymentRequest>,
    ),
    (
        "epayment.v1__GetPaymentResponse__",
        round_trip::<GetPaymentResponse>,
    ),
    (
        "epayment.v1__ModificationResponse__",
        round_trip::<ModificationResponse>,
    ),
    (
        "epayment.v1__PaymentEvent-list__",
        round_trip::<Vec<PaymentEvent>>,
    ),
    ("epayment.v1__WebhookEvent__", round_trip::<WebhookEvent>),
    (
        "epayment.v1__CaptureModificationRequest__",
        round_trip::<ModificationRequest>,
    ),
    (
        "epayment.v1__RefundModificationRequest__",
        round_trip::<ModificationRequest>,
    ),
    (
        "epayment.v1__PaymentAdjustment__",
        round_trip::<PaymentAdjustment>,
    ),
    ("epayment.v1__ForceApprove__", round_trip::<ForceApprove>),
    ("epayment.v1__Metadata__", round_trip::<Metadata>),
    ("epayment.v1__Currency__", round_trip::<Currency>),
    ("epayment.v1__MSN__", round_trip::<MerchantSerialNumber>),
    (
        "epayment.v1__PaymentEventName__",
        round_trip::<PaymentEventName>,
    ),
    (
        "epayment.v1__PaymentMethodType__",
        round_trip::<PaymentMethodType>,
    ),
    ("epayment.v1__Reference__", round_trip::<Reference>),
    // order-management.v2.yml
    ("order-management.v2__Receipt__", round_trip::<Receipt>),
    (
        "order-management.v2__postReceiptV2-request__",
        round_trip::<Receipt>,
    ),
    (
        "order-management.v2__OrderLine__",
        round_trip::<OrderLinesOnly>,
    ),
    (
        "order-management.v2__BottomLine__",
        round_trip::<BottomLine>,
    ),
    ("order-management.v2__UnitInfo__", round_trip::<UnitInfo>),
    (
        "order-management.v2__PaymentSources__",
        round_trip::<PaymentSources>,
    ),
    // webhooks.v1.yml
    (
        "webhooks.v1__RegisterRequest__",
        round_trip::<RegisterRequest>,
    ),
    (
        "webhooks.v1__RegisterResponse__",
        round_trip::<RegisterResponse>,
    ),
    ("webhooks.v1__Webhook__", round_trip::<Webhook>),
    ("webhooks.v1__QueryResponse__", round_trip::<QueryResponse>),
    ("webhooks.v1__ProblemDetails__", round_trip::<Problem>),
    ("webhooks.v1__ExtraDetail__", round_trip::<ExtraDetail>),
    // The vendor's documentation.
    (
        "vipps-docs__AccessTokenResponse__",
        round_trip::<AccessTokenResponse>,
    ),
    ("vipps-docs__Problem__", round_trip::<Problem>),
    (
        "vipps-docs__CancelModificationRequest__",
        round_trip::<CancelModificationRequest>,
    ),
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every `*.json` fixture, by file name.
fn read_fixtures() -> BTreeMap<String, Value> {
    let dir = fixtures_dir();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        out.insert(name, value);
    }
    out
}

fn fixture(name: &str) -> Value {
    read_fixtures()
        .remove(name)
        .unwrap_or_else(|| panic!("fixture {name} missing"))
}

#[test]
fn every_fixture_round_trips_through_its_type() {
    let fixtures = read_fixtures();
    assert!(!fixtures.is_empty(), "no fixtures found");
    let mut failures = Vec::new();
    let mut used = vec![false; ROUND_TRIPS.len()];
    for (name, value) in &fixtures {
        let matches: Vec<usize> = ROUND_TRIPS
            .iter()
            .enumerate()
            .filter(|(_, (prefix, _))| name.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        match matches.as_slice() {
            [] => failures.push(format!("{name}: no type mapped in ROUND_TRIPS")),
            [i] => {
                used[*i] = true;
                if let Err(e) = (ROUND_TRIPS[*i].1)(value) {
                    failures.push(format!("{name}: {e}"));
                }
            }
            _ => failures.push(format!("{name}: more than one mapping matches")),
        }
    }
    for (i, (prefix, _)) in ROUND_TRIPS.iter().enumerate() {
        if !used[i] {
            failures.push(format!("mapping {prefix} matches no fixture"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn fixtures_match_the_official_specs() {
    let dir = specs::specs_dir();
    if !dir.is_dir() {
        eprintln!(
            "SKIPPED fixtures_match_the_official_specs: spec folder {} not found",
            dir.display()
        );
        return;
    }
    let specs = specs::Specs::load(&dir);
    let (expected, stale) = specs.expected_fixtures().unwrap();
    assert!(
        stale.is_empty(),
        "NOT_MODELED lists examples the specs no longer have: {stale:?}"
    );

    let is_spec_derived = |name: &str| {
        specs::SPEC_FILES
            .iter()
            .any(|(_, stem)| name.starts_with(&format!("{stem}__")))
    };
    let committed: BTreeMap<String, Value> = read_fixtures()
        .into_iter()
        .filter(|(n, _)| is_spec_derived(n))
        .collect();

    if std::env::var("VIPPS_REGENERATE_FIXTURES").as_deref() == Ok("1") {
        let out = fixtures_dir();
        for name in committed.keys().filter(|n| !expected.contains_key(*n)) {
            std::fs::remove_file(out.join(name)).unwrap();
            eprintln!("removed {name}");
        }
        for (name, value) in &expected {
            let text = serde_json::to_string_pretty(value).unwrap() + "\n";
            std::fs::write(out.join(name), text).unwrap();
        }
        eprintln!("wrote {} fixtures to {}", expected.len(), out.display());
        return;
    }

    let mut problems = Vec::new();
    for (name, value) in &expected {
        match committed.get(name) {
            None => problems.push(format!("missing fixture {name}")),
            Some(c) if c != value => problems.push(format!(
                "{name} differs from the spec\n  committed: {c}\n  spec:      {value}"
            )),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("{name} is not in the specs"));
    }
    assert!(
        problems.is_empty(),
        "fixtures out of date (VIPPS_REGENERATE_FIXTURES=1 rewrites them):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_four_create_payment_response_examples_are_present() {
    let names: Vec<String> = read_fixtures()
        .into_keys()
        .filter(|n| n.starts_with("epayment.v1__CreatePaymentResponse__"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let native = fixture("epayment.v1__CreatePaymentResponse__NativeRedirect.json");
    let r: CreatePaymentResponse = serde_json::from_value(native).unwrap();
    assert_eq!(r.reference.as_str(), "racme-shop-123-order123abc");
}

#[test]
fn vendor_problem_example_carries_the_error_code() {
    let p: Problem = serde_json::from_value(fixture(
        "vipps-docs__Problem__capture-before-reservation.json",
    ))
    .unwrap();
    assert_eq!(p.status, Some(400));
    assert_eq!(
        p.error_code(),
        Some(vipps_types::problem::ErrorCode::CaptureBeforeReservation)
    );
}

// Negative cases.

fn create_request() -> Value {
    fixture("epayment.v1__CreatePaymentRequest__assembled-from-property-examples.json")
}

fn rejects<T: DeserializeOwned + std::fmt::Debug>(v: Value, why: &str) -> String {
    match serde_json::from_value::<T>(v) {
        Ok(t) => panic!("{why}: accepted as {t:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn create_payment_request_base_is_accepted() {
    serde_json::from_value::<CreatePaymentRequest>(create_request()).unwrap();
}

#[test]
fn unknown_field_in_create_payment_request_is_rejected() {
    let mut v = create_request();
    v["surprise"] = json!(1);
    let e = rejects::<CreatePaymentRequest>(v, "unknown top-level field");
    assert!(e.contains("surprise"), "{e}");
}

#[test]
fn unknown_field_inside_the_receipt_is_rejected() {
    let mut v = create_request();
    v["receipt"]["orderLines"][0]["colour"] = json!("orange");
    let e = rejects::<CreatePaymentRequest>(v, "unknown order-line field");
    assert!(e.contains("colour"), "{e}");

    let mut v = create_request();
    v["receipt"]["bottomLine"]["vat"] = json!(25);
    rejects::<CreatePaymentRequest>(v, "unknown bottom-line field");
}

#[test]
fn amount_value_as_string_is_rejected() {
    let mut v = create_request();
    v["amount"]["value"] = json!("49900");
    rejects::<CreatePaymentRequest>(v, "amount.value as a string");

    let mut v = fixture("epayment.v1__GetPaymentResponse__assembled-from-property-examples.json");
    v["aggregate"]["capturedAmount"]["value"] = json!("0");
    rejects::<GetPaymentResponse>(v, "aggregate amount as a string");
}

#[test]
fn receipt_wrong_types_and_missing_fields_are_rejected() {
    let receipt = fixture("order-management.v2__Receipt__ReceiptExample.json");

    let mut v = receipt.clone();
    v["orderLines"][0]["totalAmount"] = json!("1000");
    rejects::<Receipt>(v, "totalAmount as a string");

    let mut v = receipt.clone();
    v["orderLines"][0]["unitInfo"]["quantity"] = json!(0.822);
    rejects::<Receipt>(v, "quantity as a number");

    let mut v = receipt.clone();
    v["orderLines"][0]
        .as_object_mut()
        .unwrap()
        .remove("taxPercentage");
    let e = rejects::<Receipt>(v, "missing taxPercentage");
    assert!(e.contains("taxPercentage"), "{e}");

    let mut v = receipt;
    v["bottomLine"].as_object_mut().unwrap().remove("currency");
    rejects::<Receipt>(v, "missing currency");
}

#[test]
fn missing_required_field_and_bad_reference_are_rejected() {
    let mut v = create_request();
    v.as_object_mut().unwrap().remove("userFlow");
    let e = rejects::<CreatePaymentRequest>(v, "missing userFlow");
    assert!(e.contains("userFlow"), "{e}");

    let mut v = create_request();
    v["reference"] = json!("has spaces");
    rejects::<CreatePaymentRequest>(v, "invalid reference");
}

#[test]
fn spec_receipt_examples_pass_validation() {
    let r: Receipt =
        serde_json::from_value(fixture("order-management.v2__Receipt__ReceiptExample.json"))
            .unwrap();
    r.validate().unwrap();
    let r: CreatePaymentRequest = serde_json::from_value(create_request()).unwrap();
    r.receipt.unwrap().validate().unwrap();
}
