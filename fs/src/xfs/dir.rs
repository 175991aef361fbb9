//! Version 2 directories: shortform (in the inode), block, leaf and node forms.
//!
//! Spec: XFS Algorithms & Data Structures, "Directories": "Short Form Directories"
//! (`xfs_dir2_sf_hdr`, `xfs_dir2_sf_entry`), "Block Directories" (`xfs_dir2_data_hdr` /
//! `xfs_dir3_data_hdr`, `xfs_dir2_data_entry`, `xfs_dir2_block_tail`), and "Leaf/Node/B+tree
//! Directories". For listing and lookup only the *data* blocks matter: they sit in the first
//! 32 GiB of the directory's address space (`XFS_DIR2_LEAF_OFFSET`); the leaf, node and
//! free-space blocks above that are hash indexes we do not need, because lookup is a linear scan.

use std::cell::Cell;
use std::ops::ControlFlow;

use super::Volume;
use super::bmap::ExtentMap;
use super::inode::{ForkFormat, Inode};
use super::superblock::SbVersion;
use crate::{Error, MAX_DIR_ENTRIES, Result};

/// Data block magics: single-block directories ("XD2B"/"XDB3") and data blocks of larger ones
/// ("XD2D"/"XDD3").
const XD2B: u32 = 0x5844_3242;
const XD2D: u32 = 0x5844_3244;
const XDB3: u32 = 0x5844_4233;
const XDD3: u32 = 0x5844_4433;
/// Data block header sizes: v4 magic + 3 bestfree (16 bytes); v5 `xfs_dir3_data_hdr` (64 bytes).
const DATA_HDR_LEN_V4: usize = 16;
const DATA_HDR_LEN_V5: usize = 64;
/// Offsets in the v5 header: `crc` and `owner`.
const DIR3_CRC_OFFSET: usize = 4;
const DIR3_OWNER_OFFSET: usize = 40;
/// `xfs_dir2_block_tail` (count, stale) and one `xfs_dir2_leaf_entry` (hash, address).
const BLOCK_TAIL_LEN: usize = 8;
const LEAF_ENTRY_LEN: usize = 8;
/// Free entries start with this tag (`XFS_DIR2_DATA_FREE_TAG`).
const DATA_FREE_TAG: u16 = 0xffff;
/// Entries and free regions are 8-byte aligned (`XFS_DIR2_DATA_ALIGN`).
const DATA_ALIGN: usize = 8;
/// Start of the leaf section of the directory address space (`XFS_DIR2_LEAF_OFFSET`, 32 GiB).
const LEAF_OFFSET_BYTES: u64 = 1 << 35;
/// Most directory data bytes we scan (house style S12): 1 GiB holds far more than
/// [`MAX_DIR_ENTRIES`] names.
const MAX_DIR_DATA_BYTES: u64 = 1 << 30;

/// One directory entry as stored (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawDirEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) ino: u64,
    /// `XFS_DIR3_FT_*`, or 0 when the filesystem has no ftype.
    pub(crate) ftype: u8,
}

fn be(b: &[u8], at: usize, len: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(len)?)?;
    Some(s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn check_name(name: &[u8]) -> bool {
    !name.is_empty() && !name.contains(&b'/') && !name.contains(&0)
}

/// Parses a shortform directory (the inode's data fork, `size` bytes used).
pub(crate) fn parse_shortform(
    inode: &Inode,
    has_ftype: bool,
    f: &mut dyn FnMut(RawDirEntry) -> ControlFlow<()>,
) -> Result<()> {
    let structure = format!("xfs shortform directory {}", inode.ino);
    let bad = |at: usize, detail: String| Error::corrupt(structure.clone(), at as u64, detail);
    let len = usize::try_from(inode.size).map_err(|_| bad(0, "di_size too large".into()))?;
    let data = inode
        .data_fork
        .get(..len)
        .ok_or_else(|| bad(0, format!("di_size {len} past the data fork")))?;
    let count = usize::from(*data.first().ok_or_else(|| bad(0, "empty header".into()))?);
    let i8count = *data
        .get(1)
        .ok_or_else(|| bad(1, "header truncated".into()))?;
    let ino_len = if i8count > 0 { 8 } else { 4 };
    let mut pos = 2 + ino_len;
    if pos > data.len() {
        return Err(bad(2, "parent inode truncated".into()));
    }
    for i in 0..count {
        let namelen = usize::from(
            *data
                .get(pos)
                .ok_or_else(|| bad(pos, format!("entry {i} past di_size {len}")))?,
        );
        let name_at = pos + 3;
        let name = data.get(name_at..name_at + namelen).ok_or_else(|| {
            bad(
                pos,
                format!("entry {i} name of {namelen} bytes past di_size {len}"),
            )
        })?;
        if !check_name(name) {
            return Err(bad(pos, format!("entry {i} has an invalid name")));
        }
        let mut at = name_at + namelen;
        let ftype = if has_ftype {
            at += 1;
            *data
                .get(at - 1)
                .ok_or_else(|| bad(pos, format!("entry {i} ftype past di_size {len}")))?
        } else {
            0
        };
        let ino = be(data, at, ino_len)
            .ok_or_else(|| bad(pos, format!("entry {i} inode number past di_size {len}")))?;
        pos = at + ino_len;
        if f(RawDirEntry {
            name: name.to_vec(),
            ino,
            ftype,
        })
        .is_break()
        {
            break;
        }
    }
    Ok(())
}

/// Parses one directory data block (`buf` is one directory block read from `at`), calling `f`
/// for every live entry except `.` and `..`.
pub(crate) fn parse_data_block(
    vol: &Volume,
    owner: u64,
    at: u64,
    buf: &[u8],
    f: &mut dyn FnMut(RawDirEntry) -> ControlFlow<()>,
) -> Result<ControlFlow<()>> {
    let structure = format!("xfs directory block of inode {owner}");
    let bad = |field: usize, detail: String| {
        Error::corrupt(structure.clone(), at.saturating_add(field as u64), detail)
    };
    let v5 = vol.sb.version == SbVersion::V5;
    let magic = be(buf, 0, 4).unwrap_or(0);
    let (is_block, hdr_len) = match (v5, u32::try_from(magic).unwrap_or(0)) {
        (false, XD2B) => (true, DATA_HDR_LEN_V4),
        (false, XD2D) => (false, DATA_HDR_LEN_V4),
        (true, XDB3) => (true, DATA_HDR_LEN_V5),
        (true, XDD3) => (false, DATA_HDR_LEN_V5),
        _ => {
            return Err(bad(
                0,
                format!("magic {magic:#010x} is not a directory data block"),
            ));
        }
    };
    if v5 {
        let o = be(buf, DIR3_OWNER_OFFSET, 8).unwrap_or(0);
        if o != owner {
            return Err(bad(
                DIR3_OWNER_OFFSET,
                format!("owner {o} is not inode {owner}"),
            ));
        }
        if vol.verify_crc && !super::crc::verify(buf, DIR3_CRC_OFFSET) {
            return Err(bad(DIR3_CRC_OFFSET, "crc does not match the block".into()));
        }
    }
    let end = if is_block {
        let tail = buf
            .len()
            .checked_sub(BLOCK_TAIL_LEN)
            .ok_or_else(|| bad(0, "block too small".into()))?;
        let count = be(buf, tail, 4).unwrap_or(u64::MAX);
        usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(LEAF_ENTRY_LEN))
            .and_then(|l| tail.checked_sub(l))
            .filter(|&e| e >= hdr_len)
            .ok_or_else(|| {
                bad(
                    tail,
                    format!("block tail count {count} does not fit the block"),
                )
            })?
    } else {
        buf.len()
    };
    let ftype_len = usize::from(vol.sb.has_ftype);
    let mut pos = hdr_len;
    while pos < end {
        let tag = be(buf, pos, 2).unwrap_or(0);
        if tag == u64::from(DATA_FREE_TAG) {
            let len = usize::try_from(be(buf, pos + 2, 2).unwrap_or(0)).unwrap_or(0);
            if len < DATA_ALIGN || len % DATA_ALIGN != 0 || pos + len > end {
                return Err(bad(pos, format!("free region length {len} invalid")));
            }
            pos += len;
            continue;
        }
        let ino = be(buf, pos, 8).ok_or_else(|| bad(pos, "entry truncated".into()))?;
        let namelen = usize::from(
            *buf.get(pos + 8)
                .ok_or_else(|| bad(pos, "entry truncated".into()))?,
        );
        let raw_len = 8 + 1 + namelen + ftype_len + 2;
        let len = raw_len.div_ceil(DATA_ALIGN) * DATA_ALIGN;
        if namelen == 0 || pos + len > end {
            return Err(bad(
                pos,
                format!("entry with name length {namelen} does not fit the block"),
            ));
        }
        // OK to slice: pos + len <= end <= buf.len() was just checked.
        let name = &buf[pos + 9..pos + 9 + namelen];
        let ftype = if ftype_len == 1 {
            buf[pos + 9 + namelen]
        } else {
            0
        };
        pos += len;
        if name == b"." || name == b".." {
            continue;
        }
        if !check_name(name) {
            return Err(bad(pos - len, "entry has an invalid name".into()));
        }
        if f(RawDirEntry {
            name: name.to_vec(),
            ino,
            ftype,
        })
        .is_break()
        {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Calls `f` for each entry of directory `inode`, in on-disk order, stopping when it breaks.
///
/// # Errors
/// Corruption of the directory; [`Error::LimitExceeded`] past [`MAX_DIR_ENTRIES`] or
/// `MAX_DIR_DATA_BYTES`.
pub(crate) fn for_each_entry(
    vol: &Volume,
    inode: &Inode,
    f: &mut dyn FnMut(RawDirEntry) -> ControlFlow<()>,
) -> Result<()> {
    let seen = Cell::new(0usize);
    let mut counted = |e: RawDirEntry| {
        seen.set(seen.get() + 1);
        if seen.get() > MAX_DIR_ENTRIES {
            return ControlFlow::Break(());
        }
        f(e)
    };
    let limit = || Error::LimitExceeded {
        what: format!("entries of xfs directory {}", inode.ino),
        limit: MAX_DIR_ENTRIES as u64,
    };
    match inode.format {
        ForkFormat::Local => parse_shortform(inode, vol.sb.has_ftype, &mut counted)?,
        ForkFormat::Extents | ForkFormat::Btree => {
            let map = ExtentMap::read(vol, inode)?;
            let fsbs = vol.sb.dir_block_fsbs();
            let bs = vol.sb.block_size();
            let dirblk_bytes = usize::try_from(fsbs * bs)
                .map_err(|_| Error::unsupported("xfs directory block", "too large"))?;
            let leaf_block = LEAF_OFFSET_BYTES >> vol.sb.blocklog;
            let mut scanned = 0u64;
            let mut next = 0u64;
            let mut buf = vec![0u8; dirblk_bytes];
            for m in &map.mappings {
                // Directory blocks are aligned to the directory block size in the address space.
                let mut dblk = (m.startoff.max(next) / fsbs) * fsbs;
                let end = (m.startoff + m.blockcount).min(leaf_block);
                while dblk < end {
                    scanned += fsbs * bs;
                    if scanned > MAX_DIR_DATA_BYTES {
                        return Err(Error::LimitExceeded {
                            what: format!("data bytes of xfs directory {}", inode.ino),
                            limit: MAX_DIR_DATA_BYTES,
                        });
                    }
                    map.read_bytes(vol, dblk * bs, &mut buf)?;
                    let at = match map.lookup(dblk, bs) {
                        super::bmap::Lookup::Data { phys, .. } => phys,
                        super::bmap::Lookup::Zero { .. } => 0,
                    };
                    if parse_data_block(vol, inode.ino, at, &buf, &mut counted)?.is_break() {
                        return if seen.get() > MAX_DIR_ENTRIES {
                            Err(limit())
                        } else {
                            Ok(())
                        };
                    }
                    dblk += fsbs;
                }
                next = dblk;
            }
        }
        ForkFormat::Dev => {
            return Err(Error::corrupt(
                format!("xfs directory {}", inode.ino),
                0,
                "directory with a device fork",
            ));
        }
    }
    if seen.get() > MAX_DIR_ENTRIES {
        Err(limit())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileType;
    use crate::xfs::bmap::tests::{inode_with, vol_with};

    /// Appends a data entry (v5 with ftype) and returns its size.
    fn put_entry(b: &mut [u8], at: usize, ino: u64, name: &[u8], ftype: u8) -> usize {
        b[at..at + 8].copy_from_slice(&ino.to_be_bytes());
        b[at + 8] = u8::try_from(name.len()).unwrap();
        b[at + 9..at + 9 + name.len()].copy_from_slice(name);
        b[at + 9 + name.len()] = ftype;
        (8 + 1 + name.len() + 1 + 2).div_ceil(8) * 8
    }

    /// A v5 single-block directory of inode 131: `.`, `..`, a free region, `a`, `bcd`.
    fn block_dir() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[0..4].copy_from_slice(&XDB3.to_be_bytes());
        b[40..48].copy_from_slice(&131u64.to_be_bytes());
        let mut at = DATA_HDR_LEN_V5;
        at += put_entry(&mut b, at, 131, b".", 2);
        at += put_entry(&mut b, at, 128, b"..", 2);
        b[at..at + 2].copy_from_slice(&DATA_FREE_TAG.to_be_bytes());
        b[at + 2..at + 4].copy_from_slice(&16u16.to_be_bytes());
        at += 16;
        at += put_entry(&mut b, at, 140, b"a", 1);
        at += put_entry(&mut b, at, 141, b"bcd", 7);
        // The rest is one free region up to the leaf entries and tail (4 entries).
        let end = 4096 - BLOCK_TAIL_LEN - 4 * LEAF_ENTRY_LEN;
        b[at..at + 2].copy_from_slice(&DATA_FREE_TAG.to_be_bytes());
        b[at + 2..at + 4].copy_from_slice(&u16::try_from(end - at).unwrap().to_be_bytes());
        b[4088..4092].copy_from_slice(&4u32.to_be_bytes());
        seal(&mut b);
        b
    }

    fn seal(b: &mut [u8]) {
        let c = crate::xfs::crc::xfs_cksum(b, DIR3_CRC_OFFSET).unwrap();
        b[4..8].copy_from_slice(&c.to_le_bytes());
    }

    fn parse(b: &[u8]) -> Result<Vec<RawDirEntry>> {
        let v = vol_with(&[]);
        let mut out = Vec::new();
        let flow = parse_data_block(&v, 131, 0x1000, b, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })?;
        assert!(flow.is_continue());
        Ok(out)
    }

    #[test]
    fn block_directory_entries() {
        let got = parse(&block_dir()).unwrap();
        assert_eq!(
            got,
            vec![
                RawDirEntry {
                    name: b"a".to_vec(),
                    ino: 140,
                    ftype: 1
                },
                RawDirEntry {
                    name: b"bcd".to_vec(),
                    ino: 141,
                    ftype: 7
                },
            ]
        );
    }

    #[test]
    fn block_directory_errors() {
        type Edit = fn(&mut Vec<u8>);
        let cases: [(Edit, u64, &str); 6] = [
            (
                |b| b[3] = 0,
                0x1000,
                "magic 0x58444200 is not a directory data block",
            ),
            (|b| b[47] = 1, 0x1000 + 40, "owner 1 is not inode 131"),
            (
                |b| b[4088] = 0xff,
                0x1000 + 4088,
                "block tail count 4278190084 does not fit the block",
            ),
            (
                |b| b[64 + 16 + 16 + 3] = 12,
                0x1000 + 96,
                "free region length 12 invalid",
            ),
            (
                |b| b[64 + 16 + 16 + 16 + 8] = 0,
                0x1000 + 112,
                "entry with name length 0 does not fit the block",
            ),
            (
                |b| b[64 + 16 + 16 + 16 + 9] = b'/',
                0x1000 + 112,
                "entry has an invalid name",
            ),
        ];
        for (edit, offset, detail) in cases {
            let mut b = block_dir();
            edit(&mut b);
            seal(&mut b);
            match parse(&b).unwrap_err() {
                Error::Corrupt {
                    structure,
                    offset: o,
                    detail: d,
                } => {
                    assert_eq!(structure, "xfs directory block of inode 131");
                    assert_eq!((o, d.as_str()), (offset, detail));
                }
                e => panic!("{e}"),
            }
        }
        let mut b = block_dir();
        b[200] ^= 1;
        assert!(
            matches!(parse(&b), Err(Error::Corrupt { detail, .. }) if detail == "crc does not match the block")
        );
    }

    fn sf(fork: &[u8], ftype: bool) -> Result<Vec<RawDirEntry>> {
        let len = fork.len() as u64;
        let i = inode_with(132, FileType::Directory, ForkFormat::Local, len, 0, fork);
        let mut out = Vec::new();
        parse_shortform(&i, ftype, &mut |e| {
            out.push(e);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    #[test]
    fn shortform_forms_and_errors() {
        // 4-byte inode numbers, with ftype: count 2, i8count 0, parent 128.
        let fork = [
            2, 0, 0, 0, 0, 128, 1, 0, 0x60, b'x', 1, 0, 0, 0, 140, 2, 0, 0x70, b'y', b'z', 2, 0, 0,
            1, 0,
        ];
        assert_eq!(
            sf(&fork, true).unwrap(),
            vec![
                RawDirEntry {
                    name: b"x".to_vec(),
                    ino: 140,
                    ftype: 1
                },
                RawDirEntry {
                    name: b"yz".to_vec(),
                    ino: 256,
                    ftype: 2
                },
            ]
        );
        // 8-byte inode numbers, no ftype.
        let mut fork = vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 128, 1, 0, 0x60, b'q'];
        fork.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(
            sf(&fork, false).unwrap(),
            vec![RawDirEntry {
                name: b"q".to_vec(),
                ino: 1 << 40,
                ftype: 0
            }]
        );
        let err = |fork: &[u8]| match sf(fork, true).unwrap_err() {
            Error::Corrupt {
                structure,
                offset,
                detail,
            } => {
                assert_eq!(structure, "xfs shortform directory 132");
                (offset, detail)
            }
            e => panic!("{e}"),
        };
        assert_eq!(err(&[]), (0, "empty header".into()));
        assert_eq!(err(&[1, 0, 0]), (2, "parent inode truncated".into()));
        assert_eq!(
            err(&[1, 0, 0, 0, 0, 128]),
            (6, "entry 0 past di_size 6".into())
        );
        assert_eq!(
            err(&[1, 0, 0, 0, 0, 128, 5, 0, 0x60, b'x']),
            (6, "entry 0 name of 5 bytes past di_size 10".into())
        );
        assert_eq!(
            err(&[1, 0, 0, 0, 0, 128, 1, 0, 0x60, 0, 1, 0, 0, 0, 140]),
            (6, "entry 0 has an invalid name".into())
        );
        assert_eq!(
            err(&[1, 0, 0, 0, 0, 128, 1, 0, 0x60, b'x', 1, 0, 0]),
            (6, "entry 0 inode number past di_size 13".into())
        );
    }
}
