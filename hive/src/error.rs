//! The one public error type of the hive layer (house style S7).

use std::fmt;

/// What went wrong reading a registry hive.
///
/// The classes are: corrupt (the hive's bytes break a rule of the regf format; the error names the
/// structure and its file offset), unsupported (a valid hive uses something this library does not
/// implement, or exceeds one of its limits), dirty (the hive has pending transaction-log data that
/// was never written back) and usage (the caller asked for something impossible).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hive breaks a rule of the regf format.
    #[error("corrupt {0}")]
    Corrupt(Corrupt),
    /// The hive is valid but uses a feature (or a size) this library does not handle.
    #[error("unsupported {0}")]
    Unsupported(Unsupported),
    /// The hive has pending transaction-log data: its content on disk is not what Windows sees.
    #[error("{0}")]
    Dirty(Dirty),
    /// The caller's request is invalid (an empty path component, a bad option combination, ...).
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// Builds [`Error::Corrupt`]; `offset` is a byte offset in the hive file.
    pub(crate) fn corrupt(structure: &'static str, offset: u64, detail: impl Into<String>) -> Self {
        Self::Corrupt(Corrupt {
            structure,
            offset,
            detail: detail.into(),
        })
    }

    /// Builds [`Error::Unsupported`].
    pub(crate) fn unsupported(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Unsupported(Unsupported {
            what,
            detail: detail.into(),
        })
    }

    /// The corruption detail, if this is [`Error::Corrupt`].
    #[must_use]
    pub fn as_corrupt(&self) -> Option<&Corrupt> {
        match self {
            Self::Corrupt(c) => Some(c),
            _ => None,
        }
    }

    /// The dirty-state detail, if this is [`Error::Dirty`].
    #[must_use]
    pub fn as_dirty(&self) -> Option<&Dirty> {
        match self {
            Self::Dirty(d) => Some(d),
            _ => None,
        }
    }
}

/// Where and how a hive breaks the regf format.
///
/// Opaque so that detail can grow without breaking callers; tests compare
/// [`Corrupt::structure`] and [`Corrupt::offset`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt {
    structure: &'static str,
    offset: u64,
    detail: String,
}

impl Corrupt {
    /// The damaged structure, such as `"base block"`, `"hbin"` or `"nk cell"`.
    #[must_use]
    pub fn structure(&self) -> &'static str {
        self.structure
    }
    /// Byte offset of the structure in the hive file. Cell offsets as stored in the hive are
    /// relative to the hive bins data, which starts at file offset 0x1000.
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
            "{} at file offset {:#x}: {}",
            self.structure, self.offset, self.detail
        )
    }
}

/// A limit of this library, not damage in the hive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    what: &'static str,
    detail: String,
}

impl Unsupported {
    /// The area of the limitation, such as `"hive version"`.
    #[must_use]
    pub fn what(&self) -> &'static str {
        self.what
    }
    /// The specific feature or value.
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

/// Why a hive counts as dirty (spec "Dirty state of a hive").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirtyReason {
    /// The primary and secondary sequence numbers differ: a write was interrupted.
    SequenceMismatch,
    /// The base block checksum is wrong: the base block itself was being written.
    BadChecksum,
}

/// A hive with pending transaction-log data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirty {
    pub(crate) hive_name: String,
    pub(crate) primary_sequence: u32,
    pub(crate) secondary_sequence: u32,
    pub(crate) reason: DirtyReason,
    pub(crate) logs_tried: bool,
}

impl Dirty {
    /// The hive's name from its base block (such as `"SYSTEM"`), or `"(unnamed)"`.
    #[must_use]
    pub fn hive_name(&self) -> &str {
        &self.hive_name
    }
    /// The base block's primary sequence number.
    #[must_use]
    pub fn primary_sequence(&self) -> u32 {
        self.primary_sequence
    }
    /// The base block's secondary sequence number.
    #[must_use]
    pub fn secondary_sequence(&self) -> u32 {
        self.secondary_sequence
    }
    /// Why the hive counts as dirty.
    #[must_use]
    pub fn reason(&self) -> DirtyReason {
        self.reason
    }
}

impl fmt::Display for Dirty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            DirtyReason::SequenceMismatch => format!(
                "sequence {} != {}",
                self.primary_sequence, self.secondary_sequence
            ),
            DirtyReason::BadChecksum => "base block checksum is wrong".to_owned(),
        };
        if self.logs_tried {
            write!(
                f,
                "hive {} has pending log data ({what}) and the supplied .LOG1/.LOG2 files hold no \
                 verified entries that continue it; replay it by booting Windows once",
                self.hive_name
            )
        } else {
            write!(
                f,
                "hive {} has pending log data ({what}); replay it by booting Windows once or \
                 supply the .LOG1/.LOG2 files",
                self.hive_name
            )
        }
    }
}

/// Result alias for the hive layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let e = Error::corrupt("nk cell", 0x1020, "signature \"xx\" is not \"nk\"");
        assert_eq!(
            e.to_string(),
            "corrupt nk cell at file offset 0x1020: signature \"xx\" is not \"nk\""
        );
        let e = Error::unsupported("hive version", "1.9 not in 1.2..=1.6");
        assert_eq!(
            e.to_string(),
            "unsupported hive version: 1.9 not in 1.2..=1.6"
        );
        let d = Dirty {
            hive_name: "SYSTEM".into(),
            primary_sequence: 1234,
            secondary_sequence: 1233,
            reason: DirtyReason::SequenceMismatch,
            logs_tried: false,
        };
        assert_eq!(
            Error::Dirty(d).to_string(),
            "hive SYSTEM has pending log data (sequence 1234 != 1233); replay it by booting \
             Windows once or supply the .LOG1/.LOG2 files"
        );
    }
}
