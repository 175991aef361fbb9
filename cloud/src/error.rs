//! The crate's one error type (house style S7). A guest that does not boot is not an error: it is
//! a [`crate::BootReport`] with `booted == false`. Errors are reserved for "could not even try".

use std::path::PathBuf;

/// Why a boot could not be attempted or watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or socket operation failed.
    #[error("i/o error on {what}")]
    Io {
        /// The file, socket or program involved.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A program or firmware file the adapter needs is not installed.
    #[error("{what} not found at {path} (debian package {package})")]
    Missing {
        /// What is missing (`qemu-system-x86_64`, `OVMF code`).
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// The caller asked for something impossible (a bad option value).
    #[error("usage: {0}")]
    Usage(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an `io::Error` on `what` into [`Error::Io`].
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}
