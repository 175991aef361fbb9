//! The crate's error type (house style S7).

/// Why a filesystem was refused for writing (each can be overridden with `force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The ext3/4 journal holds transactions not yet replayed (`needs_recovery`).
    JournalNeedsRecovery,
    /// The superblock says the filesystem was not cleanly unmounted (`s_state` lacks `VALID_FS`).
    NotCleanlyUnmounted,
    /// The kernel recorded errors on this filesystem (`s_state` has `ERROR_FS`).
    ErrorsRecorded,
    /// Inodes deleted while open still wait on the orphan list or in the orphan file.
    OrphansPending,
    /// Windows is hibernated or was shut down with Fast Startup: its memory image still holds
    /// this NTFS volume's metadata (never overridden: writing would lose data either way).
    NtfsHibernated,
    /// The NTFS `$LogFile` holds changes not yet applied (Windows crashed or lost power; never
    /// overridden: resetting the log would drop them).
    NtfsLogFileUnclean,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::JournalNeedsRecovery => {
                "the ext4 journal needs recovery (replay it with e2fsck or by mounting the filesystem once)"
            }
            Self::NotCleanlyUnmounted => {
                "the filesystem was not cleanly unmounted (run e2fsck first)"
            }
            Self::ErrorsRecorded => "the filesystem has recorded errors (run e2fsck first)",
            Self::OrphansPending => {
                "the filesystem has pending orphan inodes (run e2fsck or mount it once)"
            }
            Self::NtfsHibernated => {
                "windows is hibernated or was shut down with fast startup (boot it and shut it down fully: shutdown /s /t 0, or disable fast startup with powercfg /h off)"
            }
            Self::NtfsLogFileUnclean => {
                "the ntfs $LogFile is not clean (boot windows and shut it down cleanly, or run chkdsk /f)"
            }
        })
    }
}

/// `strerror` text of `errno`, lowercase and without the "(os error N)" suffix.
fn errno_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The block device failed while the named operation ran.
    #[error("device error during {op}")]
    Device {
        /// The operation (`"open"`, `"write_file /etc/fstab"`, …).
        op: String,
        /// The device's error.
        #[source]
        source: disk::Error,
    },
    /// The filesystem is in a state we refuse to modify without `force`.
    #[error("refusing to modify the filesystem: {0}")]
    Refused(Refusal),
    /// Not an ext2/3/4 filesystem (bad superblock magic).
    #[error(
        "not an ext2/3/4 filesystem: superblock magic {found:#06x} at byte 0x438, expected 0xef53"
    )]
    NotExt {
        /// The magic found.
        found: u16,
    },
    /// On-disk metadata is inconsistent in a way the C library would trust (and could crash on).
    #[error("corrupt {structure} at byte {offset:#x}: {detail}")]
    Corrupt {
        /// The structure (`"ext2/3/4 superblock"`, ...).
        structure: &'static str,
        /// Byte offset of the bad field or structure on the device.
        offset: u64,
        /// What is wrong, with the value and the allowed range.
        detail: String,
    },
    /// A feature or request this library cannot handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A path component does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The guest path.
        path: String,
    },
    /// The target already exists.
    #[error("{path}: already exists")]
    Exists {
        /// The guest path.
        path: String,
    },
    /// A directory was expected.
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The guest path.
        path: String,
    },
    /// A non-directory was expected.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The guest path.
        path: String,
    },
    /// A regular file was expected.
    #[error("{path}: not a regular file")]
    NotARegularFile {
        /// The guest path.
        path: String,
    },
    /// `rmdir` or a replacing `rename` met a non-empty directory.
    #[error("{path}: directory not empty")]
    NotEmpty {
        /// The guest path.
        path: String,
    },
    /// A result would exceed a limit (file size cap, xattr size).
    #[error("{what} of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A bad argument (path syntax, names).
    #[error("{0}")]
    Usage(String),
    /// libntfs-3g reported an error.
    #[error("{op}: {} (libntfs-3g errno {errno})", errno_text(*errno))]
    Ntfs3g {
        /// The operation and its path.
        op: String,
        /// The `errno` libntfs-3g set.
        errno: i32,
    },
    /// libext2fs reported an error.
    #[error("{op}: {message} (libext2fs error {code})")]
    Ext2 {
        /// The operation and its path.
        op: String,
        /// The `errcode_t`.
        code: i64,
        /// libext2fs's description of `code`.
        message: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
