//! Synthetic Windows Server guests (2008 R2 … 2022) as migrated from VMware: NTFS C: with
//! SYSTEM and SOFTWARE hives holding the keys inspection reads, PE32+ `cmd.exe`, kernel and
//! drivers, VMware Tools; BIOS variants on MBR with a "System Reserved" partition holding
//! `bootmgr` and `\Boot\BCD`; UEFI variants on GPT with ESP (`\EFI\Microsoft\Boot\BCD`), MSR and C:.
//! One module builds all of them from a [`Win`] parameter block.

use crate::error::Result;
use crate::expected::*;
use crate::hive::{HiveSpec, Reg};
use crate::plan::*;
use crate::synth::{self, SUBSYSTEM_CONSOLE, SUBSYSTEM_EFI_APPLICATION, SUBSYSTEM_NATIVE};
use crate::tree::Tree;

/// This module's text, part of the cache key.
pub(crate) const SOURCE: &str = include_str!("windows.rs");

/// Everything that differs between the Windows images.
pub(crate) struct Win {
    /// The facts (also the source of hostname, addresses, versions).
    pub(crate) expected: &'static Expected,
    /// GPT + ESP + MSR (true) or MBR + System Reserved (false).
    pub(crate) uefi: bool,
    /// MBR disk signature (BIOS variants).
    pub(crate) mbr_signature: u32,
    /// `CurrentBuild` / `CurrentBuildNumber` is in `expected.windows`; this is `UBR` (10.0 only).
    pub(crate) ubr: u32,
    /// `ReleaseId` (10.0 only).
    pub(crate) release_id: Option<&'static str>,
    /// `DisplayVersion` (2022).
    pub(crate) display_version: Option<&'static str>,
    /// `BuildLabEx`.
    pub(crate) build_lab_ex: &'static str,
    /// Partition GUIDs (UEFI: ESP, MSR, C:) or unused.
    pub(crate) part_guids: [&'static str; 3],
    /// Volume GUIDs for `\??\Volume{…}` entries (first partition, C:).
    pub(crate) volume_guids: [&'static str; 2],
    /// ESP volume id (UEFI).
    pub(crate) esp_uuid: &'static str,
    /// `hiberfil.sys` present, with this 4-byte signature (`HIBR`: hibernated; zeros: hibernation
    /// enabled but the system was shut down cleanly), or absent.
    pub(crate) hiberfil: Option<&'static [u8; 4]>,
}

const BOOTMGR_GUID: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
const DEFAULT_ENTRY_GUID: &str = "{5b2f3c1e-8a9d-11e8-9f2b-c1d2e3f4a5b6}";
const NIC_GUID: &str = "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}";
const NET_CLASS: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";
/// Service Type values (REG_DWORD `Type`): kernel driver, own-process service.
const SERVICE_KERNEL_DRIVER: u32 = 1;
const SERVICE_WIN32_OWN_PROCESS: u32 = 0x10;

/// A service: name, Type, Start, Group, image path, display name.
struct Service {
    name: &'static str,
    kind: u32,
    start: u32,
    group: &'static str,
    image: &'static str,
    display: &'static str,
}

fn services(w: &Win) -> Vec<Service> {
    let ex = w
        .expected
        .windows
        .as_ref()
        .map(|x| x.boot_start_services)
        .unwrap_or_default();
    let start = |name: &str, otherwise: u32| if ex.contains(&name) { 0 } else { otherwise };
    let drv = |name: &'static str,
               group: &'static str,
               image: &'static str,
               display: &'static str,
               otherwise: u32| Service {
        name,
        kind: SERVICE_KERNEL_DRIVER,
        start: start(name, otherwise),
        group,
        image,
        display,
    };
    let listed = w
        .expected
        .windows
        .as_ref()
        .map(|x| x.services)
        .unwrap_or_default();
    let all = vec![
        drv(
            "disk",
            "SCSI Class",
            "System32\\drivers\\disk.sys",
            "Disk Driver",
            0,
        ),
        drv(
            "pvscsi",
            "SCSI miniport",
            "System32\\drivers\\pvscsi.sys",
            "pvscsi",
            3,
        ),
        drv(
            "LSI_SAS",
            "SCSI miniport",
            "System32\\drivers\\lsi_sas.sys",
            "LSI_SAS",
            3,
        ),
        drv(
            "storahci",
            "SCSI miniport",
            "System32\\drivers\\storahci.sys",
            "Microsoft Standard SATA AHCI Driver",
            3,
        ),
        drv(
            "msahci",
            "SCSI miniport",
            "system32\\DRIVERS\\msahci.sys",
            "msahci",
            3,
        ),
        drv(
            "intelide",
            "System Bus Extender",
            "System32\\drivers\\intelide.sys",
            "intelide",
            3,
        ),
        drv(
            "atapi",
            "SCSI miniport",
            "System32\\drivers\\atapi.sys",
            "IDE Channel",
            3,
        ),
        drv(
            "vmxnet3",
            "NDIS",
            "System32\\drivers\\vmxnet3.sys",
            "vmxnet3 Ethernet Adapter",
            3,
        ),
        drv(
            "Tcpip",
            "PNP_TDI",
            "System32\\drivers\\tcpip.sys",
            "TCP/IP Protocol Driver",
            1,
        ),
        Service {
            name: "VMTools",
            kind: SERVICE_WIN32_OWN_PROCESS,
            start: 2,
            group: "",
            image: "\"C:\\Program Files\\VMware\\VMware Tools\\vmtoolsd.exe\"",
            display: "VMware Tools",
        },
    ];
    all.into_iter()
        .filter(|s| listed.contains(&s.name))
        .collect()
}

/// GUID text (with or without braces) to its 16-byte mixed-endian on-disk form (as in GPT).
fn guid_bytes(g: &str) -> [u8; 16] {
    let hex: String = g.chars().filter(char::is_ascii_hexdigit).collect();
    let mut raw = [0u8; 16];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    out
}

fn prefix_to_mask(prefix: u32) -> String {
    let m = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    let b = m.to_be_bytes();
    format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3])
}

/// The partition layout as (number, start MiB, size MiB).
fn layout(w: &Win) -> Vec<(u32, u64, u64)> {
    if w.uefi {
        vec![(1, 1, 64), (2, 65, 16), (3, 81, 176)]
    } else {
        vec![(1, 1, 64), (2, 65, 192)]
    }
}

fn system_hive(w: &Win) -> String {
    let e = w.expected;
    // OK to expect: every Windows builder's Expected has `windows` set (checked by a unit test).
    let x = e.windows.as_ref().expect("windows facts");
    let nic = &e.network[0];
    let mut r = Reg::new("HKEY_LOCAL_MACHINE\\SYSTEM");
    r.key("Select")
        .dword("Current", 1)
        .dword("Default", 1)
        .dword("Failed", 0)
        .dword("LastKnownGood", 1);
    r.key("Setup")
        .dword("SystemSetupInProgress", 0)
        .sz("CmdLine", "setup -newsetup");
    let cs = "ControlSet001";
    r.key(&format!("{cs}\\Control\\ComputerName\\ComputerName"))
        .sz("ComputerName", e.hostname);
    r.key(&format!("{cs}\\Control\\ComputerName\\ActiveComputerName"))
        .sz("ComputerName", e.hostname);
    r.key(&format!("{cs}\\Control\\Session Manager\\Environment"))
        .sz("PROCESSOR_ARCHITECTURE", "AMD64")
        .sz("OS", "Windows_NT")
        .expand_sz(
            "Path",
            "%SystemRoot%\\system32;%SystemRoot%;%SystemRoot%\\System32\\Wbem",
        );
    r.key(&format!("{cs}\\Control\\Session Manager\\Power"))
        .dword("HiberbootEnabled", u32::from(x.fast_startup));
    r.key(&format!("{cs}\\Control\\Power"))
        .dword("HibernateEnabled", u32::from(w.hiberfil.is_some()));
    r.key(&format!(
        "{cs}\\Control\\Class\\{{4d36e97b-e325-11ce-bfc1-08002be10318}}"
    ))
    .sz("Class", "SCSIAdapter");
    if x.current_version == "6.1" {
        // Windows 7 / 2008 R2 still match boot devices through the CriticalDeviceDatabase.
        r.key(&format!(
            "{cs}\\Control\\CriticalDeviceDatabase\\pci#ven_15ad&dev_07c0"
        ))
        .sz("Service", "pvscsi")
        .sz("ClassGUID", "{4D36E97B-E325-11CE-BFC1-08002BE10318}");
    }
    for s in services(w) {
        r.key(&format!("{cs}\\Services\\{}", s.name))
            .dword("Type", s.kind)
            .dword("Start", s.start)
            .dword("ErrorControl", 1);
        if !s.group.is_empty() {
            r.sz("Group", s.group);
        }
        r.expand_sz("ImagePath", s.image)
            .sz("DisplayName", s.display);
    }
    let (ip, prefix) = nic.address.split_once('/').unwrap_or((nic.address, "24"));
    let prefix: u32 = prefix.parse().unwrap_or(24);
    r.key(&format!("{cs}\\Services\\Tcpip\\Parameters"))
        .sz("Hostname", e.hostname)
        .sz("NV Hostname", e.hostname)
        .sz("Domain", "");
    r.key(&format!(
        "{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{NIC_GUID}"
    ))
    .dword("EnableDHCP", 0)
    .multi_sz("IPAddress", &[ip])
    .multi_sz("SubnetMask", &[&prefix_to_mask(prefix)])
    .multi_sz("DefaultGateway", &[nic.gateway])
    .sz("NameServer", nic.gateway);
    r.key(&format!(
        "{cs}\\Control\\Network\\{NET_CLASS}\\{NIC_GUID}\\Connection"
    ))
    .sz("Name", "Ethernet0")
    .sz(
        "PnPInstanceID",
        "PCI\\VEN_15AD&DEV_07B0&SUBSYS_07B015AD&REV_01\\FF565000AABB0021",
    );
    // MountedDevices: MBR form is disk signature (u32 LE) + partition byte offset (u64 LE);
    // GPT form is "DMIO:ID:" + the partition GUID (16 bytes, on-disk byte order).
    let parts = layout(w);
    let c = parts.last().copied().unwrap_or((2, 65, 192));
    let first = parts[0];
    let entry = |num: u32, start_mib: u64| -> Vec<u8> {
        if w.uefi {
            let mut v = b"DMIO:ID:".to_vec();
            v.extend_from_slice(&guid_bytes(
                w.part_guids[usize::try_from(num - 1).unwrap_or(0)],
            ));
            v
        } else {
            let mut v = w.mbr_signature.to_le_bytes().to_vec();
            v.extend_from_slice(&(start_mib << 20).to_le_bytes());
            v
        }
    };
    r.key("MountedDevices")
        .binary("\\DosDevices\\C:", &entry(c.0, c.1))
        .binary(
            &format!("\\??\\Volume{{{}}}", w.volume_guids[1]),
            &entry(c.0, c.1),
        )
        .binary(
            &format!("\\??\\Volume{{{}}}", w.volume_guids[0]),
            &entry(first.0, first.1),
        );
    r.finish()
}

fn software_hive(w: &Win) -> String {
    let e = w.expected;
    // OK to expect: see system_hive.
    let x = e.windows.as_ref().expect("windows facts");
    let mut r = Reg::new("HKEY_LOCAL_MACHINE\\SOFTWARE");
    r.key("Microsoft\\Windows NT\\CurrentVersion")
        .sz("ProductName", e.product_name)
        .sz("CurrentVersion", x.current_version)
        .sz("CurrentBuildNumber", x.build)
        .sz("CurrentBuild", x.build)
        .sz("EditionID", x.edition_id)
        .sz("InstallationType", x.installation_type)
        .sz("CurrentType", "Multiprocessor Free")
        .sz("SystemRoot", "C:\\Windows")
        .sz("PathName", "C:\\Windows")
        .sz("RegisteredOwner", "Windows User")
        .sz("BuildLabEx", w.build_lab_ex)
        .dword("InstallDate", 1_700_000_000);
    if e.version_major >= 10 {
        r.dword("CurrentMajorVersionNumber", e.version_major)
            .dword("CurrentMinorVersionNumber", e.version_minor);
        r.dword("UBR", w.ubr);
    }
    if let Some(id) = w.release_id {
        r.sz("ReleaseId", id);
    }
    if let Some(d) = w.display_version {
        r.sz("DisplayVersion", d);
    }
    r.key("Microsoft\\Windows\\CurrentVersion")
        .sz("ProgramFilesDir", "C:\\Program Files")
        .sz("CommonFilesDir", "C:\\Program Files\\Common Files");
    r.key("Microsoft\\Windows\\CurrentVersion\\Uninstall\\{8AF4A8A0-3C24-4C8D-9D6E-0C8F3E2A1B77}")
        .sz("DisplayName", "VMware Tools")
        .sz("DisplayVersion", "12.3.5.22544099")
        .sz("Publisher", "VMware, Inc.")
        .sz(
            "InstallLocation",
            "C:\\Program Files\\VMware\\VMware Tools\\",
        );
    r.key("VMware, Inc.\\VMware Tools")
        .sz("InstallPath", "C:\\Program Files\\VMware\\VMware Tools\\");
    r.finish()
}

fn bcd_hive(w: &Win) -> String {
    let loader = w
        .expected
        .windows
        .as_ref()
        .map(|x| x.bcd_default_loader)
        .unwrap_or_default();
    let mut r = Reg::new("HKEY_LOCAL_MACHINE\\BCD00000000");
    r.key("Description")
        .sz("KeyName", "BCD00000000")
        .dword("System", 1)
        .dword("TreatAsSystem", 1);
    let bm = format!("Objects\\{BOOTMGR_GUID}");
    r.key(&format!("{bm}\\Description"))
        .dword("Type", 0x1010_0002);
    r.key(&format!("{bm}\\Elements\\12000004"))
        .sz("Element", "Windows Boot Manager");
    if w.uefi {
        r.key(&format!("{bm}\\Elements\\12000002"))
            .sz("Element", "\\EFI\\Microsoft\\Boot\\bootmgfw.efi");
    }
    r.key(&format!("{bm}\\Elements\\23000003"))
        .sz("Element", DEFAULT_ENTRY_GUID);
    r.key(&format!("{bm}\\Elements\\24000001"))
        .multi_sz("Element", &[DEFAULT_ENTRY_GUID]);
    r.key(&format!("{bm}\\Elements\\25000004"))
        .qword("Element", 30);
    let de = format!("Objects\\{DEFAULT_ENTRY_GUID}");
    r.key(&format!("{de}\\Description"))
        .dword("Type", 0x1020_0003);
    r.key(&format!("{de}\\Elements\\12000002"))
        .sz("Element", loader);
    r.key(&format!("{de}\\Elements\\12000004"))
        .sz("Element", w.expected.product_name);
    r.key(&format!("{de}\\Elements\\22000002"))
        .sz("Element", "\\Windows");
    r.finish()
}

fn bcd_spec(w: &Win) -> HiveSpec {
    HiveSpec {
        root_name: "BCD00000000",
        file_name: "\\Device\\HarddiskVolume1\\Boot\\BCD",
        prefix: "HKEY_LOCAL_MACHINE\\BCD00000000",
        reg: bcd_hive(w),
    }
}

fn c_drive(w: &Win) -> Tree {
    let mut t = Tree::new();
    let s32 = "Windows/System32";
    t.hive(
        &format!("{s32}/config/SYSTEM"),
        HiveSpec {
            root_name: "ROOT",
            file_name: "\\SystemRoot\\System32\\Config\\SYSTEM",
            prefix: "HKEY_LOCAL_MACHINE\\SYSTEM",
            reg: system_hive(w),
        },
    );
    t.hive(
        &format!("{s32}/config/SOFTWARE"),
        HiveSpec {
            root_name: "ROOT",
            file_name: "\\SystemRoot\\System32\\Config\\SOFTWARE",
            prefix: "HKEY_LOCAL_MACHINE\\SOFTWARE",
            reg: software_hive(w),
        },
    );
    t.file(
        &format!("{s32}/cmd.exe"),
        synth::pe64(SUBSYSTEM_CONSOLE, "cmd.exe"),
    );
    t.file(
        &format!("{s32}/ntoskrnl.exe"),
        synth::pe64(SUBSYSTEM_NATIVE, "ntoskrnl.exe"),
    );
    t.file(
        &format!("{s32}/hal.dll"),
        synth::pe64(SUBSYSTEM_NATIVE, "hal.dll"),
    );
    let loader = if w.uefi { "winload.efi" } else { "winload.exe" };
    let sub = if w.uefi {
        SUBSYSTEM_EFI_APPLICATION
    } else {
        16
    };
    t.file(&format!("{s32}/{loader}"), synth::pe64(sub, loader));
    for s in services(w) {
        if let Some(file) = s.image.rsplit('\\').next().filter(|f| f.ends_with(".sys")) {
            t.file(
                &format!("{s32}/drivers/{file}"),
                synth::pe64(SUBSYSTEM_NATIVE, file),
            );
        }
    }
    t.dir("Windows/SysWOW64")
        .dir("Windows/Temp")
        .dir("Users/Administrator")
        .dir("ProgramData")
        .dir("Program Files/Common Files");
    t.file(
        "Program Files/VMware/VMware Tools/vmtoolsd.exe",
        synth::pe64(2, "vmtoolsd.exe"),
    );
    if let Some(sig) = w.hiberfil {
        // Hibernation file header: the signature in the first 4 bytes, the rest of the page zero.
        let mut page = vec![0u8; 4096];
        page[..4].copy_from_slice(sig);
        t.file("hiberfil.sys", page);
    }
    t
}

/// The plan for `w`.
pub(crate) fn plan(w: &Win) -> Result<Plan> {
    let e = w.expected;
    let parts = layout(w);
    // NTFS serial numbers (as blkid prints them) come from the expected facts.
    let uuid_of = |loc: &str| {
        e.filesystems
            .iter()
            .find(|f| f.location == loc)
            .map_or("", |f| f.uuid)
    };
    let c = Content::Fs(FsSpec {
        kind: FsKind::Ntfs,
        uuid: uuid_of(e.root_location),
        label: "",
        tree: c_drive(w),
    });
    if w.uefi {
        let mut esp = Tree::new();
        esp.file(
            "EFI/Microsoft/Boot/bootmgfw.efi",
            synth::pe64(SUBSYSTEM_EFI_APPLICATION, "bootmgfw.efi"),
        );
        esp.file(
            "EFI/Microsoft/Boot/bootmgr.efi",
            synth::pe64(SUBSYSTEM_EFI_APPLICATION, "bootmgr.efi"),
        );
        esp.hive("EFI/Microsoft/Boot/BCD", bcd_spec(w));
        esp.file(
            "EFI/Boot/bootx64.efi",
            synth::pe64(SUBSYSTEM_EFI_APPLICATION, "bootx64.efi"),
        );
        let disk_guid = e.disk_id;
        Ok(Plan {
            name: e.name,
            size_mib: 258,
            table: Table::Gpt { disk_guid },
            boot_code: BootCode::None,
            parts: vec![
                Part {
                    number: 1,
                    start_mib: parts[0].1,
                    size_mib: parts[0].2,
                    ptype: PartType::Esp,
                    name: "EFI system partition",
                    guid: w.part_guids[0],
                    bootable: false,
                    content: Content::Fs(FsSpec {
                        kind: FsKind::Vfat,
                        uuid: w.esp_uuid,
                        label: "",
                        tree: esp,
                    }),
                },
                Part {
                    number: 2,
                    start_mib: parts[1].1,
                    size_mib: parts[1].2,
                    ptype: PartType::Msr,
                    name: "Microsoft reserved partition",
                    guid: w.part_guids[1],
                    bootable: false,
                    content: Content::Empty,
                },
                Part {
                    number: 3,
                    start_mib: parts[2].1,
                    size_mib: parts[2].2,
                    ptype: PartType::Ntfs,
                    name: "Basic data partition",
                    guid: w.part_guids[2],
                    bootable: false,
                    content: c,
                },
            ],
        })
    } else {
        let mut sr = Tree::new();
        // bootmgr is not a PE image on real systems either (a 16-bit stub plus compressed PE).
        sr.file("bootmgr", b"rehost-images synthetic bootmgr\0".to_vec());
        sr.hive("Boot/BCD", bcd_spec(w));
        sr.dir("Boot/en-US");
        Ok(Plan {
            name: e.name,
            size_mib: 258,
            table: Table::Mbr {
                signature: w.mbr_signature,
            },
            boot_code: BootCode::Windows,
            parts: vec![
                Part {
                    number: 1,
                    start_mib: parts[0].1,
                    size_mib: parts[0].2,
                    ptype: PartType::Ntfs,
                    name: "",
                    guid: "",
                    bootable: true,
                    content: Content::Fs(FsSpec {
                        kind: FsKind::Ntfs,
                        uuid: uuid_of("part1"),
                        label: "System Reserved",
                        tree: sr,
                    }),
                },
                Part {
                    number: 2,
                    start_mib: parts[1].1,
                    size_mib: parts[1].2,
                    ptype: PartType::Ntfs,
                    name: "",
                    guid: "",
                    bootable: false,
                    content: c,
                },
            ],
        })
    }
}

macro_rules! windows_image {
    ($module:ident, $params:expr) => {
        /// One Windows image.
        pub(crate) mod $module {
            use super::*;
            /// Parameters.
            pub(crate) static WIN: Win = $params;
            /// What inspection must find.
            pub(crate) static EXPECTED: &Expected = WIN.expected;
            /// The plan.
            pub(crate) fn plan() -> Result<Plan> {
                super::plan(&WIN)
            }
        }
    };
}

const BIOS_LETTERS: &[(&str, &str)] = &[("C:", "part2")];
const UEFI_LETTERS: &[(&str, &str)] = &[("C:", "part3")];

windows_image!(
    win2008r2_bios,
    Win {
        expected: &Expected {
            name: "win2008r2-bios",
            os_type: "windows",
            distro: "windows",
            version_major: 6,
            version_minor: 1,
            product_name: "Windows Server 2008 R2 Standard",
            osinfo: "win2k8r2",
            arch: "x86_64",
            hostname: "WIN2008R2-VM",
            package_format: None,
            package_manager: None,
            partition_table: "mbr",
            disk_id: "0x20080a01",
            firmware: "bios",
            mbr_boot_code: "windows",
            bootloader: "windows-boot-manager",
            root_fs: "ntfs",
            root_location: "part2",
            filesystems: &[
                ExpectedFs {
                    location: "part1",
                    kind: "ntfs",
                    uuid: "1A1B1C1D00000001",
                    label: "System Reserved"
                },
                ExpectedFs {
                    location: "part2",
                    kind: "ntfs",
                    uuid: "1A1B1C1D00000002",
                    label: ""
                },
            ],
            fstab: &[],
            kernels: &[],
            network: &[ExpectedNic {
                style: "windows-tcpip",
                interface: "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
                mac: "",
                address: "192.168.10.21/24",
                gateway: "192.168.10.1",
                source: "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
            }],
            hypervisor_tools: &["vmware-tools"],
            windows: Some(ExpectedWindows {
                systemroot: "/Windows",
                current_version: "6.1",
                build: "7601",
                edition_id: "ServerStandard",
                installation_type: "Server",
                current_control_set: "ControlSet001",
                drive_letters: BIOS_LETTERS,
                services: &[
                    "disk", "LSI_SAS", "pvscsi", "msahci", "intelide", "atapi", "vmxnet3", "Tcpip",
                    "VMTools"
                ],
                boot_start_services: &["disk", "LSI_SAS"],
                hibernated: false,
                fast_startup: false,
                bcd: "part1:/Boot/BCD",
                bcd_default_loader: "\\Windows\\system32\\winload.exe",
            }),
        },
        uefi: false,
        mbr_signature: 0x2008_0a01,
        ubr: 0,
        release_id: None,
        display_version: None,
        build_lab_ex: "7601.24545.amd64fre.win7sp1_ldr_escrow.200102-1707",
        part_guids: [
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C101",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C102",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C103",
        ],
        volume_guids: [
            "d1e2f3a4-b5c6-11ee-8a9b-005056001001",
            "d1e2f3a4-b5c6-11ee-8a9b-005056001002"
        ],
        esp_uuid: "5E11-C0D1",
        hiberfil: None,
    }
);

windows_image!(
    win2012r2_bios,
    Win {
        expected: &Expected {
            name: "win2012r2-bios",
            os_type: "windows",
            distro: "windows",
            version_major: 6,
            version_minor: 3,
            product_name: "Windows Server 2012 R2 Standard",
            osinfo: "win2k12r2",
            arch: "x86_64",
            hostname: "WIN2012R2-VM",
            package_format: None,
            package_manager: None,
            partition_table: "mbr",
            disk_id: "0x20120a02",
            firmware: "bios",
            mbr_boot_code: "windows",
            bootloader: "windows-boot-manager",
            root_fs: "ntfs",
            root_location: "part2",
            filesystems: &[
                ExpectedFs {
                    location: "part1",
                    kind: "ntfs",
                    uuid: "2A2B2C2D00000001",
                    label: "System Reserved"
                },
                ExpectedFs {
                    location: "part2",
                    kind: "ntfs",
                    uuid: "2A2B2C2D00000002",
                    label: ""
                },
            ],
            fstab: &[],
            kernels: &[],
            network: &[ExpectedNic {
                style: "windows-tcpip",
                interface: "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
                mac: "",
                address: "192.168.10.22/24",
                gateway: "192.168.10.1",
                source: "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
            }],
            hypervisor_tools: &["vmware-tools"],
            windows: Some(ExpectedWindows {
                systemroot: "/Windows",
                current_version: "6.3",
                build: "9600",
                edition_id: "ServerStandard",
                installation_type: "Server",
                current_control_set: "ControlSet001",
                drive_letters: BIOS_LETTERS,
                services: &[
                    "disk", "LSI_SAS", "pvscsi", "storahci", "intelide", "atapi", "vmxnet3",
                    "Tcpip", "VMTools"
                ],
                boot_start_services: &["disk", "LSI_SAS"],
                hibernated: true,
                fast_startup: false,
                bcd: "part1:/Boot/BCD",
                bcd_default_loader: "\\Windows\\system32\\winload.exe",
            }),
        },
        uefi: false,
        mbr_signature: 0x2012_0a02,
        ubr: 0,
        release_id: None,
        display_version: None,
        build_lab_ex: "9600.20778.amd64fre.winblue_ltsb_escrow.230117-1738",
        part_guids: [
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C201",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C202",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C203",
        ],
        volume_guids: [
            "d1e2f3a4-b5c6-11ee-8a9b-005056002001",
            "d1e2f3a4-b5c6-11ee-8a9b-005056002002"
        ],
        esp_uuid: "5E12-C0D2",
        hiberfil: Some(b"HIBR"),
    }
);

windows_image!(
    win2016_uefi,
    Win {
        expected: &Expected {
            name: "win2016-uefi",
            os_type: "windows",
            distro: "windows",
            version_major: 10,
            version_minor: 0,
            product_name: "Windows Server 2016 Standard",
            osinfo: "win2k16",
            arch: "x86_64",
            hostname: "WIN2016-VM",
            package_format: None,
            package_manager: None,
            partition_table: "gpt",
            disk_id: "6B1F2E3D-4C5B-4A69-8778-96A5B4C3D216",
            firmware: "uefi",
            mbr_boot_code: "none",
            bootloader: "windows-boot-manager",
            root_fs: "ntfs",
            root_location: "part3",
            filesystems: &[
                ExpectedFs {
                    location: "part1",
                    kind: "vfat",
                    uuid: "5E13-C0D3",
                    label: ""
                },
                ExpectedFs {
                    location: "part3",
                    kind: "ntfs",
                    uuid: "3A3B3C3D00000003",
                    label: ""
                },
            ],
            fstab: &[],
            kernels: &[],
            network: &[ExpectedNic {
                style: "windows-tcpip",
                interface: "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
                mac: "",
                address: "192.168.10.23/24",
                gateway: "192.168.10.1",
                source: "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
            }],
            hypervisor_tools: &["vmware-tools"],
            windows: Some(ExpectedWindows {
                systemroot: "/Windows",
                current_version: "6.3",
                build: "14393",
                edition_id: "ServerStandard",
                installation_type: "Server",
                current_control_set: "ControlSet001",
                drive_letters: UEFI_LETTERS,
                services: &[
                    "disk", "LSI_SAS", "pvscsi", "storahci", "intelide", "atapi", "vmxnet3",
                    "Tcpip", "VMTools"
                ],
                boot_start_services: &["disk", "pvscsi"],
                hibernated: false,
                fast_startup: false,
                bcd: "part1:/EFI/Microsoft/Boot/BCD",
                bcd_default_loader: "\\Windows\\system32\\winload.efi",
            }),
        },
        uefi: true,
        mbr_signature: 0,
        ubr: 6897,
        release_id: Some("1607"),
        display_version: None,
        build_lab_ex: "14393.6897.amd64fre.rs1_release.240404-1904",
        part_guids: [
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C301",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C302",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C303",
        ],
        volume_guids: [
            "d1e2f3a4-b5c6-11ee-8a9b-005056003001",
            "d1e2f3a4-b5c6-11ee-8a9b-005056003002"
        ],
        esp_uuid: "5E13-C0D3",
        hiberfil: Some(&[0; 4]),
    }
);

windows_image!(
    win2019_bios,
    Win {
        expected: &Expected {
            name: "win2019-bios",
            os_type: "windows",
            distro: "windows",
            version_major: 10,
            version_minor: 0,
            product_name: "Windows Server 2019 Standard",
            osinfo: "win2k19",
            arch: "x86_64",
            hostname: "WIN2019-VM",
            package_format: None,
            package_manager: None,
            partition_table: "mbr",
            disk_id: "0x20190a04",
            firmware: "bios",
            mbr_boot_code: "windows",
            bootloader: "windows-boot-manager",
            root_fs: "ntfs",
            root_location: "part2",
            filesystems: &[
                ExpectedFs {
                    location: "part1",
                    kind: "ntfs",
                    uuid: "4A4B4C4D00000001",
                    label: "System Reserved"
                },
                ExpectedFs {
                    location: "part2",
                    kind: "ntfs",
                    uuid: "4A4B4C4D00000002",
                    label: ""
                },
            ],
            fstab: &[],
            kernels: &[],
            network: &[ExpectedNic {
                style: "windows-tcpip",
                interface: "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
                mac: "",
                address: "192.168.10.24/24",
                gateway: "192.168.10.1",
                source: "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
            }],
            hypervisor_tools: &["vmware-tools"],
            windows: Some(ExpectedWindows {
                systemroot: "/Windows",
                current_version: "6.3",
                build: "17763",
                edition_id: "ServerStandard",
                installation_type: "Server",
                current_control_set: "ControlSet001",
                drive_letters: BIOS_LETTERS,
                services: &[
                    "disk", "LSI_SAS", "pvscsi", "storahci", "intelide", "atapi", "vmxnet3",
                    "Tcpip", "VMTools"
                ],
                boot_start_services: &["disk", "pvscsi"],
                hibernated: false,
                fast_startup: false,
                bcd: "part1:/Boot/BCD",
                bcd_default_loader: "\\Windows\\system32\\winload.exe",
            }),
        },
        uefi: false,
        mbr_signature: 0x2019_0a04,
        ubr: 5830,
        release_id: Some("1809"),
        display_version: None,
        build_lab_ex: "17763.1.amd64fre.rs5_release.180914-1434",
        part_guids: [
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C401",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C402",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C403",
        ],
        volume_guids: [
            "d1e2f3a4-b5c6-11ee-8a9b-005056004001",
            "d1e2f3a4-b5c6-11ee-8a9b-005056004002"
        ],
        esp_uuid: "5E14-C0D4",
        hiberfil: None,
    }
);

windows_image!(
    win2022_uefi,
    Win {
        expected: &Expected {
            name: "win2022-uefi",
            os_type: "windows",
            distro: "windows",
            version_major: 10,
            version_minor: 0,
            product_name: "Windows Server 2022 Standard",
            osinfo: "win2k22",
            arch: "x86_64",
            hostname: "WIN2022-VM",
            package_format: None,
            package_manager: None,
            partition_table: "gpt",
            disk_id: "6B1F2E3D-4C5B-4A69-8778-96A5B4C3D222",
            firmware: "uefi",
            mbr_boot_code: "none",
            bootloader: "windows-boot-manager",
            root_fs: "ntfs",
            root_location: "part3",
            filesystems: &[
                ExpectedFs {
                    location: "part1",
                    kind: "vfat",
                    uuid: "5E15-C0D5",
                    label: ""
                },
                ExpectedFs {
                    location: "part3",
                    kind: "ntfs",
                    uuid: "5A5B5C5D00000003",
                    label: ""
                },
            ],
            fstab: &[],
            kernels: &[],
            network: &[ExpectedNic {
                style: "windows-tcpip",
                interface: "{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
                mac: "",
                address: "192.168.10.25/24",
                gateway: "192.168.10.1",
                source: "ControlSet001\\Services\\Tcpip\\Parameters\\Interfaces\\{7a2c5e1f-3b4d-4c6e-8f90-a1b2c3d4e5f6}",
            }],
            hypervisor_tools: &["vmware-tools"],
            windows: Some(ExpectedWindows {
                systemroot: "/Windows",
                current_version: "6.3",
                build: "20348",
                edition_id: "ServerStandard",
                installation_type: "Server",
                current_control_set: "ControlSet001",
                drive_letters: UEFI_LETTERS,
                services: &[
                    "disk", "LSI_SAS", "pvscsi", "storahci", "intelide", "atapi", "vmxnet3",
                    "Tcpip", "VMTools"
                ],
                boot_start_services: &["disk", "pvscsi"],
                hibernated: false,
                fast_startup: false,
                bcd: "part1:/EFI/Microsoft/Boot/BCD",
                bcd_default_loader: "\\Windows\\system32\\winload.efi",
            }),
        },
        uefi: true,
        mbr_signature: 0,
        ubr: 2461,
        release_id: Some("2009"),
        display_version: Some("21H2"),
        build_lab_ex: "20348.1.amd64fre.fe_release.210507-1500",
        part_guids: [
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C501",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C502",
            "8C1D2E3F-4A5B-4C6D-9E7F-8091A2B3C503",
        ],
        volume_guids: [
            "d1e2f3a4-b5c6-11ee-8a9b-005056005001",
            "d1e2f3a4-b5c6-11ee-8a9b-005056005002"
        ],
        esp_uuid: "5E15-C0D5",
        hiberfil: None,
    }
);
