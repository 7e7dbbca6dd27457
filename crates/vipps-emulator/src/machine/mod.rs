//! Controls for machines under `/_emulator/` (JSON, beside [`crate::controls`]): the event stream and waiting
//! (`stream.rs`), delivery-side chaos (`chaos.rs`) and snapshots (`snapshot.rs`). Like the rest of the
//! controls they are off with `--no-controls`, and name no product.

mod chaos;
pub(crate) mod snapshot;
mod stream;

use serde::de::DeserializeOwned;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::Shared as S;
use crate::platform::http::{ApiError, RequestMeta};

/// The routes, each registered with its OpenAPI operation.
pub(crate) fn routes() -> OpenApiRouter<S> {
    OpenApiRouter::new()
        .routes(routes!(stream::events))
        .routes(routes!(stream::wait))
        .routes(routes!(chaos::add, chaos::list, chaos::clear))
        .routes(routes!(snapshot::take))
}

/// Parses a query string into `T`: every value is a string, except the `numeric` fields, which must be numbers.
/// Errors are 400 problem+json naming the field.
fn query<T: DeserializeOwned>(
    meta: &RequestMeta,
    q: Option<&str>,
    numeric: &[&str],
) -> Result<T, ApiError> {
    let mut map = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or("").as_bytes()) {
        let val = if numeric.contains(&k.as_ref()) {
            let n = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
            match n {
                Some(n) => serde_json::Value::Number(n),
                None => {
                    return Err(meta
                        .problem(400, "Bad Request", format!("`{k}` must be a number"))
                        .field(k.into_owned(), "a number")
                        .err());
                }
            }
        } else {
            serde_json::Value::from(v.into_owned())
        };
        map.insert(k.into_owned(), val);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
        let msg = e.to_string();
        // serde names an unknown field as "unknown field `x`, expected ...".
        let field = msg
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "query".to_owned());
        meta.problem(400, "Bad Request", format!("Invalid query: {msg}"))
            .field(field, msg)
            .err()
    })
}
