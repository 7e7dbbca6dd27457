//! Resolution, refresh, grace, last-known-good and persistence against real DNS servers on 127.0.0.1.

#![allow(clippy::print_stderr)]

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::{Clock, DnsResolver, Error, Policy, Refresher};
use vipps_test_support::dns::{Dnsmasq, TestDns};
use vipps_test_support::free_udp_port;

struct TestClock(Mutex<SystemTime>);
impl TestClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}
impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fast() -> ResolverOptions {
    ResolverOptions {
        timeout: Duration::from_millis(300),
        attempts: 1,
    }
}

fn test_policy() -> Policy {
    Policy {
        allow_nets: vec!["127.0.0.0/8".parse().unwrap()],
        grace: Duration::from_secs(600),
        ..Policy::default()
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn hickory_zone_changing_answers_grace_last_known_good_and_snapshot() {
    let dns = TestDns::start(&[
        ("callback-mt-1.vipps.no", "127.0.0.11", 1),
        ("callback-mt-1.vipps.no", "127.0.0.12", 1),
        ("callback-mt-2.vipps.no", "127.0.0.13", 2),
        ("callback-mt-2.vipps.no", "2a01:4f8::13", 2),
        ("callback-mt-2.vipps.no", "10.0.0.5", 2),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let resolver = DnsResolver::with_nameservers(&[dns.addr], fast()).unwrap();
    let names = names(&[
        "callback-mt-1.vipps.no",
        "callback-mt-2.vipps.no",
        "callback-mt-9.vipps.no",
    ]);
    let mut r = Refresher::new(resolver, names.clone(), test_policy())
        .with_clock(clock.clone())
        .with_state_file(&state)
        .unwrap();
    let shared = r.shared();
    assert!(
        shared.current().is_empty(),
        "nothing is allowed before the first refresh"
    );

    let rep = r.refresh().await.unwrap();
    let expected: Vec<IpAddr> = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "2a01:4f8::13"]
        .map(ip)
        .to_vec();
    assert_eq!(
        rep.set
            .entries()
            .iter()
            .map(|e| e.address)
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        rep.names[1].rejected,
        [ip("10.0.0.5")],
        "private answers are rejected"
    );
    assert_eq!(
        rep.names[2].status, "nxdomain",
        "an unknown name does not affect the others"
    );
    assert_eq!(
        rep.next_refresh,
        test_policy().min_ttl,
        "TTL 1 is clamped to the minimum"
    );
    assert!(shared.contains(ip("::ffff:127.0.0.11")));
    assert_eq!(
        shared.current().names_of(ip("127.0.0.13")).unwrap(),
        ["callback-mt-2.vipps.no"]
    );

    // Round-robin subset / rotation: .12 disappears from DNS and .21 appears; .12 stays during the grace period.
    dns.set(&[
        ("callback-mt-1.vipps.no", "127.0.0.11", 1),
        ("callback-mt-1.vipps.no", "127.0.0.21", 1),
        ("callback-mt-2.vipps.no", "127.0.0.13", 2),
        ("callback-mt-2.vipps.no", "2a01:4f8::13", 2),
    ]);
    clock.advance(Duration::from_secs(60));
    let rep = r.refresh().await.unwrap();
    assert_eq!(rep.diff.added.len(), 1);
    assert_eq!(rep.diff.added[0].address, ip("127.0.0.21"));
    assert!(rep.diff.removed.is_empty());
    assert!(shared.contains(ip("127.0.0.12")) && shared.contains(ip("127.0.0.21")));

    // After the grace period .12 goes, with its hostname in the diff.
    clock.advance(Duration::from_secs(601));
    let rep = r.refresh().await.unwrap();
    assert_eq!(rep.diff.removed.len(), 1);
    assert_eq!(rep.diff.removed[0].address, ip("127.0.0.12"));
    assert_eq!(rep.diff.removed[0].names, ["callback-mt-1.vipps.no"]);
    assert!(!shared.contains(ip("127.0.0.12")));
    let good = shared.current();

    // The DNS server goes away: every name fails, the last good set stays, even long after the grace period.
    dns.shutdown().await;
    clock.advance(Duration::from_secs(100_000));
    let rep = r.refresh().await.unwrap();
    assert!(
        rep.names.iter().all(|n| n.status == "failed"),
        "{:?}",
        rep.names
    );
    assert_eq!(*shared.current(), *good);
    assert!(
        rep.status_line().contains("failing (last-known-good kept)"),
        "{}",
        rep.status_line()
    );

    // A restart loads the snapshot: the set is there before any lookup, and survives a dead DNS.
    let resolver = DnsResolver::with_nameservers(&[dns_addr_closed()], fast()).unwrap();
    let mut r2 = Refresher::new(resolver, names, test_policy())
        .with_clock(clock.clone())
        .with_state_file(&state)
        .unwrap();
    assert_eq!(*r2.shared().current(), *good);
    let rep = r2.refresh().await.unwrap();
    assert_eq!(*rep.set, *good);
}

fn dns_addr_closed() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

#[tokio::test]
async fn first_start_without_data_fails_closed() {
    let resolver = DnsResolver::with_nameservers(&[dns_addr_closed()], fast()).unwrap();
    let mut r = Refresher::new(resolver, names(&["callback-mt-1.vipps.no"]), test_policy());
    let err = r.refresh().await.unwrap_err();
    assert!(matches!(err, Error::NoData { .. }), "{err}");
    assert!(err.to_string().contains("fail closed"));
    assert!(r.shared().current().is_empty());
}

#[tokio::test]
async fn lookups_are_concurrent() {
    let dns = TestDns::start(&[
        ("callback-1.vipps.no", "8.8.8.1", 60),
        ("callback-2.vipps.no", "8.8.8.2", 60),
        ("callback-3.vipps.no", "8.8.8.3", 60),
        ("callback-4.vipps.no", "8.8.8.4", 60),
    ])
    .await;
    dns.set_delay(Duration::from_millis(150));
    let resolver = DnsResolver::with_nameservers(&[dns.addr], ResolverOptions::default()).unwrap();
    let names = vipps_types::servers::Pool::Production.hostnames();
    let started = std::time::Instant::now();
    let answers = resolver.lookup_all(&names).await;
    let took = started.elapsed();
    assert_eq!(answers.len(), 4);
    // Sequential would be 4 names x 2 families x 150 ms = 1.2 s.
    assert!(took < Duration::from_millis(900), "took {took:?}");
    dns.shutdown().await;
}

#[tokio::test]
async fn dnsmasq_changing_answers_and_outage() {
    let Some(mut dns) = Dnsmasq::start(
        "127.0.0.11 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n",
        1,
    ) else {
        return;
    };
    let resolver = DnsResolver::with_nameservers(&[dns.addr], fast()).unwrap();
    let names = vipps_types::servers::Profile::Test.hostnames();
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let mut r = Refresher::new(resolver, names, test_policy()).with_clock(clock.clone());
    let rep = r.refresh().await.unwrap();
    assert_eq!(rep.set.len(), 2, "{:?}", rep.names);
    assert_eq!(rep.names[0].ttl, Some(1));

    dns.set_hosts("127.0.0.31 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n");
    clock.advance(Duration::from_secs(700));
    let rep = r.refresh().await.unwrap();
    assert_eq!(rep.diff.added[0].address, ip("127.0.0.31"));
    assert_eq!(
        rep.diff.removed[0].address,
        ip("127.0.0.11"),
        "expired after the grace period"
    );

    dns.stop();
    let good = r.shared().current();
    clock.advance(Duration::from_secs(7_000));
    let rep = r.refresh().await.unwrap();
    assert!(rep.names.iter().all(|n| n.status == "failed"));
    assert_eq!(*r.shared().current(), *good);
}

/// A and AAAA are separate facts, against dnsmasq configured both ways: as a resolver without upstream servers it
/// answers what its hosts file has and refuses the other type (the setup of issue 10). One row per setup.
#[tokio::test]
async fn dnsmasq_refusing_one_family_publishes_the_other() {
    use vipps_test_support::dns::Mode;
    let cases = [
        (
            "A only, AAAA refused",
            "127.0.0.11 callback-mt-1.vipps.no\n127.0.0.12 callback-mt-2.vipps.no\n",
            ["127.0.0.11", "127.0.0.12"],
            ("ok", "failed"),
        ),
        (
            "AAAA only, A refused",
            "2a01:4f8::11 callback-mt-1.vipps.no\n2a01:4f8::12 callback-mt-2.vipps.no\n",
            ["2a01:4f8::11", "2a01:4f8::12"],
            ("failed", "ok"),
        ),
    ];
    for (case, hosts, expected, (a, aaaa)) in cases {
        let Some(dns) = Dnsmasq::start_with(hosts, 30, Mode::RefuseUnknown) else {
            return;
        };
        let resolver = DnsResolver::with_nameservers(&[dns.addr], fast()).unwrap();
        let mut r = Refresher::new(
            resolver,
            vipps_types::servers::Profile::Test.hostnames(),
            test_policy(),
        );
        let rep = r.refresh().await.unwrap_or_else(|e| panic!("{case}: {e}"));
        let got: Vec<IpAddr> = rep.set.entries().iter().map(|e| e.address).collect();
        assert_eq!(got, expected.map(ip), "{case}");
        for n in &rep.names {
            assert_eq!(n.status, "partial", "{case}: {n:?}");
            assert_eq!((n.a.status, n.aaaa.status), (a, aaaa), "{case}");
            assert!(
                n.error
                    .as_deref()
                    .unwrap()
                    .to_lowercase()
                    .contains("refused"),
                "{case}: {n:?}"
            );
        }
        assert!(rep.status_line().contains("failing"), "{case}");
        assert_eq!(
            rep.next_refresh,
            test_policy().min_ttl,
            "{case}: retried soon"
        );
    }
}

/// The in-process server refuses, fails or ignores one record type while the other answers: the answering
/// family is published and moves; the failing one keeps its last-known-good; the failure is reported per family.
#[tokio::test]
async fn a_server_failing_one_type_keeps_the_other_family_moving() {
    use vipps_test_support::dns::{Fault, RecordType};
    let dns = TestDns::start(&[
        ("callback-mt-1.vipps.no", "127.0.0.11", 60),
        ("callback-mt-1.vipps.no", "2a01:4f8::11", 60),
    ])
    .await;
    let resolver = DnsResolver::with_nameservers(&[dns.addr], fast()).unwrap();
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let mut r = Refresher::new(resolver, names(&["callback-mt-1.vipps.no"]), test_policy())
        .with_clock(clock.clone());
    let rep = r.refresh().await.unwrap();
    assert_eq!(rep.set.len(), 2);
    let cases = [
        (
            RecordType::AAAA,
            Fault::Refused,
            "127.0.0.21",
            "2a01:4f8::11",
            "refused",
        ),
        (
            RecordType::AAAA,
            Fault::ServFail,
            "127.0.0.22",
            "2a01:4f8::11",
            "server failure",
        ),
        (
            RecordType::AAAA,
            Fault::Silent,
            "127.0.0.23",
            "2a01:4f8::11",
            "timed out",
        ),
        (
            RecordType::A,
            Fault::Refused,
            "127.0.0.23",
            "2a01:4f8::24",
            "refused",
        ),
    ];
    for (rtype, fault, v4, v6, says) in cases {
        let case = format!("{rtype} {fault:?}");
        // DNS moves both families; only the answering one can be learnt.
        dns.set(&[
            ("callback-mt-1.vipps.no", v4, 60),
            ("callback-mt-1.vipps.no", v6, 60),
        ]);
        dns.set_fault(rtype, Some(fault));
        clock.advance(Duration::from_secs(10));
        let rep = r.refresh().await.unwrap_or_else(|e| panic!("{case}: {e}"));
        let n = &rep.names[0];
        assert_eq!(n.status, "partial", "{case}: {n:?}");
        let (failed, other) = if rtype == RecordType::A {
            (&n.a, &n.aaaa)
        } else {
            (&n.aaaa, &n.a)
        };
        assert_eq!((failed.status, other.status), ("failed", "ok"), "{case}");
        let error = failed.error.as_deref().unwrap().to_lowercase();
        assert!(error.contains(says), "{case}: {error}");
        if rtype == RecordType::A {
            assert!(rep.set.contains(ip(v6)), "{case}: AAAA learnt");
        } else {
            assert!(rep.set.contains(ip(v4)), "{case}: A learnt");
            assert!(
                rep.set.contains(ip("2a01:4f8::11")),
                "{case}: IPv6 last-known-good kept"
            );
        }
        let state = &r.snapshot().names["callback-mt-1.vipps.no"];
        let fstate = if rtype == RecordType::A {
            &state.a
        } else {
            &state.aaaa
        };
        assert!(fstate.last_error.is_some(), "{case}");
        dns.set_fault(rtype, None);
    }
    dns.shutdown().await;
}
