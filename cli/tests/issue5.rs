//! `rehost recipe list|show|lint` (issue 5, item 1).

use std::process::Command;

fn rehost(args: &[&str]) -> (i32, String, String) {
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

#[test]
fn issue5_recipes_list_show_and_lint() {
    let (code, out, err) = rehost(&["recipe", "list"]);
    assert_eq!(code, 0, "{err}");
    for name in ["debian", "ubuntu", "el", "fedora", "suse"] {
        assert!(
            out.lines().any(|l| l.starts_with(name)),
            "{name} missing from {out}"
        );
    }
    let (code, out, _) = rehost(&["recipe", "show", "debian"]);
    assert_eq!(code, 0);
    assert!(out.contains("step 1: block-device-names"), "{out}");
    assert!(
        out.contains(r#"step 2: network {"policy":"preserve""#),
        "{out}"
    );

    let (code, out, _) = rehost(&["recipe", "lint"]);
    assert_eq!(
        (code, out.trim()),
        (0, "no issues"),
        "every shipped recipe lints clean"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "schema = 1\nname = \"x\"\ndescription = \"d\"\n[match]\nos_type = \"linux\"\n[[step]]\nfixer = \"nope\"\n",
    )
    .unwrap();
    let (code, out, _) = rehost(&["recipe", "lint", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("[unknown-fixer]"), "{out}");

    // A user recipe directory overrides a shipped recipe by name.
    let user = dir.path().join("user");
    std::fs::create_dir(&user).unwrap();
    std::fs::write(
        user.join("debian.toml"),
        "schema = 1\nname = \"debian\"\ndescription = \"site override\"\n[match]\nos_type = \"linux\"\ndistro = [\"debian\"]\n[[step]]\nfixer = \"console\"\n",
    )
    .unwrap();
    let (code, out, err) = rehost(&[
        "recipe",
        "--recipe-dir",
        user.to_str().unwrap(),
        "show",
        "debian",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("site override"), "{out}");

    let (code, _, err) = rehost(&["recipe", "show", "nosuch"]);
    assert_eq!(code, 2);
    assert!(err.contains("no recipe named \"nosuch\""), "{err}");
}

#[test]
fn issue5_fixup_dry_run_plans_and_writes_nothing() {
    let img = images::build("debian12-vmware").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("d.raw");
    std::fs::copy(&img, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let p = copy.to_str().unwrap();

    let (code, out, err) = rehost(&["fixup", "--dry-run", p]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("recipe debian for /dev/sda1"), "{out}");
    assert!(
        out.contains("+UUID=6a3c1f0e-2b7d-4c5e-9f10-1d2e3f4a5b6c / ext4"),
        "fstab must move to UUID=: {out}"
    );
    assert!(out.contains("+iface ens3 inet static"), "{out}");
    assert!(out.contains("console=ttyS0,115200"), "{out}");

    let (code, out, _) = rehost(&["fixup", "--dry-run", "--json", "--net", "dhcp", p]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recipe"], "debian");
    assert!(
        out.contains("inet dhcp"),
        "--net dhcp must reach the network fixer: {out}"
    );

    assert_eq!(
        std::fs::read(&copy).unwrap(),
        before,
        "--dry-run changed the image"
    );
    assert!(!disk::txn::undo_path_for(&copy).exists());
}

/// The ext4 filesystem of partition `n` of a raw image, copied out for the oracles.
fn partition_copy(image: &std::path::Path, n: u32, to: &std::path::Path) {
    let dev = disk::raw::RawFile::open(image, disk::open::Access::ReadOnly).unwrap();
    let table = disk::partition::read_table(&dev).unwrap();
    let p = table.partitions.iter().find(|p| p.number == n).unwrap();
    let bytes = std::fs::read(image).unwrap();
    let start = usize::try_from(p.start).unwrap();
    let end = start + usize::try_from(p.len).unwrap();
    std::fs::write(to, &bytes[start..end]).unwrap();
}

fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: {tool} not found");
    }
    found
}

#[test]
fn issue5_fixup_applies_verifies_and_is_idempotent_and_undoable() {
    if !have("e2fsck") {
        return;
    }
    let img = images::build("debian12-vmware").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("d.raw");
    std::fs::copy(&img, &copy).unwrap();
    let original = std::fs::read(&copy).unwrap();
    let p = copy.to_str().unwrap();

    let (code, out, err) = rehost(&["fixup", "--json", p]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["recipe"], "debian");
    assert_eq!(v["verified"], true, "{out}");
    let planned = v["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["changes"].as_array().unwrap().len())
        .sum::<usize>();
    assert!(planned > 0);
    assert_eq!(v["applied"].as_u64().unwrap(), planned as u64);
    let undo = disk::txn::undo_path_for(&copy);
    assert_eq!(v["undo_file"], undo.to_str().unwrap());
    assert_eq!(
        disk::txn::info(&undo).unwrap().state,
        disk::txn::State::Committed
    );

    // The guest's files say what the plan said, read back by our reader ...
    let (code, fstab, err) = rehost(&["cat", &format!("{p}:/etc/fstab")]);
    assert_eq!(code, 0, "{err}");
    assert!(
        fstab.contains("UUID=6a3c1f0e-2b7d-4c5e-9f10-1d2e3f4a5b6c / ext4"),
        "{fstab}"
    );
    assert!(!fstab.contains("/dev/sda1"), "{fstab}");
    // ... and by the independent oracles: e2fsck is clean, debugfs reads the same fstab.
    let part = dir.path().join("p1.ext4");
    partition_copy(&copy, 1, &part);
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&part)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck after fixup: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let cat = Command::new("debugfs")
        .arg("-R")
        .arg("cat /etc/fstab")
        .arg(&part)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&cat.stdout), fstab);

    // A second run plans nothing and writes nothing, even with the committed undo file there.
    let fixed = std::fs::read(&copy).unwrap();
    let (code, out, err) = rehost(&["fixup", p]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(std::fs::read(&copy).unwrap(), fixed, "second run wrote");

    // A second fix with a different policy would need the undo file replaced: refused.
    let (code, _, err) = rehost(&["fixup", "--net", "dhcp", p]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("rehost undo"), "{err}");
    assert_eq!(std::fs::read(&copy).unwrap(), fixed);

    // `rehost undo` brings back the original byte for byte.
    let (code, _, err) = rehost(&["undo", p]);
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&copy).unwrap() == original,
        "undo did not restore the original"
    );
}

#[test]
fn issue5_fixup_output_writes_an_overlay_and_leaves_the_source_alone() {
    if !have("qemu-img") {
        return;
    }
    let img = images::build("debian12-vmware").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("src.raw");
    std::fs::copy(&img, &copy).unwrap();
    let original = std::fs::read(&copy).unwrap();
    let out = dir.path().join("fixed.qcow2");
    let (code, stdout, err) = rehost(&[
        "fixup",
        "--json",
        "--output",
        out.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["output"], out.to_str().unwrap());
    assert!(v["applied"].as_u64().unwrap() > 0);
    assert!(
        std::fs::read(&copy).unwrap() == original,
        "the source changed"
    );
    assert!(!disk::txn::undo_path_for(&copy).exists());
    let check = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Reading an overlay needs its backing file allowed, explicitly.
    let target = format!("{}:/etc/fstab", out.display());
    let (code, _, err) = rehost(&["cat", &target]);
    assert_eq!(code, 2);
    assert!(err.contains("backing policy does not allow"), "{err}");
    let (code, fstab, err) = rehost(&["cat", "--allow-backing", "1", &target]);
    assert_eq!(code, 0, "{err}");
    assert!(
        fstab.contains("UUID=6a3c1f0e-2b7d-4c5e-9f10-1d2e3f4a5b6c / ext4"),
        "{fstab}"
    );
    // The overlay is fixed: planning it again finds nothing.
    let (code, plan, err) = rehost(&[
        "fixup",
        "--allow-backing",
        "1",
        "--dry-run",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("nothing to change"), "{plan}");
    // An existing output is refused unless --overwrite, and nothing changes.
    let before = std::fs::read(&out).unwrap();
    let (code, _, err) = rehost(&[
        "fixup",
        "--output",
        out.to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(std::fs::read(&out).unwrap() == before);
}

#[test]
fn issue5_fixup_rolls_back_an_interrupted_run_before_fixing() {
    use disk::BlockWrite;
    let img = images::build("debian12-vmware").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("d.raw");
    std::fs::copy(&img, &copy).unwrap();
    let original = std::fs::read(&copy).unwrap();
    // A run that died half-way: originals journaled, garbage written over the root
    // filesystem's first MiB (superblock included), no commit.
    {
        let dev = std::sync::Arc::new(
            disk::raw::RawFile::open(&copy, disk::open::Access::ReadWrite).unwrap(),
        );
        let txn = disk::txn::Transaction::begin(dev, &disk::txn::undo_path_for(&copy)).unwrap();
        txn.write_all_at(1 << 20, &vec![0xa5; 1 << 20]).unwrap();
        txn.flush().unwrap();
        std::mem::forget(txn);
    }
    assert!(std::fs::read(&copy).unwrap() != original);
    // Fixup rolls the interrupted run back first (saying so), then fixes the real guest.
    let (code, out, err) = rehost(&["fixup", "--json", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("was interrupted; rolled it back"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rolled_back_interrupted_run"], true);
    assert_eq!(v["verified"], true);
    // And its own undo file leads back to the original, not to the half-written state.
    let (code, _, err) = rehost(&["undo", copy.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&copy).unwrap() == original);
}
