//! Writing guest filesystems: the [`FsWrite`] trait and its path-level helpers.
//!
//! The write side mirrors the read side ([`FsRead`]): backends take *canonical* paths and never
//! see a raw user or guest path; [`FsWriteExt`] resolves raw paths through the guest-root
//! resolver first (symlinks are followed in directory components, and never out of the guest).
//!
//! Backends write straight to their device. Crash safety comes from the layer below: open the
//! device through `disk::txn::Transaction`, so a run that dies half-way is rolled back to the
//! original bytes. A backend therefore does not need its own journal, but it must refuse a
//! filesystem that is already unclean ([`Error::Unclean`]) unless [`WriteOptions::force`] is set.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use guestfs::write::{FsWrite, FsWriteExt, NewFileAttrs, WriteOptions};
//! # fn demo(dev: Arc<dyn disk::BlockWrite>) -> guestfs::Result<()> {
//! let fs = guestfs::fat::FatFs::open_rw(dev, WriteOptions::new())?;
//! fs.mkdir_p(b"/EFI/BOOT", &NewFileAttrs::dir())?;
//! fs.write_file_path(b"/EFI/BOOT/BOOTX64.EFI", b"...", &NewFileAttrs::file())?;
//! fs.flush()?;
//! # Ok(()) }
//! ```

use crate::resolve::{Follow, resolve};
use crate::{Error, FileType, FsRead, GuestPath, Result};

/// How a filesystem is opened for writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    force: bool,
}

impl WriteOptions {
    /// Refuse unclean filesystems (the default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Write even to a filesystem marked dirty (a backend may still refuse states it cannot
    /// write safely at all, such as a hibernated NTFS).
    #[must_use]
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Whether [`WriteOptions::force`] was set.
    #[must_use]
    pub fn is_forced(&self) -> bool {
        self.force
    }
}

/// Attributes of a file, directory or symlink being created. Fields a filesystem cannot store
/// are ignored (FAT has no owner), except extended attributes: a backend without them returns
/// [`Error::Unsupported`] rather than drop a security label silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFileAttrs {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time in seconds since the Unix epoch; `None` for "now" as the backend
    /// defines it.
    pub mtime: Option<i64>,
    /// Extended attributes to set, such as `security.selinux`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl NewFileAttrs {
    /// A root-owned regular file, mode 0o644.
    #[must_use]
    pub fn file() -> Self {
        Self::with_mode(0o644)
    }

    /// A root-owned directory, mode 0o755.
    #[must_use]
    pub fn dir() -> Self {
        Self::with_mode(0o755)
    }

    /// Root-owned, with the given permission bits.
    #[must_use]
    pub fn with_mode(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
            mtime: None,
            xattrs: Vec::new(),
        }
    }

    /// Sets the owner.
    #[must_use]
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time.
    #[must_use]
    pub fn mtime(mut self, secs: i64) -> Self {
        self.mtime = Some(secs);
        self
    }

    /// Adds an extended attribute.
    #[must_use]
    pub fn xattr(mut self, name: &[u8], value: &[u8]) -> Self {
        self.xattrs.push((name.to_vec(), value.to_vec()));
        self
    }
}

/// Timestamps to change; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Times {
    /// Access time, seconds since the Unix epoch.
    pub atime: Option<i64>,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: Option<i64>,
}

/// A guest filesystem that can be changed, by canonical path.
///
/// Contracts every backend keeps:
/// - paths are canonical (see the crate docs) and a final symlink is never followed;
/// - [`FsWrite::write_file`] on an existing file replaces its *contents* only: owner, mode,
///   extended attributes (SELinux labels) and identity are kept, and `attrs` is ignored; on a new
///   file `attrs` applies;
/// - errors are [`Error::NotFound`] for a missing parent or target, [`Error::AlreadyExists`] for a
///   name that is taken, [`Error::NotADirectory`] / [`Error::IsADirectory`] for the wrong kind,
///   [`Error::NotEmpty`] for `rmdir` of a non-empty directory, [`Error::Unsupported`] naming the
///   filesystem for what its format cannot store;
/// - nothing is guaranteed durable before [`FsWrite::flush`].
pub trait FsWrite: FsRead {
    /// Creates the regular file at `path` with `data`, or replaces the contents of the existing
    /// one (keeping its owner, mode and labels).
    ///
    /// # Errors
    /// [`Error::IsADirectory`], [`Error::NotFound`] for a missing parent, full filesystem, I/O.
    fn write_file(&self, path: &GuestPath, data: &[u8], attrs: &NewFileAttrs) -> Result<()>;

    /// Writes `data` at `offset` into the existing regular file at `path`, growing it (with
    /// zeros in any gap) as needed.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IsADirectory`], full filesystem, I/O.
    fn write_at(&self, path: &GuestPath, offset: u64, data: &[u8]) -> Result<()>;

    /// Appends `data` to the existing regular file at `path`; returns the new size.
    ///
    /// # Errors
    /// As [`FsWrite::write_at`].
    fn append(&self, path: &GuestPath, data: &[u8]) -> Result<u64> {
        let size = self.lstat(path)?.size;
        self.write_at(path, size, data)?;
        size.checked_add(data.len() as u64)
            .ok_or_else(|| Error::LimitExceeded {
                what: format!("{path}: size after append"),
                limit: u64::MAX,
            })
    }

    /// Sets the size of the regular file at `path`, cutting it or extending it with zeros.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::IsADirectory`], full filesystem, I/O.
    fn truncate(&self, path: &GuestPath, len: u64) -> Result<()>;

    /// Creates the directory `path` (its parent must exist).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::NotFound`] for a missing parent, I/O.
    fn mkdir(&self, path: &GuestPath, attrs: &NewFileAttrs) -> Result<()>;

    /// Creates a symlink at `path` pointing at `target` (stored as given).
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::Unsupported`] on filesystems without symlinks.
    fn symlink(&self, path: &GuestPath, target: &[u8], attrs: &NewFileAttrs) -> Result<()>;

    /// Removes the file or symlink at `path`.
    ///
    /// # Errors
    /// [`Error::IsADirectory`] for a directory, [`Error::NotFound`], I/O.
    fn unlink(&self, path: &GuestPath) -> Result<()>;

    /// Removes the empty directory at `path`.
    ///
    /// # Errors
    /// [`Error::NotEmpty`], [`Error::NotADirectory`], [`Error::NotFound`], [`Error::InvalidPath`]
    /// for the root.
    fn rmdir(&self, path: &GuestPath) -> Result<()>;

    /// Moves `from` to `to`, replacing a regular file (or an empty directory, when `from` is a
    /// directory) at `to`, as `rename(2)` does.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidPath`] for moving a directory into itself,
    /// [`Error::NotEmpty`] / [`Error::IsADirectory`] / [`Error::NotADirectory`] for a target of
    /// the wrong kind.
    fn rename(&self, from: &GuestPath, to: &GuestPath) -> Result<()>;

    /// Sets the permission bits of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] for what the format cannot store.
    fn set_mode(&self, path: &GuestPath, mode: u32) -> Result<()>;

    /// Sets the owner of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] on filesystems without owners.
    fn set_owner(&self, path: &GuestPath, uid: u32, gid: u32) -> Result<()>;

    /// Sets timestamps of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] for what the format cannot store.
    fn set_times(&self, path: &GuestPath, times: &Times) -> Result<()>;

    /// The value of extended attribute `name` of `path`, if it has one.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] on filesystems without xattrs.
    fn get_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Sets extended attribute `name` of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] on filesystems without xattrs.
    fn set_xattr(&self, path: &GuestPath, name: &[u8], value: &[u8]) -> Result<()>;

    /// Removes extended attribute `name` of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also for a missing attribute), [`Error::Unsupported`].
    fn remove_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<()>;

    /// The names of the extended attributes of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Unsupported`] on filesystems without xattrs.
    fn list_xattrs(&self, path: &GuestPath) -> Result<Vec<Vec<u8>>>;

    /// Writes every cached change to the device and flushes the device.
    ///
    /// # Errors
    /// I/O errors.
    fn flush(&self) -> Result<()>;
}

/// Splits a raw path into its resolved parent directory and its last name, refusing a last
/// component of `.` or `..` (and the root itself), which name no creatable entry.
///
/// # Errors
/// [`Error::InvalidPath`]; as [`resolve`]; [`Error::NotADirectory`] if the parent is not one.
pub fn resolve_parent<F: FsRead + ?Sized>(fs: &F, raw: &[u8]) -> Result<(GuestPath, Vec<u8>)> {
    let trimmed = {
        let mut end = raw.len();
        while end > 1 && raw.get(end - 1) == Some(&b'/') {
            end -= 1;
        }
        // OK to slice: end <= raw.len().
        &raw[..end]
    };
    let (dir, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        // OK to slice: i < trimmed.len().
        Some(i) => (&trimmed[..i.max(1)], &trimmed[i + 1..]),
        None => (&b"/"[..], trimmed),
    };
    if name.is_empty() || name == b"." || name == b".." {
        return Err(Error::InvalidPath {
            path: String::from_utf8_lossy(raw).into_owned(),
            why: "the last component must name an entry (not /, . or ..)",
        });
    }
    let parent = resolve(fs, dir, Follow::Final)?;
    match fs.lstat(&parent)?.file_type {
        FileType::Directory => {}
        _ => {
            return Err(Error::NotADirectory {
                path: parent.to_string(),
            });
        }
    }
    Ok((parent, name.to_vec()))
}

fn child(parent: &GuestPath, name: &[u8]) -> Result<GuestPath> {
    parent.join_name(name)
}

/// Path-level helpers for every writable filesystem: raw paths are resolved inside the guest
/// root first (the parent with [`Follow::Final`]), so no guest symlink can send a write outside.
pub trait FsWriteExt: FsWrite {
    /// Creates or replaces a file; a final symlink is followed (as `open(O_CREAT)` does), inside
    /// the guest root.
    ///
    /// # Errors
    /// As [`resolve`] and [`FsWrite::write_file`].
    fn write_file_path(&self, raw: &[u8], data: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let (parent, name) = resolve_parent(self, raw)?;
        let p = child(&parent, &name)?;
        let p = resolve(self, &p.to_bytes(), Follow::Final)?;
        self.write_file(&p, data, attrs)
    }

    /// Creates `raw` and every missing parent; existing directories are fine.
    ///
    /// # Errors
    /// [`Error::NotADirectory`] if a component exists and is not a directory; as
    /// [`FsWrite::mkdir`].
    fn mkdir_p(&self, raw: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let mut prefix: Vec<u8> = Vec::new();
        for comp in raw.split(|&b| b == b'/') {
            if comp.is_empty() || comp == b"." {
                continue;
            }
            prefix.push(b'/');
            prefix.extend_from_slice(comp);
            if comp == b".." {
                continue;
            }
            let p = resolve(self, &prefix, Follow::Final)?;
            match self.lstat(&p) {
                Ok(md) if md.file_type == FileType::Directory => {}
                Ok(_) => {
                    return Err(Error::NotADirectory {
                        path: p.to_string(),
                    });
                }
                Err(e) if e.is_not_found() => self.mkdir(&p, attrs)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `append` on a raw path (a final symlink is followed).
    ///
    /// # Errors
    /// As [`resolve`] and [`FsWrite::append`].
    fn append_path(&self, raw: &[u8], data: &[u8]) -> Result<u64> {
        let p = resolve(self, raw, Follow::Final)?;
        self.append(&p, data)
    }

    /// `mkdir` on a raw path.
    ///
    /// # Errors
    /// As [`resolve_parent`] and [`FsWrite::mkdir`].
    fn mkdir_path(&self, raw: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let (parent, name) = resolve_parent(self, raw)?;
        self.mkdir(&child(&parent, &name)?, attrs)
    }

    /// `unlink` on a raw path (a final symlink is removed, not followed).
    ///
    /// # Errors
    /// As [`resolve_parent`] and [`FsWrite::unlink`].
    fn unlink_path(&self, raw: &[u8]) -> Result<()> {
        let (parent, name) = resolve_parent(self, raw)?;
        self.unlink(&child(&parent, &name)?)
    }

    /// `rmdir` on a raw path.
    ///
    /// # Errors
    /// As [`resolve_parent`] and [`FsWrite::rmdir`].
    fn rmdir_path(&self, raw: &[u8]) -> Result<()> {
        let (parent, name) = resolve_parent(self, raw)?;
        self.rmdir(&child(&parent, &name)?)
    }

    /// `rename` on raw paths (final symlinks are moved, not followed).
    ///
    /// # Errors
    /// As [`resolve_parent`] and [`FsWrite::rename`].
    fn rename_path(&self, from: &[u8], to: &[u8]) -> Result<()> {
        let (fp, fname) = resolve_parent(self, from)?;
        let (tp, tname) = resolve_parent(self, to)?;
        self.rename(&child(&fp, &fname)?, &child(&tp, &tname)?)
    }

    /// `symlink` on a raw link path.
    ///
    /// # Errors
    /// As [`resolve_parent`] and [`FsWrite::symlink`].
    fn symlink_path(&self, raw: &[u8], target: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let (parent, name) = resolve_parent(self, raw)?;
        self.symlink(&child(&parent, &name)?, target, attrs)
    }
}

impl<T: FsWrite + ?Sized> FsWriteExt for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::tests::ToyFs;

    fn toy() -> ToyFs {
        let mut fs = ToyFs::default();
        fs.add("/etc", FileType::Directory, "");
        fs.add("/etc/passwd", FileType::Regular, "x");
        fs.add("/link", FileType::Symlink, "../../etc");
        fs.add("/abs", FileType::Symlink, "/etc");
        fs
    }

    #[test]
    fn resolve_parent_follows_symlinks_inside_the_root() {
        let fs = toy();
        let (p, n) = resolve_parent(&fs, b"/link/new").unwrap();
        assert_eq!((p.to_string(), n), ("/etc".to_owned(), b"new".to_vec()));
        let (p, n) = resolve_parent(&fs, b"abs//shadow/").unwrap();
        assert_eq!((p.to_string(), n), ("/etc".to_owned(), b"shadow".to_vec()));
        let (p, n) = resolve_parent(&fs, b"/top").unwrap();
        assert_eq!((p.to_string(), n), ("/".to_owned(), b"top".to_vec()));
        // The last component itself is not followed: `/link` names the link.
        let (p, n) = resolve_parent(&fs, b"/link").unwrap();
        assert_eq!((p.to_string(), n), ("/".to_owned(), b"link".to_vec()));
    }

    #[test]
    fn resolve_parent_refusals() {
        let fs = toy();
        for bad in [&b"/"[..], b"/etc/..", b"/etc/.", b"", b"//"] {
            assert!(
                matches!(resolve_parent(&fs, bad), Err(Error::InvalidPath { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            resolve_parent(&fs, b"/etc/passwd/x"),
            Err(Error::NotADirectory { path }) if path == "/etc/passwd"
        ));
        assert!(matches!(
            resolve_parent(&fs, b"/nope/x"),
            Err(Error::NotFound { .. })
        ));
        assert_eq!(
            resolve_parent(&fs, b"/etc/..").unwrap_err().to_string(),
            "invalid guest path \"/etc/..\": the last component must name an entry (not /, . or ..)"
        );
    }

    #[test]
    fn builders_set_fields() {
        let a = NewFileAttrs::with_mode(0o600)
            .owner(1000, 100)
            .mtime(42)
            .xattr(b"security.selinux", b"system_u:object_r:etc_t:s0");
        assert_eq!(
            a,
            NewFileAttrs {
                mode: 0o600,
                uid: 1000,
                gid: 100,
                mtime: Some(42),
                xattrs: vec![(
                    b"security.selinux".to_vec(),
                    b"system_u:object_r:etc_t:s0".to_vec()
                )],
            }
        );
        assert_eq!(NewFileAttrs::file().mode, 0o644);
        assert_eq!(NewFileAttrs::dir().mode, 0o755);
        assert!(!WriteOptions::new().is_forced());
        assert!(WriteOptions::new().force(true).is_forced());
    }
}
