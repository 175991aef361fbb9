//! The crate's one error type.

use std::path::PathBuf;

/// What can go wrong while building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No builder has this name.
    #[error("unknown image {name:?} (known: {known})")]
    UnknownImage {
        /// The name asked for.
        name: String,
        /// The known names, comma separated.
        known: String,
    },
    /// A file operation failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external tool is not installed.
    #[error("{tool} not found (debian package {package})")]
    ToolMissing {
        /// The program name.
        tool: String,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// An external tool ran and failed.
    #[error("{command} exited with {status}: {stderr}")]
    ToolFailed {
        /// The command line, for the log.
        command: String,
        /// The exit status.
        status: String,
        /// The last part of its standard error.
        stderr: String,
    },
    /// The builder needs root (it mounts with ntfs-3g) and we are not root.
    #[error("image {image} needs root: {why}")]
    NeedsRoot {
        /// The image name.
        image: String,
        /// Why it needs root.
        why: &'static str,
    },
    /// A builder asked for something impossible (a bug in a builder, not in the environment).
    #[error("invalid builder input: {0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an `io::Error` on `path` into [`Error::Io`].
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
