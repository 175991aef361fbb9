//! Test doubles for every crate's tests (house style S16): devices that fail or count on purpose.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::block::BlockRead;
use crate::{Error, Result};

/// Wraps a device and fails every read that touches one of the chosen byte ranges.
pub struct FaultyDisk<D> {
    inner: D,
    bad: Vec<std::ops::Range<u64>>,
}

impl<D: BlockRead> FaultyDisk<D> {
    /// Reads overlapping any range in `bad` fail with an I/O error.
    pub fn new(inner: D, bad: Vec<std::ops::Range<u64>>) -> Self {
        Self { inner, bad }
    }
}

impl<D: BlockRead> BlockRead for FaultyDisk<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.saturating_add(buf.len() as u64);
        if self.bad.iter().any(|r| r.start < end && offset < r.end) {
            return Err(Error::io(
                offset,
                std::io::Error::other("injected fault (FaultyDisk)"),
            ));
        }
        self.inner.read_exact_at(offset, buf)
    }
}

/// Wraps a device and counts reads and bytes read, so tests can check that parsing stays bounded.
pub struct CountingDisk<D> {
    inner: D,
    reads: AtomicU64,
    bytes: AtomicU64,
    log: Mutex<Vec<(u64, usize)>>,
}

impl<D: BlockRead> CountingDisk<D> {
    /// Counts the reads made through it.
    pub fn new(inner: D) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        }
    }
    /// Number of reads so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    /// Number of bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
    /// Every read made, as `(offset, len)`.
    pub fn log(&self) -> Vec<(u64, usize)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl<D: BlockRead> BlockRead for CountingDisk<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((offset, buf.len()));
        self.inner.read_exact_at(offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDisk;

    #[test]
    fn faulty_fails_only_in_bad_ranges() {
        let d = FaultyDisk::new(MemDisk::from_vec(vec![1; 1024]), vec![512..520, 4096..4100]);
        let mut b = [0u8; 8];
        d.read_exact_at(0, &mut b).unwrap();
        assert!(matches!(
            d.read_exact_at(510, &mut b),
            Err(Error::Io { offset: 510, .. })
        ));
        d.read_exact_at(520, &mut b).unwrap();
    }

    #[test]
    fn counting_counts() {
        let d = CountingDisk::new(MemDisk::from_vec(vec![0; 64]));
        let mut b = [0u8; 8];
        d.read_exact_at(0, &mut b).unwrap();
        d.read_exact_at(8, &mut b).unwrap();
        assert_eq!((d.reads(), d.bytes()), (2, 16));
        assert_eq!(d.log(), vec![(0, 8), (8, 8)]);
    }
}
