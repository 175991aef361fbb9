//! Idempotence beyond the golden cases: the golden inputs with one line deleted, duplicated or
//! renamed (`ens` → `eth`), planned, applied and planned again under both network policies,
//! must plan nothing the second time. Applying must never find the plan stale.

use std::path::Path;

use fixers::testkit::{MemFs, SyntheticOs, synthetic_report};
use fixers::{Origin, PlanOptions, Recipe, apply, plan};

/// Deterministic runs over all cases (each run picks a case, a file, a line and an edit).
const RUNS: u64 = 300;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn recipe(policy: &str, target: &str) -> Recipe {
    let text = format!(
        "schema = 1\nname = \"all\"\ndescription = \"every fixer\"\n[match]\nos_type = \"linux\"\n\
         [[step]]\nfixer = \"block-device-names\"\n[[step]]\nfixer = \"network\"\n\
         policy = \"{policy}\"\ntarget_name = \"{target}\"\n[[step]]\nfixer = \"console\"\n\
         [[step]]\nfixer = \"caches\"\n"
    );
    Recipe::parse(&text, Origin::Inline).unwrap()
}

#[test]
fn second_plan_is_empty_on_mutated_golden_guests() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<_> = std::fs::read_dir(golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.toml").exists())
        .collect();
    dirs.sort();
    let recipes = [recipe("preserve", "ens3"), recipe("dhcp", "eth0")];
    let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
    let os = &rep.operating_systems[0];
    let opts = PlanOptions::default();
    let mut state = 0x853c_49e6_748f_ea9bu64;
    for run in 0..RUNS {
        let d = &dirs[usize::try_from(run).unwrap() % dirs.len()];
        let mut g = MemFs::from_host_dir(&d.join("input")).unwrap();
        let files = g.files();
        let keys: Vec<&String> = files.keys().collect();
        let k = keys[usize::try_from(xorshift(&mut state)).unwrap() % keys.len()];
        let text = String::from_utf8_lossy(&files[k]).into_owned();
        let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
        if lines.is_empty() {
            continue;
        }
        let r = xorshift(&mut state);
        let i = usize::try_from(r).unwrap() % lines.len();
        match r % 3 {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            _ => lines[i] = lines[i].replace("ens", "eth"),
        }
        g.add_file(k, lines.concat().as_bytes());
        for r in &recipes {
            let mut fixed = g.clone();
            let p = plan(r, &rep, os, &fixed, &opts).unwrap();
            apply(&p, &mut fixed).unwrap();
            let again = plan(r, &rep, os, &fixed, &opts).unwrap();
            assert!(
                again.is_empty(),
                "run {run}: {} with {k} edited:\n{}",
                d.display(),
                again.render_human()
            );
        }
    }
}
