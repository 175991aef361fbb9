//! Partition tables: MBR (with the EBR chain of logical partitions) and GPT.
//!
//! [`read_table`] decides which table a disk carries, the way Linux's partition code does, and
//! returns every partition with its Linux number (so `sda5` is [`Partition::number`] 5), its byte
//! range, its type and its `PARTUUID`. Anything odd but survivable (a damaged primary GPT header,
//! a hybrid MBR, a truncated EBR chain, a backup header that is not at the end of a grown disk) is
//! reported as a [`TableNote`] with a stable code rather than failing (house style S9).
//!
//! # Why our own parsers
//! `gptman` and `mbrman` are written for tools that *edit* tables. Reading them here would lose
//! three things this crate needs: (1) hostile-input guarantees, every count, chain and allocation
//! is bounded by a named limit and no image byte can panic (S11, S12); (2) fallback to the backup
//! GPT header with a note saying so, instead of an error or a silent switch; (3) Linux numbering
//! of logical partitions and Linux's rules for when a GPT is believed (protective MBR present).
//!
//! # Sector size
//! GPT and MBR addresses are in logical sectors. We use the device's
//! [`BlockRead::logical_sector_size`], but a raw image copied from a 4Kn disk reports 512, so when no
//! GPT header is at LBA 1 of 512-byte sectors we also look at LBA 1 of 4096-byte sectors and note
//! `"sector-size-4096-detected"`.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use disk::{BlockRead, MemDisk};
//! use disk::partition::{TableKind, read_table};
//!
//! // One MBR partition of type 0x83 from LBA 2048, 4096 sectors long.
//! let mut img = vec![0u8; 4 << 20];
//! img[446 + 4] = 0x83;
//! img[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
//! img[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
//! img[510..512].copy_from_slice(&[0x55, 0xAA]);
//! let dev: Arc<dyn BlockRead> = Arc::new(MemDisk::from_vec(img));
//! let table = read_table(&*dev)?;
//! assert_eq!(table.kind, TableKind::Mbr);
//! let p = table.get(1).expect("partition 1");
//! assert_eq!((p.start, p.len), (2048 * 512, 4096 * 512));
//! assert_eq!(p.view(dev)?.size(), 4096 * 512);
//! # Ok::<(), disk::Error>(())
//! ```

#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::fmt;
use std::sync::Arc;

use crate::Result;
use crate::block::BlockRead;
use crate::view::Slice;

pub mod gpt;
pub mod mbr;

#[cfg(test)]
pub(crate) mod testutil;

pub use gpt::Guid;

/// Sector sizes we try when looking for a GPT header (UEFI 2.10 §5.3.1: the header is at LBA 1).
const CANDIDATE_SECTOR_SIZES: [u32; 2] = [512, 4096];
/// Logical sector sizes we believe a device about (powers of two; Linux's block layer allows
/// 512..=65536 bytes, `blk_validate_block_size`).
const SECTOR_SIZE_RANGE: std::ops::RangeInclusive<u32> = 512..=65536;

/// Which kind of partition table a disk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// A DOS/MBR table, possibly with logical partitions in an extended partition.
    Mbr,
    /// A GUID partition table (UEFI 2.10 §5.3).
    Gpt,
    /// No partition table: the disk is unpartitioned (or its first sector is unrecognised).
    None,
}

/// A partition's type, as the table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionType {
    /// The MBR system-ID byte, such as `0x83` (Linux) or `0x07` (NTFS).
    Mbr(u8),
    /// The GPT partition type GUID.
    Gpt {
        /// The type GUID, such as [`gpt::types::EFI_SYSTEM`].
        type_guid: Guid,
    },
}

/// MBR type bytes of extended partitions that hold an EBR chain (Linux `is_extended_partition`).
pub const MBR_EXTENDED_TYPES: [u8; 3] = [0x05, 0x0F, 0x85];
/// MBR type byte of an EFI system partition.
pub const MBR_TYPE_ESP: u8 = 0xEF;
/// MBR type byte of a Linux LVM physical volume.
pub const MBR_TYPE_LINUX_LVM: u8 = 0x8E;
/// MBR type byte of the GPT protective partition (UEFI 2.10 §5.2.3).
pub const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xEE;

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Linux's partition number: MBR primaries 1–4 by slot, logical partitions 5.. in chain order,
    /// GPT entry index + 1.
    pub number: u32,
    /// Start in bytes from the start of the disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// The type recorded in the table.
    pub kind: PartitionType,
    /// The `PARTUUID` as Linux prints it: the GPT unique GUID in lowercase, or for MBR the disk
    /// signature and number, `"1234abcd-05"`.
    pub part_uuid: Option<String>,
    /// The GPT partition name, if not empty.
    pub name: Option<String>,
    /// The MBR boot flag (status `0x80`), or GPT attribute bit 2 ("legacy BIOS bootable").
    pub bootable: bool,
    /// The GPT attribute bits (UEFI 2.10 table 5.8); zero for MBR.
    pub attributes: u64,
}

impl Partition {
    /// Whether this is an EFI system partition (GPT type or MBR `0xEF`).
    #[must_use]
    pub fn is_esp(&self) -> bool {
        match self.kind {
            PartitionType::Mbr(t) => t == MBR_TYPE_ESP,
            PartitionType::Gpt { type_guid } => type_guid == gpt::types::EFI_SYSTEM,
        }
    }
    /// Whether this partition is marked as an LVM physical volume.
    #[must_use]
    pub fn is_linux_lvm(&self) -> bool {
        match self.kind {
            PartitionType::Mbr(t) => t == MBR_TYPE_LINUX_LVM,
            PartitionType::Gpt { type_guid } => type_guid == gpt::types::LINUX_LVM,
        }
    }
    /// Whether this is a GRUB BIOS boot partition (GPT only).
    #[must_use]
    pub fn is_bios_boot(&self) -> bool {
        matches!(self.kind, PartitionType::Gpt { type_guid } if type_guid == gpt::types::BIOS_BOOT)
    }
    /// Whether this is the Microsoft reserved partition (GPT only).
    #[must_use]
    pub fn is_microsoft_reserved(&self) -> bool {
        matches!(self.kind, PartitionType::Gpt { type_guid }
            if type_guid == gpt::types::MICROSOFT_RESERVED)
    }
    /// Whether this is an MBR extended partition (a container for logical partitions).
    #[must_use]
    pub fn is_extended(&self) -> bool {
        matches!(self.kind, PartitionType::Mbr(t) if MBR_EXTENDED_TYPES.contains(&t))
    }
    /// The end of the partition in bytes (exclusive), saturating.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
    /// A device view of this partition on `dev`.
    ///
    /// # Errors
    /// [`Error::OutOfBounds`](crate::Error::OutOfBounds) if the partition passes the end of `dev` (a truncated image).
    pub fn view(&self, dev: Arc<dyn BlockRead>) -> Result<Slice<dyn BlockRead>> {
        Slice::new(dev, self.start, self.len)
    }
}

/// Something unusual about a table that did not stop it from being read (house style S9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNote {
    /// A stable code for recipes and tests, such as `"gpt-primary-damaged-backup-used"`.
    pub code: &'static str,
    /// What happened, with offsets.
    pub message: String,
}

impl fmt::Display for TableNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Stable note codes.
pub mod notes {
    /// The primary GPT header or its entry array is damaged; the backup was used.
    pub const GPT_BACKUP_USED: &str = "gpt-primary-damaged-backup-used";
    /// The backup GPT header is damaged or disagrees with the primary.
    pub const GPT_BACKUP_DAMAGED: &str = "gpt-backup-damaged";
    /// The primary header's alternate LBA is not the last sector (typical of a grown disk).
    pub const GPT_BACKUP_NOT_AT_END: &str = "gpt-backup-not-at-end";
    /// The MBR has the 0xEE protective entry and other partitions (a hybrid MBR).
    pub const GPT_HYBRID_MBR: &str = "gpt-hybrid-mbr";
    /// A GPT was found although sector 0 has no MBR boot signature.
    pub const GPT_NO_PROTECTIVE_MBR: &str = "gpt-no-protective-mbr";
    /// A GPT header exists but the MBR has no 0xEE entry, so (like Linux) the MBR was used.
    pub const GPT_IGNORED: &str = "gpt-ignored-no-protective-entry";
    /// A GPT entry was skipped because its range is invalid.
    pub const GPT_ENTRY_INVALID: &str = "gpt-entry-invalid";
    /// The GPT header was found with 4096-byte sectors although the device reports another size.
    pub const SECTOR_SIZE_4096: &str = "sector-size-4096-detected";
    /// The GPT header was found with 512-byte sectors although the device reports another size.
    pub const SECTOR_SIZE_512: &str = "sector-size-512-detected";
    /// The device reports a logical sector size that is not a power of two in 512..=65536;
    /// 512 was used.
    pub const SECTOR_SIZE_INVALID: &str = "sector-size-invalid";
    /// The EBR chain was cut short (loop, cap, link outside the extended partition, bad sector).
    pub const MBR_EBR_TRUNCATED: &str = "mbr-ebr-chain-truncated";
    /// A partition reaches past the end of the disk.
    pub const PARTITION_BEYOND_END: &str = "partition-beyond-end";
    /// A logical partition lies outside its extended partition.
    pub const MBR_LOGICAL_OUTSIDE: &str = "mbr-logical-outside-extended";
    /// Sector 0 has the 0x55AA signature but a status byte other than 0x00/0x80 (not an MBR).
    pub const MBR_INVALID_STATUS: &str = "mbr-invalid-status";
}

/// The partition table of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    /// Which table was found.
    pub kind: TableKind,
    /// The logical sector size the table's addresses were read in.
    pub sector_size: u32,
    /// The partitions, in Linux number order.
    pub partitions: Vec<Partition>,
    /// The MBR disk signature (offset 440), when sector 0 carries an MBR signature.
    pub mbr_disk_signature: Option<u32>,
    /// The GPT disk GUID.
    pub disk_guid: Option<Guid>,
    /// The first 440 bytes of sector 0 (the MBR boot code); shorter only if the disk is.
    pub boot_code: Vec<u8>,
    /// Unusual findings.
    pub notes: Vec<TableNote>,
}

impl PartitionTable {
    /// The partition with Linux number `n`.
    #[must_use]
    pub fn get(&self, n: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == n)
    }
    /// Whether a note with `code` was recorded.
    #[must_use]
    pub fn has_note(&self, code: &str) -> bool {
        self.notes.iter().any(|n| n.code == code)
    }
}

/// Reads the partition table of `dev`.
///
/// The decision follows Linux: a valid GPT is used when the MBR has a 0xEE entry (protective or
/// hybrid) or when sector 0 has no MBR signature at all; otherwise a valid MBR is used; otherwise
/// the disk is [`TableKind::None`].
///
/// # Errors
/// [`Error::Io`](crate::Error::Io) if the device fails. [`Error::Corrupt`](crate::Error::Corrupt)
/// if a GPT is announced (an 0xEE entry in the MBR, or a GPT signature at LBA 1 with no MBR) but
/// both the primary and the backup GPT are unusable; the error is the primary's.
pub fn read_table(dev: &dyn BlockRead) -> Result<PartitionTable> {
    let mut notes = Vec::new();
    let sector0 = read_prefix(dev, 0, mbr::MBR_SIZE)?;
    let boot_code = sector0
        .get(..mbr::BOOT_CODE_LEN.min(sector0.len()))
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let mbr = mbr::RawMbr::parse(&sector0);
    let reported = dev.logical_sector_size();
    let dev_ss = if reported.is_power_of_two() && SECTOR_SIZE_RANGE.contains(&reported) {
        reported
    } else {
        notes.push(TableNote {
            code: notes::SECTOR_SIZE_INVALID,
            message: format!("the device reports {reported}-byte sectors; using 512"),
        });
        512
    };

    let has_ee = mbr
        .as_ref()
        .is_some_and(|m| m.entries().any(|e| e.os_type == MBR_TYPE_GPT_PROTECTIVE));

    // Find a GPT signature, trying the device's sector size first.
    let mut gpt_ss = None;
    let mut order = vec![dev_ss];
    order.extend(CANDIDATE_SECTOR_SIZES.iter().filter(|&&s| s != dev_ss));
    for ss in order {
        if gpt::has_signature(dev, ss)? {
            gpt_ss = Some(ss);
            break;
        }
    }

    let use_gpt = match (&mbr, gpt_ss) {
        (_, None) => false,
        (None, Some(_)) => {
            if sector0.get(mbr::SIGNATURE_OFFSET..mbr::MBR_SIZE) != Some(&mbr::BOOT_SIGNATURE[..]) {
                notes.push(TableNote {
                    code: notes::GPT_NO_PROTECTIVE_MBR,
                    message: "sector 0 has no 0x55aa signature but a gpt header exists".into(),
                });
            }
            true
        }
        (Some(_), Some(_)) if has_ee => true,
        (Some(_), Some(ss)) => {
            notes.push(TableNote {
                code: notes::GPT_IGNORED,
                message: format!(
                    "gpt header at {:#x} ignored: the mbr has no 0xee entry",
                    u64::from(ss)
                ),
            });
            false
        }
    };

    if use_gpt || (has_ee && gpt_ss.is_none()) {
        // With an 0xEE entry but no primary signature, the backup may still be intact.
        let ss = gpt_ss.unwrap_or(dev_ss);
        if ss != dev_ss {
            notes.push(TableNote {
                code: if ss == 4096 {
                    notes::SECTOR_SIZE_4096
                } else {
                    notes::SECTOR_SIZE_512
                },
                message: format!(
                    "gpt header found at lba 1 of {ss}-byte sectors; the device reports {dev_ss}"
                ),
            });
        }
        if let Some(m) = &mbr {
            let others = m
                .entries()
                .filter(|e| !e.is_empty() && e.os_type != MBR_TYPE_GPT_PROTECTIVE)
                .count();
            if others > 0 {
                notes.push(TableNote {
                    code: notes::GPT_HYBRID_MBR,
                    message: format!("the mbr has {others} partition(s) besides the 0xee entry"),
                });
            }
        }
        let g = gpt::read(dev, ss, &mut notes)?;
        let partitions = g.partitions;
        check_beyond_end(dev.size(), &partitions, &mut notes);
        return Ok(PartitionTable {
            kind: TableKind::Gpt,
            sector_size: ss,
            partitions,
            mbr_disk_signature: mbr.as_ref().map(|m| m.disk_signature),
            disk_guid: Some(g.disk_guid),
            boot_code,
            notes,
        });
    }

    let Some(m) = mbr else {
        if sector0.get(mbr::SIGNATURE_OFFSET..mbr::MBR_SIZE) == Some(&mbr::BOOT_SIGNATURE[..]) {
            notes.push(TableNote {
                code: notes::MBR_INVALID_STATUS,
                message: "sector 0 has a 0x55aa signature but partition status bytes other than 0x00/0x80, so it is not an mbr".into(),
            });
        }
        return Ok(PartitionTable {
            kind: TableKind::None,
            sector_size: dev_ss,
            partitions: Vec::new(),
            mbr_disk_signature: None,
            disk_guid: None,
            boot_code,
            notes,
        });
    };
    let partitions = mbr::read_partitions(dev, &m, dev_ss, &mut notes)?;
    check_beyond_end(dev.size(), &partitions, &mut notes);
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: dev_ss,
        partitions,
        mbr_disk_signature: Some(m.disk_signature),
        disk_guid: None,
        boot_code,
        notes,
    })
}

fn check_beyond_end(size: u64, parts: &[Partition], notes: &mut Vec<TableNote>) {
    for p in parts {
        if p.start.checked_add(p.len).is_none_or(|end| end > size) {
            notes.push(TableNote {
                code: notes::PARTITION_BEYOND_END,
                message: format!(
                    "partition {} at {:#x}+{:#x} passes the end of the {size}-byte disk",
                    p.number, p.start, p.len
                ),
            });
        }
    }
}

/// Reads `min(len, size - offset)` bytes at `offset` (empty if `offset` is past the end).
fn read_prefix(dev: &dyn BlockRead, offset: u64, len: usize) -> Result<Vec<u8>> {
    let avail = dev.size().saturating_sub(offset);
    let n = usize::try_from(avail).map_or(len, |a| a.min(len));
    let mut buf = vec![0u8; n];
    dev.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}

/// Fuzzing entry points (house style S17).
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use super::read_table;
    use crate::block::{BlockRead, SharedRead};
    use crate::mem::MemDisk;

    /// A [`MemDisk`] that reports a chosen logical sector size.
    struct SectorDisk(MemDisk, u32);
    impl BlockRead for SectorDisk {
        fn size(&self) -> u64 {
            self.0.size()
        }
        fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
            self.0.read_exact_at(offset, buf)
        }
        fn logical_sector_size(&self) -> u32 {
            self.1
        }
    }

    /// Reads a partition table from `data` as a disk (with 512- and 4096-byte sectors) and opens
    /// every partition it finds; must never panic.
    pub fn fuzz_read_table(data: &[u8]) {
        for ss in [512, 4096] {
            let dev: SharedRead = Arc::new(SectorDisk(MemDisk::from_vec(data.to_vec()), ss));
            if let Ok(t) = read_table(&*dev) {
                for p in &t.partitions {
                    if let Ok(v) = p.view(dev.clone()) {
                        let mut b = [0u8; 16];
                        let _ = v.read_exact_at(0, &mut b);
                    }
                    let _ = (p.is_esp(), p.is_extended(), p.is_linux_lvm());
                }
                for n in &t.notes {
                    let _ = n.to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
