//! Firmware and bootloader detection: which firmware a disk is set up for (BIOS, UEFI or both),
//! what the MBR boot code is, and which bootloaders and entries are installed.

use disk::partition::{PartitionTable, TableKind};
use guestfs::{FsRead, FsReadExt};

use crate::linux::{list_dir, read_text};
use crate::report::{BootCode, Bootloader, Firmware, FirmwareKind};

/// GRUB legacy's stage1 records its version (3.2) at this offset of the MBR.
const GRUB_LEGACY_VERSION_OFFSET: usize = 0x3e;

/// Identifies the MBR boot code (the first 440 bytes of the disk) by the strings and version
/// bytes each loader carries.
#[must_use]
pub fn classify_boot_code(code: &[u8]) -> BootCode {
    let has = |needle: &[u8]| code.windows(needle.len()).any(|w| w == needle);
    if code.iter().all(|&b| b == 0) {
        BootCode::None
    } else if has(b"GRUB") {
        let v = code.get(GRUB_LEGACY_VERSION_OFFSET..GRUB_LEGACY_VERSION_OFFSET + 2);
        if v == Some(&[3, 2]) {
            BootCode::GrubLegacy
        } else {
            BootCode::Grub2
        }
    } else if has(b"Invalid partition table") || has(b"Error loading operating system") {
        BootCode::Windows
    } else if has(b"Multiple active partitions") || has(b"Missing OS") {
        BootCode::Syslinux
    } else {
        BootCode::Other
    }
}

/// Decides the firmware from the partition table, the boot code and the bootloaders found.
#[must_use]
pub fn firmware(
    table: Option<&PartitionTable>,
    code: BootCode,
    loaders: &[Bootloader],
) -> Firmware {
    let mut uefi = Vec::new();
    let mut bios = Vec::new();
    if let Some(t) = table {
        for p in &t.partitions {
            if p.is_esp() {
                let kind = if t.kind == TableKind::Gpt {
                    "gpt"
                } else {
                    "mbr type 0xef"
                };
                uefi.push(format!("efi system partition {} ({kind})", p.number));
            }
            if p.is_bios_boot() {
                bios.push(format!("bios boot partition {}", p.number));
            }
        }
        if t.kind == TableKind::Mbr && t.partitions.iter().any(|p| p.bootable) {
            bios.push("mbr partition marked active".to_owned());
        }
    }
    if !matches!(code, BootCode::None | BootCode::Other) {
        bios.push(format!("mbr boot code: {code:?}").to_lowercase());
    }
    for l in loaders {
        if l.kind.ends_with("-efi") || l.kind == "shim" || l.kind == "systemd-boot" {
            uefi.push(format!("{} on {}", l.kind, l.device));
        }
    }
    // An ESP alone on a disk whose only boot code is GRUB for BIOS is still a BIOS disk with an
    // ESP; both are reported.
    let kind = match (uefi.is_empty(), bios.is_empty()) {
        (false, true) => FirmwareKind::Uefi,
        (true, false) => FirmwareKind::Bios,
        (false, false) => FirmwareKind::Both,
        (true, true) => FirmwareKind::Unknown,
    };
    let mut evidence = uefi;
    evidence.extend(bios);
    Firmware { kind, evidence }
}

/// GRUB 2 `menuentry 'Title' ...` titles and `set default=` from a grub.cfg.
#[must_use]
pub fn grub_cfg_entries(text: &str) -> (Vec<String>, Option<String>) {
    let mut entries = Vec::new();
    let mut default = None;
    for line in text.lines().take(100_000) {
        let l = line.trim();
        if let Some(rest) = l.strip_prefix("menuentry ") {
            let rest = rest.trim_start();
            let q = rest.chars().next();
            let title = match q {
                Some(c @ ('\'' | '"')) => rest.get(1..).and_then(|r| r.split(c).next()),
                _ => rest.split_whitespace().next(),
            };
            if let Some(t) = title {
                entries.push(t.to_owned());
            }
            if entries.len() >= 1000 {
                break;
            }
        } else if let Some(d) = l.strip_prefix("set default=") {
            default = Some(d.trim_matches(['"', '\'']).to_owned());
        }
    }
    (entries, default)
}

/// GRUB legacy `title` lines and `default N` from menu.lst / grub.conf.
fn grub_legacy_entries(text: &str) -> (Vec<String>, Option<String>) {
    let mut entries = Vec::new();
    let mut default = None;
    for l in text.lines().take(100_000).map(str::trim) {
        if let Some(t) = l.strip_prefix("title ") {
            entries.push(t.trim().to_owned());
        } else if let Some(d) = l.strip_prefix("default") {
            default = Some(d.trim_start_matches(['=', ' ']).trim().to_owned());
        }
    }
    (entries, default)
}

/// BLS entries (`/boot/loader/entries/*.conf`): their `title` lines.
fn bls_entries(fs: &dyn FsRead, dir: &str) -> Vec<String> {
    list_dir(fs, dir)
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .filter_map(|n| {
            let t = read_text(fs, &format!("{dir}/{n}"))?;
            let title = t
                .lines()
                .find_map(|l| l.trim().strip_prefix("title"))
                .map(|s| s.trim().to_owned());
            Some(title.unwrap_or(n))
        })
        .collect()
}

/// Bootloaders installed on a Linux root (with its `/boot` mounted), device `dev`.
pub fn linux_bootloaders(fs: &dyn FsRead, dev: &str) -> Vec<Bootloader> {
    let mut out = Vec::new();
    let bls = bls_entries(fs, "/boot/loader/entries");
    for (kind, cfg) in [
        ("grub2-bios", "/boot/grub/grub.cfg"),
        ("grub2-bios", "/boot/grub2/grub.cfg"),
    ] {
        if let Some(t) = read_text(fs, cfg) {
            let (mut entries, default) = grub_cfg_entries(&t);
            let is_bls = t.contains("blscfg");
            if is_bls {
                entries.extend(bls.iter().cloned());
            }
            let efi_only = fs.exists(b"/boot/grub2/i386-pc").ok() == Some(false)
                && fs.exists(b"/boot/grub/i386-pc").ok() == Some(false)
                && fs.exists(b"/boot/efi/EFI").ok() == Some(true);
            out.push(Bootloader {
                kind: if efi_only {
                    "grub2-efi".into()
                } else {
                    kind.into()
                },
                device: dev.to_owned(),
                config: Some(cfg.to_owned()),
                entries,
                default_entry: default,
                default_loader: None,
            });
            break;
        }
    }
    for cfg in ["/boot/grub/menu.lst", "/boot/grub/grub.conf"] {
        if let Some(t) = read_text(fs, cfg)
            && !fs.exists(b"/boot/grub/grub.cfg").unwrap_or(false)
        {
            let (entries, default) = grub_legacy_entries(&t);
            out.push(Bootloader {
                kind: "grub-legacy".into(),
                device: dev.to_owned(),
                config: Some(cfg.to_owned()),
                entries,
                default_entry: default,
                default_loader: None,
            });
            break;
        }
    }
    for cfg in [
        "/boot/extlinux/extlinux.conf",
        "/boot/syslinux/syslinux.cfg",
        "/extlinux.conf",
    ] {
        if let Some(t) = read_text(fs, cfg) {
            let entries = t
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("LABEL ")
                        .or_else(|| l.trim().strip_prefix("label "))
                })
                .map(|s| s.trim().to_owned())
                .collect();
            out.push(Bootloader {
                kind: "extlinux".into(),
                device: dev.to_owned(),
                config: Some(cfg.to_owned()),
                entries,
                default_entry: None,
                default_loader: None,
            });
            break;
        }
    }
    if out.is_empty() && !bls.is_empty() {
        out.push(Bootloader {
            kind: "bls".into(),
            device: dev.to_owned(),
            config: Some("/boot/loader/entries".into()),
            entries: bls,
            default_entry: None,
            default_loader: None,
        });
    }
    out
}

/// BCD object of the Windows Boot Manager (`{bootmgr}`).
const BCD_BOOTMGR: &str = "{9dea862c-5cdd-4e70-acc1-f32b344d4795}";
/// BCD element: the boot manager's default object (a GUID string).
const BCD_DEFAULT_OBJECT: &str = "23000003";
/// BCD element: the boot manager's display order (GUID strings).
const BCD_DISPLAY_ORDER: &str = "24000001";
/// BCD element: an application's description.
const BCD_DESCRIPTION: &str = "12000004";
/// BCD element: an application's path.
const BCD_APPLICATION_PATH: &str = "12000002";

fn bcd_element(h: &hive::Hive, object: &str, element: &str) -> Option<hive::Value> {
    h.open_path(&format!("Objects\\{object}\\Elements\\{element}"))
        .ok()??
        .value("Element")
        .ok()?
}

/// Summarises a BCD store: the entries' descriptions in display order, the default entry's
/// description and its loader path.
#[must_use]
pub fn bcd_summary(bytes: Vec<u8>) -> Option<(Vec<String>, Option<String>, Option<String>)> {
    let h = hive::Hive::options().allow_dirty(true).open(bytes).ok()?;
    let default = bcd_element(&h, BCD_BOOTMGR, BCD_DEFAULT_OBJECT).and_then(|v| v.as_string());
    let order = bcd_element(&h, BCD_BOOTMGR, BCD_DISPLAY_ORDER)
        .and_then(|v| v.as_multi_string())
        .unwrap_or_default();
    let describe = |guid: &str| bcd_element(&h, guid, BCD_DESCRIPTION).and_then(|v| v.as_string());
    let entries = order.iter().take(64).filter_map(|g| describe(g)).collect();
    let (desc, loader) = match &default {
        Some(g) => (
            describe(g),
            bcd_element(&h, g, BCD_APPLICATION_PATH).and_then(|v| v.as_string()),
        ),
        None => (None, None),
    };
    Some((entries, desc, loader))
}

/// The Windows Boot Manager on a BIOS system partition (`/bootmgr` and `/Boot/BCD`).
pub fn windows_bios_bootloader(fs: &dyn FsRead, dev: &str) -> Option<Bootloader> {
    if !(fs.exists(b"/bootmgr").unwrap_or(false) && fs.exists(b"/Boot/BCD").unwrap_or(false)) {
        return None;
    }
    Some(with_bcd(fs, "windows-bootmgr", dev, "/Boot/BCD"))
}

fn with_bcd(fs: &dyn FsRead, kind: &str, dev: &str, bcd: &str) -> Bootloader {
    let summary = fs
        .read_file(bcd.as_bytes(), 64 << 20)
        .ok()
        .and_then(bcd_summary);
    let (entries, default_entry, default_loader) = summary.unwrap_or_default();
    Bootloader {
        kind: kind.into(),
        device: dev.to_owned(),
        config: Some(bcd.to_owned()),
        entries,
        default_entry,
        default_loader,
    }
}

/// Bootloaders on an EFI system partition.
pub fn esp_bootloaders(fs: &dyn FsRead, dev: &str) -> Vec<Bootloader> {
    let mut out = Vec::new();
    for vendor in list_dir(fs, "/EFI") {
        let dir = format!("/EFI/{vendor}");
        let files: Vec<String> = list_dir(fs, &dir);
        let has = |name: &str| files.iter().any(|f| f.eq_ignore_ascii_case(name));
        let kind = if vendor.eq_ignore_ascii_case("Microsoft") {
            let boot = list_dir(fs, &format!("{dir}/Boot"));
            if boot.iter().any(|f| f.eq_ignore_ascii_case("bootmgfw.efi")) {
                Some(("windows-bootmgr-efi", format!("{dir}/Boot/BCD")))
            } else {
                None
            }
        } else if vendor.eq_ignore_ascii_case("systemd") {
            Some(("systemd-boot", "/loader/loader.conf".to_owned()))
        } else if has("shimx64.efi") || has("shimaa64.efi") {
            Some(("shim", format!("{dir}/grub.cfg")))
        } else if has("grubx64.efi") || has("grubaa64.efi") || has("grubia32.efi") {
            Some(("grub2-efi", format!("{dir}/grub.cfg")))
        } else {
            // /EFI/BOOT holds the removable-media fallback copy of one of the above.
            None
        };
        if let Some((kind, config)) = kind {
            if kind == "windows-bootmgr-efi" {
                out.push(with_bcd(fs, kind, dev, &config));
                continue;
            }
            let entries = if kind == "systemd-boot" {
                bls_entries(fs, "/loader/entries")
            } else {
                Vec::new()
            };
            out.push(Bootloader {
                kind: kind.into(),
                device: dev.to_owned(),
                config: Some(config),
                entries,
                default_entry: None,
                default_loader: None,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_code_signatures() {
        assert_eq!(classify_boot_code(&[0; 440]), BootCode::None);
        let mut g = vec![0xebu8; 440];
        g[0x180..0x185].copy_from_slice(b"GRUB ");
        assert_eq!(classify_boot_code(&g), BootCode::Grub2);
        g[0x3e] = 3;
        g[0x3f] = 2;
        assert_eq!(classify_boot_code(&g), BootCode::GrubLegacy);
        let mut w = vec![0x33u8; 440];
        w[0x163..0x163 + 23].copy_from_slice(b"Invalid partition table");
        assert_eq!(classify_boot_code(&w), BootCode::Windows);
        assert_eq!(classify_boot_code(&[0x90; 440]), BootCode::Other);
        if let Ok(real) = std::fs::read("/usr/lib/grub/i386-pc/boot.img") {
            assert_eq!(classify_boot_code(&real[..440]), BootCode::Grub2);
        }
        if let Ok(real) = std::fs::read("/usr/lib/syslinux/mbr/mbr.bin") {
            assert_eq!(
                classify_boot_code(&real[..real.len().min(440)]),
                BootCode::Syslinux
            );
        }
    }

    #[test]
    fn grub_cfg_parsing() {
        let t = "set default=\"0\"\nmenuentry 'Debian GNU/Linux' --class debian {\n}\nsubmenu 'Advanced' {\n  menuentry \"Debian, with Linux 6.1.0-18-amd64\" {\n  }\n}\nmenuentry bare {\n}\n";
        let (e, d) = grub_cfg_entries(t);
        assert_eq!(
            e,
            vec![
                "Debian GNU/Linux",
                "Debian, with Linux 6.1.0-18-amd64",
                "bare"
            ]
        );
        assert_eq!(d.as_deref(), Some("0"));
    }

    #[test]
    fn grub_legacy_parsing() {
        let (e, d) =
            grub_legacy_entries("default=0\ntimeout=5\ntitle CentOS (2.6.32)\n  root (hd0,0)\n");
        assert_eq!(e, vec!["CentOS (2.6.32)"]);
        assert_eq!(d.as_deref(), Some("0"));
    }
}
