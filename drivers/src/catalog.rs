//! The virtio-win catalog: which driver packages a source holds, for which Windows folders and
//! architectures, and the choice of package for one Windows target, with the reason.

use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::inf::{Inf, InfDriver, MAX_INF_BYTES, ServiceInstall};
use crate::osmap::{Arch, Fallback, OsFolder, WindowsTarget, fallbacks_for, os_folder};
use crate::pe::{self, MAX_SYS_BYTES, PeInfo};
use crate::source::{EntryKind, Source};

/// Our limit on directory listings while scanning a source (a full virtio-win ISO needs about
/// 1,500); with the per-directory size limit it bounds the scan however the tree is shaped.
pub const MAX_LISTINGS: usize = 4096;
/// Our limit on driver packages (INF files) in one catalog (a full virtio-win ISO has about 400).
pub const MAX_PACKAGES: usize = 20_000;
/// Our limit on the files of one package folder.
const MAX_PACKAGE_FILES: usize = 256;

/// How the source arranges its folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The ISO (and its extracted copy): `<driver>/<folder>/<arch>/<driver>.inf`.
    Iso,
    /// The virtio-win RPM's tree: `drivers/by-os/<arch>/<folder>/<driver>.inf`.
    Rpm,
}

/// One driver package of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    /// Driver name: the INF's stem, lower case (`viostor`, `netkvm`).
    pub driver: String,
    /// The OS folder.
    pub folder: OsFolder,
    /// The architecture folder.
    pub arch: Arch,
    /// The folder inside the source, as stored.
    pub dir: String,
    /// The INF's file name, as stored.
    pub inf: String,
}

impl Package {
    /// The INF's path inside the source.
    #[must_use]
    pub fn inf_path(&self) -> String {
        format!("{}/{}", self.dir, self.inf)
    }
}

/// An opened catalog.
#[derive(Debug)]
pub struct Catalog {
    source: Source,
    layout: Layout,
    packages: Vec<Package>,
}

/// A file of a chosen package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriverFile {
    /// File name as stored.
    pub name: String,
    /// Path inside the source.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// For `.sys` files: the checked PE facts.
    pub pe: Option<PeInfo>,
}

/// Why a folder was chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Reason {
    /// The folder the target maps to.
    Exact,
    /// A permitted fallback row, and the INF decoration that accepts the target.
    Fallback {
        /// The table row.
        row: Fallback,
        /// The Models decoration that applies to the target.
        decoration: String,
    },
}

/// The package chosen for one driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriverChoice {
    /// Driver name.
    pub name: String,
    /// The folder the target maps to.
    pub wanted: OsFolder,
    /// The folder used.
    pub folder: OsFolder,
    /// The architecture.
    pub arch: Arch,
    /// Why.
    pub reason: Reason,
    /// The package folder inside the source.
    pub dir: String,
    /// The INF path inside the source.
    pub inf_path: String,
    /// The parsed INF.
    pub inf: InfDriver,
    /// Hardware IDs the INF binds on the target.
    pub hardware_ids: Vec<String>,
    /// Services the INF installs.
    pub services: Vec<ServiceInstall>,
    /// The package's files.
    pub files: Vec<DriverFile>,
}

/// A driver of the catalog that will not be installed, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Driver name.
    pub name: String,
    /// Why (an error message).
    pub reason: String,
}

/// What a catalog offers a target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Selection {
    /// The source's host path.
    pub source: String,
    /// `"directory"` or `"iso"`.
    pub source_kind: &'static str,
    /// The layout found.
    pub layout: Layout,
    /// The target.
    pub target: WindowsTarget,
    /// The folder the target maps to.
    pub folder: OsFolder,
    /// Chosen packages, by driver name.
    pub drivers: Vec<DriverChoice>,
    /// Drivers not chosen.
    pub skipped: Vec<Skipped>,
}

impl Selection {
    /// The choice for `name`, if any.
    #[must_use]
    pub fn driver(&self, name: &str) -> Option<&DriverChoice> {
        self.drivers
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }
}

fn start_name(start: u32) -> &'static str {
    match start {
        0 => "boot",
        1 => "system",
        2 => "auto",
        3 => "demand",
        4 => "disabled",
        _ => "?",
    }
}

fn version_text(v: [u16; 4]) -> String {
    format!("{}.{}.{}.{}", v[0], v[1], v[2], v[3])
}

/// The human report of `rehost drivers list`.
#[must_use]
pub fn render_human(sel: &Selection) -> String {
    let mut s = String::new();
    let layout = match sel.layout {
        Layout::Iso => "iso layout",
        Layout::Rpm => "rpm layout",
    };
    let _ = writeln!(s, "source: {} ({}, {layout})", sel.source, sel.source_kind);
    let _ = writeln!(s, "target: {} -> folder {}", sel.target, sel.folder);
    for d in &sel.drivers {
        let why = match &d.reason {
            Reason::Exact => format!("exact folder for {}", sel.target),
            Reason::Fallback { row, decoration } => format!(
                "no {} folder; fallback to {} ({}); the inf's {decoration} accepts the target",
                row.wanted, row.instead, row.why
            ),
        };
        let _ = writeln!(s, "{}: {}/{}: {why}", d.name, d.folder, d.arch);
        let v = &d.inf.version;
        let _ = writeln!(
            s,
            "  inf: {} (class {}, driverver {}, catalog {})",
            d.inf_path,
            v.class.as_deref().unwrap_or("-"),
            v.driver_ver
                .map_or_else(|| "-".to_owned(), |dv| dv.to_string()),
            v.catalog_file.as_deref().unwrap_or("-"),
        );
        for svc in &d.services {
            let _ = writeln!(
                s,
                "  service: {} type {} start {} ({}) error {} group {} image {}",
                svc.name,
                svc.service_type,
                svc.start_type,
                start_name(svc.start_type),
                svc.error_control,
                svc.load_order_group
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |g| format!("{g:?}")),
                svc.binary
                    .image_path()
                    .unwrap_or_else(|| svc.binary.raw.clone()),
            );
        }
        let _ = writeln!(s, "  hardware ids: {}", d.hardware_ids.join(", "));
        let files: Vec<String> = d
            .files
            .iter()
            .map(|f| match &f.pe {
                Some(p) => format!(
                    "{} ({} bytes, {}, version {})",
                    f.name,
                    f.size,
                    pe::machine_name(p.machine),
                    p.file_version
                        .map_or_else(|| "unknown".to_owned(), version_text)
                ),
                None => format!("{} ({} bytes)", f.name, f.size),
            })
            .collect();
        let _ = writeln!(s, "  files: {}", files.join(", "));
    }
    for k in &sel.skipped {
        let _ = writeln!(s, "{}: skipped: {}", k.name, k.reason);
    }
    s
}

/// The human report of `rehost drivers list SOURCE` without a target: every driver and the
/// folders it has.
#[must_use]
pub fn render_catalog(cat: &Catalog) -> String {
    let mut s = String::new();
    let layout = match cat.layout {
        Layout::Iso => "iso layout",
        Layout::Rpm => "rpm layout",
    };
    let _ = writeln!(
        s,
        "source: {} ({}, {layout}, {} packages)",
        cat.source.path().display(),
        cat.source.kind(),
        cat.packages.len()
    );
    let mut i = 0;
    while let Some(first) = cat.packages.get(i) {
        let same: Vec<&Package> = cat.packages[i..]
            .iter()
            .take_while(|p| p.driver == first.driver)
            .collect();
        let folders: Vec<String> = same
            .iter()
            .map(|p| format!("{}/{}", p.folder, p.arch))
            .collect();
        let _ = writeln!(s, "{}: {}", first.driver, folders.join(", "));
        i += same.len();
    }
    s
}

fn join(a: &str, b: &str) -> String {
    if a.is_empty() {
        b.to_owned()
    } else {
        format!("{a}/{b}")
    }
}

struct Scan<'a> {
    source: &'a Source,
    listings: usize,
    packages: Vec<Package>,
}

impl Scan<'_> {
    fn list(&mut self, rel: &str) -> Result<Vec<crate::source::Entry>> {
        self.listings += 1;
        if self.listings > MAX_LISTINGS {
            return Err(Error::unsupported(
                "catalog",
                format!("scan needs more than {MAX_LISTINGS} directory listings"),
            ));
        }
        self.source.read_dir(rel)
    }

    fn add_infs(
        &mut self,
        dir: &str,
        driver_hint: Option<&str>,
        folder: OsFolder,
        arch: Arch,
    ) -> Result<()> {
        for e in self.list(dir)? {
            if e.kind != EntryKind::File {
                continue;
            }
            let lower = e.name.to_ascii_lowercase();
            let Some(stem) = lower.strip_suffix(".inf") else {
                continue;
            };
            if self.packages.len() >= MAX_PACKAGES {
                return Err(Error::unsupported(
                    "catalog",
                    format!("more than {MAX_PACKAGES} driver packages"),
                ));
            }
            tracing::trace!(dir, inf = %e.name, hint = ?driver_hint, "found package");
            self.packages.push(Package {
                driver: stem.to_owned(),
                folder,
                arch,
                dir: dir.to_owned(),
                inf: e.name,
            });
        }
        Ok(())
    }
}

impl Catalog {
    /// Scans a source, detecting its layout.
    ///
    /// # Errors
    /// `Unsupported` if neither layout is found or past the scan limits; `Io`/`Corrupt` from
    /// the source.
    pub fn open(source: Source) -> Result<Self> {
        let mut scan = Scan {
            source: &source,
            listings: 0,
            packages: Vec::new(),
        };
        let root = scan.list("")?;
        let by_os = root
            .iter()
            .find(|e| e.kind == EntryKind::Dir && e.name.eq_ignore_ascii_case("drivers"))
            .map(|d| d.name.clone());
        let mut layout = None;
        if let Some(drivers) = by_os
            && let Some(b) = scan
                .list(&drivers)?
                .into_iter()
                .find(|e| e.kind == EntryKind::Dir && e.name.eq_ignore_ascii_case("by-os"))
        {
            layout = Some(Layout::Rpm);
            let base = join(&drivers, &b.name);
            for a in scan.list(&base)? {
                let Some(arch) = Arch::from_name(&a.name).filter(|_| a.kind == EntryKind::Dir)
                else {
                    continue;
                };
                let adir = join(&base, &a.name);
                for f in scan.list(&adir)? {
                    let Some(folder) =
                        OsFolder::from_name(&f.name).filter(|_| f.kind == EntryKind::Dir)
                    else {
                        continue;
                    };
                    scan.add_infs(&join(&adir, &f.name), None, folder, arch)?;
                }
            }
        }
        if layout.is_none() {
            for d in root.iter().filter(|e| e.kind == EntryKind::Dir) {
                for f in scan.list(&d.name)? {
                    let Some(folder) =
                        OsFolder::from_name(&f.name).filter(|_| f.kind == EntryKind::Dir)
                    else {
                        continue;
                    };
                    let fdir = join(&d.name, &f.name);
                    for a in scan.list(&fdir)? {
                        let Some(arch) =
                            Arch::from_name(&a.name).filter(|_| a.kind == EntryKind::Dir)
                        else {
                            continue;
                        };
                        scan.add_infs(&join(&fdir, &a.name), Some(&d.name), folder, arch)?;
                    }
                }
            }
            if !scan.packages.is_empty() {
                layout = Some(Layout::Iso);
            }
        }
        let Some(layout) = layout else {
            return Err(Error::unsupported(
                "catalog",
                format!(
                    "{} has neither the iso layout (<driver>/<os>/<arch>/*.inf) nor the rpm layout (drivers/by-os/<arch>/<os>/*.inf)",
                    source.path().display()
                ),
            ));
        };
        let mut packages = scan.packages;
        packages.sort_by(|a, b| {
            (&a.driver, a.folder, a.arch.inf_name()).cmp(&(&b.driver, b.folder, b.arch.inf_name()))
        });
        tracing::debug!(?layout, packages = packages.len(), "opened catalog");
        Ok(Self {
            source,
            layout,
            packages,
        })
    }

    /// The layout found.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The source.
    #[must_use]
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Every package, sorted by driver, folder and architecture.
    #[must_use]
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// Driver names offered for `arch`, sorted.
    #[must_use]
    pub fn drivers(&self, arch: Arch) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .packages
            .iter()
            .filter(|p| p.arch == arch)
            .map(|p| p.driver.as_str())
            .collect();
        out.dedup();
        out
    }

    fn package(&self, driver: &str, folder: OsFolder, arch: Arch) -> Option<&Package> {
        self.packages
            .iter()
            .find(|p| p.driver.eq_ignore_ascii_case(driver) && p.folder == folder && p.arch == arch)
    }

    /// Chooses a package for every driver the catalog offers the target's architecture.
    ///
    /// # Errors
    /// `Unsupported` if the Windows version has no folder; `Missing` naming the folder if no
    /// driver at all can serve the target. Per-driver problems go to [`Selection::skipped`].
    pub fn select(&self, t: &WindowsTarget) -> Result<Selection> {
        let folder = os_folder(t)?;
        let usable: Vec<OsFolder> = std::iter::once(folder)
            .chain(fallbacks_for(folder).map(|f| f.instead))
            .collect();
        if !self
            .packages
            .iter()
            .any(|p| p.arch == t.arch && usable.contains(&p.folder))
        {
            let tried: Vec<&str> = usable.iter().skip(1).map(|f| f.name()).collect();
            let fb = if tried.is_empty() {
                "; no fallback is permitted for it".to_owned()
            } else {
                format!(" and no permitted fallback folder ({})", tried.join(", "))
            };
            return Err(Error::Missing(format!(
                "the catalog has no {folder}/{} folder for {t}{fb}",
                t.arch.folder()
            )));
        }
        let mut drivers = Vec::new();
        let mut skipped = Vec::new();
        for name in self.drivers(t.arch) {
            match self.select_driver(name, t) {
                Ok(c) => drivers.push(c),
                Err(e) => skipped.push(Skipped {
                    name: name.to_owned(),
                    reason: e.to_string(),
                }),
            }
        }
        Ok(Selection {
            source: self.source.path().display().to_string(),
            source_kind: self.source.kind(),
            layout: self.layout,
            target: *t,
            folder,
            drivers,
            skipped,
        })
    }

    /// Chooses the package of one driver for the target: its exact folder, else a permitted
    /// fallback whose INF accepts the target.
    ///
    /// # Errors
    /// `Missing` naming the folder when neither exists; `Corrupt` for a broken INF or PE;
    /// `Unsuitable` for a PE of the wrong machine or subsystem, or an INF that binds nothing on
    /// the target.
    pub fn select_driver(&self, name: &str, t: &WindowsTarget) -> Result<DriverChoice> {
        let wanted = os_folder(t)?;
        if let Some(p) = self.package(name, wanted, t.arch) {
            let (inf, files) = self.load(p)?;
            let ids = ids_for(&inf, t);
            if ids.is_empty() {
                return Err(Error::Unsuitable {
                    path: p.inf_path(),
                    detail: format!("no models section of the inf applies to {t}"),
                });
            }
            return Ok(choice(name, wanted, p, Reason::Exact, inf, ids, files));
        }
        let mut notes = Vec::new();
        for row in fallbacks_for(wanted) {
            let Some(p) = self.package(name, row.instead, t.arch) else {
                notes.push(format!("fallback {} absent too", row.instead));
                continue;
            };
            let (inf, files) = self.load(p)?;
            let models = inf.models_for(t);
            let Some(decoration) = models
                .first()
                .and_then(|m| m.decoration.as_ref())
                .map(|d| d.text.clone())
            else {
                notes.push(format!(
                    "fallback {}'s inf has no models decoration accepting {t}",
                    row.instead
                ));
                continue;
            };
            let ids = ids_for(&inf, t);
            let reason = Reason::Fallback {
                row: *row,
                decoration,
            };
            return Ok(choice(name, wanted, p, reason, inf, ids, files));
        }
        let notes = if notes.is_empty() {
            "; no fallback is permitted for it".to_owned()
        } else {
            format!("; {}", notes.join("; "))
        };
        Err(Error::Missing(format!(
            "no {wanted}/{} folder for driver {name} in the catalog{notes}",
            t.arch.folder()
        )))
    }

    /// Reads and checks one package: its INF (parsed for the package's architecture) and every
    /// file it names (catalog, SourceDisksFiles, CopyFiles), each `.sys` checked as a PE driver.
    ///
    /// # Errors
    /// As [`Catalog::select_driver`].
    pub fn load(&self, p: &Package) -> Result<(InfDriver, Vec<DriverFile>)> {
        let inf_path = p.inf_path();
        let bytes = self
            .source
            .read_file(&inf_path, u64::try_from(MAX_INF_BYTES).unwrap_or(u64::MAX))?;
        let inf = Inf::parse(&bytes)
            .and_then(|i| i.driver(p.arch))
            .map_err(|e| e.in_file(&inf_path))?;
        // The package is what the INF names: itself, its catalog, SourceDisksFiles and the
        // CopyFiles sources. (In the RPM layout one folder holds every driver's files.)
        let mut wanted: Vec<String> = vec![p.inf.clone()];
        wanted.extend(inf.version.catalog_file.iter().cloned());
        wanted.extend(inf.source_disks_files.iter().cloned());
        for cf in inf.installs.iter().flat_map(|i| &i.copy_files) {
            wanted.push(cf.source.clone().unwrap_or_else(|| cf.name.clone()));
        }
        let listing = self.source.read_dir(&p.dir)?;
        let mut files: Vec<DriverFile> = Vec::new();
        for name in wanted {
            if files.iter().any(|f| f.name.eq_ignore_ascii_case(&name)) {
                continue;
            }
            if files.len() >= MAX_PACKAGE_FILES {
                return Err(Error::unsupported(
                    "catalog",
                    format!("{inf_path} names more than {MAX_PACKAGE_FILES} files"),
                ));
            }
            let Some(e) = listing
                .iter()
                .find(|e| e.kind == EntryKind::File && e.name.eq_ignore_ascii_case(&name))
            else {
                return Err(Error::Missing(format!(
                    "{inf_path} names {name} but {} has no such file",
                    p.dir
                )));
            };
            let path = join(&p.dir, &e.name);
            let pe = if e.name.to_ascii_lowercase().ends_with(".sys") {
                let data = self.source.read_file(&path, MAX_SYS_BYTES)?;
                Some(pe::check_sys(&data, p.arch).map_err(|err| err.in_file(&path))?)
            } else {
                None
            };
            files.push(DriverFile {
                name: e.name.clone(),
                path,
                size: e.size,
                pe,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((inf, files))
    }
}

fn ids_for(inf: &InfDriver, t: &WindowsTarget) -> Vec<String> {
    inf.hardware_ids_for(t)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn choice(
    name: &str,
    wanted: OsFolder,
    p: &Package,
    reason: Reason,
    inf: InfDriver,
    hardware_ids: Vec<String>,
    files: Vec<DriverFile>,
) -> DriverChoice {
    let services = inf.services().into_iter().cloned().collect();
    DriverChoice {
        name: name.to_owned(),
        wanted,
        folder: p.folder,
        arch: p.arch,
        reason,
        dir: p.dir.clone(),
        inf_path: p.inf_path(),
        inf,
        hardware_ids,
        services,
        files,
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
