//! Recognising what a block device holds, without mounting it.
//!
//! (Signature checks are being implemented; see the issue tracker.)

use std::sync::Arc;

use disk::BlockRead;

use crate::{FsRead, Result};

/// What a device (partition, LV, whole disk) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FsKind {
    /// ext2 (no journal).
    Ext2,
    /// ext3 (journal, no extents).
    Ext3,
    /// ext4.
    Ext4,
    /// NTFS.
    Ntfs,
    /// FAT12.
    Fat12,
    /// FAT16.
    Fat16,
    /// FAT32.
    Fat32,
    /// XFS.
    Xfs,
    /// btrfs (recognised; not readable yet).
    Btrfs,
    /// Linux swap.
    Swap,
    /// LUKS encrypted volume.
    Luks,
    /// LVM2 physical volume.
    LvmPv,
    /// Linux md RAID member.
    MdRaid,
    /// BitLocker-encrypted NTFS.
    BitLocker,
    /// Nothing we recognise.
    Unknown,
}

impl FsKind {
    /// The name `blkid` (and libguestfs) use: `ext4`, `ntfs`, `vfat`, `xfs`, `swap`, `crypto_LUKS`, ...
    #[must_use]
    pub fn blkid_name(self) -> &'static str {
        match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
            Self::Ntfs => "ntfs",
            Self::Fat12 | Self::Fat16 | Self::Fat32 => "vfat",
            Self::Xfs => "xfs",
            Self::Btrfs => "btrfs",
            Self::Swap => "swap",
            Self::Luks => "crypto_LUKS",
            Self::LvmPv => "LVM2_member",
            Self::MdRaid => "linux_raid_member",
            Self::BitLocker => "BitLocker",
            Self::Unknown => "unknown",
        }
    }

    /// True if [`open`] can read files from this kind.
    #[must_use]
    pub fn is_readable(self) -> bool {
        matches!(
            self,
            Self::Ext2
                | Self::Ext3
                | Self::Ext4
                | Self::Ntfs
                | Self::Fat12
                | Self::Fat16
                | Self::Fat32
                | Self::Xfs
        )
    }
}

/// The result of probing a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What the device holds.
    pub kind: FsKind,
    /// Filesystem UUID (or serial) as `blkid` prints it, if any.
    pub uuid: Option<String>,
    /// Label, if any.
    pub label: Option<String>,
}

/// Identifies what `dev` holds by its signatures.
///
/// # Errors
/// Only I/O errors; unrecognised content is `FsKind::Unknown`.
pub fn probe(dev: &dyn BlockRead) -> Result<Probe> {
    let _ = dev;
    Err(crate::Error::unsupported("probe", "not implemented yet"))
}

/// Opens the filesystem on `dev` for reading, choosing the backend by [`probe`].
///
/// # Errors
/// [`crate::Error::Unsupported`] for kinds that are recognised but not readable; corruption.
pub fn open(dev: Arc<dyn BlockRead>) -> Result<Box<dyn FsRead>> {
    let _ = dev;
    Err(crate::Error::unsupported(
        "filesystem",
        "not implemented yet",
    ))
}
