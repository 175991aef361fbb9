//! FAT writing against an in-memory model, checked by the tools the field trusts: random
//! operations through `disk::txn::Transaction` over a raw file, then `fsck.vfat -n` must pass
//! and `mdir`/`mtype` must show exactly the model.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test sizes and pseudo-random numbers are small"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use disk::BlockWrite;
use disk::open::Access;
use disk::raw::RawFile;
use disk::txn::Transaction;
use guestfs::fat::FatFs;
use guestfs::write::{FsWrite, FsWriteExt, NewFileAttrs, Times, WriteOptions};
use guestfs::{Error, FileType, FsRead, FsReadExt, GuestPath};

/// A fixed-seed xorshift generator, so every run does the same operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn blob(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max) as usize;
        self.bytes(n)
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        v.get(self.below(v.len() as u64) as usize)
    }
}

fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            println!("skipping: {t} not found");
            return false;
        }
    }
    true
}

fn gp(s: &str) -> GuestPath {
    GuestPath::parse(s.as_bytes()).unwrap()
}

fn mtools(tool: &str, img: &Path) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(img);
    c
}

/// A fresh sparse FAT image of `bits` with `sectors` 512-byte sectors and `spc` per cluster.
fn mkfs(dir: &Path, bits: &str, kib: u64, spc: &str) -> std::path::PathBuf {
    let img = dir.join(format!("fat{bits}.img"));
    let st = Command::new("mkfs.vfat")
        .args(["-C", "-F", bits, "-s", spc, "-n", "TESTVOL"])
        .arg(&img)
        .arg(kib.to_string())
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    img
}

#[derive(Clone, Debug, PartialEq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

/// The model: full path (as created) → node. Names are unique ignoring case by construction.
#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, Node>,
    next_name: u32,
}

impl Model {
    fn dirs(&self) -> Vec<String> {
        let mut v = vec![String::new()];
        v.extend(
            self.nodes
                .iter()
                .filter(|(_, n)| **n == Node::Dir)
                .map(|(p, _)| p.clone()),
        );
        v
    }
    fn files(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n, Node::File(_)))
            .map(|(p, _)| p.clone())
            .collect()
    }
    fn fresh_name(&mut self, rng: &mut Rng) -> String {
        self.next_name += 1;
        let n = self.next_name;
        match rng.below(4) {
            0 => format!("F{n}.BIN"),
            1 => format!("file {n} with a Long Name.txt"),
            2 => format!("x{n}"),
            _ => format!("ünïcödé-{n}.dat"),
        }
    }
    fn is_empty_dir(&self, d: &str) -> bool {
        let prefix = format!("{d}/");
        !self.nodes.keys().any(|k| k.starts_with(&prefix))
    }
}

/// Runs the random operations; returns how many were applied.
fn random_ops(
    fs: &FatFs,
    model: &mut Model,
    rng: &mut Rng,
    count: usize,
    max_file: u64,
    img: &Path,
) -> usize {
    let debug = std::env::var_os("FAT_WRITE_DEBUG").is_some();
    let mut applied = 0;
    while applied < count {
        let op = rng.below(10);
        if debug {
            let fsck = Command::new("fsck.vfat")
                .arg("-n")
                .arg(img)
                .output()
                .unwrap();
            assert!(
                fsck.status.success(),
                "before op {applied} ({op}): {}",
                String::from_utf8_lossy(&fsck.stdout)
            );
            eprintln!("op {applied}: {op}");
        }
        match op {
            // create
            0 | 1 => {
                let dir = rng.pick(&model.dirs()).unwrap().clone();
                let path = format!("{dir}/{}", model.fresh_name(rng));
                let data = rng.blob(max_file);
                fs.write_file_path(path.as_bytes(), &data, &NewFileAttrs::file())
                    .unwrap();
                model.nodes.insert(path, Node::File(data));
            }
            // grow (append or write past the end)
            2 => {
                let Some(p) = rng.pick(&model.files()).cloned() else {
                    continue;
                };
                let Some(Node::File(data)) = model.nodes.get_mut(&p) else {
                    unreachable!()
                };
                let extra = rng.blob(max_file / 2);
                if rng.below(2) == 0 {
                    fs.append(&gp(&p), &extra).unwrap();
                } else {
                    let gap = rng.below(3000);
                    let at = data.len() as u64 + gap;
                    fs.write_at(&gp(&p), at, &extra).unwrap();
                    data.resize(at as usize, 0);
                }
                data.extend_from_slice(&extra);
            }
            // shrink or extend with truncate
            3 => {
                let Some(p) = rng.pick(&model.files()).cloned() else {
                    continue;
                };
                let Some(Node::File(data)) = model.nodes.get_mut(&p) else {
                    unreachable!()
                };
                let len = rng.below(data.len() as u64 + 2000);
                fs.truncate(&gp(&p), len).unwrap();
                data.resize(len as usize, 0);
            }
            // overwrite whole, or in the middle
            4 => {
                let Some(p) = rng.pick(&model.files()).cloned() else {
                    continue;
                };
                let Some(Node::File(data)) = model.nodes.get_mut(&p) else {
                    unreachable!()
                };
                if rng.below(2) == 0 {
                    *data = rng.blob(max_file);
                    fs.write_file(&gp(&p), data, &NewFileAttrs::file()).unwrap();
                } else {
                    let at = rng.below(data.len() as u64 + 1) as usize;
                    let new = rng.blob(5000);
                    fs.write_at(&gp(&p), at as u64, &new).unwrap();
                    if data.len() < at + new.len() {
                        data.resize(at + new.len(), 0);
                    }
                    data[at..at + new.len()].copy_from_slice(&new);
                }
            }
            // mkdir (-p, one or two levels)
            5 => {
                let dir = rng.pick(&model.dirs()).unwrap().clone();
                let a = format!("{dir}/{}", model.fresh_name(rng));
                if rng.below(3) == 0 {
                    let b = format!("{a}/{}", model.fresh_name(rng));
                    fs.mkdir_p(b.as_bytes(), &NewFileAttrs::dir()).unwrap();
                    model.nodes.insert(b, Node::Dir);
                } else {
                    fs.mkdir(&gp(&a), &NewFileAttrs::dir()).unwrap();
                }
                model.nodes.insert(a, Node::Dir);
            }
            // rename a file or a directory, maybe to another directory
            6 => {
                let all: Vec<String> = model.nodes.keys().cloned().collect();
                let Some(from) = rng.pick(&all).cloned() else {
                    continue;
                };
                let targets: Vec<String> = model
                    .dirs()
                    .into_iter()
                    .filter(|d| *d != from && !d.starts_with(&format!("{from}/")))
                    .collect();
                let dir = rng.pick(&targets).unwrap().clone();
                let to = format!("{dir}/{}", model.fresh_name(rng));
                fs.rename_path(from.as_bytes(), to.as_bytes()).unwrap();
                let moved: Vec<String> = model
                    .nodes
                    .keys()
                    .filter(|k| **k == from || k.starts_with(&format!("{from}/")))
                    .cloned()
                    .collect();
                for k in moved {
                    let n = model.nodes.remove(&k).unwrap();
                    model.nodes.insert(format!("{to}{}", &k[from.len()..]), n);
                }
            }
            // unlink
            7 | 8 => {
                let Some(p) = rng.pick(&model.files()).cloned() else {
                    continue;
                };
                fs.unlink_path(p.as_bytes()).unwrap();
                model.nodes.remove(&p);
            }
            // rmdir an empty directory (or check a non-empty one is refused)
            _ => {
                let dirs: Vec<String> = model.dirs().into_iter().skip(1).collect();
                let Some(d) = rng.pick(&dirs).cloned() else {
                    continue;
                };
                if model.is_empty_dir(&d) {
                    fs.rmdir_path(d.as_bytes()).unwrap();
                    model.nodes.remove(&d);
                } else {
                    assert!(matches!(
                        fs.rmdir_path(d.as_bytes()),
                        Err(Error::NotEmpty { .. })
                    ));
                }
            }
        }
        applied += 1;
    }
    applied
}

/// `fsck.vfat -n` passes, and `mdir`/`mtype` show exactly the model.
fn check_with_tools(img: &Path, model: &Model) {
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "fsck.vfat -n failed:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let out = mtools("mdir", img)
        .args(["-/", "-b", "::/"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut want: Vec<String> = model
        .nodes
        .iter()
        .map(|(p, n)| match n {
            Node::Dir => format!("::{p}/"),
            Node::File(_) => format!("::{p}"),
        })
        .collect();
    want.sort();
    assert_eq!(listed, want, "mdir listing differs from the model");
    // All file contents in one mtype call, concatenated in model order.
    let files = model.files();
    let mut want = Vec::new();
    for f in &files {
        let Some(Node::File(d)) = model.nodes.get(f) else {
            unreachable!()
        };
        want.extend_from_slice(d);
    }
    // mtype on a sample (one process per file), then every file through one `mcopy -s`.
    let mut got = Vec::new();
    for f in files.iter().step_by((files.len() / 40).max(1)) {
        let out = mtools("mtype", img).arg(format!("::{f}")).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let Some(Node::File(d)) = model.nodes.get(f) else {
            unreachable!()
        };
        assert!(out.stdout == *d, "mtype {f} differs from the model");
    }
    let host = tempfile::tempdir().unwrap();
    let out = mtools("mcopy", img)
        .args(["-s", "-n", "-m", "::/*"])
        .arg(host.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in &files {
        got.extend_from_slice(&std::fs::read(host.path().join(&f[1..])).unwrap());
    }
    assert_eq!(got.len(), want.len(), "mtype total length");
    assert!(got == want, "mtype contents differ from the model");
}

/// Our own reader agrees with the model too.
fn check_with_reader(fs: &dyn FsRead, model: &Model) {
    for (p, n) in &model.nodes {
        match n {
            Node::Dir => assert_eq!(
                fs.stat_path(p.as_bytes()).unwrap().file_type,
                FileType::Directory
            ),
            Node::File(d) => assert!(fs.read_file(p.as_bytes(), 64 << 20).unwrap() == *d, "{p}"),
        }
    }
}

struct Setup {
    bits: &'static str,
    kib: u64,
    spc: &'static str,
    ops: usize,
    max_file: u64,
    big_dir: usize,
    big_file: usize,
    seed: u64,
}

fn run(s: &Setup) {
    if !have(&["mkfs.vfat", "fsck.vfat", "mdir", "mtype"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let img = mkfs(tmp.path(), s.bits, s.kib, s.spc);
    let undo = tmp.path().join("undo");
    let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).unwrap());
    let tx = Arc::new(Transaction::begin(raw, &undo).unwrap());
    let fs = FatFs::open_rw(tx.clone() as Arc<dyn BlockWrite>, WriteOptions::new()).unwrap();
    let mut model = Model::default();
    let mut rng = Rng(s.seed);

    if s.big_dir > 0 {
        fs.mkdir_p(b"/many/entries", &NewFileAttrs::dir()).unwrap();
        model.nodes.insert("/many".into(), Node::Dir);
        model.nodes.insert("/many/entries".into(), Node::Dir);
        for i in 0..s.big_dir {
            let p = format!("/many/entries/entry number {i}.txt");
            let data = format!("{i}\n").into_bytes();
            fs.write_file_path(p.as_bytes(), &data, &NewFileAttrs::file())
                .unwrap();
            model.nodes.insert(p, Node::File(data));
        }
        assert_eq!(fs.read_dir(&gp("/many/entries")).unwrap().len(), s.big_dir);
    }
    if s.big_file > 0 {
        let data = rng.bytes(s.big_file);
        fs.write_file_path(b"/big.bin", &data, &NewFileAttrs::file())
            .unwrap();
        model.nodes.insert("/big.bin".into(), Node::File(data));
    }
    let applied = random_ops(&fs, &mut model, &mut rng, s.ops, s.max_file, &img);
    assert_eq!(applied, s.ops);
    check_with_reader(&fs, &model);
    fs.flush().unwrap();
    drop(fs);
    Arc::try_unwrap(tx).ok().unwrap().commit().unwrap();
    check_with_tools(&img, &model);
}

#[test]
fn fat32_random_operations_match_model_and_tools() {
    run(&Setup {
        bits: "32",
        kib: 64 * 1024,
        spc: "1",
        ops: 300,
        max_file: 40_000,
        big_dir: 1000,
        big_file: 10 * 1024 * 1024 + 12345,
        seed: 0x05ee_df32,
    });
}

#[test]
fn fat16_random_operations_match_model_and_tools() {
    run(&Setup {
        bits: "16",
        kib: 32 * 1024,
        spc: "4",
        ops: 250,
        max_file: 30_000,
        big_dir: 500,
        big_file: 3 * 1024 * 1024,
        seed: 0x05ee_df16,
    });
}

#[test]
fn fat12_random_operations_match_model_and_tools() {
    run(&Setup {
        bits: "12",
        kib: 4 * 1024,
        spc: "4",
        ops: 200,
        max_file: 8_000,
        big_dir: 0,
        big_file: 0,
        seed: 0x05ee_df12,
    });
}

fn fresh_fs(bits: &str, tmp: &Path) -> Option<(std::path::PathBuf, Arc<dyn BlockWrite>)> {
    if !have(&["mkfs.vfat", "fsck.vfat", "mattrib"]) {
        return None;
    }
    let img = mkfs(tmp, bits, 8 * 1024, "1");
    let raw: Arc<dyn BlockWrite> = Arc::new(RawFile::open(&img, Access::ReadWrite).unwrap());
    Some((img, raw))
}

#[test]
fn dirty_volume_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((img, dev)) = fresh_fs("16", tmp.path()) else {
        return;
    };
    // Set BS_Reserved1's dirty bit (offset 0x25 on FAT16).
    let mut b = [0u8; 1];
    dev.read_exact_at(0x25, &mut b).unwrap();
    dev.write_all_at(0x25, &[b[0] | 1]).unwrap();
    let before = std::fs::read(&img).unwrap();
    let e = FatFs::open_rw(dev.clone(), WriteOptions::new()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unclean {
                what: "fat volume",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "refusing to write fat volume: the boot sector's dirty flag (byte 0x25 = 0x01) is set: \
         the volume was not unmounted cleanly; check it with fsck.vfat (or Windows chkdsk) first, \
         or force the write"
    );
    assert_eq!(
        std::fs::read(&img).unwrap(),
        before,
        "refusal changed the image"
    );
    let fs = FatFs::open_rw(dev.clone(), WriteOptions::new().force(true)).unwrap();
    fs.write_file_path(b"/forced.txt", b"ok", &NewFileAttrs::file())
        .unwrap();
    assert_eq!(fs.read_file(b"/FORCED.TXT", 10).unwrap(), b"ok");
    // The dirty flag stays set: forcing does not declare the volume clean.
    dev.read_exact_at(0x25, &mut b).unwrap();
    assert_eq!(b[0] & 1, 1);

    // FAT32: the clean-shutdown bit of FAT[1].
    let tmp32 = tempfile::tempdir().unwrap();
    let img32 = mkfs(tmp32.path(), "32", 40 * 1024, "1");
    let dev32: Arc<dyn BlockWrite> = Arc::new(RawFile::open(&img32, Access::ReadWrite).unwrap());
    let fs32 = FatFs::open_rw(dev32.clone(), WriteOptions::new()).unwrap();
    let fat1 = fs32.boot_sector().fat_offset() + 4;
    drop(fs32);
    let mut e1 = [0u8; 4];
    dev32.read_exact_at(fat1, &mut e1).unwrap();
    let v = u32::from_le_bytes(e1) & !0x0800_0000;
    dev32.write_all_at(fat1, &v.to_le_bytes()).unwrap();
    let e = FatFs::open_rw(dev32, WriteOptions::new()).unwrap_err();
    assert!(
        e.to_string().contains("lacks the clean-shutdown bit"),
        "{e}"
    );
}

#[test]
fn fat_limits_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let Some((img, dev)) = fresh_fs("16", tmp.path()) else {
        return;
    };
    let fs = FatFs::open_rw(dev, WriteOptions::new()).unwrap();
    let unsupported = |r: guestfs::Result<()>| {
        assert!(
            matches!(r, Err(Error::Unsupported { what: "fat", .. })),
            "{r:?}"
        );
    };
    fs.write_file_path(b"/a.txt", b"abc", &NewFileAttrs::file())
        .unwrap();
    unsupported(fs.set_owner(&gp("/a.txt"), 1000, 1000));
    unsupported(fs.set_xattr(&gp("/a.txt"), b"security.selinux", b"x"));
    unsupported(fs.remove_xattr(&gp("/a.txt"), b"security.selinux"));
    unsupported(fs.symlink(&gp("/l"), b"/a.txt", &NewFileAttrs::file()));
    unsupported(fs.write_file(
        &gp("/b"),
        b"",
        &NewFileAttrs::file().xattr(b"security.selinux", b"x"),
    ));
    assert!(matches!(
        fs.get_xattr(&gp("/a.txt"), b"user.x"),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        fs.list_xattrs(&gp("/a.txt")),
        Err(Error::Unsupported { .. })
    ));
    // Existing names, kinds, and paths that go nowhere.
    fs.mkdir(&gp("/d"), &NewFileAttrs::dir()).unwrap();
    assert!(matches!(
        fs.mkdir(&gp("/D"), &NewFileAttrs::dir()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        fs.unlink(&gp("/d")),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.rmdir(&gp("/a.txt")),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.unlink(&gp("/nope")),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/nope/x"), b"", &NewFileAttrs::file()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/d"), b"", &NewFileAttrs::file()),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.rename(&gp("/d"), &gp("/d/inner")),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.rename(&gp("/a.txt"), &gp("/d")),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/bad:name"), b"", &NewFileAttrs::file()),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.mkdir_path(b"/d/..", &NewFileAttrs::dir()),
        Err(Error::InvalidPath { .. })
    ));
    // mkdir -p over a file.
    assert!(matches!(
        fs.mkdir_p(b"/a.txt/x", &NewFileAttrs::dir()),
        Err(Error::NotADirectory { .. })
    ));

    // Replacing keeps the read-only attribute (FAT's only "mode"); set_mode toggles it.
    fs.set_mode(&gp("/a.txt"), 0o444).unwrap();
    assert_eq!(fs.lstat(&gp("/a.txt")).unwrap().mode, 0o444);
    fs.write_file(&gp("/A.TXT"), b"replaced", &NewFileAttrs::file())
        .unwrap();
    let md = fs.lstat(&gp("/a.txt")).unwrap();
    assert_eq!((md.mode, md.size), (0o444, 8));
    fs.write_file(&gp("/ro-new"), b"r", &NewFileAttrs::with_mode(0o400))
        .unwrap();
    assert_eq!(fs.lstat(&gp("/ro-new")).unwrap().mode, 0o444);
    fs.set_mode(&gp("/ro-new"), 0o644).unwrap();
    assert_eq!(fs.lstat(&gp("/ro-new")).unwrap().mode, 0o644);
    // Times.
    fs.set_times(
        &gp("/ro-new"),
        &Times {
            atime: None,
            mtime: Some(1_577_934_246),
        },
    )
    .unwrap();
    assert_eq!(fs.lstat(&gp("/ro-new")).unwrap().mtime, 1_577_934_246);
    // Case-only rename, replacing rename, and moving a tree.
    fs.rename(&gp("/ro-new"), &gp("/RO-New")).unwrap();
    let names: Vec<_> = fs
        .read_dir(&GuestPath::root())
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&b"RO-New".to_vec()), "{names:?}");
    fs.mkdir_p(b"/d/e/f", &NewFileAttrs::dir()).unwrap();
    fs.write_file_path(b"/d/e/f/deep", b"deep", &NewFileAttrs::file())
        .unwrap();
    fs.mkdir(&gp("/target"), &NewFileAttrs::dir()).unwrap();
    fs.rename(&gp("/d/e"), &gp("/target/moved")).unwrap();
    assert_eq!(fs.read_file(b"/target/moved/f/deep", 10).unwrap(), b"deep");
    assert!(!fs.exists(b"/d/e").unwrap());
    fs.rename(&gp("/RO-New"), &gp("/a.txt")).unwrap();
    assert_eq!(fs.read_file(b"/a.txt", 10).unwrap(), b"r");
    fs.set_mode(&gp("/a.txt"), 0o555).unwrap();
    drop(fs);
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let out = mtools("mattrib", &img).arg("::/a.txt").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("R"),
        "{out:?}"
    );

    // A read-only FatFs refuses every write.
    let ro = FatFs::open(Arc::new(RawFile::open(&img, Access::ReadOnly).unwrap())).unwrap();
    assert!(matches!(
        ro.write_file(&gp("/x"), b"", &NewFileAttrs::file()),
        Err(Error::Disk(disk::Error::ReadOnly))
    ));
}

/// Adds everything under `dir` (as our reader lists it) to the model.
fn seed_model(fs: &dyn FsRead, dir: &str, model: &mut Model) {
    let at = if dir.is_empty() { gp("/") } else { gp(dir) };
    for e in fs.read_dir(&at).unwrap() {
        let name = String::from_utf8(e.name).unwrap();
        let p = format!("{dir}/{name}");
        if e.file_type == FileType::Directory {
            model.nodes.insert(p.clone(), Node::Dir);
            seed_model(fs, &p, model);
        } else {
            let data = fs.read_file(p.as_bytes(), 64 << 20).unwrap();
            model.nodes.insert(p, Node::File(data));
        }
    }
}

/// The same random operations on a builder image's real ESP (made by mkfs.vfat and mtools with
/// a bootloader tree), so existing entries are edited, deleted and renamed too.
#[test]
fn builder_esp_random_operations_match_model_and_tools() {
    if !have(&["mkfs.vfat", "fsck.vfat", "mdir", "mtype", "mcopy"]) {
        return;
    }
    let image = match images::build("ubuntu2204-uefi") {
        Ok(p) => p,
        Err(e) => {
            println!("skipping: cannot build ubuntu2204-uefi: {e}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let whole = RawFile::open(&image, Access::ReadOnly).unwrap();
    let table = disk::partition::read_table(&whole).unwrap();
    let bytes = std::fs::read(&image).unwrap();
    let esp = table
        .partitions
        .iter()
        .find(|p| {
            let s = p.start as usize;
            let v = &bytes[s..s + p.len as usize];
            matches!(
                guestfs::probe(&disk::MemDisk::from_vec(v[..1 << 16].to_vec())).map(|p| p.kind),
                Ok(guestfs::FsKind::Fat12 | guestfs::FsKind::Fat16 | guestfs::FsKind::Fat32)
            )
        })
        .expect("the builder image has a FAT ESP");
    let img = tmp.path().join("esp.img");
    let s = esp.start as usize;
    std::fs::write(&img, &bytes[s..s + esp.len as usize]).unwrap();
    let undo = tmp.path().join("undo");
    let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).unwrap());
    let tx = Arc::new(Transaction::begin(raw, &undo).unwrap());
    let fs = FatFs::open_rw(tx.clone() as Arc<dyn BlockWrite>, WriteOptions::new()).unwrap();
    let mut model = Model::default();
    seed_model(&fs, "", &mut model);
    let before = model.nodes.len();
    assert!(
        before >= 3,
        "the ESP holds a bootloader tree: {:?}",
        model.nodes.keys()
    );
    let mut rng = Rng(0x0e5b_0001);
    let applied = random_ops(&fs, &mut model, &mut rng, 200, 30_000, &img);
    assert_eq!(applied, 200);
    check_with_reader(&fs, &model);
    fs.flush().unwrap();
    drop(fs);
    Arc::try_unwrap(tx).ok().unwrap().commit().unwrap();
    check_with_tools(&img, &model);
}
