//! Fuzz target `ota`: see `tether_tests::fuzz_harness::ota`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::ota(data));
