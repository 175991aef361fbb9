//! A `Read + Seek` cursor over a positional [`BlockRead`], for the `ntfs` crate.
//!
//! The `ntfs` crate wants a seekable reader; our devices are positional and shared (house style S4).
//! Each operation of [`super::NtfsFs`] creates its own cursor, so nothing is shared and no lock is
//! needed. The cursor also enforces an I/O budget per operation: the crate's own loops (attribute
//! lists, data runs) are bounded by on-disk sizes, but a crafted volume can make those sizes large
//! and self-referencing, and the budget turns such a walk into an error instead of a hang
//! (house style S12).

use std::io::{self, Read, Seek, SeekFrom};

use disk::BlockRead;

use crate::Error;

/// Most `read` calls one operation may make. Listing a directory of 100,000 entries needs about one
/// read per index record (4 KiB, ~30 entries) plus two per file record loaded; a million leaves a
/// wide margin while still stopping a crafted cycle within a second or two.
pub(super) const MAX_READS_PER_OP: u32 = 1 << 20;

/// Most bytes one operation may read beyond what the caller asked for (index records, file
/// records, the upcase table at open: 128 KiB).
pub(super) const MAX_OVERHEAD_BYTES_PER_OP: u64 = 1 << 30;

/// A seekable reader over a shared device, with an I/O budget.
pub(super) struct DevCursor<'a> {
    dev: &'a dyn BlockRead,
    pos: u64,
    reads_left: u32,
    bytes_left: u64,
    /// The first error the device (or the budget) produced; the `ntfs` crate only sees an opaque
    /// `io::Error`, so the typed error is kept here and preferred when the crate fails.
    failure: Option<Error>,
}

impl<'a> DevCursor<'a> {
    /// A cursor at offset 0 that may read `extra_bytes` beyond the fixed per-operation overhead.
    pub(super) fn new(dev: &'a dyn BlockRead, extra_bytes: u64) -> Self {
        Self {
            dev,
            pos: 0,
            reads_left: MAX_READS_PER_OP,
            bytes_left: MAX_OVERHEAD_BYTES_PER_OP.saturating_add(extra_bytes),
            failure: None,
        }
    }

    /// The typed error behind the last failed read, if any (taken, so it is reported once).
    pub(super) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    fn fail(&mut self, err: Error) -> io::Error {
        let msg = err.to_string();
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        io::Error::other(msg)
    }
}

impl Read for DevCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.reads_left == 0 {
            return Err(self.fail(Error::LimitExceeded {
                what: "ntfs reads in one operation".into(),
                limit: u64::from(MAX_READS_PER_OP),
            }));
        }
        self.reads_left -= 1;
        let size = self.dev.size();
        // Standard `Read` semantics at the end: 0 bytes. The crate turns that into an
        // unexpected-EOF error where it needs the bytes, and short data runs are caught by the
        // caller comparing against the stream size.
        let Some(remaining) = size.checked_sub(self.pos).filter(|&r| r > 0) else {
            return Ok(0);
        };
        let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n64 = u64::try_from(n).unwrap_or(u64::MAX);
        if n64 > self.bytes_left {
            return Err(self.fail(Error::LimitExceeded {
                what: "ntfs bytes read in one operation".into(),
                limit: MAX_OVERHEAD_BYTES_PER_OP,
            }));
        }
        self.bytes_left -= n64;
        // OK to index: n <= buf.len() by construction.
        let dst = &mut buf[..n];
        if let Err(e) = self.dev.read_exact_at(self.pos, dst) {
            return Err(self.fail(Error::Disk(e)));
        }
        // Cannot overflow: pos + n <= size.
        self.pos += n64;
        Ok(n)
    }
}

impl Seek for DevCursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.dev.size().checked_add_signed(d),
        };
        match new {
            Some(n) => {
                self.pos = n;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use disk::MemDisk;

    #[test]
    fn reads_short_at_end_and_zero_past_it() {
        let dev = MemDisk::from_vec((0..10u8).collect());
        let mut c = DevCursor::new(&dev, 0);
        c.seek(SeekFrom::Start(8)).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(c.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], &[8, 9]);
        assert_eq!(c.read(&mut buf).unwrap(), 0);
        c.seek(SeekFrom::Start(100)).unwrap();
        assert_eq!(c.read(&mut buf).unwrap(), 0);
        assert_eq!(c.seek(SeekFrom::End(-1)).unwrap(), 9);
        assert_eq!(c.seek(SeekFrom::Current(-9)).unwrap(), 0);
        assert!(c.seek(SeekFrom::Current(-1)).is_err());
        assert!(c.take_failure().is_none());
    }

    #[test]
    fn read_budget_is_enforced() {
        let dev = MemDisk::from_vec(vec![0; 16]);
        let mut c = DevCursor::new(&dev, 0);
        c.reads_left = 1;
        let mut buf = [0u8; 1];
        assert_eq!(c.read(&mut buf).unwrap(), 1);
        assert!(c.read(&mut buf).is_err());
        assert!(matches!(
            c.take_failure(),
            Some(Error::LimitExceeded { limit, .. }) if limit == u64::from(MAX_READS_PER_OP)
        ));
        let mut c = DevCursor::new(&dev, 0);
        c.bytes_left = 3;
        let mut buf = [0u8; 4];
        assert!(c.read(&mut buf).is_err());
        assert!(matches!(
            c.take_failure(),
            Some(Error::LimitExceeded { .. })
        ));
    }
}
