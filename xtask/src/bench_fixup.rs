//! `cargo xtask bench-fixup`: `rehost fixup` against Debian's `virt-v2v-in-place` on sparse copies
//! of the same bootable Debian image, in one run.
//!
//! It times both (best of N for rehost, one run of virt-v2v, which boots a libguestfs appliance
//! under software emulation and takes minutes), prints the ratio, then mounts the original and
//! both results read-only and lists which guest files each tool changed: only rehost, only
//! virt-v2v, or both. It also lists the virtio modules in each result's initramfs
//! (`lsinitramfs`) and, with `--boot`, boots both results with `rehost boot`.
//!
//! Needs root (the image builder runs debootstrap; the comparison mounts loop devices).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Modules a KVM guest needs early: the disk (virtio-blk or virtio-scsi), the NIC, and the bus.
const VIRTIO_MODULES: [&str; 4] = ["virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"];

/// Changed paths printed per group; the full list goes to `changes.txt` in the work directory.
const MAX_LISTED: usize = 80;

const USAGE: &str = "usage: cargo xtask bench-fixup [--image NAME] [--runs N] [--boot] \
                     [--workdir DIR] [--keep] [--compare-only]";

/// Settings parsed from the task's arguments.
struct Opts {
    image: String,
    runs: u32,
    boot: bool,
    workdir: Option<PathBuf>,
    keep: bool,
    /// Only compare (and boot) the images a `--keep` run left in `--workdir`.
    compare_only: bool,
}

fn parse_args(args: &[String]) -> anyhow::Result<Opts> {
    let mut o = Opts {
        image: "debian12-boot".to_owned(),
        runs: 3,
        boot: false,
        workdir: None,
        keep: false,
        compare_only: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{a} needs a value; {USAGE}"))
        };
        match a.as_str() {
            "--image" => o.image.clone_from(value()?),
            "--runs" => {
                let v = value()?;
                o.runs = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .with_context(|| format!("--runs {v:?} out of range 1..=100"))?;
            }
            "--workdir" => o.workdir = Some(PathBuf::from(value()?)),
            "--boot" => o.boot = true,
            "--keep" => o.keep = true,
            "--compare-only" => o.compare_only = true,
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    Ok(o)
}

/// Finds `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

/// Runs `cmd` with its output in `log`, and returns the wall-clock time and the exit status.
fn run_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<(Duration, ExitStatus)> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    Ok((t.elapsed(), status))
}

/// The last `n` lines of a log, for a failure message.
fn tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A sparse copy, so a 2 GiB image with 1 GiB of data costs 1 GiB.
fn sparse_copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    let status = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()?;
    if !status.success() {
        bail!("cp {} {} failed: {status}", from.display(), to.display());
    }
    Ok(())
}

fn build_rehost(root: &Path) -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "-q", "-p", "rehost-cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("cargo build --release -p rehost-cli failed");
    }
    Ok(root.join("target/release/rehost"))
}

/// Runs the task.
pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_args(args)?;
    let Some(v2v) = which("virt-v2v-in-place") else {
        bail!(
            "skipping: virt-v2v-in-place not found (Debian package virt-v2v, see scripts/install-deps)"
        );
    };
    // `id -u` spares a libc dependency for one call.
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("bench-fixup must run as root (it builds the image with debootstrap and mounts it)");
    }
    let root = crate::workspace_root();
    if opts.compare_only {
        let work = opts
            .workdir
            .as_deref()
            .context("--compare-only needs --workdir DIR (a --keep run's)")?;
        let [orig, ours, theirs] =
            ["original.raw", "rehost.raw", "virt-v2v.raw"].map(|f| work.join(f));
        compare(work, &orig, &ours, &theirs)?;
        if opts.boot {
            let rehost = build_rehost(&root)?;
            println!();
            for (label, image) in [("rehost", &ours), ("virt-v2v", &theirs)] {
                boot(&rehost, work, label, image)?;
            }
        }
        return Ok(());
    }
    let rehost = build_rehost(&root)?;
    let img = images::build(&opts.image).with_context(|| format!("cannot build {}", opts.image))?;
    let work = opts.workdir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rehost-bench-fixup-{}", std::process::id()))
    });
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    println!("image:   {} ({})", opts.image, img.display());
    println!("workdir: {}", work.display());

    // Our own copy of the original, so a rebuild of the cache during the run cannot skew the diff.
    let orig = work.join("original.raw");
    let ours = work.join("rehost.raw");
    let theirs = work.join("virt-v2v.raw");
    sparse_copy(&img, &orig)?;

    // rehost: best of N, each on a fresh copy (the copy is not timed).
    let mut best = Duration::MAX;
    for i in 1..=opts.runs {
        sparse_copy(&orig, &ours)?;
        let undo = work.join("rehost.raw.rehost-undo");
        let _ = std::fs::remove_file(&undo);
        let log = work.join("rehost-fixup.log");
        let (d, st) = run_logged(Command::new(&rehost).arg("fixup").arg(&ours), &log)?;
        if !st.success() {
            bail!(
                "rehost fixup failed ({st}); {}:\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
        println!("rehost fixup run {i}: {:.2} s", d.as_secs_f64());
        best = best.min(d);
    }

    // virt-v2v-in-place: one run. KVM is not usable on every CI host (nested virtualisation
    // fails with "KVM internal error"), so the appliance runs under TCG, like bench-inspect's.
    sparse_copy(&orig, &theirs)?;
    let v2v_log = work.join("virt-v2v.log");
    println!("virt-v2v-in-place: running (libguestfs appliance under TCG; allow 20+ minutes)");
    let (v2v_time, v2v_status) = run_logged(
        Command::new(&v2v)
            .args(["-i", "disk"])
            .arg(&theirs)
            .env("LIBGUESTFS_BACKEND", "direct")
            .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"),
        &v2v_log,
    )?;
    if !v2v_status.success() {
        println!(
            "virt-v2v-in-place failed ({v2v_status}); {}:\n{}",
            v2v_log.display(),
            tail(&v2v_log, 20)
        );
    }

    println!();
    println!("{:<22} {:>12}", "tool", "wall (s)");
    println!(
        "{:<22} {:>12.2}   (best of {})",
        "rehost fixup",
        best.as_secs_f64(),
        opts.runs
    );
    println!(
        "{:<22} {:>12.2}   (1 run, {})",
        "virt-v2v-in-place",
        v2v_time.as_secs_f64(),
        if v2v_status.success() {
            "succeeded"
        } else {
            "FAILED"
        }
    );
    println!(
        "ratio: virt-v2v-in-place takes {:.0}x as long as rehost fixup",
        v2v_time.as_secs_f64() / best.as_secs_f64().max(1e-9)
    );

    compare(&work, &orig, &ours, &theirs)?;

    if opts.boot {
        println!();
        for (label, image) in [("rehost", &ours), ("virt-v2v", &theirs)] {
            boot(&rehost, &work, label, image)?;
        }
    }
    if opts.keep {
        println!("kept {}", work.display());
    } else {
        for f in [&orig, &ours, &theirs] {
            let _ = std::fs::remove_file(f);
        }
        println!("logs and changes.txt kept in {}", work.display());
    }
    Ok(())
}

/// Boots `image` with `rehost boot` (a throw-away overlay: the image is not changed) and prints
/// the report.
fn boot(rehost: &Path, work: &Path, label: &str, image: &Path) -> anyhow::Result<()> {
    let console = work.join(format!("boot-{label}.console.log"));
    let log = work.join(format!("boot-{label}.log"));
    println!("booting the {label} result (TCG; a few minutes)");
    let (d, st) = run_logged(
        Command::new(rehost)
            .arg("boot")
            .arg(image)
            .arg("--timeout")
            .arg("900")
            .arg("--keep-log")
            .arg(&console),
        &log,
    )?;
    let verdict = match st.code() {
        Some(0) => "booted",
        Some(1) => "did NOT boot",
        _ => "boot FAILED to run",
    };
    println!(
        "{label}: {verdict} in {:.0} s (report {}, console {})",
        d.as_secs_f64(),
        log.display(),
        console.display()
    );
    for line in std::fs::read_to_string(&log).unwrap_or_default().lines() {
        println!("    {line}");
    }
    Ok(())
}

/// Read-only mounts of every mountable partition of some images, undone on drop.
#[derive(Default)]
struct Mounts {
    points: Vec<PathBuf>,
}

impl Mounts {
    /// Mounts each partition of `img` read-only under `base/pN`, and returns the mount points
    /// keyed by partition number. Partitions that do not mount (swap, BIOS boot) are skipped.
    fn mount_all(&mut self, img: &Path, base: &Path) -> anyhow::Result<BTreeMap<u32, PathBuf>> {
        let out = Command::new("partx")
            .args(["--show", "-g", "-b", "-o", "NR,START,SECTORS"])
            .arg(img)
            .output()
            .context("cannot run partx")?;
        if !out.status.success() {
            bail!(
                "partx {} failed: {}",
                img.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut got = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            let [nr, start, sectors] = f[..] else {
                continue;
            };
            let nr = u32::try_from(nr)?;
            let dir = base.join(format!("p{nr}"));
            std::fs::create_dir_all(&dir)?;
            let geometry = format!("offset={},sizelimit={}", start * 512, sectors * 512);
            // `noload`: an ext journal left dirty is not replayed (that would write); other
            // filesystems reject the option, so try without it next.
            let mounted = ["ro,noload,", "ro,"].iter().any(|pre| {
                Command::new("mount")
                    .arg("-o")
                    .arg(format!("{pre}{geometry}"))
                    .arg(img)
                    .arg(&dir)
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if mounted {
                self.points.push(dir.clone());
                got.insert(nr, dir);
            }
        }
        Ok(got)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for p in self.points.iter().rev() {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

/// What a walk records about one guest path.
#[derive(Clone, PartialEq, Eq)]
enum Kind {
    File { size: u64 },
    Dir,
    Symlink(PathBuf),
    Other,
}

#[derive(Clone)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

/// Every path under `root` (not following symlinks), relative to it.
fn walk(root: &Path) -> anyhow::Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let rd =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for e in rd {
            let e = e?;
            let path = rel.join(e.file_name());
            let md = std::fs::symlink_metadata(root.join(&path))?;
            let ft = md.file_type();
            let kind = if ft.is_symlink() {
                Kind::Symlink(std::fs::read_link(root.join(&path))?)
            } else if ft.is_dir() {
                stack.push(path.clone());
                Kind::Dir
            } else if ft.is_file() {
                Kind::File { size: md.len() }
            } else {
                Kind::Other
            };
            out.insert(
                path,
                Entry {
                    kind,
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: (md.mtime(), md.mtime_nsec()),
                },
            );
        }
    }
    Ok(out)
}

fn same_bytes(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = read_full(&mut fa, &mut ba)?;
        let nb = read_full(&mut fb, &mut bb)?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// How one tool left one path, compared with the original.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Added,
    Removed,
    Content,
    Meta,
}

impl Change {
    fn tag(&self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Removed => "removed",
            Self::Content => "changed",
            Self::Meta => "metadata",
        }
    }
}

/// The change at `rel` between the original tree and a result tree.
fn change(
    rel: &Path,
    (orig_root, orig): (&Path, Option<&Entry>),
    (new_root, new): (&Path, Option<&Entry>),
) -> anyhow::Result<Option<Change>> {
    Ok(match (orig, new) {
        (None, None) => None,
        (None, Some(_)) => Some(Change::Added),
        (Some(_), None) => Some(Change::Removed),
        (Some(a), Some(b)) => {
            let content_differs = match (&a.kind, &b.kind) {
                (Kind::File { size: x }, Kind::File { size: y }) => {
                    x != y || !same_bytes(&orig_root.join(rel), &new_root.join(rel))?
                }
                (x, y) => x != y,
            };
            if content_differs {
                Some(Change::Content)
            } else if (a.mode, a.uid, a.gid) != (b.mode, b.uid, b.gid)
                || (a.mtime != b.mtime && !matches!(a.kind, Kind::Dir))
            {
                // A directory's mtime moves whenever an entry is added or removed, which is
                // already reported for the entry itself.
                Some(Change::Meta)
            } else {
                None
            }
        }
    })
}

/// Mounts the three images, lists the changed paths and the initramfs contents.
fn compare(work: &Path, orig: &Path, ours: &Path, theirs: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    let mut mounts = Mounts::default();
    let mnt = work.join("mnt");
    let m_orig = mounts.mount_all(orig, &mnt.join("original"))?;
    let m_ours = mounts.mount_all(ours, &mnt.join("rehost"))?;
    let m_theirs = mounts.mount_all(theirs, &mnt.join("virt-v2v"))?;
    if m_orig.is_empty() {
        bail!("no partition of {} mounts", orig.display());
    }
    // path -> (rehost's change, virt-v2v's change, do the two results have equal content)
    type Row = (Option<Change>, Option<Change>, bool);
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for (nr, o_root) in &m_orig {
        let (Some(r_root), Some(v_root)) = (m_ours.get(nr), m_theirs.get(nr)) else {
            println!("partition {nr}: not mountable in both results, skipped");
            continue;
        };
        let (o, r, v) = (walk(o_root)?, walk(r_root)?, walk(v_root)?);
        let all: BTreeSet<&PathBuf> = o.keys().chain(r.keys()).chain(v.keys()).collect();
        for rel in all {
            let cr = change(rel, (o_root, o.get(rel)), (r_root, r.get(rel)))?;
            let cv = change(rel, (o_root, o.get(rel)), (v_root, v.get(rel)))?;
            if cr.is_none() && cv.is_none() {
                continue;
            }
            let same = cr.is_some()
                && cv.is_some()
                && change(rel, (r_root, r.get(rel)), (v_root, v.get(rel)))?
                    .is_none_or(|c| c == Change::Meta);
            let name = if m_orig.len() > 1 {
                format!("p{nr}:/{}", rel.display())
            } else {
                format!("/{}", rel.display())
            };
            rows.insert(name, (cr, cv, same));
        }
    }

    // A directory added or removed as a whole is listed once, with the number of entries under it.
    let whole = |r: &Row| {
        let tree = |c: &Option<Change>| matches!(c, None | Some(Change::Added | Change::Removed));
        (r.0.is_some() || r.1.is_some()) && tree(&r.0) && tree(&r.1)
    };
    // The topmost ancestor of `path` changed the same way, if `path`'s change is whole-tree.
    let top_ancestor = |path: &str, row: &Row| -> Option<String> {
        if !whole(row) {
            return None;
        }
        let mut top = None;
        let mut p = path;
        while let Some((parent, _)) = p.rsplit_once('/') {
            if rows
                .get(parent)
                .is_some_and(|a| a.0 == row.0 && a.1 == row.1)
            {
                top = Some(parent.to_owned());
            }
            p = parent;
        }
        top
    };
    let mut below: BTreeMap<String, usize> = BTreeMap::new();
    for (path, row) in &rows {
        if let Some(top) = top_ancestor(path, row) {
            *below.entry(top).or_default() += 1;
        }
    }
    let mut only_ours = Vec::new();
    let mut only_theirs = Vec::new();
    let mut both = Vec::new();
    for (path, row) in &rows {
        if top_ancestor(path, row).is_some() {
            continue;
        }
        let (cr, cv, same) = row;
        let path = match below.get(path) {
            Some(n) => format!("{path}/ (and {n} entries below)"),
            None => path.clone(),
        };
        match (cr, cv) {
            (Some(c), None) => only_ours.push(format!("{:<9} {path}", c.tag())),
            (None, Some(c)) => only_theirs.push(format!("{:<9} {path}", c.tag())),
            (Some(a), Some(b)) => both.push(format!(
                "{:<9} {:<9} {path}{}",
                a.tag(),
                b.tag(),
                if *same { "  (same result)" } else { "" }
            )),
            (None, None) => {}
        }
    }
    let mut report = String::new();
    for (title, list) in [
        ("changed only by rehost", &only_ours),
        ("changed only by virt-v2v", &only_theirs),
        ("changed by both (rehost, virt-v2v)", &both),
    ] {
        writeln!(report, "\n{title}: {}", list.len())?;
        for l in list {
            writeln!(report, "  {l}")?;
        }
    }
    std::fs::write(work.join("changes.txt"), &report)?;
    println!();
    println!(
        "guest file changes against the original ({:.0} s to compare; full list in {}):",
        t.elapsed().as_secs_f64(),
        work.join("changes.txt").display()
    );
    for (title, list) in [
        ("changed only by rehost", &only_ours),
        ("changed only by virt-v2v", &only_theirs),
        ("changed by both (rehost, virt-v2v)", &both),
    ] {
        println!("{title}: {}", list.len());
        for l in list.iter().take(MAX_LISTED) {
            println!("  {l}");
        }
        if list.len() > MAX_LISTED {
            println!("  ... {} more", list.len() - MAX_LISTED);
        }
    }

    println!();
    if which("lsinitramfs").is_none() {
        println!("skipping initramfs contents: lsinitramfs not found");
        return Ok(());
    }
    for (label, m) in [
        ("original", &m_orig),
        ("rehost", &m_ours),
        ("virt-v2v", &m_theirs),
    ] {
        for root in m.values() {
            for boot in [root.join("boot"), root.clone()] {
                let Ok(rd) = std::fs::read_dir(&boot) else {
                    continue;
                };
                let mut initrds: Vec<PathBuf> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("initrd.img-"))
                            && p.is_file()
                    })
                    .collect();
                initrds.sort();
                for initrd in initrds {
                    println!("{label:<9} {}", initramfs_summary(&initrd, root)?);
                }
            }
        }
    }
    Ok(())
}

/// One line: the initramfs's size and which of [`VIRTIO_MODULES`] it holds.
fn initramfs_summary(initrd: &Path, root: &Path) -> anyhow::Result<String> {
    let out = Command::new("lsinitramfs").arg(initrd).output()?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let has = |m: &str| {
        listing.lines().any(|l| {
            let base = l.rsplit('/').next().unwrap_or(l);
            base.strip_prefix(m)
                .is_some_and(|rest| rest.starts_with(".ko"))
        })
    };
    let present: Vec<&str> = VIRTIO_MODULES.iter().copied().filter(|m| has(m)).collect();
    let missing: Vec<&str> = VIRTIO_MODULES.iter().copied().filter(|m| !has(m)).collect();
    let rel = initrd.strip_prefix(root).unwrap_or(initrd);
    Ok(format!(
        "/{} ({} bytes): has [{}] lacks [{}]",
        rel.display(),
        std::fs::metadata(initrd)?.len(),
        present.join(" "),
        missing.join(" ")
    ))
}
