//! Applying a plan through a small write interface the caller provides.

use guestfs::write::{FsWrite, NewFileAttrs};
use guestfs::{FileType, FsRead, FsReadExt, GuestPath};

use crate::{Change, Error, Plan, Result};

/// The writes a plan needs, on a filesystem that can also be read (so [`apply`] can check that
/// each file is still what the plan saw). The CLI implements it over the filesystem write layer
/// inside a transaction; tests implement it over [`crate::testkit::MemFs`].
pub trait Applier: FsRead {
    /// Replaces the content of an existing regular file, keeping its mode, owner and labels.
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn replace_file(&mut self, path: &GuestPath, new: &[u8]) -> Result<()>;
    /// Creates a regular file that does not exist yet.
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn create_file(&mut self, path: &GuestPath, content: &[u8], mode: u32) -> Result<()>;
    /// Deletes a regular file.
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn delete_file(&mut self, path: &GuestPath) -> Result<()>;
    /// Renames a file (the target must not exist).
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<()>;
    /// Creates a symbolic link.
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn symlink(&mut self, path: &GuestPath, target: &[u8]) -> Result<()>;
    /// Creates a directory (root-owned, `mode`).
    ///
    /// # Errors
    /// Whatever the filesystem reports.
    fn mkdir(&mut self, path: &GuestPath, mode: u32) -> Result<()>;
}

/// The SELinux label a new file gets: its parent directory's, as the kernel gives a new file
/// without a type transition. Filesystems without xattrs (FAT, NTFS) get none.
fn inherit_label(fs: &dyn FsWrite, path: &GuestPath, attrs: NewFileAttrs) -> NewFileAttrs {
    const SELINUX: &[u8] = b"security.selinux";
    match fs.get_xattr(&path.parent(), SELINUX) {
        Ok(Some(label)) => attrs.xattr(SELINUX, &label),
        _ => attrs,
    }
}

/// Applies changes to a writable guest filesystem ([`guestfs::write::FsWrite`], usually a
/// [`guestfs::MountsRw`] over a device opened through `disk::txn::Transaction`).
pub struct FsApplier<'a> {
    fs: &'a dyn FsWrite,
}

impl<'a> FsApplier<'a> {
    /// Wraps `fs`.
    #[must_use]
    pub fn new(fs: &'a dyn FsWrite) -> Self {
        Self { fs }
    }
}

impl FsRead for FsApplier<'_> {
    fn info(&self) -> guestfs::FsInfo {
        self.fs.info()
    }
    fn lstat(&self, path: &GuestPath) -> guestfs::Result<guestfs::Metadata> {
        self.fs.lstat(path)
    }
    fn read_dir(&self, path: &GuestPath) -> guestfs::Result<Vec<guestfs::DirEntry>> {
        self.fs.read_dir(path)
    }
    fn read_link(&self, path: &GuestPath) -> guestfs::Result<Vec<u8>> {
        self.fs.read_link(path)
    }
    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> guestfs::Result<usize> {
        self.fs.read_at(path, offset, buf)
    }
}

impl Applier for FsApplier<'_> {
    fn replace_file(&mut self, path: &GuestPath, new: &[u8]) -> Result<()> {
        // write_file on an existing file keeps owner, mode, labels and inode (FsWrite contract).
        if self.fs.lstat(path)?.file_type != FileType::Regular {
            return Err(guestfs::Error::NotFound {
                path: path.to_string(),
            }
            .into());
        }
        Ok(self.fs.write_file(path, new, &NewFileAttrs::file())?)
    }
    fn create_file(&mut self, path: &GuestPath, content: &[u8], mode: u32) -> Result<()> {
        let attrs = inherit_label(self.fs, path, NewFileAttrs::with_mode(mode));
        Ok(self.fs.write_file(path, content, &attrs)?)
    }
    fn delete_file(&mut self, path: &GuestPath) -> Result<()> {
        Ok(self.fs.unlink(path)?)
    }
    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        Ok(self.fs.rename(from, to)?)
    }
    fn symlink(&mut self, path: &GuestPath, target: &[u8]) -> Result<()> {
        Ok(self
            .fs
            .symlink(path, target, &NewFileAttrs::with_mode(0o777))?)
    }
    fn mkdir(&mut self, path: &GuestPath, mode: u32) -> Result<()> {
        let attrs = inherit_label(self.fs, path, NewFileAttrs::with_mode(mode));
        Ok(self.fs.mkdir(path, &attrs)?)
    }
}

/// What is at `p` now: `None` if nothing, else (type, content of a regular file).
fn current(fs: &dyn FsRead, p: &GuestPath) -> Result<Option<(FileType, Vec<u8>)>> {
    let md = match fs.lstat(p) {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let data = if md.file_type == FileType::Regular {
        fs.read_file(&p.to_bytes(), crate::fixers::initramfs::MAX_INITRAMFS_BYTES)?
    } else {
        Vec::new()
    };
    Ok(Some((md.file_type, data)))
}

/// Checks that the guest is still as the plan saw it just before `c` is applied.
fn check(fs: &dyn FsRead, c: &Change) -> Result<()> {
    let gp = |p: &str| GuestPath::parse(p.as_bytes()).map_err(Error::from);
    let stale = |detail: &str| {
        Err(Error::Stale {
            change: c.describe(),
            detail: detail.to_owned(),
        })
    };
    match c {
        Change::ReplaceFile { path, old, .. } | Change::DeleteFile { path, old } => {
            match current(fs, &gp(path)?)? {
                Some((FileType::Regular, now)) if now == *old => Ok(()),
                Some((FileType::Regular, _)) => stale("the file changed since planning"),
                Some(_) if matches!(c, Change::DeleteFile { .. }) && old.is_empty() => Ok(()),
                Some(_) => stale("not a regular file any more"),
                None => stale("the file is gone"),
            }
        }
        Change::EditHive { path, old, .. } => match current(fs, &gp(path)?)? {
            Some((FileType::Regular, now)) if now == *old => Ok(()),
            Some((FileType::Regular, _)) => stale("the hive changed since planning"),
            Some(_) => stale("not a regular file any more"),
            None => stale("the hive is gone"),
        },
        Change::CreateFile { path, .. }
        | Change::Symlink { path, .. }
        | Change::Mkdir { path, .. } => match current(fs, &gp(path)?)? {
            None => Ok(()),
            Some(_) => stale("the path exists now"),
        },
        Change::Rename { from, to } => {
            if current(fs, &gp(from)?)?.is_none() {
                return stale("the source is gone");
            }
            if current(fs, &gp(to)?)?.is_some() {
                return stale("the target exists now");
            }
            Ok(())
        }
    }
}

/// Applies every change of `plan` in order, first checking each against the guest (a file must
/// still hold the bytes the plan replaces; a path to create must still be free); returns how
/// many were applied.
///
/// # Errors
/// [`Error::Stale`] if the guest changed since planning, [`Error::Apply`] naming the change that
/// failed. Earlier changes stay applied: run inside a transaction to make it all-or-nothing.
pub fn apply(plan: &Plan, applier: &mut dyn Applier) -> Result<usize> {
    apply_with_progress(plan, applier, &mut |_, _, _| {})
}

/// As [`apply`], calling `progress(done, total, change)` before each change (for progress bars;
/// `done` counts the changes already applied).
///
/// # Errors
/// As [`apply`].
pub fn apply_with_progress(
    plan: &Plan,
    applier: &mut dyn Applier,
    progress: &mut dyn FnMut(usize, usize, &Change),
) -> Result<usize> {
    let total = plan.changes().count();
    let mut n = 0usize;
    for c in plan.changes() {
        progress(n, total, c);
        check(&*applier, c)?;
        let gp = |p: &str| GuestPath::parse(p.as_bytes()).map_err(Error::from);
        let r = match c {
            Change::ReplaceFile { path, new, .. } => applier.replace_file(&gp(path)?, new),
            Change::CreateFile {
                path,
                content,
                mode,
            } => applier.create_file(&gp(path)?, content, *mode),
            Change::DeleteFile { path, .. } => applier.delete_file(&gp(path)?),
            Change::Rename { from, to } => applier.rename(&gp(from)?, &gp(to)?),
            Change::Symlink { path, target } => applier.symlink(&gp(path)?, target.as_bytes()),
            Change::Mkdir { path, mode } => applier.mkdir(&gp(path)?, *mode),
            Change::EditHive { path, new, .. } => applier.replace_file(&gp(path)?, new),
        };
        r.map_err(|e| Error::Apply {
            change: c.describe(),
            detail: e.to_string(),
        })?;
        n = n.saturating_add(1);
    }
    Ok(n)
}
