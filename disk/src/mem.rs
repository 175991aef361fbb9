//! An in-memory device: for tests, for small scratch volumes, and as a fuzzing target.

use std::sync::RwLock;

use crate::block::{BlockRead, BlockWrite, check_range};
use crate::{Error, Result};

/// A growable-at-creation, fixed-size in-memory disk.
#[derive(Debug, Default)]
pub struct MemDisk {
    bytes: RwLock<Vec<u8>>,
}

impl MemDisk {
    /// A zero-filled disk of `size` bytes.
    ///
    /// # Errors
    /// [`Error::Usage`] if `size` does not fit in memory addressing.
    pub fn zeroed(size: u64) -> Result<Self> {
        let n =
            usize::try_from(size).map_err(|_| Error::Usage(format!("size {size} too large")))?;
        Ok(Self::from_vec(vec![0; n]))
    }
    /// A disk holding exactly `bytes`.
    #[must_use]
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        Self {
            bytes: RwLock::new(bytes),
        }
    }
    /// A copy of the whole contents.
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn span(offset: u64, len: usize) -> Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| Error::Usage("offset too large".into()))?;
    let end = start
        .checked_add(len)
        .ok_or_else(|| Error::Usage("range overflows".into()))?;
    Ok(start..end)
}

impl BlockRead for MemDisk {
    fn size(&self) -> u64 {
        self.bytes.read().unwrap_or_else(|p| p.into_inner()).len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bytes = self.bytes.read().unwrap_or_else(|p| p.into_inner());
        check_range(bytes.len() as u64, offset, buf.len() as u64)?;
        let src = bytes
            .get(span(offset, buf.len())?)
            .ok_or(Error::OutOfBounds {
                offset,
                len: buf.len() as u64,
                size: bytes.len() as u64,
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl BlockWrite for MemDisk {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut bytes = self.bytes.write().unwrap_or_else(|p| p.into_inner());
        let size = bytes.len() as u64;
        check_range(size, offset, buf.len() as u64)?;
        let dst = bytes
            .get_mut(span(offset, buf.len())?)
            .ok_or(Error::OutOfBounds {
                offset,
                len: buf.len() as u64,
                size,
            })?;
        dst.copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
