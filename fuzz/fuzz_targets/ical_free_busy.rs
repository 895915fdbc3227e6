//! A VFREEBUSY answer to a free-busy-query.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    calbridge_fuzz::report_stack_overflows();
    calbridge_fuzz_targets::caldav::ical_free_busy(data);
});
