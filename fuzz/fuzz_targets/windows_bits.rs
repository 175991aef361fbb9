//! PE headers, MountedDevices values, MBR boot code, BCD stores.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inspect::fuzzing::fuzz_windows(data));
