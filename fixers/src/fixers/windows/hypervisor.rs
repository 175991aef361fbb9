//! `windows-hypervisor-services`: disables (Start=4) the old hypervisor's drivers and services
//! that are present, so they neither fail nor search for their devices on KVM.
//!
//! A disabled driver that is still listed as a device or class filter (`UpperFilters` /
//! `LowerFilters`) would make every device of that stack fail to start, which for a disk
//! filter means INACCESSIBLE_BOOT_DEVICE. So the disabled names are also removed from the
//! filter lists of `Control\Class\{guid}` and of device instances under `Enum` (walked to the
//! instance level, bounded). Storage miniports (pvscsi, storvsc, xenvbd) are left alone where they
//! are harmless: a miniport without its device is never started.
//!
//! Every change is in the step summary as `name: Start a -> 4`, to undo by hand if needed (the
//! whole hive is restored by `rehost undo`).

use super::{HiveEdit, SYSTEM_PREFIX, multi_sz, preflight};
use crate::Result;
use crate::fixers::{FixContext, Fixer, Outcome, ParamKind, ParamSpec, Params};

pub(crate) struct HypervisorServices;

/// VMware Tools drivers and services.
const VMWARE: &[&str] = &[
    "VMTools",
    "VGAuthService",
    "vmvss",
    "VMwareCAF",
    "vmci",
    "vsock",
    "vmhgfs",
    "vmmemctl",
    "vm3dmp",
    "vm3dmp_loader",
    "vm3dmp-debug",
    "vm3dmp-stats",
    "vm3dservice",
    "vmrawdsk",
    "vmusbmouse",
    "vmmouse",
    "vmxnet",
    "vmxnet3ndis6",
    "vmaudio",
    "vsepflt",
    "vnetWFP",
    "vmStatsProvider",
];
/// Hyper-V integration drivers and services (the VMBus stack and its clients).
const HYPERV: &[&str] = &[
    "vmbus",
    "VMBusHID",
    "hyperkbd",
    "HyperVideo",
    "vmgid",
    "netvsc",
    "storvsc",
    "vmicheartbeat",
    "vmickvpexchange",
    "vmicshutdown",
    "vmictimesync",
    "vmicvss",
    "vmicguestinterface",
    "vmicrdv",
    "vmicvmsession",
];
/// Xen PV drivers (Citrix / XenServer and the Xen Project's).
const XEN: &[&str] = &[
    "xenbus",
    "xenfilt",
    "xenvbd",
    "xendisk",
    "xennet",
    "xenvif",
    "xeniface",
    "xenagent",
    "xensvc",
    "XenBusMonitor",
];
/// Storage miniports: disabled only where no filter list names them (see the module docs).
const MINIPORTS: &[&str] = &["storvsc", "xenvbd", "xendisk"];
/// Most subkeys visited while cleaning filter lists (a large real SYSTEM hive has ~10,000 under
/// `Enum`; house style S12).
const MAX_FILTER_KEYS: usize = 50_000;

static PARAMS: &[ParamSpec] = &[
    ParamSpec {
        name: "vmware",
        kind: ParamKind::Bool,
        default: "true",
        help: "disable VMware Tools drivers and services",
    },
    ParamSpec {
        name: "hyperv",
        kind: ParamKind::Bool,
        default: "true",
        help: "disable Hyper-V integration drivers and services",
    },
    ParamSpec {
        name: "xen",
        kind: ParamKind::Bool,
        default: "true",
        help: "disable Xen PV drivers",
    },
];

/// Removes `names` from the filter lists of `key`. Returns true if it changed.
fn clean_filters(h: &mut HiveEdit, key: &str, names: &[String]) -> Result<bool> {
    let mut changed = false;
    for list in ["UpperFilters", "LowerFilters"] {
        let Some(items) = h.value(key, list)?.and_then(|v| v.as_multi_string()) else {
            continue;
        };
        let kept: Vec<&String> = items
            .iter()
            .filter(|i| !names.iter().any(|n| n.eq_ignore_ascii_case(i)))
            .collect();
        if kept.is_empty() {
            // An empty list is no list: remove the value, as uninstalling the filter would.
            changed |= h.delete_value(key, list)?;
        } else if kept.len() != items.len() {
            changed |= h.set(key, list, hive::ValueType::MultiSz, &multi_sz(&kept))?;
        }
    }
    Ok(changed)
}

impl Fixer for HypervisorServices {
    fn name(&self) -> &'static str {
        "windows-hypervisor-services"
    }

    fn description(&self) -> &'static str {
        "disable the VMware, Hyper-V and Xen drivers and services present (Start=4), and drop them from device filter lists"
    }

    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }

    fn plan(&self, ctx: &FixContext<'_>, params: &Params) -> Result<Outcome> {
        let info = preflight(ctx, self.name())?;
        let mut h = HiveEdit::open_required(ctx, &info.hive_path("SYSTEM"), SYSTEM_PREFIX)?;
        let mut candidates: Vec<&str> = Vec::new();
        for (flag, list) in [("vmware", VMWARE), ("hyperv", HYPERV), ("xen", XEN)] {
            if params.bool(flag) {
                candidates.extend(list.iter().copied());
            }
        }
        let services = format!("{}\\Services", info.ccs);
        let present = h.subkeys(&services)?;
        let mut disabled: Vec<String> = Vec::new();
        let mut notes = Vec::new();
        for name in present
            .iter()
            .filter(|p| candidates.iter().any(|c| c.eq_ignore_ascii_case(p)))
        {
            if MINIPORTS.iter().any(|m| m.eq_ignore_ascii_case(name)) {
                continue;
            }
            let key = format!("{services}\\{name}");
            let old = h.dword(&key, "Start")?;
            if old == Some(4) {
                continue;
            }
            h.set_dword(&key, "Start", 4)?;
            notes.push(format!(
                "{name}: Start {} -> 4",
                old.map_or_else(|| "unset".to_owned(), |o| o.to_string())
            ));
            disabled.push(name.clone());
        }
        let mut filters = 0usize;
        if !disabled.is_empty() {
            let mut visited = 0usize;
            let class = format!("{}\\Control\\Class", info.ccs);
            for g in h.subkeys(&class)? {
                visited += 1;
                if visited > MAX_FILTER_KEYS {
                    break;
                }
                filters += usize::from(clean_filters(&mut h, &format!("{class}\\{g}"), &disabled)?);
            }
            let en = format!("{}\\Enum", info.ccs);
            'walk: for bus in h.subkeys(&en)? {
                for dev in h.subkeys(&format!("{en}\\{bus}"))? {
                    for inst in h.subkeys(&format!("{en}\\{bus}\\{dev}"))? {
                        visited += 1;
                        if visited > MAX_FILTER_KEYS {
                            notes.push(format!(
                                "filter lists: stopped after {MAX_FILTER_KEYS} keys"
                            ));
                            break 'walk;
                        }
                        let k = format!("{en}\\{bus}\\{dev}\\{inst}");
                        filters += usize::from(clean_filters(&mut h, &k, &disabled)?);
                    }
                }
            }
        }
        if filters > 0 {
            notes.push(format!("removed from {filters} filter list key(s)"));
        }
        let mut out = Outcome {
            notes,
            ..Outcome::default()
        };
        out.changes.extend(h.finish()?);
        Ok(out)
    }
}
