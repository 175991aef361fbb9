//! Normalised, absolute guest paths.

use std::fmt;

use crate::{Error, Result};

/// Longest path we accept, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single name, in bytes (ext4 and XFS allow 255; NTFS 255 UTF-16 units, up to 765 UTF-8).
pub const MAX_NAME_LEN: usize = 1024;

/// An absolute guest path, normalised lexically: no empty, `.` or `..` components.
///
/// Lexical normalisation of `..` is only correct for symlink-free paths; that is why backends
/// receive paths from [`crate::resolve`], which applies `..` after following each symlink.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct GuestPath {
    components: Vec<Vec<u8>>,
}

impl GuestPath {
    /// The root, `/`.
    #[must_use]
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses `raw` lexically. Relative paths are taken from `/`; `..` at the root stays at the
    /// root, as the kernel does.
    ///
    /// # Errors
    /// [`Error::InvalidPath`] for NUL bytes, over-long paths or names.
    pub fn parse(raw: &[u8]) -> Result<Self> {
        let mut p = Self::root();
        p.push_relative(raw)?;
        Ok(p)
    }

    /// Applies `raw` relative to `self` (an absolute `raw` restarts from the root).
    ///
    /// # Errors
    /// As [`GuestPath::parse`].
    pub fn push_relative(&mut self, raw: &[u8]) -> Result<()> {
        let invalid = |why| Error::InvalidPath {
            path: String::from_utf8_lossy(raw).into_owned(),
            why,
        };
        if raw.len() > MAX_PATH_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        if raw.contains(&0) {
            return Err(invalid("contains a NUL byte"));
        }
        if raw.first() == Some(&b'/') {
            self.components.clear();
        }
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    self.components.pop();
                }
                name => {
                    if name.len() > MAX_NAME_LEN {
                        return Err(invalid("has a name longer than 1024 bytes"));
                    }
                    self.components.push(name.to_vec());
                }
            }
        }
        Ok(())
    }

    /// Appends one name (which must not contain `/` or be `.`/`..`).
    ///
    /// # Errors
    /// [`Error::InvalidPath`] if `name` is not a single plain name.
    pub fn join_name(&self, name: &[u8]) -> Result<Self> {
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
            || name.len() > MAX_NAME_LEN
        {
            return Err(Error::InvalidPath {
                path: String::from_utf8_lossy(name).into_owned(),
                why: "not a single file name",
            });
        }
        let mut p = self.clone();
        p.components.push(name.to_vec());
        Ok(p)
    }

    /// The components, root first.
    #[must_use]
    pub fn components(&self) -> &[Vec<u8>] {
        &self.components
    }

    /// True for `/`.
    #[must_use]
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The parent directory (the root's parent is the root).
    #[must_use]
    pub fn parent(&self) -> Self {
        let mut p = self.clone();
        p.components.pop();
        p
    }

    /// The last component, if any.
    #[must_use]
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components.last().map(Vec::as_slice)
    }

    /// The path as bytes, `/a/b`.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        if self.components.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::new();
        for c in &self.components {
            out.push(b'/');
            out.extend_from_slice(c);
        }
        out
    }

    /// Builds a path from already-validated components (used by the resolver).
    pub(crate) fn from_components(components: Vec<Vec<u8>>) -> Self {
        Self { components }
    }
}

impl fmt::Display for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl fmt::Debug for GuestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises_and_clamps_at_root() {
        assert_eq!(
            GuestPath::parse(b"/a/./b//c/").unwrap().to_string(),
            "/a/b/c"
        );
        assert_eq!(GuestPath::parse(b"/../../etc").unwrap().to_string(), "/etc");
        assert_eq!(GuestPath::parse(b"a/b/..").unwrap().to_string(), "/a");
        assert!(GuestPath::parse(b"").unwrap().is_root());
    }

    #[test]
    fn parse_refuses_nul_and_long() {
        assert!(matches!(
            GuestPath::parse(b"/a\0b"),
            Err(Error::InvalidPath {
                why: "contains a NUL byte",
                ..
            })
        ));
        assert!(GuestPath::parse(&vec![b'a'; 5000]).is_err());
        assert!(GuestPath::parse(&vec![b'a'; 2000]).is_err());
    }

    #[test]
    fn join_name_refuses_non_names() {
        let r = GuestPath::root();
        for bad in [&b""[..], b".", b"..", b"a/b"] {
            assert!(r.join_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(r.join_name(b"etc").unwrap().to_string(), "/etc");
    }
}
