//! Inodes: the core (`xfs_dinode`) and the data fork that follows it.
//!
//! Spec: XFS Algorithms & Data Structures, "On-disk Inode" and "Timestamps". Version 1 and 2
//! cores are 100 bytes; version 3 (v5 filesystems) is 176 bytes and carries a CRC32c, its own
//! inode number and extended flags.

use zerocopy::big_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::crc;
use super::superblock::{SbVersion, Superblock};
use crate::{Error, FileType, Result};

/// `di_magic`: "IN".
const XFS_DINODE_MAGIC: u16 = 0x494e;
/// Core size of version 1 and 2 inodes.
const CORE_LEN_V2: usize = 100;
/// Core size of version 3 inodes.
pub(crate) const CORE_LEN_V3: usize = 176;
/// Byte offset of `di_crc` in a version 3 core.
const DI_CRC_OFFSET: usize = 100;
/// `XFS_DIFLAG_REALTIME` in `di_flags`.
const DIFLAG_REALTIME: u16 = 1 << 0;
/// `XFS_DIFLAG2_BIGTIME`: timestamps are 64-bit nanoseconds.
const DIFLAG2_BIGTIME: u64 = 1 << 3;
/// `XFS_DIFLAG2_NREXT64`: `di_big_nextents` holds the data fork extent count.
const DIFLAG2_NREXT64: u64 = 1 << 4;
/// Bigtime counts nanoseconds from the smallest legacy time, -2^31 s (spec "Timestamps").
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;
const NSEC_PER_SEC: u64 = 1_000_000_000;

/// `S_IFMT` and the file type values of `di_mode`.
const S_IFMT: u16 = 0o170_000;

/// The on-disk inode core, in its version 3 layout (the first 100 bytes are shared by all).
#[derive(Debug, Clone, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct RawDinode {
    pub(crate) di_magic: U16,
    pub(crate) di_mode: U16,
    pub(crate) di_version: u8,
    pub(crate) di_format: u8,
    pub(crate) di_onlink: U16,
    pub(crate) di_uid: U32,
    pub(crate) di_gid: U32,
    pub(crate) di_nlink: U32,
    pub(crate) di_projid_lo: U16,
    pub(crate) di_projid_hi: U16,
    /// `di_big_nextents` when NREXT64 is set; otherwise padding and `di_flushiter`.
    pub(crate) di_big_nextents: U64,
    pub(crate) di_atime: U64,
    pub(crate) di_mtime: U64,
    pub(crate) di_ctime: U64,
    pub(crate) di_size: U64,
    pub(crate) di_nblocks: U64,
    pub(crate) di_extsize: U32,
    /// `di_nextents`, or `di_big_anextents` with NREXT64.
    pub(crate) di_nextents: U32,
    pub(crate) di_anextents: U16,
    pub(crate) di_forkoff: u8,
    pub(crate) di_aformat: u8,
    pub(crate) di_dmevmask: U32,
    pub(crate) di_dmstate: U16,
    pub(crate) di_flags: U16,
    pub(crate) di_gen: U32,
    pub(crate) di_next_unlinked: U32,
    pub(crate) di_crc: U32,
    pub(crate) di_changecount: U64,
    pub(crate) di_lsn: U64,
    pub(crate) di_flags2: U64,
    pub(crate) di_cowextsize: U32,
    pub(crate) di_pad2: [u8; 12],
    pub(crate) di_crtime: U64,
    pub(crate) di_ino: U64,
    pub(crate) di_uuid: [u8; 16],
}

/// How the data fork stores its contents (`di_format`, `xfs_dinode_fmt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForkFormat {
    /// `XFS_DINODE_FMT_DEV`: a device number; no data.
    Dev,
    /// `XFS_DINODE_FMT_LOCAL`: the data lives in the fork itself (short dirs, short symlinks).
    Local,
    /// `XFS_DINODE_FMT_EXTENTS`: an array of extent records in the fork.
    Extents,
    /// `XFS_DINODE_FMT_BTREE`: the root of a block-map B+tree in the fork.
    Btree,
}

/// A validated inode: the core fields this reader uses, and the data fork's bytes.
#[derive(Debug, Clone)]
pub struct Inode {
    /// The inode number.
    pub ino: u64,
    /// `di_mode`.
    pub mode: u16,
    /// File type from `di_mode`.
    pub file_type: FileType,
    /// Data fork format.
    pub format: ForkFormat,
    /// `di_uid`.
    pub uid: u32,
    /// `di_gid`.
    pub gid: u32,
    /// Link count (`di_nlink`, or `di_onlink` for version 1 inodes).
    pub nlink: u64,
    /// `di_size` in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Number of data fork extents the core claims.
    pub nextents: u64,
    /// `XFS_DIFLAG_REALTIME`: the data lives on the realtime device, which we do not read.
    pub realtime: bool,
    /// The data fork's bytes (the literal area up to the attribute fork).
    pub data_fork: Vec<u8>,
}

fn file_type_of(mode: u16) -> Option<FileType> {
    Some(match mode & S_IFMT {
        0o100_000 => FileType::Regular,
        0o040_000 => FileType::Directory,
        0o120_000 => FileType::Symlink,
        0o020_000 => FileType::CharDevice,
        0o060_000 => FileType::BlockDevice,
        0o010_000 => FileType::Fifo,
        0o140_000 => FileType::Socket,
        _ => return None,
    })
}

/// Seconds since the epoch of an on-disk timestamp.
fn decode_time(raw: u64, bigtime: bool) -> i64 {
    if bigtime {
        // At most u64::MAX / 1e9 ~ 1.8e10, which fits i64.
        i64::try_from(raw / NSEC_PER_SEC).unwrap_or(i64::MAX) - BIGTIME_EPOCH_OFFSET
    } else {
        // Legacy: signed 32-bit seconds, then 32-bit nanoseconds.
        let secs = raw.to_be_bytes();
        i64::from(i32::from_be_bytes([secs[0], secs[1], secs[2], secs[3]]))
    }
}

impl Inode {
    /// Validates the `inodesize` bytes read for inode `ino` at byte `offset`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the inode and the broken field.
    pub(crate) fn parse(
        sb: &Superblock,
        ino: u64,
        offset: u64,
        buf: &[u8],
        verify_crc: bool,
    ) -> Result<Self> {
        let structure = || format!("xfs inode {ino}");
        let corrupt = |field_offset: u64, detail: String| {
            Error::corrupt(structure(), offset.saturating_add(field_offset), detail)
        };
        let (raw, _) = RawDinode::read_from_prefix(buf).map_err(|_| {
            corrupt(
                0,
                format!("inode buffer of {} bytes is too short", buf.len()),
            )
        })?;
        let magic = raw.di_magic.get();
        if magic != XFS_DINODE_MAGIC {
            return Err(corrupt(0, format!("di_magic {magic:#06x} is not IN")));
        }
        let version = raw.di_version;
        let core_len = match (sb.version, version) {
            (SbVersion::V4, 1 | 2) => CORE_LEN_V2,
            (SbVersion::V5, 3) => CORE_LEN_V3,
            _ => {
                return Err(corrupt(
                    4,
                    format!(
                        "di_version {version} invalid for a {:?} filesystem",
                        sb.version
                    ),
                ));
            }
        };
        let flags2 = if version == 3 { raw.di_flags2.get() } else { 0 };
        if version == 3 {
            let di_ino = raw.di_ino.get();
            if di_ino != ino {
                return Err(corrupt(
                    152,
                    format!("di_ino {di_ino} does not match inode number {ino}"),
                ));
            }
            if verify_crc && !crc::verify(buf, DI_CRC_OFFSET) {
                return Err(corrupt(
                    DI_CRC_OFFSET as u64,
                    "di_crc does not match the inode".into(),
                ));
            }
        }
        let mode = raw.di_mode.get();
        let file_type = file_type_of(mode)
            .ok_or_else(|| corrupt(2, format!("di_mode {mode:#o} has no valid file type")))?;
        let format = match raw.di_format {
            0 => ForkFormat::Dev,
            1 => ForkFormat::Local,
            2 => ForkFormat::Extents,
            3 => ForkFormat::Btree,
            f => return Err(corrupt(5, format!("di_format {f} out of range 0..=3"))),
        };
        let allowed = match file_type {
            FileType::Directory | FileType::Symlink => {
                matches!(
                    format,
                    ForkFormat::Local | ForkFormat::Extents | ForkFormat::Btree
                )
            }
            FileType::Regular => matches!(format, ForkFormat::Extents | ForkFormat::Btree),
            _ => format == ForkFormat::Dev,
        };
        if !allowed {
            return Err(corrupt(
                5,
                format!("di_format {format:?} invalid for a {file_type:?} inode"),
            ));
        }
        let size = raw.di_size.get();
        if i64::try_from(size).is_err() {
            return Err(corrupt(56, format!("di_size {size} is negative")));
        }

        let literal = buf.len().saturating_sub(core_len);
        let forkoff = usize::from(raw.di_forkoff) * 8;
        let fork_len = if forkoff == 0 { literal } else { forkoff };
        if fork_len > literal {
            return Err(corrupt(
                82,
                format!(
                    "di_forkoff {} past the {literal}-byte literal area",
                    raw.di_forkoff
                ),
            ));
        }
        let data_fork = buf
            .get(core_len..core_len + fork_len)
            .ok_or_else(|| corrupt(0, "inode shorter than its core".into()))?
            .to_vec();

        let nextents = if flags2 & DIFLAG2_NREXT64 != 0 {
            if !sb.has_nrext64 {
                return Err(corrupt(
                    120,
                    "di_flags2 nrext64 set without the filesystem feature".into(),
                ));
            }
            raw.di_big_nextents.get()
        } else {
            u64::from(raw.di_nextents.get())
        };
        if format == ForkFormat::Extents {
            let need = nextents.checked_mul(super::bmap::BMBT_REC_LEN as u64);
            if need.is_none_or(|n| n > fork_len as u64) {
                return Err(corrupt(
                    76,
                    format!("di_nextents {nextents} does not fit the {fork_len}-byte data fork"),
                ));
            }
        }
        if format == ForkFormat::Local && size > fork_len as u64 {
            return Err(corrupt(
                56,
                format!("di_size {size} of local data exceeds the {fork_len}-byte data fork"),
            ));
        }
        let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
        if bigtime && !sb.has_bigtime {
            return Err(corrupt(
                120,
                "di_flags2 bigtime set without the filesystem feature".into(),
            ));
        }
        Ok(Self {
            ino,
            mode,
            file_type,
            format,
            uid: raw.di_uid.get(),
            gid: raw.di_gid.get(),
            nlink: if version == 1 {
                u64::from(raw.di_onlink.get())
            } else {
                u64::from(raw.di_nlink.get())
            },
            size,
            mtime: decode_time(raw.di_mtime.get(), bigtime),
            nextents,
            realtime: raw.di_flags.get() & DIFLAG_REALTIME != 0,
            data_fork,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfs::superblock::tests::good_v5;

    fn sb() -> Superblock {
        Superblock::parse(&good_v5(), true).unwrap()
    }

    /// A v3 regular file inode 131 with one extent record slot used.
    fn good_inode() -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0..2].copy_from_slice(&XFS_DINODE_MAGIC.to_be_bytes());
        b[2..4].copy_from_slice(&0o100_644u16.to_be_bytes());
        b[4] = 3;
        b[5] = 2;
        b[8..12].copy_from_slice(&1000u32.to_be_bytes());
        b[12..16].copy_from_slice(&100u32.to_be_bytes());
        b[16..20].copy_from_slice(&1u32.to_be_bytes());
        // bigtime mtime: 2^31 s + 5 s after the bigtime epoch, i.e. Unix time 5.
        b[40..48].copy_from_slice(&(((1u64 << 31) + 5) * NSEC_PER_SEC).to_be_bytes());
        b[56..64].copy_from_slice(&6u64.to_be_bytes());
        b[76..80].copy_from_slice(&1u32.to_be_bytes());
        b[120..128].copy_from_slice(&DIFLAG2_BIGTIME.to_be_bytes());
        b[152..160].copy_from_slice(&131u64.to_be_bytes());
        reseal(&mut b);
        b
    }

    fn reseal(b: &mut [u8]) {
        let c = crc::xfs_cksum(b, DI_CRC_OFFSET).unwrap();
        b[DI_CRC_OFFSET..DI_CRC_OFFSET + 4].copy_from_slice(&c.to_le_bytes());
    }

    #[test]
    fn good_inode_fields() {
        let i = Inode::parse(&sb(), 131, 0x1000, &good_inode(), true).unwrap();
        assert_eq!(i.mode, 0o100_644);
        assert_eq!(i.file_type, FileType::Regular);
        assert_eq!(i.format, ForkFormat::Extents);
        assert_eq!((i.uid, i.gid, i.nlink, i.size), (1000, 100, 1, 6));
        assert_eq!(i.mtime, 5);
        assert_eq!(i.nextents, 1);
        assert!(!i.realtime);
        let mut b = good_inode();
        b[91] |= 1; // di_flags REALTIME
        reseal(&mut b);
        assert!(Inode::parse(&sb(), 131, 0x1000, &b, true).unwrap().realtime);
        assert_eq!(i.data_fork.len(), 512 - 176);
    }

    #[test]
    fn legacy_timestamps_are_signed() {
        assert_eq!(decode_time(0xffff_ffff_0000_0000, false), -1);
        assert_eq!(decode_time(0x0000_0010_0000_0001, false), 16);
        assert_eq!(decode_time(0, true), -(1 << 31));
    }

    #[test]
    fn each_broken_field_is_reported() {
        type Edit = fn(&mut Vec<u8>);
        let cases: [(Edit, u64, &str); 10] = [
            (|b| b[0] = 0, 0, "di_magic 0x004e is not IN"),
            (|b| b[4] = 2, 4, "di_version 2 invalid for a V5 filesystem"),
            (
                |b| b[159] = 1,
                152,
                "di_ino 1 does not match inode number 131",
            ),
            (|b| b[2] = 0, 2, "di_mode 0o244 has no valid file type"),
            (|b| b[5] = 7, 5, "di_format 7 out of range 0..=3"),
            (
                |b| b[5] = 1,
                5,
                "di_format Local invalid for a Regular inode",
            ),
            (
                |b| b[56] = 0x80,
                56,
                "di_size 9223372036854775814 is negative",
            ),
            (
                |b| b[82] = 50,
                82,
                "di_forkoff 50 past the 336-byte literal area",
            ),
            (
                |b| b[79] = 22,
                76,
                "di_nextents 22 does not fit the 336-byte data fork",
            ),
            (
                |b| b[127] = 0x10,
                120,
                "di_flags2 nrext64 set without the filesystem feature",
            ),
        ];
        for (edit, field, detail) in cases {
            let mut b = good_inode();
            edit(&mut b);
            reseal(&mut b);
            match Inode::parse(&sb(), 131, 0x1000, &b, true).unwrap_err() {
                Error::Corrupt {
                    structure,
                    offset,
                    detail: d,
                } => {
                    assert_eq!(structure, "xfs inode 131");
                    assert_eq!(offset, 0x1000 + field, "{d}");
                    assert_eq!(d, detail);
                }
                e => panic!("{e}"),
            }
        }
        let mut b = good_inode();
        b[200] ^= 1;
        let e = Inode::parse(&sb(), 131, 0x1000, &b, true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt xfs inode 131 at 0x1064: di_crc does not match the inode"
        );
        assert!(Inode::parse(&sb(), 131, 0x1000, &b, false).is_ok());
    }
}
