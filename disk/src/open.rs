//! Opening a disk by path or NBD URI: what `rehost inspect IMAGE|URI --format F` calls.
//!
//! Options are explicit and deny by default (house style S6, S14): read-only unless asked,
//! backing files refused unless a [`BackingPolicy`] allows them, and the format probed only when
//! the caller did not pin it. NBD exports are never probed: their bytes belong to the guest, so
//! they are raw unless the caller says otherwise.

use std::sync::Arc;

use crate::block::{SharedRead, SharedWrite};
use crate::detect::{ImageFormat, detect};
use crate::nbd::{NbdClient, NbdUri, is_nbd_uri};
pub use crate::qcow2::BackingPolicy;
use crate::qcow2::Qcow2Image;
use crate::raw::RawFile;
use crate::{Error, Result};

/// Whether a device is opened for reading only or for reading and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Access {
    /// Reads only; writes fail with [`Error::ReadOnly`].
    #[default]
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

/// How to open a target. Built with chained setters:
/// `OpenOptions::new().format(ImageFormat::Qcow2).access(Access::ReadWrite)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenOptions {
    format: Option<ImageFormat>,
    access: Access,
    backing: BackingPolicy,
}

impl OpenOptions {
    /// Read-only, format probed (paths only), backing files denied.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Pins the format instead of probing (do this for any image a guest could have written).
    #[must_use]
    pub fn format(mut self, format: ImageFormat) -> Self {
        self.format = Some(format);
        self
    }
    /// Sets read-only or read-write access.
    #[must_use]
    pub fn access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }
    /// Sets the policy for qcow2 backing files and external data files.
    #[must_use]
    pub fn backing(mut self, policy: BackingPolicy) -> Self {
        self.backing = policy;
        self
    }
    /// The pinned format, if any.
    #[must_use]
    pub fn get_format(&self) -> Option<ImageFormat> {
        self.format
    }
    /// The requested access.
    #[must_use]
    pub fn get_access(&self) -> Access {
        self.access
    }
    /// The backing policy.
    #[must_use]
    pub fn get_backing(&self) -> BackingPolicy {
        self.backing
    }
}

/// Which backend an opened target uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// A raw file or block device.
    File,
    /// A qcow2 image through `imago`.
    Qcow2,
    /// An NBD export.
    Nbd,
}

/// An opened disk: a reader, a writer when opened read-write, and what it turned out to be.
#[derive(Clone)]
pub struct Opened {
    read: SharedRead,
    write: Option<SharedWrite>,
    format: ImageFormat,
    backend: Backend,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("format", &self.format)
            .field("backend", &self.backend)
            .field("size", &self.read.size())
            .field("writable", &self.write.is_some())
            .finish()
    }
}

impl Opened {
    fn new<D: crate::BlockWrite + 'static>(
        dev: D,
        access: Access,
        format: ImageFormat,
        backend: Backend,
    ) -> Self {
        let dev = Arc::new(dev);
        let write = match access {
            Access::ReadWrite => Some(Arc::clone(&dev) as SharedWrite),
            Access::ReadOnly => None,
        };
        Self {
            read: dev,
            write,
            format,
            backend,
        }
    }

    /// The device for reading.
    #[must_use]
    pub fn read(&self) -> SharedRead {
        Arc::clone(&self.read)
    }
    /// The device for writing, if opened read-write.
    #[must_use]
    pub fn write(&self) -> Option<SharedWrite> {
        self.write.clone()
    }
    /// The image format (pinned or detected).
    #[must_use]
    pub fn format(&self) -> ImageFormat {
        self.format
    }
    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

/// Opens `target`, a path or an NBD URI (`nbd://`, `nbd+unix://`).
///
/// # Errors
/// [`Error::Usage`] for a malformed URI, an ambiguous probe, or a backing file the policy denies;
/// [`Error::Unsupported`] for recognised formats this library cannot open (VMDK, VHD(X), VDI) and
/// for qcow2 over NBD; [`Error::ReadOnly`] when read-write access is asked of a read-only NBD
/// export; backend errors otherwise.
pub fn open(target: &str, opts: &OpenOptions) -> Result<Opened> {
    if is_nbd_uri(target) {
        let uri = NbdUri::parse(target)?;
        let format = opts.format.unwrap_or(ImageFormat::Raw);
        if format != ImageFormat::Raw {
            return Err(Error::unsupported(
                "nbd export format",
                format!(
                    "{format} (only raw exports can be opened; serve the image with qemu-nbd -f {format})"
                ),
            ));
        }
        let client = NbdClient::connect(&uri)?;
        if opts.access == Access::ReadWrite && client.is_read_only() {
            return Err(Error::ReadOnly);
        }
        return Ok(Opened::new(client, opts.access, format, Backend::Nbd));
    }

    let format = match opts.format {
        Some(f) => f,
        None => {
            let probe = RawFile::open(target, Access::ReadOnly)?;
            let f = detect(&probe)?;
            tracing::debug!(target, format = %f, "probed image format");
            f
        }
    };
    match format {
        ImageFormat::Raw => {
            let f = RawFile::open(target, opts.access)?;
            Ok(Opened::new(f, opts.access, format, Backend::File))
        }
        ImageFormat::Qcow2 => {
            let q = Qcow2Image::open(target, opts.access, opts.backing)?;
            Ok(Opened::new(q, opts.access, format, Backend::Qcow2))
        }
        other => Err(other.unsupported_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::tests::make_qcow2;

    #[test]
    fn raw_file_is_probed_and_access_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        std::fs::write(&p, vec![3u8; 8192]).unwrap();
        let t = p.to_str().unwrap();
        let o = open(t, &OpenOptions::new()).unwrap();
        assert_eq!(o.format(), ImageFormat::Raw);
        assert_eq!(o.backend(), Backend::File);
        assert!(o.write().is_none());
        assert_eq!(o.read().size(), 8192);

        let o = open(t, &OpenOptions::new().access(Access::ReadWrite)).unwrap();
        let w = o.write().unwrap();
        w.write_all_at(0, b"ab").unwrap();
        w.flush().unwrap();
        let mut b = [0u8; 3];
        o.read().read_exact_at(0, &mut b).unwrap();
        assert_eq!(&b, b"ab\x03");
    }

    #[test]
    fn qcow2_is_probed_or_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let Some(p) = make_qcow2(dir.path(), "x.qcow2") else {
            return;
        };
        let t = p.to_str().unwrap();
        let o = open(t, &OpenOptions::new()).unwrap();
        assert_eq!(
            (o.format(), o.backend()),
            (ImageFormat::Qcow2, Backend::Qcow2)
        );
        assert_eq!(o.read().size(), 4 << 20);
        let mut b = [0u8; 2];
        o.read().read_exact_at(0, &mut b).unwrap();
        assert_eq!(b, [0xab, 0xab]);
        // Pinned raw: the container bytes themselves.
        let o = open(t, &OpenOptions::new().format(ImageFormat::Raw)).unwrap();
        let mut m = [0u8; 4];
        o.read().read_exact_at(0, &mut m).unwrap();
        assert_eq!(&m, b"QFI\xfb");
    }

    #[test]
    fn unsupported_and_ambiguous_formats_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.vhdx");
        let mut v = vec![0u8; 4096];
        v[..8].copy_from_slice(b"vhdxfile");
        std::fs::write(&p, &v).unwrap();
        let e = open(p.to_str().unwrap(), &OpenOptions::new()).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref u) if u.detail().starts_with("vhdx")),
            "{e:?}"
        );

        let p = dir.path().join("amb.raw");
        let mut v = vec![0u8; 4096];
        v[..4].copy_from_slice(b"QFI\xfb");
        std::fs::write(&p, &v).unwrap();
        let e = open(p.to_str().unwrap(), &OpenOptions::new()).unwrap_err();
        assert!(
            matches!(e, Error::Usage(ref m) if m.contains("--format")),
            "{e:?}"
        );
        // Pinning resolves it.
        let o = open(
            p.to_str().unwrap(),
            &OpenOptions::new().format(ImageFormat::Raw),
        )
        .unwrap();
        assert_eq!(o.read().size(), 4096);
    }

    #[test]
    fn nbd_targets_are_raw_only_and_uris_checked() {
        let e = open("nbds://h/x", &OpenOptions::new()).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)));
        let e = open(
            "nbd+unix:///x?socket=/nonexistent",
            &OpenOptions::new().format(ImageFormat::Qcow2),
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Unsupported(ref u) if u.what() == "nbd export format"),
            "{e:?}"
        );
        let e = open(
            "nbd+unix:///x?socket=/nonexistent/sock",
            &OpenOptions::new(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }

    #[test]
    fn options_builder_keeps_values() {
        let o = OpenOptions::new()
            .format(ImageFormat::Qcow2)
            .access(Access::ReadWrite)
            .backing(BackingPolicy::allow(3));
        assert_eq!(o.get_format(), Some(ImageFormat::Qcow2));
        assert_eq!(o.get_access(), Access::ReadWrite);
        assert_eq!(o.get_backing().max_depth(), 3);
        assert_eq!(OpenOptions::new().get_access(), Access::ReadOnly);
        assert_eq!(OpenOptions::new().get_backing(), BackingPolicy::deny());
    }
}
