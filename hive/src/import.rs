//! `.reg` import: parsing a "Windows Registry Editor Version 5.00" (or "REGEDIT4") text into
//! [`RegChange`]s, and applying them to a hive with [`HiveMut::apply_reg`].
//!
//! The parser is our own rather than `regashii`'s: `regashii` stores a value's type as a `u8`
//! and silently turns `hex(ffff0012):` (device properties) or `hex(10000001):` (BCD) into
//! `REG_BINARY`, and it merges a file's sections into a sorted map, which loses the file's
//! order (`[-key]` then `[key]` must delete, then recreate). The tests check both parsers agree
//! on typical files.
//!
//! Syntax accepted: an optional byte order mark, the header line, blank lines and `;` comments,
//! `[key]` (created with its parents), `[-key]` (deleted with its subtree), then under a key
//! `"name"=` or `@=` (the default value) followed by `"string"` (`\\` and `\"` escapes; REG_SZ),
//! `dword:` (1 to 8 hex digits), `qword:` (1 to 16 hex digits), `hex:` (REG_BINARY) or
//! `hex(N):` with any 32-bit type number N (hex bytes separated by commas; a line ending in `\`
//! continues on the next), or `-` (delete the value). REGEDIT4 files are read the same way (their
//! strings become UTF-16 in the hive, as regedit does).

use crate::error::{Error, Result};
use crate::export::REG_HEADER;
use crate::key_value::{MAX_VALUE_DATA, ValueType};
use crate::name;
use crate::write::{HiveMut, check_data, check_value_name, split_path};

/// Largest .reg text accepted (a limit of this library: hex text takes about 3 bytes per data
/// byte, so this covers any hive up to [`crate::MAX_HIVE_SIZE`]).
pub const MAX_REG_TEXT: usize = 4 * crate::hive::MAX_HIVE_SIZE;
/// The header of Windows NT 4 / 9x .reg files.
const REGEDIT4_HEADER: &str = "REGEDIT4";

/// One change read from a .reg file, in file order. Key paths are as written in the file
/// (such as `HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegChange {
    /// `[key]`: create the key and its missing parents.
    CreateKey {
        /// The key's full path.
        key: String,
    },
    /// `[-key]`: delete the key and everything below it.
    DeleteKey {
        /// The key's full path.
        key: String,
    },
    /// `"name"=data` or `@=data`: set a value of the last `[key]`.
    SetValue {
        /// The key's full path.
        key: String,
        /// The value's name (empty for `@`).
        name: String,
        /// The data type.
        kind: ValueType,
        /// The data as stored in the hive.
        data: Vec<u8>,
    },
    /// `"name"=-`: delete a value of the last `[key]`.
    DeleteValue {
        /// The key's full path.
        key: String,
        /// The value's name (empty for `@`).
        name: String,
    },
}

fn bad(line: usize, detail: impl std::fmt::Display) -> Error {
    Error::Usage(format!("line {line}: {detail}"))
}

/// Reads a `"..."` string at the start of `s` (which starts with `"`); returns it and the rest.
fn quoted(s: &str, line: usize) -> Result<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, s.get(i + 1..).unwrap_or_default())),
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '"'))) => out.push(e),
                // regedit keeps other backslashes as they are.
                Some((_, e)) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Err(bad(line, "string has no closing quote"))
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend([0, 0]);
    v
}

fn hex_number(s: &str, max_digits: usize, line: usize, what: &str) -> Result<u64> {
    let s = s.trim();
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(
            line,
            format!("{what} {s:?} is not 1 to {max_digits} hex digits"),
        ));
    }
    u64::from_str_radix(s, 16).map_err(|_| bad(line, format!("{what} {s:?} is not hex")))
}

fn hex_bytes(body: &str, line: usize) -> Result<Vec<u8>> {
    let body = body.trim();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let body = body.strip_suffix(',').unwrap_or(body);
    let pieces = body.split(',');
    let mut out = Vec::new();
    for p in pieces {
        if out.len() >= MAX_VALUE_DATA as usize {
            return Err(bad(
                line,
                format!("value data is more than the limit of {MAX_VALUE_DATA} bytes"),
            ));
        }
        let p = p.trim();
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(line, format!("{p:?} is not a hex byte")));
        }
        // 1 or 2 hex digits always fit a u8.
        out.push(u8::from_str_radix(p, 16).map_err(|_| bad(line, "bad hex byte"))?);
    }
    Ok(out)
}

/// Parses a .reg text into its changes, in file order.
///
/// # Errors
/// `Usage` naming the line for anything that is not .reg syntax (a missing header, a value
/// outside a `[key]` section or inside a `[-key]` section, bad hex, an unterminated string,
/// data past [`MAX_VALUE_DATA`]); `Unsupported` for texts over [`MAX_REG_TEXT`].
pub fn parse_reg(text: &str) -> Result<Vec<RegChange>> {
    if text.len() > MAX_REG_TEXT {
        return Err(Error::unsupported(
            ".reg size",
            format!(
                "{} bytes, more than the limit of {MAX_REG_TEXT}",
                text.len()
            ),
        ));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let (n, header) = loop {
        match lines.next() {
            None => return Err(Error::Usage("the .reg text is empty".to_owned())),
            Some((_, l)) if l.trim().is_empty() => {}
            Some((n, l)) => break (n, l.trim()),
        }
    };
    if header != REG_HEADER && header != REGEDIT4_HEADER {
        return Err(bad(
            n,
            format!("{header:?} is not a .reg header ({REG_HEADER:?} or {REGEDIT4_HEADER:?})"),
        ));
    }
    let mut out = Vec::new();
    let mut section: Option<(String, bool)> = None;
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| bad(n, "key line has no closing ]"))?;
            let (delete, key) = match inner.strip_prefix('-') {
                Some(k) => (true, k),
                None => (false, inner),
            };
            if key.trim_matches('\\').is_empty() {
                return Err(bad(n, "key name is empty"));
            }
            let key = key.to_owned();
            out.push(if delete {
                RegChange::DeleteKey { key: key.clone() }
            } else {
                RegChange::CreateKey { key: key.clone() }
            });
            section = Some((key, delete));
            continue;
        }
        let Some((key, deleted)) = &section else {
            return Err(bad(n, "value line before any [key] line"));
        };
        if *deleted {
            return Err(bad(n, format!("value line in the [-{key}] section")));
        }
        let (name, rest) = if let Some(r) = line.strip_prefix('@') {
            (String::new(), r)
        } else if line.starts_with('"') {
            quoted(line, n)?
        } else {
            return Err(bad(
                n,
                format!("{line:?} is neither a key nor a value line"),
            ));
        };
        let rest = rest
            .trim_start()
            .strip_prefix('=')
            .ok_or_else(|| bad(n, "value name is not followed by ="))?
            .trim_start();
        let key = key.clone();
        if rest == "-" {
            out.push(RegChange::DeleteValue { key, name });
            continue;
        }
        let (kind, data) = if rest.starts_with('"') {
            let (s, tail) = quoted(rest, n)?;
            if !tail.trim().is_empty() {
                return Err(bad(n, format!("{tail:?} after the closing quote")));
            }
            (ValueType::Sz, utf16z(&s))
        } else if let Some(d) = rest.strip_prefix("dword:") {
            let v = hex_number(d, 8, n, "dword")?;
            // At most 8 hex digits.
            let v = u32::try_from(v).unwrap_or(u32::MAX);
            (ValueType::Dword, v.to_le_bytes().to_vec())
        } else if let Some(d) = rest.strip_prefix("qword:") {
            let v = hex_number(d, 16, n, "qword")?;
            (ValueType::Qword, v.to_le_bytes().to_vec())
        } else if let Some(h) = rest.strip_prefix("hex") {
            let (kind, body) = if let Some(b) = h.strip_prefix(':') {
                (ValueType::Binary, b)
            } else if let Some(r) = h.strip_prefix('(') {
                let (num, b) = r
                    .split_once("):")
                    .ok_or_else(|| bad(n, "hex( is not followed by a type number and ):"))?;
                let t = hex_number(num, 8, n, "type")?;
                (ValueType::from_raw(u32::try_from(t).unwrap_or(u32::MAX)), b)
            } else {
                return Err(bad(n, format!("cannot read value data {rest:?}")));
            };
            let mut body = body.trim_end().to_owned();
            // Each continuation consumes one line, so this ends with the text.
            while let Some(stripped) = body.strip_suffix('\\') {
                body.truncate(stripped.len());
                let Some((_, next)) = lines.next() else {
                    return Err(bad(n, "hex data continues past the end of the text"));
                };
                body.push_str(next.trim());
            }
            (kind, hex_bytes(&body, n)?)
        } else {
            return Err(bad(n, format!("cannot read value data {rest:?}")));
        };
        out.push(RegChange::SetValue {
            key,
            name,
            kind,
            data,
        });
    }
    Ok(out)
}

/// Expands the usual abbreviations of root keys.
fn root_alias(s: &str) -> &str {
    match s.to_ascii_uppercase().as_str() {
        "HKLM" => "HKEY_LOCAL_MACHINE",
        "HKCU" => "HKEY_CURRENT_USER",
        "HKCR" => "HKEY_CLASSES_ROOT",
        "HKU" => "HKEY_USERS",
        "HKCC" => "HKEY_CURRENT_CONFIG",
        _ => s,
    }
}

/// The path of `key` below `prefix` (the hive root's full name), compared case-insensitively.
fn relative<'a>(key: &'a str, prefix: &str) -> Result<String> {
    let k: Vec<&'a str> = key.split('\\').filter(|p| !p.is_empty()).collect();
    let p: Vec<&str> = prefix.split('\\').filter(|p| !p.is_empty()).collect();
    let under = k.len() >= p.len()
        && k.iter().zip(&p).enumerate().all(|(i, (a, b))| {
            if i == 0 {
                name::eq(root_alias(a), root_alias(b))
            } else {
                name::eq(a, b)
            }
        });
    if !under {
        return Err(Error::Usage(format!(
            "key {key:?} is not below the hive root {prefix:?}"
        )));
    }
    Ok(k.get(p.len()..).unwrap_or_default().join("\\"))
}

impl HiveMut {
    /// Applies a .reg text to the hive, all or nothing. `prefix` is the full name of the
    /// hive's root key as the file spells it (such as `HKEY_LOCAL_MACHINE\SYSTEM`; `HKLM`
    /// and the other usual abbreviations match their long forms); every key in the file must
    /// be at or below it. Returns the number of changes applied.
    ///
    /// # Errors
    /// As for [`parse_reg`]; `Usage` for a key outside `prefix`, an invalid key or value
    /// name, or `[-prefix]` (the root key cannot be deleted); otherwise as for the edits.
    /// On error the hive is unchanged.
    pub fn apply_reg(&mut self, text: &str, prefix: &str) -> Result<usize> {
        let changes = parse_reg(text)?;
        let mut rel = Vec::with_capacity(changes.len());
        for c in &changes {
            let (RegChange::CreateKey { key }
            | RegChange::DeleteKey { key }
            | RegChange::SetValue { key, .. }
            | RegChange::DeleteValue { key, .. }) = c;
            rel.push(relative(key, prefix)?);
        }
        self.txn(|w| {
            for (c, path) in changes.iter().zip(&rel) {
                let parts = split_path(path)?;
                match c {
                    RegChange::CreateKey { .. } => {
                        w.create_key_inner(&parts)?;
                    }
                    RegChange::DeleteKey { .. } => {
                        w.delete_key_inner(&parts)?;
                    }
                    RegChange::SetValue {
                        name, kind, data, ..
                    } => {
                        check_value_name(name)?;
                        check_data(data)?;
                        let key = w.create_key_inner(&parts)?;
                        w.set_value_inner(key, name, *kind, data)?;
                    }
                    RegChange::DeleteValue { name, .. } => {
                        if let Some(key) = w.find(&parts)? {
                            w.delete_value_inner(key, name)?;
                        }
                    }
                }
            }
            Ok(changes.len())
        })
    }
}
