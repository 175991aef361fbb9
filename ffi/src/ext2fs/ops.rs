//! What the `guestfs` read and write traits need beyond the whole-file operations of the parent
//! module: listing a directory, reading a symlink, reading and writing byte ranges, creating one
//! directory (not its parents), and writing the cached metadata back without closing.

use std::ffi::{c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{
    EXT4_ENCRYPT_FL, EXT4_INLINE_DATA_FL, Ext2Fs, FileHandle, Metadata, Name, NewFile, S_IFBLK,
    S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, dirent_name, is_dot, perm_bits,
    sys,
};
use crate::error::{Error, Result};

/// Most entries [`Ext2Fs::read_dir`] returns (house style S12; the same cap as `guestfs`).
pub const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Longest symlink target read: a slow symlink's target fills at most one block, and blocks are
/// at most 64 KiB (ext4 disk layout, "Symbolic Links" and "Blocks").
const SYMLINK_MAX: u64 = 65_536;
/// `i_block`, where a fast symlink keeps its target (ext4 disk layout, "Symbolic Links").
const I_BLOCK_LEN: usize = 60;

/// The type of an inode or directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
    /// A mode with no known file type.
    Unknown,
}

impl FileKind {
    /// The type encoded in an `i_mode` value.
    #[must_use]
    pub fn from_mode(mode: u32) -> Self {
        match u16::try_from(mode & u32::from(S_IFMT)).unwrap_or(0) {
            S_IFREG => Self::Regular,
            S_IFDIR => Self::Directory,
            S_IFLNK => Self::Symlink,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            _ => Self::Unknown,
        }
    }

    /// The type recorded in a directory entry (`EXT2_FT_*`, ext4 disk layout "Directory
    /// Entries"); `None` for 0 (no `filetype` feature) or an unknown value.
    fn from_dirent(ft: u8) -> Option<Self> {
        Some(match c_int::from(ft) {
            sys::EXT2_FT_REG_FILE => Self::Regular,
            sys::EXT2_FT_DIR => Self::Directory,
            sys::EXT2_FT_SYMLINK => Self::Symlink,
            sys::EXT2_FT_CHRDEV => Self::CharDevice,
            sys::EXT2_FT_BLKDEV => Self::BlockDevice,
            sys::EXT2_FT_FIFO => Self::Fifo,
            sys::EXT2_FT_SOCK => Self::Socket,
            _ => return None,
        })
    }
}

impl Metadata {
    /// The file's type.
    #[must_use]
    pub fn kind(&self) -> FileKind {
        FileKind::from_mode(self.mode)
    }
}

/// One entry of a directory (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The name as stored (any bytes but `/` and NUL).
    pub name: Vec<u8>,
    /// The inode it links.
    pub ino: u32,
    /// Its type: from the entry when the filesystem records types there, else from the inode.
    pub kind: FileKind,
}

impl Error {
    /// True when the filesystem ran out of blocks, inodes, directory or xattr space.
    #[must_use]
    pub fn is_no_space(&self) -> bool {
        matches!(
            self,
            Self::Ext2 { code, .. } if matches!(
                *code,
                sys::EXT2_ET_BLOCK_ALLOC_FAIL
                    | sys::EXT2_ET_INODE_ALLOC_FAIL
                    | sys::EXT2_ET_DIR_NO_SPACE
                    | sys::EXT2_ET_EA_NO_SPACE
                    | sys::ENOSPC
            )
        )
    }
}

/// What the `read_dir` callback collects.
struct Listing {
    entries: Vec<(Vec<u8>, u32, u8)>,
    truncated: bool,
}

impl FileHandle<'_> {
    fn seek_to(&self, offset: u64) -> Result<()> {
        let mut pos = 0u64;
        // SAFETY: live file handle, valid out-pointer.
        let code =
            unsafe { sys::ext2fs_file_llseek(self.f, offset, sys::EXT2_SEEK_SET, &raw mut pos) };
        self.fs.check("seek", "", code)
    }

    /// Reads into all of `buf` from the current position, stopping early at the end of file.
    fn read_into(&self, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0usize;
        while done < buf.len() {
            let rest = buf.get_mut(done..).unwrap_or_default();
            let want = rest.len().min(super::IO_CHUNK);
            let n = c_uint::try_from(want).unwrap_or(c_uint::MAX);
            let mut got: c_uint = 0;
            // SAFETY: live file handle; `rest` is valid for at least `n` bytes.
            let code =
                unsafe { sys::ext2fs_file_read(self.f, rest.as_mut_ptr().cast(), n, &raw mut got) };
            self.fs.check("read", "", code)?;
            if got == 0 {
                break;
            }
            done += usize::try_from(got).unwrap_or(usize::MAX).min(want);
        }
        Ok(done)
    }
}

impl Ext2Fs {
    /// The entries of the directory at `path` (not following a final symlink), at most
    /// [`MAX_DIR_ENTRIES`], in on-disk order.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::NotADirectory`]; [`Error::TooLarge`] beyond the cap;
    /// [`Error::Unsupported`] for an encrypted directory (its names are ciphertext); libext2fs
    /// and device errors.
    pub fn read_dir<'p>(&self, path: impl Into<Name<'p>>) -> Result<Vec<DirEntry>> {
        let path: Name<'p> = path.into();
        unsafe extern "C" fn collect(
            _dir: u32,
            _entry: c_int,
            dirent: *mut sys::DirEntry,
            _offset: c_int,
            _blocksize: c_int,
            _buf: *mut c_char,
            private: *mut c_void,
        ) -> c_int {
            catch_unwind(AssertUnwindSafe(|| {
                // Match '.' and '..' by name: inline-data directories report '..' as an
                // ordinary entry.
                // SAFETY: libext2fs passes a validated entry (or null).
                if private.is_null() || unsafe { is_dot(dirent) } {
                    return 0;
                }
                // SAFETY: not null (checked by is_dot); libext2fs validated the entry, and
                // `private` is our `Listing`, alive for the whole iteration.
                unsafe {
                    let ino = (*dirent).inode;
                    if ino == 0 {
                        return 0;
                    }
                    let l = &mut *private.cast::<Listing>();
                    if l.entries.len() >= MAX_DIR_ENTRIES {
                        l.truncated = true;
                        return sys::DIRENT_ABORT;
                    }
                    let ft = u8::try_from((*dirent).name_len >> 8).unwrap_or(0);
                    let name = dirent_name(dirent).unwrap_or_default().to_vec();
                    l.entries.push((name, ino, ft));
                }
                0
            }))
            .unwrap_or(sys::DIRENT_ABORT)
        }
        let ino = self.namei(path, false)?;
        let inode = self.read_inode(ino)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory { path: path.into() });
        }
        if inode.i_flags & EXT4_ENCRYPT_FL != 0 {
            return Err(Error::Unsupported(format!(
                "{path}: encrypted directory (i_flags {:#x})",
                inode.i_flags
            )));
        }
        let mut listing = Listing {
            entries: Vec::new(),
            truncated: false,
        };
        // SAFETY: live handle; the callback only touches `listing` through `private`, which
        // outlives the call.
        let code = unsafe {
            sys::ext2fs_dir_iterate2(
                self.fs,
                ino,
                // No flags: ext2fs_dir_iterate2 falls back to the inline-data walk itself.
                0,
                std::ptr::null_mut(),
                collect,
                (&raw mut listing).cast(),
            )
        };
        self.check("read directory", path, code)?;
        if listing.truncated {
            return Err(Error::TooLarge {
                what: "directory entry count",
                len: u64::try_from(MAX_DIR_ENTRIES)
                    .unwrap_or(u64::MAX)
                    .saturating_add(1),
                limit: u64::try_from(MAX_DIR_ENTRIES).unwrap_or(u64::MAX),
            });
        }
        listing
            .entries
            .into_iter()
            .map(|(name, ino, ft)| {
                let kind = match FileKind::from_dirent(ft) {
                    Some(k) => k,
                    None => FileKind::from_mode(u32::from(self.read_inode(ino)?.i_mode)),
                };
                Ok(DirEntry { name, ino, kind })
            })
            .collect()
    }

    /// The target of the symlink at `path`, as stored.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Usage`] if `path` is not a symlink; [`Error::TooLarge`]
    /// for a target longer than a block can hold; libext2fs and device errors.
    pub fn read_link<'p>(&self, path: impl Into<Name<'p>>) -> Result<Vec<u8>> {
        let path: Name<'p> = path.into();
        let ino = self.namei(path, false)?;
        let mut inode = self.read_inode(ino)?;
        if inode.i_mode & S_IFMT != S_IFLNK {
            return Err(Error::Usage(format!("{path}: not a symlink")));
        }
        let size = u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32);
        if size > SYMLINK_MAX {
            return Err(Error::TooLarge {
                what: "symlink target",
                len: size,
                limit: SYMLINK_MAX,
            });
        }
        if inode.i_flags & EXT4_INLINE_DATA_FL != 0 {
            return self.read_inline(ino, inode, SYMLINK_MAX, path);
        }
        // SAFETY: `inode` is a valid inode buffer (the large inode starts with the base one).
        if unsafe { sys::ext2fs_is_fast_symlink((&raw mut inode).cast()) } != 0 {
            let bytes: Vec<u8> = inode.i_block.iter().flat_map(|w| w.to_le_bytes()).collect();
            let len = usize::try_from(size).unwrap_or(usize::MAX).min(I_BLOCK_LEN);
            return Ok(bytes.get(..len).unwrap_or_default().to_vec());
        }
        let f = self.open_file(ino, path, false)?;
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        let got = f.read_into(&mut buf)?;
        f.close()?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Reads up to `buf.len()` bytes of the regular file at `path` from `offset`; returns how
    /// many were read (0 at or past the end). Holes read as zeros.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IsADirectory`]; [`Error::NotARegularFile`]; libext2fs and
    /// device errors.
    pub fn read_at<'p>(
        &self,
        path: impl Into<Name<'p>>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let path: Name<'p> = path.into();
        let ino = self.existing_file(path)?;
        let inode = self.read_inode(ino)?;
        if inode.i_flags & EXT4_INLINE_DATA_FL != 0 {
            let data = self.read_inline(ino, inode, u64::MAX, path)?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = data.get(start..).unwrap_or_default();
            let n = src.len().min(buf.len());
            buf.get_mut(..n)
                .unwrap_or_default()
                .copy_from_slice(src.get(..n).unwrap_or_default());
            return Ok(n);
        }
        let f = self.open_file(ino, path, false)?;
        let size = f.size()?;
        let left = size.saturating_sub(offset);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let got = if want == 0 {
            0
        } else {
            f.seek_to(offset)?;
            f.read_into(buf.get_mut(..want).unwrap_or_default())?
        };
        f.close()?;
        Ok(got)
    }

    /// Writes `data` at `offset` into the regular file at `path`, growing it as needed (a gap
    /// reads as zeros). Nothing changes for empty `data`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IsADirectory`]; [`Error::NotARegularFile`] (also for a
    /// symlink); [`Error::TooLarge`] if the end overflows; libext2fs and device errors.
    pub fn write_at<'p>(
        &mut self,
        path: impl Into<Name<'p>>,
        offset: u64,
        data: &[u8],
    ) -> Result<()> {
        let path: Name<'p> = path.into();
        let ino = self.existing_file(path)?;
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        if offset.checked_add(len).is_none() {
            return Err(Error::TooLarge {
                what: "file",
                len: offset,
                limit: u64::MAX - len,
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        self.expand_inline(ino, path)?;
        let f = self.open_file(ino, path, true)?;
        f.seek_to(offset)?;
        // ext2fs_file_write raises i_size itself when the write ends past it.
        f.write_all(data)?;
        f.close()?;
        self.touch(ino, Self::modified_now())
    }

    /// Creates the directory `path`; its parent must exist (directory symlinks on the way are
    /// followed inside this filesystem).
    ///
    /// # Errors
    /// [`Error::Exists`]; [`Error::NotFound`] for a missing parent; [`Error::NotADirectory`];
    /// [`Error::Usage`] for bad mode bits or the root; libext2fs and device errors.
    pub fn mkdir<'p>(&mut self, path: impl Into<Name<'p>>, attrs: &NewFile) -> Result<()> {
        let path: Name<'p> = path.into();
        perm_bits(attrs.mode)?;
        let (dir, name) = self.parent_of(path)?;
        if self.lookup(dir, name)?.is_some() {
            return Err(Error::Exists { path: path.into() });
        }
        self.make_dir(dir, name, path, attrs).map(|_| ())
    }

    /// Writes the superblock, group descriptors and bitmaps back and flushes the device, keeping
    /// the filesystem open: afterwards the device holds a consistent filesystem.
    ///
    /// # Errors
    /// [`Error::Device`] or [`Error::Ext2`].
    pub fn flush(&mut self) -> Result<()> {
        // SAFETY: live handle (only `close`, which consumes `self`, nulls it).
        let code = unsafe { sys::ext2fs_write_bitmaps(self.fs) };
        self.check("write bitmaps", "", code)?;
        // SAFETY: live handle; flags 0 also flushes the I/O channel, i.e. the device.
        let code = unsafe { sys::ext2fs_flush2(self.fs, 0) };
        self.check("flush", "", code)
    }
}
