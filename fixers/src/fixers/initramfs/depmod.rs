//! Module index files for a set of modules, as depmod(8) writes them into
//! `lib/modules/KVER/`: `modules.dep` (each module with the transitive closure of its
//! dependencies, dependents before what they depend on, so modprobe loads from the end),
//! `modules.alias`, `modules.softdep`, `modules.symbols`, and the binary `.dep.bin`,
//! `.alias.bin`, `.symbols.bin` indexes (see [`super::index`]). kmod keeps soft dependencies only
//! as text.

use std::collections::{BTreeMap, BTreeSet};

use super::error::Result;
use super::index::{self, Record};
use super::modinfo::ModInfo;

/// Most dependency steps followed from one module (in-tree chains are under 10 deep).
const MAX_DEP_DEPTH: usize = 64;

/// One module: its path relative to `lib/modules/KVER` and its facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    pub(crate) path: String,
    pub(crate) info: ModInfo,
}

/// Dependencies of `name`, transitively, each listed before the modules it needs (depmod's
/// order), without `name` itself. Unknown names are skipped.
pub(crate) fn sorted_deps(name: &str, by_name: &BTreeMap<&str, &Module>) -> Vec<String> {
    // Depth-first post-order puts every dependency before its users; reversed, users come first.
    fn visit(
        n: &str,
        by_name: &BTreeMap<&str, &Module>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_DEP_DEPTH || !seen.insert(n.to_owned()) {
            return;
        }
        if let Some(m) = by_name.get(n) {
            for d in &m.info.depends {
                visit(d, by_name, seen, out, depth.saturating_add(1));
            }
            out.push(n.to_owned());
        }
    }
    let mut seen = BTreeSet::new();
    let mut post = Vec::new();
    visit(name, by_name, &mut seen, &mut post, 0);
    post.retain(|n| n != name);
    post.reverse();
    post
}

/// kmod's alias normalisation for index keys: `-` becomes `_` outside `[...]` classes; `None`
/// for an unbalanced bracket (depmod leaves such aliases out of the binary index).
pub(crate) fn normalise_alias(alias: &str) -> Option<String> {
    let mut out = String::with_capacity(alias.len());
    let mut in_class = false;
    for c in alias.chars() {
        match c {
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            ']' => return None,
            '-' if !in_class => out.push('_'),
            _ => out.push(c),
        }
    }
    (!in_class).then_some(out)
}

/// The index files for `modules` (priority = position in the slice), by file name.
///
/// # Errors
/// [`super::error::Error::Limit`] if an index would pass the format's size.
pub(crate) fn generate(modules: &[Module]) -> Result<BTreeMap<&'static str, Vec<u8>>> {
    let by_name: BTreeMap<&str, &Module> =
        modules.iter().map(|m| (m.info.name.as_str(), m)).collect();
    let mut dep = String::new();
    let mut dep_recs = Vec::new();
    let mut alias = String::from("# Aliases extracted from modules themselves.\n");
    let mut alias_recs = Vec::new();
    let mut softdep = String::from("# Soft dependencies extracted from modules themselves.\n");
    let mut symbols = String::from("# Aliases for symbols, used by symbol_request().\n");
    let mut sym_recs = Vec::new();
    for (i, m) in modules.iter().enumerate() {
        let prio = u32::try_from(i).unwrap_or(u32::MAX);
        let deps: Vec<&str> = sorted_deps(&m.info.name, &by_name)
            .iter()
            .filter_map(|d| by_name.get(d.as_str()).map(|x| x.path.as_str()))
            .collect();
        let mut line = format!("{}:", m.path);
        for d in &deps {
            line.push(' ');
            line.push_str(d);
        }
        dep.push_str(&line);
        dep.push('\n');
        dep_recs.push(Record {
            key: m.info.name.clone(),
            value: line,
            priority: prio,
        });
        for a in &m.info.aliases {
            alias.push_str(&format!("alias {a} {}\n", m.info.name));
            if let Some(k) = normalise_alias(a) {
                alias_recs.push(Record {
                    key: k,
                    value: m.info.name.clone(),
                    priority: prio,
                });
            }
        }
        for s in &m.info.softdeps {
            softdep.push_str(&format!("softdep {} {s}\n", m.info.name));
        }
        for s in &m.info.symbols {
            symbols.push_str(&format!("alias symbol:{s} {}\n", m.info.name));
            sym_recs.push(Record {
                key: format!("symbol:{s}"),
                value: m.info.name.clone(),
                priority: prio,
            });
        }
    }
    let mut out = BTreeMap::new();
    out.insert("modules.dep", dep.into_bytes());
    out.insert("modules.dep.bin", index::write(&dep_recs)?);
    out.insert("modules.alias", alias.into_bytes());
    out.insert("modules.alias.bin", index::write(&alias_recs)?);
    out.insert("modules.softdep", softdep.into_bytes());
    out.insert("modules.symbols", symbols.into_bytes());
    out.insert("modules.symbols.bin", index::write(&sym_recs)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, path: &str, deps: &[&str]) -> Module {
        Module {
            path: path.into(),
            info: ModInfo {
                name: name.into(),
                depends: deps.iter().map(|s| (*s).to_owned()).collect(),
                aliases: vec![format!("virtio:d0000000{}v*", name.len() % 10)],
                softdeps: vec![],
                symbols: vec![format!("{name}_sym")],
            },
        }
    }

    #[test]
    fn dep_order_and_files() {
        let mods = vec![
            m(
                "virtio_net",
                "kernel/drivers/net/virtio_net.ko",
                &["net_failover"],
            ),
            m(
                "net_failover",
                "kernel/drivers/net/net_failover.ko",
                &["failover"],
            ),
            m("failover", "kernel/net/core/failover.ko", &[]),
            m(
                "diamond",
                "kernel/d.ko",
                &["net_failover", "failover", "missing"],
            ),
        ];
        let by: BTreeMap<&str, &Module> = mods.iter().map(|x| (x.info.name.as_str(), x)).collect();
        assert_eq!(sorted_deps("virtio_net", &by), ["net_failover", "failover"]);
        assert_eq!(sorted_deps("diamond", &by), ["net_failover", "failover"]);
        assert!(sorted_deps("failover", &by).is_empty());
        let files = generate(&mods).unwrap();
        assert_eq!(
            String::from_utf8(files["modules.dep"].clone()).unwrap(),
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/d.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
        );
        let recs = index::read_all(&files["modules.dep.bin"]).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].key, "diamond");
        assert_eq!(recs[0].priority, 3);
        let a = String::from_utf8(files["modules.alias"].clone()).unwrap();
        assert!(a.contains("alias virtio:d00000000v* virtio_net\n"), "{a}");
        let s = index::read_all(&files["modules.symbols.bin"]).unwrap();
        assert_eq!(s[0].key, "symbol:diamond_sym");
        assert_eq!(s[0].value, "diamond");
    }

    #[test]
    fn alias_normalisation() {
        assert_eq!(
            normalise_alias("of:N*T*Cvirtio,mmio").as_deref(),
            Some("of:N*T*Cvirtio,mmio")
        );
        assert_eq!(
            normalise_alias("a-b[x-y]c-d").as_deref(),
            Some("a_b[x-y]c_d")
        );
        assert_eq!(normalise_alias("a[b"), None);
        assert_eq!(normalise_alias("a]b"), None);
    }
}
