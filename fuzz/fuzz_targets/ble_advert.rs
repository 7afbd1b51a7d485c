//! Fuzz target `ble_advert`: see `tether_tests::fuzz_harness::ble_advert`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::ble_advert(data));
