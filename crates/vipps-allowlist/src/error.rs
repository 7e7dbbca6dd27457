use std::path::PathBuf;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The resolver could not be built (for example an unreadable `/etc/resolv.conf`).
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
    /// The snapshot file could not be read.
    #[error("cannot read the allowlist snapshot {path}: {source}")]
    ReadState {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot file is not a valid snapshot.
    #[error("the allowlist snapshot {path} is not valid: {source}")]
    ParseState {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Nothing is known: no usable snapshot and no name answered. The allowlist fails closed.
    #[error(
        "no address is known for any of the {} names and there is no usable snapshot: refusing to publish an \
         empty allowlist (fail closed); failures: {}{}",
        names.len(),
        if failures.is_empty() { "none".to_string() } else { failures.join("; ") },
        if rejected.is_empty() {
            String::new()
        } else {
            format!("; rejected special-purpose answers (admit them with an allowed network): {}", rejected.join(", "))
        }
    )]
    NoData {
        /// The names that were looked up.
        names: Vec<String>,
        /// `name: reason` for each name that failed.
        failures: Vec<String>,
        /// `name: address` for each answer rejected as special-purpose.
        rejected: Vec<String>,
    },
    /// The update would empty a non-empty allowlist; the previous set is kept.
    #[error("the update would empty the allowlist; keeping the previous {previous} addresses")]
    WouldBeEmpty {
        /// The size of the set that is kept.
        previous: usize,
    },
    /// The update would exceed the cap on the set size; the previous set is kept.
    #[error(
        "the update would allow {count} addresses, more than the cap of {max}; keeping the previous set"
    )]
    TooManyAddresses {
        /// The size the set would have.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// The update changes more addresses than the churn cap allows; the previous set is kept.
    #[error(
        "the update adds {added} and removes {removed} addresses, more than the churn cap of {max} per refresh; \
         keeping the previous set"
    )]
    TooMuchChurn {
        /// Addresses that would be added.
        added: usize,
        /// Addresses that would be removed.
        removed: usize,
        /// The cap on added plus removed.
        max: usize,
    },
}

impl Error {
    /// Whether this error comes from the safety rails of the state update (the previous set stays published),
    /// rather than from I/O or configuration.
    pub fn is_update_refused(&self) -> bool {
        matches!(
            self,
            Error::NoData { .. }
                | Error::WouldBeEmpty { .. }
                | Error::TooManyAddresses { .. }
                | Error::TooMuchChurn { .. }
        )
    }
}
