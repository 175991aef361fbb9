//! `rehost fixup DISK --dry-run`: inspect, choose a recipe, and print the plan — every file the
//! fix would change, with unified diffs. Applying the plan is not implemented yet: without
//! `--dry-run` the command refuses, and nothing is written either way.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use disk::open::{OpenOptions, open};
use fixers::{PlanOptions, RecipeSet};

const LONG_ABOUT: &str = "\
Make a migrated disk boot on KVM: inspect it, choose the recipe for its operating system, and \
plan every change (block device names to UUID=, network configuration moved off the old NIC's \
name and MAC, serial console, stale caches).

Today only --dry-run is supported: it prints the plan (human text with unified diffs, or --json) \
and writes nothing. Applying the plan through the transaction layer is being built; without \
--dry-run the command exits 2 without touching the disk.";

/// Arguments of `rehost fixup`.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub(crate) struct FixupArgs {
    /// The disk: an image file or an NBD URI.
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
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &FixupArgs) -> anyhow::Result<ExitCode> {
    if !args.dry_run {
        bail!(
            "applying fixes is not supported yet; run `rehost fixup --dry-run {}` to see the plan \
             (nothing was written)",
            args.disk
        );
    }
    let opened = open(&args.disk, &OpenOptions::new())
        .with_context(|| format!("cannot open {}", args.disk))?;
    let report = inspect::inspect(opened.read(), &args.disk, opened.format().name())?;
    let Some(os) = report.operating_systems.first() else {
        bail!("no operating system found on {}", args.disk);
    };
    let mut set = RecipeSet::shipped().context("the shipped recipes do not load")?;
    if let Some(dir) = &args.recipe_dir {
        set.load_dir(dir)
            .with_context(|| format!("cannot load recipes from {}", dir.display()))?;
    }
    let recipe = match &args.recipe {
        Some(name) => set
            .get(name)
            .with_context(|| format!("no recipe named {name:?}"))?,
        None => *set.matching(&report, os).first().with_context(|| {
            format!(
                "no recipe matches {} {}.{} ({}); name one with --recipe",
                os.distro, os.major_version, os.minor_version, os.os_type
            )
        })?,
    };
    let view = inspect::guest_view(opened.read(), None)
        .with_context(|| format!("cannot read the files of {}", args.disk))?;
    let mut opts = PlanOptions::default();
    if let Some(policy) = &args.net {
        let mut t = toml::Table::new();
        t.insert("policy".into(), toml::Value::String(policy.clone()));
        opts.overrides = BTreeMap::from([("network".to_owned(), t)]);
    }
    let plan = fixers::plan(recipe, &report, os, &view.fs, &opts)
        .with_context(|| format!("cannot plan recipe {}", recipe.name))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", plan.to_json())?;
    } else {
        write!(out, "{}", plan.render_human())?;
        writeln!(out, "(dry run: nothing was written)")?;
    }
    Ok(ExitCode::SUCCESS)
}
