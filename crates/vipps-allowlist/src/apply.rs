//! Applying the allowlist to the kernel firewall itself (nftables or ipset), and noticing when the applied
//! rules were changed or removed behind our back.
//!
//! nftables: the complete table of [`export::nft_table`](crate::export::nft_table) is validated with `nft -c`,
//! then applied with `nft -f` in one transaction (the file deletes and recreates the table, so rules and sets are
//! replaced together or not at all). ipset: the [`export::ipset`](crate::export::ipset) script fills temporary
//! sets and swaps them in with `ipset restore` (the swap is the atomic step; a failing script leaves the live
//! sets untouched).
//!
//! After each apply the live state is read back (`nft -s list table`, `ipset save`); [`Applier::drift`] compares
//! the live state with it, so a deleted table, an added element or a changed rule is found and can be restored.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncWriteExt as _;

use crate::{AllowSet, ExportOptions, export};

/// Where the rules go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An nftables `inet` table with two sets and an input chain.
    Nft,
    /// Two ipsets (`hash:ip`, IPv4 and IPv6) for iptables rules to match on.
    Ipset,
}

impl Backend {
    /// `nft` or `ipset`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Ipset => "ipset",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why applying or reading back failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The tool could not be started (not installed, not executable).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tool rejected the rules or failed (nothing was changed when `step` is `check`).
    #[error("`{command}` failed ({step}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// `check`, `apply` or `read back`.
        step: &'static str,
        /// What the tool said.
        stderr: String,
    },
}

/// Applies sets with one backend and remembers what it applied.
#[derive(Debug, Clone)]
pub struct Applier {
    backend: Backend,
    opts: ExportOptions,
    program: PathBuf,
    applied: Option<String>,
}

impl Applier {
    /// An applier that runs `nft` or `ipset` from `PATH`.
    pub fn new(backend: Backend, opts: ExportOptions) -> Self {
        Applier {
            backend,
            opts,
            program: PathBuf::from(backend.as_str()),
            applied: None,
        }
    }

    /// Runs this program instead (an absolute path, or a wrapper).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    async fn run(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        step: &'static str,
    ) -> Result<String, ApplyError> {
        let program = self.program.display().to_string();
        let mut child = tokio::process::Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes the pipe; its exit status tells why.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| ApplyError::Spawn {
                program: program.clone(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ApplyError::Failed {
                command: format!("{program} {}", args.join(" ")),
                step,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Validates and applies `set` in one transaction, then reads the live state back for [`Applier::drift`].
    /// On an error the previously applied rules stay as they were.
    pub async fn apply(&mut self, set: &AllowSet) -> Result<(), ApplyError> {
        match self.backend {
            Backend::Nft => {
                let text = export::nft_table(set, &self.opts);
                self.run(&["-c", "-f", "-"], Some(&text), "check").await?;
                self.run(&["-f", "-"], Some(&text), "apply").await?;
            }
            Backend::Ipset => {
                let text = export::ipset(set, &self.opts);
                self.run(&["restore"], Some(&text), "apply").await?;
            }
        }
        self.applied = Some(self.live().await?);
        Ok(())
    }

    /// The live state, normalised (sorted lines; nftables without counters).
    pub async fn live(&self) -> Result<String, ApplyError> {
        let text = match self.backend {
            Backend::Nft => {
                self.run(
                    &["-s", "list", "table", "inet", &self.opts.nft_table],
                    None,
                    "read back",
                )
                .await?
            }
            Backend::Ipset => {
                let mut s = self
                    .run(&["save", &self.opts.ipset_v4], None, "read back")
                    .await?;
                s.push_str(
                    &self
                        .run(&["save", &self.opts.ipset_v6], None, "read back")
                        .await?,
                );
                s
            }
        };
        Ok(normalise(&text))
    }

    /// Whether the live rules differ from what was last applied: `Some(reason)` when they were changed or removed
    /// (or nothing was applied yet), `None` when they are in step.
    pub async fn drift(&self) -> Option<String> {
        let Some(applied) = &self.applied else {
            return Some("nothing applied yet".into());
        };
        match self.live().await {
            Ok(live) if &live == applied => None,
            Ok(_) => Some(format!(
                "the {} rules were changed behind our back",
                self.backend
            )),
            Err(e) => Some(format!("the {} rules cannot be read: {e}", self.backend)),
        }
    }
}

fn normalise(text: &str) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    lines.join("\n")
}
