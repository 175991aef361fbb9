//! NTFS through libntfs-3g (2022.10.3), with its device I/O routed to a
//! [`disk::block::BlockWrite`] (module `io`).
//!
//! # Contract
//! - Paths are absolute, `/`-separated UTF-8 (`/Windows/System32/drivers`); each name is at most
//!   255 UTF-16 code units. Lookups ignore case through the volume's `$UpCase` table, as Windows
//!   does; a name that differs only in case from an existing one counts as taken. Listings keep
//!   names as stored and leave out DOS 8.3 aliases of names listed separately.
//! - New files and directories get the security descriptor Windows would give them: the one
//!   *inherited* from the parent directory's inheritable ACEs (`ntfs_inherited_id`), owned by
//!   BUILTIN\Administrators, as for a file created by an administrator. Only on volumes without
//!   `$Secure` (NTFS 1.x) does libntfs-3g fall back to an "Everyone: full control" descriptor.
//! - Metafiles (MFT records below 16, `$Extend` contents) are never changed.
//! - libntfs-3g is not thread-safe; every call into it runs under one process-wide lock, so an
//!   [`Ntfs3g`] is `Send + Sync`.
//!
//! # Refusals (no byte is written)
//! [`Ntfs3g::mount`] lets libntfs-3g check the volume before anything is written: a hibernated
//! Windows or one shut down with Fast Startup (an active `hiberfil.sys`, or a version 2.0
//! `$LogFile` restart page holding cached metadata) is [`Refusal::NtfsHibernated`]; a `$LogFile`
//! that is not clean (Windows crashed or lost power) is [`Refusal::NtfsLogFileUnclean`]. The
//! mount never asks libntfs-3g to reset the log (`NTFS_MNT_RECOVER`), which would throw away the
//! metadata changes it holds. The device refuses every write until those checks have passed:
//! a mount that would write while checking fails, so a refusal provably leaves the volume
//! unchanged. The volume's dirty flag is the caller's to check (see `guestfs::ntfs`).

mod io;
mod sys;
#[cfg(test)]
mod tests;

use std::ffi::{CString, c_int, c_uint, c_void};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use disk::block::BlockWrite;

use self::io::Shared;
use self::sys::{Attr, Inode, Volume};
use crate::error::{Error, Refusal, Result};

/// Serialises every call into libntfs-3g (it keeps global caches and logging state).
static LIB: Mutex<()> = Mutex::new(());

fn lib() -> MutexGuard<'static, ()> {
    LIB.lock().unwrap_or_else(PoisonError::into_inner)
}

/// NTFS: longest name, in UTF-16 code units (`FILE_NAME_ATTR.file_name_length` is a `u8`).
pub const MAX_NAME_UNITS: usize = 255;
/// First MFT record of user files (`layout.h` `FILE_first_user`); below are metafiles.
const FILE_FIRST_USER: u64 = 16;
/// `layout.h`: `FILE_Extend`, the directory of newer metafiles.
const FILE_EXTEND: u64 = 11;
/// Largest piece handed to one `ntfs_attr_pread`/`pwrite` call (their counts are `s64`, but
/// bounded pieces keep each call's temporary allocations small).
const IO_CHUNK: usize = 8 << 20;
/// NTFS timestamps count 100 ns intervals from 1601-01-01; this many lie before 1970-01-01.
const NTFS_EPOCH_OFFSET: i64 = 116_444_736_000_000_000;
/// 100 ns intervals per second.
const NTFS_TICKS_PER_SEC: i64 = 10_000_000;
/// `inode.h`: `NTFS_UPDATE_MCTIME`.
const NTFS_UPDATE_MCTIME: c_int = (1 << 1) | (1 << 2);

/// How a volume is mounted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountOptions {
    read_only: bool,
}

impl MountOptions {
    /// Read-write, refusing hibernated and unclean volumes (the default).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Mounts read-only: nothing is ever written, and the hibernation and `$LogFile` checks are
    /// skipped (as libntfs-3g does for read-only mounts).
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }
}

/// What [`Ntfs3g::create`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKind {
    /// An empty regular file.
    File,
    /// An empty directory.
    Directory,
}

/// Metadata of one file, as libntfs-3g sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The MFT record number.
    pub mft_no: u64,
    /// The MFT record has the directory flag.
    pub is_dir: bool,
    /// `FILE_ATTR_*` flags from `$STANDARD_INFORMATION` (reparse point, system, ...).
    pub file_attributes: u32,
    /// Size of the unnamed `$DATA` stream (0 for directories and files without one).
    pub size: u64,
    /// Last data change, seconds since the Unix epoch.
    pub mtime: i64,
    /// Last access, seconds since the Unix epoch.
    pub atime: i64,
    /// Hard links (the record's `link_count`, which counts a DOS alias as a link).
    pub nlink: u16,
    /// The unnamed `$DATA` stream has data on the volume: resident, empty, or with at least
    /// one allocated cluster (false for the cluster-less sparse stream of a deduplicated,
    /// WOF-compressed or cloud placeholder file).
    pub data_on_volume: bool,
}

impl Stat {
    /// The file is a reparse point (symlink, junction, deduplicated, ...).
    #[must_use]
    pub fn is_reparse_point(&self) -> bool {
        self.file_attributes & sys::FILE_ATTR_REPARSE_POINT != 0
    }

    /// The file has the SYSTEM attribute (Interix symlinks and devices carry it).
    #[must_use]
    pub fn is_system(&self) -> bool {
        self.file_attributes & sys::FILE_ATTR_SYSTEM != 0
    }

    /// The file is EFS-encrypted (its data cannot be read or written here).
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.file_attributes & sys::FILE_ATTR_ENCRYPTED != 0
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (lossy UTF-8 for unpaired surrogates).
    pub name: String,
    /// The MFT record number it points to.
    pub mft_no: u64,
    /// What the index entry says: `Some(true)` directory, `Some(false)` regular file, `None`
    /// when the entry needs a closer look (reparse points, system files).
    pub is_dir: Option<bool>,
}

/// A mounted NTFS volume.
pub struct Ntfs3g {
    vol: NonNull<Volume>,
    shared: Arc<Shared>,
    read_only: bool,
}

// SAFETY: the volume is only touched under the process-wide `LIB` lock, and libntfs-3g has no
// thread affinity (no thread-local state besides errno, read right after each call).
unsafe impl Send for Ntfs3g {}
// SAFETY: as for `Send`: `&self` methods take the `LIB` lock before touching the volume.
unsafe impl Sync for Ntfs3g {}

fn errno() -> c_int {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn to_units(name: &str, path: &str) -> Result<Vec<u16>> {
    if name.is_empty() || name.contains('\0') {
        return Err(Error::Usage(format!("{path}: empty name or NUL in a name")));
    }
    let units: Vec<u16> = name.encode_utf16().collect();
    if units.len() > MAX_NAME_UNITS {
        return Err(Error::TooLarge {
            what: "ntfs file name (utf-16 code units)",
            len: units.len() as u64,
            limit: MAX_NAME_UNITS as u64,
        });
    }
    Ok(units)
}

fn split(path: &str) -> Result<Vec<&str>> {
    if !path.starts_with('/') {
        return Err(Error::Usage(format!("{path}: not an absolute path")));
    }
    Ok(path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect())
}

fn name_len(units: &[u16]) -> u8 {
    // Checked in `to_units`: at most 255 units.
    u8::try_from(units.len()).unwrap_or(u8::MAX)
}

fn unix_time(ntfs: u64) -> i64 {
    let t = i64::try_from(ntfs).unwrap_or(i64::MAX);
    t.saturating_sub(NTFS_EPOCH_OFFSET)
        .div_euclid(NTFS_TICKS_PER_SEC)
}

fn ntfs_time(unix: i64) -> u64 {
    let t = unix
        .saturating_mul(NTFS_TICKS_PER_SEC)
        .saturating_add(NTFS_EPOCH_OFFSET);
    u64::try_from(t).unwrap_or(0)
}

/// An open inode, closed on drop.
struct InodeRef(NonNull<Inode>);

impl InodeRef {
    fn ptr(&self) -> *mut Inode {
        self.0.as_ptr()
    }

    fn mft_no(&self) -> u64 {
        // SAFETY: a live inode from `ntfs_inode_open`/`ntfs_create`.
        unsafe { (*self.ptr()).mft_no }
    }

    fn mrec_u16(&self, offset: usize) -> u16 {
        // SAFETY: a live inode; `mrec` points to its MFT record (at least 1 KiB, the minimum
        // record size libntfs-3g accepts), and `offset` is a header field below 48.
        unsafe {
            let mrec = (*self.ptr()).mrec;
            if mrec.is_null() {
                return 0;
            }
            u16::from_le(mrec.add(offset).cast::<u16>().read_unaligned())
        }
    }

    fn is_dir(&self) -> bool {
        self.mrec_u16(sys::MFT_RECORD_FLAGS_OFFSET) & sys::MFT_RECORD_IS_DIRECTORY != 0
    }

    fn file_attributes(&self) -> u32 {
        // SAFETY: a live inode.
        unsafe { (*self.ptr()).flags }
    }

    /// Hands the inode to a libntfs-3g call that closes it.
    fn into_raw(self) -> *mut Inode {
        let p = self.ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for InodeRef {
    fn drop(&mut self) {
        // SAFETY: a live inode we own; closed exactly once here.
        if unsafe { sys::ntfs_inode_close(self.ptr()) } != 0 {
            tracing::warn!(errno = errno(), "ntfs_inode_close failed");
        }
    }
}

/// An open attribute, closed on drop.
struct AttrRef(NonNull<Attr>);

impl AttrRef {
    fn ptr(&self) -> *mut Attr {
        self.0.as_ptr()
    }

    fn data_size(&self) -> u64 {
        // SAFETY: a live attribute from `ntfs_attr_open`.
        u64::try_from(unsafe { (*self.ptr()).data_size }).unwrap_or(0)
    }
}

impl AttrRef {
    fn has_data_on_volume(&self) -> bool {
        // SAFETY: a live attribute from `ntfs_attr_open`.
        let a = unsafe { &*self.ptr() };
        if a.state & sys::NA_NON_RESIDENT == 0 || a.data_size == 0 {
            return true;
        }
        if a.data_flags & (sys::ATTR_COMPRESSION_MASK | sys::ATTR_IS_SPARSE) != 0 {
            // For sparse and compressed streams libntfs-3g keeps the allocated clusters' size
            // in `compressed_size`.
            a.compressed_size > 0
        } else {
            a.allocated_size > 0
        }
    }
}

impl Drop for AttrRef {
    fn drop(&mut self) {
        // SAFETY: a live attribute we own; closed exactly once here.
        unsafe { sys::ntfs_attr_close(self.ptr()) }
    }
}

/// What the `ntfs_readdir` callback collects.
struct DirCollect {
    entries: Vec<Entry>,
    cap: usize,
    overflow: bool,
}

unsafe extern "C" fn filldir(
    dirent: *mut c_void,
    name: *const u16,
    name_len: c_int,
    name_type: c_int,
    _pos: i64,
    mref: u64,
    dt_type: c_uint,
) -> c_int {
    let body = || {
        if dirent.is_null() || name.is_null() {
            return -1;
        }
        // SAFETY: `dirent` is the `DirCollect` passed to `ntfs_readdir` by `read_dir`, alive and
        // not otherwise borrowed during the call.
        let out = unsafe { &mut *dirent.cast::<DirCollect>() };
        if name_type == sys::FILE_NAME_DOS {
            return 0;
        }
        let Ok(len) = usize::try_from(name_len) else {
            return -1;
        };
        // SAFETY: libntfs-3g passes `name_len` UTF-16 units at `name` (the index key).
        let units: Vec<u16> = unsafe { std::slice::from_raw_parts(name, len) }
            .iter()
            .map(|&u| u16::from_le(u))
            .collect();
        if units == [u16::from(b'.')] || units == [u16::from(b'.'), u16::from(b'.')] {
            return 0;
        }
        if out.entries.len() >= out.cap {
            out.overflow = true;
            return -1;
        }
        out.entries.push(Entry {
            name: String::from_utf16_lossy(&units),
            mft_no: mref & sys::MFT_REF_MASK,
            is_dir: match dt_type {
                sys::NTFS_DT_DIR => Some(true),
                sys::NTFS_DT_REG => Some(false),
                _ => None,
            },
        });
        0
    };
    std::panic::catch_unwind(body).unwrap_or(-1)
}

impl Ntfs3g {
    /// Mounts the NTFS volume on `dev` (which must hold exactly the volume).
    ///
    /// # Errors
    /// [`Error::Refused`] with [`Refusal::NtfsHibernated`] or [`Refusal::NtfsLogFileUnclean`]
    /// (nothing written); [`Error::Device`]; [`Error::Ntfs3g`] when libntfs-3g rejects the
    /// volume (not NTFS, corrupt).
    pub fn mount(dev: Arc<dyn BlockWrite>, opts: &MountOptions) -> Result<Self> {
        let _lib = lib();
        let shared = Shared::new(dev);
        let flags = if opts.read_only {
            sys::NTFS_MNT_RDONLY
        } else {
            sys::NTFS_MNT_NONE
        };
        let vol = match Self::mount_once(&shared, flags) {
            Ok(v) => v,
            Err(e) if !opts.read_only && shared.take_gated_write() => {
                // The mount wanted to write after its checks passed (libntfs-3g makes a
                // non-resident root `$TXF_DATA` resident): the checks are done, so let it.
                tracing::debug!(error = %e, "ntfs-3g mount wrote during mount; retrying with writes on");
                shared.set_writes_open(true);
                Self::mount_once(&shared, flags)?
            }
            Err(e) => return Err(e),
        };
        if !opts.read_only {
            shared.set_writes_open(true);
        }
        let fs = Self {
            vol,
            shared,
            read_only: opts.read_only,
        };
        // Case-insensitive lookups, as Windows does (`ntfs_set_ignore_case` also builds the
        // lower-case table that listings would use; `read_dir` turns case sensitivity back on
        // while listing so names keep their case).
        // SAFETY: a mounted volume, under the lock.
        if unsafe { sys::ntfs_set_ignore_case(fs.vol.as_ptr()) } != 0 {
            return Err(fs.err("mount (ignore_case)", errno()));
        }
        Ok(fs)
    }

    fn mount_once(shared: &Arc<Shared>, flags: c_uint) -> Result<NonNull<Volume>> {
        let name = CString::new("rehost-blockdev").unwrap_or_default();
        // SAFETY: `name` is a valid C string (copied by the callee); the ops table is static;
        // `d_private` is our `Shared`, which the caller keeps alive as long as the device.
        let dev = unsafe {
            sys::ntfs_device_alloc(
                name.as_ptr(),
                0,
                io::ops(),
                Arc::as_ptr(shared).cast_mut().cast(),
            )
        };
        if dev.is_null() {
            return Err(Error::Ntfs3g {
                op: "ntfs_device_alloc".into(),
                errno: errno(),
            });
        }
        // SAFETY: `dev` was just allocated with our operations.
        let vol = unsafe { sys::ntfs_device_mount(dev, flags) };
        let code = errno();
        match NonNull::new(vol) {
            Some(v) => Ok(v),
            None => {
                // SAFETY: the failed mount released (and closed) the device but did not free it.
                unsafe { sys::ntfs_device_free(dev) };
                if let Some(e) = shared.take_error() {
                    return Err(Error::Device {
                        op: "mount".into(),
                        source: e,
                    });
                }
                Err(match code {
                    libc::EPERM => Error::Refused(Refusal::NtfsHibernated),
                    libc::EOPNOTSUPP => Error::Refused(Refusal::NtfsLogFileUnclean),
                    _ => Error::Ntfs3g {
                        op: "mount".into(),
                        errno: code,
                    },
                })
            }
        }
    }

    /// Writes every change to the device and unmounts.
    ///
    /// # Errors
    /// [`Error::Device`] or [`Error::Ntfs3g`] if the final writes fail.
    pub fn umount(self) -> Result<()> {
        let _lib = lib();
        let r = self.umount_locked();
        std::mem::forget(self);
        r
    }

    fn umount_locked(&self) -> Result<()> {
        // SAFETY: a mounted volume, unmounted exactly once (the caller forgets `self`, or this
        // is its `Drop`); `ntfs_umount` frees the device too.
        let rc = unsafe { sys::ntfs_umount(self.vol.as_ptr(), 0) };
        let code = errno();
        if let Some(e) = self.shared.take_error() {
            return Err(Error::Device {
                op: "umount".into(),
                source: e,
            });
        }
        if rc != 0 {
            return Err(Error::Ntfs3g {
                op: "umount".into(),
                errno: code,
            });
        }
        Ok(())
    }

    /// Flushes the device (libntfs-3g writes each inode when it is closed, which every method
    /// does before returning).
    ///
    /// # Errors
    /// [`Error::Device`].
    pub fn sync(&self) -> Result<()> {
        let _lib = lib();
        if self.read_only {
            return Ok(());
        }
        self.shared.dev.flush().map_err(|e| Error::Device {
            op: "sync".into(),
            source: e,
        })
    }

    fn err(&self, op: &str, code: c_int) -> Error {
        if let Some(e) = self.shared.take_error() {
            return Error::Device {
                op: op.to_owned(),
                source: e,
            };
        }
        match code {
            libc::ENOENT => Error::NotFound {
                path: op.to_owned(),
            },
            libc::EEXIST => Error::Exists {
                path: op.to_owned(),
            },
            libc::ENOTDIR => Error::NotADirectory {
                path: op.to_owned(),
            },
            libc::EISDIR => Error::IsADirectory {
                path: op.to_owned(),
            },
            libc::ENOTEMPTY => Error::NotEmpty {
                path: op.to_owned(),
            },
            _ => Error::Ntfs3g {
                op: op.to_owned(),
                errno: code,
            },
        }
    }

    fn check_writable(&self, path: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::Usage(format!("{path}: volume mounted read-only")));
        }
        Ok(())
    }

    fn open_mft(&self, mft_no: u64, path: &str) -> Result<InodeRef> {
        // SAFETY: a mounted volume, under the lock (callers hold it).
        let ni = unsafe { sys::ntfs_inode_open(self.vol.as_ptr(), mft_no) };
        NonNull::new(ni)
            .map(InodeRef)
            .ok_or_else(|| self.err(path, errno()))
    }

    /// Looks `name` up in `dir`: its MFT record number, or `None`.
    fn lookup(&self, dir: &InodeRef, name: &str, path: &str) -> Result<Option<u64>> {
        let units = to_units(name, path)?;
        let le: Vec<u16> = units.iter().map(|u| u.to_le()).collect();
        let len = c_int::from(name_len(&units));
        // SAFETY: a live directory inode and `len` units at `le`.
        let mref = unsafe { sys::ntfs_inode_lookup_by_name(dir.ptr(), le.as_ptr(), len) };
        if mref == u64::MAX {
            let code = errno();
            if code == libc::ENOENT {
                return Ok(None);
            }
            return Err(self.err(path, code));
        }
        Ok(Some(mref & sys::MFT_REF_MASK))
    }

    /// Opens the inode at `path` (components already split).
    fn open_path(&self, comps: &[&str], path: &str) -> Result<InodeRef> {
        let mut cur = self.open_mft(sys::FILE_ROOT, path)?;
        for (i, comp) in comps.iter().enumerate() {
            if !cur.is_dir() {
                return Err(Error::NotADirectory {
                    path: format!("/{}", comps[..i].join("/")),
                });
            }
            let Some(mft) = self.lookup(&cur, comp, path)? else {
                return Err(Error::NotFound {
                    path: path.to_owned(),
                });
            };
            // A damaged index naming the directory itself would open one inode twice.
            if mft == cur.mft_no() {
                return Err(Error::Ntfs3g {
                    op: format!("{path}: directory entry {comp:?} points at its own directory"),
                    errno: libc::EIO,
                });
            }
            let next = self.open_mft(mft, path)?;
            drop(cur);
            cur = next;
        }
        Ok(cur)
    }

    /// Opens the parent directory of `path` and returns it with the last name.
    fn open_parent<'p>(&self, path: &'p str) -> Result<(InodeRef, &'p str)> {
        let comps = split(path)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Err(Error::Usage(format!("{path}: the root has no parent")));
        };
        let dir = self.open_path(dirs, path)?;
        if !dir.is_dir() {
            return Err(Error::NotADirectory {
                path: format!("/{}", dirs.join("/")),
            });
        }
        Ok((dir, last))
    }

    fn stat_inode(&self, ni: &InodeRef, path: &str) -> Result<Stat> {
        let is_dir = ni.is_dir();
        let (size, data_on_volume) = if is_dir {
            (0, true)
        } else {
            match self.open_data(ni, path)? {
                Some(na) => (na.data_size(), na.has_data_on_volume()),
                None => (0, true),
            }
        };
        let mut times = [0u64; 3];
        // SAFETY: a live inode; the buffer holds 24 bytes, the size passed.
        let n = unsafe {
            sys::ntfs_inode_get_times(
                ni.ptr(),
                times.as_mut_ptr().cast(),
                std::mem::size_of_val(&times),
            )
        };
        if n < 24 {
            times = [0; 3];
        }
        Ok(Stat {
            mft_no: ni.mft_no(),
            is_dir,
            file_attributes: ni.file_attributes(),
            size,
            mtime: unix_time(times[1]),
            atime: unix_time(times[2]),
            nlink: ni.mrec_u16(sys::MFT_RECORD_LINK_COUNT_OFFSET),
            data_on_volume,
        })
    }

    /// Opens the unnamed `$DATA` attribute of `ni`, `None` if it has none.
    fn open_data(&self, ni: &InodeRef, path: &str) -> Result<Option<AttrRef>> {
        self.open_attr(ni, sys::AT_DATA, path)
    }

    fn open_attr(&self, ni: &InodeRef, ty: u32, path: &str) -> Result<Option<AttrRef>> {
        // SAFETY: a live inode; `AT_UNNAMED` is the library's own sentinel for "no name" (it
        // is compared by address and never freed or written).
        let na = unsafe { sys::ntfs_attr_open(ni.ptr(), ty, (&raw mut sys::AT_UNNAMED).cast(), 0) };
        match NonNull::new(na) {
            Some(na) => {
                let na = AttrRef(na);
                // With a zero name length `ntfs_attr_open` matches the first attribute of the
                // type whatever its name: a file without an unnamed `$DATA` (`$Secure`, a
                // file with named streams only) would yield its first named stream.
                // SAFETY: a live attribute from `ntfs_attr_open`.
                if unsafe { (*na.ptr()).name_len } != 0 {
                    return Ok(None);
                }
                Ok(Some(na))
            }
            None => {
                let code = errno();
                if code == libc::ENOENT {
                    Ok(None)
                } else {
                    Err(self.err(path, code))
                }
            }
        }
    }

    /// Metadata of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotADirectory`], [`Error::Ntfs3g`], [`Error::Device`].
    pub fn stat(&self, path: &str) -> Result<Stat> {
        let _lib = lib();
        let ni = self.open_path(&split(path)?, path)?;
        self.stat_inode(&ni, path)
    }

    /// The entries of the directory at `path`, at most `cap` of them.
    ///
    /// # Errors
    /// [`Error::NotADirectory`], [`Error::TooLarge`] past `cap`, as [`Ntfs3g::stat`].
    pub fn read_dir(&self, path: &str, cap: usize) -> Result<Vec<Entry>> {
        let _lib = lib();
        let ni = self.open_path(&split(path)?, path)?;
        if !ni.is_dir() {
            return Err(Error::NotADirectory {
                path: path.to_owned(),
            });
        }
        let mut out = DirCollect {
            entries: Vec::new(),
            cap,
            overflow: false,
        };
        let mut pos: i64 = 0;
        let vol = self.vol.as_ptr();
        // SAFETY: a mounted volume under the lock; listing with case sensitivity on keeps names
        // as stored (off, libntfs-3g would lower-case them).
        unsafe { (*vol).state |= sys::NV_CASE_SENSITIVE };
        // SAFETY: a live directory inode; `out` outlives the call and is only touched by
        // `filldir` during it.
        let rc = unsafe { sys::ntfs_readdir(ni.ptr(), &mut pos, (&raw mut out).cast(), filldir) };
        let code = errno();
        // SAFETY: as above.
        unsafe { (*vol).state &= !sys::NV_CASE_SENSITIVE };
        if out.overflow {
            return Err(Error::TooLarge {
                what: "ntfs directory listing (entries)",
                len: out.entries.len() as u64 + 1,
                limit: cap as u64,
            });
        }
        if rc != 0 {
            return Err(self.err(path, code));
        }
        Ok(out.entries)
    }

    /// Reads up to `buf.len()` bytes of the file at `path` from `offset`; returns how many were
    /// read (0 at or past the end).
    ///
    /// # Errors
    /// [`Error::IsADirectory`], as [`Ntfs3g::stat`].
    pub fn read_at(&self, path: &str, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let _lib = lib();
        let ni = self.open_path(&split(path)?, path)?;
        if ni.is_dir() {
            return Err(Error::IsADirectory {
                path: path.to_owned(),
            });
        }
        let Some(na) = self.open_data(&ni, path)? else {
            return Ok(0);
        };
        self.pread(&na, offset, buf, path)
    }

    fn pread(&self, na: &AttrRef, offset: u64, buf: &mut [u8], path: &str) -> Result<usize> {
        let size = na.data_size();
        if offset >= size {
            return Ok(0);
        }
        let want = usize::try_from(size - offset).map_or(buf.len(), |a| a.min(buf.len()));
        let mut done = 0;
        while done < want {
            let n = (want - done).min(IO_CHUNK);
            let pos = offset
                .checked_add(done as u64)
                .and_then(|p| i64::try_from(p).ok())
                .ok_or_else(|| Error::Usage(format!("{path}: offset out of range")))?;
            // SAFETY: a live attribute; `buf[done..done + n]` is writable (done + n <= want
            // <= buf.len()).
            let got = unsafe {
                sys::ntfs_attr_pread(na.ptr(), pos, n as i64, buf.as_mut_ptr().add(done).cast())
            };
            if got < 0 {
                return Err(self.err(path, errno()));
            }
            if got == 0 {
                break;
            }
            done += usize::try_from(got).unwrap_or(n).min(n);
        }
        Ok(done)
    }

    /// The raw `$REPARSE_POINT` value of `path`, `None` if it has none; refused past `cap`.
    ///
    /// # Errors
    /// [`Error::TooLarge`], as [`Ntfs3g::stat`].
    pub fn read_reparse(&self, path: &str, cap: u64) -> Result<Option<Vec<u8>>> {
        let _lib = lib();
        let ni = self.open_path(&split(path)?, path)?;
        let Some(na) = self.open_attr(&ni, sys::AT_REPARSE_POINT, path)? else {
            return Ok(None);
        };
        let size = na.data_size();
        if size > cap {
            return Err(Error::TooLarge {
                what: "ntfs reparse point",
                len: size,
                limit: cap,
            });
        }
        let mut buf = vec![0; usize::try_from(size).unwrap_or(0)];
        let n = self.pread(&na, 0, &mut buf, path)?;
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Creates an empty file or directory at `path`, with the security descriptor inherited
    /// from its parent.
    ///
    /// # Errors
    /// [`Error::Exists`] (also for a name differing only in case), [`Error::NotFound`] for a
    /// missing parent, [`Error::Ntfs3g`] (`ENOSPC` for a full volume), [`Error::Device`].
    pub fn create(&self, path: &str, kind: NewKind) -> Result<()> {
        let _lib = lib();
        self.check_writable(path)?;
        let (dir, name) = self.open_parent(path)?;
        if dir.mft_no() == FILE_EXTEND {
            return Err(Error::Usage(format!(
                "{path}: $Extend holds only metafiles"
            )));
        }
        if self.lookup(&dir, name, path)?.is_some() {
            return Err(Error::Exists {
                path: path.to_owned(),
            });
        }
        let units = to_units(name, path)?;
        let le: Vec<u16> = units.iter().map(|u| u.to_le()).collect();
        let fordir = c_int::from(kind == NewKind::Directory);
        let mut seccache: *mut c_void = std::ptr::null_mut();
        let mut scx = sys::SecurityContext {
            vol: self.vol.as_ptr(),
            mapping: [std::ptr::null_mut(); 2],
            pseccache: &raw mut seccache,
            uid: 0,
            gid: 0,
            tid: 0,
            umask: 0,
        };
        // SAFETY: a live directory inode; `scx` has no user mapping (uid 0: owner and group
        // become BUILTIN\Administrators) and points to an empty permissions cache, which
        // `ntfs_inherited_id` only reads when non-null.
        let securid = unsafe { sys::ntfs_inherited_id(&raw mut scx, dir.ptr(), fordir) };
        if securid == 0 {
            tracing::debug!(
                path,
                "no inherited security id; libntfs-3g adds a default descriptor"
            );
        }
        let mode = match kind {
            NewKind::File => libc::S_IFREG,
            NewKind::Directory => libc::S_IFDIR,
        };
        // SAFETY: a live directory inode and `name_len(&units)` units at `le`.
        let ni =
            unsafe { sys::ntfs_create(dir.ptr(), securid, le.as_ptr(), name_len(&units), mode) };
        match NonNull::new(ni) {
            Some(ni) => {
                drop(InodeRef(ni));
                Ok(())
            }
            None => Err(self.err(path, errno())),
        }
    }

    fn open_file_rw(&self, path: &str) -> Result<(InodeRef, AttrRef)> {
        self.check_writable(path)?;
        let ni = self.open_path(&split(path)?, path)?;
        if ni.is_dir() {
            return Err(Error::IsADirectory {
                path: path.to_owned(),
            });
        }
        if ni.mft_no() < FILE_FIRST_USER {
            return Err(Error::Usage(format!(
                "{path}: ntfs metafiles are never changed"
            )));
        }
        let Some(na) = self.open_data(&ni, path)? else {
            return Err(Error::Unsupported(format!(
                "{path}: no unnamed $DATA stream"
            )));
        };
        Ok((ni, na))
    }

    /// Writes `data` at `offset` into the file at `path`, growing it (with zeros in any gap).
    ///
    /// # Errors
    /// [`Error::IsADirectory`], [`Error::Ntfs3g`] (`ENOSPC`, `EACCES` for encrypted files), as
    /// [`Ntfs3g::stat`].
    pub fn write_at(&self, path: &str, offset: u64, data: &[u8]) -> Result<()> {
        let _lib = lib();
        let (ni, na) = self.open_file_rw(path)?;
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(IO_CHUNK);
            let pos = offset
                .checked_add(done as u64)
                .and_then(|p| i64::try_from(p).ok())
                .ok_or_else(|| Error::Usage(format!("{path}: offset out of range")))?;
            // SAFETY: a live attribute; `data[done..done + n]` is readable.
            let put = unsafe {
                sys::ntfs_attr_pwrite(na.ptr(), pos, n as i64, data.as_ptr().add(done).cast())
            };
            if put <= 0 {
                return Err(self.err(path, errno()));
            }
            done += usize::try_from(put).unwrap_or(n).min(n);
        }
        drop(na);
        // SAFETY: a live inode.
        unsafe { sys::ntfs_inode_update_times(ni.ptr(), NTFS_UPDATE_MCTIME) };
        Ok(())
    }

    /// Sets the size of the file at `path`, cutting it or extending it with zeros.
    ///
    /// # Errors
    /// As [`Ntfs3g::write_at`].
    pub fn truncate(&self, path: &str, len: u64) -> Result<()> {
        let _lib = lib();
        let (ni, na) = self.open_file_rw(path)?;
        let len = i64::try_from(len)
            .map_err(|_| Error::Usage(format!("{path}: size {len} out of range")))?;
        // SAFETY: a live attribute.
        if unsafe { sys::ntfs_attr_truncate(na.ptr(), len) } != 0 {
            return Err(self.err(path, errno()));
        }
        drop(na);
        // SAFETY: a live inode.
        unsafe { sys::ntfs_inode_update_times(ni.ptr(), NTFS_UPDATE_MCTIME) };
        Ok(())
    }

    /// Sets the last-data-change and last-access times of `path` (`None` keeps one).
    ///
    /// # Errors
    /// As [`Ntfs3g::stat`].
    pub fn set_times(&self, path: &str, atime: Option<i64>, mtime: Option<i64>) -> Result<()> {
        let _lib = lib();
        self.check_writable(path)?;
        let ni = self.open_path(&split(path)?, path)?;
        let mut times = [0u64; 3];
        // SAFETY: a live inode; the buffer holds 24 bytes, the size passed.
        let n = unsafe {
            sys::ntfs_inode_get_times(
                ni.ptr(),
                times.as_mut_ptr().cast(),
                std::mem::size_of_val(&times),
            )
        };
        if n < 24 {
            return Err(self.err(path, errno()));
        }
        if let Some(m) = mtime {
            times[1] = ntfs_time(m);
        }
        if let Some(a) = atime {
            times[2] = ntfs_time(a);
        }
        // SAFETY: a live inode; 24 readable bytes; flags 0 (not XATTR_CREATE).
        let rc = unsafe {
            sys::ntfs_inode_set_times(
                ni.ptr(),
                times.as_ptr().cast(),
                std::mem::size_of_val(&times),
                0,
            )
        };
        if rc != 0 {
            return Err(self.err(path, errno()));
        }
        Ok(())
    }

    /// Removes the name `name` of `child` from `dir` (libntfs-3g frees the file when that was
    /// its last name).
    fn delete(&self, child: InodeRef, dir: InodeRef, name: &str, path: &str) -> Result<()> {
        let units = to_units(name, path)?;
        let le: Vec<u16> = units.iter().map(|u| u.to_le()).collect();
        // SAFETY: live inodes, distinct (a directory never contains itself); `ntfs_delete`
        // always closes both, so ownership passes to it. A null path skips only the
        // path-keyed cache invalidation (the inode-keyed one still runs).
        let rc = unsafe {
            sys::ntfs_delete(
                self.vol.as_ptr(),
                std::ptr::null(),
                child.into_raw(),
                dir.into_raw(),
                le.as_ptr(),
                name_len(&units),
            )
        };
        if rc != 0 {
            return Err(self.err(path, errno()));
        }
        Ok(())
    }

    fn open_child(&self, path: &str) -> Result<(InodeRef, InodeRef, String)> {
        let (dir, name) = self.open_parent(path)?;
        let Some(mft) = self.lookup(&dir, name, path)? else {
            return Err(Error::NotFound {
                path: path.to_owned(),
            });
        };
        if mft < FILE_FIRST_USER || dir.mft_no() == FILE_EXTEND {
            return Err(Error::Usage(format!(
                "{path}: ntfs metafiles are never changed"
            )));
        }
        if mft == dir.mft_no() {
            return Err(Error::Ntfs3g {
                op: format!("{path}: directory entry points at its own directory"),
                errno: libc::EIO,
            });
        }
        let child = self.open_mft(mft, path)?;
        Ok((child, dir, name.to_owned()))
    }

    /// Removes the file (or one hard link of it) at `path`.
    ///
    /// # Errors
    /// [`Error::IsADirectory`], [`Error::NotFound`], [`Error::Usage`] for metafiles.
    pub fn unlink(&self, path: &str) -> Result<()> {
        let _lib = lib();
        self.check_writable(path)?;
        let (child, dir, name) = self.open_child(path)?;
        if child.is_dir() {
            return Err(Error::IsADirectory {
                path: path.to_owned(),
            });
        }
        self.delete(child, dir, &name, path)
    }

    /// Removes the empty directory at `path`.
    ///
    /// # Errors
    /// [`Error::NotEmpty`], [`Error::NotADirectory`], [`Error::NotFound`].
    pub fn rmdir(&self, path: &str) -> Result<()> {
        let _lib = lib();
        self.check_writable(path)?;
        let (child, dir, name) = self.open_child(path)?;
        if !child.is_dir() {
            return Err(Error::NotADirectory {
                path: path.to_owned(),
            });
        }
        // SAFETY: a live directory inode.
        if unsafe { sys::ntfs_check_empty_dir(child.ptr()) } != 0 {
            return Err(self.err(path, errno()));
        }
        self.delete(child, dir, &name, path)
    }

    /// Moves `from` to `to`, replacing a file (or, for a directory, an empty directory) at
    /// `to`, as `rename(2)` does.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Usage`] for moving a directory into itself,
    /// [`Error::NotEmpty`] / [`Error::IsADirectory`] / [`Error::NotADirectory`] for a target of
    /// the wrong kind.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let _lib = lib();
        self.check_writable(from)?;
        let (src, src_dir, src_name) = self.open_child(from)?;
        let (src_mft, src_dir_mft, src_is_dir) = (src.mft_no(), src_dir.mft_no(), src.is_dir());
        drop((src, src_dir));
        let (dst_dir, dst_name) = self.open_parent(to)?;
        if dst_dir.mft_no() == FILE_EXTEND {
            return Err(Error::Usage(format!("{to}: $Extend holds only metafiles")));
        }
        // Moving a directory below itself: walk up from the target's parent.
        if src_is_dir {
            let to_comps = split(to)?;
            let from_comps = split(from)?;
            let below = to_comps.len() > from_comps.len()
                && to_comps
                    .iter()
                    .zip(&from_comps)
                    .all(|(a, b)| a.to_lowercase() == b.to_lowercase());
            if below || dst_dir.mft_no() == src_mft {
                return Err(Error::Usage(format!(
                    "cannot move directory {from} into itself ({to})"
                )));
            }
        }
        let dst_dir_mft = dst_dir.mft_no();
        let existing = self.lookup(&dst_dir, dst_name, to)?;
        drop(dst_dir);
        let mut same_file = false;
        if let Some(dst_mft) = existing {
            if dst_mft == src_mft {
                if dst_dir_mft == src_dir_mft && dst_name == src_name {
                    return Ok(());
                }
                let case_only = dst_dir_mft == src_dir_mft
                    && dst_name.to_lowercase() == src_name.to_lowercase();
                if !case_only {
                    // Two hard links of one file: rename(2) leaves both in place.
                    return Ok(());
                }
                same_file = true;
            } else {
                if dst_mft < FILE_FIRST_USER {
                    return Err(Error::Usage(format!(
                        "{to}: ntfs metafiles are never changed"
                    )));
                }
                let dst = self.open_mft(dst_mft, to)?;
                match (src_is_dir, dst.is_dir()) {
                    (true, false) => {
                        return Err(Error::NotADirectory {
                            path: to.to_owned(),
                        });
                    }
                    (false, true) => {
                        return Err(Error::IsADirectory {
                            path: to.to_owned(),
                        });
                    }
                    (true, true) => {
                        // SAFETY: a live directory inode.
                        if unsafe { sys::ntfs_check_empty_dir(dst.ptr()) } != 0 {
                            return Err(self.err(to, errno()));
                        }
                    }
                    (false, false) => {}
                }
                let dir = self.open_mft(dst_dir_mft, to)?;
                self.delete(dst, dir, dst_name, to)?;
            }
        }
        if same_file {
            // A case-only rename: the new name would collide with the old one in the index
            // lookup, so drop the old name first, keeping the file alive with a temporary one.
            let tmp = format!(".rehost-rename-{src_mft}");
            self.link(src_mft, src_dir_mft, &tmp, to)?;
            self.unlink_name(src_mft, src_dir_mft, &src_name, from)?;
            self.link(src_mft, dst_dir_mft, dst_name, to)?;
            return self.unlink_name(src_mft, src_dir_mft, &tmp, to);
        }
        self.link(src_mft, dst_dir_mft, dst_name, to)?;
        self.unlink_name(src_mft, src_dir_mft, &src_name, from)
    }

    fn link(&self, mft: u64, dir_mft: u64, name: &str, path: &str) -> Result<()> {
        let ni = self.open_mft(mft, path)?;
        let dir = self.open_mft(dir_mft, path)?;
        let units = to_units(name, path)?;
        let le: Vec<u16> = units.iter().map(|u| u.to_le()).collect();
        // SAFETY: live, distinct inodes (checked by the caller: a directory is never moved into
        // itself); `name_len(&units)` units at `le`.
        let rc = unsafe { sys::ntfs_link(ni.ptr(), dir.ptr(), le.as_ptr(), name_len(&units)) };
        if rc != 0 {
            return Err(self.err(path, errno()));
        }
        Ok(())
    }

    fn unlink_name(&self, mft: u64, dir_mft: u64, name: &str, path: &str) -> Result<()> {
        let ni = self.open_mft(mft, path)?;
        let dir = self.open_mft(dir_mft, path)?;
        self.delete(ni, dir, name, path)
    }
}

impl Drop for Ntfs3g {
    fn drop(&mut self) {
        let _lib = lib();
        if let Err(e) = self.umount_locked() {
            tracing::warn!(error = %e, "ntfs-3g unmount on drop failed");
        }
    }
}
