//! `rehost recipe list|show|lint`: the recipes `fixup` chooses from, for support staff who write
//! them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use fixers::RecipeSet;

/// Recipes: list, show and check them.
#[derive(Debug, clap::Args)]
pub(crate) struct RecipeArgs {
    /// Also load user recipes from this directory (they override shipped ones by name).
    #[arg(long, value_name = "DIR", global = true)]
    recipe_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: RecipeCommand,
}

#[derive(Debug, clap::Subcommand)]
enum RecipeCommand {
    /// List the recipes with where they come from and what they are for.
    List,
    /// Print a recipe's steps and match.
    Show {
        /// Recipe name.
        name: String,
    },
    /// Check recipe files (or, with no FILE, every loaded recipe): every step must name a real
    /// fixer with valid parameters. Exit 1 if any issue is found.
    Lint {
        /// Recipe files to check.
        files: Vec<PathBuf>,
    },
}

fn load(args: &RecipeArgs) -> anyhow::Result<RecipeSet> {
    let mut set = RecipeSet::shipped().context("the shipped recipes do not load")?;
    if let Some(dir) = &args.recipe_dir {
        set.load_dir(dir)
            .with_context(|| format!("cannot load recipes from {}", dir.display()))?;
    }
    Ok(set)
}

pub(crate) fn run(args: &RecipeArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match &args.command {
        RecipeCommand::List => {
            for r in load(args)?.iter() {
                writeln!(
                    out,
                    "{:<12} {:<24} {}",
                    r.name,
                    r.origin.to_string(),
                    r.description
                )?;
            }
        }
        RecipeCommand::Show { name } => {
            let set = load(args)?;
            let Some(r) = set.get(name) else {
                let known: Vec<&str> = set.iter().map(|r| r.name.as_str()).collect();
                bail!("no recipe named {name:?} (known: {})", known.join(", "));
            };
            writeln!(out, "{} ({})", r.name, r.origin)?;
            writeln!(out, "  {}", r.description)?;
            writeln!(out, "  match: {}", serde_json::to_string(&r.matcher)?)?;
            for (i, s) in r.steps.iter().enumerate() {
                writeln!(
                    out,
                    "  step {}: {} {}",
                    i + 1,
                    s.fixer,
                    serde_json::to_string(&s.params)?
                )?;
            }
        }
        RecipeCommand::Lint { files } => {
            let mut issues = 0usize;
            if files.is_empty() {
                for r in load(args)?.iter() {
                    for i in fixers::lint(r) {
                        writeln!(out, "{}: {i}", r.origin)?;
                        issues += 1;
                    }
                }
            } else {
                for f in files {
                    let text = std::fs::read_to_string(f)
                        .with_context(|| format!("cannot read {}", f.display()))?;
                    for i in fixers::lint_text(&text) {
                        writeln!(out, "{}: {i}", f.display())?;
                        issues += 1;
                    }
                }
            }
            if issues > 0 {
                return Ok(ExitCode::from(1));
            }
            writeln!(out, "no issues")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
