//! Benchmarks: the allowlist check per request, and a full refresh of all ten request-server names against a
//! local DNS server with an artificial per-query delay (to show that lookups run concurrently).
//!
//! Run: `CARGO_TARGET_DIR=/work/targets/allowlist cargo bench -p vipps-allowlist --bench allowlist`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::extract::ConnectInfo;
use criterion::{Criterion, criterion_group, criterion_main};
use vipps_allowlist::layer::{client_ip, peer_addr};
use vipps_allowlist::resolve::ResolverOptions;
use vipps_allowlist::{AllowSet, DnsResolver, Policy, Refresher, SharedAllowlist};

fn thousand() -> AllowSet {
    let v4 = (0..900u32).map(|i| IpAddr::V4(Ipv4Addr::from(0x0808_0000 + i * 7)));
    let v6 = (0..100u128).map(|i| {
        IpAddr::V6(Ipv6Addr::from(
            0x2a01_04f8_0000_0000_0000_0000_0000_0000 + i * 3,
        ))
    });
    AllowSet::from_pairs(v4.chain(v6).map(|ip| (ip, "callback-1.vipps.no")))
}

fn check(c: &mut Criterion) {
    let set = thousand();
    assert_eq!(set.len(), 1000);
    let shared = SharedAllowlist::new(set.clone());
    let hit: IpAddr = IpAddr::V4(Ipv4Addr::from(0x0808_0000 + 450 * 7));
    let miss: IpAddr = "8.8.9.9".parse().unwrap();
    let mapped: IpAddr = IpAddr::V6(Ipv4Addr::from(0x0808_0000 + 450 * 7).to_ipv6_mapped());
    assert!(shared.contains(hit) && !shared.contains(miss) && shared.contains(mapped));

    let mut g = c.benchmark_group("check_1000_addresses");
    g.bench_function("AllowSet::contains hit", |b| {
        b.iter(|| set.contains(black_box(hit)))
    });
    g.bench_function("AllowSet::contains miss", |b| {
        b.iter(|| set.contains(black_box(miss)))
    });
    g.bench_function("SharedAllowlist::contains hit (arc-swap load)", |b| {
        b.iter(|| shared.contains(black_box(hit)))
    });
    g.bench_function("SharedAllowlist::contains ::ffff: mapped", |b| {
        b.iter(|| shared.contains(black_box(mapped)))
    });
    // What the layer does per request: peer from the extensions, client address, lookup.
    let mut ext = http::Extensions::new();
    ext.insert(ConnectInfo(SocketAddr::new(hit, 40000)));
    let headers = http::HeaderMap::new();
    g.bench_function("layer decision (peer + client_ip + contains)", |b| {
        b.iter(|| {
            let peer = peer_addr(black_box(&ext)).unwrap();
            let ip = client_ip(peer.ip(), &headers, &[]).unwrap();
            shared.contains(ip)
        })
    });
    g.finish();
}

fn refresh(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let names = vipps_types::servers::all_hostnames();
    let records: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            [
                (n.clone(), format!("8.8.{i}.1")),
                (n.clone(), format!("8.8.{i}.2")),
            ]
        })
        .collect();
    let recs: Vec<vipps_test_support::dns::Rec<'_>> = records
        .iter()
        .map(|(n, ip)| (n.as_str(), ip.as_str(), 60))
        .collect();
    let dns = rt.block_on(vipps_test_support::dns::TestDns::start(&recs));
    let resolver = DnsResolver::with_nameservers(&[dns.addr], ResolverOptions::default()).unwrap();
    let mut refresher = Refresher::new(resolver.clone(), names.clone(), Policy::default());
    assert_eq!(rt.block_on(refresher.refresh()).unwrap().set.len(), 20);

    let mut g = c.benchmark_group("refresh_10_names");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    g.bench_function("full refresh, no delay", |b| {
        b.iter(|| rt.block_on(refresher.refresh()).unwrap())
    });
    dns.set_delay(Duration::from_millis(50));
    g.bench_function("one name (A+AAAA), 50 ms per query", |b| {
        b.iter(|| rt.block_on(resolver.lookup(&names[0])))
    });
    g.bench_function("full refresh, 50 ms per query (20 queries)", |b| {
        b.iter(|| rt.block_on(refresher.refresh()).unwrap())
    });
    g.finish();
    rt.block_on(dns.shutdown());
}

criterion_group!(benches, check, refresh);
criterion_main!(benches);
