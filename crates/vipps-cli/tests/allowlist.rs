//! `vipps allowlist ...` through the real binary against DNS servers on 127.0.0.1: fail closed, last-known-good
//! from the snapshot, atomic writes and `--on-change` only on change (dnsmasq).
#![allow(clippy::print_stderr)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const VIPPS: &str = env!("CARGO_BIN_EXE_vipps");

use vipps_test_support::dns::Dnsmasq;
use vipps_test_support::free_udp_port;

fn vipps(args: &[&str]) -> Output {
    Command::new(VIPPS)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("vipps runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn first_start_without_data_fails_closed_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("allow.conf");
    let ns = format!("127.0.0.1:{}", free_udp_port());
    let o = vipps(&[
        "allowlist",
        "export",
        "--format",
        "nginx",
        "--name",
        "callback-mt-1.vipps.no",
        "--nameserver",
        &ns,
        "--timeout",
        "300ms",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "stderr: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("fail closed"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists(), "nothing is written when nothing is known");
}

#[test]
fn export_uses_the_snapshot_when_dns_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"names":{"callback-mt-1.vipps.no":{"addresses":{"127.0.0.11":{"last_seen":1700000000,"ttl":60},"10.9.9.9":{"last_seen":1700000000,"ttl":60}}}}}"#,
    )
    .unwrap();
    let ns = format!("127.0.0.1:{}", free_udp_port());
    let o = vipps(&[
        "allowlist",
        "export",
        "--format",
        "nginx",
        "--name",
        "callback-mt-1.vipps.no",
        "--nameserver",
        &ns,
        "--timeout",
        "300ms",
        "--state",
        state.to_str().unwrap(),
        "--allow-net",
        "127.0.0.0/8",
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("allow 127.0.0.11; # callback-mt-1.vipps.no\n"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("10.9.9.9"),
        "a private address from the snapshot is not admitted: {stdout}"
    );
    assert!(stdout.ends_with("deny all;\n"));
    // Usage errors exit 2.
    assert_eq!(
        vipps(&["allowlist", "export", "--format", "pf"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn resolve_and_export_against_dnsmasq() {
    let Some(dns) = Dnsmasq::start(
        "127.0.0.11 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n10.0.0.1 callback-mt-2.vipps.no\n",
        1,
    ) else {
        return;
    };
    let ns = dns.addr.to_string();
    let o = vipps(&[
        "allowlist",
        "resolve",
        "--profile",
        "test",
        "--nameserver",
        &ns,
        "--allow-net",
        "127.0.0.0/8",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["names"][0]["name"], "callback-mt-1.vipps.no");
    assert_eq!(v["names"][0]["answered"][0], "127.0.0.11");
    assert_eq!(v["names"][1]["rejected"][0], "10.0.0.1");
    assert_eq!(v["addresses"].as_array().unwrap().len(), 2);

    let o = vipps(&[
        "allowlist",
        "resolve",
        "--profile",
        "test",
        "--nameserver",
        &ns,
        "--allow-net",
        "127.0.0.0/8",
    ]);
    let t = text(&o.stdout);
    assert!(
        t.contains("callback-mt-1.vipps.no  ok        127.0.0.11 (ttl 1s)"),
        "{t}"
    );
    assert!(
        t.contains("2 addresses (2 IPv4, 0 IPv6) from 2/2 names answering"),
        "{t}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("vipps.lst");
    let o = vipps(&[
        "allowlist",
        "export",
        "--format",
        "haproxy",
        "--profile",
        "test",
        "--nameserver",
        &ns,
        "--allow-net",
        "127.0.0.0/8",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert!(
        std::fs::read_to_string(&out).unwrap().ends_with(
            "# callback-mt-1.vipps.no\n127.0.0.11\n# callback-mt-2.vipps.no\n127.0.0.12\n"
        )
    );
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["vipps.lst"], "no temporary file is left behind");
}

#[cfg(unix)]
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(p).unwrap().ino()
}

#[cfg(unix)]
#[test]
fn watch_rewrites_atomically_and_runs_on_change_only_when_the_content_changed() {
    let Some(dns) = Dnsmasq::start(
        "127.0.0.11 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n",
        1,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("allow.conf");
    let state = dir.path().join("state.json");
    let log = dir.path().join("changes.log");
    let hook = format!(
        "echo \"changed $VIPPS_ALLOWLIST_FILE\" >> {}",
        log.display()
    );
    let ns = dns.addr.to_string();
    let args = |iterations: &'static str| -> Vec<String> {
        [
            "allowlist",
            "watch",
            "--profile",
            "test",
            "--nameserver",
            &ns,
            "--allow-net",
            "127.0.0.0/8",
            "--format",
            "nginx",
            "--output",
            out.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--on-change",
            &hook,
            "--min-ttl",
            "1s",
            "--max-ttl",
            "1s",
            "--timeout",
            "500ms",
            "--max-iterations",
            iterations,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let child = Command::new(VIPPS)
        .args(args("4"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !out.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first file never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_inode = inode(&out);
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(
        first.contains("allow 127.0.0.11; # callback-mt-1.vipps.no\nallow 127.0.0.12;"),
        "{first}"
    );

    // The address of callback-mt-1 rotates.
    dns.set_hosts("127.0.0.21 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n");
    let o = child.wait_with_output().unwrap();
    let stdout = text(&o.stdout);
    assert!(
        o.status.success(),
        "stdout: {stdout}\nstderr: {}",
        text(&o.stderr)
    );
    let now = std::fs::read_to_string(&out).unwrap();
    assert!(
        now.contains("allow 127.0.0.21; # callback-mt-1.vipps.no\n"),
        "{now}"
    );
    assert!(
        now.contains("allow 127.0.0.11;"),
        "the old address stays for its grace period: {now}"
    );
    assert_ne!(
        inode(&out),
        first_inode,
        "the file is replaced by a rename, not rewritten in place"
    );
    let runs = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        runs.lines().count(),
        2,
        "one run for the first write, one for the change: {runs}"
    );
    assert!(runs.starts_with(&format!("changed {}", out.display())));
    assert!(
        stdout.contains("allowlist: + 127.0.0.21 (callback-mt-1.vipps.no)"),
        "{stdout}"
    );
    assert!(stdout.contains("unchanged"), "{stdout}");
    assert!(
        stdout.contains("3 addresses (3 IPv4, 0 IPv6) from 2/2 names answering"),
        "{stdout}"
    );

    // A restart with the same snapshot renders the same content: the command does not run.
    let o = Command::new(VIPPS).args(args("1")).output().unwrap();
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2);
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["allow.conf", "changes.log", "state.json"],
        "no temporary file is left behind"
    );
}

/// Issue 10 as a new user met it: a stock dnsmasq that answers `A` for the production request servers and refuses
/// the `AAAA` queries it cannot answer. The export publishes the IPv4 addresses and says which family failed;
/// the same with only `AAAA` answering.
#[test]
fn export_publishes_the_family_that_answers_when_the_other_is_refused() {
    use vipps_test_support::dns::Mode;
    let v4: String = (1..=4)
        .flat_map(|n| {
            [
                format!("104.45.17.{n} callback-{n}.vipps.no\n"),
                format!("104.45.18.{n} callback-dr-{n}.vipps.no\n"),
            ]
        })
        .collect();
    let v6: String = (1..=4)
        .flat_map(|n| {
            [
                format!("2a01:4f8::{n} callback-{n}.vipps.no\n"),
                format!("2a01:4f8::1{n} callback-dr-{n}.vipps.no\n"),
            ]
        })
        .collect();
    for (case, hosts, present, failing) in [
        (
            "A answers, AAAA refused",
            v4,
            "allow 104.45.17.1;",
            "(AAAA)",
        ),
        ("AAAA answers, A refused", v6, "allow 2a01:4f8::1;", "(A)"),
    ] {
        let Some(dns) = Dnsmasq::start_with(&hosts, 300, Mode::RefuseUnknown) else {
            return;
        };
        let ns = dns.addr.to_string();
        let o = vipps(&[
            "allowlist",
            "export",
            "--profile",
            "production",
            "--nameserver",
            &ns,
            "--format",
            "nginx",
        ]);
        assert!(o.status.success(), "{case}: {}", text(&o.stderr));
        let nginx = text(&o.stdout);
        assert!(nginx.contains(present), "{case}: {nginx}");
        assert_eq!(nginx.matches("allow ").count(), 8, "{case}: {nginx}");
        let o = vipps(&[
            "allowlist",
            "resolve",
            "--profile",
            "production",
            "--nameserver",
            &ns,
        ]);
        let t = text(&o.stdout);
        assert!(o.status.success(), "{case}: {}", text(&o.stderr));
        assert!(t.contains("partial"), "{case}: {t}");
        assert!(
            t.contains(&format!("callback-1.vipps.no {failing}")),
            "{case}: {t}"
        );
        assert!(t.to_lowercase().contains("refused"), "{case}: {t}");
    }
}

/// `check ADDRESS` resolves now when no status file is given: allowed with the reason (exit 0), not allowed
/// (exit 5), and special-purpose addresses are explained.
#[test]
fn check_says_whether_an_address_is_allowed_and_why() {
    let Some(dns) = Dnsmasq::start(
        "127.0.0.11 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n",
        1,
    ) else {
        return;
    };
    let ns = dns.addr.to_string();
    let base = [
        "allowlist",
        "check",
        "--profile",
        "test",
        "--nameserver",
        &ns,
    ];
    // (address, extra flags, exit code, what stdout says)
    let cases: [(&str, &[&str], i32, &str); 4] = [
        (
            "127.0.0.12",
            &["--allow-net", "127.0.0.0/8"],
            0,
            "callback-mt-2.vipps.no (A, ttl 1s",
        ),
        (
            "::ffff:127.0.0.11",
            &["--allow-net", "127.0.0.0/8"],
            0,
            "callback-mt-1.vipps.no (A",
        ),
        (
            "127.0.0.77",
            &["--allow-net", "127.0.0.0/8"],
            5,
            "NOT allowed: it is not among the 2",
        ),
        ("10.1.2.3", &["--allow-private"], 5, "NOT allowed"),
    ];
    for (address, extra, code, says) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.push(address);
        let o = vipps(&args);
        let out = text(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(code),
            "{address}: {out} {}",
            text(&o.stderr)
        );
        assert!(out.contains(says), "{address}: {out}");
    }
    // Without --allow-net every answer (127.x) is rejected: nothing is known, so nothing can be allowed (exit 4).
    let o = vipps(&[
        "allowlist",
        "check",
        "--profile",
        "test",
        "--nameserver",
        &ns,
        "127.0.0.11",
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
}

/// The systemd unit in docs/ is what `systemd-analyze` accepts (with our binary in place of the installed one),
/// and its sandboxing rates as a low exposure.
#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let Some(analyze) = vipps_test_support::tools::tool("systemd-analyze", "systemd") else {
        return;
    };
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/vipps-allowlist.service"
    ))
    .unwrap();
    assert!(unit.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"));
    assert!(unit.contains("ProtectSystem=strict\n") && unit.contains("DynamicUser=yes\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vipps-allowlist.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/vipps", VIPPS)).unwrap();
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&o.stderr)
    );
    let o = Command::new(&analyze)
        .args(["security", "--offline=yes"])
        .arg(&path)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for vipps-allowlist.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}{}", text(&o.stderr)));
    assert!(level <= 3.0, "exposure {level}:\n{out}");
}
