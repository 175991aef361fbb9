//! A `.reg` diff between two states of a hive.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::error::Result;
use crate::export::{REG_HEADER, escape, write_value};
use crate::hive::Hive;
use crate::key_value::Value;
use crate::name;

/// Upper-cased form of a name or path, for case-insensitive matching.
fn upper(s: &str) -> String {
    s.chars().map(name::upcase).collect()
}

/// Every key of a hive in walk order (parents first), with its values.
struct Keys {
    order: Vec<String>,
    /// Upper-cased path → (path as stored, values).
    keys: HashMap<String, (String, Vec<Value>)>,
}

fn keys(hive: &Hive) -> Result<Keys> {
    let mut order = Vec::new();
    let mut keys = HashMap::new();
    hive.root()?.walk(|path, key| {
        let up = upper(path);
        order.push(up.clone());
        keys.insert(up, (path.to_owned(), key.values()?));
        Ok(())
    })?;
    Ok(Keys { order, keys })
}

/// A "Windows Registry Editor Version 5.00" text that turns `old` into `new` when imported
/// (by [`crate::HiveMut::apply_reg`] or regedit): `[-key]` for each deleted subtree (its topmost
/// key only), then, in the new hive's order, each added key with all its values and each
/// existing key whose values changed with the added or changed values and `"name"=-` for the
/// deleted ones. Keys and values are matched case-insensitively, like Windows does; a change in
/// the case of a name alone is not a difference. `prefix` is the full name of the hive's root
/// key, such as `HKEY_LOCAL_MACHINE\SYSTEM`. Identical hives give just the header line.
///
/// # Errors
/// As for [`crate::Key::walk`] and [`crate::Key::values`] on either hive.
pub fn diff_reg(old: &Hive, new: &Hive, prefix: &str) -> Result<String> {
    let a = keys(old)?;
    let b = keys(new)?;
    let full = |shown: &str| match (prefix.is_empty(), shown.is_empty()) {
        (_, true) => prefix.to_owned(),
        (true, false) => shown.to_owned(),
        (false, false) => format!("{prefix}\\{shown}"),
    };
    let mut out = String::from(REG_HEADER);
    out.push('\n');
    let mut deleted: HashSet<&str> = HashSet::new();
    for up in &a.order {
        if b.keys.contains_key(up) {
            continue;
        }
        let parent = up.rsplit_once('\\').map_or("", |(p, _)| p);
        let covered = deleted.contains(parent);
        deleted.insert(up);
        if covered {
            continue;
        }
        if let Some((shown, _)) = a.keys.get(up) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\n[-{}]\n", full(shown));
        }
    }
    for up in &b.order {
        let Some((shown, vals)) = b.keys.get(up) else {
            continue;
        };
        let mut lines = String::new();
        match a.keys.get(up) {
            None => {
                for v in vals {
                    write_value(&mut lines, v);
                }
            }
            Some((_, old_vals)) => {
                let before: HashMap<String, &Value> =
                    old_vals.iter().map(|v| (upper(&v.name), v)).collect();
                let after: HashSet<String> = vals.iter().map(|v| upper(&v.name)).collect();
                for v in vals {
                    match before.get(&upper(&v.name)) {
                        Some(o) if o.kind == v.kind && o.data == v.data => {}
                        _ => write_value(&mut lines, v),
                    }
                }
                for o in old_vals {
                    if !after.contains(&upper(&o.name)) {
                        if o.name.is_empty() {
                            lines.push_str("@=-\n");
                        } else {
                            let _ = writeln!(lines, "\"{}\"=-", escape(&o.name));
                        }
                    }
                }
                if lines.is_empty() {
                    continue;
                }
            }
        }
        let _ = write!(out, "\n[{}]\n", full(shown));
        out.push_str(&lines);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::HiveBuilder;
    use crate::tests::{our_tree, utf16z};
    use crate::{FileTime, ValueType};

    const P: &str = r"HKEY_LOCAL_MACHINE\SYSTEM";

    #[test]
    fn identical_hives_give_the_header_only() {
        let h = Hive::from_bytes(crate::tests::rich_builder().build()).unwrap();
        assert_eq!(diff_reg(&h, &h, P).unwrap(), format!("{REG_HEADER}\n"));
    }

    #[test]
    fn exact_text_and_round_trip() {
        let old = HiveBuilder::new()
            .value("A", "x", ValueType::Dword, &[1, 0, 0, 0])
            .value("A", "y", ValueType::Sz, &utf16z("why"))
            .value("A", "", ValueType::Sz, &utf16z("d"))
            .value("A", "Same", ValueType::Binary, &[5])
            .key(r"A\B\C")
            .key(r"A\B2")
            .key("D")
            .build();
        let mut w = Hive::from_bytes(old.clone()).unwrap().into_mut().unwrap();
        w.set_timestamp(FileTime(1));
        w.set_value("a", "X", ValueType::Dword, &[2, 0, 0, 0])
            .unwrap();
        w.delete_value("A", "y").unwrap();
        w.delete_value("A", "").unwrap();
        w.set_value("A", "z\"q", ValueType::Binary, &[9]).unwrap();
        // Same data under another case: not a change.
        w.set_value("A", "SAME", ValueType::Binary, &[5]).unwrap();
        w.delete_key(r"A\B").unwrap();
        w.create_key(r"E\F").unwrap();
        w.set_value("E", "n", ValueType::Other(0x1000_0001), &[1, 2])
            .unwrap();
        let new = w.into_hive().unwrap();
        let old = Hive::from_bytes(old).unwrap();
        let d = diff_reg(&old, &new, P).unwrap();
        assert_eq!(
            d,
            "Windows Registry Editor Version 5.00\n\
             \n[-HKEY_LOCAL_MACHINE\\SYSTEM\\A\\B]\n\
             \n[HKEY_LOCAL_MACHINE\\SYSTEM\\A]\n\"x\"=dword:00000002\n\"z\\\"q\"=hex:09\n\
             \"y\"=-\n@=-\n\
             \n[HKEY_LOCAL_MACHINE\\SYSTEM\\E]\n\"n\"=hex(10000001):01,02\n\
             \n[HKEY_LOCAL_MACHINE\\SYSTEM\\E\\F]\n"
        );
        let mut w = Hive::from_bytes(old.as_bytes().to_vec())
            .unwrap()
            .into_mut()
            .unwrap();
        w.apply_reg(&d, P).unwrap();
        assert_eq!(our_tree(&w.into_hive().unwrap()), our_tree(&new));
        // And back.
        let back = diff_reg(&new, &old, "").unwrap();
        assert!(back.contains("\n[-E]\n"), "{back}");
        assert!(back.contains("\n[A\\B\\C]\n"), "{back}");
    }
}
