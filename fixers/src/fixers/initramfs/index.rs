//! kmod's binary index format (`modules.dep.bin`, `modules.alias.bin`, `modules.symbols.bin`),
//! written by our own code from the format as libkmod reads it (libkmod-index.c):
//!
//! * header: magic `0xB007F457`, version `0x00020001` (major 2, minor 1), root node offset; all
//!   integers big-endian u32;
//! * a node offset carries flags in its top 4 bits: `0x80000000` the node has a prefix string
//!   (NUL-terminated), `0x40000000` it has values, `0x20000000` it has children; the low 28 bits
//!   are the byte offset of the node;
//! * a node is, in this order: the prefix; if it has children, the first and last child byte and
//!   `last - first + 1` child offsets (0 = none); if it has values, their count and for each a
//!   priority and a NUL-terminated string.
//!
//! Keys are the path from the root: each node's prefix, then one byte per child edge. Values of
//! one key are kept sorted by priority (depmod uses the module's position). Keys are 7-bit
//! (libkmod's `INDEX_CHILDMAX` is 128).

use super::error::{Error, Result};

/// Index file magic.
pub(crate) const INDEX_MAGIC: u32 = 0xB007_F457;
/// Index format version: major 2, minor 1.
pub(crate) const INDEX_VERSION: u32 = 0x0002_0001;
const NODE_PREFIX: u32 = 0x8000_0000;
const NODE_VALUES: u32 = 0x4000_0000;
const NODE_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;
/// Longest key stored (aliases of in-tree modules stay under 300 bytes).
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// Most nodes a reader visits (a damaged file could loop).
const MAX_NODES: usize = 4 << 20;

/// One `(key, value, priority)` to store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Record {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) priority: u32,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes the node for `items` (suffixes of keys below the current node) after its children;
/// returns its offset with flags.
fn write_node(out: &mut Vec<u8>, items: &[(&[u8], &str, u32)], depth: usize) -> Result<u32> {
    if depth > MAX_KEY_LEN {
        return Err(Error::limit("index key length", MAX_KEY_LEN as u64));
    }
    // The longest common prefix of every suffix.
    let first = items.first().map_or(&[][..], |i| i.0);
    let lcp = items.iter().fold(first.len(), |n, (s, _, _)| {
        first
            .iter()
            .zip(s.iter())
            .take(n)
            .take_while(|(a, b)| a == b)
            .count()
    });
    let prefix = first.get(..lcp).unwrap_or_default();
    let mut values: Vec<(u32, &str)> = Vec::new();
    let mut children: Vec<(u8, u32)> = Vec::new();
    let mut rest: Vec<(&[u8], &str, u32)> = Vec::new();
    for (s, v, p) in items {
        let s = s.get(lcp..).unwrap_or_default();
        if s.is_empty() {
            values.push((*p, v));
        } else {
            rest.push((s, v, *p));
        }
    }
    // items are sorted by key, so the groups by first byte are runs.
    let mut i = 0usize;
    while let Some(&(s, _, _)) = rest.get(i) {
        let c = s.first().copied().unwrap_or(0);
        let run = rest
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|(t, _, _)| t.first() == Some(&c))
            .count()
            .max(1);
        let group: Vec<(&[u8], &str, u32)> = rest
            .get(i..i.saturating_add(run))
            .unwrap_or_default()
            .iter()
            .map(|(t, v, p)| (t.get(1..).unwrap_or_default(), *v, *p))
            .collect();
        children.push((c, write_node(out, &group, depth.saturating_add(1))?));
        i = i.saturating_add(run);
    }
    values.sort_unstable();
    values.dedup();
    let offset = u32::try_from(out.len())
        .ok()
        .filter(|o| *o <= NODE_MASK)
        .ok_or_else(|| Error::limit("index size", u64::from(NODE_MASK)))?;
    let mut flags = 0u32;
    if !prefix.is_empty() {
        flags |= NODE_PREFIX;
        out.extend_from_slice(prefix);
        out.push(0);
    }
    if let (Some(&(lo, _)), Some(&(hi, _))) = (children.first(), children.last()) {
        flags |= NODE_CHILDS;
        out.push(lo);
        out.push(hi);
        for c in lo..=hi {
            let off = children
                .iter()
                .find(|(ch, _)| *ch == c)
                .map_or(0, |(_, o)| *o);
            put_u32(out, off);
        }
    }
    if !values.is_empty() {
        flags |= NODE_VALUES;
        put_u32(out, u32::try_from(values.len()).unwrap_or(u32::MAX));
        for (p, v) in &values {
            put_u32(out, *p);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
    }
    Ok(offset | flags)
}

/// An index holding `records`. Keys that are empty, longer than [`MAX_KEY_LEN`] or not 7-bit
/// ASCII without NUL are left out (libkmod could not look them up).
///
/// # Errors
/// [`Error::Limit`] if the index passes 256 MiB (28-bit offsets).
pub(crate) fn write(records: &[Record]) -> Result<Vec<u8>> {
    let mut items: Vec<(&[u8], &str, u32)> = records
        .iter()
        .filter(|r| {
            !r.key.is_empty()
                && r.key.len() <= MAX_KEY_LEN
                && r.key.bytes().all(|b| (1..128).contains(&b))
                && !r.value.contains('\0')
        })
        .map(|r| (r.key.as_bytes(), r.value.as_str(), r.priority))
        .collect();
    items.sort_unstable();
    let mut out = Vec::with_capacity(4096);
    put_u32(&mut out, INDEX_MAGIC);
    put_u32(&mut out, INDEX_VERSION);
    put_u32(&mut out, 0);
    let root = write_node(&mut out, &items, 0)?;
    if let Some(slot) = out.get_mut(8..12) {
        slot.copy_from_slice(&root.to_be_bytes());
    }
    Ok(out)
}

fn get_u32(data: &[u8], pos: &mut usize) -> Result<u32> {
    let b = data
        .get(*pos..pos.saturating_add(4))
        .ok_or_else(|| Error::corrupt("kmod index node", *pos as u64, "truncated".into()))?;
    *pos = pos.saturating_add(4);
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    Ok(u32::from_be_bytes(a))
}

fn get_str<'a>(data: &'a [u8], pos: &mut usize) -> Result<&'a [u8]> {
    let rest = data.get(*pos..).unwrap_or_default();
    let n = rest
        .iter()
        .take(MAX_KEY_LEN.saturating_add(1).max(4096))
        .position(|&b| b == 0)
        .ok_or_else(|| {
            Error::corrupt(
                "kmod index node",
                *pos as u64,
                "string not NUL-terminated".into(),
            )
        })?;
    let s = rest.get(..n).unwrap_or_default();
    *pos = pos.saturating_add(n).saturating_add(1);
    Ok(s)
}

/// Every `(key, value, priority)` in an index, in key order (for tests, checks and fuzzing).
///
/// # Errors
/// [`Error::Corrupt`] for a bad header or node; [`Error::Limit`] past the node and key caps.
pub(crate) fn read_all(data: &[u8]) -> Result<Vec<Record>> {
    let mut pos = 0usize;
    let magic = get_u32(data, &mut pos)?;
    if magic != INDEX_MAGIC {
        return Err(Error::corrupt(
            "kmod index header",
            0,
            format!("magic {magic:#010x}, expected {INDEX_MAGIC:#010x}"),
        ));
    }
    let version = get_u32(data, &mut pos)?;
    if version >> 16 != INDEX_VERSION >> 16 {
        return Err(Error::unsupported(
            "kmod index",
            format!("version {version:#010x}, expected major 2"),
        ));
    }
    let root = get_u32(data, &mut pos)?;
    let mut out = Vec::new();
    let mut stack: Vec<(u32, Vec<u8>)> = vec![(root, Vec::new())];
    let mut visited = 0usize;
    while let Some((node, mut key)) = stack.pop() {
        visited = visited.saturating_add(1);
        if visited > MAX_NODES {
            return Err(Error::limit("kmod index nodes", MAX_NODES as u64));
        }
        let mut p = usize::try_from(node & NODE_MASK).unwrap_or(usize::MAX);
        if node & NODE_PREFIX != 0 {
            key.extend_from_slice(get_str(data, &mut p)?);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::limit("index key length", MAX_KEY_LEN as u64));
        }
        let mut kids = Vec::new();
        if node & NODE_CHILDS != 0 {
            let lo = *data
                .get(p)
                .ok_or_else(|| Error::corrupt("kmod index node", p as u64, "truncated".into()))?;
            let hi = *data
                .get(p.saturating_add(1))
                .ok_or_else(|| Error::corrupt("kmod index node", p as u64, "truncated".into()))?;
            if hi < lo {
                return Err(Error::corrupt(
                    "kmod index node",
                    p as u64,
                    format!("child range {lo}..={hi} is empty"),
                ));
            }
            p = p.saturating_add(2);
            for c in lo..=hi {
                let off = get_u32(data, &mut p)?;
                if off != 0 {
                    let mut k = key.clone();
                    k.push(c);
                    kids.push((off, k));
                }
            }
        }
        if node & NODE_VALUES != 0 {
            let n = get_u32(data, &mut p)?;
            for _ in 0..n {
                let priority = get_u32(data, &mut p)?;
                let v = get_str(data, &mut p)?;
                if out.len() >= MAX_NODES {
                    return Err(Error::limit("kmod index values", MAX_NODES as u64));
                }
                out.push(Record {
                    key: String::from_utf8_lossy(&key).into_owned(),
                    value: String::from_utf8_lossy(v).into_owned(),
                    priority,
                });
            }
        }
        // Reverse so the lowest child is visited first.
        stack.extend(kids.into_iter().rev());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: &str, p: u32) -> Record {
        Record {
            key: k.into(),
            value: v.into(),
            priority: p,
        }
    }

    #[test]
    fn round_trip_with_shared_prefixes() {
        let recs = vec![
            rec("virtio_net", "kernel/drivers/net/virtio_net.ko: a b", 3),
            rec("virtio_blk", "kernel/drivers/block/virtio_blk.ko:", 1),
            rec("virtio", "x", 0),
            rec("v", "y", 9),
            rec("net_failover", "n", 2),
            rec("virtio_blk", "second", 0),
            rec("virtio_blk", "second", 0),
        ];
        let b = write(&recs).unwrap();
        assert_eq!(&b[..8], &[0xb0, 0x07, 0xf4, 0x57, 0, 2, 0, 1]);
        let got = read_all(&b).unwrap();
        assert_eq!(
            got,
            vec![
                rec("net_failover", "n", 2),
                rec("v", "y", 9),
                rec("virtio", "x", 0),
                rec("virtio_blk", "second", 0),
                rec("virtio_blk", "kernel/drivers/block/virtio_blk.ko:", 1),
                rec("virtio_net", "kernel/drivers/net/virtio_net.ko: a b", 3),
            ]
        );
    }

    #[test]
    fn unstorable_keys_are_left_out_and_empty_index_reads() {
        let b = write(&[rec("", "a", 0), rec("é", "b", 0), rec("ok", "c", 0)]).unwrap();
        assert_eq!(read_all(&b).unwrap(), vec![rec("ok", "c", 0)]);
        let e = write(&[]).unwrap();
        assert_eq!(read_all(&e).unwrap(), vec![]);
    }

    #[test]
    fn reader_validation() {
        let good = write(&[rec("ab", "c", 0), rec("ad", "e", 1)]).unwrap();
        let mut b = good.clone();
        b[0] = 0;
        assert_eq!(
            read_all(&b).unwrap_err().to_string(),
            "corrupt kmod index header at offset 0x0: magic 0x0007f457, expected 0xb007f457"
        );
        let mut b = good.clone();
        b[5] = 3;
        assert_eq!(
            read_all(&b).unwrap_err().to_string(),
            "unsupported kmod index: version 0x00030001, expected major 2"
        );
        assert!(read_all(&good[..good.len() - 3]).is_err());
        // A node pointing at itself is bounded.
        let mut b = vec![];
        put_u32(&mut b, INDEX_MAGIC);
        put_u32(&mut b, INDEX_VERSION);
        put_u32(&mut b, NODE_CHILDS | 12);
        b.extend([b'a', b'a']);
        put_u32(&mut b, NODE_CHILDS | 12);
        assert!(matches!(read_all(&b), Err(Error::Limit { .. })));
    }

    /// The host's kmod reads our index: `modprobe --show-depends` over a dep index we wrote.
    #[test]
    fn host_modprobe_reads_our_dep_index() {
        let dir = tempfile::tempdir().unwrap();
        let kdir = dir.path().join("lib/modules/9.9.9");
        std::fs::create_dir_all(kdir.join("kernel")).unwrap();
        for m in ["a", "b", "c"] {
            std::fs::write(kdir.join(format!("kernel/{m}.ko")), b"").unwrap();
        }
        let dep = write(&[
            rec("a", "kernel/a.ko: kernel/b.ko kernel/c.ko", 0),
            rec("b", "kernel/b.ko: kernel/c.ko", 1),
            rec("c", "kernel/c.ko:", 2),
        ])
        .unwrap();
        std::fs::write(kdir.join("modules.dep.bin"), dep).unwrap();
        std::fs::write(
            kdir.join("modules.alias.bin"),
            write(&[rec("pci:v1AF4*", "a", 0)]).unwrap(),
        )
        .unwrap();
        let out = match std::process::Command::new("modprobe")
            .arg("-d")
            .arg(dir.path())
            .args(["-S", "9.9.9", "--show-depends", "pci:v1AF4d1000"])
            .output()
        {
            Ok(o) => o,
            Err(_) => {
                println!("skipping: modprobe not found");
                return;
            }
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        let k = kdir.display();
        assert_eq!(
            lines,
            [
                format!("insmod {k}/kernel/c.ko "),
                format!("insmod {k}/kernel/b.ko "),
                format!("insmod {k}/kernel/a.ko "),
            ],
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
