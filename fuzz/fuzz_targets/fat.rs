//! FAT12/16/32 images.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guestfs::fuzzing::fuzz_fat(data));
