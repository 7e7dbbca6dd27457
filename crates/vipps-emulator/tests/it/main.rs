//! End-to-end tests of the emulator over real HTTP on 127.0.0.1.
#![allow(clippy::print_stderr)]

/// This binary runs on the embedded store (SQLite) unless `VIPPS_TEST_STORE=postgres` is set; the
/// `conformance_postgres` binary runs the same tests on PostgreSQL.
pub const SUITE_ON_POSTGRES: bool = false;

mod auth;
mod chaos;
mod checkout;
mod common;
mod controls;
mod dashboard;
mod delivery;
mod epayment;
mod events;
mod idempotency;
mod machine;
mod postgres;
mod recurring;
mod snapshot;
mod tls;
mod webhooks;
