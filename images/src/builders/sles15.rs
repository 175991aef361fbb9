//! SLES 15 SP5 as migrated from Xen: GPT on BIOS (BIOS boot partition, GRUB in the protective
//! MBR), btrfs root made with `mkfs.btrfs --rootdir` (no subvolumes), swap, wicked ifcfg with
//! LLADDR, xe-guest-utilities, zstd-compressed modules, split /usr.

use super::linux::{self, KernelStyle, Usr};
use crate::error::Result;
use crate::expected::*;
use crate::plan::*;
use crate::tree::Tree;

/// This module's text, part of the cache key.
pub(crate) const SOURCE: &str = include_str!("sles15.rs");

const ROOT_UUID: &str = "1d6f3a8c-4e2b-4970-b5c1-8a3e7d0f2b94";
const SWAP_UUID: &str = "c7e2a4b9-0f13-4d68-92a5-6b1e8c3d7f20";
const KVER: &str = "5.14.21-150500.55.39-default";

/// What inspection must find.
pub(crate) static EXPECTED: Expected = Expected {
    name: "sles15-btrfs",
    os_type: "linux",
    distro: "sles",
    version_major: 15,
    version_minor: 5,
    product_name: "SUSE Linux Enterprise Server 15 SP5",
    osinfo: "sles15sp5",
    arch: "x86_64",
    hostname: "sles15-vm",
    package_format: Some("rpm"),
    package_manager: Some("zypper"),
    partition_table: "gpt",
    disk_id: "3E4F5061-7283-4495-A6B7-C8D9EAFB0C05",
    firmware: "bios",
    mbr_boot_code: "grub",
    bootloader: "grub2-bios",
    root_fs: "btrfs",
    root_location: "part2",
    filesystems: &[
        ExpectedFs {
            location: "part2",
            kind: "btrfs",
            uuid: ROOT_UUID,
            label: "",
        },
        ExpectedFs {
            location: "part3",
            kind: "swap",
            uuid: SWAP_UUID,
            label: "",
        },
    ],
    fstab: &[
        FstabEntry {
            spec: "UUID=1d6f3a8c-4e2b-4970-b5c1-8a3e7d0f2b94",
            mountpoint: "/",
            vfstype: "btrfs",
            resolves_to: "part2",
        },
        FstabEntry {
            spec: "UUID=c7e2a4b9-0f13-4d68-92a5-6b1e8c3d7f20",
            mountpoint: "swap",
            vfstype: "swap",
            resolves_to: "part3",
        },
    ],
    kernels: &[ExpectedKernel {
        version: KVER,
        vmlinuz: "/boot/vmlinuz-5.14.21-150500.55.39-default",
        initramfs: "/boot/initrd-5.14.21-150500.55.39-default",
        initramfs_generator: "dracut",
        virtio_modules: &["virtio_blk", "virtio_net", "virtio_scsi"],
        virtio_builtin: &["virtio_pci"],
        initramfs_has_virtio_blk: true,
    }],
    network: &[ExpectedNic {
        style: "wicked",
        interface: "eth0",
        mac: "00:16:3e:aa:bb:05",
        address: "192.168.10.15/24",
        gateway: "192.168.10.1",
        source: "/etc/sysconfig/network/ifcfg-eth0",
    }],
    hypervisor_tools: &["xe-guest-utilities"],
    windows: None,
};

const OS_RELEASE: &str = r#"NAME="SLES"
VERSION="15-SP5"
VERSION_ID="15.5"
PRETTY_NAME="SUSE Linux Enterprise Server 15 SP5"
ID="sles"
ID_LIKE="suse"
ANSI_COLOR="0;32"
CPE_NAME="cpe:/o:suse:sles:15:sp5"
DOCUMENTATION_URL="https://documentation.suse.com/"
"#;

/// The plan.
pub(crate) fn plan() -> Result<Plan> {
    let e = &EXPECTED;
    let nic = &e.network[0];
    let k = &e.kernels[0];
    let mut t = Tree::new();
    linux::skeleton(&mut t, Usr::Split, true);
    t.file("usr/lib/os-release", OS_RELEASE)
        .symlink("etc/os-release", "../usr/lib/os-release");
    t.file("etc/hostname", format!("{}\n", e.hostname));
    t.file(
        "etc/fstab",
        format!("UUID={ROOT_UUID}  /     btrfs  defaults  0  0\nUUID={SWAP_UUID}  swap  swap   defaults  0  0\n"),
    );
    t.file(
        "etc/sysconfig/network/ifcfg-eth0",
        format!(
            "BOOTPROTO='static'\nSTARTMODE='auto'\nIPADDR='{}'\nLLADDR='{}'\nZONE=''\n",
            nic.address, nic.mac
        ),
    );
    t.file(
        "etc/sysconfig/network/routes",
        format!("default {} - -\n", nic.gateway),
    );
    t.file(
        "etc/sysconfig/network/config",
        "NETCONFIG_MODULES_ORDER=\"dns-resolver dns-bind ntp-runtime\"\n",
    );
    t.file("etc/dracut.conf", "# PUT YOUR CONFIG IN separate files\n");
    t.file("etc/default/grub", "GRUB_DISTRIBUTOR=\"SLES15-SP5\"\nGRUB_DEFAULT=saved\nGRUB_CMDLINE_LINUX_DEFAULT=\"splash=silent mitigations=auto quiet\"\n");
    t.file("etc/zypp/zypp.conf", "[main]\n");
    t.dir("etc/zypp/repos.d");
    // rpm reads rpmrc, then the macros naming its database, from the guest (libguestfs runs
    // librpm chrooted into it); without both, inspection finds no readable database.
    t.file(
        "usr/lib/rpm/rpmrc",
        "arch_canon:\tx86_64:\tx86_64\t1\nos_canon:\tLinux:\tLinux\t1\n",
    );
    t.file(
        "usr/lib/rpm/macros",
        "%_usr\t/usr\n%_var\t/var\n%_dbpath\t%{_usr}/lib/sysimage/rpm\n%_db_backend\tsqlite\n",
    );
    t.rpmdb("usr/lib/sysimage/rpm/rpmdb.sqlite");
    t.symlink("var/lib/rpm", "../../usr/lib/sysimage/rpm");
    t.host("usr/sbin/xe-daemon", "/usr/bin/true", 0o755);
    linux::systemd_unit(
        &mut t,
        "usr/lib/systemd/system",
        "xe-linux-distribution.service",
        "/usr/sbin/xe-linux-distribution /var/cache/xe-linux-distribution",
        "Xen guest agent",
    );
    let mut boot = Tree::new();
    linux::kernel(
        &mut t,
        &mut boot,
        k,
        &KernelStyle {
            modules_dir: "lib/modules",
            module_suffix: ".ko.zst",
            compressor: Some(crate::tools::ZSTD),
            config_extra: "CONFIG_XEN=y\n",
            boot_prefix: "boot/",
        },
    )?;
    t.merge(boot);
    t.symlink("boot/vmlinuz", &format!("vmlinuz-{KVER}"))
        .symlink("boot/initrd", &format!("initrd-{KVER}"));
    t.file(
        "boot/grub2/grub.cfg",
        format!(
            "#\n# DO NOT EDIT THIS FILE\n#\nset default=\"${{saved_entry}}\"\ninsmod part_gpt\ninsmod btrfs\n\
             search --no-floppy --fs-uuid --set=root {ROOT_UUID}\n\
             menuentry 'SLES 15-SP5' --class sles --class gnu-linux --class gnu --class os {{\n\
             \tlinux\t/boot/vmlinuz-{KVER} root=UUID={ROOT_UUID} splash=silent mitigations=auto quiet\n\tinitrd\t/boot/initrd-{KVER}\n}}\n"
        ),
    );
    t.dir("boot/grub2/i386-pc");

    Ok(Plan {
        name: e.name,
        size_mib: 352,
        table: Table::Gpt {
            disk_guid: e.disk_id,
        },
        boot_code: BootCode::Grub,
        parts: vec![
            Part {
                number: 1,
                start_mib: 1,
                size_mib: 8,
                ptype: PartType::BiosBoot,
                name: "p.legacy",
                guid: "3E4F5061-7283-4495-A6B7-C8D9EAFB0C51",
                bootable: false,
                content: Content::Empty,
            },
            Part {
                number: 2,
                start_mib: 9,
                size_mib: 280,
                ptype: PartType::Linux,
                name: "p.lxroot",
                guid: "3E4F5061-7283-4495-A6B7-C8D9EAFB0C52",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Btrfs,
                    uuid: ROOT_UUID,
                    label: "",
                    tree: t,
                }),
            },
            Part {
                number: 3,
                start_mib: 289,
                size_mib: 62,
                ptype: PartType::Swap,
                name: "p.swap",
                guid: "3E4F5061-7283-4495-A6B7-C8D9EAFB0C53",
                bootable: false,
                content: Content::Swap { uuid: SWAP_UUID },
            },
        ],
    })
}
