//! What to boot and how: the volume, firmware, disk bus, NIC, limits and the success rule.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result, io};

/// How the guest's disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBus {
    /// virtio-blk-pci: the guest sees `/dev/vda` (the usual KVM cloud disk).
    #[default]
    VirtioBlk,
    /// virtio-scsi-pci with one scsi-hd: the guest sees `/dev/sda` through `virtio_scsi`.
    VirtioScsi,
    /// An emulated AHCI (SATA) controller: the guest sees `/dev/sda` through `ahci`.
    Sata,
    /// The machine's built-in PIIX IDE controller: `/dev/sda` through `ata_piix`.
    Ide,
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    /// SeaBIOS (legacy BIOS, MBR boot code).
    #[default]
    Bios,
    /// OVMF (UEFI, no secure boot), with a fresh copy of the variable store per boot.
    Uefi,
}

/// Which accelerator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccelChoice {
    /// KVM when it really works on this host (see [`crate::detect_accel`]), else TCG.
    #[default]
    Auto,
    /// KVM, even where detection says it will not work.
    Kvm,
    /// TCG (software emulation): slow, always available.
    Tcg,
}

/// What counts as "booted" when no `expect` pattern is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Until {
    /// A login prompt or the probe marker; after the first of them, wait up to
    /// [`BootOptions::settle`] for the other so the report carries the probe's facts.
    #[default]
    Any,
    /// A login prompt on the serial console.
    Login,
    /// The guest-side probe's marker line (`REHOST-PROBE …`).
    Probe,
}

macro_rules! names {
    ($ty:ty, $what:literal, $($v:ident = $s:literal),+) => {
        impl $ty {
            /// The option value naming this choice.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(Error::Usage(format!(
                        concat!($what, " {:?} not one of "), s) + &[$($s),+].join(", "))),
                }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
names!(
    DiskBus,
    "disk bus",
    VirtioBlk = "virtio-blk",
    VirtioScsi = "virtio-scsi",
    Sata = "sata",
    Ide = "ide"
);
names!(Firmware, "firmware", Bios = "bios", Uefi = "uefi");
names!(
    AccelChoice,
    "accelerator",
    Auto = "auto",
    Kvm = "kvm",
    Tcg = "tcg"
);
names!(
    Until,
    "success rule",
    Any = "any",
    Login = "login",
    Probe = "probe"
);

/// Image format of a volume file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    /// Raw disk image.
    Raw,
    /// qcow2 image.
    Qcow2,
}

/// qcow2 header magic, `QFI\xfb` (qcow2 spec, "Header", bytes 0-3).
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// The volume to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Volume {
    /// An image file.
    File {
        /// Its path.
        path: PathBuf,
        /// Its format, decided once when the volume is named (never re-probed after a guest ran).
        format: ImageFormat,
    },
    /// An NBD export (`nbd://host[:port]/export`, `nbd+unix:///export?socket=PATH`), always raw.
    Nbd {
        /// The URI, as qemu's NBD block driver accepts it.
        uri: String,
    },
}

impl Volume {
    /// Names a volume from a command-line argument: an NBD URI, or a file whose format is read
    /// from its first bytes (qcow2 magic, else raw).
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or read.
    pub fn parse(arg: &str) -> Result<Self> {
        if ["nbd://", "nbd+unix://", "nbds://", "nbd+tcp://"]
            .iter()
            .any(|p| arg.starts_with(p))
        {
            return Ok(Self::Nbd {
                uri: arg.to_owned(),
            });
        }
        let path = Path::new(arg);
        Ok(Self::File {
            format: sniff(path)?,
            path: path.to_path_buf(),
        })
    }

    /// A short description for reports (`disk.raw (raw)`, the URI).
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::File { path, format } => format!(
                "{} ({})",
                path.display(),
                match format {
                    ImageFormat::Raw => "raw",
                    ImageFormat::Qcow2 => "qcow2",
                }
            ),
            Self::Nbd { uri } => uri.clone(),
        }
    }
}

fn sniff(path: &Path) -> Result<ImageFormat> {
    use std::io::Read as _;
    let what = || path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(io(what()))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        // OK to index: got < 4 by the loop condition.
        let n = f.read(&mut magic[got..]).map_err(io(what()))?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(if got == 4 && magic == QCOW2_MAGIC {
        ImageFormat::Qcow2
    } else {
        ImageFormat::Raw
    })
}

/// Default time limit under TCG: a Debian 12 guest needs 40-90 s to its login prompt there.
pub const DEFAULT_TIMEOUT_TCG: Duration = Duration::from_secs(300);
/// Default time limit under KVM.
pub const DEFAULT_TIMEOUT_KVM: Duration = Duration::from_secs(120);
/// Default MAC of the guest NIC (qemu's own default prefix 52:54:00).
pub const DEFAULT_MAC: &str = "52:54:00:12:34:56";
/// Default PCI slot of the NIC: on the `pc` machine, ACPI gives slot 3 the index that systemd's
/// predictable naming turns into `ens3`.
pub const DEFAULT_NIC_SLOT: u8 = 3;

/// How to boot and judge. Build with [`BootOptions::default`] and the setters.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Firmware.
    pub firmware: Firmware,
    /// Disk attachment.
    pub disk_bus: DiskBus,
    /// MAC of the virtio-net NIC (`aa:bb:cc:dd:ee:ff`).
    pub mac: String,
    /// PCI slot of the NIC (1..=31, not 1 or 2 on `pc`: host bridge/ISA and VGA sit there).
    pub nic_slot: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Time limit for the whole boot; `None` picks [`DEFAULT_TIMEOUT_TCG`] or
    /// [`DEFAULT_TIMEOUT_KVM`] by the accelerator used.
    pub timeout: Option<Duration>,
    /// After a login prompt (or the marker) under [`Until::Any`], how long to wait for the other.
    pub settle: Duration,
    /// The success rule (ignored when `expect` is set).
    pub until: Until,
    /// A pattern that, when a console line matches it, means booted (replaces `until`).
    pub expect: Option<regex::Regex>,
    /// Where to write the serial console log; `None` keeps it in a temporary file that is
    /// removed (the report still carries the last lines).
    pub log_path: Option<PathBuf>,
    /// Write guest changes to a throw-away overlay (qemu `snapshot=on`), never to the volume.
    /// On by default: judging a boot must not change what is judged.
    pub snapshot: bool,
    /// Accelerator.
    pub accel: AccelChoice,
    /// First address qemu's DHCP server hands out (default 10.0.2.15). Set it away from a
    /// guest's static address to tell a DHCP lease from a preserved static configuration.
    pub dhcp_start: Option<std::net::Ipv4Addr>,
}

impl Default for BootOptions {
    fn default() -> Self {
        Self {
            firmware: Firmware::default(),
            disk_bus: DiskBus::default(),
            mac: DEFAULT_MAC.to_owned(),
            nic_slot: DEFAULT_NIC_SLOT,
            memory_mib: 1024,
            cpus: 1,
            timeout: None,
            settle: Duration::from_secs(60),
            until: Until::default(),
            expect: None,
            log_path: None,
            snapshot: true,
            accel: AccelChoice::default(),
            dhcp_start: None,
        }
    }
}

impl BootOptions {
    /// Sets the firmware.
    #[must_use]
    pub fn firmware(mut self, f: Firmware) -> Self {
        self.firmware = f;
        self
    }
    /// Sets the disk bus.
    #[must_use]
    pub fn disk_bus(mut self, b: DiskBus) -> Self {
        self.disk_bus = b;
        self
    }
    /// Sets the time limit.
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Sets the console log path.
    #[must_use]
    pub fn log_path(mut self, p: impl Into<PathBuf>) -> Self {
        self.log_path = Some(p.into());
        self
    }
    /// Sets the success rule.
    #[must_use]
    pub fn until(mut self, u: Until) -> Self {
        self.until = u;
        self
    }

    /// Sets the success pattern (`--expect`): a console line matching it means booted.
    ///
    /// # Errors
    /// [`Error::Usage`] if `pattern` is not a valid regular expression.
    pub fn expect(mut self, pattern: &str) -> Result<Self> {
        self.expect =
            Some(regex::Regex::new(pattern).map_err(|e| {
                Error::Usage(format!("expect pattern {pattern:?} is invalid: {e}"))
            })?);
        Ok(self)
    }

    /// Checks the values a caller could get wrong.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the bad value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let mac_ok = self.mac.len() == 17
            && self.mac.split(':').count() == 6
            && self
                .mac
                .split(':')
                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(Error::Usage(format!(
                "mac {:?} is not six colon-separated hex bytes",
                self.mac
            )));
        }
        if !(3..=31).contains(&self.nic_slot) {
            return Err(Error::Usage(format!(
                "nic slot {} out of range 3..=31",
                self.nic_slot
            )));
        }
        if !(64..=65536).contains(&self.memory_mib) {
            return Err(Error::Usage(format!(
                "memory {} MiB out of range 64..=65536",
                self.memory_mib
            )));
        }
        if !(1..=64).contains(&self.cpus) {
            return Err(Error::Usage(format!(
                "cpus {} out of range 1..=64",
                self.cpus
            )));
        }
        if let Some(a) = self.dhcp_start
            && !(a.octets()[..3] == [10, 0, 2] && (4..=254).contains(&a.octets()[3]))
        {
            // OK to index: octets() is [u8; 4].
            return Err(Error::Usage(format!(
                "dhcp start {a} out of range 10.0.2.4..=10.0.2.254 (qemu's user network)"
            )));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::Usage("timeout 0 s out of range 1.. s".to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in [
            DiskBus::VirtioBlk,
            DiskBus::VirtioScsi,
            DiskBus::Sata,
            DiskBus::Ide,
        ] {
            assert_eq!(b.as_str().parse::<DiskBus>().unwrap(), b);
        }
        for f in [Firmware::Bios, Firmware::Uefi] {
            assert_eq!(f.to_string().parse::<Firmware>().unwrap(), f);
        }
        let e = "scsi".parse::<DiskBus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "usage: disk bus \"scsi\" not one of virtio-blk, virtio-scsi, sata, ide"
        );
        assert_eq!("probe".parse::<Until>().unwrap(), Until::Probe);
        assert_eq!("tcg".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
    }

    #[test]
    fn validate_each_field() {
        assert!(BootOptions::default().validate().is_ok());
        let bad = |o: BootOptions| o.validate().unwrap_err().to_string();
        assert_eq!(
            bad(BootOptions {
                mac: "52:54:00:12:34".into(),
                ..BootOptions::default()
            }),
            "usage: mac \"52:54:00:12:34\" is not six colon-separated hex bytes"
        );
        assert_eq!(
            bad(BootOptions {
                mac: "52:54:00:12:34:zz".into(),
                ..BootOptions::default()
            }),
            "usage: mac \"52:54:00:12:34:zz\" is not six colon-separated hex bytes"
        );
        assert_eq!(
            bad(BootOptions {
                nic_slot: 2,
                ..BootOptions::default()
            }),
            "usage: nic slot 2 out of range 3..=31"
        );
        assert_eq!(
            bad(BootOptions {
                memory_mib: 1,
                ..BootOptions::default()
            }),
            "usage: memory 1 MiB out of range 64..=65536"
        );
        assert_eq!(
            bad(BootOptions {
                cpus: 0,
                ..BootOptions::default()
            }),
            "usage: cpus 0 out of range 1..=64"
        );
        assert_eq!(
            bad(BootOptions {
                dhcp_start: Some(std::net::Ipv4Addr::new(192, 168, 0, 9)),
                ..BootOptions::default()
            }),
            "usage: dhcp start 192.168.0.9 out of range 10.0.2.4..=10.0.2.254 (qemu's user network)"
        );
        assert_eq!(
            bad(BootOptions {
                dhcp_start: Some(std::net::Ipv4Addr::new(10, 0, 2, 2)),
                ..BootOptions::default()
            }),
            "usage: dhcp start 10.0.2.2 out of range 10.0.2.4..=10.0.2.254 (qemu's user network)"
        );
        let e = BootOptions::default().expect("(").unwrap_err().to_string();
        assert!(
            e.starts_with("usage: expect pattern \"(\" is invalid: "),
            "{e}"
        );
        assert!(
            BootOptions::default()
                .expect("login:")
                .unwrap()
                .expect
                .unwrap()
                .is_match("x login:")
        );
        assert_eq!(
            bad(BootOptions::default().timeout(Duration::ZERO)),
            "usage: timeout 0 s out of range 1.. s"
        );
    }

    #[test]
    fn volume_parse_sniffs_format() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.img");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        let q = dir.path().join("b.img");
        let mut hdr = QCOW2_MAGIC.to_vec();
        hdr.extend_from_slice(&[0, 0, 0, 3]);
        std::fs::write(&q, &hdr).unwrap();
        let short = dir.path().join("c.img");
        std::fs::write(&short, b"QF").unwrap();
        assert_eq!(
            Volume::parse(raw.to_str().unwrap()).unwrap(),
            Volume::File {
                path: raw.clone(),
                format: ImageFormat::Raw
            }
        );
        assert_eq!(
            Volume::parse(q.to_str().unwrap()).unwrap(),
            Volume::File {
                path: q.clone(),
                format: ImageFormat::Qcow2
            }
        );
        assert!(matches!(
            Volume::parse(short.to_str().unwrap()).unwrap(),
            Volume::File {
                format: ImageFormat::Raw,
                ..
            }
        ));
        assert_eq!(
            Volume::parse("nbd://gw:10809/vol1").unwrap(),
            Volume::Nbd {
                uri: "nbd://gw:10809/vol1".into()
            }
        );
        let missing = dir.path().join("nope");
        assert!(matches!(
            Volume::parse(missing.to_str().unwrap()),
            Err(Error::Io { .. })
        ));
    }
}
