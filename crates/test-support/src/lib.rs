//! Test harnesses shared by the allowlist and CLI test suites: real parts only.
//!
//! - [`dns`]: dnsmasq as a child process, and an in-process hickory zone whose answers can be swapped, delayed, or
//!   refused per record type;
//! - [`platform`]: the emulator (public API and HTTP controls only), a cuttable UDP relay in front of its DNS, and
//!   a plain webhook receiver;
//! - [`netns`]: private network namespaces (`ip netns`), removed on drop, that a runtime's threads can live in;
//! - [`tools`]: finding a system tool, skipping with a printed reason outside CI and failing on CI;
//! - [`process`]: a child process whose output is read line by line with bounded waits;
//! - [`pg`]: a fresh PostgreSQL database per test;
//! - [`table`]: table-driven tests that report every failing case at once.
#![allow(clippy::print_stderr)]

pub mod dns;
pub mod netns;
pub mod pg;
pub mod platform;
pub mod process;
pub mod table;
pub mod tools;

use std::future::Future;
use std::time::Duration;

/// Runs `f`, failing the test when it takes longer than `limit` (so a hang is a failure, not a stuck suite).
pub async fn bounded<F: Future<Output = T>, T>(limit: Duration, f: F) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within its bound of {limit:?}"))
}

/// A free UDP port on 127.0.0.1 (closed again; nothing listens there).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}

/// A free TCP port on 127.0.0.1 (closed again).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local address")
        .port()
}
