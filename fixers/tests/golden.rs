//! Golden tests: each `tests/golden/<case>/` holds an `input/` guest tree and a `case.toml`
//! (distro facts, recipe, parameter overrides); the test checks the plan (`plan.json`, and its
//! human form `plan.txt`), the resulting tree after applying it (`expected/`), and that planning
//! again on the result changes nothing. `REHOST_BLESS=1 cargo test -p rehost-fixers --test
//! golden` rewrites the expected files (review the diff before committing).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fixers::testkit::{MemFs, SyntheticOs, synthetic_report};
use fixers::{PlanOptions, RecipeSet, apply, plan};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    distro: String,
    major: u32,
    minor: u32,
    recipe: String,
    #[serde(default)]
    overrides: BTreeMap<String, toml::Table>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn write_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let _ = std::fs::remove_dir_all(dir);
    for (p, d) in files {
        let f = dir.join(p.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, d).unwrap();
    }
}

fn run_case(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let case: Case =
        toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap()).unwrap();
    let mut guest = MemFs::from_host_dir(&dir.join("input")).unwrap();
    let report = synthetic_report(&SyntheticOs::new(&case.distro, case.major, case.minor));
    let os = &report.operating_systems[0];
    let set = RecipeSet::shipped().unwrap();
    let recipe = set.get(&case.recipe).unwrap();
    assert!(
        recipe.matches(&report, os),
        "{name}: recipe {} must match",
        case.recipe
    );
    let opts = PlanOptions {
        overrides: case.overrides.clone(),
    };
    let p = plan(recipe, &report, os, &guest, &opts).unwrap();
    assert!(!p.is_empty(), "{name}: the input needs fixing");
    let json = p.to_json() + "\n";
    let human = p.render_human();
    let applied = apply(&p, &mut guest).unwrap();
    assert_eq!(applied, p.changes().count());
    let result = guest.files();
    let bless = std::env::var_os("REHOST_BLESS").is_some();
    if bless {
        std::fs::write(dir.join("plan.json"), &json).unwrap();
        std::fs::write(dir.join("plan.txt"), &human).unwrap();
        write_tree(&dir.join("expected"), &result);
    }
    assert_eq!(
        json,
        std::fs::read_to_string(dir.join("plan.json")).unwrap(),
        "{name}: plan.json"
    );
    assert_eq!(
        human,
        std::fs::read_to_string(dir.join("plan.txt")).unwrap(),
        "{name}: plan.txt"
    );
    let expected = MemFs::from_host_dir(&dir.join("expected")).unwrap().files();
    let keys = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&result),
        keys(&expected),
        "{name}: resulting file list"
    );
    for (p, d) in &result {
        assert_eq!(
            String::from_utf8_lossy(d),
            String::from_utf8_lossy(&expected[p]),
            "{name}: {p}"
        );
    }
    // Idempotence: the fixed guest plans nothing.
    let again = plan(recipe, &report, os, &guest, &opts).unwrap();
    assert!(
        again.is_empty(),
        "{name}: second plan not empty:\n{}",
        again.render_human()
    );
    assert!(again.render_human().ends_with("nothing to change\n"));
}

#[test]
fn golden_cases() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "golden cases: {dirs:?}");
    for d in &dirs {
        run_case(d);
    }
}
