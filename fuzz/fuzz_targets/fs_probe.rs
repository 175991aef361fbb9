//! Filesystem signature probing.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guestfs::fuzzing::fuzz_probe(data));
