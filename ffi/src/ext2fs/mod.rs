//! ext2/3/4 writing through libext2fs, with its I/O routed to a [`BlockWrite`] device.
//!
//! [`Ext2Fs::open`] checks the superblock itself first (no byte is written before the checks
//! pass): a journal that needs recovery, a filesystem not cleanly unmounted, one with recorded
//! errors or pending orphans is refused with [`Error::Refused`] naming the cause, unless
//! [`OpenOptions::force`] is set. libext2fs then refuses features it does not support
//! ([`Error::Unsupported`]).
//!
//! Paths are absolute guest paths, as bytes ([`Name`], built from `&str` or `&[u8]`: ext4 names
//! need not be UTF-8). They are resolved by libext2fs (`ext2fs_namei`) with the
//! filesystem's root as both root and working directory, so symlinks met on the way (at most
//! eight deep, libext2fs's limit) are followed inside this filesystem only and `..` never
//! leaves its root. `.` and `..` components are refused in our own paths. Operations never
//! follow a symlink in the *last* component: writing, appending or truncating through one is
//! refused ([`Error::NotARegularFile`]); `chmod`, `chown`, `utimens` and the xattr calls act on
//! the link itself.
//!
//! libext2fs parses the image's metadata in C. It is the reference implementation, hardened by
//! years of fuzzing, but it trusts the superblock's geometry and the group descriptors, which
//! `e2fsck` validates before using: [`Ext2Fs::open`] checks both first (the geometry in Rust,
//! the descriptors with `ext2fs_check_desc`) and refuses an inconsistent image with
//! [`Error::Corrupt`], releasing the handle without writing anything back.

mod geometry;
mod io;
mod ops;
mod sys;
#[cfg(test)]
mod tests;

pub use ops::{DirEntry, FileKind, MAX_DIR_ENTRIES};

/// Fuzzing entry points (house style S17): plain functions that must never panic.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs the superblock refusal checks on arbitrary bytes (zero-padded or cut to 1 KiB),
    /// with and without `force`.
    pub fn fuzz_superblock(data: &[u8]) {
        let mut sb = [0u8; super::SUPERBLOCK_LEN];
        let n = data.len().min(sb.len());
        sb[..n].copy_from_slice(&data[..n]);
        for opts in [
            super::OpenOptions::new(),
            super::OpenOptions::new().force(true),
        ] {
            let _ = super::check_superblock(&sb, &opts);
        }
        for device_size in [0, 4 << 20, u64::MAX] {
            let _ = super::geometry::check(&sb, device_size);
        }
    }
}

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use disk::block::BlockWrite;

use crate::error::{Error, Refusal, Result};
use sys::Errcode;

/// Byte offset of the primary superblock (ext4 disk layout, "The Super Block").
const SUPERBLOCK_OFFSET: u64 = 1024;
/// Bytes of the superblock we read.
const SUPERBLOCK_LEN: usize = 1024;
/// Superblock field offsets (ext4 disk layout, "The Super Block" table).
const S_MAGIC: usize = 0x38;
const S_STATE: usize = 0x3A;
const S_REV_LEVEL: usize = 0x4C;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_LAST_ORPHAN: usize = 0xE8;
/// `EXT2_SUPER_MAGIC`.
const EXT2_SUPER_MAGIC: u16 = 0xEF53;
/// `s_state` bits: cleanly unmounted, errors detected.
const EXT2_VALID_FS: u16 = 0x0001;
const EXT2_ERROR_FS: u16 = 0x0002;
/// `EXT3_FEATURE_INCOMPAT_RECOVER`: the journal needs replaying.
const INCOMPAT_RECOVER: u32 = 0x0004;
/// `EXT4_FEATURE_INCOMPAT_EA_INODE`: large xattr values live in their own inodes. libext2fs
/// 1.47.2 neither charges those to the owner's `i_blocks` nor frees them with the owner.
const INCOMPAT_EA_INODE: u32 = 0x0400;
/// `EXT3_FEATURE_INCOMPAT_EXTENTS`.
const INCOMPAT_EXTENTS: u32 = 0x0040;
/// `EXT4_FEATURE_RO_COMPAT_QUOTA`: quota usage is kept in hidden inodes, which libext2fs
/// (unlike e2fsck's private quota library) does not update.
const RO_COMPAT_QUOTA: u32 = 0x0100;
/// `EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT`: the orphan file holds entries.
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x1_0000;
/// `EXT2_DYNAMIC_REV` and the inode size of revision 0 (`EXT2_GOOD_OLD_INODE_SIZE`).
const EXT2_DYNAMIC_REV: u32 = 1;

/// Linux `S_IFMT` and the file types (`ext2fs.h` `LINUX_S_IF*`).
const S_IFMT: u16 = 0o170_000;
const S_IFSOCK: u16 = 0o140_000;
const S_IFLNK: u16 = 0o120_000;
const S_IFREG: u16 = 0o100_000;
const S_IFBLK: u16 = 0o060_000;
const S_IFDIR: u16 = 0o040_000;
const S_IFCHR: u16 = 0o020_000;
const S_IFIFO: u16 = 0o010_000;
/// Permission and set-id bits a caller may set.
const PERM_MASK: u32 = 0o7777;

/// Inode flags (`ext2_fs.h`): encrypted, fs-verity protected.
const EXT4_ENCRYPT_FL: u32 = 0x0000_0800;
const EXT4_VERITY_FL: u32 = 0x0010_0000;
/// `EXT4_INLINE_DATA_FL`: the file's data lives in `i_block` and the `system.data` xattr.
const EXT4_INLINE_DATA_FL: u32 = 0x1000_0000;
/// Highest directory link count before dir_nlink switches to 1 (`EXT4_LINK_MAX`, ext4 kernel).
const EXT4_LINK_MAX: u16 = 65_000;

/// Upper bound on inline data: `i_block` plus the rest of the largest inode (64 KiB blocks).
const INLINE_DATA_MAX: usize = 65_536;

/// Longest name in a directory entry (`EXT2_NAME_LEN`).
const NAME_MAX: usize = 255;
/// Longest guest path we accept (Linux `PATH_MAX`).
const PATH_MAX: usize = 4096;
/// Largest extended-attribute value (Linux `XATTR_SIZE_MAX`).
const XATTR_SIZE_MAX: usize = 65_536;
/// Bytes handed to libext2fs per file read/write call.
const IO_CHUNK: usize = 1 << 20;
/// Deepest directory tree walked when checking that a rename does not move a directory below
/// itself (a loop bound, house style S12).
const MAX_WALK_DEPTH: usize = 4096;
/// Times [`Ext2Fs`] retries `ext2fs_link` after growing a full directory.
const LINK_RETRIES: usize = 4;

/// How to open a filesystem for writing.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    force: bool,
}

impl OpenOptions {
    /// Defaults: refuse dirty filesystems.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Open even if the journal needs recovery, the filesystem was not cleanly unmounted, has
    /// recorded errors or pending orphans (writing then may lose the journal's transactions),
    /// or keeps quota usage (which then stays stale until e2fsck repairs it).
    #[must_use]
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// Ownership and permissions of a new file, directory or symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFile {
    /// Permission bits (`0o7777` at most; the file type is implied by the call).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl NewFile {
    /// A file owned by root with `mode`.
    #[must_use]
    pub fn file(mode: u32) -> Self {
        Self {
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory owned by root with `mode` (same as [`NewFile::file`], for readability).
    #[must_use]
    pub fn dir(mode: u32) -> Self {
        Self::file(mode)
    }

    /// The same with another owner.
    #[must_use]
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A timestamp: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Seconds since 1970-01-01 UTC (ext4 with extra fields stores 1901 ..= 2446; values beyond are clamped).
    pub secs: i64,
    /// Nanoseconds (`0..1_000_000_000`; kept only on inodes with extra fields).
    pub nanos: u32,
}

impl Timestamp {
    /// The current time.
    #[must_use]
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nanos: d.subsec_nanos(),
        }
    }
}

/// What [`Ext2Fs::metadata`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Inode number.
    pub ino: u32,
    /// `i_mode`: type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hard links.
    pub links: u16,
    /// Last access.
    pub atime: Timestamp,
    /// Last modification.
    pub mtime: Timestamp,
}

impl Metadata {
    /// True for a directory.
    #[must_use]
    pub fn is_dir(&self) -> bool {
        self.mode & u32::from(S_IFMT) == u32::from(S_IFDIR)
    }
    /// True for a regular file.
    #[must_use]
    pub fn is_file(&self) -> bool {
        self.mode & u32::from(S_IFMT) == u32::from(S_IFREG)
    }
    /// True for a symbolic link.
    #[must_use]
    pub fn is_symlink(&self) -> bool {
        self.mode & u32::from(S_IFMT) == u32::from(S_IFLNK)
    }
}

/// What we need to know from the superblock, read by us before libext2fs opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Features {
    extents: bool,
    inode_size: u16,
}

fn le16(sb: &[u8; SUPERBLOCK_LEN], at: usize) -> u16 {
    let mut b = [0u8; 2];
    // OK to index: every offset passed is a constant below SUPERBLOCK_LEN - 2.
    b.copy_from_slice(&sb[at..at + 2]);
    u16::from_le_bytes(b)
}

fn le32(sb: &[u8; SUPERBLOCK_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    // OK to index: every offset passed is a constant below SUPERBLOCK_LEN - 4.
    b.copy_from_slice(&sb[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The refusal checks on a raw superblock (house style S13).
fn check_superblock(sb: &[u8; SUPERBLOCK_LEN], opts: &OpenOptions) -> Result<Features> {
    let magic = le16(sb, S_MAGIC);
    if magic != EXT2_SUPER_MAGIC {
        return Err(Error::NotExt { found: magic });
    }
    let state = le16(sb, S_STATE);
    let incompat = le32(sb, S_FEATURE_INCOMPAT);
    let ro_compat = le32(sb, S_FEATURE_RO_COMPAT);
    let refusal = if incompat & INCOMPAT_RECOVER != 0 {
        Some(Refusal::JournalNeedsRecovery)
    } else if state & EXT2_ERROR_FS != 0 {
        Some(Refusal::ErrorsRecorded)
    } else if state & EXT2_VALID_FS == 0 {
        Some(Refusal::NotCleanlyUnmounted)
    } else if le32(sb, S_LAST_ORPHAN) != 0 || ro_compat & RO_COMPAT_ORPHAN_PRESENT != 0 {
        Some(Refusal::OrphansPending)
    } else {
        None
    };
    if let Some(r) = refusal {
        if opts.force {
            tracing::warn!(cause = %r, "forced open of a filesystem that would be refused");
        } else {
            return Err(Error::Refused(r));
        }
    }
    if incompat & INCOMPAT_EA_INODE != 0 {
        return Err(Error::Unsupported(
            "ea_inode feature: libext2fs 1.47 leaves xattr inodes unaccounted and leaks them"
                .into(),
        ));
    }
    if ro_compat & RO_COMPAT_QUOTA != 0 {
        if opts.force {
            tracing::warn!("writing a quota filesystem: usage stays stale until e2fsck runs");
        } else {
            return Err(Error::Unsupported(
                "quota feature: writes would leave quota usage stale (force to accept, then \
                 run e2fsck)"
                    .into(),
            ));
        }
    }
    let inode_size = if le32(sb, S_REV_LEVEL) >= EXT2_DYNAMIC_REV {
        le16(sb, S_INODE_SIZE)
    } else {
        128
    };
    Ok(Features {
        extents: incompat & INCOMPAT_EXTENTS != 0,
        inode_size,
    })
}

/// A guest path or file name as bytes: ext2/3/4 names are any bytes but `/` and NUL, so they
/// need not be UTF-8. Errors show it lossily. Built from `&str`, `&String`, `&[u8]` or `&Vec<u8>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name<'a>(&'a [u8]);

impl<'a> Name<'a> {
    /// The bytes.
    #[must_use]
    pub fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    fn len(self) -> usize {
        self.0.len()
    }

    fn is_empty(self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> From<&'a str> for Name<'a> {
    fn from(s: &'a str) -> Self {
        Self(s.as_bytes())
    }
}

impl<'a> From<&'a String> for Name<'a> {
    fn from(s: &'a String) -> Self {
        Self(s.as_bytes())
    }
}

impl<'a> From<&'a [u8]> for Name<'a> {
    fn from(s: &'a [u8]) -> Self {
        Self(s)
    }
}

impl<'a> From<&'a Vec<u8>> for Name<'a> {
    fn from(s: &'a Vec<u8>) -> Self {
        Self(s)
    }
}

impl From<Name<'_>> for String {
    fn from(n: Name<'_>) -> Self {
        String::from_utf8_lossy(n.0).into_owned()
    }
}

impl std::fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.0))
    }
}

impl std::fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&String::from_utf8_lossy(self.0), f)
    }
}

/// The validated components of an absolute guest path.
fn components<'a>(path: impl Into<Name<'a>>) -> Result<Vec<&'a [u8]>> {
    let path: Name<'a> = path.into();
    if path.as_bytes().first() != Some(&b'/') {
        return Err(Error::Usage(format!(
            "{path:?}: guest paths must be absolute"
        )));
    }
    if path.len() > PATH_MAX {
        return Err(Error::Usage(format!(
            "path of {} bytes exceeds {PATH_MAX}",
            path.len()
        )));
    }
    let mut out = Vec::new();
    for c in path
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
    {
        if c == b"." || c == b".." {
            return Err(Error::Usage(format!(
                "{path:?}: '.' and '..' components are not accepted"
            )));
        }
        if c.contains(&0) {
            return Err(Error::Usage(format!("{path:?}: NUL byte in path")));
        }
        if c.len() > NAME_MAX {
            return Err(Error::Usage(format!(
                "{path:?}: name of {} bytes exceeds {NAME_MAX}",
                c.len()
            )));
        }
        out.push(c);
    }
    Ok(out)
}

/// `/` followed by `comps` joined with `/`.
fn absolute(comps: &[&[u8]]) -> Vec<u8> {
    let mut p = vec![b'/'];
    p.extend(comps.join(&b'/'));
    p
}

fn cstring(s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Usage(format!("{:?}: NUL byte in name", Name(s))))
}

/// libext2fs's description of an error code.
fn describe(code: Errcode) -> String {
    // SAFETY: error_message returns a pointer to a NUL-terminated string, static for known
    // codes; unknown codes use a static buffer, so serialise and copy it at once.
    static TABLES: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers libext2fs's static error table with com_err; done once.
    TABLES.call_once(|| unsafe { sys::initialize_ext2_error_table() });
    let msg = {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _g = LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: see above; the pointer is read before the lock is released.
        unsafe {
            let p = sys::error_message(code);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    };
    if msg.is_empty() {
        format!("error {code}")
    } else {
        msg.to_lowercase()
    }
}

fn file_type(mode: u16) -> c_int {
    match mode & S_IFMT {
        S_IFREG => sys::EXT2_FT_REG_FILE,
        S_IFDIR => sys::EXT2_FT_DIR,
        S_IFLNK => sys::EXT2_FT_SYMLINK,
        S_IFCHR => sys::EXT2_FT_CHRDEV,
        S_IFBLK => sys::EXT2_FT_BLKDEV,
        S_IFIFO => sys::EXT2_FT_FIFO,
        S_IFSOCK => sys::EXT2_FT_SOCK,
        _ => 0,
    }
}

fn perm_bits(mode: u32) -> Result<u16> {
    if mode & !PERM_MASK != 0 {
        return Err(Error::Usage(format!(
            "mode {mode:#o} has bits outside {PERM_MASK:#o}"
        )));
    }
    // OK: masked to 12 bits above.
    u16::try_from(mode).map_err(|_| Error::Usage(format!("mode {mode:#o} out of range")))
}

fn lo16(v: u32) -> u16 {
    u16::try_from(v & 0xFFFF).unwrap_or(0)
}

fn hi16(v: u32) -> u16 {
    u16::try_from(v >> 16).unwrap_or(0)
}

/// Range of ext4 timestamps with extra fields (ext4 disk layout, "Inode Timestamps").
const TIME_MIN: i64 = -(1 << 31);
const TIME_MAX: i64 = 3 * (1 << 32) + (1 << 31) - 1;

/// ext4 time encoding: low 32 bits signed in the base field, two epoch bits and the
/// nanoseconds in the `_extra` field (ext4 disk layout, "Inode Timestamps").
fn encode_time(t: Timestamp) -> (u32, u32) {
    // Clamped to what the format can hold: -2^31 ..= 3 * 2^32 + 2^31 - 1 (1901 ..= 2446).
    let secs = t.secs.clamp(TIME_MIN, TIME_MAX);
    let t = Timestamp { secs, ..t };
    let lo = u32::try_from(t.secs.rem_euclid(1 << 32)).unwrap_or(0);
    let lo_signed = i64::from(lo.cast_signed());
    let epoch = u32::try_from(((t.secs - lo_signed) >> 32) & 3).unwrap_or(0);
    (lo, (t.nanos.min(999_999_999) << 2) | epoch)
}

fn decode_time(lo: u32, extra: Option<u32>) -> Timestamp {
    let base = i64::from(lo.cast_signed());
    match extra {
        Some(x) => Timestamp {
            secs: base + (i64::from(x & 3) << 32),
            nanos: x >> 2,
        },
        None => Timestamp {
            secs: base,
            nanos: 0,
        },
    }
}

/// Which timestamps to set on an inode.
#[derive(Clone, Copy)]
struct Stamp {
    atime: Option<Timestamp>,
    mtime: Option<Timestamp>,
    ctime: Option<Timestamp>,
}

/// Offsets (from the start of the large inode) where each `_extra` field ends.
const CTIME_EXTRA_END: usize = 0x88;
const MTIME_EXTRA_END: usize = 0x8C;
const ATIME_EXTRA_END: usize = 0x90;

/// An ext2/3/4 filesystem open for writing. Close it with [`Ext2Fs::close`] to see errors from
/// writing the superblock and bitmaps back; dropping it closes too and only logs them.
pub struct Ext2Fs {
    fs: *mut sys::Filsys,
    shared: Arc<io::Shared>,
    features: Features,
}

// SAFETY: libext2fs keeps no thread-local state; a filesystem handle may be used from any
// thread as long as one thread at a time does, which `&mut self` on every mutating call and
// the lack of `Sync` guarantee.
unsafe impl Send for Ext2Fs {}

impl std::fmt::Debug for Ext2Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext2Fs")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl Ext2Fs {
    /// Opens the ext2/3/4 filesystem on `dev` for writing.
    ///
    /// # Errors
    /// [`Error::NotExt`] without the superblock magic; [`Error::Refused`] for a dirty
    /// filesystem unless forced; [`Error::Unsupported`] for features libext2fs cannot write;
    /// [`Error::Corrupt`] for an inconsistent superblock geometry or group descriptors;
    /// [`Error::Device`] and [`Error::Ext2`] otherwise.
    pub fn open(dev: Arc<dyn BlockWrite>, opts: &OpenOptions) -> Result<Self> {
        let mut sb = [0u8; SUPERBLOCK_LEN];
        dev.read_exact_at(SUPERBLOCK_OFFSET, &mut sb)
            .map_err(|source| Error::Device {
                op: "read superblock".into(),
                source,
            })?;
        let features = check_superblock(&sb, opts)?;
        // libext2fs trusts the geometry; e2fsck checks it first, and so do we (see `geometry`).
        let geo = geometry::check(&sb, dev.size())?;
        let shared = io::Shared::new(dev);
        let reg = io::Registration::new(shared.clone());
        let mut fs: *mut sys::Filsys = std::ptr::null_mut();
        // SAFETY: the name is a live C string, the manager a static table of valid callbacks,
        // and `fs` a valid out-pointer.
        let code = unsafe {
            sys::ext2fs_open2(
                reg.name().as_ptr(),
                std::ptr::null(),
                sys::EXT2_FLAG_RW | sys::EXT2_FLAG_64BITS,
                0,
                0,
                io::manager(),
                &raw mut fs,
            )
        };
        // The channel holds its own reference now; the name is no longer needed.
        drop(reg);
        if code != 0 || fs.is_null() {
            if let Some(source) = shared.take_error() {
                return Err(Error::Device {
                    op: "open".into(),
                    source,
                });
            }
            return Err(match code {
                sys::EXT2_ET_UNSUPP_FEATURE | sys::EXT2_ET_RO_UNSUPP_FEATURE => {
                    Error::Unsupported(describe(code))
                }
                _ => Error::Ext2 {
                    op: "open".into(),
                    code,
                    message: describe(code),
                },
            });
        }
        let mut this = Self {
            fs,
            shared,
            features,
        };
        // The group descriptors say where each group's bitmaps and inode table are; libext2fs
        // follows them blindly, so check that they lie inside the filesystem and overlap neither
        // each other nor the superblocks and descriptor blocks (what e2fsck checks first too).
        // SAFETY: `fs` is the live handle just opened.
        let code = unsafe { sys::ext2fs_check_desc(this.fs) };
        if code != 0 {
            this.abandon();
            if let Some(source) = this.shared.take_error() {
                return Err(Error::Device {
                    op: "check group descriptors".into(),
                    source,
                });
            }
            return Err(Error::Corrupt {
                structure: "ext2/3/4 group descriptors",
                offset: geo.gdt_at,
                detail: describe(code).to_lowercase(),
            });
        }
        if let Err(e) = this.check_groups(&geo) {
            this.abandon();
            return Err(e);
        }
        // SAFETY: `fs` is the live handle just opened.
        let code = unsafe { sys::ext2fs_read_bitmaps(this.fs) };
        this.check("read bitmaps", "", code)?;
        Ok(this)
    }

    /// Writes the superblock, group descriptors and bitmaps back and releases the filesystem.
    ///
    /// # Errors
    /// [`Error::Device`] or [`Error::Ext2`] if flushing fails (the handle is released anyway).
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    /// Checks each group descriptor's checksum (with `gdt_csum` or `metadata_csum`; the kernel
    /// refuses to mount a filesystem whose checksums fail, `ext2fs_open2` does not check them)
    /// and, with group checksums, that `bg_itable_unused` does not exceed the group's inodes
    /// (libext2fs computes the used part of the inode table from it).
    fn check_groups(&self, geo: &geometry::Geometry) -> Result<()> {
        for g in 0..geo.groups {
            let corrupt = |detail: String| Error::Corrupt {
                structure: "ext2/3/4 group descriptors",
                offset: geo.gdt_at,
                detail,
            };
            // SAFETY: live handle; `g` is below the group count the checked superblock gives,
            // which is the count libext2fs computed from the same fields.
            if unsafe { sys::ext2fs_group_desc_csum_verify(self.fs, g) } == 0 {
                return Err(corrupt(format!(
                    "group {g}: descriptor checksum does not match"
                )));
            }
            if !geo.group_csum {
                // Without group checksums the field is unused (libext2fs and the kernel
                // ignore it), so garbage there is harmless.
                continue;
            }
            // SAFETY: as above.
            let unused = unsafe { sys::ext2fs_bg_itable_unused(self.fs, g) };
            if unused > geo.inodes_per_group {
                return Err(corrupt(format!(
                    "group {g}: bg_itable_unused {unused} out of range 0..={}",
                    geo.inodes_per_group
                )));
            }
        }
        Ok(())
    }

    /// Releases the handle without writing anything back (for an image refused after
    /// `ext2fs_open2`: nothing may be written to it, and its metadata is not to be trusted).
    fn abandon(&mut self) {
        let fs = std::mem::replace(&mut self.fs, std::ptr::null_mut());
        if !fs.is_null() {
            // SAFETY: `fs` is the live handle; it is not used again (the field is null now).
            unsafe { sys::ext2fs_free(fs) };
        }
    }

    fn close_inner(&mut self) -> Result<()> {
        let fs = std::mem::replace(&mut self.fs, std::ptr::null_mut());
        if fs.is_null() {
            return Ok(());
        }
        // SAFETY: `fs` is the live handle; it is not used again after this call.
        let code = unsafe { sys::ext2fs_close2(fs, 0) };
        if code != 0 {
            // ext2fs_close2 keeps the handle when flushing fails; free it so nothing leaks.
            // SAFETY: `fs` is still the live handle (close2 returned before freeing it).
            unsafe { sys::ext2fs_free(fs) };
        }
        self.check("close", "", code)
    }

    // ----- helpers -------------------------------------------------------------------------

    fn error<'p>(&self, op: &str, path: impl Into<Name<'p>>, code: Errcode) -> Error {
        let path: Name<'p> = path.into();
        let op = if path.is_empty() {
            op.to_string()
        } else {
            format!("{op} {path}")
        };
        if let Some(source) = self.shared.take_error() {
            return Error::Device { op, source };
        }
        let path = String::from(path);
        match code {
            sys::EXT2_ET_FILE_NOT_FOUND => Error::NotFound { path },
            sys::EXT2_ET_NO_DIRECTORY => Error::NotADirectory { path },
            sys::EXT2_ET_FILE_EXISTS => Error::Exists { path },
            _ => Error::Ext2 {
                op,
                code,
                message: describe(code),
            },
        }
    }

    fn check<'p>(&self, op: &str, path: impl Into<Name<'p>>, code: Errcode) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(self.error(op, path, code))
        }
    }

    fn namei(&self, path: Name<'_>, follow_last: bool) -> Result<u32> {
        let comps = components(path)?;
        if comps.is_empty() {
            return Ok(sys::EXT2_ROOT_INO);
        }
        let c = cstring(&comps.join(&b'/'))?;
        let mut ino = 0u32;
        // SAFETY: live handle, NUL-terminated relative path, valid out-pointer.
        let code = unsafe {
            if follow_last {
                sys::ext2fs_namei_follow(
                    self.fs,
                    sys::EXT2_ROOT_INO,
                    sys::EXT2_ROOT_INO,
                    c.as_ptr(),
                    &raw mut ino,
                )
            } else {
                sys::ext2fs_namei(
                    self.fs,
                    sys::EXT2_ROOT_INO,
                    sys::EXT2_ROOT_INO,
                    c.as_ptr(),
                    &raw mut ino,
                )
            }
        };
        self.check("resolve", path, code)?;
        Ok(ino)
    }

    /// The directory holding `path`'s last component, and that component.
    fn parent_of<'p>(&self, path: Name<'p>) -> Result<(u32, Name<'p>)> {
        let comps = components(path)?;
        let Some((name, dirs)) = comps.split_last() else {
            return Err(Error::Usage(format!(
                "{path:?}: the operation needs a path below /"
            )));
        };
        let dir = if dirs.is_empty() {
            sys::EXT2_ROOT_INO
        } else {
            self.namei(Name(&absolute(dirs)), true)?
        };
        let inode = self.read_inode(dir)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory {
                path: String::from(Name(&absolute(dirs))),
            });
        }
        Ok((dir, Name(name)))
    }

    fn lookup(&self, dir: u32, name: Name<'_>) -> Result<Option<u32>> {
        let c = cstring(name.as_bytes())?;
        let len = c_int::try_from(name.len())
            .map_err(|_| Error::Usage(format!("name of {} bytes", name.len())))?;
        let mut ino = 0u32;
        // SAFETY: live handle; `c` holds `len` bytes; a null buffer lets libext2fs allocate.
        let code = unsafe {
            sys::ext2fs_lookup(
                self.fs,
                dir,
                c.as_ptr(),
                len,
                std::ptr::null_mut(),
                &raw mut ino,
            )
        };
        match code {
            0 => Ok(Some(ino)),
            sys::EXT2_ET_FILE_NOT_FOUND => Ok(None),
            _ => Err(self.error("lookup", name, code)),
        }
    }

    fn read_inode(&self, ino: u32) -> Result<sys::Inode> {
        let mut inode = sys::Inode::default();
        // SAFETY: live handle; `inode` is a buffer of INODE_LARGE_SIZE bytes, as passed.
        let code = unsafe {
            sys::ext2fs_read_inode_full(
                self.fs,
                ino,
                &raw mut inode,
                c_int::try_from(sys::INODE_LARGE_SIZE).unwrap_or(128),
            )
        };
        self.check("read inode", &ino.to_string(), code)?;
        Ok(inode)
    }

    fn write_inode(&self, ino: u32, inode: &mut sys::Inode) -> Result<()> {
        // SAFETY: live handle; `inode` is a buffer of INODE_LARGE_SIZE bytes, as passed.
        // libext2fs merges it over the on-disk inode, so in-inode xattrs beyond it survive.
        let code = unsafe {
            sys::ext2fs_write_inode_full(
                self.fs,
                ino,
                inode,
                c_int::try_from(sys::INODE_LARGE_SIZE).unwrap_or(128),
            )
        };
        self.check("write inode", &ino.to_string(), code)
    }

    fn has_extra(&self, inode: &sys::Inode, end: usize) -> bool {
        let isize = usize::from(self.features.inode_size);
        isize > sys::GOOD_OLD_INODE_SIZE
            && sys::GOOD_OLD_INODE_SIZE + usize::from(inode.i_extra_isize) >= end
    }

    fn stamp(&self, inode: &mut sys::Inode, s: Stamp) {
        if let Some(t) = s.atime {
            let (lo, x) = encode_time(t);
            inode.i_atime = lo;
            if self.has_extra(inode, ATIME_EXTRA_END) {
                inode.i_atime_extra = x;
            }
        }
        if let Some(t) = s.mtime {
            let (lo, x) = encode_time(t);
            inode.i_mtime = lo;
            if self.has_extra(inode, MTIME_EXTRA_END) {
                inode.i_mtime_extra = x;
            }
        }
        if let Some(t) = s.ctime {
            let (lo, x) = encode_time(t);
            inode.i_ctime = lo;
            if self.has_extra(inode, CTIME_EXTRA_END) {
                inode.i_ctime_extra = x;
            }
        }
    }

    fn touch(&self, ino: u32, s: Stamp) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        self.stamp(&mut inode, s);
        self.write_inode(ino, &mut inode)
    }

    fn modified_now() -> Stamp {
        let now = Timestamp::now();
        Stamp {
            atime: None,
            mtime: Some(now),
            ctime: Some(now),
        }
    }

    fn changed_now() -> Stamp {
        Stamp {
            atime: None,
            mtime: None,
            ctime: Some(Timestamp::now()),
        }
    }

    /// Adds `name -> ino` to `dir`, growing the directory when it is full.
    fn link(&self, dir: u32, name: Name<'_>, ino: u32, ftype: c_int, path: Name<'_>) -> Result<()> {
        let c = cstring(name.as_bytes())?;
        let flags = self.read_inode(dir)?.i_flags;
        if flags & EXT4_ENCRYPT_FL != 0 {
            // A plaintext name in an encrypted directory would be garbage to the kernel.
            return Err(Error::Unsupported(format!(
                "{path}: parent directory is encrypted (i_flags {flags:#x})"
            )));
        }
        for _ in 0..LINK_RETRIES {
            // SAFETY: live handle, NUL-terminated name.
            let code = unsafe { sys::ext2fs_link(self.fs, dir, c.as_ptr(), ino, ftype) };
            if code != sys::EXT2_ET_DIR_NO_SPACE {
                return self.check("link", path, code);
            }
            let d = self.read_inode(dir)?;
            if d.i_flags & sys::EXT2_INDEX_FL != 0 {
                // libext2fs grows hash trees itself; a full tree at its depth limit is final.
                return Err(self.error("link", path, code));
            }
            // SAFETY: live handle.
            let code = unsafe { sys::ext2fs_expand_dir(self.fs, dir) };
            self.check("expand directory for", path, code)?;
        }
        Err(Error::Ext2 {
            op: format!("link {path}"),
            code: sys::EXT2_ET_DIR_NO_SPACE,
            message: describe(sys::EXT2_ET_DIR_NO_SPACE),
        })
    }

    fn unlink_entry(&self, dir: u32, name: Name<'_>, ino: u32, path: Name<'_>) -> Result<()> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: live handle, NUL-terminated name.
        let code = unsafe { sys::ext2fs_unlink(self.fs, dir, c.as_ptr(), ino, 0) };
        self.check("unlink", path, code)
    }

    fn new_inode(&self, dir: u32, mode: u16, path: Name<'_>) -> Result<u32> {
        let mut ino = 0u32;
        // SAFETY: live handle; a null map means the filesystem's inode bitmap.
        let code = unsafe {
            sys::ext2fs_new_inode(
                self.fs,
                dir,
                c_int::from(mode),
                std::ptr::null_mut(),
                &raw mut ino,
            )
        };
        self.check("allocate inode for", path, code)?;
        Ok(ino)
    }

    /// Frees an inode whose last link is gone: its xattr block, its blocks, its bitmap bit.
    fn release(&self, ino: u32, mut inode: sys::Inode, path: Name<'_>) -> Result<()> {
        let is_dir = inode.i_mode & S_IFMT == S_IFDIR;
        // SAFETY: live handle; `inode` is a large-inode buffer the call updates in place.
        let code = unsafe { sys::ext2fs_free_ext_attr(self.fs, ino, &raw mut inode) };
        self.check("free xattr block of", path, code)?;
        // SAFETY: live handle; `inode` is a valid inode buffer.
        if unsafe { sys::ext2fs_inode_has_valid_blocks2(self.fs, &raw mut inode) } != 0 {
            // SAFETY: live handle; `inode` is updated in place (extent tree, i_blocks); a null
            // block buffer lets libext2fs allocate its own.
            let code = unsafe {
                sys::ext2fs_punch(
                    self.fs,
                    ino,
                    &raw mut inode,
                    std::ptr::null_mut(),
                    0,
                    u64::MAX,
                )
            };
            self.check("free blocks of", path, code)?;
        }
        inode.i_links_count = 0;
        inode.i_dtime = encode_time(Timestamp::now()).0;
        self.write_inode(ino, &mut inode)?;
        // SAFETY: live handle.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.fs, ino, -1, c_int::from(is_dir)) };
        Ok(())
    }

    /// Drops one link of a non-directory inode, releasing it at zero.
    fn drop_link(&self, ino: u32, path: Name<'_>) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        inode.i_links_count = inode.i_links_count.saturating_sub(1);
        if inode.i_links_count == 0 {
            self.release(ino, inode, path)
        } else {
            self.stamp(&mut inode, Self::changed_now());
            self.write_inode(ino, &mut inode)
        }
    }

    /// One more or one fewer subdirectory in directory `ino`.
    fn adjust_links(&self, ino: u32, up: bool) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        let n = inode.i_links_count;
        // dir_nlink: a count of 1 means "too many to count" and stays 1, as in the kernel.
        inode.i_links_count = match (n, up) {
            (1, _) => 1,
            (n, true) if n.saturating_add(1) >= EXT4_LINK_MAX => 1,
            (n, true) => n + 1,
            (n, false) => n.saturating_sub(1).max(2),
        };
        self.stamp(&mut inode, Self::modified_now());
        self.write_inode(ino, &mut inode)
    }

    fn is_empty_dir(&self, ino: u32, path: Name<'_>) -> Result<bool> {
        unsafe extern "C" fn count(
            _dir: u32,
            entry: c_int,
            dirent: *mut sys::DirEntry,
            _offset: c_int,
            _blocksize: c_int,
            _buf: *mut c_char,
            private: *mut c_void,
        ) -> c_int {
            catch_unwind(AssertUnwindSafe(|| {
                // Inline-data directories report '..' as an ordinary entry: match by name.
                // SAFETY: libext2fs passes a validated entry (or null).
                if entry != sys::DIRENT_OTHER_FILE || private.is_null() || unsafe { is_dot(dirent) }
                {
                    return 0;
                }
                // SAFETY: libext2fs passes a valid entry and our `usize` counter.
                unsafe {
                    if (*dirent).inode != 0 {
                        *private.cast::<usize>() += 1;
                        return sys::DIRENT_ABORT;
                    }
                }
                0
            }))
            .unwrap_or(sys::DIRENT_ABORT)
        }
        let mut others = 0usize;
        // SAFETY: live handle; the callback only touches `others` through `private`, which
        // outlives the call.
        let code = unsafe {
            sys::ext2fs_dir_iterate2(
                self.fs,
                ino,
                // No flags: ext2fs_dir_iterate2 falls back to the inline-data walk itself
                // (passing DIRENT_FLAG_INCLUDE_INLINE_DATA here would misparse block dirs).
                0,
                std::ptr::null_mut(),
                count,
                (&raw mut others).cast(),
            )
        };
        self.check("read directory", path, code)?;
        Ok(others == 0)
    }

    fn set_dotdot(&self, dir: u32, parent: u32, path: Name<'_>) -> Result<()> {
        unsafe extern "C" fn repoint(
            _dir: u32,
            _entry: c_int,
            dirent: *mut sys::DirEntry,
            _offset: c_int,
            _blocksize: c_int,
            _buf: *mut c_char,
            private: *mut c_void,
        ) -> c_int {
            catch_unwind(AssertUnwindSafe(|| {
                // Match by name: inline-data directories report '..' as an ordinary entry.
                // SAFETY: libext2fs passes a validated entry (or null).
                if private.is_null() || unsafe { dirent_name(dirent) } != Some(b"..".as_slice()) {
                    return 0;
                }
                // SAFETY: libext2fs passes a valid entry; `private` is our `(u32, bool)`.
                unsafe {
                    let st = &mut *private.cast::<(u32, bool)>();
                    (*dirent).inode = st.0;
                    st.1 = true;
                }
                sys::DIRENT_CHANGED | sys::DIRENT_ABORT
            }))
            .unwrap_or(sys::DIRENT_ABORT)
        }
        let mut st = (parent, false);
        // SAFETY: live handle; the callback only touches `st` through `private`, which
        // outlives the call.
        let code = unsafe {
            sys::ext2fs_dir_iterate2(
                self.fs,
                dir,
                // No flags: ext2fs_dir_iterate2 falls back to the inline-data walk itself
                // (passing DIRENT_FLAG_INCLUDE_INLINE_DATA here would misparse block dirs).
                0,
                std::ptr::null_mut(),
                repoint,
                (&raw mut st).cast(),
            )
        };
        self.check("update '..' of", path, code)?;
        if st.1 {
            Ok(())
        } else {
            Err(Error::Ext2 {
                op: format!("update '..' of {path}"),
                code: 0,
                message: "directory has no '..' entry".into(),
            })
        }
    }

    fn open_file(&self, ino: u32, path: Name<'_>, write: bool) -> Result<FileHandle<'_>> {
        let mut f: *mut sys::File = std::ptr::null_mut();
        let flags = if write { sys::EXT2_FILE_WRITE } else { 0 };
        // SAFETY: live handle; a null inode makes libext2fs read it; `f` is a valid out-pointer.
        let code = unsafe {
            sys::ext2fs_file_open2(self.fs, ino, std::ptr::null_mut(), flags, &raw mut f)
        };
        self.check("open", path, code)?;
        Ok(FileHandle { fs: self, f })
    }

    fn regular_file(&self, ino: u32, path: Name<'_>) -> Result<()> {
        let inode = self.read_inode(ino)?;
        match inode.i_mode & S_IFMT {
            S_IFREG if inode.i_flags & (EXT4_ENCRYPT_FL | EXT4_VERITY_FL) != 0 => {
                Err(Error::Unsupported(format!(
                    "{path}: encrypted or fs-verity file (i_flags {:#x})",
                    inode.i_flags
                )))
            }
            S_IFREG => Ok(()),
            S_IFDIR => Err(Error::IsADirectory { path: path.into() }),
            _ => Err(Error::NotARegularFile { path: path.into() }),
        }
    }

    /// Moves an inline-data file's contents into a block, so the file I/O below never runs
    /// libext2fs's inline-data read/write paths, which corrupt memory and data before
    /// e2fsprogs 1.47.4 (upstream commits bc599a8b and 10d77615).
    fn expand_inline(&self, ino: u32, path: Name<'_>) -> Result<()> {
        let inode = self.read_inode(ino)?;
        if inode.i_flags & EXT4_INLINE_DATA_FL == 0 {
            return Ok(());
        }
        let size = u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32);
        // SAFETY: live handle.
        let code = unsafe { sys::ext2fs_inline_data_expand(self.fs, ino) };
        self.check("move inline data to a block for", path, code)?;
        // 1.47.2 writes the whole inline area (60 bytes and up) and sets that as the size:
        // put the real size back.
        let f = self.open_file(ino, path, true)?;
        f.set_size(size)?;
        f.close()
    }

    /// Reads an inline-data file without libext2fs's file I/O (see [`Ext2Fs::expand_inline`]).
    fn read_inline(
        &self,
        ino: u32,
        mut inode: sys::Inode,
        cap: u64,
        path: Name<'_>,
    ) -> Result<Vec<u8>> {
        let i_size = u64::from(inode.i_size) | (u64::from(inode.i_size_high) << 32);
        if i_size > cap {
            return Err(Error::TooLarge {
                what: "file",
                len: i_size,
                limit: cap,
            });
        }
        let mut size = 0usize;
        // SAFETY: live handle, valid out-pointer.
        let code = unsafe { sys::ext2fs_inline_data_size(self.fs, ino, &raw mut size) };
        self.check("inline data size of", path, code)?;
        // Inline data fits in one inode (i_block plus in-inode xattr space); a larger claim is
        // damage, not data (house style S12).
        let limit = INLINE_DATA_MAX.max(usize::from(self.features.inode_size));
        if size > limit {
            return Err(Error::Ext2 {
                op: format!("read inline data of {path}"),
                code: 0,
                message: format!("inline data size {size} exceeds {limit}"),
            });
        }
        let mut buf = vec![0u8; size];
        let mut got = 0usize;
        // SAFETY: live handle; `buf` holds the `size` bytes libext2fs reported, which is what
        // it copies (60 bytes of i_block plus the `system.data` value).
        let code = unsafe {
            sys::ext2fs_inline_data_get(
                self.fs,
                ino,
                &raw mut inode,
                buf.as_mut_ptr().cast(),
                &raw mut got,
            )
        };
        self.check("read inline data of", path, code)?;
        let keep = usize::try_from(i_size)
            .unwrap_or(usize::MAX)
            .min(got)
            .min(buf.len());
        buf.truncate(keep);
        Ok(buf)
    }

    fn existing_file(&self, path: Name<'_>) -> Result<u32> {
        let ino = self.namei(path, false)?;
        self.regular_file(ino, path)?;
        Ok(ino)
    }

    fn create_file(&self, path: Name<'_>, attrs: &NewFile) -> Result<u32> {
        let (dir, name) = self.parent_of(path)?;
        let mode = S_IFREG | perm_bits(attrs.mode)?;
        let ino = self.new_inode(dir, mode, path)?;
        self.link(dir, name, ino, sys::EXT2_FT_REG_FILE, path)?;
        // SAFETY: live handle; `ino` was just allocated and linked.
        unsafe { sys::ext2fs_inode_alloc_stats2(self.fs, ino, 1, 0) };
        let mut inode = sys::Inode {
            i_mode: mode,
            i_uid: lo16(attrs.uid),
            l_i_uid_high: hi16(attrs.uid),
            i_gid: lo16(attrs.gid),
            l_i_gid_high: hi16(attrs.gid),
            i_links_count: 1,
            ..sys::Inode::default()
        };
        let now = Timestamp::now();
        let (lo, _) = encode_time(now);
        inode.i_atime = lo;
        inode.i_mtime = lo;
        inode.i_ctime = lo;
        if self.features.extents {
            let mut h: *mut sys::ExtentHandle = std::ptr::null_mut();
            // SAFETY: live handle; with an all-zero i_block libext2fs writes an empty extent
            // header into `inode` and sets EXT4_EXTENTS_FL; the handle is freed right after.
            let code =
                unsafe { sys::ext2fs_extent_open2(self.fs, ino, &raw mut inode, &raw mut h) };
            self.check("initialise extents of", path, code)?;
            // SAFETY: `h` is the handle just opened and not used again.
            unsafe { sys::ext2fs_extent_free(h) };
        }
        // SAFETY: live handle; libext2fs reads the 128-byte base of `inode` and fills in the
        // extra fields (extra_isize, crtime) itself.
        let code = unsafe { sys::ext2fs_write_new_inode(self.fs, ino, &raw mut inode) };
        self.check("write new inode of", path, code)?;
        let mut inode = self.read_inode(ino)?;
        self.stamp(
            &mut inode,
            Stamp {
                atime: Some(now),
                mtime: Some(now),
                ctime: Some(now),
            },
        );
        self.write_inode(ino, &mut inode)?;
        Ok(ino)
    }

    /// Sets owner and group; and the permission bits too when `perms` is given.
    fn set_owner(&self, ino: u32, uid: u32, gid: u32, perms: Option<u16>) -> Result<()> {
        let mut inode = self.read_inode(ino)?;
        if let Some(p) = perms {
            inode.i_mode = (inode.i_mode & S_IFMT) | p;
        }
        inode.i_uid = lo16(uid);
        inode.l_i_uid_high = hi16(uid);
        inode.i_gid = lo16(gid);
        inode.l_i_gid_high = hi16(gid);
        self.write_inode(ino, &mut inode)
    }

    /// Creates directory `name` in `dir` (which must not hold it yet) with `attrs`.
    fn make_dir(&self, dir: u32, name: Name<'_>, path: Name<'_>, attrs: &NewFile) -> Result<u32> {
        let perms = perm_bits(attrs.mode)?;
        let ino = self.new_inode(dir, S_IFDIR | perms, path)?;
        let cname = std::ptr::null();
        // SAFETY: live handle; with a null name libext2fs builds the directory (inode,
        // first block, parent's link count) without linking it; we link it below.
        let code = unsafe { sys::ext2fs_mkdir(self.fs, dir, ino, cname) };
        self.check("mkdir", path, code)?;
        if let Err(e) = self.link(dir, name, ino, sys::EXT2_FT_DIR, path) {
            // Undo the unlinked directory so the bitmaps and counts stay consistent.
            let inode = self.read_inode(ino)?;
            self.release(ino, inode, path)?;
            self.adjust_links(dir, false)?;
            return Err(e);
        }
        self.set_owner(ino, attrs.uid, attrs.gid, Some(perms))?;
        let now = Timestamp::now();
        self.touch(
            ino,
            Stamp {
                atime: Some(now),
                mtime: Some(now),
                ctime: Some(now),
            },
        )?;
        self.touch(dir, Self::modified_now())?;
        Ok(ino)
    }

    // ----- public operations ---------------------------------------------------------------

    /// Creates `path` with `data`, or replaces the contents of the regular file there. A
    /// replaced file keeps its inode, so its owner, mode, links and xattrs (SELinux labels)
    /// stay; `attrs` applies only to a new file.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the parent is missing; [`Error::IsADirectory`] or
    /// [`Error::NotARegularFile`] (also for a symlink) at `path`; libext2fs and device errors,
    /// e.g. when the filesystem is full.
    pub fn write_file<'p>(
        &mut self,
        path: impl Into<Name<'p>>,
        data: &[u8],
        attrs: &NewFile,
    ) -> Result<()> {
        let path: Name<'p> = path.into();
        let (dir, name) = self.parent_of(path)?;
        let ino = match self.lookup(dir, name)? {
            Some(ino) => {
                self.regular_file(ino, path)?;
                self.expand_inline(ino, path)?;
                ino
            }
            None => self.create_file(path, attrs)?,
        };
        let f = self.open_file(ino, path, true)?;
        f.set_size(0)?;
        f.write_all(data)?;
        f.close()?;
        self.touch(ino, Self::modified_now())
    }

    /// Appends `data` to the regular file at `path`.
    ///
    /// # Errors
    /// As [`Ext2Fs::write_file`], and [`Error::NotFound`] if there is no file.
    pub fn append<'p>(&mut self, path: impl Into<Name<'p>>, data: &[u8]) -> Result<()> {
        let path: Name<'p> = path.into();
        let ino = self.existing_file(path)?;
        self.expand_inline(ino, path)?;
        let f = self.open_file(ino, path, true)?;
        f.seek_end()?;
        f.write_all(data)?;
        f.close()?;
        self.touch(ino, Self::modified_now())
    }

    /// Sets the size of the regular file at `path`, freeing blocks past it or leaving a hole.
    ///
    /// # Errors
    /// As [`Ext2Fs::append`].
    pub fn truncate<'p>(&mut self, path: impl Into<Name<'p>>, len: u64) -> Result<()> {
        let path: Name<'p> = path.into();
        let ino = self.existing_file(path)?;
        self.expand_inline(ino, path)?;
        let f = self.open_file(ino, path, true)?;
        f.set_size(len)?;
        f.close()?;
        self.touch(ino, Self::modified_now())
    }

    /// Reads the regular file at `path` (for verification), refusing files over `cap` bytes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] over `cap`; as [`Ext2Fs::append`] otherwise.
    pub fn read_file<'p>(&self, path: impl Into<Name<'p>>, cap: u64) -> Result<Vec<u8>> {
        let path: Name<'p> = path.into();
        let ino = self.existing_file(path)?;
        let inode = self.read_inode(ino)?;
        if inode.i_flags & EXT4_INLINE_DATA_FL != 0 {
            return self.read_inline(ino, inode, cap, path);
        }
        let f = self.open_file(ino, path, false)?;
        let size = f.size()?;
        if size > cap {
            return Err(Error::TooLarge {
                what: "file",
                len: size,
                limit: cap,
            });
        }
        let data = f.read_all(size)?;
        f.close()?;
        Ok(data)
    }

    /// Creates the directory `path` and any missing parents with `attrs`. Existing directories
    /// (or symlinks to directories) on the way are kept as they are.
    ///
    /// # Errors
    /// [`Error::NotADirectory`] if a component exists and is not a directory; libext2fs and
    /// device errors.
    pub fn mkdir_p<'p>(&mut self, path: impl Into<Name<'p>>, attrs: &NewFile) -> Result<()> {
        let path: Name<'p> = path.into();
        // Checked before anything is created.
        perm_bits(attrs.mode)?;
        let comps = components(path)?;
        let mut dir = sys::EXT2_ROOT_INO;
        let mut sofar: Vec<u8> = Vec::new();
        for name in comps {
            sofar.push(b'/');
            sofar.extend_from_slice(name);
            let name = Name(name);
            if let Some(ino) = self.lookup(dir, name)? {
                let target = if self.read_inode(ino)?.i_mode & S_IFMT == S_IFLNK {
                    self.namei(Name(&sofar), true)?
                } else {
                    ino
                };
                if self.read_inode(target)?.i_mode & S_IFMT != S_IFDIR {
                    return Err(Error::NotADirectory {
                        path: Name(&sofar).into(),
                    });
                }
                dir = target;
                continue;
            }
            dir = self.make_dir(dir, name, Name(&sofar), attrs)?;
        }
        Ok(())
    }

    /// Creates a symbolic link at `path` pointing to `target` (stored as given), owned by
    /// `attrs.uid`/`attrs.gid` (symlink permissions are always `0o777`).
    ///
    /// # Errors
    /// [`Error::Exists`] if `path` exists; libext2fs errors for a target longer than a block.
    pub fn symlink<'p>(
        &mut self,
        path: impl Into<Name<'p>>,
        target: impl Into<Name<'p>>,
        attrs: &NewFile,
    ) -> Result<()> {
        let path: Name<'p> = path.into();
        let target: Name<'p> = target.into();
        let (dir, name) = self.parent_of(path)?;
        if self.lookup(dir, name)?.is_some() {
            return Err(Error::Exists { path: path.into() });
        }
        let ctarget = cstring(target.as_bytes())?;
        let ino = self.new_inode(dir, S_IFLNK | 0o777, path)?;
        // SAFETY: live handle, NUL-terminated target; with a null name libext2fs writes the
        // inode (and its block) and marks it in use without linking it.
        let code =
            unsafe { sys::ext2fs_symlink(self.fs, dir, ino, std::ptr::null(), ctarget.as_ptr()) };
        self.check("symlink", path, code)?;
        if let Err(e) = self.link(dir, name, ino, sys::EXT2_FT_SYMLINK, path) {
            let inode = self.read_inode(ino)?;
            self.release(ino, inode, path)?;
            return Err(e);
        }
        self.set_owner(ino, attrs.uid, attrs.gid, None)?;
        self.touch(dir, Self::modified_now())
    }

    /// Removes the file, symlink or special file at `path` (not a directory).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IsADirectory`].
    pub fn unlink<'p>(&mut self, path: impl Into<Name<'p>>) -> Result<()> {
        let path: Name<'p> = path.into();
        let (dir, name) = self.parent_of(path)?;
        let ino = self
            .lookup(dir, name)?
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        if self.read_inode(ino)?.i_mode & S_IFMT == S_IFDIR {
            return Err(Error::IsADirectory { path: path.into() });
        }
        self.unlink_entry(dir, name, ino, path)?;
        self.drop_link(ino, path)?;
        self.touch(dir, Self::modified_now())
    }

    /// Removes the empty directory at `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::NotADirectory`]; [`Error::NotEmpty`].
    pub fn rmdir<'p>(&mut self, path: impl Into<Name<'p>>) -> Result<()> {
        let path: Name<'p> = path.into();
        let (dir, name) = self.parent_of(path)?;
        let ino = self
            .lookup(dir, name)?
            .ok_or_else(|| Error::NotFound { path: path.into() })?;
        let inode = self.read_inode(ino)?;
        if inode.i_mode & S_IFMT != S_IFDIR {
            return Err(Error::NotADirectory { path: path.into() });
        }
        if !self.is_empty_dir(ino, path)? {
            return Err(Error::NotEmpty { path: path.into() });
        }
        self.unlink_entry(dir, name, ino, path)?;
        self.release(ino, inode, path)?;
        self.adjust_links(dir, false)
    }

    /// Moves `from` to `to`, replacing a file at `to` (or an empty directory, when `from` is
    /// a directory), like rename(2).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::IsADirectory`]/[`Error::NotADirectory`] for a type
    /// mismatch; [`Error::NotEmpty`]; [`Error::Usage`] when moving a directory below itself.
    pub fn rename<'p>(&mut self, from: impl Into<Name<'p>>, to: impl Into<Name<'p>>) -> Result<()> {
        let from: Name<'p> = from.into();
        let to: Name<'p> = to.into();
        let (sdir, sname) = self.parent_of(from)?;
        let ino = self
            .lookup(sdir, sname)?
            .ok_or_else(|| Error::NotFound { path: from.into() })?;
        let (ddir, dname) = self.parent_of(to)?;
        if sdir == ddir && sname == dname {
            return Ok(());
        }
        let inode = self.read_inode(ino)?;
        let is_dir = inode.i_mode & S_IFMT == S_IFDIR;
        if is_dir {
            let mut cur = ddir;
            let mut steps = 0usize;
            while cur != sys::EXT2_ROOT_INO {
                if cur == ino {
                    return Err(Error::Usage(format!(
                        "cannot move {from} below itself ({to})"
                    )));
                }
                steps += 1;
                if steps > MAX_WALK_DEPTH {
                    return Err(Error::Usage(format!(
                        "{to}: directory tree deeper than {MAX_WALK_DEPTH}"
                    )));
                }
                cur = self
                    .lookup(cur, Name(b".."))?
                    .ok_or_else(|| Error::NotFound { path: to.into() })?;
            }
        }
        if let Some(old) = self.lookup(ddir, dname)? {
            if old == ino {
                return Ok(());
            }
            let old_inode = self.read_inode(old)?;
            let old_is_dir = old_inode.i_mode & S_IFMT == S_IFDIR;
            match (is_dir, old_is_dir) {
                (false, true) => return Err(Error::IsADirectory { path: to.into() }),
                (true, false) => return Err(Error::NotADirectory { path: to.into() }),
                (true, true) => {
                    if !self.is_empty_dir(old, to)? {
                        return Err(Error::NotEmpty { path: to.into() });
                    }
                    self.unlink_entry(ddir, dname, old, to)?;
                    self.release(old, old_inode, to)?;
                    self.adjust_links(ddir, false)?;
                }
                (false, false) => {
                    self.unlink_entry(ddir, dname, old, to)?;
                    self.drop_link(old, to)?;
                }
            }
        }
        self.link(ddir, dname, ino, file_type(inode.i_mode), to)?;
        self.unlink_entry(sdir, sname, ino, from)?;
        if is_dir && sdir != ddir {
            self.set_dotdot(ino, ddir, to)?;
            self.adjust_links(sdir, false)?;
            self.adjust_links(ddir, true)?;
        } else {
            self.touch(sdir, Self::modified_now())?;
            if sdir != ddir {
                self.touch(ddir, Self::modified_now())?;
            }
        }
        self.touch(ino, Self::changed_now())
    }

    /// Sets the permission bits of `path` (not following a final symlink).
    ///
    /// # Errors
    /// [`Error::Usage`] for bits outside `0o7777`; [`Error::NotFound`].
    pub fn chmod<'p>(&mut self, path: impl Into<Name<'p>>, mode: u32) -> Result<()> {
        let path: Name<'p> = path.into();
        let perms = perm_bits(mode)?;
        let ino = self.namei(path, false)?;
        let mut inode = self.read_inode(ino)?;
        inode.i_mode = (inode.i_mode & S_IFMT) | perms;
        self.stamp(&mut inode, Self::changed_now());
        self.write_inode(ino, &mut inode)
    }

    /// Sets the owner and group of `path` (not following a final symlink).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn chown<'p>(&mut self, path: impl Into<Name<'p>>, uid: u32, gid: u32) -> Result<()> {
        let path: Name<'p> = path.into();
        let ino = self.namei(path, false)?;
        self.set_owner(ino, uid, gid, None)?;
        self.touch(ino, Self::changed_now())
    }

    /// Sets the access and modification times of `path` (not following a final symlink).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn utimens<'p>(
        &mut self,
        path: impl Into<Name<'p>>,
        atime: Timestamp,
        mtime: Timestamp,
    ) -> Result<()> {
        let path: Name<'p> = path.into();
        let ino = self.namei(path, false)?;
        self.touch(
            ino,
            Stamp {
                atime: Some(atime),
                mtime: Some(mtime),
                ctime: Some(Timestamp::now()),
            },
        )
    }

    /// Type, owner, size and times of `path` (not following a final symlink).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn metadata<'p>(&self, path: impl Into<Name<'p>>) -> Result<Metadata> {
        let path: Name<'p> = path.into();
        let ino = self.namei(path, false)?;
        let i = self.read_inode(ino)?;
        let extra = |end, v| self.has_extra(&i, end).then_some(v);
        Ok(Metadata {
            ino,
            mode: u32::from(i.i_mode),
            uid: u32::from(i.i_uid) | (u32::from(i.l_i_uid_high) << 16),
            gid: u32::from(i.i_gid) | (u32::from(i.l_i_gid_high) << 16),
            size: u64::from(i.i_size) | (u64::from(i.i_size_high) << 32),
            links: i.i_links_count,
            atime: decode_time(i.i_atime, extra(ATIME_EXTRA_END, i.i_atime_extra)),
            mtime: decode_time(i.i_mtime, extra(MTIME_EXTRA_END, i.i_mtime_extra)),
        })
    }

    fn xattrs(&self, path: Name<'_>) -> Result<Xattrs<'_>> {
        let ino = self.namei(path, false)?;
        let mut h: *mut sys::XattrHandle = std::ptr::null_mut();
        // SAFETY: live handle; `h` is a valid out-pointer.
        let code = unsafe { sys::ext2fs_xattrs_open(self.fs, ino, &raw mut h) };
        self.check("open xattrs of", path, code)?;
        let x = Xattrs { fs: self, h };
        // SAFETY: `x.h` is the live handle just opened.
        let code = unsafe { sys::ext2fs_xattrs_read(x.h) };
        self.check("read xattrs of", path, code)?;
        Ok(x)
    }

    /// The value of extended attribute `name` (e.g. `security.selinux`) of `path`, if set.
    ///
    /// # Errors
    /// [`Error::NotFound`] for the path; libext2fs errors.
    pub fn get_xattr<'p>(&self, path: impl Into<Name<'p>>, name: &str) -> Result<Option<Vec<u8>>> {
        let path: Name<'p> = path.into();
        let key = cstring(name.as_bytes())?;
        let x = self.xattrs(path)?;
        let mut value: *mut c_void = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live xattr handle, NUL-terminated key, valid out-pointers.
        let code =
            unsafe { sys::ext2fs_xattr_get(x.h, key.as_ptr(), &raw mut value, &raw mut len) };
        if code == sys::EXT2_ET_EA_KEY_NOT_FOUND {
            return Ok(None);
        }
        self.check("get xattr of", path, code)?;
        let out = if value.is_null() || len == 0 {
            Vec::new()
        } else {
            // SAFETY: libext2fs returned a malloc'd buffer of `len` bytes.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec()
        };
        // SAFETY: `value` came from ext2fs_get_mem (malloc); ext2fs_free_mem is free().
        unsafe { libc::free(value) };
        Ok(Some(out))
    }

    /// Sets extended attribute `name` of `path` to `value`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] over 64 KiB; libext2fs errors (unknown namespace, no space).
    pub fn set_xattr<'p>(
        &mut self,
        path: impl Into<Name<'p>>,
        name: &str,
        value: &[u8],
    ) -> Result<()> {
        let path: Name<'p> = path.into();
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::TooLarge {
                what: "xattr value",
                len: value.len() as u64,
                limit: XATTR_SIZE_MAX as u64,
            });
        }
        let key = cstring(name.as_bytes())?;
        let x = self.xattrs(path)?;
        // SAFETY: live xattr handle, NUL-terminated key, `value` valid for its length.
        // ext2fs_xattr_set writes the attributes to disk itself.
        let code =
            unsafe { sys::ext2fs_xattr_set(x.h, key.as_ptr(), value.as_ptr().cast(), value.len()) };
        self.check("set xattr of", path, code)?;
        let ino = self.namei(path, false)?;
        drop(x);
        self.touch(ino, Self::changed_now())
    }

    /// Removes extended attribute `name` of `path` (no error if it is not set).
    ///
    /// # Errors
    /// [`Error::NotFound`] for the path; libext2fs errors.
    pub fn remove_xattr<'p>(&mut self, path: impl Into<Name<'p>>, name: &str) -> Result<()> {
        let path: Name<'p> = path.into();
        let key = cstring(name.as_bytes())?;
        let x = self.xattrs(path)?;
        // SAFETY: live xattr handle, NUL-terminated key; the change is written by the call.
        let code = unsafe { sys::ext2fs_xattr_remove(x.h, key.as_ptr()) };
        self.check("remove xattr of", path, code)
    }

    /// The names of the extended attributes of `path`.
    ///
    /// # Errors
    /// [`Error::NotFound`] for the path; libext2fs errors.
    pub fn list_xattrs<'p>(&self, path: impl Into<Name<'p>>) -> Result<Vec<String>> {
        let path: Name<'p> = path.into();
        unsafe extern "C" fn collect(
            name: *mut c_char,
            _value: *mut c_char,
            _len: usize,
            data: *mut c_void,
        ) -> c_int {
            catch_unwind(AssertUnwindSafe(|| {
                if name.is_null() || data.is_null() {
                    return 0;
                }
                // SAFETY: libext2fs passes a NUL-terminated name and our `Vec<String>`.
                unsafe {
                    let v = &mut *data.cast::<Vec<String>>();
                    v.push(CStr::from_ptr(name).to_string_lossy().into_owned());
                }
                0
            }))
            .unwrap_or(1)
        }
        let x = self.xattrs(path)?;
        let mut names: Vec<String> = Vec::new();
        // SAFETY: live xattr handle; the callback only touches `names`, which outlives the call.
        let code = unsafe { sys::ext2fs_xattrs_iterate(x.h, collect, (&raw mut names).cast()) };
        self.check("list xattrs of", path, code)?;
        names.sort();
        Ok(names)
    }
}

impl Drop for Ext2Fs {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!(error = %e, "closing ext2 filesystem on drop failed");
        }
    }
}

/// The name of a directory entry passed to a `dir_iterate` callback.
///
/// # Safety
/// `d` must be null or an entry libext2fs validated (`rec_len >= 8 + name_len`, inside its
/// buffer), alive for `'a`.
unsafe fn dirent_name<'a>(d: *const sys::DirEntry) -> Option<&'a [u8]> {
    if d.is_null() {
        return None;
    }
    // SAFETY: per the contract, the 8-byte head is readable.
    let len = usize::from(unsafe { (*d).name_len } & 0xFF);
    // SAFETY: per the contract, `len` name bytes follow the head inside the buffer.
    Some(unsafe { std::slice::from_raw_parts(d.cast::<u8>().add(size_of::<sys::DirEntry>()), len) })
}

/// True for the `.` and `..` entries (and a null entry).
///
/// # Safety
/// As [`dirent_name`].
unsafe fn is_dot(d: *const sys::DirEntry) -> bool {
    // SAFETY: forwarded contract.
    matches!(unsafe { dirent_name(d) }, None | Some(b".") | Some(b".."))
}

/// An open `ext2_file_t`, closed on drop.
struct FileHandle<'a> {
    fs: &'a Ext2Fs,
    f: *mut sys::File,
}

impl FileHandle<'_> {
    fn set_size(&self, len: u64) -> Result<()> {
        // SAFETY: live file handle.
        let code = unsafe { sys::ext2fs_file_set_size2(self.f, len) };
        self.fs.check("set size", "", code)
    }

    fn seek_end(&self) -> Result<()> {
        let mut pos = 0u64;
        // SAFETY: live file handle, valid out-pointer.
        let code = unsafe { sys::ext2fs_file_llseek(self.f, 0, sys::EXT2_SEEK_END, &raw mut pos) };
        self.fs.check("seek", "", code)
    }

    fn size(&self) -> Result<u64> {
        let mut size = 0u64;
        // SAFETY: live file handle, valid out-pointer.
        let code = unsafe { sys::ext2fs_file_get_lsize(self.f, &raw mut size) };
        self.fs.check("size", "", code)?;
        Ok(size)
    }

    fn write_all(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(IO_CHUNK) {
            let mut done = 0usize;
            while done < chunk.len() {
                let rest = chunk.get(done..).unwrap_or_default();
                let n = c_uint::try_from(rest.len()).unwrap_or(c_uint::MAX);
                let mut written: c_uint = 0;
                // SAFETY: live file handle; `rest` is valid for `n` bytes.
                let code = unsafe {
                    sys::ext2fs_file_write(self.f, rest.as_ptr().cast(), n, &raw mut written)
                };
                self.fs.check("write", "", code)?;
                if written == 0 {
                    return Err(Error::Ext2 {
                        op: "write".into(),
                        code: 0,
                        message: "libext2fs wrote nothing".into(),
                    });
                }
                done += usize::try_from(written)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
            }
        }
        Ok(())
    }

    fn read_all(&self, size: u64) -> Result<Vec<u8>> {
        let total = usize::try_from(size)
            .map_err(|_| Error::Usage(format!("file of {size} bytes too large")))?;
        let mut out = vec![0u8; total];
        let mut done = 0usize;
        while done < total {
            let rest = out.get_mut(done..).unwrap_or_default();
            let want = rest.len().min(IO_CHUNK);
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
        out.truncate(done);
        Ok(out)
    }

    fn close(mut self) -> Result<()> {
        let f = std::mem::replace(&mut self.f, std::ptr::null_mut());
        // SAFETY: live file handle, not used again (`self.f` is now null).
        let code = unsafe { sys::ext2fs_file_close(f) };
        self.fs.check("close file", "", code)
    }
}

impl Drop for FileHandle<'_> {
    fn drop(&mut self) {
        if !self.f.is_null() {
            // SAFETY: live file handle, closed exactly once.
            let code = unsafe { sys::ext2fs_file_close(self.f) };
            if code != 0 {
                tracing::debug!(code, "closing an ext2 file after an error failed");
            }
        }
    }
}

/// An open `ext2_xattr_handle`, closed on drop.
struct Xattrs<'a> {
    fs: &'a Ext2Fs,
    h: *mut sys::XattrHandle,
}

impl Drop for Xattrs<'_> {
    fn drop(&mut self) {
        let _ = self.fs;
        // SAFETY: live xattr handle; ext2fs_xattrs_close frees it and nulls our pointer.
        let code = unsafe { sys::ext2fs_xattrs_close(&raw mut self.h) };
        if code != 0 {
            tracing::debug!(code, "closing an xattr handle failed");
        }
    }
}
