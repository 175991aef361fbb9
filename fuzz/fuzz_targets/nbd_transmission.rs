//! NBD server: the transmission phase.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbd_gateway::fuzzing::fuzz_transmission(data));
