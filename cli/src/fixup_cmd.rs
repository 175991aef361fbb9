//! `rehost fixup DISK`: inspect, choose a recipe, plan every change, apply it through the
//! transaction layer, then inspect and plan again to prove the result.
//!
//! Order of work, chosen so a failure at any point leaves the disk as it was:
//! 1. everything read-only: inspect, recipe, plan (a `--dry-run` stops here);
//! 2. an empty plan ends the run without opening the disk for writing (a fixed disk stays
//!    byte-identical, and its undo file is left alone);
//! 3. an interrupted earlier run (an open undo file) is rolled back first; a committed undo
//!    file is never replaced, because it is the only way back to the original;
//! 4. the plan is applied inside a [`disk::txn::Transaction`]; any error rolls it back;
//! 5. after the commit, the disk is inspected and planned again: the new plan must be empty.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use disk::BlockWrite;
use disk::open::{Access, open};
use disk::txn::{State, Transaction};
use fixers::{FsApplier, Plan, PlanOptions, Recipe, RecipeSet};
use guestfs::write::{FsWrite, WriteOptions};

const LONG_ABOUT: &str = "\
Make a migrated disk boot on KVM: inspect it, choose the recipe for its operating system, plan \
every change (block device names to UUID=, network configuration moved off the old NIC's name \
and MAC, serial console, stale caches, and the recipe's other steps), apply the plan, and check \
the result.

Safety:
  * Nothing is written before the plan is complete. --dry-run prints the plan (unified diffs of \
every text file, a list of binary files; or --json) and stops.
  * Every write goes through an undo journal, DISK.rehost-undo next to the image (or \
--undo-file): the original of each block is saved and flushed before the block is changed. A \
run that dies half-way is rolled back automatically by the next `rehost fixup`, or by \
`rehost undo DISK`. After a successful run the undo file is kept: `rehost undo DISK` restores \
the original byte for byte, `rehost undo DISK --discard` makes the changes permanent.
  * A disk that already has a committed undo file is not touched again until that file is \
undone or discarded, so the way back to the original is never lost.
  * Dirty or hibernated filesystems are refused (--force accepts a dirty ext4 journal or NTFS \
dirty flag; hibernation is always refused).
  * After the commit the disk is inspected and planned again; the new plan must be empty. A \
second run on a fixed disk therefore changes nothing and exits 0.

Exit status: 0 fixed (or nothing to do), 1 refused or failed (the disk is as it was), 2 usage.

Examples:
  rehost fixup vm.img --dry-run
  rehost fixup vm.qcow2 --net preserve
  rehost fixup nbd://gateway:10809/vol1 --undo-file /var/lib/rehost/vol1.undo --json";

/// Arguments of `rehost fixup`.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub(crate) struct FixupArgs {
    /// The disk: an image file (raw or qcow2) or an NBD URI.
    #[arg(value_name = "DISK")]
    disk: String,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Use this recipe instead of the best match.
    #[arg(long, value_name = "NAME")]
    recipe: Option<String>,
    /// Also load user recipes from this directory (they override shipped ones by name).
    #[arg(long, value_name = "DIR")]
    recipe_dir: Option<PathBuf>,
    /// Network policy: keep static addresses on the new NIC name (preserve) or switch the first
    /// NIC to DHCP (dhcp). Default: the recipe's.
    #[arg(long, value_name = "POLICY", value_parser = ["preserve", "dhcp"])]
    net: Option<String>,
    /// The target platform (only `kvm` today).
    #[arg(long, value_name = "TARGET", default_value = "kvm", value_parser = ["kvm"])]
    target: String,
    /// Undo journal to write (default: DISK.rehost-undo next to an image file; required for an
    /// NBD URI).
    #[arg(long, value_name = "FILE")]
    undo_file: Option<PathBuf>,
    /// Leave DISK untouched: create NEW.qcow2, a qcow2 overlay backed by DISK, and write every
    /// change there (no undo journal is needed; delete NEW.qcow2 to go back).
    #[arg(long, value_name = "NEW.qcow2", conflicts_with_all = ["undo_file", "dry_run"])]
    output: Option<PathBuf>,
    /// Replace the --output file if it exists.
    #[arg(long, requires = "output")]
    overwrite: bool,
    /// Windows: the virtio-win ISO or directory to take drivers from (default: $VIRTIO_WIN).
    #[arg(long, value_name = "PATH")]
    virtio_win: Option<PathBuf>,
    /// Windows: the target's disk bus, which decides the boot-critical driver (viostor for
    /// virtio-blk, vioscsi for virtio-scsi).
    #[arg(long, value_name = "BUS", value_parser = ["virtio-blk", "virtio-scsi"])]
    bus: Option<String>,
    /// Windows: inject only these drivers (comma-separated, e.g. viostor,netkvm).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    drivers: Vec<String>,
    /// Windows: never inject these drivers (comma-separated).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    exclude_drivers: Vec<String>,
    /// Windows: inject no drivers (the guest already has them).
    #[arg(long, conflicts_with_all = ["drivers", "exclude_drivers", "virtio_win"])]
    no_drivers: bool,
    /// Write to a filesystem marked dirty (an ext4 journal needing recovery, the NTFS dirty
    /// flag). Hibernated Windows volumes are refused regardless.
    #[arg(long)]
    force: bool,
    /// Print the plan and the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Progress on standard error while a human watches (hidden for --json and when stderr is not a
/// terminal, so pipelines and logs see only the report).
struct Progress(indicatif::ProgressBar);

impl Progress {
    fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        if quiet || !std::io::stderr().is_terminal() {
            return Self(indicatif::ProgressBar::hidden());
        }
        let pb = indicatif::ProgressBar::new_spinner();
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bar:30} {pos}/{len}")
        {
            pb.set_style(style);
        }
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        Self(pb)
    }

    fn phase(&self, msg: impl Into<std::borrow::Cow<'static, str>>) {
        self.0.set_length(0);
        self.0.set_position(0);
        self.0.set_message(msg);
    }

    fn change(&self, done: usize, total: usize, c: &fixers::Change) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
        self.0.set_message(c.describe());
    }

    fn done(&self) {
        self.0.finish_and_clear();
    }
}

/// Inspection, recipe and plan of one disk, all read-only.
struct Planned {
    plan: Plan,
    recipe: String,
}

fn make_plan(
    args: &FixupArgs,
    dev: disk::SharedRead,
    format: &str,
    progress: &Progress,
) -> anyhow::Result<Planned> {
    progress.phase(format!("inspecting {}", args.disk));
    let report = inspect::inspect(dev.clone(), &args.disk, format)?;
    let Some(os) = report.operating_systems.first() else {
        bail!("no operating system found on {}", args.disk);
    };
    let mut set = RecipeSet::shipped().context("the shipped recipes do not load")?;
    if let Some(dir) = &args.recipe_dir {
        set.load_dir(dir)
            .with_context(|| format!("cannot load recipes from {}", dir.display()))?;
    }
    let recipe: &Recipe = match &args.recipe {
        Some(name) => set
            .get(name)
            .with_context(|| format!("no recipe named {name:?}"))?,
        None => set
            .matching(&report, os)
            .first()
            .copied()
            .with_context(|| {
                format!(
                    "no recipe matches {} {}.{} ({}); name one with --recipe",
                    os.distro, os.major_version, os.minor_version, os.os_type
                )
            })?,
    };
    let view = inspect::guest_view(dev, None)
        .with_context(|| format!("cannot read the files of {}", args.disk))?;
    let opts = PlanOptions {
        overrides: overrides(args)?,
    };
    progress.phase(format!("planning recipe {}", recipe.name));
    let plan = fixers::plan(recipe, &report, os, &view.fs, &opts)
        .with_context(|| format!("cannot plan recipe {}", recipe.name))?;
    Ok(Planned {
        plan,
        recipe: recipe.name.clone(),
    })
}

/// Command-line options that override recipe step parameters, by fixer name.
fn overrides(args: &FixupArgs) -> anyhow::Result<BTreeMap<String, toml::Table>> {
    let mut out = BTreeMap::new();
    if let Some(policy) = &args.net {
        let mut t = toml::Table::new();
        t.insert("policy".into(), toml::Value::String(policy.clone()));
        out.insert("network".to_owned(), t);
    }
    let mut w = toml::Table::new();
    if let Some(p) = &args.virtio_win {
        let p = p
            .to_str()
            .with_context(|| format!("--virtio-win {} is not UTF-8", p.display()))?;
        w.insert("virtio_win".into(), toml::Value::String(p.to_owned()));
    }
    if let Some(bus) = &args.bus {
        w.insert("bus".into(), toml::Value::String(bus.clone()));
    }
    let names = |v: &[String]| {
        toml::Value::Array(v.iter().map(|n| toml::Value::String(n.clone())).collect())
    };
    if !args.drivers.is_empty() {
        w.insert("include".into(), names(&args.drivers));
    }
    if !args.exclude_drivers.is_empty() {
        w.insert("exclude".into(), names(&args.exclude_drivers));
    }
    if args.no_drivers {
        w.insert("no_drivers".into(), toml::Value::Boolean(true));
    }
    if !w.is_empty() {
        out.insert("virtio-win".to_owned(), w);
    }
    Ok(out)
}

fn undo_file_for(args: &FixupArgs) -> anyhow::Result<PathBuf> {
    if let Some(f) = &args.undo_file {
        return Ok(f.clone());
    }
    if args.disk.contains("://") {
        return Err(crate::write_cmd::UsageError(format!(
            "{} is not a local file, so there is no place next to it for the undo journal; \
             name one with --undo-file FILE",
            args.disk
        ))
        .into());
    }
    Ok(disk::txn::undo_path_for(Path::new(&args.disk)))
}

/// What an earlier run left behind.
enum Previous {
    /// No undo file, or a settled rolled-back one.
    Nothing,
    /// An interrupted run, now rolled back.
    RolledBack,
    /// A committed run: its undo file is the only way back to the original.
    Committed,
}

/// Rolls back an interrupted earlier run, and reports a committed one.
fn settle_previous(dev: &dyn BlockWrite, undo: &Path, disk: &str) -> anyhow::Result<Previous> {
    if !undo.exists() {
        return Ok(Previous::Nothing);
    }
    let info = disk::txn::info(undo).with_context(|| {
        format!(
            "undo file {} is damaged; nothing was changed (inspect it with `rehost undo {disk} \
             --dry-run`)",
            undo.display()
        )
    })?;
    match info.state {
        State::Open => {
            let n = disk::txn::recover(dev, undo).with_context(|| {
                format!(
                    "cannot roll back the interrupted run recorded in {}",
                    undo.display()
                )
            })?;
            tracing::info!(blocks = ?n, "rolled back an interrupted run");
            // Said on stderr even with --json: the user must know the disk was changed back.
            let _ = writeln!(
                std::io::stderr(),
                "rehost: an earlier run on {disk} was interrupted; rolled it back from {} first",
                undo.display()
            );
            Ok(Previous::RolledBack)
        }
        State::Committed => Ok(Previous::Committed),
        State::RolledBack => Ok(Previous::Nothing),
    }
}

/// Applies `plan` inside a transaction; commits on success, rolls back on any error.
fn apply_in_transaction(
    dev: Arc<dyn BlockWrite>,
    undo: &Path,
    plan: &Plan,
    force: bool,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let txn = Arc::new(Transaction::begin(dev, undo).context("cannot start the undo journal")?);
    let result = (|| -> anyhow::Result<usize> {
        let wdev: Arc<dyn BlockWrite> = txn.clone();
        let view = inspect::guest_view_rw(wdev, None, WriteOptions::new().force(force))
            .context("cannot open the guest's filesystems for writing")?;
        let n =
            fixers::apply_with_progress(plan, &mut FsApplier::new(&view.fs), &mut |d, t, c| {
                progress.change(d, t, c);
            })?;
        progress.phase("writing filesystem metadata");
        view.fs
            .flush()
            .context("cannot write the filesystems' metadata")?;
        Ok(n)
    })();
    // Every filesystem writer was dropped with the view above, so this is the last handle; if a
    // backend ever kept one, the journal stays open and the next run rolls it back.
    let Ok(txn) = Arc::try_unwrap(txn) else {
        bail!(
            "internal error: a filesystem writer outlived the fix, so the undo journal {} was \
             left open; `rehost undo` or the next `rehost fixup` rolls the disk back",
            undo.display()
        );
    };
    match result {
        Ok(n) => {
            txn.commit().context("cannot commit the undo journal")?;
            Ok(n)
        }
        Err(e) => {
            let rolled = txn.rollback();
            match rolled {
                Ok(_) => {
                    // Settled and useless now; leaving it would read as something to undo.
                    let _ = std::fs::remove_file(undo);
                    Err(e.context("the disk was rolled back to its original content"))
                }
                Err(r) => Err(e.context(format!(
                    "rolling back failed too ({r}); run `rehost undo` before using the disk"
                ))),
            }
        }
    }
}

/// Applies `plan` straight to `dev` (an overlay nobody else has; no journal needed).
fn apply_direct(
    dev: Arc<dyn BlockWrite>,
    plan: &Plan,
    force: bool,
    progress: &Progress,
) -> anyhow::Result<usize> {
    let view = inspect::guest_view_rw(dev.clone(), None, WriteOptions::new().force(force))
        .context("cannot open the guest's filesystems for writing")?;
    let n = fixers::apply_with_progress(plan, &mut FsApplier::new(&view.fs), &mut |d, t, c| {
        progress.change(d, t, c);
    })?;
    progress.phase("writing filesystem metadata");
    view.fs
        .flush()
        .context("cannot write the filesystems' metadata")?;
    drop(view);
    dev.flush().context("cannot flush the output image")?;
    Ok(n)
}

/// The end of a run that wrote: the result, the verification and where the way back is.
struct Outcome<'a> {
    planned: &'a Planned,
    applied: usize,
    again: &'a Planned,
    /// `("undo_file", path)` or `("output", path)`.
    written: (&'static str, String),
    recovered: bool,
}

fn report_outcome(args: &FixupArgs, o: &Outcome<'_>) -> anyhow::Result<ExitCode> {
    let verified = o.again.plan.is_empty();
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::json!({
            "disk": args.disk,
            "recipe": o.planned.recipe,
            "dry_run": false,
            "plan": o.planned.plan,
            "applied": o.applied,
            "rolled_back_interrupted_run": o.recovered,
            "verified": verified,
            "remaining": if verified { None } else { Some(&o.again.plan) },
        });
        v[o.written.0] = serde_json::Value::String(o.written.1.clone());
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        match o.written.0 {
            "output" => writeln!(
                out,
                "applied {} change(s) to {} ({} was not changed)",
                o.applied, o.written.1, args.disk
            )?,
            _ => writeln!(
                out,
                "applied {} change(s); undo file {} (`rehost undo {}` restores the original)",
                o.applied, o.written.1, args.disk
            )?,
        }
        if verified {
            writeln!(
                out,
                "verified: inspecting the fixed disk again plans no further change"
            )?;
        } else {
            writeln!(out, "NOT verified: planning again still finds changes:")?;
            write!(out, "{}", o.again.plan.render_human())?;
        }
    }
    Ok(if verified {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `--output NEW.qcow2`: the source is only read; every change lands in a new overlay.
fn run_output(
    args: &FixupArgs,
    opened: &disk::open::Opened,
    format: &str,
    output: &Path,
) -> anyhow::Result<ExitCode> {
    if args.disk.contains("://") {
        return Err(crate::write_cmd::UsageError(format!(
            "--output needs an image file as the source, not {}",
            args.disk
        ))
        .into());
    }
    let progress = Progress::new(args.json);
    let planned = make_plan(args, opened.read(), format, &progress)?;
    if !args.json {
        progress.0.suspend(|| {
            let mut out = std::io::stdout().lock();
            write!(out, "{}", planned.plan.render_human())?;
            out.flush()
        })?;
    }
    let ov = disk::overlay::create_overlay(
        Path::new(&args.disk),
        output,
        &disk::overlay::OverlayOptions::new()
            .overwrite(args.overwrite)
            .source_format(opened.format()),
    )
    .with_context(|| format!("cannot create {}", output.display()))?;
    let ov: Arc<dyn BlockWrite> = Arc::new(ov);
    let applied = match apply_direct(ov.clone(), &planned.plan, args.force, &progress) {
        Ok(n) => n,
        Err(e) => {
            progress.done();
            drop(ov);
            let _ = std::fs::remove_file(output);
            return Err(e.context(format!(
                "fixup of {} failed; {} was removed and {} was not changed",
                args.disk,
                output.display(),
                args.disk
            )));
        }
    };
    let again = make_plan(args, ov.clone(), "qcow2", &progress)
        .context("the fixed overlay cannot be inspected again")?;
    progress.done();
    report_outcome(
        args,
        &Outcome {
            planned: &planned,
            applied,
            again: &again,
            written: ("output", output.display().to_string()),
            recovered: false,
        },
    )
}

pub(crate) fn run(args: &FixupArgs) -> anyhow::Result<ExitCode> {
    let access = if args.dry_run || args.output.is_some() {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let opened = open(&args.disk, &crate::open_options().access(access))
        .with_context(|| format!("cannot open {}", args.disk))?;
    let format = opened.format().name();
    if let Some(output) = &args.output {
        return run_output(args, &opened, format, output);
    }
    // An interrupted run must be rolled back before we believe what we read.
    let mut previous = Previous::Nothing;
    let undo = if args.dry_run {
        None
    } else {
        let undo = undo_file_for(args)?;
        let dev = opened
            .write()
            .context("the disk was opened without write access")?;
        previous = settle_previous(&*dev, &undo, &args.disk)?;
        Some((undo, dev))
    };
    let progress = Progress::new(args.json);
    let planned = make_plan(args, opened.read(), format, &progress);
    progress.done();
    let planned = planned?;
    if matches!(previous, Previous::Committed)
        && !planned.plan.is_empty()
        && let Some((undo, _)) = &undo
    {
        bail!(
            "{disk} was already changed by rehost and {} can still restore its original, so it \
             is not changed again; run `rehost undo {disk}` to go back, or `rehost undo {disk} \
             --discard` to keep the changes, then run fixup again (nothing was written)",
            undo.display(),
            disk = args.disk
        );
    }
    let recovered = matches!(previous, Previous::RolledBack);
    let mut out = std::io::stdout().lock();
    let Some((undo, dev)) = undo.filter(|_| !planned.plan.is_empty()) else {
        if args.json {
            let v = serde_json::json!({
                "disk": args.disk,
                "recipe": planned.recipe,
                "dry_run": args.dry_run,
                "plan": planned.plan,
                "applied": 0,
                "rolled_back_interrupted_run": recovered,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        } else {
            write!(out, "{}", planned.plan.render_human())?;
            if args.dry_run {
                writeln!(out, "(dry run: nothing was written)")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    if !args.json {
        write!(out, "{}", planned.plan.render_human())?;
        out.flush()?;
    }
    let progress = Progress::new(args.json);
    let applied = apply_in_transaction(dev, &undo, &planned.plan, args.force, &progress);
    let applied = match applied {
        Ok(n) => n,
        Err(e) => {
            progress.done();
            return Err(e.context(format!("fixup of {} failed", args.disk)));
        }
    };
    // Judge the result with fresh eyes: everything read again from the committed disk.
    let again = make_plan(args, opened.read(), format, &progress);
    progress.done();
    let again = again.context("the fixed disk cannot be inspected again")?;
    report_outcome(
        args,
        &Outcome {
            planned: &planned,
            applied,
            again: &again,
            written: ("undo_file", undo.display().to_string()),
            recovered,
        },
    )
}
