//! `vipps allowlist watch`: the long-running guard. Refreshes by TTL, rewrites the output file and applies the
//! rules on change, checks the applied rules against the kernel between refreshes and restores them, writes a
//! status file, reloads on SIGHUP and stops cleanly on SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;
use vipps_allowlist::apply::Applier;
use vipps_allowlist::refresh::RefreshReport;
use vipps_allowlist::snapshot::Family;
use vipps_allowlist::{AllowSet, Diff, Format, Refresher, export};

use crate::allowlist::{ApplyBackend, Common, Target, refresh_error, rfc3339};
use crate::exit::{Class, classify};

/// The options of `watch`.
#[derive(Debug)]
pub struct WatchArgs {
    pub common: Common,
    pub target: Target,
    pub output: Option<PathBuf>,
    pub apply: Option<ApplyBackend>,
    pub check_interval: Duration,
    pub status_file: Option<PathBuf>,
    pub on_change: Option<String>,
    pub max_iterations: Option<u64>,
}

fn stamp() -> String {
    vipps_types::signing::format_date(SystemTime::now())
}

fn print_diff(diff: &Diff) {
    for e in &diff.added {
        println!(
            "{} allowlist: + {} ({})",
            stamp(),
            e.address,
            e.names.join(", ")
        );
    }
    for e in &diff.removed {
        println!(
            "{} allowlist: - {} ({})",
            stamp(),
            e.address,
            e.names.join(", ")
        );
    }
}

async fn run_hook(cmd: &str, file: Option<&Path>) {
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c").arg(cmd);
    if let Some(f) = file {
        c.env("VIPPS_ALLOWLIST_FILE", f);
    }
    match c.status().await {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("{} warning: --on-change command exited with {s}", stamp()),
        Err(e) => eprintln!(
            "{} warning: cannot run the --on-change command: {e}",
            stamp()
        ),
    }
}

/// What the status file says about applying.
#[derive(Debug, Default)]
struct ApplyState {
    applied: Option<Arc<AllowSet>>,
    last_applied: Option<SystemTime>,
    error: Option<String>,
    restored: u64,
}

/// Everything the status file is made of, besides the refresher.
struct Status<'a> {
    state: &'static str,
    last_refresh: Option<SystemTime>,
    last_error: Option<&'a str>,
    report: Option<&'a RefreshReport>,
    next_refresh: SystemTime,
    set: &'a AllowSet,
    backend: Option<ApplyBackend>,
    apply: &'a ApplyState,
}

fn status_json(refresher: &Refresher, policy_grace: Duration, s: &Status<'_>) -> Value {
    let snapshot = refresher.snapshot();
    let names: Vec<Value> = refresher
        .names()
        .iter()
        .map(|name| {
            let state = snapshot.names.get(name);
            let report = s
                .report
                .and_then(|r| r.names.iter().find(|n| &n.name == name));
            let family = |f: Family| {
                let fstate = state.map(|st| match f {
                    Family::A => &st.a,
                    Family::Aaaa => &st.aaaa,
                });
                let addresses: Vec<Value> = state
                    .map(|st| {
                        st.addresses
                            .iter()
                            .filter(|(ip, _)| Family::of(**ip) == f)
                            .map(|(ip, a)| {
                                let seen =
                                    SystemTime::UNIX_EPOCH + Duration::from_secs(a.last_seen);
                                let keep = policy_grace.max(Duration::from_secs(u64::from(a.ttl)));
                                json!({
                                    "address": ip,
                                    "ttl": a.ttl,
                                    "lastSeen": rfc3339(seen),
                                    "allowedUntil": rfc3339(seen + keep),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let fr = report.map(|r| r.family(f));
                json!({
                    "status": fr.map(|r| r.status),
                    "error": fstate.and_then(|x| x.last_error.clone()),
                    "ttl": fr.and_then(|r| r.ttl),
                    "lastSuccess": fstate
                        .and_then(|x| x.last_success)
                        .map(|t| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(t))),
                    "addresses": addresses,
                })
            };
            json!({
                "name": name,
                "status": report.map(|r| r.status),
                "error": state.and_then(|st| st.last_error.clone()),
                "A": family(Family::A),
                "AAAA": family(Family::Aaaa),
            })
        })
        .collect();
    json!({
        "state": s.state,
        "pid": std::process::id(),
        "updated": rfc3339(SystemTime::now()),
        "lastRefresh": {
            "at": s.last_refresh.map(rfc3339),
            "ok": s.last_error.is_none(),
            "error": s.last_error,
        },
        "nextRefresh": rfc3339(s.next_refresh),
        "addresses": s.set.len(),
        "allowed": s.set.entries(),
        "names": names,
        "apply": s.backend.map(|b| json!({
            "backend": b.backend().as_str(),
            "ok": s.apply.error.is_none() && s.apply.applied.is_some(),
            "lastApplied": s.apply.last_applied.map(rfc3339),
            "error": s.apply.error,
            "restored": s.apply.restored,
        })),
    })
}

fn write_status(path: Option<&Path>, doc: &Value) {
    if let Some(path) = path {
        let mut text = serde_json::to_vec_pretty(doc).expect("JSON serialises");
        text.push(b'\n');
        if let Err(e) = vipps_allowlist::write_atomic(path, &text) {
            eprintln!("{} warning: cannot write the status file: {e}", stamp());
        }
    }
}

/// Applies `set`, saying what happened; returns whether it worked.
async fn apply(applier: &mut Applier, set: &Arc<AllowSet>, st: &mut ApplyState, why: &str) -> bool {
    match applier.apply(set).await {
        Ok(()) => {
            println!(
                "{} allowlist: applied {} ({} addresses){why}",
                stamp(),
                applier.backend(),
                set.len()
            );
            st.applied = Some(set.clone());
            st.last_applied = Some(SystemTime::now());
            st.error = None;
            true
        }
        Err(e) => {
            eprintln!(
                "{} error: applying the {} rules failed, the previous rules stay in force and it is retried: {e}",
                stamp(),
                applier.backend()
            );
            st.error = Some(e.to_string());
            false
        }
    }
}

/// Runs `watch`.
pub async fn run(args: WatchArgs) -> anyhow::Result<()> {
    let usage = |m: &str| classify(Class::Usage, anyhow::anyhow!("{m}"));
    if args.output.is_none() && args.apply.is_none() {
        return Err(usage("give --output FILE, --apply nft|ipset, or both"));
    }
    let format = args.target.format.or(args.apply.map(|b| match b {
        ApplyBackend::Nft => Format::Nft,
        ApplyBackend::Ipset => Format::Ipset,
    }));
    let format = match (&args.output, format) {
        (Some(_), None) => return Err(usage("--format is required with --output")),
        (_, f) => f,
    };
    let mut refresher = args.common.refresher()?;
    let grace = args.common.policy().grace;
    let opts = args.target.options();
    let mut applier = args.apply.map(|b| Applier::new(b.backend(), opts.clone()));
    let mut apply_state = ApplyState::default();
    let mut on_disk = args
        .output
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut iteration = 0u64;
    let mut reload = false;
    loop {
        iteration += 1;
        let (set, last_report, last_error) = match refresher.refresh().await {
            Ok(report) => {
                print_diff(&report.diff);
                (report.set.clone(), Some(report), None)
            }
            Err(e) => {
                let current = refresher.shared().current();
                if current.is_empty() {
                    return Err(refresh_error(e));
                }
                eprintln!("{} warning: {e}", stamp());
                (current, None, Some(e.to_string()))
            }
        };
        let last_refresh = Some(SystemTime::now());
        let mut changed = false;
        if let (Some(output), Some(format)) = (&args.output, format) {
            let content = export::render(format, &set, &opts);
            if on_disk.as_deref() != Some(content.as_str()) {
                vipps_allowlist::write_atomic(output, content.as_bytes())
                    .with_context(|| format!("updating {}", output.display()))?;
                println!(
                    "{} allowlist: wrote {} ({} addresses)",
                    stamp(),
                    output.display(),
                    set.len()
                );
                on_disk = Some(content);
                changed = true;
            }
        }
        if let Some(applier) = &mut applier {
            let differs = apply_state.applied.as_deref() != Some(&*set);
            let drift = if differs || reload {
                None
            } else {
                applier.drift().await
            };
            if differs || reload || apply_state.error.is_some() || drift.is_some() {
                let why = match &drift {
                    Some(reason) => {
                        eprintln!("{} warning: {reason}; restoring them", stamp());
                        "; restored".to_owned()
                    }
                    None => String::new(),
                };
                if apply(applier, &set, &mut apply_state, &why).await {
                    if drift.is_some() {
                        apply_state.restored += 1;
                    }
                    changed |= differs;
                }
            }
        }
        reload = false;
        if changed {
            if let Some(cmd) = &args.on_change {
                run_hook(cmd, args.output.as_deref()).await;
            }
        }
        let status = match &last_report {
            Some(r) => r.status_line(),
            None => format!(
                "{} addresses (last-known-good, update refused); next refresh in {}s",
                set.len(),
                refresher.next_refresh().as_secs()
            ),
        };
        println!(
            "{} allowlist: {status}{}",
            stamp(),
            if changed { "" } else { "; unchanged" }
        );
        let next_refresh_at = Instant::now() + refresher.next_refresh();
        let next_refresh_wall = SystemTime::now() + refresher.next_refresh();
        let write = |state: &'static str, apply_state: &ApplyState| {
            write_status(
                args.status_file.as_deref(),
                &status_json(
                    &refresher,
                    grace,
                    &Status {
                        state,
                        last_refresh,
                        last_error: last_error.as_deref(),
                        report: last_report.as_ref(),
                        next_refresh: next_refresh_wall,
                        set: &set,
                        backend: args.apply,
                        apply: apply_state,
                    },
                ),
            );
        };
        write("running", &apply_state);
        if args.max_iterations.is_some_and(|m| iteration >= m) {
            write("stopped", &apply_state);
            return match &apply_state.error {
                Some(e) => Err(classify(
                    Class::Apply,
                    anyhow::anyhow!("the rules are not applied: {e}"),
                )),
                None => Ok(()),
            };
        }
        // Between refreshes: compare the applied rules with the kernel's, and wait for a signal.
        loop {
            let next_check = Instant::now() + args.check_interval;
            let check_due = applier.is_some() && next_check < next_refresh_at;
            tokio::select! {
                _ = tokio::time::sleep_until(next_refresh_at) => break,
                _ = tokio::time::sleep_until(next_check), if check_due => {
                    let Some(applier) = &mut applier else { continue };
                    let Some(reason) = applier.drift().await else { continue };
                    eprintln!("{} warning: {reason}; restoring them", stamp());
                    if apply(applier, &set, &mut apply_state, "; restored").await {
                        apply_state.restored += 1;
                    }
                    write("running", &apply_state);
                }
                _ = sighup.recv() => {
                    println!("{} allowlist: SIGHUP: refreshing and re-applying now", stamp());
                    reload = true;
                    break;
                }
                _ = sigterm.recv() => {
                    println!("{} allowlist: SIGTERM: stopping; the applied rules stay in force", stamp());
                    write("stopped", &apply_state);
                    return Ok(());
                }
                _ = tokio::signal::ctrl_c() => {
                    write("stopped", &apply_state);
                    return Ok(());
                }
            }
        }
    }
}
