//! RHEL 9.4 on UEFI: GPT with an ESP (shim + GRUB), XFS `/boot` with BLS entries, XFS root,
//! NetworkManager keyfile with a MAC pin, open-vm-tools.

use super::linux::{self, KernelStyle, Usr};
use crate::error::Result;
use crate::expected::*;
use crate::plan::*;
use crate::synth;
use crate::tree::Tree;

/// This module's text, part of the cache key.
pub(crate) const SOURCE: &str = include_str!("rhel9.rs");

const ESP_UUID: &str = "9E41-2C07";
const BOOT_UUID: &str = "b4d0c6e2-5a17-4c3e-8f92-0e6a1b7d3c58";
const ROOT_UUID: &str = "e2a7c5f1-6b38-4d09-a1c4-7f5e3b9d2a61";
const KVER: &str = "5.14.0-427.13.1.el9_4.x86_64";
const MACHINE_ID: &str = "4b1c2d3e4f5061728394a5b6c7d8e9f0";

/// What inspection must find.
pub(crate) static EXPECTED: Expected = Expected {
    name: "rhel9-uefi",
    os_type: "linux",
    distro: "rhel",
    version_major: 9,
    version_minor: 4,
    product_name: "Red Hat Enterprise Linux 9.4 (Plow)",
    osinfo: "rhel9.4",
    arch: "x86_64",
    hostname: "rhel9-vm.example.com",
    package_format: Some("rpm"),
    package_manager: Some("dnf"),
    partition_table: "gpt",
    disk_id: "5A3C9E10-7B2D-4F61-8E04-C1D2E3F4A509",
    firmware: "uefi",
    mbr_boot_code: "none",
    bootloader: "grub2-efi",
    root_fs: "xfs",
    root_location: "part3",
    filesystems: &[
        ExpectedFs {
            location: "part1",
            kind: "vfat",
            uuid: ESP_UUID,
            label: "",
        },
        ExpectedFs {
            location: "part2",
            kind: "xfs",
            uuid: BOOT_UUID,
            label: "",
        },
        ExpectedFs {
            location: "part3",
            kind: "xfs",
            uuid: ROOT_UUID,
            label: "",
        },
    ],
    fstab: &[
        FstabEntry {
            spec: "UUID=e2a7c5f1-6b38-4d09-a1c4-7f5e3b9d2a61",
            mountpoint: "/",
            vfstype: "xfs",
            resolves_to: "part3",
        },
        FstabEntry {
            spec: "UUID=b4d0c6e2-5a17-4c3e-8f92-0e6a1b7d3c58",
            mountpoint: "/boot",
            vfstype: "xfs",
            resolves_to: "part2",
        },
        FstabEntry {
            spec: "UUID=9E41-2C07",
            mountpoint: "/boot/efi",
            vfstype: "vfat",
            resolves_to: "part1",
        },
    ],
    kernels: &[ExpectedKernel {
        version: KVER,
        vmlinuz: "/boot/vmlinuz-5.14.0-427.13.1.el9_4.x86_64",
        initramfs: "/boot/initramfs-5.14.0-427.13.1.el9_4.x86_64.img",
        initramfs_generator: "dracut",
        virtio_modules: &["virtio_blk", "virtio_net", "virtio_scsi"],
        virtio_builtin: &["virtio_pci"],
        initramfs_has_virtio_blk: false,
    }],
    network: &[ExpectedNic {
        style: "networkmanager",
        interface: "ens192",
        mac: "00:50:56:aa:bb:03",
        address: "192.168.10.13/24",
        gateway: "192.168.10.1",
        source: "/etc/NetworkManager/system-connections/ens192.nmconnection",
    }],
    hypervisor_tools: &["open-vm-tools"],
    windows: None,
};

const OS_RELEASE: &str = r#"NAME="Red Hat Enterprise Linux"
VERSION="9.4 (Plow)"
ID="rhel"
ID_LIKE="fedora"
VERSION_ID="9.4"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"
ANSI_COLOR="0;31"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:redhat:enterprise_linux:9::baseos"
HOME_URL="https://www.redhat.com/"
DOCUMENTATION_URL="https://access.redhat.com/documentation/en-us/red_hat_enterprise_linux/9"
BUG_REPORT_URL="https://bugzilla.redhat.com/"

REDHAT_BUGZILLA_PRODUCT="Red Hat Enterprise Linux 9"
REDHAT_BUGZILLA_PRODUCT_VERSION=9.4
REDHAT_SUPPORT_PRODUCT="Red Hat Enterprise Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.4"
"#;

/// The ESP as RHEL lays it out: shim, GRUB and a stub grub.cfg under EFI/redhat, the fallback
/// loader under EFI/BOOT. The EFI binaries are synthetic PE32+ EFI applications.
pub(crate) fn esp_redhat(boot_uuid: &str) -> Tree {
    let mut t = Tree::new();
    let efi = synth::SUBSYSTEM_EFI_APPLICATION;
    t.file("EFI/redhat/shimx64.efi", synth::pe64(efi, "shimx64.efi"));
    t.file("EFI/redhat/grubx64.efi", synth::pe64(efi, "grubx64.efi"));
    t.file("EFI/redhat/mmx64.efi", synth::pe64(efi, "mmx64.efi"));
    t.file(
        "EFI/redhat/BOOTX64.CSV",
        b"s\0h\0i\0m\0x\x006\x004\0.\0e\0f\0i\0".to_vec(),
    );
    t.file(
        "EFI/redhat/grub.cfg",
        format!("search --no-floppy --fs-uuid --set=dev {boot_uuid}\nset prefix=($dev)/grub2\nexport $prefix\nconfigfile $prefix/grub.cfg\n"),
    );
    t.file("EFI/BOOT/BOOTX64.EFI", synth::pe64(efi, "BOOTX64.EFI"));
    t.file("EFI/BOOT/fbx64.efi", synth::pe64(efi, "fbx64.efi"));
    t
}

/// The plan.
pub(crate) fn plan() -> Result<Plan> {
    let e = &EXPECTED;
    let nic = &e.network[0];
    let k = &e.kernels[0];
    let mut root = Tree::new();
    linux::skeleton(&mut root, Usr::Merged, true);
    root.dir("boot/efi");
    root.file("etc/os-release", OS_RELEASE);
    root.file(
        "etc/redhat-release",
        "Red Hat Enterprise Linux release 9.4 (Plow)\n",
    );
    root.symlink("etc/system-release", "redhat-release");
    root.file("etc/hostname", format!("{}\n", e.hostname));
    root.file(
        "etc/fstab",
        format!(
            "\n#\n# /etc/fstab\n# Created by anaconda on Thu May  2 09:14:55 2024\n#\n\
             UUID={ROOT_UUID} /                       xfs     defaults        0 0\n\
             UUID={BOOT_UUID} /boot                   xfs     defaults        0 0\n\
             UUID={ESP_UUID}          /boot/efi               vfat    umask=0077,shortname=winnt 0 2\n"
        ),
    );
    root.file_mode(
        "etc/NetworkManager/system-connections/ens192.nmconnection",
        format!(
            "[connection]\nid={i}\nuuid=6a1f0c3e-2b9d-4e7a-8c5f-0d1e2f3a4b5c\ntype=ethernet\ninterface-name={i}\n\n\
             [ethernet]\nmac-address={mac}\n\n[ipv4]\naddress1={a},{g}\ndns={g};\nmethod=manual\n\n\
             [ipv6]\naddr-gen-mode=eui64\nmethod=auto\n\n[proxy]\n",
            i = nic.interface,
            mac = nic.mac.to_uppercase(),
            a = nic.address,
            g = nic.gateway
        ),
        0o600,
    );
    root.file(
        "etc/NetworkManager/NetworkManager.conf",
        "[main]\n#plugins=keyfile,ifcfg-rh\n",
    );
    root.dir("etc/sysconfig/network-scripts");
    root.file(
        "etc/dracut.conf",
        "# PUT YOUR CONFIG IN separate files\n# in /etc/dracut.conf.d named \"<name>.conf\"\n",
    );
    root.file(
        "etc/kernel/cmdline",
        format!(
            "root=UUID={ROOT_UUID} ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rhgb quiet\n"
        ),
    );
    root.file("etc/default/grub", "GRUB_TIMEOUT=5\nGRUB_DEFAULT=saved\nGRUB_ENABLE_BLSCFG=true\nGRUB_CMDLINE_LINUX=\"crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rhgb quiet\"\n");
    root.file(
        "etc/dnf/dnf.conf",
        "[main]\ngpgcheck=1\ninstallonly_limit=3\n",
    );
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
    boot.dir("efi");
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
        &format!("loader/entries/{MACHINE_ID}-{KVER}.conf"),
        format!(
            "title Red Hat Enterprise Linux ({KVER}) 9.4 (Plow)\nversion {KVER}\nlinux /vmlinuz-{KVER}\n\
             initrd /initramfs-{KVER}.img $tuned_initrd\n\
             options root=UUID={ROOT_UUID} ro crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M rhgb quiet $tuned_params\n\
             grub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n"
        ),
    );
    boot.file(
        "grub2/grub.cfg",
        "#\n# DO NOT EDIT THIS FILE\n#\n# It is automatically generated by grub2-mkconfig using templates\n#\n\
         set default=\"${saved_entry}\"\ninsmod part_gpt\ninsmod xfs\ninsmod blscfg\nblscfg\n",
    );
    boot.file(
        "grub2/grubenv",
        format!(
            "# GRUB Environment Block\nsaved_entry={MACHINE_ID}-{KVER}\n{}",
            "#".repeat(900)
        ),
    );

    Ok(Plan {
        name: e.name,
        size_mib: 712,
        table: Table::Gpt {
            disk_guid: e.disk_id,
        },
        boot_code: BootCode::None,
        parts: vec![
            Part {
                number: 1,
                start_mib: 1,
                size_mib: 64,
                ptype: PartType::Esp,
                name: "EFI System Partition",
                guid: "1C2D3E4F-5061-4728-9394-A5B6C7D8E901",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Vfat,
                    uuid: ESP_UUID,
                    label: "",
                    tree: esp_redhat(BOOT_UUID),
                }),
            },
            Part {
                number: 2,
                start_mib: 65,
                size_mib: 320,
                ptype: PartType::Linux,
                name: "",
                guid: "1C2D3E4F-5061-4728-9394-A5B6C7D8E902",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Xfs,
                    uuid: BOOT_UUID,
                    label: "",
                    tree: boot,
                }),
            },
            Part {
                number: 3,
                start_mib: 385,
                size_mib: 320,
                ptype: PartType::Linux,
                name: "",
                guid: "1C2D3E4F-5061-4728-9394-A5B6C7D8E903",
                bootable: false,
                content: Content::Fs(FsSpec {
                    kind: FsKind::Xfs,
                    uuid: ROOT_UUID,
                    label: "",
                    tree: root,
                }),
            },
        ],
    })
}
