//! qcow2 images, read and written through the `imago` crate.
//!
//! `imago` is async at heart; [`Qcow2Image`] uses its synchronous wrapper, which owns a small
//! current-thread tokio runtime. Consequently a [`Qcow2Image`] must not be used (or dropped) from
//! inside an async context: async callers go through `spawn_blocking` (house style S5).
//!
//! # Backing files and external data files (house style S6)
//! A qcow2 header can name other files: a backing image and an external data file. They are only
//! opened if the caller's [`BackingPolicy`] allows it, up to a chain depth, and every implicit
//! open goes through an `imago` `ImplicitOpenGate` that enforces the policy. The default denies,
//! and the error names the file the image asked for.

use std::fs::File as StdFile;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use imago::file::File;
use imago::format::gate::ImplicitOpenGate;
use imago::qcow2::Qcow2;
use imago::{
    FormatAccess, FormatDriverBuilder, Mapping, Storage, StorageOpenOptions, SyncFormatAccess,
};

use crate::block::{BlockRead, BlockWrite, Extent, ExtentKind, ZeroMode, check_range};
use crate::open::Access;
use crate::raw::push_extent;
use crate::{Error, Result};

/// Hard cap on a backing chain, whatever the caller asks for (house style S6; the same limit as
/// `cloud-hypervisor`'s).
pub const MAX_BACKING_DEPTH: u32 = 10;

/// Upper bound on mapping look-ups in one [`BlockRead::extents`] call; past it the rest of the
/// range is reported as data, which is always correct (house style S12).
const MAX_MAPPING_ROUNDS: usize = 1 << 16;

/// Whether the files a qcow2 header refers to (backing images, external data files) may be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackingPolicy {
    max_depth: u32,
}

impl BackingPolicy {
    /// Open nothing the image refers to (the default).
    #[must_use]
    pub fn deny() -> Self {
        Self { max_depth: 0 }
    }

    /// Open backing images and external data files, following at most `max_depth` levels of
    /// backing chain. `max_depth` is capped at [`MAX_BACKING_DEPTH`].
    #[must_use]
    pub fn allow(max_depth: u32) -> Self {
        Self {
            max_depth: max_depth.min(MAX_BACKING_DEPTH),
        }
    }

    /// How many levels of backing chain may be opened (0: none).
    #[must_use]
    pub fn max_depth(self) -> u32 {
        self.max_depth
    }
}

/// What the gate refused, recorded so the error can name the file.
type Denied = Arc<Mutex<Option<PathBuf>>>;

/// The `imago` gate that enforces a [`BackingPolicy`].
struct PolicyGate {
    /// Levels of backing chain still allowed below the image being opened.
    remaining: u32,
    /// Whether storage opened through the gate may be writable (never for read-only images).
    writable: bool,
    denied: Denied,
}

impl PolicyGate {
    fn deny(&self, path: Option<&Path>) -> std::io::Error {
        let path = path.map(Path::to_path_buf);
        let mut slot = self.denied.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(path.clone().unwrap_or_default());
        }
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("opening {path:?} denied by the backing policy"),
        )
    }
}

impl<S: Storage + 'static> ImplicitOpenGate<S> for PolicyGate {
    async fn open_format<F: FormatDriverBuilder<S>>(
        &mut self,
        builder: F,
    ) -> std::io::Result<FormatAccess<S>> {
        if self.remaining == 0 {
            return Err(self.deny(builder.get_image_path().as_deref()));
        }
        let child = PolicyGate {
            remaining: self.remaining - 1,
            writable: false,
            denied: Arc::clone(&self.denied),
        };
        // Backing layers are never written; Box::pin breaks the recursive future type.
        let driver = Box::pin(builder.write(false).open(child)).await?;
        Ok(FormatAccess::new(driver))
    }

    async fn open_storage(&mut self, opts: StorageOpenOptions) -> std::io::Result<S> {
        if self.remaining == 0 {
            return Err(self.deny(opts.get_filename()));
        }
        let writable = opts.get_writable() && self.writable;
        tracing::debug!(file = ?opts.get_filename(), writable, "qcow2 implicit open allowed by policy");
        S::open(opts.write(writable)).await
    }
}

/// A qcow2 image.
pub struct Qcow2Image {
    // RwLock: reads and writes share the image; discards take it exclusively because `imago`
    // requires `&mut` for operations that may invalidate its data mappings.
    inner: RwLock<SyncFormatAccess<File>>,
    size: u64,
    access: Access,
    path: PathBuf,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Converts an `imago` error into ours: invalid data is corruption, unsupported is unsupported.
fn map_imago(offset: u64, err: std::io::Error) -> Error {
    // imago refuses every incompatible feature bit it does not implement, including the dirty
    // and corrupt bits; that is a limit of the library, not damage (house style S13).
    if err.to_string().contains("incompatible feature") {
        return Error::unsupported("qcow2 feature", err.to_string());
    }
    match err.kind() {
        std::io::ErrorKind::InvalidData => Error::corrupt("qcow2 image", offset, err.to_string()),
        std::io::ErrorKind::Unsupported => Error::unsupported("qcow2 feature", err.to_string()),
        _ => Error::io(offset, err),
    }
}

impl Qcow2Image {
    /// Opens the qcow2 image at `path`.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the file if the image refers to a backing or data file that
    /// `backing` does not allow; [`Error::Corrupt`] for an invalid header or metadata;
    /// [`Error::Unsupported`] for features `imago` does not implement; [`Error::Io`] otherwise.
    pub fn open(path: impl AsRef<Path>, access: Access, backing: BackingPolicy) -> Result<Self> {
        let path = path.as_ref();
        let writable = access == Access::ReadWrite;
        // Opened here, not through the gate: the top image is explicit, only references are gated.
        let file = File::open_sync(StorageOpenOptions::new().filename(path).write(writable))
            .map_err(|e| Error::io(0, e))?;
        Self::open_storage(file, path.to_path_buf(), access, backing)
    }

    /// Opens a qcow2 image from an already opened file. Relative backing-file names cannot be
    /// resolved without a path, so such images fail to open unless the policy denies backing.
    ///
    /// # Errors
    /// As [`Qcow2Image::open`].
    pub fn from_file(file: StdFile, access: Access, backing: BackingPolicy) -> Result<Self> {
        let file = File::try_from(file).map_err(|e| Error::io(0, e))?;
        Self::open_storage(file, PathBuf::new(), access, backing)
    }

    fn open_storage(
        file: File,
        path: PathBuf,
        access: Access,
        backing: BackingPolicy,
    ) -> Result<Self> {
        let writable = access == Access::ReadWrite;
        let denied: Denied = Arc::default();
        let gate = PolicyGate {
            remaining: backing.max_depth,
            writable,
            denied: Arc::clone(&denied),
        };
        let opened = Qcow2::<File>::builder(file)
            .write(writable)
            .storage_open_options(StorageOpenOptions::new())
            .open_sync(gate);
        let driver = match opened {
            Ok(d) => d,
            Err(e) => {
                let refused = denied.lock().unwrap_or_else(|p| p.into_inner()).take();
                return Err(match refused {
                    Some(file) => Error::Usage(format!(
                        "qcow2 image {path:?} refers to {file:?} (a backing or external data \
                         file), which the backing policy does not allow (allowed depth {}); \
                         allow backing files explicitly if the image is trusted",
                        backing.max_depth
                    )),
                    None => map_imago(0, e),
                });
            }
        };
        let access_obj = SyncFormatAccess::new(driver).map_err(|e| Error::io(0, e))?;
        let size = access_obj.size();
        Ok(Self {
            inner: RwLock::new(access_obj),
            size,
            access,
            path,
        })
    }

    /// How the image was opened.
    #[must_use]
    pub fn access(&self) -> Access {
        self.access
    }

    fn check_writable(&self) -> Result<()> {
        match self.access {
            Access::ReadWrite => Ok(()),
            Access::ReadOnly => Err(Error::ReadOnly),
        }
    }

    fn read_lock(&self) -> std::sync::RwLockReadGuard<'_, SyncFormatAccess<File>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, SyncFormatAccess<File>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockRead for Qcow2Image {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(self.size, offset, buf.len() as u64)?;
        self.read_lock()
            .read(buf, offset)
            .map_err(|e| map_imago(offset, e))
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        check_range(self.size, offset, len)?;
        // Cannot overflow: check_range proved offset + len <= size.
        let end = offset + len;
        let guard = self.read_lock();
        let mut out = Vec::new();
        let mut pos = offset;
        for _ in 0..MAX_MAPPING_ROUNDS {
            if pos >= end {
                return Ok(out);
            }
            let (mapping, n) = guard
                .get_mapping_sync(pos, end - pos)
                .map_err(|e| map_imago(pos, e))?;
            let kind = match mapping {
                Mapping::Zero { explicit: true, .. } => ExtentKind::Zero,
                Mapping::Zero {
                    explicit: false, ..
                } => ExtentKind::Hole,
                // Past the image's end everything reads as zeroes; size() excludes it anyway.
                Mapping::Eof { .. } => {
                    push_extent(&mut out, pos, end - pos, ExtentKind::Hole);
                    return Ok(out);
                }
                // Raw data, compressed or encrypted clusters, and anything newer: data.
                _ => ExtentKind::Data,
            };
            // A zero-length answer would never advance; report the rest as data and stop.
            let n = n.min(end - pos);
            if n == 0 {
                break;
            }
            push_extent(&mut out, pos, n, kind);
            pos += n;
        }
        if pos < end {
            push_extent(&mut out, pos, end - pos, ExtentKind::Data);
        }
        Ok(out)
    }
}

impl BlockWrite for Qcow2Image {
    fn write_all_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, buf.len() as u64)?;
        self.read_lock()
            .write(buf, offset)
            .map_err(|e| map_imago(offset, e))
    }

    fn flush(&self) -> Result<()> {
        self.check_writable()?;
        let guard = self.read_lock();
        // flush() writes imago's metadata caches to the file; sync() makes the file durable.
        guard.flush().map_err(|e| map_imago(0, e))?;
        guard.sync().map_err(|e| map_imago(0, e))
    }

    fn write_zeroes(&self, offset: u64, len: u64, mode: ZeroMode) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match mode {
            // Zero clusters keep their allocation (imago's write_zeroes never discards).
            ZeroMode::KeepAllocated => self
                .read_lock()
                .write_zeroes(offset, len)
                .map_err(|e| map_imago(offset, e)),
            ZeroMode::MayUnmap => self
                .write_lock()
                .discard_to_zero(offset, len)
                .map_err(|e| map_imago(offset, e)),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        check_range(self.size, offset, len)?;
        if len == 0 {
            return Ok(());
        }
        match self.write_lock().discard_to_any(offset, len) {
            // Discard is advisory.
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => Ok(()),
            other => other.map_err(|e| map_imago(offset, e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// Runs a tool, returning `None` (after saying so) if it is not installed.
    pub(crate) fn tool(name: &str, args: &[&str]) -> Option<std::process::Output> {
        match Command::new(name).args(args).output() {
            Ok(out) => {
                assert!(
                    out.status.success(),
                    "{name} {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Some(out)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!("skipping: {name} not found");
                None
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }

    /// A 4 MiB qcow2 image with a 64 KiB pattern at 0 and a 4 KiB pattern at 2 MiB.
    pub(crate) fn make_qcow2(dir: &Path, name: &str) -> Option<PathBuf> {
        let p = dir.join(name);
        let ps = p.to_str().unwrap();
        tool("qemu-img", &["create", "-q", "-f", "qcow2", ps, "4M"])?;
        tool(
            "qemu-io",
            &["-c", "write -P 0xab 0 64k", "-c", "write -P 0x5c 2M 4k", ps],
        )?;
        Some(p)
    }

    fn convert_raw(src: &Path, dst: &Path) -> Vec<u8> {
        tool(
            "qemu-img",
            &[
                "convert",
                "-O",
                "raw",
                src.to_str().unwrap(),
                dst.to_str().unwrap(),
            ],
        )
        .unwrap();
        std::fs::read(dst).unwrap()
    }

    fn read_all(img: &Qcow2Image) -> Vec<u8> {
        let mut v = vec![0u8; usize::try_from(img.size()).unwrap()];
        img.read_exact_at(0, &mut v).unwrap();
        v
    }

    #[test]
    fn reads_match_qemu_img_convert() {
        let dir = tempfile::tempdir().unwrap();
        let Some(p) = make_qcow2(dir.path(), "a.qcow2") else {
            return;
        };
        let img = Qcow2Image::open(&p, Access::ReadOnly, BackingPolicy::deny()).unwrap();
        assert_eq!(img.size(), 4 << 20);
        let expect = convert_raw(&p, &dir.path().join("a.raw"));
        assert_eq!(read_all(&img), expect);
        assert!(matches!(img.write_all_at(0, b"x"), Err(Error::ReadOnly)));
        assert!(matches!(
            img.read_exact_at(4 << 20, &mut [0u8; 1]),
            Err(Error::OutOfBounds { .. })
        ));

        let map = img.extents(0, 4 << 20).unwrap();
        assert_eq!(
            map,
            vec![
                Extent {
                    offset: 0,
                    len: 64 << 10,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: 64 << 10,
                    len: (2 << 20) - (64 << 10),
                    kind: ExtentKind::Hole
                },
                // qemu-io allocated the whole 64 KiB cluster for the 4 KiB write.
                Extent {
                    offset: 2 << 20,
                    len: 64 << 10,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: (2 << 20) + (64 << 10),
                    len: (2 << 20) - (64 << 10),
                    kind: ExtentKind::Hole
                },
            ]
        );
        let sub = img.extents(1000, 100).unwrap();
        assert_eq!(
            sub,
            vec![Extent {
                offset: 1000,
                len: 100,
                kind: ExtentKind::Data
            }]
        );
    }

    #[test]
    fn writes_flush_zero_and_discard_are_seen_by_qemu() {
        let dir = tempfile::tempdir().unwrap();
        let Some(p) = make_qcow2(dir.path(), "w.qcow2") else {
            return;
        };
        {
            let img = Qcow2Image::open(&p, Access::ReadWrite, BackingPolicy::deny()).unwrap();
            img.write_all_at(3 << 20, &[0x11; 8192]).unwrap();
            img.write_zeroes(0, 4096, ZeroMode::KeepAllocated).unwrap();
            img.write_zeroes(2 << 20, 64 << 10, ZeroMode::MayUnmap)
                .unwrap();
            img.discard(3 << 20, 0).unwrap();
            img.flush().unwrap();
            // After flush, qemu must see everything while the image is still open.
            let raw = convert_raw(&p, &dir.path().join("w.raw"));
            assert_eq!(&raw[(3 << 20)..(3 << 20) + 8192], &[0x11; 8192][..]);
            assert!(raw[..4096].iter().all(|&b| b == 0));
            assert!(raw[4096..65536].iter().all(|&b| b == 0xab));
            assert!(raw[(2 << 20)..(2 << 20) + 4096].iter().all(|&b| b == 0));
            assert_eq!(read_all(&img), raw);
            let map = img.extents(0, 64 << 10).unwrap();
            assert_eq!(
                map[0],
                Extent {
                    offset: 0,
                    len: 64 << 10,
                    kind: ExtentKind::Data
                }
            );
        }
        tool("qemu-img", &["check", "-q", p.to_str().unwrap()]).unwrap();
    }

    #[test]
    fn backing_chain_is_denied_by_default_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let Some(base) = make_qcow2(dir.path(), "base.qcow2") else {
            return;
        };
        let mid = dir.path().join("mid.qcow2");
        let top = dir.path().join("top.qcow2");
        let (b, m, t) = (
            base.to_str().unwrap(),
            mid.to_str().unwrap(),
            top.to_str().unwrap(),
        );
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "base.qcow2",
                m,
            ],
        )
        .unwrap();
        tool(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "mid.qcow2",
                t,
            ],
        )
        .unwrap();
        tool("qemu-io", &["-c", "write -P 0xcd 64k 64k", m]).unwrap();
        let _ = b;

        let err = Qcow2Image::open(&top, Access::ReadOnly, BackingPolicy::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        assert!(msg.contains("mid.qcow2"), "{msg}");
        assert!(msg.contains("allowed depth 0"), "{msg}");

        // Depth 1 opens mid but not base.
        let err = Qcow2Image::open(&top, Access::ReadOnly, BackingPolicy::allow(1)).unwrap_err();
        assert!(err.to_string().contains("base.qcow2"), "{err}");

        let img = Qcow2Image::open(&top, Access::ReadOnly, BackingPolicy::allow(2)).unwrap();
        let expect = convert_raw(&top, &dir.path().join("top.raw"));
        assert_eq!(read_all(&img), expect);
        assert!(expect[..65536].iter().all(|&b| b == 0xab));
        assert!(expect[65536..131072].iter().all(|&b| b == 0xcd));
        // Data from backing layers is data; untouched clusters everywhere are holes.
        let map = img.extents(0, 192 << 10).unwrap();
        assert_eq!(
            map,
            vec![
                Extent {
                    offset: 0,
                    len: 128 << 10,
                    kind: ExtentKind::Data
                },
                Extent {
                    offset: 128 << 10,
                    len: 64 << 10,
                    kind: ExtentKind::Hole
                },
            ]
        );

        assert_eq!(BackingPolicy::allow(50).max_depth(), MAX_BACKING_DEPTH);
        assert_eq!(BackingPolicy::deny(), BackingPolicy::default());
    }

    #[test]
    fn backing_loop_stops_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("loop.qcow2");
        let Some(_) = tool(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", a.to_str().unwrap(), "1M"],
        ) else {
            return;
        };
        // Point the image at itself: an endless chain only the depth cap ends.
        tool(
            "qemu-img",
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "loop.qcow2",
                a.to_str().unwrap(),
            ],
        )
        .unwrap();
        let err =
            Qcow2Image::open(&a, Access::ReadOnly, BackingPolicy::allow(u32::MAX)).unwrap_err();
        assert!(err.to_string().contains("allowed depth 10"), "{err}");
    }

    #[test]
    fn incompatible_feature_bits_are_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let Some(p) = make_qcow2(dir.path(), "dirty.qcow2") else {
            return;
        };
        let mut bytes = std::fs::read(&p).unwrap();
        // incompatible_features is the big-endian u64 at byte 72; bit 0 is "dirty".
        bytes[79] |= 1;
        std::fs::write(&p, &bytes).unwrap();
        let err = Qcow2Image::open(&p, Access::ReadOnly, BackingPolicy::deny()).unwrap_err();
        let Error::Unsupported(u) = &err else {
            panic!("expected unsupported, got {err:?}")
        };
        assert_eq!(u.what(), "qcow2 feature");
        assert!(u.detail().contains("0 (dirty bit)"), "{}", u.detail());
    }

    #[test]
    fn corrupt_header_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.qcow2");
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&40u32.to_be_bytes()); // cluster_bits out of range
        std::fs::write(&p, &h).unwrap();
        let err = Qcow2Image::open(&p, Access::ReadOnly, BackingPolicy::deny()).unwrap_err();
        let c = err
            .as_corrupt()
            .unwrap_or_else(|| panic!("expected corrupt, got {err:?}"));
        assert_eq!((c.structure(), c.offset()), ("qcow2 image", 0));
    }

    /// A small qcow2 (4 KiB clusters) for mutation tests.
    fn small_qcow2(dir: &Path, name: &str, compat: &str) -> Option<Vec<u8>> {
        let p = dir.join(name);
        let ps = p.to_str().unwrap();
        let opts = format!("cluster_size=4096,compat={compat}");
        tool(
            "qemu-img",
            &["create", "-q", "-f", "qcow2", "-o", &opts, ps, "1M"],
        )?;
        tool(
            "qemu-io",
            &["-c", "write -P 0x77 8k 8k", "-c", "write -z 64k 4k", ps],
        )?;
        Some(std::fs::read(&p).unwrap())
    }

    #[test]
    fn fuzz_qcow2_open_over_mutations() {
        let dir = tempfile::tempdir().unwrap();
        let Some(v3) = small_qcow2(dir.path(), "v3.qcow2", "1.1") else {
            return;
        };
        let Some(v2) = small_qcow2(dir.path(), "v2.qcow2", "0.10") else {
            return;
        };
        // The seeds are valid: they open and read back what qemu-io wrote.
        for seed in [&v3, &v2] {
            let p = dir.path().join("seed.qcow2");
            std::fs::write(&p, seed).unwrap();
            let img = Qcow2Image::open(&p, Access::ReadOnly, BackingPolicy::deny()).unwrap();
            let mut b = [0u8; 4];
            img.read_exact_at(8192, &mut b).unwrap();
            assert_eq!(b, [0x77; 4]);
            crate::fuzzing::qcow2_open(seed);
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..1000u64 {
            let mut m = if i % 2 == 0 { v3.clone() } else { v2.clone() };
            let len = m.len() as u64;
            match next() % 8 {
                // Truncation anywhere.
                0 => m.truncate(usize::try_from(next() % len).unwrap()),
                // Flips anywhere in the metadata clusters.
                1 => {
                    let at = usize::try_from(next() % len.min(64 << 10)).unwrap();
                    m[at] ^= 1 << (next() % 8);
                }
                // Header-focused: one to four bytes of the first 512 set to random values.
                _ => {
                    for _ in 0..1 + next() % 4 {
                        let at = usize::try_from(next() % 512).unwrap();
                        m[at] = next().to_le_bytes()[0];
                    }
                }
            }
            crate::fuzzing::qcow2_open(&m);
        }
    }
}
