//! Errors of the initramfs, module and index parsers. They reach callers as
//! [`crate::Error::Unsupported`] (`what` = "initramfs"), since the fixer then leaves that image
//! alone; tests match on this type exactly.

/// What went wrong reading an initramfs, a module or an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Error {
    /// Damaged data: the structure, its byte offset, and what is wrong.
    Corrupt {
        structure: &'static str,
        offset: u64,
        detail: String,
    },
    /// Valid data this code does not handle (a codec, a format variant).
    Unsupported { what: &'static str, detail: String },
    /// A hard cap (house style S12) was reached.
    Limit { what: &'static str, limit: u64 },
}

impl Error {
    pub(crate) fn corrupt(structure: &'static str, offset: u64, detail: String) -> Self {
        Self::Corrupt {
            structure,
            offset,
            detail,
        }
    }

    pub(crate) fn unsupported(what: &'static str, detail: String) -> Self {
        Self::Unsupported { what, detail }
    }

    pub(crate) fn limit(what: &'static str, limit: u64) -> Self {
        Self::Limit { what, limit }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Corrupt {
                structure,
                offset,
                detail,
            } => write!(f, "corrupt {structure} at offset {offset:#x}: {detail}"),
            Self::Unsupported { what, detail } => write!(f, "unsupported {what}: {detail}"),
            Self::Limit { what, limit } => write!(f, "{what} over the limit of {limit}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for crate::Error {
    fn from(e: Error) -> Self {
        crate::Error::Unsupported {
            what: "initramfs",
            detail: e.to_string(),
        }
    }
}

/// Result alias for the initramfs parsers.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
