//! A whole disk image through inspection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inspect::fuzzing::fuzz_inspect(data));
