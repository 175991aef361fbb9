//! `/etc/fstab` (fstab(5)): entries and what their device specifications name.

/// Most entries read from one fstab (house style S12).
const MAX_ENTRIES: usize = 1024;

/// How an fstab line names its device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum DeviceSpec {
    /// `UUID=...` or `/dev/disk/by-uuid/...`.
    Uuid(String),
    /// `LABEL=...` or `/dev/disk/by-label/...`.
    Label(String),
    /// `PARTUUID=...` or `/dev/disk/by-partuuid/...`.
    PartUuid(String),
    /// `PARTLABEL=...`.
    PartLabel(String),
    /// A kernel device name such as `/dev/sda1`, `/dev/xvda2`, `/dev/nvme0n1p1`, `/dev/hda1`.
    KernelName(String),
    /// `/dev/mapper/VG-LV` or `/dev/VG/LV`: an LVM or device-mapper name, as (vg, lv) when it
    /// parses as LVM.
    Lvm {
        /// Volume group.
        vg: String,
        /// Logical volume.
        lv: String,
    },
    /// `/dev/disk/by-path/...`, `/dev/disk/by-id/...`, cciss names and anything else.
    Other(String),
    /// Pseudo filesystems (`proc`, `tmpfs`, `none`, ...).
    Pseudo(String),
}

/// One line of fstab.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    /// 1-based line number.
    pub line: usize,
    /// The first field as written.
    pub spec_raw: String,
    /// What the first field names.
    pub spec: DeviceSpec,
    /// Mount point (`none` for swap).
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options.
    pub options: String,
}

/// Decodes fstab's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = oct
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits an LVM device-mapper name `vg-lv` (dashes in names are doubled) into (vg, lv).
#[must_use]
pub fn split_dm_name(name: &str) -> Option<(String, String)> {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                i += 2;
                continue;
            }
            let vg = name.get(..i)?.replace("--", "-");
            let lv = name.get(i + 1..)?.replace("--", "-");
            if vg.is_empty() || lv.is_empty() {
                return None;
            }
            return Some((vg, lv));
        }
        i += 1;
    }
    None
}

/// Classifies a device specification.
#[must_use]
pub fn classify(spec: &str) -> DeviceSpec {
    let tagged = |p: &str| spec.strip_prefix(p).map(str::to_owned);
    if let Some(v) = tagged("UUID=").or_else(|| tagged("/dev/disk/by-uuid/")) {
        return DeviceSpec::Uuid(v.trim_matches('"').to_ascii_lowercase());
    }
    if let Some(v) = tagged("LABEL=").or_else(|| tagged("/dev/disk/by-label/")) {
        return DeviceSpec::Label(v.trim_matches('"').to_owned());
    }
    if let Some(v) = tagged("PARTUUID=").or_else(|| tagged("/dev/disk/by-partuuid/")) {
        return DeviceSpec::PartUuid(v.trim_matches('"').to_ascii_lowercase());
    }
    if let Some(v) = tagged("PARTLABEL=").or_else(|| tagged("/dev/disk/by-partlabel/")) {
        return DeviceSpec::PartLabel(v.trim_matches('"').to_owned());
    }
    if let Some(dm) = spec.strip_prefix("/dev/mapper/") {
        return match split_dm_name(dm) {
            Some((vg, lv)) => DeviceSpec::Lvm { vg, lv },
            None => DeviceSpec::Other(spec.to_owned()),
        };
    }
    if let Some(dev) = spec.strip_prefix("/dev/") {
        let is_kernel = ["sd", "hd", "vd", "xvd", "nvme", "mmcblk"]
            .iter()
            .any(|p| dev.starts_with(p) && !dev.contains('/'));
        if is_kernel {
            return DeviceSpec::KernelName(spec.to_owned());
        }
        // /dev/VG/LV
        let parts: Vec<&str> = dev.split('/').collect();
        if let [vg, lv] = parts.as_slice()
            && !["disk", "cciss", "md", "mapper"].contains(vg)
        {
            return DeviceSpec::Lvm {
                vg: (*vg).to_owned(),
                lv: (*lv).to_owned(),
            };
        }
        return DeviceSpec::Other(spec.to_owned());
    }
    DeviceSpec::Pseudo(spec.to_owned())
}

/// Parses fstab text. Malformed lines (fewer than 3 fields) are skipped.
#[must_use]
pub fn parse(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let (spec, mp, fstype) = (f.first()?, f.get(1)?, f.get(2)?);
            Some(FstabEntry {
                line: i + 1,
                spec_raw: unescape(spec),
                spec: classify(&unescape(spec)),
                mountpoint: unescape(mp),
                fstype: (*fstype).to_owned(),
                options: f
                    .get(3)
                    .map_or_else(|| "defaults".to_owned(), |s| (*s).to_owned()),
            })
        })
        .take(MAX_ENTRIES)
        .collect()
}

/// Decomposes a kernel disk name into (disk index, partition number): `sda1` → (0, 1),
/// `xvdb2` → (1, 2), `vdaa3` → (26, 3), `nvme0n1p2` → (0, 2) (namespace 1 of controller 0),
/// `hdc1` → (2, 1). `None` for whole disks without partitions or unknown forms.
#[must_use]
pub fn kernel_name_parts(spec: &str) -> Option<(u32, u32)> {
    let dev = spec.strip_prefix("/dev/")?;
    if let Some(rest) = dev.strip_prefix("nvme") {
        let (ctrl, rest) = rest.split_once('n')?;
        let (_ns, part) = rest.split_once('p')?;
        return Some((ctrl.parse().ok()?, part.parse().ok()?));
    }
    if let Some(rest) = dev.strip_prefix("mmcblk") {
        let (disk, part) = rest.split_once('p')?;
        return Some((disk.parse().ok()?, part.parse().ok()?));
    }
    let rest = ["xvd", "sd", "hd", "vd"]
        .iter()
        .find_map(|p| dev.strip_prefix(p))?;
    let letters: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
    let part: u32 = rest.get(letters.len()..)?.parse().ok()?;
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    // sda..sdz, sdaa..: bijective base 26.
    let mut idx: u32 = 0;
    for c in letters.bytes() {
        idx = idx.checked_mul(26)?.checked_add(u32::from(c - b'a') + 1)?;
    }
    Some((idx - 1, part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_fstab() {
        let t = "# comment\n/dev/sda1 / ext4 errors=remount-ro 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n/dev/mapper/rhel-root / xfs defaults 0 0\nLABEL=my\\040disk /data xfs defaults\n/dev/rhel/swap none swap defaults 0 0\nproc /proc proc defaults 0 0\nshort line\n";
        let e = parse(t);
        assert_eq!(e.len(), 6);
        assert_eq!(e[0].spec, DeviceSpec::KernelName("/dev/sda1".into()));
        assert_eq!((e[0].line, e[0].mountpoint.as_str()), (2, "/"));
        assert_eq!(e[1].spec, DeviceSpec::Uuid("abcd-1234".into()));
        assert_eq!(
            e[2].spec,
            DeviceSpec::Lvm {
                vg: "rhel".into(),
                lv: "root".into()
            }
        );
        assert_eq!(e[3].spec, DeviceSpec::Label("my disk".into()));
        assert_eq!(
            e[4].spec,
            DeviceSpec::Lvm {
                vg: "rhel".into(),
                lv: "swap".into()
            }
        );
        assert_eq!(e[5].spec, DeviceSpec::Pseudo("proc".into()));
    }

    #[test]
    fn dm_names_with_dashes() {
        assert_eq!(
            split_dm_name("my--vg-root--lv"),
            Some(("my-vg".into(), "root-lv".into()))
        );
        assert_eq!(split_dm_name("nodash"), None);
        assert_eq!(split_dm_name("-x"), None);
    }

    #[test]
    fn kernel_names() {
        assert_eq!(kernel_name_parts("/dev/sda1"), Some((0, 1)));
        assert_eq!(kernel_name_parts("/dev/xvdb2"), Some((1, 2)));
        assert_eq!(kernel_name_parts("/dev/sdaa3"), Some((26, 3)));
        assert_eq!(kernel_name_parts("/dev/hdc1"), Some((2, 1)));
        assert_eq!(kernel_name_parts("/dev/nvme0n1p2"), Some((0, 2)));
        assert_eq!(kernel_name_parts("/dev/sda"), None);
        assert_eq!(kernel_name_parts("/dev/sdzzzz1"), None);
    }
}
