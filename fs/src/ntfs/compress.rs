//! NTFS compressed streams: compression units and LZNT1.
//!
//! A compressed non-resident stream is cut into compression units of 16 clusters (the only
//! compression-unit size Windows writes: exponent 4, for clusters up to 4 KiB). In the run list a
//! unit whose clusters are all allocated is stored raw; a unit with allocated clusters followed by
//! sparse ones holds LZNT1 data in the allocated prefix; a fully sparse unit reads as zeroes.
//!
//! LZNT1 ([MS-XCA] 2.5): a sequence of chunks, each a 2-byte header (bits 0-11: chunk size minus 3,
//! bit 15: compressed) and data that expands to one 4 KiB block. Compressed data is groups of a
//! flag byte and eight items; a clear flag bit is a literal byte, a set bit a 16-bit back-reference
//! whose split between displacement and length depends on the position in the block.

/// Clusters per compression unit (`2^4`; Windows never writes another value).
pub(super) const UNIT_CLUSTERS: u64 = 16;
/// Largest cluster size Windows compresses with (NTFS compression needs clusters of at most 4 KiB).
pub(super) const MAX_COMPRESSED_CLUSTER: u32 = 4096;
/// [MS-XCA] 2.5: every chunk expands to at most this many bytes.
const CHUNK_OUT: usize = 4096;
/// [MS-XCA] 2.5.1.1: chunk header size-field mask and compressed flag.
const CHUNK_SIZE_MASK: u16 = 0x0fff;
const CHUNK_COMPRESSED: u16 = 0x8000;

/// Decompresses one LZNT1 compression unit from `input` into `out` (which the caller zeroed).
/// Chunk `i` fills `out[i*4096..]`; chunks past the end of `out` are an error. The error is a
/// detail for a `Corrupt` error, with offsets relative to `input`.
pub(super) fn lznt1_decompress(input: &[u8], out: &mut [u8]) -> Result<(), String> {
    let mut at = 0usize;
    let mut block = 0usize;
    while let Some(h) = input.get(at..at + 2) {
        let header = u16::from_le_bytes([h[0], h[1]]);
        if header == 0 {
            break;
        }
        let data_len = usize::from(header & CHUNK_SIZE_MASK) + 1;
        let start = at + 2;
        let data = input.get(start..start + data_len).ok_or_else(|| {
            format!(
                "lznt1 chunk at {at} of {data_len} bytes runs past the {}-byte unit",
                input.len()
            )
        })?;
        let base = block * CHUNK_OUT;
        let out_len = out.len();
        let dst = out
            .get_mut(base..(base + CHUNK_OUT).min(out_len))
            .filter(|d| !d.is_empty())
            .ok_or_else(|| format!("lznt1 chunk at {at} expands past the {out_len}-byte unit"))?;
        if header & CHUNK_COMPRESSED == 0 {
            let n = data.len().min(dst.len());
            // OK to slice: n is at most both lengths.
            dst[..n].copy_from_slice(&data[..n]);
        } else {
            decompress_chunk(data, dst).map_err(|e| format!("lznt1 chunk at {at}: {e}"))?;
        }
        at = start + data_len;
        block += 1;
    }
    Ok(())
}

fn decompress_chunk(data: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut p = 0usize;
    let mut pos = 0usize;
    let dst_len = dst.len();
    while p < data.len() {
        let flags = data[p];
        p += 1;
        for bit in 0..8 {
            if p >= data.len() {
                break;
            }
            if flags & (1 << bit) == 0 {
                let slot = dst
                    .get_mut(pos)
                    .ok_or_else(|| format!("literal past the {dst_len}-byte block"))?;
                *slot = data[p];
                p += 1;
                pos += 1;
                continue;
            }
            let t = data
                .get(p..p + 2)
                .ok_or("back-reference cut off at the end of the chunk")?;
            let token = u16::from_le_bytes([t[0], t[1]]);
            p += 2;
            // Displacement bits: 4 for the first 16 output bytes, one more per doubling.
            let mut disp_bits = 4u32;
            let mut i = pos.saturating_sub(1);
            while i >= 0x10 {
                disp_bits += 1;
                i >>= 1;
            }
            if disp_bits > 12 {
                return Err(format!("output position {pos} beyond a 4096-byte block"));
            }
            let offset = usize::from(token >> (16 - disp_bits)) + 1;
            let length = usize::from(token & (0xffff >> disp_bits)) + 3;
            if pos == 0 || offset > pos {
                return Err(format!(
                    "back-reference {offset} bytes before output position {pos}"
                ));
            }
            let end = pos + length;
            if end > dst.len() {
                return Err(format!(
                    "back-reference of {length} bytes at {pos} overflows the {}-byte block",
                    dst.len()
                ));
            }
            // Overlapping copies repeat the pattern, so copy byte by byte.
            for k in pos..end {
                dst[k] = dst[k - offset];
            }
            pos = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed chunk header for `data_len` bytes of data.
    fn header(data_len: usize, compressed: bool) -> [u8; 2] {
        let h = u16::try_from(data_len - 1).unwrap() | 0x3000 | if compressed { 0x8000 } else { 0 };
        h.to_le_bytes()
    }

    #[test]
    fn literals_and_back_references() {
        // "abcabcabcabc!": 3 literals, a back-reference (offset 3, length 9), a literal.
        // At position 3 the token has 4 displacement bits: ((3-1) << 12) | (9-3).
        let token: u16 = (2 << 12) | 6;
        let mut data = vec![0b0000_1000u8, b'a', b'b', b'c'];
        data.extend_from_slice(&token.to_le_bytes());
        data.push(b'!');
        let mut input = header(data.len(), true).to_vec();
        input.extend_from_slice(&data);
        input.extend_from_slice(&[0, 0]);
        let mut out = vec![0u8; 8192];
        lznt1_decompress(&input, &mut out).unwrap();
        assert_eq!(&out[..13], b"abcabcabcabc!");
        assert!(out[13..].iter().all(|&b| b == 0));
    }

    #[test]
    fn uncompressed_chunks_fill_blocks() {
        let mut input = header(4096, false).to_vec();
        input.extend_from_slice(&[7u8; 4096]);
        input.extend_from_slice(&header(1, false));
        input.push(9);
        let mut out = vec![0u8; 8192];
        lznt1_decompress(&input, &mut out).unwrap();
        assert!(out[..4096].iter().all(|&b| b == 7));
        assert_eq!(out[4096], 9);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let mut out = vec![0u8; 4096];
        // Chunk longer than the input.
        let input = header(100, true);
        assert_eq!(
            lznt1_decompress(&input, &mut out).unwrap_err(),
            "lznt1 chunk at 0 of 100 bytes runs past the 2-byte unit"
        );
        // Back-reference before any output.
        let mut input = header(3, true).to_vec();
        input.extend_from_slice(&[1, 0, 0]);
        assert_eq!(
            lznt1_decompress(&input, &mut out).unwrap_err(),
            "lznt1 chunk at 0: back-reference 1 bytes before output position 0"
        );
        // A second chunk when the unit has room for one block.
        let mut input = header(1, false).to_vec();
        input.push(1);
        input.extend_from_slice(&header(1, false));
        input.push(2);
        assert_eq!(
            lznt1_decompress(&input, &mut out).unwrap_err(),
            "lznt1 chunk at 3 expands past the 4096-byte unit"
        );
        // Cut-off token.
        let mut input = header(3, true).to_vec();
        input.extend_from_slice(&[0b10, b'a', 0]);
        assert_eq!(
            lznt1_decompress(&input, &mut out).unwrap_err(),
            "lznt1 chunk at 0: back-reference cut off at the end of the chunk"
        );
    }
}
