//! `vipps allowlist watch` (the real binary) against an in-process emulator's embedded DNS (issue 6): a rotation
//! of the request servers shows up as added and removed addresses with their hostnames in watch's output, in the
//! nftables file it keeps, and through the `--on-change` command; a failover to disaster recovery needs no change
//! with the production profile (its addresses are already allowed), and a rotation during the failover is followed.

#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;

use tokio::process::Command;
use vipps_test_support::platform::Platform;
use vipps_test_support::process::Lines;

const VIPPS: &str = env!("CARGO_BIN_EXE_vipps");
/// The bound on each test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The bound on each wait for a line of watch's output.
const WAIT: Duration = Duration::from_secs(15);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    vipps_test_support::bounded(TEST_TIMEOUT, f).await;
}

/// The running `vipps allowlist watch` with its output, line by line.
struct Watch {
    proc: Lines,
    output: PathBuf,
    hook_runs: PathBuf,
    hook_copy: PathBuf,
    _dir: tempfile::TempDir,
}

impl Watch {
    /// Starts watch with fast refreshes (every 200 ms, no grace beyond the 1 s TTL) writing an nft file.
    fn start(dns: SocketAddr, profile: &str, max_iterations: u64) -> Watch {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("vipps.nft");
        let hook_runs = dir.path().join("hook-runs");
        let hook_copy = dir.path().join("hook-copy");
        let on_change = format!(
            "echo run >> '{}' && cp \"$VIPPS_ALLOWLIST_FILE\" '{}'",
            hook_runs.display(),
            hook_copy.display()
        );
        let mut cmd = Command::new(VIPPS);
        cmd.args(["allowlist", "watch", "--profile", profile, "--nameserver"])
            .arg(dns.to_string())
            .args([
                "--allow-net",
                "127.0.0.0/8",
                "--format",
                "nft",
                "--grace",
                "0s",
                "--min-ttl",
                "200ms",
                "--max-ttl",
                "200ms",
                "--timeout",
                "1s",
                "--max-iterations",
            ])
            .arg(max_iterations.to_string())
            .arg("--output")
            .arg(&output)
            .arg("--on-change")
            .arg(&on_change)
            .env_remove("RUST_LOG");
        Watch {
            proc: Lines::spawn(cmd),
            output,
            hook_runs,
            hook_copy,
            _dir: dir,
        }
    }

    /// Reads lines until one satisfies `pred`; returns the lines read, the matching one last.
    async fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.proc.until(what, WAIT, pred).await
    }

    /// Reads up to and including the next status line (printed after the file was written and the hook ran).
    async fn next_status(&mut self) -> Vec<String> {
        self.until("a status line", |l| l.contains("next refresh in"))
            .await
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap()
    }

    fn hook_runs(&self) -> usize {
        std::fs::read_to_string(&self.hook_runs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn wrote_lines(&self) -> usize {
        self.proc
            .transcript
            .iter()
            .filter(|l| l.contains("allowlist: wrote"))
            .count()
    }

    /// Stops watch (a process this test started).
    async fn stop(self) {
        self.proc.stop().await;
    }
}

/// The elements of an nft table file: address → the hostnames in its comment.
fn elements(nft: &str) -> BTreeMap<String, String> {
    const MARK: &str = " comment \"";
    let mut out = BTreeMap::new();
    let mut rest = nft;
    while let Some(i) = rest.find(MARK) {
        let address = rest[..i]
            .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
            .next()
            .unwrap()
            .to_owned();
        let after = &rest[i + MARK.len()..];
        let end = after.find('"').expect("closing quote");
        out.insert(address, after[..end].to_owned());
        rest = &after[end..];
    }
    out
}

fn map(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(a, n)| ((*a).to_owned(), (*n).to_owned()))
        .collect()
}

fn line_is(line: &str, sign: char, address: &str, name: &str) -> bool {
    line.ends_with(&format!("allowlist: {sign} {address} ({name})"))
}

fn assert_file_and_hook(w: &Watch, expected: &BTreeMap<String, String>) {
    let file = w.file();
    assert_eq!(&elements(&file), expected, "the exported file:\n{file}");
    assert!(file.contains("table inet vipps_allow {"), "{file}");
    assert_eq!(
        w.hook_runs(),
        w.wrote_lines(),
        "the --on-change command ran once per write"
    );
    assert_eq!(
        std::fs::read_to_string(&w.hook_copy).unwrap(),
        file,
        "the command saw the new file in $VIPPS_ALLOWLIST_FILE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_a_rotation_of_the_test_servers() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start_with(Some(1)).await;
        let mut w = Watch::start(platform.dns(), "test", 200);

        let first = w
            .until("the first write", |l| l.contains("allowlist: wrote"))
            .await;
        assert!(
            first
                .iter()
                .any(|l| line_is(l, '+', "127.0.3.1", "callback-mt-1.vipps.no")),
            "{first:?}"
        );
        assert!(
            first
                .iter()
                .any(|l| line_is(l, '+', "127.0.3.2", "callback-mt-2.vipps.no")),
            "{first:?}"
        );
        assert!(first.last().unwrap().contains("(2 addresses)"));
        w.next_status().await;
        assert_file_and_hook(
            &w,
            &map(&[
                ("127.0.3.1", "callback-mt-1.vipps.no"),
                ("127.0.3.2", "callback-mt-2.vipps.no"),
            ]),
        );
        assert_eq!(w.hook_runs(), 1);
        // Nothing changes while DNS is stable: no write, no hook.
        let quiet = w.next_status().await;
        assert!(quiet.last().unwrap().ends_with("; unchanged"), "{quiet:?}");
        assert_eq!(w.hook_runs(), 1);

        let v = platform.rotate("test").await;
        assert_eq!(v["test"]["active"], "callback-mt-2.vipps.no");
        assert_eq!(v["test"]["source_address"], "127.0.3.12");

        w.until("the new address of callback-mt-2", |l| {
            line_is(l, '+', "127.0.3.12", "callback-mt-2.vipps.no")
        })
        .await;
        w.next_status().await;
        let during = elements(&w.file());
        assert_eq!(
            during.get("127.0.3.12").map(String::as_str),
            Some("callback-mt-2.vipps.no")
        );
        w.until("the old address of callback-mt-2 expiring", |l| {
            line_is(l, '-', "127.0.3.2", "callback-mt-2.vipps.no")
        })
        .await;
        w.next_status().await;
        assert_file_and_hook(
            &w,
            &map(&[
                ("127.0.3.1", "callback-mt-1.vipps.no"),
                ("127.0.3.12", "callback-mt-2.vipps.no"),
            ]),
        );
        assert!(
            w.hook_runs() >= 3,
            "first fill, addition, removal: {}",
            w.hook_runs()
        );
        // The exported file allows the emulator's active test server.
        let state = platform
            .control(Method::GET, "/_emulator/request-servers", None)
            .await;
        let source = state["test"]["source_address"].as_str().unwrap();
        assert!(elements(&w.file()).contains_key(source));
        eprintln!("rotation seen by watch in {:?}", started.elapsed());
        w.stop().await;
        platform.emu.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_with_the_production_profile_covers_failover_and_follows_a_rotation_during_it() {
    bounded(async {
        let started = Instant::now();
        let platform = Platform::start_with(Some(1)).await;
        let mut w = Watch::start(platform.dns(), "production", 200);
        let first = w
            .until("the first write", |l| l.contains("allowlist: wrote"))
            .await;
        assert!(first.last().unwrap().contains("(8 addresses)"), "{first:?}");
        w.next_status().await;
        let mut expected = BTreeMap::new();
        for n in 1..=4 {
            expected.insert(format!("127.0.1.{n}"), format!("callback-{n}.vipps.no"));
            expected.insert(format!("127.0.2.{n}"), format!("callback-dr-{n}.vipps.no"));
        }
        assert_file_and_hook(&w, &expected);

        // Failover: the disaster-recovery servers take over. They are already allowed, so nothing changes.
        let v = platform.failover("disaster-recovery").await;
        assert_eq!(v["production"]["failover"], true);
        assert_eq!(v["production"]["active"], "callback-dr-1.vipps.no");
        let source = v["production"]["source_address"]
            .as_str()
            .unwrap()
            .to_owned();
        w.next_status().await;
        let after = [w.next_status().await, w.next_status().await].concat();
        assert!(
            after.iter().all(|l| l.ends_with("; unchanged")),
            "failover needs no change of the allowlist: {after:?}"
        );
        assert_eq!(
            elements(&w.file()).get(&source).map(String::as_str),
            Some("callback-dr-1.vipps.no"),
            "the failover source {source} is allowed"
        );

        // A rotation of the serving disaster-recovery pool moves callback-dr-2 to a fresh address.
        let v = platform.rotate("disaster-recovery").await;
        assert_eq!(v["production"]["active"], "callback-dr-2.vipps.no");
        let source = v["production"]["source_address"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(source, "127.0.2.12");
        w.until("the new address of callback-dr-2", |l| {
            line_is(l, '+', "127.0.2.12", "callback-dr-2.vipps.no")
        })
        .await;
        w.until("the old address of callback-dr-2 expiring", |l| {
            line_is(l, '-', "127.0.2.2", "callback-dr-2.vipps.no")
        })
        .await;
        w.next_status().await;
        expected.remove("127.0.2.2");
        expected.insert("127.0.2.12".into(), "callback-dr-2.vipps.no".into());
        assert_file_and_hook(&w, &expected);

        // Back to production: the production servers never left the allowlist.
        let v = platform.failover("production").await;
        assert_eq!(v["production"]["source_address"], "127.0.1.1");
        w.next_status().await;
        let back = w.next_status().await;
        assert!(back.iter().all(|l| l.ends_with("; unchanged")), "{back:?}");
        assert!(elements(&w.file()).contains_key("127.0.1.1"));
        eprintln!(
            "failover and rotation seen by watch in {:?}",
            started.elapsed()
        );
        w.stop().await;
        platform.emu.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stops_after_max_iterations() {
    bounded(async {
        let platform = Platform::start_with(Some(1)).await;
        let mut w = Watch::start(platform.dns(), "test", 3);
        for _ in 0..3 {
            w.next_status().await;
        }
        let status = tokio::time::timeout(WAIT, w.proc.child.wait())
            .await
            .expect("watch exits after --max-iterations")
            .unwrap();
        assert!(status.success(), "{status}");
        assert_eq!(w.hook_runs(), 1, "one write, then unchanged");
        assert_eq!(elements(&w.file()).len(), 2);
        assert!(Path::new(&w.output).exists());
        platform.emu.shutdown().await;
    })
    .await;
}
