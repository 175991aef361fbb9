//! Tests of the built images against independent tools: the partition table as `sfdisk -d`
//! reads it, each filesystem through its own checker (`e2fsck -fn`, `xfs_repair -n -f`,
//! `fsck.vfat -n`, `ntfsfix -n`, `btrfs check --readonly`), every file of the plan read back
//! (debugfs, btrfs restore, mtools, ntfscat, xfs_db), and hive values through `hivexget`.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::plan::{Content, FsKind, FsSpec, Plan, Table};
use crate::tree::{Data, Node};
use crate::{Error, builders};

const MIB: u64 = 1 << 20;

/// Builds `name`, or returns None (after printing why) when the environment cannot.
fn build_or_skip(name: &str) -> Option<PathBuf> {
    match crate::build(name) {
        Ok(p) => Some(p),
        Err(Error::ToolMissing { tool, .. }) => {
            eprintln!("skipping: {tool} not found");
            None
        }
        Err(Error::NeedsRoot { .. }) => {
            eprintln!("skipping: {name} needs root");
            None
        }
        Err(e) => panic!("building {name}: {e}"),
    }
}

fn have(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(program).is_file())
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `len` bytes at `offset` of `raw` into a new sparse file.
fn extract(raw: &Path, offset: u64, len: u64, dst: &Path) {
    let src = File::open(raw).unwrap();
    let out = File::create(dst).unwrap();
    out.set_len(len).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let n = usize::try_from((len - at).min(buf.len() as u64)).unwrap();
        src.read_exact_at(&mut buf[..n], offset + at).unwrap();
        if buf[..n].iter().any(|b| *b != 0) {
            out.write_all_at(&buf[..n], at).unwrap();
        }
        at += n as u64;
    }
}

/// The partition table, as `sfdisk -d` prints it: header fields and per-partition fields.
struct Dump {
    header: Vec<(String, String)>,
    parts: Vec<(u32, Vec<(String, String)>)>,
}

fn sfdisk_dump(raw: &Path) -> Dump {
    let text = run_ok(Command::new("sfdisk").arg("-d").arg(raw));
    let raw_s = raw.to_string_lossy().into_owned();
    let mut d = Dump {
        header: Vec::new(),
        parts: Vec::new(),
    };
    for line in text.lines() {
        if let Some((dev, rest)) = line.split_once(" : ") {
            let num: u32 = dev.trim().strip_prefix(&raw_s).unwrap().parse().unwrap();
            let fields = rest
                .split(", ")
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.trim().to_owned(), v.trim().trim_matches('"').to_owned())
                })
                .collect();
            d.parts.push((num, fields));
        } else if let Some((k, v)) = line.split_once(": ") {
            d.header.push((k.to_owned(), v.to_owned()));
        }
    }
    d
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn check_table(plan: &Plan, raw: &Path) {
    let d = sfdisk_dump(raw);
    let e = crate::expected(plan.name).unwrap();
    match plan.table {
        Table::Mbr { signature } => {
            assert_eq!(field(&d.header, "label"), Some("dos"));
            assert_eq!(
                field(&d.header, "label-id"),
                Some(format!("{signature:#010x}").as_str())
            );
            assert_eq!(e.partition_table, "mbr");
            assert_eq!(e.disk_id, format!("{signature:#010x}"));
        }
        Table::Gpt { disk_guid } => {
            assert_eq!(field(&d.header, "label"), Some("gpt"));
            assert_eq!(field(&d.header, "label-id"), Some(disk_guid));
            assert_eq!(e.partition_table, "gpt");
            assert_eq!(e.disk_id, disk_guid);
        }
    }
    let gpt = matches!(plan.table, Table::Gpt { .. });
    assert_eq!(
        d.parts.len(),
        plan.parts.len(),
        "{}: partition count",
        plan.name
    );
    for (p, (num, f)) in plan.parts.iter().zip(&d.parts) {
        assert_eq!(*num, p.number);
        assert_eq!(
            field(f, "start"),
            Some((p.start_mib * 2048).to_string().as_str())
        );
        assert_eq!(
            field(f, "size"),
            Some((p.size_mib * 2048).to_string().as_str())
        );
        assert!(
            field(f, "type")
                .unwrap()
                .eq_ignore_ascii_case(p.ptype.sfdisk(gpt)),
            "{}: type of part {num}",
            plan.name
        );
        if gpt {
            assert_eq!(field(f, "uuid"), Some(p.guid));
            assert_eq!(field(f, "name").unwrap_or(""), p.name);
        } else {
            assert_eq!(f.iter().any(|(k, _)| k == "bootable"), p.bootable);
        }
    }
    let boot = std::fs::read(raw).map(|b| b[..440].to_vec()).unwrap();
    match e.mbr_boot_code {
        "grub" => assert!(
            boot.windows(4).any(|w| w == b"GRUB"),
            "{}: grub boot code",
            plan.name
        ),
        "windows" => assert!(
            boot.windows(23).any(|w| w == b"Invalid partition table"),
            "{}: windows boot code",
            plan.name
        ),
        other => {
            assert_eq!(other, "none");
            assert!(boot.iter().all(|b| *b == 0), "{}: no boot code", plan.name);
        }
    }
}

/// Every filesystem of the plan with its byte offset in the raw image and its size.
fn filesystems(plan: &Plan) -> Vec<(String, u64, u64, &Content)> {
    let mut out = Vec::new();
    for p in &plan.parts {
        let off = p.start_mib * MIB;
        match &p.content {
            Content::Lvm(vg) => {
                for (i, lv) in vg.lvs.iter().enumerate() {
                    let loc = format!("lv:{}/{}", vg.name, lv.name);
                    out.push((
                        loc,
                        off + vg.lv_offset(i),
                        lv.extents * vg.extent_mib * MIB,
                        &lv.content,
                    ));
                }
            }
            c => out.push((format!("part{}", p.number), off, p.size_mib * MIB, c)),
        }
    }
    out
}

fn check_fs(name: &str, loc: &str, fs: &FsSpec, img: &Path, scratch: &Path) {
    let e = crate::expected(name).unwrap();
    let want = e
        .filesystems
        .iter()
        .find(|f| f.location == loc)
        .unwrap_or_else(|| panic!("{name}: {loc} not in expected"));
    let kind = match fs.kind {
        FsKind::Ext4 => "ext4",
        FsKind::Xfs | FsKind::XfsRhel7 => "xfs",
        FsKind::Btrfs => "btrfs",
        FsKind::Vfat => "vfat",
        FsKind::Ntfs => "ntfs",
    };
    assert_eq!(want.kind, kind, "{name}: {loc}");
    assert_eq!(want.uuid, fs.uuid, "{name}: {loc}");
    assert_eq!(want.label, fs.label, "{name}: {loc}");
    if have("blkid") {
        let out = run_ok(Command::new("blkid").args(["-p", "-o", "export"]).arg(img));
        assert!(
            out.contains(&format!("TYPE={kind}\n")),
            "{name}: {loc}: {out}"
        );
        assert!(
            out.contains(&format!("UUID={}\n", fs.uuid)),
            "{name}: {loc}: {out}"
        );
    }
    let dir = scratch.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    match fs.kind {
        FsKind::Ext4 => {
            run_ok(Command::new("e2fsck").arg("-fn").arg(img));
            run_ok(
                Command::new("debugfs")
                    .arg("-R")
                    .arg(format!("rdump / {}", dir.display()))
                    .arg(img),
            );
            compare_dir(name, fs, &dir, true);
        }
        FsKind::Btrfs => {
            run_ok(Command::new("btrfs").args(["check", "--readonly"]).arg(img));
            run_ok(
                Command::new("btrfs")
                    .args(["restore", "-S"])
                    .arg(img)
                    .arg(&dir),
            );
            compare_dir(name, fs, &dir, true);
        }
        FsKind::Vfat => {
            run_ok(Command::new("fsck.vfat").arg("-n").arg(img));
            for (path, node) in fs.tree.entries() {
                if let Node::File { .. } = node {
                    let dst = dir.join(path);
                    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                    run_ok(
                        Command::new("mcopy")
                            .env("MTOOLS_SKIP_CHECK", "1")
                            .arg("-i")
                            .arg(img)
                            .arg(format!("::/{path}"))
                            .arg(&dst),
                    );
                } else {
                    std::fs::create_dir_all(dir.join(path)).unwrap();
                }
            }
            compare_dir(name, fs, &dir, false);
        }
        FsKind::Xfs | FsKind::XfsRhel7 => {
            run_ok(Command::new("xfs_repair").args(["-n", "-f"]).arg(img));
            // xfs_db cannot copy files out; check that every name is in its directory.
            for (path, _) in fs.tree.entries() {
                let (parent, leaf) = path.rsplit_once('/').unwrap_or(("", path));
                let out = run_ok(
                    Command::new("xfs_db")
                        .arg("-r")
                        .arg("-c")
                        .arg(format!("ls /{parent}"))
                        .arg(img),
                );
                assert!(
                    out.lines()
                        .any(|l| l.split_whitespace().nth(5) == Some(leaf)),
                    "{name}: xfs {loc}: {path} missing"
                );
            }
        }
        FsKind::Ntfs => {
            run_ok(Command::new("ntfsfix").arg("-n").arg(img));
            for (path, node) in fs.tree.entries() {
                match node {
                    Node::Dir { .. } => {
                        run_ok(
                            Command::new("ntfsls")
                                .arg("-p")
                                .arg(format!("/{path}"))
                                .arg(img),
                        );
                        std::fs::create_dir_all(dir.join(path)).unwrap();
                    }
                    Node::File { .. } => {
                        let dst = dir.join(path);
                        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                        let bytes = Command::new("ntfscat")
                            .arg(img)
                            .arg(format!("/{path}"))
                            .output()
                            .unwrap();
                        assert!(bytes.status.success(), "{name}: ntfscat {path}");
                        std::fs::write(&dst, bytes.stdout).unwrap();
                    }
                    Node::Symlink { .. } => panic!("no symlinks on ntfs"),
                }
            }
            compare_dir(name, fs, &dir, false);
        }
    }
    check_hives(name, fs, &dir);
}

/// Compares the files read back from a filesystem with the plan's tree.
fn compare_dir(name: &str, fs: &FsSpec, dir: &Path, symlinks: bool) {
    for (path, node) in fs.tree.entries() {
        let p = dir.join(path);
        match node {
            Node::Dir { .. } => assert!(p.is_dir(), "{name}: dir {path}"),
            Node::File { data, .. } => {
                let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
                match data {
                    Data::Bytes(b) => assert!(got == *b, "{name}: content of {path}"),
                    Data::Host(h) => assert!(
                        got == std::fs::read(h).unwrap(),
                        "{name}: content of {path}"
                    ),
                    Data::Hive(_) => assert_eq!(&got[..4], b"regf", "{name}: {path}"),
                    Data::RpmDb => assert_eq!(&got[..16], b"SQLite format 3\0", "{name}: {path}"),
                }
            }
            Node::Symlink { target } if symlinks => {
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_string_lossy(),
                    target.as_str(),
                    "{name}: {path}"
                );
            }
            Node::Symlink { .. } => {}
        }
    }
}

fn hivexget(hive: &Path, key: &str, value: &str) -> String {
    run_ok(Command::new("hivexget").arg(hive).arg(key).arg(value))
        .trim_end()
        .to_owned()
}

/// Reads the hives back with hivexget and compares them with the expected facts.
fn check_hives(name: &str, fs: &FsSpec, dir: &Path) {
    let e = crate::expected(name).unwrap();
    for (path, node) in fs.tree.entries() {
        let Node::File {
            data: Data::Hive(_),
            ..
        } = node
        else {
            continue;
        };
        if !have("hivexget") {
            eprintln!("skipping: hivexget not found");
            return;
        }
        let hive = dir.join(path);
        let w = e.windows.as_ref().unwrap();
        if path.ends_with("config/SOFTWARE") {
            let cv = "Microsoft\\Windows NT\\CurrentVersion";
            assert_eq!(hivexget(&hive, cv, "ProductName"), e.product_name);
            assert_eq!(hivexget(&hive, cv, "CurrentBuildNumber"), w.build);
            assert_eq!(hivexget(&hive, cv, "CurrentVersion"), w.current_version);
            assert_eq!(hivexget(&hive, cv, "EditionID"), w.edition_id);
            assert_eq!(hivexget(&hive, cv, "InstallationType"), w.installation_type);
            if e.version_major >= 10 {
                assert_eq!(
                    hivexget(&hive, cv, "CurrentMajorVersionNumber"),
                    e.version_major.to_string()
                );
            }
        } else if path.ends_with("config/SYSTEM") {
            assert_eq!(hivexget(&hive, "Select", "Current"), "1");
            assert_eq!(
                hivexget(
                    &hive,
                    "ControlSet001\\Control\\ComputerName\\ComputerName",
                    "ComputerName"
                ),
                e.hostname
            );
            for s in w.services {
                let start = hivexget(&hive, &format!("ControlSet001\\Services\\{s}"), "Start");
                assert_eq!(
                    start == "0",
                    w.boot_start_services.contains(s),
                    "{name}: {s} Start={start}"
                );
            }
            let nic = &e.network[0];
            let ip = hivexget(
                &hive,
                &format!(
                    "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{}",
                    nic.interface
                ),
                "IPAddress",
            );
            assert_eq!(Some(ip.as_str()), nic.address.split('/').next());
            let md = run_ok(
                Command::new("hivexregedit")
                    .args(["--export", "--prefix", "HKEY_LOCAL_MACHINE\\SYSTEM"])
                    .arg(&hive)
                    .arg("\\MountedDevices"),
            );
            if e.partition_table == "gpt" {
                // "DMIO:ID:" in hex.
                assert!(
                    md.contains("\"\\\\DosDevices\\\\C:\"=hex(3):44,4d,49,4f,3a,49,44,3a,"),
                    "{md}"
                );
            } else {
                let sig = u32::from_str_radix(e.disk_id.trim_start_matches("0x"), 16)
                    .unwrap()
                    .to_le_bytes();
                let prefix = format!(
                    "\"\\\\DosDevices\\\\C:\"=hex(3):{:02x},{:02x},{:02x},{:02x},",
                    sig[0], sig[1], sig[2], sig[3]
                );
                assert!(md.contains(&prefix), "{md}");
            }
        } else if path.ends_with("BCD") {
            let default = hivexget(
                &hive,
                "Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Elements\\23000003",
                "Element",
            );
            let loader = hivexget(
                &hive,
                &format!("Objects\\{default}\\Elements\\12000002"),
                "Element",
            );
            assert_eq!(loader, w.bcd_default_loader);
        } else {
            panic!("{name}: unexpected hive {path}");
        }
    }
}

fn check_image(name: &str) {
    for tool in [
        "sfdisk",
        "e2fsck",
        "xfs_repair",
        "fsck.vfat",
        "mcopy",
        "debugfs",
        "xfs_db",
    ] {
        if !have(tool) {
            eprintln!("skipping: {tool} not found");
            return;
        }
    }
    let Some(raw) = build_or_skip(name) else {
        return;
    };
    let b = builders::BUILDERS
        .iter()
        .find(|b| b.expected.name == name)
        .unwrap();
    let plan = (b.plan)().unwrap();
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), plan.size_mib * MIB);
    check_table(&plan, &raw);
    let scratch = tempfile::tempdir().unwrap();
    for (i, (loc, off, len, content)) in filesystems(&plan).into_iter().enumerate() {
        let img = scratch.path().join(format!("fs{i}.img"));
        match content {
            Content::Fs(fs) => {
                if fs.kind == FsKind::Btrfs && !have("btrfs")
                    || fs.kind == FsKind::Ntfs && !have("ntfsfix")
                {
                    eprintln!("skipping: checker for {loc} not found");
                    continue;
                }
                extract(&raw, off, len, &img);
                let sub = scratch.path().join(format!("fs{i}"));
                check_fs(name, &loc, fs, &img, &sub);
            }
            Content::Swap { uuid } => {
                let mut page = vec![0u8; 4096];
                File::open(&raw)
                    .unwrap()
                    .read_exact_at(&mut page, off)
                    .unwrap();
                assert_eq!(&page[4086..4096], b"SWAPSPACE2", "{name}: swap {loc}");
                let want = crate::expected(name)
                    .unwrap()
                    .filesystems
                    .iter()
                    .find(|f| f.location == loc)
                    .unwrap();
                assert_eq!((want.kind, want.uuid), ("swap", *uuid));
            }
            Content::Empty => {}
            Content::Lvm(_) => unreachable!("LVs are listed individually"),
        }
        let _ = std::fs::remove_file(&img);
    }
}

#[test]
fn debian12_vmware() {
    check_image("debian12-vmware");
}
#[test]
fn rhel7_lvm() {
    check_image("rhel7-lvm");
}
#[test]
fn rhel9_uefi() {
    check_image("rhel9-uefi");
}
#[test]
fn ubuntu2204_uefi() {
    check_image("ubuntu2204-uefi");
}
#[test]
fn ubuntu2204_mbr_uefi() {
    check_image("ubuntu2204-mbr-uefi");
}
#[test]
fn sles15_btrfs() {
    check_image("sles15-btrfs");
}
#[test]
fn win2008r2_bios() {
    check_image("win2008r2-bios");
}
#[test]
fn win2012r2_bios() {
    check_image("win2012r2-bios");
}
#[test]
fn win2016_uefi() {
    check_image("win2016-uefi");
}
#[test]
fn win2019_bios() {
    check_image("win2019-bios");
}
#[test]
fn win2022_uefi() {
    check_image("win2022-uefi");
}

/// The hand-written LVM metadata is accepted by LVM itself (needs root for a loop device).
#[test]
fn rhel7_pv_is_read_by_lvm() {
    if !crate::tools::is_root() || !have("losetup") || !have("pvs") || !have("partx") {
        eprintln!("skipping: needs root, losetup, partx and lvm2");
        return;
    }
    let Some(raw) = build_or_skip("rhel7-lvm") else {
        return;
    };
    let dev = run_ok(
        Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(&raw),
    )
    .trim()
    .to_owned();
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("partx").arg("-d").arg(&self.0).output();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).output();
        }
    }
    let lo = Loop(dev);
    run_ok(Command::new("partx").arg("-a").arg(&lo.0));
    let cfg = "devices{use_devicesfile=0}";
    let pv = format!("{}p2", lo.0);
    let out = run_ok(
        Command::new("pvs")
            .args([
                "--config",
                cfg,
                "--noheadings",
                "--units",
                "m",
                "-o",
                "vg_name,pv_size,pv_uuid",
            ])
            .arg(&pv),
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        f,
        ["rhel", "352.00m", "Rh7Pv1-0001-aaaa-bbbb-cccc-dddd-eeee02"]
    );
    let out = run_ok(Command::new("lvs").args([
        "--config",
        cfg,
        "--noheadings",
        "--units",
        "m",
        "-o",
        "lv_name,lv_size",
        "rhel",
    ]));
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f, ["root", "320.00m", "swap", "32.00m"]);
}

#[test]
fn qcow2_copy_matches_raw() {
    if !have("qemu-img") {
        eprintln!("skipping: qemu-img not found");
        return;
    }
    let Some(raw) = build_or_skip("ubuntu2204-uefi") else {
        return;
    };
    let q = crate::build_qcow2("ubuntu2204-uefi").unwrap();
    assert_eq!(q.extension().unwrap(), "qcow2");
    run_ok(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "qcow2"])
            .arg(&raw)
            .arg(&q),
    );
}

#[test]
fn expected_facts_are_consistent() {
    let mut seen = std::collections::BTreeSet::new();
    for b in builders::BUILDERS {
        let e = b.expected;
        assert!(seen.insert(e.name), "duplicate {}", e.name);
        let plan = (b.plan)().unwrap();
        assert_eq!(plan.name, e.name);
        assert!(
            e.filesystems
                .iter()
                .any(|f| f.location == e.root_location && f.kind == e.root_fs),
            "{}",
            e.name
        );
        for f in e.fstab {
            assert!(
                f.resolves_to.is_empty()
                    || e.filesystems.iter().any(|x| x.location == f.resolves_to),
                "{}: {}",
                e.name,
                f.spec
            );
        }
        let locs: Vec<String> = filesystems(&plan)
            .into_iter()
            .filter(|(_, _, _, c)| !matches!(c, Content::Empty))
            .map(|(l, ..)| l)
            .collect();
        for f in e.filesystems {
            assert!(
                locs.contains(&f.location.to_owned()) || f.kind == "lvm2-pv",
                "{}: {}",
                e.name,
                f.location
            );
        }
        assert_eq!(e.os_type == "windows", e.windows.is_some(), "{}", e.name);
        assert_eq!(plan.needs_root(), e.os_type == "windows", "{}", e.name);
        assert_eq!(e.os_type == "linux", !e.kernels.is_empty(), "{}", e.name);
        assert_eq!(
            e.firmware == "uefi",
            e.filesystems.iter().any(|f| f.kind == "vfat"),
            "{}",
            e.name
        );
        if let Some(w) = &e.windows {
            let hibr = plan.filesystems().iter().any(|fs| {
                fs.tree.entries().any(|(p, n)| {
                    p == "hiberfil.sys"
                        && matches!(n, Node::File { data: Data::Bytes(b), .. } if b.starts_with(b"HIBR"))
                })
            });
            assert_eq!(hibr, w.hibernated, "{}", e.name);
        }
    }
    assert_eq!(crate::names().len(), 11);
    assert!(
        matches!(crate::build("nope"), Err(Error::UnknownImage { ref name, .. }) if name == "nope")
    );
}
