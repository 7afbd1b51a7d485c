//! Fuzz target `certificate`: see `tether_tests::fuzz_harness::certificate`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::certificate(data));
