//! The pure state update: per-name last-known-good, grace periods, safety rails and the persisted snapshot.
//!
//! [`apply`] takes the previous [`Snapshot`], the answers of one refresh and the current time, and returns the
//! next snapshot with the [`AllowSet`] to publish, or an [`Error`] when publishing would be unsafe (then the
//! previous set stays in force). It reads no clock and does no I/O, so every rule is testable without sleeping.
//!
//! Rules, per name:
//! - an answer refreshes `last_seen` of each admitted address; addresses not in the answer stay until
//!   `last_seen + max(grace, ttl)`, so round-robin subsets never flap;
//! - NXDOMAIN or an empty answer adds nothing, and old addresses expire by the same rule;
//! - a failure (timeout, SERVFAIL, refused) keeps the name's addresses as they are (last-known-good) and never
//!   touches other names;
//! - A and AAAA are separate facts: when one family answers and the other fails, the answering family is applied
//!   as above, and the failing family keeps its last-known-good addresses within their grace period
//!   (`last_seen + max(grace, ttl)`); the failure is reported per family and blocks nothing;
//! - answers in special-purpose ranges are dropped unless the policy admits them; addresses are canonical.
//!
//! Then, for the whole set: never empty, at most `max_addresses`, at most `max_churn` added plus removed
//! addresses per refresh (a first fill from nothing is not churn).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::addr::{canonical, is_special_purpose};
use crate::{AllowSet, Diff, Error};

/// Tunables of the state update and the refresh schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long an address stays allowed after it was last seen in an answer (at least its TTL).
    pub grace: Duration,
    /// The shortest interval between refreshes, whatever the TTL.
    pub min_ttl: Duration,
    /// The longest interval between refreshes, whatever the TTL.
    pub max_ttl: Duration,
    /// The cap on the size of the whole set.
    pub max_addresses: usize,
    /// The cap on the addresses kept for one name (the most recently seen win).
    pub max_per_name: usize,
    /// The cap on added plus removed addresses in one refresh.
    pub max_churn: usize,
    /// Admit answers in every special-purpose range (tests only).
    pub allow_private: bool,
    /// Admit answers in these networks even when they are special-purpose (for example `127.0.0.0/8` in tests).
    pub allow_nets: Vec<IpNet>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace: Duration::from_secs(3600),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(300),
            max_addresses: 256,
            max_per_name: 32,
            max_churn: 64,
            allow_private: false,
            allow_nets: Vec::new(),
        }
    }
}

impl Policy {
    /// Whether an answer may enter the set.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow_private
            || !is_special_purpose(ip)
            || self.allow_nets.iter().any(|n| n.contains(&ip))
    }

    /// The delay before the next refresh for a TTL in seconds, clamped to `[min_ttl, max_ttl]`.
    pub fn refresh_delay(&self, ttl: Option<u32>) -> Duration {
        match ttl {
            Some(t) => Duration::from_secs(u64::from(t))
                .clamp(self.min_ttl, self.max_ttl.max(self.min_ttl)),
            None => self.min_ttl,
        }
    }
}

/// What one name's lookup produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameAnswer {
    /// The A and AAAA answers with their TTLs in seconds (empty when the name has no address records).
    Addresses(Vec<(IpAddr, u32)>),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The lookup failed (timeout, SERVFAIL, refused, ...); the name keeps its last-known-good addresses.
    Failed(String),
    /// A and AAAA fared differently (typically one answered and the other failed); each is applied on its own.
    Families {
        /// The `A` lookup.
        a: FamilyAnswer,
        /// The `AAAA` lookup.
        aaaa: FamilyAnswer,
    },
}

/// What one address family's lookup (`A` or `AAAA`) produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FamilyAnswer {
    /// The records with their TTLs in seconds (never empty; an empty answer is [`FamilyAnswer::NoData`]).
    Records(Vec<(IpAddr, u32)>),
    /// The name exists but has no records of this type.
    NoData,
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The lookup failed (timeout, SERVFAIL, refused, ...).
    Failed(String),
}

impl FamilyAnswer {
    fn from_records(list: Vec<(IpAddr, u32)>) -> Self {
        if list.is_empty() {
            FamilyAnswer::NoData
        } else {
            FamilyAnswer::Records(list)
        }
    }
}

impl NameAnswer {
    /// The answer as one `A` and one `AAAA` answer.
    pub fn split(self) -> (FamilyAnswer, FamilyAnswer) {
        match self {
            NameAnswer::Addresses(list) => {
                let (v4, v6): (Vec<_>, Vec<_>) = list
                    .into_iter()
                    .partition(|(ip, _)| canonical(*ip).is_ipv4());
                (
                    FamilyAnswer::from_records(v4),
                    FamilyAnswer::from_records(v6),
                )
            }
            NameAnswer::NoSuchName => (FamilyAnswer::NoSuchName, FamilyAnswer::NoSuchName),
            NameAnswer::Failed(e) => (FamilyAnswer::Failed(e.clone()), FamilyAnswer::Failed(e)),
            NameAnswer::Families { a, aaaa } => (a, aaaa),
        }
    }
}

/// An address family, as a record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4, `A` records.
    #[serde(rename = "A")]
    A,
    /// IPv6, `AAAA` records.
    #[serde(rename = "AAAA")]
    Aaaa,
}

impl Family {
    /// `A` or `AAAA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::A => "A",
            Family::Aaaa => "AAAA",
        }
    }

    /// The family of a (canonical) address.
    pub fn of(ip: IpAddr) -> Family {
        if canonical(ip).is_ipv4() {
            Family::A
        } else {
            Family::Aaaa
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is remembered about one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressState {
    /// When it was last seen in an answer, in seconds since the Unix epoch.
    pub last_seen: u64,
    /// Its TTL in that answer, in seconds.
    pub ttl: u32,
}

/// What is remembered about one name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameState {
    /// The addresses currently allowed for the name.
    pub addresses: BTreeMap<IpAddr, AddressState>,
    /// When the name last answered (addresses, no data or NXDOMAIN), in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// The last failure, if the last lookup failed (of either family, `AAAA: refused` when only one failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The `A` lookups.
    #[serde(default, skip_serializing_if = "FamilyState::is_empty")]
    pub a: FamilyState,
    /// The `AAAA` lookups.
    #[serde(default, skip_serializing_if = "FamilyState::is_empty")]
    pub aaaa: FamilyState,
}

/// What is remembered about one family's lookups of one name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyState {
    /// When this family last answered (records, no data or NXDOMAIN), in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
    /// The last failure, if this family's last lookup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl FamilyState {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.last_success.is_none() && self.last_error.is_none()
    }
}

/// The persisted state: every name with its addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The names, sorted.
    pub names: BTreeMap<String, NameState>,
}

/// How one name fared in a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NameReport {
    /// The hostname.
    pub name: String,
    /// `ok`, `nxdomain`, `nodata`, `partial` (one family failed) or `failed` (both failed).
    pub status: &'static str,
    /// The failure, when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The addresses in this answer (after filtering), sorted.
    pub answered: Vec<IpAddr>,
    /// The addresses allowed for the name after the update (answered plus those in their grace period, or the
    /// last-known-good ones after a failure), sorted.
    pub allowed: Vec<IpAddr>,
    /// Answers dropped because they are in special-purpose ranges.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<IpAddr>,
    /// The smallest TTL in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// How the `A` lookup fared.
    #[serde(rename = "A")]
    pub a: FamilyReport,
    /// How the `AAAA` lookup fared.
    #[serde(rename = "AAAA")]
    pub aaaa: FamilyReport,
}

/// How one family's lookup of one name fared in a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyReport {
    /// `ok`, `nodata`, `nxdomain` or `failed`.
    pub status: &'static str,
    /// The failure, when `status` is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The smallest TTL in the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

impl NameReport {
    /// The report of one family.
    pub fn family(&self, family: Family) -> &FamilyReport {
        match family {
            Family::A => &self.a,
            Family::Aaaa => &self.aaaa,
        }
    }

    /// The families whose lookup failed.
    pub fn failed_families(&self) -> Vec<Family> {
        [Family::A, Family::Aaaa]
            .into_iter()
            .filter(|f| self.family(*f).status == "failed")
            .collect()
    }
}

/// The result of a successful [`apply`].
#[derive(Debug, Clone)]
pub struct Update {
    /// The next snapshot (to persist).
    pub snapshot: Snapshot,
    /// The set to publish.
    pub set: AllowSet,
    /// What changed against the previous snapshot's set.
    pub diff: Diff,
    /// Per-name results, in the order of the configured names.
    pub names: Vec<NameReport>,
    /// When to refresh next: the smallest TTL seen, clamped.
    pub next_refresh: Duration,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Snapshot {
    /// The set this snapshot allows for `names` under `policy` (addresses the policy no longer admits are left
    /// out; nothing expires here).
    pub fn allow_set(&self, names: &[String], policy: &Policy) -> AllowSet {
        let mut map: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
        for name in names {
            if let Some(state) = self.names.get(name) {
                for ip in state.addresses.keys() {
                    let ip = canonical(*ip);
                    if policy.admits(ip) {
                        map.entry(ip).or_default().push(name.clone());
                    }
                }
            }
        }
        AllowSet::from_map(map)
    }

    /// Loads a snapshot; `Ok(None)` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<Snapshot>, Error> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::ReadState {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let snap: Snapshot =
            serde_json::from_slice(&bytes).map_err(|source| Error::ParseState {
                path: path.to_owned(),
                source,
            })?;
        Ok(Some(snap))
    }

    /// Saves the snapshot atomically as JSON.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut json = serde_json::to_vec_pretty(self).expect("a snapshot serialises");
        json.push(b'\n');
        crate::write_atomic(path, &json)
    }
}

/// Applies one refresh's answers to the previous snapshot at time `now`. See the [module docs](self) for the
/// rules. Names in `previous` that are not in `names` are dropped; names without an answer in `answers` are
/// treated as failed (kept as they are).
pub fn apply(
    previous: &Snapshot,
    names: &[String],
    answers: Vec<(String, NameAnswer)>,
    policy: &Policy,
    now: SystemTime,
) -> Result<Update, Error> {
    let now_s = unix(now);
    let mut answers: BTreeMap<String, NameAnswer> = answers.into_iter().collect();
    let mut next = Snapshot::default();
    let mut reports = Vec::with_capacity(names.len());
    let mut min_ttl: Option<u32> = None;
    let mut failures = Vec::new();
    let mut any_failed = false;

    for name in names {
        let mut state = previous.names.get(name).cloned().unwrap_or_default();
        // Canonicalise and re-check what was loaded (the policy or the file may have changed).
        state.addresses = state
            .addresses
            .into_iter()
            .map(|(ip, st)| (canonical(ip), st))
            .filter(|(ip, _)| policy.admits(*ip))
            .collect();
        let answer = answers
            .remove(name)
            .unwrap_or_else(|| NameAnswer::Failed("no answer".into()));
        let (a, aaaa) = answer.split();
        let mut report = NameReport {
            name: name.clone(),
            status: "ok",
            error: None,
            answered: Vec::new(),
            allowed: Vec::new(),
            rejected: Vec::new(),
            ttl: None,
            a: FamilyReport {
                status: "ok",
                error: None,
                ttl: None,
            },
            aaaa: FamilyReport {
                status: "ok",
                error: None,
                ttl: None,
            },
        };
        let mut statuses = Vec::with_capacity(2);
        let mut errors = Vec::new();
        for (family, fa) in [(Family::A, a), (Family::Aaaa, aaaa)] {
            let (fstate, freport) = match family {
                Family::A => (&mut state.a, &mut report.a),
                Family::Aaaa => (&mut state.aaaa, &mut report.aaaa),
            };
            let list = match fa {
                FamilyAnswer::Failed(e) => {
                    freport.status = "failed";
                    freport.error = Some(e.clone());
                    fstate.last_error = Some(e.clone());
                    errors.push((family, e));
                    statuses.push("failed");
                    any_failed = true;
                    // Last-known-good of this family, but only within its grace period when the other family
                    // answers (a name that answers nothing keeps everything: nothing is known about it).
                    continue;
                }
                FamilyAnswer::NoData => {
                    freport.status = "nodata";
                    Vec::new()
                }
                FamilyAnswer::NoSuchName => {
                    freport.status = "nxdomain";
                    Vec::new()
                }
                FamilyAnswer::Records(list) => list,
            };
            statuses.push(freport.status);
            fstate.last_success = Some(now_s);
            fstate.last_error = None;
            state.last_success = Some(now_s);
            for (ip, ttl) in list {
                let ip = canonical(ip);
                if !policy.admits(ip) {
                    tracing::warn!(%name, %ip, "rejected an answer in a special-purpose range");
                    report.rejected.push(ip);
                    continue;
                }
                report.answered.push(ip);
                freport.ttl = Some(freport.ttl.map_or(ttl, |t: u32| t.min(ttl)));
                state.addresses.insert(
                    ip,
                    AddressState {
                        last_seen: now_s,
                        ttl,
                    },
                );
            }
            if let Some(t) = freport.ttl {
                report.ttl = Some(report.ttl.map_or(t, |m: u32| m.min(t)));
                min_ttl = Some(min_ttl.map_or(t, |m| m.min(t)));
            }
        }
        // Expire what has not been seen for longer than max(grace, ttl): in every family that answered, and in a
        // failing family when the other one answered.
        let both_failed = errors.len() == 2;
        if !both_failed {
            state.addresses.retain(|ip, st| {
                let keep_for = policy.grace.as_secs().max(u64::from(st.ttl));
                let keep = now_s <= st.last_seen.saturating_add(keep_for);
                if !keep {
                    tracing::info!(%name, %ip, "address expired after its grace period");
                }
                keep
            });
        }
        report.status = match (both_failed, errors.is_empty()) {
            (true, _) => "failed",
            (false, false) => "partial",
            _ if !report.answered.is_empty() || statuses.contains(&"ok") => "ok",
            _ if statuses.iter().all(|s| *s == "nxdomain") => "nxdomain",
            _ => "nodata",
        };
        if !errors.is_empty() {
            let e = if both_failed && errors[0].1 == errors[1].1 {
                errors[0].1.clone()
            } else {
                errors
                    .iter()
                    .map(|(f, e)| format!("{f}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            failures.push(format!("{name}: {e}"));
            report.error = Some(e.clone());
            state.last_error = Some(e);
        } else {
            state.last_error = None;
        }
        if state.addresses.len() > policy.max_per_name {
            let mut by_age: Vec<(IpAddr, AddressState)> =
                state.addresses.iter().map(|(k, v)| (*k, *v)).collect();
            by_age.sort_by(|a, b| b.1.last_seen.cmp(&a.1.last_seen).then(a.0.cmp(&b.0)));
            tracing::warn!(
                %name,
                count = by_age.len(),
                max = policy.max_per_name,
                "too many addresses for one name; keeping the most recently seen"
            );
            by_age.truncate(policy.max_per_name);
            state.addresses = by_age.into_iter().collect();
        }
        report.answered.sort();
        report.answered.dedup();
        report.rejected.sort();
        report.rejected.dedup();
        report.allowed = state.addresses.keys().copied().collect();
        reports.push(report);
        next.names.insert(name.clone(), state);
    }

    let old_set = previous.allow_set(names, policy);
    let set = next.allow_set(names, policy);
    if set.is_empty() {
        if old_set.is_empty() {
            return Err(Error::NoData {
                names: names.to_vec(),
                failures,
                rejected: reports
                    .iter()
                    .flat_map(|r| r.rejected.iter().map(move |ip| format!("{}: {ip}", r.name)))
                    .collect(),
            });
        }
        return Err(Error::WouldBeEmpty {
            previous: old_set.len(),
        });
    }
    if set.len() > policy.max_addresses {
        return Err(Error::TooManyAddresses {
            count: set.len(),
            max: policy.max_addresses,
        });
    }
    let diff = set.diff_from(&old_set);
    if !old_set.is_empty() && diff.churn() > policy.max_churn {
        return Err(Error::TooMuchChurn {
            added: diff.added.len(),
            removed: diff.removed.len(),
            max: policy.max_churn,
        });
    }
    Ok(Update {
        snapshot: next,
        set,
        diff,
        names: reports,
        // A failed lookup is retried soon; the last-known-good covers the gap.
        next_refresh: if any_failed {
            policy.min_ttl.min(policy.refresh_delay(min_ttl))
        } else {
            policy.refresh_delay(min_ttl)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }
    fn names() -> Vec<String> {
        vec!["a.vipps.no".into(), "b.vipps.no".into()]
    }
    fn addrs(list: &[&str], ttl: u32) -> NameAnswer {
        NameAnswer::Addresses(list.iter().map(|s| (ip(s), ttl)).collect())
    }
    fn policy() -> Policy {
        Policy {
            grace: Duration::from_secs(600),
            ..Policy::default()
        }
    }

    #[test]
    fn round_robin_subsets_do_not_flap_and_expire_after_grace() {
        let p = policy();
        let u1 = apply(
            &Snapshot::default(),
            &names(),
            vec![
                ("a.vipps.no".into(), addrs(&["8.8.8.1", "8.8.8.2"], 60)),
                ("b.vipps.no".into(), addrs(&["8.8.4.4"], 120)),
            ],
            &p,
            at(0),
        )
        .unwrap();
        assert_eq!(u1.set.len(), 3);
        assert_eq!(u1.next_refresh, Duration::from_secs(60));
        // A subset: 8.8.8.2 stays within the grace period.
        let u2 = apply(
            &u1.snapshot,
            &names(),
            vec![
                ("a.vipps.no".into(), addrs(&["8.8.8.1"], 60)),
                ("b.vipps.no".into(), addrs(&["8.8.4.4"], 120)),
            ],
            &p,
            at(300),
        )
        .unwrap();
        assert!(u2.diff.is_empty());
        assert!(u2.set.contains(ip("8.8.8.2")));
        // After the grace period it is gone.
        let u3 = apply(
            &u2.snapshot,
            &names(),
            vec![
                ("a.vipps.no".into(), addrs(&["8.8.8.1"], 60)),
                ("b.vipps.no".into(), addrs(&["8.8.4.4"], 120)),
            ],
            &p,
            at(601),
        )
        .unwrap();
        assert!(!u3.set.contains(ip("8.8.8.2")));
        assert_eq!(u3.diff.removed[0].address, ip("8.8.8.2"));
        assert_eq!(u3.diff.removed[0].names, ["a.vipps.no"]);
    }

    #[test]
    fn a_failing_name_keeps_its_last_known_good_and_never_removes_others() {
        let p = policy();
        let u1 = apply(
            &Snapshot::default(),
            &names(),
            vec![
                ("a.vipps.no".into(), addrs(&["8.8.8.1"], 60)),
                ("b.vipps.no".into(), addrs(&["8.8.4.4"], 60)),
            ],
            &p,
            at(0),
        )
        .unwrap();
        // Long after the grace period, a fails: its address is kept; b answers and keeps its own.
        let u2 = apply(
            &u1.snapshot,
            &names(),
            vec![
                ("a.vipps.no".into(), NameAnswer::Failed("timed out".into())),
                ("b.vipps.no".into(), addrs(&["8.8.4.4"], 60)),
            ],
            &p,
            at(10_000),
        )
        .unwrap();
        assert!(u2.set.contains(ip("8.8.8.1")));
        assert!(u2.set.contains(ip("8.8.4.4")));
        assert_eq!(u2.names[0].status, "failed");
        assert_eq!(
            u2.snapshot.names["a.vipps.no"].last_error.as_deref(),
            Some("timed out")
        );
        // Everything fails: the last-known-good set is still published.
        let u3 = apply(&u2.snapshot, &names(), vec![], &p, at(20_000)).unwrap();
        assert_eq!(u3.set, u2.set);
        assert_eq!(u3.next_refresh, p.min_ttl);
    }

    fn fam(a: FamilyAnswer, aaaa: FamilyAnswer) -> NameAnswer {
        NameAnswer::Families { a, aaaa }
    }
    fn recs(list: &[&str], ttl: u32) -> FamilyAnswer {
        FamilyAnswer::Records(list.iter().map(|s| (ip(s), ttl)).collect())
    }
    fn failed(e: &str) -> FamilyAnswer {
        FamilyAnswer::Failed(e.into())
    }

    #[test]
    fn a_and_aaaa_are_separate_facts() {
        let p = policy();
        // One row per case: a first start where only one family answers publishes that family.
        // (case, answer, published addresses, name status, [A status, AAAA status])
        type Case = (
            &'static str,
            NameAnswer,
            &'static [&'static str],
            &'static str,
            [&'static str; 2],
        );
        let cases: [Case; 4] = [
            (
                "A answers, AAAA refused",
                fam(recs(&["8.8.8.1"], 60), failed("refused")),
                &["8.8.8.1"],
                "partial",
                ["ok", "failed"],
            ),
            (
                "AAAA answers, A SERVFAIL",
                fam(failed("servfail"), recs(&["2a01:4f8::1"], 60)),
                &["2a01:4f8::1"],
                "partial",
                ["failed", "ok"],
            ),
            (
                "A answers, AAAA times out",
                fam(recs(&["8.8.8.1"], 60), failed("timed out")),
                &["8.8.8.1"],
                "partial",
                ["ok", "failed"],
            ),
            (
                "A answers, AAAA no data",
                fam(recs(&["8.8.8.1"], 60), FamilyAnswer::NoData),
                &["8.8.8.1"],
                "ok",
                ["ok", "nodata"],
            ),
        ];
        for (case, answer, expected, status, fams) in cases {
            let u = apply(
                &Snapshot::default(),
                &names(),
                vec![("a.vipps.no".into(), answer)],
                &p,
                at(0),
            )
            .unwrap_or_else(|e| panic!("{case}: {e}"));
            let got: Vec<IpAddr> = u.set.entries().iter().map(|e| e.address).collect();
            let want: Vec<IpAddr> = expected.iter().map(|s| ip(s)).collect();
            assert_eq!(got, want, "{case}");
            assert_eq!(u.names[0].status, status, "{case}");
            assert_eq!(
                [u.names[0].a.status, u.names[0].aaaa.status],
                fams,
                "{case}"
            );
            if status == "partial" {
                assert_eq!(
                    u.next_refresh, p.min_ttl,
                    "{case}: a failure is retried soon"
                );
                assert!(
                    u.names[0].error.as_deref().unwrap().contains(": "),
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn a_failing_family_keeps_its_last_known_good_within_the_grace_period() {
        let p = policy();
        let both = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&["8.8.8.1", "2a01:4f8::1"], 60))],
            &p,
            at(0),
        )
        .unwrap();
        assert_eq!(both.set.len(), 2);
        // AAAA refused, A moved: the new IPv4 is added, the IPv6 kept (last-known-good), the failure reported.
        let u = apply(
            &both.snapshot,
            &names(),
            vec![(
                "a.vipps.no".into(),
                fam(recs(&["8.8.8.2"], 60), failed("refused")),
            )],
            &p,
            at(100),
        )
        .unwrap();
        assert!(u.set.contains(ip("2a01:4f8::1")));
        assert!(u.set.contains(ip("8.8.8.2")));
        assert!(u.set.contains(ip("8.8.8.1")), "IPv4 grace");
        assert_eq!(u.names[0].error.as_deref(), Some("AAAA: refused"));
        let st = &u.snapshot.names["a.vipps.no"];
        assert_eq!(st.aaaa.last_error.as_deref(), Some("refused"));
        assert_eq!(st.a.last_success, Some(1_700_000_100));
        assert_eq!(st.aaaa.last_success, Some(1_700_000_000));
        // The same the other way round: A fails, AAAA answers; the IPv4 addresses stay.
        let v = apply(
            &u.snapshot,
            &names(),
            vec![(
                "a.vipps.no".into(),
                fam(failed("timed out"), recs(&["2a01:4f8::1"], 60)),
            )],
            &p,
            at(200),
        )
        .unwrap();
        assert!(v.set.contains(ip("8.8.8.1")) && v.set.contains(ip("8.8.8.2")));
        assert!(v.diff.is_empty());
        assert_eq!(v.names[0].error.as_deref(), Some("A: timed out"));
        // Past the grace period with AAAA still refused and A answering: the stale IPv6 expires.
        let w = apply(
            &v.snapshot,
            &names(),
            vec![(
                "a.vipps.no".into(),
                fam(recs(&["8.8.8.2"], 60), failed("refused")),
            )],
            &p,
            at(2_000),
        )
        .unwrap();
        assert_eq!(
            w.set
                .entries()
                .iter()
                .map(|e| e.address)
                .collect::<Vec<_>>(),
            [ip("8.8.8.2")]
        );
        // Both failing is a failed name: everything kept, whatever the age.
        let x = apply(
            &w.snapshot,
            &names(),
            vec![(
                "a.vipps.no".into(),
                fam(failed("refused"), failed("refused")),
            )],
            &p,
            at(90_000),
        )
        .unwrap();
        assert_eq!(x.set, w.set);
        assert_eq!(x.names[0].status, "failed");
        assert_eq!(x.names[0].error.as_deref(), Some("refused"));
    }

    #[test]
    fn never_empty_and_fail_closed_from_nothing() {
        let p = policy();
        let err = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), NameAnswer::Failed("refused".into()))],
            &p,
            at(0),
        )
        .unwrap_err();
        assert!(matches!(err, Error::NoData { .. }));
        assert!(err.to_string().contains("fail closed"), "{err}");
        assert!(err.to_string().contains("a.vipps.no: refused"), "{err}");

        let u1 = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&["8.8.8.1"], 60))],
            &p,
            at(0),
        )
        .unwrap();
        // NXDOMAIN everywhere, after the grace period: would be empty, refused.
        let err = apply(
            &u1.snapshot,
            &names(),
            vec![
                ("a.vipps.no".into(), NameAnswer::NoSuchName),
                ("b.vipps.no".into(), NameAnswer::NoSuchName),
            ],
            &p,
            at(5_000),
        )
        .unwrap_err();
        assert!(matches!(err, Error::WouldBeEmpty { previous: 1 }));
    }

    #[test]
    fn special_purpose_answers_are_rejected_unless_allowed_and_mapped_addresses_are_canonical() {
        let mut p = policy();
        let u = apply(
            &Snapshot::default(),
            &names(),
            vec![(
                "a.vipps.no".into(),
                addrs(&["10.0.0.5", "127.0.0.11", "::ffff:8.8.8.8", "fd00::1"], 60),
            )],
            &p,
            at(0),
        )
        .unwrap();
        assert_eq!(u.set.len(), 1);
        assert_eq!(u.set.entries()[0].address, ip("8.8.8.8"));
        assert_eq!(u.names[0].rejected.len(), 3);

        p.allow_nets = vec!["127.0.0.0/8".parse().unwrap()];
        let u = apply(
            &Snapshot::default(),
            &names(),
            vec![(
                "a.vipps.no".into(),
                addrs(&["10.0.0.5", "::ffff:127.0.0.11"], 60),
            )],
            &p,
            at(0),
        )
        .unwrap();
        assert_eq!(u.set.entries()[0].address, ip("127.0.0.11"));
        assert_eq!(u.set.len(), 1);
        // A snapshot with a 127 address loaded under a stricter policy does not allow it.
        let strict = policy();
        assert!(u.snapshot.allow_set(&names(), &strict).is_empty());
    }

    #[test]
    fn caps_on_size_per_name_and_churn() {
        let mut p = policy();
        p.max_addresses = 3;
        let many: Vec<String> = (1..=4).map(|i| format!("8.8.8.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let err = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&many, 60))],
            &p,
            at(0),
        )
        .unwrap_err();
        assert!(matches!(err, Error::TooManyAddresses { count: 4, max: 3 }));

        let mut p = policy();
        p.max_per_name = 2;
        let u = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&many, 60))],
            &p,
            at(0),
        )
        .unwrap();
        assert_eq!(u.set.len(), 2);

        let mut p = policy();
        p.max_churn = 2;
        // A first fill is not churn.
        let u1 = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&many, 60))],
            &p,
            at(0),
        )
        .unwrap();
        let err = apply(
            &u1.snapshot,
            &names(),
            vec![(
                "b.vipps.no".into(),
                addrs(&["9.9.9.1", "9.9.9.2", "9.9.9.3"], 60),
            )],
            &p,
            at(10),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::TooMuchChurn {
                added: 3,
                removed: 0,
                max: 2
            }
        ));
    }

    #[test]
    fn ttl_is_clamped_and_snapshot_round_trips() {
        let p = policy();
        assert_eq!(p.refresh_delay(Some(1)), p.min_ttl);
        assert_eq!(p.refresh_delay(Some(100_000)), p.max_ttl);
        assert_eq!(p.refresh_delay(Some(120)), Duration::from_secs(120));
        let u = apply(
            &Snapshot::default(),
            &names(),
            vec![("a.vipps.no".into(), addrs(&["8.8.8.1", "2a01:4f8::1"], 60))],
            &p,
            at(0),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(Snapshot::load(&path).unwrap(), None);
        u.snapshot.save(&path).unwrap();
        assert_eq!(Snapshot::load(&path).unwrap(), Some(u.snapshot.clone()));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Snapshot::load(&path),
            Err(Error::ParseState { .. })
        ));
    }
}
