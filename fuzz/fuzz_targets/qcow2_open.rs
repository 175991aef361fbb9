//! qcow2 headers and tables (through imago).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| disk::fuzzing::qcow2_open(data));
