//! The GUID partition table (UEFI 2.10 §5.3).
//!
//! The primary header is at LBA 1 and its entry array usually at LBA 2; the backup header is at
//! the last LBA with its array just before it. Both headers carry a CRC32 of themselves and of the
//! entry array. When the primary is unusable we read the backup (at the primary's alternate LBA if
//! that header could be read, else at the last LBA) and record a note.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{Partition, PartitionType, TableNote, notes};
use crate::block::BlockRead;
use crate::{Error, Result};

/// "EFI PART" (UEFI 2.10 table 5.5, offset 0).
pub const SIGNATURE: [u8; 8] = *b"EFI PART";
/// Smallest header size (UEFI 2.10 table 5.5: 92 bytes are defined).
pub const MIN_HEADER_SIZE: u32 = 92;
/// Smallest entry size; entries are 128·2ⁿ bytes (UEFI 2.10 §5.3.2, SizeOfPartitionEntry).
pub const MIN_ENTRY_SIZE: u32 = 128;
/// Most entries we accept. The spec sets no limit; tools create 128, and Linux's minor-number space
/// makes more than a few hundred useless. 4096 bounds a hostile header (house style S12).
pub const MAX_ENTRIES: u32 = 4096;
/// Most bytes of entry array we read (4096 entries of 1 KiB).
pub const MAX_ENTRY_ARRAY_BYTES: u64 = 4 << 20;
/// Length of the name in an entry (UEFI 2.10 table 5.6: 72 bytes of UTF-16LE at offset 56).
const NAME_LEN: usize = 72;
/// Attribute bit 2, "LegacyBIOSBootable" (UEFI 2.10 table 5.7).
const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Offset of HeaderCRC32 in the header (UEFI 2.10 table 5.5).
const HEADER_CRC_OFFSET: usize = 16;

/// A GUID as stored on disk (mixed-endian: the first three fields little-endian).
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(transparent)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The all-zero GUID, which marks an unused entry.
    pub const NIL: Self = Self([0; 16]);

    /// Builds a GUID from its textual fields, `d1-d2-d3-d4[0..2]-d4[2..8]`.
    #[must_use]
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Parses the textual form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, any case).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b.get(i) != Some(&b'-')) {
            return None;
        }
        let hex: String = s.chars().filter(|&c| c != '-').collect();
        let mut v = [0u8; 16];
        for (i, out) in v.iter_mut().enumerate() {
            let pair = hex.get(i.checked_mul(2)?..i.checked_mul(2)?.checked_add(2)?)?;
            *out = u8::from_str_radix(pair, 16).ok()?;
        }
        let d1 = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        let d2 = u16::from_be_bytes([v[4], v[5]]);
        let d3 = u16::from_be_bytes([v[6], v[7]]);
        let d4 = [v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]];
        Some(Self::from_fields(d1, d2, d3, d4))
    }

    /// Whether this is the nil GUID.
    #[must_use]
    pub fn is_nil(&self) -> bool {
        *self == Self::NIL
    }
}

impl std::fmt::Display for Guid {
    /// Lowercase with dashes, as Linux prints `PARTUUID`s.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// Well-known partition type GUIDs (UEFI 2.10 table 5.7 and the Discoverable Partitions Spec).
pub mod types {
    use super::Guid;

    /// EFI system partition, `c12a7328-f81f-11d2-ba4b-00a0c93ec93b`.
    pub const EFI_SYSTEM: Guid = Guid::from_fields(
        0xC12A_7328,
        0xF81F,
        0x11D2,
        [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
    );
    /// GRUB BIOS boot partition, `21686148-6449-6e6f-744e-656564454649` ("Hah!IdontNeedEFI").
    pub const BIOS_BOOT: Guid = Guid::from_fields(0x2168_6148, 0x6449, 0x6E6F, *b"tNeedEFI");
    /// Microsoft reserved partition, `e3c9e316-0b5c-4db8-817d-f92df00215ae`.
    pub const MICROSOFT_RESERVED: Guid = Guid::from_fields(
        0xE3C9_E316,
        0x0B5C,
        0x4DB8,
        [0x81, 0x7D, 0xF9, 0x2D, 0xF0, 0x02, 0x15, 0xAE],
    );
    /// Microsoft basic data, `ebd0a0a2-b9e5-4433-87c0-68b6b72699c7`.
    pub const MICROSOFT_BASIC_DATA: Guid = Guid::from_fields(
        0xEBD0_A0A2,
        0xB9E5,
        0x4433,
        [0x87, 0xC0, 0x68, 0xB6, 0xB7, 0x26, 0x99, 0xC7],
    );
    /// Windows recovery environment, `de94bba4-06d1-4d40-a16a-bfd50179d6ac`.
    pub const WINDOWS_RECOVERY: Guid = Guid::from_fields(
        0xDE94_BBA4,
        0x06D1,
        0x4D40,
        [0xA1, 0x6A, 0xBF, 0xD5, 0x01, 0x79, 0xD6, 0xAC],
    );
    /// Linux filesystem data, `0fc63daf-8483-4772-8e79-3d69d8477de4`.
    pub const LINUX_FILESYSTEM: Guid = Guid::from_fields(
        0x0FC6_3DAF,
        0x8483,
        0x4772,
        [0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D, 0xE4],
    );
    /// Linux LVM physical volume, `e6d6d379-f507-44c2-a23c-238f2a3df928`.
    pub const LINUX_LVM: Guid = Guid::from_fields(
        0xE6D6_D379,
        0xF507,
        0x44C2,
        [0xA2, 0x3C, 0x23, 0x8F, 0x2A, 0x3D, 0xF9, 0x28],
    );
    /// Linux swap, `0657fd6d-a4ab-43c4-84e5-0933c84b4f4f`.
    pub const LINUX_SWAP: Guid = Guid::from_fields(
        0x0657_FD6D,
        0xA4AB,
        0x43C4,
        [0x84, 0xE5, 0x09, 0x33, 0xC8, 0x4B, 0x4F, 0x4F],
    );
}

/// The GPT header layout (UEFI 2.10 table 5.5).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawHeader {
    signature: [u8; 8],
    revision: U32,
    header_size: U32,
    header_crc32: U32,
    reserved: U32,
    my_lba: U64,
    alternate_lba: U64,
    first_usable_lba: U64,
    last_usable_lba: U64,
    disk_guid: Guid,
    partition_entry_lba: U64,
    number_of_partition_entries: U32,
    size_of_partition_entry: U32,
    partition_entry_array_crc32: U32,
}

/// The partition entry layout (UEFI 2.10 table 5.6); larger entries have padding after it.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawEntry {
    partition_type_guid: Guid,
    unique_partition_guid: Guid,
    starting_lba: U64,
    ending_lba: U64,
    attributes: U64,
    partition_name: [u8; NAME_LEN],
}

/// A header that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) my_lba: u64,
    pub(crate) alternate_lba: u64,
    pub(crate) first_usable_lba: u64,
    pub(crate) last_usable_lba: u64,
    pub(crate) disk_guid: Guid,
    pub(crate) partition_entry_lba: u64,
    pub(crate) number_of_partition_entries: u32,
    pub(crate) size_of_partition_entry: u32,
    pub(crate) partition_entry_array_crc32: u32,
    /// Bytes of the entry array, checked against [`MAX_ENTRY_ARRAY_BYTES`].
    pub(crate) array_bytes: u64,
}

/// What [`read`] found.
pub(crate) struct Gpt {
    pub(crate) disk_guid: Guid,
    pub(crate) partitions: Vec<Partition>,
}

/// Whether LBA 1 of `ss`-byte sectors starts with "EFI PART".
pub(crate) fn has_signature(dev: &dyn BlockRead, ss: u32) -> Result<bool> {
    let at = u64::from(ss);
    if at.checked_add(8).is_none_or(|end| end > dev.size()) {
        return Ok(false);
    }
    let mut sig = [0u8; 8];
    dev.read_exact_at(at, &mut sig)?;
    Ok(sig == SIGNATURE)
}

/// Validates a header sector read from `lba` of a disk with `sectors` sectors of `ss` bytes.
pub(crate) fn parse_header(sector: &[u8], lba: u64, ss: u32, sectors: u64) -> Result<Header> {
    let at = lba.saturating_mul(u64::from(ss));
    let bad = |detail: String| Error::corrupt("gpt header", at, detail);
    let (raw, _) = RawHeader::read_from_prefix(sector)
        .map_err(|_| bad(format!("sector of {} bytes is too short", sector.len())))?;
    if raw.signature != SIGNATURE {
        return Err(bad(format!(
            "signature {:02x?} is not \"EFI PART\"",
            raw.signature
        )));
    }
    let header_size = raw.header_size.get();
    let max_size = u32::try_from(sector.len()).unwrap_or(u32::MAX).min(ss);
    if !(MIN_HEADER_SIZE..=max_size).contains(&header_size) {
        return Err(bad(format!(
            "header_size {header_size} out of range {MIN_HEADER_SIZE}..={max_size}"
        )));
    }
    // header_size <= sector.len() was just checked.
    let covered = sector
        .get(..usize::try_from(header_size).unwrap_or(usize::MAX))
        .ok_or_else(|| bad("header_size passes the sector".into()))?;
    let mut h = crc32fast::Hasher::new();
    h.update(covered.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    h.update(&[0u8; 4]);
    h.update(
        covered
            .get(HEADER_CRC_OFFSET.saturating_add(4)..)
            .unwrap_or_default(),
    );
    let crc = h.finalize();
    if crc != raw.header_crc32.get() {
        return Err(bad(format!(
            "header_crc32 {:#010x} does not match the computed {crc:#010x}",
            raw.header_crc32.get()
        )));
    }
    let my_lba = raw.my_lba.get();
    if my_lba != lba {
        return Err(bad(format!(
            "my_lba {my_lba} is not the header's lba {lba}"
        )));
    }
    let alternate_lba = raw.alternate_lba.get();
    if alternate_lba == my_lba {
        return Err(bad(format!("alternate_lba {alternate_lba} equals my_lba")));
    }
    let first = raw.first_usable_lba.get();
    let last = raw.last_usable_lba.get();
    let last_lba = sectors.saturating_sub(1);
    if first > last {
        return Err(bad(format!(
            "first_usable_lba {first} is after last_usable_lba {last}"
        )));
    }
    if last > last_lba {
        return Err(bad(format!(
            "last_usable_lba {last} out of range ..={last_lba}"
        )));
    }
    if (first..=last).contains(&my_lba) {
        return Err(bad(format!(
            "my_lba {my_lba} is inside the usable range {first}..={last}"
        )));
    }
    let entry_size = raw.size_of_partition_entry.get();
    let max_entry = u32::try_from(MAX_ENTRY_ARRAY_BYTES).unwrap_or(u32::MAX);
    if entry_size < MIN_ENTRY_SIZE || !entry_size.is_power_of_two() || entry_size > max_entry {
        return Err(bad(format!(
            "size_of_partition_entry {entry_size} is not 128·2^n up to {max_entry}"
        )));
    }
    let count = raw.number_of_partition_entries.get();
    if count > MAX_ENTRIES {
        return Err(bad(format!(
            "number_of_partition_entries {count} out of range 0..={MAX_ENTRIES}"
        )));
    }
    let array_bytes = u64::from(count).saturating_mul(u64::from(entry_size));
    if array_bytes > MAX_ENTRY_ARRAY_BYTES {
        return Err(bad(format!(
            "entry array of {array_bytes} bytes out of range 0..={MAX_ENTRY_ARRAY_BYTES}"
        )));
    }
    let entry_lba = raw.partition_entry_lba.get();
    if array_bytes > 0 {
        let array_sectors = array_bytes.div_ceil(u64::from(ss));
        let array_last = entry_lba.saturating_add(array_sectors.saturating_sub(1));
        if array_last > last_lba || entry_lba == 0 {
            return Err(bad(format!(
                "entry array at lba {entry_lba}..={array_last} out of range 1..={last_lba}"
            )));
        }
        if entry_lba <= last && array_last >= first {
            return Err(bad(format!(
                "entry array at lba {entry_lba}..={array_last} overlaps the usable range {first}..={last}"
            )));
        }
        if (entry_lba..=array_last).contains(&my_lba) {
            return Err(bad(format!(
                "entry array at lba {entry_lba}..={array_last} overlaps the header"
            )));
        }
    }
    Ok(Header {
        my_lba,
        alternate_lba,
        first_usable_lba: first,
        last_usable_lba: last,
        disk_guid: raw.disk_guid,
        partition_entry_lba: entry_lba,
        number_of_partition_entries: count,
        size_of_partition_entry: entry_size,
        partition_entry_array_crc32: raw.partition_entry_array_crc32.get(),
        array_bytes,
    })
}

fn read_header(dev: &dyn BlockRead, ss: u32, lba: u64, sectors: u64) -> Result<Header> {
    let at = lba.saturating_mul(u64::from(ss));
    let n = usize::try_from(ss).map_err(|_| Error::Usage("sector size too large".into()))?;
    let mut sector = vec![0u8; n];
    match dev.read_exact_at(at, &mut sector) {
        Ok(()) => {}
        Err(Error::OutOfBounds { .. }) => {
            return Err(Error::corrupt(
                "gpt header",
                at,
                format!("lba {lba} is past the end of the disk"),
            ));
        }
        Err(e) => return Err(e),
    }
    parse_header(&sector, lba, ss, sectors)
}

/// Reads the entry array of a validated header and checks its CRC.
fn read_array(dev: &dyn BlockRead, ss: u32, h: &Header) -> Result<Vec<u8>> {
    let at = h.partition_entry_lba.saturating_mul(u64::from(ss));
    let n = usize::try_from(h.array_bytes).map_err(|_| Error::Usage("array too large".into()))?;
    let mut arr = vec![0u8; n];
    match dev.read_exact_at(at, &mut arr) {
        Ok(()) => {}
        Err(Error::OutOfBounds { .. }) => {
            return Err(Error::corrupt(
                "gpt entry array",
                at,
                format!("{n} bytes pass the end of the disk"),
            ));
        }
        Err(e) => return Err(e),
    }
    let crc = crc32fast::hash(&arr);
    if crc != h.partition_entry_array_crc32 {
        return Err(Error::corrupt(
            "gpt entry array",
            at,
            format!(
                "partition_entry_array_crc32 {:#010x} does not match the computed {crc:#010x}",
                h.partition_entry_array_crc32
            ),
        ));
    }
    Ok(arr)
}

fn read_one(dev: &dyn BlockRead, ss: u32, lba: u64, sectors: u64) -> Result<(Header, Vec<u8>)> {
    let h = read_header(dev, ss, lba, sectors)?;
    let arr = read_array(dev, ss, &h)?;
    Ok((h, arr))
}

/// Whether an error means "this copy is unusable" (so the other copy may be tried).
fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt(_) | Error::OutOfBounds { .. })
}

/// Reads the GPT with `ss`-byte sectors, falling back to the backup header.
pub(crate) fn read(dev: &dyn BlockRead, ss: u32, notes: &mut Vec<TableNote>) -> Result<Gpt> {
    let sectors = dev.size().checked_div(u64::from(ss)).unwrap_or(0);
    let last_lba = sectors.saturating_sub(1);
    const PRIMARY_LBA: u64 = 1;
    let (header, arr) = match read_header(dev, ss, PRIMARY_LBA, sectors) {
        Ok(h) => match read_array(dev, ss, &h) {
            Ok(arr) => {
                check_backup(dev, ss, &h, sectors, notes)?;
                (h, arr)
            }
            Err(e) if is_damage(&e) => backup(dev, ss, sectors, Some(h.alternate_lba), e, notes)?,
            Err(e) => return Err(e),
        },
        Err(e) if is_damage(&e) => backup(dev, ss, sectors, None, e, notes)?,
        Err(e) => return Err(e),
    };
    if header.my_lba == PRIMARY_LBA && header.alternate_lba != last_lba {
        notes.push(TableNote {
            code: notes::GPT_BACKUP_NOT_AT_END,
            message: format!(
                "alternate_lba {} is not the last lba {last_lba} (the disk may have been resized)",
                header.alternate_lba
            ),
        });
    }
    let partitions = parse_entries(&arr, &header, ss, notes);
    Ok(Gpt {
        disk_guid: header.disk_guid,
        partitions,
    })
}

fn backup(
    dev: &dyn BlockRead,
    ss: u32,
    sectors: u64,
    alternate: Option<u64>,
    primary_err: Error,
    notes: &mut Vec<TableNote>,
) -> Result<(Header, Vec<u8>)> {
    let last_lba = sectors.saturating_sub(1);
    let mut candidates = Vec::with_capacity(2);
    if let Some(a) = alternate.filter(|&a| a < sectors) {
        candidates.push(a);
    }
    if !candidates.contains(&last_lba) {
        candidates.push(last_lba);
    }
    for lba in candidates {
        match read_one(dev, ss, lba, sectors) {
            Ok((h, arr)) => {
                tracing::debug!(lba, error = %primary_err, "using the backup gpt");
                notes.push(TableNote {
                    code: notes::GPT_BACKUP_USED,
                    message: format!(
                        "primary gpt unusable ({primary_err}); used the backup header at lba {lba} (byte {:#x})",
                        lba.saturating_mul(u64::from(ss))
                    ),
                });
                return Ok((h, arr));
            }
            Err(e) if is_damage(&e) => {
                tracing::debug!(lba, error = %e, "backup gpt unusable");
            }
            Err(e) => return Err(e),
        }
    }
    Err(primary_err)
}

/// Checks that the backup header exists and agrees with a good primary; notes if not.
fn check_backup(
    dev: &dyn BlockRead,
    ss: u32,
    primary: &Header,
    sectors: u64,
    notes: &mut Vec<TableNote>,
) -> Result<()> {
    let lba = if primary.alternate_lba < sectors {
        primary.alternate_lba
    } else {
        sectors.saturating_sub(1)
    };
    match read_header(dev, ss, lba, sectors) {
        Ok(b) if b.partition_entry_array_crc32 != primary.partition_entry_array_crc32 => {
            notes.push(TableNote {
                code: notes::GPT_BACKUP_DAMAGED,
                message: format!(
                    "backup header at lba {lba} has entry array crc {:#010x}, the primary {:#010x}",
                    b.partition_entry_array_crc32, primary.partition_entry_array_crc32
                ),
            });
        }
        Ok(_) => {}
        Err(e) if is_damage(&e) => notes.push(TableNote {
            code: notes::GPT_BACKUP_DAMAGED,
            message: format!("backup header at lba {lba} is unusable: {e}"),
        }),
        Err(e) => return Err(e),
    }
    Ok(())
}

fn parse_entries(arr: &[u8], h: &Header, ss: u32, notes: &mut Vec<TableNote>) -> Vec<Partition> {
    let es = usize::try_from(h.size_of_partition_entry).unwrap_or(usize::MAX);
    let ss64 = u64::from(ss);
    let mut out = Vec::new();
    for (number, chunk) in (1u32..).zip(arr.chunks_exact(es)) {
        let Ok((raw, _)) = RawEntry::read_from_prefix(chunk) else {
            continue; // unreachable: chunks are at least MIN_ENTRY_SIZE bytes
        };
        if raw.partition_type_guid.is_nil() {
            continue;
        }
        let first = raw.starting_lba.get();
        let last = raw.ending_lba.get();
        if first > last || first < h.first_usable_lba || last > h.last_usable_lba {
            notes.push(TableNote {
                code: notes::GPT_ENTRY_INVALID,
                message: format!(
                    "entry {number} spans lba {first}..={last}, outside the usable range {}..={}; skipped",
                    h.first_usable_lba, h.last_usable_lba
                ),
            });
            continue;
        }
        // last <= last_usable_lba < sectors, so these products fit in u64 (sectors * ss <= size).
        let start = first.saturating_mul(ss64);
        let len = last
            .saturating_sub(first)
            .saturating_add(1)
            .saturating_mul(ss64);
        let units: Vec<u16> = raw
            .partition_name
            .chunks_exact(2)
            .map(|c| {
                u16::from_le_bytes([
                    c.first().copied().unwrap_or(0),
                    c.get(1).copied().unwrap_or(0),
                ])
            })
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&units);
        let attributes = raw.attributes.get();
        out.push(Partition {
            number,
            start,
            len,
            kind: PartitionType::Gpt {
                type_guid: raw.partition_type_guid,
            },
            part_uuid: Some(raw.unique_partition_guid.to_string()),
            name: (!name.is_empty()).then_some(name),
            bootable: attributes & ATTR_LEGACY_BIOS_BOOTABLE != 0,
            attributes,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use super::*;
    use crate::partition::testutil::{GptEntrySpec, GptSpec, fix_header_crc};

    fn spec() -> GptSpec {
        let mut s = GptSpec::new(512, 2048);
        s.entries.push(GptEntrySpec {
            index: 0,
            type_guid: types::EFI_SYSTEM.0,
            unique: [0x11; 16],
            first: 34,
            last: 99,
            attrs: 0,
            name: "EFI",
        });
        s
    }

    /// A good primary header sector and a function to break one field of it.
    fn broken(f: impl FnOnce(&mut Vec<u8>)) -> Error {
        let mut h = spec().header(1, 2047, 2);
        f(&mut h);
        fix_header_crc(&mut h);
        parse_header(&h, 1, 512, 2048).unwrap_err()
    }

    fn detail(e: &Error) -> String {
        let c = e.as_corrupt().expect("corrupt");
        assert_eq!((c.structure(), c.offset()), ("gpt header", 512));
        c.detail().to_owned()
    }

    #[test]
    fn guid_text_is_mixed_endian_lowercase() {
        assert_eq!(
            types::EFI_SYSTEM.to_string(),
            "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
        );
        assert_eq!(
            &types::EFI_SYSTEM.0[..4],
            &[0x28, 0x73, 0x2A, 0xC1],
            "first field is little-endian on disk"
        );
        assert_eq!(
            types::BIOS_BOOT.to_string(),
            "21686148-6449-6e6f-744e-656564454649"
        );
        let g = Guid::parse("E6D6D379-F507-44C2-A23C-238F2A3DF928").unwrap();
        assert_eq!(g, types::LINUX_LVM);
        assert_eq!(Guid::parse("e6d6d379f50744c2a23c238f2a3df928xxxx"), None);
        assert_eq!(Guid::parse("zzd6d379-f507-44c2-a23c-238f2a3df928"), None);
    }

    #[test]
    fn good_header_parses() {
        let h = parse_header(&spec().header(1, 2047, 2), 1, 512, 2048).unwrap();
        assert_eq!(h.my_lba, 1);
        assert_eq!(h.alternate_lba, 2047);
        assert_eq!((h.first_usable_lba, h.last_usable_lba), (34, 2014));
        assert_eq!(h.partition_entry_lba, 2);
        assert_eq!(
            (h.number_of_partition_entries, h.size_of_partition_entry),
            (128, 128)
        );
        assert_eq!(h.array_bytes, 16384);
    }

    #[test]
    fn each_header_field_is_validated() {
        let mut h = spec().header(1, 2047, 2);
        h[0] = b'X';
        let e = parse_header(&h, 1, 512, 2048).unwrap_err();
        assert_eq!(
            detail(&e),
            "signature [58, 46, 49, 20, 50, 41, 52, 54] is not \"EFI PART\""
        );
        assert_eq!(
            detail(&broken(|h| h[12..16].copy_from_slice(&91u32.to_le_bytes()))),
            "header_size 91 out of range 92..=512"
        );
        assert_eq!(
            detail(&broken(|h| h[12..16].copy_from_slice(&513u32.to_le_bytes()))),
            "header_size 513 out of range 92..=512"
        );
        let mut h = spec().header(1, 2047, 2);
        h[60] ^= 1;
        let e = parse_header(&h, 1, 512, 2048).unwrap_err();
        assert!(
            detail(&e).starts_with("header_crc32 0x") && detail(&e).contains("does not match"),
            "{e}"
        );
        assert_eq!(
            detail(&broken(|h| h[24..32].copy_from_slice(&2u64.to_le_bytes()))),
            "my_lba 2 is not the header's lba 1"
        );
        assert_eq!(
            detail(&broken(|h| h[32..40].copy_from_slice(&1u64.to_le_bytes()))),
            "alternate_lba 1 equals my_lba"
        );
        assert_eq!(
            detail(&broken(
                |h| h[40..48].copy_from_slice(&3000u64.to_le_bytes())
            )),
            "first_usable_lba 3000 is after last_usable_lba 2014"
        );
        assert_eq!(
            detail(&broken(
                |h| h[48..56].copy_from_slice(&2048u64.to_le_bytes())
            )),
            "last_usable_lba 2048 out of range ..=2047"
        );
        assert_eq!(
            detail(&broken(|h| h[40..48].copy_from_slice(&1u64.to_le_bytes()))),
            "my_lba 1 is inside the usable range 1..=2014"
        );
        for bad in [0u32, 64, 129, 192, 8 << 20] {
            assert_eq!(
                detail(&broken(|h| h[84..88].copy_from_slice(&bad.to_le_bytes()))),
                format!("size_of_partition_entry {bad} is not 128·2^n up to 4194304")
            );
        }
        assert_eq!(
            detail(&broken(
                |h| h[80..84].copy_from_slice(&4097u32.to_le_bytes())
            )),
            "number_of_partition_entries 4097 out of range 0..=4096"
        );
        assert_eq!(
            detail(&broken(|h| {
                h[80..84].copy_from_slice(&4096u32.to_le_bytes());
                h[84..88].copy_from_slice(&2048u32.to_le_bytes());
            })),
            "entry array of 8388608 bytes out of range 0..=4194304"
        );
        assert_eq!(
            detail(&broken(
                |h| h[72..80].copy_from_slice(&2040u64.to_le_bytes())
            )),
            "entry array at lba 2040..=2071 out of range 1..=2047"
        );
        assert_eq!(
            detail(&broken(|h| h[72..80].copy_from_slice(&0u64.to_le_bytes()))),
            "entry array at lba 0..=31 out of range 1..=2047"
        );
        assert_eq!(
            detail(&broken(|h| h[72..80].copy_from_slice(&20u64.to_le_bytes()))),
            "entry array at lba 20..=51 overlaps the usable range 34..=2014"
        );
        assert_eq!(
            detail(&broken(|h| h[72..80].copy_from_slice(&1u64.to_le_bytes()))),
            "entry array at lba 1..=32 overlaps the header"
        );
        let e = parse_header(&[0u8; 40], 1, 512, 2048).unwrap_err();
        assert_eq!(detail(&e), "sector of 40 bytes is too short");
        // Larger entries (256 = 128·2) and zero entries are valid.
        let mut h = spec().header(1, 2047, 2);
        h[80..84].copy_from_slice(&0u32.to_le_bytes());
        fix_header_crc(&mut h);
        assert_eq!(parse_header(&h, 1, 512, 2048).unwrap().array_bytes, 0);
    }
}
