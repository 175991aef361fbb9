//! NTFS images.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guestfs::ntfs::fuzzing::fuzz_ntfs(data));
