//! Fuzz harness bodies for the NTFS reader (house style S17).
//!
//! `cargo fuzz` targets and the unit tests call these plain functions, so the seed corpus also
//! runs under `cargo test` on stable.

use std::sync::Arc;

use disk::{BlockRead, MemDisk};

use super::NtfsFs;
use crate::{FileType, FsRead, GuestPath};

/// Deepest directory level the walk descends to.
const MAX_DEPTH: usize = 16;
/// Most directory entries the walk visits.
const MAX_ENTRIES: usize = 10_000;
/// Most bytes read from one file.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Read chunk size: the whole cap at once, so a file costs one lookup.
const CHUNK: usize = 1 << 20;

/// Opens `data` as an NTFS volume and walks it: every directory (to depth 16, at most 10,000
/// entries), `lstat` of every entry, every symlink's target and up to 1 MiB of every file.
/// Errors are expected; a panic, hang or unbounded allocation is a bug.
pub fn fuzz_ntfs(data: &[u8]) {
    let dev: Arc<dyn BlockRead> = Arc::new(MemDisk::from_vec(data.to_vec()));
    let Ok(fs) = NtfsFs::open(dev) else {
        return;
    };
    let _ = fs.info();
    let _ = fs.volume_flags();
    walk(&fs);
}

/// Decodes `data` as one LZNT1 compression unit (64 KiB) and as reparse-point data, the two
/// byte formats this module parses itself rather than through the `ntfs` crate.
pub fn fuzz_ntfs_formats(data: &[u8]) {
    let mut unit = vec![0u8; 64 * 1024];
    let _ = super::compress::lznt1_decompress(data, &mut unit);
    if let Ok(r) = super::reparse::parse(data) {
        let _ = super::reparse::link_target(&r, b'C');
    }
    let _ = super::reparse::interix_target(data);
}

/// Walks `fs` as [`fuzz_ntfs`] does; returns how many entries were visited.
pub(super) fn walk(fs: &dyn FsRead) -> usize {
    let mut visited = 0usize;
    let mut stack = vec![(GuestPath::root(), 0usize)];
    let mut buf = vec![0u8; CHUNK];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            if visited >= MAX_ENTRIES {
                return visited;
            }
            visited += 1;
            let Ok(p) = dir.join_name(&e.name) else {
                continue;
            };
            let Ok(md) = fs.lstat(&p) else { continue };
            match md.file_type {
                FileType::Directory if depth < MAX_DEPTH => stack.push((p, depth + 1)),
                FileType::Symlink => {
                    let _ = fs.read_link(&p);
                }
                FileType::Regular | FileType::Other => {
                    let mut off = 0u64;
                    while off < MAX_FILE_BYTES {
                        match fs.read_at(&p, off, &mut buf) {
                            Ok(n) if n > 0 => off += u64::try_from(n).unwrap_or(MAX_FILE_BYTES),
                            _ => break,
                        }
                        if off < MAX_FILE_BYTES && md.size <= off {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    visited
}
