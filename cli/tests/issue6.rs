//! `rehost drivers list` (issue 6, item 1): the catalog of a virtio-win tree, and the choice for
//! an inspected Windows image with the reason.

use std::process::Command;

fn rehost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rehost"))
}

#[test]
fn issue6_drivers_list_for_an_inspected_windows_image() {
    let dir = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(dir.path())
        .unwrap();
    let win = images::build("win2019-bios").unwrap();

    let out = rehost()
        .arg("drivers")
        .arg("list")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("viostor"), "{text}");

    let out = rehost()
        .args(["drivers", "list", "--json", "--for"])
        .arg(&win)
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v.to_string();
    assert!(
        s.contains("2k19"),
        "Windows Server 2019 must map to the 2k19 folder: {s}"
    );
    assert!(s.contains("viostor"), "{s}");

    // The environment variable virt-v2v users know names the source too.
    let out = rehost()
        .args(["drivers", "list", "--for"])
        .arg(&win)
        .env("VIRTIO_WIN", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A Linux disk is refused with a reason.
    let deb = images::build("debian12-vmware").unwrap();
    let out = rehost()
        .args(["drivers", "list", "--for"])
        .arg(&deb)
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Windows installation"));
}
