//! Reproducible builders of test disk images for rehost: Linux and Windows guests as they look
//! after a migration from VMware, Hyper-V or Xen, with the files inspection reads.
//!
//! Each image is described by a plan (partition table, filesystems and their file trees), built
//! with root-free tools where possible (`sfdisk`, `mke2fs -d`, `mkfs.xfs -p`, `mkfs.btrfs
//! --rootdir`, `mkfs.vfat` + mtools, `hivexregedit`), and cached as
//! `~/.cache/rehost/images/<name>-<key>.raw` where the key hashes the builder's source, the tool
//! versions and the plan. NTFS images need root (their files go in through an ntfs-3g mount).
//! [`expected`] gives, per image, the facts inspection must report.
//!
//! ```no_run
//! let raw = images::build("debian12-vmware")?;
//! let facts = images::expected("debian12-vmware").unwrap();
//! assert_eq!(facts.distro, "debian");
//! # let _ = raw;
//! # Ok::<(), images::Error>(())
//! ```

mod builders;
mod cache;
#[cfg(test)]
mod checks;
mod error;
mod expected;
mod hive;
mod lvm;
mod make;
mod plan;
mod regf;
mod synth;
mod tools;
mod tree;

use std::path::PathBuf;

use sha2::Digest as _;

pub use builders::debian12_boot::BootImageFacts;
pub use cache::{CACHE_ENV, cache_dir};
pub use error::{Error, Result};
pub use expected::{
    Expected, ExpectedFs, ExpectedKernel, ExpectedNic, ExpectedWindows, FstabEntry,
};

/// The names of every image, in build order.
pub fn names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| builders::BUILDERS.iter().map(|b| b.expected.name).collect())
}

/// The names of the bootable images (real installs, built as root with network access; kept
/// out of [`names`] so the all-image tests stay root-free and offline). [`build`] builds them too.
pub fn boot_images() -> &'static [&'static str] {
    &[builders::debian12_boot::NAME]
}

/// The facts boot tests check on bootable image `name`.
pub fn boot_facts(name: &str) -> Option<&'static BootImageFacts> {
    (name == builders::debian12_boot::NAME).then_some(&builders::debian12_boot::FACTS)
}

/// The facts inspection must find on image `name`.
pub fn expected(name: &str) -> Option<&'static Expected> {
    builders::BUILDERS
        .iter()
        .find(|b| b.expected.name == name)
        .map(|b| b.expected)
}

fn builder(name: &str) -> Result<&'static builders::Builder> {
    builders::BUILDERS
        .iter()
        .find(|b| b.expected.name == name)
        .ok_or_else(|| Error::UnknownImage {
            name: name.to_owned(),
            known: names().join(", "),
        })
}

/// Whether building image `name` needs root (NTFS content).
///
/// # Errors
/// [`Error::UnknownImage`], or whatever making the plan fails with.
pub fn needs_root(name: &str) -> Result<bool> {
    Ok((builder(name)?.plan)()?.needs_root())
}

/// The cache key of image `name` (16 hex digits).
///
/// # Errors
/// [`Error::UnknownImage`]; [`Error::ToolMissing`] if a tool the builder uses is not installed;
/// [`Error::Io`] reading a host file the image copies.
pub fn key(name: &str) -> Result<String> {
    let b = builder(name)?;
    let plan = (b.plan)()?;
    let mut h = sha2::Sha256::new();
    h.update(format!("{plan:?}").as_bytes());
    for fs in plan.filesystems() {
        fs.tree.digest(&mut h)?;
    }
    let versions = plan
        .tools()
        .into_iter()
        .map(tools::version)
        .collect::<Result<Vec<_>>>()?;
    let mut sources = vec![b.source];
    sources.extend_from_slice(builders::COMMON_SOURCES);
    Ok(cache::cache_key(name, &sources, &versions, &h.finalize()))
}

/// Builds image `name` unless it is cached, and returns the path of the raw image.
///
/// # Errors
/// [`Error::UnknownImage`]; [`Error::ToolMissing`]; [`Error::NeedsRoot`] for NTFS images when
/// not root; [`Error::ToolFailed`] or [`Error::Io`] if a step fails.
pub fn build(name: &str) -> Result<PathBuf> {
    if name == builders::debian12_boot::NAME {
        return builders::debian12_boot::build();
    }
    // Within one process the key cannot change (sources are compiled in; tools are assumed not
    // to be upgraded mid-run), so later calls skip recomputing it while the file exists.
    static BUILT: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let cached = |built: &Vec<(String, PathBuf)>| {
        built
            .iter()
            .find(|(n, p)| n == name && p.exists())
            .map(|(_, p)| p.clone())
    };
    if let Some(p) = cached(
        &BUILT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ) {
        return Ok(p);
    }
    let b = builder(name)?;
    let key = key(name)?;
    let dir = cache_dir();
    let path = dir.join(format!("{name}-{key}.raw"));
    let path = cache::get_or_build(&dir, name, name, &path, |tmp, work| {
        let plan = (b.plan)()?;
        tracing::debug!(image = name, "building");
        make::realise(&plan, tmp, work)
    })?;
    BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((name.to_owned(), path.clone()));
    Ok(path)
}

/// Builds image `name` (see [`build`]) and returns a qcow2 copy of it, also cached.
///
/// # Errors
/// As [`build`], and [`Error::ToolFailed`] if `qemu-img convert` fails.
pub fn build_qcow2(name: &str) -> Result<PathBuf> {
    let raw = build(name)?;
    let qcow = raw.with_extension("qcow2");
    let dir = cache_dir();
    cache::get_or_build(&dir, name, &format!("{name}.qcow2"), &qcow, |tmp, _| {
        tools::run(
            tools::command(tools::QEMU_IMG)?
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(tmp),
        )
        .map(|_| ())
    })
}
