//! qcow2 volumes: an [`ExportBackend`] over `disk`'s imago-based [`Qcow2Image`], and the writer
//! of new, empty qcow2 images (format: qemu's `docs/interop/qcow2.txt`).
//!
//! `imago`'s synchronous wrapper owns a private tokio runtime, so a [`Qcow2Image`] must never be
//! used or dropped on a reactor thread. The server calls every backend method from the blocking
//! pool; dropping is handled here: when the last reference goes away inside a tokio context (any
//! thread of the server's runtime), the image is handed to a dedicated closer thread that flushes
//! and drops it outside every runtime.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

use disk::block::{BlockRead, BlockWrite, ExtentKind, ZeroMode};
use disk::open::Access;
use disk::qcow2::{BackingPolicy, Qcow2Image};

use crate::backend::{ExportBackend, Run, ZeroOutcome, ZeroRequest};

/// qcow2.txt "Header", bytes 0-3: `QFI\xfb`.
const MAGIC: [u8; 4] = *b"QFI\xfb";
/// qcow2.txt "Header", bytes 4-7: version 3 (refcount order, header length and feature bits).
const VERSION: u32 = 3;
/// qcow2.txt "Header", bytes 20-23: 64 KiB clusters, qemu-img's default.
const CLUSTER_BITS: u32 = 16;
/// Bytes per cluster.
const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// qcow2.txt "Header", bytes 96-99: refcount width 2^4 = 16 bits, qemu-img's default.
const REFCOUNT_ORDER: u32 = 4;
/// qcow2.txt "Header", bytes 100-103: the v3 header without optional fields is 104 bytes.
const HEADER_LENGTH: u32 = 104;
/// Guest bytes one L1 entry maps: an L2 table of `CLUSTER_SIZE / 8` entries, each one cluster
/// (qcow2.txt "Cluster mapping").
const L1_ENTRY_SPAN: u64 = CLUSTER_SIZE * (CLUSTER_SIZE / 8);
/// Largest qcow2 volume this store creates: 2^50 bytes (1 PiB), so the L1 table is at most
/// 16 MiB (256 clusters) and one refcount block covers all initial metadata. qemu's own limit
/// for 64 KiB clusters (a 32 MiB L1 table) is twice as large.
pub(crate) const MAX_QCOW2_SIZE: u64 = 1 << 50;
/// qemu sees a qcow2 image's size in 512-byte sectors (rounding down), so sizes must be whole
/// sectors for every reader to agree.
pub(crate) const QCOW2_SIZE_ALIGN: u64 = 512;
/// Guest bytes mapped per `extents` call: 32768 clusters, half of the look-ups `disk` allows
/// per call, so its cap is never reached.
const MAP_WINDOW: u64 = (1 << 15) * CLUSTER_SIZE;
/// Windows mapped per [`ExportBackend::runs`] call at most (1 TiB of guest space), bounding
/// the work one block-status request can cause (house style S12).
const MAP_WINDOWS_PER_CALL: usize = 512;
/// Clusters one 16-bit refcount block describes (qcow2.txt "Host cluster management").
const REFBLOCK_ENTRIES: u64 = CLUSTER_SIZE / 2;

/// Writes an empty qcow2 v3 image of `size` guest bytes into `file` (which should be empty):
/// header in cluster 0, a one-cluster refcount table in cluster 1, its only refcount block in
/// cluster 2, and a zeroed L1 table from cluster 3 on. Every guest cluster is unallocated.
///
/// # Errors
/// `InvalidInput` for a size of zero, above [`MAX_QCOW2_SIZE`] or not a multiple of 512; the
/// file's write errors.
pub(crate) fn write_empty_image(file: &File, size: u64) -> io::Result<()> {
    if size == 0 || size > MAX_QCOW2_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("qcow2 volume size {size} out of range 1..={MAX_QCOW2_SIZE}"),
        ));
    }
    if !size.is_multiple_of(QCOW2_SIZE_ALIGN) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("qcow2 volume size {size} is not a multiple of {QCOW2_SIZE_ALIGN}"),
        ));
    }
    let l1_entries = size.div_ceil(L1_ENTRY_SPAN);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER_SIZE);
    let refcount_table_offset = CLUSTER_SIZE;
    let refblock_offset = 2 * CLUSTER_SIZE;
    let l1_offset = 3 * CLUSTER_SIZE;
    let used_clusters = 3 + l1_clusters;
    // With size <= 2^50 the L1 table is at most 256 clusters: one refcount block suffices.
    debug_assert!(used_clusters <= REFBLOCK_ENTRIES);
    let l1_size = u32::try_from(l1_entries)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "l1 table too large"))?;

    let mut header = Vec::with_capacity(HEADER_LENGTH as usize + 8);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_be_bytes());
    header.extend_from_slice(&0u64.to_be_bytes()); // 8: backing_file_offset (none)
    header.extend_from_slice(&0u32.to_be_bytes()); // 16: backing_file_size
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes()); // 20: cluster_bits
    header.extend_from_slice(&size.to_be_bytes()); // 24: size
    header.extend_from_slice(&0u32.to_be_bytes()); // 32: crypt_method (none)
    header.extend_from_slice(&l1_size.to_be_bytes()); // 36: l1_size
    header.extend_from_slice(&l1_offset.to_be_bytes()); // 40: l1_table_offset
    header.extend_from_slice(&refcount_table_offset.to_be_bytes()); // 48
    header.extend_from_slice(&1u32.to_be_bytes()); // 56: refcount_table_clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // 60: nb_snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // 64: snapshots_offset
    header.extend_from_slice(&0u64.to_be_bytes()); // 72: incompatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // 80: compatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // 88: autoclear_features
    header.extend_from_slice(&REFCOUNT_ORDER.to_be_bytes()); // 96: refcount_order
    header.extend_from_slice(&HEADER_LENGTH.to_be_bytes()); // 100: header_length
    // qcow2.txt "Header extensions": the end-of-extensions marker (type 0, length 0).
    header.extend_from_slice(&[0u8; 8]);

    let mut refblock = Vec::with_capacity(usize::try_from(used_clusters * 2).unwrap_or(0));
    for _ in 0..used_clusters {
        refblock.extend_from_slice(&1u16.to_be_bytes());
    }

    // The L1 table and the rest of the metadata clusters are zeroes: extend first (a hole).
    file.set_len(l1_offset + l1_clusters * CLUSTER_SIZE)?;
    file.write_all_at(&refblock, refblock_offset)?;
    file.write_all_at(&refblock_offset.to_be_bytes(), refcount_table_offset)?;
    file.write_all_at(&header, 0)?;
    file.sync_all()
}

fn to_io(e: disk::Error) -> io::Error {
    match e {
        disk::Error::Io { source, .. } => source,
        disk::Error::ReadOnly => {
            io::Error::from_raw_os_error(rustix::io::Errno::PERM.raw_os_error())
        }
        disk::Error::OutOfBounds { .. } | disk::Error::Usage(_) => {
            io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
        }
        disk::Error::Unsupported(_) => io::Error::new(io::ErrorKind::Unsupported, e.to_string()),
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A qcow2 volume or snapshot, read and written through imago. Backing and external data files
/// are always refused (house style S6): store volumes are self-contained.
pub struct Qcow2Backend {
    /// `Some` until [`Drop`] takes it to close it off the reactor.
    image: Option<Qcow2Image>,
    size: u64,
}

impl std::fmt::Debug for Qcow2Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Backend")
            .field("image", &self.image)
            .finish()
    }
}

impl Qcow2Backend {
    /// Opens the qcow2 image at `path`. Blocks; call it from a blocking thread.
    ///
    /// # Errors
    /// The image cannot be opened, is corrupt, uses features imago lacks, or names a backing
    /// or data file.
    pub fn open(path: &Path, access: Access) -> io::Result<Self> {
        let image = Qcow2Image::open(path, access, BackingPolicy::deny()).map_err(to_io)?;
        let size = image.size();
        Ok(Self {
            image: Some(image),
            size,
        })
    }

    fn image(&self) -> &Qcow2Image {
        // OK to expect: only `drop` takes the image out.
        self.image.as_ref().expect("qcow2 image present until drop")
    }
}

/// The closer thread's queue; images dropped inside a tokio context are closed there.
static CLOSER: OnceLock<Option<Mutex<Sender<Qcow2Image>>>> = OnceLock::new();

fn close(image: Qcow2Image) {
    if image.access() == Access::ReadWrite
        && let Err(e) = image.flush()
    {
        tracing::warn!(error = %e, "flushing a qcow2 volume at close failed");
    }
    drop(image);
}

impl Drop for Qcow2Backend {
    fn drop(&mut self) {
        let Some(image) = self.image.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            close(image);
            return;
        }
        // Inside a runtime (maybe a reactor thread): imago's runtime may neither block nor be
        // dropped here, so a plain thread outside every runtime does it.
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = channel::<Qcow2Image>();
            std::thread::Builder::new()
                .name("qcow2-close".into())
                .spawn(move || {
                    while let Ok(image) = rx.recv() {
                        close(image);
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        });
        let unsent = match closer {
            Some(tx) => tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .send(image)
                .err()
                .map(|e| e.0),
            None => Some(image),
        };
        if let Some(image) = unsent {
            // No closer thread: leaking the image is safe (its data was flushed by the server
            // at every disconnect); dropping it here could panic the runtime.
            tracing::warn!("no qcow2 closer thread; leaking an open image");
            std::mem::forget(image);
        }
    }
}

impl ExportBackend for Qcow2Backend {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.image().read_exact_at(offset, buf).map_err(to_io)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.image().write_all_at(offset, buf).map_err(to_io)
    }

    fn flush(&self) -> io::Result<()> {
        if self.image().access() == Access::ReadOnly {
            return Ok(());
        }
        BlockWrite::flush(self.image()).map_err(to_io)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.image().discard(offset, len).map_err(to_io)
    }

    fn settle(&self) -> io::Result<()> {
        // imago caches L2 tables and refcounts: write them so the file is a complete image.
        self.flush()
    }

    fn write_zeroes(&self, offset: u64, len: u64, req: ZeroRequest) -> io::Result<ZeroOutcome> {
        // qcow2 zeroes whole clusters in metadata (a zero flag or a deallocation); only partial
        // clusters at the ends are written, which is still cheap, so every request counts as fast.
        if req.may_unmap {
            self.image()
                .write_zeroes(offset, len, ZeroMode::MayUnmap)
                .map_err(to_io)?;
            Ok(ZeroOutcome::Punched)
        } else {
            self.image()
                .write_zeroes(offset, len, ZeroMode::KeepAllocated)
                .map_err(to_io)?;
            Ok(ZeroOutcome::ZeroRange)
        }
    }

    fn runs(&self, offset: u64, len: u64, max_runs: usize) -> io::Result<Vec<Run>> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out: Vec<Run> = Vec::new();
        let mut pos = offset;
        // Windows small enough that `extents` never reaches its look-up cap (which would
        // report the rest as data), and a bound on the work per call: the map may cover less
        // than asked, as the trait allows.
        for _ in 0..MAP_WINDOWS_PER_CALL {
            if pos >= end {
                break;
            }
            let window = (end - pos).min(MAP_WINDOW);
            for e in self.image().extents(pos, window).map_err(to_io)? {
                // Zero clusters read as zeroes without data behind them: reported like holes
                // (NBD_STATE_HOLE | NBD_STATE_ZERO), as qemu-img map shows them (data false).
                let hole = e.kind != ExtentKind::Data;
                let n = out.len();
                match out.last_mut() {
                    Some(last) if last.hole == hole => last.len += e.len,
                    _ if n >= max_runs => return Ok(out),
                    _ => out.push(Run { len: e.len, hole }),
                }
            }
            pos += window;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) -> Option<std::process::Output> {
        match Command::new("qemu-img").args(args).output() {
            Ok(o) => Some(o),
            Err(_) => {
                println!("skipping: qemu-img not found");
                None
            }
        }
    }

    fn empty(dir: &Path, size: u64) -> std::path::PathBuf {
        let p = dir.join("e.qcow2");
        let f = File::create(&p).unwrap();
        write_empty_image(&f, size).unwrap();
        p
    }

    #[test]
    fn empty_image_layout() {
        let dir = tempfile::tempdir().unwrap();
        let p = empty(dir.path(), 3 << 30);
        let b = std::fs::read(&p).unwrap();
        // 3 GiB needs 6 L1 entries (512 MiB each): one L1 cluster after three metadata ones.
        assert_eq!(b.len() as u64, 4 * CLUSTER_SIZE);
        assert_eq!(&b[..4], b"QFI\xfb");
        assert_eq!(u32::from_be_bytes(b[4..8].try_into().unwrap()), 3);
        assert_eq!(u32::from_be_bytes(b[20..24].try_into().unwrap()), 16);
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), 3 << 30);
        assert_eq!(u32::from_be_bytes(b[36..40].try_into().unwrap()), 6);
        assert_eq!(
            u64::from_be_bytes(b[40..48].try_into().unwrap()),
            3 * CLUSTER_SIZE
        );
        assert_eq!(
            u64::from_be_bytes(b[48..56].try_into().unwrap()),
            CLUSTER_SIZE
        );
        assert_eq!(u32::from_be_bytes(b[96..100].try_into().unwrap()), 4);
        assert_eq!(u32::from_be_bytes(b[100..104].try_into().unwrap()), 104);
        let rt = usize::try_from(CLUSTER_SIZE).unwrap();
        assert_eq!(
            u64::from_be_bytes(b[rt..rt + 8].try_into().unwrap()),
            2 * CLUSTER_SIZE
        );
        let rb = 2 * rt;
        assert_eq!(&b[rb..rb + 10], &[0, 1, 0, 1, 0, 1, 0, 1, 0, 0]);
    }

    #[test]
    fn empty_image_sizes_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("x")).unwrap();
        for bad in [0, MAX_QCOW2_SIZE + 1] {
            let e = write_empty_image(&f, bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert_eq!(
                e.to_string(),
                format!("qcow2 volume size {bad} out of range 1..=1125899906842624")
            );
        }
        let e = write_empty_image(&f, 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "qcow2 volume size 1000 is not a multiple of 512"
        );
    }

    #[test]
    fn empty_images_pass_qemu_img_check_and_open_in_imago() {
        let dir = tempfile::tempdir().unwrap();
        for size in [512, 1 << 20, (1 << 29) + 512, 5 << 40, MAX_QCOW2_SIZE] {
            let p = empty(dir.path(), size);
            let Some(out) = qemu_img(&["check", "--output=json", p.to_str().unwrap()]) else {
                return;
            };
            assert!(
                out.status.success(),
                "size {size}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            let v = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(v.contains("\"check-errors\": 0"), "{v}");
            let info = qemu_img(&["info", "--output=json", p.to_str().unwrap()]).unwrap();
            let info = String::from_utf8_lossy(&info.stdout).into_owned();
            assert!(
                info.contains(&format!("\"virtual-size\": {size}")),
                "{info}"
            );
            let b = Qcow2Backend::open(&p, Access::ReadOnly).unwrap();
            assert_eq!(b.size(), size);
            let mapped = size.min(MAP_WINDOW * MAP_WINDOWS_PER_CALL as u64);
            assert_eq!(
                b.runs(0, size, 10).unwrap(),
                vec![Run {
                    len: mapped,
                    hole: true
                }]
            );
        }
    }

    #[test]
    fn backend_reads_writes_zeroes_and_maps() {
        let dir = tempfile::tempdir().unwrap();
        let p = empty(dir.path(), 4 << 20);
        let b = Qcow2Backend::open(&p, Access::ReadWrite).unwrap();
        b.write_at(&[7; 8192], 1 << 20).unwrap();
        let mut buf = vec![0u8; 8192];
        b.read_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, vec![7u8; 8192]);
        // One 64 KiB cluster allocated.
        assert_eq!(
            b.runs(0, 4 << 20, 100).unwrap(),
            vec![
                Run {
                    len: 1 << 20,
                    hole: true
                },
                Run {
                    len: CLUSTER_SIZE,
                    hole: false
                },
                Run {
                    len: (3 << 20) - CLUSTER_SIZE,
                    hole: true
                },
            ]
        );
        assert_eq!(
            b.runs(0, 4 << 20, 1).unwrap(),
            vec![Run {
                len: 1 << 20,
                hole: true
            }]
        );
        let keep = ZeroRequest {
            may_unmap: false,
            fast_only: true,
        };
        assert_eq!(
            b.write_zeroes(1 << 20, CLUSTER_SIZE, keep).unwrap(),
            ZeroOutcome::ZeroRange
        );
        b.read_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, vec![0u8; 8192]);
        // A zero cluster maps like a hole.
        assert_eq!(
            b.runs(0, 4 << 20, 100).unwrap(),
            vec![Run {
                len: 4 << 20,
                hole: true
            }]
        );
        b.write_at(&[9; 4096], 0).unwrap();
        let unmap = ZeroRequest {
            may_unmap: true,
            fast_only: false,
        };
        assert_eq!(
            b.write_zeroes(0, CLUSTER_SIZE, unmap).unwrap(),
            ZeroOutcome::Punched
        );
        b.write_at(&[5; 4096], 2 << 20).unwrap();
        b.trim(2 << 20, CLUSTER_SIZE).unwrap();
        b.flush().unwrap();
        b.cache(0, 4096).unwrap();
        drop(b);
        if let Some(out) = qemu_img(&["check", p.to_str().unwrap()]) {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let r = Qcow2Backend::open(&p, Access::ReadOnly).unwrap();
        let e = r.write_at(b"x", 0).unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::PERM.raw_os_error())
        );
        r.flush().unwrap();
        let mut all = vec![1u8; 4 << 20];
        r.read_at(&mut all, 0).unwrap();
        assert!(all.iter().all(|&x| x == 0));
    }

    #[test]
    fn dropped_inside_a_runtime_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let p = empty(dir.path(), 1 << 20);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let b = Qcow2Backend::open(&p, Access::ReadWrite).unwrap();
        b.write_at(&[3; 512], 0).unwrap();
        // Dropped on the reactor thread: handed to the closer thread, which flushes it.
        rt.block_on(async move { drop(b) });
        let mut ok = false;
        for _ in 0..500 {
            // The closer may be mid-flush: an unreadable moment is retried.
            let mut x = [0u8; 512];
            let read = Qcow2Backend::open(&p, Access::ReadOnly).and_then(|r| r.read_at(&mut x, 0));
            if read.is_ok() && x == [3; 512] {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ok, "the closer thread flushed the write");
    }
}
