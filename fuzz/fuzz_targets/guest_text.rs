//! Guest text files: fstab, os-release, lsb-release, release files, ifupdown, ifcfg, NetworkManager, networkd, netplan, udev rules, grub.cfg.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inspect::fuzzing::fuzz_text(data));
