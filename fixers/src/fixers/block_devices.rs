//! `block-device-names`: kernel disk names of the source hypervisor (`/dev/sda1`, `/dev/xvda1`,
//! `/dev/nvme0n1p1`, `/dev/cciss/c0d0p1`, `/dev/disk/by-path/...-part1`) are rewritten to
//! `UUID=` of the filesystem the report found there, or to the target's `/dev/vdXN` when that
//! filesystem has no UUID. Covers `/etc/fstab`, `/etc/crypttab`, and `root=`/`resume=` in
//! `/etc/default/grub`, `grub.cfg` and BLS entries.

use inspect::report::Report;

use super::{FixContext, Fixer, Outcome, ParamSpec, Params};
use crate::Result;

pub(crate) struct BlockDeviceNames;

/// Longest filesystem UUID written (a GUID is 36; FAT and NTFS serials are shorter).
const MAX_UUID_LEN: usize = 64;

/// initramfs-tools' resume device setting, copied into every initramfs it builds.
const INITRAMFS_TOOLS_RESUME: &str = "/etc/initramfs-tools/conf.d/resume";

/// Kernel parameters naming a block device.
const CMDLINE_KEYS: &[&str] = &["root", "resume"];

/// Bijective base-26 disk letters: 0 → `a`, 25 → `z`, 26 → `aa`.
fn disk_letters(mut idx: u32) -> String {
    let mut out = Vec::new();
    loop {
        // OK to cast: idx % 26 < 26.
        out.push(b'a' + u8::try_from(idx % 26).unwrap_or(0));
        if idx < 26 {
            break;
        }
        idx = idx / 26 - 1;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// (disk index, partition number or 0 for the whole disk) of a source device name, or `None`
/// for names that are not source-hypervisor disk names (UUID=, LVM, `/dev/vdX`, ...).
pub(crate) fn source_disk(spec: &str) -> Option<(u32, u32)> {
    let dev = spec.strip_prefix("/dev/")?;
    if let Some(rest) = dev.strip_prefix("disk/by-path/").or_else(|| {
        let id = dev.strip_prefix("disk/by-id/")?;
        // Only disk identities; dm-, lvm-, md- ids name stacked devices that survive the move.
        ["ata-", "scsi-", "wwn-", "nvme-"]
            .iter()
            .any(|p| id.starts_with(p))
            .then_some(id)
    }) {
        // The report covers one disk, so every path or id names disk 0.
        return match rest.rsplit_once("-part") {
            Some((_, n)) => Some((0, digits(n)?)),
            None => Some((0, 0)),
        };
    }
    if let Some(rest) = dev.strip_prefix("cciss/c") {
        let (ctrl, rest) = rest.split_once('d')?;
        digits(ctrl)?;
        return match rest.split_once('p') {
            Some((d, p)) => Some((digits(d)?, digits(p)?)),
            None => Some((digits(rest)?, 0)),
        };
    }
    if let Some(rest) = dev.strip_prefix("nvme") {
        let (ctrl, rest) = rest.split_once('n')?;
        return match rest.split_once('p') {
            Some((ns, p)) => {
                digits(ns)?;
                Some((digits(ctrl)?, digits(p)?))
            }
            None => {
                digits(rest)?;
                Some((digits(ctrl)?, 0))
            }
        };
    }
    let rest = ["xvd", "sd", "hd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))?;
    let letters: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    let tail = &rest[letters.len()..];
    let part = if tail.is_empty() { 0 } else { digits(tail)? };
    let mut idx: u32 = 0;
    for c in letters.bytes() {
        idx = idx.checked_mul(26)?.checked_add(u32::from(c - b'a') + 1)?;
    }
    Some((idx.checked_sub(1)?, part))
}

/// The stable name for a source device name: `UUID=<uuid>` of the filesystem the report found
/// on it, or `/dev/vdXN` when it has none. `None` to leave it alone.
pub(crate) fn stable_name(spec: &str, report: &Report) -> Option<String> {
    let (disk, part) = source_disk(spec)?;
    let letters = disk_letters(disk);
    let suffix = if part == 0 {
        String::new()
    } else {
        part.to_string()
    };
    let name = format!("/dev/sd{letters}{suffix}");
    let dev = report.devices.iter().find(|d| d.name == name)?;
    // The UUID is written into fstab and command lines, so only a plain one is used.
    let plain = |u: &str| {
        (1..=MAX_UUID_LEN).contains(&u.len())
            && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    };
    match &dev.uuid {
        Some(u) if plain(u) => Some(format!("UUID={u}")),
        _ => Some(format!("/dev/vd{letters}{suffix}")),
    }
}

fn unmapped_note(out: &mut Outcome, path: &str, spec: &str) {
    out.notes.push(format!(
        "{path}: {spec} not found in the report, left as is"
    ));
}

impl Fixer for BlockDeviceNames {
    fn name(&self) -> &'static str {
        "block-device-names"
    }

    fn description(&self) -> &'static str {
        "rewrite source-hypervisor disk names (sdX, hdX, xvdX, nvme, cciss, by-path) to UUID= or the target's vdX in fstab, crypttab and kernel command lines"
    }

    fn params(&self) -> &'static [ParamSpec] {
        &[]
    }

    fn plan(&self, ctx: &FixContext<'_>, _params: &Params) -> Result<Outcome> {
        let mut out = Outcome::default();
        let report = ctx.report;
        // fstab: first field; crypttab: second field.
        for (file, field) in [("/etc/fstab", 0), ("/etc/crypttab", 1)] {
            let Some((path, text)) = ctx.read_text(file)? else {
                continue;
            };
            let mut missing = Vec::new();
            let new = crate::text::edit_lines(&text, |body| {
                if body.trim_start().starts_with('#') {
                    return None;
                }
                crate::text::replace_token(body, field, |tok| {
                    let r = stable_name(tok, report);
                    if r.is_none() && source_disk(tok).is_some() {
                        missing.push(tok.to_owned());
                    }
                    r
                })
            });
            for m in missing {
                unmapped_note(&mut out, &path, &m);
            }
            if let Some(n) = new {
                out.replace(&path, &text, n);
            }
        }
        if let Some((path, text)) = ctx.read_text(INITRAMFS_TOOLS_RESUME)? {
            let new = crate::text::edit_lines(&text, |body| {
                let (k, v) = body.split_once('=')?;
                if k.trim() != "RESUME" {
                    return None;
                }
                let q = v.trim().chars().next().filter(|c| *c == '"' || *c == '\'');
                let bare = v.trim().trim_matches(|c| c == '"' || c == '\'');
                let n = stable_name(bare, report)?;
                Some(match q {
                    Some(q) => format!("{k}={q}{n}{q}"),
                    None => format!("{k}={n}"),
                })
            });
            if let Some(n) = new {
                out.replace(&path, &text, n);
            }
        }
        let mut missing = Vec::new();
        let cmd = super::edit_all_cmdlines(ctx, false, &mut |_, args| {
            crate::text::map_params(args, CMDLINE_KEYS, |_, v| {
                let r = stable_name(v, report);
                if r.is_none() && source_disk(v).is_some() && !missing.contains(&v.to_owned()) {
                    missing.push(v.to_owned());
                }
                r
            })
        })?;
        for m in missing {
            unmapped_note(&mut out, "kernel command line", &m);
        }
        out.changes.extend(cmd.changes);
        if !out.changes.is_empty() {
            out.notes.insert(
                0,
                format!(
                    "rewrote device names in {}",
                    out.changes
                        .iter()
                        .map(crate::Change::path)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{SyntheticOs, synthetic_report};

    #[test]
    fn source_names() {
        assert_eq!(source_disk("/dev/sda1"), Some((0, 1)));
        assert_eq!(source_disk("/dev/sda"), Some((0, 0)));
        assert_eq!(source_disk("/dev/xvdb2"), Some((1, 2)));
        assert_eq!(source_disk("/dev/hdc1"), Some((2, 1)));
        assert_eq!(source_disk("/dev/sdaa3"), Some((26, 3)));
        assert_eq!(source_disk("/dev/nvme0n1p2"), Some((0, 2)));
        assert_eq!(source_disk("/dev/nvme1n1"), Some((1, 0)));
        assert_eq!(source_disk("/dev/cciss/c0d0p1"), Some((0, 1)));
        assert_eq!(source_disk("/dev/cciss/c0d1"), Some((1, 0)));
        assert_eq!(
            source_disk("/dev/disk/by-path/pci-0000:00:10.0-scsi-0:0:0:0-part2"),
            Some((0, 2))
        );
        assert_eq!(
            source_disk(
                "/dev/disk/by-id/ata-VMware_Virtual_IDE_Hard_Drive_00000000000000000001-part1"
            ),
            Some((0, 1))
        );
        for no in [
            "/dev/vda1",
            "UUID=x",
            "/dev/mapper/vg-root",
            "/dev/disk/by-id/dm-name-vg-root",
            "/dev/sd1",
            "/dev/nvme0",
            "/dev/sdzzzz1",
            "proc",
            "/dev/cciss/cXd0",
        ] {
            assert_eq!(source_disk(no), None, "{no}");
        }
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        assert_eq!(disk_letters(701), "zz");
    }

    #[test]
    fn stable_names_from_report() {
        let rep = synthetic_report(&SyntheticOs::new("debian", 12, 0));
        assert_eq!(
            stable_name("/dev/sda1", &rep).as_deref(),
            Some("UUID=11111111-2222-3333-4444-555555555555")
        );
        assert_eq!(
            stable_name("/dev/xvda5", &rep).as_deref(),
            Some("/dev/vda5"),
            "swap without uuid"
        );
        assert_eq!(
            stable_name("/dev/sdb1", &rep),
            None,
            "second disk is not in the report"
        );
        assert_eq!(stable_name("/dev/sda9", &rep), None);
        let mut os = SyntheticOs::new("debian", 12, 0);
        os.devices[1].2 = Some("bad uuid\n".into());
        let rep = synthetic_report(&os);
        assert_eq!(
            stable_name("/dev/sda1", &rep).as_deref(),
            Some("/dev/vda1"),
            "odd uuid not written"
        );
    }
}
