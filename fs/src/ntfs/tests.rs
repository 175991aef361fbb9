//! Tests of the NTFS reader: boot-sector validation, images made by `mkntfs` and populated with
//! `ntfscp` and an `ntfs-3g` mount (compared with `ntfsls`/`ntfscat`), the real Windows volume
//! from `dissect.ntfs`, and the fuzz harness over mutations.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use disk::{BlockRead, MemDisk};

use super::fixtures::{dissect_ntfs_image, have};
use super::*;
use crate::FsReadExt;

// ---------------------------------------------------------------- boot sector

/// A valid boot sector: 512-byte sectors, 8 sectors per cluster, MFT at cluster 4, 1 KiB records.
fn good_boot() -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[3..11].copy_from_slice(NTFS_OEM_ID);
    b[0x0b..0x0d].copy_from_slice(&512u16.to_le_bytes()); // bytes per sector
    b[0x0d] = 8; // sectors per cluster
    b[0x28..0x30].copy_from_slice(&4095u64.to_le_bytes()); // total sectors
    b[0x30..0x38].copy_from_slice(&4u64.to_le_bytes()); // $MFT lcn
    b[0x38..0x40].copy_from_slice(&200u64.to_le_bytes()); // $MFTMirr lcn
    b[0x40] = 0xf6; // -10: 1 KiB file records
    b[0x44] = 1; // one cluster per index record
    b[0x48..0x50].copy_from_slice(&0x0CF2_7839_1BC3_1F75u64.to_le_bytes()); // serial
    b[0x1fe..0x200].copy_from_slice(&BOOT_SIGNATURE.to_le_bytes());
    b
}

fn boot_of(bytes: Vec<u8>, dev_size: u64) -> Result<BootSector> {
    let mut bytes = bytes;
    bytes.resize(usize::try_from(dev_size).unwrap(), 0);
    BootSector::read(&MemDisk::from_vec(bytes))
}

fn assert_boot_err(mutate: impl FnOnce(&mut Vec<u8>), offset: u64, detail: &str) {
    let mut b = good_boot();
    mutate(&mut b);
    match boot_of(b, 2 << 20) {
        Err(Error::Corrupt {
            structure,
            offset: o,
            detail: d,
        }) => {
            assert_eq!(structure, "ntfs boot sector");
            assert_eq!(o, offset, "{d}");
            assert_eq!(d, detail);
        }
        other => panic!("expected corrupt boot sector, got {other:?}"),
    }
}

#[test]
fn boot_sector_good() {
    let b = boot_of(good_boot(), 2 << 20).unwrap();
    assert_eq!(
        b,
        BootSector {
            cluster_size: 4096,
            file_record_size: 1024,
            serial_number: 0x0CF2_7839_1BC3_1F75,
        }
    );
    // Positive clusters-per-record and large-cluster encodings.
    let mut g = good_boot();
    g[0x0d] = 2; // 1 KiB clusters
    g[0x40] = 1; // one cluster per record
    assert_eq!(boot_of(g, 2 << 20).unwrap().file_record_size, 1024);
    let mut g = good_boot();
    g[0x0d] = 0xf4; // 2^12 sectors: 2 MiB clusters
    g[0x30..0x38].copy_from_slice(&1u64.to_le_bytes());
    assert_eq!(boot_of(g, 8 << 20).unwrap().cluster_size, 2 << 20);
}

#[test]
fn boot_sector_each_field_is_checked() {
    assert_boot_err(
        |b| b[3..11].copy_from_slice(b"MSDOS5.0"),
        3,
        "oem id \"MSDOS5.0\" is not \"NTFS    \"",
    );
    assert_boot_err(|b| b[0x1fe] = 0, 0x1fe, "signature 0xaa00 is not 0xaa55");
    assert_boot_err(
        |b| b[0x0b..0x0d].copy_from_slice(&768u16.to_le_bytes()),
        0x0b,
        "bytes per sector 768 is not a power of two in 512..=4096",
    );
    assert_boot_err(
        |b| b[0x0b..0x0d].copy_from_slice(&8192u16.to_le_bytes()),
        0x0b,
        "bytes per sector 8192 is not a power of two in 512..=4096",
    );
    assert_boot_err(
        |b| b[0x0d] = 3,
        0x0d,
        "sectors per cluster 3 is not a power of two in 1..=128",
    );
    assert_boot_err(
        |b| b[0x0d] = 0,
        0x0d,
        "sectors per cluster 0 is not a power of two in 1..=128",
    );
    assert_boot_err(
        |b| b[0x0d] = 0xf0,
        0x0d,
        "sectors per cluster exponent 16 out of range 8..=12",
    );
    assert_boot_err(
        |b| {
            b[0x0b..0x0d].copy_from_slice(&4096u16.to_le_bytes());
            b[0x0d] = 0xf4;
        },
        0x0d,
        "cluster size 16777216 exceeds 2097152",
    );
    // 127 clusters of 4 KiB per record: the crate would allocate 508 KiB per record.
    assert_boot_err(
        |b| b[0x40] = 127,
        0x40,
        "clusters per file record 127 gives a record size outside 1024..=4096",
    );
    assert_boot_err(
        |b| b[0x40] = 0xf4u8.wrapping_sub(1), // -13: 8 KiB
        0x40,
        "clusters per file record -13 gives a record size outside 1024..=4096",
    );
    assert_boot_err(
        |b| b[0x40] = 0x80, // -128: shift overflows
        0x40,
        "clusters per file record -128 gives a record size outside 1024..=4096",
    );
    assert_boot_err(
        |b| b[0x30..0x38].copy_from_slice(&0u64.to_le_bytes()),
        0x30,
        "mft lcn 0 (cluster size 4096) is outside the 2097152-byte device",
    );
    assert_boot_err(
        |b| b[0x30..0x38].copy_from_slice(&u64::MAX.to_le_bytes()),
        0x30,
        "mft lcn 18446744073709551615 (cluster size 4096) is outside the 2097152-byte device",
    );
}

#[test]
fn boot_sector_short_device() {
    let err = BootSector::read(&MemDisk::from_vec(vec![0; 100])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "corrupt ntfs boot sector at 0x0: device of 100 bytes is smaller than the 512-byte boot sector"
    );
    assert!(NtfsFs::open(Arc::new(MemDisk::from_vec(vec![0; 100]))).is_err());
}

#[test]
fn nt_time_conversion() {
    assert_eq!(nt_to_unix(0), -NT_TO_UNIX_EPOCH_SECS);
    assert_eq!(nt_to_unix(116_444_736_000_000_000), 0);
    // 2022-05-12 23:17:00 UTC.
    assert_eq!(
        nt_to_unix(116_444_736_000_000_000 + 1_652_397_420 * 10_000_000 + 9_999_999),
        1_652_397_420
    );
    assert_eq!(
        nt_to_unix(u64::MAX),
        1_844_674_407_370 - NT_TO_UNIX_EPOCH_SECS
    );
}

#[test]
fn panics_become_corrupt_errors() {
    let r: Result<()> = guarded("a test", || panic!("boom"));
    match r {
        Err(Error::Corrupt { detail, .. }) => {
            assert_eq!(
                detail,
                "malformed structure while reading a test (parser panic: boom)"
            );
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- images made with ntfs-3g

fn run(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An `ntfs-3g` mount, unmounted (and the daemon reaped) on drop.
struct Mount {
    dir: PathBuf,
    child: Child,
}

impl Mount {
    fn new(image: &Path, dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).ok()?;
        let child = Command::new("ntfs-3g")
            .args(["-o", "no_detach"])
            .arg(image)
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut m = Self {
            dir: dir.to_path_buf(),
            child,
        };
        let want = format!(" {} ", dir.display());
        for _ in 0..200 {
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            if mounts.contains(&want) {
                return Some(m);
            }
            if m.child.try_wait().ok().flatten().is_some() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg(&self.dir));
        let _ = self.child.wait();
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
    run(Command::new("setfattr")
        .args(["-n", name, "-v"])
        .arg(format!("0x{hex}"))
        .arg(path))
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// `REPARSE_DATA_BUFFER` for a junction (`flags` None) or a symlink.
fn reparse_data(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
    let (s, p) = (utf16(sub), utf16(print));
    let len16 = |n: usize| u16::try_from(n).unwrap().to_le_bytes();
    let mut body = Vec::new();
    body.extend_from_slice(&len16(0));
    body.extend_from_slice(&len16(s.len()));
    body.extend_from_slice(&len16(s.len() + 2));
    body.extend_from_slice(&len16(p.len()));
    if let Some(f) = flags {
        body.extend_from_slice(&f.to_le_bytes());
    }
    body.extend_from_slice(&s);
    body.extend_from_slice(&[0, 0]);
    body.extend_from_slice(&p);
    body.extend_from_slice(&[0, 0]);
    let mut out = tag.to_le_bytes().to_vec();
    out.extend_from_slice(&len16(body.len()));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&body);
    out
}

const BIG_LEN: usize = 1 << 20;
const MANY: usize = 2048;
const SPARSE_LEN: u64 = 6 << 20;
const SPARSE_AT: u64 = 3 << 20;

fn many_name(i: usize) -> String {
    format!("Entry {i:04}")
}

fn needs_tools(tools: &[&str]) -> bool {
    for t in tools {
        if !have(t) {
            println!("skipping: {t} not found");
            return false;
        }
    }
    true
}

/// Builds a populated volume of `size` bytes; `many` entries go into `/Many`.
fn build_image(size: u64, many: usize, full: bool) -> Option<Vec<u8>> {
    if !needs_tools(&["mkntfs", "ntfscp", "ntfs-3g", "umount", "setfattr"]) {
        return None;
    }
    let tmp = tempfile::tempdir().ok()?;
    let img = tmp.path().join("t.img");
    std::fs::File::create(&img).ok()?.set_len(size).ok()?;
    if !run(Command::new("mkntfs")
        .args(["-F", "-Q", "-s", "512", "-c", "4096", "-L", "RehostTest"])
        .arg(&img))
    {
        println!("skipping: mkntfs failed");
        return None;
    }
    let src = tmp.path().join("hello.txt");
    std::fs::write(&src, b"hello, ntfs\n").ok()?;
    assert!(run(Command::new("ntfscp")
        .arg(&img)
        .arg(&src)
        .arg("/hello.txt")));
    if full {
        let big = tmp.path().join("big.bin");
        std::fs::write(&big, noise(BIG_LEN, 0x1234_5678)).ok()?;
        assert!(run(Command::new("ntfscp")
            .arg(&img)
            .arg(&big)
            .arg("/big.bin")));
    }
    let mnt = tmp.path().join("mnt");
    let Some(m) = Mount::new(&img, &mnt) else {
        println!("skipping: ntfs-3g mount failed (needs root and /dev/fuse)");
        return None;
    };
    let p = |rel: &str| m.dir.join(rel);
    std::fs::create_dir_all(p("Windows/System32")).unwrap();
    std::fs::write(p("Windows/System32/cmd.exe"), b"MZ fake cmd\n").unwrap();
    std::fs::create_dir_all(p("a/b/c/d/e")).unwrap();
    std::fs::write(p("a/b/c/d/e/deep.txt"), b"deep\n").unwrap();
    std::fs::create_dir(p("Many")).unwrap();
    // A compressed directory with a file spanning two 64 KiB compression units.
    std::fs::create_dir(p("comp")).unwrap();
    assert!(set_xattr(
        &p("comp"),
        "system.ntfs_attrib_be",
        &0x0000_0800u32.to_be_bytes()
    ));
    std::fs::write(p("comp/c.txt"), b"compress me ".repeat(8192)).unwrap();
    for i in 0..many {
        std::fs::write(p(&format!("Many/{}", many_name(i))), i.to_string()).unwrap();
    }
    std::os::unix::fs::symlink("Windows/System32", p("rel")).unwrap();
    std::os::unix::fs::symlink("/Windows/System32/cmd.exe", p("abs")).unwrap();
    std::fs::create_dir(p("junc")).unwrap();
    assert!(set_xattr(
        &p("junc"),
        "system.ntfs_reparse_data",
        &reparse_data(
            reparse::IO_REPARSE_TAG_MOUNT_POINT,
            r"\??\C:\Windows\System32",
            r"C:\Windows\System32",
            None
        )
    ));
    std::fs::write(p("wsym"), b"").unwrap();
    assert!(set_xattr(
        &p("wsym"),
        "system.ntfs_reparse_data",
        &reparse_data(
            reparse::IO_REPARSE_TAG_SYMLINK,
            r"Windows\System32\cmd.exe",
            r"Windows\System32\cmd.exe",
            Some(1)
        )
    ));
    std::fs::write(p("offvol"), b"").unwrap();
    assert!(set_xattr(
        &p("offvol"),
        "system.ntfs_reparse_data",
        &reparse_data(
            reparse::IO_REPARSE_TAG_SYMLINK,
            r"\??\D:\data",
            r"D:\data",
            Some(0)
        )
    ));
    if full {
        // A deduplicated file (tag IO_REPARSE_TAG_DEDUP): not a link; its unnamed stream is
        // sparse, as Windows leaves it once the data moved to the chunk store.
        std::fs::File::create(p("dedup"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let mut dedup = 0x8000_0013u32.to_le_bytes().to_vec();
        dedup.extend_from_slice(&[4, 0, 0, 0, 1, 2, 3, 4]);
        assert!(set_xattr(&p("dedup"), "system.ntfs_reparse_data", &dedup));
        let f = std::fs::File::create(p("sparse.bin")).unwrap();
        f.set_len(SPARSE_LEN).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"sparse-data", SPARSE_AT).unwrap();
    }
    drop(m);
    std::fs::read(&img).ok()
}

/// The 16 MiB test volume, built once per test process.
pub(super) fn full_image() -> Option<&'static [u8]> {
    static IMG: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    IMG.get_or_init(|| build_image(16 << 20, MANY, true))
        .as_deref()
}

fn open_bytes(bytes: &[u8]) -> NtfsFs {
    NtfsFs::open(Arc::new(MemDisk::from_vec(bytes.to_vec()))).unwrap()
}

fn gp(s: &str) -> GuestPath {
    GuestPath::parse(s.as_bytes()).unwrap()
}

fn names(fs: &NtfsFs, dir: &str) -> BTreeSet<String> {
    fs.read_dir(&gp(dir))
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

/// A temporary file holding `bytes`, for the ntfsprogs tools.
fn image_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    f
}

/// `ntfsls -a -s -p dir` as a set, without `.` and `..`.
fn ntfsls(img: &Path, dir: &str) -> BTreeSet<String> {
    let out = Command::new("ntfsls")
        .args(["-a", "-s", "-p", dir])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "ntfsls {dir} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .map(str::to_string)
        .collect()
}

fn ntfscat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("ntfscat").arg(img).arg(path).output().unwrap();
    assert!(out.status.success(), "ntfscat {path} failed");
    out.stdout
}

#[test]
fn mkntfs_volume_info() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    let info = fs.info();
    assert_eq!(info.kind, FsKind::Ntfs);
    assert_eq!(info.label.as_deref(), Some("RehostTest"));
    assert_eq!(info.case, CaseSensitivity::Insensitive);
    let uuid = info.uuid.unwrap();
    assert_eq!(uuid, format!("{:016X}", fs.serial_number()));
    assert_eq!(fs.cluster_size(), 4096);
    if have("blkid") {
        let f = image_file(img);
        let out = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "UUID"])
            .arg(f.path())
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), uuid);
    }
    let v = fs.volume_flags();
    assert!(!v.dirty, "{v:?}");
    assert_eq!((v.major_version, v.minor_version), (3, 1));
    // Setting the dirty bit in $VOLUME_INFORMATION is seen.
    let mut dirty = img.to_vec();
    let vi = find_volume_information(&dirty).expect("$VOLUME_INFORMATION in $Volume");
    dirty[vi + 10] |= 1;
    let fs = open_bytes(&dirty);
    assert!(fs.volume_flags().dirty);
    assert_eq!(fs.volume_flags().flags & 1, 1);
}

/// Offset of the `$VOLUME_INFORMATION` value in MFT record 3 of `img`.
fn find_volume_information(img: &[u8]) -> Option<usize> {
    find_resident_value(img, 3, 0x70)
}

/// Offset in `img` of the resident value of the first attribute of type `ty` in MFT record
/// `record` (test helper for images with 4 KiB clusters and 1 KiB records; it walks the record's
/// attribute headers: type at +0, length at +4, value offset at +0x14).
fn find_resident_value(img: &[u8], record: usize, ty: u32) -> Option<usize> {
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([img[o], img[o + 1]]));
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap());
    let mft = usize::try_from(u64::from_le_bytes(img[0x30..0x38].try_into().ok()?)).ok()? * 4096;
    let rec = mft + record * 1024;
    let mut off = rec + u16_at(rec + 0x14);
    while off + 8 < rec + 1024 {
        let len = usize::try_from(u32_at(off + 4)).ok()?;
        if u32_at(off) == ty {
            return Some(off + u16_at(off + 0x14));
        }
        if u32_at(off) == 0xffff_ffff || len == 0 {
            return None;
        }
        off += len;
    }
    None
}

#[test]
fn mkntfs_listings_match_ntfsls() {
    let Some(img) = full_image() else { return };
    if !needs_tools(&["ntfsls"]) {
        return;
    }
    let f = image_file(img);
    let fs = open_bytes(img);
    let root = names(&fs, "/");
    assert_eq!(root, ntfsls(f.path(), "/"));
    for n in [
        "$MFT",
        "$Volume",
        "$UpCase",
        "$Extend",
        "hello.txt",
        "big.bin",
        "Many",
        "junc",
    ] {
        assert!(root.contains(n), "{n} missing from {root:?}");
    }
    assert!(!root.contains("."));
    let many = names(&fs, "/Many");
    assert_eq!(many.len(), MANY);
    assert_eq!(many, ntfsls(f.path(), "/Many"));
    assert_eq!(many, (0..MANY).map(many_name).collect::<BTreeSet<_>>());
    assert_eq!(
        names(&fs, "/a/b/c/d/e"),
        BTreeSet::from(["deep.txt".to_string()])
    );
    // Entry types.
    let types: std::collections::HashMap<String, FileType> = fs
        .read_dir(&GuestPath::root())
        .unwrap()
        .into_iter()
        .map(|e| (String::from_utf8(e.name).unwrap(), e.file_type))
        .collect();
    assert_eq!(types["Many"], FileType::Directory);
    assert_eq!(types["hello.txt"], FileType::Regular);
    assert_eq!(types["$MFT"], FileType::Regular);
    assert_eq!(types["junc"], FileType::Symlink);
    assert_eq!(types["wsym"], FileType::Symlink);
    assert_eq!(types["rel"], FileType::Symlink);
    assert_eq!(types["abs"], FileType::Symlink);
    assert_eq!(types["dedup"], FileType::Other);
}

#[test]
fn mkntfs_file_contents() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    let big = noise(BIG_LEN, 0x1234_5678);
    assert_eq!(fs.read_file(b"/big.bin", 2 << 20).unwrap(), big);
    assert_eq!(fs.read_file(b"/hello.txt", 100).unwrap(), b"hello, ntfs\n");
    // Positional reads, including across cluster boundaries and at the end.
    let p = gp("/big.bin");
    let mut buf = [0u8; 10_000];
    assert_eq!(fs.read_at(&p, 4090, &mut buf).unwrap(), 10_000);
    assert_eq!(&buf[..], &big[4090..14_090]);
    let end = u64::try_from(BIG_LEN).unwrap();
    assert_eq!(fs.read_at(&p, end - 3, &mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], &big[BIG_LEN - 3..]);
    assert_eq!(fs.read_at(&p, end, &mut buf).unwrap(), 0);
    assert_eq!(fs.read_at(&p, u64::MAX, &mut buf).unwrap(), 0);
    // Metadata.
    let md = fs.lstat(&p).unwrap();
    assert_eq!(md.file_type, FileType::Regular);
    assert_eq!(md.size, end);
    assert_eq!(md.mode, 0o644);
    assert!(md.ino >= FIRST_USER_RECORD, "{md:?}");
    assert!(md.mtime > 1_600_000_000, "{md:?}");
    assert_eq!(md.nlink, 1);
    let root = fs.lstat(&GuestPath::root()).unwrap();
    assert_eq!(
        (root.file_type, root.mode, root.ino),
        (FileType::Directory, 0o755, 5)
    );
    // Sparse file: zeroes around the written bytes.
    let s = fs.read_file(b"/sparse.bin", SPARSE_LEN).unwrap();
    assert_eq!(s.len(), usize::try_from(SPARSE_LEN).unwrap());
    let at = usize::try_from(SPARSE_AT).unwrap();
    assert_eq!(&s[at..at + 11], b"sparse-data");
    assert!(s[..at].iter().all(|&b| b == 0));
    assert!(s[at + 11..].iter().all(|&b| b == 0));
    if have("ntfscat") {
        let f = image_file(img);
        assert_eq!(ntfscat(f.path(), "/big.bin"), big);
        assert_eq!(ntfscat(f.path(), "/sparse.bin"), s);
        assert_eq!(
            fs.read_file(b"/Many/Entry 1234", 10).unwrap(),
            ntfscat(f.path(), "/Many/Entry 1234")
        );
    }
}

#[test]
fn mkntfs_case_insensitive_lookup() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    assert_eq!(
        fs.read_file(b"/WINDOWS/system32/CMD.EXE", 100).unwrap(),
        b"MZ fake cmd\n"
    );
    let a = fs.lstat(&gp("/windows/SYSTEM32/cmd.exe")).unwrap();
    let b = fs.lstat(&gp("/Windows/System32/cmd.exe")).unwrap();
    assert_eq!(a, b);
    assert_eq!(fs.lstat(&gp("/many/ENTRY 2047")).unwrap().size, 4);
    assert!(
        fs.lstat(&gp("/Many/Entry 2048"))
            .unwrap_err()
            .is_not_found()
    );
}

#[test]
fn mkntfs_symlinks_and_junctions() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    // Interix symlinks written by ntfs-3g.
    assert_eq!(fs.read_link(&gp("/rel")).unwrap(), b"Windows/System32");
    assert_eq!(
        fs.read_link(&gp("/abs")).unwrap(),
        b"/Windows/System32/cmd.exe"
    );
    let md = fs.lstat(&gp("/abs")).unwrap();
    assert_eq!(
        (md.file_type, md.size, md.mode),
        (FileType::Symlink, 25, 0o777)
    );
    // Reparse points: a junction and a relative symlink.
    assert_eq!(fs.read_link(&gp("/junc")).unwrap(), b"/Windows/System32");
    assert_eq!(fs.lstat(&gp("/junc")).unwrap().file_type, FileType::Symlink);
    assert_eq!(
        fs.read_link(&gp("/wsym")).unwrap(),
        b"Windows/System32/cmd.exe"
    );
    // Resolution through them stays inside the volume.
    assert_eq!(
        fs.read_file(b"/junc/cmd.exe", 100).unwrap(),
        b"MZ fake cmd\n"
    );
    assert_eq!(
        fs.read_file(b"/JUNC/CMD.EXE", 100).unwrap(),
        b"MZ fake cmd\n"
    );
    assert_eq!(fs.read_file(b"/wsym", 100).unwrap(), b"MZ fake cmd\n");
    assert_eq!(
        fs.read_file(b"/rel/cmd.exe", 100).unwrap(),
        b"MZ fake cmd\n"
    );
    assert_eq!(fs.read_file(b"/abs", 100).unwrap(), b"MZ fake cmd\n");
    // A link to another drive is an error, and its lstat size is 0.
    match fs.read_link(&gp("/offvol")) {
        Err(Error::Unsupported { what, detail }) => {
            assert_eq!(what, "ntfs symlink target");
            assert_eq!(
                detail,
                r#"/offvol: target "\\??\\D:\\data" is outside this volume (drive C:)"#
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fs.lstat(&gp("/offvol")).unwrap().size, 0);
    // With drive letter D the same link resolves.
    let fs_d = open_bytes(img).with_drive_letter('d').unwrap();
    assert_eq!(fs_d.read_link(&gp("/offvol")).unwrap(), b"/data");
    assert!(open_bytes(img).with_drive_letter('1').is_err());
    // Other reparse tags.
    assert_eq!(fs.lstat(&gp("/dedup")).unwrap().file_type, FileType::Other);
    assert!(matches!(
        fs.read_link(&gp("/dedup")),
        Err(Error::NotASymlink { path }) if path == "/dedup"
    ));
    // Its unnamed stream is not its data: reading is refused rather than returning zeroes.
    let mut buf = [0u8; 4];
    match fs.read_at(&gp("/dedup"), 0, &mut buf) {
        Err(Error::Unsupported { what, detail }) => {
            assert_eq!(what, "ntfs reparse point");
            assert_eq!(
                detail,
                "/dedup: data is held outside the file by reparse tag 0x80000013"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn mkntfs_errors() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    let mut buf = [0u8; 4];
    assert!(matches!(fs.lstat(&gp("/nope")), Err(Error::NotFound { path }) if path == "/nope"));
    assert!(matches!(
        fs.lstat(&gp("/hello.txt/x")),
        Err(Error::NotADirectory { path }) if path == "/hello.txt"
    ));
    assert!(matches!(
        fs.read_dir(&gp("/hello.txt")),
        Err(Error::NotADirectory { path }) if path == "/hello.txt"
    ));
    assert!(matches!(
        fs.read_at(&gp("/Many"), 0, &mut buf),
        Err(Error::IsADirectory { path }) if path == "/Many"
    ));
    assert!(matches!(
        fs.read_link(&gp("/hello.txt")),
        Err(Error::NotASymlink { path }) if path == "/hello.txt"
    ));
}

#[test]
fn mkntfs_compressed_file() {
    let Some(img) = full_image() else { return };
    let fs = open_bytes(img);
    let want = b"compress me ".repeat(8192);
    assert_eq!(fs.read_file(b"/comp/c.txt", 1 << 20).unwrap(), want);
    // Positional reads inside and across 64 KiB compression units.
    let p = gp("/comp/c.txt");
    let mut buf = vec![0u8; 5000];
    for off in [0usize, 1, 4095, 65_530, 90_000] {
        assert_eq!(fs.read_at(&p, off as u64, &mut buf).unwrap(), 5000);
        assert_eq!(&buf[..], &want[off..off + 5000], "at {off}");
    }
    if have("ntfscat") {
        let f = image_file(img);
        assert_eq!(ntfscat(f.path(), "/comp/c.txt"), want);
    }
}

#[test]
fn device_errors_are_reported_as_disk_errors() {
    let Some(img) = full_image() else { return };
    let big = noise(BIG_LEN, 0x1234_5678);
    let at = img
        .windows(64)
        .position(|w| w == &big[..64])
        .expect("big.bin's first cluster in the image");
    let at = u64::try_from(at).unwrap();
    let bad_sector = at..at + 1;
    let faulty = disk::testkit::FaultyDisk::new(MemDisk::from_vec(img.to_vec()), vec![bad_sector]);
    let fs = NtfsFs::open(Arc::new(faulty)).unwrap();
    assert_eq!(
        fs.lstat(&gp("/big.bin")).unwrap().size,
        u64::try_from(BIG_LEN).unwrap()
    );
    match fs.read_file(b"/big.bin", 2 << 20) {
        Err(Error::Disk(disk::Error::Io { offset, .. })) => assert_eq!(offset, at),
        other => panic!("expected the injected i/o error, got {other:?}"),
    }
    // Reads that avoid the bad sector still work.
    let mut buf = [0u8; 16];
    assert_eq!(fs.read_at(&gp("/big.bin"), 8192, &mut buf).unwrap(), 16);
    assert_eq!(&buf, &big[8192..8208]);
}

#[test]
fn directory_listing_reads_are_bounded() {
    let Some(img) = full_image() else { return };
    let counting = Arc::new(disk::testkit::CountingDisk::new(MemDisk::from_vec(
        img.to_vec(),
    )));
    let fs = NtfsFs::open(counting.clone()).unwrap();
    let before = counting.reads();
    assert_eq!(fs.read_dir(&gp("/Many")).unwrap().len(), MANY);
    let used = counting.reads() - before;
    // Root and /Many records (2 reads each: $MFT record 0, then the record) and one read per
    // 4 KiB index record: 2,048 short names fit in well under 100 of them.
    assert!(used < 200, "{used} reads to list /Many");
}

/// Offset of MFT record `record` in `img` (fresh mkntfs volumes have a contiguous MFT).
fn record_offset(img: &[u8], record: u64) -> usize {
    let mft =
        usize::try_from(u64::from_le_bytes(img[0x30..0x38].try_into().unwrap())).unwrap() * 4096;
    mft + usize::try_from(record).unwrap() * 1024
}

/// Offset of the header of the first attribute of type `ty` in MFT record `record`.
fn attribute_header(img: &[u8], record: u64, ty: u32) -> usize {
    let rec = record_offset(img, record);
    let mut off = rec + usize::from(u16::from_le_bytes([img[rec + 0x14], img[rec + 0x15]]));
    loop {
        let t = u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
        assert_ne!(t, 0xffff_ffff, "attribute {ty:#x} not in record {record}");
        if t == ty {
            return off;
        }
        off += usize::try_from(u32::from_le_bytes(
            img[off + 4..off + 8].try_into().unwrap(),
        ))
        .unwrap();
    }
}

#[test]
fn record_checks() {
    let Some(img) = full_image() else { return };
    let ino = open_bytes(img).lstat(&gp("/hello.txt")).unwrap().ino;
    let rec = record_offset(img, ino);
    let expect_corrupt =
        |bytes: &[u8], detail: &str| match open_bytes(bytes).lstat(&gp("/hello.txt")) {
            Err(Error::Corrupt {
                structure,
                offset,
                detail: d,
            }) => {
                assert_eq!(structure, format!("ntfs file record {ino}"));
                assert_eq!(offset, u64::try_from(rec).unwrap());
                assert_eq!(d, detail);
            }
            other => panic!("expected corruption, got {other:?}"),
        };
    // Sequence number (record header +0x10) no longer matches the directory's reference.
    let mut m = img.to_vec();
    let seq = u16::from_le_bytes([m[rec + 0x10], m[rec + 0x11]]);
    m[rec + 0x10..rec + 0x12].copy_from_slice(&(seq + 1).to_le_bytes());
    expect_corrupt(
        &m,
        &format!(
            "sequence number {} does not match the directory entry's {seq}",
            seq + 1
        ),
    );
    // The record is marked free (flags at +0x16, IN_USE = 1).
    let mut m = img.to_vec();
    m[rec + 0x16] &= !1;
    expect_corrupt(&m, "record is not in use (stale directory entry)");
    // EFS-encrypted $DATA (attribute flags at +0x0c, ENCRYPTED = 0x4000) is refused by name.
    let mut m = img.to_vec();
    let data = attribute_header(&m, ino, 0x80);
    m[data + 0x0d] |= 0x40;
    let mut buf = [0u8; 4];
    match open_bytes(&m).read_at(&gp("/hello.txt"), 0, &mut buf) {
        Err(Error::Unsupported { what, detail }) => {
            assert_eq!(what, "ntfs encrypted data");
            assert_eq!(detail, "/hello.txt: the data stream is encrypted (EFS)");
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- the Windows-made volume

#[test]
fn windows_volume_from_dissect() {
    let Some(path) = dissect_ntfs_image() else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let fs = open_bytes(&bytes);
    let info = fs.info();
    assert_eq!(info.label.as_deref(), Some("New Volume"));
    assert_eq!(info.uuid.as_deref(), Some("9C60667F60665FCE"));
    let v = fs.volume_flags();
    assert_eq!((v.major_version, v.minor_version), (3, 1));
    let root = names(&fs, "/");
    for n in [
        "$MFT",
        "$Extend",
        "File.txt",
        "Large.txt",
        "Random.bin",
        "Directory",
        "Large Directory",
    ] {
        assert!(root.contains(n), "{n} missing from {root:?}");
    }
    // The large directory: 2,048 subdirectories, each listed once although Windows also gave
    // every one of them a DOS 8.3 alias.
    let big = fs.read_dir(&gp("/Large Directory")).unwrap();
    assert_eq!(big.len(), 2048);
    assert!(big.iter().all(|e| e.file_type == FileType::Directory));
    let big: BTreeSet<String> = big
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    assert_eq!(big, (0..2048).map(|i| format!("Directory {i}")).collect());
    assert_eq!(fs.read_file(b"/File.txt", 100).unwrap(), b"Contents here");
    assert_eq!(
        fs.read_file(b"/large directory/DIRECTORY 1999", 10)
            .map_err(|e| e.to_string()),
        Err("/large directory/DIRECTORY 1999: is a directory".to_string())
    );
    let md = fs.lstat(&gp("/Large.txt")).unwrap();
    assert_eq!(md.size, 2_097_152);
    // $STANDARD_INFORMATION "altered" time, 2022-05-12 23:19:04 UTC (as ntfsinfo prints it).
    assert_eq!(md.mtime, 1_652_397_544);
    if needs_tools(&["ntfsls", "ntfscat"]) {
        assert_eq!(root, ntfsls(&path, "/"));
        assert_eq!(big, ntfsls(&path, "/Large Directory"));
        assert_eq!(names(&fs, "/Directory"), ntfsls(&path, "/Directory"));
        for f in [
            "/File.txt",
            "/Large.txt",
            "/Random.bin",
            "/Directory/File 1.txt",
        ] {
            assert_eq!(
                fs.read_file(f.as_bytes(), 4 << 20).unwrap(),
                ntfscat(&path, f),
                "{f}"
            );
        }
    }
}

// ---------------------------------------------------------------- fuzzing

/// Entries in `/Many` of the fuzz seed: enough to need an index allocation (a 1 KiB record's
/// index root holds about seven such names), few enough to keep 1,000 walks fast.
const FUZZ_MANY: usize = 24;

/// The small image the fuzz test mutates, built once.
fn fuzz_seed() -> Option<&'static [u8]> {
    static IMG: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    IMG.get_or_init(|| build_image(2 << 20, FUZZ_MANY, false))
        .as_deref()
}

#[test]
fn fuzz_seed_is_valid() {
    let Some(seed) = fuzz_seed() else { return };
    let fs = open_bytes(seed);
    assert_eq!(names(&fs, "/Many").len(), FUZZ_MANY);
    assert_eq!(
        fs.read_file(b"/comp/c.txt", 1 << 20).unwrap(),
        b"compress me ".repeat(8192)
    );
    // The walk visits every entry: the metafiles, the tree and the files in /Many.
    assert!(fuzzing::walk(&fs) > FUZZ_MANY + 16);
    fuzzing::fuzz_ntfs(seed);
}

// The 1,000 mutations run as four tests so the test harness spreads them over the cores.
#[test]
fn fuzz_mutations_never_panic_0() {
    fuzz_mutations(0..250);
}
#[test]
fn fuzz_mutations_never_panic_1() {
    fuzz_mutations(250..500);
}
#[test]
fn fuzz_mutations_never_panic_2() {
    fuzz_mutations(500..750);
}
#[test]
fn fuzz_mutations_never_panic_3() {
    fuzz_mutations(750..1000);
}

/// Runs the harness over mutations `range` of the seed (mutation `i` is the same in every run).
fn fuzz_mutations(range: std::ops::Range<u64>) {
    let Some(seed) = fuzz_seed() else { return };
    let mft =
        usize::try_from(u64::from_le_bytes(seed[0x30..0x38].try_into().unwrap())).unwrap() * 4096;
    // The first 64 MFT records hold the metafiles and every file of the seed image.
    let mft_len = 64 * 1024;
    let indx: Vec<usize> = (0..seed.len() / 4096)
        .map(|c| c * 4096)
        .filter(|&o| &seed[o..o + 4] == b"INDX")
        .collect();
    let pick = |r: u64, n: usize| usize::try_from(r % u64::try_from(n).unwrap()).unwrap();
    for i in range {
        // Each mutation has its own PRNG stream, so the four ranges are independent.
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ i.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut m = seed.to_vec();
        match i % 10 {
            // Truncations.
            0 => m.truncate(pick(next(), seed.len())),
            // Boot sector.
            1 | 2 => {
                for _ in 0..1 + pick(next(), 3) {
                    let at = pick(next(), 512);
                    m[at] ^= 1 << pick(next(), 8);
                }
            }
            // Index records (directories' B+ tree nodes), or anywhere if there are none.
            3 => {
                for _ in 0..1 + pick(next(), 4) {
                    let at = if indx.is_empty() {
                        pick(next(), m.len())
                    } else {
                        indx[pick(next(), indx.len())] + pick(next(), 4096)
                    };
                    m[at] = u8::try_from(next() & 0xff).unwrap();
                }
            }
            // The MFT.
            _ => {
                for _ in 0..1 + pick(next(), 4) {
                    let at = mft + pick(next(), mft_len);
                    if pick(next(), 2) == 0 {
                        m[at] ^= 1 << pick(next(), 8);
                    } else {
                        m[at] = u8::try_from(next() & 0xff).unwrap();
                    }
                }
            }
        }
        fuzzing::fuzz_ntfs(&m);
    }
}

/// The formats parsed here (LZNT1 units, reparse data) over valid inputs and 1,000 mutations.
#[test]
fn fuzz_formats_never_panic() {
    // A valid LZNT1 unit: one compressed chunk ("abcabcabcabc!") and an uncompressed one.
    let mut lznt1 = vec![0x06, 0xb0, 0b0000_1000, b'a', b'b', b'c'];
    lznt1.extend_from_slice(&((2u16 << 12) | 6).to_le_bytes());
    lznt1.push(b'!');
    lznt1.extend_from_slice(&0x3003u16.to_le_bytes());
    lznt1.extend_from_slice(b"wxyz");
    let mut unit = vec![0u8; 64 * 1024];
    compress::lznt1_decompress(&lznt1, &mut unit).unwrap();
    assert_eq!(&unit[..13], b"abcabcabcabc!");
    assert_eq!(&unit[4096..4100], b"wxyz");
    let junction = reparse_data(
        reparse::IO_REPARSE_TAG_MOUNT_POINT,
        r"\??\C:\Windows",
        r"C:\Windows",
        None,
    );
    assert_eq!(
        reparse::link_target(&reparse::parse(&junction).unwrap(), b'C').unwrap(),
        b"/Windows"
    );
    let seeds = [lznt1, junction];
    let mut state = 0x0123_4567_89AB_CDEFu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1000u64 {
        let seed = &seeds[usize::try_from(i % 2).unwrap()];
        let mut m = seed.clone();
        if i % 7 == 0 {
            m.truncate(usize::try_from(next() % u64::try_from(m.len()).unwrap()).unwrap());
        } else {
            for _ in 0..1 + next() % 4 {
                let at = usize::try_from(next() % u64::try_from(m.len()).unwrap()).unwrap();
                m[at] = u8::try_from(next() & 0xff).unwrap();
            }
        }
        fuzzing::fuzz_ntfs_formats(&m);
    }
}

/// The `ntfs` crate slices an index entry to its stored length before checking that the length
/// covers the 16-byte entry header, then reads the flags byte at offset 12: an entry length of 0
/// panics inside the crate. The guard turns it into a corruption error.
#[test]
fn index_entry_shorter_than_its_header_is_corrupt_not_a_panic() {
    let Some(seed) = fuzz_seed() else { return };
    let mut img = seed.to_vec();
    // Record 5 is the root directory; 0x90 its $INDEX_ROOT. The value is the 16-byte index root
    // header, then the node header whose first field is the offset of the first entry.
    let root = find_resident_value(&img, 5, 0x90).expect("root $INDEX_ROOT");
    let node = root + 16;
    let first = node
        + usize::try_from(u32::from_le_bytes(img[node..node + 4].try_into().unwrap())).unwrap();
    // Index entry length (u16 at +8) := 0.
    img[first + 8] = 0;
    img[first + 9] = 0;
    let fs = open_bytes_result(&img).expect("open reads the root record, not its index");
    for r in [
        fs.read_dir(&GuestPath::root()).map(|_| ()),
        fs.lstat(&gp("/hello.txt")).map(|_| ()),
    ] {
        match r {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("expected corruption, got {other:?}"),
        }
    }
    // Open itself still works for the other files' records.
    assert_eq!(fs.info().label.as_deref(), Some("RehostTest"));
}

fn open_bytes_result(bytes: &[u8]) -> Result<NtfsFs> {
    NtfsFs::open(Arc::new(MemDisk::from_vec(bytes.to_vec())))
}

/// An index whose subnode points back at its own record must be reported, not walked forever
/// (the crate's own iterator would loop inside one call).
#[test]
fn index_subnode_cycle_is_corrupt() {
    let Some(seed) = fuzz_seed() else { return };
    let fs = open_bytes(seed);
    assert_eq!(names(&fs, "/Many").len(), FUZZ_MANY);
    // Find /Many's INDX record (vcn 0) and point every subnode VCN in it at itself: entries with
    // HAS_SUBNODE (flag 1 at +12) keep their VCN in the last 8 bytes of the entry.
    let mut img = seed.to_vec();
    let indx = (0..img.len() / 4096).map(|c| c * 4096).find(|&o| {
        &img[o..o + 4] == b"INDX" && {
            // Skip the root directory's index (which holds "hello.txt").
            !img[o..o + 4096]
                .windows(18)
                .any(|w| w == utf16("hello.txt").as_slice())
        }
    });
    let Some(indx) = indx else {
        panic!("no INDX record for /Many in the seed")
    };
    // Make the record claim subnodes, and the first entry point to vcn 0 (itself).
    let node = indx + 24;
    let first = node
        + usize::try_from(u32::from_le_bytes(img[node..node + 4].try_into().unwrap())).unwrap();
    let len = usize::from(u16::from_le_bytes([img[first + 8], img[first + 9]]));
    // Grow nothing: reuse the entry's last 8 bytes as the VCN (the name is long enough).
    img[first + 12] |= 1;
    img[first + len - 8..first + len].copy_from_slice(&0i64.to_le_bytes());
    let fs = open_bytes(&img);
    match fs.read_dir(&gp("/Many")) {
        Err(Error::Corrupt { detail, .. }) => {
            assert_eq!(detail, "index record at vcn 0 is referenced twice (cycle)")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn dev_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<NtfsFs>();
    let _: Arc<dyn BlockRead> = Arc::new(MemDisk::from_vec(Vec::new()));
}

/// Development aid: walks the NTFS image named by `REHOST_NTFS_IMAGE`, prints every entry and
/// checks that every listed entry can be `lstat`ed
/// (`cargo test -p rehost-fs walk_external -- --ignored --nocapture`).
#[test]
#[ignore = "needs REHOST_NTFS_IMAGE"]
fn walk_external_image() {
    let Some(path) = std::env::var_os("REHOST_NTFS_IMAGE") else {
        println!("skipping: REHOST_NTFS_IMAGE not set");
        return;
    };
    let dev = disk::raw::RawFile::open(&path, disk::open::Access::ReadOnly).unwrap();
    let fs = NtfsFs::open(Arc::new(dev)).unwrap();
    println!("{:?} {:?}", fs.info(), fs.volume_flags());
    let mut stack = vec![GuestPath::root()];
    while let Some(dir) = stack.pop() {
        let entries = match fs.read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                println!("{dir}: read_dir: {e}");
                continue;
            }
        };
        for e in entries {
            let p = dir.join_name(&e.name).unwrap();
            let md = fs.lstat(&p);
            let extra = match (&md, e.file_type) {
                (_, FileType::Symlink) => format!(
                    "-> {:?}",
                    fs.read_link(&p)
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                ),
                (Ok(m), FileType::Regular | FileType::Other) => {
                    let mut buf = vec![0u8; usize::try_from(m.size.min(1 << 20)).unwrap()];
                    format!(
                        "read {:?}",
                        fs.read_at(&p, 0, &mut buf).map_err(|e| e.to_string())
                    )
                }
                _ => String::new(),
            };
            println!(
                "{p} {:?} {:?} {extra}",
                e.file_type,
                md.map(|m| (m.size, m.ino))
            );
            if e.file_type == FileType::Directory && !p.to_string().starts_with("/$") {
                stack.push(p);
            }
        }
    }
}
