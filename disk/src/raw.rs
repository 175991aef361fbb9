//! Raw image files and block devices: the guest disk's bytes, one for one.
//!
//! All I/O is positional (`pread`/`pwrite` through [`FileExt`]), so one [`RawFile`] can be shared
//! by many readers without a seek cursor (house style S4). The size is fixed when the file is
//! opened; writes never grow the file.
//!
//! Sparse files are honoured: [`BlockRead::extents`] asks the kernel with `SEEK_DATA`/`SEEK_HOLE`,
//! and zeroing or discarding punches holes (`fallocate(2)`) where the filesystem allows it.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::{FallocateFlags, SeekFrom as RSeekFrom};
use rustix::io::Errno;

use crate::block::{BlockRead, BlockWrite, Extent, ExtentKind, ZeroMode, check_range};
use crate::open::Access;
use crate::{Error, Result};

/// Upper bound on `SEEK_DATA`/`SEEK_HOLE` round trips in one [`BlockRead::extents`] call.
///
/// A file with more fragments than this is reported as data past the limit, which is always
/// correct (house style S12: a hostile or pathological file cannot make us loop for long).
const MAX_SEEK_ROUNDS: usize = 1 << 16;

/// A raw image file or block device.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    size: u64,
    access: Access,
    block_device: bool,
    sector_size: u32,
}

impl RawFile {
    /// Opens `path` with the given access.
    ///
    /// # Errors
    /// [`Error::Io`] (at offset 0) if the file cannot be opened or its size cannot be found.
    pub fn open(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|e| Error::io(0, e))?;
        Self::from_file(file, access)
    }

    /// Wraps an already opened file. `access` must match how `file` was opened: a read-write
    /// `RawFile` over a read-only descriptor fails on the first write.
    ///
    /// # Errors
    /// [`Error::Io`] if the file's size cannot be found.
    pub fn from_file(file: File, access: Access) -> Result<Self> {
        let meta = file.metadata().map_err(|e| Error::io(0, e))?;
        let block_device = std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type());
        let (size, sector_size) = if block_device {
            // A block device's metadata length is 0; its end is where the kernel says it is.
            let size = (&file)
                .seek(SeekFrom::End(0))
                .map_err(|e| Error::io(0, e))?;
            let sector = rustix::fs::ioctl_blksszget(&file).unwrap_or(512);
            (size, sector)
        } else {
            (meta.len(), 512)
        };
        Ok(Self {
            file,
            size,
            access,
            block_device,
            sector_size,
        })
    }

    /// Whether the device was opened for writing.
    #[must_use]
    pub fn access(&self) -> Access {
        self.access
    }

    /// Whether this is a block device rather than a regular file.
    #[must_use]
    pub fn is_block_device(&self) -> bool {
        self.block_device
    }

    fn check_writable(&self) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(Error::ReadOnly),
        }
    }

    /// `fallocate(2)` over the range; `Ok(false)` if the file or filesystem does not support it.
    fn try_fallocate(&self, flags: FallocateFlags, offset: u64, len: u64) -> Result<bool> {
        if len == 0 {
            return Ok(true);
        }
        match rustix::fs::fallocate(&self.file, flags, offset, len) {
            Ok(()) => Ok(true),
            Err(Errno::OPNOTSUPP | Errno::NOSYS | Errno::INVAL | Errno::NODEV) => Ok(false),
            Err(e) => Err(Error::io(offset, e.into())),
        }
    }

    /// The data/hole map of `offset..end` from `SEEK_DATA`/`SEEK_HOLE`, or `None` if the kernel
    /// or filesystem cannot answer.
    fn seek_map(&self, offset: u64, end: u64) -> Result<Option<Vec<Extent>>> {
        let mut out: Vec<Extent> = Vec::new();
        let mut pos = offset;
        for _ in 0..MAX_SEEK_ROUNDS {
            if pos >= end {
                return Ok(Some(out));
            }
            let data = match rustix::fs::seek(&self.file, RSeekFrom::Data(pos)) {
                Ok(d) => d,
                // No data at or after pos: the rest is a hole.
                Err(Errno::NXIO) => end,
                Err(Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(None),
                Err(e) => return Err(Error::io(pos, e.into())),
            };
            // The kernel answers with a position at or after `pos`; anything else means the
            // filesystem does not implement the call faithfully, and "all data" is the safe answer.
            if data < pos {
                return Ok(None);
            }
            let data = data.min(end);
            if data > pos {
                push_extent(&mut out, pos, data - pos, ExtentKind::Hole);
                pos = data;
                continue;
            }
            let hole = match rustix::fs::seek(&self.file, RSeekFrom::Hole(pos)) {
                Ok(h) => h,
                Err(Errno::NXIO) => end,
                Err(Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => return Ok(None),
                Err(e) => return Err(Error::io(pos, e.into())),
            };
            if hole <= pos {
                return Ok(None);
            }
            let hole = hole.min(end);
            push_extent(&mut out, pos, hole - pos, ExtentKind::Data);
            pos = hole;
        }
        // Too fragmented to map in one call: the remainder is reported as data.
        if pos < end {
            push_extent(&mut out, pos, end - pos, ExtentKind::Data);
        }
        Ok(Some(out))
    }
}

/// Appends a run, merging it with the previous one when both are of the same kind and touch.
pub(crate) fn push_extent(out: &mut Vec<Extent>, offset: u64, len: u64, kind: ExtentKind) {
    if len == 0 {
        return;
    }
    if let Some(last) = out.last_mut()
        && last.kind == kind
        && last.offset.checked_add(last.len) == Some(offset)
    {
        last.len += len;
        return;
    }
    out.push(Extent { offset, len, kind });
}

impl BlockRead for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(offset, e))
    }

    fn logical_sector_size(&self) -> u32 {
        self.sector_size
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        // Cannot overflow: check_range proved offset + len <= size.
        let end = offset + len;
        if !self.block_device
            && let Some(map) = self.seek_map(offset, end)?
        {
            return Ok(map);
        }
        Ok(vec![Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        }])
    }
}

impl BlockWrite for RawFile {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| Error::io(offset, e))
    }

    fn flush(&self) -> Result<()> {
        self.check_writable()?;
        self.file.sync_data().map_err(|e| Error::io(0, e))
    }

    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, len)?;
        let flags = match mode {
            ZeroMode::MayUnmap => FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            ZeroMode::KeepAllocated => FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        };
        if self.try_fallocate(flags, offset, len)? {
            return Ok(());
        }
        if mode == ZeroMode::MayUnmap {
            // Some filesystems can zero a range but not punch it.
            let keep = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
            if self.try_fallocate(keep, offset, len)? {
                return Ok(());
            }
        }
        tracing::debug!(offset, len, "fallocate unsupported, writing zero buffers");
        write_zero_buffers(self, offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, len)?;
        // Discard is advisory: if holes cannot be punched, leaving the data is allowed.
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        self.try_fallocate(flags, offset, len).map(|_| ())
    }
}

/// Writes zero buffers over `offset..offset+len` in bounded chunks.
fn write_zero_buffers(dev: &RawFile, offset: u64, len: u64) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).map_or(CHUNK, |rest| rest.min(CHUNK));
        // OK to slice: n <= CHUNK == zeros.len().
        let at = offset + done;
        dev.file
            .write_all_at(&zeros[..n], at)
            .map_err(|e| Error::io(at, e))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sparse_file(size: u64, data: &[(u64, &[u8])]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        for (at, bytes) in data {
            f.as_file().write_all_at(bytes, *at).unwrap();
        }
        f.flush().unwrap();
        f
    }

    #[test]
    fn reads_writes_and_bounds() {
        let f = sparse_file(8192, &[(100, b"hello")]);
        let ro = RawFile::open(f.path(), Access::ReadOnly).unwrap();
        assert_eq!(ro.size(), 8192);
        assert_eq!(ro.access(), Access::ReadOnly);
        assert!(!ro.is_block_device());
        let mut b = [0u8; 5];
        ro.read_exact_at(100, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(matches!(
            ro.read_exact_at(8190, &mut b),
            Err(Error::OutOfBounds {
                offset: 8190,
                len: 5,
                size: 8192
            })
        ));
        assert!(matches!(ro.write_all_at(0, b"x"), Err(Error::ReadOnly)));
        assert!(matches!(ro.flush(), Err(Error::ReadOnly)));
        assert!(matches!(ro.discard(0, 512), Err(Error::ReadOnly)));
        assert!(matches!(
            ro.write_zeroes(0, 512, ZeroMode::MayUnmap),
            Err(Error::ReadOnly)
        ));

        let rw = RawFile::open(f.path(), Access::ReadWrite).unwrap();
        rw.write_all_at(8187, b"world").unwrap();
        rw.flush().unwrap();
        ro.read_exact_at(8187, &mut b).unwrap();
        assert_eq!(&b, b"world");
        // Writes never grow the file.
        assert!(matches!(
            rw.write_all_at(8190, b"toolong"),
            Err(Error::OutOfBounds { .. })
        ));
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), 8192);
    }

    #[test]
    fn extents_follow_holes_and_zeroing_punches() {
        const MIB: u64 = 1 << 20;
        let f = sparse_file(4 * MIB, &[(MIB, &[1u8; 4096]), (3 * MIB, &[2u8; 4096])]);
        let rw = RawFile::open(f.path(), Access::ReadWrite).unwrap();
        let map = rw.extents(0, 4 * MIB).unwrap();
        // tmpfs/ext4/xfs all report the holes; a filesystem without SEEK_HOLE says all data.
        if map.len() == 1 {
            eprintln!("skipping: filesystem does not report holes");
            return;
        }
        assert_eq!(
            map[0],
            Extent {
                offset: 0,
                len: MIB,
                kind: ExtentKind::Hole
            }
        );
        assert_eq!(map[1].offset, MIB);
        assert_eq!(map[1].kind, ExtentKind::Data);
        assert!(map[1].len >= 4096);
        let last = map.last().unwrap();
        assert_eq!(last.offset + last.len, 4 * MIB);
        // The map covers the range exactly, in order.
        let mut at = 0;
        for e in &map {
            assert_eq!(e.offset, at);
            at += e.len;
        }
        // A sub-range starts and ends where asked.
        let sub = rw.extents(MIB + 100, 200).unwrap();
        assert_eq!(
            sub,
            vec![Extent {
                offset: MIB + 100,
                len: 200,
                kind: ExtentKind::Data
            }]
        );

        rw.write_zeroes(MIB, 4096, ZeroMode::MayUnmap).unwrap();
        let mut b = [9u8; 4096];
        rw.read_exact_at(MIB, &mut b).unwrap();
        assert_eq!(b, [0u8; 4096]);
        let after = rw.extents(0, 2 * MIB).unwrap();
        assert_eq!(
            after,
            vec![Extent {
                offset: 0,
                len: 2 * MIB,
                kind: ExtentKind::Hole
            }]
        );

        rw.write_zeroes(3 * MIB, 4096, ZeroMode::KeepAllocated)
            .unwrap();
        rw.read_exact_at(3 * MIB, &mut b).unwrap();
        assert_eq!(b, [0u8; 4096]);

        rw.write_all_at(0, &[5u8; 4096]).unwrap();
        rw.discard(0, 4096).unwrap();
        assert!(matches!(
            rw.discard(4 * MIB, 1),
            Err(Error::OutOfBounds { .. })
        ));
        assert!(rw.extents(0, 0).unwrap().is_empty());
    }

    #[test]
    fn zero_buffer_fallback_writes_zeroes() {
        let f = sparse_file(3 << 20, &[(0, &[7u8; 4096])]);
        let rw = RawFile::open(f.path(), Access::ReadWrite).unwrap();
        rw.write_all_at((1 << 20) - 10, &[7u8; 20]).unwrap();
        write_zero_buffers(&rw, 2, (2 << 20) + 5).unwrap();
        let mut b = [1u8; 4];
        rw.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [7, 7, 0, 0]);
        rw.read_exact_at((1 << 20) - 2, &mut b).unwrap();
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn push_extent_merges_touching_runs_of_one_kind() {
        let mut v = Vec::new();
        push_extent(&mut v, 0, 10, ExtentKind::Data);
        push_extent(&mut v, 10, 5, ExtentKind::Data);
        push_extent(&mut v, 15, 0, ExtentKind::Hole);
        push_extent(&mut v, 15, 5, ExtentKind::Hole);
        push_extent(&mut v, 30, 5, ExtentKind::Hole);
        assert_eq!(
            v,
            vec![
                Extent {
                    offset: 0,
                    len: 15,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: 15,
                    len: 5,
                    kind: ExtentKind::Hole
                },
                Extent {
                    offset: 30,
                    len: 5,
                    kind: ExtentKind::Hole
                },
            ]
        );
    }

    #[test]
    fn missing_file_is_io_error() {
        let err = RawFile::open("/nonexistent/rehost-test", Access::ReadOnly).unwrap_err();
        assert!(matches!(err, Error::Io { offset: 0, .. }));
    }
}
