//! The image cache: `~/.cache/rehost/images/<name>-<key>.raw`, where the key hashes the builder's
//! source text, the versions of the tools it runs and its plan (including host files' bytes).
//! Builds go to a temporary name and are renamed into place, under a per-image `flock`, so
//! concurrent test processes neither collide nor see half-written images.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result, io};

/// Environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "REHOST_IMAGE_CACHE";

/// The cache directory: `$REHOST_IMAGE_CACHE`, else `$XDG_CACHE_HOME/rehost/images`, else
/// `$HOME/.cache/rehost/images`, else a directory under the system temp dir.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(CACHE_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("rehost/images");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h).join(".cache/rehost/images");
    }
    std::env::temp_dir().join("rehost-images-cache")
}

/// The cache key: 16 hex digits of SHA-256 over the image name, source texts, tool versions and
/// the plan digest, each length-prefixed so concatenations cannot collide.
pub(crate) fn cache_key(
    name: &str,
    sources: &[&str],
    tool_versions: &[String],
    plan_digest: &[u8],
) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(name.as_bytes());
    for s in sources {
        field(s.as_bytes());
    }
    for v in tool_versions {
        field(v.as_bytes());
    }
    field(plan_digest);
    let d = h.finalize();
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// An exclusive `flock` on `<dir>/<name>.lock`, released on drop.
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Blocks until the lock for `name` in `dir` is ours.
    pub(crate) fn acquire(dir: &Path, name: &str) -> Result<Self> {
        let path = dir.join(format!("{name}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::Io {
                path: path.clone(),
                source: e.into(),
            }
        })?;
        Ok(Self { _file: file })
    }
}

/// Returns `final_path`, creating it with `make(tmp_path, work_dir)` if absent: under the lock
/// `<lock>.lock`, in a temporary directory beside it, then renamed. Older entries of the same
/// image and extension (`<image>-<otherkey>.<ext>`) are removed.
pub(crate) fn get_or_build(
    dir: &Path,
    image: &str,
    lock: &str,
    final_path: &Path,
    make: impl FnOnce(&Path, &Path) -> Result<()>,
) -> Result<PathBuf> {
    if final_path.exists() {
        return Ok(final_path.to_path_buf());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let _lock = Lock::acquire(dir, lock)?;
    if final_path.exists() {
        return Ok(final_path.to_path_buf());
    }
    let work = tempfile::Builder::new()
        .prefix(&format!(".{lock}-"))
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let tmp = work.path().join("out.img");
    make(&tmp, work.path())?;
    std::fs::rename(&tmp, final_path).map_err(io(final_path))?;
    remove_stale(dir, image, final_path);
    Ok(final_path.to_path_buf())
}

/// Deletes other versions of the same output (`<name>-<otherkey>.<ext>`); best effort.
fn remove_stale(dir: &Path, name: &str, keep: &Path) {
    let Some(ext) = keep.extension().and_then(|e| e.to_str()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{name}-");
    for e in entries.flatten() {
        let p = e.path();
        let Some(file) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some(key) = rest.strip_suffix(&format!(".{ext}")) else {
            continue;
        };
        if p != keep && key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            tracing::debug!(path = %p.display(), "removing stale cached image");
            let _ = std::fs::remove_file(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_with_each_input() {
        let base = cache_key(
            "debian12-vmware",
            &["fn a() {}", "fn b() {}"],
            &["mke2fs 1.47".into()],
            b"plan",
        );
        assert_eq!(base.len(), 16);
        assert_eq!(
            base,
            cache_key(
                "debian12-vmware",
                &["fn a() {}", "fn b() {}"],
                &["mke2fs 1.47".into()],
                b"plan"
            )
        );
        assert_ne!(
            base,
            cache_key(
                "debian12-vmware",
                &["fn a() { }", "fn b() {}"],
                &["mke2fs 1.47".into()],
                b"plan"
            )
        );
        assert_ne!(
            base,
            cache_key(
                "debian12-vmware",
                &["fn a() {}", "fn b() {}"],
                &["mke2fs 1.48".into()],
                b"plan"
            )
        );
        assert_ne!(
            base,
            cache_key(
                "debian12-vmware",
                &["fn a() {}", "fn b() {}"],
                &["mke2fs 1.47".into()],
                b"plan2"
            )
        );
        assert_ne!(
            base,
            cache_key(
                "rhel7-lvm",
                &["fn a() {}", "fn b() {}"],
                &["mke2fs 1.47".into()],
                b"plan"
            )
        );
        // Moving text between fields changes the key (fields are length-prefixed).
        assert_ne!(
            base,
            cache_key(
                "debian12-vmware",
                &["fn a() {}fn b", "() {}"],
                &["mke2fs 1.47".into()],
                b"plan"
            )
        );
    }

    #[test]
    fn get_or_build_builds_once_and_removes_stale() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("x-0123456789abcdef.raw");
        std::fs::write(&stale, b"old").unwrap();
        let target = dir.path().join("x-fedcba9876543210.raw");
        let mut calls = 0;
        let p = get_or_build(dir.path(), "x", "x", &target, |tmp, _| {
            calls += 1;
            std::fs::write(tmp, b"new").map_err(io(tmp))
        })
        .unwrap();
        assert_eq!(p, target);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert!(!stale.exists());
        let again = get_or_build(dir.path(), "x", "x", &target, |_, _| {
            panic!("must not rebuild")
        })
        .unwrap();
        assert_eq!(again, target);
        assert_eq!(calls, 1);
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("y-fedcba9876543210.raw");
        let err = get_or_build(dir.path(), "y", "y", &target, |_, _| {
            Err(Error::Invalid("boom".into()))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Invalid(ref m) if m == "boom"));
        assert!(!target.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("y.lock")]);
    }
}
