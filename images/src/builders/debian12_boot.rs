//! `debian12-boot`: a real, bootable Debian 12 made to look migrated from VMware, for boot tests.
//!
//! Unlike the other images (synthetic file trees, no root), this one is installed for real with
//! `debootstrap` from the Debian archive into an ext4 partition on a loop device, then made
//! VMware-like by `debian12_boot.sh` (see its header): `/dev/sda1` in fstab and on the kernel
//! command line, an initramfs with `MODULES=list` and only SATA/SCSI drivers (no virtio), a static
//! address on `ens192` plus a MAC pin, open-vm-tools, no serial console, and the guest-side probe
//! `rehost-probe.service`. Running the guest's own tools in a chroot happens only here, at
//! image build time; rehost itself never runs guest code.
//!
//! It needs root (loop devices, mounts, chroot) and network access to the Debian archive on the
//! first build; downloaded `.deb` files are kept in `<cache>/debs` so rebuilds download nothing
//! new. The image is cached as `<cache>/debian12-boot-<key>.raw`, the key hashing this file, the
//! script and the debootstrap version. It is not part of [`crate::names`]: the all-image
//! inspection tests build every listed image and must stay root-free and offline.

use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::cache;
use crate::error::{Error, Result, io};
use crate::tools::{self, Tool};

/// The image name.
pub(crate) const NAME: &str = "debian12-boot";
/// This module's text, part of the cache key.
const SOURCE: &str = include_str!("debian12_boot.rs");
/// The build script, part of the cache key.
const SCRIPT: &str = include_str!("debian12_boot.sh");

const DEBOOTSTRAP: Tool = Tool {
    program: "debootstrap",
    package: "debootstrap",
    version_arg: "--version",
};
const BASH: Tool = Tool {
    program: "bash",
    package: "bash",
    version_arg: "--version",
};

/// Facts about `debian12-boot` that boot tests check against (the script writes these values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootImageFacts {
    /// Image name.
    pub name: &'static str,
    /// Root device named by `/etc/fstab` and the kernel's `root=` (as on VMware).
    pub root_device: &'static str,
    /// UUID of the ext4 root filesystem (partition 1).
    pub root_uuid: &'static str,
    /// MBR disk signature.
    pub disk_id: &'static str,
    /// Host name.
    pub hostname: &'static str,
    /// Interface the static configuration names (`/etc/network/interfaces`).
    pub interface: &'static str,
    /// Its static address with prefix (matches qemu's user network).
    pub address: &'static str,
    /// Its gateway.
    pub gateway: &'static str,
    /// The VMware MAC pinned to `interface` by `/etc/udev/rules.d/70-persistent-net.rules`.
    pub vmware_mac: &'static str,
    /// Drivers in the initramfs (`/etc/initramfs-tools/modules`, `MODULES=list`).
    pub initramfs_modules: &'static [&'static str],
    /// root's password (a test image).
    pub root_password: &'static str,
    /// The marker the guest-side probe prints on ttyS0 (issue 5: `REHOST-PROBE root=… ip=…`).
    pub probe_marker: &'static str,
}

/// The facts of `debian12-boot`.
pub(crate) static FACTS: BootImageFacts = BootImageFacts {
    name: NAME,
    root_device: "/dev/sda1",
    root_uuid: "4f3c2b1a-0d9e-4c8b-a7f6-5e4d3c2b1a09",
    disk_id: "0xdeb12b00",
    hostname: "debian12-boot",
    interface: "ens192",
    address: "10.0.2.15/24",
    gateway: "10.0.2.2",
    vmware_mac: "00:50:56:9a:12:34",
    initramfs_modules: &["ahci", "sd_mod", "vmw_pvscsi", "mptspi", "ext4"],
    root_password: "rehost",
    probe_marker: "REHOST-PROBE",
};

/// The cache key: SHA-256 over this file, the script and the debootstrap version.
pub(crate) fn key() -> Result<String> {
    let versions = vec![tools::version(DEBOOTSTRAP)?];
    let digest = sha2::Sha256::digest(SCRIPT.as_bytes());
    Ok(cache::cache_key(
        NAME,
        &[SOURCE, SCRIPT],
        &versions,
        &digest,
    ))
}

/// Builds the image unless cached; returns the raw image's path.
pub(crate) fn build() -> Result<PathBuf> {
    let debootstrap = tools::locate(DEBOOTSTRAP)?;
    let bash = tools::locate(BASH)?;
    if !tools::is_root() {
        return Err(Error::NeedsRoot {
            image: NAME.to_owned(),
            why: "debootstrap, loop devices, mounts and chroot need root",
        });
    }
    let dir = cache::cache_dir();
    let path = dir.join(format!("{NAME}-{}.raw", key()?));
    let debs = dir.join("debs");
    cache::get_or_build(&dir, NAME, NAME, &path, |tmp, _| {
        std::fs::create_dir_all(&debs).map_err(io(&debs))?;
        // The script mounts /dev, /proc and /sys under WORK. It unmounts them itself, but if it
        // died without doing so, deleting WORK would recurse into the host's /dev: so WORK is
        // our own directory, removed only once nothing is mounted below it.
        let work = tempfile::Builder::new()
            .prefix("rehost-debian12-boot-")
            .tempdir()
            .map_err(io(std::env::temp_dir()))?
            .keep();
        let script = work.join("build.sh");
        std::fs::write(&script, SCRIPT).map_err(io(&script))?;
        let mut cmd = std::process::Command::new(&bash);
        cmd.arg(&script)
            .env("OUT", tmp)
            .env("WORK", &work)
            .env("DEB_CACHE", &debs)
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    debootstrap
                        .parent()
                        .unwrap_or_else(|| Path::new("/usr/sbin"))
                        .display()
                ),
            );
        tracing::debug!(image = NAME, work = %work.display(), "debootstrap build");
        let result = tools::run(&mut cmd).map(|_| ());
        if mounted_below(&work) {
            tracing::warn!(work = %work.display(), "mounts left behind; not removing");
        } else {
            let _ = std::fs::remove_dir_all(&work);
        }
        result
    })
}

/// Whether anything is mounted at or below `dir` (from `/proc/self/mountinfo`, field 5).
fn mounted_below(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        // Cannot tell: assume the worst, so nothing is deleted.
        return true;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(mp).starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_writes_the_facts() {
        // The script is the source of truth for the image; the facts must match it.
        assert!(SCRIPT.contains(&format!("ROOT_UUID={}", FACTS.root_uuid)));
        assert!(SCRIPT.contains(&format!("DISK_ID={}", FACTS.disk_id)));
        assert!(SCRIPT.contains(&format!("VMWARE_MAC={}", FACTS.vmware_mac)));
        assert!(SCRIPT.contains(&format!("{} / ext4", FACTS.root_device)));
        assert!(SCRIPT.contains(&format!("allow-hotplug {}", FACTS.interface)));
        assert!(SCRIPT.contains(&format!("address {}", FACTS.address)));
        assert!(SCRIPT.contains(&format!("gateway {}", FACTS.gateway)));
        assert!(SCRIPT.contains(&format!("echo {} >", FACTS.hostname)));
        assert!(SCRIPT.contains(&format!("root:{}", FACTS.root_password)));
        assert!(SCRIPT.contains(&format!(
            "printf '%s\\n' {} >>",
            FACTS.initramfs_modules.join(" ")
        )));
        assert!(SCRIPT.contains(&format!(
            "echo \"{} root=${{root:-unknown}} ip=${{ips:-none}} ",
            FACTS.probe_marker
        )));
        // No serial console on the kernel command line: GRUB's defaults are left plain.
        assert!(SCRIPT.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n"));
        assert!(SCRIPT.contains("GRUB_CMDLINE_LINUX=\"\"\n"));
    }

    #[test]
    fn mountinfo_check() {
        assert!(mounted_below(Path::new("/")));
        let d = tempfile::tempdir().unwrap();
        assert!(!mounted_below(d.path()));
    }
}
