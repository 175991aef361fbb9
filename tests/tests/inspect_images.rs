//! Every builder image inspects to the facts its builder wrote, field by field, in raw and qcow2
//! form and through `qemu-nbd` via our NBD client (issue 2, first acceptance point).

use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use disk::open::{OpenOptions, open};
use e2e::have_tool;
use images::Expected;
use inspect::report::{BootCode, FirmwareKind, OsReport, Report};

/// `partN` → `/dev/sdaN`; `lv:VG/LV` → `/dev/VG/LV` (the report's device names).
fn device_name(location: &str) -> String {
    if let Some(n) = location.strip_prefix("part") {
        format!("/dev/sda{n}")
    } else if let Some(lv) = location.strip_prefix("lv:") {
        format!("/dev/{lv}")
    } else {
        panic!("unknown location {location:?} in Expected")
    }
}

/// The builder's filesystem kind names → blkid's.
fn blkid_kind(kind: &str) -> &str {
    match kind {
        "lvm2-pv" => "LVM2_member",
        other => other,
    }
}

fn check(report: &Report, e: &Expected, how: &str) {
    let ctx = format!("{} ({how})", e.name);
    // Disk layout.
    let table = report.partition_table.as_ref().expect("partition table");
    assert_eq!(table.kind, e.partition_table, "{ctx}: table kind");
    match e.partition_table {
        "mbr" => assert_eq!(
            table.mbr_signature.as_deref().map(|s| format!("0x{s}")),
            Some(e.disk_id.to_ascii_lowercase()),
            "{ctx}: mbr signature"
        ),
        _ => assert_eq!(
            table.disk_guid.as_deref().map(str::to_ascii_uppercase),
            Some(e.disk_id.to_ascii_uppercase()),
            "{ctx}: disk guid"
        ),
    }
    for fs in e.filesystems {
        let name = device_name(fs.location);
        let d = report
            .devices
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("{ctx}: device {name} missing"));
        assert_eq!(d.content, blkid_kind(fs.kind), "{ctx}: {name} content");
        if !fs.uuid.is_empty() {
            assert_eq!(
                d.uuid.as_deref().map(str::to_ascii_lowercase),
                Some(fs.uuid.to_ascii_lowercase()),
                "{ctx}: {name} uuid"
            );
        }
        if !fs.label.is_empty() {
            assert_eq!(d.label.as_deref(), Some(fs.label), "{ctx}: {name} label");
        }
    }
    if e.root_fs == "btrfs" {
        // btrfs is recognised but not readable yet: the report must say so, not guess.
        let root = device_name(e.root_location);
        assert!(
            report
                .findings
                .iter()
                .any(|f| f.code == "fs-unsupported" && f.location.as_deref() == Some(root.as_str())),
            "{ctx}: no fs-unsupported finding for the btrfs root in {:?}",
            report.findings
        );
        assert!(
            report.operating_systems.is_empty(),
            "{ctx}: an OS on unreadable btrfs?"
        );
        return;
    }
    // Firmware and boot.
    let fw = match e.firmware {
        "bios" => FirmwareKind::Bios,
        "uefi" => FirmwareKind::Uefi,
        other => panic!("unknown firmware {other}"),
    };
    assert_eq!(
        report.firmware.kind, fw,
        "{ctx}: firmware {:?}",
        report.firmware.evidence
    );
    let code = match e.mbr_boot_code {
        "grub" => BootCode::Grub2,
        "windows" => BootCode::Windows,
        "none" => BootCode::None,
        other => panic!("unknown boot code {other}"),
    };
    assert_eq!(report.mbr_boot_code, code, "{ctx}: mbr boot code");
    let loader = match e.bootloader {
        "windows-boot-manager" if fw == FirmwareKind::Uefi => "windows-bootmgr-efi",
        "windows-boot-manager" => "windows-bootmgr",
        other => other,
    };
    assert!(
        report.bootloaders.iter().any(|b| b.kind == loader),
        "{ctx}: bootloader {loader} not in {:?}",
        report.bootloaders
    );

    // The operating system.
    assert_eq!(report.operating_systems.len(), 1, "{ctx}: one OS");
    let os = &report.operating_systems[0];
    check_os(os, e, &ctx);
    if let Some(w) = &e.windows {
        let b = report
            .bootloaders
            .iter()
            .find(|b| b.kind == loader)
            .expect("windows bootloader");
        assert_eq!(
            b.default_loader.as_deref(),
            Some(w.bcd_default_loader),
            "{ctx}: BCD default loader"
        );
    }
}

fn check_os(os: &OsReport, e: &Expected, ctx: &str) {
    assert_eq!(os.root, device_name(e.root_location), "{ctx}: root");
    assert_eq!(os.os_type, e.os_type, "{ctx}: os type");
    assert_eq!(os.distro, e.distro, "{ctx}: distro");
    assert_eq!(
        (os.major_version, os.minor_version),
        (e.version_major, e.version_minor),
        "{ctx}: version"
    );
    assert_eq!(os.product_name, e.product_name, "{ctx}: product name");
    assert_eq!(os.osinfo.as_deref(), Some(e.osinfo), "{ctx}: osinfo");
    assert_eq!(os.arch.as_deref(), Some(e.arch), "{ctx}: arch");
    assert_eq!(os.hostname.as_deref(), Some(e.hostname), "{ctx}: hostname");
    assert_eq!(
        os.package_format.as_deref(),
        e.package_format,
        "{ctx}: package format"
    );
    assert_eq!(
        os.package_management.as_deref(),
        e.package_manager,
        "{ctx}: package manager"
    );

    for f in e.fstab {
        let m = os
            .mountpoints
            .iter()
            .find(|m| m.fstab.spec_raw == f.spec && m.path == f.mountpoint)
            .unwrap_or_else(|| panic!("{ctx}: fstab {} {} missing", f.spec, f.mountpoint));
        assert_eq!(m.fstab.fstype, f.vfstype, "{ctx}: fstab {} type", f.spec);
        let want = (!f.resolves_to.is_empty()).then(|| device_name(f.resolves_to));
        assert_eq!(m.device, want, "{ctx}: fstab {} resolves", f.spec);
    }
    assert_eq!(os.kernels.len(), e.kernels.len(), "{ctx}: kernel count");
    for k in e.kernels {
        let r = os
            .kernels
            .iter()
            .find(|r| r.version == k.version)
            .unwrap_or_else(|| panic!("{ctx}: kernel {} missing", k.version));
        assert_eq!(r.path, k.vmlinuz, "{ctx}: vmlinuz");
        assert_eq!(
            r.initramfs.as_deref(),
            Some(k.initramfs),
            "{ctx}: initramfs"
        );
        assert_eq!(
            os.initramfs_generator.as_deref(),
            Some(k.initramfs_generator),
            "{ctx}: initramfs generator"
        );
        for (name, state) in &r.virtio {
            let want = if k.virtio_builtin.contains(&name.as_str()) {
                "builtin"
            } else if k.virtio_modules.contains(&name.as_str()) {
                "module"
            } else {
                "missing"
            };
            assert_eq!(state, want, "{ctx}: kernel {} {name}", k.version);
        }
    }
    assert_eq!(
        os.network.len(),
        e.network.len(),
        "{ctx}: nics {:?}",
        os.network
    );
    for n in e.network {
        let r = os
            .network
            .iter()
            .find(|r| r.name == n.interface)
            .unwrap_or_else(|| panic!("{ctx}: nic {} missing in {:?}", n.interface, os.network));
        let style = match n.style {
            "networkmanager" => "network-manager",
            "ifcfg" => "rhel-ifcfg",
            "wicked" => "suse-wicked",
            other => other,
        };
        assert_eq!(
            serde_json::to_value(r.style).unwrap(),
            serde_json::Value::String(style.into()),
            "{ctx}: nic {} style",
            n.interface
        );
        assert_eq!(
            r.mac.as_deref().unwrap_or(""),
            n.mac,
            "{ctx}: nic {} mac",
            n.interface
        );
        assert_eq!(
            r.addresses,
            vec![n.address.to_owned()],
            "{ctx}: nic address"
        );
        assert_eq!(r.gateway.as_deref(), Some(n.gateway), "{ctx}: nic gateway");
    }
    let mut tools = os.hypervisor_tools.clone();
    tools.sort();
    let mut want: Vec<String> = e.hypervisor_tools.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    if e.windows.is_none() {
        assert_eq!(tools, want, "{ctx}: hypervisor tools");
    }

    if let Some(w) = &e.windows {
        let r = os.windows.as_ref().expect("windows facts");
        assert_eq!(r.systemroot, w.systemroot, "{ctx}: systemroot");
        assert_eq!(os.build_id.as_deref(), Some(w.build), "{ctx}: build");
        assert_eq!(r.edition.as_deref(), Some(w.edition_id), "{ctx}: edition");
        assert_eq!(
            r.installation_type.as_deref(),
            Some(w.installation_type),
            "{ctx}: installation type"
        );
        assert_eq!(
            r.current_control_set.as_deref(),
            Some(w.current_control_set),
            "{ctx}: control set"
        );
        let letters: Vec<(String, String)> = w
            .drive_letters
            .iter()
            .map(|(l, loc)| (l.trim_end_matches(':').to_owned(), device_name(loc)))
            .collect();
        assert_eq!(r.drive_mappings, letters, "{ctx}: drive letters");
        for s in w.services {
            assert!(
                r.drivers.iter().any(|d| d.name.eq_ignore_ascii_case(s)),
                "{ctx}: service {s} not reported in {:?}",
                r.drivers
            );
        }
        for s in w.boot_start_services {
            let d = r.drivers.iter().find(|d| d.name.eq_ignore_ascii_case(s));
            assert_eq!(d.and_then(|d| d.start), Some(0), "{ctx}: {s} boot start");
        }
        assert_eq!(r.hibernated, w.hibernated, "{ctx}: hibernated");
        assert_eq!(r.fast_startup, w.fast_startup, "{ctx}: fast startup");
    }
}

fn inspect_path(path: &str) -> Report {
    let opened = open(path, &OpenOptions::new()).unwrap_or_else(|e| panic!("open {path}: {e}"));
    inspect::inspect(opened.read(), path, opened.format().name()).expect("inspect")
}

struct QemuNbd(Child);
impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(image: &Path, socket: &Path) -> QemuNbd {
    let child = Command::new("qemu-nbd")
        .args(["--read-only", "--persistent", "--format=raw", "--shared=4"])
        .arg(format!("--socket={}", socket.display()))
        .arg("--export-name=disk")
        .arg(image)
        .spawn()
        .expect("start qemu-nbd");
    let guard = QemuNbd(child);
    for _ in 0..200 {
        if socket.exists() {
            return guard;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("qemu-nbd did not create {}", socket.display());
}

fn run_image(name: &str) {
    let e = images::expected(name).expect("expected facts");
    if images::needs_root(name).unwrap_or(false) && !is_root() {
        eprintln!("skipping: building {name} needs root");
        return;
    }
    let raw = images::build(name).unwrap_or_else(|err| panic!("build {name}: {err}"));
    let raw_s = raw.to_str().expect("utf-8 path");
    let r = inspect_path(raw_s);
    check(&r, e, "raw");
    // The JSON form round-trips through serde_json with every required field.
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema_version"], 1);

    let qcow2 = images::build_qcow2(name).unwrap_or_else(|err| panic!("qcow2 {name}: {err}"));
    let r = inspect_path(qcow2.to_str().unwrap());
    assert_eq!(r.format, "qcow2");
    check(&r, e, "qcow2");

    if have_tool("qemu-nbd", "NBD inspection") {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let _server = serve(&raw, &sock);
        let uri = format!("nbd+unix:///disk?socket={}", sock.display());
        let r = inspect_path(&uri);
        check(&r, e, "nbd");
    }
}

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

macro_rules! image_tests {
    ($($fn:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $fn() { run_image($name); })*

        #[test]
        fn every_builder_image_has_a_test() {
            let tested = [$($name),*];
            for n in images::names() {
                assert!(tested.contains(n), "builder image {n} has no inspect test");
            }
        }
    };
}

image_tests! {
    debian12_vmware => "debian12-vmware",
    rhel7_lvm => "rhel7-lvm",
    rhel9_uefi => "rhel9-uefi",
    ubuntu2204_uefi => "ubuntu2204-uefi",
    ubuntu2204_mbr_uefi => "ubuntu2204-mbr-uefi",
    sles15_btrfs => "sles15-btrfs",
    win2008r2_bios => "win2008r2-bios",
    win2012r2_bios => "win2012r2-bios",
    win2016_uefi => "win2016-uefi",
    win2019_bios => "win2019-bios",
    win2022_uefi => "win2022-uefi",
}

#[test]
fn blank_disk_has_no_os_and_says_so() {
    let d = Arc::new(disk::MemDisk::zeroed(8 << 20).unwrap());
    let r = inspect::inspect(d, "blank", "raw").unwrap();
    assert!(r.operating_systems.is_empty());
    assert!(r.findings.iter().any(|f| f.code == "no-os-found"));
    assert_eq!(r.firmware.kind, FirmwareKind::Unknown);
    assert_eq!(r.mbr_boot_code, BootCode::None);
}
