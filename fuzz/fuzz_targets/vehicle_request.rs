//! Fuzz target `vehicle_request`: see `tether_tests::fuzz_harness::vehicle_request`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::vehicle_request(data));
