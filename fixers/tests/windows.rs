//! The Windows fixers on the synthetic Windows Server images of `images/` (NTFS, real hive
//! files): plan the shipped `windows` recipe with a fake virtio-win tree, apply it through the
//! NTFS writer, then check that inspection sees viostor as a boot-start storage driver, that the
//! hives re-parse with `hivexregedit`, and that a second run plans nothing.

use std::path::Path;
use std::process::Command;

use disk::open::{Access, OpenOptions};
use fixers::{Change, FsApplier, PlanOptions, RecipeSet, apply, plan};
use guestfs::FsReadExt;
use guestfs::write::FsWrite;
use guestfs::write::WriteOptions;

/// Builds (or takes from the cache) an image; `None` (test skipped) without root or tools.
fn image(name: &str) -> Option<std::path::PathBuf> {
    match images::build(name) {
        Ok(p) => Some(p),
        Err(e) => {
            println!("skipping: cannot build {name}: {e}");
            None
        }
    }
}

fn opts(src: &Path) -> PlanOptions {
    let mut t = toml::Table::new();
    t.insert(
        "virtio_win".into(),
        toml::Value::String(src.display().to_string()),
    );
    let mut o = PlanOptions::default();
    o.overrides.insert("virtio-win".into(), t);
    o
}

fn hivex_parses(bytes: &[u8]) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hive");
    std::fs::write(&f, bytes).unwrap();
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg(&f)
        .arg("\\")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(name: &str, driver_database: bool) {
    check_with(name, driver_database, None);
}

/// Runs [`check`] on a copy of image `name`, first replacing its SYSTEM hive with `system`.
fn check_with(name: &str, driver_database: bool, system: Option<&[u8]>) {
    let Some(src_img) = image(name) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(&src_img)
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let vw = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(vw.path())
        .unwrap();
    let target = img.display().to_string();
    if let Some(system) = system {
        let opened =
            disk::open::open(&target, &OpenOptions::new().access(Access::ReadWrite)).unwrap();
        let rw =
            inspect::guest_view_rw(opened.write().unwrap(), None, WriteOptions::new()).unwrap();
        let p = guestfs::GuestPath::parse(b"/Windows/System32/config/SYSTEM").unwrap();
        rw.fs
            .write_file(&p, system, &guestfs::write::NewFileAttrs::file())
            .unwrap();
        rw.fs.flush_all().unwrap();
    }
    let opened = disk::open::open(&target, &OpenOptions::new().access(Access::ReadWrite)).unwrap();
    let report = inspect::inspect(opened.read(), &target, "raw").unwrap();
    let os = report
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
        .expect("a windows os");
    let set = RecipeSet::shipped().unwrap();
    let recipe = set.get("windows").unwrap();
    let o = opts(vw.path());
    let view = inspect::guest_view(opened.read(), None).unwrap();
    let p = plan(recipe, &report, os, &view.fs, &o).unwrap();
    let human = p.render_human();
    assert!(
        human.contains("viostor installed as boot-start storage driver"),
        "{human}"
    );
    assert_eq!(
        human.contains("bound through the driver database"),
        driver_database,
        "{human}"
    );
    let sysroot = &os.windows.as_ref().unwrap().systemroot;
    let system_path = format!("{sysroot}/System32/config/SYSTEM");
    let added: Vec<String> = p
        .changes()
        .filter(|c| matches!(c, Change::CreateFile { .. }))
        .map(|c| c.path().to_owned())
        .collect();
    {
        let rw =
            inspect::guest_view_rw(opened.write().unwrap(), None, WriteOptions::new()).unwrap();
        let mut a = FsApplier::new(&rw.fs);
        let n = apply(&p, &mut a).unwrap();
        assert_eq!(n, p.changes().count());
        rw.fs.flush_all().unwrap();
    }
    drop(opened);
    // Re-open: the files are there, inspection sees viostor boot-start, a second plan is empty.
    let opened = disk::open::open(&target, &OpenOptions::new().access(Access::ReadOnly)).unwrap();
    let report2 = inspect::inspect(opened.read(), &target, "raw").unwrap();
    let os2 = report2
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
        .unwrap();
    let drv = os2
        .windows
        .as_ref()
        .unwrap()
        .drivers
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case("viostor"))
        .expect("viostor reported");
    assert_eq!((drv.start, drv.role.as_str()), (Some(0), "storage"));
    let view2 = inspect::guest_view(opened.read(), None).unwrap();
    for f in &added {
        let planned = p
            .changes()
            .find_map(|c| match c {
                Change::CreateFile { path, content, .. } if path == f => Some(content.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            view2.fs.read_file(f.as_bytes(), 1 << 26).unwrap(),
            planned,
            "{f}"
        );
    }
    ntfs3g_reads(&img, &report2, &os2.root, &p);
    let again = plan(recipe, &report2, os2, &view2.fs, &o).unwrap();
    assert!(again.is_empty(), "{name}: {}", again.render_human());
    let system = view2.fs.read_file(system_path.as_bytes(), 1 << 28).unwrap();
    match hivex_parses(&system) {
        Some(text) => {
            assert!(
                text.contains("[\\ControlSet001\\Services\\viostor]"),
                "{name}"
            );
            assert_eq!(
                text.contains("[\\DriverDatabase\\DriverPackages\\viostor.inf_amd64_"),
                driver_database
            );
            assert_eq!(
                text.contains(
                    "[\\ControlSet001\\Control\\CriticalDeviceDatabase\\pci#ven_1af4&dev_1001]"
                ),
                !driver_database
            );
        }
        None => println!("skipping: hivexregedit not found"),
    }
}

#[test]
fn win2008r2_bios() {
    check("win2008r2-bios", false);
}

/// The 2012 R2 image is built hibernated (`hiberfil.sys` starts with `HIBR`): planning refuses
/// it, and nothing is written.
#[test]
fn win2012r2_bios_hibernated_is_refused() {
    let Some(img) = image("win2012r2-bios") else {
        return;
    };
    let before = std::fs::read(&img).unwrap();
    let vw = tempfile::tempdir().unwrap();
    drivers::testkit::FakeTree::standard()
        .write_iso_layout(vw.path())
        .unwrap();
    let target = img.display().to_string();
    let opened = disk::open::open(&target, &OpenOptions::new().access(Access::ReadOnly)).unwrap();
    let report = inspect::inspect(opened.read(), &target, "raw").unwrap();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.code == "windows-hibernated")
    );
    let os = report
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
        .unwrap();
    let set = RecipeSet::shipped().unwrap();
    let view = inspect::guest_view(opened.read(), None).unwrap();
    let e = plan(
        set.get("windows").unwrap(),
        &report,
        os,
        &view.fs,
        &opts(vw.path()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "unsupported windows guest: windows is hibernated or was shut down with fast startup"
        ),
        "{e}"
    );
    drop(opened);
    assert!(std::fs::read(&img).unwrap() == before, "image untouched");
}

#[test]
fn win2016_uefi() {
    check("win2016-uefi", true);
}

#[test]
fn win2019_bios() {
    check("win2019-bios", true);
}

#[test]
fn win2022_uefi() {
    check("win2022-uefi", true);
}

/// The real Windows SYSTEM hive of dissect.regf 3.14's tests (fetched with pip, as the hive
/// crate's tests do), placed in the 2019 image.
#[test]
fn win2019_with_a_real_system_hive() {
    let home = std::env::var_os("HOME").unwrap_or_default();
    let dir = Path::new(&home).join(".cache/rehost/fixtures/dissect-regf-3.14");
    let f = dir.join("SYSTEM");
    if !f.exists() {
        let _ = std::fs::create_dir_all(&dir);
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; cd '{}'; pip download --quiet --no-deps --no-binary :all: dissect-regf==3.14 -d . \
                 && tar xzf dissect_regf-3.14.tar.gz dissect_regf-3.14/tests/_data/SYSTEM.gz \
                 && gzip -dc dissect_regf-3.14/tests/_data/SYSTEM.gz > SYSTEM.tmp && mv SYSTEM.tmp SYSTEM",
                dir.display()
            ))
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("skipping: could not fetch dissect-regf==3.14 with pip");
            return;
        }
    }
    let system = std::fs::read(f).unwrap();
    check_with("win2019-bios", true, Some(&system));
}

/// ntfs-3g's own tools (`ntfscat` on a read-only loop device over the system partition) read
/// every file the plan created with the planned content.
fn ntfs3g_reads(img: &Path, report: &inspect::report::Report, root: &str, p: &fixers::Plan) {
    let Some(dev) = report.devices.iter().find(|d| d.name == root) else {
        panic!("no device {root}");
    };
    let start = dev.start.unwrap_or(0).to_string();
    let size = dev.size.to_string();
    let out = match Command::new("losetup")
        .args(["--find", "--show", "-r", "-o", &start, "--sizelimit", &size])
        .arg(img)
        .output()
    {
        Ok(o) if o.status.success() => o,
        _ => {
            println!("skipping: cannot set up a loop device (needs root and losetup)");
            return;
        }
    };
    let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut failures = Vec::new();
    for c in p.changes() {
        let Change::CreateFile { path, content, .. } = c else {
            continue;
        };
        match Command::new("ntfscat").arg(&loopdev).arg(path).output() {
            Ok(o) if o.status.success() && o.stdout == *content => {}
            Ok(o) => failures.push(format!(
                "{path}: {} bytes read, {} planned: {}",
                o.stdout.len(),
                content.len(),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => {
                println!("skipping: ntfscat: {e}");
                break;
            }
        }
    }
    let _ = Command::new("losetup").arg("-d").arg(&loopdev).status();
    assert!(failures.is_empty(), "{failures:#?}");
}
