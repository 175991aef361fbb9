//! Opening guest filesystems for writing, and a writable mount table.
//!
//! [`open_rw`] is the write-side twin of [`crate::open`]: it probes the device and returns the
//! backend that can change that filesystem, or [`Error::Unsupported`] naming the type when we have
//! no trusted writer for it (XFS and btrfs today). [`MountsRw`] is the twin of [`crate::Mounts`]:
//! it routes each canonical path to the writable filesystem mounted at its longest matching
//! mountpoint, so fixers write `/boot/grub/grub.cfg` without knowing `/boot` is its own partition.
//!
//! Callers open `dev` through `disk::txn::Transaction` (house rule: every write is undoable).

use std::sync::Arc;

use disk::BlockWrite;

use crate::write::{FsWrite, NewFileAttrs, Times, WriteOptions};
use crate::{Error, FsKind, GuestPath, Mounts, Result};

/// Opens the filesystem on `dev` for reading and writing.
///
/// # Errors
/// [`Error::Unsupported`] for a filesystem type without a writer; the backend's refusals
/// ([`Error::Unclean`] for a dirty or hibernated volume unless forced, where the backend allows
/// forcing at all); I/O.
pub fn open_rw(dev: Arc<dyn BlockWrite>, opts: WriteOptions) -> Result<Arc<dyn FsWrite>> {
    let probe = crate::probe(&*dev)?;
    open_rw_kind(dev, probe.kind, opts)
}

/// As [`open_rw`] for a device already probed as `kind`.
///
/// # Errors
/// As [`open_rw`].
pub fn open_rw_kind(
    dev: Arc<dyn BlockWrite>,
    kind: FsKind,
    opts: WriteOptions,
) -> Result<Arc<dyn FsWrite>> {
    match kind {
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => {
            Ok(Arc::new(crate::fat::FatFs::open_rw(dev, opts)?))
        }
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => {
            Ok(Arc::new(crate::ext4::Ext4Rw::open(dev, opts)?))
        }
        FsKind::Ntfs => Ok(Arc::new(crate::ntfs::NtfsRw::open_rw(dev, opts)?)),
        other => Err(Error::unsupported(
            "filesystem writing",
            format!(
                "no trusted writer for {} filesystems; rehost writes ext2/3/4, ntfs and fat only",
                other.blkid_name()
            ),
        )),
    }
}

/// Writable filesystems mounted at guest paths: the read side's [`Mounts`] table holding
/// [`FsWrite`] backends, so routing and reads are the same code.
pub type MountsRw = Mounts<dyn FsWrite>;

impl Mounts<dyn FsWrite> {
    /// Flushes every mounted filesystem, deepest first; the first error is returned after all
    /// were tried.
    ///
    /// # Errors
    /// The first backend error.
    pub fn flush_all(&self) -> Result<()> {
        let mut first = None;
        for (_, fs) in self.mounted() {
            if let Err(e) = fs.flush() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Refuses to change a mountpoint itself (it belongs to two filesystems at once).
    fn route_mut(&self, path: &GuestPath) -> Result<(&Arc<dyn FsWrite>, GuestPath)> {
        let (fs, inner) = self.route(path);
        if inner.is_root() {
            return Err(Error::unsupported(
                "filesystem writing",
                format!("{path} is a mountpoint; change what is inside it instead"),
            ));
        }
        Ok((fs, inner))
    }
}

impl FsWrite for MountsRw {
    fn write_file(&self, path: &GuestPath, data: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.write_file(&inner, data, attrs)
    }
    fn write_at(&self, path: &GuestPath, offset: u64, data: &[u8]) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.write_at(&inner, offset, data)
    }
    fn truncate(&self, path: &GuestPath, len: u64) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.truncate(&inner, len)
    }
    fn mkdir(&self, path: &GuestPath, attrs: &NewFileAttrs) -> Result<()> {
        let (fs, inner) = self.route(path);
        if inner.is_root() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        fs.mkdir(&inner, attrs)
    }
    fn symlink(&self, path: &GuestPath, target: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.symlink(&inner, target, attrs)
    }
    fn unlink(&self, path: &GuestPath) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.unlink(&inner)
    }
    fn rmdir(&self, path: &GuestPath) -> Result<()> {
        let (fs, inner) = self.route_mut(path)?;
        fs.rmdir(&inner)
    }
    fn rename(&self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        let (a, from_inner) = self.route_mut(from)?;
        let (b, to_inner) = self.route_mut(to)?;
        if !Arc::ptr_eq(a, b) {
            return Err(Error::unsupported(
                "rename",
                format!("{from} and {to} are on different filesystems"),
            ));
        }
        a.rename(&from_inner, &to_inner)
    }
    fn set_mode(&self, path: &GuestPath, mode: u32) -> Result<()> {
        let (fs, inner) = self.route(path);
        fs.set_mode(&inner, mode)
    }
    fn set_owner(&self, path: &GuestPath, uid: u32, gid: u32) -> Result<()> {
        let (fs, inner) = self.route(path);
        fs.set_owner(&inner, uid, gid)
    }
    fn set_times(&self, path: &GuestPath, times: &Times) -> Result<()> {
        let (fs, inner) = self.route(path);
        fs.set_times(&inner, times)
    }
    fn get_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let (fs, inner) = self.route(path);
        fs.get_xattr(&inner, name)
    }
    fn set_xattr(&self, path: &GuestPath, name: &[u8], value: &[u8]) -> Result<()> {
        let (fs, inner) = self.route(path);
        fs.set_xattr(&inner, name, value)
    }
    fn remove_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<()> {
        let (fs, inner) = self.route(path);
        fs.remove_xattr(&inner, name)
    }
    fn list_xattrs(&self, path: &GuestPath) -> Result<Vec<Vec<u8>>> {
        let (fs, inner) = self.route(path);
        fs.list_xattrs(&inner)
    }
    fn flush(&self) -> Result<()> {
        self.flush_all()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::FsReadExt;
    use crate::write::FsWriteExt;

    /// A fresh FAT16 volume of `mib` MiB, formatted by `fatfs` (independent of our writer).
    fn fat(mib: usize) -> Arc<dyn FsWrite> {
        let mut img = Cursor::new(vec![0u8; mib << 20]);
        fatfs::format_volume(&mut img, fatfs::FormatVolumeOptions::new()).unwrap();
        let dev: Arc<dyn BlockWrite> = Arc::new(disk::MemDisk::from_vec(img.into_inner()));
        open_rw(dev, WriteOptions::new()).unwrap()
    }

    #[test]
    fn writes_route_to_the_deepest_mount() {
        let root = fat(8);
        let boot = fat(8);
        root.mkdir_p(b"/boot/efi", &NewFileAttrs::dir()).unwrap();
        let mut m = MountsRw::new(root.clone());
        m.mount(GuestPath::parse(b"/boot").unwrap(), boot.clone());
        m.mkdir_p(b"/boot/grub", &NewFileAttrs::dir()).unwrap();
        m.write_file_path(b"/boot/grub/grub.cfg", b"menuentry", &NewFileAttrs::file())
            .unwrap();
        m.write_file_path(b"/etc.txt", b"root", &NewFileAttrs::file())
            .unwrap();
        assert_eq!(
            boot.read_file(b"/grub/grub.cfg", 100).unwrap(),
            b"menuentry"
        );
        assert!(!root.exists(b"/boot/grub/grub.cfg").unwrap());
        assert_eq!(root.read_file(b"/etc.txt", 100).unwrap(), b"root");
        assert_eq!(
            m.read_file(b"/boot/grub/grub.cfg", 100).unwrap(),
            b"menuentry"
        );
        m.flush().unwrap();
    }

    #[test]
    fn mountpoints_and_cross_mount_renames_are_refused() {
        let mut m = MountsRw::new(fat(8));
        m.mount(GuestPath::parse(b"/boot").unwrap(), fat(8));
        m.write_file_path(b"/a", b"x", &NewFileAttrs::file())
            .unwrap();
        let boot = GuestPath::parse(b"/boot").unwrap();
        let a = GuestPath::parse(b"/a").unwrap();
        let b = GuestPath::parse(b"/boot/a").unwrap();
        assert!(matches!(m.unlink(&boot), Err(Error::Unsupported { .. })));
        assert!(matches!(m.rmdir(&boot), Err(Error::Unsupported { .. })));
        assert!(matches!(
            m.mkdir(&boot, &NewFileAttrs::dir()),
            Err(Error::AlreadyExists { .. })
        ));
        let err = m.rename(&a, &b).unwrap_err();
        assert!(err.to_string().contains("different filesystems"), "{err}");
        assert_eq!(m.read_file(b"/a", 10).unwrap(), b"x");
    }

    #[test]
    fn unwritable_kinds_say_so() {
        let dev: Arc<dyn BlockWrite> = Arc::new(disk::MemDisk::zeroed(1 << 20).unwrap());
        let err = open_rw_kind(dev, FsKind::Xfs, WriteOptions::new())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("no trusted writer for xfs"),
            "{err}"
        );
    }
}
