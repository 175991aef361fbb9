//! LVM2 text metadata.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| disk::lvm::fuzzing::fuzz_lvm_metadata(data));
