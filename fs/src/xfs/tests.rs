//! Whole-filesystem tests over images built by `mkfs.xfs -p` (no root needed), with `xfs_db` and,
//! where the kernel allows, a read-only loop mount as oracles.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::BlockRead;

use super::{XfsFs, XfsOptions, fuzzing};
use crate::{CaseSensitivity, Error, FileType, FsKind, FsRead, FsReadExt, GuestPath};

/// A read-only file as a device.
struct FileDev(File, u64);

impl BlockRead for FileDev {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
        disk::check_range(self.1, offset, buf.len() as u64)?;
        self.0
            .read_exact_at(buf, offset)
            .map_err(|e| disk::Error::io(offset, e))
    }
}

/// The image's bytes in memory with a few bytes patched and an optional shorter size: cheap
/// mutations of a large, mostly sparse image.
struct Overlay {
    base: Arc<Vec<u8>>,
    patches: Vec<(u64, u8)>,
    size: u64,
}

impl BlockRead for Overlay {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
        disk::check_range(self.size, offset, buf.len() as u64)?;
        let start = usize::try_from(offset).unwrap();
        buf.copy_from_slice(&self.base[start..start + buf.len()]);
        for &(at, v) in &self.patches {
            if at >= offset && at < offset + buf.len() as u64 {
                buf[usize::try_from(at - offset).unwrap()] = v;
            }
        }
        Ok(())
    }
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipping: {tool} not found");
    }
    ok
}

fn open_file(img: &Path) -> XfsFs {
    let f = File::open(img).unwrap();
    let len = f.metadata().unwrap().len();
    XfsFs::open(Arc::new(FileDev(f, len))).unwrap()
}

/// Deterministic bytes (xorshift), so files differ block by block.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

const LONG_TARGET_LEN: usize = 1000;

fn long_target() -> String {
    let mut s = String::from("/");
    while s.len() < LONG_TARGET_LEN {
        s.push_str("long/");
    }
    s.truncate(LONG_TARGET_LEN);
    s
}

/// Writes host files and a protofile describing the test tree; returns the protofile path.
fn write_proto(dir: &Path, huge_entries: usize, long_symlink: bool) -> PathBuf {
    std::fs::write(dir.join("small"), b"hello xfs\n").unwrap();
    std::fs::write(dir.join("big"), pattern(7, 3 * 1024 * 1024 + 123)).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let s = |p: &str| dir.join(p).display().to_string();
    let mut l = vec!["boot".to_owned(), "0 0".to_owned(), "d--755 0 0".to_owned()];
    l.push(format!("small ---640 1000 100 {}", s("small")));
    l.push(format!("big ---600 0 0 {}", s("big")));
    l.push(format!("empty ---644 0 0 {}", s("empty")));
    l.push("short l--777 0 0 small".to_owned());
    if long_symlink {
        l.push(format!("long l--777 0 0 {}", long_target()));
    }
    l.push("fifo p--600 0 0".to_owned());
    l.push("null c--666 0 0 1 3".to_owned());
    l.push("sf d--750 5 6".to_owned());
    l.push(format!("a ---644 0 0 {}", s("small")));
    l.push("inner d--755 0 0".to_owned());
    l.push(format!("deep ---644 0 0 {}", s("small")));
    l.push("$".to_owned());
    l.push("$".to_owned());
    l.push("blk d--755 0 0".to_owned());
    for i in 0..30 {
        l.push(format!("file{i:03} ---644 0 0 {}", s("small")));
    }
    l.push("$".to_owned());
    l.push("huge d--755 0 0".to_owned());
    for i in 0..huge_entries {
        l.push(format!(
            "entry_with_a_longish_name_{i:05} ---644 0 0 {}",
            s("empty")
        ));
    }
    l.push("$".to_owned());
    l.push("$".to_owned());
    let proto = dir.join("proto");
    std::fs::write(&proto, l.join("\n") + "\n").unwrap();
    proto
}

/// `mkfs.xfs -p` with the test tree. xfsprogs 6.1 writes remote symlinks without the v5 "XSLM"
/// header (`xfs_db` reports a CRC error on them), so on v5 the long symlink is left out unless a
/// test wants that broken one.
fn mkfs(dir: &Path, name: &str, opts: &[&str], huge_entries: usize, size: &str) -> PathBuf {
    mkfs_with(dir, name, opts, huge_entries, size, opts.contains(&"crc=0"))
}

fn mkfs_with(
    dir: &Path,
    name: &str,
    opts: &[&str],
    huge_entries: usize,
    size: &str,
    long_symlink: bool,
) -> PathBuf {
    let proto = write_proto(dir, huge_entries, long_symlink);
    let img = dir.join(name);
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-f"])
        .args(opts)
        .arg("-p")
        .arg(&proto)
        .arg("-d")
        .arg(format!("file,name={},size={size}", img.display()))
        // fstests' escape hatch: lets mkfs make filesystems below 300 MiB for the fuzz image.
        .env("TEST_DIR", "1")
        .env("TEST_DEV", "1")
        .env("QA_CHECK_FS", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkfs.xfs {opts:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// `xfs_db -r -c 'ls PATH'`: name -> (inode, type word), without `.` and `..`.
fn xfs_db_ls(img: &Path, path: &str) -> BTreeMap<Vec<u8>, (u64, String)> {
    let out = Command::new("xfs_db")
        .arg("-r")
        .arg("-c")
        .arg(format!("ls {path}"))
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // offset ino type hash namelen name (good)
        let name = f[5].as_bytes().to_vec();
        if name != b"." && name != b".." {
            m.insert(name, (f[1].parse().unwrap(), f[2].to_owned()));
        }
    }
    m
}

fn type_word(t: FileType) -> &'static str {
    match t {
        FileType::Regular => "regular",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::CharDevice => "chardev",
        FileType::BlockDevice => "blockdev",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::Other => "other",
    }
}

fn p(s: &str) -> GuestPath {
    GuestPath::parse(s.as_bytes()).unwrap()
}

/// Checks every directory listing against `xfs_db`, and the known contents field by field.
fn check_tree(img: &Path, huge_entries: usize, ftype: bool) {
    let fs = open_file(img);
    let info = fs.info();
    assert_eq!(info.kind, FsKind::Xfs);
    assert_eq!(info.case, CaseSensitivity::Sensitive);
    let blkid = Command::new("xfs_db")
        .args(["-r", "-c", "uuid"])
        .arg(img)
        .output()
        .unwrap();
    let want_uuid = String::from_utf8_lossy(&blkid.stdout)
        .trim()
        .trim_start_matches("UUID = ")
        .to_owned();
    assert_eq!(info.uuid.as_deref(), Some(want_uuid.as_str()));
    assert_eq!(fs.superblock().has_ftype, ftype);

    for dir in ["/", "/sf", "/sf/inner", "/blk", "/huge"] {
        let ours = fs.read_dir(&p(dir)).unwrap();
        let oracle = xfs_db_ls(img, dir);
        assert_eq!(ours.len(), oracle.len(), "{dir}");
        for e in &ours {
            let (ino, ty) = &oracle[&e.name];
            if ty != "unknown" {
                // xfs_db says "unknown" when entries carry no ftype.
                assert_eq!(type_word(e.file_type), ty, "{dir} {:?}", e.name);
            }
            let child = GuestPath::parse(dir.as_bytes())
                .unwrap()
                .join_name(&e.name)
                .unwrap();
            assert_eq!(fs.lstat(&child).unwrap().ino, *ino);
        }
    }
    assert_eq!(fs.read_dir(&p("/huge")).unwrap().len(), huge_entries);
    let blk = fs.read_dir(&p("/blk")).unwrap();
    assert_eq!(blk.len(), 30);
    assert_eq!(blk[0].name, b"file000");

    let m = fs.lstat(&p("/small")).unwrap();
    assert_eq!(
        (m.file_type, m.size, m.mode, m.uid, m.gid, m.nlink),
        (FileType::Regular, 10, 0o640, 1000, 100, 1)
    );
    assert!(m.mtime > 1_600_000_000, "mtime {}", m.mtime);
    let m = fs.lstat(&p("/sf")).unwrap();
    assert_eq!(
        (m.file_type, m.mode, m.uid, m.gid, m.nlink),
        (FileType::Directory, 0o750, 5, 6, 3)
    );
    assert_eq!(fs.lstat(&p("/fifo")).unwrap().file_type, FileType::Fifo);
    assert_eq!(
        fs.lstat(&p("/null")).unwrap().file_type,
        FileType::CharDevice
    );
    assert_eq!(fs.lstat(&p("/")).unwrap().ino, fs.superblock().rootino);

    assert_eq!(fs.read_file(b"/small", 1 << 20).unwrap(), b"hello xfs\n");
    assert_eq!(
        fs.read_file(b"/sf/inner/deep", 1 << 20).unwrap(),
        b"hello xfs\n"
    );
    assert_eq!(fs.read_file(b"/empty", 1 << 20).unwrap(), b"");
    assert_eq!(
        fs.read_file(b"/big", 8 << 20).unwrap(),
        pattern(7, 3 * 1024 * 1024 + 123)
    );
    // A read straddling block boundaries, and one past the end.
    let mut buf = [0u8; 10];
    assert_eq!(fs.read_at(&p("/big"), 4090, &mut buf).unwrap(), 10);
    assert_eq!(buf[..], pattern(7, 4100)[4090..]);
    assert_eq!(fs.read_at(&p("/big"), 1 << 30, &mut buf).unwrap(), 0);
    assert_eq!(
        fs.read_file(b"/short", 1 << 20).unwrap(),
        b"hello xfs\n",
        "followed in-guest"
    );
    assert_eq!(fs.read_link(&p("/short")).unwrap(), b"small");
    match (fs.superblock().version, fs.read_link(&p("/long"))) {
        (super::superblock::SbVersion::V4, Ok(t)) => {
            assert_eq!(t, long_target().as_bytes());
            assert_eq!(fs.lstat(&p("/long")).unwrap().size, LONG_TARGET_LEN as u64);
        }
        // The header mkfs 6.1 leaves out (see `mkfs`).
        (
            _,
            Err(Error::Corrupt {
                structure, detail, ..
            }),
        ) => {
            assert!(structure.starts_with("xfs symlink "), "{structure}");
            assert_eq!(detail, "sl_magic 0x2f6c6f6e is not XSLM");
        }
        (_, Err(Error::NotFound { .. })) => {}
        (v, r) => panic!("{v:?} {r:?}"),
    }

    assert!(matches!(fs.lstat(&p("/nope")), Err(Error::NotFound { path }) if path == "/nope"));
    assert!(matches!(fs.lstat(&p("/huge/x")), Err(Error::NotFound { path }) if path == "/huge/x"));
    assert!(
        matches!(fs.lstat(&p("/SMALL")), Err(Error::NotFound { .. })),
        "case-sensitive"
    );
    assert!(
        matches!(fs.lstat(&p("/small/x")), Err(Error::NotADirectory { path }) if path == "/small")
    );
    assert!(matches!(
        fs.read_dir(&p("/small")),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_link(&p("/small")),
        Err(Error::NotASymlink { .. })
    ));
    assert!(matches!(
        fs.read_at(&p("/sf"), 0, &mut buf),
        Err(Error::IsADirectory { .. })
    ));
    let last = format!("/huge/entry_with_a_longish_name_{:05}", huge_entries - 1);
    assert_eq!(fs.lstat(&p(&last)).unwrap().size, 0);
}

#[test]
fn v5_image_matches_xfs_db() {
    if !have("mkfs.xfs") || !have("xfs_db") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs_with(dir.path(), "v5.img", &[], 5000, "300m", true);
    let fs = open_file(&img);
    assert_eq!(fs.superblock().version, super::superblock::SbVersion::V5);
    assert!(fs.superblock().has_bigtime);
    assert_eq!(fs.info().label, None);
    // The forms this test is meant to cover really occur.
    let fmt = |path: &str| fs.walk(&p(path)).unwrap().format;
    use super::inode::ForkFormat;
    assert_eq!(fmt("/sf"), ForkFormat::Local);
    assert_eq!(fmt("/blk"), ForkFormat::Extents);
    assert_eq!(
        fs.walk(&p("/blk")).unwrap().size,
        4096,
        "single-block directory"
    );
    assert!(
        fs.walk(&p("/huge")).unwrap().size > 4096 * 8,
        "leaf/node directory"
    );
    assert_eq!(fmt("/long"), ForkFormat::Extents, "remote symlink");
    assert_eq!(fmt("/short"), ForkFormat::Local);
    check_tree(&img, 5000, true);
}

#[test]
fn v4_images_match_xfs_db() {
    if !have("mkfs.xfs") || !have("xfs_db") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "v4.img", &["-m", "crc=0"], 2000, "300m");
    assert_eq!(
        open_file(&img).superblock().version,
        super::superblock::SbVersion::V4
    );
    check_tree(&img, 2000, true);
    // Without ftype, entry types come from the inodes.
    let img = mkfs(
        dir.path(),
        "v4n.img",
        &["-m", "crc=0", "-n", "ftype=0"],
        300,
        "300m",
    );
    check_tree(&img, 300, false);
}

#[test]
fn v5_variants_match_xfs_db() {
    if !have("mkfs.xfs") || !have("xfs_db") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 8 KiB directory blocks (sb_dirblklog 1), and 64-bit extent counters.
    let img = mkfs(
        dir.path(),
        "dir8k.img",
        &["-n", "size=8192", "-i", "nrext64=1", "-L", "rhel-root"],
        3000,
        "300m",
    );
    let fs = open_file(&img);
    assert_eq!(fs.superblock().dirblklog, 1);
    assert!(fs.superblock().has_nrext64);
    assert_eq!(fs.info().label.as_deref(), Some("rhel-root"));
    check_tree(&img, 3000, true);
    // 1 KiB blocks: directory blocks hold fewer entries; more btree levels.
    let img = mkfs(dir.path(), "b1k.img", &["-b", "size=1024"], 1000, "300m");
    let fs = open_file(&img);
    assert_eq!(fs.superblock().block_size(), 1024);
    check_tree(&img, 1000, true);
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn try_mount(img: &Path, mnt: &Path, opts: &str) -> Option<Mount> {
    std::fs::create_dir_all(mnt).unwrap();
    let ok = Command::new("mount")
        .arg("-o")
        .arg(format!("loop,{opts}"))
        .arg(img)
        .arg(mnt)
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(Mount(mnt.to_owned()))
    } else {
        println!("skipping: mount -o loop,{opts} failed (not root or no xfs in the kernel)");
        None
    }
}

/// Compares the whole tree with what the kernel sees through a read-only loop mount.
fn compare_with_kernel(fs: &XfsFs, mnt: &Path) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![GuestPath::root()];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let host_dir = mnt.join(dir.to_string().trim_start_matches('/'));
        let mut want: Vec<Vec<u8>> = std::fs::read_dir(&host_dir)
            .unwrap()
            .map(|e| {
                std::os::unix::ffi::OsStrExt::as_bytes(e.unwrap().file_name().as_os_str()).to_vec()
            })
            .collect();
        let mut got: Vec<_> = fs.read_dir(&dir).unwrap();
        want.sort();
        got.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(
            got.iter().map(|e| e.name.clone()).collect::<Vec<_>>(),
            want,
            "{dir}"
        );
        for e in got {
            seen += 1;
            let gp = dir.join_name(&e.name).unwrap();
            let hp = host_dir.join(std::ffi::OsStr::from_bytes_compat(&e.name));
            let hm = std::fs::symlink_metadata(&hp).unwrap();
            let m = fs.lstat(&gp).unwrap();
            assert_eq!(
                (m.ino, m.size, m.mode, m.uid, m.gid, m.nlink, m.mtime),
                (
                    hm.ino(),
                    hm.size(),
                    hm.mode() & 0o7777,
                    hm.uid(),
                    hm.gid(),
                    hm.nlink(),
                    hm.mtime()
                ),
                "{gp}"
            );
            match e.file_type {
                FileType::Directory => stack.push(gp),
                FileType::Regular => assert_eq!(
                    fs.read_file(&gp.to_string().into_bytes(), 64 << 20)
                        .unwrap(),
                    std::fs::read(&hp).unwrap(),
                    "{gp}"
                ),
                FileType::Symlink => assert_eq!(
                    fs.read_link(&gp).unwrap(),
                    std::os::unix::ffi::OsStrExt::as_bytes(
                        std::fs::read_link(&hp).unwrap().as_os_str()
                    ),
                    "{gp}"
                ),
                _ => {}
            }
        }
    }
    assert!(seen > 10);
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// Sparse files, unwritten extents and a btree-mapped file need a writable mount to create.
#[test]
fn kernel_written_files_match_kernel_reads() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 1 KiB blocks, so a 1000-byte symlink target spans two remote blocks (968 bytes each).
    let img = mkfs(dir.path(), "k.img", &["-b", "size=1024"], 50, "300m");
    let mnt = dir.path().join("mnt");
    {
        let Some(_m) = try_mount(&img, &mnt, "rw") else {
            return;
        };
        // Sparse: data at 0 and at 10 MiB, a hole between and after (size 20 MiB).
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(mnt.join("sparse"))
            .unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(&pattern(3, 5000), 10 << 20).unwrap();
        f.set_len(20 << 20).unwrap();
        // Fragmented: one block every other block, far more extents than fit in the inode.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(mnt.join("frag"))
            .unwrap();
        for i in 0..400u64 {
            f.write_all_at(&pattern(i + 1, 4096), i * 8192).unwrap();
            if i % 50 == 0 {
                f.sync_all().unwrap();
            }
        }
        f.sync_all().unwrap();
        // Unwritten: preallocated blocks read as zeroes.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(mnt.join("prealloc"))
            .unwrap();
        f.write_all_at(b"tail", 1 << 20).unwrap();
        f.sync_all().unwrap();
        let st = Command::new("fallocate")
            .args(["-o", "0", "-l", "65536"])
            .arg(mnt.join("prealloc"))
            .status();
        assert!(st.is_ok_and(|s| s.success()));
        std::os::unix::fs::symlink(long_target(), mnt.join("longlink")).unwrap();
        std::fs::create_dir(mnt.join("made")).unwrap();
        for i in 0..100 {
            std::fs::write(mnt.join(format!("made/f{i}")), format!("{i}")).unwrap();
        }
        for i in (0..100).step_by(3) {
            std::fs::remove_file(mnt.join(format!("made/f{i}"))).unwrap();
        }
        // Inline extended attributes (RHEL's SELinux labels) move di_forkoff, shrinking the data
        // fork of every kind of inode.
        std::fs::create_dir(mnt.join("labelled")).unwrap();
        std::fs::write(mnt.join("labelled/file"), b"x").unwrap();
        std::os::unix::fs::symlink("file", mnt.join("labelled/link")).unwrap();
        let label = "system_u:object_r:etc_t:s0";
        for name in [
            "labelled",
            "labelled/file",
            "labelled/link",
            "sparse",
            "frag",
            "made",
            "longlink",
        ] {
            let script = format!(
                "import os; os.setxattr({:?}, 'trusted.rehost', b'{label}' * 4, follow_symlinks=False)",
                mnt.join(name).display().to_string()
            );
            let st = Command::new("python3").arg("-c").arg(script).status();
            assert!(st.is_ok_and(|s| s.success()), "setxattr {name}");
        }
    }
    let fs = open_file(&img);
    use super::inode::ForkFormat;
    let frag = fs.walk(&p("/frag")).unwrap();
    assert_eq!(frag.format, ForkFormat::Btree);
    assert!(frag.nextents >= 400, "{} extents", frag.nextents);
    let sparse = fs.read_file(b"/sparse", 32 << 20).unwrap();
    assert_eq!(sparse.len(), 20 << 20);
    assert_eq!(&sparse[..4], b"head");
    assert!(sparse[4..10 << 20].iter().all(|&b| b == 0));
    assert_eq!(sparse[10 << 20..(10 << 20) + 5000], pattern(3, 5000));
    assert!(sparse[(10 << 20) + 5000..].iter().all(|&b| b == 0));
    let pre = fs.read_file(b"/prealloc", 4 << 20).unwrap();
    assert!(pre[..1 << 20].iter().all(|&b| b == 0));
    assert_eq!(&pre[1 << 20..], b"tail");
    let map = super::bmap::ExtentMap::read(&fs.vol, &fs.walk(&p("/prealloc")).unwrap()).unwrap();
    assert!(
        map.mappings.iter().any(|m| m.unwritten),
        "fallocate made an unwritten extent"
    );
    assert_eq!(
        fs.read_link(&p("/longlink")).unwrap(),
        long_target().as_bytes()
    );
    let ll = fs.walk(&p("/longlink")).unwrap();
    assert_eq!(
        (ll.format, ll.size),
        (ForkFormat::Extents, LONG_TARGET_LEN as u64)
    );
    for name in ["/labelled", "/labelled/file", "/labelled/link", "/made"] {
        let literal = fs.superblock().inode_size() - super::inode::CORE_LEN_V3;
        assert!(
            fs.walk(&p(name)).unwrap().data_fork.len() < literal,
            "{name} has an attr fork"
        );
    }
    assert_eq!(fs.read_link(&p("/labelled/link")).unwrap(), b"file");
    let made = fs.read_dir(&p("/made")).unwrap();
    assert_eq!(made.len(), 66);
    let Some(_m) = try_mount(&img, &mnt, "ro") else {
        return;
    };
    compare_with_kernel(&fs, &mnt);
}

#[test]
fn v5_image_matches_kernel_mount() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "m.img", &[], 5000, "300m");
    let fs = open_file(&img);
    let mnt = dir.path().join("mnt");
    let Some(_m) = try_mount(&img, &mnt, "ro") else {
        return;
    };
    compare_with_kernel(&fs, &mnt);
}

#[test]
fn broken_superblock_fields_on_a_real_image() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), "s.img", &[], 10, "24m");
    let bytes = Arc::new(std::fs::read(&img).unwrap());
    let open = |patches: Vec<(u64, u8)>, size: u64, crc: bool| {
        let dev = Overlay {
            base: Arc::clone(&bytes),
            patches,
            size,
        };
        XfsFs::open_with(Arc::new(dev), XfsOptions::default().verify_crc(crc))
    };
    let full = bytes.len() as u64;
    assert!(open(vec![], full, true).is_ok());
    let corrupt_at = |r: Result<XfsFs, Error>| match r {
        Err(Error::Corrupt {
            structure, offset, ..
        }) => (structure, offset),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened"),
    };
    // Without CRC checks, each broken field is found by its own validation.
    assert_eq!(
        corrupt_at(open(vec![(0, b'Y')], full, false)),
        ("xfs superblock".into(), 0)
    );
    assert_eq!(
        corrupt_at(open(vec![(6, 0x30)], full, false)),
        ("xfs superblock".into(), 4)
    );
    assert_eq!(
        corrupt_at(open(vec![(124, 3)], full, false)),
        ("xfs superblock".into(), 124)
    );
    assert_eq!(
        corrupt_at(open(vec![(91, 0)], full, false)),
        ("xfs superblock".into(), 88)
    );
    // With them, any change is a checksum mismatch first.
    assert_eq!(
        corrupt_at(open(vec![(124, 3)], full, true)),
        ("xfs superblock".into(), 224)
    );
    // A root inode number that points at a non-inode block.
    let sb = open(vec![], full, true).unwrap().superblock().clone();
    let root_at = sb.inode_location(sb.rootino).unwrap();
    let root = format!("xfs inode {}", sb.rootino);
    assert_eq!(
        corrupt_at(open(vec![(root_at, 0)], full, false)),
        (root.clone(), root_at)
    );
    let flip = !bytes[usize::try_from(root_at).unwrap() + 200];
    assert_eq!(
        corrupt_at(open(vec![(root_at + 200, flip)], full, true)),
        (root, root_at + 100)
    );
    // A device shorter than the superblock.
    assert_eq!(
        corrupt_at(open(vec![], 100, true)),
        ("xfs superblock".into(), 0)
    );
    // A truncated device fails on the first read past the end, as a disk error.
    assert!(matches!(
        open(vec![], root_at, true),
        Err(Error::Disk(disk::Error::OutOfBounds { .. }))
    ));
}

/// Offsets of blocks that hold metadata (by magic), so mutations hit parsers, not file data.
fn metadata_blocks(img: &[u8], bs: usize) -> Vec<usize> {
    const MAGICS: [&[u8; 4]; 12] = [
        b"XFSB", b"XAGF", b"XAGI", b"XAFL", b"IAB3", b"FIB3", b"AB3B", b"AB3C", b"BMA3", b"XDB3",
        b"XDD3", b"XSLM",
    ];
    (0..img.len() / bs)
        .map(|i| i * bs)
        .filter(|&o| {
            let b = &img[o..o + bs];
            MAGICS.iter().any(|m| &b[..4] == *m)
                || &b[..2] == b"IN"
                || matches!(&b[8..10], [0x3d, 0xf1] | [0x3d, 0xff] | [0x3e, 0xbe])
        })
        .collect()
}

#[test]
fn fuzz_mutations_never_panic() {
    if !have("mkfs.xfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 120 long names need two directory blocks: the leaf form.
    let img = mkfs(dir.path(), "f.img", &[], 120, "24m");
    let bytes = Arc::new(std::fs::read(&img).unwrap());
    // The seed is valid.
    let fs = XfsFs::open(Arc::new(Overlay {
        base: Arc::clone(&bytes),
        patches: vec![],
        size: bytes.len() as u64,
    }))
    .unwrap();
    assert_eq!(fs.read_dir(&p("/huge")).unwrap().len(), 120);
    assert!(fs.walk(&p("/huge")).unwrap().size > 4096);
    let meta = metadata_blocks(&bytes, 4096);
    assert!(meta.len() > 20, "{} metadata blocks", meta.len());
    fuzzing::fuzz_dev(Arc::new(Overlay {
        base: Arc::clone(&bytes),
        patches: vec![],
        size: bytes.len() as u64,
    }));

    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..1000u64 {
        let mut patches = Vec::new();
        for _ in 0..1 + next() % 4 {
            let block = meta[usize::try_from(next() % meta.len() as u64).unwrap()] as u64;
            // Half the flips land in the first 256 bytes, where headers and inode cores live.
            let within = if next() % 2 == 0 {
                next() % 256
            } else {
                next() % 4096
            };
            patches.push((block + within, u8::try_from(next() & 0xff).unwrap()));
        }
        let size = if round % 50 == 49 {
            next() % bytes.len() as u64
        } else {
            bytes.len() as u64
        };
        fuzzing::fuzz_dev(Arc::new(Overlay {
            base: Arc::clone(&bytes),
            patches,
            size,
        }));
    }
}

#[test]
fn fuzz_entry_point_survives_junk() {
    fuzzing::fuzz_xfs(&[]);
    fuzzing::fuzz_xfs(&[0u8; 300]);
    let mut sb = super::superblock::tests::good_v5();
    fuzzing::fuzz_xfs(&sb);
    sb.resize(256 * 1024, 0);
    fuzzing::fuzz_xfs(&sb);
    fuzzing::fuzz_xfs(&pattern(1, 64 * 1024));
}
