//! `vipps`: one binary over the Vipps MobilePay platform emulator, the merchant client and the callback guard.
//!
//! Only this crate prints, installs a tracing subscriber or uses `anyhow`. Exit codes: 0 success, 1 other
//! failure, 2 usage error, 3 the API answered with an error, 4 network failure (for the allowlist: nothing is
//! known, fail closed), 5 `allowlist check`: not allowed, 6 `allowlist watch --apply`: the last apply failed (see
//! [`exit`]).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod allowlist;
mod api;
mod checkout;
mod emulator;
mod env;
mod exit;
mod recurring;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: glibc's allocator contends on its arena locks under the emulator's load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The Vipps MobilePay API platform, both ends of the wire.
#[derive(Debug, Parser)]
#[command(name = "vipps", version, about, long_about = None)]
struct Cli {
    /// Log filter (`info`, `debug`, `vipps_emulator=debug`, ...); also read from `RUST_LOG`.
    #[arg(long, global = true, env = "VIPPS_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the local Vipps-compatible platform emulator.
    Emulator(emulator::EmulatorArgs),
    /// Print what to export to reach a running emulator (eval "$(vipps env)"): CA files, proxy, VIPPS_* keys.
    Env(env::EnvArgs),
    #[command(flatten)]
    Api(api::ApiCommand),
    /// Recurring API agreements.
    #[command(subcommand)]
    Agreement(recurring::AgreementCommand),
    /// Recurring API charges.
    #[command(subcommand)]
    Charge(recurring::ChargeCommand),
    /// Checkout API sessions.
    #[command(subcommand)]
    Checkout(checkout::CheckoutCommand),
    /// Keep firewall and proxy allowlists of the request servers in step with DNS.
    #[command(subcommand)]
    Allowlist(allowlist::AllowlistCommand),
}

fn init_tracing(filter: Option<&str>, default: &str) {
    let filter = filter
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| default.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let default_log = match cli.command {
        Command::Emulator(_) => "info",
        _ => "warn",
    };
    init_tracing(cli.log.as_deref(), default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Emulator(args) => emulator::run(args).await,
            Command::Env(args) => env::run(args).await,
            Command::Api(cmd) => api::run(cmd).await,
            Command::Agreement(cmd) => recurring::agreement(cmd).await,
            Command::Charge(cmd) => recurring::charge(cmd).await,
            Command::Checkout(cmd) => checkout::run(cmd).await,
            Command::Allowlist(cmd) => allowlist::run(cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}
