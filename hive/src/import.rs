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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::HiveBuilder;
    use crate::tests::{multi, our_tree, utf16z as z};
    use crate::{Hive, HiveMut};

    const P: &str = r"HKEY_LOCAL_MACHINE\SYSTEM";

    fn set(key: &str, name: &str, kind: ValueType, data: &[u8]) -> RegChange {
        RegChange::SetValue {
            key: key.to_owned(),
            name: name.to_owned(),
            kind,
            data: data.to_vec(),
        }
    }

    #[test]
    fn every_syntax() {
        let text = "\u{feff}Windows Registry Editor Version 5.00\r\n\r\n; a comment\r\n\
            [HKEY_LOCAL_MACHINE\\SYSTEM\\A]\r\n\
            @=\"default\"\r\n\
            \"s\"=\"q\\\"uote\\\\back\\nslash\"\r\n\
            \"d\" = dword:0000002a\r\n\
            \"q\"=qword:0102030405060708\r\n\
            \"b\"=hex:01,02,\\\r\n  03,04\r\n\
            \"none\"=hex(0):\r\n\
            \"dev\"=hex(ffff0012):61,00,00,00,\r\n\
            \"x\"=hex(2):41,00,00,00\r\n\
            \"gone\"=-\r\n\
            @=-\r\n\
            \r\n[-HKEY_LOCAL_MACHINE\\SYSTEM\\B]\r\n";
        let k = r"HKEY_LOCAL_MACHINE\SYSTEM\A";
        assert_eq!(
            parse_reg(text).unwrap(),
            vec![
                RegChange::CreateKey { key: k.to_owned() },
                set(k, "", ValueType::Sz, &z("default")),
                set(k, "s", ValueType::Sz, &z(r#"q"uote\back\nslash"#)),
                set(k, "d", ValueType::Dword, &42u32.to_le_bytes()),
                set(
                    k,
                    "q",
                    ValueType::Qword,
                    &0x0102_0304_0506_0708u64.to_le_bytes()
                ),
                set(k, "b", ValueType::Binary, &[1, 2, 3, 4]),
                set(k, "none", ValueType::None, &[]),
                set(k, "dev", ValueType::Other(0xffff_0012), &[0x61, 0, 0, 0]),
                set(k, "x", ValueType::ExpandSz, &[0x41, 0, 0, 0]),
                RegChange::DeleteValue {
                    key: k.to_owned(),
                    name: "gone".to_owned()
                },
                RegChange::DeleteValue {
                    key: k.to_owned(),
                    name: String::new()
                },
                RegChange::DeleteKey {
                    key: r"HKEY_LOCAL_MACHINE\SYSTEM\B".to_owned()
                },
            ]
        );
        assert_eq!(parse_reg("REGEDIT4\n\n[X]\n").unwrap().len(), 1);
    }

    #[test]
    fn each_syntax_error() {
        let h = "Windows Registry Editor Version 5.00\n";
        for (text, want) in [
            ("", "the .reg text is empty".to_owned()),
            (
                "\n REGEDIT5\n",
                format!(
                    "line 2: \"REGEDIT5\" is not a .reg header ({REG_HEADER:?} or \"REGEDIT4\")"
                ),
            ),
            ("[A\n", "line 2: key line has no closing ]".to_owned()),
            ("[-\\]\n", "line 2: key name is empty".to_owned()),
            (
                "\"v\"=-\n",
                "line 2: value line before any [key] line".to_owned(),
            ),
            (
                "[-A]\n\"v\"=-\n",
                "line 3: value line in the [-A] section".to_owned(),
            ),
            (
                "[A]\nv=-\n",
                "line 3: \"v=-\" is neither a key nor a value line".to_owned(),
            ),
            (
                "[A]\n\"v\"-\n",
                "line 3: value name is not followed by =".to_owned(),
            ),
            (
                "[A]\n\"v=-\n",
                "line 3: string has no closing quote".to_owned(),
            ),
            (
                "[A]\n\"v\"=\"s\" x\n",
                "line 3: \" x\" after the closing quote".to_owned(),
            ),
            (
                "[A]\n\"v\"=dword:123456789\n",
                "line 3: dword \"123456789\" is not 1 to 8 hex digits".to_owned(),
            ),
            (
                "[A]\n\"v\"=qword:\n",
                "line 3: qword \"\" is not 1 to 16 hex digits".to_owned(),
            ),
            (
                "[A]\n\"v\"=hex(7:00\n",
                "line 3: hex( is not followed by a type number and ):".to_owned(),
            ),
            (
                "[A]\n\"v\"=hex(123456789):00\n",
                "line 3: type \"123456789\" is not 1 to 8 hex digits".to_owned(),
            ),
            (
                "[A]\n\"v\"=hex:0g\n",
                "line 3: \"0g\" is not a hex byte".to_owned(),
            ),
            (
                "[A]\n\"v\"=hex:01,,02\n",
                "line 3: \"\" is not a hex byte".to_owned(),
            ),
            (
                "[A]\n\"v\"=hex:01,\\\n",
                "line 3: hex data continues past the end of the text".to_owned(),
            ),
            (
                "[A]\n\"v\"=hexx\n",
                "line 3: cannot read value data \"hexx\"".to_owned(),
            ),
            (
                "[A]\n\"v\"=str:\"x\"\n",
                "line 3: cannot read value data \"str:\\\"x\\\"\"".to_owned(),
            ),
        ] {
            let full = if text.is_empty() || text.starts_with('\n') {
                text.to_owned()
            } else {
                format!("{h}{text}")
            };
            let e = parse_reg(&full).unwrap_err();
            assert!(matches!(e, Error::Usage(_)), "{e:?}");
            assert_eq!(e.to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            relative(r"HKEY_LOCAL_MACHINE\SYSTEM\A\b", P).unwrap(),
            r"A\b"
        );
        assert_eq!(relative(r"hklm\system\A", P).unwrap(), "A");
        assert_eq!(relative(r"HKEY_LOCAL_MACHINE\SYSTEM", P).unwrap(), "");
        assert_eq!(relative(r"A\B", "").unwrap(), r"A\B");
        assert_eq!(
            relative(r"HKEY_LOCAL_MACHINE\SOFTWARE\A", P)
                .unwrap_err()
                .to_string(),
            r#"key "HKEY_LOCAL_MACHINE\\SOFTWARE\\A" is not below the hive root "HKEY_LOCAL_MACHINE\\SYSTEM""#
        );
        assert!(relative("HKEY_LOCAL_MACHINE", P).is_err());
    }

    fn writer() -> HiveMut {
        let bytes = HiveBuilder::new()
            .value("Old", "keep", ValueType::Dword, &[1, 0, 0, 0])
            .value("Old", "drop", ValueType::Dword, &[2, 0, 0, 0])
            .key(r"Old\Sub\Deep")
            .build();
        Hive::from_bytes(bytes).unwrap().into_mut().unwrap()
    }

    #[test]
    fn apply_in_file_order_and_refuse_atomically() {
        let mut w = writer();
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKLM\\SYSTEM\\New\\Deeper]\n\"s\"=\"x\"\n\
            [-HKEY_LOCAL_MACHINE\\SYSTEM\\Old\\Sub]\n\
            [HKEY_LOCAL_MACHINE\\SYSTEM\\Old]\n\"drop\"=-\n\"absent\"=-\n@=hex(7):61,00,00,00,00,00\n\
            [-HKEY_LOCAL_MACHINE\\SYSTEM\\Never]\n\
            [HKEY_LOCAL_MACHINE\\SYSTEM\\Gone]\n[-HKEY_LOCAL_MACHINE\\SYSTEM\\Gone]\n";
        assert_eq!(w.apply_reg(text, P).unwrap(), 10);
        let hive = w.into_hive().unwrap();
        let tree = our_tree(&hive);
        let keys: Vec<&str> = tree.keys().map(String::as_str).collect();
        assert_eq!(keys, ["", "New", r"New\Deeper", "Old"]);
        assert_eq!(tree[r"New\Deeper"], [("s".to_owned(), 1, z("x"))]);
        assert_eq!(
            tree["Old"],
            [
                (String::new(), 7, multi(&["a"])),
                ("keep".to_owned(), 4, vec![1, 0, 0, 0])
            ]
        );

        // A bad change anywhere leaves the hive as it was.
        let mut w = writer();
        let before = w.hive().as_bytes().to_vec();
        let long = "k".repeat(256);
        for (text, want) in [
            (
                format!("{REG_HEADER}\n[{P}\\A]\n[{P}\\{long}]\n"),
                "key name is 256 UTF-16 units long, more than the limit of 255".to_owned(),
            ),
            (
                format!("{REG_HEADER}\n[{P}\\A]\n[-{P}]\n"),
                "the root key cannot be deleted".to_owned(),
            ),
            (
                format!(
                    "{REG_HEADER}\n[{P}\\A]\n\"{}\"=-\n[{P}\\B]\n\"{}\"=dword:1\n",
                    "v",
                    "v".repeat(16_384)
                ),
                "value name is 16384 UTF-16 units long, more than the limit of 16383".to_owned(),
            ),
            (
                format!("{REG_HEADER}\n[{P}\\A]\n[HKEY_USERS\\A]\n"),
                r#"key "HKEY_USERS\\A" is not below the hive root "HKEY_LOCAL_MACHINE\\SYSTEM""#
                    .to_owned(),
            ),
        ] {
            assert_eq!(w.apply_reg(&text, P).unwrap_err().to_string(), want);
            assert_eq!(w.hive().as_bytes(), before.as_slice());
            assert!(!w.is_modified());
        }
    }

    /// regashii reads typical files like we do (it cannot carry type numbers over 0xff).
    #[test]
    fn agrees_with_regashii_on_typical_files() {
        let text = "Windows Registry Editor Version 5.00\n\n\
            [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]\n\
            \"Type\"=dword:00000001\n\"Group\"=\"SCSI miniport\"\n\
            \"ImagePath\"=hex(2):73,00,79,00,73,00,00,00\n\
            \"Owners\"=hex(7):61,00,00,00,62,00,00,00,00,00\n\
            \"Bin\"=hex:de,ad,\\\n  be,ef\n\"Q\"=hex(b):01,00,00,00,00,00,00,00\n\"Old\"=-\n\n\
            [-HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\Gone]\n";
        let theirs = regashii::Registry::deserialize(text).unwrap();
        let ours = parse_reg(text).unwrap();
        let mut n = 0;
        for c in &ours {
            match c {
                RegChange::CreateKey { key } => {
                    let k = &theirs.keys()[&regashii::KeyName::new(key)];
                    assert_eq!(k.kind(), regashii::KeyKind::Add);
                }
                RegChange::DeleteKey { key } => {
                    let k = &theirs.keys()[&regashii::KeyName::new(key)];
                    assert_eq!(k.kind(), regashii::KeyKind::Delete);
                }
                RegChange::SetValue {
                    key,
                    name,
                    kind,
                    data,
                } => {
                    let k = &theirs.keys()[&regashii::KeyName::new(key)];
                    let v = &k.values()[&regashii::ValueName::named(name)];
                    let (tk, td) = match v {
                        regashii::Value::Sz(s) => (1, z(s)),
                        regashii::Value::ExpandSz(s) => (2, z(s)),
                        regashii::Value::Binary(b) => (3, b.clone()),
                        regashii::Value::Dword(d) => (4, d.to_le_bytes().to_vec()),
                        regashii::Value::MultiSz(m) => {
                            let parts: Vec<&str> = m.iter().map(String::as_str).collect();
                            (7, multi(&parts))
                        }
                        regashii::Value::Qword(q) => (11, q.to_le_bytes().to_vec()),
                        other => panic!("{other:?}"),
                    };
                    assert_eq!((kind.raw(), data), (tk, &td), "{name}");
                    n += 1;
                }
                RegChange::DeleteValue { key, name } => {
                    let k = &theirs.keys()[&regashii::KeyName::new(key)];
                    let v = &k.values()[&regashii::ValueName::named(name)];
                    assert_eq!(v, &regashii::Value::Delete);
                }
            }
        }
        assert_eq!(n, 6);
    }
}
