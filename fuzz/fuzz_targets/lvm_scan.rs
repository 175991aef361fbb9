//! LVM2 PV labels and metadata areas.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| disk::lvm::fuzzing::fuzz_lvm_scan(data));
