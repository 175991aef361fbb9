//! Fixtures for tests of this and other crates: minimal PE driver images, INF files in the
//! structure virtio-win uses, fake virtio-win trees in both layouts, and ISOs built from them.
//!
//! The INFs are written from Microsoft's INF documentation; the names, descriptions and vendor
//! are our own. Nothing here is copied from virtio-win.

use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::process::Command;

use crate::osmap::{Arch, OsFolder};

/// What [`pe_image`] writes.
#[derive(Debug, Clone)]
pub struct PeSpec {
    /// COFF machine type.
    pub machine: u16,
    /// PE32+ when true, PE32 otherwise.
    pub is_64: bool,
    /// Optional header subsystem (1 native).
    pub subsystem: u16,
    /// File version written into `VS_FIXEDFILEINFO`; `None` writes no resource section.
    pub version: Option<[u16; 4]>,
    /// Writes a wrong `VS_FIXEDFILEINFO` signature.
    pub bad_version_signature: bool,
}

impl PeSpec {
    /// A native driver for `arch` with `version`.
    #[must_use]
    pub fn driver(arch: Arch, version: [u16; 4]) -> Self {
        Self {
            machine: arch.pe_machine(),
            is_64: arch != Arch::X86,
            subsystem: 1,
            version: Some(version),
            bad_version_signature: false,
        }
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// File offset and RVA of the one section (.rsrc).
const SECT_FILE: usize = 0x200;
const SECT_RVA: u32 = 0x1000;
const SECT_SIZE: usize = 0x200;

/// Writes a minimal PE image: DOS header, PE signature, COFF header, optional header (PE32 or
/// PE32+), one `.rsrc` section holding an RT_VERSION resource (PE/COFF §6.9) whose
/// `VS_VERSIONINFO` carries a `VS_FIXEDFILEINFO`.
#[must_use]
pub fn pe_image(spec: &PeSpec) -> Vec<u8> {
    let mut b = vec![0u8; SECT_FILE + SECT_SIZE];
    // DOS header: "MZ" and e_lfanew.
    b[0] = b'M';
    b[1] = b'Z';
    put32(&mut b, 0x3c, 0x40);
    b[0x40..0x44].copy_from_slice(b"PE\0\0");
    let coff = 0x44;
    let opt_size: u16 = if spec.is_64 { 240 } else { 224 };
    put16(&mut b, coff, spec.machine);
    put16(&mut b, coff + 2, 1); // NumberOfSections
    put32(&mut b, coff + 4, 0x6000_0000); // TimeDateStamp
    put16(&mut b, coff + 16, opt_size);
    put16(&mut b, coff + 18, if spec.is_64 { 0x0022 } else { 0x0102 }); // EXECUTABLE_IMAGE | (LARGE_ADDRESS_AWARE or 32BIT_MACHINE)
    let o = coff + 20;
    put16(&mut b, o, if spec.is_64 { 0x20b } else { 0x10b });
    b[o + 2] = 14; // linker version
    put32(&mut b, o + 8, u32::try_from(SECT_SIZE).unwrap_or(0)); // SizeOfInitializedData
    put32(&mut b, o + 20, SECT_RVA); // BaseOfCode
    if spec.is_64 {
        put64(&mut b, o + 24, 0x1_4000_0000);
    } else {
        put32(&mut b, o + 28, 0x1_0000);
    }
    put32(&mut b, o + 32, 0x1000); // SectionAlignment
    put32(&mut b, o + 36, 0x200); // FileAlignment
    put16(&mut b, o + 40, 10); // OS version
    put16(&mut b, o + 48, 10); // subsystem version
    put32(&mut b, o + 56, 0x2000); // SizeOfImage
    put32(&mut b, o + 60, 0x200); // SizeOfHeaders
    put16(&mut b, o + 68, spec.subsystem);
    put16(&mut b, o + 70, 0x0100); // NX_COMPAT
    let dirs = if spec.is_64 {
        put64(&mut b, o + 72, 0x40000);
        put64(&mut b, o + 80, 0x1000);
        put64(&mut b, o + 88, 0x100000);
        put64(&mut b, o + 96, 0x1000);
        put32(&mut b, o + 108, 16);
        o + 112
    } else {
        put32(&mut b, o + 72, 0x40000);
        put32(&mut b, o + 76, 0x1000);
        put32(&mut b, o + 80, 0x100000);
        put32(&mut b, o + 84, 0x1000);
        put32(&mut b, o + 92, 16);
        o + 96
    };
    let st = o + usize::from(opt_size);
    b[st..st + 8].copy_from_slice(b".rsrc\0\0\0");
    put32(&mut b, st + 8, u32::try_from(SECT_SIZE).unwrap_or(0)); // VirtualSize
    put32(&mut b, st + 12, SECT_RVA);
    put32(&mut b, st + 16, u32::try_from(SECT_SIZE).unwrap_or(0)); // SizeOfRawData
    put32(&mut b, st + 20, u32::try_from(SECT_FILE).unwrap_or(0)); // PointerToRawData
    put32(&mut b, st + 36, 0x4000_0040); // INITIALIZED_DATA | MEM_READ
    let Some(version) = spec.version else {
        return b;
    };
    let r = SECT_FILE;
    // Resource directory tree: type (RT_VERSION = 16) -> name (1) -> language (0x409) -> data.
    let dir = |b: &mut [u8], at: usize, id: u32, target: u32| {
        put16(b, at + 14, 1); // NumberOfIdEntries
        put32(b, at + 16, id);
        put32(b, at + 20, target);
    };
    dir(&mut b, r, 16, 0x8000_0000 | 0x18);
    dir(&mut b, r + 0x18, 1, 0x8000_0000 | 0x30);
    dir(&mut b, r + 0x30, 0x409, 0x48);
    let vs = 0x58usize;
    let vs_len = 92u32;
    put32(&mut b, r + 0x48, SECT_RVA + u32::try_from(vs).unwrap_or(0));
    put32(&mut b, r + 0x4c, vs_len);
    // VS_VERSIONINFO: wLength, wValueLength, wType, szKey, padding, VS_FIXEDFILEINFO.
    let v = r + vs;
    put16(&mut b, v, u16::try_from(vs_len).unwrap_or(0));
    put16(&mut b, v + 2, 52);
    put16(&mut b, v + 4, 0);
    for (i, u) in "VS_VERSION_INFO\0".encode_utf16().enumerate() {
        put16(&mut b, v + 6 + 2 * i, u);
    }
    let ffi = v + 40;
    put32(
        &mut b,
        ffi,
        if spec.bad_version_signature {
            0x1234_5678
        } else {
            0xFEEF_04BD
        },
    );
    put32(&mut b, ffi + 4, 0x0001_0000);
    let [a, bb, c, d] = version;
    put32(&mut b, ffi + 8, (u32::from(a) << 16) | u32::from(bb));
    put32(&mut b, ffi + 12, (u32::from(c) << 16) | u32::from(d));
    put32(&mut b, ffi + 16, (u32::from(a) << 16) | u32::from(bb));
    put32(&mut b, ffi + 20, (u32::from(c) << 16) | u32::from(d));
    put32(&mut b, ffi + 32, 0x0004_0004); // VOS_NT_WINDOWS32
    put32(&mut b, ffi + 36, 3); // VFT_DRV
    put32(&mut b, ffi + 40, 6); // VFT2_DRV_SYSTEM
    // Data directory 2: the resource table.
    put32(&mut b, dirs + 16, SECT_RVA);
    put32(&mut b, dirs + 20, u32::try_from(vs).unwrap_or(0) + vs_len);
    b
}

/// How an INF's text is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InfEncoding {
    /// UTF-16LE with a byte-order mark (how most virtio-win INFs ship).
    Utf16Bom,
    /// 8-bit ANSI (Windows-1252) text.
    Ansi,
}

/// A fake virtio-win driver.
#[derive(Debug, Clone)]
pub struct FakeDriver {
    /// INF/SYS stem and service name (`viostor`).
    pub name: &'static str,
    /// Top-level folder in the ISO layout (`viostor`, `NetKVM`, `Balloon`).
    pub iso_dir: &'static str,
    /// Setup class and its GUID.
    pub class: (&'static str, &'static str),
    /// Device description.
    pub description: &'static str,
    /// Legacy and modern virtio PCI device ids (`1001`, `1042`).
    pub device_ids: [&'static str; 2],
    /// StartType.
    pub start_type: u32,
    /// LoadOrderGroup.
    pub group: Option<&'static str>,
    /// How the INF is encoded.
    pub encoding: InfEncoding,
    /// File version of the `.sys`.
    pub version: [u16; 4],
}

const SCSI_ADAPTER: (&str, &str) = ("SCSIAdapter", "{4D36E97B-E325-11CE-BFC1-08002BE10318}");

/// The drivers of the standard fake tree.
#[must_use]
pub fn standard_drivers() -> Vec<FakeDriver> {
    vec![
        FakeDriver {
            name: "viostor",
            iso_dir: "viostor",
            class: SCSI_ADAPTER,
            description: "Fake VirtIO Block Controller",
            device_ids: ["1001", "1042"],
            start_type: 0,
            group: Some("SCSI miniport"),
            encoding: InfEncoding::Utf16Bom,
            version: [100, 95, 104, 26200],
        },
        FakeDriver {
            name: "vioscsi",
            iso_dir: "vioscsi",
            class: SCSI_ADAPTER,
            description: "Fake VirtIO SCSI Controller, \"pass-through\"",
            device_ids: ["1004", "1048"],
            start_type: 0,
            group: Some("SCSI miniport"),
            encoding: InfEncoding::Ansi,
            version: [100, 95, 104, 26201],
        },
        FakeDriver {
            name: "netkvm",
            iso_dir: "NetKVM",
            class: ("Net", "{4D36E972-E325-11CE-BFC1-08002BE10318}"),
            description: "Fake VirtIO Ethernet Adapter",
            device_ids: ["1000", "1041"],
            start_type: 3,
            group: Some("NDIS"),
            encoding: InfEncoding::Utf16Bom,
            version: [100, 95, 104, 26202],
        },
        FakeDriver {
            name: "balloon",
            iso_dir: "Balloon",
            class: ("System", "{4D36E97D-E325-11CE-BFC1-08002BE10318}"),
            description: "Fake VirtIO Balloon Driver",
            device_ids: ["1002", "1045"],
            start_type: 3,
            group: None,
            encoding: InfEncoding::Ansi,
            version: [100, 95, 104, 26203],
        },
    ]
}

/// The TargetOS decoration a driver built for `folder` carries.
#[must_use]
pub fn decoration(folder: OsFolder, arch: Arch) -> String {
    let a = arch.inf_name();
    let v = match folder {
        OsFolder::W2k3 => "5.2",
        OsFolder::W2k8 => "6.0",
        OsFolder::W2k8R2 | OsFolder::W7 => "6.1",
        OsFolder::W8 | OsFolder::W2k12 => "6.2",
        OsFolder::W8_1 | OsFolder::W2k12R2 => "6.3",
        OsFolder::W10 => "10.0...10240",
        OsFolder::W2k16 => "10.0...14393",
        OsFolder::W2k19 => "10.0...17763",
        OsFolder::W2k22 => "10.0...20348",
        OsFolder::W2k25 => "10.0...26100",
        OsFolder::W11 => "10.0...22000",
    };
    format!("NT{a}.{v}")
}

/// The INF text of `d` as built for `folder`/`arch`.
#[must_use]
pub fn inf_text(d: &FakeDriver, folder: OsFolder, arch: Arch) -> String {
    let n = d.name;
    let deco = decoration(folder, arch);
    let [legacy, modern] = d.device_ids;
    let [v1, v2, v3, v4] = d.version;
    let mut s = String::new();
    // The fake tree exercises both numeric literals and %strkey% tokens in service sections.
    let (stype, start, errc) = if d.encoding == InfEncoding::Ansi {
        (
            "%SERVICE_KERNEL_DRIVER%".to_owned(),
            format!("{}", d.start_type),
            "%SERVICE_ERROR_NORMAL%".to_owned(),
        )
    } else {
        (
            "1".to_owned(),
            format!("{}", d.start_type),
            "0x1".to_owned(),
        )
    };
    let _ = write!(
        s,
        "; {n}.inf - fake virtio driver package written by rehost's testkit\r\n\
         ; Copyright \u{a9} rehost developers; test data only.\r\n\
         \r\n\
         [Version]\r\n\
         Signature=\"$Windows NT$\"\r\n\
         Class={class}\r\n\
         ClassGuid={guid}\r\n\
         Provider=%VENDOR%\r\n\
         DriverVer=06/01/2024,{v1}.{v2}.{v3}.{v4}\r\n\
         CatalogFile={n}.cat\r\n\
         DriverPackageType=PlugAndPlay\r\n\
         PnpLockdown=1\r\n\
         \r\n\
         [DestinationDirs]\r\n\
         DefaultDestDir = 12\r\n\
         {n}_files = 12\r\n\
         \r\n\
         [SourceDisksNames]\r\n\
         1 = %DiskId1%,,,\"\"\r\n\
         \r\n\
         [SourceDisksFiles]\r\n\
         {n}.sys = 1,,\r\n\
         \r\n\
         [Manufacturer]\r\n\
         %VENDOR% = FAKEVIRT, {deco}\r\n\
         \r\n\
         [FAKEVIRT.{deco}]\r\n\
         %{n}.DeviceDesc% = {n}_inst, PCI\\VEN_1AF4&DEV_{legacy}&SUBSYS_00021AF4&REV_00, PCI\\VEN_1AF4&DEV_{legacy}\r\n\
         %{n}.DeviceDesc% = {n}_inst, \\\r\n\
         \x20   PCI\\VEN_1AF4&DEV_{modern}&SUBSYS_11001AF4&REV_01 ; modern virtio 1.0 id\r\n\
         \r\n\
         [{n}_inst]\r\n\
         CopyFiles = {n}_files\r\n\
         AddReg = {n}_dev_addreg\r\n\
         \r\n\
         [{n}_files]\r\n\
         {n}.sys,,,2\r\n\
         \r\n\
         [{n}_dev_addreg]\r\n\
         HKR, , \"FakeTestFlag\", %REG_DWORD%, 1\r\n\
         \r\n\
         [{n}_inst.HW]\r\n\
         AddReg = {n}_msi_addreg\r\n\
         \r\n\
         [{n}_msi_addreg]\r\n\
         HKR, \"Interrupt Management\\MessageSignaledInterruptProperties\", MSISupported, 0x00010001, 1\r\n\
         \r\n\
         [{n}_inst.Services]\r\n\
         AddService = {n}, %SPSVCINST_ASSOCSERVICE%, {n}_Service_Inst, {n}_EventLog_Inst\r\n\
         \r\n\
         [{n}_Service_Inst]\r\n\
         DisplayName    = %{n}.SVCDESC%\r\n\
         ServiceType    = {stype}\r\n\
         StartType      = {start}\r\n\
         ErrorControl   = {errc}\r\n\
         ServiceBinary  = %12%\\{n}.sys\r\n",
        class = d.class.0,
        guid = d.class.1,
    );
    if let Some(g) = d.group {
        let _ = write!(s, "LoadOrderGroup = \"{g}\"\r\n");
    }
    let _ = write!(
        s,
        "AddReg         = {n}_pnpsafe_addreg\r\n\
         \r\n\
         [{n}_pnpsafe_addreg]\r\n\
         HKR, \"Parameters\\PnpInterface\", \"5\", %REG_DWORD%, 0x00000001\r\n\
         HKR, \"Parameters\", \"BusType\", %REG_DWORD%, 0x00000001\r\n\
         \r\n\
         [{n}_EventLog_Inst]\r\n\
         AddReg = {n}_EventLog_AddReg\r\n\
         \r\n\
         [{n}_EventLog_AddReg]\r\n\
         HKR,,EventMessageFile,%REG_EXPAND_SZ%,\"%%SystemRoot%%\\System32\\IoLogMsg.dll\"\r\n\
         HKR,,TypesSupported,%REG_DWORD%,7\r\n\
         \r\n\
         [Strings]\r\n\
         SPSVCINST_ASSOCSERVICE = 0x00000002\r\n\
         SERVICE_KERNEL_DRIVER  = 1\r\n\
         SERVICE_ERROR_NORMAL   = 1\r\n\
         REG_DWORD              = 0x00010001\r\n\
         REG_EXPAND_SZ          = 0x00020000\r\n\
         VENDOR                 = \"Rehost Fake Virtio\"\r\n\
         DiskId1                = \"Rehost fake driver disk\"\r\n\
         {n}.DeviceDesc         = \"{desc}\"\r\n\
         {n}.SVCDESC            = \"{desc} Service\"\r\n\
         \r\n\
         [Strings.0407]\r\n\
         {n}.DeviceDesc         = \"Lokalisierte Beschreibung\"\r\n",
        desc = d.description.replace('"', "\"\""),
    );
    s
}

/// Encodes INF text.
#[must_use]
pub fn encode_inf(text: &str, enc: InfEncoding) -> Vec<u8> {
    match enc {
        InfEncoding::Utf16Bom => {
            let mut out = vec![0xFF, 0xFE];
            out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
            out
        }
        // Latin-1 is Windows-1252 for every character the fixtures use.
        InfEncoding::Ansi => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
    }
}

/// A fake virtio-win tree: which drivers, for which folders and architectures.
#[derive(Debug, Clone)]
pub struct FakeTree {
    /// The drivers.
    pub drivers: Vec<FakeDriver>,
    /// (folder, architecture) pairs present for every driver.
    pub folders: Vec<(OsFolder, Arch)>,
}

impl FakeTree {
    /// The standard tree: four drivers for 2k8R2, 2k12R2, 2k16, 2k19, 2k22, w10 and w11 on
    /// amd64, plus w10 on x86 (no 2k25 folder, to exercise the fallback).
    #[must_use]
    pub fn standard() -> Self {
        let mut folders: Vec<(OsFolder, Arch)> = [
            OsFolder::W2k8R2,
            OsFolder::W2k12R2,
            OsFolder::W2k16,
            OsFolder::W2k19,
            OsFolder::W2k22,
            OsFolder::W10,
            OsFolder::W11,
        ]
        .into_iter()
        .map(|f| (f, Arch::Amd64))
        .collect();
        folders.push((OsFolder::W10, Arch::X86));
        Self {
            drivers: standard_drivers(),
            folders,
        }
    }

    fn write_package(d: &FakeDriver, folder: OsFolder, arch: Arch, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{}.inf", d.name)),
            encode_inf(&inf_text(d, folder, arch), d.encoding),
        )?;
        std::fs::write(
            dir.join(format!("{}.sys", d.name)),
            pe_image(&PeSpec::driver(arch, d.version)),
        )?;
        std::fs::write(
            dir.join(format!("{}.cat", d.name)),
            b"fake catalog, not signed",
        )?;
        Ok(())
    }

    /// Writes the ISO layout: `<Driver>/<folder>/<arch>/<name>.{inf,sys,cat}`.
    ///
    /// # Errors
    /// Host i/o errors.
    pub fn write_iso_layout(&self, root: &Path) -> io::Result<()> {
        for d in &self.drivers {
            for &(f, a) in &self.folders {
                Self::write_package(
                    d,
                    f,
                    a,
                    &root.join(d.iso_dir).join(f.name()).join(a.folder()),
                )?;
            }
        }
        std::fs::create_dir_all(root.join("guest-agent"))?;
        std::fs::write(root.join("guest-agent/README.txt"), b"not a driver")?;
        Ok(())
    }

    /// Writes the RPM layout: `drivers/by-os/<arch>/<folder>/<name>.{inf,sys,cat}`.
    ///
    /// # Errors
    /// Host i/o errors.
    pub fn write_rpm_layout(&self, root: &Path) -> io::Result<()> {
        for d in &self.drivers {
            for &(f, a) in &self.folders {
                Self::write_package(
                    d,
                    f,
                    a,
                    &root.join("drivers/by-os").join(a.folder()).join(f.name()),
                )?;
            }
        }
        Ok(())
    }
}

/// Builds an ISO of `dir` with `xorriso -as mkisofs -J -R`; `Ok(false)` if xorriso is absent.
///
/// # Errors
/// Host i/o errors, or xorriso failing.
pub fn build_iso(dir: &Path, out: &Path) -> io::Result<bool> {
    let status = match Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "FAKE_VIRTIO",
            "-J",
            "-R",
            "-o",
        ])
        .arg(out)
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !status.success() {
        return Err(io::Error::other(format!("xorriso failed: {status}")));
    }
    Ok(true)
}
