//! A small, bounded, read-only ISO 9660 (ECMA-119) reader with Joliet names.
//!
//! Why not the `cdfs` crate: it pulls in `fuser`, whose build script needs the libfuse
//! development files (absent here and on most build hosts), plus `clap` and a logger, into a
//! library; and its directory walk has `unimplemented!` and unchecked indexing on image bytes.
//! A virtio-win ISO needs only directory listing and whole-file reads, which fit in this file
//! with every length checked (house style S11, S12).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Error, Result};

/// The logical sector size; ECMA-119 §6.1.2 allows others, but every ISO in use has 2048.
pub(crate) const SECTOR: u64 = 2048;
/// The volume descriptor set starts at sector 16 (ECMA-119 §6.2.1, after the system area).
const FIRST_DESCRIPTOR_SECTOR: u64 = 16;
/// The standard identifier of every volume descriptor (ECMA-119 §8.1.2).
pub(crate) const STANDARD_ID: &[u8; 5] = b"CD001";
/// Byte offset of the standard identifier of the first descriptor, used to recognise an ISO.
pub(crate) const MAGIC_OFFSET: u64 = FIRST_DESCRIPTOR_SECTOR * SECTOR + 1;
/// Our limit on descriptors read before the set terminator (ECMA-119 sets none).
const MAX_DESCRIPTORS: u64 = 32;
/// Volume descriptor types (ECMA-119 §8.1.1).
const VD_PRIMARY: u8 = 1;
const VD_SUPPLEMENTARY: u8 = 2;
const VD_TERMINATOR: u8 = 255;
/// Offset of the root directory record in a primary/supplementary descriptor (ECMA-119 §8.4.18).
const ROOT_RECORD_OFFSET: usize = 156;
/// Offset of the logical block size field (ECMA-119 §8.4.12), both-endian u16.
const BLOCK_SIZE_OFFSET: usize = 128;
/// Offset and length of the escape sequences of a supplementary descriptor (ECMA-119 §8.5.6).
const ESCAPES_OFFSET: usize = 88;
const ESCAPES_LEN: usize = 32;
/// Joliet's UCS-2 escape sequences (levels 1, 2 and 3).
const JOLIET_ESCAPES: [&[u8; 3]; 3] = [b"%/@", b"%/C", b"%/E"];
/// Directory record fields (ECMA-119 §9.1).
const DR_MIN_LEN: usize = 34;
const DR_EXTENT: usize = 2;
const DR_DATA_LEN: usize = 10;
const DR_FLAGS: usize = 25;
const DR_NAME_LEN: usize = 32;
const DR_NAME: usize = 33;
/// File flags (ECMA-119 §9.1.6): bit 1 directory, bit 7 "not the final record of a multi-extent file".
const FLAG_DIRECTORY: u8 = 0x02;
const FLAG_MULTI_EXTENT: u8 = 0x80;
/// Our limit on a directory's size: 256 KiB is about 5,000 entries, far above any virtio-win
/// folder (the root of a full virtio-win ISO has about 30).
const MAX_DIR_BYTES: u32 = 256 << 10;

/// One entry of an ISO directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IsoEntry {
    pub(crate) name: String,
    pub(crate) is_dir: bool,
    pub(crate) extent: u32,
    pub(crate) size: u32,
}

/// Where the image's bytes are.
#[derive(Debug)]
enum IsoData {
    File(File),
    Mem(Vec<u8>),
}

/// An opened ISO image.
#[derive(Debug)]
pub(crate) struct IsoImage {
    data: IsoData,
    len: u64,
    root: IsoEntry,
    joliet: bool,
}

impl IsoImage {
    /// Opens an ISO and finds its root directory, preferring the Joliet tree.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::io(&shown, e))?;
        let len = file.metadata().map_err(|e| Error::io(&shown, e))?.len();
        Self::new(IsoData::File(file), len)
    }

    /// Opens an ISO held in memory.
    pub(crate) fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        Self::new(IsoData::Mem(bytes), len)
    }

    fn new(data: IsoData, len: u64) -> Result<Self> {
        let mut image = Self {
            data,
            len,
            root: IsoEntry {
                name: String::new(),
                is_dir: true,
                extent: 0,
                size: 0,
            },
            joliet: false,
        };
        let mut primary = None;
        let mut joliet = None;
        let mut terminated = false;
        for i in 0..MAX_DESCRIPTORS {
            let at = (FIRST_DESCRIPTOR_SECTOR + i) * SECTOR;
            let mut vd = [0u8; 2048];
            image.read_at(at, &mut vd)?;
            if vd.get(1..6) != Some(&STANDARD_ID[..]) {
                return Err(Error::corrupt_at(
                    "iso volume descriptor",
                    at,
                    "standard identifier is not CD001",
                ));
            }
            match vd[0] {
                VD_TERMINATOR => {
                    terminated = true;
                    break;
                }
                VD_PRIMARY => primary = Some((at, vd)),
                VD_SUPPLEMENTARY => {
                    let esc = vd
                        .get(ESCAPES_OFFSET..ESCAPES_OFFSET + ESCAPES_LEN)
                        .unwrap_or(&[]);
                    if JOLIET_ESCAPES.iter().any(|j| esc.starts_with(&j[..])) {
                        joliet = Some((at, vd));
                    }
                }
                _ => {}
            }
        }
        if !terminated {
            return Err(Error::unsupported(
                "iso",
                format!(
                    "no volume descriptor set terminator in the first {MAX_DESCRIPTORS} descriptors"
                ),
            ));
        }
        let (at, vd, is_joliet) = match (joliet, primary) {
            (Some((at, vd)), _) => (at, vd, true),
            (None, Some((at, vd))) => (at, vd, false),
            (None, None) => {
                return Err(Error::corrupt_at(
                    "iso volume descriptor",
                    FIRST_DESCRIPTOR_SECTOR * SECTOR,
                    "no primary volume descriptor",
                ));
            }
        };
        let block = u16::from_le_bytes([vd[BLOCK_SIZE_OFFSET], vd[BLOCK_SIZE_OFFSET + 1]]);
        if u64::from(block) != SECTOR {
            return Err(Error::unsupported(
                "iso",
                format!("logical block size {block}, only 2048 is supported"),
            ));
        }
        let root_bytes = &vd[ROOT_RECORD_OFFSET..ROOT_RECORD_OFFSET + DR_MIN_LEN];
        let root = parse_root_record(root_bytes, at + 156)?.ok_or_else(|| {
            Error::corrupt_at("iso root directory record", at + 156, "empty root record")
        })?;
        if !root.is_dir {
            return Err(Error::corrupt_at(
                "iso root directory record",
                at + 156,
                "root record is not a directory",
            ));
        }
        image.root = root;
        image.joliet = is_joliet;
        tracing::debug!(joliet = is_joliet, "opened iso");
        Ok(image)
    }

    /// The root directory entry.
    pub(crate) fn root(&self) -> &IsoEntry {
        &self.root
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => {
                return Err(Error::corrupt_at(
                    "iso",
                    offset,
                    format!(
                        "read of {len} bytes passes the end of the {}-byte image",
                        self.len
                    ),
                ));
            }
        }
        match &self.data {
            IsoData::File(f) => f
                .read_exact_at(buf, offset)
                .map_err(|e| Error::io(format!("iso offset {offset:#x}"), e)),
            IsoData::Mem(m) => {
                // In range: checked against `len`, which is `m.len()`, above.
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = start
                    .checked_add(buf.len())
                    .and_then(|end| m.get(start..end))
                    .ok_or_else(|| Error::corrupt_at("iso", offset, "read past the end"))?;
                buf.copy_from_slice(src);
                Ok(())
            }
        }
    }

    /// Lists a directory (without `.` and `..`), at most `max_entries` entries.
    pub(crate) fn list(&self, dir: &IsoEntry, max_entries: usize) -> Result<Vec<IsoEntry>> {
        if !dir.is_dir {
            return Err(Error::Usage(format!("{} is not a directory", dir.name)));
        }
        if dir.size > MAX_DIR_BYTES {
            return Err(Error::unsupported(
                "iso",
                format!("directory of {} bytes, limit {MAX_DIR_BYTES}", dir.size),
            ));
        }
        let start = u64::from(dir.extent) * SECTOR;
        let len = usize::try_from(dir.size).unwrap_or(usize::MAX);
        let mut data = vec![0u8; len];
        self.read_at(start, &mut data)?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let rec_len = usize::from(data[pos]);
            if rec_len == 0 {
                // Records never cross a sector; zero padding runs to the next sector (ECMA-119 §6.8.1.1).
                pos = (pos / 2048 + 1) * 2048;
                continue;
            }
            let at = start + u64::try_from(pos).unwrap_or(u64::MAX);
            let rec = data.get(pos..pos + rec_len).ok_or_else(|| {
                Error::corrupt_at(
                    "iso directory record",
                    at,
                    format!("length {rec_len} passes the end of the directory"),
                )
            })?;
            if let Some(entry) = parse_record(rec, self.joliet, at)? {
                if out.len() >= max_entries {
                    return Err(Error::unsupported(
                        "iso",
                        format!("directory with more than {max_entries} entries"),
                    ));
                }
                out.push(entry);
            }
            pos += rec_len;
        }
        Ok(out)
    }

    /// Reads a whole file of at most `cap` bytes.
    pub(crate) fn read_file(&self, file: &IsoEntry, cap: u64) -> Result<Vec<u8>> {
        if u64::from(file.size) > cap {
            return Err(Error::unsupported(
                "file size",
                format!("{} is {} bytes, limit {cap}", file.name, file.size),
            ));
        }
        let mut data = vec![0u8; usize::try_from(file.size).unwrap_or(usize::MAX)];
        self.read_at(u64::from(file.extent) * SECTOR, &mut data)?;
        Ok(data)
    }
}

/// Parses the root directory record of a volume descriptor, whose identifier is the single
/// byte 0 (ECMA-119 §8.4.18).
fn parse_root_record(rec: &[u8], at: u64) -> Result<Option<IsoEntry>> {
    let mut copy = rec.to_vec();
    // Give it a placeholder name so the shared checks apply; the name is never shown.
    if let (Some(1), Some(name)) = (copy.get(DR_NAME_LEN).copied(), copy.get_mut(DR_NAME)) {
        *name = b'R';
    }
    let mut e = parse_record(&copy, false, at)?;
    if let Some(e) = e.as_mut() {
        e.name = String::new();
    }
    Ok(e)
}

/// Parses one directory record; `None` for the `.` and `..` records.
fn parse_record(rec: &[u8], joliet: bool, at: u64) -> Result<Option<IsoEntry>> {
    if rec.len() < DR_MIN_LEN {
        return Err(Error::corrupt_at(
            "iso directory record",
            at,
            format!("length {} below the minimum {DR_MIN_LEN}", rec.len()),
        ));
    }
    let u32_at = |o: usize| u32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
    let extent = u32_at(DR_EXTENT);
    let size = u32_at(DR_DATA_LEN);
    let flags = rec[DR_FLAGS];
    let name_len = usize::from(rec[DR_NAME_LEN]);
    let raw_name = rec.get(DR_NAME..DR_NAME + name_len).ok_or_else(|| {
        Error::corrupt_at(
            "iso directory record",
            at,
            format!(
                "name length {name_len} passes the record length {}",
                rec.len()
            ),
        )
    })?;
    if raw_name == [0] || raw_name == [1] {
        return Ok(None);
    }
    if flags & FLAG_MULTI_EXTENT != 0 {
        return Err(Error::unsupported("iso", "multi-extent file"));
    }
    let mut name = if joliet {
        if raw_name.len() % 2 != 0 {
            return Err(Error::corrupt_at(
                "iso directory record",
                at,
                format!("joliet name of odd length {name_len}"),
            ));
        }
        let units = raw_name
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]));
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
    } else {
        raw_name.iter().map(|&b| char::from(b)).collect::<String>()
    };
    // Strip the ";1" version suffix (ECMA-119 §7.5.1) and a bare trailing dot.
    if let Some(i) = name.rfind(';') {
        name.truncate(i);
    }
    if name.ends_with('.') {
        name.pop();
    }
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(Error::corrupt_at(
            "iso directory record",
            at,
            format!("bad file identifier {name:?}"),
        ));
    }
    Ok(Some(IsoEntry {
        name,
        is_dir: flags & FLAG_DIRECTORY != 0,
        extent,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &[u8], flags: u8) -> Vec<u8> {
        let len = DR_MIN_LEN - 1 + name.len();
        let len = len + len % 2;
        let mut r = vec![0u8; len];
        r[0] = u8::try_from(len).unwrap();
        r[DR_EXTENT..DR_EXTENT + 4].copy_from_slice(&20u32.to_le_bytes());
        r[DR_DATA_LEN..DR_DATA_LEN + 4].copy_from_slice(&100u32.to_le_bytes());
        r[DR_FLAGS] = flags;
        r[DR_NAME_LEN] = u8::try_from(name.len()).unwrap();
        r[DR_NAME..DR_NAME + name.len()].copy_from_slice(name);
        r
    }

    #[test]
    fn record_names() {
        let e = parse_record(&record(b"VIOSTOR.INF;1", 0), false, 0)
            .unwrap()
            .unwrap();
        assert_eq!(e.name, "VIOSTOR.INF");
        assert!(!e.is_dir);
        assert_eq!(e.extent, 20);
        assert_eq!(e.size, 100);
        let j: Vec<u8> = "2k12R2".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let e = parse_record(&record(&j, FLAG_DIRECTORY), true, 0)
            .unwrap()
            .unwrap();
        assert_eq!(e.name, "2k12R2");
        assert!(e.is_dir);
        assert_eq!(
            parse_record(&record(&[0], FLAG_DIRECTORY), false, 0).unwrap(),
            None
        );
    }

    #[test]
    fn record_errors() {
        let err = parse_record(&[0u8; 10], false, 0x800).unwrap_err();
        let c = err.as_corrupt().unwrap();
        assert_eq!(c.structure(), "iso directory record");
        assert_eq!(c.detail(), "length 10 below the minimum 34");
        let mut r = record(b"A", 0);
        r[DR_NAME_LEN] = 200;
        let err = parse_record(&r, false, 0).unwrap_err();
        assert_eq!(
            err.as_corrupt().unwrap().detail(),
            "name length 200 passes the record length 34"
        );
        let err = parse_record(&record(b"ABC", 0), true, 0).unwrap_err();
        assert_eq!(
            err.as_corrupt().unwrap().detail(),
            "joliet name of odd length 3"
        );
        let err = parse_record(&record(b"A/B", 0), false, 0).unwrap_err();
        assert_eq!(
            err.as_corrupt().unwrap().detail(),
            "bad file identifier \"A/B\""
        );
        let err = parse_record(&record(b"A", FLAG_MULTI_EXTENT), false, 0).unwrap_err();
        assert_eq!(err.to_string(), "unsupported iso: multi-extent file");
    }
}
