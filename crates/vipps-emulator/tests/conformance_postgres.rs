//! The emulator's end-to-end suite (`tests/it`) again, every test on PostgreSQL: the conformance run of the store
//! backends. It needs `VIPPS_TEST_POSTGRES_URL` (such as `postgres://postgres@127.0.0.1:5432/postgres`); without
//! it the binary prints why and skips, and with `CI` set it fails instead. Each test gets a fresh database.
#![allow(clippy::print_stderr, dead_code)]

/// Every emulator in this binary runs on PostgreSQL.
pub const SUITE_ON_POSTGRES: bool = true;

#[path = "it/auth.rs"]
mod auth;
#[path = "it/chaos.rs"]
mod chaos;
#[path = "it/checkout.rs"]
mod checkout;
#[path = "it/common.rs"]
mod common;
#[path = "it/controls.rs"]
mod controls;
#[path = "it/dashboard.rs"]
mod dashboard;
#[path = "it/delivery.rs"]
mod delivery;
#[path = "it/epayment.rs"]
mod epayment;
#[path = "it/events.rs"]
mod events;
#[path = "it/idempotency.rs"]
mod idempotency;
#[path = "it/machine.rs"]
mod machine;
#[path = "it/recurring.rs"]
mod recurring;
#[path = "it/snapshot.rs"]
mod snapshot;
#[path = "it/tls.rs"]
mod tls;
#[path = "it/webhooks.rs"]
mod webhooks;
