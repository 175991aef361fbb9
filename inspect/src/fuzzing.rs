//! Fuzz harness bodies (house style S17): plain functions, so the seed corpus and mutated
//! copies also run under `cargo test` on stable; `fuzz/` wraps them for cargo-fuzz.

use std::sync::Arc;

use crate::linux::{fstab, network, osrelease};

/// Every guest text parser inspection has, on arbitrary bytes.
pub fn fuzz_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = fstab::parse(&text);
    let kv = osrelease::parse_key_values(&text);
    let _ = osrelease::from_os_release(&kv);
    let _ = osrelease::from_lsb_release(&kv);
    let _ = osrelease::from_release_file(&text);
    let _ = network::parse_ifupdown("/f", &text);
    let _ = network::parse_ifcfg(network::NetStyle::RhelIfcfg, "/x/ifcfg-eth0", &text);
    let _ = network::parse_nm_keyfile("/f", &text);
    let _ = network::parse_networkd("/f", &text);
    let _ = network::parse_netplan("/f", &text);
    let _ = network::parse_udev_net_rules(&text);
    let _ = crate::boot::grub_cfg_entries(&text);
    for line in text.lines().take(64) {
        let _ = fstab::kernel_name_parts(line);
        let _ = fstab::split_dm_name(line);
        let _ = osrelease::parse_version(line);
        let _ = network::netmask_to_prefix(line);
    }
}

/// A whole disk image through inspection.
pub fn fuzz_inspect(data: &[u8]) {
    let dev = Arc::new(disk::MemDisk::from_vec(data.to_vec()));
    let _ = crate::inspect(dev, "fuzz", "raw");
}

/// Windows binary helpers: PE headers and `MountedDevices` values.
pub fn fuzz_windows(data: &[u8]) {
    let _ = crate::windows::pe_arch(data);
    let _ = crate::windows::decode_mounted_device(data);
    let _ = crate::boot::classify_boot_code(data);
    let _ = crate::boot::bcd_summary(data.to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDS: &[&str] = &[
        "/dev/sda1 / ext4 defaults 0 1\nUUID=x /boot xfs defaults 0 0\n/dev/mapper/a--b-c d e\n",
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='x'\n",
        "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n",
        "auto eth0\niface eth0 inet static\n address 10.0.0.1\n netmask 255.0.0.0\n",
        "DEVICE=eth0\nBOOTPROTO=none\nIPADDR=1.2.3.4\nNETMASK=255.255.255.0\n",
        "[connection]\ntype=ethernet\n[ipv4]\nmethod=manual\naddress1=1.2.3.4/24,1.2.3.1\n",
        "network:\n  ethernets:\n    e:\n      addresses: [1.2.3.4/24]\n",
        "[Match]\nName=eth0\n[Network]\nAddress=1.2.3.4/24\n",
        "menuentry 'a' {\n}\nset default=\"0\"\n",
    ];

    /// A fixed-seed xorshift, so failures reproduce.
    fn mutate(seed: &[u8], n: u64) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ n;
        let mut v = seed.to_vec();
        for _ in 0..1 + n % 6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = v.len().max(1) as u64;
            let at = usize::try_from(x % len).unwrap_or(0);
            match x % 5 {
                0 => v.truncate(at),
                1 => v.insert(at, x.to_le_bytes()[1]),
                2 if at < v.len() => v[at] ^= 1 << (x % 8),
                3 if at < v.len() => {
                    v[at] = b"\n=\"'/\\ #[]{}:-"[usize::try_from((x >> 16) % 14).unwrap_or(0)]
                }
                _ => v.extend_from_slice(&v.clone()[..at.min(v.len())]),
            }
            v.truncate(1 << 16);
        }
        v
    }

    #[test]
    fn text_parsers_survive_seeds_and_1000_mutations() {
        for s in SEEDS {
            fuzz_text(s.as_bytes());
        }
        for n in 0..1000u64 {
            let seed = SEEDS[usize::try_from(n).unwrap_or(0) % SEEDS.len()];
            fuzz_text(&mutate(seed.as_bytes(), n));
        }
    }

    #[test]
    fn windows_helpers_and_small_disks_survive() {
        let mut pe = vec![0u8; 512];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c] = 0x40;
        pe[0x40..0x44].copy_from_slice(b"PE\0\0");
        for n in 0..1000u64 {
            let m = mutate(&pe, n);
            fuzz_windows(&m);
            if n % 50 == 0 {
                let mut disk = m.clone();
                disk.resize(64 * 1024, 0);
                fuzz_inspect(&disk);
            }
        }
    }
}
