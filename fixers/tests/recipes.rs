//! Checks over the whole shipped recipe set (house style S18).

use std::collections::BTreeSet;

use fixers::testkit::{MemFs, SyntheticOs, synthetic_report};
use fixers::{Origin, PlanOptions, RecipeSet, apply, lint, plan, registry};

/// Every distro release the issue promises, as (distro, major, minor).
const SUPPORTED: &[(&str, u32, u32)] = &[
    ("debian", 10, 13),
    ("debian", 11, 8),
    ("debian", 12, 4),
    ("ubuntu", 18, 4),
    ("ubuntu", 20, 4),
    ("ubuntu", 22, 4),
    ("ubuntu", 24, 4),
    ("rhel", 7, 9),
    ("rhel", 8, 9),
    ("rhel", 9, 4),
    ("centos", 7, 9),
    ("centos", 8, 5),
    ("rocky", 8, 9),
    ("rocky", 9, 3),
    ("almalinux", 9, 3),
    ("oraclelinux", 7, 9),
    ("oraclelinux", 9, 2),
    ("fedora", 39, 0),
    ("sles", 12, 5),
    ("sles", 15, 5),
    ("opensuse", 15, 5),
];

/// A small VMware-style guest every recipe has work to do on.
fn toy_guest() -> MemFs {
    let mut g = MemFs::new();
    g.add_file(
        "/etc/fstab",
        b"/dev/sda1 / ext4 defaults 0 1\n/dev/sda5 none swap sw 0 0\n",
    )
    .add_file("/etc/default/grub", b"GRUB_CMDLINE_LINUX=\"quiet\"\n")
    .add_file(
        "/boot/grub2/grub.cfg",
        b"menuentry 'x' {\n\tlinux /vmlinuz root=/dev/sda1 ro\n}\n",
    )
    .add_file(
        "/etc/sysconfig/network-scripts/ifcfg-ens192",
        b"DEVICE=ens192\nHWADDR=00:50:56:00:00:01\nBOOTPROTO=static\nIPADDR=10.0.0.2\nPREFIX=24\n",
    )
    .add_file("/etc/blkid/blkid.tab", b"x\n");
    g
}

#[test]
fn every_shipped_recipe_parses_lints_and_has_a_description() {
    let set = RecipeSet::shipped().unwrap();
    assert!(set.len() >= 5, "{}", set.len());
    for r in set.iter() {
        assert!(matches!(r.origin, Origin::Shipped(_)), "{}", r.name);
        assert!(!r.description.trim().is_empty(), "{}", r.name);
        assert_eq!(lint(r), vec![], "{}", r.name);
        // Windows recipes are checked on the Windows images (tests/windows.rs).
        assert!(
            matches!(r.matcher.os_type.as_deref(), Some("linux" | "windows")),
            "{}",
            r.name
        );
    }
}

#[test]
fn names_are_unique_and_every_referenced_fixer_exists() {
    let set = RecipeSet::shipped().unwrap();
    // shipped() refuses duplicate names; the file names are unique as well.
    let names: BTreeSet<&str> = set.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.len(), set.len());
    let fixers: BTreeSet<&str> = registry().iter().map(|f| f.name()).collect();
    assert_eq!(fixers.len(), registry().len(), "fixer names are unique");
    for r in set.iter() {
        for s in &r.steps {
            assert!(fixers.contains(s.fixer.as_str()), "{}: {}", r.name, s.fixer);
        }
    }
}

#[test]
fn every_supported_release_has_exactly_one_recipe_and_every_recipe_is_used() {
    let set = RecipeSet::shipped().unwrap();
    let mut used = BTreeSet::new();
    for &(distro, major, minor) in SUPPORTED {
        let rep = synthetic_report(&SyntheticOs::new(distro, major, minor));
        let m = set.matching(&rep, &rep.operating_systems[0]);
        let names: Vec<&str> = m.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names.len(), 1, "{distro} {major}.{minor}: {names:?}");
        used.insert(names[0].to_owned());
    }
    let all: BTreeSet<String> = set
        .iter()
        .filter(|r| r.matcher.os_type.as_deref() == Some("linux"))
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(used, all, "recipes no supported release uses");
    // Out of range releases match nothing.
    for (d, ma, mi) in [
        ("debian", 9, 0),
        ("ubuntu", 16, 4),
        ("rhel", 10, 0),
        ("sles", 11, 4),
    ] {
        let rep = synthetic_report(&SyntheticOs::new(d, ma, mi));
        assert!(
            set.matching(&rep, &rep.operating_systems[0]).is_empty(),
            "{d} {ma}"
        );
    }
}

#[test]
fn every_recipe_plans_applies_and_is_idempotent_on_a_toy_guest() {
    let set = RecipeSet::shipped().unwrap();
    for r in set
        .iter()
        .filter(|r| r.matcher.os_type.as_deref() == Some("linux"))
    {
        let &(d, ma, mi) = SUPPORTED
            .iter()
            .find(|&&(d, ma, mi)| {
                let rep = synthetic_report(&SyntheticOs::new(d, ma, mi));
                r.matches(&rep, &rep.operating_systems[0])
            })
            .unwrap();
        let rep = synthetic_report(&SyntheticOs::new(d, ma, mi));
        let os = &rep.operating_systems[0];
        let mut g = toy_guest();
        let before = g.clone();
        let p = plan(r, &rep, os, &g, &PlanOptions::default()).unwrap();
        assert_eq!(g, before, "{}: planning must not write", r.name);
        assert_eq!(p.recipe, r.name);
        assert_eq!(p.steps.len(), r.steps.len());
        let touched: BTreeSet<&str> = p.changes().map(|c| c.path()).collect();
        // SUSE keeps kernel NIC names (eth0); the others move to the predictable ens3.
        let nic = if r.name == "suse" { "eth0" } else { "ens3" };
        let ifcfg = format!("/etc/sysconfig/network-scripts/ifcfg-{nic}");
        for f in [
            "/etc/fstab",
            "/etc/default/grub",
            "/boot/grub2/grub.cfg",
            ifcfg.as_str(),
            "/etc/blkid/blkid.tab",
        ] {
            assert!(
                touched.contains(f),
                "{}: {f} not in plan: {touched:?}",
                r.name
            );
        }
        apply(&p, &mut g).unwrap();
        assert_eq!(
            g.file("/etc/fstab").unwrap(),
            b"UUID=11111111-2222-3333-4444-555555555555 / ext4 defaults 0 1\n/dev/vda5 none swap sw 0 0\n"
        );
        assert_eq!(
            g.file(&ifcfg).unwrap(),
            format!("DEVICE={nic}\nBOOTPROTO=static\nIPADDR=10.0.0.2\nPREFIX=24\n").as_bytes()
        );
        assert!(
            g.file("/etc/sysconfig/network-scripts/ifcfg-ens192")
                .is_none()
        );
        let again = plan(r, &rep, os, &g, &PlanOptions::default()).unwrap();
        assert!(again.is_empty(), "{}: {}", r.name, again.render_human());
    }
}
