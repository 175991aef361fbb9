//! `rehost inspect`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use disk::detect::ImageFormat;
use disk::open::open;

pub(crate) const LONG_ABOUT: &str = "\
Report what is on one or more disks: the partition table, every filesystem and logical volume, \
the operating system on each root filesystem (distro, version, arch, hostname, kernels and their \
virtio drivers, network configuration, hypervisor tools; for Windows: edition, build, drive \
letters, storage and network drivers, hibernation), the firmware the disk is set up for and its \
bootloaders.

Nothing is written and nothing from the guest is executed. Problems met on the way (a damaged \
partition table, an unreadable filesystem, a dirty hive) are reported as findings with a stable \
code; they do not stop the inspection.

DISK is a file (raw or qcow2; the format is detected unless --format is given) or an NBD URI: \
nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH.

Exit status: 0 if an operating system was found on every disk, 1 if a disk has none, \
2 on errors (unreadable disk, bad arguments).";

/// Arguments of `rehost inspect`.
#[derive(Debug, clap::Args)]
pub(crate) struct InspectArgs {
    /// Disk images or NBD URIs to inspect.
    #[arg(required = true, value_name = "DISK")]
    disks: Vec<String>,
    /// Image format, instead of detecting it: raw or qcow2. Pin it for images a guest could
    /// have written, since detection trusts the first bytes.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<ImageFormat>,
    /// Print JSON (one object per disk, one per line) instead of text. The format is described by
    /// inspect/schema/report.schema.json.
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_format(s: &str) -> Result<ImageFormat, String> {
    match s {
        "raw" => Ok(ImageFormat::Raw),
        "qcow2" => Ok(ImageFormat::Qcow2),
        other => Err(format!("unknown format {other:?}; expected raw or qcow2")),
    }
}

pub(crate) fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut all_found = true;
    for d in &args.disks {
        let mut opts = crate::open_options();
        if let Some(f) = args.format {
            opts = opts.format(f);
        }
        let opened = open(d, &opts).with_context(|| format!("cannot open {d}"))?;
        let fmt = opened.format().name();
        let report = inspect::inspect(opened.read(), d, fmt)
            .with_context(|| format!("cannot inspect {d}"))?;
        all_found &= !report.operating_systems.is_empty();
        if args.json {
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", inspect::human::render(&report))?;
        }
    }
    out.flush()?;
    Ok(if all_found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
