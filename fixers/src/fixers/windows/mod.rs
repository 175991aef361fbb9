//! Windows fixers: virtio driver injection ([`virtio`]), the old hypervisor's services
//! ([`hypervisor`]), SAN policy and crash control ([`policy`]), and recipe registry edits
//! ([`registry`]).
//!
//! They edit registry hives with our own writer (`hive::HiveMut`) and plan one
//! [`Change::EditHive`] per hive file a step touches: the whole file before and after plus the
//! `.reg` difference for the report. Later steps read the hive through the plan overlay, so they
//! see the earlier steps' edits.
//!
//! Every Windows fixer first runs [`preflight`], which refuses (with the image untouched, since
//! planning writes nothing) a guest that is hibernated or was shut down with Fast Startup, a disk
//! holding a BitLocker volume, a dynamic (LDM) disk, and a SYSTEM hive with pending
//! transaction-log data.

use guestfs::FsReadExt;
use hive::{Hive, HiveMut, ValueType};
use inspect::report::WindowsReport;

use super::FixContext;
use crate::{Change, Error, Result};

pub(crate) mod firstboot;
#[doc(hidden)]
pub(crate) mod fuzz;
pub(crate) mod hypervisor;
pub(crate) mod policy;
pub(crate) mod registry;
pub(crate) mod virtio;

/// The registry root a hive file is loaded at, used as the prefix of the `.reg` difference.
pub(crate) const SYSTEM_PREFIX: &str = "HKEY_LOCAL_MACHINE\\SYSTEM";
/// See [`SYSTEM_PREFIX`].
pub(crate) const SOFTWARE_PREFIX: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE";
/// See [`SYSTEM_PREFIX`]. Windows 8 and later load `config\DRIVERS` at `HKLM\DRIVERS`.
pub(crate) const DRIVERS_PREFIX: &str = "HKEY_LOCAL_MACHINE\\DRIVERS";

/// MBR partition type of a dynamic (LDM) disk.
const MBR_LDM: &str = "0x42";
/// GPT partition types of a dynamic disk: LDM metadata and LDM data (UEFI spec, table of
/// OS partition type GUIDs, "Windows LDM").
const GPT_LDM: [&str; 2] = [
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3",
    "af9b60a0-1431-4f62-bc68-3311714a69ad",
];

/// The facts of the Windows guest the fixers use.
#[derive(Debug, Clone)]
pub(crate) struct WinInfo {
    /// `/Windows` (as stored on the filesystem).
    pub(crate) sysroot: String,
    /// `ControlSet001`: the control set `Select\Current` names.
    pub(crate) ccs: String,
    /// Major version (6 for 2008 R2 to 2012 R2, 10 for 2016 and later).
    pub(crate) major: u32,
    /// Minor version.
    pub(crate) minor: u32,
    /// Build number (0 if unknown).
    pub(crate) build: u32,
    /// A server edition.
    pub(crate) server: bool,
    /// Architecture, if inspection found it.
    pub(crate) arch: Option<drivers::Arch>,
}

impl WinInfo {
    /// Windows 8 / Server 2012 (6.2) or later: drivers are registered in the driver database.
    pub(crate) fn has_driver_database(&self) -> bool {
        (self.major, self.minor) >= (6, 2)
    }

    /// Guest path of a hive file (`SYSTEM`, `SOFTWARE`, `DRIVERS`).
    pub(crate) fn hive_path(&self, name: &str) -> String {
        format!("{}/System32/config/{name}", self.sysroot)
    }
}

/// Checks that `ctx` is a Windows guest the fixers may change, and gathers its facts.
///
/// # Errors
/// [`Error::Usage`] for a non-Windows OS; [`Error::Unsupported`] for the refusals listed in the
/// module docs and for a guest without a current control set.
pub(crate) fn preflight(ctx: &FixContext<'_>, fixer: &str) -> Result<WinInfo> {
    let os = ctx.os;
    let Some(win) = os.windows.as_ref().filter(|_| os.os_type == "windows") else {
        return Err(Error::Usage(format!(
            "fixer {fixer} is for windows guests, and {} holds {}",
            os.root, os.os_type
        )));
    };
    refuse_unsafe(ctx, win)?;
    let ccs = win
        .current_control_set
        .clone()
        .ok_or_else(|| refused("the SYSTEM hive has no Select\\Current control set".into()))?;
    let server = os.product_variant.as_deref().map_or_else(
        || os.product_name.contains("Server"),
        |v| v.starts_with("Server"),
    );
    let arch = os.arch.as_deref().and_then(|a| match a {
        "x86_64" => Some(drivers::Arch::Amd64),
        "i386" | "i686" => Some(drivers::Arch::X86),
        "aarch64" => Some(drivers::Arch::Arm64),
        _ => None,
    });
    let info = WinInfo {
        sysroot: win.systemroot.clone(),
        ccs,
        major: os.major_version,
        minor: os.minor_version,
        build: os
            .build_id
            .as_deref()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0),
        server,
        arch,
    };
    // A dirty SYSTEM hive is refused here, before any fixer builds on it.
    let system = info.hive_path("SYSTEM");
    HiveEdit::open(ctx, &system, SYSTEM_PREFIX)?;
    Ok(info)
}

fn refused(detail: String) -> Error {
    Error::Unsupported {
        what: "windows guest",
        detail,
    }
}

/// The refusals that come from inspection facts.
fn refuse_unsafe(ctx: &FixContext<'_>, win: &WindowsReport) -> Result<()> {
    if win.hibernated
        || ctx
            .report
            .findings
            .iter()
            .any(|f| f.code == "windows-hibernated")
    {
        return Err(refused(
            "windows is hibernated or was shut down with fast startup (hiberfil.sys holds an image); \
             changing its disk would lose data: boot it, turn fast startup off and shut it down fully \
             (shutdown /s /t 0)"
                .into(),
        ));
    }
    if let Some(d) = ctx.report.devices.iter().find(|d| d.content == "BitLocker") {
        return Err(refused(format!(
            "{} is a bitlocker volume; suspend or remove bitlocker before converting (its keys may be \
             sealed to the old hypervisor's tpm and boot measurements)",
            d.name
        )));
    }
    if let Some(d) = ctx.report.devices.iter().find(|d| {
        d.part_type.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(MBR_LDM) || GPT_LDM.iter().any(|g| t.eq_ignore_ascii_case(g))
        })
    }) {
        return Err(refused(format!(
            "{} is a dynamic (ldm) disk partition; convert the system disk to a basic disk first",
            d.name
        )));
    }
    Ok(())
}

/// Largest hive file read (the hive crate's own limit).
const MAX_HIVE_BYTES: u64 = hive::MAX_HIVE_SIZE as u64;

/// A hive file of the guest opened for editing.
pub(crate) struct HiveEdit {
    path: String,
    prefix: &'static str,
    old: Vec<u8>,
    w: HiveMut,
}

fn hive_err(path: &str, e: &hive::Error) -> Error {
    if e.as_dirty().is_some() {
        return refused(format!(
            "{path} has pending transaction-log data ({e}); boot windows once and shut it down \
             cleanly so the logs are written back"
        ));
    }
    Error::Unsupported {
        what: "registry hive",
        detail: format!("{path}: {e}"),
    }
}

impl HiveEdit {
    /// Opens the hive file at guest path `path`; `None` if there is no such file.
    ///
    /// # Errors
    /// Read errors; a corrupt hive; a dirty hive (refused).
    pub(crate) fn open(
        ctx: &FixContext<'_>,
        path: &str,
        prefix: &'static str,
    ) -> Result<Option<Self>> {
        if !ctx.exists(path)? {
            return Ok(None);
        }
        let canon = ctx.canonical(path)?.to_string();
        let old = ctx.fs.read_file(canon.as_bytes(), MAX_HIVE_BYTES)?;
        let w = Hive::from_bytes(old.clone())
            .and_then(Hive::into_mut)
            .map_err(|e| hive_err(&canon, &e))?;
        Ok(Some(Self {
            path: canon,
            prefix,
            old,
            w,
        }))
    }

    /// Like [`HiveEdit::open`], but a missing file is an error.
    ///
    /// # Errors
    /// As [`HiveEdit::open`]; [`Error::Unsupported`] if the file is missing.
    pub(crate) fn open_required(
        ctx: &FixContext<'_>,
        path: &str,
        prefix: &'static str,
    ) -> Result<Self> {
        Self::open(ctx, path, prefix)?.ok_or_else(|| Error::Unsupported {
            what: "registry hive",
            detail: format!("{path} is missing"),
        })
    }

    fn err(&self, e: &hive::Error) -> Error {
        hive_err(&self.path, e)
    }

    /// The value `name` of `key`, if both exist.
    pub(crate) fn value(&self, key: &str, name: &str) -> Result<Option<hive::Value>> {
        let h = self.w.hive();
        let k = h.open_path(key).map_err(|e| self.err(&e))?;
        match k {
            Some(k) => k.value(name).map_err(|e| self.err(&e)),
            None => Ok(None),
        }
    }

    /// A DWORD value.
    pub(crate) fn dword(&self, key: &str, name: &str) -> Result<Option<u32>> {
        Ok(self.value(key, name)?.and_then(|v| v.as_dword()))
    }

    /// True if `key` exists.
    pub(crate) fn has_key(&self, key: &str) -> Result<bool> {
        Ok(self
            .w
            .hive()
            .open_path(key)
            .map_err(|e| self.err(&e))?
            .is_some())
    }

    /// The names of the subkeys of `key` (empty if it does not exist).
    pub(crate) fn subkeys(&self, key: &str) -> Result<Vec<String>> {
        let h = self.w.hive();
        match h.open_path(key).map_err(|e| self.err(&e))? {
            Some(k) => Ok(k
                .subkeys()
                .map_err(|e| self.err(&e))?
                .iter()
                .map(|s| s.name().to_owned())
                .collect()),
            None => Ok(Vec::new()),
        }
    }

    /// Creates `key` (and its parents) if missing.
    pub(crate) fn ensure_key(&mut self, key: &str) -> Result<()> {
        if !self.has_key(key)? {
            self.w
                .create_key(key)
                .map_err(|e| hive_err(&self.path, &e))?;
        }
        Ok(())
    }

    /// Sets a value (creating its key) unless it already has this type and data. Returns true
    /// if it wrote.
    pub(crate) fn set(
        &mut self,
        key: &str,
        name: &str,
        kind: ValueType,
        data: &[u8],
    ) -> Result<bool> {
        if let Some(v) = self.value(key, name)?
            && v.kind == kind
            && v.data == data
        {
            return Ok(false);
        }
        self.ensure_key(key)?;
        self.w
            .set_value(key, name, kind, data)
            .map_err(|e| hive_err(&self.path, &e))?;
        Ok(true)
    }

    /// Sets a REG_DWORD.
    pub(crate) fn set_dword(&mut self, key: &str, name: &str, v: u32) -> Result<bool> {
        self.set(key, name, ValueType::Dword, &v.to_le_bytes())
    }

    /// Sets a REG_SZ.
    pub(crate) fn set_sz(&mut self, key: &str, name: &str, v: &str) -> Result<bool> {
        self.set(key, name, ValueType::Sz, &sz(v))
    }

    /// Deletes a value. Returns true if it existed.
    pub(crate) fn delete_value(&mut self, key: &str, name: &str) -> Result<bool> {
        if self.value(key, name)?.is_none() {
            return Ok(false);
        }
        self.w
            .delete_value(key, name)
            .map_err(|e| hive_err(&self.path, &e))
    }

    /// Applies a `.reg` text whose keys are under this hive's prefix (all or nothing).
    pub(crate) fn apply_reg(&mut self, text: &str) -> Result<usize> {
        self.w
            .apply_reg(text, self.prefix)
            .map_err(|e| hive_err(&self.path, &e))
    }

    /// The [`Change::EditHive`] for the edits made, or `None` if the hive is unchanged (the
    /// `.reg` difference is empty too, so re-running a fixer over its own result plans nothing).
    pub(crate) fn finish(self) -> Result<Option<Change>> {
        if !self.w.is_modified() {
            return Ok(None);
        }
        let new = self.w.into_bytes();
        let before = Hive::from_bytes(self.old.clone()).map_err(|e| hive_err(&self.path, &e))?;
        let after = Hive::from_bytes(new.clone()).map_err(|e| hive_err(&self.path, &e))?;
        let reg =
            hive::diff_reg(&before, &after, self.prefix).map_err(|e| hive_err(&self.path, &e))?;
        if reg.trim_end() == hive::REG_HEADER.trim_end() {
            return Ok(None);
        }
        Ok(Some(Change::EditHive {
            path: self.path,
            old: self.old,
            new,
            reg,
        }))
    }
}

/// REG_SZ data: UTF-16LE with a terminating NUL.
pub(crate) fn sz(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// REG_MULTI_SZ data: each string NUL-terminated, then an empty string.
pub(crate) fn multi_sz<S: AsRef<str>>(items: &[S]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend(sz(i.as_ref()));
    }
    out.extend([0, 0]);
    out
}

/// `CurrentControlSet` at the start of a SYSTEM key path replaced by the real control set.
pub(crate) fn resolve_ccs(key: &str, ccs: &str) -> String {
    let trimmed = key.trim_start_matches('\\');
    match trimmed.split_once('\\') {
        Some((first, rest)) if first.eq_ignore_ascii_case("CurrentControlSet") => {
            format!("{ccs}\\{rest}")
        }
        None if trimmed.eq_ignore_ascii_case("CurrentControlSet") => ccs.to_owned(),
        _ => trimmed.to_owned(),
    }
}

pub(crate) mod testkit;
#[cfg(test)]
mod tests;
