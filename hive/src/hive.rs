//! The [`Hive`]: a validated primary hive file in memory.

use crate::base_block::{BASE_BLOCK_SIZE, BaseBlock, FILE_TYPE_PRIMARY};
use crate::error::{Dirty, DirtyReason, Error, Result};
use crate::hbin::{CellMap, file_offset};
use crate::key_node::Key;
use crate::log;

/// Largest hive (or transaction log) file accepted (a limit of this library; the largest real hives, SOFTWARE and
/// COMPONENTS on busy servers, are a few hundred MiB).
pub const MAX_HIVE_SIZE: usize = 512 << 20;
/// Deepest key path accepted (Windows' documented registry tree depth limit is 512 levels).
pub const MAX_KEY_DEPTH: usize = 512;

/// How to open a hive; see [`Hive::options`].
#[derive(Default, Clone)]
pub struct HiveOptions {
    allow_dirty: bool,
    log1: Option<Vec<u8>>,
    log2: Option<Vec<u8>>,
}

impl std::fmt::Debug for HiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Lengths only: the logs can be many MiB.
        f.debug_struct("HiveOptions")
            .field("allow_dirty", &self.allow_dirty)
            .field("log1_len", &self.log1.as_ref().map(Vec::len))
            .field("log2_len", &self.log2.as_ref().map(Vec::len))
            .finish()
    }
}

impl HiveOptions {
    /// Default options: refuse dirty hives, no logs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Read a dirty hive as it is on disk, ignoring its pending log data. What Windows would see
    /// may differ; [`Hive::is_dirty`] stays true.
    #[must_use]
    pub fn allow_dirty(mut self, allow: bool) -> Self {
        self.allow_dirty = allow;
        self
    }

    /// The hive's transaction logs (`.LOG1`, `.LOG2`; new format, or old format from Windows
    /// XP to 7), replayed if the hive is dirty.
    #[must_use]
    pub fn logs(mut self, log1: Option<Vec<u8>>, log2: Option<Vec<u8>>) -> Self {
        self.log1 = log1;
        self.log2 = log2;
        self
    }

    /// Opens a primary hive file's bytes.
    ///
    /// # Errors
    /// `Corrupt` if the base block or bins are damaged; `Unsupported` for hives over
    /// [`MAX_HIVE_SIZE`] or of unknown versions; `Dirty` if the hive has pending log data that
    /// the given logs (if any) cannot replay and `allow_dirty` is off.
    pub fn open(self, mut data: Vec<u8>) -> Result<Hive> {
        for (what, len) in [
            ("hive size", Some(data.len())),
            ("LOG1 size", self.log1.as_ref().map(Vec::len)),
            ("LOG2 size", self.log2.as_ref().map(Vec::len)),
        ] {
            if let Some(len) = len
                && len > MAX_HIVE_SIZE
            {
                return Err(Error::unsupported(
                    what,
                    format!("{len} bytes, more than the limit of {MAX_HIVE_SIZE}"),
                ));
            }
        }
        let mut base = BaseBlock::parse(&data, FILE_TYPE_PRIMARY)?;
        let was_dirty = base.is_dirty();
        let mut replayed = 0;
        if was_dirty {
            let logs_given = self.log1.is_some() || self.log2.is_some();
            if logs_given {
                let logs = [self.log1.as_deref(), self.log2.as_deref()];
                replayed = log::replay(&mut data, &base, &logs)?;
                base = BaseBlock::parse(&data, FILE_TYPE_PRIMARY)?;
            }
            if base.is_dirty() && !self.allow_dirty {
                return Err(Error::Dirty(Dirty {
                    hive_name: base.short_name(),
                    primary_sequence: base.primary_sequence,
                    secondary_sequence: base.secondary_sequence,
                    reason: if base.primary_sequence == base.secondary_sequence {
                        DirtyReason::BadChecksum
                    } else {
                        DirtyReason::SequenceMismatch
                    },
                    logs_tried: logs_given,
                }));
            }
        }
        let size = base.hive_bins_data_size as usize;
        let end = BASE_BLOCK_SIZE + size;
        if data.len() < end {
            return Err(Error::corrupt(
                "base block",
                40,
                format!(
                    "hive bins data size {size:#x} runs past the end of the {:#x}-byte file",
                    data.len()
                ),
            ));
        }
        // Padding after the last bin is allowed (spec "Format of primary files") and ignored.
        data.truncate(end);
        let cells = CellMap::scan(data.get(BASE_BLOCK_SIZE..).unwrap_or_default())?;
        tracing::debug!(
            bins = cells.bins,
            allocated_cells = cells.allocated_cells,
            replayed,
            "opened hive {}",
            base.short_name()
        );
        Ok(Hive {
            data,
            base,
            cells,
            was_dirty,
            replayed,
        })
    }
}

/// A registry hive file, validated and held in memory.
///
/// Why our own parser rather than libhivex: hive files come from untrusted guest disks, so every
/// byte is checked under the rules of this workspace (no panics, bounded loops and allocations,
/// errors that name the damaged cell); it keeps C out of the process; and it is the base of our
/// own writer. libhivex remains the oracle in the tests.
#[derive(Debug)]
pub struct Hive {
    pub(crate) data: Vec<u8>,
    pub(crate) base: BaseBlock,
    pub(crate) cells: CellMap,
    was_dirty: bool,
    replayed: u32,
}

impl Hive {
    /// Opens a primary hive file's bytes (read through the guest filesystem by the caller),
    /// refusing dirty hives.
    ///
    /// # Errors
    /// See [`HiveOptions::open`].
    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        HiveOptions::new().open(data)
    }

    /// Opens a primary hive file, replaying its transaction logs if it is dirty.
    ///
    /// # Errors
    /// See [`HiveOptions::open`].
    pub fn open_with_logs(
        primary: Vec<u8>,
        log1: Option<Vec<u8>>,
        log2: Option<Vec<u8>>,
    ) -> Result<Self> {
        HiveOptions::new().logs(log1, log2).open(primary)
    }

    /// Options for opening a hive.
    #[must_use]
    pub fn options() -> HiveOptions {
        HiveOptions::new()
    }

    /// The base block (after log replay, if any).
    #[must_use]
    pub fn base_block(&self) -> &BaseBlock {
        &self.base
    }

    /// True if the primary file was dirty when opened, whether or not logs were replayed.
    #[must_use]
    pub fn was_dirty(&self) -> bool {
        self.was_dirty
    }

    /// True if the hive as held now still has pending log data (opened with `allow_dirty`).
    #[must_use]
    pub fn is_dirty(&self) -> bool {
        self.base.is_dirty()
    }

    /// The number of transaction log entries replayed when opening.
    #[must_use]
    pub fn replayed_log_entries(&self) -> u32 {
        self.replayed
    }

    /// The hive file's bytes as held (after replay; padding after the last bin dropped).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The root key.
    ///
    /// # Errors
    /// `Corrupt` if the root cell offset does not lead to a key node.
    pub fn root(&self) -> Result<Key<'_>> {
        Key::parse(self, self.base.root_cell_offset)
    }

    /// The key at `path` below the root: components separated by `\`, compared
    /// case-insensitively; empty components (leading, trailing or doubled `\`) are skipped.
    /// `Ok(None)` if some component does not exist.
    ///
    /// # Errors
    /// `Usage` for paths deeper than [`MAX_KEY_DEPTH`]; `Corrupt` for damage met on the way.
    pub fn open_path(&self, path: &str) -> Result<Option<Key<'_>>> {
        let parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
        if parts.len() > MAX_KEY_DEPTH {
            return Err(Error::Usage(format!(
                "key path has {} components, more than the limit of {MAX_KEY_DEPTH}",
                parts.len()
            )));
        }
        let mut key = self.root()?;
        for part in parts {
            match key.subkey(part)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    /// The data of the allocated cell at `off` (relative to the hive bins data).
    pub(crate) fn cell(&self, off: u32, what: &'static str) -> Result<&[u8]> {
        let bins = self.data.get(BASE_BLOCK_SIZE..).unwrap_or_default();
        if off as usize >= bins.len() {
            return Err(Error::corrupt(
                what,
                file_offset(off),
                format!(
                    "cell offset {off:#x} is outside the {:#x}-byte hive bins data",
                    bins.len()
                ),
            ));
        }
        self.cells.cell(bins, off, what)
    }
}
