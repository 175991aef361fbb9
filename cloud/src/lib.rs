//! Boot a repaired volume and judge, from what the guest prints, whether it really booted.
//!
//! An adapter ([`BootAdapter`]) starts the volume on some platform, watches its consoles and
//! returns a [`BootReport`]: booted or not, the milestones reached (bootloader, kernel, root
//! mounted, login prompt, the guest-side probe line), the named failure when there is one
//! (kernel panic, initramfs shell, emergency mode, timeout), how long it took and the last
//! console lines. The first adapter is [`LocalQemu`] (qemu-system-x86_64 on this host, KVM when it
//! really works here, else TCG); libvirt and OpenStack adapters fit the same trait.
//!
//! The guest-side probe is the `rehost-probe.service` of the test images: it prints
//! `REHOST-PROBE root=<source of /> ip=<addr/prefix,...> ifaces=<name:addr,...> modules=<virtio
//! modules>` on the first serial port, parsed into [`Probe`] (the report's `probe`).
//!
//! Judging never changes the volume: qemu writes to a throw-away overlay (`snapshot=on`) unless
//! the caller turns that off. No guest code runs on the host.
//!
//! ```no_run
//! use cloud::{BootAdapter, BootOptions, LocalQemu, Volume};
//! use std::time::Duration;
//!
//! let volume = Volume::parse("vm.raw")?;
//! let opts = BootOptions::default()
//!     .timeout(Duration::from_secs(300))
//!     .log_path("vm.console.log");
//! let report = LocalQemu::default().boot(&volume, &opts)?;
//! if !report.booted {
//!     eprintln!("{report}");
//! }
//! # Ok::<(), cloud::Error>(())
//! ```

pub mod console;
mod error;
mod options;
mod qemu;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use console::{Failure, FailureKind, Milestones, Probe};
pub use error::{Error, Result};
pub use options::{
    AccelChoice, BootOptions, DEFAULT_MAC, DEFAULT_NIC_SLOT, DEFAULT_TIMEOUT_KVM,
    DEFAULT_TIMEOUT_TCG, DiskBus, Firmware, ImageFormat, Until, Volume,
};
pub use qemu::{LocalQemu, RunPaths, detect_accel};

/// Boots a volume somewhere and judges the boot.
pub trait BootAdapter {
    /// Short name (`qemu`).
    fn name(&self) -> &'static str;

    /// Boots `volume`, watches it until it booted, failed in a named way, or ran out of time,
    /// then stops it (see `DESIGN.md`: killed, not shut down).
    ///
    /// # Errors
    /// Only when the boot could not be attempted: bad options ([`Error::Usage`]), the emulator
    /// or firmware missing ([`Error::Missing`]), or a host I/O error ([`Error::Io`]). A guest
    /// that does not boot is an `Ok` report with `booted == false`.
    fn boot(&self, volume: &Volume, options: &BootOptions) -> Result<BootReport>;
}

/// Accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// qemu's software emulation.
    Tcg,
}

/// The accelerator a boot used, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccelUsed {
    /// Which.
    pub accel: Accel,
    /// Why (`/sys/module/kvm_pvm present: …`, `/dev/kvm is usable`, `asked for`).
    pub reason: String,
}

/// How a boot ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The success rule was met.
    Booted,
    /// `Kernel panic - not syncing`.
    KernelPanic,
    /// The initramfs dropped to its shell (root device not found, typically).
    InitramfsShell,
    /// systemd emergency or rescue mode.
    EmergencyMode,
    /// The firmware found nothing to boot.
    NoBootableDevice,
    /// The time limit passed with no success and no named failure.
    Timeout,
    /// The emulator exited (reboot, triple fault, power-off, or a start-up error).
    QemuExited,
}

impl Verdict {
    /// Stable name (`booted`, `kernel-panic`, `initramfs-shell`, `emergency-mode`,
    /// `no-bootable-device`, `timeout`, `qemu-exited`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Booted => "booted",
            Self::KernelPanic => "kernel-panic",
            Self::InitramfsShell => "initramfs-shell",
            Self::EmergencyMode => "emergency-mode",
            Self::NoBootableDevice => "no-bootable-device",
            Self::Timeout => "timeout",
            Self::QemuExited => "qemu-exited",
        }
    }
}

impl From<FailureKind> for Verdict {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::KernelPanic => Self::KernelPanic,
            FailureKind::InitramfsShell => Self::InitramfsShell,
            FailureKind::EmergencyMode => Self::EmergencyMode,
            FailureKind::NoBootableDevice => Self::NoBootableDevice,
        }
    }
}

/// The result of one boot (stable JSON through `serde`).
#[derive(Debug, Clone, Serialize)]
pub struct BootReport {
    /// Adapter name.
    pub adapter: &'static str,
    /// What was booted.
    pub volume: String,
    /// Whether it really booted.
    pub booted: bool,
    /// How it ended.
    pub verdict: Verdict,
    /// The named failure and the line that shows it.
    pub failure: Option<Failure>,
    /// Milestones reached.
    pub reached: Milestones,
    /// The guest-side probe's report, if it printed one.
    pub probe: Option<Probe>,
    /// The first console line matching the caller's `expect` pattern.
    pub expected_line: Option<String>,
    /// Accelerator used and why.
    pub accel: AccelUsed,
    /// Firmware used.
    pub firmware: Firmware,
    /// Disk bus used.
    pub disk_bus: DiskBus,
    /// Time from start to verdict, in milliseconds.
    pub elapsed_ms: u64,
    /// The time limit, in seconds.
    pub timeout_s: u64,
    /// The serial console log, when the caller asked to keep it.
    pub log_path: Option<PathBuf>,
    /// The last serial console lines (escape sequences removed).
    pub console_tail: Vec<String>,
    /// The VGA text screen at the end of a failed boot (empty when booted or in graphics mode).
    pub screen: Vec<String>,
    /// The emulator's exit status, when it exited by itself.
    pub qemu_exit: Option<String>,
    /// The end of the emulator's standard error, when a failed boot left some.
    pub qemu_stderr: Option<String>,
    /// The emulator command line.
    pub command: Vec<String>,
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed_ms / 1000;
        let tenths = (self.elapsed_ms % 1000) / 100;
        writeln!(
            f,
            "{}: {} after {secs}.{tenths} s ({}, {}, {}, {}: {})",
            self.volume,
            if self.booted { "booted" } else { "NOT booted" },
            self.firmware,
            self.disk_bus,
            self.adapter,
            match self.accel.accel {
                Accel::Kvm => "kvm",
                Accel::Tcg => "tcg",
            },
            self.accel.reason
        )?;
        writeln!(f, "verdict: {}", self.verdict.as_str())?;
        let r = &self.reached;
        let mark = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            f,
            "reached: bootloader {}, kernel {}, root mounted {}, login prompt {}, probe {}",
            mark(r.bootloader),
            mark(r.kernel_started),
            mark(r.root_mounted),
            mark(r.login_prompt),
            mark(r.probe_line)
        )?;
        if let Some(fail) = &self.failure {
            writeln!(f, "failure: {} ({})", fail.kind.as_str(), fail.line)?;
        }
        if let Some(c) = &self.probe {
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "none".to_owned()
                } else {
                    v.join(" ")
                }
            };
            writeln!(
                f,
                "probe: root {}, ip {}, interfaces {}, virtio modules {}",
                c.root,
                list(c.ip.clone()),
                list(c.ifaces.iter().map(|(n, a)| format!("{n}:{a}")).collect()),
                list(c.modules.clone())
            )?;
        }
        if let Some(l) = &self.expected_line {
            writeln!(f, "matched: {l}")?;
        }
        if let Some(p) = &self.log_path {
            writeln!(f, "console log: {}", p.display())?;
        }
        if !self.booted {
            if let Some(e) = &self.qemu_exit {
                writeln!(f, "qemu exited: {e}")?;
            }
            if let Some(e) = &self.qemu_stderr {
                writeln!(f, "qemu stderr:\n{e}")?;
            }
            if !self.console_tail.is_empty() {
                writeln!(f, "last serial console lines:")?;
                for l in &self.console_tail {
                    writeln!(f, "  {l}")?;
                }
            }
            if !self.screen.is_empty() {
                writeln!(f, "VGA screen:")?;
                for l in &self.screen {
                    writeln!(f, "  {l}")?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BootReport {
        BootReport {
            adapter: "qemu",
            volume: "d.raw (raw)".into(),
            booted: false,
            verdict: Verdict::InitramfsShell,
            failure: Some(Failure {
                kind: FailureKind::InitramfsShell,
                line: "ALERT!  /dev/sda1 does not exist.  Dropping to a shell!".into(),
            }),
            reached: Milestones {
                bootloader: true,
                kernel_started: true,
                ..Milestones::default()
            },
            probe: None,
            expected_line: None,
            accel: AccelUsed {
                accel: Accel::Tcg,
                reason: "asked for".into(),
            },
            firmware: Firmware::Bios,
            disk_bus: DiskBus::VirtioBlk,
            elapsed_ms: 71_250,
            timeout_s: 300,
            log_path: None,
            console_tail: vec![],
            screen: vec![
                "Loading Linux 6.1.0-50-amd64 ...".into(),
                "(initramfs)".into(),
            ],
            qemu_exit: None,
            qemu_stderr: None,
            command: vec!["qemu-system-x86_64".into()],
        }
    }

    #[test]
    fn human_report() {
        assert_eq!(
            report().to_string(),
            "d.raw (raw): NOT booted after 71.2 s (bios, virtio-blk, qemu, tcg: asked for)
verdict: initramfs-shell
reached: bootloader yes, kernel yes, root mounted no, login prompt no, probe no
failure: initramfs-shell (ALERT!  /dev/sda1 does not exist.  Dropping to a shell!)
VGA screen:
  Loading Linux 6.1.0-50-amd64 ...
  (initramfs)
"
        );
        let mut ok = report();
        ok.booted = true;
        ok.verdict = Verdict::Booted;
        ok.failure = None;
        ok.probe = Probe::parse(
            "REHOST-PROBE root=/dev/vda1 ip=10.0.2.15/24 ifaces=ens3:10.0.2.15/24 modules=virtio_blk",
        );
        let s = ok.to_string();
        assert!(s.starts_with("d.raw (raw): booted after 71.2 s"));
        assert!(s.contains(
            "probe: root /dev/vda1, ip 10.0.2.15/24, interfaces ens3:10.0.2.15/24, virtio modules virtio_blk\n"
        ));
        assert!(!s.contains("VGA screen"));
    }

    #[test]
    fn json_report_fields() {
        let v = serde_json::to_value(report()).unwrap();
        assert_eq!(v["booted"], false);
        assert_eq!(v["verdict"], "initramfs-shell");
        assert_eq!(v["failure"]["kind"], "initramfs-shell");
        assert_eq!(v["reached"]["kernel_started"], true);
        assert_eq!(v["reached"]["root_mounted"], false);
        assert_eq!(v["accel"]["accel"], "tcg");
        assert_eq!(v["firmware"], "bios");
        assert_eq!(v["disk_bus"], "virtio-blk");
        assert_eq!(v["elapsed_ms"], 71_250);
        assert_eq!(v["screen"][1], "(initramfs)");
        assert_eq!(v["probe"], serde_json::Value::Null);
        assert_eq!(v["reached"]["probe_line"], false);
        let mut ok = report();
        ok.probe =
            Probe::parse("REHOST-PROBE root=/dev/vda1 ip=10.0.2.50/24 ifaces=ens3:10.0.2.50/24");
        let v = serde_json::to_value(ok).unwrap();
        assert_eq!(v["probe"]["root"], "/dev/vda1");
        assert_eq!(v["probe"]["ip"][0], "10.0.2.50/24");
        assert_eq!(v["probe"]["ifaces"][0][0], "ens3");
        assert_eq!(v["probe"]["ifaces"][0][1], "10.0.2.50/24");
    }
}
