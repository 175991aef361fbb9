//! Where a catalog's files come from: a host directory or an ISO image.
//!
//! Paths inside a source are `/`-separated and relative to its root. Lookups are
//! case-insensitive, component by component, because virtio-win spells folders both ways
//! (`NetKVM`, `netkvm`; `2k12R2`) and ISO 9660 primary names are upper case. Symbolic links in a
//! host directory are never followed (house style S6): they are skipped as if absent.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::iso::{self, IsoEntry, IsoImage};

/// Our limit on the entries of one directory of a source (virtio-win's largest has about 40).
pub const MAX_DIR_ENTRIES: usize = 4096;
/// Our limit on the components of a path inside a source (the deepest virtio-win path has 5).
pub const MAX_PATH_DEPTH: usize = 8;

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One entry of a source directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as stored (case preserved).
    pub name: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

#[derive(Debug)]
enum Backend {
    Dir(PathBuf),
    Iso(IsoImage),
}

/// A virtio-win source: a host directory or an ISO image.
#[derive(Debug)]
pub struct Source {
    path: PathBuf,
    backend: Backend,
}

impl Source {
    /// Opens a directory, or a file that is an ISO 9660 image (recognised by `CD001` at byte
    /// 0x8001, not by its name).
    ///
    /// # Errors
    /// `Io` if the path cannot be read; `Unsupported` if it is a file but not an ISO image;
    /// `Corrupt` if the ISO's volume descriptors are damaged.
    pub fn open(path: &Path) -> Result<Self> {
        let shown = path.display().to_string();
        let meta = fs::metadata(path).map_err(|e| Error::io(&shown, e))?;
        if meta.is_dir() {
            return Ok(Self {
                path: path.to_owned(),
                backend: Backend::Dir(path.to_owned()),
            });
        }
        let mut magic = [0u8; 5];
        let mut f = fs::File::open(path).map_err(|e| Error::io(&shown, e))?;
        let is_iso = meta.len() >= iso::MAGIC_OFFSET + 5 && {
            use std::io::{Seek, SeekFrom};
            f.seek(SeekFrom::Start(iso::MAGIC_OFFSET))
                .and_then(|_| f.read_exact(&mut magic))
                .map_err(|e| Error::io(&shown, e))?;
            &magic == iso::STANDARD_ID
        };
        if !is_iso {
            return Err(Error::unsupported(
                "source",
                format!(
                    "{shown} is neither a directory nor an iso 9660 image (no CD001 at 0x8001)"
                ),
            ));
        }
        Ok(Self {
            path: path.to_owned(),
            backend: Backend::Iso(IsoImage::open(path)?),
        })
    }

    /// An ISO image held in memory (for example read out of a guest disk); `name` is shown in
    /// reports instead of a host path.
    ///
    /// # Errors
    /// `Unsupported` if the bytes are not an ISO 9660 image; `Corrupt` if its volume
    /// descriptors are damaged.
    pub fn iso_from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let magic_at = usize::try_from(iso::MAGIC_OFFSET).unwrap_or(usize::MAX);
        let magic = magic_at
            .checked_add(5)
            .and_then(|end| bytes.get(magic_at..end));
        if magic != Some(&iso::STANDARD_ID[..]) {
            return Err(Error::unsupported(
                "source",
                format!("{name} is not an iso 9660 image (no CD001 at 0x8001)"),
            ));
        }
        Ok(Self {
            path: PathBuf::from(name),
            backend: Backend::Iso(IsoImage::from_bytes(bytes)?),
        })
    }

    /// The host path this source was opened from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `"directory"` or `"iso"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Dir(_) => "directory",
            Backend::Iso(_) => "iso",
        }
    }

    /// Lists the directory at `rel` (`""` is the root), sorted by name.
    ///
    /// # Errors
    /// `Missing` if `rel` does not exist or is not a directory; `Unsupported` past
    /// [`MAX_DIR_ENTRIES`] or [`MAX_PATH_DEPTH`]; `Io`/`Corrupt` from the backend.
    pub fn read_dir(&self, rel: &str) -> Result<Vec<Entry>> {
        let mut out = match &self.backend {
            Backend::Dir(root) => {
                let dir = self.host_path(root, rel)?;
                list_host(&dir)?
            }
            Backend::Iso(img) => {
                let dir = self.iso_lookup(img, rel)?;
                img.list(&dir, MAX_DIR_ENTRIES)?
                    .into_iter()
                    .map(|e| Entry {
                        kind: if e.is_dir {
                            EntryKind::Dir
                        } else {
                            EntryKind::File
                        },
                        size: if e.is_dir { 0 } else { u64::from(e.size) },
                        name: e.name,
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Reads the whole file at `rel`, refusing files over `cap` bytes before reading them.
    ///
    /// # Errors
    /// `Missing` if absent; `Unsupported` if larger than `cap`; `Io`/`Corrupt` from the backend.
    pub fn read_file(&self, rel: &str, cap: u64) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::Dir(root) => {
                let p = self.host_path(root, rel)?;
                let meta = fs::symlink_metadata(&p).map_err(|e| Error::io(rel, e))?;
                if !meta.is_file() {
                    return Err(Error::Missing(format!("{rel} is not a regular file")));
                }
                if meta.len() > cap {
                    return Err(Error::unsupported(
                        "file size",
                        format!("{rel} is {} bytes, limit {cap}", meta.len()),
                    ));
                }
                let f = fs::File::open(&p).map_err(|e| Error::io(rel, e))?;
                let mut data = Vec::new();
                // Bounded even if the file grows after the size check.
                f.take(cap.saturating_add(1))
                    .read_to_end(&mut data)
                    .map_err(|e| Error::io(rel, e))?;
                if u64::try_from(data.len()).unwrap_or(u64::MAX) > cap {
                    return Err(Error::unsupported(
                        "file size",
                        format!("{rel} grew past the limit {cap}"),
                    ));
                }
                Ok(data)
            }
            Backend::Iso(img) => {
                let entry = self.iso_lookup(img, rel)?;
                if entry.is_dir {
                    return Err(Error::Missing(format!("{rel} is not a regular file")));
                }
                img.read_file(&entry, cap)
            }
        }
    }

    /// Resolves `rel` case-insensitively on the host, never through a symbolic link.
    fn host_path(&self, root: &Path, rel: &str) -> Result<PathBuf> {
        let mut cur = root.to_owned();
        for comp in components(rel)? {
            let entries = list_host(&cur)?;
            let found = find(&entries, comp).ok_or_else(|| missing(rel))?;
            cur.push(&found.name);
        }
        Ok(cur)
    }

    fn iso_lookup(&self, img: &IsoImage, rel: &str) -> Result<IsoEntry> {
        let mut cur = img.root().clone();
        for comp in components(rel)? {
            if !cur.is_dir {
                return Err(missing(rel));
            }
            let entries = img.list(&cur, MAX_DIR_ENTRIES)?;
            cur = entries
                .into_iter()
                .find(|e| e.name.eq_ignore_ascii_case(comp))
                .ok_or_else(|| missing(rel))?;
        }
        Ok(cur)
    }
}

fn missing(rel: &str) -> Error {
    Error::Missing(format!("{rel} not found in the source"))
}

/// Splits a relative path, refusing `..`, `.` and depth past [`MAX_PATH_DEPTH`].
fn components(rel: &str) -> Result<Vec<&str>> {
    let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
    if comps.len() > MAX_PATH_DEPTH {
        return Err(Error::unsupported(
            "path",
            format!(
                "{rel} has {} components, limit {MAX_PATH_DEPTH}",
                comps.len()
            ),
        ));
    }
    if comps.iter().any(|c| *c == ".." || *c == ".") {
        return Err(Error::Usage(format!("path {rel} contains . or ..")));
    }
    Ok(comps)
}

fn find<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| entries.iter().find(|e| e.name.eq_ignore_ascii_case(name)))
}

/// Lists a host directory: regular files and directories only, names that are valid UTF-8.
fn list_host(dir: &Path) -> Result<Vec<Entry>> {
    let shown = dir.display().to_string();
    let meta = fs::symlink_metadata(dir).map_err(|e| Error::io(&shown, e))?;
    if !meta.is_dir() {
        return Err(Error::Missing(format!("{shown} is not a directory")));
    }
    let mut out = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| Error::io(&shown, e))? {
        let item = item.map_err(|e| Error::io(&shown, e))?;
        if out.len() >= MAX_DIR_ENTRIES {
            return Err(Error::unsupported(
                "source",
                format!("{shown} has more than {MAX_DIR_ENTRIES} entries"),
            ));
        }
        let Ok(name) = item.file_name().into_string() else {
            tracing::debug!(dir = %shown, "skipping a name that is not utf-8");
            continue;
        };
        let ft = item.file_type().map_err(|e| Error::io(&shown, e))?;
        let (kind, size) = if ft.is_dir() {
            (EntryKind::Dir, 0)
        } else if ft.is_file() {
            let len = item.metadata().map_err(|e| Error::io(&shown, e))?.len();
            (EntryKind::File, len)
        } else {
            tracing::debug!(dir = %shown, name, "skipping a symbolic link or special file");
            continue;
        };
        out.push(Entry { name, kind, size });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_source_lookups() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("NetKVM/2k19/amd64")).unwrap();
        fs::write(dir.path().join("NetKVM/2k19/amd64/netkvm.inf"), b"abc").unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        let src = Source::open(dir.path()).unwrap();
        assert_eq!(src.kind(), "directory");
        let root = src.read_dir("").unwrap();
        assert_eq!(root.len(), 1, "the symlink is skipped");
        assert_eq!(root[0].name, "NetKVM");
        assert_eq!(root[0].kind, EntryKind::Dir);
        assert_eq!(
            src.read_file("netkvm/2K19/AMD64/NETKVM.INF", 10).unwrap(),
            b"abc"
        );
        let err = src
            .read_file("NetKVM/2k19/amd64/netkvm.inf", 2)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported file size: NetKVM/2k19/amd64/netkvm.inf is 3 bytes, limit 2"
        );
        let err = src.read_file("link/passwd", 100).unwrap_err();
        assert_eq!(err.to_string(), "link/passwd not found in the source");
        let err = src.read_dir("a/../b").unwrap_err();
        assert_eq!(err.to_string(), "path a/../b contains . or ..");
        let err = src.read_dir("a/b/c/d/e/f/g/h/i").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported path: a/b/c/d/e/f/g/h/i has 9 components, limit 8"
        );
    }

    #[test]
    fn iso_bytes_need_the_magic() {
        let err = Source::iso_from_bytes("guest:/virtio.iso", vec![0u8; 0x9000]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported source: guest:/virtio.iso is not an iso 9660 image (no CD001 at 0x8001)"
        );
        // Magic present but no terminator and nothing else: the descriptor walk refuses it.
        let mut b = vec![0u8; 0x8800];
        b[0x8001..0x8006].copy_from_slice(b"CD001");
        let err = Source::iso_from_bytes("x", b).unwrap_err();
        let c = err.as_corrupt().unwrap();
        assert_eq!(c.structure(), "iso");
        assert_eq!(c.position(), crate::error::Position::Offset(0x8800));
    }

    #[test]
    fn plain_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.iso");
        fs::write(&p, vec![0u8; 0x9000]).unwrap();
        let err = Source::open(&p).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("is neither a directory nor an iso 9660 image (no CD001 at 0x8001)"),
            "{err}"
        );
    }
}
