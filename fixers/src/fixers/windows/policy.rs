//! `windows-san-policy` and `windows-crash-control`: two SYSTEM hive settings that decide what
//! a person sees after the move.
//!
//! SAN policy: `Services\partmgr\Parameters\SanPolicy` (REG_DWORD) is the `VDS_SAN_POLICY` the
//! partition manager applies to disks it has not seen before (vds.h: 1 `VDS_SP_ONLINE` online
//! all, 2 `VDS_SP_OFFLINE_SHARED` offline disks on shared buses, the Server default, 3
//! `VDS_SP_OFFLINE` offline all new disks, 4 `VDS_SP_OFFLINE_INTERNAL` offline internal disks).
//! Every disk is new to Windows after the move (a virtio disk has a new device identity), so
//! under 2, 3 or 4 data disks come up offline and their drive letters are missing; 1 brings
//! them online with their letters from `MountedDevices`, which is what a migration wants.
//!
//! Crash control: `Control\CrashControl\AutoReboot` = 0 keeps a blue screen (for example
//! 0x7B INACCESSIBLE_BOOT_DEVICE) on the console instead of a reboot loop. The old value is in
//! the step summary, to set it back with a `windows-registry` step once the guest is known good.

use hive::ValueType;

use super::{HiveEdit, SYSTEM_PREFIX, preflight};
use crate::Result;
use crate::fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};

pub(crate) struct SanPolicy;
pub(crate) struct CrashControl;

static SAN_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "policy",
    kind: ParamKind::Choice(&[
        "online-all",
        "offline-shared",
        "offline-all",
        "offline-internal",
    ]),
    default: "\"online-all\"",
    help: "the VDS SAN policy for new disks (online-all: data disks come up online after the move)",
}];

static CRASH_PARAMS: &[ParamSpec] = &[ParamSpec {
    name: "auto_reboot",
    kind: ParamKind::Bool,
    default: "false",
    help: "reboot after a bugcheck (false keeps the blue screen visible)",
}];

/// `VDS_SAN_POLICY` value of a policy name.
fn san_value(name: &str) -> u32 {
    match name {
        "offline-shared" => 2,
        "offline-all" => 3,
        "offline-internal" => 4,
        _ => 1,
    }
}

impl Fixer for SanPolicy {
    fn name(&self) -> &'static str {
        "windows-san-policy"
    }

    fn description(&self) -> &'static str {
        "set the partition manager's SAN policy so data disks come online after the move"
    }

    fn params(&self) -> &'static [ParamSpec] {
        SAN_PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let mut h = HiveEdit::open_required(ctx, &info.hive_path("SYSTEM"), SYSTEM_PREFIX)?;
        let key = format!("{}\\Services\\partmgr\\Parameters", info.ccs);
        let want = san_value(params.str("policy"));
        let old = h.dword(&key, "SanPolicy")?;
        let mut out = Outcome::default();
        if h.set_dword(&key, "SanPolicy", want)? {
            out.notes.push(format!(
                "SanPolicy {} -> {want} ({})",
                old.map_or_else(|| "unset".to_owned(), |o| o.to_string()),
                params.str("policy")
            ));
        }
        out.changes.extend(h.finish()?);
        Ok(out)
    }
}

impl Fixer for CrashControl {
    fn name(&self) -> &'static str {
        "windows-crash-control"
    }

    fn description(&self) -> &'static str {
        "keep a blue screen visible (CrashControl AutoReboot=0); the old value is reported so it can be restored"
    }

    fn params(&self) -> &'static [ParamSpec] {
        CRASH_PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let mut h = HiveEdit::open_required(ctx, &info.hive_path("SYSTEM"), SYSTEM_PREFIX)?;
        let key = format!("{}\\Control\\CrashControl", info.ccs);
        let want = u32::from(params.bool("auto_reboot"));
        let old = h.value(&key, "AutoReboot")?;
        let mut out = Outcome::default();
        if h.set(&key, "AutoReboot", ValueType::Dword, &want.to_le_bytes())? {
            let was = match old.as_ref().and_then(hive::Value::as_dword) {
                Some(v) => format!("was {v}"),
                None => "was unset".to_owned(),
            };
            out.notes.push(format!(
                "CrashControl AutoReboot set to {want} ({was}; restore with a windows-registry step on {key})"
            ));
        }
        out.changes.extend(h.finish()?);
        Ok(out)
    }
}
