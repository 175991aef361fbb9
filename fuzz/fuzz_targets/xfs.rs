//! XFS images.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| guestfs::xfs::fuzzing::fuzz_xfs(data));
