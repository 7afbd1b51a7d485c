//! Fuzz target `discovery_txt`: see `tether_tests::fuzz_harness::discovery_txt`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::discovery_txt(data));
