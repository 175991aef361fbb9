//! virtio-win catalogs: pe.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::fuzzing::fuzz_pe(data));
