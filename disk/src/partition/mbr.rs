//! The DOS/MBR partition table and the EBR chain of logical partitions.
//!
//! Layout (UEFI 2.10 §5.2.1 "Legacy Master Boot Record", table 5.1 and 5.2): 440 bytes of boot
//! code, a 4-byte disk signature at 440, 2 reserved bytes, four 16-byte partition records at 446
//! and the `0x55 0xAA` signature at 510. An extended partition (type 0x05, 0x0F or 0x85) holds a
//! linked list of extended boot records (EBRs), each with the same layout: record 0 describes a
//! logical partition relative to the EBR, and the first extended-type record links to the next
//! EBR relative to the start of the outermost extended partition. CHS fields are ignored, as
//! Linux does.

use std::collections::HashSet;

use zerocopy::little_endian::U32;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::{MBR_EXTENDED_TYPES, Partition, PartitionType, TableNote, notes};
use crate::block::BlockRead;
use crate::{Error, Result};

/// Size of an MBR or EBR.
pub const MBR_SIZE: usize = 512;
/// Length of the boot code area at the start of the MBR.
pub const BOOT_CODE_LEN: usize = 440;
/// Offset of the `0x55 0xAA` boot signature.
pub(crate) const SIGNATURE_OFFSET: usize = 510;
/// The boot signature (UEFI 2.10 table 5.1, offset 510).
pub(crate) const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Most EBRs we read, over all extended partitions, and so most logical partitions. Linux stops
/// after 100 loop iterations per chain (`parse_extended`); 128 is far more than any real chain
/// and bounds the reads of a hostile one, including chains of EBRs without partitions (S12).
pub const MAX_LOGICAL_PARTITIONS: usize = 128;
/// The first Linux number given to a logical partition.
const FIRST_LOGICAL_NUMBER: u32 = 5;
/// Status byte of an active (bootable) partition record.
const STATUS_ACTIVE: u8 = 0x80;

/// One 16-byte partition record (UEFI 2.10 table 5.2).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct RawEntry {
    pub(crate) status: u8,
    pub(crate) chs_first: [u8; 3],
    pub(crate) os_type: u8,
    pub(crate) chs_last: [u8; 3],
    pub(crate) starting_lba: U32,
    pub(crate) size_in_lba: U32,
}

impl RawEntry {
    /// Linux treats a record with type 0 or size 0 as unused.
    pub(crate) fn is_empty(&self) -> bool {
        self.os_type == 0 || self.size_in_lba.get() == 0
    }
    fn is_extended(&self) -> bool {
        !self.is_empty() && MBR_EXTENDED_TYPES.contains(&self.os_type)
    }
}

/// The 512-byte MBR/EBR layout.
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawSector {
    boot_code: [u8; BOOT_CODE_LEN],
    disk_signature: U32,
    reserved: [u8; 2],
    entries: [RawEntry; 4],
    signature: [u8; 2],
}

/// A sector 0 that passed the MBR checks.
#[derive(Debug, Clone)]
pub(crate) struct RawMbr {
    pub(crate) disk_signature: u32,
    entries: [RawEntry; 4],
}

impl RawMbr {
    /// Parses sector 0. `None` if it is too short, lacks `0x55 0xAA`, or has a status byte other
    /// than 0x00/0x80 (Linux's test that tells a VBR of an unpartitioned disk from an MBR).
    pub(crate) fn parse(sector: &[u8]) -> Option<Self> {
        let raw = parse_sector(sector)?;
        if raw
            .entries
            .iter()
            .any(|e| e.status != 0 && e.status != STATUS_ACTIVE)
        {
            return None;
        }
        Some(Self {
            disk_signature: raw.disk_signature.get(),
            entries: raw.entries,
        })
    }
    pub(crate) fn entries(&self) -> impl Iterator<Item = &RawEntry> {
        self.entries.iter()
    }
}

fn parse_sector(sector: &[u8]) -> Option<RawSector> {
    let (raw, _) = RawSector::read_from_prefix(sector).ok()?;
    (raw.signature == BOOT_SIGNATURE).then_some(raw)
}

fn part_uuid(sig: u32, number: u32) -> String {
    format!("{sig:08x}-{number:02x}")
}

/// Converts a record to a partition at `base_lba + starting_lba`. `None` on overflow.
fn to_partition(e: &RawEntry, base_lba: u64, ss: u32, number: u32, sig: u32) -> Option<Partition> {
    let start_lba = base_lba.checked_add(u64::from(e.starting_lba.get()))?;
    Some(Partition {
        number,
        start: start_lba.checked_mul(u64::from(ss))?,
        len: u64::from(e.size_in_lba.get()).checked_mul(u64::from(ss))?,
        kind: PartitionType::Mbr(e.os_type),
        part_uuid: Some(part_uuid(sig, number)),
        name: None,
        bootable: e.status == STATUS_ACTIVE,
        attributes: 0,
    })
}

/// The primary partitions and, for each extended partition, its logical partitions.
pub(crate) fn read_partitions(
    dev: &dyn BlockRead,
    mbr: &RawMbr,
    ss: u32,
    notes: &mut Vec<TableNote>,
) -> Result<Vec<Partition>> {
    let mut out = Vec::new();
    let mut extended = Vec::new();
    for (slot, e) in (1u32..).zip(mbr.entries.iter()) {
        if e.is_empty() {
            continue;
        }
        // u32 LBAs times a u32 sector size cannot overflow u64.
        if let Some(p) = to_partition(e, 0, ss, slot, mbr.disk_signature) {
            out.push(p);
        }
        if e.is_extended() {
            extended.push((
                u64::from(e.starting_lba.get()),
                u64::from(e.size_in_lba.get()),
            ));
        }
    }
    let mut next_number = FIRST_LOGICAL_NUMBER;
    let mut budget = MAX_LOGICAL_PARTITIONS;
    for (ext_start, ext_len) in extended {
        read_ebr_chain(
            dev,
            ext_start,
            ext_len,
            ss,
            mbr.disk_signature,
            &mut next_number,
            &mut budget,
            &mut out,
            notes,
        )?;
    }
    Ok(out)
}

fn truncated(notes: &mut Vec<TableNote>, message: String) {
    tracing::debug!(%message, "ebr chain truncated");
    notes.push(TableNote {
        code: notes::MBR_EBR_TRUNCATED,
        message,
    });
}

/// Follows one EBR chain. Every EBR must lie strictly inside the extended partition (the first is
/// at its start), no EBR may be visited twice, and at most `budget` EBRs (over all chains) are read.
#[expect(
    clippy::too_many_arguments,
    reason = "private helper threading the chain state"
)]
fn read_ebr_chain(
    dev: &dyn BlockRead,
    ext_start: u64,
    ext_len: u64,
    ss: u32,
    sig: u32,
    next_number: &mut u32,
    budget: &mut usize,
    out: &mut Vec<Partition>,
    notes: &mut Vec<TableNote>,
) -> Result<()> {
    let ss64 = u64::from(ss);
    // ext_start + ext_len fits: both come from u32 fields.
    let ext_end = ext_start.saturating_add(ext_len);
    let mut visited = HashSet::new();
    let mut ebr_lba = ext_start;
    loop {
        if *budget == 0 {
            truncated(
                notes,
                format!(
                    "more than {MAX_LOGICAL_PARTITIONS} extended boot records; stopped at ebr lba {ebr_lba}"
                ),
            );
            return Ok(());
        }
        if !visited.insert(ebr_lba) {
            truncated(notes, format!("ebr chain loops back to lba {ebr_lba}"));
            return Ok(());
        }
        let offset = ebr_lba.saturating_mul(ss64);
        let mut sector = [0u8; MBR_SIZE];
        match dev.read_exact_at(offset, &mut sector) {
            Ok(()) => {}
            Err(Error::OutOfBounds { .. }) => {
                truncated(
                    notes,
                    format!("ebr at {offset:#x} is past the end of the disk"),
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        // Every EBR read counts, with or without a logical partition, so a chain of empty EBRs
        // is bounded too.
        *budget = budget.saturating_sub(1);
        let Some(ebr) = parse_sector(&sector) else {
            truncated(notes, format!("ebr at {offset:#x} has no 0x55aa signature"));
            return Ok(());
        };
        // The logical partition: the first used non-extended record among the first two.
        if let Some(e) = ebr
            .entries
            .iter()
            .take(2)
            .find(|e| !e.is_empty() && !e.is_extended())
            && let Some(p) = to_partition(e, ebr_lba, ss, *next_number, sig)
        {
            let ext_bytes_end = ext_end.saturating_mul(ss64);
            if p.start < ebr_lba.saturating_mul(ss64) || p.end() > ext_bytes_end {
                notes.push(TableNote {
                    code: notes::MBR_LOGICAL_OUTSIDE,
                    message: format!(
                        "logical partition {} at {:#x}+{:#x} (ebr at {offset:#x}) is outside the extended partition",
                        p.number, p.start, p.len
                    ),
                });
            }
            out.push(p);
            *next_number = next_number.saturating_add(1);
        }
        // The link: the first extended-type record, relative to the outermost extended partition.
        let Some(link) = ebr.entries.iter().find(|e| e.is_extended()) else {
            return Ok(());
        };
        let rel = u64::from(link.starting_lba.get());
        let next = ext_start.saturating_add(rel);
        if rel == 0 || next >= ext_end {
            truncated(
                notes,
                format!(
                    "ebr at {offset:#x} links to lba {next}, outside the extended partition (lba {}..{ext_end})",
                    ext_start.saturating_add(1)
                ),
            );
            return Ok(());
        }
        ebr_lba = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use super::*;
    use crate::mem::MemDisk;
    use crate::partition::testutil::mbr_entry;
    use crate::partition::{TableKind, read_table};

    fn put(img: &mut [u8], lba: usize, entries: &[[u8; 16]]) {
        let base = lba * 512;
        for (i, e) in entries.iter().enumerate() {
            img[base + 446 + 16 * i..base + 462 + 16 * i].copy_from_slice(e);
        }
        img[base + 510] = 0x55;
        img[base + 511] = 0xAA;
    }

    /// An MBR with an extended partition at 100..300 and a chain of `n` EBRs, 10 sectors apart.
    fn chain_image(n: usize) -> Vec<u8> {
        let mut img = vec![0u8; 400 * 512];
        put(
            &mut img,
            0,
            &[mbr_entry(0x80, 0x83, 1, 50), mbr_entry(0, 0x05, 100, 200)],
        );
        img[440..444].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        for i in 0..n {
            let lba = 100 + 10 * i;
            let mut es = vec![mbr_entry(0, 0x83, 1, 5)];
            if i + 1 < n {
                es.push(mbr_entry(0, 0x05, (10 * (i + 1)) as u32, 10));
            }
            put(&mut img, lba, &es);
        }
        img
    }

    #[test]
    fn logical_partitions_are_numbered_from_5() {
        let t = read_table(&MemDisk::from_vec(chain_image(3))).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.mbr_disk_signature, Some(0xdead_beef));
        let nums: Vec<_> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(nums, [1, 2, 5, 6, 7]);
        let p1 = t.get(1).unwrap();
        assert!(p1.bootable);
        assert_eq!((p1.start, p1.len), (512, 50 * 512));
        assert_eq!(p1.part_uuid.as_deref(), Some("deadbeef-01"));
        assert!(t.get(2).unwrap().is_extended());
        let p6 = t.get(6).unwrap();
        assert_eq!((p6.start, p6.len), (111 * 512, 5 * 512));
        assert_eq!(p6.part_uuid.as_deref(), Some("deadbeef-06"));
        assert!(t.notes.is_empty(), "{:?}", t.notes);
    }

    #[test]
    fn ebr_loop_is_detected() {
        let mut img = chain_image(2);
        // The second EBR links back to the first (relative lba 0 is refused, so use a 3-cycle).
        put(
            &mut img,
            110,
            &[mbr_entry(0, 0x83, 1, 5), mbr_entry(0, 0x05, 20, 10)],
        );
        put(
            &mut img,
            120,
            &[mbr_entry(0, 0x83, 1, 5), mbr_entry(0, 0x0F, 10, 10)],
        );
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.partitions.len(), 2 + 3);
        assert_eq!(t.notes.len(), 1);
        assert_eq!(t.notes[0].code, notes::MBR_EBR_TRUNCATED);
        assert_eq!(t.notes[0].message, "ebr chain loops back to lba 110");
    }

    #[test]
    fn ebr_link_outside_extended_is_refused() {
        let mut img = chain_image(1);
        put(
            &mut img,
            100,
            &[mbr_entry(0, 0x83, 1, 5), mbr_entry(0, 0x05, 200, 10)],
        );
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(
            t.notes[0].to_string(),
            "mbr-ebr-chain-truncated: ebr at 0xc800 links to lba 300, outside the extended partition (lba 101..300)"
        );
    }

    #[test]
    fn ebr_without_signature_and_past_end() {
        let mut img = chain_image(2);
        img[110 * 512 + 510] = 0;
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.notes[0].message, "ebr at 0xdc00 has no 0x55aa signature");

        let mut img = chain_image(1);
        img.truncate(100 * 512);
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.notes[0].code, notes::MBR_EBR_TRUNCATED);
        assert!(t.has_note(notes::PARTITION_BEYOND_END));
    }

    #[test]
    fn ebr_chain_is_capped() {
        // 200 EBRs, one per sector, each linking to the next.
        let n = 200usize;
        let mut img = vec![0u8; (n + 2) * 512];
        put(&mut img, 0, &[mbr_entry(0, 0x85, 1, (n + 1) as u32)]);
        for i in 0..n {
            put(
                &mut img,
                1 + i,
                &[
                    mbr_entry(0, 0x83, 0, 1),
                    mbr_entry(0, 0x05, (i + 1) as u32, 1),
                ],
            );
        }
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.partitions.len(), 1 + MAX_LOGICAL_PARTITIONS);
        assert_eq!(t.partitions.last().unwrap().number, 4 + 128);
        assert_eq!(
            t.notes[0].message,
            "more than 128 extended boot records; stopped at ebr lba 129"
        );
    }

    #[test]
    fn chain_of_empty_ebrs_is_capped() {
        let n = 300usize;
        let mut img = vec![0u8; (n + 2) * 512];
        put(&mut img, 0, &[mbr_entry(0, 0x05, 1, (n + 1) as u32)]);
        for i in 0..n {
            put(
                &mut img,
                1 + i,
                &[mbr_entry(0, 0, 0, 0), mbr_entry(0, 0x05, (i + 1) as u32, 1)],
            );
        }
        let d = crate::testkit::CountingDisk::new(MemDisk::from_vec(img));
        let t = read_table(&d).unwrap();
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(
            t.notes[0].message,
            "more than 128 extended boot records; stopped at ebr lba 129"
        );
        assert!(d.reads() <= 3 + 128, "{}", d.reads());
    }

    #[test]
    fn invalid_status_byte_means_no_table() {
        let mut img = chain_image(1);
        img[446] = 0x12;
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert!(t.partitions.is_empty());
        assert_eq!(t.notes[0].code, notes::MBR_INVALID_STATUS);
        let t = read_table(&MemDisk::from_vec(vec![0; 300])).unwrap();
        assert_eq!(t.kind, TableKind::None);
        assert_eq!(t.boot_code.len(), 300);
    }

    #[test]
    fn esp_in_mbr_is_just_mbr() {
        let mut img = vec![0u8; 64 * 512];
        put(&mut img, 0, &[mbr_entry(0x80, 0xEF, 2, 30)]);
        let t = read_table(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        assert!(t.partitions[0].is_esp());
        assert!(!t.partitions[0].is_bios_boot());
    }
}
