//! Ubuntu 22.04 on UEFI, as migrated from Hyper-V: GPT with an ESP (shim + GRUB under
//! EFI/ubuntu), ext4 root, netplan with a MAC match, initramfs-tools, virtio built into the kernel,
//! Hyper-V daemons.

use super::linux::{self, KernelStyle, Usr};
use crate::error::Result;
use crate::expected::*;
use crate::plan::*;
use crate::synth;
use crate::tree::Tree;

/// This module's text, part of the cache key.
pub(crate) const SOURCE: &str = include_str!("ubuntu2204.rs");

const ESP_UUID: &str = "4C1A-7E93";
const ROOT_UUID: &str = "f03b8d2e-91a6-4c57-b3e0-5d8c2a7f1e46";
const KVER: &str = "5.15.0-105-generic";

/// What inspection must find.
pub(crate) static EXPECTED: Expected = UBUNTU;

/// The same guest on an MBR disk whose ESP is a type-0xEF partition (UEFI firmware boots it; some
/// hypervisors' converters produce this layout).
pub(crate) static EXPECTED_MBR: Expected = Expected {
    name: "ubuntu2204-mbr-uefi",
    partition_table: "mbr",
    disk_id: "0x22040e0f",
    ..UBUNTU
};

const UBUNTU: Expected = Expected {
    name: "ubuntu2204-uefi",
    os_type: "linux",
    distro: "ubuntu",
    version_major: 22,
    version_minor: 4,
    product_name: "Ubuntu 22.04.4 LTS",
    osinfo: "ubuntu22.04",
    arch: "x86_64",
    hostname: "ubuntu2204-vm",
    package_format: Some("deb"),
    package_manager: Some("apt"),
    partition_table: "gpt",
    disk_id: "7D1E2F30-4A5B-4C6D-8E7F-90A1B2C3D404",
    firmware: "uefi",
    mbr_boot_code: "none",
    bootloader: "grub2-efi",
    root_fs: "ext4",
    root_location: "part2",
    filesystems: &[
        ExpectedFs {
            location: "part1",
            kind: "vfat",
            uuid: ESP_UUID,
            label: "",
        },
        ExpectedFs {
            location: "part2",
            kind: "ext4",
            uuid: ROOT_UUID,
            label: "cloudimg-rootfs",
        },
    ],
    fstab: &[
        FstabEntry {
            spec: "UUID=f03b8d2e-91a6-4c57-b3e0-5d8c2a7f1e46",
            mountpoint: "/",
            vfstype: "ext4",
            resolves_to: "part2",
        },
        FstabEntry {
            spec: "UUID=4C1A-7E93",
            mountpoint: "/boot/efi",
            vfstype: "vfat",
            resolves_to: "part1",
        },
        FstabEntry {
            spec: "/swap.img",
            mountpoint: "none",
            vfstype: "swap",
            resolves_to: "",
        },
    ],
    kernels: &[ExpectedKernel {
        version: KVER,
        vmlinuz: "/boot/vmlinuz-5.15.0-105-generic",
        initramfs: "/boot/initrd.img-5.15.0-105-generic",
        initramfs_generator: "initramfs-tools",
        virtio_modules: &[],
        virtio_builtin: &["virtio_blk", "virtio_net", "virtio_scsi", "virtio_pci"],
        initramfs_has_virtio_blk: false,
    }],
    network: &[ExpectedNic {
        style: "netplan",
        interface: "ens192",
        mac: "00:50:56:aa:bb:04",
        address: "192.168.10.14/24",
        gateway: "192.168.10.1",
        source: "/etc/netplan/50-cloud-init.yaml",
    }],
    hypervisor_tools: &["hyperv-daemons"],
    windows: None,
};

const OS_RELEASE: &str = r#"PRETTY_NAME="Ubuntu 22.04.4 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.4 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=jammy
"#;

/// The plan.
pub(crate) fn plan() -> Result<Plan> {
    plan_for(&EXPECTED)
}

/// The plan of the MBR variant.
pub(crate) fn plan_mbr() -> Result<Plan> {
    plan_for(&EXPECTED_MBR)
}

fn plan_for(e: &'static Expected) -> Result<Plan> {
    let nic = &e.network[0];
    let k = &e.kernels[0];
    let mut t = Tree::new();
    linux::skeleton(&mut t, Usr::Merged, false);
    t.dir("boot/efi");
    t.file("usr/lib/os-release", OS_RELEASE)
        .symlink("etc/os-release", "../usr/lib/os-release");
    t.file("etc/lsb-release", "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.4 LTS\"\n");
    t.file("etc/debian_version", "bookworm/sid\n");
    t.file("etc/hostname", format!("{}\n", e.hostname));
    t.file(
        "etc/fstab",
        format!(
            "UUID={ROOT_UUID}\t/\t ext4\tdiscard,errors=remount-ro\t0 1\n\
             UUID={ESP_UUID}\t/boot/efi\tvfat\tumask=0077\t0 1\n/swap.img\tnone\tswap\tsw\t0\t0\n"
        ),
    );
    t.file_mode(
        "etc/netplan/50-cloud-init.yaml",
        format!(
            "# This file is generated from information provided by the datasource.  Changes\n# to it will not persist across an instance reboot.\n\
             network:\n    ethernets:\n        {i}:\n            addresses:\n            - {a}\n            match:\n                macaddress: {mac}\n\
             \x20           nameservers:\n                addresses:\n                - {g}\n            routes:\n            -   to: default\n\
             \x20               via: {g}\n            set-name: {i}\n    version: 2\n",
            i = nic.interface,
            a = nic.address,
            mac = nic.mac,
            g = nic.gateway
        ),
        0o600,
    );
    t.file(
        "etc/initramfs-tools/initramfs.conf",
        "MODULES=most\nBUSYBOX=auto\nCOMPRESS=zstd\n",
    );
    t.file("etc/default/grub", "GRUB_DEFAULT=0\nGRUB_TIMEOUT_STYLE=hidden\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n");
    let mut boot = Tree::new();
    linux::kernel(
        &mut t,
        &mut boot,
        k,
        &KernelStyle {
            modules_dir: "usr/lib/modules",
            module_suffix: ".ko",
            compressor: None,
            config_extra: "CONFIG_HYPERV=y\n",
            boot_prefix: "boot/",
        },
    )?;
    t.merge(boot);
    t.symlink("boot/vmlinuz", &format!("vmlinuz-{KVER}"))
        .symlink("boot/initrd.img", &format!("initrd.img-{KVER}"));
    t.file(
        "boot/grub/grub.cfg",
        format!(
            "#\n# DO NOT EDIT THIS FILE\n#\nset default=\"0\"\ninsmod part_gpt\ninsmod ext2\nsearch --no-floppy --fs-uuid --set=root {ROOT_UUID}\n\
             menuentry 'Ubuntu' --class ubuntu --class gnu-linux --class gnu --class os {{\n\
             \tlinux\t/boot/vmlinuz-{KVER} root=UUID={ROOT_UUID} ro quiet splash\n\tinitrd\t/boot/initrd.img-{KVER}\n}}\n"
        ),
    );
    t.dir("boot/grub/x86_64-efi");
    t.host("usr/sbin/hv_kvp_daemon", "/usr/bin/true", 0o755);
    linux::systemd_unit(
        &mut t,
        "usr/lib/systemd/system",
        "hv-kvp-daemon.service",
        "/usr/sbin/hv_kvp_daemon -n",
        "Hyper-V KVP Protocol Daemon",
    );
    t.file(
        "var/lib/dpkg/status",
        linux::dpkg_status(&[
            ("base-files", "12ubuntu4.6"),
            ("dash", "0.5.11+git20210903+057cd650a4ed-3build1"),
            ("netplan.io", "0.106.1-7ubuntu0.22.04.2"),
            ("initramfs-tools", "0.140ubuntu13.4"),
            ("grub-efi-amd64-signed", "1.187.6+2.06-2ubuntu14.4"),
            ("shim-signed", "1.51.3+15.7-0ubuntu1"),
            ("linux-image-5.15.0-105-generic", "5.15.0-105.115"),
            ("linux-cloud-tools-common", "5.15.0-105.115"),
        ]),
    );

    let mut esp = Tree::new();
    let efi = synth::SUBSYSTEM_EFI_APPLICATION;
    esp.file("EFI/ubuntu/shimx64.efi", synth::pe64(efi, "shimx64.efi"));
    esp.file("EFI/ubuntu/grubx64.efi", synth::pe64(efi, "grubx64.efi"));
    esp.file("EFI/ubuntu/mmx64.efi", synth::pe64(efi, "mmx64.efi"));
    esp.file(
        "EFI/ubuntu/BOOTX64.CSV",
        b"s\0h\0i\0m\0x\x006\x004\0.\0e\0f\0i\0".to_vec(),
    );
    esp.file(
        "EFI/ubuntu/grub.cfg",
        format!("search.fs_uuid {ROOT_UUID} root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"),
    );
    esp.file("EFI/BOOT/BOOTX64.EFI", synth::pe64(efi, "BOOTX64.EFI"));
    esp.file("EFI/BOOT/fbx64.efi", synth::pe64(efi, "fbx64.efi"));

    Ok(Plan {
        name: e.name,
        size_mib: 256,
        table: if e.partition_table == "mbr" {
            Table::Mbr {
                signature: 0x2204_0e0f,
            }
        } else {
            Table::Gpt {
                disk_guid: e.disk_id,
            }
        },
        boot_code: BootCode::None,
        parts: vec![
            Part {
                number: 1,
                start_mib: 1,
                size_mib: 64,
                ptype: PartType::Esp,
                name: "",
                guid: "2A3B4C5D-6E7F-4081-92A3-B4C5D6E7F801",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Vfat,
                    uuid: ESP_UUID,
                    label: "",
                    tree: esp,
                }),
            },
            Part {
                number: 2,
                start_mib: 65,
                size_mib: 190,
                ptype: PartType::Linux,
                name: "",
                guid: "2A3B4C5D-6E7F-4081-92A3-B4C5D6E7F802",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Ext4,
                    uuid: ROOT_UUID,
                    label: "cloudimg-rootfs",
                    tree: t,
                }),
            },
        ],
    })
}
