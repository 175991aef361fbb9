//! Writing ext2/3/4 through libext2fs: [`Ext4Rw`] implements [`FsRead`] and [`FsWrite`] over one
//! `ffi::ext2fs::Ext2Fs` handle, whose I/O goes to our block layer (so it works over raw, qcow2,
//! NBD and `disk::txn::Transaction` devices alike).
//!
//! Reads go through the same libext2fs handle as writes, under one mutex, so a read always sees
//! the writes before it (the `ext4-view` reader in the parent module caches blocks and would not).
//!
//! Refusals: a journal that needs recovery, a filesystem not cleanly unmounted, with recorded
//! errors or pending orphans is refused with [`Error::Unclean`] naming the cause and the remedy
//! (run `e2fsck`, or boot the guest once) unless [`WriteOptions::force`] is set; `quota` needs
//! force too, and `ea_inode` is refused always ([`Error::Unsupported`]). Nothing is written
//! before these checks pass.
//!
//! Durability: libext2fs writes file data, inodes and directory blocks as each call runs, but
//! keeps the superblock, group descriptors and allocation bitmaps in memory.
//! [`FsWrite::flush`] writes those back and flushes the device: afterwards the device holds a
//! consistent filesystem and the handle stays usable. Dropping an [`Ext4Rw`] without `flush`
//! closes libext2fs, which writes the same metadata back, but errors can then only be logged.
//! If the process dies before either, the image holds new data with stale counters and
//! bitmaps; that is why writers run inside a `disk::txn::Transaction`, whose recovery restores
//! the original bytes of every block written.
//!
//! Trust: libext2fs parses the filesystem's metadata in C and, unlike `e2fsck`, trusts the
//! superblock's geometry and the group descriptors. `ffi::ext2fs` therefore checks both before
//! anything else runs (the geometry in Rust; the descriptors with `ext2fs_check_desc` and
//! their checksums) and refuses an inconsistent image with [`Error::Corrupt`] naming the field,
//! writing nothing. Inodes, extent trees
//! and directory blocks are left to libext2fs's own checks (and checksums with
//! `metadata_csum`); `tests/tests/ext4_write_hostile.rs` runs the writer over mutated images in
//! child processes and requires no crash, hang or allocation failure.
//!
//! Paths, names and symlink targets are bytes, as ext4 stores them (they need not be UTF-8);
//! extended attribute *names* must be UTF-8 (they are ASCII in practice), others are refused
//! with [`Error::Unsupported`].

use std::sync::{Arc, Mutex, PoisonError};

use disk::BlockWrite;
use ffi::ext2fs::{Ext2Fs, FileKind, NewFile, OpenOptions, Timestamp};

use crate::write::{FsWrite, NewFileAttrs, Times, WriteOptions};
use crate::{
    CaseSensitivity, DirEntry, Error, FileType, FsInfo, FsKind, FsRead, GuestPath, Metadata, Result,
};

#[cfg(test)]
mod tests;

/// The `what` of this backend's [`Error::Unsupported`] and [`Error::Unclean`].
const WHAT: &str = "ext2/3/4 writing";
/// Byte offset of `s_magic` (superblock at 1024, field at 0x38; ext4 disk layout, "The Super
/// Block"), named in the error for a device that is not ext at all.
const S_MAGIC_OFFSET: u64 = 0x438;

/// An ext2/3/4 filesystem open for reading and writing through libext2fs.
pub struct Ext4Rw {
    fs: Mutex<Ext2Fs>,
    info: FsInfo,
}

impl std::fmt::Debug for Ext4Rw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Rw")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Converts an error of the FFI layer to ours.
fn map_err(e: ffi::Error) -> Error {
    use ffi::Error as F;
    match e {
        F::Device { op, source } => {
            tracing::debug!(%op, "device error under libext2fs");
            Error::Disk(source)
        }
        F::Refused(r) => Error::Unclean {
            what: "ext2/3/4 filesystem",
            detail: format!("{r}, or force the write"),
        },
        F::NotExt { found } => Error::corrupt(
            "ext2/3/4 superblock",
            S_MAGIC_OFFSET,
            format!("magic {found:#06x}, expected 0xef53"),
        ),
        F::Corrupt {
            structure,
            offset,
            detail,
        } => Error::corrupt(structure, offset, detail),
        F::Unsupported(detail) => Error::unsupported(WHAT, detail),
        F::NotFound { path } => Error::NotFound { path },
        F::Exists { path } => Error::AlreadyExists { path },
        F::NotADirectory { path } => Error::NotADirectory { path },
        F::IsADirectory { path } => Error::IsADirectory { path },
        F::NotEmpty { path } => Error::NotEmpty { path },
        F::NotARegularFile { path } => {
            Error::unsupported(WHAT, format!("{path}: not a regular file"))
        }
        F::TooLarge { what, len, limit } => Error::LimitExceeded {
            what: format!("{what} of {len} bytes"),
            limit,
        },
        F::Usage(detail) => Error::unsupported(WHAT, detail),
        other => {
            let kind = if other.is_no_space() {
                std::io::ErrorKind::StorageFull
            } else {
                std::io::ErrorKind::Other
            };
            Error::Disk(disk::Error::io(
                0,
                std::io::Error::new(kind, other.to_string()),
            ))
        }
    }
}

/// An xattr name as the UTF-8 string `ffi::ext2fs` takes.
fn utf8<'a>(what: &str, bytes: &'a [u8], path: &GuestPath) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| {
        Error::unsupported(
            WHAT,
            format!(
                "{path}: {what} {:?} is not UTF-8, which this libext2fs binding requires",
                String::from_utf8_lossy(bytes)
            ),
        )
    })
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Regular => FileType::Regular,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::Fifo,
        FileKind::Socket => FileType::Socket,
        _ => FileType::Other,
    }
}

fn new_file(attrs: &NewFileAttrs) -> NewFile {
    NewFile::file(attrs.mode).owner(attrs.uid, attrs.gid)
}

fn secs(s: i64) -> Timestamp {
    Timestamp { secs: s, nanos: 0 }
}

/// The parts of [`NewFileAttrs`] applied after creation, with names checked up front (before
/// anything is created).
struct Extra<'a> {
    xattrs: Vec<(&'a str, &'a [u8])>,
    mtime: Option<i64>,
}

impl<'a> Extra<'a> {
    fn new(attrs: &'a NewFileAttrs, path: &GuestPath) -> Result<Self> {
        let xattrs = attrs
            .xattrs
            .iter()
            .map(|(n, v)| Ok((utf8("xattr name", n, path)?, v.as_slice())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            xattrs,
            mtime: attrs.mtime,
        })
    }

    /// Sets the xattrs on the new `p`; on failure removes `p` again with `undo`, so a file is
    /// never left without the label it was meant to have.
    fn label(
        &self,
        fs: &mut Ext2Fs,
        p: &[u8],
        undo: fn(&mut Ext2Fs, &[u8]) -> ffi::Result<()>,
    ) -> ffi::Result<()> {
        for (name, value) in &self.xattrs {
            if let Err(e) = fs.set_xattr(p, name, value) {
                if let Err(u) = undo(fs, p) {
                    tracing::debug!(
                        error = %u,
                        path = %String::from_utf8_lossy(p),
                        "removing a half-created entry failed"
                    );
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn stamp(&self, fs: &mut Ext2Fs, p: &[u8]) -> ffi::Result<()> {
        match self.mtime {
            Some(m) => fs.utimens(p, Timestamp::now(), secs(m)),
            None => Ok(()),
        }
    }
}

impl Ext4Rw {
    /// Opens the ext2/3/4 filesystem on `dev` for reading and writing.
    ///
    /// # Errors
    /// [`Error::Unclean`] for a filesystem whose journal needs recovery, that was not cleanly
    /// unmounted, has recorded errors or pending orphans, unless `opts` forces it;
    /// [`Error::Unsupported`] for a device that is not ext2/3/4 or features libext2fs cannot
    /// write; [`Error::Corrupt`] for a superblock whose geometry is inconsistent or group
    /// descriptors that point outside the filesystem or at each other; I/O.
    pub fn open(dev: Arc<dyn BlockWrite>, opts: WriteOptions) -> Result<Self> {
        let probe = crate::probe(&*dev)?;
        if !matches!(probe.kind, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) {
            return Err(Error::unsupported(
                WHAT,
                format!("the device holds {}, not ext2/3/4", probe.kind.blkid_name()),
            ));
        }
        let fs = Ext2Fs::open(dev, &OpenOptions::new().force(opts.is_forced())).map_err(map_err)?;
        Ok(Self {
            fs: Mutex::new(fs),
            info: FsInfo {
                kind: probe.kind,
                label: probe.label,
                uuid: probe.uuid,
                case: CaseSensitivity::Sensitive,
            },
        })
    }

    /// Runs `f` on the handle, alone.
    fn with<R>(&self, f: impl FnOnce(&mut Ext2Fs) -> ffi::Result<R>) -> Result<R> {
        // A panic under the lock can only come from our own code between libext2fs calls,
        // each of which leaves its structures consistent; carry on with the handle.
        let mut fs = self.fs.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut fs).map_err(map_err)
    }
}

impl FsRead for Ext4Rw {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        let p = path.to_bytes();
        let md = self.with(|fs| fs.metadata(&p))?;
        Ok(Metadata {
            file_type: file_type(md.kind()),
            size: md.size,
            mode: md.mode & 0o7777,
            uid: md.uid,
            gid: md.gid,
            mtime: md.mtime.secs,
            ino: u64::from(md.ino),
            nlink: u64::from(md.links),
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        let p = path.to_bytes();
        let entries = self.with(|fs| fs.read_dir(&p))?;
        Ok(entries
            .into_iter()
            .map(|e| DirEntry {
                name: e.name,
                file_type: file_type(e.kind),
            })
            .collect())
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        let p = path.to_bytes();
        self.with(|fs| {
            if fs.metadata(&p)?.kind() != FileKind::Symlink {
                return Ok(None);
            }
            fs.read_link(&p).map(Some)
        })?
        .ok_or_else(|| Error::NotASymlink {
            path: path.to_string(),
        })
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let p = path.to_bytes();
        self.with(|fs| fs.read_at(&p, offset, buf))
    }
}

impl FsWrite for Ext4Rw {
    fn write_file(&self, path: &GuestPath, data: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let p = path.to_bytes();
        let extra = Extra::new(attrs, path)?;
        let nf = new_file(attrs);
        self.with(|fs| {
            match fs.metadata(&p) {
                // Contents only: the inode, its owner, mode and xattrs stay.
                Ok(_) => return fs.write_file(&p, data, &nf),
                Err(ffi::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if !extra.xattrs.is_empty() {
                // Labelled before any data goes in, so the file never holds data unlabelled.
                fs.write_file(&p, b"", &nf)?;
                extra.label(fs, &p, |fs, p| fs.unlink(p))?;
            }
            fs.write_file(&p, data, &nf)?;
            extra.stamp(fs, &p)
        })
    }

    fn write_at(&self, path: &GuestPath, offset: u64, data: &[u8]) -> Result<()> {
        let p = path.to_bytes();
        self.with(|fs| fs.write_at(&p, offset, data))
    }

    fn truncate(&self, path: &GuestPath, len: u64) -> Result<()> {
        let p = path.to_bytes();
        self.with(|fs| fs.truncate(&p, len))
    }

    fn mkdir(&self, path: &GuestPath, attrs: &NewFileAttrs) -> Result<()> {
        if path.is_root() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        let p = path.to_bytes();
        let extra = Extra::new(attrs, path)?;
        self.with(|fs| {
            fs.mkdir(&p, &new_file(attrs))?;
            extra.label(fs, &p, |fs, p| fs.rmdir(p))?;
            extra.stamp(fs, &p)
        })
    }

    fn symlink(&self, path: &GuestPath, target: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        if path.is_root() {
            return Err(Error::AlreadyExists {
                path: path.to_string(),
            });
        }
        let p = path.to_bytes();
        let extra = Extra::new(attrs, path)?;
        self.with(|fs| {
            fs.symlink(&p, target, &new_file(attrs))?;
            extra.label(fs, &p, |fs, p| fs.unlink(p))?;
            extra.stamp(fs, &p)
        })
    }

    fn unlink(&self, path: &GuestPath) -> Result<()> {
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: path.to_string(),
            });
        }
        let p = path.to_bytes();
        self.with(|fs| fs.unlink(&p))
    }

    fn rmdir(&self, path: &GuestPath) -> Result<()> {
        if path.is_root() {
            return Err(Error::InvalidPath {
                path: path.to_string(),
                why: "the root directory cannot be removed",
            });
        }
        let p = path.to_bytes();
        self.with(|fs| fs.rmdir(&p))
    }

    fn rename(&self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(Error::InvalidPath {
                path: if from.is_root() { from } else { to }.to_string(),
                why: "the root directory cannot be renamed or replaced",
            });
        }
        let f = from.to_bytes();
        let t = to.to_bytes();
        let inside = to.components().len() > from.components().len()
            && to.components().starts_with(from.components());
        let moved = self.with(|fs| {
            // Checked under the same lock as the move (ffi would refuse it too, as a usage
            // error; this gives the trait's error).
            if inside && fs.metadata(&f)?.kind() == FileKind::Directory {
                return Ok(false);
            }
            fs.rename(&f, &t).map(|()| true)
        })?;
        if moved {
            Ok(())
        } else {
            Err(Error::InvalidPath {
                path: to.to_string(),
                why: "a directory cannot be moved into itself",
            })
        }
    }

    fn set_mode(&self, path: &GuestPath, mode: u32) -> Result<()> {
        let p = path.to_bytes();
        self.with(|fs| fs.chmod(&p, mode))
    }

    fn set_owner(&self, path: &GuestPath, uid: u32, gid: u32) -> Result<()> {
        let p = path.to_bytes();
        self.with(|fs| fs.chown(&p, uid, gid))
    }

    fn set_times(&self, path: &GuestPath, times: &Times) -> Result<()> {
        let p = path.to_bytes();
        self.with(|fs| {
            let md = fs.metadata(&p)?;
            let atime = times.atime.map_or(md.atime, secs);
            let mtime = times.mtime.map_or(md.mtime, secs);
            fs.utimens(&p, atime, mtime)
        })
    }

    fn get_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let p = path.to_bytes();
        let n = utf8("xattr name", name, path)?;
        self.with(|fs| fs.get_xattr(&p, n))
    }

    fn set_xattr(&self, path: &GuestPath, name: &[u8], value: &[u8]) -> Result<()> {
        let p = path.to_bytes();
        let n = utf8("xattr name", name, path)?;
        self.with(|fs| fs.set_xattr(&p, n, value))
    }

    fn remove_xattr(&self, path: &GuestPath, name: &[u8]) -> Result<()> {
        let p = path.to_bytes();
        let n = utf8("xattr name", name, path)?;
        let removed = self.with(|fs| {
            if fs.get_xattr(&p, n)?.is_none() {
                return Ok(false);
            }
            fs.remove_xattr(&p, n).map(|()| true)
        })?;
        if removed {
            Ok(())
        } else {
            Err(Error::NotFound {
                path: format!("{path} (xattr {n})"),
            })
        }
    }

    fn list_xattrs(&self, path: &GuestPath) -> Result<Vec<Vec<u8>>> {
        let p = path.to_bytes();
        let names = self.with(|fs| fs.list_xattrs(&p))?;
        Ok(names.into_iter().map(String::into_bytes).collect())
    }

    fn flush(&self) -> Result<()> {
        self.with(Ext2Fs::flush)
    }
}
