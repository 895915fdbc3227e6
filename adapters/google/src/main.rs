//! The `calbridge-adapter-google` binary.

fn main() {}
