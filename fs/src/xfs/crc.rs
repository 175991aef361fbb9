//! CRC32c (Castagnoli), the checksum of v5 self-describing metadata.
//!
//! Spec: XFS Algorithms & Data Structures, "Metadata Checksumming": the checksum is a CRC32c over
//! the whole object with the checksum field treated as zero, stored little-endian.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

/// One byte's worth of table, built at compile time.
const TABLE: [u32; 256] = build_table();

const fn build_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0usize;
    while i < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "i < 256 fits in u32")]
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

fn update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        let idx = usize::from(crc.to_le_bytes()[0] ^ b);
        // OK to index: idx < 256 == TABLE.len().
        crc = (crc >> 8) ^ TABLE[idx];
    }
    crc
}

/// CRC32c of `buf` with the 4 bytes at `crc_offset` taken as zero, as XFS computes it.
///
/// Returns `None` if `crc_offset + 4` passes the end of `buf`.
pub(crate) fn xfs_cksum(buf: &[u8], crc_offset: usize) -> Option<u32> {
    let head = buf.get(..crc_offset)?;
    let tail = buf.get(crc_offset.checked_add(4)?..)?;
    let crc = update(!0, head);
    let crc = update(crc, &[0; 4]);
    Some(!update(crc, tail))
}

/// Whether the little-endian checksum stored at `crc_offset` in `buf` matches its contents.
pub(crate) fn verify(buf: &[u8], crc_offset: usize) -> bool {
    let Some(stored) = crc_offset
        .checked_add(4)
        .and_then(|end| buf.get(crc_offset..end))
    else {
        return false;
    };
    let mut le = [0u8; 4];
    le.copy_from_slice(stored);
    xfs_cksum(buf, crc_offset) == Some(u32::from_le_bytes(le))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // The standard CRC32c check value of "123456789" (RFC 3720, appendix B.4).
        assert_eq!(!update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn field_is_zeroed_and_bounds_are_checked() {
        let mut buf = *b"abcd\0\0\0\0efgh";
        let crc = xfs_cksum(&buf, 4).unwrap();
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(verify(&buf, 4));
        buf[0] ^= 1;
        assert!(!verify(&buf, 4));
        assert_eq!(xfs_cksum(&buf, 10), None);
        assert!(!verify(&buf, 11));
    }
}
