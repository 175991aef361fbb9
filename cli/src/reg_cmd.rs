//! `rehost reg get|set|delete|import|export`: a Windows guest's registry, offline.
//!
//! HIVE is a guest path (`/Windows/System32/config/SYSTEM`) or a well-known name (SYSTEM,
//! SOFTWARE, SAM, SECURITY, DEFAULT) found under the guest's system root. Hives are read through
//! the guest filesystem and parsed by our own `hive` crate; a hive with pending transaction-log
//! data is replayed from its `.LOG1`/`.LOG2` files when they allow it and refused otherwise.
//! Edits are made in memory (`HiveMut`), shown as a .reg diff, and written back as one whole-file
//! replacement through the write session of [`crate::write_cmd`] (transaction or overlay), which
//! keeps the file's NTFS security descriptor.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use guestfs::{FsRead, FsReadExt};
use hive::{Hive, HiveMut, Value, ValueType};

use crate::write_cmd::{Step, UsageError, WriteOpts, run_plan};

/// The well-known hives: short name, file name under `System32/config`, root key as .reg
/// files spell it.
const KNOWN_HIVES: [(&str, &str); 5] = [
    ("SYSTEM", r"HKEY_LOCAL_MACHINE\SYSTEM"),
    ("SOFTWARE", r"HKEY_LOCAL_MACHINE\SOFTWARE"),
    ("SAM", r"HKEY_LOCAL_MACHINE\SAM"),
    ("SECURITY", r"HKEY_LOCAL_MACHINE\SECURITY"),
    ("DEFAULT", r"HKEY_USERS\.DEFAULT"),
];

/// `rehost reg --help`.
pub(crate) const LONG_ABOUT: &str = "Read and change a Windows guest's registry, offline.

HIVE is SYSTEM, SOFTWARE, SAM, SECURITY or DEFAULT (found under the guest's Windows directory) or a
guest path such as /Windows/System32/config/SYSTEM. KEY is a path below the hive's root with `\\`
between components (quote it in the shell), compared case-insensitively.

`get` and `export` only read. `set`, `delete` and `import` edit the hive in memory, print the
change as a .reg diff, and write the whole hive file back (keeping its NTFS security) through the
same transaction as `rehost cp`: --dry-run, --output NEW.qcow2, `rehost undo` and --force work the
same way. A hive with pending transaction-log data is replayed from its .LOG1/.LOG2 files; if
they cannot replay it, writing is refused unless --force, which drops that data (reading shows
the hive as it is on disk).

Exit status: 0 done, 1 refused or failed (nothing was changed), 2 usage error.";

/// Arguments of `rehost reg`.
#[derive(Debug, clap::Args)]
pub(crate) struct RegArgs {
    #[command(subcommand)]
    cmd: RegCmd,
}

/// Where the hive is.
#[derive(Debug, Clone, clap::Args)]
struct HiveArgs {
    /// The disk: an image file or NBD URI.
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The hive: SYSTEM, SOFTWARE, SAM, SECURITY, DEFAULT (under the Windows system root), or a
    /// guest path such as /Windows/System32/config/SYSTEM.
    #[arg(value_name = "HIVE")]
    hive: String,
    /// The root key's name in .reg text (default: HKEY_LOCAL_MACHINE\NAME for the well-known
    /// hives, HKEY_USERS\.DEFAULT for DEFAULT).
    #[arg(long, value_name = "KEY")]
    prefix: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum RegCmd {
    /// Print a value's data, or list a key's values and subkeys.
    #[command(after_help = "Examples:\n  \
        rehost reg get win.qcow2 SYSTEM 'ControlSet001\\Services\\viostor' Start\n  \
        rehost reg get --json win.qcow2 SOFTWARE 'Microsoft\\Windows NT\\CurrentVersion'")]
    Get {
        #[command(flatten)]
        hive: HiveArgs,
        /// Key path below the hive root, components separated by `\` (case-insensitive).
        #[arg(value_name = "KEY")]
        key: String,
        /// Value name (empty string for the default value). Without it, the key is listed.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Device holding the hive's filesystem, instead of the Windows system volume.
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Image format, instead of detecting it: raw or qcow2.
        #[arg(long, value_name = "FORMAT", value_parser = crate::inspect_cmd::parse_format)]
        format: Option<disk::detect::ImageFormat>,
    },
    /// Set a value (creating the key and missing parents).
    #[command(after_help = "Types and DATA:\n  \
        sz, expand_sz   one string\n  \
        multi_sz        one argument per string\n  \
        dword, qword    a number, decimal or 0x-prefixed hex\n  \
        binary, none    hex bytes: 01,02,ff or 0102ff\n\n\
        Examples:\n  \
        rehost reg set win.qcow2 SYSTEM 'ControlSet001\\Services\\viostor' Start --type dword 0\n  \
        rehost reg set --dry-run win.qcow2 SOFTWARE 'Vendor\\App' Path --type sz 'C:\\App'")]
    Set {
        #[command(flatten)]
        hive: HiveArgs,
        /// Key path below the hive root.
        #[arg(value_name = "KEY")]
        key: String,
        /// Value name (empty string for the default value).
        #[arg(value_name = "NAME")]
        name: String,
        /// Value type: sz, expand_sz, multi_sz, dword, qword, binary, none.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// The data (see below).
        #[arg(value_name = "DATA", allow_hyphen_values = true)]
        data: Vec<String>,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Delete a value, or (without NAME) a key and everything below it.
    #[command(after_help = "Example:\n  \
        rehost reg delete win.qcow2 SYSTEM 'ControlSet001\\Services\\vmxnet3'")]
    Delete {
        #[command(flatten)]
        hive: HiveArgs,
        /// Key path below the hive root.
        #[arg(value_name = "KEY")]
        key: String,
        /// Value name; without it the key is deleted.
        #[arg(value_name = "NAME")]
        name: Option<String>,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Apply a .reg file to the hive, all or nothing. Every key in it must be below the hive's
    /// root key (--prefix).
    #[command(after_help = "Example:\n  \
        rehost reg import --dry-run win.qcow2 SYSTEM virtio.reg")]
    Import {
        #[command(flatten)]
        hive: HiveArgs,
        /// The .reg file ("Windows Registry Editor Version 5.00" or REGEDIT4; UTF-8 or UTF-16).
        #[arg(value_name = "FILE.reg")]
        file: PathBuf,
        #[command(flatten)]
        write: WriteOpts,
    },
    /// Print a key and everything below it as a .reg file.
    #[command(after_help = "Example:\n  \
        rehost reg export win.qcow2 SYSTEM 'ControlSet001\\Services\\viostor' > viostor.reg")]
    Export {
        #[command(flatten)]
        hive: HiveArgs,
        /// Key path below the hive root (default: the whole hive).
        #[arg(value_name = "KEY", default_value = "")]
        key: String,
        /// Device holding the hive's filesystem, instead of the Windows system volume.
        #[arg(long, value_name = "DEVICE")]
        device: Option<String>,
        /// Image format, instead of detecting it: raw or qcow2.
        #[arg(long, value_name = "FORMAT", value_parser = crate::inspect_cmd::parse_format)]
        format: Option<disk::detect::ImageFormat>,
    },
}

/// `rehost reg …`.
pub(crate) fn run(args: &RegArgs) -> anyhow::Result<ExitCode> {
    match &args.cmd {
        RegCmd::Get {
            hive,
            key,
            name,
            json,
            device,
            format,
        } => get(
            hive,
            key,
            name.as_deref(),
            *json,
            &ReadAt {
                device: device.as_deref(),
                format: *format,
            },
        ),
        RegCmd::Export {
            hive,
            key,
            device,
            format,
        } => export(
            hive,
            key,
            &ReadAt {
                device: device.as_deref(),
                format: *format,
            },
        ),
        RegCmd::Set {
            hive,
            key,
            name,
            kind,
            data,
            write,
        } => {
            let (kind, bytes) = parse_data(kind, data)?;
            let (key, name) = (key.clone(), name.clone());
            edit(hive, write, move |w| {
                w.create_key(&key)?;
                w.set_value(&key, &name, kind, &bytes)?;
                Ok(())
            })
        }
        RegCmd::Delete {
            hive,
            key,
            name,
            write,
        } => {
            let (key, name) = (key.clone(), name.clone());
            edit(hive, write, move |w| {
                let existed = match &name {
                    Some(n) => w.delete_value(&key, n)?,
                    None => w.delete_key(&key)?,
                };
                if !existed {
                    anyhow::bail!(
                        "{} not found",
                        match &name {
                            Some(n) => format!("value {n:?} of key {key:?}"),
                            None => format!("key {key:?}"),
                        }
                    );
                }
                Ok(())
            })
        }
        RegCmd::Import { hive, file, write } => {
            let text = read_reg_file(file)?;
            let prefix = prefix_for(hive);
            edit(hive, write, move |w| {
                w.apply_reg(&text, &prefix)
                    .context("the .reg file cannot be applied; nothing was changed")?;
                Ok(())
            })
        }
    }
}

/// Reads a .reg file, UTF-8 or UTF-16LE with a byte-order mark (what regedit writes).
fn read_reg_file(path: &PathBuf) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(rest) = bytes.strip_prefix(&[0xff, 0xfe]) {
        let units: Vec<u16> = rest
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        return String::from_utf16(&units)
            .with_context(|| format!("{} is not valid UTF-16", path.display()));
    }
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(&bytes);
    String::from_utf8(bytes.to_vec()).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The hive's file path in the guest.
fn hive_path(fs: &dyn FsRead, hive: &str) -> anyhow::Result<String> {
    if hive.starts_with('/') {
        return Ok(hive.to_owned());
    }
    let Some((name, _)) = KNOWN_HIVES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(hive))
    else {
        return Err(UsageError(format!(
            "hive {hive:?} is neither a guest path nor one of SYSTEM, SOFTWARE, SAM, SECURITY, DEFAULT"
        ))
        .into());
    };
    let root = inspect::windows::systemroot(fs)
        .context("no Windows system root (/Windows/System32/config/SYSTEM) on this filesystem; give the hive's guest path")?;
    Ok(format!("{root}/System32/config/{name}"))
}

fn prefix_for(h: &HiveArgs) -> String {
    if let Some(p) = &h.prefix {
        return p.clone();
    }
    let base = h.hive.rsplit('/').next().unwrap_or(&h.hive);
    KNOWN_HIVES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(base))
        .map_or_else(
            || format!(r"HKEY_LOCAL_MACHINE\{}", base.to_ascii_uppercase()),
            |(_, p)| (*p).to_owned(),
        )
}

fn read_capped(fs: &dyn FsRead, path: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match fs.read_file(path.as_bytes(), hive::MAX_HIVE_SIZE as u64) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(path.to_owned())),
    }
}

/// What to do with a hive whose pending log data cannot be replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unreplayable {
    /// Refuse (writing without `--force`).
    Refuse,
    /// Read the primary file as it is (`get`, `export`).
    ReadAsIs,
    /// Mark the primary file clean, dropping the pending log data, so it can be written
    /// (`--force`).
    Discard,
}

/// Size of the regf base block and where its fields are ("Windows registry file format
/// specification", section "Base block": primary sequence at 4, secondary at 8, checksum of the
/// first 508 bytes at 508).
const BASE_BLOCK_LEN: usize = 4096;
const CHECKSUM_AT: usize = 508;

/// Makes a dirty base block clean: secondary sequence := primary, checksum recomputed (XOR of
/// the first 127 dwords, 0 and 0xffffffff mapped as Windows does).
fn mark_clean(data: &mut [u8]) -> Option<()> {
    let head = data.get_mut(..BASE_BLOCK_LEN)?;
    let primary: [u8; 4] = head.get(4..8)?.try_into().ok()?;
    head.get_mut(8..12)?.copy_from_slice(&primary);
    let sum = head
        .get(..CHECKSUM_AT)?
        .chunks_exact(4)
        .fold(0u32, |acc, c| {
            acc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])
        });
    let sum = match sum {
        0 => 1,
        u32::MAX => u32::MAX - 1,
        s => s,
    };
    head.get_mut(CHECKSUM_AT..CHECKSUM_AT + 4)?
        .copy_from_slice(&sum.to_le_bytes());
    Some(())
}

/// Reads and opens a hive, replaying its logs if it has pending data; `unreplayable` says what
/// happens when they cannot.
fn load(fs: &dyn FsRead, path: &str, unreplayable: Unreplayable) -> anyhow::Result<Hive> {
    let mut data = read_capped(fs, path)?.with_context(|| format!("{path}: not found"))?;
    let log1 = read_capped(fs, &format!("{path}.LOG1"))?;
    let log2 = read_capped(fs, &format!("{path}.LOG2"))?;
    let r = Hive::options()
        .logs(log1, log2)
        .allow_dirty(unreplayable == Unreplayable::ReadAsIs)
        .open(data.clone());
    match r {
        Ok(h) => Ok(h),
        Err(hive::Error::Dirty(_)) if unreplayable == Unreplayable::Discard => {
            let _ = writeln!(
                std::io::stderr(),
                "rehost: {path}: discarding pending transaction-log data that cannot be \
                 replayed (--force)"
            );
            mark_clean(&mut data).with_context(|| format!("{path}: shorter than a base block"))?;
            Hive::from_bytes(data).with_context(|| format!("cannot read hive {path}"))
        }
        Err(e @ hive::Error::Dirty(_)) => Err(anyhow::Error::new(e).context(format!(
            "{path} has pending transaction-log data that its .LOG1/.LOG2 files cannot replay; \
             refusing to change it (boot Windows once so it settles the hive, or pass --force \
             to drop that data)"
        ))),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read hive {path}"))),
    }
}

fn edit(
    h: &HiveArgs,
    write: &WriteOpts,
    change: impl FnOnce(&mut HiveMut) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    let prefix = prefix_for(h);
    let hive_arg = h.hive.clone();
    let unreplayable = if write.force {
        Unreplayable::Discard
    } else {
        Unreplayable::Refuse
    };
    run_plan(&h.image, write, move |fs, root| {
        let path = hive_path(fs, &hive_arg)?;
        let before = load(fs, &path, unreplayable)?;
        if before.replayed_log_entries() > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "rehost: {root}:{path}: replayed {} pending log entries; the hive is written back \
                 with them applied",
                before.replayed_log_entries()
            );
        }
        let old_size = u64::try_from(before.as_bytes().len()).unwrap_or(u64::MAX);
        let mut w = Hive::from_bytes(before.as_bytes().to_vec())?.into_mut()?;
        change(&mut w)?;
        if !w.is_modified() {
            return Ok(Vec::new());
        }
        let data = w.into_bytes();
        let after = Hive::from_bytes(data.clone())
            .context("internal error: the edited hive does not read back")?;
        let reg = hive::diff_reg(&before, &after, &prefix)?;
        if reg.trim_end() == hive::REG_HEADER.trim_end() {
            return Ok(Vec::new());
        }
        Ok(vec![Step::EditHive {
            path,
            data,
            old_size,
            reg,
        }])
    })
}

/// Where `get` and `export` read: `--device` and `--format`.
struct ReadAt<'a> {
    device: Option<&'a str>,
    format: Option<disk::detect::ImageFormat>,
}

/// Opens the guest read-only and loads the hive for `get` and `export`.
fn read_hive(h: &HiveArgs, at: &ReadAt<'_>) -> anyhow::Result<Hive> {
    let mut opts = crate::open_options();
    if let Some(f) = at.format {
        opts = opts.format(f);
    }
    let opened =
        disk::open::open(&h.image, &opts).with_context(|| format!("cannot open {}", h.image))?;
    let view = inspect::guest_view(opened.read(), at.device)
        .with_context(|| format!("cannot read the files of {}", h.image))?;
    let path = hive_path(&view.fs, &h.hive)?;
    load(&view.fs, &path, Unreplayable::ReadAsIs)
}

fn join_key(prefix: &str, key: &str) -> String {
    let key = key.trim_matches('\\');
    if key.is_empty() {
        prefix.to_owned()
    } else {
        format!("{prefix}\\{key}")
    }
}

fn export(h: &HiveArgs, key: &str, at: &ReadAt<'_>) -> anyhow::Result<ExitCode> {
    let hive = read_hive(h, at)?;
    let k = hive
        .open_path(key)?
        .with_context(|| format!("key {key:?} not found"))?;
    let text = k.export_reg(&join_key(&prefix_for(h), key))?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn type_name(t: ValueType) -> String {
    t.to_string()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// A value's data for people: strings as text, numbers in decimal, the rest as hex.
fn data_text(v: &Value) -> String {
    if let Some(s) = v.as_string() {
        return s;
    }
    if let Some(m) = v.as_multi_string() {
        return m.join("\n");
    }
    if let Some(d) = v.as_dword() {
        return d.to_string();
    }
    if let Some(q) = v.as_qword() {
        return q.to_string();
    }
    hex(&v.data)
}

fn data_json(v: &Value) -> serde_json::Value {
    if let Some(s) = v.as_string() {
        return s.into();
    }
    if let Some(m) = v.as_multi_string() {
        return m.into();
    }
    if let Some(d) = v.as_dword() {
        return d.into();
    }
    if let Some(q) = v.as_qword() {
        return q.into();
    }
    hex(&v.data).into()
}

fn value_json(v: &Value) -> serde_json::Value {
    serde_json::json!({
        "name": v.name, "type": type_name(v.kind), "type_number": v.kind.raw(),
        "data": data_json(v), "hex": hex(&v.data),
    })
}

fn get(
    h: &HiveArgs,
    key: &str,
    name: Option<&str>,
    json: bool,
    at: &ReadAt<'_>,
) -> anyhow::Result<ExitCode> {
    let hive = read_hive(h, at)?;
    let k = hive
        .open_path(key)?
        .with_context(|| format!("key {key:?} not found"))?;
    let full = join_key(&prefix_for(h), key);
    let mut out = std::io::stdout().lock();
    if let Some(name) = name {
        let v = k
            .value(name)?
            .with_context(|| format!("value {name:?} of {full} not found"))?;
        if json {
            let mut j = value_json(&v);
            j["key"] = full.into();
            serde_json::to_writer(&mut out, &j)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", data_text(&v))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let values = k.values()?;
    let subkeys: Vec<String> = k.subkeys()?.iter().map(|s| s.name().to_owned()).collect();
    if json {
        let j = serde_json::json!({
            "key": full,
            "values": values.iter().map(value_json).collect::<Vec<_>>(),
            "subkeys": subkeys,
        });
        serde_json::to_writer(&mut out, &j)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{full}")?;
        for v in &values {
            let n = if v.name.is_empty() {
                "(Default)"
            } else {
                &v.name
            };
            writeln!(
                out,
                "    {n}    {}    {}",
                type_name(v.kind),
                data_text(v).replace('\n', "\\0")
            )?;
        }
        for s in &subkeys {
            writeln!(out, "{full}\\{s}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend([0, 0]);
    v
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !matches!(c, ',' | ' ' | ':'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The value type and stored bytes for `reg set --type TYPE DATA…`.
fn parse_data(kind: &str, data: &[String]) -> anyhow::Result<(ValueType, Vec<u8>)> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let one = || -> anyhow::Result<&str> {
        match data {
            [d] => Ok(d.as_str()),
            _ => Err(usage(format!(
                "--type {kind} takes exactly one DATA argument, got {}",
                data.len()
            ))),
        }
    };
    let t = kind.to_ascii_lowercase().replace('-', "_");
    let t = t.strip_prefix("reg_").unwrap_or(&t);
    Ok(match t {
        "sz" => (ValueType::Sz, utf16z(one()?)),
        "expand_sz" => (ValueType::ExpandSz, utf16z(one()?)),
        "multi_sz" => {
            let mut v = Vec::new();
            for s in data {
                v.extend(utf16z(s));
            }
            v.extend([0, 0]);
            (ValueType::MultiSz, v)
        }
        "dword" => {
            let s = one()?;
            let n = parse_number(s)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| usage(format!("{s:?} is not a number in 0..=0xffffffff")))?;
            (ValueType::Dword, n.to_le_bytes().to_vec())
        }
        "qword" => {
            let s = one()?;
            let n = parse_number(s)
                .ok_or_else(|| usage(format!("{s:?} is not a number in 0..=2^64-1")))?;
            (ValueType::Qword, n.to_le_bytes().to_vec())
        }
        "binary" | "none" => {
            let joined = data.join(",");
            let bytes = parse_hex(&joined)
                .ok_or_else(|| usage(format!("{joined:?} is not hex bytes (01,02,ff)")))?;
            let k = if t == "binary" {
                ValueType::Binary
            } else {
                ValueType::None
            };
            (k, bytes)
        }
        other => {
            return Err(usage(format!(
                "unknown --type {other:?}: sz, expand_sz, multi_sz, dword, qword, binary, none"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn data_parses_per_type() {
        assert_eq!(
            parse_data("dword", &s(&["0x10"])).unwrap(),
            (ValueType::Dword, vec![16, 0, 0, 0])
        );
        assert_eq!(
            parse_data("REG_QWORD", &s(&["1"])).unwrap(),
            (ValueType::Qword, vec![1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            parse_data("sz", &s(&["A"])).unwrap(),
            (ValueType::Sz, vec![b'A', 0, 0, 0])
        );
        assert_eq!(
            parse_data("multi_sz", &s(&["a", "b"])).unwrap(),
            (ValueType::MultiSz, vec![b'a', 0, 0, 0, b'b', 0, 0, 0, 0, 0])
        );
        assert_eq!(
            parse_data("binary", &s(&["01,ff", "0a"])).unwrap(),
            (ValueType::Binary, vec![1, 0xff, 0x0a])
        );
        for (t, d) in [
            ("dword", &["4294967296"][..]),
            ("dword", &["1", "2"][..]),
            ("binary", &["0"][..]),
            ("float", &["1"][..]),
        ] {
            let e = parse_data(t, &s(d)).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{t} {d:?}: {e}");
        }
    }

    #[test]
    fn mark_clean_makes_a_dirty_hive_readable() {
        let dirty = hive::testkit::HiveBuilder::new()
            .value("K", "V", ValueType::Dword, &[5, 0, 0, 0])
            .sequence(9, 8)
            .build();
        assert!(matches!(
            Hive::from_bytes(dirty.clone()),
            Err(hive::Error::Dirty(_))
        ));
        let mut fixed = dirty;
        mark_clean(&mut fixed).unwrap();
        let h = Hive::from_bytes(fixed).unwrap();
        assert_eq!(h.base_block().primary_sequence, 9);
        assert_eq!(h.base_block().secondary_sequence, 9);
        let v = h
            .open_path("K")
            .unwrap()
            .unwrap()
            .value("V")
            .unwrap()
            .unwrap();
        assert_eq!(v.as_dword(), Some(5));
        assert_eq!(mark_clean(&mut [0u8; 100]), None);
    }

    #[test]
    fn prefixes_follow_the_hive_name() {
        let h = |hive: &str, prefix: Option<&str>| HiveArgs {
            image: "x".into(),
            hive: hive.into(),
            prefix: prefix.map(str::to_owned),
        };
        assert_eq!(prefix_for(&h("system", None)), r"HKEY_LOCAL_MACHINE\SYSTEM");
        assert_eq!(
            prefix_for(&h("/Windows/System32/config/DEFAULT", None)),
            r"HKEY_USERS\.DEFAULT"
        );
        assert_eq!(
            prefix_for(&h("/x/my.hiv", None)),
            r"HKEY_LOCAL_MACHINE\MY.HIV"
        );
        assert_eq!(prefix_for(&h("SYSTEM", Some("HKLM\\S"))), "HKLM\\S");
        assert_eq!(join_key("P", r"\a\b\"), r"P\a\b");
        assert_eq!(join_key("P", ""), "P");
    }
}
