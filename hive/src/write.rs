//! The hive writer: [`HiveMut`] edits a clean hive in memory, cell by cell.
//!
//! Edits follow the regf rules Windows keeps (spec "Key node", "Key value", "Big data", "Index
//! leaf" to "Index root", "Key security"):
//!
//! - new key nodes name their parent, inherit the parent's "sk" security cell (whose reference
//!   count goes up by one) and carry the write's timestamp;
//! - subkey lists stay sorted by upper-cased name, "lh" hashes and "lf" hints are recomputed,
//!   and a list longer than [`MAX_LEAF_ENTRIES`] becomes an "ri" index root over leaves;
//! - value data of at most 4 bytes is stored in the "vk" record, data over 16,344 bytes goes into
//!   a "db" big-data record in hives of version 1.4 and later, the rest into one cell;
//! - cells are allocated first-fit from free cells (split as needed, 8-byte aligned), else from
//!   a new hive bin appended at the end (a multiple of 4 KiB); freed cells get a positive size
//!   and are merged with free neighbours in the same bin;
//! - [`HiveMut::into_bytes`] bumps both sequence numbers to the same new value, sets the base
//!   block's timestamp and hive bins data size and recomputes its checksum. Unknown base block
//!   fields are kept byte for byte.
//!
//! Every public edit is atomic: on error the hive is left exactly as it was.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::base_block::{BASE_BLOCK_SIZE, HBIN_ALIGN, checksum};
use crate::error::{Dirty, DirtyReason, Error, Result};
use crate::hbin::{CELL_ALIGN, HBIN_HEADER_SIZE, HBIN_SIGNATURE, file_offset, le_u16, le_u32};
use crate::hive::{Hive, MAX_HIVE_SIZE, MAX_KEY_DEPTH};
use crate::key_node::{FileTime, Key, NK_FIXED, NO_CELL, UNIX_EPOCH_FILETIME, flags};
use crate::key_value::{
    BIG_DATA_MIN_MINOR, BIG_DATA_SEGMENT, DATA_INLINE, KeyValue, MAX_VALUE_DATA, VK_COMP_NAME,
    VK_FIXED, ValueType, values_list,
};
use crate::name;
use crate::subkey_list::{MAX_SUBKEYS_PER_KEY, subkey_offsets};

/// Longest key name, in UTF-16 code units (Windows "Registry element size limits").
pub const MAX_KEY_NAME_LEN: usize = 255;
/// Longest value name, in UTF-16 code units (Windows "Registry element size limits").
pub const MAX_VALUE_NAME_LEN: usize = 16383;
/// Most entries written into one subkey list leaf: (4096 − 32-byte bin header − 4-byte cell
/// size − 4-byte leaf header) / 8 bytes per "lh" entry, so a leaf fits one 4 KiB bin as in the
/// hives Windows writes. Longer lists become an "ri" index root over such leaves.
pub const MAX_LEAF_ENTRIES: usize = 507;

/// Field offsets in an "nk" record (spec "Key node").
mod nk {
    pub(super) const FLAGS: usize = 2;
    pub(super) const LAST_WRITTEN: usize = 4;
    pub(super) const PARENT: usize = 16;
    pub(super) const SUBKEY_COUNT: usize = 20;
    pub(super) const SUBKEYS_LIST: usize = 28;
    pub(super) const VOLATILE_SUBKEYS_LIST: usize = 32;
    pub(super) const VALUE_COUNT: usize = 36;
    pub(super) const VALUES_LIST: usize = 40;
    pub(super) const SECURITY: usize = 44;
    pub(super) const CLASS: usize = 48;
    /// Low 16 bits only: the high bits hold virtualization and user flags since Vista.
    pub(super) const MAX_SUBKEY_NAME: usize = 52;
    pub(super) const MAX_VALUE_NAME: usize = 60;
    pub(super) const MAX_VALUE_DATA: usize = 64;
    pub(super) const NAME_LEN: usize = 72;
}

/// Field offsets in an "sk" record (spec "Key security").
mod sk {
    pub(super) const FLINK: usize = 4;
    pub(super) const BLINK: usize = 8;
    pub(super) const REFERENCE_COUNT: usize = 12;
}

/// A hive open for writing. Made from a clean [`Hive`] (or one whose logs were replayed) with
/// [`Hive::into_mut`]; read it back at any time through [`HiveMut::hive`].
///
/// ```
/// # fn main() -> Result<(), hive::Error> {
/// use hive::{Hive, ValueType};
/// let bytes = hive::testkit::HiveBuilder::new().build();
/// let mut w = Hive::from_bytes(bytes)?.into_mut()?;
/// w.create_key(r"ControlSet001\Services\viostor")?;
/// w.set_value(r"ControlSet001\Services\viostor", "Start", ValueType::Dword, &0u32.to_le_bytes())?;
/// let hive = Hive::from_bytes(w.into_bytes())?;
/// let key = hive.open_path(r"controlset001\services\VIOSTOR")?.expect("created");
/// assert_eq!(key.value("Start")?.and_then(|v| v.as_dword()), Some(0));
/// # Ok(())
/// # }
/// ```
pub struct HiveMut {
    hive: Hive,
    /// Free cells: offset (relative to the hive bins data) → size.
    free: BTreeMap<u32, u32>,
    now: u64,
    modified: bool,
    pub(crate) leaf_limit: usize,
}

impl std::fmt::Debug for HiveMut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Sizes only: the hive can be hundreds of MiB.
        f.debug_struct("HiveMut")
            .field("len", &self.hive.data.len())
            .field("free_cells", &self.free.len())
            .field("now", &FileTime(self.now))
            .field("modified", &self.modified)
            .finish_non_exhaustive()
    }
}

/// Which way a security cell's reference count moves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refs {
    /// A new key uses the cell.
    Acquire,
    /// A deleted key no longer uses it.
    Release,
}

/// What a transaction restores on error.
struct Snapshot {
    data: Vec<u8>,
    cells: crate::hbin::CellMap,
    base: crate::base_block::BaseBlock,
    free: BTreeMap<u32, u32>,
    modified: bool,
}

/// One entry of a subkey list being rewritten: key node offset and name.
type Entry = (u32, String);

/// A subkey list as read: its entries in order, the cells it occupies, the leaf signature.
struct ListInfo {
    entries: Vec<Entry>,
    cells: Vec<u32>,
    leaf: [u8; 2],
}

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

/// Bytes of a name as stored, and whether it is stored compressed. Only ASCII names are
/// compressed (Windows also compresses Latin-1, but UTF-16 is always valid and needs no
/// assumption about how a reader maps the bytes).
fn stored_name(s: &str) -> (Vec<u8>, bool) {
    if s.is_ascii() {
        (s.as_bytes().to_vec(), true)
    } else {
        (s.encode_utf16().flat_map(u16::to_le_bytes).collect(), false)
    }
}

/// Length in bytes of a name seen as UTF-16 (the unit of the "largest name" fields).
fn utf16_bytes(s: &str) -> u32 {
    u32::try_from(s.encode_utf16().count().saturating_mul(2)).unwrap_or(u32::MAX)
}

/// Checks one key name (a path component).
pub(crate) fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(usage("key name is empty".to_owned()));
    }
    if name.contains('\\') {
        return Err(usage(format!("key name {name:?} contains a backslash")));
    }
    if name.contains('\0') {
        return Err(usage(format!("key name {name:?} contains a NUL character")));
    }
    let units = name.encode_utf16().count();
    if units > MAX_KEY_NAME_LEN {
        return Err(usage(format!(
            "key name is {units} UTF-16 units long, more than the limit of {MAX_KEY_NAME_LEN}"
        )));
    }
    Ok(())
}

/// Checks a value name (empty is the default value).
pub(crate) fn check_value_name(name: &str) -> Result<()> {
    if name.contains('\0') {
        return Err(usage(format!(
            "value name {name:?} contains a NUL character"
        )));
    }
    let units = name.encode_utf16().count();
    if units > MAX_VALUE_NAME_LEN {
        return Err(usage(format!(
            "value name is {units} UTF-16 units long, more than the limit of {MAX_VALUE_NAME_LEN}"
        )));
    }
    Ok(())
}

/// Splits a key path into checked components. Leading and trailing `\` are ignored; the empty
/// path is the root key.
pub(crate) fn split_path(path: &str) -> Result<Vec<&str>> {
    let trimmed = path.trim_matches('\\');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.split('\\').collect();
    if parts.len() > MAX_KEY_DEPTH {
        return Err(usage(format!(
            "key path has {} components, more than the limit of {MAX_KEY_DEPTH}",
            parts.len()
        )));
    }
    for p in &parts {
        if p.is_empty() {
            return Err(usage(format!("key path {path:?} has an empty component")));
        }
        check_key_name(p)?;
    }
    Ok(parts)
}

/// The current time as a FILETIME.
fn filetime_now() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ticks = since
        .as_secs()
        .saturating_mul(10_000_000)
        .saturating_add(u64::from(since.subsec_nanos() / 100));
    UNIX_EPOCH_FILETIME.saturating_add(ticks)
}

impl Hive {
    /// Opens this hive for writing.
    ///
    /// # Errors
    /// `Dirty` if the hive still has pending log data (it was opened with
    /// [`crate::HiveOptions::allow_dirty`] and its logs were not replayed): writing would
    /// build on a state Windows never saw.
    pub fn into_mut(self) -> Result<HiveMut> {
        HiveMut::new(self)
    }
}

impl HiveMut {
    /// See [`Hive::into_mut`].
    ///
    /// # Errors
    /// See [`Hive::into_mut`].
    pub fn new(hive: Hive) -> Result<Self> {
        if hive.is_dirty() {
            let base = hive.base_block();
            return Err(Error::Dirty(Dirty {
                hive_name: base.short_name(),
                primary_sequence: base.primary_sequence,
                secondary_sequence: base.secondary_sequence,
                reason: if base.primary_sequence == base.secondary_sequence {
                    DirtyReason::BadChecksum
                } else {
                    DirtyReason::SequenceMismatch
                },
                logs_tried: false,
            }));
        }
        let mut free = BTreeMap::new();
        let bins = hive.data.get(BASE_BLOCK_SIZE..).unwrap_or_default();
        for off in hive.cells.free_cells() {
            // The scan at open proved each cell's size field is inside its bin.
            if let Some(size) = le_u32(bins, off as usize) {
                free.insert(off, size);
            }
        }
        Ok(Self {
            hive,
            free,
            now: filetime_now(),
            modified: false,
            leaf_limit: MAX_LEAF_ENTRIES,
        })
    }

    /// The hive as edited so far, for reading. Its bytes form a valid file at every point
    /// (with the sequence numbers from before the edits).
    #[must_use]
    pub fn hive(&self) -> &Hive {
        &self.hive
    }

    /// Sets the timestamp written into changed keys, new bins and the base block (the current
    /// time by default); fixed timestamps make output reproducible.
    pub fn set_timestamp(&mut self, time: FileTime) {
        self.now = time.0;
    }

    /// True if any edit succeeded.
    #[must_use]
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    /// The new hive file. If anything changed, both sequence numbers are set to one more than
    /// before, the timestamp and hive bins data size are updated and the checksum recomputed.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        let mut data = self.hive.data;
        if !self.modified {
            return data;
        }
        let base = &self.hive.base;
        let seq = base
            .primary_sequence
            .max(base.secondary_sequence)
            .wrapping_add(1);
        let size = base.hive_bins_data_size;
        if let Some(header) = data.get_mut(..BASE_BLOCK_SIZE) {
            header[4..8].copy_from_slice(&seq.to_le_bytes());
            header[8..12].copy_from_slice(&seq.to_le_bytes());
            header[12..20].copy_from_slice(&self.now.to_le_bytes());
            header[40..44].copy_from_slice(&size.to_le_bytes());
            let sum = checksum(header);
            header[508..512].copy_from_slice(&sum.to_le_bytes());
        }
        data
    }

    /// Re-opens the written bytes as a [`Hive`], checking them like any other hive.
    ///
    /// # Errors
    /// As for [`Hive::from_bytes`] (an error here would be a bug in the writer).
    pub fn into_hive(self) -> Result<Hive> {
        Hive::from_bytes(self.into_bytes())
    }

    /// Creates the key at `path` and any missing parents (like `mkdir -p`); existing keys are
    /// matched case-insensitively and left as they are.
    ///
    /// # Errors
    /// `Usage` for an invalid path (an empty component, a name over [`MAX_KEY_NAME_LEN`] or
    /// with a NUL); `Corrupt` for damage met on the way; `Unsupported` past the library's
    /// limits (hive size, subkeys per key).
    pub fn create_key(&mut self, path: &str) -> Result<()> {
        let parts = split_path(path)?;
        self.txn(|w| w.create_key_inner(&parts).map(|_| ()))
    }

    /// Sets (creates or replaces) the value `name` of the key at `path` (which must exist).
    /// The empty name is the key's default value. Any type number may be used.
    ///
    /// # Errors
    /// `Usage` if the key does not exist, the name is invalid or the data is over
    /// [`MAX_VALUE_DATA`] bytes; `Corrupt` for damage met on the way; `Unsupported` past the
    /// library's limits.
    pub fn set_value(
        &mut self,
        path: &str,
        name: &str,
        kind: ValueType,
        data: &[u8],
    ) -> Result<()> {
        let parts = split_path(path)?;
        check_value_name(name)?;
        check_data(data)?;
        self.txn(|w| {
            let key = w.existing(&parts, path)?;
            w.set_value_inner(key, name, kind, data)
        })
    }

    /// Deletes the value `name` of the key at `path`. Returns whether it existed.
    ///
    /// # Errors
    /// `Usage` if the key does not exist or the path is invalid; `Corrupt` for damage.
    pub fn delete_value(&mut self, path: &str, name: &str) -> Result<bool> {
        let parts = split_path(path)?;
        self.txn(|w| {
            let key = w.existing(&parts, path)?;
            w.delete_value_inner(key, name)
        })
    }

    /// Deletes the key at `path` with everything below it. Returns whether it existed.
    ///
    /// # Errors
    /// `Usage` for the root key or an invalid path; `Corrupt` for damage met on the way.
    pub fn delete_key(&mut self, path: &str) -> Result<bool> {
        let parts = split_path(path)?;
        self.txn(|w| w.delete_key_inner(&parts))
    }

    /// Runs `f`; if it fails, restores the state from before.
    pub(crate) fn txn<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let snap = Snapshot {
            data: self.hive.data.clone(),
            cells: self.hive.cells.clone(),
            base: self.hive.base.clone(),
            free: self.free.clone(),
            modified: self.modified,
        };
        let r = f(self);
        if r.is_err() {
            self.hive.data = snap.data;
            self.hive.cells = snap.cells;
            self.hive.base = snap.base;
            self.free = snap.free;
            self.modified = snap.modified;
        }
        r
    }

    // ---- key lookups -------------------------------------------------------------------

    /// The key node offset at `parts`, if it exists.
    pub(crate) fn find(&self, parts: &[&str]) -> Result<Option<u32>> {
        let mut off = self.hive.base.root_cell_offset;
        for part in parts {
            let key = Key::parse(&self.hive, off)?;
            match key.subkey(part)? {
                Some(k) => off = k.offset(),
                None => return Ok(None),
            }
        }
        Ok(Some(off))
    }

    fn existing(&self, parts: &[&str], path: &str) -> Result<u32> {
        self.find(parts)?
            .ok_or_else(|| usage(format!("key {path:?} does not exist")))
    }

    pub(crate) fn create_key_inner(&mut self, parts: &[&str]) -> Result<u32> {
        let mut off = self.hive.base.root_cell_offset;
        for part in parts {
            let found = Key::parse(&self.hive, off)?
                .subkey(part)?
                .map(|k| k.offset());
            off = match found {
                Some(o) => o,
                None => self.add_subkey(off, part)?,
            };
        }
        Ok(off)
    }

    // ---- cells ---------------------------------------------------------------------------

    /// File range of the data of the allocated cell at `off`.
    fn cell_range(&self, off: u32, what: &'static str) -> Result<std::ops::Range<usize>> {
        let len = self.hive.cell(off, what)?.len();
        let start = BASE_BLOCK_SIZE + off as usize + 4;
        Ok(start..start + len)
    }

    fn put(&mut self, off: u32, at: usize, bytes: &[u8], what: &'static str) -> Result<()> {
        let range = self.cell_range(off, what)?;
        let cell_len = range.len();
        let dst = self
            .hive
            .data
            .get_mut(range)
            .and_then(|c| c.get_mut(at..at.checked_add(bytes.len())?))
            .ok_or_else(|| {
                Error::corrupt(
                    what,
                    file_offset(off),
                    format!(
                        "{} bytes at {at} do not fit the {cell_len}-byte cell",
                        bytes.len()
                    ),
                )
            })?;
        dst.copy_from_slice(bytes);
        self.modified = true;
        Ok(())
    }

    fn put_u32(&mut self, off: u32, at: usize, v: u32, what: &'static str) -> Result<()> {
        self.put(off, at, &v.to_le_bytes(), what)
    }

    fn get_u32(&self, off: u32, at: usize, what: &'static str) -> Result<u32> {
        let cell = self.hive.cell(off, what)?;
        le_u32(cell, at).ok_or_else(|| {
            Error::corrupt(
                what,
                file_offset(off),
                format!("cell of {} bytes has no field at {at}", cell.len()),
            )
        })
    }

    /// Writes a cell's size field (negative: allocated).
    fn write_size(&mut self, off: u32, size: i32) -> Result<()> {
        let at = BASE_BLOCK_SIZE + off as usize;
        let dst =
            self.hive.data.get_mut(at..at + 4).ok_or_else(|| {
                Error::corrupt("cell", file_offset(off), "past the end of the hive")
            })?;
        dst.copy_from_slice(&size.to_le_bytes());
        Ok(())
    }

    /// Allocates a cell holding `payload` (zero-padded to the 8-byte cell size).
    fn alloc(&mut self, payload: &[u8]) -> Result<u32> {
        let need = payload
            .len()
            .checked_add(4)
            .map(|n| n.div_ceil(CELL_ALIGN as usize) * CELL_ALIGN as usize)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n as usize <= MAX_HIVE_SIZE)
            .ok_or_else(|| {
                Error::unsupported(
                    "cell size",
                    format!("{} bytes, more than the hive size limit", payload.len()),
                )
            })?;
        let found = self
            .free
            .iter()
            .find(|&(_, &size)| size >= need)
            .map(|(&o, &s)| (o, s));
        let (off, size) = match found {
            Some(f) => f,
            None => self.add_bin(need)?,
        };
        self.free.remove(&off);
        let rest = size - need;
        if rest > 0 {
            let rest_off = off + need;
            // Both sizes are at most a bin's size, under MAX_HIVE_SIZE (512 MiB).
            self.write_size(rest_off, i32::try_from(rest).unwrap_or(i32::MAX))?;
            self.free.insert(rest_off, rest);
            self.hive.cells.set_cell(rest_off, false);
        }
        self.write_size(off, -i32::try_from(need).unwrap_or(i32::MAX))?;
        self.hive.cells.set_cell(off, true);
        let start = BASE_BLOCK_SIZE + off as usize + 4;
        let body = self
            .hive
            .data
            .get_mut(start..start + need as usize - 4)
            .ok_or_else(|| Error::corrupt("cell", file_offset(off), "past the end of the hive"))?;
        body.fill(0);
        if let Some(dst) = body.get_mut(..payload.len()) {
            dst.copy_from_slice(payload);
        }
        self.modified = true;
        Ok(off)
    }

    /// Appends a hive bin with a free cell of at least `need` bytes; returns that cell.
    fn add_bin(&mut self, need: u32) -> Result<(u32, u32)> {
        let at = self.hive.base.hive_bins_data_size;
        let too_big = || {
            Error::unsupported(
                "hive size",
                format!("growing the hive past the limit of {MAX_HIVE_SIZE} bytes"),
            )
        };
        let bin_size = need
            .checked_add(HBIN_HEADER_SIZE)
            .map(|n| n.div_ceil(HBIN_ALIGN) * HBIN_ALIGN)
            .ok_or_else(too_big)?;
        let total = at.checked_add(bin_size).ok_or_else(too_big)?;
        if total as usize + BASE_BLOCK_SIZE > MAX_HIVE_SIZE {
            return Err(too_big());
        }
        let start = BASE_BLOCK_SIZE + at as usize;
        self.hive.data.resize(BASE_BLOCK_SIZE + total as usize, 0);
        let mut header = Vec::with_capacity(HBIN_HEADER_SIZE as usize);
        header.extend(HBIN_SIGNATURE);
        header.extend(at.to_le_bytes());
        header.extend(bin_size.to_le_bytes());
        header.extend([0u8; 8]);
        header.extend(self.now.to_le_bytes());
        header.extend(0u32.to_le_bytes());
        if let Some(dst) = self.hive.data.get_mut(start..start + header.len()) {
            dst.copy_from_slice(&header);
        }
        let cell = at + HBIN_HEADER_SIZE;
        let size = bin_size - HBIN_HEADER_SIZE;
        self.hive.cells.grow(total as usize);
        self.hive.cells.bins += 1;
        self.hive.base.hive_bins_data_size = total;
        // Keep the held bytes a readable file: the size field and checksum follow the growth
        // (the sequence numbers change only in `into_bytes`).
        if let Some(header) = self.hive.data.get_mut(..BASE_BLOCK_SIZE) {
            header[40..44].copy_from_slice(&total.to_le_bytes());
            let sum = checksum(header);
            header[508..512].copy_from_slice(&sum.to_le_bytes());
        }
        self.write_size(cell, i32::try_from(size).unwrap_or(i32::MAX))?;
        self.hive.cells.set_cell(cell, false);
        self.free.insert(cell, size);
        self.modified = true;
        Ok((cell, size))
    }

    /// Frees the allocated cell at `off`, merging it with free neighbours.
    fn free_cell(&mut self, off: u32) -> Result<()> {
        let len = self.hive.cell(off, "cell")?.len();
        // `len` + 4 is the cell size, under the hive's size.
        let size = u32::try_from(len + 4).unwrap_or(u32::MAX);
        self.hive.cells.set_cell(off, false);
        let mut start = off;
        let mut total = size;
        // A free cell right after this one lies in the same bin: the next bin starts with its
        // header, never with a cell.
        if let Some(next) = off.checked_add(size)
            && let Some(n) = self.free.remove(&next)
        {
            self.hive.cells.clear_cell(next);
            total += n;
        }
        if let Some((&p, &ps)) = self.free.range(..off).next_back()
            && p.checked_add(ps) == Some(off)
        {
            self.free.remove(&p);
            self.hive.cells.clear_cell(off);
            start = p;
            total += ps;
        }
        self.write_size(start, i32::try_from(total).unwrap_or(i32::MAX))?;
        self.free.insert(start, total);
        self.modified = true;
        Ok(())
    }

    // ---- security ------------------------------------------------------------------------

    /// Moves the reference count of the "sk" cell at `off` by one; an "sk" cell no key uses
    /// any more is unlinked from the list of security cells and freed.
    fn sk_ref(&mut self, off: u32, change: Refs) -> Result<()> {
        let cell = self.hive.cell(off, "sk cell")?;
        if cell.get(..2) != Some(b"sk".as_slice()) {
            return Err(Error::corrupt(
                "sk cell",
                file_offset(off),
                format!(
                    "signature {:02x?} is not \"sk\"",
                    cell.get(..2).unwrap_or_default()
                ),
            ));
        }
        let count = self.get_u32(off, sk::REFERENCE_COUNT, "sk cell")?;
        let new = if change == Refs::Acquire {
            count.checked_add(1)
        } else {
            count.checked_sub(1)
        }
        .ok_or_else(|| {
            Error::corrupt(
                "sk cell",
                file_offset(off),
                format!("reference count {count} cannot change by one"),
            )
        })?;
        self.put_u32(off, sk::REFERENCE_COUNT, new, "sk cell")?;
        if new == 0 {
            let flink = self.get_u32(off, sk::FLINK, "sk cell")?;
            let blink = self.get_u32(off, sk::BLINK, "sk cell")?;
            if flink != off {
                self.put_u32(blink, sk::FLINK, flink, "sk cell")?;
                self.put_u32(flink, sk::BLINK, blink, "sk cell")?;
                self.free_cell(off)?;
            }
        }
        Ok(())
    }

    // ---- subkey lists --------------------------------------------------------------------

    /// The leaf kind for new lists: "lh" from version 1.5 (Windows XP) on, "lf" in 1.3 and
    /// 1.4, "li" before.
    fn default_leaf(&self) -> [u8; 2] {
        match self.hive.base.minor_version {
            5.. => *b"lh",
            3 | 4 => *b"lf",
            _ => *b"li",
        }
    }

    /// The cells of the subkey list at `list` (the list itself and, under an index root, its
    /// leaves) and the leaf signature.
    fn list_cells(&self, list: u32) -> Result<(Vec<u32>, [u8; 2])> {
        let cell = self.hive.cell(list, "subkey list")?;
        let sig = [
            cell.first().copied().unwrap_or(0),
            cell.get(1).copied().unwrap_or(0),
        ];
        if &sig != b"ri" {
            return Ok((vec![list], sig));
        }
        let count = le_u16(cell, 2).unwrap_or(0);
        let mut cells = vec![list];
        let mut leaf = self.default_leaf();
        // At most 65535 entries (a u16 count), each read with a bounds check.
        for i in 0..usize::from(count) {
            let l = le_u32(cell, 4 + i * 4).ok_or_else(|| {
                Error::corrupt(
                    "subkey list",
                    file_offset(list),
                    format!("{count} entries do not fit the {}-byte cell", cell.len()),
                )
            })?;
            let lc = self.hive.cell(l, "subkey list")?;
            if i == 0
                && let Some(s) = lc.get(..2)
                && s != b"ri"
            {
                leaf = [s[0], s[1]];
            }
            cells.push(l);
        }
        Ok((cells, leaf))
    }

    fn read_subkeys(&self, key_off: u32) -> Result<ListInfo> {
        let key = Key::parse(&self.hive, key_off)?;
        let count = key.subkey_count();
        let list = key.subkeys_list_offset();
        let offsets = subkey_offsets(&self.hive, list, count)?;
        let mut entries = Vec::with_capacity(offsets.len());
        for o in offsets {
            let k = Key::parse(&self.hive, o)?;
            entries.push((o, k.name().to_owned()));
        }
        let (cells, leaf) = if count == 0 {
            (Vec::new(), self.default_leaf())
        } else {
            self.list_cells(list)?
        };
        Ok(ListInfo {
            entries,
            cells,
            leaf,
        })
    }

    fn leaf_bytes(sig: [u8; 2], entries: &[Entry]) -> Vec<u8> {
        let mut l = sig.to_vec();
        // Leaves hold at most `leaf_limit` ≤ 65535 entries.
        l.extend(
            u16::try_from(entries.len())
                .unwrap_or(u16::MAX)
                .to_le_bytes(),
        );
        for (off, name) in entries {
            l.extend(off.to_le_bytes());
            match &sig {
                b"lh" => l.extend(name::lh_hash(name).to_le_bytes()),
                b"lf" => {
                    // The name hint: the first 4 characters, one byte each (spec "Fast leaf").
                    let mut hint = [0u8; 4];
                    for (h, c) in hint.iter_mut().zip(name.chars()) {
                        *h = u8::try_from(u32::from(c)).unwrap_or(0);
                    }
                    l.extend(hint);
                }
                _ => {}
            }
        }
        l
    }

    /// Replaces the subkey list of `key_off` with one holding `info.entries` (already sorted)
    /// and updates the key node's count and list offset.
    fn write_subkeys(&mut self, key_off: u32, info: &ListInfo) -> Result<()> {
        for &c in &info.cells {
            self.free_cell(c)?;
        }
        let n = info.entries.len();
        let leaf = match &info.leaf {
            b"lf" | b"lh" | b"li" => info.leaf,
            _ => self.default_leaf(),
        };
        let limit = self.leaf_limit.clamp(1, usize::from(u16::MAX));
        let list = if n == 0 {
            NO_CELL
        } else if n <= limit {
            self.alloc(&Self::leaf_bytes(leaf, &info.entries))?
        } else {
            let leaves = n.div_ceil(limit);
            let per = n.div_ceil(leaves);
            let count = u16::try_from(leaves).map_err(|_| {
                Error::unsupported(
                    "subkeys",
                    format!("{n} subkeys need more than 65535 leaves"),
                )
            })?;
            let mut ri = b"ri".to_vec();
            ri.extend(count.to_le_bytes());
            for chunk in info.entries.chunks(per) {
                let l = self.alloc(&Self::leaf_bytes(leaf, chunk))?;
                ri.extend(l.to_le_bytes());
            }
            self.alloc(&ri)?
        };
        let count = u32::try_from(n).unwrap_or(u32::MAX);
        self.put_u32(key_off, nk::SUBKEY_COUNT, count, "nk cell")?;
        self.put_u32(key_off, nk::SUBKEYS_LIST, list, "nk cell")?;
        Ok(())
    }

    fn touch(&mut self, key_off: u32) -> Result<()> {
        self.put(
            key_off,
            nk::LAST_WRITTEN,
            &self.now.to_le_bytes(),
            "nk cell",
        )
    }

    /// Raises a "largest ..." field of a key node to at least `v` (only the low 16 bits for
    /// the subkey name field, whose high bits are flags).
    fn raise(&mut self, key_off: u32, at: usize, v: u32) -> Result<()> {
        let old = self.get_u32(key_off, at, "nk cell")?;
        let new = if at == nk::MAX_SUBKEY_NAME {
            let low = old & 0xffff;
            (old & !0xffff) | low.max(v.min(0xffff))
        } else {
            old.max(v)
        };
        if new != old {
            self.put_u32(key_off, at, new, "nk cell")?;
        }
        Ok(())
    }

    /// Creates the subkey `name` of `parent` (which has none of that name).
    fn add_subkey(&mut self, parent: u32, name: &str) -> Result<u32> {
        check_key_name(name)?;
        let key = Key::parse(&self.hive, parent)?;
        let security = key.security_offset();
        let mut info = self.read_subkeys(parent)?;
        if info.entries.len() >= MAX_SUBKEYS_PER_KEY as usize {
            return Err(Error::unsupported(
                "subkeys",
                format!("more than {MAX_SUBKEYS_PER_KEY} subkeys in one key"),
            ));
        }
        self.sk_ref(security, Refs::Acquire)?;
        let (stored, compressed) = stored_name(name);
        let mut rec = vec![0u8; NK_FIXED + stored.len()];
        rec[..2].copy_from_slice(b"nk");
        let fl: u16 = if compressed { flags::COMP_NAME } else { 0 };
        rec[nk::FLAGS..nk::FLAGS + 2].copy_from_slice(&fl.to_le_bytes());
        rec[nk::LAST_WRITTEN..nk::LAST_WRITTEN + 8].copy_from_slice(&self.now.to_le_bytes());
        for (at, v) in [
            (nk::PARENT, parent),
            (nk::SUBKEYS_LIST, NO_CELL),
            (nk::VOLATILE_SUBKEYS_LIST, NO_CELL),
            (nk::VALUES_LIST, NO_CELL),
            (nk::SECURITY, security),
            (nk::CLASS, NO_CELL),
        ] {
            rec[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Names are at most 255 UTF-16 units (checked above), 510 bytes.
        let len = u16::try_from(stored.len()).unwrap_or(u16::MAX);
        rec[nk::NAME_LEN..nk::NAME_LEN + 2].copy_from_slice(&len.to_le_bytes());
        rec[NK_FIXED..].copy_from_slice(&stored);
        let off = self.alloc(&rec)?;
        let pos = info
            .entries
            .iter()
            .position(|(_, n)| name::compare(n, name) == Ordering::Greater)
            .unwrap_or(info.entries.len());
        info.entries.insert(pos, (off, name.to_owned()));
        self.write_subkeys(parent, &info)?;
        self.raise(parent, nk::MAX_SUBKEY_NAME, utf16_bytes(name))?;
        self.touch(parent)?;
        Ok(off)
    }

    // ---- values --------------------------------------------------------------------------

    /// Stores value data; returns the "vk" data size and data offset fields.
    fn write_data(&mut self, data: &[u8]) -> Result<(u32, u32)> {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if len <= 4 {
            let mut inline = [0u8; 4];
            inline[..data.len()].copy_from_slice(data);
            return Ok((len | DATA_INLINE, u32::from_le_bytes(inline)));
        }
        if len > BIG_DATA_SEGMENT && self.hive.base.minor_version >= BIG_DATA_MIN_MINOR {
            let mut segs = Vec::new();
            for chunk in data.chunks(BIG_DATA_SEGMENT as usize) {
                // Windows puts a full 16,344-byte segment in a 16,352-byte cell, and libhivex
                // reads (cell size − 8) bytes of each segment; 4 spare bytes after every
                // segment keep the last, shorter one readable by both.
                let mut seg = Vec::with_capacity(chunk.len() + 4);
                seg.extend_from_slice(chunk);
                seg.extend([0u8; 4]);
                segs.push(self.alloc(&seg)?);
            }
            let count = u16::try_from(segs.len()).map_err(|_| {
                Error::unsupported(
                    "value data",
                    format!("{len} bytes need over 65535 segments"),
                )
            })?;
            let list: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            let list = self.alloc(&list)?;
            let mut db = b"db".to_vec();
            db.extend(count.to_le_bytes());
            db.extend(list.to_le_bytes());
            return Ok((len, self.alloc(&db)?));
        }
        Ok((len, self.alloc(data)?))
    }

    /// The key's value offsets and the position of the one called `name`.
    fn find_value(&self, key_off: u32, name: &str) -> Result<(Vec<u32>, Option<usize>)> {
        let key = Key::parse(&self.hive, key_off)?;
        let offs = values_list(&self.hive, key.values_list_offset(), key.value_count())?;
        for (i, &o) in offs.iter().enumerate() {
            if name::eq(&KeyValue::parse(&self.hive, o)?.name, name) {
                return Ok((offs, Some(i)));
            }
        }
        Ok((offs, None))
    }

    pub(crate) fn set_value_inner(
        &mut self,
        key_off: u32,
        name: &str,
        kind: ValueType,
        data: &[u8],
    ) -> Result<()> {
        let (offs, found) = self.find_value(key_off, name)?;
        let (size, data_off) = self.write_data(data)?;
        if let Some(i) = found {
            let vk = offs[i];
            let old = KeyValue::parse(&self.hive, vk)?.data_cells(&self.hive)?;
            for c in old {
                self.free_cell(c)?;
            }
            self.put_u32(vk, 4, size, "vk cell")?;
            self.put_u32(vk, 8, data_off, "vk cell")?;
            self.put_u32(vk, 12, kind.raw(), "vk cell")?;
        } else {
            let (stored, compressed) = stored_name(name);
            let mut rec = Vec::with_capacity(VK_FIXED + stored.len());
            rec.extend(b"vk");
            // Value names are at most 16383 UTF-16 units (checked by the caller): 32766 bytes.
            rec.extend(
                u16::try_from(stored.len())
                    .unwrap_or(u16::MAX)
                    .to_le_bytes(),
            );
            rec.extend(size.to_le_bytes());
            rec.extend(data_off.to_le_bytes());
            rec.extend(kind.raw().to_le_bytes());
            let fl = if compressed && !stored.is_empty() {
                VK_COMP_NAME
            } else {
                0
            };
            rec.extend(fl.to_le_bytes());
            rec.extend(0u16.to_le_bytes());
            rec.extend(&stored);
            let vk = self.alloc(&rec)?;
            self.append_value(key_off, &offs, vk)?;
            self.raise(key_off, nk::MAX_VALUE_NAME, utf16_bytes(name))?;
        }
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.raise(key_off, nk::MAX_VALUE_DATA, len)?;
        self.touch(key_off)
    }

    /// Adds `vk` to the key's values list, growing the list cell if it is full.
    fn append_value(&mut self, key_off: u32, offs: &[u32], vk: u32) -> Result<()> {
        let count = offs.len();
        let new_count = u32::try_from(count + 1).unwrap_or(u32::MAX);
        if new_count > crate::key_value::MAX_VALUES_PER_KEY {
            return Err(Error::unsupported(
                "key values",
                format!(
                    "more than {} values in one key",
                    crate::key_value::MAX_VALUES_PER_KEY
                ),
            ));
        }
        let list = self.get_u32(key_off, nk::VALUES_LIST, "nk cell")?;
        let room = count > 0 && self.hive.cell(list, "values list")?.len() >= (count + 1) * 4;
        if room {
            self.put_u32(list, count * 4, vk, "values list")?;
        } else {
            let mut bytes: Vec<u8> = offs.iter().flat_map(|o| o.to_le_bytes()).collect();
            bytes.extend(vk.to_le_bytes());
            let new_list = self.alloc(&bytes)?;
            if count > 0 {
                self.free_cell(list)?;
            }
            self.put_u32(key_off, nk::VALUES_LIST, new_list, "nk cell")?;
        }
        self.put_u32(key_off, nk::VALUE_COUNT, new_count, "nk cell")
    }

    pub(crate) fn delete_value_inner(&mut self, key_off: u32, name: &str) -> Result<bool> {
        let (mut offs, found) = self.find_value(key_off, name)?;
        let Some(i) = found else { return Ok(false) };
        let vk = offs.remove(i);
        let cells = KeyValue::parse(&self.hive, vk)?.data_cells(&self.hive)?;
        for c in cells {
            self.free_cell(c)?;
        }
        self.free_cell(vk)?;
        let list = self.get_u32(key_off, nk::VALUES_LIST, "nk cell")?;
        if offs.is_empty() {
            self.free_cell(list)?;
            self.put_u32(key_off, nk::VALUES_LIST, NO_CELL, "nk cell")?;
        } else {
            let bytes: Vec<u8> = offs.iter().flat_map(|o| o.to_le_bytes()).collect();
            self.put(list, 0, &bytes, "values list")?;
        }
        let count = u32::try_from(offs.len()).unwrap_or(u32::MAX);
        self.put_u32(key_off, nk::VALUE_COUNT, count, "nk cell")?;
        self.touch(key_off)?;
        Ok(true)
    }

    // ---- deleting keys -------------------------------------------------------------------

    pub(crate) fn delete_key_inner(&mut self, parts: &[&str]) -> Result<bool> {
        let Some((last, parent_parts)) = parts.split_last() else {
            return Err(usage("the root key cannot be deleted".to_owned()));
        };
        let Some(parent) = self.find(parent_parts)? else {
            return Ok(false);
        };
        let Some(child) = Key::parse(&self.hive, parent)?
            .subkey(last)?
            .map(|k| k.offset())
        else {
            return Ok(false);
        };
        // Gather every cell of the subtree before changing anything; the walk refuses loops
        // and shared subtrees, so no cell is reached twice through key nodes.
        let mut nodes = Vec::new();
        Key::parse(&self.hive, child)?.walk(|_, k| {
            nodes.push(k.offset());
            Ok(())
        })?;
        let mut cells = Vec::new();
        let mut sks = Vec::new();
        for &n in &nodes {
            let k = Key::parse(&self.hive, n)?;
            let vlist = k.values_list_offset();
            let vals = values_list(&self.hive, vlist, k.value_count())?;
            for &v in &vals {
                cells.extend(KeyValue::parse(&self.hive, v)?.data_cells(&self.hive)?);
                cells.push(v);
            }
            if !vals.is_empty() {
                cells.push(vlist);
            }
            let (class, class_len) = k.class();
            if class_len > 0 && class != NO_CELL {
                self.hive.cell(class, "class name cell")?;
                cells.push(class);
            }
            if k.subkey_count() > 0 {
                cells.extend(self.list_cells(k.subkeys_list_offset())?.0);
            }
            cells.push(n);
            sks.push(k.security_offset());
        }
        let mut info = self.read_subkeys(parent)?;
        info.entries.retain(|(o, _)| *o != child);
        self.write_subkeys(parent, &info)?;
        self.touch(parent)?;
        for c in cells {
            self.free_cell(c)?;
        }
        for s in sks {
            self.sk_ref(s, Refs::Release)?;
        }
        Ok(true)
    }
}

/// Checks value data against [`MAX_VALUE_DATA`].
pub(crate) fn check_data(data: &[u8]) -> Result<()> {
    if data.len() > MAX_VALUE_DATA as usize {
        return Err(usage(format!(
            "value data is {} bytes, more than the limit of {MAX_VALUE_DATA}",
            data.len()
        )));
    }
    Ok(())
}
