//! A writer for an empty Windows registry hive ("regf" file), which `hivexregedit --merge` then fills.
//!
//! Layout after the public regf format description (base block, hive bins, cells), e.g. the
//! "Windows registry file format specification" by Maxim Suhanov:
//! - base block: 4096 bytes, signature `regf`, sequence numbers, version 1.5, root cell offset,
//!   hive-bins data size, and an XOR checksum of its first 508 bytes stored at offset 508;
//! - one hive bin (`hbin`, 4096 bytes, 32-byte header) holding the root key node (`nk`), one security
//!   cell (`sk`) that the root key references (hivex copies a parent's `sk` to each new key) and one
//!   free cell covering the rest of the bin.

/// Size of the base block (spec: "Base block", 4096 bytes).
const BASE_BLOCK_SIZE: usize = 4096;
/// Size of our single hive bin; bins are multiples of 4096 bytes (spec: "Hive bin").
const HBIN_SIZE: usize = 4096;
/// Size of the hive bin header (spec: "Hive bin header", 32 bytes).
const HBIN_HEADER_SIZE: usize = 32;
/// Offset of the checksum field in the base block (spec: "Base block", offset 508).
const CHECKSUM_OFFSET: usize = 508;
/// Key node flags of a hive's root key: KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME (spec: "Key node").
const ROOT_KEY_FLAGS: u16 = 0x0004 | 0x0008 | 0x0020;
/// "No cell" marker for absent lists (spec: "Key node", 0xFFFFFFFF).
const NO_CELL: u32 = 0xFFFF_FFFF;
/// A fixed FILETIME (2023-11-14 22:13:20 UTC) so the output does not depend on the clock.
const FIXED_FILETIME: u64 = 133_444_736_000_000_000;
/// Self-relative security descriptor: revision 1, control SE_SELF_RELATIVE | SE_DACL_PRESENT, and
/// every offset zero (a NULL DACL, "everyone full access"): the smallest descriptor Windows accepts.
const SECURITY_DESCRIPTOR: [u8; 20] = [
    1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_i32(buf: &mut [u8], at: usize, v: i32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Rounds a cell size up to the 8-byte cell alignment (spec: "Cell").
fn cell_size(data_len: usize) -> usize {
    (4 + data_len).div_ceil(8) * 8
}

/// Converts a size that is at most [`HBIN_SIZE`] by construction.
fn small(v: usize) -> u32 {
    // OK to expect: every offset and size here is below HBIN_SIZE + BASE_BLOCK_SIZE.
    u32::try_from(v).expect("hive layout offsets are below 8 KiB")
}

/// XOR of the first 127 little-endian dwords, with 0 and 0xFFFFFFFF remapped (spec: "Base block").
pub(crate) fn base_block_checksum(block: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in block[..CHECKSUM_OFFSET].chunks_exact(4) {
        // OK to unwrap: chunks_exact(4) yields 4-byte slices.
        sum ^= u32::from_le_bytes(chunk.try_into().unwrap());
    }
    match sum {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        s => s,
    }
}

/// Returns an empty hive whose root key is named `root_name` (ASCII, e.g. `ROOT` or
/// `BCD00000000`); `file_name` fills the informational file-name field (e.g.
/// `\SystemRoot\System32\Config\SYSTEM`, only its last 31 UTF-16 units are kept).
///
/// # Panics
/// If `root_name` is longer than 255 bytes or not ASCII (builder bug, not input data).
pub(crate) fn empty_hive(root_name: &str, file_name: &str) -> Vec<u8> {
    assert!(
        root_name.is_ascii() && root_name.len() <= 255,
        "root key name must be short ascii"
    );
    let mut out = vec![0u8; BASE_BLOCK_SIZE + HBIN_SIZE];

    // Cells, as offsets relative to the start of the hive-bins data (spec: "Cell index").
    let nk_at = HBIN_HEADER_SIZE;
    let nk_len = cell_size(76 + root_name.len());
    let sk_at = nk_at + nk_len;
    let sk_len = cell_size(20 + SECURITY_DESCRIPTOR.len());
    let free_at = sk_at + sk_len;

    let (base, bins) = out.split_at_mut(BASE_BLOCK_SIZE);

    // Hive bin header.
    bins[0..4].copy_from_slice(b"hbin");
    put_u32(bins, 4, 0);
    put_u32(bins, 8, small(HBIN_SIZE));
    put_u64(bins, 20, FIXED_FILETIME);

    // Root key node.
    put_i32(bins, nk_at, -i32::try_from(nk_len).unwrap_or(i32::MAX));
    let nk = nk_at + 4;
    bins[nk..nk + 2].copy_from_slice(b"nk");
    put_u16(bins, nk + 2, ROOT_KEY_FLAGS);
    put_u64(bins, nk + 4, FIXED_FILETIME);
    put_u32(bins, nk + 16, NO_CELL); // parent: none for the root
    put_u32(bins, nk + 28, NO_CELL); // subkeys list
    put_u32(bins, nk + 32, NO_CELL); // volatile subkeys list
    put_u32(bins, nk + 40, NO_CELL); // values list
    put_u32(bins, nk + 44, small(sk_at));
    put_u32(bins, nk + 48, NO_CELL); // class name
    // OK to unwrap: asserted above that the name is at most 255 bytes.
    put_u16(bins, nk + 72, u16::try_from(root_name.len()).unwrap());
    bins[nk + 76..nk + 76 + root_name.len()].copy_from_slice(root_name.as_bytes());

    // Security cell, a one-element circular list referenced once.
    put_i32(bins, sk_at, -i32::try_from(sk_len).unwrap_or(i32::MAX));
    let sk = sk_at + 4;
    bins[sk..sk + 2].copy_from_slice(b"sk");
    put_u32(bins, sk + 4, small(sk_at)); // flink
    put_u32(bins, sk + 8, small(sk_at)); // blink
    put_u32(bins, sk + 12, 1); // reference count
    put_u32(bins, sk + 16, small(SECURITY_DESCRIPTOR.len()));
    bins[sk + 20..sk + 20 + SECURITY_DESCRIPTOR.len()].copy_from_slice(&SECURITY_DESCRIPTOR);

    // One free cell (positive size) for the rest of the bin.
    put_i32(
        bins,
        free_at,
        i32::try_from(HBIN_SIZE - free_at).unwrap_or(i32::MAX),
    );

    // Base block.
    base[0..4].copy_from_slice(b"regf");
    put_u32(base, 4, 1); // primary sequence number
    put_u32(base, 8, 1); // secondary sequence number (equal: the hive is clean)
    put_u64(base, 12, FIXED_FILETIME);
    put_u32(base, 20, 1); // major version
    put_u32(base, 24, 5); // minor version
    put_u32(base, 28, 0); // file type: primary
    put_u32(base, 32, 1); // file format: direct memory load
    put_u32(base, 36, small(nk_at));
    put_u32(base, 40, small(HBIN_SIZE));
    put_u32(base, 44, 1); // clustering factor
    let units: Vec<u16> = file_name.encode_utf16().collect();
    let keep = &units[units.len().saturating_sub(31)..];
    for (i, u) in keep.iter().enumerate() {
        put_u16(base, 48 + 2 * i, *u);
    }
    let sum = base_block_checksum(base);
    put_u32(base, CHECKSUM_OFFSET, sum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_hive_layout() {
        let h = empty_hive("ROOT", "\\SystemRoot\\System32\\Config\\SYSTEM");
        assert_eq!(h.len(), 8192);
        assert_eq!(&h[0..4], b"regf");
        assert_eq!(&h[4096..4100], b"hbin");
        let root = u32::from_le_bytes(h[36..40].try_into().unwrap());
        assert_eq!(root, 32);
        assert_eq!(&h[4096 + 32 + 4..4096 + 32 + 6], b"nk");
        assert_eq!(&h[4096 + 32 + 4 + 76..4096 + 32 + 4 + 80], b"ROOT");
        let stored = u32::from_le_bytes(h[508..512].try_into().unwrap());
        assert_eq!(stored, base_block_checksum(&h[..4096]));
    }

    #[test]
    fn checksum_remaps_zero() {
        let block = vec![0u8; 4096];
        assert_eq!(base_block_checksum(&block), 1);
        let mut ones = vec![0u8; 4096];
        ones[0..4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(base_block_checksum(&ones), 0xFFFF_FFFE);
    }
}
