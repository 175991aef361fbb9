//! `initramfs`: makes every installed kernel's initramfs able to boot from virtio, without
//! running guest code.
//!
//! For each kernel in `/boot` with an initramfs, the modules asked for (by default virtio_blk,
//! virtio_scsi, virtio_net, virtio_pci) and their dependencies (from each module's `.modinfo`
//! `depends=` and `softdep=`, closure taken over the guest's own `/lib/modules/KVER`) that are
//! neither built into the kernel (`modules.builtin`) nor already in the initramfs are added to
//! its main archive (recompressed with its codec; early segments such as microcode are kept byte
//! for byte, see [`container`]), together with the module indexes (`modules.dep`, `.alias`, `.softdep`, `.symbols` and the
//! `.bin` forms, see [`depmod`]) regenerated for every module the initramfs then holds, so udev
//! and modprobe in both initramfs-tools and dracut images find them. The generator's own
//! configuration (`/etc/initramfs-tools/modules`, `/etc/dracut.conf.d/rehost-virtio.conf`,
//! SUSE's `INITRD_MODULES`) is extended too, so a later regeneration inside the guest keeps
//! virtio. A second run finds everything present and plans nothing.

use std::collections::{BTreeMap, BTreeSet};

use guestfs::{FileType, FsReadExt};

use super::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Change, Result};

mod container;
mod cpio;
mod depmod;
mod error;
mod index;
mod modinfo;

use cpio::Entry;
use depmod::Module;

/// Largest initramfs image read (distribution images are 20–150 MiB).
pub const MAX_INITRAMFS_BYTES: u64 = 512 << 20;
/// Most bytes all segments of one image may decompress to (a decompression bomb is refused).
pub const MAX_UNPACKED: u64 = 1 << 30;
/// Most modules added to one initramfs (the closure of the default four is under 15).
const MAX_ADDED_MODULES: usize = 256;
/// Most module names a recipe may ask for.
const MAX_WANTED: usize = 32;
/// Most files looked at when walking a module tree without `modules.dep`.
const MAX_TREE_FILES: usize = 200_000;
/// Largest `modules.dep`/`modules.builtin` read from the guest.
const MAX_INDEX_TEXT: u64 = 16 << 20;
/// The dracut configuration file this fixer owns.
const DRACUT_CONF: &str = "/etc/dracut.conf.d/rehost-virtio.conf";

pub(crate) struct Initramfs;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "modules",
        kind: ParamKind::KernelToken,
        default: "\"virtio_blk,virtio_scsi,virtio_net,virtio_pci\"",
        help: "comma-separated kernel modules every initramfs must hold (with their dependencies)",
    },
    ParamSpec {
        name: "keep_backup",
        kind: ParamKind::Bool,
        default: "true",
        help: "keep the old image as <name>.pre-rehost when /boot is known to have room",
    },
];

impl Fixer for Initramfs {
    fn name(&self) -> &'static str {
        "initramfs"
    }

    fn description(&self) -> &'static str {
        "add virtio drivers (and their dependencies) to every kernel's initramfs, and to the initramfs generator's configuration"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let wanted = wanted_modules(params.str("modules"))?;
        let mut out = Outcome::default();
        let mut any_module = false;
        for k in kernels(ctx)? {
            match plan_kernel(ctx, &k, &wanted, params.bool("keep_backup"), &mut out) {
                Ok(loadable) => any_module |= loadable,
                Err(e) => out
                    .notes
                    .push(format!("{}: left unchanged: {e}", k.initramfs)),
            }
        }
        if any_module {
            generator_config(ctx, &wanted, &mut out)?;
        }
        Ok(out)
    }
}

/// The `modules` parameter as names.
fn wanted_modules(s: &str) -> Result<Vec<String>> {
    let names: Vec<String> = s
        .split(',')
        .filter(|n| !n.is_empty())
        .map(modinfo::underscores)
        .collect();
    let ok = |n: &String| {
        (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if names.is_empty() || names.len() > MAX_WANTED || !names.iter().all(ok) {
        return Err(crate::Error::Usage(format!(
            "initramfs: modules = {s:?} is not 1..={MAX_WANTED} comma-separated module names"
        )));
    }
    Ok(names)
}

/// One kernel with an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Kernel {
    version: String,
    /// Canonical guest path of the image.
    initramfs: String,
}

/// Kernels in `/boot` (`vmlinuz-KVER`) and the inspection report, with their initramfs
/// (`initrd.img-KVER`, `initramfs-KVER.img`, `initrd-KVER`).
fn kernels(ctx: &FixContext<'_>) -> Result<Vec<Kernel>> {
    let mut versions: BTreeSet<String> = ctx
        .list("/boot", |n| n.starts_with("vmlinuz-"))?
        .iter()
        .filter_map(|p| {
            p.rsplit('/')
                .next()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    versions.extend(ctx.os.kernels.iter().map(|k| k.version.clone()));
    let mut out: Vec<Kernel> = Vec::new();
    for v in versions {
        if v.is_empty() || v.contains('/') || v.len() > 128 {
            continue;
        }
        let from_report = ctx
            .os
            .kernels
            .iter()
            .filter(|k| k.version == v)
            .filter_map(|k| k.initramfs.clone());
        let candidates = from_report.chain([
            format!("/boot/initrd.img-{v}"),
            format!("/boot/initramfs-{v}.img"),
            format!("/boot/initrd-{v}"),
        ]);
        for c in candidates {
            let Ok(p) = ctx.canonical(&c) else {
                continue;
            };
            if matches!(ctx.fs.lstat(&p), Ok(m) if m.file_type == FileType::Regular) {
                let initramfs = p.to_string();
                if !out.iter().any(|k| k.initramfs == initramfs) {
                    out.push(Kernel {
                        version: v.clone(),
                        initramfs,
                    });
                }
                break;
            }
        }
    }
    Ok(out)
}

/// A module found in the guest's tree.
struct GuestModule {
    /// Path relative to the modules directory.
    rel: String,
    /// The file as stored.
    raw: Vec<u8>,
    /// The ELF object.
    elf: Vec<u8>,
    info: modinfo::ModInfo,
}

/// The guest's `/lib/modules/KVER` (or `/usr/lib/modules/KVER`), its built-in module names and
/// its modules by name (relative path).
struct GuestTree {
    dir: String,
    builtin: BTreeSet<String>,
    paths: BTreeMap<String, String>,
}

fn guest_tree(ctx: &FixContext<'_>, kver: &str) -> Result<Option<GuestTree>> {
    let mut dir = None;
    for d in [
        format!("/lib/modules/{kver}"),
        format!("/usr/lib/modules/{kver}"),
    ] {
        if let Ok(p) = ctx.canonical(&d)
            && matches!(ctx.fs.lstat(&p), Ok(m) if m.file_type == FileType::Directory)
        {
            dir = Some(p.to_string());
            break;
        }
    }
    let Some(dir) = dir else {
        return Ok(None);
    };
    let read = |name: &str| -> Result<Option<String>> {
        let p = format!("{dir}/{name}");
        if !ctx.exists(&p)? {
            return Ok(None);
        }
        let b = ctx.fs.read_file(p.as_bytes(), MAX_INDEX_TEXT)?;
        Ok(Some(String::from_utf8_lossy(&b).into_owned()))
    };
    let builtin = read("modules.builtin")?
        .unwrap_or_default()
        .lines()
        .filter_map(modinfo::module_name)
        .collect();
    let mut paths = BTreeMap::new();
    if let Some(dep) = read("modules.dep")? {
        for l in dep.lines() {
            if let Some((p, _)) = l.split_once(':')
                && let Some(n) = modinfo::module_name(p)
            {
                paths.entry(n).or_insert_with(|| p.to_owned());
            }
        }
    } else {
        walk_modules(ctx, &dir, &mut paths)?;
    }
    Ok(Some(GuestTree {
        dir,
        builtin,
        paths,
    }))
}

/// Finds module files under `dir` when there is no `modules.dep` (bounded walk).
fn walk_modules(
    ctx: &FixContext<'_>,
    dir: &str,
    paths: &mut BTreeMap<String, String>,
) -> Result<()> {
    let mut stack = vec![String::new()];
    let mut seen = 0usize;
    while let Some(rel) = stack.pop() {
        let full = if rel.is_empty() {
            dir.to_owned()
        } else {
            format!("{dir}/{rel}")
        };
        let Ok(entries) = ctx.fs.read_dir_path(full.as_bytes()) else {
            continue;
        };
        for e in entries {
            seen = seen.saturating_add(1);
            if seen > MAX_TREE_FILES {
                return Ok(());
            }
            let Ok(name) = std::str::from_utf8(&e.name) else {
                continue;
            };
            let r = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            match e.file_type {
                FileType::Directory if name != "build" && name != "source" => stack.push(r),
                FileType::Regular => {
                    if let Some(n) = modinfo::module_name(name) {
                        paths.entry(n).or_insert(r);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The closure of `wanted` over the guest's tree: modules to have (built-ins dropped), plus
/// names neither built in nor available.
fn closure(
    ctx: &FixContext<'_>,
    tree: &GuestTree,
    wanted: &[String],
) -> Result<(Vec<GuestModule>, Vec<String>)> {
    let mut todo: Vec<(String, bool)> = wanted.iter().rev().map(|w| (w.clone(), true)).collect();
    let mut done = BTreeSet::new();
    let mut mods = Vec::new();
    let mut missing = Vec::new();
    while let Some((n, hard)) = todo.pop() {
        if !done.insert(n.clone()) || tree.builtin.contains(&n) {
            continue;
        }
        let Some(rel) = tree.paths.get(&n) else {
            if hard {
                missing.push(n);
            }
            continue;
        };
        if mods.len() >= MAX_ADDED_MODULES {
            return Err(error::Error::limit("modules added", MAX_ADDED_MODULES as u64).into());
        }
        let raw = ctx.fs.read_file(
            format!("{}/{rel}", tree.dir).as_bytes(),
            modinfo::MAX_MODULE_BYTES,
        )?;
        let elf = modinfo::decompress(rel, &raw)?;
        let info = modinfo::parse(rel, &elf)?;
        for d in info.depends.iter().rev() {
            todo.push((d.clone(), true));
        }
        // Soft dependencies are loaded when present; a missing one is not an error.
        for d in info.softdep_modules() {
            todo.push((d, false));
        }
        mods.push(GuestModule {
            rel: rel.clone(),
            raw,
            elf,
            info,
        });
    }
    Ok((mods, missing))
}

/// Where the image keeps `lib/modules/KVER`.
fn image_moddir(files: &BTreeMap<String, &Entry>, kver: &str) -> String {
    for d in [
        format!("usr/lib/modules/{kver}"),
        format!("lib/modules/{kver}"),
    ] {
        let under = format!("{d}/");
        if files.contains_key(&d)
            || files
                .range(under.clone()..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&under))
        {
            return d;
        }
    }
    match files.get("lib") {
        Some(e)
            if e.is_symlink()
                && cpio::normalise(&String::from_utf8_lossy(&e.data)) == "usr/lib" =>
        {
            format!("usr/lib/modules/{kver}")
        }
        _ => format!("lib/modules/{kver}"),
    }
}

/// Plans one kernel; returns whether any wanted module is a loadable module for it.
fn plan_kernel(
    ctx: &FixContext<'_>,
    k: &Kernel,
    wanted: &[String],
    keep_backup: bool,
    out: &mut Outcome,
) -> Result<bool> {
    let Some(tree) = guest_tree(ctx, &k.version)? else {
        out.notes.push(format!(
            "{}: no /lib/modules/{} in the guest",
            k.initramfs, k.version
        ));
        return Ok(false);
    };
    let (mods, missing) = closure(ctx, &tree, wanted)?;
    if !missing.is_empty() {
        out.notes.push(format!(
            "kernel {} has neither built in nor as a module: {}",
            k.version,
            missing.join(", ")
        ));
    }
    if mods.is_empty() {
        return Ok(false);
    }
    // The generator's configuration is worth writing even if this image cannot be rebuilt.
    if let Err(e) = plan_image(ctx, k, &mods, wanted, keep_backup, out) {
        out.notes
            .push(format!("{}: left unchanged: {e}", k.initramfs));
    }
    Ok(true)
}

/// Adds what `mods` lacks to the image of `k`.
fn plan_image(
    ctx: &FixContext<'_>,
    k: &Kernel,
    mods: &[GuestModule],
    wanted: &[String],
    keep_backup: bool,
    out: &mut Outcome,
) -> Result<()> {
    let old = ctx
        .fs
        .read_file(k.initramfs.as_bytes(), MAX_INITRAMFS_BYTES)?;
    let img = container::split(&old)?;
    let files = img.merged();
    let moddir = image_moddir(&files, &k.version);
    let prefix = format!("{moddir}/");
    // Modules already in the image, by name.
    let mut present: BTreeMap<String, (String, &Entry)> = BTreeMap::new();
    for (p, e) in files.range(prefix.clone()..) {
        let Some(rel) = p.strip_prefix(&prefix) else {
            break;
        };
        if e.is_file()
            && let Some(n) = modinfo::module_name(rel)
        {
            present.entry(n).or_insert((rel.to_owned(), *e));
        }
    }
    let to_add: Vec<&GuestModule> = mods
        .iter()
        .filter(|m| !present.contains_key(&m.info.name))
        .collect();
    if to_add.is_empty() {
        return Ok(());
    }
    // Store added modules the way the image stores its own: initramfs-tools decompresses
    // them; an image without modules gets plain `.ko`, which every loader reads.
    let compressed_existing = present
        .values()
        .filter(|(r, _)| !r.ends_with(".ko"))
        .count();
    let plain = compressed_existing.saturating_mul(2) <= present.len();
    let mut added: Vec<Entry> = Vec::new();
    let mut index_mods: Vec<Module> = Vec::new();
    for (n, (rel, e)) in &present {
        // A module of the image that does not parse keeps its place in modules.dep.
        let info = modinfo::decompress(rel, &e.data)
            .and_then(|elf| modinfo::parse(rel, &elf))
            .unwrap_or_else(|_| modinfo::ModInfo {
                name: n.clone(),
                ..Default::default()
            });
        index_mods.push(Module {
            path: rel.clone(),
            info,
        });
    }
    let mut dirs = BTreeSet::new();
    for m in &to_add {
        let (rel, data) = if plain && !m.rel.ends_with(".ko") {
            let stem = modinfo::MODULE_SUFFIXES
                .iter()
                .find_map(|s| m.rel.strip_suffix(s))
                .unwrap_or(&m.rel);
            (format!("{stem}.ko"), m.elf.clone())
        } else {
            (m.rel.clone(), m.raw.clone())
        };
        let full = format!("{prefix}{rel}");
        let mut d = full.as_str();
        while let Some((parent, _)) = d.rsplit_once('/') {
            if !files.contains_key(parent) {
                dirs.insert(parent.to_owned());
            }
            d = parent;
        }
        added.push(Entry::file(&full, 0o644, data));
        index_mods.push(Module {
            path: rel,
            info: m.info.clone(),
        });
    }
    index_mods.sort_by(|a, b| a.path.cmp(&b.path));
    let mut entries: Vec<Entry> = dirs.iter().map(|d| Entry::dir(d, 0o755)).collect();
    entries.extend(added);
    for (name, data) in depmod::generate(&index_mods)? {
        entries.push(Entry::file(&format!("{prefix}{name}"), 0o644, data));
    }
    // initramfs-tools loads conf/modules explicitly at boot (MODULES=list images).
    if let Some(e) = files.get("conf/modules") {
        let mut text = String::from_utf8_lossy(&e.data).into_owned();
        let listed: BTreeSet<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        for w in wanted {
            if !listed.contains(w) && to_add.iter().any(|m| &m.info.name == w) {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(w);
                text.push('\n');
            }
        }
        entries.push(Entry::file(
            "conf/modules",
            e.mode & 0o7777,
            text.into_bytes(),
        ));
    }
    let new = container::rebuild(&old, &img, &entries)?;
    let names: Vec<&str> = to_add.iter().map(|m| m.info.name.as_str()).collect();
    out.notes.push(format!(
        "{}: add {} ({} image, {} segment(s)); regenerate module indexes for {} modules",
        k.initramfs,
        names.join(", "),
        img.main_codec().name(),
        img.segments.len(),
        index_mods.len()
    ));
    if keep_backup {
        // FsInfo does not report free space yet, so /boot is never known to have room.
        out.notes.push(format!(
            "{}: no .pre-rehost copy kept: free space on /boot is unknown",
            k.initramfs
        ));
    }
    out.changes.push(Change::ReplaceFile {
        path: k.initramfs.clone(),
        old,
        new,
    });
    Ok(())
}

/// Adds `wanted` to the initramfs generator's configuration.
fn generator_config(ctx: &FixContext<'_>, wanted: &[String], out: &mut Outcome) -> Result<()> {
    let generator = ctx.os.initramfs_generator.as_deref().unwrap_or("");
    // Debian/Ubuntu: one module per line.
    let itools = "/etc/initramfs-tools/modules";
    if let Some((p, text)) = ctx.read_text(itools)? {
        let listed: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| !w.starts_with('#'))
            .collect();
        let add: Vec<&String> = wanted
            .iter()
            .filter(|w| !listed.contains(w.as_str()))
            .collect();
        if !add.is_empty() {
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str("# added by rehost: boot from virtio disks and NICs\n");
            for w in add {
                new.push_str(w);
                new.push('\n');
            }
            out.replace(&p, &text, new);
        }
    } else if generator == "initramfs-tools" && ctx.exists("/etc/initramfs-tools")? {
        let mut content = String::from("# added by rehost: boot from virtio disks and NICs\n");
        for w in wanted {
            content.push_str(w);
            content.push('\n');
        }
        out.changes.push(Change::CreateFile {
            path: itools.to_owned(),
            content: content.into_bytes(),
            mode: 0o644,
        });
    }
    // dracut: a drop-in of our own.
    if generator == "dracut" || ctx.exists("/etc/dracut.conf.d")? {
        let content = format!(
            "# added by rehost: boot from virtio disks and NICs\nadd_drivers+=\" {} \"\n",
            wanted.join(" ")
        );
        match ctx.read_text(DRACUT_CONF)? {
            Some((p, old)) => out.replace(&p, &old, content),
            None => {
                if !ctx.exists("/etc/dracut.conf.d")? {
                    out.changes.push(Change::Mkdir {
                        path: "/etc/dracut.conf.d".into(),
                        mode: 0o755,
                    });
                }
                out.changes.push(Change::CreateFile {
                    path: DRACUT_CONF.into(),
                    content: content.into_bytes(),
                    mode: 0o644,
                });
            }
        }
    }
    // SUSE mkinitrd (and dracut on SUSE, which reads it too): INITRD_MODULES="a b". RHEL has
    // a /etc/sysconfig/kernel too (UPDATEDEFAULT, DEFAULTKERNEL) that nothing reads this from,
    // so only SUSE guests, or a file that already has the variable, get it.
    let suse = matches!(
        ctx.os.distro.as_str(),
        "sles" | "suse" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" | "sled"
    );
    if let Some((p, text)) = ctx
        .read_text("/etc/sysconfig/kernel")?
        .filter(|(_, t)| suse || t.lines().any(|l| l.starts_with("INITRD_MODULES=")))
    {
        let mut found = false;
        let mut new = String::with_capacity(text.len().saturating_add(128));
        for l in text.split_inclusive('\n') {
            let body = l.trim_end_matches('\n');
            if let Some(v) = body.strip_prefix("INITRD_MODULES=") {
                found = true;
                let inner = v.trim().trim_matches('"');
                let mut names: Vec<&str> = inner.split_whitespace().collect();
                for w in wanted {
                    if !names.contains(&w.as_str()) {
                        names.push(w);
                    }
                }
                new.push_str(&format!("INITRD_MODULES=\"{}\"", names.join(" ")));
                if l.ends_with('\n') {
                    new.push('\n');
                }
            } else {
                new.push_str(l);
            }
        }
        if !found {
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("INITRD_MODULES=\"{}\"\n", wanted.join(" ")));
        }
        out.replace(&p, &text, new);
    }
    Ok(())
}

#[doc(hidden)]
pub mod fuzzing {
    //! Harness bodies for the initramfs parsers (house style S17): they must never panic.

    /// Splits `data` as an initramfs and, if it parses, rebuilds it with one file added and
    /// splits the result again.
    pub fn fuzz_initramfs(data: &[u8]) {
        if let Ok(img) = super::container::split(data) {
            let _ = img.merged();
            let add = [super::cpio::Entry::file("x", 0o644, b"x".to_vec())];
            if let Ok(out) = super::container::rebuild(data, &img, &add) {
                let _ = super::container::split(&out);
            }
        }
    }

    /// Parses `data` as one newc archive.
    pub fn fuzz_cpio(data: &[u8]) {
        let mut budget = super::MAX_UNPACKED;
        let _ = super::cpio::parse(data, 0, &mut budget);
    }

    /// Parses `data` as a module's ELF object.
    pub fn fuzz_modinfo(data: &[u8]) {
        if let Ok(i) = super::modinfo::parse("fuzz.ko", data) {
            let _ = i.softdep_modules();
        }
    }

    /// Reads `data` as a kmod index, and writes what it read back.
    pub fn fuzz_kmod_index(data: &[u8]) {
        if let Ok(r) = super::index::read_all(data) {
            let _ = super::index::write(&r);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
