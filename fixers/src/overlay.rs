//! A read view of the guest with planned changes laid over it, so each step sees the earlier
//! steps' results without anything being written.

use std::collections::BTreeMap;

use guestfs::{DirEntry, FileType, FsInfo, FsRead, GuestPath, Metadata};

use crate::{Change, Result};

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Symlink(Vec<u8>),
    Dir(u32),
    Gone,
}

/// `base` with recorded changes applied on top.
pub(crate) struct Overlay<'a> {
    base: &'a dyn FsRead,
    nodes: BTreeMap<GuestPath, Node>,
}

fn gp(p: &str) -> Result<GuestPath> {
    Ok(GuestPath::parse(p.as_bytes())?)
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(base: &'a dyn FsRead) -> Self {
        Self {
            base,
            nodes: BTreeMap::new(),
        }
    }

    fn content(&self, p: &GuestPath) -> Result<(Vec<u8>, u32)> {
        let md = self.lstat(p)?;
        let len = usize::try_from(md.size)
            .ok()
            .filter(|&l| l <= crate::fixers::MAX_FILE_BYTES)
            .ok_or_else(|| crate::Error::Unsupported {
                what: "rename",
                detail: format!(
                    "{p} is {} bytes, over the {}-byte limit",
                    md.size,
                    crate::fixers::MAX_FILE_BYTES
                ),
            })?;
        let mut buf = vec![0u8; len];
        let n = self.read_at(p, 0, &mut buf)?;
        buf.truncate(n);
        Ok((buf, md.mode))
    }

    /// Lays `c` over the view.
    pub(crate) fn record(&mut self, c: &Change) -> Result<()> {
        match c {
            Change::ReplaceFile { path, new, .. } => {
                let p = gp(path)?;
                let mode = self.lstat(&p).map(|m| m.mode).unwrap_or(0o644);
                self.nodes.insert(p, Node::File(new.clone(), mode));
            }
            Change::CreateFile {
                path,
                content,
                mode,
            } => {
                self.nodes
                    .insert(gp(path)?, Node::File(content.clone(), *mode));
            }
            Change::DeleteFile { path, .. } => {
                self.nodes.insert(gp(path)?, Node::Gone);
            }
            Change::Rename { from, to } => {
                let f = gp(from)?;
                let (data, mode) = self.content(&f)?;
                self.nodes.insert(f, Node::Gone);
                self.nodes.insert(gp(to)?, Node::File(data, mode));
            }
            Change::Symlink { path, target } => {
                self.nodes
                    .insert(gp(path)?, Node::Symlink(target.as_bytes().to_vec()));
            }
            Change::Mkdir { path, mode } => {
                self.nodes.insert(gp(path)?, Node::Dir(*mode));
            }
            Change::EditHive { path, new, .. } => {
                let p = gp(path)?;
                let mode = self.lstat(&p).map(|m| m.mode).unwrap_or(0o644);
                self.nodes.insert(p, Node::File(new.clone(), mode));
            }
        }
        Ok(())
    }
}

fn not_found(p: &GuestPath) -> guestfs::Error {
    guestfs::Error::NotFound {
        path: p.to_string(),
    }
}

impl FsRead for Overlay<'_> {
    fn info(&self) -> FsInfo {
        self.base.info()
    }

    fn lstat(&self, path: &GuestPath) -> guestfs::Result<Metadata> {
        let meta = |file_type, size: usize, mode| Metadata {
            file_type,
            size: size as u64,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            ino: 0,
            nlink: 1,
        };
        match self.nodes.get(path) {
            Some(Node::File(d, mode)) => {
                let mut m = self
                    .base
                    .lstat(path)
                    .unwrap_or_else(|_| meta(FileType::Regular, 0, *mode));
                m.file_type = FileType::Regular;
                m.size = d.len() as u64;
                Ok(m)
            }
            Some(Node::Symlink(t)) => Ok(meta(FileType::Symlink, t.len(), 0o777)),
            Some(Node::Dir(mode)) => Ok(meta(FileType::Directory, 0, *mode)),
            Some(Node::Gone) => Err(not_found(path)),
            None => self.base.lstat(path),
        }
    }

    fn read_dir(&self, path: &GuestPath) -> guestfs::Result<Vec<DirEntry>> {
        let mut out = match self.nodes.get(path) {
            Some(Node::Dir(_)) => Vec::new(),
            Some(Node::Gone) => return Err(not_found(path)),
            Some(_) => {
                return Err(guestfs::Error::NotADirectory {
                    path: path.to_string(),
                });
            }
            None => self.base.read_dir(path)?,
        };
        out.retain(|e| {
            path.join_name(&e.name)
                .map_or(true, |c| !matches!(self.nodes.get(&c), Some(Node::Gone)))
        });
        for (p, n) in &self.nodes {
            if p.is_root() || p.parent() != *path {
                continue;
            }
            let Some(name) = p.file_name() else { continue };
            let ft = match n {
                Node::File(..) => FileType::Regular,
                Node::Symlink(_) => FileType::Symlink,
                Node::Dir(_) => FileType::Directory,
                Node::Gone => continue,
            };
            if !out.iter().any(|e| e.name == name) {
                out.push(DirEntry {
                    name: name.to_vec(),
                    file_type: ft,
                });
            }
        }
        Ok(out)
    }

    fn read_link(&self, path: &GuestPath) -> guestfs::Result<Vec<u8>> {
        match self.nodes.get(path) {
            Some(Node::Symlink(t)) => Ok(t.clone()),
            Some(Node::File(..) | Node::Dir(_)) => Err(guestfs::Error::NotASymlink {
                path: path.to_string(),
            }),
            Some(Node::Gone) => Err(not_found(path)),
            None => self.base.read_link(path),
        }
    }

    fn read_at(&self, path: &GuestPath, offset: u64, buf: &mut [u8]) -> guestfs::Result<usize> {
        match self.nodes.get(path) {
            Some(Node::File(d, _)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
                let src = d.get(start..).unwrap_or_default();
                let n = buf.len().min(src.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
                    dst.copy_from_slice(src);
                }
                Ok(n)
            }
            Some(Node::Dir(_)) => Err(guestfs::Error::IsADirectory {
                path: path.to_string(),
            }),
            Some(Node::Symlink(_)) | Some(Node::Gone) => Err(not_found(path)),
            None => self.base.read_at(path, offset, buf),
        }
    }
}
