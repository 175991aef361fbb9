//! The transaction layer: every write to a guest disk goes through a write-ahead undo journal.
//!
//! Before the first write to any block, the block's original bytes are appended to an *undo
//! file* and made durable (`fdatasync`); only then is the device written. So at every instant the
//! undo file holds the original content of every block that may have changed, and:
//!
//! - a run that dies half-way (crash, SIGKILL, power loss) is rolled back on the next open by
//!   [`recover`], leaving the device byte-for-byte as it was;
//! - a committed run keeps its undo file, so [`undo`] restores the original until the user
//!   discards it;
//! - a damaged undo file is reported ([`Error::Corrupt`] naming the record), never applied blindly.
//!   The one tolerated defect is a torn *last* record: it was being appended when the process
//!   died, so the device write it protected never started.
//!
//! # Undo file format (version 1, all integers little-endian)
//!
//! ```text
//! header (32 bytes): magic "RHUNDO01" | version u32 = 1 | block_size u32 | device_size u64
//!                    | reserved u32 = 0 | crc32 of the preceding 28 bytes
//! record:            kind u8 | offset u64 | len u32 | crc32 u32 (of kind, offset, len, data) | data[len]
//!                    kind 1 = original data of [offset, offset+len)
//!                    kind 2 = commit (len 0): the transaction completed
//!                    kind 3 = rolled back (len 0): the originals were written back
//! ```

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::block::{BlockRead, BlockWrite, Extent, ZeroMode, check_range};
use crate::{Error, Result};

/// Magic at the start of an undo file.
const MAGIC: &[u8; 8] = b"RHUNDO01";
/// Undo file format version.
const VERSION: u32 = 1;
/// Size of the header.
const HEADER_LEN: usize = 32;
/// Size of a record header (kind, offset, len, crc).
const RECORD_HEADER_LEN: usize = 1 + 8 + 4 + 4;
/// Default granularity of saved originals. Large enough that a fixup touching a few hundred
/// metadata blocks makes few records, small enough that the undo file stays small.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 * 1024;
/// Largest block size accepted from an undo file (house style S12).
const MAX_BLOCK_SIZE: u32 = 16 << 20;

const KIND_DATA: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_ROLLED_BACK: u8 = 3;

/// Where a transaction stands, as its undo file records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Writes may have happened and no commit was recorded: a crashed or running transaction.
    Open,
    /// The transaction completed; the undo file can restore the original.
    Committed,
    /// The originals were written back; the device is as it was before the transaction.
    RolledBack,
}

/// A summary of an undo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndoInfo {
    /// Where the transaction stands.
    pub state: State,
    /// Number of saved original blocks.
    pub records: usize,
    /// Bytes of original data saved.
    pub saved_bytes: u64,
    /// Size of the device when the transaction began.
    pub device_size: u64,
    /// Granularity of the saved originals.
    pub block_size: u32,
    /// True if a torn last record was found and ignored (the process died while appending it).
    pub torn_tail: bool,
}

/// The undo file that belongs to an image file: `IMAGE.rehost-undo` next to it.
#[must_use]
pub fn undo_path_for(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".rehost-undo");
    image.with_file_name(name)
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        offset: 0,
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    }
}

fn record_crc(kind: u8, offset: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[kind]);
    h.update(&offset.to_le_bytes());
    h.update(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    h.update(data);
    h.finalize()
}

fn encode_record(kind: u8, offset: u64, data: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(data.len())
        .map_err(|_| Error::Usage(format!("undo record of {} bytes is too large", data.len())))?;
    let mut v = Vec::with_capacity(RECORD_HEADER_LEN + data.len());
    v.push(kind);
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&record_crc(kind, offset, data).to_le_bytes());
    v.extend_from_slice(data);
    Ok(v)
}

fn encode_header(block_size: u32, device_size: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&block_size.to_le_bytes());
    h[16..24].copy_from_slice(&device_size.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A parsed undo file.
#[derive(Debug)]
struct Parsed {
    block_size: u32,
    device_size: u64,
    /// (offset, data) of every original block, in file order.
    data: Vec<(u64, Vec<u8>)>,
    state: State,
    torn_tail: bool,
    /// Bytes of the file up to the end of the last intact record.
    valid_len: u64,
}

fn corrupt(offset: u64, detail: impl Into<String>) -> Error {
    Error::corrupt("undo file", offset, detail)
}

fn parse(bytes: &[u8]) -> Result<Parsed> {
    let h = bytes.get(..HEADER_LEN).ok_or_else(|| {
        corrupt(
            0,
            format!("{} bytes is shorter than the header", bytes.len()),
        )
    })?;
    if &h[0..8] != MAGIC {
        return Err(corrupt(0, "bad magic (not a rehost undo file)"));
    }
    let word = |r: std::ops::Range<usize>| -> u32 {
        // OK to unwrap: the header slice is HEADER_LEN bytes and every range is 4 bytes in it.
        u32::from_le_bytes(h[r].try_into().unwrap_or([0; 4]))
    };
    if word(28..32) != crc32fast::hash(&h[0..28]) {
        return Err(corrupt(28, "header checksum mismatch"));
    }
    let version = word(8..12);
    if version != VERSION {
        return Err(Error::unsupported("undo file version", version.to_string()));
    }
    let block_size = word(12..16);
    if block_size == 0 || block_size > MAX_BLOCK_SIZE {
        return Err(corrupt(
            12,
            format!("block_size {block_size} out of range 1..={MAX_BLOCK_SIZE}"),
        ));
    }
    let device_size = u64::from_le_bytes(h[16..24].try_into().unwrap_or([0; 8]));
    let mut p = Parsed {
        block_size,
        device_size,
        data: Vec::new(),
        state: State::Open,
        torn_tail: false,
        valid_len: HEADER_LEN as u64,
    };
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let pos = at as u64;
        // After a power loss some filesystems leave the unwritten tail of an append as zeroes.
        if bytes
            .get(at..)
            .is_some_and(|rest| rest.iter().all(|&b| b == 0))
        {
            p.torn_tail = true;
            break;
        }
        let Some(rh) = bytes.get(at..at + RECORD_HEADER_LEN) else {
            p.torn_tail = true;
            break;
        };
        let kind = rh[0];
        let offset = u64::from_le_bytes(rh[1..9].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(rh[9..13].try_into().unwrap_or([0; 4]));
        let crc = u32::from_le_bytes(rh[13..17].try_into().unwrap_or([0; 4]));
        if len > block_size {
            return Err(corrupt(
                pos,
                format!("record length {len} exceeds block_size {block_size}"),
            ));
        }
        let start = at + RECORD_HEADER_LEN;
        // OK: len <= block_size <= 16 MiB, so this cannot overflow usize.
        let end = start + len as usize;
        let Some(data) = bytes.get(start..end) else {
            p.torn_tail = true;
            break;
        };
        if record_crc(kind, offset, data) != crc {
            if end == bytes.len() {
                // The last record was being written when the process died.
                p.torn_tail = true;
                break;
            }
            return Err(corrupt(pos, "record checksum mismatch"));
        }
        match kind {
            KIND_DATA => {
                if offset
                    .checked_add(u64::from(len))
                    .is_none_or(|e| e > device_size)
                {
                    return Err(corrupt(
                        pos,
                        format!("record {offset:#x}+{len} is past the {device_size}-byte device"),
                    ));
                }
                if p.state != State::Open {
                    return Err(corrupt(pos, "data record after the transaction ended"));
                }
                p.data.push((offset, data.to_vec()));
            }
            KIND_COMMIT => p.state = State::Committed,
            KIND_ROLLED_BACK => p.state = State::RolledBack,
            other => return Err(corrupt(pos, format!("unknown record kind {other}"))),
        }
        at = end;
        p.valid_len = at as u64;
    }
    Ok(p)
}

fn read_undo(path: &Path) -> Result<Parsed> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_err(path, e))?;
    parse(&bytes)
}

/// Reads and checks an undo file without touching any device.
///
/// # Errors
/// [`Error::Io`] if it cannot be read; [`Error::Corrupt`] naming the damaged record.
pub fn info(undo_file: &Path) -> Result<UndoInfo> {
    let p = read_undo(undo_file)?;
    Ok(UndoInfo {
        state: p.state,
        records: p.data.len(),
        saved_bytes: p.data.iter().map(|(_, d)| d.len() as u64).sum(),
        device_size: p.device_size,
        block_size: p.block_size,
        torn_tail: p.torn_tail,
    })
}

fn append(file: &mut File, path: &Path, rec: &[u8]) -> Result<()> {
    file.write_all(rec)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_err(path, e))
}

fn rollback<D: BlockWrite + ?Sized>(dev: &D, path: &Path, p: &Parsed) -> Result<()> {
    if dev.size() != p.device_size {
        return Err(Error::Usage(format!(
            "undo file {} was made for a {}-byte device, this one has {} bytes",
            path.display(),
            p.device_size,
            dev.size()
        )));
    }
    // Each block is saved once, before its first change, so the order does not matter; reverse
    // order keeps the rule simple if that ever changes.
    for (offset, data) in p.data.iter().rev() {
        dev.write_all_at(*offset, data)?;
    }
    dev.flush()?;
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    // Cut a torn last record off first, or the new record would be read as its missing tail.
    f.set_len(p.valid_len).map_err(|e| io_err(path, e))?;
    append(&mut f, path, &encode_record(KIND_ROLLED_BACK, 0, &[])?)
}

/// What [`recover`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No undo file: nothing to do.
    Clean,
    /// The last transaction had committed (or was already rolled back): nothing to do.
    Settled(State),
    /// An interrupted transaction was rolled back; the device is as it was before it.
    RolledBack {
        /// Blocks written back.
        blocks: usize,
    },
}

/// Rolls back an interrupted transaction, if the undo file shows one. Call before opening a
/// device for writing.
///
/// # Errors
/// [`Error::Corrupt`] for a damaged undo file (nothing is written then); device errors.
pub fn recover<D: BlockWrite + ?Sized>(dev: &D, undo_file: &Path) -> Result<Recovery> {
    if !undo_file.exists() {
        return Ok(Recovery::Clean);
    }
    let p = read_undo(undo_file)?;
    match p.state {
        State::Open => {
            rollback(dev, undo_file, &p)?;
            Ok(Recovery::RolledBack {
                blocks: p.data.len(),
            })
        }
        s => Ok(Recovery::Settled(s)),
    }
}

/// Restores the device to its state before the transaction recorded in `undo_file`, committed or
/// not (the undo file is kept, marked rolled back; undoing twice is harmless).
///
/// # Errors
/// [`Error::Corrupt`] for a damaged undo file (nothing is written then); device errors.
pub fn undo<D: BlockWrite + ?Sized>(dev: &D, undo_file: &Path) -> Result<usize> {
    let p = read_undo(undo_file)?;
    rollback(dev, undo_file, &p)?;
    Ok(p.data.len())
}

struct Journal {
    file: File,
    saved: BTreeSet<u64>,
}

/// A device whose every write is protected by the undo journal (see the module docs).
pub struct Transaction<D: ?Sized> {
    path: PathBuf,
    block_size: u64,
    journal: Mutex<Journal>,
    inner: std::sync::Arc<D>,
}

impl<D: BlockWrite + ?Sized> Transaction<D> {
    /// Starts a transaction on `dev`, journaling to `undo_file`.
    ///
    /// An existing undo file is refused unless it records a settled transaction (committed or
    /// rolled back), in which case it is replaced: run [`recover`] first after a crash.
    ///
    /// # Errors
    /// [`Error::Usage`] when an open transaction's undo file exists; I/O errors.
    pub fn begin(dev: std::sync::Arc<D>, undo_file: &Path) -> Result<Self> {
        Self::begin_with_block_size(dev, undo_file, DEFAULT_BLOCK_SIZE)
    }

    /// As [`Transaction::begin`], with a chosen granularity for saved blocks.
    ///
    /// # Errors
    /// As [`Transaction::begin`]; [`Error::Usage`] for a block size of 0 or above 16 MiB.
    pub fn begin_with_block_size(
        dev: std::sync::Arc<D>,
        undo_file: &Path,
        block_size: u32,
    ) -> Result<Self> {
        if block_size == 0 || block_size > MAX_BLOCK_SIZE {
            return Err(Error::Usage(format!(
                "undo block size {block_size} out of range 1..={MAX_BLOCK_SIZE}"
            )));
        }
        if undo_file.exists() {
            let p = read_undo(undo_file)?;
            if p.state == State::Open {
                return Err(Error::Usage(format!(
                    "{} records an unfinished transaction; recover or undo it first",
                    undo_file.display()
                )));
            }
        }
        // Write the new file under a temporary name and rename it, so a crash never leaves a
        // half-written header in place of a settled undo file.
        let tmp = undo_file.with_extension("rehost-undo.tmp");
        let mut f = File::create(&tmp).map_err(|e| io_err(&tmp, e))?;
        f.write_all(&encode_header(block_size, dev.size()))
            .and_then(|()| f.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        std::fs::rename(&tmp, undo_file).map_err(|e| io_err(undo_file, e))?;
        if let Some(dir) = undo_file.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err(dir, e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(undo_file)
            .map_err(|e| io_err(undo_file, e))?;
        Ok(Self {
            path: undo_file.to_path_buf(),
            block_size: u64::from(block_size),
            journal: Mutex::new(Journal {
                file,
                saved: BTreeSet::new(),
            }),
            inner: dev,
        })
    }

    /// The undo file.
    #[must_use]
    pub fn undo_file(&self) -> &Path {
        &self.path
    }

    /// Saves the originals of every not-yet-saved block in `offset..offset+len`.
    fn preserve(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let size = self.inner.size();
        check_range(size, offset, len)?;
        let first = offset / self.block_size;
        let last = (offset + len - 1) / self.block_size;
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        for b in first..=last {
            if j.saved.contains(&b) {
                continue;
            }
            let start = b * self.block_size;
            let n = self.block_size.min(size - start);
            let mut data =
                vec![0u8; usize::try_from(n).map_err(|_| Error::Usage("block too large".into()))?];
            self.inner.read_exact_at(start, &mut data)?;
            let rec = encode_record(KIND_DATA, start, &data)?;
            append(&mut j.file, &self.path, &rec)?;
            j.saved.insert(b);
        }
        Ok(())
    }

    /// Completes the transaction: flushes the device, then records the commit durably. The undo
    /// file stays, so [`undo`] can still restore the original.
    ///
    /// # Errors
    /// Device or journal I/O errors (the transaction then stays open and [`recover`] rolls it back).
    pub fn commit(self) -> Result<UndoInfo> {
        self.inner.flush()?;
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        append(
            &mut j.file,
            &self.path,
            &encode_record(KIND_COMMIT, 0, &[])?,
        )?;
        drop(j);
        info(&self.path)
    }

    /// Abandons the transaction and writes every original back now.
    ///
    /// # Errors
    /// Device or journal I/O errors.
    pub fn rollback(self) -> Result<usize> {
        undo(&*self.inner, &self.path)
    }
}

impl<D: BlockWrite + ?Sized> BlockRead for Transaction<D> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact_at(offset, buf)
    }
    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
}

impl<D: BlockWrite + ?Sized> BlockWrite for Transaction<D> {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.preserve(offset, buf.len() as u64)?;
        self.inner.write_all_at(offset, buf)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        self.preserve(offset, len)?;
        self.inner.write_zeroes(offset, len, mode)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // Discarded contents are unspecified, so they must be restorable too.
        self.preserve(offset, len)?;
        self.inner.discard(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mem::MemDisk;

    fn disk() -> Arc<MemDisk> {
        Arc::new(MemDisk::from_vec(
            (0..200_000u32).map(|i| (i % 251) as u8).collect(),
        ))
    }

    #[test]
    fn commit_then_undo_restores_original() {
        let dir = tempfile::tempdir().unwrap();
        let undo_file = dir.path().join("u");
        let d = disk();
        let original = d.to_vec();
        let t = Transaction::begin_with_block_size(d.clone(), &undo_file, 4096).unwrap();
        t.write_all_at(100, &[0xaa; 10_000]).unwrap();
        t.write_all_at(150_000, &[0xbb; 3]).unwrap();
        t.write_zeroes(199_990, 10, ZeroMode::MayUnmap).unwrap();
        let i = t.commit().unwrap();
        assert_eq!(i.state, State::Committed);
        // 100..10100 touches blocks 0..=2; 150000 block 36; 199990.. block 48 (partial, 3392 bytes).
        assert_eq!(i.records, 5);
        assert_eq!(i.saved_bytes, 4 * 4096 + (200_000 - 48 * 4096));
        assert_ne!(d.to_vec(), original);
        assert_eq!(
            recover(&*d, &undo_file).unwrap(),
            Recovery::Settled(State::Committed)
        );
        assert_eq!(undo(&*d, &undo_file).unwrap(), 5);
        assert_eq!(d.to_vec(), original);
        assert_eq!(info(&undo_file).unwrap().state, State::RolledBack);
        // Undoing twice is harmless.
        undo(&*d, &undo_file).unwrap();
        assert_eq!(d.to_vec(), original);
    }

    #[test]
    fn crash_before_commit_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let undo_file = dir.path().join("u");
        let d = disk();
        let original = d.to_vec();
        let t = Transaction::begin(d.clone(), &undo_file).unwrap();
        t.write_all_at(70_000, &[1; 70_000]).unwrap();
        drop(t); // the process "dies": no commit
        assert!(Transaction::begin(d.clone(), &undo_file).is_err());
        assert_eq!(
            recover(&*d, &undo_file).unwrap(),
            Recovery::RolledBack { blocks: 2 }
        );
        assert_eq!(d.to_vec(), original);
        // A settled undo file may be replaced by a new transaction.
        Transaction::begin(d, &undo_file).unwrap();
    }

    #[test]
    fn block_saved_once_keeps_first_original() {
        let dir = tempfile::tempdir().unwrap();
        let undo_file = dir.path().join("u");
        let d = disk();
        let original = d.to_vec();
        let t = Transaction::begin_with_block_size(d.clone(), &undo_file, 512).unwrap();
        t.write_all_at(0, &[9; 10]).unwrap();
        t.write_all_at(5, &[8; 10]).unwrap();
        drop(t);
        assert_eq!(info(&undo_file).unwrap().records, 1);
        recover(&*d, &undo_file).unwrap();
        assert_eq!(d.to_vec(), original);
    }

    #[test]
    fn torn_tail_is_ignored_but_damage_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let undo_file = dir.path().join("u");
        let d = disk();
        let original = d.to_vec();
        let t = Transaction::begin_with_block_size(d.clone(), &undo_file, 1024).unwrap();
        t.write_all_at(0, &[7; 3000]).unwrap();
        drop(t);
        let mut bytes = std::fs::read(&undo_file).unwrap();
        let full = bytes.len();
        // Tear the last record: as if the process died while appending it. Its device write
        // never happened, so put that block back the way it was.
        bytes.truncate(full - 100);
        std::fs::write(&undo_file, &bytes).unwrap();
        d.write_all_at(2048, &original[2048..3072]).unwrap();
        let i = info(&undo_file).unwrap();
        assert!(i.torn_tail);
        assert_eq!(i.records, 2);
        recover(&*d, &undo_file).unwrap();
        assert_eq!(d.to_vec(), original);

        // A zero-filled tail (what some filesystems leave after a power loss) is a torn tail too.
        let mut bytes = std::fs::read(&undo_file).unwrap();
        bytes.extend_from_slice(&[0; 5000]);
        std::fs::write(&undo_file, &bytes).unwrap();
        assert!(info(&undo_file).unwrap().torn_tail);

        // A flipped byte inside an earlier record is corruption, and nothing is applied.
        let t = Transaction::begin_with_block_size(d.clone(), &undo_file, 1024).unwrap();
        t.write_all_at(0, &[7; 3000]).unwrap();
        drop(t);
        let mut bytes = std::fs::read(&undo_file).unwrap();
        bytes[HEADER_LEN + RECORD_HEADER_LEN + 10] ^= 1;
        std::fs::write(&undo_file, &bytes).unwrap();
        let before = d.to_vec();
        let e = recover(&*d, &undo_file).unwrap_err();
        assert_eq!(e.as_corrupt().unwrap().offset(), HEADER_LEN as u64);
        assert_eq!(
            e.to_string(),
            "corrupt undo file at 0x20: record checksum mismatch"
        );
        assert_eq!(d.to_vec(), before);
    }

    #[test]
    fn header_validation() {
        let h = encode_header(4096, 1000);
        assert!(parse(&h).is_ok());
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(parse(&bad).unwrap_err().as_corrupt().unwrap().offset(), 0);
        let mut bad = h;
        bad[20] ^= 1;
        assert_eq!(parse(&bad).unwrap_err().as_corrupt().unwrap().offset(), 28);
        assert!(parse(&h[..10]).is_err());
        let zero_bs = encode_header(0, 1000);
        assert_eq!(
            parse(&zero_bs).unwrap_err().as_corrupt().unwrap().offset(),
            12
        );
        let mut v2 = h;
        v2[8] = 2;
        let crc = crc32fast::hash(&v2[0..28]);
        v2[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(parse(&v2), Err(Error::Unsupported(_))));
    }

    #[test]
    fn record_past_device_is_corrupt() {
        let mut f = encode_header(4096, 1000).to_vec();
        f.extend(encode_record(KIND_DATA, 900, &[0; 200]).unwrap());
        f.extend(encode_record(KIND_COMMIT, 0, &[]).unwrap());
        let e = parse(&f).unwrap_err();
        assert_eq!(e.as_corrupt().unwrap().offset(), 32);
    }

    #[test]
    fn wrong_device_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let undo_file = dir.path().join("u");
        let t = Transaction::begin(disk(), &undo_file).unwrap();
        t.write_all_at(0, &[1]).unwrap();
        drop(t);
        let other = MemDisk::zeroed(4096).unwrap();
        assert!(matches!(recover(&other, &undo_file), Err(Error::Usage(_))));
        assert_eq!(other.to_vec(), vec![0; 4096]);
    }
}
