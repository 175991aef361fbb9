//! The block-device traits (house style S4): small, positional, cursor-free.
//!
//! Readers take `&self` and an offset so one device can be shared by many parsers and threads.
//! Optional powers (writing, zeroing, discarding, allocation maps) are separate traits or
//! default methods that say "everything is data".

use std::sync::Arc;

use crate::{Error, Result};

/// Whether a range of a device holds data or reads as zeroes without storage behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Allocated; contents must be read.
    Data,
    /// Unallocated (a hole); reads return zeroes.
    Hole,
    /// Allocated but known to read as zeroes (qcow2 zero clusters, pre-zeroed extents).
    Zero,
}

/// One run of the allocation map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Start, in bytes from the start of the device.
    pub offset: u64,
    /// Length in bytes (never zero).
    pub len: u64,
    /// What the run holds.
    pub kind: ExtentKind,
}

/// A readable block device: a raw file, a qcow2 image, an NBD export, a partition of one of them.
pub trait BlockRead: Send + Sync {
    /// Size of the device in bytes.
    fn size(&self) -> u64;

    /// Fills all of `buf` from `offset`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range passes [`BlockRead::size`]; [`Error::Io`] if the device
    /// fails; format-specific corruption as [`Error::Corrupt`].
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;

    /// The logical sector size the device reports (512 unless the backend knows better).
    fn logical_sector_size(&self) -> u32 {
        512
    }

    /// The allocation map of `offset..offset+len`, in order, covering the range exactly.
    ///
    /// The default says the whole range is data, which is always correct, only slower to copy.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`] if the range passes the end; backend errors otherwise.
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size(), offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![Extent {
            offset,
            len,
            kind: ExtentKind::Data,
        }])
    }
}

/// How [`BlockWrite::write_zeroes`] may produce zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroMode {
    /// The range must stay allocated (NBD `NO_HOLE`).
    KeepAllocated,
    /// The range may become a hole.
    MayUnmap,
}

/// A writable block device.
pub trait BlockWrite: BlockRead {
    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`], [`Error::Io`].
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()>;

    /// Makes every completed write durable.
    ///
    /// # Errors
    /// [`Error::Io`] if the device cannot flush.
    fn flush(&self) -> Result<()>;

    /// Makes `offset..offset+len` read as zeroes. The default writes zero buffers.
    ///
    /// # Errors
    /// As [`BlockWrite::write_all_at`].
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        let _ = mode;
        check_range(self.size(), offset, len)?;
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; usize::try_from(len.min(CHUNK)).unwrap_or(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK);
            // OK to index: n <= CHUNK == zeros.len() whenever len >= CHUNK, and n == len otherwise.
            let n_usize =
                usize::try_from(n).map_err(|_| Error::Usage("zero range too large".into()))?;
            self.write_all_at(offset + done, &zeros[..n_usize])?;
            done += n;
        }
        Ok(())
    }

    /// Tells the device that `offset..offset+len` is no longer needed. Contents afterwards are
    /// unspecified. The default does nothing, which is always allowed.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`], [`Error::ReadOnly`].
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        check_range(self.size(), offset, len)
    }
}

/// Checks that `offset..offset+len` lies inside a device of `size` bytes.
///
/// # Errors
/// [`Error::OutOfBounds`] if it does not, including when `offset + len` overflows.
pub fn check_range(size: u64, offset: u64, len: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds { offset, len, size }),
    }
}

/// Helpers every reader gets for free.
pub trait BlockReadExt: BlockRead {
    /// Reads `len` bytes at `offset` into a new buffer, refusing lengths above `cap`.
    ///
    /// # Errors
    /// [`Error::Usage`] if `len > cap`; otherwise as [`BlockRead::read_exact_at`].
    fn read_vec(&self, offset: u64, len: u64, cap: u64) -> Result<Vec<u8>> {
        if len > cap {
            return Err(Error::Usage(format!(
                "read of {len} bytes at {offset:#x} exceeds the {cap}-byte cap"
            )));
        }
        check_range(self.size(), offset, len)?;
        let n =
            usize::try_from(len).map_err(|_| Error::Usage(format!("length {len} too large")))?;
        let mut buf = vec![0u8; n];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads a fixed-size array at `offset`.
    ///
    /// # Errors
    /// As [`BlockRead::read_exact_at`].
    fn read_array<const N: usize>(&self, offset: u64) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads a plain-old-data structure at `offset` (house style S10, first step).
    ///
    /// # Errors
    /// As [`BlockRead::read_exact_at`].
    fn read_struct<T>(&self, offset: u64) -> Result<T>
    where
        T: zerocopy::FromBytes + zerocopy::IntoBytes + zerocopy::KnownLayout,
    {
        let mut value = T::new_zeroed();
        self.read_exact_at(offset, value.as_mut_bytes())?;
        Ok(value)
    }
}

impl<T: BlockRead + ?Sized> BlockReadExt for T {}

impl<T: BlockRead + ?Sized> BlockRead for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn logical_sector_size(&self) -> u32 {
        (**self).logical_sector_size()
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).extents(offset, len)
    }
}

impl<T: BlockRead + ?Sized> BlockRead for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_exact_at(offset, buf)
    }
    fn logical_sector_size(&self) -> u32 {
        (**self).logical_sector_size()
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        (**self).extents(offset, len)
    }
}

/// A shared, dynamically typed readable device.
pub type SharedRead = Arc<dyn BlockRead>;
/// A shared, dynamically typed writable device.
pub type SharedWrite = Arc<dyn BlockWrite>;
