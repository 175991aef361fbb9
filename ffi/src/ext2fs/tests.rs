//! Tests: superblock refusals and path rules on bytes; every operation against images made by
//! `mke2fs`, checked with the independent e2fsprogs tools (`e2fsck -fn`, `debugfs`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::block::BlockWrite;
use disk::open::Access;
use disk::raw::RawFile;
use disk::txn::{self, Transaction};

use super::*;

// ----- pure checks ------------------------------------------------------------------------

/// A superblock as mke2fs writes it for a clean ext4 (only the fields we read).
fn good_sb() -> [u8; SUPERBLOCK_LEN] {
    let mut sb = [0u8; SUPERBLOCK_LEN];
    sb[S_MAGIC..S_MAGIC + 2].copy_from_slice(&EXT2_SUPER_MAGIC.to_le_bytes());
    sb[S_STATE..S_STATE + 2].copy_from_slice(&EXT2_VALID_FS.to_le_bytes());
    sb[S_REV_LEVEL..S_REV_LEVEL + 4].copy_from_slice(&1u32.to_le_bytes());
    sb[S_INODE_SIZE..S_INODE_SIZE + 2].copy_from_slice(&256u16.to_le_bytes());
    sb[S_FEATURE_INCOMPAT..S_FEATURE_INCOMPAT + 4].copy_from_slice(&INCOMPAT_EXTENTS.to_le_bytes());
    sb
}

fn set32(sb: &mut [u8; SUPERBLOCK_LEN], at: usize, v: u32) {
    sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn set16(sb: &mut [u8; SUPERBLOCK_LEN], at: usize, v: u16) {
    sb[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn superblock_good_reports_features() {
    let f = check_superblock(&good_sb(), &OpenOptions::new()).expect("clean superblock");
    assert!(f.extents);
    assert_eq!(f.inode_size, 256);
    let mut rev0 = good_sb();
    set32(&mut rev0, S_REV_LEVEL, 0);
    set32(&mut rev0, S_FEATURE_INCOMPAT, 0);
    let f = check_superblock(&rev0, &OpenOptions::new()).expect("rev 0");
    assert!(!f.extents);
    assert_eq!(f.inode_size, 128);
}

#[test]
fn superblock_bad_magic() {
    let mut sb = good_sb();
    set16(&mut sb, S_MAGIC, 0x1234);
    let e = check_superblock(&sb, &OpenOptions::new()).expect_err("bad magic");
    assert!(matches!(e, Error::NotExt { found: 0x1234 }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "not an ext2/3/4 filesystem: superblock magic 0x1234 at byte 0x438, expected 0xef53"
    );
}

#[test]
fn superblock_refusals_name_their_cause_unless_forced() {
    type Breaker = fn(&mut [u8; SUPERBLOCK_LEN]);
    let cases: [(Breaker, Refusal); 5] = [
        (
            |sb| set32(sb, S_FEATURE_INCOMPAT, INCOMPAT_EXTENTS | INCOMPAT_RECOVER),
            Refusal::JournalNeedsRecovery,
        ),
        (|sb| set16(sb, S_STATE, 0), Refusal::NotCleanlyUnmounted),
        (
            |sb| set16(sb, S_STATE, EXT2_VALID_FS | EXT2_ERROR_FS),
            Refusal::ErrorsRecorded,
        ),
        (|sb| set32(sb, S_LAST_ORPHAN, 12), Refusal::OrphansPending),
        (
            |sb| set32(sb, S_FEATURE_RO_COMPAT, RO_COMPAT_ORPHAN_PRESENT),
            Refusal::OrphansPending,
        ),
    ];
    for (breakit, want) in cases {
        let mut sb = good_sb();
        breakit(&mut sb);
        match check_superblock(&sb, &OpenOptions::new()) {
            Err(Error::Refused(r)) => assert_eq!(r, want),
            other => panic!("expected refusal {want:?}, got {other:?}"),
        }
        check_superblock(&sb, &OpenOptions::new().force(true)).expect("forced");
    }
    assert_eq!(
        Error::Refused(Refusal::JournalNeedsRecovery).to_string(),
        "refusing to modify the filesystem: the ext4 journal needs recovery (replay it with \
         e2fsck or by mounting the filesystem once)"
    );
}

#[test]
fn superblock_ea_inode_is_unsupported_even_forced() {
    let mut sb = good_sb();
    set32(
        &mut sb,
        S_FEATURE_INCOMPAT,
        INCOMPAT_EXTENTS | INCOMPAT_EA_INODE,
    );
    for opts in [OpenOptions::new(), OpenOptions::new().force(true)] {
        let e = check_superblock(&sb, &opts).expect_err("ea_inode");
        assert_eq!(
            e.to_string(),
            "unsupported: ea_inode feature: libext2fs 1.47 leaves xattr inodes unaccounted and \
             leaks them"
        );
    }
}

#[test]
fn superblock_quota_is_unsupported_unless_forced() {
    let mut sb = good_sb();
    set32(&mut sb, S_FEATURE_RO_COMPAT, RO_COMPAT_QUOTA);
    let e = check_superblock(&sb, &OpenOptions::new()).expect_err("quota");
    assert_eq!(
        e.to_string(),
        "unsupported: quota feature: writes would leave quota usage stale (force to accept, \
         then run e2fsck)"
    );
    check_superblock(&sb, &OpenOptions::new().force(true)).expect("forced");
}

#[test]
fn superblock_fuzz_seed_and_mutations_never_panic() {
    let mut seeds = vec![good_sb().to_vec()];
    if have("mke2fs") {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = mkfs(dir.path(), "seed.img", &Mkfs::default());
        let bytes = std::fs::read(&img).expect("read");
        let sb = bytes[1024..2048].to_vec();
        check_superblock(
            &<[u8; SUPERBLOCK_LEN]>::try_from(sb.as_slice()).expect("1 KiB"),
            &OpenOptions::new(),
        )
        .expect("a fresh mke2fs superblock passes");
        seeds.push(sb);
    }
    let mut rng = Rng(0xF022);
    for seed in &seeds {
        fuzzing::fuzz_superblock(seed);
        for _ in 0..1000 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(m.len());
                m[at] ^= 1 << rng.below(8);
            }
            if rng.below(10) == 0 {
                m.truncate(rng.below(m.len()));
            }
            fuzzing::fuzz_superblock(&m);
        }
    }
}

#[test]
fn path_rules() {
    assert_eq!(components("/").expect("root"), Vec::<&[u8]>::new());
    assert_eq!(
        components("/a//b/").expect("ok"),
        vec![&b"a"[..], &b"b"[..]]
    );
    // ext4 names are bytes: not being UTF-8 is fine.
    assert_eq!(
        components(&b"/caf\xe9/x"[..]).expect("latin-1 name"),
        vec![&b"caf\xe9"[..], &b"x"[..]]
    );
    for bad in ["a/b", "", "/a/../b", "/./a", "/a\0b"] {
        assert!(
            matches!(components(bad), Err(Error::Usage(_))),
            "{bad:?} accepted"
        );
    }
    let long = format!("/{}", "x".repeat(256));
    assert!(matches!(components(&long), Err(Error::Usage(_))));
    assert!(components(&format!("/{}", "x".repeat(255))).is_ok());
    let huge = "/a".repeat(PATH_MAX);
    assert!(matches!(components(&huge), Err(Error::Usage(_))));
}

#[test]
fn perm_bits_rejects_type_bits() {
    assert_eq!(perm_bits(0o4755).expect("ok"), 0o4755);
    assert!(matches!(perm_bits(0o100_644), Err(Error::Usage(_))));
}

#[test]
fn time_encoding_round_trips() {
    for secs in [
        0i64,
        1,
        -1,
        1_700_000_000,
        i64::from(i32::MAX) + 1,
        1 << 33,
        -(1 << 31),
    ] {
        let t = Timestamp {
            secs,
            nanos: 123_456_789,
        };
        let (lo, x) = encode_time(t);
        assert_eq!(decode_time(lo, Some(x)), t, "secs {secs}");
    }
    let far = encode_time(Timestamp {
        secs: i64::MAX,
        nanos: 0,
    });
    assert_eq!(decode_time(far.0, Some(far.1)).secs, TIME_MAX);
    let past = encode_time(Timestamp {
        secs: i64::MIN,
        nanos: 0,
    });
    assert_eq!(decode_time(past.0, Some(past.1)).secs, TIME_MIN);
    let (lo, _) = encode_time(Timestamp {
        secs: 100,
        nanos: 5,
    });
    assert_eq!(
        decode_time(lo, None),
        Timestamp {
            secs: 100,
            nanos: 0
        }
    );
}

// ----- image helpers ----------------------------------------------------------------------

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("skipping: {tool} not found");
    }
    found
}

fn have_tools() -> bool {
    have("mke2fs") && have("e2fsck") && have("debugfs")
}

/// How to make a test image.
struct Mkfs<'a> {
    size_mib: u64,
    /// `-t` type: ext2, ext3 or ext4.
    fs_type: &'a str,
    /// Extra `-O` features, e.g. `inline_data`.
    features: Option<&'a str>,
    block_size: Option<u32>,
    no_csum: bool,
    populate: Option<&'a Path>,
}

impl Default for Mkfs<'_> {
    fn default() -> Self {
        Self {
            size_mib: 64,
            fs_type: "ext4",
            features: None,
            block_size: None,
            no_csum: false,
            populate: None,
        }
    }
}

fn mkfs(dir: &Path, name: &str, m: &Mkfs<'_>) -> PathBuf {
    let img = dir.join(name);
    let f = std::fs::File::create(&img).expect("create image");
    f.set_len(m.size_mib << 20).expect("size image");
    drop(f);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-t", m.fs_type, "-F", "-E", "root_owner=0:0"]);
    if let Some(b) = m.block_size {
        cmd.args(["-b", &b.to_string()]);
    }
    if m.no_csum {
        cmd.args(["-O", "^metadata_csum"]);
    }
    if let Some(f) = m.features {
        cmd.args(["-O", f]);
    }
    if let Some(p) = m.populate {
        cmd.arg("-d").arg(p);
    }
    cmd.arg(&img);
    let out = cmd.output().expect("run mke2fs");
    assert!(
        out.status.success(),
        "mke2fs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

fn e2fsck_clean(img: &Path) {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(img)
        .output()
        .expect("run e2fsck");
    assert!(
        out.status.success(),
        "e2fsck -fn {} exited {:?}:\n{}\n{}",
        img.display(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn debugfs(img: &Path, request: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(img)
        .output()
        .expect("run debugfs");
    assert!(out.status.success(), "debugfs {request}");
    out.stdout
}

/// `debugfs cat`, cut to the size `debugfs stat` reports: debugfs 1.47.2 reads inline-data
/// files through the same buggy path we avoid and returns the whole 60-byte inline area.
fn debugfs_cat_sized(img: &Path, path: &str) -> Vec<u8> {
    let stat = String::from_utf8(debugfs(img, &format!("stat {path}"))).expect("utf-8 stat");
    let size: usize = stat
        .split("Size: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("stat shows a size");
    let mut data = debugfs(img, &format!("cat {path}"));
    assert!(data.len() >= size, "cat returned less than the size");
    data.truncate(size);
    data
}

/// `debugfs ea_get -V PATH NAME`: the raw value (debugfs ends it with a newline of its own).
fn ea_get(img: &Path, path: &str, name: &str) -> Vec<u8> {
    let mut v = debugfs(img, &format!("ea_get -V {path} {name}"));
    assert_eq!(v.pop(), Some(b'\n'), "ea_get output ends with a newline");
    v
}

/// `debugfs ls -p DIR`: name -> mode, without `.` and `..`.
fn debugfs_ls(img: &Path, dir: &str) -> BTreeMap<String, u32> {
    let text = String::from_utf8(debugfs(img, &format!("ls -p {dir}"))).expect("utf-8 listing");
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('/')) {
        // /ino/mode/uid/gid/name/size/
        let f: Vec<&str> = line.split('/').collect();
        let (Some(ino), Some(mode), Some(name)) = (f.get(1), f.get(2), f.get(5)) else {
            panic!("odd ls line {line:?}");
        };
        // Inode 0: a deleted entry that starts its block (it cannot be merged into a
        // predecessor, so only its inode is cleared, as the kernel does too).
        if *ino == "0" || *name == "." || *name == ".." || name.is_empty() {
            continue;
        }
        out.insert(
            (*name).to_string(),
            u32::from_str_radix(mode, 8).expect("octal mode"),
        );
    }
    out
}

/// A raw image opened read-write and wrapped in a transaction journaling to `IMG.undo`.
fn open_txn(img: &Path) -> (Arc<Transaction<RawFile>>, Ext2Fs) {
    let raw = Arc::new(RawFile::open(img, Access::ReadWrite).expect("open image"));
    let undo = img.with_extension("undo");
    let t = Arc::new(Transaction::begin(raw, &undo).expect("begin transaction"));
    let dev: Arc<dyn BlockWrite> = t.clone();
    let fs = Ext2Fs::open(dev, &OpenOptions::new()).expect("open ext4");
    (t, fs)
}

fn commit(fs: Ext2Fs, t: Arc<Transaction<RawFile>>) {
    fs.close().expect("close");
    let t = Arc::try_unwrap(t).unwrap_or_else(|_| panic!("device still shared after close"));
    t.commit().expect("commit");
}

// ----- operations on real images ----------------------------------------------------------

#[test]
fn basic_operations_are_fsck_clean_and_read_back_by_debugfs() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "basic.img", &Mkfs::default());
    let (t, mut fs) = open_txn(&img);
    fs.mkdir_p("/etc/modules-load.d", &NewFile::dir(0o755))
        .expect("mkdir -p");
    fs.mkdir_p("/etc/modules-load.d", &NewFile::dir(0o700))
        .expect("mkdir -p again is fine");
    fs.write_file(
        "/etc/modules-load.d/virtio.conf",
        b"virtio_blk\nvirtio_net\n",
        &NewFile::file(0o640).owner(1000, 100),
    )
    .expect("write");
    fs.append("/etc/modules-load.d/virtio.conf", b"virtio_scsi\n")
        .expect("append");
    fs.write_file("/etc/hostname", b"guest\n", &NewFile::file(0o644))
        .expect("write hostname");
    fs.truncate("/etc/hostname", 3).expect("truncate");
    fs.symlink(
        "/etc/localtime",
        "/usr/share/zoneinfo/UTC",
        &NewFile::file(0),
    )
    .expect("symlink");
    let long_target = format!("/{}", "t".repeat(200));
    fs.symlink("/etc/longlink", &long_target, &NewFile::file(0))
        .expect("slow symlink");
    fs.write_file("/etc/gone", b"x", &NewFile::file(0o600))
        .expect("write");
    fs.unlink("/etc/gone").expect("unlink");
    fs.mkdir_p("/tmp/a/b", &NewFile::dir(0o1777))
        .expect("mkdir");
    fs.rmdir("/tmp/a/b").expect("rmdir");
    fs.rename("/etc/hostname", "/tmp/a/hostname")
        .expect("rename file");
    fs.rename("/tmp/a", "/etc/moved")
        .expect("rename dir across parents");
    fs.chmod("/etc/moved/hostname", 0o600).expect("chmod");
    fs.chown("/etc/moved/hostname", 70_000, 70_001)
        .expect("chown");
    let t0 = Timestamp {
        secs: 1_600_000_000,
        nanos: 42,
    };
    let t1 = Timestamp {
        secs: 1_700_000_000,
        nanos: 7,
    };
    fs.utimens("/etc/moved/hostname", t0, t1).expect("utimens");
    let md = fs.metadata("/etc/moved/hostname").expect("stat");
    assert_eq!(md.mode, 0o100_600);
    assert_eq!((md.uid, md.gid), (70_000, 70_001));
    assert_eq!((md.atime, md.mtime), (t0, t1));
    assert_eq!(md.size, 3);
    assert!(md.is_file());
    assert_eq!(
        fs.read_file("/etc/modules-load.d/virtio.conf", 1 << 20)
            .expect("read"),
        b"virtio_blk\nvirtio_net\nvirtio_scsi\n"
    );
    commit(fs, t);

    e2fsck_clean(&img);
    assert_eq!(
        debugfs(&img, "cat /etc/modules-load.d/virtio.conf"),
        b"virtio_blk\nvirtio_net\nvirtio_scsi\n"
    );
    assert_eq!(debugfs(&img, "cat /etc/moved/hostname"), b"gue");
    let etc = debugfs_ls(&img, "/etc");
    assert_eq!(
        etc.keys().map(String::as_str).collect::<Vec<_>>(),
        ["localtime", "longlink", "modules-load.d", "moved"]
    );
    assert_eq!(etc["localtime"], 0o120_777);
    assert_eq!(etc["moved"], 0o041_777);
    assert_eq!(debugfs_ls(&img, "/tmp"), BTreeMap::new());
    let stat = String::from_utf8_lossy(&debugfs(&img, "stat /etc/localtime")).into_owned();
    assert!(stat.contains("/usr/share/zoneinfo/UTC"), "{stat}");
    let ls = String::from_utf8_lossy(&debugfs(&img, "ls -p /etc/modules-load.d")).into_owned();
    assert!(ls.contains("/100640/1000/100/virtio.conf/"), "{ls}");
}

#[test]
fn replacing_a_file_keeps_owner_mode_and_selinux_label() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "label.img", &Mkfs::default());
    let (t, mut fs) = open_txn(&img);
    fs.mkdir_p("/etc", &NewFile::dir(0o755)).expect("mkdir");
    fs.write_file("/etc/fstab", b"old\n", &NewFile::file(0o644).owner(5, 6))
        .expect("write");
    let label = b"system_u:object_r:etc_t:s0\0";
    fs.set_xattr("/etc/fstab", "security.selinux", label)
        .expect("label");
    fs.set_xattr("/etc/fstab", "user.big", &[7u8; 600])
        .expect("xattr in a block");
    let before = fs.metadata("/etc/fstab").expect("stat");
    fs.write_file("/etc/fstab", b"new contents\n", &NewFile::file(0o600))
        .expect("replace");
    let after = fs.metadata("/etc/fstab").expect("stat");
    assert_eq!(
        (after.ino, after.mode, after.uid, after.gid),
        (before.ino, 0o100_644, 5, 6)
    );
    assert_eq!(
        fs.get_xattr("/etc/fstab", "security.selinux").expect("get"),
        Some(label.to_vec())
    );
    assert_eq!(
        fs.list_xattrs("/etc/fstab").expect("list"),
        ["security.selinux", "user.big"]
    );
    fs.remove_xattr("/etc/fstab", "user.big").expect("remove");
    fs.remove_xattr("/etc/fstab", "user.absent")
        .expect("removing an absent attribute is fine");
    assert_eq!(fs.get_xattr("/etc/fstab", "user.big").expect("get"), None);
    // A file with an xattr block is deleted cleanly (its block is released).
    fs.write_file("/etc/other", b"x", &NewFile::file(0o644))
        .expect("write");
    fs.set_xattr("/etc/other", "user.big", &[1u8; 600])
        .expect("xattr");
    fs.unlink("/etc/other").expect("unlink");
    commit(fs, t);
    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /etc/fstab"), b"new contents\n");
    assert_eq!(
        ea_get(&img, "/etc/fstab", "security.selinux"),
        label.to_vec()
    );
}

#[test]
fn errors_name_the_problem() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "err.img", &Mkfs::default());
    let (t, mut fs) = open_txn(&img);
    fs.mkdir_p("/d/sub", &NewFile::dir(0o755)).expect("mkdir");
    fs.write_file("/d/f", b"x", &NewFile::file(0o644))
        .expect("write");
    fs.symlink("/d/link", "f", &NewFile::file(0))
        .expect("symlink");
    let f = NewFile::file(0o644);
    assert!(matches!(fs.unlink("/d/sub"), Err(Error::IsADirectory { path }) if path == "/d/sub"));
    assert!(matches!(fs.rmdir("/d"), Err(Error::NotEmpty { path }) if path == "/d"));
    assert!(matches!(fs.rmdir("/d/f"), Err(Error::NotADirectory { .. })));
    assert!(matches!(
        fs.write_file("/d/link", b"y", &f),
        Err(Error::NotARegularFile { .. })
    ));
    assert!(matches!(
        fs.write_file("/d/sub", b"y", &f),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.write_file("/nope/x", b"y", &f),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.write_file("/d/f/x", b"y", &f),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.unlink("/d/missing"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        fs.symlink("/d/f", "x", &f),
        Err(Error::Exists { .. })
    ));
    assert!(matches!(fs.rename("/d", "/d/sub/x"), Err(Error::Usage(_))));
    assert!(matches!(
        fs.rename("/d/f", "/d/sub"),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.mkdir_p("/d/f/g", &f),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(fs.chmod("/d/f", 0o10_000), Err(Error::Usage(_))));
    assert!(matches!(
        fs.read_file("/d/f", 0),
        Err(Error::TooLarge {
            len: 1,
            limit: 0,
            ..
        })
    ));
    assert!(matches!(fs.write_file("/", b"", &f), Err(Error::Usage(_))));
    assert!(matches!(
        fs.set_xattr("/d/f", "user.v", &vec![0u8; XATTR_SIZE_MAX + 1]),
        Err(Error::TooLarge { .. })
    ));
    // Writing through a symlinked parent stays inside the filesystem.
    fs.symlink("/d/up", "/d/sub", &f).expect("symlink");
    fs.write_file("/d/up/via", b"z", &f)
        .expect("write via dir link");
    assert_eq!(fs.read_file("/d/sub/via", 10).expect("read"), b"z");
    commit(fs, t);
    e2fsck_clean(&img);
}

#[test]
fn dirty_filesystems_are_refused_and_left_untouched() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (request, want) in [
        ("feature needs_recovery", Refusal::JournalNeedsRecovery),
        ("ssv state 0", Refusal::NotCleanlyUnmounted),
        ("ssv state 3", Refusal::ErrorsRecorded),
    ] {
        let img = mkfs(dir.path(), "dirty.img", &Mkfs::default());
        let out = Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&img)
            .output()
            .expect("debugfs");
        assert!(out.status.success());
        let before = std::fs::read(&img).expect("read image");
        let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
        match Ext2Fs::open(raw.clone(), &OpenOptions::new()) {
            Err(Error::Refused(r)) => assert_eq!(r, want, "{request}"),
            other => panic!("{request}: expected refusal, got {other:?}"),
        }
        drop(raw);
        assert!(
            std::fs::read(&img).expect("read image") == before,
            "{request} changed the image"
        );
    }
}

#[test]
fn uncommitted_edits_roll_back_byte_for_byte() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "crash.img", &Mkfs::default());
    let original = std::fs::read(&img).expect("read image");
    {
        let (t, mut fs) = open_txn(&img);
        fs.mkdir_p("/a/b/c", &NewFile::dir(0o755)).expect("mkdir");
        fs.write_file("/a/b/c/f", &vec![9u8; 300_000], &NewFile::file(0o644))
            .expect("write");
        fs.set_xattr("/a/b/c/f", "security.selinux", b"x\0")
            .expect("xattr");
        fs.close().expect("close");
        // The process "dies" here: the transaction is never committed.
        drop(t);
    }
    assert!(
        std::fs::read(&img).expect("read") != original,
        "nothing was written"
    );
    let raw = RawFile::open(&img, Access::ReadWrite).expect("open");
    let r = txn::recover(&raw, &img.with_extension("undo")).expect("recover");
    assert!(matches!(r, txn::Recovery::RolledBack { .. }), "{r:?}");
    assert!(
        std::fs::read(&img).expect("read") == original,
        "image differs after recovery"
    );
}

#[test]
fn htree_directory_with_thousands_of_entries() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    let big = src.join("big");
    std::fs::create_dir_all(&big).expect("mkdir");
    for i in 0..3000 {
        std::fs::write(big.join(format!("entry-{i:05}")), b"").expect("populate");
    }
    for (name, block_size) in [("htree4k.img", Some(4096)), ("htree1k.img", Some(1024))] {
        let img = mkfs(
            dir.path(),
            name,
            &Mkfs {
                block_size,
                populate: Some(&src),
                ..Mkfs::default()
            },
        );
        // mke2fs -d writes linear directories; e2fsck -D indexes them (exit 1: changed).
        let out = Command::new("e2fsck")
            .args(["-fyD"])
            .arg(&img)
            .output()
            .expect("run e2fsck -D");
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "e2fsck -fyD failed"
        );
        e2fsck_clean(&img);
        let stat = String::from_utf8_lossy(&debugfs(&img, "stat /big")).into_owned();
        assert!(
            stat.contains("Flags: 0x81000") || stat.contains("Flags: 0x1000"),
            "{stat}"
        );
        let (t, mut fs) = open_txn(&img);
        for i in 0..1500 {
            fs.write_file(
                &format!("/big/new-name-with-some-length-{i:05}"),
                format!("{i}").as_bytes(),
                &NewFile::file(0o644),
            )
            .expect("create in htree dir");
        }
        for i in (0..3000).step_by(3) {
            fs.unlink(&format!("/big/entry-{i:05}")).expect("unlink");
        }
        fs.rename("/big/entry-00001", "/big/renamed")
            .expect("rename");
        commit(fs, t);
        e2fsck_clean(&img);
        let ls = debugfs_ls(&img, "/big");
        let mut want: Vec<String> = (0..3000)
            .filter(|i| i % 3 != 0 && *i != 1)
            .map(|i| format!("entry-{i:05}"))
            .chain((0..1500).map(|i| format!("new-name-with-some-length-{i:05}")))
            .collect();
        want.push("renamed".into());
        want.sort();
        let got: Vec<String> = ls.keys().cloned().collect();
        let extra: Vec<&String> = got.iter().filter(|g| !want.contains(g)).collect();
        let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "extra {extra:?} missing {missing:?}"
        );
        assert!(ls.contains_key("renamed") && !ls.contains_key("entry-00001"));
        assert!(!ls.contains_key("entry-00003"));
        assert_eq!(
            debugfs(&img, "cat /big/new-name-with-some-length-01234"),
            b"1234"
        );
    }
}

// ----- random operations against a model --------------------------------------------------

/// A fixed-seed xorshift64* generator: deterministic runs without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap_or(0)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[3]).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    File(Vec<u8>, BTreeMap<String, Vec<u8>>),
    Dir,
    Link(String),
}

/// The expected tree under `/t`, keyed by absolute path.
struct Model {
    nodes: BTreeMap<String, Node>,
}

impl Model {
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = format!("{dir}/");
        self.nodes
            .keys()
            .filter(|k| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .cloned()
            .collect()
    }
    fn paths(&self, pred: impl Fn(&Node) -> bool) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| pred(n))
            .map(|(k, _)| k.clone())
            .collect()
    }
    fn dirs(&self) -> Vec<String> {
        let mut d = self.paths(|n| *n == Node::Dir);
        d.push("/t".into());
        d
    }
    /// Moves `from` (and everything below it) to `to`.
    fn rename(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == from || k.starts_with(&format!("{from}/")))
            .cloned()
            .collect();
        for k in moved {
            let n = self.nodes.remove(&k).expect("listed key");
            self.nodes.insert(format!("{to}{}", &k[from.len()..]), n);
        }
    }
}

fn pick<'a>(rng: &mut Rng, v: &'a [String]) -> Option<&'a String> {
    if v.is_empty() {
        None
    } else {
        v.get(rng.below(v.len()))
    }
}

fn random_run(img: &Path, seed: u64, ops: usize) {
    let mut rng = Rng(seed);
    let mut model = Model {
        nodes: BTreeMap::new(),
    };
    let (t, mut fs) = open_txn(img);
    fs.mkdir_p("/t", &NewFile::dir(0o755)).expect("mkdir /t");
    let attrs = NewFile::file(0o644);
    let mut big_done = false;
    let mut done = 0usize;
    let mut step = 0usize;
    // `ops` operations actually performed (draws that do not apply to the tree are skipped).
    while done < ops {
        step += 1;
        assert!(step < ops * 20, "too many skipped draws");
        let dirs = model.dirs();
        let files = model.paths(|n| matches!(n, Node::File(..)));
        let fresh = format!(
            "{}/n{}",
            pick(&mut rng, &dirs).expect("/t is always there"),
            rng.below(60)
        );
        let free = !model.nodes.contains_key(&fresh);
        let op = rng.below(12);
        let what = format!("step {step} op {op}");
        match op {
            0 | 1 => {
                // create or overwrite
                let len = match rng.below(10) {
                    0 => 0,
                    1..=5 => rng.below(5000),
                    6..=8 => rng.below(200_000),
                    _ if !big_done => {
                        big_done = true;
                        10 * 1024 * 1024 + 12_345
                    }
                    _ => rng.below(1_000_000),
                };
                let target = if free || rng.below(2) == 0 {
                    fresh.clone()
                } else {
                    pick(&mut rng, &files).cloned().unwrap_or(fresh.clone())
                };
                if !matches!(model.nodes.get(&target), None | Some(Node::File(..))) {
                    continue;
                }
                let data = rng.bytes(len);
                fs.write_file(&target, &data, &attrs).expect(&what);
                let x = match model.nodes.remove(&target) {
                    Some(Node::File(_, x)) => x,
                    _ => BTreeMap::new(),
                };
                model.nodes.insert(target, Node::File(data, x));
            }
            2 => {
                let Some(p) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                let n = rng.below(20_000);
                let more = rng.bytes(n);
                fs.append(&p, &more).expect(&what);
                if let Some(Node::File(d, _)) = model.nodes.get_mut(&p) {
                    d.extend_from_slice(&more);
                }
            }
            3 => {
                let Some(p) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                let len = rng.below(300_000);
                fs.truncate(&p, len as u64).expect(&what);
                if let Some(Node::File(d, _)) = model.nodes.get_mut(&p) {
                    d.resize(len, 0);
                }
            }
            4 | 5 => {
                if !free {
                    continue;
                }
                fs.mkdir_p(&fresh, &NewFile::dir(0o755)).expect(&what);
                model.nodes.insert(fresh, Node::Dir);
            }
            6 => {
                if !free {
                    continue;
                }
                let target = if rng.below(3) == 0 {
                    let n = 100 + rng.below(300);
                    format!("/{}", "L".repeat(n))
                } else {
                    format!("target-{}", rng.below(1000))
                };
                fs.symlink(&fresh, &target, &attrs).expect(&what);
                model.nodes.insert(fresh, Node::Link(target));
            }
            7 => {
                let all = model.paths(|n| !matches!(n, Node::Dir));
                let Some(p) = pick(&mut rng, &all).cloned() else {
                    continue;
                };
                fs.unlink(&p).expect(&what);
                model.nodes.remove(&p);
            }
            8 => {
                let empty: Vec<String> = model
                    .paths(|n| *n == Node::Dir)
                    .into_iter()
                    .filter(|d| model.children(d).is_empty())
                    .collect();
                let Some(p) = pick(&mut rng, &empty).cloned() else {
                    continue;
                };
                fs.rmdir(&p).expect(&what);
                model.nodes.remove(&p);
            }
            9 => {
                // rename anything to a free name (a directory only outside its own subtree), or
                // a file over another file
                let all: Vec<String> = model.nodes.keys().cloned().collect();
                let Some(src) = pick(&mut rng, &all).cloned() else {
                    continue;
                };
                let dst = if rng.below(3) == 0 {
                    match pick(&mut rng, &files) {
                        Some(f) => f.clone(),
                        None => continue,
                    }
                } else {
                    fresh.clone()
                };
                let src_is_dir = model.nodes.get(&src) == Some(&Node::Dir);
                if src == dst
                    || dst.starts_with(&format!("{src}/"))
                    || (model.nodes.contains_key(&dst) && src_is_dir)
                {
                    continue;
                }
                if model.nodes.get(&dst) == Some(&Node::Dir) {
                    // A non-directory cannot replace a directory (rename(2): EISDIR).
                    let e = fs.rename(&src, &dst).expect_err(&what);
                    assert!(matches!(e, Error::IsADirectory { .. }), "{what}: {e:?}");
                    continue;
                }
                fs.rename(&src, &dst).expect(&what);
                model.nodes.remove(&dst);
                model.rename(&src, &dst);
            }
            10 => {
                let Some(p) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                let k = rng.below(4);
                let name = format!("user.k{k}");
                // Only k0 may be large, so all four always fit one 1 KiB xattr block.
                let n = rng.below(if k == 0 { 500 } else { 60 });
                let value = rng.bytes(n);
                fs.set_xattr(&p, &name, &value).expect(&what);
                if let Some(Node::File(_, x)) = model.nodes.get_mut(&p) {
                    x.insert(name, value);
                }
            }
            _ => {
                let Some(p) = pick(&mut rng, &files).cloned() else {
                    continue;
                };
                let name = format!("user.k{}", rng.below(4));
                fs.remove_xattr(&p, &name).expect(&what);
                if let Some(Node::File(_, x)) = model.nodes.get_mut(&p) {
                    x.remove(&name);
                }
            }
        }
        done += 1;
    }
    if !big_done {
        let data = rng.bytes(10 * 1024 * 1024 + 999);
        fs.write_file("/t/big", &data, &attrs).expect("big file");
        model
            .nodes
            .insert("/t/big".into(), Node::File(data, BTreeMap::new()));
    }
    // Our own view first (cheap), then the independent tools.
    for (p, n) in &model.nodes {
        if let Node::File(d, x) = n {
            assert!(
                fs.read_file(p, 1 << 30).expect("read") == *d,
                "{p} differs (own read)"
            );
            let names: Vec<String> = x.keys().cloned().collect();
            assert_eq!(fs.list_xattrs(p).expect("list"), names, "{p} xattrs");
        }
    }
    commit(fs, t);
    e2fsck_clean(img);

    let out = img.with_extension("dump");
    std::fs::create_dir_all(&out).expect("dump dir");
    debugfs(img, &format!("rdump /t {}", out.display()));
    let root = out.join("t");
    let mut on_disk = BTreeMap::new();
    walk(&root, "/t", &mut on_disk);
    let expected: BTreeMap<String, Node> = model
        .nodes
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Node::File(d, _) => Node::File(d.clone(), BTreeMap::new()),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    assert_eq!(
        on_disk.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "tree differs"
    );
    for (k, v) in &expected {
        assert!(on_disk.get(k) == Some(v), "{k} differs in debugfs rdump");
    }
    for d in model.dirs() {
        let ls = debugfs_ls(img, &d);
        let want: Vec<String> = model
            .children(&d)
            .iter()
            .map(|c| c.rsplit('/').next().unwrap_or_default().to_string())
            .collect();
        assert_eq!(ls.keys().cloned().collect::<Vec<_>>(), want, "ls -p {d}");
    }
    // xattrs through debugfs for a few files.
    for (p, n) in model.nodes.iter().take(40) {
        if let Node::File(_, x) = n {
            for (name, value) in x {
                assert_eq!(ea_get(img, p, name), *value, "{p} {name}");
            }
        }
    }
}

fn walk(dir: &Path, guest: &str, out: &mut BTreeMap<String, Node>) {
    for e in std::fs::read_dir(dir).expect("read dump dir") {
        let e = e.expect("entry");
        let name = e.file_name().into_string().expect("utf-8 name");
        let g = format!("{guest}/{name}");
        let ft = e.file_type().expect("type");
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).expect("readlink");
            out.insert(g, Node::Link(t.to_string_lossy().into_owned()));
        } else if ft.is_dir() {
            out.insert(g.clone(), Node::Dir);
            walk(&e.path(), &g, out);
        } else {
            out.insert(
                g,
                Node::File(std::fs::read(e.path()).expect("read"), BTreeMap::new()),
            );
        }
    }
}

fn random_on(name: &str, m: &Mkfs<'_>, seed: u64) {
    let m = &Mkfs {
        size_mib: 128,
        fs_type: m.fs_type,
        features: m.features,
        block_size: m.block_size,
        no_csum: m.no_csum,
        populate: m.populate,
    };
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), name, m);
    random_run(&img, seed, 220);
}

#[test]
fn random_ops_4k_metadata_csum() {
    random_on(
        "r4k.img",
        &Mkfs {
            block_size: Some(4096),
            ..Mkfs::default()
        },
        0x5EED_0001,
    );
}

#[test]
fn random_ops_4k_no_metadata_csum() {
    random_on(
        "r4kn.img",
        &Mkfs {
            block_size: Some(4096),
            no_csum: true,
            ..Mkfs::default()
        },
        0x5EED_0002,
    );
}

#[test]
fn random_ops_1k_metadata_csum() {
    random_on(
        "r1k.img",
        &Mkfs {
            block_size: Some(1024),
            ..Mkfs::default()
        },
        0x5EED_0003,
    );
}

#[test]
fn random_ops_1k_no_metadata_csum() {
    random_on(
        "r1kn.img",
        &Mkfs {
            block_size: Some(1024),
            no_csum: true,
            ..Mkfs::default()
        },
        0x5EED_0004,
    );
}

// ----- device failures ----------------------------------------------------------------------

/// How [`Flaky`] misbehaves once armed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    WriteError,
    WritePanic,
}

/// A memory disk whose writes fail or panic once armed.
struct Flaky {
    inner: disk::mem::MemDisk,
    fault: std::sync::Mutex<Fault>,
}

impl disk::block::BlockRead for Flaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
}

impl BlockWrite for Flaky {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> disk::Result<()> {
        let fault = *self.fault.lock().expect("lock");
        match fault {
            Fault::None => self.inner.write_all_at(offset, buf),
            Fault::WriteError => Err(disk::Error::io(
                offset,
                std::io::Error::other("injected write fault"),
            )),
            Fault::WritePanic => panic!("injected panic in write_all_at"),
        }
    }
    fn flush(&self) -> disk::Result<()> {
        Ok(())
    }
}

fn flaky_image() -> Option<Arc<Flaky>> {
    if !have_tools() {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(
        dir.path(),
        "flaky.img",
        &Mkfs {
            size_mib: 16,
            ..Mkfs::default()
        },
    );
    let bytes = std::fs::read(&img).expect("read image");
    Some(Arc::new(Flaky {
        inner: disk::mem::MemDisk::from_vec(bytes),
        fault: std::sync::Mutex::new(Fault::None),
    }))
}

#[test]
fn device_write_errors_surface_with_their_source() {
    let Some(dev) = flaky_image() else { return };
    let mut fs = Ext2Fs::open(dev.clone(), &OpenOptions::new()).expect("open");
    *dev.fault.lock().expect("lock") = Fault::WriteError;
    let e = fs
        .write_file("/f", &[1u8; 100_000], &NewFile::file(0o644))
        .expect_err("writes fail");
    match &e {
        Error::Device { op, source } => {
            assert!(op.ends_with("/f") || !op.is_empty(), "{op}");
            assert!(source.to_string().contains("i/o"), "{source}");
        }
        other => panic!("expected a device error, got {other:?}"),
    }
    *dev.fault.lock().expect("lock") = Fault::None;
    fs.close().expect("close once the device works again");
}

#[test]
fn a_panicking_device_does_not_unwind_into_c() {
    let Some(dev) = flaky_image() else { return };
    let mut fs = Ext2Fs::open(dev.clone(), &OpenOptions::new()).expect("open");
    *dev.fault.lock().expect("lock") = Fault::WritePanic;
    let e = fs
        .write_file("/f", b"data", &NewFile::file(0o644))
        .expect_err("writes fail");
    assert!(
        matches!(e, Error::Ext2 { code, .. } if code == i64::from(libc::EIO)),
        "{e:?}"
    );
    *dev.fault.lock().expect("lock") = Fault::None;
    drop(fs);
}

#[test]
fn not_ext_and_short_devices_are_reported() {
    let zero: Arc<dyn BlockWrite> = Arc::new(disk::mem::MemDisk::zeroed(1 << 20).expect("memdisk"));
    assert!(matches!(
        Ext2Fs::open(zero, &OpenOptions::new()),
        Err(Error::NotExt { found: 0 })
    ));
    let tiny: Arc<dyn BlockWrite> = Arc::new(disk::mem::MemDisk::zeroed(512).expect("memdisk"));
    assert!(matches!(
        Ext2Fs::open(tiny, &OpenOptions::new()),
        Err(Error::Device { .. })
    ));
}

#[test]
fn random_ops_4k_inline_data() {
    random_on(
        "r4ki.img",
        &Mkfs {
            block_size: Some(4096),
            features: Some("inline_data"),
            ..Mkfs::default()
        },
        0x5EED_0005,
    );
}

#[test]
fn unsupported_features_and_encrypted_inodes_are_refused() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Unknown incompat and ro_compat bits: libext2fs refuses to write (no checksum to fix up
    // without metadata_csum, so the patched superblock is otherwise valid).
    for (field, bit) in [
        (S_FEATURE_INCOMPAT, 0x8000_0000u32),
        (S_FEATURE_RO_COMPAT, 0x8000_0000),
    ] {
        let img = mkfs(
            dir.path(),
            "feat.img",
            &Mkfs {
                no_csum: true,
                ..Mkfs::default()
            },
        );
        let mut bytes = std::fs::read(&img).expect("read");
        let at = usize::try_from(SUPERBLOCK_OFFSET).expect("small") + field;
        let old = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        bytes[at..at + 4].copy_from_slice(&(old | bit).to_le_bytes());
        std::fs::write(&img, &bytes).expect("write");
        let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
        match Ext2Fs::open(raw, &OpenOptions::new()) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("unsupported"), "{msg}"),
            other => panic!("field {field:#x}: expected unsupported, got {other:?}"),
        }
        assert!(
            std::fs::read(&img).expect("read") == bytes,
            "refusal changed the image"
        );
    }

    let img = mkfs(dir.path(), "enc.img", &Mkfs::default());
    {
        let (t, mut fs) = open_txn(&img);
        fs.mkdir_p("/secret", &NewFile::dir(0o700)).expect("mkdir");
        fs.write_file("/file", b"x", &NewFile::file(0o644))
            .expect("write");
        commit(fs, t);
    }
    for req in [
        "set_inode_field /secret flags 0x80800",
        "set_inode_field /file flags 0x80800",
    ] {
        let out = Command::new("debugfs")
            .args(["-w", "-R", req])
            .arg(&img)
            .output()
            .expect("debugfs");
        assert!(out.status.success(), "{req}");
    }
    let (_t, mut fs) = open_txn(&img);
    let f = NewFile::file(0o644);
    assert!(matches!(
        fs.write_file("/secret/x", b"y", &f),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        fs.mkdir_p("/secret/d", &f),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        fs.symlink("/secret/l", "t", &f),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        fs.write_file("/file", b"y", &f),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        fs.append("/file", b"y"),
        Err(Error::Unsupported(_))
    ));
    // The refused calls left nothing behind: no entry, no leaked inode.
    assert!(matches!(
        fs.metadata("/secret/d"),
        Err(Error::NotFound { .. })
    ));
    fs.close().expect("close");
}

#[test]
fn subdirectory_link_counts_follow_dir_nlink() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "nlink.img", &Mkfs::default());
    let (t, mut fs) = open_txn(&img);
    fs.mkdir_p("/p/a", &NewFile::dir(0o755)).expect("mkdir");
    fs.mkdir_p("/p/b", &NewFile::dir(0o755)).expect("mkdir");
    fs.mkdir_p("/q", &NewFile::dir(0o755)).expect("mkdir");
    assert_eq!(fs.metadata("/p").expect("stat").links, 4);
    fs.rename("/p/a", "/q/a").expect("move");
    assert_eq!(fs.metadata("/p").expect("stat").links, 3);
    assert_eq!(fs.metadata("/q").expect("stat").links, 3);
    fs.rmdir("/p/b").expect("rmdir");
    assert_eq!(fs.metadata("/p").expect("stat").links, 2);
    commit(fs, t);
    e2fsck_clean(&img);
}

#[test]
fn inline_data_files_and_directories_made_by_mke2fs() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("small")).expect("mkdir");
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(src.join("small").join(name), format!("inline {name}\n")).expect("write");
    }
    std::fs::write(src.join("small").join("empty"), b"").expect("write");
    // 100 bytes: past i_block's 60, so the rest lives in the system.data xattr.
    std::fs::write(src.join("small").join("long"), [b'L'; 100]).expect("write");
    let img = mkfs(
        dir.path(),
        "inline.img",
        &Mkfs {
            block_size: Some(4096),
            features: Some("inline_data"),
            populate: Some(&src),
            ..Mkfs::default()
        },
    );
    let stat = String::from_utf8_lossy(&debugfs(&img, "stat /small/a")).into_owned();
    assert!(stat.contains("Size of inline data"), "{stat}");
    let (t, mut fs) = open_txn(&img);
    assert_eq!(
        fs.read_file("/small/e", 100).expect("read inline"),
        b"inline e\n"
    );
    assert_eq!(
        fs.read_file("/small/long", 100).expect("read inline"),
        [b'L'; 100]
    );
    assert!(matches!(
        fs.read_file("/small/long", 99),
        Err(Error::TooLarge { len: 100, .. })
    ));
    fs.append("/small/empty", b"was empty")
        .expect("append to an empty inline file");
    fs.append("/small/long", b"!")
        .expect("append past the xattr part");
    let big: Vec<u8> = (0..20_000u32).map(|i| i.to_le_bytes()[0]).collect();
    fs.write_file("/small/a", &big, &NewFile::file(0o644))
        .expect("grow an inline file into blocks");
    fs.append("/small/b", b"more\n").expect("append inline");
    fs.truncate("/small/c", 3).expect("truncate inline");
    fs.unlink("/small/d").expect("unlink inline");
    for i in 0..40 {
        fs.write_file(&format!("/small/new-{i}"), b"n", &NewFile::file(0o644))
            .expect("fill the inline directory until it moves to a block");
    }
    fs.mkdir_p("/other", &NewFile::dir(0o755)).expect("mkdir");
    fs.rename("/small", "/other/small")
        .expect("move an inline directory");
    commit(fs, t);
    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /other/small/a"), big);
    assert_eq!(
        debugfs_cat_sized(&img, "/other/small/b"),
        b"inline b\nmore\n"
    );
    assert_eq!(debugfs_cat_sized(&img, "/other/small/c"), b"inl");
    assert_eq!(debugfs_cat_sized(&img, "/other/small/e"), b"inline e\n");
    assert_eq!(debugfs_cat_sized(&img, "/other/small/empty"), b"was empty");
    let mut long = vec![b'L'; 100];
    long.push(b'!');
    assert_eq!(debugfs_cat_sized(&img, "/other/small/long"), long);
    let ls = debugfs_ls(&img, "/other/small");
    assert_eq!(ls.len(), 6 + 40);
    assert!(!ls.contains_key("d"));
}

// ----- crash points and other block backends ----------------------------------------------------

/// Stands for a process that dies after `budget` writes: later writes never reach the device.
struct DiesAfter {
    inner: Arc<Transaction<RawFile>>,
    budget: std::sync::atomic::AtomicI64,
}

impl disk::block::BlockRead for DiesAfter {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> disk::Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
}

impl BlockWrite for DiesAfter {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> disk::Result<()> {
        if self
            .budget
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            <= 0
        {
            return Err(disk::Error::io(
                offset,
                std::io::Error::other("process died"),
            ));
        }
        self.inner.write_all_at(offset, buf)
    }
    fn flush(&self) -> disk::Result<()> {
        self.inner.flush()
    }
}

/// A multi-file edit; stops at the first error (the "death").
fn edit(fs: &mut Ext2Fs) -> Result<()> {
    fs.mkdir_p("/etc/sysconfig/network-scripts", &NewFile::dir(0o755))?;
    fs.write_file(
        "/etc/sysconfig/network-scripts/ifcfg-eth0",
        b"DEVICE=eth0\nBOOTPROTO=dhcp\n",
        &NewFile::file(0o644),
    )?;
    fs.write_file(
        "/etc/dracut.conf.d/virtio.conf",
        b"x",
        &NewFile::file(0o644),
    )
    .or_else(|e| match e {
        Error::NotFound { .. } => Ok(()),
        e => Err(e),
    })?;
    fs.write_file("/etc/big", &vec![0x5A; 300_000], &NewFile::file(0o600))?;
    fs.set_xattr(
        "/etc/big",
        "security.selinux",
        b"system_u:object_r:etc_t:s0\0",
    )?;
    fs.symlink("/etc/link", "big", &NewFile::file(0))?;
    fs.rename("/etc/big", "/etc/big2")?;
    fs.unlink("/etc/link")?;
    Ok(())
}

#[test]
fn dying_at_any_write_rolls_back_or_completes() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pristine_img = mkfs(
        dir.path(),
        "pristine.img",
        &Mkfs {
            size_mib: 16,
            ..Mkfs::default()
        },
    );
    let pristine = std::fs::read(&pristine_img).expect("read");
    let img = dir.path().join("work.img");
    let undo = dir.path().join("work.undo");
    let mut rng = Rng(0xC0FFEE);
    let mut completed = 0;
    let mut rolled_back = 0;
    for round in 0..40 {
        std::fs::write(&img, &pristine).expect("reset image");
        let _ = std::fs::remove_file(&undo);
        // Write budgets from 0 up to about the whole edit, and one that completes.
        let budget = match round {
            0 => 0,
            1 => 1_000_000,
            _ => rng.below(1500),
        };
        let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
        let t = Arc::new(Transaction::begin(raw, &undo).expect("begin"));
        let dev = Arc::new(DiesAfter {
            inner: t.clone(),
            budget: std::sync::atomic::AtomicI64::new(i64::try_from(budget).expect("small")),
        });
        let result = Ext2Fs::open(dev.clone(), &OpenOptions::new()).and_then(|mut fs| {
            edit(&mut fs)?;
            fs.close()
        });
        drop(dev);
        match result {
            Ok(()) => {
                let t = Arc::try_unwrap(t).unwrap_or_else(|_| panic!("still shared"));
                t.commit().expect("commit");
                completed += 1;
                e2fsck_clean(&img);
                assert_eq!(debugfs(&img, "cat /etc/big2").len(), 300_000);
            }
            Err(_) => {
                // The process is gone: nothing commits. The next run recovers.
                drop(t);
                let raw = RawFile::open(&img, Access::ReadWrite).expect("open");
                let r = txn::recover(&raw, &undo).expect("recover");
                assert!(
                    matches!(r, txn::Recovery::RolledBack { .. }),
                    "budget {budget}: {r:?}"
                );
                assert!(
                    std::fs::read(&img).expect("read") == pristine,
                    "budget {budget}: image differs after recovery"
                );
                rolled_back += 1;
            }
        }
    }
    assert!(rolled_back > 20, "only {rolled_back} runs died part-way");
    assert!(completed > 0, "no run completed");
}

#[test]
fn writes_through_a_qcow2_image() {
    if !have_tools() || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let raw_img = mkfs(dir.path(), "base.img", &Mkfs::default());
    let qcow = dir.path().join("disk.qcow2");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw_img)
        .arg(&qcow)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    {
        let opened = disk::open::open(
            qcow.to_str().expect("utf-8 path"),
            &disk::open::OpenOptions::new()
                .format(disk::detect::ImageFormat::Qcow2)
                .access(Access::ReadWrite),
        )
        .expect("open qcow2");
        let dev = opened.write().expect("writable");
        let mut fs = Ext2Fs::open(dev, &OpenOptions::new()).expect("open ext4 in qcow2");
        fs.mkdir_p("/etc/modprobe.d", &NewFile::dir(0o755))
            .expect("mkdir");
        let data: Vec<u8> = (0..2_000_000u32).map(|i| i.to_le_bytes()[1]).collect();
        fs.write_file("/etc/modprobe.d/blob", &data, &NewFile::file(0o644))
            .expect("write");
        fs.close().expect("close");
        drop(opened);
    }
    let back = dir.path().join("back.img");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&qcow)
        .arg(&back)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    e2fsck_clean(&back);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| i.to_le_bytes()[1]).collect();
    assert!(
        debugfs(&back, "cat /etc/modprobe.d/blob") == data,
        "contents differ"
    );
}

#[test]
fn quota_filesystems_need_force_and_then_need_e2fsck() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(
        dir.path(),
        "quota.img",
        &Mkfs {
            features: Some("quota"),
            ..Mkfs::default()
        },
    );
    let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
    match Ext2Fs::open(raw.clone(), &OpenOptions::new()) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("quota"), "{msg}"),
        other => panic!("expected unsupported, got {other:?}"),
    }
    let mut fs = Ext2Fs::open(raw, &OpenOptions::new().force(true)).expect("forced open");
    fs.write_file(
        "/f",
        &[1u8; 50_000],
        &NewFile::file(0o644).owner(1000, 1000),
    )
    .expect("write");
    fs.close().expect("close");
    // Only the quota usage is stale, which e2fsck -p repairs at the next boot.
    let out = Command::new("e2fsck")
        .args(["-fp"])
        .arg(&img)
        .output()
        .expect("e2fsck");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "e2fsck -fp could not repair"
    );
    e2fsck_clean(&img);
    assert_eq!(debugfs(&img, "cat /f"), vec![1u8; 50_000]);
}

#[test]
fn ea_inode_filesystems_are_unsupported() {
    // libext2fs 1.47.2 neither charges xattr inodes to their owner's i_blocks nor frees them
    // with the owner (e2fsck -fn then fails), so such filesystems are refused outright.
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(
        dir.path(),
        "eainode.img",
        &Mkfs {
            block_size: Some(4096),
            features: Some("ea_inode"),
            ..Mkfs::default()
        },
    );
    let before = std::fs::read(&img).expect("read");
    let raw = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
    for opts in [OpenOptions::new(), OpenOptions::new().force(true)] {
        match Ext2Fs::open(raw.clone(), &opts) {
            Err(Error::Unsupported(msg)) => assert!(msg.contains("ea_inode"), "{msg}"),
            other => panic!("expected unsupported, got {other:?}"),
        }
    }
    assert!(
        std::fs::read(&img).expect("read") == before,
        "refusal changed the image"
    );
}

#[test]
fn random_ops_ext3_block_mapped() {
    random_on(
        "r3.img",
        &Mkfs {
            fs_type: "ext3",
            block_size: Some(4096),
            ..Mkfs::default()
        },
        0x5EED_0006,
    );
}

#[test]
fn random_ops_ext2_1k() {
    random_on(
        "r2.img",
        &Mkfs {
            fs_type: "ext2",
            block_size: Some(1024),
            ..Mkfs::default()
        },
        0x5EED_0007,
    );
}

#[test]
fn random_ops_4k_bigalloc() {
    random_on(
        "rb.img",
        &Mkfs {
            block_size: Some(4096),
            features: Some("bigalloc"),
            ..Mkfs::default()
        },
        0x5EED_0008,
    );
}

// ----- listing, links, byte ranges, mkdir, flush (ops.rs) ---------------------------------

/// Everything `read_dir` reports for `dir`, as name -> kind, sorted.
fn listing(fs: &Ext2Fs, dir: &str) -> BTreeMap<String, FileKind> {
    fs.read_dir(dir)
        .expect("read_dir")
        .into_iter()
        .map(|e| (String::from_utf8(e.name).expect("utf-8 name"), e.kind))
        .collect()
}

fn ops_on(m: &Mkfs<'_>, name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), name, m);
    let (t, mut fs) = open_txn(&img);
    fs.mkdir("/d", &NewFile::dir(0o750).owner(5, 6))
        .expect("mkdir");
    assert!(matches!(
        fs.mkdir("/d", &NewFile::dir(0o750)),
        Err(Error::Exists { path }) if path == "/d"
    ));
    assert!(matches!(
        fs.mkdir("/missing/x", &NewFile::dir(0o750)),
        Err(Error::NotFound { .. })
    ));
    fs.write_file("/d/f", b"hello", &NewFile::file(0o644))
        .expect("write");
    // A gap: bytes 5..10 read as zeros.
    fs.write_at("/d/f", 10, b"world")
        .expect("write past the end");
    fs.write_at("/d/f", 1, b"EL").expect("overwrite inside");
    fs.write_at("/d/f", 1000, b"").expect("empty write");
    let mut buf = [0xAAu8; 32];
    let n = fs.read_at("/d/f", 0, &mut buf).expect("read_at");
    assert_eq!(&buf[..n], b"hELlo\0\0\0\0\0world");
    let n = fs.read_at("/d/f", 12, &mut buf[..2]).expect("partial read");
    assert_eq!(&buf[..n], b"rl");
    assert_eq!(fs.read_at("/d/f", 15, &mut buf).expect("at end"), 0);
    assert_eq!(fs.read_at("/d/f", 99, &mut buf).expect("past end"), 0);
    // A multi-block write at an unaligned offset, then a read across block boundaries.
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    fs.write_at("/d/big", 0, b"x")
        .expect_err("write_at needs an existing file");
    fs.write_file("/d/big", b"", &NewFile::file(0o600))
        .expect("create");
    fs.write_at("/d/big", 4095, &big).expect("big write_at");
    let mut back = vec![0u8; 70_000];
    assert_eq!(fs.read_at("/d/big", 4095, &mut back).expect("read"), 70_000);
    assert!(back == big, "big write_at reads back");
    fs.symlink("/d/short", "f", &NewFile::file(0))
        .expect("fast symlink");
    let long = format!("/{}", "t".repeat(300));
    fs.symlink("/d/long", &long, &NewFile::file(0))
        .expect("slow symlink");
    assert_eq!(fs.read_link("/d/short").expect("readlink"), b"f");
    assert_eq!(fs.read_link("/d/long").expect("readlink"), long.as_bytes());
    assert!(matches!(fs.read_link("/d/f"), Err(Error::Usage(_))));
    assert!(matches!(
        fs.read_dir("/d/f"),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.read_at("/d", 0, &mut buf),
        Err(Error::IsADirectory { .. })
    ));
    assert_eq!(
        listing(&fs, "/d"),
        BTreeMap::from([
            ("big".to_string(), FileKind::Regular),
            ("f".to_string(), FileKind::Regular),
            ("long".to_string(), FileKind::Symlink),
            ("short".to_string(), FileKind::Symlink),
        ])
    );
    let md = fs.metadata("/d").expect("stat");
    assert_eq!(
        (md.kind(), md.mode & 0o7777, md.uid, md.gid),
        (FileKind::Directory, 0o750, 5, 6)
    );
    // After flush the image is consistent while the filesystem stays open.
    fs.flush().expect("flush");
    let snapshot = dir.path().join("snapshot.img");
    std::fs::copy(&img, &snapshot).expect("copy");
    e2fsck_clean(&snapshot);
    fs.unlink("/d/big").expect("still usable after flush");
    commit(fs, t);
    e2fsck_clean(&img);
    assert_eq!(debugfs_cat_sized(&img, "/d/f"), b"hELlo\0\0\0\0\0world");
}

#[test]
fn ranges_listings_links_mkdir_and_flush() {
    if !have_tools() {
        return;
    }
    ops_on(&Mkfs::default(), "ops4k.img");
    ops_on(
        &Mkfs {
            fs_type: "ext2",
            block_size: Some(1024),
            ..Mkfs::default()
        },
        "ops-ext2.img",
    );
    ops_on(
        &Mkfs {
            features: Some("inline_data"),
            ..Mkfs::default()
        },
        "ops-inline.img",
    );
}

#[test]
fn inline_files_and_symlinks_read_by_range() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("small"), b"inline bytes here").expect("populate");
    let target = "x".repeat(80);
    std::os::unix::fs::symlink(&target, src.join("link")).expect("symlink");
    let img = mkfs(
        dir.path(),
        "inline-ops.img",
        &Mkfs {
            features: Some("inline_data"),
            populate: Some(&src),
            ..Mkfs::default()
        },
    );
    let stat = String::from_utf8_lossy(&debugfs(&img, "stat /small")).into_owned();
    assert!(stat.contains("Size of inline data"), "{stat}");
    let (t, mut fs) = open_txn(&img);
    let mut buf = [0u8; 8];
    let n = fs.read_at("/small", 7, &mut buf).expect("read inline");
    assert_eq!(&buf[..n], b"bytes he");
    assert_eq!(fs.read_at("/small", 17, &mut buf).expect("at end"), 0);
    assert_eq!(fs.read_link("/link").expect("readlink"), target.as_bytes());
    assert_eq!(
        listing(&fs, "/"),
        BTreeMap::from([
            ("link".to_string(), FileKind::Symlink),
            ("lost+found".to_string(), FileKind::Directory),
            ("small".to_string(), FileKind::Regular),
            ("sub".to_string(), FileKind::Directory),
        ])
    );
    fs.write_at("/small", 17, b"!").expect("write_at inline");
    let n = fs.read_at("/small", 0, &mut [0u8; 64]).expect("read");
    assert_eq!(n, 18);
    commit(fs, t);
    e2fsck_clean(&img);
    assert_eq!(debugfs_cat_sized(&img, "/small"), b"inline bytes here!");
}

#[test]
fn names_that_are_not_utf8_work() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkfs(dir.path(), "latin1.img", &Mkfs::default());
    let (t, mut fs) = open_txn(&img);
    let d: &[u8] = b"/r\xe9pertoire";
    let f: &[u8] = b"/r\xe9pertoire/caf\xe9";
    let g: &[u8] = b"/r\xe9pertoire/na\xefve";
    fs.mkdir(d, &NewFile::dir(0o755)).expect("mkdir");
    fs.write_file(f, b"latin-1\n", &NewFile::file(0o644))
        .expect("write");
    fs.rename(f, g).expect("rename");
    fs.symlink(
        &b"/lien"[..],
        &b"r\xe9pertoire/na\xefve"[..],
        &NewFile::file(0),
    )
    .expect("symlink");
    let names: Vec<Vec<u8>> = fs
        .read_dir(d)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec![b"na\xefve".to_vec()]);
    assert_eq!(fs.read_file(g, 100).expect("read"), b"latin-1\n");
    assert_eq!(
        fs.read_link(&b"/lien"[..]).expect("readlink"),
        b"r\xe9pertoire/na\xefve"
    );
    assert!(matches!(
        fs.metadata(f),
        Err(Error::NotFound { path }) if path == "/r\u{fffd}pertoire/caf\u{fffd}"
    ));
    commit(fs, t);
    e2fsck_clean(&img);
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
                b"cat /r\xe9pertoire/na\xefve",
            ),
        )
        .arg(&img)
        .output()
        .expect("debugfs");
    assert_eq!(out.stdout, b"latin-1\n");
}

/// Opens `bytes` and returns the refusal, checking that the device was not written.
fn refused_unchanged(bytes: Vec<u8>) -> Error {
    let dev = Arc::new(disk::mem::MemDisk::from_vec(bytes.clone()));
    let e = Ext2Fs::open(dev.clone(), &OpenOptions::new().force(true)).expect_err("refused");
    assert!(dev.to_vec() == bytes, "a refused image was written to");
    e
}

fn corrupt_parts(e: &Error) -> (&'static str, u64, String) {
    match e {
        Error::Corrupt {
            structure,
            offset,
            detail,
        } => (structure, *offset, detail.clone()),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

// found by tests/tests/ext4_write_hostile.rs: libext2fs trusted these and crashed or would
// have followed them; now they are refused before anything is written.
#[test]
fn hostile_geometry_and_descriptors_are_refused_before_any_write() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csum = std::fs::read(mkfs(
        dir.path(),
        "csum.img",
        &Mkfs {
            size_mib: 4,
            ..Mkfs::default()
        },
    ))
    .expect("read image");
    let plain = std::fs::read(mkfs(
        dir.path(),
        "plain.img",
        &Mkfs {
            size_mib: 4,
            no_csum: true,
            ..Mkfs::default()
        },
    ))
    .expect("read image");
    // 4 MiB makes 1 KiB blocks: superblock in block 1, descriptors in block 2.
    const GDT: usize = 2048;

    // s_first_data_block 128: libext2fs freed an invalid pointer at close.
    let mut b = plain.clone();
    b[0x414] = 128;
    let e = refused_unchanged(b);
    assert_eq!(
        corrupt_parts(&e),
        (
            "ext2/3/4 superblock",
            0x414,
            "s_first_data_block 128 out of range 1..=1".into()
        )
    );
    assert_eq!(
        e.to_string(),
        "corrupt ext2/3/4 superblock at byte 0x414: s_first_data_block 128 out of range 1..=1"
    );

    // A device shorter than the filesystem.
    let e = refused_unchanged(plain[..2 << 20].to_vec());
    assert_eq!(
        corrupt_parts(&e),
        (
            "ext2/3/4 superblock",
            0x404,
            "s_blocks_count (the device's size in blocks is the maximum) 4096 out of range \
             2..=2048"
                .into()
        )
    );

    // The inode table moved, with metadata_csum: the descriptor checksum no longer matches.
    let mut b = csum.clone();
    b[GDT + 8] = b[GDT + 8].wrapping_add(4);
    assert_eq!(
        corrupt_parts(&refused_unchanged(b)),
        (
            "ext2/3/4 group descriptors",
            0x800,
            "group 0: descriptor checksum does not match".into()
        )
    );

    // The block bitmap pointed at the descriptor block itself, without checksums to notice:
    // ext2fs_check_desc refuses it.
    let mut b = plain.clone();
    b[GDT..GDT + 4].copy_from_slice(&2u32.to_le_bytes());
    let (structure, offset, detail) = corrupt_parts(&refused_unchanged(b));
    assert_eq!((structure, offset), ("ext2/3/4 group descriptors", 0x800));
    assert!(detail.contains("block bitmap"), "{detail}");

    // The unmodified images open.
    for bytes in [csum, plain] {
        let dev = Arc::new(disk::mem::MemDisk::from_vec(bytes));
        Ext2Fs::open(dev, &OpenOptions::new())
            .expect("clean image opens")
            .close()
            .expect("close");
    }
}
