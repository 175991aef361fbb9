//! Symbolic links on NTFS: reparse points (symlinks and junctions) and Interix symlinks.
//!
//! Reparse data layout: [MS-FSCC] 2.1.2.1 (REPARSE_DATA_BUFFER), 2.1.2.4 (symbolic link),
//! 2.1.2.5 (mount point, i.e. junction). Interix symlinks are what `ntfs-3g` (and Services for UNIX)
//! create for `ln -s`: a file with the SYSTEM attribute whose data is a magic followed by the
//! UTF-16LE target.

/// [MS-FSCC] 2.1.2.1: reparse tag of a junction or volume mount point.
pub(super) const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// [MS-FSCC] 2.1.2.1: reparse tag of a symbolic link.
pub(super) const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
/// [MS-FSCC] 2.1.2.1: Data Deduplication; the file's data lives in the chunk store.
pub(super) const IO_REPARSE_TAG_DEDUP: u32 = 0x8000_0013;
/// [MS-FSCC] 2.1.2.1: Windows Overlay Filter (CompactOS); the data is in the
/// `WofCompressedData` stream, the unnamed stream is sparse.
pub(super) const IO_REPARSE_TAG_WOF: u32 = 0x8000_0017;
/// [MS-FSCC] 2.1.2.1: cloud files (`IO_REPARSE_TAG_CLOUD` .. `CLOUD_F`, 0x9000X01A): the data
/// may exist only in the cloud.
const IO_REPARSE_TAG_CLOUD_MASK: u32 = 0xFFFF_0FFF;
const IO_REPARSE_TAG_CLOUD: u32 = 0x9000_001A;

/// True for reparse tags whose file data is not in the unnamed `$DATA` stream, so reading that
/// stream would silently return zeroes instead of the contents.
pub(super) fn data_elsewhere(tag: u32) -> bool {
    tag == IO_REPARSE_TAG_DEDUP
        || tag == IO_REPARSE_TAG_WOF
        || tag & IO_REPARSE_TAG_CLOUD_MASK == IO_REPARSE_TAG_CLOUD
}

/// [MS-FSCC] 2.1.2.1: `MAXIMUM_REPARSE_DATA_BUFFER_SIZE`, 16 KiB including the 8-byte header.
pub(super) const MAX_REPARSE_DATA: u64 = 16 * 1024;
/// [MS-FSCC] 2.1.2.1: ReparseTag (4), ReparseDataLength (2), Reserved (2).
const REPARSE_HEADER_LEN: usize = 8;
/// [MS-FSCC] 2.1.2.4: `SYMLINK_FLAG_RELATIVE`.
const SYMLINK_FLAG_RELATIVE: u32 = 1;

/// The magic at the start of an Interix symlink's data.
pub(super) const INTERIX_SYMLINK_MAGIC: &[u8; 8] = b"IntxLNK\x01";
/// Longest Interix symlink data we accept: the magic plus a 4096-unit target (Linux `PATH_MAX`).
pub(super) const MAX_INTERIX_LEN: u64 = 8 + 2 * 4096;

/// A parsed reparse point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reparse {
    /// A symbolic link or junction.
    Link {
        /// The substitute name, UTF-16 code units (an NT path such as `\??\C:\Windows`).
        substitute: Vec<u16>,
        /// The print name, UTF-16 code units (`C:\Windows`).
        print: Vec<u16>,
        /// `SYMLINK_FLAG_RELATIVE`: the substitute name is relative to the link's directory.
        relative: bool,
    },
    /// Any other reparse tag (deduplication, WOF compression, cloud files, ...).
    Other {
        /// The reparse tag.
        tag: u32,
    },
}

fn le_u16(data: &[u8], at: usize) -> Option<u16> {
    let b = data.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn le_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn utf16_units(bytes: &[u8]) -> Vec<u16> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// Parses reparse data; the error is a detail for a `Corrupt` error (offsets relative to the
/// start of the reparse data).
pub(super) fn parse(data: &[u8]) -> Result<Reparse, String> {
    let tag = le_u32(data, 0).ok_or_else(|| {
        format!(
            "reparse data of {} bytes is shorter than its 8-byte header",
            data.len()
        )
    })?;
    let data_len = le_u16(data, 4).ok_or("reparse data shorter than its 8-byte header")?;
    let body_end = REPARSE_HEADER_LEN + usize::from(data_len);
    let body = data.get(REPARSE_HEADER_LEN..body_end).ok_or_else(|| {
        format!(
            "reparse data length {data_len} exceeds the {} bytes stored",
            data.len().saturating_sub(REPARSE_HEADER_LEN)
        )
    })?;
    let (path_start, relative) = match tag {
        // [MS-FSCC] 2.1.2.4: four u16 offsets/lengths, u32 flags, then the path buffer.
        IO_REPARSE_TAG_SYMLINK => {
            let flags = le_u32(body, 8).ok_or("symlink reparse data shorter than 12 bytes")?;
            (12, flags & SYMLINK_FLAG_RELATIVE != 0)
        }
        // [MS-FSCC] 2.1.2.5: four u16 offsets/lengths, then the path buffer.
        IO_REPARSE_TAG_MOUNT_POINT => (8, false),
        _ => return Ok(Reparse::Other { tag }),
    };
    let field = |at: usize| le_u16(body, at).map(usize::from);
    let (Some(sub_off), Some(sub_len), Some(pr_off), Some(pr_len)) =
        (field(0), field(2), field(4), field(6))
    else {
        return Err(format!(
            "reparse tag {tag:#x} body of {data_len} bytes is too short"
        ));
    };
    let paths = body.get(path_start..).unwrap_or(&[]);
    let name = |off: usize, len: usize, what: &str| -> Result<Vec<u16>, String> {
        off.checked_add(len)
            .and_then(|end| paths.get(off..end))
            .map(utf16_units)
            .ok_or_else(|| {
                format!(
                    "{what} name {off}+{len} out of the {}-byte path buffer",
                    paths.len()
                )
            })
    };
    Ok(Reparse::Link {
        substitute: name(sub_off, sub_len, "substitute")?,
        print: name(pr_off, pr_len, "print")?,
        relative,
    })
}

/// Converts a link's target into a guest path (bytes, UTF-8): relative targets keep their form
/// with `/` separators; absolute ones must be on drive `drive` of this volume and become
/// `/Windows/...`. The error says why the target cannot be expressed inside this volume.
pub(super) fn link_target(link: &Reparse, drive: u8) -> Result<Vec<u8>, String> {
    let Reparse::Link {
        substitute,
        print,
        relative,
    } = link
    else {
        return Err("not a symbolic link or junction".into());
    };
    let sub = String::from_utf16(substitute)
        .map_err(|_| "substitute name is not valid UTF-16".to_string())?;
    if *relative {
        if sub.is_empty() {
            return Err("relative symlink with an empty target".into());
        }
        let mut out = sub.replace('\\', "/");
        // `\Windows` on the link's own drive is absolute on this volume.
        if out.starts_with('/') {
            out = format!("/{}", out.trim_start_matches('/'));
        }
        return Ok(out.into_bytes());
    }
    match absolute_to_guest(&sub, drive) {
        Ok(p) => Ok(p),
        Err(sub_err) => {
            // Some tools leave the substitute name in a form we do not know; the print name is
            // the same target for humans (`C:\Windows`).
            let pr = String::from_utf16(print).unwrap_or_default();
            absolute_to_guest(&pr, drive).map_err(|_| sub_err)
        }
    }
}

fn absolute_to_guest(path: &str, drive: u8) -> Result<Vec<u8>, String> {
    let rest = path
        .strip_prefix(r"\??\")
        .or_else(|| path.strip_prefix(r"\\?\"))
        .unwrap_or(path);
    let bytes = rest.as_bytes();
    let on_drive = bytes.len() >= 2
        && bytes[0].eq_ignore_ascii_case(&drive)
        && bytes[1] == b':'
        && bytes.get(2).is_none_or(|&b| b == b'\\');
    if !on_drive {
        return Err(format!(
            "target {path:?} is outside this volume (drive {}:)",
            char::from(drive)
        ));
    }
    // OK to slice: the first two bytes are ASCII, so byte 2 is a char boundary.
    let tail = rest[2..].trim_start_matches('\\');
    Ok(format!("/{}", tail.replace('\\', "/")).into_bytes())
}

/// The target of an Interix symlink whose data is `data`, or `None` if it is not one.
pub(super) fn interix_target(data: &[u8]) -> Option<Vec<u8>> {
    let rest = data.strip_prefix(INTERIX_SYMLINK_MAGIC)?;
    if rest.is_empty() || rest.len() % 2 != 0 {
        return None;
    }
    String::from_utf16(&utf16_units(rest))
        .ok()
        .map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    /// Reparse data for a symlink (`flags` given) or junction (`flags` None).
    fn reparse(tag: u32, sub: &str, print: &str, flags: Option<u32>) -> Vec<u8> {
        let (s, p) = (utf16(sub), utf16(print));
        let mut body = Vec::new();
        body.extend_from_slice(&0u16.to_le_bytes()); // SubstituteNameOffset
        body.extend_from_slice(&u16::try_from(s.len()).unwrap().to_le_bytes()); // ...Length
        body.extend_from_slice(&u16::try_from(s.len()).unwrap().to_le_bytes()); // PrintNameOffset
        body.extend_from_slice(&u16::try_from(p.len()).unwrap().to_le_bytes()); // ...Length
        if let Some(f) = flags {
            body.extend_from_slice(&f.to_le_bytes()); // Flags
        }
        body.extend_from_slice(&s);
        body.extend_from_slice(&p);
        let mut out = tag.to_le_bytes().to_vec();
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn junction_on_same_drive_becomes_guest_path() {
        let data = reparse(
            IO_REPARSE_TAG_MOUNT_POINT,
            r"\??\C:\Users\Public",
            r"C:\Users\Public",
            None,
        );
        let r = parse(&data).unwrap();
        assert_eq!(link_target(&r, b'C').unwrap(), b"/Users/Public");
        assert_eq!(link_target(&r, b'c').unwrap(), b"/Users/Public");
        assert_eq!(
            link_target(&r, b'D').unwrap_err(),
            r#"target "\\??\\C:\\Users\\Public" is outside this volume (drive D:)"#
        );
    }

    #[test]
    fn drive_root_and_volume_guid() {
        let r = parse(&reparse(IO_REPARSE_TAG_MOUNT_POINT, r"\??\C:\", "", None)).unwrap();
        assert_eq!(link_target(&r, b'C').unwrap(), b"/");
        let r = parse(&reparse(
            IO_REPARSE_TAG_MOUNT_POINT,
            r"\??\Volume{01234567-89ab-cdef-0123-456789abcdef}\",
            "",
            None,
        ))
        .unwrap();
        assert!(link_target(&r, b'C').is_err());
        // `C:foo` (drive-relative) is not on this volume's root either.
        let r = parse(&reparse(IO_REPARSE_TAG_MOUNT_POINT, r"\??\C:foo", "", None)).unwrap();
        assert!(link_target(&r, b'C').is_err());
    }

    #[test]
    fn relative_and_absolute_symlinks() {
        let r = parse(&reparse(
            IO_REPARSE_TAG_SYMLINK,
            r"..\Windows\System32",
            r"..\Windows\System32",
            Some(SYMLINK_FLAG_RELATIVE),
        ))
        .unwrap();
        assert_eq!(link_target(&r, b'C').unwrap(), b"../Windows/System32");
        let r = parse(&reparse(
            IO_REPARSE_TAG_SYMLINK,
            r"\??\C:\Windows",
            r"C:\Windows",
            Some(0),
        ))
        .unwrap();
        assert_eq!(link_target(&r, b'C').unwrap(), b"/Windows");
        // Substitute in an unknown form: the print name is used.
        let r = parse(&reparse(
            IO_REPARSE_TAG_SYMLINK,
            r"\Device\X",
            r"C:\Windows",
            Some(0),
        ))
        .unwrap();
        assert_eq!(link_target(&r, b'C').unwrap(), b"/Windows");
    }

    #[test]
    fn other_tags_and_malformed_data() {
        let mut data = 0x8000_0017u32.to_le_bytes().to_vec();
        data.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(parse(&data).unwrap(), Reparse::Other { tag: 0x8000_0017 });
        assert_eq!(
            parse(&[1, 2]).unwrap_err(),
            "reparse data of 2 bytes is shorter than its 8-byte header"
        );
        // Data length larger than what is stored.
        let mut data = reparse(IO_REPARSE_TAG_MOUNT_POINT, r"\??\C:\", "", None);
        data[4] = 0xff;
        assert_eq!(
            parse(&data).unwrap_err(),
            format!(
                "reparse data length 255 exceeds the {} bytes stored",
                data.len() - 8
            )
        );
        // Substitute name pointing past the path buffer.
        let mut data = reparse(IO_REPARSE_TAG_MOUNT_POINT, r"\??\C:\", "", None);
        data[8] = 0x40;
        assert!(parse(&data).unwrap_err().starts_with("substitute name 64+"));
        // Symlink body too short for its flags.
        let mut data = IO_REPARSE_TAG_SYMLINK.to_le_bytes().to_vec();
        data.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            parse(&data).unwrap_err(),
            "symlink reparse data shorter than 12 bytes"
        );
    }

    #[test]
    fn tags_with_data_elsewhere() {
        assert!(data_elsewhere(IO_REPARSE_TAG_WOF));
        assert!(data_elsewhere(IO_REPARSE_TAG_DEDUP));
        assert!(data_elsewhere(0x9000_001A));
        assert!(data_elsewhere(0x9000_F01A));
        assert!(!data_elsewhere(IO_REPARSE_TAG_SYMLINK));
        assert!(!data_elsewhere(0x8000_001B)); // app execution alias
    }

    #[test]
    fn interix() {
        let mut data = INTERIX_SYMLINK_MAGIC.to_vec();
        data.extend_from_slice(&utf16("/tmp/x"));
        assert_eq!(interix_target(&data).unwrap(), b"/tmp/x");
        assert_eq!(interix_target(INTERIX_SYMLINK_MAGIC), None);
        assert_eq!(interix_target(b"IntxLNK\x01a"), None);
        assert_eq!(interix_target(b"MZ"), None);
    }
}
