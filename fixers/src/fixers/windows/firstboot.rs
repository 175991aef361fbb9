//! `windows-firstboot`: a script that runs once as SYSTEM at the next boot, before anyone can
//! log on, with no third-party binary: it installs the staged virtio drivers with `pnputil`,
//! uninstalls the old hypervisor's tools, brings offline data disks online and re-applies the
//! static IPv4 settings of the old network adapters to the new virtio ones.
//!
//! # Mechanism: `HKLM\SYSTEM\Setup` `SetupType` = 2 and `CmdLine`
//!
//! Winlogon reads `HKLM\SYSTEM\Setup` at every boot. With `SetupType` 2 it runs the command in
//! `CmdLine` as LocalSystem before it shows the logon screen, waits for it, and then continues
//! to the logon screen (1 would reboot after the command; 0 is an ordinary boot). Windows setup
//! itself uses this hook for its last deployment step (Microsoft KB 939857, "The Windows Vista
//! Setup program runs a script file to enable custom deployment tasks"), so it exists on every
//! version from Vista / Server 2008 to Server 2025, and it is two plain registry values we can
//! write offline with our own hive writer. Winlogon does not clear `SetupType` itself after an
//! ordinary boot: the command must, or it runs again at every boot.
//!
//! Rejected: a local Group Policy startup script (`System32\GroupPolicy\Machine\Scripts\
//! scripts.ini` + `gpt.ini`) runs only if the Group Policy client processes the local policy
//! at boot, which a domain policy can turn off ("Turn off Local Group Policy Objects
//! processing"), and it is run from the client's own cache under `HKLM\SOFTWARE\Microsoft\
//! Windows\CurrentVersion\Group Policy\Scripts`, partly undocumented, that must agree with
//! the files; it also runs at every boot until both are removed again. An offline-registered
//! scheduled task needs the undocumented binary `TaskCache` blobs (`Actions`, `Triggers`,
//! `DynamicInfo`, whose layout changed between 2008 R2, 2012 and 2016) to match the task's XML,
//! and a wrong blob makes the Task Scheduler drop the task silently.
//!
//! What runs in that phase (from the sources above and how Windows setup uses the hook; *not
//! verified here*, since Windows cannot be booted on this host): it is an ordinary boot with
//! the services started by the Service Control Manager, so TCP/IP and `netsh`, `pnputil`
//! (Plug and Play), `diskpart` (Virtual Disk service, demand-start) and `msiexec` (Windows
//! Installer, demand-start) are expected to work. With `SetupType` 1, by contrast, LSA runs in
//! setup mode and account lookups fail, which is why 1 is not used. Nothing runs in a user
//! session, so nothing may wait for input (every command is quiet: `/qn`, `/s`, no prompts).
//! Risks: a step that hangs holds the boot before the logon screen (services, the RDP listener
//! included, are up, but nobody can log on); a Windows Installer product whose uninstall
//! refuses to run off its hypervisor (VMware Tools has been seen to) fails three times and is
//! given up; `CmdLine` is winlogon's, so an image that is itself mid-setup (`SetupType` not 0
//! with another command, or `SystemSetupInProgress` / `OOBEInProgress` 1) is refused rather
//! than overwritten. We never set `SystemSetupInProgress`: in that setup mode only the
//! services listed under `Setup\AllowStart` start.
//!
//! # Never a reboot loop
//!
//! The script's first action is to *disarm* the hook (`SetupType` 0, `CmdLine` empty), before
//! any step, so a step that crashes, hangs until a hard reset, or reboots the machine leaves an
//! ordinary next boot. At the end it *re-arms* only if a step failed and still has attempts
//! left. Attempts are marker files `state\<step>.1` .. `.3`, created *before* the step runs
//! (no number to parse): a step with three markers is skipped and logged, so every step runs at
//! most [`MAX_TRIES`] times over all boots, and the script re-arms at most `MAX_TRIES - 1` times
//! per step. Nothing in the script reboots; a retry waits for the next boot, whenever that is.
//! When every step succeeded or was given up, the script restores the two values it changed
//! (their values before the fix, kept in a `rem rehost-restore` line of the script), deletes
//! its state, its helper files and itself, and keeps the log.
//!
//! # Files (under `%SystemRoot%\rehost`)
//!
//! - `firstboot.cmd`: the script (cmd.exe, CRLF, ASCII);
//! - `firstboot.log`: appended by the script (`[date time] step sNN (...): attempt k of 3`,
//!   every command's output, exit codes, the NIC mapping);
//! - `nic.ps1`: finds the k-th virtio NIC (when a static IP step exists);
//! - `trust.ps1`: the publisher-trust helper (when that step exists);
//! - `diskpart.txt`: written and run by the disk step;
//! - `state\`: attempt and done markers, created by the script.
//!
//! # Steps, in order
//!
//! 0. **Publisher trust** (before Windows 10, when there are packages to install): `trust.ps1`
//!    adds the signer certificate of every catalog in `%SystemRoot%\Drivers\VirtIO` to
//!    `LocalMachine\TrustedPublisher`. virtio-win's drivers for those versions are signed by
//!    Red Hat, not WHQL, and pnputil would otherwise ask "Would you like to install this device
//!    software?" on a console nobody can use before logon, holding the boot (virtio-win's own
//!    guest-tools installer needs the same, virtio-win-guest-tools-installer issue 11). The
//!    certificates stay trusted (so later updates of the same drivers install silently); the
//!    log names each one. A certificate that has expired does not help (virtio-win-pkg-scripts
//!    issue 57); then the prompt still holds the boot until someone answers it or resets.
//! 1. **Drivers**: `pnputil /add-driver <inf> /install` (Windows 10 1607, build 14393, and
//!    later) or `pnputil -i -a <inf>` (earlier) for every `.inf` in `%SystemRoot%\Drivers\VirtIO`
//!    (where `virtio-win` copies the staged, non-boot packages; on 8 / 2012 and later the same
//!    packages are also in the driver store, and pnputil finds them there). Success: 0, 259
//!    (`ERROR_NO_MORE_ITEMS`: no device matches, or a better driver is installed), 3010 (reboot
//!    needed), 1641.
//! 2. **Hypervisor tools**: `msiexec /x {product code} /qn /norestart REBOOT=ReallySuppress` for
//!    each Windows Installer product found at plan time in the SOFTWARE hive's
//!    `Microsoft\Windows\CurrentVersion\Uninstall\{GUID}` (and the `WOW6432Node` view) whose
//!    `DisplayName` starts with one of [`TOOLS`]: VMware Tools, the Citrix / XenServer / XCP-ng
//!    management agents and PV drivers, and Hyper-V Integration Services where an old guest has
//!    them as a product. Success: 0, 1605 (unknown product: already gone), 1614 (uninstalled),
//!    1641, 3010. Entries that are not Windows Installer products (no GUID key) are reported and
//!    left alone. Their drivers and services are already disabled by
//!    `windows-hypervisor-services`, so a failed uninstall is untidy, not harmful.
//! 3. **Disks**: one `diskpart /s` run per disk number from 0 (`select disk N`, then `online
//!    disk` and `attributes disk clear readonly`, both `noerr`), until a number does not exist
//!    (`select disk` has no `noerr`, so that run fails) or [`MAX_DISKS`]; then `san policy=
//!    OnlineAll` (the same policy `windows-san-policy` writes, for disks added later).
//!    Success: the `san` run's exit code 0.
//! 4. **Static IP**, one step per old interface: every `Tcpip\Parameters\Interfaces\{GUID}` of
//!    the current control set with `EnableDHCP` = 0 and a non-zero `IPAddress` (REG_MULTI_SZ,
//!    with `SubnetMask`, `DefaultGateway`; `NameServer` comma or space separated), in the order
//!    of `SOFTWARE\Microsoft\Windows NT\CurrentVersion\NetworkCards` (the install order), then
//!    by GUID. The n-th is applied to the n-th virtio NIC, found at run time by its driver
//!    service `netkvm` (`Win32_NetworkAdapter`, sorted by interface index; PowerShell 2 or later,
//!    on every Server from 2008 R2 except a Core install without it), not by its description,
//!    which has a `#2` suffix when there are several. Then `netsh interface ip set address`,
//!    `add address` for the others, `set dns` / `add dns` (with `validate=no` from 2012 on).
//!    The mapping is logged. Every address is checked at plan time as an IPv4 dotted quad, so
//!    nothing from the image reaches the script unchecked (product codes must be GUIDs, INF
//!    names `A-Z a-z 0-9 . _ -`, logged names are reduced to safe characters). IPv6 settings
//!    (`Tcpip6`) are not re-applied, and a NIC name with non-ASCII characters may not survive
//!    PowerShell's output code page.
//!
//! # What is verified, and what is not
//!
//! Windows cannot be booted on the build host. The tests check statically: the files and their
//! text (every command, CRLF, ASCII, labels defined, no unbounded backward jump, attempts
//! bounded, disarm before the first step, re-arm only at the end, self-removal), winlogon's two
//! values read back with our hive reader and with `hivexregedit --export`, the static-IP and
//! product-code extraction, idempotence, and the whole recipe on the builder images. Not
//! verified: how cmd.exe, pnputil, msiexec, diskpart, netsh and PowerShell behave in the
//! `SetupType` 2 phase on each Windows version, the exit codes they return there, and the NIC
//! order at run time.

use std::net::Ipv4Addr;

use hive::ValueType;

use super::{HiveEdit, SOFTWARE_PREFIX, SYSTEM_PREFIX, WinInfo, preflight};
use crate::fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Change, Error, Result};

pub(crate) struct Firstboot;

/// Attempts per step over all boots.
pub(crate) const MAX_TRIES: u32 = 3;
/// Disks the disk step brings online at most (0..MAX_DISKS; it stops at the first missing
/// disk number).
pub(crate) const MAX_DISKS: u32 = 16;
/// Folder of our files below the system root.
pub(crate) const DIR: &str = "rehost";
/// The script's file name.
pub(crate) const SCRIPT: &str = "firstboot.cmd";
/// The NIC finder's file name.
pub(crate) const NIC_PS1: &str = "nic.ps1";
/// The publisher-trust helper's file name.
pub(crate) const TRUST_PS1: &str = "trust.ps1";
/// Title of the publisher-trust step.
const TRUST_TITLE: &str = "trust the publishers of the staged driver packages";
/// The diskpart script the disk step writes and runs.
pub(crate) const DISKPART: &str = "diskpart.txt";
/// What winlogon runs: cmd.exe (found in System32) expands `%SystemRoot%` itself, so the value
/// works whether or not winlogon expands it. The path has no spaces, so no quotes are needed.
pub(crate) const CMDLINE: &str = "cmd.exe /c %SystemRoot%\\rehost\\firstboot.cmd";
/// The SYSTEM hive key of the hook (not in a control set).
pub(crate) const SETUP_KEY: &str = "Setup";
/// `SetupType`: run `CmdLine`, then show the logon screen.
pub(crate) const SETUP_TYPE_RUN: u32 = 2;
/// Windows 10 1607 / Server 2016: the first `pnputil` with `/add-driver`.
const PNPUTIL_ADD_DRIVER_BUILD: u32 = 14_393;
/// Uninstall keys scanned per view (a large server has a few hundred; house style S12).
const MAX_UNINSTALL_KEYS: usize = 10_000;
/// Tcpip interfaces scanned.
const MAX_INTERFACES: usize = 256;
/// Addresses, gateways or DNS servers kept per interface.
const MAX_ADDRESSES: usize = 16;
/// Driver packages installed.
const MAX_INFS: usize = 256;
/// Exit codes of pnputil that mean done (pnputil return values, Windows driver docs).
const PNPUTIL_OK: &[u32] = &[0, 259, 1641, 3010];
/// Exit codes of msiexec that mean done (Windows Installer error codes: 1605 unknown product,
/// 1614 product uninstalled, 1641 reboot initiated, 3010 reboot required).
const MSIEXEC_OK: &[u32] = &[0, 1605, 1614, 1641, 3010];
/// `DisplayName` prefixes of the hypervisor tools uninstalled (case-insensitive).
pub(crate) const TOOLS: &[&str] = &[
    "VMware Tools",
    "Citrix XenServer Windows Management Agent",
    "Citrix Hypervisor Windows Management Agent",
    "XenServer Windows Management Agent",
    "XCP-ng Windows Management Agent",
    "Citrix XenServer Tools",
    "Citrix Xen Windows",
    "XenServer PV Drivers",
    "Citrix XenServer VSS Provider",
    "Hyper-V Integration Services",
];
/// The Uninstall key views of the SOFTWARE hive.
const UNINSTALL_KEYS: &[&str] = &[
    "Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
];

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "drivers",
        kind: ParamKind::Bool,
        default: "true",
        help: "install the staged virtio driver packages with pnputil",
    },
    ParamSpec {
        name: "remove_tools",
        kind: ParamKind::Bool,
        default: "true",
        help: "uninstall VMware Tools and the Xen / Hyper-V guest tools found (msiexec /x)",
    },
    ParamSpec {
        name: "disks",
        kind: ParamKind::Bool,
        default: "true",
        help: "bring offline data disks online and writable (diskpart)",
    },
    ParamSpec {
        name: "static_ip",
        kind: ParamKind::Bool,
        default: "true",
        help: "re-apply the old adapters' static IPv4 settings to the virtio NICs (netsh)",
    },
];

/// The static IPv4 settings of one old interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StaticIp {
    /// `{GUID}` of the Tcpip interface key.
    pub(crate) guid: String,
    /// (address, mask) pairs, in order.
    pub(crate) addresses: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Default gateways, in order.
    pub(crate) gateways: Vec<Ipv4Addr>,
    /// DNS servers, in order.
    pub(crate) dns: Vec<Ipv4Addr>,
}

/// A Windows Installer product to uninstall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Product {
    /// `{GUID}`, upper case.
    pub(crate) code: String,
    /// `DisplayName`, reduced to safe characters.
    pub(crate) name: String,
}

/// A value of `HKLM\SYSTEM\Setup` as it was before the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Restore {
    /// The value did not exist.
    Absent,
    /// A REG_DWORD.
    Dword(u32),
    /// A REG_SZ of safe characters.
    Sz(String),
    /// A REG_EXPAND_SZ of safe characters.
    ExpandSz(String),
}

impl Restore {
    fn marker(&self) -> String {
        match self {
            Self::Absent => "absent".into(),
            Self::Dword(n) => format!("dword:{n}"),
            Self::Sz(s) => format!("sz:{s}"),
            Self::ExpandSz(s) => format!("expand_sz:{s}"),
        }
    }

    fn parse(s: &str) -> Option<Self> {
        if s == "absent" {
            return Some(Self::Absent);
        }
        if let Some(n) = s.strip_prefix("dword:") {
            return n.parse().ok().map(Self::Dword);
        }
        if let Some(t) = s.strip_prefix("sz:") {
            return safe_text(t).then(|| Self::Sz(t.to_owned()));
        }
        if let Some(t) = s.strip_prefix("expand_sz:") {
            return safe_text(t).then(|| Self::ExpandSz(t.to_owned()));
        }
        None
    }

    /// The `reg` command that puts the value back.
    fn command(&self, name: &str) -> String {
        let key = "\"%REG%\" ";
        match self {
            Self::Absent => {
                format!("{key}delete \"HKLM\\SYSTEM\\Setup\" /v {name} /f >>\"%LOG%\" 2>&1")
            }
            Self::Dword(n) => format!(
                "{key}add \"HKLM\\SYSTEM\\Setup\" /v {name} /t REG_DWORD /d {n} /f >>\"%LOG%\" 2>&1"
            ),
            Self::Sz(s) => format!(
                "{key}add \"HKLM\\SYSTEM\\Setup\" /v {name} /t REG_SZ /d \"{s}\" /f >>\"%LOG%\" 2>&1"
            ),
            Self::ExpandSz(s) => format!(
                "{key}add \"HKLM\\SYSTEM\\Setup\" /v {name} /t REG_EXPAND_SZ /d \"{s}\" /f >>\"%LOG%\" 2>&1"
            ),
        }
    }
}

/// Text that can stand inside a quoted cmd.exe argument as is: no `%`, `!`, `"`, `^`, `&`, `|`,
/// `<`, `>`, control characters, at most 256 bytes.
fn safe_text(s: &str) -> bool {
    s.len() <= 256
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    ' ' | '.' | ':' | '\\' | '/' | '_' | '-' | ',' | '=' | '(' | ')' | '+'
                )
        })
}

/// A log-safe form of untrusted text: unsafe characters become `_`, at most 80 characters.
fn log_text(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-' | ',' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}` (any case), returned upper case.
pub(crate) fn guid(s: &str) -> Option<String> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let parts: Vec<&str> = inner.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    (parts.len() == 5
        && parts
            .iter()
            .zip(lens)
            .all(|(p, l)| p.len() == l && p.bytes().all(|b| b.is_ascii_hexdigit())))
    .then(|| format!("{{{}}}", inner.to_ascii_uppercase()))
}

/// A driver INF file name we pass to pnputil: `A-Z a-z 0-9 . _ -`, ending in `.inf`.
fn inf_name_ok(n: &str) -> bool {
    (5..=64).contains(&n.len())
        && n.to_ascii_lowercase().ends_with(".inf")
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The strings of a REG_MULTI_SZ, or of a REG_SZ split at commas and spaces.
fn strings(v: Option<hive::Value>) -> Vec<String> {
    let Some(v) = v else { return Vec::new() };
    if let Some(m) = v.as_multi_string() {
        return m
            .iter()
            .flat_map(|s| s.split([',', ' ']))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .take(MAX_ADDRESSES)
            .collect();
    }
    v.as_string()
        .map(|s| {
            s.split([',', ' ', ';'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .take(MAX_ADDRESSES)
                .collect()
        })
        .unwrap_or_default()
}

fn ipv4s(items: &[String], notes: &mut Vec<String>, what: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for i in items {
        match i.trim().parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() => out.push(a),
            Ok(_) => {}
            Err(_) => notes.push(format!(
                "{what}: {:?} is not an IPv4 address, left out",
                log_text(i)
            )),
        }
    }
    out
}

/// The static interfaces of `ccs` (see the module docs), in NetworkCards order then by GUID.
pub(crate) fn static_ips(
    system: &HiveEdit,
    software: Option<&HiveEdit>,
    ccs: &str,
    notes: &mut Vec<String>,
) -> Result<Vec<StaticIp>> {
    let base = format!("{ccs}\\Services\\Tcpip\\Parameters\\Interfaces");
    let mut keys: Vec<String> = system.subkeys(&base)?;
    keys.truncate(MAX_INTERFACES);
    keys.sort_by_key(|k| k.to_ascii_uppercase());
    // Install order from NetworkCards\<n>\ServiceName.
    let mut order: Vec<(u32, String)> = Vec::new();
    if let Some(sw) = software {
        let nc = "Microsoft\\Windows NT\\CurrentVersion\\NetworkCards";
        for n in sw.subkeys(nc)?.iter().take(MAX_INTERFACES) {
            let num = n.parse::<u32>().unwrap_or(u32::MAX);
            if let Some(s) = sw
                .value(&format!("{nc}\\{n}"), "ServiceName")?
                .and_then(|v| v.as_string())
                && let Some(g) = guid(&s)
            {
                order.push((num, g));
            }
        }
    }
    order.sort();
    let rank = |k: &str| {
        let up = k.to_ascii_uppercase();
        order
            .iter()
            .position(|(_, g)| *g == up)
            .unwrap_or(usize::MAX)
    };
    keys.sort_by_key(|k| (rank(k), k.to_ascii_uppercase()));
    let mut out = Vec::new();
    for k in keys {
        let Some(g) = guid(&k) else { continue };
        let key = format!("{base}\\{k}");
        if system.dword(&key, "EnableDHCP")? != Some(0) {
            continue;
        }
        let what = format!("interface {g}");
        let addrs = ipv4s(&strings(system.value(&key, "IPAddress")?), notes, &what);
        if addrs.is_empty() {
            continue;
        }
        let masks = ipv4s(&strings(system.value(&key, "SubnetMask")?), notes, &what);
        let mut addresses = Vec::new();
        for (i, a) in addrs.iter().enumerate() {
            match masks.get(i) {
                Some(m) => addresses.push((*a, *m)),
                None => notes.push(format!("{what}: {a} has no subnet mask, left out")),
            }
        }
        if addresses.is_empty() {
            continue;
        }
        out.push(StaticIp {
            guid: g,
            addresses,
            gateways: ipv4s(
                &strings(system.value(&key, "DefaultGateway")?),
                notes,
                &what,
            ),
            dns: ipv4s(&strings(system.value(&key, "NameServer")?), notes, &what),
        });
    }
    Ok(out)
}

/// The hypervisor tools products in the Uninstall keys, and notes on the entries that cannot
/// be uninstalled with msiexec.
pub(crate) fn tool_products(sw: &HiveEdit, notes: &mut Vec<String>) -> Result<Vec<Product>> {
    let mut out: Vec<Product> = Vec::new();
    for view in UNINSTALL_KEYS {
        for k in sw.subkeys(view)?.iter().take(MAX_UNINSTALL_KEYS) {
            let key = format!("{view}\\{k}");
            let Some(name) = sw.value(&key, "DisplayName")?.and_then(|v| v.as_string()) else {
                continue;
            };
            if !TOOLS.iter().any(|t| {
                name.to_ascii_lowercase()
                    .starts_with(&t.to_ascii_lowercase())
            }) {
                continue;
            }
            match guid(k) {
                Some(code) => {
                    if !out.iter().any(|p| p.code == code) {
                        out.push(Product {
                            code,
                            name: log_text(&name),
                        });
                    }
                }
                None => notes.push(format!(
                    "{} is not a windows installer product ({}), not uninstalled",
                    log_text(&name),
                    log_text(k)
                )),
            }
        }
    }
    Ok(out)
}

/// One step of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    /// `s01`, `s02`, …
    pub(crate) id: String,
    /// What it does (safe text).
    pub(crate) title: String,
    /// The body lines; they set `RC` and call `:codes` or set `OK`.
    pub(crate) body: Vec<String>,
}

/// The whole script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Script {
    pub(crate) steps: Vec<Step>,
    pub(crate) setup_type: Restore,
    pub(crate) cmdline: Restore,
}

fn codes_line(codes: &[u32]) -> String {
    let list: Vec<String> = codes.iter().map(u32::to_string).collect();
    format!("call :codes {}", list.join(" "))
}

fn driver_step(id: String, inf: &str, add_driver: bool) -> Step {
    let path = format!("%SystemRoot%\\Drivers\\VirtIO\\{inf}");
    let cmd = if add_driver {
        format!(
            "\"%SystemRoot%\\System32\\pnputil.exe\" /add-driver \"{path}\" /install >>\"%LOG%\" 2>&1"
        )
    } else {
        format!("\"%SystemRoot%\\System32\\pnputil.exe\" -i -a \"{path}\" >>\"%LOG%\" 2>&1")
    };
    Step {
        title: format!("install driver package {inf}"),
        body: vec![cmd, "set RC=%ERRORLEVEL%".into(), codes_line(PNPUTIL_OK)],
        id,
    }
}

fn trust_step(id: String) -> Step {
    let nope = format!("{id}_nops");
    Step {
        title: TRUST_TITLE.into(),
        body: vec![
            format!("if not exist \"%PS%\" goto {nope}"),
            format!(
                "%PS% -NoProfile -NonInteractive -ExecutionPolicy Bypass -File %RH%\\{TRUST_PS1} %SystemRoot%\\Drivers\\VirtIO >>\"%LOG%\" 2>&1"
            ),
            "set RC=%ERRORLEVEL%".into(),
            codes_line(&[0]),
            "goto :eof".into(),
            format!(":{nope}"),
            "set RC=no-powershell".into(),
        ],
        id,
    }
}

fn uninstall_step(id: String, p: &Product) -> Step {
    Step {
        title: format!("uninstall {} {}", p.name, p.code),
        body: vec![
            format!(
                "start \"\" /wait \"%SystemRoot%\\System32\\msiexec.exe\" /x {} /qn /norestart REBOOT=ReallySuppress /l*v \"%RH%\\msi-{id}.log\"",
                p.code
            ),
            "set RC=%ERRORLEVEL%".into(),
            codes_line(MSIEXEC_OK),
        ],
        id,
    }
}

fn disks_step(id: String) -> Step {
    let dp = "\"%SystemRoot%\\System32\\diskpart.exe\" /s \"%RH%\\diskpart.txt\" >>\"%LOG%\" 2>&1";
    let script = "\"%RH%\\diskpart.txt\"";
    let next = format!("{id}_next");
    let done = format!("{id}_done");
    Step {
        title: "bring offline disks online".into(),
        body: vec![
            // One diskpart run per disk: `select disk` has no noerr, so a missing disk number
            // ends its run with an error, which ends the loop (disk numbers are contiguous).
            "set DN=0".into(),
            format!(":{next}"),
            format!(">{script} echo select disk %DN%"),
            format!(">>{script} echo online disk noerr"),
            format!(">>{script} echo attributes disk clear readonly noerr"),
            dp.into(),
            format!("if errorlevel 1 goto {done}"),
            "set /a DN+=1".into(),
            format!("if %DN% lss {MAX_DISKS} goto {next}"),
            format!(":{done}"),
            "call :log \"disks 0 to %DN% looked at\"".into(),
            format!(">{script} echo san policy=OnlineAll"),
            dp.into(),
            "set RC=%ERRORLEVEL%".into(),
            codes_line(&[0]),
        ],
        id,
    }
}

fn static_ip_step(id: String, index: usize, s: &StaticIp, validate_flag: bool) -> Step {
    let nth = index.saturating_add(1);
    let fail = format!("{id}_fail");
    let nonic = format!("{id}_nonic");
    let run = |cmd: String| {
        vec![
            format!("{cmd} >>\"%LOG%\" 2>&1"),
            format!("if errorlevel 1 goto {fail}"),
        ]
    };
    let mut body = vec![
        "set \"NIC=\"".to_owned(),
        format!("if not exist \"%PS%\" goto {nonic}"),
        format!(
            "for /f \"usebackq delims=\" %%A in (`%PS% -NoProfile -NonInteractive -ExecutionPolicy Bypass -File %RH%\\{NIC_PS1} {index}`) do set \"NIC=%%A\""
        ),
        format!("if not defined NIC goto {nonic}"),
        format!(
            ">>\"%LOG%\" echo [%DATE% %TIME%] static interface {} ({}) to virtio NIC {nth}: \"%NIC%\"",
            s.guid,
            s.addresses
                .iter()
                .map(|(a, m)| format!("{a} mask {m}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ];
    for (i, (a, m)) in s.addresses.iter().enumerate() {
        let cmd = if i == 0 {
            let gw = s
                .gateways
                .first()
                .map_or_else(String::new, |g| format!(" gateway={g} gwmetric=1"));
            format!(
                "netsh interface ip set address name=\"%NIC%\" source=static address={a} mask={m}{gw}"
            )
        } else {
            format!("netsh interface ip add address name=\"%NIC%\" address={a} mask={m}")
        };
        body.extend(run(cmd));
    }
    for g in s.gateways.iter().skip(1) {
        body.extend(run(format!(
            "netsh interface ip add address name=\"%NIC%\" gateway={g} gwmetric=1"
        )));
    }
    let validate = if validate_flag { " validate=no" } else { "" };
    for (i, d) in s.dns.iter().enumerate() {
        let cmd = if i == 0 {
            format!(
                "netsh interface ip set dns name=\"%NIC%\" source=static address={d} register=primary{validate}"
            )
        } else {
            format!(
                "netsh interface ip add dns name=\"%NIC%\" address={d} index={}{validate}",
                i.saturating_add(1)
            )
        };
        body.extend(run(cmd));
    }
    body.extend([
        "set RC=0".to_owned(),
        "set OK=1".to_owned(),
        "goto :eof".to_owned(),
        format!(":{fail}"),
        "set RC=%ERRORLEVEL%".to_owned(),
        "goto :eof".to_owned(),
        format!(":{nonic}"),
        "set RC=no-nic".to_owned(),
        format!("call :log \"no virtio NIC number {nth} (driver netkvm) found, or no powershell\""),
    ]);
    Step {
        title: format!("static IP of interface {} to virtio NIC {nth}", s.guid),
        body,
        id,
    }
}

/// CRLF line endings, as cmd.exe, diskpart and PowerShell 2 expect.
fn crlf(lines: &[String]) -> String {
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

/// The marker line that keeps the values to restore.
const RESTORE_MARKER: &str = "rem rehost-restore ";

impl Script {
    /// The script text (CRLF).
    pub(crate) fn render(&self) -> String {
        let t = MAX_TRIES;
        let mut l: Vec<String> = vec![
            "@echo off".into(),
            "rem rehost first-boot script: winlogon runs it once as SYSTEM before the logon screen".into(),
            "rem (HKLM\\SYSTEM\\Setup SetupType=2, CmdLine). Each step is tried at most 3 times over".into(),
            "rem successive boots, then skipped; the hook is disarmed before any step runs.".into(),
            format!(
                "{RESTORE_MARKER}SetupType={} CmdLine={}",
                self.setup_type.marker(),
                self.cmdline.marker()
            ),
            "setlocal EnableExtensions DisableDelayedExpansion".into(),
            format!("set \"RH=%SystemRoot%\\{DIR}\""),
            "set \"LOG=%RH%\\firstboot.log\"".into(),
            "set \"STATE=%RH%\\state\"".into(),
            "set \"REG=%SystemRoot%\\System32\\reg.exe\"".into(),
            "set \"PS=%SystemRoot%\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\"".into(),
            "set PENDING=0".into(),
            "if not exist \"%STATE%\\\" mkdir \"%STATE%\"".into(),
            "call :log \"start on %COMPUTERNAME%\"".into(),
            "rem Disarm first: whatever happens below, the next boot is an ordinary one unless the end of".into(),
            "rem this run re-arms the hook for a step that failed and has attempts left.".into(),
            "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v SetupType /t REG_DWORD /d 0 /f >>\"%LOG%\" 2>&1".into(),
            "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v CmdLine /t REG_SZ /d \"\" /f >>\"%LOG%\" 2>&1".into(),
        ];
        for s in &self.steps {
            l.push(format!("call :attempt {} \"{}\"", s.id, s.title));
        }
        l.extend([
            "if %PENDING% gtr 0 goto rearm".into(),
            "call :log \"every step done or given up: removing the first-boot hook\"".into(),
            self.cmdline.command("CmdLine"),
            self.setup_type.command("SetupType"),
            "if exist \"%STATE%\\\" rmdir /s /q \"%STATE%\"".into(),
            format!("if exist \"%RH%\\{NIC_PS1}\" del /f /q \"%RH%\\{NIC_PS1}\""),
            format!("if exist \"%RH%\\{TRUST_PS1}\" del /f /q \"%RH%\\{TRUST_PS1}\""),
            format!("if exist \"%RH%\\{DISKPART}\" del /f /q \"%RH%\\{DISKPART}\""),
            "call :log \"finished\"".into(),
            "rem Deletes this file once cmd.exe has left it.".into(),
            "(goto) 2>nul & del /f /q \"%~f0\"".into(),
            "goto :eof".into(),
            String::new(),
            ":rearm".into(),
            "call :log \"%PENDING% step(s) failed and will be tried again at the next boot\"".into(),
            "\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v CmdLine /t REG_SZ /d \"cmd.exe /c %%SystemRoot%%\\rehost\\firstboot.cmd\" /f >>\"%LOG%\" 2>&1".into(),
            format!("\"%REG%\" add \"HKLM\\SYSTEM\\Setup\" /v SetupType /t REG_DWORD /d {SETUP_TYPE_RUN} /f >>\"%LOG%\" 2>&1"),
            "goto :eof".into(),
            String::new(),
            ":log".into(),
            ">>\"%LOG%\" echo [%DATE% %TIME%] %~1".into(),
            "goto :eof".into(),
            String::new(),
            "rem :attempt ID TITLE runs step ID unless it is done or has used its attempts; the attempt".into(),
            "rem marker is written before the step runs, so a crash or hang also counts.".into(),
            ":attempt".into(),
            "if exist \"%STATE%\\%~1.done\" goto :eof".into(),
            format!("if exist \"%STATE%\\%~1.{t}\" goto attempt_given_up"),
            format!("set N={t}"),
        ]);
        for k in (1..t).rev() {
            l.push(format!("if not exist \"%STATE%\\%~1.{k}\" set N={k}"));
        }
        l.extend([
            ">\"%STATE%\\%~1.%N%\" echo attempt".into(),
            format!("call :log \"step %~1 (%~2): attempt %N% of {t}\""),
            "set RC=none".into(),
            "set OK=0".into(),
            "call :%~1".into(),
            "call :log \"step %~1: exit code %RC%\"".into(),
            "if \"%OK%\"==\"1\" goto attempt_ok".into(),
            format!("if %N% lss {t} set /a PENDING+=1"),
            format!("if %N% geq {t} call :log \"step %~1: failed {t} times, given up\""),
            "goto :eof".into(),
            ":attempt_ok".into(),
            ">\"%STATE%\\%~1.done\" echo done".into(),
            "goto :eof".into(),
            ":attempt_given_up".into(),
            format!("call :log \"step %~1 (%~2): skipped, it failed {t} times\""),
            "goto :eof".into(),
            String::new(),
            "rem :codes C1 C2 ... sets OK=1 if RC is one of them.".into(),
            ":codes".into(),
            "if \"%~1\"==\"\" goto :eof".into(),
            "if \"%RC%\"==\"%~1\" set OK=1".into(),
            "shift".into(),
            "goto codes".into(),
        ]);
        for s in &self.steps {
            l.push(String::new());
            l.push(format!("rem {}", s.title));
            l.push(format!(":{}", s.id));
            l.extend(s.body.iter().cloned());
            l.push("goto :eof".into());
        }
        crlf(&l)
    }
}

/// The values to restore recorded in an existing script.
fn parse_restore(script: &str) -> Option<(Restore, Restore)> {
    let line = script
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(RESTORE_MARKER))?;
    let rest = line.strip_prefix("SetupType=")?;
    let (st, cl) = rest.split_once(" CmdLine=")?;
    Some((Restore::parse(st)?, Restore::parse(cl)?))
}

/// The publisher-trust helper (PowerShell 2 compatible): adds the signer certificate of every
/// catalog in the folder `$args[0]` to `LocalMachine\TrustedPublisher`, and logs each.
pub(crate) fn trust_ps1() -> String {
    crlf(&[
        "# rehost: trusts the signers of the driver catalogs in folder $args[0] as publishers, so".into(),
        "# pnputil installs their packages without asking (nobody can answer before logon).".into(),
        "$failed = 0".into(),
        "$store = New-Object System.Security.Cryptography.X509Certificates.X509Store 'TrustedPublisher', 'LocalMachine'".into(),
        "$store.Open('ReadWrite')".into(),
        "foreach ($cat in @(Get-ChildItem -Path $args[0] -Filter '*.cat')) {".into(),
        "    $cert = (Get-AuthenticodeSignature -FilePath $cat.FullName).SignerCertificate".into(),
        "    if ($cert) {".into(),
        "        $store.Add($cert)".into(),
        "        Write-Output ('trusted ' + $cert.Subject + ' ' + $cert.Thumbprint + ' (' + $cat.Name + ')')".into(),
        "    } else {".into(),
        "        Write-Output ('no signature on ' + $cat.Name)".into(),
        "        $failed = 1".into(),
        "    }".into(),
        "}".into(),
        "$store.Close()".into(),
        "exit $failed".into(),
    ])
}

/// The NIC finder (PowerShell 2 compatible).
pub(crate) fn nic_ps1() -> String {
    crlf(&[
        "# rehost: prints the connection name of virtio NIC number $args[0] (0-based), the network".into(),
        "# adapters whose driver service is netkvm sorted by interface index.".into(),
        "$i = [int]$args[0]".into(),
        "$n = @(Get-WmiObject -Class Win32_NetworkAdapter -Filter \"ServiceName='netkvm'\" | Where-Object { $_.NetConnectionID } | Sort-Object -Property InterfaceIndex)".into(),
        "if ($i -lt $n.Count) { $n[$i].NetConnectionID }".into(),
    ])
}

fn restore_of(v: Option<hive::Value>, notes: &mut Vec<String>, name: &str) -> Restore {
    let Some(v) = v else { return Restore::Absent };
    match v.kind {
        ValueType::Dword => v.as_dword().map_or(Restore::Dword(0), Restore::Dword),
        ValueType::Sz | ValueType::ExpandSz => {
            let s = v.as_string().unwrap_or_default();
            if !safe_text(&s) {
                notes.push(format!(
                    "Setup {name} {:?} cannot be written back by a script: it will be left empty",
                    log_text(&s)
                ));
                Restore::Sz(String::new())
            } else if v.kind == ValueType::Sz {
                Restore::Sz(s)
            } else {
                Restore::ExpandSz(s)
            }
        }
        _ => {
            notes.push(format!(
                "Setup {name} has type {:?}: it will be left as an empty REG_SZ",
                v.kind
            ));
            Restore::Sz(String::new())
        }
    }
}

impl Fixer for Firstboot {
    fn name(&self) -> &'static str {
        "windows-firstboot"
    }

    fn description(&self) -> &'static str {
        "run a script once as SYSTEM at the next boot before logon (winlogon's Setup CmdLine, no third-party binary): pnputil the staged drivers, uninstall hypervisor tools, online data disks, re-apply static IPs; at most 3 attempts per step, then it removes itself"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let mut out = Outcome::default();
        let mut system = HiveEdit::open_required(ctx, &info.hive_path("SYSTEM"), SYSTEM_PREFIX)?;
        let software = HiveEdit::open(ctx, &info.hive_path("SOFTWARE"), SOFTWARE_PREFIX)?;
        let dir = format!("{}/{DIR}", info.sysroot);
        let script_path = format!("{dir}/{SCRIPT}");
        let existing = ctx.read_text(&script_path)?;
        // The hook: ours, free, or somebody else's (refused).
        let cur_type = system.value(SETUP_KEY, "SetupType")?;
        let cur_cmd = system.value(SETUP_KEY, "CmdLine")?;
        let ours = cur_cmd
            .as_ref()
            .and_then(hive::Value::as_string)
            .is_some_and(|c| c.eq_ignore_ascii_case(CMDLINE));
        for flag in ["SystemSetupInProgress", "OOBEInProgress"] {
            if system.dword(SETUP_KEY, flag)?.unwrap_or(0) != 0 {
                return Err(refused(format!(
                    "windows setup is in progress ({flag}=1): the setup command hook is in use"
                )));
            }
        }
        let setup_type = cur_type
            .as_ref()
            .and_then(hive::Value::as_dword)
            .unwrap_or(0);
        if setup_type != 0 && !ours {
            return Err(refused(format!(
                "HKLM\\SYSTEM\\Setup SetupType is {setup_type} with CmdLine {:?}: another setup command is pending and the first-boot step would replace it",
                cur_cmd
                    .as_ref()
                    .and_then(hive::Value::as_string)
                    .map(|s| log_text(&s))
                    .unwrap_or_default()
            )));
        }
        let (restore_type, restore_cmd) = if ours {
            existing
                .as_ref()
                .and_then(|(_, t)| parse_restore(t))
                .unwrap_or((Restore::Dword(0), Restore::Sz(String::new())))
        } else {
            (
                restore_of(cur_type, &mut out.notes, "SetupType"),
                restore_of(cur_cmd, &mut out.notes, "CmdLine"),
            )
        };
        let steps = self.steps(
            ctx,
            params,
            &info,
            &system,
            software.as_ref(),
            &mut out.notes,
        )?;
        if steps.is_empty() {
            out.notes.push("no first-boot steps to run".into());
            return Ok(out);
        }
        let script = Script {
            steps,
            setup_type: restore_type,
            cmdline: restore_cmd,
        };
        let has_nic = script
            .steps
            .iter()
            .any(|s| s.title.starts_with("static IP"));
        if !ctx.exists(&dir)? {
            out.changes.push(Change::Mkdir {
                path: dir.clone(),
                mode: 0o755,
            });
        }
        let mut files = vec![(script_path, script.render())];
        if has_nic {
            files.push((format!("{dir}/{NIC_PS1}"), nic_ps1()));
        }
        if script.steps.iter().any(|s| s.title == TRUST_TITLE) {
            files.push((format!("{dir}/{TRUST_PS1}"), trust_ps1()));
        }
        for (path, content) in files {
            match ctx.read_text(&path)? {
                Some((canon, old)) => out.replace(&canon, &old, content),
                None => out.changes.push(Change::CreateFile {
                    path,
                    content: content.into_bytes(),
                    mode: 0o644,
                }),
            }
        }
        system.set_sz(SETUP_KEY, "CmdLine", CMDLINE)?;
        system.set_dword(SETUP_KEY, "SetupType", SETUP_TYPE_RUN)?;
        out.changes.extend(system.finish()?);
        let titles: Vec<&str> = script.steps.iter().map(|s| s.title.as_str()).collect();
        out.notes.push(format!(
            "first boot {} %SystemRoot%\\{DIR}\\{SCRIPT} (Setup SetupType=2, log %SystemRoot%\\{DIR}\\firstboot.log): {}",
            if out.changes.is_empty() { "already runs" } else { "runs" },
            titles.join("; ")
        ));
        Ok(out)
    }
}

fn refused(detail: String) -> Error {
    Error::Unsupported {
        what: "windows guest",
        detail,
    }
}

impl Firstboot {
    /// The steps the parameters ask for, from what the guest holds.
    fn steps(
        &self,
        ctx: &FixContext<'_>,
        params: &Params,
        info: &WinInfo,
        system: &HiveEdit,
        software: Option<&HiveEdit>,
        notes: &mut Vec<String>,
    ) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        let mut n = 0usize;
        let mut id = || {
            n = n.saturating_add(1);
            format!("s{n:02}")
        };
        if params.bool("drivers") {
            let add_driver = info.major >= 10 && info.build >= PNPUTIL_ADD_DRIVER_BUILD;
            let infs = ctx.list(&format!("{}/Drivers/VirtIO", info.sysroot), |n| {
                n.to_ascii_lowercase().ends_with(".inf")
            })?;
            // Before Windows 10 virtio-win's packages are signed by Red Hat, not WHQL, and
            // pnputil asks "Would you like to install this device software?" unless the
            // signer is a trusted publisher: nobody could answer before logon.
            if info.major < 10
                && infs
                    .iter()
                    .any(|p| inf_name_ok(p.rsplit('/').next().unwrap_or(p)))
            {
                steps.push(trust_step(id()));
            }
            for p in infs.iter().take(MAX_INFS) {
                let name = p.rsplit('/').next().unwrap_or(p);
                if inf_name_ok(name) {
                    steps.push(driver_step(id(), name, add_driver));
                } else {
                    notes.push(format!(
                        "driver package {:?} has an odd name, not installed",
                        log_text(name)
                    ));
                }
            }
        }
        if params.bool("remove_tools")
            && let Some(sw) = software
        {
            for p in tool_products(sw, notes)? {
                steps.push(uninstall_step(id(), &p));
            }
        }
        if params.bool("disks") {
            steps.push(disks_step(id()));
        }
        if params.bool("static_ip") {
            let ips = static_ips(system, software, &info.ccs, notes)?;
            // `validate=no` (skip netsh's DNS server probe, which fails while the network is still
            // coming up) is documented from Server 2012; older netsh is left to its default.
            let validate = (info.major, info.minor) >= (6, 2);
            for (i, s) in ips.iter().enumerate() {
                steps.push(static_ip_step(id(), i, s, validate));
            }
        }
        Ok(steps)
    }
}

/// Fuzz harness body (house style S17): plans this fixer over a Windows Server 2019 guest whose
/// SYSTEM and SOFTWARE hives are the input (both come from the guest disk), applies the plan
/// and plans again. Any input gives a plan or an error, never a panic or a hang.
#[doc(hidden)]
pub fn fuzz_firstboot(system: &[u8], software: &[u8]) {
    let mut g = crate::testkit::MemFs::new();
    g.add_file("/Windows/System32/config/SYSTEM", system)
        .add_file("/Windows/System32/config/SOFTWARE", software)
        .add_file("/Windows/Drivers/VirtIO/netkvm.inf", b"");
    let rep = super::testkit::report(super::testkit::WIN2019);
    let text = "schema = 1\nname = \"fuzz\"\ndescription = \"firstboot\"\n[match]\nos_type = \"windows\"\n[[step]]\nfixer = \"windows-firstboot\"\n";
    let Ok(recipe) = crate::Recipe::parse(text, crate::Origin::Inline) else {
        return;
    };
    let os = &rep.operating_systems[0];
    let opts = crate::PlanOptions::default();
    if let Ok(p) = crate::plan(&recipe, &rep, os, &g, &opts) {
        let _ = p.render_human();
        let _ = p.to_json();
        let mut fixed = g.clone();
        if crate::apply(&p, &mut fixed).is_ok() {
            let _ = crate::plan(&recipe, &rep, os, &fixed, &opts);
        }
    }
}

#[cfg(test)]
mod tests;
