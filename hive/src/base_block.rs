//! The base block (file header) of a primary hive file (spec "Format of primary files / Base block").

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::error::{Error, Result};

/// Size of the base block; the hive bins data starts right after it (spec "Base block").
pub const BASE_BLOCK_SIZE: usize = 4096;
/// The base block signature.
pub(crate) const REGF_SIGNATURE: [u8; 4] = *b"regf";
/// The checksum covers the first 508 bytes (spec "Base block", note 2).
pub(crate) const CHECKSUM_COVERED: usize = 508;
/// Only major version 1 exists.
pub(crate) const MAJOR_VERSION: u32 = 1;
/// Minor versions written by NT 3.1 (2) up to Windows 10/11 (5, 6 in some builds).
pub(crate) const MINOR_VERSIONS: std::ops::RangeInclusive<u32> = 2..=6;
/// File type 0: primary file. 1 and 6 are old- and new-format transaction logs.
pub(crate) const FILE_TYPE_PRIMARY: u32 = 0;
/// File type of an old-format (Windows XP/Vista/7) transaction log.
pub(crate) const FILE_TYPE_LOG_OLD: u32 = 1;
/// File type of a new-format (Windows 8.1+) transaction log.
pub(crate) const FILE_TYPE_LOG_NEW: u32 = 6;
/// File format 1: "direct memory load", the only one used on disk.
pub(crate) const FILE_FORMAT_DIRECT: u32 = 1;
/// Hive bins are made of 4 KiB blocks (spec "Hive bin", note 1).
pub(crate) const HBIN_ALIGN: u32 = 4096;

/// The on-disk layout of the first 512 bytes of the base block (spec "Base block").
#[derive(FromBytes, KnownLayout, Immutable, Clone)]
#[repr(C)]
pub(crate) struct RawBaseBlock {
    pub(crate) signature: [u8; 4],
    pub(crate) primary_sequence: U32,
    pub(crate) secondary_sequence: U32,
    pub(crate) last_written: U64,
    pub(crate) major_version: U32,
    pub(crate) minor_version: U32,
    pub(crate) file_type: U32,
    pub(crate) file_format: U32,
    pub(crate) root_cell_offset: U32,
    pub(crate) hive_bins_data_size: U32,
    pub(crate) clustering_factor: U32,
    pub(crate) file_name: [u8; 64],
    pub(crate) reserved: [u8; 396],
    pub(crate) checksum: U32,
}

/// The XOR-32 checksum of the first 508 bytes, with the two values Windows avoids remapped
/// (0 becomes 1 and 0xffffffff becomes 0xfffffffe).
pub(crate) fn checksum(block: &[u8]) -> u32 {
    let covered = block.get(..CHECKSUM_COVERED).unwrap_or(block);
    let sum = covered.chunks_exact(4).fold(0u32, |acc, c| {
        // chunks_exact yields 4-byte slices, so the array conversion cannot fail.
        acc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])
    });
    match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        s => s,
    }
}

/// A validated base block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBlock {
    /// Incremented when a write starts.
    pub primary_sequence: u32,
    /// Incremented when a write ends; equal to `primary_sequence` in a clean hive.
    pub secondary_sequence: u32,
    /// FILETIME of the last write.
    pub last_written: u64,
    /// Major version (always 1).
    pub major_version: u32,
    /// Minor version (2..=6).
    pub minor_version: u32,
    /// Offset of the root key node, relative to the hive bins data.
    pub root_cell_offset: u32,
    /// Size of the hive bins data in bytes, a multiple of 4096.
    pub hive_bins_data_size: u32,
    /// The stored checksum.
    pub checksum: u32,
    /// Whether the stored checksum matches the computed one.
    pub checksum_ok: bool,
    /// The hive's file name as recorded by Windows (such as `\SystemRoot\System32\Config\SYSTEM`).
    pub file_name: String,
}

impl BaseBlock {
    /// Validates a base block; `expected_type` is the file type to accept.
    pub(crate) fn parse(bytes: &[u8], expected_type: u32) -> Result<Self> {
        let (raw, _) = RawBaseBlock::read_from_prefix(bytes).map_err(|_| {
            Error::corrupt(
                "base block",
                0,
                format!(
                    "file is {} bytes, shorter than a 512-byte base block",
                    bytes.len()
                ),
            )
        })?;
        if raw.signature != REGF_SIGNATURE {
            return Err(Error::corrupt(
                "base block",
                0,
                format!("signature {:02x?} is not \"regf\"", raw.signature),
            ));
        }
        let major = raw.major_version.get();
        let minor = raw.minor_version.get();
        if major != MAJOR_VERSION || !MINOR_VERSIONS.contains(&minor) {
            return Err(Error::unsupported(
                "hive version",
                format!("{major}.{minor} not in 1.2..=1.6"),
            ));
        }
        let file_type = raw.file_type.get();
        if file_type != expected_type {
            let what = match file_type {
                FILE_TYPE_PRIMARY => "a primary hive file",
                FILE_TYPE_LOG_OLD => "an old-format transaction log",
                FILE_TYPE_LOG_NEW => "a new-format transaction log",
                _ => "of an unknown kind",
            };
            return Err(Error::unsupported(
                "hive file type",
                format!("file type {file_type} ({what}) where {expected_type} was expected"),
            ));
        }
        let format = raw.file_format.get();
        if format != FILE_FORMAT_DIRECT {
            return Err(Error::unsupported(
                "hive file format",
                format!("file format {format} is not 1 (direct memory load)"),
            ));
        }
        let size = raw.hive_bins_data_size.get();
        if !size.is_multiple_of(HBIN_ALIGN) {
            return Err(Error::corrupt(
                "base block",
                40,
                format!("hive bins data size {size:#x} is not a multiple of 4096"),
            ));
        }
        let computed = checksum(bytes);
        let units: Vec<u16> = raw
            .file_name
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Ok(Self {
            primary_sequence: raw.primary_sequence.get(),
            secondary_sequence: raw.secondary_sequence.get(),
            last_written: raw.last_written.get(),
            major_version: major,
            minor_version: minor,
            root_cell_offset: raw.root_cell_offset.get(),
            hive_bins_data_size: size,
            checksum: raw.checksum.get(),
            checksum_ok: computed == raw.checksum.get(),
            file_name: String::from_utf16_lossy(&units),
        })
    }

    /// The last path component of the recorded file name, for messages.
    pub(crate) fn short_name(&self) -> String {
        let name = self
            .file_name
            .rsplit('\\')
            .next()
            .unwrap_or_default()
            .trim();
        if name.is_empty() {
            "(unnamed)".to_owned()
        } else {
            name.to_owned()
        }
    }

    /// True if the hive has pending log data (spec "Dirty state of a hive").
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        !self.checksum_ok || self.primary_sequence != self.secondary_sequence
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Rewrites the checksum of a base block in place.
    pub(crate) fn fix_checksum(block: &mut [u8]) {
        let c = checksum(block);
        block[508..512].copy_from_slice(&c.to_le_bytes());
    }

    fn good() -> Vec<u8> {
        crate::testkit::HiveBuilder::new().build()[..BASE_BLOCK_SIZE].to_vec()
    }

    fn corrupt_of(bytes: &[u8]) -> (&'static str, u64, String) {
        match BaseBlock::parse(bytes, FILE_TYPE_PRIMARY) {
            Err(Error::Corrupt(c)) => (c.structure(), c.offset(), c.detail().to_owned()),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn good_block_parses_field_by_field() {
        let b = BaseBlock::parse(&good(), FILE_TYPE_PRIMARY).unwrap();
        assert_eq!(b.primary_sequence, 1);
        assert_eq!(b.secondary_sequence, 1);
        assert_eq!(b.major_version, 1);
        assert_eq!(b.minor_version, 5);
        // The builder puts the 48-byte security cell first, then the root key node.
        assert_eq!(b.root_cell_offset, 0x50);
        assert_eq!(b.hive_bins_data_size % 4096, 0);
        assert!(b.checksum_ok);
        assert!(!b.is_dirty());
        assert_eq!(b.short_name(), "SYSTEM");
    }

    #[test]
    fn each_validation_branch() {
        let mut b = good();
        b[0] = b'x';
        assert_eq!(corrupt_of(&b).0, "base block");
        assert!(corrupt_of(&b).2.contains("signature"));

        assert!(corrupt_of(&good()[..100]).2.contains("shorter than"));

        let mut b = good();
        b[24..28].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(
            BaseBlock::parse(&b, FILE_TYPE_PRIMARY)
                .unwrap_err()
                .to_string(),
            "unsupported hive version: 1.9 not in 1.2..=1.6"
        );

        let mut b = good();
        b[28..32].copy_from_slice(&6u32.to_le_bytes());
        assert_eq!(
            BaseBlock::parse(&b, FILE_TYPE_PRIMARY)
                .unwrap_err()
                .to_string(),
            "unsupported hive file type: file type 6 (a new-format transaction log) where 0 was \
             expected"
        );

        let mut b = good();
        b[32..36].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            BaseBlock::parse(&b, FILE_TYPE_PRIMARY),
            Err(Error::Unsupported(_))
        ));

        let mut b = good();
        b[40..44].copy_from_slice(&0x1001u32.to_le_bytes());
        assert_eq!(corrupt_of(&b).1, 40);

        let mut b = good();
        b[4] ^= 1;
        let p = BaseBlock::parse(&b, FILE_TYPE_PRIMARY).unwrap();
        assert!(!p.checksum_ok);
        assert!(p.is_dirty());
        fix_checksum(&mut b);
        let p = BaseBlock::parse(&b, FILE_TYPE_PRIMARY).unwrap();
        assert!(p.checksum_ok);
        assert!(p.is_dirty());
    }

    #[test]
    fn checksum_remaps_zero_and_all_ones() {
        assert_eq!(checksum(&[0u8; 512]), 1);
        let mut b = [0u8; 512];
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(checksum(&b), u32::MAX - 1);
    }
}
