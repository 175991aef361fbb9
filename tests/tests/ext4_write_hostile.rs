//! Hostile input for the ext2/3/4 *writer*: 1,000 deterministic mutations of small ext images,
//! each opened with `guestfs::open_rw` and edited (read_dir, read files, write a new file,
//! overwrite one, add to a large htree directory, append to a file with an extent tree, mkdir,
//! unlink, rename, set an xattr, flush) in a child process
//! (`ext4_write_one`), so a crash in libext2fs's C code is caught and counted rather than
//! taking the test runner down.
//!
//! The writer goes through libext2fs, which parses the metadata in C and is not hardened the way
//! `e2fsck` is; `guestfs::ext4::Ext4Rw::open` therefore validates the image first. This test
//! measures that: every child must end with success or a clean error, never a signal (crash
//! or abort), a panic, a hang (killed after [`HANG_LIMIT`]) or an allocation failure under the
//! [`MEMORY_LIMIT`] address-space limit (set with `prlimit`, so the child needs no unsafe code).
//!
//! Three base images cover the three metadata dialects: ext4 with `metadata_csum` (most flips
//! are caught by checksums), ext4 without it (as CentOS 7 era guests have: flips reach the
//! parsers), and ext3 (indirect blocks, no extents). Most flips land in the metadata blocks
//! `dumpe2fs` and `debugfs` report (superblocks, group descriptors, bitmaps, the used part of
//! the inode table, directory blocks, the journal superblock, indirect blocks); one in eight
//! lands anywhere and one mutation in ten is a truncation. The seed is fixed, so a failure
//! names a reproducible mutation: rerun it with
//! `target/debug/ext4_write_one IMAGE MUTATION [force]`.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{Rng, have_tool};

/// Total mutated images, spread over the base images.
const MUTATIONS: usize = 1000;
/// One child must finish within this, or it is killed and counted as a hang.
const HANG_LIMIT: Duration = Duration::from_secs(10);
/// The child's address-space limit (`RLIMIT_AS`); an allocation failing under it is an OOM.
const MEMORY_LIMIT: u64 = 1 << 30;
/// Children running at once.
const WORKERS: usize = 3;
/// Size of each base image.
const IMAGE_SIZE: &str = "4M";
/// How many times the primary superblock and the group descriptor block count among the hot
/// ranges: their fields shape everything else libext2fs computes, so they get more flips than
/// one directory block.
const HEADER_WEIGHT: usize = 8;
/// Mutations that once crashed the writer, run first (found by an exhaustive single-byte sweep
/// of the superblock, group descriptors, inodes and directory blocks of these images).
const REGRESSIONS: &[(&str, &str)] = &[
    // s_first_data_block 128 on a 1 KiB-block filesystem: libext2fs freed an invalid pointer
    // at close (abort); now refused by `ffi::ext2fs`'s geometry check.
    ("ext4-nocsum", "1044=128"),
    ("ext3", "1044=128"),
];
/// `big.bin` is this many 1 KiB pieces with [`SPARSE_GAP`]-byte holes between them.
const SPARSE_PIECES: usize = 40;
const SPARSE_GAP: i64 = 7168;
/// Entries in `/dir`, enough for a multi-block directory with an htree.
const DIR_ENTRIES: usize = 200;
/// Bytes of each inode table counted as hot: the fixture uses fewer than 64 inodes of at most
/// 256 bytes.
const HOT_INODE_TABLE: u64 = 64 * 256;

/// A base image and where its metadata lives.
struct Base {
    name: &'static str,
    path: PathBuf,
    size: u64,
    hot: Vec<(u64, u64)>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn debugfs(img: &Path, request: &str, write: bool) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    run(cmd.arg("-R").arg(request).arg(img))
}

/// The numbers after `key` on `line`, e.g. `Inode table at 66-321` → [66, 321].
fn numbers_after(line: &str, key: &str) -> Vec<u64> {
    let Some(rest) = line.split(key).nth(1) else {
        return Vec::new();
    };
    let first = rest.split([' ', ',', '(']).find(|w| !w.is_empty());
    first
        .map(|w| w.split('-').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Builds one base image with `mke2fs -d` from a small tree and finds its metadata.
fn build(dir: &Path, name: &'static str, mkfs: &[&str]) -> Base {
    let src = dir.join(format!("{name}-src"));
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::write(src.join("hello.txt"), b"hello\n").unwrap();
    // A sparse file of many small pieces, so it needs an extent tree of depth 1 (ext4) or
    // indirect blocks with holes (ext3).
    let mut rng = Rng::new(0xb16_f11e);
    let mut f = std::fs::File::create(src.join("big.bin")).unwrap();
    for _ in 0..SPARSE_PIECES {
        let piece: Vec<u8> = (0..1024).map(|_| rng.next_u64().to_le_bytes()[0]).collect();
        f.write_all(&piece).unwrap();
        f.seek(SeekFrom::Current(SPARSE_GAP)).unwrap();
    }
    drop(f);
    std::fs::write(src.join("dir/file2"), b"two\n").unwrap();
    std::fs::write(src.join("dir/sub/f3"), b"three\n").unwrap();
    // Enough entries that /dir spans many blocks; `e2fsck -D` below indexes it (htree).
    for i in 0..DIR_ENTRIES {
        std::fs::write(src.join(format!("dir/entry-with-a-longish-name-{i}")), b"x").unwrap();
    }
    std::os::unix::fs::symlink("hello.txt", src.join("link")).unwrap();
    let img = dir.join(format!("{name}.img"));
    run(Command::new("mke2fs")
        .args(["-q", "-F"])
        .args(mkfs)
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(IMAGE_SIZE));
    debugfs(&img, "ea_set /hello.txt user.test value", true);
    // Builds the htree index of /dir where the features allow it (exit 1: "fixed", i.e. done).
    let out = Command::new("e2fsck")
        .arg("-fyD")
        .arg(&img)
        .output()
        .expect("run e2fsck");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fyD {name}: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let dump = run(Command::new("dumpe2fs").arg(&img));
    let bs: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("dumpe2fs prints the block size");
    let mut hot = vec![(1024, 1024); HEADER_WEIGHT];
    let mut blocks = |range: &[u64], cap: u64| {
        if let (Some(&a), b) = (range.first(), range.get(1)) {
            let len = (b.copied().unwrap_or(a) - a + 1) * bs;
            hot.push((a * bs, len.min(cap)));
        }
    };
    for line in dump.lines() {
        blocks(&numbers_after(line, "superblock at "), bs);
        for _ in 0..HEADER_WEIGHT / 2 {
            blocks(&numbers_after(line, "Group descriptors at "), u64::MAX);
        }
        blocks(&numbers_after(line, "Block bitmap at "), bs);
        blocks(&numbers_after(line, "Inode bitmap at "), bs);
        blocks(&numbers_after(line, "Inode table at "), HOT_INODE_TABLE);
    }
    for d in ["/", "/dir", "/dir/sub", "/lost+found"] {
        for b in debugfs(&img, &format!("blocks {d}"), false).split_whitespace() {
            blocks(&[b.parse().expect("debugfs blocks prints numbers")], bs);
        }
    }
    // The journal superblock, and indirect or extent index blocks of the big file.
    for n in numbers_after(&debugfs(&img, "bmap <8> 0", false), "") {
        blocks(&[n], bs);
    }
    let stat = debugfs(&img, "stat /big.bin", false);
    assert!(
        stat.contains("(ETB0):") || stat.contains("(IND):"),
        "{name}: big.bin has neither an extent index nor an indirect block: {stat}"
    );
    assert!(
        debugfs(&img, "htree /dir", false).contains("Root node dump"),
        "{name}: /dir has no htree"
    );
    for key in ["(IND):", "(ETB0):"] {
        blocks(&numbers_after(&stat, key), bs);
    }
    let size = std::fs::metadata(&img).unwrap().len();
    hot.retain(|&(o, l)| l > 0 && o < size);
    Base {
        name,
        path: img,
        size,
        hot,
    }
}

/// A mutation in `ext4_write_one`'s syntax: a truncation, or a few byte replacements focused
/// on `base.hot`.
fn mutation(base: &Base, image: &[u8], rng: &mut Rng) -> String {
    if rng.below(10) == 0 {
        return format!("cut:{}", rng.below(base.size));
    }
    let mut patches = BTreeMap::new();
    for _ in 0..1 + rng.below(8) {
        let off = if rng.below(8) == 0 {
            rng.below(base.size)
        } else {
            let (o, l) = base.hot[usize::try_from(rng.below(base.hot.len() as u64)).unwrap()];
            (o + rng.below(l)).min(base.size - 1)
        };
        let old = image[usize::try_from(off).unwrap()];
        let new = match rng.below(4) {
            0 => 0,
            1 => 0xff,
            2 => old ^ (1 << rng.below(8)),
            _ => u8::try_from(rng.below(256)).unwrap(),
        };
        patches.insert(off, new);
    }
    patches
        .iter()
        .map(|(o, v)| format!("{o}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Success,
    /// `open_rw` refused the image.
    Refused,
    /// Opened, but a later step returned an error.
    StepError,
    Panic,
    Crash,
    Hang,
    Oom,
}

/// Runs one child and classifies how it ended; the second value is its output, for reports.
fn run_one(base: &Base, mutation: &str, force: bool) -> (Outcome, String) {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={MEMORY_LIMIT}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_ext4_write_one"))
        .arg(&base.path)
        .arg(mutation);
    if force {
        cmd.arg("force");
    }
    // `prlimit CMD` execs CMD, so the child's pid is the edit's own.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn prlimit");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break Some(s);
        }
        if start.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    let _ = child.stdout.take().unwrap().read_to_string(&mut out);
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let text = format!("{out}{err}");
    let Some(status) = status else {
        return (Outcome::Hang, text);
    };
    let outcome = match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Success,
        (Some(1), _) => Outcome::Refused,
        (Some(2), _) => Outcome::StepError,
        _ if err.contains("memory allocation of") || out.contains("Cannot allocate memory") => {
            Outcome::Oom
        }
        (Some(101), _) => Outcome::Panic,
        _ => Outcome::Crash,
    };
    (outcome, format!("{status}: {text}"))
}

/// The first error line of a child's output, shortened to its kind (for the summary).
fn first_error(text: &str) -> String {
    let line = text.lines().find(|l| l.contains(" err ")).unwrap_or("");
    let (step, msg) = line.split_once(" err ").unwrap_or(("?", line));
    let msg: String = msg.chars().take(60).collect();
    format!("{step}: {msg}")
}

#[test]
fn ext4_writer_survives_mutated_images() {
    for tool in ["mke2fs", "e2fsck", "debugfs", "dumpe2fs", "prlimit"] {
        if !have_tool(tool, "ext4 writer hostile-input test") {
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bases = [
        build(dir.path(), "ext4-csum", &["-t", "ext4"]),
        build(
            dir.path(),
            "ext4-nocsum",
            &["-t", "ext4", "-O", "^metadata_csum,^metadata_csum_seed"],
        ),
        build(dir.path(), "ext3", &["-t", "ext3"]),
    ];
    for base in &bases {
        assert!(
            base.hot.len() > 8,
            "{}: hot ranges {:?}",
            base.name,
            base.hot
        );
        // The unmutated image goes through every step, so mutations are measured against a
        // writer that works.
        let (outcome, text) = run_one(base, "-", false);
        assert_eq!(
            outcome,
            Outcome::Success,
            "{}: clean image: {text}",
            base.name
        );
    }

    // A soak run may ask for more mutations or another seed; CI uses the fixed defaults.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let mutations =
        env("EXT4_HOSTILE_MUTATIONS").map_or(MUTATIONS, |n| usize::try_from(n).unwrap());
    let mut rng = Rng::new(env("EXT4_HOSTILE_SEED").unwrap_or(0x00e4_7a11_e000_5eed));
    let images: Vec<Vec<u8>> = bases
        .iter()
        .map(|b| std::fs::read(&b.path).unwrap())
        .collect();
    let mut jobs: Vec<(usize, String, bool)> = REGRESSIONS
        .iter()
        .map(|(name, m)| {
            let b = bases.iter().position(|b| b.name == *name).unwrap();
            (b, (*m).to_string(), true)
        })
        .collect();
    jobs.extend((0..mutations).map(|i| {
        let b = i % bases.len();
        (b, mutation(&bases[b], &images[b], &mut rng), i % 2 == 1)
    }));

    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((b, m, force)) = jobs.get(i) else {
                        break;
                    };
                    let (outcome, text) = run_one(&bases[*b], m, *force);
                    results.lock().unwrap().push((i, outcome, text));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    assert_eq!(results.len(), jobs.len());

    let mut counts: BTreeMap<(&str, Outcome), usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut bad = Vec::new();
    for (i, outcome, text) in &results {
        let (b, m, force) = &jobs[*i];
        *counts.entry((bases[*b].name, *outcome)).or_default() += 1;
        match outcome {
            Outcome::Success => {}
            Outcome::Refused | Outcome::StepError => {
                *reasons.entry(first_error(text)).or_default() += 1;
            }
            _ => bad.push(format!(
                "mutation {i} ({:?}) of {} {m}{}: {}",
                outcome,
                bases[*b].path.display(),
                if *force { " force" } else { "" },
                text.chars().take(400).collect::<String>()
            )),
        }
    }
    for ((name, outcome), n) in &counts {
        eprintln!("{name:12} {outcome:?}: {n}");
    }
    let mut top: Vec<_> = reasons.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    for (reason, n) in top.iter().take(15) {
        eprintln!("  {n:4} {reason}");
    }
    for b in &bad {
        eprintln!("{b}");
    }
    // Keep the images of failures for reproduction.
    if !bad.is_empty() {
        let keep = dir.keep();
        eprintln!("base images kept in {}", keep.display());
    }
    assert!(
        bad.is_empty(),
        "{} of {} mutated images crashed, panicked, hung or ran out of memory",
        bad.len(),
        jobs.len()
    );
    // The mutations must reach the writer: some images open and then fail a step or succeed.
    let opened = results
        .iter()
        .filter(|r| matches!(r.1, Outcome::Success | Outcome::StepError))
        .count();
    assert!(
        opened > mutations / 10,
        "only {opened} mutated images opened"
    );
}
