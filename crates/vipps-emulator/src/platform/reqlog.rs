//! The request record: every API request with its troubleshooting headers, queryable under
//! `GET /_emulator/requests`. Bounded: the oldest records are dropped first.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct RequestRecord {
    /// Emulator time when the request arrived (RFC 3339, UTC).
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// Path, as received.
    pub path: String,
    /// Status of the answer; for a dropped connection, the status that was never delivered.
    pub status: u16,
    /// Time spent in the emulator, in milliseconds.
    pub latency_ms: f64,
    /// `Merchant-Serial-Number`, as sent.
    pub msn: Option<String>,
    /// `Vipps-System-Name`, as sent.
    pub system_name: Option<String>,
    /// `Vipps-System-Version`, as sent.
    pub system_version: Option<String>,
    /// `Vipps-System-Plugin-Name`, as sent.
    pub plugin_name: Option<String>,
    /// `Vipps-System-Plugin-Version`, as sent.
    pub plugin_version: Option<String>,
    /// `Idempotency-Key`, as sent.
    pub idempotency_key: Option<String>,
    /// The trace id of the request (also in problem bodies).
    pub trace_id: String,
    /// `true` when the answer was an idempotent replay.
    pub replayed: bool,
    /// The injected fault, if one applied (`status`, `delay`, `drop_after_commit`).
    pub fault: Option<String>,
    /// `true` when the connection was dropped without an answer.
    pub dropped: bool,
    /// For a refused request (4xx, 5xx), the problem body it was answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<serde_json::Value>,
}

/// A record as kept in memory: cheap to make on the request path (shared strings, header values by reference
/// count, time as a number); turned into a [`RequestRecord`] when queried.
#[derive(Debug, Clone)]
pub(crate) struct RawRecord {
    /// Emulator time (ms).
    pub time_ms: i64,
    /// Method.
    pub method: http::Method,
    /// Path.
    pub path: std::sync::Arc<str>,
    /// Status.
    pub status: u16,
    /// Latency (ms).
    pub latency_ms: f64,
    /// MSN, system name, version, plugin name, plugin version, idempotency key, as sent.
    pub headers: [Option<Box<str>>; 6],
    /// Trace id.
    pub trace_id: std::sync::Arc<str>,
    /// Replayed.
    pub replayed: bool,
    /// Injected fault.
    pub fault: Option<&'static str>,
    /// Dropped connection.
    pub dropped: bool,
    /// The body of an error answer (a problem), as sent.
    pub problem: Option<bytes::Bytes>,
}

impl RawRecord {
    /// The queryable form.
    pub(crate) fn to_record(&self) -> RequestRecord {
        let h = |i: usize| {
            self.headers[i]
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        RequestRecord {
            time: crate::platform::clock::rfc3339(time),
            method: self.method.to_string(),
            path: self.path.to_string(),
            status: self.status,
            latency_ms: self.latency_ms,
            msn: h(0),
            system_name: h(1),
            system_version: h(2),
            plugin_name: h(3),
            plugin_version: h(4),
            idempotency_key: h(5),
            trace_id: self.trace_id.to_string(),
            replayed: self.replayed,
            fault: self.fault.map(str::to_owned),
            dropped: self.dropped,
            problem: self.problem.as_ref().map(|b| {
                serde_json::from_slice(b)
                    .unwrap_or_else(|_| serde_json::Value::from(String::from_utf8_lossy(b)))
            }),
        }
    }
}

/// Filters for [`RequestLog::query`].
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RequestFilter {
    /// Only this MSN.
    pub msn: Option<String>,
    /// Only this `Vipps-System-Name`.
    pub system_name: Option<String>,
    /// Only this `Vipps-System-Plugin-Name`.
    pub plugin_name: Option<String>,
    /// Only paths containing this.
    pub path_contains: Option<String>,
    /// Only this status.
    pub status: Option<u16>,
    /// Only this method.
    pub method: Option<String>,
    /// Only this exact path.
    pub path: Option<String>,
    /// Only this idempotency key.
    pub idempotency_key: Option<String>,
    /// Only this trace id.
    pub trace_id: Option<String>,
    /// At most this many (newest first); default 100.
    pub limit: Option<usize>,
}

/// The bounded record.
#[derive(Debug)]
pub(crate) struct RequestLog {
    records: Mutex<VecDeque<RawRecord>>,
    capacity: usize,
}

impl RequestLog {
    /// A record keeping at most `capacity` requests.
    pub(crate) fn new(capacity: usize) -> Self {
        RequestLog {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity: capacity.max(1),
        }
    }

    /// Adds a record.
    pub(crate) fn push(&self, r: RawRecord) {
        let mut q = self.records.lock();
        if q.len() >= self.capacity {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Matching records, newest first. Filtered on the stored form, so only the matches are converted.
    pub(crate) fn query(&self, f: &RequestFilter) -> Vec<RequestRecord> {
        let limit = f.limit.unwrap_or(100);
        let header = |r: &RawRecord, i: usize, want: &Option<String>| {
            want.as_ref()
                .is_none_or(|w| r.headers[i].as_deref() == Some(w.as_str()))
        };
        let guard = self.records.lock();
        guard
            .iter()
            .rev()
            .filter(|r| {
                header(r, 0, &f.msn)
                    && header(r, 1, &f.system_name)
                    && header(r, 3, &f.plugin_name)
                    && header(r, 5, &f.idempotency_key)
                    && f.status.is_none_or(|s| s == r.status)
                    && f.method
                        .as_ref()
                        .is_none_or(|m| m.eq_ignore_ascii_case(r.method.as_str()))
                    && f.path.as_ref().is_none_or(|p| **p == *r.path)
                    && f.path_contains
                        .as_ref()
                        .is_none_or(|p| r.path.contains(p.as_str()))
                    && f.trace_id.as_ref().is_none_or(|t| **t == *r.trace_id)
            })
            .take(limit)
            .map(RawRecord::to_record)
            .collect()
    }

    /// Number of records held.
    pub(crate) fn len(&self) -> usize {
        self.records.lock().len()
    }
}
