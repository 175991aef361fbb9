//! Tests of the whole fixer: synthetic guests with fake modules, and guests made of the host's
//! real kernel modules checked with the host's modprobe, modinfo and lsinitramfs.

use std::path::{Path, PathBuf};

use super::container::{self, Codec};
use super::cpio::{self, Entry};
use super::modinfo::tests::fake_module;
use super::*;
use crate::testkit::{MemFs, SyntheticOs, synthetic_report};

/// A host kernel whose virtio_blk is a loadable module: (its modules directory, version).
pub(crate) fn host_kernel() -> Option<(PathBuf, String)> {
    let mut found = None;
    if let Ok(rd) = std::fs::read_dir("/lib/modules") {
        let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        dirs.sort();
        for d in dirs {
            if host_module_path(&d, "virtio_blk").is_some() {
                let v = d.file_name()?.to_string_lossy().into_owned();
                found = Some((d, v));
            }
        }
    }
    if found.is_none() {
        println!("skipping: no host kernel with virtio_blk as a module under /lib/modules");
    }
    found
}

/// The relative path of module `name` in a host modules directory, from its modules.dep.
pub(crate) fn host_module_path(dir: &Path, name: &str) -> Option<String> {
    let dep = std::fs::read_to_string(dir.join("modules.dep")).ok()?;
    dep.lines()
        .filter_map(|l| l.split_once(':').map(|(p, _)| p))
        .find(|p| modinfo::module_name(p).as_deref() == Some(name))
        .map(str::to_owned)
}

fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut b = Vec::new();
    cpio::write(&mut b, entries, 1).unwrap();
    b
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finish().unwrap()
}

const KVER: &str = "6.1.0-9-amd64";

fn xz(data: &[u8]) -> Vec<u8> {
    let mut w =
        lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    w.finish().unwrap()
}

/// A Debian-like guest: virtio_pci built in; virtio_blk, virtio_scsi (needs scsi_mod), and
/// virtio_net (needs net_failover, which needs failover) as `.ko.xz`; an initramfs (early
/// microcode + gzip main archive) holding only scsi_mod, decompressed as initramfs-tools does.
fn debian_guest() -> MemFs {
    let mut g = MemFs::new();
    let md = format!("/lib/modules/{KVER}");
    let mods: &[(&str, &str, &str)] = &[
        (
            "kernel/drivers/block/virtio_blk.ko.xz",
            "name=virtio_blk\nalias=virtio:d00000002v*\ndepends=",
            "",
        ),
        (
            "kernel/drivers/scsi/virtio_scsi.ko.xz",
            "name=virtio_scsi\nalias=virtio:d00000008v*\ndepends=scsi_mod",
            "",
        ),
        (
            "kernel/drivers/scsi/scsi_mod.ko.xz",
            "name=scsi_mod\ndepends=scsi_common",
            "scsi_x",
        ),
        (
            "kernel/drivers/scsi/scsi_common.ko.xz",
            "name=scsi_common\ndepends=",
            "",
        ),
        (
            "kernel/drivers/net/virtio_net.ko.xz",
            "name=virtio_net\nalias=virtio:d00000001v*\ndepends=net_failover\nsoftdep=pre: crc32c_generic",
            "",
        ),
        (
            "kernel/drivers/net/net_failover.ko.xz",
            "name=net_failover\ndepends=failover",
            "net_failover_create",
        ),
        (
            "kernel/net/core/failover.ko.xz",
            "name=failover\ndepends=",
            "failover_register",
        ),
    ];
    let mut dep = String::new();
    for (p, mi, sym) in mods {
        let syms: Vec<&str> = if sym.is_empty() { vec![] } else { vec![*sym] };
        g.add_file(&format!("{md}/{p}"), &xz(&fake_module(mi, &syms)));
        dep.push_str(&format!("{p}:\n"));
    }
    g.add_file(&format!("{md}/modules.dep"), dep.as_bytes());
    g.add_file(
        &format!("{md}/modules.builtin"),
        b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
    );
    g.add_file(&format!("/boot/vmlinuz-{KVER}"), b"kernel");
    let early = archive(&[
        Entry::dir("kernel", 0o755),
        Entry::file("kernel/x86/microcode/GenuineIntel.bin", 0o644, vec![7; 64]),
    ]);
    let imd = format!("usr/lib/modules/{KVER}");
    let main = archive(&[
        Entry::dir("usr", 0o755),
        Entry::dir("usr/lib", 0o755),
        Entry {
            data: b"usr/lib".to_vec(),
            ..Entry::file("lib", 0o777, Vec::new())
        }
        .with_mode(cpio::S_IFLNK | 0o777),
        Entry::dir(&imd, 0o755),
        Entry::file(
            &format!("{imd}/kernel/drivers/scsi/scsi_mod.ko"),
            0o644,
            fake_module("name=scsi_mod\ndepends=scsi_common", &["scsi_x"]),
        ),
        Entry::file(
            &format!("{imd}/kernel/drivers/scsi/scsi_common.ko"),
            0o644,
            fake_module("name=scsi_common\ndepends=", &[]),
        ),
        Entry::file(&format!("{imd}/modules.dep"), 0o644, b"old".to_vec()),
        Entry::file("conf/modules", 0o644, b"ahci\n".to_vec()),
    ]);
    let mut img = early;
    img.extend(gzip(&main));
    g.add_file(&format!("/boot/initrd.img-{KVER}"), &img);
    g.add_file(
        "/etc/initramfs-tools/modules",
        b"# List of modules\nvirtio_net\n",
    );
    g
}

impl Entry {
    fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
}

fn run(g: &MemFs, distro: &str, major: u32, table: toml::Table) -> Outcome {
    let rep = synthetic_report(&SyntheticOs::new(distro, major, 0));
    let ctx = FixContext {
        fs: g,
        report: &rep,
        os: &rep.operating_systems[0],
    };
    Initramfs
        .plan(&ctx, &Params::new(&Initramfs, table))
        .unwrap()
}

fn apply(g: &mut MemFs, o: &Outcome) {
    let plan = crate::Plan {
        recipe: "t".into(),
        root: "/dev/sda1".into(),
        steps: vec![crate::PlannedStep {
            fixer: "initramfs".into(),
            summary: String::new(),
            changes: o.changes.clone(),
        }],
    };
    crate::apply(&plan, g).unwrap();
}

#[test]
fn debian_guest_gets_virtio_and_second_run_plans_nothing() {
    let mut g = debian_guest();
    let before = g
        .file(&format!("/boot/initrd.img-{KVER}"))
        .unwrap()
        .to_vec();
    let o = run(&g, "debian", 12, toml::Table::new());
    let img_path = format!("/boot/initrd.img-{KVER}");
    assert_eq!(
        o.notes,
        vec![
            format!(
                "{img_path}: add virtio_blk, virtio_scsi, virtio_net, net_failover, failover ({} image, 2 segment(s)); regenerate module indexes for 7 modules",
                "gzip"
            ),
            format!("{img_path}: no .pre-rehost copy kept: free space on /boot is unknown"),
        ]
    );
    assert_eq!(o.changes.len(), 2);
    assert_eq!(o.changes[0].path(), img_path);
    let Change::ReplaceFile { path, new, .. } = &o.changes[1] else {
        panic!("{:?}", o.changes[1]);
    };
    assert_eq!(path, "/etc/initramfs-tools/modules");
    assert_eq!(
        String::from_utf8_lossy(new),
        "# List of modules\nvirtio_net\n# added by rehost: boot from virtio disks and NICs\nvirtio_blk\nvirtio_scsi\nvirtio_pci\n"
    );
    apply(&mut g, &o);
    let after = g.file(&img_path).unwrap().to_vec();
    // The early microcode segment is kept byte for byte; the main archive is gzip again.
    let img = container::split(&after).unwrap();
    let early = container::split(&before).unwrap().segments[0].len;
    assert_eq!(after[..early], before[..early]);
    assert_eq!(img.segments.len(), 2);
    assert_eq!(img.segments[1].codec, Codec::Gzip);
    let files = img.merged();
    let imd = format!("usr/lib/modules/{KVER}");
    // Added modules are stored decompressed, like the image's own.
    let vb = &files[&format!("{imd}/kernel/drivers/block/virtio_blk.ko")];
    assert_eq!(
        modinfo::parse("virtio_blk.ko", &vb.data).unwrap().name,
        "virtio_blk"
    );
    assert!(!files.contains_key(&format!("lib/modules/{KVER}/kernel")));
    assert_eq!(
        String::from_utf8_lossy(&files[&format!("{imd}/modules.dep")].data),
        "kernel/drivers/block/virtio_blk.ko:\n\
         kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
         kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
         kernel/drivers/scsi/scsi_common.ko:\n\
         kernel/drivers/scsi/scsi_mod.ko: kernel/drivers/scsi/scsi_common.ko\n\
         kernel/drivers/scsi/virtio_scsi.ko: kernel/drivers/scsi/scsi_mod.ko kernel/drivers/scsi/scsi_common.ko\n\
         kernel/net/core/failover.ko:\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&files[&format!("{imd}/modules.softdep")].data),
        "# Soft dependencies extracted from modules themselves.\nsoftdep virtio_net pre: crc32c_generic\n"
    );
    let alias = index::read_all(&files[&format!("{imd}/modules.alias.bin")].data).unwrap();
    let pairs: Vec<(&str, &str)> = alias
        .iter()
        .map(|r| (r.key.as_str(), r.value.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("virtio:d00000001v*", "virtio_net"),
            ("virtio:d00000002v*", "virtio_blk"),
            ("virtio:d00000008v*", "virtio_scsi")
        ]
    );
    let syms = index::read_all(&files[&format!("{imd}/modules.symbols.bin")].data).unwrap();
    assert_eq!(syms.len(), 3);
    assert_eq!(
        String::from_utf8_lossy(&files["conf/modules"].data),
        "ahci\nvirtio_blk\nvirtio_scsi\nvirtio_net\n"
    );
    // Idempotent.
    let again = run(&g, "debian", 12, toml::Table::new());
    assert_eq!(again.changes, vec![]);
}

/// An image over the 4 MiB text-file limit plans and applies (apply re-reads it to check it is
/// unchanged).
#[test]
fn large_image_applies() {
    let mut g = debian_guest();
    let mut rng = 1u64;
    let noise: Vec<u8> = (0..5 << 20)
        .map(|_| u8::try_from(xorshift(&mut rng) & 0xff).unwrap())
        .collect();
    let main = archive(&[
        Entry::file("big", 0o644, noise),
        Entry::dir(&format!("usr/lib/modules/{KVER}"), 0o755),
    ]);
    g.add_file(&format!("/boot/initrd.img-{KVER}"), &gzip(&main));
    let o = run(&g, "debian", 12, toml::Table::new());
    assert_eq!(o.changes.len(), 2, "{:?}", o.notes);
    apply(&mut g, &o);
    let img = container::split(g.file(&format!("/boot/initrd.img-{KVER}")).unwrap()).unwrap();
    assert_eq!(img.merged()["big"].data.len(), 5 << 20);
    assert_eq!(run(&g, "debian", 12, toml::Table::new()).changes, vec![]);
}

#[test]
fn rhel_sysconfig_kernel_is_not_given_a_suse_variable() {
    let mut g = debian_guest();
    g.add_file(
        "/etc/sysconfig/kernel",
        b"UPDATEDEFAULT=yes\nDEFAULTKERNEL=kernel-core\n",
    );
    let o = run(&g, "rhel", 9, toml::Table::new());
    assert!(
        o.changes
            .iter()
            .all(|c| c.path() != "/etc/sysconfig/kernel"),
        "{:?}",
        o.changes.iter().map(Change::path).collect::<Vec<_>>()
    );
    // On SUSE the same file gets the variable.
    let o = run(&g, "sles", 15, toml::Table::new());
    assert!(
        o.changes
            .iter()
            .any(|c| c.path() == "/etc/sysconfig/kernel")
    );
}

#[test]
fn dracut_and_suse_configs() {
    let mut g = debian_guest();
    g.add_dir("/etc/dracut.conf.d");
    g.add_file(
        "/etc/sysconfig/kernel",
        b"# kernel\nINITRD_MODULES=\"ahci virtio_blk\"\nOTHER=1\n",
    );
    let mut t = toml::Table::new();
    t.insert(
        "modules".into(),
        toml::Value::String("virtio_blk,virtio-net".into()),
    );
    t.insert("keep_backup".into(), toml::Value::Boolean(false));
    let o = run(&g, "rhel", 9, t.clone());
    assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
    let paths: Vec<&str> = o.changes.iter().map(Change::path).collect();
    assert_eq!(
        paths,
        [
            format!("/boot/initrd.img-{KVER}").as_str(),
            "/etc/initramfs-tools/modules",
            DRACUT_CONF,
            "/etc/sysconfig/kernel"
        ]
    );
    let Change::CreateFile { content, .. } = &o.changes[2] else {
        panic!()
    };
    assert_eq!(
        String::from_utf8_lossy(content),
        "# added by rehost: boot from virtio disks and NICs\nadd_drivers+=\" virtio_blk virtio_net \"\n"
    );
    let Change::ReplaceFile { new, .. } = &o.changes[3] else {
        panic!()
    };
    assert_eq!(
        String::from_utf8_lossy(new),
        "# kernel\nINITRD_MODULES=\"ahci virtio_blk virtio_net\"\nOTHER=1\n"
    );
    apply(&mut g, &o);
    assert_eq!(run(&g, "rhel", 9, t).changes, vec![]);
}

#[test]
fn all_built_in_or_absent_plans_nothing() {
    let mut g = debian_guest();
    g.add_file(
        &format!("/lib/modules/{KVER}/modules.builtin"),
        b"kernel/drivers/block/virtio_blk.ko\nkernel/drivers/scsi/virtio_scsi.ko\nkernel/drivers/net/virtio_net.ko\nkernel/drivers/virtio/virtio_pci.ko\n",
    );
    let o = run(&g, "debian", 12, toml::Table::new());
    assert_eq!(o, Outcome::default());
    // A module nobody has is named in a note.
    let mut t = toml::Table::new();
    t.insert(
        "modules".into(),
        toml::Value::String("virtio_blk,nosuch".into()),
    );
    let o = run(&g, "debian", 12, t);
    assert_eq!(o.changes, vec![]);
    assert_eq!(
        o.notes,
        vec![format!(
            "kernel {KVER} has neither built in nor as a module: nosuch"
        )]
    );
}

#[test]
fn unreadable_images_are_left_with_a_note_and_bad_params_refused() {
    let mut g = debian_guest();
    g.add_file(&format!("/boot/initrd.img-{KVER}"), b"BZh91AY&SY");
    let o = run(&g, "debian", 12, toml::Table::new());
    assert_eq!(o.changes.len(), 1, "only the generator config");
    assert_eq!(
        o.notes,
        vec![format!(
            "/boot/initrd.img-{KVER}: left unchanged: unsupported initramfs: unsupported initramfs compression: bzip2"
        )]
    );
    assert!(wanted_modules("virtio_blk,../x").is_err());
    assert!(wanted_modules("").is_err());
    assert_eq!(wanted_modules("a-b,c").unwrap(), ["a_b", "c"]);
}

/// Writes the merged files of an image under `root` (regular files and directories only).
fn extract(img: &container::Image, root: &Path) {
    for (name, e) in img.merged() {
        let p = root.join(&name);
        if e.is_dir() {
            std::fs::create_dir_all(&p).unwrap();
        } else if e.is_file() {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, &e.data).unwrap();
        }
    }
}

/// The host's real modules in a guest; the rebuilt image is checked with the host's
/// `modprobe -d`, `modinfo -b` and `lsinitramfs`.
#[test]
fn host_modules_resolve_through_our_indexes() {
    let Some((dir, kver)) = host_kernel() else {
        return;
    };
    let mut g = MemFs::new();
    let gd = format!("/lib/modules/{kver}");
    let mut dep = String::new();
    for name in [
        "virtio_blk",
        "virtio_scsi",
        "virtio_net",
        "virtio_pci",
        "net_failover",
        "failover",
        "scsi_mod",
        "scsi_common",
        "virtio",
        "virtio_ring",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
    ] {
        if let Some(rel) = host_module_path(&dir, name) {
            g.add_file(
                &format!("{gd}/{rel}"),
                &std::fs::read(dir.join(&rel)).unwrap(),
            );
            dep.push_str(&format!("{rel}:\n"));
        }
    }
    g.add_file(&format!("{gd}/modules.dep"), dep.as_bytes());
    if let Ok(b) = std::fs::read(dir.join("modules.builtin")) {
        g.add_file(&format!("{gd}/modules.builtin"), &b);
    }
    g.add_file(&format!("/boot/vmlinuz-{kver}"), b"k");
    let main = archive(&[
        Entry::dir("lib", 0o755),
        Entry::dir("lib/modules", 0o755),
        Entry::file("init", 0o755, b"#!/bin/sh\n".to_vec()),
    ]);
    let img0 = zstd::stream::encode_all(&main[..], 3).unwrap();
    let ip = format!("/boot/initrd.img-{kver}");
    g.add_file(&ip, &img0);
    let o = run(&g, "debian", 12, toml::Table::new());
    assert!(o.notes[0].contains("add virtio_blk"), "{:?}", o.notes);
    apply(&mut g, &o);
    let img_bytes = g.file(&ip).unwrap().to_vec();
    let img = container::split(&img_bytes).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    extract(&img, tmp.path());
    let show = |m: &str| {
        std::process::Command::new("modprobe")
            .arg("-d")
            .arg(tmp.path())
            .args(["-S", &kver, "--show-depends", m])
            .output()
    };
    let Ok(out) = show("virtio_net") else {
        println!("skipping: modprobe not found");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let md = tmp.path().join("lib/modules").join(&kver);
    let loads: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|l| {
            l.trim()
                .trim_start_matches(&*md.to_string_lossy())
                .to_owned()
        })
        .collect();
    // Load order: failover, net_failover, virtio_net (each .ko, stored decompressed).
    let net: Vec<&str> = loads
        .iter()
        .map(|s| s.rsplit('/').next().unwrap())
        .collect();
    assert!(
        net.ends_with(&["virtio_net.ko"]),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if host_module_path(&dir, "failover").is_some() {
        assert_eq!(
            net,
            ["failover.ko", "net_failover.ko", "virtio_net.ko"],
            "{text}"
        );
    }
    // Aliases resolve: the virtio block device id.
    let out = show("virtio:d00000002v00001AF4").unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.trim_end().ends_with("virtio_blk.ko"), "{t}");
    let out = show("virtio_scsi").unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("scsi_mod.ko") && t.trim_end().ends_with("virtio_scsi.ko"),
        "{t}"
    );
    // modinfo reads the added module through our dep index.
    let out = std::process::Command::new("modinfo")
        .arg("-b")
        .arg(tmp.path())
        .args(["-k", &kver, "-F", "name", "virtio_blk"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "virtio_blk");
    // lsinitramfs lists the appended segment.
    let f = tmp.path().join("initrd.img");
    std::fs::write(&f, &img_bytes).unwrap();
    match std::process::Command::new("lsinitramfs").arg(&f).output() {
        Ok(out) => {
            let t = String::from_utf8_lossy(&out.stdout);
            assert!(
                t.contains(&format!(
                    "lib/modules/{kver}/kernel/drivers/block/virtio_blk.ko"
                )),
                "{t}"
            );
            assert!(
                t.contains(&format!("lib/modules/{kver}/modules.dep.bin")),
                "{t}"
            );
        }
        Err(_) => println!("skipping: lsinitramfs not found"),
    }
    assert_eq!(run(&g, "debian", 12, toml::Table::new()).changes, vec![]);
}

/// The host's own initramfs (if readable) splits, and a rebuild keeps its bytes.
#[test]
fn host_initramfs_splits() {
    let Ok(rd) = std::fs::read_dir("/boot") else {
        println!("skipping: no /boot");
        return;
    };
    let mut any = false;
    for e in rd.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("initrd.img-") {
            continue;
        }
        let data = std::fs::read(e.path()).unwrap();
        let img = container::split(&data).unwrap();
        let files = img.merged();
        let kver = n.trim_start_matches("initrd.img-");
        assert!(
            files
                .keys()
                .any(|k| k.contains(&format!("modules/{kver}/modules.dep"))),
            "{n}"
        );
        any = true;
    }
    if !any {
        println!("skipping: no /boot/initrd.img-*");
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// 1,000 deterministic mutations (byte flips and truncations) of valid inputs per parser.
#[test]
fn fuzz_harnesses_survive_mutations() {
    let g = debian_guest();
    let image = g
        .file(&format!("/boot/initrd.img-{KVER}"))
        .unwrap()
        .to_vec();
    let plain = archive(&[
        Entry::file("a", 0o644, b"abc".to_vec()),
        Entry::dir("d", 0o755),
    ]);
    let mut uncompressed = plain.clone();
    uncompressed.extend(archive(&[Entry::file("b", 0o644, vec![1; 40])]));
    let module = fake_module("name=x\ndepends=a,b\nalias=pci:v*\nsoftdep=pre: y", &["s1"]);
    let idx = index::write(&[
        index::Record {
            key: "abc".into(),
            value: "v".into(),
            priority: 1,
        },
        index::Record {
            key: "abd".into(),
            value: "w".into(),
            priority: 2,
        },
    ])
    .unwrap();
    type Harness = fn(&[u8]);
    let seeds: [(&[u8], Harness); 5] = [
        (&image, fuzzing::fuzz_initramfs),
        (&uncompressed, fuzzing::fuzz_initramfs),
        (&plain, fuzzing::fuzz_cpio),
        (&module, fuzzing::fuzz_modinfo),
        (&idx, fuzzing::fuzz_kmod_index),
    ];
    for (s, f) in &seeds {
        f(s);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..1000u64 {
        let (seed, f) = &seeds[usize::try_from(i % 5).unwrap()];
        let mut d = seed.to_vec();
        if i % 7 == 0 {
            let cut = usize::try_from(xorshift(&mut rng) % (d.len() as u64 + 1)).unwrap();
            d.truncate(cut);
        } else {
            for _ in 0..1 + xorshift(&mut rng) % 4 {
                let at = usize::try_from(xorshift(&mut rng) % d.len() as u64).unwrap();
                d[at] ^= u8::try_from(xorshift(&mut rng) % 255 + 1).unwrap();
            }
        }
        f(&d);
    }
}
