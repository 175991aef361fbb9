//! Issue 5 acceptance, the XFS part of the RHEL layouts: rehost plans fixes for XFS guests (see
//! `fixers/tests/layouts.rs`) but has no XFS writer yet, so the library refuses to open an XFS
//! volume for writing with an error naming XFS, and `rehost fixup` on the RHEL builder images
//! exits 1 with a message naming what it cannot write (XFS; on the RHEL 7 image, whose root is
//! on LVM, the LVM volume comes first), leaving the image byte for byte as it was.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rehost"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether two files hold the same bytes (read in 1 MiB chunks: the images are ~750 MB).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// Opens every XFS partition of `img` for writing through `guestfs::open_rw`; returns how many
/// were refused with `Unsupported` naming xfs (any other outcome fails the test).
fn xfs_partitions_refused(img: &Path) -> usize {
    let dev = Arc::new(disk::raw::RawFile::open(img, disk::open::Access::ReadWrite).unwrap());
    let table = disk::partition::read_table(&*dev).unwrap();
    let mut refused = 0;
    for p in &table.partitions {
        let part = Arc::new(disk::Slice::new(dev.clone(), p.start, p.len).unwrap());
        let Ok(probe) = guestfs::probe(&*part) else {
            continue;
        };
        if probe.kind != guestfs::FsKind::Xfs {
            continue;
        }
        match guestfs::open_rw(part, guestfs::write::WriteOptions::default()) {
            Err(e @ guestfs::Error::Unsupported { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("no trusted writer for xfs"),
                    "partition {}: {msg}",
                    p.number
                );
                refused += 1;
            }
            Err(e) => panic!("partition {}: unexpected error {e:?}", p.number),
            Ok(_) => panic!("partition {}: XFS opened for writing", p.number),
        }
    }
    refused
}

fn fixup_refused(image: &str, expect_in_err: &str) {
    let original = images::build(image).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::copy(&original, &img).unwrap();

    assert!(
        xfs_partitions_refused(&img) >= 1,
        "{image}: has an XFS partition"
    );
    assert!(same_bytes(&img, &original), "{image}: open_rw wrote");

    // The plan is made (and printed), then opening the guest for writing fails: exit 1, the
    // disk rolled back, the reason named.
    let (code, out, err) = run(&["fixup", img.to_str().unwrap()]);
    assert_eq!(code, 1, "{image}: {out}\n{err}");
    assert!(
        out.contains("step 5: initramfs"),
        "{image}: plan printed: {out}"
    );
    assert!(err.contains("rolled back"), "{image}: {err}");
    assert!(err.contains(expect_in_err), "{image}: {err}");
    assert!(
        same_bytes(&img, &original),
        "{image}: fixup changed the image"
    );

    // --dry-run needs no writer: it plans, exits 0 and writes nothing.
    let (code, out, err) = run(&["fixup", "--dry-run", img.to_str().unwrap()]);
    assert_eq!(code, 0, "{image}: {err}");
    assert!(
        out.contains("/etc/dracut.conf.d/rehost-virtio.conf"),
        "{out}"
    );
    assert!(
        same_bytes(&img, &original),
        "{image}: --dry-run changed the image"
    );
}

#[test]
fn issue5_rhel9_xfs_root_is_refused_clearly() {
    fixup_refused(
        "rhel9-uefi",
        "unsupported filesystem writing: no trusted writer for xfs filesystems",
    );
}

#[test]
fn issue5_rhel7_lvm_xfs_is_refused_clearly() {
    // The root is an XFS volume on LVM: the LVM volume is refused first.
    fixup_refused("rhel7-lvm", "LVM volumes are not written yet");
}
