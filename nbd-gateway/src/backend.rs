//! Sync storage behind an export: positional reads and writes, hole punching, allocation maps.
//!
//! Everything here blocks; the server calls it from `spawn_blocking` (house style S5).

use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use rustix::fs::{Advice, FallocateFlags, SeekFrom};
use rustix::io::Errno;

/// How [`ExportBackend::write_zeroes`] may make a range read as zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroRequest {
    /// The range may become a hole (NBD: `NBD_CMD_FLAG_NO_HOLE` clear).
    pub may_unmap: bool,
    /// Fail with [`ZeroOutcome::NotFast`] instead of writing zero bytes (`NBD_CMD_FLAG_FAST_ZERO`).
    pub fast_only: bool,
}

/// What [`ExportBackend::write_zeroes`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroOutcome {
    /// The range was deallocated (hole punched).
    Punched,
    /// The range was zeroed with the filesystem's zero-range operation (stays allocated).
    ZeroRange,
    /// The range was zeroed by writing zero bytes.
    Written,
    /// `fast_only` was asked and no fast method works here; nothing was changed.
    NotFast,
}

/// One run of an allocation map: `len` bytes that are all data or all hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Length in bytes (never zero).
    pub len: u64,
    /// True if the run is a hole (reads as zeroes, no storage behind it).
    pub hole: bool,
}

/// The storage of one export. Implementations are positional and hold no cursor, so one backend
/// is shared by every connection to the export.
pub trait ExportBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`. The caller has checked the range.
    ///
    /// # Errors
    /// The operating system's error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`. The caller has checked the range.
    ///
    /// # Errors
    /// The operating system's error.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable.
    ///
    /// # Errors
    /// The operating system's error.
    fn flush(&self) -> io::Result<()>;
    /// Deallocates a range if the storage can (NBD `TRIM` is a hint: doing nothing is allowed).
    ///
    /// # Errors
    /// The operating system's error.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes a range read as zeroes, by the cheapest method `req` allows.
    ///
    /// # Errors
    /// The operating system's error.
    fn write_zeroes(&self, offset: u64, len: u64, req: ZeroRequest) -> io::Result<ZeroOutcome>;
    /// The allocation map of `offset..offset+len`, at most `max_runs` runs; the runs start at
    /// `offset`, are contiguous, and may cover less than `len` when the cap is reached.
    ///
    /// # Errors
    /// The operating system's error.
    fn runs(&self, offset: u64, len: u64, max_runs: usize) -> io::Result<Vec<Run>>;
    /// A readahead hint (NBD `CACHE`).
    ///
    /// # Errors
    /// The operating system's error.
    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
    /// Called when a client disconnects: makes its writes visible to every other user of the
    /// storage (for example the file read by `qemu-img`). Durability is not implied: clients
    /// ask for it with FLUSH or FUA (spec: "NBD_CMD_FLUSH"), and a server shutdown flushes.
    /// The default does nothing, which is right for storage without caches of its own.
    ///
    /// # Errors
    /// The operating system's error.
    fn settle(&self) -> io::Result<()> {
        Ok(())
    }
}

/// Zero bytes written per call when a range must be zeroed literally.
const ZERO_CHUNK: usize = 1 << 20;

fn is_unsupported(e: Errno) -> bool {
    e == Errno::OPNOTSUPP || e == Errno::NOSYS || e == Errno::INVAL
}

/// A sparse raw file.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    size: u64,
}

impl FileBackend {
    /// Wraps an open file; its current length is the export size.
    ///
    /// # Errors
    /// If the file's metadata cannot be read.
    pub fn new(file: File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    fn write_zero_bytes(&self, offset: u64, len: u64) -> io::Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(ZERO_CHUNK as u64)).unwrap_or(ZERO_CHUNK);
            // OK to index: n <= ZERO_CHUNK == zeros.len().
            self.file.write_all_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

impl ExportBackend for FileBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file).map_err(io::Error::from)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match rustix::fs::fallocate(
            &self.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => Ok(()),
            // TRIM is advisory: a filesystem without hole punching simply keeps the data.
            Err(e) if is_unsupported(e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_zeroes(&self, offset: u64, len: u64, req: ZeroRequest) -> io::Result<ZeroOutcome> {
        if len == 0 {
            return Ok(ZeroOutcome::ZeroRange);
        }
        if req.may_unmap {
            match rustix::fs::fallocate(
                &self.file,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                offset,
                len,
            ) {
                Ok(()) => return Ok(ZeroOutcome::Punched),
                Err(e) if is_unsupported(e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match rustix::fs::fallocate(
            &self.file,
            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Ok(()) => return Ok(ZeroOutcome::ZeroRange),
            Err(e) if is_unsupported(e) => {}
            Err(e) => return Err(e.into()),
        }
        if req.fast_only {
            return Ok(ZeroOutcome::NotFast);
        }
        self.write_zero_bytes(offset, len)?;
        Ok(ZeroOutcome::Written)
    }

    fn runs(&self, offset: u64, len: u64, max_runs: usize) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end && out.len() < max_runs {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                // ENXIO: no data at or after `pos`.
                Err(Errno::NXIO) => end,
                // No SEEK_DATA support: everything is data.
                Err(e) if is_unsupported(e) => {
                    out.push(Run {
                        len: end - pos,
                        hole: false,
                    });
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let data = data.clamp(pos, end);
            if data > pos {
                out.push(Run {
                    len: data - pos,
                    hole: true,
                });
                pos = data;
                if pos >= end || out.len() >= max_runs {
                    break;
                }
            }
            let hole = match rustix::fs::seek(&self.file, SeekFrom::Hole(pos)) {
                Ok(h) => h,
                Err(Errno::NXIO) => end,
                Err(e) => return Err(e.into()),
            };
            // A concurrent write can move the hole; always make progress.
            let hole = hole.clamp(pos.saturating_add(1), end);
            out.push(Run {
                len: hole - pos,
                hole: false,
            });
            pos = hole;
        }
        Ok(out)
    }

    fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        rustix::fs::fadvise(&self.file, offset, NonZeroU64::new(len), Advice::WillNeed)
            .map_err(io::Error::from)
    }
}

/// An in-memory export (tests and fuzzing). Every byte is data.
#[derive(Debug)]
pub struct MemBackend {
    data: Mutex<Vec<u8>>,
    size: u64,
}

impl MemBackend {
    /// A zero-filled export of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self {
            data: Mutex::new(vec![0; size]),
            size: size as u64,
        }
    }

    /// A copy of the current contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned lock only means another thread panicked mid-copy; the bytes are still usable.
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
        let start =
            usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e as u64 <= self.size)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(start..end)
    }
}

impl ExportBackend for MemBackend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        let data = self.lock();
        let src = data
            .get(r)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let r = self.range(offset, buf.len())?;
        let mut data = self.lock();
        let dst = data
            .get_mut(r)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        dst.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn trim(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _req: ZeroRequest) -> io::Result<ZeroOutcome> {
        let n = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let r = self.range(offset, n)?;
        let mut data = self.lock();
        if let Some(dst) = data.get_mut(r) {
            dst.fill(0);
        }
        Ok(ZeroOutcome::Written)
    }

    fn runs(&self, offset: u64, len: u64, _max_runs: usize) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        Ok(if end > offset {
            vec![Run {
                len: end - offset,
                hole: false,
            }]
        } else {
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn file(size: u64) -> (tempfile::NamedTempFile, FileBackend) {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(size).unwrap();
        let b = FileBackend::new(f.reopen().unwrap()).unwrap();
        (f, b)
    }

    #[test]
    fn runs_follow_seek_data_and_hole() {
        let (_f, b) = file(4 << 20);
        assert_eq!(
            b.runs(0, 4 << 20, 100).unwrap(),
            vec![Run {
                len: 4 << 20,
                hole: true
            }]
        );
        b.write_at(&[1; 8192], 1 << 20).unwrap();
        assert_eq!(
            b.runs(0, 4 << 20, 100).unwrap(),
            vec![
                Run {
                    len: 1 << 20,
                    hole: true
                },
                Run {
                    len: 8192,
                    hole: false
                },
                Run {
                    len: (3 << 20) - 8192,
                    hole: true
                },
            ]
        );
        // Capped, and starting inside a run.
        assert_eq!(
            b.runs(4096, 4 << 20, 1).unwrap(),
            vec![Run {
                len: (1 << 20) - 4096,
                hole: true
            }]
        );
        assert_eq!(
            b.runs((1 << 20) + 4096, 100, 10).unwrap(),
            vec![Run {
                len: 100,
                hole: false
            }]
        );
        assert!(b.runs(4 << 20, 10, 10).unwrap().is_empty());
    }

    #[test]
    fn zeroing_uses_holes_or_zero_range_not_writes() {
        let (f, b) = file(1 << 20);
        b.write_at(&[9; 65536], 0).unwrap();
        let punch = ZeroRequest {
            may_unmap: true,
            fast_only: true,
        };
        assert_eq!(
            b.write_zeroes(0, 32768, punch).unwrap(),
            ZeroOutcome::Punched
        );
        let keep = ZeroRequest {
            may_unmap: false,
            fast_only: true,
        };
        assert_eq!(
            b.write_zeroes(32768, 32768, keep).unwrap(),
            ZeroOutcome::ZeroRange
        );
        let mut buf = vec![1u8; 65536];
        b.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, vec![0u8; 65536]);
        // The punched half is a hole, the zero-range half stays allocated.
        assert_eq!(
            b.runs(0, 32768, 10).unwrap(),
            vec![Run {
                len: 32768,
                hole: true
            }]
        );
        assert!(f.as_file().metadata().unwrap().blocks() >= 64);
        b.trim(32768, 32768).unwrap();
        b.flush().unwrap();
        b.cache(0, 4096).unwrap();
    }

    #[test]
    fn mem_backend_bounds() {
        let m = MemBackend::new(100);
        m.write_at(b"xyz", 97).unwrap();
        assert!(m.write_at(b"xyz", 98).is_err());
        let mut b = [0u8; 3];
        m.read_at(&mut b, 97).unwrap();
        assert_eq!(&b, b"xyz");
        assert!(m.read_at(&mut b, u64::MAX).is_err());
        m.write_zeroes(
            97,
            3,
            ZeroRequest {
                may_unmap: true,
                fast_only: false,
            },
        )
        .unwrap();
        assert_eq!(&m.contents()[97..], &[0, 0, 0]);
        assert_eq!(
            m.runs(90, 100, 5).unwrap(),
            vec![Run {
                len: 10,
                hole: false
            }]
        );
    }
}
