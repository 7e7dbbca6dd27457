//! The nftables artefacts are checked by `nft -c` (no change is applied), where nft is installed and usable.

#![allow(clippy::print_stderr)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use vipps_allowlist::export::{nft_table, nft_update};
use vipps_allowlist::{AllowSet, ExportOptions};

/// Runs `nft -c -f -` on `text`, in a private user+net namespace when possible, else in the current one
/// (needs CAP_NET_ADMIN; `-c` applies nothing).
fn nft_check(prefix: &[&str], text: &str) -> Result<(), String> {
    let (bin, args): (&str, Vec<&str>) = match prefix.split_first() {
        Some((b, rest)) => (
            b,
            rest.iter()
                .copied()
                .chain(["nft", "-c", "-f", "-"])
                .collect(),
        ),
        None => ("nft", vec!["-c", "-f", "-"]),
    };
    let mut child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// How to run nft here, or `None` with the reason printed.
fn usable_nft() -> Option<Vec<&'static str>> {
    let installed = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if !installed {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("nft is not installed, and CI must run this test (apt-get install -y nftables)");
        }
        eprintln!("SKIPPED: nft is not installed (apt-get install -y nftables)");
        return None;
    }
    let probe = "table inet vipps_probe {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n";
    for prefix in [vec!["unshare", "-rn"], vec![]] {
        if nft_check(&prefix, probe).is_ok() {
            return Some(prefix);
        }
    }
    eprintln!(
        "SKIPPED: nft is installed but `nft -c` is not usable here (needs CAP_NET_ADMIN or user namespaces)"
    );
    None
}

fn sample() -> AllowSet {
    AllowSet::from_pairs([
        ("104.45.17.199".parse().unwrap(), "callback-1.vipps.no"),
        ("51.105.122.48".parse().unwrap(), "callback-dr-1.vipps.no"),
        ("51.105.122.48".parse().unwrap(), "callback-2.vipps.no"),
        (
            "::ffff:51.105.122.49".parse().unwrap(),
            "callback-3.vipps.no",
        ),
        ("2a01:4f8::1".parse().unwrap(), "callback-4.vipps.no"),
    ])
}

#[test]
fn nft_table_and_update_pass_nft_check() {
    let Some(prefix) = usable_nft() else { return };
    let opts = ExportOptions::default();
    let table = nft_table(&sample(), &opts);
    nft_check(&prefix, &table).unwrap_or_else(|e| panic!("table rejected:\n{e}\n{table}"));
    // The update is checked against the table, in one file (a fresh namespace has no table).
    let update = nft_update(&sample(), &opts);
    let both = format!("{table}{update}");
    nft_check(&prefix, &both).unwrap_or_else(|e| panic!("update rejected:\n{e}\n{both}"));
    // Twice in a row (idempotent replace), and with empty families.
    let only_v4 = AllowSet::from_pairs([("8.8.8.8".parse().unwrap(), "callback-1.vipps.no")]);
    let again = format!(
        "{table}{}{}",
        nft_table(&only_v4, &opts),
        nft_update(&only_v4, &opts)
    );
    nft_check(&prefix, &again).unwrap_or_else(|e| panic!("second table rejected:\n{e}\n{again}"));
    // The check can fail: an update for a table that does not exist is rejected.
    assert!(nft_check(&prefix, &update.replace("vipps_allow", "vipps_missing")).is_err());
}
