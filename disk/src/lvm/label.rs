//! The on-disk binary structures of an LVM2 physical volume: the label, the PV header and the
//! metadata area header.
//!
//! Layout (LVM2 `lib/format_text/layout.h`, `lib/label/label.h`, and the `lvm2` on-disk format
//! notes): one of the first four 512-byte sectors holds a `label_header` ("LABELONE"), followed at
//! `offset_xl` by the `pv_header` (PV UUID, device size, a zero-terminated list of data areas and
//! one of metadata areas). Each metadata area starts with a 512-byte `mda_header` whose
//! `raw_locn` list points at the current text metadata inside the area's circular buffer.
//! Checksums are CRC-32 (reflected 0xEDB88320) seeded with 0xF597A6CF and not inverted at the end.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::block::BlockRead;
use crate::{Error, Result};

/// LVM's sector size for label scanning and `pe_start` (always 512, whatever the device reports).
pub const SECTOR_SIZE: u64 = 512;
/// The label is in one of the first four sectors (`LABEL_SCAN_SECTORS`).
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// `label_header.id`.
pub const LABEL_ID: [u8; 8] = *b"LABELONE";
/// `label_header.type` of the LVM2 text format.
pub const LABEL_TYPE_LVM2: [u8; 8] = *b"LVM2 001";
/// Seed of LVM's CRC (`INITIAL_CRC` in `lib/misc/crc.h`).
pub const INITIAL_CRC: u32 = 0xF597_A6CF;
/// `mda_header.magic` (`FMTT_MAGIC`).
pub const MDA_MAGIC: [u8; 16] = *b"\x20LVM2\x20x[5A%r0N*>";
/// `mda_header.version` (`FMTT_VERSION`).
pub const MDA_VERSION: u32 = 1;
/// Size of the metadata area header (`MDA_HEADER_SIZE`); the circular text buffer follows it.
pub const MDA_HEADER_SIZE: u64 = 512;
/// `raw_locn.flags` bit: this metadata copy is ignored (`RAW_LOCN_IGNORED`).
pub const RAW_LOCN_IGNORED: u32 = 1;
/// PV and VG UUIDs are 32 characters (`ID_LEN`).
pub const ID_LEN: usize = 32;
/// Most data or metadata areas we accept in one list. LVM writes one data area and at most two
/// metadata areas; the list is bounded by the sector anyway, this just names the bound.
pub const MAX_AREAS: usize = 8;
/// Largest text metadata we read. LVM's default metadata area is 1 MiB; 16 MiB covers huge
/// `--pvmetadatasize` settings while bounding what a hostile `raw_locn.size` can make us read.
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

/// LVM's checksum (`calc_crc` with `INITIAL_CRC`).
#[must_use]
pub fn lvm_crc(data: &[u8]) -> u32 {
    // crc32fast takes and returns finalized (inverted) values, LVM uses the raw register.
    let mut h = crc32fast::Hasher::new_with_initial(!INITIAL_CRC);
    h.update(data);
    !h.finalize()
}

/// `struct label_header` (32 bytes).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawLabelHeader {
    id: [u8; 8],
    sector_xl: U64,
    crc_xl: U32,
    offset_xl: U32,
    type_: [u8; 8],
}
/// Bytes of the label header covered by `crc_xl`: from `offset_xl` (20) to the end of the sector.
const LABEL_CRC_START: usize = 20;
const LABEL_HEADER_LEN: usize = 32;

/// `struct disk_locn` (16 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawDiskLocn {
    offset: U64,
    size: U64,
}
const DISK_LOCN_LEN: usize = 16;

/// A byte range of a PV (`disk_locn`): a data or metadata area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    /// Offset in bytes from the start of the PV.
    pub offset: u64,
    /// Size in bytes (0 for "to the end of the device" in the data area list).
    pub size: u64,
}

/// A validated PV label and header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// The sector (0–3) holding the label.
    pub label_sector: u64,
    /// The PV UUID in LVM's dashed form (`xxxxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxxxx`).
    pub uuid: String,
    /// The device size recorded by `pvcreate`, in bytes.
    pub device_size: u64,
    /// Data areas (LVM writes one, starting at `pe_start`).
    pub data_areas: Vec<Area>,
    /// Metadata areas.
    pub metadata_areas: Vec<Area>,
}

/// Formats a 32-character LVM id with dashes, 6-4-4-4-4-4-6, as LVM prints it.
#[must_use]
pub fn dashed_id(raw: &str) -> String {
    let mut out = String::with_capacity(38);
    for (i, c) in raw.chars().enumerate() {
        if [6, 10, 14, 18, 22, 26].contains(&i) {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// Reads the list of `disk_locn`s starting at `at` in `sector`, up to the zero terminator.
fn read_locns(sector: &[u8], at: &mut usize, base: u64) -> Result<Vec<Area>> {
    let mut out = Vec::new();
    loop {
        let end = at.saturating_add(DISK_LOCN_LEN);
        let (raw, _) = sector
            .get(*at..end)
            .and_then(|b| RawDiskLocn::read_from_prefix(b).ok())
            .ok_or_else(|| {
                Error::corrupt(
                    "lvm pv header",
                    base,
                    "area list is not terminated within the label sector",
                )
            })?;
        *at = end;
        if raw.offset.get() == 0 {
            return Ok(out);
        }
        if out.len() >= MAX_AREAS {
            return Err(Error::corrupt(
                "lvm pv header",
                base,
                format!("more than {MAX_AREAS} areas in one list"),
            ));
        }
        out.push(Area {
            offset: raw.offset.get(),
            size: raw.size.get(),
        });
    }
}

/// Validates a label found in `sector` (sector number `n`).
pub(crate) fn parse_label(sector: &[u8], n: u64) -> Result<PvLabel> {
    let at = n.saturating_mul(SECTOR_SIZE);
    let bad = |detail: String| Error::corrupt("lvm label", at, detail);
    let (raw, _) = RawLabelHeader::read_from_prefix(sector)
        .map_err(|_| bad(format!("sector of {} bytes is too short", sector.len())))?;
    if raw.id != LABEL_ID {
        return Err(bad("id is not LABELONE".into()));
    }
    if raw.sector_xl.get() != n {
        return Err(bad(format!(
            "sector_xl {} is not the label's sector {n}",
            raw.sector_xl.get()
        )));
    }
    let crc = lvm_crc(sector.get(LABEL_CRC_START..).unwrap_or_default());
    if crc != raw.crc_xl.get() {
        return Err(bad(format!(
            "crc_xl {:#010x} does not match the computed {crc:#010x}",
            raw.crc_xl.get()
        )));
    }
    if raw.type_ != LABEL_TYPE_LVM2 {
        return Err(Error::unsupported(
            "lvm label type",
            String::from_utf8_lossy(&raw.type_).into_owned(),
        ));
    }
    // The PV header needs the UUID, the size and at least two list terminators.
    let offset = raw.offset_xl.get();
    let min = u32::try_from(LABEL_HEADER_LEN).unwrap_or(u32::MAX);
    let max =
        u32::try_from(sector.len().saturating_sub(ID_LEN + 8 + 2 * DISK_LOCN_LEN)).unwrap_or(0);
    if !(min..=max).contains(&offset) {
        return Err(bad(format!(
            "offset_xl {offset} out of range {min}..={max}"
        )));
    }
    let hdr_at = at.saturating_add(u64::from(offset));
    let mut pos = usize::try_from(offset).unwrap_or(usize::MAX);
    let uuid_bytes = sector
        .get(pos..pos.saturating_add(ID_LEN))
        .ok_or_else(|| bad("pv header passes the sector".into()))?;
    if !uuid_bytes.iter().all(u8::is_ascii_alphanumeric_or_id) {
        return Err(Error::corrupt(
            "lvm pv header",
            hdr_at,
            format!("pv uuid {uuid_bytes:02x?} has characters outside [0-9a-zA-Z!#]"),
        ));
    }
    let uuid = dashed_id(&String::from_utf8_lossy(uuid_bytes));
    pos = pos.saturating_add(ID_LEN);
    let size_bytes: [u8; 8] = sector
        .get(pos..pos.saturating_add(8))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("pv header passes the sector".into()))?;
    pos = pos.saturating_add(8);
    let data_areas = read_locns(sector, &mut pos, hdr_at)?;
    let metadata_areas = read_locns(sector, &mut pos, hdr_at)?;
    Ok(PvLabel {
        label_sector: n,
        uuid,
        device_size: u64::from_le_bytes(size_bytes),
        data_areas,
        metadata_areas,
    })
}

/// Characters LVM uses in ids (`_c` in `lib/uuid/uuid.c`).
trait IdChar {
    fn is_ascii_alphanumeric_or_id(&self) -> bool;
}
impl IdChar for u8 {
    fn is_ascii_alphanumeric_or_id(&self) -> bool {
        self.is_ascii_alphanumeric() || *self == b'!' || *self == b'#'
    }
}

/// Finds and validates the PV label in the first four sectors. `Ok(None)` if there is none.
pub(crate) fn find_label(dev: &dyn BlockRead) -> Result<Option<PvLabel>> {
    for n in 0..LABEL_SCAN_SECTORS {
        let at = n.saturating_mul(SECTOR_SIZE);
        if at.saturating_add(SECTOR_SIZE) > dev.size() {
            break;
        }
        let mut sector = [0u8; 512];
        dev.read_exact_at(at, &mut sector)?;
        if sector.get(..8) == Some(&LABEL_ID[..]) {
            return parse_label(&sector, n).map(Some);
        }
    }
    Ok(None)
}

/// `struct mda_header` without its `raw_locn` list (40 bytes).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawMdaHeader {
    checksum_xl: U32,
    magic: [u8; 16],
    version: U32,
    start: U64,
    size: U64,
}
const MDA_FIXED_LEN: usize = 40;

/// `struct raw_locn` (24 bytes).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawLocn {
    offset: U64,
    size: U64,
    checksum: U32,
    flags: U32,
}
const RAW_LOCN_LEN: usize = 24;

/// Where the current text metadata of one metadata area is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MdaText {
    /// Offset of the text on the PV.
    pub(crate) offset: u64,
    /// The text (trailing NULs removed).
    pub(crate) text: Vec<u8>,
}

/// Reads a metadata area: validates its header and returns the current text, or `None` if the
/// area holds no metadata (an orphan PV) or its copy is marked ignored.
pub(crate) fn read_mda(dev: &dyn BlockRead, area: Area) -> Result<Option<MdaText>> {
    let at = area.offset;
    let bad = |detail: String| Error::corrupt("lvm mda header", at, detail);
    let mut hdr = [0u8; 512];
    dev.read_exact_at(at, &mut hdr).map_err(|e| match e {
        Error::OutOfBounds { .. } => bad("area passes the end of the device".into()),
        other => other,
    })?;
    let (raw, _) =
        RawMdaHeader::read_from_prefix(&hdr).map_err(|_| bad("header too short".into()))?;
    let crc = lvm_crc(hdr.get(4..).unwrap_or_default());
    if crc != raw.checksum_xl.get() {
        return Err(bad(format!(
            "checksum_xl {:#010x} does not match the computed {crc:#010x}",
            raw.checksum_xl.get()
        )));
    }
    if raw.magic != MDA_MAGIC {
        return Err(bad(format!("magic {:02x?} is wrong", raw.magic)));
    }
    if raw.version.get() != MDA_VERSION {
        return Err(Error::unsupported(
            "lvm mda version",
            raw.version.get().to_string(),
        ));
    }
    if raw.start.get() != at {
        return Err(bad(format!(
            "start {} is not the area's offset {at}",
            raw.start.get()
        )));
    }
    let size = raw.size.get();
    if size <= MDA_HEADER_SIZE || at.checked_add(size).is_none_or(|end| end > dev.size()) {
        return Err(bad(format!(
            "size {size} out of range {}..={}",
            MDA_HEADER_SIZE.saturating_add(1),
            dev.size().saturating_sub(at)
        )));
    }
    let (locn, _) = hdr
        .get(MDA_FIXED_LEN..MDA_FIXED_LEN.saturating_add(RAW_LOCN_LEN))
        .and_then(|b| RawLocn::read_from_prefix(b).ok())
        .ok_or_else(|| bad("raw_locn passes the header".into()))?;
    let (off, len) = (locn.offset.get(), locn.size.get());
    if off == 0 {
        return Ok(None);
    }
    if locn.flags.get() & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    let ring = size.saturating_sub(MDA_HEADER_SIZE);
    if off < MDA_HEADER_SIZE || off >= size {
        return Err(bad(format!(
            "raw_locn offset {off} out of range {MDA_HEADER_SIZE}..{size}"
        )));
    }
    let cap = ring.min(MAX_METADATA_BYTES);
    if len == 0 || len > cap {
        return Err(bad(format!("raw_locn size {len} out of range 1..={cap}")));
    }
    // The text may wrap from the end of the area back to just after the header.
    let first = len.min(size.saturating_sub(off));
    let second = len.saturating_sub(first);
    let n = usize::try_from(len).map_err(|_| bad("raw_locn size too large".into()))?;
    let mut text = vec![0u8; n];
    let split = usize::try_from(first).unwrap_or(n).min(n);
    let (a, b) = text.split_at_mut(split);
    // Both ranges lie within at..at+size, which was checked against the device size.
    dev.read_exact_at(at.saturating_add(off), a)?;
    if second > 0 {
        dev.read_exact_at(at.saturating_add(MDA_HEADER_SIZE), b)?;
    }
    let crc = lvm_crc(&text);
    if crc != locn.checksum.get() {
        return Err(Error::corrupt(
            "lvm metadata",
            at.saturating_add(off),
            format!(
                "checksum {:#010x} does not match the computed {crc:#010x}",
                locn.checksum.get()
            ),
        ));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(MdaText {
        offset: at.saturating_add(off),
        text,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use super::*;
    use crate::lvm::testutil::{label_sector, mda_area};
    use crate::mem::MemDisk;

    #[test]
    fn crc_matches_lvm() {
        // Values taken from a PV written by pvcreate 2.03.16 (label sector and mda header).
        assert_eq!(lvm_crc(b""), INITIAL_CRC);
        let s = label_sector(1, "L8vvVB5c8tI7y072QZLE2qGZlrD4dSww", 64 << 20);
        let (raw, _) = RawLabelHeader::read_from_prefix(&s).unwrap();
        assert_eq!(raw.crc_xl.get(), lvm_crc(&s[20..]));
    }

    #[test]
    fn label_parses_field_by_field() {
        let s = label_sector(1, "L8vvVB5c8tI7y072QZLE2qGZlrD4dSww", 64 << 20);
        let l = parse_label(&s, 1).unwrap();
        assert_eq!(l.label_sector, 1);
        assert_eq!(l.uuid, "L8vvVB-5c8t-I7y0-72QZ-LE2q-GZlr-D4dSww");
        assert_eq!(l.device_size, 64 << 20);
        assert_eq!(
            l.data_areas,
            [Area {
                offset: 1 << 20,
                size: 0
            }]
        );
        assert_eq!(
            l.metadata_areas,
            [Area {
                offset: 4096,
                size: (1 << 20) - 4096
            }]
        );
    }

    fn label_err(f: impl FnOnce(&mut Vec<u8>), fix_crc: bool) -> Error {
        let mut s = label_sector(1, "L8vvVB5c8tI7y072QZLE2qGZlrD4dSww", 64 << 20);
        f(&mut s);
        if fix_crc {
            let crc = lvm_crc(&s[20..]);
            s[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        parse_label(&s, 1).unwrap_err()
    }

    #[test]
    fn each_label_field_is_validated() {
        let d = |e: Error| {
            let c = e.as_corrupt().cloned().expect("corrupt");
            format!("{}@{}: {}", c.structure(), c.offset(), c.detail())
        };
        assert_eq!(
            d(label_err(|s| s[0] = b'X', false)),
            "lvm label@512: id is not LABELONE"
        );
        assert_eq!(
            d(label_err(|s| s[8] = 2, true)),
            "lvm label@512: sector_xl 2 is not the label's sector 1"
        );
        let e = d(label_err(|s| s[100] ^= 1, false));
        assert!(e.starts_with("lvm label@512: crc_xl 0x"), "{e}");
        let e = label_err(|s| s[24..32].copy_from_slice(b"LVM1 001"), true);
        assert_eq!(e.to_string(), "unsupported lvm label type: LVM1 001");
        assert_eq!(
            d(label_err(
                |s| s[20..24].copy_from_slice(&8u32.to_le_bytes()),
                true
            )),
            "lvm label@512: offset_xl 8 out of range 32..=440"
        );
        let e = d(label_err(|s| s[40] = b'-', true));
        assert!(
            e.starts_with("lvm pv header@544: pv uuid [4c, 38, 76, 76, 56, 42, 35, 63, 2d,"),
            "{e}"
        );
        assert!(e.ends_with("] has characters outside [0-9a-zA-Z!#]"), "{e}");
        // An unterminated area list.
        assert_eq!(
            d(label_err(
                |s| {
                    for i in (0x48..512).step_by(16) {
                        s[i] = 1;
                    }
                },
                true
            )),
            "lvm pv header@544: more than 8 areas in one list"
        );
    }

    #[test]
    fn mda_reads_wrapped_text_and_validates() {
        let text = b"vg { seqno = 1 }\n\0";
        // Place the text so it wraps: area of 2048 bytes, text starts 8 bytes before the end.
        let img = mda_area(4096, 2048, 2040, text);
        let dev = MemDisk::from_vec(img.clone());
        let t = read_mda(
            &dev,
            Area {
                offset: 4096,
                size: 2048,
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.text, b"vg { seqno = 1 }\n");
        assert_eq!(t.offset, 4096 + 2040);

        let check = |f: &dyn Fn(&mut Vec<u8>), want: &str| {
            let mut img = img.clone();
            f(&mut img);
            let crc = lvm_crc(&img[4096 + 4..4096 + 512]);
            img[4096..4100].copy_from_slice(&crc.to_le_bytes());
            let e = read_mda(
                &MemDisk::from_vec(img),
                Area {
                    offset: 4096,
                    size: 2048,
                },
            )
            .unwrap_err();
            assert_eq!(e.to_string(), want);
        };
        check(
            &|i| i[4100] = b'x',
            "corrupt lvm mda header at 0x1000: magic [78, 4c, 56, 4d, 32, 20, 78, 5b, 35, 41, 25, 72, 30, 4e, 2a, 3e] is wrong",
        );
        check(&|i| i[4116] = 2, "unsupported lvm mda version: 2");
        check(
            &|i| i[4121] = 0,
            "corrupt lvm mda header at 0x1000: start 0 is not the area's offset 4096",
        );
        check(
            &|i| i[4128..4136].copy_from_slice(&(1u64 << 40).to_le_bytes()),
            "corrupt lvm mda header at 0x1000: size 1099511627776 out of range 513..=4096",
        );
        check(
            &|i| i[4136..4144].copy_from_slice(&100u64.to_le_bytes()),
            "corrupt lvm mda header at 0x1000: raw_locn offset 100 out of range 512..2048",
        );
        check(
            &|i| i[4144..4152].copy_from_slice(&1537u64.to_le_bytes()),
            "corrupt lvm mda header at 0x1000: raw_locn size 1537 out of range 1..=1536",
        );
        let mut bad = img.clone();
        bad[4096 + 512] ^= 1;
        let e = read_mda(
            &MemDisk::from_vec(bad),
            Area {
                offset: 4096,
                size: 2048,
            },
        )
        .unwrap_err();
        let c = e.as_corrupt().unwrap();
        assert_eq!((c.structure(), c.offset()), ("lvm metadata", 4096 + 2040));
        assert!(c.detail().starts_with("checksum 0x"), "{e}");
        // Ignored copies and empty areas are not errors.
        let mut ign = img.clone();
        ign[4156] = 1;
        let crc = lvm_crc(&ign[4096 + 4..4096 + 512]);
        ign[4096..4100].copy_from_slice(&crc.to_le_bytes());
        let got = read_mda(
            &MemDisk::from_vec(ign),
            Area {
                offset: 4096,
                size: 2048,
            },
        );
        assert_eq!(got.unwrap(), None);
    }
}
