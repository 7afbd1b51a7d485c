//! Fuzz target `envelope`: see `tether_tests::fuzz_harness::envelope`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::envelope(data));
