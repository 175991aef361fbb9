//! Builders for synthetic hives and transaction logs (feature `testkit`).
//!
//! [`HiveBuilder`] lays out a complete, valid regf file from a key tree: base block, hive bins,
//! "nk", "sk", "vk", values lists, subkey lists of a chosen kind (including "ri" index roots),
//! data cells and "db" big data, in one pass from a spec (the writer, [`crate::HiveMut`],
//! edits hives in place instead); libhivex accepts its output (see the tests). Test code: it panics on impossible layouts instead of returning errors.

use crate::base_block::{BASE_BLOCK_SIZE, checksum};
use crate::key_value::{BIG_DATA_SEGMENT, Value, ValueType};
use crate::log::{LOG_ENTRY_HEADER, LOG_HASH_SEED, marvin32};
use crate::name;

/// Which subkey list records the builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    /// "lh" hash leaves (what Windows writes since XP).
    Lh,
    /// "lf" fast leaves with 4-character name hints.
    Lf,
    /// "li" index leaves.
    Li,
    /// An "ri" index root over "lh" leaves of at most this many entries.
    Ri(u16),
}

/// A key to build.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// The key's name.
    pub name: String,
    /// Its class name.
    pub class: Option<String>,
    /// Its values, in order.
    pub values: Vec<Value>,
    /// Its subkeys (sorted by the builder).
    pub subkeys: Vec<KeySpec>,
    /// Last written FILETIME.
    pub last_written: u64,
}

impl KeySpec {
    /// A key without values or subkeys.
    #[must_use]
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            class: None,
            values: Vec::new(),
            subkeys: Vec::new(),
            last_written: 0x01d0_0000_0000_0000,
        }
    }

    /// The key at `path` below this one, created as needed.
    pub fn path_mut(&mut self, path: &str) -> &mut KeySpec {
        let mut key = self;
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            let i = match key.subkeys.iter().position(|k| name::eq(&k.name, part)) {
                Some(i) => i,
                None => {
                    key.subkeys.push(KeySpec::new(part));
                    key.subkeys.len() - 1
                }
            };
            key = &mut key.subkeys[i];
        }
        key
    }
}

/// Builds a valid hive file in memory.
#[derive(Debug, Clone)]
pub struct HiveBuilder {
    root: KeySpec,
    minor: u32,
    file_name: String,
    lists: ListKind,
    sequence: (u32, u32),
}

impl Default for HiveBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HiveBuilder {
    /// An empty hive: a root key named `ROOT`, version 1.5, file name `...\Config\SYSTEM`.
    #[must_use]
    pub fn new() -> Self {
        Self {
            root: KeySpec::new("ROOT"),
            minor: 5,
            file_name: "\\SystemRoot\\System32\\Config\\SYSTEM".to_owned(),
            lists: ListKind::Lh,
            sequence: (1, 1),
        }
    }

    /// The root key, to edit.
    pub fn root_mut(&mut self) -> &mut KeySpec {
        &mut self.root
    }

    /// Adds the key at `path` (and its parents).
    #[must_use]
    pub fn key(mut self, path: &str) -> Self {
        self.root.path_mut(path);
        self
    }

    /// Adds a value to the key at `path` (created as needed).
    #[must_use]
    pub fn value(mut self, path: &str, name: &str, kind: ValueType, data: &[u8]) -> Self {
        self.root.path_mut(path).values.push(Value {
            name: name.to_owned(),
            kind,
            data: data.to_vec(),
        });
        self
    }

    /// Sets the subkey list kind.
    #[must_use]
    pub fn lists(mut self, kind: ListKind) -> Self {
        self.lists = kind;
        self
    }

    /// Sets the minor version (big data is used from 4 on).
    #[must_use]
    pub fn minor_version(mut self, minor: u32) -> Self {
        self.minor = minor;
        self
    }

    /// Sets the primary and secondary sequence numbers (different ones make a dirty hive).
    #[must_use]
    pub fn sequence(mut self, primary: u32, secondary: u32) -> Self {
        self.sequence = (primary, secondary);
        self
    }

    /// Lays out the hive file.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut b = Bins::default();
        let sk = b.sk();
        let root = b.key(&self.root, u32::MAX, sk, self.lists, self.minor, true);
        let keys = count_keys(&self.root);
        b.patch_u32(sk, 12, keys);
        let bins = b.finish();
        let mut out = vec![0u8; BASE_BLOCK_SIZE];
        out[..4].copy_from_slice(b"regf");
        let hbins_size = u32::try_from(bins.len()).expect("test hive under 4 GiB");
        for (at, v) in [
            (4, self.sequence.0),
            (8, self.sequence.1),
            (12, 0x0000_0000),
            (16, 0x01d0_0000),
            (20, 1),
            (24, self.minor),
            (28, 0),
            (32, 1),
            (36, root),
            (40, hbins_size),
            (44, 1),
        ] {
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        // Windows keeps the tail of long paths in this 64-byte field.
        let units: Vec<u16> = self.file_name.encode_utf16().collect();
        let tail = &units[units.len().saturating_sub(31)..];
        for (i, u) in tail.iter().enumerate() {
            out[48 + 2 * i..50 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        let sum = checksum(&out);
        out[508..512].copy_from_slice(&sum.to_le_bytes());
        out.extend(bins);
        out
    }
}

fn count_keys(k: &KeySpec) -> u32 {
    1 + k.subkeys.iter().map(count_keys).sum::<u32>()
}

/// Bytes of a name as stored, and whether it is compressed.
fn stored_name(s: &str) -> (Vec<u8>, bool) {
    if s.chars().all(|c| u32::from(c) <= 0xff) {
        (
            s.chars()
                .map(|c| u8::try_from(u32::from(c)).expect("<= 0xff"))
                .collect(),
            true,
        )
    } else {
        (s.encode_utf16().flat_map(u16::to_le_bytes).collect(), false)
    }
}

#[derive(Default)]
struct Bins {
    data: Vec<u8>,
    /// Start of the current bin.
    bin: usize,
}

impl Bins {
    fn off(&self) -> u32 {
        u32::try_from(self.data.len()).expect("test hive under 4 GiB")
    }

    fn new_bin(&mut self, min: usize) {
        self.close_bin();
        let size = (min + 32).div_ceil(4096) * 4096;
        self.bin = self.data.len();
        let at = self.off();
        self.data.extend(b"hbin");
        self.data.extend(at.to_le_bytes());
        self.data.extend(u32::try_from(size).unwrap().to_le_bytes());
        self.data.extend([0u8; 20]);
    }

    /// Fills the rest of the current bin with one free cell.
    fn close_bin(&mut self) {
        if self.data.is_empty() {
            return;
        }
        let size = u32::from_le_bytes(self.data[self.bin + 8..self.bin + 12].try_into().unwrap());
        let end = self.bin + size as usize;
        let rest = end - self.data.len();
        if rest > 0 {
            self.data.extend(i32::try_from(rest).unwrap().to_le_bytes());
            self.data.resize(end, 0);
        }
    }

    /// Allocates a cell holding `payload`; returns its offset.
    fn cell(&mut self, payload: &[u8]) -> u32 {
        let size = (payload.len() + 4).div_ceil(8) * 8;
        let bin_end = if self.data.is_empty() {
            0
        } else {
            self.bin
                + u32::from_le_bytes(self.data[self.bin + 8..self.bin + 12].try_into().unwrap())
                    as usize
        };
        if self.data.is_empty() || self.data.len() + size > bin_end {
            self.new_bin(size);
        }
        let off = self.off();
        self.data
            .extend((-i32::try_from(size).unwrap()).to_le_bytes());
        self.data.extend(payload);
        self.data.resize(off as usize + size, 0);
        off
    }

    fn patch_u32(&mut self, cell: u32, at: usize, v: u32) {
        let p = cell as usize + 4 + at;
        self.data[p..p + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.close_bin();
        self.data
    }

    /// One self-linked security cell with a minimal self-relative descriptor (NULL DACL).
    fn sk(&mut self) -> u32 {
        let mut sk = b"sk\0\0".to_vec();
        sk.extend([0u8; 12]);
        let sd: [u8; 20] = [
            1, 0, 0x04, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sk.extend(u32::try_from(sd.len()).unwrap().to_le_bytes());
        sk.extend(sd);
        let off = self.cell(&sk);
        self.patch_u32(off, 4, off);
        self.patch_u32(off, 8, off);
        off
    }

    fn value_data(&mut self, data: &[u8], minor: u32) -> (u32, u32) {
        let len = u32::try_from(data.len()).unwrap();
        if len <= 4 {
            let mut inline = [0u8; 4];
            inline[..data.len()].copy_from_slice(data);
            return (len | 0x8000_0000, u32::from_le_bytes(inline));
        }
        if len > BIG_DATA_SEGMENT && minor >= 4 {
            let segs: Vec<u32> = data
                .chunks(BIG_DATA_SEGMENT as usize)
                .map(|c| self.cell(c))
                .collect();
            let list: Vec<u8> = segs.iter().flat_map(|s| s.to_le_bytes()).collect();
            let list = self.cell(&list);
            let mut db = b"db".to_vec();
            db.extend(u16::try_from(segs.len()).unwrap().to_le_bytes());
            db.extend(list.to_le_bytes());
            return (len, self.cell(&db));
        }
        (len, self.cell(data))
    }

    fn key(
        &mut self,
        spec: &KeySpec,
        parent: u32,
        sk: u32,
        lists: ListKind,
        minor: u32,
        root: bool,
    ) -> u32 {
        let (name, compressed) = stored_name(&spec.name);
        let nk_len = 76 + name.len();
        let nk = self.cell(&vec![0u8; nk_len]);

        let mut subkeys: Vec<&KeySpec> = spec.subkeys.iter().collect();
        subkeys.sort_by(|a, b| name::compare(&a.name, &b.name));
        let children: Vec<(u32, &KeySpec)> = subkeys
            .iter()
            .map(|s| (self.key(s, nk, sk, lists, minor, false), *s))
            .collect();
        let list = if children.is_empty() {
            u32::MAX
        } else {
            self.subkey_list(&children, lists)
        };

        let mut vks = Vec::new();
        for v in &spec.values {
            let (size, data_off) = self.value_data(&v.data, minor);
            let (vname, vcomp) = stored_name(&v.name);
            let mut vk = b"vk".to_vec();
            vk.extend(u16::try_from(vname.len()).unwrap().to_le_bytes());
            vk.extend(size.to_le_bytes());
            vk.extend(data_off.to_le_bytes());
            vk.extend(v.kind.raw().to_le_bytes());
            vk.extend(u16::from(vcomp && !vname.is_empty()).to_le_bytes());
            vk.extend(0u16.to_le_bytes());
            vk.extend(vname);
            vks.push(self.cell(&vk));
        }
        let values = if vks.is_empty() {
            u32::MAX
        } else {
            let list: Vec<u8> = vks.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.cell(&list)
        };
        let (class, class_len) = match &spec.class {
            Some(c) => {
                let raw: Vec<u8> = c.encode_utf16().flat_map(u16::to_le_bytes).collect();
                let len = u16::try_from(raw.len()).unwrap();
                (self.cell(&raw), len)
            }
            None => (u32::MAX, 0),
        };

        let utf16_len = |s: &str| u32::try_from(s.encode_utf16().count() * 2).unwrap();
        let max_sub = spec
            .subkeys
            .iter()
            .map(|k| utf16_len(&k.name))
            .max()
            .unwrap_or(0);
        let max_class = spec
            .subkeys
            .iter()
            .map(|k| k.class.as_deref().map_or(0, utf16_len))
            .max()
            .unwrap_or(0);
        let max_vname = spec
            .values
            .iter()
            .map(|v| utf16_len(&v.name))
            .max()
            .unwrap_or(0);
        let max_data = spec
            .values
            .iter()
            .map(|v| u32::try_from(v.data.len()).unwrap())
            .max()
            .unwrap_or(0);

        let mut flags: u16 = if compressed { 0x20 } else { 0 };
        if root {
            flags |= 0x0c;
        }
        let mut rec = b"nk".to_vec();
        rec.extend(flags.to_le_bytes());
        rec.extend(spec.last_written.to_le_bytes());
        rec.extend(0u32.to_le_bytes());
        rec.extend(parent.to_le_bytes());
        rec.extend(u32::try_from(children.len()).unwrap().to_le_bytes());
        rec.extend(0u32.to_le_bytes());
        rec.extend(list.to_le_bytes());
        rec.extend(u32::MAX.to_le_bytes());
        rec.extend(u32::try_from(vks.len()).unwrap().to_le_bytes());
        rec.extend(values.to_le_bytes());
        rec.extend(sk.to_le_bytes());
        rec.extend(class.to_le_bytes());
        for v in [max_sub, max_class, max_vname, max_data, 0] {
            rec.extend(v.to_le_bytes());
        }
        rec.extend(u16::try_from(name.len()).unwrap().to_le_bytes());
        rec.extend(class_len.to_le_bytes());
        rec.extend(name);
        let p = nk as usize + 4;
        self.data[p..p + rec.len()].copy_from_slice(&rec);
        nk
    }

    fn leaf(&mut self, children: &[(u32, &KeySpec)], sig: &[u8; 2]) -> u32 {
        let mut l = sig.to_vec();
        l.extend(u16::try_from(children.len()).unwrap().to_le_bytes());
        for (off, spec) in children {
            l.extend(off.to_le_bytes());
            match sig {
                b"lh" => l.extend(name::lh_hash(&spec.name).to_le_bytes()),
                b"lf" => {
                    let mut hint = [0u8; 4];
                    for (h, c) in hint.iter_mut().zip(spec.name.chars()) {
                        *h = u8::try_from(u32::from(c)).unwrap_or(0);
                    }
                    l.extend(hint);
                }
                _ => {}
            }
        }
        self.cell(&l)
    }

    fn subkey_list(&mut self, children: &[(u32, &KeySpec)], kind: ListKind) -> u32 {
        match kind {
            ListKind::Lh => self.leaf(children, b"lh"),
            ListKind::Lf => self.leaf(children, b"lf"),
            ListKind::Li => self.leaf(children, b"li"),
            ListKind::Ri(per) => {
                let leaves: Vec<u32> = children
                    .chunks(usize::from(per.max(1)))
                    .map(|c| self.leaf(c, b"lh"))
                    .collect();
                let mut ri = b"ri".to_vec();
                ri.extend(u16::try_from(leaves.len()).unwrap().to_le_bytes());
                for l in leaves {
                    ri.extend(l.to_le_bytes());
                }
                self.cell(&ri)
            }
        }
    }
}

/// Builds one verified "HvLE" log entry holding `pages` (offset in the hive bins data, bytes).
#[must_use]
pub fn log_entry(sequence: u32, hive_bins_data_size: u32, pages: &[(u32, &[u8])]) -> Vec<u8> {
    let mut e = b"HvLE".to_vec();
    e.extend([0u8; 36]);
    for (off, bytes) in pages {
        e.extend(off.to_le_bytes());
        e.extend(u32::try_from(bytes.len()).unwrap().to_le_bytes());
    }
    for (_, bytes) in pages {
        e.extend(*bytes);
    }
    e.resize(e.len().div_ceil(512) * 512, 0);
    let size = u32::try_from(e.len()).unwrap();
    e[4..8].copy_from_slice(&size.to_le_bytes());
    e[12..16].copy_from_slice(&sequence.to_le_bytes());
    e[16..20].copy_from_slice(&hive_bins_data_size.to_le_bytes());
    e[20..24].copy_from_slice(&u32::try_from(pages.len()).unwrap().to_le_bytes());
    let h1 = marvin32(LOG_HASH_SEED, &e[LOG_ENTRY_HEADER..]);
    e[24..32].copy_from_slice(&h1.to_le_bytes());
    let h2 = marvin32(LOG_HASH_SEED, &e[..32]);
    e[32..40].copy_from_slice(&h2.to_le_bytes());
    e
}

/// Builds a new-format log file: the first 512 bytes of `primary`'s base block (file type set
/// to 6, checksum fixed), then `entries`.
#[must_use]
pub fn log_file(primary: &[u8], entries: &[Vec<u8>]) -> Vec<u8> {
    let mut log = primary[..512].to_vec();
    log[28..32].copy_from_slice(&6u32.to_le_bytes());
    let sum = checksum(&log);
    log[508..512].copy_from_slice(&sum.to_le_bytes());
    for e in entries {
        log.extend(e);
    }
    log
}

/// Builds an old-format log file (file type 1) that turns a primary hive written at the same
/// time as `new` into `new`: its base block is `new`'s first 512 bytes (sequence numbers set to
/// `sequence`), and the dirty pages are the 512-byte pages of `new`'s bins listed in `pages`.
#[must_use]
pub fn old_log_file(new: &[u8], sequence: u32, pages: &[usize]) -> Vec<u8> {
    let mut log = new[..512].to_vec();
    log[4..8].copy_from_slice(&sequence.to_le_bytes());
    log[8..12].copy_from_slice(&sequence.to_le_bytes());
    log[28..32].copy_from_slice(&1u32.to_le_bytes());
    log[44..48].copy_from_slice(&1u32.to_le_bytes());
    let sum = checksum(&log);
    log[508..512].copy_from_slice(&sum.to_le_bytes());
    let bins = (new.len() - BASE_BLOCK_SIZE) / 512;
    let mut bitmap = vec![0u8; bins.div_ceil(8)];
    for &p in pages {
        bitmap[p / 8] |= 1 << (p % 8);
    }
    log.extend(b"DIRT");
    log.extend(bitmap);
    log.resize(log.len().div_ceil(512) * 512, 0);
    let mut sorted = pages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for p in sorted {
        let at = BASE_BLOCK_SIZE + p * 512;
        log.extend(&new[at..at + 512]);
    }
    log
}
