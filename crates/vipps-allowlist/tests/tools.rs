//! Every export checked by the real tool that reads it, and applied where the tool can apply it: nftables and
//! ipset in private network namespaces (also through [`Applier`], with drift detection), iptables and ip6tables
//! with `*-restore --test` and for real in a namespace, nginx with `nginx -t` and as a running server, HAProxy
//! with `haproxy -c` and as a running server whose ACL is replaced through its runtime API socket.

#![allow(clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vipps_allowlist::apply::{Applier, Backend};
use vipps_allowlist::export::{self, Format};
use vipps_allowlist::{AllowSet, ExportOptions};
use vipps_test_support::netns::NetNs;
use vipps_test_support::tools::tool;

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

fn rotated() -> AllowSet {
    AllowSet::from_pairs([
        ("104.45.17.200".parse().unwrap(), "callback-1.vipps.no"),
        ("2a01:4f8::2".parse().unwrap(), "callback-4.vipps.no"),
    ])
}

fn ok(out: &Output, what: &str, input: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n--- input ---\n{input}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn nft_table_and_update_are_checked_and_applied_in_a_namespace() {
    if tool("nft", "nftables").is_none() {
        return;
    }
    let Some(ns) = NetNs::new("nft") else { return };
    let opts = ExportOptions::default();
    let table = export::nft_table(&sample(), &opts);
    ok(
        &ns.output_with_stdin(&["nft", "-c", "-f", "-"], &table),
        "nft -c",
        &table,
    );
    ok(
        &ns.output_with_stdin(&["nft", "-f", "-"], &table),
        "nft -f",
        &table,
    );
    let v4 = ns.run(&["nft", "list", "set", "inet", "vipps_allow", "v4"]);
    for a in ["51.105.122.48", "51.105.122.49", "104.45.17.199"] {
        assert!(v4.contains(a), "{a} in\n{v4}");
    }
    assert!(
        ns.run(&["nft", "list", "set", "inet", "vipps_allow", "v6"])
            .contains("2a01:4f8::1")
    );
    // The element update replaces both sets in one transaction.
    let update = export::nft_update(&rotated(), &opts);
    ok(
        &ns.output_with_stdin(&["nft", "-f", "-"], &update),
        "nft update",
        &update,
    );
    let v4 = ns.run(&["nft", "list", "set", "inet", "vipps_allow", "v4"]);
    assert!(
        v4.contains("104.45.17.200") && !v4.contains("104.45.17.199"),
        "{v4}"
    );
    // The table file replaces an existing table (idempotent), also with an empty family.
    let only_v4 = AllowSet::from_pairs([("8.8.8.8".parse().unwrap(), "callback-1.vipps.no")]);
    let again = export::nft_table(&only_v4, &opts);
    ok(
        &ns.output_with_stdin(&["nft", "-f", "-"], &again),
        "nft -f again",
        &again,
    );
    let all = ns.run(&["nft", "list", "table", "inet", "vipps_allow"]);
    assert!(
        all.contains("8.8.8.8") && !all.contains("2a01:4f8::"),
        "{all}"
    );
    // The check can fail: an update for a table that does not exist is rejected.
    let wrong = update.replace("vipps_allow", "vipps_missing");
    assert!(
        !ns.output_with_stdin(&["nft", "-c", "-f", "-"], &wrong)
            .status
            .success()
    );
}

/// A wrapper that runs `tool` inside the namespace, for [`Applier::with_program`].
fn wrapper(dir: &Path, ns: &NetNs, tool: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(format!("{tool}-in-ns"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {tool} \"$@\"\n",
            ns.name()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn the_applier_applies_notices_drift_and_restores_nft_and_ipset() {
    if tool("nft", "nftables").is_none() || tool("ipset", "ipset").is_none() {
        return;
    }
    let Some(ns) = NetNs::new("apply") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // One row per backend: how to tamper with the applied state behind the applier's back, and how to see it.
    type Tamper = &'static [&'static [&'static str]];
    let cases: [(Backend, &str, Tamper, Tamper, &[&str]); 2] = [
        (
            Backend::Nft,
            "nft",
            &[&[
                "nft",
                "add",
                "element",
                "inet",
                "vipps_allow",
                "v4",
                "{ 6.6.6.6 }",
            ]],
            &[&["nft", "delete", "table", "inet", "vipps_allow"]],
            &["nft", "list", "table", "inet", "vipps_allow"],
        ),
        (
            Backend::Ipset,
            "ipset",
            &[&["ipset", "add", "vipps4", "6.6.6.6"]],
            &[&["ipset", "flush", "vipps4"], &["ipset", "flush", "vipps6"]],
            &["ipset", "save"],
        ),
    ];
    for (backend, bin, add, remove, show) in cases {
        let mut applier = Applier::new(backend, ExportOptions::default()).with_program(wrapper(
            dir.path(),
            &ns,
            bin,
        ));
        assert!(
            applier.drift().await.is_some(),
            "{backend}: nothing applied yet"
        );
        applier
            .apply(&sample())
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(
            applier.drift().await,
            None,
            "{backend}: in step after applying"
        );
        let live = ns.run(show);
        assert!(
            live.contains("104.45.17.199") && live.contains("2a01:4f8::1"),
            "{backend}: {live}"
        );
        for tamper in [add, remove] {
            for cmd in tamper {
                ns.run(cmd);
            }
            let reason = applier.drift().await;
            assert!(reason.is_some(), "{backend}: {tamper:?} not noticed");
            applier.apply(&sample()).await.unwrap();
            assert_eq!(applier.drift().await, None, "{backend}: restored");
            let live = ns.run(show);
            assert!(
                !live.contains("6.6.6.6") && live.contains("104.45.17.199"),
                "{backend}: {live}"
            );
        }
        // A rotation swaps the whole set.
        applier.apply(&rotated()).await.unwrap();
        let live = ns.run(show);
        assert!(
            live.contains("104.45.17.200") && !live.contains("104.45.17.199"),
            "{backend}: {live}"
        );
    }
    // ipset: the temporary sets of the swap are gone.
    let names = ns.run(&["ipset", "list", "-n"]);
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>(),
        ["vipps4", "vipps6"],
        "{names}"
    );
    // A rejected apply is an error and leaves the applied rules in force.
    let mut broken = Applier::new(
        Backend::Nft,
        ExportOptions {
            nft_set_v4: "bad name with spaces".into(),
            ..ExportOptions::default()
        },
    )
    .with_program(wrapper(dir.path(), &ns, "nft"));
    let err = broken.apply(&sample()).await.unwrap_err();
    assert!(err.to_string().contains("(check)"), "{err}");
    assert!(
        ns.run(&["nft", "list", "table", "inet", "vipps_allow"])
            .contains("104.45.17.200")
    );
}

#[test]
fn ipset_restore_swaps_in_a_namespace() {
    if tool("ipset", "ipset").is_none() {
        return;
    }
    let Some(ns) = NetNs::new("ipset") else {
        return;
    };
    let opts = ExportOptions::default();
    for (set, present, absent) in [
        (sample(), "104.45.17.199", "104.45.17.200"),
        (rotated(), "104.45.17.200", "104.45.17.199"),
    ] {
        let script = export::ipset(&set, &opts);
        ok(
            &ns.output_with_stdin(&["ipset", "restore"], &script),
            "ipset restore",
            &script,
        );
        let v4 = ns.run(&["ipset", "list", "vipps4"]);
        assert!(v4.contains(present) && !v4.contains(absent), "{v4}");
        assert!(v4.contains("comment \"callback-1.vipps.no\""), "{v4}");
    }
    assert!(ns.run(&["ipset", "list", "vipps6"]).contains("2a01:4f8::2"));
    assert!(!ns.run(&["ipset", "list", "-n"]).contains("-tmp"));
}

#[test]
fn iptables_and_ip6tables_restore_accept_the_chains() {
    let (Some(_), Some(_)) = (
        tool("iptables-restore", "iptables"),
        tool("ip6tables-restore", "iptables"),
    ) else {
        return;
    };
    let Some(ns) = NetNs::new("ipt") else { return };
    let opts = ExportOptions::default();
    for (format, restore, list, present) in [
        (
            Format::Iptables,
            "iptables-restore",
            "iptables",
            "51.105.122.49/32",
        ),
        (
            Format::Ip6tables,
            "ip6tables-restore",
            "ip6tables",
            "2a01:4f8::1/128",
        ),
    ] {
        let text = export::render(format, &sample(), &opts);
        ok(
            &ns.output_with_stdin(&[restore, "--test", "--noflush"], &text),
            restore,
            &text,
        );
        // Applied for real, twice (the chain is flushed and refilled), then jumped to from INPUT.
        for _ in 0..2 {
            ok(
                &ns.output_with_stdin(&[restore, "--noflush"], &text),
                restore,
                &text,
            );
        }
        let rules = ns.run(&[list, "-S", "VIPPS_CB"]);
        assert!(rules.contains(present), "{rules}");
        assert_eq!(rules.matches("-j DROP").count(), 1, "{rules}");
        ns.run(&[
            list, "-A", "INPUT", "-p", "tcp", "--dport", "443", "-j", "VIPPS_CB",
        ]);
        // The check can fail.
        let broken = text.replace("/32 ", "/99 ").replace("/128 ", "/999 ");
        assert!(
            !ns.output_with_stdin(&[restore, "--test", "--noflush"], &broken)
                .status
                .success()
        );
    }
}

/// A server process this test started, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts on `addr`.
fn wait_listening(addr: SocketAddr, server: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("the server exited: {status}");
        }
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The status of a GET from the local address `from`.
async fn status_from(from: &str, url: &str) -> u16 {
    let client = reqwest::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client.get(url).send().await.unwrap().status().as_u16()
}

fn local_set(list: &[&str]) -> AllowSet {
    AllowSet::from_pairs(
        list.iter()
            .map(|a| (a.parse().unwrap(), "callback-mt-1.vipps.no")),
    )
}

#[tokio::test]
async fn nginx_accepts_the_include_and_enforces_it() {
    let Some(nginx) = tool("nginx", "nginx-light") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = vipps_test_support::free_tcp_port();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/hook"), "ok\n").unwrap();
    let include = dir.path().join("vipps-allow.conf");
    std::fs::write(
        &include,
        export::nginx(&local_set(&["127.0.0.2", "2a01:4f8::1"])),
    )
    .unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log stderr;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             server {{\nlisten 127.0.0.1:{port};\nroot {d}/www;\nlocation / {{\ninclude {};\n}}\n}}\n}}\n",
            include.display()
        ),
    )
    .unwrap();
    let args = [
        "-e",
        "stderr",
        "-p",
        &format!("{d}/"),
        "-c",
        conf.to_str().unwrap(),
    ];
    let t = Command::new(&nginx).arg("-t").args(args).output().unwrap();
    assert!(
        t.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    // The check can fail.
    std::fs::write(&include, "allow 127.0.0.2 # no semicolon\n").unwrap();
    assert!(
        !Command::new(&nginx)
            .arg("-t")
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    );
    std::fs::write(
        &include,
        export::nginx(&local_set(&["127.0.0.2", "2a01:4f8::1"])),
    )
    .unwrap();

    let mut server = Server(
        Command::new(&nginx)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), &mut server);
    let url = format!("http://127.0.0.1:{port}/hook");
    assert_eq!(status_from("127.0.0.2", &url).await, 200);
    assert_eq!(status_from("127.0.0.9", &url).await, 403);
}

#[tokio::test]
async fn haproxy_checks_the_acl_file_and_the_runtime_script_replaces_it() {
    let Some(haproxy) = tool("haproxy", "haproxy") else {
        return;
    };
    if tool("socat", "socat").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let port = vipps_test_support::free_tcp_port();
    let acl = dir.path().join("vipps.lst");
    std::fs::write(
        &acl,
        export::haproxy_acl(&local_set(&["127.0.0.2", "2a01:4f8::1"])),
    )
    .unwrap();
    let sock = dir.path().join("admin.sock");
    let conf = dir.path().join("haproxy.cfg");
    std::fs::write(
        &conf,
        [
            "global".to_owned(),
            format!("  stats socket {} mode 600 level admin", sock.display()),
            "defaults".to_owned(),
            "  mode http".to_owned(),
            "  timeout connect 1s".to_owned(),
            "  timeout client 5s".to_owned(),
            "  timeout server 5s".to_owned(),
            "frontend fe".to_owned(),
            format!("  bind 127.0.0.1:{port}"),
            format!("  acl from_vipps src -f {}", acl.display()),
            "  http-request deny deny_status 403 unless from_vipps".to_owned(),
            "  http-request return status 200 content-type text/plain string ok".to_owned(),
        ]
        .join("\n")
            + "\n",
    )
    .unwrap();
    let c = Command::new(&haproxy)
        .args(["-c", "-f"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        c.status.success(),
        "haproxy -c: {}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );

    let mut server = Server(
        Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), &mut server);
    let url = format!("http://127.0.0.1:{port}/hook");
    assert_eq!(status_from("127.0.0.2", &url).await, 200);
    assert_eq!(status_from("127.0.0.9", &url).await, 403);

    // The runtime script replaces the loaded ACL atomically through the admin socket: no reload.
    let opts = ExportOptions {
        haproxy_acl_file: acl.display().to_string(),
        ..ExportOptions::default()
    };
    let script = export::haproxy_runtime(&local_set(&["127.0.0.9"]), &opts);
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("HAPROXY_SOCKET", &sock)
        .output()
        .unwrap();
    ok(&out, "the haproxy-runtime script", &script);
    assert_eq!(status_from("127.0.0.9", &url).await, 200);
    assert_eq!(status_from("127.0.0.2", &url).await, 403);
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo 'show acl {d}/vipps.lst' | socat stdio unix-connect:{}",
            sock.display()
        ))
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("127.0.0.9") && !shown.contains("127.0.0.2"),
        "{shown}"
    );
}
