//! Guest filesystems behind one trait, and guest-root path resolution.
//!
//! Every backend implements [`FsRead`], a small path-based trait whose paths are always
//! *canonical*: absolute, normalised, and free of symlinks in every directory component. Callers
//! never hand user or guest paths to a backend directly; they go through [`resolve`], which walks
//! one component at a time, follows symlinks *inside the guest root only* (an absolute link or
//! `..` can never climb above `/`), and gives up after [`MAX_SYMLINK_HOPS`] links.
//!
//! Backends: ext2/3/4 ([`ext4`], via `ext4-view`), NTFS ([`ntfs`], via the `ntfs` crate),
//! FAT12/16/32 ([`fat`], via `fatfs`), XFS ([`xfs`], our own reader). [`probe`] recognises these and
//! also btrfs, swap, LUKS, LVM PVs, md RAID members and BitLocker volumes without mounting anything.
//!
//! # Example
//! ```
//! use guestfs::GuestPath;
//! let p = GuestPath::parse(b"/etc/../etc//fstab")?;
//! assert_eq!(p.to_string(), "/etc/fstab");
//! # Ok::<(), guestfs::Error>(())
//! ```

#![forbid(unsafe_code)]

mod error;
pub mod ext4;
pub mod fat;
#[doc(hidden)]
pub mod fuzzing;
pub mod mount;
pub mod ntfs;
mod path;
pub mod probe;
mod resolve;
mod rw;
pub mod write;
pub mod xfs;

pub use error::{Error, Result};
pub use mount::Mounts;
pub use path::{GuestPath, MAX_NAME_LEN, MAX_PATH_LEN};
pub use probe::{FsKind, Probe, open, probe};
pub use resolve::{DEFAULT_READ_CAP, Follow, FsReadExt, MAX_SYMLINK_HOPS, resolve};
pub use rw::{MountsRw, open_rw, open_rw_kind};

/// The type of a directory entry or inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
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
    /// Anything else the filesystem can store (NTFS reparse points we do not follow, ...).
    Other,
}

/// What `lstat` reports. Fields a filesystem does not store are zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The file's type; symlinks are reported as symlinks, never followed.
    pub file_type: FileType,
    /// Size in bytes (for symlinks, the target length).
    pub size: u64,
    /// Permission bits (and setuid/setgid/sticky), as in `st_mode & 0o7777`.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// The filesystem's own identifier of the file (inode number, MFT record number, ...).
    pub ino: u64,
    /// Number of hard links.
    pub nlink: u64,
}

/// One entry of a directory listing (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name, as stored (bytes; UTF-8 for NTFS and FAT long names).
    pub name: Vec<u8>,
    /// The entry's type.
    pub file_type: FileType,
}

/// Whether names in a filesystem compare case-sensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseSensitivity {
    /// Linux filesystems.
    Sensitive,
    /// NTFS (through its upcase table) and FAT.
    Insensitive,
}

/// Facts about a mounted-for-reading filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// The filesystem type.
    pub kind: FsKind,
    /// Volume label, if any.
    pub label: Option<String>,
    /// Volume UUID (or serial number, for NTFS and FAT) as the guest's tools print it.
    pub uuid: Option<String>,
    /// How names compare.
    pub case: CaseSensitivity,
}

/// Hard cap on entries returned by one `read_dir` (house style S12).
pub const MAX_DIR_ENTRIES: usize = 1 << 20;

/// A guest filesystem, readable by canonical path.
///
/// Every path given to these methods is canonical (see the crate docs): backends may assume no
/// directory component is a symlink, and must not follow a symlink in the last component.
pub trait FsRead: Send + Sync {
    /// Facts about the filesystem.
    fn info(&self) -> FsInfo;

    /// Metadata of `path`, not following a final symlink.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::NotADirectory`] for a file used as a directory, corruption.
    fn lstat(&self, path: &GuestPath) -> Result<Metadata>;

    /// The entries of the directory at `path`, at most [`MAX_DIR_ENTRIES`].
    ///
    /// # Errors
    /// [`Error::NotADirectory`], [`Error::NotFound`], [`Error::LimitExceeded`], corruption.
    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>>;

    /// The target of the symlink at `path`, as stored.
    ///
    /// # Errors
    /// [`Error::NotASymlink`], [`Error::NotFound`], corruption.
    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>>;

    /// Reads up to `buf.len()` bytes of the regular file at `path` from `offset`; returns how many
    /// were read (0 at or past the end).
    ///
    /// # Errors
    /// [`Error::IsADirectory`], [`Error::NotFound`], corruption.
    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize>;
}
