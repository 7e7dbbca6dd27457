//! The whole story on a real kernel firewall (issue 10), in a private network namespace: the emulator's request
//! servers deliver webhooks to a receiver guarded by the nftables table that `vipps allowlist watch --apply nft`
//! keeps in step with the emulator's DNS.
//!
//! - a connection from an address that is not a request server is dropped by the kernel (no answer at all);
//! - the table removed behind watch's back is restored;
//! - after a rotation the new server's deliveries get through once DNS moved (within the TTL plus one refresh);
//! - during a DNS outage the last good set stays in force, and the status file and `check` say so;
//! - SIGTERM stops watch cleanly and leaves the rules in force; `--apply ipset` fills the sets.
//!
//! Everything runs inside the namespace: the test's runtime threads enter it, so the in-process emulator and
//! receiver bind there, and `vipps` runs under `ip netns exec`.

#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::Value;
use vipps_test_support::netns::NetNs;
use vipps_test_support::platform::{Platform, Receiver, Relay};
use vipps_test_support::process::Lines;
use vipps_test_support::tools::tool;

const VIPPS: &str = env!("CARGO_BIN_EXE_vipps");
/// The bound on the whole story.
const TEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The bound on each wait for a line of watch's output.
const WAIT: Duration = Duration::from_secs(15);
/// The emulator's DNS TTL and watch's longest refresh interval.
const TTL: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Connects from `from` to `to`: `Some(true)` accepted, `Some(false)` refused (RST), `None` no answer within
/// 400 ms (the SYN was dropped).
async fn connect_from(from: &str, to: SocketAddr) -> Option<bool> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip(from), 0)).unwrap();
    match tokio::time::timeout(Duration::from_millis(400), sock.connect(to)).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(_)) => Some(false),
        Err(_) => None,
    }
}

fn set_elements(ns: &NetNs) -> String {
    ns.run(&["nft", "list", "set", "inet", "vipps_allow", "v4"])
}

fn vipps_in(ns: &NetNs, args: &[&str]) -> std::process::Output {
    ns.command(VIPPS)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn the_kernel_firewall_follows_the_emulator_dns() {
    if tool("nft", "nftables").is_none() || tool("ipset", "ipset").is_none() {
        return;
    }
    let Some(ns) = NetNs::new("story") else {
        return;
    };
    // A thread of its own enters the namespace (the harness may reuse its threads); the runtime's threads too.
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_current_thread();
            let rt = ns.runtime(2);
            rt.block_on(vipps_test_support::bounded(TEST_TIMEOUT, story(&ns)));
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    });
}

async fn story(ns: &NetNs) {
    let started = Instant::now();
    let platform = Platform::start_with(Some(1)).await;
    let relay = Relay::start(platform.dns()).await;
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    platform
        .register(&format!("http://{}/hooks/vipps", receiver.addr))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status.json");
    let mut cmd = ns.tokio_command(VIPPS);
    cmd.args(["allowlist", "watch", "--profile", "test", "--nameserver"])
        .arg(relay.addr.to_string())
        .args([
            "--allow-net",
            "127.0.0.0/8",
            "--apply",
            "nft",
            "--port",
            &port.to_string(),
            "--grace",
            "0s",
            "--min-ttl",
            "200ms",
            "--max-ttl",
            "1s",
            "--timeout",
            "300ms",
            "--check-interval",
            "200ms",
            "--status-file",
        ])
        .arg(&status_file)
        .env_remove("RUST_LOG");
    let mut watch = Lines::spawn(cmd);
    watch
        .until("the first apply", WAIT, |l| l.contains("applied nft"))
        .await;
    let v4 = set_elements(ns);
    assert!(v4.contains("127.0.3.1") && v4.contains("127.0.3.2"), "{v4}");

    // The active server's delivery gets through the kernel firewall.
    platform.create("order-kernel-0001").await;
    let a = platform
        .wait_attempt("order-kernel-0001", "CREATED", 1)
        .await;
    assert_eq!(a["response_status"], 200, "{a:#}");
    assert_eq!(a["source_address"], "127.0.3.1");
    assert!(
        receiver
            .seen()
            .iter()
            .any(|d| d.peer.ip() == ip("127.0.3.1"))
    );

    // Another address: the kernel drops the SYN (no answer, not even a refusal); the drop counter moved. A pool
    // member that is allowed connects, so it is the firewall that decides.
    assert_eq!(
        connect_from("127.0.0.77", receiver.addr).await,
        None,
        "dropped"
    );
    assert_eq!(connect_from("127.0.3.2", receiver.addr).await, Some(true));
    let chain = ns.run(&["nft", "list", "chain", "inet", "vipps_allow", "input"]);
    assert!(
        !chain.contains("counter packets 0 "),
        "the drop rule counted: {chain}"
    );

    // The table removed behind watch's back is restored within the check interval.
    ns.run(&["nft", "delete", "table", "inet", "vipps_allow"]);
    watch
        .until("the restore", WAIT, |l| {
            l.contains("applied nft") && l.contains("restored")
        })
        .await;
    assert_eq!(
        connect_from("127.0.0.77", receiver.addr).await,
        None,
        "guarded again"
    );

    // A rotation: callback-mt-2 moves to 127.0.3.12, which the kernel drops until DNS moved and watch applied it.
    assert_eq!(connect_from("127.0.3.12", receiver.addr).await, None);
    let (active, new_ip) = platform.rotate_test().await;
    assert_eq!(
        (active.as_str(), new_ip),
        ("callback-mt-2.vipps.no", ip("127.0.3.12"))
    );
    let rotated = Instant::now();
    watch
        .until("the new address", WAIT, |l| l.contains("+ 127.0.3.12"))
        .await;
    watch
        .until("its apply", WAIT, |l| l.contains("applied nft"))
        .await;
    let took = rotated.elapsed();
    // Within the TTL plus one refresh interval, with slack for a loaded machine.
    assert!(took < TTL + TTL + Duration::from_secs(3), "took {took:?}");
    assert_eq!(connect_from("127.0.3.12", receiver.addr).await, Some(true));
    platform.approve("order-kernel-0001").await;
    let a = platform
        .wait_attempt("order-kernel-0001", "AUTHORIZED", 1)
        .await;
    assert_eq!(a["source_address"], "127.0.3.12");
    assert_eq!(a["response_status"], 200, "{a:#}");
    // The old address leaves after its TTL (no grace configured).
    watch
        .until("the old address leaving", WAIT, |l| {
            l.contains("- 127.0.3.2 ")
        })
        .await;
    watch
        .until("its apply", WAIT, |l| l.contains("applied nft"))
        .await;
    assert_eq!(connect_from("127.0.3.2", receiver.addr).await, None);

    // DNS outage: every lookup fails; the last good set stays in force in the kernel.
    relay.set_up(false);
    watch
        .until("failing lookups", WAIT, |l| {
            l.contains("failing (last-known-good kept)")
        })
        .await;
    let before = set_elements(ns);
    watch
        .until("another failing refresh", WAIT, |l| {
            l.contains("failing (last-known-good kept)")
        })
        .await;
    assert_eq!(set_elements(ns), before);
    assert!(
        before.contains("127.0.3.1") && before.contains("127.0.3.12"),
        "{before}"
    );
    platform.create("order-kernel-0002").await;
    let a = platform
        .wait_attempt("order-kernel-0002", "CREATED", 1)
        .await;
    assert_eq!(
        a["response_status"], 200,
        "delivered during the outage: {a:#}"
    );
    let status: Value = serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["apply"]["backend"], "nft");
    assert_eq!(status["apply"]["ok"], true);
    assert!(
        status["apply"]["restored"].as_u64().unwrap() >= 1,
        "{status:#}"
    );
    let mt2 = &status["names"][1];
    assert_eq!(mt2["name"], "callback-mt-2.vipps.no");
    assert_eq!(mt2["status"], "failed", "{mt2:#}");
    assert!(mt2["A"]["error"].is_string(), "{mt2:#}");
    assert_eq!(mt2["A"]["addresses"][0]["address"], "127.0.3.12", "{mt2:#}");
    assert_eq!(mt2["A"]["addresses"][0]["ttl"], 1);
    assert!(status["nextRefresh"].is_string() && status["lastRefresh"]["at"].is_string());
    // `check` reads what is in force from the status file.
    let sf = status_file.to_str().unwrap();
    let yes = vipps_in(
        ns,
        &["allowlist", "check", "127.0.3.12", "--status-file", sf],
    );
    let out = String::from_utf8_lossy(&yes.stdout);
    assert_eq!(yes.status.code(), Some(0), "{out}");
    assert!(out.contains("callback-mt-2.vipps.no (A, ttl 1s"), "{out}");
    let no = vipps_in(
        ns,
        &["allowlist", "check", "127.0.0.77", "--status-file", sf],
    );
    assert_eq!(
        no.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&no.stdout)
    );

    // `--apply ipset` fills the sets (DNS back, one refresh).
    relay.set_up(true);
    let ipset = vipps_in(
        ns,
        &[
            "allowlist",
            "watch",
            "--profile",
            "test",
            "--nameserver",
            &relay.addr.to_string(),
            "--allow-net",
            "127.0.0.0/8",
            "--apply",
            "ipset",
            "--once",
        ],
    );
    assert!(
        ipset.status.success(),
        "{}",
        String::from_utf8_lossy(&ipset.stderr)
    );
    let v4 = ns.run(&["ipset", "list", "vipps4"]);
    assert!(
        v4.contains("127.0.3.1") && v4.contains("127.0.3.12"),
        "{v4}"
    );

    // SIGHUP: refresh and re-apply at once.
    let pid = watch.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    watch
        .until("the reload", WAIT, |l| {
            l.contains("SIGHUP: refreshing and re-applying")
        })
        .await;
    watch
        .until("the re-apply", WAIT, |l| l.contains("applied nft"))
        .await;

    // SIGTERM: a clean stop, the status says so, and the rules stay in force.
    let pid = watch.child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (code, stderr) = watch.wait_exit(WAIT).await;
    assert_eq!(code, Some(0), "{stderr}");
    let status: Value = serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    assert_eq!(status["state"], "stopped");
    assert_eq!(
        connect_from("127.0.0.77", receiver.addr).await,
        None,
        "still guarded"
    );
    eprintln!("the kernel firewall story took {:?}", started.elapsed());
    platform.emu.shutdown().await;
}

/// A failing apply (here the kernel rejects the table: a set name nft cannot parse) is reported, watch keeps
/// running and refreshing, and a bounded run ends with exit 6; usage errors are exit 2. In a namespace, so the
/// machine's own firewall is never touched.
#[test]
fn a_failing_apply_is_reported_and_watch_keeps_running() {
    let Some(nft) = tool("nft", "nftables") else {
        return;
    };
    let Some(ns) = NetNs::new("fail") else { return };
    let Some(dns) =
        vipps_test_support::dns::Dnsmasq::start("104.45.17.1 callback-mt-1.vipps.no\n", 1)
    else {
        return;
    };
    // dnsmasq listens outside the namespace, so watch runs outside too; the `nft` it finds first on its PATH is a
    // wrapper that runs the real one inside the namespace.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nft");
    std::fs::write(
        &wrapper,
        // The real nft by its path: the wrapper is first on PATH.
        format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
            ns.name(),
            nft.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |table: &str| {
        std::process::Command::new(VIPPS)
            .args([
                "allowlist",
                "watch",
                "--name",
                "callback-mt-1.vipps.no",
                "--nameserver",
            ])
            .arg(dns.addr.to_string())
            .args([
                "--apply",
                "nft",
                "--nft-table",
                table,
                "--min-ttl",
                "100ms",
                "--max-ttl",
                "100ms",
            ])
            .args(["--max-iterations", "3"])
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    };
    let o = run("bad table name");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(6), "{stdout}\n{stderr}");
    assert_eq!(
        stderr.matches("applying the nft rules failed").count(),
        3,
        "reported and retried on every refresh: {stderr}"
    );
    assert_eq!(
        stdout.matches("next refresh in").count(),
        3,
        "kept running: {stdout}"
    );
    assert!(
        stderr.contains("(check)"),
        "validated before applying: {stderr}"
    );
    // The same with a good table name applies inside the namespace only.
    let o = run("vipps_allow");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        ns.run(&["nft", "list", "table", "inet", "vipps_allow"])
            .contains("104.45.17.1")
    );
    // Neither --output nor --apply: a usage error.
    let o = std::process::Command::new(VIPPS)
        .args([
            "allowlist",
            "watch",
            "--name",
            "callback-mt-1.vipps.no",
            "--once",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
