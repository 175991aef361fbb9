//! `virtio-win`: offline injection of the virtio drivers into a Windows guest, the way Windows
//! itself would have staged them.
//!
//! # What it plans
//!
//! The drivers come from a virtio-win ISO or directory (`virtio_win` parameter, the CLI's
//! `--virtio-win`, else the `VIRTIO_WIN` environment variable), chosen for the inspected
//! Windows by [`drivers::Catalog::select`]. The *boot driver* is `viostor` (bus `virtio-blk`) or
//! `vioscsi` (bus `virtio-scsi`); every other selected driver (netkvm, balloon, vioserial,
//! viorng, pvpanic, qemufwcfg, the other storage driver, …) is a *staged* driver, installed by
//! Windows when its device appears (or by the first-boot step, which runs `pnputil` on the
//! staged packages listed in the step summary: `staged packages: oemN.inf=<package>, …`).
//!
//! Files (guest paths under the system root, `%SystemRoot%`):
//!
//! | file | when | source |
//! |---|---|---|
//! | `System32\drivers\<boot>.sys` | always | the `ServiceBinary` of the INF's AddService (dirid 12) |
//! | `System32\DriverStore\FileRepository\<pkg>\<inf, cat, sys…>` | 6.2+ | every file the catalog lists for the package |
//! | `INF\oemN.inf` | 6.2+ | the INF, published under its OEM name as `pnputil -a` does |
//! | `Drivers\VirtIO\<files>` | staged drivers | every file of the package (the `DevicePath` fallback) |
//!
//! `<pkg>` is `<inf name>_<arch>_<16 hex digits>` like Windows' own folder names. Windows derives
//! the digits from a hash of the signed package; we use the first 8 bytes of SHA-256 over the
//! package's files (each: lower-case name, NUL, 8-byte little-endian length, content, in name
//! order). That is safe because the name is only an identifier: Windows finds the folder through
//! the driver database entries below, never by recomputing the name; a later `pnputil /add-driver`
//! of the same package at worst stores a second copy under Windows' own name. And it is
//! deterministic, so planning again finds the package it staged before (idempotence).
//!
//! # Registry layout
//!
//! SYSTEM hive, control set `ControlSetNNN` from `Select\Current`:
//!
//! - `Services\<boot>`: `Type`, `ErrorControl` (the INF's AddService values), `Start` = 0 (boot:
//!   the disk must be readable before PnP runs), `Group` (`LoadOrderGroup`, "SCSI miniport"),
//!   `ImagePath` = `System32\drivers\<boot>.sys` (REG_EXPAND_SZ, the form Windows writes),
//!   `DisplayName`, and on 6.2+ `Owners` = `oemN.inf` (REG_MULTI_SZ); then the service-install
//!   section's `AddReg` lines with root `HKR` below the service key (virtio-win: `Parameters`
//!   `BusType`, `Parameters\PnpInterface` `5`). *Certain*: the Services key format is
//!   documented (INF AddService directive) and matches a real install.
//! - Before 6.2 (Vista, 7, 2008, 2008 R2): `Control\CriticalDeviceDatabase\<id>` with `ClassGUID`
//!   (the INF's ClassGuid) and `Service`, for every hardware ID the INF binds on the target and
//!   its short `PCI\VEN_1AF4&DEV_xxxx` form (`\` becomes `#`, lower case as Windows stores them):
//!   legacy `pci#ven_1af4&dev_1001` and modern `pci#ven_1af4&dev_1042` for viostor, 1004/1048 for
//!   vioscsi. *Certain*: the mechanism virt-v2v and Windows' own boot-critical install use.
//! - 6.2 and later: the driver database, at `DriverDatabase` of the SYSTEM hive, and the same
//!   again in `System32\config\DRIVERS` when that hive exists and has a `DriverDatabase` key
//!   (Windows 8+ keeps the database there and links it into SYSTEM):
//!   A SYSTEM hive without a `DriverDatabase` key next to a DRIVERS hive with one is left
//!   alone there (Windows links the key to the DRIVERS copy at boot; a real key would hide it);
//!   when neither has one (synthetic guests), SYSTEM gets it.
//!   - `DriverDatabase`: `OemInfMap` (REG_BINARY bitmap of used `oemN.inf` numbers, bit N
//!     counted from the most significant bit of byte 0) gets our N; `UpdateDate` (FILETIME) is
//!     set when a package is added. *Certain* (layout read from a real SYSTEM hive).
//!   - `DriverInfFiles\oemN.inf`: default value (REG_MULTI_SZ) = the package name, `Active` =
//!     the package name, `Configurations` (REG_MULTI_SZ) = the DDInstall sections. *Certain*.
//!   - `DriverPackages\<pkg>`: default = `oemN.inf`, `InfName`, `Catalog`, `Provider`,
//!     `OemPath` (the package folder in the source), `ImportDate` (FILETIME), `SignerName` =
//!     "Microsoft Windows Hardware Compatibility Publisher" and `SignerScore` = 0x0d000005 (what
//!     Windows records for a WHQL/attestation-signed package such as virtio-win's; we cannot
//!     verify the signature offline, and the kernel checks the `.sys` signature at load anyway),
//!     `StatusFlags` = 0x12 and `Version` (48 bytes: the constant 8-byte header
//!     `00 ff 09 00 00 00 00 00` seen on every package, the class GUID in its binary form, the
//!     DriverVer date as a FILETIME at midnight UTC, the DriverVer version as a little-endian
//!     u64 `major<<48 | minor<<32 | build<<16 | revision`, 8 zero bytes). Names and value types
//!     *certain*; the meaning of `StatusFlags` and of the Version header *best-effort* (copied
//!     from real packages, not documented).
//!   - `DriverPackages\<pkg>\Configurations\<DDInstall section>`: `ConfigFlags` = 0,
//!     `ConfigScope` = 7, `Service` = the associated service; `Device\…` holds the `.HW`
//!     section's HKR AddReg values (MSI properties), `Services\<svc>\…` the service-install
//!     section's, `Driver\…` the DDInstall section's own HKR AddReg (that last subkey is
//!     *best-effort*: not seen in the samples). Others *certain*.
//!   - `DriverPackages\<pkg>\Descriptors\<hardware id>`: `Configuration` = the DDInstall
//!     section, `Description`, `Manufacturer`. Windows stores `%strkey%` tokens there plus a
//!     `Strings` subkey; we store the substituted text (*best-effort*: the text is shown as is).
//!     The `Properties` subkey (driver package property store) is not written.
//!   - `DeviceIds\<hardware id>`: value `oemN.inf` = REG_BINARY `[p, ff, 00, 00]` where p is 1
//!     for the first ID of a model line (the hardware ID) and 2 for the others (compatible
//!     IDs), ff the default feature score; `DeviceIds\{class guid}`: value `oemN.inf` = REG_NONE.
//!     *Certain* for the common case (every default-feature-score entry of the real hive has this
//!     form).
//!
//! SOFTWARE hive: `Microsoft\Windows\CurrentVersion` `DevicePath` (REG_EXPAND_SZ, `;`-separated)
//! gets `%SystemRoot%\Drivers\VirtIO` appended when staged drivers are copied there. Not
//! written: `Setup\PnpLockdownFiles` (file protection records Windows rebuilds on install).
//!
//! Not written either: the `Enum` device instance (PnP creates it when it finds the device at
//! boot, from the database or the critical device database), `Services\EventLog` sources.
//!
//! # Compared with virt-v2v
//!
//! Debian 12's virt-v2v (2.2), run on the synthetic Server 2019 image of `images/` with the
//! fake virtio-win tree of `drivers::testkit`, writes for viostor: `Services\viostor` with
//! `Type`, `Start` = 0, `ErrorControl`, `Group`, `ImagePath` = `system32\drivers\viostor.sys`, and
//! `CriticalDeviceDatabase\PCI#VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00` and `…DEV_1042…`
//! (`ClassGUID`, `Service`), and copies every package to `Drivers\VirtIO` for a first-boot
//! `pnputil`. The differences, and why:
//!
//! - it writes the critical device database on every version; Windows 8 and later ignore it,
//!   so from 6.2 on we register the package in the driver database and the driver store instead
//!   (what makes later `pnputil` runs and in-place upgrades see a normal driver), and write the
//!   critical device database only before 6.2;
//! - its CDD keys are the INF's full IDs as written; we also add each short
//!   `PCI\VEN_1AF4&DEV_xxxx` form (one of the device's own hardware IDs, so a device with another
//!   subsystem ID is still bound) and use lower case as Windows does (the registry ignores case);
//! - `ImagePath` differs in case only (`system32` against the INF's `System32`);
//! - it leaves out the service-install section's AddReg values (`Parameters\BusType`,
//!   `Parameters\PnpInterface`) and `DisplayName`; we apply them as the INF says;
//! - it copies the boot driver to `Drivers\VirtIO` as well and leaves `DevicePath` alone; we copy
//!   only the staged drivers there and add the folder to `DevicePath`, so Windows' own device
//!   installation finds them even if the first-boot step never runs.

use std::collections::BTreeSet;
use std::path::PathBuf;

use drivers::catalog::DriverChoice;
use drivers::inf::AddReg;
use drivers::{Catalog, Source, WindowsTarget};
use guestfs::FsReadExt;
use hive::ValueType;
use sha2::{Digest, Sha256};

use super::{HiveEdit, SOFTWARE_PREFIX, SYSTEM_PREFIX, WinInfo, multi_sz, preflight, sz};
use crate::fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Change, Error, Result};

pub(crate) struct VirtioWin;

/// The environment variable virt-v2v users know for the virtio-win source.
pub(crate) const VIRTIO_WIN_ENV: &str = "VIRTIO_WIN";
/// Largest file of a driver package we copy (virtio-win's largest are under 2 MiB).
const MAX_PACKAGE_FILE: u64 = 64 << 20;
/// Highest `oemN.inf` number we allocate (Windows has no documented limit; far above any real
/// system).
const MAX_OEM: u32 = 65_535;
/// `SignerScore` of a WHQL / attestation-signed package (`SIGNERSCORE_WHQL`, setupapi.h).
const SIGNER_SCORE_WHQL: u32 = 0x0d00_0005;
/// Signer Windows records for such packages.
const SIGNER_NAME: &str = "Microsoft Windows Hardware Compatibility Publisher";
/// `StatusFlags` seen on imported third-party packages.
const STATUS_FLAGS: u32 = 0x12;
/// `ConfigScope` seen on every configuration (all scopes).
const CONFIG_SCOPE: u32 = 7;
/// The leading 8 bytes of every `Version` value seen.
const VERSION_HEADER: [u8; 8] = [0x00, 0xff, 0x09, 0x00, 0, 0, 0, 0];
/// Feature score of a model without a FeatureScore directive (driver rank docs: 0xFF default).
const DEFAULT_FEATURE_SCORE: u8 = 0xff;
/// `SPSVCINST_ASSOCSERVICE`: the AddService flag marking the device's function driver.
const SPSVCINST_ASSOCSERVICE: u32 = 0x2;
/// `%SystemRoot%`-relative folder of the staged drivers, added to `DevicePath`.
const VIRTIO_DIR: &str = "Drivers\\VirtIO";
/// FILETIME of 1970-01-01 (100 ns ticks since 1601).
const UNIX_EPOCH_FILETIME: u64 = 116_444_736_000_000_000;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "bus",
        kind: ParamKind::Choice(&["virtio-blk", "virtio-scsi"]),
        default: "\"virtio-blk\"",
        help: "the target's disk bus: virtio-blk boots with viostor, virtio-scsi with vioscsi",
    },
    ParamSpec {
        name: "virtio_win",
        kind: ParamKind::Text,
        default: "\"\"",
        help: "virtio-win ISO or directory on the host (the CLI's --virtio-win; empty: $VIRTIO_WIN)",
    },
    ParamSpec {
        name: "include",
        kind: ParamKind::Names,
        default: "[]",
        help: "only these drivers (empty: every driver the catalog offers the guest)",
    },
    ParamSpec {
        name: "exclude",
        kind: ParamKind::Names,
        default: "[]",
        help: "never these drivers",
    },
    ParamSpec {
        name: "no_drivers",
        kind: ParamKind::Bool,
        default: "false",
        help: "inject no drivers at all (the guest already has them)",
    },
];

/// A package ready to install: the catalog's choice and its files' bytes.
struct Package<'a> {
    choice: &'a DriverChoice,
    /// `viostor.inf`.
    inf_name: String,
    /// `viostor.inf_amd64_0123456789abcdef`.
    store_name: String,
    /// (file name as stored, content), sorted by name.
    files: Vec<(String, Vec<u8>)>,
    boot: bool,
}

fn drivers_err(e: &drivers::Error) -> Error {
    Error::Unsupported {
        what: "virtio-win source",
        detail: e.to_string(),
    }
}

/// The driver-store folder name of a package.
fn store_name(inf_name: &str, arch: drivers::Arch, files: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, data) in files {
        h.update(name.to_ascii_lowercase().as_bytes());
        h.update([0]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!(
        "{}_{}_{hex}",
        inf_name.to_ascii_lowercase(),
        arch.inf_name()
    )
}

/// The current time as a FILETIME.
fn filetime_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH_FILETIME.saturating_add(
        since
            .as_secs()
            .saturating_mul(10_000_000)
            .saturating_add(u64::from(since.subsec_nanos() / 100)),
    )
}

/// FILETIME of midnight UTC of a civil date (days-from-civil, proleptic Gregorian).
fn filetime_of_date(y: u16, m: u8, d: u8) -> u64 {
    let (y, m, d) = (i64::from(y), i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days.saturating_mul(86_400);
    u64::try_from(secs).ok().map_or(0, |s| {
        UNIX_EPOCH_FILETIME.saturating_add(s.saturating_mul(10_000_000))
    })
}

/// A `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` GUID in its 16-byte binary form (Data1..3 little
/// endian, Data4 as written).
fn guid_bytes(g: &str) -> Option<[u8; 16]> {
    let hex: String = g
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|&c| c != '-')
        .collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(hex.get(i * 2..i * 2 + 2).unwrap_or("00"), 16).ok();
    let mut raw = [0u8; 16];
    for (i, r) in raw.iter_mut().enumerate() {
        *r = byte(i)?;
    }
    let mut out = raw;
    out[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

/// The `Version` value of a driver package (see the module docs).
fn version_value(choice: &DriverChoice) -> Vec<u8> {
    let mut v = VERSION_HEADER.to_vec();
    let guid = choice
        .inf
        .version
        .class_guid
        .as_deref()
        .and_then(guid_bytes)
        .unwrap_or([0; 16]);
    v.extend(guid);
    let (date, ver) = match choice.inf.version.driver_ver {
        Some(dv) => (
            filetime_of_date(dv.date.0, dv.date.1, dv.date.2),
            dv.version.unwrap_or([0; 4]),
        ),
        None => (0, [0; 4]),
    };
    v.extend(date.to_le_bytes());
    let packed = (u64::from(ver[0]) << 48)
        | (u64::from(ver[1]) << 32)
        | (u64::from(ver[2]) << 16)
        | u64::from(ver[3]);
    v.extend(packed.to_le_bytes());
    v.extend([0u8; 8]);
    v
}

/// Data of an INF AddReg line: the registry type and bytes, or `None` for lines we do not
/// apply (key-only, delete, append, unknown types).
fn addreg_data(a: &AddReg) -> Option<(ValueType, Vec<u8>)> {
    /// FLG_ADDREG_* (INF AddReg directive).
    const BINVALUETYPE: u32 = 0x0000_0001;
    const DELVAL: u32 = 0x0000_0004;
    const APPEND: u32 = 0x0000_0008;
    const KEYONLY: u32 = 0x0000_0010;
    const TYPE_MULTI_SZ: u32 = 0x0001_0000;
    const TYPE_EXPAND_SZ: u32 = 0x0002_0000;
    const TYPE_DWORD: u32 = 0x0001_0001;
    const TYPE_NONE: u32 = 0x0002_0001;
    if a.flags & (DELVAL | APPEND | KEYONLY) != 0 {
        return None;
    }
    let ty = a.flags & 0xffff_0001;
    let num = |s: &str| {
        let s = s.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => s.parse::<u32>().ok(),
        }
    };
    let first = a.values.first().map(String::as_str).unwrap_or("");
    Some(match ty {
        0 => (ValueType::Sz, sz(first)),
        TYPE_EXPAND_SZ => (ValueType::ExpandSz, sz(first)),
        TYPE_MULTI_SZ => (ValueType::MultiSz, multi_sz(&a.values)),
        TYPE_DWORD => (ValueType::Dword, num(first)?.to_le_bytes().to_vec()),
        TYPE_NONE => (ValueType::None, Vec::new()),
        t if t & BINVALUETYPE != 0 => {
            let kind = match t >> 16 {
                0 => ValueType::Binary,
                n => ValueType::from_raw(n),
            };
            let mut bytes = Vec::with_capacity(a.values.len());
            // Binary data is written as hex bytes without a prefix (`01,ff`).
            for v in &a.values {
                bytes.push(u8::from_str_radix(v.trim(), 16).ok()?);
            }
            (kind, bytes)
        }
        _ => return None,
    })
}

/// Applies the HKR AddReg lines `lines` below `base`. Returns the number skipped.
fn apply_hkr(h: &mut HiveEdit, base: &str, lines: &[AddReg]) -> Result<usize> {
    let mut skipped = 0;
    for a in lines {
        if !a.root.eq_ignore_ascii_case("HKR") {
            skipped += 1;
            continue;
        }
        let key = if a.subkey.is_empty() {
            base.to_owned()
        } else {
            format!("{base}\\{}", a.subkey.trim_matches('\\'))
        };
        /// FLG_ADDREG_NOCLOBBER: keep an existing value.
        const NOCLOBBER: u32 = 0x2;
        let name = a.value_name.as_deref().unwrap_or("");
        match addreg_data(a) {
            Some(_) if a.flags & NOCLOBBER != 0 && h.value(&key, name)?.is_some() => {}
            Some((kind, data)) => {
                h.set(&key, name, kind, &data)?;
            }
            None if a.flags & 0x10 != 0 => h.ensure_key(&key)?,
            None => skipped += 1,
        }
    }
    Ok(skipped)
}

/// The service the boot driver's device binds: the AddService with the associated-service
/// flag and the driver's name, else the first.
fn boot_service(choice: &DriverChoice) -> Option<&drivers::inf::ServiceInstall> {
    choice
        .services
        .iter()
        .find(|s| {
            s.flags & SPSVCINST_ASSOCSERVICE != 0 && s.name.eq_ignore_ascii_case(&choice.name)
        })
        .or_else(|| choice.services.first())
}

/// `PCI\VEN_1AF4&DEV_1001&SUBSYS_...` → `PCI\VEN_1AF4&DEV_1001`.
fn short_pci_id(id: &str) -> Option<String> {
    let up = id.to_ascii_uppercase();
    if !up.starts_with("PCI\\VEN_") {
        return None;
    }
    let mut parts = id.splitn(3, '&');
    let a = parts.next()?;
    let b = parts.next()?;
    parts.next()?;
    Some(format!("{a}&{b}"))
}

impl Fixer for VirtioWin {
    fn name(&self) -> &'static str {
        "virtio-win"
    }

    fn description(&self) -> &'static str {
        "install the virtio storage driver as boot-start and stage the other virtio drivers (driver store and database on windows 8+, critical device database before)"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let mut out = Outcome::default();
        if params.bool("no_drivers") {
            out.notes
                .push("driver injection turned off (no_drivers)".into());
            return Ok(out);
        }
        let source = match params.str("virtio_win") {
            "" => std::env::var_os(VIRTIO_WIN_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            s => Some(PathBuf::from(s)),
        }
        .ok_or_else(|| {
            Error::Usage(format!(
                "no virtio-win source: give --virtio-win PATH (recipe parameter virtio_win) or set {VIRTIO_WIN_ENV}"
            ))
        })?;
        let arch = info.arch.ok_or_else(|| Error::Unsupported {
            what: "windows guest",
            detail: "its architecture is unknown (System32\\cmd.exe unreadable)".into(),
        })?;
        let target = WindowsTarget {
            major: info.major,
            minor: info.minor,
            build: info.build,
            server: info.server,
            arch,
        };
        let catalog = Catalog::open(Source::open(&source).map_err(|e| drivers_err(&e))?)
            .map_err(|e| drivers_err(&e))?;
        let sel = catalog.select(&target).map_err(|e| drivers_err(&e))?;
        let boot = if params.str("bus") == "virtio-scsi" {
            "vioscsi"
        } else {
            "viostor"
        };
        let include = params.list("include");
        let exclude = params.list("exclude");
        let wanted = |n: &str| {
            (include.is_empty() || include.iter().any(|i| i.eq_ignore_ascii_case(n)))
                && !exclude.iter().any(|e| e.eq_ignore_ascii_case(n))
        };
        if !wanted(boot) {
            out.notes.push(format!(
                "{boot} excluded by the include/exclude lists: the guest may not find its disk on {}",
                params.str("bus")
            ));
        } else if sel.driver(boot).is_none() {
            let why = sel
                .skipped
                .iter()
                .find(|s| s.name.eq_ignore_ascii_case(boot))
                .map_or_else(
                    || "the source has no such driver".to_owned(),
                    |s| s.reason.clone(),
                );
            return Err(Error::Unsupported {
                what: "virtio-win source",
                detail: format!("no usable {boot} for {target}: {why}"),
            });
        }
        let mut packages = Vec::new();
        for choice in sel.drivers.iter().filter(|d| wanted(&d.name)) {
            let mut files = Vec::with_capacity(choice.files.len());
            for f in &choice.files {
                let data = catalog
                    .source()
                    .read_file(&f.path, MAX_PACKAGE_FILE)
                    .map_err(|e| drivers_err(&e))?;
                files.push((f.name.clone(), data));
            }
            files.sort_by_key(|f| f.0.to_ascii_lowercase());
            let inf_name = choice
                .inf_path
                .rsplit('/')
                .next()
                .unwrap_or(&choice.inf_path)
                .to_owned();
            packages.push(Package {
                choice,
                store_name: store_name(&inf_name, arch, &files),
                inf_name,
                files,
                boot: choice.name.eq_ignore_ascii_case(boot),
            });
        }
        for s in &sel.skipped {
            if wanted(&s.name) {
                out.notes
                    .push(format!("{} not installed: {}", s.name, s.reason));
            }
        }
        Injector {
            ctx,
            info: &info,
            target,
            out: &mut out,
            dirs: BTreeSet::new(),
        }
        .run(&packages, &source)?;
        Ok(out)
    }
}

/// The planning state of one run.
struct Injector<'a, 'b> {
    ctx: &'a FixContext<'b>,
    info: &'a WinInfo,
    target: WindowsTarget,
    out: &'a mut Outcome,
    /// Directories this run plans to create.
    dirs: BTreeSet<String>,
}

impl Injector<'_, '_> {
    /// Plans `Mkdir` for each missing directory of `path` below the system root.
    fn ensure_dir(&mut self, path: &str) -> Result<()> {
        let mut cur = String::new();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            cur.push('/');
            cur.push_str(comp);
            if self.dirs.contains(&cur) || self.ctx.exists(&cur)? {
                continue;
            }
            self.out.changes.push(Change::Mkdir {
                path: cur.clone(),
                mode: 0o755,
            });
            self.dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Plans a file with `content` at `path`: nothing if it already holds it, a replacement if
    /// it differs, a new file otherwise.
    fn put_file(&mut self, path: &str, content: &[u8]) -> Result<()> {
        let (dir, _) = path.rsplit_once('/').unwrap_or(("", path));
        self.ensure_dir(dir)?;
        if !self.dirs.contains(dir) && self.ctx.exists(path)? {
            let canon = self.ctx.canonical(path)?.to_string();
            let old = self.ctx.fs.read_file(canon.as_bytes(), MAX_PACKAGE_FILE)?;
            if old != content {
                self.out.changes.push(Change::ReplaceFile {
                    path: canon,
                    old,
                    new: content.to_vec(),
                });
            }
            return Ok(());
        }
        self.out.changes.push(Change::CreateFile {
            path: path.to_owned(),
            content: content.to_vec(),
            mode: 0o644,
        });
        Ok(())
    }

    fn run(mut self, packages: &[Package<'_>], source: &std::path::Path) -> Result<()> {
        let info = self.info;
        let sysroot = info.sysroot.clone();
        let mut system =
            HiveEdit::open_required(self.ctx, &info.hive_path("SYSTEM"), SYSTEM_PREFIX)?;
        let mut drivers_hive = if info.has_driver_database() {
            HiveEdit::open(self.ctx, &info.hive_path("DRIVERS"), super::DRIVERS_PREFIX)?
                .filter(|h| h.has_key("DriverDatabase").unwrap_or(false))
        } else {
            None
        };
        // Where the database lives: SYSTEM when it has one (or when no hive has one yet), and
        // DRIVERS when it has one. A SYSTEM hive without the key next to a DRIVERS hive with it
        // gets nothing: Windows links SYSTEM\DriverDatabase to the DRIVERS copy at boot, and a
        // real key in its place would hide the whole database.
        let system_db = system.has_key("DriverDatabase")? || drivers_hive.is_none();
        let mut staged: Vec<String> = Vec::new();
        let mut copied: Vec<String> = Vec::new();
        let mut boot_note = None;
        let now = filetime_now();
        for p in packages {
            let oem = if info.has_driver_database() {
                let oem = self.oem_name(&system, drivers_hive.as_ref(), p)?;
                for (name, data) in &p.files {
                    self.put_file(
                        &format!(
                            "{sysroot}/System32/DriverStore/FileRepository/{}/{name}",
                            p.store_name
                        ),
                        data,
                    )?;
                }
                if let Some((_, inf)) = p
                    .files
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&p.inf_name))
                {
                    self.put_file(&format!("{sysroot}/INF/{oem}"), inf)?;
                }
                if system_db {
                    register_package(&mut system, p, &oem, &self.target, source, now)?;
                }
                if let Some(d) = drivers_hive.as_mut() {
                    register_package(d, p, &oem, &self.target, source, now)?;
                }
                staged.push(format!("{oem}={}", p.store_name));
                Some(oem)
            } else {
                None
            };
            if p.boot {
                boot_note = Some(self.boot_driver(&mut system, p, oem.as_deref())?);
            } else {
                for (name, data) in &p.files {
                    self.put_file(
                        &format!("{sysroot}/{}/{name}", VIRTIO_DIR.replace('\\', "/")),
                        data,
                    )?;
                }
                copied.push(p.choice.name.clone());
            }
        }
        if !copied.is_empty()
            && let Some(mut sw) =
                HiveEdit::open(self.ctx, &info.hive_path("SOFTWARE"), SOFTWARE_PREFIX)?
        {
            let key = "Microsoft\\Windows\\CurrentVersion";
            let entry = format!("%SystemRoot%\\{VIRTIO_DIR}");
            let cur = sw
                .value(key, "DevicePath")?
                .and_then(|v| v.as_string())
                .unwrap_or_else(|| "%SystemRoot%\\inf".to_owned());
            if !cur
                .split(';')
                .any(|e| e.trim().eq_ignore_ascii_case(&entry))
            {
                let new = if cur.is_empty() {
                    entry
                } else {
                    format!("{};{entry}", cur.trim_end_matches(';'))
                };
                sw.set(key, "DevicePath", ValueType::ExpandSz, &sz(&new))?;
            }
            self.out.changes.extend(sw.finish()?);
        }
        self.out.changes.extend(system.finish()?);
        if let Some(d) = drivers_hive {
            self.out.changes.extend(d.finish()?);
        }
        // A second run over a fixed guest says so rather than "installed".
        let nothing = self.out.changes.is_empty();
        self.out.notes.extend(boot_note.map(|n| {
            if nothing {
                n.replacen(" installed as ", " already installed as ", 1)
            } else {
                n
            }
        }));
        if !copied.is_empty() {
            self.out.notes.push(format!(
                "copied to %SystemRoot%\\{VIRTIO_DIR} (DevicePath): {}",
                copied.join(", ")
            ));
        }
        if !staged.is_empty() {
            self.out
                .notes
                .push(format!("staged packages: {}", staged.join(", ")));
        }
        Ok(())
    }

    /// The `oemN.inf` name of a package: the one it was registered under before, else the
    /// lowest number free in `OemInfMap`, `DriverInfFiles` and the `INF` folder.
    fn oem_name(
        &self,
        system: &HiveEdit,
        drivers_hive: Option<&HiveEdit>,
        p: &Package<'_>,
    ) -> Result<String> {
        let hives: Vec<&HiveEdit> = std::iter::once(system).chain(drivers_hive).collect();
        for h in &hives {
            if let Some(v) = h.value(
                &format!("DriverDatabase\\DriverPackages\\{}", p.store_name),
                "",
            )? && let Some(s) = v.as_string()
                && is_oem_name(&s)
            {
                return Ok(s);
            }
        }
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for h in &hives {
            if let Some(v) = h.value("DriverDatabase", "OemInfMap")? {
                for (i, b) in v
                    .data
                    .iter()
                    .enumerate()
                    .take(usize::try_from(MAX_OEM / 8).unwrap_or(0))
                {
                    for bit in 0..8u32 {
                        if b & (0x80 >> bit) != 0 {
                            used.insert(
                                u32::try_from(i)
                                    .unwrap_or(u32::MAX)
                                    .saturating_mul(8)
                                    .saturating_add(bit),
                            );
                        }
                    }
                }
            }
            for k in h.subkeys("DriverDatabase\\DriverInfFiles")? {
                if let Some(n) = oem_number(&k) {
                    used.insert(n);
                }
            }
        }
        for f in self.ctx.list(&format!("{}/INF", self.info.sysroot), |n| {
            oem_number(n).is_some()
        })? {
            if let Some(n) = f.rsplit('/').next().and_then(oem_number) {
                used.insert(n);
            }
        }
        (0..=MAX_OEM)
            .find(|n| !used.contains(n))
            .map(|n| format!("oem{n}.inf"))
            .ok_or_else(|| Error::Unsupported {
                what: "driver database",
                detail: format!("every oemN.inf number up to {MAX_OEM} is in use"),
            })
    }

    /// Installs the boot driver: its `.sys`, the service key, and on Windows before 8 the
    /// critical device database entries. Returns the summary note.
    fn boot_driver(
        &mut self,
        system: &mut HiveEdit,
        p: &Package<'_>,
        oem: Option<&str>,
    ) -> Result<String> {
        let info = self.info;
        let svc = boot_service(p.choice).ok_or_else(|| Error::Unsupported {
            what: "virtio-win source",
            detail: format!("{} installs no service", p.choice.inf_path),
        })?;
        let sys_name = svc
            .binary
            .path
            .rsplit('\\')
            .next()
            .filter(|n| !n.is_empty())
            .map_or_else(|| format!("{}.sys", svc.name), str::to_owned);
        let (_, sys) = p
            .files
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(&sys_name))
            .ok_or_else(|| Error::Unsupported {
                what: "virtio-win source",
                detail: format!(
                    "{} names {sys_name} but the package lacks it",
                    p.choice.inf_path
                ),
            })?;
        self.put_file(
            &format!("{}/System32/drivers/{sys_name}", info.sysroot),
            sys,
        )?;
        let key = format!("{}\\Services\\{}", info.ccs, svc.name);
        system.set_dword(&key, "Type", svc.service_type)?;
        system.set_dword(&key, "Start", 0)?;
        system.set_dword(&key, "ErrorControl", svc.error_control)?;
        if let Some(g) = &svc.load_order_group {
            system.set_sz(&key, "Group", g)?;
        }
        system.set(
            &key,
            "ImagePath",
            ValueType::ExpandSz,
            &sz(&format!("System32\\drivers\\{sys_name}")),
        )?;
        if let Some(d) = &svc.display_name {
            system.set_sz(&key, "DisplayName", d)?;
        }
        if let Some(oem) = oem {
            system.set(&key, "Owners", ValueType::MultiSz, &multi_sz(&[oem]))?;
        }
        apply_hkr(system, &key, &svc.add_reg)?;
        let how = if info.has_driver_database() {
            format!("bound through the driver database ({})", p.store_name)
        } else {
            let class = p.choice.inf.version.class_guid.clone().unwrap_or_default();
            let mut ids: Vec<String> = Vec::new();
            for id in &p.choice.hardware_ids {
                for cand in std::iter::once(id.clone()).chain(short_pci_id(id)) {
                    let k = cand.to_ascii_lowercase().replace('\\', "#");
                    if !ids.contains(&k) {
                        ids.push(k);
                    }
                }
            }
            for id in &ids {
                let k = format!("{}\\Control\\CriticalDeviceDatabase\\{id}", info.ccs);
                system.set_sz(&k, "ClassGUID", &class)?;
                system.set_sz(&k, "Service", &svc.name)?;
            }
            format!(
                "bound through the critical device database ({})",
                ids.join(", ")
            )
        };
        Ok(format!(
            "{} installed as boot-start storage driver, {how}",
            svc.name
        ))
    }
}

fn oem_number(name: &str) -> Option<u32> {
    let lower = name.to_ascii_lowercase();
    let digits = lower.strip_prefix("oem")?.strip_suffix(".inf")?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_oem_name(s: &str) -> bool {
    oem_number(s).is_some()
}

/// Writes the driver database entries of one package (see the module docs) into `h`.
fn register_package(
    h: &mut HiveEdit,
    p: &Package<'_>,
    oem: &str,
    target: &WindowsTarget,
    source: &std::path::Path,
    now: u64,
) -> Result<()> {
    let db = "DriverDatabase";
    let c = p.choice;
    let models = c.inf.models_for(target);
    let section_of = |base: &str| {
        c.inf
            .installs
            .iter()
            .find(|i| i.base.eq_ignore_ascii_case(base))
    };
    let mut sections: Vec<String> = Vec::new();
    for m in &models {
        if let Some(i) = section_of(&m.install_section)
            && !sections.contains(&i.section)
        {
            sections.push(i.section.clone());
        }
    }
    let pkg_key = format!("{db}\\DriverPackages\\{}", p.store_name);
    let before = h.has_key(&pkg_key)?;
    // DriverInfFiles\oemN.inf
    let inf_key = format!("{db}\\DriverInfFiles\\{oem}");
    let mut names: Vec<String> = h
        .value(&inf_key, "")?
        .and_then(|v| v.as_multi_string())
        .unwrap_or_default();
    if !names.iter().any(|n| n.eq_ignore_ascii_case(&p.store_name)) {
        names.insert(0, p.store_name.clone());
    }
    h.set(&inf_key, "", ValueType::MultiSz, &multi_sz(&names))?;
    h.set_sz(&inf_key, "Active", &p.store_name)?;
    if !sections.is_empty() {
        h.set(
            &inf_key,
            "Configurations",
            ValueType::MultiSz,
            &multi_sz(&sections),
        )?;
    }
    // DriverPackages\<pkg>
    h.set_sz(&pkg_key, "", oem)?;
    h.set_sz(&pkg_key, "InfName", &p.inf_name)?;
    if let Some(cat) = &c.inf.version.catalog_file {
        h.set_sz(&pkg_key, "Catalog", cat)?;
    }
    if let Some(pr) = &c.inf.version.provider {
        h.set_sz(&pkg_key, "Provider", pr)?;
    }
    // Where the package came from and when: kept from the first import, so a second run from
    // another mount point of the same source plans nothing.
    if h.value(&pkg_key, "OemPath")?.is_none() {
        h.set_sz(
            &pkg_key,
            "OemPath",
            &format!("{}\\{}", source.display(), c.dir.replace('/', "\\")),
        )?;
    }
    if h.value(&pkg_key, "ImportDate")?.is_none() {
        h.set(
            &pkg_key,
            "ImportDate",
            ValueType::Binary,
            &now.to_le_bytes(),
        )?;
    }
    h.set_sz(&pkg_key, "SignerName", SIGNER_NAME)?;
    h.set_dword(&pkg_key, "SignerScore", SIGNER_SCORE_WHQL)?;
    h.set_dword(&pkg_key, "StatusFlags", STATUS_FLAGS)?;
    h.set(&pkg_key, "Version", ValueType::Binary, &version_value(c))?;
    // Configurations
    for i in c
        .inf
        .installs
        .iter()
        .filter(|i| sections.contains(&i.section))
    {
        let ck = format!("{pkg_key}\\Configurations\\{}", i.section);
        h.set_dword(&ck, "ConfigFlags", 0)?;
        h.set_dword(&ck, "ConfigScope", CONFIG_SCOPE)?;
        if let Some(s) = i
            .services
            .iter()
            .find(|s| s.flags & SPSVCINST_ASSOCSERVICE != 0)
        {
            h.set_sz(&ck, "Service", &s.name)?;
        }
        if !i.hw_add_reg.is_empty() {
            apply_hkr(h, &format!("{ck}\\Device"), &i.hw_add_reg)?;
        }
        if !i.add_reg.is_empty() {
            apply_hkr(h, &format!("{ck}\\Driver"), &i.add_reg)?;
        }
        for s in &i.services {
            let sk = format!("{ck}\\Services\\{}", s.name);
            h.ensure_key(&sk)?;
            apply_hkr(h, &sk, &s.add_reg)?;
        }
    }
    // Descriptors and DeviceIds
    for m in &models {
        let Some(i) = section_of(&m.install_section) else {
            continue;
        };
        let manufacturer = c
            .inf
            .manufacturers
            .iter()
            .find(|mf| {
                m.section
                    .to_ascii_lowercase()
                    .starts_with(&mf.models_section.to_ascii_lowercase())
            })
            .map(|mf| mf.name.clone())
            .unwrap_or_default();
        for (pos, id) in m.hardware_ids.iter().enumerate() {
            let dk = format!("{pkg_key}\\Descriptors\\{id}");
            h.set_sz(&dk, "Configuration", &i.section)?;
            h.set_sz(&dk, "Description", &m.description)?;
            h.set_sz(&dk, "Manufacturer", &manufacturer)?;
            let rank = if pos == 0 { 1u8 } else { 2u8 };
            h.set(
                &format!("{db}\\DeviceIds\\{id}"),
                oem,
                ValueType::Binary,
                &[rank, DEFAULT_FEATURE_SCORE, 0, 0],
            )?;
        }
    }
    if let Some(g) = &c.inf.version.class_guid {
        h.set(
            &format!("{db}\\DeviceIds\\{}", g.to_ascii_lowercase()),
            oem,
            ValueType::None,
            &[],
        )?;
    }
    // OemInfMap and UpdateDate
    if let Some(n) = oem_number(oem) {
        let mut map = h
            .value(db, "OemInfMap")?
            .map(|v| v.data)
            .unwrap_or_default();
        let byte = usize::try_from(n / 8).unwrap_or(usize::MAX);
        if map.len() <= byte {
            map.resize(byte.saturating_add(1), 0);
        }
        if let Some(b) = map.get_mut(byte) {
            *b |= 0x80 >> (n % 8);
        }
        h.set(db, "OemInfMap", ValueType::Binary, &map)?;
    }
    if !before {
        h.set(db, "UpdateDate", ValueType::Binary, &now.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_dates_and_names() {
        assert_eq!(
            guid_bytes("{4D36E97B-E325-11CE-BFC1-08002BE10318}").unwrap(),
            [
                0x7b, 0xe9, 0x36, 0x4d, 0x25, 0xe3, 0xce, 0x11, 0xbf, 0xc1, 0x08, 0x00, 0x2b, 0xe1,
                0x03, 0x18
            ]
        );
        assert_eq!(guid_bytes("{nope}"), None);
        // 1601-01-01 is FILETIME 0; 1970-01-01 the Unix epoch.
        assert_eq!(filetime_of_date(1970, 1, 1), UNIX_EPOCH_FILETIME);
        assert_eq!(filetime_of_date(1601, 1, 1), 0);
        assert_eq!(
            filetime_of_date(2024, 6, 1),
            UNIX_EPOCH_FILETIME + 1_717_200_000 * 10_000_000
        );
        assert_eq!(oem_number("oem12.inf"), Some(12));
        assert_eq!(oem_number("OEM0.INF"), Some(0));
        assert_eq!(oem_number("oem.inf"), None);
        assert_eq!(oem_number("oem1234567.inf"), None);
        assert_eq!(oem_number("machine.inf"), None);
        assert_eq!(
            short_pci_id("PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00").as_deref(),
            Some("PCI\\VEN_1AF4&DEV_1001")
        );
        assert_eq!(short_pci_id("PCI\\VEN_1AF4&DEV_1001"), None);
        let files = vec![("a.sys".to_owned(), vec![1, 2, 3])];
        let n = store_name("VioStor.inf", drivers::Arch::Amd64, &files);
        assert!(n.starts_with("viostor.inf_amd64_"), "{n}");
        assert_eq!(n.len(), "viostor.inf_amd64_".len() + 16);
        assert_eq!(n, store_name("viostor.inf", drivers::Arch::Amd64, &files));
        assert_ne!(
            n,
            store_name(
                "viostor.inf",
                drivers::Arch::Amd64,
                &[("a.sys".into(), vec![1])]
            )
        );
    }

    #[test]
    fn hkr_lines_keep_existing_values_under_noclobber() {
        let bytes = hive::testkit::HiveBuilder::new()
            .value(
                "S\\Parameters",
                "Keep",
                ValueType::Dword,
                &7u32.to_le_bytes(),
            )
            .build();
        let mut h = HiveEdit {
            path: "/SYSTEM".into(),
            prefix: SYSTEM_PREFIX,
            old: bytes.clone(),
            w: hive::Hive::from_bytes(bytes).unwrap().into_mut().unwrap(),
        };
        let line = |name: &str, flags: u32, root: &str| AddReg {
            root: root.into(),
            subkey: "Parameters".into(),
            value_name: Some(name.into()),
            flags,
            values: vec!["1".into()],
        };
        let skipped = apply_hkr(
            &mut h,
            "S",
            &[
                line("Keep", 0x0001_0003, "HKR"),
                line("New", 0x0001_0003, "HKR"),
                line("Other", 0x0001_0001, "HKLM"),
                line("Gone", 0x4, "HKR"),
            ],
        )
        .unwrap();
        assert_eq!(skipped, 2, "HKLM and delete lines");
        assert_eq!(h.dword("S\\Parameters", "Keep").unwrap(), Some(7));
        assert_eq!(h.dword("S\\Parameters", "New").unwrap(), Some(1));
        assert_eq!(h.dword("S\\Parameters", "Other").unwrap(), None);
        let Some(Change::EditHive { reg, .. }) = h.finish().unwrap() else {
            panic!("an edit");
        };
        assert_eq!(
            reg,
            "Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM\\S\\Parameters]\n\"New\"=dword:00000001\n"
        );
    }

    #[test]
    fn addreg_types() {
        let line = |flags: u32, values: &[&str]| AddReg {
            root: "HKR".into(),
            subkey: String::new(),
            value_name: Some("v".into()),
            flags,
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            addreg_data(&line(0x0001_0001, &["0x10"])),
            Some((ValueType::Dword, vec![0x10, 0, 0, 0]))
        );
        assert_eq!(
            addreg_data(&line(0, &["x"])),
            Some((ValueType::Sz, sz("x")))
        );
        assert_eq!(
            addreg_data(&line(0x0002_0000, &["%SystemRoot%"])),
            Some((ValueType::ExpandSz, sz("%SystemRoot%")))
        );
        assert_eq!(
            addreg_data(&line(0x0001_0000, &["a", "b"])),
            Some((ValueType::MultiSz, multi_sz(&["a", "b"])))
        );
        assert_eq!(
            addreg_data(&line(1, &["01", "ff"])),
            Some((ValueType::Binary, vec![1, 0xff]))
        );
        assert_eq!(
            addreg_data(&line(
                0x000b_0001,
                &["01", "0", "0", "0", "0", "0", "0", "0"]
            )),
            Some((ValueType::Qword, vec![1, 0, 0, 0, 0, 0, 0, 0]))
        );
        assert_eq!(
            addreg_data(&line(0x0002_0001, &[])),
            Some((ValueType::None, vec![]))
        );
        assert_eq!(addreg_data(&line(0x4, &["x"])), None, "delete");
        assert_eq!(addreg_data(&line(0x10, &[])), None, "key only");
        assert_eq!(addreg_data(&line(0x0001_0001, &["nope"])), None);
        assert_eq!(addreg_data(&line(1, &["100"])), None, "byte out of range");
    }
}
