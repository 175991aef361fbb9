//! The real read and write paths for the hypervisor-tools and selinux fixers: the
//! `rhel9-vmware-selinux` golden guest in an ext4 image (`mke2fs -d`, SELinux labels set with
//! `debugfs`), planned through `guestfs::ext4::Ext4Fs` (symlinked `/lib`, `/sbin/init`, unit
//! links), applied through `FsApplier` over the ext4 writer, checked with `e2fsck` and planned
//! again. New files must carry their directory's label, as the `inherit` mode promises.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use disk::open::Access;
use disk::raw::RawFile;
use fixers::testkit::{SyntheticOs, synthetic_report};
use fixers::{FsApplier, PlanOptions, RecipeSet, apply, plan};
use guestfs::GuestPath;
use guestfs::ext4::Ext4Fs;

const ROOT_UUID: &str = "11111111-2222-3333-4444-555555555555";
const SELINUX: &[u8] = b"security.selinux";

fn gp(p: &str) -> GuestPath {
    GuestPath::parse(p.as_bytes()).unwrap()
}

fn run(cmd: &mut Command) -> Option<String> {
    match cmd.output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "{cmd:?}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Err(_) => None,
    }
}

#[test]
fn ext4_guest_with_vmware_tools_and_selinux_plans_applies_and_labels() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/rhel9-vmware-selinux");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("root.img");
    let made = run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-I", "256", "-U", ROOT_UUID, "-d"])
        .arg(case.join("input"))
        .arg(&img)
        .arg("16M"));
    if made.is_none() {
        eprintln!("skipping: mke2fs not found");
        return;
    }
    // Labels as a RHEL 9 install has them on the directories the fixers write into.
    let labels = [
        ("/", "system_u:object_r:root_t:s0"),
        (
            "/etc/systemd/system",
            "system_u:object_r:systemd_unit_file_t:s0",
        ),
        (
            "/etc/systemd/system/multi-user.target.wants",
            "system_u:object_r:systemd_unit_file_t:s0",
        ),
        ("/usr/libexec", "system_u:object_r:bin_t:s0"),
    ];
    for (p, l) in labels {
        let set = run(Command::new("debugfs")
            .arg("-w")
            .arg("-R")
            .arg(format!("ea_set {p} security.selinux {l}"))
            .arg(&img));
        if set.is_none() {
            eprintln!("skipping: debugfs not found");
            return;
        }
    }

    let report = synthetic_report(&SyntheticOs::new("rocky", 9, 3));
    let os = &report.operating_systems[0];
    let set = RecipeSet::shipped().unwrap();
    let recipe = set.get("el").unwrap();
    let opts = PlanOptions::default();

    // Read path: the same plan as the in-memory golden guest.
    let ro = Ext4Fs::open(Arc::new(RawFile::open(&img, Access::ReadOnly).unwrap())).unwrap();
    let p = plan(recipe, &report, os, &ro, &opts).unwrap();
    let golden = std::fs::read_to_string(case.join("plan.json")).unwrap();
    let json = p.to_json() + "\n";
    assert!(
        json == golden,
        "plan differs from the golden one:\n{}",
        fixers::diff::unified("/plan.json", &golden, &json, 3, 200)
    );
    drop(ro);

    // Write path.
    let dev = Arc::new(RawFile::open(&img, Access::ReadWrite).unwrap());
    let rw = guestfs::open_rw(dev, guestfs::write::WriteOptions::new()).unwrap();
    let n = apply(&p, &mut FsApplier::new(&*rw)).unwrap();
    assert_eq!(n, p.changes().count());
    rw.flush().unwrap();
    let label = |path: &str| {
        rw.get_xattr(&gp(path), SELINUX)
            .unwrap()
            .map(|l| String::from_utf8(l).unwrap())
    };
    for (path, want) in [
        ("/usr/libexec/rehost", "system_u:object_r:bin_t:s0"),
        (
            "/usr/libexec/rehost/firstboot.sh",
            "system_u:object_r:bin_t:s0",
        ),
        (
            "/etc/systemd/system/rehost-firstboot.service",
            "system_u:object_r:systemd_unit_file_t:s0",
        ),
        ("/.autorelabel", "system_u:object_r:root_t:s0"),
    ] {
        assert_eq!(label(path).as_deref(), Some(want), "{path}");
    }
    assert_eq!(
        rw.read_link(&gp("/etc/systemd/system/vmtoolsd.service"))
            .unwrap(),
        b"/dev/null"
    );
    assert_eq!(
        rw.lstat(&gp("/usr/libexec/rehost/firstboot.sh"))
            .unwrap()
            .mode
            & 0o7777,
        0o755
    );
    assert!(
        rw.lstat(&gp(
            "/etc/systemd/system/multi-user.target.wants/vmtoolsd.service"
        ))
        .is_err()
    );
    drop(rw);

    if run(Command::new("e2fsck").args(["-fn"]).arg(&img)).is_none() {
        eprintln!("skipping the fsck: e2fsck not found");
    }
    let ro = Ext4Fs::open(Arc::new(RawFile::open(&img, Access::ReadOnly).unwrap())).unwrap();
    let again = plan(recipe, &report, os, &ro, &opts).unwrap();
    assert!(again.is_empty(), "{}", again.render_human());
}
