//! Key nodes ("nk" cells, spec "Key node") and the [`Key`] handle.

use crate::error::{Error, Result};
use crate::hbin::{file_offset, le_u16, le_u32};
use crate::hive::Hive;
use crate::key_value::{KeyValue, Value, values_list};
use crate::name;
use crate::subkey_list::subkey_offsets;

/// Fixed part of an "nk" record before its name.
pub(crate) const NK_FIXED: usize = 76;
/// Offset of the descriptor size in an "sk" record (after signature, reserved, flink, blink and
/// reference count).
const SK_DESCRIPTOR_SIZE: usize = 16;
/// Fixed part of an "sk" record before the descriptor.
const SK_FIXED: usize = 20;
/// Offsets stored as this value mean "none".
pub(crate) const NO_CELL: u32 = u32::MAX;

/// Key node flags (spec "Key node / Flags").
pub mod flags {
    /// `KEY_VOLATILE`: the key lives in memory only.
    pub const VOLATILE: u16 = 0x0001;
    /// `KEY_HIVE_EXIT`: mount point of another hive.
    pub const HIVE_EXIT: u16 = 0x0002;
    /// `KEY_HIVE_ENTRY`: the root key of this hive.
    pub const HIVE_ENTRY: u16 = 0x0004;
    /// `KEY_NO_DELETE`: the key cannot be deleted.
    pub const NO_DELETE: u16 = 0x0008;
    /// `KEY_SYM_LINK`: the key is a symbolic link (its `SymbolicLinkValue` names the target).
    pub const SYM_LINK: u16 = 0x0010;
    /// `KEY_COMP_NAME`: the name is stored one byte per character.
    pub const COMP_NAME: u16 = 0x0020;
}

/// A Windows FILETIME: 100-ns intervals since 1601-01-01 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileTime(pub u64);

/// FILETIME of the Unix epoch.
pub(crate) const UNIX_EPOCH_FILETIME: u64 = 116_444_736_000_000_000;

impl FileTime {
    /// Seconds since the Unix epoch (negative before 1970).
    #[must_use]
    pub fn unix_seconds(self) -> i64 {
        let secs = |t: u64| i64::try_from(t / 10_000_000).unwrap_or(i64::MAX);
        if self.0 >= UNIX_EPOCH_FILETIME {
            secs(self.0 - UNIX_EPOCH_FILETIME)
        } else {
            -secs(UNIX_EPOCH_FILETIME - self.0)
        }
    }
}

/// A registry key, borrowed from its [`Hive`].
#[derive(Debug, Clone)]
pub struct Key<'h> {
    hive: &'h Hive,
    offset: u32,
    flags: u16,
    last_written: u64,
    subkey_count: u32,
    subkeys_list: u32,
    value_count: u32,
    values_list: u32,
    security: u32,
    class_offset: u32,
    class_len: u16,
    name: String,
}

impl<'h> Key<'h> {
    /// Parses the key node at cell offset `off`.
    pub(crate) fn parse(hive: &'h Hive, off: u32) -> Result<Self> {
        let cell = hive.cell(off, "nk cell")?;
        let fo = file_offset(off);
        let bad = |detail: String| Error::corrupt("nk cell", fo, detail);
        if cell.len() < NK_FIXED {
            return Err(bad(format!(
                "cell holds {} bytes, less than 76",
                cell.len()
            )));
        }
        if cell.get(..2) != Some(b"nk".as_slice()) {
            return Err(bad(format!(
                "signature {:02x?} is not \"nk\"",
                cell.get(..2).unwrap_or_default()
            )));
        }
        // The reads below are within the 76 bytes checked above.
        let u32_at = |at: usize| le_u32(cell, at).unwrap_or(0);
        let flags = le_u16(cell, 2).unwrap_or(0);
        let name_len = le_u16(cell, 72).unwrap_or(0);
        let Some(raw_name) = cell.get(NK_FIXED..NK_FIXED + usize::from(name_len)) else {
            return Err(bad(format!(
                "name length {name_len} runs past the {}-byte cell",
                cell.len()
            )));
        };
        Ok(Self {
            hive,
            offset: off,
            flags,
            last_written: u64::from(u32_at(4)) | (u64::from(u32_at(8)) << 32),
            subkey_count: u32_at(20),
            subkeys_list: u32_at(28),
            value_count: u32_at(36),
            values_list: u32_at(40),
            security: u32_at(44),
            class_offset: u32_at(48),
            class_len: le_u16(cell, 74).unwrap_or(0),
            name: name::decode(raw_name, flags & flags::COMP_NAME != 0),
        })
    }

    /// The key's name (the root key's name is whatever Windows stored, such as `ROOT` or
    /// `CMI-CreateHive{...}`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key node's cell offset, relative to the hive bins data.
    #[must_use]
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// The key node flags (see [`flags`]).
    #[must_use]
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// When the key was last written.
    #[must_use]
    pub fn last_written(&self) -> FileTime {
        FileTime(self.last_written)
    }

    /// The number of subkeys the key node records.
    #[must_use]
    pub fn subkey_count(&self) -> u32 {
        self.subkey_count
    }

    /// The number of values the key node records.
    #[must_use]
    pub fn value_count(&self) -> u32 {
        self.value_count
    }

    /// Offset of the key's "sk" security cell, relative to the hive bins data.
    #[must_use]
    pub fn security_offset(&self) -> u32 {
        self.security
    }

    /// The key's security descriptor (self-relative `SECURITY_DESCRIPTOR` bytes) from its "sk"
    /// cell (spec "Key security").
    ///
    /// # Errors
    /// `Corrupt` if the "sk" cell is missing, has another signature or is shorter than the
    /// descriptor size it records.
    pub fn security_descriptor(&self) -> Result<Vec<u8>> {
        let cell = self.hive.cell(self.security, "sk cell")?;
        let fo = file_offset(self.security);
        if cell.get(..2) != Some(b"sk".as_slice()) {
            return Err(Error::corrupt(
                "sk cell",
                fo,
                format!(
                    "signature {:02x?} is not \"sk\"",
                    cell.get(..2).unwrap_or_default()
                ),
            ));
        }
        let len = le_u32(cell, SK_DESCRIPTOR_SIZE)
            .ok_or_else(|| Error::corrupt("sk cell", fo, "cell shorter than 20 bytes"))?;
        cell.get(SK_FIXED..SK_FIXED.saturating_add(len as usize))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(
                    "sk cell",
                    fo,
                    format!(
                        "descriptor size {len} runs past the {}-byte cell",
                        cell.len()
                    ),
                )
            })
    }

    /// The key's class name, if it has one (a UTF-16LE string in its own cell).
    ///
    /// # Errors
    /// `Corrupt` if the class cell is missing or shorter than the recorded length.
    pub fn class_name(&self) -> Result<Option<String>> {
        if self.class_len == 0 || self.class_offset == NO_CELL {
            return Ok(None);
        }
        let cell = self.hive.cell(self.class_offset, "class name cell")?;
        let raw = cell.get(..usize::from(self.class_len)).ok_or_else(|| {
            Error::corrupt(
                "class name cell",
                file_offset(self.class_offset),
                format!(
                    "class name length {} is more than the {}-byte cell",
                    self.class_len,
                    cell.len()
                ),
            )
        })?;
        Ok(Some(name::utf16le(raw)))
    }

    /// The key's subkeys, in the order of the hive's subkey lists (sorted by upper-cased name).
    ///
    /// # Errors
    /// `Corrupt` if a list or key node is damaged or the count disagrees with the key node;
    /// `Unsupported` if the key has more than [`crate::MAX_SUBKEYS_PER_KEY`] subkeys.
    pub fn subkeys(&self) -> Result<Vec<Key<'h>>> {
        subkey_offsets(self.hive, self.subkeys_list, self.subkey_count)?
            .into_iter()
            .map(|off| Key::parse(self.hive, off))
            .collect()
    }

    /// The subkey called `name`, compared case-insensitively like Windows does.
    ///
    /// # Errors
    /// As for [`Key::subkeys`].
    pub fn subkey(&self, name: &str) -> Result<Option<Key<'h>>> {
        for off in subkey_offsets(self.hive, self.subkeys_list, self.subkey_count)? {
            let key = Key::parse(self.hive, off)?;
            if name::eq(&key.name, name) {
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    /// The key's values, in stored order.
    ///
    /// # Errors
    /// `Corrupt` if the values list, a "vk" cell or its data is damaged; `Unsupported` past the
    /// limits [`crate::MAX_VALUES_PER_KEY`] and [`crate::MAX_VALUE_DATA`].
    pub fn values(&self) -> Result<Vec<Value>> {
        // Every value's data lives in its own cells in an honest hive, so all of one key's
        // data fits in the hive; more means shared cells amplifying a small hive.
        let limit = u64::from(self.hive.base_block().hive_bins_data_size);
        let mut total = 0u64;
        let mut out = Vec::new();
        for off in values_list(self.hive, self.values_list, self.value_count)? {
            let v = KeyValue::parse(self.hive, off)?.into_value(self.hive)?;
            total += v.data.len() as u64;
            if total > limit {
                return Err(Error::corrupt(
                    "values list",
                    file_offset(self.values_list),
                    format!("values hold more than the hive's {limit} bytes of data"),
                ));
            }
            out.push(v);
        }
        Ok(out)
    }

    /// The value called `name` (case-insensitive); the empty name is the default value.
    ///
    /// # Errors
    /// As for [`Key::values`], but only the matching value's data is read.
    pub fn value(&self, name: &str) -> Result<Option<Value>> {
        for off in values_list(self.hive, self.values_list, self.value_count)? {
            let vk = KeyValue::parse(self.hive, off)?;
            if name::eq(&vk.name, name) {
                return vk.into_value(self.hive).map(Some);
            }
        }
        Ok(None)
    }

    /// The hive this key belongs to.
    #[must_use]
    pub fn hive(&self) -> &'h Hive {
        self.hive
    }

    /// Offset of the subkey list (or [`NO_CELL`]).
    pub(crate) fn subkeys_list_offset(&self) -> u32 {
        self.subkeys_list
    }

    /// Offset of the values list (or [`NO_CELL`]).
    pub(crate) fn values_list_offset(&self) -> u32 {
        self.values_list
    }

    /// Offset of the class name cell and the class name length.
    pub(crate) fn class(&self) -> (u32, u16) {
        (self.class_offset, self.class_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_to_unix() {
        assert_eq!(FileTime(UNIX_EPOCH_FILETIME).unix_seconds(), 0);
        assert_eq!(FileTime(UNIX_EPOCH_FILETIME + 10_000_000).unix_seconds(), 1);
        assert_eq!(FileTime(0).unix_seconds(), -11_644_473_600);
    }
}
