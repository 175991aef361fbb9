//! Linux guest fixers and the recipe engine.
//!
//! A *recipe* (TOML, shipped in `recipes/` or supplied by the user) matches inspection facts and
//! lists ordered steps, each naming a *fixer* with parameters. Planning runs every step's fixer
//! against the guest's files (read-only, through [`guestfs::FsRead`]) and the inspection
//! [`inspect::report::Report`], and returns a [`Plan`]: plain data listing every file change.
//! Later steps see the changes of earlier ones. Applying is a separate step through the small
//! [`Applier`] trait, so `--dry-run` and the real run share one code path (house style S19), and
//! planning again on a fixed guest yields an empty plan.
//!
//! # Example
//! ```
//! use fixers::{RecipeSet, lint};
//! let set = RecipeSet::shipped()?;
//! let debian = set.get("debian").expect("shipped");
//! assert!(lint(debian).is_empty());
//! # Ok::<(), fixers::Error>(())
//! ```

#![forbid(unsafe_code)]

mod apply;
pub mod diff;
mod error;
pub mod fixers;
#[doc(hidden)]
pub mod fuzzing;
mod overlay;
mod plan;
mod recipe;
pub mod testkit;
pub mod text;

pub use apply::{Applier, FsApplier, apply, apply_with_progress};
pub use error::{Error, Result};
pub use fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params, find_fixer, registry};
pub use plan::{Change, Plan, PlanOptions, PlannedStep, plan};
pub use recipe::{
    LintIssue, MAX_RECIPE_BYTES, Match, Origin, RECIPE_SCHEMA, Recipe, RecipeSet, Step, VersionReq,
    lint, lint_text,
};
