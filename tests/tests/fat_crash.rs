//! Crash safety of FAT edits (issue 3 acceptance): `crash_edit` makes a multi-file edit through a
//! transaction; SIGKILLed at 100+ random points per image format, every image must recover to
//! either the original bytes or the complete edit, never a mix, and pass `fsck.vfat -n`.

#![allow(
    clippy::cast_possible_truncation,
    reason = "pseudo-random numbers and test sizes are small"
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disk::open::{Access, OpenOptions};
use disk::txn::Recovery;

/// Kills per image format.
const KILLS: usize = 110;

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
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
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

fn mtools(tool: &str, img: &Path) -> Command {
    let mut c = Command::new(tool);
    c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(img);
    c
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect()
}

/// The original FAT16 image: two files the edit overwrites and deletes.
fn original(dir: &Path) -> PathBuf {
    let img = dir.join("orig.img");
    ok(Command::new("mkfs.vfat")
        .args(["-C", "-F", "16", "-n", "CRASH"])
        .arg(&img)
        .arg("16384"));
    let host = dir.join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("keep.txt"), b"original contents\n").unwrap();
    std::fs::write(host.join("gone.txt"), pattern(20_000, 9)).unwrap();
    ok(mtools("mcopy", &img)
        .arg(host.join("keep.txt"))
        .arg(host.join("gone.txt"))
        .arg("::/"));
    img
}

/// Listing and contents of every file, through mtools.
fn snapshot(raw: &Path) -> BTreeMap<String, Vec<u8>> {
    let list = ok(mtools("mdir", raw).args(["-/", "-b", "::/"]));
    let mut m = BTreeMap::new();
    for line in String::from_utf8(list).unwrap().lines() {
        let data = if line.ends_with('/') {
            Vec::new()
        } else {
            ok(mtools("mtype", raw).arg(line))
        };
        m.insert(line.to_owned(), data);
    }
    m
}

fn expected_after_edit() -> BTreeMap<String, Vec<u8>> {
    let mut a = pattern(10_000, 1);
    a.extend(pattern(5_000, 4));
    [
        ("::/keep.txt", pattern(70_000, 3)),
        ("::/edit/", Vec::new()),
        ("::/edit/a.txt", a),
        ("::/moved/", Vec::new()),
        ("::/moved/b.bin", pattern(300_000, 2)),
        ("::/moved/c.txt", b"the end\n".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn fsck_clean(raw: &Path) {
    ok(Command::new("fsck.vfat").arg("-n").arg(raw));
}

/// Runs the edit on `img`, killing it after `kill_after` (None: let it finish); returns the last
/// stage it printed.
fn run_edit(img: &Path, undo: &Path, kill_after: Option<Duration>) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_edit"))
        .arg(img)
        .arg(undo)
        .env("CRASH_EDIT_DELAY_US", "300")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(d) = kill_after {
        let start = Instant::now();
        while start.elapsed() < d {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        // SIGKILL on Unix; an error only means it already exited.
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    if kill_after.is_none() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "crash_edit failed: {err}");
    }
    out.lines()
        .last()
        .unwrap_or("stage none")
        .trim_start_matches("stage ")
        .to_owned()
}

fn crash_trials(format: &str, seed: u64) {
    if !have(&[
        "mkfs.vfat",
        "fsck.vfat",
        "mcopy",
        "mdir",
        "mtype",
        "qemu-img",
    ]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let raw_orig = original(tmp.path());
    let orig = if format == "qcow2" {
        let q = tmp.path().join("orig.qcow2");
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw_orig)
            .arg(&q));
        q
    } else {
        raw_orig.clone()
    };
    let original_files = snapshot(&raw_orig);
    let want = expected_after_edit();
    let as_raw = |img: &Path| -> PathBuf {
        if format == "raw" {
            return img.to_path_buf();
        }
        let r = img.with_extension("raw");
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(img)
            .arg(&r));
        r
    };

    // Complete runs, to check the edit and time it (the fastest of three, so kills spread
    // over the whole edit rather than pile up after the commit).
    let mut span = Duration::MAX;
    for run in 0..3 {
        let full = tmp.path().join(format!("full{run}.{format}"));
        std::fs::copy(&orig, &full).unwrap();
        let t0 = Instant::now();
        let undo = tmp.path().join(format!("full{run}.undo"));
        assert_eq!(run_edit(&full, &undo, None), "committed");
        span = span.min(t0.elapsed());
        let full_raw = as_raw(&full);
        fsck_clean(&full_raw);
        assert_eq!(snapshot(&full_raw), want, "complete edit");
    }

    let mut rng = Rng(seed);
    let mut stages: BTreeMap<String, usize> = BTreeMap::new();
    let (mut rolled_back, mut complete) = (0, 0);
    // Kills are drawn from 1.25x the fastest complete run, so some land after the commit on any
    // machine load: both outcomes must be seen, whatever the speed of the edit.
    let span_us = u64::try_from(span.as_micros())
        .unwrap_or(u64::MAX / 2)
        .saturating_mul(5)
        / 4;
    for i in 0..KILLS {
        let img = tmp.path().join(format!("t{i}.{format}"));
        let undo = tmp.path().join(format!("t{i}.undo"));
        std::fs::copy(&orig, &img).unwrap();
        let kill = Duration::from_micros(rng.below(span_us));
        let stage = run_edit(&img, &undo, Some(kill));
        *stages.entry(stage.clone()).or_default() += 1;
        // Recover as the next opener would.
        let opened = disk::open::open(
            img.to_str().unwrap(),
            &OpenOptions::new().access(Access::ReadWrite),
        )
        .unwrap();
        let rec = disk::txn::recover(&*opened.write().unwrap(), &undo).unwrap();
        drop(opened);
        let identical = if format == "raw" {
            std::fs::read(&img).unwrap() == std::fs::read(&orig).unwrap()
        } else {
            Command::new("qemu-img")
                .args(["compare", "-q"])
                .arg(&orig)
                .arg(&img)
                .status()
                .unwrap()
                .success()
        };
        let raw = as_raw(&img);
        fsck_clean(&raw);
        if identical {
            assert_ne!(
                rec,
                Recovery::Settled(disk::txn::State::Committed),
                "trial {i}"
            );
            rolled_back += 1;
        } else {
            // Not the original: it must be the complete, committed edit.
            assert_eq!(
                rec,
                Recovery::Settled(disk::txn::State::Committed),
                "trial {i} (killed at {stage}) is neither original nor committed"
            );
            assert_eq!(
                snapshot(&raw),
                want,
                "trial {i}: partial edit after {stage}"
            );
            complete += 1;
        }
        if i % 10 == 0 {
            // Spot-check that a rolled-back image also reads as the original.
            if identical {
                assert_eq!(snapshot(&raw), original_files);
            }
        }
        let _ = std::fs::remove_file(&img);
        if raw != img {
            let _ = std::fs::remove_file(&raw);
        }
    }
    println!("{format}: {rolled_back} rolled back, {complete} complete; last stages: {stages:?}");
    assert_eq!(rolled_back + complete, KILLS);
    assert!(
        rolled_back > 0 && complete > 0,
        "every kill landed on the same side"
    );
    // The kills landed at many different points of the edit.
    assert!(stages.len() >= 5, "kills hit too few stages: {stages:?}");
}

#[test]
fn fat_edit_killed_on_raw_recovers_to_original_or_complete() {
    crash_trials("raw", 0xC4A5_0001);
}

#[test]
fn fat_edit_killed_on_qcow2_recovers_to_original_or_complete() {
    crash_trials("qcow2", 0xC4A5_0002);
}
