//! `POST /_emulator/snapshot`: the whole state as a snapshot file ([`crate::platform::snapshot`]), written to a
//! path on the emulator's machine or returned as the answer's body.

use axum::extract::State;
use axum::response::IntoResponse;
use serde::Deserialize;

use crate::platform::Shared as S;
use crate::platform::extract::OptionalJson;
use crate::platform::http::{ApiResult, RequestMeta};
use crate::platform::idempotency::internal;
use crate::platform::openapi::{JsonObject, ProblemDoc};
use crate::platform::snapshot::{self, SnapshotError};

/// The media type of a snapshot file.
const MEDIA_TYPE: &str = "application/vnd.vipps-emulator.snapshot";

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SnapshotBody {
    /// Where to write it (an absolute path on the emulator's machine); without it, the file is the answer.
    #[schema(value_type = Option<String>)]
    path: Option<std::path::PathBuf>,
}

/// `POST /_emulator/snapshot` with `{"path": "/abs/file"}`: writes the file atomically and answers `201` with a
/// summary (`path`, `bytes`, `sha256`, `rows` per table). Without a body: `200` with the file itself.
#[utoipa::path(
    post,
    path = "/_emulator/snapshot",
    tag = "machine",
    request_body(content = Option<SnapshotBody>, description = "`path`: where to write it; no body: the file is the answer"),
    responses(
        (status = 200, description = "The snapshot file itself", content_type = "application/vnd.vipps-emulator.snapshot",
            body = String),
        (status = 201, description = "Written: `path`, `bytes`, `sha256`, `rows` per table", body = JsonObject),
        (status = "4XX", description = "An invalid body or path", content_type = "application/problem+json",
            body = ProblemDoc),
    ),
)]
pub(crate) async fn take(
    State(s): State<S>,
    meta: RequestMeta,
    OptionalJson(body): OptionalJson<SnapshotBody>,
) -> ApiResult {
    let created_at = crate::platform::clock::rfc3339(s.clock.now());
    match body.path {
        Some(path) => {
            if !path.is_absolute() {
                return Err(meta
                    .problem(400, "Bad Request", "`path` must be an absolute path")
                    .field("path", "an absolute path on the emulator's machine")
                    .err());
            }
            match snapshot::export_to(s.store.as_ref(), &path, created_at).await {
                Ok(sum) => {
                    let mut v = serde_json::to_value(&sum).unwrap_or_default();
                    v["path"] = path.display().to_string().into();
                    Ok((http::StatusCode::CREATED, axum::Json(v)).into_response())
                }
                Err(SnapshotError::Io { source, .. }) => Err(meta
                    .problem(
                        400,
                        "Bad Request",
                        format!("Cannot write the snapshot to {}: {source}", path.display()),
                    )
                    .field("path", source.to_string())
                    .err()),
                Err(e) => Err(internal(&meta, &e)),
            }
        }
        None => {
            let dump = s
                .store
                .export_state()
                .await
                .map_err(|e| internal(&meta, &e))?;
            let (bytes, sum) = snapshot::encode(&dump, created_at);
            Ok((
                [
                    (http::header::CONTENT_TYPE, MEDIA_TYPE.to_owned()),
                    (
                        http::header::HeaderName::from_static("x-snapshot-sha256"),
                        sum.sha256,
                    ),
                ],
                bytes,
            )
                .into_response())
        }
    }
}
