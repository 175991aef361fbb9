//! A writer for an LVM2 physical volume: label, PV header, one metadata area with text metadata,
//! and linear logical volumes laid out one after another.
//!
//! On-disk format (LVM2 `lib/format_text/layout.h` and `lib/label/label.h`, as described in the
//! LVM2 documentation): sector 1 holds the label (`LABELONE`, its sector number, a CRC of the rest
//! of the sector, the offset of the PV header and the type `LVM2 001`); the PV header gives the PV
//! UUID, the device size, the data-area list and the metadata-area list; the metadata area starts
//! at 4 KiB with a 512-byte header (CRC, magic, version, start, size, and the location, size and
//! CRC of the current text metadata), followed by the text itself.

use std::fmt::Write as _;

use crate::plan::Content;

/// LVM's CRC-32: the reflected CRC-32 polynomial, with this initial value and no final XOR
/// (LVM2 `lib/misc/crc.h`, `INITIAL_CRC`).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// Label identifier (label.h `LABEL_ID`).
const LABEL_ID: &[u8; 8] = b"LABELONE";
/// Label type of the text format (layout.h `LVM2_LABEL`).
const LVM2_LABEL: &[u8; 8] = b"LVM2 001";
/// Metadata-area header magic (layout.h `FMTT_MAGIC`).
const FMTT_MAGIC: &[u8; 16] = b"\x20LVM2\x20x[5A%r0N*>";
/// Metadata-area header version (layout.h `FMTT_VERSION`).
const FMTT_VERSION: u32 = 1;
/// Sector holding the label (LVM scans sectors 0..3; it writes sector 1).
const LABEL_SECTOR: u64 = 1;
/// Start of the metadata area: the usual 4 KiB.
const MDA_START: u64 = 4096;
/// Start of the data area (`pe_start`): 1 MiB, LVM's default alignment.
pub(crate) const PE_START: u64 = 1 << 20;
/// Where the text sits inside the metadata area (after the 512-byte header).
const TEXT_OFFSET: u64 = 512;
/// Fixed creation time written in the metadata (2023-11-14).
const CREATION_TIME: u64 = 1_700_000_000;

/// One linear logical volume.
#[derive(Debug, Clone)]
pub(crate) struct LvSpec {
    /// LV name (`root`).
    pub(crate) name: &'static str,
    /// LV UUID, dashed 6-4-4-4-4-4-6 form.
    pub(crate) uuid: &'static str,
    /// Size in extents.
    pub(crate) extents: u64,
    /// What the LV holds.
    pub(crate) content: Content,
}

/// A volume group on one PV.
#[derive(Debug, Clone)]
pub(crate) struct VgSpec {
    /// VG name (`rhel`).
    pub(crate) name: &'static str,
    /// VG UUID, dashed form.
    pub(crate) uuid: &'static str,
    /// PV UUID, dashed form.
    pub(crate) pv_uuid: &'static str,
    /// The PV's device as the guest saw it (`/dev/sda2`): informational in LVM metadata.
    pub(crate) pv_device: &'static str,
    /// Extent size in MiB.
    pub(crate) extent_mib: u64,
    /// LVs, placed back to back from extent 0.
    pub(crate) lvs: Vec<LvSpec>,
}

/// LVM's CRC over `data`.
pub(crate) fn calc_crc(initial: u32, data: &[u8]) -> u32 {
    let mut crc = initial;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

impl VgSpec {
    /// Byte offset of LV `index` inside the PV.
    pub(crate) fn lv_offset(&self, index: usize) -> u64 {
        let before: u64 = self.lvs[..index].iter().map(|l| l.extents).sum();
        PE_START + before * self.extent_mib * (1 << 20)
    }

    /// Extents the PV has room for, given its size.
    pub(crate) fn pe_count(&self, pv_bytes: u64) -> u64 {
        (pv_bytes - PE_START) / (self.extent_mib << 20)
    }

    /// The VG text metadata (LVM2 text format, `format_text/export.c` layout).
    pub(crate) fn metadata_text(&self, pv_bytes: u64) -> String {
        let mut t = String::new();
        let _ = write!(
            t,
            "{name} {{\nid = \"{uuid}\"\nseqno = 1\nformat = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\n\
             flags = []\nextent_size = {ext}\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n\n\
             physical_volumes {{\n\npv0 {{\nid = \"{pv}\"\ndevice = \"{dev}\"\n\nstatus = [\"ALLOCATABLE\"]\nflags = []\n\
             dev_size = {sectors}\npe_start = {pe_start}\npe_count = {pe_count}\n}}\n}}\n\nlogical_volumes {{\n",
            name = self.name,
            uuid = self.uuid,
            ext = self.extent_mib * 2048,
            pv = self.pv_uuid,
            dev = self.pv_device,
            sectors = pv_bytes / 512,
            pe_start = PE_START / 512,
            pe_count = self.pe_count(pv_bytes),
        );
        let mut start = 0;
        for lv in &self.lvs {
            let _ = write!(
                t,
                "\n{name} {{\nid = \"{uuid}\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\n\
                 creation_time = {CREATION_TIME}\ncreation_host = \"localhost.localdomain\"\nsegment_count = 1\n\n\
                 segment1 {{\nstart_extent = 0\nextent_count = {n}\n\ntype = \"striped\"\nstripe_count = 1\n\n\
                 stripes = [\n\"pv0\", {start}\n]\n}}\n}}\n",
                name = lv.name,
                uuid = lv.uuid,
                n = lv.extents,
            );
            start += lv.extents;
        }
        let _ = write!(
            t,
            "}}\n}}\n# Generated by rehost-images\n\ncontents = \"Text Format Volume Group\"\nversion = 1\n\n\
             description = \"\"\n\ncreation_host = \"localhost.localdomain\"\ncreation_time = {CREATION_TIME}\n\n"
        );
        t
    }

    /// The first [`PE_START`] bytes of the PV: label, PV header, metadata area.
    pub(crate) fn pv_head(&self, pv_bytes: u64) -> Vec<u8> {
        let mut head = vec![0u8; usize::try_from(PE_START).unwrap_or(1 << 20)];
        let pv_uuid: String = self.pv_uuid.chars().filter(|c| *c != '-').collect();
        assert_eq!(pv_uuid.len(), 32, "pv uuid must have 32 characters");

        // Label sector.
        let l = usize::try_from(LABEL_SECTOR * 512).unwrap_or(512);
        head[l..l + 8].copy_from_slice(LABEL_ID);
        put_u64(&mut head, l + 8, LABEL_SECTOR);
        put_u32(&mut head, l + 20, 32); // offset_xl: PV header follows the 32-byte label header
        head[l + 24..l + 32].copy_from_slice(LVM2_LABEL);
        let pvh = l + 32;
        head[pvh..pvh + 32].copy_from_slice(pv_uuid.as_bytes());
        put_u64(&mut head, pvh + 32, pv_bytes);
        // Data areas: one at pe_start, size 0 meaning "to the end"; then a terminator.
        put_u64(&mut head, pvh + 40, PE_START);
        put_u64(&mut head, pvh + 48, 0);
        // Metadata areas: one at 4 KiB up to pe_start; then a terminator.
        put_u64(&mut head, pvh + 72, MDA_START);
        put_u64(&mut head, pvh + 80, PE_START - MDA_START);
        // PV header extension: version 2, flags PV_EXT_USED, no bootloader areas.
        put_u32(&mut head, pvh + 104, 2);
        put_u32(&mut head, pvh + 108, 1);
        let crc = calc_crc(INITIAL_CRC, &head[l + 20..l + 512]);
        put_u32(&mut head, l + 16, crc);

        // Metadata area header and text.
        let mut text = self.metadata_text(pv_bytes).into_bytes();
        text.push(0);
        let m = usize::try_from(MDA_START).unwrap_or(4096);
        head[m + 4..m + 20].copy_from_slice(FMTT_MAGIC);
        put_u32(&mut head, m + 20, FMTT_VERSION);
        put_u64(&mut head, m + 24, MDA_START);
        put_u64(&mut head, m + 32, PE_START - MDA_START);
        put_u64(&mut head, m + 40, TEXT_OFFSET);
        put_u64(&mut head, m + 48, text.len() as u64);
        put_u32(&mut head, m + 56, calc_crc(INITIAL_CRC, &text));
        let crc = calc_crc(INITIAL_CRC, &head[m + 4..m + 512]);
        put_u32(&mut head, m, crc);
        let t = m + usize::try_from(TEXT_OFFSET).unwrap_or(512);
        head[t..t + text.len()].copy_from_slice(&text);
        head
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> VgSpec {
        VgSpec {
            name: "rhel",
            uuid: "Vg0001-aaaa-bbbb-cccc-dddd-eeee-ffffff",
            pv_uuid: "Pv0001-aaaa-bbbb-cccc-dddd-eeee-ffffff",
            pv_device: "/dev/sda2",
            extent_mib: 4,
            lvs: vec![
                LvSpec {
                    name: "root",
                    uuid: "Lv0001-aaaa-bbbb-cccc-dddd-eeee-ffffff",
                    extents: 2,
                    content: Content::Empty,
                },
                LvSpec {
                    name: "swap",
                    uuid: "Lv0002-aaaa-bbbb-cccc-dddd-eeee-ffffff",
                    extents: 1,
                    content: Content::Empty,
                },
            ],
        }
    }

    #[test]
    fn crc_matches_lvm_reference_values() {
        // With initial value 0xffffffff and a final inversion this CRC is the common CRC-32,
        // whose check value for "123456789" is 0xcbf43926.
        assert_eq!(!calc_crc(0xffff_ffff, b"123456789"), 0xcbf4_3926);
        assert_eq!(calc_crc(INITIAL_CRC, b""), INITIAL_CRC);
    }

    #[test]
    fn pv_head_layout() {
        let vg = sample();
        let pv = PE_START + 4 * (4 << 20);
        let h = vg.pv_head(pv);
        assert_eq!(&h[512..520], b"LABELONE");
        assert_eq!(&h[536..544], b"LVM2 001");
        assert_eq!(&h[544..550], b"Pv0001");
        let crc = u32::from_le_bytes(h[528..532].try_into().unwrap());
        assert_eq!(crc, calc_crc(INITIAL_CRC, &h[532..1024]));
        assert_eq!(&h[4100..4116], FMTT_MAGIC);
        let size = usize::try_from(u64::from_le_bytes(
            h[4096 + 48..4096 + 56].try_into().unwrap(),
        ))
        .unwrap();
        let text = &h[4096 + 512..4096 + 512 + size];
        assert_eq!(text.last(), Some(&0));
        let s = std::str::from_utf8(&text[..size - 1]).unwrap();
        assert!(s.starts_with("rhel {\nid = \"Vg0001-aaaa-bbbb-cccc-dddd-eeee-ffffff\""));
        assert!(s.contains("pe_count = 4\n"));
        assert!(s.contains("swap {"));
        assert!(s.contains("\"pv0\", 2\n"));
        assert_eq!(vg.lv_offset(1), PE_START + 2 * (4 << 20));
    }
}
