//! `rehost`: make migrated virtual machines boot on their new cloud.
//!
//! The binary is thin (house style S1, S19): it parses arguments, calls the libraries, prints,
//! and chooses the exit code. Exit codes are a contract: 0 done with no problems, 1 problems found
//! (for `inspect`: no operating system found), 2 usage or operational error. A broken pipe exits 0.

mod boot_cmd;
mod drivers_cmd;
mod fixup_cmd;
mod gateway;
mod guest_cmd;
mod inspect_cmd;
mod recipe_cmd;
mod reg_cmd;
mod write_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Repair migrated virtual-machine disks offline so they boot on KVM clouds.
///
/// rehost reads raw and qcow2 images and NBD exports directly: no helper VM, no root, and no guest
/// code is ever run on the host.
#[derive(Debug, Parser)]
#[command(
    name = "rehost",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log more to standard error (-v debug, -vv trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Let qcow2 images use backing files, up to DEPTH levels (an overlay written by
    /// `--output` has one). Off by default: a backing file named inside an untrusted image
    /// could make rehost read any file of this host.
    #[arg(long, global = true, value_name = "DEPTH", value_parser = clap::value_parser!(u8).range(1..=10))]
    allow_backing: Option<u8>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report what is on a disk: partitions, filesystems, OS, firmware, bootloaders, drivers.
    #[command(long_about = inspect_cmd::LONG_ABOUT)]
    Inspect(inspect_cmd::InspectArgs),
    /// List a guest directory: `rehost ls DISK:/etc`.
    Ls(guest_cmd::GuestPathArgs),
    /// Print a guest file: `rehost cat DISK:/etc/fstab`.
    Cat(guest_cmd::GuestPathArgs),
    /// Show a guest file's metadata: `rehost stat DISK:/etc/fstab`.
    Stat {
        #[command(flatten)]
        target: guest_cmd::GuestPathArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a local file into a guest: `rehost cp ./hosts DISK:/etc/hosts`.
    #[command(long_about = write_cmd::CP_ABOUT, after_help = write_cmd::CP_EXAMPLES)]
    Cp(write_cmd::CpArgs),
    /// Remove a guest file, symlink or (with -r) directory: `rehost rm DISK:/etc/x`.
    #[command(long_about = write_cmd::RM_ABOUT, after_help = write_cmd::RM_EXAMPLES)]
    Rm(write_cmd::RmArgs),
    /// Create a guest directory: `rehost mkdir -p DISK:/etc/x/y`.
    #[command(long_about = write_cmd::MKDIR_ABOUT, after_help = write_cmd::MKDIR_EXAMPLES)]
    Mkdir(write_cmd::MkdirArgs),
    /// Read and change a Windows guest's registry: get, set, delete, import, export.
    #[command(long_about = reg_cmd::LONG_ABOUT)]
    Reg(reg_cmd::RegArgs),
    /// Restore an image changed by rehost from its undo file, or discard the undo file.
    Undo(guest_cmd::UndoArgs),
    /// Plan the repairs that make a migrated disk boot on KVM (--dry-run; applying is not
    /// supported yet).
    Fixup(fixup_cmd::FixupArgs),
    /// Recipes for `fixup`: list, show, lint.
    Recipe(recipe_cmd::RecipeArgs),
    /// Virtio-win driver catalogs: what a source holds and what would be injected.
    Drivers(drivers_cmd::DriversArgs),
    /// Serve volumes and snapshots over NBD, and manage the volume store.
    Gateway(gateway::GatewayArgs),
    /// Boot a volume in a local VM and judge whether it really booted (exit 0 booted, 1 not).
    #[command(long_about = boot_cmd::LONG_ABOUT)]
    Boot(boot_cmd::BootArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The backing-file policy chosen on the command line, set once in [`run`].
static BACKING: std::sync::OnceLock<disk::open::BackingPolicy> = std::sync::OnceLock::new();

/// Options for opening a DISK argument: the defaults plus the command line's backing policy.
pub(crate) fn open_options() -> disk::open::OpenOptions {
    let policy = BACKING
        .get()
        .copied()
        .unwrap_or_else(disk::open::BackingPolicy::deny);
    disk::open::OpenOptions::new().backing(policy)
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Some(depth) = cli.allow_backing {
        let _ = BACKING.set(disk::open::BackingPolicy::allow(depth.into()));
    }
    match cli.command {
        Command::Inspect(args) => inspect_cmd::run(&args),
        Command::Ls(args) => guest_cmd::ls(&args),
        Command::Cat(args) => guest_cmd::cat(&args),
        Command::Stat { target, json } => guest_cmd::stat(&target, json),
        Command::Cp(args) => write_cmd::exit_code(write_cmd::cp(&args)),
        Command::Rm(args) => write_cmd::exit_code(write_cmd::rm(&args)),
        Command::Mkdir(args) => write_cmd::exit_code(write_cmd::mkdir(&args)),
        Command::Reg(args) => write_cmd::exit_code(reg_cmd::run(&args)),
        Command::Undo(args) => guest_cmd::undo(&args),
        Command::Fixup(args) => write_cmd::exit_code(fixup_cmd::run(&args)),
        Command::Recipe(args) => recipe_cmd::run(&args),
        Command::Drivers(args) => drivers_cmd::run(&args),
        Command::Gateway(args) => gateway::run(args),
        Command::Boot(args) => boot_cmd::run(&args),
    }
}

/// True if the error chain ends in a broken pipe (the reader of our output went away).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "rehost: {e:#}");
            ExitCode::from(2)
        }
    }
}
