//! Whole-crate tests: synthetic hives, libhivex as an oracle, a real SYSTEM hive, dirty hives and
//! log replay, corruption branches and fuzzing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::testkit::{HiveBuilder, KeySpec, ListKind, log_entry, log_file, old_log_file};
use crate::{DirtyReason, Error, Hive, HiveOptions, Value, ValueType};

/// Key path → sorted (value name, type, data).
pub(crate) type Tree = BTreeMap<String, Vec<(String, u32, Vec<u8>)>>;

pub(crate) fn utf16z(s: &str) -> Vec<u8> {
    let mut v: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    v.extend([0, 0]);
    v
}

pub(crate) fn multi(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend(utf16z(p));
    }
    v.extend([0, 0]);
    v
}

/// A hive with every value type, a class name, Unicode names and big data.
pub(crate) fn rich_builder() -> HiveBuilder {
    let big: Vec<u8> = (0..40_000u32)
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    let mut b = HiveBuilder::new()
        .value("Select", "Current", ValueType::Dword, &1u32.to_le_bytes())
        .value(
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
            ValueType::Sz,
            &utf16z("WIN-TEST"),
        )
        .value(
            r"ControlSet001\Services\viostor",
            "Start",
            ValueType::Dword,
            &0u32.to_le_bytes(),
        )
        .value(
            r"ControlSet001\Services\viostor",
            "Type",
            ValueType::Dword,
            &1u32.to_le_bytes(),
        )
        .value(
            r"ControlSet001\Services\viostor",
            "ImagePath",
            ValueType::ExpandSz,
            &utf16z(r"\SystemRoot\System32\drivers\viostor.sys"),
        )
        .value(
            r"ControlSet001\Services\viostor",
            "Group",
            ValueType::Sz,
            &utf16z("SCSI miniport"),
        )
        .value(
            r"ControlSet001\Services\viostor",
            "",
            ValueType::Sz,
            &utf16z("default \"quoted\" \\ value"),
        )
        .value(r"Types", "none", ValueType::None, &[])
        .value(r"Types", "none-data", ValueType::None, &[1, 2, 3])
        .value(
            r"Types",
            "binary",
            ValueType::Binary,
            &(0..100u8).collect::<Vec<_>>(),
        )
        .value(
            r"Types",
            "dword-be",
            ValueType::DwordBigEndian,
            &[0, 0, 1, 2],
        )
        .value(
            r"Types",
            "link",
            ValueType::Link,
            &utf16z(r"\Registry\Machine\System\ControlSet001"),
        )
        .value(
            r"Types",
            "multi",
            ValueType::MultiSz,
            &multi(&["a", "bé", "c"]),
        )
        .value(
            r"Types",
            "reslist",
            ValueType::ResourceList,
            &[1, 0, 0, 0, 5, 6],
        )
        .value(
            r"Types",
            "fullres",
            ValueType::FullResourceDescriptor,
            &[9; 12],
        )
        .value(
            r"Types",
            "reqlist",
            ValueType::ResourceRequirementsList,
            &[10; 7],
        )
        .value(
            r"Types",
            "qword",
            ValueType::Qword,
            &0x0102_0304_0506_0708u64.to_le_bytes(),
        )
        .value(
            r"Types",
            "devprop",
            ValueType::Other(0xffff_0012),
            &utf16z("x"),
        )
        .value(r"Types", "bcd", ValueType::Other(0x1000_0001), &[7])
        .value(r"Types", "short-sz", ValueType::Sz, b"ab")
        .value(r"Types", "odd-dword", ValueType::Dword, &[1, 2])
        .value(r"Types", "big", ValueType::Binary, &big)
        .value(
            r"Types",
            "exactly-16344",
            ValueType::Binary,
            &vec![0x5a; 16344],
        )
        .value(r"Types", "Ünïcode värde ✓", ValueType::Sz, &utf16z("✓"))
        .key(r"Ünïcode ключ")
        .key(r"ControlSet001\Enum");
    b.root_mut().path_mut(r"ControlSet001\Control\Lsa\JD").class = Some("cdebfed5".to_owned());
    for i in 0..40 {
        b = b.key(&format!(r"Many\Sub{i:03}"));
    }
    b
}

/// Every (key path, values) of a hive, via our walk, sorted.
pub(crate) fn our_tree(hive: &Hive) -> Tree {
    let mut out = BTreeMap::new();
    hive.root()
        .unwrap()
        .walk(|path, key| {
            let mut vals: Vec<_> = key
                .values()?
                .into_iter()
                .map(|v| (v.name, v.kind.raw(), v.data))
                .collect();
            vals.sort();
            out.insert(path.to_owned(), vals);
            Ok(())
        })
        .unwrap();
    out
}

/// A small .reg reader for comparisons (handles `hex(N)` for any u32 N, which regashii cannot).
pub(crate) fn parse_reg(text: &str, prefix: &str) -> Tree {
    let joined = text.replace("\r\n", "\n").replace("\\\n  ", "");
    let mut out = Tree::new();
    let mut cur: Option<String> = None;
    for line in joined.lines() {
        if let Some(k) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let rel = k
                .strip_prefix(prefix)
                .unwrap_or(k)
                .trim_matches('\\')
                .to_owned();
            out.entry(rel.clone()).or_default();
            cur = Some(rel);
            continue;
        }
        let Some(key) = &cur else { continue };
        if line.is_empty() {
            continue;
        }
        let (name, rest) = if let Some(r) = line.strip_prefix("@=") {
            (String::new(), r)
        } else {
            // "name"= with \\ and \" escapes.
            let mut name = String::new();
            let mut chars = line[1..].char_indices();
            let mut end = 0;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => name.push(chars.next().unwrap().1),
                    '"' => {
                        end = i + 2;
                        break;
                    }
                    c => name.push(c),
                }
            }
            (name, &line[end + 1..])
        };
        let (kind, data) = if let Some(s) = rest.strip_prefix('"') {
            let s = s
                .strip_suffix('"')
                .unwrap()
                .replace("\\\"", "\"")
                .replace("\\\\", "\\");
            (1, utf16z(&s))
        } else if let Some(d) = rest.strip_prefix("dword:") {
            (
                4,
                u32::from_str_radix(d, 16).unwrap().to_le_bytes().to_vec(),
            )
        } else {
            let (kind, hex) = if let Some(h) = rest.strip_prefix("hex:") {
                (3, h)
            } else {
                let r = rest.strip_prefix("hex(").unwrap();
                let (n, h) = r.split_once("):").unwrap();
                (u32::from_str_radix(n, 16).unwrap(), h)
            };
            let bytes = hex
                .split(',')
                .filter(|b| !b.is_empty())
                .map(|b| u8::from_str_radix(b.trim(), 16).unwrap())
                .collect();
            (kind, bytes)
        };
        out.get_mut(key).unwrap().push((name, kind, data));
    }
    for v in out.values_mut() {
        v.sort();
    }
    out
}

pub(crate) fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("skipping: {name} not found");
    }
    found
}

pub(crate) fn hivex_export(path: &Path, prefix: &str) -> String {
    let out = Command::new("hivexregedit")
        .args(["--export", "--prefix", prefix])
        .arg(path)
        .arg("\\")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn synthetic_hive_reads_field_by_field() {
    for lists in [ListKind::Lh, ListKind::Lf, ListKind::Li, ListKind::Ri(7)] {
        let hive = Hive::from_bytes(rich_builder().lists(lists).build()).unwrap();
        assert!(!hive.is_dirty());
        let root = hive.root().unwrap();
        assert_eq!(root.name(), "ROOT");
        assert_eq!(
            root.flags() & crate::flags::HIVE_ENTRY,
            crate::flags::HIVE_ENTRY
        );
        let names: Vec<String> = root
            .subkeys()
            .unwrap()
            .iter()
            .map(|k| k.name().to_owned())
            .collect();
        assert_eq!(
            names,
            ["ControlSet001", "Many", "Select", "Types", "Ünïcode ключ"]
        );
        assert_eq!(
            hive.open_path("many")
                .unwrap()
                .unwrap()
                .subkeys()
                .unwrap()
                .len(),
            40
        );
        assert_eq!(
            hive.open_path(r"Many\SUB039").unwrap().unwrap().name(),
            "Sub039",
            "{lists:?}"
        );
        assert!(hive.open_path(r"Many\Sub040").unwrap().is_none());
        assert!(hive.open_path(r"ünïcode КЛЮЧ").unwrap().is_some());

        let cur = hive
            .open_path("Select")
            .unwrap()
            .unwrap()
            .value("current")
            .unwrap()
            .unwrap();
        assert_eq!(cur.as_dword(), Some(1));
        let cn = hive
            .open_path(r"ControlSet001\Control\ComputerName\ComputerName")
            .unwrap()
            .unwrap();
        assert_eq!(
            cn.value("ComputerName")
                .unwrap()
                .unwrap()
                .as_string()
                .as_deref(),
            Some("WIN-TEST")
        );
        let svc = hive
            .open_path(r"\ControlSet001\Services\viostor\")
            .unwrap()
            .unwrap();
        assert_eq!(svc.value("Start").unwrap().unwrap().as_dword(), Some(0));
        assert_eq!(svc.value("TYPE").unwrap().unwrap().as_dword(), Some(1));
        let img = svc.value("ImagePath").unwrap().unwrap();
        assert_eq!(img.kind, ValueType::ExpandSz);
        assert_eq!(
            img.as_string().as_deref(),
            Some(r"\SystemRoot\System32\drivers\viostor.sys")
        );
        assert_eq!(
            svc.value("").unwrap().unwrap().as_string().as_deref(),
            Some("default \"quoted\" \\ value")
        );
        assert!(svc.value("missing").unwrap().is_none());
        assert_eq!(svc.class_name().unwrap(), None);
        assert_eq!(svc.last_written().0, 0x01d0_0000_0000_0000);
        assert_eq!(
            svc.security_descriptor().unwrap(),
            [
                1, 0, 4, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        let jd = hive
            .open_path(r"ControlSet001\Control\Lsa\JD")
            .unwrap()
            .unwrap();
        assert_eq!(jd.class_name().unwrap().as_deref(), Some("cdebfed5"));

        let types = hive.open_path("Types").unwrap().unwrap();
        let v = |n: &str| types.value(n).unwrap().unwrap();
        assert_eq!(v("none").data, b"");
        assert_eq!(v("none-data").data, [1, 2, 3]);
        assert_eq!(v("binary").data, (0..100u8).collect::<Vec<_>>());
        assert_eq!(v("dword-be").as_dword(), Some(0x102));
        assert_eq!(v("link").kind, ValueType::Link);
        assert_eq!(v("multi").as_multi_string().unwrap(), ["a", "bé", "c"]);
        assert_eq!(v("reslist").kind, ValueType::ResourceList);
        assert_eq!(v("fullres").data, [9; 12]);
        assert_eq!(v("reqlist").kind.raw(), 10);
        assert_eq!(v("qword").as_qword(), Some(0x0102_0304_0506_0708));
        assert_eq!(v("devprop").kind, ValueType::Other(0xffff_0012));
        assert_eq!(v("bcd").kind.raw(), 0x1000_0001);
        assert_eq!(v("short-sz").as_string().as_deref(), Some("\u{6261}"));
        assert_eq!(v("odd-dword").as_dword(), None);
        let big = v("big");
        assert_eq!(big.data.len(), 40_000);
        assert!(
            big.data
                .iter()
                .enumerate()
                .all(|(i, &b)| usize::from(b) == i % 251)
        );
        assert_eq!(v("exactly-16344").data, vec![0x5a; 16344]);
        assert_eq!(v("ünïcode VÄRDE ✓").as_string().as_deref(), Some("✓"));
        assert_eq!(types.values().unwrap().len(), 17);
        assert_eq!(types.value_count(), 17);
    }
}

#[test]
fn big_data_in_version_1_3_is_one_cell() {
    let data = vec![7u8; 20_000];
    let hive = Hive::from_bytes(
        HiveBuilder::new()
            .minor_version(3)
            .value("K", "v", ValueType::Binary, &data)
            .build(),
    )
    .unwrap();
    assert_eq!(
        hive.open_path("K")
            .unwrap()
            .unwrap()
            .value("v")
            .unwrap()
            .unwrap()
            .data,
        data
    );
}

#[test]
fn export_matches_structure_and_parses_with_regashii() {
    let hive = Hive::from_bytes(rich_builder().build()).unwrap();
    let prefix = r"HKEY_LOCAL_MACHINE\SYSTEM";
    let reg = hive.root().unwrap().export_reg(prefix).unwrap();
    assert!(
        reg.starts_with("Windows Registry Editor Version 5.00\n\n[HKEY_LOCAL_MACHINE\\SYSTEM]\n")
    );
    assert!(reg.contains("\n[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]\n"));
    assert!(reg.contains("\"Start\"=dword:00000000\n"));
    assert!(reg.contains("@=\"default \\\"quoted\\\" \\\\ value\"\n"));
    assert!(reg.contains("\"qword\"=hex(b):08,07,06,05,04,03,02,01\n"));
    assert!(reg.contains("\"devprop\"=hex(ffff0012):78,00,00,00\n"));
    assert!(
        reg.lines()
            .all(|l| l.chars().count() <= 80 || !l.contains("hex"))
    );
    // Everything our parser reads comes back from the text.
    assert_eq!(parse_reg(&reg, prefix), our_tree(&hive));

    // regashii reads it too (without the value types over 0xff, which it cannot represent).
    let filtered: String = reg
        .split('\n')
        .filter(|l| !l.starts_with("\"devprop\"") && !l.starts_with("\"bcd\""))
        .collect::<Vec<_>>()
        .join("\n");
    let parsed = regashii::Registry::deserialize(&filtered).unwrap();
    let viostor = &parsed.keys()
        [&regashii::KeyName::new(r"HKEY_LOCAL_MACHINE\SYSTEM\ControlSet001\Services\viostor")];
    assert_eq!(
        viostor.values()[&regashii::ValueName::named("Start")],
        regashii::Value::Dword(0)
    );
    assert_eq!(
        viostor.values()[&regashii::ValueName::Default],
        regashii::Value::Sz("default \"quoted\" \\ value".to_owned())
    );
    let types = &parsed.keys()[&regashii::KeyName::new(r"HKEY_LOCAL_MACHINE\SYSTEM\Types")];
    assert_eq!(
        types.values()[&regashii::ValueName::named("qword")],
        regashii::Value::Qword(0x0102_0304_0506_0708)
    );
    assert_eq!(parsed.keys().len(), our_tree(&hive).len());

    // A subtree export starts at the key given.
    let sub = hive.open_path(r"ControlSet001\Services").unwrap().unwrap();
    let text = sub.export_reg(r"HKLM\S\Services").unwrap();
    assert_eq!(
        text,
        "Windows Registry Editor Version 5.00\n\n[HKLM\\S\\Services]\n\n[HKLM\\S\\Services\\viostor]\n\
         \"Start\"=dword:00000000\n\"Type\"=dword:00000001\n\"ImagePath\"=hex(2):5c,00,53,00,79,00,\
         73,00,74,00,65,00,6d,00,52,00,6f,00,6f,00,\\\n  74,00,5c,00,53,00,79,00,73,00,74,00,65,00,\
         6d,00,33,00,32,00,5c,00,64,00,72,\\\n  00,69,00,76,00,65,00,72,00,73,00,5c,00,76,00,69,00,\
         6f,00,73,00,74,00,6f,00,\\\n  72,00,2e,00,73,00,79,00,73,00,00,00\n\"Group\"=\"SCSI miniport\"\n\
         @=\"default \\\"quoted\\\" \\\\ value\"\n"
    );
}

#[test]
fn hivex_reads_our_hives_like_we_do() {
    if !tool("hivexregedit") || !tool("hivexsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (i, lists) in [ListKind::Lh, ListKind::Lf, ListKind::Li, ListKind::Ri(7)]
        .into_iter()
        .enumerate()
    {
        let bytes = rich_builder().lists(lists).build();
        let path = dir.path().join(format!("hive{i}"));
        std::fs::write(&path, &bytes).unwrap();
        // hivexsh accepts the file and lists the root.
        let script = dir.path().join("script");
        std::fs::write(&script, "ls\n").unwrap();
        let out = Command::new("hivexsh")
            .arg("-f")
            .arg(&script)
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lists:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .collect::<Vec<_>>(),
            ["ControlSet001", "Many", "Select", "Types", "Ünïcode ключ"]
        );
        let prefix = r"HKEY_LOCAL_MACHINE\SYSTEM";
        let theirs = parse_reg(&hivex_export(&path, prefix), prefix);
        let hive = Hive::from_bytes(bytes).unwrap();
        assert_eq!(theirs, our_tree(&hive), "{lists:?}");
    }
}

#[test]
fn hivex_merge_into_our_minimal_hive() {
    if !tool("hivexregedit") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("SYSTEM");
    std::fs::write(&path, HiveBuilder::new().build()).unwrap();
    let mut reg = String::from("Windows Registry Editor Version 5.00\n\n");
    // hivexregedit creates a key only below an existing parent.
    for k in ["ControlSet001", r"ControlSet001\Services", "Many"] {
        reg.push_str(&format!("[HKEY_LOCAL_MACHINE\\SYSTEM\\{k}]\n\n"));
    }
    reg.push_str("[HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\viostor]\n");
    reg.push_str("\"Start\"=dword:00000000\n\"Type\"=dword:00000001\n");
    reg.push_str("\"ImagePath\"=hex(2):5c,00,61,00,00,00\n\"Group\"=\"SCSI miniport\"\n");
    reg.push_str(
        "@=\"default\"\n\"bin\"=hex:01,02,03\n\"none\"=hex(0):\n\"be\"=hex(5):00,00,00,01\n",
    );
    reg.push_str("\"link\"=hex(6):61,00\n\"multi\"=hex(7):61,00,00,00,62,00,00,00,00,00\n");
    reg.push_str("\"res\"=hex(8):01\n\"full\"=hex(9):02\n\"req\"=hex(a):03\n");
    reg.push_str("\"q\"=hex(b):01,00,00,00,00,00,00,00\n\"dev\"=hex(ffff0012):61,00,00,00\n");
    let big: Vec<String> = (0..20_000u32).map(|i| format!("{:02x}", i % 256)).collect();
    reg.push_str(&format!("\"big\"=hex:{}\n", big.join(",")));
    for i in 0..300 {
        reg.push_str(&format!(
            "\n[HKEY_LOCAL_MACHINE\\SYSTEM\\Many\\K{i:04}]\n\"i\"=dword:{i:08x}\n"
        ));
    }
    let regfile = dir.path().join("in.reg");
    std::fs::write(&regfile, &reg).unwrap();
    let out = Command::new("hivexregedit")
        .args(["--merge", "--prefix", r"HKEY_LOCAL_MACHINE\SYSTEM"])
        .arg(&path)
        .arg(&regfile)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    let hive = Hive::from_bytes(bytes).unwrap();
    let svc = hive
        .open_path(r"ControlSet001\Services\viostor")
        .unwrap()
        .unwrap();
    assert_eq!(svc.value("start").unwrap().unwrap().as_dword(), Some(0));
    assert_eq!(
        svc.value("Group").unwrap().unwrap().as_string().as_deref(),
        Some("SCSI miniport")
    );
    assert_eq!(
        svc.value("").unwrap().unwrap().as_string().as_deref(),
        Some("default")
    );
    assert_eq!(
        svc.value("multi")
            .unwrap()
            .unwrap()
            .as_multi_string()
            .unwrap(),
        ["a", "b"]
    );
    assert_eq!(svc.value("be").unwrap().unwrap().as_dword(), Some(1));
    assert_eq!(svc.value("q").unwrap().unwrap().as_qword(), Some(1));
    assert_eq!(
        svc.value("dev").unwrap().unwrap().kind,
        ValueType::Other(0xffff_0012)
    );
    let big = svc.value("big").unwrap().unwrap().data;
    assert_eq!(big.len(), 20_000);
    assert!(
        big.iter()
            .enumerate()
            .all(|(i, &b)| usize::from(b) == i % 256)
    );
    assert_eq!(
        hive.open_path("Many")
            .unwrap()
            .unwrap()
            .subkeys()
            .unwrap()
            .len(),
        300
    );
    assert_eq!(
        hive.open_path(r"Many\k0299")
            .unwrap()
            .unwrap()
            .value("i")
            .unwrap()
            .unwrap()
            .as_dword(),
        Some(299)
    );
    let prefix = r"HKEY_LOCAL_MACHINE\SYSTEM";
    let theirs = parse_reg(&hivex_export(&path, prefix), prefix);
    assert_eq!(theirs, our_tree(&hive));
    assert_eq!(
        parse_reg(&hive.root().unwrap().export_reg(prefix).unwrap(), prefix),
        theirs
    );
}

/// The SYSTEM hive shipped in the tests of dissect.regf 3.14 (AGPL: fetched at test time into
/// ~/.cache/rehost/fixtures, never committed).
pub(crate) fn real_system_hive() -> Option<(PathBuf, Vec<u8>)> {
    let home = std::env::var_os("HOME")?;
    let dir = Path::new(&home).join(".cache/rehost/fixtures/dissect-regf-3.14");
    let path = dir.join("SYSTEM");
    if !path.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        let sh = format!(
            "set -e; cd '{d}'; pip download --quiet --no-deps --no-binary :all: dissect-regf==3.14 -d . \
             && tar xzf dissect_regf-3.14.tar.gz dissect_regf-3.14/tests/_data/SYSTEM.gz \
             && gzip -dc dissect_regf-3.14/tests/_data/SYSTEM.gz > SYSTEM.tmp && mv SYSTEM.tmp SYSTEM",
            d = dir.display()
        );
        let ok = Command::new("sh")
            .args(["-c", &sh])
            .status()
            .is_ok_and(|s| s.success());
        if !ok || !path.exists() {
            println!("skipping: could not fetch dissect-regf==3.14 with pip");
            return None;
        }
    }
    let bytes = std::fs::read(&path).ok()?;
    Some((path, bytes))
}

#[test]
fn real_system_hive_matches_hivex() {
    let Some((path, bytes)) = real_system_hive() else {
        return;
    };
    let hive = Hive::from_bytes(bytes).unwrap();
    assert!(!hive.is_dirty());
    assert_eq!(hive.base_block().primary_sequence, 0xe4);
    assert_eq!(hive.base_block().secondary_sequence, 0xe4);
    let root = hive.root().unwrap();
    assert_eq!(root.name(), "ROOT");
    assert_eq!(root.subkeys().unwrap().len(), 17);
    // Self-relative descriptors start with revision 1 and have SE_SELF_RELATIVE set.
    let sd = root.security_descriptor().unwrap();
    assert_eq!(sd[0], 1);
    assert_eq!(u16::from_le_bytes([sd[2], sd[3]]) & 0x8000, 0x8000);
    let cn = hive
        .open_path(r"ControlSet001\Control\ComputerName\ComputerName")
        .unwrap()
        .unwrap();
    let name = cn
        .value("ComputerName")
        .unwrap()
        .unwrap()
        .as_string()
        .unwrap();
    println!("computer name: {name}");
    assert!(!name.is_empty());
    let current = hive
        .open_path("Select")
        .unwrap()
        .unwrap()
        .value("Current")
        .unwrap()
        .unwrap();
    assert_eq!(current.as_dword(), Some(1));
    let lsa = hive
        .open_path(r"ControlSet001\Control\Lsa")
        .unwrap()
        .unwrap();
    assert_eq!(
        lsa.subkey("jd")
            .unwrap()
            .unwrap()
            .class_name()
            .unwrap()
            .as_deref(),
        Some("cdebfed5")
    );
    assert_eq!(
        lsa.subkey("Skew1")
            .unwrap()
            .unwrap()
            .class_name()
            .unwrap()
            .as_deref(),
        Some("7db4e11c")
    );
    for (svc, start, ty) in [("Tcpip", 0, 1), ("disk", 0, 1), ("EventLog", 2, 0x20)] {
        let k = hive
            .open_path(&format!(r"ControlSet001\Services\{svc}"))
            .unwrap()
            .unwrap_or_else(|| panic!("{svc}"));
        let got = (
            k.value("Start").unwrap().unwrap().as_dword(),
            k.value("Type").unwrap().unwrap().as_dword(),
        );
        println!("{svc}: start/type {got:?}");
        assert_eq!(got, (Some(start), Some(ty)), "{svc}");
    }
    let ours = our_tree(&hive);
    let keys = ours.len();
    let values: usize = ours.values().map(Vec::len).sum();
    println!("real SYSTEM: {keys} keys, {values} values");

    if !tool("hivexregedit") {
        return;
    }
    let prefix = r"HKEY_LOCAL_MACHINE\SYSTEM";
    let theirs = parse_reg(&hivex_export(&path, prefix), prefix);
    assert_eq!(theirs.len(), keys);
    assert_eq!(theirs.values().map(Vec::len).sum::<usize>(), values);
    let diff: Vec<&String> = ours
        .keys()
        .filter(|k| ours.get(*k) != theirs.get(*k))
        .take(5)
        .collect();
    assert!(diff.is_empty(), "keys differing from hivex: {diff:?}");
    // Our own export reads back to the same tree.
    let text = root.export_reg(prefix).unwrap();
    assert_eq!(parse_reg(&text, prefix), ours);
}

/// Patches `bytes` at hive-bins-relative cell `off` + `at` (inside the cell data).
fn patch(bytes: &mut [u8], cell: u32, at: usize, new: &[u8]) {
    let p = 4096 + cell as usize + 4 + at;
    bytes[p..p + new.len()].copy_from_slice(new);
}

fn corrupt_err(r: crate::Result<impl std::fmt::Debug>) -> (&'static str, u64, String) {
    match r {
        Err(Error::Corrupt(c)) => (c.structure(), c.offset(), c.detail().to_owned()),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[test]
fn corrupt_structures_name_cell_and_offset() {
    let good = HiveBuilder::new()
        .value("K", "v", ValueType::Binary, &[1, 2, 3, 4, 5, 6])
        .value("K", "big", ValueType::Binary, &[3; 20_000])
        .key(r"K\A")
        .key(r"K\B")
        .build();
    let hive = Hive::from_bytes(good.clone()).unwrap();
    let k = hive.open_path("K").unwrap().unwrap();
    let k_off = k.offset();
    let list_off = u32::from_le_bytes(
        good[4096 + k_off as usize + 4 + 28..][..4]
            .try_into()
            .unwrap(),
    );
    let vlist_off = u32::from_le_bytes(
        good[4096 + k_off as usize + 4 + 40..][..4]
            .try_into()
            .unwrap(),
    );
    let vk_off = u32::from_le_bytes(
        good[4096 + vlist_off as usize + 4..][..4]
            .try_into()
            .unwrap(),
    );
    let big_off = u32::from_le_bytes(
        good[4096 + vlist_off as usize + 8..][..4]
            .try_into()
            .unwrap(),
    );
    let open = |b: &[u8]| Hive::from_bytes(b.to_vec()).unwrap();

    // nk signature.
    let mut b = good.clone();
    patch(&mut b, k_off, 0, b"xx");
    let h = open(&b);
    let (s, off, d) = corrupt_err(h.open_path("K"));
    assert_eq!((s, off), ("nk cell", 4096 + u64::from(k_off)));
    assert_eq!(d, "signature [78, 78] is not \"nk\"");
    // nk name length past the cell.
    let mut b = good.clone();
    patch(&mut b, k_off, 72, &500u16.to_le_bytes());
    assert!(
        corrupt_err(open(&b).open_path("K"))
            .2
            .starts_with("name length 500 runs past")
    );
    // subkey count disagreeing with the list.
    let mut b = good.clone();
    patch(&mut b, k_off, 20, &3u32.to_le_bytes());
    let h = open(&b);
    let (s, off, d) = corrupt_err(h.open_path("K").unwrap().unwrap().subkeys());
    assert_eq!((s, off), ("subkey list", 4096 + u64::from(list_off)));
    assert_eq!(d, "lists 2 subkeys, the key node says 3");
    let mut b = good.clone();
    patch(&mut b, k_off, 20, &1u32.to_le_bytes());
    let h = open(&b);
    assert!(
        corrupt_err(h.open_path("K").unwrap().unwrap().subkeys())
            .2
            .contains("more subkeys")
    );
    // a list naming one key node twice, and a count no hive of this size can hold.
    let mut b = good.clone();
    let first = &good[4096 + list_off as usize + 8..][..4];
    patch(&mut b, list_off, 12, first);
    let h = open(&b);
    let (s, _, d) = corrupt_err(h.open_path("K").unwrap().unwrap().subkeys());
    assert_eq!(s, "subkey list");
    assert!(d.ends_with("is listed twice"), "{d}");
    let mut b = good.clone();
    patch(&mut b, k_off, 20, &1_000_000u32.to_le_bytes());
    let h = open(&b);
    let d = corrupt_err(h.open_path("K").unwrap().unwrap().subkeys()).2;
    assert!(
        d.starts_with("subkey count 1000000 is more than the"),
        "{d}"
    );
    // a values list naming one value twice.
    let mut b = good.clone();
    patch(&mut b, vlist_off, 4, &vk_off.to_le_bytes());
    let (s, _, d) = corrupt_err(open(&b).open_path("K").unwrap().unwrap().values());
    assert_eq!(s, "values list");
    assert_eq!(d, format!("value {vk_off:#x} is listed twice"));
    // list signature and count.
    let mut b = good.clone();
    patch(&mut b, list_off, 0, b"zz");
    let h = open(&b);
    assert!(
        corrupt_err(h.open_path("K").unwrap().unwrap().subkeys())
            .2
            .contains("is not one of")
    );
    let mut b = good.clone();
    patch(&mut b, list_off, 2, &60000u16.to_le_bytes());
    let h = open(&b);
    assert!(
        corrupt_err(h.open_path("K").unwrap().unwrap().subkeys())
            .2
            .starts_with("60000 entries need")
    );
    // list pointing into the middle of a cell, and to a free cell.
    let mut b = good.clone();
    patch(&mut b, list_off, 4, &(k_off + 8).to_le_bytes());
    let h = open(&b);
    assert!(
        corrupt_err(h.open_path(r"K\A"))
            .2
            .ends_with("is not the start of a cell")
    );
    // a loop: K lists itself, which walk() reports instead of recursing.
    let mut b = good.clone();
    patch(&mut b, list_off, 4, &k_off.to_le_bytes());
    let h = open(&b);
    let (s, _, d) = corrupt_err(h.root().unwrap().walk(|_, _| Ok(())));
    assert_eq!(s, "nk cell");
    assert!(d.contains("reached twice"), "{d}");
    // offsets outside the bins.
    let mut b = good.clone();
    patch(&mut b, k_off, 28, &0x7fff_0000u32.to_le_bytes());
    let h = open(&b);
    assert!(corrupt_err(h.open_path(r"K\A")).2.contains("outside the"));
    // values list too short for the count.
    let mut b = good.clone();
    patch(&mut b, k_off, 36, &50u32.to_le_bytes());
    let h = open(&b);
    let (s, _, d) = corrupt_err(h.open_path("K").unwrap().unwrap().values());
    assert_eq!(s, "values list");
    assert!(d.starts_with("50 entries need 200 bytes"), "{d}");
    // vk signature, name length, data size, inline size.
    let mut b = good.clone();
    patch(&mut b, vk_off, 0, b"nk");
    let (s, off, _) = corrupt_err(open(&b).open_path("K").unwrap().unwrap().values());
    assert_eq!((s, off), ("vk cell", 4096 + u64::from(vk_off)));
    let mut b = good.clone();
    patch(&mut b, vk_off, 2, &900u16.to_le_bytes());
    assert!(
        corrupt_err(open(&b).open_path("K").unwrap().unwrap().values())
            .2
            .contains("runs past")
    );
    let mut b = good.clone();
    patch(&mut b, vk_off, 4, &600u32.to_le_bytes());
    let (s, _, d) = corrupt_err(open(&b).open_path("K").unwrap().unwrap().values());
    assert_eq!(s, "value data cell");
    assert!(d.starts_with("data size 600 is more than"), "{d}");
    let mut b = good.clone();
    patch(&mut b, vk_off, 4, &0x8000_0005u32.to_le_bytes());
    assert_eq!(
        corrupt_err(open(&b).open_path("K").unwrap().unwrap().values()).2,
        "inline data size 5 is over 4"
    );
    let mut b = good.clone();
    patch(&mut b, vk_off, 4, &0x7fff_0000u32.to_le_bytes());
    assert!(
        corrupt_err(open(&b).open_path("K").unwrap().unwrap().values())
            .2
            .contains("over the limit")
    );
    // big data: signature and too few segments.
    let db_off = u32::from_le_bytes(
        good[4096 + big_off as usize + 4 + 8..][..4]
            .try_into()
            .unwrap(),
    );
    let mut b = good.clone();
    patch(&mut b, db_off, 0, b"dx");
    assert_eq!(
        corrupt_err(open(&b).open_path("K").unwrap().unwrap().value("big")).0,
        "db cell"
    );
    let mut b = good.clone();
    patch(&mut b, db_off, 2, &1u16.to_le_bytes());
    assert_eq!(
        corrupt_err(open(&b).open_path("K").unwrap().unwrap().value("big")).2,
        "1 segments cannot hold 20000 bytes (need 2)"
    );
    // root offset pointing nowhere.
    let mut b = good.clone();
    b[36..40].copy_from_slice(&8u32.to_le_bytes());
    crate::base_block::tests::fix_checksum(&mut b);
    assert_eq!(corrupt_err(open(&b).root()).0, "nk cell");
    // truncated file.
    let (s, off, _) = corrupt_err(Hive::from_bytes(good[..good.len() - 4096].to_vec()));
    assert_eq!((s, off), ("base block", 40));
    // oversized file.
    assert!(matches!(
        Hive::from_bytes(vec![0; crate::MAX_HIVE_SIZE + 1]),
        Err(Error::Unsupported(_))
    ));
    // too deep a path.
    let deep = vec!["a"; crate::MAX_KEY_DEPTH + 1].join("\\");
    assert!(matches!(hive.open_path(&deep), Err(Error::Usage(_))));
}

#[test]
fn dirty_hives_are_refused_or_read_on_request() {
    let bytes = HiveBuilder::new()
        .sequence(1234, 1233)
        .value("K", "v", ValueType::Dword, &[1, 0, 0, 0])
        .build();
    let err = Hive::from_bytes(bytes.clone()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hive SYSTEM has pending log data (sequence 1234 != 1233); replay it by booting Windows \
         once or supply the .LOG1/.LOG2 files"
    );
    let d = err.as_dirty().unwrap();
    assert_eq!((d.primary_sequence(), d.secondary_sequence()), (1234, 1233));
    assert_eq!(d.reason(), DirtyReason::SequenceMismatch);
    assert_eq!(d.hive_name(), "SYSTEM");
    let hive = HiveOptions::new().allow_dirty(true).open(bytes).unwrap();
    assert!(hive.is_dirty());
    assert!(hive.was_dirty());
    assert_eq!(
        hive.open_path("K")
            .unwrap()
            .unwrap()
            .value("v")
            .unwrap()
            .unwrap()
            .as_dword(),
        Some(1)
    );

    assert_eq!(
        format!("{:?}", HiveOptions::new().logs(Some(vec![0; 10]), None)),
        "HiveOptions { allow_dirty: false, log1_len: Some(10), log2_len: None }"
    );
    let err = HiveOptions::new()
        .logs(None, Some(vec![0; crate::MAX_HIVE_SIZE + 1]))
        .open(HiveBuilder::new().build())
        .unwrap_err();
    assert!(
        err.to_string().starts_with("unsupported LOG2 size: "),
        "{err}"
    );
    let mut bad_sum = HiveBuilder::new().build();
    bad_sum[508] ^= 0xff;
    let err = Hive::from_bytes(bad_sum).unwrap_err();
    assert_eq!(err.as_dirty().unwrap().reason(), DirtyReason::BadChecksum);
    assert!(err.to_string().contains("base block checksum is wrong"));
}

/// Old and new versions of the same hive, same layout (the value changes in place) plus a third
/// that grows.
fn log_fixture() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let old = HiveBuilder::new()
        .value("K", "v", ValueType::Dword, &[1, 0, 0, 0])
        .build();
    let new = HiveBuilder::new()
        .value("K", "v", ValueType::Dword, &[2, 0, 0, 0])
        .build();
    let mut grown = HiveBuilder::new().value("K", "v", ValueType::Dword, &[2, 0, 0, 0]);
    grown.root_mut().path_mut("Grown").values.push(Value {
        name: "blob".into(),
        kind: ValueType::Binary,
        data: vec![9; 9000],
    });
    (old, new, grown.build())
}

fn bins_size(h: &[u8]) -> u32 {
    u32::from_le_bytes(h[40..44].try_into().unwrap())
}

fn dirty_primary(old: &[u8]) -> Vec<u8> {
    let mut p = old.to_vec();
    p[4..8].copy_from_slice(&6u32.to_le_bytes());
    p[8..12].copy_from_slice(&5u32.to_le_bytes());
    crate::base_block::tests::fix_checksum(&mut p);
    p
}

#[test]
fn log_replay_applies_verified_entries_in_order() {
    let (old, new, grown) = log_fixture();
    assert_eq!(old.len(), new.len());
    let primary = dirty_primary(&old);
    let e6 = log_entry(6, bins_size(&new), &[(0, &new[4096..])]);
    let e7 = log_entry(7, bins_size(&grown), &[(0, &grown[4096..])]);
    let stale = log_entry(4, bins_size(&old), &[(0, &old[4096..])]);

    // One entry in LOG1.
    let log1 = log_file(&primary, &[stale.clone(), e6.clone()]);
    let hive = Hive::open_with_logs(primary.clone(), Some(log1), None).unwrap();
    assert!(hive.was_dirty());
    assert!(!hive.is_dirty());
    assert_eq!(hive.replayed_log_entries(), 1);
    assert_eq!(hive.base_block().primary_sequence, 6);
    assert_eq!(hive.base_block().secondary_sequence, 6);
    assert_eq!(
        hive.open_path("K")
            .unwrap()
            .unwrap()
            .value("v")
            .unwrap()
            .unwrap()
            .as_dword(),
        Some(2)
    );

    // Entries split over both logs, given out of order, and growing the hive.
    let log1 = log_file(&primary, std::slice::from_ref(&e7));
    let log2 = log_file(&primary, std::slice::from_ref(&e6));
    let hive = Hive::open_with_logs(primary.clone(), Some(log1), Some(log2)).unwrap();
    assert_eq!(hive.replayed_log_entries(), 2);
    assert_eq!(hive.base_block().hive_bins_data_size, bins_size(&grown));
    assert_eq!(
        hive.open_path("Grown")
            .unwrap()
            .unwrap()
            .value("blob")
            .unwrap()
            .unwrap()
            .data,
        vec![9; 9000]
    );

    // A gap stops replay: 6 applies, 8 does not.
    let e8 = log_entry(8, bins_size(&grown), &[(0, &grown[4096..])]);
    let hive = Hive::open_with_logs(
        primary.clone(),
        Some(log_file(&primary, &[e6.clone(), e8])),
        None,
    )
    .unwrap();
    assert_eq!(hive.replayed_log_entries(), 1);
    assert!(hive.open_path("Grown").unwrap().is_none());

    // A damaged entry (hash mismatch) is not applied, so the hive stays dirty.
    let mut bad = e6.clone();
    bad[600] ^= 1;
    let err =
        Hive::open_with_logs(primary.clone(), Some(log_file(&primary, &[bad])), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("supplied .LOG1/.LOG2 files hold no verified entries"),
        "{err}"
    );

    // A clean hive ignores its logs.
    let hive = Hive::open_with_logs(
        old.clone(),
        Some(log_file(&old, std::slice::from_ref(&e6))),
        None,
    )
    .unwrap();
    assert_eq!(hive.replayed_log_entries(), 0);
    assert_eq!(
        hive.open_path("K")
            .unwrap()
            .unwrap()
            .value("v")
            .unwrap()
            .unwrap()
            .as_dword(),
        Some(1)
    );

    // A bad primary checksum takes the base block from the log.
    let mut broken = primary.clone();
    broken[508] ^= 0xff;
    let log1 = log_file(&primary, &[e6]);
    let hive = Hive::open_with_logs(broken, Some(log1), None).unwrap();
    assert_eq!(hive.replayed_log_entries(), 1);
    assert!(hive.base_block().checksum_ok);
}

#[test]
fn old_format_log_replay() {
    let (old, new, grown) = log_fixture();
    let primary = dirty_primary(&old);
    // Only the pages that differ are logged.
    let differing: Vec<usize> = (0..(new.len() - 4096) / 512)
        .filter(|p| old[4096 + p * 512..][..512] != new[4096 + p * 512..][..512])
        .collect();
    assert!(!differing.is_empty());
    let log = old_log_file(&new, 6, &differing);
    let hive = Hive::open_with_logs(primary.clone(), Some(log.clone()), None).unwrap();
    assert_eq!(hive.replayed_log_entries(), 1);
    assert!(!hive.is_dirty());
    assert_eq!(hive.base_block().primary_sequence, 6);
    assert_eq!(
        hive.open_path("K")
            .unwrap()
            .unwrap()
            .value("v")
            .unwrap()
            .unwrap()
            .as_dword(),
        Some(2)
    );
    // A grown hive: every page of the new bins.
    let all: Vec<usize> = (0..(grown.len() - 4096) / 512).collect();
    let hive =
        Hive::open_with_logs(primary.clone(), None, Some(old_log_file(&grown, 6, &all))).unwrap();
    assert_eq!(
        hive.open_path("Grown")
            .unwrap()
            .unwrap()
            .value("blob")
            .unwrap()
            .unwrap()
            .data,
        vec![9; 9000]
    );

    // A log of another write (timestamp differs), unequal sequence numbers, a bad checksum or
    // missing pages is not used.
    let mut other_time = log.clone();
    other_time[12] ^= 1;
    crate::base_block::tests::fix_checksum(&mut other_time);
    let mut unequal = log.clone();
    unequal[8] ^= 1;
    crate::base_block::tests::fix_checksum(&mut unequal);
    let mut bad_sum = log.clone();
    bad_sum[508] ^= 1;
    let short = log[..log.len() - 1].to_vec();
    let mut no_dirt = log.clone();
    no_dirt[512] = b'X';
    for bad in [other_time, unequal, bad_sum, short, no_dirt] {
        let err = Hive::open_with_logs(primary.clone(), Some(bad), None).unwrap_err();
        assert!(err.as_dirty().is_some(), "{err}");
    }
}

/// A fixed-seed xorshift PRNG for deterministic mutations.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
}

pub(crate) fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.below(5) {
        0 => m.truncate(rng.below(seed.len() + 1)),
        _ => {
            for _ in 0..=rng.below(8) {
                // Aim at the base block, the first bin's header and cells, or anywhere.
                let at = match rng.below(3) {
                    0 => rng.below(512.min(m.len())),
                    1 => 4096 + rng.below(8192.min(m.len() - 4096)),
                    _ => rng.below(m.len()),
                };
                m[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => m[at].wrapping_add(1),
                    _ => u8::try_from(rng.next() & 0xff).unwrap(),
                };
            }
            // Keep the base block checksum right half the time so deeper code is reached.
            if rng.below(2) == 0 && m.len() >= 512 {
                crate::base_block::tests::fix_checksum(&mut m);
            }
        }
    }
    m
}

#[test]
fn fuzz_mutations_never_panic() {
    let seeds = [
        rich_builder().build(),
        rich_builder().lists(ListKind::Ri(3)).build(),
        rich_builder().lists(ListKind::Li).minor_version(3).build(),
        HiveBuilder::new().build(),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        crate::fuzzing::fuzz_hive(seed);
    }
    // REHOST_FUZZ_ITERS runs a longer campaign by hand; 1,000 by default.
    let iters: usize = std::env::var("REHOST_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for i in 0..iters {
        let seed = &seeds[i % seeds.len()];
        crate::fuzzing::fuzz_hive(&mutate(&mut rng, seed));
    }
    // Logs: mutated entries against a dirty primary.
    let (old, new, _) = log_fixture();
    let primary = dirty_primary(&old);
    let log = log_file(
        &primary,
        &[log_entry(6, bins_size(&new), &[(0, &new[4096..])])],
    );
    crate::fuzzing::fuzz_hive_with_log(&primary, &log);
    let old_log = old_log_file(&new, 6, &[0, 1, 2]);
    crate::fuzzing::fuzz_hive_with_log(&primary, &old_log);
    for i in 0..200 {
        let mut m = if i % 2 == 0 {
            log.clone()
        } else {
            old_log.clone()
        };
        let at = rng.below(m.len());
        m[at] ^= u8::try_from(rng.next() & 0xff).unwrap() | 1;
        crate::fuzzing::fuzz_hive_with_log(&primary, &m);
        crate::fuzzing::fuzz_hive_with_log(&primary, &m[..rng.below(m.len())]);
    }
}

#[test]
fn fuzz_real_hive_mutations_never_panic() {
    let Some((_, bytes)) = real_system_hive() else {
        return;
    };
    crate::fuzzing::fuzz_hive(&bytes);
    let mut rng = Rng(42);
    // Each run walks all 11 MiB; a handful keeps the test short in debug builds (the 1,000
    // mutations run on the synthetic hives above).
    for _ in 0..4 {
        crate::fuzzing::fuzz_hive(&mutate(&mut rng, &bytes));
    }
}

#[test]
fn unused_spec_builder_compiles() {
    // KeySpec is part of the testkit API: check a hand-made tree builds and reads back.
    let mut b = HiveBuilder::new();
    let mut k = KeySpec::new("Hand");
    k.subkeys.push(KeySpec::new("Child"));
    b.root_mut().subkeys.push(k);
    let hive = Hive::from_bytes(b.build()).unwrap();
    assert_eq!(
        hive.open_path(r"hand\child").unwrap().unwrap().name(),
        "Child"
    );
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        (
            "[A-Za-z0-9 _.é✓-]{0,10}",
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(2),
                Just(3),
                Just(4),
                Just(7),
                Just(11),
                Just(0xffff_0012)
            ],
            prop_oneof![
                4 => proptest::collection::vec(any::<u8>(), 0..40),
                1 => proptest::collection::vec(any::<u8>(), 16_000..20_000),
            ],
        )
            .prop_map(|(name, kind, data)| Value {
                name,
                kind: ValueType::from_raw(kind),
                data,
            })
    }

    fn key_strategy() -> impl Strategy<Value = KeySpec> {
        let leaf = (
            "[A-Za-z0-9 _.é✓-]{1,10}",
            proptest::collection::vec(value_strategy(), 0..4),
        )
            .prop_map(|(name, values)| {
                let mut k = KeySpec::new(&name);
                k.values = values;
                k
            });
        leaf.prop_recursive(3, 24, 5, |inner| {
            (
                "[A-Za-z0-9 _.é✓-]{1,10}",
                proptest::collection::vec(value_strategy(), 0..4),
                proptest::collection::vec(inner, 0..5),
            )
                .prop_map(|(name, values, subkeys)| {
                    let mut k = KeySpec::new(&name);
                    k.values = values;
                    k.subkeys = subkeys;
                    k
                })
        })
    }

    /// Drops names that collide case-insensitively, as a real hive cannot hold them.
    fn dedup(k: &mut KeySpec) {
        let mut seen = std::collections::HashSet::new();
        k.values.retain(|v| seen.insert(v.name.to_uppercase()));
        let mut seen = std::collections::HashSet::new();
        k.subkeys.retain(|s| seen.insert(s.name.to_uppercase()));
        k.subkeys.iter_mut().for_each(dedup);
    }

    fn expected(k: &KeySpec, path: &str, out: &mut Tree) {
        let mut vals: Vec<_> = k
            .values
            .iter()
            .map(|v| (v.name.clone(), v.kind.raw(), v.data.clone()))
            .collect();
        vals.sort();
        out.insert(path.to_owned(), vals);
        for s in &k.subkeys {
            let p = if path.is_empty() {
                s.name.clone()
            } else {
                format!("{path}\\{}", s.name)
            };
            expected(s, &p, out);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn built_hives_read_back_and_export_round_trips(mut root in key_strategy(), ri in any::<bool>()) {
            dedup(&mut root);
            let mut b = HiveBuilder::new().lists(if ri { ListKind::Ri(2) } else { ListKind::Lh });
            *b.root_mut() = root.clone();
            let hive = Hive::from_bytes(b.build()).unwrap();
            let mut want = BTreeMap::new();
            expected(&root, "", &mut want);
            let got = our_tree(&hive);
            prop_assert_eq!(&got, &want);
            let prefix = r"HKEY_LOCAL_MACHINE\T";
            let text = hive.root().unwrap().export_reg(prefix).unwrap();
            prop_assert_eq!(parse_reg(&text, prefix), got);
        }
    }
}
