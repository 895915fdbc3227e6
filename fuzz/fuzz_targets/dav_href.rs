//! Hrefs a CalDAV server answers with, compared as the adapter compares them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    calbridge_fuzz::report_stack_overflows();
    calbridge_fuzz_targets::caldav::dav_href(data);
});
