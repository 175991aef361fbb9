//! MBR/EBR and GPT partition tables.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| disk::partition::fuzzing::fuzz_read_table(data));
