//! .reg text import.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hive::fuzzing::fuzz_reg(data));
