//! `console`: adds `console=tty0 console=ttyS0,115200` to the kernel command line (the
//! `GRUB_CMDLINE_LINUX` line of `/etc/default/grub`, `grub.cfg` kernel lines and BLS entries)
//! where no such console is set, so the target's serial console shows the boot.

use super::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};
use crate::Result;
use crate::text::{CmdlineSite, append_params, has_param};

pub(crate) struct Console;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "serial",
        kind: ParamKind::KernelToken,
        default: "\"ttyS0,115200\"",
        help: "the serial console argument (console=<serial>)",
    },
    ParamSpec {
        name: "tty0",
        kind: ParamKind::Bool,
        default: "true",
        help: "also add console=tty0 (before the serial console, so the serial one is /dev/console)",
    },
];

/// The tokens to add to `args`: nothing for a console already present.
pub(crate) fn missing_tokens(args: &str, serial: &str, tty0: bool) -> Vec<String> {
    let dev = serial.split(',').next().unwrap_or(serial);
    let has_serial = has_param(args, |t| {
        t.strip_prefix("console=")
            .is_some_and(|v| v.split(',').next() == Some(dev))
    });
    // A line that already has the serial console was set up on purpose; adding tty0 after it
    // would make tty0 /dev/console instead.
    if has_serial {
        return Vec::new();
    }
    let mut out = Vec::new();
    if tty0 && !has_param(args, |t| t == "console=tty0") {
        out.push("console=tty0".to_owned());
    }
    out.push(format!("console={serial}"));
    out
}

impl Fixer for Console {
    fn name(&self) -> &'static str {
        "console"
    }

    fn description(&self) -> &'static str {
        "add console=tty0 console=ttyS0,115200 to the kernel command line where missing"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let serial = params.str("serial").to_owned();
        let tty0 = params.bool("tty0");
        let mut out = super::edit_all_cmdlines(ctx, true, &mut |site, args| {
            // GRUB_CMDLINE_LINUX_DEFAULT is only for non-recovery entries; the console belongs
            // on every entry.
            if site == CmdlineSite::GrubDefaultLinuxDefault {
                return None;
            }
            let add = missing_tokens(args, &serial, tty0);
            (!add.is_empty()).then(|| append_params(args, &add))
        })?;
        if !out.changes.is_empty() {
            out.notes.push(format!(
                "serial console added in {}",
                out.changes
                    .iter()
                    .map(crate::Change::path)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_consoles_are_added() {
        assert_eq!(
            missing_tokens("ro quiet", "ttyS0,115200", true),
            vec!["console=tty0", "console=ttyS0,115200"]
        );
        assert!(missing_tokens("console=ttyS0,9600", "ttyS0,115200", true).is_empty());
        assert_eq!(
            missing_tokens("console=tty0", "ttyS0,115200", true),
            vec!["console=ttyS0,115200"]
        );
        assert!(missing_tokens("console=tty0 console=ttyS0", "ttyS0,115200", true).is_empty());
        assert_eq!(missing_tokens("", "ttyS1", false), vec!["console=ttyS1"]);
    }
}
