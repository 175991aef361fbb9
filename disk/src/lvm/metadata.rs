//! The VG model built from parsed text metadata (LVM2 `lib/format_text/import_vsn1.c`,
//! `man lvm` "metadata" and `lvmcache`): volume group, physical volumes, logical volumes and
//! their segments.
//!
//! All sizes in the text are in 512-byte sectors (`extent_size`, `pe_start`) or extents
//! (`start_extent`, `extent_count`, stripe starts); this module keeps extents and exposes bytes.

use super::label::SECTOR_SIZE;
use super::text::{Section, Value};
use crate::{Error, Result};

/// The segment type LVM writes for linear and striped segments.
pub const SEGTYPE_STRIPED: &str = "striped";
/// Most segments per LV we accept (each becomes a [`crate::concat::Piece`]).
pub const MAX_SEGMENTS: usize = crate::concat::MAX_PIECES;

/// One physical volume of a VG, as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalVolume {
    /// The name inside this VG's metadata, such as `"pv0"`.
    pub name: String,
    /// The PV UUID (dashed).
    pub id: String,
    /// The device path LVM last saw (a hint only).
    pub device_hint: Option<String>,
    /// Start of the first extent, in bytes from the start of the PV.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
    /// Index into the devices given to [`super::scan`] holding this PV, if found.
    pub device: Option<usize>,
}

/// One stripe of a segment: extents of a PV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stripe {
    /// The PV name (`"pv0"`) in this VG, or an LV name for layered types.
    pub pv: String,
    /// First extent on that PV.
    pub start_extent: u64,
}

/// One segment of a logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First logical extent of the segment in the LV.
    pub start_extent: u64,
    /// Number of logical extents.
    pub extent_count: u64,
    /// The segment type: `"striped"` (linear when `stripe_count` is 1), `"thin"`, `"raid1"`, …
    pub segment_type: String,
    /// `stripe_count` for striped segments, else 0.
    pub stripe_count: u64,
    /// The `stripes` array for striped segments.
    pub stripes: Vec<Stripe>,
}

impl Segment {
    /// Whether this segment is linear (`striped` with one stripe), the only kind we can read.
    #[must_use]
    pub fn is_linear(&self) -> bool {
        self.segment_type == SEGTYPE_STRIPED && self.stripe_count == 1 && self.stripes.len() == 1
    }
}

/// One logical volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// The LV name.
    pub name: String,
    /// The LV UUID (dashed).
    pub id: String,
    /// The `status` flags, such as `["READ", "WRITE", "VISIBLE"]`.
    pub status: Vec<String>,
    /// The segments, in the order of the metadata.
    pub segments: Vec<Segment>,
}

impl LogicalVolume {
    /// Whether the LV is user-visible (sub-LVs of thin pools or RAID are not).
    #[must_use]
    pub fn visible(&self) -> bool {
        self.status.iter().any(|s| s == "VISIBLE")
    }
    /// Total extents over all segments (saturating).
    #[must_use]
    pub fn extent_count(&self) -> u64 {
        self.segments
            .iter()
            .fold(0u64, |a, s| a.saturating_add(s.extent_count))
    }
    /// Whether every segment is linear, so [`super::LvmScan::open_lv`] can read it.
    #[must_use]
    pub fn is_supported(&self) -> bool {
        !self.segments.is_empty() && self.segments.iter().all(Segment::is_linear)
    }
    /// The segment types used, deduplicated, in order (for reports: `["thin"]`, `["raid1"]`).
    #[must_use]
    pub fn segment_types(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for s in &self.segments {
            let t = if s.segment_type == SEGTYPE_STRIPED && s.stripe_count != 1 {
                format!("striped({})", s.stripe_count)
            } else if s.segment_type == SEGTYPE_STRIPED {
                "linear".to_owned()
            } else {
                s.segment_type.clone()
            };
            if !v.contains(&t) {
                v.push(t);
            }
        }
        v
    }
}

/// A volume group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeGroup {
    /// The VG name.
    pub name: String,
    /// The VG UUID (dashed).
    pub id: String,
    /// The metadata sequence number of the copy used.
    pub seqno: u64,
    /// Extent size in bytes.
    pub extent_size: u64,
    /// The `status` flags.
    pub status: Vec<String>,
    /// The physical volumes.
    pub pvs: Vec<PhysicalVolume>,
    /// The logical volumes.
    pub lvs: Vec<LogicalVolume>,
    /// Where the text of the copy used starts (device index, byte offset), for error messages.
    pub metadata_location: (usize, u64),
}

impl VolumeGroup {
    /// The LV called `name`.
    #[must_use]
    pub fn lv(&self, name: &str) -> Option<&LogicalVolume> {
        self.lvs.iter().find(|l| l.name == name)
    }
    /// The PV called `name` (`"pv0"`).
    #[must_use]
    pub fn pv(&self, name: &str) -> Option<&PhysicalVolume> {
        self.pvs.iter().find(|p| p.name == name)
    }
}

/// Largest extent size we accept, 16 GiB. The text format could say up to `u32::MAX` sectors, but
/// real VGs use 4 MiB to 1 GiB; the bound keeps extent arithmetic far from overflow.
pub const MAX_EXTENT_SIZE_BYTES: u64 = 16 << 30;

fn uint(sec: &Section, key: &str, what: &str, at: u64) -> Result<u64> {
    match sec.value(key) {
        Some(Value::Int(i)) => u64::try_from(*i).map_err(|_| {
            Error::corrupt(
                "lvm metadata",
                at,
                format!("{what} {key} = {i} is negative"),
            )
        }),
        _ => Err(Error::corrupt(
            "lvm metadata",
            at,
            format!("{what} has no integer {key}"),
        )),
    }
}

fn string(sec: &Section, key: &str, what: &str, at: u64) -> Result<String> {
    sec.str(key)
        .map(str::to_owned)
        .ok_or_else(|| Error::corrupt("lvm metadata", at, format!("{what} has no string {key}")))
}

/// The VG described by a parsed metadata document at byte `at` of device `dev`.
///
/// # Errors
/// [`Error::Corrupt`] if the document has no VG section or a required field is missing or out of
/// range. Unknown fields are ignored (house style S13: they are compatible additions).
pub fn volume_group(doc: &Section, dev: usize, at: u64) -> Result<VolumeGroup> {
    let bad = |d: String| Error::corrupt("lvm metadata", at, d);
    let (name, vg) = doc
        .sections()
        .next()
        .ok_or_else(|| bad("no volume group section".into()))?;
    let what = format!("vg {name}");
    let extent_sectors = uint(vg, "extent_size", &what, at)?;
    let extent_size = extent_sectors
        .checked_mul(SECTOR_SIZE)
        .filter(|&b| b > 0 && b <= MAX_EXTENT_SIZE_BYTES)
        .ok_or_else(|| {
            bad(format!(
                "vg {name} extent_size {extent_sectors} sectors out of range 1..={}",
                MAX_EXTENT_SIZE_BYTES / SECTOR_SIZE
            ))
        })?;
    let mut pvs = Vec::new();
    if let Some(pv_sec) = vg.section("physical_volumes") {
        for (pv_name, pv) in pv_sec.sections() {
            let what = format!("pv {pv_name}");
            let pe_start_sectors = uint(pv, "pe_start", &what, at)?;
            let pe_start = pe_start_sectors.checked_mul(SECTOR_SIZE).ok_or_else(|| {
                bad(format!(
                    "pv {pv_name} pe_start {pe_start_sectors} overflows"
                ))
            })?;
            pvs.push(PhysicalVolume {
                name: pv_name.to_owned(),
                id: string(pv, "id", &what, at)?,
                device_hint: pv.str("device").map(str::to_owned),
                pe_start,
                pe_count: uint(pv, "pe_count", &what, at)?,
                device: None,
            });
        }
    }
    let mut lvs = Vec::new();
    if let Some(lv_sec) = vg.section("logical_volumes") {
        for (lv_name, lv) in lv_sec.sections() {
            lvs.push(logical_volume(lv_name, lv, at)?);
        }
    }
    Ok(VolumeGroup {
        name: name.to_owned(),
        id: string(vg, "id", &what, at)?,
        seqno: uint(vg, "seqno", &what, at)?,
        extent_size,
        status: vg.str_array("status"),
        pvs,
        lvs,
        metadata_location: (dev, at),
    })
}

fn logical_volume(name: &str, lv: &Section, at: u64) -> Result<LogicalVolume> {
    let bad = |d: String| Error::corrupt("lvm metadata", at, d);
    let mut segments = Vec::new();
    for (seg_name, seg) in lv.sections() {
        if segments.len() >= MAX_SEGMENTS {
            return Err(bad(format!(
                "lv {name} has more than {MAX_SEGMENTS} segments"
            )));
        }
        let what = format!("lv {name} {seg_name}");
        let segment_type = string(seg, "type", &what, at)?;
        let mut stripe_count = 0;
        let mut stripes = Vec::new();
        if segment_type == SEGTYPE_STRIPED {
            stripe_count = uint(seg, "stripe_count", &what, at)?;
            let Some(Value::Array(a)) = seg.value("stripes") else {
                return Err(bad(format!("{what} has no stripes array")));
            };
            if a.len() % 2 != 0 {
                return Err(bad(format!(
                    "{what} stripes array has odd length {}",
                    a.len()
                )));
            }
            for pair in a.chunks_exact(2) {
                match pair {
                    [Value::Str(pv), Value::Int(start)] => stripes.push(Stripe {
                        pv: pv.clone(),
                        start_extent: u64::try_from(*start)
                            .map_err(|_| bad(format!("{what} stripe start {start} is negative")))?,
                    }),
                    _ => return Err(bad(format!("{what} stripes are not (name, extent) pairs"))),
                }
            }
            if u64::try_from(stripes.len()).ok() != Some(stripe_count) {
                return Err(bad(format!(
                    "{what} stripe_count {stripe_count} but {} stripes",
                    stripes.len()
                )));
            }
        }
        segments.push(Segment {
            start_extent: uint(seg, "start_extent", &what, at)?,
            extent_count: uint(seg, "extent_count", &what, at)?,
            segment_type,
            stripe_count,
            stripes,
        });
    }
    Ok(LogicalVolume {
        name: name.to_owned(),
        id: string(lv, "id", &format!("lv {name}"), at)?,
        status: lv.str_array("status"),
        segments,
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::arithmetic_side_effects,
        clippy::as_conversions,
        clippy::cast_possible_truncation
    )]
    use super::*;
    use crate::lvm::text::parse;

    pub(crate) const SAMPLE: &str = r#"vg0 {
id = "jDYtpS-oJm6-x9t8-wO1d-tqvG-ycjD-Y7iLqc"
seqno = 3
format = "lvm2"
status = ["RESIZEABLE", "READ", "WRITE"]
flags = []
extent_size = 8192
max_lv = 0
physical_volumes {
pv0 {
id = "L8vvVB-5c8t-I7y0-72QZ-LE2q-GZlr-D4dSww"
device = "/dev/loop0"
status = ["ALLOCATABLE"]
dev_size = 131072
pe_start = 2048
pe_count = 15
}
}
logical_volumes {
lin {
id = "F8pbES-8rJk-Blcx-m0nB-4nEn-Gh4s-BaXu9f"
status = ["READ", "WRITE", "VISIBLE"]
segment_count = 1
segment1 {
start_extent = 0
extent_count = 15
type = "striped"
stripe_count = 1
stripes = [
"pv0", 0
]
}
}
pool {
id = "x"
status = ["READ", "WRITE"]
segment1 {
start_extent = 0
extent_count = 2
type = "thin-pool"
metadata = "pool_tmeta"
}
}
}
}
contents = "Text Format Volume Group"
"#;

    fn vg(text: &str) -> Result<VolumeGroup> {
        volume_group(&parse(text.as_bytes(), 0).unwrap(), 0, 0x1200)
    }

    #[test]
    fn builds_vg_field_by_field() {
        let v = vg(SAMPLE).unwrap();
        assert_eq!(v.name, "vg0");
        assert_eq!(v.id, "jDYtpS-oJm6-x9t8-wO1d-tqvG-ycjD-Y7iLqc");
        assert_eq!(v.seqno, 3);
        assert_eq!(v.extent_size, 4 << 20);
        assert_eq!(v.status, ["RESIZEABLE", "READ", "WRITE"]);
        assert_eq!(
            v.pvs,
            [PhysicalVolume {
                name: "pv0".into(),
                id: "L8vvVB-5c8t-I7y0-72QZ-LE2q-GZlr-D4dSww".into(),
                device_hint: Some("/dev/loop0".into()),
                pe_start: 1 << 20,
                pe_count: 15,
                device: None,
            }]
        );
        let lin = v.lv("lin").unwrap();
        assert!(lin.visible() && lin.is_supported());
        assert_eq!(lin.extent_count(), 15);
        assert_eq!(lin.segment_types(), ["linear"]);
        assert_eq!(
            lin.segments,
            [Segment {
                start_extent: 0,
                extent_count: 15,
                segment_type: "striped".into(),
                stripe_count: 1,
                stripes: vec![Stripe {
                    pv: "pv0".into(),
                    start_extent: 0
                }],
            }]
        );
        let pool = v.lv("pool").unwrap();
        assert!(!pool.visible() && !pool.is_supported());
        assert_eq!(pool.segment_types(), ["thin-pool"]);
        assert_eq!(v.metadata_location, (0, 0x1200));
    }

    #[test]
    fn each_required_field_is_validated() {
        let cases = [
            (
                "extent_size = 8192",
                "extent_size = -1",
                "vg vg0 extent_size = -1 is negative",
            ),
            (
                "extent_size = 8192",
                "extent_size = 0",
                "vg vg0 extent_size 0 sectors out of range 1..=33554432",
            ),
            (
                "extent_size = 8192",
                "",
                "vg vg0 has no integer extent_size",
            ),
            ("seqno = 3", "seqno = \"3\"", "vg vg0 has no integer seqno"),
            (
                "pe_start = 2048",
                "pe_start = 36028797018963968",
                "pv pv0 pe_start 36028797018963968 overflows",
            ),
            ("pe_count = 15", "", "pv pv0 has no integer pe_count"),
            (
                "type = \"striped\"",
                "",
                "lv lin segment1 has no string type",
            ),
            (
                "stripe_count = 1",
                "stripe_count = 2",
                "lv lin segment1 stripe_count 2 but 1 stripes",
            ),
            (
                "\"pv0\", 0\n",
                "\"pv0\"\n",
                "lv lin segment1 stripes array has odd length 1",
            ),
            (
                "\"pv0\", 0\n",
                "0, \"pv0\"\n",
                "lv lin segment1 stripes are not (name, extent) pairs",
            ),
            (
                "\"pv0\", 0\n",
                "\"pv0\", -4\n",
                "lv lin segment1 stripe start -4 is negative",
            ),
            (
                "stripes = [",
                "stripez = [",
                "lv lin segment1 has no stripes array",
            ),
            (
                "start_extent = 0\nextent_count = 15",
                "extent_count = 15",
                "lv lin segment1 has no integer start_extent",
            ),
        ];
        for (from, to, want) in cases {
            assert!(SAMPLE.contains(from), "{from}");
            let e = vg(&SAMPLE.replacen(from, to, 1)).unwrap_err();
            let c = e.as_corrupt().unwrap();
            assert_eq!((c.structure(), c.offset()), ("lvm metadata", 0x1200));
            assert_eq!(c.detail(), want);
        }
        let e = vg("contents = \"x\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "corrupt lvm metadata at 0x1200: no volume group section"
        );
    }
}
