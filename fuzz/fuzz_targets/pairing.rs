//! Fuzz target `pairing`: see `tether_tests::fuzz_harness::pairing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::pairing(data));
