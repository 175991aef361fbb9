//! Test fixtures fetched at test time into `~/.cache/rehost/fixtures/` (never committed).
//!
//! The real-Windows NTFS volume comes from the `dissect.ntfs` test data (AGPL-licensed, so it is
//! downloaded, not vendored): `pip download` of the source distribution, then
//! `tests/_data/ntfs.bin.gz` is extracted and decompressed with the system `tar` and `gzip`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// The sdist that carries the fixture.
const DISSECT_NTFS_SDIST: &str = "dissect-ntfs==3.16";
/// Its top-level directory inside the tarball.
const DISSECT_NTFS_DIR: &str = "dissect_ntfs-3.16";

/// Serialises fetches within one test process (across processes, the final rename is atomic).
static FETCH: Mutex<()> = Mutex::new(());

/// `~/.cache/rehost/fixtures` (or `$XDG_CACHE_HOME/rehost/fixtures`).
pub(super) fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("rehost").join("fixtures"))
}

/// True if `tool` is an executable on `PATH`.
pub(super) fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// The Windows-formatted NTFS image from `dissect.ntfs` 3.16 (10 MiB), downloaded once and
/// cached. Prints `skipping: ...` and returns `None` when it cannot be fetched.
pub(super) fn dissect_ntfs_image() -> Option<PathBuf> {
    let _guard = FETCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(dir) = cache_dir() else {
        println!("skipping: no HOME or XDG_CACHE_HOME for the fixture cache");
        return None;
    };
    let target = dir.join("dissect-ntfs-3.16-ntfs.bin");
    if target.is_file() {
        return Some(target);
    }
    match fetch_dissect(&dir, &target) {
        Ok(()) => Some(target),
        Err(why) => {
            println!("skipping: cannot fetch the dissect.ntfs fixture: {why}");
            None
        }
    }
}

fn fetch_dissect(dir: &Path, target: &Path) -> Result<(), String> {
    for tool in ["tar", "gzip"] {
        if !have(tool) {
            return Err(format!("{tool} not found"));
        }
    }
    let pip = ["pip3", "pip"]
        .into_iter()
        .find(|p| have(p))
        .ok_or("pip not found")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp = tempfile::tempdir_in(dir).map_err(|e| e.to_string())?;
    let status = Command::new(pip)
        .args([
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            DISSECT_NTFS_SDIST,
            "-d",
        ])
        .arg(tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("running {pip}: {e}"))?;
    if !status.success() {
        return Err(format!("{pip} download failed ({status})"));
    }
    let sdist = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .ok_or("no .tar.gz in the download")?;
    let member = format!("{DISSECT_NTFS_DIR}/tests/_data/ntfs.bin.gz");
    let gz = Command::new("tar")
        .arg("-xzOf")
        .arg(&sdist)
        .arg(&member)
        .output()
        .map_err(|e| e.to_string())?;
    if !gz.status.success() || gz.stdout.is_empty() {
        return Err(format!("{member} not found in {}", sdist.display()));
    }
    let gz_path = tmp.path().join("ntfs.bin.gz");
    std::fs::write(&gz_path, &gz.stdout).map_err(|e| e.to_string())?;
    let raw = Command::new("gzip")
        .arg("-dc")
        .arg(&gz_path)
        .output()
        .map_err(|e| e.to_string())?;
    if !raw.status.success() {
        return Err("gzip -d failed".into());
    }
    let part = tmp.path().join("ntfs.bin");
    std::fs::write(&part, &raw.stdout).map_err(|e| e.to_string())?;
    std::fs::rename(&part, target).map_err(|e| e.to_string())
}
