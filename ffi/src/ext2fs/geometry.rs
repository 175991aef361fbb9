//! Sanity checks on the superblock's geometry, run in Rust before libext2fs sees the image.
//!
//! libext2fs is the library `e2fsck` is built on, but it trusts the superblock: `e2fsck`
//! validates the geometry itself before using it (its `check_super_block`), while
//! `ext2fs_open2` checks only a few fields. A hostile image with, for example,
//! `s_first_data_block` 128 on a 1 KiB-block filesystem opens fine and then corrupts libext2fs's
//! heap at close (found by `tests/tests/ext4_write_hostile.rs`). So before opening, every field
//! the layout is computed from must be consistent with the others and with the device, as
//! `e2fsck` would require; the group descriptors are checked after opening with libext2fs's own
//! `ext2fs_check_desc` (see [`super::Ext2Fs::open`]).
//!
//! Field offsets and meanings: the ext4 disk layout documentation ("The Super Block" table);
//! limits from `ext2_fs.h` as named below.

use crate::error::{Error, Result};

/// Byte offset of the primary superblock on the device (ext4 disk layout, "Layout").
const SB_AT: u64 = 1024;

/// Superblock field offsets ("The Super Block" table).
const S_INODES_COUNT: usize = 0x00;
const S_BLOCKS_COUNT_LO: usize = 0x04;
const S_R_BLOCKS_COUNT_LO: usize = 0x08;
const S_FIRST_DATA_BLOCK: usize = 0x14;
const S_LOG_BLOCK_SIZE: usize = 0x18;
const S_LOG_CLUSTER_SIZE: usize = 0x1C;
const S_BLOCKS_PER_GROUP: usize = 0x20;
const S_CLUSTERS_PER_GROUP: usize = 0x24;
const S_INODES_PER_GROUP: usize = 0x28;
const S_REV_LEVEL: usize = 0x4C;
const S_FIRST_INO: usize = 0x54;
const S_INODE_SIZE: usize = 0x58;
const S_FEATURE_INCOMPAT: usize = 0x60;
const S_FEATURE_RO_COMPAT: usize = 0x64;
const S_RESERVED_GDT_BLOCKS: usize = 0xCE;
const S_DESC_SIZE: usize = 0xFE;
const S_FIRST_META_BG: usize = 0x104;
const S_BLOCKS_COUNT_HI: usize = 0x150;
const S_R_BLOCKS_COUNT_HI: usize = 0x154;
const S_MIN_EXTRA_ISIZE: usize = 0x15C;
const S_WANT_EXTRA_ISIZE: usize = 0x15E;
const S_LOG_GROUPS_PER_FLEX: usize = 0x174;

/// `s_log_block_size` is the block size's log2 minus 10; blocks are 1 KiB to 64 KiB
/// (`EXT2_MIN_BLOCK_LOG_SIZE` 10, `EXT2_MAX_BLOCK_LOG_SIZE` 16).
const MAX_LOG_BLOCK_SIZE: u32 = 6;
/// Largest cluster size log2 minus 10 with bigalloc (`EXT2_MAX_CLUSTER_LOG_SIZE` 29).
const MAX_LOG_CLUSTER_SIZE: u32 = 19;
/// Fewest blocks in a group: one byte of block bitmap (`e2fsck`'s lower bound).
const MIN_BLOCKS_PER_GROUP: u32 = 8;
/// Highest superblock revision (`EXT2_DYNAMIC_REV`).
const MAX_REV_LEVEL: u32 = 1;
/// Inode size and first non-reserved inode of revision 0 (`EXT2_GOOD_OLD_INODE_SIZE`,
/// `EXT2_GOOD_OLD_FIRST_INO`); revision 1 may not go below them.
const GOOD_OLD_INODE_SIZE: u32 = 128;
const GOOD_OLD_FIRST_INO: u32 = 11;
/// Group descriptor sizes: 32 bytes without `64bit`, a power of two from 64 to 1024 with it
/// (`EXT2_MIN_DESC_SIZE`, `EXT2_MIN_DESC_SIZE_64BIT`, `EXT2_MAX_DESC_SIZE`).
const MIN_DESC_SIZE: u32 = 32;
const MIN_DESC_SIZE_64BIT: u32 = 64;
const MAX_DESC_SIZE: u32 = 1024;
/// `s_log_groups_per_flex` above this overflows the 32-bit group count (`e2fsck` refuses it).
const MAX_LOG_GROUPS_PER_FLEX: u32 = 31;

/// Feature bits the geometry depends on (ext4 disk layout, "The Super Block", feature tables).
const INCOMPAT_META_BG: u32 = 0x0010;
const INCOMPAT_64BIT: u32 = 0x0080;
const INCOMPAT_FLEX_BG: u32 = 0x0200;
const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
const RO_COMPAT_BIGALLOC: u32 = 0x0200;

fn le16(sb: &[u8], at: usize) -> u32 {
    sb.get(at..at + 2)
        .map_or(0, |b| u32::from(u16::from_le_bytes([b[0], b[1]])))
}

fn le32(sb: &[u8], at: usize) -> u32 {
    sb.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A 64-bit count split into `lo` and, with the `64bit` feature, `hi` halves.
fn count64(sb: &[u8], lo: usize, hi: usize, is_64bit: bool) -> u64 {
    let hi = if is_64bit { le32(sb, hi) } else { 0 };
    (u64::from(hi) << 32) | u64::from(le32(sb, lo))
}

fn corrupt(field: usize, detail: String) -> Error {
    Error::Corrupt {
        structure: "ext2/3/4 superblock",
        // OK to cast: field offsets are below 0x400.
        offset: SB_AT + field as u64,
        detail,
    }
}

/// Checks that `value` lies in `range`, naming `field` otherwise.
fn within(
    field: usize,
    name: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<()> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(corrupt(
            field,
            format!(
                "{name} {value} out of range {}..={}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// What the checked superblock says about the groups, for the checks after opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    /// Byte offset of the primary group descriptor table (the block after the superblock's).
    pub(super) gdt_at: u64,
    /// Number of block groups.
    pub(super) groups: u32,
    /// `s_inodes_per_group`.
    pub(super) inodes_per_group: u32,
    /// The group descriptors carry checksums (`gdt_csum` or `metadata_csum`), and with them
    /// the `bg_itable_unused` and `bg_flags` that libext2fs then relies on.
    pub(super) group_csum: bool,
}

/// Checks the geometry of the superblock `sb` (1 KiB from byte 1024) on a device of
/// `device_size` bytes.
///
/// # Errors
/// [`Error::Corrupt`] naming the first inconsistent field, its value and the allowed range.
pub(super) fn check(sb: &[u8], device_size: u64) -> Result<Geometry> {
    let incompat = le32(sb, S_FEATURE_INCOMPAT);
    let ro_compat = le32(sb, S_FEATURE_RO_COMPAT);
    let is_64bit = incompat & INCOMPAT_64BIT != 0;

    let log_block = le32(sb, S_LOG_BLOCK_SIZE);
    within(
        S_LOG_BLOCK_SIZE,
        "s_log_block_size",
        log_block.into(),
        0..=MAX_LOG_BLOCK_SIZE.into(),
    )?;
    let block_size = 1024u64 << log_block;
    let log_cluster = le32(sb, S_LOG_CLUSTER_SIZE);
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        within(
            S_LOG_CLUSTER_SIZE,
            "s_log_cluster_size",
            log_cluster.into(),
            log_block.into()..=MAX_LOG_CLUSTER_SIZE.into(),
        )?;
    } else {
        within(
            S_LOG_CLUSTER_SIZE,
            "s_log_cluster_size without bigalloc",
            log_cluster.into(),
            log_block.into()..=log_block.into(),
        )?;
    }
    let cluster_ratio = 1u64 << (log_cluster - log_block);

    // e2fsck insists on the exact value: block 0 holds the boot sector and, with 1 KiB blocks,
    // nothing else, so the first group starts at block 1 then and at block 0 otherwise.
    let first_data_block = le32(sb, S_FIRST_DATA_BLOCK);
    let expected_first = u64::from(block_size == 1024 && cluster_ratio == 1);
    within(
        S_FIRST_DATA_BLOCK,
        "s_first_data_block",
        first_data_block.into(),
        expected_first..=expected_first,
    )?;

    let blocks = count64(sb, S_BLOCKS_COUNT_LO, S_BLOCKS_COUNT_HI, is_64bit);
    let device_blocks = device_size / block_size;
    within(
        S_BLOCKS_COUNT_LO,
        "s_blocks_count (the device's size in blocks is the maximum)",
        blocks,
        expected_first + 1..=device_blocks,
    )?;
    let r_blocks = count64(sb, S_R_BLOCKS_COUNT_LO, S_R_BLOCKS_COUNT_HI, is_64bit);
    within(
        S_R_BLOCKS_COUNT_LO,
        "s_r_blocks_count",
        r_blocks,
        0..=blocks,
    )?;

    // Each group's block and inode bitmaps fill at most one block.
    let bits_per_block = block_size * 8;
    let clusters_per_group = le32(sb, S_CLUSTERS_PER_GROUP);
    let blocks_per_group = le32(sb, S_BLOCKS_PER_GROUP);
    within(
        S_CLUSTERS_PER_GROUP,
        "s_clusters_per_group",
        clusters_per_group.into(),
        u64::from(MIN_BLOCKS_PER_GROUP)..=bits_per_block,
    )?;
    let expected_bpg = u64::from(clusters_per_group) * cluster_ratio;
    within(
        S_BLOCKS_PER_GROUP,
        "s_blocks_per_group (s_clusters_per_group times the cluster ratio)",
        blocks_per_group.into(),
        expected_bpg..=expected_bpg,
    )?;
    let groups = (blocks - u64::from(first_data_block)).div_ceil(u64::from(blocks_per_group));

    let rev = le32(sb, S_REV_LEVEL);
    within(
        S_REV_LEVEL,
        "s_rev_level",
        rev.into(),
        0..=MAX_REV_LEVEL.into(),
    )?;
    let (inode_size, first_ino) = if rev == 0 {
        (GOOD_OLD_INODE_SIZE, GOOD_OLD_FIRST_INO)
    } else {
        (le16(sb, S_INODE_SIZE), le32(sb, S_FIRST_INO))
    };
    if !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
        return Err(corrupt(
            S_INODE_SIZE,
            format!(
                "s_inode_size {inode_size} is not a power of two in {GOOD_OLD_INODE_SIZE}..={block_size}"
            ),
        ));
    }
    within(
        S_INODE_SIZE,
        "s_inode_size",
        inode_size.into(),
        GOOD_OLD_INODE_SIZE.into()..=block_size,
    )?;
    let inodes_per_block = block_size / u64::from(inode_size);
    let inodes_per_group = le32(sb, S_INODES_PER_GROUP);
    within(
        S_INODES_PER_GROUP,
        "s_inodes_per_group",
        inodes_per_group.into(),
        inodes_per_block..=bits_per_block,
    )?;
    let inodes = le32(sb, S_INODES_COUNT);
    // Overflow means more inodes than the 32-bit count holds: the check below refuses that too.
    let expected_inodes = groups.saturating_mul(u64::from(inodes_per_group));
    within(
        S_INODES_COUNT,
        "s_inodes_count (groups times s_inodes_per_group)",
        inodes.into(),
        expected_inodes..=expected_inodes,
    )?;
    within(
        S_FIRST_INO,
        "s_first_ino",
        first_ino.into(),
        u64::from(GOOD_OLD_FIRST_INO)..=inodes.into(),
    )?;
    if ro_compat & RO_COMPAT_EXTRA_ISIZE != 0 {
        let room = u64::from(inode_size - GOOD_OLD_INODE_SIZE);
        for (field, name) in [
            (S_MIN_EXTRA_ISIZE, "s_min_extra_isize"),
            (S_WANT_EXTRA_ISIZE, "s_want_extra_isize"),
        ] {
            within(field, name, le16(sb, field).into(), 0..=room)?;
        }
    }

    let desc_size = if is_64bit {
        let ds = le16(sb, S_DESC_SIZE);
        if !ds.is_power_of_two() || !(MIN_DESC_SIZE_64BIT..=MAX_DESC_SIZE).contains(&ds) {
            return Err(corrupt(
                S_DESC_SIZE,
                format!(
                    "s_desc_size {ds} is not a power of two in {MIN_DESC_SIZE_64BIT}..={MAX_DESC_SIZE}"
                ),
            ));
        }
        ds
    } else {
        MIN_DESC_SIZE
    };
    let desc_blocks = groups.div_ceil(block_size / u64::from(desc_size));
    within(
        S_RESERVED_GDT_BLOCKS,
        "s_reserved_gdt_blocks",
        le16(sb, S_RESERVED_GDT_BLOCKS).into(),
        0..=block_size / 4,
    )?;
    if incompat & INCOMPAT_META_BG != 0 {
        within(
            S_FIRST_META_BG,
            "s_first_meta_bg",
            le32(sb, S_FIRST_META_BG).into(),
            0..=desc_blocks,
        )?;
    }
    if incompat & INCOMPAT_FLEX_BG != 0 {
        let log_flex = sb.get(S_LOG_GROUPS_PER_FLEX).copied().unwrap_or(0);
        within(
            S_LOG_GROUPS_PER_FLEX,
            "s_log_groups_per_flex",
            log_flex.into(),
            0..=MAX_LOG_GROUPS_PER_FLEX.into(),
        )?;
    }
    Ok(Geometry {
        // Cannot overflow: first_data_block is 0 or 1 and block_size at most 64 KiB.
        gdt_at: (u64::from(first_data_block) + 1) * block_size,
        // Fits: groups times s_inodes_per_group (at least 1) equals the 32-bit s_inodes_count.
        groups: u32::try_from(groups).unwrap_or(u32::MAX),
        inodes_per_group,
        group_csum: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: u64 = 4 << 20;

    fn put32(sb: &mut [u8], at: usize, v: u32) {
        sb[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put16(sb: &mut [u8], at: usize, v: u16) {
        sb[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// The geometry `mke2fs -t ext4` gives a 4 MiB device: 1 KiB blocks, one group.
    fn good() -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        put32(&mut sb, S_INODES_COUNT, 1024);
        put32(&mut sb, S_BLOCKS_COUNT_LO, 4096);
        put32(&mut sb, S_R_BLOCKS_COUNT_LO, 204);
        put32(&mut sb, S_FIRST_DATA_BLOCK, 1);
        put32(&mut sb, S_BLOCKS_PER_GROUP, 8192);
        put32(&mut sb, S_CLUSTERS_PER_GROUP, 8192);
        put32(&mut sb, S_INODES_PER_GROUP, 1024);
        put32(&mut sb, S_REV_LEVEL, 1);
        put32(&mut sb, S_FIRST_INO, 11);
        put16(&mut sb, S_INODE_SIZE, 256);
        put32(
            &mut sb,
            S_FEATURE_INCOMPAT,
            INCOMPAT_64BIT | INCOMPAT_FLEX_BG | 0x0042,
        );
        put32(&mut sb, S_FEATURE_RO_COMPAT, RO_COMPAT_EXTRA_ISIZE | 0x0003);
        put16(&mut sb, S_RESERVED_GDT_BLOCKS, 31);
        put16(&mut sb, S_DESC_SIZE, 64);
        put16(&mut sb, S_MIN_EXTRA_ISIZE, 32);
        put16(&mut sb, S_WANT_EXTRA_ISIZE, 32);
        sb[S_LOG_GROUPS_PER_FLEX] = 4;
        sb
    }

    /// The error for `sb`, as `(offset, detail)`.
    fn refused(sb: &[u8], device_size: u64) -> (u64, String) {
        match check(sb, device_size) {
            Err(Error::Corrupt {
                structure,
                offset,
                detail,
            }) => {
                assert_eq!(structure, "ext2/3/4 superblock");
                (offset, detail)
            }
            other => panic!("expected a corrupt superblock, got {other:?}"),
        }
    }

    fn with(f: impl FnOnce(&mut Vec<u8>)) -> (u64, String) {
        let mut sb = good();
        f(&mut sb);
        refused(&sb, DEV)
    }

    #[test]
    fn good_geometry_passes() {
        assert_eq!(
            check(&good(), DEV).unwrap(),
            Geometry {
                gdt_at: 2048,
                groups: 1,
                inodes_per_group: 1024,
                group_csum: false,
            }
        );
        // 4 KiB blocks: the first group starts at block 0, the descriptors are in block 1.
        let mut sb = good();
        put32(&mut sb, S_LOG_BLOCK_SIZE, 2);
        put32(&mut sb, S_LOG_CLUSTER_SIZE, 2);
        put32(&mut sb, S_FIRST_DATA_BLOCK, 0);
        put32(&mut sb, S_BLOCKS_COUNT_LO, 1024);
        put32(&mut sb, S_BLOCKS_PER_GROUP, 32768);
        put32(&mut sb, S_CLUSTERS_PER_GROUP, 32768);
        assert_eq!(check(&sb, DEV).unwrap().gdt_at, 4096);
        // Revision 0 ignores s_inode_size and s_first_ino.
        let mut sb = good();
        put32(&mut sb, S_REV_LEVEL, 0);
        put16(&mut sb, S_INODE_SIZE, 0);
        put32(&mut sb, S_FIRST_INO, 0);
        put32(&mut sb, S_FEATURE_RO_COMPAT, 0);
        assert!(check(&sb, DEV).is_ok());
    }

    #[test]
    fn block_and_cluster_size() {
        assert_eq!(
            with(|sb| put32(sb, S_LOG_BLOCK_SIZE, 7)),
            (0x418, "s_log_block_size 7 out of range 0..=6".into())
        );
        assert_eq!(
            with(|sb| put32(sb, S_LOG_CLUSTER_SIZE, 1)),
            (
                0x41C,
                "s_log_cluster_size without bigalloc 1 out of range 0..=0".into()
            )
        );
        assert_eq!(
            with(|sb| {
                put32(sb, S_FEATURE_RO_COMPAT, RO_COMPAT_BIGALLOC);
                put32(sb, S_LOG_CLUSTER_SIZE, 20);
            }),
            (0x41C, "s_log_cluster_size 20 out of range 0..=19".into())
        );
    }

    #[test]
    fn first_data_block() {
        // found by ext4_write_hostile: 128 here made libext2fs free an invalid pointer at close
        assert_eq!(
            with(|sb| put32(sb, S_FIRST_DATA_BLOCK, 128)),
            (0x414, "s_first_data_block 128 out of range 1..=1".into())
        );
        assert_eq!(
            with(|sb| put32(sb, S_FIRST_DATA_BLOCK, 0)),
            (0x414, "s_first_data_block 0 out of range 1..=1".into())
        );
    }

    #[test]
    fn block_counts() {
        assert_eq!(
            with(|sb| put32(sb, S_BLOCKS_COUNT_LO, 4097)),
            (
                0x404,
                "s_blocks_count (the device's size in blocks is the maximum) 4097 out of range \
                 2..=4096"
                    .into()
            )
        );
        assert_eq!(
            with(|sb| put32(sb, S_BLOCKS_COUNT_HI, 1)).1,
            "s_blocks_count (the device's size in blocks is the maximum) 4294971392 out of \
             range 2..=4096"
        );
        assert_eq!(
            with(|sb| put32(sb, S_BLOCKS_COUNT_LO, 1)).0,
            0x404,
            "a filesystem needs a block past the first data block"
        );
        assert_eq!(
            with(|sb| put32(sb, S_R_BLOCKS_COUNT_LO, 5000)),
            (0x408, "s_r_blocks_count 5000 out of range 0..=4096".into())
        );
        assert_eq!(with(|sb| put32(sb, S_R_BLOCKS_COUNT_HI, 1)).0, 0x408);
        // Without 64bit the high halves are not counts at all.
        let mut sb = good();
        put32(&mut sb, S_FEATURE_INCOMPAT, INCOMPAT_FLEX_BG);
        put32(&mut sb, S_BLOCKS_COUNT_HI, 7);
        assert!(check(&sb, DEV).is_ok());
    }

    #[test]
    fn group_sizes() {
        assert_eq!(
            with(|sb| put32(sb, S_CLUSTERS_PER_GROUP, 8193)),
            (
                0x424,
                "s_clusters_per_group 8193 out of range 8..=8192".into()
            )
        );
        assert_eq!(with(|sb| put32(sb, S_CLUSTERS_PER_GROUP, 0)).0, 0x424);
        assert_eq!(
            with(|sb| put32(sb, S_BLOCKS_PER_GROUP, 4096)),
            (
                0x420,
                "s_blocks_per_group (s_clusters_per_group times the cluster ratio) 4096 out of \
                 range 8192..=8192"
                    .into()
            )
        );
        assert_eq!(
            with(|sb| put32(sb, S_INODES_PER_GROUP, 2)),
            (0x428, "s_inodes_per_group 2 out of range 4..=8192".into())
        );
        assert_eq!(with(|sb| put32(sb, S_INODES_PER_GROUP, 9000)).0, 0x428);
        assert_eq!(
            with(|sb| put32(sb, S_INODES_COUNT, 1025)),
            (
                0x400,
                "s_inodes_count (groups times s_inodes_per_group) 1025 out of range 1024..=1024"
                    .into()
            )
        );
    }

    #[test]
    fn inodes() {
        assert_eq!(
            with(|sb| put32(sb, S_REV_LEVEL, 2)),
            (0x44C, "s_rev_level 2 out of range 0..=1".into())
        );
        assert_eq!(
            with(|sb| put16(sb, S_INODE_SIZE, 384)),
            (
                0x458,
                "s_inode_size 384 is not a power of two in 128..=1024".into()
            )
        );
        assert_eq!(with(|sb| put16(sb, S_INODE_SIZE, 2048)).0, 0x458);
        assert_eq!(
            with(|sb| put16(sb, S_INODE_SIZE, 64)),
            (0x458, "s_inode_size 64 out of range 128..=1024".into())
        );
        assert_eq!(
            with(|sb| put32(sb, S_FIRST_INO, 10)),
            (0x454, "s_first_ino 10 out of range 11..=1024".into())
        );
        assert_eq!(with(|sb| put32(sb, S_FIRST_INO, 1025)).0, 0x454);
        assert_eq!(
            with(|sb| put16(sb, S_MIN_EXTRA_ISIZE, 129)),
            (0x55C, "s_min_extra_isize 129 out of range 0..=128".into())
        );
        assert_eq!(
            with(|sb| put16(sb, S_WANT_EXTRA_ISIZE, 200)),
            (0x55E, "s_want_extra_isize 200 out of range 0..=128".into())
        );
    }

    #[test]
    fn descriptors_and_flex() {
        assert_eq!(
            with(|sb| put16(sb, S_DESC_SIZE, 48)),
            (
                0x4FE,
                "s_desc_size 48 is not a power of two in 64..=1024".into()
            )
        );
        assert_eq!(with(|sb| put16(sb, S_DESC_SIZE, 2048)).0, 0x4FE);
        assert_eq!(
            with(|sb| put16(sb, S_RESERVED_GDT_BLOCKS, 257)),
            (
                0x4CE,
                "s_reserved_gdt_blocks 257 out of range 0..=256".into()
            )
        );
        assert_eq!(
            with(|sb| {
                put32(sb, S_FEATURE_INCOMPAT, INCOMPAT_64BIT | INCOMPAT_META_BG);
                put32(sb, S_FIRST_META_BG, 2);
            }),
            (0x504, "s_first_meta_bg 2 out of range 0..=1".into())
        );
        assert_eq!(
            with(|sb| sb[S_LOG_GROUPS_PER_FLEX] = 32),
            (0x574, "s_log_groups_per_flex 32 out of range 0..=31".into())
        );
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let mut sb = good();
        put32(&mut sb, S_BLOCKS_COUNT_LO, u32::MAX);
        // 2^54 - 1 blocks fill a 2^64-byte device; times 8192 inodes per group overflows.
        put32(&mut sb, S_BLOCKS_COUNT_HI, (1 << 22) - 1);
        put32(&mut sb, S_BLOCKS_PER_GROUP, 8);
        put32(&mut sb, S_CLUSTERS_PER_GROUP, 8);
        put32(&mut sb, S_INODES_PER_GROUP, 8192);
        assert_eq!(refused(&sb, u64::MAX).0, 0x400);
        assert_eq!(refused(&[], DEV).0, 0x414, "a short buffer reads as zeros");
    }
}
