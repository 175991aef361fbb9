//! The human rendering of a [`Report`]: short, aligned, most important facts first.

use std::fmt::Write as _;

use crate::report::{Report, Severity};

fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024 && unit < UNITS.len() - 1 && v.is_multiple_of(1024) {
        v /= 1024;
        unit += 1;
    }
    if unit == 0 && bytes >= 1024 {
        // Not a round number: show one decimal of the best unit.
        let mut f = bytes;
        let mut u = 0;
        while f >= 1024 * 1024 && u < UNITS.len() - 2 {
            f /= 1024;
            u += 1;
        }
        return format!("{}.{} {}", f / 1024, (f % 1024) * 10 / 1024, UNITS[u + 1]);
    }
    format!("{v} {}", UNITS[unit])
}

/// Renders the report for a terminal.
#[must_use]
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} ({}, {})", r.source, r.format, size(r.size));
    match &r.partition_table {
        Some(t) => {
            let id = t
                .disk_guid
                .clone()
                .or_else(|| t.mbr_signature.clone())
                .unwrap_or_default();
            let _ = writeln!(o, "  partition table: {} {id}", t.kind);
        }
        None => {
            let _ = writeln!(o, "  partition table: none");
        }
    }
    let _ = writeln!(
        o,
        "  firmware:        {} ({})",
        format!("{:?}", r.firmware.kind).to_lowercase(),
        r.firmware.evidence.join("; ")
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "  {:<18} {:>10}  {:<12} {:<38} label",
        "device", "size", "content", "uuid"
    );
    for d in &r.devices {
        let _ = writeln!(
            o,
            "  {:<18} {:>10}  {:<12} {:<38} {}",
            d.name,
            size(d.size),
            d.content,
            d.uuid.as_deref().unwrap_or("-"),
            d.label.as_deref().unwrap_or("")
        );
    }
    for os in &r.operating_systems {
        let _ = writeln!(o);
        let _ = writeln!(o, "  {} on {}", os.product_name, os.root);
        let line = |o: &mut String, k: &str, v: &str| {
            let _ = writeln!(o, "    {k:<17}{v}");
        };
        line(
            &mut o,
            "type",
            &format!(
                "{} {} {}.{}",
                os.os_type, os.distro, os.major_version, os.minor_version
            ),
        );
        if let Some(id) = &os.osinfo {
            line(&mut o, "osinfo", id);
        }
        line(&mut o, "arch", os.arch.as_deref().unwrap_or("unknown"));
        line(
            &mut o,
            "hostname",
            os.hostname.as_deref().unwrap_or("unknown"),
        );
        if let Some(b) = &os.build_id {
            line(&mut o, "build", b);
        }
        if let Some(p) = &os.package_management {
            line(
                &mut o,
                "packages",
                &format!("{} ({})", p, os.package_format.as_deref().unwrap_or("")),
            );
        }
        for m in &os.mountpoints {
            line(
                &mut o,
                "mount",
                &format!(
                    "{:<12} {} ({})",
                    m.path,
                    m.device.as_deref().unwrap_or("unresolved"),
                    m.fstab.spec_raw
                ),
            );
        }
        for k in &os.kernels {
            let virtio: Vec<String> = k.virtio.iter().map(|(n, s)| format!("{n}={s}")).collect();
            line(
                &mut o,
                "kernel",
                &format!("{} [{}]", k.version, virtio.join(" ")),
            );
        }
        if let Some(g) = &os.initramfs_generator {
            line(&mut o, "initramfs", g);
        }
        for n in &os.network {
            let how = match n.method {
                crate::linux::network::Method::Static => n.addresses.join(","),
                crate::linux::network::Method::Dhcp => "dhcp".into(),
                crate::linux::network::Method::Other => "other".into(),
            };
            let mac = n
                .mac
                .as_deref()
                .map(|m| format!(" mac {m}"))
                .unwrap_or_default();
            line(
                &mut o,
                "network",
                &format!("{} {how} ({:?}{mac})", n.name, n.style),
            );
        }
        if !os.hypervisor_tools.is_empty() {
            line(&mut o, "hypervisor tools", &os.hypervisor_tools.join(", "));
        }
        if let Some(w) = &os.windows {
            line(&mut o, "systemroot", &w.systemroot);
            if let Some(e) = &w.edition {
                line(&mut o, "edition", e);
            }
            if w.hibernated || w.fast_startup {
                line(
                    &mut o,
                    "hibernation",
                    &format!(
                        "hibernated={} fast-startup={}",
                        w.hibernated, w.fast_startup
                    ),
                );
            }
            for (l, d) in &w.drive_mappings {
                line(&mut o, "drive", &format!("{l}: {d}"));
            }
            for d in &w.drivers {
                let start = d.start.map_or_else(|| "?".into(), |s| s.to_string());
                line(
                    &mut o,
                    "driver",
                    &format!("{} ({}, start {start})", d.name, d.role),
                );
            }
        }
    }
    if !r.bootloaders.is_empty() {
        let _ = writeln!(o);
        for b in &r.bootloaders {
            let _ = writeln!(
                o,
                "  bootloader {} on {} ({} entries)",
                b.kind,
                b.device,
                b.entries.len()
            );
        }
    }
    if !r.findings.is_empty() {
        let _ = writeln!(o);
        for f in &r.findings {
            let sev = match f.severity {
                Severity::Info => "info",
                Severity::Warning => "warning",
                Severity::Error => "error",
            };
            let loc = f
                .location
                .as_deref()
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            let _ = writeln!(o, "  {sev}[{}]{loc}: {}", f.code, f.message);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(1 << 30), "1 GiB");
        assert_eq!(size(64 << 20), "64 MiB");
        assert_eq!(size(1_500_000), "1.4 MiB");
    }
}
