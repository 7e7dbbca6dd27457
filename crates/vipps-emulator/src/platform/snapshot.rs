//! Snapshot files: the whole durable state ([`super::store::dump`]) in a versioned, checksummed file, written
//! atomically and refused as a whole, before anything is loaded, when it is not one this emulator can read.
//!
//! The format (version 1) is two parts: a header line of JSON, then the state as JSON.
//!
//! ```text
//! {"format":"vipps-emulator-snapshot","version":1,"created_at":"2026-...Z","emulator":"0.1.0","length":1234,"sha256":"<hex>"}
//! {"meta":[["key","value"],...],"aggregates":[[kind,tenant,id,state,due_ms,data_base64,created_ms],...],...}
//! ```
//!
//! `length` and `sha256` are of the state part's bytes exactly as written, so truncation and corruption are told
//! apart from a file of another format or a newer version. The file holds every secret of the state (webhook
//! secrets, the token signing key, the certificate authority's key): it is created readable by its owner only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::product::Registry;
use super::store::dump::{Cell, StateDump};
use super::store::{Store, StoreError};

/// The `format` of the header.
pub(crate) const FORMAT: &str = "vipps-emulator-snapshot";
/// The newest format version this emulator reads and the one it writes.
pub(crate) const VERSION: u32 = 1;

/// Why a snapshot could not be written or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// The file could not be read or written.
    #[error("snapshot {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a snapshot (no header line, or another format).
    #[error("not an emulator snapshot: {0}")]
    NotASnapshot(String),
    /// The file was written by a newer emulator in a format this one cannot read.
    #[error(
        "the snapshot has format version {found}; this emulator reads up to version {supported} (upgrade it)"
    )]
    NewerFormat {
        /// The file's version.
        found: u32,
        /// The newest this emulator reads.
        supported: u32,
    },
    /// The state part is shorter or longer than the header says (a truncated copy, say).
    #[error(
        "the snapshot is truncated or padded: the header says {expected} bytes of state, the file has {found}"
    )]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The state part does not match the header's checksum.
    #[error("the snapshot is corrupt: its SHA-256 does not match the header")]
    Checksum,
    /// The state part does not fit the tables, or holds what this emulator cannot load.
    #[error("the snapshot's state is invalid: {0}")]
    Invalid(String),
    /// The store refused or failed the load or the read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The header line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    emulator: String,
    length: u64,
    sha256: String,
}

/// What a snapshot holds, in brief.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Rows per table.
    pub rows: std::collections::BTreeMap<String, usize>,
    /// SHA-256 of the state part (hex).
    pub sha256: String,
    /// Size of the whole file in bytes.
    pub bytes: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn summary(dump: &StateDump, sha256: String, bytes: usize) -> Summary {
    Summary {
        rows: dump
            .tables
            .iter()
            .map(|(t, r)| (t.clone(), r.len()))
            .collect(),
        sha256,
        bytes,
    }
}

/// The file's bytes for a dump taken at `created_at` (emulator time, RFC 3339).
pub(crate) fn encode(dump: &StateDump, created_at: String) -> (Vec<u8>, Summary) {
    let body = serde_json::to_vec(&dump.to_json()).unwrap_or_default();
    let sha = hex(&Sha256::digest(&body));
    let header = Header {
        format: FORMAT.into(),
        version: VERSION,
        created_at,
        emulator: env!("CARGO_PKG_VERSION").into(),
        length: body.len() as u64,
        sha256: sha.clone(),
    };
    let mut out = serde_json::to_vec(&header).unwrap_or_default();
    out.push(b'\n');
    out.extend_from_slice(&body);
    let s = summary(dump, sha, out.len());
    (out, s)
}

/// Reads a file's bytes: header, version, length and checksum first, then every row against the tables.
pub(crate) fn decode(bytes: &[u8]) -> Result<(StateDump, Summary), SnapshotError> {
    let Some(nl) = bytes.iter().position(|b| *b == b'\n') else {
        return Err(SnapshotError::NotASnapshot(
            "no header line (an empty or truncated file?)".into(),
        ));
    };
    let (head, body) = (&bytes[..nl], &bytes[nl + 1..]);
    let raw: serde_json::Value = serde_json::from_slice(head)
        .map_err(|e| SnapshotError::NotASnapshot(format!("the header line is not JSON: {e}")))?;
    if raw["format"] != FORMAT {
        return Err(SnapshotError::NotASnapshot(format!(
            "the header's `format` is {}, not \"{FORMAT}\"",
            raw["format"]
        )));
    }
    // The version before the rest of the header: a newer format may have changed it.
    let version = raw["version"]
        .as_u64()
        .ok_or_else(|| SnapshotError::NotASnapshot("the header has no numeric `version`".into()))?;
    if version > u64::from(VERSION) {
        return Err(SnapshotError::NewerFormat {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: VERSION,
        });
    }
    let header: Header = serde_json::from_value(raw)
        .map_err(|e| SnapshotError::NotASnapshot(format!("the header is incomplete: {e}")))?;
    if header.version == 0 {
        return Err(SnapshotError::NotASnapshot(
            "version 0 does not exist".into(),
        ));
    }
    if header.length != body.len() as u64 {
        return Err(SnapshotError::Truncated {
            expected: header.length,
            found: body.len() as u64,
        });
    }
    let sha = hex(&Sha256::digest(body));
    if !sha.eq_ignore_ascii_case(&header.sha256) {
        return Err(SnapshotError::Checksum);
    }
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| SnapshotError::Invalid(format!("the state is not JSON: {e}")))?;
    let dump = StateDump::from_json(&json).map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    let s = summary(&dump, sha, bytes.len());
    Ok((dump, s))
}

/// Checks what only the running emulator knows: every aggregate is of a kind one of its products stores, and
/// decodes as that product's document.
pub(crate) fn validate(dump: &StateDump, products: &Registry) -> Result<(), SnapshotError> {
    for (i, row) in dump.rows("aggregates").iter().enumerate() {
        let (Some(Cell::Text(kind)), Some(Cell::Bytes(data))) = (row.first(), row.get(5)) else {
            return Err(SnapshotError::Invalid(format!(
                "aggregates, row {i}: malformed"
            )));
        };
        let Some(owner) = products.owner(kind) else {
            return Err(SnapshotError::Invalid(format!(
                "aggregates, row {i}: kind `{kind}` is stored by no product of this emulator"
            )));
        };
        if let Some(decode) = owner.decoder(kind) {
            decode(data)
                .map_err(|e| SnapshotError::Invalid(format!("aggregates, row {i}: {e}")))?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (readable by its owner only), synced, then
/// renamed over `path`, so a reader sees the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write as _;
    let io = |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    // The rename itself is durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads the store's state and writes it to `path` atomically.
pub(crate) async fn export_to(
    store: &dyn Store,
    path: &Path,
    created_at: String,
) -> Result<Summary, SnapshotError> {
    let dump = store.export_state().await?;
    let (bytes, s) = encode(&dump, created_at);
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
        .await
        .map_err(|e| SnapshotError::Invalid(e.to_string()))??;
    Ok(s)
}

/// Reads, checks and loads a snapshot file into an empty store; nothing is loaded unless every check passes.
pub(crate) async fn import_from(
    store: &dyn Store,
    products: &Registry,
    path: &Path,
) -> Result<Summary, SnapshotError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        })?;
    let (dump, s) = decode(&bytes)?;
    validate(&dump, products)?;
    store.import_state(dump).await?;
    Ok(s)
}
