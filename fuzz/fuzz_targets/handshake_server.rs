//! Fuzz target `handshake_server`: see `tether_tests::fuzz_harness::handshake_server`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::handshake_server(data));
