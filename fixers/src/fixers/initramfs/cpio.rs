//! The cpio "newc" archive format as the kernel unpacks it (Documentation/driver-api/early-userspace/
//! buffer-format.rst): a 110-byte ASCII header, the NUL-terminated name, padding to 4 bytes, the
//! data, padding to 4 bytes; the archive ends with an entry named `TRAILER!!!`.

use super::error::{Error, Result};

/// `070701` (newc) and `070702` (newc with a checksum), buffer-format.rst "c_magic".
pub(crate) const MAGIC_NEWC: &[u8; 6] = b"070701";
/// The checksummed variant; the checksum is the byte sum of the data (we keep it when writing).
pub(crate) const MAGIC_CRC: &[u8; 6] = b"070702";
/// Header length: 6 bytes of magic and 13 fields of 8 hex digits (buffer-format.rst).
pub(crate) const HEADER_LEN: usize = 110;
/// Name of the last entry.
pub(crate) const TRAILER: &str = "TRAILER!!!";
/// Longest entry name accepted (the kernel's own limit is PATH_MAX, 4096).
pub(crate) const MAX_NAME_LEN: usize = 4096;
/// Most entries in one archive (a full distribution initramfs has a few thousand).
pub(crate) const MAX_ENTRIES: usize = 200_000;

/// File type bits of `c_mode` (as in `stat.st_mode`).
pub(crate) const S_IFMT: u32 = 0o170_000;
/// Regular file.
pub(crate) const S_IFREG: u32 = 0o100_000;
/// Directory.
pub(crate) const S_IFDIR: u32 = 0o040_000;
/// Symbolic link.
pub(crate) const S_IFLNK: u32 = 0o120_000;

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Path as stored (without a leading `./` or `/`, see [`normalise`]).
    pub(crate) name: String,
    /// `c_mode`: type and permission bits.
    pub(crate) mode: u32,
    /// `c_uid`.
    pub(crate) uid: u32,
    /// `c_gid`.
    pub(crate) gid: u32,
    /// `c_nlink`.
    pub(crate) nlink: u32,
    /// `c_mtime`.
    pub(crate) mtime: u32,
    /// `c_ino`.
    pub(crate) ino: u32,
    /// `c_devmajor`, `c_devminor`: with `ino`, what pairs hard links.
    pub(crate) dev: (u32, u32),
    /// `c_rdevmajor`, `c_rdevminor` (device nodes).
    pub(crate) rdev: (u32, u32),
    /// File content, or the target of a symlink.
    pub(crate) data: Vec<u8>,
}

impl Entry {
    /// A root-owned regular file.
    pub(crate) fn file(name: &str, perm: u32, data: Vec<u8>) -> Self {
        Self::new(name, S_IFREG | (perm & 0o7777), data)
    }

    /// A root-owned directory.
    pub(crate) fn dir(name: &str, perm: u32) -> Self {
        Self::new(name, S_IFDIR | (perm & 0o7777), Vec::new())
    }

    fn new(name: &str, mode: u32, data: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            mode,
            uid: 0,
            gid: 0,
            nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 1 },
            mtime: 0,
            ino: 0,
            dev: (0, 0),
            rdev: (0, 0),
            data,
        }
    }

    /// True for a regular file.
    pub(crate) fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }

    /// True for a symlink.
    pub(crate) fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }

    /// True for a directory.
    #[cfg(test)]
    pub(crate) fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
}

/// `name` without leading `./` and `/` (archives from `find .` carry `./`, some carry `/`).
pub(crate) fn normalise(name: &str) -> &str {
    let mut n = name;
    loop {
        if let Some(r) = n.strip_prefix("./") {
            n = r;
        } else if let Some(r) = n.strip_prefix('/') {
            n = r;
        } else {
            return n;
        }
    }
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

fn hex_field(h: &[u8], idx: usize, at: u64) -> Result<u32> {
    // Field idx (0-based after the magic) spans 8 hex digits.
    let start = 6usize.saturating_add(idx.saturating_mul(8));
    let s = h
        .get(start..start.saturating_add(8))
        .ok_or_else(|| Error::corrupt("cpio header", at, "truncated".to_owned()))?;
    let text = std::str::from_utf8(s).ok();
    text.and_then(|t| u32::from_str_radix(t, 16).ok())
        .ok_or_else(|| {
            Error::corrupt(
                "cpio header",
                at,
                format!(
                    "field {idx} is {:?}, not 8 hex digits",
                    String::from_utf8_lossy(s)
                ),
            )
        })
}

/// A parsed archive: its entries and how many bytes of the input it spans (through the padding
/// after the trailer's header, aligned to 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Archive {
    pub(crate) entries: Vec<Entry>,
    pub(crate) len: usize,
}

/// Parses one newc archive at the start of `data` (up to and including its trailer). `base` is
/// the archive's offset in the image, for error messages; `budget` is the most content bytes
/// accepted in total (decremented).
///
/// # Errors
/// [`Error::Corrupt`] naming the offset for a bad magic, a non-hex field, a name that is too
/// long or not NUL-terminated, or a member that runs past the end; [`Error::Limit`] past
/// [`MAX_ENTRIES`] or the budget.
pub(crate) fn parse(data: &[u8], base: u64, budget: &mut u64) -> Result<Archive> {
    let mut pos = 0usize;
    let mut entries = Vec::new();
    loop {
        let at = base.saturating_add(pos as u64);
        if entries.len() >= MAX_ENTRIES {
            return Err(Error::limit("cpio entries", MAX_ENTRIES as u64));
        }
        let h = data
            .get(pos..pos.saturating_add(HEADER_LEN))
            .ok_or_else(|| {
                Error::corrupt("cpio header", at, "archive ends without TRAILER!!!".into())
            })?;
        let magic = h.get(..6).unwrap_or_default();
        if magic != MAGIC_NEWC && magic != MAGIC_CRC {
            return Err(Error::corrupt(
                "cpio header",
                at,
                format!(
                    "magic {:?}, expected 070701 or 070702",
                    String::from_utf8_lossy(magic)
                ),
            ));
        }
        let f = |i| hex_field(h, i, at);
        let (ino, mode, uid, gid, nlink, mtime, filesize) =
            (f(0)?, f(1)?, f(2)?, f(3)?, f(4)?, f(5)?, f(6)?);
        let (dmaj, dmin, rmaj, rmin, namesize) = (f(7)?, f(8)?, f(9)?, f(10)?, f(11)?);
        let namesize = usize::try_from(namesize).unwrap_or(usize::MAX);
        if namesize == 0 || namesize > MAX_NAME_LEN {
            return Err(Error::corrupt(
                "cpio header",
                at,
                format!("namesize {namesize} out of range 1..={MAX_NAME_LEN}"),
            ));
        }
        let name_start = pos.saturating_add(HEADER_LEN);
        let name_raw = data
            .get(name_start..name_start.saturating_add(namesize))
            .ok_or_else(|| Error::corrupt("cpio name", at, "runs past the end".into()))?;
        let Some((&0, name_bytes)) = name_raw.split_last() else {
            return Err(Error::corrupt("cpio name", at, "not NUL-terminated".into()));
        };
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let data_start = align4(name_start.saturating_add(namesize))
            .ok_or_else(|| Error::corrupt("cpio name", at, "offset overflows".into()))?;
        if name == TRAILER {
            let len = data_start.min(data.len());
            return Ok(Archive { entries, len });
        }
        let size = usize::try_from(filesize).unwrap_or(usize::MAX);
        if (size as u64) > *budget {
            return Err(Error::limit(
                "decompressed initramfs bytes",
                super::MAX_UNPACKED,
            ));
        }
        *budget = budget.saturating_sub(size as u64);
        let content = data
            .get(data_start..data_start.saturating_add(size))
            .ok_or_else(|| {
                Error::corrupt(
                    "cpio data",
                    at,
                    format!("{name}: {size} bytes run past the end"),
                )
            })?
            .to_vec();
        pos = align4(data_start.saturating_add(size))
            .ok_or_else(|| Error::corrupt("cpio data", at, "offset overflows".into()))?;
        entries.push(Entry {
            name: normalise(&name).to_owned(),
            mode,
            uid,
            gid,
            nlink,
            mtime,
            ino,
            dev: (dmaj, dmin),
            rdev: (rmaj, rmin),
            data: content,
        });
    }
}

fn put_header(out: &mut Vec<u8>, e: &Entry, ino: u32, namesize: u32, filesize: u32) {
    out.extend_from_slice(MAGIC_NEWC);
    for v in [
        ino, e.mode, e.uid, e.gid, e.nlink, e.mtime, filesize, e.dev.0, e.dev.1, e.rdev.0,
        e.rdev.1, namesize, 0,
    ] {
        out.extend_from_slice(format!("{v:08x}").as_bytes());
    }
}

/// Writes `entries` as one newc archive with its trailer. Entries keep their inode and device
/// numbers (the kernel pairs hard links by them, and only the last link of a group carries the
/// data); entries with inode 0 (new ones) are numbered from `first_ino` on, which is far from
/// what the generators use. Alignment is relative to the archive's start in `out`.
///
/// # Errors
/// [`Error::Limit`] for a name over [`MAX_NAME_LEN`] or content over 4 GiB (newc's fields are
/// 32-bit).
pub(crate) fn write(out: &mut Vec<u8>, entries: &[Entry], first_ino: u32) -> Result<()> {
    let base = out.len();
    let mut ino = first_ino;
    let trailer = Entry {
        nlink: 1,
        ..Entry::new(TRAILER, 0, Vec::new())
    };
    for e in entries.iter().chain(std::iter::once(&trailer)) {
        let namesize = e.name.len().saturating_add(1);
        if namesize > MAX_NAME_LEN {
            return Err(Error::limit("cpio name length", MAX_NAME_LEN as u64));
        }
        let filesize = u32::try_from(e.data.len())
            .map_err(|_| Error::limit("cpio member size", u64::from(u32::MAX)))?;
        let n = u32::try_from(namesize).unwrap_or(u32::MAX);
        let this_ino = if e.name == TRAILER {
            0
        } else if e.ino != 0 {
            e.ino
        } else {
            let n = ino;
            ino = ino.wrapping_add(1);
            n
        };
        put_header(out, e, this_ino, n, filesize);
        out.extend_from_slice(e.name.as_bytes());
        out.push(0);
        while !out.len().saturating_sub(base).is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(&e.data);
        while !out.len().saturating_sub(base).is_multiple_of(4) {
            out.push(0);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        write(
            &mut out,
            &[
                Entry::dir("usr", 0o755),
                Entry::file("usr/a.txt", 0o644, b"hello".to_vec()),
                Entry {
                    data: b"usr/lib".to_vec(),
                    ..Entry::new("lib", S_IFLNK | 0o777, Vec::new())
                },
            ],
            100,
        )
        .unwrap();
        out
    }

    #[test]
    fn round_trip_and_layout() {
        let b = sample();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(&b[..6], MAGIC_NEWC);
        let mut budget = 1 << 20;
        let a = parse(&b, 0, &mut budget).unwrap();
        assert_eq!(a.len, b.len());
        assert_eq!(a.entries.len(), 3);
        assert_eq!(a.entries[0].name, "usr");
        assert!(a.entries[0].is_dir());
        assert_eq!(a.entries[0].ino, 100);
        assert_eq!(a.entries[1].data, b"hello");
        assert_eq!(a.entries[1].mode, 0o100_644);
        assert!(a.entries[1].is_file());
        assert!(a.entries[2].is_symlink());
        assert_eq!(a.entries[2].data, b"usr/lib");
        assert_eq!(budget, (1 << 20) - 5 - 7);
    }

    #[test]
    fn host_cpio_reads_our_archive() {
        if std::process::Command::new("cpio")
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipping: cpio not found");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.cpio");
        std::fs::write(&f, sample()).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("cpio -t --quiet < {}", f.display()))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "usr\nusr/a.txt\nlib\n"
        );
        // And we read what cpio writes (with ./ prefixes and the crc variant).
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/f"), b"data!").unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd {} && printf './d\\n./d/f\\n' | cpio -o -H crc --quiet",
                src.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(&out.stdout[..6], MAGIC_CRC);
        let a = parse(&out.stdout, 0, &mut u64::MAX.clone()).unwrap();
        let names: Vec<_> = a.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["d", "d/f"]);
        assert_eq!(a.entries[1].data, b"data!");
    }

    #[test]
    fn validation_branches() {
        let good = sample();
        let mut budget = u64::MAX;
        // Bad magic.
        let mut b = good.clone();
        b[5] = b'9';
        let e = parse(&b, 0x40, &mut budget).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt cpio header at offset 0x40: magic \"070709\", expected 070701 or 070702"
        );
        // A non-hex field (mode of the first entry).
        let mut b = good.clone();
        b[14] = b'x';
        let e = parse(&b, 0, &mut budget).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("corrupt cpio header at offset 0x0: field 1 is"),
            "{e}"
        );
        // namesize 0.
        let mut b = good.clone();
        b[94..102].copy_from_slice(b"00000000");
        let e = parse(&b, 0, &mut budget).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt cpio header at offset 0x0: namesize 0 out of range 1..=4096"
        );
        // Name not NUL-terminated (namesize one short).
        let mut b = good.clone();
        b[94..102].copy_from_slice(b"00000003");
        let e = parse(&b, 0, &mut budget).unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt cpio name at offset 0x0: not NUL-terminated"
        );
        // Truncated: no trailer.
        let e = parse(&good[..good.len() - 120], 0, &mut budget).unwrap_err();
        assert!(e.to_string().contains("TRAILER"), "{e}");
        // File size past the end.
        let second = 116; // header + "usr\0" aligned
        let mut b = good.clone();
        b[second + 54..second + 62].copy_from_slice(b"00100000");
        let e = parse(&b, 0, &mut budget).unwrap_err();
        assert!(
            e.to_string()
                .contains("usr/a.txt: 1048576 bytes run past the end"),
            "{e}"
        );
        // Budget.
        let mut small = 3;
        let e = parse(&good, 0, &mut small).unwrap_err();
        assert!(matches!(e, Error::Limit { .. }), "{e}");
    }

    #[test]
    fn normalises_names() {
        assert_eq!(normalise("./usr/lib"), "usr/lib");
        assert_eq!(normalise("/./usr"), "usr");
        assert_eq!(normalise("."), ".");
    }
}
