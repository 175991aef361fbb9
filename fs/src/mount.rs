//! A guest's mount table as one filesystem.
//!
//! [`Mounts`] routes every canonical path to the filesystem mounted at its longest matching
//! mountpoint, so [`crate::resolve`] follows symlinks across mounts with guest-root semantics: an
//! absolute link in `/boot` restarts at the guest's `/`, not at the root of the `/boot` partition.
//! The same table holds writable filesystems as [`crate::MountsRw`] (`Mounts<dyn FsWrite>`).

use std::sync::Arc;

use crate::{DirEntry, FileType, FsInfo, FsRead, GuestPath, Metadata, Result};

/// Most filesystems one guest may mount (house style S12).
pub const MAX_MOUNTS: usize = 256;

/// Filesystems mounted at guest paths: readable ones by default, or any `F` such as
/// `dyn FsWrite`.
pub struct Mounts<F: ?Sized = dyn FsRead> {
    /// Sorted by descending depth, so the first match is the longest prefix.
    table: Vec<(GuestPath, Arc<F>)>,
}

impl<F: ?Sized> Clone for Mounts<F> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
        }
    }
}

impl<F: ?Sized> Mounts<F> {
    /// A guest whose root filesystem is `root`.
    #[must_use]
    pub fn new(root: Arc<F>) -> Self {
        Self {
            table: vec![(GuestPath::root(), root)],
        }
    }

    /// Mounts `fs` at `at` (replacing an earlier mount at the same place). Ignored beyond
    /// [`MAX_MOUNTS`].
    pub fn mount(&mut self, at: GuestPath, fs: Arc<F>) {
        if let Some(slot) = self.table.iter_mut().find(|(p, _)| *p == at) {
            slot.1 = fs;
        } else if self.table.len() < MAX_MOUNTS {
            self.table.push((at, fs));
        }
        self.table
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().len()));
    }

    /// The mountpoints, deepest first.
    pub fn mountpoints(&self) -> impl Iterator<Item = &GuestPath> {
        self.table.iter().map(|(p, _)| p)
    }

    /// Every mounted filesystem with its mountpoint, deepest first.
    pub fn mounted(&self) -> impl Iterator<Item = (&GuestPath, &Arc<F>)> {
        self.table.iter().map(|(p, f)| (p, f))
    }

    /// The filesystem holding `path`, and `path` relative to that filesystem's root.
    pub(crate) fn route(&self, path: &GuestPath) -> (&Arc<F>, GuestPath) {
        for (at, fs) in &self.table {
            if let Some(rest) = path.components().strip_prefix(at.components()) {
                return (fs, GuestPath::from_components(rest.to_vec()));
            }
        }
        // The root mount matches everything; the table always has it.
        let (_, fs) = self
            .table
            .last()
            .unwrap_or_else(|| unreachable!("the root mount is never removed"));
        (fs, path.clone())
    }
}

impl<F: FsRead + ?Sized> FsRead for Mounts<F> {
    fn info(&self) -> FsInfo {
        let (fs, _) = self.route(&GuestPath::root());
        fs.info()
    }
    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        let (fs, inner) = self.route(path);
        let mut md = fs.lstat(&inner)?;
        // A mountpoint is a directory even if the underlying fs said otherwise.
        if inner.is_root() {
            md.file_type = FileType::Directory;
        }
        Ok(md)
    }
    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        let (fs, inner) = self.route(path);
        fs.read_dir(&inner)
    }
    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        let (fs, inner) = self.route(path);
        fs.read_link(&inner)
    }
    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (fs, inner) = self.route(path);
        fs.read_at(&inner, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsReadExt;
    use crate::resolve::tests::ToyFs;

    #[test]
    fn routes_by_longest_prefix_and_links_restart_at_guest_root() {
        let mut root = ToyFs::default();
        root.add("/etc", FileType::Directory, "");
        root.add("/etc/hostname", FileType::Regular, "web1");
        root.add("/boot", FileType::Directory, "");
        let mut boot = ToyFs::default();
        boot.add("/vmlinuz", FileType::Regular, "kernel");
        boot.add("/h", FileType::Symlink, "/etc/hostname");
        boot.add("/up", FileType::Symlink, "../etc/hostname");
        let mut m = Mounts::new(Arc::new(root));
        m.mount(GuestPath::parse(b"/boot").unwrap(), Arc::new(boot));
        assert_eq!(m.read_file(b"/boot/vmlinuz", 100).unwrap(), b"kernel");
        // Absolute link inside /boot resolves from the guest root, not the partition's root.
        assert_eq!(m.read_file(b"/boot/h", 100).unwrap(), b"web1");
        assert_eq!(m.read_file(b"/boot/up", 100).unwrap(), b"web1");
        assert_eq!(m.read_file(b"/etc/hostname", 100).unwrap(), b"web1");
        assert_eq!(
            m.lstat(&GuestPath::parse(b"/boot").unwrap())
                .unwrap()
                .file_type,
            FileType::Directory
        );
    }
}
