//! `selinux`: makes sure the files a fixup created or replaced carry the right SELinux labels on
//! guests that run SELinux (`SELINUX=enforcing` or `permissive` in `/etc/selinux/config`, with
//! the named policy's directory present).
//!
//! Two modes:
//! - `autorelabel` (the default) plans an empty `/.autorelabel`: on the next boot the guest's
//!   own `fixfiles` relabels every file from its `file_contexts`, then reboots once.
//! - `inherit` plans nothing and relies on the write layer: [`crate::FsApplier`] gives each new
//!   file its parent directory's `security.selinux` label (what the kernel does without a type
//!   transition) and a replaced file keeps its own.
//!
//! Why `autorelabel` is the default: `inherit` is right only where the policy gives a new file
//! its directory's type, and this fixer cannot see which files earlier steps created nor match
//! them against `file_contexts` (regular expressions evaluated by libselinux). A wrong label is
//! silent until a confined service is denied its configuration (NetworkManager and a keyfile,
//! the first-boot unit and its script), which on a cloud VM means an unreachable machine; a
//! relabel costs one extra reboot of a minute or so on the first boot. virt-v2v makes the same
//! choice when it cannot run `setfiles`. Choose `inherit` when every fixer of the recipe writes
//! only where the directory's type is right (all of today's Linux fixers do: `/etc/sysconfig`,
//! `/etc/NetworkManager`, `/etc/systemd/system`, `/usr/libexec`, `/boot`).

use guestfs::FsReadExt;

use super::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::{Change, Result};

pub(crate) struct Selinux;

/// The config file read by libselinux at boot (selinux_config(5)).
const CONFIG: &str = "/etc/selinux/config";
/// The flag file `fixfiles onboot` writes and the boot scripts act on.
pub(crate) const AUTORELABEL: &str = "/.autorelabel";
/// Longest policy name accepted (they are short words such as `targeted`, `mls`, `minimum`).
const MAX_POLICY_NAME: usize = 64;

static PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "mode",
    kind: ParamKind::Choice(&["autorelabel", "inherit"]),
    default: "\"autorelabel\"",
    help: "autorelabel: touch /.autorelabel (full relabel and one reboot on first boot); \
           inherit: rely on new files taking their directory's label",
}];

/// SELinux as configured in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// `SELINUX=`: `enforcing`, `permissive`, `disabled` (lowercased), empty if absent.
    pub(crate) state: String,
    /// `SELINUXTYPE=`, empty if absent.
    pub(crate) policy: String,
}

impl Config {
    /// True if SELinux is on (enforcing or permissive: both label files).
    pub(crate) fn active(&self) -> bool {
        matches!(self.state.as_str(), "enforcing" | "permissive")
    }
}

/// Parses `/etc/selinux/config`: `KEY=value` lines, `#` comments, optional quotes; the last
/// assignment wins as in a shell.
pub(crate) fn parse_config(text: &str) -> Config {
    let mut c = Config {
        state: String::new(),
        policy: String::new(),
    };
    for line in text.lines().take(crate::text::MAX_LINES) {
        let l = line.trim();
        if l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches(|ch| ch == '"' || ch == '\'');
        match k.trim() {
            "SELINUX" => c.state = v.to_ascii_lowercase(),
            "SELINUXTYPE" => c.policy = v.to_owned(),
            _ => {}
        }
    }
    c
}

/// A policy name usable as a directory name under `/etc/selinux`.
fn valid_policy(name: &str) -> bool {
    (1..=MAX_POLICY_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && name != "."
        && name != ".."
}

impl Fixer for Selinux {
    fn name(&self) -> &'static str {
        "selinux"
    }

    fn description(&self) -> &'static str {
        "on SELinux guests, have the changed files relabelled on first boot (/.autorelabel)"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let mut out = Outcome::default();
        // Read lossily: only ASCII keys matter, and a stray byte must not stop the fixup.
        let cfg = match ctx.fs.stat_path(CONFIG.as_bytes()) {
            Ok(m) if m.file_type == guestfs::FileType::Regular => {
                let b = ctx
                    .fs
                    .read_file(CONFIG.as_bytes(), super::MAX_FILE_BYTES as u64)?;
                parse_config(&String::from_utf8_lossy(&b))
            }
            Ok(_) => return Ok(out),
            Err(e) if e.is_not_found() || matches!(e, guestfs::Error::NotADirectory { .. }) => {
                return Ok(out);
            }
            Err(e) => return Err(e.into()),
        };
        if !cfg.active() {
            return Ok(out);
        }
        // Without the policy libselinux loads, the guest boots with SELinux off (or not at all
        // when enforcing): nothing to label for.
        let policy_dir = format!("/etc/selinux/{}", cfg.policy);
        if !valid_policy(&cfg.policy) || !ctx.fs.exists(policy_dir.as_bytes())? {
            out.notes.push(format!(
                "SELINUX={} but policy {:?} has no directory under /etc/selinux; no relabel planned",
                cfg.state, cfg.policy
            ));
            return Ok(out);
        }
        if params.str("mode") == "inherit" {
            out.notes.push(format!(
                "SELinux {} ({}): new files take their directory's label, replaced files keep theirs",
                cfg.state, cfg.policy
            ));
            return Ok(out);
        }
        let gp = guestfs::resolve(ctx.fs, AUTORELABEL.as_bytes(), guestfs::Follow::NotFinal)?;
        match ctx.fs.lstat(&gp) {
            Ok(_) => return Ok(out),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        out.changes.push(Change::CreateFile {
            path: gp.to_string(),
            content: Vec::new(),
            mode: 0o644,
        });
        out.notes.push(format!(
            "SELinux {} ({}): {AUTORELABEL} makes the first boot relabel every file, then reboot once",
            cfg.state, cfg.policy
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{MemFs, SyntheticOs, synthetic_report};

    fn plan_with(g: &MemFs, mode: Option<&str>) -> Outcome {
        let rep = synthetic_report(&SyntheticOs::new("rocky", 9, 3));
        let ctx = FixContext {
            fs: g,
            report: &rep,
            os: &rep.operating_systems[0],
        };
        let mut t = toml::Table::new();
        if let Some(m) = mode {
            t.insert("mode".into(), toml::Value::String(m.into()));
        }
        assert_eq!(super::super::validate_params(&Selinux, &t), vec![]);
        Selinux.plan(&ctx, &Params::new(&Selinux, t)).unwrap()
    }

    fn guest(config: &str) -> MemFs {
        let mut g = MemFs::new();
        g.add_file(CONFIG, config.as_bytes())
            .add_dir("/etc/selinux/targeted/contexts/files");
        g
    }

    const RHEL9: &str = "# This file controls the state of SELinux on the system.\n\
                         SELINUX=enforcing\n\
                         # SELINUXTYPE= can take one of these three values:\n\
                         SELINUXTYPE=targeted\n";

    #[test]
    fn config_parsing() {
        assert_eq!(
            parse_config(RHEL9),
            Config {
                state: "enforcing".into(),
                policy: "targeted".into()
            }
        );
        let c = parse_config("SELINUX=\"Permissive\"\n  SELINUXTYPE = 'mls'\nSELINUX=permissive\n");
        assert_eq!((c.state.as_str(), c.policy.as_str()), ("permissive", "mls"));
        assert!(c.active());
        let c = parse_config("#SELINUX=enforcing\nSELINUX=disabled\n");
        assert_eq!(c.state, "disabled");
        assert!(!c.active());
        assert!(!parse_config("").active());
        assert!(!parse_config("garbage\n=\n==\nSELINUX\n").active());
        assert!(valid_policy("targeted"));
        assert!(!valid_policy(".."));
        assert!(!valid_policy("a/b"));
        assert!(!valid_policy(""));
    }

    #[test]
    fn enforcing_guest_gets_autorelabel_once() {
        let mut g = guest(RHEL9);
        let out = plan_with(&g, None);
        assert_eq!(
            out.changes,
            vec![Change::CreateFile {
                path: "/.autorelabel".into(),
                content: vec![],
                mode: 0o644
            }]
        );
        assert_eq!(
            out.notes,
            vec![
                "SELinux enforcing (targeted): /.autorelabel makes the first boot relabel every \
                 file, then reboot once"
            ]
        );
        let p = crate::Plan {
            recipe: "r".into(),
            root: "/dev/sda1".into(),
            steps: vec![crate::PlannedStep {
                fixer: "selinux".into(),
                summary: String::new(),
                changes: out.changes,
            }],
        };
        assert_eq!(crate::apply(&p, &mut g).unwrap(), 1);
        assert_eq!(g.file("/.autorelabel"), Some(&b""[..]));
        // Idempotent.
        assert_eq!(plan_with(&g, None), Outcome::default());
    }

    #[test]
    fn permissive_guest_too() {
        let g = guest("SELINUX=permissive\nSELINUXTYPE=targeted\n");
        let out = plan_with(&g, Some("autorelabel"));
        assert_eq!(out.changes.len(), 1);
        assert_eq!(out.changes[0].path(), "/.autorelabel");
        assert!(out.notes[0].starts_with("SELinux permissive (targeted): "));
    }

    #[test]
    fn disabled_or_absent_plans_nothing() {
        assert_eq!(plan_with(&MemFs::new(), None), Outcome::default());
        let g = guest("SELINUX=disabled\nSELINUXTYPE=targeted\n");
        assert_eq!(plan_with(&g, None), Outcome::default());
        // A Debian guest without SELinux packages.
        let mut g = MemFs::new();
        g.add_file("/etc/fstab", b"");
        assert_eq!(plan_with(&g, None), Outcome::default());
    }

    #[test]
    fn missing_policy_directory_is_noted() {
        let mut g = MemFs::new();
        g.add_file(CONFIG, b"SELINUX=enforcing\nSELINUXTYPE=mls\n");
        let out = plan_with(&g, None);
        assert!(out.changes.is_empty());
        assert_eq!(
            out.notes,
            vec![
                "SELINUX=enforcing but policy \"mls\" has no directory under /etc/selinux; no \
                 relabel planned"
            ]
        );
        let mut g = MemFs::new();
        g.add_file(CONFIG, b"SELINUX=enforcing\nSELINUXTYPE=../../etc\n");
        assert!(plan_with(&g, None).changes.is_empty());
    }

    #[test]
    fn inherit_mode_plans_nothing() {
        let g = guest(RHEL9);
        let out = plan_with(&g, Some("inherit"));
        assert!(out.changes.is_empty());
        assert_eq!(
            out.notes,
            vec![
                "SELinux enforcing (targeted): new files take their directory's label, \
                 replaced files keep theirs"
            ]
        );
    }

    #[test]
    fn bad_mode_is_refused() {
        let mut t = toml::Table::new();
        t.insert("mode".into(), toml::Value::String("setfiles".into()));
        assert_eq!(
            super::super::validate_params(&Selinux, &t),
            vec![(
                "bad-param-value",
                "mode = \"setfiles\" is not one of autorelabel, inherit".to_owned()
            )]
        );
    }

    #[test]
    fn hostile_configs_never_panic() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let base = RHEL9.as_bytes().to_vec();
        for i in 0..1000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = base.clone();
            let at = usize::try_from(state % base.len() as u64).unwrap();
            if i % 4 == 0 {
                b.truncate(at);
            } else {
                b[at] = u8::try_from(state >> 56).unwrap();
            }
            let mut g = MemFs::new();
            g.add_file(CONFIG, &b).add_dir("/etc/selinux/targeted");
            let rep = synthetic_report(&SyntheticOs::new("rocky", 9, 3));
            let ctx = FixContext {
                fs: &g,
                report: &rep,
                os: &rep.operating_systems[0],
            };
            let out = Selinux
                .plan(&ctx, &Params::new(&Selinux, toml::Table::new()))
                .unwrap();
            assert!(out.changes.len() <= 1);
        }
    }
}
