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
