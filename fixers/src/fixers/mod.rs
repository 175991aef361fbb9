//! The fixers: each turns the guest's files (read-only) plus the inspection report into a list
//! of [`Change`]s. They never write.

use guestfs::{Follow, FsRead, FsReadExt, GuestPath, resolve};
use inspect::report::{OsReport, Report};

use crate::{Change, Result};

mod block_devices;
mod caches;
mod console;
mod hypervisor_tools;
pub mod initramfs;
mod network;
mod selinux;
mod windows;

pub use network::NetPolicy;
#[doc(hidden)]
pub use windows::firstboot::fuzz_firstboot;
#[doc(hidden)]
pub use windows::fuzz::fuzz_windows;

/// Largest guest file a fixer reads (configuration files are small; house style S12).
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Most entries of one directory a fixer looks at.
const MAX_DIR_FILES: usize = 4096;

/// What a fixer sees.
pub struct FixContext<'a> {
    /// The guest's files (with earlier steps' changes applied).
    pub fs: &'a dyn FsRead,
    /// The whole inspection report (devices, firmware).
    pub report: &'a Report,
    /// The OS being fixed.
    pub os: &'a OsReport,
}

impl FixContext<'_> {
    /// Reads a text file by guest path: `(canonical path, text)`, or `None` if it does not
    /// exist or is not a regular file.
    ///
    /// # Errors
    /// Read errors other than "not found"; [`crate::Error::Unsupported`] for non-UTF-8 text.
    pub fn read_text(&self, raw: &str) -> Result<Option<(String, String)>> {
        let p = match resolve(self.fs, raw.as_bytes(), Follow::Final) {
            Ok(p) => p,
            Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        match self.fs.lstat(&p) {
            Ok(m) if m.file_type == guestfs::FileType::Regular => {}
            Ok(_) => return Ok(None),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let bytes = self.fs.read_file(&p.to_bytes(), MAX_FILE_BYTES as u64)?;
        let text = String::from_utf8(bytes).map_err(|_| crate::Error::Unsupported {
            what: "configuration file",
            detail: format!("{p} is not UTF-8"),
        })?;
        // Line-based edits are bounded by MAX_LINES; a longer file is left alone rather than
        // edited in part.
        if text.lines().nth(crate::text::MAX_LINES).is_some() {
            tracing::debug!(path = %p, "more than {} lines, not edited", crate::text::MAX_LINES);
            return Ok(None);
        }
        Ok(Some((p.to_string(), text)))
    }

    /// Regular files (and symlinks to them) in directory `dir` whose names satisfy `pred`,
    /// sorted, as guest paths. A missing directory is empty.
    ///
    /// # Errors
    /// Read errors other than "not found".
    pub fn list(&self, dir: &str, pred: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let entries = match self.fs.read_dir_path(dir.as_bytes()) {
            Ok(e) => e,
            Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut out: Vec<String> = entries
            .iter()
            .filter(|e| {
                matches!(
                    e.file_type,
                    guestfs::FileType::Regular | guestfs::FileType::Symlink
                )
            })
            .filter_map(|e| std::str::from_utf8(&e.name).ok())
            .filter(|n| pred(n))
            .take(MAX_DIR_FILES)
            .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
            .collect();
        out.sort();
        Ok(out)
    }

    /// True if `raw` exists.
    ///
    /// # Errors
    /// Read errors other than "not found".
    pub fn exists(&self, raw: &str) -> Result<bool> {
        Ok(self.fs.exists(raw.as_bytes())?)
    }

    /// The canonical form of `raw` (symlinks in it resolved inside the guest).
    ///
    /// # Errors
    /// As [`guestfs::resolve`].
    pub fn canonical(&self, raw: &str) -> Result<GuestPath> {
        Ok(resolve(self.fs, raw.as_bytes(), Follow::Final)?)
    }
}

/// What one fixer run produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Short notes for the plan summary (what was done, what was skipped and why).
    pub notes: Vec<String>,
}

impl Outcome {
    /// Adds a whole-file replacement if `new` differs.
    pub fn replace(&mut self, path: &str, old: &str, new: String) {
        if new != old {
            self.changes.push(Change::ReplaceFile {
                path: path.to_owned(),
                old: old.as_bytes().to_vec(),
                new: new.into_bytes(),
            });
        }
    }
}

/// The type of a fixer parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A string from a fixed set.
    Choice(&'static [&'static str]),
    /// Any string matching a simple name rule (1..=15 bytes of `a-z 0-9 . _ -`, an interface name).
    IfName,
    /// A MAC address `xx:xx:xx:xx:xx:xx`, or the empty string for "not set".
    Mac,
    /// A string that is one kernel command line token (no whitespace, no quotes).
    KernelToken,
    /// A boolean.
    Bool,
    /// Free text of at most 4096 bytes without control characters (a host path, a registry
    /// key or value).
    Text,
    /// A list of names, each 1..=64 bytes of `A-Z a-z 0-9 . _ -` (driver names).
    Names,
}

/// One parameter a fixer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// Key in the recipe step.
    pub name: &'static str,
    /// Its type.
    pub kind: ParamKind,
    /// The default, as TOML text (`"dhcp"`, `true`).
    pub default: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// A fixer: a pure function from guest files and the report to changes.
pub trait Fixer: Sync {
    /// Registry name, used in recipes.
    fn name(&self) -> &'static str;
    /// One sentence for `rehost recipe show`.
    fn description(&self) -> &'static str;
    /// The parameters it takes.
    fn params(&self) -> &'static [ParamSpec];
    /// Plans the changes.
    ///
    /// # Errors
    /// Guest read errors; files too odd to edit safely.
    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome>;
}

/// Validated step parameters with the fixer's defaults filled in.
#[derive(Debug, Clone)]
pub struct Params {
    table: toml::Table,
    recipe_dir: Option<std::path::PathBuf>,
}

impl Params {
    /// The step's table over the fixer's defaults (call [`validate_params`] first).
    #[must_use]
    pub fn new(fixer: &dyn Fixer, given: toml::Table) -> Self {
        let mut table = toml::Table::new();
        for p in fixer.params() {
            if let Ok(v) = toml::from_str::<toml::Table>(&format!("v = {}", p.default))
                && let Some(v) = v.get("v")
            {
                table.insert(p.name.to_owned(), v.clone());
            }
        }
        table.extend(given);
        Self {
            table,
            recipe_dir: None,
        }
    }

    /// Notes the directory of the recipe file the step comes from (for files a step names
    /// relative to its recipe); shipped and inline recipes have none.
    #[must_use]
    pub fn with_recipe(mut self, origin: &crate::Origin) -> Self {
        if let crate::Origin::User(p) = origin {
            self.recipe_dir = p.parent().map(std::path::Path::to_path_buf);
        }
        self
    }

    /// The directory of the user recipe file the step comes from.
    #[must_use]
    pub fn recipe_dir(&self) -> Option<&std::path::Path> {
        self.recipe_dir.as_deref()
    }

    /// A list-of-names parameter (empty if absent).
    #[must_use]
    pub fn list(&self, name: &str) -> Vec<String> {
        self.table
            .get(name)
            .and_then(toml::Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(toml::Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A string parameter ("" if absent).
    #[must_use]
    pub fn str(&self, name: &str) -> &str {
        self.table
            .get(name)
            .and_then(toml::Value::as_str)
            .unwrap_or("")
    }

    /// A boolean parameter (false if absent).
    #[must_use]
    pub fn bool(&self, name: &str) -> bool {
        self.table
            .get(name)
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
    }
}

fn valid_ifname(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// True for `xx:xx:xx:xx:xx:xx` (hex digits, either case).
fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Checks a step's parameters against `fixer`'s specs: (lint code, message) per problem.
#[must_use]
pub fn validate_params(fixer: &dyn Fixer, table: &toml::Table) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (k, v) in table {
        let Some(spec) = fixer.params().iter().find(|p| p.name == k) else {
            let known: Vec<&str> = fixer.params().iter().map(|p| p.name).collect();
            out.push((
                "unknown-param",
                format!(
                    "fixer {} has no parameter {k:?} (it takes: {})",
                    fixer.name(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
            continue;
        };
        match (spec.kind, v) {
            (ParamKind::Bool, toml::Value::Boolean(_)) => {}
            (ParamKind::Choice(c), toml::Value::String(s)) => {
                if !c.contains(&s.as_str()) {
                    out.push((
                        "bad-param-value",
                        format!("{k} = {s:?} is not one of {}", c.join(", ")),
                    ));
                }
            }
            (ParamKind::IfName, toml::Value::String(s)) => {
                if !valid_ifname(s) {
                    out.push((
                        "bad-param-value",
                        format!("{k} = {s:?} is not an interface name (1..=15 of a-z 0-9 . _ -)"),
                    ));
                }
            }
            (ParamKind::Mac, toml::Value::String(s)) => {
                if !(s.is_empty() || is_mac(s)) {
                    out.push((
                        "bad-param-value",
                        format!("{k} = {s:?} is not a MAC address xx:xx:xx:xx:xx:xx"),
                    ));
                }
            }
            (ParamKind::KernelToken, toml::Value::String(s)) => {
                if s.is_empty()
                    || s.len() > 256
                    || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                {
                    out.push((
                        "bad-param-value",
                        format!("{k} = {s:?} is not one kernel command line token"),
                    ));
                }
            }
            (ParamKind::Text, toml::Value::String(s)) => {
                if s.len() > 4096 || s.chars().any(char::is_control) {
                    out.push((
                        "bad-param-value",
                        format!("{k} is over 4096 bytes or has control characters"),
                    ));
                }
            }
            (ParamKind::Names, toml::Value::Array(a)) => {
                let ok = |v: &toml::Value| {
                    v.as_str().is_some_and(|s| {
                        (1..=64).contains(&s.len())
                            && s.bytes().all(|b| {
                                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
                            })
                    })
                };
                if a.len() > 256 || !a.iter().all(ok) {
                    out.push((
                        "bad-param-value",
                        format!(
                            "{k} must be a list of at most 256 names (1..=64 of A-Z a-z 0-9 . _ -)"
                        ),
                    ));
                }
            }
            (kind, v) => out.push((
                "bad-param-type",
                format!(
                    "{k} must be a {}, not a {}",
                    match kind {
                        ParamKind::Bool => "boolean",
                        ParamKind::Names => "array",
                        _ => "string",
                    },
                    v.type_str()
                ),
            )),
        }
    }
    out
}

static REGISTRY: &[&dyn Fixer] = &[
    &block_devices::BlockDeviceNames,
    &network::Network,
    &console::Console,
    &caches::Caches,
    &hypervisor_tools::HypervisorTools,
    &initramfs::Initramfs,
    &selinux::Selinux,
    &windows::virtio::VirtioWin,
    &windows::hypervisor::HypervisorServices,
    &windows::policy::SanPolicy,
    &windows::policy::CrashControl,
    &windows::registry::WindowsRegistry,
    &windows::firstboot::Firstboot,
];

/// Every fixer, in a stable order.
#[must_use]
pub fn registry() -> &'static [&'static dyn Fixer] {
    REGISTRY
}

/// The fixer called `name`.
#[must_use]
pub fn find_fixer(name: &str) -> Option<&'static dyn Fixer> {
    REGISTRY.iter().copied().find(|f| f.name() == name)
}

/// Every file holding a kernel command line: `/etc/default/grub`, the GRUB configs and BLS
/// entries, as (guest path, text, site) for the files that exist.
pub(crate) fn cmdline_files(ctx: &FixContext<'_>) -> Result<Vec<(String, String, CmdlineFile)>> {
    let mut out = Vec::new();
    if let Some((p, t)) = ctx.read_text("/etc/default/grub")? {
        out.push((p, t, CmdlineFile::DefaultGrub));
    }
    let mut cfgs = vec![
        "/boot/grub/grub.cfg".to_owned(),
        "/boot/grub2/grub.cfg".to_owned(),
        "/boot/grub/menu.lst".to_owned(),
    ];
    if let Ok(entries) = ctx.fs.read_dir_path(b"/boot/efi/EFI") {
        for e in entries
            .iter()
            .filter(|e| e.file_type == guestfs::FileType::Directory)
            .take(MAX_DIR_FILES)
        {
            if let Ok(n) = std::str::from_utf8(&e.name) {
                cfgs.push(format!("/boot/efi/EFI/{n}/grub.cfg"));
            }
        }
    }
    let mut seen = Vec::new();
    for c in cfgs {
        if let Some((p, t)) = ctx.read_text(&c)?
            && !seen.contains(&p)
        {
            seen.push(p.clone());
            out.push((p, t, CmdlineFile::GrubCfg));
        }
    }
    for env in ["/boot/grub2/grubenv", "/boot/grub/grubenv"] {
        if let Some((p, t)) = ctx.read_text(env)?
            && !out.iter().any(|(q, _, _)| *q == p)
        {
            out.push((p, t, CmdlineFile::GrubEnv));
        }
    }
    // kernel-install (RHEL 9, Fedora) takes new kernels' command line from here.
    if let Some((p, t)) = ctx.read_text("/etc/kernel/cmdline")? {
        out.push((p, t, CmdlineFile::KernelCmdline));
    }
    for e in ctx.list("/boot/loader/entries", |n| n.ends_with(".conf"))? {
        if let Some((p, t)) = ctx.read_text(&e)? {
            out.push((p, t, CmdlineFile::Bls));
        }
    }
    Ok(out)
}

/// The kind of a file holding kernel command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmdlineFile {
    DefaultGrub,
    GrubCfg,
    Bls,
    KernelCmdline,
    GrubEnv,
}

/// Edits every kernel command line in every file that has them; `edit(site, args)` returns new
/// args. `ensure_default` adds a `GRUB_CMDLINE_LINUX` line to `/etc/default/grub` if missing.
pub(crate) fn edit_all_cmdlines(
    ctx: &FixContext<'_>,
    ensure_default: bool,
    edit: &mut dyn FnMut(crate::text::CmdlineSite, &str) -> Option<String>,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let files = cmdline_files(ctx)?;
    // BLS entries that say `$kernelopts` take their command line from grubenv (RHEL 8), which
    // is edited itself; adding to both would repeat every parameter.
    let env_kernelopts = files.iter().any(|(_, t, k)| {
        *k == CmdlineFile::GrubEnv && crate::text::lines(t).any(|l| l.starts_with("kernelopts="))
    });
    let edit = &mut |site: crate::text::CmdlineSite, args: &str| {
        if env_kernelopts && site == crate::text::CmdlineSite::Bls && args.contains("$kernelopts") {
            return None;
        }
        edit(site, args)
    };
    for (path, text, kind) in files {
        let new = match kind {
            CmdlineFile::DefaultGrub => crate::text::edit_default_grub(&text, ensure_default, edit),
            CmdlineFile::GrubCfg => crate::text::edit_grub_cfg(&text, edit),
            CmdlineFile::Bls => crate::text::edit_bls(&text, edit),
            CmdlineFile::GrubEnv => crate::text::edit_grubenv(&text, edit),
            CmdlineFile::KernelCmdline => crate::text::edit_lines(&text, |body| {
                edit(crate::text::CmdlineSite::KernelCmdline, body)
            }),
        };
        if let Some(n) = new {
            out.replace(&path, &text, n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixer_is_documented_and_its_defaults_validate() {
        for f in registry() {
            assert!(!f.description().is_empty(), "{}", f.name());
            assert_eq!(find_fixer(f.name()).map(Fixer::name), Some(f.name()));
            let mut defaults = toml::Table::new();
            for p in f.params() {
                assert!(!p.help.is_empty(), "{}.{}", f.name(), p.name);
                let v: toml::Table = toml::from_str(&format!("v = {}", p.default)).unwrap();
                defaults.insert(p.name.to_owned(), v["v"].clone());
            }
            assert_eq!(validate_params(*f, &defaults), vec![], "{}", f.name());
            let params = Params::new(*f, toml::Table::new());
            for p in f.params() {
                match p.kind {
                    ParamKind::Bool => assert_eq!(params.bool(p.name).to_string(), p.default),
                    ParamKind::Names => assert_eq!(format!("{:?}", params.list(p.name)), p.default),
                    _ => assert_eq!(format!("{:?}", params.str(p.name)), p.default),
                }
            }
        }
        assert!(find_fixer("initramfs-virtio").is_none());
    }

    #[test]
    fn macs() {
        assert!(is_mac("52:54:00:AB:cd:ef"));
        assert!(!is_mac("52:54:00:ab:cd"));
        assert!(!is_mac("52:54:00:ab:cd:efa"));
        assert!(!is_mac("52-54-00-ab-cd-ef"));
    }
}
