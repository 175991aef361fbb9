//! Subkey lists: "li", "lf", "lh" leaves and the "ri" index root (spec "Index leaf", "Fast leaf",
//! "Hash leaf", "Index root").

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::hbin::{file_offset, le_u16, le_u32};
use crate::hive::Hive;

/// Largest number of subkeys one key may have here (a limit of this library; Windows has no
/// documented limit, real keys hold at most tens of thousands).
pub const MAX_SUBKEYS_PER_KEY: u32 = 1 << 20;

/// Smallest possible key node cell.
const MIN_NK_CELL: u32 = 80;

/// Returns the key node offsets listed at `list`, checking there are exactly `expected` of them.
pub(crate) fn subkey_offsets(hive: &Hive, list: u32, expected: u32) -> Result<Vec<u32>> {
    if expected == 0 {
        return Ok(Vec::new());
    }
    if expected > MAX_SUBKEYS_PER_KEY {
        return Err(Error::unsupported(
            "subkeys",
            format!("{expected} subkeys in one key, more than the limit of {MAX_SUBKEYS_PER_KEY}"),
        ));
    }
    // Each subkey needs its own key node cell of at least 80 bytes (4-byte size + 76-byte
    // fixed part), so a count beyond that cannot be honest; checking it first keeps a tiny
    // hive from making us allocate for a million entries.
    let fits = hive.base_block().hive_bins_data_size / MIN_NK_CELL;
    if expected > fits {
        return Err(Error::corrupt(
            "subkey list",
            file_offset(list),
            format!("subkey count {expected} is more than the {fits} key nodes the hive can hold"),
        ));
    }
    let mut out = Vec::new();
    collect(hive, list, expected, true, &mut out)?;
    // Lists that name one key node twice (directly or through shared leaves under an index
    // root) would multiply the work of every walk.
    let mut seen = HashSet::with_capacity(out.len());
    if let Some(dup) = out.iter().find(|o| !seen.insert(**o)) {
        return Err(Error::corrupt(
            "subkey list",
            file_offset(list),
            format!("key node {dup:#x} is listed twice"),
        ));
    }
    if out.len() != expected as usize {
        return Err(Error::corrupt(
            "subkey list",
            file_offset(list),
            format!("lists {} subkeys, the key node says {expected}", out.len()),
        ));
    }
    Ok(out)
}

/// Appends the entries of one list. An index root may point to leaves only (spec "Index root",
/// notes 1 and 2), so the recursion is at most one level deep.
fn collect(hive: &Hive, off: u32, expected: u32, root_ok: bool, out: &mut Vec<u32>) -> Result<()> {
    let fo = file_offset(off);
    let cell = hive.cell(off, "subkey list")?;
    let sig = cell.get(..2).unwrap_or_default();
    let count = le_u16(cell, 2)
        .ok_or_else(|| Error::corrupt("subkey list", fo, "cell shorter than 4 bytes"))?;
    let stride = match sig {
        b"lf" | b"lh" => 8,
        b"li" | b"ri" => 4,
        _ => {
            return Err(Error::corrupt(
                "subkey list",
                fo,
                format!("signature {sig:02x?} is not one of \"lf\", \"lh\", \"li\", \"ri\""),
            ));
        }
    };
    let need = 4 + usize::from(count) * stride;
    if cell.len() < need {
        return Err(Error::corrupt(
            "subkey list",
            fo,
            format!(
                "{count} entries need {need} bytes, the cell holds {}",
                cell.len()
            ),
        ));
    }
    let is_root = sig == b"ri";
    if is_root && !root_ok {
        return Err(Error::corrupt(
            "subkey list",
            fo,
            "index root points to another index root",
        ));
    }
    for i in 0..usize::from(count) {
        // In bounds: checked against `need` above.
        let entry = le_u32(cell, 4 + i * stride).unwrap_or(u32::MAX);
        if is_root {
            collect(hive, entry, expected, false, out)?;
        } else {
            if out.len() >= expected as usize {
                return Err(Error::corrupt(
                    "subkey list",
                    fo,
                    format!("lists more subkeys than the key node's count of {expected}"),
                ));
            }
            out.push(entry);
        }
    }
    Ok(())
}
