//! The one public error type of the fixers crate (house style S7).

/// What went wrong loading recipes, planning or applying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the guest's files failed.
    #[error(transparent)]
    Fs(#[from] guestfs::Error),
    /// A recipe file cannot be read from the host.
    #[error("cannot read recipe {path}")]
    RecipeIo {
        /// Host path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A recipe does not parse or breaks the format's rules.
    #[error("invalid recipe {origin}: {detail}")]
    InvalidRecipe {
        /// Where the recipe comes from (file name or path).
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// A recipe step fails lint (unknown fixer, bad parameter); planning refuses it.
    #[error("recipe {recipe} step {step}: {detail}")]
    InvalidStep {
        /// Recipe name.
        recipe: String,
        /// 1-based step number.
        step: usize,
        /// What is wrong.
        detail: String,
    },
    /// The caller asked for something that cannot be done (no matching OS, unknown recipe).
    #[error("{0}")]
    Usage(String),
    /// A guest file is too odd to edit safely (not UTF-8 where text is required, too large).
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// The area of the limitation.
        what: &'static str,
        /// The specific file or value.
        detail: String,
    },
    /// The guest no longer matches the plan (planned from an older state); nothing of this
    /// change was written.
    #[error("stale plan at {change}: {detail}")]
    Stale {
        /// A one-line description of the change.
        change: String,
        /// What differs.
        detail: String,
    },
    /// Applying a change failed in the applier.
    #[error("applying {change} failed: {detail}")]
    Apply {
        /// A one-line description of the change.
        change: String,
        /// What the applier reported.
        detail: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
