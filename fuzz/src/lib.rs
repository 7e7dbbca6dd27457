//! The fuzz targets' bodies, shared by the `cargo fuzz` targets (`fuzz_targets/`) and the bounded random-input
//! test that runs on stable in the normal test suite (`crates/vipps-types/tests/it/fuzz.rs`). Each takes
//! arbitrary bytes and checks a property, not only that nothing panics.
#![allow(clippy::missing_panics_doc)]

use std::time::{Duration, SystemTime};

use vipps_types::headers::{
    IdempotencyKey, MerchantSerialNumber, RecurringIdempotencyKey, SystemHeader, SystemValue,
};
use vipps_types::problem::Problem;
use vipps_types::signing;
use vipps_types::token::AccessTokenResponse;

/// Valid inputs the random test mutates (the `cargo fuzz` corpus starts from them too).
pub const SEEDS: &[(&str, &[&[u8]])] = &[
    ("header_values", &[b"123456", b"order-key-1", b"woocommerce-payment", b"1.2.3"]),
    (
        "problem",
        &[
            br#"{"type":"https://httpstatuses.io/400","title":"Bad Request","status":400,"detail":"x","instance":"/epayment/v1/payments","traceId":"00-1","extraDetails":[{"name":"ErrorCode","reason":"3010"}]}"#,
            br#"{"title":"t","status":"409"}"#,
        ],
    ),
    (
        "access_token",
        &[
            br#"{"token_type":"Bearer","expires_in":"3599","ext_expires_in":"0","expires_on":"1700000000","not_before":"1699996400","resource":"00000002-0000-0000-c000-000000000000","access_token":"eyJ0eXAiOiJKV1Qi.payload.signature"}"#,
            br#"{"token_type":"Bearer","expires_in":3599,"expires_on":1700000000,"access_token":"a.b.c"}"#,
        ],
    ),
    ("signature", &[b"secret\x00/hooks/vipps?shop=1\x00{\"name\":\"CAPTURED\"}"]),
    (
        "request_bodies",
        &[
            br#"{"amount":{"currency":"NOK","value":1000},"paymentMethod":{"type":"WALLET"},"reference":"order-123456","userFlow":"WEB_REDIRECT","returnUrl":"https://example.com/r"}"#,
            br#"{"modificationAmount":{"currency":"NOK","value":100}}"#,
            br#"{"cancelTransactionOnly":true}"#,
            br#"{"url":"https://example.com/hooks","events":["epayments.payment.captured.v1"]}"#,
        ],
    ),
];

/// Header value types: what constructs is valid, keeps its text, and constructs again.
pub fn header_values(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = MerchantSerialNumber::new(s) {
        assert_eq!(v.as_str(), s);
        assert!(MerchantSerialNumber::new(v.as_str()).is_ok());
        assert!(
            s.bytes().all(|b| b.is_ascii_digit()),
            "an MSN of digits: {s:?}"
        );
    }
    if let Ok(v) = IdempotencyKey::new(s) {
        assert_eq!(v.as_str(), s);
        assert!(!s.contains(','), "no comma in a key: {s:?}");
    }
    if let Ok(v) = RecurringIdempotencyKey::new(s) {
        assert!(IdempotencyKey::new(v.as_str()).is_ok() || v.as_str().len() <= 40);
        assert!(!s.contains(['#', '?', '/', '\\']), "{s:?}");
    }
    for h in [
        SystemHeader::Name,
        SystemHeader::Version,
        SystemHeader::PluginName,
        SystemHeader::PluginVersion,
    ] {
        if let Ok(v) = SystemValue::new(h, s) {
            assert!(SystemValue::new(h, v.as_str()).is_ok());
        }
        let _ = SystemValue::new_optional(h, s);
    }
}

/// The tolerant problem reader: never panics, and what it reads survives writing and reading again.
pub fn problem(data: &[u8]) {
    if let Ok(p) = serde_json::from_slice::<Problem>(data) {
        let again: Problem = serde_json::from_slice(&serde_json::to_vec(&p).expect("serializes"))
            .expect("reads back");
        assert_eq!(again, p);
        let _ = p.error_code();
    }
}

/// The access-token answer: numbers or numeric strings; what it reads survives a round trip, and its `Debug`
/// never shows the token.
pub fn access_token(data: &[u8]) {
    if let Ok(t) = serde_json::from_slice::<AccessTokenResponse>(data) {
        let again: AccessTokenResponse =
            serde_json::from_slice(&serde_json::to_vec(&t).expect("serializes"))
                .expect("reads back");
        assert_eq!(again, t);
        // `Debug` does not depend on the token at all.
        let other = AccessTokenResponse {
            access_token: format!("{}x", t.access_token),
            ..t.clone()
        };
        assert_eq!(
            format!("{t:?}"),
            format!("{other:?}"),
            "the token shows in Debug"
        );
    }
}

/// The webhook signature verifier: arbitrary headers never panic it; whatever `sign` makes verifies; and one
/// changed byte of the body does not.
pub fn signature(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (secret, path, body) = match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => (String::from_utf8_lossy(a), String::from_utf8_lossy(b), c),
        _ => return,
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    // Arbitrary header values straight into the verifier.
    let text = String::from_utf8_lossy(body);
    let d = signing::Delivery {
        path_and_query: &path,
        host: &secret,
        x_ms_date: &text,
        x_ms_content_sha256: &text,
        authorization: &text,
        body,
    };
    let _ = signing::verify(&secret, &d, at, signing::DEFAULT_SKEW);
    // A signed delivery verifies.
    let path: String = path.chars().filter(|c| c.is_ascii_graphic()).collect();
    let Ok(url) = url::Url::parse(&format!(
        "https://shop.example/{}",
        path.trim_start_matches('/')
    )) else {
        return;
    };
    let signed = signing::sign(&secret, &url, body, at);
    let path_and_query = signing::path_and_query_of(&url);
    let good = signing::Delivery {
        path_and_query,
        host: &signed.host,
        x_ms_date: &signed.x_ms_date,
        x_ms_content_sha256: &signed.x_ms_content_sha256,
        authorization: &signed.authorization,
        body,
    };
    assert_eq!(
        signing::verify(&secret, &good, at, signing::DEFAULT_SKEW),
        Ok(())
    );
    if !body.is_empty() {
        let mut changed = body.to_vec();
        changed[0] ^= 1;
        let bad = signing::Delivery {
            body: &changed,
            ..good
        };
        assert!(signing::verify(&secret, &bad, at, signing::DEFAULT_SKEW).is_err());
    }
}

/// JSON request bodies (ePayment create, capture/refund, cancel; Webhooks register): a body that parses is
/// written and read back to the same value, so a request validated once means the same everywhere.
pub fn request_bodies(data: &[u8]) {
    fn round_trip<T>(data: &[u8])
    where
        T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
    {
        if let Ok(v) = serde_json::from_slice::<T>(data) {
            let again: T = serde_json::from_slice(&serde_json::to_vec(&v).expect("serializes"))
                .expect("reads back");
            assert_eq!(again, v);
        }
    }
    round_trip::<vipps_types::epayment::CreatePaymentRequest>(data);
    round_trip::<vipps_types::epayment::ModificationRequest>(data);
    round_trip::<vipps_types::epayment::CancelModificationRequest>(data);
    round_trip::<vipps_types::webhooks::RegisterRequest>(data);
}

/// A target: its name and body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name.
pub const TARGETS: &[Target] = &[
    ("header_values", header_values),
    ("problem", problem),
    ("access_token", access_token),
    ("signature", signature),
    ("request_bodies", request_bodies),
];
