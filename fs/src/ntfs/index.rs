//! Directory indexes (`$I30`): lookup by name and full listing.
//!
//! The `ntfs` crate parses index nodes, but its own tree walkers (`NtfsIndexEntries`,
//! `NtfsIndexFinder`) follow subnode VCNs without a depth limit or cycle check, so a crafted
//! index whose subnode points back at an ancestor loops forever inside one call. We therefore walk
//! the B+ tree ourselves, one node at a time, with a depth limit, a visited set and a node budget
//! (house style S12), and only use the crate to parse single nodes.

use std::cmp::Ordering;
use std::collections::HashSet;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{
    NtfsFileAttributeFlags, NtfsFileNamespace, NtfsIndexAllocation, NtfsIndexRoot,
};
use ntfs::types::Vcn;
use ntfs::{NtfsAttributeType, NtfsError, NtfsFile, NtfsIndexEntry, NtfsIndexEntryFlags};

use super::{NtfsCx, Upcase, file_offset};
use crate::{Error, MAX_DIR_ENTRIES, Result};

/// Deepest index tree we walk. NTFS B+ trees are balanced and shallow (a million entries fit in
/// four levels of 4 KiB nodes); 32 levels is far beyond any real volume.
pub(super) const MAX_INDEX_DEPTH: usize = 32;
/// Most index records one operation loads (256 Ki records of 4 KiB: 1 GiB of index).
pub(super) const MAX_INDEX_NODES: usize = 1 << 18;
/// Smallest index record size we accept: one 512-byte update-sequence stride.
pub(super) const MIN_INDEX_RECORD_SIZE: u32 = 512;
/// Largest index record size we accept. Windows uses 4 KiB; the crate allocates this much per node.
pub(super) const MAX_INDEX_RECORD_SIZE: u32 = 64 * 1024;
/// The name of a directory's filename index ([MS-FSCC]/NTFS: `$I30`).
const DIRECTORY_INDEX_NAME: &str = "$I30";

/// One name in a directory, as its index key stores it.
#[derive(Debug, Clone)]
pub(super) struct Key {
    /// The name, UTF-16LE bytes.
    pub(super) name: Vec<u8>,
    /// The $FILE_NAME namespace (POSIX, Win32, DOS, Win32 and DOS).
    pub(super) namespace: NtfsFileNamespace,
    /// MFT record number of the file.
    pub(super) record: u64,
    /// Sequence number the reference expects the record to have.
    pub(super) sequence: u16,
    /// File attributes as copied into the index (may lag behind `$STANDARD_INFORMATION`).
    pub(super) attributes: NtfsFileAttributeFlags,
}

/// One entry of an index node, owned so nodes need not stay borrowed.
struct Entry {
    key: Option<Key>,
    /// How the searched name compares with this key (only when searching).
    order: Option<Ordering>,
    subnode: Option<i64>,
}

/// What a lookup searches for: the volume's upcase table and the name (UTF-16 code units).
type Target<'t> = Option<(&'t Upcase, &'t [u16])>;

fn entry_to_owned(
    cx: &mut NtfsCx<'_>,
    e: &NtfsIndexEntry<'_, NtfsFileNameIndex>,
    target: Target<'_>,
) -> Result<Entry> {
    let at = e.position().value().map_or(0, |p| p.get());
    let last = e.flags().contains(NtfsIndexEntryFlags::LAST_ENTRY);
    let mut order = None;
    let key = if last {
        None
    } else {
        match e.key() {
            None => None,
            Some(k) => {
                let k = k.map_err(|err| cx.err("ntfs index entry", at, err))?;
                let fref = e.file_reference();
                if let Some((upcase, name)) = target {
                    order = Some(upcase.cmp_name(name, k.name().0));
                }
                Some(Key {
                    name: k.name().0.to_vec(),
                    namespace: k.namespace(),
                    record: fref.file_record_number(),
                    sequence: fref.sequence_number(),
                    attributes: k.file_attributes(),
                })
            }
        }
    };
    let subnode = match e.subnode_vcn() {
        None => None,
        Some(v) => Some(
            v.map_err(|err| cx.err("ntfs index entry", at, err))?
                .value(),
        ),
    };
    Ok(Entry {
        key,
        order,
        subnode,
    })
}

fn collect<'s, I>(cx: &mut NtfsCx<'_>, entries: I, target: Target<'_>) -> Result<Vec<Entry>>
where
    I: Iterator<Item = Result<NtfsIndexEntry<'s, NtfsFileNameIndex>, NtfsError>>,
{
    // The crate's node iterator stops at the LAST_ENTRY flag or the end of the node, and every
    // step advances by the entry's length; the take() is a second bound independent of that.
    let mut out = Vec::new();
    for e in entries.take(usize::try_from(MAX_INDEX_RECORD_SIZE).unwrap_or(usize::MAX)) {
        let e = e.map_err(|err| cx.err("ntfs index node", 0, err))?;
        out.push(entry_to_owned(cx, &e, target)?);
    }
    Ok(out)
}

/// A directory's index: the root node's entries and a loader for the other nodes.
struct Tree<'n, 'f, 't> {
    target: Target<'t>,
    root: Vec<Entry>,
    alloc: Option<NtfsIndexAllocation<'n, 'f>>,
    record_size: u32,
    visited: HashSet<i64>,
    dir_offset: u64,
}

impl Tree<'_, '_, '_> {
    fn load(&mut self, cx: &mut NtfsCx<'_>, vcn: i64, depth: usize) -> Result<Vec<Entry>> {
        let corrupt =
            |detail: String| Error::corrupt("ntfs directory index", self.dir_offset, detail);
        if depth > MAX_INDEX_DEPTH {
            return Err(corrupt(format!(
                "index tree deeper than {MAX_INDEX_DEPTH} levels"
            )));
        }
        if self.visited.len() >= MAX_INDEX_NODES {
            return Err(Error::LimitExceeded {
                what: "ntfs index records in one directory".into(),
                limit: u64::try_from(MAX_INDEX_NODES).unwrap_or(u64::MAX),
            });
        }
        if !self.visited.insert(vcn) {
            return Err(corrupt(format!(
                "index record at vcn {vcn} is referenced twice (cycle)"
            )));
        }
        let alloc = self.alloc.as_ref().ok_or_else(|| {
            corrupt(format!(
                "entry points to subnode vcn {vcn} but the index has no $INDEX_ALLOCATION"
            ))
        })?;
        let record = alloc
            .record_from_vcn(&mut cx.cur, self.record_size, Vcn::from(vcn))
            .map_err(|e| cx.err("ntfs index record", self.dir_offset, e))?;
        let entries = record
            .entries::<NtfsFileNameIndex>()
            .map_err(|e| cx.err("ntfs index record", self.dir_offset, e))?;
        collect(cx, entries, self.target)
    }
}

/// Runs `f` over the directory index of `dir`.
fn with_tree<T>(
    cx: &mut NtfsCx<'_>,
    dir: &NtfsFile<'_>,
    target: Target<'_>,
    f: impl FnOnce(&mut NtfsCx<'_>, &mut Tree<'_, '_, '_>) -> Result<T>,
) -> Result<T> {
    let dir_offset = file_offset(dir);
    let mut root_item = None;
    let mut alloc_item = None;
    let mut attrs = dir.attributes();
    let mut seen = 0usize;
    while let Some(item) = attrs.next(&mut cx.cur) {
        seen += 1;
        if seen > super::MAX_ATTRIBUTES {
            return Err(Error::corrupt(
                "ntfs file record",
                dir_offset,
                format!("more than {} attributes", super::MAX_ATTRIBUTES),
            ));
        }
        let item = item.map_err(|e| cx.err("ntfs attribute", dir_offset, e))?;
        let attr = item
            .to_attribute()
            .map_err(|e| cx.err("ntfs attribute", dir_offset, e))?;
        let Ok(ty) = attr.ty() else { continue };
        if !matches!(
            ty,
            NtfsAttributeType::IndexRoot | NtfsAttributeType::IndexAllocation
        ) {
            continue;
        }
        let name = attr
            .name()
            .map_err(|e| cx.err("ntfs attribute name", dir_offset, e))?;
        if name != DIRECTORY_INDEX_NAME {
            continue;
        }
        if ty == NtfsAttributeType::IndexRoot {
            root_item.get_or_insert(item);
        } else {
            alloc_item.get_or_insert(item);
        }
    }
    let root_item = root_item.ok_or_else(|| {
        Error::corrupt(
            "ntfs directory",
            dir_offset,
            "directory has no $INDEX_ROOT named $I30",
        )
    })?;
    let root_attr = root_item
        .to_attribute()
        .map_err(|e| cx.err("ntfs $INDEX_ROOT", dir_offset, e))?;
    let root = root_attr
        .resident_structured_value::<NtfsIndexRoot>()
        .map_err(|e| cx.err("ntfs $INDEX_ROOT", dir_offset, e))?;
    let record_size = root.index_record_size();
    if !(MIN_INDEX_RECORD_SIZE..=MAX_INDEX_RECORD_SIZE).contains(&record_size)
        || !record_size.is_power_of_two()
    {
        return Err(Error::corrupt(
            "ntfs $INDEX_ROOT",
            dir_offset,
            format!(
                "index record size {record_size} is not a power of two in range \
                 {MIN_INDEX_RECORD_SIZE}..={MAX_INDEX_RECORD_SIZE}"
            ),
        ));
    }
    let root_entries = root
        .entries::<NtfsFileNameIndex>()
        .map_err(|e| cx.err("ntfs $INDEX_ROOT", dir_offset, e))?;
    let root_entries = collect(cx, root_entries, target)?;
    let alloc_attr = match &alloc_item {
        Some(item) => Some(
            item.to_attribute()
                .map_err(|e| cx.err("ntfs $INDEX_ALLOCATION", dir_offset, e))?,
        ),
        None => None,
    };
    let alloc = match &alloc_attr {
        Some(a) => Some(
            a.structured_value::<_, NtfsIndexAllocation>(&mut cx.cur)
                .map_err(|e| cx.err("ntfs $INDEX_ALLOCATION", dir_offset, e))?,
        ),
        None => None,
    };
    let mut tree = Tree {
        target,
        root: root_entries,
        alloc,
        record_size,
        visited: HashSet::new(),
        dir_offset,
    };
    f(cx, &mut tree)
}

/// Finds `name` (case-insensitively, by the volume's upcase table) in directory `dir`.
pub(super) fn lookup(
    cx: &mut NtfsCx<'_>,
    upcase: &Upcase,
    dir: &NtfsFile<'_>,
    name: &str,
) -> Result<Option<Key>> {
    let name: Vec<u16> = name.encode_utf16().collect();
    with_tree(cx, dir, Some((upcase, &name)), |cx, tree| {
        let mut entries = std::mem::take(&mut tree.root);
        let mut depth = 0usize;
        loop {
            let mut next = None;
            for e in entries {
                if let (Some(key), Some(order)) = (e.key, e.order) {
                    match order {
                        Ordering::Equal => return Ok(Some(key)),
                        Ordering::Greater => continue,
                        Ordering::Less => {}
                    }
                }
                // Keys are sorted: the name sorts before this key (or this is the end marker),
                // so it can only be in this entry's subtree.
                next = e.subnode;
                break;
            }
            let Some(vcn) = next else { return Ok(None) };
            depth += 1;
            entries = tree.load(cx, vcn, depth)?;
        }
    })
}

/// Every key of directory `dir`, in index (collation) order, at most [`MAX_DIR_ENTRIES`].
pub(super) fn list(cx: &mut NtfsCx<'_>, dir: &NtfsFile<'_>) -> Result<Vec<Key>> {
    with_tree(cx, dir, None, |cx, tree| {
        let root = std::mem::take(&mut tree.root);
        let mut out = Vec::new();
        walk(cx, tree, root, 0, &mut out)?;
        Ok(out)
    })
}

fn walk(
    cx: &mut NtfsCx<'_>,
    tree: &mut Tree<'_, '_, '_>,
    entries: Vec<Entry>,
    depth: usize,
    out: &mut Vec<Key>,
) -> Result<()> {
    for e in entries {
        if let Some(vcn) = e.subnode {
            // Recursion depth is bounded by MAX_INDEX_DEPTH, checked in load().
            let sub = tree.load(cx, vcn, depth + 1)?;
            walk(cx, tree, sub, depth + 1, out)?;
        }
        if let Some(key) = e.key {
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(Error::LimitExceeded {
                    what: "ntfs directory entries".into(),
                    limit: u64::try_from(MAX_DIR_ENTRIES).unwrap_or(u64::MAX),
                });
            }
            out.push(key);
        }
    }
    Ok(())
}
