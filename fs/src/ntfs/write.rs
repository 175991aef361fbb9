//! Writing NTFS through libntfs-3g ([`NtfsRw`]: [`FsRead`] + [`FsWrite`] over
//! [`ffi::ntfs3g::Ntfs3g`]).
//!
//! # Opening
//! [`NtfsRw::open_rw`] first reads the volume with our own parser ([`NtfsFs`], which writes
//! nothing) and refuses, before libntfs-3g ever sees the device:
//! - a hibernated Windows or one shut down with Fast Startup: `hiberfil.sys` starting with
//!   `hibr`, `wake` or `rstr` (any case). Never overridable: Windows would resume from a memory
//!   image that does not know our changes and overwrite them (or corrupt the volume);
//! - the volume dirty flag (`VOLUME_IS_DIRTY` in `$Volume`), unless [`WriteOptions::force`].
//!
//! libntfs-3g then checks the `$LogFile` while mounting, with every device write held back until
//! its checks pass (see `ffi::ntfs3g`): a version 2.0 restart page (Fast Startup's cached
//! metadata) and an unclean log are refused, forced or not, and the log is never reset.
//! Every refusal is [`Error::Unclean`] naming what to do in Windows; none writes a byte.
//!
//! # Mapping
//! - Reads go through libntfs-3g too, so they see every write at once; listings, sizes, times
//!   and symlinks (reparse-point symlinks and junctions, Interix symlinks) follow the read-only
//!   [`NtfsFs`] conventions: case-insensitive lookup, `mode` 0o755/0o777/0o644, `ino` the MFT
//!   record number, `uid`/`gid` 0.
//! - New files and directories inherit their parent's security descriptor (what Windows does;
//!   the owner is BUILTIN\Administrators). NTFS has no POSIX mode or owner: `set_mode`,
//!   `set_owner` and the mode/owner of [`NewFileAttrs`] are accepted and ignored. Extended
//!   attributes are [`Error::Unsupported`], and so is creating symlinks (libntfs-3g would write
//!   Interix symlinks, which Windows does not follow).
//! - Names Windows cannot open (containing `\ : * ? " < > |` or control characters) are refused
//!   as [`Error::InvalidPath`] when creating or renaming.
//! - The volume is unmounted when the [`NtfsRw`] is dropped; [`FsWrite::flush`] flushes the
//!   device (libntfs-3g writes each inode back when an operation closes it).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use disk::{BlockRead, BlockWrite};
use ffi::ntfs3g::{MountOptions, NewKind, Ntfs3g, Stat};

use super::NtfsFs;
use super::reparse::{self, Reparse};
use crate::resolve::Follow;
use crate::write::{FsWrite, NewFileAttrs, Times, WriteOptions};
use crate::{
    DirEntry, Error, FileType, FsInfo, FsRead, GuestPath, MAX_DIR_ENTRIES, Metadata, Result,
};

/// Hibernation file signatures (first 4 bytes of `hiberfil.sys`, any case): `hibr` hibernated
/// (also Fast Startup), `wake` resuming, `rstr` restoring. A zeroed header is inactive.
const HIBERNATION_SIGNATURES: [&[u8; 4]; 3] = [b"hibr", b"wake", b"rstr"];
/// Characters Windows forbids in file names ([MS-FSCC] 2.1.5.2, Win32 namespace).
const WINDOWS_FORBIDDEN: &[char] = &['\\', ':', '*', '?', '"', '<', '>', '|'];

/// NTFS opened for writing through libntfs-3g.
pub struct NtfsRw {
    fs: Mutex<Ntfs3g>,
    info: FsInfo,
    drive_letter: u8,
}

fn unclean(detail: impl Into<String>) -> Error {
    Error::Unclean {
        what: "ntfs volume",
        detail: detail.into(),
    }
}

fn map_err(e: ffi::Error) -> Error {
    match e {
        ffi::Error::Device { source, .. } => Error::Disk(source),
        ffi::Error::Refused(r) => unclean(r.to_string()),
        ffi::Error::NotFound { path } => Error::NotFound { path },
        ffi::Error::Exists { path } => Error::AlreadyExists { path },
        ffi::Error::NotADirectory { path } => Error::NotADirectory { path },
        ffi::Error::IsADirectory { path } => Error::IsADirectory { path },
        ffi::Error::NotEmpty { path } => Error::NotEmpty { path },
        ffi::Error::TooLarge { what, len, limit } => Error::LimitExceeded {
            what: format!("{what} ({len})"),
            limit,
        },
        ffi::Error::Ntfs3g { op, errno } if errno == libc_enospc() => Error::LimitExceeded {
            what: format!("{op}: space on the ntfs volume"),
            limit: 0,
        },
        other @ ffi::Error::Ntfs3g { .. } => Error::Corrupt {
            structure: "ntfs volume (libntfs-3g)".into(),
            offset: 0,
            detail: other.to_string(),
        },
        other => Error::unsupported("ntfs writing", other.to_string()),
    }
}

/// `ENOSPC` on Linux (asm-generic/errno-base.h).
const fn libc_enospc() -> i32 {
    28
}

/// The path as libntfs-3g wants it: `/`-separated UTF-8.
fn path_str(path: &GuestPath) -> Result<String> {
    String::from_utf8(path.to_bytes()).map_err(|_| Error::InvalidPath {
        path: path.to_string(),
        why: "ntfs names are unicode; this one is not valid utf-8",
    })
}

/// Refuses a last component Windows could not open.
fn check_new_name(path: &GuestPath) -> Result<()> {
    let name = path.file_name().unwrap_or_default();
    let bad = std::str::from_utf8(name).map_or(true, |n| {
        n.chars()
            .any(|c| WINDOWS_FORBIDDEN.contains(&c) || c.is_control())
    });
    if bad {
        return Err(Error::InvalidPath {
            path: path.to_string(),
            why: "windows forbids \\ : * ? \" < > | and control characters in file names",
        });
    }
    Ok(())
}

fn has_active_hiberfil(ro: &NtfsFs) -> Result<bool> {
    let p = match crate::resolve(ro, b"/hiberfil.sys", Follow::Final) {
        Ok(p) => p,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut hdr = [0u8; 4];
    match ro.read_at(&p, 0, &mut hdr) {
        Ok(4) => Ok(HIBERNATION_SIGNATURES
            .iter()
            .any(|s| hdr.eq_ignore_ascii_case(&s[..]))),
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

impl NtfsRw {
    /// Opens the NTFS volume on `dev` (exactly the volume, e.g. a partition) for writing.
    ///
    /// # Errors
    /// [`Error::Unclean`] for a hibernated, Fast Startup or unclean-`$LogFile` volume (always),
    /// or one with the dirty flag (unless forced), with nothing written; [`Error::Corrupt`] for
    /// what our parser or libntfs-3g reject; device errors.
    pub fn open_rw(dev: Arc<dyn BlockWrite>, opts: WriteOptions) -> Result<Self> {
        let read: Arc<dyn BlockRead> = dev.clone();
        let ro = NtfsFs::open(read)?;
        if has_active_hiberfil(&ro)? {
            return Err(unclean(ffi::Refusal::NtfsHibernated.to_string()));
        }
        let state = ro.volume_flags();
        if state.dirty && !opts.is_forced() {
            return Err(unclean(format!(
                "the volume dirty flag is set (volume flags {:#06x}: Windows did not shut down cleanly or scheduled chkdsk); run chkdsk /f in Windows, or force to write anyway",
                state.flags
            )));
        }
        let info = ro.info();
        let drive_letter = b'C';
        drop(ro);
        let fs = Ntfs3g::mount(dev, &MountOptions::new()).map_err(map_err)?;
        Ok(Self {
            fs: Mutex::new(fs),
            info,
            drive_letter,
        })
    }

    /// Sets the drive letter this volume has in the guest (default `C`), as
    /// [`NtfsFs::with_drive_letter`] does for symlink targets.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if `letter` is not an ASCII letter.
    pub fn with_drive_letter(mut self, letter: char) -> Result<Self> {
        match u8::try_from(letter) {
            Ok(b) if b.is_ascii_alphabetic() => {
                self.drive_letter = b.to_ascii_uppercase();
                Ok(self)
            }
            _ => Err(Error::InvalidPath {
                path: letter.to_string(),
                why: "a drive letter must be one of A-Z",
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ntfs3g> {
        self.fs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the file at `p` is; for symlinks, the target (or why it cannot be used).
    fn kind(&self, fs: &Ntfs3g, p: &str, st: &Stat) -> Result<Kind> {
        if st.is_reparse_point() {
            let data = fs
                .read_reparse(p, reparse::MAX_REPARSE_DATA)
                .map_err(map_err)?
                .unwrap_or_default();
            let parsed = reparse::parse(&data)
                .map_err(|d| Error::corrupt(format!("ntfs $REPARSE_POINT of {p}"), 0, d))?;
            return Ok(match parsed {
                link @ Reparse::Link { .. } => {
                    Kind::Symlink(reparse::link_target(&link, self.drive_letter))
                }
                Reparse::Other { .. } if st.is_dir => Kind::Directory,
                Reparse::Other { .. } => Kind::Other,
            });
        }
        if st.is_dir {
            return Ok(Kind::Directory);
        }
        let magic_len = reparse::INTERIX_SYMLINK_MAGIC.len() as u64;
        if st.is_system() && (magic_len..=reparse::MAX_INTERIX_LEN).contains(&st.size) {
            let mut data = vec![0u8; usize::try_from(st.size).unwrap_or(0)];
            let n = fs.read_at(p, 0, &mut data).map_err(map_err)?;
            if let Some(t) = data.get(..n).and_then(reparse::interix_target) {
                return Ok(Kind::Symlink(Ok(t)));
            }
        }
        Ok(Kind::Regular)
    }

    fn lstat_locked(&self, fs: &Ntfs3g, p: &str) -> Result<(Metadata, Kind, Stat)> {
        let st = fs.stat(p).map_err(map_err)?;
        let kind = self.kind(fs, p, &st)?;
        let (file_type, mode, size) = match &kind {
            Kind::Directory => (FileType::Directory, 0o755, 0),
            Kind::Regular => (FileType::Regular, 0o644, st.size),
            Kind::Other => (FileType::Other, 0o644, st.size),
            Kind::Symlink(t) => (
                FileType::Symlink,
                0o777,
                t.as_ref().map_or(0, |t| t.len() as u64),
            ),
        };
        let md = Metadata {
            file_type,
            size,
            mode,
            uid: 0,
            gid: 0,
            mtime: st.mtime,
            ino: st.mft_no,
            nlink: u64::from(st.nlink),
        };
        Ok((md, kind, st))
    }

    /// Refuses files whose reparse tag keeps the data elsewhere while their unnamed stream has
    /// no cluster (deduplicated, WOF-compressed, cloud placeholders): the stream would read as
    /// zeroes, and writing it would break the file (the reader refuses them the same way).
    fn refuse_data_elsewhere(fs: &Ntfs3g, p: &str) -> Result<()> {
        let st = fs.stat(p).map_err(map_err)?;
        if !st.is_reparse_point() || st.data_on_volume {
            return Ok(());
        }
        let data = fs
            .read_reparse(p, reparse::MAX_REPARSE_DATA)
            .map_err(map_err)?
            .unwrap_or_default();
        match reparse::parse(&data) {
            Ok(Reparse::Other { tag }) if reparse::data_elsewhere(tag) => Err(Error::unsupported(
                "ntfs reparse point",
                format!("{p}: data is held outside the file by reparse tag {tag:#010x}"),
            )),
            _ => Ok(()),
        }
    }

    fn no_xattrs(attrs: &NewFileAttrs, path: &GuestPath) -> Result<()> {
        if attrs.xattrs.is_empty() {
            Ok(())
        } else {
            Err(Error::unsupported(
                "ntfs extended attributes",
                format!("{path}: ntfs has no linux extended attributes"),
            ))
        }
    }
}

/// What a file is, as far as `lstat` and `read_dir` care.
enum Kind {
    Directory,
    Regular,
    Symlink(std::result::Result<Vec<u8>, String>),
    Other,
}

impl FsRead for NtfsRw {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        let p = path_str(path)?;
        let fs = self.lock();
        self.lstat_locked(&fs, &p).map(|(md, _, _)| md)
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        let p = path_str(path)?;
        let fs = self.lock();
        let entries = fs.read_dir(&p, MAX_DIR_ENTRIES).map_err(map_err)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let file_type = match e.is_dir {
                Some(true) => FileType::Directory,
                Some(false) => FileType::Regular,
                None => {
                    let child = path.join_name(e.name.as_bytes())?;
                    self.lstat_locked(&fs, &path_str(&child)?)?.0.file_type
                }
            };
            out.push(DirEntry {
                name: e.name.into_bytes(),
                file_type,
            });
        }
        Ok(out)
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        let p = path_str(path)?;
        let fs = self.lock();
        match self.lstat_locked(&fs, &p)?.1 {
            Kind::Symlink(Ok(t)) => Ok(t),
            Kind::Symlink(Err(why)) => Err(Error::unsupported(
                "ntfs symlink target",
                format!("{p}: {why}"),
            )),
            _ => Err(Error::NotASymlink { path: p }),
        }
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let p = path_str(path)?;
        let fs = self.lock();
        Self::refuse_data_elsewhere(&fs, &p)?;
        fs.read_at(&p, offset, buf).map_err(map_err)
    }
}

impl FsWrite for NtfsRw {
    fn write_file(&self, path: &GuestPath, data: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        let p = path_str(path)?;
        let fs = self.lock();
        let created = match self.lstat_locked(&fs, &p) {
            Ok((md, _, _)) => match md.file_type {
                FileType::Directory => return Err(Error::IsADirectory { path: p }),
                FileType::Regular => {
                    Self::refuse_data_elsewhere(&fs, &p)?;
                    false
                }
                _ => {
                    return Err(Error::unsupported(
                        "ntfs writing",
                        format!("{p} is a symlink or special file; write its target"),
                    ));
                }
            },
            Err(e) if e.is_not_found() => {
                Self::no_xattrs(attrs, path)?;
                check_new_name(path)?;
                fs.create(&p, NewKind::File).map_err(map_err)?;
                true
            }
            Err(e) => return Err(e),
        };
        fs.write_at(&p, 0, data).map_err(map_err)?;
        fs.truncate(&p, data.len() as u64).map_err(map_err)?;
        if created && let Some(m) = attrs.mtime {
            fs.set_times(&p, None, Some(m)).map_err(map_err)?;
        }
        Ok(())
    }

    fn write_at(&self, path: &GuestPath, offset: u64, data: &[u8]) -> Result<()> {
        let p = path_str(path)?;
        let fs = self.lock();
        Self::refuse_data_elsewhere(&fs, &p)?;
        fs.write_at(&p, offset, data).map_err(map_err)
    }

    fn truncate(&self, path: &GuestPath, len: u64) -> Result<()> {
        let p = path_str(path)?;
        let fs = self.lock();
        Self::refuse_data_elsewhere(&fs, &p)?;
        fs.truncate(&p, len).map_err(map_err)
    }

    fn mkdir(&self, path: &GuestPath, attrs: &NewFileAttrs) -> Result<()> {
        let p = path_str(path)?;
        if path.is_root() {
            return Err(Error::AlreadyExists { path: p });
        }
        Self::no_xattrs(attrs, path)?;
        check_new_name(path)?;
        let fs = self.lock();
        fs.create(&p, NewKind::Directory).map_err(map_err)?;
        if let Some(m) = attrs.mtime {
            fs.set_times(&p, None, Some(m)).map_err(map_err)?;
        }
        Ok(())
    }

    fn symlink(&self, path: &GuestPath, _target: &[u8], _attrs: &NewFileAttrs) -> Result<()> {
        Err(Error::unsupported(
            "ntfs symlink creation",
            format!("{path}: libntfs-3g writes interix symlinks, which windows does not follow"),
        ))
    }

    fn unlink(&self, path: &GuestPath) -> Result<()> {
        let p = path_str(path)?;
        let fs = self.lock();
        let (md, _, st) = self.lstat_locked(&fs, &p)?;
        if md.file_type == FileType::Symlink && st.is_dir {
            // A junction or directory symlink: a directory record with an empty index.
            return fs.rmdir(&p).map_err(map_err);
        }
        fs.unlink(&p).map_err(map_err)
    }

    fn rmdir(&self, path: &GuestPath) -> Result<()> {
        let p = path_str(path)?;
        if path.is_root() {
            return Err(Error::InvalidPath {
                path: p,
                why: "the root directory cannot be removed",
            });
        }
        let fs = self.lock();
        let (md, _, _) = self.lstat_locked(&fs, &p)?;
        if md.file_type != FileType::Directory {
            return Err(Error::NotADirectory { path: p });
        }
        fs.rmdir(&p).map_err(map_err)
    }

    fn rename(&self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        let (f, t) = (path_str(from)?, path_str(to)?);
        if from.is_root() || to.is_root() {
            return Err(Error::InvalidPath {
                path: if from.is_root() { f } else { t },
                why: "the root directory cannot be moved or replaced",
            });
        }
        let (fc, tc) = (from.components(), to.components());
        let inside =
            tc.len() > fc.len() && fc.iter().zip(tc).all(|(a, b)| a.eq_ignore_ascii_case(b));
        if inside {
            return Err(Error::InvalidPath {
                path: t,
                why: "a directory cannot be moved into itself",
            });
        }
        check_new_name(to)?;
        self.lock().rename(&f, &t).map_err(|e| match e {
            ffi::Error::Usage(why) if why.contains("into itself") => Error::InvalidPath {
                path: to.to_string(),
                why: "a directory cannot be moved into itself",
            },
            e => map_err(e),
        })
    }

    fn set_mode(&self, path: &GuestPath, _mode: u32) -> Result<()> {
        // NTFS keeps permissions in security descriptors, not POSIX modes.
        self.lstat(path).map(drop)
    }

    fn set_owner(&self, path: &GuestPath, _uid: u32, _gid: u32) -> Result<()> {
        // NTFS owners are SIDs; there is no uid to map.
        self.lstat(path).map(drop)
    }

    fn set_times(&self, path: &GuestPath, times: &Times) -> Result<()> {
        let p = path_str(path)?;
        self.lock()
            .set_times(&p, times.atime, times.mtime)
            .map_err(map_err)
    }

    fn get_xattr(&self, path: &GuestPath, _name: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(no_xattr(path))
    }

    fn set_xattr(&self, path: &GuestPath, _name: &[u8], _value: &[u8]) -> Result<()> {
        Err(no_xattr(path))
    }

    fn remove_xattr(&self, path: &GuestPath, _name: &[u8]) -> Result<()> {
        Err(no_xattr(path))
    }

    fn list_xattrs(&self, path: &GuestPath) -> Result<Vec<Vec<u8>>> {
        Err(no_xattr(path))
    }

    fn flush(&self) -> Result<()> {
        self.lock().sync().map_err(map_err)
    }
}

fn no_xattr(path: &GuestPath) -> Error {
    Error::unsupported(
        "ntfs extended attributes",
        format!("{path}: ntfs has no linux extended attributes"),
    )
}

#[cfg(test)]
mod tests;
