//! ext2/3/4 reading over the `ext4-view` crate.
//! Writing goes through libext2fs instead: see [`Ext4Rw`].
//!
//! `ext4-view` does the heavy lifting (extents, block maps, htree directories, journal replay in
//! memory, checksums). This module adds what the rest of rehost needs around it:
//!
//! - An adapter from [`BlockRead`] to `ext4_view::Ext4Read`, with a per-call read budget so a
//!   hostile image cannot make one call read without bound.
//! - Our own parse of the superblock (ext4 disk layout, "The Super Block") for the facts
//!   `ext4-view` does not expose: the blkid-style kind (ext2/ext3/ext4), `s_state`, the
//!   `needs_recovery` flag, and the raw inode table for link counts.
//! - Pre-validation of the sizes `ext4-view` allocates from (it sizes its block-group table from
//!   `s_blocks_count` before reading anything else).
//! - A fallback for journals `ext4-view` cannot replay ([`JournalView::Skipped`]): an unclean
//!   ext3 guest is still readable, as it is on disk.
//! - A worker thread: `ext4_view::Ext4` is built on `Rc`/`RefCell` and so is neither `Send` nor
//!   `Sync`, while [`FsRead`] must be both. Each [`Ext4Fs`] owns one thread that owns the
//!   `Ext4` value; calls are sent to it as closures and answered over a channel. Calls are thus
//!   serialised, which `ext4-view`'s `RefCell`ed block cache requires anyway.
//!
//! # Limits of `ext4-view` 1.0 worth knowing
//! - It does not expose inode numbers or link counts. [`Metadata::ino`] is known only for regular
//!   files (taken from `ext4_view::File`'s `Debug` output, checked against `debugfs` in the
//!   tests); [`Metadata::nlink`] is read from the inode table ourselves when the inode number is
//!   known. Both are 0 for other file types.
//! - A few of its internal invariants are `unwrap`s that a corrupt extent tree can break (for
//!   example `File::read_bytes` after a failed `seek_to`). The worker runs each call under
//!   `catch_unwind` and turns a panic into [`Error::Corrupt`]. That is a last-resort guard against
//!   a dependency bug, not a substitute for the validation done here; the default panic hook
//!   still prints the panic message to stderr.
//! - `File::seek_to` walks the file block by block, holes included, so `read_at` refuses to
//!   skip more than [`MAX_SEEK_BLOCKS`] blocks; an open file is kept between calls so
//!   sequential reads never seek.
//! - It only replays JBD2 journals with the `64bit` and `csum_v3` features (see
//!   [`JournalView`]).
//! - Metadata reads for `nlink` go to the device directly, not through the journal, and only
//!   for the classic contiguous descriptor table (`nlink` is 0 under `meta_bg`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use disk::{BlockRead, BlockReadExt};
use ext4_view::{Ext4, Ext4Error, Ext4Read};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{
    CaseSensitivity, DirEntry, Error, FileType, FsInfo, FsKind, FsRead, GuestPath, MAX_DIR_ENTRIES,
    Metadata, Result,
};

mod write;
pub use write::Ext4Rw;

/// Byte offset of the primary superblock (ext4 disk layout, "The Super Block": the first 1024
/// bytes are left for boot code).
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Size of the superblock.
const SUPERBLOCK_SIZE: usize = 1024;
/// Offset of `s_checksum` in the superblock: crc32c (seed `~0`, no final inversion) of the
/// bytes before it, under `RO_COMPAT_METADATA_CSUM`.
const S_CHECKSUM: usize = 0x3FC;
/// Offset of `s_feature_incompat` in the superblock.
const S_FEATURE_INCOMPAT: usize = 0x60;
/// `RO_COMPAT_METADATA_CSUM`.
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
/// `s_magic` (ext4 disk layout, "The Super Block", offset 0x38).
pub const EXT_MAGIC: u16 = 0xEF53;
/// Smallest `s_log_block_size` shift: block size is `1024 << s_log_block_size`.
const MIN_BLOCK_SIZE: u64 = 1024;
/// Largest `s_log_block_size` the kernel accepts (64 KiB blocks).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// `s_rev_level` 0 (`EXT2_GOOD_OLD_REV`) has fixed 128-byte inodes.
const GOOD_OLD_INODE_SIZE: u16 = 128;
/// Group descriptor size without `INCOMPAT_64BIT` (ext4 disk layout, "Block Group Descriptors").
const GOOD_OLD_DESC_SIZE: u16 = 32;
/// Largest `s_desc_size` the kernel accepts (`EXT4_MAX_DESC_SIZE`).
const MAX_DESC_SIZE: u16 = 1024;
/// Most blocks `read_at` lets `ext4-view` skip to reach an offset: its `File::seek_to` steps
/// through the file's blocks one by one (holes included), so a hostile `i_size` with a far
/// offset would otherwise spin for up to 2^32 steps. 2^24 blocks is 16 GiB at 1 KiB blocks and
/// 64 GiB at 4 KiB blocks; sequential reads never seek, so `read_file` is not limited by this.
pub const MAX_SEEK_BLOCKS: u64 = 1 << 24;
/// Offset of `i_links_count` in an inode (ext4 disk layout, "Inode Table").
const I_LINKS_COUNT: u64 = 0x1A;
/// Offsets of `bg_inode_table_lo` and `bg_inode_table_hi` in a group descriptor.
const BG_INODE_TABLE_LO: u64 = 0x08;
const BG_INODE_TABLE_HI: u64 = 0x28;

/// `s_feature_compat` bits (ext4 disk layout, "The Super Block").
pub mod compat {
    /// `COMPAT_HAS_JOURNAL`.
    pub const HAS_JOURNAL: u32 = 0x4;
}
/// `s_feature_incompat` bits.
pub mod incompat {
    /// `INCOMPAT_FILETYPE`: directory entries record the file type.
    pub const FILETYPE: u32 = 0x2;
    /// `INCOMPAT_RECOVER`: the journal must be replayed before mounting.
    pub const RECOVER: u32 = 0x4;
    /// `INCOMPAT_JOURNAL_DEV`: this is an external journal, not a filesystem.
    pub const JOURNAL_DEV: u32 = 0x8;
    /// `INCOMPAT_META_BG`.
    pub const META_BG: u32 = 0x10;
    /// `INCOMPAT_64BIT`: block numbers above 2^32, descriptors of `s_desc_size` bytes.
    pub const IS_64BIT: u32 = 0x80;
}
/// `s_feature_ro_compat` bits that ext2 and ext3 already had.
pub mod ro_compat {
    /// `RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR`.
    pub const EXT2_SUPPORTED: u32 = 0x1 | 0x2 | 0x4;
}
/// `s_state` bits (ext4 disk layout, "The Super Block", offset 0x3A).
mod state {
    pub(super) const CLEANLY_UNMOUNTED: u16 = 0x1;
    pub(super) const ERRORS_DETECTED: u16 = 0x2;
    pub(super) const ORPHANS_BEING_RECOVERED: u16 = 0x4;
}

/// The first 0x154 bytes of the on-disk superblock, as laid out on disk (first parsing step).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone)]
#[repr(C)]
pub(crate) struct RawSuperblock {
    s_inodes_count: U32,
    s_blocks_count_lo: U32,
    _s_r_blocks_count_lo: U32,
    _s_free_blocks_count_lo: U32,
    _s_free_inodes_count: U32,
    s_first_data_block: U32,
    s_log_block_size: U32,
    _s_log_cluster_size: U32,
    s_blocks_per_group: U32,
    _s_clusters_per_group: U32,
    s_inodes_per_group: U32,
    _s_mtime: U32,
    _s_wtime: U32,
    _s_mnt_count: U16,
    _s_max_mnt_count: U16,
    s_magic: U16,
    s_state: U16,
    _s_errors: U16,
    _s_minor_rev_level: U16,
    _s_lastcheck: U32,
    _s_checkinterval: U32,
    _s_creator_os: U32,
    s_rev_level: U32,
    _s_def_resuid: U16,
    _s_def_resgid: U16,
    _s_first_ino: U32,
    s_inode_size: U16,
    _s_block_group_nr: U16,
    s_feature_compat: U32,
    s_feature_incompat: U32,
    s_feature_ro_compat: U32,
    s_uuid: [u8; 16],
    s_volume_name: [u8; 16],
    _s_last_mounted_to_desc_size: [u8; 0xFE - 0x88],
    s_desc_size: U16,
    _s_default_mount_opts_to_blocks_count_hi: [u8; 0x150 - 0x100],
    s_blocks_count_hi: U32,
}

/// The validated superblock facts rehost uses (second parsing step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// `s_blocks_count` (with `s_blocks_count_hi` under `INCOMPAT_64BIT`).
    pub blocks_count: u64,
    /// `s_first_data_block`.
    pub first_data_block: u32,
    /// Block size in bytes (`1024 << s_log_block_size`).
    pub block_size: u64,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// `s_state`.
    pub state: u16,
    /// Inode record size in bytes.
    pub inode_size: u16,
    /// Group descriptor size in bytes.
    pub desc_size: u16,
    /// `s_feature_compat`.
    pub feature_compat: u32,
    /// `s_feature_incompat`.
    pub feature_incompat: u32,
    /// `s_feature_ro_compat`.
    pub feature_ro_compat: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`.
    pub volume_name: [u8; 16],
}

/// Clean/dirty facts from the superblock, for inspection findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4State {
    /// `INCOMPAT_RECOVER`: the journal holds transactions that were never checkpointed. The
    /// kernel and `e2fsck` replay them on disk; [`Ext4Fs::journal`] says whether our reads see
    /// them.
    pub needs_recovery: bool,
    /// `s_state & EXT2_VALID_FS`: the filesystem was cleanly unmounted.
    pub cleanly_unmounted: bool,
    /// `s_state & EXT2_ERROR_FS`: the kernel detected errors.
    pub errors_detected: bool,
    /// `s_state & EXT3_ORPHAN_FS`: orphan inodes were being recovered.
    pub orphans_being_recovered: bool,
}

/// Whether reads through [`Ext4Fs`] include the journal's uncheckpointed transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalView {
    /// `INCOMPAT_RECOVER` is clear: the journal holds nothing the disk lacks.
    Clean,
    /// `ext4-view` replays the journal in memory, so reads see what the kernel would after
    /// recovery.
    Replayed,
    /// The journal needs recovery but `ext4-view` cannot replay it (1.0 only replays JBD2
    /// journals with `64bit` and `csum_v3`, so ext3 and older ext4 journals are refused), or it
    /// is damaged. Reads show the on-disk state without the journal, as `debugfs` does.
    Skipped {
        /// Why replay was not possible.
        reason: String,
    },
}

/// crc32c (Castagnoli, reflected polynomial 0x82F63B78) without the final inversion, as ext4
/// uses it. Bitwise: it only ever runs over one 1020-byte superblock.
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    crc
}

/// The primary superblock with `INCOMPAT_RECOVER` cleared (and its checksum redone), so
/// `ext4-view` reads the filesystem as it is on disk.
fn superblock_without_recover(dev: &dyn BlockRead) -> Result<Box<[u8; SUPERBLOCK_SIZE]>> {
    let mut sb: Box<[u8; SUPERBLOCK_SIZE]> = Box::new(dev.read_array(SUPERBLOCK_OFFSET)?);
    let incompat_at = S_FEATURE_INCOMPAT..S_FEATURE_INCOMPAT + 4;
    // OK to index: constant ranges inside the 1024-byte array.
    let incompat = u32::from_le_bytes(sb[incompat_at.clone()].try_into().unwrap_or([0; 4]));
    sb[incompat_at].copy_from_slice(&(incompat & !incompat::RECOVER).to_le_bytes());
    let ro = u32::from_le_bytes(sb[0x64..0x68].try_into().unwrap_or([0; 4]));
    if ro & RO_COMPAT_METADATA_CSUM != 0 {
        let sum = crc32c_raw(!0, &sb[..S_CHECKSUM]);
        sb[S_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
    }
    Ok(sb)
}

fn sb_corrupt(detail: String) -> Error {
    Error::corrupt("ext4 superblock", SUPERBLOCK_OFFSET, detail)
}

impl Superblock {
    /// Reads and validates the primary superblock of `dev`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad magic or out-of-range geometry; I/O errors.
    pub fn read(dev: &dyn BlockRead) -> Result<Self> {
        let raw: RawSuperblock = dev.read_struct(SUPERBLOCK_OFFSET)?;
        Self::try_from(&raw)
    }

    /// The filesystem kind as `blkid` classifies it (libblkid `superblocks/ext.c`): no journal
    /// and only ext2 features is ext2; a journal and only ext3 features is ext3; anything else
    /// is ext4.
    #[must_use]
    pub fn kind(&self) -> FsKind {
        ext_kind(
            self.feature_compat,
            self.feature_incompat,
            self.feature_ro_compat,
        )
    }

    /// The volume label, if set (bytes up to the first NUL, lossy UTF-8).
    #[must_use]
    pub fn label(&self) -> Option<String> {
        label_from_bytes(&self.volume_name)
    }

    /// The UUID as `blkid` prints it (lowercase, dashed), or `None` when all zero.
    #[must_use]
    pub fn uuid(&self) -> Option<String> {
        format_uuid(&self.uuid)
    }

    /// The clean/dirty state.
    #[must_use]
    pub fn state(&self) -> Ext4State {
        Ext4State {
            needs_recovery: self.feature_incompat & incompat::RECOVER != 0,
            cleanly_unmounted: self.state & state::CLEANLY_UNMOUNTED != 0,
            errors_detected: self.state & state::ERRORS_DETECTED != 0,
            orphans_being_recovered: self.state & state::ORPHANS_BEING_RECOVERED != 0,
        }
    }

    /// Number of block groups, `ceil((s_blocks_count - s_first_data_block) / s_blocks_per_group)`.
    #[must_use]
    pub fn group_count(&self) -> u64 {
        // Validated in try_from: first_data_block < blocks_count and blocks_per_group > 0.
        (self.blocks_count - u64::from(self.first_data_block))
            .div_ceil(u64::from(self.blocks_per_group))
    }
}

impl TryFrom<&RawSuperblock> for Superblock {
    type Error = Error;

    fn try_from(raw: &RawSuperblock) -> Result<Self> {
        if raw.s_magic.get() != EXT_MAGIC {
            return Err(sb_corrupt(format!(
                "s_magic {:#06x} is not {EXT_MAGIC:#06x}",
                raw.s_magic.get()
            )));
        }
        let log = raw.s_log_block_size.get();
        if log > MAX_LOG_BLOCK_SIZE {
            return Err(sb_corrupt(format!(
                "s_log_block_size {log} out of range 0..={MAX_LOG_BLOCK_SIZE}"
            )));
        }
        let block_size = MIN_BLOCK_SIZE << log;
        let feature_incompat = raw.s_feature_incompat.get();
        let is_64bit = feature_incompat & incompat::IS_64BIT != 0;
        let hi = if is_64bit {
            u64::from(raw.s_blocks_count_hi.get())
        } else {
            0
        };
        let blocks_count = (hi << 32) | u64::from(raw.s_blocks_count_lo.get());
        let first_data_block = raw.s_first_data_block.get();
        if u64::from(first_data_block) >= blocks_count {
            return Err(sb_corrupt(format!(
                "s_first_data_block {first_data_block} not below s_blocks_count {blocks_count}"
            )));
        }
        let blocks_per_group = raw.s_blocks_per_group.get();
        let max_bpg = block_size * 8;
        if blocks_per_group == 0 || u64::from(blocks_per_group) > max_bpg {
            return Err(sb_corrupt(format!(
                "s_blocks_per_group {blocks_per_group} out of range 1..={max_bpg}"
            )));
        }
        let inodes_per_group = raw.s_inodes_per_group.get();
        if inodes_per_group == 0 || u64::from(inodes_per_group) > max_bpg {
            return Err(sb_corrupt(format!(
                "s_inodes_per_group {inodes_per_group} out of range 1..={max_bpg}"
            )));
        }
        let inode_size = if raw.s_rev_level.get() == 0 {
            GOOD_OLD_INODE_SIZE
        } else {
            raw.s_inode_size.get()
        };
        if inode_size < GOOD_OLD_INODE_SIZE
            || !inode_size.is_power_of_two()
            || u64::from(inode_size) > block_size
        {
            return Err(sb_corrupt(format!(
                "s_inode_size {inode_size} is not a power of two in 128..={block_size}"
            )));
        }
        let desc_size = if is_64bit {
            raw.s_desc_size.get()
        } else {
            GOOD_OLD_DESC_SIZE
        };
        if !(GOOD_OLD_DESC_SIZE..=MAX_DESC_SIZE).contains(&desc_size)
            || !desc_size.is_power_of_two()
        {
            return Err(sb_corrupt(format!(
                "s_desc_size {desc_size} is not a power of two in 32..=1024"
            )));
        }
        Ok(Self {
            inodes_count: raw.s_inodes_count.get(),
            blocks_count,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            state: raw.s_state.get(),
            inode_size,
            desc_size,
            feature_compat: raw.s_feature_compat.get(),
            feature_incompat,
            feature_ro_compat: raw.s_feature_ro_compat.get(),
            uuid: raw.s_uuid,
            volume_name: raw.s_volume_name,
        })
    }
}

/// blkid's ext2/ext3/ext4 decision (libblkid `superblocks/ext.c`, `EXT2_FEATURE_*_SUPP` and
/// `EXT3_FEATURE_*_SUPP`).
pub(crate) fn ext_kind(compat_bits: u32, incompat_bits: u32, ro_compat_bits: u32) -> FsKind {
    const EXT2_INCOMPAT_SUPP: u32 = incompat::FILETYPE | incompat::META_BG;
    const EXT3_INCOMPAT_SUPP: u32 = EXT2_INCOMPAT_SUPP | incompat::RECOVER;
    let old_ro = ro_compat_bits & !ro_compat::EXT2_SUPPORTED == 0;
    let has_journal = compat_bits & compat::HAS_JOURNAL != 0;
    if !has_journal && old_ro && incompat_bits & !EXT2_INCOMPAT_SUPP == 0 {
        FsKind::Ext2
    } else if has_journal && old_ro && incompat_bits & !EXT3_INCOMPAT_SUPP == 0 {
        FsKind::Ext3
    } else {
        FsKind::Ext4
    }
}

/// Bytes up to the first NUL, trimmed of nothing else, as lossy UTF-8; `None` if empty.
pub(crate) fn label_from_bytes(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    // OK to slice: end <= bytes.len().
    let s = String::from_utf8_lossy(&bytes[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// A 16-byte UUID in the usual 8-4-4-4-12 lowercase form; `None` if all zero (blkid skips
/// those too).
pub(crate) fn format_uuid(u: &[u8; 16]) -> Option<String> {
    if u.iter().all(|&b| b == 0) {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    Some(s)
}

/// Shared read budget: bytes one [`FsRead`] call may still read from the device (used by this
/// module and by [`crate::fat`]).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    left: AtomicU64,
    limit: AtomicU64,
}

impl Budget {
    pub(crate) fn reset(&self, bytes: u64) {
        self.limit.store(bytes, Ordering::Relaxed);
        self.left.store(bytes, Ordering::Relaxed);
    }
    /// Takes `n` bytes from the budget, or fails if there are not that many left.
    pub(crate) fn take(&self, n: u64) -> std::result::Result<(), BudgetExhausted> {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(n)
            })
            .map(|_| ())
            .map_err(|_| BudgetExhausted {
                limit: self.limit.load(Ordering::Relaxed),
            })
    }
}

/// Bytes one call may read: enough to read the whole device a few times over (every legitimate
/// operation reads each metadata block a bounded number of times), plus the caller's buffer.
pub(crate) fn call_budget(dev_size: u64, buf_len: usize) -> u64 {
    /// Floor, so small images are not starved by block-cache refills.
    const MIN_BUDGET: u64 = 16 << 20;
    dev_size
        .saturating_mul(4)
        .saturating_add((buf_len as u64).saturating_mul(2))
        .max(MIN_BUDGET)
}

/// The error a reader returns when a call's budget runs out.
#[derive(Debug, thiserror::Error)]
#[error("read budget of {limit} bytes for one call exhausted")]
pub(crate) struct BudgetExhausted {
    pub(crate) limit: u64,
}

/// `ext4_view::Ext4Read` over a shared [`BlockRead`], charging every read to the budget, and
/// optionally showing a replacement primary superblock (see [`JournalView::Skipped`]).
struct DevReader {
    dev: Arc<dyn BlockRead>,
    budget: Arc<Budget>,
    superblock_patch: Option<Box<[u8; SUPERBLOCK_SIZE]>>,
}

impl Ext4Read for DevReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.budget.take(dst.len() as u64).map_err(Box::new)?;
        self.dev.read_exact_at(start_byte, dst)?;
        if let Some(patch) = &self.superblock_patch {
            // Overlay the part of [1024, 2048) this read covers.
            let end = start_byte.saturating_add(dst.len() as u64);
            let from = start_byte.max(SUPERBLOCK_OFFSET);
            let to = end.min(SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64);
            if from < to {
                // All four fit in usize: they lie within dst or within the 1024-byte patch.
                let d = usize::try_from(from - start_byte).unwrap_or(0);
                let p = usize::try_from(from - SUPERBLOCK_OFFSET).unwrap_or(0);
                let n = usize::try_from(to - from).unwrap_or(0);
                if let (Some(dst), Some(src)) = (dst.get_mut(d..d + n), patch.get(p..p + n)) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }
}

/// The state owned by the worker thread.
struct Worker {
    fs: Ext4,
    /// The last file `read_at` used, kept open so sequential reads do not seek from the start.
    open: Option<(GuestPath, ext4_view::File)>,
}

type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// A read-only ext2/ext3/ext4 filesystem.
pub struct Ext4Fs {
    jobs: mpsc::Sender<Job>,
    dev: Arc<dyn BlockRead>,
    budget: Arc<Budget>,
    superblock: Superblock,
    info: FsInfo,
    journal: JournalView,
}

impl std::fmt::Debug for Ext4Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext4Fs")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn panicked() -> Error {
    Error::corrupt(
        "ext4 filesystem",
        0,
        "ext4-view panicked on this image (caught as a guard against a dependency bug)",
    )
}

impl Ext4Fs {
    /// Opens the ext2/3/4 filesystem on `dev`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a damaged superblock, group descriptors or journal;
    /// [`Error::Unsupported`] for incompatible features `ext4-view` does not implement; I/O.
    pub fn open(dev: Arc<dyn BlockRead>) -> Result<Self> {
        let superblock = Superblock::read(&*dev)?;
        let dev_size = dev.size();
        // ext4-view sizes its block group table from s_blocks_count before reading anything;
        // a filesystem larger than its device is damage (or a truncated image) either way.
        let fs_bytes = superblock.blocks_count.checked_mul(superblock.block_size);
        if fs_bytes.is_none_or(|b| b > dev_size) {
            return Err(sb_corrupt(format!(
                "s_blocks_count {} of {} bytes exceeds the {dev_size}-byte device",
                superblock.blocks_count, superblock.block_size
            )));
        }
        let info = FsInfo {
            kind: superblock.kind(),
            label: superblock.label(),
            uuid: superblock.uuid(),
            case: CaseSensitivity::Sensitive,
        };
        let budget = Arc::new(Budget::default());
        let needs_recovery = superblock.state().needs_recovery;
        let (jobs, journal) = match start_worker(&dev, &budget, None) {
            Ok(jobs) if needs_recovery => (jobs, JournalView::Replayed),
            Ok(jobs) => (jobs, JournalView::Clean),
            Err(e @ (Error::Unsupported { .. } | Error::Corrupt { .. })) if needs_recovery => {
                tracing::debug!(error = %e, "journal not replayable; reading the on-disk state");
                let patch = superblock_without_recover(&*dev)?;
                let jobs = start_worker(&dev, &budget, Some(patch))?;
                (
                    jobs,
                    JournalView::Skipped {
                        reason: e.to_string(),
                    },
                )
            }
            Err(e) => return Err(e),
        };
        tracing::debug!(kind = ?info.kind, ?journal, "opened ext filesystem");
        Ok(Self {
            jobs,
            dev,
            budget,
            superblock,
            info,
            journal,
        })
    }

    /// Whether reads include the journal's pending transactions.
    #[must_use]
    pub fn journal(&self) -> &JournalView {
        &self.journal
    }

    /// The validated superblock.
    #[must_use]
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Clean/dirty state from the superblock.
    #[must_use]
    pub fn state(&self) -> Ext4State {
        self.superblock.state()
    }

    /// True if the journal must be replayed (`INCOMPAT_RECOVER`).
    #[must_use]
    pub fn needs_recovery(&self) -> bool {
        self.superblock.state().needs_recovery
    }

    /// Runs `f` on the worker thread with a fresh read budget for `buf_len` bytes of file data.
    fn call<R: Send + 'static>(
        &self,
        buf_len: usize,
        f: impl FnOnce(&mut Worker) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let bytes = call_budget(self.dev.size(), buf_len);
        let budget = self.budget.clone();
        let (tx, rx) = mpsc::sync_channel(1);
        // The budget is reset on the worker, where calls run one at a time, so concurrent
        // callers never spend each other's budget.
        let job: Job = Box::new(move |w| {
            budget.reset(bytes);
            let _ = tx.send(f(w));
        });
        self.jobs.send(job).map_err(|_| panicked())?;
        rx.recv().map_err(|_| panicked())?
    }

    /// `i_links_count` of inode `ino`, read from the inode table (not through the journal).
    fn links_count(&self, ino: u32) -> Result<u64> {
        let sb = &self.superblock;
        let corrupt = |detail: String| Error::corrupt(format!("ext4 inode {ino}"), 0, detail);
        let index = ino
            .checked_sub(1)
            .ok_or_else(|| corrupt("inode number 0".into()))?;
        let group = u64::from(index / sb.inodes_per_group);
        if group >= sb.group_count() {
            return Err(corrupt(format!(
                "group {group} out of range 0..{}",
                sb.group_count()
            )));
        }
        let slot = u64::from(index % sb.inodes_per_group);
        // The descriptor table starts in the block after the superblock's block.
        let gdt = (u64::from(sb.first_data_block) + 1) * sb.block_size;
        let desc = gdt + group * u64::from(sb.desc_size);
        let lo: [u8; 4] = self.dev.read_array(desc + BG_INODE_TABLE_LO)?;
        let hi: [u8; 4] = if sb.desc_size >= 64 {
            self.dev.read_array(desc + BG_INODE_TABLE_HI)?
        } else {
            [0; 4]
        };
        let table = (u64::from(u32::from_le_bytes(hi)) << 32) | u64::from(u32::from_le_bytes(lo));
        let at = table
            .checked_mul(sb.block_size)
            .and_then(|t| t.checked_add(slot * u64::from(sb.inode_size)))
            .and_then(|t| t.checked_add(I_LINKS_COUNT))
            .ok_or_else(|| corrupt(format!("bg_inode_table {table} overflows")))?;
        let links: [u8; 2] = self.dev.read_array(at)?;
        Ok(u64::from(u16::from_le_bytes(links)))
    }
}

/// Starts the worker thread that owns the `ext4_view::Ext4` value, and waits until it loaded.
fn start_worker(
    dev: &Arc<dyn BlockRead>,
    budget: &Arc<Budget>,
    superblock_patch: Option<Box<[u8; SUPERBLOCK_SIZE]>>,
) -> Result<mpsc::Sender<Job>> {
    budget.reset(call_budget(dev.size(), 0));
    let reader = DevReader {
        dev: dev.clone(),
        budget: budget.clone(),
        superblock_patch,
    };
    let (jobs, rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("guestfs-ext4".into())
        .spawn(move || {
            let loaded = catch_unwind(AssertUnwindSafe(|| Ext4::load(Box::new(reader))));
            let fs = match loaded {
                Ok(Ok(fs)) => fs,
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(map_err(e, &GuestPath::root())));
                    return;
                }
                Err(_) => {
                    let _ = ready_tx.send(Err(panicked()));
                    return;
                }
            };
            if ready_tx.send(Ok(())).is_err() {
                return;
            }
            let mut worker = Worker { fs, open: None };
            for job in rx {
                if catch_unwind(AssertUnwindSafe(|| job(&mut worker))).is_err() {
                    // The job's reply channel was dropped while unwinding, so the caller
                    // already sees the failure. Drop the cached file: its state is unknown.
                    worker.open = None;
                }
            }
        })
        .map_err(|e| Error::Disk(disk::Error::io(0, e)))?;
    ready_rx.recv().map_err(|_| panicked())??;
    Ok(jobs)
}

/// Maps an `ext4-view` error on `path` to ours.
fn map_err(e: Ext4Error, path: &GuestPath) -> Error {
    let path_s = || path.to_string();
    match e {
        Ext4Error::NotFound => Error::NotFound { path: path_s() },
        Ext4Error::NotADirectory => Error::NotADirectory { path: path_s() },
        Ext4Error::IsADirectory => Error::IsADirectory { path: path_s() },
        Ext4Error::NotASymlink => Error::NotASymlink { path: path_s() },
        Ext4Error::TooManySymlinks => Error::TooManySymlinks { path: path_s() },
        Ext4Error::IsASpecialFile => {
            Error::unsupported("file type", format!("{path}: special file"))
        }
        Ext4Error::Encrypted => {
            Error::unsupported("ext4 feature", format!("{path}: encrypted file"))
        }
        Ext4Error::Incompatible(i) => Error::unsupported("ext4 feature", i.to_string()),
        Ext4Error::Io(inner) => match inner.downcast::<disk::Error>() {
            Ok(d) => Error::Disk(*d),
            Err(other) => match other.downcast::<BudgetExhausted>() {
                Ok(b) => Error::LimitExceeded {
                    what: format!("{path}: bytes read by one call"),
                    limit: b.limit,
                },
                Err(other) => Error::corrupt("ext4 filesystem", 0, other.to_string()),
            },
        },
        Ext4Error::Corrupt(c) => Error::corrupt("ext4 filesystem", 0, c.to_string()),
        other => Error::corrupt("ext4 filesystem", 0, format!("{path}: {other}")),
    }
}

fn file_type(t: ext4_view::FileType) -> FileType {
    if t.is_regular_file() {
        FileType::Regular
    } else if t.is_dir() {
        FileType::Directory
    } else if t.is_symlink() {
        FileType::Symlink
    } else if t.is_char_dev() {
        FileType::CharDevice
    } else if t.is_block_dev() {
        FileType::BlockDevice
    } else if t.is_fifo() {
        FileType::Fifo
    } else if t.is_socket() {
        FileType::Socket
    } else {
        FileType::Other
    }
}

/// The inode number of an open file. `ext4-view` 1.0 only reveals it in `File`'s `Debug`
/// output (`File { inode: 12, position: 0, .. }`); a format change makes this `None`, which
/// the tests would catch.
fn file_inode(file: &ext4_view::File) -> Option<u32> {
    let dbg = format!("{file:?}");
    let rest = dbg.split_once("inode: ")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl FsRead for Ext4Fs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        let p = path.clone();
        let (md, ino) = self.call(0, move |w| {
            let bytes = p.to_bytes();
            let md =
                w.fs.symlink_metadata(bytes.as_slice())
                    .map_err(|e| map_err(e, &p))?;
            let ino = if md.file_type().is_regular_file() {
                w.fs.open(bytes.as_slice())
                    .ok()
                    .as_ref()
                    .and_then(file_inode)
            } else {
                None
            };
            Ok((md, ino))
        })?;
        // Under META_BG the descriptors are spread over the disk; links_count only knows the
        // classic contiguous table. The link count is auxiliary: a failure to read it is
        // logged and reported as 0 rather than failing the whole lstat.
        let nlink = match ino {
            Some(i) if self.superblock.feature_incompat & incompat::META_BG == 0 => {
                self.links_count(i).unwrap_or_else(|e| {
                    tracing::debug!(ino = i, error = %e, "cannot read i_links_count");
                    0
                })
            }
            _ => 0,
        };
        Ok(Metadata {
            file_type: file_type(md.file_type()),
            size: md.len(),
            mode: u32::from(md.mode()),
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.modified().seconds(),
            ino: ino.map_or(0, u64::from),
            nlink,
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        let p = path.clone();
        let dev_size = self.dev.size();
        self.call(0, move |w| {
            let bytes = p.to_bytes();
            let md =
                w.fs.symlink_metadata(bytes.as_slice())
                    .map_err(|e| map_err(e, &p))?;
            if !md.is_dir() {
                return Err(Error::NotADirectory {
                    path: p.to_string(),
                });
            }
            // A directory is never sparse and never larger than its device; a bigger i_size
            // would only make ext4-view iterate holes without reading anything.
            if md.len() > dev_size {
                return Err(Error::corrupt(
                    format!("ext4 directory {p}"),
                    0,
                    format!("i_size {} exceeds the {dev_size}-byte device", md.len()),
                ));
            }
            let mut out = Vec::new();
            for entry in
                w.fs.read_dir(bytes.as_slice())
                    .map_err(|e| map_err(e, &p))?
            {
                let entry = entry.map_err(|e| map_err(e, &p))?;
                let name = entry.file_name();
                let name = name.as_ref();
                if name == b"." || name == b".." {
                    continue;
                }
                if out.len() >= MAX_DIR_ENTRIES {
                    return Err(Error::LimitExceeded {
                        what: format!("{p}: directory entries"),
                        limit: MAX_DIR_ENTRIES as u64,
                    });
                }
                let ft = entry.file_type().map_err(|e| map_err(e, &p))?;
                out.push(DirEntry {
                    name: name.to_vec(),
                    file_type: file_type(ft),
                });
            }
            Ok(out)
        })
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        let p = path.clone();
        self.call(0, move |w| {
            let target =
                w.fs.read_link(p.to_bytes().as_slice())
                    .map_err(|e| map_err(e, &p))?;
            Ok(target.as_ref().to_vec())
        })
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let p = path.clone();
        let len = buf.len();
        let block_size = self.superblock.block_size;
        let data = self.call(len, move |w| {
            let reuse = matches!(&w.open, Some((q, _)) if *q == p);
            if !reuse {
                w.open = None;
                let bytes = p.to_bytes();
                let md =
                    w.fs.symlink_metadata(bytes.as_slice())
                        .map_err(|e| map_err(e, &p))?;
                // Canonical paths never end in a symlink we should follow (crate docs).
                if md.is_symlink() {
                    return Err(Error::unsupported(
                        "file type",
                        format!("{p}: read_at on a symlink (resolve the path first)"),
                    ));
                }
                let file = w.fs.open(bytes.as_slice()).map_err(|e| map_err(e, &p))?;
                w.open = Some((p.clone(), file));
            }
            let Some((_, file)) = w.open.as_mut() else {
                // Unreachable: set just above when not reused.
                return Ok(Vec::new());
            };
            let size = file.metadata().len();
            if offset >= size || len == 0 {
                return Ok(Vec::new());
            }
            let want = usize::try_from(size - offset).map_or(len, |rest| rest.min(len));
            if file.position() != offset {
                if offset / block_size > MAX_SEEK_BLOCKS {
                    return Err(Error::LimitExceeded {
                        what: format!("{p}: seek to byte {offset}, in blocks"),
                        limit: MAX_SEEK_BLOCKS,
                    });
                }
                // A failed seek leaves the file's block iterator exhausted; drop it.
                if let Err(e) = file.seek_to(offset) {
                    w.open = None;
                    return Err(map_err(e, &p));
                }
            }
            let mut data = vec![0u8; want];
            let mut filled = 0;
            while filled < want {
                // OK to slice: filled < want == data.len().
                match file.read_bytes(&mut data[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        w.open = None;
                        return Err(map_err(e, &p));
                    }
                }
            }
            data.truncate(filled);
            Ok(data)
        })?;
        let n = data.len();
        // OK to slice: the worker returns at most buf.len() bytes.
        buf[..n].copy_from_slice(&data);
        Ok(n)
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images and offsets are small"
)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::Path;
    use std::process::Command;

    use disk::MemDisk;
    use disk::testkit::CountingDisk;

    use super::*;
    use crate::FsReadExt;
    use crate::fuzzing::testutil::{Rng, blkid, have, mem_file, need, output, run};

    fn gp(s: &str) -> GuestPath {
        GuestPath::parse(s.as_bytes()).unwrap()
    }

    /// The guest tree every variant is built from.
    fn build_tree(root: &Path) {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("data/deep/er")).unwrap();
        std::fs::create_dir_all(root.join("many")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            b"root:x:0:0:guest root:/root:/bin/sh\n",
        )
        .unwrap();
        std::fs::set_permissions(root.join("etc/passwd"), PermissionsExt::from_mode(0o640))
            .unwrap();
        std::fs::write(root.join("etc/hostname"), b"guest\n").unwrap();
        std::os::unix::fs::chown(root.join("etc/hostname"), Some(1000), Some(1001)).unwrap();
        std::fs::hard_link(root.join("etc/hostname"), root.join("data/hard")).unwrap();
        std::fs::write(root.join("data/big.bin"), Rng(42).bytes(300_000)).unwrap();
        for i in 0..3000 {
            std::fs::write(root.join(format!("many/f{i:04}")), b"").unwrap();
        }
        symlink("/etc/passwd", root.join("abs_link")).unwrap();
        symlink("../../../../../etc/passwd", root.join("data/deep/up")).unwrap();
        symlink("passwd", root.join("etc/rel")).unwrap();
    }

    /// `debugfs -R CMD IMG` stdout.
    fn debugfs(img: &Path, cmd: &str) -> Vec<u8> {
        output(Command::new("debugfs").arg("-R").arg(cmd).arg(img)).unwrap_or_default()
    }

    /// A field like `Inode: 13` or `Links: 2` from `debugfs stat`.
    fn debugfs_field(img: &Path, path: &str, field: &str) -> u64 {
        let out = String::from_utf8_lossy(&debugfs(img, &format!("stat {path}"))).into_owned();
        let rest = out.split_once(&format!("{field}: ")).unwrap().1;
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn check_variant(name: &str, mke2fs_args: &[&str], size: &str, kind: FsKind) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_tree(&root);
        let img = tmp.path().join(format!("{name}.img"));
        if !run(Command::new("mke2fs")
            .args(["-q", "-F", "-L", "guestroot"])
            .args(mke2fs_args)
            .arg("-d")
            .arg(&root)
            .arg(&img)
            .arg(size))
        {
            panic!("mke2fs failed for {name}");
        }
        // e2fsck -D indexes large directories (mke2fs -d leaves them linear).
        let htree = have("e2fsck") && run(Command::new("e2fsck").arg("-fyD").arg(&img));

        let fs = Ext4Fs::open(mem_file(&img)).unwrap();
        let info = fs.info();
        let id = blkid(&img);
        assert_eq!(info.kind, kind, "{name}");
        assert_eq!(info.kind.blkid_name(), id["TYPE"], "{name}");
        assert_eq!(info.label.as_deref(), Some("guestroot"));
        assert_eq!(info.label.as_deref(), id.get("LABEL").map(String::as_str));
        assert_eq!(info.uuid.as_deref(), id.get("UUID").map(String::as_str));
        assert_eq!(info.case, CaseSensitivity::Sensitive);
        assert!(!fs.needs_recovery());
        assert!(fs.state().cleanly_unmounted);

        // File contents against the host tree and debugfs.
        for f in [
            "/etc/passwd",
            "/etc/hostname",
            "/data/big.bin",
            "/data/hard",
        ] {
            let ours = fs.read_file(f.as_bytes(), 1 << 20).unwrap();
            assert_eq!(
                ours,
                std::fs::read(root.join(&f[1..])).unwrap(),
                "{name} {f}"
            );
            assert_eq!(ours, debugfs(&img, &format!("cat {f}")), "{name} {f}");
        }

        // Metadata field by field.
        let host = std::fs::symlink_metadata(root.join("etc/hostname")).unwrap();
        let md = fs.lstat(&gp("/etc/hostname")).unwrap();
        assert_eq!(md.file_type, FileType::Regular);
        assert_eq!(md.size, 6);
        assert_eq!(md.mode, 0o644);
        assert_eq!((md.uid, md.gid), (1000, 1001));
        assert_eq!(md.mtime, host.mtime());
        assert_eq!(md.ino, debugfs_field(&img, "/etc/hostname", "Inode"));
        assert_eq!(md.nlink, 2);
        assert_eq!(md.nlink, debugfs_field(&img, "/etc/hostname", "Links"));
        assert_eq!(fs.lstat(&gp("/data/hard")).unwrap().ino, md.ino);
        assert_eq!(fs.lstat(&gp("/etc/passwd")).unwrap().mode, 0o640);
        let d = fs.lstat(&gp("/etc")).unwrap();
        assert_eq!(
            (d.file_type, d.mode, d.ino, d.nlink),
            (FileType::Directory, 0o755, 0, 0)
        );
        let l = fs.lstat(&gp("/abs_link")).unwrap();
        assert_eq!((l.file_type, l.size), (FileType::Symlink, 11));

        // Directories, including the big (indexed) one.
        let mut names: Vec<_> = fs.read_dir(&gp("/etc")).unwrap();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let got: Vec<_> = names
            .iter()
            .map(|e| (e.name.as_slice(), e.file_type))
            .collect();
        assert_eq!(
            got,
            [
                (&b"hostname"[..], FileType::Regular),
                (b"passwd", FileType::Regular),
                (b"rel", FileType::Symlink)
            ]
        );
        let many = fs.read_dir(&gp("/many")).unwrap();
        assert_eq!(many.len(), 3000);
        assert!(many.iter().any(|e| e.name == b"f2999"));
        if htree {
            let stat = String::from_utf8_lossy(&debugfs(&img, "stat /many")).into_owned();
            let flags = stat.split_once("Flags: 0x").unwrap().1;
            let flags = u32::from_str_radix(flags.split_whitespace().next().unwrap(), 16).unwrap();
            assert_ne!(flags & 0x1000, 0, "EXT4_INDEX_FL: /many is an htree");
            assert!(fs.lstat(&gp("/many/f1234")).is_ok(), "htree lookup");
        }

        // Symlinks resolve inside the guest, never to the host's /etc/passwd.
        let guest_passwd = b"root:x:0:0:guest root:/root:/bin/sh\n".to_vec();
        assert_eq!(
            fs.read_link(&gp("/data/deep/up")).unwrap(),
            b"../../../../../etc/passwd"
        );
        assert_eq!(
            fs.read_file(b"/data/deep/up", 1 << 20).unwrap(),
            guest_passwd
        );
        assert_eq!(fs.read_file(b"/abs_link", 1 << 20).unwrap(), guest_passwd);
        assert_eq!(fs.read_file(b"/etc/rel", 1 << 20).unwrap(), guest_passwd);

        // Errors.
        assert!(matches!(fs.lstat(&gp("/nope")), Err(Error::NotFound { path }) if path == "/nope"));
        assert!(matches!(
            fs.lstat(&gp("/etc/passwd/x")),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            fs.read_dir(&gp("/etc/passwd")),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            fs.read_at(&gp("/etc"), 0, &mut [0; 4]),
            Err(Error::IsADirectory { .. })
        ));
        assert!(matches!(
            fs.read_link(&gp("/etc/passwd")),
            Err(Error::NotASymlink { .. })
        ));
    }

    #[test]
    fn ext4_default_reads_like_debugfs() {
        if !need(&["mke2fs", "debugfs", "blkid"]) {
            return;
        }
        check_variant("ext4", &["-t", "ext4"], "64M", FsKind::Ext4);
    }

    #[test]
    fn ext4_variants_read_like_debugfs() {
        if !need(&["mke2fs", "debugfs", "blkid"]) {
            return;
        }
        check_variant("ext3", &["-t", "ext3"], "16M", FsKind::Ext3);
        check_variant("ext2", &["-t", "ext2"], "16M", FsKind::Ext2);
        check_variant(
            "nocsum",
            &["-t", "ext4", "-O", "^metadata_csum"],
            "16M",
            FsKind::Ext4,
        );
        check_variant("1k", &["-t", "ext4", "-b", "1024"], "16M", FsKind::Ext4);
    }

    #[test]
    fn read_at_is_positional_and_bounded() {
        if !need(&["mke2fs"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_tree(&root);
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("64M")));
        let counting = Arc::new(CountingDisk::new(MemDisk::from_vec(
            std::fs::read(&img).unwrap(),
        )));
        let fs = Ext4Fs::open(counting.clone()).unwrap();
        let want = std::fs::read(root.join("data/big.bin")).unwrap();
        let p = gp("/data/big.bin");
        let mut rng = Rng(7);
        // Random order, including backwards seeks, block-crossing reads and reads past the end.
        for _ in 0..200 {
            let off = rng.below(want.len() as u64 + 100);
            let len = 1 + rng.below(9000) as usize;
            let mut buf = vec![0u8; len];
            let n = fs.read_at(&p, off, &mut buf).unwrap();
            let start = (off as usize).min(want.len());
            let end = (start + len).min(want.len());
            assert_eq!(n, end - start, "off {off} len {len}");
            assert_eq!(&buf[..n], &want[start..end]);
        }
        // Reading one small file of a 64 MiB image touches a few metadata blocks, not the image.
        let before = counting.bytes();
        let other = fs.read_file(b"/etc/hostname", 100).unwrap();
        assert_eq!(other, b"guest\n");
        assert!(
            counting.bytes() - before < 1 << 20,
            "read {} bytes",
            counting.bytes() - before
        );
    }

    #[test]
    fn shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Ext4Fs>();
        if !need(&["mke2fs"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let files: Vec<Vec<u8>> = (0..4u64).map(|i| Rng(i + 100).bytes(50_000)).collect();
        for (i, data) in files.iter().enumerate() {
            std::fs::write(root.join(format!("f{i}")), data).unwrap();
        }
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("8M")));
        let fs = Arc::new(Ext4Fs::open(mem_file(&img)).unwrap());
        std::thread::scope(|s| {
            for (i, want) in files.iter().enumerate() {
                let fs = fs.clone();
                s.spawn(move || {
                    for _ in 0..20 {
                        let got = fs.read_file(format!("/f{i}").as_bytes(), 1 << 20).unwrap();
                        assert_eq!(&got, want);
                    }
                });
            }
        });
    }

    #[test]
    fn far_seeks_into_sparse_files_are_capped() {
        if !need(&["mke2fs", "truncate"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        // 80 GiB of hole, then five bytes: mke2fs -d keeps the hole.
        let huge = root.join("huge");
        assert!(run(Command::new("truncate").args(["-s", "80G"]).arg(&huge)));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&huge)
            .unwrap();
        std::io::Write::write_all(&mut f, b"tail\n").unwrap();
        drop(f);
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("16M")));
        let fs = Ext4Fs::open(mem_file(&img)).unwrap();
        let p = gp("/huge");
        assert_eq!(fs.lstat(&p).unwrap().size, (80 << 30) + 5);
        let mut buf = [1u8; 8];
        assert_eq!(fs.read_at(&p, 1 << 30, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0; 8]);
        let e = fs.read_at(&p, 80 << 30, &mut buf).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LimitExceeded {
                    limit: MAX_SEEK_BLOCKS,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// The superblock of a small real image, as raw bytes.
    fn real_superblock() -> Option<RawSuperblock> {
        if !need(&["mke2fs"]) {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-O", "64bit"])
            .arg(&img)
            .arg("8M")));
        let d = mem_file(&img);
        Some(d.read_struct(SUPERBLOCK_OFFSET).unwrap())
    }

    fn sb_detail(raw: &RawSuperblock) -> String {
        match Superblock::try_from(raw) {
            Err(Error::Corrupt {
                structure,
                offset,
                detail,
            }) => {
                assert_eq!((structure.as_str(), offset), ("ext4 superblock", 1024));
                detail
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn superblock_validation_branches() {
        let Some(good) = real_superblock() else {
            return;
        };
        let sb = Superblock::try_from(&good).unwrap();
        assert_eq!(sb.block_size, 1024 << good.s_log_block_size.get());
        assert_eq!(sb.desc_size, 64);
        assert_eq!(sb.kind(), FsKind::Ext4);

        let mut r = good.clone();
        r.s_magic = U16::new(0x1234);
        assert_eq!(sb_detail(&r), "s_magic 0x1234 is not 0xef53");
        let mut r = good.clone();
        r.s_log_block_size = U32::new(7);
        assert_eq!(sb_detail(&r), "s_log_block_size 7 out of range 0..=6");
        let mut r = good.clone();
        r.s_first_data_block = U32::new(r.s_blocks_count_lo.get());
        r.s_blocks_count_hi = U32::new(0);
        assert!(sb_detail(&r).starts_with("s_first_data_block "));
        let mut r = good.clone();
        r.s_blocks_per_group = U32::new(0);
        assert_eq!(
            sb_detail(&r),
            format!(
                "s_blocks_per_group 0 out of range 1..={}",
                sb.block_size * 8
            )
        );
        let mut r = good.clone();
        r.s_inodes_per_group = U32::new(0);
        assert_eq!(
            sb_detail(&r),
            format!(
                "s_inodes_per_group 0 out of range 1..={}",
                sb.block_size * 8
            )
        );
        let mut r = good.clone();
        r.s_inode_size = U16::new(200);
        assert_eq!(
            sb_detail(&r),
            format!(
                "s_inode_size 200 is not a power of two in 128..={}",
                sb.block_size
            )
        );
        let mut r = good.clone();
        r.s_desc_size = U16::new(48);
        assert_eq!(
            sb_detail(&r),
            "s_desc_size 48 is not a power of two in 32..=1024"
        );
        // Without 64bit the descriptor size field is ignored.
        r.s_feature_incompat = U32::new(r.s_feature_incompat.get() & !incompat::IS_64BIT);
        assert_eq!(Superblock::try_from(&r).unwrap().desc_size, 32);
    }

    #[test]
    fn open_refuses_filesystem_larger_than_device() {
        if !need(&["mke2fs"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&img)
            .arg("8M")));
        let mut bytes = std::fs::read(&img).unwrap();
        bytes.truncate(4 << 20);
        let e = Ext4Fs::open(Arc::new(MemDisk::from_vec(bytes))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt ext4 superblock at 0x400: s_blocks_count 8192 of 1024 bytes exceeds the 4194304-byte device"
        );
    }

    #[test]
    fn state_flags_come_from_the_superblock() {
        if !need(&["mke2fs"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_tree(&root);
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext3", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("16M")));
        let mut bytes = std::fs::read(&img).unwrap();
        // s_state = errors detected, not clean; INCOMPAT_RECOVER set.
        bytes[1024 + 0x3A..1024 + 0x3C].copy_from_slice(&2u16.to_le_bytes());
        bytes[1024 + 0x60] |= incompat::RECOVER as u8;
        let fs = Ext4Fs::open(Arc::new(MemDisk::from_vec(bytes))).unwrap();
        assert!(fs.needs_recovery());
        assert_eq!(
            fs.state(),
            Ext4State {
                needs_recovery: true,
                cleanly_unmounted: false,
                errors_detected: true,
                orphans_being_recovered: false,
            }
        );
        // RECOVER is an ext3 feature: still ext3 for blkid.
        assert_eq!(fs.info().kind, FsKind::Ext3);
        // ext4-view 1.0 cannot replay an ext3 (JBD2 without 64bit/csum_v3) journal; we read
        // the on-disk state instead.
        assert_eq!(
            fs.journal(),
            &JournalView::Skipped {
                reason: "unsupported ext4 feature: missing required journal features: 18".into()
            }
        );
        assert_eq!(fs.read_file(b"/etc/hostname", 100).unwrap(), b"guest\n");
    }

    #[test]
    fn recover_flag_on_csum_filesystem_is_replayed() {
        if !need(&["mke2fs", "debugfs"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_tree(&root);
        let img = tmp.path().join("img");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-O", "64bit,metadata_csum", "-d"])
            .arg(&root)
            .arg(&img)
            .arg("16M")));
        let mut bytes = std::fs::read(&img).unwrap();
        let sb = &mut bytes[1024..2048];
        // Our crc32c agrees with mke2fs's superblock checksum.
        assert_eq!(
            crc32c_raw(!0, &sb[..S_CHECKSUM]).to_le_bytes(),
            sb[S_CHECKSUM..]
        );
        sb[0x60] |= incompat::RECOVER as u8;
        let sum = crc32c_raw(!0, &sb[..S_CHECKSUM]);
        sb[S_CHECKSUM..].copy_from_slice(&sum.to_le_bytes());
        // mke2fs leaves the JBD2 features to the kernel's first mount: set 64bit|csum_v3,
        // checksum type crc32c, and the journal superblock checksum, as the kernel would.
        let jblock: usize = String::from_utf8_lossy(&debugfs(&img, "bmap <8> 0"))
            .trim()
            .parse()
            .unwrap();
        let jsb = &mut bytes[jblock * 1024..jblock * 1024 + 1024];
        assert_eq!(jsb[..4], [0xc0, 0x3b, 0x39, 0x98], "jbd2 magic");
        jsb[0x28..0x2C].copy_from_slice(&0x12u32.to_be_bytes());
        jsb[0x50] = 4;
        jsb[0xFC..0x100].fill(0);
        let jsum = crc32c_raw(!0, jsb);
        jsb[0xFC..0x100].copy_from_slice(&jsum.to_be_bytes());
        let dev = Arc::new(MemDisk::from_vec(bytes));
        let fs = Ext4Fs::open(dev.clone()).unwrap();
        assert_eq!(fs.journal(), &JournalView::Replayed);
        assert_eq!(fs.read_file(b"/etc/hostname", 100).unwrap(), b"guest\n");
        // The patched superblock clears RECOVER and keeps a valid checksum.
        let patched = superblock_without_recover(&*dev).unwrap();
        assert_eq!(patched[0x60] & incompat::RECOVER as u8, 0);
        assert_eq!(
            crc32c_raw(!0, &patched[..S_CHECKSUM]).to_le_bytes(),
            patched[S_CHECKSUM..]
        );
    }

    #[test]
    fn ext_kind_matches_blkid_rules() {
        const HAS_JOURNAL: u32 = compat::HAS_JOURNAL;
        const EXTENTS: u32 = 0x40;
        const HUGE_FILE: u32 = 0x8;
        let cases = [
            ((0, incompat::FILETYPE, 0x3), FsKind::Ext2),
            (
                (0, incompat::FILETYPE | incompat::META_BG, 0x7),
                FsKind::Ext2,
            ),
            ((HAS_JOURNAL, incompat::FILETYPE, 0x3), FsKind::Ext3),
            (
                (HAS_JOURNAL, incompat::FILETYPE | incompat::RECOVER, 0x3),
                FsKind::Ext3,
            ),
            (
                (HAS_JOURNAL, incompat::FILETYPE | EXTENTS, 0x3),
                FsKind::Ext4,
            ),
            ((0, incompat::FILETYPE | EXTENTS, 0), FsKind::Ext4),
            ((HAS_JOURNAL, incompat::FILETYPE, HUGE_FILE), FsKind::Ext4),
            ((0, incompat::FILETYPE | incompat::RECOVER, 0), FsKind::Ext4),
        ];
        for ((c, i, r), want) in cases {
            assert_eq!(
                ext_kind(c, i, r),
                want,
                "compat {c:#x} incompat {i:#x} ro {r:#x}"
            );
        }
    }

    #[test]
    fn uuid_and_label_formatting() {
        assert_eq!(format_uuid(&[0; 16]), None);
        let u: [u8; 16] = core::array::from_fn(|i| (i as u8) * 17);
        assert_eq!(
            format_uuid(&u).unwrap(),
            "00112233-4455-6677-8899-aabbccddeeff"
        );
        assert_eq!(label_from_bytes(b"root\0\0junk"), Some("root".into()));
        assert_eq!(label_from_bytes(b"\0abc"), None);
    }

    #[test]
    fn budget_runs_out_and_maps_to_limit_exceeded() {
        let b = Budget::default();
        b.reset(10);
        assert!(b.take(6).is_ok());
        let e = b.take(5).unwrap_err();
        assert_eq!(e.limit, 10);
        assert_eq!(
            e.to_string(),
            "read budget of 10 bytes for one call exhausted"
        );
        let mapped = map_err(Ext4Error::Io(Box::new(e)), &gp("/x"));
        assert!(matches!(mapped, Error::LimitExceeded { limit: 10, .. }));
        assert_eq!(call_budget(1 << 30, 100), (4 << 30) + 200);
        assert_eq!(call_budget(1, 0), 16 << 20);
    }

    #[test]
    fn device_errors_pass_through() {
        let e = map_err(
            Ext4Error::Io(Box::new(disk::Error::io(5, std::io::Error::other("x")))),
            &gp("/x"),
        );
        assert!(matches!(e, Error::Disk(disk::Error::Io { offset: 5, .. })));
        // Not ext4 at all.
        let e = Ext4Fs::open(Arc::new(MemDisk::from_vec(vec![0; 4096]))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt ext4 superblock at 0x400: s_magic 0x0000 is not 0xef53"
        );
    }
}
