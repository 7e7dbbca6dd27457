//! Table-driven tests: every case runs, and the test fails once, listing each case that did not hold, so one run
//! shows the whole picture instead of stopping at the first broken row.

use std::fmt::Debug;
use std::future::Future;

/// A case of a table: anything with a name to report it by.
pub trait Case: Debug {
    /// The name the failure report uses.
    fn name(&self) -> String;
}

/// Runs `run` on every case and panics with the list of failures (case name and reason).
///
/// ```
/// use vipps_test_support::table::{Case, check};
///
/// #[derive(Debug)]
/// struct Add(i32, i32, i32);
/// impl Case for Add {
///     fn name(&self) -> String {
///         format!("{} + {}", self.0, self.1)
///     }
/// }
/// check(&[Add(1, 1, 2), Add(2, 3, 5)], |c| {
///     let got = c.0 + c.1;
///     if got == c.2 { Ok(()) } else { Err(format!("got {got}, want {}", c.2)) }
/// });
/// ```
pub fn check<C: Case>(cases: &[C], mut run: impl FnMut(&C) -> Result<(), String>) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run(c).err().map(|why| format!("  {}: {why}", c.name())))
        .collect();
    report(cases.len(), failures);
}

/// [`check`] for cases that need to await (requests to a running emulator). The cases run one after the other, in
/// order, because later rows may rely on the state earlier ones left.
pub async fn check_async<'a, C: Case, F, Fut>(cases: &'a [C], mut run: F)
where
    F: FnMut(&'a C) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut failures = Vec::new();
    for c in cases {
        if let Err(why) = run(c).await {
            failures.push(format!("  {}: {why}", c.name()));
        }
    }
    report(cases.len(), failures);
}

/// Compares two values for a table row: `Ok` when equal, otherwise a message naming what differed.
pub fn expect_eq<T: PartialEq + Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn report(total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
