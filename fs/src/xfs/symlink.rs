//! Symbolic link targets: local (in the inode) or remote (in data blocks, each with a "XSLM"
//! header on v5 filesystems).
//!
//! Spec: XFS Algorithms & Data Structures, "Symbolic Links" (`xfs_dsymlink_hdr`).

use super::Volume;
use super::bmap::ExtentMap;
use super::inode::{ForkFormat, Inode};
use super::superblock::SbVersion;
use crate::{Error, Result};

/// Longest symlink target (`XFS_SYMLINK_MAXLEN`).
pub(crate) const SYMLINK_MAXLEN: u64 = 1024;
/// "XSLM", and the size of `xfs_dsymlink_hdr` (magic, offset, bytes, crc, uuid, owner, blkno, lsn).
const XFS_SYMLINK_MAGIC: u32 = 0x5853_4c4d;
const SYMLINK_HDR_LEN: usize = 56;
const SL_CRC_OFFSET: usize = 12;
const SL_OWNER_OFFSET: usize = 32;
/// At most three extents hold a target (`XFS_SYMLINK_MAPS`).
const SYMLINK_MAPS: usize = 3;
/// The longest extent worth reading: the whole target plus one header, rounded to 64 KiB blocks.
const MAX_SYMLINK_EXTENT: u64 = 1 << 16;

fn be32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// Reads the target of symlink `inode`.
///
/// # Errors
/// [`Error::Corrupt`] for bad lengths or remote headers; I/O errors.
pub(crate) fn read_target(vol: &Volume, inode: &Inode) -> Result<Vec<u8>> {
    let structure = || format!("xfs symlink {}", inode.ino);
    if inode.size == 0 || inode.size > SYMLINK_MAXLEN {
        return Err(Error::corrupt(
            structure(),
            0,
            format!("di_size {} out of range 1..={SYMLINK_MAXLEN}", inode.size),
        ));
    }
    // OK: at most 1024 by the check above.
    let size = usize::try_from(inode.size).unwrap_or(0);
    match inode.format {
        ForkFormat::Local => Ok(inode.data_fork.get(..size).unwrap_or_default().to_vec()),
        ForkFormat::Extents | ForkFormat::Btree => {
            let map = ExtentMap::read(vol, inode)?;
            if vol.sb.version == SbVersion::V4 {
                let mut out = vec![0u8; size];
                map.read_bytes(vol, 0, &mut out)?;
                return Ok(out);
            }
            // Each *extent* is one buffer with one header, and its CRC covers the whole extent
            // (the kernel's remote symlink read). A target needs at most three extents
            // (`XFS_SYMLINK_MAPS`), each at most `MAX_SYMLINK_EXTENT` bytes.
            let bs = vol.sb.block_size();
            let mut out = Vec::with_capacity(size);
            for (i, m) in map.mappings.iter().enumerate() {
                if out.len() >= size {
                    break;
                }
                let at = m.phys;
                let bad = |field: usize, detail: String| {
                    Error::corrupt(structure(), at + field as u64, detail)
                };
                let len = m
                    .blockcount
                    .checked_mul(bs)
                    .filter(|&l| l <= MAX_SYMLINK_EXTENT.max(bs) && i < SYMLINK_MAPS)
                    .ok_or_else(|| {
                        bad(
                            0,
                            format!(
                                "extent {i} of {} blocks is too long for a symlink",
                                m.blockcount
                            ),
                        )
                    })?;
                // OK: len <= max(64 KiB, block size), which fits usize.
                let mut block = vec![0u8; usize::try_from(len).unwrap_or(0)];
                if m.unwritten {
                    return Err(bad(0, format!("extent {i} is unwritten")));
                }
                vol.dev.read_exact_at(at, &mut block)?;
                let magic = be32(&block, 0);
                if magic != XFS_SYMLINK_MAGIC {
                    return Err(bad(0, format!("sl_magic {magic:#010x} is not XSLM")));
                }
                let owner = block
                    .get(SL_OWNER_OFFSET..SL_OWNER_OFFSET + 8)
                    .and_then(|s| s.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                if owner != inode.ino {
                    return Err(bad(
                        SL_OWNER_OFFSET,
                        format!("sl_owner {owner} is not inode {}", inode.ino),
                    ));
                }
                if vol.verify_crc && !super::crc::verify(&block, SL_CRC_OFFSET) {
                    return Err(bad(SL_CRC_OFFSET, "sl_crc does not match the block".into()));
                }
                let offset = be32(&block, 4);
                if offset as usize != out.len() {
                    return Err(bad(
                        4,
                        format!("sl_offset {offset} where {} was expected", out.len()),
                    ));
                }
                let bytes = be32(&block, 8) as usize;
                let room = block.len() - SYMLINK_HDR_LEN;
                if bytes == 0 || bytes > room || out.len() + bytes > size {
                    return Err(bad(
                        8,
                        format!(
                            "sl_bytes {bytes} out of range 1..={}",
                            room.min(size - out.len())
                        ),
                    ));
                }
                // OK to slice: SYMLINK_HDR_LEN + bytes <= block.len() was just checked.
                out.extend_from_slice(&block[SYMLINK_HDR_LEN..SYMLINK_HDR_LEN + bytes]);
            }
            if out.len() != size {
                return Err(Error::corrupt(
                    structure(),
                    0,
                    format!("remote blocks hold {} of {size} bytes", out.len()),
                ));
            }
            Ok(out)
        }
        ForkFormat::Dev => Err(Error::corrupt(structure(), 0, "symlink with a device fork")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileType;
    use crate::xfs::bmap::tests::{inode_with, vol_with};

    /// An extents-format symlink of `size` bytes whose one extent is block 10 (1 block).
    fn remote(size: u64) -> Inode {
        // startoff 0, startblock 10, blockcount 1.
        let rec = ((10u128) << 21 | 1).to_be_bytes();
        inode_with(133, FileType::Symlink, ForkFormat::Extents, size, 1, &rec)
    }

    fn block(target: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&XFS_SYMLINK_MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&u32::try_from(target.len()).unwrap().to_be_bytes());
        b[32..40].copy_from_slice(&133u64.to_be_bytes());
        b[56..56 + target.len()].copy_from_slice(target);
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        let c = crate::xfs::crc::xfs_cksum(b, SL_CRC_OFFSET).unwrap();
        b[12..16].copy_from_slice(&c.to_le_bytes());
    }

    fn err(b: &[u8], size: u64) -> (u64, String) {
        match read_target(&vol_with(&[(10 * 4096, b)]), &remote(size)).unwrap_err() {
            Error::Corrupt {
                structure,
                offset,
                detail,
            } => {
                assert_eq!(structure, "xfs symlink 133");
                (offset, detail)
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn local_and_remote_targets() {
        let v = vol_with(&[(10 * 4096, &block(b"/some/where"))]);
        let local = inode_with(133, FileType::Symlink, ForkFormat::Local, 3, 0, b"abc");
        assert_eq!(read_target(&v, &local).unwrap(), b"abc");
        assert_eq!(read_target(&v, &remote(11)).unwrap(), b"/some/where");
    }

    #[test]
    fn remote_errors() {
        let good = block(b"/some/where");
        let at = 10 * 4096;
        assert_eq!(err(&good, 0), (0, "di_size 0 out of range 1..=1024".into()));
        assert_eq!(
            err(&good, 1025),
            (0, "di_size 1025 out of range 1..=1024".into())
        );
        assert_eq!(
            err(&good, 12),
            (0, "remote blocks hold 11 of 12 bytes".into())
        );
        assert_eq!(
            err(&good, 5),
            (at + 8, "sl_bytes 11 out of range 1..=5".into())
        );
        let mut b = good.clone();
        b[0] = 0;
        assert_eq!(err(&b, 11), (at, "sl_magic 0x00534c4d is not XSLM".into()));
        let mut b = good.clone();
        b[39] = 1;
        assert_eq!(err(&b, 11), (at + 32, "sl_owner 1 is not inode 133".into()));
        let mut b = good.clone();
        b[60] ^= 1;
        assert_eq!(
            err(&b, 11),
            (at + 12, "sl_crc does not match the block".into())
        );
        let mut b = good.clone();
        b[7] = 3;
        seal(&mut b);
        assert_eq!(
            err(&b, 11),
            (at + 4, "sl_offset 3 where 0 was expected".into())
        );
    }
}
