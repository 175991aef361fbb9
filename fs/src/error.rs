//! The one public error type of the filesystem layer (house style S7).

/// What went wrong reading or writing a guest filesystem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The block layer below failed.
    #[error(transparent)]
    Disk(#[from] disk::Error),
    /// The filesystem's bytes break its format's rules.
    #[error("corrupt {structure} at {offset:#x}: {detail}")]
    Corrupt {
        /// The damaged structure, such as `"xfs superblock"` or `"ext4 inode 12"`.
        structure: String,
        /// Byte offset in the filesystem's device, when known (0 otherwise).
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A valid filesystem uses something this library does not implement.
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// The area of the limitation.
        what: &'static str,
        /// The specific feature or value.
        detail: String,
    },
    /// No such file or directory.
    #[error("{path}: not found")]
    NotFound {
        /// The guest path, as far as it was resolved.
        path: String,
    },
    /// A path component that must be a directory is not one.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The guest path.
        path: String,
    },
    /// A file operation named a directory.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The guest path.
        path: String,
    },
    /// `read_link` on something that is not a symlink.
    #[error("{path}: not a symlink")]
    NotASymlink {
        /// The guest path.
        path: String,
    },
    /// Resolution followed more than [`crate::MAX_SYMLINK_HOPS`] symlinks.
    #[error("{path}: too many levels of symbolic links")]
    TooManySymlinks {
        /// The path being resolved.
        path: String,
    },
    /// A path given by the caller is malformed (empty component with NUL, not absolute, ...).
    #[error("invalid guest path {path:?}: {why}")]
    InvalidPath {
        /// The path as given (lossy UTF-8).
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Creating something whose name is taken.
    #[error("{path}: already exists")]
    AlreadyExists {
        /// The guest path.
        path: String,
    },
    /// Removing a directory that still has entries.
    #[error("{path}: directory not empty")]
    NotEmpty {
        /// The guest path.
        path: String,
    },
    /// The filesystem is in a state that makes writing unsafe (dirty, needs journal recovery,
    /// hibernated); the caller may force it where the backend allows.
    #[error("refusing to write {what}: {detail}")]
    Unclean {
        /// The filesystem or structure, such as `"fat volume"`.
        what: &'static str,
        /// What is wrong and what to do about it.
        detail: String,
    },
    /// A size or count limit was hit (a file too big to read whole, a huge directory).
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: String,
        /// The limit.
        limit: u64,
    },
}

impl Error {
    /// Builds [`Error::Corrupt`].
    pub fn corrupt(structure: impl Into<String>, offset: u64, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            structure: structure.into(),
            offset,
            detail: detail.into(),
        }
    }
    /// Builds [`Error::Unsupported`].
    pub fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Unsupported {
            what,
            detail: detail.into(),
        }
    }
    /// True for [`Error::NotFound`].
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Result alias for the filesystem layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
