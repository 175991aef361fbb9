//! Inspection: what is on a guest disk, read offline, without mounting or running anything.
//!
//! [`inspect`] walks a disk the way libguestfs's inspection does — partition table, LVM,
//! filesystems, then per root filesystem the operating system's identity — and adds what a
//! migration needs: firmware and bootloaders, kernels and their virtio drivers, network
//! configuration, hypervisor tools, Windows drivers, hibernation. Problems become
//! [`Finding`]s (house style S9); only an unreadable disk is an error.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! let disk = Arc::new(disk::MemDisk::zeroed(1 << 20)?);
//! let report = inspect::inspect(disk, "blank.img", "raw")?;
//! assert!(report.operating_systems.is_empty());
//! assert_eq!(report.devices[0].content, "unknown");
//! # Ok::<(), inspect::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod boot;
#[doc(hidden)]
pub mod fuzzing;
pub mod human;
pub mod linux;
pub mod report;
pub mod windows;

use std::collections::BTreeMap;
use std::sync::Arc;

use disk::partition::{self, PartitionTable, PartitionType, TableKind};
use disk::{BlockRead, BlockReadExt, SharedRead};
use guestfs::write::{FsWrite, WriteOptions};
use guestfs::{FsKind, FsRead, GuestPath, Mounts, MountsRw};

use linux::fstab::DeviceSpec;
use report::{BootCode, DeviceReport, Mountpoint, TableReport};
pub use report::{Finding, Report, Severity};

/// What can stop an inspection (everything else is a [`Finding`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The disk itself could not be read.
    #[error("cannot read the disk")]
    Disk(#[from] disk::Error),
    /// No readable filesystem is what the caller asked for.
    #[error("no readable filesystem is {wanted} (readable: {readable})")]
    NoFilesystem {
        /// What was asked for.
        wanted: String,
        /// The devices with a readable filesystem, comma separated.
        readable: String,
    },
    /// A filesystem of the guest could not be opened for writing (refused as unclean or
    /// hibernated, no writer for its type, or an LVM volume).
    #[error("cannot open {device} for writing")]
    Write {
        /// The device name.
        device: String,
        /// Why.
        #[source]
        source: guestfs::Error,
    },
}

/// Name of the inspected disk in device names, as libguestfs names its first disk.
const DISK_NAME: &str = "/dev/sda";

/// One block device found on the disk, with what it holds.
struct Device {
    report: DeviceReport,
    dev: SharedRead,
    fs: Option<Arc<dyn FsRead>>,
}

fn finding(code: &'static str, severity: Severity, location: &str, message: String) -> Finding {
    Finding {
        code,
        severity,
        location: Some(location.to_owned()),
        message,
    }
}

fn part_type_string(t: &PartitionType) -> String {
    match t {
        PartitionType::Mbr(b) => format!("{b:#04x}"),
        PartitionType::Gpt { type_guid } => type_guid.to_string(),
    }
}

/// Inspects the disk `dev`. `source` and `format` are echoed into the report.
///
/// # Errors
/// [`Error::Disk`] only if the first sector cannot be read; every other problem is a finding.
pub fn inspect(dev: SharedRead, source: &str, format: &str) -> Result<Report, Error> {
    let mut findings = Vec::new();
    let first: [u8; 512] = dev.read_array(0)?;

    let table = match partition::read_table(&*dev) {
        Ok(t) => Some(t),
        Err(e) => {
            findings.push(finding(
                "partition-table-corrupt",
                Severity::Warning,
                DISK_NAME,
                format!("partition table unreadable, treating the disk as unpartitioned: {e}"),
            ));
            None
        }
    };
    if let Some(t) = &table {
        for n in &t.notes {
            findings.push(finding(
                n.code,
                Severity::Warning,
                DISK_NAME,
                n.message.clone(),
            ));
        }
    }

    let devices = scan_devices(&dev, table.as_ref(), &mut findings);

    let part_ids: Vec<(String, u64, Option<String>)> = devices
        .iter()
        .filter_map(|d| {
            Some((
                d.report.name.clone(),
                d.report.start?,
                d.report.part_uuid.clone(),
            ))
        })
        .collect();
    let disk_ids = windows::DiskIds {
        mbr_signature: table.as_ref().and_then(|t| t.mbr_disk_signature),
        partitions: &part_ids,
    };

    let mut oses = Vec::new();
    let mut bootloaders = Vec::new();
    for d in &devices {
        let Some(fs) = &d.fs else { continue };
        let name = &d.report.name;
        if linux::is_linux_root(fs.as_ref()) {
            let (mounts, mountpoints) = linux_mounts(fs.clone(), &devices, name, &mut findings);
            let mut os = linux::inspect_linux(&mounts, name, &mut findings);
            os.mountpoints = mountpoints;
            bootloaders.extend(boot::linux_bootloaders(&mounts, name));
            oses.push(os);
        } else if let Some(mut os) =
            windows::inspect_windows(fs.as_ref(), name, &disk_ids, &mut findings)
        {
            if let Some(w) = &mut os.windows {
                w.ntfs_dirty = ntfs_dirty(&d.dev);
                if w.ntfs_dirty {
                    findings.push(finding(
                        "ntfs-dirty",
                        Severity::Error,
                        name,
                        "the NTFS volume is marked dirty; run chkdsk in Windows before converting"
                            .into(),
                    ));
                }
            }
            oses.push(os);
        } else if d.report.content == "vfat" || d.report.content == "ntfs" {
            bootloaders.extend(boot::esp_bootloaders(fs.as_ref(), name));
            bootloaders.extend(boot::windows_bios_bootloader(fs.as_ref(), name));
        }
    }
    if oses.is_empty() {
        findings.push(Finding {
            code: "no-os-found",
            severity: Severity::Warning,
            location: None,
            message: "no operating system root filesystem was found".into(),
        });
    }

    let code = first
        .get(..440)
        .map_or(BootCode::None, boot::classify_boot_code);
    let code = if table.as_ref().is_some_and(|t| t.kind == TableKind::None) {
        BootCode::None
    } else {
        code
    };
    let firmware = boot::firmware(table.as_ref(), code, &bootloaders);

    Ok(Report {
        schema_version: report::SCHEMA_VERSION,
        source: source.to_owned(),
        format: format.to_owned(),
        size: dev.size(),
        partition_table: table.as_ref().and_then(|t| match t.kind {
            TableKind::None => None,
            k => Some(TableReport {
                kind: if k == TableKind::Gpt { "gpt" } else { "mbr" }.into(),
                sector_size: t.sector_size,
                mbr_signature: t.mbr_disk_signature.map(|s| format!("{s:08x}")),
                disk_guid: t.disk_guid.map(|g| g.to_string()),
            }),
        }),
        devices: devices.into_iter().map(|d| d.report).collect(),
        firmware,
        mbr_boot_code: code,
        bootloaders,
        operating_systems: oses,
        findings,
    })
}

/// Partitions, logical volumes and their filesystems, probed and opened.
fn scan_devices(
    dev: &SharedRead,
    table: Option<&PartitionTable>,
    findings: &mut Vec<Finding>,
) -> Vec<Device> {
    let mut devices = partition_devices(dev, table, findings);
    add_lvm_devices(&mut devices, findings);
    for d in &mut devices {
        probe_and_open(d, findings);
    }
    devices
}

/// A guest's files as the guest sees them: its root filesystem with fstab's mounts applied
/// (Linux), or the system volume (Windows), or the one filesystem chosen by device name.
pub struct GuestView {
    /// The device whose filesystem is `/`.
    pub root: String,
    /// The filesystem tree.
    pub fs: Mounts,
    /// Names of every device with a readable filesystem, for error messages and `--device`.
    pub devices: Vec<String>,
}

/// Opens the guest's files for reading. With `device`, that device's filesystem alone is `/`;
/// otherwise the first operating system root found, with its mounts.
///
/// # Errors
/// [`Error::Disk`] if the disk cannot be read; [`Error::NoFilesystem`] if no readable
/// filesystem matches.
pub fn guest_view(dev: SharedRead, device: Option<&str>) -> Result<GuestView, Error> {
    let _: [u8; 512] = dev.read_array(0)?;
    let mut findings = Vec::new();
    let table = partition::read_table(&*dev).ok();
    let devices = scan_devices(&dev, table.as_ref(), &mut findings);
    let (root, readable, mounts) = choose_root(&devices, device, &mut findings)?;
    Ok(GuestView {
        root,
        fs: mounts,
        devices: readable,
    })
}

/// The root device chosen as [`guest_view`] documents, the readable devices, and the read-only
/// mount table.
fn choose_root(
    devices: &[Device],
    device: Option<&str>,
    findings: &mut Vec<Finding>,
) -> Result<(String, Vec<String>, Mounts), Error> {
    let readable: Vec<String> = devices
        .iter()
        .filter(|d| d.fs.is_some())
        .map(|d| d.report.name.clone())
        .collect();
    let chosen = devices.iter().find(|d| {
        let Some(fs) = &d.fs else { return false };
        match device {
            Some(name) => d.report.name == name,
            None => linux::is_linux_root(fs.as_ref()) || windows::systemroot(fs.as_ref()).is_some(),
        }
    });
    let Some(d) = chosen else {
        return Err(Error::NoFilesystem {
            wanted: device.map_or_else(|| "an operating system root".to_owned(), str::to_owned),
            readable: readable.join(", "),
        });
    };
    let root = d.report.name.clone();
    let fs = d.fs.clone().ok_or_else(|| Error::NoFilesystem {
        wanted: root.clone(),
        readable: readable.join(", "),
    })?;
    let mounts = if device.is_none() && linux::is_linux_root(fs.as_ref()) {
        linux_mounts(fs, devices, &root, findings).0
    } else {
        Mounts::new(fs)
    };
    Ok((root, readable, mounts))
}

/// A guest's files opened for writing: the twin of [`GuestView`].
pub struct GuestViewRw {
    /// The device whose filesystem is `/`.
    pub root: String,
    /// The writable filesystem tree, with fstab's mounts applied (Linux).
    pub fs: MountsRw,
    /// `(mountpoint, device)` of every filesystem opened for writing, `/` first.
    pub mounted: Vec<(GuestPath, String)>,
    /// Names of every device with a readable filesystem.
    pub devices: Vec<String>,
}

/// Opens the guest's files for writing, choosing the root as [`guest_view`] does. Every
/// filesystem in the mount table is opened with [`guestfs::open_rw`]; a device mounted twice is
/// opened once. `dev` should be a `disk::txn::Transaction` (or an overlay) so the writes can be
/// undone.
///
/// # Errors
/// As [`guest_view`]; [`Error::Write`] when a mounted filesystem cannot be opened for writing
/// (unclean, hibernated, a type without a writer, or on an LVM volume, which we do not write yet).
pub fn guest_view_rw(
    dev: Arc<dyn disk::BlockWrite>,
    device: Option<&str>,
    opts: WriteOptions,
) -> Result<GuestViewRw, Error> {
    let read: SharedRead = dev.clone();
    let _: [u8; 512] = read.read_array(0)?;
    let mut findings = Vec::new();
    let table = partition::read_table(&*read).ok();
    let devices = scan_devices(&read, table.as_ref(), &mut findings);
    let (root, readable, ro) = choose_root(&devices, device, &mut findings)?;
    let mut wanted: Vec<(GuestPath, String)> = vec![(GuestPath::root(), root.clone())];
    if device.is_none() {
        let root_fs = devices
            .iter()
            .find(|d| d.report.name == root)
            .and_then(|d| d.fs.clone());
        if let Some(fs) = root_fs.filter(|fs| linux::is_linux_root(fs.as_ref())) {
            for mp in linux_mounts(fs, &devices, &root, &mut findings).1 {
                let (Some(name), Ok(at)) = (mp.device, GuestPath::parse(mp.path.as_bytes())) else {
                    continue;
                };
                let readable_fs = devices
                    .iter()
                    .any(|d| d.report.name == name && d.fs.is_some());
                if !at.is_root() && readable_fs && ro.mountpoints().any(|p| *p == at) {
                    wanted.push((at, name));
                }
            }
        }
    }
    // The read-only backends must not outlive this point: the writers below own the devices.
    drop(ro);
    drop(devices);
    let mut opened: Vec<(String, Arc<dyn FsWrite>)> = Vec::new();
    let mut open = |name: &str| -> Result<Arc<dyn FsWrite>, Error> {
        if let Some((_, fs)) = opened.iter().find(|(n, _)| n == name) {
            return Ok(fs.clone());
        }
        let wrap = |source| Error::Write {
            device: name.to_owned(),
            source,
        };
        let wdev = writable_device(&dev, table.as_ref(), name).map_err(wrap)?;
        let fs = guestfs::open_rw(wdev, opts).map_err(wrap)?;
        opened.push((name.to_owned(), fs.clone()));
        Ok(fs)
    };
    let mut fs = MountsRw::new(open(&root)?);
    for (at, name) in wanted.iter().skip(1) {
        fs.mount(at.clone(), open(name)?);
    }
    Ok(GuestViewRw {
        root,
        fs,
        mounted: wanted,
        devices: readable,
    })
}

/// The writable block device behind a device name of [`scan_devices`].
fn writable_device(
    dev: &Arc<dyn disk::BlockWrite>,
    table: Option<&PartitionTable>,
    name: &str,
) -> Result<Arc<dyn disk::BlockWrite>, guestfs::Error> {
    if name == DISK_NAME {
        return Ok(dev.clone());
    }
    let part = name
        .strip_prefix(DISK_NAME)
        .and_then(|n| n.parse::<u32>().ok())
        .and_then(|n| {
            table?
                .partitions
                .iter()
                .find(|p| p.number == n && !p.is_extended())
        });
    match part {
        Some(p) => Ok(Arc::new(disk::Slice::new(dev.clone(), p.start, p.len)?)),
        None => Err(guestfs::Error::unsupported(
            "filesystem writing",
            format!("{name} is not a partition of this disk (LVM volumes are not written yet)"),
        )),
    }
}

fn blank_report(name: String, size: u64) -> DeviceReport {
    DeviceReport {
        name,
        partition: None,
        start: None,
        size,
        part_type: None,
        part_uuid: None,
        part_label: None,
        content: "unknown".into(),
        uuid: None,
        label: None,
    }
}

fn partition_devices(
    dev: &SharedRead,
    table: Option<&PartitionTable>,
    findings: &mut Vec<Finding>,
) -> Vec<Device> {
    let parts: Vec<_> = table
        .map(|t| t.partitions.iter().filter(|p| !p.is_extended()).collect())
        .unwrap_or_default();
    if parts.is_empty() {
        return vec![Device {
            report: blank_report(DISK_NAME.to_owned(), dev.size()),
            dev: dev.clone(),
            fs: None,
        }];
    }
    let mut out = Vec::new();
    for p in parts {
        let name = format!("{DISK_NAME}{}", p.number);
        let view: SharedRead = match p.view(dev.clone()) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                findings.push(finding(
                    "partition-out-of-range",
                    Severity::Warning,
                    &name,
                    format!("partition cannot be read: {e}"),
                ));
                continue;
            }
        };
        let mut r = blank_report(name, p.len);
        r.partition = Some(p.number);
        r.start = Some(p.start);
        r.part_type = Some(part_type_string(&p.kind));
        r.part_uuid.clone_from(&p.part_uuid);
        r.part_label.clone_from(&p.name);
        out.push(Device {
            report: r,
            dev: view,
            fs: None,
        });
    }
    out
}

fn add_lvm_devices(devices: &mut Vec<Device>, findings: &mut Vec<Finding>) {
    let pvs: Vec<SharedRead> = devices
        .iter()
        .filter(|d| matches!(guestfs::probe(&*d.dev), Ok(p) if p.kind == FsKind::LvmPv))
        .map(|d| d.dev.clone())
        .collect();
    if pvs.is_empty() {
        return;
    }
    let scan = match disk::lvm::scan(&pvs) {
        Ok(s) => s,
        Err(e) => {
            findings.push(Finding {
                code: "lvm-unreadable",
                severity: Severity::Warning,
                location: None,
                message: format!("LVM metadata cannot be read: {e}"),
            });
            return;
        }
    };
    for n in &scan.notes {
        findings.push(Finding {
            code: n.code,
            severity: Severity::Warning,
            location: None,
            message: n.message.clone(),
        });
    }
    let lvs: Vec<(String, String)> = scan
        .lvs()
        .filter(|(_, lv)| lv.visible())
        .map(|(vg, lv)| (vg.name.clone(), lv.name.clone()))
        .collect();
    for (vg, lv) in lvs {
        let name = format!("/dev/{vg}/{lv}");
        match scan.open_lv(&vg, &lv) {
            Ok(d) => devices.push(Device {
                report: blank_report(name, d.size()),
                dev: d,
                fs: None,
            }),
            Err(e) => findings.push(finding(
                "lvm-lv-unsupported",
                Severity::Warning,
                &name,
                format!("logical volume cannot be opened: {e}"),
            )),
        }
    }
}

fn probe_and_open(d: &mut Device, findings: &mut Vec<Finding>) {
    let name = d.report.name.clone();
    let probe = match guestfs::probe(&*d.dev) {
        Ok(p) => p,
        Err(e) => {
            findings.push(finding(
                "probe-failed",
                Severity::Warning,
                &name,
                format!("cannot probe: {e}"),
            ));
            return;
        }
    };
    d.report.content = probe.kind.blkid_name().to_owned();
    d.report.uuid = probe.uuid.clone();
    d.report.label = probe.label.clone();
    if !probe.kind.is_readable() {
        if matches!(
            probe.kind,
            FsKind::Btrfs | FsKind::Luks | FsKind::BitLocker | FsKind::MdRaid
        ) {
            findings.push(finding(
                "fs-unsupported",
                Severity::Warning,
                &name,
                format!(
                    "{} found; reading it is not supported",
                    probe.kind.blkid_name()
                ),
            ));
        }
        return;
    }
    match guestfs::open(d.dev.clone()) {
        Ok(fs) => d.fs = Some(Arc::from(fs)),
        Err(e) => findings.push(finding(
            "fs-unreadable",
            Severity::Warning,
            &name,
            format!("{} filesystem cannot be read: {e}", probe.kind.blkid_name()),
        )),
    }
}

/// Which device an fstab specification names, among the devices found.
fn resolve_spec<'a>(spec: &DeviceSpec, devices: &'a [Device]) -> Option<&'a Device> {
    let eq = |a: &Option<String>, b: &str| a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(b));
    devices.iter().find(|d| match spec {
        DeviceSpec::Uuid(u) => eq(&d.report.uuid, u),
        DeviceSpec::Label(l) => d.report.label.as_deref() == Some(l.as_str()),
        DeviceSpec::PartUuid(u) => eq(&d.report.part_uuid, u),
        DeviceSpec::PartLabel(l) => d.report.part_label.as_deref() == Some(l.as_str()),
        DeviceSpec::KernelName(k) => {
            // Only the first disk is inspected: sda1, vda1, xvda1, hda1, nvme0n1p1 all name it.
            linux::fstab::kernel_name_parts(k)
                .is_some_and(|(disk, part)| disk == 0 && d.report.partition == Some(part))
                || (d.report.partition.is_none() && d.report.name == *k)
        }
        DeviceSpec::Lvm { vg, lv } => d.report.name == format!("/dev/{vg}/{lv}"),
        DeviceSpec::Other(_) | DeviceSpec::Pseudo(_) => false,
    })
}

fn linux_mounts(
    root: Arc<dyn FsRead>,
    devices: &[Device],
    root_name: &str,
    findings: &mut Vec<Finding>,
) -> (Mounts, Vec<Mountpoint>) {
    let mut mounts = Mounts::new(root.clone());
    let entries = linux::read_text(root.as_ref(), "/etc/fstab")
        .map(|t| linux::fstab::parse(&t))
        .unwrap_or_default();
    let mut mps = Vec::new();
    // Mount shallow paths first so deeper ones land inside them.
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort_by_key(|e| e.mountpoint.matches('/').count());
    let mut resolved: BTreeMap<usize, String> = BTreeMap::new();
    for e in sorted {
        let dev = resolve_spec(&e.spec, devices);
        if let Some(d) = dev {
            resolved.insert(e.line, d.report.name.clone());
        }
        if !e.mountpoint.starts_with('/') || e.fstype == "swap" {
            continue;
        }
        match dev {
            Some(d) if e.mountpoint != "/" => {
                // A mountpoint that normalises to "/" ("/etc/..") must not replace the root.
                if let (Some(fs), Ok(at)) = (&d.fs, GuestPath::parse(e.mountpoint.as_bytes()))
                    && !at.is_root()
                {
                    mounts.mount(at, fs.clone());
                }
            }
            Some(_) => {}
            None if matches!(e.spec, DeviceSpec::Pseudo(_))
                || is_removable(&e.spec_raw, &e.options) => {}
            None => findings.push(finding(
                "fstab-unresolved",
                Severity::Warning,
                &format!("{root_name}:/etc/fstab:{}", e.line),
                format!(
                    "fstab device {} for {} is not on this disk",
                    e.spec_raw, e.mountpoint
                ),
            )),
        }
    }
    for e in entries {
        if e.mountpoint.starts_with('/') || e.fstype == "swap" {
            mps.push(Mountpoint {
                path: e.mountpoint.clone(),
                device: resolved.get(&e.line).cloned(),
                fstab: e,
            });
        }
    }
    (mounts, mps)
}

/// CD-ROMs, floppies and `noauto` entries are not expected on the disk.
fn is_removable(spec: &str, options: &str) -> bool {
    ["/dev/sr", "/dev/scd", "/dev/cdrom", "/dev/fd", "/dev/dvd"]
        .iter()
        .any(|p| spec.starts_with(p))
        || options.split(',').any(|o| o == "noauto")
}

/// The NTFS dirty bit of the volume on `dev` (false when it cannot be read).
fn ntfs_dirty(dev: &SharedRead) -> bool {
    guestfs::ntfs::NtfsFs::open(dev.clone())
        .ok()
        .is_some_and(|n| n.volume_flags().dirty)
}
