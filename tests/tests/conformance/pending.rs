//! Where the cases of contract features still being built go. A case that
//! fails on every run, or asserts nothing, would help no one: when a
//! feature lands, write its case as a function generic over
//! [`crate::fixtures::Fixture`], like those in `crate::cases`, and add its
//! name to the list in `main.rs`; an adapter that still refuses it must
//! then say so in Describe and answer UNIMPLEMENTED, which
//! `describe_matches_what_the_adapter_answers` already holds it to.
//!
//! - **An outside edit of one instance** of a series the platform wrote
//!   reaching the feed as one change: needs a `Fixture` way to edit one
//!   instance at the provider as its user would (each provider names and
//!   stores overrides its own way). The scheduler's side is unit-tested in
//!   `sync::diff`.
