//! Fuzz target `automation_task`: see `tether_tests::fuzz_harness::automation_task`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::automation_task(data));
