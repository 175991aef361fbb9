//! The data fork's block map: extent records, either inline (`di_format` extents) or in a
//! block-map B+tree (`di_format` btree, "BMBT").
//!
//! Spec: XFS Algorithms & Data Structures, "Data Extents" (`xfs_bmbt_rec`) and "Extent Tree"
//! (`xfs_bmdr_block` in the inode, `xfs_btree_lblock` on disk).

use super::Volume;
use super::inode::{ForkFormat, Inode};
use crate::{Error, Result};

/// Size of one packed extent record (`xfs_bmbt_rec`).
pub(crate) const BMBT_REC_LEN: usize = 16;
/// Size of a key (`xfs_bmbt_key`: the first file block) and of a pointer (a filesystem block).
const BMBT_KEY_LEN: usize = 8;
const BMBT_PTR_LEN: usize = 8;
/// Header of the tree root stored in the inode (`xfs_bmdr_block`: level, numrecs).
const BMDR_HDR_LEN: usize = 4;
/// Long-format btree block header: v4 "BMAP" (24 bytes) and v5 "BMA3" (72 bytes).
const BMAP_MAGIC: u32 = 0x424d_4150;
const BMAP_CRC_MAGIC: u32 = 0x424d_4133;
const LBLOCK_HDR_LEN_V4: usize = 24;
const LBLOCK_HDR_LEN_V5: usize = 72;
/// Offsets in the v5 long block header: `bb_owner` and `bb_crc`.
const LBLOCK_OWNER_OFFSET: usize = 56;
const LBLOCK_CRC_OFFSET: usize = 64;
/// Deepest block-map tree we walk, counting the root in the inode (house style S12).
pub(crate) const MAX_BMBT_DEPTH: u16 = 8;
/// Most btree blocks read to build one map (house style S12).
const MAX_BMBT_BLOCKS: usize = 1 << 16;
/// Most extents one map may hold (about 32 MiB of memory; house style S12).
pub(crate) const MAX_EXTENTS: u64 = 1 << 20;
/// File offsets are 54 bits wide (`XFS_MAX_FILEOFF`).
const MAX_FILEOFF: u64 = (1 << 54) - 1;

/// One decoded extent record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BmbtRec {
    /// First file block mapped (`br_startoff`).
    pub(crate) startoff: u64,
    /// First filesystem block (`br_startblock`).
    pub(crate) startblock: u64,
    /// Length in blocks (`br_blockcount`).
    pub(crate) blockcount: u64,
    /// Preallocated but unwritten: reads as zeroes.
    pub(crate) unwritten: bool,
}

impl BmbtRec {
    /// Unpacks the 128-bit big-endian record: flag (1 bit), startoff (54), startblock (52),
    /// blockcount (21).
    pub(crate) fn decode(raw: &[u8; BMBT_REC_LEN]) -> Self {
        let v = u128::from_be_bytes(*raw);
        let mask = |bits: u32| (1u128 << bits) - 1;
        let field = |shift: u32, bits: u32| {
            // OK: the masked value has at most 54 bits.
            u64::try_from((v >> shift) & mask(bits)).unwrap_or(u64::MAX)
        };
        Self {
            unwritten: v >> 127 == 1,
            startoff: field(73, 54),
            startblock: field(21, 52),
            blockcount: field(0, 21),
        }
    }
}

/// A validated mapping from file blocks to device bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) startoff: u64,
    pub(crate) blockcount: u64,
    /// Byte offset of `startoff` on the device; the extent is contiguous there.
    pub(crate) phys: u64,
    pub(crate) unwritten: bool,
}

/// The sorted, non-overlapping block map of one inode's data fork.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtentMap {
    pub(crate) mappings: Vec<Mapping>,
}

/// What a file block maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Device bytes at `phys`; `blocks` contiguous blocks remain in the extent.
    Data { phys: u64, blocks: u64 },
    /// Reads as zeroes for `blocks` blocks (a hole or an unwritten extent; `u64::MAX` past the end).
    Zero { blocks: u64 },
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn decode_records(buf: &[u8], at: usize, count: usize, out: &mut Vec<BmbtRec>) -> Option<()> {
    for i in 0..count {
        let start = at.checked_add(i.checked_mul(BMBT_REC_LEN)?)?;
        let raw: &[u8; BMBT_REC_LEN] = buf
            .get(start..start.checked_add(BMBT_REC_LEN)?)?
            .try_into()
            .ok()?;
        out.push(BmbtRec::decode(raw));
    }
    Some(())
}

impl ExtentMap {
    /// Reads and validates the data fork map of `inode` (extents or btree format).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the inode's map or the btree block; [`Error::LimitExceeded`]
    /// past [`MAX_EXTENTS`].
    pub(crate) fn read(vol: &Volume, inode: &Inode) -> Result<Self> {
        let structure = format!("xfs extent map of inode {}", inode.ino);
        if inode.nextents > MAX_EXTENTS {
            return Err(Error::LimitExceeded {
                what: format!("extent count of xfs inode {}", inode.ino),
                limit: MAX_EXTENTS,
            });
        }
        let mut recs = Vec::new();
        match inode.format {
            ForkFormat::Extents => {
                // The count was checked against the fork size when the inode was parsed.
                let n = usize::try_from(inode.nextents)
                    .map_err(|_| Error::corrupt(structure.clone(), 0, "extent count overflows"))?;
                decode_records(&inode.data_fork, 0, n, &mut recs).ok_or_else(|| {
                    Error::corrupt(
                        structure.clone(),
                        0,
                        format!("{n} extent records do not fit the fork"),
                    )
                })?;
            }
            ForkFormat::Btree => read_btree(vol, inode, &mut recs)?,
            ForkFormat::Local | ForkFormat::Dev => return Ok(Self::default()),
        }
        if recs.len() as u64 != inode.nextents {
            return Err(Error::corrupt(
                structure,
                0,
                format!(
                    "block map holds {} extents but di_nextents is {}",
                    recs.len(),
                    inode.nextents
                ),
            ));
        }
        Self::from_records(vol, &structure, &recs)
    }

    /// Validates decoded records: non-empty, in order, not overlapping, inside one AG each.
    pub(crate) fn from_records(vol: &Volume, structure: &str, recs: &[BmbtRec]) -> Result<Self> {
        let mut mappings = Vec::with_capacity(recs.len());
        let mut next_free = 0u64;
        for (i, r) in recs.iter().enumerate() {
            let bad = |detail: String| {
                Error::corrupt(structure.to_owned(), 0, format!("extent {i}: {detail}"))
            };
            if r.blockcount == 0 {
                return Err(bad("blockcount 0".into()));
            }
            if r.startoff < next_free {
                return Err(bad(format!(
                    "startoff {} overlaps or precedes the previous extent",
                    r.startoff
                )));
            }
            let end = r
                .startoff
                .checked_add(r.blockcount)
                .filter(|&e| e <= MAX_FILEOFF)
                .ok_or_else(|| {
                    bad(format!(
                        "startoff {} + blockcount {} past the largest file offset",
                        r.startoff, r.blockcount
                    ))
                })?;
            let phys = vol
                .sb
                .fsb_range_to_offset(r.startblock, r.blockcount)
                .ok_or_else(|| {
                    bad(format!(
                        "blocks {}+{} outside the filesystem or across an allocation group",
                        r.startblock, r.blockcount
                    ))
                })?;
            next_free = end;
            mappings.push(Mapping {
                startoff: r.startoff,
                blockcount: r.blockcount,
                phys,
                unwritten: r.unwritten,
            });
        }
        Ok(Self { mappings })
    }

    /// Where file block `block` lives.
    pub(crate) fn lookup(&self, block: u64, block_size: u64) -> Lookup {
        let idx = self
            .mappings
            .partition_point(|m| m.startoff + m.blockcount <= block);
        match self.mappings.get(idx) {
            Some(m) if m.startoff <= block => {
                let into = block - m.startoff;
                let blocks = m.blockcount - into;
                if m.unwritten {
                    Lookup::Zero { blocks }
                } else {
                    Lookup::Data {
                        phys: m.phys + into * block_size,
                        blocks,
                    }
                }
            }
            Some(m) => Lookup::Zero {
                blocks: m.startoff - block,
            },
            None => Lookup::Zero { blocks: u64::MAX },
        }
    }

    /// Fills `buf` with the file's bytes from `offset` (holes and unwritten extents read as zeroes).
    ///
    /// # Errors
    /// I/O errors of the device.
    pub(crate) fn read_bytes(&self, vol: &Volume, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = vol.sb.block_size();
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset
                .checked_add(done as u64)
                .ok_or_else(|| Error::corrupt("xfs file", offset, "read range overflows"))?;
            let block = pos >> vol.sb.blocklog;
            let in_block = pos & (bs - 1);
            let (run, phys) = match self.lookup(block, bs) {
                Lookup::Data { phys, blocks } => {
                    (blocks.saturating_mul(bs) - in_block, Some(phys + in_block))
                }
                Lookup::Zero { blocks } => {
                    (blocks.saturating_mul(bs).saturating_sub(in_block), None)
                }
            };
            let n = usize::try_from(run)
                .unwrap_or(usize::MAX)
                .min(buf.len() - done);
            // OK to slice: done + n <= buf.len() by the min above.
            let out = &mut buf[done..done + n];
            match phys {
                Some(p) => vol.dev.read_exact_at(p, out)?,
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }
}

/// Walks the block-map B+tree rooted in `inode`'s data fork, appending leaf records in order.
fn read_btree(vol: &Volume, inode: &Inode, out: &mut Vec<BmbtRec>) -> Result<()> {
    let structure = format!("xfs bmbt root of inode {}", inode.ino);
    let fork = &inode.data_fork;
    let bad = |detail: String| Error::corrupt(structure.clone(), 0, detail);
    let level = be_u16(fork, 0).ok_or_else(|| bad("fork too small for a btree root".into()))?;
    let numrecs = be_u16(fork, 2).ok_or_else(|| bad("fork too small for a btree root".into()))?;
    if level == 0 || level >= MAX_BMBT_DEPTH {
        return Err(bad(format!(
            "bb_level {level} out of range 1..{MAX_BMBT_DEPTH}"
        )));
    }
    let maxrecs = fork.len().saturating_sub(BMDR_HDR_LEN) / (BMBT_KEY_LEN + BMBT_PTR_LEN);
    if numrecs == 0 || usize::from(numrecs) > maxrecs {
        return Err(bad(format!(
            "bb_numrecs {numrecs} out of range 1..={maxrecs}"
        )));
    }
    let ptrs_at = BMDR_HDR_LEN + maxrecs * BMBT_KEY_LEN;
    let ptrs = read_ptrs(fork, ptrs_at, usize::from(numrecs))
        .ok_or_else(|| bad("pointers past the fork".into()))?;
    let mut budget = MAX_BMBT_BLOCKS;
    walk(vol, inode.ino, &ptrs, level - 1, out, &mut budget)
}

fn read_ptrs(buf: &[u8], at: usize, count: usize) -> Option<Vec<u64>> {
    (0..count)
        .map(|i| be_u64(buf, at.checked_add(i.checked_mul(BMBT_PTR_LEN)?)?))
        .collect()
}

fn walk(
    vol: &Volume,
    ino: u64,
    ptrs: &[u64],
    level: u16,
    out: &mut Vec<BmbtRec>,
    budget: &mut usize,
) -> Result<()> {
    let v5 = vol.sb.version == super::superblock::SbVersion::V5;
    let (magic_want, hdr_len) = if v5 {
        (BMAP_CRC_MAGIC, LBLOCK_HDR_LEN_V5)
    } else {
        (BMAP_MAGIC, LBLOCK_HDR_LEN_V4)
    };
    let bs = usize::try_from(vol.sb.block_size())
        .map_err(|_| Error::unsupported("xfs block size", "too large"))?;
    for &ptr in ptrs {
        let Some(at) = vol.sb.fsb_to_offset(ptr) else {
            return Err(Error::corrupt(
                format!("xfs bmbt of inode {ino}"),
                0,
                format!("child pointer {ptr} outside the filesystem"),
            ));
        };
        if *budget == 0 {
            return Err(Error::LimitExceeded {
                what: format!("bmbt blocks of xfs inode {ino}"),
                limit: MAX_BMBT_BLOCKS as u64,
            });
        }
        *budget -= 1;
        let mut buf = vec![0u8; bs];
        vol.dev.read_exact_at(at, &mut buf)?;
        let structure = format!("xfs bmbt block of inode {ino}");
        let bad = |field: usize, detail: String| {
            Error::corrupt(structure.clone(), at + field as u64, detail)
        };
        let magic = be_u32(&buf, 0).unwrap_or(0);
        if magic != magic_want {
            return Err(bad(
                0,
                format!("bb_magic {magic:#010x} is not {magic_want:#010x}"),
            ));
        }
        let blevel = be_u16(&buf, 4).unwrap_or(u16::MAX);
        if blevel != level {
            return Err(bad(
                4,
                format!("bb_level {blevel} where {level} was expected"),
            ));
        }
        if v5 {
            let owner = be_u64(&buf, LBLOCK_OWNER_OFFSET).unwrap_or(0);
            if owner != ino {
                return Err(bad(
                    LBLOCK_OWNER_OFFSET,
                    format!("bb_owner {owner} is not inode {ino}"),
                ));
            }
            if vol.verify_crc && !super::crc::verify(&buf, LBLOCK_CRC_OFFSET) {
                return Err(bad(
                    LBLOCK_CRC_OFFSET,
                    "bb_crc does not match the block".into(),
                ));
            }
        }
        let numrecs = usize::from(be_u16(&buf, 6).unwrap_or(0));
        let per = if level == 0 {
            BMBT_REC_LEN
        } else {
            BMBT_KEY_LEN + BMBT_PTR_LEN
        };
        let maxrecs = (bs - hdr_len) / per;
        if numrecs == 0 || numrecs > maxrecs {
            return Err(bad(
                6,
                format!("bb_numrecs {numrecs} out of range 1..={maxrecs}"),
            ));
        }
        if level == 0 {
            if out.len().saturating_add(numrecs) as u64 > MAX_EXTENTS {
                return Err(Error::LimitExceeded {
                    what: format!("extent count of xfs inode {ino}"),
                    limit: MAX_EXTENTS,
                });
            }
            decode_records(&buf, hdr_len, numrecs, out)
                .ok_or_else(|| bad(hdr_len, "records past the block".into()))?;
        } else {
            let child = read_ptrs(&buf, hdr_len + maxrecs * BMBT_KEY_LEN, numrecs)
                .ok_or_else(|| bad(hdr_len, "pointers past the block".into()))?;
            walk(vol, ino, &child, level - 1, out, budget)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::xfs::superblock::{Superblock, tests::good_v5};

    fn encode(r: BmbtRec) -> [u8; 16] {
        let v = (u128::from(r.unwritten) << 127)
            | (u128::from(r.startoff) << 73)
            | (u128::from(r.startblock) << 21)
            | u128::from(r.blockcount);
        v.to_be_bytes()
    }

    /// A v5 volume over 64 blocks of 0xAB, with `patch` applied at byte offsets.
    pub(crate) fn vol_with(patch: &[(usize, &[u8])]) -> Volume {
        let mut bytes = vec![0xAB; 64 * 4096];
        for (at, b) in patch {
            bytes[*at..*at + b.len()].copy_from_slice(b);
        }
        Volume {
            dev: Arc::new(disk::MemDisk::from_vec(bytes)),
            sb: Superblock::parse(&good_v5(), true).unwrap(),
            verify_crc: true,
        }
    }

    /// An inode of `file_type` and `format` whose data fork is `fork` (336 bytes, zero-padded).
    pub(crate) fn inode_with(
        ino: u64,
        file_type: crate::FileType,
        format: ForkFormat,
        size: u64,
        nextents: u64,
        fork: &[u8],
    ) -> Inode {
        let mut data_fork = fork.to_vec();
        data_fork.resize(336, 0);
        Inode {
            ino,
            mode: 0,
            file_type,
            format,
            uid: 0,
            gid: 0,
            nlink: 1,
            size,
            mtime: 0,
            nextents,
            realtime: false,
            data_fork,
        }
    }

    fn vol() -> Volume {
        Volume {
            dev: Arc::new(disk::MemDisk::from_vec(vec![0xAB; 64 * 4096])),
            sb: Superblock::parse(&good_v5(), true).unwrap(),
            verify_crc: true,
        }
    }

    #[test]
    fn record_round_trip() {
        let r = BmbtRec {
            startoff: (1 << 54) - 1,
            startblock: (1 << 52) - 1,
            blockcount: (1 << 21) - 1,
            unwritten: true,
        };
        assert_eq!(BmbtRec::decode(&encode(r)), r);
        let r = BmbtRec {
            startoff: 5,
            startblock: 33000,
            blockcount: 7,
            unwritten: false,
        };
        assert_eq!(BmbtRec::decode(&encode(r)), r);
    }

    #[test]
    fn lookup_holes_unwritten_and_reads() {
        let v = vol();
        let recs = [
            BmbtRec {
                startoff: 2,
                startblock: 10,
                blockcount: 2,
                unwritten: false,
            },
            BmbtRec {
                startoff: 4,
                startblock: 20,
                blockcount: 1,
                unwritten: true,
            },
            BmbtRec {
                startoff: 8,
                startblock: 30,
                blockcount: 1,
                unwritten: false,
            },
        ];
        let m = ExtentMap::from_records(&v, "t", &recs).unwrap();
        assert_eq!(m.lookup(0, 4096), Lookup::Zero { blocks: 2 });
        assert_eq!(
            m.lookup(3, 4096),
            Lookup::Data {
                phys: 11 * 4096,
                blocks: 1
            }
        );
        assert_eq!(m.lookup(4, 4096), Lookup::Zero { blocks: 1 });
        assert_eq!(m.lookup(5, 4096), Lookup::Zero { blocks: 3 });
        assert_eq!(m.lookup(9, 4096), Lookup::Zero { blocks: u64::MAX });
        let mut buf = vec![1u8; 4 * 4096];
        m.read_bytes(&v, 4096, &mut buf).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..3 * 4096].iter().all(|&b| b == 0xAB));
        assert!(buf[3 * 4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bad_records_are_rejected() {
        let v = vol();
        let ok = BmbtRec {
            startoff: 2,
            startblock: 10,
            blockcount: 2,
            unwritten: false,
        };
        let cases = [
            (
                vec![BmbtRec {
                    blockcount: 0,
                    ..ok
                }],
                "extent 0: blockcount 0",
            ),
            (
                vec![ok, BmbtRec { startoff: 3, ..ok }],
                "extent 1: startoff 3 overlaps or precedes the previous extent",
            ),
            (
                vec![BmbtRec {
                    startoff: (1 << 54) - 1,
                    ..ok
                }],
                "extent 0: startoff 18014398509481983 + blockcount 2 past the largest file offset",
            ),
            (
                vec![BmbtRec {
                    startblock: 19199,
                    ..ok
                }],
                "extent 0: blocks 19199+2 outside the filesystem or across an allocation group",
            ),
        ];
        for (recs, detail) in cases {
            match ExtentMap::from_records(&v, "t", &recs).unwrap_err() {
                Error::Corrupt {
                    structure,
                    detail: d,
                    ..
                } => {
                    assert_eq!(structure, "t");
                    assert_eq!(d, detail);
                }
                e => panic!("{e}"),
            }
        }
    }

    fn btree_err(v: &Volume, fork: &[u8]) -> (String, String) {
        let i = inode_with(131, crate::FileType::Regular, ForkFormat::Btree, 0, 1, fork);
        match ExtentMap::read(v, &i).unwrap_err() {
            Error::Corrupt {
                structure, detail, ..
            } => (structure, detail),
            e => panic!("{e}"),
        }
    }

    /// A root with one pointer: level 1, numrecs 1, key 0, pointer at 4 + 20 * 8 (maxrecs 20).
    fn root_to(ptr: u64) -> Vec<u8> {
        let mut f = vec![0u8; 336];
        f[0..2].copy_from_slice(&1u16.to_be_bytes());
        f[2..4].copy_from_slice(&1u16.to_be_bytes());
        f[164..172].copy_from_slice(&ptr.to_be_bytes());
        f
    }

    #[test]
    fn btree_walk_and_its_errors() {
        // A v5 leaf at block 5 holding one record, owned by inode 131.
        let mut leaf = vec![0u8; 4096];
        leaf[0..4].copy_from_slice(&BMAP_CRC_MAGIC.to_be_bytes());
        leaf[6..8].copy_from_slice(&1u16.to_be_bytes());
        leaf[56..64].copy_from_slice(&131u64.to_be_bytes());
        let rec = BmbtRec {
            startoff: 0,
            startblock: 9,
            blockcount: 3,
            unwritten: false,
        };
        leaf[72..88].copy_from_slice(&encode(rec));
        let c = crate::xfs::crc::xfs_cksum(&leaf, LBLOCK_CRC_OFFSET).unwrap();
        leaf[64..68].copy_from_slice(&c.to_le_bytes());
        let v = vol_with(&[(5 * 4096, &leaf)]);
        let i = inode_with(
            131,
            crate::FileType::Regular,
            ForkFormat::Btree,
            0,
            1,
            &root_to(5),
        );
        let m = ExtentMap::read(&v, &i).unwrap();
        assert_eq!(
            m.mappings,
            vec![Mapping {
                startoff: 0,
                blockcount: 3,
                phys: 9 * 4096,
                unwritten: false
            }]
        );

        let root = "xfs bmbt root of inode 131".to_owned();
        let block = "xfs bmbt block of inode 131".to_owned();
        let mut f = root_to(5);
        f[1] = 0;
        assert_eq!(
            btree_err(&v, &f),
            (root.clone(), "bb_level 0 out of range 1..8".into())
        );
        f[1] = 8;
        assert_eq!(
            btree_err(&v, &f),
            (root.clone(), "bb_level 8 out of range 1..8".into())
        );
        let mut f = root_to(5);
        f[3] = 21;
        assert_eq!(
            btree_err(&v, &f),
            (root, "bb_numrecs 21 out of range 1..=20".into())
        );
        assert_eq!(
            btree_err(&v, &root_to(19200)),
            (
                "xfs bmbt of inode 131".into(),
                "child pointer 19200 outside the filesystem".into()
            )
        );
        assert_eq!(
            btree_err(&v, &root_to(6)),
            (
                block.clone(),
                "bb_magic 0xabababab is not 0x424d4133".into()
            )
        );
        let mut bad = leaf.clone();
        bad[63] = 1;
        let v2 = vol_with(&[(5 * 4096, &bad)]);
        assert_eq!(
            btree_err(&v2, &root_to(5)),
            (block.clone(), "bb_owner 1 is not inode 131".into())
        );
        bad[63] = 131;
        bad[4000] = 1;
        let v2 = vol_with(&[(5 * 4096, &bad)]);
        assert_eq!(
            btree_err(&v2, &root_to(5)),
            (block.clone(), "bb_crc does not match the block".into())
        );
        let mut f = root_to(5);
        f[0..2].copy_from_slice(&2u16.to_be_bytes());
        assert_eq!(
            btree_err(&v, &f),
            (block, "bb_level 0 where 1 was expected".into())
        );
        // di_nextents must agree with the records found.
        let i = inode_with(
            131,
            crate::FileType::Regular,
            ForkFormat::Btree,
            0,
            2,
            &root_to(5),
        );
        assert!(
            matches!(ExtentMap::read(&v, &i), Err(Error::Corrupt { detail, .. }) if detail == "block map holds 1 extents but di_nextents is 2")
        );
        let i = inode_with(
            131,
            crate::FileType::Regular,
            ForkFormat::Btree,
            0,
            MAX_EXTENTS + 1,
            &root_to(5),
        );
        assert!(matches!(
            ExtentMap::read(&v, &i),
            Err(Error::LimitExceeded { .. })
        ));
    }
}
