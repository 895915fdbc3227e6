//! A WebDAV multistatus answer from a CalDAV server.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    calbridge_fuzz::report_stack_overflows();
    calbridge_fuzz_targets::caldav::dav_multistatus(data);
});
