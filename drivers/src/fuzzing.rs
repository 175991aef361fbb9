//! Fuzz harness bodies (house style S17): plain functions so the seed corpus also runs under
//! `cargo test`; `fuzz/` wraps them for cargo-fuzz.

use crate::inf::Inf;
use crate::osmap::{Arch, WindowsTarget};
use crate::pe;

/// Parses arbitrary bytes as an INF and builds the driver description for every architecture;
/// must never panic.
pub fn fuzz_inf(data: &[u8]) {
    if let Ok(inf) = Inf::parse(data) {
        for arch in Arch::ALL {
            if let Ok(d) = inf.driver(arch) {
                let t = WindowsTarget {
                    major: 10,
                    minor: 0,
                    build: 20348,
                    server: true,
                    arch,
                };
                let _ = d.models_for(&t);
                let _ = d.hardware_ids_for(&t);
                for s in d.services() {
                    let _ = s.binary.image_path();
                }
            }
        }
    }
}

/// Checks arbitrary bytes as a driver `.sys` for every architecture; must never panic.
pub fn fuzz_pe(data: &[u8]) {
    for arch in Arch::ALL {
        let _ = pe::check_sys(data, arch);
    }
    let _ = pe::file_version(data);
}

/// Opens arbitrary bytes as an ISO catalog and selects drivers for a few targets; must never
/// panic, and stays bounded by the source and catalog limits.
pub fn fuzz_iso(data: &[u8]) {
    let Ok(src) = crate::Source::iso_from_bytes("fuzz.iso", data.to_vec()) else {
        return;
    };
    let Ok(cat) = crate::Catalog::open(src) else {
        return;
    };
    for (build, server) in [(17763, true), (22631, false)] {
        let t = WindowsTarget {
            major: 10,
            minor: 0,
            build,
            server,
            arch: Arch::Amd64,
        };
        if let Ok(sel) = cat.select(&t) {
            let _ = crate::render_human(&sel);
        }
    }
}

/// A small deterministic PRNG (xorshift64*) for the mutation tests.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let n64 = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
        usize::try_from(self.next_u64() % n64).unwrap_or(0)
    }
}

/// Mutation `i` of `seed`: byte flips at pseudo-random offsets, or a truncation.
#[must_use]
pub fn mutate(seed: &[u8], rng: &mut Rng, i: usize) -> Vec<u8> {
    let mut v = seed.to_vec();
    if v.is_empty() {
        return v;
    }
    if i % 8 == 7 {
        let cut = rng.below(v.len());
        v.truncate(cut);
        return v;
    }
    let flips = 1 + rng.below(4);
    for _ in 0..flips {
        let at = rng.below(v.len());
        let bit = rng.below(8);
        if let Some(b) = v.get_mut(at) {
            *b ^= 1u8 << bit;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osmap::OsFolder;
    use crate::testkit::{PeSpec, encode_inf, inf_text, pe_image, standard_drivers};

    #[test]
    fn inf_seeds_and_mutations_do_not_panic() {
        let mut seeds = Vec::new();
        for d in standard_drivers() {
            let bytes = encode_inf(&inf_text(&d, OsFolder::W2k19, Arch::Amd64), d.encoding);
            // The seeds are valid.
            let inf = Inf::parse(&bytes).unwrap();
            assert!(!inf.driver(Arch::Amd64).unwrap().models.is_empty());
            seeds.push(bytes);
        }
        let mut rng = Rng::new(0x1af4_1001);
        for i in 0..1000 {
            let seed = &seeds[i % seeds.len()];
            fuzz_inf(seed);
            fuzz_inf(&mutate(seed, &mut rng, i));
        }
    }

    #[test]
    fn iso_seed_and_mutations_do_not_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = crate::testkit::FakeTree {
            drivers: standard_drivers().into_iter().take(2).collect(),
            folders: vec![(OsFolder::W2k19, Arch::Amd64), (OsFolder::W10, Arch::Amd64)],
        };
        tree.write_iso_layout(&tmp.path().join("t")).unwrap();
        let iso = tmp.path().join("t.iso");
        if !crate::testkit::build_iso(&tmp.path().join("t"), &iso).unwrap() {
            println!("skipping: xorriso not found");
            return;
        }
        let seed = std::fs::read(&iso).unwrap();
        // The seed is valid and selects both drivers.
        let cat =
            crate::Catalog::open(crate::Source::iso_from_bytes("seed", seed.clone()).unwrap())
                .unwrap();
        let t = WindowsTarget {
            major: 10,
            minor: 0,
            build: 17763,
            server: true,
            arch: Arch::Amd64,
        };
        assert_eq!(cat.select(&t).unwrap().drivers.len(), 2);
        // Mutate only the used part (descriptors, directories, file data), not trailing padding.
        let used = seed.len().min(0x40000);
        let mut rng = Rng::new(0x9660);
        for i in 0..1000 {
            let mut m = mutate(&seed[..used], &mut rng, i);
            if m.len() == used {
                m.extend_from_slice(&seed[used..]);
            }
            fuzz_iso(&m);
        }
    }

    #[test]
    fn pe_seeds_and_mutations_do_not_panic() {
        let mut seeds = Vec::new();
        for arch in Arch::ALL {
            let img = pe_image(&PeSpec::driver(arch, [1, 2, 3, 4]));
            assert_eq!(
                pe::check_sys(&img, arch).unwrap().file_version,
                Some([1, 2, 3, 4])
            );
            seeds.push(img);
        }
        let mut rng = Rng::new(0x8664);
        for i in 0..1000 {
            let seed = &seeds[i % seeds.len()];
            fuzz_pe(&mutate(seed, &mut rng, i));
        }
    }
}
