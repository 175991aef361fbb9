//! NTFS writing on the Windows builder images (issue 3): the hibernated `win2012r2-bios` is
//! refused, forced or not, with no byte of the disk changed; `win2016-uefi` (an inactive,
//! zeroed `hiberfil.sys`) and `win2019-bios` take a write that the ntfs-3g tools read back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use disk::open::Access;
use disk::partition::{Partition, read_table};
use disk::raw::RawFile;
use disk::{BlockRead, BlockWrite, Slice};
use guestfs::write::{NewFileAttrs, WriteOptions};
use guestfs::{FsKind, FsReadExt, GuestPath};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A sparse copy of builder image `name` in `dir`, or `None` (printed) without root.
fn image_copy(name: &str, dir: &Path) -> Option<PathBuf> {
    if images::needs_root(name).unwrap_or(false) && !is_root() {
        eprintln!("skipping: building {name} needs root");
        return None;
    }
    let built = images::build(name).unwrap_or_else(|e| panic!("build {name}: {e}"));
    let copy = dir.join(format!("{name}.raw"));
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&built)
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp {}", built.display());
    Some(copy)
}

/// The disk's NTFS partitions, as writable views.
fn ntfs_partitions(disk: &Arc<dyn BlockWrite>) -> Vec<(Partition, Arc<dyn BlockWrite>)> {
    let table = read_table(&**disk).expect("partition table");
    table
        .partitions
        .into_iter()
        .filter_map(|p| {
            let view: Arc<dyn BlockWrite> =
                Arc::new(Slice::new(disk.clone(), p.start, p.len).expect("partition view"));
            let kind = guestfs::probe(&*view).ok()?.kind;
            (kind == FsKind::Ntfs).then_some((p, view))
        })
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

fn has_hiberfil(view: &Arc<dyn BlockWrite>) -> bool {
    let read: Arc<dyn BlockRead> = view.clone();
    let fs = guestfs::ntfs::NtfsFs::open(read).expect("ntfs reads");
    fs.exists(b"/hiberfil.sys").expect("lookup")
}

#[test]
fn hibernated_windows_is_refused_and_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(img) = image_copy("win2012r2-bios", dir.path()) else {
        return;
    };
    let disk: Arc<dyn BlockWrite> = Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
    let before = hash(&*disk);
    let parts = ntfs_partitions(&disk);
    let (root, view) = parts
        .iter()
        .find(|(_, v)| has_hiberfil(v))
        .expect("the hibernated windows partition");
    for force in [false, true] {
        match guestfs::open_rw(view.clone(), WriteOptions::new().force(force)) {
            Err(guestfs::Error::Unclean { what, detail }) => {
                assert_eq!(what, "ntfs volume");
                assert!(detail.contains("hibernated"), "{detail}");
                assert!(detail.contains("shut it down fully"), "{detail}");
            }
            Err(e) => panic!("partition {}: expected Unclean, got {e:?}", root.number),
            Ok(_) => panic!(
                "partition {}: a hibernated volume opened for writing",
                root.number
            ),
        }
    }
    assert_eq!(hash(&*disk), before, "the disk changed");
}

/// Copies partition `p` of `img` into its own file, for the ntfs-3g tools.
fn extract(img: &Path, p: &Partition, out: &Path) {
    let src = RawFile::open(img, Access::ReadOnly).expect("open");
    let mut f = std::fs::File::create(out).expect("create");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < p.len {
        let n = usize::try_from((p.len - off).min(1 << 20)).expect("chunk fits");
        src.read_exact_at(p.start + off, &mut buf[..n])
            .expect("read");
        std::io::Write::write_all(&mut f, &buf[..n]).expect("write");
        off += n as u64;
    }
}

#[test]
fn clean_windows_takes_a_write_the_ntfs_3g_tools_read_back() {
    if !e2e::have_tool("ntfscat", "reading back") || !e2e::have_tool("ntfsfix", "checking") {
        return;
    }
    for name in ["win2016-uefi", "win2019-bios"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let Some(img) = image_copy(name, dir.path()) else {
            return;
        };
        let disk: Arc<dyn BlockWrite> =
            Arc::new(RawFile::open(&img, Access::ReadWrite).expect("open"));
        let parts = ntfs_partitions(&disk);
        let (root, view) = parts
            .iter()
            .find(|(_, v)| {
                let read: Arc<dyn BlockRead> = v.clone();
                guestfs::ntfs::NtfsFs::open(read)
                    .is_ok_and(|fs| fs.exists(b"/Windows/System32").unwrap_or(false))
            })
            .cloned()
            .unwrap_or_else(|| panic!("{name}: no windows partition"));
        let fs = guestfs::open_rw(view.clone(), WriteOptions::new()).expect("open_rw");
        same_as_reader(name, &view, &*fs);
        let path = GuestPath::parse(b"/Windows/Temp/rehost-e2e.txt").expect("path");
        fs.write_file(&path, b"written by rehost\r\n", &NewFileAttrs::file())
            .expect("write");
        fs.flush().expect("flush");
        drop(fs);
        drop(parts);
        drop(disk);
        let part = dir.path().join("part.img");
        extract(&img, &root, &part);
        let out = Command::new("ntfscat")
            .arg(&part)
            .arg("/Windows/Temp/rehost-e2e.txt")
            .output()
            .expect("ntfscat");
        assert_eq!(out.stdout, b"written by rehost\r\n", "{name}: {out:?}");
        let fix = Command::new("ntfsfix")
            .arg("-n")
            .arg(&part)
            .output()
            .expect("ntfsfix");
        let text = String::from_utf8_lossy(&fix.stdout);
        assert!(fix.status.success(), "{name}: ntfsfix -n: {text}");
        assert!(
            text.contains("was processed successfully"),
            "{name}: {text}"
        );
    }
}

/// The writer's read side (libntfs-3g) agrees with our own reader on a few directories: names,
/// types, sizes, times, link counts and symlink targets.
fn same_as_reader(name: &str, view: &Arc<dyn BlockWrite>, rw: &dyn guestfs::write::FsWrite) {
    use guestfs::{FileType, FsRead};
    let read: Arc<dyn BlockRead> = view.clone();
    let ro = guestfs::ntfs::NtfsFs::open(read).expect("reader");
    let mut links = 0;
    for dir in [
        "/",
        "/Windows",
        "/Windows/System32",
        "/ProgramData",
        "/Users",
    ] {
        let p = GuestPath::parse(dir.as_bytes()).expect("path");
        let Ok(mut want) = ro.read_dir(&p) else {
            continue;
        };
        let mut got = rw
            .read_dir(&p)
            .unwrap_or_else(|e| panic!("{name}: read_dir {dir}: {e}"));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        got.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(got, want, "{name}: listing of {dir}");
        for e in &want {
            let c = p.join_name(&e.name).expect("name");
            let (a, b) = (
                ro.lstat(&c).expect("reader lstat"),
                rw.lstat(&c).expect("rw lstat"),
            );
            assert_eq!(b, a, "{name}: lstat {c}");
            if a.file_type == FileType::Symlink {
                links += 1;
                assert_eq!(
                    rw.read_link(&c).ok(),
                    ro.read_link(&c).ok(),
                    "{name}: read_link {c}"
                );
            }
        }
    }
    eprintln!("{name}: {links} symlinks compared");
}
