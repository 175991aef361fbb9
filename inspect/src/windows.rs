//! Windows inspection: version, edition and build from the SOFTWARE hive, hostname, control set,
//! drive letters and drivers from the SYSTEM hive, arch from `cmd.exe`, hibernation state.

use guestfs::{FsRead, FsReadExt};
use hive::Hive;

use crate::linux::network::{Method, NetIface, NetStyle, netmask_to_prefix};
use crate::report::{Finding, OsReport, Severity, WindowsDriver, WindowsReport};

/// Largest hive we read (SOFTWARE hives of long-lived servers reach a few hundred MiB).
const HIVE_CAP: u64 = 512 << 20;

/// Where `MountedDevices` says a drive letter lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountedDevice {
    /// An MBR partition: disk signature and partition byte offset.
    Mbr {
        /// MBR disk signature.
        signature: u32,
        /// Partition start in bytes.
        offset: u64,
    },
    /// A GPT partition by its unique GUID, lowercase dashed.
    Gpt(String),
}

/// Decodes a `MountedDevices` value: 12 bytes (MBR) or `DMIO:ID:` + GUID (GPT).
#[must_use]
pub fn decode_mounted_device(data: &[u8]) -> Option<MountedDevice> {
    if data.len() == 12 {
        let sig = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
        let off = u64::from_le_bytes(data.get(4..12)?.try_into().ok()?);
        return Some(MountedDevice::Mbr {
            signature: sig,
            offset: off,
        });
    }
    let g = data.strip_prefix(b"DMIO:ID:")?;
    let g: [u8; 16] = g.get(..16)?.try_into().ok()?;
    Some(MountedDevice::Gpt(guid_string(&g)))
}

/// Formats a mixed-endian GUID the way Windows and Linux print it, lowercase.
#[must_use]
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

/// Architecture from a PE image's COFF machine field.
#[must_use]
pub fn pe_arch(image: &[u8]) -> Option<&'static str> {
    if image.get(..2) != Some(b"MZ") {
        return None;
    }
    let lfanew = u32::from_le_bytes(image.get(0x3c..0x40)?.try_into().ok()?);
    let at = usize::try_from(lfanew).ok()?;
    if image.get(at..at.checked_add(4)?) != Some(b"PE\0\0") {
        return None;
    }
    let m = image.get(at.checked_add(4)?..at.checked_add(6)?)?;
    Some(match u16::from_le_bytes([m[0], m[1]]) {
        0x8664 => "x86_64",
        0x014c => "i386",
        0xaa64 => "aarch64",
        0x01c4 => "arm",
        _ => return None,
    })
}

/// libosinfo's short id for a Windows version.
#[must_use]
pub fn osinfo_id(major: u32, minor: u32, build: u32, server: bool) -> Option<&'static str> {
    Some(match (major, minor, server) {
        (5, 1, false) => "winxp",
        (5, 2, true) => "win2k3",
        (6, 0, false) => "winvista",
        (6, 0, true) => "win2k8",
        (6, 1, false) => "win7",
        (6, 1, true) => "win2k8r2",
        (6, 2, false) => "win8",
        (6, 2, true) => "win2k12",
        (6, 3, false) => "win8.1",
        (6, 3, true) => "win2k12r2",
        (10, 0, false) if build >= 22000 => "win11",
        (10, 0, false) => "win10",
        (10, 0, true) if build >= 26100 => "win2k25",
        (10, 0, true) if build >= 20348 => "win2k22",
        (10, 0, true) if build >= 17763 => "win2k19",
        (10, 0, true) => "win2k16",
        _ => return None,
    })
}

/// Driver services inspection reports, with their role.
const DRIVERS: [(&str, &str); 46] = [
    ("Tcpip", "network"),
    ("LSI_SAS", "storage"),
    ("LSI_SAS2", "storage"),
    ("LSI_SAS3", "storage"),
    ("LSI_SCSI", "storage"),
    ("pvscsi", "storage"),
    ("storahci", "storage"),
    ("msahci", "storage"),
    ("iaStorV", "storage"),
    ("atapi", "storage"),
    ("intelide", "storage"),
    ("pciide", "storage"),
    ("stornvme", "storage"),
    ("viostor", "storage"),
    ("vioscsi", "storage"),
    ("storvsc", "storage"),
    ("xenvbd", "storage"),
    ("vmxnet3ndis6", "network"),
    ("vmxnet3", "network"),
    ("vmxnet", "network"),
    ("E1G60", "network"),
    ("e1iexpress", "network"),
    ("e1express", "network"),
    ("netkvm", "network"),
    ("netvsc", "network"),
    ("xennet", "network"),
    ("VMTools", "hypervisor-tools"),
    ("vmci", "hypervisor-tools"),
    ("vmhgfs", "hypervisor-tools"),
    ("vmmemctl", "hypervisor-tools"),
    ("vm3dmp", "hypervisor-tools"),
    ("vmrawdsk", "hypervisor-tools"),
    ("vmusbmouse", "hypervisor-tools"),
    ("vmmouse", "hypervisor-tools"),
    ("vmvss", "hypervisor-tools"),
    ("VGAuthService", "hypervisor-tools"),
    ("vmicheartbeat", "hypervisor-tools"),
    ("vmickvpexchange", "hypervisor-tools"),
    ("vmicshutdown", "hypervisor-tools"),
    ("vmictimesync", "hypervisor-tools"),
    ("vmicvss", "hypervisor-tools"),
    ("xenbus", "hypervisor-tools"),
    ("xeniface", "hypervisor-tools"),
    ("xenagent", "hypervisor-tools"),
    ("balloon", "other"),
    ("vioserial", "other"),
];

/// Finds the systemroot directory (`/Windows` or `/WINNT`) of a Windows root filesystem.
#[must_use]
pub fn systemroot(fs: &dyn FsRead) -> Option<String> {
    for dir in ["Windows", "WINNT"] {
        let hive = format!("/{dir}/System32/config/SYSTEM");
        if fs.exists(hive.as_bytes()).unwrap_or(false) {
            // Report the name as stored on disk (NTFS lookups are case-insensitive).
            let stored = fs
                .read_dir(&guestfs::GuestPath::root())
                .ok()
                .and_then(|es| {
                    es.into_iter()
                        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                        .find(|n| n.eq_ignore_ascii_case(dir))
                })
                .unwrap_or_else(|| dir.to_owned());
            return Some(format!("/{stored}"));
        }
    }
    None
}

/// Opens a hive file of the guest. Dirty hives are read anyway (inspection never writes) with a
/// warning, since their contents may be stale.
fn open_hive(fs: &dyn FsRead, path: &str, loc: &str, findings: &mut Vec<Finding>) -> Option<Hive> {
    let bytes = match fs.read_file(path.as_bytes(), HIVE_CAP) {
        Ok(b) => b,
        Err(e) => {
            findings.push(Finding {
                code: "hive-unreadable",
                severity: Severity::Warning,
                location: Some(format!("{loc}:{path}")),
                message: format!("cannot read hive file: {e}"),
            });
            return None;
        }
    };
    let hive = match Hive::options().allow_dirty(true).open(bytes) {
        Ok(h) => h,
        Err(e) => {
            findings.push(Finding {
                code: "hive-corrupt",
                severity: Severity::Warning,
                location: Some(format!("{loc}:{path}")),
                message: format!("cannot parse hive: {e}"),
            });
            return None;
        }
    };
    if hive.is_dirty() {
        findings.push(Finding {
            code: "hive-dirty",
            severity: Severity::Warning,
            location: Some(format!("{loc}:{path}")),
            message: "hive has pending transaction-log data; values shown may be stale".into(),
        });
    }
    Some(hive)
}

fn string_at(h: &Hive, key: &str, value: &str) -> Option<String> {
    h.open_path(key).ok()??.value(value).ok()??.as_string()
}

fn dword_at(h: &Hive, key: &str, value: &str) -> Option<u32> {
    h.open_path(key).ok()??.value(value).ok()??.as_dword()
}

/// Most services examined in one control set (house style S12).
const MAX_SERVICES: usize = 4096;

/// The services inspection reports: every known storage, network and hypervisor-tools driver,
/// and every other boot-start service (those decide whether Windows finds its disk).
fn services(sys: &Hive, ccs: &str) -> Vec<WindowsDriver> {
    let Ok(Some(svc)) = sys.open_path(&format!("{ccs}\\Services")) else {
        return Vec::new();
    };
    let Ok(keys) = svc.subkeys() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in keys.into_iter().take(MAX_SERVICES) {
        let known = DRIVERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k.name()));
        let start = k.value("Start").ok().flatten().and_then(|v| v.as_dword());
        let role = match (known, start) {
            (Some((_, role)), _) => *role,
            (None, Some(0)) => "boot",
            _ => continue,
        };
        out.push(WindowsDriver {
            name: k.name().to_owned(),
            start,
            role: role.to_owned(),
            image_path: k
                .value("ImagePath")
                .ok()
                .flatten()
                .and_then(|v| v.as_string()),
        });
    }
    out
}

/// Most interfaces read from one control set (house style S12).
const MAX_INTERFACES: usize = 256;

/// Static and DHCP settings of every interface under `Tcpip\Parameters\Interfaces`.
fn tcpip_interfaces(sys: &Hive, ccs: &str) -> Vec<NetIface> {
    let base = format!("{ccs}\\Services\\Tcpip\\Parameters\\Interfaces");
    let Ok(Some(ifaces)) = sys.open_path(&base) else {
        return Vec::new();
    };
    let Ok(keys) = ifaces.subkeys() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for k in keys.into_iter().take(MAX_INTERFACES) {
        let multi = |name: &str| -> Vec<String> {
            k.value(name)
                .ok()
                .flatten()
                .and_then(|v| {
                    v.as_multi_string()
                        .or_else(|| v.as_string().map(|s| vec![s]))
                })
                .unwrap_or_default()
                .into_iter()
                .filter(|s| !s.is_empty() && s != "0.0.0.0")
                .collect()
        };
        let dhcp = k
            .value("EnableDHCP")
            .ok()
            .flatten()
            .and_then(|v| v.as_dword());
        let ips = multi("IPAddress");
        let masks = multi("SubnetMask");
        if dhcp != Some(1) && ips.is_empty() {
            continue;
        }
        let addresses = ips
            .iter()
            .enumerate()
            .map(
                |(i, ip)| match masks.get(i).and_then(|m| netmask_to_prefix(m)) {
                    Some(p) => format!("{ip}/{p}"),
                    None => ip.clone(),
                },
            )
            .collect();
        out.push(NetIface {
            style: NetStyle::WindowsTcpip,
            file: format!("HKLM\\SYSTEM\\{base}\\{}", k.name()),
            name: k.name().to_owned(),
            mac: None,
            method: if dhcp == Some(1) {
                Method::Dhcp
            } else {
                Method::Static
            },
            addresses,
            gateway: multi("DefaultGateway").into_iter().next(),
        });
    }
    out
}

/// What inspection needs to know about the disk to map drive letters.
pub struct DiskIds<'a> {
    /// MBR disk signature, if the disk is MBR.
    pub mbr_signature: Option<u32>,
    /// (device name, partition start in bytes, GPT partition GUID).
    pub partitions: &'a [(String, u64, Option<String>)],
}

/// Inspects a Windows root. `fs` is the system volume; `root` its device name.
pub fn inspect_windows(
    fs: &dyn FsRead,
    root: &str,
    disk: &DiskIds<'_>,
    findings: &mut Vec<Finding>,
) -> Option<OsReport> {
    let sysroot = systemroot(fs)?;
    let mut win = WindowsReport {
        systemroot: sysroot.clone(),
        ..Default::default()
    };
    let software = open_hive(
        fs,
        &format!("{sysroot}/System32/config/SOFTWARE"),
        root,
        findings,
    );
    let system = open_hive(
        fs,
        &format!("{sysroot}/System32/config/SYSTEM"),
        root,
        findings,
    );

    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    let (mut product, mut major, mut minor, mut build) = (String::new(), 0, 0, None);
    if let Some(sw) = &software {
        product = string_at(sw, cv, "ProductName").unwrap_or_default();
        let legacy = string_at(sw, cv, "CurrentVersion")
            .and_then(|v| crate::linux::osrelease::parse_version(&v));
        major = dword_at(sw, cv, "CurrentMajorVersionNumber")
            .or(legacy.map(|v| v.0))
            .unwrap_or(0);
        minor = dword_at(sw, cv, "CurrentMinorVersionNumber")
            .or(legacy.map(|v| v.1))
            .unwrap_or(0);
        build =
            string_at(sw, cv, "CurrentBuildNumber").or_else(|| string_at(sw, cv, "CurrentBuild"));
        win.edition = string_at(sw, cv, "EditionID");
        win.installation_type = string_at(sw, cv, "InstallationType");
    }
    let server = win
        .installation_type
        .as_deref()
        .map_or_else(|| product.contains("Server"), |t| t.starts_with("Server"));
    let build_no: u32 = build.as_deref().and_then(|b| b.parse().ok()).unwrap_or(0);

    let mut hostname = None;
    let mut network = Vec::new();
    if let Some(sys) = &system {
        let current = dword_at(sys, "Select", "Current");
        let ccs = current.map(|n| format!("ControlSet{n:03}"));
        if ccs.is_none() {
            findings.push(Finding {
                code: "windows-no-current-control-set",
                severity: Severity::Warning,
                location: Some(format!("{root}:SYSTEM\\Select")),
                message: "SYSTEM hive has no Select\\Current value".into(),
            });
        }
        if let Some(ccs) = &ccs {
            hostname = string_at(
                sys,
                &format!("{ccs}\\Services\\Tcpip\\Parameters"),
                "Hostname",
            )
            .or_else(|| {
                string_at(
                    sys,
                    &format!("{ccs}\\Control\\ComputerName\\ComputerName"),
                    "ComputerName",
                )
            });
            win.drivers = services(sys, ccs);
            win.fast_startup = dword_at(
                sys,
                &format!("{ccs}\\Control\\Session Manager\\Power"),
                "HiberbootEnabled",
            ) == Some(1);
            network = tcpip_interfaces(sys, ccs);
        }
        win.current_control_set = ccs;
        if let Ok(Some(md)) = sys.open_path("MountedDevices")
            && let Ok(values) = md.values()
        {
            for v in values {
                let Some(letter) = v.name.strip_prefix("\\DosDevices\\") else {
                    continue;
                };
                let dev = match decode_mounted_device(&v.data) {
                    Some(MountedDevice::Mbr { signature, offset })
                        if disk.mbr_signature == Some(signature) =>
                    {
                        disk.partitions
                            .iter()
                            .find(|p| p.1 == offset)
                            .map(|p| p.0.clone())
                    }
                    Some(MountedDevice::Gpt(g)) => disk
                        .partitions
                        .iter()
                        .find(|p| p.2.as_deref() == Some(g.as_str()))
                        .map(|p| p.0.clone()),
                    _ => None,
                };
                if let Some(dev) = dev {
                    win.drive_mappings
                        .push((letter.trim_end_matches(':').to_owned(), dev));
                }
            }
            win.drive_mappings.sort();
        }
    }

    let mut hdr = [0u8; 4];
    if let Ok(p) = guestfs::resolve(fs, b"/hiberfil.sys", guestfs::Follow::Final)
        && fs.read_at(&p, 0, &mut hdr).ok() == Some(4)
    {
        win.hibernated = hdr.eq_ignore_ascii_case(b"hibr") || hdr.eq_ignore_ascii_case(b"rstr");
        if win.hibernated {
            findings.push(Finding {
                code: "windows-hibernated",
                severity: Severity::Error,
                location: Some(format!("{root}:/hiberfil.sys")),
                message: "Windows is hibernated (or shut down with Fast Startup); boot it and shut it down fully before converting".into(),
            });
        }
    }

    let arch = fs
        .read_file(format!("{sysroot}/System32/cmd.exe").as_bytes(), 16 << 20)
        .ok()
        .and_then(|b| pe_arch(&b).map(str::to_owned));

    Some(OsReport {
        root: root.to_owned(),
        os_type: "windows".into(),
        distro: "windows".into(),
        product_name: product,
        product_variant: win.installation_type.clone(),
        major_version: major,
        minor_version: minor,
        osinfo: osinfo_id(major, minor, build_no, server).map(str::to_owned),
        build_id: build,
        arch,
        hostname,
        package_format: None,
        package_management: None,
        mountpoints: Vec::new(),
        kernels: Vec::new(),
        initramfs_generator: None,
        network,
        hypervisor_tools: win
            .drivers
            .iter()
            .filter(|d| d.role == "hypervisor-tools" && d.start != Some(4))
            .map(|d| d.name.clone())
            .collect(),
        windows: Some(win),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_devices_decode() {
        let mut mbr = 0x1234_5678u32.to_le_bytes().to_vec();
        mbr.extend_from_slice(&1_048_576u64.to_le_bytes());
        assert_eq!(
            decode_mounted_device(&mbr),
            Some(MountedDevice::Mbr {
                signature: 0x1234_5678,
                offset: 1_048_576
            })
        );
        let mut gpt = b"DMIO:ID:".to_vec();
        gpt.extend_from_slice(&[
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ]);
        assert_eq!(
            decode_mounted_device(&gpt),
            Some(MountedDevice::Gpt(
                "c12a7328-f81f-11d2-ba4b-00a0c93ec93b".into()
            ))
        );
        assert_eq!(decode_mounted_device(b"short"), None);
        assert_eq!(decode_mounted_device(b"DMIO:ID:short"), None);
    }

    #[test]
    fn osinfo_ids() {
        assert_eq!(osinfo_id(6, 1, 7601, true), Some("win2k8r2"));
        assert_eq!(osinfo_id(6, 3, 9600, true), Some("win2k12r2"));
        assert_eq!(osinfo_id(10, 0, 14393, true), Some("win2k16"));
        assert_eq!(osinfo_id(10, 0, 17763, true), Some("win2k19"));
        assert_eq!(osinfo_id(10, 0, 20348, true), Some("win2k22"));
        assert_eq!(osinfo_id(10, 0, 22631, false), Some("win11"));
        assert_eq!(osinfo_id(10, 0, 19045, false), Some("win10"));
        assert_eq!(osinfo_id(3, 1, 0, false), None);
    }

    #[test]
    fn pe_machine() {
        let mut img = vec![0u8; 256];
        img[..2].copy_from_slice(b"MZ");
        img[0x3c] = 0x80;
        img[0x80..0x84].copy_from_slice(b"PE\0\0");
        img[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        assert_eq!(pe_arch(&img), Some("x86_64"));
        img[0x3c] = 0xff;
        assert_eq!(pe_arch(&img), None);
        img[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pe_arch(&img), None);
    }
}
