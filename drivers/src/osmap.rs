//! From an inspected Windows (version, build, server or client, architecture) to the
//! virtio-win folder name, and the explicit table of folders we may fall back to.

use std::fmt;

use crate::error::{Error, Result};

/// A guest processor architecture, as virtio-win names its folders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// 32-bit x86 (PE machine `IMAGE_FILE_MACHINE_I386`, 0x14c).
    X86,
    /// x86-64 (PE machine `IMAGE_FILE_MACHINE_AMD64`, 0x8664).
    Amd64,
    /// 64-bit ARM (PE machine `IMAGE_FILE_MACHINE_ARM64`, 0xaa64).
    Arm64,
}

impl Arch {
    /// All architectures, in folder-scan order.
    pub const ALL: [Self; 3] = [Self::Amd64, Self::X86, Self::Arm64];

    /// The folder name virtio-win uses (`amd64`, `x86`, `ARM64`); matched case-insensitively.
    #[must_use]
    pub fn folder(self) -> &'static str {
        match self {
            Self::X86 => "x86",
            Self::Amd64 => "amd64",
            Self::Arm64 => "ARM64",
        }
    }

    /// The PE/COFF machine type of drivers for this architecture (PE/COFF spec §3.3.1).
    #[must_use]
    pub fn pe_machine(self) -> u16 {
        match self {
            Self::X86 => 0x14c,
            Self::Amd64 => 0x8664,
            Self::Arm64 => 0xaa64,
        }
    }

    /// The architecture part of an INF TargetOS decoration (`NTamd64`, `NTx86`, `NTarm64`).
    #[must_use]
    pub fn inf_name(self) -> &'static str {
        match self {
            Self::X86 => "x86",
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// Parses a folder or INF architecture name, case-insensitively (`i386` is x86).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "x86" | "i386" => Some(Self::X86),
            "amd64" | "x64" => Some(Self::Amd64),
            "arm64" => Some(Self::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inf_name())
    }
}

/// The Windows installation a catalog is asked to serve (from inspection of the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WindowsTarget {
    /// `CurrentMajorVersionNumber` (or the major part of `CurrentVersion`).
    pub major: u32,
    /// `CurrentMinorVersionNumber` (or the minor part of `CurrentVersion`).
    pub minor: u32,
    /// `CurrentBuildNumber`.
    pub build: u32,
    /// A server product (`InstallationType` is `Server`/`Server Core`, or `ProductType` is not `WinNT`).
    pub server: bool,
    /// The guest's architecture.
    pub arch: Arch,
}

impl fmt::Display for WindowsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "windows {} {}.{}.{} {}",
            if self.server { "server" } else { "client" },
            self.major,
            self.minor,
            self.build,
            self.arch
        )
    }
}

/// A virtio-win OS folder (serialized as its folder name, `2k19`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OsFolder {
    /// Windows Server 2003 (and XP x64), NT 5.2.
    W2k3,
    /// Windows Server 2008, NT 6.0.
    W2k8,
    /// Windows Server 2008 R2, NT 6.1.
    W2k8R2,
    /// Windows 7, NT 6.1.
    W7,
    /// Windows 8, NT 6.2.
    W8,
    /// Windows Server 2012, NT 6.2.
    W2k12,
    /// Windows 8.1, NT 6.3.
    W8_1,
    /// Windows Server 2012 R2, NT 6.3.
    W2k12R2,
    /// Windows 10, NT 10.0 builds below 22000.
    W10,
    /// Windows Server 2016, build 14393.
    W2k16,
    /// Windows Server 2019, build 17763.
    W2k19,
    /// Windows Server 2022, build 20348.
    W2k22,
    /// Windows Server 2025, build 26100.
    W2k25,
    /// Windows 11, NT 10.0 builds 22000 and later.
    W11,
}

impl OsFolder {
    /// Every folder, oldest first.
    pub const ALL: [Self; 14] = [
        Self::W2k3,
        Self::W2k8,
        Self::W2k8R2,
        Self::W7,
        Self::W8,
        Self::W2k12,
        Self::W8_1,
        Self::W2k12R2,
        Self::W10,
        Self::W2k16,
        Self::W2k19,
        Self::W2k22,
        Self::W2k25,
        Self::W11,
    ];

    /// The folder name as virtio-win spells it; matched case-insensitively.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::W2k3 => "2k3",
            Self::W2k8 => "2k8",
            Self::W2k8R2 => "2k8R2",
            Self::W7 => "w7",
            Self::W8 => "w8",
            Self::W2k12 => "2k12",
            Self::W8_1 => "w8.1",
            Self::W2k12R2 => "2k12R2",
            Self::W10 => "w10",
            Self::W2k16 => "2k16",
            Self::W2k19 => "2k19",
            Self::W2k22 => "2k22",
            Self::W2k25 => "2k25",
            Self::W11 => "w11",
        }
    }

    /// Parses a folder name, case-insensitively.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

impl serde::Serialize for OsFolder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for OsFolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// First build of each Windows Server LTSC release on NT 10.0, newest first. A server build
/// between two entries (a semi-annual or annual channel release such as 1809's siblings or 23H2,
/// build 25398) is served by the LTSC release it was branched after; those releases share that
/// release's kernel driver model, and it is the folder the INF's `NTamd64.10.0...<build>`
/// decoration still accepts.
const SERVER_10_BUILDS: [(u32, OsFolder); 4] = [
    (26100, OsFolder::W2k25),
    (20348, OsFolder::W2k22),
    (17763, OsFolder::W2k19),
    (14393, OsFolder::W2k16),
];
/// Windows 11 is NT 10.0 from build 22000 (its first release, 21H2).
const WINDOWS_11_FIRST_BUILD: u32 = 22000;

/// The folder for a Windows target.
///
/// # Errors
/// `Unsupported` for versions virtio-win has no folder for (XP x86, Vista, NT 10.0 server
/// technical previews before build 14393, unknown versions).
pub fn os_folder(t: &WindowsTarget) -> Result<OsFolder> {
    let folder = match (t.major, t.minor, t.server) {
        (5, 2, _) => OsFolder::W2k3,
        (6, 0, true) => OsFolder::W2k8,
        (6, 1, true) => OsFolder::W2k8R2,
        (6, 1, false) => OsFolder::W7,
        (6, 2, true) => OsFolder::W2k12,
        (6, 2, false) => OsFolder::W8,
        (6, 3, true) => OsFolder::W2k12R2,
        (6, 3, false) => OsFolder::W8_1,
        (10, 0, false) if t.build >= WINDOWS_11_FIRST_BUILD => OsFolder::W11,
        (10, 0, false) => OsFolder::W10,
        (10, 0, true) => SERVER_10_BUILDS
            .iter()
            .find(|(first, _)| t.build >= *first)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                Error::unsupported(
                    "windows version",
                    format!("server build {} is older than server 2016 (14393)", t.build),
                )
            })?,
        _ => {
            return Err(Error::unsupported(
                "windows version",
                format!("no virtio-win folder for {t}"),
            ));
        }
    };
    Ok(folder)
}

/// One permitted fallback: when the catalog has no `wanted` folder, `instead` may serve, but
/// only if the driver's INF itself accepts the target (a Models decoration that applies to the
/// target's version and build); the catalog checks that for each driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fallback {
    /// The folder the target maps to.
    pub wanted: OsFolder,
    /// The older folder that may serve instead.
    pub instead: OsFolder,
    /// Why this row is here.
    pub why: &'static str,
}

/// The whole fallback table. virt-v2v itself never falls back (it copies only files whose path
/// names the guest's exact version), so every row here is our decision, and each is limited to
/// releases of the same NT 10.0 kernel line, where Windows' own INF matching would accept the
/// older package. Nothing falls back across NT versions (6.x to 10.0) or from client to server.
pub const FALLBACKS: &[Fallback] = &[
    // Server 2025 is NT 10.0 build 26100; virtio-win releases before its 2k25 folder shipped
    // 2k22 drivers whose INF decoration (NTamd64.10.0...20348) Windows accepts on 26100.
    Fallback {
        wanted: OsFolder::W2k25,
        instead: OsFolder::W2k22,
        why: "server 2025 is nt 10.0; the 2k22 package's inf decoration accepts build 26100",
    },
    // Windows 11 is NT 10.0 build 22000+; older virtio-win releases had no w11 folder and their
    // w10 packages install on Windows 11 through the same decoration rule.
    Fallback {
        wanted: OsFolder::W11,
        instead: OsFolder::W10,
        why: "windows 11 is nt 10.0; the w10 package's inf decoration accepts builds 22000+",
    },
    // Server 2022 (20348) on a catalog that predates its folder.
    Fallback {
        wanted: OsFolder::W2k22,
        instead: OsFolder::W2k19,
        why: "server 2022 is nt 10.0; the 2k19 package's inf decoration accepts build 20348",
    },
];

/// The fallback rows for `wanted`, in order of preference.
pub fn fallbacks_for(wanted: OsFolder) -> impl Iterator<Item = &'static Fallback> {
    FALLBACKS.iter().filter(move |f| f.wanted == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(major: u32, minor: u32, build: u32, server: bool) -> WindowsTarget {
        WindowsTarget {
            major,
            minor,
            build,
            server,
            arch: Arch::Amd64,
        }
    }

    #[test]
    fn folders_for_each_release() {
        let cases = [
            (t(5, 2, 3790, true), "2k3"),
            (t(6, 0, 6002, true), "2k8"),
            (t(6, 1, 7601, true), "2k8R2"),
            (t(6, 1, 7601, false), "w7"),
            (t(6, 2, 9200, false), "w8"),
            (t(6, 2, 9200, true), "2k12"),
            (t(6, 3, 9600, false), "w8.1"),
            (t(6, 3, 9600, true), "2k12R2"),
            (t(10, 0, 19045, false), "w10"),
            (t(10, 0, 21999, false), "w10"),
            (t(10, 0, 22000, false), "w11"),
            (t(10, 0, 26100, false), "w11"),
            (t(10, 0, 14393, true), "2k16"),
            (t(10, 0, 17134, true), "2k16"),
            (t(10, 0, 17763, true), "2k19"),
            (t(10, 0, 20348, true), "2k22"),
            (t(10, 0, 25398, true), "2k22"),
            (t(10, 0, 26100, true), "2k25"),
        ];
        for (target, want) in cases {
            assert_eq!(os_folder(&target).unwrap().name(), want, "{target}");
        }
    }

    #[test]
    fn unsupported_versions() {
        let err = os_folder(&t(6, 0, 6002, false)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported windows version: no virtio-win folder for windows client 6.0.6002 amd64"
        );
        let err = os_folder(&t(10, 0, 10240, true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported windows version: server build 10240 is older than server 2016 (14393)"
        );
    }

    #[test]
    fn folder_names_round_trip() {
        for f in OsFolder::ALL {
            assert_eq!(OsFolder::from_name(f.name()), Some(f));
            assert_eq!(OsFolder::from_name(&f.name().to_uppercase()), Some(f));
        }
        assert_eq!(OsFolder::from_name("vista"), None);
    }

    #[test]
    fn fallback_table_is_same_kernel_and_older() {
        for row in FALLBACKS {
            assert!(row.instead < row.wanted, "{row:?}");
            assert!(!row.why.is_empty());
        }
        let rows: Vec<_> = fallbacks_for(OsFolder::W2k25).map(|f| f.instead).collect();
        assert_eq!(rows, [OsFolder::W2k22]);
        assert_eq!(fallbacks_for(OsFolder::W2k12R2).count(), 0);
    }
}
