//! Fuzz target `mailbox_letter`: see `tether_tests::fuzz_harness::mailbox_letter`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tether_tests::fuzz_harness::mailbox_letter(data));
