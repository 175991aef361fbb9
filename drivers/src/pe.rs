//! Checks of a driver's `.sys` file: a PE image for the guest's machine type, built for the
//! native subsystem, and its file version from the `VS_VERSION_INFO` resource.
//!
//! References: Microsoft PE/COFF specification §3.3.1 (machine types), §3.4.2 (Windows
//! subsystem), §6.9 (the .rsrc section); "VS_FIXEDFILEINFO structure".

use goblin::pe::PE;
use goblin::pe::options::ParseOptions;

use crate::error::{Error, Result};
use crate::osmap::Arch;

/// Our limit on a `.sys` file's size; virtio-win's largest driver is under 1 MiB.
pub const MAX_SYS_BYTES: u64 = 64 << 20;
/// `IMAGE_SUBSYSTEM_NATIVE` (PE/COFF §3.4.2): kernel-mode drivers.
pub const SUBSYSTEM_NATIVE: u16 = 1;
/// `VS_FIXEDFILEINFO.dwSignature` ("VS_FIXEDFILEINFO structure").
const VS_FFI_SIGNATURE: u32 = 0xFEEF_04BD;

/// What a valid driver image told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PeInfo {
    /// COFF `Machine`.
    pub machine: u16,
    /// Optional header `Subsystem`.
    pub subsystem: u16,
    /// A PE32+ (64-bit) image.
    pub is_64: bool,
    /// `dwFileVersionMS`/`LS` split into four parts; `None` without a version resource.
    pub file_version: Option<[u16; 4]>,
}

/// A machine type's name, for messages.
#[must_use]
pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        0x14c => "x86",
        0x8664 => "amd64",
        0xaa64 => "arm64",
        0x1c4 => "armnt",
        0x200 => "ia64",
        _ => "unknown",
    }
}

/// Checks that `bytes` is a native-subsystem driver for `arch` and reads its file version.
///
/// # Errors
/// `Corrupt` if it is not a parseable PE image; `Unsuitable` if the machine type or subsystem
/// is wrong (the caller adds the file name with [`Error::in_file`]); `Unsupported` past
/// [`MAX_SYS_BYTES`].
pub fn check_sys(bytes: &[u8], arch: Arch) -> Result<PeInfo> {
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_SYS_BYTES {
        return Err(Error::unsupported(
            "pe",
            format!("{} bytes, limit {MAX_SYS_BYTES}", bytes.len()),
        ));
    }
    // First pass without resources: a broken .rsrc must not hide the header checks.
    let opts = ParseOptions::default()
        .with_parse_resources(false)
        .with_parse_imports(false)
        .with_parse_tls_data(false);
    let pe = PE::parse_with_opts(bytes, &opts)
        .map_err(|e| Error::corrupt_at("pe image", 0, format!("not a pe image: {e}")))?;
    let machine = pe.header.coff_header.machine;
    let Some(oh) = pe.header.optional_header else {
        return Err(Error::corrupt_at(
            "pe optional header",
            0,
            "no optional header",
        ));
    };
    let subsystem = oh.windows_fields.subsystem;
    if machine != arch.pe_machine() {
        return Err(Error::Unsuitable {
            path: String::new(),
            detail: format!(
                "pe machine {machine:#x} ({}) does not match the guest architecture {arch} ({:#x})",
                machine_name(machine),
                arch.pe_machine()
            ),
        });
    }
    if subsystem != SUBSYSTEM_NATIVE {
        return Err(Error::Unsuitable {
            path: String::new(),
            detail: format!(
                "pe subsystem {subsystem} is not native ({SUBSYSTEM_NATIVE}); not a kernel driver"
            ),
        });
    }
    Ok(PeInfo {
        machine,
        subsystem,
        is_64: pe.is_64,
        file_version: file_version(bytes),
    })
}

/// The `VS_FIXEDFILEINFO` file version, or `None` when the image has no (valid) version resource.
#[must_use]
pub fn file_version(bytes: &[u8]) -> Option<[u16; 4]> {
    let opts = ParseOptions::default()
        .with_parse_resources(true)
        .with_parse_imports(false)
        .with_parse_tls_data(false);
    let pe = match PE::parse_with_opts(bytes, &opts) {
        Ok(pe) => pe,
        Err(e) => {
            tracing::debug!(error = %e, "pe resources unreadable; no file version");
            return None;
        }
    };
    let fixed = pe.resource_data?.version_info?.fixed_info?;
    if fixed.signature != VS_FFI_SIGNATURE {
        return None;
    }
    let split = |v: u32| -> [u16; 2] {
        let [a, b, c, d] = v.to_be_bytes();
        [u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d])]
    };
    let [a, b] = split(fixed.file_version_ms);
    let [c, d] = split(fixed.file_version_ls);
    Some([a, b, c, d])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{PeSpec, pe_image};

    #[test]
    fn good_amd64_driver() {
        let img = pe_image(&PeSpec::driver(Arch::Amd64, [100, 95, 104, 26200]));
        let info = check_sys(&img, Arch::Amd64).unwrap();
        assert_eq!(info.machine, 0x8664);
        assert_eq!(info.subsystem, 1);
        assert!(info.is_64);
        assert_eq!(info.file_version, Some([100, 95, 104, 26200]));
    }

    #[test]
    fn good_x86_and_arm64_drivers() {
        let img = pe_image(&PeSpec::driver(Arch::X86, [62, 1, 2, 3]));
        let info = check_sys(&img, Arch::X86).unwrap();
        assert_eq!(info.machine, 0x14c);
        assert!(!info.is_64);
        assert_eq!(info.file_version, Some([62, 1, 2, 3]));
        let img = pe_image(&PeSpec::driver(Arch::Arm64, [1, 0, 0, 1]));
        let info = check_sys(&img, Arch::Arm64).unwrap();
        assert_eq!(info.machine, 0xaa64);
        assert_eq!(info.file_version, Some([1, 0, 0, 1]));
    }

    #[test]
    fn no_version_resource_is_none() {
        let mut spec = PeSpec::driver(Arch::Amd64, [1, 2, 3, 4]);
        spec.version = None;
        let info = check_sys(&pe_image(&spec), Arch::Amd64).unwrap();
        assert_eq!(info.file_version, None);
    }

    #[test]
    fn machine_mismatch_is_refused() {
        let img = pe_image(&PeSpec::driver(Arch::X86, [1, 2, 3, 4]));
        let err = check_sys(&img, Arch::Amd64)
            .unwrap_err()
            .in_file("viostor/2k19/amd64/viostor.sys");
        assert_eq!(
            err.to_string(),
            "unsuitable driver file viostor/2k19/amd64/viostor.sys: pe machine 0x14c (x86) does not match the guest architecture amd64 (0x8664)"
        );
    }

    #[test]
    fn non_native_subsystem_is_refused() {
        let mut spec = PeSpec::driver(Arch::Amd64, [1, 2, 3, 4]);
        spec.subsystem = 2;
        let err = check_sys(&pe_image(&spec), Arch::Amd64).unwrap_err();
        assert!(matches!(err, Error::Unsuitable { .. }));
        assert_eq!(
            err.to_string(),
            "unsuitable driver file : pe subsystem 2 is not native (1); not a kernel driver"
        );
    }

    #[test]
    fn not_a_pe_is_corrupt() {
        let err = check_sys(b"MZ but nothing else", Arch::Amd64).unwrap_err();
        let c = err.as_corrupt().unwrap();
        assert_eq!(c.structure(), "pe image");
        assert!(c.detail().starts_with("not a pe image: "), "{}", c.detail());
    }

    #[test]
    fn bad_version_signature_is_none() {
        let mut spec = PeSpec::driver(Arch::Amd64, [1, 2, 3, 4]);
        spec.bad_version_signature = true;
        let info = check_sys(&pe_image(&spec), Arch::Amd64).unwrap();
        assert_eq!(info.file_version, None);
    }
}
