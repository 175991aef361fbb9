//! Tests of the Windows fixers over synthetic guests, the real SYSTEM hive fixture and
//! `hivexregedit` as the oracle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use hive::{Hive, ValueType};
use inspect::report::Report;

use super::multi_sz;
use super::testkit::{WIN2008R2, WIN2012R2, WIN2016, WIN2019, WIN2022, guest, report, system_hive};
use crate::testkit::MemFs;
use crate::{Change, Origin, Plan, PlanOptions, Recipe, apply, plan};

/// A fake virtio-win tree (ISO layout) in a temporary directory.
fn fake_virtio_win() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(dir.path())
        .unwrap();
    dir
}

fn recipe(steps: &str) -> Recipe {
    let text = format!(
        "schema = 1\nname = \"w\"\ndescription = \"d\"\n[match]\nos_type = \"windows\"\n{steps}"
    );
    Recipe::parse(&text, Origin::Inline).unwrap()
}

fn virtio_opts(src: &Path, extra: &[(&str, toml::Value)]) -> PlanOptions {
    let mut t = toml::Table::new();
    t.insert(
        "virtio_win".into(),
        toml::Value::String(src.display().to_string()),
    );
    for (k, v) in extra {
        t.insert((*k).into(), v.clone());
    }
    let mut o = PlanOptions::default();
    o.overrides.insert("virtio-win".into(), t);
    o
}

fn run(r: &Recipe, rep: &Report, g: &MemFs, o: &PlanOptions) -> crate::Result<Plan> {
    plan(r, rep, &rep.operating_systems[0], g, o)
}

/// The new bytes of the EditHive change of `path`.
fn hive_after(p: &Plan, path: &str) -> Hive {
    let new = p
        .changes()
        .find_map(|c| match c {
            Change::EditHive { path: q, new, .. } if q == path => Some(new.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no edit of {path}"));
    Hive::from_bytes(new).unwrap()
}

fn val(h: &Hive, key: &str, name: &str) -> hive::Value {
    h.open_path(key)
        .unwrap()
        .unwrap_or_else(|| panic!("no key {key}"))
        .value(name)
        .unwrap()
        .unwrap_or_else(|| panic!("no value {key} {name:?}"))
}

fn dword(h: &Hive, key: &str, name: &str) -> u32 {
    val(h, key, name).as_dword().unwrap()
}

fn string(h: &Hive, key: &str, name: &str) -> String {
    val(h, key, name).as_string().unwrap()
}

fn has_key(h: &Hive, key: &str) -> bool {
    h.open_path(key).unwrap().is_some()
}

const SYSTEM: &str = "/Windows/System32/config/SYSTEM";
const SOFTWARE: &str = "/Windows/System32/config/SOFTWARE";

/// Every key path of a hive as `hivexregedit --export` lists it, or `None` without the tool.
fn hivex_keys(bytes: &[u8]) -> Option<BTreeSet<String>> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hive");
    std::fs::write(&f, bytes).unwrap();
    let out = match Command::new("hivexregedit")
        .arg("--export")
        .arg(&f)
        .arg("\\")
        .output()
    {
        Ok(o) => o,
        Err(_) => return None,
    };
    assert!(
        out.status.success(),
        "hivexregedit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|l| l.strip_prefix("[\\"))
            .filter_map(|l| l.strip_suffix(']'))
            .map(str::to_ascii_lowercase)
            .collect(),
    )
}

/// Checks with hivexregedit that `new` re-parses and that the keys it adds over `old` are
/// exactly `added` (lower case, without the leading backslash), none removed.
fn check_hivex(old: &[u8], new: &[u8], added: &BTreeSet<String>) {
    let (Some(a), Some(b)) = (hivex_keys(old), hivex_keys(new)) else {
        println!("skipping: hivexregedit not found");
        return;
    };
    assert!(a.is_subset(&b), "keys removed: {:?}", a.difference(&b));
    let got: BTreeSet<String> = b.difference(&a).cloned().collect();
    assert_eq!(&got, added);
}

/// The key paths a set of leaf keys implies (every parent too), lower case.
fn with_parents(keys: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for k in keys {
        let mut cur = String::new();
        for part in k.split('\\') {
            if !cur.is_empty() {
                cur.push('\\');
            }
            cur.push_str(part);
            out.insert(cur.to_ascii_lowercase());
        }
    }
    out
}

fn old_hive(g: &MemFs, path: &str) -> Vec<u8> {
    g.file(path).unwrap().to_vec()
}

#[test]
fn win2019_stages_viostor_in_the_driver_store_and_database() {
    let src = fake_virtio_win();
    let v = WIN2019;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n");
    let p = run(&r, &rep, &g, &virtio_opts(src.path(), &[])).unwrap();
    let h = hive_after(&p, SYSTEM);
    // oem0..2 (map), oem1 (DriverInfFiles), oem0 and oem5 (INF files) are taken; the packages
    // come in name order: balloon oem3, netkvm oem4, vioscsi oem6, viostor oem7.
    let svc = "ControlSet001\\Services\\viostor";
    assert_eq!(dword(&h, svc, "Type"), 1);
    assert_eq!(dword(&h, svc, "Start"), 0);
    assert_eq!(dword(&h, svc, "ErrorControl"), 1);
    assert_eq!(string(&h, svc, "Group"), "SCSI miniport");
    let ip = val(&h, svc, "ImagePath");
    assert_eq!(ip.kind, ValueType::ExpandSz);
    assert_eq!(ip.as_string().unwrap(), "System32\\drivers\\viostor.sys");
    assert_eq!(
        string(&h, svc, "DisplayName"),
        "Fake VirtIO Block Controller Service"
    );
    assert_eq!(
        val(&h, svc, "Owners").as_multi_string().unwrap(),
        vec!["oem7.inf"]
    );
    assert_eq!(dword(&h, &format!("{svc}\\Parameters"), "BusType"), 1);
    assert_eq!(
        dword(&h, &format!("{svc}\\Parameters\\PnpInterface"), "5"),
        1
    );
    assert!(!has_key(
        &h,
        "ControlSet001\\Control\\CriticalDeviceDatabase"
    ));
    // The package.
    let pkg = h
        .open_path("DriverDatabase\\DriverPackages")
        .unwrap()
        .unwrap()
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().to_owned())
        .find(|n| n.starts_with("viostor.inf_amd64_"))
        .unwrap();
    assert_eq!(pkg.len(), "viostor.inf_amd64_".len() + 16);
    let pk = format!("DriverDatabase\\DriverPackages\\{pkg}");
    assert_eq!(string(&h, &pk, ""), "oem7.inf");
    assert_eq!(string(&h, &pk, "InfName"), "viostor.inf");
    assert_eq!(string(&h, &pk, "Catalog"), "viostor.cat");
    assert_eq!(string(&h, &pk, "Provider"), "Rehost Fake Virtio");
    assert_eq!(
        string(&h, &pk, "SignerName"),
        "Microsoft Windows Hardware Compatibility Publisher"
    );
    assert_eq!(dword(&h, &pk, "SignerScore"), 0x0d00_0005);
    assert_eq!(dword(&h, &pk, "StatusFlags"), 0x12);
    assert_eq!(val(&h, &pk, "ImportDate").data.len(), 8);
    let ver = val(&h, &pk, "Version").data;
    assert_eq!(ver.len(), 48);
    assert_eq!(ver[..8], [0, 0xff, 9, 0, 0, 0, 0, 0]);
    // {4D36E97B-E325-11CE-BFC1-08002BE10318}
    assert_eq!(
        ver[8..24],
        [
            0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1,
            0x03, 0x18
        ]
    );
    // DriverVer=06/01/2024 → FILETIME of 2024-06-01 00:00 UTC.
    let date = u64::from_le_bytes(ver[24..32].try_into().unwrap());
    assert_eq!(date, 116_444_736_000_000_000 + 1_717_200_000 * 10_000_000);
    // 100.95.104.26200
    assert_eq!(ver[32..40], [0x58, 0x66, 104, 0, 95, 0, 100, 0]);
    assert_eq!(ver[40..], [0; 8]);
    let conf = format!("{pk}\\Configurations\\viostor_inst");
    assert_eq!(dword(&h, &conf, "ConfigFlags"), 0);
    assert_eq!(dword(&h, &conf, "ConfigScope"), 7);
    assert_eq!(string(&h, &conf, "Service"), "viostor");
    assert_eq!(
        dword(
            &h,
            &format!("{conf}\\Device\\Interrupt Management\\MessageSignaledInterruptProperties"),
            "MSISupported"
        ),
        1
    );
    assert_eq!(dword(&h, &format!("{conf}\\Driver"), "FakeTestFlag"), 1);
    assert_eq!(
        dword(
            &h,
            &format!("{conf}\\Services\\viostor\\Parameters\\PnpInterface"),
            "5"
        ),
        1
    );
    let ids = [
        ("PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", 1u8),
        ("PCI\\VEN_1AF4&DEV_1001", 2),
        ("PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01", 1),
    ];
    for (id, rank) in ids {
        let d = format!("{pk}\\Descriptors\\{id}");
        assert_eq!(string(&h, &d, "Configuration"), "viostor_inst");
        assert_eq!(
            string(&h, &d, "Description"),
            "Fake VirtIO Block Controller"
        );
        assert_eq!(string(&h, &d, "Manufacturer"), "Rehost Fake Virtio");
        let di = val(&h, &format!("DriverDatabase\\DeviceIds\\{id}"), "oem7.inf");
        assert_eq!(di.kind, ValueType::Binary);
        assert_eq!(di.data, vec![rank, 0xff, 0, 0], "{id}");
    }
    let class = val(
        &h,
        "DriverDatabase\\DeviceIds\\{4d36e97b-e325-11ce-bfc1-08002be10318}",
        "oem7.inf",
    );
    assert_eq!((class.kind, class.data.len()), (ValueType::None, 0));
    let inf = "DriverDatabase\\DriverInfFiles\\oem7.inf";
    assert_eq!(
        val(&h, inf, "").as_multi_string().unwrap(),
        vec![pkg.clone()]
    );
    assert_eq!(string(&h, inf, "Active"), pkg);
    assert_eq!(
        val(&h, inf, "Configurations").as_multi_string().unwrap(),
        vec!["viostor_inst"]
    );
    let map = val(&h, "DriverDatabase", "OemInfMap").data;
    assert_eq!(map, vec![0xfb], "oem0-4, oem6, oem7");
    assert_eq!(val(&h, "DriverDatabase", "UpdateDate").data.len(), 8);
    // Files.
    let files: Vec<&str> = p
        .changes()
        .filter_map(|c| match c {
            Change::CreateFile { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        files.contains(&"/Windows/System32/drivers/viostor.sys"),
        "{files:?}"
    );
    for f in ["viostor.cat", "viostor.inf", "viostor.sys"] {
        let path = format!("/Windows/System32/DriverStore/FileRepository/{pkg}/{f}");
        assert!(files.contains(&path.as_str()), "{path}");
    }
    assert!(files.contains(&"/Windows/INF/oem7.inf"));
    assert!(files.contains(&"/Windows/Drivers/VirtIO/netkvm.sys"));
    assert!(!files.contains(&"/Windows/Drivers/VirtIO/viostor.sys"));
    let sw = hive_after(&p, SOFTWARE);
    assert_eq!(
        string(&sw, "Microsoft\\Windows\\CurrentVersion", "DevicePath"),
        "%SystemRoot%\\inf;%SystemRoot%\\Drivers\\VirtIO"
    );
    let summary = &p.steps[0].summary;
    assert!(
        summary.contains(&format!(
            "staged packages: oem3.inf=balloon.inf_amd64_{}",
            ""
        )) && summary.contains(&format!("oem7.inf={pkg}")),
        "{summary}"
    );
    assert!(
        summary.starts_with(
            "viostor installed as boot-start storage driver, bound through the driver database"
        ),
        "{summary}"
    );
}

#[test]
fn win2008r2_binds_through_the_critical_device_database() {
    let src = fake_virtio_win();
    let v = WIN2008R2;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n");
    let p = run(&r, &rep, &g, &virtio_opts(src.path(), &[])).unwrap();
    let h = hive_after(&p, SYSTEM);
    let svc = "ControlSet001\\Services\\viostor";
    assert_eq!(dword(&h, svc, "Start"), 0);
    assert_eq!(string(&h, svc, "Group"), "SCSI miniport");
    assert!(
        h.open_path(svc)
            .unwrap()
            .unwrap()
            .value("Owners")
            .unwrap()
            .is_none()
    );
    let cdd = "ControlSet001\\Control\\CriticalDeviceDatabase";
    let mut want = Vec::new();
    for id in [
        "pci#ven_1af4&dev_1001&subsys_00021af4&rev_00",
        "pci#ven_1af4&dev_1001",
        "pci#ven_1af4&dev_1042&subsys_11001af4&rev_01",
        "pci#ven_1af4&dev_1042",
    ] {
        let k = format!("{cdd}\\{id}");
        assert_eq!(
            string(&h, &k, "ClassGUID"),
            "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
        );
        assert_eq!(string(&h, &k, "Service"), "viostor");
        want.push(k);
    }
    assert!(!has_key(&h, "DriverDatabase"));
    let files: Vec<&str> = p
        .changes()
        .filter(|c| matches!(c, Change::CreateFile { .. }))
        .map(Change::path)
        .collect();
    assert!(files.contains(&"/Windows/System32/drivers/viostor.sys"));
    assert!(
        !files
            .iter()
            .any(|f| f.contains("DriverStore") || f.contains("/INF/"))
    );
    assert!(files.contains(&"/Windows/Drivers/VirtIO/netkvm.inf"));
    // hivexregedit: the new hive parses and adds exactly the service and CDD keys.
    want.extend([svc.to_owned(), format!("{svc}\\Parameters\\PnpInterface")]);
    check_hivex(
        &old_hive(&g, SYSTEM),
        &hive_after_bytes(&p, SYSTEM),
        &with_parents(&want)
            .difference(&with_parents(&[
                "ControlSet001\\Control".to_owned(),
                "ControlSet001\\Services".to_owned(),
            ]))
            .cloned()
            .collect(),
    );
}

fn hive_after_bytes(p: &Plan, path: &str) -> Vec<u8> {
    p.changes()
        .find_map(|c| match c {
            Change::EditHive { path: q, new, .. } if q == path => Some(new.clone()),
            _ => None,
        })
        .unwrap()
}

#[test]
fn every_version_applies_and_a_second_run_plans_nothing() {
    let src = fake_virtio_win();
    let r = recipe(
        "[[step]]\nfixer = \"virtio-win\"\nbus = \"virtio-scsi\"\n\
         [[step]]\nfixer = \"windows-hypervisor-services\"\n\
         [[step]]\nfixer = \"windows-san-policy\"\n\
         [[step]]\nfixer = \"windows-crash-control\"\n",
    );
    let src2 = fake_virtio_win();
    for v in [WIN2008R2, WIN2012R2, WIN2016, WIN2019, WIN2022] {
        let mut g = guest(v, &system_hive(v).build());
        let rep = report(v);
        let o = virtio_opts(src.path(), &[]);
        let p = run(&r, &rep, &g, &o).unwrap();
        // One EditHive per hive per step: virtio-win edits SYSTEM and SOFTWARE, the others SYSTEM.
        let edits: Vec<(usize, &str)> = p
            .steps
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.changes
                    .iter()
                    .filter(|c| matches!(c, Change::EditHive { .. }))
                    .map(move |c| (i, c.path()))
            })
            .collect();
        assert_eq!(
            edits,
            vec![
                (0, SOFTWARE),
                (0, SYSTEM),
                (1, SYSTEM),
                (2, SYSTEM),
                (3, SYSTEM)
            ],
            "{v:?}"
        );
        let h = hive_after(&p, SYSTEM);
        // The last SYSTEM edit carries every step's changes.
        let last = Hive::from_bytes(
            p.steps[3]
                .changes
                .iter()
                .find_map(|c| match c {
                    Change::EditHive { new, .. } => Some(new.clone()),
                    _ => None,
                })
                .unwrap(),
        )
        .unwrap();
        assert_eq!(dword(&last, "ControlSet001\\Services\\vioscsi", "Start"), 0);
        assert_eq!(dword(&last, "ControlSet001\\Services\\VMTools", "Start"), 4);
        assert_eq!(
            dword(
                &last,
                "ControlSet001\\Services\\partmgr\\Parameters",
                "SanPolicy"
            ),
            1
        );
        assert_eq!(
            dword(&last, "ControlSet001\\Control\\CrashControl", "AutoReboot"),
            0
        );
        assert_eq!(
            has_key(&h, "DriverDatabase"),
            (v.major, v.minor) >= (6, 2),
            "{v:?}"
        );
        let n = apply(&p, &mut g).unwrap();
        assert_eq!(n, p.changes().count());
        let same = run(&r, &rep, &g, &o).unwrap();
        assert!(
            same.steps[0]
                .summary
                .starts_with("vioscsi already installed as boot-start storage driver"),
            "{}",
            same.steps[0].summary
        );
        // The same packages from another place (the ISO mounted elsewhere): still nothing.
        let again = run(&r, &rep, &g, &virtio_opts(src2.path(), &[])).unwrap();
        assert!(
            again.is_empty(),
            "{v:?}: second run plans {}",
            again.render_human()
        );
    }
}

#[test]
fn include_exclude_and_no_drivers() {
    let src = fake_virtio_win();
    let v = WIN2019;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n");
    let names = |l: &[&str]| {
        toml::Value::Array(l.iter().map(|s| toml::Value::String((*s).into())).collect())
    };
    let p = run(
        &r,
        &rep,
        &g,
        &virtio_opts(src.path(), &[("include", names(&["viostor", "netkvm"]))]),
    )
    .unwrap();
    let s = &p.steps[0].summary;
    assert!(s.contains("oem3.inf=netkvm.inf_amd64_"), "{s}");
    assert!(s.contains("oem4.inf=viostor.inf_amd64_"), "{s}");
    assert!(!s.contains("balloon"), "{s}");
    let p = run(
        &r,
        &rep,
        &g,
        &virtio_opts(src.path(), &[("exclude", names(&["viostor"]))]),
    )
    .unwrap();
    assert!(
        p.steps[0]
            .summary
            .starts_with("viostor excluded by the include/exclude lists"),
        "{}",
        p.steps[0].summary
    );
    let h = hive_after(&p, SYSTEM);
    assert!(!has_key(&h, "ControlSet001\\Services\\viostor"));
    let p = run(
        &r,
        &rep,
        &g,
        &virtio_opts(src.path(), &[("no_drivers", toml::Value::Boolean(true))]),
    )
    .unwrap();
    assert!(p.is_empty());
    assert_eq!(
        p.steps[0].summary,
        "driver injection turned off (no_drivers)"
    );
    // No source at all.
    let mut o = PlanOptions::default();
    let mut t = toml::Table::new();
    t.insert("virtio_win".into(), toml::Value::String(String::new()));
    o.overrides.insert("virtio-win".into(), t);
    if std::env::var_os("VIRTIO_WIN").is_none() {
        assert_eq!(
            run(&r, &rep, &g, &o).unwrap_err().to_string(),
            "no virtio-win source: give --virtio-win PATH (recipe parameter virtio_win) or set VIRTIO_WIN"
        );
    }
}

#[test]
fn refusals() {
    let src = fake_virtio_win();
    let v = WIN2019;
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n");
    let o = virtio_opts(src.path(), &[]);
    let g = guest(v, &system_hive(v).build());
    // Hibernated.
    let mut rep = report(v);
    rep.operating_systems[0]
        .windows
        .as_mut()
        .unwrap()
        .hibernated = true;
    let e = run(&r, &rep, &g, &o).unwrap_err().to_string();
    assert!(
        e.starts_with(
            "unsupported windows guest: windows is hibernated or was shut down with fast startup"
        ),
        "{e}"
    );
    // BitLocker.
    let mut rep = report(v);
    rep.devices[2].content = "BitLocker".into();
    let e = run(&r, &rep, &g, &o).unwrap_err().to_string();
    assert!(
        e.starts_with("unsupported windows guest: /dev/sda2 is a bitlocker volume"),
        "{e}"
    );
    // Dynamic disk.
    let mut rep = report(v);
    rep.devices[3].part_type = Some("0x42".into());
    let e = run(&r, &rep, &g, &o).unwrap_err().to_string();
    assert_eq!(
        e,
        "unsupported windows guest: /dev/sda5 is a dynamic (ldm) disk partition; convert the system disk to a basic disk first"
    );
    // Dirty SYSTEM hive.
    let dirty = system_hive(v).sequence(5, 4).build();
    let g2 = guest(v, &dirty);
    let e = run(&r, &report(v), &g2, &o).unwrap_err().to_string();
    assert!(
        e.starts_with("unsupported windows guest: /Windows/System32/config/SYSTEM has pending transaction-log data"),
        "{e}"
    );
    assert!(
        e.ends_with("boot windows once and shut it down cleanly so the logs are written back"),
        "{e}"
    );
    // A Linux guest.
    let lin = crate::testkit::synthetic_report(&crate::testkit::SyntheticOs::new("debian", 12, 0));
    let e = plan(&r, &lin, &lin.operating_systems[0], &g, &o)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "fixer virtio-win is for windows guests, and /dev/sda1 holds linux"
    );
    // No control set.
    let mut rep = report(v);
    rep.operating_systems[0]
        .windows
        .as_mut()
        .unwrap()
        .current_control_set = None;
    let e = run(&r, &rep, &g, &o).unwrap_err().to_string();
    assert_eq!(
        e,
        "unsupported windows guest: the SYSTEM hive has no Select\\Current control set"
    );
    // Nothing was planned, so nothing was written.
    assert_eq!(g.file(SYSTEM), Some(&system_hive(v).build()[..]));
}

#[test]
fn hypervisor_services_are_disabled_and_dropped_from_filters() {
    let v = WIN2019;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"windows-hypervisor-services\"\n");
    let p = run(&r, &rep, &g, &PlanOptions::default()).unwrap();
    let h = hive_after(&p, SYSTEM);
    for (name, _) in [("vmci", 0), ("VMTools", 2), ("vmmouse", 3)] {
        assert_eq!(
            dword(&h, &format!("ControlSet001\\Services\\{name}"), "Start"),
            4
        );
    }
    assert_eq!(dword(&h, "ControlSet001\\Services\\LSI_SAS", "Start"), 0);
    assert_eq!(
        val(
            &h,
            "ControlSet001\\Control\\Class\\{4d36e96f-e325-11ce-bfc1-08002be10318}",
            "UpperFilters"
        )
        .as_multi_string()
        .unwrap(),
        vec!["mouclass"]
    );
    assert!(
        h.open_path("ControlSet001\\Enum\\ACPI\\PNP0F13\\4&1")
            .unwrap()
            .unwrap()
            .value("UpperFilters")
            .unwrap()
            .is_none(),
        "an emptied filter list is removed"
    );
    assert_eq!(
        p.steps[0].summary,
        "vmci: Start 0 -> 4; vmmouse: Start 3 -> 4; VMTools: Start 2 -> 4; removed from 2 filter list key(s)"
    );
    let reg = match p.changes().next().unwrap() {
        Change::EditHive { reg, .. } => reg.clone(),
        c => panic!("{c:?}"),
    };
    assert!(reg.contains("[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\VMTools]\n\"Start\"=dword:00000004\n"), "{reg}");
    // Turned off per hypervisor.
    let r = recipe("[[step]]\nfixer = \"windows-hypervisor-services\"\nvmware = false\n");
    assert!(
        run(&r, &rep, &g, &PlanOptions::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn san_policy_and_crash_control_report_old_values() {
    let v = WIN2016;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let r = recipe(
        "[[step]]\nfixer = \"windows-san-policy\"\npolicy = \"offline-shared\"\n\
         [[step]]\nfixer = \"windows-crash-control\"\n",
    );
    let p = run(&r, &rep, &g, &PlanOptions::default()).unwrap();
    assert_eq!(p.steps[0].summary, "SanPolicy unset -> 2 (offline-shared)");
    assert_eq!(
        p.steps[1].summary,
        "CrashControl AutoReboot set to 0 (was 1; restore with a windows-registry step on ControlSet001\\Control\\CrashControl)"
    );
    let h = hive_after(&p, SYSTEM);
    assert_eq!(
        dword(
            &h,
            "ControlSet001\\Services\\partmgr\\Parameters",
            "SanPolicy"
        ),
        2
    );
    match &p.steps[1].changes[0] {
        Change::EditHive { reg, .. } => assert_eq!(
            reg,
            "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Control\\CrashControl]\n\"AutoReboot\"=dword:00000000\n"
        ),
        c => panic!("{c:?}"),
    }
}

#[test]
fn registry_steps_set_delete_and_apply_reg_files() {
    let v = WIN2019;
    let g = guest(v, &system_hive(v).build());
    let rep = report(v);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("site.reg"),
        "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\site]\n\"Start\"=dword:00000003\n",
    )
    .unwrap();
    let text = "schema = 1\nname = \"w\"\ndescription = \"d\"\n[match]\nos_type = \"windows\"\n\
        [[step]]\nfixer = \"windows-registry\"\nkey = 'CurrentControlSet\\Control\\CrashControl'\nvalue = \"AutoReboot\"\ntype = \"delete\"\n\
        [[step]]\nfixer = \"windows-registry\"\nhive = \"SOFTWARE\"\nkey = 'Rehost'\nvalue = \"Paths\"\ntype = \"multi_sz\"\ndata = \"a;b\"\n\
        [[step]]\nfixer = \"windows-registry\"\nreg_file = \"site.reg\"\n";
    let file = dir.path().join("w.toml");
    std::fs::write(&file, text).unwrap();
    let r = Recipe::parse(text, Origin::User(file)).unwrap();
    let p = run(&r, &rep, &g, &PlanOptions::default()).unwrap();
    assert_eq!(
        p.steps[0].summary,
        "deleted SYSTEM\\ControlSet001\\Control\\CrashControl \"AutoReboot\""
    );
    assert_eq!(
        p.steps[1].summary,
        "set SOFTWARE\\Rehost \"Paths\" (REG_MULTI_SZ)"
    );
    assert!(
        p.steps[2]
            .summary
            .ends_with("site.reg applied (2 change(s) read)"),
        "{}",
        p.steps[2].summary
    );
    let sys = Hive::from_bytes(hive_after_bytes_last(&p, SYSTEM)).unwrap();
    assert!(
        sys.open_path("ControlSet001\\Control\\CrashControl")
            .unwrap()
            .unwrap()
            .value("AutoReboot")
            .unwrap()
            .is_none()
    );
    assert_eq!(dword(&sys, "ControlSet001\\Services\\site", "Start"), 3);
    let sw = hive_after(&p, SOFTWARE);
    assert_eq!(val(&sw, "Rehost", "Paths").data, multi_sz(&["a", "b"]));
    // Inline recipes have no directory for relative files.
    let r = recipe("[[step]]\nfixer = \"windows-registry\"\nreg_file = \"site.reg\"\n");
    assert_eq!(
        run(&r, &rep, &g, &PlanOptions::default())
            .unwrap_err()
            .to_string(),
        "windows-registry: reg_file \"site.reg\" is relative but the recipe is not a file"
    );
    let r = recipe(
        "[[step]]\nfixer = \"windows-registry\"\nkey = 'X'\ntype = \"dword\"\ndata = \"x\"\n",
    );
    assert_eq!(
        run(&r, &rep, &g, &PlanOptions::default())
            .unwrap_err()
            .to_string(),
        "windows-registry: data \"x\" is not a 32-bit number"
    );
}

/// The new bytes of the last EditHive change of `path`.
fn hive_after_bytes_last(p: &Plan, path: &str) -> Vec<u8> {
    p.changes()
        .filter_map(|c| match c {
            Change::EditHive { path: q, new, .. } if q == path => Some(new.clone()),
            _ => None,
        })
        .last()
        .unwrap()
}

/// The real Windows SYSTEM hive of dissect.regf 3.14's tests (see hive's tests for the fetch).
fn real_system_hive() -> Option<Vec<u8>> {
    let home = std::env::var_os("HOME")?;
    let dir = PathBuf::from(home).join(".cache/rehost/fixtures/dissect-regf-3.14");
    let f = dir.join("SYSTEM");
    if !f.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; cd '{}'; pip download --quiet --no-deps --no-binary :all: dissect-regf==3.14 -d . \
                 && tar xzf dissect_regf-3.14.tar.gz dissect_regf-3.14/tests/_data/SYSTEM.gz \
                 && gzip -dc dissect_regf-3.14/tests/_data/SYSTEM.gz > SYSTEM.tmp && mv SYSTEM.tmp SYSTEM",
                dir.display()
            ))
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
    }
    std::fs::read(f).ok()
}

#[test]
fn real_system_hive_gets_viostor_and_reparses() {
    let Some(system) = real_system_hive() else {
        println!("skipping: could not fetch dissect-regf==3.14 with pip");
        return;
    };
    let src = fake_virtio_win();
    let v = WIN2019;
    let g = guest(v, &system);
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\n");
    let p = run(
        &r,
        &rep,
        &g,
        &virtio_opts(
            src.path(),
            &[(
                "include",
                toml::Value::Array(vec![toml::Value::String("viostor".into())]),
            )],
        ),
    )
    .unwrap();
    let h = hive_after(&p, SYSTEM);
    // The real hive uses oem0..oem8 (OemInfMap ff 80); our INF folder has oem0 and oem5.
    let svc = "ControlSet001\\Services\\viostor";
    assert_eq!(dword(&h, svc, "Start"), 0);
    assert_eq!(
        val(&h, svc, "Owners").as_multi_string().unwrap(),
        vec!["oem9.inf"]
    );
    assert_eq!(
        val(&h, "DriverDatabase", "OemInfMap").data,
        vec![0xff, 0xc0]
    );
    let inf = "DriverDatabase\\DriverInfFiles\\oem9.inf";
    let pkg = string(&h, inf, "Active");
    assert!(pkg.starts_with("viostor.inf_amd64_"), "{pkg}");
    assert_eq!(
        val(
            &h,
            "DriverDatabase\\DeviceIds\\PCI\\VEN_1AF4&DEV_1001",
            "oem9.inf"
        )
        .data,
        vec![2, 0xff, 0, 0]
    );
    // Existing packages are untouched.
    assert_eq!(
        string(&h, "DriverDatabase\\DriverInfFiles\\oem2.inf", "Active"),
        "vmci.inf_amd64_5e38a278d114b813"
    );
    let pk = format!("DriverDatabase\\DriverPackages\\{pkg}");
    let mut added = vec![
        format!("{svc}\\Parameters\\PnpInterface"),
        format!("DriverDatabase\\DriverInfFiles\\oem9.inf"),
        format!(
            "{pk}\\Configurations\\viostor_inst\\Device\\Interrupt Management\\MessageSignaledInterruptProperties"
        ),
        format!("{pk}\\Configurations\\viostor_inst\\Driver"),
        format!("{pk}\\Configurations\\viostor_inst\\Services\\viostor\\Parameters\\PnpInterface"),
    ];
    for id in [
        "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
        "PCI\\VEN_1AF4&DEV_1001",
        "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01",
    ] {
        added.push(format!("{pk}\\Descriptors\\{id}"));
        added.push(format!("DriverDatabase\\DeviceIds\\{id}"));
    }
    let old_keys = hivex_keys(&system);
    let mut want = with_parents(&added);
    if let Some(old) = old_keys {
        want = want.difference(&old).cloned().collect();
    }
    check_hivex(&system, &hive_after_bytes(&p, SYSTEM), &want);
}

#[test]
fn a_drivers_hive_gets_the_same_database_entries() {
    let src = fake_virtio_win();
    let v = WIN2022;
    let mut g = guest(v, &system_hive(v).build());
    let drivers = hive::testkit::HiveBuilder::new()
        .value("DriverDatabase", "OemInfMap", ValueType::Binary, &[0x80])
        .key("DriverDatabase\\DriverPackages")
        .build();
    g.add_file("/Windows/System32/config/DRIVERS", &drivers);
    let rep = report(v);
    let r = recipe("[[step]]\nfixer = \"virtio-win\"\ninclude = [\"viostor\"]\n");
    let p = run(&r, &rep, &g, &virtio_opts(src.path(), &[])).unwrap();
    let sys = hive_after(&p, SYSTEM);
    let drv = hive_after(&p, "/Windows/System32/config/DRIVERS");
    // The number is free in both hives (SYSTEM: oem0..2 and files oem0, oem5; DRIVERS: oem0).
    let inf = "DriverDatabase\\DriverInfFiles\\oem3.inf";
    let pkg = string(&sys, inf, "Active");
    assert_eq!(string(&drv, inf, "Active"), pkg);
    let pk = format!("DriverDatabase\\DriverPackages\\{pkg}");
    for name in [
        "",
        "InfName",
        "Catalog",
        "Provider",
        "OemPath",
        "SignerName",
    ] {
        assert_eq!(string(&sys, &pk, name), string(&drv, &pk, name), "{name:?}");
    }
    assert_eq!(val(&sys, &pk, "Version"), val(&drv, &pk, "Version"));
    assert_eq!(val(&drv, "DriverDatabase", "OemInfMap").data, vec![0x90]);
    assert_eq!(val(&sys, "DriverDatabase", "OemInfMap").data, vec![0xf0]);
    let reg = p
        .changes()
        .find_map(|c| match c {
            Change::EditHive { path, reg, .. } if path.ends_with("DRIVERS") => Some(reg.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        reg.contains(&format!(
            "[HKEY_LOCAL_MACHINE\\DRIVERS\\{pk}]\n@=\"oem3.inf\"\n"
        )),
        "{reg}"
    );
    // Services live in SYSTEM only.
    assert!(!has_key(&drv, "ControlSet001"));
    // A DRIVERS hive without a database (not Windows 8+'s layout) is left alone.
    let mut g = guest(v, &system_hive(v).build());
    g.add_file(
        "/Windows/System32/config/DRIVERS",
        &hive::testkit::HiveBuilder::new().key("Other").build(),
    );
    let p = run(&r, &rep, &g, &virtio_opts(src.path(), &[])).unwrap();
    assert!(!p.changes().any(|c| c.path().ends_with("DRIVERS")));
    // DRIVERS has the database and SYSTEM does not (the key is a link at run time): only
    // DRIVERS is registered in; SYSTEM still gets the service.
    let v = WIN2022;
    // The synthetic 2008 R2 SYSTEM hive has no DriverDatabase key; use it under a 2022 report.
    let sys = system_hive(WIN2008R2).build();
    let mut g = guest(v, &sys);
    g.add_file("/Windows/System32/config/DRIVERS", &drivers);
    let p = run(&r, &report(v), &g, &virtio_opts(src.path(), &[])).unwrap();
    let s2 = hive_after(&p, SYSTEM);
    assert!(!has_key(&s2, "DriverDatabase"));
    assert_eq!(dword(&s2, "ControlSet001\\Services\\viostor", "Start"), 0);
    let d2 = hive_after(&p, "/Windows/System32/config/DRIVERS");
    assert_eq!(val(&d2, "DriverDatabase", "OemInfMap").data, vec![0xc0]);
}

/// The `.reg` text of every hive edit of `p`, with the two import timestamps masked.
fn golden_text(p: &Plan) -> String {
    let mut out = String::new();
    for c in p.changes() {
        if let Change::EditHive { path, reg, .. } = c {
            out.push_str(&format!("; {path}\n"));
            for line in reg.lines() {
                let masked = ["\"ImportDate\"=", "\"UpdateDate\"="]
                    .iter()
                    .find(|k| line.starts_with(**k))
                    .map_or_else(|| line.to_owned(), |k| format!("{k}<filetime>"));
                out.push_str(&masked);
                out.push('\n');
            }
        }
    }
    out
}

/// The registry changes per Windows version, against `tests/windows-golden/<version>.reg`
/// (`REHOST_BLESS=1` rewrites them), so every value of the layout is reviewed as text.
#[test]
fn golden_reg_per_version() {
    let src = fake_virtio_win();
    let r = recipe(
        "[[step]]\nfixer = \"virtio-win\"\n\
         [[step]]\nfixer = \"windows-hypervisor-services\"\n\
         [[step]]\nfixer = \"windows-san-policy\"\n\
         [[step]]\nfixer = \"windows-crash-control\"\n",
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/windows-golden");
    let bless = std::env::var_os("REHOST_BLESS").is_some();
    for (name, v) in [
        ("win2008r2", WIN2008R2),
        ("win2012r2", WIN2012R2),
        ("win2016", WIN2016),
        ("win2019", WIN2019),
        ("win2022", WIN2022),
    ] {
        let g = guest(v, &system_hive(v).build());
        let p = run(&r, &report(v), &g, &virtio_opts(src.path(), &[])).unwrap();
        // The source's host path is part of OemPath; make it stable.
        let text = golden_text(&p).replace(&src.path().display().to_string(), "<virtio-win>");
        let file = dir.join(format!("{name}.reg"));
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e} (REHOST_BLESS=1 writes it)", file.display()));
        assert!(
            text == want,
            "{name}: registry changes differ from the golden file:\n{}",
            crate::diff::unified(&file.display().to_string(), &want, &text, 3, 200)
        );
    }
}
