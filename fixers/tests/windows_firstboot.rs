//! `windows-firstboot` on the synthetic Windows Server images of `images/` (NTFS, real hive
//! files): the shipped `windows` recipe is planned with a fake virtio-win tree and applied
//! through the NTFS writer; then the first-boot files read back as planned, winlogon's Setup
//! values are in the SYSTEM hive (our reader and `hivexregedit --export`), and a second run
//! plans nothing. Windows itself cannot be booted here, so what the script does at boot is not
//! tested: only its text (see the unit tests next to the fixer).

use std::path::Path;
use std::process::Command;

use disk::open::{Access, OpenOptions};
use fixers::{Change, FsApplier, PlanOptions, RecipeSet, apply, plan};
use guestfs::FsReadExt;
use guestfs::write::WriteOptions;

const CMDLINE: &str = "cmd.exe /c %SystemRoot%\\rehost\\firstboot.cmd";

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

fn check(name: &str, add_driver: bool) {
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
    let opened = disk::open::open(&target, &OpenOptions::new().access(Access::ReadWrite)).unwrap();
    let report = inspect::inspect(opened.read(), &target, "raw").unwrap();
    let os = report
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
        .expect("a windows os");
    let sysroot = os.windows.as_ref().unwrap().systemroot.clone();
    let set = RecipeSet::shipped().unwrap();
    let recipe = set.get("windows").unwrap();
    let o = opts(vw.path());
    let view = inspect::guest_view(opened.read(), None).unwrap();
    let p = plan(recipe, &report, os, &view.fs, &o).unwrap();
    let step = p
        .steps
        .iter()
        .find(|s| s.fixer == "windows-firstboot")
        .expect("the shipped recipe has the first-boot step");
    assert!(step.summary.contains("first boot runs"), "{}", step.summary);
    // The packages virtio-win copies to Drivers\VirtIO are the ones the script installs.
    let staged: Vec<String> = p
        .changes()
        .filter_map(|c| match c {
            Change::CreateFile { path, .. } => path
                .strip_prefix(&format!("{sysroot}/Drivers/VirtIO/"))
                .filter(|n| n.ends_with(".inf"))
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(!staged.is_empty(), "{name}: nothing staged");
    let script_path = format!("{sysroot}/rehost/firstboot.cmd");
    let script = step
        .changes
        .iter()
        .find_map(|c| match c {
            Change::CreateFile { path, content, .. } if *path == script_path => {
                Some(String::from_utf8(content.clone()).unwrap())
            }
            _ => None,
        })
        .expect("script planned");
    for inf in &staged {
        let cmd = if add_driver {
            format!("pnputil.exe\" /add-driver \"%SystemRoot%\\Drivers\\VirtIO\\{inf}\" /install")
        } else {
            format!("pnputil.exe\" -i -a \"%SystemRoot%\\Drivers\\VirtIO\\{inf}\"")
        };
        assert!(script.contains(&cmd), "{name}: {cmd}");
    }
    {
        let rw =
            inspect::guest_view_rw(opened.write().unwrap(), None, WriteOptions::new()).unwrap();
        let mut a = FsApplier::new(&rw.fs);
        assert_eq!(apply(&p, &mut a).unwrap(), p.changes().count());
        rw.fs.flush_all().unwrap();
    }
    drop(opened);
    let opened = disk::open::open(&target, &OpenOptions::new().access(Access::ReadOnly)).unwrap();
    let report2 = inspect::inspect(opened.read(), &target, "raw").unwrap();
    let os2 = report2
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
        .unwrap();
    let view2 = inspect::guest_view(opened.read(), None).unwrap();
    // Every first-boot file reads back as planned.
    for c in &step.changes {
        if let Change::CreateFile { path, content, .. } = c {
            assert_eq!(
                &view2.fs.read_file(path.as_bytes(), 1 << 20).unwrap(),
                content,
                "{path}"
            );
        }
    }
    // Winlogon's values, with our reader.
    let system = view2
        .fs
        .read_file(
            format!("{sysroot}/System32/config/SYSTEM").as_bytes(),
            1 << 28,
        )
        .unwrap();
    let h = hive::Hive::from_bytes(system.clone()).unwrap();
    let setup = h.open_path("Setup").unwrap().expect("Setup key");
    let st = setup.value("SetupType").unwrap().unwrap();
    assert_eq!((st.kind, st.as_dword()), (hive::ValueType::Dword, Some(2)));
    let cl = setup.value("CmdLine").unwrap().unwrap();
    assert_eq!(cl.kind, hive::ValueType::Sz);
    assert_eq!(cl.as_string().unwrap(), CMDLINE);
    // And with hivexregedit, over the whole hive.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("SYSTEM");
    std::fs::write(&f, &system).unwrap();
    match Command::new("hivexregedit")
        .arg("--export")
        .arg(&f)
        .arg("\\")
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let block = text
                .split("\n\n")
                .find(|b| b.starts_with("[\\Setup]"))
                .expect("[\\Setup] exported");
            assert!(
                block.lines().any(|l| l == "\"SetupType\"=dword:00000002"),
                "{block}"
            );
        }
        Err(_) => println!("skipping: hivexregedit not found"),
    }
    let again = plan(recipe, &report2, os2, &view2.fs, &o).unwrap();
    assert!(again.is_empty(), "{name}: {}", again.render_human());
    let step2 = again
        .steps
        .iter()
        .find(|s| s.fixer == "windows-firstboot")
        .unwrap();
    assert!(
        step2.summary.contains("first boot already runs"),
        "{}",
        step2.summary
    );
}

#[test]
fn win2008r2_firstboot() {
    check("win2008r2-bios", false);
}

#[test]
fn win2019_firstboot() {
    check("win2019-bios", true);
}

#[test]
fn win2022_firstboot() {
    check("win2022-uefi", true);
}
