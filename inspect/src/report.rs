//! What inspection returns: plain data with a stable JSON form (schema in
//! `inspect/schema/report.schema.json`) and a human rendering.

use serde::Serialize;

use crate::linux::fstab::FstabEntry;
use crate::linux::network::NetIface;

/// Version of the JSON report format. Bump on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is wrong.
    Info,
    /// Something is damaged, unusual or could not be read; inspection went on.
    Warning,
    /// Something that will stop a fixup or a boot.
    Error,
}

/// A problem or notable fact met during inspection (house style S9). Tests and recipes match on
/// [`Finding::code`], never on the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable machine-readable code, such as `fs-unreadable` or `gpt-backup-used`.
    pub code: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// Where: a device (`/dev/sda2`), a guest file (`/dev/sda1:/etc/fstab`), a hive key.
    pub location: Option<String>,
    /// One line for a person.
    pub message: String,
}

/// A whole inspection.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What was inspected (path or URI).
    pub source: String,
    /// Image format (`raw`, `qcow2`, `nbd`).
    pub format: String,
    /// Virtual size in bytes.
    pub size: u64,
    /// The partition table, if any.
    pub partition_table: Option<TableReport>,
    /// Every block device found: whole disk, partitions, logical volumes.
    pub devices: Vec<DeviceReport>,
    /// Boot firmware the disk is set up for.
    pub firmware: Firmware,
    /// What the MBR boot code is.
    pub mbr_boot_code: BootCode,
    /// Bootloaders found on the disk.
    pub bootloaders: Vec<Bootloader>,
    /// Operating systems found, one per root filesystem.
    pub operating_systems: Vec<OsReport>,
    /// Problems and notable facts.
    pub findings: Vec<Finding>,
}

/// The partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableReport {
    /// `mbr` or `gpt`.
    pub kind: String,
    /// Logical sector size used.
    pub sector_size: u32,
    /// MBR disk signature, as 8 hex digits.
    pub mbr_signature: Option<String>,
    /// GPT disk GUID.
    pub disk_guid: Option<String>,
}

/// A block device and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// libguestfs-style name: `/dev/sda`, `/dev/sda1`, `/dev/VG/LV`.
    pub name: String,
    /// Partition number, for partitions.
    pub partition: Option<u32>,
    /// Byte offset on the disk (partitions only).
    pub start: Option<u64>,
    /// Size in bytes.
    pub size: u64,
    /// Partition type: MBR type byte as `0x83`, or GPT type GUID.
    pub part_type: Option<String>,
    /// GPT partition GUID (PARTUUID).
    pub part_uuid: Option<String>,
    /// GPT partition name.
    pub part_label: Option<String>,
    /// Filesystem or content (`ext4`, `ntfs`, `vfat`, `xfs`, `swap`, `LVM2_member`, ...).
    pub content: String,
    /// Filesystem UUID as blkid prints it.
    pub uuid: Option<String>,
    /// Filesystem label.
    pub label: Option<String>,
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Uefi,
    /// Both are set up (a GPT disk with a BIOS boot partition and an ESP, a hybrid MBR ...).
    Both,
    /// Nothing bootable found.
    Unknown,
}

/// Firmware with the evidence for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Firmware {
    /// The verdict.
    pub kind: FirmwareKind,
    /// Why, in a few words each.
    pub evidence: Vec<String>,
}

/// What the first 440 bytes of the disk are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootCode {
    /// GRUB 2's boot.img.
    Grub2,
    /// GRUB legacy stage1.
    GrubLegacy,
    /// Windows (Vista and later) MBR code.
    Windows,
    /// syslinux/extlinux mbr.bin.
    Syslinux,
    /// All zeroes.
    None,
    /// Something else.
    Other,
}

/// A bootloader installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bootloader {
    /// `grub2-bios`, `grub2-efi`, `grub-legacy`, `systemd-boot`, `extlinux`, `windows-bootmgr`,
    /// `windows-bootmgr-efi`, `shim`.
    pub kind: String,
    /// Device holding it.
    pub device: String,
    /// Its configuration file, if found.
    pub config: Option<String>,
    /// Boot entries (titles), in order, where we could read them.
    pub entries: Vec<String>,
    /// The default entry, if known.
    pub default_entry: Option<String>,
    /// The default entry's loader (Windows: the BCD `ApplicationPath`, `\\Windows\\system32\\winload.exe`).
    pub default_loader: Option<String>,
}

/// One installed Linux kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelReport {
    /// Version string (`6.1.0-18-amd64`).
    pub version: String,
    /// Path of the kernel image.
    pub path: String,
    /// Path of its initramfs, if found.
    pub initramfs: Option<String>,
    /// `/lib/modules/VERSION` exists.
    pub has_modules: bool,
    /// Virtio driver availability by name (`virtio_blk`, ...): `builtin`, `module` or `missing`.
    pub virtio: Vec<(String, String)>,
}

/// One mountpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mountpoint {
    /// Where it is mounted.
    pub path: String,
    /// The device we resolved it to, if any.
    pub device: Option<String>,
    /// The fstab entry.
    pub fstab: FstabEntry,
}

/// Windows-specific facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct WindowsReport {
    /// `/Windows` or `/WINNT`, as found on the filesystem.
    pub systemroot: String,
    /// `ControlSet001` ...
    pub current_control_set: Option<String>,
    /// EditionID (`ServerStandard`).
    pub edition: Option<String>,
    /// InstallationType (`Server`, `Client`, `Server Core`).
    pub installation_type: Option<String>,
    /// Drive letter → device.
    pub drive_mappings: Vec<(String, String)>,
    /// Storage and network drivers with their start type.
    pub drivers: Vec<WindowsDriver>,
    /// `hiberfil.sys` holds a hibernation image (or Fast Startup).
    pub hibernated: bool,
    /// Fast Startup is enabled (`Session Manager\\Power\\HiberbootEnabled` = 1): a shutdown from
    /// Windows hibernates the kernel session, so volumes may be left in use.
    pub fast_startup: bool,
    /// The system volume's NTFS dirty bit is set.
    pub ntfs_dirty: bool,
}

/// A Windows service entry for a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowsDriver {
    /// Service name (`viostor`).
    pub name: String,
    /// Start value: 0 boot, 1 system, 2 automatic, 3 manual, 4 disabled.
    pub start: Option<u32>,
    /// What it drives: `storage`, `network`, `hypervisor-tools`, `boot` (another boot-start
    /// service), `other`.
    pub role: String,
    /// ImagePath.
    pub image_path: Option<String>,
}

/// One operating system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OsReport {
    /// The root filesystem's device.
    pub root: String,
    /// `linux` or `windows`.
    pub os_type: String,
    /// libguestfs distro name.
    pub distro: String,
    /// Product name.
    pub product_name: String,
    /// Variant (`Server`, `Client`, os-release VARIANT).
    pub product_variant: Option<String>,
    /// Major version.
    pub major_version: u32,
    /// Minor version.
    pub minor_version: u32,
    /// Build id (Windows build number).
    pub build_id: Option<String>,
    /// `x86_64`, `i386`, `aarch64`, ...
    pub arch: Option<String>,
    /// Hostname.
    pub hostname: Option<String>,
    /// `deb`, `rpm`, ...
    pub package_format: Option<String>,
    /// `apt`, `yum`, `dnf`, `zypper`, ...
    pub package_management: Option<String>,
    /// osinfo short id (`debian12`, `rhel9.4`, `win2k19`).
    pub osinfo: Option<String>,
    /// Mountpoints from fstab.
    pub mountpoints: Vec<Mountpoint>,
    /// Installed kernels (Linux).
    pub kernels: Vec<KernelReport>,
    /// The initramfs generator (`dracut`, `initramfs-tools`, `mkinitrd`).
    pub initramfs_generator: Option<String>,
    /// Configured network interfaces.
    pub network: Vec<NetIface>,
    /// Hypervisor guest tools present (`open-vm-tools`, `hyperv-daemons`, ...).
    pub hypervisor_tools: Vec<String>,
    /// Windows facts.
    pub windows: Option<WindowsReport>,
}
