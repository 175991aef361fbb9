//! Tests against volumes made by `mkntfs`, checked with the independent ntfs-3g tools
//! (`ntfsfix -n`, `ntfscat`, `ntfsls`), plus the refusals on crafted `$LogFile`/`hiberfil.sys`
//! states with the device hashed before and after.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::block::{BlockRead, BlockWrite};
use disk::mem::MemDisk;
use disk::open::Access;
use disk::raw::RawFile;

use super::*;

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn have_tools() -> bool {
    for t in ["mkntfs", "ntfsfix", "ntfscat", "ntfsls"] {
        if !have(t) {
            println!("skipping: {t} not found");
            return false;
        }
    }
    true
}

/// A fresh NTFS volume of `mib` MiB in `dir`.
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

fn open(img: &Path) -> Arc<dyn BlockWrite> {
    Arc::new(RawFile::open(img, Access::ReadWrite).expect("open image"))
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
        !text.contains("FAILED") && !text.to_lowercase().contains("error"),
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

#[test]
fn errors_read_well() {
    let e = Error::Ntfs3g {
        op: "/a".into(),
        errno: libc::ENOSPC,
    };
    assert_eq!(
        e.to_string(),
        "/a: no space left on device (libntfs-3g errno 28)"
    );
    let r = Error::Refused(Refusal::NtfsHibernated).to_string();
    assert!(
        r.starts_with("refusing to modify the filesystem: windows is hibernated"),
        "{r}"
    );
    let r = Error::Refused(Refusal::NtfsLogFileUnclean).to_string();
    assert!(r.contains("$LogFile is not clean"), "{r}");
}

#[test]
fn time_conversion_round_trips() {
    assert_eq!(unix_time(NTFS_EPOCH_OFFSET as u64), 0);
    assert_eq!(ntfs_time(0), NTFS_EPOCH_OFFSET as u64);
    assert_eq!(unix_time(ntfs_time(1_700_000_000)), 1_700_000_000);
    // Before 1601 clamps to 0 instead of wrapping.
    assert_eq!(ntfs_time(-20_000_000_000), 0);
}

#[test]
fn paths_and_names_are_checked() {
    assert!(matches!(split("a/b"), Err(Error::Usage(_))));
    assert_eq!(split("/a//b/./c").expect("absolute"), ["a", "b", "c"]);
    let long = "x".repeat(256);
    assert!(matches!(
        to_units(&long, "/x"),
        Err(Error::TooLarge {
            len: 256,
            limit: 255,
            ..
        })
    ));
    assert_eq!(
        to_units(&"é".repeat(255), "/x").expect("255 units").len(),
        255
    );
    assert!(matches!(to_units("a\0b", "/x"), Err(Error::Usage(_))));
}

#[test]
fn not_ntfs_is_an_error_and_untouched() {
    let dev = Arc::new(MemDisk::zeroed(8 << 20).expect("memdisk"));
    let before = hash(&*dev);
    let e = Ntfs3g::mount(dev.clone(), &MountOptions::new())
        .err()
        .expect("zeros are not ntfs");
    assert!(
        matches!(e, Error::Ntfs3g { ref op, .. } if op == "mount"),
        "{e:?}"
    );
    assert_eq!(hash(&*dev), before);
}

#[test]
fn basic_operations_round_trip_through_ntfs_3g_tools() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 64);
    let fs = Ntfs3g::mount(open(&img), &MountOptions::new()).expect("mount");
    fs.create("/Dir", NewKind::Directory).expect("mkdir");
    fs.create("/Dir/file.txt", NewKind::File).expect("create");
    fs.write_at("/Dir/file.txt", 0, b"hello ntfs")
        .expect("write");
    fs.write_at("/Dir/file.txt", 20, b"!")
        .expect("write past end");
    let st = fs.stat("/dir/FILE.TXT").expect("case-insensitive stat");
    assert_eq!(st.size, 21);
    assert!(!st.is_dir);
    assert_eq!(st.nlink, 1);
    assert!(st.mft_no >= FILE_FIRST_USER);
    let mut buf = [0xffu8; 32];
    assert_eq!(fs.read_at("/Dir/file.txt", 0, &mut buf).expect("read"), 21);
    assert_eq!(&buf[..21], b"hello ntfs\0\0\0\0\0\0\0\0\0\0!");
    assert!(matches!(
        fs.create("/DIR/File.TXT", NewKind::File),
        Err(Error::Exists { .. })
    ));
    fs.create("/Dir/gone", NewKind::File).expect("create");
    fs.unlink("/Dir/gone").expect("unlink");
    assert!(matches!(fs.stat("/Dir/gone"), Err(Error::NotFound { .. })));
    fs.create("/Empty", NewKind::Directory).expect("mkdir");
    assert!(matches!(fs.rmdir("/Dir"), Err(Error::NotEmpty { .. })));
    assert!(matches!(
        fs.unlink("/Empty"),
        Err(Error::IsADirectory { .. })
    ));
    assert!(matches!(
        fs.rmdir("/Dir/file.txt"),
        Err(Error::NotADirectory { .. })
    ));
    fs.rmdir("/Empty").expect("rmdir");
    fs.rename("/Dir/file.txt", "/moved.txt").expect("rename");
    fs.rename("/moved.txt", "/MOVED.txt")
        .expect("case-only rename");
    fs.rename("/Dir", "/Dir2").expect("rename dir");
    assert!(matches!(
        fs.rename("/Dir2", "/Dir2/sub"),
        Err(Error::Usage(_))
    ));
    assert!(matches!(fs.unlink("/$MFT"), Err(Error::Usage(_))));
    fs.truncate("/MOVED.txt", 5).expect("truncate");
    fs.set_times("/MOVED.txt", None, Some(1_600_000_000))
        .expect("set mtime");
    assert_eq!(fs.stat("/MOVED.txt").expect("stat").mtime, 1_600_000_000);
    let names: Vec<String> = fs
        .read_dir("/", 1000)
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"MOVED.txt".to_owned()), "{names:?}");
    assert!(names.contains(&"Dir2".to_owned()), "{names:?}");
    assert!(names.contains(&"$MFT".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n == "." || n == ".."), "{names:?}");
    assert!(matches!(
        fs.read_dir("/", 3),
        Err(Error::TooLarge { limit: 3, .. })
    ));
    fs.umount().expect("umount");
    ntfsfix_clean(&img);
    assert_eq!(ntfscat(&img, "/MOVED.txt"), b"hello");
    let ls = Command::new("ntfsls")
        .args(["-f"])
        .arg(&img)
        .output()
        .expect("ntfsls");
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.contains("MOVED.txt") && ls.contains("Dir2"), "{ls}");
    assert!(!ls.contains("file.txt") && !ls.contains("Empty"), "{ls}");
}

#[test]
fn read_only_mount_writes_nothing() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 16);
    let dev = open(&img);
    let before = hash(&*dev);
    let fs = Ntfs3g::mount(dev.clone(), &MountOptions::new().read_only(true)).expect("mount ro");
    assert!(fs.stat("/").expect("root").is_dir);
    assert!(matches!(
        fs.create("/x", NewKind::File),
        Err(Error::Usage(_))
    ));
    fs.umount().expect("umount");
    assert_eq!(hash(&*dev), before);
}

/// Rewrites both `$LogFile` restart pages of a volume image (found by their `RSTR` magic at
/// 4 KiB-aligned offsets) with `edit(page)`.
fn edit_restart_pages(img: &mut [u8], edit: impl Fn(&mut [u8])) -> usize {
    let mut n = 0;
    let mut at = 0;
    while at + 4096 <= img.len() {
        if &img[at..at + 4] == b"RSTR" {
            edit(&mut img[at..at + 4096]);
            n += 1;
        }
        at += 4096;
    }
    n
}

/// `logfile.h`: `RESTART_PAGE_HEADER.restart_area_offset` (le16 at 24), `minor_ver` (26),
/// `major_ver` (28); `RESTART_AREA.flags` (le16 at 14), `RESTART_VOLUME_IS_CLEAN` 0x0002.
const RA_OFFSET: usize = 24;
const RA_FLAGS: usize = 14;

fn windows_volume() -> Option<Vec<u8>> {
    let path = std::env::var_os("HOME")
        .map(PathBuf::from)?
        .join(".cache/rehost/fixtures/dissect-ntfs-3.16-ntfs.bin");
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(_) => {
            println!(
                "skipping: {} not cached (the guestfs ntfs tests fetch it)",
                path.display()
            );
            None
        }
    }
}

#[test]
fn unclean_logfile_is_refused_without_writing() {
    let Some(mut img) = windows_volume() else {
        return;
    };
    let pages = edit_restart_pages(&mut img, |p| {
        let ra = usize::from(u16::from_le_bytes([p[RA_OFFSET], p[RA_OFFSET + 1]]));
        p[ra + RA_FLAGS] &= !0x02;
    });
    assert_eq!(pages, 2);
    let dev = Arc::new(MemDisk::from_vec(img));
    let before = hash(&*dev);
    let e = Ntfs3g::mount(dev.clone(), &MountOptions::new())
        .err()
        .expect("refused");
    assert!(
        matches!(e, Error::Refused(Refusal::NtfsLogFileUnclean)),
        "{e:?}"
    );
    assert_eq!(hash(&*dev), before);
    // Read-only still works.
    let fs = Ntfs3g::mount(dev.clone(), &MountOptions::new().read_only(true)).expect("ro");
    assert!(fs.stat("/Large Directory").expect("stat").is_dir);
    drop(fs);
    assert_eq!(hash(&*dev), before);
}

#[test]
fn fast_startup_logfile_is_refused_without_writing() {
    let Some(mut img) = windows_volume() else {
        return;
    };
    // Windows 8+ Fast Startup leaves a version 2.0 restart page.
    let pages = edit_restart_pages(&mut img, |p| {
        p[26..28].copy_from_slice(&0i16.to_le_bytes());
        p[28..30].copy_from_slice(&2i16.to_le_bytes());
    });
    assert_eq!(pages, 2);
    let dev = Arc::new(MemDisk::from_vec(img));
    let before = hash(&*dev);
    let e = Ntfs3g::mount(dev.clone(), &MountOptions::new())
        .err()
        .expect("refused");
    assert!(
        matches!(e, Error::Refused(Refusal::NtfsHibernated)),
        "{e:?}"
    );
    assert_eq!(hash(&*dev), before);
}

#[test]
fn hiberfil_is_refused_without_writing() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 16);
    let fs = Ntfs3g::mount(open(&img), &MountOptions::new()).expect("mount");
    fs.create("/hiberfil.sys", NewKind::File).expect("create");
    let mut hdr = vec![0u8; 4096];
    hdr[..4].copy_from_slice(b"HIBR");
    fs.write_at("/hiberfil.sys", 0, &hdr).expect("write");
    fs.umount().expect("umount");
    let dev = open(&img);
    let before = hash(&*dev);
    let e = Ntfs3g::mount(dev.clone(), &MountOptions::new())
        .err()
        .expect("refused");
    assert!(
        matches!(e, Error::Refused(Refusal::NtfsHibernated)),
        "{e:?}"
    );
    assert_eq!(hash(&*dev), before);
}

/// Hostile volumes: byte flips in the boot sector and the first MFT records of a populated
/// volume (a fixed-seed PRNG) must give errors, never a panic or a crash, through mount,
/// listing, reading and writing.
#[test]
fn mutated_volumes_fail_cleanly() {
    if !have_tools() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let img = mkntfs(dir.path(), 8);
    let fs = Ntfs3g::mount(open(&img), &MountOptions::new()).expect("mount");
    fs.create("/d", NewKind::Directory).expect("mkdir");
    for i in 0..40 {
        let p = format!("/d/f{i}");
        fs.create(&p, NewKind::File).expect("create");
        fs.write_at(&p, 0, &vec![u8::try_from(i).expect("small"); 3000])
            .expect("write");
    }
    fs.umount().expect("umount");
    let good = std::fs::read(&img).expect("read");
    let cluster = u64::from(u16::from_le_bytes([good[0x0b], good[0x0c]])) * u64::from(good[0x0d]);
    let mft = usize::try_from(
        u64::from_le_bytes(good[0x30..0x38].try_into().expect("8 bytes")) * cluster,
    )
    .expect("fits");
    let mut seed = 0x6d75_7461_7465_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut outcomes = [0usize; 2];
    for _ in 0..300 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 8 {
            let at = if next() % 8 == 0 {
                usize::try_from(next() % 512).expect("fits")
            } else {
                mft + usize::try_from(next() % (64 * 1024)).expect("fits")
            };
            bytes[at] ^= u8::try_from(1 + next() % 255).expect("byte");
        }
        let dev = Arc::new(MemDisk::from_vec(bytes));
        let Ok(fs) = Ntfs3g::mount(dev, &MountOptions::new()) else {
            outcomes[0] += 1;
            continue;
        };
        outcomes[1] += 1;
        for d in ["/", "/d"] {
            if let Ok(entries) = fs.read_dir(d, 10_000) {
                for e in entries.iter().take(50) {
                    let p = if d == "/" {
                        format!("/{}", e.name)
                    } else {
                        format!("{d}/{}", e.name)
                    };
                    let _ = fs.stat(&p);
                    let mut buf = [0u8; 4096];
                    let _ = fs.read_at(&p, 0, &mut buf);
                }
            }
        }
        let _ = fs.create("/d/new", NewKind::File);
        let _ = fs.write_at("/d/new", 0, b"x");
        let _ = fs.rename("/d/f1", "/g1");
        let _ = fs.unlink("/d/f2");
        let _ = fs.umount();
    }
    // Both outcomes occur: the mutations reach what libntfs-3g checks and what it uses.
    assert!(outcomes.iter().all(|&n| n > 0), "{outcomes:?}");
}
