//! `windows-registry`: recipe steps that set or delete one registry value, or apply a `.reg`
//! file, in the SYSTEM or SOFTWARE hive.
//!
//! ```toml
//! [[step]]
//! fixer = "windows-registry"
//! hive = "SYSTEM"
//! key = 'CurrentControlSet\Control\CrashControl'
//! value = "AutoReboot"
//! type = "dword"
//! data = "1"
//!
//! [[step]]
//! fixer = "windows-registry"
//! hive = "SOFTWARE"
//! reg_file = "site-settings.reg"   # next to the recipe file
//! ```
//!
//! `CurrentControlSet` at the start of a SYSTEM key (in `key` or in the `.reg` file's key
//! lines) means the control set `Select\Current` names, since the link Windows creates at boot
//! does not exist in an offline hive. A `.reg` file is applied all or nothing; its keys must be
//! under `HKEY_LOCAL_MACHINE\<hive>`.

use std::path::PathBuf;

use hive::ValueType;

use super::{HiveEdit, SOFTWARE_PREFIX, SYSTEM_PREFIX, multi_sz, preflight, resolve_ccs, sz};
use crate::fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Error, Result};

pub(crate) struct WindowsRegistry;

/// Largest `.reg` file read from the host.
const MAX_REG_FILE: u64 = 16 << 20;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "hive",
        kind: ParamKind::Choice(&["SYSTEM", "SOFTWARE"]),
        default: "\"SYSTEM\"",
        help: "the hive edited",
    },
    ParamSpec {
        name: "key",
        kind: ParamKind::Text,
        default: "\"\"",
        help: "key below the hive root (CurrentControlSet allowed in SYSTEM); empty: no single-value edit",
    },
    ParamSpec {
        name: "value",
        kind: ParamKind::Text,
        default: "\"\"",
        help: "value name (empty: the key's default value)",
    },
    ParamSpec {
        name: "type",
        kind: ParamKind::Choice(&["sz", "expand_sz", "multi_sz", "dword", "qword", "delete"]),
        default: "\"sz\"",
        help: "value type, or delete to remove the value",
    },
    ParamSpec {
        name: "data",
        kind: ParamKind::Text,
        default: "\"\"",
        help: "the data: text, a decimal or 0x number, or multi_sz items separated by ;",
    },
    ParamSpec {
        name: "reg_file",
        kind: ParamKind::Text,
        default: "\"\"",
        help: "a .reg file to apply, relative to the recipe's directory (or absolute)",
    },
];

fn bad(detail: String) -> Error {
    Error::Usage(format!("windows-registry: {detail}"))
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The value type and data of a `type`/`data` pair.
fn typed(kind: &str, data: &str) -> Result<(ValueType, Vec<u8>)> {
    Ok(match kind {
        "sz" => (ValueType::Sz, sz(data)),
        "expand_sz" => (ValueType::ExpandSz, sz(data)),
        "multi_sz" => {
            let items: Vec<&str> = data.split(';').filter(|s| !s.is_empty()).collect();
            (ValueType::MultiSz, multi_sz(&items))
        }
        "dword" => {
            let v = number(data)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(format!("data {data:?} is not a 32-bit number")))?;
            (ValueType::Dword, v.to_le_bytes().to_vec())
        }
        "qword" => {
            let v =
                number(data).ok_or_else(|| bad(format!("data {data:?} is not a 64-bit number")))?;
            (ValueType::Qword, v.to_le_bytes().to_vec())
        }
        other => return Err(bad(format!("type {other:?} has no data"))),
    })
}

/// `[HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\...]` key lines with the real control set.
fn resolve_reg_ccs(text: &str, ccs: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let (open, rest) = if let Some(r) = t.strip_prefix("[-") {
            ("[-", r)
        } else if let Some(r) = t.strip_prefix('[') {
            ("[", r)
        } else {
            out.push_str(line);
            continue;
        };
        let mut done = false;
        for root in ["HKEY_LOCAL_MACHINE\\SYSTEM\\", "HKLM\\SYSTEM\\"] {
            if rest.len() >= root.len()
                && rest
                    .get(..root.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(root))
            {
                let tail = rest.get(root.len()..).unwrap_or_default();
                out.push_str(open);
                out.push_str(rest.get(..root.len()).unwrap_or_default());
                out.push_str(&resolve_ccs(tail, ccs));
                done = true;
                break;
            }
        }
        if !done {
            out.push_str(line);
        }
    }
    out
}

impl Fixer for WindowsRegistry {
    fn name(&self) -> &'static str {
        "windows-registry"
    }

    fn description(&self) -> &'static str {
        "set or delete one value, or apply a .reg file, in the SYSTEM or SOFTWARE hive"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let (name, prefix) = match params.str("hive") {
            "SOFTWARE" => ("SOFTWARE", SOFTWARE_PREFIX),
            _ => ("SYSTEM", SYSTEM_PREFIX),
        };
        let mut h = HiveEdit::open_required(ctx, &info.hive_path(name), prefix)?;
        let mut out = Outcome::default();
        let key = params.str("key");
        if !key.is_empty() {
            let key = if name == "SYSTEM" {
                resolve_ccs(key, &info.ccs)
            } else {
                key.trim_start_matches('\\').to_owned()
            };
            let value = params.str("value");
            match params.str("type") {
                "delete" => {
                    if h.delete_value(&key, value)? {
                        out.notes.push(format!("deleted {name}\\{key} {value:?}"));
                    }
                }
                kind => {
                    let (t, data) = typed(kind, params.str("data"))?;
                    if h.set(&key, value, t, &data)? {
                        out.notes.push(format!("set {name}\\{key} {value:?} ({t})"));
                    }
                }
            }
        }
        let file = params.str("reg_file");
        if !file.is_empty() {
            let p = PathBuf::from(file);
            let path = if p.is_absolute() {
                p
            } else {
                params.recipe_dir().map(|d| d.join(&p)).ok_or_else(|| {
                    bad(format!(
                        "reg_file {file:?} is relative but the recipe is not a file"
                    ))
                })?
            };
            let meta = std::fs::metadata(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            if meta.len() > MAX_REG_FILE {
                return Err(bad(format!(
                    "{} is {} bytes, over the {MAX_REG_FILE}-byte limit",
                    path.display(),
                    meta.len()
                )));
            }
            let bytes = std::fs::read(&path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let text = decode_reg(&bytes)
                .ok_or_else(|| bad(format!("{} is neither UTF-16LE nor UTF-8", path.display())))?;
            let text = if name == "SYSTEM" {
                resolve_reg_ccs(&text, &info.ccs)
            } else {
                text
            };
            let n = h
                .apply_reg(&text)
                .map_err(|e| bad(format!("{}: {e}", path.display())))?;
            out.notes
                .push(format!("{} applied ({n} change(s) read)", path.display()));
        }
        out.changes.extend(h.finish()?);
        Ok(out)
    }
}

/// `.reg` files regedit writes are UTF-16LE with a byte order mark; hand-written ones are
/// usually UTF-8.
fn decode_reg(b: &[u8]) -> Option<String> {
    if let Some(rest) = b.strip_prefix(&[0xff, 0xfe]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16(&units).ok();
    }
    let b = b.strip_prefix(&[0xef, 0xbb, 0xbf]).unwrap_or(b);
    String::from_utf8(b.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccs_in_reg_key_lines() {
        let t = "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services\\x]\n\"a\"=\"CurrentControlSet\"\n[-HKLM\\SYSTEM\\currentcontrolset\\Services\\y]\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\CurrentControlSet]\n";
        assert_eq!(
            resolve_reg_ccs(t, "ControlSet002"),
            "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet002\\Services\\x]\n\"a\"=\"CurrentControlSet\"\n[-HKLM\\SYSTEM\\ControlSet002\\Services\\y]\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\CurrentControlSet]\n"
        );
        assert_eq!(
            resolve_ccs("\\CurrentControlSet", "ControlSet001"),
            "ControlSet001"
        );
        assert_eq!(resolve_ccs("Select", "ControlSet001"), "Select");
    }

    #[test]
    fn typed_values() {
        assert_eq!(
            typed("dword", "0x10").unwrap(),
            (ValueType::Dword, vec![16, 0, 0, 0])
        );
        assert_eq!(
            typed("dword", "4294967296").unwrap_err().to_string(),
            "windows-registry: data \"4294967296\" is not a 32-bit number"
        );
        assert_eq!(typed("qword", "1").unwrap().1, 1u64.to_le_bytes().to_vec());
        assert_eq!(typed("multi_sz", "a;b").unwrap().1, multi_sz(&["a", "b"]));
        assert_eq!(typed("expand_sz", "%x%").unwrap().0, ValueType::ExpandSz);
        assert_eq!(decode_reg(&[0xff, 0xfe, b'a', 0]).as_deref(), Some("a"));
        assert_eq!(decode_reg(&[0xef, 0xbb, 0xbf, b'b']).as_deref(), Some("b"));
        assert_eq!(decode_reg(&[0xc3]), None);
    }
}
