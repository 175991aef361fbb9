//! Fuzz harness bodies (house style S17): plain functions, so `cargo test` runs the seed corpus
//! and the deterministic mutations on stable, and `fuzz/` wraps the same bodies for cargo-fuzz.
//!
//! Each body must never panic, whatever the input. Work is bounded: a walk visits at most
//! [`MAX_WALK_ENTRIES`] entries, [`MAX_WALK_DEPTH`] levels deep, and reads at most
//! [`MAX_FILE_READ`] bytes of each file.

use std::sync::Arc;

use disk::{BlockRead, MemDisk};

use crate::ext4::Ext4Fs;
use crate::fat::FatFs;
use crate::{FileType, FsRead, FsReadExt, GuestPath};

/// Deepest directory level a walk descends to.
pub const MAX_WALK_DEPTH: usize = 16;
/// Most entries one walk looks at.
pub const MAX_WALK_ENTRIES: usize = 10_000;
/// Most bytes read from one file.
pub const MAX_FILE_READ: u64 = 1 << 20;

/// Visits the tree of `fs` (bounded), touching every `FsRead` method and the resolver, and
/// returns how many entries it saw. Errors are expected on damaged input and ignored.
pub fn walk(fs: &dyn FsRead) -> usize {
    let _ = fs.info();
    let mut seen = 0usize;
    let mut stack = vec![(GuestPath::root(), 0usize)];
    let mut buf = vec![0u8; 64 * 1024];
    // Error paths: a name that is not there, and a directory read as a file.
    let _ = fs.lstat(
        &GuestPath::root()
            .join_name(b"no such name")
            .unwrap_or_default(),
    );
    let _ = fs.read_at(&GuestPath::root(), 0, &mut buf);
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            if seen >= MAX_WALK_ENTRIES {
                return seen;
            }
            seen += 1;
            let Ok(path) = dir.join_name(&e.name) else {
                continue;
            };
            let Ok(md) = fs.lstat(&path) else {
                continue;
            };
            match md.file_type {
                FileType::Directory if depth < MAX_WALK_DEPTH => stack.push((path, depth + 1)),
                FileType::Regular => {
                    let mut at = 0u64;
                    while at < MAX_FILE_READ {
                        match fs.read_at(&path, at, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => at += n as u64,
                        }
                    }
                }
                FileType::Symlink => {
                    let _ = fs.read_link(&path);
                    // Through the resolver, as callers do.
                    let _ = fs.read_file(&path.to_bytes(), MAX_FILE_READ);
                }
                _ => {}
            }
        }
    }
    seen
}

fn mem(data: &[u8]) -> Arc<dyn BlockRead> {
    Arc::new(MemDisk::from_vec(data.to_vec()))
}

/// Opens `data` as ext2/3/4 and walks it.
pub fn fuzz_ext4(data: &[u8]) {
    if let Ok(fs) = Ext4Fs::open(mem(data)) {
        let _ = fs.needs_recovery();
        walk(&fs);
    }
}

/// Opens `data` as FAT and walks it.
pub fn fuzz_fat(data: &[u8]) {
    if let Ok(fs) = FatFs::open(mem(data)) {
        walk(&fs);
    }
}

/// Probes `data`, then opens whatever was recognised and walks it.
pub fn fuzz_probe(data: &[u8]) {
    let dev = mem(data);
    let _ = crate::probe(&*dev);
    if let Ok(fs) = crate::open(dev) {
        walk(&*fs);
    }
}

/// Helpers for tests that build images with external tools.
#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images and offsets are small"
)]
pub(crate) mod testutil {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::Arc;

    use disk::MemDisk;

    /// True if `tool` is an executable on `PATH` or in the sbin directories.
    pub(crate) fn have(tool: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/sbin", "/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
            .any(|d| d.join(tool).is_file())
    }

    /// Prints the house-style skip line and returns false if a tool is missing.
    pub(crate) fn need(tools: &[&str]) -> bool {
        for t in tools {
            if !have(t) {
                eprintln!("skipping: {t} not found");
                return false;
            }
        }
        true
    }

    /// Runs a command quietly; true on success.
    pub(crate) fn run(cmd: &mut Command) -> bool {
        let out = cmd.output();
        match out {
            Ok(o) if o.status.success() => true,
            Ok(o) => {
                eprintln!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                false
            }
            Err(e) => {
                eprintln!("{cmd:?}: {e}");
                false
            }
        }
    }

    /// Like [`run`], returning stdout.
    pub(crate) fn output(cmd: &mut Command) -> Option<Vec<u8>> {
        let o = cmd.output().ok()?;
        o.status.success().then_some(o.stdout)
    }

    /// `blkid -p -o export FILE` as a map (values unescaped for the simple cases we use).
    pub(crate) fn blkid(file: &Path) -> BTreeMap<String, String> {
        let out = output(Command::new("blkid").args(["-p", "-o", "export"]).arg(file))
            .unwrap_or_default();
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("\\ ", " ")))
            .collect()
    }

    /// A read-only device over a host file, for images too big to hold in memory.
    pub(crate) struct FileDisk(std::fs::File, u64);

    impl FileDisk {
        pub(crate) fn open(path: &Path) -> Arc<Self> {
            let f = std::fs::File::open(path).expect("open image");
            let len = f.metadata().expect("stat image").len();
            Arc::new(Self(f, len))
        }
    }

    impl disk::BlockRead for FileDisk {
        fn size(&self) -> u64 {
            self.1
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
            disk::check_range(self.1, offset, buf.len() as u64)?;
            std::os::unix::fs::FileExt::read_exact_at(&self.0, buf, offset)
                .map_err(|e| disk::Error::io(offset, e))
        }
    }

    /// The whole file as an in-memory device.
    pub(crate) fn mem_file(file: &Path) -> Arc<MemDisk> {
        Arc::new(MemDisk::from_vec(std::fs::read(file).expect("read image")))
    }

    /// A small deterministic PRNG (xorshift64*) for mutations and test data.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            if n == 0 { 0 } else { self.next() % n }
        }
        pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next().to_le_bytes()[0]).collect()
        }
    }

    /// `count` mutants of `seed`: 1 to 8 byte changes inside `regions` (or anywhere, one time in
    /// ten), and a truncation one time in eight.
    pub(crate) fn mutants(
        seed: &[u8],
        regions: &[std::ops::Range<usize>],
        count: usize,
        rng_seed: u64,
    ) -> impl Iterator<Item = Vec<u8>> {
        let mut rng = Rng(rng_seed);
        let seed = seed.to_vec();
        let regions: Vec<_> = regions
            .iter()
            .filter(|r| r.start < r.end && r.end <= seed.len())
            .cloned()
            .collect();
        (0..count).map(move |_| {
            let mut m = seed.clone();
            if rng.below(8) == 0 {
                let len = rng.below(m.len() as u64) as usize;
                m.truncate(len);
                return m;
            }
            for _ in 0..=rng.below(8) {
                let at = if regions.is_empty() || rng.below(10) == 0 {
                    rng.below(m.len() as u64) as usize
                } else {
                    let r = &regions[rng.below(regions.len() as u64) as usize];
                    r.start + rng.below((r.end - r.start) as u64) as usize
                };
                let v = rng.next().to_le_bytes();
                m[at] = match v[1] % 4 {
                    0 => v[0],
                    1 => m[at] ^ (1 << (v[0] % 8)),
                    2 => 0xFF,
                    _ => 0,
                };
            }
            m
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images and offsets are small"
)]
mod tests {
    use std::process::Command;

    use super::testutil::{mutants, need, run};
    use super::*;

    fn tiny_tree(dir: &std::path::Path) {
        std::fs::create_dir_all(dir.join("etc/sub/deeper")).unwrap();
        std::fs::write(dir.join("etc/fstab"), b"/dev/vda1 / ext4 defaults 0 1\n").unwrap();
        std::fs::write(dir.join("etc/sub/big"), vec![7u8; 70_000]).unwrap();
        std::fs::write(dir.join("etc/sub/deeper/x"), b"x").unwrap();
        std::os::unix::fs::symlink("../fstab", dir.join("etc/sub/link")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("abs")).unwrap();
    }

    /// Offsets of an ext4 image's metadata: superblock, descriptors, and group 0's inode table.
    fn ext4_regions(img: &[u8]) -> Vec<std::ops::Range<usize>> {
        let sb = crate::ext4::Superblock::read(&MemDisk::from_vec(img.to_vec())).unwrap();
        let bs = sb.block_size as usize;
        let gdt = (sb.first_data_block as usize + 1) * bs;
        let lo = u32::from_le_bytes(img[gdt + 8..gdt + 12].try_into().unwrap()) as usize;
        let table = lo * bs;
        vec![
            1024..2048,
            gdt..gdt + bs,
            table..table + 64 * sb.inode_size as usize,
        ]
    }

    fn build_ext4(extra: &[&str]) -> Option<Vec<u8>> {
        if !need(&["mke2fs"]) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        tiny_tree(&root);
        let img = tmp.path().join("img");
        let ok = run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-N", "64"])
            .args(extra)
            .arg("-d")
            .arg(&root)
            .arg(&img)
            .arg("3M"));
        ok.then(|| std::fs::read(&img).unwrap())
    }

    #[test]
    fn ext4_seed_walks_fully() {
        let Some(img) = build_ext4(&[]) else { return };
        let fs = Ext4Fs::open(mem(&img)).unwrap();
        // lost+found, etc, abs, fstab, sub, big, deeper, x, link.
        assert_eq!(walk(&fs), 9);
        fuzz_ext4(&img);
        fuzz_probe(&img);
    }

    #[test]
    fn ext4_mutations_never_panic() {
        let Some(plain) = build_ext4(&["-O", "^metadata_csum,^has_journal"]) else {
            return;
        };
        let Some(csum) = build_ext4(&[]) else { return };
        let mut opened = 0;
        for m in mutants(&plain, &ext4_regions(&plain), 700, 0x5eed_0001) {
            fuzz_ext4(&m);
            opened += usize::from(Ext4Fs::open(mem(&m)).is_ok());
        }
        // The mutations must reach past the superblock checks to be worth anything.
        assert!(opened > 700 / 4, "only {opened} of 700 mutants opened");
        for m in mutants(&csum, &ext4_regions(&csum), 300, 0x5eed_0002) {
            fuzz_ext4(&m);
        }
    }

    fn build_fat(fat_bits: &str) -> Option<Vec<u8>> {
        if !need(&["mkfs.vfat", "mmd", "mcopy"]) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        // Sizes in KiB chosen so the cluster count lands in the FAT type's range.
        let (blocks, spc) = match fat_bits {
            "12" => ("2048", "4"),
            "16" => ("4096", "1"),
            _ => ("34816", "1"),
        };
        let ok = run(Command::new("mkfs.vfat")
            .args(["-C", "-F", fat_bits, "-s", spc, "-n", "FUZZ"])
            .arg(&img)
            .arg(blocks));
        if !ok {
            return None;
        }
        let f = tmp.path().join("A Long File Name.txt");
        std::fs::write(&f, vec![b'a'; 5000]).unwrap();
        let i = img.to_str().unwrap();
        let ok = run(Command::new("mmd").args(["-i", i, "::/Dir One", "::/Dir One/Inner"]))
            && run(Command::new("mcopy")
                .args(["-i", i])
                .arg(&f)
                .arg("::/Dir One/Inner/"))
            && run(Command::new("mcopy").args(["-i", i]).arg(&f).arg("::/"));
        ok.then(|| std::fs::read(&img).unwrap())
    }

    #[test]
    fn fat_mutations_never_panic() {
        for bits in ["12", "16"] {
            let Some(img) = build_fat(bits) else { return };
            let fs = FatFs::open(mem(&img)).unwrap();
            // A Long File Name.txt, Dir One, Inner, A Long File Name.txt.
            assert_eq!(walk(&fs), 4);
            // Boot sector, both FATs and the root directory hold all the metadata here.
            let bs = crate::fat::BootSector::read(&MemDisk::from_vec(img.clone())).unwrap();
            let meta = bs.data_offset() as usize + 4 * bs.cluster_size() as usize;
            let mut opened = 0;
            for m in mutants(&img, &[0..512, 512..meta], 500, 0x5eed_0010) {
                fuzz_fat(&m);
                opened += usize::from(FatFs::open(mem(&m)).is_ok());
            }
            assert!(opened > 500 / 4, "only {opened} of 500 mutants opened");
        }
    }

    #[test]
    fn fat32_seed_walks() {
        let Some(img) = build_fat("32") else { return };
        let fs = FatFs::open(mem(&img)).unwrap();
        assert_eq!(walk(&fs), 4);
        fuzz_probe(&img);
    }

    #[test]
    fn probe_mutations_never_panic() {
        // Every signature family in one small buffer set: zeros, then random bytes.
        let mut rng = testutil::Rng(0x5eed_0100);
        for len in [0usize, 1, 511, 512, 4096, 70_000] {
            fuzz_probe(&vec![0u8; len]);
            for _ in 0..20 {
                fuzz_probe(&rng.bytes(len));
            }
        }
    }
}
