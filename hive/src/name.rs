//! Key and value names: decoding and case-insensitive comparison.

use std::cmp::Ordering;

/// Decodes a name stored either "compressed" (one byte per character: Latin-1, which Windows
/// calls ASCII here; spec "Key node" flag `KEY_COMP_NAME`) or as UTF-16LE. Unpaired surrogates
/// become U+FFFD: names are for display and lookup, never written back from this string.
pub(crate) fn decode(raw: &[u8], compressed: bool) -> String {
    if compressed {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    }
}

/// Decodes UTF-16LE (odd trailing byte ignored), lossy.
pub(crate) fn utf16le(raw: &[u8]) -> String {
    decode(raw, false)
}

/// Upper-cases one character the way the registry compares names: a simple one-to-one mapping,
/// so characters whose upper case is several characters (such as `ß`) stay as they are.
pub(crate) fn upcase(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Compares two names case-insensitively, as the registry orders subkeys.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    a.chars().map(upcase).cmp(b.chars().map(upcase))
}

/// True if two names are equal ignoring case.
pub(crate) fn eq(a: &str, b: &str) -> bool {
    compare(a, b) == Ordering::Equal
}

/// The hash stored in "lh" lists (spec "Hash leaf", note): 37·H + C over the upper-cased UTF-16
/// code units of the name.
pub(crate) fn lh_hash(name: &str) -> u32 {
    let upper: String = name.chars().map(upcase).collect();
    upper
        .encode_utf16()
        .fold(0u32, |h, c| h.wrapping_mul(37).wrapping_add(u32::from(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_folding() {
        assert_eq!(decode(b"Select", true), "Select");
        assert_eq!(decode(&[0xe9], true), "é");
        assert_eq!(decode(&[0x41, 0, 0x42, 0], false), "AB");
        assert_eq!(decode(&[0x00, 0xd8], false), "\u{fffd}");
        assert!(eq("controlset001", "ControlSet001"));
        assert!(eq("ÉTÉ", "été"));
        assert!(!eq("a", "ab"));
        assert_eq!(upcase('ß'), 'ß');
        assert_eq!(compare("a", "B"), Ordering::Less);
        assert_eq!(lh_hash("a"), u32::from(b'A'));
        assert_eq!(lh_hash("ab"), 37 * 65 + 66);
    }
}
