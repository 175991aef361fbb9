//! `rehost`: make migrated virtual machines boot on their new cloud.
//!
//! The binary is thin (house style S1, S19): it parses arguments, calls the libraries, prints,
//! and chooses the exit code. Exit codes are a contract: 0 done with no problems, 1 problems found
//! (for `inspect`: no operating system found), 2 usage or operational error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Repair migrated virtual-machine disks offline so they boot on KVM clouds.
#[derive(Debug, Parser)]
#[command(name = "rehost", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Log more (repeat for trace-level detail). Logs go to standard error.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what is on a disk image or NBD export: OS, filesystems, bootloader, drivers.
    Inspect,
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect => anyhow::bail!("inspect is being implemented"),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rehost: {e:#}");
            ExitCode::from(2)
        }
    }
}
