//! Crash safety of ext4 edits (issue 3 acceptance): `crash_edit_ext4` makes a multi-file edit of
//! an ext4 filesystem (partition 1 of a GPT disk; once a bare filesystem) with libext2fs through
//! a transaction, and is SIGKILLed at distinct points of it: on a raw image, on a qcow2 image,
//! over NBD from our gateway (raw volume) and over NBD from `qemu-nbd` (qcow2 image). After
//! recovery (`disk::txn::recover`, as the next opener runs it) every image must be identical to
//! the original (`qemu-img compare`) or hold the complete edit (every path of the filesystem
//! dumped by `debugfs` and compared), never a mix, and pass `e2fsck -fn` either way; qcow2
//! results also pass `qemu-img check`.
//!
//! Kill points are deterministic: a counting run lists every point of the edit (each step, each
//! write/flush the filesystem sends to the transaction, each one the transaction sends to the
//! image once its undo record is durable, the end of the commit), and each trial stops the
//! editor at one chosen point, where the test SIGKILLs it. Every trial checks it passed the same
//! points as the counting run (libext2fs's clock is fixed for that, see [`run_editor`]). Points
//! are drawn at random, round-robin over the steps of the edit, with at least one of each kind,
//! the first (before anything is opened) and the last (after the commit). Only that last one
//! may leave the edit: the commit record is the single point where the outcome flips. A few
//! more trials kill after a random delay instead, to land inside the layers' own work as well.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use disk::open::{Access, OpenOptions};
use disk::txn::{Recovery, State};

/// Byte offset of the filesystem in a partitioned disk: partition 1 starts at sector 2048.
const PART_OFFSET: u64 = 1 << 20;
/// Size of the disk image.
const DISK_SIZE: u64 = 24 << 20;
/// Size of the ext4 filesystem (the partition).
const FS_SIZE: u64 = 21 << 20;

/// Deterministic kill points on local images (each backend).
const LOCAL_KILLS: usize = 110;
/// Deterministic kill points over NBD (each server): every trial restarts a server.
const NBD_KILLS: usize = 50;
/// Deterministic kill points on a bare filesystem (no partition table), raw image.
const BARE_KILLS: usize = 30;
/// libext2fs's clock in the editor (2027-01-15), see [`run_editor`].
const FAKE_TIME: &str = "1800000000";
/// Extra kills after a random delay, per backend.
const TIMED_KILLS: usize = 8;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn have(tools: &[&str]) -> bool {
    for t in tools {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(t).is_file()));
        if !found {
            println!("skipping: {t} not found");
            return false;
        }
    }
    true
}

fn ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The same bytes `crash_edit_ext4` writes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect()
}

// ----- filesystem snapshots -----------------------------------------------------------------

#[derive(Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Link { target: String },
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir { mode } => write!(f, "dir {mode:o}"),
            Self::File { mode, data } => {
                // FNV-1a, so a mismatch reads as a short line rather than a megabyte of bytes.
                let h = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                write!(f, "file {mode:o} {} bytes fnv {h:016x}", data.len())
            }
            Self::Link { target } => write!(f, "symlink -> {target}"),
        }
    }
}

/// Every path of a filesystem with its type, mode and contents, and the xattrs of /etc/fstab.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    tree: BTreeMap<String, Node>,
    fstab_xattrs: Vec<String>,
}

impl Snapshot {
    /// The first difference, for a readable failure.
    fn diff(&self, other: &Self) -> Option<String> {
        let keys: BTreeSet<&String> = self.tree.keys().chain(other.tree.keys()).collect();
        for k in keys {
            let (a, b) = (self.tree.get(k), other.tree.get(k));
            if a != b {
                return Some(format!("{k}: {a:?} vs {b:?}"));
            }
        }
        (self.fstab_xattrs != other.fstab_xattrs).then(|| {
            format!(
                "/etc/fstab xattrs: {:?} vs {:?}",
                self.fstab_xattrs, other.fstab_xattrs
            )
        })
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        let rel = format!("/{}", p.strip_prefix(root).unwrap().display());
        let meta = std::fs::symlink_metadata(&p).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Link {
                target: std::fs::read_link(&p).unwrap().display().to_string(),
            }
        } else if meta.is_dir() {
            walk(root, &p, out);
            Node::Dir { mode }
        } else {
            Node::File {
                mode,
                data: std::fs::read(&p).unwrap(),
            }
        };
        out.insert(rel, node);
    }
}

/// The filesystem at `offset` in a raw disk image, read by e2fsprogs' debugfs (not by our code).
fn snapshot(raw: &Path, offset: u64, scratch: &Path) -> Snapshot {
    let dump = scratch.join("dump");
    let _ = std::fs::remove_dir_all(&dump);
    std::fs::create_dir_all(&dump).unwrap();
    let mut child = Command::new("debugfs")
        .arg("-f")
        .arg("-")
        .arg(fs_name(raw, offset))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cmds = format!("rdump / {}\nea_list /etc/fstab\n", dump.display());
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), cmds.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "debugfs failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fstab_xattrs = stdout
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| l.trim().to_owned())
        .collect();
    let mut tree = BTreeMap::new();
    walk(&dump, &dump, &mut tree);
    assert!(
        tree.contains_key("/etc/fstab"),
        "debugfs dumped nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dump);
    Snapshot { tree, fstab_xattrs }
}

/// e2fsprogs' name for the filesystem at `offset` in a raw image.
fn fs_name(raw: &Path, offset: u64) -> String {
    format!("{}?offset={offset}", raw.display())
}

fn e2fsck_clean(raw: &Path, offset: u64, what: &str) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(fs_name(raw, offset))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: e2fsck -fn found problems: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- the original image and the expected edit ---------------------------------------------

/// Host tree copied into the original filesystem by `mke2fs -d`.
fn original_tree() -> BTreeMap<String, Node> {
    let dir = |mode| Node::Dir { mode };
    let file = |data: &[u8]| Node::File {
        mode: 0o644,
        data: data.to_vec(),
    };
    [
        ("/etc", dir(0o755)),
        (
            "/etc/fstab",
            file(
                b"UUID=0a0b0c0d / ext4 errors=remount-ro 0 1\n/dev/sdb1 /data ext4 defaults 0 2\n",
            ),
        ),
        ("/etc/hostname", file(b"legacy-vm\n")),
        ("/etc/old.conf", file(b"setting=1\n")),
        ("/home", dir(0o755)),
        ("/home/user", dir(0o755)),
        ("/home/user/notes.txt", file(&pattern(9_000, 8))),
        ("/usr", dir(0o755)),
        ("/usr/share", dir(0o755)),
        ("/usr/share/doc", dir(0o755)),
        ("/usr/share/doc/readme", file(&pattern(70_000, 7))),
        ("/var", dir(0o755)),
        ("/var/log", dir(0o755)),
        ("/var/log/gone.log", file(&pattern(50_000, 9))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn original_snapshot() -> Snapshot {
    let mut tree = original_tree();
    tree.insert("/lost+found".into(), Node::Dir { mode: 0o700 });
    Snapshot {
        tree,
        fstab_xattrs: Vec::new(),
    }
}

/// What `crash_edit_ext4`'s edit leaves.
fn expected_edit() -> Snapshot {
    let mut s = original_snapshot();
    let t = &mut s.tree;
    let file = |mode, data: &[u8]| Node::File {
        mode,
        data: data.to_vec(),
    };
    t.insert(
        "/etc/fstab".into(),
        file(
            0o644,
            b"# converted by rehost\n/dev/vda1 / ext4 errors=remount-ro 0 1\n/dev/vdb1 /data ext4 defaults,nofail 0 2\n",
        ),
    );
    for d in [
        "/opt",
        "/opt/rehost",
        "/opt/rehost/state",
        "/etc/modules-load.d",
    ] {
        t.insert(d.into(), Node::Dir { mode: 0o755 });
    }
    t.insert(
        "/opt/rehost/state/big.bin".into(),
        file(0o644, &pattern(1_300_000, 5)),
    );
    t.insert(
        "/opt/rehost/state/small.txt".into(),
        file(0o600, b"small\n"),
    );
    t.insert(
        "/etc/modules-load.d/virtio.conf".into(),
        file(0o644, b"virtio_blk\nvirtio_net\nvirtio_scsi\n"),
    );
    let mut notes = pattern(9_000, 8);
    notes.extend(pattern(20_000, 6));
    t.insert("/home/user/notes.txt".into(), file(0o644, &notes));
    let old = t.remove("/etc/old.conf").unwrap();
    t.insert("/etc/new.conf".into(), old);
    t.remove("/var/log/gone.log").unwrap();
    t.insert(
        "/opt/rehost/current".into(),
        Node::Link {
            target: "state/big.bin".into(),
        },
    );
    s.fstab_xattrs = vec![r#"user.rehost.origin (6) = "vmware""#.into()];
    s
}

/// Where the filesystem lives in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Partition 1 of a GPT disk.
    Gpt,
    /// The whole image (a bare filesystem).
    Bare,
}

impl Layout {
    fn offset(self) -> u64 {
        match self {
            Self::Gpt => PART_OFFSET,
            Self::Bare => 0,
        }
    }
}

/// An image with an ext4 filesystem made by `mke2fs -d` from [`original_tree`].
fn make_original(dir: &Path, layout: Layout) -> PathBuf {
    let host = dir.join("host");
    for (path, node) in original_tree() {
        let p = host.join(path.trim_start_matches('/'));
        match node {
            Node::Dir { mode } => {
                std::fs::create_dir_all(&p).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::File { mode, data } => {
                std::fs::write(&p, data).unwrap();
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Link { .. } => unreachable!("the original has no symlinks"),
        }
    }
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    let img = dir.join("orig.raw");
    if layout == Layout::Bare {
        ok(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
            .arg(&host)
            .arg(&img)
            .arg(format!("{}k", FS_SIZE / 1024)));
        return img;
    }
    std::fs::File::create(&img)
        .unwrap()
        .set_len(DISK_SIZE)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let table = format!(
        "label: gpt\nstart={}, size={}, type=L\n",
        PART_OFFSET / 512,
        FS_SIZE / 512
    );
    std::io::Write::write_all(sfdisk.stdin.as_mut().unwrap(), table.as_bytes()).unwrap();
    drop(sfdisk.stdin.take());
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    ok(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096"])
        .arg("-E")
        .arg(format!("offset={PART_OFFSET}"))
        .arg("-d")
        .arg(&host)
        .arg(&img)
        .arg(format!("{}k", FS_SIZE / 1024)));
    img
}

// ----- backends ------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// A raw image file.
    Raw,
    /// A qcow2 image file.
    Qcow2,
    /// A raw volume served by our NBD gateway.
    Gateway,
    /// A qcow2 image served by qemu-nbd.
    QemuNbd,
}

/// One trial's image, and the server exporting it if any.
struct Trial {
    /// What the editor opens: a path or an NBD URI.
    target: String,
    /// The image file holding the result (after the server stops).
    file: PathBuf,
    /// Its format, for `qemu-img`.
    format: &'static str,
    server: Option<Child>,
}

struct Setup {
    backend: Backend,
    /// Byte offset of the filesystem in the image.
    offset: u64,
    dir: PathBuf,
    orig_raw: PathBuf,
    orig_qcow2: PathBuf,
    gateway_template: PathBuf,
}

impl Setup {
    fn new(backend: Backend, layout: Layout, dir: &Path) -> Self {
        let orig_raw = make_original(dir, layout);
        let orig_qcow2 = dir.join("orig.qcow2");
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&orig_raw)
            .arg(&orig_qcow2));
        let gateway_template = dir.join("store-template");
        if backend == Backend::Gateway {
            nbd_gateway::Store::open(&gateway_template)
                .unwrap()
                .create_volume("v", std::fs::metadata(&orig_raw).unwrap().len(), "")
                .unwrap();
            std::fs::copy(&orig_raw, gateway_template.join("volumes/v/data.raw")).unwrap();
        }
        Self {
            backend,
            offset: layout.offset(),
            dir: dir.to_path_buf(),
            orig_raw,
            orig_qcow2,
            gateway_template,
        }
    }

    fn prepare(&self, name: &str) -> Trial {
        let dir = &self.dir;
        match self.backend {
            Backend::Raw => {
                let file = dir.join(format!("{name}.raw"));
                std::fs::copy(&self.orig_raw, &file).unwrap();
                Trial {
                    target: file.display().to_string(),
                    file,
                    format: "raw",
                    server: None,
                }
            }
            Backend::Qcow2 => {
                let file = dir.join(format!("{name}.qcow2"));
                std::fs::copy(&self.orig_qcow2, &file).unwrap();
                Trial {
                    target: file.display().to_string(),
                    file,
                    format: "qcow2",
                    server: None,
                }
            }
            Backend::Gateway => {
                let store = dir.join(format!("{name}.store"));
                ok(Command::new("cp")
                    .arg("-a")
                    .arg(&self.gateway_template)
                    .arg(&store));
                let sock = dir.join(format!("{name}.sock"));
                let mut child = Command::new(env!("CARGO_BIN_EXE_crash_edit_ext4"))
                    .arg("serve")
                    .arg(&store)
                    .arg(&sock)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                // The first line is printed once the socket listens.
                let mut line = String::new();
                BufReader::new(child.stdout.as_mut().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                assert_eq!(line.trim(), format!("unix:{}", sock.display()));
                Trial {
                    target: format!("nbd+unix:///v?socket={}", sock.display()),
                    file: store.join("volumes/v/data.raw"),
                    format: "raw",
                    server: Some(child),
                }
            }
            Backend::QemuNbd => {
                let file = dir.join(format!("{name}.qcow2"));
                std::fs::copy(&self.orig_qcow2, &file).unwrap();
                let sock = dir.join(format!("{name}.sock"));
                let child = Command::new("qemu-nbd")
                    .args(["-f", "qcow2", "-t", "-e", "4", "--cache=writeback", "-k"])
                    .arg(&sock)
                    .arg(&file)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                // Wait (bounded) until it accepts connections.
                let mut up = false;
                for _ in 0..3000 {
                    if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                        up = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(up, "qemu-nbd never listened on {}", sock.display());
                Trial {
                    target: format!("nbd+unix:///?socket={}", sock.display()),
                    file,
                    format: "qcow2",
                    server: Some(child),
                }
            }
        }
    }
}

/// Stops a server gracefully (SIGTERM: both servers flush and exit), so its file is settled.
fn stop(server: Option<Child>) {
    if let Some(mut child) = server {
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        child.wait().unwrap();
    }
}

/// How an editor run ended.
enum Run {
    /// It finished and listed its points.
    Completed(Vec<String>),
    /// It was SIGKILLed at a point (its label) or after a delay (the last point it passed),
    /// having passed these points.
    Killed(String, Vec<String>),
}

/// Runs the editor on `target`, stopping and killing it at point `at`, or after `delay`.
fn run_editor(target: &str, undo: &Path, at: Option<u64>, delay: Option<Duration>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_crash_edit_ext4"));
    // libext2fs writes only the superblock fields that changed, so the number of writes at
    // close depends on whether the clock moved past a second (s_wtime) since mke2fs: a fixed
    // clock keeps the run repeatable.
    cmd.env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .arg("edit")
        .arg(target)
        .arg(undo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = at {
        cmd.env("CRASH_EDIT_AT", n.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    if let Some(n) = at {
        let mut passed = Vec::new();
        let label = loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if let Some(rest) = line.strip_prefix(&format!("paused {n} ")) {
                break rest.trim().to_owned();
            }
            match line.strip_prefix("point ").and_then(|l| l.split_once(' ')) {
                Some((_, label)) => passed.push(label.trim().to_owned()),
                None => panic!("editor did not stop at point {n}: {line:?}"),
            }
        };
        // SIGKILL: the editor is blocked at the point.
        child.kill().unwrap();
        child.wait().unwrap();
        return Run::Killed(label, passed);
    }
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    if let Some(d) = delay {
        let start = Instant::now();
        while start.elapsed() < d && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(100));
        }
        // SIGKILL; an error only means it already exited.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let out = reader.join().unwrap();
    let points: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("point "))
        .map(|l| l.split_once(' ').map_or("", |(_, label)| label).to_owned())
        .collect();
    if delay.is_some() {
        return Run::Killed(
            points.last().cloned().unwrap_or_else(|| "none".into()),
            points,
        );
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "crash_edit_ext4 failed: {err}");
    assert_eq!(
        out.lines().last(),
        Some(format!("points {}", points.len()).as_str())
    );
    Run::Completed(points)
}

/// The outcome of one trial after recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Original,
    Complete,
}

struct Checker<'a> {
    setup: &'a Setup,
    original: Snapshot,
    edited: Snapshot,
    /// qcow2 results with leaked clusters (harmless, and what qemu leaves after a crash too).
    leaks: std::cell::Cell<usize>,
}

impl Checker<'_> {
    /// Recovers `trial` as the next opener would, then checks it is the original or the whole
    /// edit, and fsck-clean.
    fn check(&self, trial: Trial, undo: &Path, what: &str) -> Outcome {
        let opened =
            disk::open::open(&trial.target, &OpenOptions::new().access(Access::ReadWrite)).unwrap();
        let rec = disk::txn::recover(&*opened.write().unwrap(), undo).unwrap();
        drop(opened);
        stop(trial.server);
        if trial.format == "qcow2" {
            // The image format itself is consistent: 0 clean, 3 leaked clusters only.
            let out = Command::new("qemu-img")
                .args(["check", "-f", "qcow2"])
                .arg(&trial.file)
                .output()
                .unwrap();
            match out.status.code() {
                Some(0) => {}
                Some(3) => self.leaks.set(self.leaks.get() + 1),
                other => panic!(
                    "{what}: qemu-img check ({other:?}): {}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            }
        }
        let identical = Command::new("qemu-img")
            .args(["compare", "-q", "-f", "raw", "-F", trial.format])
            .arg(&self.setup.orig_raw)
            .arg(&trial.file)
            .status()
            .unwrap();
        let identical = match identical.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("{what}: qemu-img compare failed ({other:?})"),
        };
        let raw = if trial.format == "raw" {
            trial.file.clone()
        } else {
            let r = trial.file.with_extension("check.raw");
            ok(Command::new("qemu-img")
                .args(["convert", "-f", trial.format, "-O", "raw"])
                .arg(&trial.file)
                .arg(&r));
            r
        };
        if trial.format == "raw" && identical {
            // For raw files the comparison is also byte for byte, past the guest's view.
            assert!(
                std::fs::read(&raw).unwrap() == std::fs::read(&self.setup.orig_raw).unwrap(),
                "{what}: qemu-img compare and the bytes disagree"
            );
        }
        e2fsck_clean(&raw, self.setup.offset, what);
        let outcome = if identical {
            assert!(
                matches!(rec, Recovery::RolledBack { .. } | Recovery::Clean),
                "{what}: identical to the original, yet recovery said {rec:?}"
            );
            Outcome::Original
        } else {
            assert_eq!(
                rec,
                Recovery::Settled(State::Committed),
                "{what}: neither the original nor committed"
            );
            let got = snapshot(&raw, self.setup.offset, &self.setup.dir);
            if let Some(d) = got.diff(&self.edited) {
                panic!("{what}: a partial edit after recovery: {d}");
            }
            Outcome::Complete
        };
        // The rolled-back side reads as the original too (cheap enough to do each time).
        if outcome == Outcome::Original {
            let got = snapshot(&raw, self.setup.offset, &self.setup.dir);
            assert!(got.diff(&self.original).is_none(), "{what}");
        }
        for p in [&trial.file, &raw] {
            let _ = std::fs::remove_file(p);
        }
        if self.setup.backend == Backend::Gateway {
            // trial.file is STORE/volumes/v/data.raw.
            let store = trial
                .file
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .parent()
                .unwrap();
            let _ = std::fs::remove_dir_all(store);
        }
        let _ = std::fs::remove_file(undo);
        outcome
    }
}

/// The kind of a point: "stage", "txn write", "device flush", ...
fn point_kind(label: &str) -> String {
    if label.starts_with("stage ") {
        "stage".to_owned()
    } else {
        label
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The kill points of one backend: `n` distinct points of `total`, drawn round-robin from the
/// steps of the edit (so the long data-writing step does not take them all), always with the
/// first and the last, and at least one of each kind.
fn choose_points(labels: &[String], n: usize, rng: &mut Rng) -> BTreeSet<u64> {
    let total = labels.len() as u64;
    let starts: Vec<u64> = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("stage "))
        .map(|(i, _)| i as u64)
        .collect();
    assert_eq!(starts.first(), Some(&0), "the first point is a stage");
    let mut steps: Vec<(u64, u64)> = starts
        .iter()
        .zip(starts.iter().skip(1).chain([&total]))
        .map(|(&a, &b)| (a, b))
        .collect();
    let mut chosen = BTreeSet::from([0, total - 1]);
    // One point of each kind at random, however rare.
    let mut by_kind: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_kind.entry(point_kind(l)).or_default().push(i as u64);
    }
    for of_kind in by_kind.values() {
        chosen.insert(of_kind[usize::try_from(rng.below(of_kind.len() as u64)).unwrap()]);
    }
    let want = n.min(labels.len());
    while chosen.len() < want {
        steps.retain(|&(a, b)| (a..b).any(|p| !chosen.contains(&p)));
        for &(a, b) in &steps {
            if chosen.len() >= want {
                break;
            }
            // A free point of this step at random (retry a few times, then take the first).
            let mut p = a + rng.below(b - a);
            for _ in 0..8 {
                if !chosen.contains(&p) {
                    break;
                }
                p = a + rng.below(b - a);
            }
            if chosen.contains(&p) {
                p = (a..b).find(|q| !chosen.contains(q)).unwrap();
            }
            chosen.insert(p);
        }
    }
    chosen
}

fn crash_trials(backend: Backend, layout: Layout, kills: usize, seed: u64) {
    let mut tools = vec![
        "sfdisk", "mke2fs", "e2fsck", "debugfs", "qemu-img", "cp", "kill",
    ];
    if backend == Backend::QemuNbd {
        tools.push("qemu-nbd");
    }
    if !have(&tools) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let setup = Setup::new(backend, layout, tmp.path());
    let checker = Checker {
        setup: &setup,
        original: original_snapshot(),
        edited: expected_edit(),
        leaks: std::cell::Cell::new(0),
    };
    let orig_snap = snapshot(&setup.orig_raw, setup.offset, tmp.path());
    assert!(
        orig_snap.diff(&checker.original).is_none(),
        "original: {:?}",
        orig_snap.diff(&checker.original)
    );
    e2fsck_clean(&setup.orig_raw, setup.offset, "original");

    // A complete run: the edit itself, and the list of points.
    let trial = setup.prepare("full");
    let undo = tmp.path().join("full.undo");
    let t0 = Instant::now();
    let Run::Completed(labels) = run_editor(&trial.target, &undo, None, None) else {
        unreachable!("no kill requested")
    };
    let mut span = t0.elapsed();
    assert_eq!(
        checker.check(trial, &undo, "complete run"),
        Outcome::Complete
    );
    assert_eq!(labels.last().map(String::as_str), Some("stage committed"));
    // The step each point is in.
    let step_of: Vec<String> = labels
        .iter()
        .scan(String::new(), |step, l| {
            if let Some(s) = l.strip_prefix("stage ") {
                s.clone_into(step);
            }
            Some(step.clone())
        })
        .collect();

    let mut rng = Rng(seed);
    let points = choose_points(&labels, kills, &mut rng);
    assert_eq!(points.len(), kills.min(labels.len()));
    let mut outcomes: BTreeMap<Outcome, usize> = BTreeMap::new();
    let mut kinds_hit: BTreeMap<String, usize> = BTreeMap::new();
    let mut steps_hit: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, &at) in points.iter().enumerate() {
        let trial = setup.prepare(&format!("t{i}"));
        let undo = tmp.path().join(format!("t{i}.undo"));
        let t0 = Instant::now();
        let Run::Killed(label, passed) = run_editor(&trial.target, &undo, Some(at), None) else {
            unreachable!("a stop point was given")
        };
        // The run is deterministic: the editor passed the same points as the complete run.
        if let Some(d) = passed.iter().zip(&labels).position(|(a, b)| a != b) {
            panic!(
                "point {at}: the run differs from the complete run at point {d}: {:?} vs {:?}",
                &passed[d.saturating_sub(3)..(d + 3).min(passed.len())],
                &labels[d.saturating_sub(3)..(d + 3).min(labels.len())]
            );
        }
        assert_eq!(label, labels[usize::try_from(at).unwrap()], "point {at}");
        if label == "stage committed" {
            // The whole edit again, with warm caches: the timed kills below spread over the
            // faster of the two.
            span = span.min(t0.elapsed());
        }
        let what = format!("{backend:?} {layout:?} point {at} ({label})");
        let outcome = checker.check(trial, &undo, &what);
        // Only a kill after the commit may leave the edit.
        assert_eq!(
            outcome == Outcome::Complete,
            label == "stage committed",
            "{what}: {outcome:?}"
        );
        *outcomes.entry(outcome).or_default() += 1;
        *kinds_hit.entry(point_kind(&label)).or_default() += 1;
        *steps_hit
            .entry(&step_of[usize::try_from(at).unwrap()])
            .or_default() += 1;
    }

    // Kills after a random delay within 1.25x the complete run, landing wherever they land.
    let span_us = u64::try_from(span.as_micros()).unwrap_or(u64::MAX / 2) * 5 / 4;
    let mut timed: BTreeMap<Outcome, usize> = BTreeMap::new();
    for i in 0..TIMED_KILLS {
        let trial = setup.prepare(&format!("d{i}"));
        let undo = tmp.path().join(format!("d{i}.undo"));
        let delay = Duration::from_micros(rng.below(span_us));
        let Run::Killed(last, _) = run_editor(&trial.target, &undo, None, Some(delay)) else {
            unreachable!("a delay was given")
        };
        let what = format!("{backend:?} {layout:?} killed after {delay:?} (last point {last})");
        *timed.entry(checker.check(trial, &undo, &what)).or_default() += 1;
    }

    println!(
        "{backend:?} {layout:?}: {} points in the edit; {} distinct kill points: {outcomes:?}; by kind: \
         {kinds_hit:?}; by step: {steps_hit:?}; {TIMED_KILLS} timed kills: {timed:?}; qcow2 images with leaked clusters: {}",
        labels.len(),
        points.len(),
        checker.leaks.get()
    );
    assert_eq!(outcomes.values().sum::<usize>(), points.len());
    assert!(
        outcomes.get(&Outcome::Original).is_some_and(|&n| n > 0)
            && outcomes.get(&Outcome::Complete).is_some_and(|&n| n > 0),
        "both outcomes must occur: {outcomes:?}"
    );
    // Kills landed in every step of the edit, at every kind of point.
    let steps: BTreeSet<&String> = step_of.iter().collect();
    assert!(steps.len() >= 15, "steps {steps:?}");
    assert_eq!(steps_hit.len(), steps.len(), "steps hit: {steps_hit:?}");
    for k in [
        "stage",
        "txn write",
        "txn flush",
        "device write",
        "device flush",
    ] {
        assert!(kinds_hit.contains_key(k), "no kill at a {k}: {kinds_hit:?}");
    }
}

#[test]
fn ext4_edit_killed_on_raw_recovers_to_original_or_complete() {
    crash_trials(Backend::Raw, Layout::Gpt, LOCAL_KILLS, 0xE4C4_0001);
}

#[test]
fn ext4_edit_killed_on_qcow2_recovers_to_original_or_complete() {
    crash_trials(Backend::Qcow2, Layout::Gpt, LOCAL_KILLS, 0xE4C4_0002);
}

#[test]
fn ext4_edit_killed_over_nbd_gateway_recovers_to_original_or_complete() {
    crash_trials(Backend::Gateway, Layout::Gpt, NBD_KILLS, 0xE4C4_0003);
}

#[test]
fn ext4_edit_killed_over_qemu_nbd_recovers_to_original_or_complete() {
    crash_trials(Backend::QemuNbd, Layout::Gpt, NBD_KILLS, 0xE4C4_0004);
}

#[test]
fn ext4_edit_killed_on_bare_filesystem_recovers_to_original_or_complete() {
    crash_trials(Backend::Raw, Layout::Bare, BARE_KILLS, 0xE4C4_0005);
}
