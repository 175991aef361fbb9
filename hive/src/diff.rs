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
