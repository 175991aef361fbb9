//! NTFS reading (being implemented; until then every open is refused as unsupported).

use std::sync::Arc;

use disk::BlockRead;

use crate::{DirEntry, Error, FsInfo, FsRead, GuestPath, Metadata, Result};

/// A read-only NTFS filesystem.
pub struct NtfsFs {
    _dev: Arc<dyn BlockRead>,
}

impl NtfsFs {
    /// Opens the NTFS filesystem on `dev`.
    ///
    /// # Errors
    /// Always [`Error::Unsupported`] for now.
    pub fn open(dev: Arc<dyn BlockRead>) -> Result<Self> {
        let _ = dev;
        Err(Error::unsupported("filesystem", "NTFS reading is not implemented yet"))
    }
}

impl FsRead for NtfsFs {
    fn info(&self) -> FsInfo {
        unreachable!("open() never succeeds")
    }
    fn lstat(&self, _path: &GuestPath) -> Result<Metadata> {
        Err(Error::unsupported("filesystem", "NTFS"))
    }
    fn read_dir(&self, _path: &GuestPath) -> Result<Vec<DirEntry>> {
        Err(Error::unsupported("filesystem", "NTFS"))
    }
    fn read_link(&self, _path: &GuestPath) -> Result<Vec<u8>> {
        Err(Error::unsupported("filesystem", "NTFS"))
    }
    fn read_at(&self, _path: &GuestPath, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
        Err(Error::unsupported("filesystem", "NTFS"))
    }
}
