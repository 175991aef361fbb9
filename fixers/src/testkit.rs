//! Test doubles for this crate's tests and for callers' tests: an in-memory guest filesystem that
//! is both an [`FsRead`] and an [`Applier`], and synthetic inspection reports.

use std::collections::BTreeMap;
use std::path::Path;

use guestfs::{CaseSensitivity, DirEntry, FileType, FsInfo, FsKind, FsRead, GuestPath, Metadata};
use inspect::report::{
    BootCode, DeviceReport, Firmware, FirmwareKind, OsReport, Report, SCHEMA_VERSION,
};

use crate::{Applier, Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>, u32),
    Symlink(Vec<u8>),
}

/// An in-memory guest tree keyed by canonical path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFs {
    nodes: BTreeMap<GuestPath, Node>,
}

fn gp(p: &str) -> GuestPath {
    // Test helper: callers pass literal absolute paths.
    GuestPath::parse(p.as_bytes()).unwrap_or_default()
}

impl MemFs {
    /// An empty tree (just `/`).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn mkdirs(&mut self, p: &GuestPath) {
        let mut cur = GuestPath::root();
        for c in p.components() {
            if let Ok(n) = cur.join_name(c) {
                cur = n;
                self.nodes.entry(cur.clone()).or_insert(Node::Dir);
            }
        }
    }

    /// Adds (or replaces) a file with mode 0644, creating parent directories.
    pub fn add_file(&mut self, path: &str, content: &[u8]) -> &mut Self {
        let p = gp(path);
        self.mkdirs(&p.parent());
        self.nodes.insert(p, Node::File(content.to_vec(), 0o644));
        self
    }

    /// Adds a symlink, creating parent directories.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let p = gp(path);
        self.mkdirs(&p.parent());
        self.nodes
            .insert(p, Node::Symlink(target.as_bytes().to_vec()));
        self
    }

    /// Adds a directory and its parents.
    pub fn add_dir(&mut self, path: &str) -> &mut Self {
        self.mkdirs(&gp(path));
        self
    }

    /// Loads a host directory tree (regular files, directories and symlinks).
    ///
    /// # Errors
    /// [`Error::RecipeIo`] (reused for host I/O) if the tree cannot be read.
    pub fn from_host_dir(dir: &Path) -> Result<Self> {
        let mut fs = Self::new();
        let mut stack = vec![(dir.to_owned(), String::new())];
        while let Some((host, guest)) = stack.pop() {
            let io = |source| Error::RecipeIo {
                path: host.display().to_string(),
                source,
            };
            for e in std::fs::read_dir(&host).map_err(io)? {
                let e = e.map_err(io)?;
                let name = e.file_name().to_string_lossy().into_owned();
                let g = format!("{guest}/{name}");
                let ft = e.file_type().map_err(io)?;
                if ft.is_dir() {
                    fs.add_dir(&g);
                    stack.push((e.path(), g));
                } else if ft.is_symlink() {
                    let t = std::fs::read_link(e.path()).map_err(io)?;
                    fs.add_symlink(&g, &t.to_string_lossy());
                } else {
                    fs.add_file(&g, &std::fs::read(e.path()).map_err(io)?);
                }
            }
        }
        Ok(fs)
    }

    /// The content of a regular file.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.nodes.get(&gp(path)) {
            Some(Node::File(d, _)) => Some(d),
            _ => None,
        }
    }

    /// Every regular file, by path.
    #[must_use]
    pub fn files(&self) -> BTreeMap<String, Vec<u8>> {
        self.nodes
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(d, _) => Some((p.to_string(), d.clone())),
                _ => None,
            })
            .collect()
    }

    fn get(&self, p: &GuestPath) -> guestfs::Result<&Node> {
        static ROOT: Node = Node::Dir;
        if p.is_root() {
            return Ok(&ROOT);
        }
        self.nodes.get(p).ok_or_else(|| guestfs::Error::NotFound {
            path: p.to_string(),
        })
    }

    fn need_parent(&self, p: &GuestPath) -> Result<()> {
        match self.get(&p.parent())? {
            Node::Dir => Ok(()),
            _ => Err(guestfs::Error::NotADirectory {
                path: p.parent().to_string(),
            }
            .into()),
        }
    }
}

impl FsRead for MemFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: FsKind::Ext4,
            label: None,
            uuid: None,
            case: CaseSensitivity::Sensitive,
        }
    }

    fn lstat(&self, p: &GuestPath) -> guestfs::Result<Metadata> {
        let (file_type, size, mode) = match self.get(p)? {
            Node::Dir => (FileType::Directory, 0, 0o755),
            Node::File(d, m) => (FileType::Regular, d.len(), *m),
            Node::Symlink(t) => (FileType::Symlink, t.len(), 0o777),
        };
        Ok(Metadata {
            file_type,
            size: size as u64,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: 0,
            nlink: 1,
        })
    }

    fn read_dir(&self, p: &GuestPath) -> guestfs::Result<Vec<DirEntry>> {
        if !matches!(self.get(p)?, Node::Dir) {
            return Err(guestfs::Error::NotADirectory {
                path: p.to_string(),
            });
        }
        Ok(self
            .nodes
            .iter()
            .filter(|(k, _)| !k.is_root() && k.parent() == *p)
            .filter_map(|(k, n)| {
                Some(DirEntry {
                    name: k.file_name()?.to_vec(),
                    file_type: match n {
                        Node::Dir => FileType::Directory,
                        Node::File(..) => FileType::Regular,
                        Node::Symlink(_) => FileType::Symlink,
                    },
                })
            })
            .collect())
    }

    fn read_link(&self, p: &GuestPath) -> guestfs::Result<Vec<u8>> {
        match self.get(p)? {
            Node::Symlink(t) => Ok(t.clone()),
            _ => Err(guestfs::Error::NotASymlink {
                path: p.to_string(),
            }),
        }
    }

    fn read_at(&self, p: &GuestPath, offset: u64, buf: &mut [u8]) -> guestfs::Result<usize> {
        match self.get(p)? {
            Node::File(d, _) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
                let src = d.get(start..).unwrap_or_default();
                let n = buf.len().min(src.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
                Ok(n)
            }
            Node::Dir => Err(guestfs::Error::IsADirectory {
                path: p.to_string(),
            }),
            Node::Symlink(_) => Err(guestfs::Error::NotFound {
                path: p.to_string(),
            }),
        }
    }
}

impl Applier for MemFs {
    fn replace_file(&mut self, path: &GuestPath, new: &[u8]) -> Result<()> {
        match self.nodes.get_mut(path) {
            Some(Node::File(d, _)) => {
                *d = new.to_vec();
                Ok(())
            }
            _ => Err(guestfs::Error::NotFound {
                path: path.to_string(),
            }
            .into()),
        }
    }

    fn create_file(&mut self, path: &GuestPath, content: &[u8], mode: u32) -> Result<()> {
        self.need_parent(path)?;
        if self.nodes.contains_key(path) {
            return Err(guestfs::Error::AlreadyExists {
                path: path.to_string(),
            }
            .into());
        }
        self.nodes
            .insert(path.clone(), Node::File(content.to_vec(), mode));
        Ok(())
    }

    fn delete_file(&mut self, path: &GuestPath) -> Result<()> {
        match self.nodes.get(path) {
            Some(Node::File(..) | Node::Symlink(_)) => {
                self.nodes.remove(path);
                Ok(())
            }
            _ => Err(guestfs::Error::NotFound {
                path: path.to_string(),
            }
            .into()),
        }
    }

    fn rename(&mut self, from: &GuestPath, to: &GuestPath) -> Result<()> {
        self.need_parent(to)?;
        if self.nodes.contains_key(to) {
            return Err(guestfs::Error::AlreadyExists {
                path: to.to_string(),
            }
            .into());
        }
        let n = self
            .nodes
            .remove(from)
            .ok_or_else(|| guestfs::Error::NotFound {
                path: from.to_string(),
            })?;
        self.nodes.insert(to.clone(), n);
        Ok(())
    }

    fn symlink(&mut self, path: &GuestPath, target: &[u8]) -> Result<()> {
        self.need_parent(path)?;
        if self.nodes.contains_key(path) {
            return Err(guestfs::Error::AlreadyExists {
                path: path.to_string(),
            }
            .into());
        }
        self.nodes
            .insert(path.clone(), Node::Symlink(target.to_vec()));
        Ok(())
    }

    fn mkdir(&mut self, path: &GuestPath, _mode: u32) -> Result<()> {
        self.need_parent(path)?;
        if self.nodes.contains_key(path) {
            return Err(guestfs::Error::AlreadyExists {
                path: path.to_string(),
            }
            .into());
        }
        self.nodes.insert(path.clone(), Node::Dir);
        Ok(())
    }
}

/// The facts of a synthetic guest for [`synthetic_report`].
#[derive(Debug, Clone)]
pub struct SyntheticOs {
    /// libguestfs distro name.
    pub distro: String,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Firmware.
    pub firmware: FirmwareKind,
    /// Initramfs generator; `None` picks the distro's usual one.
    pub initramfs_generator: Option<String>,
    /// Hypervisor tools present.
    pub hypervisor_tools: Vec<String>,
    /// Devices as (name, content, uuid).
    pub devices: Vec<(String, String, Option<String>)>,
}

impl SyntheticOs {
    /// A BIOS guest with `/dev/sda1` ext4 (UUID 11111111-2222-3333-4444-555555555555),
    /// `/dev/sda2` ext4 (UUID aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee) and `/dev/sda5` swap without
    /// a UUID.
    #[must_use]
    pub fn new(distro: &str, major: u32, minor: u32) -> Self {
        Self {
            distro: distro.to_owned(),
            major,
            minor,
            firmware: FirmwareKind::Bios,
            initramfs_generator: None,
            hypervisor_tools: vec![],
            devices: vec![
                ("/dev/sda".into(), "mbr".into(), None),
                (
                    "/dev/sda1".into(),
                    "ext4".into(),
                    Some("11111111-2222-3333-4444-555555555555".into()),
                ),
                (
                    "/dev/sda2".into(),
                    "ext4".into(),
                    Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
                ),
                ("/dev/sda5".into(), "swap".into(), None),
            ],
        }
    }
}

/// A report with one Linux OS on `/dev/sda1` made of `os`'s facts.
#[must_use]
pub fn synthetic_report(os: &SyntheticOs) -> Report {
    let generator = os.initramfs_generator.clone().or_else(|| {
        Some(
            match os.distro.as_str() {
                "debian" | "ubuntu" => "initramfs-tools",
                "sles" | "opensuse" if os.major < 13 => "mkinitrd",
                _ => "dracut",
            }
            .to_owned(),
        )
    });
    let devices = os
        .devices
        .iter()
        .map(|(name, content, uuid)| DeviceReport {
            name: name.clone(),
            partition: name
                .trim_start_matches("/dev/sd")
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .parse()
                .ok(),
            start: None,
            size: 1 << 30,
            part_type: None,
            part_uuid: None,
            part_label: None,
            content: content.clone(),
            uuid: uuid.clone(),
            label: None,
        })
        .collect();
    Report {
        schema_version: SCHEMA_VERSION,
        source: "synthetic".into(),
        format: "raw".into(),
        size: 8 << 30,
        partition_table: None,
        devices,
        firmware: Firmware {
            kind: os.firmware,
            evidence: vec![],
        },
        mbr_boot_code: BootCode::Grub2,
        bootloaders: vec![],
        operating_systems: vec![OsReport {
            root: "/dev/sda1".into(),
            os_type: "linux".into(),
            distro: os.distro.clone(),
            product_name: format!("{} {}.{}", os.distro, os.major, os.minor),
            product_variant: None,
            major_version: os.major,
            minor_version: os.minor,
            build_id: None,
            arch: Some("x86_64".into()),
            hostname: Some("guest".into()),
            package_format: None,
            package_management: None,
            osinfo: None,
            mountpoints: vec![],
            kernels: vec![],
            initramfs_generator: generator,
            network: vec![],
            hypervisor_tools: os.hypervisor_tools.clone(),
            windows: None,
        }],
        findings: vec![],
    }
}
