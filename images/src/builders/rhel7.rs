//! RHEL 7.9 as migrated from VMware: MBR, BIOS, GRUB 2, XFS `/boot` on sda1, LVM PV on sda2 with
//! VG `rhel` holding `root` (XFS) and `swap`; ifcfg networking with HWADDR; dracut initramfs
//! without virtio drivers (the classic reason such guests fail to boot on KVM).

use super::linux::{self, KernelStyle, Usr};
use crate::error::Result;
use crate::expected::*;
use crate::lvm::{LvSpec, VgSpec};
use crate::plan::*;
use crate::tree::Tree;

/// This module's text, part of the cache key.
pub(crate) const SOURCE: &str = include_str!("rhel7.rs");

const BOOT_UUID: &str = "3f1e6d2a-7b4c-4a58-9e21-6c0d8b5a4f17";
const ROOT_UUID: &str = "8c2b4e61-0d3a-4f97-b5e8-2a6c1d9f7e30";
const SWAP_UUID: &str = "5e7a9c1b-3d2f-4b60-8a4e-9f0c2d1b6a85";
const KVER: &str = "3.10.0-1160.el7.x86_64";

/// What inspection must find.
pub(crate) static EXPECTED: Expected = Expected {
    name: "rhel7-lvm",
    os_type: "linux",
    distro: "rhel",
    version_major: 7,
    version_minor: 9,
    product_name: "Red Hat Enterprise Linux Server 7.9 (Maipo)",
    osinfo: "rhel7.9",
    arch: "x86_64",
    hostname: "rhel7-vm.example.com",
    package_format: Some("rpm"),
    package_manager: Some("yum"),
    partition_table: "mbr",
    disk_id: "0x7e170002",
    firmware: "bios",
    mbr_boot_code: "grub",
    bootloader: "grub2-bios",
    root_fs: "xfs",
    root_location: "lv:rhel/root",
    filesystems: &[
        ExpectedFs {
            location: "part1",
            kind: "xfs",
            uuid: BOOT_UUID,
            label: "",
        },
        ExpectedFs {
            location: "part2",
            kind: "lvm2-pv",
            uuid: "",
            label: "",
        },
        ExpectedFs {
            location: "lv:rhel/root",
            kind: "xfs",
            uuid: ROOT_UUID,
            label: "",
        },
        ExpectedFs {
            location: "lv:rhel/swap",
            kind: "swap",
            uuid: SWAP_UUID,
            label: "",
        },
    ],
    fstab: &[
        FstabEntry {
            spec: "/dev/mapper/rhel-root",
            mountpoint: "/",
            vfstype: "xfs",
            resolves_to: "lv:rhel/root",
        },
        FstabEntry {
            spec: "UUID=3f1e6d2a-7b4c-4a58-9e21-6c0d8b5a4f17",
            mountpoint: "/boot",
            vfstype: "xfs",
            resolves_to: "part1",
        },
        FstabEntry {
            spec: "/dev/mapper/rhel-swap",
            mountpoint: "swap",
            vfstype: "swap",
            resolves_to: "lv:rhel/swap",
        },
    ],
    kernels: &[ExpectedKernel {
        version: KVER,
        vmlinuz: "/boot/vmlinuz-3.10.0-1160.el7.x86_64",
        initramfs: "/boot/initramfs-3.10.0-1160.el7.x86_64.img",
        initramfs_generator: "dracut",
        virtio_modules: &["virtio_blk", "virtio_net", "virtio_scsi", "virtio_pci"],
        virtio_builtin: &[],
        initramfs_has_virtio_blk: false,
    }],
    network: &[ExpectedNic {
        style: "ifcfg",
        interface: "ens192",
        mac: "00:50:56:aa:bb:02",
        address: "192.168.10.12/24",
        gateway: "192.168.10.1",
        source: "/etc/sysconfig/network-scripts/ifcfg-ens192",
    }],
    hypervisor_tools: &["open-vm-tools"],
    windows: None,
};

const OS_RELEASE: &str = r#"NAME="Red Hat Enterprise Linux Server"
VERSION="7.9 (Maipo)"
ID="rhel"
ID_LIKE="fedora"
VARIANT="Server"
VARIANT_ID="server"
VERSION_ID="7.9"
PRETTY_NAME="Red Hat Enterprise Linux Server 7.9 (Maipo)"
ANSI_COLOR="0;31"
CPE_NAME="cpe:/o:redhat:enterprise_linux:7.9:GA:server"
HOME_URL="https://www.redhat.com/"
BUG_REPORT_URL="https://bugzilla.redhat.com/"

REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 7"
REDHAT_BUGZILLA_PRODUCT_VERSION=7.9
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="7.9"
"#;

/// The plan.
pub(crate) fn plan() -> Result<Plan> {
    let e = &EXPECTED;
    let nic = &e.network[0];
    let k = &e.kernels[0];
    let mut root = Tree::new();
    linux::skeleton(&mut root, Usr::Merged, true);
    root.dir("boot");
    root.file("etc/os-release", OS_RELEASE);
    root.file(
        "etc/redhat-release",
        "Red Hat Enterprise Linux Server release 7.9 (Maipo)\n",
    );
    root.symlink("etc/system-release", "redhat-release");
    root.file("etc/hostname", format!("{}\n", e.hostname));
    root.file(
        "etc/fstab",
        format!(
            "\n#\n# /etc/fstab\n# Created by anaconda on Tue Sep 29 10:02:11 2020\n#\n\
             /dev/mapper/rhel-root   /                       xfs     defaults        0 0\n\
             UUID={BOOT_UUID} /boot                   xfs     defaults        0 0\n\
             /dev/mapper/rhel-swap   swap                    swap    defaults        0 0\n"
        ),
    );
    let (addr, prefix) = nic.address.split_once('/').unwrap_or((nic.address, "24"));
    root.file(
        "etc/sysconfig/network-scripts/ifcfg-ens192",
        format!(
            "TYPE=Ethernet\nPROXY_METHOD=none\nBROWSER_ONLY=no\nBOOTPROTO=none\nDEFROUTE=yes\nIPV4_FAILURE_FATAL=no\n\
             NAME={i}\nUUID=2f0f4a1c-9d3b-4e8a-b6c7-1d2e3f4a5b6c\nDEVICE={i}\nONBOOT=yes\nHWADDR={mac}\n\
             IPADDR={addr}\nPREFIX={prefix}\nGATEWAY={g}\nDNS1={g}\n",
            i = nic.interface,
            mac = nic.mac.to_uppercase(),
            g = nic.gateway
        ),
    );
    root.file(
        "etc/sysconfig/network-scripts/ifcfg-lo",
        "DEVICE=lo\nIPADDR=127.0.0.1\nNETMASK=255.0.0.0\nONBOOT=yes\nNAME=loopback\n",
    );
    root.file("etc/sysconfig/network", "# Created by anaconda\n");
    root.symlink("etc/grub2.cfg", "../boot/grub2/grub.cfg");
    root.file(
        "etc/dracut.conf",
        "# PUT YOUR CONFIG IN separate files\n# in /etc/dracut.conf.d named \"<name>.conf\"\n",
    );
    root.file(
        "etc/dracut.conf.d/vmware.conf",
        "hostonly=\"yes\"\nadd_drivers+=\" vmw_pvscsi \"\n",
    );
    root.file(
        "etc/default/grub",
        "GRUB_TIMEOUT=5\nGRUB_DISTRIBUTOR=\"$(sed 's, release .*$,,g' /etc/system-release)\"\nGRUB_DEFAULT=saved\n\
         GRUB_DISABLE_SUBMENU=true\nGRUB_TERMINAL_OUTPUT=\"console\"\n\
         GRUB_CMDLINE_LINUX=\"crashkernel=auto rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet\"\nGRUB_DISABLE_RECOVERY=\"true\"\n",
    );
    root.file(
        "etc/yum.conf",
        "[main]\ncachedir=/var/cache/yum/$basearch/$releasever\nkeepcache=0\n",
    );
    root.dir("etc/yum.repos.d");
    // rpm reads rpmrc, then the macros naming its database, from the guest (libguestfs runs
    // librpm chrooted into it); without both, inspection finds no readable database.
    root.file(
        "usr/lib/rpm/rpmrc",
        "arch_canon:\tx86_64:\tx86_64\t1\nos_canon:\tLinux:\tLinux\t1\n",
    );
    root.file(
        "usr/lib/rpm/macros",
        "%_usr\t/usr\n%_var\t/var\n%_dbpath\t%{_var}/lib/rpm\n%_db_backend\tsqlite\n",
    );
    root.rpmdb("var/lib/rpm/rpmdb.sqlite");
    linux::open_vm_tools(&mut root, "usr/lib/systemd/system", "vmtoolsd.service");

    let mut boot = Tree::new();
    linux::kernel(
        &mut root,
        &mut boot,
        k,
        &KernelStyle {
            modules_dir: "usr/lib/modules",
            module_suffix: ".ko.xz",
            compressor: Some(crate::tools::XZ),
            config_extra: "",
            boot_prefix: "",
        },
    )?;
    boot.file(
        "grub2/grub.cfg",
        format!(
            "#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub2-mkconfig using templates\n#\n\
             set default=\"${{saved_entry}}\"\ninsmod part_msdos\ninsmod xfs\nsearch --no-floppy --fs-uuid --set=root {BOOT_UUID}\n\
             menuentry 'Red Hat Enterprise Linux Server ({KVER}) 7.9 (Maipo)' --class red --class gnu-linux --class gnu --class os {{\n\
             \tlinux16 /vmlinuz-{KVER} root=/dev/mapper/rhel-root ro crashkernel=auto rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet\n\
             \tinitrd16 /initramfs-{KVER}.img\n}}\n"
        ),
    );
    boot.file("grub2/grubenv", format!("# GRUB Environment Block\nsaved_entry=Red Hat Enterprise Linux Server ({KVER}) 7.9 (Maipo)\n{}", "#".repeat(900)));
    boot.dir("grub2/i386-pc");

    let vg = VgSpec {
        name: "rhel",
        uuid: "Rh7Vg1-0001-aaaa-bbbb-cccc-dddd-eeee01",
        pv_uuid: "Rh7Pv1-0001-aaaa-bbbb-cccc-dddd-eeee02",
        pv_device: "/dev/sda2",
        extent_mib: 4,
        lvs: vec![
            LvSpec {
                name: "root",
                uuid: "Rh7Lv1-0001-aaaa-bbbb-cccc-dddd-eeee03",
                extents: 80,
                content: Content::Fs(FsSpec {
                    kind: FsKind::XfsRhel7,
                    uuid: ROOT_UUID,
                    label: "",
                    tree: root,
                }),
            },
            LvSpec {
                name: "swap",
                uuid: "Rh7Lv2-0001-aaaa-bbbb-cccc-dddd-eeee04",
                extents: 8,
                content: Content::Swap { uuid: SWAP_UUID },
            },
        ],
    };
    Ok(Plan {
        name: e.name,
        size_mib: 680,
        table: Table::Mbr {
            signature: 0x7e17_0002,
        },
        boot_code: BootCode::Grub,
        parts: vec![
            Part {
                number: 1,
                start_mib: 1,
                size_mib: 320,
                ptype: PartType::Linux,
                name: "",
                guid: "",
                bootable: true,
                content: Content::Fs(FsSpec {
                    kind: FsKind::XfsRhel7,
                    uuid: BOOT_UUID,
                    label: "",
                    tree: boot,
                }),
            },
            Part {
                number: 2,
                start_mib: 321,
                size_mib: 356,
                ptype: PartType::Lvm,
                name: "",
                guid: "",
                bootable: false,
                content: Content::Lvm(vg),
            },
        ],
    })
}
