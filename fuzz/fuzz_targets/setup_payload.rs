//! Fuzz target `setup_payload`: see `tether_tests::fuzz_harness::setup_payload`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::setup_payload(data));
