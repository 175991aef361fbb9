//! `rehost drivers list SOURCE [--for DISK]`: what a virtio-win source holds, and which driver
//! packages would be chosen for an inspected Windows guest, and why.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use disk::open::open;
use drivers::{Arch, Catalog, Source, WindowsTarget};

/// Driver catalogs.
#[derive(Debug, clap::Args)]
pub(crate) struct DriversArgs {
    #[command(subcommand)]
    command: DriversCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DriversCommand {
    /// List a virtio-win source (directory or ISO; default: $VIRTIO_WIN), or with --for, the
    /// drivers that would be injected into that Windows disk and why.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// A virtio-win directory (ISO layout or the RPM's drivers/by-os tree) or ISO file.
    #[arg(value_name = "SOURCE", env = "VIRTIO_WIN")]
    source: PathBuf,
    /// Choose drivers for the Windows installation on this disk (file or NBD URI).
    #[arg(long = "for", value_name = "DISK")]
    for_disk: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn target_of(disk_arg: &str) -> anyhow::Result<WindowsTarget> {
    let opened = open(disk_arg, &crate::open_options())
        .with_context(|| format!("cannot open {disk_arg}"))?;
    let report = inspect::inspect(opened.read(), disk_arg, opened.format().name())?;
    let Some(os) = report
        .operating_systems
        .iter()
        .find(|o| o.os_type == "windows")
    else {
        bail!("no Windows installation found on {disk_arg}");
    };
    let arch = match os.arch.as_deref() {
        Some("x86_64") => Arch::Amd64,
        Some("i386") => Arch::X86,
        Some("aarch64") => Arch::Arm64,
        other => bail!("unsupported Windows architecture {other:?} on {disk_arg}"),
    };
    let server = os
        .windows
        .as_ref()
        .and_then(|w| w.installation_type.as_deref())
        .map_or_else(
            || os.product_name.contains("Server"),
            |t| t.starts_with("Server"),
        );
    Ok(WindowsTarget {
        major: os.major_version,
        minor: os.minor_version,
        build: os
            .build_id
            .as_deref()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0),
        server,
        arch,
    })
}

pub(crate) fn run(args: &DriversArgs) -> anyhow::Result<ExitCode> {
    let DriversCommand::List(a) = &args.command;
    let source = Source::open(&a.source)
        .with_context(|| format!("cannot open virtio-win source {}", a.source.display()))?;
    let catalog = Catalog::open(source)
        .with_context(|| format!("cannot read virtio-win source {}", a.source.display()))?;
    let mut out = std::io::stdout().lock();
    match &a.for_disk {
        None => {
            if a.json {
                serde_json::to_writer(&mut out, catalog.packages())?;
                writeln!(out)?;
            } else {
                write!(out, "{}", drivers::render_catalog(&catalog))?;
            }
        }
        Some(d) => {
            let target = target_of(d)?;
            let sel = catalog
                .select(&target)
                .with_context(|| format!("no drivers for {target}"))?;
            if a.json {
                serde_json::to_writer(&mut out, &sel)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", drivers::render_human(&sel))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
