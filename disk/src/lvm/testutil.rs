//! Hand-built LVM2 PVs for tests, following the layout LVM 2.03 writes (see `label.rs`).

#![allow(
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::cast_possible_truncation
)]

use super::label::{LABEL_ID, LABEL_TYPE_LVM2, MDA_MAGIC, lvm_crc};

/// Where hand-built PVs keep things: the mda at 4 KiB, data (pe_start) at 1 MiB.
pub(crate) const MDA_AT: u64 = 4096;
pub(crate) const PE_START: u64 = 1 << 20;

/// A 512-byte label sector for sector `n`: one data area at 1 MiB, one mda at 4 KiB..1 MiB.
pub(crate) fn label_sector(n: u64, uuid: &str, dev_size: u64) -> Vec<u8> {
    assert_eq!(uuid.len(), 32);
    let mut s = vec![0u8; 512];
    s[0..8].copy_from_slice(&LABEL_ID);
    s[8..16].copy_from_slice(&n.to_le_bytes());
    s[20..24].copy_from_slice(&32u32.to_le_bytes());
    s[24..32].copy_from_slice(&LABEL_TYPE_LVM2);
    s[32..64].copy_from_slice(uuid.as_bytes());
    s[64..72].copy_from_slice(&dev_size.to_le_bytes());
    s[72..80].copy_from_slice(&PE_START.to_le_bytes());
    // data list terminator at 88..104, then the mda
    s[104..112].copy_from_slice(&MDA_AT.to_le_bytes());
    s[112..120].copy_from_slice(&(PE_START - MDA_AT).to_le_bytes());
    // mda list terminator at 120..136, then the v2 extension (version 2, no bootloader areas)
    s[136..140].copy_from_slice(&2u32.to_le_bytes());
    let crc = lvm_crc(&s[20..]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    s
}

/// Writes an mda header at `at` for an area of `size` bytes whose current text is at `text_off`
/// (relative to the area, wrapping after the header), into `img`.
pub(crate) fn write_mda(img: &mut [u8], at: u64, size: u64, text_off: u64, text: &[u8]) {
    let a = at as usize;
    let h = &mut img[a..a + 512];
    h.fill(0);
    h[4..20].copy_from_slice(&MDA_MAGIC);
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&at.to_le_bytes());
    h[32..40].copy_from_slice(&size.to_le_bytes());
    h[40..48].copy_from_slice(&text_off.to_le_bytes());
    h[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    h[56..60].copy_from_slice(&lvm_crc(text).to_le_bytes());
    let crc = lvm_crc(&h[4..]);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    for (i, &b) in text.iter().enumerate() {
        let mut off = text_off + i as u64;
        if off >= size {
            off = off - size + 512;
        }
        img[a + off as usize] = b;
    }
}

/// A device image with an mda at `at` of `size` bytes, the text at `text_off`, plus slack.
pub(crate) fn mda_area(at: u64, size: u64, text_off: u64, text: &[u8]) -> Vec<u8> {
    let mut img = vec![0u8; (at + size + 2048) as usize];
    write_mda(&mut img, at, size, text_off, text);
    img
}

/// A whole PV of `size` bytes: label in sector 1, mda at 4 KiB with `text` (NUL-terminated as LVM
/// does), extents from 1 MiB.
pub(crate) fn pv_image(uuid: &str, size: u64, text: &str) -> Vec<u8> {
    let mut img = vec![0u8; size as usize];
    img[512..1024].copy_from_slice(&label_sector(1, uuid, size));
    let mut t = text.as_bytes().to_vec();
    t.push(0);
    write_mda(&mut img, MDA_AT, PE_START - MDA_AT, 512, &t);
    img
}
