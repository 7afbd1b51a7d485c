//! Fuzz target `provisioning`: see `tether_tests::fuzz_harness::provisioning`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::provisioning(data));
