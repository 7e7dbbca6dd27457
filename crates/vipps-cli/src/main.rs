//! The `vipps` command.
fn main() {}
