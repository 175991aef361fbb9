//! NTFS reading, over the `ntfs` crate.
//!
//! # Design
//! - The `ntfs` crate parses boot sector, file records, attributes, data runs and single index
//!   nodes. It needs a `Read + Seek` reader; every operation creates a fresh cursor (module `cursor`) over the
//!   shared device, so [`NtfsFs`] holds no lock and is `Send + Sync`.
//! - Directory trees are walked here, not by the crate: its walkers follow subnode pointers with no
//!   depth limit or cycle check (module `index`).
//! - Our own boot-sector check runs first: it names the bad field and, above all, caps the file
//!   record size (the crate accepts up to 127 clusters of 2 MiB and allocates that per record).
//! - Last-resort guard: the crate indexes slices with on-disk offsets in a few places (short
//!   attribute headers, index entries shorter than their header, update-sequence offsets near
//!   `u16::MAX`) and can panic on crafted records. Every public operation therefore runs under
//!   [`std::panic::catch_unwind`], turning such a panic into [`Error::Corrupt`]. This relies on the
//!   workspace building with `panic = "unwind"` (the default; no profile sets `abort`). The default
//!   panic hook still prints the message to stderr.
//!
//! # Mapping to [`FsRead`]
//! - Names are UTF-8 (invalid UTF-16 is replaced lossily in listings; such names cannot be looked up).
//!   Lookup is case-insensitive through the volume's `$UpCase` table.
//! - `read_dir` lists every name once: a DOS 8.3 alias is dropped when the same file has a Win32 or
//!   POSIX name in the directory; `.` (the root's self entry) is skipped. System metafiles
//!   (`$MFT`, `$Bitmap`, ...) are listed, as `ntfsls -a -s` shows them: hiding them would make
//!   `/$Extend` unreachable by listing while it is still reachable by name.
//! - Reparse points tagged `IO_REPARSE_TAG_SYMLINK` or `IO_REPARSE_TAG_MOUNT_POINT` (junctions) are
//!   symlinks; their targets become guest paths (`\??\C:\Windows` → `/Windows`) when they point
//!   at this volume's drive letter ([`NtfsFs::with_drive_letter`], default `C`). Interix symlinks
//!   (what `ntfs-3g` writes for `ln -s`) are symlinks too. Directories with other reparse tags stay
//!   directories (their index is real); other files with reparse tags are [`FileType::Other`].
//! - Sizes come from the unnamed `$DATA` stream; `mtime` from `$STANDARD_INFORMATION`; `ino` is the
//!   MFT record number; `mode` is 0o755 for directories, 0o777 for symlinks, 0o644 otherwise;
//!   `nlink` is the record's hard-link count (which counts a DOS alias as a link).
//! - NTFS-compressed `$DATA` (LZNT1) is decompressed (module `compress`); a compressed stream spread
//!   over an attribute list, EFS-encrypted data, and files whose reparse tag keeps the data
//!   elsewhere (deduplication, WOF/CompactOS compression, cloud placeholders) while their unnamed
//!   stream has no allocated cluster are refused as [`Error::Unsupported`] naming the file: that
//!   stream would read as zeroes. Hydrated cloud files read normally. Bytes
//!   between a stream's valid-data length and its size are returned as stored (the crate does not
//!   expose the valid-data length); Windows itself zeroes them.
//!
//! # Limits of the `ntfs` crate (0.4.0) we inherit
//! - `Ntfs::file` maps record numbers through the `$DATA` attribute found in MFT record 0 only; a
//!   very fragmented `$MFT` whose runs continue in an `$ATTRIBUTE_LIST` extension makes records
//!   past the first extent fail as corrupt.
//! - Index-allocation VCNs are converted with the cluster size; volumes whose clusters are larger
//!   than their index records (64 KiB clusters) would need 512-byte VCN units.

mod compress;
mod cursor;
pub mod fuzzing;
mod index;
mod reparse;
mod write;

pub use write::NtfsRw;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io::SeekFrom;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use disk::{BlockRead, BlockReadExt};
use ntfs::attribute_value::{NtfsAttributeValue, NtfsNonResidentAttributeValue};
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{
    KnownNtfsFileRecordNumber, Ntfs, NtfsAttributeFlags, NtfsAttributeItem, NtfsAttributeType,
    NtfsError, NtfsFile, NtfsFileFlags, NtfsReadSeek,
};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use self::cursor::DevCursor;
use self::reparse::Reparse;
use crate::{
    CaseSensitivity, DirEntry, Error, FileType, FsInfo, FsKind, FsRead, GuestPath, Metadata, Result,
};

/// Most attributes we iterate in one file (including those reached through `$ATTRIBUTE_LIST`).
/// A 4 KiB record holds at most ~170 minimal attributes; lists of heavily fragmented files reach
/// a few hundred.
const MAX_ATTRIBUTES: usize = 4096;

/// NT time counts 100 ns intervals ([MS-DTYP] 2.3.3 FILETIME).
const NT_TICKS_PER_SEC: u64 = 10_000_000;
/// Seconds from 1601-01-01 (FILETIME epoch) to 1970-01-01 (Unix epoch).
const NT_TO_UNIX_EPOCH_SECS: i64 = 11_644_473_600;

/// MFT records below this are reserved for metafiles (NTFS 3.x reserves 0..=23); they are never
/// Interix symlinks, so we do not read their data to find out.
const FIRST_USER_RECORD: u64 = 24;

/// Boot sector: `"NTFS    "` at offset 3 (OEM ID).
const NTFS_OEM_ID: &[u8; 8] = b"NTFS    ";
/// Boot sector signature at offset 0x1FE.
const BOOT_SIGNATURE: u16 = 0xAA55;
/// Sector sizes Windows supports (crate and Windows: 512..=4096, powers of two).
const SECTOR_SIZES: std::ops::RangeInclusive<u16> = 512..=4096;
/// Largest cluster Windows creates: 2 MiB (Windows 10 1709+).
const MAX_CLUSTER_SIZE: u32 = 2 * 1024 * 1024;
/// File record sizes we accept: 1 KiB (the norm) to 4 KiB (4Kn disks).
const FILE_RECORD_SIZES: std::ops::RangeInclusive<u32> = 1024..=4096;

/// The NTFS boot sector (first step of house style S10). Offsets per the NTFS BPB layout as
/// documented in the Linux-NTFS project's "Boot sector" page and Microsoft's "NTFS Technical
/// Reference" (BPB and extended BPB).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct RawBootSector {
    jump: [u8; 3],
    /// 0x03: `"NTFS    "`.
    oem_id: [u8; 8],
    /// 0x0B.
    bytes_per_sector: U16,
    /// 0x0D: 1..=128 (power of two), or 2^(-n) as a negative i8 for clusters over 64 KiB.
    sectors_per_cluster: u8,
    reserved: [u8; 26],
    /// 0x28.
    total_sectors: U64,
    /// 0x30: logical cluster number of `$MFT`.
    mft_lcn: U64,
    /// 0x38.
    mft_mirror_lcn: U64,
    /// 0x40: clusters per file record if positive, else the record size is 2^(-n) bytes.
    clusters_per_file_record: i8,
    pad1: [u8; 3],
    /// 0x44: same encoding for index records.
    clusters_per_index_record: i8,
    pad2: [u8; 3],
    /// 0x48: volume serial number.
    serial_number: U64,
    /// 0x50.
    checksum: U32,
    boot_code: [u8; 426],
    /// 0x1FE.
    signature: U16,
}

/// The validated boot-sector facts we use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BootSector {
    cluster_size: u32,
    file_record_size: u32,
    serial_number: u64,
}

fn boot_err(offset: u64, detail: String) -> Error {
    Error::corrupt("ntfs boot sector", offset, detail)
}

impl BootSector {
    fn read(dev: &dyn BlockRead) -> Result<Self> {
        let size = dev.size();
        let len = u64::try_from(size_of::<RawBootSector>()).unwrap_or(u64::MAX);
        if size < len {
            return Err(boot_err(
                0,
                format!("device of {size} bytes is smaller than the {len}-byte boot sector"),
            ));
        }
        let raw: RawBootSector = dev.read_struct(0)?;
        Self::validate(&raw, size)
    }

    fn validate(raw: &RawBootSector, dev_size: u64) -> Result<Self> {
        if &raw.oem_id != NTFS_OEM_ID {
            return Err(boot_err(
                3,
                format!(
                    "oem id {:?} is not \"NTFS    \"",
                    String::from_utf8_lossy(&raw.oem_id)
                ),
            ));
        }
        if raw.signature.get() != BOOT_SIGNATURE {
            return Err(boot_err(
                0x1fe,
                format!("signature {:#06x} is not 0xaa55", raw.signature.get()),
            ));
        }
        let bps = raw.bytes_per_sector.get();
        if !SECTOR_SIZES.contains(&bps) || !bps.is_power_of_two() {
            return Err(boot_err(
                0x0b,
                format!("bytes per sector {bps} is not a power of two in 512..=4096"),
            ));
        }
        let spc = raw.sectors_per_cluster;
        let sectors_per_cluster: u32 = if spc <= 128 {
            if !spc.is_power_of_two() {
                return Err(boot_err(
                    0x0d,
                    format!("sectors per cluster {spc} is not a power of two in 1..=128"),
                ));
            }
            u32::from(spc)
        } else {
            // 0x80 < spc: the value is -n as an i8 and there are 2^n sectors per cluster.
            let exp = 256 - u32::from(spc);
            if exp > 12 {
                return Err(boot_err(
                    0x0d,
                    format!("sectors per cluster exponent {exp} out of range 8..=12"),
                ));
            }
            1 << exp
        };
        let cluster_size = sectors_per_cluster * u32::from(bps);
        if cluster_size > MAX_CLUSTER_SIZE {
            return Err(boot_err(
                0x0d,
                format!("cluster size {cluster_size} exceeds {MAX_CLUSTER_SIZE}"),
            ));
        }
        let cpfr = raw.clusters_per_file_record;
        let file_record_size = if cpfr > 0 {
            cluster_size.checked_mul(u32::from(cpfr.unsigned_abs()))
        } else {
            1u32.checked_shl(u32::from(cpfr.unsigned_abs()))
        };
        let file_record_size = file_record_size
            .filter(|s| FILE_RECORD_SIZES.contains(s))
            .ok_or_else(|| {
                boot_err(
                    0x40,
                    format!(
                        "clusters per file record {cpfr} gives a record size outside 1024..=4096"
                    ),
                )
            })?;
        let mft_lcn = raw.mft_lcn.get();
        let mft_end = mft_lcn
            .checked_mul(u64::from(cluster_size))
            .and_then(|o| o.checked_add(u64::from(file_record_size)));
        match mft_end {
            Some(end) if mft_lcn > 0 && end <= dev_size => {}
            _ => {
                return Err(boot_err(
                    0x30,
                    format!(
                        "mft lcn {mft_lcn} (cluster size {cluster_size}) is outside the \
                         {dev_size}-byte device"
                    ),
                ));
            }
        }
        Ok(Self {
            cluster_size,
            file_record_size,
            serial_number: raw.serial_number.get(),
        })
    }
}

/// State of the volume, from `$Volume`'s `$VOLUME_INFORMATION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeState {
    /// The raw volume flags.
    pub flags: u16,
    /// `VOLUME_IS_DIRTY`: Windows was not shut down cleanly (or chkdsk is scheduled).
    pub dirty: bool,
    /// NTFS major version (3 for Windows 2000 and later).
    pub major_version: u8,
    /// NTFS minor version (1 for Windows XP and later).
    pub minor_version: u8,
}

/// A read-only NTFS filesystem.
pub struct NtfsFs {
    dev: Arc<dyn BlockRead>,
    ntfs: Ntfs,
    upcase: Upcase,
    boot: BootSector,
    label: Option<String>,
    volume: VolumeState,
    drive_letter: u8,
}

impl std::fmt::Debug for NtfsFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsFs")
            .field("boot", &self.boot)
            .field("label", &self.label)
            .field("volume", &self.volume)
            .finish_non_exhaustive()
    }
}

/// Per-operation context: the cursor, and conversion of the crate's errors into ours.
struct NtfsCx<'a> {
    cur: DevCursor<'a>,
}

impl<'a> NtfsCx<'a> {
    fn new(dev: &'a dyn BlockRead, extra_bytes: u64) -> Self {
        Self {
            cur: DevCursor::new(dev, extra_bytes),
        }
    }

    /// Reads raw bytes at `pos` of the volume, counted against the operation's budget.
    fn cur_read(&mut self, pos: u64, buf: &mut [u8]) -> Result<()> {
        use std::io::{Read, Seek};
        let io = |e: std::io::Error| Error::corrupt("ntfs cluster", pos, e.to_string());
        self.cur.seek(SeekFrom::Start(pos)).map_err(io)?;
        let res = self.cur.read_exact(buf);
        if let Some(f) = self.cur.take_failure() {
            return Err(f);
        }
        res.map_err(|_| {
            Error::corrupt(
                "ntfs cluster",
                pos,
                format!(
                    "cluster of {} bytes lies past the end of the volume",
                    buf.len()
                ),
            )
        })
    }

    /// Converts an error of the `ntfs` crate: a device error (or exhausted budget) behind it wins;
    /// sizes the crate does not support are `Unsupported`; everything else is corruption of
    /// `structure` near `offset`.
    fn err(&mut self, structure: impl Into<String>, offset: u64, e: NtfsError) -> Error {
        if let Some(failure) = self.cur.take_failure() {
            return failure;
        }
        match e {
            NtfsError::UnsupportedClusterSize { .. } | NtfsError::UnsupportedSectorSize { .. } => {
                Error::unsupported("ntfs volume", e.to_string())
            }
            _ => Error::corrupt(structure, offset, e.to_string()),
        }
    }
}

/// Byte offset of a file record on the volume (0 if unknown).
fn file_offset(f: &NtfsFile<'_>) -> u64 {
    f.position().value().map_or(0, std::num::NonZeroU64::get)
}

/// Runs `f`, turning a panic inside the `ntfs` crate into a corruption error (see module docs).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::debug!(what, msg, "ntfs crate panicked on malformed metadata");
        Err(Error::corrupt(
            "ntfs metadata",
            0,
            format!("malformed structure while reading {what} (parser panic: {msg})"),
        ))
    })
}

/// Converts an NT timestamp (100 ns since 1601) to Unix seconds.
fn nt_to_unix(ticks: u64) -> i64 {
    // ticks / 10^7 < 2^64 / 10^7 < 2^41, so it fits i64 and the subtraction cannot overflow.
    i64::try_from(ticks / NT_TICKS_PER_SEC).unwrap_or(i64::MAX) - NT_TO_UNIX_EPOCH_SECS
}

/// Size of `$UpCase`'s data: one uppercase UTF-16 unit for each of the 65,536 code units.
const UPCASE_LEN: u64 = 2 * 65_536;

/// The volume's `$UpCase` table, kept as the raw little-endian bytes. We compare names ourselves
/// instead of through the crate's table: converting 65,536 entries at every open is the single
/// largest cost of opening a volume in a debug build, and the crate panics if the table is missing.
struct Upcase(Vec<u8>);

impl Upcase {
    fn read(ntfs: &Ntfs, cx: &mut NtfsCx<'_>) -> Result<Self> {
        let file = load_file(ntfs, cx, KnownNtfsFileRecordNumber::UpCase as u64, None)?;
        let at = file_offset(&file);
        let item = find_attribute(cx, &file, NtfsAttributeType::Data, "")?
            .ok_or_else(|| Error::corrupt("ntfs $UpCase", at, "no unnamed $DATA attribute"))?;
        let len = item
            .to_attribute()
            .map_err(|e| cx.err("ntfs $UpCase", at, e))?
            .value_length();
        if len != UPCASE_LEN {
            return Err(Error::corrupt(
                "ntfs $UpCase",
                at,
                format!("table of {len} bytes, expected {UPCASE_LEN}"),
            ));
        }
        read_small_value(cx, &item, at, "ntfs $UpCase", UPCASE_LEN).map(Self)
    }

    fn upper(&self, c: u16) -> u16 {
        let i = usize::from(c) * 2;
        // The table is exactly 2 * 65,536 bytes (checked in read), so both bytes exist.
        match self.0.get(i..i + 2) {
            Some(b) => u16::from_le_bytes([b[0], b[1]]),
            None => c,
        }
    }

    /// Compares `name` with the UTF-16LE bytes `key` as NTFS collates file names: code unit by
    /// code unit after upcasing, a shorter prefix first.
    fn cmp_name(&self, name: &[u16], key: &[u8]) -> std::cmp::Ordering {
        let mut key_units = key
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        for &a in name {
            let Some(b) = key_units.next() else {
                return std::cmp::Ordering::Greater;
            };
            let (ua, ub) = (self.upper(a), self.upper(b));
            if ua != ub {
                return ua.cmp(&ub);
            }
        }
        if key_units.next().is_some() {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Equal
        }
    }
}

/// What a file is, as far as `lstat` and `read_dir` care.
enum Kind {
    Directory,
    Regular,
    /// A symlink; the target, or why it cannot be expressed inside this volume.
    Symlink(std::result::Result<Vec<u8>, String>),
    Other,
}

impl NtfsFs {
    /// Opens the NTFS filesystem on `dev` (which must hold exactly the volume, e.g. a partition).
    ///
    /// Reads and checks the boot sector, the `$UpCase` table, the root directory and `$Volume`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a bad boot sector or damaged metafiles; [`Error::Unsupported`] for
    /// sector or cluster sizes outside what Windows supports; device errors.
    pub fn open(dev: Arc<dyn BlockRead>) -> Result<Self> {
        guarded("the volume metadata", || Self::open_inner(dev))
    }

    fn open_inner(dev: Arc<dyn BlockRead>) -> Result<Self> {
        let boot = BootSector::read(&*dev)?;
        let mut cx = NtfsCx::new(&*dev, 0);
        let ntfs = Ntfs::new(&mut cx.cur).map_err(|e| cx.err("ntfs boot sector", 0, e))?;
        let upcase = Upcase::read(&ntfs, &mut cx)?;
        let root = load_file(
            &ntfs,
            &mut cx,
            KnownNtfsFileRecordNumber::RootDirectory as u64,
            None,
        )?;
        if !root.is_directory() {
            return Err(Error::corrupt(
                "ntfs root directory",
                file_offset(&root),
                "mft record 5 is not a directory",
            ));
        }
        let info = ntfs
            .volume_info(&mut cx.cur)
            .map_err(|e| cx.err("ntfs $Volume $VOLUME_INFORMATION", 0, e))?;
        let flags = info.flags();
        let volume = VolumeState {
            flags: flags.bits(),
            dirty: flags.contains(ntfs::structured_values::NtfsVolumeFlags::IS_DIRTY),
            major_version: info.major_version(),
            minor_version: info.minor_version(),
        };
        let label = match ntfs.volume_name(&mut cx.cur) {
            None => None,
            Some(Ok(name)) => Some(name.name().to_string_lossy()).filter(|s| !s.is_empty()),
            Some(Err(e)) => return Err(cx.err("ntfs $Volume $VOLUME_NAME", 0, e)),
        };
        drop(root);
        Ok(Self {
            dev,
            ntfs,
            upcase,
            boot,
            label,
            volume,
            drive_letter: b'C',
        })
    }

    /// Sets the drive letter this volume has in the guest (default `C`): absolute symlink and
    /// junction targets on that drive are resolved inside the volume, others are errors.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if `letter` is not an ASCII letter.
    pub fn with_drive_letter(mut self, letter: char) -> Result<Self> {
        match u8::try_from(letter) {
            Ok(b) if b.is_ascii_alphabetic() => {
                self.drive_letter = b.to_ascii_uppercase();
                Ok(self)
            }
            _ => Err(Error::InvalidPath {
                path: letter.to_string(),
                why: "a drive letter must be one of A-Z",
            }),
        }
    }

    /// The volume's dirty flag, raw flags and NTFS version.
    #[must_use]
    pub fn volume_flags(&self) -> VolumeState {
        self.volume
    }

    /// The 64-bit volume serial number from the boot sector.
    #[must_use]
    pub fn serial_number(&self) -> u64 {
        self.boot.serial_number
    }

    /// The cluster size in bytes.
    #[must_use]
    pub fn cluster_size(&self) -> u32 {
        self.boot.cluster_size
    }

    /// Runs one operation with a fresh cursor, under the panic guard.
    fn op<T>(
        &self,
        path: &GuestPath,
        extra_bytes: u64,
        f: impl FnOnce(&mut NtfsCx<'_>) -> Result<T>,
    ) -> Result<T> {
        guarded(&path.to_string(), || {
            let mut cx = NtfsCx::new(&*self.dev, extra_bytes);
            f(&mut cx)
        })
    }

    /// The file at `path` (no symlink is followed; directory components are plain directories).
    fn find<'n>(&'n self, cx: &mut NtfsCx<'_>, path: &GuestPath) -> Result<NtfsFile<'n>> {
        let root = KnownNtfsFileRecordNumber::RootDirectory as u64;
        let mut file = load_file(&self.ntfs, cx, root, None)?;
        let comps = path.components();
        for (i, comp) in comps.iter().enumerate() {
            if !file.is_directory() {
                return Err(Error::NotADirectory {
                    path: prefix(comps, i),
                });
            }
            let not_found = || Error::NotFound {
                path: path.to_string(),
            };
            let name = std::str::from_utf8(comp).map_err(|_| not_found())?;
            let key = index::lookup(cx, &self.upcase, &file, name)?.ok_or_else(not_found)?;
            file = load_file(&self.ntfs, cx, key.record, Some(key.sequence))?;
        }
        Ok(file)
    }

    fn kind(&self, cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<Kind> {
        let si = file
            .info()
            .map_err(|e| cx.err("ntfs $STANDARD_INFORMATION", file_offset(file), e))?;
        let attrs = si.file_attributes();
        let is_dir = file.flags().contains(NtfsFileFlags::IS_DIRECTORY);
        if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            return Ok(match read_reparse(cx, file)? {
                Some(link @ Reparse::Link { .. }) => {
                    Kind::Symlink(reparse::link_target(&link, self.drive_letter))
                }
                _ if is_dir => Kind::Directory,
                _ => Kind::Other,
            });
        }
        if is_dir {
            return Ok(Kind::Directory);
        }
        if attrs.contains(NtfsFileAttributeFlags::SYSTEM)
            && file.file_record_number() >= FIRST_USER_RECORD
            && let Some(target) = read_interix(cx, file)?
        {
            return Ok(Kind::Symlink(Ok(target)));
        }
        Ok(Kind::Regular)
    }

    fn stat(&self, cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<Metadata> {
        let si = file
            .info()
            .map_err(|e| cx.err("ntfs $STANDARD_INFORMATION", file_offset(file), e))?;
        let mtime = nt_to_unix(si.modification_time().nt_timestamp());
        let (file_type, size, mode) = match self.kind(cx, file)? {
            Kind::Directory => (FileType::Directory, 0, 0o755),
            Kind::Symlink(t) => (
                FileType::Symlink,
                t.map_or(0, |t| u64::try_from(t.len()).unwrap_or(u64::MAX)),
                0o777,
            ),
            Kind::Regular => (FileType::Regular, data_size(cx, file)?, 0o644),
            Kind::Other => (FileType::Other, data_size(cx, file)?, 0o644),
        };
        Ok(Metadata {
            file_type,
            size,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            ino: file.file_record_number(),
            nlink: u64::from(file.hard_link_count()).max(1),
        })
    }
}

/// `/a/b` for the first `n` components.
fn prefix(comps: &[Vec<u8>], n: usize) -> String {
    GuestPath::from_components(comps.get(..n).unwrap_or(comps).to_vec()).to_string()
}

/// Loads MFT record `record`, checking it is in use and (when known) that its sequence number
/// matches the directory entry's reference.
fn load_file<'n>(
    ntfs: &'n Ntfs,
    cx: &mut NtfsCx<'_>,
    record: u64,
    sequence: Option<u16>,
) -> Result<NtfsFile<'n>> {
    let structure = || format!("ntfs file record {record}");
    let file = ntfs
        .file(&mut cx.cur, record)
        .map_err(|e| cx.err(structure(), 0, e))?;
    if !file.flags().contains(NtfsFileFlags::IN_USE) {
        return Err(Error::corrupt(
            structure(),
            file_offset(&file),
            "record is not in use (stale directory entry)",
        ));
    }
    if let Some(seq) = sequence.filter(|&s| s != 0)
        && file.sequence_number() != seq
    {
        {
            return Err(Error::corrupt(
                structure(),
                file_offset(&file),
                format!(
                    "sequence number {} does not match the directory entry's {seq}",
                    file.sequence_number()
                ),
            ));
        }
    }
    Ok(file)
}

/// The first attribute of type `ty` named `name` (`""`: unnamed), searching attribute lists too.
fn find_attribute<'n, 'f>(
    cx: &mut NtfsCx<'_>,
    file: &'f NtfsFile<'n>,
    ty: NtfsAttributeType,
    name: &str,
) -> Result<Option<NtfsAttributeItem<'n, 'f>>> {
    let at = file_offset(file);
    let mut attrs = file.attributes();
    let mut seen = 0usize;
    while let Some(item) = attrs.next(&mut cx.cur) {
        seen += 1;
        if seen > MAX_ATTRIBUTES {
            return Err(Error::corrupt(
                "ntfs file record",
                at,
                format!("more than {MAX_ATTRIBUTES} attributes"),
            ));
        }
        let item = item.map_err(|e| cx.err("ntfs attribute", at, e))?;
        let attr = item
            .to_attribute()
            .map_err(|e| cx.err("ntfs attribute", at, e))?;
        // Unknown attribute types are skipped, not fatal: newer Windows versions add some.
        if attr.ty().ok() != Some(ty) {
            continue;
        }
        let attr_name = attr
            .name()
            .map_err(|e| cx.err("ntfs attribute name", at, e))?;
        if attr_name == name {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// Size of the unnamed `$DATA` stream (0 if there is none).
fn data_size(cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<u64> {
    let at = file_offset(file);
    match find_attribute(cx, file, NtfsAttributeType::Data, "")? {
        None => Ok(0),
        Some(item) => {
            let attr = item
                .to_attribute()
                .map_err(|e| cx.err("ntfs $DATA", at, e))?;
            Ok(attr.value_length())
        }
    }
}

/// Reads a whole small attribute value (at most `cap` bytes).
fn read_small_value(
    cx: &mut NtfsCx<'_>,
    item: &NtfsAttributeItem<'_, '_>,
    at: u64,
    what: &str,
    cap: u64,
) -> Result<Vec<u8>> {
    let attr = item.to_attribute().map_err(|e| cx.err(what, at, e))?;
    let len = attr.value_length();
    if len > cap {
        return Err(Error::corrupt(
            what,
            at,
            format!("value of {len} bytes exceeds the {cap}-byte maximum"),
        ));
    }
    // len <= cap, which is at most 128 KiB (the upcase table).
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut value = attr.value(&mut cx.cur).map_err(|e| cx.err(what, at, e))?;
    let n = value
        .read(&mut cx.cur, &mut buf)
        .map_err(|e| cx.err(what, at, e))?;
    if n != buf.len() {
        return Err(Error::corrupt(
            what,
            at,
            format!("value ends after {n} of {len} bytes"),
        ));
    }
    Ok(buf)
}

/// The parsed `$REPARSE_POINT` of `file`, if it has one.
fn read_reparse(cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<Option<Reparse>> {
    let at = file_offset(file);
    let what = "ntfs $REPARSE_POINT";
    let Some(item) = find_attribute(cx, file, NtfsAttributeType::ReparsePoint, "")? else {
        return Ok(None);
    };
    let data = read_small_value(cx, &item, at, what, reparse::MAX_REPARSE_DATA)?;
    reparse::parse(&data)
        .map(Some)
        .map_err(|detail| Error::corrupt(what, at, detail))
}

/// The target of `file` if it is an Interix symlink (SYSTEM attribute, magic, UTF-16 target).
fn read_interix(cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<Option<Vec<u8>>> {
    let at = file_offset(file);
    let Some(item) = find_attribute(cx, file, NtfsAttributeType::Data, "")? else {
        return Ok(None);
    };
    let attr = item
        .to_attribute()
        .map_err(|e| cx.err("ntfs $DATA", at, e))?;
    let len = attr.value_length();
    let min = u64::try_from(reparse::INTERIX_SYMLINK_MAGIC.len()).unwrap_or(u64::MAX) + 2;
    if !(min..=reparse::MAX_INTERIX_LEN).contains(&len)
        || attr
            .flags()
            .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED)
    {
        return Ok(None);
    }
    let data = read_small_value(cx, &item, at, "ntfs $DATA", reparse::MAX_INTERIX_LEN)?;
    Ok(reparse::interix_target(&data))
}

impl FsRead for NtfsFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: FsKind::Ntfs,
            label: self.label.clone(),
            // blkid prints the 64-bit serial as 16 uppercase hex digits.
            uuid: Some(format!("{:016X}", self.boot.serial_number)),
            case: CaseSensitivity::Insensitive,
        }
    }

    fn lstat(&self, path: &GuestPath) -> Result<Metadata> {
        self.op(path, 0, |cx| {
            let file = self.find(cx, path)?;
            self.stat(cx, &file)
        })
    }

    fn read_dir(&self, path: &GuestPath) -> Result<Vec<DirEntry>> {
        self.op(path, 0, |cx| {
            let dir = self.find(cx, path)?;
            if !dir.is_directory() {
                return Err(Error::NotADirectory {
                    path: path.to_string(),
                });
            }
            let keys = index::list(cx, &dir)?;
            let has_long_name: HashSet<u64> = keys
                .iter()
                .filter(|k| k.namespace != NtfsFileNamespace::Dos)
                .map(|k| k.record)
                .collect();
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                if k.namespace == NtfsFileNamespace::Dos && has_long_name.contains(&k.record) {
                    continue;
                }
                let units: Vec<u16> = k
                    .name
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let name = String::from_utf16_lossy(&units);
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.contains('/')
                    || name.contains('\0')
                {
                    tracing::debug!(
                        ?name,
                        record = k.record,
                        "skipping unrepresentable ntfs name"
                    );
                    continue;
                }
                let file_type = self.entry_type(cx, &k)?;
                out.push(DirEntry {
                    name: name.into_bytes(),
                    file_type,
                });
            }
            Ok(out)
        })
    }

    fn read_link(&self, path: &GuestPath) -> Result<Vec<u8>> {
        self.op(path, 0, |cx| {
            let file = self.find(cx, path)?;
            match self.kind(cx, &file)? {
                Kind::Symlink(Ok(target)) => Ok(target),
                Kind::Symlink(Err(why)) => Err(Error::unsupported(
                    "ntfs symlink target",
                    format!("{path}: {why}"),
                )),
                _ => Err(Error::NotASymlink {
                    path: path.to_string(),
                }),
            }
        })
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let want_max = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        self.op(path, want_max, |cx| {
            let file = self.find(cx, path)?;
            if file.is_directory() {
                return Err(Error::IsADirectory {
                    path: path.to_string(),
                });
            }
            refuse_data_elsewhere(cx, &file, path)?;
            read_data(cx, &file, path, offset, buf)
        })
    }
}

impl NtfsFs {
    /// The type of a directory entry: from the index key when that is conclusive, else by
    /// loading the file (reparse points, and system files that may be Interix symlinks).
    fn entry_type(&self, cx: &mut NtfsCx<'_>, k: &index::Key) -> Result<FileType> {
        let a = k.attributes;
        let maybe_interix = a.contains(NtfsFileAttributeFlags::SYSTEM)
            && !a.contains(NtfsFileAttributeFlags::IS_DIRECTORY)
            && k.record >= FIRST_USER_RECORD;
        if !a.contains(NtfsFileAttributeFlags::REPARSE_POINT) && !maybe_interix {
            return Ok(if a.contains(NtfsFileAttributeFlags::IS_DIRECTORY) {
                FileType::Directory
            } else {
                FileType::Regular
            });
        }
        let kind =
            load_file(&self.ntfs, cx, k.record, Some(k.sequence)).and_then(|f| self.kind(cx, &f));
        Ok(match kind {
            Ok(Kind::Directory) => FileType::Directory,
            Ok(Kind::Regular) => FileType::Regular,
            Ok(Kind::Symlink(_)) => FileType::Symlink,
            Ok(Kind::Other) => FileType::Other,
            // The device failing or the budget running out ends the listing; a damaged entry
            // does not hide its siblings (lstat on it reports the damage).
            Err(e @ (Error::Disk(_) | Error::LimitExceeded { .. })) => return Err(e),
            Err(e) => {
                tracing::debug!(record = k.record, error = %e, "unreadable ntfs entry");
                FileType::Other
            }
        })
    }
}

/// Refuses to read files whose reparse tag says the data is not in the unnamed stream
/// (deduplicated, WOF-compressed, cloud placeholders): that stream reads as zeroes.
fn refuse_data_elsewhere(cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>, path: &GuestPath) -> Result<()> {
    let si = file
        .info()
        .map_err(|e| cx.err("ntfs $STANDARD_INFORMATION", file_offset(file), e))?;
    if !si
        .file_attributes()
        .contains(NtfsFileAttributeFlags::REPARSE_POINT)
    {
        return Ok(());
    }
    match read_reparse(cx, file)? {
        Some(Reparse::Other { tag })
            if reparse::data_elsewhere(tag) && !stream_has_clusters(cx, file)? =>
        {
            Err(Error::unsupported(
                "ntfs reparse point",
                format!("{path}: data is held outside the file by reparse tag {tag:#010x}"),
            ))
        }
        _ => Ok(()),
    }
}

/// True if the unnamed `$DATA` stream is empty, resident, or has at least one allocated run: a
/// hydrated cloud file keeps its data locally; a placeholder, a WOF-compressed or a deduplicated
/// file has an entirely sparse stream.
fn stream_has_clusters(cx: &mut NtfsCx<'_>, file: &NtfsFile<'_>) -> Result<bool> {
    let at = file_offset(file);
    let Some(item) = find_attribute(cx, file, NtfsAttributeType::Data, "")? else {
        return Ok(true);
    };
    let attr = item
        .to_attribute()
        .map_err(|e| cx.err("ntfs $DATA", at, e))?;
    if attr.is_resident() || attr.value_length() == 0 {
        return Ok(true);
    }
    let value = attr
        .value(&mut cx.cur)
        .map_err(|e| cx.err("ntfs $DATA", at, e))?;
    let NtfsAttributeValue::NonResident(nr) = &value else {
        // Spread over an attribute list: too large to be a placeholder; assume data is local.
        return Ok(true);
    };
    for run in nr.data_runs().take(MAX_COMPRESSED_RUNS) {
        let run = run.map_err(|e| cx.err("ntfs $DATA", at, e))?;
        if run.data_position().value().is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Reads from the unnamed `$DATA` stream of `file`.
fn read_data(
    cx: &mut NtfsCx<'_>,
    file: &NtfsFile<'_>,
    path: &GuestPath,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize> {
    let at = file_offset(file);
    let what = || format!("ntfs $DATA of {path}");
    let Some(item) = find_attribute(cx, file, NtfsAttributeType::Data, "")? else {
        return Ok(0);
    };
    let attr = item.to_attribute().map_err(|e| cx.err(what(), at, e))?;
    let flags = attr.flags();
    if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
        return Err(Error::unsupported(
            "ntfs encrypted data",
            format!("{path}: the data stream is encrypted (EFS)"),
        ));
    }
    let len = attr.value_length();
    let Some(left) = len.checked_sub(offset).filter(|&l| l > 0) else {
        return Ok(0);
    };
    let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
    if want == 0 {
        return Ok(0);
    }
    let mut value = attr.value(&mut cx.cur).map_err(|e| cx.err(what(), at, e))?;
    // Resident values are never compressed, whatever the flag says.
    if flags.contains(NtfsAttributeFlags::COMPRESSED) && !attr.is_resident() {
        let NtfsAttributeValue::NonResident(nr) = &value else {
            return Err(Error::unsupported(
                "ntfs compressed data",
                format!("{path}: compressed stream spread over an attribute list"),
            ));
        };
        // OK to slice: want <= buf.len().
        read_compressed(cx, nr, path, at, offset, &mut buf[..want])?;
        return Ok(want);
    }
    value
        .seek(&mut cx.cur, SeekFrom::Start(offset))
        .map_err(|e| cx.err(what(), at, e))?;
    // OK to slice: want <= buf.len().
    let n = value
        .read(&mut cx.cur, &mut buf[..want])
        .map_err(|e| cx.err(what(), at, e))?;
    if n < want {
        return Err(Error::corrupt(
            what(),
            at,
            format!(
                "data runs end at byte {}, before the stream size {len}",
                offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX))
            ),
        ));
    }
    Ok(n)
}

/// Most data runs we accept in one compressed stream, and look at when checking a stream for
/// allocated clusters (a run needs at least two bytes of a record of at most 4 KiB, so a single
/// attribute cannot exceed 2,048).
const MAX_COMPRESSED_RUNS: usize = 2048;

/// Reads `buf.len()` bytes at `offset` of a compressed non-resident stream (see module `compress`).
fn read_compressed(
    cx: &mut NtfsCx<'_>,
    value: &NtfsNonResidentAttributeValue<'_, '_>,
    path: &GuestPath,
    at: u64,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let what = || format!("ntfs compressed $DATA of {path}");
    let cluster = value.ntfs().cluster_size();
    if cluster > compress::MAX_COMPRESSED_CLUSTER {
        return Err(Error::unsupported(
            "ntfs compressed data",
            format!("{path}: compression with {cluster}-byte clusters"),
        ));
    }
    let cluster = u64::from(cluster);
    // (first vcn, cluster count, byte position or None for sparse), in vcn order.
    let mut runs: Vec<(u64, u64, Option<u64>)> = Vec::new();
    let mut vcn = 0u64;
    for run in value.data_runs() {
        if runs.len() >= MAX_COMPRESSED_RUNS {
            return Err(Error::corrupt(
                what(),
                at,
                format!("more than {MAX_COMPRESSED_RUNS} data runs"),
            ));
        }
        let run = run.map_err(|e| cx.err(what(), at, e))?;
        let clusters = run.allocated_size() / cluster;
        runs.push((
            vcn,
            clusters,
            run.data_position().value().map(std::num::NonZeroU64::get),
        ));
        vcn = vcn.saturating_add(clusters);
    }
    let unit_len = compress::UNIT_CLUSTERS * cluster;
    let unit_usize = usize::try_from(unit_len).unwrap_or(usize::MAX);
    let mut unit = vec![0u8; unit_usize];
    let mut packed = Vec::with_capacity(unit_usize);
    let mut done = 0usize;
    while done < buf.len() {
        let pos = offset.saturating_add(u64::try_from(done).unwrap_or(u64::MAX));
        let unit_no = pos / unit_len;
        let first_vcn = unit_no.saturating_mul(compress::UNIT_CLUSTERS);
        // Where each cluster of the unit is stored.
        let mut stored = 0u64;
        let mut sparse_seen = false;
        packed.clear();
        for c in 0..compress::UNIT_CLUSTERS {
            let v = first_vcn.saturating_add(c);
            let place = runs
                .iter()
                .find(|(start, n, _)| v >= *start && v - *start < *n)
                .and_then(|(start, _, p)| p.map(|p| p.saturating_add((v - start) * cluster)));
            match place {
                Some(p) if !sparse_seen => {
                    stored += 1;
                    let mut c_buf = vec![0u8; usize::try_from(cluster).unwrap_or(0)];
                    cx.cur_read(p, &mut c_buf)?;
                    packed.extend_from_slice(&c_buf);
                }
                Some(_) => {
                    return Err(Error::corrupt(
                        what(),
                        at,
                        format!(
                            "compression unit {unit_no} has allocated clusters after sparse ones"
                        ),
                    ));
                }
                None => sparse_seen = true,
            }
        }
        unit.fill(0);
        if stored == compress::UNIT_CLUSTERS {
            unit.copy_from_slice(&packed);
        } else if stored > 0 {
            compress::lznt1_decompress(&packed, &mut unit).map_err(|d| {
                Error::corrupt(what(), at, format!("compression unit {unit_no}: {d}"))
            })?;
        }
        let in_unit = usize::try_from(pos % unit_len).unwrap_or(0);
        let n = (unit_usize - in_unit).min(buf.len() - done);
        // OK to slice: in_unit + n <= unit_usize and done + n <= buf.len().
        buf[done..done + n].copy_from_slice(&unit[in_unit..in_unit + n]);
        done += n;
    }
    Ok(())
}
