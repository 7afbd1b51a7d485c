//! Fuzz target `relay_envelope`: see `tether_tests::fuzz_harness::relay_envelope`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::relay_envelope(data));
