//! `rehost boot VOLUME`: boot a volume in a local VM and judge from its consoles whether it
//! really booted (the `cloud` crate's [`cloud::LocalQemu`] adapter).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use cloud::{AccelChoice, BootAdapter, BootOptions, DiskBus, Firmware, LocalQemu, Until, Volume};

pub(crate) const LONG_ABOUT: &str = "\
Boot a volume in a local virtual machine and judge whether it really booted.

The volume (an image file, raw or qcow2, or an nbd:// URI) is started in qemu-system-x86_64 the \
way a KVM cloud starts it: a virtio-blk disk (or --disk-bus), a virtio-net NIC on qemu's user \
network in PCI slot 3 (so a guest with predictable names calls it ens3) with MAC \
52:54:00:12:34:56, SeaBIOS or OVMF. KVM is used only when it really works on this host; \
otherwise qemu's software emulation (TCG) runs the guest, which is slow: allow a few minutes.

The guest's serial console is captured (--keep-log keeps it) and, while the guest prints on the \
VGA text console only (no console=ttyS0), the text screen is read too. Verdicts:
  booted           a login prompt, or the guest-side probe line (see below)
  kernel-panic     \"Kernel panic - not syncing\"
  initramfs-shell  the initramfs did not find the root device and dropped to a shell
  emergency-mode   systemd's emergency or rescue mode
  no-bootable-device  the firmware found nothing to boot (wrong --firmware?)
  timeout          none of the above within --timeout seconds
  qemu-exited      the emulator stopped (reboot, power-off, start-up error)
The guest-side probe is a line `REHOST-PROBE root=DEV ip=ADDR/PREFIX,... \
ifaces=NAME:ADDR,... modules=...` that rehost's test images print on ttyS0 once the network \
is up (and after rehost's first-boot job, if any, has run and its writes are synced). With --until any (the \
default) the first of login prompt and probe line counts, after waiting up to --settle \
seconds for the other so the report carries both; --until login or --until probe require \
one; --expect REGEX instead requires a console line matching REGEX. For initramfs-shell the \
report quotes the line naming the missing device. Then the VM is stopped at once (killed, \
not shut down: with --writable the volume is left as after a power cut, and its filesystem \
journals replay on the next mount).

The volume is never changed: the guest writes to a throw-away overlay (qemu snapshot=on) unless \
--writable is given. No guest code runs on the host.

Exit status: 0 booted, 1 not booted, 2 usage or operational error (qemu or OVMF missing, \
volume unreadable).

Examples:
  rehost boot vm.raw
  rehost boot vm.qcow2 --firmware uefi --timeout 600 --keep-log vm.console.log
  rehost boot nbd://gateway:10809/vol1 --json
  rehost boot vm.raw --disk-bus sata --until probe";

/// Arguments of `rehost boot`.
#[derive(Debug, clap::Args)]
pub(crate) struct BootArgs {
    /// The volume: an image file (raw or qcow2) or an NBD URI (nbd://HOST[:PORT]/EXPORT,
    /// nbd+unix:///EXPORT?socket=PATH).
    #[arg(value_name = "VOLUME")]
    volume: String,
    /// Where to boot it (only `qemu`: qemu-system-x86_64 on this host).
    #[arg(long, value_name = "ADAPTER", default_value = "qemu", value_parser = ["qemu"])]
    adapter: String,
    /// Firmware: bios (SeaBIOS) or uefi (OVMF).
    #[arg(long, value_name = "FW", default_value = "bios", value_parser = ["bios", "uefi"])]
    firmware: String,
    /// How the disk is attached: virtio-blk (the cloud's), virtio-scsi, sata or ide.
    #[arg(long, value_name = "BUS", default_value = "virtio-blk",
          value_parser = ["virtio-blk", "virtio-scsi", "sata", "ide"])]
    disk_bus: String,
    /// Give up after this many seconds [default: 300 under TCG, 120 under KVM].
    #[arg(long, value_name = "S")]
    timeout: Option<u64>,
    /// What counts as booted: any (a login prompt or the probe line), login, or probe.
    #[arg(long, value_name = "RULE", default_value = "any", value_parser = ["any", "login", "probe"])]
    until: String,
    /// With --until any: after the first of login prompt and probe line, wait this many seconds
    /// for the other.
    #[arg(long, value_name = "S", default_value_t = 60)]
    settle: u64,
    /// Booted means a console line matches this regular expression (replaces --until).
    #[arg(long, value_name = "REGEX")]
    expect: Option<String>,
    /// MAC address of the NIC.
    #[arg(long, value_name = "MAC", default_value = cloud::DEFAULT_MAC)]
    mac: String,
    /// PCI slot of the NIC (3..=31); the guest's predictable name is ens<SLOT>.
    #[arg(long, value_name = "SLOT", default_value_t = cloud::DEFAULT_NIC_SLOT)]
    nic_slot: u8,
    /// First address qemu's DHCP server hands out [default: 10.0.2.15]; set it away from a
    /// static address to tell a lease from a preserved configuration.
    #[arg(long, value_name = "ADDR")]
    dhcp_start: Option<std::net::Ipv4Addr>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    memory: u32,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u32,
    /// Accelerator: auto (KVM when it really works here, else TCG), kvm or tcg.
    #[arg(long, value_name = "ACCEL", default_value = "auto", value_parser = ["auto", "kvm", "tcg"])]
    accel: String,
    /// Keep the serial console log in this file.
    #[arg(long, value_name = "PATH")]
    keep_log: Option<PathBuf>,
    /// Let the guest write to the volume (no snapshot overlay). The boot then changes the
    /// volume: journals replayed, logs written, first-boot units run; the VM is killed at the
    /// end, so the guest's filesystems are left unclean (their journals replay on next mount).
    #[arg(long)]
    writable: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Turns the raw arguments into the adapter's settings (house style S19's second layer).
fn settings(args: &BootArgs) -> anyhow::Result<(Volume, BootOptions)> {
    let volume = Volume::parse(&args.volume)
        .with_context(|| format!("cannot open volume {}", args.volume))?;
    let mut opts = BootOptions {
        firmware: args.firmware.parse::<Firmware>()?,
        disk_bus: args.disk_bus.parse::<DiskBus>()?,
        mac: args.mac.to_ascii_lowercase(),
        nic_slot: args.nic_slot,
        memory_mib: args.memory,
        cpus: args.cpus,
        timeout: args.timeout.map(Duration::from_secs),
        settle: Duration::from_secs(args.settle),
        until: args.until.parse::<Until>()?,
        expect: None,
        log_path: args.keep_log.clone(),
        snapshot: !args.writable,
        accel: args.accel.parse::<AccelChoice>()?,
        dhcp_start: args.dhcp_start,
    };
    if let Some(p) = &args.expect {
        opts = opts.expect(p)?;
    }
    opts.validate()?;
    Ok((volume, opts))
}

/// Runs `rehost boot`.
pub(crate) fn run(args: &BootArgs) -> anyhow::Result<ExitCode> {
    let (volume, opts) = settings(args)?;
    let report = LocalQemu::default()
        .boot(&volume, &opts)
        .with_context(|| format!("cannot boot {}", args.volume))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{report}")?;
    }
    Ok(if report.booted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        a: BootArgs,
    }

    fn parse(extra: &[&str]) -> BootArgs {
        let mut argv = vec!["t"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).unwrap().a
    }

    #[test]
    fn defaults_and_options_map_to_settings() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.raw");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let img = img.to_str().unwrap();
        let (v, o) = settings(&parse(&[img])).unwrap();
        assert!(matches!(v, Volume::File { .. }));
        assert_eq!(o.firmware, Firmware::Bios);
        assert_eq!(o.disk_bus, DiskBus::VirtioBlk);
        assert_eq!(o.timeout, None);
        assert_eq!(o.until, Until::Any);
        assert!(o.snapshot);
        assert_eq!(o.accel, AccelChoice::Auto);
        let (_, o) = settings(&parse(&[
            img,
            "--firmware",
            "uefi",
            "--disk-bus",
            "sata",
            "--timeout",
            "42",
            "--until",
            "probe",
            "--mac",
            "00:50:56:AA:BB:CC",
            "--nic-slot",
            "5",
            "--accel",
            "tcg",
            "--writable",
            "--expect",
            "login:",
            "--dhcp-start",
            "10.0.2.50",
        ]))
        .unwrap();
        assert_eq!(o.firmware, Firmware::Uefi);
        assert_eq!(o.disk_bus, DiskBus::Sata);
        assert_eq!(o.timeout, Some(Duration::from_secs(42)));
        assert_eq!(o.until, Until::Probe);
        assert_eq!(o.mac, "00:50:56:aa:bb:cc");
        assert_eq!(o.nic_slot, 5);
        assert_eq!(o.accel, AccelChoice::Tcg);
        assert!(!o.snapshot);
        assert!(o.expect.unwrap().is_match("x login:"));
        assert_eq!(o.dhcp_start, Some(std::net::Ipv4Addr::new(10, 0, 2, 50)));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.raw");
        std::fs::write(&img, [0u8; 512]).unwrap();
        let img = img.to_str().unwrap();
        let e = settings(&parse(&[img, "--nic-slot", "2"])).unwrap_err();
        assert_eq!(format!("{e:#}"), "usage: nic slot 2 out of range 3..=31");
        let e = settings(&parse(&[img, "--expect", "("])).unwrap_err();
        assert!(format!("{e:#}").starts_with("usage: expect pattern \"(\" is invalid"));
        let e = settings(&parse(&["/nonexistent/x.raw"])).unwrap_err();
        assert!(format!("{e:#}").starts_with("cannot open volume /nonexistent/x.raw"));
        let argv = ["t", img, "--firmware", "coreboot"];
        assert!(T::try_parse_from(argv).is_err());
    }
}
