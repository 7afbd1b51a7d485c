//! Fuzz target `gatt_segments`: see `tether_tests::fuzz_harness::gatt_segments`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::gatt_segments(data));
