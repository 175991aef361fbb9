//! Pieces shared by the Linux builders: real host ELF binaries (for architecture detection),
//! merged-/usr symlinks, kernels with their config, modules and initramfs, systemd units.

use crate::error::Result;
use crate::expected::ExpectedKernel;
use crate::synth;
use crate::tree::Tree;

/// Host binaries copied into guests: real x86-64 ELF files (test data only, never run).
const HOST_DASH: &str = "/bin/dash";
const HOST_BASH: &str = "/bin/bash";
const HOST_TRUE: &str = "/usr/bin/true";

/// Module aliases per virtio driver (as in their `.modinfo`).
const VIRTIO_ALIASES: [(&str, &str, &str); 4] = [
    ("virtio_blk", "kernel/drivers/block", "virtio:d00000002v*"),
    ("virtio_net", "kernel/drivers/net", "virtio:d00000001v*"),
    ("virtio_scsi", "kernel/drivers/scsi", "virtio:d00000008v*"),
    (
        "virtio_pci",
        "kernel/drivers/virtio",
        "pci:v00001AF4d*sv*sd*bc*sc*i*",
    ),
];

/// The `CONFIG_` symbol of each virtio driver.
fn config_symbol(module: &str) -> &'static str {
    match module {
        "virtio_blk" => "CONFIG_VIRTIO_BLK",
        "virtio_net" => "CONFIG_VIRTIO_NET",
        "virtio_scsi" => "CONFIG_SCSI_VIRTIO",
        _ => "CONFIG_VIRTIO_PCI",
    }
}

/// Layout of `/`: merged /usr (bin, sbin, lib, lib64 are symlinks into /usr) or split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usr {
    /// Debian 12, Ubuntu 22.04, RHEL 7 and 9.
    Merged,
    /// SLES 15.
    Split,
}

/// Adds the skeleton: /usr layout, `/bin/sh` (a real ELF), a few directories.
pub(crate) fn skeleton(t: &mut Tree, usr: Usr, sh_is_bash: bool) {
    let bin = match usr {
        Usr::Merged => {
            t.symlink("bin", "usr/bin")
                .symlink("sbin", "usr/sbin")
                .symlink("lib", "usr/lib");
            t.symlink("lib64", "usr/lib64");
            t.dir("usr/sbin").dir("usr/lib64");
            "usr/bin"
        }
        Usr::Split => {
            t.dir("usr/bin").dir("sbin").dir("lib64");
            "bin"
        }
    };
    t.host(&format!("{bin}/dash"), HOST_DASH, 0o755);
    t.host(&format!("{bin}/bash"), HOST_BASH, 0o755);
    t.symlink(
        &format!("{bin}/sh"),
        if sh_is_bash { "bash" } else { "dash" },
    );
    t.host("usr/bin/true", HOST_TRUE, 0o755);
    for d in [
        "dev", "proc", "sys", "run", "tmp", "root", "home", "mnt", "var/log", "var/tmp",
    ] {
        t.dir(d);
    }
    t.file("etc/machine-id", "4b1c2d3e4f5061728394a5b6c7d8e9f0\n");
}

/// How a distribution lays out and names kernel files.
pub(crate) struct KernelStyle {
    /// Modules directory (`usr/lib/modules` or `lib/modules`).
    pub(crate) modules_dir: &'static str,
    /// Module file suffix (`.ko`, `.ko.xz`, `.ko.zst`).
    pub(crate) module_suffix: &'static str,
    /// Compressor for module files (`xz`, `zstd`) or none.
    pub(crate) compressor: Option<crate::tools::Tool>,
    /// Extra `/boot/config` lines.
    pub(crate) config_extra: &'static str,
    /// Tree prefix for `/boot` files ("boot/" when /boot is on the root filesystem, "" when the
    /// tree is the separate /boot filesystem).
    pub(crate) boot_prefix: &'static str,
}

/// Adds kernel `k`: vmlinuz (bzImage header), config, initramfs (newc cpio), System.map, and
/// the module tree with the virtio drivers `k` lists. `root` receives modules, `boot` the /boot files.
pub(crate) fn kernel(
    root: &mut Tree,
    boot: &mut Tree,
    k: &ExpectedKernel,
    style: &KernelStyle,
) -> Result<()> {
    let strip = |guest: &str| guest.trim_start_matches("/boot/").to_owned();
    let banner = format!("{} (builder@rehost) #1 SMP PREEMPT_DYNAMIC", k.version);
    boot.file(
        &format!("{}{}", style.boot_prefix, strip(k.vmlinuz)),
        synth::bzimage(&banner),
    );
    let mut config = format!(
        "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/x86 {} Kernel Configuration\n#\nCONFIG_64BIT=y\nCONFIG_X86_64=y\nCONFIG_VIRTIO=y\nCONFIG_VIRTIO_RING=y\n",
        k.version
    );
    for (m, _, _) in VIRTIO_ALIASES {
        if k.virtio_builtin.contains(&m) {
            config.push_str(&format!("{}=y\n", config_symbol(m)));
        } else if k.virtio_modules.contains(&m) {
            config.push_str(&format!("{}=m\n", config_symbol(m)));
        } else {
            config.push_str(&format!("# {} is not set\n", config_symbol(m)));
        }
    }
    config.push_str("CONFIG_VMXNET3=m\nCONFIG_VMWARE_PVSCSI=m\nCONFIG_HYPERV_STORAGE=m\nCONFIG_XEN_BLKDEV_FRONTEND=m\n");
    config.push_str(style.config_extra);
    boot.file(
        &format!("{}config-{}", style.boot_prefix, k.version),
        config,
    );
    boot.file(
        &format!("{}System.map-{}", style.boot_prefix, k.version),
        "ffffffff81000000 T _text\n",
    );

    let mdir = format!("{}/{}", style.modules_dir, k.version);
    let mut dep = String::new();
    let mut initrd_files: Vec<(String, Vec<u8>)> = vec![("conf/modules".into(), b"".to_vec())];
    let extra = [
        (
            "vmw_pvscsi",
            "kernel/drivers/scsi",
            "pci:v000015ADd000007C0sv*sd*bc*sc*i*",
        ),
        (
            "vmxnet3",
            "kernel/drivers/net/vmxnet3",
            "pci:v000015ADd000007B0sv*sd*bc*sc*i*",
        ),
    ];
    for (m, dir, alias) in VIRTIO_ALIASES
        .iter()
        .copied()
        .filter(|(m, _, _)| k.virtio_modules.contains(m))
        .chain(extra)
    {
        let plain = synth::kmod(m, k.version, alias);
        let bytes = match style.compressor {
            Some(c) => synth::compress(c, &plain)?,
            None => plain.clone(),
        };
        let rel = format!("{dir}/{m}{}", style.module_suffix);
        root.file(&format!("{mdir}/{rel}"), bytes);
        dep.push_str(&format!("{rel}:\n"));
        if m == "virtio_blk" && k.initramfs_has_virtio_blk || m == "vmw_pvscsi" {
            initrd_files.push((format!("usr/lib/modules/{}/{dir}/{m}.ko", k.version), plain));
        }
    }
    root.file(&format!("{mdir}/modules.dep"), dep);
    root.file(&format!("{mdir}/modules.order"), "");
    let refs: Vec<(&str, &[u8])> = initrd_files
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice()))
        .collect();
    boot.file(
        &format!("{}{}", style.boot_prefix, strip(k.initramfs)),
        synth::cpio_newc(&refs),
    );
    Ok(())
}

/// Adds a systemd unit under `dir` and enables it in `multi-user.target.wants`.
pub(crate) fn systemd_unit(t: &mut Tree, dir: &str, name: &str, exec: &str, description: &str) {
    t.file(
        &format!("{dir}/{name}"),
        format!("[Unit]\nDescription={description}\n\n[Service]\nExecStart={exec}\n\n[Install]\nWantedBy=multi-user.target\n"),
    );
    t.symlink(
        &format!("etc/systemd/system/multi-user.target.wants/{name}"),
        &format!("/{dir}/{name}"),
    );
}

/// A Debian `dpkg` status file listing `packages` (name, version) as installed.
pub(crate) fn dpkg_status(packages: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (name, version) in packages {
        s.push_str(&format!(
            "Package: {name}\nStatus: install ok installed\nPriority: optional\nSection: misc\nInstalled-Size: 100\n\
             Maintainer: Debian <debian@example.invalid>\nArchitecture: amd64\nVersion: {version}\n\
             Description: {name}\n synthetic entry written by rehost-images\n\n"
        ));
    }
    s
}

/// Adds open-vm-tools: the daemon (a real ELF) and its enabled systemd unit.
pub(crate) fn open_vm_tools(t: &mut Tree, unit_dir: &str, unit: &str) {
    t.host("usr/bin/vmtoolsd", HOST_TRUE, 0o755);
    t.file("etc/vmware-tools/tools.conf", "[logging]\nlog = true\n");
    systemd_unit(
        t,
        unit_dir,
        unit,
        "/usr/bin/vmtoolsd",
        "Service for virtual machines hosted on VMware",
    );
}
