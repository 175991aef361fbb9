//! Fuzz harness body for the Windows fixers (house style S17): a guest whose SYSTEM hive is
//! the fuzzer's input. Hive bytes come from the guest disk, so every fixer must turn any of them
//! into a plan or an error, never a panic or a hang.

use std::path::Path;

use super::testkit::{WIN2019, report};
use crate::testkit::MemFs;

/// Plans (and applies, and plans again) every Windows fixer over a Windows Server 2019 guest
/// whose `SYSTEM` hive is `system`; `virtio_win` adds the `virtio-win` step with that source.
pub fn fuzz_windows(system: &[u8], virtio_win: Option<&Path>) {
    let mut g = MemFs::new();
    g.add_file("/Windows/System32/config/SYSTEM", system)
        .add_file("/Windows/INF/oem0.inf", b"")
        .add_dir("/Windows/System32/DriverStore/FileRepository");
    let rep = report(WIN2019);
    let mut steps = String::from(
        "[[step]]\nfixer = \"windows-hypervisor-services\"\n\
         [[step]]\nfixer = \"windows-san-policy\"\n\
         [[step]]\nfixer = \"windows-crash-control\"\n\
         [[step]]\nfixer = \"windows-registry\"\nkey = 'CurrentControlSet\\Services\\x'\nvalue = \"v\"\ntype = \"dword\"\ndata = \"1\"\n",
    );
    let mut opts = crate::PlanOptions::default();
    if let Some(src) = virtio_win {
        steps.insert_str(0, "[[step]]\nfixer = \"virtio-win\"\n");
        let mut t = toml::Table::new();
        t.insert(
            "virtio_win".into(),
            toml::Value::String(src.display().to_string()),
        );
        opts.overrides.insert("virtio-win".into(), t);
    }
    let text = format!(
        "schema = 1\nname = \"fuzz\"\ndescription = \"windows\"\n[match]\nos_type = \"windows\"\n{steps}"
    );
    let Ok(recipe) = crate::Recipe::parse(&text, crate::Origin::Inline) else {
        return;
    };
    let os = &rep.operating_systems[0];
    if let Ok(p) = crate::plan(&recipe, &rep, os, &g, &opts) {
        let _ = p.render_human();
        let _ = p.to_json();
        let mut fixed = g.clone();
        if crate::apply(&p, &mut fixed).is_ok() {
            let _ = crate::plan(&recipe, &rep, os, &fixed, &opts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::system_hive;
    use super::*;

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn fuzz_windows_survives_mutated_system_hives() {
        let iters: u64 = std::env::var("REHOST_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let src = tempfile::tempdir().unwrap();
        drivers::testkit::FakeTree::standard()
            .write_iso_layout(src.path())
            .unwrap();
        let seed = system_hive(WIN2019).build();
        assert!(hive::Hive::from_bytes(seed.clone()).is_ok());
        fuzz_windows(&seed, Some(src.path()));
        let mut state = 0x1234_5678_9abc_def1u64;
        for i in 0..iters {
            let mut d = seed.clone();
            let r = xorshift(&mut state);
            if r.is_multiple_of(8) {
                d.truncate(usize::try_from(r >> 8).unwrap() % (d.len() + 1));
            } else {
                for _ in 0..1 + r % 8 {
                    // Past the 4 KiB base block most of the time, where the checksum does not
                    // catch the change and the cells are parsed.
                    let at = usize::try_from(xorshift(&mut state)).unwrap() % d.len();
                    d[at] ^= u8::try_from(xorshift(&mut state) & 0xff).unwrap().max(1);
                }
            }
            // The catalog scan is the slow part: every 25th run includes virtio-win.
            fuzz_windows(&d, i.is_multiple_of(25).then_some(src.path()));
        }
    }
}
