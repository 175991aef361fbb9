//! The one public error type of the block layer (house style S7).

use std::fmt;

/// What went wrong in the block layer.
///
/// The four broad classes are I/O (the device failed), corrupt (bytes in the image break a rule of
/// their format; the error says which structure and where), unsupported (a valid image uses something
/// this library does not implement) and usage (the caller asked for something impossible).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The underlying device or transport failed.
    #[error("i/o error at offset {offset:#x}")]
    Io {
        /// Byte offset in the device where the failing request started.
        offset: u64,
        /// The operating system's (or transport's) error.
        #[source]
        source: std::io::Error,
    },
    /// The image breaks a rule of its format.
    #[error("corrupt {0}")]
    Corrupt(Corrupt),
    /// The image is valid but uses a feature this library does not implement.
    #[error("unsupported {0}")]
    Unsupported(Unsupported),
    /// A request reaches past the end of the device.
    #[error("range {offset:#x}+{len} is past the end of a {size}-byte device")]
    OutOfBounds {
        /// Start of the request.
        offset: u64,
        /// Length of the request in bytes.
        len: u64,
        /// Size of the device.
        size: u64,
    },
    /// A write, discard or flush was sent to a device opened read-only.
    #[error("device is read-only")]
    ReadOnly,
    /// The caller's request is invalid (bad URI, conflicting options, ambiguous format, ...).
    #[error("{0}")]
    Usage(String),
}

/// Where and how an image breaks its format's rules.
///
/// Opaque so that detail can grow without breaking callers; tests compare [`Corrupt::structure`]
/// and [`Corrupt::offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    structure: &'static str,
    offset: u64,
    detail: String,
}

impl Corrupt {
    /// The on-disk structure that is damaged, such as `"gpt header"`.
    #[must_use]
    pub fn structure(&self) -> &'static str {
        self.structure
    }
    /// Byte offset of the structure (or the damaged field) in its layer.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// What exactly is wrong, with the offending value and the allowed range.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {:#x}: {}",
            self.structure, self.offset, self.detail
        )
    }
}

/// A feature of a valid image that this library does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    what: &'static str,
    detail: String,
}

impl Unsupported {
    /// The area of the limitation, such as `"qcow2 feature"` or `"lvm segment type"`.
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }
    /// The specific value that is not supported.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.detail)
    }
}

impl Error {
    /// Builds a [`Error::Corrupt`] naming the structure, its offset and what is wrong.
    pub fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        Self::Corrupt(Corrupt {
            structure,
            offset,
            detail: detail.into(),
        })
    }
    /// Builds a [`Error::Unsupported`].
    pub fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Unsupported(Unsupported {
            what,
            detail: detail.into(),
        })
    }
    /// Builds an [`Error::Io`].
    #[must_use]
    pub fn io(offset: u64, source: std::io::Error) -> Self {
        Self::Io { offset, source }
    }
    /// The corruption detail, if this is a corrupt error.
    #[must_use]
    pub fn as_corrupt(&self) -> Option<&Corrupt> {
        match self {
            Self::Corrupt(c) => Some(c),
            _ => None,
        }
    }
}

/// Result alias for the block layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_lowercase_and_names_place() {
        let e = Error::corrupt("gpt header", 0x200, "header_size 12 out of range 92..=512");
        assert_eq!(
            e.to_string(),
            "corrupt gpt header at 0x200: header_size 12 out of range 92..=512"
        );
        let e = Error::OutOfBounds {
            offset: 0x1000,
            len: 512,
            size: 4096,
        };
        assert_eq!(
            e.to_string(),
            "range 0x1000+512 is past the end of a 4096-byte device"
        );
        let e = Error::unsupported("lvm segment type", "thin-pool");
        assert_eq!(e.to_string(), "unsupported lvm segment type: thin-pool");
    }
}
