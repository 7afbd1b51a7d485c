//! Fuzz target `binding`: see `tether_tests::fuzz_harness::binding`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::binding(data));
