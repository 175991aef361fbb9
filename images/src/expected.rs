//! The facts inspection must find on each image, as plain data. The builders write their files from
//! these same values, so the two cannot drift apart.
//!
//! Vocabulary (strings, so other crates compare without depending on this one's types):
//! - `location`: `partN` (partition number as the OS names it; 5+ are MBR logical partitions) or
//!   `lv:VG/LV`.
//! - filesystem kinds: `ext4`, `xfs`, `btrfs`, `vfat`, `ntfs`, `swap`, `lvm2-pv`.
//! - MACs are lowercase with colons; addresses are `a.b.c.d/prefix`.

/// One filesystem (or swap / LVM PV signature) on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedFs {
    /// `partN` or `lv:VG/LV`.
    pub location: &'static str,
    /// `ext4`, `xfs`, `btrfs`, `vfat`, `ntfs`, `swap` or `lvm2-pv`.
    pub kind: &'static str,
    /// Filesystem UUID as `blkid` prints it (vfat: `XXXX-XXXX`; NTFS and LVM PV: empty).
    pub uuid: &'static str,
    /// Volume label (empty if none).
    pub label: &'static str,
}

/// One `/etc/fstab` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FstabEntry {
    /// First field as written (`/dev/sda1`, `UUID=…`, `/dev/mapper/rhel-root`).
    pub spec: &'static str,
    /// Mount point (`none` for swap).
    pub mountpoint: &'static str,
    /// Filesystem type field.
    pub vfstype: &'static str,
    /// The `location` the spec resolves to, or empty when nothing on the disk matches (a CD-ROM).
    pub resolves_to: &'static str,
}

/// One installed Linux kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedKernel {
    /// `uname -r` version.
    pub version: &'static str,
    /// Guest path of the kernel image.
    pub vmlinuz: &'static str,
    /// Guest path of its initramfs.
    pub initramfs: &'static str,
    /// `initramfs-tools`, `dracut` or `mkinitrd`.
    pub initramfs_generator: &'static str,
    /// virtio drivers shipped as module files under `/lib/modules/VERSION`.
    pub virtio_modules: &'static [&'static str],
    /// virtio drivers built in (`CONFIG_…=y` in `/boot/config-VERSION`).
    pub virtio_builtin: &'static [&'static str],
    /// Whether the initramfs (an uncompressed newc cpio here) contains virtio_blk.
    pub initramfs_has_virtio_blk: bool,
}

/// One configured network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedNic {
    /// `ifupdown`, `netplan`, `networkmanager`, `ifcfg`, `wicked` or `windows-tcpip`.
    pub style: &'static str,
    /// Interface name (Windows: the interface GUID with braces).
    pub interface: &'static str,
    /// MAC pinned by the configuration (or by a udev rule for ifupdown), empty if none.
    pub mac: &'static str,
    /// Static address with prefix length.
    pub address: &'static str,
    /// Default gateway.
    pub gateway: &'static str,
    /// Guest file that holds the configuration (Windows: the registry key under the control set).
    pub source: &'static str,
}

/// Windows-only facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectedWindows {
    /// System root as a path on the C: filesystem.
    pub systemroot: &'static str,
    /// `CurrentVersion` (6.1, 6.3).
    pub current_version: &'static str,
    /// `CurrentBuildNumber`.
    pub build: &'static str,
    /// `EditionID`.
    pub edition_id: &'static str,
    /// `InstallationType`.
    pub installation_type: &'static str,
    /// The control set `Select\Current` points at.
    pub current_control_set: &'static str,
    /// Drive letters from `MountedDevices`, as (`C:`, location).
    pub drive_letters: &'static [(&'static str, &'static str)],
    /// Services present under the control set (storage, network, tools).
    pub services: &'static [&'static str],
    /// Boot-start (`Start` = 0) services among them.
    pub boot_start_services: &'static [&'static str],
    /// `hiberfil.sys` present with a hibernation header.
    pub hibernated: bool,
    /// `HiberbootEnabled` (Fast Startup).
    pub fast_startup: bool,
    /// Where the BCD hive is (`part1:/Boot/BCD`).
    pub bcd: &'static str,
    /// The default boot entry's loader path in the BCD.
    pub bcd_default_loader: &'static str,
}

/// Everything inspection must report for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Image name (as given to [`crate::build`]).
    pub name: &'static str,
    /// `linux` or `windows`.
    pub os_type: &'static str,
    /// `debian`, `rhel`, `ubuntu`, `sles` or `windows`.
    pub distro: &'static str,
    /// Major version.
    pub version_major: u32,
    /// Minor version.
    pub version_minor: u32,
    /// Product name (`PRETTY_NAME`, release file text, or `ProductName`).
    pub product_name: &'static str,
    /// osinfo-style short id (`debian12`, `rhel7.9`, `win2k19`).
    pub osinfo: &'static str,
    /// `x86_64`.
    pub arch: &'static str,
    /// Host name.
    pub hostname: &'static str,
    /// `deb` or `rpm` (None on Windows).
    pub package_format: Option<&'static str>,
    /// `apt`, `yum`, `dnf` or `zypper` (None on Windows).
    pub package_manager: Option<&'static str>,
    /// `mbr` or `gpt`.
    pub partition_table: &'static str,
    /// MBR disk signature (`0x1ee7c0de`) or GPT disk GUID (uppercase).
    pub disk_id: &'static str,
    /// `bios` or `uefi`.
    pub firmware: &'static str,
    /// MBR boot code: `grub`, `windows` or `none`.
    pub mbr_boot_code: &'static str,
    /// `grub2-bios`, `grub2-efi` or `windows-boot-manager`.
    pub bootloader: &'static str,
    /// Root filesystem kind.
    pub root_fs: &'static str,
    /// Root filesystem location.
    pub root_location: &'static str,
    /// Every filesystem / signature on the disk.
    pub filesystems: &'static [ExpectedFs],
    /// `/etc/fstab` lines (empty on Windows).
    pub fstab: &'static [FstabEntry],
    /// Installed kernels (empty on Windows).
    pub kernels: &'static [ExpectedKernel],
    /// Configured NICs.
    pub network: &'static [ExpectedNic],
    /// Hypervisor tools present: `open-vm-tools`, `vmware-tools`.
    pub hypervisor_tools: &'static [&'static str],
    /// Windows facts.
    pub windows: Option<ExpectedWindows>,
}
