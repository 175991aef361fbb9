//! Copy-on-write overlays: a new qcow2 image whose backing file is an untouched source image.
//!
//! `rehost … --output NEW.qcow2` uses this instead of the undo journal: every change lands in
//! the new file and the source is only ever opened for reading, so there is nothing to undo
//! (delete the overlay). The overlay is written with `imago`'s qcow2 creation API (no `qemu-img`
//! process), records the backing file by its absolute path and its format explicitly
//! (`raw`/`qcow2`, so QEMU never probes a guest-writable image, house style S6), and has the
//! source's virtual size.
//!
//! ```no_run
//! use disk::{BlockWrite, overlay::{OverlayOptions, create_overlay}};
//! let ov = create_overlay("disk.raw".as_ref(), "fixed.qcow2".as_ref(), &OverlayOptions::new())?;
//! ov.write_all_at(0, b"changed")?;
//! ov.flush()?;
//! # Ok::<(), disk::Error>(())
//! ```

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use imago::FormatCreateBuilder;
use imago::format::PreallocateMode;
use imago::qcow2::Qcow2;

use crate::detect::{ImageFormat, detect};
use crate::open::{Access, BackingPolicy, OpenOptions, open};
use crate::qcow2::{MAX_BACKING_DEPTH, Qcow2Image};
use crate::raw::RawFile;
use crate::{Error, Result};

/// Longest backing file name a qcow2 header may hold (qcow2 spec, "Header": `backing_file_size`
/// "Must not be longer than 1023 bytes").
pub const MAX_BACKING_NAME: usize = 1023;

/// Cluster size of new overlays (the qcow2 default; small enough that a changed 4 KiB block
/// copies little, large enough that metadata stays small).
const OVERLAY_CLUSTER_SIZE: usize = 64 << 10;

/// How [`create_overlay`] treats the source and the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OverlayOptions {
    overwrite: bool,
    source_format: Option<ImageFormat>,
    source_backing: BackingPolicy,
}

impl OverlayOptions {
    /// Refuse an existing output; probe the source's format; deny the source's own backing files.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Replace an existing output file (never the source itself).
    #[must_use]
    pub fn overwrite(mut self, overwrite: bool) -> Self {
        self.overwrite = overwrite;
        self
    }
    /// Pins the source's format instead of probing it.
    #[must_use]
    pub fn source_format(mut self, format: ImageFormat) -> Self {
        self.source_format = Some(format);
        self
    }
    /// Allows a qcow2 source's own backing chain, up to the policy's depth.
    #[must_use]
    pub fn source_backing(mut self, policy: BackingPolicy) -> Self {
        self.source_backing = policy;
        self
    }
}

/// Wakes the thread that polls (the one-future executor below).
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs one future to completion on this thread. imago's qcow2 creation is `async` but does its
/// file I/O synchronously, so no runtime (and no tokio dependency here) is needed.
fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => std::thread::park(),
        }
    }
}

fn io_at(path: &Path, e: std::io::Error) -> Error {
    Error::io(
        0,
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    )
}

/// Creates `output`, a qcow2 image backed by `source` (raw or qcow2), and opens it writable.
/// Reads see the source until a cluster is written; writes go to `output` only. The source is
/// opened read-only, once to learn its format and size, and as the backing layer.
///
/// # Errors
/// [`Error::Usage`] if `output` exists (without [`OverlayOptions::overwrite`]) or is the
/// source, if the source's absolute path is not UTF-8 or longer than [`MAX_BACKING_NAME`]
/// bytes, or if the source has a backing file the policy denies; [`Error::Unsupported`] for a
/// source format other than raw or qcow2; I/O errors. On error no output file is left behind
/// (an overwritten one is gone).
pub fn create_overlay(source: &Path, output: &Path, opts: &OverlayOptions) -> Result<Qcow2Image> {
    let source_abs = std::fs::canonicalize(source).map_err(|e| io_at(source, e))?;
    if let Ok(out_abs) = std::fs::canonicalize(output)
        && out_abs == source_abs
    {
        return Err(Error::Usage(format!(
            "output {} is the source image itself",
            output.display()
        )));
    }
    if !opts.overwrite && std::fs::symlink_metadata(output).is_ok() {
        return Err(Error::Usage(format!(
            "output {} already exists; choose a new file or allow overwriting",
            output.display()
        )));
    }
    let backing_name = source_abs
        .to_str()
        .ok_or_else(|| {
            Error::Usage(format!(
                "source path {} is not UTF-8 and cannot be recorded as a backing file",
                source_abs.display()
            ))
        })?
        .to_owned();
    if backing_name.len() > MAX_BACKING_NAME {
        return Err(Error::Usage(format!(
            "source path is {} bytes, more than the {MAX_BACKING_NAME} a qcow2 header holds",
            backing_name.len()
        )));
    }

    let format = match opts.source_format {
        Some(f) => f,
        None => detect(&RawFile::open(&source_abs, Access::ReadOnly)?)?,
    };
    if !matches!(format, ImageFormat::Raw | ImageFormat::Qcow2) {
        return Err(format.unsupported_error());
    }
    // Opening the source checks it (and its chain against the policy) before anything is created.
    let size = open(
        &backing_name,
        &OpenOptions::new()
            .format(format)
            .backing(opts.source_backing),
    )?
    .read()
    .size();

    let mut file_opts = std::fs::OpenOptions::new();
    file_opts.read(true).write(true);
    if opts.overwrite {
        file_opts.create(true).truncate(true);
    } else {
        file_opts.create_new(true);
    }
    let file = file_opts.open(output).map_err(|e| io_at(output, e))?;
    let created = write_overlay(file, &backing_name, format, size).and_then(|()| {
        // One level for the source, plus the source's own chain.
        let depth = opts
            .source_backing
            .max_depth()
            .saturating_add(1)
            .min(MAX_BACKING_DEPTH);
        Qcow2Image::open(output, Access::ReadWrite, BackingPolicy::allow(depth))
    });
    match created {
        Ok(img) => {
            tracing::debug!(source = %backing_name, output = %output.display(), %format, size, "created overlay");
            Ok(img)
        }
        Err(e) => {
            let _ = std::fs::remove_file(output);
            Err(e)
        }
    }
}

/// Formats `file` as a qcow2 image of `size` bytes backed by `backing` (absolute path).
fn write_overlay(file: std::fs::File, backing: &str, format: ImageFormat, size: u64) -> Result<()> {
    let storage = imago::file::File::try_from(file).map_err(|e| Error::io(0, e))?;
    let builder = Qcow2::<imago::file::File>::create_builder(storage)
        .backing(backing.to_owned(), format.name().to_owned())
        .cluster_size(OVERLAY_CLUSTER_SIZE)
        .size(size)
        .preallocate(PreallocateMode::None);
    block_on(builder.create()).map_err(|e| Error::io(0, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockRead, BlockWrite};
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("--version").output().is_ok()
    }

    fn qemu_img(args: &[&str]) -> std::process::Output {
        Command::new("qemu-img").args(args).output().unwrap()
    }

    fn contents(path: &Path) -> Vec<u8> {
        // The full bytes: "unchanged" is compared exactly.
        std::fs::read(path).unwrap()
    }

    fn write_and_check(dir: &Path, src: &Path, src_fmt: &str) {
        let before = contents(src);
        let out = dir.join("new overlay.qcow2");
        let ov = create_overlay(src, &out, &OverlayOptions::new()).unwrap();
        assert_eq!(ov.size(), 4 << 20);
        // Untouched clusters read through to the source.
        let mut b = [0u8; 4];
        ov.read_exact_at(100_000, &mut b).unwrap();
        assert_eq!(b, [0x5a; 4]);
        ov.write_all_at(65_536 + 10, b"overlay data").unwrap();
        ov.flush().unwrap();
        drop(ov);

        assert_eq!(contents(src), before, "the source changed");
        let o = out.to_str().unwrap();
        let check = qemu_img(&["check", "-q", o]);
        assert!(check.status.success(), "{check:?}");
        let info = qemu_img(&["info", "--output=json", o]);
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(
            v["full-backing-filename"],
            std::fs::canonicalize(src).unwrap().to_str().unwrap()
        );
        assert_eq!(v["backing-filename-format"], src_fmt);
        assert_eq!(v["virtual-size"], 4 << 20);

        // qemu-img compare: differs exactly in the cluster we wrote.
        let cmp = qemu_img(&[
            "compare",
            "-f",
            src_fmt,
            "-F",
            "qcow2",
            src.to_str().unwrap(),
            o,
        ]);
        assert_eq!(cmp.status.code(), Some(1), "{cmp:?}");
        let text = String::from_utf8_lossy(&cmp.stdout);
        // compare reports the first differing 512-byte sector.
        assert!(text.contains("offset 65536"), "{text}");
        // The overlay read back by QEMU has the new bytes; the rest is the source's.
        let raw = dir.join("back.raw");
        let conv = qemu_img(&["convert", "-O", "raw", o, raw.to_str().unwrap()]);
        assert!(conv.status.success(), "{conv:?}");
        let got = std::fs::read(&raw).unwrap();
        assert_eq!(&got[65_546..65_558], b"overlay data");
        assert!(got[..65_546].iter().all(|&x| x == 0x5a));
        assert!(got[65_558..].iter().all(|&x| x == 0x5a));
    }

    #[test]
    fn overlay_on_raw_and_qcow2_sources_leaves_them_unchanged() {
        if !have("qemu-img") {
            println!("skipping: qemu-img not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("with space");
        std::fs::create_dir(&sub).unwrap();
        let raw = sub.join("source disk.raw");
        std::fs::write(&raw, vec![0x5au8; 4 << 20]).unwrap();
        write_and_check(&sub, &raw, "raw");

        let q = sub.join("source disk.qcow2");
        let c = qemu_img(&[
            "convert",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            q.to_str().unwrap(),
        ]);
        assert!(c.status.success());
        std::fs::remove_file(sub.join("new overlay.qcow2")).unwrap();
        write_and_check(&sub, &q, "qcow2");
    }

    #[test]
    fn existing_output_and_the_source_itself_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s.raw");
        std::fs::write(&src, vec![1u8; 1 << 20]).unwrap();
        let out = dir.path().join("o.qcow2");
        std::fs::write(&out, b"keep me").unwrap();
        let e = create_overlay(&src, &out, &OverlayOptions::new()).unwrap_err();
        assert!(
            matches!(e, Error::Usage(ref m) if m.contains("already exists")),
            "{e:?}"
        );
        assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
        let e = create_overlay(&src, &src, &OverlayOptions::new().overwrite(true)).unwrap_err();
        assert!(
            matches!(e, Error::Usage(ref m) if m.contains("is the source image itself")),
            "{e:?}"
        );
        assert_eq!(std::fs::read(&src).unwrap(), vec![1u8; 1 << 20]);
        // Told to overwrite: the old output is replaced by an overlay.
        let ov = create_overlay(&src, &out, &OverlayOptions::new().overwrite(true)).unwrap();
        let mut b = [0u8; 2];
        ov.read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [1, 1]);
    }

    #[test]
    fn unsupported_source_format_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("s.vhdx");
        let mut v = vec![0u8; 4096];
        v[..8].copy_from_slice(b"vhdxfile");
        std::fs::write(&src, &v).unwrap();
        let out = dir.path().join("o.qcow2");
        let e = create_overlay(&src, &out, &OverlayOptions::new()).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
        assert!(!out.exists());
        assert_eq!(
            OverlayOptions::new()
                .source_format(ImageFormat::Raw)
                .source_format,
            Some(ImageFormat::Raw)
        );
    }
}
