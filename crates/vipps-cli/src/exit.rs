//! Exit codes and error reporting for the binary.

use std::process::ExitCode;

/// A usage error: bad flags or arguments (clap uses the same code).
pub const USAGE: u8 = 2;
/// The API answered with an error (4xx or 5xx, a problem body).
pub const API: u8 = 3;
/// The request could not be completed over the network (connect, timeout, reset); for the allowlist, no
/// address is known (DNS failed and there is no snapshot), so nothing is published (fail closed).
pub const NETWORK: u8 = 4;
/// `allowlist check`: the address is not allowed.
pub const NOT_ALLOWED: u8 = 5;
/// `allowlist watch --apply`: the run ended with the rules not applied (the kernel refused them or the tool is
/// missing).
pub const APPLY: u8 = 6;

/// The class of a failure, attached to an `anyhow::Error` with [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Bad input from the user.
    Usage,
    /// An error answer from the API.
    Api,
    /// A network failure.
    Network,
    /// The address is not allowed (`allowlist check`).
    NotAllowed,
    /// Applying the firewall rules failed.
    Apply,
}

/// An error with its class; `main` maps the class to the exit code.
#[derive(Debug)]
pub struct Classified {
    /// The class.
    pub class: Class,
    /// What happened.
    pub error: anyhow::Error,
}

impl std::fmt::Display for Classified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Classified {}

/// Wraps an error with its class.
pub fn classify(class: Class, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Classified {
        class,
        error: error.into(),
    })
}

/// Prints the error to stderr and returns the exit code for it.
pub fn report(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    let code = match err.downcast_ref::<Classified>().map(|c| c.class) {
        Some(Class::Usage) => USAGE,
        Some(Class::Api) => API,
        Some(Class::Network) => NETWORK,
        Some(Class::NotAllowed) => NOT_ALLOWED,
        Some(Class::Apply) => APPLY,
        None => 1,
    };
    ExitCode::from(code)
}
