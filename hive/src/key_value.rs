//! Key values: the values list, "vk" cells, value data and "db" big data (spec "Key values list",
//! "Key value", "Big data").

use std::fmt;

use crate::error::{Error, Result};
use crate::hbin::{file_offset, le_u16, le_u32};
use crate::hive::Hive;
use crate::name;

/// Largest number of values one key may have here (a limit of this library; Windows sets none
/// below available memory, real keys hold at most a few thousand).
pub const MAX_VALUES_PER_KEY: u32 = 1 << 20;
/// Largest value data this library reads (a limit of this library; the largest values in real
/// hives are a few MiB).
pub const MAX_VALUE_DATA: u32 = 64 << 20;
/// Data over this size lives in a "db" big-data record in hives of version 1.4 and later, and each
/// segment holds at most this many bytes (spec "Big data"; Windows' `CM_KEY_VALUE_BIG`).
pub(crate) const BIG_DATA_SEGMENT: u32 = 16344;
/// First minor version that uses big data records.
pub(crate) const BIG_DATA_MIN_MINOR: u32 = 4;
/// The data-size bit meaning "data of at most 4 bytes is stored in the data offset field".
pub(crate) const DATA_INLINE: u32 = 0x8000_0000;
/// Fixed part of a "vk" record before its name.
pub(crate) const VK_FIXED: usize = 20;
/// "vk" flag: the name is stored one byte per character.
pub(crate) const VK_COMP_NAME: u16 = 0x0001;

/// The type of a value's data (spec "Data types"). Unknown numbers are kept as they are: device
/// property keys use types such as `0xffff0012`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `REG_NONE` (0).
    None,
    /// `REG_SZ` (1): a NUL-terminated UTF-16LE string.
    Sz,
    /// `REG_EXPAND_SZ` (2): a UTF-16LE string with `%VARIABLES%`.
    ExpandSz,
    /// `REG_BINARY` (3).
    Binary,
    /// `REG_DWORD` (4): little-endian u32.
    Dword,
    /// `REG_DWORD_BIG_ENDIAN` (5).
    DwordBigEndian,
    /// `REG_LINK` (6): a UTF-16LE registry path, used by symbolic-link keys.
    Link,
    /// `REG_MULTI_SZ` (7): UTF-16LE strings, each NUL-terminated, then an empty one.
    MultiSz,
    /// `REG_RESOURCE_LIST` (8).
    ResourceList,
    /// `REG_FULL_RESOURCE_DESCRIPTOR` (9).
    FullResourceDescriptor,
    /// `REG_RESOURCE_REQUIREMENTS_LIST` (10).
    ResourceRequirementsList,
    /// `REG_QWORD` (11): little-endian u64.
    Qword,
    /// Any other type number.
    Other(u32),
}

impl ValueType {
    /// Maps a type number from a "vk" record.
    #[must_use]
    pub fn from_raw(raw: u32) -> Self {
        match raw {
            0 => Self::None,
            1 => Self::Sz,
            2 => Self::ExpandSz,
            3 => Self::Binary,
            4 => Self::Dword,
            5 => Self::DwordBigEndian,
            6 => Self::Link,
            7 => Self::MultiSz,
            8 => Self::ResourceList,
            9 => Self::FullResourceDescriptor,
            10 => Self::ResourceRequirementsList,
            11 => Self::Qword,
            n => Self::Other(n),
        }
    }

    /// The type number as stored in the hive.
    #[must_use]
    pub fn raw(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Sz => 1,
            Self::ExpandSz => 2,
            Self::Binary => 3,
            Self::Dword => 4,
            Self::DwordBigEndian => 5,
            Self::Link => 6,
            Self::MultiSz => 7,
            Self::ResourceList => 8,
            Self::FullResourceDescriptor => 9,
            Self::ResourceRequirementsList => 10,
            Self::Qword => 11,
            Self::Other(n) => n,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::None => "REG_NONE",
            Self::Sz => "REG_SZ",
            Self::ExpandSz => "REG_EXPAND_SZ",
            Self::Binary => "REG_BINARY",
            Self::Dword => "REG_DWORD",
            Self::DwordBigEndian => "REG_DWORD_BIG_ENDIAN",
            Self::Link => "REG_LINK",
            Self::MultiSz => "REG_MULTI_SZ",
            Self::ResourceList => "REG_RESOURCE_LIST",
            Self::FullResourceDescriptor => "REG_FULL_RESOURCE_DESCRIPTOR",
            Self::ResourceRequirementsList => "REG_RESOURCE_REQUIREMENTS_LIST",
            Self::Qword => "REG_QWORD",
            Self::Other(n) => return write!(f, "type {n:#x}"),
        };
        f.write_str(name)
    }
}

/// One value of a key: its name (empty for the default value), type and raw data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The name; the empty string is the key's default value (`@` in .reg files).
    pub name: String,
    /// The data type.
    pub kind: ValueType,
    /// The data, exactly as stored.
    pub data: Vec<u8>,
}

/// Splits UTF-16LE data at NULs.
fn utf16_units(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

impl Value {
    /// The string of a `REG_SZ`, `REG_EXPAND_SZ` or `REG_LINK` value, up to its first NUL
    /// (unterminated data is accepted; invalid UTF-16 becomes U+FFFD). `None` for other types.
    #[must_use]
    pub fn as_string(&self) -> Option<String> {
        match self.kind {
            ValueType::Sz | ValueType::ExpandSz | ValueType::Link => {
                let units = utf16_units(&self.data);
                let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
                Some(String::from_utf16_lossy(
                    units.get(..end).unwrap_or_default(),
                ))
            }
            _ => None,
        }
    }

    /// The strings of a `REG_MULTI_SZ` value, up to the first empty string. `None` for other types.
    #[must_use]
    pub fn as_multi_string(&self) -> Option<Vec<String>> {
        if self.kind != ValueType::MultiSz {
            return None;
        }
        let units = utf16_units(&self.data);
        Some(
            units
                .split(|&u| u == 0)
                .take_while(|s| !s.is_empty())
                .map(String::from_utf16_lossy)
                .collect(),
        )
    }

    /// The number of a `REG_DWORD` (little-endian) or `REG_DWORD_BIG_ENDIAN` value whose data is
    /// exactly 4 bytes. `None` otherwise.
    #[must_use]
    pub fn as_dword(&self) -> Option<u32> {
        let b: [u8; 4] = self.data.as_slice().try_into().ok()?;
        match self.kind {
            ValueType::Dword => Some(u32::from_le_bytes(b)),
            ValueType::DwordBigEndian => Some(u32::from_be_bytes(b)),
            _ => None,
        }
    }

    /// The number of a `REG_QWORD` value whose data is exactly 8 bytes. `None` otherwise.
    #[must_use]
    pub fn as_qword(&self) -> Option<u64> {
        let b: [u8; 8] = self.data.as_slice().try_into().ok()?;
        (self.kind == ValueType::Qword).then(|| u64::from_le_bytes(b))
    }
}

/// Reads the value offsets of a values list.
pub(crate) fn values_list(hive: &Hive, list: u32, count: u32) -> Result<Vec<u32>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_VALUES_PER_KEY {
        return Err(Error::unsupported(
            "key values",
            format!("{count} values in one key, more than the limit of {MAX_VALUES_PER_KEY}"),
        ));
    }
    let cell = hive.cell(list, "values list")?;
    let need = count as usize * 4;
    let Some(bytes) = cell.get(..need) else {
        return Err(Error::corrupt(
            "values list",
            file_offset(list),
            format!(
                "{count} entries need {need} bytes, the cell holds {}",
                cell.len()
            ),
        ));
    };
    let offsets: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut seen = std::collections::HashSet::with_capacity(offsets.len());
    if let Some(dup) = offsets.iter().find(|o| !seen.insert(**o)) {
        return Err(Error::corrupt(
            "values list",
            file_offset(list),
            format!("value {dup:#x} is listed twice"),
        ));
    }
    Ok(offsets)
}

/// A parsed "vk" record, data not yet read.
pub(crate) struct KeyValue {
    pub(crate) name: String,
    pub(crate) kind: ValueType,
    data_size: u32,
    data_offset: u32,
    offset: u32,
}

impl KeyValue {
    pub(crate) fn parse(hive: &Hive, off: u32) -> Result<Self> {
        let cell = hive.cell(off, "vk cell")?;
        let fo = file_offset(off);
        let bad = |detail: String| Error::corrupt("vk cell", fo, detail);
        if cell.len() < VK_FIXED {
            return Err(bad(format!(
                "cell holds {} bytes, less than 20",
                cell.len()
            )));
        }
        if cell.get(..2) != Some(b"vk".as_slice()) {
            return Err(bad(format!(
                "signature {:02x?} is not \"vk\"",
                cell.get(..2).unwrap_or_default()
            )));
        }
        let name_len = le_u16(cell, 2).unwrap_or(0);
        let data_size = le_u32(cell, 4).unwrap_or(0);
        let data_offset = le_u32(cell, 8).unwrap_or(0);
        let kind = ValueType::from_raw(le_u32(cell, 12).unwrap_or(0));
        let flags = le_u16(cell, 16).unwrap_or(0);
        let Some(raw_name) = cell.get(VK_FIXED..VK_FIXED + usize::from(name_len)) else {
            return Err(bad(format!(
                "name length {name_len} runs past the {}-byte cell",
                cell.len()
            )));
        };
        Ok(Self {
            name: name::decode(raw_name, flags & VK_COMP_NAME != 0),
            kind,
            data_size,
            data_offset,
            offset: off,
        })
    }

    /// Reads the value's data.
    pub(crate) fn data(&self, hive: &Hive) -> Result<Vec<u8>> {
        let fo = file_offset(self.offset);
        if self.data_size & DATA_INLINE != 0 {
            let len = self.data_size & !DATA_INLINE;
            if len > 4 {
                return Err(Error::corrupt(
                    "vk cell",
                    fo,
                    format!("inline data size {len} is over 4"),
                ));
            }
            return Ok(self.data_offset.to_le_bytes()[..len as usize].to_vec());
        }
        let len = self.data_size;
        if len == 0 {
            return Ok(Vec::new());
        }
        let limit = MAX_VALUE_DATA.min(hive.base_block().hive_bins_data_size);
        if len > limit {
            return Err(Error::corrupt(
                "vk cell",
                fo,
                format!("data size {len} is over the limit of {limit} (the hive's size or 64 MiB)"),
            ));
        }
        let cell = hive.cell(self.data_offset, "value data cell")?;
        if len > BIG_DATA_SEGMENT && hive.base_block().minor_version >= BIG_DATA_MIN_MINOR {
            // Windows always uses a "db" record here, but libhivex writes big values into one
            // cell; a cell large enough for the data cannot be a "db" record, so accept it.
            let is_db = cell.get(..2) == Some(b"db".as_slice());
            if is_db || cell.len() < len as usize {
                return big_data(hive, self.data_offset, len);
            }
        }
        cell.get(..len as usize).map(<[u8]>::to_vec).ok_or_else(|| {
            Error::corrupt(
                "value data cell",
                file_offset(self.data_offset),
                format!("data size {len} is more than the {}-byte cell", cell.len()),
            )
        })
    }

    /// The cells holding this value's data (none for inline or empty data; the data cell; or
    /// the "db" record, its segment list and the segments that hold data), for the writer
    /// to free. Follows the same rules as [`KeyValue::data`].
    pub(crate) fn data_cells(&self, hive: &Hive) -> Result<Vec<u32>> {
        if self.data_size & DATA_INLINE != 0 || self.data_size == 0 {
            return Ok(Vec::new());
        }
        let len = self.data_size;
        let cell = hive.cell(self.data_offset, "value data cell")?;
        if len > BIG_DATA_SEGMENT && hive.base_block().minor_version >= BIG_DATA_MIN_MINOR {
            let is_db = cell.get(..2) == Some(b"db".as_slice());
            if is_db || cell.len() < len as usize {
                let fo = file_offset(self.data_offset);
                let short = || Error::corrupt("db cell", fo, "cell shorter than 8 bytes");
                let list = le_u32(cell, 4).ok_or_else(short)?;
                let list_cell = hive.cell(list, "db segment list")?;
                let needed = len.div_ceil(BIG_DATA_SEGMENT) as usize;
                let mut out = vec![self.data_offset, list];
                // At most 65535 segments (`needed` was checked against a u16 count on read).
                for i in 0..needed {
                    let seg = le_u32(list_cell, i * 4).ok_or_else(|| {
                        Error::corrupt(
                            "db segment list",
                            file_offset(list),
                            format!(
                                "{needed} entries do not fit the {}-byte cell",
                                list_cell.len()
                            ),
                        )
                    })?;
                    hive.cell(seg, "db segment")?;
                    out.push(seg);
                }
                return Ok(out);
            }
        }
        Ok(vec![self.data_offset])
    }

    pub(crate) fn into_value(self, hive: &Hive) -> Result<Value> {
        let data = self.data(hive)?;
        Ok(Value {
            name: self.name,
            kind: self.kind,
            data,
        })
    }
}

/// Reads `len` bytes through a "db" record at `off`.
fn big_data(hive: &Hive, off: u32, len: u32) -> Result<Vec<u8>> {
    let fo = file_offset(off);
    let cell = hive.cell(off, "db cell")?;
    if cell.get(..2) != Some(b"db".as_slice()) {
        return Err(Error::corrupt(
            "db cell",
            fo,
            format!(
                "signature {:02x?} is not \"db\"",
                cell.get(..2).unwrap_or_default()
            ),
        ));
    }
    let count = le_u16(cell, 2)
        .ok_or_else(|| Error::corrupt("db cell", fo, "cell shorter than 8 bytes"))?;
    let list = le_u32(cell, 4)
        .ok_or_else(|| Error::corrupt("db cell", fo, "cell shorter than 8 bytes"))?;
    let needed = len.div_ceil(BIG_DATA_SEGMENT);
    if u32::from(count) < needed {
        return Err(Error::corrupt(
            "db cell",
            fo,
            format!("{count} segments cannot hold {len} bytes (need {needed})"),
        ));
    }
    let list_cell = hive.cell(list, "db segment list")?;
    let mut out = Vec::with_capacity(len as usize);
    // Only the segments that hold data are read: `needed` ≤ 65535 iterations.
    for i in 0..needed as usize {
        let seg = le_u32(list_cell, i * 4).ok_or_else(|| {
            Error::corrupt(
                "db segment list",
                file_offset(list),
                format!(
                    "{needed} entries do not fit the {}-byte cell",
                    list_cell.len()
                ),
            )
        })?;
        let want = (len as usize - out.len()).min(BIG_DATA_SEGMENT as usize);
        let seg_cell = hive.cell(seg, "db segment")?;
        let part = seg_cell.get(..want).ok_or_else(|| {
            Error::corrupt(
                "db segment",
                file_offset(seg),
                format!("segment holds {} bytes, {want} needed", seg_cell.len()),
            )
        })?;
        out.extend_from_slice(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(kind: ValueType, data: &[u8]) -> Value {
        Value {
            name: String::new(),
            kind,
            data: data.to_vec(),
        }
    }

    #[test]
    fn typed_accessors() {
        assert_eq!(v(ValueType::Dword, &[10, 0, 0, 0]).as_dword(), Some(10));
        assert_eq!(
            v(ValueType::DwordBigEndian, &[0, 0, 0, 10]).as_dword(),
            Some(10)
        );
        assert_eq!(v(ValueType::Dword, &[10, 0, 0]).as_dword(), None);
        assert_eq!(v(ValueType::Binary, &[10, 0, 0, 0]).as_dword(), None);
        assert_eq!(
            v(ValueType::Qword, &[1, 0, 0, 0, 0, 0, 0, 1]).as_qword(),
            Some(1 | 1 << 56)
        );
        assert_eq!(v(ValueType::Qword, &[1]).as_qword(), None);
        assert_eq!(
            v(ValueType::Sz, b"h\0i\0\0\0").as_string().as_deref(),
            Some("hi")
        );
        assert_eq!(
            v(ValueType::ExpandSz, b"h\0i\0").as_string().as_deref(),
            Some("hi")
        );
        assert_eq!(
            v(ValueType::Sz, b"h\0\0\0x\0").as_string().as_deref(),
            Some("h")
        );
        assert_eq!(v(ValueType::Binary, b"h\0").as_string(), None);
        assert_eq!(
            v(ValueType::MultiSz, b"a\0\0\0b\0c\0\0\0\0\0").as_multi_string(),
            Some(vec!["a".to_owned(), "bc".to_owned()])
        );
        assert_eq!(v(ValueType::MultiSz, b"").as_multi_string(), Some(vec![]));
        assert_eq!(v(ValueType::Sz, b"").as_multi_string(), None);
    }

    #[test]
    fn type_numbers_round_trip() {
        for n in (0..=12).chain([0xffff_0012, 0x1000_0000]) {
            assert_eq!(ValueType::from_raw(n).raw(), n);
        }
        assert_eq!(ValueType::from_raw(7), ValueType::MultiSz);
        assert_eq!(
            ValueType::from_raw(0xffff_0012).to_string(),
            "type 0xffff0012"
        );
        assert_eq!(ValueType::Qword.to_string(), "REG_QWORD");
    }
}
