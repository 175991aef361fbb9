//! Tests of the writer: every edit against our reader and against libhivex as an oracle, each
//! refusal with its exact error, random operation sequences against a model, the real SYSTEM
//! hive, and fuzzing.

use std::collections::BTreeMap;

use crate::testkit::{HiveBuilder, ListKind};
use crate::tests::{
    Rng, Tree, multi, mutate, our_tree, parse_reg, real_system_hive, rich_builder, tool, utf16z,
};
use crate::{Error, FileTime, Hive, HiveMut, ValueType};

/// One value as the trees hold it: name, type number, data.
type Val = (String, u32, Vec<u8>);

const PREFIX: &str = r"HKEY_LOCAL_MACHINE\SYSTEM";
const T0: FileTime = FileTime(0x01db_0000_0000_0000);

fn open(bytes: Vec<u8>) -> HiveMut {
    let mut w = Hive::from_bytes(bytes).unwrap().into_mut().unwrap();
    w.set_timestamp(T0);
    w
}

/// Writes `bytes` to a file and returns hivex's view of it (None without hivexregedit).
pub(crate) fn hivex_tree(bytes: &[u8]) -> Option<Tree> {
    if !tool("hivexregedit") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hive");
    std::fs::write(&path, bytes).unwrap();
    Some(parse_reg(&hivex_export_lines(&path), PREFIX))
}

/// Asserts two trees are equal, naming the first difference briefly.
#[track_caller]
pub(crate) fn assert_tree_eq(got: &Tree, want: &Tree, who: &str) {
    if got == want {
        return;
    }
    let short = |v: Option<&Vec<(String, u32, Vec<u8>)>>| {
        v.map(|vals| {
            vals.iter()
                .map(|(n, t, d)| format!("{n:?}:{t:#x}:{}b:{:02x?}", d.len(), &d[..d.len().min(8)]))
                .collect::<Vec<_>>()
        })
    };
    for k in got.keys().chain(want.keys()) {
        if got.get(k) != want.get(k) {
            panic!(
                "{who}: key {k:?} differs:\n got  {:?}\n want {:?}",
                short(got.get(k)),
                short(want.get(k))
            );
        }
    }
}

/// Runs hivexregedit --export; its output is UTF-8 on lines with characters over U+00FF and
/// Latin-1 on the others (Perl's default output layer), so each line is decoded on its own.
fn hivex_export_lines(path: &std::path::Path) -> String {
    let out = std::process::Command::new("hivexregedit")
        .args(["--export", "--prefix", PREFIX])
        .arg(path)
        .arg("\\")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .split(|&b| b == b'\n')
        .map(|l| match std::str::from_utf8(l) {
            Ok(s) => s.to_owned(),
            Err(_) => l.iter().map(|&b| char::from(b)).collect(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Our reader and hivex both see `want`; the base block is clean and was bumped.
fn check(bytes: &[u8], want: &Tree) {
    let hive = Hive::from_bytes(bytes.to_vec()).unwrap();
    assert!(!hive.is_dirty());
    assert_eq!(
        hive.base_block().primary_sequence,
        hive.base_block().secondary_sequence
    );
    assert_tree_eq(&our_tree(&hive), want, "our reader");
    if let Some(theirs) = hivex_tree(bytes) {
        assert_tree_eq(&theirs, want, "hivex");
    }
}

#[test]
fn create_set_delete_round_trip_with_every_type() {
    let mut w = open(HiveBuilder::new().build());
    w.create_key(r"ControlSet001\Services\viostor\Parameters")
        .unwrap();
    // Existing keys are matched case-insensitively: nothing new is created.
    w.create_key(r"controlset001\SERVICES\ViOsToR").unwrap();
    let key = r"ControlSet001\Services\viostor";
    let big: Vec<u8> = (0..40_000u32)
        .map(|i| u8::try_from(i % 253).unwrap())
        .collect();
    let values: Vec<(&str, ValueType, Vec<u8>)> = vec![
        ("Type", ValueType::Dword, 1u32.to_le_bytes().to_vec()),
        ("Start", ValueType::Dword, 0u32.to_le_bytes().to_vec()),
        ("Group", ValueType::Sz, utf16z("SCSI miniport")),
        (
            "ImagePath",
            ValueType::ExpandSz,
            utf16z(r"system32\drivers\viostor.sys"),
        ),
        ("", ValueType::Sz, utf16z("default")),
        ("none", ValueType::None, vec![]),
        ("bin", ValueType::Binary, (0..100u8).collect()),
        ("be", ValueType::DwordBigEndian, vec![0, 0, 0, 1]),
        ("link", ValueType::Link, utf16z(r"\Registry\Machine")),
        ("multi", ValueType::MultiSz, multi(&["a", "bé"])),
        ("res", ValueType::ResourceList, vec![8; 9]),
        ("full", ValueType::FullResourceDescriptor, vec![9; 3]),
        ("req", ValueType::ResourceRequirementsList, vec![10; 5]),
        ("q", ValueType::Qword, 7u64.to_le_bytes().to_vec()),
        ("dev", ValueType::Other(0xffff_0012), utf16z("x")),
        ("bcd", ValueType::Other(0x1000_0001), vec![1, 2, 3, 4, 5]),
        ("big", ValueType::Binary, big.clone()),
        ("seg", ValueType::Binary, vec![0x5a; 16344]),
        ("seg+1", ValueType::Binary, vec![0xa5; 16345]),
        ("Ünïcode ✓", ValueType::Sz, utf16z("✓")),
    ];
    for (n, k, d) in &values {
        w.set_value(key, n, *k, d).unwrap();
    }
    // Replacing keeps the stored name's spelling and frees the old data.
    w.set_value(key, "START", ValueType::Dword, &3u32.to_le_bytes())
        .unwrap();
    w.set_value(key, "big", ValueType::Binary, &big[..30_000])
        .unwrap();
    w.set_value(key, "bin", ValueType::Binary, &[1]).unwrap();
    assert!(w.delete_value(key, "NONE").unwrap());
    assert!(!w.delete_value(key, "none").unwrap());
    w.create_key(r"Gone\A\B").unwrap();
    w.set_value(r"Gone\A", "x", ValueType::Binary, &[1; 100])
        .unwrap();
    w.set_value(r"Gone\A\B", "y", ValueType::Binary, &big)
        .unwrap();
    assert!(w.delete_key("gone").unwrap());
    assert!(!w.delete_key("gone").unwrap());
    assert!(w.is_modified());
    let bytes = w.into_bytes();

    let mut want = Tree::new();
    for k in [
        "",
        "ControlSet001",
        r"ControlSet001\Services",
        key,
        r"ControlSet001\Services\viostor\Parameters",
    ] {
        want.insert(k.to_owned(), vec![]);
    }
    let mut vals: Vec<(String, u32, Vec<u8>)> = values
        .iter()
        .filter(|(n, _, _)| *n != "none")
        .map(|(n, k, d)| {
            let d = match *n {
                "Start" => 3u32.to_le_bytes().to_vec(),
                "big" => big[..30_000].to_vec(),
                "bin" => vec![1],
                _ => d.clone(),
            };
            ((*n).to_owned(), k.raw(), d)
        })
        .collect();
    vals.sort();
    want.insert(key.to_owned(), vals);
    check(&bytes, &want);

    let hive = Hive::from_bytes(bytes).unwrap();
    let base = hive.base_block();
    assert_eq!(base.primary_sequence, 2);
    assert_eq!(base.last_written, T0.0);
    let svc = hive.open_path(key).unwrap().unwrap();
    assert_eq!(svc.last_written(), T0);
    assert_eq!(svc.name(), "viostor");
    // New keys share their parent's security cell.
    assert_eq!(
        svc.security_offset(),
        hive.root().unwrap().security_offset()
    );
    assert_eq!(svc.subkey_count(), 1);
    assert_eq!(svc.value_count(), 19);
    // The deleted subtree's cells are free again: nothing but the root and the 4 keys remain.
    let mut keys = 0;
    hive.root()
        .unwrap()
        .walk(|_, _| {
            keys += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(keys, 5);
}

#[test]
fn security_reference_counts_follow_keys() {
    let mut w = open(HiveBuilder::new().build());
    let sk = w.hive().root().unwrap().security_offset();
    let refs = |w: &HiveMut| {
        let cell = w.hive().cell(sk, "sk").unwrap();
        u32::from_le_bytes(cell[12..16].try_into().unwrap())
    };
    // The builder counts its one key.
    assert_eq!(refs(&w), 1);
    w.create_key(r"A\B\C").unwrap();
    assert_eq!(refs(&w), 4);
    w.delete_key(r"a\b").unwrap();
    assert_eq!(refs(&w), 2);
}

#[test]
fn refusals_have_exact_errors_and_change_nothing() {
    let dirty = HiveBuilder::new().sequence(5, 4).build();
    let hive = Hive::options().allow_dirty(true).open(dirty).unwrap();
    let e = hive.into_mut().unwrap_err();
    assert_eq!(
        e.to_string(),
        "hive SYSTEM has pending log data (sequence 5 != 4); replay it by booting Windows once \
         or supply the .LOG1/.LOG2 files"
    );
    assert_eq!(e.as_dirty().unwrap().primary_sequence(), 5);

    let original = rich_builder().build();
    let mut w = open(original.clone());
    let long_key = "k".repeat(256);
    let long_value = "v".repeat(16_384);
    let cases: Vec<(crate::Result<()>, String)> = vec![
        (
            w.create_key(r"A\\B"),
            r#"key path "A\\\\B" has an empty component"#.to_owned(),
        ),
        (
            w.create_key(&long_key),
            "key name is 256 UTF-16 units long, more than the limit of 255".to_owned(),
        ),
        (
            w.create_key("a\0b"),
            r#"key name "a\0b" contains a NUL character"#.to_owned(),
        ),
        (
            w.set_value("Missing", "v", ValueType::Dword, &[0; 4]),
            r#"key "Missing" does not exist"#.to_owned(),
        ),
        (
            w.set_value("Select", &long_value, ValueType::Dword, &[0; 4]),
            "value name is 16384 UTF-16 units long, more than the limit of 16383".to_owned(),
        ),
        (
            w.set_value("Select", "n\0", ValueType::Dword, &[0; 4]),
            r#"value name "n\0" contains a NUL character"#.to_owned(),
        ),
        (
            w.set_value(
                "Select",
                "huge",
                ValueType::Binary,
                &vec![0; (64 << 20) + 1],
            ),
            "value data is 67108865 bytes, more than the limit of 67108864".to_owned(),
        ),
        (
            w.delete_key(r"\").map(|_| ()),
            "the root key cannot be deleted".to_owned(),
        ),
        (
            w.delete_value("Missing", "v").map(|_| ()),
            r#"key "Missing" does not exist"#.to_owned(),
        ),
    ];
    for (r, want) in cases {
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
        assert_eq!(e.to_string(), want);
    }
    assert_eq!(
        crate::write::check_key_name(r"a\b")
            .unwrap_err()
            .to_string(),
        r#"key name "a\\b" contains a backslash"#
    );
    assert_eq!(
        crate::write::check_key_name("").unwrap_err().to_string(),
        "key name is empty"
    );
    assert!(!w.is_modified());
    assert_eq!(w.into_bytes(), original);
}

#[test]
fn failed_edit_rolls_back() {
    // A value whose data cell is shared with another value: deleting the first frees the
    // cell, deleting the key then meets a free cell and must leave the hive untouched.
    let bytes = HiveBuilder::new()
        .value("K", "a", ValueType::Binary, &[1; 10])
        .value("K", "b", ValueType::Binary, &[2; 10])
        .build();
    let hive = Hive::from_bytes(bytes.clone()).unwrap();
    let k = hive.open_path("K").unwrap().unwrap();
    let list = u32::from_le_bytes(
        bytes[4096 + k.offset() as usize + 4 + 40..][..4]
            .try_into()
            .unwrap(),
    );
    let vk = |i: usize| {
        u32::from_le_bytes(
            bytes[4096 + list as usize + 4 + 4 * i..][..4]
                .try_into()
                .unwrap(),
        )
    };
    let data_a = &bytes[4096 + vk(0) as usize + 4 + 8..][..4];
    let mut shared = bytes.clone();
    let at = 4096 + vk(1) as usize + 4 + 8;
    shared[at..at + 4].copy_from_slice(data_a);
    let mut w = open(shared.clone());
    w.delete_value("K", "a").unwrap();
    let before = w.hive().as_bytes().to_vec();
    let e = w.delete_key("K").unwrap_err();
    assert!(e.to_string().contains("is free, not allocated"), "{e}");
    assert_eq!(w.hive().as_bytes(), before.as_slice());
}

#[test]
fn long_lists_become_index_roots_and_back() {
    for (lists, limit) in [
        (ListKind::Lh, 5),
        (ListKind::Lf, 5),
        (ListKind::Li, 5),
        (ListKind::Ri(3), 4),
        (ListKind::Lh, crate::MAX_LEAF_ENTRIES),
    ] {
        let mut w = open(HiveBuilder::new().key(r"P\x").lists(lists).build());
        w.leaf_limit = limit;
        let n = if limit > 100 { 1200 } else { 23 };
        let mut want = Tree::new();
        for k in ["", "P", r"P\x"] {
            want.insert(k.to_owned(), vec![]);
        }
        // Reverse order, so every insert goes to the front of the list.
        for i in (0..n).rev() {
            w.create_key(&format!(r"P\K{i:04}")).unwrap();
            want.insert(format!(r"P\K{i:04}"), vec![]);
        }
        let bytes = w.into_bytes();
        let hive = Hive::from_bytes(bytes.clone()).unwrap();
        let p = hive.open_path("P").unwrap().unwrap();
        let names: Vec<String> = p
            .subkeys()
            .unwrap()
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_by_key(|s| s.to_uppercase());
        assert_eq!(names, sorted, "{lists:?}");
        let cell = hive
            .cell(
                u32::from_le_bytes(
                    hive.as_bytes()[4096 + p.offset() as usize + 4 + 28..][..4]
                        .try_into()
                        .unwrap(),
                ),
                "list",
            )
            .unwrap();
        assert_eq!(&cell[..2], b"ri", "{lists:?}");
        check(&bytes, &want);

        // Deleting most of them shrinks the list back to one leaf.
        let mut w = open(HiveBuilder::new().key(r"P\x").lists(lists).build());
        w.leaf_limit = limit;
        for i in 0..n {
            w.create_key(&format!(r"P\K{i:04}")).unwrap();
        }
        for i in 1..n {
            assert!(w.delete_key(&format!(r"p\k{i:04}")).unwrap());
        }
        let mut want = Tree::new();
        for k in ["", "P", r"P\x", r"P\K0000"] {
            want.insert(k.to_owned(), vec![]);
        }
        check(&w.into_bytes(), &want);
    }
}

#[test]
fn old_versions_write_big_data_in_one_cell() {
    let mut w = open(HiveBuilder::new().minor_version(3).build());
    w.create_key("K").unwrap();
    let big = vec![0x77; 50_000];
    w.set_value("K", "big", ValueType::Binary, &big).unwrap();
    let hive = w.into_hive().unwrap();
    let k = hive.open_path("K").unwrap().unwrap();
    assert_eq!(k.value("big").unwrap().unwrap().data, big);
    // "lf" lists in version 1.3.
    let list = u32::from_le_bytes(
        hive.as_bytes()[4096 + hive.root().unwrap().offset() as usize + 4 + 28..][..4]
            .try_into()
            .unwrap(),
    );
    assert_eq!(&hive.cell(list, "list").unwrap()[..2], b"lf");
}

#[test]
fn freed_cells_are_reused_and_merged() {
    let mut w = open(HiveBuilder::new().build());
    w.create_key("K").unwrap();
    w.set_value("K", "a", ValueType::Binary, &[1; 3000])
        .unwrap();
    let size = w.hive().as_bytes().len();
    for i in 0..50 {
        w.set_value("K", "a", ValueType::Binary, &vec![i; 3000 + usize::from(i)])
            .unwrap();
        w.delete_value("K", "a").unwrap();
        w.set_value("K", "a", ValueType::Binary, &[i; 10]).unwrap();
    }
    // 50 rounds of 3 KiB values fit in the space freed each time.
    assert!(w.hive().as_bytes().len() <= size + 8192);
    let mut want = Tree::new();
    want.insert(String::new(), vec![]);
    want.insert("K".into(), vec![("a".into(), 3, vec![49; 10])]);
    check(&w.into_bytes(), &want);
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub(super) enum Op {
        Create(Vec<String>),
        Set(Vec<String>, String, u32, Vec<u8>),
        DeleteValue(Vec<String>, String),
        DeleteKey(Vec<String>),
        Many(Vec<String>, usize),
    }

    /// Upper-cased path → (path as created, values: upper name → (name, type, data)).
    /// Upper-cased value name → (name, type, data).
    pub(super) type Values = BTreeMap<String, (String, u32, Vec<u8>)>;

    #[derive(Default, Debug)]
    pub(super) struct Model(BTreeMap<String, (String, Values)>);

    fn up(s: &str) -> String {
        s.chars().flat_map(char::to_uppercase).collect()
    }

    impl Model {
        pub(super) fn new() -> Self {
            let mut m = Self::default();
            m.0.insert(String::new(), (String::new(), BTreeMap::new()));
            m
        }
        pub(super) fn create(&mut self, parts: &[String]) {
            let mut path = String::new();
            let mut shown = String::new();
            for p in parts {
                let (np, ns) = if path.is_empty() {
                    (up(p), p.clone())
                } else {
                    (format!("{path}\\{}", up(p)), format!("{shown}\\{p}"))
                };
                let entry = self.0.entry(np.clone()).or_insert((ns, BTreeMap::new()));
                shown = entry.0.clone();
                path = np;
            }
        }
        pub(super) fn key(&mut self, parts: &[String]) -> Option<&mut Values> {
            let p: Vec<String> = parts.iter().map(|s| up(s)).collect();
            self.0.get_mut(&p.join("\\")).map(|e| &mut e.1)
        }
        pub(super) fn delete(&mut self, parts: &[String]) -> bool {
            let p: Vec<String> = parts.iter().map(|s| up(s)).collect();
            let p = p.join("\\");
            let existed = self.0.remove(&p).is_some();
            let below = format!("{p}\\");
            self.0.retain(|k, _| !k.starts_with(&below));
            existed
        }
        pub(super) fn tree(&self) -> Tree {
            self.0
                .values()
                .map(|(shown, vals)| {
                    let mut v: Vec<_> = vals.values().cloned().collect();
                    v.sort();
                    (shown.clone(), v)
                })
                .collect()
        }
    }

    /// Applies `op` to the hive and the model, checking the hive's answer.
    pub(super) fn apply(w: &mut HiveMut, m: &mut Model, op: &Op) {
        match op {
            Op::Create(p) => {
                w.create_key(&p.join("\\")).unwrap();
                m.create(p);
            }
            Op::Set(p, n, k, d) => {
                let r = w.set_value(&p.join("\\"), n, ValueType::from_raw(*k), d);
                match m.key(p) {
                    Some(vals) => {
                        r.unwrap();
                        let e = vals.entry(up(n)).or_insert((n.clone(), 0, vec![]));
                        e.1 = *k;
                        e.2 = d.clone();
                    }
                    None => assert!(matches!(r, Err(Error::Usage(_)))),
                }
            }
            Op::DeleteValue(p, n) => {
                let r = w.delete_value(&p.join("\\"), n);
                match m.key(p) {
                    Some(vals) => assert_eq!(r.unwrap(), vals.remove(&up(n)).is_some()),
                    None => assert!(matches!(r, Err(Error::Usage(_)))),
                }
            }
            Op::DeleteKey(p) => {
                let r = w.delete_key(&p.join("\\"));
                if p.is_empty() {
                    assert!(matches!(r, Err(Error::Usage(_))));
                } else {
                    assert_eq!(r.unwrap(), m.delete(p));
                }
            }
            Op::Many(p, n) => {
                for i in 0..*n {
                    let mut q = p.clone();
                    q.push(format!("M{i:03}"));
                    w.create_key(&q.join("\\")).unwrap();
                    m.create(&q);
                }
            }
        }
    }

    /// The tree with key paths and value names upper-cased.
    fn fold(t: Tree) -> Tree {
        t.into_iter()
            .map(|(k, vals)| {
                let mut vals: Vec<_> = vals.into_iter().map(|(n, t, d)| (up(&n), t, d)).collect();
                vals.sort();
                (up(&k), vals)
            })
            .collect()
    }

    fn path() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(
            prop_oneof![
                Just("Alpha"),
                Just("alpha"),
                Just("Beta"),
                Just("γάμμα"),
                Just("ΓΆΜΜΑ"),
                Just("Z9"),
                Just("x"),
            ]
            .prop_map(str::to_owned),
            0..4,
        )
    }

    fn op() -> impl Strategy<Value = Op> {
        let name = prop_oneof![
            Just(""),
            Just("v"),
            Just("V"),
            Just("Wert"),
            Just("ü"),
            Just("ImagePath")
        ]
        .prop_map(str::to_owned);
        let kind = prop_oneof![
            Just(0u32),
            Just(1),
            Just(2),
            Just(3),
            Just(4),
            Just(7),
            Just(11),
            Just(0xffff_0012),
            Just(0x1000_0001)
        ];
        let data = prop_oneof![
            6 => proptest::collection::vec(any::<u8>(), 0..12),
            3 => proptest::collection::vec(any::<u8>(), 12..300),
            1 => (16_000usize..40_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
        ];
        prop_oneof![
            4 => path().prop_map(Op::Create),
            6 => (path(), name.clone(), kind, data).prop_map(|(p, n, k, d)| Op::Set(p, n, k, d)),
            2 => (path(), name).prop_map(|(p, n)| Op::DeleteValue(p, n)),
            2 => path().prop_map(Op::DeleteKey),
            1 => (path(), 1usize..30).prop_map(|(p, n)| Op::Many(p, n)),
        ]
    }

    /// 400 pseudo-random operations on one hive (lists grow into index roots and shrink, big
    /// values come and go), checked against the model, our reader and hivex at the end.
    #[test]
    fn long_deterministic_sequence() {
        let mut rng = Rng(0x0bad_5eed_1234_5678);
        let comps = ["Alpha", "alpha", "Beta", "γάμμα", "Z9", "x", "Yy"];
        let names = ["", "v", "V", "Wert", "ü", "ImagePath"];
        let kinds = [0u32, 1, 2, 3, 4, 7, 11, 0xffff_0012, 0x1000_0001];
        let mut w = open(HiveBuilder::new().build());
        w.leaf_limit = 4;
        let mut m = Model::new();
        for _ in 0..400 {
            let depth = rng.below(4);
            let p: Vec<String> = (0..depth)
                .map(|_| comps[rng.below(comps.len())].to_owned())
                .collect();
            let op = match rng.below(12) {
                0..=3 => Op::Create(p),
                4..=7 => {
                    let len = match rng.below(10) {
                        0 => 16_000 + rng.below(30_000),
                        1..=3 => 12 + rng.below(300),
                        _ => rng.below(12),
                    };
                    let b = u8::try_from(rng.next() & 0xff).unwrap();
                    Op::Set(
                        p,
                        names[rng.below(names.len())].to_owned(),
                        kinds[rng.below(kinds.len())],
                        vec![b; len],
                    )
                }
                8 => Op::DeleteValue(p, names[rng.below(names.len())].to_owned()),
                9 | 10 => Op::DeleteKey(p),
                _ => Op::Many(p, 1 + rng.below(25)),
            };
            apply(&mut w, &mut m, &op);
        }
        let tree = m.tree();
        let values: usize = tree.values().map(Vec::len).sum();
        println!("{} keys, {values} values", tree.len());
        assert!(
            tree.len() > 20 && values > 10,
            "{} keys, {values} values",
            tree.len()
        );
        assert_tree_eq(&our_tree(w.hive()), &tree, "during");
        check(&w.into_bytes(), &tree);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn random_edits_match_the_model_for_us_and_hivex(
            ops in proptest::collection::vec(op(), 1..60),
            limit in prop_oneof![Just(2usize), Just(5), Just(crate::MAX_LEAF_ENTRIES)],
            base in 0..3u8,
        ) {
            let builder = match base {
                0 => HiveBuilder::new(),
                1 => HiveBuilder::new().lists(ListKind::Ri(2)).key("Alpha\\x").key("Beta").key("Z9"),
                _ => HiveBuilder::new().lists(ListKind::Lf).value("x", "v", ValueType::Dword, &[1, 0, 0, 0]),
            };
            let bytes = builder.build();
            let start = Hive::from_bytes(bytes.clone()).unwrap();
            let mut m = Model::new();
            for (path, vals) in our_tree(&start) {
                let parts: Vec<String> = if path.is_empty() { vec![] } else { path.split('\\').map(str::to_owned).collect() };
                m.create(&parts);
                let k = m.key(&parts).unwrap();
                for (n, t, d) in vals {
                    k.insert(up(&n), (n, t, d));
                }
            }
            let mut w = open(bytes);
            w.leaf_limit = limit;
            for op in &ops {
                apply(&mut w, &mut m, op);
            }
            prop_assert_eq!(our_tree(w.hive()), m.tree());
            let out = w.into_bytes();
            check(&out, &m.tree());
            // The .reg diff from the start to the end state, applied to the start, gives the end.
            let end = Hive::from_bytes(out).unwrap();
            let diff = crate::diff_reg(&start, &end, PREFIX).unwrap();
            let mut again = open(start.as_bytes().to_vec());
            again.apply_reg(&diff, PREFIX).unwrap();
            // Names are compared ignoring case: a diff does not carry a change of case alone.
            prop_assert_eq!(fold(our_tree(&again.into_hive().unwrap())), fold(m.tree()));
        }
    }
}

/// Real fixture: a boot-start viostor service and its DriverDatabase entry written into the
/// Windows 10 SYSTEM hive; hivex must re-read the whole hive and see exactly that change.
#[test]
fn real_system_hive_gets_viostor() {
    let Some((_, bytes)) = real_system_hive() else {
        return;
    };
    let before = Hive::from_bytes(bytes.clone()).unwrap();
    let mut w = open(bytes.clone());
    let svc = r"ControlSet001\Services\viostor";
    let pkg = r"DriverDatabase\DriverPackages\viostor.inf_amd64_9cf6b4b6c3ba6e61";
    let intended: Vec<(&str, &str, ValueType, Vec<u8>)> = vec![
        (svc, "Type", ValueType::Dword, 1u32.to_le_bytes().to_vec()),
        (svc, "Start", ValueType::Dword, 0u32.to_le_bytes().to_vec()),
        (
            svc,
            "ErrorControl",
            ValueType::Dword,
            1u32.to_le_bytes().to_vec(),
        ),
        (svc, "Group", ValueType::Sz, utf16z("SCSI miniport")),
        (
            svc,
            "ImagePath",
            ValueType::ExpandSz,
            utf16z(r"system32\drivers\viostor.sys"),
        ),
        (
            r"DriverDatabase\DriverInfFiles",
            "viostor.inf",
            ValueType::MultiSz,
            multi(&["viostor.inf_amd64_9cf6b4b6c3ba6e61"]),
        ),
        (pkg, "", ValueType::Sz, utf16z("viostor.inf")),
        (
            pkg,
            "Version",
            ValueType::Binary,
            vec![0xff, 0xff, 0x09, 0, 0, 0, 0, 0, 0x5e, 0x64, 0xf1, 0xfc],
        ),
        (pkg, "Provider", ValueType::Sz, utf16z("Red Hat, Inc.")),
        (pkg, "SignerName", ValueType::Sz, utf16z("")),
        (
            pkg,
            "SignerScore",
            ValueType::Dword,
            0x0d00_0004u32.to_le_bytes().to_vec(),
        ),
        (
            pkg,
            "Flags",
            ValueType::Dword,
            0x0001_0012u32.to_le_bytes().to_vec(),
        ),
    ];
    for k in [svc, &format!(r"{svc}\Parameters"), pkg] {
        w.create_key(k).unwrap();
    }
    for (k, n, t, d) in &intended {
        w.set_value(k, n, *t, d).unwrap();
    }
    let after_bytes = w.into_bytes();
    let after = Hive::from_bytes(after_bytes.clone()).unwrap();
    assert_eq!(after.base_block().primary_sequence, 0xe5);

    // The intended difference, as key → values maps.
    let mut want = our_tree(&before);
    let existed = want.contains_key(r"DriverDatabase\DriverInfFiles");
    assert!(existed);
    for k in [svc.to_owned(), format!(r"{svc}\Parameters"), pkg.to_owned()] {
        assert!(want.insert(k, vec![]).is_none());
    }
    for (k, n, t, d) in &intended {
        let vals = want.get_mut(*k).unwrap();
        assert!(vals.iter().all(|v| !v.0.eq_ignore_ascii_case(n)));
        vals.push(((*n).to_owned(), t.raw(), d.clone()));
        vals.sort();
    }
    assert_eq!(our_tree(&after), want);

    // hivex before and after: the exports differ by exactly the intended keys and values.
    if let (Some(theirs_before), Some(theirs_after)) =
        (hivex_tree(&bytes), hivex_tree(&after_bytes))
    {
        assert_tree_eq(&theirs_before, &our_tree(&before), "hivex before");
        assert_tree_eq(&theirs_after, &want, "hivex after");
        // Spelled out: no key or value disappeared or changed, and the added ones are exactly
        // the intended ones.
        let mut added: BTreeMap<&str, Vec<&Val>> = BTreeMap::new();
        for (k, vals) in &theirs_after {
            match theirs_before.get(k) {
                None => {
                    added.insert(k, vals.iter().collect());
                }
                Some(old) => {
                    assert!(old.iter().all(|v| vals.contains(v)), "{k}");
                    let new: Vec<_> = vals.iter().filter(|v| !old.contains(v)).collect();
                    if !new.is_empty() {
                        added.insert(k, new);
                    }
                }
            }
        }
        assert!(theirs_before.keys().all(|k| theirs_after.contains_key(k)));
        let mut intended_map: BTreeMap<&str, Vec<Val>> = BTreeMap::new();
        intended_map.insert(r"ControlSet001\Services\viostor\Parameters", vec![]);
        for (k, n, t, d) in &intended {
            intended_map
                .entry(k)
                .or_default()
                .push(((*n).to_owned(), t.raw(), d.clone()));
        }
        for v in intended_map.values_mut() {
            v.sort();
        }
        let added: BTreeMap<&str, Vec<Val>> = added
            .into_iter()
            .map(|(k, v)| (k, v.into_iter().cloned().collect()))
            .collect();
        assert_eq!(added, intended_map);
    }
    if tool("hivexsh") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("SYSTEM");
        std::fs::write(&path, &after_bytes).unwrap();
        let script = dir.path().join("script");
        std::fs::write(
            &script,
            "cd ControlSet001\\Services\\viostor\nlsval Start\nls\n",
        )
        .unwrap();
        let out = std::process::Command::new("hivexsh")
            .arg("-f")
            .arg(&script)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0\nParameters\n");
    }

    // diff_reg of before/after is exactly the intended change.
    let diff = crate::diff_reg(&before, &after, PREFIX).unwrap();
    let mut expect = String::from("Windows Registry Editor Version 5.00\n");
    expect.push_str(&format!(
        "\n[{PREFIX}\\ControlSet001\\Services\\viostor]\n\"Type\"=dword:00000001\n\
         \"Start\"=dword:00000000\n\"ErrorControl\"=dword:00000001\n\"Group\"=\"SCSI miniport\"\n"
    ));
    assert!(diff.starts_with(&expect), "{diff}");
    let d = parse_reg(&diff, PREFIX);
    let changed: Vec<&String> = d.keys().collect();
    assert_eq!(
        changed,
        [
            &svc.to_owned(),
            &format!(r"{svc}\Parameters"),
            &r"DriverDatabase\DriverInfFiles".to_owned(),
            &pkg.to_owned(),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    // Applying the diff to the original gives the same tree.
    let mut w = open(bytes);
    w.apply_reg(&diff, PREFIX).unwrap();
    assert_eq!(our_tree(&w.into_hive().unwrap()), want);

    // Deleting it all again gives back the original tree and security reference counts.
    let sk_refs = |h: &Hive, path: &str| {
        let sk = h.open_path(path).unwrap().unwrap().security_offset();
        let cell = h.cell(sk, "sk").unwrap();
        (sk, u32::from_le_bytes(cell[12..16].try_into().unwrap()))
    };
    let services = r"ControlSet001\Services";
    let pkgs = r"DriverDatabase\DriverPackages";
    let refs_before = (sk_refs(&before, services), sk_refs(&before, pkgs));
    let mut w = open(after_bytes);
    assert!(w.delete_key(svc).unwrap());
    assert!(w.delete_key(pkg).unwrap());
    assert!(
        w.delete_value(r"DriverDatabase\DriverInfFiles", "viostor.inf")
            .unwrap()
    );
    let back = w.into_hive().unwrap();
    assert_tree_eq(&our_tree(&back), &our_tree(&before), "deleted again");
    assert_eq!(
        (sk_refs(&back, services), sk_refs(&back, pkgs)),
        refs_before
    );
}

#[test]
fn fuzz_write_never_panics() {
    let seeds = [
        rich_builder().build(),
        rich_builder().lists(ListKind::Ri(3)).build(),
        rich_builder().lists(ListKind::Li).minor_version(3).build(),
        HiveBuilder::new().build(),
    ];
    for s in &seeds {
        crate::fuzzing::fuzz_write(s);
    }
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    // REHOST_FUZZ_ITERS runs a longer campaign by hand; 1,000 by default.
    let iters: usize = std::env::var("REHOST_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..iters {
        crate::fuzzing::fuzz_write(&mutate(&mut rng, &seeds[i % seeds.len()]));
    }
}

#[test]
fn fuzz_reg_never_panics() {
    // The harness's own hive is valid and takes the seed.
    let small = crate::fuzzing::small_hive();
    let hive = Hive::from_bytes(small.clone()).unwrap();
    assert_eq!(hive.root().unwrap().name(), "ROOT");
    assert_eq!(
        hive.root().unwrap().security_descriptor().unwrap().len(),
        20
    );
    let seed = "Windows Registry Editor Version 5.00\n\n\
        [HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]\n\
        \"Type\"=dword:00000001\n\"Group\"=\"SCSI miniport\"\n@=\"d\"\n\
        \"ImagePath\"=hex(2):73,00,79,00,73,00,00,00\n\
        \"Owners\"=hex(7):61,00,00,00,62,00,00,00,00,00\n\
        \"Dev\"=hex(ffff0012):de,ad,\\\n  be,ef\n\"Q\"=qword:1\n\"Old\"=-\n\n\
        [-HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor\\Gone]\n\
        [HKLM\\SYSTEM\\A\\B]\n";
    let mut w = open(small);
    assert_eq!(w.apply_reg(seed, PREFIX).unwrap(), 11);
    assert!(w.into_hive().unwrap().open_path(r"A\B").unwrap().is_some());
    crate::fuzzing::fuzz_reg(seed.as_bytes());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let seed = seed.as_bytes();
    for _ in 0..1000 {
        let mut m = seed.to_vec();
        if rng.below(4) == 0 {
            m.truncate(rng.below(seed.len() + 1));
        } else {
            for _ in 0..=rng.below(6) {
                let at = rng.below(m.len());
                m[at] = match rng.below(4) {
                    0 => b'\\',
                    1 => b'"',
                    2 => b"[]=-,:\n"[rng.below(7)],
                    _ => u8::try_from(rng.next() & 0xff).unwrap(),
                };
            }
        }
        crate::fuzzing::fuzz_reg(&m);
    }
}
