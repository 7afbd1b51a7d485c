//! Fuzz target `revocation_list`: see `tether_tests::fuzz_harness::revocation_list`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::revocation_list(data));
