//! Availability requests through the scheduler's checks and the engine.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    calbridge_fuzz::report_stack_overflows();
    calbridge_fuzz_targets::availability::availability(data);
});
