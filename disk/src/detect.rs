//! Image format detection by magic bytes.
//!
//! # Only on trusted input (house style S6)
//! Probing is a guess from bytes the guest may control: a guest that can write to a raw disk can
//! write a qcow2 header into its first sector, and a later probe would then follow that header's
//! backing-file reference. Callers must therefore decide an image's format once, from trusted
//! configuration, and pin it (`--format`, [`crate::open::OpenOptions::format`]) for any image a
//! guest could have written. [`detect`] is a convenience for images the operator just received.
//!
//! The recognised formats are qcow2 (opened through [`crate::qcow2`]), and VMDK, VHDX, VHD and VDI,
//! which are recognised only so that the error says what the file is instead of treating it as a
//! raw disk. Everything else is raw.

use std::fmt;
use std::str::FromStr;

use crate::block::BlockRead;
use crate::{Error, Result};

/// qcow2 magic `"QFI\xfb"` (qcow2 spec, "Header", bytes 0-3).
pub const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";
/// Lowest valid qcow2 `cluster_bits` (qcow2 spec, "Header", bytes 20-23).
const QCOW2_MIN_CLUSTER_BITS: u32 = 9;
/// Highest `cluster_bits` QEMU accepts (2 MiB clusters); the spec's own ceiling.
const QCOW2_MAX_CLUSTER_BITS: u32 = 21;
/// Length of a version 3 header up to and including `header_length` (qcow2 spec, byte 100-103).
const QCOW2_V3_MIN_HEADER: u32 = 104;
/// VMDK sparse extent magic `"KDMV"` (VMDK spec, "Hosted Sparse Extent Header").
const VMDK_SPARSE_MAGIC: [u8; 4] = *b"KDMV";
/// First line of a VMDK text descriptor (VMDK spec, "The Descriptor File").
const VMDK_DESCRIPTOR: &[u8] = b"# Disk DescriptorFile";
/// VHDX file type identifier (MS-VHDX 2.2.1, "File Type Identifier").
const VHDX_MAGIC: [u8; 8] = *b"vhdxfile";
/// VHD footer cookie (VHD spec, "Hard Disk Footer Format"); the footer is the last 512 bytes.
const VHD_COOKIE: [u8; 8] = *b"conectix";
/// Size of the VHD footer.
const VHD_FOOTER_LEN: u64 = 512;
/// VDI header signature, little-endian at byte 64 after the 64-byte text banner.
const VDI_SIGNATURE: u32 = 0xbeda_107f;
/// Offset of the VDI signature.
const VDI_SIGNATURE_OFFSET: usize = 64;
/// Bytes read from the start of an image for detection.
const PROBE_LEN: u64 = 512;

/// A disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageFormat {
    /// The guest disk's bytes, one for one.
    Raw,
    /// QEMU copy-on-write version 2 or 3.
    Qcow2,
    /// VMware virtual disk (recognised, not supported).
    Vmdk,
    /// Hyper-V VHDX (recognised, not supported).
    Vhdx,
    /// Virtual PC / Hyper-V VHD (recognised, not supported).
    Vhd,
    /// VirtualBox VDI (recognised, not supported).
    Vdi,
}

impl ImageFormat {
    /// The name used on the command line and in messages (QEMU's names, except `vhd` for `vpc`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vmdk => "vmdk",
            Self::Vhdx => "vhdx",
            Self::Vhd => "vhd",
            Self::Vdi => "vdi",
        }
    }

    /// Whether this library can open images of this format.
    #[must_use]
    pub fn is_supported(self) -> bool {
        matches!(self, Self::Raw | Self::Qcow2)
    }

    /// The error for a format that is recognised but not supported, suggesting a conversion.
    pub(crate) fn unsupported_error(self) -> Error {
        Error::unsupported(
            "image format",
            format!(
                "{} (convert first, for example `qemu-img convert -O qcow2 IMAGE OUT.qcow2`)",
                self.name()
            ),
        )
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ImageFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raw" => Ok(Self::Raw),
            "qcow2" => Ok(Self::Qcow2),
            "vmdk" => Ok(Self::Vmdk),
            "vhdx" => Ok(Self::Vhdx),
            "vhd" | "vpc" => Ok(Self::Vhd),
            "vdi" => Ok(Self::Vdi),
            _ => Err(Error::Usage(format!(
                "unknown image format {s:?}, expected one of raw, qcow2, vmdk, vhdx, vhd, vdi"
            ))),
        }
    }
}

/// Guesses the format of `dev` from its magic bytes. Read the module docs before using it on an
/// image a guest could have written.
///
/// # Errors
/// [`Error::Usage`] if the image starts with the qcow2 magic but its header does not validate (a
/// raw disk that happens to begin with those bytes, or a damaged qcow2): the caller must say which
/// with `--format`. I/O errors from `dev`.
pub fn detect(dev: &dyn BlockRead) -> Result<ImageFormat> {
    let size = dev.size();
    let head_len = usize::try_from(size.min(PROBE_LEN)).unwrap_or(0);
    let mut head = vec![0u8; head_len];
    dev.read_exact_at(0, &mut head)?;

    if head.starts_with(&QCOW2_MAGIC) {
        return match check_qcow2_header(&head) {
            Ok(()) => Ok(ImageFormat::Qcow2),
            Err(why) => Err(Error::Usage(format!(
                "image starts with the qcow2 magic but its header does not validate ({why}); \
                 pass --format raw if it is a raw disk, or --format qcow2 to open it as qcow2"
            ))),
        };
    }
    if head.starts_with(&VMDK_SPARSE_MAGIC) || head.starts_with(VMDK_DESCRIPTOR) {
        return Ok(ImageFormat::Vmdk);
    }
    if head.starts_with(&VHDX_MAGIC) {
        return Ok(ImageFormat::Vhdx);
    }
    if head.get(VDI_SIGNATURE_OFFSET..VDI_SIGNATURE_OFFSET + 4)
        == Some(&VDI_SIGNATURE.to_le_bytes()[..])
    {
        return Ok(ImageFormat::Vdi);
    }
    // Dynamic VHDs carry a copy of the footer at the start; fixed ones only at the end.
    if head.starts_with(&VHD_COOKIE) {
        return Ok(ImageFormat::Vhd);
    }
    if size >= VHD_FOOTER_LEN {
        let mut cookie = [0u8; 8];
        dev.read_exact_at(size - VHD_FOOTER_LEN, &mut cookie)?;
        if cookie == VHD_COOKIE {
            return Ok(ImageFormat::Vhd);
        }
    }
    Ok(ImageFormat::Raw)
}

fn be32(head: &[u8], at: usize) -> Option<u32> {
    let b = head.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// The few header fields that separate a real qcow2 image from coincidental magic bytes.
fn check_qcow2_header(head: &[u8]) -> std::result::Result<(), String> {
    // qcow2 spec, "Header": version at bytes 4-7, cluster_bits at 20-23, header_length at 100-103.
    let version = be32(head, 4).ok_or("header truncated before version")?;
    if !(2..=3).contains(&version) {
        return Err(format!("version {version} not in 2..=3"));
    }
    let cluster_bits = be32(head, 20).ok_or("header truncated before cluster_bits")?;
    if !(QCOW2_MIN_CLUSTER_BITS..=QCOW2_MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(format!(
            "cluster_bits {cluster_bits} out of range \
             {QCOW2_MIN_CLUSTER_BITS}..={QCOW2_MAX_CLUSTER_BITS}"
        ));
    }
    if version == 3 {
        let header_length = be32(head, 100).ok_or("header truncated before header_length")?;
        if header_length < QCOW2_V3_MIN_HEADER {
            return Err(format!(
                "header_length {header_length} below the minimum {QCOW2_V3_MIN_HEADER}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemDisk;

    fn qcow2_head() -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(&QCOW2_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes()); // version
        h[20..24].copy_from_slice(&16u32.to_be_bytes()); // cluster_bits
        h[100..104].copy_from_slice(&112u32.to_be_bytes()); // header_length
        h
    }

    fn detect_vec(v: Vec<u8>) -> Result<ImageFormat> {
        detect(&MemDisk::from_vec(v))
    }

    #[test]
    fn recognises_each_magic() {
        assert_eq!(detect_vec(qcow2_head()).unwrap(), ImageFormat::Qcow2);
        let mut v = vec![0u8; 4096];
        v[..4].copy_from_slice(b"KDMV");
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Vmdk);
        let mut v = b"# Disk DescriptorFile\nversion=1\n".to_vec();
        v.resize(1024, 0);
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Vmdk);
        let mut v = vec![0u8; 4096];
        v[..8].copy_from_slice(b"vhdxfile");
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Vhdx);
        let mut v = vec![0u8; 4096];
        v[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Vhd);
        let mut v = vec![0u8; 4096];
        v[64..68].copy_from_slice(&VDI_SIGNATURE.to_le_bytes());
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Vdi);
        assert_eq!(detect_vec(vec![0u8; 4096]).unwrap(), ImageFormat::Raw);
        assert_eq!(detect_vec(Vec::new()).unwrap(), ImageFormat::Raw);
        assert_eq!(detect_vec(b"QF".to_vec()).unwrap(), ImageFormat::Raw);
    }

    fn ambiguous(v: Vec<u8>) -> String {
        match detect_vec(v) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn bad_qcow2_header_is_ambiguous_not_raw() {
        let mut v = qcow2_head();
        v[4..8].copy_from_slice(&7u32.to_be_bytes());
        let m = ambiguous(v);
        assert!(m.contains("version 7 not in 2..=3"), "{m}");
        assert!(m.contains("--format raw"), "{m}");

        let mut v = qcow2_head();
        v[20..24].copy_from_slice(&31u32.to_be_bytes());
        assert!(ambiguous(v).contains("cluster_bits 31 out of range 9..=21"));

        let mut v = qcow2_head();
        v[100..104].copy_from_slice(&50u32.to_be_bytes());
        assert!(ambiguous(v).contains("header_length 50 below the minimum 104"));

        assert!(ambiguous(b"QFI\xfb\0\0".to_vec()).contains("truncated before version"));

        // Version 2 has no header_length field to check.
        let mut v = qcow2_head();
        v[4..8].copy_from_slice(&2u32.to_be_bytes());
        v[100..104].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(detect_vec(v).unwrap(), ImageFormat::Qcow2);
    }

    #[test]
    fn names_round_trip_and_unknown_is_usage() {
        for f in [
            ImageFormat::Raw,
            ImageFormat::Qcow2,
            ImageFormat::Vmdk,
            ImageFormat::Vhdx,
            ImageFormat::Vhd,
            ImageFormat::Vdi,
        ] {
            assert_eq!(f.name().parse::<ImageFormat>().unwrap(), f);
            assert_eq!(f.to_string(), f.name());
        }
        assert_eq!("VPC".parse::<ImageFormat>().unwrap(), ImageFormat::Vhd);
        let e = "qed".parse::<ImageFormat>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown image format \"qed\", expected one of raw, qcow2, vmdk, vhdx, vhd, vdi"
        );
        assert!(ImageFormat::Qcow2.is_supported());
        assert!(!ImageFormat::Vmdk.is_supported());
        assert_eq!(
            ImageFormat::Vhdx.unsupported_error().to_string(),
            "unsupported image format: vhdx (convert first, for example \
             `qemu-img convert -O qcow2 IMAGE OUT.qcow2`)"
        );
    }
}
