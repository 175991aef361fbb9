//! Tests of the NTFS writer: random operations against a model on fresh `mkntfs` volumes and (in
//! `builder`) on the system volumes of the Windows builder images, the real Windows-formatted
//! `dissect.ntfs` volume, and the refusals; results are checked with the independent ntfs-3g
//! tools (`ntfsfix -n`, `ntfsls`, `ntfscat`, `ntfssecaudit`) after unmount.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::open::Access;
use disk::raw::RawFile;
use disk::{BlockRead, BlockWrite, MemDisk};

use super::NtfsRw;
use crate::ntfs::fixtures::{dissect_ntfs_image, have};
use crate::write::{FsWrite, FsWriteExt, NewFileAttrs, Times, WriteOptions};
use crate::{Error, FileType, FsKind, FsRead, FsReadExt, GuestPath};

mod builder;

fn have_tools() -> bool {
    for t in ["mkntfs", "ntfsfix", "ntfscat", "ntfsls"] {
        if !have(t) {
            println!("skipping: {t} not found");
            return false;
        }
    }
    true
}

/// A fixed-seed xorshift64* generator (deterministic runs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn idx(&mut self, n: usize) -> usize {
        usize::try_from(self.below(n as u64)).expect("index fits")
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[3]).collect()
    }
}

fn mkntfs(dir: &Path, mib: u64) -> PathBuf {
    let img = dir.join("ntfs.img");
    let f = std::fs::File::create(&img).expect("create image");
    f.set_len(mib << 20).expect("size image");
    drop(f);
    let out = Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "rehost"])
        .arg(&img)
        .output()
        .expect("run mkntfs");
    assert!(out.status.success(), "mkntfs: {out:?}");
    img
}

fn raw(img: &Path) -> Arc<dyn BlockWrite> {
    Arc::new(RawFile::open(img, Access::ReadWrite).expect("open image"))
}

fn gp(p: &str) -> GuestPath {
    GuestPath::parse(p.as_bytes()).expect("path")
}

/// `ntfsfix -n`: exit status and everything it printed.
fn ntfsfix_report(img: &Path) -> (bool, String) {
    let out = Command::new("ntfsfix")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run ntfsfix");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (
        out.status.success(),
        text.replace(&img.display().to_string(), "IMG"),
    )
}

fn ntfsfix_clean(img: &Path) {
    let out = Command::new("ntfsfix")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run ntfsfix");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ntfsfix -n failed: {text}");
    assert!(
        text.contains("was processed successfully") && !text.contains("FAILED"),
        "ntfsfix -n: {text}"
    );
}

fn ntfscat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("ntfscat")
        .arg(img)
        .arg(path)
        .output()
        .expect("run ntfscat");
    assert!(out.status.success(), "ntfscat {path}: {out:?}");
    out.stdout
}

/// `ntfsls -F -p dir`: names, directories with a trailing `/`.
fn ntfsls(img: &Path, dir: &str) -> BTreeSet<String> {
    let out = Command::new("ntfsls")
        .args(["-F", "-p", dir])
        .arg(img)
        .output()
        .expect("run ntfsls");
    assert!(out.status.success(), "ntfsls {dir}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && *l != "./" && *l != "../" && !l.starts_with('$'))
        .map(str::to_owned)
        .collect()
}

fn hash(dev: &dyn BlockRead) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < dev.size() {
        let n = usize::try_from((dev.size() - off).min(1 << 20)).expect("chunk fits");
        dev.read_exact_at(off, &mut buf[..n]).expect("read");
        buf[..n].hash(&mut h);
        off += n as u64;
    }
    h.finish()
}

/// The model: path → `None` for a directory, `Some(contents)` for a file (root implicit).
type Model = BTreeMap<String, Option<Vec<u8>>>;

fn children<'a>(
    model: &'a Model,
    dir: &str,
) -> impl Iterator<Item = (&'a String, &'a Option<Vec<u8>>)> {
    let prefix = if dir == "/" {
        "/".to_owned()
    } else {
        format!("{dir}/")
    };
    model.iter().filter(move |(p, _)| {
        p.strip_prefix(prefix.as_str())
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
    })
}

fn name_of(p: &str) -> &str {
    p.rsplit('/').next().expect("a name")
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn depth(p: &str) -> usize {
    p.matches('/').count()
}

/// How deep `p` is below `root` (`root`'s children are at depth 1).
fn depth_below(root: &str, p: &str) -> usize {
    if root == "/" {
        depth(p)
    } else {
        depth(p).saturating_sub(depth(root))
    }
}

/// The directories of the model under `root`, `root` first.
fn model_dirs(root: &str, model: &Model) -> Vec<String> {
    let mut dirs = vec![root.to_owned()];
    dirs.extend(
        model
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(p, _)| p.clone()),
    );
    dirs
}

/// Checks that `fs` holds exactly the model under `root` (listings and contents); `fs` is the
/// writer while it is mounted, or the read-only reader afterwards.
fn check_fs(fs: &dyn FsRead, root: &str, model: &Model) {
    for d in &model_dirs(root, model) {
        let got: BTreeSet<(Vec<u8>, bool)> = fs
            .read_dir(&gp(d))
            .unwrap_or_else(|e| panic!("read_dir {d}: {e}"))
            .into_iter()
            .filter(|e| !e.name.starts_with(b"$"))
            .map(|e| (e.name, e.file_type == FileType::Directory))
            .collect();
        let want: BTreeSet<(Vec<u8>, bool)> = children(model, d)
            .map(|(p, v)| (name_of(p).as_bytes().to_vec(), v.is_none()))
            .collect();
        assert_eq!(got, want, "listing of {d}");
    }
    for (p, v) in model {
        let md = fs
            .lstat(&gp(p))
            .unwrap_or_else(|e| panic!("lstat {p}: {e}"));
        match v {
            Some(data) => {
                assert_eq!(md.file_type, FileType::Regular, "{p}");
                assert_eq!(md.size, data.len() as u64, "{p}");
                let got = fs.read_file(p.as_bytes(), 64 << 20).expect("read");
                assert!(got == *data, "{p}: contents differ");
            }
            None => assert_eq!(md.file_type, FileType::Directory, "{p}"),
        }
    }
}

/// Checks the unmounted image against the model under `root` with the ntfs-3g tools: `ntfsfix -n`
/// is clean, `ntfsls` lists exactly the model, and `ntfscat` reads back at most `sample` files
/// of each directory byte for byte.
fn check_image(img: &Path, root: &str, model: &Model, sample: usize) {
    ntfsfix_clean(img);
    for d in &model_dirs(root, model) {
        let want: BTreeSet<String> = children(model, d)
            .map(|(p, v)| {
                if v.is_some() {
                    name_of(p).to_owned()
                } else {
                    format!("{}/", name_of(p))
                }
            })
            .collect();
        assert_eq!(ntfsls(img, d), want, "ntfsls of {d}");
        for (p, v) in children(model, d).filter(|(_, v)| v.is_some()).take(sample) {
            let data = v.as_ref().expect("a file");
            assert!(ntfscat(img, p) == *data, "ntfscat {p}: contents differ");
        }
    }
}

/// How many kinds of operation [`random_ops`] draws from.
const OPS: usize = 9;

/// Runs `steps` random operations inside the existing directory `root` of `fs` (create or
/// replace, grow past the end, shrink, overwrite, mkdir, unlink, rmdir, rename, read back),
/// keeping `model` (the subtree below `root`, paths absolute) in step and checking each result
/// and each expected refusal as it goes. Returns how often each operation ran. The ntfs-3g tools
/// can only look once the volume is unmounted: see [`check_image`].
#[expect(
    clippy::too_many_lines,
    reason = "one operation per match arm, kept together"
)]
fn random_ops(
    fs: &dyn FsWrite,
    root: &str,
    model: &mut Model,
    steps: usize,
    rng: &mut Rng,
) -> [usize; OPS] {
    let mut counts = [0usize; OPS];
    for step in 0..steps {
        let files: Vec<String> = model
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        let mut dirs: Vec<String> = model
            .iter()
            .filter(|(_, v)| v.is_none())
            .map(|(p, _)| p.clone())
            .collect();
        let subdirs = dirs.clone();
        dirs.push(root.to_owned());
        let op = rng.idx(OPS);
        let what = format!("{root}: step {step} op {op}");
        match op {
            // Create or replace a file (sizes from resident to several clusters of runs).
            0 => {
                let parent = pick(rng, &dirs).expect("root is there").clone();
                let p = join(&parent, &format!("f{}", rng.below(12)));
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.idx(600),
                    _ => rng.idx(80_000),
                };
                let data = rng.bytes(len);
                let r = fs.write_file(&gp(&p), &data, &NewFileAttrs::file());
                match model.get(&p) {
                    Some(None) => {
                        assert!(
                            matches!(r, Err(Error::IsADirectory { .. })),
                            "{what}: {r:?}"
                        );
                    }
                    _ => {
                        r.unwrap_or_else(|e| panic!("{what}: write_file {p}: {e}"));
                        model.insert(p, Some(data));
                    }
                }
            }
            // Grow past the end (a gap of zeros).
            1 => {
                let Some(p) = pick(rng, &files).cloned() else {
                    continue;
                };
                let cur = model[&p].as_ref().expect("file").len();
                let at = cur + rng.idx(5000);
                let len = 1 + rng.idx(20_000);
                let data = rng.bytes(len);
                fs.write_at(&gp(&p), at as u64, &data)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let m = model.get_mut(&p).expect("file").as_mut().expect("file");
                m.resize(at, 0);
                m.extend_from_slice(&data);
            }
            // Shrink.
            2 => {
                let Some(p) = pick(rng, &files).cloned() else {
                    continue;
                };
                let m = model.get_mut(&p).expect("file").as_mut().expect("file");
                let len = rng.idx(m.len() + 1);
                fs.truncate(&gp(&p), len as u64)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                m.truncate(len);
            }
            // Overwrite inside (possibly running past the end).
            3 => {
                let Some(p) = pick(rng, &files).cloned() else {
                    continue;
                };
                let m = model.get_mut(&p).expect("file").as_mut().expect("file");
                let at = rng.idx(m.len() + 1);
                let len = 1 + rng.idx(10_000);
                let data = rng.bytes(len);
                fs.write_at(&gp(&p), at as u64, &data)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                if m.len() < at + data.len() {
                    m.resize(at + data.len(), 0);
                }
                m[at..at + data.len()].copy_from_slice(&data);
            }
            // mkdir (depth at most 3).
            4 => {
                let parents: Vec<String> = dirs
                    .iter()
                    .filter(|d| *d == root || depth_below(root, d) < 3)
                    .cloned()
                    .collect();
                let parent = pick(rng, &parents).expect("root is there").clone();
                let p = join(&parent, &format!("d{}", rng.below(6)));
                let r = fs.mkdir(&gp(&p), &NewFileAttrs::dir());
                if let std::collections::btree_map::Entry::Vacant(slot) = model.entry(p.clone()) {
                    r.unwrap_or_else(|e| panic!("{what}: mkdir {p}: {e}"));
                    slot.insert(None);
                } else {
                    assert!(
                        matches!(r, Err(Error::AlreadyExists { .. })),
                        "{what}: {r:?}"
                    );
                }
            }
            // unlink.
            5 => {
                let Some(p) = pick(rng, &files).cloned() else {
                    continue;
                };
                fs.unlink(&gp(&p)).unwrap_or_else(|e| panic!("{what}: {e}"));
                model.remove(&p);
            }
            // rmdir (non-empty ones must fail and stay).
            6 => {
                let Some(p) = pick(rng, &subdirs).cloned() else {
                    continue;
                };
                let r = fs.rmdir(&gp(&p));
                if children(model, &p).next().is_some() {
                    assert!(matches!(r, Err(Error::NotEmpty { .. })), "{what}: {r:?}");
                } else {
                    r.unwrap_or_else(|e| panic!("{what}: rmdir {p}: {e}"));
                    model.remove(&p);
                }
            }
            // rename, with every kind of target.
            7 => {
                let all: Vec<String> = model.keys().cloned().collect();
                let Some(src) = pick(rng, &all).cloned() else {
                    continue;
                };
                let parent = pick(rng, &dirs).expect("root is there").clone();
                let name = if rng.below(2) == 0 {
                    format!("f{}", rng.below(12))
                } else {
                    format!("d{}", rng.below(6))
                };
                let dst = join(&parent, &name);
                if dst == src {
                    continue;
                }
                let r = fs.rename(&gp(&src), &gp(&dst));
                let src_is_dir = model[&src].is_none();
                if src_is_dir && dst.starts_with(&format!("{src}/")) {
                    assert!(matches!(r, Err(Error::InvalidPath { .. })), "{what}: {r:?}");
                    continue;
                }
                match (src_is_dir, model.get(&dst)) {
                    (false, Some(None)) => {
                        assert!(
                            matches!(r, Err(Error::IsADirectory { .. })),
                            "{what}: {r:?}"
                        );
                        continue;
                    }
                    (true, Some(Some(_))) => {
                        assert!(
                            matches!(r, Err(Error::NotADirectory { .. })),
                            "{what}: {r:?}"
                        );
                        continue;
                    }
                    (true, Some(None)) if children(model, &dst).next().is_some() => {
                        assert!(matches!(r, Err(Error::NotEmpty { .. })), "{what}: {r:?}");
                        continue;
                    }
                    _ => {}
                }
                r.unwrap_or_else(|e| panic!("{what}: rename {src} -> {dst}: {e}"));
                model.remove(&dst);
                let moved: Vec<(String, Option<Vec<u8>>)> = model
                    .iter()
                    .filter(|(p, _)| **p == src || p.starts_with(&format!("{src}/")))
                    .map(|(p, v)| (p.clone(), v.clone()))
                    .collect();
                for (p, v) in moved {
                    model.remove(&p);
                    model.insert(format!("{dst}{}", &p[src.len()..]), v);
                }
            }
            // Reads see writes.
            _ => {
                let Some(p) = pick(rng, &files).cloned() else {
                    continue;
                };
                let got = fs.read_file(p.as_bytes(), 64 << 20).expect("read");
                assert!(
                    got == *model[&p].as_ref().expect("file"),
                    "{what}: {p} differs"
                );
            }
        }
        counts[op] += 1;
    }
    counts
}

fn pick<'a>(rng: &mut Rng, items: &'a [String]) -> Option<&'a String> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.idx(items.len()))
    }
}

#[test]
fn random_operations_match_model_and_ntfs_3g_tools() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 128);
    let fs = crate::open_rw(raw(&img), WriteOptions::new()).expect("open_rw");
    assert_eq!(fs.info().kind, FsKind::Ntfs);
    assert_eq!(fs.info().label.as_deref(), Some("rehost"));
    let mut model = Model::new();
    let mut rng = Rng(0x6e74_6673_2d77_7269);
    let counts = random_ops(&*fs, "/", &mut model, 400, &mut rng);
    assert!(
        counts.iter().all(|&c| c > 10),
        "every operation ran: {counts:?}"
    );

    // A directory with thousands of entries (index allocation over many index blocks).
    fs.mkdir(&gp("/big"), &NewFileAttrs::dir())
        .expect("mkdir /big");
    model.insert("/big".into(), None);
    for i in 0..3000 {
        let p = format!("/big/entry-{i:05}.txt");
        fs.write_file(&gp(&p), i.to_string().as_bytes(), &NewFileAttrs::file())
            .unwrap_or_else(|e| panic!("{p}: {e}"));
        model.insert(p, Some(i.to_string().into_bytes()));
    }
    for i in (0..3000).step_by(7) {
        let p = format!("/big/entry-{i:05}.txt");
        fs.unlink(&gp(&p)).expect("unlink in big dir");
        model.remove(&p);
    }
    assert_eq!(fs.read_dir(&gp("/big")).expect("list").len(), 3000 - 429);

    // A file over 10 MiB, then a patch in its middle.
    let mut big = rng.bytes((12 << 20) + 123);
    fs.write_file(&gp("/bigfile.bin"), &big, &NewFileAttrs::file())
        .expect("big file");
    let patch = rng.bytes(100_000);
    fs.write_at(&gp("/bigfile.bin"), 5_000_000, &patch)
        .expect("patch");
    big[5_000_000..5_100_000].copy_from_slice(&patch);
    model.insert("/bigfile.bin".into(), Some(big));

    check_fs(&*fs, "/", &model);
    fs.flush().expect("flush");
    drop(fs);
    check_image(&img, "/", &model, 40);

    // Reopened, the volume still matches (what libntfs-3g wrote is what our reader path sees).
    let fs = NtfsRw::open_rw(raw(&img), WriteOptions::new()).expect("reopen");
    check_fs(&fs, "/", &model);
    drop(fs);
    // So does our own read-only reader.
    let ro = super::NtfsFs::open(raw(&img)).expect("reader");
    check_fs(&ro, "/", &model);
}

#[test]
fn metadata_and_unsupported_requests() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 16);
    let fs = NtfsRw::open_rw(raw(&img), WriteOptions::new()).expect("open");
    fs.write_file(
        &gp("/a.txt"),
        b"abc",
        &NewFileAttrs::file().mtime(1_500_000_000),
    )
    .expect("create with mtime");
    let md = fs.lstat(&gp("/A.TXT")).expect("case-insensitive lstat");
    assert_eq!(
        (
            md.file_type,
            md.size,
            md.mode,
            md.uid,
            md.gid,
            md.mtime,
            md.nlink
        ),
        (FileType::Regular, 3, 0o644, 0, 0, 1_500_000_000, 1)
    );
    assert!(md.ino >= 16);
    fs.set_times(
        &gp("/a.txt"),
        &Times {
            atime: None,
            mtime: Some(1_600_000_000),
        },
    )
    .expect("set_times");
    assert_eq!(fs.lstat(&gp("/a.txt")).expect("lstat").mtime, 1_600_000_000);
    // Mode and owner do not exist on NTFS: accepted, ignored, but the path must exist.
    fs.set_mode(&gp("/a.txt"), 0o600).expect("set_mode ignored");
    fs.set_owner(&gp("/a.txt"), 1000, 1000)
        .expect("set_owner ignored");
    assert_eq!(fs.lstat(&gp("/a.txt")).expect("lstat").mode, 0o644);
    assert!(
        fs.set_mode(&gp("/none"), 0o600)
            .is_err_and(|e| e.is_not_found())
    );
    for r in [
        fs.get_xattr(&gp("/a.txt"), b"user.x").map(drop),
        fs.set_xattr(&gp("/a.txt"), b"user.x", b"v"),
        fs.remove_xattr(&gp("/a.txt"), b"user.x"),
        fs.list_xattrs(&gp("/a.txt")).map(drop),
        fs.symlink(&gp("/l"), b"/a.txt", &NewFileAttrs::file()),
        fs.write_file(
            &gp("/x"),
            b"",
            &NewFileAttrs::file().xattr(b"security.selinux", b"x"),
        ),
    ] {
        assert!(matches!(r, Err(Error::Unsupported { .. })), "{r:?}");
    }
    assert!(
        fs.lstat(&gp("/x")).is_err_and(|e| e.is_not_found()),
        "nothing created"
    );
    // Taken names, case-insensitively; names Windows cannot open.
    assert!(matches!(
        fs.mkdir(&gp("/A.txt"), &NewFileAttrs::dir()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/a:b"), b"", &NewFileAttrs::file()),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.rmdir(&GuestPath::root()),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.read_link(&gp("/a.txt")),
        Err(Error::NotASymlink { .. })
    ));
    assert!(matches!(
        fs.unlink(&gp("/$MFT")),
        Err(Error::Unsupported { .. })
    ));
    // Through the path helpers.
    fs.mkdir_p(b"/x/y/z", &NewFileAttrs::dir())
        .expect("mkdir_p");
    fs.write_file_path(b"/x/y/z/f", b"1", &NewFileAttrs::file())
        .expect("write");
    assert_eq!(fs.append_path(b"/x/y/z/f", b"23").expect("append"), 3);
    fs.rename_path(b"/x/y", b"/x/w").expect("rename dir");
    assert_eq!(fs.read_file(b"/x/w/z/f", 10).expect("read"), b"123");
    drop(fs);
    ntfsfix_clean(&img);
    assert_eq!(ntfscat(&img, "/x/w/z/f"), b"123");
}

/// Hex dump lines of `ntfssecaudit -v` (`000010  14000000 0200b800 ...`) back to bytes.
fn security_descriptor(img: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("ntfssecaudit")
        .arg("-v")
        .arg(img)
        .arg(path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sd = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(off) = words.next() else { continue };
        if off.len() != 6 || !off.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for w in words {
            for i in (0..w.len()).step_by(2) {
                sd.push(u8::from_str_radix(&w[i..i + 2], 16).ok()?);
            }
        }
    }
    (!sd.is_empty()).then_some(sd)
}

/// (ACE flags, SID as bytes) of every ACE in the DACL of a self-relative descriptor.
fn dacl_aces(sd: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let u32_at = |at: usize| u32::from_le_bytes(sd[at..at + 4].try_into().expect("4 bytes"));
    let u16_at = |at: usize| u16::from_le_bytes(sd[at..at + 2].try_into().expect("2 bytes"));
    let dacl = u32_at(16) as usize;
    let count = u16_at(dacl + 4);
    let mut at = dacl + 8;
    let mut out = Vec::new();
    for _ in 0..count {
        let flags = sd[at + 1];
        let size = usize::from(u16_at(at + 2));
        out.push((flags, sd[at + 8..at + size].to_vec()));
        at += size;
    }
    out
}

/// SID bytes: revision 1, `n` sub-authorities, authority 5 (NT), then the sub-authorities.
fn nt_sid(subs: &[u32]) -> Vec<u8> {
    let mut v = vec![1, u8::try_from(subs.len()).expect("few"), 0, 0, 0, 0, 0, 5];
    for s in subs {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

#[test]
fn windows_volume_round_trips_and_new_files_inherit_security() {
    if !have_tools() {
        return;
    }
    let Some(src) = dissect_ntfs_image() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("ntfs.bin");
    std::fs::copy(&src, &img).expect("copy fixture");
    // The fixture file is a fixed VHD: the NTFS volume, then padding and a `conectix` footer.
    // ntfsfix looks for the alternate boot sector in the device's last sector, so the device
    // is the volume itself: its sectors plus the one holding that copy (BPB total sectors at
    // 0x28 counts all but it), as a partition would be.
    let boot = std::fs::read(&img).expect("read fixture");
    let sectors = u64::from_le_bytes(boot[0x28..0x30].try_into().expect("8 bytes"));
    let sector = u64::from(u16::from_le_bytes([boot[0x0b], boot[0x0c]]));
    assert_eq!(
        &boot[usize::try_from(sectors * sector).expect("fits")..][..3],
        &boot[..3],
        "alternate boot sector"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .and_then(|f| f.set_len((sectors + 1) * sector))
        .expect("cut the VHD footer off");
    let before = ntfsls(&img, "/Large Directory");
    assert_eq!(before.len(), 2048, "the fixture's large directory");
    let fix_before = ntfsfix_report(&img);
    assert!(
        fix_before.0,
        "the fixture volume is clean: {}",
        fix_before.1
    );

    let fs = crate::open_rw(raw(&img), WriteOptions::new()).expect("open_rw");
    let mut model = Model::new();
    for i in 0..50 {
        let p = format!("/Large Directory/rehost {i}.txt");
        let data = format!("written by rehost {i}\n").into_bytes();
        fs.write_file(&gp(&p), &data, &NewFileAttrs::file())
            .expect("write in large dir");
        model.insert(p, Some(data));
    }
    fs.mkdir(&gp("/Large Directory/rehost dir"), &NewFileAttrs::dir())
        .expect("mkdir");
    // The volume has 144 KiB free: a 2 MiB file does not fit, and the failed write leaves
    // nothing behind once removed. Deleting Windows' own files (one NTFS-compressed) makes room.
    let full = fs
        .write_file(
            &gp("/too-big.bin"),
            &vec![1; 2 << 20],
            &NewFileAttrs::file(),
        )
        .expect_err("no room yet");
    assert!(matches!(full, Error::LimitExceeded { .. }), "{full:?}");
    fs.unlink(&gp("/too-big.bin"))
        .expect("drop the partial file");
    fs.unlink(&gp("/Large.txt"))
        .expect("unlink a compressed windows file");
    fs.unlink(&gp("/Random.bin"))
        .expect("unlink a windows file");
    // The root directory is NTFS-compressed, so new files are too (LZNT1 through libntfs-3g):
    // 64 KiB of noise, then text that compresses, 1 MiB in all.
    let mut rng = Rng(0x0057_696e_646f_7773);
    let mut mib = rng.bytes(64 << 10);
    let mut line = 0u32;
    while mib.len() < 1 << 20 {
        mib.extend_from_slice(format!("rehost line {line:08}\n").as_bytes());
        line += 1;
    }
    mib.truncate(1 << 20);
    fs.write_file(&gp("/rehost-1mib.bin"), &mib, &NewFileAttrs::file())
        .expect("1 MiB");
    fs.write_file(
        &gp("/Directory/new.txt"),
        b"in a windows dir",
        &NewFileAttrs::file(),
    )
    .expect("write");
    // Existing Windows files read (and change) through the writer.
    let old = fs
        .read_file(b"/File.txt", 1 << 20)
        .expect("read windows file");
    fs.write_at(&gp("/File.txt"), old.len() as u64, b" + rehost")
        .expect("append");
    assert_eq!(
        fs.read_dir(&gp("/Large Directory")).expect("list").len(),
        2048 + 51
    );
    drop(fs);

    let fix_after = ntfsfix_report(&img);
    assert!(fix_after.0, "ntfsfix -n after our writes: {}", fix_after.1);
    assert_eq!(fix_after, fix_before);
    let after = ntfsls(&img, "/Large Directory");
    assert_eq!(after.len(), 2048 + 51);
    assert!(before.is_subset(&after));
    assert!(after.contains("rehost dir/"));
    for (p, v) in &model {
        assert!(ntfscat(&img, p) == *v.as_ref().expect("file"), "{p}");
    }
    assert!(ntfscat(&img, "/rehost-1mib.bin") == mib);
    assert_eq!(ntfscat(&img, "/Directory/new.txt"), b"in a windows dir");
    let mut want = old.clone();
    want.extend_from_slice(b" + rehost");
    assert_eq!(ntfscat(&img, "/File.txt"), want);
    let root = ntfsls(&img, "/");
    assert!(
        !root.contains("Large.txt") && !root.contains("too-big.bin"),
        "{root:?}"
    );
    assert!(
        !root.contains("Random.bin") && root.contains("rehost-1mib.bin"),
        "{root:?}"
    );

    if !have("ntfssecaudit") {
        println!("skipping the security check: ntfssecaudit not found");
        return;
    }
    // Inherited, not libntfs-3g's "Everyone: full control" default: the owner is
    // BUILTIN\Administrators, and the DACL grants exactly the trustees of the parent's ACEs that
    // are inheritable by a file (OBJECT_INHERIT_ACE) or a directory (CONTAINER_INHERIT_ACE).
    const OBJECT_INHERIT_ACE: u8 = 0x01;
    const CONTAINER_INHERIT_ACE: u8 = 0x02;
    let admins = nt_sid(&[32, 544]);
    let everyone = vec![1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    for (p, parent, inherit) in [
        (
            "/Large Directory/rehost 0.txt",
            "/Large Directory",
            OBJECT_INHERIT_ACE,
        ),
        (
            "/Large Directory/rehost dir",
            "/Large Directory",
            CONTAINER_INHERIT_ACE,
        ),
        ("/rehost-1mib.bin", "/", OBJECT_INHERIT_ACE),
        ("/Directory/new.txt", "/Directory", OBJECT_INHERIT_ACE),
    ] {
        let sd = security_descriptor(&img, p).unwrap_or_else(|| panic!("{p}: no descriptor"));
        let owner = u32::from_le_bytes(sd[4..8].try_into().expect("4 bytes")) as usize;
        assert_eq!(&sd[owner..owner + admins.len()], &admins[..], "{p}: owner");
        let got: BTreeSet<Vec<u8>> = dacl_aces(&sd).into_iter().map(|(_, sid)| sid).collect();
        let psd = security_descriptor(&img, parent).unwrap_or_else(|| panic!("{parent}: no sd"));
        let want: BTreeSet<Vec<u8>> = dacl_aces(&psd)
            .into_iter()
            .filter(|(f, _)| f & inherit != 0)
            .map(|(_, sid)| sid)
            .collect();
        assert!(!want.is_empty(), "{parent} has inheritable aces");
        assert_eq!(got, want, "{p}: trustees");
        assert!(!got.contains(&everyone) || want.contains(&everyone), "{p}");
    }
}

// ----- refusals ----------------------------------------------------------------------------

fn refused(r: Result<NtfsRw, Error>, needle: &str) {
    match r {
        Err(Error::Unclean { what, detail }) => {
            assert_eq!(what, "ntfs volume");
            assert!(detail.contains(needle), "{detail:?} lacks {needle:?}");
        }
        Err(e) => panic!("expected Unclean({needle}), got {e:?}"),
        Ok(_) => panic!("expected Unclean({needle}), got a writable volume"),
    }
}

#[test]
fn active_hiberfil_is_refused_even_forced_and_nothing_is_written() {
    if !have_tools() {
        return;
    }
    for (sig, active) in [
        (*b"hibr", true),
        (*b"HIBR", true),
        (*b"wake", true),
        (*b"RSTR", true),
        ([0; 4], false),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = mkntfs(dir.path(), 16);
        let fs = NtfsRw::open_rw(raw(&img), WriteOptions::new()).expect("open");
        let mut hdr = vec![0u8; 8192];
        hdr[..4].copy_from_slice(&sig);
        fs.write_file(&gp("/hiberfil.sys"), &hdr, &NewFileAttrs::file())
            .expect("hiberfil");
        drop(fs);
        let dev = raw(&img);
        let before = hash(&*dev);
        for force in [false, true] {
            let r = NtfsRw::open_rw(dev.clone(), WriteOptions::new().force(force));
            if active {
                refused(r, "hibernated");
            } else {
                drop(r.expect("an inactive hiberfil.sys is fine"));
            }
        }
        if active {
            assert_eq!(hash(&*dev), before, "{sig:?}");
        }
    }
}

/// Boot sector fields (NTFS BPB): bytes per sector (0x0b), sectors per cluster (0x0d),
/// `$MFT` LCN (0x30), `$MFTMirr` LCN (0x38).
fn set_dirty_flag(img: &mut [u8]) {
    let bps = u64::from(u16::from_le_bytes([img[0x0b], img[0x0c]]));
    let cluster = bps * u64::from(img[0x0d]);
    let lcn = |at: usize| u64::from_le_bytes(img[at..at + 8].try_into().expect("8 bytes"));
    for mft in [lcn(0x30) * cluster, lcn(0x38) * cluster] {
        // MFT record 3 ($Volume), 1 KiB records (mkntfs's default).
        let rec = usize::try_from(mft + 3 * 1024).expect("fits");
        let mut at = rec + usize::from(u16::from_le_bytes([img[rec + 20], img[rec + 21]]));
        loop {
            let ty = u32::from_le_bytes(img[at..at + 4].try_into().expect("4 bytes"));
            assert_ne!(ty, 0xffff_ffff, "no $VOLUME_INFORMATION");
            let len = u32::from_le_bytes(img[at + 4..at + 8].try_into().expect("4 bytes"));
            if ty == 0x70 {
                let value = at + usize::from(u16::from_le_bytes([img[at + 20], img[at + 21]]));
                // VOLUME_INFORMATION.flags (le16 at 10), VOLUME_IS_DIRTY 0x0001.
                img[value + 10] |= 0x01;
                break;
            }
            at += len as usize;
        }
    }
}

#[test]
fn dirty_flag_is_refused_unless_forced() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 16);
    let mut bytes = std::fs::read(&img).expect("read image");
    set_dirty_flag(&mut bytes);
    let dev = Arc::new(MemDisk::from_vec(bytes));
    let before = hash(&*dev);
    refused(
        NtfsRw::open_rw(dev.clone(), WriteOptions::new()),
        "dirty flag",
    );
    assert_eq!(hash(&*dev), before);
    let fs = NtfsRw::open_rw(dev.clone(), WriteOptions::new().force(true)).expect("forced");
    fs.write_file(&gp("/forced.txt"), b"ok", &NewFileAttrs::file())
        .expect("write");
    drop(fs);
    let fs = NtfsRw::open_rw(dev, WriteOptions::new().force(true)).expect("forced again");
    assert_eq!(fs.read_file(b"/forced.txt", 10).expect("read"), b"ok");
}

/// Rewrites both `$LogFile` restart pages (4 KiB-aligned `RSTR` pages) with `edit`.
fn edit_restart_pages(img: &mut [u8], edit: impl Fn(&mut [u8])) -> usize {
    let mut n = 0;
    for page in img.chunks_exact_mut(4096) {
        if page.starts_with(b"RSTR") {
            edit(page);
            n += 1;
        }
    }
    n
}

#[test]
fn unclean_and_fast_startup_logfiles_are_refused_even_forced() {
    let Some(src) = dissect_ntfs_image() else {
        return;
    };
    let clean = std::fs::read(src).expect("read fixture");
    // RESTART_PAGE_HEADER.restart_area_offset (le16 at 24); RESTART_AREA.flags (le16 at 14),
    // RESTART_VOLUME_IS_CLEAN 0x0002 (ntfs-3g logfile.h).
    let mut unclean_log = clean.clone();
    let n = edit_restart_pages(&mut unclean_log, |p| {
        let ra = usize::from(u16::from_le_bytes([p[24], p[25]]));
        p[ra + 14] &= !0x02;
    });
    assert_eq!(n, 2);
    // Fast Startup: restart page version 2.0 (minor_ver at 26, major_ver at 28).
    let mut fast = clean;
    let n = edit_restart_pages(&mut fast, |p| {
        p[26..28].copy_from_slice(&0u16.to_le_bytes());
        p[28..30].copy_from_slice(&2u16.to_le_bytes());
    });
    assert_eq!(n, 2);
    for (bytes, needle) in [
        (unclean_log, "$LogFile is not clean"),
        (fast, "fast startup"),
    ] {
        let dev = Arc::new(MemDisk::from_vec(bytes));
        let before = hash(&*dev);
        for force in [false, true] {
            refused(
                NtfsRw::open_rw(dev.clone(), WriteOptions::new().force(force)),
                needle,
            );
        }
        assert_eq!(hash(&*dev), before, "{needle}");
    }
}

#[test]
fn writes_through_an_undo_transaction_roll_back_to_the_original_bytes() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 32);
    let original = std::fs::read(&img).expect("read image");
    let undo = dir.path().join("ntfs.undo");
    let file = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
    let txn = Arc::new(disk::txn::Transaction::begin(file, &undo).expect("begin"));
    let fs = NtfsRw::open_rw(txn.clone(), WriteOptions::new()).expect("open_rw");
    fs.mkdir_p(b"/Windows/System32/drivers", &NewFileAttrs::dir())
        .expect("mkdir_p");
    fs.write_file_path(
        b"/Windows/System32/drivers/viostor.sys",
        &[0x5a; 300_000],
        &NewFileAttrs::file(),
    )
    .expect("write");
    fs.flush().expect("flush");
    drop(fs);
    assert_ne!(
        std::fs::read(&img).expect("read image"),
        original,
        "the edit reached the disk"
    );
    let txn = Arc::try_unwrap(txn).unwrap_or_else(|_| panic!("the writer still holds the device"));
    txn.rollback().expect("rollback");
    assert!(
        std::fs::read(&img).expect("read image") == original,
        "rolled back byte for byte"
    );
    ntfsfix_clean(&img);
}

/// The writer reads what the read-only reader reads, on the reader's own test volume
/// (Interix symlinks, a junction, reparse symlinks, a deduplicated file, a compressed
/// directory, a sparse file, 2,048 entries in one directory): listings, metadata, link targets
/// and contents, or the same kind of error.
#[test]
fn reads_agree_with_the_read_only_reader() {
    let Some(img) = crate::ntfs::tests::full_image() else {
        return;
    };
    let ro = super::NtfsFs::open(Arc::new(MemDisk::from_vec(img.to_vec()))).expect("reader");
    let rw = NtfsRw::open_rw(
        Arc::new(MemDisk::from_vec(img.to_vec())),
        WriteOptions::new(),
    )
    .expect("writer");
    assert_eq!(rw.info(), ro.info());
    let mut todo = vec![GuestPath::root()];
    let (mut files, mut links, mut refused) = (0, 0, 0);
    while let Some(dir) = todo.pop() {
        let mut want = ro.read_dir(&dir).expect("reader lists");
        let mut got = rw
            .read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {dir}: {e}"));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        got.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got, want, "listing of {dir}");
        for e in want {
            let p = dir.join_name(&e.name).expect("name");
            let (a, b) = (ro.lstat(&p), rw.lstat(&p));
            let a = a.unwrap_or_else(|e| panic!("reader lstat {p}: {e}"));
            assert_eq!(b.expect("writer lstat"), a, "lstat {p}");
            match a.file_type {
                FileType::Directory if !e.name.starts_with(b"$") => todo.push(p),
                FileType::Symlink => {
                    links += 1;
                    match (ro.read_link(&p), rw.read_link(&p)) {
                        (Ok(x), Ok(y)) => assert_eq!(y, x, "read_link {p}"),
                        (Err(x), Err(y)) => assert_eq!(y.to_string(), x.to_string(), "{p}"),
                        (x, y) => panic!("read_link {p}: reader {x:?}, writer {y:?}"),
                    }
                }
                FileType::Regular | FileType::Other if !e.name.starts_with(b"$") => {
                    files += 1;
                    match (
                        ro.read_file(&p.to_bytes(), 16 << 20),
                        rw.read_file(&p.to_bytes(), 16 << 20),
                    ) {
                        (Ok(x), Ok(y)) => assert!(x == y, "contents of {p}"),
                        (Err(x), Err(y)) => {
                            refused += 1;
                            assert_eq!(y.to_string(), x.to_string(), "{p}");
                        }
                        (x, y) => panic!(
                            "read {p}: reader {:?}, writer {:?}",
                            x.map(|v| v.len()),
                            y.map(|v| v.len())
                        ),
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        files > 2048 && links >= 4 && refused >= 1,
        "{files} files, {links} links, {refused} refused"
    );
    // The deduplicated file cannot be written either: its data is not in the stream.
    let dedup = gp("/dedup");
    assert!(matches!(
        rw.write_at(&dedup, 0, b"x"),
        Err(Error::Unsupported { .. })
    ));
    assert!(matches!(
        rw.truncate(&dedup, 0),
        Err(Error::Unsupported { .. })
    ));
}
