//! Applying a plan through a small write interface the caller provides.

use guestfs::GuestPath;

use crate::{Change, Error, Plan, Result};

/// The writes a plan needs. The CLI implements it over the filesystem write layer inside a
/// transaction; tests implement it over [`crate::testkit::MemFs`].
pub trait Applier {
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
}

/// Applies every change of `plan` in order; returns how many were applied.
///
/// # Errors
/// [`Error::Apply`] naming the first change that failed (earlier ones stay applied: run inside a
/// transaction to make it all-or-nothing).
pub fn apply(plan: &Plan, applier: &mut dyn Applier) -> Result<usize> {
    let mut n = 0usize;
    for c in plan.changes() {
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
        };
        r.map_err(|e| Error::Apply {
            change: c.describe(),
            detail: e.to_string(),
        })?;
        n = n.saturating_add(1);
    }
    Ok(n)
}
