//! The primary superblock (AG 0, sector 0) and the geometry derived from it.
//!
//! Spec: XFS Algorithms & Data Structures, "Superblocks". All fields are big-endian.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::crc;
use crate::{Error, Result};

/// `sb_magicnum`: "XFSB".
pub(crate) const XFS_SB_MAGIC: u32 = 0x5846_5342;
/// Smallest and largest filesystem block (spec: "sb_blocksize", 512 B to 64 KiB).
const BLOCKLOG_RANGE: std::ops::RangeInclusive<u8> = 9..=16;
/// Sector sizes XFS supports (512 B to 32 KiB).
const SECTLOG_RANGE: std::ops::RangeInclusive<u8> = 9..=15;
/// Inode sizes XFS supports (256 B to 2 KiB; v5 needs at least 512 B).
const INODELOG_RANGE: std::ops::RangeInclusive<u8> = 8..=11;
/// Directory blocks are at most 64 KiB (spec: "sb_dirblklog").
const MAX_DIRBLOCK_LOG: u8 = 16;
/// Smallest allocation group, in blocks (`XFS_MIN_AG_BLOCKS`).
const MIN_AG_BLOCKS: u32 = 64;

/// `sb_versionnum` low nibble (`XFS_SB_VERSION_NUMBITS`).
const VERSION_NUMBITS: u16 = 0x000f;
/// `XFS_SB_VERSION_DIRV2BIT`: version 2 directories (v1 directories are not supported).
const VERSION_DIRV2BIT: u16 = 0x2000;
/// `XFS_SB_VERSION_BORGBIT`: ASCII case-insensitive names.
const VERSION_BORGBIT: u16 = 0x4000;
/// `XFS_SB_VERSION_MOREBITSBIT`: `sb_features2` is valid.
const VERSION_MOREBITSBIT: u16 = 0x8000;
/// `XFS_SB_VERSION2_FTYPE`: directory entries carry a file type (v4 only; v5 uses incompat).
const VERSION2_FTYPE: u32 = 0x0000_0200;

/// `XFS_SB_FEAT_INCOMPAT_FTYPE`.
pub(crate) const INCOMPAT_FTYPE: u32 = 1 << 0;
/// `XFS_SB_FEAT_INCOMPAT_SPINODES`: sparse inode chunks (only affects allocation).
pub(crate) const INCOMPAT_SPINODES: u32 = 1 << 1;
/// `XFS_SB_FEAT_INCOMPAT_META_UUID`: metadata is stamped with `sb_meta_uuid`.
pub(crate) const INCOMPAT_META_UUID: u32 = 1 << 2;
/// `XFS_SB_FEAT_INCOMPAT_BIGTIME`: 64-bit nanosecond timestamps.
pub(crate) const INCOMPAT_BIGTIME: u32 = 1 << 3;
/// `XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR`: `xfs_repair` must run first.
pub(crate) const INCOMPAT_NEEDSREPAIR: u32 = 1 << 4;
/// `XFS_SB_FEAT_INCOMPAT_NREXT64`: 64-bit data fork extent counters.
pub(crate) const INCOMPAT_NREXT64: u32 = 1 << 5;
/// Every incompatible feature this reader understands.
const INCOMPAT_KNOWN: u32 =
    INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_META_UUID | INCOMPAT_BIGTIME | INCOMPAT_NREXT64;

/// Byte offset of `sb_crc` (spec: "Superblocks", v5 fields).
const SB_CRC_OFFSET: usize = 224;

/// The on-disk superblock, as far as this reader needs it (264 bytes, v5 layout).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawSuperblock {
    pub(crate) sb_magicnum: U32,
    pub(crate) sb_blocksize: U32,
    pub(crate) sb_dblocks: U64,
    pub(crate) sb_rblocks: U64,
    pub(crate) sb_rextents: U64,
    pub(crate) sb_uuid: [u8; 16],
    pub(crate) sb_logstart: U64,
    pub(crate) sb_rootino: U64,
    pub(crate) sb_rbmino: U64,
    pub(crate) sb_rsumino: U64,
    pub(crate) sb_rextsize: U32,
    pub(crate) sb_agblocks: U32,
    pub(crate) sb_agcount: U32,
    pub(crate) sb_rbmblocks: U32,
    pub(crate) sb_logblocks: U32,
    pub(crate) sb_versionnum: U16,
    pub(crate) sb_sectsize: U16,
    pub(crate) sb_inodesize: U16,
    pub(crate) sb_inopblock: U16,
    pub(crate) sb_fname: [u8; 12],
    pub(crate) sb_blocklog: u8,
    pub(crate) sb_sectlog: u8,
    pub(crate) sb_inodelog: u8,
    pub(crate) sb_inopblog: u8,
    pub(crate) sb_agblklog: u8,
    pub(crate) sb_rextslog: u8,
    pub(crate) sb_inprogress: u8,
    pub(crate) sb_imax_pct: u8,
    pub(crate) sb_icount: U64,
    pub(crate) sb_ifree: U64,
    pub(crate) sb_fdblocks: U64,
    pub(crate) sb_frextents: U64,
    pub(crate) sb_uquotino: U64,
    pub(crate) sb_gquotino: U64,
    pub(crate) sb_qflags: U16,
    pub(crate) sb_flags: u8,
    pub(crate) sb_shared_vn: u8,
    pub(crate) sb_inoalignmt: U32,
    pub(crate) sb_unit: U32,
    pub(crate) sb_width: U32,
    pub(crate) sb_dirblklog: u8,
    pub(crate) sb_logsectlog: u8,
    pub(crate) sb_logsectsize: U16,
    pub(crate) sb_logsunit: U32,
    pub(crate) sb_features2: U32,
    pub(crate) sb_bad_features2: U32,
    pub(crate) sb_features_compat: U32,
    pub(crate) sb_features_ro_compat: U32,
    pub(crate) sb_features_incompat: U32,
    pub(crate) sb_features_log_incompat: U32,
    pub(crate) sb_crc: U32,
    pub(crate) sb_spino_align: U32,
    pub(crate) sb_pquotino: U64,
    pub(crate) sb_lsn: U64,
    pub(crate) sb_meta_uuid: [u8; 16],
}

/// Size of [`RawSuperblock`].
pub(crate) const RAW_SB_LEN: usize = 264;

/// The superblock's format generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbVersion {
    /// Version 4: no metadata checksums (RHEL 6 and older, or `mkfs.xfs -m crc=0`).
    V4,
    /// Version 5: self-describing metadata with CRC32c (RHEL 7.3+ default).
    V5,
}

/// The validated superblock: geometry every other structure is checked against.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Format generation.
    pub version: SbVersion,
    /// `sb_blocklog`: log2 of the filesystem block size.
    pub blocklog: u8,
    /// `sb_sectlog`: log2 of the sector size.
    pub sectlog: u8,
    /// `sb_inodelog`: log2 of the inode size.
    pub inodelog: u8,
    /// `sb_inopblog`: log2 of inodes per block.
    pub inopblog: u8,
    /// `sb_agblklog`: bits of an AG-relative block number inside inode and block numbers.
    pub agblklog: u8,
    /// `sb_dirblklog`: log2 of directory block size in filesystem blocks.
    pub dirblklog: u8,
    /// `sb_agblocks`: blocks per allocation group (the last one may be shorter).
    pub agblocks: u32,
    /// `sb_agcount`.
    pub agcount: u32,
    /// `sb_dblocks`: blocks in the data device.
    pub dblocks: u64,
    /// `sb_rootino`.
    pub rootino: u64,
    /// `sb_uuid`.
    pub uuid: [u8; 16],
    /// `sb_fname`, up to the first NUL.
    pub label: Vec<u8>,
    /// Directory entries carry a file type byte.
    pub has_ftype: bool,
    /// Inodes may use 64-bit nanosecond timestamps.
    pub has_bigtime: bool,
    /// Inodes may use 64-bit extent counters.
    pub has_nrext64: bool,
    /// `sb_features_incompat` (0 on v4).
    pub features_incompat: u32,
}

fn corrupt(offset: u64, detail: String) -> Error {
    Error::corrupt("xfs superblock", offset, detail)
}

fn check_log(
    name: &str,
    offset: u64,
    value: u64,
    log: u8,
    range: &std::ops::RangeInclusive<u8>,
) -> Result<()> {
    if !range.contains(&log) {
        return Err(corrupt(
            offset,
            format!(
                "{name} log {log} out of range {}..={}",
                range.start(),
                range.end()
            ),
        ));
    }
    if value != 1u64 << log {
        return Err(corrupt(
            offset,
            format!("{name} {value} does not match its log2 field {log}"),
        ));
    }
    Ok(())
}

/// Names the incompatible feature bits in `bits`.
fn incompat_names(bits: u32) -> String {
    let mut names = Vec::new();
    for i in 0..32u32 {
        let bit = 1u32 << i;
        if bits & bit == 0 {
            continue;
        }
        names.push(match bit {
            INCOMPAT_NEEDSREPAIR => "needsrepair".to_owned(),
            0x40 => "exchange-range".to_owned(),
            0x80 => "parent".to_owned(),
            0x100 => "metadir".to_owned(),
            0x200 => "zoned".to_owned(),
            _ => format!("{bit:#x}"),
        });
    }
    names.join(", ")
}

impl Superblock {
    /// Validates the first sector of the device (at least [`RAW_SB_LEN`] bytes).
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad magic or inconsistent geometry, [`Error::Unsupported`] for
    /// old versions and unknown incompatible features.
    pub(crate) fn parse(sector: &[u8], verify_crc: bool) -> Result<Self> {
        let (raw, _) = RawSuperblock::read_from_prefix(sector)
            .map_err(|_| corrupt(0, format!("sector of {} bytes is too short", sector.len())))?;
        let magic = raw.sb_magicnum.get();
        if magic != XFS_SB_MAGIC {
            return Err(corrupt(0, format!("sb_magicnum {magic:#010x} is not XFSB")));
        }
        let versionnum = raw.sb_versionnum.get();
        let version = match versionnum & VERSION_NUMBITS {
            4 => SbVersion::V4,
            5 => SbVersion::V5,
            1..=3 => {
                return Err(Error::unsupported(
                    "xfs version",
                    format!(
                        "superblock version {} (only 4 and 5)",
                        versionnum & VERSION_NUMBITS
                    ),
                ));
            }
            v => {
                return Err(corrupt(
                    100,
                    format!("sb_versionnum version {v} out of range 1..=5"),
                ));
            }
        };
        // The checksum covers every other field, so check it before trusting any of them.
        if version == SbVersion::V5 && verify_crc {
            let len = usize::from(raw.sb_sectsize.get());
            if !crc::verify(sector.get(..len).unwrap_or(sector), SB_CRC_OFFSET) {
                return Err(corrupt(
                    SB_CRC_OFFSET as u64,
                    "sb_crc does not match the sector".into(),
                ));
            }
        }
        if version == SbVersion::V4 && versionnum & VERSION_DIRV2BIT == 0 {
            return Err(Error::unsupported("xfs feature", "version 1 directories"));
        }
        if versionnum & VERSION_BORGBIT != 0 {
            return Err(Error::unsupported(
                "xfs feature",
                "ascii-ci (case-insensitive names)",
            ));
        }

        let blocksize = raw.sb_blocksize.get();
        check_log(
            "sb_blocksize",
            4,
            u64::from(blocksize),
            raw.sb_blocklog,
            &BLOCKLOG_RANGE,
        )?;
        let sectsize = raw.sb_sectsize.get();
        check_log(
            "sb_sectsize",
            102,
            u64::from(sectsize),
            raw.sb_sectlog,
            &SECTLOG_RANGE,
        )?;
        if raw.sb_sectlog > raw.sb_blocklog {
            return Err(corrupt(
                121,
                format!(
                    "sb_sectlog {} larger than sb_blocklog {}",
                    raw.sb_sectlog, raw.sb_blocklog
                ),
            ));
        }
        let inodesize = raw.sb_inodesize.get();
        let inode_range = if version == SbVersion::V5 {
            9..=11
        } else {
            INODELOG_RANGE
        };
        check_log(
            "sb_inodesize",
            104,
            u64::from(inodesize),
            raw.sb_inodelog,
            &inode_range,
        )?;
        if raw.sb_inodelog > raw.sb_blocklog
            || raw.sb_inopblog != raw.sb_blocklog - raw.sb_inodelog
            || u32::from(raw.sb_inopblock.get()) != blocksize >> raw.sb_inodelog
        {
            return Err(corrupt(
                106,
                format!(
                    "sb_inopblock {} / sb_inopblog {} do not match block size {blocksize} and inode size {inodesize}",
                    raw.sb_inopblock.get(),
                    raw.sb_inopblog
                ),
            ));
        }

        let agblocks = raw.sb_agblocks.get();
        if agblocks < MIN_AG_BLOCKS {
            return Err(corrupt(
                84,
                format!("sb_agblocks {agblocks} below the minimum {MIN_AG_BLOCKS}"),
            ));
        }
        // sb_agblklog is log2 of agblocks rounded up.
        let want_agblklog = u8::try_from(32 - (agblocks - 1).leading_zeros())
            .map_err(|_| corrupt(124, "sb_agblklog overflow".into()))?;
        if raw.sb_agblklog != want_agblklog {
            return Err(corrupt(
                124,
                format!(
                    "sb_agblklog {} does not match sb_agblocks {agblocks} (expected {want_agblklog})",
                    raw.sb_agblklog
                ),
            ));
        }
        let agcount = raw.sb_agcount.get();
        if agcount == 0 {
            return Err(corrupt(88, "sb_agcount 0 out of range 1..".into()));
        }
        let dblocks = raw.sb_dblocks.get();
        let full = u64::from(agcount) * u64::from(agblocks);
        let min =
            u64::from(agcount - 1) * u64::from(agblocks) + u64::from(MIN_AG_BLOCKS.min(agblocks));
        if dblocks > full || dblocks < min {
            return Err(corrupt(
                8,
                format!(
                    "sb_dblocks {dblocks} out of range {min}..={full} for {agcount} AGs of {agblocks} blocks"
                ),
            ));
        }
        if u32::from(raw.sb_blocklog) + u32::from(raw.sb_dirblklog) > u32::from(MAX_DIRBLOCK_LOG) {
            return Err(corrupt(
                192,
                format!(
                    "sb_dirblklog {} makes directory blocks larger than 64 KiB",
                    raw.sb_dirblklog
                ),
            ));
        }

        let (features_incompat, has_ftype) = match version {
            SbVersion::V5 => {
                let incompat = raw.sb_features_incompat.get();
                let unknown = incompat & !INCOMPAT_KNOWN;
                if unknown != 0 {
                    return Err(Error::unsupported(
                        "xfs incompatible feature",
                        format!(
                            "{} (sb_features_incompat {incompat:#x})",
                            incompat_names(unknown)
                        ),
                    ));
                }
                (incompat, incompat & INCOMPAT_FTYPE != 0)
            }
            SbVersion::V4 => {
                let ftype = versionnum & VERSION_MOREBITSBIT != 0
                    && raw.sb_features2.get() & VERSION2_FTYPE != 0;
                (0, ftype)
            }
        };

        let label_len = raw
            .sb_fname
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.sb_fname.len());
        let sb = Self {
            version,
            blocklog: raw.sb_blocklog,
            sectlog: raw.sb_sectlog,
            inodelog: raw.sb_inodelog,
            inopblog: raw.sb_inopblog,
            agblklog: raw.sb_agblklog,
            dirblklog: raw.sb_dirblklog,
            agblocks,
            agcount,
            dblocks,
            rootino: raw.sb_rootino.get(),
            uuid: raw.sb_uuid,
            label: raw.sb_fname.get(..label_len).unwrap_or_default().to_vec(),
            has_ftype,
            has_bigtime: features_incompat & INCOMPAT_BIGTIME != 0,
            has_nrext64: features_incompat & INCOMPAT_NREXT64 != 0,
            features_incompat,
        };
        sb.inode_location(sb.rootino).map_err(|_| {
            corrupt(
                56,
                format!("sb_rootino {} is not a valid inode number", sb.rootino),
            )
        })?;
        Ok(sb)
    }

    /// Filesystem block size in bytes.
    #[must_use]
    pub fn block_size(&self) -> u64 {
        1u64 << self.blocklog
    }

    /// Inode size in bytes.
    #[must_use]
    pub fn inode_size(&self) -> usize {
        1usize << self.inodelog
    }

    /// Directory block size in filesystem blocks.
    #[must_use]
    pub fn dir_block_fsbs(&self) -> u64 {
        1u64 << self.dirblklog
    }

    /// The UUID as `blkid` prints it.
    #[must_use]
    pub fn uuid_string(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        // OK to slice: h is exactly 32 ASCII hex digits.
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Blocks in allocation group `agno` (the last one may be short).
    fn ag_len(&self, agno: u64) -> u64 {
        let start = agno.saturating_mul(u64::from(self.agblocks));
        self.dblocks
            .saturating_sub(start)
            .min(u64::from(self.agblocks))
    }

    /// The byte offset of AG-relative block `agbno` in AG `agno`, checked against the geometry.
    fn ag_block_offset(&self, agno: u64, agbno: u64) -> Option<u64> {
        if agno >= u64::from(self.agcount) || agbno >= self.ag_len(agno) {
            return None;
        }
        agno.checked_mul(u64::from(self.agblocks))?
            .checked_add(agbno)?
            .checked_mul(self.block_size())
    }

    /// Byte offset of filesystem block number `fsbno` (`agno << agblklog | agbno`), or `None` if
    /// it lies outside every AG.
    #[must_use]
    pub fn fsb_to_offset(&self, fsbno: u64) -> Option<u64> {
        let agno = fsbno.checked_shr(u32::from(self.agblklog))?;
        let agbno = fsbno & ((1u64 << self.agblklog) - 1);
        self.ag_block_offset(agno, agbno)
    }

    /// Byte offset of the `count` blocks starting at `fsbno`, if all of them lie in one AG.
    #[must_use]
    pub fn fsb_range_to_offset(&self, fsbno: u64, count: u64) -> Option<u64> {
        let last = fsbno.checked_add(count.checked_sub(1)?)?;
        if last >> self.agblklog != fsbno >> self.agblklog {
            return None;
        }
        self.fsb_to_offset(last)?;
        self.fsb_to_offset(fsbno)
    }

    /// Byte offset of inode `ino` (`agno | agbno | offset-in-block`, spec "Inode Numbers").
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the number lies outside the filesystem.
    pub fn inode_location(&self, ino: u64) -> Result<u64> {
        let bad = || {
            Error::corrupt(
                "xfs inode number",
                0,
                format!("inode {ino} lies outside the filesystem"),
            )
        };
        let offset_in_block = ino & ((1u64 << self.inopblog) - 1);
        let agbno = (ino >> self.inopblog) & ((1u64 << self.agblklog) - 1);
        let agno = ino
            .checked_shr(u32::from(self.inopblog) + u32::from(self.agblklog))
            .unwrap_or(u64::MAX);
        let block = self.ag_block_offset(agno, agbno).ok_or_else(bad)?;
        block
            .checked_add(offset_in_block << self.inodelog)
            .ok_or_else(bad)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid v5 superblock sector: 4 KiB blocks, 512 B inodes, 4 AGs of 19200 blocks.
    pub(crate) fn good_v5() -> Vec<u8> {
        let mut s = vec![0u8; 512];
        let put32 =
            |s: &mut Vec<u8>, o: usize, v: u32| s[o..o + 4].copy_from_slice(&v.to_be_bytes());
        let put64 =
            |s: &mut Vec<u8>, o: usize, v: u64| s[o..o + 8].copy_from_slice(&v.to_be_bytes());
        let put16 =
            |s: &mut Vec<u8>, o: usize, v: u16| s[o..o + 2].copy_from_slice(&v.to_be_bytes());
        put32(&mut s, 0, XFS_SB_MAGIC);
        put32(&mut s, 4, 4096);
        put64(&mut s, 8, 76800);
        s[32..48].copy_from_slice(&[
            0x7e, 0xf7, 0x4f, 0x9f, 0x40, 0x0e, 0x4b, 0x39, 0x94, 0x8b, 0xde, 0x1d, 0x3b, 0x1a,
            0xb3, 0x15,
        ]);
        put64(&mut s, 56, 128);
        put32(&mut s, 84, 19200);
        put32(&mut s, 88, 4);
        put16(&mut s, 100, 0xb4a5);
        put16(&mut s, 102, 512);
        put16(&mut s, 104, 512);
        put16(&mut s, 106, 8);
        s[108..113].copy_from_slice(b"rootf");
        s[120] = 12;
        s[121] = 9;
        s[122] = 9;
        s[123] = 3;
        s[124] = 15;
        put32(
            &mut s,
            216,
            INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_BIGTIME,
        );
        reseal(&mut s);
        s
    }

    /// Recomputes `sb_crc` after an edit.
    pub(crate) fn reseal(s: &mut [u8]) {
        let c = crc::xfs_cksum(s, SB_CRC_OFFSET).unwrap();
        s[SB_CRC_OFFSET..SB_CRC_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
    }

    fn err_of(s: &[u8]) -> Error {
        Superblock::parse(s, true).unwrap_err()
    }

    fn assert_corrupt(s: &[u8], offset: u64, detail_start: &str) {
        match err_of(s) {
            Error::Corrupt {
                structure,
                offset: o,
                detail,
            } => {
                assert_eq!(structure, "xfs superblock");
                assert_eq!(o, offset, "{detail}");
                assert!(detail.starts_with(detail_start), "{detail}");
            }
            e => panic!("expected corrupt, got {e}"),
        }
    }

    #[test]
    fn good_superblock_fields() {
        let sb = Superblock::parse(&good_v5(), true).unwrap();
        assert_eq!(sb.version, SbVersion::V5);
        assert_eq!(sb.block_size(), 4096);
        assert_eq!(sb.inode_size(), 512);
        assert_eq!(sb.agcount, 4);
        assert_eq!(sb.agblocks, 19200);
        assert_eq!(sb.rootino, 128);
        assert!(sb.has_ftype);
        assert!(sb.has_bigtime);
        assert!(!sb.has_nrext64);
        assert_eq!(sb.label, b"rootf");
        assert_eq!(sb.uuid_string(), "7ef74f9f-400e-4b39-948b-de1d3b1ab315");
        assert_eq!(sb.inode_location(128).unwrap(), 16 * 4096);
        assert_eq!(sb.inode_location(131).unwrap(), 16 * 4096 + 3 * 512);
        // AG 1, block 5, slot 0.
        assert_eq!(
            sb.inode_location((1 << 18) | (5 << 3)).unwrap(),
            (19200 + 5) * 4096
        );
        assert!(sb.inode_location(4 << 18).is_err());
        assert_eq!(sb.fsb_to_offset((1 << 15) | 7), Some((19200 + 7) * 4096));
        assert_eq!(sb.fsb_to_offset(19200), None, "agbno past agblocks");
        assert_eq!(sb.fsb_range_to_offset(19190, 10), Some(19190 * 4096));
        assert_eq!(sb.fsb_range_to_offset(19190, 11), None);
        assert_eq!(sb.fsb_range_to_offset(1, 0), None);
    }

    #[test]
    fn each_broken_field_is_reported() {
        type Edit = fn(&mut Vec<u8>);
        let cases: [(Edit, u64, &str); 11] = [
            (|s| s[0] = b'Y', 0, "sb_magicnum 0x59465342 is not XFSB"),
            (
                |s| s[4..8].copy_from_slice(&3000u32.to_be_bytes()),
                4,
                "sb_blocksize 3000 does not match",
            ),
            (
                |s| s[120] = 17,
                4,
                "sb_blocksize log 17 out of range 9..=16",
            ),
            (
                |s| s[102..104].copy_from_slice(&1024u16.to_be_bytes()),
                102,
                "sb_sectsize 1024",
            ),
            (
                |s| s[104..106].copy_from_slice(&256u16.to_be_bytes()),
                104,
                "sb_inodesize 256",
            ),
            (
                |s| s[106..108].copy_from_slice(&16u16.to_be_bytes()),
                106,
                "sb_inopblock 16",
            ),
            (
                |s| s[84..88].copy_from_slice(&10u32.to_be_bytes()),
                84,
                "sb_agblocks 10 below",
            ),
            (|s| s[124] = 14, 124, "sb_agblklog 14 does not match"),
            (
                |s| s[88..92].copy_from_slice(&0u32.to_be_bytes()),
                88,
                "sb_agcount 0",
            ),
            (
                |s| s[8..16].copy_from_slice(&80000u64.to_be_bytes()),
                8,
                "sb_dblocks 80000 out of range",
            ),
            (|s| s[192] = 5, 192, "sb_dirblklog 5"),
        ];
        for (edit, offset, detail) in cases {
            let mut s = good_v5();
            edit(&mut s);
            reseal(&mut s);
            assert_corrupt(&s, offset, detail);
        }
        let mut s = good_v5();
        s[56..64].copy_from_slice(&(4u64 << 18).to_be_bytes());
        reseal(&mut s);
        assert_corrupt(&s, 56, "sb_rootino 1048576 is not a valid inode number");
        let mut s = good_v5();
        s[101] = 0xa6;
        reseal(&mut s);
        assert_corrupt(&s, 100, "sb_versionnum version 6 out of range");
        let mut s = good_v5();
        s[40] ^= 1;
        assert_corrupt(&s, 224, "sb_crc does not match");
        // Without verification the same sector opens.
        assert!(Superblock::parse(&s, false).is_ok());
        assert_corrupt(&s[..100], 0, "sector of 100 bytes is too short");
    }

    #[test]
    fn unsupported_features_are_named() {
        let mut s = good_v5();
        s[216..220].copy_from_slice(&(INCOMPAT_FTYPE | INCOMPAT_NEEDSREPAIR | 0x400).to_be_bytes());
        reseal(&mut s);
        match err_of(&s) {
            Error::Unsupported { what, detail } => {
                assert_eq!(what, "xfs incompatible feature");
                assert_eq!(detail, "needsrepair, 0x400 (sb_features_incompat 0x411)");
            }
            e => panic!("{e}"),
        }
        let mut s = good_v5();
        s[101] = 0xa3;
        reseal(&mut s);
        assert!(matches!(
            err_of(&s),
            Error::Unsupported {
                what: "xfs version",
                ..
            }
        ));
        let mut s = good_v5();
        s[101] = 0xa4;
        s[100] = 0x14; // v4 without DIRV2BIT
        assert!(
            matches!(err_of(&s), Error::Unsupported { what: "xfs feature", detail } if detail == "version 1 directories")
        );
        let mut s = good_v5();
        s[100] |= 0x40;
        reseal(&mut s);
        assert!(
            matches!(err_of(&s), Error::Unsupported { what: "xfs feature", detail } if detail.starts_with("ascii-ci"))
        );
        let e = err_of(&{
            let mut s = good_v5();
            s[0] = 0;
            s
        });
        assert_eq!(
            e.to_string(),
            "corrupt xfs superblock at 0x0: sb_magicnum 0x00465342 is not XFSB"
        );
    }
}
