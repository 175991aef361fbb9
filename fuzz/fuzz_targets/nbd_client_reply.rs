//! NBD client: replies from a hostile server.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| disk::fuzzing::nbd_reply(data));
