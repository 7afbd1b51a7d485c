//! Fuzz target `frame`: see `tether_tests::fuzz_harness::frame`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::frame(data));
