//! Where the cases of contract features still being built go. None of
//! these is implemented by every adapter yet, so none is a case yet (a
//! case that fails on every run, or asserts nothing, would help no one).
//! When a feature lands, write its case here as a function generic over
//! [`crate::fixtures::Fixture`], like those in `crate::cases`, and add its
//! name to the list in `main.rs`; an adapter that still refuses it must
//! then say so in Describe and answer UNIMPLEMENTED, which
//! `describe_matches_what_the_adapter_answers` already holds it to.
//!
//! - **One-instance overrides**: UpdateEvent of one instance of a series
//!   (an instance's provider id) moves or retitles only that instance; the
//!   next sync shows the override linked to its series (`recurrence_link`
//!   with the original start) and the other instances unchanged.
//! - **Recurring series writes on CalDAV**: the CalDAV adapter (Radicale,
//!   Xandikos, iCloud) says `recurrence_writes` and creates, replaces and
//!   deletes a series; once it does, `series_writes_follow_the_recurrence_capability`
//!   checks the create on those fixtures without change, and the case
//!   here adds the replacement of a series (UpdateEvent of the master).
//! - **Echo suppression of series expansions**: a series written through
//!   the scheduler (UpsertEvent with `recurrence`) expands into instances
//!   in the mirror without any of them reaching the feed; an outside edit
//!   of one instance afterwards reaches it as one UPDATED change.
