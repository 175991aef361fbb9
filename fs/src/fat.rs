//! FAT12/16/32 reading over the `fatfs` crate.
//!
//! `fatfs` 0.3 trusts its input more than rehost can: it does unchecked `u32` arithmetic on
//! boot-sector fields and cluster numbers (an overflow panics in debug builds), subtracts 2 from
//! cluster numbers read from the FAT without checking them, and follows cluster chains as long
//! as the FAT says (a cyclic chain never ends). So this module:
//!
//! 1. validates the boot sector itself ([`BootSector`]) before `fatfs` sees it, with every
//!    geometry sum done in `u64` and checked against the device;
//! 2. gives `fatfs` a device adapter that charges every read to a per-call budget, so a cyclic
//!    chain or a directory of endless deleted entries ends in [`Error::LimitExceeded`];
//! 3. bounds directory listings to [`MAX_DIR_ENTRIES`];
//! 4. runs each call under `catch_unwind` and turns a panic into [`Error::Corrupt`]. That is a
//!    last-resort guard against a dependency that can panic on a bad cluster number, not a
//!    substitute for the validation above (the default panic hook still prints the message).
//!
//! `fatfs::FileSystem` is not `Send` (it keeps `&'static dyn` code-page and clock objects that are
//! not `Sync`), so [`FatFs`] mounts it afresh for each call: that costs one boot-sector read (two
//! on FAT32) and keeps no state a panic could poison. Each call's adapter caches the 4 KiB chunks
//! it reads (`fatfs` reads directory and FAT entries a few bytes at a time). Opened with
//! [`FatFs::open`], the adapter refuses every write; `fatfs` writes only when flags or FSInfo
//! counters change, which reading never does (a test counts write attempts). Opened with
//! [`FatFs::open_rw`], writes go through to the device: see [`write`].
//!
//! FAT stores no owner or permissions: [`Metadata`] reports uid/gid 0, mode 0o755 for
//! directories and 0o644 for files (0o555/0o444 with the read-only attribute), `nlink` 1,
//! `ino` 0, and the modification time read as UTC (FAT stores local time).

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use disk::{BlockRead, BlockWrite};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ext4::{Budget, BudgetExhausted, call_budget};
use crate::{
    CaseSensitivity, DirEntry, Error, FileType, FsInfo, FsKind, FsRead, GuestPath, MAX_DIR_ENTRIES,
    Metadata, Result,
};

/// Size of the boot sector we parse (Microsoft FAT specification, section 3).
pub const BOOT_SECTOR_SIZE: usize = 512;
/// Boot signature at offset 510 (FAT specification, section 3.1).
const BOOT_SIGNATURE: [u8; 2] = [0x55, 0xAA];
/// Extended boot signatures that make `BS_VolID` and `BS_VolLab` valid (section 3.2/3.3).
const EXT_BOOT_SIGNATURES: [u8; 2] = [0x28, 0x29];
/// Cluster-count thresholds that decide the FAT type (section 3.5: "the only way").
const FAT12_MAX_CLUSTERS: u64 = 4084;
const FAT16_MAX_CLUSTERS: u64 = 65524;
/// Largest valid FAT32 cluster count (28-bit entries, minus reserved values).
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FFF4;
/// The first two FAT entries are reserved (section 4).
const RESERVED_FAT_ENTRIES: u64 = 2;
/// Size of a directory entry (section 6).
const DIR_ENTRY_SIZE: u64 = 32;
/// `DIR_Attr` bits (section 6).
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_VOLUME_ID: u8 = 0x08;
const ATTR_LONG_NAME: u8 = 0x0F;
/// First name byte of a deleted entry, and of the end-of-directory marker.
const DIR_ENTRY_FREE: u8 = 0xE5;
const DIR_ENTRY_END: u8 = 0x00;
/// Most root-directory clusters the label search follows on FAT32 (blkid follows a similar cap).
const MAX_LABEL_SEARCH_CLUSTERS: u32 = 64;
/// The label mkfs tools write when there is none; blkid does not report it.
const NO_NAME: &str = "NO NAME";

/// The boot sector and BIOS parameter block as laid out on disk (first parsing step).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Clone)]
#[repr(C)]
pub(crate) struct RawBootSector {
    bs_jmp_boot: [u8; 3],
    bs_oem_name: [u8; 8],
    bpb_byts_per_sec: U16,
    bpb_sec_per_clus: u8,
    bpb_rsvd_sec_cnt: U16,
    bpb_num_fats: u8,
    bpb_root_ent_cnt: U16,
    bpb_tot_sec16: U16,
    bpb_media: u8,
    bpb_fat_sz16: U16,
    _bpb_sec_per_trk: U16,
    _bpb_num_heads: U16,
    _bpb_hidd_sec: U32,
    bpb_tot_sec32: U32,
    /// FAT12/16: `BS_DrvNum .. BS_FilSysType` at 0x24; FAT32: `BPB_FATSz32 ..` at 0x24.
    ext: [u8; 0x5A - 0x24],
    _boot_code: [u8; 510 - 0x5A],
    signature: [u8; 2],
}

/// A validated FAT boot sector (second parsing step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSector {
    /// FAT12, FAT16 or FAT32, by cluster count.
    pub kind: FsKind,
    /// `BPB_BytsPerSec`.
    pub bytes_per_sector: u64,
    /// `BPB_SecPerClus`.
    pub sectors_per_cluster: u64,
    /// `BPB_RsvdSecCnt`.
    pub reserved_sectors: u64,
    /// `BPB_NumFATs`.
    pub fats: u64,
    /// `BPB_RootEntCnt` (0 on FAT32).
    pub root_entries: u64,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// Total sectors of the volume.
    pub total_sectors: u64,
    /// Number of data clusters.
    pub clusters: u64,
    /// `BPB_RootClus` (FAT32 only; 0 otherwise).
    pub root_cluster: u32,
    /// `BS_VolID`, if the extended boot signature says it is valid.
    pub volume_id: Option<u32>,
    /// `BS_VolLab` (trailing spaces removed), if valid and not "NO NAME".
    pub boot_label: Option<String>,
}

fn bs_corrupt(offset: u64, detail: String) -> Error {
    Error::corrupt("fat boot sector", offset, detail)
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl BootSector {
    /// Reads and validates the boot sector of `dev`, including that the volume fits on it.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the field, its value and the allowed range; I/O errors.
    pub fn read(dev: &dyn BlockRead) -> Result<Self> {
        let raw: RawBootSector = disk::BlockReadExt::read_struct(dev, 0)?;
        let bs = Self::try_from(&raw)?;
        let bytes = bs.total_sectors * bs.bytes_per_sector;
        if bytes > dev.size() {
            return Err(bs_corrupt(
                0x13,
                format!(
                    "total sectors {} of {} bytes exceed the {}-byte device",
                    bs.total_sectors,
                    bs.bytes_per_sector,
                    dev.size()
                ),
            ));
        }
        Ok(bs)
    }

    /// Byte offset of the first FAT.
    #[must_use]
    pub fn fat_offset(&self) -> u64 {
        self.reserved_sectors * self.bytes_per_sector
    }

    /// Byte offset of the FAT12/16 root directory region.
    #[must_use]
    pub fn root_dir_offset(&self) -> u64 {
        (self.reserved_sectors + self.fats * self.fat_sectors) * self.bytes_per_sector
    }

    /// Byte offset of the data region (cluster 2).
    #[must_use]
    pub fn data_offset(&self) -> u64 {
        self.root_dir_offset() + self.root_dir_sectors() * self.bytes_per_sector
    }

    fn root_dir_sectors(&self) -> u64 {
        (self.root_entries * DIR_ENTRY_SIZE).div_ceil(self.bytes_per_sector)
    }

    /// Bytes per cluster.
    #[must_use]
    pub fn cluster_size(&self) -> u64 {
        self.sectors_per_cluster * self.bytes_per_sector
    }

    /// The serial as blkid prints it: `XXXX-XXXX`, uppercase hex.
    #[must_use]
    pub fn serial(&self) -> Option<String> {
        self.volume_id
            .map(|id| format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF))
    }

    /// The label as blkid reports it: the root directory's volume-label entry if there is one,
    /// else the boot sector's `BS_VolLab`; "NO NAME" counts as none.
    ///
    /// # Errors
    /// I/O errors reading the root directory.
    pub fn label(&self, dev: &dyn BlockRead) -> Result<Option<String>> {
        match self.root_dir_label(dev)? {
            Some(l) => Ok(Some(l).filter(|l| l != NO_NAME && !l.is_empty())),
            None => Ok(self.boot_label.clone()),
        }
    }

    /// The volume-label entry of the root directory, searching a bounded number of clusters.
    fn root_dir_label(&self, dev: &dyn BlockRead) -> Result<Option<String>> {
        let scan = |offset: u64, len: u64| -> Result<Option<Option<String>>> {
            let len = len.min(dev.size().saturating_sub(offset));
            let buf = disk::BlockReadExt::read_vec(dev, offset, len, 1 << 20)?;
            // OK to index e[0] and e[11]: chunks_exact yields 32-byte entries.
            for e in buf.chunks_exact(32) {
                match e[0] {
                    DIR_ENTRY_END => return Ok(Some(None)),
                    DIR_ENTRY_FREE => {}
                    _ if e[11] & ATTR_LONG_NAME == ATTR_LONG_NAME => {}
                    _ if e[11] & ATTR_VOLUME_ID != 0 => {
                        let name = String::from_utf8_lossy(&e[..11]);
                        return Ok(Some(Some(name.trim_end_matches(' ').to_owned())));
                    }
                    _ => {}
                }
            }
            Ok(None)
        };
        if self.kind != FsKind::Fat32 {
            let len = (self.root_entries * DIR_ENTRY_SIZE).min(1 << 20);
            return Ok(scan(self.root_dir_offset(), len)?.flatten());
        }
        let mut cluster = u64::from(self.root_cluster);
        for _ in 0..MAX_LABEL_SEARCH_CLUSTERS {
            if !(RESERVED_FAT_ENTRIES..self.clusters + RESERVED_FAT_ENTRIES).contains(&cluster) {
                break;
            }
            let at = self.data_offset() + (cluster - RESERVED_FAT_ENTRIES) * self.cluster_size();
            if let Some(found) = scan(at, self.cluster_size())? {
                return Ok(found);
            }
            let entry: [u8; 4] =
                disk::BlockReadExt::read_array(dev, self.fat_offset() + cluster * 4)?;
            cluster = u64::from(u32::from_le_bytes(entry) & 0x0FFF_FFFF);
        }
        Ok(None)
    }
}

impl TryFrom<&RawBootSector> for BootSector {
    type Error = Error;

    fn try_from(raw: &RawBootSector) -> Result<Self> {
        if raw.signature != BOOT_SIGNATURE {
            return Err(bs_corrupt(
                510,
                format!("signature {:02x?} is not 55 aa", raw.signature),
            ));
        }
        if !matches!(raw.bs_jmp_boot[0], 0xEB | 0xE9) {
            return Err(bs_corrupt(
                0,
                format!(
                    "jump opcode {:#04x} is not 0xeb or 0xe9",
                    raw.bs_jmp_boot[0]
                ),
            ));
        }
        let bps = raw.bpb_byts_per_sec.get();
        if !bps.is_power_of_two() || !(512..=4096).contains(&bps) {
            return Err(bs_corrupt(
                0x0B,
                format!("bytes per sector {bps} is not a power of two in 512..=4096"),
            ));
        }
        let spc = raw.bpb_sec_per_clus;
        if !spc.is_power_of_two() {
            return Err(bs_corrupt(
                0x0D,
                format!("sectors per cluster {spc} is not a power of two in 1..=128"),
            ));
        }
        let reserved = raw.bpb_rsvd_sec_cnt.get();
        if reserved == 0 {
            return Err(bs_corrupt(
                0x0E,
                "reserved sectors 0 out of range 1..".into(),
            ));
        }
        let fats = raw.bpb_num_fats;
        if !(1..=2).contains(&fats) {
            return Err(bs_corrupt(
                0x10,
                format!("fat count {fats} out of range 1..=2"),
            ));
        }
        let ext = &raw.ext;
        let fat_sz16 = raw.bpb_fat_sz16.get();
        let is_fat32_layout = fat_sz16 == 0;
        let fat_sectors = if is_fat32_layout {
            u64::from(le32(ext, 0))
        } else {
            u64::from(fat_sz16)
        };
        if fat_sectors == 0 {
            return Err(bs_corrupt(
                0x24,
                "sectors per fat 0 out of range 1..".into(),
            ));
        }
        let (ts16, ts32) = (raw.bpb_tot_sec16.get(), raw.bpb_tot_sec32.get());
        if (ts16 == 0) == (ts32 == 0) {
            return Err(bs_corrupt(
                0x13,
                format!("exactly one of total sectors 16 ({ts16}) and 32 ({ts32}) must be set"),
            ));
        }
        let total_sectors = if ts16 != 0 {
            u64::from(ts16)
        } else {
            u64::from(ts32)
        };
        let root_entries = u64::from(raw.bpb_root_ent_cnt.get());
        if is_fat32_layout && (root_entries != 0 || ts16 != 0) {
            return Err(bs_corrupt(
                0x11,
                format!(
                    "fat32 with root entries {root_entries} and total sectors 16 {ts16} (both must be 0)"
                ),
            ));
        }
        if !is_fat32_layout && root_entries == 0 {
            return Err(bs_corrupt(0x11, "root entries 0 on fat12/16".into()));
        }
        let bps = u64::from(bps);
        let spc = u64::from(spc);
        let root_dir_sectors = (root_entries * DIR_ENTRY_SIZE).div_ceil(bps);
        // All in u64: u16 + 2 * u32 + u16-derived cannot overflow.
        let meta_sectors = u64::from(reserved) + u64::from(fats) * fat_sectors + root_dir_sectors;
        if meta_sectors >= total_sectors {
            return Err(bs_corrupt(
                0x13,
                format!(
                    "total sectors {total_sectors} leave no data region after {meta_sectors} metadata sectors"
                ),
            ));
        }
        let clusters = (total_sectors - meta_sectors) / spc;
        let kind = if clusters <= FAT12_MAX_CLUSTERS {
            FsKind::Fat12
        } else if clusters <= FAT16_MAX_CLUSTERS {
            FsKind::Fat16
        } else {
            FsKind::Fat32
        };
        if (kind == FsKind::Fat32) != is_fat32_layout {
            return Err(bs_corrupt(
                0x16,
                format!("{clusters} clusters mean {kind:?} but sectors per fat 16 is {fat_sz16}"),
            ));
        }
        if clusters > FAT32_MAX_CLUSTERS {
            return Err(bs_corrupt(
                0x20,
                format!("cluster count {clusters} out of range ..={FAT32_MAX_CLUSTERS}"),
            ));
        }
        let bits = match kind {
            FsKind::Fat12 => 12,
            FsKind::Fat16 => 16,
            _ => 32,
        };
        let fat_entries = fat_sectors * bps * 8 / bits;
        if fat_entries < clusters + RESERVED_FAT_ENTRIES {
            return Err(bs_corrupt(
                0x16,
                format!("fat of {fat_entries} entries too small for {clusters} clusters"),
            ));
        }
        // Extended fields: FAT32's start at 0x40 (ext[0x1C]), FAT12/16's at 0x24 (ext[0]).
        let (root_cluster, sig_at) = if kind == FsKind::Fat32 {
            let version = le16(ext, 0x2A - 0x24);
            if version != 0 {
                return Err(bs_corrupt(
                    0x2A,
                    format!("fat32 version {version} is not 0"),
                ));
            }
            let fs_info = u64::from(le16(ext, 0x30 - 0x24));
            let backup = u64::from(le16(ext, 0x32 - 0x24));
            if fs_info >= u64::from(reserved) || backup >= u64::from(reserved) {
                return Err(bs_corrupt(
                    0x30,
                    format!(
                        "fsinfo sector {fs_info} or backup boot sector {backup} outside 0..{reserved}"
                    ),
                ));
            }
            let rc = le32(ext, 0x2C - 0x24);
            if !(RESERVED_FAT_ENTRIES..clusters + RESERVED_FAT_ENTRIES).contains(&u64::from(rc)) {
                return Err(bs_corrupt(
                    0x2C,
                    format!(
                        "root cluster {rc} out of range 2..{}",
                        clusters + RESERVED_FAT_ENTRIES
                    ),
                ));
            }
            (rc, 0x42 - 0x24)
        } else {
            (0, 0x26 - 0x24)
        };
        let ext_valid = ext
            .get(sig_at)
            .is_some_and(|s| EXT_BOOT_SIGNATURES.contains(s));
        let volume_id = ext_valid.then(|| le32(ext, sig_at + 1));
        let boot_label = ext
            .get(sig_at + 5..sig_at + 16)
            .filter(|_| ext_valid)
            .map(|l| String::from_utf8_lossy(l).trim_end_matches(' ').to_owned())
            .filter(|l| !l.is_empty() && l != NO_NAME);
        Ok(Self {
            kind,
            bytes_per_sector: bps,
            sectors_per_cluster: spc,
            reserved_sectors: u64::from(reserved),
            fats: u64::from(fats),
            root_entries,
            fat_sectors,
            total_sectors,
            clusters,
            root_cluster,
            volume_id,
            boot_label,
        })
    }
}

/// Size of the chunks [`DevCursor`] caches: `fatfs` reads directory entries and FAT entries a
/// few bytes at a time, which would otherwise be one device read each.
const CACHE_CHUNK: usize = 4096;
/// Most chunks one call caches (16 MiB) before the cache is dropped and refilled (S12).
const MAX_CACHED_CHUNKS: usize = 4096;
/// Length of the `DIR_Name` field, the first write `fatfs` makes when it stores a short entry.
const SHORT_NAME_LEN: usize = 11;
/// One `DIR_Name` write: its device offset and the 11 bytes written.
type NameWrite = (u64, [u8; SHORT_NAME_LEN]);
/// How many short-name writes one call remembers.
const MAX_NAME_WRITES: usize = 64;

/// Read/Write/Seek over a shared device for `fatfs`, for one call. Reads are charged to a budget
/// and served from a small per-call chunk cache. Writes go straight to `wdev` (write-through,
/// so the cache never holds anything the device lacks); without `wdev` they are refused and
/// counted, so tests can prove none was attempted.
struct DevCursor {
    dev: Arc<dyn BlockRead>,
    wdev: Option<Arc<dyn BlockWrite>>,
    pos: u64,
    budget: Arc<Budget>,
    writes: Arc<AtomicU64>,
    cache: HashMap<u64, Box<[u8]>>,
    /// The chunk read last, copied out of `cache` so runs of tiny reads skip the hash lookup
    /// (`u64::MAX`: none).
    hot_chunk: u64,
    hot: Box<[u8]>,
    /// Device offsets and contents of the last 11-byte writes (newest last, at most
    /// [`MAX_NAME_WRITES`]): where `fatfs` last stored short entries' `DIR_Name`.
    name_writes: Arc<std::sync::Mutex<Vec<NameWrite>>>,
    /// Set when the device was written past this cursor; the next read drops the cache.
    stale: Arc<std::sync::atomic::AtomicBool>,
}

impl DevCursor {
    fn new(
        dev: Arc<dyn BlockRead>,
        wdev: Option<Arc<dyn BlockWrite>>,
        budget: Arc<Budget>,
        writes: Arc<AtomicU64>,
    ) -> Self {
        Self {
            dev,
            wdev,
            pos: 0,
            budget,
            writes,
            cache: HashMap::new(),
            hot_chunk: u64::MAX,
            hot: vec![0u8; CACHE_CHUNK].into_boxed_slice(),
            name_writes: Arc::default(),
            stale: Arc::default(),
        }
    }

    /// Fills `buf` from the device at `self.pos`, through the cache when the range lies inside
    /// one whole chunk of the device.
    fn read_cached(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.stale.swap(false, Ordering::Relaxed) {
            self.cache.clear();
            self.hot_chunk = u64::MAX;
        }
        let chunk_len = CACHE_CHUNK as u64;
        let chunk = self.pos / chunk_len;
        let start = chunk * chunk_len;
        // Both below CACHE_CHUNK, so they fit in usize.
        let in_chunk = usize::try_from(self.pos - start).unwrap_or(usize::MAX);
        let end = in_chunk.saturating_add(buf.len());
        let whole_chunk_on_dev = start
            .checked_add(chunk_len)
            .is_some_and(|e| e <= self.dev.size());
        if end > CACHE_CHUNK || !whole_chunk_on_dev {
            return self
                .dev
                .read_exact_at(self.pos, buf)
                .map_err(io::Error::other);
        }
        if chunk == self.hot_chunk {
            let data = self
                .hot
                .get(in_chunk..end)
                .ok_or_else(|| io::Error::other("fat chunk cache range"))?;
            buf.copy_from_slice(data);
            return Ok(());
        }
        if !self.cache.contains_key(&chunk) {
            if self.cache.len() >= MAX_CACHED_CHUNKS {
                self.cache.clear();
            }
            let mut data = vec![0u8; CACHE_CHUNK].into_boxed_slice();
            self.dev
                .read_exact_at(start, &mut data)
                .map_err(io::Error::other)?;
            self.cache.insert(chunk, data);
        }
        let data = self
            .cache
            .get(&chunk)
            .and_then(|d| d.get(in_chunk..end))
            .ok_or_else(|| io::Error::other("fat chunk cache lost a chunk"))?;
        buf.copy_from_slice(data);
        if let Some(whole) = self.cache.get(&chunk) {
            self.hot.copy_from_slice(whole);
            self.hot_chunk = chunk;
        }
        Ok(())
    }
}

impl Read for DevCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // The volume was checked to fit on the device, so a read at or past its end comes from
        // a cluster number beyond the volume: an error, not a short read fatfs would pass on
        // as a short file.
        let left = self.dev.size().saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Err(io::Error::other(disk::Error::OutOfBounds {
                offset: self.pos,
                len: buf.len() as u64,
                size: self.dev.size(),
            }));
        }
        let wanted = n as u64;
        self.budget.take(wanted).map_err(io::Error::other)?;
        // OK to slice: n <= buf.len().
        self.read_cached(&mut buf[..n])?;
        self.pos += wanted;
        Ok(n)
    }
}

impl Write for DevCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(wdev) = &self.wdev else {
            self.writes.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "fat filesystem is opened read-only",
            ));
        };
        if buf.is_empty() {
            return Ok(0);
        }
        // Writes are charged too: a damaged FAT must not make one call write without end.
        self.budget
            .take(buf.len() as u64)
            .map_err(io::Error::other)?;
        wdev.write_all_at(self.pos, buf).map_err(io::Error::other)?;
        if buf.len() == SHORT_NAME_LEN {
            let mut w = self
                .name_writes
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if w.len() >= MAX_NAME_WRITES {
                w.remove(0);
            }
            let mut name = [0u8; SHORT_NAME_LEN];
            name.copy_from_slice(buf);
            w.push((self.pos, name));
        }
        let end = self.pos.saturating_add(buf.len() as u64);
        let chunk_len = CACHE_CHUNK as u64;
        let (first, last) = (self.pos / chunk_len, (end - 1) / chunk_len);
        if (first..=last).contains(&self.hot_chunk) {
            self.hot_chunk = u64::MAX;
        }
        if last - first >= MAX_CACHED_CHUNKS as u64 {
            self.cache.clear();
        } else {
            for c in first..=last {
                self.cache.remove(&c);
            }
        }
        self.pos = end;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for DevCursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.dev.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before start or past u64")
        })?;
        Ok(self.pos)
    }
}

pub mod write;

type Fs = fatfs::FileSystem<DevCursor>;
type FatEntry<'a> = fatfs::DirEntry<'a, DevCursor>;

/// A FAT12/16/32 filesystem, read-only from [`FatFs::open`] or writable from
/// [`FatFs::open_rw`] (see [`write`] for the write side).
pub struct FatFs {
    dev: Arc<dyn BlockRead>,
    /// The same device, when opened writable.
    wdev: Option<Arc<dyn BlockWrite>>,
    boot: BootSector,
    info: FsInfo,
    writes: Arc<AtomicU64>,
    /// Readers share, each write call is exclusive: `fatfs` is mounted per call and two mounts
    /// writing at once would allocate the same clusters.
    lock: RwLock<()>,
}

impl std::fmt::Debug for FatFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FatFs")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Maps an error `fatfs` returned (or passed through from our adapter) on `path`.
fn map_io(e: &io::Error, path: &GuestPath) -> Error {
    if let Some(inner) = e.get_ref() {
        if let Some(b) = inner.downcast_ref::<BudgetExhausted>() {
            return Error::LimitExceeded {
                what: format!("{path}: bytes read by one call"),
                limit: b.limit,
            };
        }
        if let Some(d) = inner.downcast_ref::<disk::Error>() {
            return match d {
                disk::Error::OutOfBounds { offset, .. } => Error::corrupt(
                    "fat filesystem",
                    *offset,
                    format!("{path}: a cluster lies past the end of the device"),
                ),
                other => Error::corrupt("fat filesystem", 0, format!("{path}: {other}")),
            };
        }
    }
    Error::corrupt("fat filesystem", 0, format!("{path}: {e}"))
}

fn panicked(path: &GuestPath) -> Error {
    Error::corrupt(
        "fat filesystem",
        0,
        format!(
            "{path}: fatfs panicked on this image (caught as a guard against a dependency bug)"
        ),
    )
}

/// One name as `fatfs` found it, plus what we need to match and describe it.
enum Node<'a> {
    Root,
    Entry(FatEntry<'a>),
}

fn same_name(want: &str, entry: &FatEntry<'_>) -> bool {
    let fold = |s: &str| s.to_uppercase();
    let want = fold(want);
    fold(&entry.file_name()) == want || fold(&entry.short_file_name()) == want
}

/// Iterates a directory, skipping `.`/`..`, up to [`MAX_DIR_ENTRIES`].
fn for_each_entry<'a>(
    dir: &fatfs::Dir<'a, DevCursor>,
    path: &GuestPath,
    mut f: impl FnMut(FatEntry<'a>) -> Option<FatEntry<'a>>,
) -> Result<Option<FatEntry<'a>>> {
    for (seen, entry) in dir.iter().enumerate() {
        if seen >= MAX_DIR_ENTRIES {
            return Err(Error::LimitExceeded {
                what: format!("{path}: directory entries"),
                limit: MAX_DIR_ENTRIES as u64,
            });
        }
        let entry = entry.map_err(|e| map_io(&e, path))?;
        let name = entry.short_file_name();
        if name == "." || name == ".." {
            continue;
        }
        if let Some(found) = f(entry) {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn lookup<'a>(fs: &'a Fs, path: &GuestPath) -> Result<Node<'a>> {
    let mut dir = fs.root_dir();
    let mut node = Node::Root;
    let mut here = GuestPath::root();
    for (i, comp) in path.components().iter().enumerate() {
        if i > 0 {
            match &node {
                Node::Entry(e) if e.is_dir() => dir = e.to_dir(),
                Node::Entry(_) => {
                    return Err(Error::NotADirectory {
                        path: here.to_string(),
                    });
                }
                Node::Root => {}
            }
        }
        here = here.join_name(comp)?;
        let Ok(want) = std::str::from_utf8(comp) else {
            // FAT names are UTF-16 (long) or OEM code page (short); ours are UTF-8.
            return Err(Error::NotFound {
                path: here.to_string(),
            });
        };
        let found = for_each_entry(&dir, &here, |e| same_name(want, &e).then_some(e))?;
        node = Node::Entry(found.ok_or_else(|| Error::NotFound {
            path: here.to_string(),
        })?);
    }
    Ok(node)
}

fn entry_type(e: &FatEntry<'_>) -> FileType {
    if e.is_dir() {
        FileType::Directory
    } else {
        FileType::Regular
    }
}

/// Seconds since the epoch of a FAT date and time, read as UTC. Out-of-range fields (month 0,
/// day 0) still give a number, never a panic.
fn unix_time(dt: fatfs::DateTime) -> i64 {
    // Days from civil (proleptic Gregorian), the well-known era-based algorithm.
    let (y, m, d) = (
        i64::from(dt.date.year),
        i64::from(dt.date.month),
        i64::from(dt.date.day),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400
        + i64::from(dt.time.hour) * 3600
        + i64::from(dt.time.min) * 60
        + i64::from(dt.time.sec)
}

impl FatFs {
    /// Opens the FAT filesystem on `dev`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a boot sector that fails validation; I/O errors.
    pub fn open(dev: Arc<dyn BlockRead>) -> Result<Self> {
        let boot = BootSector::read(&*dev)?;
        let info = FsInfo {
            kind: boot.kind,
            label: boot.label(&*dev)?,
            uuid: boot.serial(),
            case: CaseSensitivity::Insensitive,
        };
        let fs = Self {
            dev,
            wdev: None,
            boot,
            info,
            writes: Arc::new(AtomicU64::new(0)),
            lock: RwLock::new(()),
        };
        // Mount once now so a boot sector fatfs rejects fails here, not on first use.
        fs.with_fs(&GuestPath::root(), 0, |_| Ok(()))?;
        tracing::debug!(kind = ?fs.info.kind, "opened fat filesystem");
        Ok(fs)
    }

    /// The validated boot sector.
    #[must_use]
    pub fn boot_sector(&self) -> &BootSector {
        &self.boot
    }

    /// How many writes `fatfs` attempted (and we refused) so far; always 0 in practice.
    #[must_use]
    pub fn refused_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Mounts `fatfs` for one call with a fresh read budget, guarding against its panics.
    fn with_fs<R>(
        &self,
        path: &GuestPath,
        buf_len: usize,
        f: impl FnOnce(&Fs) -> Result<R>,
    ) -> Result<R> {
        // A budget of its own per call, so concurrent callers never spend each other's.
        let budget = Arc::new(Budget::default());
        budget.reset(call_budget(self.dev.size(), buf_len));
        let cursor = DevCursor::new(self.dev.clone(), None, budget, self.writes.clone());
        let _shared = self.lock.read().unwrap_or_else(PoisonError::into_inner);
        catch_unwind(AssertUnwindSafe(|| {
            let fs = Fs::new(cursor, fatfs::FsOptions::new().update_accessed_date(false))
                .map_err(|e| map_io(&e, path))?;
            f(&fs)
        }))
        .unwrap_or_else(|_| Err(panicked(path)))
    }
}

impl FsRead for FatFs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        self.with_fs(path, 0, |fs| {
            let md = match lookup(fs, path)? {
                Node::Root => Metadata {
                    file_type: FileType::Directory,
                    size: 0,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    ino: 0,
                    nlink: 1,
                },
                Node::Entry(e) => {
                    let ro = e.attributes().bits() & ATTR_READ_ONLY != 0;
                    let mode = match (e.is_dir(), ro) {
                        (true, false) => 0o755,
                        (true, true) => 0o555,
                        (false, false) => 0o644,
                        (false, true) => 0o444,
                    };
                    Metadata {
                        file_type: entry_type(&e),
                        size: if e.is_dir() { 0 } else { e.len() },
                        mode,
                        uid: 0,
                        gid: 0,
                        mtime: unix_time(e.modified()),
                        ino: 0,
                        nlink: 1,
                    }
                }
            };
            Ok(md)
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        self.with_fs(path, 0, |fs| {
            let dir = match lookup(fs, path)? {
                Node::Root => fs.root_dir(),
                Node::Entry(e) if e.is_dir() => e.to_dir(),
                Node::Entry(_) => {
                    return Err(Error::NotADirectory {
                        path: path.to_string(),
                    });
                }
            };
            let mut out = Vec::new();
            for_each_entry(&dir, path, |e| {
                out.push(DirEntry {
                    name: e.file_name().into_bytes(),
                    file_type: entry_type(&e),
                });
                None
            })?;
            Ok(out)
        })
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        // FAT has no symlinks; still report a missing path as missing.
        self.lstat(path)?;
        Err(Error::NotASymlink {
            path: path.to_string(),
        })
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.with_fs(path, buf.len(), |fs| {
            let e = match lookup(fs, path)? {
                Node::Root => {
                    return Err(Error::IsADirectory {
                        path: path.to_string(),
                    });
                }
                Node::Entry(e) if e.is_dir() => {
                    return Err(Error::IsADirectory {
                        path: path.to_string(),
                    });
                }
                Node::Entry(e) => e,
            };
            let size = e.len();
            if offset >= size || buf.is_empty() {
                return Ok(0);
            }
            let want = usize::try_from(size - offset).map_or(buf.len(), |r| r.min(buf.len()));
            let mut file = e.to_file();
            file.seek(SeekFrom::Start(offset))
                .map_err(|err| map_io(&err, path))?;
            let mut filled = 0;
            while filled < want {
                // OK to slice: filled < want <= buf.len().
                let n = file
                    .read(&mut buf[filled..want])
                    .map_err(|err| map_io(&err, path))?;
                if n == 0 {
                    return Err(Error::corrupt(
                        "fat filesystem",
                        0,
                        format!(
                            "{path}: cluster chain ends at byte {} of a {size}-byte file",
                            offset + filled as u64
                        ),
                    ));
                }
                filled += n;
            }
            Ok(filled)
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test images and offsets are small"
)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use disk::MemDisk;

    use super::*;
    use crate::FsReadExt;
    use crate::fuzzing::testutil::{Rng, blkid, need, output, run};

    fn gp(s: &str) -> GuestPath {
        GuestPath::parse(s.as_bytes()).unwrap()
    }

    /// 2020-01-02 03:04:06 UTC: even seconds, as FAT stores them.
    const MTIME: i64 = 1_577_934_246;

    fn mtools(tool: &str, img: &Path) -> Command {
        let mut c = Command::new(tool);
        c.env("TZ", "UTC")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(img);
        c
    }

    /// A FAT image of the given type with long names, nested directories, a multi-cluster
    /// file, an empty file and a read-only file. Returns the image path and the host files.
    fn build(tmp: &Path, bits: &str) -> Option<std::path::PathBuf> {
        if !need(&["mkfs.vfat", "mmd", "mcopy", "mattrib", "mtype", "blkid"]) {
            return None;
        }
        let img = tmp.join(format!("fat{bits}.img"));
        let (blocks, spc) = match bits {
            "12" => ("2048", "4"),
            "16" => ("4096", "1"),
            _ => ("34816", "1"),
        };
        assert!(run(Command::new("mkfs.vfat")
            .args([
                "-C", "-F", bits, "-s", spc, "-n", "MYLABEL", "-i", "1234ABCD"
            ])
            .arg(&img)
            .arg(blocks)));
        let host = tmp.join("host");
        std::fs::create_dir_all(&host).unwrap();
        let files: [(&str, Vec<u8>); 4] = [
            ("Long File Name.txt", b"hello from a long name\n".to_vec()),
            ("grüße – ünïcödé.txt", "unicode ✓\n".as_bytes().to_vec()),
            ("BIG.BIN", Rng(3).bytes(100_000)),
            ("empty", Vec::new()),
        ];
        for (name, data) in &files {
            let p = host.join(name);
            std::fs::write(&p, data).unwrap();
            assert!(run(Command::new("touch")
                .args(["-d", "@1577934246"])
                .arg(&p)));
        }
        let h = |n: &str| host.join(n);
        assert!(run(
            mtools("mmd", &img).args(["::/Dir One", "::/Dir One/Inner"])
        ));
        assert!(run(mtools("mcopy", &img)
            .arg("-m")
            .arg(h("Long File Name.txt"))
            .arg(h("BIG.BIN"))
            .arg(h("empty"))
            .arg("::/")));
        assert!(run(mtools("mcopy", &img)
            .arg("-m")
            .arg(h("grüße – ünïcödé.txt"))
            .arg(h("Long File Name.txt"))
            .arg("::/Dir One/Inner/")));
        assert!(run(mtools("mattrib", &img).args(["+r", "::/empty"])));
        Some(img)
    }

    fn check(bits: &str, kind: FsKind) {
        let tmp = tempfile::tempdir().unwrap();
        let Some(img) = build(tmp.path(), bits) else {
            return;
        };
        let original = std::fs::read(&img).unwrap();
        let dev = Arc::new(MemDisk::from_vec(original.clone()));
        let fs = FatFs::open(dev.clone()).unwrap();
        let id = blkid(&img);
        let info = fs.info();
        assert_eq!(info.kind, kind);
        assert_eq!(id["TYPE"], "vfat");
        assert_eq!(info.label.as_deref(), Some("MYLABEL"));
        assert_eq!(info.label.as_deref(), id.get("LABEL").map(String::as_str));
        assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
        assert_eq!(info.uuid.as_deref(), id.get("UUID").map(String::as_str));
        assert_eq!(info.case, CaseSensitivity::Insensitive);

        // Contents against mtype, with case-insensitive lookups.
        for (ours, theirs) in [
            ("/long file name.TXT", "::/Long File Name.txt"),
            ("/big.bin", "::/BIG.BIN"),
            (
                "/DIR ONE/inner/GRÜSSE – ÜNÏCÖDÉ.TXT",
                "::/Dir One/Inner/grüße – ünïcödé.txt",
            ),
            (
                "/Dir One/Inner/Long File Name.txt",
                "::/Dir One/Inner/Long File Name.txt",
            ),
        ] {
            let want = output(mtools("mtype", &img).arg("-b").arg(theirs)).unwrap();
            let got = fs.read_file(ours.as_bytes(), 1 << 20);
            // Full Unicode case folding: "GRÜSSE" matches "grüße".
            assert_eq!(got.unwrap(), want, "{ours}");
        }
        assert_eq!(fs.read_file(b"/empty", 10).unwrap(), b"");

        // Listings carry the long names as UTF-8.
        let mut root: Vec<_> = fs
            .read_dir(&GuestPath::root())
            .unwrap()
            .into_iter()
            .map(|e| (String::from_utf8(e.name).unwrap(), e.file_type))
            .collect();
        root.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            root,
            [
                ("BIG.BIN".to_owned(), FileType::Regular),
                ("Dir One".to_owned(), FileType::Directory),
                ("Long File Name.txt".to_owned(), FileType::Regular),
                ("empty".to_owned(), FileType::Regular),
            ]
        );
        let inner = fs.read_dir(&gp("/dir one/inner")).unwrap();
        assert!(
            inner
                .iter()
                .any(|e| e.name == "grüße – ünïcödé.txt".as_bytes())
        );

        // Metadata.
        let md = fs.lstat(&gp("/BIG.BIN")).unwrap();
        assert_eq!(
            md,
            Metadata {
                file_type: FileType::Regular,
                size: 100_000,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: MTIME,
                ino: 0,
                nlink: 1
            }
        );
        assert_eq!(fs.lstat(&gp("/empty")).unwrap().mode, 0o444);
        let d = fs.lstat(&gp("/Dir One")).unwrap();
        assert_eq!(
            (d.file_type, d.mode, d.size),
            (FileType::Directory, 0o755, 0)
        );
        assert_eq!(
            fs.lstat(&GuestPath::root()).unwrap().file_type,
            FileType::Directory
        );

        // Positional reads in random order.
        let big = output(mtools("mtype", &img).args(["-b", "::/BIG.BIN"])).unwrap();
        let mut rng = Rng(11);
        for _ in 0..50 {
            let off = rng.below(big.len() as u64 + 10);
            let mut buf = vec![0u8; 1 + rng.below(5000) as usize];
            let n = fs.read_at(&gp("/big.bin"), off, &mut buf).unwrap();
            let s = (off as usize).min(big.len());
            let e = (s + buf.len()).min(big.len());
            assert_eq!(&buf[..n], &big[s..e]);
        }

        // Errors.
        assert!(matches!(fs.lstat(&gp("/nope")), Err(Error::NotFound { path }) if path == "/nope"));
        assert!(matches!(
            fs.lstat(&gp("/BIG.BIN/x")),
            Err(Error::NotADirectory { path }) if path == "/BIG.BIN"
        ));
        assert!(matches!(
            fs.read_at(&gp("/Dir One"), 0, &mut [0; 4]),
            Err(Error::IsADirectory { .. })
        ));
        assert!(matches!(
            fs.read_at(&GuestPath::root(), 0, &mut [0; 4]),
            Err(Error::IsADirectory { .. })
        ));
        assert!(matches!(
            fs.read_dir(&gp("/BIG.BIN")),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            fs.read_link(&gp("/BIG.BIN")),
            Err(Error::NotASymlink { .. })
        ));
        assert!(fs.read_link(&gp("/nope")).unwrap_err().is_not_found());

        // Nothing was written, or even attempted.
        assert_eq!(fs.refused_writes(), 0);
        drop(fs);
        assert_eq!(dev.to_vec(), original);
    }

    #[test]
    fn shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<FatFs>();
        let tmp = tempfile::tempdir().unwrap();
        let Some(img) = build(tmp.path(), "16") else {
            return;
        };
        let fs = Arc::new(
            FatFs::open(Arc::new(MemDisk::from_vec(std::fs::read(img).unwrap()))).unwrap(),
        );
        let want = fs.read_file(b"/BIG.BIN", 1 << 20).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (fs, want) = (fs.clone(), &want);
                s.spawn(move || {
                    for _ in 0..10 {
                        assert_eq!(&fs.read_file(b"/big.bin", 1 << 20).unwrap(), want);
                    }
                });
            }
        });
    }

    #[test]
    fn fat12_reads_like_mtools() {
        check("12", FsKind::Fat12);
    }

    #[test]
    fn fat16_reads_like_mtools() {
        check("16", FsKind::Fat16);
    }

    #[test]
    fn fat32_reads_like_mtools() {
        check("32", FsKind::Fat32);
    }

    fn raw_of(img: &[u8]) -> RawBootSector {
        RawBootSector::read_from_bytes(&img[..512]).unwrap()
    }

    fn bs_err(raw: &RawBootSector) -> (u64, String) {
        match BootSector::try_from(raw) {
            Err(Error::Corrupt {
                structure,
                offset,
                detail,
            }) => {
                assert_eq!(structure, "fat boot sector");
                (offset, detail)
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn boot_sector_validation_branches() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(img16) = build(tmp.path(), "16") else {
            return;
        };
        let Some(img32) = build(tmp.path(), "32") else {
            return;
        };
        let (img16, img32) = (std::fs::read(img16).unwrap(), std::fs::read(img32).unwrap());
        let good = raw_of(&img16);
        let bs = BootSector::try_from(&good).unwrap();
        assert_eq!(
            (bs.kind, bs.bytes_per_sector, bs.fats),
            (FsKind::Fat16, 512, 2)
        );
        assert_eq!(bs.volume_id, Some(0x1234_ABCD));
        assert_eq!(bs.boot_label.as_deref(), Some("MYLABEL"));

        let mut r = good.clone();
        r.signature = [0, 0];
        assert_eq!(bs_err(&r), (510, "signature [00, 00] is not 55 aa".into()));
        let mut r = good.clone();
        r.bs_jmp_boot[0] = 0;
        assert_eq!(
            bs_err(&r),
            (0, "jump opcode 0x00 is not 0xeb or 0xe9".into())
        );
        let mut r = good.clone();
        r.bpb_byts_per_sec = U16::new(1000);
        assert_eq!(
            bs_err(&r),
            (
                0x0B,
                "bytes per sector 1000 is not a power of two in 512..=4096".into()
            )
        );
        let mut r = good.clone();
        r.bpb_sec_per_clus = 3;
        assert_eq!(
            bs_err(&r),
            (
                0x0D,
                "sectors per cluster 3 is not a power of two in 1..=128".into()
            )
        );
        let mut r = good.clone();
        r.bpb_rsvd_sec_cnt = U16::new(0);
        assert_eq!(
            bs_err(&r),
            (0x0E, "reserved sectors 0 out of range 1..".into())
        );
        let mut r = good.clone();
        r.bpb_num_fats = 3;
        assert_eq!(bs_err(&r), (0x10, "fat count 3 out of range 1..=2".into()));
        let mut r = good.clone();
        r.bpb_tot_sec32 = U32::new(5);
        assert_eq!(
            bs_err(&r),
            (
                0x13,
                "exactly one of total sectors 16 (8192) and 32 (5) must be set".into()
            )
        );
        let mut r = good.clone();
        r.bpb_root_ent_cnt = U16::new(0);
        assert_eq!(bs_err(&r), (0x11, "root entries 0 on fat12/16".into()));
        let mut r = good.clone();
        r.bpb_fat_sz16 = U16::new(5000);
        assert_eq!(
            bs_err(&r),
            (
                0x13,
                "total sectors 8192 leave no data region after 10033 metadata sectors".into()
            )
        );
        let mut r = good.clone();
        r.bpb_fat_sz16 = U16::new(1);
        let (at, detail) = bs_err(&r);
        assert_eq!(at, 0x16);
        assert!(
            detail.starts_with("fat of 256 entries too small for "),
            "{detail}"
        );

        let good32 = raw_of(&img32);
        assert_eq!(BootSector::try_from(&good32).unwrap().kind, FsKind::Fat32);
        let mut r = good32.clone();
        r.ext[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            bs_err(&r),
            (0x24, "sectors per fat 0 out of range 1..".into())
        );
        let mut r = good32.clone();
        r.bpb_root_ent_cnt = U16::new(16);
        assert_eq!(
            bs_err(&r),
            (
                0x11,
                "fat32 with root entries 16 and total sectors 16 0 (both must be 0)".into()
            )
        );
        let mut r = good32.clone();
        r.bpb_sec_per_clus = 128;
        let (at, detail) = bs_err(&r);
        assert_eq!(at, 0x16);
        assert!(
            detail.ends_with("clusters mean Fat12 but sectors per fat 16 is 0"),
            "{detail}"
        );
        let mut r = good32.clone();
        r.ext[0x2A - 0x24] = 1;
        assert_eq!(bs_err(&r), (0x2A, "fat32 version 1 is not 0".into()));
        let mut r = good32.clone();
        r.ext[0x30 - 0x24..0x32 - 0x24].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(
            bs_err(&r),
            (
                0x30,
                "fsinfo sector 40 or backup boot sector 6 outside 0..32".into()
            )
        );
        let mut r = good32.clone();
        r.ext[0x2C - 0x24..0x30 - 0x24].copy_from_slice(&1u32.to_le_bytes());
        let (at, detail) = bs_err(&r);
        assert_eq!(at, 0x2C);
        assert!(
            detail.starts_with("root cluster 1 out of range 2.."),
            "{detail}"
        );

        // The volume must fit on its device.
        let short = MemDisk::from_vec(img16[..1 << 20].to_vec());
        assert_eq!(
            BootSector::read(&short).unwrap_err().to_string(),
            "corrupt fat boot sector at 0x13: total sectors 8192 of 512 bytes exceed the 1048576-byte device"
        );
    }

    /// The first cluster and offset of the root directory entry whose 8.3 name starts `prefix`.
    fn root_entry(img: &[u8], bs: &BootSector, prefix: &[u8]) -> (u64, usize) {
        let root = bs.root_dir_offset() as usize;
        for at in (root..root + bs.root_entries as usize * 32).step_by(32) {
            let e = &img[at..at + 32];
            if e[11] != ATTR_LONG_NAME && e.starts_with(prefix) {
                return (u64::from(u16::from_le_bytes([e[26], e[27]])), at);
            }
        }
        panic!("no root entry {prefix:?}");
    }

    fn set_fat16(img: &mut [u8], bs: &BootSector, cluster: u64, value: u16) {
        for copy in 0..bs.fats {
            let at = (bs.fat_offset() + copy * bs.fat_sectors * bs.bytes_per_sector + cluster * 2)
                as usize;
            img[at..at + 2].copy_from_slice(&value.to_le_bytes());
        }
    }

    #[test]
    fn cyclic_directory_chain_ends_in_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(img) = build(tmp.path(), "16") else {
            return;
        };
        let mut img = std::fs::read(img).unwrap();
        let bs = BootSector::try_from(&raw_of(&img)).unwrap();
        let (dir, _) = root_entry(&img, &bs, b"DIRONE");
        // The directory's only cluster: every entry deleted, and the chain points to itself.
        let at = (bs.data_offset() + (dir - 2) * bs.cluster_size()) as usize;
        for e in img[at..at + bs.cluster_size() as usize].chunks_exact_mut(32) {
            e.fill(0);
            e[0] = DIR_ENTRY_FREE;
        }
        set_fat16(&mut img, &bs, dir, dir as u16);
        let fs = FatFs::open(Arc::new(MemDisk::from_vec(img))).unwrap();
        let e = fs.read_dir(&gp("/Dir One")).unwrap_err();
        assert!(
            matches!(&e, Error::LimitExceeded { limit, .. } if *limit == 16 << 20),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "/Dir One: bytes read by one call exceeds the limit of 16777216"
        );
        // The rest of the volume is still readable.
        assert_eq!(fs.read_file(b"/empty", 1).unwrap(), b"");
    }

    #[test]
    fn bad_cluster_numbers_are_corrupt_not_panics() {
        let tmp = tempfile::tempdir().unwrap();
        let Some(img) = build(tmp.path(), "16") else {
            return;
        };
        let img = std::fs::read(img).unwrap();
        let bs = BootSector::try_from(&raw_of(&img)).unwrap();
        let (first, _) = root_entry(&img, &bs, b"BIG     BIN");
        // Cluster 1 is reserved (fatfs subtracts 2 from it and panics in debug builds, which the
        // guard catches); 0xFFF0 lies past the volume; 0xFFFF ends the chain too early.
        for next in [1u16, 0xFFF0, 0xFFFF] {
            let mut bad = img.clone();
            set_fat16(&mut bad, &bs, first, next);
            let fs = FatFs::open(Arc::new(MemDisk::from_vec(bad))).unwrap();
            let e = fs.read_file(b"/BIG.BIN", 1 << 20).unwrap_err();
            assert!(
                matches!(&e, Error::Corrupt { structure, .. } if structure == "fat filesystem"),
                "{next:#x}: {e}"
            );
            if next == 0xFFFF {
                assert_eq!(
                    e.to_string(),
                    "corrupt fat filesystem at 0x0: /BIG.BIN: cluster chain ends at byte 512 of a 100000-byte file"
                );
            }
        }
    }

    #[test]
    fn unix_time_of_fat_dates() {
        let dt = |year, month, day, hour, min, sec| fatfs::DateTime {
            date: fatfs::Date { year, month, day },
            time: fatfs::Time {
                hour,
                min,
                sec,
                millis: 0,
            },
        };
        assert_eq!(unix_time(dt(1980, 1, 1, 0, 0, 0)), 315_532_800);
        assert_eq!(unix_time(dt(2020, 1, 2, 3, 4, 6)), MTIME);
        assert_eq!(unix_time(dt(2024, 2, 29, 23, 59, 58)), 1_709_251_198);
        // Out-of-range fields from a damaged entry still give a number.
        let _ = unix_time(dt(2107, 15, 31, 31, 63, 62));
        let _ = unix_time(dt(1980, 0, 0, 0, 0, 0));
    }
}
