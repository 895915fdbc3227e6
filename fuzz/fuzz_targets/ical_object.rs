//! A calendar object resource: read, expanded over the sync window, rewritten.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    calbridge_fuzz::report_stack_overflows();
    calbridge_fuzz_targets::caldav::ical_object(data);
});
