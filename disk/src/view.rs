//! A window onto part of another device: a partition, an LV segment, a filesystem inside a file.

use std::sync::Arc;

use crate::block::{BlockRead, BlockWrite, Extent, ZeroMode, check_range};
use crate::{Error, Result};

/// `len` bytes of `inner` starting at `start`, addressed from zero.
#[derive(Clone)]
pub struct Slice<D: ?Sized> {
    inner: Arc<D>,
    start: u64,
    len: u64,
}

impl<D: BlockRead + ?Sized> Slice<D> {
    /// A view of `inner[start..start+len]`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the window passes the end of `inner`.
    pub fn new(inner: Arc<D>, start: u64, len: u64) -> Result<Self> {
        check_range(inner.size(), start, len)?;
        Ok(Self { inner, start, len })
    }

    /// Where the window starts in the inner device.
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Translates a window offset to the inner device, checking the range.
    fn map(&self, offset: u64, len: u64) -> Result<u64> {
        check_range(self.len, offset, len)?;
        // Cannot overflow: start + self.len <= inner.size() was checked in new().
        Ok(self.start + offset)
    }
}

impl<D: BlockRead + ?Sized> BlockRead for Slice<D> {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.map(offset, buf.len() as u64)?;
        self.inner.read_exact_at(at, buf).map_err(|e| match e {
            Error::Io { source, .. } => Error::Io { offset, source },
            other => other,
        })
    }
    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let at = self.map(offset, len)?;
        let mut v = self.inner.extents(at, len)?;
        for e in &mut v {
            e.offset -= self.start;
        }
        Ok(v)
    }
}

impl<D: BlockWrite + ?Sized> BlockWrite for Slice<D> {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let at = self.map(offset, buf.len() as u64)?;
        self.inner.write_all_at(at, buf)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        let at = self.map(offset, len)?;
        self.inner.write_zeroes(at, len, mode)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        let at = self.map(offset, len)?;
        self.inner.discard(at, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDisk;

    #[test]
    fn slice_reads_its_window_and_refuses_outside() {
        let d = Arc::new(MemDisk::from_vec((0..=255u8).collect()));
        let s = Slice::new(d.clone(), 16, 32).unwrap();
        let mut b = [0u8; 4];
        s.read_exact_at(28, &mut b).unwrap();
        assert_eq!(b, [44, 45, 46, 47]);
        assert!(matches!(
            s.read_exact_at(30, &mut b),
            Err(Error::OutOfBounds {
                offset: 30,
                len: 4,
                size: 32
            })
        ));
        assert!(matches!(
            Slice::new(d, 250, 10),
            Err(Error::OutOfBounds {
                offset: 250,
                len: 10,
                size: 256
            })
        ));
    }
}
