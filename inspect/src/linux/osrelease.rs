//! Distribution identity from `/etc/os-release`, `/etc/lsb-release` and the distro release files.
//!
//! Formats: os-release(5) (shell-like `KEY=value` lines with optional quoting), lsb-release
//! (`DISTRIB_ID=...`), and the free-text release files of the RHEL family
//! (`/etc/redhat-release`: "Red Hat Enterprise Linux Server release 7.9 (Maipo)"), SUSE
//! (`/etc/SuSE-release`) and Debian (`/etc/debian_version`: "12.5").

use std::collections::BTreeMap;

/// Most lines read from one key=value file (house style S12).
const MAX_LINES: usize = 4096;

/// Parses os-release(5) / lsb-release text into a key → value map.
///
/// Quoting follows os-release(5): values may be in single or double quotes; in double quotes
/// `\"`, `\\`, `` \` `` and `\$` are escapes. Lines that are not assignments are ignored.
#[must_use]
pub fn parse_key_values(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().take(MAX_LINES) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        out.insert(key.to_owned(), unquote(raw.trim()));
    }
    out
}

fn unquote(raw: &str) -> String {
    let bytes = raw.as_bytes();
    match bytes.first() {
        Some(b'"') => {
            let inner = raw.get(1..).unwrap_or("");
            let mut s = String::new();
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some(e @ ('"' | '\\' | '`' | '$')) => s.push(e),
                        Some(other) => {
                            s.push('\\');
                            s.push(other);
                        }
                        None => break,
                    },
                    c => s.push(c),
                }
            }
            s
        }
        Some(b'\'') => raw
            .get(1..)
            .unwrap_or("")
            .split('\'')
            .next()
            .unwrap_or("")
            .to_owned(),
        _ => raw.split_whitespace().next().unwrap_or("").to_owned(),
    }
}

/// A Linux distribution's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistroId {
    /// libguestfs distro name: `debian`, `ubuntu`, `rhel`, `centos`, `rocky`, `almalinux`,
    /// `oraclelinux`, `fedora`, `sles`, `opensuse`, `archlinux`, ... or `unknown`.
    pub distro: String,
    /// Major version (0 if unknown).
    pub major: u32,
    /// Minor version (0 if unknown).
    pub minor: u32,
    /// Human product name ("Debian GNU/Linux 12 (bookworm)").
    pub product_name: String,
    /// Variant, such as "Server" for RHEL 7 Server or the os-release VARIANT.
    pub product_variant: Option<String>,
    /// os-release ID_LIKE, split.
    pub id_like: Vec<String>,
}

/// Maps os-release `ID` values to libguestfs distro names.
#[must_use]
pub fn distro_from_os_release_id(id: &str) -> &'static str {
    match id.to_ascii_lowercase().as_str() {
        "debian" => "debian",
        "ubuntu" => "ubuntu",
        "rhel" => "rhel",
        "centos" => "centos",
        "rocky" => "rocky",
        "almalinux" => "almalinux",
        "ol" => "oraclelinux",
        "fedora" => "fedora",
        "sles" | "sled" | "sles_sap" => "sles",
        "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => "opensuse",
        "arch" => "archlinux",
        "alpine" => "alpine",
        "linuxmint" => "linuxmint",
        "amzn" => "amazonlinux",
        "kali" => "kalilinux",
        "void" => "voidlinux",
        "gentoo" => "gentoo",
        "altlinux" => "altlinux",
        "frugalware" => "frugalware",
        "mageia" => "mageia",
        "openmandriva" => "openmandriva",
        "cirros" => "cirros",
        _ => "unknown",
    }
}

/// Parses "12", "12.5", "7.9.2009", "22.04" into (major, minor). Missing parts are 0.
#[must_use]
pub fn parse_version(s: &str) -> Option<(u32, u32)> {
    let s = s.trim();
    let mut parts = s.split(['.', '-', '_']);
    let major: u32 = parts.next()?.trim().parse().ok()?;
    let minor = parts
        .next()
        .and_then(|m| {
            let digits: String = m.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or(0);
    Some((major, minor))
}

/// Identity from os-release fields.
#[must_use]
pub fn from_os_release(kv: &BTreeMap<String, String>) -> Option<DistroId> {
    let id = kv.get("ID")?;
    let distro = distro_from_os_release_id(id).to_owned();
    let (major, minor) = kv
        .get("VERSION_ID")
        .and_then(|v| parse_version(v))
        .unwrap_or((0, 0));
    let product_name = kv
        .get("PRETTY_NAME")
        .or_else(|| kv.get("NAME"))
        .cloned()
        .unwrap_or_default();
    Some(DistroId {
        distro,
        major,
        minor,
        product_name,
        product_variant: kv.get("VARIANT").cloned(),
        id_like: kv
            .get("ID_LIKE")
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// Identity from lsb-release fields (Ubuntu and derivatives before os-release was universal).
#[must_use]
pub fn from_lsb_release(kv: &BTreeMap<String, String>) -> Option<DistroId> {
    let id = kv.get("DISTRIB_ID")?;
    let distro = match id.to_ascii_lowercase().as_str() {
        "ubuntu" => "ubuntu",
        "linuxmint" => "linuxmint",
        "debian" => "debian",
        "mandrivalinux" => "mandriva",
        _ => "unknown",
    };
    let (major, minor) = kv
        .get("DISTRIB_RELEASE")
        .and_then(|v| parse_version(v))
        .unwrap_or((0, 0));
    Some(DistroId {
        distro: distro.to_owned(),
        major,
        minor,
        product_name: kv
            .get("DISTRIB_DESCRIPTION")
            .cloned()
            .unwrap_or_else(|| id.clone()),
        product_variant: None,
        id_like: Vec::new(),
    })
}

/// Identity from a RHEL-family or SUSE release file's first line.
#[must_use]
pub fn from_release_file(text: &str) -> Option<DistroId> {
    let line = text.lines().next()?.trim();
    let lower = line.to_ascii_lowercase();
    let distro = if lower.starts_with("red hat enterprise linux") {
        "rhel"
    } else if lower.starts_with("centos") {
        "centos"
    } else if lower.starts_with("rocky linux") {
        "rocky"
    } else if lower.starts_with("almalinux") {
        "almalinux"
    } else if lower.starts_with("oracle linux") {
        "oraclelinux"
    } else if lower.starts_with("fedora") {
        "fedora"
    } else if lower.starts_with("suse linux enterprise") {
        "sles"
    } else if lower.starts_with("opensuse") {
        "opensuse"
    } else {
        return None;
    };
    // "... release 7.9 (Maipo)" or SUSE's "VERSION = 12" on a later line.
    let version = lower
        .split_once(" release ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(parse_version)
        .or_else(|| {
            let kv = parse_key_values(&text.replace(" = ", "="));
            let major = kv.get("VERSION").and_then(|v| v.parse().ok())?;
            let minor = kv
                .get("PATCHLEVEL")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Some((major, minor))
        })
        .unwrap_or((0, 0));
    let variant = ["Server", "Workstation", "Client", "ComputeNode"]
        .into_iter()
        .find(|v| line.contains(&format!(" {v} ")))
        .map(str::to_owned);
    Some(DistroId {
        distro: distro.to_owned(),
        major: version.0,
        minor: version.1,
        product_name: line.to_owned(),
        product_variant: variant,
        id_like: Vec::new(),
    })
}

/// The osinfo-style short id libosinfo uses (`debian12`, `rhel9.4`, `ubuntu22.04`, `sles15sp5`),
/// or `None` when we cannot name it.
#[must_use]
pub fn osinfo_short_id(distro: &str, major: u32, minor: u32) -> Option<String> {
    let id = match distro {
        "debian" => format!("debian{major}"),
        "ubuntu" => format!("ubuntu{major}.{minor:02}"),
        "rhel" | "centos" | "rocky" | "almalinux" | "oraclelinux" => {
            let prefix = match distro {
                "oraclelinux" => "ol",
                "centos" if major >= 8 => "centos-stream",
                other => other,
            };
            if distro == "centos" && major < 8 {
                format!("centos{major}.{minor}")
            } else if distro == "centos" {
                format!("{prefix}{major}")
            } else {
                format!("{prefix}{major}.{minor}")
            }
        }
        "fedora" => format!("fedora{major}"),
        "sles" if minor > 0 => format!("sles{major}sp{minor}"),
        "sles" => format!("sles{major}"),
        "opensuse" => format!("opensuse{major}.{minor}"),
        _ => return None,
    };
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN12: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;

    #[test]
    fn os_release_debian() {
        let kv = parse_key_values(DEBIAN12);
        let d = from_os_release(&kv).unwrap();
        assert_eq!(d.distro, "debian");
        assert_eq!((d.major, d.minor), (12, 0));
        assert_eq!(d.product_name, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(osinfo_short_id("debian", 12, 0).unwrap(), "debian12");
    }

    #[test]
    fn os_release_quoting() {
        let kv = parse_key_values(
            "A='single quoted'\nB=\"esc \\\"q\\\" \\$x\"\nC=bare word\n#D=1\nbad line\n",
        );
        assert_eq!(kv["A"], "single quoted");
        assert_eq!(kv["B"], "esc \"q\" $x");
        assert_eq!(kv["C"], "bare");
        assert!(!kv.contains_key("D"));
    }

    #[test]
    fn redhat_release_line() {
        let d = from_release_file("Red Hat Enterprise Linux Server release 7.9 (Maipo)\n").unwrap();
        assert_eq!(d.distro, "rhel");
        assert_eq!((d.major, d.minor), (7, 9));
        assert_eq!(d.product_variant.as_deref(), Some("Server"));
        let d = from_release_file("CentOS Linux release 7.9.2009 (Core)").unwrap();
        assert_eq!((d.distro.as_str(), d.major, d.minor), ("centos", 7, 9));
        assert_eq!(osinfo_short_id("centos", 7, 9).unwrap(), "centos7.9");
        assert_eq!(osinfo_short_id("rhel", 9, 4).unwrap(), "rhel9.4");
    }

    #[test]
    fn suse_release_file() {
        let d = from_release_file(
            "SUSE Linux Enterprise Server 12 (x86_64)\nVERSION = 12\nPATCHLEVEL = 5\n",
        )
        .unwrap();
        assert_eq!((d.distro.as_str(), d.major, d.minor), ("sles", 12, 5));
        assert_eq!(osinfo_short_id("sles", 12, 5).unwrap(), "sles12sp5");
    }

    #[test]
    fn lsb_release_ubuntu() {
        let kv = parse_key_values(
            "DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.4 LTS\"\n",
        );
        let d = from_lsb_release(&kv).unwrap();
        assert_eq!((d.distro.as_str(), d.major, d.minor), ("ubuntu", 22, 4));
        assert_eq!(osinfo_short_id("ubuntu", 22, 4).unwrap(), "ubuntu22.04");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("12"), Some((12, 0)));
        assert_eq!(parse_version("7.9.2009"), Some((7, 9)));
        assert_eq!(parse_version("15-SP5"), Some((15, 0)));
        assert_eq!(parse_version("x"), None);
        assert_eq!(parse_version("99999999999"), None);
    }
}
