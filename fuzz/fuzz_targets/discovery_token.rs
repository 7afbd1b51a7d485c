//! Fuzz target `discovery_token`: see `tether_tests::fuzz_harness::discovery_token`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::discovery_token(data));
