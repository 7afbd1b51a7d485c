//! Fuzz target `handshake_client`: see `tether_tests::fuzz_harness::handshake_client`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::handshake_client(data));
