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

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    let root = String::from_utf8_lossy(&out.stdout).trim() == "0";
    if !root {
        eprintln!("skipping: the Windows builder images need root (ntfs-3g mount)");
    }
    root
}

/// `rehost fixup --target kvm --virtio-win TREE` on Windows images: the plan is applied through
/// the undo journal, inspection afterwards reports viostor as a boot-start storage driver, a
/// second run plans nothing and `rehost undo` restores the image byte for byte. Per-version
/// registry goldens, ntfs-3g read-back and the real SYSTEM hive are in fixers/tests/windows.rs.
#[test]
fn issue6_fixup_injects_viostor_verifies_is_idempotent_and_undoable() {
    if !is_root() {
        return;
    }
    let tree = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(tree.path())
        .unwrap();
    for name in ["win2008r2-bios", "win2022-uefi"] {
        let img = images::build(name).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("w.raw");
        std::fs::copy(&img, &copy).unwrap();
        let original = std::fs::read(&copy).unwrap();
        let p = copy.to_str().unwrap();

        // A dry run shows the registry changes as .reg text and writes nothing.
        let out = rehost()
            .args(["fixup", "--dry-run", "--target", "kvm", "--virtio-win"])
            .arg(tree.path())
            .arg(p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("edit registry hive"), "{name}: {text}");
        assert!(text.contains("Services\\viostor]"), "{name}: {text}");
        assert!(
            std::fs::read(&copy).unwrap() == original,
            "{name}: dry run wrote"
        );

        let out = rehost()
            .args(["fixup", "--json", "--target", "kvm", "--virtio-win"])
            .arg(tree.path())
            .arg(p)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["recipe"], "windows", "{name}");
        assert_eq!(v["verified"], true, "{name}");
        assert!(v["applied"].as_u64().unwrap() > 0, "{name}");

        let out = rehost().args(["inspect", "--json", p]).output().unwrap();
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let drivers = r["operating_systems"][0]["windows"]["drivers"]
            .as_array()
            .unwrap();
        let viostor = drivers
            .iter()
            .find(|d| {
                d["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("viostor"))
            })
            .unwrap_or_else(|| panic!("{name}: viostor not reported: {drivers:?}"));
        assert_eq!(viostor["start"], 0, "{name}");
        assert_eq!(viostor["role"], "storage", "{name}");

        // A second run plans nothing: the guest is fixed.
        let fixed = std::fs::read(&copy).unwrap();
        let out = rehost()
            .args(["fixup", "--virtio-win"])
            .arg(tree.path())
            .arg(p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{name}: {text}");
        assert!(text.contains("nothing to change"), "{name}: {text}");
        assert!(
            std::fs::read(&copy).unwrap() == fixed,
            "{name}: second run wrote"
        );

        let out = rehost().args(["undo", p]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}");
        assert!(std::fs::read(&copy).unwrap() == original, "{name}: undo");
    }
}
