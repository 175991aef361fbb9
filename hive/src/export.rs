//! Walking a subtree, and exporting it as a "Windows Registry Editor Version 5.00" .reg text.
//!
//! The .reg text is written here rather than through `regashii` because `regashii`'s value kinds
//! are a `u8`, and real hives hold types such as `0xffff0012` (device properties) that .reg files
//! spell `hex(ffff0012):`. The tests parse our output with `regashii` where it can.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::hbin::file_offset;
use crate::hive::MAX_KEY_DEPTH;
use crate::key_node::Key;
use crate::key_value::{Value, ValueType};

/// Export output allowed regardless of hive size.
const EXPORT_FIXED_ALLOWANCE: usize = 64 << 20;
/// Export output allowed per byte of hive (hex text is about 3.1 bytes per data byte, and key
/// paths repeat); past that the hive is assumed to share cells to blow the output up.
const EXPORT_BYTES_PER_HIVE_BYTE: usize = 16;
/// regedit starts a new line once a hex line passes this many characters.
const REG_LINE_WRAP: usize = 76;
/// The first line of a .reg file.
pub const REG_HEADER: &str = "Windows Registry Editor Version 5.00";

impl<'h> Key<'h> {
    /// Visits this key and every key below it, depth first, parents before children, subkeys in
    /// hive order. `f` gets the path relative to this key (`""` for this key itself, then
    /// `Sub\Child`...). Each key node is visited at most once: a hive whose lists reach the same
    /// key node twice (a loop or a shared subtree) is corrupt.
    ///
    /// Returns the number of keys visited.
    ///
    /// # Errors
    /// `Corrupt` on damage, on a key node reached twice, or on paths deeper than
    /// [`MAX_KEY_DEPTH`]; any error `f` returns.
    pub fn walk(&self, mut f: impl FnMut(&str, &Key<'h>) -> Result<()>) -> Result<u64> {
        let mut seen: HashSet<u32> = HashSet::new();
        let mut stack: Vec<(String, usize, Key<'h>)> = vec![(String::new(), 0, self.clone())];
        let mut visited = 0u64;
        // Each iteration visits a key node never seen before, so this ends after at most
        // (allocated cells) iterations.
        while let Some((path, depth, key)) = stack.pop() {
            if !seen.insert(key.offset()) {
                return Err(Error::corrupt(
                    "nk cell",
                    file_offset(key.offset()),
                    format!("key node {path:?} is reached twice (a loop or a shared subtree)"),
                ));
            }
            if depth > MAX_KEY_DEPTH {
                return Err(Error::corrupt(
                    "nk cell",
                    file_offset(key.offset()),
                    format!("key {path:?} is deeper than the limit of {MAX_KEY_DEPTH} levels"),
                ));
            }
            f(&path, &key)?;
            visited += 1;
            let children = key.subkeys()?;
            for child in children.into_iter().rev() {
                let child_path = if path.is_empty() {
                    child.name().to_owned()
                } else {
                    format!("{path}\\{}", child.name())
                };
                stack.push((child_path, depth + 1, child));
            }
        }
        Ok(visited)
    }

    /// Exports this key and its subtree as .reg text (UTF-8; regedit writes the same text in
    /// UTF-16LE). `hive_prefix` is the full name to print for this key, such as
    /// `HKEY_LOCAL_MACHINE\SYSTEM` for a SYSTEM hive's root, and subkeys are printed below it.
    /// Strings are written as `"text"` when that round-trips exactly, other values as `hex(N):`
    /// bytes wrapped like regedit does.
    ///
    /// # Errors
    /// As for [`Key::walk`] and [`Key::values`]; `Corrupt` if the output grows past a bound
    /// proportional to the hive size.
    pub fn export_reg(&self, hive_prefix: &str) -> Result<String> {
        let limit = EXPORT_FIXED_ALLOWANCE.saturating_add(
            self.hive()
                .as_bytes()
                .len()
                .saturating_mul(EXPORT_BYTES_PER_HIVE_BYTE),
        );
        let mut out = String::new();
        out.push_str(REG_HEADER);
        out.push('\n');
        self.walk(|path, key| {
            out.push_str("\n[");
            out.push_str(hive_prefix);
            if !path.is_empty() {
                if !hive_prefix.is_empty() {
                    out.push('\\');
                }
                out.push_str(path);
            }
            out.push_str("]\n");
            for v in key.values()? {
                write_value(&mut out, &v);
            }
            if out.len() > limit {
                return Err(Error::corrupt(
                    "nk cell",
                    file_offset(key.offset()),
                    format!("export output passes the limit of {limit} bytes"),
                ));
            }
            Ok(())
        })?;
        Ok(out)
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The string of `data` if it is exactly a UTF-16LE string plus one NUL and has no characters
/// that a quoted .reg string cannot carry.
fn plain_string(data: &[u8]) -> Option<String> {
    if !data.len().is_multiple_of(2) {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let (last, body) = units.split_last()?;
    if *last != 0 {
        return None;
    }
    let s = String::from_utf16(body).ok()?;
    (!s.contains(['\0', '\r', '\n'])).then_some(s)
}

/// Appends one `name=data` line (with continuations) for `v`.
pub(crate) fn write_value(out: &mut String, v: &Value) {
    let line_start = out.len();
    if v.name.is_empty() {
        out.push('@');
    } else {
        out.push('"');
        out.push_str(&escape(&v.name));
        out.push('"');
    }
    out.push('=');
    match v.kind {
        ValueType::Sz => {
            if let Some(s) = plain_string(&v.data) {
                out.push('"');
                out.push_str(&escape(&s));
                out.push_str("\"\n");
                return;
            }
        }
        ValueType::Dword => {
            if let Some(d) = v.as_dword() {
                // Writing to a String cannot fail.
                let _ = writeln!(out, "dword:{d:08x}");
                return;
            }
        }
        _ => {}
    }
    if v.kind == ValueType::Binary {
        out.push_str("hex:");
    } else {
        let _ = write!(out, "hex({:x}):", v.kind.raw());
    }
    let mut col = out.len() - line_start;
    for (i, b) in v.data.iter().enumerate() {
        let _ = write!(out, "{b:02x}");
        col += 2;
        if i + 1 < v.data.len() {
            out.push(',');
            col += 1;
            if col > REG_LINE_WRAP {
                out.push_str("\\\n  ");
                col = 2;
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, kind: ValueType, data: &[u8]) -> String {
        let mut s = String::new();
        write_value(
            &mut s,
            &Value {
                name: name.to_owned(),
                kind,
                data: data.to_vec(),
            },
        );
        s
    }

    #[test]
    fn value_lines() {
        assert_eq!(line("", ValueType::Sz, b"a\0\0\0"), "@=\"a\"\n");
        assert_eq!(
            line("q\"\\", ValueType::Sz, b"\\\0\0\0"),
            "\"q\\\"\\\\\"=\"\\\\\"\n"
        );
        assert_eq!(line("n", ValueType::Sz, b"a\0"), "\"n\"=hex(1):61,00\n");
        assert_eq!(line("n", ValueType::Sz, b""), "\"n\"=hex(1):\n");
        assert_eq!(
            line("n", ValueType::Sz, b"\n\0\0\0"),
            "\"n\"=hex(1):0a,00,00,00\n"
        );
        assert_eq!(
            line("d", ValueType::Dword, &[10, 0, 0, 0]),
            "\"d\"=dword:0000000a\n"
        );
        assert_eq!(line("d", ValueType::Dword, &[10]), "\"d\"=hex(4):0a\n");
        assert_eq!(line("b", ValueType::Binary, &[1, 2]), "\"b\"=hex:01,02\n");
        assert_eq!(
            line("x", ValueType::ExpandSz, b"a\0\0\0"),
            "\"x\"=hex(2):61,00,00,00\n"
        );
        assert_eq!(
            line("q", ValueType::Qword, &[0; 8]),
            "\"q\"=hex(b):00,00,00,00,00,00,00,00\n"
        );
        assert_eq!(
            line("o", ValueType::Other(0xffff_0012), &[7]),
            "\"o\"=hex(ffff0012):07\n"
        );
        assert_eq!(line("z", ValueType::None, &[]), "\"z\"=hex(0):\n");
    }

    #[test]
    fn long_hex_wraps_like_regedit() {
        let s = line("v", ValueType::Binary, &[0xab; 40]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() <= 80), "{s}");
        assert!(lines[0].ends_with(",\\"));
        assert!(lines[1].starts_with("  ab,"));
        let joined: String = s.replace("\\\n  ", "");
        assert_eq!(joined.matches("ab").count(), 40);
    }
}
