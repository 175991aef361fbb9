//! Writing FAT12/16/32 through `fatfs` ([`FsWrite`] for [`FatFs`]).
//!
//! Every call mounts `fatfs` over a write-through cursor, runs under the same budget and
//! `catch_unwind` guard as reads, and unmounts (which stores the FSInfo counters and clears the
//! dirty flag `fatfs` sets while it writes). A call that fails or panics half-way can leave the
//! volume inconsistent: writers are meant to run inside a `disk::txn::Transaction`, which rolls
//! the device back.
//!
//! What FAT cannot store: owners and extended attributes ([`Error::Unsupported`]), symlinks, and
//! permission bits beyond the read-only attribute (a mode without any write bit sets it). Moving
//! a directory to another parent recreates the directory there and moves its entries one by one,
//! because `fatfs` 0.3 would leave the moved directory's `..` entry pointing at the old parent.

use std::io::{Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use disk::{BlockRead, BlockWrite};

use super::{
    ATTR_READ_ONLY, BootSector, Budget, DevCursor, FatEntry, FatFs, Fs, Node, call_budget,
    for_each_entry, lookup, map_io, panicked,
};
use crate::write::{FsWrite, NewFileAttrs, Times, WriteOptions};
use crate::{Error, FsKind, FsRead, GuestPath, Result};

/// `BS_Reserved1` (FAT12/16, offset 0x25) and its FAT32 twin at 0x41: bit 0 is the "volume
/// dirty" flag Windows sets while the volume is mounted (FAT specification, section 3.2 and 3.3
/// reserve the byte; Windows NT uses it this way, as does `fsck.fat`).
const BS_FLAGS_FAT16: u64 = 0x25;
const BS_FLAGS_FAT32: u64 = 0x41;
const BS_FLAG_DIRTY: u8 = 0x01;
/// FAT[1] high bits: `ClnShutBitMask` set means the volume was cleanly unmounted,
/// `HrdErrBitMask` clear means a disk I/O error was met (FAT specification, section 4.2).
const FAT16_CLEAN_SHUTDOWN: u16 = 0x8000;
const FAT16_NO_HARD_ERROR: u16 = 0x4000;
const FAT32_CLEAN_SHUTDOWN: u32 = 0x0800_0000;
const FAT32_NO_HARD_ERROR: u32 = 0x0400_0000;
/// Largest FAT file: the size field is 32 bits (section 6).
const MAX_FILE_SIZE: u64 = u32::MAX as u64;
/// Deepest directory tree a cross-directory move recreates (S12).
const MAX_MOVE_DEPTH: u32 = 256;
/// Zeros written at a time when a file grows.
const ZERO_CHUNK: usize = 64 * 1024;

fn fat_unsupported(detail: &str) -> Error {
    Error::unsupported("fat", detail)
}

/// Why a FAT volume counts as unclean, if it does.
fn unclean_reason(boot: &BootSector, dev: &dyn BlockRead) -> Result<Option<String>> {
    let flags_at = if boot.kind == FsKind::Fat32 {
        BS_FLAGS_FAT32
    } else {
        BS_FLAGS_FAT16
    };
    let [flags]: [u8; 1] = disk::BlockReadExt::read_array(dev, flags_at)?;
    if flags & BS_FLAG_DIRTY != 0 {
        return Ok(Some(format!(
            "the boot sector's dirty flag (byte {flags_at:#x} = {flags:#04x}) is set: the volume was not unmounted cleanly"
        )));
    }
    let fat1 = boot.fat_offset();
    match boot.kind {
        FsKind::Fat16 => {
            let e = u16::from_le_bytes(disk::BlockReadExt::read_array(dev, fat1 + 2)?);
            if e & FAT16_CLEAN_SHUTDOWN == 0 {
                return Ok(Some(format!(
                    "fat[1] = {e:#06x} lacks the clean-shutdown bit: the volume was not unmounted cleanly"
                )));
            }
            if e & FAT16_NO_HARD_ERROR == 0 {
                return Ok(Some(format!("fat[1] = {e:#06x} records a disk i/o error")));
            }
        }
        FsKind::Fat32 => {
            let e = u32::from_le_bytes(disk::BlockReadExt::read_array(dev, fat1 + 4)?);
            if e & FAT32_CLEAN_SHUTDOWN == 0 {
                return Ok(Some(format!(
                    "fat[1] = {e:#010x} lacks the clean-shutdown bit: the volume was not unmounted cleanly"
                )));
            }
            if e & FAT32_NO_HARD_ERROR == 0 {
                return Ok(Some(format!("fat[1] = {e:#010x} records a disk i/o error")));
            }
        }
        // FAT12 has no such bits.
        _ => {}
    }
    Ok(None)
}

/// The last component of `path` as a name `fatfs` can store, or [`Error::InvalidPath`].
fn fat_name(path: &GuestPath) -> Result<&str> {
    let invalid = |why| Error::InvalidPath {
        path: path.to_string(),
        why,
    };
    let name = path
        .file_name()
        .ok_or_else(|| invalid("the root has no name"))?;
    let name = std::str::from_utf8(name).map_err(|_| invalid("fat names must be utf-8"))?;
    // The characters a long name may hold (FAT specification, section 7), as `fatfs` checks them.
    let ok_char = |c: char| {
        c.is_ascii_alphanumeric()
            || ('\u{80}'..='\u{FFFF}').contains(&c)
            || "$%'-_@~`!(){}. +,;=[]^#&".contains(c)
    };
    if name.chars().count() > 255 {
        return Err(invalid("fat names are at most 255 characters"));
    }
    if !name.chars().all(ok_char) {
        return Err(invalid("fat names cannot hold this character"));
    }
    if name.ends_with(['.', ' ']) {
        return Err(invalid("fat names cannot end in a dot or space"));
    }
    Ok(name)
}

/// The directory at `path`, or [`Error::NotADirectory`].
fn dir_at<'a>(fs: &'a Fs, path: &GuestPath) -> Result<fatfs::Dir<'a, DevCursor>> {
    match lookup(fs, path)? {
        Node::Root => Ok(fs.root_dir()),
        Node::Entry(e) if e.is_dir() => Ok(e.to_dir()),
        Node::Entry(_) => Err(Error::NotADirectory {
            path: path.to_string(),
        }),
    }
}

/// The entry of `path` in its parent, if any.
fn find<'a>(fs: &'a Fs, path: &GuestPath) -> Result<Option<FatEntry<'a>>> {
    match lookup(fs, path) {
        Ok(Node::Entry(e)) => Ok(Some(e)),
        Ok(Node::Root) => Err(Error::InvalidPath {
            path: path.to_string(),
            why: "the root directory cannot be changed this way",
        }),
        Err(e) if e.is_not_found() => {
            // Only the last component may be missing.
            dir_at(fs, &path.parent())?;
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

fn found<'a>(fs: &'a Fs, path: &GuestPath) -> Result<FatEntry<'a>> {
    find(fs, path)?.ok_or_else(|| Error::NotFound {
        path: path.to_string(),
    })
}

/// Maps an error of a `fatfs` write call on `path`.
fn map_write(e: &std::io::Error, path: &GuestPath) -> Error {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
            path: path.to_string(),
        },
        std::io::ErrorKind::NotFound => Error::NotFound {
            path: path.to_string(),
        },
        // The message fatfs 0.3 uses when no free cluster is left.
        _ if e.to_string() == "No space left on device" => Error::LimitExceeded {
            what: format!("{path}: fat free space"),
            limit: 0,
        },
        _ => map_io(e, path),
    }
}

/// A FAT date and time for `secs` since the epoch (UTC), clamped to FAT's 1980..=2107 range.
fn fat_time(secs: i64) -> fatfs::DateTime {
    /// 1980-01-01 and 2107-12-31 23:59:58 UTC.
    const MIN: i64 = 315_532_800;
    const MAX: i64 = 4_354_819_198;
    let secs = secs.clamp(MIN, MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (the era-based algorithm, inverse of `unix_time`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // All values are in range after the clamp above, so the conversions cannot fail.
    let n16 = |v: i64| u16::try_from(v).unwrap_or(0);
    fatfs::DateTime {
        date: fatfs::Date {
            year: n16(year),
            month: n16(month),
            day: n16(day),
        },
        time: fatfs::Time {
            hour: n16(rem / 3600),
            min: n16(rem / 60 % 60),
            sec: n16(rem % 60),
            millis: 0,
        },
    }
}

impl FatFs {
    /// Opens the FAT filesystem on `dev` for reading and writing.
    ///
    /// # Errors
    /// [`Error::Unclean`] for a volume marked dirty (or with a recorded I/O error) unless
    /// `opts` forces it; as [`FatFs::open`].
    pub fn open_rw(dev: Arc<dyn BlockWrite>, opts: WriteOptions) -> Result<Self> {
        let read: Arc<dyn BlockRead> = dev.clone();
        let mut fs = Self::open(read)?;
        if let Some(why) = unclean_reason(&fs.boot, &*fs.dev)? {
            if !opts.is_forced() {
                return Err(Error::Unclean {
                    what: "fat volume",
                    detail: format!(
                        "{why}; check it with fsck.vfat (or Windows chkdsk) first, or force the write"
                    ),
                });
            }
            tracing::debug!(%why, "writing to an unclean fat volume because forced");
        }
        fs.wdev = Some(dev);
        Ok(fs)
    }

    /// True when opened with [`FatFs::open_rw`].
    #[must_use]
    pub fn is_writable(&self) -> bool {
        self.wdev.is_some()
    }

    /// Mounts `fatfs` writable for one call (exclusive), under the budget and panic guard, and
    /// unmounts it afterwards so its FSInfo and dirty-flag updates reach the device.
    fn with_fs_mut<R>(
        &self,
        path: &GuestPath,
        data_len: usize,
        f: impl FnOnce(&Fs, &DevHandle<'_>) -> Result<R>,
    ) -> Result<R> {
        let wdev = self
            .wdev
            .clone()
            .ok_or(Error::Disk(disk::Error::ReadOnly))?;
        let budget = Arc::new(Budget::default());
        budget.reset(call_budget(self.dev.size(), data_len.saturating_mul(2)));
        let cursor = DevCursor::new(
            self.dev.clone(),
            Some(wdev.clone()),
            budget,
            self.writes.clone(),
        );
        let name_writes = cursor.name_writes.clone();
        let stale = cursor.stale.clone();
        let _exclusive = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        catch_unwind(AssertUnwindSafe(|| {
            let fs = Fs::new(cursor, fatfs::FsOptions::new().update_accessed_date(false))
                .map_err(|e| map_io(&e, path))?;
            let handle = DevHandle {
                wdev: &*wdev,
                name_writes: &name_writes,
                stale: &stale,
            };
            let r = f(&fs, &handle)?;
            fs.unmount().map_err(|e| map_io(&e, path))?;
            Ok(r)
        }))
        .unwrap_or_else(|_| Err(panicked(path)))
    }
}

/// What a write call may touch besides `fatfs`: the device, for attribute bytes `fatfs` 0.3
/// has no setter for.
struct DevHandle<'a> {
    wdev: &'a dyn BlockWrite,
    name_writes: &'a std::sync::Mutex<Vec<super::NameWrite>>,
    stale: &'a std::sync::atomic::AtomicBool,
}

impl DevHandle<'_> {
    fn take_name_writes(&self) -> Vec<super::NameWrite> {
        std::mem::take(
            &mut *self
                .name_writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Writes to the device behind `fatfs`'s back, telling its cursor to drop its cache.
    fn patch(&self, at: u64, data: &[u8]) -> Result<()> {
        self.wdev.write_all_at(at, data)?;
        self.stale.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Sets or clears the read-only attribute of the file `e` by rewriting its entry through
    /// `fatfs` (which tells us where the entry lies) and patching `DIR_Attr` there.
    fn set_read_only(&self, e: &FatEntry<'_>, path: &GuestPath, ro: bool) -> Result<()> {
        let mut file = e.to_file();
        self.take_name_writes();
        // fatfs stores the entry only when a field changed: change the time and set it back.
        let t = e.modified();
        let mut other = t;
        other.time.sec = if t.time.sec < 58 { t.time.sec + 2 } else { 0 };
        #[expect(deprecated, reason = "fatfs 0.3 has no other per-file time setter")]
        file.set_modified(other);
        #[expect(deprecated, reason = "fatfs 0.3 has no other per-file time setter")]
        file.set_modified(t);
        file.flush().map_err(|err| map_write(&err, path))?;
        drop(file);
        let Some(&(at, _)) = self.take_name_writes().last() else {
            return Err(Error::corrupt(
                "fat filesystem",
                0,
                format!("{path}: fatfs did not rewrite the directory entry"),
            ));
        };
        let attr_at = at + 11;
        let [attr]: [u8; 1] = disk::BlockReadExt::read_array(self.wdev, attr_at)?;
        let new = if ro {
            attr | ATTR_READ_ONLY
        } else {
            attr & !ATTR_READ_ONLY
        };
        if new != attr {
            self.patch(attr_at, &[new])?;
        }
        Ok(())
    }

    /// `Dir::create_dir`, then moves the new directory's `.` and `..` entries to its first two
    /// slots: `fatfs` 0.3 writes a long-name entry before each of them, which the FAT
    /// specification (section 6.3) does not allow and `fsck.vfat` reports.
    fn create_dir<'a>(
        &self,
        parent: &fatfs::Dir<'a, DevCursor>,
        name: &str,
        path: &GuestPath,
    ) -> Result<fatfs::Dir<'a, DevCursor>> {
        self.take_name_writes();
        let dir = parent.create_dir(name).map_err(|e| map_write(&e, path))?;
        let writes = self.take_name_writes();
        let bad = || {
            Error::corrupt(
                "fat filesystem",
                0,
                format!("{path}: new directory's dot entries are not where fatfs puts them"),
            )
        };
        // fatfs wrote `.` to slot 1 and `..` to slot 3 of the new directory's first cluster.
        let last_of = |name: &[u8; 11]| {
            writes
                .iter()
                .rev()
                .find(|(_, n)| n == name)
                .map(|&(at, _)| at)
        };
        let dot = last_of(b".          ").ok_or_else(bad)?;
        let dotdot = last_of(b"..         ").ok_or_else(bad)?;
        let start = dot.checked_sub(32).ok_or_else(bad)?;
        if dotdot != start + 96 {
            return Err(bad());
        }
        let mut slots = [0u8; 128];
        self.wdev.read_exact_at(start, &mut slots)?;
        if !slots[32..].starts_with(b".          ") || !slots[96..].starts_with(b"..         ") {
            return Err(bad());
        }
        let mut fixed = [0u8; 128];
        fixed[..32].copy_from_slice(&slots[32..64]);
        fixed[32..64].copy_from_slice(&slots[96..128]);
        if path.parent().is_root() {
            // `..` of a root child holds cluster 0, also on FAT32 where the root has a cluster
            // (section 6.7); fatfs stores the root's cluster. Clear DIR_FstClusHI and LO.
            fixed[32 + 20..32 + 22].fill(0);
            fixed[32 + 26..32 + 28].fill(0);
        }
        self.patch(start, &fixed)?;
        Ok(dir)
    }
}

/// Writes `len` zero bytes at the current position of `file`.
fn write_zeros(file: &mut fatfs::File<'_, DevCursor>, len: u64, path: &GuestPath) -> Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).map_or(ZERO_CHUNK, |l| l.min(ZERO_CHUNK));
        // OK to slice: n <= ZERO_CHUNK.
        file.write_all(&zeros[..n])
            .map_err(|e| map_write(&e, path))?;
        left -= n as u64;
    }
    Ok(())
}

fn check_size(path: &GuestPath, size: Option<u64>) -> Result<u64> {
    match size {
        Some(s) if s <= MAX_FILE_SIZE => Ok(s),
        _ => Err(Error::LimitExceeded {
            what: format!("{path}: fat file size"),
            limit: MAX_FILE_SIZE,
        }),
    }
}

fn regular<'a>(fs: &'a Fs, path: &GuestPath) -> Result<FatEntry<'a>> {
    let e = found(fs, path)?;
    if e.is_dir() {
        return Err(Error::IsADirectory {
            path: path.to_string(),
        });
    }
    Ok(e)
}

fn is_same_path(a: &GuestPath, b: &GuestPath) -> bool {
    a.components().len() == b.components().len() && is_prefix(a, b)
}

/// True if `a` is `b` or an ancestor of it, comparing names as FAT does (ignoring case).
fn is_prefix(a: &GuestPath, b: &GuestPath) -> bool {
    let fold = |c: &[u8]| String::from_utf8_lossy(c).to_uppercase();
    a.components().len() <= b.components().len()
        && a.components()
            .iter()
            .zip(b.components())
            .all(|(x, y)| fold(x) == fold(y))
}

/// Moves the directory `from` to `to` (whose parent exists and whose name is free) by creating
/// `to` and moving every entry into it.
fn move_dir(
    fs: &Fs,
    dev: &DevHandle<'_>,
    from: &GuestPath,
    to: &GuestPath,
    depth: u32,
) -> Result<()> {
    if depth > MAX_MOVE_DEPTH {
        return Err(Error::LimitExceeded {
            what: format!("{from}: directory depth to move"),
            limit: u64::from(MAX_MOVE_DEPTH),
        });
    }
    let src = dir_at(fs, from)?;
    let to_name = fat_name(to)?;
    let dst = dev.create_dir(&dir_at(fs, &to.parent())?, to_name, to)?;
    let mut children = Vec::new();
    for_each_entry(&src, from, |e| {
        children.push((e.file_name(), e.is_dir()));
        None
    })?;
    for (name, is_dir) in children {
        let (f, t) = (
            from.join_name(name.as_bytes())?,
            to.join_name(name.as_bytes())?,
        );
        if is_dir {
            move_dir(fs, dev, &f, &t, depth + 1)?;
        } else {
            src.rename(&name, &dst, &name)
                .map_err(|e| map_write(&e, &f))?;
        }
    }
    let src_entry = found(fs, from)?;
    dir_at(fs, &from.parent())?
        .remove(&src_entry.file_name())
        .map_err(|e| map_write(&e, from))
}

impl FsWrite for FatFs {
    fn write_file(&self, path: &GuestPath, data: &[u8], attrs: &NewFileAttrs) -> Result<()> {
        if !attrs.xattrs.is_empty() {
            return Err(fat_unsupported("fat has no extended attributes"));
        }
        let name = fat_name(path)?;
        check_size(path, Some(data.len() as u64))?;
        self.with_fs_mut(path, data.len(), |fs, dev| {
            // fatfs opens an existing file (keeping its entry, so its attributes and creation
            // time stay) or creates one; it stores a short entry only when it creates, which is
            // how we tell (one directory scan fewer than looking the name up first).
            let parent = dir_at(fs, &path.parent())?;
            dev.take_name_writes();
            let mut file = parent.create_file(name).map_err(|e| {
                // The message fatfs 0.3 uses when the name is a directory.
                if e.to_string() == "Is a directory" {
                    Error::IsADirectory {
                        path: path.to_string(),
                    }
                } else {
                    map_write(&e, path)
                }
            })?;
            let created = (!dev.take_name_writes().is_empty()).then_some(());
            file.truncate().map_err(|e| map_write(&e, path))?;
            file.write_all(data).map_err(|e| map_write(&e, path))?;
            if created.is_some()
                && let Some(t) = attrs.mtime
            {
                #[expect(deprecated, reason = "fatfs 0.3 has no other per-file time setter")]
                file.set_modified(fat_time(t));
            }
            file.flush().map_err(|e| map_write(&e, path))?;
            drop(file);
            if created.is_some() && attrs.mode & 0o222 == 0 {
                dev.set_read_only(&regular(fs, path)?, path, true)?;
            }
            Ok(())
        })
    }

    fn write_at(&self, path: &GuestPath, offset: u64, data: &[u8]) -> Result<()> {
        check_size(path, offset.checked_add(data.len() as u64))?;
        self.with_fs_mut(path, data.len(), |fs, _| {
            let e = regular(fs, path)?;
            let size = e.len();
            let mut file = e.to_file();
            if offset > size {
                file.seek(SeekFrom::End(0))
                    .map_err(|err| map_write(&err, path))?;
                write_zeros(&mut file, offset - size, path)?;
            } else {
                file.seek(SeekFrom::Start(offset))
                    .map_err(|err| map_write(&err, path))?;
            }
            file.write_all(data).map_err(|err| map_write(&err, path))?;
            file.flush().map_err(|err| map_write(&err, path))
        })
    }

    fn truncate(&self, path: &GuestPath, len: u64) -> Result<()> {
        check_size(path, Some(len))?;
        self.with_fs_mut(path, 0, |fs, _| {
            let e = regular(fs, path)?;
            let size = e.len();
            let mut file = e.to_file();
            if len < size {
                file.seek(SeekFrom::Start(len))
                    .map_err(|err| map_write(&err, path))?;
                file.truncate().map_err(|err| map_write(&err, path))?;
            } else if len > size {
                file.seek(SeekFrom::End(0))
                    .map_err(|err| map_write(&err, path))?;
                write_zeros(&mut file, len - size, path)?;
            }
            file.flush().map_err(|err| map_write(&err, path))
        })
    }

    fn mkdir(&self, path: &GuestPath, attrs: &NewFileAttrs) -> Result<()> {
        if !attrs.xattrs.is_empty() {
            return Err(fat_unsupported("fat has no extended attributes"));
        }
        let name = fat_name(path)?;
        self.with_fs_mut(path, 0, |fs, dev| {
            if find(fs, path)?.is_some() {
                return Err(Error::AlreadyExists {
                    path: path.to_string(),
                });
            }
            dev.create_dir(&dir_at(fs, &path.parent())?, name, path)?;
            Ok(())
        })
    }

    fn symlink(&self, _path: &GuestPath, _target: &[u8], _attrs: &NewFileAttrs) -> Result<()> {
        Err(fat_unsupported("fat has no symbolic links"))
    }

    fn unlink(&self, path: &GuestPath) -> Result<()> {
        self.with_fs_mut(path, 0, |fs, _| {
            let e = regular(fs, path)?;
            dir_at(fs, &path.parent())?
                .remove(&e.file_name())
                .map_err(|err| map_write(&err, path))
        })
    }

    fn rmdir(&self, path: &GuestPath) -> Result<()> {
        self.with_fs_mut(path, 0, |fs, _| {
            let e = found(fs, path)?;
            if !e.is_dir() {
                return Err(Error::NotADirectory {
                    path: path.to_string(),
                });
            }
            let empty = for_each_entry(&e.to_dir(), path, Some)?.is_none();
            if !empty {
                return Err(Error::NotEmpty {
                    path: path.to_string(),
                });
            }
            dir_at(fs, &path.parent())?
                .remove(&e.file_name())
                .map_err(|err| map_write(&err, path))
        })
    }

    fn rename(&self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        if from.is_root() || to.is_root() {
            return Err(Error::InvalidPath {
                path: from.to_string(),
                why: "the root directory cannot be renamed",
            });
        }
        let to_name = fat_name(to)?;
        self.with_fs_mut(from, 0, |fs, dev| {
            let src = found(fs, from)?;
            let src_name = src.file_name();
            if is_same_path(from, to) {
                if from.file_name() == to.file_name() {
                    return Ok(());
                }
                // A change of case only: fatfs sees the target as taken, so go through a
                // temporary name.
                let dir = dir_at(fs, &from.parent())?;
                let tmp = format!("~rehost-rename-{}", src_name.len());
                dir.rename(&src_name, &dir, &tmp)
                    .map_err(|e| map_write(&e, from))?;
                return dir
                    .rename(&tmp, &dir, to_name)
                    .map_err(|e| map_write(&e, to));
            }
            if src.is_dir() && is_prefix(from, to) {
                return Err(Error::InvalidPath {
                    path: to.to_string(),
                    why: "a directory cannot be moved into itself",
                });
            }
            let dst_dir = dir_at(fs, &to.parent())?;
            if let Some(dst) = find(fs, to)? {
                match (src.is_dir(), dst.is_dir()) {
                    (false, true) => {
                        return Err(Error::IsADirectory {
                            path: to.to_string(),
                        });
                    }
                    (true, false) => {
                        return Err(Error::NotADirectory {
                            path: to.to_string(),
                        });
                    }
                    (true, true) => {
                        if for_each_entry(&dst.to_dir(), to, Some)?.is_some() {
                            return Err(Error::NotEmpty {
                                path: to.to_string(),
                            });
                        }
                    }
                    (false, false) => {}
                }
                dst_dir
                    .remove(&dst.file_name())
                    .map_err(|e| map_write(&e, to))?;
            }
            let same_parent = is_same_path(&from.parent(), &to.parent());
            if src.is_dir() && !same_parent {
                return move_dir(fs, dev, from, to, 0);
            }
            dir_at(fs, &from.parent())?
                .rename(&src_name, &dst_dir, to_name)
                .map_err(|e| map_write(&e, from))
        })
    }

    fn set_mode(&self, path: &GuestPath, mode: u32) -> Result<()> {
        let ro = mode & 0o222 == 0;
        self.with_fs_mut(path, 0, |fs, dev| {
            let e = found(fs, path)?;
            let is_ro = e.attributes().bits() & ATTR_READ_ONLY != 0;
            if is_ro == ro {
                return Ok(());
            }
            if e.is_dir() {
                return Err(fat_unsupported(
                    "fat directory attributes cannot be changed by this library",
                ));
            }
            dev.set_read_only(&e, path, ro)
        })
    }

    fn set_owner(&self, _path: &GuestPath, _uid: u32, _gid: u32) -> Result<()> {
        Err(fat_unsupported("fat stores no file owners"))
    }

    fn set_times(&self, path: &GuestPath, times: &Times) -> Result<()> {
        self.with_fs_mut(path, 0, |fs, _| {
            let e = found(fs, path)?;
            if e.is_dir() {
                return Err(fat_unsupported(
                    "fat directory times cannot be changed by this library",
                ));
            }
            let mut file = e.to_file();
            if let Some(m) = times.mtime {
                #[expect(deprecated, reason = "fatfs 0.3 has no other per-file time setter")]
                file.set_modified(fat_time(m));
            }
            if let Some(a) = times.atime {
                #[expect(deprecated, reason = "fatfs 0.3 has no other per-file time setter")]
                file.set_accessed(fat_time(a).date);
            }
            file.flush().map_err(|err| map_write(&err, path))
        })
    }

    fn get_xattr(&self, _path: &GuestPath, _name: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(fat_unsupported("fat has no extended attributes"))
    }

    fn set_xattr(&self, _path: &GuestPath, _name: &[u8], _value: &[u8]) -> Result<()> {
        Err(fat_unsupported("fat has no extended attributes"))
    }

    fn remove_xattr(&self, _path: &GuestPath, _name: &[u8]) -> Result<()> {
        Err(fat_unsupported("fat has no extended attributes"))
    }

    fn list_xattrs(&self, _path: &GuestPath) -> Result<Vec<Vec<u8>>> {
        Err(fat_unsupported("fat has no extended attributes"))
    }

    fn flush(&self) -> Result<()> {
        let wdev = self
            .wdev
            .as_ref()
            .ok_or(Error::Disk(disk::Error::ReadOnly))?;
        let _exclusive = self.lock.write().unwrap_or_else(PoisonError::into_inner);
        Ok(wdev.flush()?)
    }
}

/// Fuzz harness body: opens `data` as a FAT image in memory for writing (forced past a dirty
/// flag), applies a fixed series of operations, and lists the result. Errors are expected on
/// damaged images; a panic, an endless loop or an unbounded allocation is a bug.
#[doc(hidden)]
pub fn fuzz_write(data: &[u8]) {
    let dev = Arc::new(disk::MemDisk::from_vec(data.to_vec()));
    let Ok(fs) = FatFs::open_rw(dev, WriteOptions::new().force(true)) else {
        return;
    };
    let p = |s: &str| GuestPath::parse(s.as_bytes());
    let (Ok(a), Ok(d), Ok(b), Ok(c)) = (p("/fuzz.txt"), p("/fuzzdir"), p("/fuzzdir/b"), p("/c"))
    else {
        return;
    };
    let attrs = NewFileAttrs::file();
    let _ = fs.write_file(&a, &[0x5A; 3000], &attrs);
    let _ = fs.mkdir(&d, &NewFileAttrs::dir());
    let _ = fs.write_file(&b, b"inner", &attrs);
    let _ = fs.write_at(&a, 5000, b"tail");
    let _ = fs.truncate(&a, 100);
    let _ = fs.set_mode(&a, 0o444);
    let _ = fs.rename(&a, &c);
    let _ = fs.rename(&d, &p("/moved").unwrap_or_else(|_| GuestPath::root()));
    let _ = fs.unlink(&c);
    if let Ok(entries) = fs.read_dir(&GuestPath::root()) {
        for e in entries.iter().take(16) {
            if let Ok(path) = GuestPath::root().join_name(&e.name) {
                let _ = fs.unlink(&path);
                let _ = fs.rmdir(&path);
            }
        }
    }
    let _ = fs.flush();
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::fuzzing::testutil::{Rng, need, run};

    #[test]
    fn fat_time_inverts_unix_time() {
        for secs in [315_532_800, 1_577_934_246, 1_709_251_198, 4_354_819_198] {
            assert_eq!(super::super::unix_time(fat_time(secs)), secs, "{secs}");
        }
        // Out of range values clamp.
        assert_eq!(super::super::unix_time(fat_time(0)), 315_532_800);
        assert_eq!(super::super::unix_time(fat_time(i64::MAX)), 4_354_819_198);
    }

    #[test]
    fn fuzz_write_survives_mutated_images() {
        if !need(&["mkfs.vfat", "mmd", "mcopy"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("fuzz.img");
        assert!(run(Command::new("mkfs.vfat")
            .args(["-C", "-F", "12", "-s", "1"])
            .arg(&img)
            .arg("512")));
        let host = tmp.path().join("f.txt");
        std::fs::write(&host, vec![7u8; 5000]).unwrap();
        let m = |tool: &str| {
            let mut c = Command::new(tool);
            c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&img);
            c
        };
        assert!(run(m("mmd").arg("::/dir")));
        assert!(run(m("mcopy").arg(&host).arg("::/dir/")));
        let good = std::fs::read(&img).unwrap();
        // The unmutated image takes every operation.
        let dev = Arc::new(disk::MemDisk::from_vec(good.clone()));
        fuzz_write(&good);
        let fs = FatFs::open_rw(dev.clone(), WriteOptions::new()).unwrap();
        fs.write_file(
            &GuestPath::parse(b"/x").unwrap(),
            b"x",
            &NewFileAttrs::file(),
        )
        .unwrap();
        assert_eq!(fs.read_dir(&GuestPath::root()).unwrap().len(), 2);
        // 1,000 mutations: byte flips in the metadata (boot sector, FATs, root directory and
        // the first clusters), and truncations.
        let meta = 40 * 1024;
        let mut rng = Rng(0xFA7_5EED);
        for i in 0..1000 {
            let mut bad = good.clone();
            if i % 10 == 9 {
                bad.truncate(usize::try_from(rng.below(good.len() as u64)).unwrap());
            } else {
                for _ in 0..1 + rng.below(4) {
                    let at = usize::try_from(rng.below(meta)).unwrap();
                    bad[at] ^= 1 << rng.below(8);
                }
            }
            fuzz_write(&bad);
        }
    }
}
