//! Fuzz target `automation_state`: see `tether_tests::fuzz_harness::automation_state`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::automation_state(data));
