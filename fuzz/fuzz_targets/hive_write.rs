//! Registry hive writes on arbitrary hives.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hive::fuzzing::fuzz_write(data));
