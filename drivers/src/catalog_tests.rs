use std::path::Path;

use super::*;
use crate::testkit::{
    FakeTree, PeSpec, build_iso, encode_inf, inf_text, pe_image, standard_drivers,
};

fn target(major: u32, minor: u32, build: u32, server: bool, arch: Arch) -> WindowsTarget {
    WindowsTarget {
        major,
        minor,
        build,
        server,
        arch,
    }
}

/// (major, minor, build, server, expected folder) for each release the fake tree serves.
const RELEASES: [(u32, u32, u32, bool, &str); 7] = [
    (6, 1, 7601, true, "2k8R2"),
    (6, 3, 9600, true, "2k12R2"),
    (10, 0, 14393, true, "2k16"),
    (10, 0, 17763, true, "2k19"),
    (10, 0, 20348, true, "2k22"),
    (10, 0, 19045, false, "w10"),
    (10, 0, 22631, false, "w11"),
];

fn iso_dir_of(driver: &str) -> &'static str {
    standard_drivers()
        .into_iter()
        .find(|d| d.name == driver)
        .unwrap()
        .iso_dir
}

fn package_dir(layout: Layout, driver: &str, folder: &str, arch: &str) -> String {
    match layout {
        Layout::Iso => format!("{}/{folder}/{arch}", iso_dir_of(driver)),
        Layout::Rpm => format!("drivers/by-os/{arch}/{folder}"),
    }
}

/// Checks every release against an opened catalog.
fn check_all_releases(cat: &Catalog, layout: Layout) {
    assert_eq!(cat.layout(), layout);
    assert_eq!(
        cat.drivers(Arch::Amd64),
        ["balloon", "netkvm", "vioscsi", "viostor"]
    );
    for (major, minor, build, server, folder) in RELEASES {
        let t = target(major, minor, build, server, Arch::Amd64);
        let sel = cat.select(&t).unwrap();
        assert_eq!(sel.folder.name(), folder, "{t}");
        assert!(sel.skipped.is_empty(), "{t}: {:?}", sel.skipped);
        assert_eq!(sel.drivers.len(), 4, "{t}");
        for d in &sel.drivers {
            assert_eq!(d.folder.name(), folder, "{t} {}", d.name);
            assert_eq!(d.wanted.name(), folder);
            assert_eq!(d.reason, Reason::Exact);
            assert_eq!(d.arch, Arch::Amd64);
            let dir = package_dir(layout, &d.name, folder, "amd64");
            assert_eq!(d.dir, dir);
            assert_eq!(d.inf_path, format!("{dir}/{}.inf", d.name));
            assert_eq!(d.hardware_ids.len(), 3, "{t} {}", d.name);
            assert_eq!(d.services.len(), 1);
            assert_eq!(d.services[0].name, d.name);
            let names: Vec<&str> = d.files.iter().map(|f| f.name.as_str()).collect();
            let n = &d.name;
            assert_eq!(
                names,
                [format!("{n}.cat"), format!("{n}.inf"), format!("{n}.sys")]
            );
            let sys = &d.files[2];
            let pe = sys.pe.unwrap();
            assert_eq!(pe.machine, 0x8664);
            assert_eq!(pe.subsystem, 1);
            assert_eq!(pe.file_version, d.inf.version.driver_ver.unwrap().version);
            assert_eq!(sys.size, 0x400);
        }
        let viostor = sel.driver("viostor").unwrap();
        let svc = &viostor.services[0];
        assert_eq!(
            (svc.service_type, svc.start_type, svc.error_control),
            (1, 0, 1)
        );
        assert_eq!(svc.load_order_group.as_deref(), Some("SCSI miniport"));
        assert!(viostor.hardware_ids.iter().any(|h| h.contains("DEV_1001")));
        assert!(viostor.hardware_ids.iter().any(|h| h.contains("DEV_1042")));
        assert_eq!(sel.driver("netkvm").unwrap().services[0].start_type, 3);
    }

    // Server 2025: no 2k25 folder; the 2k22 package accepts build 26100.
    let t = target(10, 0, 26100, true, Arch::Amd64);
    let sel = cat.select(&t).unwrap();
    assert_eq!(sel.folder, OsFolder::W2k25);
    let v = sel.driver("viostor").unwrap();
    assert_eq!(v.folder, OsFolder::W2k22);
    assert_eq!(v.wanted, OsFolder::W2k25);
    let Reason::Fallback { row, decoration } = &v.reason else {
        panic!("{:?}", v.reason)
    };
    assert_eq!(
        (row.wanted, row.instead),
        (OsFolder::W2k25, OsFolder::W2k22)
    );
    assert_eq!(decoration, "NTamd64.10.0...20348");
    assert_eq!(v.dir, package_dir(layout, "viostor", "2k22", "amd64"));

    // Windows 10 on x86.
    let t = target(10, 0, 19045, false, Arch::X86);
    let sel = cat.select(&t).unwrap();
    let v = sel.driver("viostor").unwrap();
    assert_eq!(v.dir, package_dir(layout, "viostor", "w10", "x86"));
    assert_eq!(v.files[2].pe.unwrap().machine, 0x14c);
    assert!(!v.files[2].pe.unwrap().is_64);
    // Windows 11 on x86: no w11/x86, the w10/x86 package accepts build 22000+.
    let sel = cat.select(&target(10, 0, 22000, false, Arch::X86)).unwrap();
    let v = sel.driver("vioscsi").unwrap();
    assert_eq!(v.folder, OsFolder::W10);
    assert!(matches!(v.reason, Reason::Fallback { .. }));

    // Windows 8.1: no folder, and no fallback is permitted.
    let err = cat
        .select(&target(6, 3, 9600, false, Arch::Amd64))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the catalog has no w8.1/amd64 folder for windows client 6.3.9600 amd64; no fallback is permitted for it"
    );
    let err = cat
        .select_driver("viostor", &target(6, 3, 9600, false, Arch::Amd64))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no w8.1/amd64 folder for driver viostor in the catalog; no fallback is permitted for it"
    );
    let err = cat
        .select(&target(10, 0, 26100, true, Arch::Arm64))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the catalog has no 2k25/ARM64 folder for windows server 10.0.26100 arm64 and no permitted fallback folder (2k22)"
    );
}

#[test]
fn iso_layout_directory() {
    let dir = tempfile::tempdir().unwrap();
    FakeTree::standard().write_iso_layout(dir.path()).unwrap();
    let cat = Catalog::open(Source::open(dir.path()).unwrap()).unwrap();
    check_all_releases(&cat, Layout::Iso);
}

#[test]
fn rpm_layout_directory() {
    let dir = tempfile::tempdir().unwrap();
    FakeTree::standard().write_rpm_layout(dir.path()).unwrap();
    let cat = Catalog::open(Source::open(dir.path()).unwrap()).unwrap();
    check_all_releases(&cat, Layout::Rpm);
}

fn iso_of(dir: &Path, out: &Path) -> bool {
    if build_iso(dir, out).unwrap() {
        true
    } else {
        println!("skipping: xorriso not found");
        false
    }
}

#[test]
fn iso_file_in_both_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let iso_tree = tmp.path().join("iso-tree");
    let rpm_tree = tmp.path().join("rpm-tree");
    FakeTree::standard().write_iso_layout(&iso_tree).unwrap();
    FakeTree::standard().write_rpm_layout(&rpm_tree).unwrap();
    let iso = tmp.path().join("virtio-win.iso");
    if !iso_of(&iso_tree, &iso) {
        return;
    }
    let src = Source::open(&iso).unwrap();
    assert_eq!(src.kind(), "iso");
    let cat = Catalog::open(src).unwrap();
    check_all_releases(&cat, Layout::Iso);
    let sel = cat
        .select(&target(10, 0, 17763, true, Arch::Amd64))
        .unwrap();
    assert_eq!(sel.source_kind, "iso");

    // An ISO whose name says nothing: recognised by its magic.
    let rpm_iso = tmp.path().join("payload.bin");
    assert!(iso_of(&rpm_tree, &rpm_iso));
    let cat = Catalog::open(Source::open(&rpm_iso).unwrap()).unwrap();
    check_all_releases(&cat, Layout::Rpm);
}

fn one_driver_tree(folders: Vec<(OsFolder, Arch)>) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let tree = FakeTree {
        drivers: standard_drivers()
            .into_iter()
            .filter(|d| d.name == "viostor")
            .collect(),
        folders,
    };
    tree.write_iso_layout(dir.path()).unwrap();
    let cat = Catalog::open(Source::open(dir.path()).unwrap()).unwrap();
    (dir, cat)
}

fn rewrite_inf(root: &Path, folder: OsFolder, from: &str, to: &str) {
    let d = &standard_drivers()[0];
    let text = inf_text(d, folder, Arch::Amd64).replace(from, to);
    let p = root.join(format!("viostor/{}/amd64/viostor.inf", folder.name()));
    std::fs::write(p, encode_inf(&text, d.encoding)).unwrap();
}

#[test]
fn fallback_refused_when_the_inf_does_not_accept_the_target() {
    let (dir, cat) = one_driver_tree(vec![(OsFolder::W10, Arch::Amd64)]);
    rewrite_inf(dir.path(), OsFolder::W10, "10.0...10240", "10.0...30000");
    let t = target(10, 0, 22631, false, Arch::Amd64);
    let err = cat.select_driver("viostor", &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no w11/amd64 folder for driver viostor in the catalog; fallback w10's inf has no models decoration accepting windows client 10.0.22631 amd64"
    );
    let sel = cat.select(&t).unwrap();
    assert!(sel.drivers.is_empty());
    assert_eq!(sel.skipped.len(), 1);
    assert_eq!(sel.skipped[0].name, "viostor");
    assert_eq!(sel.skipped[0].reason, err.to_string());
}

#[test]
fn exact_folder_whose_inf_binds_nothing_is_unsuitable() {
    let (dir, cat) = one_driver_tree(vec![(OsFolder::W2k19, Arch::Amd64)]);
    rewrite_inf(dir.path(), OsFolder::W2k19, "10.0...17763", "10.0...30000");
    let err = cat
        .select_driver("viostor", &target(10, 0, 17763, true, Arch::Amd64))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsuitable driver file viostor/2k19/amd64/viostor.inf: no models section of the inf applies to windows server 10.0.17763 amd64"
    );
}

#[test]
fn wrong_machine_and_subsystem_are_refused() {
    let (dir, cat) = one_driver_tree(vec![(OsFolder::W2k19, Arch::Amd64)]);
    let sys = dir.path().join("viostor/2k19/amd64/viostor.sys");
    let t = target(10, 0, 17763, true, Arch::Amd64);
    std::fs::write(&sys, pe_image(&PeSpec::driver(Arch::X86, [1, 0, 0, 0]))).unwrap();
    let err = cat.select_driver("viostor", &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsuitable driver file viostor/2k19/amd64/viostor.sys: pe machine 0x14c (x86) does not match the guest architecture amd64 (0x8664)"
    );
    let sel = cat.select(&t).unwrap();
    assert_eq!(sel.skipped[0].reason, err.to_string());
    let mut spec = PeSpec::driver(Arch::Amd64, [1, 0, 0, 0]);
    spec.subsystem = 3;
    std::fs::write(&sys, pe_image(&spec)).unwrap();
    let err = cat.select_driver("viostor", &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsuitable driver file viostor/2k19/amd64/viostor.sys: pe subsystem 3 is not native (1); not a kernel driver"
    );
    std::fs::write(&sys, b"MZ").unwrap();
    let err = cat.select_driver("viostor", &t).unwrap_err();
    let c = err.as_corrupt().unwrap();
    assert_eq!(c.structure(), "pe image");
    assert_eq!(c.file(), Some("viostor/2k19/amd64/viostor.sys"));
}

#[test]
fn missing_copied_file_and_corrupt_inf() {
    let (dir, cat) = one_driver_tree(vec![(OsFolder::W2k19, Arch::Amd64)]);
    let t = target(10, 0, 17763, true, Arch::Amd64);
    std::fs::remove_file(dir.path().join("viostor/2k19/amd64/viostor.sys")).unwrap();
    let err = cat.select_driver("viostor", &t).unwrap_err();
    assert_eq!(
        err.to_string(),
        "viostor/2k19/amd64/viostor.inf names viostor.sys but viostor/2k19/amd64 has no such file"
    );
    rewrite_inf(
        dir.path(),
        OsFolder::W2k19,
        "StartType      = 0",
        "StartType      = 9",
    );
    let err = cat.select_driver("viostor", &t).unwrap_err();
    let c = err.as_corrupt().unwrap();
    assert_eq!(c.structure(), "inf service-install section");
    assert_eq!(c.file(), Some("viostor/2k19/amd64/viostor.inf"));
    assert_eq!(c.detail(), "StartType \"9\" out of range 0..=4");
}

#[test]
fn unknown_layout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("viostor/vista/amd64")).unwrap();
    let err = Catalog::open(Source::open(dir.path()).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "unsupported catalog: {} has neither the iso layout (<driver>/<os>/<arch>/*.inf) nor the rpm layout (drivers/by-os/<arch>/<os>/*.inf)",
            dir.path().display()
        )
    );
}

fn d_folder(j: &serde_json::Value) -> &str {
    j["drivers"][0]["folder"].as_str().unwrap()
}

#[test]
fn human_and_json_reports() {
    let (dir, cat) = one_driver_tree(vec![(OsFolder::W2k22, Arch::Amd64)]);
    let sel = cat
        .select(&target(10, 0, 26100, true, Arch::Amd64))
        .unwrap();
    let inf_size = sel.drivers[0].files[1].size;
    let want = format!(
        "source: {} (directory, iso layout)\n\
         target: windows server 10.0.26100 amd64 -> folder 2k25\n\
         viostor: 2k22/amd64: no 2k25 folder; fallback to 2k22 (server 2025 is nt 10.0; the 2k22 package's inf decoration accepts build 26100); the inf's NTamd64.10.0...20348 accepts the target\n\
         \x20 inf: viostor/2k22/amd64/viostor.inf (class SCSIAdapter, driverver 06/01/2024,100.95.104.26200, catalog viostor.cat)\n\
         \x20 service: viostor type 1 start 0 (boot) error 1 group \"SCSI miniport\" image \\SystemRoot\\System32\\drivers\\viostor.sys\n\
         \x20 hardware ids: PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_1001, PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01\n\
         \x20 files: viostor.cat (24 bytes), viostor.inf ({inf_size} bytes), viostor.sys (1024 bytes, amd64, version 100.95.104.26200)\n",
        dir.path().display()
    );
    assert_eq!(render_human(&sel), want);

    let j = serde_json::to_value(&sel).unwrap();
    assert_eq!(j["layout"], "iso");
    assert_eq!(j["folder"], "2k25");
    assert_eq!(d_folder(&j), "2k22");
    assert_eq!(j["target"]["build"], 26100);
    let d = &j["drivers"][0];
    assert_eq!(d["name"], "viostor");
    assert_eq!(d["reason"]["kind"], "fallback");
    assert_eq!(d["reason"]["decoration"], "NTamd64.10.0...20348");
    assert_eq!(d["services"][0]["binary"]["path"], "viostor.sys");
    assert_eq!(d["files"][2]["pe"]["machine"], 0x8664);
}

#[test]
fn catalog_report() {
    let (dir, cat) = one_driver_tree(vec![
        (OsFolder::W2k22, Arch::Amd64),
        (OsFolder::W10, Arch::X86),
    ]);
    assert_eq!(
        render_catalog(&cat),
        format!(
            "source: {} (directory, iso layout, 2 packages)\nviostor: w10/x86, 2k22/amd64\n",
            dir.path().display()
        )
    );
}
