//! Linux inspection: distro, arch, hostname, fstab, kernels and their virtio drivers, initramfs
//! generator, network configuration and hypervisor tools, all read through [`guestfs::FsRead`]
//! (normally a [`guestfs::Mounts`] so `/boot` and `/usr` on other filesystems are seen).

pub mod fstab;
pub mod network;
pub mod osrelease;

use guestfs::{FileType, FsRead, FsReadExt};

use crate::report::{Finding, KernelReport, OsReport, Severity};
use network::{NetIface, NetStyle};

/// Largest text file inspection reads (house style S12): configuration files are small.
const TEXT_CAP: u64 = 1 << 20;
/// Most directory entries considered in one configuration directory.
const MAX_CONFIG_FILES: usize = 512;

/// The virtio drivers a KVM guest needs: (module name, module path under `kernel/`, Kconfig).
pub const VIRTIO_DRIVERS: [(&str, &str, &str); 4] = [
    (
        "virtio_blk",
        "drivers/block/virtio_blk",
        "CONFIG_VIRTIO_BLK",
    ),
    (
        "virtio_scsi",
        "drivers/scsi/virtio_scsi",
        "CONFIG_SCSI_VIRTIO",
    ),
    ("virtio_net", "drivers/net/virtio_net", "CONFIG_VIRTIO_NET"),
    (
        "virtio_pci",
        "drivers/virtio/virtio_pci",
        "CONFIG_VIRTIO_PCI",
    ),
];

/// Reads a small text file, `None` if it does not exist or cannot be read.
pub(crate) fn read_text(fs: &dyn FsRead, path: &str) -> Option<String> {
    fs.read_file(path.as_bytes(), TEXT_CAP)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Names of the regular files (or symlinks) in a directory, sorted, bounded.
pub(crate) fn list_dir(fs: &dyn FsRead, path: &str) -> Vec<String> {
    let mut v: Vec<String> = fs
        .read_dir_path(path.as_bytes())
        .map(|es| {
            es.into_iter()
                .take(MAX_CONFIG_FILES)
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn exists(fs: &dyn FsRead, path: &str) -> bool {
    fs.exists(path.as_bytes()).unwrap_or(false)
}

/// True if `fs` looks like a Linux root filesystem (as libguestfs decides: `/etc` plus one of
/// the files only a root has).
#[must_use]
pub fn is_linux_root(fs: &dyn FsRead) -> bool {
    let etc_is_dir = fs
        .stat_path(b"/etc")
        .is_ok_and(|m| m.file_type == FileType::Directory);
    etc_is_dir
        && [
            "/etc/os-release",
            "/usr/lib/os-release",
            "/etc/fstab",
            "/etc/redhat-release",
            "/etc/debian_version",
            "/etc/SuSE-release",
        ]
        .iter()
        .any(|p| exists(fs, p))
}

/// Architecture from an ELF header, in libguestfs's spelling.
#[must_use]
pub fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.get(..4) != Some(b"\x7fELF") {
        return None;
    }
    let class = *header.get(4)?;
    let le = *header.get(5)? == 1;
    let m = header.get(18..20)?;
    let machine = if le {
        u16::from_le_bytes([m[0], m[1]])
    } else {
        u16::from_be_bytes([m[0], m[1]])
    };
    Some(match (machine, class) {
        (3, _) => "i386",
        (62, _) => "x86_64",
        (40, _) => "arm",
        (183, _) => "aarch64",
        (20, _) => "ppc",
        (21, 2) if le => "ppc64le",
        (21, _) => "ppc64",
        (22, _) => "s390x",
        (243, _) => "riscv64",
        (8, _) => "mips",
        _ => return None,
    })
}

fn detect_arch(fs: &dyn FsRead) -> Option<String> {
    for p in [
        "/bin/sh",
        "/bin/bash",
        "/usr/bin/bash",
        "/bin/ls",
        "/usr/bin/ls",
        "/usr/bin/env",
        "/sbin/init",
        "/lib/systemd/systemd",
    ] {
        let Ok(p2) = guestfs::resolve(fs, p.as_bytes(), guestfs::Follow::Final) else {
            continue;
        };
        let mut hdr = [0u8; 64];
        if let Ok(n) = fs.read_at(&p2, 0, &mut hdr)
            && let Some(a) = elf_arch(hdr.get(..n).unwrap_or(&[]))
        {
            return Some(a.to_owned());
        }
    }
    None
}

fn detect_hostname(fs: &dyn FsRead) -> Option<String> {
    for p in ["/etc/hostname", "/etc/HOSTNAME"] {
        if let Some(t) = read_text(fs, p) {
            let h = t
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            if let Some(h) = h {
                return Some(h.to_owned());
            }
        }
    }
    let kv = osrelease::parse_key_values(&read_text(fs, "/etc/sysconfig/network")?);
    kv.get("HOSTNAME").cloned()
}

/// Which package system a distro uses: (format, manager).
#[must_use]
pub fn package_system(distro: &str, major: u32) -> Option<(&'static str, &'static str)> {
    Some(match distro {
        "debian" | "ubuntu" | "linuxmint" | "kalilinux" => ("deb", "apt"),
        "rhel" | "centos" | "oraclelinux" if major <= 7 => ("rpm", "yum"),
        "rhel" | "centos" | "rocky" | "almalinux" | "oraclelinux" | "fedora" => ("rpm", "dnf"),
        "sles" | "opensuse" => ("rpm", "zypper"),
        "archlinux" => ("pacman", "pacman"),
        "alpine" => ("apk", "apk"),
        _ => return None,
    })
}

fn identify(fs: &dyn FsRead) -> osrelease::DistroId {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(t) = read_text(fs, p)
            && let Some(mut d) = osrelease::from_os_release(&osrelease::parse_key_values(&t))
        {
            // Debian's os-release carries only the major version; the point release is in
            // /etc/debian_version (as libguestfs reads it).
            if d.distro == "debian"
                && let Some((major, minor)) =
                    read_text(fs, "/etc/debian_version").and_then(|v| osrelease::parse_version(&v))
                && major == d.major
            {
                d.minor = minor;
            }
            return d;
        }
    }
    if let Some(t) = read_text(fs, "/etc/lsb-release")
        && let Some(d) = osrelease::from_lsb_release(&osrelease::parse_key_values(&t))
    {
        return d;
    }
    for p in [
        "/etc/redhat-release",
        "/etc/centos-release",
        "/etc/rocky-release",
        "/etc/oracle-release",
        "/etc/fedora-release",
        "/etc/SuSE-release",
    ] {
        if let Some(t) = read_text(fs, p)
            && let Some(d) = osrelease::from_release_file(&t)
        {
            return d;
        }
    }
    if let Some(t) = read_text(fs, "/etc/debian_version") {
        let (major, minor) = osrelease::parse_version(&t).unwrap_or((0, 0));
        return osrelease::DistroId {
            distro: "debian".into(),
            major,
            minor,
            product_name: format!("Debian {}", t.trim()),
            ..Default::default()
        };
    }
    osrelease::DistroId {
        distro: "unknown".into(),
        ..Default::default()
    }
}

/// Where each distro family puts the initramfs of kernel `v`.
fn initramfs_candidates(v: &str) -> [String; 4] {
    [
        format!("/boot/initrd.img-{v}"),
        format!("/boot/initramfs-{v}.img"),
        format!("/boot/initrd-{v}"),
        format!("/boot/initrd-{v}.img"),
    ]
}

fn virtio_state(fs: &dyn FsRead, version: &str) -> Vec<(String, String)> {
    let config = read_text(fs, &format!("/boot/config-{version}")).unwrap_or_default();
    let builtin =
        read_text(fs, &format!("/lib/modules/{version}/modules.builtin")).unwrap_or_default();
    VIRTIO_DRIVERS
        .iter()
        .map(|(name, path, kconfig)| {
            let in_builtin = builtin
                .lines()
                .any(|l| l.trim_start_matches("kernel/").trim_end_matches(".ko") == *path);
            let cfg = config
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{kconfig}=")));
            let module_file = ["", ".xz", ".zst", ".gz"]
                .iter()
                .any(|ext| exists(fs, &format!("/lib/modules/{version}/kernel/{path}.ko{ext}")));
            let state = if in_builtin || cfg == Some("y") {
                "builtin"
            } else if module_file {
                "module"
            } else {
                "missing"
            };
            ((*name).to_owned(), state.to_owned())
        })
        .collect()
}

fn kernels(fs: &dyn FsRead) -> Vec<KernelReport> {
    let mut versions: Vec<String> = list_dir(fs, "/boot")
        .into_iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-").map(str::to_owned))
        .filter(|v| !v.contains("rescue"))
        .collect();
    // Kernels whose image lives elsewhere (/lib/modules/V/vmlinuz on newer Fedora/RHEL).
    for v in list_dir(fs, "/lib/modules") {
        if !versions.contains(&v) && exists(fs, &format!("/lib/modules/{v}/vmlinuz")) {
            versions.push(v);
        }
    }
    versions.sort();
    versions
        .into_iter()
        .map(|v| {
            let boot = format!("/boot/vmlinuz-{v}");
            let path = if exists(fs, &boot) {
                boot
            } else {
                format!("/lib/modules/{v}/vmlinuz")
            };
            KernelReport {
                initramfs: initramfs_candidates(&v).into_iter().find(|p| exists(fs, p)),
                has_modules: exists(fs, &format!("/lib/modules/{v}")),
                virtio: virtio_state(fs, &v),
                path,
                version: v,
            }
        })
        .collect()
}

fn initramfs_generator(fs: &dyn FsRead, distro: &str) -> Option<String> {
    let g = if exists(fs, "/etc/initramfs-tools") || exists(fs, "/usr/sbin/update-initramfs") {
        "initramfs-tools"
    } else if exists(fs, "/etc/dracut.conf")
        || exists(fs, "/usr/bin/dracut")
        || exists(fs, "/sbin/dracut")
    {
        "dracut"
    } else if (distro == "sles" || distro == "opensuse") && exists(fs, "/sbin/mkinitrd") {
        "mkinitrd"
    } else {
        return None;
    };
    Some(g.to_owned())
}

fn network(fs: &dyn FsRead) -> Vec<NetIface> {
    let mut out = Vec::new();
    if let Some(t) = read_text(fs, "/etc/network/interfaces") {
        out.extend(network::parse_ifupdown("/etc/network/interfaces", &t));
    }
    for n in list_dir(fs, "/etc/network/interfaces.d") {
        let p = format!("/etc/network/interfaces.d/{n}");
        if let Some(t) = read_text(fs, &p) {
            out.extend(network::parse_ifupdown(&p, &t));
        }
    }
    for n in list_dir(fs, "/etc/netplan") {
        if n.ends_with(".yaml") || n.ends_with(".yml") {
            let p = format!("/etc/netplan/{n}");
            if let Some(t) = read_text(fs, &p) {
                out.extend(network::parse_netplan(&p, &t));
            }
        }
    }
    for n in list_dir(fs, "/etc/NetworkManager/system-connections") {
        let p = format!("/etc/NetworkManager/system-connections/{n}");
        if let Some(i) = read_text(fs, &p).and_then(|t| network::parse_nm_keyfile(&p, &t)) {
            out.push(i);
        }
    }
    for (dir, style) in [
        ("/etc/sysconfig/network-scripts", NetStyle::RhelIfcfg),
        ("/etc/sysconfig/network", NetStyle::SuseWicked),
    ] {
        for n in list_dir(fs, dir) {
            if !n.starts_with("ifcfg-") {
                continue;
            }
            let p = format!("{dir}/{n}");
            if let Some(i) = read_text(fs, &p).and_then(|t| network::parse_ifcfg(style, &p, &t)) {
                out.push(i);
            }
        }
    }
    // Old udev pinned names to MACs; the pin matters to a migration like a config-file pin.
    if let Some(t) = read_text(fs, "/etc/udev/rules.d/70-persistent-net.rules") {
        for (mac, name) in network::parse_udev_net_rules(&t) {
            for i in out.iter_mut().filter(|i| i.name == name && i.mac.is_none()) {
                i.mac = Some(mac.clone());
            }
        }
    }
    for n in list_dir(fs, "/etc/systemd/network") {
        if n.ends_with(".network") {
            let p = format!("/etc/systemd/network/{n}");
            if let Some(i) = read_text(fs, &p).and_then(|t| network::parse_networkd(&p, &t)) {
                out.push(i);
            }
        }
    }
    out
}

/// Hypervisor guest tools and the files that betray them.
const HYPERVISOR_TOOLS: [(&str, &[&str]); 5] = [
    (
        "open-vm-tools",
        &["/usr/bin/vmtoolsd", "/etc/vmware-tools/tools.conf"],
    ),
    (
        "vmware-tools",
        &[
            "/etc/vmware-tools/locations",
            "/usr/lib/vmware-tools",
            "/etc/init.d/vmware-tools",
        ],
    ),
    (
        "hyperv-daemons",
        &[
            "/usr/sbin/hv_kvp_daemon",
            "/usr/sbin/hypervkvpd",
            "/usr/lib/linux-tools/hv_kvp_daemon",
        ],
    ),
    (
        "xe-guest-utilities",
        &["/usr/sbin/xe-daemon", "/usr/sbin/xe-linux-distribution"],
    ),
    (
        "virtualbox-guest-additions",
        &[
            "/usr/sbin/VBoxService",
            "/opt/VBoxGuestAdditions",
            "/usr/bin/VBoxClient",
        ],
    ),
];

fn hypervisor_tools(fs: &dyn FsRead) -> Vec<String> {
    let mut v: Vec<String> = HYPERVISOR_TOOLS
        .iter()
        .filter(|(_, paths)| paths.iter().any(|p| exists(fs, p)))
        .map(|(n, _)| (*n).to_owned())
        .collect();
    // open-vm-tools also ships /etc/vmware-tools; do not report both for one install.
    if v.iter().any(|n| n == "open-vm-tools") {
        v.retain(|n| n != "vmware-tools" || exists(fs, "/etc/vmware-tools/locations"));
    }
    v
}

/// Inspects a Linux root. `fs` should present the guest's mounts (fstab applied); `root` names
/// the root device.
pub fn inspect_linux(fs: &dyn FsRead, root: &str, findings: &mut Vec<Finding>) -> OsReport {
    let id = identify(fs);
    if id.distro == "unknown" {
        findings.push(Finding {
            code: "linux-distro-unknown",
            severity: Severity::Warning,
            location: Some(root.to_owned()),
            message: "no os-release, lsb-release or distro release file identifies this Linux"
                .into(),
        });
    }
    let pkg = package_system(&id.distro, id.major);
    let kernels = kernels(fs);
    for k in &kernels {
        if k.virtio
            .iter()
            .any(|(n, s)| n == "virtio_blk" && s == "missing")
        {
            findings.push(Finding {
                code: "kernel-no-virtio-blk",
                severity: Severity::Warning,
                location: Some(format!("{root}:{}", k.path)),
                message: format!("kernel {} has no virtio_blk driver", k.version),
            });
        }
    }
    OsReport {
        root: root.to_owned(),
        os_type: "linux".into(),
        osinfo: osrelease::osinfo_short_id(&id.distro, id.major, id.minor),
        distro: id.distro.clone(),
        product_name: id.product_name,
        product_variant: id.product_variant,
        major_version: id.major,
        minor_version: id.minor,
        build_id: None,
        arch: detect_arch(fs),
        hostname: detect_hostname(fs),
        package_format: pkg.map(|p| p.0.to_owned()),
        package_management: pkg.map(|p| p.1.to_owned()),
        mountpoints: Vec::new(),
        initramfs_generator: initramfs_generator(fs, &id.distro),
        kernels,
        network: network(fs),
        hypervisor_tools: hypervisor_tools(fs),
        windows: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_arches() {
        let mut h = [0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18] = 62;
        assert_eq!(elf_arch(&h), Some("x86_64"));
        h[18] = 183;
        assert_eq!(elf_arch(&h), Some("aarch64"));
        h[18] = 21;
        assert_eq!(elf_arch(&h), Some("ppc64le"));
        assert_eq!(elf_arch(&h[..10]), None);
        assert_eq!(elf_arch(b"MZ\x90\0"), None);
    }

    #[test]
    fn package_systems() {
        assert_eq!(package_system("rhel", 7), Some(("rpm", "yum")));
        assert_eq!(package_system("rhel", 9), Some(("rpm", "dnf")));
        assert_eq!(package_system("debian", 12), Some(("deb", "apt")));
        assert_eq!(package_system("sles", 15), Some(("rpm", "zypper")));
        assert_eq!(package_system("plan9", 1), None);
    }
}
