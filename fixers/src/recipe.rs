//! Recipes: the TOML format, loading (shipped and user), matching and lint.
//!
//! ```toml
//! schema = 1
//! name = "debian"
//! description = "Debian 10 to 12 from VMware, Hyper-V or Xen"
//! [match]
//! os_type = "linux"
//! distro = ["debian"]
//! version = ">=10, <13"
//! [[step]]
//! fixer = "block-device-names"
//! [[step]]
//! fixer = "network"
//! policy = "preserve"
//! ```
//!
//! A step is the `fixer` key plus that fixer's own parameters; [`lint`] checks them against the
//! fixer's [`crate::ParamSpec`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use inspect::report::{FirmwareKind, OsReport, Report};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Version of the recipe format this library reads.
pub const RECIPE_SCHEMA: u32 = 1;
/// Largest recipe file accepted, in bytes (house style S12).
pub const MAX_RECIPE_BYTES: usize = 256 << 10;
/// Most steps in one recipe.
const MAX_STEPS: usize = 64;
/// Most recipes read from one search directory.
const MAX_DIR_RECIPES: usize = 256;
/// Longest recipe name.
const MAX_NAME_LEN: usize = 64;
/// Most comparisons in one version requirement.
const MAX_VERSION_CLAUSES: usize = 8;

mod shipped {
    include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
}

/// The texts of the shipped recipe files.
#[cfg(test)]
pub(crate) fn shipped_texts() -> impl Iterator<Item = &'static str> {
    shipped::SHIPPED.iter().map(|(_, t)| *t)
}

/// Where a recipe was loaded from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Origin {
    /// Built into the library from `recipes/<file>`.
    Shipped(&'static str),
    /// A user file on the host.
    User(PathBuf),
    /// Given as text (tests, fuzzing).
    Inline,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shipped(file) => write!(f, "recipes/{file}"),
            Self::User(p) => write!(f, "{}", p.display()),
            Self::Inline => f.write_str("<inline>"),
        }
    }
}

/// A comparison operator of a [`VersionReq`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A version requirement such as `">=7, <10"` or `"=22.04"`, over (major, minor).
///
/// A clause with only a major version compares majors only, so `"<=12"` matches 12.5 and `">=7"`
/// matches 7.0; a clause with a minor compares both. A bare version means `=`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct VersionReq {
    text: String,
    clauses: Vec<(Op, u32, Option<u32>)>,
}

impl VersionReq {
    /// Parses a requirement.
    ///
    /// # Errors
    /// A message naming the bad clause.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut clauses = Vec::new();
        for raw in text.split(',') {
            let c = raw.trim();
            if c.is_empty() {
                return Err(format!("empty clause in version requirement {text:?}"));
            }
            let (op, rest) = [
                (">=", Op::Ge),
                ("<=", Op::Le),
                ("==", Op::Eq),
                ("=", Op::Eq),
                (">", Op::Gt),
                ("<", Op::Lt),
            ]
            .iter()
            .find_map(|(p, op)| c.strip_prefix(p).map(|r| (*op, r)))
            .unwrap_or((Op::Eq, c));
            let rest = rest.trim();
            let (maj, min) = match rest.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (rest, None),
            };
            let bad = || {
                format!(
                    "version clause {c:?} is not <op><major>[.<minor>] with op one of = < <= > >="
                )
            };
            let major: u32 = maj.parse().map_err(|_| bad())?;
            let minor = match min {
                Some(m) => Some(m.parse::<u32>().map_err(|_| bad())?),
                None => None,
            };
            clauses.push((op, major, minor));
            if clauses.len() > MAX_VERSION_CLAUSES {
                return Err(format!(
                    "more than {MAX_VERSION_CLAUSES} clauses in {text:?}"
                ));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            clauses,
        })
    }

    /// True if (major, minor) satisfies every clause.
    #[must_use]
    pub fn matches(&self, major: u32, minor: u32) -> bool {
        self.clauses.iter().all(|&(op, maj, min)| {
            let ord = match min {
                Some(m) => (major, minor).cmp(&(maj, m)),
                None => major.cmp(&maj),
            };
            match op {
                Op::Eq => ord.is_eq(),
                Op::Lt => ord.is_lt(),
                Op::Le => ord.is_le(),
                Op::Gt => ord.is_gt(),
                Op::Ge => ord.is_ge(),
            }
        })
    }
}

impl TryFrom<String> for VersionReq {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<VersionReq> for String {
    fn from(v: VersionReq) -> Self {
        v.text
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The inspection facts a recipe applies to. Every given field must match; lists match when
/// any element does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `linux` or `windows`.
    pub os_type: Option<String>,
    /// libguestfs distro names (`debian`, `rhel`, `oraclelinux`, `sles`, ...).
    #[serde(default)]
    pub distro: Vec<String>,
    /// Version requirement over the OS's (major, minor).
    pub version: Option<VersionReq>,
    /// Firmware kinds: `bios`, `uefi` (a disk set up for both matches either).
    #[serde(default)]
    pub firmware: Vec<String>,
    /// Initramfs generators (`dracut`, `initramfs-tools`, `mkinitrd`).
    #[serde(default)]
    pub initramfs_generator: Vec<String>,
    /// Source hypervisor tools, any of which must be present (`open-vm-tools`, ...).
    #[serde(default)]
    pub source_tools: Vec<String>,
}

impl Match {
    /// How many constraints are given; more specific recipes win ties in [`RecipeSet::matching`].
    #[must_use]
    pub fn specificity(&self) -> usize {
        usize::from(self.os_type.is_some())
            + usize::from(!self.distro.is_empty())
            + usize::from(self.version.is_some())
            + usize::from(!self.firmware.is_empty())
            + usize::from(!self.initramfs_generator.is_empty())
            + usize::from(!self.source_tools.is_empty())
    }

    /// True if `os` (found in `report`) satisfies every constraint.
    #[must_use]
    pub fn matches(&self, report: &Report, os: &OsReport) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        let fw = match report.firmware.kind {
            FirmwareKind::Bios => vec!["bios"],
            FirmwareKind::Uefi => vec!["uefi"],
            FirmwareKind::Both => vec!["bios", "uefi", "both"],
            FirmwareKind::Unknown => vec!["unknown"],
        };
        self.os_type.as_ref().is_none_or(|t| *t == os.os_type)
            && any(&self.distro, &os.distro)
            && self
                .version
                .as_ref()
                .is_none_or(|v| v.matches(os.major_version, os.minor_version))
            && (self.firmware.is_empty() || fw.iter().any(|k| self.firmware.iter().any(|f| f == k)))
            && (self.initramfs_generator.is_empty()
                || os
                    .initramfs_generator
                    .as_ref()
                    .is_some_and(|g| any(&self.initramfs_generator, g)))
            && (self.source_tools.is_empty()
                || os
                    .hypervisor_tools
                    .iter()
                    .any(|t| self.source_tools.contains(t)))
    }
}

/// One recipe step: a fixer and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The fixer's registry name.
    pub fixer: String,
    /// Everything else in the step's table.
    pub params: toml::Table,
}

/// A loaded recipe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    /// Unique name; user recipes override shipped ones with the same name.
    pub name: String,
    /// What it is for, one or two sentences.
    pub description: String,
    /// Which guests it applies to.
    #[serde(rename = "match")]
    pub matcher: Match,
    /// Ordered steps.
    pub steps: Vec<Step>,
    /// Where it was loaded from.
    pub origin: Origin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    schema: u32,
    name: String,
    description: String,
    #[serde(rename = "match", default)]
    matcher: Match,
    #[serde(default)]
    step: Vec<toml::Table>,
}

impl Recipe {
    /// Parses and checks the structure of a recipe (not its steps' parameters: see [`lint`]).
    ///
    /// # Errors
    /// [`Error::InvalidRecipe`] for oversized text, TOML errors, unknown keys, a wrong schema,
    /// a bad name, an empty description, too many steps, or a step without a `fixer` string.
    pub fn parse(text: &str, origin: Origin) -> Result<Self> {
        let bad = |detail: String| Error::InvalidRecipe {
            origin: origin.to_string(),
            detail,
        };
        if text.len() > MAX_RECIPE_BYTES {
            return Err(bad(format!(
                "{} bytes is over the {MAX_RECIPE_BYTES}-byte limit",
                text.len()
            )));
        }
        let raw: RawRecipe = toml::from_str(text).map_err(|e| bad(e.message().to_owned()))?;
        if raw.schema != RECIPE_SCHEMA {
            return Err(bad(format!(
                "schema {} is not supported (expected {RECIPE_SCHEMA})",
                raw.schema
            )));
        }
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= MAX_NAME_LEN
            && raw.name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
            });
        if !name_ok {
            return Err(bad(format!(
                "name {:?} must be 1..={MAX_NAME_LEN} characters of a-z 0-9 - . _",
                raw.name
            )));
        }
        if raw.description.trim().is_empty() {
            return Err(bad("description is empty".into()));
        }
        if raw.step.len() > MAX_STEPS {
            return Err(bad(format!(
                "{} steps is over the limit of {MAX_STEPS}",
                raw.step.len()
            )));
        }
        let mut steps = Vec::with_capacity(raw.step.len());
        for (i, mut t) in raw.step.into_iter().enumerate() {
            let n = i.saturating_add(1);
            let fixer = match t.remove("fixer") {
                Some(toml::Value::String(s)) => s,
                Some(other) => {
                    return Err(bad(format!(
                        "step {n}: fixer must be a string, not {}",
                        other.type_str()
                    )));
                }
                None => return Err(bad(format!("step {n} has no fixer"))),
            };
            steps.push(Step { fixer, params: t });
        }
        Ok(Self {
            name: raw.name,
            description: raw.description,
            matcher: raw.matcher,
            steps,
            origin,
        })
    }

    /// True if the recipe applies to `os` of `report`.
    #[must_use]
    pub fn matches(&self, report: &Report, os: &OsReport) -> bool {
        self.matcher.matches(report, os)
    }
}

/// A problem [`lint`] found. Tools match on [`LintIssue::code`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintIssue {
    /// Stable code: `parse`, `no-steps`, `empty-match`, `unknown-fixer`, `unknown-param`,
    /// `bad-param-type`, `bad-param-value`.
    pub code: &'static str,
    /// 1-based step number, when the issue is in a step.
    pub step: Option<usize>,
    /// One line for a person.
    pub message: String,
}

impl fmt::Display for LintIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(s) => write!(f, "step {s}: {} [{}]", self.message, self.code),
            None => write!(f, "{} [{}]", self.message, self.code),
        }
    }
}

/// Checks that a recipe is usable: it has steps and a non-empty match, every step names a real
/// fixer, and every parameter is one that fixer takes, with a valid value.
#[must_use]
pub fn lint(recipe: &Recipe) -> Vec<LintIssue> {
    let mut out = Vec::new();
    if recipe.steps.is_empty() {
        out.push(LintIssue {
            code: "no-steps",
            step: None,
            message: "the recipe has no steps".into(),
        });
    }
    if recipe.matcher.specificity() == 0 {
        out.push(LintIssue {
            code: "empty-match",
            step: None,
            message: "the [match] table is empty, so the recipe would match every guest".into(),
        });
    }
    for (i, step) in recipe.steps.iter().enumerate() {
        let n = Some(i.saturating_add(1));
        match crate::find_fixer(&step.fixer) {
            None => out.push(LintIssue {
                code: "unknown-fixer",
                step: n,
                message: format!(
                    "no fixer named {:?} (known: {})",
                    step.fixer,
                    crate::registry()
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            Some(fixer) => {
                for (code, message) in crate::fixers::validate_params(fixer, &step.params) {
                    out.push(LintIssue {
                        code,
                        step: n,
                        message,
                    });
                }
            }
        }
    }
    out
}

/// Parses then lints recipe text; a parse failure is one `parse` issue.
#[must_use]
pub fn lint_text(text: &str) -> Vec<LintIssue> {
    match Recipe::parse(text, Origin::Inline) {
        Ok(r) => lint(&r),
        Err(e) => vec![LintIssue {
            code: "parse",
            step: None,
            message: e.to_string(),
        }],
    }
}

/// Recipes by name: the shipped ones, overridden by user files.
#[derive(Debug, Clone, Default)]
pub struct RecipeSet {
    recipes: BTreeMap<String, Recipe>,
}

impl RecipeSet {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The recipes built into the library.
    ///
    /// # Errors
    /// [`Error::InvalidRecipe`] if a shipped file is broken (a test guards against it) or two
    /// shipped files use one name.
    pub fn shipped() -> Result<Self> {
        let mut set = Self::new();
        for (file, text) in shipped::SHIPPED {
            let r = Recipe::parse(text, Origin::Shipped(file))?;
            if let Some(prev) = set.recipes.get(&r.name) {
                return Err(Error::InvalidRecipe {
                    origin: r.origin.to_string(),
                    detail: format!("name {:?} is also used by {}", r.name, prev.origin),
                });
            }
            set.recipes.insert(r.name.clone(), r);
        }
        Ok(set)
    }

    /// Adds a recipe, replacing any with the same name; returns the replaced one.
    pub fn insert(&mut self, recipe: Recipe) -> Option<Recipe> {
        self.recipes.insert(recipe.name.clone(), recipe)
    }

    /// Loads one user recipe file, overriding a recipe of the same name.
    ///
    /// # Errors
    /// [`Error::RecipeIo`], or as [`Recipe::parse`].
    pub fn load_file(&mut self, path: &Path) -> Result<&Recipe> {
        let io = |source| Error::RecipeIo {
            path: path.display().to_string(),
            source,
        };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_RECIPE_BYTES as u64 {
            return Err(Error::InvalidRecipe {
                origin: path.display().to_string(),
                detail: format!("{len} bytes is over the {MAX_RECIPE_BYTES}-byte limit"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let r = Recipe::parse(&text, Origin::User(path.to_owned()))?;
        let name = r.name.clone();
        if let Some(old) = self.insert(r) {
            tracing::debug!(recipe = %name, overridden = %old.origin, "user recipe overrides");
        }
        // OK to expect: inserted just above.
        Ok(self.recipes.get(&name).expect("just inserted"))
    }

    /// Loads every `*.toml` in `dir` (sorted by file name, at most 256), overriding by name.
    /// A missing directory is not an error.
    ///
    /// # Errors
    /// As [`RecipeSet::load_file`]; [`Error::RecipeIo`] if the directory cannot be listed.
    pub fn load_dir(&mut self, dir: &Path) -> Result<usize> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => {
                return Err(Error::RecipeIo {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(std::result::Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .take(MAX_DIR_RECIPES.saturating_add(1))
            .collect();
        if files.len() > MAX_DIR_RECIPES {
            return Err(Error::Usage(format!(
                "{} holds more than {MAX_DIR_RECIPES} recipe files",
                dir.display()
            )));
        }
        files.sort();
        for f in &files {
            self.load_file(f)?;
        }
        Ok(files.len())
    }

    /// The recipe called `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Recipe> {
        self.recipes.get(name)
    }

    /// All recipes, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Recipe> {
        self.recipes.values()
    }

    /// Number of recipes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.recipes.len()
    }

    /// True when there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.recipes.is_empty()
    }

    /// Recipes matching `os`, most specific first, then by name.
    #[must_use]
    pub fn matching(&self, report: &Report, os: &OsReport) -> Vec<&Recipe> {
        let mut v: Vec<&Recipe> = self.iter().filter(|r| r.matches(report, os)).collect();
        v.sort_by(|a, b| {
            b.matcher
                .specificity()
                .cmp(&a.matcher.specificity())
                .then_with(|| a.name.cmp(&b.name))
        });
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{SyntheticOs, synthetic_report};

    const GOOD: &str = "schema = 1\nname = \"t\"\ndescription = \"test\"\n[match]\ndistro = [\"debian\"]\nversion = \">=10, <13\"\n[[step]]\nfixer = \"caches\"\n";

    #[test]
    fn parses_a_good_recipe() {
        let r = Recipe::parse(GOOD, Origin::Inline).unwrap();
        assert_eq!(r.name, "t");
        assert_eq!(r.description, "test");
        assert_eq!(r.matcher.distro, vec!["debian"]);
        assert_eq!(r.matcher.version.as_ref().unwrap().to_string(), ">=10, <13");
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].fixer, "caches");
        assert!(r.steps[0].params.is_empty());
        assert!(lint(&r).is_empty());
    }

    fn parse_err(text: &str) -> String {
        match Recipe::parse(text, Origin::Inline) {
            Err(Error::InvalidRecipe { origin, detail }) => {
                assert_eq!(origin, "<inline>");
                detail
            }
            other => panic!("expected InvalidRecipe, got {other:?}"),
        }
    }

    #[test]
    fn each_structural_error() {
        assert!(
            parse_err(&GOOD.replace("schema = 1", "schema = 2"))
                .contains("schema 2 is not supported")
        );
        assert!(
            parse_err(&GOOD.replace("name = \"t\"", "name = \"T x\"")).contains("must be 1..=64")
        );
        assert!(parse_err(&GOOD.replace("\"test\"", "\" \"")).contains("description is empty"));
        assert!(parse_err(&format!("bogus = 1\n{GOOD}")).contains("unknown field"));
        assert!(parse_err(&GOOD.replace("distro =", "distros =")).contains("unknown field"));
        assert!(
            parse_err(&GOOD.replace("fixer = \"caches\"", "fixer = 3"))
                .contains("step 1: fixer must be a string")
        );
        assert!(
            parse_err(&GOOD.replace("fixer = \"caches\"", "x = 3")).contains("step 1 has no fixer")
        );
        assert!(parse_err(&GOOD.replace(">=10, <13", ">=ten")).contains("version clause"));
        let many = format!("{GOOD}{}", "[[step]]\nfixer = \"caches\"\n".repeat(64));
        assert!(parse_err(&many).contains("65 steps is over the limit of 64"));
        let big = format!("{GOOD}#{}", "x".repeat(MAX_RECIPE_BYTES));
        assert!(parse_err(&big).contains("byte limit"));
    }

    #[test]
    fn lint_codes() {
        let codes = |t: &str| {
            lint_text(t)
                .into_iter()
                .map(|i| (i.code, i.step))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            codes(&GOOD.replace("\"caches\"", "\"nope\"")),
            vec![("unknown-fixer", Some(1))]
        );
        assert_eq!(
            codes(&format!("{GOOD}extra = 1\n")),
            vec![("unknown-param", Some(1))]
        );
        assert_eq!(
            codes(&GOOD.replace("\"caches\"", "\"network\"\npolicy = \"bogus\"")),
            vec![("bad-param-value", Some(1))]
        );
        assert_eq!(
            codes(&GOOD.replace("\"caches\"", "\"network\"\npolicy = 1")),
            vec![("bad-param-type", Some(1))]
        );
        assert_eq!(
            codes("schema = 1\nname = \"x\"\ndescription = \"d\"\n"),
            vec![("empty-match", None), ("no-steps", None)]
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
        );
        assert_eq!(codes("nonsense")[0].0, "parse");
        for (param, ok) in [
            ("target_mac = \"52:54:00:AB:cd:0f\"", true),
            ("target_mac = \"\"", true),
            ("target_mac = \"52:54:00:ab:cd\"", false),
            ("target_mac = \"52:54:00:ab:cd:zz\"", false),
            ("target_name = \"eth0\"", true),
            ("target_name = \"Eth 0\"", false),
            ("target_name = \"abcdefghijklmnop\"", false),
        ] {
            let t = GOOD.replace("\"caches\"", &format!("\"network\"\n{param}"));
            let want = if ok {
                vec![]
            } else {
                vec![("bad-param-value", Some(1))]
            };
            assert_eq!(codes(&t), want, "{param}");
        }
        assert_eq!(
            codes(&GOOD.replace("\"caches\"", "\"console\"\ntty0 = \"yes\"")),
            vec![("bad-param-type", Some(1))]
        );
        assert_eq!(
            codes(&GOOD.replace("\"caches\"", "\"console\"\nserial = \"ttyS0 x\"")),
            vec![("bad-param-value", Some(1))]
        );
        let issue = &lint_text(&GOOD.replace("\"caches\"", "\"nope\""))[0];
        assert!(
            issue
                .to_string()
                .starts_with("step 1: no fixer named \"nope\"")
        );
    }

    #[test]
    fn version_requirements() {
        let v = VersionReq::parse(">=7, <10").unwrap();
        assert!(v.matches(7, 0) && v.matches(9, 9));
        assert!(!v.matches(6, 10) && !v.matches(10, 0));
        let u = VersionReq::parse("=22.04").unwrap();
        assert!(u.matches(22, 4) && !u.matches(22, 10));
        let le = VersionReq::parse("<=12").unwrap();
        assert!(le.matches(12, 5) && !le.matches(13, 0));
        assert!(VersionReq::parse("18.04").unwrap().matches(18, 4));
        assert!(VersionReq::parse(">12.").is_err());
        assert!(VersionReq::parse("").is_err());
        assert!(VersionReq::parse(&["1"; 9].join(",")).is_err());
    }

    #[test]
    fn matching_uses_every_fact() {
        let r = Recipe::parse(GOOD, Origin::Inline).unwrap();
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
        assert!(r.matches(&rep, &rep.operating_systems[0]));
        let rep = synthetic_report(&SyntheticOs::new("debian", 13, 0));
        assert!(!r.matches(&rep, &rep.operating_systems[0]));
        let rep = synthetic_report(&SyntheticOs::new("ubuntu", 12, 0));
        assert!(!r.matches(&rep, &rep.operating_systems[0]));
        let mut m = Match {
            firmware: vec!["uefi".into()],
            ..Match::default()
        };
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
        let os = &rep.operating_systems[0];
        assert!(!m.matches(&rep, os), "synthetic reports are bios");
        m.firmware = vec!["bios".into()];
        assert!(m.matches(&rep, os));
        m.source_tools = vec!["open-vm-tools".into()];
        assert!(!m.matches(&rep, os));
        m.source_tools = vec![];
        m.initramfs_generator = vec!["dracut".into()];
        assert!(!m.matches(&rep, os), "debian uses initramfs-tools");
    }

    #[test]
    fn recipe_json_for_recipe_show() {
        let set = RecipeSet::shipped().unwrap();
        let v = serde_json::to_value(set.get("ubuntu").unwrap()).unwrap();
        assert_eq!(v["name"], "ubuntu");
        assert_eq!(v["origin"]["kind"], "shipped");
        assert_eq!(v["origin"]["path"], "ubuntu.toml");
        assert_eq!(v["match"]["version"], ">=18.04, <=24.04");
        assert_eq!(v["steps"][1]["fixer"], "network");
        assert_eq!(v["steps"][1]["params"]["policy"], "preserve");
    }

    #[test]
    fn user_recipes_override_shipped_by_name() {
        let mut set = RecipeSet::shipped().unwrap();
        let before = set.len();
        let dir = tempfile::tempdir().unwrap();
        let text = GOOD.replace("name = \"t\"", "name = \"debian\"");
        std::fs::write(dir.path().join("mine.toml"), text).unwrap();
        std::fs::write(dir.path().join("ignored.txt"), "x").unwrap();
        assert_eq!(set.load_dir(dir.path()).unwrap(), 1);
        assert_eq!(set.len(), before);
        let d = set.get("debian").unwrap();
        assert_eq!(d.origin, Origin::User(dir.path().join("mine.toml")));
        assert_eq!(d.steps.len(), 1);
        assert_eq!(set.load_dir(&dir.path().join("missing")).unwrap(), 0);
        assert!(matches!(
            set.load_file(&dir.path().join("missing.toml")),
            Err(Error::RecipeIo { .. })
        ));
    }
}
