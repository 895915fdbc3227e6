//! The `calbridge-fake-google` binary.

fn main() {}
