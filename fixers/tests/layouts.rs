//! Distribution layouts (issue 5 acceptance): RHEL-7-like (dracut, ifcfg, XFS), RHEL-9-like
//! (BLS, NetworkManager keyfile), Ubuntu-22.04-like (netplan, initramfs-tools) and SLES-15-like
//! (wicked ifcfg, `INITRD_MODULES`, dracut) guests whose kernel modules are the host's real ELF
//! modules (Debian's kernel package under `/lib/modules/KVER`).
//!
//! Each `tests/golden/layout-<name>/` holds:
//! - `layout.toml`: the inspection facts, the shipped recipe that must match, and how the
//!   original initramfs is built (path, codec, early microcode, where it keeps its modules,
//!   which modules it holds, whether they are stored decompressed).
//! - `input/`: the guest's text files before fixing (`@KVER@` stands for the host's kernel
//!   version, in names and contents). The test adds `/boot/vmlinuz-KVER`, the module tree
//!   (real modules, `modules.dep`, `modules.builtin`, `modules.order` from the host) and the
//!   initramfs, built here as newc cpio archives compressed with the layout's codec, with
//!   indexes from the host's `depmod`.
//! - `plan.txt`, `plan.json`: the shipped recipe's plan as the human report and as JSON (the
//!   initramfs's sizes and CRC are `@SIZE@`/`@CRC32@`: they depend on the host's module files;
//!   grubenv's `#` padding, whose length follows the version's, is `@GRUBENV-PADDING@`).
//! - `expected/`: every file of the guest after applying the plan, except the module tree
//!   (checked unchanged) and the initramfs images (binary); `tree.txt`: every directory, file
//!   and symlink (with its target) of the result, so masks and removed links are checked too.
//! - `initramfs.txt`: what the rebuilt initramfs holds, as the host's `unmkinitramfs` extracts
//!   it, and the module indexes we wrote into it (`modules.dep`, `modules.softdep`).
//! - `modprobe.txt`: the host's `modprobe -d EXTRACTED -S KVER --show-depends` for the virtio
//!   modules, before (on the original image) and after.
//!
//! Planning again on the result must plan nothing. Without a host kernel that has virtio_blk
//! as a module, or without `depmod`/`modprobe`/`unmkinitramfs`, the test says `skipping: ...`.
//!
//! `REHOST_BLESS=1 cargo test -p rehost-fixers --test layouts` (or `UPDATE_GOLDEN=1`) rewrites
//! the golden files; review `git diff fixers/tests/golden` before committing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fixers::testkit::{MemFs, SyntheticOs, synthetic_report};
use fixers::{PlanOptions, RecipeSet, apply, plan};

/// Stands for the host's kernel version in golden files.
const KVER_MARK: &str = "@KVER@";
/// The modules every layout must end up with in its initramfs.
const VIRTIO: [&str; 4] = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Layout {
    distro: String,
    major: u32,
    minor: u32,
    recipe: String,
    /// Filesystem of `/dev/sda1` and `/dev/sda2` in the synthetic report.
    root_fs: String,
    /// Hypervisor tools inspection found.
    #[serde(default)]
    hypervisor_tools: Vec<String>,
    #[serde(default)]
    overrides: BTreeMap<String, toml::Table>,
    /// `/lib` is a symlink to `usr/lib` in the guest (merged /usr).
    usr_merged: bool,
    initramfs: Initramfs,
}

#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Initramfs {
    /// Guest path, with `@KVER@`.
    path: String,
    /// `gzip`, `zstd` or `xz`.
    codec: String,
    /// An uncompressed early cpio with CPU microcode comes first.
    early_microcode: bool,
    /// `lib/modules` or `usr/lib/modules` inside the image.
    moddir: String,
    /// The image has `lib -> usr/lib`.
    lib_symlink: bool,
    /// Modules stored as plain `.ko` (initramfs-tools) rather than as shipped (dracut).
    decompress: bool,
    /// Modules the original image holds (their dependencies are added).
    modules: Vec<String>,
    /// Other files of the image: (path, content).
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Guest path of a rescue image (dracut `--no-hostonly`, made for KVER, so it already
    /// holds virtio) belonging to a `vmlinuz-0-rescue-*` kernel: left alone, byte for byte.
    #[serde(default)]
    rescue: Option<String>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn bless() -> bool {
    std::env::var_os("REHOST_BLESS").is_some() || std::env::var_os("UPDATE_GOLDEN").is_some()
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// The host's modules: name → (path relative to the modules directory, dependency paths).
struct HostModules {
    dir: PathBuf,
    kver: String,
    by_name: BTreeMap<String, (String, Vec<String>)>,
    softdeps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
}

/// `kernel/drivers/block/virtio_blk.ko.xz` → `virtio_blk`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|s| file.strip_suffix(s))?;
    Some(stem.replace('-', "_"))
}

fn host_modules() -> Option<HostModules> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/lib/modules")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs.into_iter().rev() {
        let Ok(dep) = std::fs::read_to_string(dir.join("modules.dep")) else {
            continue;
        };
        let mut by_name = BTreeMap::new();
        for l in dep.lines() {
            let Some((p, deps)) = l.split_once(':') else {
                continue;
            };
            if let Some(n) = module_name(p) {
                let deps = deps.split_whitespace().map(str::to_owned).collect();
                by_name.insert(n, (p.to_owned(), deps));
            }
        }
        if !by_name.contains_key("virtio_blk") {
            continue;
        }
        let mut softdeps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in std::fs::read_to_string(dir.join("modules.softdep"))
            .unwrap_or_default()
            .lines()
        {
            let mut w = l.split_whitespace();
            if w.next() != Some("softdep") {
                continue;
            }
            let Some(m) = w.next() else { continue };
            let e = softdeps.entry(m.replace('-', "_")).or_default();
            e.extend(w.filter(|x| !x.ends_with(':')).map(|x| x.replace('-', "_")));
        }
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(module_name)
            .collect();
        let kver = dir.file_name()?.to_string_lossy().into_owned();
        return Some(HostModules {
            dir,
            kver,
            by_name,
            softdeps,
            builtin,
        });
    }
    None
}

impl HostModules {
    /// The relative paths of `names` and everything they depend on (hard and soft), that are
    /// loadable modules of the host.
    fn closure(&self, names: &[&str]) -> BTreeSet<String> {
        let mut todo: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut seen = BTreeSet::new();
        let mut out = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let Some((p, deps)) = self.by_name.get(&n) else {
                continue;
            };
            out.insert(p.clone());
            todo.extend(deps.iter().filter_map(|d| module_name(d)));
            todo.extend(self.softdeps.get(&n).cloned().unwrap_or_default());
        }
        out
    }
}

fn subst(s: &str, kver: &str) -> String {
    s.replace(KVER_MARK, kver)
}

fn unsubst(s: &str, kver: &str) -> String {
    s.replace(kver, KVER_MARK)
}

/// GRUB's environment block is exactly 1024 bytes, padded with `#`: after replacing the kernel
/// version (either way) the padding is adjusted to keep that size.
const GRUBENV_SIZE: usize = 1024;

fn repad_grubenv(path: &str, s: String) -> String {
    if !path.ends_with("/grubenv") {
        return s;
    }
    let mut t = s.trim_end_matches('#').to_owned();
    while t.len() < GRUBENV_SIZE {
        t.push('#');
    }
    t
}

/// Loads `dir` (files, directories, symlinks) into `fs` with `@KVER@` replaced.
fn load_input(fs: &mut MemFs, dir: &Path, guest: &str, kver: &str) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = subst(&e.file_name().to_string_lossy(), kver);
        let g = format!("{guest}/{name}");
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            fs.add_symlink(&g, &subst(&t.to_string_lossy(), kver));
        } else if ft.is_dir() {
            fs.add_dir(&g);
            load_input(fs, &e.path(), &g, kver);
        } else {
            let data = std::fs::read(e.path()).unwrap();
            let data = match String::from_utf8(data) {
                Ok(s) => repad_grubenv(&g, subst(&s, kver)).into_bytes(),
                Err(e) => e.into_bytes(),
            };
            fs.add_file(&g, &data);
        }
    }
}

/// One newc member.
fn newc(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let namesize = u32::try_from(name.len() + 1).unwrap();
    let filesize = u32::try_from(data.len()).unwrap();
    let fields = [ino, mode, 0, 0, 1, 0, filesize, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A newc archive of the host directory `root` (sorted, directories first), with a trailer.
fn cpio_of(root: &Path) -> Vec<u8> {
    let mut paths = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            }
            paths.push(e.path());
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let name = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ino = u32::try_from(i + 1).unwrap();
        let md = std::fs::symlink_metadata(p).unwrap();
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(p).unwrap();
            newc(
                &mut out,
                ino,
                &name,
                0o120_777,
                t.to_string_lossy().as_bytes(),
            );
        } else if md.is_dir() {
            newc(&mut out, ino, &name, 0o040_755, &[]);
        } else {
            let mode = if name == "init" { 0o100_755 } else { 0o100_644 };
            newc(&mut out, ino, &name, mode, &std::fs::read(p).unwrap());
        }
    }
    newc(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

fn compress(codec: &str, data: &[u8]) -> Vec<u8> {
    match codec {
        "gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            std::io::Write::write_all(&mut w, data).unwrap();
            w.finish().unwrap()
        }
        "zstd" => zstd::stream::encode_all(data, 3).unwrap(),
        "xz" => {
            let mut w =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1))
                    .unwrap();
            std::io::Write::write_all(&mut w, data).unwrap();
            w.finish().unwrap()
        }
        other => panic!("layout.toml: unknown codec {other}"),
    }
}

fn unxz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut r = lzma_rust2::XzReader::new(data, true);
    std::io::Read::read_to_end(&mut r, &mut out).unwrap();
    out
}

/// Builds the original initramfs: early microcode (optional) + the main archive holding the
/// layout's modules (with dependencies) and indexes made by the host's `depmod`.
fn build_initramfs(host: &HostModules, l: &Initramfs) -> (Vec<u8>, usize) {
    let stage = tempfile::tempdir().unwrap();
    let root = stage.path();
    let kver = &host.kver;
    if l.lib_symlink {
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    }
    let md = root.join(&l.moddir).join(kver);
    std::fs::create_dir_all(&md).unwrap();
    let names: Vec<&str> = l.modules.iter().map(String::as_str).collect();
    let mut order = String::new();
    for rel in host.closure(&names) {
        let data = std::fs::read(host.dir.join(&rel)).unwrap();
        let (rel, data) = match rel.strip_suffix(".xz") {
            Some(plain) if l.decompress => (plain.to_owned(), unxz(&data)),
            _ => (rel, data),
        };
        let f = md.join(&rel);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
        order.push_str(rel.trim_end_matches(".xz"));
        order.push('\n');
    }
    std::fs::write(md.join("modules.order"), order).unwrap();
    for idx in ["modules.builtin", "modules.builtin.modinfo"] {
        if host.dir.join(idx).exists() {
            std::fs::copy(host.dir.join(idx), md.join(idx)).unwrap();
        }
    }
    let st = Command::new("depmod")
        .arg("-b")
        .arg(root)
        .arg(kver)
        .status()
        .unwrap();
    assert!(st.success(), "depmod for the original image");
    for (p, content) in &l.files {
        let f = root.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, subst(content, kver)).unwrap();
    }
    let mut img = Vec::new();
    if l.early_microcode {
        let early = tempfile::tempdir().unwrap();
        let u = early.path().join("kernel/x86/microcode");
        std::fs::create_dir_all(&u).unwrap();
        std::fs::write(u.join("GenuineIntel.bin"), [0x5a; 2048]).unwrap();
        img.extend(cpio_of(early.path()));
    }
    let early_len = img.len();
    img.extend(compress(&l.codec, &cpio_of(root)));
    (img, early_len)
}

/// Extracts an initramfs with the host's `unmkinitramfs`; returns the directory holding the
/// main archive's files.
fn extract(img: &[u8], into: &Path) -> PathBuf {
    let f = into.join("image");
    std::fs::write(&f, img).unwrap();
    let out = into.join("x");
    let o = Command::new("unmkinitramfs")
        .arg(&f)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "unmkinitramfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    if out.join("main").is_dir() {
        out.join("main")
    } else {
        out
    }
}

/// A sorted listing of an extracted tree: `d path`, `f path`, `l path -> target`.
fn listing(root: &Path, kver: &str) -> String {
    let mut lines = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = unsubst(&p.strip_prefix(root).unwrap().to_string_lossy(), kver);
            let ft = e.file_type().unwrap();
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                lines.push(format!("l {rel} -> {}", t.to_string_lossy()));
            } else if ft.is_dir() {
                lines.push(format!("d {rel}"));
                stack.push(p);
            } else {
                lines.push(format!("f {rel}"));
            }
        }
    }
    lines.sort_by(|a, b| a[2..].cmp(&b[2..]));
    lines.join("\n") + "\n"
}

/// The host's `modprobe --show-depends` for `module` in an extracted image, with the
/// directory and kernel version replaced by placeholders.
fn show_depends(dir: &Path, kver: &str, module: &str) -> String {
    let o = Command::new("modprobe")
        .arg("-d")
        .arg(dir)
        .args(["-S", kver, "--show-depends", module])
        .output()
        .unwrap();
    let d = dir.to_string_lossy();
    let norm = |b: &[u8]| {
        unsubst(
            &String::from_utf8_lossy(b).replace(&*d, "@INITRAMFS@"),
            kver,
        )
    };
    format!(
        "$ modprobe -d @INITRAMFS@ -S @KVER@ --show-depends {module}\n{}{}exit {}\n",
        norm(&o.stdout),
        norm(&o.stderr),
        o.status.code().unwrap_or(-1)
    )
}

/// The paths `modprobe --show-depends` would `insmod`, relative to the modules directory.
fn insmods(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("insmod "))
        .map(|l| {
            let p = l.split_whitespace().next().unwrap_or_default();
            let at = p.find("/modules/@KVER@/").map_or(0, |i| i + 16);
            p[at..].to_owned()
        })
        .collect()
}

/// Replaces the byte counts of the initramfs edit line: they depend on the host's modules.
fn normalise_plan(human: &str, kver: &str, initramfs: &str) -> String {
    let edit = format!("  edit {initramfs} (");
    human
        .lines()
        .map(|l| {
            if l.starts_with(&edit) {
                return unsubst(&format!("{edit}@SIZE@ -> @SIZE@ bytes)"), kver);
            }
            // A grubenv diff shows its `#` padding, whose length follows the version's.
            let body = l.get(1..).unwrap_or_default();
            if body.len() >= 64 && body.bytes().all(|b| b == b'#') {
                return format!("{}@GRUBENV-PADDING@", &l[..1]);
            }
            unsubst(l, kver)
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// Every directory, file and symlink of the guest as `d path`, `f path`, `l path -> target`,
/// sorted, with the module tree `skip` shown as its directory only.
fn guest_tree_listing(fs: &MemFs, skip: &str, kver: &str) -> String {
    use guestfs::{FileType, FsRead, GuestPath};
    let mut lines = Vec::new();
    let mut stack = vec![GuestPath::root()];
    while let Some(d) = stack.pop() {
        for e in fs.read_dir(&d).unwrap() {
            let p = d.join_name(&e.name).unwrap();
            let shown = unsubst(&p.to_string(), kver);
            match e.file_type {
                FileType::Directory => {
                    lines.push(format!("d {shown}"));
                    if p.to_string() != skip {
                        stack.push(p);
                    }
                }
                FileType::Symlink => {
                    let t = String::from_utf8_lossy(&fs.read_link(&p).unwrap()).into_owned();
                    lines.push(format!("l {shown} -> {}", unsubst(&t, kver)));
                }
                _ => lines.push(format!("f {shown}")),
            }
        }
    }
    lines.sort_by(|a, b| a[2..].cmp(&b[2..]));
    lines.join("\n") + "\n"
}

/// The plan's JSON with the initramfs's `{bytes, crc32}` summaries as `@SIZE@`/`@CRC32@` (they
/// depend on the host's modules), grubenv padding collapsed and the kernel version replaced.
fn normalise_json(json: &str, kver: &str, initramfs: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    for step in v["steps"].as_array_mut().unwrap() {
        for c in step["changes"].as_array_mut().unwrap() {
            if c["path"] != initramfs {
                continue;
            }
            for side in ["old", "new"] {
                let s = &mut c[side];
                assert!(s["bytes"].is_u64() && s["crc32"].is_string(), "{s}");
                *s = serde_json::json!({"bytes": "@SIZE@", "crc32": "@CRC32@"});
            }
        }
    }
    let text = serde_json::to_string_pretty(&v).unwrap() + "\n";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(i) = rest.find(&"#".repeat(64)) {
        out.push_str(&rest[..i]);
        out.push_str("@GRUBENV-PADDING@");
        rest = rest[i..].trim_start_matches('#');
    }
    out.push_str(rest);
    unsubst(&out, kver)
}

fn check_golden(path: &Path, actual: &str, what: &str) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{what}: {}: {e} (REHOST_BLESS=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{what}: {}", path.display());
}

fn run_layout(dir: &Path, host: &HostModules) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let kver = host.kver.as_str();
    let layout: Layout =
        toml::from_str(&std::fs::read_to_string(dir.join("layout.toml")).unwrap()).unwrap();

    // The guest: hand-written files, the kernel, the module tree and the initramfs.
    let mut guest = MemFs::new();
    load_input(&mut guest, &dir.join("input"), "", kver);
    let libdir = if layout.usr_merged {
        guest.add_symlink("/lib", "usr/lib");
        "/usr/lib"
    } else {
        "/lib"
    };
    let gmd = format!("{libdir}/modules/{kver}");
    let mut wanted: Vec<&str> = VIRTIO.to_vec();
    wanted.extend(layout.initramfs.modules.iter().map(String::as_str));
    for rel in host.closure(&wanted) {
        guest.add_file(
            &format!("{gmd}/{rel}"),
            &std::fs::read(host.dir.join(&rel)).unwrap(),
        );
    }
    for idx in ["modules.dep", "modules.builtin", "modules.order"] {
        guest.add_file(
            &format!("{gmd}/{idx}"),
            &std::fs::read(host.dir.join(idx)).unwrap(),
        );
    }
    guest.add_file(&format!("/boot/vmlinuz-{kver}"), b"bzImage stand-in\n");
    let img_path = subst(&layout.initramfs.path, kver);
    let (original, early_len) = build_initramfs(host, &layout.initramfs);
    guest.add_file(&img_path, &original);
    let rescue = layout.initramfs.rescue.as_ref().map(|r| {
        let mut all = layout.initramfs.modules.clone();
        all.extend(VIRTIO.iter().map(|m| (*m).to_owned()));
        let no_hostonly = Initramfs {
            modules: all,
            files: BTreeMap::new(),
            rescue: None,
            ..layout.initramfs.clone()
        };
        let path = subst(r, kver);
        guest.add_file(&path, &build_initramfs(host, &no_hostonly).0);
        path
    });
    let before = guest.files();

    // Plan with the shipped recipe chosen by matching.
    let mut os = SyntheticOs::new(&layout.distro, layout.major, layout.minor);
    for d in &mut os.devices {
        if d.1 == "ext4" {
            d.1.clone_from(&layout.root_fs);
        }
    }
    os.hypervisor_tools.clone_from(&layout.hypervisor_tools);
    let report = synthetic_report(&os);
    let osr = &report.operating_systems[0];
    let set = RecipeSet::shipped().unwrap();
    let matching: Vec<&str> = set
        .iter()
        .filter(|r| r.matches(&report, osr))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        matching,
        [layout.recipe.as_str()],
        "{name}: matching recipes"
    );
    let recipe = set.get(&layout.recipe).unwrap();
    let opts = PlanOptions {
        overrides: layout.overrides.clone(),
    };
    let p = plan(recipe, &report, osr, &guest, &opts).unwrap();
    let human = normalise_plan(&p.render_human(), kver, &img_path);
    check_golden(&dir.join("plan.txt"), &human, &format!("{name}: plan"));
    let json = normalise_json(&p.to_json(), kver, &img_path);
    check_golden(&dir.join("plan.json"), &json, &format!("{name}: plan.json"));

    // Apply; every resulting file but the module tree and the initramfs is golden.
    let applied = apply(&p, &mut guest).unwrap();
    assert_eq!(applied, p.changes().count());
    let after = guest.files();
    let mut text = BTreeMap::new();
    for (path, data) in &after {
        if path.starts_with(&format!("{gmd}/")) {
            assert_eq!(Some(data), before.get(path), "{name}: {path} changed");
        } else if rescue.as_ref() == Some(path) {
            assert_eq!(Some(data), before.get(path), "{name}: rescue image changed");
        } else if *path != img_path {
            let s = String::from_utf8(data.clone())
                .unwrap_or_else(|_| panic!("{name}: {path} is not text"));
            if path.ends_with("/grubenv") {
                assert_eq!(s.len(), GRUBENV_SIZE, "{name}: {path} keeps its size");
            }
            let p = unsubst(path, kver);
            let s = repad_grubenv(&p, unsubst(&s, kver));
            text.insert(p, s);
        }
    }
    // Directories and symlinks (masks, wants links) are part of the result too.
    check_golden(
        &dir.join("tree.txt"),
        &guest_tree_listing(&guest, &gmd, kver),
        &format!("{name}: tree"),
    );
    let expected_dir = dir.join("expected");
    if bless() {
        let _ = std::fs::remove_dir_all(&expected_dir);
        for (p, d) in &text {
            let f = expected_dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, d).unwrap();
        }
    }
    let expected = MemFs::from_host_dir(&expected_dir).unwrap().files();
    assert_eq!(
        text.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{name}: resulting file list"
    );
    for (p, d) in &text {
        assert_eq!(
            d,
            &String::from_utf8_lossy(&expected[p]),
            "{name}: resulting {p}"
        );
    }

    // The rebuilt initramfs, as the host's unmkinitramfs reads it.
    let new_img = &after[&img_path];
    assert_ne!(new_img, &original, "{name}: initramfs rebuilt");
    let tmp = tempfile::tempdir().unwrap();
    let old_dir = tmp.path().join("old");
    let new_dir = tmp.path().join("new");
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let old_root = extract(&original, &old_dir);
    let new_root = extract(new_img, &new_dir);
    if layout.initramfs.early_microcode {
        // The early segment is kept byte for byte.
        assert_eq!(new_img[..early_len], original[..early_len], "{name}: early");
        let early = new_dir.join("x/early/kernel/x86/microcode/GenuineIntel.bin");
        assert_eq!(std::fs::read(early).unwrap(), [0x5a; 2048], "{name}: early");
    }
    let imd = new_root.join(&layout.initramfs.moddir).join(kver);
    let mut report_text = listing(&new_root, kver);
    for idx in ["modules.dep", "modules.softdep"] {
        let s = std::fs::read_to_string(imd.join(idx)).unwrap();
        report_text.push_str(&format!(
            "\n==> {}/@KVER@/{idx} <==\n",
            layout.initramfs.moddir
        ));
        report_text.push_str(&unsubst(&s, kver));
    }
    if let Ok(m) = std::fs::read_to_string(new_root.join("conf/modules")) {
        report_text.push_str("\n==> conf/modules <==\n");
        report_text.push_str(&m);
    }
    check_golden(
        &dir.join("initramfs.txt"),
        &report_text,
        &format!("{name}: initramfs"),
    );
    for m in ["virtio_blk", "virtio_scsi", "virtio_net"] {
        let ext = if layout.initramfs.decompress {
            ""
        } else {
            ".xz"
        };
        assert!(
            report_text.contains(&format!("/{m}.ko{ext}\n")),
            "{name}: {m} in the initramfs"
        );
    }

    // The host's modprobe resolves the virtio modules through our indexes.
    let mut mp = String::new();
    mp.push_str("# original image\n");
    let old = show_depends(&old_root, kver, "virtio_blk");
    assert!(
        old.ends_with("exit 1\n"),
        "{name}: original has no virtio_blk: {old}"
    );
    mp.push_str(&old);
    mp.push_str("# after rehost\n");
    for m in ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"] {
        let t = show_depends(&new_root, kver, m);
        assert!(t.ends_with("exit 0\n"), "{name}: {t}");
        let loads = insmods(&t);
        if host.builtin.contains(m) {
            assert!(t.contains(&format!("builtin {m}")), "{name}: {t}");
        } else {
            let last = loads.last().map(|p| module_name(p));
            assert_eq!(last, Some(Some(m.to_owned())), "{name}: {t}");
        }
        // Every module modprobe would load is a file in the image, and its dependencies
        // (from the host's own modules.dep) come before it.
        for (i, rel) in loads.iter().enumerate() {
            let f = new_root.join(&layout.initramfs.moddir).join(kver).join(rel);
            assert!(f.is_file(), "{name}: {rel} missing from the image");
            let n = module_name(rel).unwrap();
            for dep in &host.by_name[&n].1 {
                let dn = module_name(dep);
                assert!(
                    loads[..i].iter().any(|p| module_name(p) == dn),
                    "{name}: {dep} not loaded before {rel}: {t}"
                );
            }
        }
        mp.push_str(&t);
    }
    // udev loads by modalias: the virtio device ids (virtio spec 5: 1 net, 2 block, 8 scsi)
    // resolve through modules.alias.bin.
    for (alias, m) in [
        ("virtio:d00000001v00001AF4", "virtio_net"),
        ("virtio:d00000002v00001AF4", "virtio_blk"),
        ("virtio:d00000008v00001AF4", "virtio_scsi"),
    ] {
        let t = show_depends(&new_root, kver, alias);
        let last = insmods(&t).last().and_then(|p| module_name(p));
        assert_eq!(last.as_deref(), Some(m), "{name}: {t}");
        mp.push_str(&t);
    }
    check_golden(&dir.join("modprobe.txt"), &mp, &format!("{name}: modprobe"));

    // The image's own modules still resolve through the regenerated indexes, by name and (for
    // ahci, by its class match) by modalias: an ICH9 AHCI controller as qemu's q35 shows it.
    for m in &layout.initramfs.modules {
        let t = show_depends(&new_root, kver, m);
        let last = insmods(&t).last().and_then(|p| module_name(p));
        assert_eq!(last.as_deref(), Some(m.as_str()), "{name}: {t}");
    }
    if layout.initramfs.modules.iter().any(|m| m == "ahci") {
        let t = show_depends(
            &new_root,
            kver,
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
        );
        let last = insmods(&t).last().and_then(|p| module_name(p));
        assert_eq!(last.as_deref(), Some("ahci"), "{name}: {t}");
    }

    // The host's lsinitramfs lists the added modules (it walks every segment itself).
    let f = tmp.path().join("lsinitramfs.img");
    std::fs::write(&f, new_img).unwrap();
    let o = Command::new("lsinitramfs").arg(&f).output().unwrap();
    let listed = String::from_utf8_lossy(&o.stdout);
    for m in ["virtio_blk", "virtio_scsi", "virtio_net"] {
        assert!(
            listed.lines().any(|l| module_name(l).as_deref() == Some(m)
                && l.contains(&format!("modules/{kver}/kernel/"))),
            "{name}: lsinitramfs does not list {m}:\n{listed}"
        );
    }

    // Idempotence.
    let again = plan(recipe, &report, osr, &guest, &opts).unwrap();
    assert!(
        again.is_empty(),
        "{name}: second plan not empty:\n{}",
        again.render_human()
    );
}

#[test]
fn layouts_plan_apply_and_boot_modules_resolve() {
    let Some(host) = host_modules() else {
        println!("skipping: no host kernel with virtio_blk as a module under /lib/modules");
        return;
    };
    for tool in ["depmod", "modprobe", "unmkinitramfs", "lsinitramfs"] {
        if !have(tool) {
            println!("skipping: {tool} not found");
            return;
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("layout.toml").exists())
        .collect();
    dirs.sort();
    let names: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "layout-rhel7-dracut-xfs",
            "layout-rhel9-bls-nm",
            "layout-sles15-wicked",
            "layout-ubuntu2204-netplan"
        ]
    );
    for d in &dirs {
        run_layout(d, &host);
    }
}

/// The RHEL 7 layout's filesystem is XFS: planning works on any tree, but rehost has no XFS
/// writer yet, so applying to a real XFS volume is refused with an error naming it.
#[test]
fn xfs_writing_is_refused_clearly() {
    let dev = std::sync::Arc::new(disk::mem::MemDisk::zeroed(1 << 20).unwrap());
    let e = guestfs::open_rw_kind(
        dev,
        guestfs::FsKind::Xfs,
        guestfs::write::WriteOptions::default(),
    )
    .err()
    .expect("no xfs writer");
    let msg = e.to_string();
    assert!(matches!(e, guestfs::Error::Unsupported { .. }), "{e:?}");
    assert!(msg.contains("xfs"), "{msg}");
}
