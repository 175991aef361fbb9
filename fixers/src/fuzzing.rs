//! Fuzz harness bodies (house style S17): plain functions that must never panic.

pub use crate::fixers::initramfs::fuzzing::{
    fuzz_cpio, fuzz_initramfs, fuzz_kmod_index, fuzz_modinfo,
};

pub use crate::fixers::fuzz_firstboot;
pub use crate::fixers::fuzz_windows;

/// Parses `data` as a recipe (lossy UTF-8) and lints it.
pub fn fuzz_recipe(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let issues = crate::lint_text(&text);
    for i in &issues {
        let _ = i.to_string();
    }
}

/// Guest files [`fuzz_guest`] fills from its input, in order (NUL separates the contents).
pub const FUZZ_FILES: &[&str] = &[
    "/etc/fstab",
    "/etc/crypttab",
    "/etc/default/grub",
    "/boot/grub/grub.cfg",
    "/boot/loader/entries/a.conf",
    "/etc/kernel/cmdline",
    "/etc/network/interfaces",
    "/etc/netplan/01-net.yaml",
    "/etc/NetworkManager/system-connections/a.nmconnection",
    "/etc/systemd/network/10-a.network",
    "/etc/sysconfig/network-scripts/ifcfg-ens192",
    "/etc/sysconfig/network/ifcfg-eth0",
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/sysconfig/network-scripts/route-ens192",
];

/// Runs every fixer (network policy chosen by the input's length) over a guest whose configuration files are
/// `data` split at NUL bytes (see [`FUZZ_FILES`]); applies each plan to a copy and plans again.
/// Guest files are hostile input: this must never panic or hang.
pub fn fuzz_guest(data: &[u8]) {
    use crate::testkit::{MemFs, SyntheticOs, synthetic_report};
    let mut g = MemFs::new();
    for (f, chunk) in FUZZ_FILES.iter().zip(data.split(|&b| b == 0)) {
        g.add_file(f, chunk);
    }
    let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
    let os = &rep.operating_systems[0];
    // The input's length picks the network policy, so both are covered at half the cost.
    let (policy, target) = [("preserve", "ens3"), ("dhcp", "eth0")][data.len() % 2];
    let text = format!(
        "schema = 1\nname = \"fuzz\"\ndescription = \"all fixers\"\n[match]\nos_type = \"linux\"\n\
         [[step]]\nfixer = \"block-device-names\"\n[[step]]\nfixer = \"network\"\n\
         policy = \"{policy}\"\ntarget_name = \"{target}\"\n[[step]]\nfixer = \"console\"\n\
         [[step]]\nfixer = \"caches\"\n"
    );
    let Ok(recipe) = crate::Recipe::parse(&text, crate::Origin::Inline) else {
        return;
    };
    let opts = crate::PlanOptions::default();
    if let Ok(p) = crate::plan(&recipe, &rep, os, &g, &opts) {
        let _ = p.render_human();
        let _ = p.to_json();
        let mut fixed = g.clone();
        if crate::apply(&p, &mut fixed).is_ok() {
            let _ = crate::plan(&recipe, &rep, os, &fixed, &opts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeds for [`fuzz_guest`] from the golden inputs: each case's files put in their
    /// [`FUZZ_FILES`] slot by kind.
    fn guest_seeds() -> Vec<Vec<u8>> {
        let slot = |p: &str| -> Option<usize> {
            let name = p.rsplit('/').next()?;
            Some(match name {
                "fstab" => 0,
                "crypttab" => 1,
                "grub" if p.ends_with("default/grub") => 2,
                "grub.cfg" => 3,
                "cmdline" => 5,
                "interfaces" => 6,
                "70-persistent-net.rules" => 12,
                n if n.ends_with(".conf") && p.contains("loader/entries") => 4,
                n if n.ends_with(".yaml") => 7,
                n if n.ends_with(".nmconnection") => 8,
                n if n.ends_with(".network") => 9,
                n if n.starts_with("ifcfg-")
                    && p.contains("network-scripts")
                    && n != "ifcfg-lo" =>
                {
                    10
                }
                n if n.starts_with("ifcfg-") && n != "ifcfg-lo" => 11,
                n if n.starts_with("route-") => 13,
                _ => return None,
            })
        };
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut dirs: Vec<_> = std::fs::read_dir(golden)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("case.toml").exists())
            .collect();
        dirs.sort();
        let mut seeds = Vec::new();
        let mut all: Vec<Vec<u8>> = vec![Vec::new(); FUZZ_FILES.len()];
        for d in dirs {
            let fs = crate::testkit::MemFs::from_host_dir(&d.join("input")).unwrap();
            let mut parts: Vec<Vec<u8>> = vec![Vec::new(); FUZZ_FILES.len()];
            for (p, data) in fs.files() {
                if let Some(i) = slot(&p) {
                    parts[i].clone_from(&data);
                    all[i].clone_from(&data);
                }
            }
            seeds.push(parts.join(&0u8));
        }
        seeds.push(all.join(&0u8));
        seeds
    }

    #[test]
    fn fuzz_guest_survives_mutations_of_golden_guests() {
        let seeds = guest_seeds();
        assert!(seeds.len() >= 7);
        for s in &seeds {
            fuzz_guest(s);
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for i in 0..iterations() {
            let seed = &seeds[usize::try_from(i).unwrap() % seeds.len()];
            let mut d = seed.clone();
            let r = xorshift(&mut state);
            match r % 4 {
                0 => d.truncate(usize::try_from(r >> 8).unwrap() % (d.len() + 1)),
                1 => {
                    for _ in 0..1 + r % 8 {
                        let at = usize::try_from(xorshift(&mut state)).unwrap() % d.len();
                        d[at] ^= u8::try_from(xorshift(&mut state) & 0xff).unwrap();
                    }
                }
                2 => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let tokens: [&[u8]; 10] = [
                        b"/dev/sda1",
                        b"\n    ",
                        b"root=/dev/xvda",
                        b"\"",
                        b"ens192",
                        b"match:\n",
                        b"[Match]\n",
                        b"\xc3\xa9:",
                        b"\n    :\n",
                        b"\n  bridges:\n    br0:\n      interfaces: [ens192]\n",
                    ];
                    let tok = tokens[usize::try_from(r >> 40).unwrap() % tokens.len()];
                    d.splice(at..at, tok.iter().copied());
                }
                _ => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let len = usize::try_from(r >> 48).unwrap() % 64;
                    let end = (at + len).min(d.len());
                    d.drain(at..end);
                }
            }
            fuzz_guest(&d);
        }
    }

    /// 1,000 mutations, or `REHOST_FUZZ_ITERS` for a longer local run.
    fn iterations() -> u64 {
        std::env::var("REHOST_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000)
    }

    /// A fixed-seed xorshift, so the mutations are the same on every run.
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn fuzz_recipe_survives_mutations_of_shipped_recipes() {
        let seeds: Vec<&str> = crate::recipe::shipped_texts().collect();
        assert!(!seeds.is_empty());
        for s in &seeds {
            fuzz_recipe(s.as_bytes());
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..iterations() {
            let seed = seeds[usize::try_from(i).unwrap() % seeds.len()];
            let mut d = seed.as_bytes().to_vec();
            let r = xorshift(&mut state);
            match r % 4 {
                0 => d.truncate(usize::try_from(r >> 8).unwrap() % (d.len() + 1)),
                1 => {
                    for _ in 0..1 + r % 8 {
                        let at = usize::try_from(xorshift(&mut state)).unwrap() % d.len();
                        d[at] ^= u8::try_from(xorshift(&mut state) & 0xff).unwrap();
                    }
                }
                2 => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let tokens: [&[u8]; 6] = [
                        b"\"",
                        b"[[step]]\n",
                        b"=",
                        b"\n[match]\n",
                        b"'''",
                        b"version = \">=\"\n",
                    ];
                    let tok = tokens[usize::try_from(r >> 40).unwrap() % tokens.len()];
                    d.splice(at..at, tok.iter().copied());
                }
                _ => {
                    let at = usize::try_from(r >> 8).unwrap() % d.len();
                    let len = usize::try_from(r >> 48).unwrap() % 64;
                    let end = (at + len).min(d.len());
                    d.drain(at..end);
                }
            }
            fuzz_recipe(&d);
        }
    }
}
