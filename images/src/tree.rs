//! An in-memory description of the files a builder puts on a filesystem, and the ways to turn it
//! into a filesystem's input: a staging directory (`mke2fs -d`, `mkfs.btrfs --rootdir`, mtools,
//! ntfs-3g) or an `mkfs.xfs` protofile.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use crate::error::{Error, Result, io};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// A file of the build host (real ELF binaries for architecture detection).
    Host(&'static str),
    /// A registry hive made from `.reg` text when the tree is materialised.
    Hive(crate::hive::HiveSpec),
    /// An empty rpm database (sqlite backend), made when the tree is materialised.
    RpmDb,
}

/// One entry of a tree.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A directory with permission bits.
    Dir { mode: u32 },
    /// A regular file with permission bits.
    File { data: Data, mode: u32 },
    /// A symbolic link.
    Symlink { target: String },
}

/// The file tree of one filesystem, keyed by path relative to its root (`etc/hostname`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// Modification time given to every staged file, so tools that copy times copy a fixed one.
pub(crate) const FIXED_EPOCH: i64 = 1_700_000_000;

fn clean(path: &str) -> String {
    path.trim_matches('/').to_owned()
}

impl Tree {
    /// An empty tree.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.nodes
                .entry(parent.to_owned())
                .or_insert(Node::Dir { mode: 0o755 });
            at += i + 1;
        }
    }

    /// Adds a directory (and its parents).
    pub(crate) fn dir(&mut self, path: &str) -> &mut Self {
        let p = clean(path);
        self.parents(&p);
        self.nodes.insert(p, Node::Dir { mode: 0o755 });
        self
    }

    /// Adds a regular file with mode 0644.
    pub(crate) fn file(&mut self, path: &str, data: impl Into<Vec<u8>>) -> &mut Self {
        self.file_mode(path, data, 0o644)
    }

    /// Adds a regular file with the given mode.
    pub(crate) fn file_mode(
        &mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> &mut Self {
        self.put(
            path,
            Node::File {
                data: Data::Bytes(data.into()),
                mode,
            },
        )
    }

    /// Adds a copy of a host file.
    pub(crate) fn host(&mut self, path: &str, host: &'static str, mode: u32) -> &mut Self {
        self.put(
            path,
            Node::File {
                data: Data::Host(host),
                mode,
            },
        )
    }

    /// Adds a registry hive.
    pub(crate) fn hive(&mut self, path: &str, spec: crate::hive::HiveSpec) -> &mut Self {
        self.put(
            path,
            Node::File {
                data: Data::Hive(spec),
                mode: 0o644,
            },
        )
    }

    /// Adds an empty rpm database.
    pub(crate) fn rpmdb(&mut self, path: &str) -> &mut Self {
        self.put(
            path,
            Node::File {
                data: Data::RpmDb,
                mode: 0o644,
            },
        )
    }

    /// Adds a symbolic link.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.put(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        )
    }

    fn put(&mut self, path: &str, node: Node) -> &mut Self {
        let p = clean(path);
        self.parents(&p);
        self.nodes.insert(p, node);
        self
    }

    /// Moves every entry of `other` into this tree (entries of `other` win).
    pub(crate) fn merge(&mut self, other: Tree) -> &mut Self {
        self.nodes.extend(other.nodes);
        self
    }

    /// The entries, sorted by path (parents before children).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether the tree has an entry at `path`.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &str) -> bool {
        self.nodes.contains_key(&clean(path))
    }

    /// Feeds everything that determines the tree's content into `h`, including host files' bytes.
    pub(crate) fn digest(&self, h: &mut sha2::Sha256) -> Result<()> {
        for (path, node) in &self.nodes {
            h.update(format!("{path}\0{node:?}\0").as_bytes());
            if let Node::File {
                data: Data::Host(host),
                ..
            } = node
            {
                h.update(std::fs::read(host).map_err(io(*host))?);
            }
        }
        Ok(())
    }

    /// Writes the tree under `dir` (which must exist), with fixed modification times.
    pub(crate) fn materialise(&self, dir: &Path, work: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        for (path, node) in &self.nodes {
            let dst = dir.join(path);
            match node {
                Node::Dir { mode } => {
                    std::fs::create_dir_all(&dst).map_err(io(&dst))?;
                    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(*mode))
                        .map_err(io(&dst))?;
                }
                Node::File { data, mode } => {
                    write_data(data, &dst, work)?;
                    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(*mode))
                        .map_err(io(&dst))?;
                }
                Node::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dst).map_err(io(&dst))?;
                }
            }
        }
        set_times(dir)
    }

    /// Writes an `mkfs.xfs -p` protofile for this tree; file contents are staged under `stage`.
    ///
    /// Protofile syntax (mkfs.xfs(8), "-p protofile"): a dummy line, two numbers, the root
    /// directory's mode/uid/gid, then per entry `name mode uid gid [source|target]`, with `$`
    /// closing each directory.
    pub(crate) fn protofile(&self, stage: &Path, work: &Path) -> Result<String> {
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for path in self.nodes.keys() {
            let parent = path.rfind('/').map_or("", |i| &path[..i]);
            children.entry(parent).or_default().push(path);
        }
        let mut out = String::from("rehost-images\n0 0\nd--755 0 0\n");
        let mut counter = 0u32;
        self.proto_dir("", &children, stage, work, &mut counter, &mut out, 1)?;
        out.push_str("$\n");
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn proto_dir(
        &self,
        dir: &str,
        children: &BTreeMap<&str, Vec<&str>>,
        stage: &Path,
        work: &Path,
        counter: &mut u32,
        out: &mut String,
        depth: usize,
    ) -> Result<()> {
        let indent = " ".repeat(depth);
        for path in children.get(dir).map(Vec::as_slice).unwrap_or_default() {
            let name = path.rsplit('/').next().unwrap_or(path);
            if name.chars().any(char::is_whitespace) {
                return Err(Error::Invalid(format!(
                    "xfs protofile names cannot contain spaces: {path:?}"
                )));
            }
            match &self.nodes[*path] {
                Node::Dir { mode } => {
                    let _ = writeln!(out, "{indent}{name} d--{mode:03o} 0 0");
                    self.proto_dir(path, children, stage, work, counter, out, depth + 1)?;
                    let _ = writeln!(out, "{indent}$");
                }
                Node::File { data, mode } => {
                    *counter += 1;
                    let src = stage.join(format!("f{counter}"));
                    write_data(data, &src, work)?;
                    let _ = writeln!(out, "{indent}{name} ---{mode:03o} 0 0 {}", src.display());
                }
                Node::Symlink { target } => {
                    let _ = writeln!(out, "{indent}{name} l--777 0 0 {target}");
                }
            }
        }
        Ok(())
    }
}

fn write_data(data: &Data, dst: &Path, work: &Path) -> Result<()> {
    match data {
        Data::Bytes(b) => std::fs::write(dst, b).map_err(io(dst)),
        Data::Host(h) => std::fs::copy(h, dst).map(|_| ()).map_err(io(*h)),
        Data::Hive(spec) => crate::hive::build_hive(spec, dst, work),
        Data::RpmDb => crate::synth::rpmdb(dst),
    }
}

/// Gives every entry under `dir` the fixed modification time ([`FIXED_EPOCH`]).
fn set_times(dir: &Path) -> Result<()> {
    let mut cmd = std::process::Command::new("touch");
    let mut paths: Vec<PathBuf> = Vec::new();
    collect(dir, &mut paths)?;
    cmd.arg("-h")
        .arg("-d")
        .arg(format!("@{FIXED_EPOCH}"))
        .args(&paths);
    crate::tools::run(&mut cmd).map(|_| ())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    out.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let ft = entry.file_type().map_err(io(entry.path()))?;
        if ft.is_dir() {
            collect(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created() {
        let mut t = Tree::new();
        t.file("/etc/sysconfig/network", "x");
        assert!(t.contains("etc"));
        assert!(t.contains("etc/sysconfig"));
        assert!(matches!(
            t.nodes["etc/sysconfig"],
            Node::Dir { mode: 0o755 }
        ));
    }

    #[test]
    fn protofile_nests_directories() {
        let stage = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.file("etc/hostname", "h\n")
            .symlink("bin", "usr/bin")
            .dir("usr/bin");
        let p = t.protofile(stage.path(), stage.path()).unwrap();
        let f1 = stage.path().join("f1");
        assert_eq!(
            p,
            format!(
                "rehost-images\n0 0\nd--755 0 0\n bin l--777 0 0 usr/bin\n etc d--755 0 0\n  hostname ---644 0 0 {}\n $\n usr d--755 0 0\n  bin d--755 0 0\n  $\n $\n$\n",
                f1.display()
            )
        );
        assert_eq!(std::fs::read(f1).unwrap(), b"h\n");
    }

    #[test]
    fn protofile_rejects_spaces() {
        let stage = tempfile::tempdir().unwrap();
        let mut t = Tree::new();
        t.file("a b", "x");
        assert!(matches!(
            t.protofile(stage.path(), stage.path()),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn digest_changes_with_content() {
        let mut a = Tree::new();
        a.file("etc/hostname", "a");
        let mut b = Tree::new();
        b.file("etc/hostname", "b");
        let mut ha = sha2::Sha256::new();
        a.digest(&mut ha).unwrap();
        let mut hb = sha2::Sha256::new();
        b.digest(&mut hb).unwrap();
        assert_ne!(ha.finalize(), hb.finalize());
    }
}
