//! The volume store: a directory of sparse raw volumes and their read-only snapshots.
//!
//! Layout (see `DESIGN.md`):
//! ```text
//! ROOT/volumes/NAME/volume.json                   metadata (schema 1)
//! ROOT/volumes/NAME/data.raw                      the sparse raw image (or data.qcow2)
//! ROOT/volumes/NAME/snapshots/SNAP/snapshot.json
//! ROOT/volumes/NAME/snapshots/SNAP/data.raw       reflink or sparse copy, never written again
//!                                                 (data.qcow2 for a qcow2 volume)
//! ```
//! Everything is built under a dot-prefixed temporary name, synced, and renamed into place, so a
//! crash never leaves a half-made volume or snapshot visible. Listing skips dot-names.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backend::{ExportBackend, FileBackend};
use crate::export::{Export, ExportCatalog};
use crate::qcow2::{MAX_QCOW2_SIZE, QCOW2_SIZE_ALIGN, Qcow2Backend, write_empty_image};
use crate::{Error, Result};

/// Metadata schema version written by this code.
const SCHEMA: u32 = 1;
/// Longest volume or snapshot name.
const MAX_NAME: usize = 128;
/// Largest metadata file read.
const MAX_META: u64 = 64 * 1024;
/// Largest volume size accepted (2^60 bytes; filesystems refuse far less anyway).
const MAX_VOLUME_SIZE: u64 = 1 << 60;
/// The separator between volume and snapshot in an export name.
pub(crate) const SNAPSHOT_SEPARATOR: char = '@';
/// Bytes copied per call by the sparse-copy fallback.
const COPY_CHUNK: usize = 1 << 20;
/// Allocation runs fetched per call by the sparse-copy fallback.
const COPY_RUNS: usize = 1024;

/// The on-disk format of a volume's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeFormat {
    /// A sparse raw file (`data.raw`).
    #[default]
    Raw,
    /// A qcow2 image (`data.qcow2`), read and written through `imago`; never with a backing
    /// or external data file.
    Qcow2,
}

impl VolumeFormat {
    /// The name of the data file in a volume or snapshot directory.
    pub fn data_file_name(self) -> &'static str {
        match self {
            Self::Raw => "data.raw",
            Self::Qcow2 => "data.qcow2",
        }
    }
}

impl std::str::FromStr for VolumeFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            other => Err(Error::Usage(format!(
                "volume format {other:?} unknown; expected raw or qcow2"
            ))),
        }
    }
}

/// How a snapshot's data was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloneMethod {
    /// `FICLONE`: the snapshot shares extents with the volume (copy-on-write filesystems).
    Reflink,
    /// A copy of the allocated ranges only (`SEEK_DATA`/`SEEK_HOLE`); holes stay holes.
    SparseCopy,
}

/// What `volume.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeInfo {
    /// Metadata schema version.
    pub schema: u32,
    /// The volume's name (also its export name).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Data format.
    pub format: VolumeFormat,
    /// Free text, sent to clients as the export description.
    pub description: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// What `snapshot.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotInfo {
    /// Metadata schema version.
    pub schema: u32,
    /// The volume the snapshot was taken of.
    pub volume: String,
    /// The snapshot's name; its export is `volume@name`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// How the data was made.
    pub method: CloneMethod,
    /// The data format (the volume's); absent in metadata written before qcow2 volumes.
    #[serde(default)]
    pub format: VolumeFormat,
}

/// A store directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// Open exports, shared by every connection so that flushes cover all of them.
    open: Mutex<HashMap<String, OpenEntry>>,
}

/// A shared open export and the (device, inode) of its file when it was opened.
type OpenEntry = (Weak<Export>, (u64, u64));

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_name(base: &str) -> String {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".tmp-{base}-{}-{n}", std::process::id())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Checks a volume or snapshot name: 1 to 128 characters from `A-Z a-z 0-9 . _ -`, not starting
/// with a dot or dash.
///
/// # Errors
/// [`Error::Usage`] naming the problem.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::Usage(format!(
            "name length {} out of range 1..={MAX_NAME}",
            name.len()
        )));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err(Error::Usage(format!(
            "name {name:?} must not start with '.' or '-'"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::Usage(format!(
            "name {name:?} has character {c:?}; allowed are A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::Usage(format!("cannot encode metadata: {e}")))?;
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all_at(&text, 0).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut text = Vec::new();
    f.take(MAX_META + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io(path, e))?;
    if text.len() as u64 > MAX_META {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            detail: format!("metadata larger than {MAX_META} bytes"),
        });
    }
    serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

impl Store {
    /// Opens a store, creating its directory if needed.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let volumes = root.join("volumes");
        fs::create_dir_all(&volumes).map_err(|e| Error::io(&volumes, e))?;
        Ok(Self {
            root,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn volumes_dir(&self) -> PathBuf {
        self.root.join("volumes")
    }

    fn volume_dir(&self, name: &str) -> PathBuf {
        self.volumes_dir().join(name)
    }

    fn snapshots_dir(&self, volume: &str) -> PathBuf {
        self.volume_dir(volume).join("snapshots")
    }

    /// Creates an empty (all-hole) raw volume of `size` bytes.
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad name or size, [`Error::Exists`], [`Error::Io`].
    pub fn create_volume(&self, name: &str, size: u64, description: &str) -> Result<VolumeInfo> {
        self.create_volume_with_format(name, size, description, VolumeFormat::Raw)
    }

    /// Creates an empty volume of `size` bytes in `format`: a sparse raw file, or a qcow2 v3
    /// image with 64 KiB clusters and nothing allocated (at most 2^50 bytes).
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad name or size, [`Error::Exists`], [`Error::Io`].
    pub fn create_volume_with_format(
        &self,
        name: &str,
        size: u64,
        description: &str,
        format: VolumeFormat,
    ) -> Result<VolumeInfo> {
        validate_name(name)?;
        let max = match format {
            VolumeFormat::Raw => MAX_VOLUME_SIZE,
            VolumeFormat::Qcow2 => MAX_QCOW2_SIZE,
        };
        if size == 0 || size > max {
            return Err(Error::Usage(format!(
                "volume size {size} out of range 1..={max}"
            )));
        }
        if format == VolumeFormat::Qcow2 && !size.is_multiple_of(QCOW2_SIZE_ALIGN) {
            return Err(Error::Usage(format!(
                "qcow2 volume size {size} is not a multiple of {QCOW2_SIZE_ALIGN}"
            )));
        }
        if description.len() > crate::proto::MAX_STRING {
            return Err(Error::Usage(format!(
                "description of {} bytes, at most {}",
                description.len(),
                crate::proto::MAX_STRING
            )));
        }
        let dir = self.volume_dir(name);
        if dir.exists() {
            return Err(Error::Exists {
                what: "volume",
                name: name.to_owned(),
            });
        }
        let tmp = self.volumes_dir().join(tmp_name(name));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = (|| {
            let data = tmp.join(format.data_file_name());
            let f = File::create(&data).map_err(|e| Error::io(&data, e))?;
            match format {
                VolumeFormat::Raw => f.set_len(size),
                VolumeFormat::Qcow2 => write_empty_image(&f, size),
            }
            .map_err(|e| Error::io(&data, e))?;
            f.sync_all().map_err(|e| Error::io(&data, e))?;
            let snaps = tmp.join("snapshots");
            fs::create_dir(&snaps).map_err(|e| Error::io(&snaps, e))?;
            let info = VolumeInfo {
                schema: SCHEMA,
                name: name.to_owned(),
                size,
                format,
                description: description.to_owned(),
                created_unix: now_unix(),
            };
            write_json(&tmp.join("volume.json"), &info)?;
            sync_dir(&tmp)?;
            rename_new(&tmp, &dir, "volume", name)?;
            sync_dir(&self.volumes_dir())?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Every volume, sorted by name.
    ///
    /// # Errors
    /// [`Error::Io`], or [`Error::Corrupt`] for an unreadable `volume.json`.
    pub fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        for name in list_names(&self.volumes_dir())? {
            out.push(self.volume_info(&name)?);
        }
        Ok(out)
    }

    /// The metadata of one volume.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], [`Error::Io`].
    pub fn volume_info(&self, name: &str) -> Result<VolumeInfo> {
        validate_name(name)?;
        let path = self.volume_dir(name).join("volume.json");
        if !path.exists() {
            return Err(Error::NotFound {
                what: "volume",
                name: name.to_owned(),
            });
        }
        let info: VolumeInfo = read_json(&path)?;
        if info.name != name || info.schema != SCHEMA {
            return Err(Error::Corrupt {
                path,
                detail: format!(
                    "names volume {:?} schema {}, expected {name:?} schema {SCHEMA}",
                    info.name, info.schema
                ),
            });
        }
        Ok(info)
    }

    /// Removes a volume and all its snapshots.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Io`].
    pub fn remove_volume(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        let dir = self.volume_dir(name);
        if !dir.exists() {
            return Err(Error::NotFound {
                what: "volume",
                name: name.to_owned(),
            });
        }
        // Rename first so the volume disappears atomically, then delete at leisure.
        let trash = self.volumes_dir().join(tmp_name(name));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.volumes_dir())?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        self.forget(name);
        Ok(())
    }

    fn forget(&self, export: &str) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.remove(export);
    }

    /// Takes a read-only snapshot of a volume, served as `volume@snap`. Uses `FICLONE` where the
    /// filesystem supports it and a sparse copy otherwise. The snapshot appears atomically: it is
    /// built under a temporary name, synced, then renamed.
    ///
    /// Writes that race with the snapshot (from a live server) may or may not be included; a
    /// reflink is atomic with respect to each write, a sparse copy is not (see `DESIGN.md`).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Exists`], [`Error::Usage`], [`Error::Io`].
    pub fn create_snapshot(&self, volume: &str, snap: &str) -> Result<SnapshotInfo> {
        validate_name(snap)?;
        let vol = self.volume_info(volume)?;
        let snaps = self.snapshots_dir(volume);
        fs::create_dir_all(&snaps).map_err(|e| Error::io(&snaps, e))?;
        let target = snaps.join(snap);
        if target.exists() {
            return Err(Error::Exists {
                what: "snapshot",
                name: format!("{volume}@{snap}"),
            });
        }
        let src_path = self.volume_dir(volume).join(vol.format.data_file_name());
        let src = File::open(&src_path).map_err(|e| Error::io(&src_path, e))?;
        // A qcow2 volume served by this process keeps metadata (L2 tables, refcounts) in
        // imago's cache: write it out so the copied file is a consistent image. Another
        // process serving the volume must be quiesced by the caller (see DESIGN.md).
        if let Some(export) = self.cached(volume) {
            export
                .backend()
                .flush()
                .map_err(|e| Error::io(&src_path, e))?;
        }
        // Data the server acknowledged but has not flushed is in the page cache, which both
        // methods read; syncing first makes the snapshot's own sync cheaper.
        src.sync_data().map_err(|e| Error::io(&src_path, e))?;
        let tmp = snaps.join(tmp_name(snap));
        fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let result = (|| {
            let data = tmp.join(vol.format.data_file_name());
            let dst = File::create(&data).map_err(|e| Error::io(&data, e))?;
            let method = match rustix::fs::ioctl_ficlone(&dst, &src) {
                Ok(()) => CloneMethod::Reflink,
                Err(_) => {
                    sparse_copy(&src, &dst).map_err(|e| Error::io(&data, e))?;
                    CloneMethod::SparseCopy
                }
            };
            let size = dst.metadata().map_err(|e| Error::io(&data, e))?.len();
            dst.sync_all().map_err(|e| Error::io(&data, e))?;
            fs::set_permissions(&data, fs::Permissions::from_mode(0o444))
                .map_err(|e| Error::io(&data, e))?;
            let info = SnapshotInfo {
                schema: SCHEMA,
                volume: vol.name.clone(),
                name: snap.to_owned(),
                size,
                created_unix: now_unix(),
                method,
                format: vol.format,
            };
            write_json(&tmp.join("snapshot.json"), &info)?;
            sync_dir(&tmp)?;
            rename_new(&tmp, &target, "snapshot", &format!("{volume}@{snap}"))?;
            sync_dir(&snaps)?;
            Ok(info)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// The snapshots of a volume, sorted by name.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`], [`Error::Io`].
    pub fn list_snapshots(&self, volume: &str) -> Result<Vec<SnapshotInfo>> {
        self.volume_info(volume)?;
        let dir = self.snapshots_dir(volume);
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for name in list_names(&dir)? {
            out.push(self.snapshot_info(volume, &name)?);
        }
        Ok(out)
    }

    fn snapshot_info(&self, volume: &str, snap: &str) -> Result<SnapshotInfo> {
        validate_name(snap)?;
        let path = self.snapshots_dir(volume).join(snap).join("snapshot.json");
        if !path.exists() {
            return Err(Error::NotFound {
                what: "snapshot",
                name: format!("{volume}@{snap}"),
            });
        }
        read_json(&path)
    }

    /// Removes one snapshot.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Io`].
    pub fn remove_snapshot(&self, volume: &str, snap: &str) -> Result<()> {
        self.snapshot_info(volume, snap)?;
        let dir = self.snapshots_dir(volume).join(snap);
        let trash = self.snapshots_dir(volume).join(tmp_name(snap));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        self.forget(&format!("{volume}{SNAPSHOT_SEPARATOR}{snap}"));
        Ok(())
    }

    fn open_uncached(&self, name: &str) -> Result<Option<(Export, (u64, u64))>> {
        let (volume, snap) = match name.split_once(SNAPSHOT_SEPARATOR) {
            Some((v, s)) => (v, Some(s)),
            None => (name, None),
        };
        if validate_name(volume).is_err() || snap.is_some_and(|s| validate_name(s).is_err()) {
            return Ok(None);
        }
        let info = match self.volume_info(volume) {
            Ok(i) => i,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let file_name = info.format.data_file_name();
        let (path, read_only, description) = match snap {
            None => (
                self.volume_dir(volume).join(file_name),
                false,
                info.description.clone(),
            ),
            Some(s) => {
                match self.snapshot_info(volume, s) {
                    Ok(_) => {}
                    Err(Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                }
                (
                    self.snapshots_dir(volume).join(s).join(file_name),
                    true,
                    format!("snapshot {s} of volume {volume}"),
                )
            }
        };
        let backend: Arc<dyn ExportBackend> = match info.format {
            VolumeFormat::Raw => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(!read_only)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                Arc::new(FileBackend::new(file).map_err(|e| Error::io(&path, e))?)
            }
            VolumeFormat::Qcow2 => {
                let access = if read_only {
                    disk::open::Access::ReadOnly
                } else {
                    disk::open::Access::ReadWrite
                };
                Arc::new(Qcow2Backend::open(&path, access).map_err(|e| Error::io(&path, e))?)
            }
        };
        let meta = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        let export = Export::new(name, backend)
            .description(description)
            .read_only(read_only);
        Ok(Some((export, (meta.dev(), meta.ino()))))
    }

    /// The data file of an export, whichever format it has (for the open-export cache).
    fn data_path(&self, name: &str) -> PathBuf {
        let dir = match name.split_once(SNAPSHOT_SEPARATOR) {
            Some((v, s)) => self.snapshots_dir(v).join(s),
            None => self.volume_dir(name),
        };
        let qcow2 = dir.join(VolumeFormat::Qcow2.data_file_name());
        if qcow2.exists() {
            qcow2
        } else {
            dir.join(VolumeFormat::Raw.data_file_name())
        }
    }

    /// The export another connection has open under `name`, if any.
    fn cached(&self, name: &str) -> Option<Arc<Export>> {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(name).and_then(|(w, _)| w.upgrade())
    }
}

/// Renames a finished temporary directory into place, refusing to replace an existing one.
fn rename_new(tmp: &Path, target: &Path, what: &'static str, name: &str) -> Result<()> {
    if target.exists() {
        return Err(Error::Exists {
            what,
            name: name.to_owned(),
        });
    }
    // rename(2) of a directory onto an existing non-empty directory fails, so a race with
    // another creator cannot replace its result.
    fs::rename(tmp, target).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::NOTEMPTY.raw_os_error())
            || e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error())
        {
            Error::Exists {
                what,
                name: name.to_owned(),
            }
        } else {
            Error::io(target, e)
        }
    })
}

/// Names of the entries of `dir`, skipping dot-names (temporary and trash), sorted.
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
            && validate_name(name).is_ok()
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Copies the allocated ranges of `src` into `dst` and gives `dst` the same length, leaving
/// holes as holes.
fn sparse_copy(src: &File, dst: &File) -> std::io::Result<()> {
    let size = src.metadata()?.len();
    dst.set_len(size)?;
    let map = FileBackend::new(src.try_clone()?)?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut pos = 0u64;
    while pos < size {
        let runs = map.runs(pos, size - pos, COPY_RUNS)?;
        if runs.is_empty() {
            break;
        }
        for run in runs {
            if !run.hole {
                let mut done = 0u64;
                while done < run.len {
                    let n = usize::try_from((run.len - done).min(COPY_CHUNK as u64))
                        .unwrap_or(COPY_CHUNK);
                    // OK to index: n <= COPY_CHUNK == buf.len().
                    let chunk = &mut buf[..n];
                    src.read_exact_at(chunk, pos + done)?;
                    dst.write_all_at(chunk, pos + done)?;
                    done += n as u64;
                }
            }
            pos += run.len;
        }
    }
    Ok(())
}

impl ExportCatalog for Store {
    fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for vol in list_names(&self.volumes_dir())? {
            out.push(vol.clone());
            let snaps = self.snapshots_dir(&vol);
            if snaps.exists() {
                for s in list_names(&snaps)? {
                    out.push(format!("{vol}{SNAPSHOT_SEPARATOR}{s}"));
                }
            }
        }
        Ok(out)
    }

    fn open(&self, name: &str) -> Result<Option<Arc<Export>>> {
        // Reuse an export another connection has open, unless the file was replaced meanwhile
        // (a volume removed and re-created by another process).
        let current_id = fs::metadata(self.data_path(name))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        {
            let open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((w, id)) = open.get(name)
                && Some(*id) == current_id
                && let Some(e) = w.upgrade()
            {
                return Ok(Some(e));
            }
        }
        let Some((export, id)) = self.open_uncached(name)? else {
            return Ok(None);
        };
        let export = Arc::new(export);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|_, (w, _)| w.strong_count() > 0);
        open.insert(name.to_owned(), (Arc::downgrade(&export), id));
        Ok(Some(export))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["a", "disk-0", "vm_1.img", &"x".repeat(128)] {
            validate_name(good).unwrap();
        }
        let msg = |n: &str| validate_name(n).unwrap_err().to_string();
        assert_eq!(msg(""), "name length 0 out of range 1..=128");
        assert_eq!(
            msg(&"x".repeat(129)),
            "name length 129 out of range 1..=128"
        );
        assert_eq!(
            msg(".hidden"),
            "name \".hidden\" must not start with '.' or '-'"
        );
        assert_eq!(msg("-opt"), "name \"-opt\" must not start with '.' or '-'");
        assert_eq!(
            msg("a@b"),
            "name \"a@b\" has character '@'; allowed are A-Z a-z 0-9 . _ -"
        );
        assert_eq!(msg("../x"), "name \"../x\" must not start with '.' or '-'");
        assert_eq!(
            msg("a/b"),
            "name \"a/b\" has character '/'; allowed are A-Z a-z 0-9 . _ -"
        );
    }

    #[test]
    fn volume_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let info = store.create_volume("v", 1 << 20, "desc").unwrap();
        assert_eq!(
            (
                info.schema,
                info.name.as_str(),
                info.size,
                info.format,
                info.description.as_str()
            ),
            (1, "v", 1 << 20, VolumeFormat::Raw, "desc")
        );
        let data = dir.path().join("volumes/v/data.raw");
        assert_eq!(fs::metadata(&data).unwrap().len(), 1 << 20);
        // Sparse: nothing allocated.
        assert_eq!(fs::metadata(&data).unwrap().blocks(), 0);
        assert_eq!(store.list_volumes().unwrap(), vec![info.clone()]);
        assert!(matches!(
            store.create_volume("v", 1, ""),
            Err(Error::Exists { what: "volume", .. })
        ));
        assert_eq!(
            store.create_volume("w", 0, "").unwrap_err().to_string(),
            "volume size 0 out of range 1..=1152921504606846976"
        );
        assert!(matches!(
            store.create_volume("w", 1, &"d".repeat(4097)),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            store.volume_info("nope"),
            Err(Error::NotFound { what: "volume", .. })
        ));
        // Temporary and trash entries are invisible.
        fs::create_dir(dir.path().join("volumes/.tmp-x-1-1")).unwrap();
        assert_eq!(store.list_volumes().unwrap().len(), 1);
        assert_eq!(store.list().unwrap(), vec!["v".to_owned()]);
        store.remove_volume("v").unwrap();
        assert!(store.list_volumes().unwrap().is_empty());
        assert!(matches!(
            store.remove_volume("v"),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn qcow2_volumes_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let info = store
            .create_volume_with_format("q", 8 << 20, "", VolumeFormat::Qcow2)
            .unwrap();
        assert_eq!((info.format, info.size), (VolumeFormat::Qcow2, 8 << 20));
        let data = dir.path().join("volumes/q/data.qcow2");
        assert_eq!(&fs::read(&data).unwrap()[..4], b"QFI\xfb");
        assert!(!dir.path().join("volumes/q/data.raw").exists());
        assert_eq!(
            store
                .create_volume_with_format("r", 1000, "", VolumeFormat::Qcow2)
                .unwrap_err()
                .to_string(),
            "qcow2 volume size 1000 is not a multiple of 512"
        );
        assert_eq!(
            store
                .create_volume_with_format("r", 1 << 51, "", VolumeFormat::Qcow2)
                .unwrap_err()
                .to_string(),
            "volume size 2251799813685248 out of range 1..=1125899906842624"
        );
        assert_eq!(
            "qcow2".parse::<VolumeFormat>().unwrap(),
            VolumeFormat::Qcow2
        );
        assert_eq!("raw".parse::<VolumeFormat>().unwrap(), VolumeFormat::Raw);
        assert_eq!(
            "vmdk".parse::<VolumeFormat>().unwrap_err().to_string(),
            "volume format \"vmdk\" unknown; expected raw or qcow2"
        );

        // Written through an open export and not yet flushed: the snapshot still sees it,
        // because the store flushes the open export first.
        let e = store.open("q").unwrap().unwrap();
        assert_eq!(e.size(), 8 << 20);
        e.backend().write_at(&[0x5a; 4096], 1 << 20).unwrap();
        let snap = store.create_snapshot("q", "s").unwrap();
        assert_eq!((snap.format, snap.size > 0), (VolumeFormat::Qcow2, true));
        e.backend().write_at(&[0x11; 4096], 1 << 20).unwrap();
        let s = store.open("q@s").unwrap().unwrap();
        assert!(s.is_read_only());
        assert_eq!(s.size(), 8 << 20);
        let mut buf = [0u8; 4096];
        s.backend().read_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, [0x5a; 4096]);
        e.backend().read_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, [0x11; 4096]);
        assert!(dir.path().join("volumes/q/snapshots/s/data.qcow2").exists());
        // Snapshot metadata from before qcow2 support (no format field) reads as raw.
        let old: SnapshotInfo = serde_json::from_str(
            r#"{"schema":1,"volume":"v","name":"s","size":1,"created_unix":0,"method":"reflink"}"#,
        )
        .unwrap();
        assert_eq!(old.format, VolumeFormat::Raw);
    }

    #[test]
    fn corrupt_metadata_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_volume("v", 4096, "").unwrap();
        let meta = dir.path().join("volumes/v/volume.json");
        fs::write(&meta, b"{\"schema\":1,\"bogus\":true}").unwrap();
        assert!(matches!(store.volume_info("v"), Err(Error::Corrupt { .. })));
        fs::write(
            &meta,
            br#"{"schema":1,"name":"other","size":4096,"format":"raw","description":"","created_unix":0}"#,
        )
        .unwrap();
        let e = store.volume_info("v").unwrap_err().to_string();
        assert!(
            e.ends_with("names volume \"other\" schema 1, expected \"v\" schema 1"),
            "{e}"
        );
        fs::write(&meta, vec![b' '; 70 * 1024]).unwrap();
        let e = store.volume_info("v").unwrap_err().to_string();
        assert!(e.ends_with("metadata larger than 65536 bytes"), "{e}");
    }

    #[test]
    fn snapshots_are_sparse_immutable_and_independent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_volume("v", 8 << 20, "").unwrap();
        let vol = store.open("v").unwrap().unwrap();
        vol.backend().write_at(&[0xAB; 4096], 1 << 20).unwrap();
        let snap = store.create_snapshot("v", "s1").unwrap();
        assert_eq!(
            (snap.volume.as_str(), snap.name.as_str(), snap.size),
            ("v", "s1", 8 << 20)
        );
        let path = dir.path().join("volumes/v/snapshots/s1/data.raw");
        // Holes stay holes whichever method was used.
        let blocks = fs::metadata(&path).unwrap().blocks();
        assert!(blocks <= 64, "snapshot allocates {blocks} blocks");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // Later writes to the volume do not reach the snapshot.
        vol.backend().write_at(&[0xCD; 4096], 1 << 20).unwrap();
        let s = store.open("v@s1").unwrap().unwrap();
        assert!(s.is_read_only());
        let mut buf = vec![0u8; 4096];
        s.backend().read_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, vec![0xAB; 4096]);
        assert_eq!(store.list_snapshots("v").unwrap(), vec![snap]);
        assert_eq!(
            store.list().unwrap(),
            vec!["v".to_owned(), "v@s1".to_owned()]
        );
        assert!(matches!(
            store.create_snapshot("v", "s1"),
            Err(Error::Exists {
                what: "snapshot",
                ..
            })
        ));
        assert!(matches!(
            store.create_snapshot("nope", "s1"),
            Err(Error::NotFound { what: "volume", .. })
        ));
        assert!(store.open("v@nope").unwrap().is_none());
        assert!(store.open("nope").unwrap().is_none());
        assert!(store.open("../../etc").unwrap().is_none());
        assert!(store.open("").unwrap().is_none());
        store.remove_snapshot("v", "s1").unwrap();
        assert!(store.list_snapshots("v").unwrap().is_empty());
    }

    #[test]
    fn connections_share_one_export_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.create_volume("v", 4096, "").unwrap();
        let a = store.open("v").unwrap().unwrap();
        let b = store.open("v").unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // Removed and re-created behind our back: a new export.
        let other = Store::open(dir.path()).unwrap();
        other.remove_volume("v").unwrap();
        other.create_volume("v", 8192, "").unwrap();
        let c = store.open("v").unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.size(), 8192);
    }
}
