//! A read-only XFS reader of our own.
//!
//! # Why our own
//! No maintained pure-Rust XFS crate fits: the ones on crates.io are young single-release
//! readers over `Read + Seek` (`xfs-core` 0.1, `lamxfs` 0.1 for `no_std` boot loaders), or
//! unrelated (`xfs` parses `/proc` statistics). We need our `BlockRead` devices, our error type,
//! explicit bounds on every loop and allocation (house style S11, S12), and only the subset a
//! migration tool reads: RHEL 7/8/9 root and `/boot` filesystems. That subset is small.
//!
//! # What is read
//! The on-disk format follows *XFS Algorithms & Data Structures* (the kernel's
//! `Documentation/filesystems/xfs`), one module per structure (house style S3):
//! - [`superblock`]: v4 and v5 superblocks; unknown incompatible features are refused by name.
//! - [`inode`]: version 1/2/3 cores, bigtime timestamps, 64-bit extent counters (nrext64).
//! - `bmap`: extent records inline or in a block-map B+tree (depth at most 8); holes and
//!   unwritten extents read as zeroes.
//! - `dir`: shortform, block, leaf and node directories (data blocks only; lookup is a linear
//!   scan, case-sensitive).
//! - `symlink`: local and remote targets (v5 "XSLM" headers).
//!
//! CRC32c of the superblock, inodes, btree, directory and symlink blocks is verified by default
//! ([`XfsOptions::verify_crc`]). The log is never replayed: a filesystem that was not cleanly
//! unmounted is read as it is on disk, as `xfs_db -r` would. Attribute forks and quota are
//! ignored; files on a realtime device are refused as unsupported. Unknown read-only-compatible
//! and log-incompatible features are ignored, because we neither write nor replay the log.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use guestfs::{FsRead, FsReadExt, xfs::XfsFs};
//! # fn dev() -> Arc<dyn disk::BlockRead> { unimplemented!() }
//! let fs = XfsFs::open(dev())?;
//! let fstab = fs.read_file(b"/etc/fstab", 1 << 20)?;
//! # Ok::<(), guestfs::Error>(())
//! ```

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use disk::{BlockRead, BlockReadExt};

use crate::{
    CaseSensitivity, DirEntry, Error, FileType, FsInfo, FsKind, FsRead, GuestPath, Metadata, Result,
};

mod bmap;
mod crc;
mod dir;
pub mod inode;
pub mod superblock;
mod symlink;
#[cfg(test)]
mod tests;

use bmap::ExtentMap;
use inode::Inode;
use superblock::Superblock;

/// The largest sector a superblock may claim (32 KiB); we read this much of sector 0.
const MAX_SECTOR: u64 = 1 << 15;

/// Options for [`XfsFs::open_with`] (house style S14).
#[derive(Debug, Clone, Copy)]
pub struct XfsOptions {
    verify_crc: bool,
}

impl Default for XfsOptions {
    fn default() -> Self {
        Self { verify_crc: true }
    }
}

impl XfsOptions {
    /// Whether v5 metadata checksums are verified (default: yes). Turning this off reads damaged
    /// but structurally sound metadata, and lets fuzzing reach deeper code.
    #[must_use]
    pub fn verify_crc(mut self, on: bool) -> Self {
        self.verify_crc = on;
        self
    }
}

/// The device and the validated geometry every structure is read against.
pub(crate) struct Volume {
    pub(crate) dev: Arc<dyn BlockRead>,
    pub(crate) sb: Superblock,
    pub(crate) verify_crc: bool,
}

impl Volume {
    /// Reads and validates inode `ino`.
    pub(crate) fn inode(&self, ino: u64) -> Result<Inode> {
        let at = self.sb.inode_location(ino)?;
        let buf = self
            .dev
            .read_vec(at, self.sb.inode_size() as u64, 1 << 11)?;
        Inode::parse(&self.sb, ino, at, &buf, self.verify_crc)
    }
}

/// A read-only XFS filesystem.
pub struct XfsFs {
    vol: Volume,
    /// The block map of the most recently read file, so sequential `read_at` calls on a large
    /// btree-mapped file do not walk the tree each time.
    last_map: Mutex<Option<(u64, Arc<ExtentMap>)>>,
    /// Name index of the most recently searched non-shortform directory (at most
    /// [`crate::MAX_DIR_ENTRIES`] names).
    last_dir: Mutex<Option<(u64, Arc<DirIndex>)>>,
}

/// Directory entry names to inode numbers.
type DirIndex = HashMap<Vec<u8>, u64>;

impl std::fmt::Debug for XfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XfsFs")
            .field("superblock", &self.vol.sb)
            .finish_non_exhaustive()
    }
}

fn ftype_to_file_type(ftype: u8) -> Option<FileType> {
    // XFS_DIR3_FT_* (spec "Directories", ftype).
    Some(match ftype {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::CharDevice,
        4 => FileType::BlockDevice,
        5 => FileType::Fifo,
        6 => FileType::Socket,
        7 => FileType::Symlink,
        _ => return None,
    })
}

impl XfsFs {
    /// Opens the XFS filesystem on `dev` with default options.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the superblock or root inode is invalid; [`Error::Unsupported`] for
    /// superblock versions before 4 and unknown incompatible features; I/O errors.
    pub fn open(dev: Arc<dyn BlockRead>) -> Result<Self> {
        Self::open_with(dev, XfsOptions::default())
    }

    /// Opens the XFS filesystem on `dev` with `options`.
    ///
    /// # Errors
    /// As [`XfsFs::open`].
    pub fn open_with(dev: Arc<dyn BlockRead>, options: XfsOptions) -> Result<Self> {
        let len = dev.size().min(MAX_SECTOR);
        if len < superblock::RAW_SB_LEN as u64 {
            return Err(Error::corrupt(
                "xfs superblock",
                0,
                format!("device of {len} bytes is too small"),
            ));
        }
        let sector = dev.read_vec(0, len, MAX_SECTOR)?;
        let sb = Superblock::parse(&sector, options.verify_crc)?;
        if sector.len() < 1usize << sb.sectlog {
            return Err(Error::corrupt(
                "xfs superblock",
                0,
                "device smaller than one sector",
            ));
        }
        tracing::debug!(?sb.version, blocksize = sb.block_size(), agcount = sb.agcount, "opened xfs");
        let fs = Self {
            vol: Volume {
                dev,
                sb,
                verify_crc: options.verify_crc,
            },
            last_map: Mutex::new(None),
            last_dir: Mutex::new(None),
        };
        let root = fs.vol.inode(fs.vol.sb.rootino)?;
        if root.file_type != FileType::Directory {
            return Err(Error::corrupt(
                format!("xfs inode {}", root.ino),
                0,
                "root inode is not a directory",
            ));
        }
        Ok(fs)
    }

    /// The validated superblock.
    #[must_use]
    pub fn superblock(&self) -> &Superblock {
        &self.vol.sb
    }

    /// Finds the inode `path` names, without following a final symlink.
    fn walk(&self, path: &GuestPath) -> Result<Inode> {
        let mut inode = self.vol.inode(self.vol.sb.rootino)?;
        let mut so_far = GuestPath::root();
        for name in path.components() {
            if inode.file_type != FileType::Directory {
                return Err(Error::NotADirectory {
                    path: so_far.to_string(),
                });
            }
            so_far = so_far.join_name(name)?;
            let ino = self.lookup(&inode, name)?.ok_or_else(|| Error::NotFound {
                path: so_far.to_string(),
            })?;
            inode = self.vol.inode(ino)?;
        }
        Ok(inode)
    }

    /// Finds `name` in directory `inode`. Shortform directories are scanned; larger ones are
    /// indexed once and the index of the last one kept, so walking many paths through the same
    /// directory does not rescan it (we do not use the on-disk hash index).
    fn lookup(&self, inode: &Inode, name: &[u8]) -> Result<Option<u64>> {
        if inode.format == inode::ForkFormat::Local {
            let mut found = None;
            dir::for_each_entry(&self.vol, inode, &mut |e| {
                if e.name == name {
                    found = Some(e.ino);
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            return Ok(found);
        }
        let mut cache = self
            .last_dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ino, index)) = cache.as_ref()
            && *ino == inode.ino
        {
            return Ok(index.get(name).copied());
        }
        let mut index = HashMap::new();
        dir::for_each_entry(&self.vol, inode, &mut |e| {
            index.entry(e.name).or_insert(e.ino);
            ControlFlow::Continue(())
        })?;
        let found = index.get(name).copied();
        *cache = Some((inode.ino, Arc::new(index)));
        Ok(found)
    }

    fn map_of(&self, inode: &Inode) -> Result<Arc<ExtentMap>> {
        let mut cache = self
            .last_map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ino, map)) = cache.as_ref()
            && *ino == inode.ino
        {
            return Ok(Arc::clone(map));
        }
        let map = Arc::new(ExtentMap::read(&self.vol, inode)?);
        *cache = Some((inode.ino, Arc::clone(&map)));
        Ok(map)
    }
}

impl FsRead for XfsFs {
    fn info(&self) -> FsInfo {
        let sb = &self.vol.sb;
        FsInfo {
            kind: FsKind::Xfs,
            label: (!sb.label.is_empty()).then(|| String::from_utf8_lossy(&sb.label).into_owned()),
            uuid: Some(sb.uuid_string()),
            case: CaseSensitivity::Sensitive,
        }
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        let i = self.walk(path)?;
        Ok(Metadata {
            file_type: i.file_type,
            size: i.size,
            mode: u32::from(i.mode & 0o7777),
            uid: i.uid,
            gid: i.gid,
            mtime: i.mtime,
            ino: i.ino,
            nlink: i.nlink,
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        let inode = self.walk(path)?;
        if inode.file_type != FileType::Directory {
            return Err(Error::NotADirectory {
                path: path.to_string(),
            });
        }
        let mut raw = Vec::new();
        dir::for_each_entry(&self.vol, &inode, &mut |e| {
            raw.push(e);
            ControlFlow::Continue(())
        })?;
        raw.into_iter()
            .map(|e| {
                let file_type = match ftype_to_file_type(e.ftype) {
                    Some(t) => t,
                    // No ftype on this filesystem (or an unknown one): ask the inode.
                    None => self.vol.inode(e.ino)?.file_type,
                };
                Ok(DirEntry {
                    name: e.name,
                    file_type,
                })
            })
            .collect()
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        let inode = self.walk(path)?;
        if inode.file_type != FileType::Symlink {
            return Err(Error::NotASymlink {
                path: path.to_string(),
            });
        }
        symlink::read_target(&self.vol, &inode)
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let inode = self.walk(path)?;
        match inode.file_type {
            FileType::Regular if inode.realtime => {
                return Err(Error::unsupported(
                    "xfs feature",
                    format!("realtime file (inode {})", inode.ino),
                ));
            }
            FileType::Regular => {}
            FileType::Directory => {
                return Err(Error::IsADirectory {
                    path: path.to_string(),
                });
            }
            _ => return Ok(0),
        }
        if offset >= inode.size {
            return Ok(0);
        }
        let n = usize::try_from(inode.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let map = self.map_of(&inode)?;
        // OK to slice: n <= buf.len().
        map.read_bytes(&self.vol, offset, &mut buf[..n])?;
        Ok(n)
    }
}

/// Fuzzing entry points (house style S17).
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use disk::BlockRead;

    use super::{XfsFs, XfsOptions};
    use crate::{FileType, FsRead, GuestPath};

    /// Most entries visited in one fuzz walk.
    const MAX_VISITS: usize = 10_000;
    /// Deepest directory walked.
    const MAX_DEPTH: usize = 16;
    /// Most bytes read from one file, and from all files together.
    const MAX_READ: u64 = 1 << 20;
    const MAX_TOTAL_READ: u64 = 4 << 20;

    /// Opens `data` as XFS (checksums off, to reach past them) and walks everything, never
    /// panicking.
    pub fn fuzz_xfs(data: &[u8]) {
        fuzz_dev(Arc::new(disk::MemDisk::from_vec(data.to_vec())));
    }

    /// As [`fuzz_xfs`], over any device.
    pub fn fuzz_dev(dev: Arc<dyn BlockRead>) {
        let Ok(fs) = XfsFs::open_with(dev, XfsOptions::default().verify_crc(false)) else {
            return;
        };
        let _ = fs.info();
        let mut stack = vec![(GuestPath::root(), 0usize)];
        // Directory loops (a damaged entry pointing at an ancestor) are walked once.
        let mut seen_dirs = std::collections::HashSet::from([fs.superblock().rootino]);
        let mut visits = 0usize;
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while let Some((dir, depth)) = stack.pop() {
            let Ok(entries) = fs.read_dir(&dir) else {
                continue;
            };
            for e in entries {
                visits += 1;
                if visits > MAX_VISITS {
                    return;
                }
                let Ok(p) = dir.join_name(&e.name) else {
                    continue;
                };
                let _ = fs.lstat(&p);
                match e.file_type {
                    FileType::Directory
                        if depth < MAX_DEPTH
                            && fs.lstat(&p).is_ok_and(|m| seen_dirs.insert(m.ino)) =>
                    {
                        stack.push((p, depth + 1));
                    }
                    FileType::Symlink => {
                        let _ = fs.read_link(&p);
                    }
                    FileType::Regular => {
                        let mut off = 0u64;
                        while off < MAX_READ && total < MAX_TOTAL_READ {
                            match fs.read_at(&p, off, &mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    off += n as u64;
                                    total += n as u64;
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
