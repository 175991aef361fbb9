//! Hive bins and cells (spec "Hive bin" and "Cell").
//!
//! All bins are checked once when the hive is opened: each bin header must sit where the previous
//! bin ended, and the cells of each bin must tile it exactly. The start of every cell is recorded
//! in a bitmap, so later lookups refuse offsets that point into the middle of a cell (overlapping
//! structures are a classic way to build loops in hostile hives).

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout};

use crate::base_block::{BASE_BLOCK_SIZE, HBIN_ALIGN};
use crate::error::{Error, Result};

/// Size of a hive bin header (spec "Hive bin").
pub(crate) const HBIN_HEADER_SIZE: u32 = 32;
/// The hive bin signature.
pub(crate) const HBIN_SIGNATURE: [u8; 4] = *b"hbin";
/// Cells are 8-byte aligned and at least 8 bytes long, size field included (spec "Cell").
pub(crate) const CELL_ALIGN: u32 = 8;

/// The on-disk layout of a hive bin header.
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
pub(crate) struct RawHbinHeader {
    pub(crate) signature: [u8; 4],
    pub(crate) offset: U32,
    pub(crate) size: U32,
    pub(crate) reserved: [u8; 8],
    pub(crate) timestamp: U64,
    pub(crate) spare: U32,
}

/// File offset of an offset relative to the hive bins data, for error messages.
pub(crate) fn file_offset(rel: u32) -> u64 {
    u64::from(rel) + BASE_BLOCK_SIZE as u64
}

/// The validated bin and cell map of a hive's bins data.
#[derive(Debug, Clone)]
pub(crate) struct CellMap {
    /// One bit per 8-byte unit of the bins data: a cell starts here.
    starts: Vec<u64>,
    /// One bit per 8-byte unit: the cell starting here is allocated.
    allocated: Vec<u64>,
    /// Number of bins.
    pub(crate) bins: u32,
    /// Number of allocated cells.
    pub(crate) allocated_cells: u64,
}

fn bit(map: &[u64], unit: usize) -> bool {
    map.get(unit / 64)
        .is_some_and(|w| w & (1u64 << (unit % 64)) != 0)
}

fn set_bit(map: &mut [u64], unit: usize) {
    if let Some(w) = map.get_mut(unit / 64) {
        *w |= 1u64 << (unit % 64);
    }
}

fn clear_bit(map: &mut [u64], unit: usize) {
    if let Some(w) = map.get_mut(unit / 64) {
        *w &= !(1u64 << (unit % 64));
    }
}

impl CellMap {
    /// Checks every bin and cell of `bins` (the hive bins data, exactly `hive_bins_data_size` long).
    pub(crate) fn scan(bins: &[u8]) -> Result<Self> {
        let total = u32::try_from(bins.len())
            .map_err(|_| Error::unsupported("hive size", "hive bins data over 4 GiB"))?;
        let units = bins.len() / CELL_ALIGN as usize;
        let words = units.div_ceil(64);
        let mut map = Self {
            starts: vec![0; words],
            allocated: vec![0; words],
            bins: 0,
            allocated_cells: 0,
        };
        let mut at: u32 = 0;
        // Each iteration consumes at least 4096 bytes, so this ends after total/4096 bins.
        while at < total {
            let fo = file_offset(at);
            let rest = bins.get(at as usize..).unwrap_or_default();
            let (hdr, _) = RawHbinHeader::read_from_prefix(rest).map_err(|_| {
                Error::corrupt("hbin", fo, "header runs past the end of the hive bins data")
            })?;
            if hdr.signature != HBIN_SIGNATURE {
                return Err(Error::corrupt(
                    "hbin",
                    fo,
                    format!("signature {:02x?} is not \"hbin\"", hdr.signature),
                ));
            }
            if hdr.offset.get() != at {
                return Err(Error::corrupt(
                    "hbin",
                    fo,
                    format!(
                        "offset field {:#x} is not its position {at:#x}",
                        hdr.offset.get()
                    ),
                ));
            }
            let size = hdr.size.get();
            let end = at.checked_add(size).filter(|&e| e <= total);
            let end = match end {
                Some(e) if size >= HBIN_ALIGN && size.is_multiple_of(HBIN_ALIGN) => e,
                _ => {
                    return Err(Error::corrupt(
                        "hbin",
                        fo,
                        format!(
                            "size {size:#x} is not a non-zero multiple of 4096 within the \
                             {:#x} bytes left",
                            total - at
                        ),
                    ));
                }
            };
            map.scan_cells(bins, at + HBIN_HEADER_SIZE, end)?;
            map.bins += 1;
            at = end;
        }
        Ok(map)
    }

    fn scan_cells(&mut self, bins: &[u8], start: u32, end: u32) -> Result<()> {
        let mut at = start;
        // Each cell is at least 8 bytes, so this ends within (end - start) / 8 iterations.
        while at < end {
            let raw = read_i32(bins, at).ok_or_else(|| {
                Error::corrupt(
                    "cell",
                    file_offset(at),
                    "size field past the end of its bin",
                )
            })?;
            let size = raw.unsigned_abs();
            let fits = at.checked_add(size).is_some_and(|e| e <= end);
            if size < CELL_ALIGN || !size.is_multiple_of(CELL_ALIGN) || !fits {
                return Err(Error::corrupt(
                    "cell",
                    file_offset(at),
                    format!(
                        "size {raw} is not a multiple of 8 in 8..={} (the rest of its bin)",
                        end - at
                    ),
                ));
            }
            let unit = (at / CELL_ALIGN) as usize;
            set_bit(&mut self.starts, unit);
            if raw < 0 {
                set_bit(&mut self.allocated, unit);
                self.allocated_cells += 1;
            }
            at += size;
        }
        Ok(())
    }

    /// Records (for the writer) that a cell starts at `off`, allocated or free.
    pub(crate) fn set_cell(&mut self, off: u32, allocated: bool) {
        let unit = (off / CELL_ALIGN) as usize;
        set_bit(&mut self.starts, unit);
        let was = bit(&self.allocated, unit);
        if allocated {
            set_bit(&mut self.allocated, unit);
            if !was {
                self.allocated_cells += 1;
            }
        } else {
            clear_bit(&mut self.allocated, unit);
            if was {
                self.allocated_cells = self.allocated_cells.saturating_sub(1);
            }
        }
    }

    /// Records (for the writer) that no cell starts at `off` any more (merged into the cell
    /// before it).
    pub(crate) fn clear_cell(&mut self, off: u32) {
        let unit = (off / CELL_ALIGN) as usize;
        clear_bit(&mut self.starts, unit);
        clear_bit(&mut self.allocated, unit);
    }

    /// Makes room for bins data of `len` bytes (after the writer appended a bin).
    pub(crate) fn grow(&mut self, len: usize) {
        let words = (len / CELL_ALIGN as usize).div_ceil(64);
        if words > self.starts.len() {
            self.starts.resize(words, 0);
            self.allocated.resize(words, 0);
        }
    }

    /// The offsets of all free cells, in order.
    pub(crate) fn free_cells(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, (s, a)) in self.starts.iter().zip(&self.allocated).enumerate() {
            let mut free = s & !a;
            while free != 0 {
                let b = free.trailing_zeros() as usize;
                free &= free - 1;
                // Bins data is under 4 GiB (checked by `scan`), so the offset fits.
                if let Ok(off) = u32::try_from((i * 64 + b) * CELL_ALIGN as usize) {
                    out.push(off);
                }
            }
        }
        out
    }

    /// Returns the data of the allocated cell at `off` (relative to the bins data), without the
    /// size field. `what` names the structure expected there, for errors.
    pub(crate) fn cell<'a>(
        &self,
        bins: &'a [u8],
        off: u32,
        what: &'static str,
    ) -> Result<&'a [u8]> {
        let unit = (off / CELL_ALIGN) as usize;
        if !off.is_multiple_of(CELL_ALIGN) || !bit(&self.starts, unit) {
            return Err(Error::corrupt(
                what,
                file_offset(off),
                format!("offset {off:#x} is not the start of a cell"),
            ));
        }
        if !bit(&self.allocated, unit) {
            return Err(Error::corrupt(
                what,
                file_offset(off),
                format!("cell {off:#x} is free, not allocated"),
            ));
        }
        // The scan proved the cell lies within its bin, so these reads succeed; map to an error
        // anyway rather than unwrap.
        let size = read_i32(bins, off).map(i32::unsigned_abs).unwrap_or(0);
        let data = bins
            .get(off as usize + 4..off as usize + size as usize)
            .ok_or_else(|| Error::corrupt(what, file_offset(off), "cell past end of data"))?;
        Ok(data)
    }
}

/// Reads a little-endian i32 at `at`.
pub(crate) fn read_i32(buf: &[u8], at: u32) -> Option<i32> {
    let at = at as usize;
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a little-endian u16 at `at`.
pub(crate) fn le_u16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Reads a little-endian u32 at `at`.
pub(crate) fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(size: u32, at: u32, cells: &[i32]) -> Vec<u8> {
        let mut b = vec![0u8; size as usize];
        b[..4].copy_from_slice(b"hbin");
        b[4..8].copy_from_slice(&at.to_le_bytes());
        b[8..12].copy_from_slice(&size.to_le_bytes());
        let mut p = 32usize;
        for c in cells {
            b[p..p + 4].copy_from_slice(&c.to_le_bytes());
            p += c.unsigned_abs() as usize;
        }
        b
    }

    fn corrupt(bins: &[u8]) -> (&'static str, u64, String) {
        let e = CellMap::scan(bins).unwrap_err();
        let c = e.as_corrupt().expect("corrupt");
        (c.structure(), c.offset(), c.detail().to_owned())
    }

    #[test]
    fn good_bins_and_cell_lookup() {
        let mut data = bin(4096, 0, &[-16, 4096 - 32 - 16]);
        data.extend(bin(8192, 4096, &[-8192 + 32]));
        let map = CellMap::scan(&data).unwrap();
        assert_eq!(map.bins, 2);
        assert_eq!(map.allocated_cells, 2);
        assert_eq!(map.cell(&data, 32, "x").unwrap().len(), 12);
        assert_eq!(
            map.cell(&data, 4096 + 32, "x").unwrap().len(),
            8192 - 32 - 4
        );
        let e = map.cell(&data, 40, "nk cell").unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt nk cell at file offset 0x1028: offset 0x28 is not the start of a cell"
        );
        let e = map.cell(&data, 48, "nk cell").unwrap_err();
        assert!(e.to_string().ends_with("cell 0x30 is free, not allocated"));
        assert!(map.cell(&data, 1 << 30, "x").is_err());
    }

    #[test]
    fn each_bin_validation_branch() {
        let mut d = bin(4096, 0, &[4064]);
        d[0] = b'x';
        assert!(corrupt(&d).2.contains("signature"));

        let d = bin(4096, 4096, &[4064]);
        assert_eq!(corrupt(&d).2, "offset field 0x1000 is not its position 0x0");

        let d = bin(8192, 0, &[4064]);
        let d = &d[..4096];
        assert_eq!(corrupt(d).0, "hbin");
        assert!(corrupt(d).2.starts_with("size 0x2000"));

        let mut d = bin(4096, 0, &[4064]);
        d[8..12].copy_from_slice(&100u32.to_le_bytes());
        assert!(corrupt(&d).2.starts_with("size 0x64"));

        let d = bin(4096, 0, &[-12, 4052]);
        let (s, off, detail) = corrupt(&d);
        assert_eq!((s, off), ("cell", 0x1020));
        assert_eq!(
            detail,
            "size -12 is not a multiple of 8 in 8..=4064 (the rest of its bin)"
        );

        let d = bin(4096, 0, &[0]);
        assert_eq!(corrupt(&d).0, "cell");

        let d = bin(4096, 0, &[8192]);
        assert_eq!(corrupt(&d).0, "cell");

        let d = bin(4096, 0, &[i32::MIN]);
        assert_eq!(corrupt(&d).0, "cell");

        assert!(corrupt(&[0u8; 10]).2.contains("header runs past"));
    }
}
