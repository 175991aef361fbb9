//! The plan: every change a recipe will make, as data.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use guestfs::FsRead;
use inspect::report::{OsReport, Report};
use serde::{Serialize, Serializer};

use crate::overlay::Overlay;
use crate::{Error, FixContext, Recipe, Result};

/// Largest diff rendered per file, in lines of output (longer diffs are cut with a note).
const MAX_DIFF_LINES: usize = 2000;

/// Serialises bytes as a JSON string when they are UTF-8, else as `{"hex": "..."}`.
fn ser_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match std::str::from_utf8(b) {
        Ok(t) => s.serialize_str(t),
        Err(_) => {
            let mut m = s.serialize_map(Some(1))?;
            let hex: String = b
                .iter()
                .fold(String::with_capacity(b.len() * 2), |mut acc, x| {
                    let _ = write!(acc, "{x:02x}");
                    acc
                });
            m.serialize_entry("hex", &hex)?;
            m.end()
        }
    }
}

/// One change to the guest's files. Paths are canonical guest paths (symlinks resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Change {
    /// Replace the whole content of an existing regular file (mode, owner and labels kept).
    ReplaceFile {
        /// Guest path.
        path: String,
        /// Content before.
        #[serde(serialize_with = "ser_bytes")]
        old: Vec<u8>,
        /// Content after.
        #[serde(serialize_with = "ser_bytes")]
        new: Vec<u8>,
    },
    /// Create a regular file that does not exist.
    CreateFile {
        /// Guest path.
        path: String,
        /// Content.
        #[serde(serialize_with = "ser_bytes")]
        content: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// Delete a regular file.
    DeleteFile {
        /// Guest path.
        path: String,
        /// Content before, for the report and for undo.
        #[serde(serialize_with = "ser_bytes")]
        old: Vec<u8>,
    },
    /// Rename a file within the guest (keeps inode, mode, owner and labels).
    Rename {
        /// Current path.
        from: String,
        /// New path (must not exist).
        to: String,
    },
    /// Create a symbolic link.
    Symlink {
        /// Guest path of the link.
        path: String,
        /// Link target, as stored.
        target: String,
    },
}

impl Change {
    /// The path this change writes (the new path for a rename).
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::ReplaceFile { path, .. }
            | Self::CreateFile { path, .. }
            | Self::DeleteFile { path, .. }
            | Self::Symlink { path, .. } => path,
            Self::Rename { to, .. } => to,
        }
    }

    /// One line for a person.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::ReplaceFile { path, old, new } => {
                format!("edit {path} ({} -> {} bytes)", old.len(), new.len())
            }
            Self::CreateFile {
                path,
                content,
                mode,
            } => {
                format!("create {path} ({} bytes, mode {mode:o})", content.len())
            }
            Self::DeleteFile { path, old } => format!("delete {path} ({} bytes)", old.len()),
            Self::Rename { from, to } => format!("rename {from} -> {to}"),
            Self::Symlink { path, target } => format!("symlink {path} -> {target}"),
        }
    }
}

/// One recipe step's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The fixer's name.
    pub fixer: String,
    /// What the step will do (or why it does nothing).
    pub summary: String,
    /// The changes, in the order they must be applied.
    pub changes: Vec<Change>,
}

/// Everything a recipe will change, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The recipe's name.
    pub recipe: String,
    /// The root device of the OS the plan is for.
    pub root: String,
    /// One entry per recipe step.
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// True when no step changes anything (a fixed guest).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.iter().all(|s| s.changes.is_empty())
    }

    /// All changes in order.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.steps.iter().flat_map(|s| s.changes.iter())
    }

    /// The stable JSON form.
    #[must_use]
    pub fn to_json(&self) -> String {
        // OK to expect: every field serialises (strings, numbers, and bytes via ser_bytes).
        serde_json::to_string_pretty(self).expect("plan serialises")
    }

    /// A human summary: each step, each change, unified diffs of text files and a list of binary
    /// files changed.
    #[must_use]
    pub fn render_human(&self) -> String {
        let mut out = format!("recipe {} for {}\n", self.recipe, self.root);
        let mut binary = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "step {}: {}: {}",
                i.saturating_add(1),
                s.fixer,
                s.summary
            );
            for c in &s.changes {
                let _ = writeln!(out, "  {}", c.describe());
                let (path, old, new): (&str, &[u8], &[u8]) = match c {
                    Change::ReplaceFile { path, old, new } => (path, old, new),
                    Change::CreateFile { path, content, .. } => (path, &[], content),
                    Change::DeleteFile { path, old } => (path, old, &[]),
                    _ => continue,
                };
                match (std::str::from_utf8(old), std::str::from_utf8(new)) {
                    (Ok(a), Ok(b)) => {
                        out.push_str(&crate::diff::unified(path, a, b, 3, MAX_DIFF_LINES));
                    }
                    _ => binary.push(path.to_owned()),
                }
            }
        }
        if !binary.is_empty() {
            out.push_str("binary files changed:\n");
            for b in binary {
                let _ = writeln!(out, "  {b}");
            }
        }
        if self.is_empty() {
            out.push_str("nothing to change\n");
        }
        out
    }
}

/// Per-run settings that override recipe parameters (`--net dhcp` sets `network.policy`).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Fixer name → parameters that replace the recipe's values for every step of that fixer.
    pub overrides: BTreeMap<String, toml::Table>,
}

/// Plans `recipe` for `os` (one of `report.operating_systems`) whose files `fs` holds (the
/// guest's mount tree, `/` being its root). Each step sees the changes of the earlier ones.
///
/// # Errors
/// [`Error::InvalidStep`] if a step fails [`crate::lint`] (after overrides); whatever a fixer
/// returns (guest read errors, unsupported files).
pub fn plan(
    recipe: &Recipe,
    report: &Report,
    os: &OsReport,
    fs: &dyn FsRead,
    opts: &PlanOptions,
) -> Result<Plan> {
    let mut overlay = Overlay::new(fs);
    let mut steps = Vec::with_capacity(recipe.steps.len());
    for (i, step) in recipe.steps.iter().enumerate() {
        let n = i.saturating_add(1);
        let bad = |detail: String| Error::InvalidStep {
            recipe: recipe.name.clone(),
            step: n,
            detail,
        };
        let fixer = crate::find_fixer(&step.fixer)
            .ok_or_else(|| bad(format!("no fixer named {:?}", step.fixer)))?;
        let mut table = step.params.clone();
        if let Some(o) = opts.overrides.get(&step.fixer) {
            table.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some((_, msg)) = crate::fixers::validate_params(fixer, &table)
            .into_iter()
            .next()
        {
            return Err(bad(msg));
        }
        let params = crate::Params::new(fixer, table);
        let ctx = FixContext {
            fs: &overlay,
            report,
            os,
        };
        let outcome = fixer.plan(&ctx, &params)?;
        for c in &outcome.changes {
            overlay.record(c)?;
        }
        let summary = if outcome.notes.is_empty() {
            if outcome.changes.is_empty() {
                "nothing to do".to_owned()
            } else {
                format!("{} change(s)", outcome.changes.len())
            }
        } else {
            outcome.notes.join("; ")
        };
        tracing::debug!(
            fixer = fixer.name(),
            changes = outcome.changes.len(),
            "planned step"
        );
        steps.push(PlannedStep {
            fixer: fixer.name().to_owned(),
            summary,
            changes: outcome.changes,
        });
    }
    Ok(Plan {
        recipe: recipe.name.clone(),
        root: os.root.clone(),
        steps,
    })
}
