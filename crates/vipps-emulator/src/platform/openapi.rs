//! The control API's own OpenAPI document (`GET /_emulator/openapi.json`, OpenAPI 3.1) and the vendor's official
//! specs of the APIs the emulator serves (`GET /_emulator/specs/`).
//!
//! The document is generated from the code: every JSON control is registered through `utoipa_axum`'s
//! `routes!`, which takes its path and method from the handler's `#[utoipa::path]`, so a control cannot be
//! served without being documented. HTML pages (the dashboard, the payer's pages) are not part of it.
//! The schemas below describe answers the handlers build as JSON values.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;

use super::Shared;
use super::http::{ApiResult, RequestMeta};

/// The Webhooks API's official spec (the Webhooks API is the platform's own).
const WEBHOOKS_SPEC: (&str, &str) = (
    "webhooks.v1.yml",
    include_str!("../../specs/webhooks.v1.yml"),
);

/// The serialized document, shared by the route that serves it.
#[derive(Debug, Clone)]
pub(crate) struct Document(pub Arc<str>);

/// Completes the document the routes produced: title, version, description, tags.
pub(crate) fn document(mut doc: OpenApi) -> OpenApi {
    doc.info = utoipa::openapi::InfoBuilder::new()
        .title("Vipps MobilePay emulator: control API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "The emulator's test controls under /_emulator/: health, the clock, fault injection, the request and \
             delivery records, the request servers, how to reach the emulator, and each product's controls \
             (acting as the user). Problems are application/problem+json. The product APIs themselves follow the \
             vendor's official specs, served under /_emulator/specs/.",
        ))
        .license(Some(utoipa::openapi::License::new("MIT OR Apache-2.0")))
        .build();
    doc
}

/// A problem answer (RFC 9457, with the vendor's extensions).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProblemDoc {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong and how to fix it.
    pub detail: String,
    /// The request path.
    pub instance: Option<String>,
    /// The emulator's trace id of the request.
    pub trace_id: Option<String>,
    /// Field-level details: which field broke which rule.
    pub extra_details: Option<Vec<FieldDetail>>,
}

/// One field-level detail of a problem.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FieldDetail {
    /// The field (or header).
    pub name: String,
    /// The rule it broke.
    pub reason: String,
}

/// Any JSON object (answers whose shape the operation's description gives in prose).
#[derive(Debug)]
pub(crate) struct JsonObject;

impl utoipa::PartialSchema for JsonObject {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .description(Some("A JSON object"))
            .into()
    }
}

impl ToSchema for JsonObject {}

/// One official spec as listed by `GET /_emulator/specs`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SpecEntry {
    /// File name, such as `epayment.v1.yml`.
    pub name: String,
    /// Where this emulator serves it.
    pub url: String,
}

/// Every spec: the platform's and each product's.
fn specs(s: &Shared) -> Vec<(&'static str, &'static str)> {
    let mut all = vec![WEBHOOKS_SPEC];
    for p in s.products.iter() {
        all.extend(p.specs());
    }
    all
}

/// `GET /_emulator/openapi.json`.
#[utoipa::path(
    get,
    path = "/_emulator/openapi.json",
    tag = "platform",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = JsonObject)),
)]
pub(crate) async fn openapi_json(Extension(doc): Extension<Document>) -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        doc.0.to_string(),
    )
        .into_response()
}

/// `GET /_emulator/specs`: the official specs of the APIs this emulator serves.
#[utoipa::path(
    get,
    path = "/_emulator/specs",
    tag = "platform",
    responses((status = 200, description = "The vendored official OpenAPI specs", body = Vec<SpecEntry>)),
)]
pub(crate) async fn spec_index(State(s): State<Shared>) -> axum::Json<Vec<SpecEntry>> {
    axum::Json(
        specs(&s)
            .into_iter()
            .map(|(name, _)| SpecEntry {
                name: name.to_owned(),
                url: s
                    .base_url
                    .join(&format!("_emulator/specs/{name}"))
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
            })
            .collect(),
    )
}

/// `GET /_emulator/specs/{name}`: one official spec, as the vendor publishes it (YAML).
#[utoipa::path(
    get,
    path = "/_emulator/specs/{name}",
    tag = "platform",
    params(("name" = String, Path, description = "A file name from `GET /_emulator/specs`")),
    responses(
        (status = 200, description = "The spec", content_type = "application/yaml", body = String),
        (status = 404, description = "No such spec", content_type = "application/problem+json", body = ProblemDoc),
    ),
)]
pub(crate) async fn spec(
    State(s): State<Shared>,
    meta: RequestMeta,
    Path(name): Path<String>,
) -> ApiResult {
    match specs(&s).into_iter().find(|(n, _)| *n == name) {
        Some((_, text)) => Ok((
            [(
                http::header::CONTENT_TYPE,
                "application/yaml; charset=utf-8",
            )],
            text,
        )
            .into_response()),
        None => Err(meta
            .problem(
                404,
                "Not Found",
                format!("No spec named `{name}`; GET /_emulator/specs lists them"),
            )
            .field("name", "a name from GET /_emulator/specs")
            .err()),
    }
}
