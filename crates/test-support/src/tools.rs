//! System tools: found on the usual paths, or the test is skipped with a printed reason (and fails on CI).

use std::path::PathBuf;

/// Whether the tests run on CI (`CI` is `true` or `1`), where a missing tool is a failure, not a skip.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the calling test: panics on CI, else prints `SKIPPED: {why}` and returns `None` for the caller to
/// return early.
pub fn skip<T>(why: &str) -> Option<T> {
    if on_ci() {
        panic!("{why}, and CI must run this test");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// The path of `bin` on the usual system paths.
pub fn find(bin: &str) -> Option<PathBuf> {
    [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .map(|d| PathBuf::from(d).join(bin))
    .find(|p| p.exists())
}

/// The path of `bin`, or a skip (see [`skip`]) naming the Debian `package` that provides it.
pub fn tool(bin: &str, package: &str) -> Option<PathBuf> {
    find(bin).or_else(|| {
        skip(&format!(
            "{bin} is not installed (apt-get install -y {package})"
        ))
    })
}
