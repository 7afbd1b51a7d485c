//! Fuzz target `devices`: see `tether_tests::fuzz_harness::devices`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::devices(data));
