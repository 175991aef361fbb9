//! Tests of the ext2/3/4 writer: random operation sequences through [`FsWrite`] against a model,
//! on fresh `mke2fs` images in several configurations and on the ext4 roots of builder images;
//! each run ends with `e2fsck -fn` and a byte-for-byte comparison of the model with what the
//! independent e2fsprogs tools (`debugfs rdump`, `ls -p`, `ea_list`, `ea_get`) read back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use disk::open::Access;
use disk::raw::RawFile;

use super::*;
use crate::FsReadExt;
use crate::fuzzing::testutil::{Rng, need};
use crate::write::FsWriteExt;

const TOOLS: &[&str] = &["mke2fs", "e2fsck", "debugfs"];

fn gp(s: &str) -> GuestPath {
    GuestPath::parse(s.as_bytes()).expect("test path")
}

/// Where a filesystem lives for the e2fsprogs tools: an image file, and the byte offset of the
/// filesystem in it (unix_io's `?offset=` option).
#[derive(Clone)]
struct Target {
    img: PathBuf,
    offset: u64,
}

impl Target {
    fn spec(&self) -> String {
        if self.offset == 0 {
            self.img.display().to_string()
        } else {
            format!("{}?offset={}", self.img.display(), self.offset)
        }
    }

    fn e2fsck_clean(&self) {
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(self.spec())
            .output()
            .expect("run e2fsck");
        assert!(
            out.status.success(),
            "e2fsck -fn {} exited {:?}:\n{}\n{}",
            self.spec(),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `requests` in one debugfs process; returns each request's output.
    fn debugfs(&self, requests: &[String]) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmds = dir.path().join("cmds");
        std::fs::write(&cmds, requests.join("\n") + "\n").expect("write debugfs script");
        let out = Command::new("debugfs")
            .arg("-f")
            .arg(&cmds)
            .arg(self.spec())
            .output()
            .expect("run debugfs");
        assert!(out.status.success(), "debugfs -f failed");
        // Each request is echoed as "debugfs: REQUEST\n" before its output.
        let mut outputs: Vec<Vec<u8>> = Vec::new();
        let mut rest = out.stdout.as_slice();
        for r in requests {
            let marker = format!("debugfs: {r}\n");
            let at = find(rest, marker.as_bytes()).unwrap_or_else(|| panic!("no echo of {r}"));
            if let Some(prev) = outputs.last_mut() {
                prev.extend_from_slice(&rest[..at]);
            }
            rest = &rest[at + marker.len()..];
            outputs.push(Vec::new());
        }
        if let Some(last) = outputs.last_mut() {
            last.extend_from_slice(rest);
        }
        outputs
    }

    /// Opens the filesystem for writing through the generic entry point.
    fn open(&self, len: u64) -> Arc<dyn FsWrite> {
        let raw: Arc<dyn BlockWrite> =
            Arc::new(RawFile::open(&self.img, Access::ReadWrite).expect("open image"));
        let dev: Arc<dyn BlockWrite> = if self.offset == 0 {
            raw
        } else {
            Arc::new(disk::Slice::new(raw, self.offset, len).expect("partition slice"))
        };
        crate::open_rw(dev, WriteOptions::new()).expect("open ext for writing")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A fresh image made by `mke2fs -t FS_TYPE -b BLOCK [-O FEATURES] [-I INODE_SIZE]`.
fn mkfs(dir: &Path, name: &str, fs_type: &str, block: u32, features: &str, mib: u64) -> Target {
    mkfs_from(dir, name, fs_type, block, features, mib, None)
}

/// As [`mkfs`], copying the tree at `populate` in (`mke2fs -d`).
fn mkfs_from(
    dir: &Path,
    name: &str,
    fs_type: &str,
    block: u32,
    features: &str,
    mib: u64,
    populate: Option<&Path>,
) -> Target {
    let img = dir.join(name);
    let f = std::fs::File::create(&img).expect("create image");
    f.set_len(mib << 20).expect("size image");
    drop(f);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F", "-t", fs_type, "-b", &block.to_string()]);
    cmd.args(["-E", "root_owner=0:0"]);
    if !features.is_empty() {
        cmd.args(["-O", features]);
    }
    if let Some(src) = populate {
        cmd.arg("-d").arg(src);
    }
    let out = cmd.arg(&img).output().expect("run mke2fs");
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Target { img, offset: 0 }
}

// ----- the model ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Link(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Node {
    /// `i_mode` as `ls -p` prints it.
    fn i_mode(&self) -> u32 {
        match self.kind {
            Kind::File(_) => 0o100_000 | self.mode,
            Kind::Dir => 0o040_000 | self.mode,
            Kind::Link(_) => 0o120_777,
        }
    }
}

/// Every entry below the run's base directory, by absolute path (the base itself excluded).
#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, Node>,
}

fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) => "/",
        Some(i) => &p[..i],
        None => "/",
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl Model {
    fn children(&self, dir: &str) -> BTreeMap<String, &Node> {
        self.nodes
            .iter()
            .filter(|(p, _)| parent(p) == dir)
            .map(|(p, n)| (p.rsplit('/').next().unwrap_or_default().to_string(), n))
            .collect()
    }

    fn paths(&self, pred: impl Fn(&str, &Node) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(p, n)| pred(p, n))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Moves `from` and everything below it to `to`.
    fn rename(&mut self, from: &str, to: &str) {
        let prefix = format!("{from}/");
        let moved: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == from || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in moved {
            let n = self.nodes.remove(&k).expect("listed");
            let nk = format!("{to}{}", &k[from.len()..]);
            self.nodes.insert(nk, n);
        }
    }
}

fn pick<'a>(rng: &mut Rng, v: &'a [String]) -> Option<&'a String> {
    if v.is_empty() {
        None
    } else {
        v.get(usize::try_from(rng.below(v.len() as u64)).unwrap_or(0))
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    usize::try_from(rng.below(n as u64)).unwrap_or(0)
}

/// Printable bytes (so debugfs prints xattr values raw), length `n`.
fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_:.-";
    (0..n)
        .map(|_| ALPHABET[below(rng, ALPHABET.len())])
        .collect()
}

/// File contents: random bytes with runs of zeros, so some blocks compress and some do not.
fn content(rng: &mut Rng, n: usize) -> Vec<u8> {
    let mut v = rng.bytes(n);
    if n > 0 && rng.below(2) == 0 {
        let at = below(rng, n);
        let len = below(rng, n - at);
        v[at..at + len].fill(0);
    }
    v
}

const MODES: &[u32] = &[0o644, 0o600, 0o755, 0o4755, 0o1777, 0o000];
const XATTR_NAMES: &[&str] = &["user.a", "user.bb", "security.selinux", "trusted.t"];
const LABEL: &[u8] = b"system_u:object_r:etc_t:s0\0";

fn owner(rng: &mut Rng) -> (u32, u32) {
    match rng.below(3) {
        0 => (0, 0),
        1 => (1000, 1000),
        _ => (70_000 + u32::try_from(rng.below(10)).unwrap_or(0), 5),
    }
}

/// Kinds of operation in [`Run::op`].
const OPS: u64 = 20;
const OPS_USIZE: usize = 20;

/// A random operation sequence against `fs` below `base` (an existing directory, empty).
struct Run<'a> {
    fs: &'a dyn FsWrite,
    /// How often each operation ran.
    done: [usize; OPS_USIZE],
    rng: Rng,
    model: Model,
    base: String,
    next: u32,
}

impl Run<'_> {
    fn choose(&mut self, v: Vec<String>) -> Option<String> {
        pick(&mut self.rng, &v).cloned()
    }

    fn name(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn dirs(&self) -> Vec<String> {
        let mut v = self
            .model
            .paths(|p, n| n.kind == Kind::Dir && !p.contains("/big"));
        v.push(self.base.clone());
        v
    }

    fn files(&self) -> Vec<String> {
        self.model
            .paths(|p, n| matches!(n.kind, Kind::File(_)) && !p.contains("/big"))
    }

    fn any(&self) -> Vec<String> {
        self.model.paths(|p, _| !p.contains("/big"))
    }

    fn attrs(&mut self, dir: bool) -> (NewFileAttrs, Node) {
        let mode = if dir {
            [0o755, 0o700, 0o1777][below(&mut self.rng, 3)]
        } else {
            MODES[below(&mut self.rng, MODES.len())]
        };
        let (uid, gid) = owner(&mut self.rng);
        let mut a = NewFileAttrs::with_mode(mode).owner(uid, gid);
        let mut xattrs = BTreeMap::new();
        if self.rng.below(3) == 0 {
            a = a.xattr(b"security.selinux", LABEL);
            xattrs.insert("security.selinux".to_string(), LABEL.to_vec());
        }
        let node = Node {
            kind: Kind::Dir,
            mode,
            uid,
            gid,
            xattrs,
        };
        (a, node)
    }

    fn create_file(&mut self, dir: &str, len: usize) {
        let p = join(dir, &self.name("f"));
        let data = content(&mut self.rng, len);
        let (a, mut node) = self.attrs(false);
        self.fs
            .write_file(&gp(&p), &data, &a)
            .unwrap_or_else(|e| panic!("create {p}: {e}"));
        node.kind = Kind::File(data);
        self.model.nodes.insert(p, node);
    }

    fn file_data(&mut self, p: &str) -> &mut Vec<u8> {
        match &mut self.model.nodes.get_mut(p).expect("in model").kind {
            Kind::File(d) => d,
            _ => panic!("{p} is not a file"),
        }
    }

    /// Checks what the filesystem reads for `p` against the model (reads see writes).
    fn verify(&mut self, p: &str) {
        let node = self.model.nodes.get(p).expect("in model").clone();
        let md = self.fs.lstat(&gp(p)).expect("lstat");
        assert_eq!((md.uid, md.gid), (node.uid, node.gid), "{p} owner");
        match &node.kind {
            Kind::File(d) => {
                assert_eq!(md.file_type, FileType::Regular, "{p}");
                assert_eq!(md.mode, node.mode, "{p} mode");
                assert_eq!(md.size, d.len() as u64, "{p} size");
                let off = below(&mut self.rng, d.len() + 10);
                let mut buf = vec![0u8; below(&mut self.rng, 70_000) + 1];
                let n = self
                    .fs
                    .read_at(&gp(p), off as u64, &mut buf)
                    .expect("read_at");
                let want = d.get(off..).unwrap_or_default();
                let want = &want[..want.len().min(buf.len())];
                assert_eq!(n, want.len(), "{p} read_at {off} length");
                assert!(&buf[..n] == want, "{p} read_at {off} bytes");
            }
            Kind::Dir => {
                assert_eq!(md.file_type, FileType::Directory, "{p}");
                assert_eq!(md.mode, node.mode, "{p} mode");
                let listed: BTreeMap<String, FileType> = self
                    .fs
                    .read_dir(&gp(p))
                    .expect("read_dir")
                    .into_iter()
                    .map(|e| (String::from_utf8(e.name).expect("utf-8"), e.file_type))
                    .collect();
                let want: BTreeMap<String, FileType> = self
                    .model
                    .children(p)
                    .into_iter()
                    .map(|(n, node)| {
                        let t = match node.kind {
                            Kind::File(_) => FileType::Regular,
                            Kind::Dir => FileType::Directory,
                            Kind::Link(_) => FileType::Symlink,
                        };
                        (n, t)
                    })
                    .collect();
                assert_eq!(listed, want, "{p} listing");
            }
            Kind::Link(t) => {
                assert_eq!(md.file_type, FileType::Symlink, "{p}");
                assert_eq!(self.fs.read_link(&gp(p)).expect("readlink"), t.as_bytes());
            }
        }
        let names: Vec<String> = self
            .fs
            .list_xattrs(&gp(p))
            .expect("list xattrs")
            .into_iter()
            .map(|n| String::from_utf8(n).expect("utf-8"))
            .collect();
        assert_eq!(
            names,
            node.xattrs.keys().cloned().collect::<Vec<_>>(),
            "{p} xattr names"
        );
        for (k, v) in &node.xattrs {
            assert_eq!(
                self.fs.get_xattr(&gp(p), k.as_bytes()).expect("get"),
                Some(v.clone()),
                "{p} {k}"
            );
        }
    }

    /// One random operation, counted when it ran.
    fn step(&mut self) {
        let op = self.rng.below(OPS);
        if self.op(op) {
            self.done[usize::try_from(op).unwrap_or(0)] += 1;
        }
    }

    /// Runs operation `op`; false when the model had nothing to apply it to.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per operation reads best as a table"
    )]
    fn op(&mut self, op: u64) -> bool {
        let fs = self.fs;
        match op {
            0 | 1 => {
                let dir = self.choose(self.dirs()).expect("base");
                let len = match self.rng.below(10) {
                    0 => 0,
                    1 => below(&mut self.rng, 300_000),
                    _ => below(&mut self.rng, 9000),
                };
                self.create_file(&dir, len);
            }
            2 => {
                // Overwrite: contents change; inode, owner, mode and labels stay.
                let Some(p) = self.choose(self.files()) else {
                    return false;
                };
                let before = fs.lstat(&gp(&p)).expect("lstat");
                let len = below(&mut self.rng, 20_000);
                let data = content(&mut self.rng, len);
                let other = NewFileAttrs::with_mode(0o777)
                    .owner(4242, 4242)
                    .xattr(b"user.ignored", b"x");
                fs.write_file(&gp(&p), &data, &other).expect("overwrite");
                let after = fs.lstat(&gp(&p)).expect("lstat");
                assert_eq!(
                    (after.ino, after.mode, after.uid, after.gid),
                    (before.ino, before.mode, before.uid, before.gid),
                    "{p}: overwrite changed identity"
                );
                *self.file_data(&p) = data;
            }
            3 | 4 => {
                // write_at inside, across or past the end (a gap reads as zeros).
                let Some(p) = self.choose(self.files()) else {
                    return false;
                };
                let size = self.file_data(&p).len();
                let off = below(&mut self.rng, size + 9000);
                let len = below(&mut self.rng, 12_000) + 1;
                let data = content(&mut self.rng, len);
                fs.write_at(&gp(&p), off as u64, &data).expect("write_at");
                let d = self.file_data(&p);
                if d.len() < off + len {
                    d.resize(off + len, 0);
                }
                d[off..off + len].copy_from_slice(&data);
            }
            5 => {
                let Some(p) = self.choose(self.files()) else {
                    return false;
                };
                let size = self.file_data(&p).len();
                let len = if self.rng.below(2) == 0 {
                    below(&mut self.rng, size + 1)
                } else {
                    size + below(&mut self.rng, 20_000)
                };
                fs.truncate(&gp(&p), len as u64).expect("truncate");
                self.file_data(&p).resize(len, 0);
            }
            6 => {
                let Some(p) = self.choose(self.files()) else {
                    return false;
                };
                let len = below(&mut self.rng, 5000);
                let data = content(&mut self.rng, len);
                let new_size = fs.append(&gp(&p), &data).expect("append");
                let d = self.file_data(&p);
                d.extend_from_slice(&data);
                assert_eq!(new_size, d.len() as u64);
            }
            7 => {
                let dir = self.choose(self.dirs()).expect("base");
                let p = join(&dir, &self.name("d"));
                let (a, node) = self.attrs(true);
                fs.mkdir(&gp(&p), &a).expect("mkdir");
                assert!(matches!(
                    fs.mkdir(&gp(&p), &a),
                    Err(Error::AlreadyExists { .. })
                ));
                self.model.nodes.insert(p, node);
            }
            8 => {
                let dir = self.choose(self.dirs()).expect("base");
                let p = join(&dir, &self.name("l"));
                let len = if self.rng.below(2) == 0 {
                    below(&mut self.rng, 50) + 1
                } else {
                    below(&mut self.rng, 400) + 60
                };
                let target = String::from_utf8(text(&mut self.rng, len)).expect("ascii");
                let (a, mut node) = self.attrs(false);
                fs.symlink(&gp(&p), target.as_bytes(), &a).expect("symlink");
                node.kind = Kind::Link(target);
                node.mode = 0o777;
                self.model.nodes.insert(p, node);
            }
            9 => {
                let cands = self
                    .model
                    .paths(|p, n| n.kind != Kind::Dir && !p.contains("/big"));
                let Some(p) = self.choose(cands) else {
                    return false;
                };
                fs.unlink(&gp(&p)).expect("unlink");
                self.model.nodes.remove(&p);
                if let Some(d) = self
                    .choose(self.model.paths(|_, n| n.kind == Kind::Dir))
                    .as_ref()
                {
                    assert!(matches!(fs.unlink(&gp(d)), Err(Error::IsADirectory { .. })));
                }
            }
            10 => {
                let cands = self
                    .model
                    .paths(|p, n| n.kind == Kind::Dir && !p.ends_with("/big"));
                let Some(p) = self.choose(cands) else {
                    return false;
                };
                if self.model.children(&p).is_empty() {
                    fs.rmdir(&gp(&p)).expect("rmdir");
                    self.model.nodes.remove(&p);
                } else {
                    assert!(
                        matches!(fs.rmdir(&gp(&p)), Err(Error::NotEmpty { .. })),
                        "{p}"
                    );
                }
                if let Some(f) = self.choose(self.files()).as_ref() {
                    assert!(matches!(fs.rmdir(&gp(f)), Err(Error::NotADirectory { .. })));
                }
            }
            11 | 12 => return self.rename(),
            13 => {
                let cands = self
                    .model
                    .paths(|p, n| !matches!(n.kind, Kind::Link(_)) && !p.contains("/big"));
                let Some(p) = self.choose(cands) else {
                    return false;
                };
                let mode = MODES[below(&mut self.rng, MODES.len())];
                fs.set_mode(&gp(&p), mode).expect("chmod");
                self.model.nodes.get_mut(&p).expect("in model").mode = mode;
            }
            14 => {
                let Some(p) = self.choose(self.any()) else {
                    return false;
                };
                let (uid, gid) = owner(&mut self.rng);
                fs.set_owner(&gp(&p), uid, gid).expect("chown");
                let n = self.model.nodes.get_mut(&p).expect("in model");
                (n.uid, n.gid) = (uid, gid);
            }
            15 => {
                let Some(p) = self.choose(self.any()) else {
                    return false;
                };
                let name = XATTR_NAMES[below(&mut self.rng, XATTR_NAMES.len())];
                let len = below(&mut self.rng, 120);
                let value = text(&mut self.rng, len);
                fs.set_xattr(&gp(&p), name.as_bytes(), &value)
                    .expect("set xattr");
                self.model
                    .nodes
                    .get_mut(&p)
                    .expect("in model")
                    .xattrs
                    .insert(name.to_string(), value);
            }
            16 => {
                let Some(p) = self.choose(self.any()) else {
                    return false;
                };
                let name = XATTR_NAMES[below(&mut self.rng, XATTR_NAMES.len())];
                let had = self
                    .model
                    .nodes
                    .get_mut(&p)
                    .expect("in model")
                    .xattrs
                    .remove(name)
                    .is_some();
                let r = fs.remove_xattr(&gp(&p), name.as_bytes());
                if had {
                    r.expect("remove xattr");
                } else {
                    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
                }
            }
            17 => {
                let Some(p) = self.choose(self.files()) else {
                    return false;
                };
                let t = 1_500_000_000 + i64::try_from(self.rng.below(1 << 28)).unwrap_or(0);
                fs.set_times(
                    &gp(&p),
                    &Times {
                        atime: None,
                        mtime: Some(t),
                    },
                )
                .expect("set times");
                assert_eq!(fs.lstat(&gp(&p)).expect("lstat").mtime, t);
            }
            _ => {
                let Some(p) = self.choose(self.any()) else {
                    return false;
                };
                self.verify(&p);
                let base = self.base.clone();
                self.verify_dir(&base);
            }
        }
        true
    }

    fn verify_dir(&mut self, p: &str) {
        if p == self.base {
            let listed: BTreeSet<Vec<u8>> = self
                .fs
                .read_dir(&gp(p))
                .expect("read_dir")
                .into_iter()
                .map(|e| e.name)
                .filter(|n| n != b"lost+found")
                .collect();
            let want: BTreeSet<Vec<u8>> = self
                .model
                .children(p)
                .into_keys()
                .map(String::into_bytes)
                .collect();
            assert_eq!(listed, want, "{p} listing");
        } else {
            self.verify(p);
        }
    }

    fn rename(&mut self) -> bool {
        let fs = self.fs;
        let Some(from) = self.choose(self.any()) else {
            return false;
        };
        let is_dir = self.model.nodes[&from].kind == Kind::Dir;
        let replace = !is_dir && self.rng.below(3) == 0;
        let to = if replace {
            let cands: Vec<String> = self
                .model
                .paths(|p, n| n.kind != Kind::Dir && !p.contains("/big") && p != from);
            match self.choose(cands).as_ref() {
                Some(t) => t.clone(),
                None => return false,
            }
        } else {
            let dir = self.choose(self.dirs()).expect("base");
            join(&dir, &self.name("r"))
        };
        if is_dir && to.starts_with(&format!("{from}/")) {
            assert!(
                matches!(
                    fs.rename(&gp(&from), &gp(&to)),
                    Err(Error::InvalidPath { .. })
                ),
                "{from} -> {to}"
            );
            return true;
        }
        fs.rename(&gp(&from), &gp(&to))
            .unwrap_or_else(|e| panic!("rename {from} -> {to}: {e}"));
        self.model.nodes.remove(&to);
        self.model.rename(&from, &to);
        true
    }
}

// ----- checking the result with e2fsprogs ----------------------------------------------------

/// Compares the model with what e2fsprogs reads: contents through `rdump`, types, modes and
/// owners through `ls -p`, xattrs through `ea_list` and `ea_get`.
fn check_with_debugfs(t: &Target, base: &str, model: &Model) {
    // Contents.
    let out = tempfile::tempdir().expect("tempdir");
    let dump = out.path().join("dump");
    std::fs::create_dir(&dump).expect("mkdir");
    t.debugfs(&[format!("rdump {base} {}", dump.display())]);
    let top = dump.join(base.rsplit('/').next().expect("base name"));
    let mut seen = BTreeMap::new();
    walk(&top, base, &mut seen);
    seen.remove(&join(base, "lost+found"));
    let want: BTreeMap<String, Kind> = model
        .nodes
        .iter()
        .map(|(p, n)| (p.clone(), n.kind.clone()))
        .collect();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "paths"
    );
    for (p, k) in &want {
        assert!(seen[p] == *k, "{p}: contents differ");
    }
    // Types, modes, owners.
    let mut dirs: Vec<String> = model.paths(|_, n| n.kind == Kind::Dir);
    dirs.push(base.to_string());
    let reqs: Vec<String> = dirs.iter().map(|d| format!("ls -p {d}")).collect();
    for (d, text) in dirs.iter().zip(t.debugfs(&reqs)) {
        let text = String::from_utf8(text).expect("utf-8 listing");
        let mut listed = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with('/')) {
            // /ino/mode/uid/gid/name/size/
            let f: Vec<&str> = line.split('/').collect();
            let (name, ino) = (f[5], f[1]);
            if ino == "0" || name == "." || name == ".." || name == "lost+found" {
                continue;
            }
            let mode = u32::from_str_radix(f[2], 8).expect("octal mode");
            let uid: u32 = f[3].parse().expect("uid");
            let gid: u32 = f[4].parse().expect("gid");
            listed.insert(name.to_string(), (mode, uid, gid));
        }
        let want: BTreeMap<String, (u32, u32, u32)> = model
            .children(d)
            .into_iter()
            .map(|(n, node)| (n, (node.i_mode(), node.uid, node.gid)))
            .collect();
        assert_eq!(listed, want, "ls -p {d}");
    }
    // Xattrs (the big directory's empty files have none; skip them to keep this quick).
    let labelled: Vec<&String> = model
        .nodes
        .keys()
        .filter(|p| !p.contains("/big/"))
        .collect();
    let reqs: Vec<String> = labelled.iter().map(|p| format!("ea_list {p}")).collect();
    let mut gets = Vec::new();
    for (p, text) in labelled.iter().zip(t.debugfs(&reqs)) {
        let text = String::from_utf8_lossy(&text).into_owned();
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .filter_map(|l| l.split(" (").next())
            .map(str::to_string)
            .collect();
        names.sort();
        let node = &model.nodes[*p];
        assert_eq!(
            names,
            node.xattrs.keys().cloned().collect::<Vec<_>>(),
            "ea_list {p}"
        );
        for (k, v) in &node.xattrs {
            gets.push((format!("ea_get -V {p} {k}"), v.clone()));
        }
    }
    let reqs: Vec<String> = gets.iter().map(|(r, _)| r.clone()).collect();
    for ((r, v), mut got) in gets.iter().zip(t.debugfs(&reqs)) {
        assert_eq!(got.pop(), Some(b'\n'), "{r} ends with a newline");
        assert_eq!(got, *v, "{r}");
    }
}

fn walk(dir: &Path, guest: &str, out: &mut BTreeMap<String, Kind>) {
    for e in std::fs::read_dir(dir).expect("read dump dir") {
        let e = e.expect("entry");
        let name = e.file_name().into_string().expect("utf-8 name");
        let g = join(guest, &name);
        let ft = e.file_type().expect("type");
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).expect("readlink");
            out.insert(g, Kind::Link(t.to_string_lossy().into_owned()));
        } else if ft.is_dir() {
            out.insert(g.clone(), Kind::Dir);
            walk(&e.path(), &g, out);
        } else {
            out.insert(g, Kind::File(std::fs::read(e.path()).expect("read")));
        }
    }
}

// ----- the runs ------------------------------------------------------------------------------

/// Extras of a run beyond the random operations.
#[derive(Clone, Copy, Default)]
struct Extras {
    /// Entries in `/big` (an htree directory when `dir_index` is on).
    big_dir: usize,
    /// Bytes of one large file.
    big_file: usize,
}

fn random_run(t: &Target, len: u64, base: &str, seed: u64, ops: usize, extras: Extras) {
    let fs = t.open(len);
    if !fs.exists(base.as_bytes()).expect("stat base") {
        fs.mkdir(&gp(base), &NewFileAttrs::dir())
            .expect("mkdir base");
    }
    let mut run = Run {
        fs: &*fs,
        done: [0; OPS_USIZE],
        rng: Rng(seed),
        model: Model::default(),
        base: base.to_string(),
        next: 0,
    };
    if extras.big_dir > 0 {
        // The directory was made by mke2fs -d and indexed by e2fsck -D (see `fresh`): libext2fs
        // maintains existing hash trees but, like the kernel for directories already past one
        // block, does not index a linear directory that grows.
        let big = join(base, "big");
        run.model.nodes.insert(
            big.clone(),
            Node {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                xattrs: BTreeMap::new(),
            },
        );
        let empty = |mode| Node {
            kind: Kind::File(Vec::new()),
            mode,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        };
        for i in 0..extras.big_dir {
            run.model
                .nodes
                .insert(format!("{big}/{}", big_name(i)), empty(0o644));
        }
        // Remove every third entry, so the blocks have holes, and add as many again: hash-tree
        // leaves fill, split and refill.
        for i in (0..extras.big_dir).step_by(3) {
            let p = format!("{big}/{}", big_name(i));
            fs.unlink(&gp(&p)).expect("unlink from big dir");
            run.model.nodes.remove(&p);
        }
        for i in 0..extras.big_dir / 3 {
            let p = format!("{big}/new-{}", big_name(i));
            fs.write_file(&gp(&p), b"", &NewFileAttrs::with_mode(0o600))
                .expect("add to big dir");
            run.model.nodes.insert(p, empty(0o600));
        }
        run.verify(&big);
    }
    if extras.big_file > 0 {
        let p = join(base, "large");
        let data = content(&mut run.rng, extras.big_file);
        fs.write_file(&gp(&p), &data, &NewFileAttrs::file())
            .expect("large file");
        // Rewrite a stretch in the middle, crossing indirect-block boundaries on ext2/3.
        let patch = content(&mut run.rng, 300_000);
        fs.write_at(&gp(&p), 5 << 20, &patch).expect("patch large");
        let mut node = Node {
            kind: Kind::File(data),
            mode: 0o644,
            uid: 0,
            gid: 0,
            xattrs: BTreeMap::new(),
        };
        if let Kind::File(d) = &mut node.kind {
            d[5 << 20..(5 << 20) + patch.len()].copy_from_slice(&patch);
        }
        run.model.nodes.insert(p.clone(), node);
        run.verify(&p);
    }
    for _ in 0..ops {
        run.step();
    }
    // Every kind of operation ran (verification is kinds 18 and 19).
    assert!(
        run.done.iter().all(|&n| n > 0),
        "operations that never ran: {:?}",
        run.done
    );
    for p in run.any() {
        run.verify(&p);
    }
    // After flush the device holds a consistent filesystem while it is still open.
    fs.flush().expect("flush");
    let snap = tempfile::tempdir().expect("tempdir");
    let copy = Target {
        img: snap.path().join("flushed.img"),
        offset: t.offset,
    };
    std::fs::copy(&t.img, &copy.img).expect("copy image");
    copy.e2fsck_clean();
    drop(copy);
    drop(snap);
    let model = std::mem::take(&mut run.model);
    drop(run);
    drop(fs);
    t.e2fsck_clean();
    check_with_debugfs(t, base, &model);
}

/// Names in the big directory (long, so a 1 KiB block holds few and the tree gets deep).
fn big_name(i: usize) -> String {
    format!("entry-with-a-rather-longer-name-{i:05}")
}

/// `EXT2_INDEX_FL`: the directory is a hash tree (ext4 disk layout, "Inode flags").
const INDEX_FL: u32 = 0x1000;

fn fresh(name: &str, fs_type: &str, block: u32, features: &str, seed: u64, extras: Extras) {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let big = src.join("t/big");
    std::fs::create_dir_all(&big).expect("mkdir");
    for d in [src.join("t"), big.clone()] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    for i in 0..extras.big_dir {
        let f = big.join(big_name(i));
        std::fs::write(&f, b"").expect("populate");
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
    }
    if extras.big_dir == 0 {
        std::fs::remove_dir(&big).expect("rmdir");
    }
    let t = mkfs_from(dir.path(), name, fs_type, block, features, 64, Some(&src));
    if extras.big_dir > 0 {
        // mke2fs -d writes linear directories; e2fsck -D indexes them (exit 1: changed).
        let out = Command::new("e2fsck")
            .arg("-fyD")
            .arg(&t.img)
            .output()
            .expect("run e2fsck -D");
        assert!(matches!(out.status.code(), Some(0 | 1)), "e2fsck -fyD");
    }
    let indexed = !features.contains("^dir_index");
    if extras.big_dir > 0 {
        assert_eq!(inode_flags(&t, "/t/big") & INDEX_FL != 0, indexed, "before");
    }
    random_run(&t, 64 << 20, "/t", seed, 240, extras);
    if extras.big_dir > 0 {
        assert_eq!(inode_flags(&t, "/t/big") & INDEX_FL != 0, indexed, "after");
    }
}

#[test]
fn random_ops_ext4_4k_metadata_csum_htree() {
    fresh(
        "a.img",
        "ext4",
        4096,
        "metadata_csum,dir_index",
        1,
        Extras {
            big_dir: 2000,
            big_file: 11 << 20,
        },
    );
}

#[test]
fn random_ops_ext4_1k_metadata_csum_htree() {
    fresh(
        "b.img",
        "ext4",
        1024,
        "metadata_csum,dir_index",
        2,
        Extras {
            big_dir: 3000,
            big_file: 0,
        },
    );
}

#[test]
fn random_ops_ext4_4k_no_metadata_csum_no_dir_index() {
    fresh(
        "c.img",
        "ext4",
        4096,
        "^metadata_csum,^dir_index",
        3,
        Extras {
            big_dir: 2000,
            big_file: 0,
        },
    );
}

#[test]
fn random_ops_ext4_1k_no_metadata_csum() {
    fresh(
        "d.img",
        "ext4",
        1024,
        "^metadata_csum,dir_index",
        4,
        Extras::default(),
    );
}

#[test]
fn random_ops_ext4_1k_metadata_csum_no_dir_index() {
    fresh(
        "e.img",
        "ext4",
        1024,
        "metadata_csum,^dir_index",
        5,
        Extras::default(),
    );
}

#[test]
fn random_ops_ext3() {
    fresh(
        "f.img",
        "ext3",
        4096,
        "",
        6,
        Extras {
            big_dir: 0,
            big_file: 11 << 20,
        },
    );
}

#[test]
fn random_ops_ext2_1k() {
    fresh(
        "g.img",
        "ext2",
        1024,
        "",
        7,
        Extras {
            big_dir: 0,
            big_file: 11 << 20,
        },
    );
}

/// `debugfs stat PATH`'s inode flags.
fn inode_flags(t: &Target, path: &str) -> u32 {
    let out = t.debugfs(&[format!("stat {path}")]).remove(0);
    let text = String::from_utf8_lossy(&out).into_owned();
    let hex = text
        .split("Flags: 0x")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no flags in {text}"));
    u32::from_str_radix(hex, 16).expect("hex flags")
}

#[test]
fn growing_linear_directories_stay_linear_and_valid() {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "lin.img", "ext4", 1024, "dir_index", 32);
    let fs = t.open(32 << 20);
    fs.mkdir(&gp("/grow"), &NewFileAttrs::dir()).expect("mkdir");
    for i in 0..1500 {
        fs.write_file(&gp(&format!("/grow/n{i:04}")), b"", &NewFileAttrs::file())
            .expect("create");
    }
    assert_eq!(fs.read_dir(&gp("/grow")).expect("list").len(), 1500);
    drop(fs);
    t.e2fsck_clean();
    assert_eq!(inode_flags(&t, "/grow") & INDEX_FL, 0);
    let ls = t.debugfs(&["ls -p /grow".to_string()]).remove(0);
    let names = String::from_utf8_lossy(&ls)
        .lines()
        .filter(|l| l.contains("/n"))
        .count();
    assert_eq!(names, 1500);
}

// ----- refusals, errors, durability ----------------------------------------------------------

#[test]
fn unclean_filesystems_are_refused_without_writing_a_byte() {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (request, cause) in [
        ("feature needs_recovery", "journal needs recovery"),
        ("ssv state 0", "not cleanly unmounted"),
        ("ssv state 3", "recorded errors"),
    ] {
        let t = mkfs(dir.path(), "dirty.img", "ext4", 4096, "", 16);
        let out = Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&t.img)
            .output()
            .expect("debugfs");
        assert!(out.status.success(), "{request}");
        let before = std::fs::read(&t.img).expect("read image");
        let hash_before = crc32fast::hash(&before);
        let dev: Arc<dyn BlockWrite> =
            Arc::new(RawFile::open(&t.img, Access::ReadWrite).expect("open"));
        let err = crate::open_rw(dev.clone(), WriteOptions::new())
            .err()
            .expect("refused");
        let Error::Unclean { what, detail } = &err else {
            panic!("{request}: expected Unclean, got {err:?}");
        };
        assert_eq!(*what, "ext2/3/4 filesystem");
        assert!(detail.contains(cause), "{request}: {detail}");
        assert!(detail.contains("e2fsck"), "{request}: {detail}");
        assert!(detail.ends_with(", or force the write"), "{detail}");
        drop(dev);
        let after = std::fs::read(&t.img).expect("read image");
        assert_eq!(
            crc32fast::hash(&after),
            hash_before,
            "{request}: the refusal wrote to the device"
        );
        assert!(after == before);
        // Forced, it opens.
        let dev: Arc<dyn BlockWrite> =
            Arc::new(RawFile::open(&t.img, Access::ReadWrite).expect("open"));
        let fs = crate::open_rw(dev, WriteOptions::new().force(true)).expect("forced open");
        assert!(fs.exists(b"/lost+found").expect("stat"));
    }
    let e = map_err(ffi::Error::Refused(ffi::Refusal::JournalNeedsRecovery));
    assert_eq!(
        e.to_string(),
        "refusing to write ext2/3/4 filesystem: the ext4 journal needs recovery (replay it with \
         e2fsck or by mounting the filesystem once), or force the write"
    );
}

#[test]
fn ffi_errors_map_to_our_variants() {
    use ffi::Error as F;
    let p = || "/etc/x".to_string();
    assert!(
        matches!(map_err(F::NotFound { path: p() }), Error::NotFound { path } if path == "/etc/x")
    );
    assert!(
        matches!(map_err(F::Exists { path: p() }), Error::AlreadyExists { path } if path == "/etc/x")
    );
    assert!(
        matches!(map_err(F::NotADirectory { path: p() }), Error::NotADirectory { path } if path == "/etc/x")
    );
    assert!(
        matches!(map_err(F::IsADirectory { path: p() }), Error::IsADirectory { path } if path == "/etc/x")
    );
    assert!(
        matches!(map_err(F::NotEmpty { path: p() }), Error::NotEmpty { path } if path == "/etc/x")
    );
    assert_eq!(
        map_err(F::NotARegularFile { path: p() }).to_string(),
        "unsupported ext2/3/4 writing: /etc/x: not a regular file"
    );
    assert_eq!(
        map_err(F::Unsupported("quota feature".into())).to_string(),
        "unsupported ext2/3/4 writing: quota feature"
    );
    assert_eq!(
        map_err(F::TooLarge {
            what: "xattr value",
            len: 70_000,
            limit: 65_536
        })
        .to_string(),
        "xattr value of 70000 bytes exceeds the limit of 65536"
    );
    assert_eq!(
        map_err(F::NotExt { found: 0x1234 }).to_string(),
        "corrupt ext2/3/4 superblock at 0x438: magic 0x1234, expected 0xef53"
    );
    let e = map_err(F::Device {
        op: "write".into(),
        source: disk::Error::ReadOnly,
    });
    assert!(matches!(e, Error::Disk(disk::Error::ReadOnly)), "{e:?}");
    let e = map_err(F::Ext2 {
        op: "write_file /x".into(),
        code: 2_133_571_400,
        message: "could not allocate block in ext2 filesystem".into(),
    });
    let Error::Disk(disk::Error::Io { source, .. }) = &e else {
        panic!("{e:?}");
    };
    assert_eq!(source.kind(), std::io::ErrorKind::StorageFull);
    assert!(source.to_string().contains("write_file /x"), "{source}");
}

#[test]
fn kinds_names_and_misuse_are_reported() {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "misc.img", "ext4", 4096, "", 16);
    let fs = t.open(16 << 20);
    let info = fs.info();
    assert_eq!(info.kind, FsKind::Ext4);
    assert_eq!(info.case, CaseSensitivity::Sensitive);
    assert!(info.uuid.is_some());
    // Names are bytes: Latin-1 names from old guests work.
    let latin1 = GuestPath::root().join_name(b"caf\xe9").expect("path");
    fs.write_file(&latin1, b"x", &NewFileAttrs::file())
        .expect("latin-1 name");
    let link = GuestPath::root().join_name(b"l\xefen").expect("path");
    fs.symlink(&link, b"caf\xe9", &NewFileAttrs::file())
        .expect("latin-1 symlink");
    assert_eq!(fs.read_link(&link).expect("readlink"), b"caf\xe9");
    let names: BTreeSet<Vec<u8>> = fs
        .read_dir(&GuestPath::root())
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&b"caf\xe9"[..]) && names.contains(&b"l\xefen"[..]));
    let mut buf = [0u8; 4];
    assert_eq!(fs.read_at(&latin1, 0, &mut buf).expect("read"), 1);
    fs.write_file(&gp("/f"), b"x", &NewFileAttrs::file())
        .expect("write");
    let e = fs.set_xattr(&gp("/f"), b"user.\xff", b"v").unwrap_err();
    assert!(e.to_string().contains("xattr name"), "{e}");
    assert!(matches!(
        fs.read_link(&gp("/f")),
        Err(Error::NotASymlink { .. })
    ));
    assert!(matches!(
        fs.rmdir(&GuestPath::root()),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.mkdir(&GuestPath::root(), &NewFileAttrs::dir()),
        Err(Error::AlreadyExists { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/no/f"), b"x", &NewFileAttrs::file()),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_at(&gp("/missing"), 0, b"x"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/f/x"), b"x", &NewFileAttrs::file()),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.write_file(&gp("/lost+found"), b"x", &NewFileAttrs::file()),
        Err(Error::IsADirectory { .. })
    ));
    fs.symlink(&gp("/l"), b"f", &NewFileAttrs::file())
        .expect("symlink");
    assert!(matches!(
        fs.symlink(&gp("/l"), b"f", &NewFileAttrs::file()),
        Err(Error::AlreadyExists { .. })
    ));
    // A final symlink is never followed by the backend.
    let e = fs
        .write_file(&gp("/l"), b"y", &NewFileAttrs::file())
        .unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert_eq!(fs.read_link(&gp("/l")).expect("readlink"), b"f");
    fs.mkdir(&gp("/d"), &NewFileAttrs::dir()).expect("mkdir");
    fs.mkdir(&gp("/d/e"), &NewFileAttrs::dir()).expect("mkdir");
    assert!(matches!(
        fs.rename(&gp("/d"), &gp("/d/e/x")),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        fs.rename(&gp("/f"), &gp("/d")),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.remove_xattr(&gp("/f"), b"user.none"),
        Err(Error::NotFound { .. })
    ));
    // Dropped without flush: libext2fs still writes its metadata back on close.
    drop(fs);
    t.e2fsck_clean();
}

#[test]
fn uncommitted_transaction_rolls_back_to_the_original_bytes() {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "txn.img", "ext4", 4096, "", 16);
    let original = std::fs::read(&t.img).expect("read");
    let undo = dir.path().join("txn.undo");
    {
        let raw = Arc::new(RawFile::open(&t.img, Access::ReadWrite).expect("open"));
        let txn = Arc::new(disk::txn::Transaction::begin(raw, &undo).expect("begin"));
        let fs = crate::open_rw(txn.clone(), WriteOptions::new()).expect("open");
        fs.mkdir_p(b"/etc/a/b", &NewFileAttrs::dir())
            .expect("mkdir");
        fs.write_file_path(b"/etc/a/b/f", &[7u8; 100_000], &NewFileAttrs::file())
            .expect("write");
        fs.flush().expect("flush");
        drop(fs);
        // The run "dies": never committed.
    }
    assert!(std::fs::read(&t.img).expect("read") != original);
    let raw = RawFile::open(&t.img, Access::ReadWrite).expect("open");
    let r = disk::txn::recover(&raw, &undo).expect("recover");
    assert!(matches!(r, disk::txn::Recovery::RolledBack { .. }), "{r:?}");
    assert!(std::fs::read(&t.img).expect("read") == original);
}

// ----- SELinux labels ------------------------------------------------------------------------

/// `(inode, permission bits, uid, gid)` from `debugfs stat` output.
fn stat_fields(text: &[u8]) -> (u32, u32, u32, u32) {
    let text = String::from_utf8_lossy(text).into_owned();
    let field = |key: &str| -> &str {
        text.split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (
        field("Inode: ").parse().expect("inode"),
        u32::from_str_radix(field("Mode: "), 8).expect("mode"),
        field("User: ").parse().expect("uid"),
        field("Group: ").parse().expect("gid"),
    )
}

#[test]
fn selinux_labels_survive_replacement_and_label_new_entries() {
    if !need(TOOLS) {
        return;
    }
    const PASSWD_LABEL: &[u8] = b"system_u:object_r:passwd_file_t:s0\0";
    const SHADOW_LABEL: &[u8] = b"system_u:object_r:shadow_t:s0\0";
    // 256-byte inodes keep labels in the inode; 128-byte ones have no room, so they live in a
    // separate xattr block.
    for inode_size in ["256", "128"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("etc")).expect("mkdir");
        let passwd = src.join("etc/passwd");
        std::fs::write(&passwd, b"root:x:0:0:root:/root:/bin/bash\n").expect("write");
        std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .expect("chmod");
        std::os::unix::fs::chown(&passwd, Some(0), Some(42)).expect("chown");
        let img = dir.path().join("se.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(16 << 20))
            .expect("image");
        let out = Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-I",
                inode_size,
                "-E",
                "root_owner=0:0",
            ])
            .arg("-d")
            .arg(&src)
            .arg(&img)
            .output()
            .expect("mke2fs");
        assert!(out.status.success(), "mke2fs -I {inode_size}");
        let t = Target { img, offset: 0 };
        let value = dir.path().join("label");
        std::fs::write(&value, PASSWD_LABEL).expect("label file");
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!(
                "ea_set -f {} /etc/passwd security.selinux",
                value.display()
            ))
            .arg(&t.img)
            .output()
            .expect("debugfs ea_set");
        assert!(out.status.success());
        let before = stat_fields(&t.debugfs(&["stat /etc/passwd".to_string()]).remove(0));
        assert_eq!((before.1, before.2, before.3), (0o640, 0, 42), "as built");

        let fs = t.open(16 << 20);
        let p = gp("/etc/passwd");
        assert_eq!(
            fs.get_xattr(&p, b"security.selinux").expect("get"),
            Some(PASSWD_LABEL.to_vec())
        );
        let other = NewFileAttrs::with_mode(0o777)
            .owner(1000, 1000)
            .xattr(b"security.selinux", b"unconfined_u:object_r:tmp_t:s0\0");
        // Grow into blocks, then shrink back to a few bytes.
        let grown: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        fs.write_file(&p, &grown, &other).expect("replace, larger");
        let new = b"root:x:0:0:root:/root:/bin/sh\nrehost:x:999:999::/:/sbin/nologin\n";
        fs.write_file(&p, new, &other).expect("replace, smaller");
        let shadow = gp("/etc/shadow");
        fs.write_file(
            &shadow,
            b"root:*:19000:0:99999:7:::\n",
            &NewFileAttrs::with_mode(0o000).xattr(b"security.selinux", SHADOW_LABEL),
        )
        .expect("new labelled file");
        fs.mkdir(
            &gp("/etc/rehost.d"),
            &NewFileAttrs::dir().xattr(b"security.selinux", SHADOW_LABEL),
        )
        .expect("labelled dir");
        fs.symlink(
            &gp("/etc/rehost.link"),
            b"rehost.d",
            &NewFileAttrs::file().xattr(b"security.selinux", SHADOW_LABEL),
        )
        .expect("labelled symlink");
        fs.flush().expect("flush");
        drop(fs);
        t.e2fsck_clean();

        let mut outs = t.debugfs(&[
            "stat /etc/passwd".to_string(),
            "ea_get -V /etc/passwd security.selinux".to_string(),
            "cat /etc/passwd".to_string(),
            "stat /etc/shadow".to_string(),
            "ea_get -V /etc/shadow security.selinux".to_string(),
            "ea_get -V /etc/rehost.d security.selinux".to_string(),
            "ea_get -V /etc/rehost.link security.selinux".to_string(),
        ]);
        let label = |mut v: Vec<u8>| {
            assert_eq!(v.pop(), Some(b'\n'));
            v
        };
        assert_eq!(stat_fields(&outs[0]), before, "inode, mode and owner kept");
        assert_eq!(label(std::mem::take(&mut outs[1])), PASSWD_LABEL);
        assert_eq!(outs[2], new);
        let (_, mode, uid, gid) = stat_fields(&outs[3]);
        assert_eq!((mode, uid, gid), (0o000, 0, 0));
        for (i, out) in outs.into_iter().enumerate().skip(4) {
            assert_eq!(label(out), SHADOW_LABEL, "request {i}");
        }
    }
}

// ----- builder images ------------------------------------------------------------------------

/// A copy of builder image `name` and its root filesystem's place in it, or `None` (skipping)
/// when the image cannot be built here.
fn builder_root(name: &str, dir: &Path) -> Option<(Target, u64)> {
    let built = match images::build(name) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping: {name} cannot be built here: {e}");
            return None;
        }
    };
    let expected = images::expected(name).expect("known image");
    let n: u32 = expected
        .root_location
        .strip_prefix("part")
        .and_then(|n| n.parse().ok())
        .expect("root on a partition");
    let img = dir.join(format!("{name}.raw"));
    std::fs::copy(&built, &img).expect("copy image");
    let raw = RawFile::open(&img, Access::ReadOnly).expect("open copy");
    let table = disk::partition::read_table(&raw).expect("partition table");
    let part = table.get(n).expect("root partition");
    Some((
        Target {
            img,
            offset: part.start,
        },
        part.len,
    ))
}

fn builder_run(name: &str, seed: u64) {
    if !need(TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let Some((t, len)) = builder_root(name, dir.path()) else {
        return;
    };
    t.e2fsck_clean();
    // Replace a file the builder made: contents change, identity stays.
    let before = stat_fields(&t.debugfs(&["stat /etc/hostname".to_string()]).remove(0));
    let fs = t.open(len);
    fs.write_file(
        &gp("/etc/hostname"),
        b"migrated\n",
        &NewFileAttrs::with_mode(0o600),
    )
    .expect("replace hostname");
    fs.flush().expect("flush");
    drop(fs);
    let outs = t.debugfs(&[
        "stat /etc/hostname".to_string(),
        "cat /etc/hostname".to_string(),
    ]);
    assert_eq!(stat_fields(&outs[0]), before);
    assert_eq!(outs[1], b"migrated\n");
    random_run(&t, len, "/rehost-test", seed, 120, Extras::default());
}

#[test]
fn random_ops_on_debian12_vmware_root() {
    builder_run("debian12-vmware", 11);
}

#[test]
fn random_ops_on_ubuntu2204_uefi_root() {
    builder_run("ubuntu2204-uefi", 12);
}

// ----- other devices -------------------------------------------------------------------------

/// Writes a small tree through `dev` (opened by `disk::open`), flushes, and returns what was
/// written, for the caller to check on the raw image.
fn edit_through(dev: Arc<dyn BlockWrite>) -> Vec<(String, Vec<u8>)> {
    let fs = crate::open_rw(dev, WriteOptions::new()).expect("open ext through the device");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let files = vec![
        ("/etc/hostname".to_string(), b"through-a-device\n".to_vec()),
        ("/var/lib/rehost/big".to_string(), big),
    ];
    fs.mkdir_p(b"/etc", &NewFileAttrs::dir()).expect("mkdir");
    fs.mkdir_p(b"/var/lib/rehost", &NewFileAttrs::dir())
        .expect("mkdir");
    for (p, d) in &files {
        fs.write_file(&gp(p), d, &NewFileAttrs::file())
            .expect("write");
    }
    fs.flush().expect("flush");
    files
}

fn check_files(t: &Target, files: &[(String, Vec<u8>)]) {
    t.e2fsck_clean();
    let reqs: Vec<String> = files.iter().map(|(p, _)| format!("cat {p}")).collect();
    for ((p, want), got) in files.iter().zip(t.debugfs(&reqs)) {
        assert!(got == *want, "{p} differs");
    }
}

#[test]
fn writes_through_qcow2() {
    if !need(&["mke2fs", "e2fsck", "debugfs", "qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "base.img", "ext4", 4096, "", 32);
    let q = dir.path().join("disk.qcow2");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&t.img)
        .arg(&q)
        .output()
        .expect("qemu-img convert");
    assert!(out.status.success());
    let opened = disk::open::open(
        q.to_str().expect("utf-8 temp path"),
        &disk::open::OpenOptions::new()
            .format(disk::detect::ImageFormat::Qcow2)
            .access(Access::ReadWrite),
    )
    .expect("open qcow2");
    let files = edit_through(opened.write().expect("writable"));
    drop(opened);
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&q)
        .output()
        .expect("qemu-img check");
    assert!(out.status.success(), "qemu-img check");
    let back = Target {
        img: dir.path().join("back.img"),
        offset: 0,
    };
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(&q)
        .arg(&back.img)
        .output()
        .expect("qemu-img convert back");
    assert!(out.status.success());
    check_files(&back, &files);
}

#[test]
fn writes_through_nbd() {
    if !need(&["mke2fs", "e2fsck", "debugfs", "qemu-nbd"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "nbd.img", "ext4", 4096, "", 32);
    let sock = dir.path().join("nbd.sock");
    let mut child = Command::new("qemu-nbd")
        .args(["-f", "raw", "--persistent", "-x", "exp"])
        .arg(format!("--socket={}", sock.display()))
        .arg(&t.img)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn qemu-nbd");
    // Bounded by attempts, not by a time assertion.
    for _ in 0..500 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let opened = disk::open::open(
        &format!("nbd+unix:///exp?socket={}", sock.display()),
        &disk::open::OpenOptions::new().access(Access::ReadWrite),
    );
    let files = opened.map(|o| {
        let files = edit_through(o.write().expect("writable"));
        drop(o);
        files
    });
    let _ = child.kill();
    let _ = child.wait();
    check_files(&t, &files.expect("open nbd export"));
}

#[test]
fn the_writer_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Ext4Rw>();
}

// found by tests/tests/ext4_write_hostile.rs: a superblock libext2fs would trust (it crashed at
// close) is refused as corrupt, naming the field, and nothing is written.
#[test]
fn inconsistent_geometry_is_corrupt() {
    if !need(&["mke2fs"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let t = mkfs(dir.path(), "geo.img", "ext4", 1024, "^metadata_csum", 4);
    let mut bytes = std::fs::read(&t.img).expect("read image");
    // s_first_data_block (superblock offset 0x14) must be 1 with 1 KiB blocks.
    bytes[0x414] = 128;
    let dev = Arc::new(disk::MemDisk::from_vec(bytes.clone()));
    let Err(e) = crate::open_rw(dev.clone(), WriteOptions::new().force(true)) else {
        panic!("an inconsistent superblock opened");
    };
    match &e {
        Error::Corrupt {
            structure,
            offset,
            detail,
        } => {
            assert_eq!(structure, "ext2/3/4 superblock");
            assert_eq!(*offset, 0x414);
            assert_eq!(detail, "s_first_data_block 128 out of range 1..=1");
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert!(dev.to_vec() == bytes, "a refused image was written to");
}
