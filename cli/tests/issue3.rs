//! Support-engineer commands (issue 3, item 4): `rehost ls|cat|stat` read guest files through
//! every backend; `rehost undo` restores an image byte for byte and `--dry-run` changes nothing.

use std::process::Command;
use std::sync::Arc;

fn rehost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rehost"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = rehost().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue3_cat_ls_stat_read_guest_files() {
    let deb = images::build("debian12-vmware").unwrap();
    let deb = deb.to_str().unwrap();
    let (code, out, err) = run(&["cat", &format!("{deb}:/etc/hostname")]);
    assert_eq!((code, out.as_str()), (0, "debian12-vm\n"), "{err}");

    // XFS root on LVM, /boot on its own XFS partition, seen through fstab's mounts.
    let rhel = images::build("rhel7-lvm").unwrap();
    let rhel = rhel.to_str().unwrap();
    let (code, out, err) = run(&["ls", &format!("{rhel}:/boot")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("vmlinuz-3.10.0-1160.el7.x86_64"), "{out}");
    let (code, out, _) = run(&["stat", "--json", &format!("{rhel}:/etc/redhat-release")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["device"], "/dev/rhel/root");
    assert_eq!(v["type"], "regular");

    // NTFS: case-insensitive lookup.
    let win = images::build("win2019-bios").unwrap();
    let win = win.to_str().unwrap();
    let (code, out, err) = run(&["ls", &format!("{win}:/WINDOWS/SYSTEM32")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cmd.exe"), "{out}");

    // A missing file and a missing device are errors that name what is missing.
    let (code, _, err) = run(&["cat", &format!("{deb}:/etc/nope")]);
    assert_eq!(code, 2);
    assert!(err.contains("/etc/nope"), "{err}");
    let (code, _, err) = run(&["ls", "--device", "/dev/sda9", deb]);
    assert_eq!(code, 2);
    assert!(err.contains("readable: /dev/sda1"), "{err}");
}

#[test]
fn issue3_undo_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::copy(images::build("debian12-vmware").unwrap(), &img).unwrap();
    let original = std::fs::read(&img).unwrap();
    let undo_file = disk::txn::undo_path_for(&img);

    // A change made through the transaction layer, committed.
    let dev = disk::raw::RawFile::open(&img, disk::open::Access::ReadWrite).unwrap();
    let t = disk::txn::Transaction::begin(Arc::new(dev), &undo_file).unwrap();
    disk::BlockWrite::write_all_at(&t, 1 << 20, &[0xee; 100_000]).unwrap();
    t.commit().unwrap();
    assert_ne!(std::fs::read(&img).unwrap(), original);

    let img_s = img.to_str().unwrap();
    let (code, out, err) = run(&["undo", "--dry-run", img_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("transaction committed"), "{out}");
    assert_ne!(
        std::fs::read(&img).unwrap(),
        original,
        "--dry-run changed the image"
    );

    let (code, out, err) = run(&["undo", img_s]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("restored "), "{out}");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        original,
        "undo is not byte-identical"
    );

    let (code, _, _) = run(&["undo", "--discard", img_s]);
    assert_eq!(code, 0);
    assert!(!undo_file.exists());
    let (code, _, err) = run(&["undo", img_s]);
    assert_eq!(code, 2);
    assert!(err.contains("has no undo file"), "{err}");
}

#[test]
fn issue3_damaged_undo_file_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.raw");
    std::fs::write(&img, vec![1u8; 1 << 20]).unwrap();
    let undo_file = disk::txn::undo_path_for(&img);
    let dev = disk::raw::RawFile::open(&img, disk::open::Access::ReadWrite).unwrap();
    let t = disk::txn::Transaction::begin_with_block_size(Arc::new(dev), &undo_file, 4096).unwrap();
    disk::BlockWrite::write_all_at(&t, 0, &[2; 10_000]).unwrap();
    t.commit().unwrap();
    let changed = std::fs::read(&img).unwrap();
    let mut u = std::fs::read(&undo_file).unwrap();
    u[40] ^= 0xff; // inside the first record's data
    std::fs::write(&undo_file, &u).unwrap();
    let (code, _, err) = run(&["undo", img.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("is damaged; nothing was changed"), "{err}");
    assert!(err.contains("record checksum mismatch"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), changed);
}
