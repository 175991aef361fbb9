//! Guest-root path resolution: symlinks are followed, but never out of the guest.

use crate::{Error, FileType, FsRead, GuestPath, Metadata, Result};

/// Most symlinks one resolution follows (Linux's `MAXSYMLINKS` is 40).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Whether the last component is followed if it is a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// Follow a final symlink (like `stat`, `open`).
    Final,
    /// Leave a final symlink alone (like `lstat`, `readlink`).
    NotFinal,
}

/// Resolves `raw` (relative paths start at `/`) to a canonical path on `fs`, following symlinks
/// in every component and in the last one when `follow` says so.
///
/// Absolute symlink targets restart at the guest root; `..` never climbs above it. The result
/// need not exist when only its last component is missing: callers that create files use that.
///
/// # Errors
/// [`Error::TooManySymlinks`] after [`MAX_SYMLINK_HOPS`] links; [`Error::NotFound`] for a missing
/// directory component; [`Error::NotADirectory`]; backend errors.
pub fn resolve<F: FsRead + ?Sized>(fs: &F, raw: &[u8], follow: Follow) -> Result<GuestPath> {
    let display = || String::from_utf8_lossy(raw).into_owned();
    // Pending components, in reverse so the next one is at the end.
    let mut pending: Vec<Vec<u8>> = GuestPath::parse(raw)
        .map(|_| split_raw(raw))?
        .into_iter()
        .rev()
        .collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0u32;
    while let Some(name) = pending.pop() {
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(name);
        let here = GuestPath::from_components(done.clone());
        let is_last = pending.iter().all(|c| c.is_empty() || c == b".");
        let md = match fs.lstat(&here) {
            Ok(md) => md,
            Err(e) if e.is_not_found() && is_last => return Ok(here),
            Err(e) => return Err(e),
        };
        match md.file_type {
            FileType::Symlink if !is_last || follow == Follow::Final => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(Error::TooManySymlinks { path: display() });
                }
                let target = fs.read_link(&here)?;
                // Validates length and NUL bytes of the target.
                GuestPath::parse(&target)?;
                done.pop();
                if target.first() == Some(&b'/') {
                    done.clear();
                }
                pending.extend(split_raw(&target).into_iter().rev());
            }
            FileType::Directory | FileType::Symlink => {}
            _ if !is_last => {
                return Err(Error::NotADirectory {
                    path: here.to_string(),
                });
            }
            _ => {}
        }
    }
    Ok(GuestPath::from_components(done))
}

fn split_raw(raw: &[u8]) -> Vec<Vec<u8>> {
    raw.split(|&b| b == b'/').map(<[u8]>::to_vec).collect()
}

/// Most bytes [`FsReadExt::read_file`] reads unless the caller passes a larger cap.
pub const DEFAULT_READ_CAP: u64 = 64 << 20;

/// Path-level helpers for every filesystem: resolve first, then ask the backend.
pub trait FsReadExt: FsRead {
    /// `stat`: metadata after following symlinks.
    ///
    /// # Errors
    /// As [`resolve`] and [`FsRead::lstat`].
    fn stat_path(&self, raw: &[u8]) -> Result<Metadata> {
        let p = resolve(self, raw, Follow::Final)?;
        self.lstat(&p)
    }

    /// `lstat` on a path whose directory components may be symlinks.
    ///
    /// # Errors
    /// As [`resolve`] and [`FsRead::lstat`].
    fn lstat_path(&self, raw: &[u8]) -> Result<Metadata> {
        let p = resolve(self, raw, Follow::NotFinal)?;
        self.lstat(&p)
    }

    /// True if the path resolves to something that exists.
    ///
    /// # Errors
    /// Only for errors other than "not found".
    fn exists(&self, raw: &[u8]) -> Result<bool> {
        match self.stat_path(raw) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() || matches!(e, Error::NotADirectory { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a whole regular file, refusing files larger than `cap` bytes.
    ///
    /// # Errors
    /// [`Error::LimitExceeded`] above `cap`; [`Error::IsADirectory`]; as [`resolve`].
    fn read_file(&self, raw: &[u8], cap: u64) -> Result<Vec<u8>> {
        let p = resolve(self, raw, Follow::Final)?;
        let md = self.lstat(&p)?;
        if md.file_type == FileType::Directory {
            return Err(Error::IsADirectory {
                path: p.to_string(),
            });
        }
        if md.size > cap {
            return Err(Error::LimitExceeded {
                what: format!("{p}: file size {}", md.size),
                limit: cap,
            });
        }
        let len = usize::try_from(md.size).map_err(|_| Error::LimitExceeded {
            what: format!("{p}: file size {}", md.size),
            limit: cap,
        })?;
        let mut buf = vec![0u8; len];
        let mut filled = 0usize;
        while filled < len {
            // OK to slice: filled < len == buf.len().
            let n = self.read_at(&p, filled as u64, &mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Lists a directory after resolving symlinks.
    ///
    /// # Errors
    /// As [`resolve`] and [`FsRead::read_dir`].
    fn read_dir_path(&self, raw: &[u8]) -> Result<Vec<crate::DirEntry>> {
        let p = resolve(self, raw, Follow::Final)?;
        self.read_dir(&p)
    }

    /// Reads a symlink's target after resolving the directory part.
    ///
    /// # Errors
    /// As [`resolve`] and [`FsRead::read_link`].
    fn read_link_path(&self, raw: &[u8]) -> Result<Vec<u8>> {
        let p = resolve(self, raw, Follow::NotFinal)?;
        self.read_link(&p)
    }
}

impl<T: FsRead + ?Sized> FsReadExt for T {}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{CaseSensitivity, DirEntry, FsInfo, FsKind};

    /// A tiny in-memory filesystem for resolver tests.
    #[derive(Default)]
    pub(crate) struct ToyFs {
        pub(crate) nodes: BTreeMap<Vec<u8>, (FileType, Vec<u8>)>,
    }

    impl ToyFs {
        pub(crate) fn add(&mut self, path: &str, ft: FileType, data: &str) {
            self.nodes
                .insert(path.as_bytes().to_vec(), (ft, data.as_bytes().to_vec()));
        }
        fn get(&self, p: &GuestPath) -> Result<&(FileType, Vec<u8>)> {
            if p.is_root() {
                static ROOT: (FileType, Vec<u8>) = (FileType::Directory, Vec::new());
                return Ok(&ROOT);
            }
            self.nodes.get(&p.to_bytes()).ok_or(Error::NotFound {
                path: p.to_string(),
            })
        }
    }

    impl FsRead for ToyFs {
        fn info(&self) -> FsInfo {
            FsInfo {
                kind: FsKind::Ext4,
                label: None,
                uuid: None,
                case: CaseSensitivity::Sensitive,
            }
        }
        fn lstat(&self, p: &GuestPath) -> Result<Metadata> {
            let (ft, data) = self.get(p)?;
            Ok(Metadata {
                file_type: *ft,
                size: data.len() as u64,
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime: 0,
                ino: 0,
                nlink: 1,
            })
        }
        fn read_dir(&self, p: &GuestPath) -> Result<Vec<DirEntry>> {
            let prefix = if p.is_root() {
                b"/".to_vec()
            } else {
                let mut v = p.to_bytes();
                v.push(b'/');
                v
            };
            Ok(self
                .nodes
                .iter()
                .filter_map(|(k, (ft, _))| {
                    let rest = k.strip_prefix(prefix.as_slice())?;
                    (!rest.contains(&b'/')).then(|| DirEntry {
                        name: rest.to_vec(),
                        file_type: *ft,
                    })
                })
                .collect())
        }
        fn read_link(&self, p: &GuestPath) -> Result<Vec<u8>> {
            match self.get(p)? {
                (FileType::Symlink, t) => Ok(t.clone()),
                _ => Err(Error::NotASymlink {
                    path: p.to_string(),
                }),
            }
        }
        fn read_at(&self, p: &GuestPath, offset: u64, buf: &mut [u8]) -> Result<usize> {
            let (_, data) = self.get(p)?;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
    }

    fn sample() -> ToyFs {
        let mut fs = ToyFs::default();
        fs.add("/etc", FileType::Directory, "");
        fs.add("/etc/passwd", FileType::Regular, "root:x:0:0");
        fs.add("/escape", FileType::Symlink, "../../../../etc/passwd");
        fs.add("/abs", FileType::Symlink, "/etc");
        fs.add("/loop1", FileType::Symlink, "loop2");
        fs.add("/loop2", FileType::Symlink, "loop1");
        fs.add("/etc/rel", FileType::Symlink, "../etc/./passwd");
        fs.add("/file", FileType::Regular, "x");
        fs
    }

    #[test]
    fn dotdot_symlink_cannot_escape_root() {
        let fs = sample();
        assert_eq!(
            resolve(&fs, b"/escape", Follow::Final).unwrap().to_string(),
            "/etc/passwd"
        );
        assert_eq!(fs.read_file(b"/escape", 100).unwrap(), b"root:x:0:0");
    }

    #[test]
    fn absolute_symlink_restarts_at_guest_root() {
        let fs = sample();
        assert_eq!(fs.read_file(b"/abs/passwd", 100).unwrap(), b"root:x:0:0");
        assert_eq!(fs.read_file(b"/etc/rel", 100).unwrap(), b"root:x:0:0");
    }

    #[test]
    fn symlink_loops_stop() {
        let fs = sample();
        assert!(matches!(
            resolve(&fs, b"/loop1", Follow::Final),
            Err(Error::TooManySymlinks { .. })
        ));
        // Not following the final link is fine.
        assert_eq!(
            resolve(&fs, b"/loop1", Follow::NotFinal)
                .unwrap()
                .to_string(),
            "/loop1"
        );
    }

    #[test]
    fn file_as_directory_and_missing_parents() {
        let fs = sample();
        assert!(matches!(
            resolve(&fs, b"/file/x", Follow::Final),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            resolve(&fs, b"/nope/x", Follow::Final),
            Err(Error::NotFound { .. })
        ));
        // A missing last component resolves (for creation).
        assert_eq!(
            resolve(&fs, b"/etc/new", Follow::Final)
                .unwrap()
                .to_string(),
            "/etc/new"
        );
        assert!(!fs.exists(b"/etc/new").unwrap());
    }

    #[test]
    fn read_file_cap_is_enforced() {
        let fs = sample();
        assert!(matches!(
            fs.read_file(b"/etc/passwd", 3),
            Err(Error::LimitExceeded { limit: 3, .. })
        ));
    }
}
