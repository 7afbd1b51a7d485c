//! Fuzz target `share_invite`: see `tether_tests::fuzz_harness::share_invite`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::share_invite(data));
