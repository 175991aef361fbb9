//! INF files: the text layout (encodings, sections, lines, strings) and the typed driver
//! description built from it.
//!
//! References: Microsoft's "General Syntax Rules for INF Files", "INF Version Section",
//! "INF Manufacturer Section", "INF Models Section" (TargetOSVersion decoration), "INF DDInstall
//! Section", "INF DDInstall.Services Section", "INF AddService Directive", "INF CopyFiles
//! Directive", "INF DestinationDirs Section", "INF AddReg Directive" and "INF Strings Section".
//! An INF comes from a catalog the operator chose, but it is still parsed as hostile input:
//! sizes, line counts, line lengths, fields and sections are all capped.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::osmap::{Arch, WindowsTarget};

/// Our limit on an INF's size; virtio-win's largest INF is under 64 KiB.
pub const MAX_INF_BYTES: usize = 4 << 20;
/// Maximum length of a logical line, after joining continuations ("General Syntax Rules": 4096
/// characters including the terminator is the documented INF limit).
pub const MAX_LINE_CHARS: usize = 4096;
/// Our limit on physical lines.
const MAX_LINES: usize = 200_000;
/// Our limit on sections.
const MAX_SECTIONS: usize = 10_000;
/// Our limit on comma-separated fields in one line.
const MAX_FIELDS: usize = 256;
/// Our limit on the length of a field after `%strkey%` substitution (substitution is not
/// recursive, so one level of expansion is all that can happen).
const MAX_SUBSTITUTED_CHARS: usize = 4 * MAX_LINE_CHARS;
/// Our limit on models entries, install sections and services per INF.
const MAX_ITEMS: usize = 4096;

/// `Signature` values Windows accepts ("INF Version Section").
const SIGNATURES: [&str; 2] = ["$Windows NT$", "$Chicago$"];
/// `AddReg` roots ("INF AddReg Directive").
const REG_ROOTS: [&str; 5] = ["HKR", "HKLM", "HKCR", "HKCU", "HKU"];

/// One logical line of an INF section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The part before the first unquoted `=`, unquoted and trimmed (not substituted).
    pub key: Option<String>,
    /// The comma-separated fields after `=` (or of the whole line), unquoted and trimmed.
    pub fields: Vec<String>,
    /// The 1-based physical line it starts on.
    pub line: usize,
}

/// One section of an INF (duplicates are merged, as SetupAPI does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The name as first written.
    pub name: String,
    /// The line of its first header.
    pub line: usize,
    /// Its lines in order.
    pub lines: Vec<Line>,
}

/// How the INF's bytes were encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Encoding {
    /// UTF-16LE (with or without a byte-order mark).
    Utf16Le,
    /// UTF-8 (with or without a byte-order mark).
    Utf8,
    /// A single-byte ANSI code page; bytes are read as ISO-8859-1 (identical for ASCII, which
    /// is all an INF's keywords and file names may use).
    Ansi,
}

/// The text layout of an INF: sections and lines, before interpretation.
#[derive(Debug, Clone)]
pub struct Inf {
    encoding: Encoding,
    sections: Vec<Section>,
    /// Lower-case section name to its index in `sections`, so lookups stay logarithmic on a
    /// hostile INF with thousands of sections.
    index: BTreeMap<String, usize>,
    strings: BTreeMap<String, String>,
}

impl Inf {
    /// Parses an INF's bytes.
    ///
    /// # Errors
    /// `Corrupt` naming the line for malformed text; `Unsupported` past the size limits.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_INF_BYTES {
            return Err(Error::unsupported(
                "inf",
                format!("{} bytes, limit {MAX_INF_BYTES}", bytes.len()),
            ));
        }
        let (encoding, text) = decode(bytes)?;
        let sections = split_sections(&text)?;
        let index = sections
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.to_ascii_lowercase(), i))
            .collect();
        let mut inf = Self {
            encoding,
            sections,
            index,
            strings: BTreeMap::new(),
        };
        inf.strings = inf.collect_strings();
        Ok(inf)
    }

    /// The detected encoding.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// All sections, in order of first appearance.
    #[must_use]
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// A section by name, case-insensitively.
    #[must_use]
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.index
            .get(&name.to_ascii_lowercase())
            .and_then(|&i| self.sections.get(i))
    }

    /// The value of a `%strkey%` token, case-insensitively.
    #[must_use]
    pub fn string(&self, key: &str) -> Option<&str> {
        self.strings
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// [Strings] wins; a key missing there is taken from the US English [Strings.0409], then
    /// from any other localized [Strings.xxxx]. (SetupAPI prefers the section of the system's
    /// locale; offline we have no locale, and only descriptions are localized.)
    fn collect_strings(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let rank = |name: &str| -> Option<u8> {
            let lower = name.to_ascii_lowercase();
            if lower == "strings" {
                Some(0)
            } else if lower == "strings.0409" {
                Some(1)
            } else if lower.starts_with("strings.") {
                Some(2)
            } else {
                None
            }
        };
        let mut ordered: Vec<(u8, &Section)> = self
            .sections
            .iter()
            .filter_map(|s| rank(&s.name).map(|r| (r, s)))
            .collect();
        ordered.sort_by_key(|(r, _)| *r);
        for (_, s) in ordered {
            for l in &s.lines {
                if let Some(k) = &l.key {
                    out.entry(k.to_ascii_lowercase())
                        .or_insert_with(|| l.fields.join(","));
                }
            }
        }
        out
    }

    /// Replaces `%strkey%` tokens; `%%` is a literal `%`; numeric tokens (`%12%`, directory
    /// ids) are kept; unknown tokens are kept and reported in `warnings`.
    fn subst(&self, s: &str, line: usize, warnings: &mut Vec<String>) -> Result<String> {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find('%') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('%') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let token = &after[..end];
            if token.is_empty() {
                out.push('%');
            } else if token.bytes().all(|b| b.is_ascii_digit()) {
                out.push('%');
                out.push_str(token);
                out.push('%');
            } else if let Some(v) = self.string(token) {
                out.push_str(v);
            } else {
                warnings.push(format!("line {line}: unknown string key %{token}%"));
                out.push('%');
                out.push_str(token);
                out.push('%');
            }
            rest = &after[end + 1..];
            if out.len() > MAX_SUBSTITUTED_CHARS {
                return Err(Error::unsupported(
                    "inf",
                    format!(
                        "line {line} is longer than {MAX_SUBSTITUTED_CHARS} characters after substitution"
                    ),
                ));
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Builds the typed driver description for `arch`.
    ///
    /// # Errors
    /// `Corrupt` naming the line when a required section or value is missing or malformed.
    pub fn driver(&self, arch: Arch) -> Result<InfDriver> {
        DriverBuilder {
            inf: self,
            arch,
            warnings: Vec::new(),
        }
        .build()
    }
}

/// Decodes bytes to text: BOMs first, then BOM-less UTF-16LE (ASCII text has every odd byte
/// zero), then UTF-8, then ANSI.
fn decode(bytes: &[u8]) -> Result<(Encoding, String)> {
    let utf16 = |body: &[u8], base: u64| -> Result<String> {
        if !body.len().is_multiple_of(2) {
            return Err(Error::corrupt_at(
                "inf utf-16 text",
                base + u64::try_from(body.len()).unwrap_or(u64::MAX) - 1,
                format!("odd length {} for utf-16 text", body.len()),
            ));
        }
        let units = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        let mut s = String::with_capacity(body.len() / 2);
        for (i, c) in char::decode_utf16(units).enumerate() {
            let c = c.map_err(|e| {
                Error::corrupt_at(
                    "inf utf-16 text",
                    base + 2 * u64::try_from(i).unwrap_or(0),
                    format!("unpaired surrogate {:#06x}", e.unpaired_surrogate()),
                )
            })?;
            s.push(c);
        }
        Ok(s)
    };
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return Ok((Encoding::Utf16Le, utf16(body, 2)?));
    }
    if bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(Error::unsupported("inf", "utf-16 big-endian text"));
    }
    if let Some(body) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        let s = std::str::from_utf8(body).map_err(|e| {
            Error::corrupt_at(
                "inf utf-8 text",
                3 + u64::try_from(e.valid_up_to()).unwrap_or(0),
                "invalid utf-8 after a utf-8 byte-order mark",
            )
        })?;
        return Ok((Encoding::Utf8, s.to_owned()));
    }
    let looks_utf16 = bytes.len() >= 4
        && bytes.len().is_multiple_of(2)
        && bytes.iter().skip(1).step_by(2).take(64).all(|&b| b == 0)
        && bytes.first().is_some_and(|&b| b != 0);
    if looks_utf16 {
        return Ok((Encoding::Utf16Le, utf16(bytes, 0)?));
    }
    if bytes.contains(&0) {
        let at = bytes.iter().position(|&b| b == 0).unwrap_or(0);
        return Err(Error::corrupt_at(
            "inf text",
            u64::try_from(at).unwrap_or(0),
            "nul byte in 8-bit text",
        ));
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((Encoding::Utf8, s.to_owned())),
        Err(_) => Ok((
            Encoding::Ansi,
            bytes.iter().map(|&b| char::from(b)).collect(),
        )),
    }
}

/// Cuts a comment (`;` outside quotes) off a physical line.
fn strip_comment(line: &str) -> &str {
    let mut in_quote = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ';' if !in_quote => return &line[..i],
            _ => {}
        }
    }
    line
}

fn split_sections(text: &str) -> Result<Vec<Section>> {
    let mut sections: Vec<Section> = Vec::new();
    let mut current: Option<usize> = None;
    let mut pending = String::new();
    let mut pending_start = 0usize;
    for (i, raw) in text.split('\n').enumerate() {
        let lineno = i + 1;
        if lineno > MAX_LINES {
            return Err(Error::unsupported(
                "inf",
                format!("more than {MAX_LINES} lines"),
            ));
        }
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let body = strip_comment(raw).trim_end();
        if pending.is_empty() {
            pending_start = lineno;
        }
        // A backslash ending a line continues it on the next ("General Syntax Rules").
        let (body, continues) = match body.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (body, false),
        };
        pending.push_str(body);
        if pending.chars().count() > MAX_LINE_CHARS {
            return Err(Error::corrupt_line(
                "inf line",
                pending_start,
                format!("logical line longer than {MAX_LINE_CHARS} characters"),
            ));
        }
        if continues {
            continue;
        }
        let logical = std::mem::take(&mut pending);
        let t = logical.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(Error::corrupt_line(
                    "inf section header",
                    pending_start,
                    format!("no closing bracket in {t:?}"),
                ));
            };
            let name = rest[..end].trim();
            if name.is_empty() {
                return Err(Error::corrupt_line(
                    "inf section header",
                    pending_start,
                    "empty section name",
                ));
            }
            if !rest[end + 1..].trim().is_empty() {
                return Err(Error::corrupt_line(
                    "inf section header",
                    pending_start,
                    format!("text after the section header {t:?}"),
                ));
            }
            if let Some(idx) = sections
                .iter()
                .position(|s| s.name.eq_ignore_ascii_case(name))
            {
                current = Some(idx);
            } else {
                if sections.len() >= MAX_SECTIONS {
                    return Err(Error::unsupported(
                        "inf",
                        format!("more than {MAX_SECTIONS} sections"),
                    ));
                }
                sections.push(Section {
                    name: name.to_owned(),
                    line: pending_start,
                    lines: Vec::new(),
                });
                current = Some(sections.len() - 1);
            }
            continue;
        }
        let Some(idx) = current else {
            return Err(Error::corrupt_line(
                "inf line",
                pending_start,
                "line outside any section",
            ));
        };
        let line = parse_line(t, pending_start)?;
        if let Some(s) = sections.get_mut(idx) {
            s.lines.push(line);
        }
    }
    if !pending.is_empty() {
        return Err(Error::corrupt_line(
            "inf line",
            pending_start,
            "line continuation at the end of the file",
        ));
    }
    Ok(sections)
}

/// Splits `key = f1, "f 2", f3` respecting quotes (`""` inside quotes is one `"`).
fn parse_line(t: &str, lineno: usize) -> Result<Line> {
    let mut key = None;
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = t.chars().peekable();
    let finish = |cur: &mut String, fields: &mut Vec<String>| -> Result<()> {
        if fields.len() >= MAX_FIELDS {
            return Err(Error::corrupt_line(
                "inf line",
                lineno,
                format!("more than {MAX_FIELDS} fields"),
            ));
        }
        fields.push(unquote(cur.trim()));
        cur.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quote && chars.peek() == Some(&'"') => {
                cur.push('"');
                cur.push('"');
                chars.next();
            }
            '"' => {
                in_quote = !in_quote;
                cur.push('"');
            }
            '=' if !in_quote && key.is_none() && fields.is_empty() => {
                key = Some(unquote(cur.trim()));
                cur.clear();
            }
            ',' if !in_quote => finish(&mut cur, &mut fields)?,
            _ => cur.push(c),
        }
    }
    if in_quote {
        return Err(Error::corrupt_line(
            "inf line",
            lineno,
            format!("unterminated quoted string in {t:?}"),
        ));
    }
    finish(&mut cur, &mut fields)?;
    if fields.len() == 1 && fields[0].is_empty() && key.is_none() {
        fields.clear();
    }
    Ok(Line {
        key,
        fields,
        line: lineno,
    })
}

/// Removes quote characters; `""` inside quotes is a literal quote.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    let mut in_quote = false;
    while let Some(c) = chars.next() {
        if c == '"' {
            if in_quote && chars.peek() == Some(&'"') {
                out.push('"');
                chars.next();
            } else {
                in_quote = !in_quote;
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `TargetOSVersion` decoration: `NT[arch][.[major][.[minor][.[ProductType][.[SuiteMask][.[Build]]]]]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TargetOs {
    /// The decoration as written.
    pub text: String,
    /// `None` for a bare `NT` (any architecture).
    pub arch: Option<Arch>,
    /// Minimum OS major version.
    pub major: Option<u32>,
    /// Minimum OS minor version.
    pub minor: Option<u32>,
    /// `VER_NT_WORKSTATION` (1), `VER_NT_DOMAIN_CONTROLLER` (2) or `VER_NT_SERVER` (3).
    pub product_type: Option<u32>,
    /// Suite mask (recorded, not matched).
    pub suite_mask: Option<u32>,
    /// Minimum build (NT 10.0 and later).
    pub build: Option<u32>,
}

impl TargetOs {
    /// Parses a decoration.
    ///
    /// # Errors
    /// `Corrupt` (at `line`) if it does not start with `NT`, names an unknown architecture, has
    /// more than six parts or a non-numeric number.
    pub fn parse(text: &str, line: usize) -> Result<Self> {
        let bad = |detail: String| Error::corrupt_line("inf target os decoration", line, detail);
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 6 {
            return Err(bad(format!(
                "{text:?} has {} parts, at most 6",
                parts.len()
            )));
        }
        let head = parts.first().copied().unwrap_or("");
        // `get` keeps a multi-byte character at byte 2 from panicking (found by review).
        let (Some(nt), Some(arch_name)) = (head.get(..2), head.get(2..)) else {
            return Err(bad(format!("{text:?} does not start with NT")));
        };
        if !nt.eq_ignore_ascii_case("nt") {
            return Err(bad(format!("{text:?} does not start with NT")));
        }

        let arch = if arch_name.is_empty() {
            None
        } else {
            Some(Arch::from_name(arch_name).ok_or_else(|| {
                bad(format!(
                    "unknown architecture {arch_name:?} in {text:?}, expected x86, amd64 or arm64"
                ))
            })?)
        };
        let num = |i: usize, what: &str| -> Result<Option<u32>> {
            match parts.get(i).map(|s| s.trim()) {
                None | Some("") => Ok(None),
                Some(s) => parse_number(s)
                    .map(Some)
                    .ok_or_else(|| bad(format!("{what} {s:?} in {text:?} is not a number"))),
            }
        };
        Ok(Self {
            text: text.to_owned(),
            arch,
            major: num(1, "major version")?,
            minor: num(2, "minor version")?,
            product_type: num(3, "product type")?,
            suite_mask: num(4, "suite mask")?,
            build: num(5, "build number")?,
        })
    }

    /// Whether Windows would accept this decoration on `t` ("INF Manufacturer Section": each
    /// given part is a minimum, the product type must match).
    #[must_use]
    pub fn applies_to(&self, t: &WindowsTarget) -> bool {
        if self.arch.is_some_and(|a| a != t.arch) {
            return false;
        }
        let want = (self.major.unwrap_or(0), self.minor.unwrap_or(0));
        if (t.major, t.minor) < want {
            return false;
        }
        if let Some(pt) = self.product_type {
            let is_server = pt == 2 || pt == 3;
            if is_server != t.server {
                return false;
            }
        }
        if let Some(b) = self.build
            && (t.major, t.minor) == want
            && t.build < b
        {
            return false;
        }
        true
    }

    /// Ordering key: the most specific decoration wins.
    fn rank(&self) -> (u32, u32, u32, bool) {
        (
            self.major.unwrap_or(0),
            self.minor.unwrap_or(0),
            self.build.unwrap_or(0),
            self.product_type.is_some(),
        )
    }
}

/// `DriverVer = mm/dd/yyyy[,w.x.y.z]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DriverVer {
    /// Year, month, day.
    pub date: (u16, u8, u8),
    /// The four version parts, when given.
    pub version: Option<[u16; 4]>,
}

impl std::fmt::Display for DriverVer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = self.date;
        write!(f, "{m:02}/{d:02}/{y:04}")?;
        if let Some([a, b, c, e]) = self.version {
            write!(f, ",{a}.{b}.{c}.{e}")?;
        }
        Ok(())
    }
}

/// The `[Version]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InfVersion {
    /// `$Windows NT$` or `$Chicago$`.
    pub signature: String,
    /// Device setup class name.
    pub class: Option<String>,
    /// Device setup class GUID, `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
    pub class_guid: Option<String>,
    /// Provider (substituted).
    pub provider: Option<String>,
    /// Driver date and version.
    pub driver_ver: Option<DriverVer>,
    /// The catalog file for this architecture (`CatalogFile.NT<arch>`, else `CatalogFile`).
    pub catalog_file: Option<String>,
}

/// A [Manufacturer] entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Manufacturer {
    /// Manufacturer name (substituted).
    pub name: String,
    /// Models section base name.
    pub models_section: String,
    /// TargetOS decorations.
    pub decorations: Vec<TargetOs>,
}

/// A device a Models section binds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Model {
    /// The full Models section name it comes from.
    pub section: String,
    /// The decoration of that section (`None`: undecorated).
    pub decoration: Option<TargetOs>,
    /// Device description (substituted).
    pub description: String,
    /// DDInstall section base name.
    pub install_section: String,
    /// The hardware ID and compatible IDs, such as `PCI\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00`.
    pub hardware_ids: Vec<String>,
}

/// A directory id ("Using Dirids"): 10 Windows, 11 System32, 12 System32\drivers, 13 the
/// driver-store folder of the package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestDir {
    /// The dirid.
    pub dirid: u32,
    /// Optional subdirectory.
    pub subdir: Option<String>,
}

impl DestDir {
    /// The directory relative to `%SystemRoot%`, for dirids 10, 11 and 12.
    #[must_use]
    pub fn system_root_relative(&self) -> Option<String> {
        let base = match self.dirid {
            10 => "",
            11 => "System32",
            12 => "System32\\drivers",
            _ => return None,
        };
        let mut s = base.to_owned();
        if let Some(sub) = &self.subdir {
            if !s.is_empty() {
                s.push('\\');
            }
            s.push_str(sub);
        }
        Some(s)
    }
}

/// One file of a CopyFiles section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyFile {
    /// Destination file name.
    pub name: String,
    /// Source file name when it differs.
    pub source: Option<String>,
    /// Copy flags (`COPYFLG_*`).
    pub flags: u32,
    /// Destination directory from `[DestinationDirs]` (the section's own entry, else `DefaultDestDir`).
    pub dest: Option<DestDir>,
}

/// One AddReg line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AddReg {
    /// `HKR`, `HKLM`, `HKCR`, `HKCU` or `HKU`.
    pub root: String,
    /// Subkey (may be empty).
    pub subkey: String,
    /// Value name (`None`: the key only, or the default value).
    pub value_name: Option<String>,
    /// `FLG_ADDREG_*` flags (0 is REG_SZ).
    pub flags: u32,
    /// The value fields (substituted).
    pub values: Vec<String>,
}

/// `ServiceBinary = %12%\viostor.sys`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceBinary {
    /// As written (substituted).
    pub raw: String,
    /// The leading dirid, if any.
    pub dirid: Option<u32>,
    /// The rest after the dirid and its backslash.
    pub path: String,
}

impl ServiceBinary {
    /// The path relative to `%SystemRoot%` (`System32\drivers\viostor.sys`), for dirids 10–12.
    #[must_use]
    pub fn system_root_relative(&self) -> Option<String> {
        let dir = DestDir {
            dirid: self.dirid?,
            subdir: None,
        }
        .system_root_relative()?;
        Some(if dir.is_empty() {
            self.path.clone()
        } else {
            format!("{dir}\\{}", self.path)
        })
    }

    /// The registry `ImagePath` Windows writes for it (`\SystemRoot\System32\drivers\viostor.sys`).
    #[must_use]
    pub fn image_path(&self) -> Option<String> {
        self.system_root_relative()
            .map(|p| format!("\\SystemRoot\\{p}"))
    }
}

/// An `AddService` directive with its service-install section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceInstall {
    /// Service name (the `Services\<name>` key).
    pub name: String,
    /// `SPSVCINST_*` flags (2: assoc service, the device's function driver).
    pub flags: u32,
    /// The service-install section name.
    pub section: String,
    /// Display name (substituted).
    pub display_name: Option<String>,
    /// `SERVICE_KERNEL_DRIVER` (1), `SERVICE_FILE_SYSTEM_DRIVER` (2), 0x10, 0x20.
    pub service_type: u32,
    /// 0 boot, 1 system, 2 auto, 3 demand, 4 disabled.
    pub start_type: u32,
    /// 0 ignore, 1 normal, 2 severe, 3 critical.
    pub error_control: u32,
    /// Load order group, such as `SCSI miniport`.
    pub load_order_group: Option<String>,
    /// The driver binary.
    pub binary: ServiceBinary,
    /// AddReg lines of the service-install section.
    pub add_reg: Vec<AddReg>,
}

/// A DDInstall section, resolved for the architecture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DdInstall {
    /// The name the Models entry gives.
    pub base: String,
    /// The section actually used (`base.NTamd64`, `base.NT` or `base`).
    pub section: String,
    /// Files copied.
    pub copy_files: Vec<CopyFile>,
    /// Registry lines added.
    pub add_reg: Vec<AddReg>,
    /// Services from `<section>.Services`.
    pub services: Vec<ServiceInstall>,
    /// Registry lines of `<section>.HW` (device-instance settings such as MSI support).
    pub hw_add_reg: Vec<AddReg>,
}

/// What an INF installs, for one architecture.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InfDriver {
    /// The text encoding.
    pub encoding: Encoding,
    /// The `[Version]` section.
    pub version: InfVersion,
    /// [Manufacturer] entries.
    pub manufacturers: Vec<Manufacturer>,
    /// Models entries whose decoration is for this architecture (or for any).
    pub models: Vec<Model>,
    /// The install sections those models name.
    pub installs: Vec<DdInstall>,
    /// Files named in `[SourceDisksFiles]` and `[SourceDisksFiles.<arch>]`.
    pub source_disks_files: Vec<String>,
    /// Problems that did not stop parsing (unknown string keys).
    pub warnings: Vec<String>,
}

impl InfDriver {
    /// The models Windows would consider on `t`: those of the most specific applicable
    /// decoration of each manufacturer.
    #[must_use]
    pub fn models_for(&self, t: &WindowsTarget) -> Vec<&Model> {
        let mut out = Vec::new();
        for m in &self.manufacturers {
            let best = m
                .decorations
                .iter()
                .filter(|d| d.applies_to(t))
                .max_by_key(|d| d.rank());
            let wanted = best.map(|d| format!("{}.{}", m.models_section, d.text));
            let wanted = wanted.as_deref().unwrap_or(&m.models_section);
            out.extend(
                self.models
                    .iter()
                    .filter(|x| x.section.eq_ignore_ascii_case(wanted)),
            );
        }
        out
    }

    /// All services of all install sections (deduplicated by name).
    #[must_use]
    pub fn services(&self) -> Vec<&ServiceInstall> {
        let mut out: Vec<&ServiceInstall> = Vec::new();
        for s in self.installs.iter().flat_map(|i| &i.services) {
            if !out.iter().any(|o| o.name.eq_ignore_ascii_case(&s.name)) {
                out.push(s);
            }
        }
        out
    }

    /// All hardware IDs the INF binds on `t`.
    #[must_use]
    pub fn hardware_ids_for(&self, t: &WindowsTarget) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.models_for(t) {
            for id in &m.hardware_ids {
                if !out.iter().any(|o| o.eq_ignore_ascii_case(id)) {
                    out.push(id);
                }
            }
        }
        out
    }
}

/// Parses `123` or `0x7b` into a u32.
fn parse_number(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()
    } else {
        s.parse().ok()
    }
}

struct DriverBuilder<'a> {
    inf: &'a Inf,
    arch: Arch,
    warnings: Vec<String>,
}

impl<'a> DriverBuilder<'a> {
    fn sub(&mut self, s: &str, line: usize) -> Result<String> {
        self.inf.subst(s, line, &mut self.warnings)
    }

    fn value(&mut self, section: &Section, key: &str) -> Result<Option<(String, usize)>> {
        let Some(l) = section.lines.iter().find(|l| {
            l.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case(key))
        }) else {
            return Ok(None);
        };
        let raw = l.fields.join(",");
        Ok(Some((self.sub(&raw, l.line)?, l.line)))
    }

    fn build(mut self) -> Result<InfDriver> {
        let version = self.version()?;
        let manufacturers = self.manufacturers()?;
        let mut models = Vec::new();
        for m in &manufacturers {
            let arch_decorations: Vec<&TargetOs> = m
                .decorations
                .iter()
                .filter(|d| d.arch.is_none_or(|a| a == self.arch))
                .collect();
            let mut names: Vec<(String, Option<TargetOs>)> = arch_decorations
                .iter()
                .map(|d| {
                    (
                        format!("{}.{}", m.models_section, d.text),
                        Some((*d).clone()),
                    )
                })
                .collect();
            if m.decorations.is_empty() {
                names.push((m.models_section.clone(), None));
            }
            for (name, decoration) in names {
                let Some(sec) = self.inf.section(&name) else {
                    return Err(Error::corrupt_line(
                        "inf models section",
                        self.manufacturer_line(),
                        format!("models section [{name}] named by [Manufacturer] is missing"),
                    ));
                };
                for l in &sec.lines {
                    if models.len() >= MAX_ITEMS {
                        return Err(Error::unsupported(
                            "inf",
                            format!("more than {MAX_ITEMS} models"),
                        ));
                    }
                    let desc = match &l.key {
                        Some(k) => self.sub(k, l.line)?,
                        None => String::new(),
                    };
                    let install = l.fields.first().map(|s| s.trim()).unwrap_or("");
                    if install.is_empty() {
                        return Err(Error::corrupt_line(
                            "inf models section",
                            l.line,
                            format!("entry in [{}] names no install section", sec.name),
                        ));
                    }
                    let ids: Vec<String> = l
                        .fields
                        .iter()
                        .skip(1)
                        .map(|f| f.trim().to_owned())
                        .filter(|f| !f.is_empty())
                        .collect();
                    if ids.is_empty() {
                        return Err(Error::corrupt_line(
                            "inf models section",
                            l.line,
                            format!("entry {desc:?} in [{}] names no hardware id", sec.name),
                        ));
                    }
                    models.push(Model {
                        section: sec.name.clone(),
                        decoration: decoration.clone(),
                        description: desc,
                        install_section: install.to_owned(),
                        hardware_ids: ids,
                    });
                }
            }
        }
        let mut installs: Vec<DdInstall> = Vec::new();
        for m in &models {
            if installs
                .iter()
                .any(|i| i.base.eq_ignore_ascii_case(&m.install_section))
            {
                continue;
            }
            if installs.len() >= MAX_ITEMS {
                return Err(Error::unsupported(
                    "inf",
                    format!("more than {MAX_ITEMS} install sections"),
                ));
            }
            installs.push(self.install(&m.install_section)?);
        }
        let mut source_disks_files = Vec::new();
        for name in [
            "SourceDisksFiles".to_owned(),
            format!("SourceDisksFiles.{}", self.arch.inf_name()),
        ] {
            if let Some(s) = self.inf.section(&name) {
                for l in &s.lines {
                    let f = l
                        .key
                        .clone()
                        .or_else(|| l.fields.first().cloned())
                        .unwrap_or_default();
                    if !f.is_empty()
                        && !source_disks_files
                            .iter()
                            .any(|x: &String| x.eq_ignore_ascii_case(&f))
                    {
                        source_disks_files.push(f);
                    }
                }
            }
        }
        Ok(InfDriver {
            encoding: self.inf.encoding,
            version,
            manufacturers,
            models,
            installs,
            source_disks_files,
            warnings: self.warnings,
        })
    }

    fn manufacturer_line(&self) -> usize {
        self.inf.section("Manufacturer").map_or(0, |s| s.line)
    }

    fn version(&mut self) -> Result<InfVersion> {
        let Some(sec) = self.inf.section("Version") else {
            return Err(Error::corrupt_line(
                "inf version section",
                1,
                "no [Version] section",
            ));
        };
        let Some((signature, line)) = self.value(sec, "Signature")? else {
            return Err(Error::corrupt_line(
                "inf version section",
                sec.line,
                "no Signature",
            ));
        };
        if !SIGNATURES
            .iter()
            .any(|s| s.eq_ignore_ascii_case(&signature))
        {
            return Err(Error::corrupt_line(
                "inf version section",
                line,
                format!("signature {signature:?} is not one of \"$Windows NT$\", \"$Chicago$\""),
            ));
        }
        let class = self.value(sec, "Class")?.map(|v| v.0);
        let class_guid = match self.value(sec, "ClassGuid")? {
            Some((g, line)) => {
                if !is_guid(&g) {
                    return Err(Error::corrupt_line(
                        "inf version section",
                        line,
                        format!(
                            "class guid {g:?} is not of the form {{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}}"
                        ),
                    ));
                }
                Some(g)
            }
            None => None,
        };
        let provider = self.value(sec, "Provider")?.map(|v| v.0);
        let driver_ver = match self.value(sec, "DriverVer")? {
            Some((v, line)) => Some(parse_driver_ver(&v, line)?),
            None => None,
        };
        let decorated = format!("CatalogFile.NT{}", self.arch.inf_name());
        let catalog_file = match self.value(sec, &decorated)? {
            Some(v) => Some(v.0),
            None => match self.value(sec, "CatalogFile.NT")? {
                Some(v) => Some(v.0),
                None => self.value(sec, "CatalogFile")?.map(|v| v.0),
            },
        };
        Ok(InfVersion {
            signature,
            class,
            class_guid,
            provider,
            driver_ver,
            catalog_file,
        })
    }

    fn manufacturers(&mut self) -> Result<Vec<Manufacturer>> {
        let Some(sec) = self.inf.section("Manufacturer") else {
            return Err(Error::corrupt_line(
                "inf manufacturer section",
                1,
                "no [Manufacturer] section",
            ));
        };
        let mut out = Vec::new();
        for l in &sec.lines {
            let Some(base) = l.fields.first().filter(|f| !f.is_empty()) else {
                return Err(Error::corrupt_line(
                    "inf manufacturer section",
                    l.line,
                    "entry names no models section",
                ));
            };
            let name = match &l.key {
                Some(k) => self.sub(k, l.line)?,
                None => base.clone(),
            };
            let mut decorations = Vec::new();
            for d in l.fields.iter().skip(1).filter(|d| !d.is_empty()) {
                decorations.push(TargetOs::parse(d, l.line)?);
            }
            if out.len() >= MAX_ITEMS {
                return Err(Error::unsupported(
                    "inf",
                    format!("more than {MAX_ITEMS} manufacturers"),
                ));
            }
            out.push(Manufacturer {
                name,
                models_section: base.clone(),
                decorations,
            });
        }
        if out.is_empty() {
            return Err(Error::corrupt_line(
                "inf manufacturer section",
                sec.line,
                "[Manufacturer] is empty",
            ));
        }
        Ok(out)
    }

    /// Finds `base.NT<arch>`, `base.NT` or `base` ("Creating INF Files for Multiple Platforms").
    fn decorated_section(&self, base: &str) -> Option<&'a Section> {
        let inf: &'a Inf = self.inf;
        [
            format!("{base}.NT{}", self.arch.inf_name()),
            format!("{base}.NT"),
            base.to_owned(),
        ]
        .iter()
        .find_map(|n| inf.section(n))
    }

    fn install(&mut self, base: &str) -> Result<DdInstall> {
        let Some(sec) = self.decorated_section(base) else {
            return Err(Error::corrupt_line(
                "inf ddinstall section",
                self.manufacturer_line(),
                format!("install section [{base}] named by a model is missing"),
            ));
        };
        let mut copy_files = Vec::new();
        let mut add_reg = Vec::new();
        for l in &sec.lines {
            let Some(k) = &l.key else { continue };
            if k.eq_ignore_ascii_case("CopyFiles") {
                for f in l.fields.iter().filter(|f| !f.is_empty()) {
                    if let Some(single) = f.strip_prefix('@') {
                        copy_files.push(CopyFile {
                            name: single.to_owned(),
                            source: None,
                            flags: 0,
                            dest: self.dest_dir(None)?,
                        });
                    } else {
                        copy_files.extend(self.copy_section(f, l.line)?);
                    }
                }
            } else if k.eq_ignore_ascii_case("AddReg") {
                for f in l.fields.iter().filter(|f| !f.is_empty()) {
                    add_reg.extend(self.add_reg_section(f, l.line)?);
                }
            }
        }
        let services_name = format!("{}.Services", sec.name);
        let mut services = Vec::new();
        if let Some(svc) = self.inf.section(&services_name) {
            for l in &svc.lines {
                if l.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("AddService"))
                {
                    services.push(self.service(l)?);
                }
            }
        }
        let mut hw_add_reg = Vec::new();
        if let Some(hw) = self.inf.section(&format!("{}.HW", sec.name)) {
            for l in &hw.lines {
                if l.key
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case("AddReg"))
                {
                    for f in l.fields.iter().filter(|f| !f.is_empty()) {
                        hw_add_reg.extend(self.add_reg_section(f, l.line)?);
                    }
                }
            }
        }
        Ok(DdInstall {
            base: base.to_owned(),
            section: sec.name.clone(),
            copy_files,
            add_reg,
            services,
            hw_add_reg,
        })
    }

    fn dest_dir(&mut self, section: Option<&str>) -> Result<Option<DestDir>> {
        let Some(dd) = self.inf.section("DestinationDirs") else {
            return Ok(None);
        };
        let line = section
            .and_then(|s| {
                dd.lines
                    .iter()
                    .find(|l| l.key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(s)))
            })
            .or_else(|| {
                dd.lines.iter().find(|l| {
                    l.key
                        .as_deref()
                        .is_some_and(|k| k.eq_ignore_ascii_case("DefaultDestDir"))
                })
            });
        let Some(l) = line else { return Ok(None) };
        let id = self.sub(l.fields.first().map(|s| s.trim()).unwrap_or(""), l.line)?;
        let id = id.as_str();
        let dirid = parse_number(id).ok_or_else(|| {
            Error::corrupt_line(
                "inf destinationdirs section",
                l.line,
                format!("dirid {id:?} is not a number"),
            )
        })?;
        let subdir = match l.fields.get(1).filter(|s| !s.is_empty()) {
            Some(s) => Some(self.sub(s, l.line)?),
            None => None,
        };
        Ok(Some(DestDir { dirid, subdir }))
    }

    fn copy_section(&mut self, name: &str, line: usize) -> Result<Vec<CopyFile>> {
        let Some(sec) = self.inf.section(name) else {
            return Err(Error::corrupt_line(
                "inf copyfiles directive",
                line,
                format!("copyfiles section [{name}] is missing"),
            ));
        };
        let dest = self.dest_dir(Some(name))?;
        let mut out = Vec::new();
        for l in &sec.lines {
            let first = l
                .key
                .as_ref()
                .or(l.fields.first())
                .map(|s| s.trim())
                .unwrap_or("");
            if first.is_empty() {
                return Err(Error::corrupt_line(
                    "inf copyfiles section",
                    l.line,
                    "entry names no file",
                ));
            }
            let source = l.fields.get(1).filter(|s| !s.is_empty()).cloned();
            let flags = match l.fields.get(3).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                Some(s) => {
                    let s = self.sub(s, l.line)?;
                    parse_number(&s).ok_or_else(|| {
                        Error::corrupt_line(
                            "inf copyfiles section",
                            l.line,
                            format!("flags {s:?} is not a number"),
                        )
                    })?
                }
                None => 0,
            };
            out.push(CopyFile {
                name: first.to_owned(),
                source,
                flags,
                dest: dest.clone(),
            });
            if out.len() > MAX_ITEMS {
                return Err(Error::unsupported(
                    "inf",
                    format!("more than {MAX_ITEMS} files in [{name}]"),
                ));
            }
        }
        Ok(out)
    }

    fn add_reg_section(&mut self, name: &str, line: usize) -> Result<Vec<AddReg>> {
        let Some(sec) = self.inf.section(name) else {
            return Err(Error::corrupt_line(
                "inf addreg directive",
                line,
                format!("addreg section [{name}] is missing"),
            ));
        };
        let mut out = Vec::new();
        for l in &sec.lines {
            let mut fields = l.fields.clone();
            if let Some(k) = &l.key {
                // An `=` inside an unquoted registry value is not a key: put the text back.
                let first = fields.first().cloned().unwrap_or_default();
                if let Some(f) = fields.first_mut() {
                    *f = format!("{k}={first}");
                }
            }
            let root = fields
                .first()
                .map(|s| s.trim().to_ascii_uppercase())
                .unwrap_or_default();
            if !REG_ROOTS.contains(&root.as_str()) {
                return Err(Error::corrupt_line(
                    "inf addreg section",
                    l.line,
                    format!("registry root {root:?} is not one of HKR, HKLM, HKCR, HKCU, HKU"),
                ));
            }
            let subkey = self.sub(fields.get(1).map_or("", |s| s.as_str()), l.line)?;
            let value_name = match fields.get(2).filter(|s| !s.is_empty()) {
                Some(s) => Some(self.sub(s, l.line)?),
                None => None,
            };
            let flags = match fields.get(3).map(|s| s.trim()).filter(|s| !s.is_empty()) {
                Some(s) => {
                    let s = self.sub(s, l.line)?;
                    parse_number(&s).ok_or_else(|| {
                        Error::corrupt_line(
                            "inf addreg section",
                            l.line,
                            format!("flags {s:?} is not a number"),
                        )
                    })?
                }
                None => 0,
            };
            let mut values = Vec::new();
            for v in fields.iter().skip(4) {
                values.push(self.sub(v, l.line)?);
            }
            out.push(AddReg {
                root,
                subkey,
                value_name,
                flags,
                values,
            });
            if out.len() > MAX_ITEMS {
                return Err(Error::unsupported(
                    "inf",
                    format!("more than {MAX_ITEMS} lines in [{name}]"),
                ));
            }
        }
        Ok(out)
    }

    fn service(&mut self, l: &Line) -> Result<ServiceInstall> {
        let bad = |detail: String| Error::corrupt_line("inf addservice directive", l.line, detail);
        let name = l
            .fields
            .first()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no service name".into()))?;
        let flags_text = self.sub(l.fields.get(1).map(|s| s.trim()).unwrap_or(""), l.line)?;
        let flags_text = flags_text.as_str();
        let flags = if flags_text.is_empty() {
            0
        } else {
            parse_number(flags_text)
                .ok_or_else(|| bad(format!("flags {flags_text:?} is not a number")))?
        };
        let section_name = l
            .fields
            .get(2)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("service {name} names no service-install section")))?;
        let Some(sec) = self.inf.section(section_name) else {
            return Err(bad(format!(
                "service-install section [{section_name}] is missing"
            )));
        };
        let num = |this: &mut Self, key: &str, max: u32, allowed: &str| -> Result<u32> {
            let Some((v, line)) = this.value(sec, key)? else {
                return Err(Error::corrupt_line(
                    "inf service-install section",
                    sec.line,
                    format!("[{}] has no {key}", sec.name),
                ));
            };
            match parse_number(&v) {
                Some(n) if n <= max => Ok(n),
                _ => Err(Error::corrupt_line(
                    "inf service-install section",
                    line,
                    format!("{key} {v:?} out of range {allowed}"),
                )),
            }
        };
        let service_type = num(self, "ServiceType", 0x3ff, "0..=0x3ff")?;
        let start_type = num(self, "StartType", 4, "0..=4")?;
        let error_control = num(self, "ErrorControl", 3, "0..=3")?;
        let Some((raw, _)) = self.value(sec, "ServiceBinary")? else {
            return Err(Error::corrupt_line(
                "inf service-install section",
                sec.line,
                format!("[{}] has no ServiceBinary", sec.name),
            ));
        };
        let binary = parse_service_binary(&raw);
        let load_order_group = self.value(sec, "LoadOrderGroup")?.map(|v| v.0);
        let display_name = self.value(sec, "DisplayName")?.map(|v| v.0);
        let mut add_reg = Vec::new();
        for al in sec.lines.iter().filter(|x| {
            x.key
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("AddReg"))
        }) {
            for f in al.fields.iter().filter(|f| !f.is_empty()) {
                add_reg.extend(self.add_reg_section(f, al.line)?);
            }
        }
        Ok(ServiceInstall {
            name: name.to_owned(),
            flags,
            section: sec.name.clone(),
            display_name,
            service_type,
            start_type,
            error_control,
            load_order_group,
            binary,
            add_reg,
        })
    }
}

fn parse_service_binary(raw: &str) -> ServiceBinary {
    if let Some(rest) = raw.strip_prefix('%')
        && let Some(end) = rest.find('%')
        && let Ok(id) = rest[..end].parse::<u32>()
    {
        let path = rest[end + 1..].trim_start_matches('\\').to_owned();
        return ServiceBinary {
            raw: raw.to_owned(),
            dirid: Some(id),
            path,
        };
    }
    ServiceBinary {
        raw: raw.to_owned(),
        dirid: None,
        path: raw.to_owned(),
    }
}

fn is_guid(g: &str) -> bool {
    let b = g.as_bytes();
    b.len() == 38
        && b[0] == b'{'
        && b[37] == b'}'
        && b[1..37].iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn parse_driver_ver(v: &str, line: usize) -> Result<DriverVer> {
    let bad = |detail: String| Error::corrupt_line("inf driverver", line, detail);
    let mut parts = v.splitn(2, ',');
    let date = parts.next().unwrap_or("").trim();
    let d: Vec<&str> = date.split('/').collect();
    let [m, dd, y] = d.as_slice() else {
        return Err(bad(format!("date {date:?} is not mm/dd/yyyy")));
    };
    let num = |s: &str, what: &str, lo: u16, hi: u16| -> Result<u16> {
        match s.trim().parse::<u16>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(bad(format!(
                "{what} {s:?} in {date:?} out of range {lo}..={hi}"
            ))),
        }
    };
    let month = u8::try_from(num(m, "month", 1, 12)?).unwrap_or(1);
    let day = u8::try_from(num(dd, "day", 1, 31)?).unwrap_or(1);
    let year = num(y, "year", 1980, 9999)?;
    let version = match parts.next().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(ver) => {
            let ps: Vec<&str> = ver.split('.').collect();
            if ps.is_empty() || ps.len() > 4 {
                return Err(bad(format!(
                    "version {ver:?} has {} parts, expected 1..=4",
                    ps.len()
                )));
            }
            let mut out = [0u16; 4];
            for (slot, p) in out.iter_mut().zip(&ps) {
                *slot = p.trim().parse().map_err(|_| {
                    bad(format!(
                        "version part {p:?} in {ver:?} out of range 0..=65535"
                    ))
                })?;
            }
            Some(out)
        }
    };
    Ok(DriverVer {
        date: (year, month, day),
        version,
    })
}

#[cfg(test)]
#[path = "inf_tests.rs"]
mod tests;
