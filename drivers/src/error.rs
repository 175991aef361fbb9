//! The one public error type of the drivers layer (house style S7).

use std::fmt;

/// What went wrong reading a driver catalog.
///
/// The classes are: i/o (the host could not read the source), corrupt (an INF, a PE file or the
/// ISO breaks a rule of its format; the error names the structure, the file and the line or byte
/// offset), unsupported (valid input this library does not handle, or a limit it enforces),
/// unsuitable (a well-formed driver that must not be installed on the target, such as a PE
/// machine mismatch), missing (the catalog has no driver folder for the target) and usage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The host could not read a file or directory of the source.
    #[error("i/o error on {path}")]
    Io {
        /// The host path (or the ISO path) that failed.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the catalog breaks a rule of its format.
    #[error("corrupt {0}")]
    Corrupt(Corrupt),
    /// Valid input this library does not handle, or one of its limits.
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// What is unsupported, such as `"windows version"` or `"iso"`.
        what: &'static str,
        /// The offending value and what is allowed.
        detail: String,
    },
    /// A well-formed driver file that must not be installed on the target.
    #[error("unsuitable driver file {path}: {detail}")]
    Unsuitable {
        /// The file inside the source.
        path: String,
        /// Why, with the bad value and the expected one.
        detail: String,
    },
    /// The catalog has no folder (or no driver) for the target.
    #[error("{0}")]
    Missing(String),
    /// The caller's request is invalid.
    #[error("{0}")]
    Usage(String),
}

/// Where a problem is inside a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A 1-based line of a text file (INF).
    Line(usize),
    /// A byte offset in a binary file (PE, ISO).
    Offset(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(n) => write!(f, "line {n}"),
            Self::Offset(o) => write!(f, "offset {o:#x}"),
        }
    }
}

/// Where and how a file breaks its format.
///
/// Opaque so the detail can grow; tests compare [`Corrupt::structure`], [`Corrupt::position`] and
/// [`Corrupt::detail`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    structure: &'static str,
    file: Option<String>,
    position: Position,
    detail: String,
}

impl Corrupt {
    /// The damaged structure, such as `"inf section header"` or `"iso directory record"`.
    #[must_use]
    pub fn structure(&self) -> &'static str {
        self.structure
    }

    /// The file inside the source, when known.
    #[must_use]
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }

    /// The line or byte offset of the damage.
    #[must_use]
    pub fn position(&self) -> Position {
        self.position
    }

    /// What is wrong, with the bad value.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.structure)?;
        if let Some(file) = &self.file {
            write!(f, " in {file}")?;
        }
        write!(f, " at {}: {}", self.position, self.detail)
    }
}

impl Error {
    /// Builds [`Error::Corrupt`] at a line of a text file.
    pub(crate) fn corrupt_line(
        structure: &'static str,
        line: usize,
        detail: impl Into<String>,
    ) -> Self {
        Self::Corrupt(Corrupt {
            structure,
            file: None,
            position: Position::Line(line),
            detail: detail.into(),
        })
    }

    /// Builds [`Error::Corrupt`] at a byte offset of a binary file.
    pub(crate) fn corrupt_at(
        structure: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> Self {
        Self::Corrupt(Corrupt {
            structure,
            file: None,
            position: Position::Offset(offset),
            detail: detail.into(),
        })
    }

    /// Builds [`Error::Unsupported`].
    pub(crate) fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Unsupported {
            what,
            detail: detail.into(),
        }
    }

    /// Builds [`Error::Io`].
    pub(crate) fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// Records the file a corrupt error belongs to (parsers do not know their file name).
    #[must_use]
    pub fn in_file(self, file: &str) -> Self {
        match self {
            Self::Corrupt(mut c) => {
                c.file = Some(file.to_owned());
                Self::Corrupt(c)
            }
            Self::Unsuitable { detail, .. } => Self::Unsuitable {
                path: file.to_owned(),
                detail,
            },
            other => other,
        }
    }

    /// The corruption detail, if this is [`Error::Corrupt`].
    #[must_use]
    pub fn as_corrupt(&self) -> Option<&Corrupt> {
        match self {
            Self::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
