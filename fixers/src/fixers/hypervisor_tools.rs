//! `hypervisor-tools`: switches off the guest tools of the hypervisor the VM came from
//! (open-vm-tools and VMware Tools, the Hyper-V daemons, xe-guest-utilities, the VirtualBox
//! additions) and installs a first-boot job that removes their packages with the guest's own
//! package manager once the VM runs on KVM.
//!
//! Offline, nothing of the guest is executed, so the services are disabled the way `systemctl
//! disable`/`mask`, `update-rc.d disable` and `chkconfig off` would do it, by editing links:
//! - systemd: the unit's links in `/etc/systemd/system/*.wants|*.requires|*.upholds` and its
//!   aliases in `/etc/systemd/system` are removed; the unit is also masked (a `/dev/null` link in
//!   `/etc/systemd/system`) when removing links cannot keep it from starting: a static unit
//!   (started by udev or another unit), a unit linked from the vendor's own `*.wants`
//!   directories, or a unit a preset would enable again (`systemctl preset-all` runs on a first
//!   boot with an empty machine-id; a unit no preset line names is enabled by default).
//! - SysV init: each `rc?.d/S??name` link becomes `K(100-??)name`, as `update-rc.d disable`
//!   does, so a package upgrade's `update-rc.d defaults` does not enable it again.
//!
//! Packages are known from dpkg's status file where there is one; an RPM database is not read
//! (it is Berkeley DB or SQLite), so on RPM guests unit files, init scripts and binaries are the
//! evidence and the first-boot script asks `rpm -q` which candidates are installed.
//!
//! The first-boot job is a systemd unit (`/etc/systemd/system/rehost-firstboot.service`, wanted
//! by `multi-user.target`) or, on SysV guests, an init script with `S99` links, both running
//! `/usr/libexec/rehost/firstboot.sh`. The script logs to `/var/log/rehost-firstboot.log`,
//! tries at most three boots, drops the masks whose unit files left with their package, and
//! deletes itself. Every word in it comes from this file's tables or from checked guest paths,
//! never from file contents of the image.

use std::collections::{BTreeMap, BTreeSet};

use guestfs::{FileType, Follow, FsReadExt, GuestPath, resolve};

use super::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Change, Result};

pub(crate) struct HypervisorTools;

static PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "remove_packages",
    kind: ParamKind::Bool,
    default: "true",
    help: "install a first-boot job that removes the tools' packages on the target",
}];

/// One hypervisor's guest tools.
#[derive(Debug)]
pub(crate) struct Family {
    /// Short name used in notes.
    pub(crate) name: &'static str,
    /// systemd unit names its packages ship (across distros).
    units: &'static [&'static str],
    /// SysV init script names.
    sysv: &'static [&'static str],
    /// Files whose presence shows the tools are installed.
    files: &'static [&'static str],
    /// Package names (Debian and RPM spellings) the first-boot script removes if installed.
    packages: &'static [&'static str],
    /// Uninstallers of tarball installs, as shell glob patterns (one `*` at most per component).
    uninstallers: &'static [&'static str],
}

/// The tool families, in a stable order (it is the order of the plan and of the script).
pub(crate) static FAMILIES: &[Family] = &[
    Family {
        name: "vmware",
        units: &[
            "open-vm-tools.service",
            "vmtoolsd.service",
            "vgauth.service",
            "vgauthd.service",
            "run-vmblock\\x2dfuse.mount",
            "vmware-tools.service",
            "vmware-tools-thinprint.service",
        ],
        sysv: &[
            "open-vm-tools",
            "vmtoolsd",
            "vmware-tools",
            "vmware-tools-thinprint",
        ],
        files: &[
            "/usr/bin/vmtoolsd",
            "/usr/sbin/vmtoolsd",
            "/etc/vmware-tools/locations",
        ],
        packages: &[
            "open-vm-tools",
            "open-vm-tools-desktop",
            "open-vm-tools-sdmp",
            "open-vm-tools-containerinfo",
            "open-vm-tools-salt-minion",
            "VMwareTools",
        ],
        uninstallers: &["/usr/bin/vmware-uninstall-tools.pl"],
    },
    Family {
        name: "hyperv",
        units: &[
            "hv-kvp-daemon.service",
            "hv-vss-daemon.service",
            "hv-fcopy-daemon.service",
            "hv_kvp_daemon.service",
            "hv_vss_daemon.service",
            "hv_fcopy_daemon.service",
            "hyperv-daemons.hv-kvp-daemon.service",
            "hyperv-daemons.hv-vss-daemon.service",
            "hyperv-daemons.hv-fcopy-daemon.service",
            "hypervkvpd.service",
            "hypervvssd.service",
            "hypervfcopyd.service",
        ],
        sysv: &[
            "hv-kvp-daemon",
            "hv_kvp_daemon",
            "hv_vss_daemon",
            "hypervkvpd",
            "hypervvssd",
            "hypervfcopyd",
        ],
        files: &[
            "/usr/sbin/hv_kvp_daemon",
            "/usr/sbin/hv_vss_daemon",
            "/usr/sbin/hypervkvpd",
            "/usr/sbin/hypervvssd",
        ],
        // Ubuntu's daemons come with the kernel's linux-cloud-tools packages; removing those
        // would take kernel metapackages with them, so there they are only masked.
        packages: &[
            "hyperv-daemons",
            "hyperv-daemons-license",
            "hypervkvpd",
            "hypervvssd",
            "hypervfcopyd",
            "hyperv-tools",
            "hyper-v",
        ],
        uninstallers: &[],
    },
    Family {
        name: "xen",
        units: &[
            "xe-linux-distribution.service",
            "xe-daemon.service",
            "xen-guest-agent.service",
        ],
        sysv: &["xe-linux-distribution"],
        files: &["/usr/sbin/xe-daemon", "/usr/sbin/xe-linux-distribution"],
        packages: &[
            "xe-guest-utilities",
            "xe-guest-utilities-xenstore",
            "xen-guest-agent",
        ],
        uninstallers: &[],
    },
    Family {
        name: "virtualbox",
        units: &[
            "vboxadd.service",
            "vboxadd-service.service",
            "virtualbox-guest-utils.service",
        ],
        sysv: &[
            "vboxadd",
            "vboxadd-service",
            "vboxadd-x11",
            "virtualbox-guest-utils",
            "virtualbox-guest-x11",
        ],
        files: &["/usr/sbin/VBoxService", "/usr/bin/VBoxClient"],
        packages: &[
            "virtualbox-guest-utils",
            "virtualbox-guest-x11",
            "virtualbox-guest-dkms",
            "virtualbox-guest-additions",
            "VirtualBox-guest-additions",
            "virtualbox-guest-tools",
            "virtualbox-kmp-default",
        ],
        uninstallers: &["/opt/VBoxGuestAdditions-*/uninstall.sh"],
    },
];

/// Where the administrator's units and enablement links live.
const ETC_UNITS: &str = "/etc/systemd/system";
/// Where packages install units (`/lib` is `/usr/lib` on merged-usr guests; both are read).
const VENDOR_UNIT_DIRS: &[&str] = &[
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// Preset directories, highest priority first (systemd.preset(5)).
const PRESET_DIRS: &[&str] = &[
    "/etc/systemd/system-preset",
    "/usr/local/lib/systemd/system-preset",
    "/usr/lib/systemd/system-preset",
    "/lib/systemd/system-preset",
];
/// SysV runlevel link directories (Debian keeps them in `/etc`, Red Hat in `/etc/rc.d`).
const RC_DIRS: &[&str] = &[
    "/etc/rc0.d",
    "/etc/rc1.d",
    "/etc/rc2.d",
    "/etc/rc3.d",
    "/etc/rc4.d",
    "/etc/rc5.d",
    "/etc/rc6.d",
    "/etc/rcS.d",
    "/etc/rc.d/rc0.d",
    "/etc/rc.d/rc1.d",
    "/etc/rc.d/rc2.d",
    "/etc/rc.d/rc3.d",
    "/etc/rc.d/rc4.d",
    "/etc/rc.d/rc5.d",
    "/etc/rc.d/rc6.d",
];
/// The multi-user runlevels the SysV first-boot script starts in.
const MULTIUSER_RC_DIRS: &[&str] = &[
    "/etc/rc2.d",
    "/etc/rc3.d",
    "/etc/rc4.d",
    "/etc/rc5.d",
    "/etc/rc.d/rc2.d",
    "/etc/rc.d/rc3.d",
    "/etc/rc.d/rc4.d",
    "/etc/rc.d/rc5.d",
];
/// dpkg's database of installed packages (deb-control(5) paragraphs).
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// Largest dpkg status file read (a desktop install with 5,000 packages is about 10 MiB).
const MAX_DPKG_STATUS_BYTES: u64 = 64 << 20;
/// Most entries looked at in one directory (house style S12).
const MAX_DIR_ENTRIES: usize = 8192;
/// Most preset lines kept (Fedora's presets have about 300).
const MAX_PRESET_LINES: usize = 20_000;
/// Most paths one uninstaller glob expands to.
const MAX_GLOB_MATCHES: usize = 64;

/// The first-boot job's files.
pub(crate) const FIRSTBOOT_NAME: &str = "rehost-firstboot";
const SCRIPT_DIR: &str = "/usr/libexec";
const SCRIPT_NAME: &str = "firstboot.sh";
const UNIT_NAME: &str = "rehost-firstboot.service";
const WANTS_DIR: &str = "multi-user.target.wants";
/// Written by the script when it is done; the unit's condition and the init script check it.
pub(crate) const DONE_FILE: &str = "/var/lib/rehost/firstboot.done";
/// The script's log.
pub(crate) const LOG_FILE: &str = "/var/log/rehost-firstboot.log";

/// Everything the fixer learnt about the guest that does not depend on a family.
struct Scan {
    systemd: bool,
    /// Canonical `/etc/systemd/system`, if it is a directory.
    etc_units: Option<GuestPath>,
    /// Canonical vendor unit directories that exist (deduplicated).
    vendor_dirs: Vec<GuestPath>,
    /// Their `*.wants` and `*.requires` subdirectories.
    vendor_wants: Vec<GuestPath>,
    /// Preset lines in precedence order: (enables, unit glob).
    preset_lines: Vec<(bool, String)>,
    /// Canonical runlevel directories that exist, deduplicated.
    rc_dirs: Vec<GuestPath>,
    /// Installed packages by dpkg, or `None` without a dpkg database.
    dpkg: Option<BTreeSet<String>>,
}

/// Lists a directory (canonical path) as (name, type), skipping non-UTF-8 names; a missing
/// directory is empty.
fn entries(ctx: &FixContext<'_>, dir: &GuestPath) -> Result<Vec<(String, FileType)>> {
    let list = match ctx.fs.read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out: Vec<(String, FileType)> = list
        .into_iter()
        .take(MAX_DIR_ENTRIES)
        .filter_map(|e| String::from_utf8(e.name).ok().map(|n| (n, e.file_type)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The canonical path of directory `raw`, if it is one.
fn dir(ctx: &FixContext<'_>, raw: &str) -> Result<Option<GuestPath>> {
    let p = match resolve(ctx.fs, raw.as_bytes(), Follow::Final) {
        Ok(p) => p,
        Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match ctx.fs.lstat(&p) {
        Ok(m) if m.file_type == FileType::Directory => Ok(Some(p)),
        Ok(_) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What is at canonical `p` (not followed): `None`, or its type and, for a symlink, its target.
fn node(ctx: &FixContext<'_>, p: &GuestPath) -> Result<Option<(FileType, Vec<u8>)>> {
    match ctx.fs.lstat(p) {
        Ok(m) if m.file_type == FileType::Symlink => Ok(Some((m.file_type, ctx.fs.read_link(p)?))),
        Ok(m) => Ok(Some((m.file_type, Vec::new()))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn join(dir: &GuestPath, name: &str) -> Result<GuestPath> {
    Ok(dir.join_name(name.as_bytes())?)
}

/// `Some(true)` if `/sbin/init` leads to a file called `systemd`, `Some(false)` if it leads to
/// another init, `None` without `/sbin/init`.
fn init_is_systemd(ctx: &FixContext<'_>) -> Result<Option<bool>> {
    if let Ok(p) = resolve(ctx.fs, b"/sbin/init", Follow::Final)
        && node(ctx, &p)?.is_some()
    {
        return Ok(Some(p.file_name() == Some(b"systemd")));
    }
    Ok(None)
}

/// Reads a small text file (lossy UTF-8: unit and preset files are only searched for ASCII
/// keys); `None` if it is missing or not a regular file.
fn read_lossy(ctx: &FixContext<'_>, p: &GuestPath) -> Result<Option<String>> {
    let p = match resolve(ctx.fs, &p.to_bytes(), Follow::Final) {
        Ok(p) => p,
        Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match node(ctx, &p)? {
        Some((FileType::Regular, _)) => {}
        _ => return Ok(None),
    }
    match ctx
        .fs
        .read_file(&p.to_bytes(), super::MAX_FILE_BYTES as u64)
    {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        // Not a unit or preset file anyone wrote by hand: ignored like a missing one.
        Err(guestfs::Error::LimitExceeded { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Installed package names from a dpkg status file (paragraphs of `Package:` and `Status:`;
/// installed means the status's last word is `installed`, as `dpkg-query` reports it).
pub(crate) fn dpkg_installed(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let (mut name, mut installed) = (None::<&str>, false);
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(n), true) = (name.take(), installed) {
                out.insert(n.to_owned());
            }
            installed = false;
            continue;
        }
        if let Some(v) = line.strip_prefix("Package:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("Status:") {
            installed = v.split_whitespace().last() == Some("installed");
        }
    }
    out
}

impl Scan {
    fn new(ctx: &FixContext<'_>) -> Result<Self> {
        let mut vendor_dirs = Vec::new();
        for d in VENDOR_UNIT_DIRS {
            if let Some(p) = dir(ctx, d)?
                && !vendor_dirs.contains(&p)
            {
                vendor_dirs.push(p);
            }
        }
        let mut rc_dirs = Vec::new();
        for d in RC_DIRS {
            if let Some(p) = dir(ctx, d)?
                && !rc_dirs.contains(&p)
            {
                rc_dirs.push(p);
            }
        }
        let dpkg = match ctx.fs.stat_path(DPKG_STATUS.as_bytes()) {
            Ok(m) if m.file_type == FileType::Regular => {
                match ctx
                    .fs
                    .read_file(DPKG_STATUS.as_bytes(), MAX_DPKG_STATUS_BYTES)
                {
                    Ok(bytes) => Some(dpkg_installed(&String::from_utf8_lossy(&bytes))),
                    // Too big to believe: as without a database, the script asks dpkg-query.
                    Err(guestfs::Error::LimitExceeded { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
            _ => None,
        };
        let etc_units = dir(ctx, ETC_UNITS)?;
        // Without /sbin/init (a partial tree), a systemd binary or a systemd-only layout decides.
        let systemd = match init_is_systemd(ctx)? {
            Some(s) => s,
            None => {
                ctx.exists("/lib/systemd/systemd")?
                    || ctx.exists("/usr/lib/systemd/systemd")?
                    || (etc_units.is_some() && rc_dirs.is_empty())
            }
        };
        let mut vendor_wants = Vec::new();
        for d in &vendor_dirs {
            for (sub, t) in entries(ctx, d)? {
                if t == FileType::Directory
                    && (sub.ends_with(".wants") || sub.ends_with(".requires"))
                {
                    vendor_wants.push(join(d, &sub)?);
                }
            }
        }
        let mut presets: BTreeMap<String, GuestPath> = BTreeMap::new();
        for d in PRESET_DIRS {
            if let Some(p) = dir(ctx, d)? {
                for (n, t) in entries(ctx, &p)? {
                    if n.ends_with(".preset") && matches!(t, FileType::Regular | FileType::Symlink)
                    {
                        let f = join(&p, &n)?;
                        presets.entry(n).or_insert(f);
                    }
                }
            }
        }
        let mut preset_lines = Vec::new();
        for f in presets.values() {
            let Some(text) = read_lossy(ctx, f)? else {
                continue;
            };
            for line in text.lines().take(crate::text::MAX_LINES) {
                let mut w = line.split_whitespace();
                if let (Some(verb), Some(pat)) = (w.next(), w.next())
                    && !verb.starts_with(['#', ';'])
                    && preset_lines.len() < MAX_PRESET_LINES
                {
                    preset_lines.push((verb == "enable", pat.to_owned()));
                }
            }
        }
        Ok(Self {
            systemd,
            etc_units,
            vendor_dirs,
            vendor_wants,
            preset_lines,
            rc_dirs,
            dpkg,
        })
    }
}

/// `fnmatch`-style match of `*` and `?` (what preset files and our globs use); bounded by the
/// lengths (no backtracking blow-up: the classic two-pointer algorithm).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == b'*'))
}

/// The preset verdict for `unit`: the first line naming it (files ordered by name, `/etc`
/// shadowing the same name elsewhere) decides; with no line, systemd enables (systemd.preset(5)).
fn preset_enables(scan: &Scan, unit: &str) -> bool {
    scan.preset_lines
        .iter()
        .find(|(_, pat)| glob_match(pat, unit))
        .is_none_or(|(enable, _)| *enable)
}

/// True if the unit file's `[Install]` section lets `systemctl enable` enable it (a
/// `WantedBy=`, `RequiredBy=` or `UpheldBy=`); false for a static unit.
pub(crate) fn installable(unit_text: &str) -> bool {
    let mut in_install = false;
    for line in unit_text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
        } else if in_install
            && ["WantedBy", "RequiredBy", "UpheldBy"].iter().any(|k| {
                l.strip_prefix(k).is_some_and(|r| {
                    r.trim_start()
                        .strip_prefix('=')
                        .is_some_and(|v| !v.trim().is_empty())
                })
            })
        {
            return true;
        }
    }
    false
}

/// Splits `S20name` into (20, "name").
fn sysv_start_link(name: &str) -> Option<(u8, &str)> {
    let rest = name.strip_prefix('S')?;
    let num = rest.get(..2)?;
    if !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, rest.get(2..)?))
}

/// The name of a link target's last component.
fn target_name(target: &[u8]) -> &[u8] {
    target.rsplit(|&b| b == b'/').next().unwrap_or(target)
}

/// The families found and why.
struct Found {
    family: &'static Family,
    evidence: Vec<String>,
}

/// What the fixer will do to systemd for the families found.
#[derive(Default)]
struct Work {
    out: Outcome,
    /// Units masked (now or before): the script drops these masks once the packages are gone.
    masked: Vec<&'static str>,
    /// Per family: disabled unit and script names, for the notes.
    disabled: BTreeMap<&'static str, BTreeSet<String>>,
    /// What could not be done; reported even when nothing changes (it recurs on every run).
    problems: Vec<String>,
}

fn family_of(name: &str) -> Option<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.units.contains(&name) || f.sysv.contains(&name))
}

fn detect(ctx: &FixContext<'_>, scan: &Scan) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for f in FAMILIES {
        let mut ev = Vec::new();
        for u in f.units {
            // A unit file a package installed (a vendor link must lead to one), or one an
            // installer wrote to /etc; links in /etc alone are aliases or masks, not tools.
            let mut present = false;
            for d in &scan.vendor_dirs {
                let p = join(d, u)?;
                present |= match node(ctx, &p)? {
                    Some((FileType::Regular, _)) => true,
                    Some((FileType::Symlink, t)) => {
                        t != b"/dev/null" && ctx.fs.exists(&p.to_bytes())?
                    }
                    _ => false,
                };
            }
            if let Some(etc) = &scan.etc_units {
                present |= matches!(node(ctx, &join(etc, u)?)?, Some((FileType::Regular, _)));
            }
            if present {
                ev.push(format!("unit {u}"));
            }
        }
        if let Some(d) = dir(ctx, "/etc/init.d")? {
            for s in f.sysv {
                if node(ctx, &join(&d, s)?)?.is_some() {
                    ev.push(format!("init script {s}"));
                }
            }
        }
        for p in f.files {
            if ctx.exists(p)? {
                ev.push((*p).to_owned());
            }
        }
        if let Some(installed) = &scan.dpkg {
            for p in f.packages {
                if installed.contains(*p) {
                    ev.push(format!("package {p}"));
                }
            }
        }
        for u in f.uninstallers {
            if !glob_paths(ctx, u)?.is_empty() {
                ev.push((*u).to_owned());
            }
        }
        if !ev.is_empty() {
            out.push(Found {
                family: f,
                evidence: ev,
            });
        }
    }
    Ok(out)
}

/// Expands `pattern` (absolute; `*`/`?` within components) to existing guest paths, at most
/// [`MAX_GLOB_MATCHES`].
fn glob_paths(ctx: &FixContext<'_>, pattern: &str) -> Result<Vec<String>> {
    let mut cur = vec![GuestPath::root()];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for d in &cur {
            if comp.contains(['*', '?']) {
                for (n, _) in entries(ctx, d)? {
                    if glob_match(comp, &n) && next.len() < MAX_GLOB_MATCHES {
                        next.push(join(d, &n)?);
                    }
                }
            } else {
                let p = join(d, comp)?;
                if ctx.fs.exists(&p.to_bytes())? {
                    next.push(p);
                }
            }
        }
        cur = next;
    }
    Ok(cur.iter().map(ToString::to_string).collect())
}

/// Removes enablement links and aliases of known units, and masks where that is not enough.
fn disable_systemd(ctx: &FixContext<'_>, scan: &Scan, found: &[Found], w: &mut Work) -> Result<()> {
    let Some(etc) = &scan.etc_units else {
        return Ok(());
    };
    let known = |n: &str| found.iter().any(|f| f.family.units.contains(&n));
    let mut deleted: BTreeSet<GuestPath> = BTreeSet::new();
    let mut delete_link = |w: &mut Work, p: GuestPath, unit: &str| {
        if let Some(f) = family_of(unit) {
            w.disabled
                .entry(f.name)
                .or_default()
                .insert(unit.to_owned());
        }
        w.out.changes.push(Change::DeleteFile {
            path: p.to_string(),
            old: Vec::new(),
        });
        deleted.insert(p);
    };
    // Enablement links: etc/<target>.wants/<unit> (or an alias name pointing at a known unit).
    for (sub, t) in entries(ctx, etc)? {
        if t != FileType::Directory
            || ![".wants", ".requires", ".upholds"]
                .iter()
                .any(|s| sub.ends_with(s))
        {
            continue;
        }
        let sd = join(etc, &sub)?;
        for (n, t) in entries(ctx, &sd)? {
            if t != FileType::Symlink {
                continue;
            }
            let p = join(&sd, &n)?;
            let tgt = ctx.fs.read_link(&p)?;
            let tn = String::from_utf8_lossy(target_name(&tgt)).into_owned();
            if known(&n) || known(&tn) {
                let unit = if known(&n) { n } else { tn };
                delete_link(w, p, &unit);
            }
        }
    }
    // Aliases: etc/<alias> -> .../<unit>, either name known, but never a mask.
    for (n, t) in entries(ctx, etc)? {
        if t != FileType::Symlink {
            continue;
        }
        let p = join(etc, &n)?;
        let tgt = ctx.fs.read_link(&p)?;
        if tgt == b"/dev/null" {
            continue;
        }
        let tn = String::from_utf8_lossy(target_name(&tgt)).into_owned();
        if known(&n) || known(&tn) {
            let unit = if known(&tn) { tn } else { n };
            delete_link(w, p, &unit);
        }
    }
    // Masks.
    for f in found {
        for u in f.family.units {
            let mut unit_text = None;
            for d in &scan.vendor_dirs {
                let p = join(d, u)?;
                match node(ctx, &p)? {
                    Some((FileType::Symlink, t)) if t == b"/dev/null" => {}
                    Some(_) if unit_text.is_none() => unit_text = Some(read_lossy(ctx, &p)?),
                    _ => {}
                }
            }
            let mut vendor_linked = false;
            for d in &scan.vendor_wants {
                vendor_linked |= node(ctx, &join(d, u)?)?.is_some();
            }
            // Not installed from a package: nothing a mask would hide.
            let Some(text) = unit_text else { continue };
            let is_static = text.as_deref().is_some_and(|t| !installable(t));
            if !(is_static || vendor_linked || preset_enables(scan, u)) {
                continue;
            }
            let mask = join(etc, u)?;
            match node(ctx, &mask)? {
                Some((FileType::Symlink, t)) if t == b"/dev/null" => w.masked.push(u),
                Some((FileType::Symlink, _)) if deleted.contains(&mask) => {
                    push_mask(w, &mask, u);
                }
                None => push_mask(w, &mask, u),
                Some(_) => w.problems.push(format!(
                    "{u} not masked: {mask} is the administrator's own unit"
                )),
            }
        }
    }
    Ok(())
}

fn push_mask(w: &mut Work, mask: &GuestPath, unit: &'static str) {
    w.out.changes.push(Change::Symlink {
        path: mask.to_string(),
        target: "/dev/null".to_owned(),
    });
    w.masked.push(unit);
    if let Some(f) = family_of(unit) {
        w.disabled
            .entry(f.name)
            .or_default()
            .insert(unit.to_owned());
    }
}

/// Turns `S??name` links of known init scripts into `K(100-??)name`, as `update-rc.d disable`.
fn disable_sysv(ctx: &FixContext<'_>, scan: &Scan, found: &[Found], w: &mut Work) -> Result<()> {
    let known = |n: &str| found.iter().any(|f| f.family.sysv.contains(&n));
    for d in &scan.rc_dirs {
        let list = entries(ctx, d)?;
        for (n, t) in &list {
            let Some((num, script)) = sysv_start_link(n) else {
                continue;
            };
            if !known(script) || !matches!(t, FileType::Symlink | FileType::Regular) {
                continue;
            }
            let p = join(d, n)?;
            let old = if *t == FileType::Regular {
                ctx.fs
                    .read_file(&p.to_bytes(), super::MAX_FILE_BYTES as u64)?
            } else {
                Vec::new()
            };
            w.out.changes.push(Change::DeleteFile {
                path: p.to_string(),
                old,
            });
            if let Some(f) = family_of(script) {
                w.disabled
                    .entry(f.name)
                    .or_default()
                    .insert(format!("{script} (SysV)"));
            }
            let has_k = list
                .iter()
                .any(|(k, _)| k.starts_with('K') && k.get(3..) == Some(script));
            if *t == FileType::Symlink && !has_k {
                let target = String::from_utf8(ctx.fs.read_link(&p)?).ok();
                if let Some(target) = target {
                    let k = 100u8.saturating_sub(num).clamp(1, 99);
                    w.out.changes.push(Change::Symlink {
                        path: join(d, &format!("K{k:02}{script}"))?.to_string(),
                        target,
                    });
                }
            }
        }
    }
    Ok(())
}

/// True if `s` can stand in a shell script unquoted: a path of `A-Z a-z 0-9 / . _ + -` and
/// `\` (systemd's escapes); the script only holds such words.
fn shell_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-\\".contains(&b))
}

/// What the first-boot script does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScriptSpec {
    /// Candidate package names (removed if installed at run time).
    pub(crate) packages: Vec<&'static str>,
    /// Uninstaller globs run if present.
    pub(crate) uninstallers: Vec<&'static str>,
    /// Units masked offline.
    pub(crate) masked: Vec<&'static str>,
    /// Files the script deletes when done (itself, its unit or init script, their links).
    pub(crate) self_files: Vec<String>,
    /// Directories removed if empty then.
    pub(crate) self_dirs: Vec<String>,
}

/// Most boots the script tries before giving up.
pub(crate) const MAX_TRIES: u32 = 3;

/// The first-boot script (POSIX sh).
pub(crate) fn firstboot_script(s: &ScriptSpec) -> String {
    let words = |v: &[&str]| v.join(" ");
    let owned = |v: &[String]| v.join(" ");
    let mut o = String::new();
    o.push_str(
        "#!/bin/sh\n\
         # Written by rehost: removes the guest tools of the hypervisor this VM was moved from,\n\
         # once, on its first boot on KVM, then deletes itself. Safe to delete by hand.\n\
         PATH=/usr/sbin:/usr/bin:/sbin:/bin\n\
         export PATH\n",
    );
    o.push_str(&format!("LOG={LOG_FILE}\n"));
    o.push_str(&format!("DONE={DONE_FILE}\n"));
    o.push_str("TRIES=/var/lib/rehost/firstboot.tries\n");
    o.push_str(&format!("MAX_TRIES={MAX_TRIES}\n"));
    o.push_str(&format!("PACKAGES='{}'\n", words(&s.packages)));
    o.push_str(&format!("UNINSTALLERS='{}'\n", words(&s.uninstallers)));
    o.push_str(&format!("MASKED='{}'\n", words(&s.masked)));
    o.push_str(&format!("SELF_FILES='{}'\n", owned(&s.self_files)));
    o.push_str(&format!("SELF_DIRS='{}'\n", owned(&s.self_dirs)));
    o.push_str(SCRIPT_BODY);
    o
}

/// The fixed part of the script; the variables above parameterise it.
const SCRIPT_BODY: &str = r#"
exec >>"$LOG" 2>&1 </dev/null
log() { echo "rehost-firstboot: $(date '+%Y-%m-%d %H:%M:%S') $*"; }
log "start"
mkdir -p "${DONE%/*}"

installed=
if [ -f /var/lib/dpkg/status ] && command -v dpkg-query >/dev/null 2>&1; then
    for p in $PACKAGES; do
        case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) in
            *" installed") installed="$installed $p" ;;
        esac
    done
elif command -v rpm >/dev/null 2>&1; then
    for p in $PACKAGES; do
        rpm -q "$p" >/dev/null 2>&1 && installed="$installed $p"
    done
fi

status=0
if [ -n "$installed" ]; then
    log "removing:$installed"
    if command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -o DPkg::Lock::Timeout=300 $installed || status=$?
    elif command -v dnf >/dev/null 2>&1; then
        dnf remove -y --disablerepo='*' $installed || status=$?
    elif command -v yum >/dev/null 2>&1; then
        yum remove -y --disablerepo='*' $installed || status=$?
    elif command -v zypper >/dev/null 2>&1; then
        zypper --non-interactive --no-refresh remove $installed || status=$?
    else
        log "no apt-get, dnf, yum or zypper to remove the packages with"
        status=127
    fi
else
    log "no package to remove is installed"
fi
for u in $UNINSTALLERS; do
    [ -x "$u" ] || continue
    log "running $u"
    "$u" || status=$?
done

if [ "$status" -ne 0 ]; then
    tries=$(cat "$TRIES" 2>/dev/null)
    case $tries in ''|*[!0-9]*) tries=0 ;; esac
    tries=$((tries + 1))
    echo "$tries" >"$TRIES"
    if [ "$tries" -lt "$MAX_TRIES" ]; then
        log "failed with status $status (try $tries of $MAX_TRIES); trying again next boot"
        exit 1
    fi
    log "failed with status $status $tries times; giving up, the masks stay"
else
    # A mask whose unit file left with its package has nothing left to hide.
    for u in $MASKED; do
        m=/etc/systemd/system/$u
        [ -L "$m" ] && [ "$(readlink "$m")" = /dev/null ] || continue
        if [ ! -e "/usr/lib/systemd/system/$u" ] && [ ! -e "/lib/systemd/system/$u" ]; then
            rm -f "$m" && log "unmasked $u"
        fi
    done
fi

touch "$DONE"
rm -f "$TRIES" $SELF_FILES
for d in $SELF_DIRS; do
    rmdir "$d" 2>/dev/null
done
log "done"
exit 0
"#;

/// The systemd unit running the script at `script`.
pub(crate) fn firstboot_unit(script: &str) -> String {
    format!(
        "# Written by rehost: runs {script} once on the first boot on KVM.\n\
         [Unit]\n\
         Description=rehost first boot: remove the old hypervisor's guest tools\n\
         After=local-fs.target\n\
         ConditionPathExists=!{DONE_FILE}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={script}\n\
         TimeoutStartSec=20min\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The SysV init script running the script at `script`.
pub(crate) fn firstboot_initscript(script: &str) -> String {
    format!(
        "#!/bin/sh\n\
         ### BEGIN INIT INFO\n\
         # Provides:          {FIRSTBOOT_NAME}\n\
         # Required-Start:    $local_fs $remote_fs\n\
         # Required-Stop:\n\
         # Default-Start:     2 3 4 5\n\
         # Default-Stop:\n\
         # Short-Description: rehost first boot: remove the old hypervisor's guest tools\n\
         ### END INIT INFO\n\
         # chkconfig: 2345 99 01\n\
         # description: Written by rehost: runs {script} once on the first boot on KVM.\n\
         case \"$1\" in\n\
         start)\n\
         \x20   [ -e {DONE_FILE} ] || {script}\n\
         \x20   ;;\n\
         esac\n\
         exit 0\n"
    )
}

/// Plans `path` to hold `content`: create, replace, or nothing; `false` (with a note) if
/// something that is not a regular file is in the way.
fn ensure_file(
    ctx: &FixContext<'_>,
    out: &mut Outcome,
    path: &GuestPath,
    content: String,
    mode: u32,
) -> Result<bool> {
    match node(ctx, path)? {
        None => out.changes.push(Change::CreateFile {
            path: path.to_string(),
            content: content.into_bytes(),
            mode,
        }),
        Some((FileType::Regular, _)) => {
            let old = ctx
                .fs
                .read_file(&path.to_bytes(), super::MAX_FILE_BYTES as u64)?;
            if old != content.as_bytes() {
                out.changes.push(Change::ReplaceFile {
                    path: path.to_string(),
                    old,
                    new: content.into_bytes(),
                });
            }
        }
        Some(_) => {
            out.notes.push(format!(
                "first-boot removal not installed: {path} exists and is not a regular file"
            ));
            return Ok(false);
        }
    }
    Ok(true)
}

/// Plans a symlink `path` -> `target` (replacing a link to elsewhere).
fn ensure_symlink(
    ctx: &FixContext<'_>,
    out: &mut Outcome,
    path: &GuestPath,
    target: &str,
) -> Result<()> {
    match node(ctx, path)? {
        Some((FileType::Symlink, t)) if t == target.as_bytes() => {}
        found @ (Some((FileType::Symlink, _)) | None) => {
            if found.is_some() {
                out.changes.push(Change::DeleteFile {
                    path: path.to_string(),
                    old: Vec::new(),
                });
            }
            out.changes.push(Change::Symlink {
                path: path.to_string(),
                target: target.to_owned(),
            });
        }
        Some(_) => out.notes.push(format!(
            "{path} is in the way of a link to {target}; left alone"
        )),
    }
    Ok(())
}

/// Plans directory `path` (canonical parent) if missing.
fn ensure_dir(ctx: &FixContext<'_>, out: &mut Outcome, path: &GuestPath) -> Result<bool> {
    match node(ctx, path)? {
        None => {
            out.changes.push(Change::Mkdir {
                path: path.to_string(),
                mode: 0o755,
            });
            Ok(true)
        }
        Some((FileType::Directory, _)) => Ok(true),
        Some(_) => {
            out.notes.push(format!(
                "first-boot removal not installed: {path} is not a directory"
            ));
            Ok(false)
        }
    }
}

/// Plans the first-boot job; returns a note on what it does or why it is missing.
fn install_firstboot(
    ctx: &FixContext<'_>,
    scan: &Scan,
    found: &[Found],
    w: &mut Work,
) -> Result<()> {
    let mut packages: Vec<&'static str> = Vec::new();
    let mut uninstallers = Vec::new();
    for f in found {
        match &scan.dpkg {
            Some(installed) => {
                packages.extend(f.family.packages.iter().filter(|p| installed.contains(**p)))
            }
            None => packages.extend(f.family.packages.iter()),
        }
        for u in f.family.uninstallers {
            if !glob_paths(ctx, u)?.is_empty() {
                uninstallers.push(*u);
            }
        }
    }
    if packages.is_empty() && uninstallers.is_empty() {
        w.out
            .notes
            .push("no package of the tools to remove (dpkg lists none)".to_owned());
        return Ok(());
    }
    // /usr/libexec, or what it links to; created if missing (Debian 10 has none).
    let Some(usr) = dir(ctx, "/usr")? else {
        w.problems
            .push("first-boot removal not installed: no /usr directory".to_owned());
        return Ok(());
    };
    let libexec = dir(ctx, SCRIPT_DIR)?;
    let mut fb = Outcome::default();
    let libexec = match libexec {
        Some(p) => p,
        None => {
            let p = join(&usr, "libexec")?;
            if !ensure_dir(ctx, &mut fb, &p)? {
                w.problems.extend(fb.notes);
                return Ok(());
            }
            p
        }
    };
    let script_dir = join(&libexec, "rehost")?;
    let script = join(&script_dir, SCRIPT_NAME)?;
    let mut self_files = Vec::new();
    let how;
    let mut links: Vec<(GuestPath, String)> = Vec::new();
    let unit_file;
    if scan.systemd {
        let Some(etc) = &scan.etc_units else {
            w.problems.push(format!(
                "first-boot removal not installed: no {ETC_UNITS} directory"
            ));
            return Ok(());
        };
        let unit = join(etc, UNIT_NAME)?;
        let wants = join(etc, WANTS_DIR)?;
        let link = join(&wants, UNIT_NAME)?;
        self_files.push(link.to_string());
        self_files.push(unit.to_string());
        links.push((link, unit.to_string()));
        unit_file = Some((unit.clone(), firstboot_unit(&script.to_string()), 0o644));
        how = format!("systemd unit {unit}");
        if !ensure_dir(ctx, &mut fb, &wants)? {
            w.problems.extend(fb.notes);
            return Ok(());
        }
    } else {
        let Some(initd) = dir(ctx, "/etc/init.d")? else {
            w.problems.push(
                "first-boot removal not installed: neither systemd nor /etc/init.d found; \
                 the services are disabled but the packages stay"
                    .to_owned(),
            );
            return Ok(());
        };
        let rc: Vec<GuestPath> = {
            let mut v = Vec::new();
            for d in MULTIUSER_RC_DIRS {
                if let Some(p) = dir(ctx, d)?
                    && !v.contains(&p)
                {
                    v.push(p);
                }
            }
            v
        };
        if rc.is_empty() {
            w.problems.push(
                "first-boot removal not installed: SysV guest without rc2.d..rc5.d; \
                 the services are disabled but the packages stay"
                    .to_owned(),
            );
            return Ok(());
        }
        let init = join(&initd, FIRSTBOOT_NAME)?;
        for d in &rc {
            let link = join(d, &format!("S99{FIRSTBOOT_NAME}"))?;
            // Relative like update-rc.d and chkconfig when init.d is a sibling.
            let target = if d.parent() == initd.parent() {
                format!("../init.d/{FIRSTBOOT_NAME}")
            } else {
                init.to_string()
            };
            self_files.push(link.to_string());
            links.push((link, target));
        }
        self_files.push(init.to_string());
        unit_file = Some((
            init.clone(),
            firstboot_initscript(&script.to_string()),
            0o755,
        ));
        how = format!("init script {init}");
    }
    self_files.push(script.to_string());
    let spec = ScriptSpec {
        packages,
        uninstallers,
        masked: w.masked.clone(),
        self_files,
        self_dirs: vec![script_dir.to_string()],
    };
    if let Some(bad) = spec
        .self_files
        .iter()
        .chain(&spec.self_dirs)
        .find(|p| !shell_safe(p))
    {
        w.problems.push(format!(
            "first-boot removal not installed: guest path {bad:?} has characters unsafe in a script"
        ));
        return Ok(());
    }
    if !ensure_dir(ctx, &mut fb, &script_dir)?
        || !ensure_file(ctx, &mut fb, &script, firstboot_script(&spec), 0o755)?
    {
        w.problems.extend(fb.notes);
        return Ok(());
    }
    if let Some((p, text, mode)) = unit_file
        && !ensure_file(ctx, &mut fb, &p, text, mode)?
    {
        w.problems.extend(fb.notes);
        return Ok(());
    }
    for (l, t) in &links {
        ensure_symlink(ctx, &mut fb, l, t)?;
    }
    if !fb.changes.is_empty() {
        // Without dpkg's list the script asks the package database which candidates exist.
        let which = if scan.dpkg.is_some() {
            ""
        } else {
            "whichever is installed of "
        };
        fb.notes.push(format!(
            "first boot removes {which}{} ({how}, log {LOG_FILE})",
            spec.packages
                .iter()
                .chain(&spec.uninstallers)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    w.out.changes.extend(fb.changes);
    w.out.notes.extend(fb.notes);
    Ok(())
}

impl Fixer for HypervisorTools {
    fn name(&self) -> &'static str {
        "hypervisor-tools"
    }

    fn description(&self) -> &'static str {
        "disable VMware, Hyper-V, Xen and VirtualBox guest tools and remove their packages on first boot"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let scan = Scan::new(ctx)?;
        let found = detect(ctx, &scan)?;
        if found.is_empty() {
            return Ok(Outcome::default());
        }
        let mut w = Work::default();
        disable_systemd(ctx, &scan, &found, &mut w)?;
        disable_sysv(ctx, &scan, &found, &mut w)?;
        let mut notes: Vec<String> = found
            .iter()
            .map(|f| {
                let d = w.disabled.get(f.family.name);
                format!(
                    "{} tools found ({}){}",
                    f.family.name,
                    f.evidence.join(", "),
                    d.map(|d| format!(
                        "; disabled {}",
                        d.iter().cloned().collect::<Vec<_>>().join(", ")
                    ))
                    .unwrap_or_default()
                )
            })
            .collect();
        if params.bool("remove_packages") {
            install_firstboot(ctx, &scan, &found, &mut w)?;
        }
        // A fixed guest plans nothing and says nothing but what it could not do.
        if w.out.changes.is_empty() {
            return Ok(Outcome {
                changes: Vec::new(),
                notes: w.problems,
            });
        }
        notes.append(&mut w.out.notes);
        notes.append(&mut w.problems);
        w.out.notes = notes;
        Ok(w.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{MemFs, SyntheticOs, synthetic_report};

    fn plan_on(g: &MemFs, params: &[(&str, bool)]) -> Outcome {
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 4));
        let ctx = FixContext {
            fs: g,
            report: &rep,
            os: &rep.operating_systems[0],
        };
        let mut t = toml::Table::new();
        for (k, v) in params {
            t.insert((*k).into(), toml::Value::Boolean(*v));
        }
        assert_eq!(super::super::validate_params(&HypervisorTools, &t), vec![]);
        HypervisorTools
            .plan(&ctx, &Params::new(&HypervisorTools, t))
            .unwrap()
    }

    /// Applies `out` to `g`, then checks that planning again plans nothing.
    fn apply_and_replan(g: &mut MemFs, out: &Outcome) {
        apply_and_replan_with(g, out, &[]);
    }

    /// As [`apply_and_replan`], planning again with `params`.
    fn apply_and_replan_with(g: &mut MemFs, out: &Outcome, params: &[(&str, bool)]) {
        let p = crate::Plan {
            recipe: "r".into(),
            root: "/dev/sda1".into(),
            steps: vec![crate::PlannedStep {
                fixer: "hypervisor-tools".into(),
                summary: String::new(),
                changes: out.changes.clone(),
            }],
        };
        assert_eq!(crate::apply(&p, g).unwrap(), out.changes.len());
        let again = plan_on(g, params);
        assert_eq!(again.changes, vec![], "second plan not empty");
        // Only what cannot be done is said again.
        assert!(
            again.notes.iter().all(|n| n.contains(" not ")),
            "{:?}",
            again.notes
        );
    }

    fn del(p: &str) -> Change {
        Change::DeleteFile {
            path: p.into(),
            old: vec![],
        }
    }
    fn link(p: &str, t: &str) -> Change {
        Change::Symlink {
            path: p.into(),
            target: t.into(),
        }
    }
    fn mkdir(p: &str) -> Change {
        Change::Mkdir {
            path: p.into(),
            mode: 0o755,
        }
    }
    fn created<'a>(out: &'a Outcome, path: &str) -> (&'a str, u32) {
        out.changes
            .iter()
            .find_map(|c| match c {
                Change::CreateFile {
                    path: p,
                    content,
                    mode,
                } if p == path => Some((std::str::from_utf8(content).unwrap(), *mode)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{path} not created: {out:#?}"))
    }
    /// The value of `NAME='...'` in the script.
    fn var<'a>(script: &'a str, name: &str) -> &'a str {
        script
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in script"))
            .trim_matches('\'')
    }

    const DEBIAN_OVT_UNIT: &str = "[Unit]\nDescription=Service for virtual machines hosted on \
        VMware\nConditionVirtualization=vmware\nRequires=vgauth.service\n\n[Service]\n\
        ExecStart=/usr/bin/vmtoolsd\n\n[Install]\nWantedBy=multi-user.target\n\
        Alias=vmtoolsd.service\n";
    const DPKG: &str = "Package: base-files\nStatus: install ok installed\nVersion: 12.4\n\n\
        Package: open-vm-tools\nStatus: install ok installed\nArchitecture: amd64\n\n\
        Package: open-vm-tools-desktop\nStatus: deinstall ok config-files\n\n\
        Package: xe-guest-utilities\nStatus: purge ok not-installed\n";

    /// Debian 12 with open-vm-tools enabled, as the installer leaves it.
    fn debian_vmware() -> MemFs {
        let mut g = MemFs::new();
        g.add_symlink("/sbin/init", "/lib/systemd/systemd")
            .add_file("/lib/systemd/systemd", b"\x7fELF")
            .add_file(
                "/lib/systemd/system/open-vm-tools.service",
                DEBIAN_OVT_UNIT.as_bytes(),
            )
            .add_file(
                "/lib/systemd/system/vgauth.service",
                b"[Unit]\nDescription=Authentication service\nPartOf=open-vm-tools.service\n\n\
                  [Service]\nExecStart=/usr/bin/VGAuthService\n",
            )
            .add_file(
                "/lib/systemd/system/run-vmblock\\x2dfuse.mount",
                b"[Mount]\nWhat=vmware-vmblock-fuse\n[Install]\nWantedBy=multi-user.target\n",
            )
            .add_file(
                "/lib/systemd/system/ssh.service",
                b"[Install]\nWantedBy=multi-user.target\n",
            )
            .add_symlink(
                "/etc/systemd/system/multi-user.target.wants/open-vm-tools.service",
                "/lib/systemd/system/open-vm-tools.service",
            )
            .add_symlink(
                "/etc/systemd/system/multi-user.target.wants/ssh.service",
                "/lib/systemd/system/ssh.service",
            )
            .add_symlink(
                "/etc/systemd/system/vmtoolsd.service",
                "/lib/systemd/system/open-vm-tools.service",
            )
            .add_symlink(
                "/etc/systemd/system/sshd.service",
                "/lib/systemd/system/ssh.service",
            )
            .add_file("/etc/init.d/open-vm-tools", b"#!/bin/sh\n")
            .add_symlink("/etc/rc2.d/S01open-vm-tools", "../init.d/open-vm-tools")
            .add_symlink("/etc/rc2.d/S01ssh", "../init.d/ssh")
            .add_symlink("/etc/rc6.d/K01open-vm-tools", "../init.d/open-vm-tools")
            .add_file("/usr/bin/vmtoolsd", b"\x7fELF")
            .add_file("/var/lib/dpkg/status", DPKG.as_bytes())
            .add_dir("/usr/lib");
        g
    }

    #[test]
    fn debian_open_vm_tools_disabled_masked_and_removed_on_first_boot() {
        let mut g = debian_vmware();
        let out = plan_on(&g, &[]);
        let script_path = "/usr/libexec/rehost/firstboot.sh";
        let unit_path = "/etc/systemd/system/rehost-firstboot.service";
        let (script, script_mode) = created(&out, script_path);
        let (unit, unit_mode) = created(&out, unit_path);
        assert_eq!((script_mode, unit_mode), (0o755, 0o644));
        let expected = vec![
            del("/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"),
            del("/etc/systemd/system/vmtoolsd.service"),
            // No preset file: preset-all would enable them again, so they are masked.
            link("/etc/systemd/system/open-vm-tools.service", "/dev/null"),
            link("/etc/systemd/system/vgauth.service", "/dev/null"),
            link(
                "/etc/systemd/system/run-vmblock\\x2dfuse.mount",
                "/dev/null",
            ),
            del("/etc/rc2.d/S01open-vm-tools"),
            link("/etc/rc2.d/K99open-vm-tools", "../init.d/open-vm-tools"),
            mkdir("/usr/libexec"),
            mkdir("/usr/libexec/rehost"),
            Change::CreateFile {
                path: script_path.into(),
                content: script.as_bytes().to_vec(),
                mode: 0o755,
            },
            Change::CreateFile {
                path: unit_path.into(),
                content: unit.as_bytes().to_vec(),
                mode: 0o644,
            },
            link(
                "/etc/systemd/system/multi-user.target.wants/rehost-firstboot.service",
                unit_path,
            ),
        ];
        assert_eq!(out.changes, expected);
        assert_eq!(
            out.notes,
            vec![
                "vmware tools found (unit open-vm-tools.service, unit vgauth.service, unit \
                 run-vmblock\\x2dfuse.mount, init script open-vm-tools, /usr/bin/vmtoolsd, package \
                 open-vm-tools); disabled open-vm-tools (SysV), open-vm-tools.service, \
                 run-vmblock\\x2dfuse.mount, vgauth.service",
                "first boot removes open-vm-tools (systemd unit \
                 /etc/systemd/system/rehost-firstboot.service, log /var/log/rehost-firstboot.log)",
            ]
        );
        // The script, variable by variable: only dpkg's installed candidates.
        assert!(script.starts_with("#!/bin/sh\n"));
        assert_eq!(var(script, "PACKAGES"), "open-vm-tools");
        assert_eq!(var(script, "UNINSTALLERS"), "");
        assert_eq!(
            var(script, "MASKED"),
            "open-vm-tools.service vgauth.service run-vmblock\\x2dfuse.mount"
        );
        assert_eq!(
            var(script, "SELF_FILES"),
            "/etc/systemd/system/multi-user.target.wants/rehost-firstboot.service \
             /etc/systemd/system/rehost-firstboot.service /usr/libexec/rehost/firstboot.sh"
        );
        assert_eq!(var(script, "SELF_DIRS"), "/usr/libexec/rehost");
        assert_eq!(var(script, "LOG"), "/var/log/rehost-firstboot.log");
        assert_eq!(var(script, "DONE"), "/var/lib/rehost/firstboot.done");
        assert_eq!(var(script, "MAX_TRIES"), "3");
        for needle in [
            "apt-get purge -y -o DPkg::Lock::Timeout=300 $installed",
            "dnf remove -y --disablerepo='*' $installed",
            "yum remove -y --disablerepo='*' $installed",
            "zypper --non-interactive --no-refresh remove $installed",
            "dpkg-query -W -f='${Status}' \"$p\"",
            "rpm -q \"$p\"",
            "exec >>\"$LOG\" 2>&1 </dev/null",
            "touch \"$DONE\"",
            "rm -f \"$TRIES\" $SELF_FILES",
        ] {
            assert!(script.contains(needle), "{needle:?} missing from\n{script}");
        }
        // The unit, line by line.
        let lines: Vec<&str> = unit.lines().collect();
        for l in [
            "[Unit]",
            "After=local-fs.target",
            "ConditionPathExists=!/var/lib/rehost/firstboot.done",
            "[Service]",
            "Type=oneshot",
            "ExecStart=/usr/libexec/rehost/firstboot.sh",
            "TimeoutStartSec=20min",
            "[Install]",
            "WantedBy=multi-user.target",
        ] {
            assert!(lines.contains(&l), "{l:?} missing from\n{unit}");
        }
        apply_and_replan(&mut g, &out);
        // Unrelated units and links are untouched.
        assert!(g.file("/lib/systemd/system/ssh.service").is_some());
        for l in [
            "/etc/systemd/system/multi-user.target.wants/ssh.service",
            "/etc/systemd/system/sshd.service",
            "/etc/rc2.d/S01ssh",
            "/etc/rc6.d/K01open-vm-tools",
        ] {
            assert!(
                guestfs::FsRead::read_link(&g, &GuestPath::parse(l.as_bytes()).unwrap()).is_ok(),
                "{l}"
            );
        }
    }

    #[test]
    fn without_package_removal_only_services_are_disabled() {
        let g = debian_vmware();
        let out = plan_on(&g, &[("remove_packages", false)]);
        assert_eq!(out.changes.len(), 7, "{out:#?}");
        assert!(out.changes.iter().all(|c| !c.path().contains("rehost")));
    }

    #[test]
    fn preset_disable_means_links_are_enough() {
        // Xen tools on a RHEL-like guest whose presets disable everything not named.
        let mut g = MemFs::new();
        g.add_symlink("/sbin/init", "../lib/systemd/systemd")
            .add_symlink("/lib", "usr/lib")
            .add_file("/usr/lib/systemd/systemd", b"")
            .add_dir("/usr/libexec")
            .add_file(
                "/usr/lib/systemd/system/xe-linux-distribution.service",
                b"[Service]\nExecStart=/usr/sbin/xe-linux-distribution\n[Install]\n\
                  WantedBy = multi-user.target\n",
            )
            .add_file(
                "/usr/lib/systemd/system-preset/90-default.preset",
                b"# comment\nenable sshd.service\n",
            )
            .add_file(
                "/usr/lib/systemd/system-preset/99-default-disable.preset",
                b"disable *\n",
            )
            .add_symlink(
                "/etc/systemd/system/multi-user.target.wants/xe-linux-distribution.service",
                "/usr/lib/systemd/system/xe-linux-distribution.service",
            )
            .add_file("/usr/sbin/xe-linux-distribution", b"#!/bin/sh\n");
        let out = plan_on(&g, &[]);
        assert_eq!(
            out.changes[0],
            del("/etc/systemd/system/multi-user.target.wants/xe-linux-distribution.service")
        );
        assert!(
            !out.changes
                .iter()
                .any(|c| matches!(c, Change::Symlink { target, .. } if target == "/dev/null")),
            "{out:#?}"
        );
        // No dpkg database: every candidate is offered, rpm -q decides at boot.
        let (script, _) = created(&out, "/usr/libexec/rehost/firstboot.sh");
        assert_eq!(
            var(script, "PACKAGES"),
            "xe-guest-utilities xe-guest-utilities-xenstore xen-guest-agent"
        );
        assert_eq!(var(script, "MASKED"), "");
        assert_eq!(out.changes.len(), 5, "{out:#?}");

        apply_and_replan(&mut g, &out);
        // A preset naming the unit first enables it: then it is masked.
        let mut g2 = g.clone();
        g2.add_file(
            "/etc/systemd/system-preset/10-xen.preset",
            b"enable xe-linux-distribution.service\n",
        );
        let out = plan_on(&g2, &[]);
        assert_eq!(
            out.changes[0],
            link(
                "/etc/systemd/system/xe-linux-distribution.service",
                "/dev/null"
            )
        );
        // The script's MASKED list changed with it.
        assert!(
            matches!(&out.changes[1], Change::ReplaceFile { path, .. } if path == "/usr/libexec/rehost/firstboot.sh")
        );
        apply_and_replan(&mut g2, &out);
    }

    #[test]
    fn rhel_hyperv_daemons_are_static_so_masked() {
        let mut g = MemFs::new();
        g.add_symlink("/sbin", "usr/sbin")
            .add_symlink("/usr/sbin/init", "../lib/systemd/systemd")
            .add_symlink("/lib", "usr/lib")
            .add_file("/usr/lib/systemd/systemd", b"")
            .add_dir("/usr/libexec")
            .add_dir("/etc/systemd/system/multi-user.target.wants")
            .add_file(
                "/usr/lib/systemd/system/hypervkvpd.service",
                b"[Unit]\nConditionVirtualization=microsoft\n[Service]\n\
                  ExecStart=/usr/sbin/hypervkvpd -n\n",
            )
            .add_file(
                "/usr/lib/systemd/system/hypervvssd.service",
                b"[Unit]\nConditionVirtualization=microsoft\n[Service]\n\
                  ExecStart=/usr/sbin/hypervvssd -n\n[Install]\n",
            )
            .add_file("/usr/sbin/hypervkvpd", b"")
            .add_file(
                "/usr/lib/systemd/system-preset/99-default-disable.preset",
                b"disable *\n",
            );
        let out = plan_on(&g, &[]);
        assert_eq!(
            out.changes[..2],
            [
                link("/etc/systemd/system/hypervkvpd.service", "/dev/null"),
                link("/etc/systemd/system/hypervvssd.service", "/dev/null"),
            ]
        );
        let (script, _) = created(&out, "/usr/libexec/rehost/firstboot.sh");
        assert_eq!(
            var(script, "PACKAGES"),
            "hyperv-daemons hyperv-daemons-license hypervkvpd hypervvssd hypervfcopyd \
             hyperv-tools hyper-v"
        );
        assert_eq!(
            var(script, "MASKED"),
            "hypervkvpd.service hypervvssd.service"
        );
        assert_eq!(
            out.changes[2..],
            [
                mkdir("/usr/libexec/rehost"),
                out.changes[3].clone(),
                out.changes[4].clone(),
                link(
                    "/etc/systemd/system/multi-user.target.wants/rehost-firstboot.service",
                    "/etc/systemd/system/rehost-firstboot.service"
                ),
            ]
        );
        assert_eq!(out.changes.len(), 6);
        apply_and_replan(&mut g, &out);
    }

    #[test]
    fn ubuntu_hyperv_from_linux_cloud_tools_is_only_masked() {
        let mut g = MemFs::new();
        g.add_symlink("/sbin/init", "/lib/systemd/systemd")
            .add_file("/lib/systemd/systemd", b"")
            .add_file(
                "/lib/systemd/system/hv-kvp-daemon.service",
                b"[Unit]\nConditionVirtualization=microsoft\n[Service]\n\
                  ExecStart=/usr/sbin/hv_kvp_daemon -n\n[Install]\nWantedBy=multi-user.target\n",
            )
            .add_symlink(
                "/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service",
                "/lib/systemd/system/hv-kvp-daemon.service",
            )
            .add_file("/usr/sbin/hv_kvp_daemon", b"#!/bin/sh\n")
            .add_file(
                "/var/lib/dpkg/status",
                b"Package: linux-cloud-tools-common\nStatus: install ok installed\n",
            );
        let out = plan_on(&g, &[]);
        assert_eq!(
            out.changes,
            vec![
                del("/etc/systemd/system/multi-user.target.wants/hv-kvp-daemon.service"),
                link("/etc/systemd/system/hv-kvp-daemon.service", "/dev/null"),
            ]
        );
        assert_eq!(
            out.notes[1],
            "no package of the tools to remove (dpkg lists none)"
        );
        apply_and_replan(&mut g, &out);
    }

    /// A RHEL 6-like SysV guest with VMware's tarball tools.
    fn sysv_vmware() -> MemFs {
        let mut g = MemFs::new();
        g.add_file("/sbin/init", b"\x7fELF upstart")
            .add_symlink("/etc/init.d", "rc.d/init.d")
            .add_file("/etc/rc.d/init.d/vmware-tools", b"#!/bin/sh\n")
            .add_file("/etc/rc.d/init.d/sshd", b"#!/bin/sh\n")
            .add_file("/etc/vmware-tools/locations", b"answer BINDIR /usr/bin\n")
            .add_file("/usr/bin/vmware-uninstall-tools.pl", b"#!/usr/bin/perl\n")
            .add_dir("/usr/libexec");
        for l in 0..=6 {
            g.add_symlink(&format!("/etc/rc{l}.d"), &format!("rc.d/rc{l}.d"));
            if (2..=5).contains(&l) {
                g.add_symlink(
                    &format!("/etc/rc.d/rc{l}.d/S03vmware-tools"),
                    "../init.d/vmware-tools",
                )
                .add_symlink(&format!("/etc/rc.d/rc{l}.d/S55sshd"), "../init.d/sshd");
            } else {
                g.add_symlink(
                    &format!("/etc/rc.d/rc{l}.d/K99vmware-tools"),
                    "../init.d/vmware-tools",
                );
            }
        }
        g
    }

    #[test]
    fn sysv_guest_gets_k_links_and_an_init_script() {
        let mut g = sysv_vmware();
        let out = plan_on(&g, &[]);
        let mut expected = Vec::new();
        for l in 2..=5 {
            expected.push(del(&format!("/etc/rc.d/rc{l}.d/S03vmware-tools")));
            expected.push(link(
                &format!("/etc/rc.d/rc{l}.d/K97vmware-tools"),
                "../init.d/vmware-tools",
            ));
        }
        let script_path = "/usr/libexec/rehost/firstboot.sh";
        let init_path = "/etc/rc.d/init.d/rehost-firstboot";
        let (script, _) = created(&out, script_path);
        let (init, init_mode) = created(&out, init_path);
        assert_eq!(init_mode, 0o755);
        expected.push(mkdir("/usr/libexec/rehost"));
        expected.push(Change::CreateFile {
            path: script_path.into(),
            content: script.as_bytes().to_vec(),
            mode: 0o755,
        });
        expected.push(Change::CreateFile {
            path: init_path.into(),
            content: init.as_bytes().to_vec(),
            mode: 0o755,
        });
        for l in 2..=5 {
            expected.push(link(
                &format!("/etc/rc.d/rc{l}.d/S99rehost-firstboot"),
                "../init.d/rehost-firstboot",
            ));
        }
        assert_eq!(out.changes, expected);
        assert_eq!(
            var(script, "UNINSTALLERS"),
            "/usr/bin/vmware-uninstall-tools.pl"
        );
        assert_eq!(var(script, "MASKED"), "");
        assert_eq!(
            var(script, "SELF_FILES"),
            "/etc/rc.d/rc2.d/S99rehost-firstboot /etc/rc.d/rc3.d/S99rehost-firstboot \
             /etc/rc.d/rc4.d/S99rehost-firstboot /etc/rc.d/rc5.d/S99rehost-firstboot \
             /etc/rc.d/init.d/rehost-firstboot /usr/libexec/rehost/firstboot.sh"
        );
        assert!(init.contains("# chkconfig: 2345 99 01\n"), "{init}");
        assert!(
            init.contains("# Provides:          rehost-firstboot\n"),
            "{init}"
        );
        assert!(init.contains("# Default-Start:     2 3 4 5\n"), "{init}");
        assert!(
            init.contains(
                "    [ -e /var/lib/rehost/firstboot.done ] || /usr/libexec/rehost/firstboot.sh\n"
            ),
            "{init}"
        );
        assert!(out.notes[0].starts_with("vmware tools found (init script vmware-tools, "));
        apply_and_replan(&mut g, &out);
    }

    #[test]
    fn existing_k_link_means_the_s_link_is_only_removed() {
        let mut g = debian_vmware();
        g.add_symlink("/etc/rc2.d/K01open-vm-tools", "../init.d/open-vm-tools")
            .add_file("/etc/rc2.d/S02vmtoolsd", b"not a link");
        let out = plan_on(&g, &[("remove_packages", false)]);
        let rc: Vec<&Change> = out
            .changes
            .iter()
            .filter(|c| c.path().starts_with("/etc/rc2.d/"))
            .collect();
        assert_eq!(
            rc,
            [
                &del("/etc/rc2.d/S01open-vm-tools"),
                &Change::DeleteFile {
                    path: "/etc/rc2.d/S02vmtoolsd".into(),
                    old: b"not a link".to_vec()
                },
            ]
        );
        apply_and_replan_with(&mut g, &out, &[("remove_packages", false)]);
    }

    #[test]
    fn sysv_guest_without_runlevel_dirs_keeps_its_packages() {
        let mut g = MemFs::new();
        g.add_file("/sbin/init", b"busybox")
            .add_dir("/usr/libexec")
            .add_file("/etc/init.d/vboxadd", b"#!/bin/sh\n")
            .add_file(
                "/opt/VBoxGuestAdditions-7.0.12/uninstall.sh",
                b"#!/bin/sh\n",
            );
        let out = plan_on(&g, &[]);
        assert!(out.changes.is_empty());
        assert_eq!(
            out.notes,
            vec![
                "first-boot removal not installed: SysV guest without rc2.d..rc5.d; the services \
                 are disabled but the packages stay"
            ]
        );
    }

    #[test]
    fn guest_without_tools_plans_nothing() {
        let mut g = debian_vmware();
        for p in [
            "/lib/systemd/system/open-vm-tools.service",
            "/lib/systemd/system/vgauth.service",
            "/lib/systemd/system/run-vmblock\\x2dfuse.mount",
            "/etc/init.d/open-vm-tools",
            "/usr/bin/vmtoolsd",
            "/var/lib/dpkg/status",
        ] {
            crate::Applier::delete_file(&mut g, &GuestPath::parse(p.as_bytes()).unwrap()).unwrap();
        }
        // Dangling links of removed tools do not count as tools.
        assert_eq!(plan_on(&g, &[]), Outcome::default());
        assert_eq!(plan_on(&MemFs::new(), &[]), Outcome::default());
    }

    #[test]
    fn virtualbox_run_installer_is_uninstalled() {
        let mut g = MemFs::new();
        g.add_symlink("/sbin/init", "/lib/systemd/systemd")
            .add_file("/lib/systemd/systemd", b"")
            .add_dir("/usr/libexec")
            .add_file(
                "/etc/systemd/system/vboxadd.service",
                b"[Service]\nExecStart=/opt/VBoxGuestAdditions-7.0.12/init/vboxadd start\n\
                  [Install]\nWantedBy=multi-user.target\n",
            )
            .add_symlink(
                "/etc/systemd/system/multi-user.target.wants/vboxadd.service",
                "/etc/systemd/system/vboxadd.service",
            )
            .add_file(
                "/opt/VBoxGuestAdditions-7.0.12/uninstall.sh",
                b"#!/bin/sh\n",
            )
            .add_file("/var/lib/dpkg/status", b"");
        let out = plan_on(&g, &[]);
        assert_eq!(
            out.changes[0],
            del("/etc/systemd/system/multi-user.target.wants/vboxadd.service")
        );
        let (script, _) = created(&out, "/usr/libexec/rehost/firstboot.sh");
        assert_eq!(var(script, "PACKAGES"), "");
        assert_eq!(
            var(script, "UNINSTALLERS"),
            "/opt/VBoxGuestAdditions-*/uninstall.sh"
        );
        apply_and_replan(&mut g, &out);
    }

    #[test]
    fn unsafe_guest_paths_never_reach_the_script() {
        let mut g = debian_vmware();
        g.add_symlink("/usr/libexec", "/opt/$(reboot)");
        g.add_dir("/opt/$(reboot)");
        let out = plan_on(&g, &[]);
        assert!(
            out.changes.iter().all(|c| !c.path().contains("rehost")),
            "{out:#?}"
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("has characters unsafe in a script")),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn helpers() {
        assert!(glob_match("*", "vmtoolsd.service"));
        assert!(glob_match("vm*.service", "vmtoolsd.service"));
        assert!(glob_match("vmtoolsd.servic?", "vmtoolsd.service"));
        assert!(glob_match("*d*.s*e", "vmtoolsd.service"));
        assert!(!glob_match("vm*.socket", "vmtoolsd.service"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
        assert!(glob_match("**", ""));
        assert!(!glob_match(&"*a".repeat(50), &"a".repeat(49)));
        assert_eq!(
            dpkg_installed(DPKG).into_iter().collect::<Vec<_>>(),
            vec!["base-files", "open-vm-tools"]
        );
        assert!(dpkg_installed("Package: x\n").is_empty());
        assert!(installable(DEBIAN_OVT_UNIT));
        assert!(installable("[Install]\nRequiredBy = x.target\n"));
        assert!(!installable("[Install]\nAlias=x.service\n"));
        assert!(!installable("[Service]\nWantedBy=multi-user.target\n"));
        assert!(!installable("[Install]\nWantedBy=\n"));
        assert_eq!(
            sysv_start_link("S01open-vm-tools"),
            Some((1, "open-vm-tools"))
        );
        assert_eq!(sysv_start_link("K01open-vm-tools"), None);
        assert_eq!(sysv_start_link("S1x"), None);
        assert_eq!(sysv_start_link("S"), None);
        assert!(shell_safe("/etc/systemd/system/run-vmblock\\x2dfuse.mount"));
        assert!(!shell_safe("/a b"));
        assert!(!shell_safe("/a'b"));
        assert!(!shell_safe(""));
        // Every word the tables put in the script is safe.
        for f in FAMILIES {
            for w in f.packages.iter().chain(f.units).chain(f.uninstallers) {
                assert!(shell_safe(&w.replace('*', "")), "{w}");
            }
        }
    }

    fn have(tool: &str) -> bool {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn generated_scripts_parse_in_every_host_shell() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ScriptSpec {
            packages: vec!["open-vm-tools", "hyperv-daemons"],
            uninstallers: vec!["/opt/VBoxGuestAdditions-*/uninstall.sh"],
            masked: vec!["run-vmblock\\x2dfuse.mount"],
            self_files: vec!["/etc/systemd/system/rehost-firstboot.service".into()],
            self_dirs: vec!["/usr/libexec/rehost".into()],
        };
        let files = [
            ("firstboot.sh", firstboot_script(&spec)),
            (
                "rehost-firstboot",
                firstboot_initscript("/usr/libexec/rehost/firstboot.sh"),
            ),
        ];
        let mut checked = 0;
        for (name, text) in &files {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            for sh in ["sh", "dash", "bash", "busybox"] {
                if !have(sh) {
                    eprintln!("skipping: {sh} not found");
                    continue;
                }
                let mut c = std::process::Command::new(sh);
                if sh == "busybox" {
                    c.arg("sh");
                }
                let o = c.arg("-n").arg(&p).output().unwrap();
                assert!(
                    o.status.success(),
                    "{sh} -n {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                checked += 1;
            }
        }
        assert!(checked >= 2, "no shell checked the scripts");
    }

    #[test]
    fn generated_unit_passes_systemd_analyze_verify() {
        if !have("systemd-analyze") {
            eprintln!("skipping: systemd-analyze not found");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let script = root.path().join("usr/libexec/rehost/firstboot.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::write(
            &script,
            firstboot_script(&ScriptSpec {
                packages: vec![],
                uninstallers: vec![],
                masked: vec![],
                self_files: vec![],
                self_dirs: vec![],
            }),
        )
        .unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&script).unwrap().permissions(),
            0o755,
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let unit_dir = root.path().join("etc/systemd/system");
        std::fs::create_dir_all(&unit_dir).unwrap();
        let unit = unit_dir.join(UNIT_NAME);
        std::fs::write(&unit, firstboot_unit("/usr/libexec/rehost/firstboot.sh")).unwrap();
        let o = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.path().display()))
            .arg("--man=no")
            .arg("--recursive-errors=no")
            .arg(&unit)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "systemd-analyze verify: {err}");
        assert!(!err.contains("rehost-firstboot.service:"), "{err}");
    }

    /// Writes `g` below `root` (directories, files with their modes, symlinks as they are).
    fn materialize(g: &MemFs, dir: &GuestPath, root: &std::path::Path) {
        use guestfs::FsRead;
        for e in g.read_dir(dir).unwrap() {
            let p = dir.join_name(&e.name).unwrap();
            let host = root.join(p.to_string().trim_start_matches('/'));
            match e.file_type {
                FileType::Directory => {
                    std::fs::create_dir_all(&host).unwrap();
                    materialize(g, &p, root);
                }
                FileType::Symlink => {
                    let t = String::from_utf8(g.read_link(&p).unwrap()).unwrap();
                    std::os::unix::fs::symlink(t, &host).unwrap();
                }
                _ => {
                    std::fs::write(&host, g.file(&p.to_string()).unwrap()).unwrap();
                    std::fs::set_permissions(
                        &host,
                        std::os::unix::fs::PermissionsExt::from_mode(g.lstat(&p).unwrap().mode),
                    )
                    .unwrap();
                }
            }
        }
    }

    /// Copies host program `name` (and the libraries `ldd` lists) into `root`.
    fn install_program(root: &std::path::Path, name: &str, as_path: &str) {
        let o = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap();
        let bin = String::from_utf8(o.stdout).unwrap().trim().to_owned();
        let ldd = std::process::Command::new("ldd")
            .arg(&bin)
            .output()
            .unwrap();
        let mut files = vec![(bin, as_path.to_owned())];
        for l in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = l
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_owned);
            if let Some(path) = path {
                files.push((path.clone(), path));
            }
        }
        for (from, to) in files {
            let dst = root.join(to.trim_start_matches('/'));
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            if !dst.exists() {
                std::fs::copy(&from, &dst).unwrap();
            }
        }
    }

    const STUB_DPKG_QUERY: &str = "#!/bin/sh\nfor a in \"$@\"; do p=$a; done\ncase $p in \
        open-vm-tools) printf 'install ok installed' ;; *) exit 1 ;; esac\n";
    const STUB_APT_GET: &str = "#!/bin/sh\necho \"$DEBIAN_FRONTEND $*\" >>/apt.log\n\
        st=$(cat /apt.status)\n[ \"$st\" = 0 ] || exit \"$st\"\n\
        rm -f /lib/systemd/system/open-vm-tools.service \
        '/lib/systemd/system/run-vmblock\\x2dfuse.mount'\n";

    /// The planned and applied Debian guest, written to a host directory with a shell, the
    /// tools the script uses and stub `apt-get`/`dpkg-query`; `None` if that cannot be done here.
    fn chroot_guest(apt_status: u8) -> Option<tempfile::TempDir> {
        // chroot(2) and mknod(2) need root.
        let uid = std::process::Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            eprintln!("skipping: chroot needs root");
            return None;
        }
        for t in ["chroot", "ldd", "dash"] {
            if !have(t) {
                eprintln!("skipping: {t} not found");
                return None;
            }
        }
        let mut g = debian_vmware();
        let out = plan_on(&g, &[]);
        apply_and_replan(&mut g, &out);
        let root = tempfile::tempdir().unwrap();
        materialize(&g, &GuestPath::root(), root.path());
        install_program(root.path(), "dash", "/bin/sh");
        for p in ["rm", "cat", "mkdir", "touch", "rmdir", "readlink", "date"] {
            install_program(root.path(), p, &format!("/bin/{p}"));
        }
        for (name, text) in [("dpkg-query", STUB_DPKG_QUERY), ("apt-get", STUB_APT_GET)] {
            let p = root.path().join("usr/bin").join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(root.path().join("apt.status"), apt_status.to_string()).unwrap();
        std::fs::create_dir_all(root.path().join("var/log")).unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        let null = root.path().join("dev/null");
        let mk = std::process::Command::new("mknod")
            .arg(&null)
            .args(["c", "1", "3"])
            .status()
            .ok()?;
        if !mk.success() {
            eprintln!("skipping: mknod /dev/null failed");
            return None;
        }
        std::fs::set_permissions(&null, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        Some(root)
    }

    fn run_firstboot(root: &std::path::Path) -> i32 {
        let o = std::process::Command::new("chroot")
            .arg(root)
            .arg("/usr/libexec/rehost/firstboot.sh")
            .output()
            .unwrap();
        assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
        let code = o.status.code().unwrap();
        if code > 1 {
            panic!(
                "status {code}: {}",
                read(root, "/var/log/rehost-firstboot.log")
            );
        }
        code
    }

    fn is_link(root: &std::path::Path, p: &str) -> bool {
        std::fs::symlink_metadata(root.join(p.trim_start_matches('/')))
            .is_ok_and(|m| m.file_type().is_symlink())
    }

    fn read(root: &std::path::Path, p: &str) -> String {
        std::fs::read_to_string(root.join(p.trim_start_matches('/'))).unwrap_or_default()
    }

    #[test]
    fn firstboot_script_removes_packages_unmasks_and_deletes_itself() {
        let Some(root) = chroot_guest(100) else {
            return;
        };
        let r = root.path();
        // First boot: apt-get fails; the script stays for the next boot.
        assert_eq!(run_firstboot(r), 1);
        assert_eq!(read(r, "/var/lib/rehost/firstboot.tries"), "1\n");
        assert!(r.join("usr/libexec/rehost/firstboot.sh").exists());
        assert!(!r.join("var/lib/rehost/firstboot.done").exists());
        // Second boot: it works.
        std::fs::write(r.join("apt.status"), "0").unwrap();
        assert_eq!(run_firstboot(r), 0);
        assert_eq!(
            read(r, "/apt.log"),
            "noninteractive purge -y -o DPkg::Lock::Timeout=300 open-vm-tools\n".repeat(2)
        );
        // Masks of units that left with the package are gone; vgauth's unit stayed, so does
        // its mask.
        assert!(!is_link(r, "/etc/systemd/system/open-vm-tools.service"));
        assert!(!is_link(
            r,
            "/etc/systemd/system/run-vmblock\\x2dfuse.mount"
        ));
        assert!(is_link(r, "/etc/systemd/system/vgauth.service"));
        // Done, and gone.
        assert!(r.join("var/lib/rehost/firstboot.done").exists());
        assert!(!r.join("var/lib/rehost/firstboot.tries").exists());
        for p in [
            "etc/systemd/system/rehost-firstboot.service",
            "etc/systemd/system/multi-user.target.wants/rehost-firstboot.service",
            "usr/libexec/rehost",
        ] {
            assert!(std::fs::symlink_metadata(r.join(p)).is_err(), "{p} left");
        }
        assert!(is_link(
            r,
            "/etc/systemd/system/multi-user.target.wants/ssh.service"
        ));
        let log = read(r, "/var/log/rehost-firstboot.log");
        let lines: Vec<&str> = log
            .lines()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(l))
            .collect();
        assert_eq!(
            lines,
            vec![
                "start",
                "removing: open-vm-tools",
                "failed with status 100 (try 1 of 3); trying again next boot",
                "start",
                "removing: open-vm-tools",
                "unmasked open-vm-tools.service",
                "unmasked run-vmblock\\x2dfuse.mount",
                "done",
            ],
            "{log}"
        );
    }

    #[test]
    fn firstboot_script_gives_up_after_three_boots() {
        let Some(root) = chroot_guest(100) else {
            return;
        };
        let r = root.path();
        assert_eq!(run_firstboot(r), 1);
        assert_eq!(run_firstboot(r), 1);
        assert_eq!(run_firstboot(r), 0);
        assert_eq!(read(r, "/apt.log").lines().count(), 3);
        assert!(r.join("var/lib/rehost/firstboot.done").exists());
        assert!(!r.join("usr/libexec/rehost/firstboot.sh").exists());
        // The packages are still there, so are the masks.
        assert!(is_link(r, "/etc/systemd/system/open-vm-tools.service"));
        assert!(
            read(r, "/var/log/rehost-firstboot.log")
                .contains("failed with status 100 3 times; giving up, the masks stay\n")
        );
    }

    /// Hostile guests: mutated unit files, dpkg status, presets and link names never make the
    /// fixer panic, and whatever it plans applies cleanly and is idempotent.
    #[test]
    fn mutated_guests_never_panic_and_stay_idempotent() {
        const FILES: &[&str] = &[
            "/lib/systemd/system/open-vm-tools.service",
            "/lib/systemd/system/vgauth.service",
            "/var/lib/dpkg/status",
            "/lib/systemd/system-preset/90-default.preset",
        ];
        const LINKS: &[&str] = &[
            "S01open-vm-tools",
            "S1open-vm-tools",
            "S99vmware-tools",
            "Sxxopen-vm-tools",
            "S00open-vm-tools",
            "K01open-vm-tools",
            "S01",
            "S01open-vm-tools\u{e9}",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pick = |r: u64, n: usize| usize::try_from(r % n as u64).unwrap();
        for i in 0..1000u32 {
            let mut g = debian_vmware();
            g.add_file(
                "/lib/systemd/system-preset/90-default.preset",
                b"enable open-vm-tools.service\ndisable *\n",
            );
            let f = FILES[pick(next(), FILES.len())];
            let mut b = g.file(f).unwrap().to_vec();
            let at = pick(next(), b.len());
            match i % 3 {
                0 => b.truncate(at),
                1 => b[at] = u8::try_from(next() >> 56).unwrap(),
                _ => b.insert(at, b'\n'),
            }
            g.add_file(f, &b);
            let l = LINKS[pick(next(), LINKS.len())];
            g.add_symlink(&format!("/etc/rc3.d/{l}"), &format!("../init.d/{l}"));
            if i % 5 == 0 {
                g.add_symlink(
                    "/etc/systemd/system/vgauth.service",
                    "/lib/systemd/system/x",
                );
            }
            if i % 7 == 0 {
                g.add_file("/etc/systemd/system/open-vm-tools.service", b"[Service]\n");
            }
            let out = plan_on(&g, &[]);
            let _ = out.notes.join("; ");
            apply_and_replan(&mut g, &out);
        }
    }
}
