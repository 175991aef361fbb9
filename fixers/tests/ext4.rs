//! The real read path: a golden case's input tree in an ext4 image built with `mke2fs -d`, read
//! through `guestfs::ext4::Ext4Fs` over `disk::raw::RawFile`, must plan exactly what the
//! in-memory guest plans (`tests/golden/debian12-ifupdown/plan.json`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use disk::open::Access;
use disk::raw::RawFile;
use fixers::testkit::{SyntheticOs, synthetic_report};
use fixers::{PlanOptions, RecipeSet, plan};
use guestfs::FsRead;
use guestfs::ext4::Ext4Fs;

const ROOT_UUID: &str = "11111111-2222-3333-4444-555555555555";

#[test]
fn ext4_image_plans_like_the_golden_case() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/debian12-ifupdown");
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("root.img");
    let out = match Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-U", ROOT_UUID, "-d"])
        .arg(case.join("input"))
        .arg(&img)
        .arg("8M")
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            eprintln!("skipping: mke2fs not found");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Arc::new(RawFile::open(&img, Access::ReadOnly).unwrap());
    let fs = Ext4Fs::open(dev).unwrap();
    // The report's UUID for the root device comes from the filesystem itself.
    let uuid = fs.info().uuid.unwrap();
    assert_eq!(uuid, ROOT_UUID);
    let mut os = SyntheticOs::new("debian", 12, 4);
    os.devices[1].2 = Some(uuid);
    let report = synthetic_report(&os);
    let set = RecipeSet::shipped().unwrap();
    let recipe = set.get("debian").unwrap();
    let p = plan(
        recipe,
        &report,
        &report.operating_systems[0],
        &fs,
        &PlanOptions::default(),
    )
    .unwrap();
    let golden = std::fs::read_to_string(case.join("plan.json")).unwrap();
    let json = p.to_json() + "\n";
    assert!(
        json == golden,
        "plan differs from the golden one:\n{}",
        fixers::diff::unified("/plan.json", &golden, &json, 3, 200)
    );
}
