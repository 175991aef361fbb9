//! Recognising what a block device holds, without mounting it.
//!
//! Each check reads a few fixed offsets and compares a signature, then fills the UUID and label
//! the way `blkid -p` prints them (libblkid's `superblocks/*.c` are the reference for where each
//! format keeps them). Containers that hold other filesystems (md RAID members, LVM PVs, LUKS,
//! BitLocker) are checked first: an md v1.0 member starts with the filesystem it mirrors, and
//! blkid reports such a device as `linux_raid_member` too.

use std::sync::Arc;

use disk::{BlockRead, BlockReadExt};

use crate::ext4::{self, Ext4Fs, ext_kind, format_uuid, label_from_bytes};
use crate::fat::{self, FatFs};
use crate::{Error, FsRead, Result};

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

/// LUKS magic at offset 0 (LUKS1 on-disk format, section 2.4; LUKS2 spec, section 2.1).
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";
/// LUKS `uuid` field: 40 bytes of NUL-terminated text at 168, in both versions.
const LUKS_UUID: (u64, usize) = (168, 40);
/// LUKS2 `label`: 48 bytes at 24.
const LUKS2_LABEL: (u64, usize) = (24, 48);
/// md superblock magic (`MD_SB_MAGIC`, `include/uapi/linux/raid/md_p.h`).
const MD_MAGIC: u32 = 0xa92b_4efc;
/// md v0.90 reserves the last 64 KiB-aligned 64 KiB (`MD_RESERVED_BYTES`).
const MD_RESERVED_BYTES: u64 = 64 * 1024;
/// LVM2 label: `LABELONE` in one of the first four sectors, type `LVM2 001` at +24, the
/// `pv_header` offset at +20 (LVM2 `label.h`, `format_text/layout.h`).
const LVM_LABEL_ID: &[u8] = b"LABELONE";
const LVM_LABEL_TYPE: &[u8] = b"LVM2 001";
const LVM_LABEL_SCAN_SECTORS: u64 = 4;
/// LVM PV UUIDs are 32 characters, printed 6-4-4-4-4-4-6.
const LVM_ID_LEN: usize = 32;
/// BitLocker's boot sector OEM id (`-FVE-FS-`) at offset 3.
const BITLOCKER_OEM: &[u8] = b"-FVE-FS-";
/// NTFS boot sector OEM id at offset 3, and the volume serial number at 0x48.
const NTFS_OEM: &[u8] = b"NTFS    ";
const NTFS_SERIAL: std::ops::Range<usize> = 0x48..0x50;
/// `$Volume` is MFT record 3; its `$VOLUME_NAME` attribute (type 0x60) holds the label.
const NTFS_VOLUME_RECORD: u64 = 3;
const NTFS_ATTR_VOLUME_NAME: u32 = 0x60;
const NTFS_ATTR_END: u32 = 0xFFFF_FFFF;
/// Largest MFT record we read (NTFS uses 1 KiB or 4 KiB).
const NTFS_MAX_RECORD: u64 = 64 * 1024;
/// XFS superblock: magic at 0, `sb_uuid` at 32, `sb_fname` (12 bytes) at 108.
const XFS_MAGIC: &[u8] = b"XFSB";
/// btrfs superblock at 64 KiB: `fsid` at +0x20, magic at +0x40, `label` (256 bytes) at +0x12b.
const BTRFS_SB: u64 = 0x1_0000;
const BTRFS_MAGIC: &[u8] = b"_BHRfS_M";
/// Linux swap: magic in the last 10 bytes of the first page; `uuid` at 1036, `volume_name` at
/// 1052 (`include/linux/swap.h`, `union swap_header`). Page sizes blkid tries.
const SWAP_PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];
const SWAP_MAGICS: [&[u8]; 2] = [b"SWAPSPACE2", b"SWAP-SPACE"];

/// Reads `len` bytes at `offset`, or `None` if the range passes the end of the device.
fn read_opt(dev: &dyn BlockRead, offset: u64, len: usize) -> Result<Option<Vec<u8>>> {
    let Some(end) = offset.checked_add(len as u64) else {
        return Ok(None);
    };
    if end > dev.size() {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    dev.read_exact_at(offset, &mut buf)?;
    Ok(Some(buf))
}

fn found(kind: FsKind, uuid: Option<String>, label: Option<String>) -> Option<Probe> {
    Some(Probe { kind, uuid, label })
}

fn uuid16(b: &[u8]) -> Option<String> {
    <[u8; 16]>::try_from(b).ok().as_ref().and_then(format_uuid)
}

fn probe_luks(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    let Some(hdr) = read_opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if !hdr.starts_with(LUKS_MAGIC) {
        return Ok(None);
    }
    let text = |(at, len): (u64, usize)| {
        let at = usize::try_from(at).unwrap_or(usize::MAX);
        hdr.get(at..at.saturating_add(len))
            .and_then(label_from_bytes)
    };
    let version = u16::from_be_bytes([hdr[6], hdr[7]]);
    let label = if version == 2 {
        text(LUKS2_LABEL)
    } else {
        None
    };
    Ok(found(FsKind::Luks, text(LUKS_UUID), label))
}

/// md superblock at `offset`, if its magic and version match.
fn probe_md_at(dev: &dyn BlockRead, offset: u64, major: u32) -> Result<Option<Probe>> {
    let Some(sb) = read_opt(dev, offset, 256)? else {
        return Ok(None);
    };
    let le = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    if le(0) != MD_MAGIC || le(4) != major {
        return Ok(None);
    }
    if major == 0 {
        // v0.90: set_uuid0 at word 5, set_uuid1..3 at words 13..16; blkid prints each word's
        // value, most significant byte first.
        let mut u = [0u8; 16];
        for (i, word) in [5usize, 13, 14, 15].into_iter().enumerate() {
            u[i * 4..i * 4 + 4].copy_from_slice(&le(word * 4).to_be_bytes());
        }
        return Ok(found(FsKind::MdRaid, format_uuid(&u), None));
    }
    // v1.x: super_offset (in sectors, at byte 144) must point back at this superblock.
    let super_offset = u64::from_le_bytes(sb[144..152].try_into().unwrap_or([0; 8]));
    if super_offset.checked_mul(512) != Some(offset) {
        return Ok(None);
    }
    Ok(found(
        FsKind::MdRaid,
        uuid16(&sb[16..32]),
        label_from_bytes(&sb[32..64]),
    ))
}

fn probe_md(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    let size = dev.size();
    // v0.90 at the end (64 KiB aligned), v1.0 at the end (8 KiB back, 4 KiB aligned), v1.1 at
    // the start, v1.2 4 KiB in (md(4), "SUPERBLOCK FORMATS").
    let mut candidates = Vec::with_capacity(4);
    if let Some(at) = (size & !(MD_RESERVED_BYTES - 1)).checked_sub(MD_RESERVED_BYTES) {
        candidates.push((at, 0));
    }
    if let Some(sectors) = (size / 512).checked_sub(16) {
        candidates.push(((sectors & !7) * 512, 1));
    }
    candidates.push((0, 1));
    candidates.push((4096, 1));
    for (at, major) in candidates {
        if let Some(p) = probe_md_at(dev, at, major)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn probe_lvm(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    for sector in 0..LVM_LABEL_SCAN_SECTORS {
        let Some(s) = read_opt(dev, sector * 512, 512)? else {
            return Ok(None);
        };
        if !s.starts_with(LVM_LABEL_ID) || s.get(24..32) != Some(LVM_LABEL_TYPE) {
            continue;
        }
        let off = u32::from_le_bytes([s[20], s[21], s[22], s[23]]);
        let off = usize::try_from(off).unwrap_or(usize::MAX);
        let uuid = s
            .get(off..off.saturating_add(LVM_ID_LEN))
            .filter(|id| id.iter().all(u8::is_ascii_alphanumeric))
            .map(|id| {
                let mut out = String::with_capacity(38);
                for (i, &c) in id.iter().enumerate() {
                    if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
                        out.push('-');
                    }
                    out.push(char::from(c));
                }
                out
            });
        return Ok(found(FsKind::LvmPv, uuid, None));
    }
    Ok(None)
}

/// The NTFS label from `$Volume`'s `$VOLUME_NAME`, or `None` when anything along the way does
/// not look right (probing never fails on a damaged label).
fn ntfs_label(dev: &dyn BlockRead, boot: &[u8]) -> Result<Option<String>> {
    let bps = u64::from(u16::from_le_bytes([boot[0x0B], boot[0x0C]]));
    let spc_raw = boot[0x0D];
    // Values above 128 are negative powers: 2^(256 - x) sectors (used for 4 KiB+ clusters).
    let spc = if spc_raw <= 0x80 {
        u64::from(spc_raw)
    } else {
        1u64.checked_shl(256 - u32::from(spc_raw)).unwrap_or(0)
    };
    let cluster = bps.saturating_mul(spc);
    let mft_lcn = u64::from_le_bytes(boot[0x30..0x38].try_into().unwrap_or([0; 8]));
    let cpr = i8::from_le_bytes([boot[0x40]]);
    let record = if cpr >= 0 {
        cluster.saturating_mul(u64::from(cpr.unsigned_abs()))
    } else {
        1u64.checked_shl(u32::from(cpr.unsigned_abs())).unwrap_or(0)
    };
    if !bps.is_power_of_two() || cluster == 0 || !(512..=NTFS_MAX_RECORD).contains(&record) {
        return Ok(None);
    }
    let Some(at) = mft_lcn
        .checked_mul(cluster)
        .and_then(|m| m.checked_add(NTFS_VOLUME_RECORD * record))
    else {
        return Ok(None);
    };
    let len = usize::try_from(record).unwrap_or(0);
    let Some(mut rec) = read_opt(dev, at, len)? else {
        return Ok(None);
    };
    if !rec.starts_with(b"FILE") {
        return Ok(None);
    }
    // Update sequence fixups: the last two bytes of each 512-byte stride were saved in the
    // update sequence array (NTFS "MULTI_SECTOR_HEADER").
    let usa_off = usize::from(u16::from_le_bytes([rec[4], rec[5]]));
    let usa_count = usize::from(u16::from_le_bytes([rec[6], rec[7]]));
    for i in 1..usa_count {
        let (Some(src), Some(dst)) = (usa_off.checked_add(i * 2), (i * 512).checked_sub(2)) else {
            return Ok(None);
        };
        let Some(saved) = rec.get(src..src + 2).map(|s| [s[0], s[1]]) else {
            return Ok(None);
        };
        match rec.get_mut(dst..dst + 2) {
            Some(d) => d.copy_from_slice(&saved),
            None => return Ok(None),
        }
    }
    let mut pos = usize::from(u16::from_le_bytes([rec[0x14], rec[0x15]]));
    // Each attribute is at least 16 bytes, so this many steps cover the record.
    for _ in 0..len / 16 {
        let Some(h) = rec.get(pos..pos + 0x18) else {
            return Ok(None);
        };
        let ty = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let alen = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if ty == NTFS_ATTR_END || alen < 0x18 {
            return Ok(None);
        }
        if ty == NTFS_ATTR_VOLUME_NAME && h[8] == 0 {
            let vlen = usize::try_from(u32::from_le_bytes([h[0x10], h[0x11], h[0x12], h[0x13]]))
                .unwrap_or(usize::MAX);
            let voff = usize::from(u16::from_le_bytes([h[0x14], h[0x15]]));
            let start = pos.saturating_add(voff);
            let Some(v) = rec.get(start..start.saturating_add(vlen)) else {
                return Ok(None);
            };
            let units: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let s = String::from_utf16_lossy(&units);
            return Ok((!s.is_empty()).then_some(s));
        }
        pos = match pos.checked_add(usize::try_from(alen).unwrap_or(usize::MAX)) {
            Some(p) => p,
            None => return Ok(None),
        };
    }
    Ok(None)
}

fn probe_boot_sector_kinds(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    let Some(boot) = read_opt(dev, 0, 512)? else {
        return Ok(None);
    };
    if boot.get(3..11) == Some(BITLOCKER_OEM) {
        return Ok(found(FsKind::BitLocker, None, None));
    }
    if boot.get(3..11) == Some(NTFS_OEM) {
        let serial = u64::from_le_bytes(boot[NTFS_SERIAL].try_into().unwrap_or([0; 8]));
        let uuid = (serial != 0).then(|| format!("{serial:016X}"));
        return Ok(found(FsKind::Ntfs, uuid, ntfs_label(dev, &boot)?));
    }
    if boot.starts_with(XFS_MAGIC) {
        let label = label_from_bytes(&boot[108..120]);
        return Ok(found(FsKind::Xfs, uuid16(&boot[32..48]), label));
    }
    Ok(None)
}

fn probe_btrfs(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    let Some(sb) = read_opt(dev, BTRFS_SB, 0x12b + 256)? else {
        return Ok(None);
    };
    if sb.get(0x40..0x48) != Some(BTRFS_MAGIC) {
        return Ok(None);
    }
    Ok(found(
        FsKind::Btrfs,
        uuid16(&sb[0x20..0x30]),
        label_from_bytes(&sb[0x12b..]),
    ))
}

fn probe_swap(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    for page in SWAP_PAGE_SIZES {
        let Some(magic) = read_opt(dev, page - 10, 10)? else {
            return Ok(None);
        };
        if !SWAP_MAGICS.contains(&magic.as_slice()) {
            continue;
        }
        if magic.as_slice() != SWAP_MAGICS[0] {
            // Old v0 swap: no UUID or label.
            return Ok(found(FsKind::Swap, None, None));
        }
        let Some(hdr) = read_opt(dev, 1024, 44)? else {
            return Ok(None);
        };
        let version = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        if version != 1 {
            return Ok(found(FsKind::Swap, None, None));
        }
        return Ok(found(
            FsKind::Swap,
            uuid16(&hdr[12..28]),
            label_from_bytes(&hdr[28..44]),
        ));
    }
    Ok(None)
}

fn probe_ext(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    let Some(sb) = read_opt(dev, ext4::SUPERBLOCK_OFFSET, 0x88)? else {
        return Ok(None);
    };
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != ext4::EXT_MAGIC {
        return Ok(None);
    }
    let le = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let (compat, incompat, ro_compat) = (le(0x5C), le(0x60), le(0x64));
    if incompat & ext4::incompat::JOURNAL_DEV != 0 {
        // An external journal (blkid: "jbd"), not a filesystem we model.
        return Ok(found(FsKind::Unknown, None, None));
    }
    Ok(found(
        ext_kind(compat, incompat, ro_compat),
        uuid16(&sb[0x68..0x78]),
        label_from_bytes(&sb[0x78..0x88]),
    ))
}

fn probe_fat(dev: &dyn BlockRead) -> Result<Option<Probe>> {
    if dev.size() < fat::BOOT_SECTOR_SIZE as u64 {
        return Ok(None);
    }
    let raw: fat::RawBootSector = dev.read_struct(0)?;
    let Ok(bs) = fat::BootSector::try_from(&raw) else {
        return Ok(None);
    };
    // A damaged root directory only costs the label, never the probe.
    let label = match bs.label(dev) {
        Ok(l) => l,
        Err(Error::Disk(disk::Error::OutOfBounds { .. })) => bs.boot_label.clone(),
        Err(e) => return Err(e),
    };
    Ok(found(bs.kind, bs.serial(), label))
}

/// Identifies what `dev` holds by its signatures.
///
/// # Errors
/// Only I/O errors; unrecognised content is `FsKind::Unknown`.
pub fn probe(dev: &dyn BlockRead) -> Result<Probe> {
    type Check = fn(&dyn BlockRead) -> Result<Option<Probe>>;
    const CHECKS: [Check; 8] = [
        probe_luks,
        probe_md,
        probe_lvm,
        probe_boot_sector_kinds,
        probe_btrfs,
        probe_swap,
        probe_ext,
        probe_fat,
    ];
    for check in CHECKS {
        if let Some(p) = check(dev)? {
            tracing::debug!(kind = ?p.kind, "probed");
            return Ok(p);
        }
    }
    Ok(Probe {
        kind: FsKind::Unknown,
        uuid: None,
        label: None,
    })
}

/// Opens the filesystem on `dev` for reading, choosing the backend by [`probe`].
///
/// # Errors
/// [`Error::Unsupported`] for kinds that are recognised but not readable (naming the kind) and
/// for unrecognised content; the backend's errors otherwise.
pub fn open(dev: Arc<dyn BlockRead>) -> Result<Box<dyn FsRead>> {
    let p = probe(&*dev)?;
    Ok(match p.kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => Box::new(Ext4Fs::open(dev)?),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => Box::new(FatFs::open(dev)?),
        FsKind::Ntfs => Box::new(crate::ntfs::NtfsFs::open(dev)?),
        FsKind::Xfs => Box::new(crate::xfs::XfsFs::open(dev)?),
        FsKind::Unknown => {
            return Err(Error::unsupported("filesystem", "no filesystem recognised"));
        }
        other => {
            return Err(Error::unsupported(
                "filesystem",
                format!("{} is recognised but cannot be read", other.blkid_name()),
            ));
        }
    })
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images and offsets are small"
)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use disk::MemDisk;
    use disk::testkit::FaultyDisk;

    use super::*;
    use crate::fuzzing::testutil::{FileDisk, blkid, have, need, run};

    /// Probes `img` and checks kind, UUID and label against `blkid -p`.
    fn same_as_blkid(img: &Path, kind: FsKind) -> Probe {
        let p = probe(&*FileDisk::open(img)).unwrap();
        let id = blkid(img);
        assert_eq!(p.kind, kind, "{img:?}");
        assert_eq!(kind.blkid_name(), id["TYPE"], "{img:?}");
        assert_eq!(
            p.uuid.as_deref(),
            id.get("UUID").map(String::as_str),
            "{img:?}"
        );
        assert_eq!(
            p.label.as_deref(),
            id.get("LABEL").map(String::as_str),
            "{img:?}"
        );
        p
    }

    fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    #[test]
    fn ext_kinds_like_blkid() {
        if !need(&["mke2fs", "blkid"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        for (t, kind) in [
            ("ext2", FsKind::Ext2),
            ("ext3", FsKind::Ext3),
            ("ext4", FsKind::Ext4),
        ] {
            let img = tmp.path().join(t);
            assert!(run(Command::new("mke2fs")
                .args(["-q", "-F", "-t", t, "-L", &format!("lbl-{t}")])
                .arg(&img)
                .arg("8M")));
            let p = same_as_blkid(&img, kind);
            assert_eq!(p.label.as_deref(), Some(format!("lbl-{t}").as_str()));
        }
        // ext4 without a journal is still ext4 (extents), as blkid says.
        let img = tmp.path().join("nojournal");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal"])
            .arg(&img)
            .arg("8M")));
        let p = same_as_blkid(&img, FsKind::Ext4);
        assert_eq!(p.label, None);
    }

    #[test]
    fn fat_kinds_like_blkid() {
        if !need(&["mkfs.vfat", "blkid"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        for (bits, kb, kind) in [
            ("12", "2048", FsKind::Fat12),
            ("16", "8192", FsKind::Fat16),
            ("32", "34816", FsKind::Fat32),
        ] {
            for label in ["BOOT", ""] {
                let img = tmp.path().join(format!("fat{bits}{label}"));
                let _ = std::fs::remove_file(&img);
                assert!(run(Command::new("mkfs.vfat")
                    .args(["-C", "-F", bits, "-s", "1", "-i", "0badcafe", "-n", label])
                    .arg(&img)
                    .arg(kb)));
                let p = same_as_blkid(&img, kind);
                assert_eq!(p.uuid.as_deref(), Some("0BAD-CAFE"));
                assert_eq!(p.label.as_deref(), (!label.is_empty()).then_some(label));
            }
        }
    }

    #[test]
    fn swap_btrfs_xfs_ntfs_like_blkid() {
        let tmp = tempfile::tempdir().unwrap();
        if need(&["mkswap", "blkid"]) {
            let img = sparse(tmp.path(), "swap", 16 << 20);
            assert!(run(Command::new("mkswap")
                .args(["-L", "swappy", "-U", "6f0a3c5e-2b1d-4e8f-9a7b-1c2d3e4f5a6b"])
                .arg(&img)));
            let p = same_as_blkid(&img, FsKind::Swap);
            assert_eq!(
                p.uuid.as_deref(),
                Some("6f0a3c5e-2b1d-4e8f-9a7b-1c2d3e4f5a6b")
            );
        }
        if need(&["mkfs.btrfs", "blkid"]) {
            let img = sparse(tmp.path(), "btrfs", 128 << 20);
            assert!(run(Command::new("mkfs.btrfs")
                .args(["-q", "-f", "-L", "data"])
                .arg(&img)));
            assert_eq!(
                same_as_blkid(&img, FsKind::Btrfs).label.as_deref(),
                Some("data")
            );
        }
        if need(&["mkfs.xfs", "blkid"]) {
            let img = sparse(tmp.path(), "xfs", 300 << 20);
            assert!(run(Command::new("mkfs.xfs")
                .args(["-q", "-f", "-L", "root"])
                .arg(&img)));
            assert_eq!(
                same_as_blkid(&img, FsKind::Xfs).label.as_deref(),
                Some("root")
            );
        }
        if need(&["mkntfs", "blkid"]) {
            let img = sparse(tmp.path(), "ntfs", 16 << 20);
            assert!(run(Command::new("mkntfs")
                .args(["-F", "-Q", "-L", "Windows"])
                .arg(&img)));
            let p = same_as_blkid(&img, FsKind::Ntfs);
            assert_eq!(p.label.as_deref(), Some("Windows"));
            assert_eq!(p.uuid.as_ref().map(String::len), Some(16));
        }
    }

    #[test]
    fn luks_like_blkid() {
        if !need(&["cryptsetup", "blkid"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("key");
        std::fs::write(&key, b"not a secret, only a test key").unwrap();
        for (ty, label) in [("luks1", None), ("luks2", Some("vault"))] {
            let img = sparse(tmp.path(), ty, 20 << 20);
            let mut cmd = Command::new("cryptsetup");
            cmd.args(["luksFormat", "--batch-mode", "--type", ty])
                .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
                .arg("--key-file")
                .arg(&key);
            if let Some(l) = label {
                cmd.args(["--label", l]);
            }
            if !run(cmd.arg(&img)) {
                eprintln!("skipping: cryptsetup luksFormat --type {ty} failed");
                continue;
            }
            let p = same_as_blkid(&img, FsKind::Luks);
            assert_eq!(p.label.as_deref(), label);
            assert_eq!(p.uuid.as_ref().map(String::len), Some(36));
        }
    }

    /// An md v1.x superblock for a device of `size` bytes at `offset`, with a valid checksum.
    fn md_v1(size: usize, offset: usize) -> Vec<u8> {
        let mut img = vec![0u8; size];
        let sb = &mut img[offset..offset + 1024];
        sb[0..4].copy_from_slice(&MD_MAGIC.to_le_bytes());
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[16..32].copy_from_slice(&core::array::from_fn::<u8, 16, _>(|i| i as u8 + 1));
        sb[32..38].copy_from_slice(b"host:0");
        sb[72..76].copy_from_slice(&1u32.to_le_bytes()); // level 1
        sb[92..96].copy_from_slice(&2u32.to_le_bytes()); // raid_disks
        sb[144..152].copy_from_slice(&(offset as u64 / 512).to_le_bytes());
        sb[220..224].copy_from_slice(&2u32.to_le_bytes()); // max_dev
        // sb_csum: 32-bit words of the first 256 + 2 * max_dev bytes, folded.
        let sum: u64 = sb[..260]
            .chunks_exact(4)
            .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
            .sum();
        let csum = ((sum & 0xFFFF_FFFF) + (sum >> 32)) as u32;
        sb[216..220].copy_from_slice(&csum.to_le_bytes());
        img
    }

    #[test]
    fn md_superblocks_like_blkid() {
        let size = 8 << 20;
        let v10 = ((size / 512 - 16) & !7) * 512;
        let tmp = tempfile::tempdir().unwrap();
        for (name, at) in [("1.0", v10), ("1.1", 0), ("1.2", 4096)] {
            let img = md_v1(size, at);
            let p = probe(&MemDisk::from_vec(img.clone())).unwrap();
            assert_eq!(
                p,
                Probe {
                    kind: FsKind::MdRaid,
                    uuid: Some("01020304-0506-0708-090a-0b0c0d0e0f10".into()),
                    label: Some("host:0".into()),
                },
                "v{name}"
            );
            if have("blkid") {
                let f = tmp.path().join(name);
                std::fs::write(&f, &img).unwrap();
                same_as_blkid(&f, FsKind::MdRaid);
            }
        }
        // v0.90 at the last 64 KiB-aligned 64 KiB.
        let mut img = vec![0u8; size];
        let at = (size & !0xFFFF) - 0x10000;
        for (word, v) in [
            (0usize, MD_MAGIC),
            (2, 90),
            (5, 0x1122_3344),
            (13, 0x5566_7788),
        ] {
            img[at + word * 4..at + word * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        let p = probe(&MemDisk::from_vec(img.clone())).unwrap();
        assert_eq!(
            p.uuid.as_deref(),
            Some("11223344-5566-7788-0000-000000000000")
        );
        if have("blkid") {
            let f = tmp.path().join("0.90");
            std::fs::write(&f, &img).unwrap();
            same_as_blkid(&f, FsKind::MdRaid);
        }
        // A v1 magic whose super_offset points elsewhere is not a superblock.
        let mut img = md_v1(size, 4096);
        img[4096 + 144] = 9;
        assert_eq!(
            probe(&MemDisk::from_vec(img)).unwrap().kind,
            FsKind::Unknown
        );
    }

    /// An LVM2 label in sector 1, as `pvcreate` writes it.
    fn lvm_label(uuid: &[u8; 32]) -> Vec<u8> {
        let mut img = vec![0u8; 1 << 20];
        let l = &mut img[512..1024];
        l[..8].copy_from_slice(LVM_LABEL_ID);
        l[8..16].copy_from_slice(&1u64.to_le_bytes());
        l[20..24].copy_from_slice(&32u32.to_le_bytes());
        l[24..32].copy_from_slice(LVM_LABEL_TYPE);
        l[32..64].copy_from_slice(uuid);
        img
    }

    #[test]
    fn lvm_pv_label() {
        let p = probe(&MemDisk::from_vec(lvm_label(
            b"HPJ7fr62acrD86KMe0QbSBAClkxouRBr",
        )))
        .unwrap();
        assert_eq!(
            p,
            Probe {
                kind: FsKind::LvmPv,
                uuid: Some("HPJ7fr-62ac-rD86-KMe0-QbSB-AClk-xouRBr".into()),
                label: None,
            }
        );
        // A damaged UUID still identifies the PV, without a UUID.
        let p = probe(&MemDisk::from_vec(lvm_label(&[0xFF; 32]))).unwrap();
        assert_eq!((p.kind, p.uuid), (FsKind::LvmPv, None));
    }

    #[test]
    fn lvm_pv_like_blkid_via_loop_device() {
        if !need(&["pvcreate", "losetup", "blkid"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = sparse(tmp.path(), "pv", 8 << 20);
        let Some(out) = crate::fuzzing::testutil::output(
            Command::new("losetup").args(["-f", "--show"]).arg(&img),
        ) else {
            eprintln!("skipping: no loop device");
            return;
        };
        let loopdev = String::from_utf8_lossy(&out).trim().to_owned();
        let made = run(Command::new("pvcreate").args(["-y", "-ff", &loopdev]));
        let _ = run(Command::new("losetup").args(["-d", &loopdev]));
        if !made {
            eprintln!("skipping: pvcreate failed");
            return;
        }
        let p = same_as_blkid(&img, FsKind::LvmPv);
        assert_eq!(p.uuid.as_ref().map(String::len), Some(38));
    }

    #[test]
    fn bitlocker_unknown_and_short_devices() {
        let mut img = vec![0u8; 64 << 10];
        img[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
        img[3..11].copy_from_slice(BITLOCKER_OEM);
        img[510..512].copy_from_slice(&[0x55, 0xAA]);
        let p = probe(&MemDisk::from_vec(img)).unwrap();
        assert_eq!(
            p,
            Probe {
                kind: FsKind::BitLocker,
                uuid: None,
                label: None
            }
        );
        for len in [0usize, 100, 512, 4096, 1 << 20] {
            let p = probe(&MemDisk::from_vec(vec![0; len])).unwrap();
            assert_eq!(p.kind, FsKind::Unknown, "{len} zero bytes");
        }
        // An external ext journal is not a filesystem.
        let mut img = vec![0u8; 8192];
        img[1024 + 0x38..1024 + 0x3A].copy_from_slice(&ext4::EXT_MAGIC.to_le_bytes());
        img[1024 + 0x60] = ext4::incompat::JOURNAL_DEV as u8;
        assert_eq!(
            probe(&MemDisk::from_vec(img)).unwrap().kind,
            FsKind::Unknown
        );
    }

    #[test]
    fn io_errors_propagate() {
        let dev = FaultyDisk::new(
            MemDisk::from_vec(vec![0; 1 << 20]),
            std::iter::once(0..1).collect(),
        );
        assert!(matches!(
            probe(&dev),
            Err(Error::Disk(disk::Error::Io { offset: 0, .. }))
        ));
    }

    #[test]
    fn open_dispatches_by_kind() {
        if !need(&["mke2fs", "mkswap"]) {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("ext4");
        assert!(run(Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4"])
            .arg(&img)
            .arg("8M")));
        let fs = open(FileDisk::open(&img)).unwrap();
        assert_eq!(fs.info().kind, FsKind::Ext4);
        assert_eq!(fs.read_dir(&crate::GuestPath::root()).unwrap().len(), 1);

        let swap = sparse(tmp.path(), "swap", 1 << 20);
        assert!(run(Command::new("mkswap").arg(&swap)));
        let e = open(FileDisk::open(&swap)).err().unwrap();
        assert_eq!(
            e.to_string(),
            "unsupported filesystem: swap is recognised but cannot be read"
        );
        let e = open(Arc::new(MemDisk::from_vec(vec![0; 4096])))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "unsupported filesystem: no filesystem recognised"
        );
        let e = open(Arc::new(MemDisk::from_vec(lvm_label(&[b'a'; 32]))))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "unsupported filesystem: LVM2_member is recognised but cannot be read"
        );
    }
}
