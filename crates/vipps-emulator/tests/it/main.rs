//! End-to-end tests of the emulator over real HTTP on 127.0.0.1.
#![allow(clippy::print_stderr)]

mod auth;
mod common;
mod controls;
mod delivery;
mod epayment;
mod idempotency;
mod postgres;
mod webhooks;
