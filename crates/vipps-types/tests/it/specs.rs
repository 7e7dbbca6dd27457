//! Extraction of the golden fixtures from the official OpenAPI specs.
//!
//! Two kinds of spec-derived fixtures exist:
//!
//! - **verbatim**: a whole-body example the spec gives (schema-level `example`, each `x-examples` entry with an
//!   Example Object's `value:` unwrapped, and the `examples` of media types under `components/responses`,
//!   `components/requestBodies` and `paths`). Named `<spec>__<schema-or-response>__<example-name>.json`.
//! - **assembled from property examples**: for bodies the spec has no whole example for, an object built from
//!   the `example` values of the schema's properties (following `$ref`, also into the other spec file). A
//!   property without any example gets a fixed filler from [`FILLERS`]; a few values are adjusted for realism
//!   ([`ASSEMBLED`] lists each adjustment). Named `<spec>__<schema>__assembled-from-property-examples.json`.
//!
//! Examples of schemas this crate does not model are listed in [`NOT_MODELED`] with the reason; any other
//! example the specs contain must have a fixture, so a new example in a spec update fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The spec files and the stem used in fixture names.
pub const SPEC_FILES: &[(&str, &str)] = &[
    ("epayment.v1.yml", "epayment.v1"),
    ("order-management.v2.yml", "order-management.v2"),
    ("webhooks.v1.yml", "webhooks.v1"),
    ("recurring.v3.yml", "recurring.v3"),
    ("checkout.v3.yml", "checkout.v3"),
];

/// The example-name part of every assembled fixture.
pub const ASSEMBLED_MARK: &str = "assembled-from-property-examples";

/// Spec examples that belong to schemas this crate does not model, with the reason.
pub const NOT_MODELED: &[(&str, &str)] = &[
    (
        "recurring.v3__DraftAgreement-request__Minimal.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "recurring.v3__DraftAgreement-request__With-Initial-Charge.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "recurring.v3__DraftAgreement-request__With-Price-Campaign.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "recurring.v3__DraftAgreement-request__With-Price-Campaign-and-Initial-Charge.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "recurring.v3__DraftAgreement-request__With-Variable-Amount.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "recurring.v3__DraftAgreement-request__With-Profile-Flow.json",
        "Recurring v2 (discontinued); only v3 is implemented",
    ),
    (
        "epayment.v1__Address__Vipps.json",
        "the ePayment Address schema is referenced by no body this crate models",
    ),
    (
        "order-management.v2__Order__example-1.json",
        "Order Management order categories are not part of the receipt",
    ),
    (
        "order-management.v2__Image__example-1.json",
        "Order Management images are not part of the receipt",
    ),
    (
        "order-management.v2__ImageResponse__example-1.json",
        "Order Management images are not part of the receipt",
    ),
    (
        "order-management.v2__ErrorResponse__example-1.json",
        "the Order Management error body (invalidParams) is not modeled; ePayment uses Problem",
    ),
    (
        "order-management.v2__200Upserted__example.json",
        "Order Management response bodies (a bare id string) are not modeled",
    ),
    (
        "order-management.v2__201Created__example.json",
        "Order Management response bodies (a bare id string) are not modeled",
    ),
    (
        "order-management.v2__getOrder-200__Retrieve-order-info.json",
        "Order Management order categories are not part of the receipt",
    ),
    (
        "order-management.v2__putOrder-request__Adding-order-metadata-with-one-image.json",
        "Order Management order categories are not part of the receipt",
    ),
    (
        "order-management.v2__putCategoryV2-request__Adding-order-metadata-with-one-image.json",
        "Order Management order categories are not part of the receipt",
    ),
    (
        "order-management.v2__postImage-request__ImageUploadExample.json",
        "Order Management images are not part of the receipt",
    ),
    (
        "order-management.v2__postImage-200__example-1.json",
        "Order Management images are not part of the receipt",
    ),
];

/// One assembled fixture: spec file, JSON pointer to the schema in it, fixture name part, and the JSON pointers
/// whose assembled value is replaced to make the body realistic.
pub struct Assembled {
    /// The spec file, such as `epayment.v1.yml`.
    pub spec: &'static str,
    /// The `<schema-or-response>` part of the fixture name.
    pub owner: &'static str,
    /// A JSON pointer to the schema inside the spec.
    pub schema: &'static str,
    /// Replacements, by JSON pointer into the assembled body.
    pub overrides: &'static [(&'static str, Override)],
}

/// A replacement value for an assembled body.
#[derive(Clone, Copy)]
pub enum Override {
    /// A string.
    Str(&'static str),
    /// An integer.
    Int(i64),
}

impl Override {
    fn value(self) -> Value {
        match self {
            Override::Str(s) => json!(s),
            Override::Int(i) => json!(i),
        }
    }
}

/// An authorized, not yet captured payment.
const AUTHORIZED_ONLY: &[(&str, Override)] = &[
    ("/state", Override::Str("AUTHORIZED")),
    ("/aggregate/cancelledAmount/value", Override::Int(0)),
    ("/aggregate/capturedAmount/value", Override::Int(0)),
    ("/aggregate/refundedAmount/value", Override::Int(0)),
];

/// A payment right after a full capture.
const CAPTURED_IN_FULL: &[(&str, Override)] = &[
    ("/state", Override::Str("AUTHORIZED")),
    ("/aggregate/cancelledAmount/value", Override::Int(0)),
    ("/aggregate/refundedAmount/value", Override::Int(0)),
];

/// The bodies the specs have no whole example for.
pub const ASSEMBLED: &[Assembled] = &[
    Assembled {
        spec: "checkout.v3.yml",
        owner: "InitiateSessionResponse",
        schema: "/components/schemas/InitiateSessionResponse",
        overrides: &[],
    },
    Assembled {
        spec: "checkout.v3.yml",
        owner: "SessionResponse",
        schema: "/components/schemas/SessionResponse",
        overrides: &[
            ("/sessionState", Override::Str("PaymentSuccessful")),
            ("/paymentDetails/state", Override::Str("AUTHORIZED")),
        ],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "CreatePaymentRequest",
        schema: "/components/schemas/CreatePaymentRequest",
        // `expiresAt` and `customer` go with PUSH_MESSAGE; the property example is NATIVE_REDIRECT.
        overrides: &[("/userFlow", Override::Str("PUSH_MESSAGE"))],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "GetPaymentResponse",
        schema: "/components/schemas/GetPaymentResponse",
        overrides: AUTHORIZED_ONLY,
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "ModificationResponse",
        schema: "/components/schemas/ModificationResponse",
        overrides: CAPTURED_IN_FULL,
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "PaymentEvent-list",
        schema: "/paths/~1epayment~1v1~1payments~1{reference}~1events/get/responses/200/content/application~1json/schema",
        overrides: &[],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "WebhookEvent",
        schema: "/components/schemas/WebhookEvent",
        overrides: &[],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "CaptureModificationRequest",
        schema: "/components/schemas/CaptureModificationRequest",
        overrides: &[],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "RefundModificationRequest",
        schema: "/components/schemas/RefundModificationRequest",
        overrides: &[("/modificationAmount/value", Override::Int(10000))],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "PaymentAdjustment",
        schema: "/components/schemas/PaymentAdjustment",
        overrides: &[],
    },
    Assembled {
        spec: "epayment.v1.yml",
        owner: "ForceApprove",
        schema: "/components/schemas/ForceApprove",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "RegisterRequest",
        schema: "/components/schemas/RegisterRequest",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "RegisterResponse",
        schema: "/components/schemas/RegisterResponse",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "Webhook",
        schema: "/components/schemas/Webhook",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "QueryResponse",
        schema: "/components/schemas/QueryResponse",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "ProblemDetails",
        schema: "/components/schemas/ProblemDetails",
        overrides: &[],
    },
    Assembled {
        spec: "webhooks.v1.yml",
        owner: "ExtraDetail",
        schema: "/components/schemas/ExtraDetail",
        overrides: &[],
    },
];

/// Values for properties the specs give no example for: by `format` (`format:<name>`) or by property name.
pub const FILLERS: &[(&str, &str)] = &[
    ("format:uuid", "497f6eca-6276-4993-bfeb-53cbbbba6f08"),
    ("format:date-time", "2022-12-31T00:00:00Z"),
    ("pspReference", "7686f7788898767977"),
    ("paymentDescription", "Two pairs of socks"),
    ("sub", "c06c4afe-d9e1-4c5d-939a-177d752a0944"),
    ("token", "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1Ni"),
    ("idempotencyKey", "fb492b5e-7907-4d83-ba20-c7fb60ca35de"),
    ("agencyInvoiceNumber", "123456"),
    ("success", "true"),
    ("customConsentProvided", "true"),
    ("value", "1000"),
    ("currency", "NOK"),
    ("openingHours", "Man-Søn: 1000-2000"),
];

/// The directory of the official specs, `../../../shared/specs` from the crate.
pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs")
}

/// The three specs as JSON values, by file name.
pub struct Specs {
    docs: BTreeMap<&'static str, Value>,
}

impl Specs {
    /// Loads the specs from `dir`.
    pub fn load(dir: &Path) -> Specs {
        let docs = SPEC_FILES
            .iter()
            .map(|(file, _)| {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
                    .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
                let json = serde_json::to_value(yaml)
                    .unwrap_or_else(|e| panic!("converting {} to JSON: {e}", path.display()));
                (*file, json)
            })
            .collect();
        Specs { docs }
    }

    fn doc(&self, file: &str) -> &Value {
        self.docs
            .get(file)
            .unwrap_or_else(|| panic!("unknown spec file {file}"))
    }

    /// Every fixture the specs define: verbatim examples (minus [`NOT_MODELED`]) and assembled bodies, by file
    /// name. Also returns the names of [`NOT_MODELED`] entries that the specs no longer contain.
    pub fn expected_fixtures(&self) -> Result<(BTreeMap<String, Value>, Vec<String>), String> {
        let mut out = BTreeMap::new();
        let mut excluded_seen = Vec::new();
        for (file, stem) in SPEC_FILES {
            for (owner, name, value) in verbatim_examples(self.doc(file)) {
                let fname = format!("{stem}__{owner}__{}.json", sanitize(&name));
                if NOT_MODELED.iter().any(|(n, _)| *n == fname) {
                    excluded_seen.push(fname);
                    continue;
                }
                // The same example under several media types (Checkout lists `application/json`, `text/json` and
                // `application/*+json`) is one fixture; different bodies under one name are an error.
                if let Some(before) = out.insert(fname.clone(), value.clone()) {
                    if before != value {
                        return Err(format!("two spec examples map to the fixture name {fname}"));
                    }
                }
            }
        }
        for a in ASSEMBLED {
            let stem = SPEC_FILES
                .iter()
                .find(|(f, _)| *f == a.spec)
                .map(|(_, s)| *s)
                .ok_or_else(|| format!("unknown spec {}", a.spec))?;
            let schema = self
                .doc(a.spec)
                .pointer(a.schema)
                .ok_or_else(|| format!("{} has nothing at {}", a.spec, a.schema))?;
            let mut value = self.assemble(a.spec, schema, None, 0)?;
            for (ptr, v) in a.overrides {
                let slot = value
                    .pointer_mut(ptr)
                    .ok_or_else(|| format!("{}: override target {ptr} missing", a.owner))?;
                *slot = v.value();
            }
            let fname = format!("{stem}__{}__{ASSEMBLED_MARK}.json", a.owner);
            if out.insert(fname.clone(), value).is_some() {
                return Err(format!(
                    "assembled fixture {fname} clashes with a spec example"
                ));
            }
        }
        let stale = NOT_MODELED
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| !excluded_seen.contains(n))
            .collect();
        Ok((out, stale))
    }

    fn resolve<'a>(&'a self, doc: &'a str, r: &str) -> Result<(&'a str, &'a Value), String> {
        let (file, ptr) = r.split_once('#').ok_or_else(|| format!("bad $ref {r}"))?;
        let file = match file.trim_start_matches("./") {
            "" => doc,
            f => SPEC_FILES
                .iter()
                .find(|(n, _)| *n == f)
                .map(|(n, _)| *n)
                .ok_or_else(|| format!("$ref into unknown file {r}"))?,
        };
        let target = self
            .doc(file)
            .pointer(ptr)
            .ok_or_else(|| format!("dangling $ref {r}"))?;
        Ok((file, target))
    }

    /// Builds a value for `schema` from examples, following `$ref`s.
    fn assemble(
        &self,
        doc: &str,
        schema: &Value,
        prop: Option<&str>,
        depth: usize,
    ) -> Result<Value, String> {
        if depth > 32 {
            return Err(format!("schema nesting too deep at {prop:?}"));
        }
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let (file, target) = self.resolve(doc, r)?;
            return self.assemble(file, target, prop, depth + 1);
        }
        if let Some(ex) = schema.get("example") {
            return Ok(ex.clone());
        }
        if let Some(first) = schema
            .get("x-examples")
            .and_then(Value::as_object)
            .and_then(|m| m.values().next())
        {
            return Ok(unwrap_example(first).clone());
        }
        if let Some(first) = ["oneOf", "anyOf"]
            .iter()
            .find_map(|k| schema.get(*k).and_then(Value::as_array)?.first())
        {
            return self.assemble(doc, first, prop, depth + 1);
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            // `allOf` of one part is how the Checkout spec attaches a description to a `$ref` (an enum, say).
            if let [only] = parts.as_slice() {
                return self.assemble(doc, only, prop, depth + 1);
            }
            let mut merged = Map::new();
            for p in parts {
                match self.assemble(doc, p, prop, depth + 1)? {
                    Value::Object(m) => merged.extend(m),
                    other => return Err(format!("allOf part is not an object: {other}")),
                }
            }
            return Ok(Value::Object(merged));
        }
        if let Some(d) = schema.get("default") {
            return Ok(d.clone());
        }
        if let Some(first) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            return Ok(first.clone());
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            let mut obj = Map::new();
            for (k, p) in props {
                if p.get("deprecated").and_then(Value::as_bool) == Some(true) {
                    continue;
                }
                obj.insert(k.clone(), self.assemble(doc, p, Some(k), depth + 1)?);
            }
            return Ok(Value::Object(obj));
        }
        if schema.get("type").and_then(Value::as_str) == Some("array") {
            let items = schema
                .get("items")
                .ok_or_else(|| format!("array without items at {prop:?}"))?;
            return Ok(Value::Array(vec![self.assemble(
                doc,
                items,
                prop,
                depth + 1,
            )?]));
        }
        filler(schema, prop)
    }
}

fn filler(schema: &Value, prop: Option<&str>) -> Result<Value, String> {
    let by_format = schema
        .get("format")
        .and_then(Value::as_str)
        .map(|f| format!("format:{f}"));
    let keys = by_format.into_iter().chain(prop.map(str::to_owned));
    for key in keys {
        if let Some((_, v)) = FILLERS.iter().find(|(k, _)| *k == key) {
            return Ok(match schema.get("type").and_then(Value::as_str) {
                Some("boolean") => json!(*v == "true"),
                Some("integer") => json!(v.parse::<i64>().map_err(|e| e.to_string())?),
                _ => json!(v),
            });
        }
    }
    if let Some(v) = description_example(schema) {
        return Ok(v);
    }
    Err(format!(
        "no example and no filler for property {prop:?} (schema {schema}); add one to FILLERS"
    ))
}

/// The example a description gives in words (`Example: "Ada"`, `Example: 121648`), as the Checkout spec does
/// instead of `example:`.
fn description_example(schema: &Value) -> Option<Value> {
    let d = schema.get("description")?.as_str()?;
    let rest = &d[d.find("Example: ")? + "Example: ".len()..];
    let text = match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split_whitespace().next()?.trim_end_matches('.'),
    };
    Some(match schema.get("type").and_then(Value::as_str) {
        Some("integer") => json!(text.parse::<i64>().ok()?),
        _ => json!(text),
    })
}

/// An OpenAPI Example Object (`summary`, `description`, `value`, `externalValue`) yields its `value`; anything
/// else is the example itself.
fn unwrap_example(ex: &Value) -> &Value {
    const EXAMPLE_OBJECT_KEYS: &[&str] = &["summary", "description", "value", "externalValue"];
    match ex.as_object() {
        Some(m)
            if m.contains_key("value")
                && m.keys().all(|k| EXAMPLE_OBJECT_KEYS.contains(&k.as_str())) =>
        {
            &m["value"]
        }
        _ => ex,
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `(owner, example name, value)` of every whole-body example in a spec.
fn verbatim_examples(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    let obj = |v: Option<&Value>| v.and_then(Value::as_object).cloned().unwrap_or_default();

    for (name, schema) in obj(doc.pointer("/components/schemas")) {
        if let Some(ex) = schema.get("example") {
            out.push((name.clone(), "example".to_owned(), ex.clone()));
        }
        for (ex_name, ex) in obj(schema.get("x-examples")) {
            out.push((name.clone(), ex_name, unwrap_example(&ex).clone()));
        }
    }
    for (name, ex) in obj(doc.pointer("/components/examples")) {
        out.push(("examples".to_owned(), name, unwrap_example(&ex).clone()));
    }
    for section in ["/components/responses", "/components/requestBodies"] {
        for (name, body) in obj(doc.pointer(section)) {
            media_examples(&name, &body, &mut out);
        }
    }
    for (path, item) in obj(doc.get("paths")) {
        for (method, op) in obj(Some(&item)) {
            let Some(op_obj) = op.as_object() else {
                continue;
            };
            let op_name = op_obj
                .get("operationId")
                .and_then(Value::as_str)
                .map(str::to_owned)
                // Without an operationId (the Checkout spec), the method and path, made file-name safe.
                .unwrap_or_else(|| sanitize(&format!("{method}{path}")));
            if let Some(body) = op_obj.get("requestBody") {
                media_examples(&format!("{op_name}-request"), body, &mut out);
            }
            for (code, resp) in obj(op_obj.get("responses")) {
                media_examples(&format!("{op_name}-{code}"), &resp, &mut out);
            }
        }
    }
    out
}

fn media_examples(owner: &str, body: &Value, out: &mut Vec<(String, String, Value)>) {
    let Some(content) = body.get("content").and_then(Value::as_object) else {
        return;
    };
    for media in content.values() {
        if let Some(ex) = media.get("example") {
            out.push((owner.to_owned(), "example".to_owned(), ex.clone()));
        }
        if let Some(examples) = media.get("examples").and_then(Value::as_object) {
            for (name, ex) in examples {
                out.push((owner.to_owned(), name.clone(), unwrap_example(ex).clone()));
            }
        }
    }
}
