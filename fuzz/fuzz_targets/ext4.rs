//! ext2/3/4 images.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guestfs::fuzzing::fuzz_ext4(data));
