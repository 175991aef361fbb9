//! The crate's one error type (house style S7).

use std::path::PathBuf;

/// Errors of the volume store and the server's setup. Protocol errors never surface here: they
/// become NBD error replies or disconnects, as the spec says.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on the store failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A metadata file of the store is unreadable or inconsistent.
    #[error("corrupt {path}: {detail}")]
    Corrupt {
        /// The metadata file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The named volume or snapshot does not exist.
    #[error("no {what} named {name:?}")]
    NotFound {
        /// "volume" or "snapshot".
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The named volume or snapshot exists already.
    #[error("{what} {name:?} already exists")]
    Exists {
        /// "volume" or "snapshot".
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The caller passed a bad argument (name, size, option).
    #[error("{0}")]
    Usage(String),
    /// TLS credentials could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
