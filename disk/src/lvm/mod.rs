//! LVM2: finding physical volumes, reading volume-group metadata, and opening logical volumes as
//! devices.
//!
//! [`scan`] looks at each given device (whole disks or partitions) for a PV label
//! ([`label`]), reads the text metadata of every metadata area, parses it with a bounded parser
//! ([`text`]) into the VG model ([`metadata`]), keeps the copy with the highest `seqno` per VG,
//! and matches the VG's PVs to devices by PV UUID. [`LvmScan::open_lv`] then builds a
//! [`Concat`] over the LV's segments.
//!
//! Only linear LVs are readable: segments of type `striped` with `stripe_count = 1`, any number
//! of them, spanning any number of PVs. Everything else (thin, thin-pool, raid*, mirror, cache,
//! vdo, striped with more than one stripe) is listed with its type and refused with
//! [`Error::Unsupported`] when opened.
//!
//! Damage on one device (a bad label checksum, a corrupt metadata area) does not stop the scan:
//! it becomes an [`LvmNote`] and the other copies are used (house style S9).
//!
//! Why our own parser: no maintained Rust crate reads LVM2 metadata, and the text format needs
//! strict caps on depth, size and node count for hostile images.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use disk::{MemDisk, SharedRead, lvm};
//!
//! // A blank disk carries no PV label: the scan finds nothing and notes nothing.
//! let blank: SharedRead = Arc::new(MemDisk::zeroed(1 << 20)?);
//! let found = lvm::scan(&[blank])?;
//! assert!(found.pvs.is_empty() && found.vgs.is_empty() && found.notes.is_empty());
//! // fstab names LVs by their device-mapper path, with dashes doubled.
//! assert_eq!(lvm::mapper_path("vg-sys", "root"), "/dev/mapper/vg--sys-root");
//! assert_eq!(
//!     lvm::parse_mapper_name("/dev/mapper/vg--sys-root"),
//!     Some(("vg-sys".to_owned(), "root".to_owned()))
//! );
//! # Ok::<(), disk::Error>(())
//! ```

#![warn(clippy::arithmetic_side_effects, clippy::as_conversions)]

use std::collections::HashMap;
use std::sync::Arc;

use crate::block::{BlockRead, SharedRead};
use crate::concat::{Concat, Piece};
use crate::{Error, Result};

pub mod label;
pub mod metadata;
pub mod text;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use label::PvLabel;
pub use metadata::{LogicalVolume, PhysicalVolume, Segment, Stripe, VolumeGroup};

/// Stable note codes.
pub mod notes {
    /// A PV label was found but is damaged (bad checksum, bad field); the device was skipped.
    pub const LABEL_CORRUPT: &str = "lvm-label-corrupt";
    /// A metadata area header or its text is damaged; other copies are used.
    pub const MDA_CORRUPT: &str = "lvm-mda-corrupt";
    /// Metadata text does not parse or lacks required fields; other copies are used.
    pub const METADATA_CORRUPT: &str = "lvm-metadata-corrupt";
    /// Copies of one VG's metadata have different sequence numbers; the newest was used.
    pub const SEQNO_MISMATCH: &str = "lvm-seqno-mismatch";
    /// A PV of a VG is not among the scanned devices (its LVs on it cannot be opened).
    pub const PV_MISSING: &str = "lvm-pv-missing";
    /// Two devices carry the same PV UUID (cloned disks); the first was used.
    pub const DUPLICATE_PV: &str = "lvm-duplicate-pv-uuid";
}

/// Something unusual found while scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmNote {
    /// A stable code from [`notes`].
    pub code: &'static str,
    /// The device (index into the slice given to [`scan`]) concerned, if any.
    pub device: Option<usize>,
    /// What happened, with offsets.
    pub message: String,
}

impl std::fmt::Display for LvmNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.device {
            Some(d) => write!(f, "{}: device {d}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

/// A device that carries a PV label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    /// Index into the slice given to [`scan`].
    pub device: usize,
    /// The validated label and PV header.
    pub label: PvLabel,
    /// The VG this PV belongs to, if any VG's metadata lists it.
    pub vg_name: Option<String>,
}

/// What [`scan`] found.
#[derive(Clone)]
pub struct LvmScan {
    /// Every device with a valid PV label, in device order.
    pub pvs: Vec<PvInfo>,
    /// The volume groups, in the order they were first seen.
    pub vgs: Vec<VolumeGroup>,
    /// Unusual findings.
    pub notes: Vec<LvmNote>,
    devices: Vec<SharedRead>,
    /// Per VG (same order as `vgs`), built once: a hostile VG may list ~10^5 PVs and ~10^5 LVs,
    /// and a linear search per segment or per opened LV would be quadratic.
    index: Vec<VgIndex>,
}

/// Name lookups of one VG.
#[derive(Clone, Default)]
struct VgIndex {
    /// PV name to index in `VolumeGroup::pvs`.
    pvs: HashMap<String, usize>,
    /// LV name to index in `VolumeGroup::lvs`.
    lvs: HashMap<String, usize>,
}

impl std::fmt::Debug for LvmScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvmScan")
            .field("pvs", &self.pvs)
            .field("vgs", &self.vgs)
            .field("notes", &self.notes)
            .finish_non_exhaustive()
    }
}

fn is_damage(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt(_) | Error::Unsupported(_) | Error::OutOfBounds { .. }
    )
}

/// Removes the dashes of an LVM id so dashed and raw forms compare equal.
fn bare_id(id: &str) -> String {
    id.chars().filter(|&c| c != '-').collect()
}

/// Scans `devices` for LVM2 physical volumes and assembles their volume groups.
///
/// # Errors
/// Only [`Error::Io`] (a device failed). Damage is reported in [`LvmScan::notes`].
pub fn scan(devices: &[SharedRead]) -> Result<LvmScan> {
    let mut notes = Vec::new();
    let mut pvs = Vec::new();
    let mut vgs: Vec<VolumeGroup> = Vec::new();
    for (i, dev) in devices.iter().enumerate() {
        let l = match label::find_label(&**dev) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) if is_damage(&e) => {
                notes.push(LvmNote {
                    code: notes::LABEL_CORRUPT,
                    device: Some(i),
                    message: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        for area in &l.metadata_areas {
            let found = match label::read_mda(&**dev, *area) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) if is_damage(&e) => {
                    notes.push(LvmNote {
                        code: notes::MDA_CORRUPT,
                        device: Some(i),
                        message: e.to_string(),
                    });
                    continue;
                }
                Err(e) => return Err(e),
            };
            let vg = text::parse(&found.text, found.offset)
                .and_then(|doc| metadata::volume_group(&doc, i, found.offset));
            match vg {
                Ok(vg) => merge(&mut vgs, vg, &mut notes),
                Err(e) => notes.push(LvmNote {
                    code: notes::METADATA_CORRUPT,
                    device: Some(i),
                    message: e.to_string(),
                }),
            }
        }
        pvs.push(PvInfo {
            device: i,
            label: l,
            vg_name: None,
        });
    }

    // Match PVs to devices by UUID; the first device with a UUID wins.
    let mut by_uuid: HashMap<String, usize> = HashMap::new();
    for (k, p) in pvs.iter().enumerate() {
        let id = bare_id(&p.label.uuid);
        if let Some(&first) = by_uuid.get(&id) {
            let first_dev = pvs.get(first).map_or(0, |f| f.device);
            notes.push(LvmNote {
                code: notes::DUPLICATE_PV,
                device: Some(p.device),
                message: format!(
                    "pv uuid {} is also on device {first_dev}; device {first_dev} is used",
                    p.label.uuid
                ),
            });
        } else {
            by_uuid.insert(id, k);
        }
    }
    for vg in &mut vgs {
        for pv in &mut vg.pvs {
            match by_uuid.get(&bare_id(&pv.id)) {
                Some(&k) => {
                    if let Some(info) = pvs.get_mut(k) {
                        pv.device = Some(info.device);
                        info.vg_name = Some(vg.name.clone());
                    }
                }
                None => notes.push(LvmNote {
                    code: notes::PV_MISSING,
                    device: None,
                    message: format!(
                        "vg {} pv {} ({}) is not among the scanned devices",
                        vg.name, pv.name, pv.id
                    ),
                }),
            }
        }
    }
    let index = vgs
        .iter()
        .map(|vg| {
            let mut ix = VgIndex::default();
            for (k, p) in vg.pvs.iter().enumerate() {
                ix.pvs.entry(p.name.clone()).or_insert(k);
            }
            for (k, l) in vg.lvs.iter().enumerate() {
                ix.lvs.entry(l.name.clone()).or_insert(k);
            }
            ix
        })
        .collect();
    Ok(LvmScan {
        pvs,
        vgs,
        notes,
        devices: devices.to_vec(),
        index,
    })
}

/// Adds a metadata copy, keeping the highest `seqno` per VG id.
fn merge(vgs: &mut Vec<VolumeGroup>, vg: VolumeGroup, notes: &mut Vec<LvmNote>) {
    let Some(old) = vgs.iter_mut().find(|v| bare_id(&v.id) == bare_id(&vg.id)) else {
        vgs.push(vg);
        return;
    };
    if old.seqno != vg.seqno {
        notes.push(LvmNote {
            code: notes::SEQNO_MISMATCH,
            device: Some(vg.metadata_location.0),
            message: format!(
                "vg {} has metadata seqno {} here and {} on device {}; using {}",
                vg.name,
                vg.seqno,
                old.seqno,
                old.metadata_location.0,
                old.seqno.max(vg.seqno)
            ),
        });
        if vg.seqno > old.seqno {
            *old = vg;
        }
    }
}

impl LvmScan {
    /// The VG called `name`.
    #[must_use]
    pub fn vg(&self, name: &str) -> Option<&VolumeGroup> {
        self.vgs.iter().find(|v| v.name == name)
    }

    /// Every `(vg, lv)` pair, in order.
    pub fn lvs(&self) -> impl Iterator<Item = (&VolumeGroup, &LogicalVolume)> {
        self.vgs
            .iter()
            .flat_map(|vg| vg.lvs.iter().map(move |lv| (vg, lv)))
    }

    /// The pieces of a linear LV: where each run of its extents lives.
    ///
    /// # Errors
    /// As [`LvmScan::open_lv`].
    pub fn lv_pieces(&self, vg_name: &str, lv_name: &str) -> Result<Vec<Piece>> {
        let (vg, ix) = self
            .vgs
            .iter()
            .zip(&self.index)
            .find(|(v, _)| v.name == vg_name)
            .ok_or_else(|| Error::Usage(format!("no volume group {vg_name:?}")))?;
        let lv = ix
            .lvs
            .get(lv_name)
            .and_then(|&k| vg.lvs.get(k))
            .ok_or_else(|| {
                Error::Usage(format!("no logical volume {lv_name:?} in vg {vg_name:?}"))
            })?;
        let at = vg.metadata_location.1;
        let bad = |d: String| Error::corrupt("lvm metadata", at, d);
        let what = format!("lv {vg_name}/{lv_name}");
        if lv.segments.is_empty() {
            return Err(bad(format!("{what} has no segments")));
        }
        let mut segs: Vec<&Segment> = lv.segments.iter().collect();
        segs.sort_by_key(|s| s.start_extent);
        let mut pieces = Vec::with_capacity(segs.len());
        let mut next = 0u64;
        for seg in segs {
            if seg.segment_type != metadata::SEGTYPE_STRIPED {
                return Err(Error::unsupported(
                    "lvm segment type",
                    format!("{what}: {}", seg.segment_type),
                ));
            }
            let Some(stripe) = seg.stripes.first().filter(|_| seg.is_linear()) else {
                return Err(Error::unsupported(
                    "lvm segment type",
                    format!("{what}: striped with {} stripes", seg.stripe_count),
                ));
            };
            if seg.start_extent != next {
                return Err(bad(format!(
                    "{what} segment starts at extent {} but {next} was expected",
                    seg.start_extent
                )));
            }
            if seg.extent_count == 0 {
                return Err(bad(format!("{what} segment at extent {next} is empty")));
            }
            next = next
                .checked_add(seg.extent_count)
                .ok_or_else(|| bad(format!("{what} extent count overflows")))?;
            let pv = ix.pvs.get(stripe.pv.as_str()).and_then(|&k| vg.pvs.get(k));
            if pv.is_none() && ix.lvs.contains_key(&stripe.pv) {
                // pvmove and mirror layouts stack segments on other LVs.
                return Err(Error::unsupported(
                    "lvm segment type",
                    format!("{what}: layered on lv {}", stripe.pv),
                ));
            }
            let pv =
                pv.ok_or_else(|| bad(format!("{what} refers to unknown pv {:?}", stripe.pv)))?;
            let end = stripe.start_extent.checked_add(seg.extent_count);
            if end.is_none_or(|e| e > pv.pe_count) {
                return Err(bad(format!(
                    "{what} uses extents {}+{} of pv {} which has {}",
                    stripe.start_extent, seg.extent_count, pv.name, pv.pe_count
                )));
            }
            let dev = pv.device.and_then(|d| self.devices.get(d)).ok_or_else(|| {
                Error::Usage(format!(
                    "pv {} ({}) of {what} is not among the scanned devices",
                    pv.name, pv.id
                ))
            })?;
            let offset = stripe
                .start_extent
                .checked_mul(vg.extent_size)
                .and_then(|o| o.checked_add(pv.pe_start));
            let len = seg.extent_count.checked_mul(vg.extent_size);
            let (Some(offset), Some(len)) = (offset, len) else {
                return Err(bad(format!("{what} extent arithmetic overflows")));
            };
            if offset.checked_add(len).is_none_or(|e| e > dev.size()) {
                return Err(bad(format!(
                    "{what} needs bytes {offset:#x}+{len:#x} of pv {}, which has {} bytes",
                    pv.name,
                    dev.size()
                )));
            }
            pieces.push(Piece {
                dev: dev.clone(),
                offset,
                len,
            });
        }
        Ok(pieces)
    }

    /// Opens a linear LV as a device.
    ///
    /// # Errors
    /// [`Error::Usage`] if the VG or LV does not exist or one of its PVs was not scanned;
    /// [`Error::Unsupported`] if a segment is not linear (thin, raid, striped over several PVs…);
    /// [`Error::Corrupt`] if the segments leave gaps, overlap or pass the end of a PV.
    pub fn open_lv(&self, vg: &str, lv: &str) -> Result<Arc<dyn BlockRead>> {
        Ok(Arc::new(Concat::new(self.lv_pieces(vg, lv)?)?))
    }
}

/// The device-mapper name of an LV, as in `/dev/mapper/<name>`: dashes in the VG and LV names
/// are doubled, and a single dash joins them (`vg-root` + `lv_home` → `vg--root-lv_home`).
#[must_use]
pub fn mapper_name(vg: &str, lv: &str) -> String {
    format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"))
}

/// The `/dev/mapper/...` path of an LV.
#[must_use]
pub fn mapper_path(vg: &str, lv: &str) -> String {
    format!("/dev/mapper/{}", mapper_name(vg, lv))
}

/// Splits a device-mapper name (optionally with `/dev/mapper/`) into `(vg, lv)`, undoing the dash
/// doubling. `None` if it has no single dash or either part is empty.
///
/// In a run of dashes the doubled pairs come first and the separator last, because LVM names
/// never start with a dash (`lvm(8)` "valid names"): `a---b` is VG `a-`, LV `b`.
#[must_use]
pub fn parse_mapper_name(name: &str) -> Option<(String, String)> {
    let name = name.strip_prefix("/dev/mapper/").unwrap_or(name);
    let mut vg = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '-' {
            if chars.peek() == Some(&'-') {
                chars.next();
                vg.push('-');
            } else {
                let rest: String = chars.collect();
                let lv = rest.replace("--", "-");
                return (!vg.is_empty() && !lv.is_empty()).then_some((vg, lv));
            }
        } else {
            vg.push(c);
        }
    }
    None
}

/// Fuzzing entry points (house style S17).
#[doc(hidden)]
pub mod fuzzing {
    use std::sync::Arc;

    use crate::block::{BlockRead, SharedRead};
    use crate::mem::MemDisk;

    /// Parses `data` as LVM text metadata and builds the VG; must never panic.
    pub fn fuzz_lvm_metadata(data: &[u8]) {
        if let Ok(doc) = super::text::parse(data, 0)
            && let Ok(vg) = super::metadata::volume_group(&doc, 0, 0)
        {
            for lv in &vg.lvs {
                let _ = (lv.is_supported(), lv.segment_types(), lv.extent_count());
            }
        }
    }

    /// Scans `data` as one PV, then opens every LV and reads its first and last bytes; must
    /// never panic.
    pub fn fuzz_lvm_scan(data: &[u8]) {
        let dev: SharedRead = Arc::new(MemDisk::from_vec(data.to_vec()));
        let Ok(s) = super::scan(&[dev]) else {
            return;
        };
        for (vg, lv) in s.lvs() {
            if let Ok(d) = s.open_lv(&vg.name, &lv.name) {
                let mut b = [0u8; 8];
                let _ = d.read_exact_at(0, &mut b);
                let _ = d.read_exact_at(d.size().saturating_sub(8), &mut b);
            }
        }
        for n in &s.notes {
            let _ = n.to_string();
        }
    }
}
