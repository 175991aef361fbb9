//! The plan: every change a recipe will make, as data.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use guestfs::FsRead;
use inspect::report::{OsReport, Report};
use serde::{Serialize, Serializer};

use crate::overlay::Overlay;
use crate::{Error, FixContext, Recipe, Result};

/// Largest diff rendered per file, in lines of output (longer diffs are cut with a note).
const MAX_DIFF_LINES: usize = 2000;

/// Largest text content carried whole in the JSON plan; longer or binary content (an initramfs
/// is 20 to 150 MiB) is summarised by length and CRC-32, so `--json` stays readable and bounded.
const MAX_JSON_TEXT: usize = 256 * 1024;

/// Serialises bytes as a JSON string when they are short UTF-8 text, else as
/// `{"bytes": N, "crc32": "xxxxxxxx"}`.
fn ser_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    match std::str::from_utf8(b) {
        Ok(t) if t.len() <= MAX_JSON_TEXT => s.serialize_str(t),
        _ => {
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("bytes", &b.len())?;
            m.serialize_entry("crc32", &format!("{:08x}", crc32fast::hash(b)))?;
            m.end()
        }
    }
}

/// One change to the guest's files. Paths are canonical guest paths (symlinks resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Change {
    /// Replace the whole content of an existing regular file (mode, owner and labels kept).
    ReplaceFile {
        /// Guest path.
        path: String,
        /// Content before.
        #[serde(serialize_with = "ser_bytes")]
        old: Vec<u8>,
        /// Content after.
        #[serde(serialize_with = "ser_bytes")]
        new: Vec<u8>,
    },
    /// Create a regular file that does not exist.
    CreateFile {
        /// Guest path.
        path: String,
        /// Content.
        #[serde(serialize_with = "ser_bytes")]
        content: Vec<u8>,
        /// Permission bits.
        mode: u32,
    },
    /// Delete a regular file.
    DeleteFile {
        /// Guest path.
        path: String,
        /// Content before, for the report and for undo.
        #[serde(serialize_with = "ser_bytes")]
        old: Vec<u8>,
    },
    /// Rename a file within the guest (keeps inode, mode, owner and labels).
    Rename {
        /// Current path.
        from: String,
        /// New path (must not exist).
        to: String,
    },
    /// Create a symbolic link.
    Symlink {
        /// Guest path of the link.
        path: String,
        /// Link target, as stored.
        target: String,
    },
    /// Create a directory (its parent must exist or be created by an earlier change).
    Mkdir {
        /// Guest path.
        path: String,
        /// Permission bits.
        mode: u32,
    },
    /// Replace a registry hive file with an edited one (applied like [`Change::ReplaceFile`];
    /// reported as the `.reg` difference rather than as binary).
    EditHive {
        /// Guest path of the hive file.
        path: String,
        /// Hive bytes before.
        #[serde(skip)]
        old: Vec<u8>,
        /// Hive bytes after.
        #[serde(skip)]
        new: Vec<u8>,
        /// The edit as a `.reg` difference (`hive::diff_reg`), for people and `--json`.
        reg: String,
    },
}

impl Change {
    /// The path this change writes (the new path for a rename).
    #[must_use]
    pub fn path(&self) -> &str {
        match self {
            Self::ReplaceFile { path, .. }
            | Self::CreateFile { path, .. }
            | Self::DeleteFile { path, .. }
            | Self::Symlink { path, .. }
            | Self::Mkdir { path, .. }
            | Self::EditHive { path, .. } => path,
            Self::Rename { to, .. } => to,
        }
    }

    /// One line for a person.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::ReplaceFile { path, old, new } => {
                format!("edit {path} ({} -> {} bytes)", old.len(), new.len())
            }
            Self::CreateFile {
                path,
                content,
                mode,
            } => {
                format!("create {path} ({} bytes, mode {mode:o})", content.len())
            }
            Self::DeleteFile { path, old } => format!("delete {path} ({} bytes)", old.len()),
            Self::Rename { from, to } => format!("rename {from} -> {to}"),
            Self::Symlink { path, target } => format!("symlink {path} -> {target}"),
            Self::Mkdir { path, mode } => format!("mkdir {path} (mode {mode:o})"),
            Self::EditHive { path, reg, .. } => {
                let keys = reg.lines().filter(|l| l.starts_with('[')).count();
                format!("edit registry hive {path} ({keys} keys touched)")
            }
        }
    }
}

/// One recipe step's part of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedStep {
    /// The fixer's name.
    pub fixer: String,
    /// What the step will do (or why it does nothing).
    pub summary: String,
    /// The changes, in the order they must be applied.
    pub changes: Vec<Change>,
}

/// Everything a recipe will change, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The recipe's name.
    pub recipe: String,
    /// The root device of the OS the plan is for.
    pub root: String,
    /// One entry per recipe step.
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// True when no step changes anything (a fixed guest).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.steps.iter().all(|s| s.changes.is_empty())
    }

    /// All changes in order.
    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.steps.iter().flat_map(|s| s.changes.iter())
    }

    /// The stable JSON form.
    #[must_use]
    pub fn to_json(&self) -> String {
        // OK to expect: every field serialises (strings, numbers, and bytes via ser_bytes).
        serde_json::to_string_pretty(self).expect("plan serialises")
    }

    /// A human summary: each step, each change, unified diffs of text files and a list of binary
    /// files changed.
    #[must_use]
    pub fn render_human(&self) -> String {
        let mut out = format!("recipe {} for {}\n", self.recipe, self.root);
        let mut binary = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            let _ = writeln!(
                out,
                "step {}: {}: {}",
                i.saturating_add(1),
                s.fixer,
                s.summary
            );
            for c in &s.changes {
                let _ = writeln!(out, "  {}", c.describe());
                let (path, old, new): (&str, &[u8], &[u8]) = match c {
                    Change::ReplaceFile { path, old, new } => (path, old, new),
                    Change::CreateFile { path, content, .. } => (path, &[], content),
                    Change::DeleteFile { path, old } => (path, old, &[]),
                    Change::EditHive { reg, .. } => {
                        for l in reg.lines() {
                            let _ = writeln!(out, "    {l}");
                        }
                        continue;
                    }
                    _ => continue,
                };
                match (std::str::from_utf8(old), std::str::from_utf8(new)) {
                    (Ok(a), Ok(b)) => {
                        out.push_str(&crate::diff::unified(path, a, b, 3, MAX_DIFF_LINES));
                    }
                    _ => binary.push(path.to_owned()),
                }
            }
        }
        if !binary.is_empty() {
            out.push_str("binary files changed:\n");
            for b in binary {
                let _ = writeln!(out, "  {b}");
            }
        }
        if self.is_empty() {
            out.push_str("nothing to change\n");
        }
        out
    }
}

/// Per-run settings that override recipe parameters (`--net dhcp` sets `network.policy`).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Fixer name → parameters that replace the recipe's values for every step of that fixer.
    pub overrides: BTreeMap<String, toml::Table>,
}

/// Plans `recipe` for `os` (one of `report.operating_systems`) whose files `fs` holds (the
/// guest's mount tree, `/` being its root). Each step sees the changes of the earlier ones.
///
/// # Errors
/// [`Error::InvalidStep`] if a step fails [`crate::lint`] (after overrides); whatever a fixer
/// returns (guest read errors, unsupported files).
pub fn plan(
    recipe: &Recipe,
    report: &Report,
    os: &OsReport,
    fs: &dyn FsRead,
    opts: &PlanOptions,
) -> Result<Plan> {
    let mut overlay = Overlay::new(fs);
    let mut steps = Vec::with_capacity(recipe.steps.len());
    for (i, step) in recipe.steps.iter().enumerate() {
        let n = i.saturating_add(1);
        let bad = |detail: String| Error::InvalidStep {
            recipe: recipe.name.clone(),
            step: n,
            detail,
        };
        let fixer = crate::find_fixer(&step.fixer)
            .ok_or_else(|| bad(format!("no fixer named {:?}", step.fixer)))?;
        let mut table = step.params.clone();
        if let Some(o) = opts.overrides.get(&step.fixer) {
            table.extend(o.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some((_, msg)) = crate::fixers::validate_params(fixer, &table)
            .into_iter()
            .next()
        {
            return Err(bad(msg));
        }
        let params = crate::Params::new(fixer, table).with_recipe(&recipe.origin);
        let ctx = FixContext {
            fs: &overlay,
            report,
            os,
        };
        let outcome = fixer.plan(&ctx, &params)?;
        for c in &outcome.changes {
            overlay.record(c)?;
        }
        let summary = if outcome.notes.is_empty() {
            if outcome.changes.is_empty() {
                "nothing to do".to_owned()
            } else {
                format!("{} change(s)", outcome.changes.len())
            }
        } else {
            outcome.notes.join("; ")
        };
        tracing::debug!(
            fixer = fixer.name(),
            changes = outcome.changes.len(),
            "planned step"
        );
        steps.push(PlannedStep {
            fixer: fixer.name().to_owned(),
            summary,
            changes: outcome.changes,
        });
    }
    Ok(Plan {
        recipe: recipe.name.clone(),
        root: os.root.clone(),
        steps,
    })
}

#[cfg(test)]
mod tests {
    use guestfs::{FileType, FsReadExt, GuestPath};

    use super::*;
    use crate::testkit::{MemFs, SyntheticOs, synthetic_report};
    use crate::{Applier, Origin, apply};

    fn recipe(steps: &str) -> Recipe {
        let text = format!(
            "schema = 1\nname = \"t\"\ndescription = \"d\"\n[match]\nos_type = \"linux\"\n{steps}"
        );
        Recipe::parse(&text, Origin::Inline).unwrap()
    }

    #[test]
    fn new_directories_and_hive_edits_are_seen_and_applied() {
        let mut g = MemFs::new();
        g.add_file("/Windows/System32/config/SYSTEM", b"regf-old")
            .add_file("/opt/README", b"");
        let p = Plan {
            recipe: "r".into(),
            root: "/dev/sda1".into(),
            steps: vec![PlannedStep {
                fixer: "x".into(),
                summary: String::new(),
                changes: vec![
                    Change::Mkdir {
                        path: "/opt/rehost".into(),
                        mode: 0o755,
                    },
                    Change::CreateFile {
                        path: "/opt/rehost/firstboot.sh".into(),
                        content: b"#!/bin/sh".to_vec(),
                        mode: 0o755,
                    },
                    Change::EditHive {
                        path: "/Windows/System32/config/SYSTEM".into(),
                        old: b"regf-old".to_vec(),
                        new: b"regf-new".to_vec(),
                        reg: "[HKEY_LOCAL_MACHINE\\SYSTEM\\x]\n\"Start\"=dword:00000000\n".into(),
                    },
                ],
            }],
        };
        let mut o = Overlay::new(&g);
        for c in p.changes() {
            o.record(c).unwrap();
        }
        let names: Vec<_> = o
            .read_dir(&GuestPath::parse(b"/opt/rehost").unwrap())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec![b"firstboot.sh".to_vec()]);
        assert_eq!(
            o.read_file(b"/Windows/System32/config/SYSTEM", 100)
                .unwrap(),
            b"regf-new"
        );
        let human = p.render_human();
        assert!(human.contains("mkdir /opt/rehost (mode 755)"), "{human}");
        assert!(
            human.contains("edit registry hive /Windows/System32/config/SYSTEM (1 keys touched)"),
            "{human}"
        );
        assert!(human.contains("    \"Start\"=dword:00000000"), "{human}");
        assert!(!human.contains("binary files changed"), "{human}");
        assert_eq!(crate::apply(&p, &mut g).unwrap(), 3);
        assert_eq!(
            g.read_file(b"/opt/rehost/firstboot.sh", 100).unwrap(),
            b"#!/bin/sh"
        );
        assert_eq!(
            g.read_file(b"/Windows/System32/config/SYSTEM", 100)
                .unwrap(),
            b"regf-new"
        );
        // A second apply is stale: the directory exists and the hive is not what was planned.
        assert!(matches!(crate::apply(&p, &mut g), Err(Error::Stale { .. })));
    }

    #[test]
    fn overlay_shows_recorded_changes() {
        let mut g = MemFs::new();
        g.add_file("/etc/a", b"a")
            .add_file("/etc/b", b"b")
            .add_file("/etc/c", b"c");
        let mut o = Overlay::new(&g);
        for c in [
            Change::ReplaceFile {
                path: "/etc/a".into(),
                old: b"a".to_vec(),
                new: b"A!".to_vec(),
            },
            Change::DeleteFile {
                path: "/etc/b".into(),
                old: b"b".to_vec(),
            },
            Change::Rename {
                from: "/etc/c".into(),
                to: "/etc/d".into(),
            },
            Change::CreateFile {
                path: "/etc/e".into(),
                content: b"e".to_vec(),
                mode: 0o600,
            },
            Change::Symlink {
                path: "/etc/l".into(),
                target: "a".into(),
            },
        ] {
            o.record(&c).unwrap();
        }
        assert_eq!(o.read_file(b"/etc/a", 10).unwrap(), b"A!");
        assert_eq!(
            o.read_file(b"/etc/l", 10).unwrap(),
            b"A!",
            "symlink followed"
        );
        assert!(!o.exists(b"/etc/b").unwrap());
        assert!(!o.exists(b"/etc/c").unwrap());
        assert_eq!(o.read_file(b"/etc/d", 10).unwrap(), b"c");
        let e = GuestPath::parse(b"/etc/e").unwrap();
        assert_eq!(o.lstat(&e).unwrap().mode, 0o600);
        let mut names: Vec<(String, FileType)> = o
            .read_dir(&GuestPath::parse(b"/etc").unwrap())
            .unwrap()
            .into_iter()
            .map(|d| (String::from_utf8(d.name).unwrap(), d.file_type))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            names,
            vec![
                ("a".into(), FileType::Regular),
                ("d".into(), FileType::Regular),
                ("e".into(), FileType::Regular),
                ("l".into(), FileType::Symlink),
            ]
        );
    }

    #[test]
    fn a_symlinked_file_is_edited_at_its_target() {
        let mut g = MemFs::new();
        g.add_file("/etc/real-fstab", b"/dev/sda1 / ext4 defaults 0 1\n")
            .add_symlink("/etc/fstab", "real-fstab");
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
        let r = recipe("[[step]]\nfixer = \"block-device-names\"\n");
        let p = plan(
            &r,
            &rep,
            &rep.operating_systems[0],
            &g,
            &PlanOptions::default(),
        )
        .unwrap();
        let paths: Vec<&str> = p.changes().map(Change::path).collect();
        assert_eq!(paths, vec!["/etc/real-fstab"]);
    }

    #[test]
    fn overrides_are_validated_and_bad_steps_refused() {
        let g = MemFs::new();
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
        let os = &rep.operating_systems[0];
        let r = recipe("[[step]]\nfixer = \"network\"\n");
        let mut opts = PlanOptions::default();
        let mut t = toml::Table::new();
        t.insert("policy".into(), toml::Value::String("static".into()));
        opts.overrides.insert("network".into(), t);
        match plan(&r, &rep, os, &g, &opts) {
            Err(Error::InvalidStep {
                recipe,
                step,
                detail,
            }) => {
                assert_eq!((recipe.as_str(), step), ("t", 1));
                assert_eq!(detail, "policy = \"static\" is not one of preserve, dhcp");
            }
            other => panic!("{other:?}"),
        }
        let r = recipe("[[step]]\nfixer = \"caches\"\n[[step]]\nfixer = \"missing\"\n");
        let e = plan(&r, &rep, os, &g, &PlanOptions::default()).unwrap_err();
        assert_eq!(e.to_string(), "recipe t step 2: no fixer named \"missing\"");
        // Nothing to do on an empty guest.
        let r = recipe("[[step]]\nfixer = \"caches\"\n");
        let p = plan(&r, &rep, os, &g, &PlanOptions::default()).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.steps[0].summary, "nothing to do");
        assert_eq!(
            p.render_human(),
            "recipe t for /dev/sda1\nstep 1: caches: nothing to do\nnothing to change\n"
        );
    }

    #[test]
    fn json_form_and_binary_files() {
        let p = Plan {
            recipe: "r".into(),
            root: "/dev/sda1".into(),
            steps: vec![PlannedStep {
                fixer: "caches".into(),
                summary: "s".into(),
                changes: vec![
                    Change::DeleteFile {
                        path: "/bin.dat".into(),
                        old: vec![0xff, 0x00],
                    },
                    Change::Symlink {
                        path: "/l".into(),
                        target: "t".into(),
                    },
                ],
            }],
        };
        let v: serde_json::Value = serde_json::from_str(&p.to_json()).unwrap();
        let c = &v["steps"][0]["changes"];
        assert_eq!(c[0]["op"], "delete-file");
        assert_eq!(c[0]["old"]["bytes"], 2);
        assert_eq!(
            c[0]["old"]["crc32"],
            format!("{:08x}", crc32fast::hash(&[0xff, 0x00]))
        );
        assert_eq!(c[1]["op"], "symlink");
        assert_eq!(c[1]["target"], "t");
        let h = p.render_human();
        assert!(h.contains("  delete /bin.dat (2 bytes)\n"), "{h}");
        assert!(h.ends_with("binary files changed:\n  /bin.dat\n"), "{h}");
    }

    struct Failing(MemFs);
    impl guestfs::FsRead for Failing {
        fn info(&self) -> guestfs::FsInfo {
            self.0.info()
        }
        fn lstat(&self, p: &GuestPath) -> guestfs::Result<guestfs::Metadata> {
            self.0.lstat(p)
        }
        fn read_dir(&self, p: &GuestPath) -> guestfs::Result<Vec<guestfs::DirEntry>> {
            self.0.read_dir(p)
        }
        fn read_link(&self, p: &GuestPath) -> guestfs::Result<Vec<u8>> {
            self.0.read_link(p)
        }
        fn read_at(&self, p: &GuestPath, o: u64, b: &mut [u8]) -> guestfs::Result<usize> {
            self.0.read_at(p, o, b)
        }
    }
    impl Applier for Failing {
        fn replace_file(&mut self, p: &GuestPath, _: &[u8]) -> Result<()> {
            Err(Error::Usage(format!("{p}: read-only")))
        }
        fn create_file(&mut self, _: &GuestPath, _: &[u8], _: u32) -> Result<()> {
            Ok(())
        }
        fn delete_file(&mut self, _: &GuestPath) -> Result<()> {
            Ok(())
        }
        fn rename(&mut self, _: &GuestPath, _: &GuestPath) -> Result<()> {
            Ok(())
        }
        fn symlink(&mut self, _: &GuestPath, _: &[u8]) -> Result<()> {
            Ok(())
        }
        fn mkdir(&mut self, _: &GuestPath, _: u32) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn apply_names_the_failing_change() {
        let p = Plan {
            recipe: "r".into(),
            root: "/".into(),
            steps: vec![PlannedStep {
                fixer: "x".into(),
                summary: String::new(),
                changes: vec![
                    Change::CreateFile {
                        path: "/n".into(),
                        content: vec![],
                        mode: 0o644,
                    },
                    Change::ReplaceFile {
                        path: "/etc/x".into(),
                        old: b"a".to_vec(),
                        new: b"bc".to_vec(),
                    },
                ],
            }],
        };
        let mut f = MemFs::new();
        f.add_file("/etc/x", b"a");
        let e = apply(&p, &mut Failing(f)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "applying edit /etc/x (1 -> 2 bytes) failed: /etc/x: read-only"
        );
        // A guest that changed since planning is refused before the write.
        let mut g = MemFs::new();
        g.add_file("/n", b"");
        assert_eq!(
            apply(&p, &mut g).unwrap_err().to_string(),
            "stale plan at create /n (0 bytes, mode 644): the path exists now"
        );
        let mut g = MemFs::new();
        g.add_file("/etc/x", b"changed");
        assert_eq!(
            apply(&p, &mut g).unwrap_err().to_string(),
            "stale plan at edit /etc/x (1 -> 2 bytes): the file changed since planning"
        );
        assert_eq!(g.file("/n"), Some(&b""[..]), "earlier changes stay applied");
        let mut g = MemFs::new();
        g.add_dir("/etc");
        assert_eq!(
            apply(&p, &mut g).unwrap_err().to_string(),
            "stale plan at edit /etc/x (1 -> 2 bytes): the file is gone"
        );
        let mut g = MemFs::new();
        g.add_file("/etc/x", b"a");
        assert_eq!(apply(&p, &mut g).unwrap(), 2);
        assert_eq!(g.file("/etc/x"), Some(&b"bc"[..]));
        let ren = Plan {
            recipe: "r".into(),
            root: "/".into(),
            steps: vec![PlannedStep {
                fixer: "x".into(),
                summary: String::new(),
                changes: vec![Change::Rename {
                    from: "/a".into(),
                    to: "/b".into(),
                }],
            }],
        };
        let mut g = MemFs::new();
        g.add_file("/b", b"");
        assert_eq!(
            apply(&ren, &mut g).unwrap_err().to_string(),
            "stale plan at rename /a -> /b: the source is gone"
        );
        g.add_file("/a", b"");
        assert_eq!(
            apply(&ren, &mut g).unwrap_err().to_string(),
            "stale plan at rename /a -> /b: the target exists now"
        );
    }
}
