//! Registry hives for the Windows images: `.reg` text written here, merged by `hivexregedit`
//! into an empty hive from [`crate::regf`].

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Result, io};
use crate::tools;

/// What a hive file contains: its root key name, the `.reg` prefix that stands for that root,
/// and the `.reg` text.
#[derive(Debug, Clone)]
pub(crate) struct HiveSpec {
    /// Root key name stored in the hive (`ROOT`, `BCD00000000`).
    pub(crate) root_name: &'static str,
    /// The informational file name in the base block.
    pub(crate) file_name: &'static str,
    /// The `.reg` key prefix that maps to the hive root, e.g. `HKEY_LOCAL_MACHINE\SYSTEM`.
    pub(crate) prefix: &'static str,
    /// The `.reg` text (Windows Registry Editor Version 5.00 format).
    pub(crate) reg: String,
}

/// Builds `.reg` text under a fixed prefix.
#[derive(Debug)]
pub(crate) struct Reg {
    prefix: &'static str,
    text: String,
    /// Keys already opened: hivexregedit cannot create a key whose parent does not exist yet.
    opened: std::collections::BTreeSet<String>,
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn hex_list(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

impl Reg {
    /// Starts `.reg` text whose keys live under `prefix`.
    pub(crate) fn new(prefix: &'static str) -> Self {
        Self {
            prefix,
            text: String::from("Windows Registry Editor Version 5.00\n"),
            opened: Default::default(),
        }
    }

    /// Opens key `path` (relative to the prefix; empty for the root), after opening any of its
    /// ancestors not opened yet.
    pub(crate) fn key(&mut self, path: &str) -> &mut Self {
        let mut at = 0;
        while let Some(i) = path[at..].find('\\') {
            let parent = &path[..at + i];
            if self.opened.insert(parent.to_owned()) {
                let _ = write!(self.text, "\n[{}\\{parent}]\n", self.prefix);
            }
            at += i + 1;
        }
        self.opened.insert(path.to_owned());
        if path.is_empty() {
            let _ = write!(self.text, "\n[{}]\n", self.prefix);
        } else {
            let _ = write!(self.text, "\n[{}\\{path}]\n", self.prefix);
        }
        self
    }

    /// A REG_SZ value.
    pub(crate) fn sz(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = writeln!(self.text, "\"{}\"=\"{}\"", quote(name), quote(value));
        self
    }

    /// A REG_EXPAND_SZ value.
    pub(crate) fn expand_sz(&mut self, name: &str, value: &str) -> &mut Self {
        let _ = writeln!(
            self.text,
            "\"{}\"=hex(2):{}",
            quote(name),
            hex_list(&utf16z(value))
        );
        self
    }

    /// A REG_MULTI_SZ value.
    pub(crate) fn multi_sz(&mut self, name: &str, values: &[&str]) -> &mut Self {
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| utf16z(v)).collect();
        bytes.extend_from_slice(&[0, 0]);
        let _ = writeln!(self.text, "\"{}\"=hex(7):{}", quote(name), hex_list(&bytes));
        self
    }

    /// A REG_DWORD value.
    pub(crate) fn dword(&mut self, name: &str, value: u32) -> &mut Self {
        let _ = writeln!(self.text, "\"{}\"=dword:{value:08x}", quote(name));
        self
    }

    /// A REG_QWORD value.
    pub(crate) fn qword(&mut self, name: &str, value: u64) -> &mut Self {
        let _ = writeln!(
            self.text,
            "\"{}\"=hex(b):{}",
            quote(name),
            hex_list(&value.to_le_bytes())
        );
        self
    }

    /// A REG_BINARY value.
    pub(crate) fn binary(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let _ = writeln!(self.text, "\"{}\"=hex:{}", quote(name), hex_list(value));
        self
    }

    /// The finished text.
    pub(crate) fn finish(&self) -> String {
        self.text.clone()
    }
}

/// Writes the hive described by `spec` to `dst`, using `work` for the temporary `.reg` file.
pub(crate) fn build_hive(spec: &HiveSpec, dst: &Path, work: &Path) -> Result<()> {
    std::fs::write(dst, crate::regf::empty_hive(spec.root_name, spec.file_name))
        .map_err(io(dst))?;
    let reg = tempfile::Builder::new()
        .suffix(".reg")
        .tempfile_in(work)
        .map_err(io(work))?;
    std::fs::write(reg.path(), &spec.reg).map_err(io(reg.path()))?;
    tools::run(
        tools::command(tools::HIVEXREGEDIT)?
            .arg("--merge")
            .arg("--prefix")
            .arg(spec.prefix)
            .arg(dst)
            .arg(reg.path()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reg_text_formats_each_type() {
        let mut r = Reg::new("HKEY_LOCAL_MACHINE\\SYSTEM");
        r.key("Select").dword("Current", 1);
        r.key("A\\B")
            .sz("s", "C:\\W \"q\"")
            .expand_sz("e", "a")
            .multi_sz("m", &["x"]);
        r.qword("q", 1).binary("b", &[0xde, 0xad]);
        assert_eq!(
            r.finish(),
            "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Select]\n\"Current\"=dword:00000001\n\n\
             [HKEY_LOCAL_MACHINE\\SYSTEM\\A]\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\A\\B]\n\"s\"=\"C:\\\\W \\\"q\\\"\"\n\"e\"=hex(2):61,00,00,00\n\
             \"m\"=hex(7):78,00,00,00,00,00\n\"q\"=hex(b):01,00,00,00,00,00,00,00\n\"b\"=hex:de,ad\n"
        );
    }

    #[test]
    fn hivex_accepts_merged_hive() {
        if tools::locate(tools::HIVEXREGEDIT).is_err() {
            eprintln!("skipping: hivexregedit not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut r = Reg::new("HKEY_LOCAL_MACHINE\\SOFTWARE");
        r.key("Microsoft\\Windows NT\\CurrentVersion")
            .sz("ProductName", "Windows Server 2019 Standard");
        r.dword("CurrentMajorVersionNumber", 10);
        let spec = HiveSpec {
            root_name: "ROOT",
            file_name: "\\SystemRoot\\System32\\Config\\SOFTWARE",
            prefix: "HKEY_LOCAL_MACHINE\\SOFTWARE",
            reg: r.finish(),
        };
        let hive = dir.path().join("SOFTWARE");
        build_hive(&spec, &hive, dir.path()).unwrap();
        let out = tools::run(
            tools::command(tools::HIVEXREGEDIT)
                .unwrap()
                .arg("--export")
                .arg("--prefix")
                .arg("HKEY_LOCAL_MACHINE\\SOFTWARE")
                .arg(&hive)
                .arg("\\Microsoft\\Windows NT\\CurrentVersion"),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("[HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]"),
            "{text}"
        );
        assert!(
            text.contains("\"CurrentMajorVersionNumber\"=dword:0000000a"),
            "{text}"
        );
        assert!(text.contains("ProductName"), "{text}");
    }
}
